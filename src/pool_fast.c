/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: fast jobs (see pool_proto.h for the region's layout). The
 * dispatcher offers its idle workers before it sleeps; a caller of apply or
 * map borrows them, copies the inputs into the pool's fast region, wakes
 * them and waits on a futex in the region; the workers claim chunks from a
 * shared counter. The dispatcher never hands a chunk to a borrowed worker,
 * and frees a worker only after proc__fast_forget() has told the job that
 * borrowed it.
 */
#include "pool_fast.h"
#include "pool_job.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* Fast jobs: at most this many bytes of region (bigger jobs take the queue),
 * chunks per worker (small enough that a late worker still gets its share),
 * and how often a waiting caller looks again without a wakeup (a bound on a
 * lost wakeup, not a clock). */
#define POOL_FAST_MAX ((size_t)4 << 20)
#define POOL_FAST_PARTS 16
#define POOL_FAST_TICK_NS 100000000L

/* Takes back the workers offered to fast jobs; marks those a caller has. */
void proc__fast_reclaim(struct proc_pool *pool)
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
void proc__fast_offer_locked(struct proc_pool *pool)
{
    if (pool->fast_busy)
        return; /* its owner puts back what it borrowed (fast_return) */
    pool->nlendable = 0;
    pool->offer_gen++;
    if (pool->qhead || pool->max_tasks > 0 || pool->max_rss > 0 || pool->closed)
        return;
    size_t n = 0;
    for (size_t i = 0; i < pool->nw; i++) {
        struct proc__worker *w = pool->w[i];
        if (w->leaving || w->told)
            continue; /* on its way out: a replacement comes */
        if (w->state != PROC__W_IDLE || w->eof || n == (size_t)pool->nworkers)
            return;
        pool->lendable[n++] = w;
    }
    pool->nlendable = n;
}

static void fast_ring(struct proc_pool *pool)
{
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)pool->fast;
    atomic_fetch_add_explicit(&f->ring, 1, memory_order_release);
    proc__sys_futex_wake(&f->ring, INT_MAX, true);
}

/* w is about to be freed: no caller may take it, and a fast job that has it
 * hears that it is gone and why (its caller then reads its slot). */
void proc__fast_forget(struct proc_pool *pool, const struct proc__worker *w, int why)
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

/* ---------------------------------------------------------------- fast jobs */

void proc__fast_free(struct proc_pool *pool)
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
    free(pool->fast_watch);
}

/* Makes the fast region at least need bytes long (it never shrinks). */
static int fast_fit(struct proc_pool *pool, size_t need)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t size = proc__align_up(need, pg);
    if (size <= pool->fast_size)
        return 0;
    if (ftruncate(pool->fastfd, (off_t)size) < 0)
        return -errno;
    void *a =
        proc__map_grow(pool->fast, pool->fast_size, size, pool->fastfd, PROT_READ | PROT_WRITE);
    if (a == MAP_FAILED)
        return -errno;
    pool->fast = a;
    pool->fast_size = size;
    proc__dontfork(a, size);
    return 0;
}

/*
 * Gives the borrowed workers back: offered again at once, unless the
 * dispatcher wanted them meanwhile. If j still has retry ranges it goes to
 * the queue (2 returned), or they fail when the pool is terminating (1).
 */
static int fast_return(struct proc_pool *pool, struct proc__job *j, uint64_t gen)
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
                struct proc__range *r = j->retry;
                j->retry = r->next;
                proc__job_note_fail(j, r->start, -ECANCELED);
                j->remaining -= r->count;
                free(r);
            }
        } else {
            j->next = j->n; /* only the retry ranges are left */
            rc = 2;
            /* accepted before any close: it runs even if the pool closed since */
            proc__pool_inbox_add_locked(pool, j);
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
        proc__pool_wake_dispatcher(pool);
    return rc;
}

/* Items [start, start + count) of j go to the queue (fail with -ENOMEM if
 * even that cannot be); the number settled. */
static size_t fast_rest(struct proc__job *j, size_t start, size_t count)
{
    if (count == 0)
        return 0;
    struct proc__range *r = malloc(sizeof *r);
    if (r) {
        *r = (struct proc__range){.next = j->retry, .start = start, .count = count};
        j->retry = r;
        return 0;
    }
    proc__job_note_fail(j, start, -ENOMEM);
    return count;
}

static void fast_copy_out(const struct proc__job *j, const unsigned char *out, size_t start,
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
static void fast_settle(struct proc_pool *pool, struct proc__job *j, size_t nslots)
{
    unsigned char *region = pool->fast;
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)region;
    _Atomic unsigned char *state = (_Atomic unsigned char *)(region + f->state_off);
    const unsigned char *out = region + f->out_off;
    size_t n = j->n, chunk = (size_t)f->chunk, nchunks = (n + chunk - 1) / chunk;

    for (size_t i = 0; i < nslots; i++) {
        struct proc__fast_slot *s = &f->slot[i];
        uint64_t fail = atomic_load_explicit(&s->fail, memory_order_acquire);
        if (fail && fail <= n)
            proc__job_note_fail(j, (size_t)fail - 1, (int)s->fail_rc);
    }
    size_t settled = 0, run = 0; /* [run, k): finished, not yet copied */
    for (size_t c = 0; c < nchunks; c++) {
        size_t k = c * chunk, cnt = n - k < chunk ? n - k : chunk;
        if (atomic_load_explicit(&state[c], memory_order_acquire) == 1) {
            settled += cnt;
            continue;
        }
        fast_copy_out(j, out, run, k);
        run = k + cnt;
        size_t done = 0;
        int blame = 0; /* the item running when its worker crashed fails */
        for (size_t i = 0; i < nslots; i++) {
            struct proc__fast_slot *s = &f->slot[i];
            int why = atomic_load_explicit(&pool->lost[i], memory_order_acquire);
            if (why == PROC__LOST_NO || atomic_load_explicit(&s->start, memory_order_acquire) != k)
                continue;
            uint64_t d = atomic_load_explicit(&s->done, memory_order_acquire);
            uint64_t b = atomic_load_explicit(&s->busy, memory_order_acquire);
            const struct proc__watch *wt = &pool->fast_watch[i];
            done = d < cnt ? (size_t)d : cnt;
            blame = b > d && why == PROC__LOST_CRASH ? -ECHILD : 0;
            /* killed for an overdue item: only that one fails, if it had not returned */
            if (wt->overdue)
                blame = blame && wt->chunk == k && d < wt->overdue ? -ETIMEDOUT : 0;
            break;
        }
        fast_copy_out(j, out, k, k + done);
        settled += done;
        if (blame && done < cnt) {
            proc__job_note_fail(j, k + done, blame);
            settled++;
            done++;
        }
        settled += fast_rest(j, k + done, cnt - done);
    }
    fast_copy_out(j, out, run, n);
    j->remaining -= settled;
}

static void fast_copy_in(const struct proc__job *j, unsigned char *in, size_t start, size_t end)
{
    if (j->in_size && end > start)
        memcpy(in + start * j->in_size, j->in + start * j->in_size, (end - start) * j->in_size);
}

/* Sends the job to the borrowed workers bound to another CPU than here
 * (remote) or to the others; how many got it. */
static size_t fast_send(struct proc_pool *pool, uint64_t seq, size_t nslots, int here, bool remote)
{
    struct proc__msg_fast m = {.type = PROC__MSG_FAST, .seq = seq, .region_size = pool->fast_size};
    size_t nsent = 0;
    pthread_mutex_lock(&pool->mu);
    for (size_t i = 0; i < nslots; i++) {
        struct proc__worker *w = pool->lent[i];
        if (!w || (here >= 0 && w->cpu >= 0 && w->cpu != here) != remote)
            continue;
        m.slot = i;
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
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)pool->fast;
    return pool->sent[i] && atomic_load_explicit(&f->slot[i].left, memory_order_acquire) != seq &&
           atomic_load_explicit(&pool->lost[i], memory_order_acquire) == PROC__LOST_NO;
}

/*
 * What fast slot s runs: chunk start, item busy - 1 (none: busy <= done).
 * A worker moving to its next chunk zeroes busy, then done (release), then
 * publishes start: done read before busy is never from a later chunk than
 * busy, and a start that did not change around the reads names the chunk of
 * both.
 */
static void slot_look(struct proc__fast_slot *s, uint64_t *start, uint64_t *busy, uint64_t *done)
{
    *start = atomic_load_explicit(&s->start, memory_order_acquire);
    *done = atomic_load_explicit(&s->done, memory_order_acquire);
    *busy = atomic_load_explicit(&s->busy, memory_order_acquire);
    if (*start == UINT64_MAX || atomic_load_explicit(&s->start, memory_order_acquire) != *start)
        *busy = *done = 0; /* no item, or between chunks */
}

/*
 * task_timeout_ms: looks at the item each borrowed worker runs and kills the
 * worker whose item is overdue (fast_settle() fails that item). When to look
 * again, in CLOCK_MONOTONIC ns; INT64_MAX: no need.
 */
static int64_t fast_watch(struct proc_pool *pool, size_t nslots, uint64_t seq)
{
    int64_t next = INT64_MAX;
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)pool->fast;
    int64_t timeout_ns = (int64_t)pool->task_timeout_ms * 1000000;
    for (size_t i = 0; i < nslots; i++) {
        struct proc__fast_slot *s = &f->slot[i];
        struct proc__watch *wt = &pool->fast_watch[i];
        if (wt->overdue || !fast_in_job(pool, i, seq))
            continue;
        uint64_t start, busy, done;
        slot_look(s, &start, &busy, &done);
        if (proc__watch_overdue(wt, start, busy, done, proc__now_ns(), timeout_ns, &next)) {
            slot_look(s, &start, &busy, &done);
            if (!proc__watch_still(wt, start, busy, done))
                continue; /* it returned meanwhile: the next look starts afresh */
            proc__watch_delay(pool);
            pthread_mutex_lock(&pool->mu); /* lent[i] is freed only after it is cleared */
            if (pool->lent[i] && proc_kill(pool->lent[i]->proc) == 0)
                wt->overdue = busy;
            pthread_mutex_unlock(&pool->mu);
        }
    }
    return next;
}

/* Waits until every worker that got job seq has left it or died. */
static void fast_wait(struct proc_pool *pool, struct proc__job *j, size_t nslots, uint64_t seq)
{
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)pool->fast;
    bool stopped = false;
    for (;;) {
        uint32_t ring = atomic_load_explicit(&f->ring, memory_order_seq_cst);
        bool all = true;
        for (size_t i = 0; i < nslots; i++) {
            if (fast_in_job(pool, i, seq))
                all = false;
            if (!stopped &&
                atomic_load_explicit(&pool->lost[i], memory_order_acquire) != PROC__LOST_NO) {
                /* A worker died: nobody claims more. The chunks left take the
                 * queue, where its replacement helps with them. */
                atomic_store_explicit(&f->next, j->n, memory_order_relaxed);
                stopped = true;
            }
        }
        if (all) {
            atomic_store_explicit(&f->waiting, 0, memory_order_relaxed);
            return;
        }
        /* Leaving workers wake us only while this is set; one that left
         * after ring was read above makes the wait return at once. */
        atomic_store_explicit(&f->waiting, 1, memory_order_seq_cst);
        long long wait = POOL_FAST_TICK_NS;
        if (pool->task_timeout_ms > 0) { /* no clock read without a timeout */
            int64_t look = fast_watch(pool, nslots, seq) - proc__now_ns();
            if (look < wait)
                wait = look > 0 ? look : 1;
        }
        struct timespec tick;
        proc__mono_after(&tick, wait);
        proc__sys_futex_wait(&f->ring, ring, &tick, true);
    }
}

/* Where the parts of a fast job go in the region. */
struct fast_layout {
    size_t chunk, nchunks, state_off, in_off, out_off, need;
};

/* false when j is too big for a fast job (or fast jobs are off). Its byte
 * counts n * in_size and n * out_size do not overflow: run_items checked them. */
static bool fast_plan(const struct proc_pool *pool, const struct proc__job *j,
                      struct fast_layout *l)
{
    size_t n = j->n, nw = (size_t)pool->nworkers;
    size_t parts = nw * POOL_FAST_PARTS, in_bytes = n * j->in_size, out_bytes = n * j->out_size;
    l->chunk = n / parts + (n % parts != 0);
    l->nchunks = n / l->chunk + (n % l->chunk != 0);
    l->state_off = PROC__FAST_SLOTS + nw * sizeof(struct proc__fast_slot);
    if (pool->fast_off || pool->max_tasks > 0 || pool->max_rss > 0 ||
        nw > POOL_FAST_MAX / sizeof(struct proc__fast_slot) || in_bytes > POOL_FAST_MAX ||
        out_bytes > POOL_FAST_MAX || in_bytes + out_bytes > POOL_FAST_MAX)
        return false;
    l->in_off = proc__align_up(l->state_off + l->nchunks, 64);
    l->out_off = proc__align_up(l->in_off + in_bytes, 64);
    l->need = l->out_off + out_bytes;
    return true;
}

/* Writes the job's header into the region and clears every slot; its seq. */
static uint64_t fast_publish(struct proc_pool *pool, const struct proc__job *j,
                             const struct fast_layout *l)
{
    unsigned char *region = pool->fast;
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)region;
    uint64_t seq = ++pool->fast_seq;
    f->seq = seq;
    f->n = j->n;
    f->chunk = l->chunk;
    f->in_size = j->in_size;
    f->out_size = j->out_size;
    f->state_off = l->state_off;
    f->in_off = l->in_off;
    f->out_off = l->out_off;
    f->fn = j->fn;
    atomic_store_explicit(&f->next, 0, memory_order_relaxed);
    for (size_t i = 0; i < (size_t)pool->nworkers; i++) {
        struct proc__fast_slot *sl = &f->slot[i];
        atomic_store_explicit(&sl->start, UINT64_MAX, memory_order_relaxed);
        atomic_store_explicit(&sl->busy, 0, memory_order_relaxed);
        atomic_store_explicit(&sl->done, 0, memory_order_relaxed);
        atomic_store_explicit(&sl->fail, 0, memory_order_relaxed);
        atomic_store_explicit(&sl->left, 0, memory_order_relaxed);
    }
    memset(region + l->state_off, 0, l->nchunks);
    atomic_store_explicit(&f->copied, 0, memory_order_relaxed);
    return seq;
}

/*
 * Borrows the idle workers the dispatcher still offers, one per chunk at
 * most, the one bound to CPU here first (it needs no sleeping CPU woken);
 * how many. From now on a dead one is freed only after proc__fast_forget()
 * took it out of pool->lent under the lock, so the messages are sent under
 * the lock.
 */
static size_t fast_borrow(struct proc_pool *pool, size_t nchunks, int here)
{
    pthread_mutex_lock(&pool->mu);
    size_t nslots = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < pool->nlendable && nslots < nchunks;) {
            struct proc__worker *w = pool->lendable[i];
            if ((w->cpu == here && here >= 0) != (pass == 0)) {
                i++;
                continue;
            }
            pool->lendable[i] = pool->lendable[--pool->nlendable];
            pool->lent[nslots] = w;
            pool->sent[nslots] = false;
            pool->fast_watch[nslots] = (struct proc__watch){0};
            atomic_store_explicit(&pool->lost[nslots], PROC__LOST_NO, memory_order_relaxed);
            nslots++;
        }
    pool->nlent = nslots;
    pthread_mutex_unlock(&pool->mu);
    return nslots;
}

/*
 * The workers bound to other CPUs start on the first chunks while the inputs
 * are copied in; the others (ours, unbound) only once everything is in
 * place: woken earlier, they would take our CPU before the copy is done.
 * How many workers got the job.
 */
static size_t fast_start(struct proc_pool *pool, const struct proc__job *j,
                         const struct fast_layout *l, uint64_t seq, size_t nslots, int here)
{
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)pool->fast;
    atomic_store_explicit(&f->active, seq << 32 | nslots, memory_order_release);
    atomic_store_explicit(&f->copy_waiter, 0, memory_order_relaxed);
    size_t nsent = fast_send(pool, seq, nslots, here, true);
    for (size_t k = 0; k < j->n;) {
        size_t cnt = j->n - k < l->chunk * 8 ? j->n - k : l->chunk * 8;
        fast_copy_in(j, pool->fast + l->in_off, k, k + cnt);
        k += cnt;
        atomic_store_explicit(&f->copied, k, memory_order_seq_cst);
        atomic_fetch_add_explicit(&f->copied_gen, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&f->copy_waiter, memory_order_seq_cst))
            proc__sys_futex_wake(&f->copied_gen, INT_MAX, true);
    }
    nsent += fast_send(pool, seq, nslots, here, false);
    if (nsent < nslots) /* the dying ones never leave */
        atomic_fetch_sub_explicit(&f->active, nslots - nsent, memory_order_acq_rel);
    return nsent;
}

/*
 * Runs j on the idle workers without the dispatcher: 1 when j is settled
 * here (its result in fail_idx/fail_rc), 2 when its leftovers after a
 * worker's death went to the queue, 0 when j should take the queue (no idle
 * worker, another fast job running, too big), -EINVAL when the pool is
 * closed. The caller owns j's dispatcher fields until it is queued.
 */
int proc__fast_run(struct proc_pool *pool, struct proc__job *j)
{
    struct fast_layout l;
    if (!fast_plan(pool, j, &l))
        return 0;
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

    /* It runs unless the region cannot grow, the dispatcher took the workers
     * back meanwhile, or every one of them was dying: then j takes the queue. */
    bool ran = false;
    if (fast_fit(pool, l.need) == 0) {
        uint64_t seq = fast_publish(pool, j, &l);
        int here = sched_getcpu();
        size_t nslots = fast_borrow(pool, l.nchunks, here);
        if (nslots > 0 && fast_start(pool, j, &l, seq, nslots, here) > 0) {
            fast_wait(pool, j, nslots, seq);
            fast_settle(pool, j, nslots);
            ran = true;
        }
    }
    int rc = fast_return(pool, j, gen); /* the only way out: the workers go back */
    return ran ? rc : 0;
}
