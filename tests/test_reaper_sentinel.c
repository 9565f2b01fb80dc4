/* SPDX-License-Identifier: MIT */
/*
 * The reaper area (src/reaper.c), reaping by itself: no zombie without a
 * join, "not alive" meaning joinable, sentinels (readable once joinable,
 * also after the exit callbacks ran) and exit callbacks with and without a
 * join.
 *
 * Children never wait on timers: a child that must stay alive blocks in
 * read() on a pipe whose write end the test holds. Every child also arms
 * alarm() as a safety net, so that a failing test cannot leave a process
 * behind for long. The whole program runs again on libproc's paths for
 * kernels without pidfds (test_all_again_without_pidfd).
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <sched.h>

#include <libproc/proc.h>

#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "reaper_fixture.h"
#include "testcheck.h"

/* ---------------------------------------------------- reaping and sentinel */

static void test_no_zombie_without_join(void **state)
{
    (void)state;
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)5);
    assert_non_null(p);
    EQ(proc_start(p), 0);
    pid_t pid = proc_pid(p);
    int fd = proc_sentinel(p);
    assert_true(fd >= 0);
    EQ(tu_poll_in(fd, 10000, NULL), 1);

    /* The child has ended. Nobody joins: the reaper alone must reap it. */
    int64_t deadline = tu_now_ms() + 3000;
    char st;
    while ((st = tu_child_state(pid)) != 0 && tu_now_ms() < deadline)
        sched_yield();
    if (st != 0)
        fail_msg("child %d still present in state '%c' 3 s after it ended", (int)pid, st);
    EQ(tu_count_zombies(), 0);

    /* is_alive is false by now: the reaper has reaped it */
    assert_false(proc_is_alive(p));
    EQ(proc_exitcode(p), 5);
    EQ(proc_join(p, 10000), 0);
    EQ(proc_close(p), 0);
}

/* Once proc_is_alive() is false the process has ended and been reaped, so
 * proc_join(p, 0) must not report it as still running (Python: after
 * is_alive() is False, join(0) returns at once and exitcode is set). */
static void test_not_alive_means_joinable(void **state)
{
    (void)state;
    int bad = 0, first_ret = 0, first_code = 0;
    for (int i = 0; i < 300; i++) {
        proc_t *p = proc_new(return_code_main, (void *)(intptr_t)(i & 0x7f));
        assert_non_null(p);
        EQ(proc_start(p), 0);
        int64_t deadline = tu_now_ms() + 5000;
        while (proc_is_alive(p) && tu_now_ms() < deadline)
            sched_yield();
        assert_false(proc_is_alive(p));
        int code = proc_exitcode(p);
        int r = proc_join(p, 0);
        if ((r != 0 || code != (i & 0x7f)) && bad++ == 0) {
            first_ret = r;
            first_code = code;
        }
        EQ(proc_join(p, 10000), 0);
        EQ(proc_close(p), 0);
    }
    if (bad)
        fail_msg("%d of 300 times proc_is_alive() was false but proc_join(p, 0) returned %d "
                 "(exitcode %d), expected 0",
                 bad, first_ret, first_code);
}

static void test_sentinel(void **state)
{
    (void)state;
    EQ(proc_sentinel(NULL), -EINVAL);
    int fds[2];
    struct blocker b = blocker_pipe(fds, 12);
    proc_t *p = start_blocker(&b);
    int fd = proc_sentinel(p);
    assert_true(fd >= 0);
    EQ(proc_sentinel(p), fd);

    short rev = 0;
    EQ(tu_poll_in(fd, 0, NULL), 0); /* running: not readable */
    EQ(tu_poll_in(fd, 20, NULL), 0);

    close_fd(&fds[1]);
    EQ(tu_poll_in(fd, 10000, &rev), 1);
    assert_true(rev & (POLLIN | POLLHUP));
    int64_t t0 = tu_now_ms();
    EQ(proc_join(p, PROC_WAIT_FOREVER), 0);
    int64_t took = tu_now_ms() - t0;
    if (took > 1000)
        fail_msg("proc_join took %lld ms after the sentinel became readable", (long long)took);
    EQ(proc_exitcode(p), 12);
    EQ(tu_poll_in(fd, 0, NULL), 1); /* stays readable */
    EQ(proc_close(p), 0);
    close_fd(&fds[0]);
}

/* An exit callback that says it runs, then blocks until its gate opens. */
struct held_cb {
    int started_w;
    int gate_r;
};

/* The open gate of a held callback, for a teardown after a failed check. */
static int held_gate_w = -1;

static int release_held_callback(void **state)
{
    if (held_gate_w >= 0) {
        (void)tu_write_full(held_gate_w, "g", 1);
        close(held_gate_w);
        held_gate_w = -1;
    }
    return no_children_left(state);
}

static void held_callback(proc_t *p, void *arg)
{
    (void)p;
    const struct held_cb *h = arg;
    char c;
    (void)tu_write_full(h->started_w, "s", 1);
    (void)tu_read_full(h->gate_r, &c, 1, 30000);
}

/* With exit callbacks, the sentinel turns readable when they have returned:
 * not at the exit (the callback holds the child reaped but not joinable). */
static void test_sentinel_waits_for_callbacks(void **state)
{
    (void)state;
    int started[2], gate[2];
    make_pipe(started);
    make_pipe(gate);
    struct held_cb h = {started[1], gate[0]};
    held_gate_w = gate[1];
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)5);
    assert_non_null(p);
    EQ(proc_on_exit(p, held_callback, &h), 0);
    EQ(proc_start(p), 0);
    int fd = proc_sentinel(p);
    assert_true(fd >= 0);
    char c;
    EQ(tu_read_full(started[0], &c, 1, 10000), 1); /* the child has ended */
    EQ(tu_child_state(proc_pid(p)), 0);            /* and was reaped */
    EQ(tu_poll_in(fd, 0, NULL), 0);
    EQ(proc_join(p, 0), -ETIMEDOUT);
    EQ(tu_poll_in(fd, 0, NULL), 0);
    EQ(tu_write_full(gate[1], "g", 1), 0);
    EQ(tu_poll_in(fd, 10000, NULL), 1);
    EQ(proc_join(p, 0), 0);
    EQ(proc_exitcode(p), 5);
    EQ(proc_close(p), 0);
    int *ends[] = {&started[0], &started[1], &gate[0]};
    for (size_t i = 0; i < 3; i++)
        close_fd(ends[i]);
    close_fd(&held_gate_w); /* gate[1] */
}

static void count_callback(proc_t *p, void *arg)
{
    (void)p;
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* Many short children, half with a callback: whenever a sentinel is readable,
 * join(0) agrees, whatever batches the reaper makes of the exits. */
static void test_sentinel_readable_means_joinable(void **state)
{
    (void)state;
    enum { N = 200 };
    static proc_t *ps[N];
    atomic_int calls;
    atomic_init(&calls, 0);
    for (int i = 0; i < N; i++) {
        ps[i] = proc_new(return_code_main, (void *)(intptr_t)(i & 0x7f));
        assert_non_null(ps[i]);
        if (i % 2 == 0)
            EQ(proc_on_exit(ps[i], count_callback, &calls), 0);
        EQ(proc_start(ps[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        EQ(tu_poll_in(proc_sentinel(ps[i]), 10000, NULL), 1);
        EQ(proc_join(ps[i], 0), 0);
        EQ(proc_exitcode(ps[i]), i & 0x7f);
        EQ(proc_close(ps[i]), 0);
    }
    EQ(atomic_load(&calls), N / 2);
}

/* -------------------------------------------------------- exit callbacks */

struct cbrec {
    atomic_int seq;
    atomic_int calls1, calls2;
    int order1, order2;
    int code1, code2;
    int join_in_cb, join0_in_cb, close_in_cb;
    bool alive_in_cb;
    pthread_t thread1;
    int notify_fd;
};

static void exit_cb1(proc_t *p, void *arg)
{
    struct cbrec *r = arg;
    r->order1 = atomic_fetch_add(&r->seq, 1);
    r->code1 = proc_exitcode(p);
    r->alive_in_cb = proc_is_alive(p);
    r->join0_in_cb = proc_join(p, 0);
    r->join_in_cb = proc_join(p, 1000); /* bounded: a wrong implementation must not hang */
    r->close_in_cb = proc_close(p);
    r->thread1 = pthread_self();
    atomic_fetch_add(&r->calls1, 1);
}

static void exit_cb2(proc_t *p, void *arg)
{
    struct cbrec *r = arg;
    r->order2 = atomic_fetch_add(&r->seq, 1);
    r->code2 = proc_exitcode(p);
    atomic_fetch_add(&r->calls2, 1);
    if (r->notify_fd >= 0)
        (void)tu_write_full(r->notify_fd, "n", 1);
}

static void init_cbrec(struct cbrec *r, int notify_fd)
{
    memset(r, 0, sizeof *r);
    atomic_init(&r->seq, 0);
    atomic_init(&r->calls1, 0);
    atomic_init(&r->calls2, 0);
    r->order1 = r->order2 = -1;
    r->code1 = r->code2 = PROC_EXITCODE_NONE;
    r->join_in_cb = r->join0_in_cb = r->close_in_cb = 1;
    r->notify_fd = notify_fd;
}

static void check_cbrec(struct cbrec *r, int code)
{
    EQ(atomic_load(&r->calls1), 1);
    EQ(atomic_load(&r->calls2), 1);
    EQ(r->order1, 0);
    EQ(r->order2, 1);
    EQ(r->code1, code); /* the exit code is set before the callbacks run */
    EQ(r->code2, code);
    EQ(r->join0_in_cb, -EDEADLK);
    EQ(r->join_in_cb, -EDEADLK);
    EQ(r->close_in_cb, -EBUSY);
    assert_false(pthread_equal(r->thread1, pthread_self()));
}

static void test_exit_callbacks_with_join(void **state)
{
    (void)state;
    struct cbrec r;
    init_cbrec(&r, -1);
    int fds[2];
    struct blocker b = blocker_pipe(fds, 42);
    proc_t *p = proc_new(blocker_main, &b);
    assert_non_null(p);
    EQ(proc_on_exit(NULL, exit_cb1, &r), -EINVAL);
    EQ(proc_on_exit(p, NULL, &r), -EINVAL);
    EQ(proc_on_exit(p, exit_cb1, &r), 0);
    EQ(proc_on_exit(p, exit_cb2, &r), 0);
    EQ(proc_start(p), 0);
    EQ(proc_on_exit(p, exit_cb2, &r), -EBUSY);
    EQ(proc_join(p, 0), -ETIMEDOUT);
    EQ(atomic_load(&r.calls1), 0); /* nothing before the end */

    close_fd(&fds[1]);
    EQ(proc_join(p, 10000), 0);
    /* both callbacks have completed before proc_join returned */
    check_cbrec(&r, 42);

    EQ(proc_join(p, 0), 0);
    assert_false(proc_is_alive(p));
    EQ(proc_kill(p), 0);
    EQ(atomic_load(&r.calls1), 1); /* exactly once */
    EQ(atomic_load(&r.calls2), 1);
    EQ(proc_close(p), 0);
    EQ(atomic_load(&r.calls1), 1);
    EQ(atomic_load(&r.calls2), 1);
    close_fd(&fds[0]);
}

static void test_exit_callbacks_without_join(void **state)
{
    (void)state;
    int nfd[2];
    make_pipe(nfd);
    struct cbrec r;
    init_cbrec(&r, nfd[1]);
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)9);
    assert_non_null(p);
    EQ(proc_on_exit(p, exit_cb1, &r), 0);
    EQ(proc_on_exit(p, exit_cb2, &r), 0);
    EQ(proc_start(p), 0);

    /* the reaper runs the callbacks by itself */
    char c = 0;
    EQ(tu_read_full(nfd[0], &c, 1, 10000), 1);
    EQ(c, 'n');
    check_cbrec(&r, 9);
    EQ(proc_join(p, 10000), 0);
    EQ(proc_exitcode(p), 9);
    EQ(atomic_load(&r.calls1), 1);
    EQ(atomic_load(&r.calls2), 1);
    EQ(proc_close(p), 0);
    EQ(tu_poll_in(nfd[0], 0, NULL), 0); /* no second call */
    close_fd(&nfd[0]);
    close_fd(&nfd[1]);
}

/* The whole suite again on the library's pidfd-less paths (sentinel pipe,
 * waitpid(pid) driven by SIGCHLD and a tick). */
TEST_ALL_AGAIN_WITHOUT_PIDFD("test_reaper_sentinel")

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_no_zombie_without_join),
        T(test_not_alive_means_joinable),
        T(test_sentinel),
        cmocka_unit_test_teardown(test_sentinel_waits_for_callbacks, release_held_callback),
        T(test_sentinel_readable_means_joinable),
        T(test_exit_callbacks_with_join),
        T(test_exit_callbacks_without_join),
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
