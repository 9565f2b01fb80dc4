/* SPDX-License-Identifier: MIT */
/*
 * Worker pools (<libproc/pool.h>), the calls themselves: misuse, the default
 * number of workers, the results of apply, map and futures (return values,
 * the first failing index, no inputs or outputs, a nested pool refused),
 * 1 MiB and bigger inputs and outputs, and a pool used from a forked copy.
 *
 * Tasks and helpers: tests/support/pool_fixture.h. Rerun as test_pool_api_queue with
 * LIBPROC_POOL_FAST=0, where every job takes the dispatcher's queue.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/pool.h>
#include <libproc/proc.h>

#include "pool_fixture.h"
#include "testcheck.h"
#include "testutil.h"

/* ------------------------------------------------------------------- tests */

static void test_misuse(void **state)
{
    (void)state;
    proc_pool_opts_t o = {.workers = -1};
    errno = 0;
    assert_null(proc_pool_new(&o));
    assert_int_equal(errno, EINVAL);
    o = (proc_pool_opts_t){.workers = 1, .max_tasks_per_child = -1};
    errno = 0;
    assert_null(proc_pool_new(&o));
    assert_int_equal(errno, EINVAL);
    o = (proc_pool_opts_t){.workers = 1, .task_timeout_ms = -1};
    errno = 0;
    assert_null(proc_pool_new(&o));
    assert_int_equal(errno, EINVAL);

    int v = 1, r = 0;
    assert_int_equal(proc_pool_apply(NULL, task_ret_value, &v, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(NULL, task_ret_value, &v, sizeof v, &r, sizeof r, 1), -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(NULL, task_ret_value, &v, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_close(NULL), -EINVAL);
    assert_int_equal(proc_pool_terminate(NULL), -EINVAL);
    assert_int_equal(proc_pool_join(NULL, 0), -EINVAL);
    assert_int_equal(proc_pool_free(NULL), 0);
    assert_int_equal(proc_future_wait(NULL, 0), -EINVAL);
    assert_int_equal(proc_future_get(NULL, &r, sizeof r, 0), -EINVAL);
    proc_future_free(NULL);

    proc_pool_t *pool = new_pool(1, 0, NULL);
    assert_int_equal(proc_pool_apply(pool, NULL, &v, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(pool, NULL, &v, sizeof v, &r, sizeof r, 1), -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(pool, NULL, &v, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_apply(pool, task_ret_value, NULL, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, NULL, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(pool, task_ret_value, &v, SIZE_MAX / 2, &r, sizeof r, 4),
                     -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(pool, task_ret_value, NULL, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    /* Python: "Pool is still running" */
    assert_int_equal(proc_pool_join(pool, 0), -EINVAL);
    assert_int_equal(proc_pool_join(pool, -2), -EINVAL);

    proc_future_t *f = proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r);
    assert_non_null(f);
    assert_int_equal(proc_future_wait(f, -2), -EINVAL);
    assert_int_equal(proc_future_get(f, &r, sizeof r, -5), -EINVAL);
    long long too_big = 0;
    assert_int_equal(proc_future_get(f, &too_big, sizeof too_big, BOUND_MS), -EINVAL);
    assert_int_equal(proc_future_get(f, NULL, sizeof r, BOUND_MS), -EINVAL);
    assert_int_equal(proc_future_get(f, &r, sizeof r, BOUND_MS), 1);
    assert_int_equal(r, 2);
    assert_int_equal(proc_future_get(f, NULL, 0, 0), 1); /* again, without the output */
    proc_future_free(f);
    assert_int_equal(proc_pool_map(pool, task_ret_value, NULL, sizeof v, NULL, sizeof r, 0), 0);
    free_pool(pool);
}

static void test_default_workers(void **state)
{
    (void)state;
    proc_pool_t *pool = proc_pool_new(NULL);
    assert_non_null(pool);
    assert_int_equal(proc_active_children(NULL, 0), (size_t)proc_cpu_count());
    int v = 21, r = 0;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 21);
    assert_int_equal(r, 42);
    free_pool(pool);

    proc_pool_opts_t zero = {0};
    pool = proc_pool_new(&zero);
    assert_non_null(pool);
    assert_int_equal(proc_active_children(NULL, 0), (size_t)proc_cpu_count());
    free_pool(pool);
}

static void test_results(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    int v = 7, r = 0;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 7);
    assert_int_equal(r, 14);
    v = 0;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 0);
    assert_int_equal(r, 0);
    v = -42; /* a task's negative value comes back as is */
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), -42);
    assert_int_equal(r, -84);

    enum { N = 100 };
    int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = 0;
    in[60] = 9;
    in[30] = 5;
    in[90] = -3;
    /* the first failing index wins, not the first to fail in time */
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, N), 5);
    for (int i = 0; i < N; i++)
        assert_int_equal(out[i], 2 * in[i]);
    in[30] = 0;
    in[60] = 0;
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, N), -3);
    in[90] = 0;
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, N), 0);

    /* no input, no output: the task gets NULL, NULL */
    assert_int_equal(proc_pool_map(pool, task_null_args, NULL, 0, NULL, 0, 1000), 0);
    assert_int_equal(proc_pool_apply(pool, task_null_args, NULL, 0, NULL, 0), 0);

    assert_int_equal(proc_pool_apply(pool, task_nested_pool, NULL, 0, NULL, 0), EPERM);

    proc_future_t *f = proc_pool_submit(pool, task_ret_value, &(int){11}, sizeof(int), sizeof r);
    assert_non_null(f);
    assert_int_equal(proc_future_wait(f, BOUND_MS), 0);
    assert_int_equal(proc_future_get(f, &r, sizeof r, 0), 11);
    assert_int_equal(r, 22);
    proc_future_free(f);
    free_pool(pool);
}

static void test_big_io(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    enum { K = 3 };
    unsigned char *in = malloc(K * MIB), *out = malloc(K * MIB);
    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i < K * MIB; i++)
        in[i] = (unsigned char)(i * 7 + i / 4096);

    assert_int_equal(proc_pool_apply(pool, task_big, in, MIB, out, MIB), 0);
    for (size_t i = 0; i < MIB; i++)
        assert_true(out[i] == (unsigned char)~in[i]);

    memset(out, 0, K * MIB);
    assert_int_equal(proc_pool_map(pool, task_big, in, MIB, out, MIB, K), 0);
    for (size_t i = 0; i < K * MIB; i++)
        assert_true(out[i] == (unsigned char)~in[i]);

    proc_future_t *f = proc_pool_submit(pool, task_big, in + MIB, MIB, MIB);
    assert_non_null(f);
    memset(out, 0, MIB);
    assert_int_equal(proc_future_get(f, out, MIB, BOUND_MS), 0);
    for (size_t i = 0; i < MIB; i++)
        assert_true(out[i] == (unsigned char)~in[MIB + i]);
    proc_future_free(f);
    free(in);
    free(out);

    /* bigger than the arena a worker keeps: it grows, then shrinks again */
    in = malloc(HUGE_SIZE);
    out = malloc(HUGE_SIZE);
    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i < HUGE_SIZE; i++)
        in[i] = (unsigned char)(i ^ (i >> 13));
    for (int round = 0; round < 2; round++) {
        assert_int_equal(proc_pool_apply(pool, task_huge, in, HUGE_SIZE, out, HUGE_SIZE), 0);
        for (size_t i = 0; i < HUGE_SIZE; i++)
            if (out[i] != (unsigned char)(in[i] + 1))
                fail_msg("byte %zu", i);
    }
    int v = 3, r;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 3);
    free(in);
    free(out);
    free_pool(pool);
}

/* A pool belongs to its creator: in a forked copy every call is -ECHILD. */
static void test_other_process(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(1, 0, NULL);
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) {
        int v = 1, r;
        bool ok = proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r) == -ECHILD;
        errno = 0;
        ok = ok && proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r) == NULL &&
             errno == ECHILD;
        ok = ok && proc_pool_close(pool) == -ECHILD && proc_pool_join(pool, 0) == -ECHILD &&
             proc_pool_terminate(pool) == -ECHILD && proc_pool_free(pool) == -ECHILD;
        _exit(ok ? 0 : 1);
    }
    int st = 0;
    pid_t w;
    while ((w = waitpid(c, &st, 0)) < 0 && errno == EINTR)
        ;
    assert_int_equal(w, c);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    int v = 4, r;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 4);
    free_pool(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_misuse, kill_leftovers),
        cmocka_unit_test_teardown(test_default_workers, kill_leftovers),
        cmocka_unit_test_teardown(test_results, kill_leftovers),
        cmocka_unit_test_teardown(test_big_io, kill_leftovers),
        cmocka_unit_test_teardown(test_other_process, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_shared, NULL);
}
