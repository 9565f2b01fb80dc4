/* SPDX-License-Identifier: MIT */
/*
 * Tests for the reaper area (src/reaper.c): proc_join, proc_is_alive, signals,
 * sentinels, exit callbacks, SIGCHLD handler chaining, coexistence with a host
 * program's own fork()/waitpid() and with a host SIGCHLD handler that reaps
 * everything.
 *
 * Children never wait on timers: a child that must stay alive blocks in read() on a pipe
 * whose write end the test holds. Every child also arms alarm() as a safety net,
 * so that a failing test cannot leave a process behind for long.
 *
 * Tests that need a pristine SIGCHLD disposition run in a fresh copy of this
 * program (fork + exec of /proc/self/exe with "--sub <mode>").
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

#include "testcheck.h"

/* ------------------------------------------------------------------ helpers */

/* A safety net for children a broken test leaves blocked, never a bound a
 * passing test can reach: starting test_mass_exit's children took more than
 * 30 s under valgrind on a slow machine, and the first ones died of SIGALRM. */
#define CHILD_ALARM_S 300

/* Teardown for every test: no child of ours (live or zombie) may remain. The
 * bounded spin only covers the gap between an exit and its reaping. */
static int no_children_left(void **state)
{
    (void)state;
    return check_no_children_left(3000);
}

/* -------------------------------------------------------------- child code */

/* A child that blocks until the write end of its pipe is closed (or a byte
 * arrives), then returns code. */
struct blocker {
    int rfd;
    int wfd; /* closed in the child so that only the test holds it */
    int code;
};

static int blocker_main(void *arg)
{
    struct blocker *b = arg;
    char c;
    alarm(CHILD_ALARM_S);
    if (b->wfd >= 0)
        close(b->wfd);
    (void)read_retry(b->rfd, &c, 1);
    return b->code;
}

static int return_code_main(void *arg)
{
    return (int)(intptr_t)arg;
}

/* Starts a blocker child. */
static proc_t *start_blocker(struct blocker *b)
{
    proc_t *p = proc_new(blocker_main, b);
    assert_non_null(p);
    EQ(proc_start(p), 0);
    return p;
}

/* ---------------------------------------------------------------- join */

static void test_join_sets_exitcode(void **state)
{
    (void)state;
    static const int codes[] = {0, 1, 7, 255, 256 + 3};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        proc_t *p = proc_new(return_code_main, (void *)(intptr_t)codes[i]);
        assert_non_null(p);
        EQ(proc_exitcode(p), PROC_EXITCODE_NONE);
        EQ(proc_start(p), 0);
        assert_true(proc_pid(p) > 0);
        EQ(proc_join(p, 10000), 0);
        EQ(proc_exitcode(p), codes[i] & 0xff);
        assert_false(proc_is_alive(p));
        /* joining again returns at once, the pid is kept */
        EQ(proc_join(p, 0), 0);
        EQ(proc_join(p, PROC_WAIT_FOREVER), 0);
        assert_true(proc_pid(p) > 0);
        EQ(proc_close(p), 0);
    }
}

static void test_join_timeout(void **state)
{
    (void)state;
    int fds[2];
    make_pipe(fds);
    struct blocker b = {fds[0], fds[1], 33};
    proc_t *p = start_blocker(&b);

    EQ(proc_join(p, 0), -ETIMEDOUT);
    int64_t t0 = tu_now_ms();
    EQ(proc_join(p, 50), -ETIMEDOUT);
    int64_t took = tu_now_ms() - t0;
    if (took < 45 || took > 5000)
        fail_msg("proc_join(p, 50) took %lld ms", (long long)took);
    EQ(proc_exitcode(p), PROC_EXITCODE_NONE);
    assert_true(proc_is_alive(p));
    EQ(proc_close(p), -EBUSY);

    close_fd(&fds[1]); /* release the child */
    EQ(proc_join(p, 10000), 0);
    EQ(proc_exitcode(p), 33);
    EQ(proc_join(p, 0), 0);
    EQ(proc_close(p), 0);
    close_fd(&fds[0]);
}

static void test_join_einval(void **state)
{
    (void)state;
    EQ(proc_join(NULL, 0), -EINVAL);
    EQ(proc_join(NULL, -1), -EINVAL);

    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)4);
    assert_non_null(p);
    EQ(proc_join(p, 0), -EINVAL);
    EQ(proc_join(p, 100), -EINVAL);
    EQ(proc_join(p, PROC_WAIT_FOREVER), -EINVAL);
    EQ(proc_join(p, -2), -EINVAL);
    assert_false(proc_is_alive(p));
    EQ(proc_sentinel(p), -EINVAL);
    EQ(proc_pid(p), 0);

    int fds[2];
    make_pipe(fds);
    struct blocker b = {fds[0], fds[1], 4};
    proc_t *q = start_blocker(&b);
    EQ(proc_join(q, -2), -EINVAL);
    EQ(proc_join(q, INT_MIN), -EINVAL);
    assert_true(proc_is_alive(q)); /* a bad timeout changes nothing */
    close_fd(&fds[1]);
    EQ(proc_join(q, 10000), 0);
    EQ(proc_exitcode(q), 4);
    EQ(proc_join(q, -2), -EINVAL);
    EQ(proc_close(q), 0);
    EQ(proc_close(p), 0);
    close_fd(&fds[0]);
}

#define JOIN_THREADS 16

struct joiner {
    proc_t *p;
    atomic_int *ready;
    int ret;
    int code;
};

static void *joiner_main(void *arg)
{
    struct joiner *j = arg;
    atomic_fetch_add(j->ready, 1);
    j->ret = proc_join(j->p, 20000);
    j->code = proc_exitcode(j->p);
    return NULL;
}

static void test_join_many_threads(void **state)
{
    (void)state;
    int fds[2];
    make_pipe(fds);
    struct blocker b = {fds[0], fds[1], 61};
    proc_t *p = start_blocker(&b);

    atomic_int ready = 0;
    pthread_t th[JOIN_THREADS];
    struct joiner js[JOIN_THREADS];
    for (int i = 0; i < JOIN_THREADS; i++) {
        js[i] = (struct joiner){.p = p, .ready = &ready, .ret = 1, .code = 1};
        EQ(pthread_create(&th[i], NULL, joiner_main, &js[i]), 0);
    }
    int64_t deadline = tu_now_ms() + 5000;
    while (atomic_load(&ready) < JOIN_THREADS && tu_now_ms() < deadline)
        sched_yield();
    EQ(atomic_load(&ready), JOIN_THREADS);
    EQ(proc_join(p, 20), -ETIMEDOUT); /* still blocked; the threads are waiting */

    close_fd(&fds[1]);
    for (int i = 0; i < JOIN_THREADS; i++)
        EQ(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < JOIN_THREADS; i++) {
        EQ(js[i].ret, 0);
        EQ(js[i].code, 61);
    }
    EQ(proc_close(p), 0);
    close_fd(&fds[0]);
}

/* ------------------------------------------------------------- is_alive */

static void test_is_alive(void **state)
{
    (void)state;
    assert_false(proc_is_alive(NULL));
    assert_true(proc_is_alive(proc_current()));

    int fds[2];
    make_pipe(fds);
    struct blocker b = {fds[0], fds[1], 0};
    proc_t *p = proc_new(blocker_main, &b);
    assert_non_null(p);
    assert_false(proc_is_alive(p));
    EQ(proc_start(p), 0);
    assert_true(proc_is_alive(p));
    assert_true(proc_is_alive(p));
    EQ(proc_start(p), -EBUSY);
    close_fd(&fds[1]);
    EQ(proc_join(p, 10000), 0);
    assert_false(proc_is_alive(p));
    EQ(proc_exitcode(p), 0);
    EQ(proc_close(p), 0);
    close_fd(&fds[0]);
}

/* -------------------------------------------------------------- signals */

static void test_signals_give_negative_exitcodes(void **state)
{
    (void)state;
    int fds[2];
    make_pipe(fds);
    struct blocker b = {fds[0], fds[1], 0};
    proc_t *pt = start_blocker(&b);
    proc_t *pk = start_blocker(&b);
    proc_t *pu = start_blocker(&b);

    EQ(proc_signal(pt, 0), 0); /* probe */
    EQ(proc_signal(pt, -1), -EINVAL);
    EQ(proc_signal(pt, 100000), -EINVAL);
    EQ(proc_signal(NULL, SIGTERM), -EINVAL);
    EQ(proc_terminate(NULL), -EINVAL);
    EQ(proc_kill(NULL), -EINVAL);

    EQ(proc_terminate(pt), 0);
    EQ(proc_kill(pk), 0);
    EQ(proc_signal(pu, SIGUSR1), 0);
    EQ(proc_join(pt, 10000), 0);
    EQ(proc_join(pk, 10000), 0);
    EQ(proc_join(pu, 10000), 0);
    EQ(proc_exitcode(pt), -SIGTERM);
    EQ(proc_exitcode(pk), -SIGKILL);
    EQ(proc_exitcode(pu), -SIGUSR1);
    EQ(proc_exitcode(pt), -15);
    EQ(proc_exitcode(pk), -9);
    EQ(proc_exitcode(pu), -10);

    EQ(proc_close(pt), 0);
    EQ(proc_close(pk), 0);
    EQ(proc_close(pu), 0);
    close_fd(&fds[0]);
    close_fd(&fds[1]);

    proc_t *never = proc_new(NULL, NULL);
    assert_non_null(never);
    EQ(proc_terminate(never), -EINVAL);
    EQ(proc_kill(never), -EINVAL);
    EQ(proc_signal(never, SIGUSR1), -EINVAL);
    EQ(proc_close(never), 0);
}

/* Host child forced (via ns_last_pid) onto a given pid; blocks on rfd, exits 0. */
static pid_t fork_at_pid(pid_t want, int rfd, int wfd)
{
    int fd = open("/proc/sys/kernel/ns_last_pid", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%d", (int)want - 1);
    bool ok = write(fd, buf, (size_t)len) == len;
    close(fd);
    if (!ok)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        alarm(CHILD_ALARM_S);
        close(wfd);
        (void)read_retry(rfd, &c, 1);
        _exit(0);
    }
    return pid;
}

static void test_signal_after_end_sends_nothing(void **state)
{
    (void)state;
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)3);
    assert_non_null(p);
    EQ(proc_start(p), 0);
    pid_t old = proc_pid(p);
    EQ(proc_join(p, 10000), 0);
    EQ(proc_exitcode(p), 3);

    /* Try to put a host child of ours on the recycled pid: if libproc signals
     * the pid after reaping, that host child dies. Recycling needs a writable
     * ns_last_pid and no other fork in between, so it is attempted a few times;
     * the return-value checks below hold in any case. */
    pid_t host = -1;
    int fds[2] = {-1, -1};
    for (int attempt = 0; attempt < 5 && host != old; attempt++) {
        close_fd(&fds[0]);
        close_fd(&fds[1]);
        make_pipe(fds);
        host = fork_at_pid(old, fds[0], fds[1]);
        if (host < 0)
            break;
        if (host != old) {
            int st;
            close_fd(&fds[1]);
            EQ(waitpid(host, &st, 0), host);
        }
    }
    if (host != old)
        print_message("note: could not recycle pid %d; only return values are checked\n", (int)old);

    EQ(proc_kill(p), 0);
    EQ(proc_terminate(p), 0);
    EQ(proc_signal(p, SIGUSR1), 0);
    EQ(proc_signal(p, 0), 0);
    EQ(proc_exitcode(p), 3);
    assert_false(proc_is_alive(p));

    if (host == old) {
        int st;
        EQ(tu_child_state(host) != 0, 1);
        close_fd(&fds[1]);
        EQ(waitpid(host, &st, 0), host);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("host child on recycled pid %d was hit: status %#x (signal %d)", (int)host, st,
                     WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
    close_fd(&fds[0]);
    close_fd(&fds[1]);
    EQ(proc_close(p), 0);
}

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
    make_pipe(fds);
    struct blocker b = {fds[0], fds[1], 12};
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
    make_pipe(fds);
    struct blocker b = {fds[0], fds[1], 42};
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

/* ----------------------------------------------- SIGCHLD handler chaining */

static volatile sig_atomic_t g_host_calls;
static volatile sig_atomic_t g_host_bad;
static int g_host_fd = -1;

static void host_siginfo_handler(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    (void)uc;
    if (sig != SIGCHLD || si == NULL || si->si_signo != SIGCHLD)
        g_host_bad = 1;
    g_host_calls++;
    if (g_host_fd >= 0)
        (void)!write(g_host_fd, "c", 1);
    errno = saved;
}

static void drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

/* --sub prehandler: a SIGCHLD handler installed before libproc's first start
 * keeps being called for libproc's children. */
static void sub_prehandler(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    g_host_fd = fds[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = host_siginfo_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    EQ(sigaction(SIGCHLD, &sa, NULL), 0);

    for (int i = 0; i < 5; i++) {
        proc_t *p = proc_new(return_code_main, (void *)(intptr_t)(i + 1));
        assert_non_null(p);
        EQ(proc_start(p), 0);
        EQ(proc_join(p, 10000), 0);
        EQ(proc_exitcode(p), i + 1);
        EQ(proc_close(p), 0);
    }
    EQ(tu_poll_in(fds[0], 10000, NULL), 1);
    assert_true(g_host_calls >= 1);

    /* still called later, for each new batch */
    drain(fds[0]);
    int before = g_host_calls;
    int rel[2];
    make_pipe(rel);
    struct blocker b = {rel[0], rel[1], 77};
    proc_t *p = start_blocker(&b);
    close_fd(&rel[1]);
    EQ(proc_join(p, 10000), 0);
    EQ(proc_exitcode(p), 77);
    EQ(proc_close(p), 0);
    EQ(tu_poll_in(fds[0], 10000, NULL), 1);
    assert_true(g_host_calls > before);
    EQ(g_host_bad, 0);
    close_fd(&rel[0]);
    g_host_fd = -1;
    close_fd(&fds[0]);
    close_fd(&fds[1]);
}

static volatile sig_atomic_t g_stolen;

static void stealing_handler(int sig)
{
    int saved = errno, st;
    (void)sig;
    while (waitpid(-1, &st, WNOHANG) > 0)
        g_stolen++;
    errno = saved;
}

static void check_stolen_ok(proc_t *p, int code)
{
    int r = proc_join(p, 10000);
    if (r == -ETIMEDOUT)
        fail_msg("proc_join hung (10 s) on a child a host handler may have reaped");
    EQ(r, 0);
    int ec = proc_exitcode(p);
    if (ec != code && ec != PROC_EXITCODE_UNKNOWN)
        fail_msg("exitcode %d, expected %d or PROC_EXITCODE_UNKNOWN", ec, code);
    assert_false(proc_is_alive(p));
    EQ(proc_kill(p), 0);
    EQ(proc_close(p), 0);
}

/* --sub stealer: a SIGCHLD handler installed after libproc, reaping everything
 * with waitpid(-1): proc_join never hangs. */
static void sub_stealer(void **state)
{
    (void)state;
    proc_t *p = proc_new(NULL, NULL); /* libproc is up and running first */
    assert_non_null(p);
    EQ(proc_start(p), 0);
    EQ(proc_join(p, 10000), 0);
    EQ(proc_exitcode(p), 0);
    EQ(proc_close(p), 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stealing_handler;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    EQ(sigaction(SIGCHLD, &sa, NULL), 0);

    for (int i = 0; i < 10; i++) {
        p = proc_new(return_code_main, (void *)(intptr_t)(i + 1));
        assert_non_null(p);
        EQ(proc_start(p), 0);
        check_stolen_ok(p, i + 1);
    }

    enum { N = 20 };
    int rel[2];
    make_pipe(rel);
    struct blocker bs[N];
    proc_t *ps[N];
    for (int i = 0; i < N; i++) {
        bs[i] = (struct blocker){rel[0], rel[1], 50 + i};
        ps[i] = start_blocker(&bs[i]);
    }
    close_fd(&rel[1]);
    for (int i = 0; i < N; i++)
        check_stolen_ok(ps[i], 50 + i);
    close_fd(&rel[0]);
    print_message("host handler reaped %d libproc children\n", (int)g_stolen);
}

static void test_preexisting_sigchld_handler_called(void **state)
{
    (void)state;
    run_self("test_reaper", "prehandler", false);
}

static void test_host_handler_reaping_everything(void **state)
{
    (void)state;
    run_self("test_reaper", "stealer", false);
}

/* ----------------------------------------- host fork()+waitpid() coexistence */

#define HOST_N 50

struct host_wait {
    pid_t pids[HOST_N];
    pid_t got[HOST_N];
    int status[HOST_N];
    int err[HOST_N];
};

static void *host_waiter(void *arg)
{
    struct host_wait *h = arg;
    for (int i = 0; i < HOST_N; i++) {
        pid_t r;
        do {
            r = waitpid(h->pids[i], &h->status[i], 0);
        } while (r < 0 && errno == EINTR);
        h->got[i] = r;
        h->err[i] = r < 0 ? errno : 0;
    }
    return NULL;
}

static void test_host_children_keep_status(void **state)
{
    (void)state;
    int rel[2];
    make_pipe(rel);
    struct host_wait h;
    memset(&h, 0, sizeof h);
    struct blocker bs[HOST_N];
    proc_t *ps[HOST_N];
    for (int i = 0; i < HOST_N; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            alarm(CHILD_ALARM_S);
            close(rel[1]);
            (void)read_retry(rel[0], &c, 1);
            _exit(i + 1);
        }
        assert_true(pid > 0);
        h.pids[i] = pid;
        bs[i] = (struct blocker){rel[0], rel[1], 100 + i};
        ps[i] = start_blocker(&bs[i]);
    }
    pthread_t th;
    EQ(pthread_create(&th, NULL, host_waiter, &h), 0);
    close_fd(&rel[1]); /* everybody exits at once */
    for (int i = 0; i < HOST_N; i++) {
        EQ(proc_join(ps[i], 10000), 0);
        EQ(proc_exitcode(ps[i]), 100 + i);
    }
    EQ(pthread_join(th, NULL), 0);
    for (int i = 0; i < HOST_N; i++) {
        if (h.got[i] != h.pids[i])
            fail_msg("host waitpid(%d) returned %d errno %d (someone else reaped it)",
                     (int)h.pids[i], (int)h.got[i], h.err[i]);
        if (!WIFEXITED(h.status[i]) || WEXITSTATUS(h.status[i]) != i + 1)
            fail_msg("host child %d: status %#x, expected exit %d", i, h.status[i], i + 1);
    }
    for (int i = 0; i < HOST_N; i++)
        EQ(proc_close(ps[i]), 0);
    close_fd(&rel[0]);
}

/* ------------------------------------------------------- mass exit */

#define MASS_N 500
#define MASS_N_VALGRIND 150 /* each start costs tens of ms there */

static void test_mass_exit(void **state)
{
    (void)state;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 && rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int rel[2];
    make_pipe(rel);
    static struct blocker bs[MASS_N];
    static proc_t *ps[MASS_N];
    const int n = tu_on_valgrind() ? MASS_N_VALGRIND : MASS_N;
    for (int i = 0; i < n; i++) {
        bs[i] = (struct blocker){rel[0], rel[1], i % 256};
        ps[i] = proc_new(blocker_main, &bs[i]);
        assert_non_null(ps[i]);
        int r = proc_start(ps[i]);
        if (r != 0) {
            close_fd(&rel[1]);
            for (int j = 0; j < i; j++)
                proc_join(ps[j], 30000);
            fail_msg("proc_start of child %d failed: %d", i, r);
        }
    }
    EQ(proc_active_children(NULL, 0), n);
    close_fd(&rel[1]); /* n exits at once */
    int64_t deadline = tu_now_ms() + 30000;
    for (int i = 0; i < n; i++) {
        int64_t left = deadline - tu_now_ms();
        int r = proc_join(ps[i], left > 0 ? (int)left : 0);
        if (r != 0)
            fail_msg("child %d: proc_join returned %d", i, r);
        if (proc_exitcode(ps[i]) != i % 256)
            fail_msg("child %d: exitcode %d, expected %d", i, proc_exitcode(ps[i]), i % 256);
    }
    EQ(proc_active_children(NULL, 0), 0);
    EQ(tu_count_zombies(), 0);
    for (int i = 0; i < n; i++)
        EQ(proc_close(ps[i]), 0);
    close_fd(&rel[0]);
}

/* ------------------------------------------------ a sibling's copied object */

struct sib {
    proc_t *other;
    int report_fd;
};

struct sib_report {
    int join0, join_forever, alive, kill, sig0, term, sentinel;
    int active;
};

static int sibling_main(void *arg)
{
    struct sib *s = arg;
    alarm(CHILD_ALARM_S);
    struct sib_report rep;
    rep.join0 = proc_join(s->other, 0);
    rep.join_forever = proc_join(s->other, PROC_WAIT_FOREVER);
    rep.alive = proc_is_alive(s->other);
    rep.kill = proc_kill(s->other);
    rep.sig0 = proc_signal(s->other, 0);
    rep.term = proc_terminate(s->other);
    rep.sentinel = proc_sentinel(s->other);
    rep.active = (int)proc_active_children(NULL, 0);
    return tu_write_full(s->report_fd, &rep, sizeof rep) == 0 ? 0 : 1;
}

static void test_sibling_copy_is_inert(void **state)
{
    (void)state;
    int rel[2], rep[2];
    make_pipe(rel);
    make_pipe(rep);
    struct blocker b = {rel[0], rel[1], 21};
    proc_t *p1 = start_blocker(&b);
    struct sib s = {p1, rep[1]};
    proc_t *p2 = proc_new(sibling_main, &s);
    assert_non_null(p2);
    EQ(proc_start(p2), 0);
    close_fd(&rep[1]);

    struct sib_report r;
    EQ(tu_read_full(rep[0], &r, sizeof r, 15000), sizeof r);
    EQ(proc_join(p2, 10000), 0);
    EQ(proc_exitcode(p2), 0);
    EQ(r.join0, -ECHILD);
    EQ(r.join_forever, -ECHILD);
    EQ(r.alive, 0);
    EQ(r.kill, -ECHILD);
    EQ(r.sig0, -ECHILD);
    EQ(r.term, -ECHILD);
    EQ(r.sentinel, -EINVAL);
    EQ(r.active, 0);

    /* the sibling's attempts did nothing to p1 */
    assert_true(proc_is_alive(p1));
    EQ(proc_join(p1, 0), -ETIMEDOUT);
    close_fd(&rel[1]);
    EQ(proc_join(p1, 10000), 0);
    EQ(proc_exitcode(p1), 21);
    EQ(proc_close(p1), 0);
    EQ(proc_close(p2), 0);
    close_fd(&rel[0]);
    close_fd(&rep[0]);
}

/* The whole suite again on the library's pidfd-less paths (sentinel pipe,
 * waitpid(pid) driven by SIGCHLD and a tick). */
static void test_all_again_without_pidfd(void **state)
{
    (void)state;
    if (getenv("LIBPROC_DISABLE_PIDFD"))
        skip(); /* this is the re-run */
    run_self("test_reaper", NULL, true);
}

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--sub") == 0) {
        alarm(60); /* a hang in a sub-test shows up as a failure */
        if (strcmp(argv[2], "prehandler") == 0) {
            const struct CMUnitTest t[] = {T(sub_prehandler)};
            return cmocka_run_group_tests_name("reaper_sub_prehandler", t, NULL, NULL);
        }
        if (strcmp(argv[2], "stealer") == 0) {
            const struct CMUnitTest t[] = {T(sub_stealer)};
            return cmocka_run_group_tests_name("reaper_sub_stealer", t, NULL, NULL);
        }
        return 2;
    }
    const struct CMUnitTest tests[] = {
        T(test_join_sets_exitcode),
        T(test_join_timeout),
        T(test_join_einval),
        T(test_join_many_threads),
        T(test_is_alive),
        T(test_signals_give_negative_exitcodes),
        T(test_signal_after_end_sends_nothing),
        T(test_no_zombie_without_join),
        T(test_not_alive_means_joinable),
        T(test_sentinel),
        cmocka_unit_test_teardown(test_sentinel_waits_for_callbacks, release_held_callback),
        T(test_sentinel_readable_means_joinable),
        T(test_exit_callbacks_with_join),
        T(test_exit_callbacks_without_join),
        T(test_preexisting_sigchld_handler_called),
        T(test_host_handler_reaping_everything),
        T(test_host_children_keep_status),
        T(test_mass_exit),
        T(test_sibling_copy_is_inert),
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
