/* SPDX-License-Identifier: MIT */
/*
 * Worker pools (<libproc/pool.h>), task_timeout_ms: a task that sleeps,
 * spins or blocks SIGTERM past the timeout fails alone with -ETIMEDOUT in
 * apply, map (first, middle, last item; in a fast job and through the
 * queue) and futures; its worker is replaced and the pool goes on; a task is
 * never stopped before its time, and a task that returned just before the
 * kill is not failed (nor is the one its worker began after it: checked in
 * the queue's run, where the dying worker may get the next task first).
 *
 * Tasks and helpers: tests/support/pool_fixture.h. Rerun as
 * test_pool_timeouts_queue with LIBPROC_POOL_FAST=0, where every job takes
 * the dispatcher's queue.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <libproc/pool.h>
#include <libproc/proc.h>

#include "pool_fixture.h"
#include "testcheck.h"
#include "testutil.h"

#define TIMEOUT_MS 200

static const int overruns[] = {BAD_SLEEP, BAD_SPIN, BAD_NOTERM};
#define NOVERRUNS (sizeof overruns / sizeof overruns[0])

static proc_pool_t *timed_pool(int workers, int timeout_ms)
{
    proc_pool_opts_t o = {.workers = workers, .task_timeout_ms = timeout_ms};
    return open_pool(&o);
}

/* out (pid_t) = the worker's pid. */
static int task_getpid(const void *in, void *out)
{
    (void)in;
    *(pid_t *)out = getpid();
    return 0;
}

/* An apply that overruns fails with -ETIMEDOUT, not before its time, and
 * the next one runs in a new worker. */
static void test_apply_overruns(void **state)
{
    (void)state;
    proc_pool_t *pool = timed_pool(1, TIMEOUT_MS);
    for (size_t k = 0; k < NOVERRUNS; k++) {
        pid_t before = 0, after = 0;
        assert_int_equal(proc_pool_apply(pool, task_getpid, NULL, 0, &before, sizeof before), 0);
        struct bad_in b = {.value = 1, .how = (uint32_t)overruns[k]};
        uint64_t r = UNTOUCHED;
        int64_t t0 = tu_now_ms();
        assert_int_equal(proc_pool_apply(pool, task_maybe_bad, &b, sizeof b, &r, sizeof r),
                         -ETIMEDOUT);
        assert_true(tu_now_ms() - t0 >= TIMEOUT_MS);
        assert_true(r == UNTOUCHED);
        assert_int_equal(proc_pool_apply(pool, task_getpid, NULL, 0, &after, sizeof after), 0);
        assert_true(after > 0 && after != before);
        b.how = BAD_NONE;
        assert_int_equal(proc_pool_apply(pool, task_maybe_bad, &b, sizeof b, &r, sizeof r), 0);
        assert_true(r == 4);
    }
    close_join_free(pool);
}

/* Overruns at the first, a middle and the last item of a map, alone and
 * together, on two workers and on one (where the replacement must go on
 * exactly after the item that overran). */
static void test_map_overruns(void **state)
{
    (void)state;
    struct pipes p;
    pipes_open(&p);
    for (int workers = 2; workers >= 1; workers--) {
        proc_pool_t *pool = timed_pool(workers, TIMEOUT_MS);
        for (size_t k = 0; k < NOVERRUNS; k++) {
            int how = overruns[k];
            map_with_bad(pool, &p, (int[]){0}, (int[]){how}, 1);
            map_with_bad(pool, &p, (int[]){150}, (int[]){how}, 1);
            map_with_bad(pool, &p, (int[]){299}, (int[]){how}, 1);
        }
        map_with_bad(pool, &p, (int[]){0, 150, 299}, (int[]){BAD_SLEEP, BAD_SPIN, BAD_NOTERM}, 3);
        /* a crash before an overrun: each keeps its own error */
        map_with_bad(pool, &p, (int[]){10, 20}, (int[]){BAD_SEGV, BAD_SPIN}, 2);
        map_with_bad(pool, &p, (int[]){10, 20}, (int[]){BAD_SPIN, BAD_EXIT}, 2);
        close_join_free(pool);
    }
    pipes_close(&p);
}

/* The first overrun inside a fast job: the caller's own watch kills it. */
static void test_fast_overruns(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip(); /* test_pool_timeouts_queue: the queue's side is in the other tests */
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = timed_pool(2, TIMEOUT_MS);
    for (size_t k = 0; k < NOVERRUNS; k++) {
        map_with_bad_fast(pool, &p, (int[]){0}, (int[]){overruns[k]}, 1);
        map_with_bad_fast(pool, &p, (int[]){150}, (int[]){overruns[k]}, 1);
        map_with_bad_fast(pool, &p, (int[]){299}, (int[]){overruns[k]}, 1);
    }
    assert_int_equal(apply_bad_fast(pool, BAD_SPIN, -ETIMEDOUT), 1); /* a fast job of one */
    close_join_free(pool);
    pipes_close(&p);
}

/* Futures: the one that overran says -ETIMEDOUT once done; the others are unaffected. */
static void test_future_overruns(void **state)
{
    (void)state;
    proc_pool_t *pool = timed_pool(2, TIMEOUT_MS);
    enum { N = 8 };
    proc_future_t *f[N];
    for (int i = 0; i < N; i++) {
        struct bad_in b = {.value = (uint32_t)i, .how = BAD_NONE};
        if (i % 3 == 1)
            b.how = (uint32_t)overruns[(size_t)i / 3 % NOVERRUNS];
        f[i] = proc_pool_submit(pool, task_maybe_bad, &b, sizeof b, sizeof(uint64_t));
        assert_non_null(f[i]);
    }
    for (int i = 0; i < N; i++) {
        uint64_t r = UNTOUCHED;
        int rc = proc_future_get(f[i], &r, sizeof r, BOUND_MS);
        assert_int_equal(proc_future_wait(f[i], 0), 0); /* done: not the wait's own timeout */
        if (i % 3 == 1) {
            assert_int_equal(rc, -ETIMEDOUT);
            assert_true(r == UNTOUCHED);
        } else {
            assert_int_equal(rc, 0);
            assert_true(r == (uint64_t)i * 3 + 1);
        }
        proc_future_free(f[i]);
    }
    close_join_free(pool);
}

/* ------------------------------------------------- at the edge of the timeout */

#define EDGE_TIMEOUT_MS 200
#define EDGE_PAIRS 16

/* What the edge tasks leave in shared memory: whether each returned. */
static _Atomic int *g_returned;

struct edge_in {
    uint32_t index;
    uint32_t run_us; /* how long it spins */
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Maps g_returned for n tasks, all 0. */
static void returned_map(size_t n)
{
    g_returned = mmap(NULL, n * sizeof *g_returned, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(g_returned != MAP_FAILED);
    for (size_t i = 0; i < n; i++)
        atomic_store(&g_returned[i], 0);
}

/* One worker, EDGE_TIMEOUT_MS, and the test hook's kill delay (0: none). */
static proc_pool_t *edge_pool(int kill_delay_ms)
{
    char delay[16];
    snprintf(delay, sizeof delay, "%d", kill_delay_ms);
    assert_int_equal(setenv("LIBPROC_POOL_KILL_DELAY_MS", delay, 1), 0);
    proc_pool_t *pool = timed_pool(1, EDGE_TIMEOUT_MS);
    unsetenv("LIBPROC_POOL_KILL_DELAY_MS");
    return pool;
}

/* Spins for run_us, notes that it returned, out (uint64_t) = index + 1. */
static int task_edge(const void *in, void *out)
{
    const struct edge_in *e = in;
    int64_t end = mono_us() + e->run_us;
    while (mono_us() < end) {
    }
    *(uint64_t *)out = e->index + 1;
    atomic_store(&g_returned[e->index], 1);
    return 0;
}

/*
 * Tasks that spin about as long as the timeout (90-120 %), each followed by
 * an instant one, on one worker: some overrun, some return just before the
 * pool looks or kills. A task that failed never returned; one that
 * succeeded has its output; an instant task never fails, though a worker
 * killed for its predecessor may have begun it (it runs again elsewhere).
 * Spinning is wall-clock time: on a loaded machine more tasks overrun, which
 * is right; none of the checks depends on how many.
 * kill_delay_ms > 0 sets the test hook LIBPROC_POOL_KILL_DELAY_MS: the pool
 * then sends its SIGKILL that long after it saw the overrun, so that a task
 * seen overrunning often returns before the kill (and must not fail) and its
 * worker goes on to the next tasks (which must run again elsewhere).
 */
static void edge_of_timeout(int kill_delay_ms)
{
    enum { N = 2 * EDGE_PAIRS };
    returned_map(N);
    struct edge_in in[N];
    uint64_t out[N];
    unsigned seed = 12345;
    for (int i = 0; i < N; i++) {
        uint32_t pct = i % 2 ? 0 : 90 + (uint32_t)(rand_r(&seed) % 31);
        in[i] = (struct edge_in){.index = (uint32_t)i, .run_us = EDGE_TIMEOUT_MS * 10 * pct};
        out[i] = UNTOUCHED;
    }
    proc_pool_t *pool = edge_pool(kill_delay_ms);
    int rc = proc_pool_map(pool, task_edge, in, sizeof *in, out, sizeof *out, N);
    assert_true(rc == 0 || rc == -ETIMEDOUT);
    int failed = 0;
    for (int i = 0; i < N; i++) {
        if (out[i] == UNTOUCHED) { /* failed: it never returned */
            assert_true(i % 2 == 0);
            assert_int_equal(atomic_load(&g_returned[i]), 0);
            failed++;
        } else {
            assert_true(out[i] == (uint64_t)i + 1);
            assert_int_equal(atomic_load(&g_returned[i]), 1);
        }
    }
    print_message("kill delay %d ms: %d of %d tasks at the edge of the timeout overran\n",
                  kill_delay_ms, failed, EDGE_PAIRS);
    /* the same as single applies, and the pool still works */
    for (int i = 0; i < 2 * 4; i++) {
        uint64_t r = UNTOUCHED;
        atomic_store(&g_returned[i], 0);
        rc = proc_pool_apply(pool, task_edge, &in[i], sizeof in[i], &r, sizeof r);
        if (rc == -ETIMEDOUT) {
            assert_true(i % 2 == 0 && r == UNTOUCHED);
            assert_int_equal(atomic_load(&g_returned[i]), 0);
        } else {
            assert_int_equal(rc, 0);
            assert_true(r == (uint64_t)i + 1);
        }
    }
    close_join_free(pool);
    munmap(g_returned, N * sizeof *g_returned);
}

static void test_edge_of_timeout(void **state)
{
    (void)state;
    edge_of_timeout(0);
    edge_of_timeout(EDGE_TIMEOUT_MS / 10); /* a kill that often lands after the return */
}

/*
 * A task seen overrunning that returns before the SIGKILL keeps its result.
 * The test hook delays the kill by 10 timeouts; the task spins 5: the pool
 * sees it overrun (it looks at least 8 times per timeout), and the kill
 * comes long after the return. The watcher (the caller of a fast job, else
 * the dispatcher) waits out the delay before it takes the result, so the next
 * task runs in the replacement worker.
 */
static void test_return_before_kill(void **state)
{
    (void)state;
    returned_map(1);
    proc_pool_t *pool = edge_pool(10 * EDGE_TIMEOUT_MS);
    pid_t before = 0, after = 0;
    assert_int_equal(proc_pool_apply(pool, task_getpid, NULL, 0, &before, sizeof before), 0);
    struct edge_in e = {.index = 0, .run_us = 5 * EDGE_TIMEOUT_MS * 1000};
    uint64_t r = UNTOUCHED;
    assert_int_equal(proc_pool_apply(pool, task_edge, &e, sizeof e, &r, sizeof r), 0);
    assert_true(r == 1);
    assert_int_equal(atomic_load(&g_returned[0]), 1);
    assert_int_equal(proc_pool_apply(pool, task_getpid, NULL, 0, &after, sizeof after), 0);
    assert_true(after > 0 && after != before); /* the kill came, after the return */
    close_join_free(pool);
    munmap(g_returned, sizeof *g_returned);
}

/* Without a timeout, a task runs as long as it needs (here 3 x what a timed pool allows). */
static void test_no_timeout_by_default(void **state)
{
    (void)state;
    returned_map(1);
    proc_pool_t *pool = new_pool(1, 0, NULL);
    struct edge_in e = {.index = 0, .run_us = 3 * TIMEOUT_MS * 1000};
    uint64_t r = UNTOUCHED;
    assert_int_equal(proc_pool_apply(pool, task_edge, &e, sizeof e, &r, sizeof r), 0);
    assert_true(r == 1);
    close_join_free(pool);
    munmap(g_returned, sizeof *g_returned);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_apply_overruns, kill_leftovers),
        cmocka_unit_test_teardown(test_map_overruns, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_overruns, kill_leftovers),
        cmocka_unit_test_teardown(test_future_overruns, kill_leftovers),
        cmocka_unit_test_teardown(test_edge_of_timeout, kill_leftovers),
        cmocka_unit_test_teardown(test_return_before_kill, kill_leftovers),
        cmocka_unit_test_teardown(test_no_timeout_by_default, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_shared, NULL);
}
