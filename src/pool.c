/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: the public API (<libproc/pool.h>), and how the parts fit.
 *
 * One dispatcher thread per pool (pool_dispatch.c) owns the workers and the queue of jobs.
 * Callers (apply, map, submit) only append a job to the pool's incoming
 * list under pool->mu and wake the dispatcher through an eventfd; the
 * dispatcher hands chunks of items to idle workers (see pool_proto.h for
 * the protocol) and polls every worker's socket and pidfd (sentinel). When a
 * chunk comes back, or its worker died, it copies the outputs of the items
 * that finished into the job's buffer, records the first failing index, and
 * once no item of the job is left it "settles" the job: sets the result under
 * the job's own mutex and wakes its waiters (pool_job.c). Jobs are reference counted (the
 * caller's handle and the pool's), so futures outlive their pool.
 *
 * A job is on the dispatcher's queue exactly while it has items that were
 * neither handed out nor finished: job->next < job->n, or ranges put back
 * (job->retry) after a worker died in the middle of a chunk.
 *
 * Fast jobs (apply and map on a wholly idle pool, pool_fast.c) bypass the queue: before it sleeps,
 * the dispatcher offers its idle workers (pool->lendable); a caller borrows them (pool->lent) and
 * runs the job itself; it gives them back when the job is over. The
 * dispatcher never hands a chunk to a borrowed worker, and frees a worker
 * only after proc__fast_forget() has told the job that borrowed it.
 */
#include "pool_dispatch.h"
#include "pool_fast.h"
#include "pool_job.h"
#include "pool_spawn.h"
#include "pool_worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

static int pool_check(const proc_pool_t *pool)
{
    if (!pool)
        return -EINVAL;
    if (pool->owner != getpid())
        return -ECHILD;
    return 0;
}

proc_pool_t *proc_pool_new(const proc_pool_opts_t *opts)
{
    proc_pool_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.workers < 0 || o.max_tasks_per_child < 0 || o.task_timeout_ms < 0) {
        errno = EINVAL;
        return NULL;
    }
    proc_t *self = proc_current(); /* also sets up libproc (and its at-exit work) */
    if (!self)
        return NULL;
    if (proc_daemon(self)) {
        errno = EPERM;
        return NULL;
    }
    proc__dispatch_init();
    if (o.workers == 0)
        o.workers = proc_cpu_count();

    struct proc_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->fastfd = pool->wakefd = -1;
    int rc = proc__pool_sync_init(&pool->mu, &pool->cv);
    if (rc < 0) {
        free(pool);
        errno = -rc;
        return NULL;
    }
    pool->owner = getpid();
    pool->nworkers = o.workers;
    pool->max_tasks = o.max_tasks_per_child;
    pool->max_rss = o.max_memory_per_child;
    pool->use_forkserver = o.use_forkserver;
    pool->task_timeout_ms = o.task_timeout_ms;
    pool->max_init_deaths = o.workers > INT_MAX - 2 ? INT_MAX : o.workers + 2;
    pool->init = o.initializer;
    pool->initarg = o.initarg;
    pthread_sigmask(SIG_SETMASK, NULL, &pool->mask);
    /* Test hook (documented in pool.h): every job through the queue. */
    const char *env = getenv("LIBPROC_POOL_FAST");
    pool->fast_off = env && strcmp(env, "0") == 0;
    /* Test hook: widens the moment between an overrun seen and its SIGKILL,
     * in which the task may still return. */
    env = getenv("LIBPROC_POOL_KILL_DELAY_MS");
    long delay = env ? strtol(env, NULL, 10) : 0;
    pool->kill_delay_ms = delay > 0 && delay < 60000 ? (int)delay : 0;
    if (o.bind_cpus && (rc = proc__worker_bind_plan(pool)) < 0)
        goto fail;
    pool->fastfd = memfd_create("libproc-pool-fast", MFD_CLOEXEC);
    pool->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (pool->wakefd < 0 || pool->fastfd < 0) {
        rc = -errno;
        goto fail;
    }
    size_t nw = (size_t)o.workers;
    pool->lendable = calloc(nw, sizeof *pool->lendable);
    pool->lent = calloc(nw, sizeof *pool->lent);
    pool->lost = calloc(nw, sizeof *pool->lost);
    pool->sent = calloc(nw, sizeof *pool->sent);
    pool->fast_watch = calloc(nw, sizeof *pool->fast_watch);
    if (!pool->lendable || !pool->lent || !pool->lost || !pool->sent || !pool->fast_watch) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < o.workers; i++)
        if ((rc = proc__worker_spawn(pool)) < 0)
            goto fail;

    if ((rc = proc__thread_start(&pool->thread, proc__dispatcher_main, pool, false, 0)) < 0)
        goto fail;
    return pool;

fail:
    proc__workers_kill(pool, -ECANCELED);
    proc__fast_free(pool);
    free(pool->w);
    if (pool->wakefd >= 0)
        close(pool->wakefd);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
    errno = -rc;
    return NULL;
}

/* Validates, queues and waits for a job of n items; the result. */
static int run_items(proc_pool_t *pool, proc_task_fn *fn, const void *in, size_t in_size, void *out,
                     size_t out_size, size_t n)
{
    int rc = pool_check(pool);
    if (rc < 0)
        return rc;
    size_t total;
    if (!fn || (n && in_size && !in) || (n && out_size && !out) ||
        !proc__mul_ok(n, in_size, &total) || !proc__mul_ok(n, out_size, &total))
        return -EINVAL;
    if (n == 0) {
        pthread_mutex_lock(&pool->mu);
        rc = pool->closed ? -EINVAL : 0;
        pthread_mutex_unlock(&pool->mu);
        return rc;
    }
    struct proc__job *j = proc__job_alloc(0);
    if (!j)
        return -errno;
    j->fn = fn;
    j->in = in;
    j->out = out;
    j->in_size = in_size;
    j->out_size = out_size;
    j->n = j->remaining = n;
    /* a fast job cancelled half-way would hold the pool's workers forever */
    int cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    rc = proc__fast_run(pool, j);
    pthread_setcancelstate(cancel, NULL);
    if (rc < 0 || rc == 1) {
        if (rc == 1)
            rc = j->fail_idx == SIZE_MAX ? 0 : j->fail_rc;
        proc__job_discard(j);
        return rc;
    }
    if (rc == 0 && (rc = proc__pool_enqueue(pool, j)) < 0) {
        proc__job_discard(j);
        return rc;
    }
    pthread_mutex_lock(&j->mu);
    proc__pool_wait_flag(&j->cv, &j->mu, &j->done, PROC_WAIT_FOREVER);
    rc = j->result;
    pthread_mutex_unlock(&j->mu);
    proc__job_unref(j);
    return rc;
}

int proc_pool_apply(proc_pool_t *pool, proc_task_fn *fn, const void *in, size_t in_size, void *out,
                    size_t out_size)
{
    return run_items(pool, fn, in, in_size, out, out_size, 1);
}

int proc_pool_map(proc_pool_t *pool, proc_task_fn *fn, const void *in, size_t in_size, void *out,
                  size_t out_size, size_t n)
{
    return run_items(pool, fn, in, in_size, out, out_size, n);
}

proc_future_t *proc_pool_submit(proc_pool_t *pool, proc_task_fn *fn, const void *in, size_t in_size,
                                size_t out_size)
{
    int rc = pool_check(pool);
    if (rc == 0 && (!fn || (in_size && !in)))
        rc = -EINVAL;
    /* The job carries its input and output after the header: in_room + out_size. */
    size_t in_room = proc__align_up(in_size, 64), extra = 0;
    if (rc == 0 && (in_room < in_size || !proc__add_ok(in_room, out_size, &extra)))
        rc = -ENOMEM;
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    struct proc__job *j = proc__job_alloc(extra);
    if (!j)
        return NULL;
    unsigned char *buf = (unsigned char *)j + proc__align_up(sizeof *j, 64);
    if (in_size)
        memcpy(buf, in, in_size);
    j->future = true;
    j->fn = fn;
    j->in = buf;
    j->out = buf + in_room;
    j->in_size = in_size;
    j->out_size = out_size;
    j->n = j->remaining = 1;
    if ((rc = proc__pool_enqueue(pool, j)) < 0) {
        proc__job_discard(j);
        errno = -rc;
        return NULL;
    }
    return (proc_future_t *)(void *)j; /* its first and only member */
}

int proc_future_wait(proc_future_t *f, int timeout_ms)
{
    if (!f || timeout_ms < -1)
        return -EINVAL;
    struct proc__job *j = &f->job;
    pthread_mutex_lock(&j->mu);
    int rc = proc__pool_wait_flag(&j->cv, &j->mu, &j->done, timeout_ms);
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int proc_future_get(proc_future_t *f, void *out, size_t out_size, int timeout_ms)
{
    if (!f || timeout_ms < -1 || (out_size && !out) || out_size > f->job.out_size)
        return -EINVAL;
    struct proc__job *j = &f->job;
    pthread_mutex_lock(&j->mu);
    int rc = proc__pool_wait_flag(&j->cv, &j->mu, &j->done, timeout_ms);
    if (rc == 0) {
        rc = j->result;
        if (j->ran && out_size)
            memcpy(out, j->out, out_size);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void proc_future_free(proc_future_t *f)
{
    if (f)
        proc__job_unref(&f->job);
}

/* Closes the pool to new work (and with terminate, ends it) once; wakes the dispatcher. */
static void pool_shut(struct proc_pool *pool, bool terminate)
{
    pthread_mutex_lock(&pool->mu);
    bool wake = false;
    if (terminate ? !pool->terminating && !pool->finished : !pool->closed) {
        pool->closed = true;
        pool->terminating = pool->terminating || terminate;
        wake = pool->sleeping;
        pool->sleeping = false;
    }
    pthread_mutex_unlock(&pool->mu);
    if (wake)
        proc__pool_wake_dispatcher(pool);
}

int proc_pool_close(proc_pool_t *pool)
{
    int rc = pool_check(pool);
    if (rc < 0)
        return rc;
    pool_shut(pool, false);
    return 0;
}

int proc_pool_terminate(proc_pool_t *pool)
{
    int rc = pool_check(pool);
    if (rc < 0)
        return rc;
    pool_shut(pool, true);
    pthread_mutex_lock(&pool->mu);
    proc__pool_wait_flag(&pool->cv, &pool->mu, &pool->finished, PROC_WAIT_FOREVER);
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

int proc_pool_join(proc_pool_t *pool, int timeout_ms)
{
    int rc = pool_check(pool);
    if (rc < 0)
        return rc;
    if (timeout_ms < -1)
        return -EINVAL;
    pthread_mutex_lock(&pool->mu);
    if (!pool->closed)
        rc = -EINVAL;
    else
        rc = proc__pool_wait_flag(&pool->cv, &pool->mu, &pool->finished, timeout_ms);
    pthread_mutex_unlock(&pool->mu);
    return rc;
}

int proc_pool_free(proc_pool_t *pool)
{
    if (!pool)
        return 0;
    int rc = pool_check(pool);
    if (rc < 0)
        return rc;
    proc_pool_terminate(pool);
    pthread_join(pool->thread, NULL);
    proc__fast_free(pool);
    free(pool->w);
    close(pool->wakefd);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
    return 0;
}
