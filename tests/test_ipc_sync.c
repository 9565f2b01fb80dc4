/* SPDX-License-Identifier: MIT */
/*
 * Lock, Semaphore, Event and shared memory across processes (src/sync.c,
 * src/shm.c): every row of their contract, owner death (-EOWNERDEAD for a
 * killed holder, also for a waiter blocked at the moment), killed waiters not
 * wedging others, mutual exclusion and counting across processes, timeouts
 * measured on the clock and surviving a flood of signals.
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

/* What a child shares with the test: the objects, a gate and a report pipe. */
struct ctx {
    proc_lock_t *lock;
    proc_sem_t *sem;
    proc_event_t *event;
    tu_gate gate;  /* the child holds on until the parent opens it */
    int report[2]; /* the child writes one byte when it is in position */
    _Atomic long *shared;
};

static void ctx_init(struct ctx *c)
{
    memset(c, 0, sizeof *c);
    assert_int_equal(tu_gate_init(&c->gate), 0);
    assert_int_equal(tu_pipe(c->report), 0);
}

static void ctx_destroy(struct ctx *c)
{
    tu_gate_destroy(&c->gate);
    close(c->report[0]);
    close(c->report[1]);
}

static void child_report(struct ctx *c, char what)
{
    (void)tu_write_full(c->report[1], &what, 1);
}

/* Waits (bounded) for one report byte from a child and returns it. */
static char await_report(struct ctx *c)
{
    char what = 0;
    assert_int_equal(tu_read_full(c->report[0], &what, 1, IT_BOUND_MS), 1);
    return what;
}

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
    struct ctx *c = arg;
    int r = proc_lock_acquire(c->lock, PROC_WAIT_FOREVER);
    if (r != 0 && r != -EOWNERDEAD)
        return 10;
    child_report(c, 'h');
    if (tu_gate_wait(&c->gate, -1) != 0)
        return 11;
    return proc_lock_release(c->lock) == 0 ? 0 : 12;
}

static void lock_timeouts_and_foreign_release(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.lock = proc_lock_new();
    assert_non_null(c.lock);
    proc_t *p = it_start(hold_lock_main, &c);
    assert_int_equal(await_report(&c), 'h');

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
    ctx_destroy(&c);
}

static void lock_killed_holder_recovered_by_parent(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.lock = proc_lock_new();
    assert_non_null(c.lock);
    proc_t *p = it_start(hold_lock_main, &c);
    assert_int_equal(await_report(&c), 'h');
    it_kill(p);

    assert_int_equal(proc_lock_acquire(c.lock, 0), -EOWNERDEAD);
    assert_int_equal(proc_lock_acquire(c.lock, 0), -EDEADLK); /* we hold it now */
    assert_int_equal(proc_lock_release(c.lock), 0);
    /* Recovered for good: plain acquire and release from now on. */
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    assert_int_equal(proc_lock_release(c.lock), 0);

    /* The same with a waiter already blocked when the holder dies. */
    p = it_start(hold_lock_main, &c);
    assert_int_equal(await_report(&c), 'h');
    it_kill(p);
    assert_int_equal(proc_lock_acquire(c.lock, IT_BOUND_MS), -EOWNERDEAD);
    assert_int_equal(proc_lock_release(c.lock), 0);
    proc_lock_free(c.lock);
    ctx_destroy(&c);
}

/* Reports 'w', then blocks in acquire; exit 42 when it got -EOWNERDEAD. */
static int lock_waiter_main(void *arg)
{
    struct ctx *c = arg;
    child_report(c, 'w');
    int r = proc_lock_acquire(c->lock, IT_BOUND_MS);
    if (r == -EOWNERDEAD)
        return proc_lock_release(c->lock) == 0 ? 42 : 13;
    return r == 0 ? 1 : 2;
}

static void lock_blocked_waiter_gets_ownerdead(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.lock = proc_lock_new();
    assert_non_null(c.lock);
    for (int round = 0; round < 5; round++) {
        proc_t *holder = it_start(hold_lock_main, &c);
        assert_int_equal(await_report(&c), 'h');
        proc_t *waiter = it_start(lock_waiter_main, &c);
        assert_int_equal(await_report(&c), 'w');
        /* Let the waiter block (it has at most 30 s of timeout). */
        assert_int_equal(proc_join(waiter, 20), -ETIMEDOUT);
        it_kill(holder);
        assert_int_equal(it_finish(waiter), 42);
    }
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    assert_int_equal(proc_lock_release(c.lock), 0);
    proc_lock_free(c.lock);
    ctx_destroy(&c);
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
    struct ctx *c = arg;
    struct mutex_shared *s = (struct mutex_shared *)c->shared;
    for (int i = 0; i < MUTEX_ITERS; i++) {
        if (proc_lock_acquire(c->lock, IT_BOUND_MS) != 0)
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
    struct ctx c;
    ctx_init(&c);
    c.lock = proc_lock_new();
    struct mutex_shared *s = proc_shared_alloc(sizeof *s);
    assert_non_null(c.lock);
    assert_non_null(s);
    c.shared = (_Atomic long *)s;
    proc_t *p[MUTEX_CHILDREN];
    for (int i = 0; i < MUTEX_CHILDREN; i++)
        p[i] = it_start(mutex_main, &c);
    for (int i = 0; i < MUTEX_CHILDREN; i++)
        assert_int_equal(it_finish_progressing(p[i], &s->counter), 0);
    assert_int_equal(s->violations, 0);
    assert_int_equal(s->counter, (long)MUTEX_CHILDREN * MUTEX_ITERS);
    proc_shared_free(s);
    proc_lock_free(c.lock);
    ctx_destroy(&c);
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
    struct ctx *c = arg;
    return proc_lock_release(c->lock) == -EPERM ? 0 : 1;
}

static void lock_release_by_non_holder(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.lock = proc_lock_new();
    assert_non_null(c.lock);
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    pthread_t t;
    void *bad = NULL;
    assert_int_equal(pthread_create(&t, NULL, release_from_thread, c.lock), 0);
    assert_int_equal(pthread_join(t, &bad), 0);
    assert_null(bad);
    assert_int_equal(it_finish(it_start(release_foreign_main, &c)), 0);
    assert_int_equal(proc_lock_release(c.lock), 0); /* still ours */
    proc_lock_free(c.lock);
    ctx_destroy(&c);
}

static void lock_timeout_survives_signals(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.lock = proc_lock_new();
    assert_non_null(c.lock);
    proc_t *p = it_start(hold_lock_main, &c);
    assert_int_equal(await_report(&c), 'h');
    struct it_flood f;
    it_flood_start(&f);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_lock_acquire(c.lock, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);
    tu_gate_open(&c.gate);
    assert_int_equal(it_finish(p), 0);
    proc_lock_free(c.lock);
    ctx_destroy(&c);
}

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
    struct ctx *c = arg;
    child_report(c, 'w');
    return proc_sem_acquire(c->sem, IT_BOUND_MS) == 0 ? 0 : 1;
}

static void sem_release_wakes_other_processes(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.sem = proc_sem_new(0);
    assert_non_null(c.sem);
    proc_t *p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = it_start(sem_taker_main, &c);
        assert_int_equal(await_report(&c), 'w');
    }
    assert_int_equal(proc_join(p[0], 20), -ETIMEDOUT); /* nothing to take yet */
    for (int i = 0; i < 3; i++)
        assert_int_equal(proc_sem_release(c.sem), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(it_finish(p[i]), 0);
    assert_int_equal(proc_sem_acquire(c.sem, 0), -ETIMEDOUT);
    proc_sem_free(c.sem);
    ctx_destroy(&c);
}

#define SEM_CHILDREN 6
#define SEM_UNITS 3
#define SEM_ITERS (IT_SANITIZED ? 300 : 2000)

static int sem_bound_main(void *arg)
{
    struct ctx *c = arg;
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
    struct ctx c;
    ctx_init(&c);
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
    ctx_destroy(&c);
}

static void sem_killed_waiter_wedges_nobody(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.sem = proc_sem_new(0);
    assert_non_null(c.sem);
    for (int round = 0; round < 3; round++) {
        proc_t *victim = it_start(sem_taker_main, &c);
        assert_int_equal(await_report(&c), 'w');
        assert_int_equal(proc_join(victim, 20), -ETIMEDOUT);
        it_kill(victim);
    }
    proc_t *p = it_start(sem_taker_main, &c);
    assert_int_equal(await_report(&c), 'w');
    assert_int_equal(proc_join(p, 20), -ETIMEDOUT);
    assert_int_equal(proc_sem_release(c.sem), 0);
    assert_int_equal(it_finish(p), 0);
    assert_int_equal(proc_sem_acquire(c.sem, 0), -ETIMEDOUT);
    proc_sem_free(c.sem);
    ctx_destroy(&c);
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
    struct ctx *c = arg;
    child_report(c, 'w');
    return proc_event_wait(c->event, IT_BOUND_MS) == 0 ? 0 : 1;
}

static void event_set_wakes_every_waiter(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.event = proc_event_new();
    assert_non_null(c.event);
    /* Two waiters are killed while waiting first: they must not matter. */
    for (int i = 0; i < 2; i++) {
        proc_t *victim = it_start(event_waiter_main, &c);
        assert_int_equal(await_report(&c), 'w');
        assert_int_equal(proc_join(victim, 20), -ETIMEDOUT);
        it_kill(victim);
    }
    proc_t *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = it_start(event_waiter_main, &c);
        assert_int_equal(await_report(&c), 'w');
    }
    assert_int_equal(proc_join(p[0], 20), -ETIMEDOUT);
    assert_int_equal(proc_event_set(c.event), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(it_finish(p[i]), 0);
    proc_event_free(c.event);
    ctx_destroy(&c);
}

static int event_setter_main(void *arg)
{
    struct ctx *c = arg;
    if (tu_gate_wait(&c->gate, IT_BOUND_MS) != 0)
        return 1;
    return proc_event_set(c->event) == 0 ? 0 : 2;
}

static void event_set_by_child_wakes_parent(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.event = proc_event_new();
    assert_non_null(c.event);
    proc_t *p = it_start(event_setter_main, &c);
    tu_gate_open(&c.gate);
    assert_int_equal(proc_event_wait(c.event, IT_BOUND_MS), 0);
    assert_int_equal(it_finish(p), 0);
    assert_true(proc_event_is_set(c.event));
    proc_event_free(c.event);
    ctx_destroy(&c);
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
    (void)proc_event_set(((struct ctx *)arg)->event);
}

static proc_t *blocked_event_waiter(struct ctx *c)
{
    proc_t *p = it_start(event_waiter_main, c);
    assert_int_equal(await_report(c), 'w');
    assert_int_equal(proc_join(p, 20), -ETIMEDOUT); /* let it fall asleep */
    return p;
}

/*
 * proc_event_set() killed after every n of its instructions while a waiter
 * sleeps: the flag is set or not, and when it is, the waiter wakes by itself.
 */
static void event_set_killed_at_every_instruction(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    c.event = proc_event_new();
    assert_non_null(c.event);
    assert_int_equal(proc_event_set(c.event), 0); /* warm up the child's PLT */
    assert_int_equal(proc_event_clear(c.event), 0);
    struct it_stepper s = {NULL, op_event_set, &c, 0};

    proc_t *waiter = blocked_event_waiter(&c);
    if (!it_stepper_start(&s)) {
        it_kill(waiter);
        ctx_destroy(&c);
        skip();
    }
    long steps = 0, commit = -1;
    while (it_stepper_step(&s)) {
        steps++;
        if (commit < 0 && proc_event_is_set(c.event))
            commit = steps;
    }
    it_stepper_kill(&s);
    assert_true(commit > 0);
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
    ctx_destroy(&c);
}

static void op_lock_acquire(void *arg)
{
    (void)proc_lock_acquire(((struct ctx *)arg)->lock, PROC_WAIT_FOREVER);
}

static void op_lock_release(void *arg)
{
    (void)proc_lock_release(((struct ctx *)arg)->lock);
}

/* Kills acquire (or, with pre = acquire, release) after every n instructions:
 * the lock is then free or held by the dead (-EOWNERDEAD), never wedged. */
static void lock_sweep(it_op_fn *pre, it_op_fn *op, const char *what)
{
    struct ctx c;
    ctx_init(&c);
    c.lock = proc_lock_new();
    assert_non_null(c.lock);
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0); /* warm up the child's PLT */
    assert_int_equal(proc_lock_release(c.lock), 0);
    struct it_stepper s = {pre, op, &c, 0};
    if (!it_stepper_start(&s)) {
        ctx_destroy(&c);
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
    ctx_destroy(&c);
}

/* Reports 'w', takes the lock (bounded) and gives it back: exit 0. */
static int lock_taker_main(void *arg)
{
    struct ctx *c = arg;
    child_report(c, 'w');
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
    struct ctx c;
    ctx_init(&c);
    c.lock = proc_lock_new();
    assert_non_null(c.lock);
    assert_int_equal(proc_lock_acquire(c.lock, 0), 0);
    struct it_stepper s = {NULL, op_lock_acquire, &c, 0};
    if (!it_stepper_start(&s)) {
        ctx_destroy(&c);
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
    assert_int_equal(await_report(&c), 'w');
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
    ctx_destroy(&c);
}

static void lock_acquire_killed_at_every_instruction(void **state)
{
    (void)state;
    lock_sweep(NULL, op_lock_acquire, "lock acquire");
}

static void lock_release_killed_at_every_instruction(void **state)
{
    (void)state;
    lock_sweep(op_lock_acquire, op_lock_release, "lock release");
}

/* ----------------------------------------------------------- shared memory */

#define SHM_CHILDREN 4
#define SHM_ITERS 10000

static int shm_main(void *arg)
{
    struct ctx *c = arg;
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

    struct ctx c;
    ctx_init(&c);
    c.shared = (_Atomic long *)mem;
    proc_t *p[SHM_CHILDREN];
    for (int i = 0; i < SHM_CHILDREN; i++)
        p[i] = it_start(shm_main, &c);
    for (int i = 0; i < SHM_CHILDREN; i++)
        assert_int_equal(it_finish(p[i]), 0);
    assert_int_equal(atomic_load(&c.shared[0]), (long)SHM_CHILDREN * SHM_ITERS);
    assert_int_equal(mem[4096], 'x');
    proc_shared_free(mem);
    ctx_destroy(&c);
}

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
        cmocka_unit_test(lock_waiter_killed_right_after_wakeup),
        cmocka_unit_test(lock_acquire_killed_at_every_instruction),
        cmocka_unit_test(lock_release_killed_at_every_instruction),
        cmocka_unit_test(shared_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
