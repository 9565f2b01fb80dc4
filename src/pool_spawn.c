/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: a worker's start. Its CPU (bind_cpus), its socketpair and
 * arena, the pool's fds it must not keep, and its process: forked from the
 * caller, or made by the fork server with its fds passed along.
 */
#include "core.h"
#include "pool_spawn.h"
#include "pool_worker.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_uint pool_cpu_rotor; /* successive pools start on different CPUs */

/*
 * bind_cpus: workers are bound one per CPU, spread over the CPUs the creating
 * thread may run on (a single allowed CPU leaves them unbound).
 */
int proc__worker_bind_plan(struct proc_pool *pool)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0 || CPU_COUNT(&set) < 2)
        return 0;
    pool->cpus = calloc((size_t)CPU_COUNT(&set), sizeof *pool->cpus);
    if (!pool->cpus)
        return -ENOMEM;
    for (int cpu = 0; cpu < CPU_SETSIZE && pool->ncpus < CPU_COUNT(&set); cpu++)
        if (CPU_ISSET(cpu, &set))
            pool->cpus[pool->ncpus++] = cpu;
    pool->cpu_next = (int)(atomic_fetch_add(&pool_cpu_rotor, 1) % (unsigned)pool->ncpus);
    return 0;
}

/* The CPU for a new worker: the one with the fewest of the pool's workers. */
static int pick_cpu(struct proc_pool *pool)
{
    if (pool->ncpus == 0)
        return -1;
    int best = -1, best_use = INT_MAX;
    for (int k = 0; k < pool->ncpus; k++) {
        int cpu = pool->cpus[(pool->cpu_next + k) % pool->ncpus], use = 0;
        for (size_t i = 0; i < pool->nw; i++)
            use += pool->w[i]->cpu == cpu && !pool->w[i]->leaving && !pool->w[i]->told;
        if (use < best_use) {
            best = cpu;
            best_use = use;
        }
    }
    pool->cpu_next = (pool->cpu_next + 1) % pool->ncpus;
    return best;
}

/* w's socketpair and arena; the worker's end of the pair in *child_fd. 0 or -errno. */
static int worker_channels(struct proc__worker *w, int *child_fd)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    w->fd = sv[0];
    *child_fd = sv[1];
    w->memfd = memfd_create("libproc-pool", MFD_CLOEXEC);
    if (w->memfd < 0 || ftruncate(w->memfd, (off_t)PROC__POOL_ARENA_INIT) < 0)
        return -errno;
    w->outfd = memfd_create("libproc-pool-out", MFD_CLOEXEC);
    if (w->outfd < 0)
        return -errno;
    w->arena = mmap(NULL, PROC__POOL_ARENA_INIT, PROT_READ | PROT_WRITE, MAP_SHARED, w->memfd, 0);
    if (w->arena == MAP_FAILED) {
        w->arena = NULL;
        return -errno;
    }
    w->arena_size = PROC__POOL_ARENA_INIT;
    proc__dontfork(w->arena, w->arena_size);
    return 0;
}

/* The pool's fds a new worker must not keep: its own end's peer (else it
 * never sees EOF), the other workers' sockets and arenas. NULL if no memory. */
static int *worker_fds_to_close(const struct proc_pool *pool, const struct proc__worker *w,
                                size_t *n)
{
    int *fds = malloc((3 * pool->nw + 2) * sizeof *fds);
    if (!fds)
        return NULL;
    *n = 0;
    fds[(*n)++] = w->fd;
    if (pool->wakefd >= 0)
        fds[(*n)++] = pool->wakefd;
    for (size_t i = 0; i < pool->nw; i++) {
        fds[(*n)++] = pool->w[i]->fd;
        fds[(*n)++] = pool->w[i]->memfd;
        fds[(*n)++] = pool->w[i]->outfd;
    }
    return fds;
}

/*
 * A worker made by the fork server inherits none of the caller's fds and
 * none of its memory after the server started: its four fds go along at
 * their numbers, the boot record as a copy, and it has nothing to close.
 */
static int through_forkserver(proc_t *p, const struct proc__worker_boot *boot)
{
    int fds[PROC__PASS_MAX], n = 0;
    const int mine[] = {boot->fd, boot->memfd, boot->fastfd, boot->outfd};
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        if (mine[i] >= 0)
            fds[n++] = mine[i];
    int rc = proc_set_forkserver(p, true);
    if (rc == 0)
        rc = proc_set_arg_copy(p, boot, sizeof *boot);
    return rc == 0 ? proc__set_pass_fds(p, fds, n) : rc;
}

/* Starts w's process (a daemonic libproc child): 0 or -errno. */
static int worker_start(struct proc_pool *pool, struct proc__worker *w, int child_fd)
{
    size_t nfds = 0;
    int *fds = NULL; /* what a forked worker must close; one from the server has none */
    if (!pool->use_forkserver && !(fds = worker_fds_to_close(pool, w, &nfds)))
        return -ENOMEM;
    struct proc__worker_boot boot = {
        .fd = child_fd,
        .memfd = w->memfd,
        .fastfd = pool->fastfd,
        .outfd = w->outfd,
        .cpu = w->cpu,
        .arena_size = w->arena_size,
        .max_tasks = pool->max_tasks,
        .max_rss = pool->max_rss,
        .init = pool->init,
        .initarg = pool->initarg,
        .mask = pool->mask,
        .close_fds = fds,
        .nclose = nfds,
    };
    int rc = 0;
    proc_t *p = proc_new(proc__pool_child_main, &boot);
    if (!p)
        rc = -errno;
    if (rc == 0 && pool->use_forkserver)
        rc = through_forkserver(p, &boot);
    char name[48];
    snprintf(name, sizeof name, "PoolWorker-%lu", ++pool->names);
    if (rc == 0 && ((rc = proc_set_daemon(p, true)) < 0 || (rc = proc_set_name(p, name)) < 0 ||
                    (rc = proc_start(p)) < 0)) {
        proc_close(p);
        p = NULL;
    }
    free(fds);
    w->proc = p;
    return rc;
}

int proc__worker_spawn(struct proc_pool *pool)
{
    if (pool->nw == pool->wcap) {
        size_t cap = pool->wcap ? pool->wcap * 2 : 8;
        struct proc__worker **a = realloc(pool->w, cap * sizeof *a);
        if (!a)
            return -ENOMEM;
        pool->w = a;
        pool->wcap = cap;
    }
    struct proc__worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = w->memfd = w->outfd = -1;
    w->cpu = pick_cpu(pool);
    int child_fd = -1;
    int rc = worker_channels(w, &child_fd);
    if (rc == 0)
        rc = worker_start(pool, w, child_fd);
    if (child_fd >= 0)
        close(child_fd);
    if (rc < 0) {
        proc__worker_free(w);
        return rc;
    }
    w->sentinel = proc_sentinel(w->proc);
    w->state = PROC__W_INIT;
    w->budget = pool->max_tasks > 0 ? pool->max_tasks : -1;
    pool->w[pool->nw++] = w;
    return 0;
}
