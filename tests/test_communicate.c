/* SPDX-License-Identifier: MIT */
/*
 * proc_communicate() (API 4.2): 100 MiB each way with checksums in both
 * orders of the child's reads and writes, a child that never reads its
 * stdin, one that closes it and goes on writing, a timeout in the middle of
 * the output and a second call that gets the rest, a timeout while the
 * output never stops, input and output carried across a timeout, an exec'd
 * program, and every error row.
 *
 * Children never call cmocka: they report through pipes and exit codes and
 * the parent asserts. Timeouts only bound hangs, except where a timeout is
 * the behaviour under test (then the child cannot finish before it).
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "testutil.h"

#define BOUND_MS 60000 /* bound on any hang; never reached when things work */
/* 100 MiB each way; under ThreadSanitizer, which instruments every byte the test's own
 * pattern and checksum loops touch (over 200 s for 100 MiB on a slow machine), 16 MiB. */
#ifdef TU_TSAN
#define BIG ((size_t)16 << 20)
#else
#define BIG ((size_t)100 << 20)
#endif

/* FNV-1a over a stream, chunk by chunk. */
static uint64_t fnv(uint64_t h, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

#define FNV_START 14695981039346656037ULL

/* Byte i of the test pattern of a stream (seed tells stdout, stderr, stdin apart). */
static unsigned char pattern(size_t i, unsigned seed)
{
    return (unsigned char)((i * 131 + seed) ^ (i >> 12));
}

static void fill(unsigned char *b, size_t off, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = pattern(off + i, seed);
}

static uint64_t pattern_hash(size_t n, unsigned seed)
{
    unsigned char buf[65536];
    uint64_t h = FNV_START;
    for (size_t off = 0; off < n; off += sizeof buf) {
        size_t k = n - off < sizeof buf ? n - off : sizeof buf;
        fill(buf, off, k, seed);
        h = fnv(h, buf, k);
    }
    return h;
}

static int write_pattern(int fd, size_t n, unsigned seed)
{
    unsigned char buf[65536];
    for (size_t off = 0; off < n; off += sizeof buf) {
        size_t k = n - off < sizeof buf ? n - off : sizeof buf;
        fill(buf, off, k, seed);
        if (tu_write_full(fd, buf, k) < 0)
            return -1;
    }
    return 0;
}

/* Reads stdin to EOF; exit 0 when it was BIG bytes of seed 3's pattern. */
static int read_and_check_stdin(void)
{
    unsigned char buf[65536];
    uint64_t h = FNV_START;
    size_t total = 0;
    ssize_t r;
    while ((r = read(0, buf, sizeof buf)) > 0) {
        h = fnv(h, buf, (size_t)r);
        total += (size_t)r;
    }
    return r == 0 && total == BIG && h == pattern_hash(BIG, 3) ? 0 : 10;
}

/* arg "rw": reads all of stdin first, then writes stdout and stderr; "wr": the other way. */
static int big_both_ways(void *arg)
{
    bool read_first = strcmp(arg, "rw") == 0;
    int rc = read_first ? read_and_check_stdin() : 0;
    if (write_pattern(2, BIG, 2) < 0 || write_pattern(1, BIG, 1) < 0)
        return 20;
    return read_first ? rc : read_and_check_stdin();
}

static proc_t *start_piped(proc_target_fn *fn, void *arg, bool in)
{
    proc_t *p = proc_new(fn, arg);
    assert_non_null(p);
    if (in)
        assert_int_equal(proc_set_stdio(p, 0, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_set_stdio(p, 2, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(p), 0);
    return p;
}

static void big_run(const char *order)
{
    unsigned char *in = malloc(BIG);
    assert_non_null(in);
    fill(in, 0, BIG, 3);
    proc_t *p = start_piped(big_both_ways, (void *)order, true);
    proc_output_t out = {0}, err = {0};
    assert_int_equal(proc_communicate(p, in, BIG, &out, &err, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0); /* the child checked its stdin */
    assert_int_equal(out.len, BIG);
    assert_int_equal(err.len, BIG);
    assert_int_equal(out.data[out.len], '\0');
    assert_true(fnv(FNV_START, (unsigned char *)out.data, out.len) == pattern_hash(BIG, 1));
    assert_true(fnv(FNV_START, (unsigned char *)err.data, err.len) == pattern_hash(BIG, 2));
    free(out.data);
    free(err.data);
    free(in);
    assert_int_equal(proc_close(p), 0);
}

static void test_100_mib_each_way_reading_first(void **state)
{
    (void)state;
    big_run("rw");
}

static void test_100_mib_each_way_writing_first(void **state)
{
    (void)state;
    big_run("wr");
}

/* Writes a line to stdout and exits without touching stdin. */
static int ignore_stdin(void *arg)
{
    (void)arg;
    return tu_write_full(1, "done\n", 5) < 0 ? 1 : 0;
}

static void test_child_that_never_reads_stdin(void **state)
{
    (void)state;
    size_t n = (size_t)8 << 20; /* far more than a pipe holds */
    char *in = calloc(1, n);
    assert_non_null(in);
    proc_t *p = start_piped(ignore_stdin, NULL, true);
    proc_output_t out = {0};
    assert_int_equal(proc_communicate(p, in, n, &out, NULL, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_string_equal(out.data, "done\n");
    free(out.data);
    free(in);
    assert_int_equal(proc_close(p), 0);
}

/* Closes its stdin at once, then writes 1 MiB to stdout. */
static int close_stdin_then_write(void *arg)
{
    (void)arg;
    close(0);
    return write_pattern(1, (size_t)1 << 20, 1) < 0 ? 1 : 0;
}

static void test_child_that_closes_stdin_and_goes_on(void **state)
{
    (void)state;
    size_t n = (size_t)4 << 20;
    char *in = calloc(1, n);
    assert_non_null(in);
    proc_t *p = start_piped(close_stdin_then_write, NULL, true);
    proc_output_t out = {0};
    assert_int_equal(proc_communicate(p, in, n, &out, NULL, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(out.len, (size_t)1 << 20);
    assert_true(fnv(FNV_START, (unsigned char *)out.data, out.len) ==
                pattern_hash((size_t)1 << 20, 1));
    free(out.data);
    free(in);
    assert_int_equal(proc_close(p), 0);
}

/* Writes "first", waits for the gate (arg), writes "second". */
static int write_wait_write(void *arg)
{
    if (tu_write_full(1, "first", 5) < 0)
        return 1;
    if (tu_gate_wait(arg, BOUND_MS) != 0)
        return 2;
    return tu_write_full(1, "second", 6) < 0 ? 3 : 0;
}

static void test_timeout_then_the_rest(void **state)
{
    (void)state;
    tu_gate gate;
    assert_int_equal(tu_gate_init(&gate), 0);
    proc_t *p = start_piped(write_wait_write, &gate, false);
    proc_output_t out = {0};
    /* The child cannot end before the gate opens: this call must time out. */
    int r;
    int64_t bound = tu_now_ms() + BOUND_MS;
    while ((r = proc_communicate(p, NULL, 0, &out, NULL, 50)) == -ETIMEDOUT && out.len < 5 &&
           tu_now_ms() < bound)
        ;
    assert_int_equal(r, -ETIMEDOUT);
    assert_string_equal(out.data, "first");
    assert_true(proc_is_alive(p));
    tu_gate_open(&gate);
    assert_int_equal(proc_communicate(p, NULL, 0, &out, NULL, BOUND_MS), 0);
    assert_string_equal(out.data, "firstsecond");
    assert_int_equal(proc_exitcode(p), 0);
    free(out.data);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&gate);
}

/* Writes to stdout until it is killed (or the pipe breaks), into a pipe of 1 MiB: a reader that
 * takes 16 KiB at a time (proc_communicate() dropping a stream) finds it ready at every poll. */
static int write_for_ever(void *arg)
{
    (void)arg;
    alarm(60); /* bound on a hang of the test */
    (void)fcntl(1, F_SETPIPE_SZ, 1 << 20);
    char buf[65536];
    memset(buf, 'y', sizeof buf);
    while (tu_write_full(1, buf, sizeof buf) == 0)
        ;
    return 1;
}

/* Some end is ready at every poll: the deadline must still end the call. */
static void test_timeout_while_output_never_stops(void **state)
{
    (void)state;
    proc_t *p = start_piped(write_for_ever, NULL, false);
    assert_int_equal(proc_communicate(p, NULL, 0, NULL, NULL, 200), -ETIMEDOUT);
    proc_output_t out = {0};
    assert_int_equal(proc_communicate(p, NULL, 0, &out, NULL, 100), -ETIMEDOUT);
    assert_int_equal(proc_communicate(p, NULL, 0, &out, NULL, 0), -ETIMEDOUT);
    assert_true(proc_is_alive(p));
    assert_int_equal(proc_kill(p), 0);
    assert_int_equal(proc_communicate(p, NULL, 0, &out, NULL, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), -SIGKILL);
    assert_true(out.len > 0 && out.data[0] == 'y' && out.data[out.len - 1] == 'y');
    free(out.data);
    assert_int_equal(proc_close(p), 0);
}

#define PREFIX ((size_t)256 << 10)
#define ECHOED ((size_t)4 << 20)

/* Writes PREFIX bytes of seed 1, waits for the gate (arg), then copies stdin to stdout. */
static int prefix_gate_echo(void *arg)
{
    if (write_pattern(1, PREFIX, 1) < 0)
        return 1;
    if (tu_gate_wait(arg, BOUND_MS) != 0)
        return 2;
    char buf[65536];
    ssize_t r;
    while ((r = read(0, buf, sizeof buf)) > 0)
        if (tu_write_full(1, buf, (size_t)r) < 0)
            return 3;
    return r == 0 ? 0 : 4;
}

/* A call that timed out left input unwritten and output in the buffer: the next call, with
 * other input arguments (ignored), writes the rest of the first input and appends. */
static void test_timeout_keeps_input_and_output(void **state)
{
    (void)state;
    tu_gate gate;
    assert_int_equal(tu_gate_init(&gate), 0);
    unsigned char *in = malloc(ECHOED);
    assert_non_null(in);
    fill(in, 0, ECHOED, 2);
    proc_t *p = start_piped(prefix_gate_echo, &gate, true);
    proc_output_t out = {0};
    /* Stdin fills up and the child waits at the gate: the call cannot finish. */
    assert_int_equal(proc_communicate(p, in, ECHOED, &out, NULL, 300), -ETIMEDOUT);
    assert_true(out.len <= PREFIX);
    tu_gate_open(&gate);
    assert_int_equal(proc_communicate(p, "other", 5, &out, NULL, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(out.len, PREFIX + ECHOED);
    assert_true(fnv(FNV_START, (unsigned char *)out.data, PREFIX) == pattern_hash(PREFIX, 1));
    assert_memory_equal(out.data + PREFIX, in, ECHOED);
    free(out.data);
    free(in);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&gate);
}

static void test_exec_echo(void **state)
{
    (void)state;
    const char *argv[] = {"sh", "-c", "cat; echo err >&2; exit 3", NULL};
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    for (int i = 0; i < 3; i++)
        assert_int_equal(proc_set_stdio(p, i, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(p), 0);
    proc_output_t out = {0}, err = {0};
    assert_int_equal(proc_communicate(p, "hi\n", 3, &out, &err, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 3);
    assert_string_equal(out.data, "hi\n");
    assert_string_equal(err.data, "err\n");
    free(out.data);
    free(err.data);
    assert_int_equal(proc_close(p), 0);
}

static void test_nothing_read_leaves_null(void **state)
{
    (void)state;
    proc_t *p = start_piped(NULL, NULL, true);
    proc_output_t out = {0}, err = {0};
    assert_int_equal(proc_communicate(p, NULL, 0, &out, &err, BOUND_MS), 0);
    assert_null(out.data);
    assert_int_equal(out.len, 0);
    assert_null(err.data);
    assert_int_equal(proc_close(p), 0);
}

static void test_communicate_errors(void **state)
{
    (void)state;
    proc_output_t out = {0};
    assert_int_equal(proc_communicate(NULL, NULL, 0, NULL, NULL, 0), -EINVAL);
    proc_t *p = proc_new(NULL, NULL);
    assert_non_null(p);
    assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_communicate(p, NULL, 0, &out, NULL, 0), -EINVAL); /* not started */
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_communicate(p, "x", 1, NULL, NULL, BOUND_MS), -EINVAL);  /* stdin */
    assert_int_equal(proc_communicate(p, NULL, 0, NULL, &out, BOUND_MS), -EINVAL); /* stderr */
    assert_int_equal(proc_communicate(p, NULL, 0, &out, NULL, -2), -EINVAL);
    assert_int_equal(proc_communicate(proc_current(), NULL, 0, NULL, NULL, 0), -EINVAL);
    assert_int_equal(proc_communicate(p, NULL, 0, &out, NULL, BOUND_MS), 0);
    assert_null(out.data);
    assert_int_equal(proc_close(p), 0);

    p = proc_new(NULL, NULL); /* stdin a pipe, but no input behind the length */
    assert_non_null(p);
    assert_int_equal(proc_set_stdio(p, 0, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_communicate(p, NULL, 1, NULL, NULL, BOUND_MS), -EINVAL);
    assert_int_equal(proc_communicate(p, NULL, 0, &out, NULL, BOUND_MS), -EINVAL); /* stdout */
    assert_int_equal(proc_communicate(p, "x", 1, NULL, NULL, BOUND_MS), 0);
    assert_int_equal(proc_close(p), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE that escaped would end the test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_100_mib_each_way_reading_first),
        cmocka_unit_test(test_100_mib_each_way_writing_first),
        cmocka_unit_test(test_child_that_never_reads_stdin),
        cmocka_unit_test(test_child_that_closes_stdin_and_goes_on),
        cmocka_unit_test(test_timeout_then_the_rest),
        cmocka_unit_test(test_timeout_while_output_never_stops),
        cmocka_unit_test(test_timeout_keeps_input_and_output),
        cmocka_unit_test(test_exec_echo),
        cmocka_unit_test(test_nothing_read_leaves_null),
        cmocka_unit_test(test_communicate_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
