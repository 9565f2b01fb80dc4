/* SPDX-License-Identifier: MIT */
/*
 * The reaper area (src/reaper.c) beside a host program: SIGCHLD handler
 * chaining (a handler installed before libproc still called, one installed
 * after it reaping everything), a host's own fork()/waitpid() keeping its
 * children's status, and 500 children exiting at once. Tests that need a
 * pristine SIGCHLD disposition run in a fresh copy of this program (fork +
 * exec of /proc/self/exe with "--sub <mode>").
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

/* A bound on a hang, never reached when things work. Generous because under
 * valgrind every exiting child runs a leak check of its own: a batch of
 * children exiting at once can take tens of seconds to reap on a loaded
 * machine. */
#define BOUND_MS 60000

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

/* Installs sa (its mask emptied) as the SIGCHLD action, asserted. */
static void set_sigchld(struct sigaction *sa)
{
    sigemptyset(&sa->sa_mask);
    EQ(sigaction(SIGCHLD, sa, NULL), 0);
}

/* --sub prehandler: a SIGCHLD handler installed before libproc's first start
 * keeps being called for libproc's children. */
static void sub_prehandler(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    g_host_fd = fds[1];
    set_sigchld(&(struct sigaction){.sa_sigaction = host_siginfo_handler,
                                    .sa_flags = SA_SIGINFO | SA_RESTART});

    for (int i = 0; i < 5; i++) {
        proc_t *p = proc_new(return_code_main, (void *)(intptr_t)(i + 1));
        assert_non_null(p);
        EQ(proc_start(p), 0);
        EQ(proc_join(p, BOUND_MS), 0);
        EQ(proc_exitcode(p), i + 1);
        EQ(proc_close(p), 0);
    }
    EQ(tu_poll_in(fds[0], BOUND_MS, NULL), 1);
    assert_true(g_host_calls >= 1);

    /* still called later, for each new batch */
    drain(fds[0]);
    int before = g_host_calls;
    int rel[2];
    struct blocker b = blocker_pipe(rel, 77);
    proc_t *p = start_blocker(&b);
    close_fd(&rel[1]);
    EQ(proc_join(p, BOUND_MS), 0);
    EQ(proc_exitcode(p), 77);
    EQ(proc_close(p), 0);
    EQ(tu_poll_in(fds[0], BOUND_MS, NULL), 1);
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
    int r = proc_join(p, BOUND_MS);
    if (r == -ETIMEDOUT)
        fail_msg("proc_join hung (%d s) on a child a host handler may have reaped",
                 BOUND_MS / 1000);
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
    EQ(proc_join(p, BOUND_MS), 0);
    EQ(proc_exitcode(p), 0);
    EQ(proc_close(p), 0);

    set_sigchld(
        &(struct sigaction){.sa_handler = stealing_handler, .sa_flags = SA_RESTART | SA_NOCLDSTOP});

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

TEST_CASE(test_preexisting_sigchld_handler_called, run_self, "test_reaper_host", "prehandler",
          false)

TEST_CASE(test_host_handler_reaping_everything, run_self, "test_reaper_host", "stealer", false)

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
    /* static: should an assertion below end the test, host_waiter may still
     * be writing into it */
    static struct host_wait h;
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
        EQ(proc_join(ps[i], BOUND_MS), 0);
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
                proc_join(ps[j], BOUND_MS);
            fail_msg("proc_start of child %d failed: %d", i, r);
        }
    }
    EQ(proc_active_children(NULL, 0), n);
    close_fd(&rel[1]); /* n exits at once */
    int64_t deadline = tu_now_ms() + BOUND_MS;
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

/* The whole suite again on the library's pidfd-less paths (sentinel pipe,
 * waitpid(pid) driven by SIGCHLD and a tick). */
TEST_ALL_AGAIN_WITHOUT_PIDFD("test_reaper_host")

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--sub") == 0) {
        alarm(2 * BOUND_MS / 1000); /* a hang in a sub-test shows up as a failure */
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
        T(test_preexisting_sigchld_handler_called),
        T(test_host_handler_reaping_everything),
        T(test_host_children_keep_status),
        T(test_mass_exit),
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
