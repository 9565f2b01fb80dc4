/* SPDX-License-Identifier: MIT */
/*
 * The synchronization tests' fixture (tests/support/sync_fixture.c), shared
 * by test_ipc_lock.c and test_ipc_sync.c: what a child shares with the test.
 * Include after <cmocka.h>.
 */
#ifndef LIBPROC_SYNC_FIXTURE_H
#define LIBPROC_SYNC_FIXTURE_H

#include <libproc/ipc.h>

#include "testutil.h"

/* What a child shares with the test: the objects, a gate and a report pipe. */
struct sync_ctx {
    proc_lock_t *lock;
    proc_sem_t *sem;
    proc_event_t *event;
    tu_gate gate;  /* the child holds on until the parent opens it */
    int report[2]; /* the child writes one byte when it is in position */
    _Atomic long *shared;
};

/* Zeroes c and creates its gate and report pipe. */
void sync_ctx_init(struct sync_ctx *c);

/* Frees the gate and the pipe (not the objects). */
void sync_ctx_destroy(struct sync_ctx *c);

/* In a child: reports one byte, what. */
void sync_report(struct sync_ctx *c, char what);

/* Waits (bounded by IT_BOUND_MS) for one report byte from a child and
 * returns it. */
char sync_await(struct sync_ctx *c);

#endif /* LIBPROC_SYNC_FIXTURE_H */
