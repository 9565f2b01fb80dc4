/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: the dispatcher, one thread per pool. It owns the workers and
 * the queue: it takes jobs from the inbox, keeps the pool at its size
 * (replacing workers that died or left), hands chunks to idle workers, offers
 * idle workers to fast jobs before it sleeps, and polls every worker's socket
 * and sentinel.
 */
#include "pool_dispatch.h"
#include "pool_fast.h"
#include "pool_job.h"
#include "pool_stream.h"
#include "pool_spawn.h"
#include "pool_worker.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* After a failed fork, the next attempt waits this long. */
#define POOL_SPAWN_RETRY_MS 50

static atomic_bool pool_exiting;

/* Registered after libproc's own at-exit work, so it runs first: no new
 * workers while that work ends the daemonic ones. */
static void pool_at_exit(void)
{
    atomic_store(&pool_exiting, true);
}

static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void pool_register_exit(void)
{
    atexit(pool_at_exit);
}

/* Registered after libproc's own at-exit work (the caller set libproc up
 * first), so it runs first: no new workers while that work ends the
 * daemonic ones. */
void proc__dispatch_init(void)
{
    pthread_once(&exit_once, pool_register_exit);
}

/* ---------------------------------------------------------------- dispatcher */

static void set_finished(struct proc_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    pool->finished = true;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
}

/* Moves the incoming list to the queue; returns the flags seen. */
static void take_incoming(struct proc_pool *pool, bool *closed, bool *term, bool *fast)
{
    pthread_mutex_lock(&pool->mu);
    pool->sleeping = false;
    pool->fast_returned = false;
    pool->kicked = false;
    *fast = pool->fast_busy;
    struct proc__job *j = pool->in_head;
    pool->in_head = pool->in_tail = NULL;
    *closed = pool->closed;
    *term = pool->terminating;
    pthread_mutex_unlock(&pool->mu);
    while (j) {
        struct proc__job *next = j->inext;
        j->inext = NULL;
        proc__queue_push_back(pool, j);
        j = next;
    }
}

static bool any_busy(const struct proc_pool *pool)
{
    for (size_t i = 0; i < pool->nw; i++)
        if (pool->w[i]->state == PROC__W_BUSY)
            return true;
    return false;
}

/* Workers that can still take tasks. */
static int usable_workers(const struct proc_pool *pool)
{
    int n = 0;
    for (size_t i = 0; i < pool->nw; i++)
        if (!pool->w[i]->leaving && !pool->w[i]->told)
            n++;
    return n;
}

/* Keeps nworkers usable workers while there is or may come work. Returns a
 * poll timeout: -1, or when to retry a fork that failed. */
static int maintain_workers(struct proc_pool *pool, bool closed)
{
    if (closed && !pool->qhead && !any_busy(pool))
        return -1;
    int live = usable_workers(pool);
    while (!pool->broken && !atomic_load(&pool_exiting) && live < pool->nworkers) {
        int64_t now = proc__now_ns() / 1000000;
        if (now < pool->spawn_after_ms)
            return (int)(pool->spawn_after_ms - now);
        if (proc__worker_spawn(pool) == 0) {
            live++;
            continue;
        }
        pool->spawn_after_ms = now + POOL_SPAWN_RETRY_MS;
        if (++pool->init_deaths >= pool->max_init_deaths)
            pool->broken = true;
        else
            return POOL_SPAWN_RETRY_MS;
    }
    /* No worker will ever come: nothing queued can run. */
    if (live == 0 && (pool->broken || atomic_load(&pool_exiting)))
        proc__queue_cancel_all(pool, -ECHILD);
    return -1;
}

/* Streams that no item will come to and that have none left leave the queue. */
static void retire_streams(struct proc_pool *pool, bool closed)
{
    for (struct proc__job *j = pool->nstreams ? pool->qhead : NULL, *next; j; j = next) {
        next = j->qnext;
        if (j->stream && proc__stream_over(j->stream, closed)) {
            proc__queue_remove(pool, j);
            proc__stream_detach(j->stream);
            proc__job_unref(j); /* the pool's reference */
        }
    }
}

/* The first queued job with items to hand out now; NULL if none. */
static struct proc__job *job_with_work(struct proc_pool *pool)
{
    struct proc__job *j = pool->qhead;
    while (pool->nstreams && j && j->stream && !proc__stream_has_work(j->stream))
        j = j->qnext;
    return j;
}

static void assign(struct proc_pool *pool, bool closed)
{
    retire_streams(pool, closed);
    if (!pool->qhead)
        return;
    proc__fast_reclaim(pool);
    for (size_t i = 0; i < pool->nw && pool->qhead; i++) {
        struct proc__worker *w = pool->w[i];
        while (w->state == PROC__W_IDLE && !w->leaving && !w->told && !w->eof && !w->lent &&
               w->budget != 0) {
            struct proc__job *j = job_with_work(pool);
            if (!j)
                return;
            size_t max = j->chunk;
            if (w->budget > 0 && (size_t)w->budget < max)
                max = (size_t)w->budget;
            if (j->stream) {
                proc__worker_send_batch(pool, w, j, max);
                continue;
            }
            size_t start;
            size_t cnt = proc__job_carve(pool, j, max, &start);
            proc__worker_send_chunk(pool, w, j, start,
                                    cnt); /* leaves w idle only if it failed the chunk */
        }
    }
}

/* What the dispatcher polls: the wake eventfd, each worker's socket and sentinel. */
struct pollset {
    struct pollfd *pfd;
    struct proc__worker **w; /* the worker of each entry; NULL for the eventfd */
    size_t n, cap;
};

/* Fills ps from the current workers; false when out of memory (ps->n = 0). */
static bool pollset_fill(struct pollset *ps, const struct proc_pool *pool)
{
    size_t need = 1 + 2 * pool->nw; /* nw is at most an int's worth of workers */
    ps->n = 0;
    if (need > ps->cap || !ps->pfd || !ps->w) {
        size_t cap = 16;
        while (cap < need)
            cap *= 2;
        struct pollfd *a = realloc(ps->pfd, cap * sizeof *a);
        if (a)
            ps->pfd = a;
        struct proc__worker **b = a ? realloc(ps->w, cap * sizeof *b) : NULL;
        if (b)
            ps->w = b;
        if (!a || !b)
            return false;
        ps->cap = cap;
    }
    ps->pfd[ps->n] = (struct pollfd){.fd = pool->wakefd, .events = POLLIN};
    ps->w[ps->n++] = NULL;
    for (size_t i = 0; i < pool->nw; i++) {
        struct proc__worker *w = pool->w[i];
        if (!w->eof) {
            ps->pfd[ps->n] = (struct pollfd){.fd = w->fd, .events = POLLIN};
            ps->w[ps->n++] = w;
        }
        /* after the socket: w may be freed when its sentinel is handled */
        ps->pfd[ps->n] = (struct pollfd){.fd = w->sentinel, .events = POLLIN};
        ps->w[ps->n++] = w;
    }
    return true;
}

/* Handles what poll() reported. */
static void pollset_handle(struct proc_pool *pool, const struct pollset *ps)
{
    if (ps->pfd[0].revents) {
        uint64_t v;
        ssize_t rd;
        do {
            rd = read(pool->wakefd, &v, sizeof v);
        } while (rd < 0 && errno == EINTR);
    }
    for (size_t i = 1; i < ps->n; i++) {
        if (!ps->pfd[i].revents)
            continue;
        struct proc__worker *w = ps->w[i];
        if (ps->pfd[i].fd == w->sentinel)
            proc__worker_exited(pool, w);
        else
            proc__worker_read(pool, w);
    }
}

/* Closed and nothing left to run: every worker hears EOF. True once all are gone. */
static bool release_workers(struct proc_pool *pool)
{
    for (size_t i = 0; i < pool->nw; i++) {
        struct proc__worker *w = pool->w[i];
        if (!w->told) {
            shutdown(w->fd, SHUT_WR); /* EOF for the worker, whoever holds copies */
            w->told = true;
        }
    }
    return pool->nw == 0;
}

/* Under pool->mu: whether to go round again instead of sleeping; else offers
 * the idle workers to fast jobs and marks the dispatcher asleep. */
static bool must_go_on(struct proc_pool *pool, bool closed)
{
    pthread_mutex_lock(&pool->mu);
    bool again = pool->in_head || pool->closed != closed || pool->terminating ||
                 pool->fast_returned || pool->kicked;
    if (!again) {
        pool->sleeping = true;
        proc__fast_offer_locked(pool);
    }
    pthread_mutex_unlock(&pool->mu);
    return again;
}

/* proc_pool_terminate: workers killed, unfinished items fail with -ECANCELED. */
static void terminate_all(struct proc_pool *pool)
{
    proc__workers_kill(pool, -ECANCELED);
    /* a fast job's caller still reads the region: wait until it is done */
    pthread_mutex_lock(&pool->mu);
    while (pool->fast_busy)
        pthread_cond_wait(&pool->cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
    bool c, t, f;
    take_incoming(pool, &c, &t, &f);
    proc__queue_cancel_all(pool, -ECANCELED);
}

void *proc__dispatcher_main(void *arg)
{
    struct proc_pool *pool = arg;
    struct pollset ps = {0};
    bool closed, term, fast;
    for (;;) {
        take_incoming(pool, &closed, &term, &fast);
        if (term)
            break;
        int timeout = maintain_workers(pool, closed && !fast);
        assign(pool, closed);
        int watch = proc__workers_watch(pool);
        if (watch >= 0 && (timeout < 0 || watch < timeout))
            timeout = watch;
        bool pending = pool->qhead || any_busy(pool) || fast;
        if (closed && !pending && release_workers(pool))
            break;
        if (!pollset_fill(&ps, pool) && (timeout < 0 || timeout > 10))
            timeout = 10; /* out of memory: try again soon */
        if (must_go_on(pool, closed))
            continue;
        int r = poll(ps.pfd, ps.n, timeout);
        if (r > 0 && ps.n > 0)
            pollset_handle(pool, &ps);
        /* else timeout, EINTR, or ENOMEM: the loop re-checks everything */
    }
    if (term)
        terminate_all(pool);
    free(ps.pfd);
    free(ps.w);
    set_finished(pool);
    return NULL;
}
