/* SPDX-License-Identifier: MIT */
/*
 * Stress under load (issue 3): many children in sequence, a thousand children
 * exiting in the same instant, many threads starting and joining at once,
 * many threads joining one process.
 *
 * Every scenario ends with no child of this process left (live or zombie,
 * read from /proc) and with as many open fds as before it.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <libproc/proc.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "stress_util.h"

#define SEQ_CHILDREN ST_SIZE(10000, 3000)
#define BURST_CHILDREN 1000
#define THREADS 8
#define PER_THREAD ST_SIZE(500, 200)
#define JOINERS 16
#define JOIN_ROUNDS ST_SIZE(100, 40)

/* Generous bound for a burst of exits to be reaped (measured: well under 1 s). */
#define BURST_BOUND_MS 30000

static int fds_at_start;

/* Warms libproc up (reaper thread, its fds) so that fd counts compare like with like. */
static void warm_up(void)
{
    proc_t *p = proc_new(NULL, NULL);
    assert_non_null(p);
    EQ(proc_start(p), 0);
    EQ(proc_join(p, 10000), 0);
    EQ(proc_close(p), 0);
}

static int setup(void **state)
{
    (void)state;
    warm_up();
    fds_at_start = tu_count_fds();
    return 0;
}

/* After every test: no child left, no fd gained. */
static int teardown(void **state)
{
    (void)state;
    return check_nothing_left(5000, fds_at_start);
}

/* ------------------------------------------------------- 10,000 in sequence */

static int exit_arg(void *arg)
{
    _exit((int)(intptr_t)arg);
}

static void test_sequential_children(void **state)
{
    (void)state;
    const int n = SEQ_CHILDREN;
    int64_t t0 = tu_now_ms();
    for (int i = 0; i < n; i++) {
        int code = i % 256;
        proc_t *p = proc_new(i % 2 ? exit_arg : return_code_main, (void *)(intptr_t)code);
        assert_non_null(p);
        int r = proc_start(p);
        if (r != 0)
            fail_msg("child %d: proc_start = %d (%s)", i, r, strerror(-r));
        r = proc_join(p, 30000);
        if (r != 0)
            fail_msg("child %d (pid %d): proc_join = %d", i, (int)proc_pid(p), r);
        if (proc_exitcode(p) != code)
            fail_msg("child %d: exit code %d, expected %d", i, proc_exitcode(p), code);
        if (proc_is_alive(p))
            fail_msg("child %d alive after join", i);
        EQ(proc_close(p), 0);
    }
    int64_t took = tu_now_ms() - t0;
    EQ(tu_count_zombies(), 0);
    EQ(tu_count_children(NULL), 0);
    EQ(tu_count_fds(), fds_at_start);
    print_message("%d children started and joined in sequence in %lld ms (%.1f us each)\n", n,
                  (long long)took, took * 1000.0 / n);
}

/* -------------------------------------------------------- 1,000 at once */

static tu_gate burst_gate;
static int burst_ready_w = -1; /* each child writes one byte once it waits at the gate */

/* Blocks at the gate, then exits with its code. Anything else gives a wrong code. */
static int burst_child(void *arg)
{
    int code = (int)(intptr_t)arg;
    alarm(ST_CHILD_ALARM_S);
    st_child_signals_default(); /* signals sent by the test must kill, not run handlers */
    char c = 'r';
    if (tu_write_full(burst_ready_w, &c, 1) != 0)
        return (code + 1) & 0xff;
    if (tu_gate_wait(&burst_gate, ST_CHILD_ALARM_S * 1000) != 0)
        return (code + 2) & 0xff;
    return code;
}

/* Signals whose default action ends a process (term or core), all distinct. */
static int fatal_signal(int k)
{
    static const int sigs[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGILL,  SIGTRAP,   SIGABRT,
                               SIGBUS,  SIGFPE,  SIGKILL, SIGUSR1, SIGSEGV,   SIGUSR2,
                               SIGPIPE, SIGALRM, SIGTERM, SIGXCPU, SIGXFSZ,   SIGVTALRM,
                               SIGPROF, SIGIO,   SIGPWR,  SIGSYS,  SIGSTKFLT, 0};
    const int nsigs = (int)(sizeof sigs / sizeof sigs[0]) - 1;
    const int nrt = 6;
    k %= nsigs + nrt;
    if (k < nsigs)
        return sigs[k];
    return SIGRTMIN + (k - nsigs) * (SIGRTMAX - SIGRTMIN) / (nrt - 1);
}

static void burst(bool with_signals)
{
    const int n = BURST_CHILDREN;
    st_raise_limits();
    proc_t **ps = calloc((size_t)n, sizeof *ps);
    int *expect = calloc((size_t)n, sizeof *expect);
    assert_non_null(ps);
    assert_non_null(expect);
    int ready[2];
    EQ(tu_pipe(ready), 0);
    burst_ready_w = ready[1];
    EQ(tu_gate_init(&burst_gate), 0);

    int64_t t_start = tu_now_ms();
    for (int i = 0; i < n; i++) {
        expect[i] = (i * 7 + 3) % 256;
        ps[i] = proc_new(burst_child, (void *)(intptr_t)expect[i]);
        assert_non_null(ps[i]);
        int r = proc_start(ps[i]);
        if (r != 0)
            fail_msg("child %d of %d: proc_start = %d (%s)", i, n, r, strerror(-r));
    }
    close(ready[1]);
    burst_ready_w = -1;
    /* every child is live and blocked at the gate (or about to be) */
    for (int i = 0; i < n; i++) {
        char c;
        if (tu_read_full(ready[0], &c, 1, 60000) != 1)
            fail_msg("only %d of %d children reported ready", i, n);
    }
    int64_t t_ready = tu_now_ms();
    EQ(proc_active_children(NULL, 0), (size_t)n);

    int signalled = 0;
    if (with_signals) {
        for (int i = 0; i < n; i += 3) {
            int sig = fatal_signal(i / 3);
            EQ(proc_signal(ps[i], sig), 0);
            expect[i] = -sig;
            signalled++;
        }
    }
    int64_t t0 = tu_now_ms();
    tu_gate_open(&burst_gate); /* every remaining child exits now */

    int64_t deadline = t0 + BURST_BOUND_MS;
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        int64_t left = deadline - tu_now_ms();
        int r = proc_join(ps[i], left > 0 ? (int)left : 0);
        if (r != 0)
            fail_msg("child %d (pid %d) not reaped %d ms after the release: join = %d", i,
                     (int)proc_pid(ps[i]), BURST_BOUND_MS, r);
        if (proc_exitcode(ps[i]) != expect[i]) {
            if (wrong++ < 10)
                print_error("child %d: exit code %d, expected %d\n", i, proc_exitcode(ps[i]),
                            expect[i]);
        }
    }
    int64_t took = tu_now_ms() - t0;
    EQ(wrong, 0);
    EQ(proc_active_children(NULL, 0), 0);
    EQ(tu_count_zombies(), 0);
    for (int i = 0; i < n; i++)
        EQ(proc_close(ps[i]), 0);
    tu_gate_destroy(&burst_gate);
    close(ready[0]);
    free(ps);
    free(expect);
    print_message("%d children (%d of them killed by signals) started in %lld ms, all reaped "
                  "%lld ms after the release\n",
                  n, signalled, (long long)(t_ready - t_start), (long long)took);
}

TEST_CASE(test_burst_release, burst, false)

TEST_CASE(test_burst_release_with_signals, burst, true)

/* ----------------------------------------------- 8 threads x 500 at once */

struct worker {
    int index;
    pthread_barrier_t *barrier;
    int errors;
    char first_error[200];
    int callbacks_expected;
};

static _Atomic int callbacks_run;

static void count_callback(proc_t *p, void *arg)
{
    (void)p;
    atomic_fetch_add(&callbacks_run, 1);
    atomic_fetch_add((_Atomic int *)arg, 1);
}

static void worker_error(struct worker *w, int i, const char *what, int value)
{
    if (w->errors++ == 0)
        snprintf(w->first_error, sizeof w->first_error, "thread %d, child %d: %s (%d)", w->index, i,
                 what, value);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(w->barrier);
    for (int i = 0; i < PER_THREAD; i++) {
        int code = (w->index * 31 + i) % 256;
        proc_t *p;
        _Atomic int ran = 0;
        if (i % 10 == 9) {
            const char *argv[] = {"false", NULL}; /* exec mode through PATH: exit 1 */
            p = proc_new_exec(argv);
            code = 1;
        } else {
            p = proc_new(i % 2 ? exit_arg : return_code_main, (void *)(intptr_t)code);
        }
        if (!p) {
            worker_error(w, i, "proc_new failed", errno);
            continue;
        }
        bool with_cb = i % 5 == 0;
        if (with_cb && proc_on_exit(p, count_callback, (void *)&ran) != 0)
            worker_error(w, i, "proc_on_exit failed", 0);
        int r = proc_start(p);
        if (r != 0) {
            worker_error(w, i, "proc_start failed", r);
            proc_close(p);
            continue;
        }
        r = proc_join(p, 30000);
        if (r != 0)
            worker_error(w, i, "proc_join failed", r);
        else if (proc_exitcode(p) != code)
            worker_error(w, i, "wrong exit code", proc_exitcode(p));
        else if (with_cb && atomic_load(&ran) != 1)
            worker_error(w, i, "exit callback count at join", atomic_load(&ran));
        if (proc_is_alive(p))
            worker_error(w, i, "alive after join", 1);
        r = proc_close(p);
        if (r != 0)
            worker_error(w, i, "proc_close failed", r);
        if (with_cb)
            w->callbacks_expected++;
    }
    return NULL;
}

static void test_threads_start_join_close(void **state)
{
    (void)state;
    st_raise_limits();
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    struct worker w[THREADS];
    pthread_t tid[THREADS];
    atomic_store(&callbacks_run, 0);
    int64_t t0 = tu_now_ms();
    for (int t = 0; t < THREADS; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].index = t;
        w[t].barrier = &barrier;
        EQ(pthread_create(&tid[t], NULL, worker_main, &w[t]), 0);
    }
    int errors = 0, cbs = 0;
    for (int t = 0; t < THREADS; t++) {
        EQ(pthread_join(tid[t], NULL), 0);
        if (w[t].errors)
            print_error("%d error(s), first: %s\n", w[t].errors, w[t].first_error);
        errors += w[t].errors;
        cbs += w[t].callbacks_expected;
    }
    pthread_barrier_destroy(&barrier);
    int64_t took = tu_now_ms() - t0;
    EQ(errors, 0);
    EQ(atomic_load(&callbacks_run), cbs);
    EQ(tu_count_zombies(), 0);
    print_message("%d threads x %d start/join/close in %lld ms\n", THREADS, PER_THREAD,
                  (long long)took);
}

/* --------------------------------------------- 16 threads join one process */

struct joiner {
    proc_t *p;
    pthread_barrier_t *barrier;
    int kind; /* 0: join forever; 1: join with short timeouts until it ends; 2: mixed */
    int result;
    int exitcode;
    bool alive_after;
    long timeouts;
};

static void *joiner_main(void *arg)
{
    struct joiner *j = arg;
    pthread_barrier_wait(j->barrier);
    int64_t deadline = tu_now_ms() + 60000;
    int r;
    switch (j->kind) {
    case 0:
        r = proc_join(j->p, PROC_WAIT_FOREVER);
        break;
    default:
        for (int k = 0;; k++) {
            int t = j->kind == 1 ? k % 3 : (k % 2 ? 0 : 7);
            r = proc_join(j->p, t);
            if (r != -ETIMEDOUT || tu_now_ms() > deadline)
                break;
            j->timeouts++;
        }
        break;
    }
    j->result = r;
    j->exitcode = proc_exitcode(j->p);
    j->alive_after = proc_is_alive(j->p);
    return NULL;
}

static tu_gate join_gate;

static int gated_child(void *arg)
{
    alarm(ST_CHILD_ALARM_S);
    if (tu_gate_wait(&join_gate, ST_CHILD_ALARM_S * 1000) != 0)
        return 255;
    return (int)(intptr_t)arg;
}

static void noop_callback(proc_t *p, void *arg)
{
    (void)p;
    (void)arg;
}

static void test_many_threads_join_one(void **state)
{
    (void)state;
    long timeouts = 0;
    for (int round = 0; round < JOIN_ROUNDS; round++) {
        int code = (round * 13 + 5) % 256;
        EQ(tu_gate_init(&join_gate), 0);
        proc_t *p = proc_new(gated_child, (void *)(intptr_t)code);
        assert_non_null(p);
        if (round % 2) /* the exit-callback path wakes joiners differently */
            EQ(proc_on_exit(p, noop_callback, NULL), 0);
        EQ(proc_start(p), 0);

        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, JOINERS + 1);
        struct joiner j[JOINERS];
        pthread_t tid[JOINERS];
        for (int t = 0; t < JOINERS; t++) {
            j[t] = (struct joiner){.p = p, .barrier = &barrier, .kind = t % 3, .result = 1};
            EQ(pthread_create(&tid[t], NULL, joiner_main, &j[t]), 0);
        }
        pthread_barrier_wait(&barrier);
        EQ(proc_join(p, 0), -ETIMEDOUT);
        tu_gate_open(&join_gate);
        for (int t = 0; t < JOINERS; t++) {
            EQ(pthread_join(tid[t], NULL), 0);
            if (j[t].result != 0)
                fail_msg("round %d, joiner %d (kind %d): proc_join = %d", round, t, j[t].kind,
                         j[t].result);
            EQ(j[t].exitcode, code);
            assert_false(j[t].alive_after);
            timeouts += j[t].timeouts;
        }
        pthread_barrier_destroy(&barrier);
        EQ(proc_join(p, 0), 0);
        EQ(proc_close(p), 0);
        tu_gate_destroy(&join_gate);
    }
    print_message("%d rounds of %d threads joining one process (%ld timed-out joins "
                  "before the ends)\n",
                  JOIN_ROUNDS, JOINERS, timeouts);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct rlimit core = {0, 0}; /* children killed by core-dumping signals write nothing */
    setrlimit(RLIMIT_CORE, &core);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sequential_children, teardown),
        cmocka_unit_test_teardown(test_burst_release, teardown),
        cmocka_unit_test_teardown(test_burst_release_with_signals, teardown),
        cmocka_unit_test_teardown(test_threads_start_join_close, teardown),
        cmocka_unit_test_teardown(test_many_threads_join_one, teardown),
    };
    return cmocka_run_group_tests_name("stress_load", tests, setup, NULL);
}
