/* SPDX-License-Identifier: MIT */
/*
 * Starting children with options (src/spawn.c area): environment, working
 * directory (also a bad one), process groups and proc_signal_tree().
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

extern char **environ;

/* ---------------------------------------------------------------- environment */

#define MARK "LIBPROC_TEST_SPAWN_MARK"

static void test_env_exec(void **state)
{
    (void)state;
    assert_int_equal(setenv(MARK, "parent", 1), 0);
    char *e0 = strdup("FOO=bar");
    assert_non_null(e0);
    const char *envp[] = {e0, NULL};
    proc_t *p = new_exec((const char *const[]){
        "/bin/sh", "-c", "test \"$FOO\" = bar && test -z \"${" MARK "+set}\"", NULL});
    assert_int_equal(proc_set_env(p, envp), 0);
    e0[4] = 'X'; /* copied */
    envp[0] = "FOO=baz";
    free(e0);
    assert_int_equal(run_to_end(p), 0);

    /* NULL = inherit, read at proc_start() */
    p = new_exec((const char *const[]){"/bin/sh", "-c", "test \"$" MARK "\" = late", NULL});
    assert_int_equal(proc_set_env(p, (const char *const[]){"FOO=bar", NULL}), 0);
    assert_int_equal(proc_set_env(p, NULL), 0);
    assert_int_equal(setenv(MARK, "late", 1), 0);
    assert_int_equal(run_to_end(p), 0);

    /* an empty environment */
    p = new_exec((const char *const[]){"/bin/sh", "-c", "test -z \"${" MARK "+set}\"", NULL});
    assert_int_equal(proc_set_env(p, (const char *const[]){NULL}), 0);
    assert_int_equal(run_to_end(p), 0);
    unsetenv(MARK);
    assert_no_children();
}

static int check_env_replaced(void *arg)
{
    (void)arg;
    int bad = 0;
    const char *foo = getenv("FOO");
    if (!foo || strcmp(foo, "bar") != 0)
        bad |= 1;
    if (getenv(MARK))
        bad |= 2;
    if (!environ || !environ[0] || strcmp(environ[0], "FOO=bar") != 0 || environ[1])
        bad |= 4;
    return bad;
}

static int check_env_inherited(void *arg)
{
    (void)arg;
    const char *m = getenv(MARK);
    return m && strcmp(m, "late") == 0 ? 0 : 1;
}

static void test_env_callback(void **state)
{
    (void)state;
    assert_int_equal(setenv(MARK, "parent", 1), 0);
    char *e0 = strdup("FOO=bar");
    assert_non_null(e0);
    const char *envp[] = {e0, NULL};
    proc_t *p = proc_new(check_env_replaced, NULL);
    assert_non_null(p);
    assert_int_equal(proc_set_env(p, envp), 0);
    e0[4] = 'X';
    free(e0);
    assert_int_equal(run_to_end(p), 0);
    /* the parent's environment is untouched */
    assert_string_equal(getenv(MARK), "parent");
    assert_null(getenv("FOO"));

    p = proc_new(check_env_inherited, NULL);
    assert_non_null(p);
    assert_int_equal(proc_set_env(p, NULL), 0);
    assert_int_equal(setenv(MARK, "late", 1), 0);
    assert_int_equal(run_to_end(p), 0);
    unsetenv(MARK);
    assert_no_children();
}

/* ---------------------------------------------------------------------- cwd */

static int report_cwd(void *arg)
{
    int wr = *(int *)arg;
    char buf[PATH_MAX];
    if (!getcwd(buf, sizeof buf))
        return 1;
    return tu_write_full(wr, buf, strlen(buf)) == 0 ? 0 : 2;
}

static void test_cwd_callback(void **state)
{
    (void)state;
    make_tmpdir();
    char before[PATH_MAX];
    assert_non_null(getcwd(before, sizeof before));
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = proc_new(report_cwd, &fds[1]);
    assert_non_null(p);
    assert_int_equal(proc_set_cwd(p, tmpdir), 0);
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);
    char got[PATH_MAX];
    assert_true(tu_read_to_eof(fds[0], got, sizeof got, BOUND_MS) >= 0);
    close(fds[0]);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_string_equal(got, tmpdir);
    char after[PATH_MAX];
    assert_non_null(getcwd(after, sizeof after));
    assert_string_equal(after, before); /* the parent did not move */
    assert_int_equal(proc_close(p), 0);
    remove_tmpdir(NULL);
    assert_no_children();
}

static void test_cwd_exec(void **state)
{
    (void)state;
    make_tmpdir();
    char before[PATH_MAX];
    assert_non_null(getcwd(before, sizeof before));
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "test \"$(pwd -P)\" = '%s'", tmpdir);
    for (int d = 0; d < 2; d++) {
        proc_t *p = new_exec((const char *const[]){"/bin/sh", "-c", cmd, NULL});
        assert_int_equal(proc_set_daemon(p, d == 1), 0);
        assert_int_equal(proc_set_cwd(p, tmpdir), 0);
        assert_int_equal(run_to_end(p), 0);
    }
    /* NULL: the parent's directory */
    char real_before[PATH_MAX];
    assert_non_null(realpath(before, real_before));
    snprintf(cmd, sizeof cmd, "test \"$(pwd -P)\" = '%s'", real_before);
    proc_t *p = new_exec((const char *const[]){"/bin/sh", "-c", cmd, NULL});
    assert_int_equal(proc_set_cwd(p, tmpdir), 0);
    assert_int_equal(proc_set_cwd(p, NULL), 0);
    assert_int_equal(run_to_end(p), 0);
    char after[PATH_MAX];
    assert_non_null(getcwd(after, sizeof after));
    assert_string_equal(after, before);
    remove_tmpdir(NULL);
    assert_no_children();
}

static void test_cwd_bad(void **state)
{
    (void)state;
    spawn_warm_up();
    make_tmpdir();
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s/file", tmpdir);
    write_file(file, "x", 0644);
    static const char *const missing = "/no/such/dir/libproc";
    struct {
        const char *dir;
        int err;
    } cases[] = {{missing, -ENOENT}, {file, -ENOTDIR}};

    for (size_t c = 0; c < 2; c++) {
        for (int d = 0; d < 2; d++) {
            int fds0 = tu_count_fds();
            /* callback mode: the target never runs */
            int fds[2];
            assert_int_equal(tu_pipe(fds), 0);
            proc_t *p = proc_new(mark_ran, &fds[1]);
            assert_non_null(p);
            assert_int_equal(proc_set_cwd(p, cases[c].dir), 0);
            check_start_fails(p, d == 1, cases[c].err);
            close(fds[1]);
            char out[8];
            assert_int_equal(tu_read_to_eof(fds[0], out, sizeof out, BOUND_MS), 0);
            close(fds[0]);
            /* exec mode */
            p = new_exec((const char *const[]){"/bin/true", NULL});
            assert_int_equal(proc_set_cwd(p, cases[c].dir), 0);
            check_start_fails(p, d == 1, cases[c].err);
            assert_int_equal(tu_count_fds(), fds0);
        }
    }
    remove_tmpdir((const char *const[]){"file", NULL});
    assert_no_children();
}

/* ---------------------------------------------------------- process groups */

static int report_pgid(void *arg)
{
    tu_gate *g = arg; /* [0] gate, [1] report pipe */
    pid_t r[2] = {getpid(), getpgid(0)};
    if (tu_write_full(g[1].wr, r, sizeof r) != 0)
        return 1;
    return tu_gate_wait(&g[0], -1) == 0 ? 0 : 2;
}

static void check_group(bool new_group)
{
    tu_gate g[2];
    assert_int_equal(tu_gate_init(&g[0]), 0);
    assert_int_equal(tu_gate_init(&g[1]), 0);
    proc_t *p = proc_new(report_pgid, g);
    assert_non_null(p);
    if (new_group)
        assert_int_equal(proc_set_new_group(p, true), 0);
    assert_int_equal(proc_start(p), 0);
    pid_t r[2];
    assert_int_equal(tu_read_full(g[1].rd, r, sizeof r, BOUND_MS), (ssize_t)sizeof r);
    pid_t pid = proc_pid(p);
    assert_int_equal(r[0], pid);
    if (new_group) {
        assert_int_equal(r[1], pid);
        assert_int_equal(getpgid(pid), pid);
        assert_int_equal(proc_signal_tree(p, 0), 0);
    } else {
        assert_int_equal(r[1], getpgrp());
        assert_int_equal(getpgid(pid), getpgrp());
        assert_int_equal(proc_signal_tree(p, SIGTERM), -EINVAL);
        assert_int_equal(proc_signal_tree(p, 0), -EINVAL);
    }
    assert_int_equal(getpgrp(), getpgid(0)); /* the parent stays where it was */
    tu_gate_open(&g[0]);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0); /* nothing was sent */
    if (!new_group)
        assert_int_equal(proc_signal_tree(p, SIGTERM), -EINVAL);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g[0]);
    tu_gate_destroy(&g[1]);
    assert_no_children();
}

TEST_CASE(test_new_group, check_group, true)

TEST_CASE(test_no_group, check_group, false)

/* exec: sh starts a background sleep and reports its pid on stdout; the pipe
 * behind stdout is held only by sh and the sleep, so EOF means both died. */
static void test_signal_tree_exec(void **state)
{
    (void)state;
    subreaper(true);
    proc_t *p =
        new_exec((const char *const[]){"/bin/sh", "-c", "sleep 1000 & echo $!; wait", NULL});
    assert_int_equal(proc_set_new_group(p, true), 0);
    redirect_stdout();
    int rc = proc_start(p);
    int rd = restore_stdout();
    assert_int_equal(rc, 0);

    char line[32];
    read_line(rd, line, sizeof line);
    pid_t gpid = (pid_t)atol(line);
    assert_true(gpid > 0);
    assert_int_equal(getpgid(proc_pid(p)), proc_pid(p));
    assert_int_equal(getpgid(gpid), proc_pid(p));

    assert_int_equal(proc_signal_tree(p, SIGTERM), 0);
    char rest[16];
    assert_int_equal(tu_read_to_eof(rd, rest, sizeof rest, BOUND_MS), 0); /* both gone */
    close(rd);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), -SIGTERM);
    reap_orphan(gpid);
    subreaper(false);
    /* nobody left in the group */
    assert_int_equal(proc_signal_tree(p, SIGTERM), 0);
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

struct tree_args {
    tu_gate gate; /* never opened while the tree lives */
    int wr;       /* report + life pipe */
    bool leave;   /* the child _exit()s, leaving the grandchild behind */
};

static int tree_child(void *arg)
{
    struct tree_args *a = arg;
    proc_t *q = proc_new(tu_gate_main, &a->gate);
    if (!q || proc_start(q) != 0)
        return 40;
    pid_t gpid = proc_pid(q);
    if (tu_write_full(a->wr, &gpid, sizeof gpid) != 0)
        return 41;
    if (a->leave)
        _exit(0);
    proc_join(q, -1);
    return 42;
}

static void check_signal_tree_callback(bool leave)
{
    subreaper(true);
    struct tree_args a;
    assert_int_equal(tu_gate_init(&a.gate), 0);
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    a.wr = fds[1];
    a.leave = leave;
    proc_t *p = proc_new(tree_child, &a);
    assert_non_null(p);
    assert_int_equal(proc_set_new_group(p, true), 0);
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);
    pid_t gpid = 0;
    assert_int_equal(tu_read_full(fds[0], &gpid, sizeof gpid, BOUND_MS), (ssize_t)sizeof gpid);
    assert_true(gpid > 0);
    assert_int_equal(getpgid(gpid), proc_pid(p));
    if (leave) {
        /* the child is gone, its group is not */
        assert_int_equal(join_bounded(p), 0);
        assert_int_equal(proc_exitcode(p), 0);
        assert_int_equal(getpgid(gpid), proc_pid(p));
        assert_int_equal(proc_signal_tree(p, SIGKILL), 0);
    } else {
        assert_int_equal(proc_signal_tree(p, SIGKILL), 0);
        assert_int_equal(join_bounded(p), 0);
        assert_int_equal(proc_exitcode(p), -SIGKILL);
    }
    char rest[16];
    assert_int_equal(tu_read_to_eof(fds[0], rest, sizeof rest, BOUND_MS), 0); /* all gone */
    close(fds[0]);
    reap_orphan(gpid);
    subreaper(false);
    assert_int_equal(proc_signal_tree(p, SIGKILL), 0); /* nobody left */
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&a.gate);
    assert_no_children();
}

TEST_CASE(test_signal_tree_callback, check_signal_tree_callback, false)

TEST_CASE(test_signal_tree_after_child_ended, check_signal_tree_callback, true)

#define T(f) cmocka_unit_test_teardown(f, spawn_cleanup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_env_exec),
        T(test_env_callback),
        T(test_cwd_callback),
        T(test_cwd_exec),
        T(test_cwd_bad),
        T(test_new_group),
        T(test_no_group),
        T(test_signal_tree_exec),
        T(test_signal_tree_callback),
        T(test_signal_tree_after_child_ended),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
