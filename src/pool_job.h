/* SPDX-License-Identifier: MIT */
/* Worker pools: jobs, the dispatcher's queue and the inbox (pool_job.c). */
#ifndef LIBPROC_POOL_JOB_H
#define LIBPROC_POOL_JOB_H

#include "pool_types.h"

/* Waits on cv (mu held) until *flag: 0, or -ETIMEDOUT; timeout_ms as in poll(). */
int proc__pool_wait_flag(pthread_cond_t *cv, pthread_mutex_t *mu, const bool *flag, int timeout_ms);
/* A mutex and a CLOCK_MONOTONIC condition variable: 0 or -errno. */
int proc__pool_sync_init(pthread_mutex_t *mu, pthread_cond_t *cv);
/* Wakes the dispatcher out of poll() (its eventfd). */
void proc__pool_wake_dispatcher(struct proc_pool *pool);
/* A job with two references (the caller's, the pool's) and extra bytes after it; NULL + errno. */
struct proc__job *proc__job_alloc(size_t extra);
/* Drops one reference; the last frees the job. */
void proc__job_unref(struct proc__job *j);
/* Drops both references of a job the pool never saw. */
void proc__job_discard(struct proc__job *j);
/* Records that item idx failed with rc, if it is the first failure so far. */
void proc__job_note_fail(struct proc__job *j, size_t idx, int rc);
/* Publishes the result and wakes the waiters; drops the pool's reference. */
void proc__job_settle(struct proc__job *j);
/* Queues j last (from the inbox; sets j->chunk) / first (items put back after a worker's death). */
void proc__queue_push_back(struct proc_pool *pool, struct proc__job *j);
void proc__queue_push_front(struct proc_pool *pool, struct proc__job *j);
/* Takes up to max items of j not yet handed out (*start the first); dequeues j when none is left.
 */
size_t proc__job_carve(struct proc_pool *pool, struct proc__job *j, size_t max, size_t *start);
/* Takes j off the queue (a stream that is over). */
void proc__queue_remove(struct proc_pool *pool, struct proc__job *j);
/* A stream changed (items after none, done, freed): the dispatcher looks again. */
void proc__pool_kick(struct proc_pool *pool);
/* Fails every item not yet handed out of every queued job with err. */
void proc__queue_cancel_all(struct proc_pool *pool, int err);
/* Appends j to the inbox and wakes the dispatcher: 0, or -EINVAL once the pool is closed. */
int proc__pool_enqueue(struct proc_pool *pool, struct proc__job *j);
/* Appends j to the inbox (pool->mu held). */
void proc__pool_inbox_add_locked(struct proc_pool *pool, struct proc__job *j);

#endif /* LIBPROC_POOL_JOB_H */
