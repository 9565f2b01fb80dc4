/* SPDX-License-Identifier: MIT */
/*
 * Worker pools, the parent side: the pool, its jobs and its workers, as the
 * files of the pool share them. Each file's functions are declared in its
 * own header (pool_job.h, pool_fast.h, pool_worker.h, pool_dispatch.h);
 * layers, bottom up: job, fast, worker, dispatch, pool.c (the API). The pool
 * is built on the public API (proc_t for its workers) and the base layer
 * only. Nothing here is exported.
 */
#ifndef LIBPROC_POOL_TYPES_H
#define LIBPROC_POOL_TYPES_H

#include "clock.h"
#include "pool_proto.h"
#include "sys.h"
#include "thread.h"

#include <libproc/pool.h>
#include <libproc/proc.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <time.h>

enum { PROC__LOST_NO, PROC__LOST_CRASH, PROC__LOST_KILLED };

/* Every apply, map and submit is one job; submit hands it out as a proc_future. */
struct proc__job {
    _Atomic int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;                /* under mu; result and outputs are final once set */
    int result;               /* 0, or the value of the first failing item */
    bool ran;                 /* n == 1: the item returned, so its output is valid */
    bool future;              /* in and out point into this allocation */
    struct proc_imap *stream; /* an imap stream (pool_stream.c), in this allocation */
    proc_vtask_fn *stream_fn; /* its task */

    proc_task_fn *fn;
    const unsigned char *in;
    unsigned char *out;
    size_t in_size, out_size, n;

    /* dispatcher only */
    size_t chunk;     /* items per chunk, set as j joins the queue */
    size_t next;      /* first item never handed out */
    size_t remaining; /* items not yet finished or failed */
    size_t fail_idx;  /* first failing item so far, SIZE_MAX if none */
    int fail_rc;
    struct proc__range *retry;
    struct proc__job *qprev, *qnext;
    bool queued;
    struct proc__job *inext; /* the pool's incoming list, under pool->mu */
};

/* What proc_pool_submit hands out: a job the caller holds a reference to. */
struct proc_future {
    struct proc__job job;
};

struct proc__range {
    struct proc__range *next;
    size_t start, count;
};

/*
 * task_timeout_ms without a clock in the worker: whoever waits for a worker
 * (the dispatcher, or a fast job's caller) samples the item it runs (chunk
 * and busy) and notes when it first saw it. Seen running for the timeout, it
 * has run at least that long: never killed early, at most a tick late.
 */
struct proc__watch {
    uint64_t chunk, busy; /* the item last seen running; busy 0: none */
    int64_t since_ns;     /* when it was first seen */
    uint64_t overdue;     /* busy of the item it was killed for; 0: not killed */
};

enum proc__worker_state {
    PROC__W_INIT, /* started, initializer not yet done */
    PROC__W_IDLE,
    PROC__W_BUSY, /* has a chunk */
};

struct proc__worker {
    proc_t *proc;
    int fd;       /* parent's end of the socketpair */
    int memfd;    /* the arena */
    int outfd;    /* the output file of streams' batches (the worker grows it) */
    int sentinel; /* proc_sentinel(proc) */
    unsigned char *arena;
    size_t arena_size;
    enum proc__worker_state state;
    bool leaving; /* spent its max_tasks budget or over max_rss: exits on its own, gets nothing */
    bool told;    /* the parent shut its end: the worker exits */
    bool eof;     /* its socket reached end of file: poll only the sentinel */
    bool lent;    /* lent to a fast job when assign() last looked: gets no chunk */
    int cpu;      /* the CPU it is bound to, -1: none */
    long budget;  /* tasks it may still run; -1 unlimited */
    struct proc__watch watch; /* task_timeout_ms: the item it was last seen running */
    /* the chunk it runs (PROC__W_BUSY) */
    struct proc__job *job;
    struct proc__sitem *batch; /* a stream's chunk: its items */
    int64_t sent_ns;           /* when the batch was handed over */
    unsigned char *out;        /* the parent's mapping of the output file (out_len bytes) */
    size_t out_len, out_size;  /* mapped; the file's length as the parent left it */
    size_t start, count;
    uint64_t seq;
    size_t rc_off, out_off;
};

struct proc_pool {
    pid_t owner;
    int nworkers;
    int max_tasks;
    size_t max_rss;      /* max_memory_per_child; 0: none */
    bool use_forkserver; /* workers start through the fork server */
    int task_timeout_ms; /* 0: none */
    int max_init_deaths;
    void (*init)(void *arg);
    void *initarg;
    sigset_t mask;
    int wakefd;
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t cv;                   /* broadcast when finished is set */
    struct proc__job *in_head, *in_tail; /* submitted, not yet seen by the dispatcher */
    bool closed;                         /* close or terminate was called */
    bool terminating;                    /* terminate was called */
    bool finished;                       /* every worker is gone, the dispatcher is done */
    bool sleeping;                       /* the dispatcher is (about to be) in poll() */
    bool kicked; /* a stream has new items, was done or freed: the dispatcher looks again */
    /* fast jobs: idle workers the dispatcher offers, those a caller took
     * (index = slot; NULL once dead), and lost[slot] set when one died:
     * PROC__LOST_CRASH, or PROC__LOST_KILLED when terminate killed it */
    bool fast_busy;     /* a caller runs a fast job: it owns the region */
    bool fast_returned; /* a fast job gave its workers back: look at the queue again */
    bool fast_skipped;  /* assign() passed over lent workers */
    struct proc__worker **lendable, **lent;
    size_t nlendable, nlent; /* at most nworkers each */
    uint64_t offer_gen;      /* bumped whenever the dispatcher redoes or takes back the offer */
    _Atomic int *lost;
    struct proc__watch *fast_watch; /* the fast job's owner only: slot i's item (task_timeout_ms) */
    bool *sent;                     /* the fast job's owner only: slot i got its message */
    bool fast_off;                  /* LIBPROC_POOL_FAST=0: every job takes the queue */
    int kill_delay_ms; /* LIBPROC_POOL_KILL_DELAY_MS: between an overrun seen and its SIGKILL */
    int fastfd;
    unsigned char *fast; /* the region's mapping; written by the owner, before lending */
    size_t fast_size;
    uint64_t fast_seq;

    /* the dispatcher's (and proc_pool_new's, before the thread exists) */
    struct proc__worker **w;
    size_t nw, wcap;
    struct proc__job *qhead, *qtail;
    size_t nstreams; /* queued jobs that are streams: none, nothing walks the queue */
    uint64_t seq;
    int init_deaths; /* workers in a row that died (or failed to fork) before READY */
    int *cpus;       /* the CPUs workers are spread over; ncpus 0: not bound */
    int ncpus;
    int cpu_next; /* where the search for the least used CPU starts */
    bool broken;  /* no more workers are started */
    unsigned long names;
    int64_t spawn_after_ms;
};

/* A watched item is looked at again at least this many times per timeout,
 * so it is killed at most timeout / PROC__WATCH_PARTS late. */
#define PROC__WATCH_PARTS 8

/*
 * One look at a worker that runs item busy - 1 of chunk (busy > done) or
 * none (busy <= done); now must be read after busy and done, so that an item
 * is never credited with time from before it began. True when that item has
 * been seen running for timeout_ns. Lowers *next_ns to when to look again
 * (also when true: a kill that failed is tried again then).
 */
static inline bool proc__watch_overdue(struct proc__watch *wt, uint64_t chunk, uint64_t busy,
                                       uint64_t done, int64_t now, int64_t timeout_ns,
                                       int64_t *next_ns)
{
    int64_t tick = timeout_ns / PROC__WATCH_PARTS, due = now + tick;
    bool overdue = false;
    if (busy <= done) {
        wt->busy = 0; /* between items, or not begun: look again in a tick */
    } else {
        if (wt->busy != busy || wt->chunk != chunk) {
            wt->chunk = chunk;
            wt->busy = busy;
            wt->since_ns = now;
        }
        due = wt->since_ns + timeout_ns;
        overdue = now >= due;
    }
    int64_t at = overdue || due - now > tick ? now + tick : due;
    if (at < *next_ns)
        *next_ns = at;
    return overdue;
}

/*
 * After proc__watch_overdue() said true: whether a second look, taken after
 * the clock was read, still finds the same item running. The watcher may
 * have been descheduled between its first look and the clock (a loaded
 * machine, a stolen CPU): that stale look paired with a late clock would
 * blame an item that had returned long before. Only an item seen running
 * both before since_ns and after now_ns has run a whole timeout.
 */
static inline bool proc__watch_still(const struct proc__watch *wt, uint64_t chunk, uint64_t busy,
                                     uint64_t done)
{
    return busy > done && busy == wt->busy && chunk == wt->chunk;
}

/* Before the SIGKILL of an overrun: the test hook's delay, if any (no lock held). */
static inline void proc__watch_delay(const struct proc_pool *pool)
{
    if (pool->kill_delay_ms > 0) {
        struct timespec d = {pool->kill_delay_ms / 1000, pool->kill_delay_ms % 1000 * 1000000L};
        while (nanosleep(&d, &d) < 0 && errno == EINTR) {
        }
    }
}

/* Milliseconds from now until at_ns (rounded up), for poll(); -1 for INT64_MAX. */
static inline int proc__ms_until(int64_t at_ns, int64_t now)
{
    return at_ns == INT64_MAX ? -1 : proc__poll_ms(at_ns - now);
}

static inline size_t proc__align_up(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

static inline bool proc__add_ok(size_t a, size_t b, size_t *r)
{
    return !__builtin_add_overflow(a, b, r);
}

static inline bool proc__mul_ok(size_t a, size_t b, size_t *r)
{
    return !__builtin_mul_overflow(a, b, r);
}

/* The parent's view of an arena is not copied into processes it forks later
 * (other workers, the host's children): each worker maps its own arena. */
static inline void proc__dontfork(void *addr, size_t len)
{
#ifdef MADV_DONTFORK
    madvise(addr, len, MADV_DONTFORK);
#else
    (void)addr;
    (void)len;
#endif
}

#endif /* LIBPROC_POOL_TYPES_H */
