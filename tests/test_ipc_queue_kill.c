/* SPDX-License-Identifier: MIT */
/*
 * Queue (src/queue.c) with its users SIGKILLed: killed producers (whole
 * message or nothing), killed consumers (at most the one message they were
 * taking), killed waiters, and a put and a get killed after every one of
 * their instructions, also on a polled queue (proc_queue_fileno's
 * readiness).
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
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"
#include "queue_fixture.h"

/* ------------------------------------------------------------------- kills */

#define KILL_MSG (256 * 1024) /* large: a kill lands inside the copy often */

/* Puts numbered large messages until killed. */
static int endless_producer_main(void *arg)
{
    struct qctx *c = arg;
    unsigned char *buf = malloc(KILL_MSG);
    if (!buf)
        return 1;
    uint64_t s = qt_seed();
    qctx_report(c);
    for (uint32_t seq = 0;; seq++) {
        size_t len = sizeof(struct qmsg) + qt_rnd(&s) % (KILL_MSG - sizeof(struct qmsg));
        qmsg_fill((struct qmsg *)buf, len, (uint32_t)c->id, seq);
        if (proc_queue_put(c->q, buf, len, IT_BOUND_MS) != 0)
            return 2;
    }
}

static void killed_producer_leaves_whole_message_or_nothing(void **state)
{
    (void)state;
    struct qctx c;
    /* Bounded and small: the producer also gets killed while waiting for room. */
    qctx_init(&c, proc_queue_new(8, KILL_MSG));
    unsigned char *buf = malloc(KILL_MSG);
    assert_non_null(buf);
    uint64_t s = qt_seed();
    uint32_t expect_src = 0;
    for (int round = 0; round < (IT_SANITIZED ? 10 : 40); round++) {
        c.id = round;
        proc_t *p = it_start(endless_producer_main, &c);
        qctx_await(&c);
        /* Let it run a random while: drain a random number of messages. */
        uint32_t drain = qt_rnd(&s) % 12, next = 0;
        for (uint32_t i = 0; i < drain; i++) {
            ssize_t r = proc_queue_get(c.q, buf, KILL_MSG, IT_BOUND_MS);
            assert_true(qmsg_ok((struct qmsg *)buf, r));
            assert_int_equal(((struct qmsg *)buf)->src, (uint32_t)round);
            assert_int_equal(((struct qmsg *)buf)->seq, next++);
        }
        it_kill(p);
        /* Whatever it committed is there, whole, in order; nothing else. */
        ssize_t r;
        while ((r = proc_queue_get(c.q, buf, KILL_MSG, 0)) >= 0) {
            if (!qmsg_ok((struct qmsg *)buf, r))
                fail_msg("round %d: a torn message of %zd bytes", round, r);
            assert_int_equal(((struct qmsg *)buf)->src, (uint32_t)round);
            assert_int_equal(((struct qmsg *)buf)->seq, next++);
        }
        assert_int_equal(r, -ETIMEDOUT);
        assert_int_equal(proc_queue_size(c.q), 0);
        expect_src++;
    }
    /* The queue still works normally. */
    assert_int_equal(proc_queue_put(c.q, "ok", 2, 0), 0);
    assert_int_equal(proc_queue_get(c.q, buf, KILL_MSG, 0), 2);
    free(buf);
    qctx_destroy(&c);
}

/* Takes messages until killed, recording each seq after get returned. */
static int recording_consumer_main(void *arg)
{
    struct qctx *c = arg;
    _Atomic unsigned char *seen = c->shared;
    unsigned char *buf = malloc(KILL_MSG);
    if (!buf)
        return 1;
    qctx_report(c);
    for (;;) {
        ssize_t r = proc_queue_get(c->q, buf, KILL_MSG, IT_BOUND_MS);
        if (r < 0 || !qmsg_ok((struct qmsg *)buf, r))
            return 2;
        atomic_fetch_add(&seen[((struct qmsg *)buf)->seq], 1);
    }
}

static void killed_consumer_loses_at_most_one(void **state)
{
    (void)state;
    const uint32_t n = IT_SANITIZED ? 100 : 200;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, KILL_MSG));
    _Atomic unsigned char *seen = proc_shared_alloc(n);
    assert_non_null(seen);
    c.shared = (void *)seen;
    unsigned char *buf = malloc(KILL_MSG);
    assert_non_null(buf);
    uint64_t s = qt_seed();
    int rounds = IT_SANITIZED ? 5 : 20;
    for (int round = 0; round < rounds; round++) {
        memset((void *)seen, 0, n);
        for (uint32_t i = 0; i < n; i++) {
            size_t len = sizeof(struct qmsg) + qt_rnd(&s) % (KILL_MSG - sizeof(struct qmsg));
            qmsg_fill((struct qmsg *)buf, len, 0, i);
            assert_int_equal(proc_queue_put(c.q, buf, len, 0), 0);
        }
        proc_t *p = it_start(recording_consumer_main, &c);
        qctx_await(&c);
        /* Kill it at a random moment while it consumes. */
        (void)proc_join(p, (int)(qt_rnd(&s) % 20));
        it_kill(p);
        ssize_t r;
        while ((r = proc_queue_get(c.q, buf, KILL_MSG, 0)) >= 0) {
            assert_true(qmsg_ok((struct qmsg *)buf, r));
            atomic_fetch_add(&seen[((struct qmsg *)buf)->seq], 1);
        }
        int lost = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (seen[i] > 1)
                fail_msg("round %d: message %u consumed %u times", round, i, seen[i]);
            lost += seen[i] == 0;
        }
        if (lost > 1)
            fail_msg("round %d: a killed consumer lost %d messages", round, lost);
    }
    proc_shared_free((void *)seen);
    free(buf);
    qctx_destroy(&c);
}

/* Reports, then puts one message into a full queue (bounded wait). */
static int blocking_put_main(void *arg)
{
    struct qctx *c = arg;
    qctx_report(c);
    return proc_queue_put(c->q, "x", 1, IT_BOUND_MS) == 0 ? 0 : 2;
}

static void killed_waiters_wedge_nobody(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(1, 8));
    for (int i = 0; i < 3; i++) {
        proc_t *victim = it_start(blocking_get_main, &c);
        qctx_await(&c);
        assert_int_equal(proc_join(victim, 20), -ETIMEDOUT);
        it_kill(victim);
    }
    proc_t *getter = it_start(blocking_get_main, &c);
    qctx_await(&c);
    assert_int_equal(proc_join(getter, 20), -ETIMEDOUT);
    assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0);
    assert_int_equal(it_finish(getter), 0);

    assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0); /* full now */
    for (int i = 0; i < 3; i++) {
        proc_t *victim = it_start(blocking_put_main, &c);
        qctx_await(&c);
        assert_int_equal(proc_join(victim, 20), -ETIMEDOUT);
        it_kill(victim);
    }
    proc_t *putter = it_start(blocking_put_main, &c);
    qctx_await(&c);
    assert_int_equal(proc_join(putter, 20), -ETIMEDOUT);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(it_finish(putter), 0);
    assert_int_equal(proc_queue_size(c.q), 1);
    qctx_destroy(&c);
}

/* ------------------------------------------------- killed at every instruction */

struct sweep {
    proc_queue_t *q;
    unsigned char a[24], b[40], c[32];
    tu_gate gate;
    int report[2];
};

static void sweep_init(struct sweep *w, proc_queue_t *q)
{
    memset(w, 0, sizeof *w);
    w->q = q;
    assert_non_null(q);
    qmsg_fill((struct qmsg *)w->a, sizeof w->a, 1, 1);
    qmsg_fill((struct qmsg *)w->b, sizeof w->b, 2, 2);
    qmsg_fill((struct qmsg *)w->c, sizeof w->c, 3, 3);
    assert_int_equal(tu_gate_init(&w->gate), 0);
    assert_int_equal(tu_pipe(w->report), 0);
    /* Warm up: the traced child must not spend its steps in the dynamic linker. */
    unsigned char buf[64];
    assert_int_equal(proc_queue_put(q, w->a, sizeof w->a, 0), 0);
    assert_int_equal(proc_queue_get(q, buf, sizeof buf, 0), (ssize_t)sizeof w->a);
}

static void sweep_destroy(struct sweep *w)
{
    proc_queue_free(w->q);
    tu_gate_destroy(&w->gate);
    close(w->report[0]);
    close(w->report[1]);
}

/* Which of a, b, c the next message is (1, 2, 3), 0 for none, -1 for anything else. */
static int sweep_next(struct sweep *w, int timeout_ms)
{
    unsigned char buf[64];
    ssize_t r = proc_queue_get(w->q, buf, sizeof buf, timeout_ms);
    if (r == -ETIMEDOUT)
        return 0;
    if (r == sizeof w->a && memcmp(buf, w->a, sizeof w->a) == 0)
        return 1;
    if (r == sizeof w->b && memcmp(buf, w->b, sizeof w->b) == 0)
        return 2;
    if (r == sizeof w->c && memcmp(buf, w->c, sizeof w->c) == 0)
        return 3;
    return -1;
}

static void sweep_put_b(void *arg)
{
    struct sweep *w = arg;
    (void)proc_queue_put(w->q, w->b, sizeof w->b, 0);
}

static void sweep_get(void *arg)
{
    struct sweep *w = arg;
    unsigned char buf[64];
    (void)proc_queue_get(w->q, buf, sizeof buf, 0);
}

/* Reports, then blocks in get: exits with sweep_next()'s code for what it got. */
static int sweep_getter_main(void *arg)
{
    struct sweep *w = arg;
    (void)tu_write_full(w->report[1], "r", 1);
    int what = sweep_next(w, IT_BOUND_MS);
    return what < 0 ? 9 : what;
}

/* Reports, then blocks putting c into a full queue: exit 0 once it is in. */
static int sweep_putter_main(void *arg)
{
    struct sweep *w = arg;
    (void)tu_write_full(w->report[1], "r", 1);
    return proc_queue_put(w->q, w->c, sizeof w->c, IT_BOUND_MS) == 0 ? 0 : 9;
}

/*
 * Starts fn, which reports and then blocks, and returns once it sleeps in
 * system call nr: the operation stepped next then takes the same path at
 * every run, which the instruction counts of a sweep rely on (a getter not
 * yet asleep made a put skip its wake, so that a loaded machine saw it
 * committed after 283 instructions and not after 284).
 */
static proc_t *sweep_blocked_child(struct sweep *w, proc_target_fn *fn, long nr)
{
    proc_t *p = it_start(fn, w);
    char r;
    assert_int_equal(tu_read_full(w->report[0], &r, 1, IT_BOUND_MS), 1);
    int asleep = tu_wait_blocked_in(proc_pid(p), nr, IT_BOUND_MS);
    if (asleep != 0 && asleep != -ETIMEDOUT) /* no /proc/<pid>/syscall here: a grace time */
        asleep = proc_join(p, 20) == -ETIMEDOUT ? 0 : -ECHILD;
    assert_int_equal(asleep, 0);
    return p;
}

/* For it_stepper_count: whether the sweep's queue (arg) holds one message. */
static bool holds_one(void *arg)
{
    return proc_queue_size(((struct sweep *)arg)->q) == 1;
}

/*
 * A put is killed after every n of its instructions (near its commit; at a
 * stride elsewhere) while a getter sleeps on the empty queue: the message is
 * then there whole or not at all, and when it is there the sleeping getter
 * gets it without anybody else touching the queue.
 */
static void put_killed_at_every_instruction(void **state)
{
    (void)state;
    struct sweep w;
    sweep_init(&w, proc_queue_new(4, 64));
    struct it_stepper s = {NULL, sweep_put_b, &w, 0};

    /* Counting pass: how long the put is, and where it becomes visible. */
    proc_t *getter = sweep_blocked_child(&w, sweep_getter_main, SYS_futex);
    if (!it_stepper_start(&s)) {
        it_kill(getter);
        sweep_destroy(&w);
        skip();
    }
    long commit;
    long steps = it_stepper_count(&s, holds_one, &commit);
    assert_int_equal(it_finish(getter), 2);

    long first = -1, points = 0;
    for (long n = 0; n <= steps; n++) {
        if (!it_kill_point(n, steps, commit))
            continue;
        points++;
        getter = sweep_blocked_child(&w, sweep_getter_main, SYS_futex);
        assert_true(it_stepper_start(&s));
        it_stepper_run(&s, n);
        it_stepper_kill(&s);
        bool visible = proc_queue_size(w.q) == 1;
        if (visible) {
            /* Committed: the getter must wake by itself (else it sleeps 30 s). */
            assert_int_equal(it_finish(getter), 2);
            assert_int_equal(sweep_next(&w, 0), 0);
            it_sweep_monotone(n, true, &first);
            continue;
        }
        assert_int_equal(proc_queue_put(w.q, w.c, sizeof w.c, IT_BOUND_MS), 0);
        int got = it_finish(getter);
        int rest = sweep_next(&w, 0);
        if (got == 2) /* b was committed after all (journal rolled forward) */
            assert_int_equal(rest, 3);
        else if (got == 3)
            assert_int_equal(rest, 0);
        else
            fail_msg("killed after %ld instructions: the getter got %d", n, got);
        assert_int_equal(sweep_next(&w, 0), 0);
        it_sweep_monotone(n, got == 2, &first);
    }
    assert_true(first >= 0);
    print_message("      put: %ld instructions, visible at %ld, committed from %ld, %ld kill "
                  "points\n",
                  steps, commit, first, points);
    sweep_destroy(&w);
}

/*
 * A get is killed after every n of its instructions while a putter waits for
 * room in the full queue: the head message is then taken whole or left in
 * place, and once it is taken the putter gets its room by itself.
 */
static void get_killed_at_every_instruction(void **state)
{
    (void)state;
    struct sweep w;
    sweep_init(&w, proc_queue_new(2, 64));
    struct it_stepper s = {NULL, sweep_get, &w, 0};

    assert_int_equal(proc_queue_put(w.q, w.a, sizeof w.a, 0), 0);
    assert_int_equal(proc_queue_put(w.q, w.b, sizeof w.b, 0), 0);
    proc_t *putter = sweep_blocked_child(&w, sweep_putter_main, SYS_futex);
    if (!it_stepper_start(&s)) {
        it_kill(putter);
        sweep_destroy(&w);
        skip();
    }
    long commit;
    long steps = it_stepper_count(&s, holds_one, &commit);
    assert_int_equal(it_finish(putter), 0);
    assert_int_equal(sweep_next(&w, 0), 2);
    assert_int_equal(sweep_next(&w, 0), 3);

    long first = -1, points = 0;
    for (long n = 0; n <= steps; n++) {
        if (!it_kill_point(n, steps, commit))
            continue;
        points++;
        assert_int_equal(proc_queue_put(w.q, w.a, sizeof w.a, 0), 0);
        assert_int_equal(proc_queue_put(w.q, w.b, sizeof w.b, 0), 0);
        putter = sweep_blocked_child(&w, sweep_putter_main, SYS_futex);
        assert_true(it_stepper_start(&s));
        it_stepper_run(&s, n);
        it_stepper_kill(&s);
        bool taken = proc_queue_size(w.q) == 1;
        if (taken) /* the putter must get its room by itself */
            assert_int_equal(it_finish(putter), 0);
        int head = sweep_next(&w, IT_BOUND_MS);
        if (head == 1)
            assert_int_equal(sweep_next(&w, IT_BOUND_MS), 2);
        else if (head != 2)
            fail_msg("killed after %ld instructions: the head is %d", n, head);
        assert_int_equal(sweep_next(&w, IT_BOUND_MS), 3);
        assert_int_equal(sweep_next(&w, 0), 0);
        if (!taken)
            assert_int_equal(it_finish(putter), 0);
        it_sweep_monotone(n, head == 2, &first);
    }
    assert_true(first >= 0);
    print_message("      get: %ld instructions, visible at %ld, committed from %ld, %ld kill "
                  "points\n",
                  steps, commit, first, points);
    sweep_destroy(&w);
}

/* ------------------------------------ killed at every instruction, polled */

/* The polled sweeps' kill points: it_kill_point()'s, and every instruction within
 * SWEEP_EFD_WINDOW of the commit, where the eventfd's system call lies (before the
 * commit of a put, after the commit of a get). */
#define SWEEP_EFD_WINDOW 64
static bool polled_kill_point(long n, long steps, long commit)
{
    if (it_kill_point(n, steps, commit))
        return true;
    return !IT_SANITIZED && n >= commit - SWEEP_EFD_WINDOW && n <= commit + SWEEP_EFD_WINDOW;
}

/* Turns the readiness upkeep on (proc_queue_fileno) and warms up its system
 * calls, as sweep_init() did the rest: the queue's descriptor. */
static int sweep_poll(struct sweep *w)
{
    int fd = proc_queue_fileno(w->q);
    assert_true(fd >= 0);
    unsigned char buf[64];
    assert_int_equal(proc_queue_put(w->q, w->a, sizeof w->a, 0), 0);
    assert_true(qt_readable(fd));
    assert_int_equal(proc_queue_get(w->q, buf, sizeof buf, 0), (ssize_t)sizeof w->a);
    assert_false(qt_readable(fd));
    return fd;
}

/* Reports, then sleeps in ppoll() on the queue's descriptor (bounded): 0 once it is readable. */
static int sweep_poller_main(void *arg)
{
    struct sweep *w = arg;
    struct pollfd p = {proc_queue_fileno(w->q), POLLIN, 0};
    struct timespec bound = {IT_BOUND_MS / 1000, 0};
    (void)tu_write_full(w->report[1], "r", 1);
    int n;
    do {
        n = ppoll(&p, 1, &bound, NULL);
    } while (n < 0 && errno == EINTR);
    return n == 1 && p.revents == POLLIN ? 0 : 9;
}

/*
 * A put on a polled empty queue killed after every n of its instructions
 * while another process sleeps in poll() on the queue's descriptor: once the
 * message is visible the descriptor is readable and the poller wakes, with
 * nobody else touching the queue; before, it may be readable for nothing,
 * but only until the next operation, after which it is exact again.
 */
static void polled_put_killed_at_every_instruction(void **state)
{
    (void)state;
    struct sweep w;
    sweep_init(&w, proc_queue_new(4, 64));
    int fd = sweep_poll(&w);
    struct it_stepper s = {NULL, sweep_put_b, &w, 0};
    if (!it_stepper_start(&s)) {
        sweep_destroy(&w);
        skip();
    }
    long commit;
    long steps = it_stepper_count(&s, holds_one, &commit);
    assert_true(qt_readable(fd));
    assert_int_equal(sweep_next(&w, 0), 2);
    assert_false(qt_readable(fd));

    long first = -1, points = 0;
    for (long n = 0; n <= steps; n++) {
        if (!polled_kill_point(n, steps, commit))
            continue;
        points++;
        proc_t *poller = sweep_blocked_child(&w, sweep_poller_main, SYS_ppoll);
        assert_true(it_stepper_start(&s));
        it_stepper_run(&s, n);
        it_stepper_kill(&s);
        bool visible = proc_queue_size(w.q) == 1;
        if (visible) {
            assert_true(qt_readable(fd));
            assert_int_equal(it_finish(poller), 0);
        }
        int got = sweep_next(&w, 0); /* the next locker: repairs */
        if (got != 2 && (visible || got != 0))
            fail_msg("killed after %ld instructions: got %d", n, got);
        assert_false(qt_readable(fd));
        if (!visible) { /* the poller wakes at the next put, if not before */
            assert_int_equal(proc_queue_put(w.q, w.c, sizeof w.c, 0), 0);
            assert_int_equal(it_finish(poller), 0);
            assert_int_equal(sweep_next(&w, 0), 3);
            assert_false(qt_readable(fd));
        }
        it_sweep_monotone(n, got == 2, &first);
    }
    assert_true(first >= 0);
    print_message("      polled put: %ld instructions, visible at %ld, committed from %ld, %ld "
                  "kill points\n",
                  steps, commit, first, points);
    sweep_destroy(&w);
}

/* For it_stepper_count: whether the sweep's queue (arg) is empty. */
static bool holds_none(void *arg)
{
    return proc_queue_size(((struct sweep *)arg)->q) == 0;
}

/*
 * A get of the only message of a polled queue killed after every n of its
 * instructions: while the message is still there the descriptor is
 * readable, with nobody else touching the queue; once it is taken it may be
 * readable for nothing, but only until the next operation.
 */
static void polled_get_killed_at_every_instruction(void **state)
{
    (void)state;
    struct sweep w;
    sweep_init(&w, proc_queue_new(2, 64));
    int fd = sweep_poll(&w);
    struct it_stepper s = {NULL, sweep_get, &w, 0};
    assert_int_equal(proc_queue_put(w.q, w.a, sizeof w.a, 0), 0);
    if (!it_stepper_start(&s)) {
        sweep_destroy(&w);
        skip();
    }
    long commit;
    long steps = it_stepper_count(&s, holds_none, &commit);
    assert_false(qt_readable(fd));

    long first = -1, points = 0;
    for (long n = 0; n <= steps; n++) {
        if (!polled_kill_point(n, steps, commit))
            continue;
        points++;
        assert_int_equal(proc_queue_put(w.q, w.a, sizeof w.a, 0), 0);
        assert_true(it_stepper_start(&s));
        it_stepper_run(&s, n);
        it_stepper_kill(&s);
        if (proc_queue_size(w.q) == 1) /* not taken, or committed but not yet applied */
            assert_true(qt_readable(fd));
        int head = sweep_next(&w, 0); /* the next locker: repairs */
        if (head != 0 && head != 1)
            fail_msg("killed after %ld instructions: the head is %d", n, head);
        assert_false(qt_readable(fd));
        assert_int_equal(sweep_next(&w, 0), 0);
        it_sweep_monotone(n, head == 0, &first);
    }
    assert_true(first >= 0);
    print_message("      polled get: %ld instructions, visible at %ld, committed from %ld, %ld "
                  "kill points\n",
                  steps, commit, first, points);
    sweep_destroy(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(killed_producer_leaves_whole_message_or_nothing),
        cmocka_unit_test(killed_consumer_loses_at_most_one),
        cmocka_unit_test(killed_waiters_wedge_nobody),
        cmocka_unit_test(put_killed_at_every_instruction),
        cmocka_unit_test(get_killed_at_every_instruction),
        cmocka_unit_test(polled_put_killed_at_every_instruction),
        cmocka_unit_test(polled_get_killed_at_every_instruction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
