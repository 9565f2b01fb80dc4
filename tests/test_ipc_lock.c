/* SPDX-License-Identifier: MIT */
/*
 * Lock across processes (src/sync.c): every row of its contract, owner
 * death (-EOWNERDEAD for a killed holder, also for a waiter blocked at the
 * moment, or killed right after its wake-up), mutual exclusion across
 * processes, release by a non-holder, timeouts measured on the clock and
 * surviving a flood of signals, and an acquire and a release killed after
 * every one of their instructions.
 *
 * Children report through exit codes and pipes; a child that must keep
 * something held blocks reading a gate pipe until the parent opens it.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"
#include "sync_fixture.h"
#include "testcheck.h"

/* ---------------------------------------------------------------------- Lock */

static void lock_basics(void **state)
{
    (void)state;
    proc_lock_t *l = proc_lock_new();
    assert_non_null(l);
    assert_int_equal(proc_lock_acquire(l, 0), 0);
    assert_int_equal(proc_lock_acquire(l, 0), -EDEADLK);
    assert_int_equal(proc_lock_acquire(l, 10), -EDEADLK);
    assert_int_equal(proc_lock_release(l), 0);
    assert_int_equal(proc_lock_release(l), -EPERM); /* nobody holds it */
    assert_int_equal(proc_lock_acquire(l, PROC_WAIT_FOREVER), 0);
    assert_int_equal(proc_lock_release(l), 0);
    assert_int_equal(proc_lock_acquire(l, -2), -EINVAL);
    assert_int_equal(proc_lock_acquire(NULL, 0), -EINVAL);
    assert_int_equal(proc_lock_release(NULL), -EINVAL);
    assert_int_equal(proc_lock_free(NULL), 0);
    assert_int_equal(proc_lock_free(l), 0);
}

/* Takes the lock, reports 'h', holds it until the gate opens, releases. */
static int hold_lock_main(void *arg)
{
    struct sync_ctx *c = arg;
    int r = proc_lock_acquire(c->lock, PROC_WAIT_FOREVER);
    if (r != 0 && r != -EOWNERDEAD)
        return 10;
    sync_report(c, 'h');
    if (tu_gate_wait(&c->gate, -1) != 0)
        return 11;
    return proc_lock_release(c->lock) == 0 ? 0 : 12;
}

/* sync_ctx_init(c) with a new lock in c->lock, asserted. */
static void lock_ctx_init(struct sync_ctx *c)
{
    sync_ctx_init(c);
    c->lock = proc_lock_new();
    assert_non_null(c->lock);
}

/* Starts a child that takes c's lock and holds it (hold_lock_main), and
 * waits until it holds it: the child. */
static proc_t *start_holder(struct sync_ctx *c)
{
    proc_t *p = it_start(hold_lock_main, c);
    assert_int_equal(sync_await(c), 'h');
    return p;
}

static void lock_timeouts_and_foreign_release(void **state)
{
    (void)state;
    struct sync_ctx c;
    lock_ctx_init(&c);
    proc_t *p = start_holder(&c);

    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_lock_acquire(c.lock, 0), -ETIMEDOUT);
    assert_true(tu_now_ms() - t0 < 5000);
    t0 = tu_now_ms();
    assert_int_equal(proc_lock_acquire(c.lock, 150), -ETIMEDOUT);
    it_elapsed_ok(t0, 150);
    assert_int_equal(proc_lock_release(c.lock), -EPERM); /* the child holds it */

    tu_gate_open(&c.gate);
    assert_int_equal(it_finish(p), 0);
    assert_int_equal(proc_lock_acquire(c.lock, IT_BOUND_MS), 0);
    assert_int_equal(proc_lock_release(c.lock), 0);
    proc_lock_free(c.lock);
    sync_ctx_destroy(&c);
}

static void lock_killed_holder_recovered_by_parent(void **state)
{
    (void)state;
    struct sync_ctx c;
    lock_ctx_init(&c);
    proc_t *p = start_holder(&c);
    it_kill(p);

    assert_int_equal(proc_lock_acquire(c.lock, 0), -EOWNERDEAD);
    assert_int_equal(proc_lock_acquire(c.lock, 0), -EDEADLK); /* we hold it now */
    assert_int_equal(proc_lock_release(c.lock), 0);
    /* Recovered for good: plain acquire and release from now on. */
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    assert_int_equal(proc_lock_release(c.lock), 0);

    /* The same with a waiter already blocked when the holder dies. */
    p = it_start(hold_lock_main, &c);
    assert_int_equal(sync_await(&c), 'h');
    it_kill(p);
    assert_int_equal(proc_lock_acquire(c.lock, IT_BOUND_MS), -EOWNERDEAD);
    assert_int_equal(proc_lock_release(c.lock), 0);
    proc_lock_free(c.lock);
    sync_ctx_destroy(&c);
}

/* Reports 'w', then blocks in acquire; exit 42 when it got -EOWNERDEAD. */
static int lock_waiter_main(void *arg)
{
    struct sync_ctx *c = arg;
    sync_report(c, 'w');
    int r = proc_lock_acquire(c->lock, IT_BOUND_MS);
    if (r == -EOWNERDEAD)
        return proc_lock_release(c->lock) == 0 ? 42 : 13;
    return r == 0 ? 1 : 2;
}

static void lock_blocked_waiter_gets_ownerdead(void **state)
{
    (void)state;
    struct sync_ctx c;
    lock_ctx_init(&c);
    for (int round = 0; round < 5; round++) {
        proc_t *holder = start_holder(&c);
        proc_t *waiter = it_start(lock_waiter_main, &c);
        assert_int_equal(sync_await(&c), 'w');
        /* Let the waiter block (it has at most 30 s of timeout). */
        assert_int_equal(proc_join(waiter, 20), -ETIMEDOUT);
        it_kill(holder);
        assert_int_equal(it_finish(waiter), 42);
    }
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    assert_int_equal(proc_lock_release(c.lock), 0);
    proc_lock_free(c.lock);
    sync_ctx_destroy(&c);
}

#define MUTEX_CHILDREN 4

#define MUTEX_ITERS (IT_SANITIZED ? 500 : 3000)

struct mutex_shared {
    long counter; /* plain: only the lock protects it */
    int inside;
    int violations;
};

static int mutex_main(void *arg)
{
    struct sync_ctx *c = arg;
    struct mutex_shared *s = (struct mutex_shared *)c->shared;
    for (int i = 0; i < MUTEX_ITERS; i++) {
        /* No deadline: a lock is not fair, and on a starved machine one child
         * can lose it to the others for longer than any fixed bound while the
         * counter moves; the parent's progress watch bounds a real hang. */
        if (proc_lock_acquire(c->lock, PROC_WAIT_FOREVER) != 0)
            return 20;
        if (s->inside++ != 0)
            s->violations++;
        long v = s->counter;
        sched_yield();
        s->counter = v + 1;
        s->inside--;
        if (proc_lock_release(c->lock) != 0)
            return 21;
    }
    return 0;
}

static void lock_mutual_exclusion(void **state)
{
    (void)state;
    struct sync_ctx c;
    lock_ctx_init(&c);
    struct mutex_shared *s = proc_shared_alloc(sizeof *s);
    assert_non_null(s);
    c.shared = (_Atomic long *)s;
    proc_t *p[MUTEX_CHILDREN];
    for (int i = 0; i < MUTEX_CHILDREN; i++)
        p[i] = it_start_daemon(mutex_main, &c);
    for (int i = 0; i < MUTEX_CHILDREN; i++)
        assert_int_equal(it_finish_progressing(p[i], &s->counter), 0);
    assert_int_equal(s->violations, 0);
    assert_int_equal(s->counter, (long)MUTEX_CHILDREN * MUTEX_ITERS);
    proc_shared_free(s);
    proc_lock_free(c.lock);
    sync_ctx_destroy(&c);
}

static void *release_from_thread(void *arg)
{
    proc_lock_t *l = arg;
    intptr_t bad = 0;
    if (proc_lock_release(l) != -EPERM)
        bad |= 1;
    if (proc_lock_acquire(l, 0) != -ETIMEDOUT)
        bad |= 2;
    if (proc_lock_acquire(l, 30) != -ETIMEDOUT)
        bad |= 4;
    return (void *)bad;
}

static int release_foreign_main(void *arg)
{
    struct sync_ctx *c = arg;
    return proc_lock_release(c->lock) == -EPERM ? 0 : 1;
}

static void lock_release_by_non_holder(void **state)
{
    (void)state;
    struct sync_ctx c;
    lock_ctx_init(&c);
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    pthread_t t;
    void *bad = NULL;
    assert_int_equal(pthread_create(&t, NULL, release_from_thread, c.lock), 0);
    assert_int_equal(pthread_join(t, &bad), 0);
    assert_null(bad);
    assert_int_equal(it_finish(it_start(release_foreign_main, &c)), 0);
    assert_int_equal(proc_lock_release(c.lock), 0); /* still ours */
    proc_lock_free(c.lock);
    sync_ctx_destroy(&c);
}

static void lock_timeout_survives_signals(void **state)
{
    (void)state;
    struct sync_ctx c;
    lock_ctx_init(&c);
    proc_t *p = start_holder(&c);
    struct it_flood f;
    it_flood_start(&f);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_lock_acquire(c.lock, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);
    tu_gate_open(&c.gate);
    assert_int_equal(it_finish(p), 0);
    proc_lock_free(c.lock);
    sync_ctx_destroy(&c);
}

/* ------------------------------------------------- killed at every instruction */

static void op_lock_acquire(void *arg)
{
    (void)proc_lock_acquire(((struct sync_ctx *)arg)->lock, PROC_WAIT_FOREVER);
}

static void op_lock_release(void *arg)
{
    (void)proc_lock_release(((struct sync_ctx *)arg)->lock);
}

/* Kills acquire (or, with pre = acquire, release) after every n instructions:
 * the lock is then free or held by the dead (-EOWNERDEAD), never wedged. */
static void lock_sweep(it_op_fn *pre, it_op_fn *op, const char *what)
{
    struct sync_ctx c;
    lock_ctx_init(&c);
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0); /* warm up the child's PLT */
    assert_int_equal(proc_lock_release(c.lock), 0);
    struct it_stepper s = {pre, op, &c, 0};
    if (!it_stepper_start(&s)) {
        sync_ctx_destroy(&c);
        skip();
    }
    long steps = 0;
    while (it_stepper_step(&s))
        steps++;
    it_stepper_kill(&s);
    int r = proc_lock_acquire(c.lock, IT_BOUND_MS);
    assert_int_equal(r, pre ? 0 : -EOWNERDEAD);
    assert_int_equal(proc_lock_release(c.lock), 0);

    /* Pass 0 at a stride finds where the operation takes effect; pass 1 tries
     * every instruction around there. */
    signed char *done = malloc((size_t)steps + 1);
    assert_non_null(done);
    memset(done, -1, (size_t)steps + 1);
    long first = -1, points = 0;
    for (int pass = 0; pass < 2; pass++) {
        long center = first;
        for (long n = 0; n <= steps; n++) {
            bool stride = it_kill_point(n, steps, -1);
            if (pass == 0 ? !stride : stride || n < center - 24 || n > center + 24)
                continue;
            points++;
            assert_true(it_stepper_start(&s));
            it_stepper_run(&s, n);
            it_stepper_kill(&s);
            r = proc_lock_acquire(c.lock, IT_BOUND_MS);
            if (r != 0 && r != -EOWNERDEAD)
                fail_msg("%s killed after %ld instructions: acquire gives %d", what, n, r);
            done[n] = pre ? r == 0 : r == -EOWNERDEAD;
            if (done[n] && (first < 0 || n < first))
                first = n;
            assert_int_equal(proc_lock_release(c.lock), 0);
        }
        assert_true(first >= 0);
    }
    long seen = -1;
    for (long n = 0; n <= steps; n++)
        if (done[n] >= 0)
            it_sweep_monotone(n, done[n], &seen);
    free(done);
    print_message("      %s: %ld instructions, done from %ld, %ld kill points\n", what, steps,
                  first, points);
    proc_lock_free(c.lock);
    sync_ctx_destroy(&c);
}

/* Reports 'w', takes the lock (bounded) and gives it back: exit 0. */
static int lock_taker_main(void *arg)
{
    struct sync_ctx *c = arg;
    sync_report(c, 'w');
    int r = proc_lock_acquire(c->lock, IT_BOUND_MS);
    if (r != 0 && r != -EOWNERDEAD)
        return 1;
    return proc_lock_release(c->lock) == 0 ? 0 : 2;
}

/*
 * An unlock wakes one sleeping waiter. Here that waiter is killed the moment
 * its futex wait returns, before it can take the lock: the other waiter must
 * still get the free lock promptly, with nobody else touching it. (Linux 5.5+
 * wakes it on the victim's death; libproc's waits also re-check the mutex
 * every 250 ms for older kernels.)
 */
static void lock_waiter_killed_right_after_wakeup(void **state)
{
    (void)state;
    struct sync_ctx c;
    lock_ctx_init(&c);
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    struct it_stepper s = {NULL, op_lock_acquire, &c, 0};
    if (!it_stepper_start(&s)) {
        sync_ctx_destroy(&c);
        skip();
    }
    /* Run the victim up to its futex wait and let it block there. */
    assert_int_equal(ptrace(PTRACE_SETOPTIONS, s.pid, NULL, (void *)PTRACE_O_TRACESYSGOOD), 0);
    int st, calls = 0;
    for (;;) {
        assert_int_equal(ptrace(PTRACE_SYSCALL, s.pid, NULL, NULL), 0);
        st = it_stepper_wait(&s);
        assert_true(WIFSTOPPED(st));
        struct __ptrace_syscall_info info;
        memset(&info, 0, sizeof info);
        assert_true(ptrace(PTRACE_GET_SYSCALL_INFO, s.pid, sizeof info, &info) > 0);
        if (info.op == PTRACE_SYSCALL_INFO_ENTRY && info.entry.nr == SYS_futex)
            break;
        assert_true(++calls < 1000);
    }
    assert_int_equal(ptrace(PTRACE_SYSCALL, s.pid, NULL, NULL), 0);
    int64_t t0 = tu_now_ms();
    while (tu_state(s.pid) != 'S' && tu_now_ms() - t0 < IT_BOUND_MS)
        sched_yield();
    assert_int_equal(tu_state(s.pid), 'S');

    /* The second waiter queues up behind it. */
    proc_t *waiter = it_start(lock_taker_main, &c);
    assert_int_equal(sync_await(&c), 'w');
    assert_int_equal(proc_join(waiter, 50), -ETIMEDOUT);

    /* The release wakes the victim; it is killed as its wait returns. */
    assert_int_equal(proc_lock_release(c.lock), 0);
    st = it_stepper_wait(&s);
    assert_true(WIFSTOPPED(st));
    it_stepper_kill(&s);
    t0 = tu_now_ms();
    assert_int_equal(it_finish(waiter), 0);
    if (tu_now_ms() - t0 > 5000)
        fail_msg("the second waiter got the lock only after %lld ms",
                 (long long)(tu_now_ms() - t0));
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    assert_int_equal(proc_lock_release(c.lock), 0);
    proc_lock_free(c.lock);
    sync_ctx_destroy(&c);
}

TEST_CASE(lock_acquire_killed_at_every_instruction, lock_sweep, NULL, op_lock_acquire,
          "lock acquire")

TEST_CASE(lock_release_killed_at_every_instruction, lock_sweep, op_lock_acquire, op_lock_release,
          "lock release")

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lock_basics),
        cmocka_unit_test(lock_timeouts_and_foreign_release),
        cmocka_unit_test(lock_killed_holder_recovered_by_parent),
        cmocka_unit_test(lock_blocked_waiter_gets_ownerdead),
        cmocka_unit_test(lock_mutual_exclusion),
        cmocka_unit_test(lock_release_by_non_holder),
        cmocka_unit_test(lock_timeout_survives_signals),
        cmocka_unit_test(lock_waiter_killed_right_after_wakeup),
        cmocka_unit_test(lock_acquire_killed_at_every_instruction),
        cmocka_unit_test(lock_release_killed_at_every_instruction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
