/* SPDX-License-Identifier: MIT */
/*
 * Scenario 10: running a program and capturing what it says, Python's
 * subprocess.run(capture_output=True). Two rows: `cat` copying 100 MiB
 * from its stdin to its stdout ("communicate"), and `echo hi` ("echo", the
 * cost of a whole exec + capture + join). libproc's proc_communicate against
 * what a C programmer writes by hand (posix_spawn, pipes, a poll loop,
 * waitpid) and against Python's subprocess.run on the same program.
 */
#include "harness.h"
#include "live.h"
#include "python.h"
#include "scenarios.h"

#include <libproc/ipc.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

static unsigned char *s10_input; /* the bytes cat copies */
static size_t s10_len;

/* Output collected by the hand-written loop: doubling, as libproc's. */
struct s10_buf {
    char *data;
    size_t len, cap;
};

static void s10_check(const char *who, const char *data, size_t len)
{
    if (len != s10_len || memcmp(data, s10_input, len) != 0)
        die("%s: cat gave back %zu bytes, not the %zu sent", who, len, s10_len);
}

/* Reads what is ready into b (growing it); false at EOF. */
static bool s10_read(int fd, struct s10_buf *b)
{
    if (b->cap - b->len < 65536) {
        b->cap = b->cap ? b->cap * 2 : 65536 * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data)
            die("out of memory");
    }
    ssize_t r = read(fd, b->data + b->len, b->cap - b->len);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (r < 0)
        die("read: %s", strerror(errno));
    b->len += (size_t)r;
    return r > 0;
}

/* Spawns argv with pipes for the streams marked in want[] (the parent's ends in fds). */
static pid_t s10_spawn(char *const argv[], const bool want[3], int fds[3])
{
    posix_spawn_file_actions_t fa;
    int child[3] = {-1, -1, -1};
    if (posix_spawn_file_actions_init(&fa))
        die("posix_spawn_file_actions_init");
    for (int i = 0; i < 3; i++) {
        fds[i] = -1;
        if (!want[i])
            continue;
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            die("pipe2: %s", strerror(errno));
        fds[i] = i == 0 ? p[1] : p[0];
        child[i] = i == 0 ? p[0] : p[1];
        if (posix_spawn_file_actions_adddup2(&fa, child[i], i))
            die("posix_spawn_file_actions_adddup2");
    }
    pid_t pid = spawn_raw(argv[0], argv, &fa);
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 3; i++)
        if (child[i] >= 0)
            close(child[i]);
    return pid;
}

/* ====================================================== 10a: cat, 100 MiB */

static char *cat_argv[] = {"/bin/cat", NULL};

/* By hand: stdin non-blocking, one poll over the three pipes, then waitpid. */
static double s10_loop(void *ctx, long ops)
{
    (void)ctx;
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    uint64_t spent = 0;
    for (long op = 0; op < ops; op++) {
        uint64_t t0 = now_ns();
        int fd[3];
        slot = s10_spawn(cat_argv, (const bool[3]){true, true, true}, fd);
        if (fcntl(fd[0], F_SETFL, O_NONBLOCK) < 0)
            die("fcntl: %s", strerror(errno));
        struct s10_buf out = {0}, err = {0};
        size_t off = 0;
        while (fd[0] >= 0 || fd[1] >= 0 || fd[2] >= 0) {
            struct pollfd p[3] = {{fd[0], POLLOUT, 0}, {fd[1], POLLIN, 0}, {fd[2], POLLIN, 0}};
            if (poll(p, 3, -1) < 0 && errno != EINTR)
                die("poll: %s", strerror(errno));
            if (p[0].revents) {
                ssize_t w = write(fd[0], s10_input + off, s10_len - off);
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                    die("write: %s", strerror(errno));
                off += w > 0 ? (size_t)w : 0;
                if (off == s10_len) {
                    close(fd[0]);
                    fd[0] = -1;
                }
            }
            for (int i = 1; i < 3; i++)
                if (p[i].revents && !s10_read(fd[i], i == 1 ? &out : &err)) {
                    close(fd[i]);
                    fd[i] = -1;
                }
        }
        reap_ok(slot);
        slot = 0;
        spent += now_ns() - t0;
        s10_check("loop", out.data, out.len);
        free(out.data);
        free(err.data);
    }
    live_reset();
    return (double)spent / (double)ops;
}

static double s10_libproc(void *ctx, long ops)
{
    (void)ctx;
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    uint64_t spent = 0;
    for (long op = 0; op < ops; op++) {
        uint64_t t0 = now_ns();
        slot = proc_new_exec((const char *const *)cat_argv);
        if (!slot)
            die("proc_new_exec: %s", strerror(errno));
        for (int i = 0; i < 3; i++)
            CHECK_PROC(proc_set_stdio(slot, i, PROC_STDIO_PIPE));
        CHECK_PROC(proc_start(slot));
        proc_output_t out = {0}, err = {0};
        CHECK_PROC(proc_communicate(slot, s10_input, s10_len, &out, &err, PROC_WAIT_FOREVER));
        join_ok(slot);
        close_ok(&slot);
        spent += now_ns() - t0;
        s10_check("libproc", out.data, out.len);
        free(out.data);
        free(err.data);
    }
    live_reset();
    return (double)spent / (double)ops;
}

static double s10_python(void *ctx, long ops)
{
    (void)ctx;
    (void)ops; /* always 1: one run per batch */
    return python_ns("catrun", (long)(s10_len / MIB));
}

/* ========================================================= 10b: echo hi */

static char *echo_argv[] = {"/bin/echo", "hi", NULL};

static void s10_check_hi(const char *who, const char *data, size_t len)
{
    if (len != 3 || memcmp(data, "hi\n", 3) != 0)
        die("%s: echo hi said %zu bytes", who, len);
}

/* By hand: a pipe for stdout, posix_spawn, read to EOF, waitpid. */
static double s10_echo_raw(void *ctx, long ops)
{
    (void)ctx;
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    uint64_t t0 = now_ns();
    for (long op = 0; op < ops; op++) {
        int fd[3];
        slot = s10_spawn(echo_argv, (const bool[3]){false, true, false}, fd);
        struct s10_buf out = {0};
        while (s10_read(fd[1], &out))
            ;
        close(fd[1]);
        reap_ok(slot);
        slot = 0;
        s10_check_hi("raw", out.data, out.len);
        free(out.data);
    }
    uint64_t t1 = now_ns();
    live_reset();
    return (double)(t1 - t0) / (double)ops;
}

static double s10_echo_libproc(void *ctx, long ops)
{
    (void)ctx;
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    uint64_t t0 = now_ns();
    for (long op = 0; op < ops; op++) {
        slot = proc_new_exec((const char *const *)echo_argv);
        if (!slot)
            die("proc_new_exec: %s", strerror(errno));
        CHECK_PROC(proc_set_stdio(slot, 1, PROC_STDIO_PIPE));
        CHECK_PROC(proc_start(slot));
        proc_output_t out = {0};
        CHECK_PROC(proc_communicate(slot, NULL, 0, &out, NULL, PROC_WAIT_FOREVER));
        join_ok(slot);
        close_ok(&slot);
        s10_check_hi("libproc", out.data, out.len);
        free(out.data);
    }
    uint64_t t1 = now_ns();
    live_reset();
    return (double)(t1 - t0) / (double)ops;
}

static double s10_echo_python(void *ctx, long ops)
{
    (void)ctx;
    return python_ns("echorun", ops);
}

/* ================================================================ scenario */

static void find_program(char *argv[], const char *other)
{
    if (access(argv[0], X_OK) != 0)
        argv[0] = (char *)other;
    if (access(argv[0], X_OK) != 0)
        die("need %s", argv[0]);
}

void scenario10(void)
{
    find_program(cat_argv, "/usr/bin/cat");
    find_program(echo_argv, "/usr/bin/echo");
    bool have_py = python_start();
    int n = have_py ? 3 : 2;

    long mib = opt.quick ? 8 : 100;
    int rounds = rounds_or(opt.quick ? 3 : 11);
    s10_len = (size_t)mib * MIB;
    s10_input = malloc(s10_len);
    if (!s10_input)
        die("cannot allocate %ld MiB", mib);
    for (size_t i = 0; i < s10_len; i++)
        s10_input[i] = (unsigned char)(i * 2654435761u >> 24);
    progress("scenario 10: %s through proc_communicate, %ld MiB x %d rounds", cat_argv[0], mib,
             rounds);
    struct contender c[] = {
        {"loop", s10_loop, NULL},
        {"libproc", s10_libproc, NULL},
        {"python", s10_python, NULL},
    };
    double *out = xcalloc(3 * (size_t)rounds, sizeof *out);
    run_rounds(c, n, 1, 0, rounds, out);
    report_rounds(10, "communicate", mib, "MiB", c, n, rounds, out, NULL);
    free(out);
    free(s10_input);
    s10_input = NULL;

    long ops = opt.quick ? 10 : 50;
    rounds = rounds_or(opt.quick ? 3 : 21);
    progress("scenario 10: %s hi, captured, %ld ops x %d rounds", echo_argv[0], ops, rounds);
    struct contender e[] = {
        {"raw", s10_echo_raw, NULL},
        {"libproc", s10_echo_libproc, NULL},
        {"python", s10_echo_python, NULL},
    };
    out = xcalloc(3 * (size_t)rounds, sizeof *out);
    run_rounds(e, n, ops, ops / 5, rounds, out);
    report_rounds(10, "communicate_echo", -1, "", e, n, rounds, out, NULL);
    free(out);

    add_note("10: communicate = %s copying %ld MiB from its stdin to its stdout, all three "
             "streams piped, us per run (spawn to reaped); loop = posix_spawn + a hand-written "
             "poll() loop (stdin non-blocking, output in doubling buffers) + waitpid; libproc = "
             "proc_new_exec + proc_communicate + proc_join.",
             cat_argv[0], mib);
    add_note("10: communicate_echo = %s hi with stdout captured, us per run; raw = pipe2 + "
             "posix_spawn + read to EOF + waitpid.",
             echo_argv[0]);
    if (have_py)
        add_note("10: python %s: subprocess.run([...], input=..., capture_output=True) of the "
                 "same programs (found in PATH), timed inside Python.",
                 python_version());
    else
        python_skipped_note("10");
}

/* Python's subprocess.run next to libproc: no threshold. */
void scenario10_info(void)
{
    const char *const names[] = {"communicate", "communicate_echo"};
    python_ratio_info(10, names, 2, "python subprocess.run");
}
