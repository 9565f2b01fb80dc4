/* SPDX-License-Identifier: MIT */
/*
 * Semaphore, Event and shared memory across processes (src/sync.c,
 * src/shm.c): every row of their contract, killed waiters not wedging
 * others, counting across processes, every waiter woken, timeouts measured
 * on the clock and surviving a flood of signals, an event set killed after
 * every one of its instructions, and memory shared by many processes.
 * (Locks: test_ipc_lock.c.)
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

/* ----------------------------------------------------------------- Semaphore */

static void sem_basics(void **state)
{
    (void)state;
    proc_sem_t *s = proc_sem_new(2);
    assert_non_null(s);
    assert_int_equal(proc_sem_acquire(s, 0), 0);
    assert_int_equal(proc_sem_acquire(s, PROC_WAIT_FOREVER), 0);
    assert_int_equal(proc_sem_acquire(s, 0), -ETIMEDOUT);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_sem_acquire(s, 120), -ETIMEDOUT);
    it_elapsed_ok(t0, 120);
    assert_int_equal(proc_sem_release(s), 0);
    assert_int_equal(proc_sem_release(s), 0);
    assert_int_equal(proc_sem_release(s), 0); /* unbounded, like Python's Semaphore */
    for (int i = 0; i < 3; i++)
        assert_int_equal(proc_sem_acquire(s, 0), 0);
    assert_int_equal(proc_sem_acquire(s, 0), -ETIMEDOUT);
    assert_int_equal(proc_sem_acquire(s, -2), -EINVAL);
    assert_int_equal(proc_sem_acquire(NULL, 0), -EINVAL);
    assert_int_equal(proc_sem_release(NULL), -EINVAL);
    assert_int_equal(proc_sem_free(NULL), 0);
    assert_int_equal(proc_sem_free(s), 0);

    errno = 0;
    assert_null(proc_sem_new((unsigned)INT_MAX + 1u));
    assert_int_equal(errno, EINVAL);
    s = proc_sem_new(INT_MAX);
    assert_non_null(s);
    assert_int_equal(proc_sem_release(s), -EOVERFLOW);
    assert_int_equal(proc_sem_acquire(s, 0), 0);
    assert_int_equal(proc_sem_release(s), 0);
    proc_sem_free(s);
}

/* Reports 'w', takes one unit (bounded wait), exits 0 when it got it. */
static int sem_taker_main(void *arg)
{
    struct sync_ctx *c = arg;
    sync_report(c, 'w');
    return proc_sem_acquire(c->sem, IT_BOUND_MS) == 0 ? 0 : 1;
}

static void sem_release_wakes_other_processes(void **state)
{
    (void)state;
    struct sync_ctx c;
    sync_ctx_init(&c);
    c.sem = proc_sem_new(0);
    assert_non_null(c.sem);
    proc_t *p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = it_start(sem_taker_main, &c);
        assert_int_equal(sync_await(&c), 'w');
    }
    assert_int_equal(proc_join(p[0], 20), -ETIMEDOUT); /* nothing to take yet */
    for (int i = 0; i < 3; i++)
        assert_int_equal(proc_sem_release(c.sem), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(it_finish(p[i]), 0);
    assert_int_equal(proc_sem_acquire(c.sem, 0), -ETIMEDOUT);
    proc_sem_free(c.sem);
    sync_ctx_destroy(&c);
}

#define SEM_CHILDREN 6

#define SEM_UNITS 3

#define SEM_ITERS (IT_SANITIZED ? 300 : 2000)

static int sem_bound_main(void *arg)
{
    struct sync_ctx *c = arg;
    _Atomic long *inside = &c->shared[0], *peak = &c->shared[1];
    for (int i = 0; i < SEM_ITERS; i++) {
        if (proc_sem_acquire(c->sem, IT_BOUND_MS) != 0)
            return 30;
        long now = atomic_fetch_add(inside, 1) + 1;
        long old = atomic_load(peak);
        while (now > old && !atomic_compare_exchange_weak(peak, &old, now))
            ;
        sched_yield();
        atomic_fetch_sub(inside, 1);
        if (proc_sem_release(c->sem) != 0)
            return 31;
    }
    return 0;
}

static void sem_bounds_concurrency(void **state)
{
    (void)state;
    struct sync_ctx c;
    sync_ctx_init(&c);
    c.sem = proc_sem_new(SEM_UNITS);
    c.shared = proc_shared_alloc(2 * sizeof(long));
    assert_non_null(c.sem);
    assert_non_null(c.shared);
    proc_t *p[SEM_CHILDREN];
    for (int i = 0; i < SEM_CHILDREN; i++)
        p[i] = it_start(sem_bound_main, &c);
    for (int i = 0; i < SEM_CHILDREN; i++)
        assert_int_equal(it_finish(p[i]), 0);
    assert_true(atomic_load(&c.shared[1]) >= 1);
    assert_true(atomic_load(&c.shared[1]) <= SEM_UNITS);
    /* All units are back. */
    for (int i = 0; i < SEM_UNITS; i++)
        assert_int_equal(proc_sem_acquire(c.sem, 0), 0);
    assert_int_equal(proc_sem_acquire(c.sem, 0), -ETIMEDOUT);
    proc_shared_free((void *)c.shared);
    proc_sem_free(c.sem);
    sync_ctx_destroy(&c);
}

static void sem_killed_waiter_wedges_nobody(void **state)
{
    (void)state;
    struct sync_ctx c;
    sync_ctx_init(&c);
    c.sem = proc_sem_new(0);
    assert_non_null(c.sem);
    for (int round = 0; round < 3; round++) {
        proc_t *victim = it_start(sem_taker_main, &c);
        assert_int_equal(sync_await(&c), 'w');
        assert_int_equal(proc_join(victim, 20), -ETIMEDOUT);
        it_kill(victim);
    }
    proc_t *p = it_start(sem_taker_main, &c);
    assert_int_equal(sync_await(&c), 'w');
    assert_int_equal(proc_join(p, 20), -ETIMEDOUT);
    assert_int_equal(proc_sem_release(c.sem), 0);
    assert_int_equal(it_finish(p), 0);
    assert_int_equal(proc_sem_acquire(c.sem, 0), -ETIMEDOUT);
    proc_sem_free(c.sem);
    sync_ctx_destroy(&c);
}

static void sem_timeout_survives_signals(void **state)
{
    (void)state;
    proc_sem_t *s = proc_sem_new(0);
    assert_non_null(s);
    struct it_flood f;
    it_flood_start(&f);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_sem_acquire(s, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);
    assert_true(it_signals > 0);
    proc_sem_free(s);
}

/* --------------------------------------------------------------------- Event */

static void event_basics(void **state)
{
    (void)state;
    proc_event_t *e = proc_event_new();
    assert_non_null(e);
    assert_false(proc_event_is_set(e));
    assert_int_equal(proc_event_wait(e, 0), -ETIMEDOUT);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_event_wait(e, 120), -ETIMEDOUT);
    it_elapsed_ok(t0, 120);
    assert_int_equal(proc_event_set(e), 0);
    assert_true(proc_event_is_set(e));
    assert_int_equal(proc_event_set(e), 0); /* idempotent */
    assert_int_equal(proc_event_wait(e, 0), 0);
    assert_int_equal(proc_event_wait(e, PROC_WAIT_FOREVER), 0);
    assert_int_equal(proc_event_clear(e), 0);
    assert_false(proc_event_is_set(e));
    assert_int_equal(proc_event_wait(e, 0), -ETIMEDOUT);
    assert_int_equal(proc_event_wait(e, -2), -EINVAL);
    assert_int_equal(proc_event_wait(NULL, 0), -EINVAL);
    assert_int_equal(proc_event_set(NULL), -EINVAL);
    assert_int_equal(proc_event_clear(NULL), -EINVAL);
    assert_false(proc_event_is_set(NULL));
    assert_int_equal(proc_event_free(NULL), 0);
    assert_int_equal(proc_event_free(e), 0);
}

/* Reports 'w', waits for the event (bounded), exits 0 when it was set. */
static int event_waiter_main(void *arg)
{
    struct sync_ctx *c = arg;
    sync_report(c, 'w');
    return proc_event_wait(c->event, IT_BOUND_MS) == 0 ? 0 : 1;
}

static void event_set_wakes_every_waiter(void **state)
{
    (void)state;
    struct sync_ctx c;
    sync_ctx_init(&c);
    c.event = proc_event_new();
    assert_non_null(c.event);
    /* Two waiters are killed while waiting first: they must not matter. */
    for (int i = 0; i < 2; i++) {
        proc_t *victim = it_start(event_waiter_main, &c);
        assert_int_equal(sync_await(&c), 'w');
        assert_int_equal(proc_join(victim, 20), -ETIMEDOUT);
        it_kill(victim);
    }
    proc_t *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = it_start(event_waiter_main, &c);
        assert_int_equal(sync_await(&c), 'w');
    }
    assert_int_equal(proc_join(p[0], 20), -ETIMEDOUT);
    assert_int_equal(proc_event_set(c.event), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(it_finish(p[i]), 0);
    proc_event_free(c.event);
    sync_ctx_destroy(&c);
}

static int event_setter_main(void *arg)
{
    struct sync_ctx *c = arg;
    if (tu_gate_wait(&c->gate, IT_BOUND_MS) != 0)
        return 1;
    return proc_event_set(c->event) == 0 ? 0 : 2;
}

static void event_set_by_child_wakes_parent(void **state)
{
    (void)state;
    struct sync_ctx c;
    sync_ctx_init(&c);
    c.event = proc_event_new();
    assert_non_null(c.event);
    proc_t *p = it_start(event_setter_main, &c);
    tu_gate_open(&c.gate);
    assert_int_equal(proc_event_wait(c.event, IT_BOUND_MS), 0);
    assert_int_equal(it_finish(p), 0);
    assert_true(proc_event_is_set(c.event));
    proc_event_free(c.event);
    sync_ctx_destroy(&c);
}

static void event_timeout_survives_signals(void **state)
{
    (void)state;
    proc_event_t *e = proc_event_new();
    assert_non_null(e);
    struct it_flood f;
    it_flood_start(&f);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_event_wait(e, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);
    assert_true(it_signals > 0);
    proc_event_free(e);
}

/* ------------------------------------------------- killed at every instruction */

static void op_event_set(void *arg)
{
    (void)proc_event_set(((struct sync_ctx *)arg)->event);
}

/* For it_stepper_count: whether the event of arg (a sync_ctx) is set. */
static bool event_is_set(void *arg)
{
    return proc_event_is_set(((struct sync_ctx *)arg)->event);
}

static proc_t *blocked_event_waiter(struct sync_ctx *c)
{
    proc_t *p = it_start(event_waiter_main, c);
    assert_int_equal(sync_await(c), 'w');
    /* Asleep in the event's futex: proc_event_set() then takes the same path at every
     * run, which the instruction counts of the sweep rely on (a waiter that had not yet
     * gone to sleep made the set's path shorter, and the sweep non-monotone under load). */
    int r = tu_wait_blocked_in(proc_pid(p), SYS_futex, IT_BOUND_MS);
    if (r != 0 && r != -ETIMEDOUT) /* no /proc/<pid>/syscall here: the old grace time */
        r = proc_join(p, 20) == -ETIMEDOUT ? 0 : -ECHILD;
    assert_int_equal(r, 0);
    return p;
}

/*
 * proc_event_set() killed after every n of its instructions while a waiter
 * sleeps: the flag is set or not, and when it is, the waiter wakes by itself.
 */
static void event_set_killed_at_every_instruction(void **state)
{
    (void)state;
    struct sync_ctx c;
    sync_ctx_init(&c);
    c.event = proc_event_new();
    assert_non_null(c.event);
    assert_int_equal(proc_event_set(c.event), 0); /* warm up the child's PLT */
    assert_int_equal(proc_event_clear(c.event), 0);
    struct it_stepper s = {NULL, op_event_set, &c, 0};

    proc_t *waiter = blocked_event_waiter(&c);
    if (!it_stepper_start(&s)) {
        it_kill(waiter);
        sync_ctx_destroy(&c);
        skip();
    }
    long commit;
    long steps = it_stepper_count(&s, event_is_set, &commit);
    assert_int_equal(it_finish(waiter), 0);

    long first = -1, points = 0;
    for (long n = 0; n <= steps; n++) {
        if (!it_kill_point(n, steps, commit))
            continue;
        points++;
        assert_int_equal(proc_event_clear(c.event), 0);
        waiter = blocked_event_waiter(&c);
        assert_true(it_stepper_start(&s));
        it_stepper_run(&s, n);
        it_stepper_kill(&s);
        bool set = proc_event_is_set(c.event);
        if (!set)
            assert_int_equal(proc_event_set(c.event), 0);
        assert_int_equal(it_finish(waiter), 0); /* when set, it woke by itself */
        it_sweep_monotone(n, set, &first);
    }
    assert_true(first >= 0);
    print_message("      event set: %ld instructions, set from %ld, %ld kill points\n", steps,
                  first, points);
    proc_event_free(c.event);
    sync_ctx_destroy(&c);
}

/* ----------------------------------------------------------- shared memory */

#define SHM_CHILDREN 4

#define SHM_ITERS 10000

static int shm_main(void *arg)
{
    struct sync_ctx *c = arg;
    for (int i = 0; i < SHM_ITERS; i++)
        atomic_fetch_add(&c->shared[0], 1);
    ((char *)c->shared)[4096] = 'x'; /* plain memory is shared too */
    return 0;
}

static void shared_memory(void **state)
{
    (void)state;
    errno = 0;
    assert_null(proc_shared_alloc(0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(proc_shared_alloc(SIZE_MAX));
    assert_int_equal(errno, ENOMEM);
    proc_shared_free(NULL);

    size_t size = 1 << 20;
    unsigned char *mem = proc_shared_alloc(size);
    assert_non_null(mem);
    assert_int_equal((uintptr_t)mem % 64, 0);
    for (size_t i = 0; i < size; i++)
        if (mem[i] != 0)
            fail_msg("byte %zu is %u, not zero", i, mem[i]);

    struct sync_ctx c;
    sync_ctx_init(&c);
    c.shared = (_Atomic long *)mem;
    proc_t *p[SHM_CHILDREN];
    for (int i = 0; i < SHM_CHILDREN; i++)
        p[i] = it_start(shm_main, &c);
    for (int i = 0; i < SHM_CHILDREN; i++)
        assert_int_equal(it_finish(p[i]), 0);
    assert_int_equal(atomic_load(&c.shared[0]), (long)SHM_CHILDREN * SHM_ITERS);
    assert_int_equal(mem[4096], 'x');
    proc_shared_free(mem);
    sync_ctx_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sem_basics),
        cmocka_unit_test(sem_release_wakes_other_processes),
        cmocka_unit_test(sem_bounds_concurrency),
        cmocka_unit_test(sem_killed_waiter_wedges_nobody),
        cmocka_unit_test(sem_timeout_survives_signals),
        cmocka_unit_test(event_basics),
        cmocka_unit_test(event_set_wakes_every_waiter),
        cmocka_unit_test(event_set_by_child_wakes_parent),
        cmocka_unit_test(event_timeout_survives_signals),
        cmocka_unit_test(event_set_killed_at_every_instruction),
        cmocka_unit_test(shared_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
