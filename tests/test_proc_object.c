/* SPDX-License-Identifier: MIT */
/*
 * The process object (src/proc.c area): defaults, names (also as children
 * and grandchildren see them), configuration before and after start,
 * authkeys, proc_close(), NULL arguments, bad timeouts and signals.
 *
 * Runs in two modes from this one file (tests/support/forkserver_fixture.h):
 * plain (ctest test_proc_object), and served (test_proc_object_forkserver,
 * argument "forkserver"): main() starts the fork server first and every
 * callback-mode child the tests start goes through it; exec-mode objects
 * are the same in both. A child of the server has only the fds it is given
 * and the memory of the program as it was when the server started, so the
 * children here, in both modes, get their arguments as copies, report on
 * their stdout and wait for gates on their stdin. Their own children are
 * plain forks of them in both modes.
 *
 * Children never call cmocka: they report through pipes and exit codes and
 * the parent asserts. Nothing here waits by the clock; timeouts only bound
 * hangs.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "forkserver_fixture.h"
#include "proc_fixture.h"
#include "testutil.h"
#include "testcheck.h"

static int join_bounded(proc_t *p)
{
    return proc_join(p, BOUND_MS);
}

static int ret_arg(void *arg)
{
    return arg ? *(int *)arg : 0;
}

/* ------------------------------------------------------------------ defaults */

/* Must stay the first test: it checks that numbering starts at 1. */
static void test_new_defaults(void **state)
{
    (void)state;
    int v = 0;
    proc_t *a = proc_new(ret_arg, &v);
    assert_non_null(a);
    proc_t *b = proc_new(NULL, NULL);
    assert_non_null(b);
    assert_string_equal(proc_name(a), "Process-1");
    assert_string_equal(proc_name(b), "Process-2");

    assert_false(proc_daemon(a));
    assert_int_equal(proc_pid(a), 0);
    assert_int_equal(proc_exitcode(a), PROC_EXITCODE_NONE);
    assert_false(proc_is_alive(a));
    assert_int_equal(proc_sentinel(a), -EINVAL);

    /* authkey: a copy of proc_current()'s */
    size_t la = 0, lc = 0;
    const unsigned char *ka = proc_authkey(a, &la);
    const unsigned char *kc = proc_authkey(proc_current(), &lc);
    assert_non_null(ka);
    assert_non_null(kc);
    assert_int_equal(lc, 32);
    assert_int_equal(la, lc);
    assert_memory_equal(ka, kc, lc);
    assert_true(ka != kc); /* a copy, not the same storage */
    assert_non_null(proc_authkey(a, NULL));

    /* never started: lifecycle calls are -EINVAL */
    assert_int_equal(proc_join(a, 0), -EINVAL);
    assert_int_equal(proc_signal(a, 0), -EINVAL);
    assert_int_equal(proc_terminate(a), -EINVAL);
    assert_int_equal(proc_kill(a), -EINVAL);
    assert_int_equal(proc_signal_tree(a, SIGTERM), -EINVAL);

    assert_int_equal(proc_close(a), 0);
    assert_int_equal(proc_close(b), 0);

    /* closing does not recycle numbers */
    proc_t *c = proc_new(NULL, NULL);
    assert_non_null(c);
    assert_string_equal(proc_name(c), "Process-3");
    assert_int_equal(proc_close(c), 0);

    /* exec-mode objects get a name and the same defaults too */
    proc_t *e = proc_new_exec((const char *const[]){"/bin/true", NULL});
    assert_non_null(e);
    assert_non_null(proc_name(e));
    assert_true(strncmp(proc_name(e), "Process-", 8) == 0);
    assert_false(proc_daemon(e));
    assert_int_equal(proc_pid(e), 0);
    assert_int_equal(proc_exitcode(e), PROC_EXITCODE_NONE);
    assert_false(proc_is_alive(e));
    assert_int_equal(proc_sentinel(e), -EINVAL);
    assert_non_null(proc_authkey(e, &la));
    assert_int_equal(la, 32);
    assert_memory_equal(proc_authkey(e, NULL), kc, 32);
    assert_int_equal(proc_close(e), 0);
    assert_no_children_but_server();
}

/* --------------------------------------------------------- names in children */

/* Both report on their stdout, the grandchild's inherited from the child. */
static int naming_grandchild(void *arg)
{
    (void)arg;
    put_name(proc_name(proc_current()));
    proc_t *q = proc_new(NULL, NULL);
    put_name(q ? proc_name(q) : NULL);
    proc_close(q);
    proc_t *par = proc_parent();
    put_name(par ? proc_name(par) : NULL);
    return 0;
}

static int naming_child(void *arg)
{
    (void)arg;
    proc_t *q1 = proc_new(naming_grandchild, NULL);
    proc_t *q2 = proc_new(NULL, NULL);
    if (!q1 || !q2)
        return 10;
    char n1[NAME_LEN], n2[NAME_LEN];
    snprintf(n1, sizeof n1, "%s", proc_name(q1));
    snprintf(n2, sizeof n2, "%s", proc_name(q2));
    if (proc_start(q1) != 0)
        return 11;
    if (proc_join(q1, BOUND_MS) != 0)
        return 12;
    int ec = proc_exitcode(q1);
    proc_close(q1);
    proc_close(q2);
    /* after the grandchild's three records */
    put_name(proc_name(proc_current()));
    put_name(n1);
    put_name(n2);
    proc_t *par = proc_parent();
    put_name(par ? proc_name(par) : NULL);
    return ec == 0 ? 0 : 13;
}

static void check_child_names(const char *rename_to)
{
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = new_child(naming_child, NULL, 0);
    assert_int_equal(proc_set_stdio(p, 1, fds[1]), 0);
    int k = default_index(proc_name(p));
    char want_self[NAME_LEN], want_c1[NAME_LEN], want_c2[NAME_LEN], want_gc[NAME_LEN];
    snprintf(want_self, sizeof want_self, "Process-%d", k);
    snprintf(want_c1, sizeof want_c1, "Process-%d:1", k);
    snprintf(want_c2, sizeof want_c2, "Process-%d:2", k);
    snprintf(want_gc, sizeof want_gc, "Process-%d:1:1", k);
    if (rename_to) {
        assert_int_equal(proc_set_name(p, rename_to), 0);
        snprintf(want_self, sizeof want_self, "%s", rename_to);
    }
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);

    /* grandchild: its own name, its child's default name, its parent's name */
    expect_name(fds[0], want_c1, BOUND_MS);
    expect_name(fds[0], want_gc, BOUND_MS);
    expect_name(fds[0], want_self, BOUND_MS);
    /* child: its own name, its two children's names, its parent's name */
    expect_name(fds[0], want_self, BOUND_MS);
    expect_name(fds[0], want_c1, BOUND_MS);
    expect_name(fds[0], want_c2, BOUND_MS);
    expect_name(fds[0], "MainProcess", BOUND_MS);

    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    close(fds[0]);
    assert_int_equal(proc_close(p), 0);
    assert_no_children_but_server();
}

TEST_CASE(test_names_in_children, check_child_names, NULL)

/* The numbering follows the identity ("Process-K"), not a later rename. */
TEST_CASE(test_names_in_children_after_rename, check_child_names, "worker")

/* ---------------------------------------------------------------- set_name */

/* arg: as stdin_gate_main()'s; reports on stdout. */
static int report_current_name_after_gate(void *arg)
{
    if (stdin_gate_main(arg) != 0)
        return 20;
    put_name(proc_name(proc_current()));
    return 0;
}

static void test_set_name(void **state)
{
    (void)state;
    proc_t *p = new_child(report_current_name_after_gate, NULL, 0);
    const char *orig = proc_name(p);
    assert_non_null(orig);
    char saved[NAME_LEN];
    snprintf(saved, sizeof saved, "%s", orig);

    assert_int_equal(proc_set_name(p, NULL), -EINVAL);
    assert_int_equal(proc_set_name(p, ""), -EINVAL);
    assert_string_equal(proc_name(p), saved);

    char buf[] = "alpha";
    assert_int_equal(proc_set_name(p, buf), 0);
    buf[0] = 'X'; /* copied */
    assert_string_equal(proc_name(p), "alpha");
    const char *alpha = proc_name(p);
    assert_int_equal(proc_set_name(p, "beta"), 0);
    assert_string_equal(proc_name(p), "beta");
    /* earlier names stay valid until proc_close() */
    assert_string_equal(orig, saved);
    assert_string_equal(alpha, "alpha");

    char longname[1000];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(proc_set_name(p, longname), 0);
    assert_string_equal(proc_name(p), longname);
    assert_int_equal(proc_set_name(p, "beta"), 0);

    /* allowed while running; only the parent's view changes */
    tu_gate g;
    assert_int_equal(tu_gate_init(&g), 0);
    int rep[2];
    assert_int_equal(tu_pipe(rep), 0);
    int wr = inherited_fd(g.wr);
    proc_t *q = new_child(report_current_name_after_gate, &wr, sizeof wr);
    assert_int_equal(proc_set_stdio(q, 0, g.rd), 0);
    assert_int_equal(proc_set_stdio(q, 1, rep[1]), 0);
    assert_int_equal(proc_set_name(q, "before-start"), 0);
    assert_int_equal(proc_start(q), 0);
    close(rep[1]);
    assert_int_equal(proc_set_name(q, "while-running"), 0);
    assert_string_equal(proc_name(q), "while-running");
    assert_int_equal(proc_set_name(q, ""), -EINVAL);
    assert_int_equal(proc_set_name(q, NULL), -EINVAL);
    tu_gate_open(&g);
    expect_name(rep[0], "before-start", BOUND_MS);
    assert_int_equal(join_bounded(q), 0);
    assert_int_equal(proc_exitcode(q), 0);
    /* and after the end */
    assert_int_equal(proc_set_name(q, "after-end"), 0);
    assert_string_equal(proc_name(q), "after-end");

    tu_gate_destroy(&g);
    close(rep[0]);
    assert_int_equal(proc_close(q), 0);
    assert_int_equal(proc_close(p), 0);
    assert_no_children_but_server();
}

/* ------------------------------------------------------------ configuration */

static void noop_exit_cb(proc_t *p, void *arg)
{
    (void)p;
    (void)arg;
}

static void check_setters_busy(proc_t *p)
{
    static const char *const envp[] = {"A=b", NULL};
    static const unsigned char key[4] = {1, 2, 3, 4};
    /* -EBUSY comes first, whatever the other arguments */
    assert_int_equal(proc_set_daemon(p, true), -EBUSY);
    assert_int_equal(proc_set_daemon(p, false), -EBUSY);
    assert_int_equal(proc_set_env(p, envp), -EBUSY);
    assert_int_equal(proc_set_env(p, NULL), -EBUSY);
    assert_int_equal(proc_set_cwd(p, "/"), -EBUSY);
    assert_int_equal(proc_set_cwd(p, NULL), -EBUSY);
    assert_int_equal(proc_set_cwd(p, ""), -EBUSY);
    assert_int_equal(proc_on_exit(p, noop_exit_cb, NULL), -EBUSY);
    assert_int_equal(proc_on_exit(p, NULL, NULL), -EBUSY);
    assert_int_equal(proc_set_authkey(p, key, sizeof key), -EBUSY);
    assert_int_equal(proc_set_authkey(p, NULL, 0), -EBUSY);
    assert_int_equal(proc_set_authkey(p, key, 257), -EBUSY);
    assert_int_equal(proc_set_new_group(p, true), -EBUSY);
    assert_int_equal(proc_set_new_group(p, false), -EBUSY);
    assert_false(proc_daemon(p));
}

static void test_setters_before_start(void **state)
{
    (void)state;
    proc_t *p = proc_new(NULL, NULL);
    assert_non_null(p);
    assert_int_equal(proc_set_daemon(p, true), 0);
    assert_true(proc_daemon(p));
    assert_int_equal(proc_set_daemon(p, false), 0);
    assert_false(proc_daemon(p));
    assert_int_equal(proc_set_env(p, (const char *const[]){"A=b", NULL}), 0);
    assert_int_equal(proc_set_env(p, NULL), 0);
    assert_int_equal(proc_set_cwd(p, "/"), 0);
    assert_int_equal(proc_set_cwd(p, NULL), 0);
    assert_int_equal(proc_set_cwd(p, ""), -EINVAL);
    assert_int_equal(proc_on_exit(p, NULL, NULL), -EINVAL);
    assert_int_equal(proc_on_exit(p, noop_exit_cb, NULL), 0);
    assert_int_equal(proc_set_new_group(p, true), 0);
    assert_int_equal(proc_set_new_group(p, false), 0);
    assert_int_equal(proc_close(p), 0);
    assert_no_children_but_server();
}

static void test_setters_busy_after_start(void **state)
{
    (void)state;
    tu_gate g;
    proc_t *p = start_stdin_gated(&g);
    check_setters_busy(p); /* running */
    tu_gate_open(&g);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    check_setters_busy(p); /* ended: still started */
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g);

    proc_t *e = proc_new_exec((const char *const[]){"/bin/true", NULL});
    assert_non_null(e);
    assert_int_equal(proc_start(e), 0);
    check_setters_busy(e);
    assert_int_equal(join_bounded(e), 0);
    assert_int_equal(proc_exitcode(e), 0);
    check_setters_busy(e);
    assert_int_equal(proc_close(e), 0);
    assert_no_children_but_server();
}

/* ------------------------------------------------------------------ authkey */

struct key_report {
    size_t cur_len;
    unsigned char cur[256];
    size_t new_len;
    unsigned char newk[256];
};

/* Reports on stdout. */
static int report_keys(void *arg)
{
    (void)arg;
    struct key_report r;
    memset(&r, 0, sizeof r);
    const unsigned char *k = proc_authkey(proc_current(), &r.cur_len);
    if (k && r.cur_len <= sizeof r.cur)
        memcpy(r.cur, k, r.cur_len);
    proc_t *q = proc_new(NULL, NULL);
    k = q ? proc_authkey(q, &r.new_len) : NULL;
    if (k && r.new_len <= sizeof r.newk)
        memcpy(r.newk, k, r.new_len);
    proc_close(q);
    return tu_write_full(1, &r, sizeof r) == 0 ? 0 : 1;
}

static void test_authkey(void **state)
{
    (void)state;
    unsigned char key[257];
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (unsigned char)(i * 7 + 3);
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = new_child(report_keys, NULL, 0);
    assert_int_equal(proc_set_stdio(p, 1, fds[1]), 0);
    size_t len = 0;
    unsigned char before[32];
    memcpy(before, proc_authkey(p, &len), 32);
    assert_int_equal(len, 32);

    assert_int_equal(proc_set_authkey(p, key, 0), -EINVAL);
    assert_int_equal(proc_set_authkey(p, key, 257), -EINVAL);
    assert_int_equal(proc_set_authkey(p, NULL, 16), -EINVAL);
    assert_memory_equal(proc_authkey(p, &len), before, 32); /* unchanged */
    assert_int_equal(len, 32);

    assert_int_equal(proc_set_authkey(p, key, 1), 0);
    assert_int_equal(proc_authkey(p, &len)[0], key[0]);
    assert_int_equal(len, 1);

    unsigned char copy[256];
    memcpy(copy, key, 256);
    assert_int_equal(proc_set_authkey(p, copy, 256), 0);
    memset(copy, 0, sizeof copy); /* copied */
    const unsigned char *k = proc_authkey(p, &len);
    assert_int_equal(len, 256);
    assert_memory_equal(k, key, 256);

    struct key_report r;
    start_and_read_report(p, fds, &r, sizeof r, BOUND_MS);
    /* the child's proc_current() has the key, and passes it on */
    assert_int_equal(r.cur_len, 256);
    assert_memory_equal(r.cur, key, 256);
    assert_int_equal(r.new_len, 256);
    assert_memory_equal(r.newk, key, 256);
    /* the parent's own key did not change */
    assert_int_equal(proc_authkey(proc_current(), &len) != NULL, 1);
    assert_int_equal(len, 32);
    close(fds[0]);
    assert_int_equal(proc_close(p), 0);
    assert_no_children_but_server();
}

/* ---------------------------------------------------------------- proc_close */

static void test_close(void **state)
{
    (void)state;
    assert_int_equal(proc_close(NULL), 0);

    proc_t *never = proc_new(NULL, NULL);
    assert_non_null(never);
    assert_int_equal(proc_close(never), 0);

    tu_gate g;
    proc_t *p = new_stdin_gated(&g);
    assert_int_equal(proc_set_name(p, "closing"), 0);
    assert_int_equal(proc_start(p), 0);
    pid_t pid = proc_pid(p);
    int sfd = proc_sentinel(p);
    assert_true(sfd >= 0);
    assert_int_equal(proc_close(p), -EBUSY);
    assert_int_equal(proc_close(p), -EBUSY);
    /* untouched */
    assert_string_equal(proc_name(p), "closing");
    assert_int_equal(proc_pid(p), pid);
    assert_int_equal(proc_sentinel(p), sfd);
    assert_true(proc_is_alive(p));
    assert_int_equal(proc_join(p, 0), -ETIMEDOUT);
    tu_gate_open(&g);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g);
    assert_no_children_but_server();
}

/* closing frees everything, including the sentinel fd */
static void test_close_frees_fds(void **state)
{
    (void)state;
    /* warm up: the reaper may keep long-lived fds of its own */
    proc_t *w = new_child(NULL, NULL, 0);
    assert_int_equal(proc_start(w), 0);
    assert_int_equal(join_bounded(w), 0);
    assert_int_equal(proc_close(w), 0);

    int base = tu_count_fds();
    assert_true(base > 0);
    for (int i = 0; i < 3; i++) {
        proc_t *p = new_child(NULL, NULL, 0);
        assert_int_equal(proc_start(p), 0);
        assert_int_equal(join_bounded(p), 0);
        assert_int_equal(proc_close(p), 0);
        proc_t *e = proc_new_exec((const char *const[]){"/bin/true", NULL});
        assert_non_null(e);
        assert_int_equal(proc_start(e), 0);
        assert_int_equal(join_bounded(e), 0);
        assert_int_equal(proc_close(e), 0);
    }
    assert_int_equal(tu_count_fds(), base);
    assert_no_children_but_server();
}

/* -------------------------------------------------------- NULL everywhere */

static void test_null_arguments(void **state)
{
    (void)state;
    errno = 0;
    assert_null(proc_new_exec(NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(proc_new_exec((const char *const[]){NULL}));
    assert_int_equal(errno, EINVAL);

    static const char *const envp[] = {"A=b", NULL};
    static const unsigned char key[4] = {1, 2, 3, 4};
    assert_int_equal(proc_set_daemon(NULL, true), -EINVAL);
    assert_int_equal(proc_set_env(NULL, envp), -EINVAL);
    assert_int_equal(proc_set_env(NULL, NULL), -EINVAL);
    assert_int_equal(proc_set_cwd(NULL, "/"), -EINVAL);
    assert_int_equal(proc_set_cwd(NULL, NULL), -EINVAL);
    assert_int_equal(proc_on_exit(NULL, noop_exit_cb, NULL), -EINVAL);
    assert_int_equal(proc_set_authkey(NULL, key, sizeof key), -EINVAL);
    assert_int_equal(proc_set_new_group(NULL, true), -EINVAL);
    assert_int_equal(proc_set_name(NULL, "x"), -EINVAL);
    errno = 0;
    assert_null(proc_name(NULL));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_start(NULL), -EINVAL);
    assert_int_equal(proc_run(NULL), -EINVAL);
    assert_int_equal(proc_join(NULL, 0), -EINVAL);
    assert_int_equal(proc_join(NULL, PROC_WAIT_FOREVER), -EINVAL);
    assert_false(proc_is_alive(NULL));
    assert_int_equal(proc_terminate(NULL), -EINVAL);
    assert_int_equal(proc_kill(NULL), -EINVAL);
    assert_int_equal(proc_signal(NULL, SIGTERM), -EINVAL);
    assert_int_equal(proc_signal(NULL, 0), -EINVAL);
    assert_int_equal(proc_signal_tree(NULL, SIGTERM), -EINVAL);
    assert_int_equal(proc_close(NULL), 0);
    assert_int_equal(proc_pid(NULL), 0);
    assert_int_equal(proc_exitcode(NULL), PROC_EXITCODE_NONE);
    assert_false(proc_daemon(NULL));
    assert_int_equal(proc_sentinel(NULL), -EINVAL);
    size_t len = 12345;
    errno = 0;
    assert_null(proc_authkey(NULL, &len));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(proc_authkey(NULL, NULL));
    assert_int_equal(errno, EINVAL);
    /* not object arguments, but must not crash */
    assert_int_equal(proc_active_children(NULL, 0), 0);
    assert_true(proc_cpu_count() >= 1);
    assert_non_null(proc_current());
    assert_no_children_but_server();
}

/* ------------------------------------------------------------ bad arguments */

static void test_bad_timeouts(void **state)
{
    (void)state;
    proc_t *never = proc_new(NULL, NULL);
    assert_non_null(never);
    assert_int_equal(proc_join(never, -2), -EINVAL);
    assert_int_equal(proc_close(never), 0);

    tu_gate g;
    proc_t *p = start_stdin_gated(&g);
    assert_int_equal(proc_join(p, -2), -EINVAL);
    assert_int_equal(proc_join(p, -1000), -EINVAL);
    assert_int_equal(proc_join(p, INT_MIN), -EINVAL);
    assert_int_equal(proc_join(p, 0), -ETIMEDOUT);
    assert_true(proc_is_alive(p));
    tu_gate_open(&g);
    assert_int_equal(proc_join(p, PROC_WAIT_FOREVER), 0);
    assert_int_equal(proc_exitcode(p), 0);
    /* still a bad timeout after the end */
    assert_int_equal(proc_join(p, -2), -EINVAL);
    assert_int_equal(proc_join(p, 0), 0);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g);
    assert_no_children_but_server();
}

static void test_bad_signals(void **state)
{
    (void)state;
    static const int bad[] = {-1, 65, _NSIG, 1000, INT_MAX, INT_MIN};
    proc_t *never = proc_new(NULL, NULL);
    assert_non_null(never);
    assert_int_equal(proc_signal(never, SIGTERM), -EINVAL);
    assert_int_equal(proc_signal(never, -1), -EINVAL);
    assert_int_equal(proc_close(never), 0);

    tu_gate g;
    proc_t *p = new_stdin_gated(&g);
    assert_int_equal(proc_set_new_group(p, true), 0);
    assert_int_equal(proc_start(p), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(proc_signal(p, bad[i]), -EINVAL);
        assert_int_equal(proc_signal_tree(p, bad[i]), -EINVAL);
    }
    assert_int_equal(proc_signal(p, 0), 0); /* probe */
    assert_int_equal(proc_signal_tree(p, 0), 0);
    assert_int_equal(proc_join(p, 0), -ETIMEDOUT); /* nothing was sent */
    tu_gate_open(&g);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(proc_signal(p, bad[i]), -EINVAL);
        assert_int_equal(proc_signal_tree(p, bad[i]), -EINVAL);
    }
    /* a valid signal after the end is a no-op */
    assert_int_equal(proc_signal(p, SIGTERM), 0);
    assert_int_equal(proc_terminate(p), 0);
    assert_int_equal(proc_kill(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g);
    assert_no_children_but_server();
}

/* kill_leftover_children() kills libproc's children only
 * (proc_active_children()), never the fork server, which is none of them. */
#define T(f) cmocka_unit_test_teardown(f, kill_leftover_children)

int main(int argc, char **argv)
{
    if (mode_init(argc, argv) != 0) /* first: no thread exists yet */
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_new_defaults), /* first: numbering starts at 1 */
        T(test_names_in_children),
        T(test_names_in_children_after_rename),
        T(test_set_name),
        T(test_setters_before_start),
        T(test_setters_busy_after_start),
        T(test_authkey),
        T(test_close),
        T(test_close_frees_fds),
        T(test_null_arguments),
        T(test_bad_timeouts),
        T(test_bad_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
