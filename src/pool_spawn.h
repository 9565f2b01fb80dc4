/* SPDX-License-Identifier: MIT */
/* Worker pools: starting a worker (pool_spawn.c). */
#ifndef LIBPROC_POOL_SPAWN_H
#define LIBPROC_POOL_SPAWN_H

#include "pool_types.h"

/* bind_cpus: the CPUs workers are spread over (none bound with fewer than 2): 0 or -ENOMEM. */
int proc__worker_bind_plan(struct proc_pool *pool);
/* Starts one worker and adds it to pool->w: 0 or -errno. */
int proc__worker_spawn(struct proc_pool *pool);

#endif /* LIBPROC_POOL_SPAWN_H */
