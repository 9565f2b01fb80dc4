/* SPDX-License-Identifier: MIT */
/*
 * Starting children (src/start.c, src/spawn.c): stdio flushed before a start,
 * starting twice, daemonic children (no children of their own, exec mode),
 * and running out of fds.
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

/* ------------------------------------------------------------- stdio flush */

static int print_c(void *arg)
{
    (void)arg;
    printf("<c>"); /* no newline: only the child's own flush writes it */
    return 0;
}

static void test_stdio_flush_callback(void **state)
{
    (void)state;
    redirect_stdout();
    int fd2 = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0);
    assert_true(fd2 >= 0);
    FILE *f = fdopen(fd2, "w");
    assert_non_null(f);
    setvbuf(f, NULL, _IOFBF, 4096);

    printf("<p1>");
    fprintf(f, "<f1>");
    proc_t *p = proc_new(print_c, NULL);
    int rc_start = p ? proc_start(p) : -ENOMEM;
    int rc_join = p ? join_bounded(p) : -ENOMEM;
    int ec = proc_exitcode(p);
    printf("<p2>");
    fclose(f);
    int rd = restore_stdout();

    assert_non_null(p);
    assert_int_equal(rc_start, 0);
    assert_int_equal(rc_join, 0);
    assert_int_equal(ec, 0);
    char out[256];
    assert_true(tu_read_to_eof(rd, out, sizeof out, BOUND_MS) >= 0);
    close(rd);
    /* every piece exactly once, the parent's buffered text before the child's */
    assert_int_equal(count_substr(out, "<p1>"), 1);
    assert_int_equal(count_substr(out, "<f1>"), 1);
    assert_int_equal(count_substr(out, "<c>"), 1);
    assert_int_equal(count_substr(out, "<p2>"), 1);
    assert_true(pos_of(out, "<p1>") < pos_of(out, "<c>"));
    assert_true(pos_of(out, "<f1>") < pos_of(out, "<c>"));
    assert_true(pos_of(out, "<c>") < pos_of(out, "<p2>"));
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

static void test_stdio_flush_exec(void **state)
{
    (void)state;
    redirect_stdout();
    printf("<p>");
    proc_t *p = proc_new_exec((const char *const[]){"/bin/sh", "-c", "printf '<e>'", NULL});
    int rc_start = p ? proc_start(p) : -ENOMEM;
    int rc_join = p ? join_bounded(p) : -ENOMEM;
    int ec = proc_exitcode(p);
    int rd = restore_stdout();

    assert_non_null(p);
    assert_int_equal(rc_start, 0);
    assert_int_equal(rc_join, 0);
    assert_int_equal(ec, 0);
    char out[64];
    assert_true(tu_read_to_eof(rd, out, sizeof out, BOUND_MS) >= 0);
    close(rd);
    assert_string_equal(out, "<p><e>"); /* flushed before the program wrote */
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

/* ------------------------------------------------------------- start twice */

static void test_start_twice(void **state)
{
    (void)state;
    tu_gate g;
    proc_t *p = start_gated_child(&g);
    pid_t pid = proc_pid(p);
    assert_int_equal(proc_start(p), -EBUSY);
    assert_int_equal(proc_pid(p), pid);
    assert_int_equal(proc_active_children(NULL, 0), 1); /* no second child */
    tu_gate_open(&g);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_start(p), -EBUSY);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_pid(p), pid);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g);

    proc_t *e = new_exec((const char *const[]){"/bin/true", NULL});
    assert_int_equal(proc_start(e), 0);
    assert_int_equal(proc_start(e), -EBUSY);
    assert_int_equal(join_bounded(e), 0);
    assert_int_equal(proc_start(e), -EBUSY);
    assert_int_equal(proc_exitcode(e), 0);
    assert_int_equal(proc_close(e), 0);
    assert_no_children();
}

/* ------------------------------------------------------------------ daemons */

struct daemon_report {
    int start_cb;
    int start_exec;
    int is_daemon;
};

static int daemon_tries_children(void *arg)
{
    int wr = *(int *)arg;
    struct daemon_report r = {1, 1, 0};
    proc_t *q = proc_new(NULL, NULL);
    if (q)
        r.start_cb = proc_start(q);
    proc_close(q);
    proc_t *e = proc_new_exec((const char *const[]){"/bin/true", NULL});
    if (e)
        r.start_exec = proc_start(e);
    proc_close(e);
    r.is_daemon = proc_daemon(proc_current());
    return tu_write_full(wr, &r, sizeof r) == 0 ? 0 : 1;
}

static void test_daemon_cannot_start_children(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = proc_new(daemon_tries_children, &fds[1]);
    assert_non_null(p);
    assert_int_equal(proc_set_daemon(p, true), 0);
    assert_true(proc_daemon(p));
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);
    struct daemon_report r;
    assert_int_equal(tu_read_full(fds[0], &r, sizeof r, BOUND_MS), (ssize_t)sizeof r);
    char rest[8];
    assert_int_equal(tu_read_to_eof(fds[0], rest, sizeof rest, BOUND_MS), 0);
    close(fds[0]);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(r.start_cb, -EPERM);
    assert_int_equal(r.start_exec, -EPERM);
    assert_true(r.is_daemon);
    assert_true(proc_daemon(p));
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

static void test_daemon_exec(void **state)
{
    (void)state;
    proc_t *p = new_exec((const char *const[]){"/bin/sh", "-c", "exit 5", NULL});
    assert_int_equal(proc_set_daemon(p, true), 0);
    assert_int_equal(run_to_end(p), 5);
    static const int v = 17;
    p = proc_new(ret_arg, (void *)&v);
    assert_non_null(p);
    assert_int_equal(proc_set_daemon(p, true), 0);
    assert_int_equal(run_to_end(p), 17);
    assert_no_children();
}

/* ------------------------------------------------------------ out of fds */

static void test_start_without_fds(void **state)
{
    (void)state;
    spawn_warm_up();
    proc_t *p = proc_new(NULL, NULL);
    proc_t *e = proc_new_exec((const char *const[]){"/bin/true", NULL});
    assert_non_null(p);
    assert_non_null(e);

    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int src = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(src >= 0);
    /* lower the limit to just above the highest open fd, then fill every
     * hole below it, so that no new fd can be had. Fds at or above the
     * current soft limit do not count: no new fd can be had there anyway,
     * and under valgrind that is where its own fds are listed (valgrind
     * refuses a soft limit above the hard limit it shows the program). */
    int maxfd = src;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.' && atoi(de->d_name) > maxfd &&
            (rlim_t)atoi(de->d_name) < old.rlim_cur)
            maxfd = atoi(de->d_name);
    closedir(d);
    struct rlimit low = {(rlim_t)maxfd + 1, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int fillers[4096], nf = 0;
    while (nf < 4096) {
        int fd = fcntl(src, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            break;
        fillers[nf++] = fd;
    }
    int rc_cb = proc_start(p);
    int rc_ex = proc_start(e);
    for (int i = 0; i < nf; i++)
        close(fillers[i]);
    close(src);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

    assert_true(rc_cb == -EMFILE || rc_cb == -ENFILE);
    assert_true(rc_ex == -EMFILE || rc_ex == -ENFILE);
    assert_no_children();
    assert_false(proc_is_alive(p));
    assert_false(proc_is_alive(e));
    assert_int_equal(proc_close(p), 0);
    assert_int_equal(proc_close(e), 0);
    /* and everything works again */
    spawn_warm_up();
    assert_no_children();
}

#define T(f) cmocka_unit_test_teardown(f, spawn_cleanup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_stdio_flush_callback),         T(test_stdio_flush_exec), T(test_start_twice),
        T(test_daemon_cannot_start_children), T(test_daemon_exec),      T(test_start_without_fds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
