/* SPDX-License-Identifier: MIT */
/* The queue tests' fixture (queue_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <libproc/ipc.h>

#include "ipc_testutil.h"
#include "queue_fixture.h"

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static uint64_t qmsg_sum(const struct qmsg *m, size_t len)
{
    uint64_t s = mix(((uint64_t)m->src << 32 | m->seq) + len);
    for (size_t i = 0; i + sizeof *m < len; i++)
        s = s * 31 + m->pad[i];
    return s;
}

/* Fills a message of len >= sizeof(struct qmsg) bytes. */
void qmsg_fill(struct qmsg *m, size_t len, uint32_t src, uint32_t seq)
{
    m->src = src;
    m->seq = seq;
    for (size_t i = 0; i + sizeof *m < len; i++)
        m->pad[i] = (unsigned char)(mix(seq + i) >> 7);
    m->sum = qmsg_sum(m, len);
}

bool qmsg_ok(const struct qmsg *m, ssize_t len)
{
    return len >= (ssize_t)sizeof *m && m->sum == qmsg_sum(m, (size_t)len);
}

uint32_t qt_rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 11);
}

uint64_t qt_seed(void)
{
    return mix((uint64_t)getpid() << 32 ^ (uint64_t)tu_now_ms()) | 1;
}

bool qt_readable(int fd)
{
    short rev = 0;
    int n = tu_poll_in(fd, 0, &rev);
    assert_true(n >= 0);
    return n == 1 && (rev & POLLIN);
}

void qctx_init(struct qctx *c, proc_queue_t *q)
{
    memset(c, 0, sizeof *c);
    c->q = q;
    assert_non_null(q);
    assert_int_equal(tu_gate_init(&c->gate), 0);
    assert_int_equal(tu_pipe(c->report), 0);
}

void qctx_destroy(struct qctx *c)
{
    proc_queue_free(c->q);
    tu_gate_destroy(&c->gate);
    close(c->report[0]);
    close(c->report[1]);
}

void qctx_report(struct qctx *c)
{
    (void)tu_write_full(c->report[1], "r", 1);
}

void qctx_await(struct qctx *c)
{
    char what;
    assert_int_equal(tu_read_full(c->report[0], &what, 1, IT_BOUND_MS), 1);
}

int blocking_get_main(void *arg)
{
    struct qctx *c = arg;
    qctx_report(c);
    char buf[8];
    return proc_queue_get(c->q, buf, sizeof buf, IT_BOUND_MS) == 1 && buf[0] == 'x' ? 0 : 2;
}
