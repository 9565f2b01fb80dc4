/* SPDX-License-Identifier: MIT */
/* Worker pools: fast jobs, run by the caller on borrowed idle workers (pool_fast.c). */
#ifndef LIBPROC_POOL_FAST_H
#define LIBPROC_POOL_FAST_H

#include "pool_types.h"

/* The dispatcher takes back the workers it offered; marks those a caller has. */
void proc__fast_reclaim(struct proc_pool *pool);
/* Before the dispatcher sleeps (pool->mu held): offers its workers if all are idle. */
void proc__fast_offer_locked(struct proc_pool *pool);
/* w is about to be freed: nobody may borrow it, and a job that has it learns why. */
void proc__fast_forget(struct proc_pool *pool, const struct proc__worker *w, int why);
/* Frees the fast region and the lending arrays. */
void proc__fast_free(struct proc_pool *pool);
/* Runs j (sizes checked) as a fast job: 1 settled, 2 rest queued, 0 queue it, -EINVAL closed. */
int proc__fast_run(struct proc_pool *pool, struct proc__job *j);

#endif /* LIBPROC_POOL_FAST_H */
