/* SPDX-License-Identifier: MIT */
/*
 * Starting children in both modes (src/spawn.c area): exit codes and the
 * running state of callback and exec children, exit() and crashes in the
 * target, exec mode's synchronous failures, its PATH rules, and argv.
 *
 * Children never call cmocka: they report through pipes and exit codes and
 * the parent asserts. Nothing here waits by the clock; timeouts only bound
 * hangs. Helpers: tests/support/spawn_fixture.h.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/proc.h>

#include "testutil.h"
#include "testcheck.h"
#include "spawn_fixture.h"

/* Asserts that p is running (alive, no exit code, a join times out, its
 * sentinel not readable): its sentinel fd. */
static int assert_running(proc_t *p)
{
    assert_true(proc_is_alive(p));
    assert_int_equal(proc_exitcode(p), PROC_EXITCODE_NONE);
    assert_int_equal(proc_join(p, 0), -ETIMEDOUT);
    int sfd = proc_sentinel(p);
    assert_true(sfd >= 0);
    assert_int_equal(tu_wait_readable(sfd, 0), 0);
    return sfd;
}

/* --------------------------------------------------------- callback mode */

static void test_callback_exit_codes(void **state)
{
    (void)state;
    static const int rets[] = {0, 1, 42, 255, 256, 257, -1, 1000};
    for (size_t i = 0; i < sizeof rets / sizeof rets[0]; i++) {
        proc_t *p = proc_new(ret_arg, (void *)&rets[i]);
        assert_non_null(p);
        assert_int_equal(run_to_end(p), rets[i] & 0xff);
    }
    proc_t *n = proc_new(NULL, NULL);
    assert_non_null(n);
    assert_int_equal(run_to_end(n), 0);
    assert_no_children();
}

struct ids {
    pid_t pid, ppid;
};

static int report_ids(void *arg)
{
    tu_gate *g = arg; /* g->wr is abused as the report fd: see the test */
    struct ids id = {getpid(), getppid()};
    if (tu_write_full(g[1].wr, &id, sizeof id) != 0)
        return 1;
    return tu_gate_wait(&g[0], -1) == 0 ? 0 : 2;
}

static void test_callback_running_state(void **state)
{
    (void)state;
    tu_gate g[2]; /* [0] the gate, [1] only a pipe for the report */
    assert_int_equal(tu_gate_init(&g[0]), 0);
    assert_int_equal(tu_gate_init(&g[1]), 0);
    proc_t *p = proc_new(report_ids, g);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    struct ids id;
    assert_int_equal(tu_read_full(g[1].rd, &id, sizeof id, BOUND_MS), (ssize_t)sizeof id);
    pid_t pid = proc_pid(p);
    assert_true(pid > 0);
    assert_int_equal(id.pid, pid);
    assert_int_equal(id.ppid, getpid());
    int sfd = assert_running(p);

    tu_gate_open(&g[0]);
    assert_int_equal(tu_wait_readable(sfd, BOUND_MS), 1);
    assert_int_equal(proc_join(p, PROC_WAIT_FOREVER), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_false(proc_is_alive(p));
    assert_int_equal(proc_pid(p), pid);      /* kept after exit */
    assert_int_equal(proc_sentinel(p), sfd); /* valid until close */
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g[0]);
    tu_gate_destroy(&g[1]);
    assert_no_children();
}

static int exit_3(void *arg)
{
    (void)arg;
    exit(3);
}

/* exit() in the target: its code, and none of the parent's libproc at-exit
 * work (waiting for non-daemonic children, terminating daemonic ones) runs in
 * the child. */
static void test_target_calls_exit(void **state)
{
    (void)state;
    tu_gate g;
    proc_t *sibling = start_gated_child(&g);
    proc_t *daemon = proc_new(tu_gate_main, &g);
    assert_non_null(daemon);
    assert_int_equal(proc_set_daemon(daemon, true), 0);
    assert_int_equal(proc_start(daemon), 0);

    proc_t *p = proc_new(exit_3, NULL);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_join(p, BOUND_MS), 0); /* promptly, not after the sibling */
    assert_int_equal(proc_exitcode(p), 3);
    /* both others untouched */
    assert_int_equal(proc_join(sibling, 0), -ETIMEDOUT);
    assert_int_equal(proc_join(daemon, 0), -ETIMEDOUT);
    assert_true(proc_is_alive(sibling));
    assert_true(proc_is_alive(daemon));

    tu_gate_open(&g);
    assert_int_equal(join_bounded(sibling), 0);
    assert_int_equal(join_bounded(daemon), 0);
    assert_int_equal(proc_exitcode(sibling), 0);
    assert_int_equal(proc_exitcode(daemon), 0); /* not SIGTERMed */
    assert_int_equal(proc_close(p), 0);
    assert_int_equal(proc_close(sibling), 0);
    assert_int_equal(proc_close(daemon), 0);
    tu_gate_destroy(&g);
    assert_no_children();
}

static void no_core(int sig)
{
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    signal(sig, SIG_DFL); /* cmocka and sanitizers may have handlers */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static int die_segv(void *arg)
{
    (void)arg;
    no_core(SIGSEGV);
    raise(SIGSEGV);
    return 100;
}

static int die_abort(void *arg)
{
    (void)arg;
    no_core(SIGABRT);
    abort();
}

static int die_kill(void *arg)
{
    (void)arg;
    raise(SIGKILL);
    return 100;
}

static void test_target_crashes(void **state)
{
    (void)state;
    proc_t *p = proc_new(die_segv, NULL);
    assert_non_null(p);
    assert_int_equal(run_to_end(p), -SIGSEGV);
    p = proc_new(die_abort, NULL);
    assert_non_null(p);
    assert_int_equal(run_to_end(p), -SIGABRT);
    p = proc_new(die_kill, NULL);
    assert_non_null(p);
    assert_int_equal(run_to_end(p), -SIGKILL);
    assert_no_children();
}

/* ---------------------------------------------------------------- exec mode */

static void test_exec_exit_codes(void **state)
{
    (void)state;
    assert_int_equal(exec_status((const char *const[]){"/bin/true", NULL}), 0);
    assert_int_equal(exec_status((const char *const[]){"/bin/false", NULL}), 1);
    assert_int_equal(exec_status((const char *const[]){"/bin/sh", "-c", "exit 42", NULL}), 42);
    assert_int_equal(exec_status((const char *const[]){"/bin/sh", "-c", "kill -TERM $$", NULL}),
                     -SIGTERM);
    /* PATH lookup */
    assert_int_equal(exec_status((const char *const[]){"true", NULL}), 0);
    assert_int_equal(exec_status((const char *const[]){"sh", "-c", "exit 7", NULL}), 7);
    /* the arguments arrive as given */
    assert_int_equal(exec_status((const char *const[]){
                         "sh", "-c", "test \"$0\" = name && test \"$1\" = 'a b' && test $# = 2",
                         "name", "a b", "", NULL}),
                     0);
    assert_no_children();
}

static void test_exec_running_state(void **state)
{
    (void)state;
    tu_gate g;
    assert_int_equal(tu_gate_init(&g), 0);
    /* cat blocks reading the gate: make it the child's stdin for the start */
    int saved0 = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0);
    assert_int_equal(dup2(g.rd, STDIN_FILENO), STDIN_FILENO);
    proc_t *p = proc_new_exec((const char *const[]){"cat", NULL});
    int rc = p ? proc_start(p) : -ENOMEM;
    if (saved0 >= 0) {
        dup2(saved0, STDIN_FILENO);
        close(saved0);
    } else {
        close(STDIN_FILENO);
    }
    assert_non_null(p);
    assert_int_equal(rc, 0);
    assert_true(proc_pid(p) > 0);
    int sfd = assert_running(p);
    assert_int_equal(proc_close(p), -EBUSY);
    tu_gate_open(&g);
    assert_int_equal(tu_wait_readable(sfd, BOUND_MS), 1);
    assert_int_equal(proc_join(p, PROC_WAIT_FOREVER), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g);
    assert_no_children();
}

static void test_exec_failures(void **state)
{
    (void)state;
    spawn_warm_up(); /* the reaper's own long-lived fds are not leaks */
    make_tmpdir();
    char noexec[PATH_MAX];
    snprintf(noexec, sizeof noexec, "%s/noexec", tmpdir);
    write_file(noexec, "#!/bin/sh\nexit 0\n", 0644);

    check_exec_fails((const char *const[]){"no-such-program-libproc", NULL}, -ENOENT);
    check_exec_fails((const char *const[]){"/no/such/dir/prog", NULL}, -ENOENT);
    check_exec_fails((const char *const[]){"/tmp", NULL}, -EACCES);
    check_exec_fails((const char *const[]){noexec, NULL}, -EACCES);

    /* the objects stay creatable/startable afterwards */
    assert_int_equal(exec_status((const char *const[]){"/bin/true", NULL}), 0);
    remove_tmpdir((const char *const[]){"noexec", NULL});
    assert_no_children();
}

/* execvp rules for PATH: the first executable match wins, a non-executable
 * match is skipped, and EACCES is reported when only such matches exist. */
static void test_exec_path_rules(void **state)
{
    (void)state;
    make_tmpdir();
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/libproc-script", tmpdir);
    write_file(path, "#!/bin/sh\nexit 9\n", 0755);
    snprintf(path, sizeof path, "%s/libproc-noexec", tmpdir);
    write_file(path, "#!/bin/sh\nexit 0\n", 0644);
    snprintf(path, sizeof path, "%s/true", tmpdir);
    write_file(path, "#!/bin/sh\nexit 0\n", 0644);

    const char *old = getenv("PATH");
    char *saved = strdup(old ? old : "/usr/bin:/bin");
    assert_non_null(saved);
    char newpath[PATH_MAX + 64];
    snprintf(newpath, sizeof newpath, "%s:%s", tmpdir, saved);
    assert_int_equal(setenv("PATH", newpath, 1), 0);

    int s1 = exec_status((const char *const[]){"libproc-script", NULL});
    int s2 = exec_status((const char *const[]){"true", NULL}); /* skips tmpdir/true */
    proc_t *p = proc_new_exec((const char *const[]){"libproc-noexec", NULL});
    int r3 = p ? proc_start(p) : -ENOMEM;
    int z3 = tu_count_children(NULL);
    int c3 = proc_close(p);
    setenv("PATH", saved, 1);
    free(saved);

    assert_int_equal(s1, 9);
    assert_int_equal(s2, 0);
    assert_int_equal(r3, -EACCES);
    assert_int_equal(z3, 0);
    assert_int_equal(c3, 0);
    remove_tmpdir((const char *const[]){"libproc-script", "libproc-noexec", "true", NULL});
    assert_no_children();
}

static void test_exec_argv_copied(void **state)
{
    (void)state;
    char *a0 = strdup("/bin/sh"), *a1 = strdup("-c"), *a2 = strdup("exit 5");
    assert_non_null(a0);
    assert_non_null(a1);
    assert_non_null(a2);
    const char *argv[] = {a0, a1, a2, NULL};
    proc_t *p = new_exec(argv);
    /* mutate and free everything the caller passed */
    a2[5] = '9';
    argv[2] = "exit 7";
    argv[0] = "/bin/false";
    free(a0);
    free(a1);
    free(a2);
    assert_int_equal(run_to_end(p), 5);
    assert_no_children();
}

#define T(f) cmocka_unit_test_teardown(f, spawn_cleanup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_callback_exit_codes), T(test_callback_running_state), T(test_target_calls_exit),
        T(test_target_crashes),      T(test_exec_exit_codes),        T(test_exec_running_state),
        T(test_exec_failures),       T(test_exec_path_rules),        T(test_exec_argv_copied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
