/* SPDX-License-Identifier: MIT */
/* Worker pools: the parent's view of its workers (pool_worker.c). */
#ifndef LIBPROC_POOL_WORKER_H
#define LIBPROC_POOL_WORKER_H

#include "pool_types.h"

/* Arena length of a new worker; it grows on demand. */
#define PROC__POOL_ARENA_INIT ((size_t)256 << 10)

/* Frees w: unmaps its buffers, joins and closes its process, closes its fds. */
void proc__worker_free(struct proc__worker *w);
/* Hands items [start, start + cnt) of j to the idle worker w. */
void proc__worker_send_chunk(struct proc_pool *pool, struct proc__worker *w, struct proc__job *j,
                             size_t start, size_t cnt);
/* Hands a batch of stream j's pending items (at most max) to the idle worker w (none: stays idle).
 */
void proc__worker_send_batch(struct proc_pool *pool, struct proc__worker *w, struct proc__job *j,
                             size_t max);
/* Takes the replies w sent (also after its death: they stay queued). */
void proc__worker_read(struct proc_pool *pool, struct proc__worker *w);
/* w's process ended: settles its chunk, reaps it, frees it. */
void proc__worker_exited(struct proc_pool *pool, struct proc__worker *w);
/* task_timeout_ms: kills each worker whose item has run too long (its death
 * fails that item with -ETIMEDOUT); ms until the next look, -1: none needed. */
int proc__workers_watch(struct proc_pool *pool);
/* Kills and reaps every worker; the unfinished items of their chunks fail with err. */
void proc__workers_kill(struct proc_pool *pool, int err);

#endif /* LIBPROC_POOL_WORKER_H */
