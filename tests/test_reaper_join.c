/* SPDX-License-Identifier: MIT */
/*
 * The reaper area (src/wait.c, src/signal.c), joining and signalling: proc_join (exit
 * codes, timeouts, bad arguments, many threads joining one child),
 * proc_is_alive, signals and their negative exit codes, no signal sent after
 * the end, and a sibling's copy of another child's object doing nothing.
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
    struct blocker b = blocker_pipe(fds, 33);
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
    struct blocker b = blocker_pipe(fds, 4);
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
    struct blocker b = blocker_pipe(fds, 61);
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
    struct blocker b = blocker_pipe(fds, 0);
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
    struct blocker b = blocker_pipe(fds, 0);
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
TEST_ALL_AGAIN_WITHOUT_PIDFD("test_reaper_join")

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_join_sets_exitcode),
        T(test_join_timeout),
        T(test_join_einval),
        T(test_join_many_threads),
        T(test_is_alive),
        T(test_signals_give_negative_exitcodes),
        T(test_signal_after_end_sends_nothing),
        T(test_sibling_copy_is_inert),
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
