/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: the parent side.
 *
 * One dispatcher thread per pool owns the workers and the queue of jobs.
 * Callers (apply, map, submit) only append a job to the pool's incoming
 * list under pool->mu and wake the dispatcher through an eventfd; the
 * dispatcher hands chunks of items to idle workers (see pool_internal.h for
 * the protocol) and polls every worker's socket and pidfd (sentinel). When a
 * chunk comes back, or its worker died, it copies the outputs of the items
 * that finished into the job's buffer, records the first failing index, and
 * once no item of the job is left it "settles" the job: sets the result under
 * the job's own mutex and wakes its waiters. Jobs are reference counted (the
 * caller's handle and the pool's), so futures outlive their pool.
 *
 * A job is on the dispatcher's queue exactly while it has items that were
 * neither handed out nor finished: job->next < job->n, or ranges put back
 * (job->retry) after a worker died in the middle of a chunk.
 *
 * Fast jobs (apply and map on a wholly idle pool, see "fast jobs" below and
 * pool_internal.h) bypass the queue: before it sleeps, the dispatcher offers
 * its idle workers (pool->lendable); a caller borrows them (pool->lent) and
 * runs the job itself; it gives them back when the job is over. The
 * dispatcher never hands a chunk to a borrowed worker, and frees a worker
 * only after fast_forget() has told the job that borrowed it.
 */
#include "pool_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Input plus output bytes per chunk (a single bigger item is one chunk). */
#define POOL_CHUNK_BYTES ((size_t)4 << 20)
/* Arena length of a new worker; it grows on demand. */
#define POOL_ARENA_INIT ((size_t)256 << 10)
/* An arena grown past this is shrunk again when a smaller chunk comes. */
#define POOL_ARENA_KEEP ((size_t)16 << 20)
/* Where the return values start in the arena; the header is before. */
#define POOL_ARENA_HDR ((size_t)64)
/* After a failed fork, the next attempt waits this long. */
#define POOL_SPAWN_RETRY_MS 50
/* Fast jobs: at most this many bytes of region (bigger jobs take the queue),
 * chunks per worker (small enough that a late worker still gets its share),
 * how often a waiting caller looks again without a wakeup, and how long it
 * spins for the last workers once its own CPU is free. */
#define POOL_FAST_MAX ((size_t)4 << 20)
#define POOL_FAST_PARTS 16
#define POOL_FAST_TICK_NS 100000000L
#define POOL_FAST_SPIN_NS 200000L

enum { POOL_LOST_NO, POOL_LOST_CRASH, POOL_LOST_KILLED };

/* Every job (apply, map, submit) is one of these; submit hands it out. */
struct proc_future {
    _Atomic int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;   /* under mu; result and outputs are final once set */
    int result;  /* 0, or the value of the first failing item */
    bool ran;    /* n == 1: the item returned, so its output is valid */
    bool future; /* in and out point into this allocation */

    proc_task_fn *fn;
    const unsigned char *in;
    unsigned char *out;
    size_t in_size, out_size, n;
    size_t chunk; /* items per chunk */

    /* dispatcher only */
    size_t next;      /* first item never handed out */
    size_t remaining; /* items not yet finished or failed */
    size_t fail_idx;  /* first failing item so far, SIZE_MAX if none */
    int fail_rc;
    struct pool_range *retry;
    struct proc_future *qprev, *qnext;
    bool queued;
    struct proc_future *inext; /* the pool's incoming list, under pool->mu */
};

struct pool_range {
    struct pool_range *next;
    size_t start, count;
};

enum pool_wstate {
    W_INIT, /* started, initializer not yet done */
    W_IDLE,
    W_BUSY, /* has a chunk */
};

struct pool_worker {
    proc_t *proc;
    int fd;       /* parent's end of the socketpair */
    int memfd;    /* the arena */
    int sentinel; /* proc_sentinel(proc) */
    unsigned char *arena;
    size_t arena_size;
    enum pool_wstate state;
    bool leaving; /* spent its max_tasks budget: exits on its own, gets nothing */
    bool told;    /* the parent shut its end: the worker exits */
    bool eof;     /* its socket reached end of file: poll only the sentinel */
    bool lent;    /* lent to a fast job when assign() last looked: gets no chunk */
    int cpu;      /* the CPU it is bound to, -1: none */
    long budget;  /* tasks it may still run; -1 unlimited */
    /* the chunk it runs (W_BUSY) */
    struct proc_future *job;
    size_t start, count;
    uint64_t seq;
    size_t rc_off, out_off;
};

struct proc_pool {
    pid_t owner;
    int nworkers;
    int max_tasks;
    int max_init_deaths;
    void (*init)(void *arg);
    void *initarg;
    sigset_t mask;
    int wakefd;
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t cv;                     /* broadcast when finished is set */
    struct proc_future *in_head, *in_tail; /* submitted, not yet seen by the dispatcher */
    bool closed;                           /* close or terminate was called */
    bool terminating;                      /* terminate was called */
    bool finished;                         /* every worker is gone, the dispatcher is done */
    bool sleeping;                         /* the dispatcher is (about to be) in poll() */
    /* fast jobs: idle workers the dispatcher offers, those a caller took
     * (index = slot; NULL once dead), and lost[slot] set when one died:
     * POOL_LOST_CRASH, or POOL_LOST_KILLED when terminate killed it */
    bool fast_busy;     /* a caller runs a fast job: it owns the region */
    bool fast_returned; /* a fast job gave its workers back: look at the queue again */
    bool fast_skipped;  /* assign() passed over lent workers */
    struct pool_worker **lendable, **lent;
    size_t nlendable, nlent; /* at most nworkers each */
    uint64_t offer_gen;      /* bumped whenever the dispatcher redoes or takes back the offer */
    _Atomic int *lost;
    bool *sent;    /* the fast job's owner only: slot i got its message */
    int *slot_cpu; /* and the CPU slot i's worker is bound to (-1: none) */
    bool fast_off; /* LIBPROC_POOL_FAST=0: every job takes the queue */
    int fastfd;
    unsigned char *fast; /* the region's mapping; written by the owner, before lending */
    size_t fast_size;
    uint64_t fast_seq;

    /* the dispatcher's (and proc_pool_new's, before the thread exists) */
    struct pool_worker **w;
    size_t nw, wcap;
    struct proc_future *qhead, *qtail;
    uint64_t seq;
    int init_deaths; /* workers in a row that died (or failed to fork) before READY */
    int *cpus;       /* the CPUs workers are spread over; ncpus 0: not bound */
    int ncpus;
    int cpu_next; /* where the search for the least used CPU starts */
    bool broken;  /* no more workers are started */
    unsigned long names;
    int64_t spawn_after_ms;
};

static atomic_bool pool_exiting;
static atomic_uint pool_cpu_rotor; /* successive pools start on different CPUs */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* Registered after libproc's own at-exit work, so it runs first: no new
 * workers while that work ends the daemonic ones. */
static void pool_at_exit(void)
{
    atomic_store(&pool_exiting, true);
}

static void pool_register_exit(void)
{
    atexit(pool_at_exit);
}

/* ----------------------------------------------------------------- helpers */

/*
 * Waits on cv until *flag is set: 0, or -ETIMEDOUT. timeout_ms as in poll();
 * the deadline is fixed at the start, so wakeups never extend it.
 */
static int wait_flag(pthread_cond_t *cv, pthread_mutex_t *mu, const bool *flag, int timeout_ms)
{
    struct proc__deadline d;
    proc__deadline_init(&d, timeout_ms);
    /* not a cancellation point: a cancelled waiter would leave mu locked */
    int cancel, rc = 0;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    while (!*flag && rc == 0)
        rc = proc__cond_wait(cv, mu, &d) == -ETIMEDOUT ? -ETIMEDOUT : 0;
    pthread_setcancelstate(cancel, NULL);
    return *flag ? 0 : rc;
}

static int sync_init(pthread_mutex_t *mu, pthread_cond_t *cv)
{
    int r = proc__cond_init(cv);
    if (r)
        return r;
    r = pthread_mutex_init(mu, NULL);
    if (r) {
        pthread_cond_destroy(cv);
        return -r;
    }
    return 0;
}

static size_t align_up(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

static bool add_ok(size_t a, size_t b, size_t *r)
{
    return !__builtin_add_overflow(a, b, r);
}

static bool mul_ok(size_t a, size_t b, size_t *r)
{
    return !__builtin_mul_overflow(a, b, r);
}

static void wake_dispatcher(struct proc_pool *pool)
{
    uint64_t one = 1;
    ssize_t r;
    do {
        r = write(pool->wakefd, &one, sizeof one);
    } while (r < 0 && errno == EINTR);
    /* EAGAIN: the counter is full, so the dispatcher wakes anyway */
}

/* ---------------------------------------------------------------------- jobs */

static struct proc_future *job_alloc(size_t extra)
{
    size_t size;
    if (!add_ok(align_up(sizeof(struct proc_future), 64), extra, &size)) {
        errno = ENOMEM;
        return NULL;
    }
    struct proc_future *j = calloc(1, size);
    if (!j)
        return NULL;
    int r = sync_init(&j->mu, &j->cv);
    if (r < 0) {
        free(j);
        errno = -r;
        return NULL;
    }
    atomic_init(&j->refs, 2); /* the caller's and the pool's */
    j->fail_idx = SIZE_MAX;
    return j;
}

static void job_unref(struct proc_future *j)
{
    if (atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    while (j->retry) {
        struct pool_range *r = j->retry;
        j->retry = r->next;
        free(r);
    }
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

/* Items per chunk: Python's chunksize (n / (4 * workers), rounded up),
 * capped by POOL_CHUNK_BYTES. */
static size_t job_chunk(const struct proc_pool *pool, size_t n, size_t in_size, size_t out_size)
{
    size_t parts = (size_t)pool->nworkers * 4;
    size_t chunk = n / parts + (n % parts != 0);
    size_t per;
    if (!add_ok(in_size, out_size, &per) || !add_ok(per, sizeof(int), &per))
        per = SIZE_MAX;
    size_t cap = per >= POOL_CHUNK_BYTES ? 1 : POOL_CHUNK_BYTES / per;
    if (chunk > cap)
        chunk = cap;
    return chunk ? chunk : 1;
}

static void note_fail(struct proc_future *j, size_t idx, int rc)
{
    if (idx < j->fail_idx) {
        j->fail_idx = idx;
        j->fail_rc = rc;
    }
}

/* The pool's last word on j: j may be freed by the time this returns. */
static void job_settle(struct proc_future *j)
{
    int result = j->fail_idx == SIZE_MAX ? 0 : j->fail_rc;
    pthread_mutex_lock(&j->mu);
    j->result = result;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
}

static void q_push_back(struct proc_pool *pool, struct proc_future *j)
{
    j->qnext = NULL;
    j->qprev = pool->qtail;
    if (pool->qtail)
        pool->qtail->qnext = j;
    else
        pool->qhead = j;
    pool->qtail = j;
    j->queued = true;
}

static void q_push_front(struct proc_pool *pool, struct proc_future *j)
{
    j->qprev = NULL;
    j->qnext = pool->qhead;
    if (pool->qhead)
        pool->qhead->qprev = j;
    else
        pool->qtail = j;
    pool->qhead = j;
    j->queued = true;
}

static void q_remove(struct proc_pool *pool, struct proc_future *j)
{
    if (!j->queued)
        return;
    if (j->qprev)
        j->qprev->qnext = j->qnext;
    else
        pool->qhead = j->qnext;
    if (j->qnext)
        j->qnext->qprev = j->qprev;
    else
        pool->qtail = j->qprev;
    j->qprev = j->qnext = NULL;
    j->queued = false;
}

/* Takes up to max items of j not yet handed out; dequeues j when none is left. */
static size_t job_carve(struct proc_pool *pool, struct proc_future *j, size_t max, size_t *start)
{
    size_t cnt;
    if (j->retry) {
        struct pool_range *r = j->retry;
        cnt = r->count < max ? r->count : max;
        *start = r->start;
        r->start += cnt;
        r->count -= cnt;
        if (r->count == 0) {
            j->retry = r->next;
            free(r);
        }
    } else {
        cnt = j->n - j->next;
        if (cnt > max)
            cnt = max;
        *start = j->next;
        j->next += cnt;
    }
    if (!j->retry && j->next >= j->n)
        q_remove(pool, j);
    return cnt;
}

/* Fails every item of j that was not handed out with err (j may be freed). */
static void job_cancel(struct proc_pool *pool, struct proc_future *j, int err)
{
    size_t count = 0, first = SIZE_MAX;
    q_remove(pool, j);
    while (j->retry) {
        struct pool_range *r = j->retry;
        j->retry = r->next;
        count += r->count;
        if (r->count && r->start < first)
            first = r->start;
        free(r);
    }
    if (j->next < j->n) {
        count += j->n - j->next;
        if (j->next < first)
            first = j->next;
        j->next = j->n;
    }
    if (count == 0)
        return;
    note_fail(j, first, err);
    j->remaining -= count;
    if (j->remaining == 0)
        job_settle(j);
}

/* ------------------------------------------------------------------- workers */

static struct pool_arena_hdr *arena_hdr(const struct pool_worker *w)
{
    return (struct pool_arena_hdr *)(void *)w->arena;
}

/*
 * Ends w's chunk. Items [0, done) returned: their values and outputs are
 * taken. If blame is not 0, item done (if any) fails with blame. The items
 * after that are put back on the queue when rest_err is 0, else fail with
 * rest_err. The job may be settled (and freed) here.
 */
static void chunk_finish(struct proc_pool *pool, struct pool_worker *w, uint64_t done, int blame,
                         int rest_err)
{
    struct proc_future *j = w->job;
    size_t start = w->start, count = w->count;
    w->job = NULL;
    w->state = W_IDLE;
    if (done > count)
        done = count;
    size_t settled = (size_t)done;
    if (done > 0) {
        const int *rc = (const int *)(void *)(w->arena + w->rc_off);
        for (size_t i = 0; i < done; i++)
            if (rc[i] != 0) {
                note_fail(j, start + i, rc[i]);
                break;
            }
        if (j->out_size)
            memcpy(j->out + start * j->out_size, w->arena + w->out_off, done * j->out_size);
        if (j->n == 1)
            j->ran = true;
    }
    size_t next = done;
    if (blame && next < count) {
        note_fail(j, start + next, blame);
        next++;
        settled++;
    }
    if (next < count) {
        if (rest_err == 0) {
            struct pool_range *r = malloc(sizeof *r);
            if (r) {
                r->start = start + next;
                r->count = count - next;
                r->next = j->retry;
                j->retry = r;
                if (!j->queued)
                    q_push_front(pool, j);
            } else {
                rest_err = -ENOMEM;
            }
        }
        if (rest_err) {
            note_fail(j, start + next, rest_err);
            settled += count - next;
        }
    }
    j->remaining -= settled;
    if (j->remaining == 0)
        job_settle(j);
}

/* The parent's view of an arena is not copied into processes it forks later
 * (other workers, the host's children): each worker maps its own arena. */
static void arena_dontfork(void *addr, size_t len)
{
#ifdef MADV_DONTFORK
    madvise(addr, len, MADV_DONTFORK);
#else
    (void)addr;
    (void)len;
#endif
}

/* Makes w's arena at least need bytes long (and shrinks a huge one). */
static int arena_fit(struct pool_worker *w, size_t need)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    if (need > SIZE_MAX - pg)
        return -ENOMEM;
    size_t size = align_up(need, pg);
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
        arena_dontfork(a, size);
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

/* Hands items [start, start + cnt) of j to the idle worker w. */
static void send_chunk(struct proc_pool *pool, struct pool_worker *w, struct proc_future *j,
                       size_t start, size_t cnt)
{
    w->job = j;
    w->start = start;
    w->count = cnt;
    w->state = W_BUSY;
    if (w->budget > 0)
        w->budget -= (long)cnt;

    /* header, return values, inputs, outputs; each part 64-byte aligned */
    size_t in_bytes = 0, out_bytes = 0, in_off = 0, out_off = 0, need = 0;
    size_t rc_off = POOL_ARENA_HDR;
    bool ok = mul_ok(cnt, j->in_size, &in_bytes) && mul_ok(cnt, j->out_size, &out_bytes) &&
              add_ok(rc_off, cnt * sizeof(int), &in_off) && in_off < SIZE_MAX - 64;
    in_off = align_up(in_off, 64);
    ok = ok && add_ok(in_off, in_bytes, &out_off) && out_off < SIZE_MAX - 64;
    out_off = align_up(out_off, 64);
    ok = ok && add_ok(out_off, out_bytes, &need);
    int rc = ok ? arena_fit(w, need) : -ENOMEM;
    if (rc < 0) {
        chunk_finish(pool, w, 0, 0, rc);
        return;
    }
    if (in_bytes)
        memcpy(w->arena + in_off, j->in + start * j->in_size, in_bytes);
    struct pool_arena_hdr *hdr = arena_hdr(w);
    atomic_store_explicit(&hdr->busy, 0, memory_order_relaxed);
    atomic_store_explicit(&hdr->done, 0, memory_order_relaxed);
    w->seq = ++pool->seq;
    w->rc_off = rc_off;
    w->out_off = out_off;
    struct pool_msg m = {
        .type = POOL_MSG_TASK,
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
    ssize_t r;
    do {
        r = send(w->fd, &m, sizeof m, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    if (r != (ssize_t)sizeof m) {
        /* Gone or unusable (at most one message is ever queued, so never
         * full): make sure it dies; its death puts the chunk back. */
        proc_kill(w->proc);
    }
}

/* Takes back the workers offered to fast jobs; marks those a caller has. */
static void fast_reclaim(struct proc_pool *pool)
{
    for (size_t i = 0; i < pool->nw; i++)
        pool->w[i]->lent = false;
    pthread_mutex_lock(&pool->mu);
    pool->nlendable = 0;
    pool->offer_gen++;
    if (pool->fast_busy) {
        for (size_t i = 0; i < pool->nlent; i++)
            if (pool->lent[i]) {
                pool->lent[i]->lent = true;
                pool->fast_skipped = true;
            }
    }
    pthread_mutex_unlock(&pool->mu);
}

/*
 * Under pool->mu, before the dispatcher sleeps: the workers callers may
 * borrow for fast jobs. Only when every worker is idle and nothing is queued:
 * a fast job cannot take in a worker that becomes free later, so it must not
 * start on part of the pool (a map of long tasks would run on too few).
 */
static void fast_offer_locked(struct proc_pool *pool)
{
    if (pool->fast_busy)
        return; /* its owner puts back what it borrowed (fast_return) */
    pool->nlendable = 0;
    pool->offer_gen++;
    if (pool->qhead || pool->max_tasks > 0 || pool->closed)
        return;
    size_t n = 0;
    for (size_t i = 0; i < pool->nw; i++) {
        struct pool_worker *w = pool->w[i];
        if (w->leaving || w->told)
            continue; /* on its way out: a replacement comes */
        if (w->state != W_IDLE || w->eof || n == (size_t)pool->nworkers)
            return;
        pool->lendable[n++] = w;
    }
    pool->nlendable = n;
}

static void assign(struct proc_pool *pool)
{
    if (!pool->qhead)
        return;
    fast_reclaim(pool);
    for (size_t i = 0; i < pool->nw && pool->qhead; i++) {
        struct pool_worker *w = pool->w[i];
        while (pool->qhead && w->state == W_IDLE && !w->leaving && !w->told && !w->eof &&
               !w->lent && w->budget != 0) {
            struct proc_future *j = pool->qhead;
            size_t max = j->chunk;
            if (w->budget > 0 && (size_t)w->budget < max)
                max = (size_t)w->budget;
            size_t start;
            size_t cnt = job_carve(pool, j, max, &start);
            send_chunk(pool, w, j, start, cnt); /* leaves w idle only if it failed the chunk */
        }
    }
}

static void worker_free(struct pool_worker *w)
{
    if (w->proc) {
        proc_join(w->proc, PROC_WAIT_FOREVER);
        proc_close(w->proc);
    }
    if (w->fd >= 0)
        close(w->fd);
    if (w->memfd >= 0)
        close(w->memfd);
    if (w->arena)
        munmap(w->arena, w->arena_size);
    free(w);
}

static void fast_ring(struct proc_pool *pool)
{
    struct pool_fast *f = (struct pool_fast *)(void *)pool->fast;
    atomic_fetch_add_explicit(&f->ring, 1, memory_order_release);
    proc__sys_futex_wake(&f->ring, INT_MAX, true);
}

/* w is about to be freed: no caller may take it, and a fast job that has it
 * hears that it is gone and why (its caller then reads its slot). */
static void fast_forget(struct proc_pool *pool, const struct pool_worker *w, int why)
{
    if (!pool->lendable)
        return; /* proc_pool_new failed before the arrays existed */
    bool ring = false;
    pthread_mutex_lock(&pool->mu);
    for (size_t i = 0; i < pool->nlendable; i++)
        if (pool->lendable[i] == w) {
            /* no longer the whole pool: no offer until the dispatcher redoes it */
            pool->nlendable = 0;
            pool->offer_gen++;
        }
    if (pool->fast_busy)
        for (size_t i = 0; i < pool->nlent; i++)
            if (pool->lent[i] == w) {
                pool->lent[i] = NULL;
                atomic_store_explicit(&pool->lost[i], why, memory_order_release);
                ring = true;
            }
    if (ring)
        fast_ring(pool); /* under the lock: the next fast job may move the region */
    pthread_mutex_unlock(&pool->mu);
}

/* why: POOL_LOST_CRASH or POOL_LOST_KILLED, for a fast job that borrowed w */
static void worker_remove(struct proc_pool *pool, struct pool_worker *w, int why)
{
    fast_forget(pool, w, why);
    for (size_t i = 0; i < pool->nw; i++)
        if (pool->w[i] == w) {
            pool->w[i] = pool->w[--pool->nw];
            break;
        }
    worker_free(w);
}

/*
 * Workers are bound one per CPU, spread over the CPUs the creating thread may
 * run on: a scheduler that packs wakeups onto busy CPUs (as some hypervisors'
 * guests do) would otherwise queue the workers of one job behind each other.
 * LIBPROC_POOL_BIND=0, or a single allowed CPU, leaves them unbound.
 */
static int bind_plan(struct proc_pool *pool)
{
    const char *env = getenv("LIBPROC_POOL_BIND");
    cpu_set_t set;
    if ((env && strcmp(env, "0") == 0) || sched_getaffinity(0, sizeof set, &set) < 0 ||
        CPU_COUNT(&set) < 2)
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
static int spawn_worker(struct proc_pool *pool)
{
    if (pool->nw == pool->wcap) {
        size_t cap = pool->wcap ? pool->wcap * 2 : 8;
        struct pool_worker **a = realloc(pool->w, cap * sizeof *a);
        if (!a)
            return -ENOMEM;
        pool->w = a;
        pool->wcap = cap;
    }
    struct pool_worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = w->memfd = -1;
    w->cpu = pick_cpu(pool);
    int rc = 0, sv[2] = {-1, -1};
    int *fds = NULL;
    proc_t *p = NULL;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        rc = -errno;
        goto fail;
    }
    w->fd = sv[0];
    w->memfd = memfd_create("libproc-pool", MFD_CLOEXEC);
    if (w->memfd < 0 || ftruncate(w->memfd, (off_t)POOL_ARENA_INIT) < 0) {
        rc = -errno;
        goto fail;
    }
    w->arena = mmap(NULL, POOL_ARENA_INIT, PROT_READ | PROT_WRITE, MAP_SHARED, w->memfd, 0);
    if (w->arena == MAP_FAILED) {
        w->arena = NULL;
        rc = -errno;
        goto fail;
    }
    w->arena_size = POOL_ARENA_INIT;
    arena_dontfork(w->arena, w->arena_size);

    /* The worker must not keep the pool's other fds: its own end's peer
     * (else it never sees EOF), the other workers' sockets and arenas. */
    fds = malloc((2 * pool->nw + 2) * sizeof *fds);
    if (!fds) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t nfds = 0;
    fds[nfds++] = w->fd;
    if (pool->wakefd >= 0)
        fds[nfds++] = pool->wakefd;
    for (size_t i = 0; i < pool->nw; i++) {
        fds[nfds++] = pool->w[i]->fd;
        fds[nfds++] = pool->w[i]->memfd;
    }
    struct pool_boot boot = {
        .fd = sv[1],
        .memfd = w->memfd,
        .fastfd = pool->fastfd,
        .cpu = w->cpu,
        .arena_size = w->arena_size,
        .max_tasks = pool->max_tasks,
        .init = pool->init,
        .initarg = pool->initarg,
        .mask = pool->mask,
        .close_fds = fds,
        .nclose = nfds,
    };
    p = proc_new(proc_pool_worker_main, &boot);
    if (!p) {
        rc = -errno;
        goto fail;
    }
    char name[48];
    snprintf(name, sizeof name, "PoolWorker-%lu", ++pool->names);
    if ((rc = proc_set_daemon(p, true)) < 0 || (rc = proc_set_name(p, name)) < 0 ||
        (rc = proc_start(p)) < 0)
        goto fail;
    close(sv[1]);
    free(fds);
    w->proc = p;
    w->sentinel = proc_sentinel(p);
    w->state = W_INIT;
    w->budget = pool->max_tasks > 0 ? pool->max_tasks : -1;
    pool->w[pool->nw++] = w;
    return 0;

fail:
    if (p)
        proc_close(p);
    free(fds);
    if (sv[1] >= 0)
        close(sv[1]);
    worker_free(w);
    return rc;
}

/* Takes the messages w sent (also after its death: they stay queued). */
static void worker_read(struct proc_pool *pool, struct pool_worker *w)
{
    while (!w->eof) {
        struct pool_msg m;
        ssize_t r = recv(w->fd, &m, sizeof m, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r != (ssize_t)sizeof m) {
            w->eof = true; /* end of file, error, or garbage: wait for the sentinel */
            return;
        }
        switch (m.type) {
        case POOL_MSG_READY:
            if (w->state == W_INIT) {
                w->state = W_IDLE;
                pool->init_deaths = 0;
            }
            break;
        case POOL_MSG_RESULT:
        case POOL_MSG_ERROR:
            if (w->state == W_BUSY && m.seq == w->seq) {
                if (m.type == POOL_MSG_RESULT)
                    chunk_finish(pool, w, w->count, 0, 0);
                else
                    chunk_finish(pool, w, 0, 0, m.err > 0 ? -m.err : -EIO);
                if (w->budget == 0)
                    w->leaving = true; /* exits after this result */
            }
            break;
        default:
            break;
        }
    }
}

/* w's process ended: settle its chunk, reap it, forget it. */
static void worker_exited(struct proc_pool *pool, struct pool_worker *w)
{
    worker_read(pool, w);
    if (w->state == W_INIT && !w->told) {
        if (++pool->init_deaths >= pool->max_init_deaths)
            pool->broken = true;
    } else if (w->state == W_BUSY) {
        struct pool_arena_hdr *hdr = arena_hdr(w);
        uint64_t done = atomic_load_explicit(&hdr->done, memory_order_acquire);
        uint64_t busy = atomic_load_explicit(&hdr->busy, memory_order_acquire);
        chunk_finish(pool, w, done, busy > done ? -ECHILD : 0, 0);
    }
    worker_remove(pool, w, POOL_LOST_CRASH);
}

/* Kills every worker and reaps it. Chunks they ran: finished items are
 * kept, the others fail with err. */
static void kill_workers(struct proc_pool *pool, int err)
{
    for (size_t i = 0; i < pool->nw; i++)
        proc_kill(pool->w[i]->proc);
    while (pool->nw > 0) {
        struct pool_worker *w = pool->w[pool->nw - 1];
        proc_join(w->proc, PROC_WAIT_FOREVER);
        worker_read(pool, w);
        if (w->state == W_BUSY) {
            struct pool_arena_hdr *hdr = arena_hdr(w);
            uint64_t done = atomic_load_explicit(&hdr->done, memory_order_acquire);
            chunk_finish(pool, w, done, 0, err);
        }
        /* one that had died on its own before our SIGKILL crashed */
        int code = proc_exitcode(w->proc);
        bool crashed = code != -SIGKILL && code != PROC_EXITCODE_UNKNOWN;
        worker_remove(pool, w, crashed ? POOL_LOST_CRASH : POOL_LOST_KILLED);
    }
}

static void cancel_queue(struct proc_pool *pool, int err)
{
    while (pool->qhead)
        job_cancel(pool, pool->qhead, err);
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
    *fast = pool->fast_busy;
    struct proc_future *j = pool->in_head;
    pool->in_head = pool->in_tail = NULL;
    *closed = pool->closed;
    *term = pool->terminating;
    pthread_mutex_unlock(&pool->mu);
    while (j) {
        struct proc_future *next = j->inext;
        j->inext = NULL;
        q_push_back(pool, j);
        j = next;
    }
}

static bool any_busy(const struct proc_pool *pool)
{
    for (size_t i = 0; i < pool->nw; i++)
        if (pool->w[i]->state == W_BUSY)
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
        if (spawn_worker(pool) == 0) {
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
        cancel_queue(pool, -ECHILD);
    return -1;
}

static void *dispatcher_main(void *arg)
{
    struct proc_pool *pool = arg;
    struct pollfd *pfd = NULL;
    struct pool_worker **pw = NULL;
    size_t pcap = 0;
    bool closed, term, fast;

    for (;;) {
        take_incoming(pool, &closed, &term, &fast);
        if (term)
            break;
        int timeout = maintain_workers(pool, closed && !fast);
        assign(pool);
        bool pending = pool->qhead || any_busy(pool) || fast;
        if (closed && !pending) {
            for (size_t i = 0; i < pool->nw; i++) {
                struct pool_worker *w = pool->w[i];
                if (!w->told) {
                    shutdown(w->fd, SHUT_WR); /* EOF for the worker, whoever holds copies */
                    w->told = true;
                }
            }
            if (pool->nw == 0)
                break;
        }

        size_t need = 1 + 2 * pool->nw;
        if (need > pcap) {
            size_t cap = need * 2;
            struct pollfd *a = realloc(pfd, cap * sizeof *a);
            if (a)
                pfd = a;
            struct pool_worker **b = a ? realloc(pw, cap * sizeof *b) : NULL;
            if (b)
                pw = b;
            if (!a || !b) {
                timeout = 10; /* out of memory: try again soon */
                need = 0;
            } else {
                pcap = cap;
            }
        }
        size_t n = 0;
        if (need) {
            pfd[n] = (struct pollfd){.fd = pool->wakefd, .events = POLLIN};
            pw[n++] = NULL;
            for (size_t i = 0; i < pool->nw; i++) {
                struct pool_worker *w = pool->w[i];
                if (!w->eof) {
                    pfd[n] = (struct pollfd){.fd = w->fd, .events = POLLIN};
                    pw[n++] = w;
                }
                /* after the socket: w may be freed when its sentinel is handled */
                pfd[n] = (struct pollfd){.fd = w->sentinel, .events = POLLIN};
                pw[n++] = w;
            }
        }

        pthread_mutex_lock(&pool->mu);
        bool again =
            pool->in_head || pool->closed != closed || pool->terminating || pool->fast_returned;
        if (!again) {
            pool->sleeping = true;
            fast_offer_locked(pool);
        }
        pthread_mutex_unlock(&pool->mu);
        if (again)
            continue;
        int r = poll(pfd, n, timeout);
        if (r <= 0 || n == 0)
            continue; /* timeout, EINTR, or ENOMEM: the loop re-checks everything */
        if (pfd[0].revents) {
            uint64_t v;
            ssize_t rd;
            do {
                rd = read(pool->wakefd, &v, sizeof v);
            } while (rd < 0 && errno == EINTR);
        }
        for (size_t i = 1; i < n; i++) {
            if (!pfd[i].revents)
                continue;
            struct pool_worker *w = pw[i];
            if (pfd[i].fd == w->sentinel)
                worker_exited(pool, w);
            else
                worker_read(pool, w);
        }
    }

    if (term) {
        kill_workers(pool, -ECANCELED);
        /* a fast job's caller still reads the region: wait until it is done */
        pthread_mutex_lock(&pool->mu);
        while (pool->fast_busy)
            pthread_cond_wait(&pool->cv, &pool->mu);
        pthread_mutex_unlock(&pool->mu);
        bool c, t, f;
        take_incoming(pool, &c, &t, &f);
        cancel_queue(pool, -ECANCELED);
    }
    free(pfd);
    free(pw);
    set_finished(pool);
    return NULL;
}

/* ---------------------------------------------------------------- fast jobs */

static void fast_free(struct proc_pool *pool)
{
    if (pool->fast)
        munmap(pool->fast, pool->fast_size);
    if (pool->fastfd >= 0)
        close(pool->fastfd);
    free(pool->cpus);
    free(pool->lendable);
    free(pool->lent);
    free(pool->lost);
    free(pool->sent);
    free(pool->slot_cpu);
}

/* Makes the fast region at least need bytes long (it never shrinks). */
static int fast_fit(struct proc_pool *pool, size_t need)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t size = align_up(need, pg);
    if (size <= pool->fast_size)
        return 0;
    if (ftruncate(pool->fastfd, (off_t)size) < 0)
        return -errno;
    void *a = pool->fast ? mremap(pool->fast, pool->fast_size, size, MREMAP_MAYMOVE)
                         : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, pool->fastfd, 0);
    if (a == MAP_FAILED)
        return -errno;
    pool->fast = a;
    pool->fast_size = size;
    arena_dontfork(a, size);
    return 0;
}

/*
 * Gives the borrowed workers back: offered again at once, unless the
 * dispatcher wanted them meanwhile. If j still has retry ranges it goes to
 * the queue (2 returned), or they fail when the pool is terminating (1).
 */
static int fast_return(struct proc_pool *pool, struct proc_future *j, uint64_t gen)
{
    int rc = 1;
    pthread_mutex_lock(&pool->mu);
    bool wake = pool->fast_skipped || pool->closed || pool->offer_gen != gen || j->retry;
    pool->fast_skipped = false;
    for (size_t i = 0; i < pool->nlent && !wake; i++)
        wake = !pool->lent[i]; /* one died: the dispatcher redoes the offer */
    if (!wake) {
        for (size_t i = 0; i < pool->nlent; i++)
            if (pool->nlendable < (size_t)pool->nworkers)
                pool->lendable[pool->nlendable++] = pool->lent[i];
    } else {
        pool->nlendable = 0; /* not the whole pool any more: the dispatcher redoes the offer */
        pool->offer_gen++;
    }
    pool->fast_busy = false;
    pool->nlent = 0;
    if (j->retry) {
        if (pool->terminating) {
            /* the dispatcher is past its queue */
            while (j->retry) {
                struct pool_range *r = j->retry;
                j->retry = r->next;
                note_fail(j, r->start, -ECANCELED);
                j->remaining -= r->count;
                free(r);
            }
        } else {
            j->next = j->n; /* only the retry ranges are left */
            rc = 2;
            /* accepted before any close: it runs even if the pool closed since */
            if (pool->in_tail)
                pool->in_tail->inext = j;
            else
                pool->in_head = j;
            pool->in_tail = j;
            wake = true;
        }
    }
    pool->fast_returned = wake;
    wake = wake && pool->sleeping;
    if (wake)
        pool->sleeping = false;
    pthread_cond_broadcast(&pool->cv); /* a terminating dispatcher waits for fast_busy */
    pthread_mutex_unlock(&pool->mu);
    if (wake)
        wake_dispatcher(pool);
    return rc;
}

/* Items [start, start + count) of j go to the queue (fail with -ENOMEM if
 * even that cannot be); the number settled. */
static size_t fast_rest(struct proc_future *j, size_t start, size_t count)
{
    if (count == 0)
        return 0;
    struct pool_range *r = malloc(sizeof *r);
    if (r) {
        *r = (struct pool_range){.next = j->retry, .start = start, .count = count};
        j->retry = r;
        return 0;
    }
    note_fail(j, start, -ENOMEM);
    return count;
}

static void fast_copy_out(const struct proc_future *j, const unsigned char *out, size_t start,
                          size_t end)
{
    if (j->out_size && end > start)
        memcpy(j->out + start * j->out_size, out + start * j->out_size,
               (end - start) * j->out_size);
}

/*
 * After the job: the outputs of every item that returned go to j->out, the
 * first failure is noted, and the chunks that did not finish are split as a
 * dead worker's slot says: done items kept, the running one blamed if it
 * crashed, the rest requeued (fast_return() fails them if the pool is
 * terminating).
 */
static void fast_settle(struct proc_pool *pool, struct proc_future *j, size_t nslots,
                        size_t copied_chunks)
{
    unsigned char *region = pool->fast;
    struct pool_fast *f = (struct pool_fast *)(void *)region;
    _Atomic unsigned char *state = (_Atomic unsigned char *)(region + f->state_off);
    const unsigned char *out = region + f->out_off;
    size_t n = j->n, chunk = (size_t)f->chunk, nchunks = (n + chunk - 1) / chunk;

    for (size_t i = 0; i < nslots; i++) {
        struct pool_fast_slot *s = pool_fast_slot(region, i);
        uint64_t fail = atomic_load_explicit(&s->fail, memory_order_acquire);
        if (fail && fail <= n)
            note_fail(j, (size_t)fail - 1, (int)s->fail_rc);
    }
    size_t settled = 0, run = copied_chunks * chunk; /* [run, k): finished, not yet copied */
    if (run > n)
        run = n;
    for (size_t c = 0; c < nchunks; c++) {
        size_t k = c * chunk, cnt = n - k < chunk ? n - k : chunk;
        if (atomic_load_explicit(&state[c], memory_order_acquire) == 1) {
            settled += cnt;
            continue;
        }
        fast_copy_out(j, out, run, k);
        run = k + cnt;
        size_t done = 0;
        bool blame = false; /* the item running when its worker crashed fails */
        for (size_t i = 0; i < nslots; i++) {
            struct pool_fast_slot *s = pool_fast_slot(region, i);
            int why = atomic_load_explicit(&pool->lost[i], memory_order_acquire);
            if (why == POOL_LOST_NO || atomic_load_explicit(&s->start, memory_order_acquire) != k)
                continue;
            uint64_t d = atomic_load_explicit(&s->done, memory_order_acquire);
            uint64_t b = atomic_load_explicit(&s->busy, memory_order_acquire);
            done = d < cnt ? (size_t)d : cnt;
            blame = b > d && why == POOL_LOST_CRASH;
            break;
        }
        fast_copy_out(j, out, k, k + done);
        settled += done;
        if (blame && done < cnt) {
            note_fail(j, k + done, -ECHILD);
            settled++;
            done++;
        }
        settled += fast_rest(j, k + done, cnt - done);
    }
    fast_copy_out(j, out, run, n);
    j->remaining -= settled;
}

static void fast_copy_in(const struct proc_future *j, unsigned char *in, size_t start, size_t end)
{
    if (j->in_size && end > start)
        memcpy(in + start * j->in_size, j->in + start * j->in_size, (end - start) * j->in_size);
}

/* Sends the job to the borrowed workers bound to another CPU than here
 * (remote) or to the others; how many got it. */
static size_t fast_send(struct proc_pool *pool, uint64_t seq, size_t nslots, int here, bool remote)
{
    struct pool_msg m = {.type = POOL_MSG_FAST, .seq = seq, .arena_size = pool->fast_size};
    size_t nsent = 0;
    pthread_mutex_lock(&pool->mu);
    for (size_t i = 0; i < nslots; i++) {
        struct pool_worker *w = pool->lent[i];
        if (!w || (here >= 0 && w->cpu >= 0 && w->cpu != here) != remote)
            continue;
        m.count = i;
        m.err = here >= 0 && w->cpu == here;
        ssize_t r;
        do {
            r = send(w->fd, &m, sizeof m, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (r < 0 && errno == EINTR);
        pool->sent[i] = r == (ssize_t)sizeof m; /* else it is dying: its death is seen */
        nsent += pool->sent[i];
    }
    pthread_mutex_unlock(&pool->mu);
    return nsent;
}

/* Whether slot i is still in job seq. */
static bool fast_in_job(struct proc_pool *pool, size_t i, uint64_t seq)
{
    return pool->sent[i] &&
           atomic_load_explicit(&pool_fast_slot(pool->fast, i)->left, memory_order_acquire) !=
               seq &&
           atomic_load_explicit(&pool->lost[i], memory_order_acquire) == POOL_LOST_NO;
}

/*
 * Waits until every worker that got job seq has left it or died. While no
 * worker of the job is bound to the caller's CPU, that CPU would only idle:
 * the caller then copies out the chunks finished so far and spins for the
 * last ones (a sleeping vCPU can take longer to wake than a chunk to run).
 * Returns how many leading chunks it copied out.
 */
static size_t fast_wait(struct proc_pool *pool, struct proc_future *j, size_t nslots, uint64_t seq)
{
    struct pool_fast *f = (struct pool_fast *)(void *)pool->fast;
    _Atomic unsigned char *state = (_Atomic unsigned char *)(pool->fast + f->state_off);
    const unsigned char *out = pool->fast + f->out_off;
    size_t chunk = (size_t)f->chunk, nchunks = (j->n + chunk - 1) / chunk, copied = 0;
    int64_t spin_end = -1;
    bool stopped = false;
    for (;;) {
        uint32_t ring = atomic_load_explicit(&f->ring, memory_order_seq_cst);
        bool all = true, mine = false;
        int cpu = sched_getcpu();
        for (size_t i = 0; i < nslots; i++) {
            if (fast_in_job(pool, i, seq)) {
                all = false;
                mine = mine || pool->slot_cpu[i] < 0 || pool->slot_cpu[i] == cpu;
            }
            if (!stopped &&
                atomic_load_explicit(&pool->lost[i], memory_order_acquire) != POOL_LOST_NO) {
                /* A worker died: nobody claims more. The chunks left take the
                 * queue, where its replacement helps with them. */
                atomic_store_explicit(&f->next, j->n, memory_order_relaxed);
                stopped = true;
            }
        }
        if (all) {
            atomic_store_explicit(&f->waiting, 0, memory_order_relaxed);
            return copied;
        }
        int64_t now = proc__now_ns();
        if (!mine && spin_end < 0)
            spin_end = now + POOL_FAST_SPIN_NS;
        if (!mine && now < spin_end) {
            atomic_store_explicit(&f->waiting, 0, memory_order_relaxed);
            while (copied < nchunks &&
                   atomic_load_explicit(&state[copied], memory_order_acquire) == 1) {
                size_t k = copied * chunk, end = k + chunk < j->n ? k + chunk : j->n;
                fast_copy_out(j, out, k, end);
                copied++;
            }
            proc__cpu_relax();
            continue;
        }
        /* Leaving workers wake us only while this is set; one that left
         * after ring was read above makes the wait return at once. */
        atomic_store_explicit(&f->waiting, 1, memory_order_seq_cst);
        struct timespec tick;
        clock_gettime(CLOCK_MONOTONIC, &tick);
        proc__timespec_add_ns(&tick, POOL_FAST_TICK_NS);
        proc__sys_futex_wait(&f->ring, ring, &tick, true);
    }
}

/*
 * Runs j on the idle workers without the dispatcher: 1 when j is settled
 * here (its result in fail_idx/fail_rc), 2 when its leftovers after a
 * worker's death went to the queue, 0 when j should take the queue (no idle
 * worker, another fast job running, too big), -EINVAL when the pool is
 * closed. The caller owns j's dispatcher fields until it is queued.
 */
static int fast_run(struct proc_pool *pool, struct proc_future *j)
{
    size_t n = j->n, nw = (size_t)pool->nworkers;
    size_t parts = nw * POOL_FAST_PARTS, chunk = n / parts + (n % parts != 0);
    size_t nchunks = n / chunk + (n % chunk != 0);
    size_t state_off = POOL_FAST_SLOTS + nw * sizeof(struct pool_fast_slot);
    size_t in_bytes, out_bytes;
    if (pool->fast_off || pool->max_tasks > 0 ||
        nw > POOL_FAST_MAX / sizeof(struct pool_fast_slot) || !mul_ok(n, j->in_size, &in_bytes) ||
        !mul_ok(n, j->out_size, &out_bytes) || in_bytes > POOL_FAST_MAX ||
        out_bytes > POOL_FAST_MAX || in_bytes + out_bytes > POOL_FAST_MAX)
        return 0;
    size_t in_off = align_up(state_off + nchunks, 64);
    size_t out_off = align_up(in_off + in_bytes, 64);
    size_t need = out_off + out_bytes;

    pthread_mutex_lock(&pool->mu);
    if (pool->closed) {
        pthread_mutex_unlock(&pool->mu);
        return -EINVAL;
    }
    if (pool->fast_busy || pool->nlendable == 0) {
        pthread_mutex_unlock(&pool->mu);
        return 0;
    }
    pool->fast_busy = true; /* the region is ours */
    uint64_t gen = pool->offer_gen;
    pthread_mutex_unlock(&pool->mu);

    if (fast_fit(pool, need) < 0) {
        fast_return(pool, j, gen);
        return 0;
    }
    unsigned char *region = pool->fast;
    struct pool_fast *f = (struct pool_fast *)(void *)region;
    uint64_t seq = ++pool->fast_seq;
    f->seq = seq;
    f->n = n;
    f->chunk = chunk;
    f->in_size = j->in_size;
    f->out_size = j->out_size;
    f->state_off = state_off;
    f->in_off = in_off;
    f->out_off = out_off;
    f->fn = j->fn;
    atomic_store_explicit(&f->next, 0, memory_order_relaxed);
    for (size_t i = 0; i < nw; i++) {
        struct pool_fast_slot *sl = pool_fast_slot(region, i);
        atomic_store_explicit(&sl->start, UINT64_MAX, memory_order_relaxed);
        atomic_store_explicit(&sl->busy, 0, memory_order_relaxed);
        atomic_store_explicit(&sl->done, 0, memory_order_relaxed);
        atomic_store_explicit(&sl->fail, 0, memory_order_relaxed);
        atomic_store_explicit(&sl->left, 0, memory_order_relaxed);
    }
    memset(region + state_off, 0, nchunks);
    atomic_store_explicit(&f->copied, 0, memory_order_relaxed);

    /* Borrow the idle workers the dispatcher still offers, one per chunk at
     * most, the one bound to this CPU first (it needs no sleeping CPU woken).
     * From now on a dead one is freed only after fast_forget() took it out of
     * pool->lent under the lock, so the messages are sent under the lock. */
    int here = sched_getcpu();
    pthread_mutex_lock(&pool->mu);
    size_t nslots = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < pool->nlendable && nslots < nchunks;) {
            struct pool_worker *w = pool->lendable[i];
            if ((w->cpu == here && here >= 0) != (pass == 0)) {
                i++;
                continue;
            }
            pool->lendable[i] = pool->lendable[--pool->nlendable];
            pool->lent[nslots] = w;
            pool->sent[nslots] = false;
            pool->slot_cpu[nslots] = w->cpu;
            atomic_store_explicit(&pool->lost[nslots], POOL_LOST_NO, memory_order_relaxed);
            nslots++;
        }
    pool->nlent = nslots;
    pthread_mutex_unlock(&pool->mu);
    if (nslots == 0) {
        fast_return(pool, j, gen); /* the dispatcher took them back meanwhile */
        return 0;
    }

    /* The workers bound to other CPUs start on the first chunks while we copy
     * the rest; the others (ours, unbound) only once everything is in place:
     * woken earlier, they would take our CPU before the copy is done. */
    atomic_store_explicit(&f->active, seq << 32 | nslots, memory_order_release);
    atomic_store_explicit(&f->copy_waiter, 0, memory_order_relaxed);
    size_t nsent = fast_send(pool, seq, nslots, here, true);
    for (size_t k = 0; k < n;) {
        size_t cnt = n - k < chunk * 8 ? n - k : chunk * 8;
        fast_copy_in(j, region + in_off, k, k + cnt);
        k += cnt;
        atomic_store_explicit(&f->copied, k, memory_order_seq_cst);
        atomic_fetch_add_explicit(&f->copied_gen, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&f->copy_waiter, memory_order_seq_cst))
            proc__sys_futex_wake(&f->copied_gen, INT_MAX, true);
    }
    nsent += fast_send(pool, seq, nslots, here, false);
    if (nsent < nslots) /* the dying ones never leave */
        atomic_fetch_sub_explicit(&f->active, nslots - nsent, memory_order_acq_rel);
    if (nsent == 0) {
        fast_return(pool, j, gen); /* every one of them was dying */
        return 0;
    }

    size_t copied = fast_wait(pool, j, nslots, seq);
    fast_settle(pool, j, nslots, copied);
    return fast_return(pool, j, gen);
}

/* ------------------------------------------------------------------- the API */

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
    if (o.workers < 0 || o.max_tasks_per_child < 0) {
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
    pthread_once(&pool_once, pool_register_exit);
    if (o.workers == 0)
        o.workers = proc_cpu_count();

    struct proc_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->fastfd = pool->wakefd = -1;
    int rc = sync_init(&pool->mu, &pool->cv);
    if (rc < 0) {
        free(pool);
        errno = -rc;
        return NULL;
    }
    pool->owner = getpid();
    pool->nworkers = o.workers;
    pool->max_tasks = o.max_tasks_per_child;
    pool->max_init_deaths = o.workers > INT_MAX - 2 ? INT_MAX : o.workers + 2;
    pool->init = o.initializer;
    pool->initarg = o.initarg;
    pthread_sigmask(SIG_SETMASK, NULL, &pool->mask);
    const char *env = getenv("LIBPROC_POOL_FAST");
    pool->fast_off = env && strcmp(env, "0") == 0;
    if ((rc = bind_plan(pool)) < 0)
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
    pool->slot_cpu = calloc(nw, sizeof *pool->slot_cpu);
    if (!pool->lendable || !pool->lent || !pool->lost || !pool->sent || !pool->slot_cpu) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < o.workers; i++)
        if ((rc = spawn_worker(pool)) < 0)
            goto fail;

    if ((rc = proc__thread_start(&pool->thread, dispatcher_main, pool, false, 0)) < 0)
        goto fail;
    return pool;

fail:
    kill_workers(pool, -ECANCELED);
    fast_free(pool);
    free(pool->w);
    if (pool->wakefd >= 0)
        close(pool->wakefd);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
    errno = -rc;
    return NULL;
}

static int pool_enqueue(struct proc_pool *pool, struct proc_future *j)
{
    pthread_mutex_lock(&pool->mu);
    if (pool->closed) {
        pthread_mutex_unlock(&pool->mu);
        return -EINVAL;
    }
    if (pool->in_tail)
        pool->in_tail->inext = j;
    else
        pool->in_head = j;
    pool->in_tail = j;
    bool wake = pool->sleeping;
    pool->sleeping = false;
    pthread_mutex_unlock(&pool->mu);
    if (wake)
        wake_dispatcher(pool);
    return 0;
}

static void job_discard(struct proc_future *j)
{
    job_unref(j);
    job_unref(j);
}

/* Validates, queues and waits for a job of n items; the result. */
static int run_items(proc_pool_t *pool, proc_task_fn *fn, const void *in, size_t in_size, void *out,
                     size_t out_size, size_t n)
{
    int rc = pool_check(pool);
    if (rc < 0)
        return rc;
    size_t total;
    if (!fn || (n && in_size && !in) || (n && out_size && !out) || !mul_ok(n, in_size, &total) ||
        !mul_ok(n, out_size, &total))
        return -EINVAL;
    if (n == 0) {
        pthread_mutex_lock(&pool->mu);
        rc = pool->closed ? -EINVAL : 0;
        pthread_mutex_unlock(&pool->mu);
        return rc;
    }
    struct proc_future *j = job_alloc(0);
    if (!j)
        return -errno;
    j->fn = fn;
    j->in = in;
    j->out = out;
    j->in_size = in_size;
    j->out_size = out_size;
    j->n = j->remaining = n;
    j->chunk = job_chunk(pool, n, in_size, out_size);
    /* a fast job cancelled half-way would hold the pool's workers forever */
    int cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    rc = fast_run(pool, j);
    pthread_setcancelstate(cancel, NULL);
    if (rc < 0 || rc == 1) {
        if (rc == 1)
            rc = j->fail_idx == SIZE_MAX ? 0 : j->fail_rc;
        job_discard(j);
        return rc;
    }
    if (rc == 0 && (rc = pool_enqueue(pool, j)) < 0) {
        job_discard(j);
        return rc;
    }
    pthread_mutex_lock(&j->mu);
    wait_flag(&j->cv, &j->mu, &j->done, PROC_WAIT_FOREVER);
    rc = j->result;
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
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
    size_t in_room = align_up(in_size, 64), extra = 0;
    if (rc == 0 && (in_room < in_size || !add_ok(in_room, out_size, &extra)))
        rc = -ENOMEM;
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    struct proc_future *j = job_alloc(extra);
    if (!j)
        return NULL;
    unsigned char *buf = (unsigned char *)j + align_up(sizeof *j, 64);
    if (in_size)
        memcpy(buf, in, in_size);
    j->future = true;
    j->fn = fn;
    j->in = buf;
    j->out = buf + in_room;
    j->in_size = in_size;
    j->out_size = out_size;
    j->n = j->remaining = 1;
    j->chunk = 1;
    if ((rc = pool_enqueue(pool, j)) < 0) {
        job_discard(j);
        errno = -rc;
        return NULL;
    }
    return j;
}

int proc_future_wait(proc_future_t *f, int timeout_ms)
{
    if (!f || timeout_ms < -1)
        return -EINVAL;
    pthread_mutex_lock(&f->mu);
    int rc = wait_flag(&f->cv, &f->mu, &f->done, timeout_ms);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int proc_future_get(proc_future_t *f, void *out, size_t out_size, int timeout_ms)
{
    if (!f || timeout_ms < -1 || (out_size && !out) || out_size > f->out_size)
        return -EINVAL;
    pthread_mutex_lock(&f->mu);
    int rc = wait_flag(&f->cv, &f->mu, &f->done, timeout_ms);
    if (rc == 0) {
        rc = f->result;
        if (f->ran && out_size)
            memcpy(out, f->out, out_size);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void proc_future_free(proc_future_t *f)
{
    if (f)
        job_unref(f);
}

int proc_pool_close(proc_pool_t *pool)
{
    int rc = pool_check(pool);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&pool->mu);
    bool wake = false;
    if (!pool->closed) {
        pool->closed = true;
        wake = pool->sleeping;
        pool->sleeping = false;
    }
    pthread_mutex_unlock(&pool->mu);
    if (wake)
        wake_dispatcher(pool);
    return 0;
}

int proc_pool_terminate(proc_pool_t *pool)
{
    int rc = pool_check(pool);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&pool->mu);
    bool wake = false;
    if (!pool->terminating && !pool->finished) {
        pool->terminating = pool->closed = true;
        wake = pool->sleeping;
        pool->sleeping = false;
    }
    pthread_mutex_unlock(&pool->mu);
    if (wake)
        wake_dispatcher(pool);
    pthread_mutex_lock(&pool->mu);
    wait_flag(&pool->cv, &pool->mu, &pool->finished, PROC_WAIT_FOREVER);
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
        rc = wait_flag(&pool->cv, &pool->mu, &pool->finished, timeout_ms);
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
    fast_free(pool);
    free(pool->w);
    close(pool->wakefd);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
    return 0;
}
