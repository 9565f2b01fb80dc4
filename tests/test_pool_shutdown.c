/* SPDX-License-Identifier: MIT */
/*
 * Worker pools (<libproc/pool.h>) coming to an end: terminate with work
 * running and queued, free of a running pool, close and join (with a
 * timeout), and terminate and close while a fast job (a map run by the
 * calling thread on borrowed workers, see src/pool_fast.c) is in flight.
 *
 * Tasks and helpers: tests/support/pool_fixture.h. Rerun as test_pool_shutdown_queue with
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

struct mapper {
    proc_pool_t *pool;
    int rc;
    int out[64];
};

static void *map_blocking(void *arg)
{
    struct mapper *m = arg;
    for (int i = 0; i < 64; i++)
        m->out[i] = -1;
    m->rc = proc_pool_map(m->pool, task_block, NULL, 0, m->out, sizeof(int), 64);
    return NULL;
}

/* Terminates pool while thread t runs a map of 64 blocking items (its
 * result in *rc, its outputs in out): the map fails with -ECANCELED and
 * leaves every output untouched. Frees the pool. */
static void terminate_blocked_map(proc_pool_t *pool, pthread_t t, const int *rc, const int *out)
{
    assert_int_equal(proc_pool_terminate(pool), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(*rc, -ECANCELED);
    for (int i = 0; i < 64; i++)
        assert_int_equal(out[i], -1);
    free_pool(pool);
}

/* Reads, without waiting, the pids left on p's report pipe. */
static void drain_pids(struct pipes *p)
{
    while (tu_read_full(p->report[0], &(pid_t){0}, sizeof(pid_t), 0) > 0) {
    }
}

/* pool_warm_up(), then opens p: the count of open fds a test must find
 * again at its end. */
static int warm_up_and_open(struct pipes *p)
{
    pool_warm_up();
    pipes_open(p);
    return tu_count_fds();
}

static void test_terminate_running(void **state)
{
    (void)state;
    struct pipes p;
    int fds = warm_up_and_open(&p);
    proc_pool_t *pool = new_pool(2, 0, NULL);

    enum { Q = 20 };
    proc_future_t *blocked[2], *queued[Q];
    for (int i = 0; i < 2; i++) {
        blocked[i] = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
        assert_non_null(blocked[i]);
    }
    for (int i = 0; i < Q; i++) {
        uint64_t v = (uint64_t)i;
        queued[i] = proc_pool_submit(pool, task_triple, &v, sizeof v, sizeof v);
        assert_non_null(queued[i]);
    }
    pid_t pids[2] = {read_pid(&p), read_pid(&p)}; /* both workers are stuck */
    assert_int_not_equal(pids[0], pids[1]);
    assert_int_equal(proc_pool_terminate(pool), 0);

    /* The workers (our children) are gone and reaped. Not kill(pid, 0) == -1:
     * a new process elsewhere may already have one of their pids. */
    assert_no_children();
    for (int i = 0; i < 2; i++) {
        int r = -1;
        assert_int_equal(proc_future_get(blocked[i], &r, sizeof r, 0), -ECANCELED);
        assert_int_equal(r, -1);
        proc_future_free(blocked[i]);
    }
    for (int i = 0; i < Q; i++) {
        assert_int_equal(proc_future_get(queued[i], NULL, 0, 0), -ECANCELED);
        proc_future_free(queued[i]);
    }

    /* no new work; join, close and terminate are fine */
    int v = 1, r;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(pool, task_ret_value, &v, sizeof v, &r, sizeof r, 1), -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_join(pool, 0), 0);
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_terminate(pool), 0);
    free_pool(pool);
    assert_int_equal(tu_count_fds(), fds);

    /* terminate while a map runs in another thread: the map fails with
     * -ECANCELED, the outputs of items that never finished are untouched */
    pool = new_pool(2, 0, NULL);
    struct mapper m = {.pool = pool};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, map_blocking, &m), 0);
    read_pid(&p);
    read_pid(&p);
    terminate_blocked_map(pool, t, &m.rc, m.out);
    assert_int_equal(tu_count_fds(), fds);
    pipes_close(&p);
}

struct fast_mapper {
    proc_pool_t *pool;
    int n, rc;
    char in[64];
    int out[64];
};

static void *map_blocking_fast(void *arg)
{
    struct fast_mapper *m = arg;
    for (int i = 0; i < 64; i++)
        m->out[i] = -1;
    m->rc = proc_pool_map(m->pool, task_block, m->in, 1, m->out, sizeof(int), (size_t)m->n);
    return NULL;
}

/* Starts, in a new thread *t, m's fast map of m->n blocking items on a new
 * two-worker pool (in m->pool, its fast jobs warmed up), and waits until a
 * worker blocks in it (the other may too): how many fast jobs ran since the
 * warm-up. */
static int start_blocked_fast_map(struct fast_mapper *m, pthread_t *t, struct pipes *p)
{
    m->pool = new_pool(2, 0, NULL);
    fast_warm(m->pool);
    atomic_store(&g_shared->fast_hits, 0);
    assert_int_equal(pthread_create(t, NULL, map_blocking_fast, m), 0);
    read_pid(p);
    return atomic_load(&g_shared->fast_hits);
}

/*
 * A fast job that blocks in its workers: terminate fails it with -ECANCELED
 * (outputs of unfinished items untouched, no zombie, no fd left); close
 * lets it finish, and a future submitted meanwhile waits for the borrowed
 * workers and then runs.
 */
static void test_fast_terminate_close(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip();
    struct pipes p;
    int fds = warm_up_and_open(&p);

    int hits = 0;
    for (int attempt = 0; attempt < 20 && hits == 0; attempt++) {
        struct fast_mapper m = {.n = 64};
        pthread_t t;
        hits = start_blocked_fast_map(&m, &t, &p);
        proc_pool_t *pool = m.pool;
        terminate_blocked_map(pool, t, &m.rc, m.out);
        drain_pids(&p); /* the other worker's pid, if it blocked too */
    }
    assert_true(hits > 0);
    assert_int_equal(tu_count_fds(), fds);

    hits = 0;
    for (int attempt = 0; attempt < 20 && hits == 0; attempt++) {
        struct fast_mapper m = {.n = 8};
        pthread_t t;
        hits = start_blocked_fast_map(&m, &t, &p);
        proc_pool_t *pool = m.pool;
        uint64_t v = 5, r = 0;
        proc_future_t *f = proc_pool_submit(pool, task_triple, &v, sizeof v, sizeof r);
        assert_non_null(f);
        assert_int_equal(proc_pool_close(pool), 0);
        assert_int_equal(proc_pool_join(pool, 0), -ETIMEDOUT);
        open_gate(&p, 8); /* one byte per item */
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(m.rc, 5); /* task_block returns 5 */
        for (int i = 0; i < 8; i++)
            assert_int_equal(m.out[i], 55);
        assert_int_equal(proc_future_get(f, &r, sizeof r, BOUND_MS), 0);
        assert_true(r == 16);
        proc_future_free(f);
        assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
        free_pool(pool);
        drain_pids(&p); /* pids of the other items */
    }
    assert_true(hits > 0);
    assert_int_equal(tu_count_fds(), fds);
    pipes_close(&p);
}

/* proc_pool_free on a running pool terminates it; futures outlive it. */
static void test_free_running(void **state)
{
    (void)state;
    struct pipes p;
    int fds = warm_up_and_open(&p);
    proc_pool_t *pool = new_pool(1, 0, NULL);
    proc_future_t *f = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
    proc_future_t *g = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
    assert_non_null(f);
    assert_non_null(g);
    read_pid(&p);
    free_pool(pool);
    assert_int_equal(proc_future_get(f, NULL, 0, 0), -ECANCELED);
    assert_int_equal(proc_future_get(g, NULL, 0, 0), -ECANCELED);
    proc_future_free(f);
    proc_future_free(g);

    /* a closed pool with queued work is terminated too; an idle one quietly */
    pool = new_pool(1, 0, NULL);
    f = proc_pool_submit(pool, task_block, NULL, 0, 0);
    assert_non_null(f);
    read_pid(&p);
    assert_int_equal(proc_pool_close(pool), 0);
    free_pool(pool);
    assert_int_equal(proc_future_get(f, NULL, 0, 0), -ECANCELED);
    proc_future_free(f);
    free_pool(new_pool(3, 0, NULL));
    assert_int_equal(tu_count_fds(), fds);
    pipes_close(&p);
}

static void test_close_join(void **state)
{
    (void)state;
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(2, 0, NULL);

    /* queued tasks still run after close */
    enum { N = 50 };
    proc_future_t *f[N];
    for (int i = 0; i < N; i++) {
        uint64_t v = (uint64_t)i;
        f[i] = proc_pool_submit(pool, task_triple, &v, sizeof v, sizeof v);
        assert_non_null(f[i]);
    }
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_close(pool), 0);
    int v = 1, r;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(pool, task_ret_value, &v, sizeof v, &r, sizeof r, 1), -EINVAL);
    assert_int_equal(proc_pool_map(pool, task_ret_value, &v, sizeof v, &r, sizeof r, 0), -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_no_children();
    for (int i = 0; i < N; i++) {
        uint64_t out = 0;
        assert_int_equal(proc_future_get(f[i], &out, sizeof out, 0), 0);
        assert_true(out == (uint64_t)i * 3 + 1);
        proc_future_free(f[i]);
    }
    assert_int_equal(proc_pool_join(pool, 0), 0);
    free_pool(pool);

    /* join waits for a task that still runs, with a timeout */
    pool = new_pool(1, 0, NULL);
    proc_future_t *b = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
    assert_non_null(b);
    read_pid(&p);
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, 0), -ETIMEDOUT);
    assert_int_equal(proc_pool_join(pool, 30), -ETIMEDOUT);
    open_gate(&p, 1);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_int_equal(proc_future_get(b, &r, sizeof r, 0), 5);
    assert_int_equal(r, 55);
    proc_future_free(b);
    assert_no_children();
    free_pool(pool);
    pipes_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_terminate_running, kill_leftovers),
        cmocka_unit_test_teardown(test_free_running, kill_leftovers),
        cmocka_unit_test_teardown(test_close_join, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_terminate_close, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_shared, NULL);
}
