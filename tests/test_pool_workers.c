/* SPDX-License-Identifier: MIT */
/*
 * Worker pools (<libproc/pool.h>), the workers: max_tasks_per_child,
 * max_memory_per_child, initializers (also crashing ones), and the binding
 * of workers to CPUs.
 *
 * Tasks and helpers: tests/support/pool_fixture.h. Rerun as test_pool_workers_queue with
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

#ifdef POOL_SANITIZED
#define MAX_TASKS_ITEMS 400
#else
#define MAX_TASKS_ITEMS 1000
#endif

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static size_t distinct_pids(pid_t *pids, size_t n)
{
    qsort(pids, n, sizeof *pids, cmp_pid);
    size_t d = n ? 1 : 0;
    for (size_t i = 1; i < n; i++)
        d += pids[i] != pids[i - 1];
    return d;
}

static void test_max_tasks_per_child(void **state)
{
    (void)state;
    atomic_store(&g_shared->inits, 0);
    proc_pool_t *pool = new_pool(2, 1, init_count);
    pid_t *pids = calloc(MAX_TASKS_ITEMS, sizeof *pids);
    assert_non_null(pids);
    int64_t t0 = tu_now_ms();
    assert_int_equal(
        proc_pool_map(pool, task_worker_number, NULL, 0, pids, sizeof *pids, MAX_TASKS_ITEMS), 0);
    print_message("max_tasks_per_child = 1, %d tasks: %lld ms\n", MAX_TASKS_ITEMS,
                  (long long)(tu_now_ms() - t0));
    assert_int_equal(distinct_pids(pids, MAX_TASKS_ITEMS), MAX_TASKS_ITEMS);
    assert_true(atomic_load(&g_shared->inits) >= MAX_TASKS_ITEMS);

    /* futures and apply too: every task in a fresh process */
    pid_t a = 0, b = 0;
    assert_int_equal(proc_pool_apply(pool, task_worker_number, NULL, 0, &a, sizeof a), 0);
    assert_int_equal(proc_pool_apply(pool, task_worker_number, NULL, 0, &b, sizeof b), 0);
    assert_int_not_equal(a, b);
    close_join_free(pool);
    free(pids);

    /* max 3: a map of 30 items uses at least 10 workers */
    pool = new_pool(2, 3, init_count);
    pid_t p30[30];
    assert_int_equal(proc_pool_map(pool, task_worker_number, NULL, 0, p30, sizeof *p30, 30), 0);
    size_t d = distinct_pids(p30, 30);
    assert_true(d >= 10);
    for (int i = 0; i < 30; i++) { /* no worker ran more than 3 */
        int same = 0;
        for (int k = 0; k < 30; k++)
            same += p30[k] == p30[i];
        assert_true(same <= 3);
    }
    free_pool(pool);
}

#define GROW_MIB 200
#define CAP_MIB 100

/* Keeps *in MiB more of touched memory for the rest of the worker's life (a cache that grows);
 * out = the worker's number from init_count (a pid may come back, see task_worker_number). */
static int task_grow(const void *in, void *out)
{
    static unsigned char *volatile kept[64]; /* volatile: the compiler may not drop it all */
    static size_t nkept;
    size_t len = (size_t) * (const int *)in << 20;
    if (len) {
        unsigned char *m = nkept < sizeof kept / sizeof kept[0] ? malloc(len) : NULL;
        if (!m)
            return -ENOMEM;
        memset(m, 1, len);
        kept[nkept++] = m;
    }
    return task_worker_number(in, out);
}

/* billiard's cap: a worker that grew past it leaves after its result, which is kept. */
static void test_max_memory_per_child(void **state)
{
    (void)state;
    atomic_store(&g_shared->inits, 0);
    proc_pool_opts_t o = {
        .workers = 1, .max_memory_per_child = (size_t)CAP_MIB << 20, .initializer = init_count};
    proc_pool_t *pool = open_pool(&o);
    int grow[4] = {GROW_MIB, GROW_MIB, GROW_MIB, GROW_MIB}, none[10] = {0};
    pid_t pids[10] = {0};
    /* Every item grows its worker past the cap: each runs in a fresh one, none fails. */
    assert_int_equal(proc_pool_map(pool, task_grow, grow, sizeof *grow, pids, sizeof *pids, 4), 0);
    assert_int_equal(distinct_pids(pids, 4), 4);
    /* Small workers stay. */
    assert_int_equal(proc_pool_map(pool, task_grow, none, sizeof *none, pids, sizeof *pids, 10), 0);
    assert_int_equal(distinct_pids(pids, 10), 1);
    pid_t a = 0, b = 0, c = 0;
    assert_int_equal(proc_pool_apply(pool, task_grow, none, sizeof *none, &a, sizeof a), 0);
    assert_int_equal(a, pids[0]);
    assert_int_equal(proc_pool_apply(pool, task_grow, grow, sizeof *grow, &b, sizeof b), 0);
    assert_int_equal(b, a); /* it grew in that task and leaves after it */
    proc_future_t *f = proc_pool_submit(pool, task_grow, none, sizeof *none, sizeof c);
    assert_non_null(f);
    assert_int_equal(proc_future_get(f, &c, sizeof c, 60000), 0);
    proc_future_free(f);
    assert_true(c != b && c > 0);
    close_join_free(pool);
}

static void test_initializer(void **state)
{
    (void)state;
    atomic_store(&g_shared->inits, 0);
    proc_pool_t *pool = new_pool(2, 0, init_count);
    enum { N = 1000 };
    pid_t pids[N];
    assert_int_equal(proc_pool_map(pool, task_pid, NULL, 0, pids, sizeof *pids, N), 0);
    assert_true(distinct_pids(pids, N) <= 2);
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_int_equal(atomic_load(&g_shared->inits), 2); /* once per worker */
    free_pool(pool);
    assert_int_equal(g_inited, 0); /* it ran in the workers, not here */
}

/* An initializer that crashes: the pool gives up instead of respawning
 * forever, and every task fails with -ECHILD. */
static void test_initializer_crashes(void **state)
{
    (void)state;
    atomic_store(&g_shared->inits, 0);
    proc_pool_t *pool = new_pool(2, 0, init_crash);
    int v = 1, r = -1;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), -ECHILD);
    assert_int_equal(r, -1);
    int in[10] = {0}, out[10];
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, 10),
                     -ECHILD);
    proc_future_t *f = proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r);
    assert_non_null(f);
    assert_int_equal(proc_future_get(f, &r, sizeof r, BOUND_MS), -ECHILD);
    proc_future_free(f);
    int inits = atomic_load(&g_shared->inits);
    assert_true(inits >= 2 && inits <= 8); /* workers + 2 deaths in a row, then no more */
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_no_children();
    free_pool(pool);
}

/* With bind_cpus, workers are bound one per CPU the creating thread may use;
 * by default they keep its whole set. */
static void test_workers_bound(void **state)
{
    (void)state;
    cpu_set_t mine;
    assert_int_equal(sched_getaffinity(0, sizeof mine, &mine), 0);
    int ncpu = CPU_COUNT(&mine);
    if (ncpu < 2)
        skip(); /* one CPU: nothing to spread over */
    int nw = ncpu < 8 ? ncpu : 8;
    struct pipes p;
    pipes_open(&p);
    for (int bind = 1; bind >= 0; bind--) {
        proc_pool_opts_t o = {.workers = nw, .bind_cpus = bind};
        proc_pool_t *pool = open_pool(&o);
        proc_future_t *f[8];
        for (int i = 0; i < nw; i++)
            assert_non_null(f[i] = proc_pool_submit(pool, task_block, NULL, 0, 0));
        cpu_set_t used;
        CPU_ZERO(&used);
        for (int i = 0; i < nw; i++) {
            pid_t pid = read_pid(&p); /* one per worker: each blocks in its task */
            cpu_set_t set;
            assert_int_equal(sched_getaffinity(pid, sizeof set, &set), 0);
            if (bind) {
                assert_int_equal(CPU_COUNT(&set), 1);
                cpu_set_t both;
                CPU_AND(&both, &set, &mine);
                assert_int_equal(CPU_COUNT(&both), 1);
                CPU_AND(&both, &set, &used);
                assert_int_equal(CPU_COUNT(&both), 0); /* a CPU of its own */
                CPU_OR(&used, &used, &set);
            } else {
                assert_true(CPU_EQUAL(&set, &mine));
            }
        }
        open_gate(&p, nw);
        for (int i = 0; i < nw; i++) {
            assert_int_equal(proc_future_get(f[i], NULL, 0, BOUND_MS), 5);
            proc_future_free(f[i]);
        }
        free_pool(pool);
    }
    pipes_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_max_tasks_per_child, kill_leftovers),
        cmocka_unit_test_teardown(test_max_memory_per_child, kill_leftovers),
        cmocka_unit_test_teardown(test_initializer, kill_leftovers),
        cmocka_unit_test_teardown(test_initializer_crashes, kill_leftovers),
        cmocka_unit_test_teardown(test_workers_bound, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_shared, NULL);
}
