/* SPDX-License-Identifier: MIT */
/*
 * Scenario 11: streams. proc_pool_imap of a million tiny items (8 bytes in,
 * 8 out), ordered and unordered, next to proc_pool_map of the same items
 * (what a fixed-size batch costs) and Python's Pool.imap / imap_unordered
 * with chunksize=1000; then examples/parallel_wc over the system's shared
 * data against find | xargs -0 -P2 -n2000 wc over the same tree.
 */
#include "harness.h"
#include "live.h"
#include "python.h"
#include "scenarios.h"

#include <errno.h>
#include <fcntl.h>
#include <libproc/pool.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ================================================================ 11a: imap */

static int s11_square(const void *in, size_t len, proc_reply_t *reply)
{
    long x;
    if (len != sizeof x)
        return 1;
    memcpy(&x, in, sizeof x);
    x = x * x + 7;
    return proc_reply_write(reply, &x, sizeof x);
}

struct s11ctx {
    bool ordered;
    long *in, *out; /* for the map */
};

/* Takes one result and checks it; its index. */
static size_t s11_take(proc_imap_t *m, bool ordered, long want)
{
    proc_result_t r;
    CHECK_PROC(proc_imap_next(m, &r, PROC_WAIT_FOREVER));
    long x = (long)r.index, got;
    if (r.status != 0 || r.len != sizeof got || (ordered && x != want))
        die("imap: item %zu: status %d, %zu bytes (want item %ld)", r.index, r.status, r.len, want);
    memcpy(&got, r.data, sizeof got);
    if (got != x * x + 7)
        die("imap: item %ld: got %ld", x, got);
    free(r.data);
    return r.index;
}

/* Puts n items while taking results (put never waits: a full window means
 * take one first), then takes the rest. Per-item time in ns. */
static double s11_imap(void *ctx, long n)
{
    const struct s11ctx *c = ctx;
    uint64_t t0 = now_ns();
    proc_imap_t *m = proc_pool_imap(live_pool, s11_square, c->ordered);
    if (!m)
        die("proc_pool_imap: %s", strerror(errno));
    long taken = 0;
    for (long i = 0; i < n;) {
        int rc = proc_imap_put(m, &i, sizeof i, 0);
        if (rc == 0)
            i++;
        else if (rc == -ETIMEDOUT)
            s11_take(m, c->ordered, taken++);
        else
            die("proc_imap_put: %s", strerror(-rc));
    }
    CHECK_PROC(proc_imap_done(m));
    while (taken < n)
        s11_take(m, c->ordered, taken++);
    proc_result_t r;
    if (proc_imap_next(m, &r, 0) != -ENODATA)
        die("imap: a result after the last");
    CHECK_PROC(proc_imap_free(m));
    return (double)(now_ns() - t0) / (double)n;
}

static double s11_map(void *ctx, long n)
{
    struct s11ctx *c = ctx;
    uint64_t t0 = now_ns();
    CHECK_PROC(proc_pool_map(live_pool, s7_square, c->in, sizeof *c->in, c->out, sizeof *c->out,
                             (size_t)n));
    uint64_t t1 = now_ns();
    for (long i = 0; i < n; i++)
        if (c->out[i] != i * i + 7)
            die("map: item %ld", i);
    return (double)(t1 - t0) / (double)n;
}

static double s11_python(void *ctx, long n)
{
    const struct s11ctx *c = ctx;
    return python_ns(c->ordered ? "imap" : "imapu", n);
}

static void scenario11_imap(bool have_py)
{
    long items = opt.quick ? 100000 : 1000000;
    int rounds = rounds_or(opt.quick ? 3 : 7);
    long *in = xcalloc((size_t)items, sizeof *in), *out = xcalloc((size_t)items, sizeof *out);
    for (long i = 0; i < items; i++)
        in[i] = i;
    const char *names[] = {"imap", "imap_unordered"};
    for (int k = 0; k < 2; k++) {
        progress("scenario 11: %s of %ld tiny items, x %d rounds", names[k], items, rounds);
        struct s11ctx ctx = {k == 0, in, out};
        struct contender c[] = {
            {"map", s11_map, &ctx},
            {"libproc", s11_imap, &ctx},
            {"python", s11_python, &ctx},
        };
        int n = have_py ? 3 : 2;
        double *res = xcalloc(3 * (size_t)rounds, sizeof *res);
        run_rounds(c, n, items, items / 10, rounds, res);
        for (int i = 0; i < n; i++) {
            double med = median(res + (size_t)i * (size_t)rounds, (size_t)rounds);
            double base = median(res, (size_t)rounds);
            add_row(11, names[k], items, "items", c[i].name, "median", "ns/item", med, med / base,
                    rounds);
        }
        free(res);
    }
    add_note("11: imap = put 8-byte items and take 8-byte results (a full window: take one, then "
             "put), one worker per CPU, ns per item from proc_pool_imap to proc_imap_free; map = "
             "proc_pool_map of the same items with fixed-size slots on the same pool.");
    if (have_py)
        add_note("11: python %s: Pool.imap / imap_unordered(f, range(n), chunksize=1000) on a "
                 "running pool of as many workers, every result summed, timed inside Python.",
                 python_version());
    else
        python_skipped_note("11");
    free(in);
    free(out);
}

/* ========================================================= 11b: parallel_wc */

#ifdef PROC_BENCH_PARALLEL_WC /* the helpers of 11b, which needs the example */
static const char *s11_tree;
static long s11_files;

/* Runs argv with stdout to /dev/null and waits for it; wall time in ns. */
static double s11_run(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) ||
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0))
        die("posix_spawn_file_actions");
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    uint64_t t0 = now_ns();
    slot = spawn_raw(argv[0], argv, &fa);
    reap_ok(slot);
    uint64_t t1 = now_ns();
    posix_spawn_file_actions_destroy(&fa);
    live_reset();
    return (double)(t1 - t0);
}

static double s11_xargs(void *ctx, long ops)
{
    (void)ctx;
    (void)ops;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "find '%s' -type f -print0 | xargs -0 -P2 -n2000 wc", s11_tree);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return s11_run(argv);
}

static double s11_parallel_wc(void *ctx, long ops)
{
    (void)ops;
    char *argv[] = {ctx, (char *)s11_tree, NULL};
    return s11_run(argv);
}

static long s11_count_files(const char *tree)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", tree);
    FILE *f = popen(cmd, "r");
    long n = -1;
    if (!f || fscanf(f, "%ld", &n) != 1)
        n = -1;
    if (f)
        pclose(f);
    return n;
}

#endif

static void scenario11_wc(void)
{
#ifdef PROC_BENCH_PARALLEL_WC
    s11_tree = opt.quick ? "/usr/share/doc" : "/usr/share";
    s11_files = s11_count_files(s11_tree);
    if (s11_files <= 0 || access(PROC_BENCH_PARALLEL_WC, X_OK) != 0) {
        add_note("11: parallel_wc left out: %s has no files, or %s is missing.", s11_tree,
                 PROC_BENCH_PARALLEL_WC);
        return;
    }
    int rounds = rounds_or(opt.quick ? 1 : 5);
    progress("scenario 11: parallel_wc over %s (%ld files), x %d rounds", s11_tree, s11_files,
             rounds);
    struct contender c[] = {
        {"xargs", s11_xargs, NULL},
        {"libproc", s11_parallel_wc, PROC_BENCH_PARALLEL_WC},
    };
    double *res = xcalloc(2 * (size_t)rounds, sizeof *res);
    run_rounds(c, 2, 1, 1, rounds, res); /* the warm-up also fills the page cache */
    double base = median(res, (size_t)rounds) / 1e6;
    for (int i = 0; i < 2; i++) {
        double med = median(res + (size_t)i * (size_t)rounds, (size_t)rounds) / 1e6;
        add_row(11, "parallel_wc", s11_files, "files", c[i].name, "median", "ms/run", med,
                med / base, rounds);
    }
    free(res);
    add_note("11: parallel_wc = examples/parallel_wc %s (lines, words and bytes of every file, "
             "an unordered stream of paths, one worker per CPU), output to /dev/null; xargs = "
             "find %s -type f -print0 | xargs -0 -P2 -n2000 wc; ms per run, page cache warm.",
             s11_tree, s11_tree);
#else
    add_note("11: parallel_wc left out: examples were not built (LIBPROC_BUILD_EXAMPLES=OFF).");
#endif
}

void scenario11(void)
{
    proc_pool_opts_t po;
    memset(&po, 0, sizeof po);
    po.workers = proc_cpu_count();
    live_pool_open(&live_pool, &po);
    bool have_py = python_start();
    scenario11_imap(have_py);
    if (have_py) {
        char buf[16];
        python_cmd(buf, sizeof buf, "endmap", 0);
    }
    live_pool_close(&live_pool);
    check_interrupted();
    scenario11_wc();
}

/* Python's imap next to libproc's. */
void scenario11_info(void)
{
    const char *const names[] = {"imap", "imap_unordered"};
    python_ratio_info(11, names, 2, "python");
}
