/* SPDX-License-Identifier: MIT */
/*
 * The queue tests' fixture (tests/support/queue_fixture.c), shared by the
 * test_ipc_queue*.c programs: checksummed messages, a random generator, and
 * a queue with a gate and a report pipe for its children. Include after
 * <cmocka.h>.
 */
#ifndef LIBPROC_QUEUE_FIXTURE_H
#define LIBPROC_QUEUE_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libproc/ipc.h>

#include "testutil.h"

/* A message: who, which, a checksum over all of it, then padding. */
struct qmsg {
    uint32_t src, seq;
    uint64_t sum;
    unsigned char pad[];
};

/* The src of the message that tells a consumer to stop. */
#define STOP_SRC 0xffffffffu

/* Fills a message of len >= sizeof(struct qmsg) bytes, checksum last. */
void qmsg_fill(struct qmsg *m, size_t len, uint32_t src, uint32_t seq);

/* Whether a message of len bytes is whole: long enough, checksum right. */
bool qmsg_ok(const struct qmsg *m, ssize_t len);

/* The next number of the xorshift generator whose state is *s. */
uint32_t qt_rnd(uint64_t *s);

/* A seed for qt_rnd(), different in every process and run (never 0). */
uint64_t qt_seed(void);

/* Whether fd polls readable right now (a queue's proc_queue_fileno); asserts poll works. */
bool qt_readable(int fd);

/* A queue, a gate its children wait on, a pipe they report on, shared
 * memory and an id a test may use. */
struct qctx {
    proc_queue_t *q;
    tu_gate gate;
    int report[2];
    void *shared;
    int id;
};

/* Sets c up around q (which must not be NULL). */
void qctx_init(struct qctx *c, proc_queue_t *q);

/* Frees the queue, the gate and the pipe. */
void qctx_destroy(struct qctx *c);

/* In a child: reports (one byte) that it got where it reports from. */
void qctx_report(struct qctx *c);

/* Waits (bounded by IT_BOUND_MS) for one child's report. */
void qctx_await(struct qctx *c);

/* A child (arg: its struct qctx) that reports, then takes one message
 * (bounded); exit 0 when it got "x", else 2. */
int blocking_get_main(void *arg);

#endif /* LIBPROC_QUEUE_FIXTURE_H */
