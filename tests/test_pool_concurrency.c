/* SPDX-License-Identifier: MIT */
/*
 * Worker pools (<libproc/pool.h>) under load and from many threads: a map of
 * a million items, many threads submitting futures, maps from several
 * threads at once, several threads waiting for one future, and fast jobs (a
 * map run by the calling thread on borrowed workers, see src/pool_fast.c) of
 * every size.
 *
 * Tasks and helpers: tests/support/pool_fixture.h. Rerun as test_pool_concurrency_queue with
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
#define FUTURE_THREADS 8
#define FUTURES_PER_THREAD 2500
#else
#define FUTURE_THREADS 8
#define FUTURES_PER_THREAD 10000
#endif

#define MILLION 1000000

static void test_map_million(void **state)
{
    (void)state;
    uint32_t *in = malloc(MILLION * sizeof *in);
    uint64_t *out = malloc(MILLION * sizeof *out);
    assert_non_null(in);
    assert_non_null(out);
    uint64_t want = 0;
    for (uint32_t i = 0; i < MILLION; i++) {
        in[i] = i * 2654435761u;
        want += (uint64_t)in[i] * in[i] + 7;
    }
    memset(out, 0, MILLION * sizeof *out);
    proc_pool_t *pool = new_pool(2, 0, NULL);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_pool_map(pool, task_square, in, sizeof *in, out, sizeof *out, MILLION),
                     0);
    int64_t t1 = tu_now_ms();
    uint64_t sum = 0;
    for (uint32_t i = 0; i < MILLION; i++)
        sum += out[i];
    assert_true(sum == want);
    assert_true(out[MILLION - 1] == (uint64_t)in[MILLION - 1] * in[MILLION - 1] + 7);
    print_message("map of 1,000,000 items: %lld ms\n", (long long)(t1 - t0));
    free_pool(pool);
    free(in);
    free(out);
}

struct submitter {
    proc_pool_t *pool;
    uint64_t base;
    int failures;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;
    proc_future_t **f = calloc(FUTURES_PER_THREAD, sizeof *f);
    if (!f) {
        s->failures++;
        return NULL;
    }
    for (int i = 0; i < FUTURES_PER_THREAD; i++) {
        uint64_t v = s->base + (uint64_t)i;
        f[i] = proc_pool_submit(s->pool, task_triple, &v, sizeof v, sizeof(uint64_t));
        if (!f[i])
            s->failures++;
    }
    for (int i = 0; i < FUTURES_PER_THREAD; i++) {
        uint64_t r = 0;
        if (!f[i])
            continue;
        if (proc_future_get(f[i], &r, sizeof r, BOUND_MS) != 0 ||
            r != (s->base + (uint64_t)i) * 3 + 1)
            s->failures++;
        proc_future_free(f[i]);
    }
    free(f);
    return NULL;
}

static void test_futures_many_threads(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    pthread_t t[FUTURE_THREADS];
    struct submitter s[FUTURE_THREADS];
    int64_t t0 = tu_now_ms();
    for (int i = 0; i < FUTURE_THREADS; i++) {
        s[i] = (struct submitter){.pool = pool, .base = (uint64_t)i * 1000000};
        assert_int_equal(pthread_create(&t[i], NULL, submit_many, &s[i]), 0);
    }
    for (int i = 0; i < FUTURE_THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(s[i].failures, 0);
    }
    print_message("%d threads x %d futures: %lld ms\n", FUTURE_THREADS, FUTURES_PER_THREAD,
                  (long long)(tu_now_ms() - t0));
    free_pool(pool);
}

struct map_thread {
    proc_pool_t *pool;
    uint32_t base;
    int failures;
};

static void *maps_in_thread(void *arg)
{
    struct map_thread *m = arg;
    enum { N = 5000 };
    uint32_t *in = malloc(N * sizeof *in);
    uint64_t *out = malloc(N * sizeof *out);
    if (!in || !out) {
        m->failures++;
    } else {
        for (int round = 0; round < 20; round++) {
            for (uint32_t i = 0; i < N; i++)
                in[i] = m->base + (uint32_t)round * N + i;
            if (proc_pool_map(m->pool, task_square, in, sizeof *in, out, sizeof *out, N) != 0)
                m->failures++;
            for (uint32_t i = 0; i < N; i++)
                if (out[i] != (uint64_t)in[i] * in[i] + 7)
                    m->failures++;
        }
    }
    free(in);
    free(out);
    return NULL;
}

/* Maps from several threads at once share the workers. */
static void test_concurrent_maps(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    enum { T = 4 };
    pthread_t t[T];
    struct map_thread m[T];
    for (int i = 0; i < T; i++) {
        m[i] = (struct map_thread){.pool = pool, .base = (uint32_t)i * 1000000u};
        assert_int_equal(pthread_create(&t[i], NULL, maps_in_thread, &m[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(m[i].failures, 0);
    }
    free_pool(pool);
}

struct getter {
    proc_future_t *f;
    int rc, out;
};

static void *get_one(void *arg)
{
    struct getter *g = arg;
    g->rc = proc_future_get(g->f, &g->out, sizeof g->out, BOUND_MS);
    return NULL;
}

/* Several threads wait for one future; a wait with a timeout times out. */
static void test_future_waiters(void **state)
{
    (void)state;
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(1, 0, NULL);
    proc_future_t *f = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
    assert_non_null(f);
    read_pid(&p); /* it runs */
    assert_int_equal(proc_future_wait(f, 0), -ETIMEDOUT);
    assert_int_equal(proc_future_wait(f, 20), -ETIMEDOUT);
    int r = -1;
    assert_int_equal(proc_future_get(f, &r, sizeof r, 0), -ETIMEDOUT);
    assert_int_equal(r, -1);
    enum { W = 4 };
    pthread_t t[W];
    struct getter g[W];
    for (int i = 0; i < W; i++) {
        g[i] = (struct getter){.f = f, .rc = -1};
        assert_int_equal(pthread_create(&t[i], NULL, get_one, &g[i]), 0);
    }
    open_gate(&p, 1);
    for (int i = 0; i < W; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(g[i].rc, 5);
        assert_int_equal(g[i].out, 55);
    }
    assert_int_equal(proc_future_wait(f, 0), 0);
    proc_future_free(f);
    free_pool(pool);
    pipes_close(&p);
}

/* Fast jobs of every size, with and without inputs or outputs. (Several
 * threads at once, one fast and the others queued: test_concurrent_maps.) */
static void test_fast_results(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip();
    proc_pool_t *pool = new_pool(2, 0, NULL);
    static const size_t sizes[] = {1, 2, 31, 32, 33, 1000, 100000, 400000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        uint32_t *in = malloc(n * sizeof *in);
        uint64_t *out = malloc(n * sizeof *out);
        assert_non_null(in);
        assert_non_null(out);
        for (size_t i = 0; i < n; i++) {
            in[i] = (uint32_t)(i * 2654435761u);
            out[i] = UNTOUCHED;
        }
        fast_warm(pool);
        assert_int_equal(proc_pool_map(pool, task_square, in, sizeof *in, out, sizeof *out, n), 0);
        for (size_t i = 0; i < n; i++)
            assert_true(out[i] == (uint64_t)in[i] * in[i] + 7);
        free(in);
        free(out);
    }
    /* a task's return value: the first failing index's, in index order */
    int in[100], out[100];
    for (int i = 0; i < 100; i++)
        in[i] = i == 37 ? -4 : i == 90 ? 9 : 0;
    fast_warm(pool);
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, 100),
                     -4);
    for (int i = 0; i < 100; i++)
        assert_int_equal(out[i], 2 * in[i]);
    fast_warm(pool);
    assert_int_equal(proc_pool_map(pool, task_null_args, NULL, 0, NULL, 0, 1000), 0);
    free_pool(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_map_million, kill_leftovers),
        cmocka_unit_test_teardown(test_futures_many_threads, kill_leftovers),
        cmocka_unit_test_teardown(test_concurrent_maps, kill_leftovers),
        cmocka_unit_test_teardown(test_future_waiters, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_results, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_shared, NULL);
}
