/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: the parent's view of its workers. Starting one (socketpair,
 * arena, optional CPU binding), handing it a chunk, reading its replies,
 * settling its chunk when it dies, killing them all.
 */
#include "core.h"
#include "pool_fast.h"
#include "pool_job.h"
#include "pool_stream.h"
#include "pool_worker.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* Arena length of a new worker; it grows on demand. */
#define POOL_ARENA_INIT ((size_t)256 << 10)
/* An arena grown past this is shrunk again when a smaller chunk comes. */
#define POOL_ARENA_KEEP ((size_t)16 << 20)
/* Input bytes of a stream's batch (a single bigger item goes alone). */
#define POOL_CHUNK_IN ((size_t)4 << 20)
/* Where the return values start in the arena; the header is before. */
#define POOL_ARENA_HDR ((size_t)64)

static atomic_uint pool_cpu_rotor; /* successive pools start on different CPUs */

/* ------------------------------------------------------------------- workers */

static struct proc__arena_hdr *arena_hdr(const struct proc__worker *w)
{
    return (struct proc__arena_hdr *)(void *)w->arena;
}

/*
 * Ends w's chunk. Items [0, done) returned: their values and outputs are
 * taken. If blame is not 0, item done (if any) fails with blame. The items
 * after that are put back on the queue when rest_err is 0, else fail with
 * rest_err. The job may be settled (and freed) here.
 */
static void batch_finish(struct proc_pool *pool, struct proc__worker *w, uint64_t done, int blame,
                         int rest_err);

static void chunk_finish(struct proc_pool *pool, struct proc__worker *w, uint64_t done, int blame,
                         int rest_err)
{
    if (w->job->stream) {
        batch_finish(pool, w, done, blame, rest_err);
        return;
    }
    struct proc__job *j = w->job;
    size_t start = w->start, count = w->count;
    w->job = NULL;
    w->state = PROC__W_IDLE;
    if (done > count)
        done = count;
    size_t settled = (size_t)done;
    if (done > 0) {
        const int *rc = (const int *)(void *)(w->arena + w->rc_off);
        for (size_t i = 0; i < done; i++)
            if (rc[i] != 0) {
                proc__job_note_fail(j, start + i, rc[i]);
                break;
            }
        if (j->out_size)
            memcpy(j->out + start * j->out_size, w->arena + w->out_off, done * j->out_size);
        if (j->n == 1)
            j->ran = true;
    }
    size_t next = done;
    if (blame && next < count) {
        proc__job_note_fail(j, start + next, blame);
        next++;
        settled++;
    }
    if (next < count) {
        if (rest_err == 0) {
            struct proc__range *r = malloc(sizeof *r);
            if (r) {
                r->start = start + next;
                r->count = count - next;
                r->next = j->retry;
                j->retry = r;
                if (!j->queued)
                    proc__queue_push_front(pool, j);
            } else {
                rest_err = -ENOMEM;
            }
        }
        if (rest_err) {
            proc__job_note_fail(j, start + next, rest_err);
            settled += count - next;
        }
    }
    j->remaining -= settled;
    if (j->remaining == 0)
        proc__job_settle(j);
}

/* An output file grown past this is cut to nothing after its batch. */
#define POOL_OUT_KEEP ((size_t)16 << 20)

/* The parent's mapping of w's output file covers its first len bytes: false if it cannot. */
static bool out_map(struct proc__worker *w, size_t len)
{
    if (len <= w->out_len)
        return true;
    void *m = proc__map_grow(w->out, w->out_len, len, w->outfd, PROT_READ);
    if (m == MAP_FAILED)
        return false;
    w->out = m;
    w->out_len = len;
    proc__dontfork(m, len);
    return true;
}

/* Ends w's stream batch as chunk_finish() does a chunk: the outputs of items
 * [0, done) become results, item done fails with blame, the rest go back to
 * the stream or fail with rest_err. */
static void batch_finish(struct proc_pool *pool, struct proc__worker *w, uint64_t done, int blame,
                         int rest_err)
{
    struct proc__job *j = w->job;
    uint64_t size = atomic_load_explicit(&arena_hdr(w)->out_size, memory_order_acquire);
    w->job = NULL;
    w->state = PROC__W_IDLE;
    if (done > w->count)
        done = w->count;
    const unsigned char *out = NULL;
    size_t out_len = 0;
    if (done > 0 && size <= SIZE_MAX && out_map(w, (size_t)size)) {
        out = w->out;
        out_len = (size_t)size;
    }
    const struct proc__vitem *table = (const void *)(w->arena + w->rc_off);
    struct proc__sitem *batch = w->batch;
    w->batch = NULL;
    proc__stream_finish(j->stream, batch, w->count, table, out, out_len, (size_t)done, blame,
                        rest_err, proc__now_ns() - w->sent_ns, (size_t)pool->nworkers);
    w->out_size = (size_t)size;
    if (w->out_size > POOL_OUT_KEEP && ftruncate(w->outfd, 0) == 0) {
        munmap(w->out, w->out_len);
        w->out = NULL;
        w->out_len = w->out_size = 0;
    }
}

/* Makes w's arena at least need bytes long (and shrinks a huge one). */
static int arena_fit(struct proc__worker *w, size_t need)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    if (need > SIZE_MAX - pg)
        return -ENOMEM;
    size_t size = proc__align_up(need, pg);
    if (size > w->arena_size) {
        if (ftruncate(w->memfd, (off_t)size) < 0)
            return -errno;
        void *a = mremap(w->arena, w->arena_size, size, MREMAP_MAYMOVE);
        if (a == MAP_FAILED) {
            int e = errno;
            if (ftruncate(w->memfd, (off_t)w->arena_size) < 0) {
                /* the file stays longer than the mapping: harmless */
            }
            return -e;
        }
        w->arena = a;
        w->arena_size = size;
        proc__dontfork(a, size);
    } else if (w->arena_size > POOL_ARENA_KEEP && size <= POOL_ARENA_KEEP) {
        if (size < POOL_ARENA_INIT)
            size = POOL_ARENA_INIT;
        void *a = mremap(w->arena, w->arena_size, size, 0);
        if (a != MAP_FAILED) {
            w->arena = a;
            w->arena_size = size;
            /* frees the pages; the worker's longer mapping is never touched past it */
            if (ftruncate(w->memfd, (off_t)size) < 0) {
                /* the pages stay allocated until the worker ends */
            }
        }
    }
    return 0;
}

/* Before a chunk or a batch goes to w: no item begun, a new seq for its reply. */
static void arena_begin(struct proc_pool *pool, struct proc__worker *w)
{
    struct proc__arena_hdr *hdr = arena_hdr(w);
    atomic_store_explicit(&hdr->busy, 0, memory_order_relaxed);
    atomic_store_explicit(&hdr->done, 0, memory_order_relaxed);
    w->seq = ++pool->seq;
}

/* Sends a task message; a worker that cannot take it is killed (its death
 * puts the chunk back): at most one message is ever queued, so the socket
 * is never full. */
static void worker_send(struct proc__worker *w, const void *m, size_t len)
{
    ssize_t r;
    do {
        r = send(w->fd, m, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    if (r != (ssize_t)len)
        proc_kill(w->proc);
}

/* Hands items [start, start + cnt) of j to the idle worker w. */
void proc__worker_send_chunk(struct proc_pool *pool, struct proc__worker *w, struct proc__job *j,
                             size_t start, size_t cnt)
{
    w->job = j;
    w->start = start;
    w->count = cnt;
    w->state = PROC__W_BUSY;
    if (w->budget > 0)
        w->budget -= (long)cnt;

    /* header, return values, inputs, outputs; each part 64-byte aligned */
    size_t in_bytes = 0, out_bytes = 0, in_off = 0, out_off = 0, need = 0;
    size_t rc_off = POOL_ARENA_HDR;
    bool ok = proc__mul_ok(cnt, j->in_size, &in_bytes) &&
              proc__mul_ok(cnt, j->out_size, &out_bytes) &&
              proc__add_ok(rc_off, cnt * sizeof(int), &in_off) && in_off < SIZE_MAX - 64;
    in_off = proc__align_up(in_off, 64);
    ok = ok && proc__add_ok(in_off, in_bytes, &out_off) && out_off < SIZE_MAX - 64;
    out_off = proc__align_up(out_off, 64);
    ok = ok && proc__add_ok(out_off, out_bytes, &need);
    int rc = ok ? arena_fit(w, need) : -ENOMEM;
    if (rc < 0) {
        chunk_finish(pool, w, 0, 0, rc);
        return;
    }
    if (in_bytes)
        memcpy(w->arena + in_off, j->in + start * j->in_size, in_bytes);
    arena_begin(pool, w);
    w->rc_off = rc_off;
    w->out_off = out_off;
    struct proc__msg_task m = {
        .type = PROC__MSG_TASK,
        .seq = w->seq,
        .fn = j->fn,
        .count = cnt,
        .in_size = j->in_size,
        .out_size = j->out_size,
        .rc_off = rc_off,
        .in_off = in_off,
        .out_off = out_off,
        .arena_size = w->arena_size,
    };
    worker_send(w, &m, sizeof m);
}

/* Hands a batch of stream j's pending items (at most max) to the idle worker w. */
void proc__worker_send_batch(struct proc_pool *pool, struct proc__worker *w, struct proc__job *j,
                             size_t max)
{
    struct proc__sitem *batch = NULL;
    size_t in_bytes = 0;
    size_t cnt = proc__stream_take(j->stream, max, POOL_CHUNK_IN, &batch, &in_bytes);
    if (cnt == 0)
        return;
    w->job = j;
    w->batch = batch;
    w->sent_ns = proc__now_ns();
    w->count = cnt;
    w->start = 0;
    w->state = PROC__W_BUSY;
    if (w->budget > 0)
        w->budget -= (long)cnt;
    /* header, item table, inputs (each 16-byte aligned) */
    size_t table_off = POOL_ARENA_HDR, in_off = 0, need = 0;
    bool ok = proc__mul_ok(cnt, sizeof(struct proc__vitem), &in_off) &&
              proc__add_ok(in_off, table_off, &in_off) &&
              proc__add_ok(in_off, in_bytes + 16 * cnt, &need);
    int rc = ok ? arena_fit(w, need) : -ENOMEM;
    if (rc < 0) {
        chunk_finish(pool, w, 0, 0, rc);
        return;
    }
    struct proc__vitem *table = (struct proc__vitem *)(void *)(w->arena + table_off);
    size_t off = proc__align_up(in_off, 16), i = 0;
    for (const struct proc__sitem *it = batch; it; it = it->next, i++) {
        table[i] = (struct proc__vitem){.in_off = off, .in_len = it->len};
        memcpy(w->arena + off, it->in, it->len);
        off = proc__align_up(off + it->len, 16);
    }
    arena_begin(pool, w);
    atomic_store_explicit(&arena_hdr(w)->out_size, w->out_size, memory_order_relaxed);
    w->rc_off = table_off; /* a batch's table */
    struct proc__msg_vtask m = {
        .type = PROC__MSG_VTASK,
        .seq = w->seq,
        .fn = j->stream_fn,
        .count = cnt,
        .table_off = table_off,
        .arena_size = w->arena_size,
        .out_size = w->out_size,
    };
    worker_send(w, &m, sizeof m);
}

static void worker_free(struct proc__worker *w)
{
    if (w->out)
        munmap(w->out, w->out_len);
    if (w->proc) {
        proc_join(w->proc, PROC_WAIT_FOREVER);
        proc_close(w->proc);
    }
    if (w->fd >= 0)
        close(w->fd);
    if (w->memfd >= 0)
        close(w->memfd);
    if (w->outfd >= 0)
        close(w->outfd);
    if (w->arena)
        munmap(w->arena, w->arena_size);
    free(w);
}

/* why: PROC__LOST_CRASH or PROC__LOST_KILLED, for a fast job that borrowed w */
static void worker_remove(struct proc_pool *pool, struct proc__worker *w, int why)
{
    proc__fast_forget(pool, w, why);
    for (size_t i = 0; i < pool->nw; i++)
        if (pool->w[i] == w) {
            pool->w[i] = pool->w[--pool->nw];
            break;
        }
    worker_free(w);
}

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

/* Starts one worker and adds it to pool->w: 0 or a negative errno. */
/* w's socketpair and arena; the worker's end of the pair in *child_fd. 0 or -errno. */
static int worker_channels(struct proc__worker *w, int *child_fd)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    w->fd = sv[0];
    *child_fd = sv[1];
    w->memfd = memfd_create("libproc-pool", MFD_CLOEXEC);
    if (w->memfd < 0 || ftruncate(w->memfd, (off_t)POOL_ARENA_INIT) < 0)
        return -errno;
    w->outfd = memfd_create("libproc-pool-out", MFD_CLOEXEC);
    if (w->outfd < 0)
        return -errno;
    w->arena = mmap(NULL, POOL_ARENA_INIT, PROT_READ | PROT_WRITE, MAP_SHARED, w->memfd, 0);
    if (w->arena == MAP_FAILED) {
        w->arena = NULL;
        return -errno;
    }
    w->arena_size = POOL_ARENA_INIT;
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
static int through_forkserver(proc_t *p, struct proc__worker_boot *boot)
{
    int fds[PROC__PASS_MAX], n = 0;
    const int mine[] = {boot->fd, boot->memfd, boot->fastfd, boot->outfd};
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        if (mine[i] >= 0)
            fds[n++] = mine[i];
    boot->close_fds = NULL;
    boot->nclose = 0;
    int rc = proc_set_forkserver(p, true);
    if (rc == 0)
        rc = proc_set_arg_copy(p, boot, sizeof *boot);
    return rc == 0 ? proc__set_pass_fds(p, fds, n) : rc;
}

/* Starts w's process (a daemonic libproc child): 0 or -errno. */
static int worker_start(struct proc_pool *pool, struct proc__worker *w, int child_fd)
{
    size_t nfds;
    int *fds = worker_fds_to_close(pool, w, &nfds);
    if (!fds)
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
        worker_free(w);
        return rc;
    }
    w->sentinel = proc_sentinel(w->proc);
    w->state = PROC__W_INIT;
    w->budget = pool->max_tasks > 0 ? pool->max_tasks : -1;
    pool->w[pool->nw++] = w;
    return 0;
}

/* Takes the messages w sent (also after its death: they stay queued). */
void proc__worker_read(struct proc_pool *pool, struct proc__worker *w)
{
    while (!w->eof) {
        union proc__msg u;
        ssize_t r = recv(w->fd, &u, sizeof u, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r < (ssize_t)sizeof u.type || (size_t)r != proc__msg_size(u.type) ||
            r != (ssize_t)sizeof u.reply) {
            w->eof = true; /* end of file, error, or garbage: wait for the sentinel */
            return;
        }
        const struct proc__msg_reply *m = &u.reply;
        switch (m->type) {
        case PROC__MSG_READY:
            if (w->state == PROC__W_INIT) {
                w->state = PROC__W_IDLE;
                pool->init_deaths = 0;
            }
            break;
        case PROC__MSG_RESULT:
        case PROC__MSG_ERROR:
            if (w->state == PROC__W_BUSY && m->seq == w->seq) {
                if (m->type == PROC__MSG_RESULT)
                    chunk_finish(pool, w, w->count, 0, 0);
                else
                    chunk_finish(pool, w, 0, 0, m->err > 0 ? -m->err : -EIO);
                if (w->budget == 0 || (m->flags & PROC__REPLY_LEAVING))
                    w->leaving = true; /* exits after this result */
            }
            break;
        default:
            break;
        }
    }
}

/* w's process ended: settle its chunk, reap it, forget it. */
void proc__worker_exited(struct proc_pool *pool, struct proc__worker *w)
{
    proc__worker_read(pool, w);
    if (w->state == PROC__W_INIT && !w->told) {
        if (++pool->init_deaths >= pool->max_init_deaths)
            pool->broken = true;
    } else if (w->state == PROC__W_BUSY) {
        struct proc__arena_hdr *hdr = arena_hdr(w);
        uint64_t done = atomic_load_explicit(&hdr->done, memory_order_acquire);
        uint64_t busy = atomic_load_explicit(&hdr->busy, memory_order_acquire);
        int blame = busy > done ? -ECHILD : 0;
        /* Killed for an overdue item: that item fails if it had not
         * returned; one begun after it returned was not at fault. */
        if (w->watch.overdue)
            blame = blame && done < w->watch.overdue ? -ETIMEDOUT : 0;
        chunk_finish(pool, w, done, blame, 0);
    }
    worker_remove(pool, w, PROC__LOST_CRASH);
}

int proc__workers_watch(struct proc_pool *pool)
{
    if (pool->task_timeout_ms == 0)
        return -1;
    int64_t next = INT64_MAX, timeout_ns = (int64_t)pool->task_timeout_ms * 1000000;
    for (size_t i = 0; i < pool->nw; i++) {
        struct proc__worker *w = pool->w[i];
        if (w->state != PROC__W_BUSY || w->watch.overdue)
            continue;
        struct proc__arena_hdr *hdr = arena_hdr(w);
        uint64_t busy = atomic_load_explicit(&hdr->busy, memory_order_acquire);
        uint64_t done = atomic_load_explicit(&hdr->done, memory_order_acquire);
        int64_t now = proc__now_ns();
        if (proc__watch_overdue(&w->watch, w->seq, busy, done, now, timeout_ns, &next)) {
            busy = atomic_load_explicit(&hdr->busy, memory_order_acquire);
            done = atomic_load_explicit(&hdr->done, memory_order_acquire);
            if (!proc__watch_still(&w->watch, w->seq, busy, done))
                continue; /* it returned meanwhile: the next look starts afresh */
            proc__watch_delay(pool);
            /* its death settles the chunk (proc__worker_exited) */
            if (proc_kill(w->proc) == 0)
                w->watch.overdue = busy;
        }
    }
    return proc__ms_until(next, proc__now_ns());
}

/* Kills every worker and reaps it. Chunks they ran: finished items are
 * kept, the others fail with err. */
void proc__workers_kill(struct proc_pool *pool, int err)
{
    for (size_t i = 0; i < pool->nw; i++)
        proc_kill(pool->w[i]->proc);
    while (pool->nw > 0) {
        struct proc__worker *w = pool->w[pool->nw - 1];
        proc_join(w->proc, PROC_WAIT_FOREVER);
        proc__worker_read(pool, w);
        if (w->state == PROC__W_BUSY) {
            struct proc__arena_hdr *hdr = arena_hdr(w);
            uint64_t done = atomic_load_explicit(&hdr->done, memory_order_acquire);
            chunk_finish(pool, w, done, 0, err);
        }
        /* one that had died on its own before our SIGKILL crashed */
        int code = proc_exitcode(w->proc);
        bool crashed = code != -SIGKILL && code != PROC_EXITCODE_UNKNOWN;
        worker_remove(pool, w, crashed ? PROC__LOST_CRASH : PROC__LOST_KILLED);
    }
}
