/* SPDX-License-Identifier: MIT */
/*
 * A pool whose workers come from the fork server (proc_pool_opts_t's
 * use_forkserver): the workers and every replacement (after max_tasks, after
 * a crash) are the server's clones, which the tests see in what a worker
 * reads: the program's memory as it was when main() started the server, not
 * as it is when the pool starts. A pool made while another thread holds a
 * lock gets workers that can take it; without a server the pool is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <libproc/pool.h>
#include <libproc/proc.h>

#include "testutil.h"

#define BOUND_MS 60000 /* bound on any hang; never reached when things work */
#define ITEMS 64

/* 1 when the server was started, 2 from then on: a worker made by the server reads 1. */
static int g_epoch;
/* Locked by a thread after the server started; unlocked in the server's memory. */
static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static int g_from_init; /* the initializer's mark, in each worker */
static int g_calls;     /* look()s this process ran: 0 in the server, so in every worker it makes */
static const int g_initarg = 41;

struct seen {
    int item; /* the input, so that a result in the wrong place shows */
    int epoch;
    int pid;
    int ppid;
    int from_init;
    int calls; /* g_calls after this one */
};

static int look(const void *in, void *out)
{
    struct seen s = {0, g_epoch, (int)getpid(), (int)getppid(), g_from_init, ++g_calls};
    memcpy(&s.item, in, sizeof s.item);
    memcpy(out, &s, sizeof s);
    return 0;
}

static int crash_on_zero(const void *in, void *out)
{
    int v;
    memcpy(&v, in, sizeof v);
    if (v == 0)
        raise(SIGKILL);
    return look(in, out);
}

static void init_mark(void *arg)
{
    g_from_init = *(const int *)arg + 1;
}

static void init_lock(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_mutex); /* held in the caller, free in the server's copy */
    g_from_init = 7;
    pthread_mutex_unlock(&g_mutex);
}

static proc_pool_t *served_pool(int workers, int max_tasks, void (*init)(void *))
{
    proc_pool_opts_t o = {.workers = workers,
                          .max_tasks_per_child = max_tasks,
                          .initializer = init,
                          .initarg = (void *)&g_initarg,
                          .use_forkserver = true};
    proc_pool_t *pool = proc_pool_new(&o);
    assert_non_null(pool);
    return pool;
}

/* Every item of a map over ITEMS inputs 1..ITEMS ran in a server-made worker:
 * the number of distinct workers, and in *most the most items one of them ran. */
static int map_and_check(proc_pool_t *pool, proc_task_fn *fn, int from_init, int *most)
{
    int in[ITEMS];
    struct seen out[ITEMS];
    for (int i = 0; i < ITEMS; i++)
        in[i] = i + 1;
    assert_int_equal(proc_pool_map(pool, fn, in, sizeof in[0], out, sizeof out[0], ITEMS), 0);
    int distinct = 0;
    *most = 0;
    for (int i = 0; i < ITEMS; i++) {
        assert_int_equal(out[i].item, in[i]);
        if (out[i].calls > *most)
            *most = out[i].calls;
        assert_int_equal(out[i].epoch, 1);
        assert_int_equal(out[i].ppid, (int)getpid()); /* the caller's child, not the server's */
        assert_int_equal(out[i].from_init, from_init);
        bool fresh = true;
        for (int j = 0; j < i && fresh; j++)
            fresh = out[j].pid != out[i].pid;
        distinct += fresh;
    }
    return distinct;
}

/* map_and_check on a pool of two workers: at most two ran the map, so one of them ran at least
 * half of it. */
static void map_on_two_workers(proc_pool_t *pool, proc_task_fn *fn, int from_init)
{
    int most;
    assert_true(map_and_check(pool, fn, from_init, &most) <= 2);
    assert_true(most >= ITEMS / 2);
}

static void test_workers_come_from_the_server(void **state)
{
    (void)state;
    proc_pool_t *pool = served_pool(2, 0, init_mark);
    map_on_two_workers(pool, look, g_initarg + 1);
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_int_equal(proc_pool_free(pool), 0);
}

/*
 * max_tasks_per_child 1: each item in a new worker (one that ran no other),
 * all of them the server's. Counted in each process, not by distinct pids:
 * Linux can give a new worker the pid of one that has just ended (seen on
 * 6.18 under load: the same pid 10 ms later, in a process with a later start
 * time, though the pids between had not wrapped).
 */
static void test_replacements_come_from_the_server(void **state)
{
    (void)state;
    proc_pool_t *pool = served_pool(2, 1, NULL);
    int most;
    map_and_check(pool, look, 0, &most);
    assert_int_equal(most, 1);
    assert_int_equal(proc_pool_free(pool), 0);
}

/* A worker killed mid-task fails that task only; its replacement is the server's. */
static void test_crash_replacement(void **state)
{
    (void)state;
    proc_pool_t *pool = served_pool(2, 0, NULL);
    int zero = 0;
    struct seen s;
    assert_int_equal(proc_pool_apply(pool, crash_on_zero, &zero, sizeof zero, &s, sizeof s),
                     -ECHILD);
    map_on_two_workers(pool, crash_on_zero, 0); /* it crashes none; one worker is a replacement */
    assert_int_equal(proc_pool_free(pool), 0);
}

/* Holds g_mutex from the byte it writes to fds[1] until EOF on fds[2]. */
static void *hold_mutex(void *arg)
{
    const int *fds = arg;
    char c = 1;
    pthread_mutex_lock(&g_mutex);
    if (write(fds[1], &c, 1) == 1)
        tu_read_full(fds[2], &c, 1, BOUND_MS);
    pthread_mutex_unlock(&g_mutex);
    return NULL;
}

/* The fork hazard the server removes: a lock another thread holds at the pool's start. */
static void test_lock_held_by_a_thread(void **state)
{
    (void)state;
    int held[2], release[2];
    assert_int_equal(tu_pipe(held), 0);
    assert_int_equal(tu_pipe(release), 0);
    int fds[3] = {held[0], held[1], release[0]};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_mutex, fds), 0);
    char c;
    assert_int_equal(tu_read_full(held[0], &c, 1, BOUND_MS), 1); /* the mutex is held */
    proc_pool_t *pool = served_pool(2, 0, init_lock);
    int one = 1;
    struct seen s;
    proc_future_t *f = proc_pool_submit(pool, look, &one, sizeof one, sizeof s);
    assert_non_null(f);
    assert_int_equal(proc_future_get(f, &s, sizeof s, BOUND_MS), 0);
    proc_future_free(f);
    assert_int_equal(s.epoch, 1);
    assert_int_equal(s.from_init, 7);
    assert_int_equal(pthread_mutex_trylock(&g_mutex), EBUSY); /* still held meanwhile */
    assert_int_equal(proc_pool_terminate(pool), 0);
    assert_int_equal(proc_pool_free(pool), 0);
    close(release[1]); /* the holder lets go */
    assert_int_equal(pthread_join(t, NULL), 0);
    close(held[0]);
    close(held[1]);
    close(release[0]);
}

/* A forked child has no server: its pool with use_forkserver is refused. */
static int pool_without_server(void *arg)
{
    (void)arg;
    proc_pool_opts_t o = {.workers = 1, .use_forkserver = true};
    proc_pool_t *pool = proc_pool_new(&o);
    if (pool) {
        proc_pool_free(pool);
        return 1;
    }
    return errno == ENOTCONN ? 0 : 2;
}

static void test_refused_without_server(void **state)
{
    (void)state;
    proc_t *p = proc_new(pool_without_server, NULL);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_close(p), 0);
}

int main(void)
{
    g_epoch = 1;
    int r = proc_forkserver_start(); /* first: no thread exists yet */
    if (r != 0) {
        fprintf(stderr, "proc_forkserver_start: %s\n", strerror(-r));
        return 1;
    }
    g_epoch = 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_come_from_the_server),
        cmocka_unit_test(test_replacements_come_from_the_server),
        cmocka_unit_test(test_crash_replacement),
        cmocka_unit_test(test_lock_held_by_a_thread),
        cmocka_unit_test(test_refused_without_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
