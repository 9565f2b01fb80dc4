/* SPDX-License-Identifier: MIT */
/*
 * Queue / JoinableQueue (src/queue.c), the operations: FIFO order and
 * sizes, -EMSGSIZE both ways, bounded queues blocking and timing out (also
 * under a flood of signals), waking across processes, task_done/join, an
 * unbounded queue growing and giving its memory back, and 16 MiB messages.
 *
 * Children report through exit codes and shared memory
 * (proc_shared_alloc); timeouts only bound hangs. Messages and the queue
 * context: tests/support/queue_fixture.h.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"
#include "queue_fixture.h"

/* ------------------------------------------------------------------- basics */

static void argument_errors(void **state)
{
    (void)state;
    errno = 0;
    assert_null(proc_queue_new(0, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(proc_queue_new(0, SIZE_MAX / 2));
    assert_int_equal(errno, ENOMEM);
    char buf[8];
    assert_int_equal(proc_queue_put(NULL, "x", 1, 0), -EINVAL);
    assert_int_equal(proc_queue_get(NULL, buf, sizeof buf, 0), -EINVAL);
    assert_int_equal(proc_queue_size(NULL), 0);
    assert_int_equal(proc_queue_task_done(NULL), -EINVAL);
    assert_int_equal(proc_queue_join(NULL, 0), -EINVAL);
    assert_int_equal(proc_queue_free(NULL), 0);

    proc_queue_t *q = proc_queue_new(4, 8);
    assert_non_null(q);
    assert_int_equal(proc_queue_put(q, NULL, 1, 0), -EINVAL);
    assert_int_equal(proc_queue_put(q, "x", 1, -2), -EINVAL);
    assert_int_equal(proc_queue_get(q, NULL, 1, 0), -EINVAL);
    assert_int_equal(proc_queue_get(q, buf, sizeof buf, -2), -EINVAL);
    assert_int_equal(proc_queue_join(q, -2), -EINVAL);
    assert_int_equal(proc_queue_put(q, "123456789", 9, 0), -EMSGSIZE);
    assert_int_equal(proc_queue_size(q), 0);
    assert_int_equal(proc_queue_free(q), 0);
}

static void fifo_sizes_and_wraparound(void **state)
{
    (void)state;
    /* A small bounded ring, so that messages wrap around its end often. */
    proc_queue_t *q = proc_queue_new(3, 100);
    assert_non_null(q);
    unsigned char in[100], out[100];
    size_t lens[3];
    uint64_t s = 12345;
    for (int round = 0; round < 2000; round++) {
        int n = 1 + (int)(qt_rnd(&s) % 3);
        for (int i = 0; i < n; i++) {
            lens[i] = qt_rnd(&s) % 101;
            memset(in, round * 3 + i, lens[i]);
            assert_int_equal(proc_queue_put(q, in, lens[i], 0), 0);
            assert_int_equal(proc_queue_size(q), (size_t)i + 1);
        }
        for (int i = 0; i < n; i++) {
            memset(out, 0xee, sizeof out);
            assert_int_equal(proc_queue_get(q, out, sizeof out, 0), (ssize_t)lens[i]);
            memset(in, round * 3 + i, lens[i]);
            assert_memory_equal(out, in, lens[i]);
        }
        assert_int_equal(proc_queue_size(q), 0);
    }
    /* An empty message, and a too small buffer that leaves the head in place. */
    assert_int_equal(proc_queue_put(q, NULL, 0, 0), 0);
    assert_int_equal(proc_queue_put(q, "hello", 5, 0), 0);
    assert_int_equal(proc_queue_get(q, NULL, 0, 0), 0);
    assert_int_equal(proc_queue_get(q, out, 4, 0), -EMSGSIZE);
    assert_int_equal(proc_queue_get(q, NULL, 0, 0), -EMSGSIZE);
    assert_int_equal(proc_queue_size(q), 1);
    assert_int_equal(proc_queue_get(q, out, 5, 0), 5);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(proc_queue_get(q, out, sizeof out, 0), -ETIMEDOUT);
    proc_queue_free(q);
}

/* After the gate opens, takes one message (bounded); exit 0 when it got "x". */
static int get_after_gate_main(void *arg)
{
    struct qctx *c = arg;
    if (tu_gate_wait(&c->gate, IT_BOUND_MS) != 0)
        return 1;
    char buf[8];
    return proc_queue_get(c->q, buf, sizeof buf, IT_BOUND_MS) == 1 && buf[0] == 'x' ? 0 : 2;
}

static void bounded_queue_blocks_when_full(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(2, 16));
    assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0);
    assert_int_equal(proc_queue_put(c.q, "y", 1, 0), 0);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_queue_put(c.q, "z", 1, 0), -ETIMEDOUT);
    assert_true(tu_now_ms() - t0 < 5000);
    t0 = tu_now_ms();
    assert_int_equal(proc_queue_put(c.q, "z", 1, 150), -ETIMEDOUT);
    it_elapsed_ok(t0, 150);

    struct it_flood f;
    it_flood_start(&f);
    t0 = tu_now_ms();
    assert_int_equal(proc_queue_put(c.q, "z", 1, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);
    assert_true(it_signals > 0);

    /* A consumer in another process makes room for the blocked put. */
    proc_t *p = it_start(get_after_gate_main, &c);
    tu_gate_open(&c.gate);
    assert_int_equal(proc_queue_put(c.q, "z", 1, IT_BOUND_MS), 0);
    assert_int_equal(it_finish(p), 0);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(buf[0], 'y');
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(buf[0], 'z');
    qctx_destroy(&c);
}

static int put_x_after_gate_main(void *arg)
{
    struct qctx *c = arg;
    if (tu_gate_wait(&c->gate, IT_BOUND_MS) != 0)
        return 1;
    return proc_queue_put(c->q, "x", 1, IT_BOUND_MS) == 0 ? 0 : 2;
}

static void empty_queue_waits_and_wakes(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, 16));
    char buf[8];
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), -ETIMEDOUT);
    assert_true(tu_now_ms() - t0 < 5000);
    t0 = tu_now_ms();
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 150), -ETIMEDOUT);
    it_elapsed_ok(t0, 150);
    struct it_flood f;
    it_flood_start(&f);
    t0 = tu_now_ms();
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);

    /* The parent blocks; a child puts. */
    proc_t *p = it_start(put_x_after_gate_main, &c);
    tu_gate_open(&c.gate);
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, IT_BOUND_MS), 1);
    assert_int_equal(it_finish(p), 0);

    /* Several children block; the parent puts one message each. */
    proc_t *w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = it_start(blocking_get_main, &c);
        qctx_await(&c);
    }
    assert_int_equal(proc_join(w[0], 20), -ETIMEDOUT);
    for (int i = 0; i < 4; i++)
        assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(it_finish(w[i]), 0);
    assert_int_equal(proc_queue_size(c.q), 0);
    qctx_destroy(&c);
}

static int worker_main(void *arg)
{
    struct qctx *c = arg;
    char buf[8];
    for (int i = 0; i < 3; i++) {
        if (proc_queue_get(c->q, buf, sizeof buf, IT_BOUND_MS) != 1)
            return 1;
        if (proc_queue_task_done(c->q) != 0)
            return 2;
    }
    return 0;
}

static void task_done_and_join(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, 8));
    assert_int_equal(proc_queue_join(c.q, 0), 0); /* nothing put: nothing to wait for */
    assert_int_equal(proc_queue_task_done(c.q), -EINVAL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(proc_queue_put(c.q, "t", 1, 0), 0);
    assert_int_equal(proc_queue_join(c.q, 0), -ETIMEDOUT);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_queue_join(c.q, 120), -ETIMEDOUT);
    it_elapsed_ok(t0, 120);
    proc_t *p = it_start(worker_main, &c);
    assert_int_equal(proc_queue_join(c.q, IT_BOUND_MS), 0);
    assert_int_equal(it_finish(p), 0);
    assert_int_equal(proc_queue_task_done(c.q), -EINVAL); /* more than items */
    assert_int_equal(proc_queue_join(c.q, 0), 0);
    /* Items taken but not done keep join waiting. */
    assert_int_equal(proc_queue_put(c.q, "u", 1, 0), 0);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(proc_queue_join(c.q, 0), -ETIMEDOUT);
    assert_int_equal(proc_queue_task_done(c.q), 0);
    assert_int_equal(proc_queue_join(c.q, 0), 0);
    qctx_destroy(&c);
}

/* Resident shared memory of this process, in KiB (-1 if unknown). */
static long rss_shmem_kib(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "RssShmem: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void unbounded_queue_grows_and_gives_memory_back(void **state)
{
    (void)state;
    const int n = IT_SANITIZED ? 20000 : 100000;
    const size_t len = 1000;
    proc_queue_t *q = proc_queue_new(0, len);
    assert_non_null(q);
    long before = rss_shmem_kib();
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    for (int i = 0; i < n; i++) {
        qmsg_fill((struct qmsg *)buf, len, 1, (uint32_t)i);
        assert_int_equal(proc_queue_put(q, buf, len, 0), 0);
    }
    assert_int_equal(proc_queue_size(q), (size_t)n);
    long full = rss_shmem_kib();
    for (int i = 0; i < n; i++) {
        ssize_t r = proc_queue_get(q, buf, len, 0);
        assert_int_equal(r, (ssize_t)len);
        assert_true(qmsg_ok((struct qmsg *)buf, r));
        assert_int_equal(((struct qmsg *)buf)->seq, (uint32_t)i);
    }
    long after = rss_shmem_kib();
    if (before >= 0 && full >= 0 && after >= 0) {
        /* ~n KiB were resident at the peak; consumed chunks went back. */
        assert_true(full - before > (long)n / 2);
        if (after - before > 8 * 1024)
            fail_msg("RssShmem %ld kB before, %ld full, %ld after draining", before, full, after);
    }
    free(buf);
    proc_queue_free(q);
}

#define HUGE_MSG (16u << 20)

static int huge_producer_main(void *arg)
{
    struct qctx *c = arg;
    unsigned char *buf = malloc(HUGE_MSG);
    if (!buf)
        return 1;
    for (uint32_t i = 0; i < 3; i++) {
        size_t len = HUGE_MSG - i * 1000;
        qmsg_fill((struct qmsg *)buf, len, 2, i);
        if (proc_queue_put(c->q, buf, len, IT_BOUND_MS) != 0)
            return 2;
    }
    free(buf);
    return 0;
}

static void messages_of_16_mib(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(2, HUGE_MSG));
    proc_t *p = it_start(huge_producer_main, &c);
    unsigned char *buf = malloc(HUGE_MSG);
    assert_non_null(buf);
    for (uint32_t i = 0; i < 3; i++) {
        ssize_t r = proc_queue_get(c.q, buf, HUGE_MSG, IT_BOUND_MS);
        assert_int_equal(r, (ssize_t)(HUGE_MSG - i * 1000));
        assert_true(qmsg_ok((struct qmsg *)buf, r));
        assert_int_equal(((struct qmsg *)buf)->seq, i);
    }
    assert_int_equal(it_finish(p), 0);
    free(buf);
    qctx_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(argument_errors),
        cmocka_unit_test(fifo_sizes_and_wraparound),
        cmocka_unit_test(bounded_queue_blocks_when_full),
        cmocka_unit_test(empty_queue_waits_and_wakes),
        cmocka_unit_test(task_done_and_join),
        cmocka_unit_test(unbounded_queue_grows_and_gives_memory_back),
        cmocka_unit_test(messages_of_16_mib),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
