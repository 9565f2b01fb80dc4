/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: imap streams (API 4.4).
 *
 * A stream is a job (pool_job.c) with j->stream set: two references (the
 * caller's handle, the pool's), its mutex and condition variable guard and
 * signal everything below. Results live in a ring of POOL_STREAM_WINDOW
 * slots: put blocks while next_index - taken reaches the window, so every
 * item not yet taken has a slot. An ordered stream puts the result of item i
 * in slot i % window; an unordered one appends in finishing order; either
 * way proc_imap_next() takes slot taken % window once it is ready.
 */
#include "pool_job.h"
#include "pool_stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Items per stream queued, running or finished and not yet taken. */
#define POOL_STREAM_WINDOW ((size_t)16384)
/* Bytes of pending inputs plus untaken outputs above which put blocks (one
 * item is always admitted, so a single bigger one still passes). */
#define POOL_STREAM_BYTES ((size_t)256 << 20)
/* About how long a batch should keep a worker busy: long enough that the
 * hand-over (a message each way and the copies, some tens of microseconds)
 * costs a few percent at most, short enough that the workers share the work
 * of a short stream. */
#define POOL_BATCH_NS ((int64_t)1000000)
/* Inputs up to this size are copied into items that are kept for reuse (a
 * stream of tiny items then allocates nothing per item once it runs). */
#define POOL_SMALL_IN ((size_t)64)
/* Outputs below this size share one allocation per batch, copied out again
 * by proc_imap_next() in the caller's thread (one allocation per item, made
 * and freed by the same thread, is cheap); bigger ones are handed over as
 * they were copied out of the worker. */
#define POOL_SMALL_OUT ((size_t)4096)

/* The small outputs of one batch; freed with the last of them taken. */
struct proc__oblock {
    _Atomic size_t refs;
    unsigned char data[];
};

struct proc__sresult {
    bool ready;
    int status;
    size_t index;
    void *data;                 /* a big output, the caller's once taken */
    struct proc__oblock *block; /* or a small one: len bytes at off in block */
    size_t off, len;
};

struct proc_imap {
    struct proc__job *job; /* the job this stream lives in */
    struct proc_pool *pool;
    proc_vtask_fn *fn;
    bool ordered;
    /* under job->mu */
    struct proc__sitem *head, *tail; /* pending: not handed to a worker */
    size_t npending, pending_bytes, out_bytes;
    size_t inflight;             /* items handed to workers, not yet finished */
    size_t out_total, out_items; /* output bytes and items so far: the average sizes batches */
    int64_t item_ns;             /* a whole batch's time per item, averaged; 0: none yet */
    size_t target;               /* items a batch should have (from item_ns), >= 1 */
    size_t next_index;           /* items put */
    size_t taken;                /* results returned; ordered: the next index to return */
    size_t nready;               /* unordered: results in the ring, from slot taken on */
    struct proc__sitem *spare;   /* finished small items, for reuse by put */
    size_t nspare;
    struct proc__sresult ring[POOL_STREAM_WINDOW];
    bool done;   /* proc_imap_done() */
    bool closed; /* no more items: terminated, or the pool closed */
    /* What a put with no time to wait would find, kept under job->mu and
     * read without it: PUT_OPEN, PUT_FULL (the window's count), PUT_SHUT
     * (done or closed). A stream fed as fast as it runs finds it full about
     * every other put: that answer costs no lock. */
    _Atomic int put_state;
    bool freed;    /* proc_imap_free(): results are discarded */
    bool detached; /* the pool let go of the stream (and may be gone): no more kicks */
};

static struct proc_imap *stream_of(struct proc__job *j)
{
    return (struct proc_imap *)(void *)((unsigned char *)j +
                                        proc__align_up(sizeof(struct proc__job), 64));
}

/*
 * Under job->mu: whether the dispatcher should hand out a batch now. Tiny
 * items come one put at a time, and a batch per put would spend the CPUs on
 * hand-overs: so a batch waits until a whole one is pending (target, sized
 * by stream_learn()), unless no more items can come, or nothing of the
 * stream is in flight and the caller has fewer than a batch of results left
 * to take (it would soon wait for them). It depends on the stream's state
 * only, never on whether a caller waits right now: every change that can
 * make it true either happens in the dispatcher, which looks again, or
 * kicks it (put, next).
 */
static bool want_dispatch(const struct proc_imap *m)
{
    if (m->npending == 0)
        return false;
    /* Past the bytes too: an ordered stream's next result is pending (a
     * death put its batch back), or the pool was closed and join waits. */
    if (m->closed || (m->ordered && m->inflight == 0 && m->head->index == m->taken))
        return true;
    if (m->out_bytes >= POOL_STREAM_BYTES)
        return false;
    size_t ready = m->next_index - m->taken - m->npending - m->inflight;
    return m->npending >= m->target || m->done || (m->inflight == 0 && ready < m->target);
}

enum { PUT_OPEN, PUT_FULL, PUT_SHUT };

/* Under job->mu: after anything that changes what a put would find. */
static void put_state_update(struct proc_imap *m)
{
    int st = m->done || m->closed                             ? PUT_SHUT
             : m->next_index - m->taken >= POOL_STREAM_WINDOW ? PUT_FULL
                                                              : PUT_OPEN;
    atomic_store_explicit(&m->put_state, st, memory_order_relaxed);
}

/* Under job->mu: whether one more item fits the window. */
static bool window_open(const struct proc_imap *m, size_t len)
{
    size_t outstanding = m->next_index - m->taken;
    if (outstanding >= POOL_STREAM_WINDOW)
        return false;
    return outstanding == 0 || m->pending_bytes + m->out_bytes + len <= POOL_STREAM_BYTES;
}

static void block_unref(struct proc__oblock *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

/* Lets go of what a result holds. */
static void result_drop(struct proc__sresult *r)
{
    free(r->data);
    block_unref(r->block);
    *r = (struct proc__sresult){0};
}

/* Under job->mu: a result is in (r.ready unset); the stream owns what it holds. */
static void stream_deliver(struct proc_imap *m, struct proc__sresult r)
{
    if (m->freed) {
        result_drop(&r);
        return;
    }
    size_t slot =
        m->ordered ? r.index % POOL_STREAM_WINDOW : (m->taken + m->nready++) % POOL_STREAM_WINDOW;
    r.ready = true;
    m->ring[slot] = r;
    m->out_bytes += r.len; /* the caller broadcasts once for all it delivered */
}

/* Under job->mu: a finished item's memory, kept for reuse when small. */
static void item_done(struct proc_imap *m, struct proc__sitem *it)
{
    if (it->len <= POOL_SMALL_IN && m->nspare < POOL_STREAM_WINDOW) {
        it->next = m->spare;
        m->spare = it;
        m->nspare++;
    } else {
        free(it);
    }
}

/* Under job->mu: an item for in_len <= POOL_SMALL_IN bytes. */
static struct proc__sitem *item_small(struct proc_imap *m)
{
    struct proc__sitem *it = m->spare;
    if (!it)
        return malloc(sizeof *it + POOL_SMALL_IN);
    m->spare = it->next;
    m->nspare--;
    return it;
}

int proc_imap_put(proc_imap_t *m, const void *in, size_t in_len, int timeout_ms)
{
    if (!m || (in_len && !in) || timeout_ms < -1)
        return -EINVAL;
    if (timeout_ms == 0) {
        int st = atomic_load_explicit(&m->put_state, memory_order_relaxed);
        if (st != PUT_OPEN)
            return st == PUT_FULL ? -ETIMEDOUT : -EINVAL;
    }
    struct proc__sitem *it = NULL;
    if (in_len > POOL_SMALL_IN) { /* copied before the lock is taken */
        it = malloc(sizeof *it + in_len);
        if (!it)
            return -ENOMEM;
        memcpy(it->in, in, in_len);
    }
    struct proc__job *j = m->job;
    struct proc__deadline d;
    proc__deadline_init(&d, timeout_ms);
    int rc = 0;
    bool kick = false;
    pthread_mutex_lock(&j->mu);
    while (rc == 0 && !m->done && !m->closed && !window_open(m, in_len))
        rc = proc__cond_wait(&j->cv, &j->mu, &d) == -ETIMEDOUT ? -ETIMEDOUT : 0;
    bool wanted = want_dispatch(m);
    if (m->done || m->closed)
        rc = -EINVAL;
    if (rc == 0 && !it) {
        it = item_small(m);
        if (it && in_len)
            memcpy(it->in, in, in_len);
        rc = it ? 0 : -ENOMEM;
    }
    if (rc == 0) {
        it->len = in_len;
        it->next = NULL;
        it->index = m->next_index++;
        put_state_update(m);
        if (m->tail)
            m->tail->next = it;
        else
            m->head = it;
        m->tail = it;
        m->pending_bytes += in_len;
        m->npending++;
        kick = !wanted && want_dispatch(m); /* else it comes back anyway */
        it = NULL;
    }
    pthread_mutex_unlock(&j->mu);
    free(it);
    if (kick)
        proc__pool_kick(m->pool);
    return rc;
}

int proc_imap_done(proc_imap_t *m)
{
    if (!m)
        return -EINVAL;
    pthread_mutex_lock(&m->job->mu);
    m->done = true;
    put_state_update(m);
    pthread_cond_broadcast(&m->job->cv);
    if (!m->detached)             /* under the lock: the pool may be freed once it let go */
        proc__pool_kick(m->pool); /* what is pending goes, an idle stream leaves the queue */
    pthread_mutex_unlock(&m->job->mu);
    return 0;
}

int proc_imap_next(proc_imap_t *m, proc_result_t *r, int timeout_ms)
{
    if (!m || !r || timeout_ms < -1)
        return -EINVAL;
    struct proc__job *j = m->job;
    struct proc__deadline d;
    proc__deadline_init(&d, timeout_ms);
    int rc = 0;
    struct proc__sresult got = {0};
    bool kick = false;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        bool wanted = want_dispatch(m);
        struct proc__sresult *s = &m->ring[m->taken % POOL_STREAM_WINDOW];
        if (s->ready) {
            got = *s;
            *s = (struct proc__sresult){0};
            m->out_bytes -= got.len;
            m->taken++;
            put_state_update(m);
            if (!m->ordered)
                m->nready--;
            pthread_cond_broadcast(&j->cv);     /* a put may fit now */
            kick = !wanted && want_dispatch(m); /* few results left to take */
            break;
        }
        if ((m->done || m->closed) && m->taken == m->next_index) {
            rc = -ENODATA;
            break;
        }
        if (rc != 0)
            break;
        rc = proc__cond_wait(&j->cv, &j->mu, &d) == -ETIMEDOUT ? -ETIMEDOUT : 0;
    }
    pthread_mutex_unlock(&j->mu);
    if (kick)
        proc__pool_kick(m->pool);
    if (!got.ready)
        return rc;
    *r =
        (proc_result_t){.index = got.index, .status = got.status, .data = got.data, .len = got.len};
    if (got.block) { /* a small output: the caller's own copy */
        r->data = malloc(got.len);
        if (r->data)
            memcpy(r->data, got.block->data + got.off, got.len);
        else
            *r = (proc_result_t){.index = got.index, .status = -ENOMEM};
        block_unref(got.block);
    }
    return 0;
}

proc_imap_t *proc_pool_imap(proc_pool_t *pool, proc_vtask_fn *fn, bool ordered)
{
    if (!pool || !fn) {
        errno = EINVAL;
        return NULL;
    }
    if (pool->owner != getpid()) {
        errno = ECHILD;
        return NULL;
    }
    struct proc__job *j = proc__job_alloc(sizeof(struct proc_imap));
    if (!j)
        return NULL;
    struct proc_imap *m = stream_of(j);
    m->job = j;
    m->pool = pool;
    m->fn = fn;
    m->ordered = ordered;
    m->target = 1;
    j->stream = m;
    j->stream_fn = fn;
    int rc = proc__pool_enqueue(pool, j);
    if (rc < 0) {
        proc__job_discard(j);
        errno = -rc;
        return NULL;
    }
    return m;
}

int proc_imap_free(proc_imap_t *m)
{
    if (!m)
        return 0;
    struct proc__job *j = m->job;
    pthread_mutex_lock(&j->mu);
    m->freed = m->closed = true;
    put_state_update(m);
    while (m->head) {
        struct proc__sitem *it = m->head;
        m->head = it->next;
        free(it);
    }
    m->tail = NULL;
    m->npending = m->pending_bytes = 0;
    for (size_t i = 0; i < POOL_STREAM_WINDOW; i++)
        result_drop(&m->ring[i]);
    /* The dispatcher drops the pool's reference once nothing is in flight
     * (unless it already did: the pool may be gone then). */
    if (!m->detached)
        proc__pool_kick(m->pool);
    pthread_mutex_unlock(&j->mu);
    proc__job_unref(j);
    return 0;
}

/* ------------------------------------------------------- the dispatcher's side */

/* Output bytes per batch that the average item's output may add up to. */
#define POOL_BATCH_OUT ((size_t)4 << 20)

bool proc__stream_has_work(struct proc_imap *m)
{
    pthread_mutex_lock(&m->job->mu);
    bool work = want_dispatch(m);
    pthread_mutex_unlock(&m->job->mu);
    return work;
}

/* Under job->mu: a whole batch of count items took elapsed_ns from its
 * hand-over to its reply. Items of a few microseconds get batches of
 * hundreds or thousands, items of a millisecond or more batches of one. */
static void stream_learn(struct proc_imap *m, size_t count, int64_t elapsed_ns, size_t nworkers)
{
    if (count == 0 || elapsed_ns <= 0)
        return;
    int64_t per = elapsed_ns / (int64_t)count;
    if (per < 1)
        per = 1;
    m->item_ns = m->item_ns ? (3 * m->item_ns + per) / 4 : per;
    size_t cap = POOL_STREAM_WINDOW / (2 * nworkers), t = (size_t)(POOL_BATCH_NS / m->item_ns);
    m->target = t < 1 ? 1 : t > cap ? cap : t;
}

bool proc__stream_over(struct proc_imap *m, bool pool_closed)
{
    pthread_mutex_lock(&m->job->mu);
    if (pool_closed && !m->closed) {
        m->closed = true; /* its puts are refused from now on */
        put_state_update(m);
        pthread_cond_broadcast(&m->job->cv);
    }
    bool over = (m->done || m->closed) && m->npending == 0 && m->inflight == 0;
    pthread_mutex_unlock(&m->job->mu);
    return over;
}

size_t proc__stream_take(struct proc_imap *m, size_t max, size_t max_in_bytes,
                         struct proc__sitem **list, size_t *in_bytes)
{
    pthread_mutex_lock(&m->job->mu);
    /* About a millisecond of work (one item until the first batch says
     * how long items take): the workers share the end of a stream evenly,
     * and results come back at least that often. */
    size_t want = m->target;
    if (m->out_items > 0) {
        size_t avg = m->out_total / m->out_items;
        size_t by_out = avg ? POOL_BATCH_OUT / avg : want;
        if (by_out < want)
            want = by_out;
    }
    if (want > max)
        want = max;
    if (want == 0)
        want = 1;
    size_t count = 0, bytes = 0;
    struct proc__sitem **tail = list;
    while (m->head && count < want && (count == 0 || bytes + m->head->len <= max_in_bytes)) {
        struct proc__sitem *it = m->head;
        m->head = it->next;
        it->next = NULL;
        *tail = it;
        tail = &it->next;
        bytes += it->len;
        count++;
    }
    if (!m->head)
        m->tail = NULL;
    m->npending -= count;
    m->pending_bytes -= bytes;
    m->inflight += count;
    pthread_mutex_unlock(&m->job->mu);
    *in_bytes = bytes;
    return count;
}

/*
 * The results of items [0, done) of a batch, their outputs copied out of the
 * worker's output file (out_len bytes at out): the small ones into one
 * block, the others each into its own allocation. status -EIO for an output
 * outside the file (a worker that went wrong), -ENOMEM when it cannot be
 * copied. Fills res[0, done).
 */
static void copy_outputs(const struct proc__vitem *table, size_t done, const unsigned char *out,
                         size_t out_len, struct proc__sresult *res)
{
    size_t small = 0, nsmall = 0;
    for (size_t i = 0; i < done; i++) {
        uint64_t off = table[i].out_off, len = table[i].out_len;
        res[i] = (struct proc__sresult){.status = (int)table[i].rc};
        if (len == 0)
            continue;
        if (off > out_len || len > out_len - off) {
            res[i].status = -EIO;
            continue;
        }
        /* the place as checked: the table is in memory a worker can write */
        res[i].off = (size_t)off;
        res[i].len = (size_t)len;
        if (len < POOL_SMALL_OUT) {
            small += (size_t)len;
            nsmall++;
        }
    }
    struct proc__oblock *b = nsmall ? malloc(sizeof *b + small) : NULL;
    if (b)
        atomic_init(&b->refs, nsmall);
    size_t boff = 0;
    for (size_t i = 0; i < done; i++) {
        size_t len = res[i].len;
        const unsigned char *from = out + res[i].off;
        if (len == 0)
            continue;
        if (len < POOL_SMALL_OUT && b) {
            res[i].block = b;
            res[i].off = boff;
            memcpy(b->data + boff, from, len);
            boff += len;
            continue;
        }
        res[i].off = 0;
        res[i].data = len < POOL_SMALL_OUT ? NULL : malloc(len);
        if (res[i].data)
            memcpy(res[i].data, from, len);
        else
            res[i] = (struct proc__sresult){.status = -ENOMEM};
    }
}

void proc__stream_finish(struct proc_imap *m, struct proc__sitem *list, size_t count,
                         const struct proc__vitem *table, const unsigned char *out, size_t out_len,
                         size_t done, int blame, int rest_err, int64_t elapsed_ns, size_t nworkers)
{
    if (done > count)
        done = count;
    struct proc__sresult *res = done ? malloc(done * sizeof *res) : NULL;
    if (res)
        copy_outputs(table, done, out, out_len, res);
    struct proc__sitem *back = NULL, **back_tail = &back;
    size_t nback = 0, back_bytes = 0, out_sum = 0;
    pthread_mutex_lock(&m->job->mu);
    for (size_t i = 0; i < count && list; i++) {
        struct proc__sitem *it = list;
        list = it->next;
        if (i < done) {
            struct proc__sresult r = res ? res[i] : (struct proc__sresult){.status = -ENOMEM};
            r.index = it->index;
            out_sum += r.len;
            stream_deliver(m, r);
        } else if ((i == done && blame) || rest_err || m->freed) {
            if (!m->freed)
                stream_deliver(
                    m, (struct proc__sresult){.index = it->index,
                                              .status = i == done && blame ? blame : rest_err});
        } else {
            it->next = NULL; /* back to the front of the pending items, in order */
            *back_tail = it;
            back_tail = &it->next;
            nback++;
            back_bytes += it->len;
            continue;
        }
        item_done(m, it);
    }
    if (back) {
        *back_tail = m->head;
        if (!m->head)
            m->tail = (struct proc__sitem *)((unsigned char *)back_tail -
                                             offsetof(struct proc__sitem, next));
        m->head = back;
        m->npending += nback;
        m->pending_bytes += back_bytes;
    }
    m->inflight -= count;
    m->out_total += out_sum;
    m->out_items += done;
    if (done == count)
        stream_learn(m, count, elapsed_ns, nworkers);
    pthread_cond_broadcast(&m->job->cv);
    pthread_mutex_unlock(&m->job->mu);
    free(res);
}

void proc__stream_detach(struct proc_imap *m)
{
    pthread_mutex_lock(&m->job->mu);
    m->detached = true;
    pthread_mutex_unlock(&m->job->mu);
}

void proc__stream_cancel(struct proc_imap *m, int err)
{
    pthread_mutex_lock(&m->job->mu);
    m->closed = true;
    m->detached = true; /* the caller drops the pool's reference next */
    put_state_update(m);
    while (m->head) {
        struct proc__sitem *it = m->head;
        m->head = it->next;
        stream_deliver(m, (struct proc__sresult){.index = it->index, .status = err});
        free(it);
    }
    m->tail = NULL;
    m->npending = m->pending_bytes = 0;
    pthread_cond_broadcast(&m->job->cv);
    pthread_mutex_unlock(&m->job->mu);
}

void proc__stream_destroy(struct proc_imap *m)
{
    while (m->spare) {
        struct proc__sitem *it = m->spare;
        m->spare = it->next;
        free(it);
    }
}
