/* SPDX-License-Identifier: MIT */
/*
 * Ending children and what they leave behind (API 4.1): proc_stop()'s steps
 * (a child that ignores SIGTERM, a group with a grandchild, one already
 * ended whose group lingers, a sequence that runs out), proc_wait_any() over
 * 2,000 children, proc_rusage() from the reap itself (CPU time, max RSS, in
 * an exit callback), what a sibling's copy of an object gets, and every
 * error row; then all of it again on the paths without pidfds.
 *
 * Children never call cmocka: they report through pipes and exit codes and
 * the parent asserts. Timeouts only bound hangs.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "testcheck.h"
#include "testutil.h"

#define BOUND_MS 60000 /* bound on any hang; never reached when things work */

/* proc_wait_any's children: 2,000; under ThreadSanitizer, whose forks and exits cost
 * many times more, 500 (the whole program runs twice: also without pidfds). */
#ifdef TU_TSAN
#define WAIT_ANY_CHILDREN 500
#else
#define WAIT_ANY_CHILDREN 2000
#endif

static long long tv_us(struct timeval tv)
{
    return (long long)tv.tv_sec * 1000000 + tv.tv_usec;
}

static long long thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Burns at least 200 ms of CPU time (its own clock, not the wall clock). */
static int burn_cpu(void *arg)
{
    (void)arg;
    volatile unsigned long x = 0;
    long long end = thread_cpu_us() + 200000;
    while (thread_cpu_us() < end)
        for (int i = 0; i < 100000; i++)
            x += (unsigned long)i;
    (void)x; /* the sum is only work to do */
    return 0;
}

#define TOUCH_BYTES ((size_t)100 << 20)

/* Touches every page of 100 MiB, so that its max RSS is at least that. */
static int touch_memory(void *arg)
{
    (void)arg;
    unsigned char *m = malloc(TOUCH_BYTES);
    if (!m)
        return 1;
    long page = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < TOUCH_BYTES; i += (size_t)page)
        m[i] = 1;
    return m[TOUCH_BYTES - 1] == 0 ? 0 : 2;
}

static int burn_nothing(void *arg)
{
    (void)arg;
    return 0;
}

static proc_t *run_to_end(proc_target_fn *target)
{
    proc_t *p = proc_new(target, NULL);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0);
    return p;
}

static void test_rusage_counts_cpu_time(void **state)
{
    (void)state;
    proc_t *p = run_to_end(burn_cpu);
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    assert_int_equal(proc_rusage(p, &ru), 0);
    assert_true(tv_us(ru.ru_utime) + tv_us(ru.ru_stime) >= 200000);
    assert_int_equal(proc_close(p), 0);
}

static void test_rusage_counts_max_rss(void **state)
{
    (void)state;
    proc_t *p = run_to_end(touch_memory);
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    assert_int_equal(proc_rusage(p, &ru), 0);
    assert_true(ru.ru_maxrss >= (long)(TOUCH_BYTES / 1024)); /* KiB */
    assert_int_equal(proc_close(p), 0);
}

static void test_rusage_of_an_exec_child(void **state)
{
    (void)state;
    const char *argv[] = {"true", NULL};
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    struct rusage ru;
    assert_int_equal(proc_rusage(p, &ru), 0);
    assert_true(ru.ru_maxrss > 0);
    assert_int_equal(proc_close(p), 0);
}

struct rusage_seen {
    int r;
    struct rusage ru;
};

static void note_rusage(proc_t *p, void *arg)
{
    struct rusage_seen *seen = arg;
    seen->r = proc_rusage(p, &seen->ru);
}

/* Exit callbacks run once the child was reaped (by the reaper thread, or by a joiner): its
 * usage is there for them. */
static void test_rusage_in_an_exit_callback(void **state)
{
    (void)state;
    struct rusage_seen seen = {.r = -1};
    proc_t *p = proc_new(burn_cpu, NULL);
    assert_non_null(p);
    assert_int_equal(proc_on_exit(p, note_rusage, &seen), 0);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(seen.r, 0);
    assert_true(tv_us(seen.ru.ru_utime) + tv_us(seen.ru.ru_stime) >= 200000);
    assert_int_equal(proc_close(p), 0);
}

static void test_rusage_errors(void **state)
{
    (void)state;
    struct rusage ru;
    tu_gate gate;
    assert_int_equal(tu_gate_init(&gate), 0);
    proc_t *p = proc_new(tu_gate_main, &gate);
    assert_non_null(p);
    assert_int_equal(proc_rusage(NULL, &ru), -EINVAL);
    assert_int_equal(proc_rusage(p, NULL), -EINVAL);
    assert_int_equal(proc_rusage(p, &ru), -EAGAIN); /* not started */
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_rusage(p, &ru), -EAGAIN); /* running */
    tu_gate_open(&gate);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(proc_rusage(p, &ru), 0);
    assert_int_equal(proc_rusage(proc_current(), &ru), -EINVAL); /* not a child */
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&gate);
}

/* Ignores SIGTERM, says so on the pipe (arg: its write end), then waits to be killed. */
static int ignore_term(void *arg)
{
    signal(SIGTERM, SIG_IGN);
    if (tu_write_full(*(int *)arg, "r", 1) < 0)
        return 1;
    for (;;)
        pause();
}

/* Starts fn(&fds[1]) (in a group of its own when asked) and waits for its first byte on fds. */
static proc_t *start_and_hear(proc_target_fn *fn, int fds[2], bool group)
{
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = proc_new(fn, &fds[1]);
    assert_non_null(p);
    assert_int_equal(proc_set_new_group(p, group), 0);
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);
    fds[1] = -1;
    char c;
    assert_int_equal(tu_read_full(fds[0], &c, 1, BOUND_MS), 1);
    return p;
}

static void test_stop_escalates_past_an_ignored_sigterm(void **state)
{
    (void)state;
    int fds[2];
    proc_t *p = start_and_hear(ignore_term, fds, false);
    const proc_stop_step_t steps[] = {{SIGTERM, 100}, {SIGKILL, BOUND_MS}};
    assert_int_equal(proc_stop(p, steps, 2), 0);
    assert_int_equal(proc_exitcode(p), -SIGKILL);
    assert_int_equal(proc_close(p), 0);
    close(fds[0]);
}

/* Leads its group: forks a grandchild that holds the pipe's write end (arg) and waits. */
static int group_with_grandchild(void *arg)
{
    int wr = *(int *)arg;
    pid_t g = fork();
    if (g < 0)
        return 1;
    if (g == 0) {
        (void)tu_write_full(wr, "g", 1);
        for (;;)
            pause();
    }
    for (;;)
        pause();
}

static void test_stop_reaches_the_whole_group(void **state)
{
    (void)state;
    int fds[2];
    proc_t *p = start_and_hear(group_with_grandchild, fds, true); /* the grandchild runs */
    assert_int_equal(proc_stop(p, NULL, 0), 0);
    assert_int_equal(proc_exitcode(p), -SIGTERM);
    /* EOF: the grandchild, the last holder of the write end, is gone too. */
    char c;
    assert_int_equal(tu_read_to_eof(fds[0], &c, 1, BOUND_MS), 0);
    assert_int_equal(proc_close(p), 0);
    close(fds[0]);
}

/* The pipes between the test and the grandchild a group leader leaves behind. */
struct lingerer {
    int ready[2]; /* the leader hears that the grandchild is set up */
    int ping[2];  /* the test closes ping[1]: the grandchild answers, then leaves */
    int pong[2];  /* the grandchild's answer: its pid and the signals it got */
};

static volatile sig_atomic_t lingerer_got; /* bit per signal received */

static void lingerer_note(int sig)
{
    lingerer_got |= 1 << (sig & 31);
}

static void lingerer_main(struct lingerer *l)
{
    alarm(60); /* bound on a hang of the test */
    close(l->ready[0]);
    close(l->ping[1]);
    close(l->pong[0]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lingerer_note;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGUSR1, &sa, NULL) != 0)
        _exit(2);
    if (tu_write_full(l->ready[1], "r", 1) != 0)
        _exit(3);
    char c;
    while (tu_read_full(l->ping[0], &c, 1, -1) > 0)
        ;
    int answer[2] = {(int)getpid(), lingerer_got};
    _exit(tu_write_full(l->pong[1], answer, sizeof answer) == 0 ? 0 : 4);
}

/* Leads its group: leaves a grandchild in it, set up to note signals, and exits 0. */
static int leave_a_lingerer(void *arg)
{
    struct lingerer *l = arg;
    pid_t g = fork();
    if (g == 0)
        lingerer_main(l);
    close(l->ready[1]);
    char c;
    return g > 0 && tu_read_full(l->ready[0], &c, 1, BOUND_MS) == 1 ? 0 : 1;
}

static void test_stop_of_an_ended_child_sends_nothing(void **state)
{
    (void)state;
    subreaper(true); /* the orphaned grandchild comes to this process to be reaped */
    struct lingerer l;
    assert_int_equal(tu_pipe(l.ready), 0);
    assert_int_equal(tu_pipe(l.ping), 0);
    assert_int_equal(tu_pipe(l.pong), 0);
    proc_t *p = proc_new(leave_a_lingerer, &l);
    assert_non_null(p);
    assert_int_equal(proc_set_new_group(p, true), 0);
    assert_int_equal(proc_start(p), 0);
    close(l.ready[0]);
    close(l.ready[1]);
    close(l.ping[0]);
    close(l.pong[1]);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0);
    /* The group lives on in the grandchild: nothing may reach it. */
    const proc_stop_step_t steps[] = {{SIGTERM, 0}, {SIGUSR1, 0}};
    assert_int_equal(proc_stop(p, steps, 2), 0);
    assert_int_equal(proc_stop(p, NULL, 0), 0);
    assert_int_equal(proc_exitcode(p), 0); /* what it exited with, not a signal */
    close(l.ping[1]);
    int answer[2];
    assert_int_equal(tu_read_full(l.pong[0], answer, sizeof answer, BOUND_MS), sizeof answer);
    assert_int_equal(answer[1], 0); /* no signal came */
    int st;
    assert_int_equal(tu_waitpid(answer[0], &st), answer[0]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(l.pong[0]);
    assert_int_equal(proc_close(p), 0);
    subreaper(false);
}

static void test_stop_runs_out_of_steps(void **state)
{
    (void)state;
    tu_gate gate;
    proc_t *p = start_gated_child(&gate);
    const proc_stop_step_t wait_only[] = {{0, 0}, {0, 20}};
    assert_int_equal(proc_stop(p, wait_only, 2), -ETIMEDOUT);
    assert_true(proc_is_alive(p));
    tu_gate_open(&gate);
    const proc_stop_step_t wait_long[] = {{0, BOUND_MS}};
    assert_int_equal(proc_stop(p, wait_long, 1), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&gate);
}

static void test_stop_errors(void **state)
{
    (void)state;
    const proc_stop_step_t ok[] = {{SIGTERM, 10}};
    const proc_stop_step_t bad_sig[] = {{-1, 10}};
    const proc_stop_step_t big_sig[] = {{NSIG, 10}};
    const proc_stop_step_t bad_timeout[] = {{SIGTERM, -2}};
    assert_int_equal(proc_stop(NULL, NULL, 0), -EINVAL);
    proc_t *p = proc_new(NULL, NULL);
    assert_non_null(p);
    assert_int_equal(proc_stop(p, NULL, 0), -EINVAL); /* not started */
    assert_int_equal(proc_stop(p, ok, 1), -EINVAL);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_stop(p, ok, 0), -EINVAL); /* n == 0 with steps */
    assert_int_equal(proc_stop(p, bad_sig, 1), -EINVAL);
    assert_int_equal(proc_stop(p, big_sig, 1), -EINVAL);
    assert_int_equal(proc_stop(p, bad_timeout, 1), -EINVAL);
    assert_int_equal(proc_stop(proc_current(), NULL, 0), -EINVAL);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(proc_close(p), 0);
}

/* Waits until a signal ends it. */
static int wait_forever(void *arg)
{
    (void)arg;
    while (pause() < 0)
        ;
    return 0;
}

/* Room for n more children's fds (a pidfd or a sentinel pipe each); how many fit. */
static size_t children_that_fit(size_t n)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t want = (rlim_t)(2 * n + 64);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    size_t fit = rl.rlim_cur >= want ? n : (size_t)(rl.rlim_cur - 64) / 2;
    if (fit < n)
        printf("# RLIMIT_NOFILE allows %zu children, not %zu\n", fit, n);
    return fit;
}

/* 2,000 children killed in random order: each comes back exactly once. */
static void test_wait_any_returns_each_child_once(void **state)
{
    (void)state;
    size_t n = children_that_fit(WAIT_ANY_CHILDREN);
    proc_t **live = calloc(n, sizeof *live), **order = calloc(n, sizeof *order);
    assert_non_null(live);
    assert_non_null(order);
    for (size_t i = 0; i < n; i++) {
        live[i] = proc_new(wait_forever, NULL);
        assert_non_null(live[i]);
        assert_int_equal(proc_start(live[i]), 0);
        order[i] = live[i];
    }
    srand(12345);
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = (size_t)rand() % (i + 1);
        proc_t *t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(proc_kill(order[i]), 0);
    size_t left = n;
    while (left > 0) {
        int i = proc_wait_any(live, left, BOUND_MS);
        assert_true(i >= 0 && (size_t)i < left);
        assert_int_equal(proc_join(live[i], 0), 0);
        assert_int_equal(proc_exitcode(live[i]), -SIGKILL);
        assert_int_equal(proc_close(live[i]), 0); /* a second return would touch freed memory */
        live[i] = live[--left];
    }
    free(live);
    free(order);
}

static void test_wait_any_gives_the_lowest_ended_index(void **state)
{
    (void)state;
    tu_gate gate;
    assert_int_equal(tu_gate_init(&gate), 0);
    proc_t *p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = proc_new(i == 0 ? tu_gate_main : burn_nothing, &gate);
        assert_non_null(p[i]);
        assert_int_equal(proc_start(p[i]), 0);
    }
    assert_int_equal(proc_join(p[2], BOUND_MS), 0); /* already joined counts too */
    assert_int_equal(proc_join(p[1], BOUND_MS), 0);
    assert_int_equal(proc_wait_any(p, 3, BOUND_MS), 1);
    assert_int_equal(proc_wait_any(p + 2, 1, 0), 0);
    assert_int_equal(proc_wait_any(p, 1, 20), -ETIMEDOUT); /* p[0] waits for the gate */
    tu_gate_open(&gate);
    assert_int_equal(proc_wait_any(p, 1, BOUND_MS), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(proc_join(p[i], BOUND_MS), 0);
        assert_int_equal(proc_close(p[i]), 0);
    }
    tu_gate_destroy(&gate);
}

static void test_wait_any_errors(void **state)
{
    (void)state;
    proc_t *started = proc_new(NULL, NULL), *fresh = proc_new(NULL, NULL);
    assert_non_null(started);
    assert_non_null(fresh);
    assert_int_equal(proc_start(started), 0);
    proc_t *one[1] = {started}, *with_null[2] = {started, NULL}, *unstarted[2] = {started, fresh};
    assert_int_equal(proc_wait_any(NULL, 1, 0), -EINVAL);
    assert_int_equal(proc_wait_any(one, 0, 0), -EINVAL);
    assert_int_equal(proc_wait_any(with_null, 2, 0), -EINVAL);
    assert_int_equal(proc_wait_any(unstarted, 2, 0), -EINVAL);
    assert_int_equal(proc_wait_any(one, 1, -2), -EINVAL);
    proc_t *self[1] = {proc_current()};
    assert_int_equal(proc_wait_any(self, 1, 0), -EINVAL);
    assert_int_equal(proc_join(started, BOUND_MS), 0);
    assert_int_equal(proc_close(started), 0);
    assert_int_equal(proc_close(fresh), 0);
}

/* ------------------------------------------------ a sibling's copied object */

struct sibling {
    proc_t *other;
    int report_fd;
};

static int sibling_main(void *arg)
{
    struct sibling *s = arg;
    alarm(60);
    struct rusage ru;
    proc_t *procs[1] = {s->other};
    int report[4] = {proc_stop(s->other, NULL, 0), proc_wait_any(procs, 1, 0),
                     proc_rusage(s->other, &ru),
                     proc_communicate(s->other, NULL, 0, NULL, NULL, 0)};
    return tu_write_full(s->report_fd, report, sizeof report) == 0 ? 0 : 1;
}

/* A sibling inherits the object of a child that is not its own: it may not stop it, wait on
 * it, read its usage or talk to it. */
static void test_sibling_copy_gets_nothing(void **state)
{
    (void)state;
    tu_gate gate;
    proc_t *p = start_gated_child(&gate);
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    struct sibling sib = {p, fds[1]};
    proc_t *s = proc_new(sibling_main, &sib);
    assert_non_null(s);
    assert_int_equal(proc_start(s), 0);
    close(fds[1]);
    int report[4];
    assert_int_equal(tu_read_full(fds[0], report, sizeof report, BOUND_MS), sizeof report);
    close(fds[0]);
    assert_int_equal(proc_join(s, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(s), 0);
    assert_int_equal(report[0], -ECHILD); /* proc_stop */
    assert_int_equal(report[1], -EINVAL); /* proc_wait_any: not a started child of the caller */
    assert_int_equal(report[2], -ECHILD); /* proc_rusage */
    assert_int_equal(report[3], -ECHILD); /* proc_communicate */
    assert_true(proc_is_alive(p));        /* nothing reached it */
    tu_gate_open(&gate);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_close(p), 0);
    assert_int_equal(proc_close(s), 0);
    tu_gate_destroy(&gate);
}

TEST_ALL_AGAIN_WITHOUT_PIDFD("test_proc_end")

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_stop_escalates_past_an_ignored_sigterm),
        T(test_stop_reaches_the_whole_group),
        T(test_stop_of_an_ended_child_sends_nothing),
        T(test_stop_runs_out_of_steps),
        T(test_stop_errors),
        T(test_wait_any_returns_each_child_once),
        T(test_wait_any_gives_the_lowest_ended_index),
        T(test_wait_any_errors),
        T(test_rusage_counts_cpu_time),
        T(test_rusage_counts_max_rss),
        T(test_rusage_of_an_exec_child),
        T(test_rusage_in_an_exit_callback),
        T(test_rusage_errors),
        T(test_sibling_copy_gets_nothing),
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
