/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: jobs (every apply, map and submit is one; a future is a
 * submitted job), their reference counts and results, the dispatcher's
 * queue of jobs with items left to hand out, and the inbox through which
 * callers hand jobs to the dispatcher.
 */
#include "pool_job.h"
#include "pool_stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Input plus output bytes per chunk (a single bigger item is one chunk). */
#define POOL_CHUNK_BYTES ((size_t)4 << 20)

/*
 * Waits on cv until *flag is set: 0, or -ETIMEDOUT. timeout_ms as in poll();
 * the deadline is fixed at the start, so wakeups never extend it.
 */
int proc__pool_wait_flag(pthread_cond_t *cv, pthread_mutex_t *mu, const bool *flag, int timeout_ms)
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

int proc__pool_sync_init(pthread_mutex_t *mu, pthread_cond_t *cv)
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

void proc__pool_wake_dispatcher(struct proc_pool *pool)
{
    uint64_t one = 1;
    ssize_t r;
    do {
        r = write(pool->wakefd, &one, sizeof one);
    } while (r < 0 && errno == EINTR);
    /* EAGAIN: the counter is full, so the dispatcher wakes anyway */
}

/* ---------------------------------------------------------------------- jobs */

struct proc__job *proc__job_alloc(size_t extra)
{
    size_t size;
    if (!proc__add_ok(proc__align_up(sizeof(struct proc__job), 64), extra, &size)) {
        errno = ENOMEM;
        return NULL;
    }
    struct proc__job *j = calloc(1, size);
    if (!j)
        return NULL;
    int r = proc__pool_sync_init(&j->mu, &j->cv);
    if (r < 0) {
        free(j);
        errno = -r;
        return NULL;
    }
    atomic_init(&j->refs, 2); /* the caller's and the pool's */
    j->fail_idx = SIZE_MAX;
    return j;
}

void proc__job_unref(struct proc__job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    if (j->stream)
        proc__stream_destroy(j->stream);
    while (j->retry) {
        struct proc__range *r = j->retry;
        j->retry = r->next;
        free(r);
    }
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void proc__job_note_fail(struct proc__job *j, size_t idx, int rc)
{
    if (idx < j->fail_idx) {
        j->fail_idx = idx;
        j->fail_rc = rc;
    }
}

/* The pool's last word on j: j may be freed by the time this returns. */
void proc__job_settle(struct proc__job *j)
{
    int result = j->fail_idx == SIZE_MAX ? 0 : j->fail_rc;
    pthread_mutex_lock(&j->mu);
    j->result = result;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    proc__job_unref(j);
}

/* Items per chunk of j: Python's chunksize (n / (4 * workers), rounded up),
 * capped by POOL_CHUNK_BYTES. */
static size_t job_chunk(const struct proc_pool *pool, const struct proc__job *j)
{
    size_t n = j->n, parts = (size_t)pool->nworkers * 4;
    size_t chunk = n / parts + (n % parts != 0);
    size_t per;
    if (!proc__add_ok(j->in_size, j->out_size, &per) || !proc__add_ok(per, sizeof(int), &per))
        per = SIZE_MAX;
    size_t cap = per >= POOL_CHUNK_BYTES ? 1 : POOL_CHUNK_BYTES / per;
    if (chunk > cap)
        chunk = cap;
    return chunk ? chunk : 1;
}

/* A job joins the queue from the inbox: its chunk size is fixed now (a fast
 * job never needs one). */
void proc__queue_push_back(struct proc_pool *pool, struct proc__job *j)
{
    j->chunk = j->stream ? SIZE_MAX : job_chunk(pool, j); /* a stream sizes its batches */
    pool->nstreams += j->stream != NULL;
    j->qnext = NULL;
    j->qprev = pool->qtail;
    if (pool->qtail)
        pool->qtail->qnext = j;
    else
        pool->qhead = j;
    pool->qtail = j;
    j->queued = true;
}

void proc__queue_push_front(struct proc_pool *pool, struct proc__job *j)
{
    pool->nstreams += j->stream != NULL;
    j->qprev = NULL;
    j->qnext = pool->qhead;
    if (pool->qhead)
        pool->qhead->qprev = j;
    else
        pool->qtail = j;
    pool->qhead = j;
    j->queued = true;
}

void proc__queue_remove(struct proc_pool *pool, struct proc__job *j)
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
    pool->nstreams -= j->stream != NULL;
}

/* Takes up to max items of j not yet handed out; dequeues j when none is left. */
size_t proc__job_carve(struct proc_pool *pool, struct proc__job *j, size_t max, size_t *start)
{
    size_t cnt;
    if (j->retry) {
        struct proc__range *r = j->retry;
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
        proc__queue_remove(pool, j);
    return cnt;
}

/* Fails every item of j (out of the queue now) that was not handed out
 * with err (j may be freed). */
static void job_cancel(struct proc__job *j, int err)
{
    size_t count = 0, first = SIZE_MAX;
    if (j->stream) { /* its workers were killed first: nothing is in flight */
        proc__stream_cancel(j->stream, err);
        proc__job_unref(j); /* the pool's reference */
        return;
    }
    while (j->retry) {
        struct proc__range *r = j->retry;
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
    proc__job_note_fail(j, first, err);
    j->remaining -= count;
    if (j->remaining == 0)
        proc__job_settle(j);
}

/* Appends j to the jobs the dispatcher has not seen yet (pool->mu held). */
void proc__pool_inbox_add_locked(struct proc_pool *pool, struct proc__job *j)
{
    if (pool->in_tail)
        pool->in_tail->inext = j;
    else
        pool->in_head = j;
    pool->in_tail = j;
}

/* Hands j to the dispatcher: 0, or -EINVAL once the pool is closed. */
int proc__pool_enqueue(struct proc_pool *pool, struct proc__job *j)
{
    pthread_mutex_lock(&pool->mu);
    if (pool->closed) {
        pthread_mutex_unlock(&pool->mu);
        return -EINVAL;
    }
    proc__pool_inbox_add_locked(pool, j);
    bool wake = pool->sleeping;
    pool->sleeping = false;
    pthread_mutex_unlock(&pool->mu);
    if (wake)
        proc__pool_wake_dispatcher(pool);
    return 0;
}

void proc__pool_kick(struct proc_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    pool->kicked = true;
    bool wake = pool->sleeping;
    pool->sleeping = false;
    pthread_mutex_unlock(&pool->mu);
    if (wake)
        proc__pool_wake_dispatcher(pool);
}

void proc__job_discard(struct proc__job *j)
{
    proc__job_unref(j);
    proc__job_unref(j);
}

void proc__queue_cancel_all(struct proc_pool *pool, int err)
{
    /* Out of the queue first, then cancelled: cancelling may free a job. */
    struct proc__job *list = NULL, **tail = &list;
    while (pool->qhead) {
        struct proc__job *j = pool->qhead;
        proc__queue_remove(pool, j);
        *tail = j;
        tail = &j->qnext;
    }
    while (list) {
        struct proc__job *j = list;
        list = j->qnext;
        job_cancel(j, err);
    }
}
