/* SPDX-License-Identifier: MIT */
/*
 * The child's standard streams (src/stdio.c): PROC_STDIO_PIPE both ways in both
 * modes, /dev/null, a caller's fd, overlapping dup2s (a 0<->1 swap), argument
 * errors, and that no other process keeps a pipe end alive (EOF arrives).
 * Children report through pipes and exit codes; timeouts only bound hangs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "testutil.h"

#define BOUND_MS 10000

static void join_ok(proc_t *p, int code)
{
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), code);
    assert_int_equal(proc_close(p), 0);
}

/* Uppercases stdin to stdout until EOF; exit code = bytes seen & 0xff. */
static int upcase(void *arg)
{
    (void)arg;
    char buf[4096];
    size_t total = 0;
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] >= 'a' && buf[i] <= 'z')
                buf[i] = (char)(buf[i] - 'a' + 'A');
        if (tu_write_full(1, buf, (size_t)n) < 0)
            return 200;
        total += (size_t)n;
    }
    return n < 0 ? 201 : (int)(total & 0xff);
}

static void test_exec_captures_stdout_and_stderr(void **state)
{
    (void)state;
    const char *argv[] = {"sh", "-c", "echo to-out; echo to-err >&2; exit 5", NULL};
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    assert_int_equal(proc_stdio_fd(p, 1), -EBADF); /* nothing before start */
    assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_set_stdio(p, 2, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_stdio_fd(p, 0), -EBADF); /* inherited, no pipe */
    char out[64], err[64];
    assert_int_equal(tu_read_to_eof(proc_stdio_fd(p, 1), out, sizeof out, BOUND_MS), 7);
    assert_int_equal(tu_read_to_eof(proc_stdio_fd(p, 2), err, sizeof err, BOUND_MS), 7);
    assert_string_equal(out, "to-out\n");
    assert_string_equal(err, "to-err\n");
    join_ok(p, 5);
}

static void test_callback_stdin_and_stdout_pipes(void **state)
{
    (void)state;
    proc_t *p = proc_new(upcase, NULL);
    assert_non_null(p);
    assert_int_equal(proc_set_stdio(p, 0, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(tu_write_full(proc_stdio_fd(p, 0), "hello, child", 12), 0);
    assert_int_equal(proc_stdio_close(p, 0), 0); /* EOF for the child */
    assert_int_equal(proc_stdio_fd(p, 0), -EBADF);
    assert_int_equal(proc_stdio_close(p, 0), -EBADF);
    char out[64];
    assert_int_equal(tu_read_to_eof(proc_stdio_fd(p, 1), out, sizeof out, BOUND_MS), 12);
    assert_string_equal(out, "HELLO, CHILD");
    join_ok(p, 12);
}

/* A megabyte through stdout while the parent reads: neither side may block the other. */
static void test_one_mebibyte_through_a_pipe(void **state)
{
    (void)state;
    const char *argv[] = {"head", "-c", "1048576", "/dev/zero", NULL};
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(p), 0);
    size_t total = 0;
    char buf[65536];
    for (;;) {
        assert_int_equal(tu_wait_readable(proc_stdio_fd(p, 1), BOUND_MS), 1);
        ssize_t n = read(proc_stdio_fd(p, 1), buf, sizeof buf);
        assert_true(n >= 0);
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            assert_int_equal(buf[i], 0);
        total += (size_t)n;
    }
    assert_int_equal(total, 1048576);
    join_ok(p, 0);
}

static int read_stdin_report(void *arg)
{
    (void)arg;
    char c;
    ssize_t n = read(0, &c, 1);
    /* /dev/null: EOF at once; writes vanish without error. */
    return n == 0 && write(1, "x", 1) == 1 && write(2, "y", 1) == 1 ? 0 : 1;
}

static void test_null_streams(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        const char *argv[] = {"sh", "-c", "read x; test $? -ne 0 && echo gone && echo gone >&2",
                              NULL};
        proc_t *p = mode ? proc_new_exec(argv) : proc_new(read_stdin_report, NULL);
        assert_non_null(p);
        for (int s = 0; s < 3; s++)
            assert_int_equal(proc_set_stdio(p, s, PROC_STDIO_NULL), 0);
        assert_int_equal(proc_start(p), 0);
        assert_int_equal(proc_stdio_fd(p, 1), -EBADF);
        join_ok(p, 0);
    }
}

static void test_callers_fd(void **state)
{
    (void)state;
    char path[] = "/tmp/libproc-stdio-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    const char *argv[] = {"sh", "-c", "echo via-fd", NULL};
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    assert_int_equal(proc_set_stdio(p, 1, fd), 0);
    assert_int_equal(proc_start(p), 0);
    join_ok(p, 0);
    char buf[32] = {0};
    assert_int_equal(pread(fd, buf, sizeof buf - 1, 0), 7);
    assert_string_equal(buf, "via-fd\n");
    close(fd);
}

/*
 * Runs in a child: it puts the read end of the test's pipe on its fd 1 and the
 * write end of the way back on its fd 0, then starts a grandchild with stdin
 * from fd 1 and stdout to fd 0. That only works if the grandchild's dup2s do
 * not overwrite one another.
 */
static int swap_middle(void *arg)
{
    const int *fds = arg; /* to_grand[0], to_grand[1], from_grand[0], from_grand[1] */
    close(fds[1]);        /* the test's ends: the grandchild must not hold them */
    close(fds[2]);
    if (dup2(fds[0], 1) < 0 || dup2(fds[3], 0) < 0)
        return 90;
    close(fds[0]);
    close(fds[3]);
    proc_t *g = proc_new(upcase, NULL);
    if (!g || proc_set_stdio(g, 0, 1) != 0 || proc_set_stdio(g, 1, 0) != 0)
        return 91;
    if (proc_start(g) != 0)
        return 92;
    close(0); /* only the grandchild holds the pipes now */
    close(1);
    if (proc_join(g, BOUND_MS) != 0)
        return 93;
    return proc_exitcode(g) == 4 ? 0 : 94;
}

static void test_swapped_stdin_stdout(void **state)
{
    (void)state;
    int to_grand[2], from_grand[2];
    assert_int_equal(tu_pipe(to_grand), 0);
    assert_int_equal(tu_pipe(from_grand), 0);
    int fds[4] = {to_grand[0], to_grand[1], from_grand[0], from_grand[1]};
    proc_t *p = proc_new(swap_middle, fds);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    close(to_grand[0]);
    close(from_grand[1]);
    assert_int_equal(tu_write_full(to_grand[1], "swap", 4), 0);
    close(to_grand[1]);
    char out[16];
    assert_int_equal(tu_read_to_eof(from_grand[0], out, sizeof out, BOUND_MS), 4);
    assert_string_equal(out, "SWAP");
    close(from_grand[0]);
    join_ok(p, 0);
}

static int block_on_gate(void *arg)
{
    return tu_gate_wait(arg, BOUND_MS) == 0 ? 0 : 1;
}

/* A sibling started later must not hold our child's stdin open. */
static void test_sibling_does_not_hold_pipe_ends(void **state)
{
    (void)state;
    tu_gate gate;
    assert_int_equal(tu_gate_init(&gate), 0);
    proc_t *a = proc_new(upcase, NULL);
    assert_non_null(a);
    assert_int_equal(proc_set_stdio(a, 0, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_set_stdio(a, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(a), 0);
    proc_t *b = proc_new(block_on_gate, &gate);
    assert_non_null(b);
    assert_int_equal(proc_start(b), 0);
    assert_int_equal(tu_write_full(proc_stdio_fd(a, 0), "ab", 2), 0);
    assert_int_equal(proc_stdio_close(a, 0), 0);
    char out[8];
    assert_int_equal(tu_read_to_eof(proc_stdio_fd(a, 1), out, sizeof out, BOUND_MS), 2);
    join_ok(a, 2); /* a saw EOF although b, forked after it, still runs */
    tu_gate_open(&gate);
    join_ok(b, 0);
    tu_gate_destroy(&gate);
}

/*
 * Starts racing with forks in another thread: a pipe's parent end must never
 * stay open in a process forked meanwhile (before the reaper adopted the
 * child, it is closed there as in flight; after, as the fd table's). One
 * thread's piped children must each see EOF while the other thread's
 * children, forked all along, are still alive. The piped children chdir, so
 * each start waits for its child's report with the pipes in flight: a wide
 * window for the other thread's forks.
 */
#define RACE_ROUNDS 15
#define RACE_HELD_MAX 64
/* Up to RACE_HELD_MAX children end at once when the gate opens: under valgrind
 * each runs a leak check at its exit, so their joins get a wider bound. */
#define RACE_JOIN_MS 60000

struct race {
    tu_gate gate;
    proc_t *held[RACE_HELD_MAX]; /* alive until the gate opens */
    int nheld, piped_failures, held_failures;
    atomic_bool piped_done;
};

static void *start_piped_children(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        proc_t *p = proc_new(upcase, NULL);
        char out[8];
        if (!p || proc_set_cwd(p, ".") || proc_set_stdio(p, 0, PROC_STDIO_PIPE) ||
            proc_set_stdio(p, 1, PROC_STDIO_PIPE) || proc_start(p) ||
            tu_write_full(proc_stdio_fd(p, 0), "xy", 2) || proc_stdio_close(p, 0) ||
            tu_read_to_eof(proc_stdio_fd(p, 1), out, sizeof out, BOUND_MS) != 2 ||
            proc_join(p, BOUND_MS) || proc_exitcode(p) != 2)
            r->piped_failures++;
        proc_kill(p);
        proc_join(p, BOUND_MS);
        proc_close(p);
    }
    atomic_store(&r->piped_done, true);
    return NULL;
}

static void *start_held_children(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->piped_done) && r->nheld < RACE_HELD_MAX) {
        proc_t *p = proc_new(tu_gate_main, &r->gate);
        if (!p || proc_start(p) != 0) {
            r->held_failures++;
            proc_close(p);
            break;
        }
        r->held[r->nheld++] = p;
    }
    return NULL;
}

static void test_racing_forks_do_not_hold_pipe_ends(void **state)
{
    (void)state;
    struct race r = {.nheld = 0};
    assert_int_equal(tu_gate_init(&r.gate), 0);
    atomic_init(&r.piped_done, false);
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, start_piped_children, &r), 0);
    assert_int_equal(pthread_create(&b, NULL, start_held_children, &r), 0);
    assert_int_equal(pthread_join(a, NULL), 0);
    assert_int_equal(pthread_join(b, NULL), 0);
    tu_gate_open(&r.gate);
    for (int i = 0; i < r.nheld; i++) {
        assert_int_equal(proc_join(r.held[i], RACE_JOIN_MS), 0);
        assert_int_equal(proc_exitcode(r.held[i]), 0);
        assert_int_equal(proc_close(r.held[i]), 0);
    }
    assert_int_equal(r.piped_failures, 0);
    assert_int_equal(r.held_failures, 0);
    tu_gate_destroy(&r.gate);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(proc_set_stdio(NULL, 0, PROC_STDIO_PIPE), -EINVAL);
    assert_int_equal(proc_stdio_fd(NULL, 0), -EINVAL);
    assert_int_equal(proc_stdio_close(NULL, 0), -EINVAL);
    proc_t *p = proc_new(NULL, NULL);
    assert_non_null(p);
    assert_int_equal(proc_set_stdio(p, 3, PROC_STDIO_PIPE), -EINVAL);
    assert_int_equal(proc_set_stdio(p, -1, PROC_STDIO_PIPE), -EINVAL);
    assert_int_equal(proc_set_stdio(p, 0, -4), -EINVAL);
    assert_int_equal(proc_stdio_fd(p, 3), -EINVAL);
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(proc_set_stdio(p, 1, fds[1]), -EBADF); /* closed fd */
    assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_NULL), -EBUSY);
    assert_int_equal(proc_set_stdio(p, 7, -9), -EBUSY); /* -EBUSY before the arguments */
    join_ok(p, 0);
}

/* A failed start leaves no pipe behind; many starts leak nothing. */
static void test_no_fd_leaks(void **state)
{
    (void)state;
    int before = tu_count_fds();
    proc_t *bad = proc_new(NULL, NULL);
    assert_non_null(bad);
    assert_int_equal(proc_set_cwd(bad, "/nonexistent/libproc"), 0);
    assert_int_equal(proc_set_stdio(bad, 0, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_set_stdio(bad, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(bad), -ENOENT);
    assert_int_equal(proc_stdio_fd(bad, 0), -EBADF);
    assert_int_equal(proc_close(bad), 0);
    assert_int_equal(tu_count_fds(), before);
    for (int i = 0; i < 200; i++) {
        proc_t *p = proc_new(upcase, NULL);
        assert_non_null(p);
        for (int s = 0; s < 3; s++)
            assert_int_equal(proc_set_stdio(p, s, PROC_STDIO_PIPE), 0);
        assert_int_equal(proc_start(p), 0);
        assert_int_equal(proc_stdio_close(p, 0), 0);
        assert_int_equal(proc_join(p, BOUND_MS), 0);
        assert_int_equal(proc_close(p), 0); /* closes the remaining parent ends */
    }
    assert_int_equal(tu_count_fds(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec_captures_stdout_and_stderr),
        cmocka_unit_test(test_callback_stdin_and_stdout_pipes),
        cmocka_unit_test(test_one_mebibyte_through_a_pipe),
        cmocka_unit_test(test_null_streams),
        cmocka_unit_test(test_callers_fd),
        cmocka_unit_test(test_swapped_stdin_stdout),
        cmocka_unit_test(test_sibling_does_not_hold_pipe_ends),
        cmocka_unit_test(test_racing_forks_do_not_hold_pipe_ends),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_no_fd_leaks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
