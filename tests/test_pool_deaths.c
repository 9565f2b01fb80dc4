/* SPDX-License-Identifier: MIT */
/*
 * Worker pools (<libproc/pool.h>) whose workers die: tasks that segfault,
 * _exit() or are SIGKILLed from outside while the rest of their map
 * succeeds, in the dispatcher's queue and in fast jobs (a map run by the
 * calling thread on borrowed workers, see src/pool_fast.c), and a crash in a fast
 * job followed by terminate.
 *
 * Tasks and helpers: tests/support/pool_fixture.h. Rerun as test_pool_deaths_queue with
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

static void test_worker_dies_mid_task(void **state)
{
    (void)state;
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(2, 0, NULL);

    map_with_bad(pool, &p, (int[]){17}, (int[]){BAD_SEGV}, 1);
    map_with_bad(pool, &p, (int[]){150}, (int[]){BAD_EXIT}, 1);
    map_with_bad(pool, &p, (int[]){299}, (int[]){BAD_KILLED}, 1);
    map_with_bad(pool, &p, (int[]){0, 1, 40, 41, 200},
                 (int[]){BAD_EXIT, BAD_SEGV, BAD_KILLED, BAD_SEGV, BAD_EXIT}, 5);

    /* apply and futures alike */
    struct bad_in b = {.value = 1, .how = BAD_SEGV};
    uint64_t r = UNTOUCHED;
    assert_int_equal(proc_pool_apply(pool, task_maybe_bad, &b, sizeof b, &r, sizeof r), -ECHILD);
    assert_true(r == UNTOUCHED);
    b.how = BAD_EXIT;
    proc_future_t *f = proc_pool_submit(pool, task_maybe_bad, &b, sizeof b, sizeof r);
    b.how = BAD_NONE;
    proc_future_t *g = proc_pool_submit(pool, task_maybe_bad, &b, sizeof b, sizeof r);
    assert_non_null(f);
    assert_non_null(g);
    assert_int_equal(proc_future_get(f, &r, sizeof r, BOUND_MS), -ECHILD);
    assert_true(r == UNTOUCHED);
    assert_int_equal(proc_future_get(g, &r, sizeof r, BOUND_MS), 0);
    assert_true(r == 4);
    proc_future_free(f);
    proc_future_free(g);

    /* An idle worker killed from outside fails nothing; the pool goes on. */
    pid_t idle = 0;
    proc_pool_apply(pool, task_pid, NULL, 0, &idle, sizeof idle);
    assert_true(idle > 0);
    assert_int_equal(kill(idle, SIGKILL), 0);
    map_with_bad(pool, &p, (int[]){5}, (int[]){BAD_EXIT}, 1);

    close_join_free(pool);

    /*
     * One worker, so each replacement must go on exactly where the dead one
     * stopped: a death fails only the item it ran, the rest of its chunk
     * goes back to the queue. Deaths at the first and last items of the map,
     * on both sides of a chunk boundary (chunks of 75 here), and several in
     * one map.
     */
    proc_pool_t *one = new_pool(1, 0, NULL);
    map_with_bad(one, &p, (int[]){10}, (int[]){BAD_KILLED}, 1);
    map_with_bad(one, &p, (int[]){74, 75}, (int[]){BAD_SEGV, BAD_EXIT}, 2);
    map_with_bad(one, &p, (int[]){0, 80, 160, 299},
                 (int[]){BAD_EXIT, BAD_KILLED, BAD_SEGV, BAD_EXIT}, 4);
    close_join_free(one);
    pipes_close(&p);
}

/* ------------------------------------------------------------- fast jobs */

/*
 * test_worker_dies_mid_task's deaths inside fast jobs. A fast job's chunks
 * are n / (16 * workers) items: 10 of these 300 on two workers, 19 on one.
 * After a death the dead worker's unfinished items and (with one worker)
 * every chunk nobody claimed take the queue, to a replacement worker.
 */
static void test_fast_deaths(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip();
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(2, 0, NULL);
    map_with_bad_fast(pool, &p, (int[]){0}, (int[]){BAD_SEGV}, 1);
    map_with_bad_fast(pool, &p, (int[]){9}, (int[]){BAD_EXIT}, 1);
    map_with_bad_fast(pool, &p, (int[]){10}, (int[]){BAD_KILLED}, 1);
    map_with_bad_fast(pool, &p, (int[]){299}, (int[]){BAD_SEGV}, 1);
    map_with_bad_fast(pool, &p, (int[]){9, 10, 150, 299},
                      (int[]){BAD_SEGV, BAD_EXIT, BAD_KILLED, BAD_EXIT}, 4);

    /* an apply is a fast job of one item */
    assert_int_equal(apply_bad_fast(pool, BAD_SEGV, -ECHILD), 1);
    close_join_free(pool);

    proc_pool_t *one = new_pool(1, 0, NULL);
    map_with_bad_fast(one, &p, (int[]){0}, (int[]){BAD_EXIT}, 1);
    map_with_bad_fast(one, &p, (int[]){18}, (int[]){BAD_KILLED}, 1);
    map_with_bad_fast(one, &p, (int[]){19}, (int[]){BAD_SEGV}, 1);
    map_with_bad_fast(one, &p, (int[]){299}, (int[]){BAD_EXIT}, 1);
    map_with_bad_fast(one, &p, (int[]){18, 19, 160, 299},
                      (int[]){BAD_SEGV, BAD_EXIT, BAD_KILLED, BAD_SEGV}, 4);
    close_join_free(one);
    pipes_close(&p);
}

struct bad_mapper {
    proc_pool_t *pool;
    int rc;
    struct bad_in in[64];
    uint64_t out[64];
};

static void *map_bad(void *arg)
{
    struct bad_mapper *m = arg;
    m->rc =
        proc_pool_map(m->pool, task_maybe_bad, m->in, sizeof *m->in, m->out, sizeof *m->out, 64);
    return NULL;
}

/*
 * A worker of a fast job crashes while another blocks, then the pool is
 * terminated: the crashed item stays -ECHILD (the map's value: it is the
 * first failing index), the blocked one is cancelled. Whether the
 * dispatcher saw the crash before terminate or terminate's kill finds the
 * worker already dead, a crash is not turned into a cancellation.
 */
static void test_fast_crash_then_terminate(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip();
    struct pipes p;
    pipes_open(&p);
    int hits = 0;
    for (int attempt = 0; attempt < 20 && hits < 2; attempt++) {
        proc_pool_t *pool = new_pool(2, 0, NULL);
        fast_warm(pool);
        atomic_store(&g_shared->fast_hits, 0);
        struct bad_mapper m = {.pool = pool};
        for (int i = 0; i < 64; i++) {
            m.in[i] = (struct bad_in){.value = (uint32_t)i, .how = BAD_NONE};
            m.out[i] = UNTOUCHED;
        }
        m.in[0].how = BAD_EXIT_REPORT; /* chunks are 2 items: 0 and 2 go to both workers */
        m.in[2].how = BAD_BLOCK;
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, map_bad, &m), 0);
        pid_t dead = 0;
        for (int k = 0; k < 2; k++) {
            pid_t pid = 0;
            assert_int_equal(tu_read_full(p.report[0], &pid, sizeof pid, BOUND_MS),
                             (ssize_t)sizeof pid);
            if (pid < 0)
                dead = -pid;
        }
        assert_true(dead > 0);
        /* until the crashed worker is a zombie or reaped (bounded) */
        int64_t end = tu_now_ms() + BOUND_MS;
        char st = 0;
        pid_t pp;
        while (tu_proc_state(dead, &st, &pp) == 0 && st != 'Z' && tu_now_ms() < end)
            sched_yield();
        hits = atomic_load(&g_shared->fast_hits);
        assert_int_equal(proc_pool_terminate(pool), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(m.rc, -ECHILD);
        assert_true(m.out[0] == UNTOUCHED);
        assert_true(m.out[2] == UNTOUCHED);
        for (int i = 1; i < 64; i++)
            assert_true(m.out[i] == UNTOUCHED || (i != 2 && m.out[i] == (uint64_t)i * 3 + 1));
        free_pool(pool);
    }
    assert_int_equal(hits, 2); /* both items ran in one fast job */
    pipes_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_worker_dies_mid_task, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_deaths, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_crash_then_terminate, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_shared, NULL);
}
