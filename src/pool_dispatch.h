/* SPDX-License-Identifier: MIT */
/* Worker pools: the dispatcher thread (pool_dispatch.c). */
#ifndef LIBPROC_POOL_DISPATCH_H
#define LIBPROC_POOL_DISPATCH_H

#include "pool_types.h"

/* Once per process, before the first pool: no worker starts once the process exits. */
void proc__dispatch_init(void);
/* The dispatcher's thread function; arg is the pool. */
void *proc__dispatcher_main(void *arg);

#endif /* LIBPROC_POOL_DISPATCH_H */
