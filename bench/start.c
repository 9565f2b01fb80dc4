/* SPDX-License-Identifier: MIT */
/*
 * Scenarios 1, 2 and 4: the cost of one process. Start+join of a forked
 * child that exits at once (1), exec of /bin/true while the parent holds
 * more and more memory (2; libuv's contender is in libuv.c), and how soon a
 * join returns after the child's exit (4). Each against the raw system calls.
 */
#include "harness.h"
#include "libuv.h"
#include "live.h"
#include "scenarios.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ================================================ 1: start+join, fork mode */

/*
 * Scenarios 1 and 2's raw batch: ops start+join cycles of one child at a
 * time, forked to exit at once (path NULL) or posix_spawn'ed. ns per op.
 */
static double raw_start_join(long ops, const char *path, char *const argv[])
{
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        if (path) {
            slot = spawn_raw(path, argv, NULL);
        } else {
            pid_t pid = fork();
            if (pid < 0)
                die("fork: %s", strerror(errno));
            if (pid == 0)
                _exit(0);
            slot = pid;
        }
        reap_ok(slot);
        slot = 0;
    }
    uint64_t t1 = now_ns();
    live_reset();
    return (double)(t1 - t0) / (double)ops;
}

/* The same with libproc, exec'ing argv unless it is NULL; served: through the fork server. */
static double libproc_start_join(long ops, const char *const argv[], bool served)
{
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        slot = argv ? proc_new_exec(argv) : proc_new(NULL, NULL);
        if (!slot)
            die("%s: %s", argv ? "proc_new_exec" : "proc_new", strerror(errno));
        if (served)
            CHECK_PROC(proc_set_forkserver(slot, true));
        CHECK_PROC(proc_start(slot));
        join_ok(slot);
        close_ok(&slot);
    }
    uint64_t t1 = now_ns();
    live_reset();
    return (double)(t1 - t0) / (double)ops;
}

double s1_raw(void *ctx, long ops)
{
    (void)ctx;
    return raw_start_join(ops, NULL, NULL);
}

double s1_libproc(void *ctx, long ops)
{
    (void)ctx;
    return libproc_start_join(ops, NULL, false);
}

double s13_served(void *ctx, long ops)
{
    (void)ctx;
    return libproc_start_join(ops, NULL, true);
}

void scenario1(void)
{
    long ops = opt.quick ? 50 : 100;
    int rounds = rounds_or(opt.quick ? 5 : 31);
    progress("scenario 1: start+join, %ld ops x %d rounds", ops, rounds);
    struct contender c[] = {
        {"raw", s1_raw, NULL},
        {"libproc", s1_libproc, NULL},
    };
    double *out = xcalloc(2 * (size_t)rounds, sizeof *out);
    run_rounds(c, 2, ops, ops / 4, rounds, out);
    report_rounds(1, "start_join", -1, "", c, 2, rounds, out, NULL);
    free(out);
}

/* ============================================== 2: exec /bin/true, memory */

static double s2_raw(void *ctx, long ops)
{
    (void)ctx;
    return raw_start_join(ops, true_path, true_argv);
}

static double s2_libproc(void *ctx, long ops)
{
    (void)ctx;
    const char *const argv[] = {true_path, NULL};
    return libproc_start_join(ops, argv, false);
}

void scenario2(void)
{
    long ops = opt.quick ? 5 : 10;
    int rounds = rounds_or(opt.quick ? 3 : 21);
    size_t sizes_full[] = {0, 256 * MIB, 1024 * MIB};
    size_t sizes_quick[] = {0, 64 * MIB};
    size_t *sizes = opt.quick ? sizes_quick : sizes_full;
    size_t nsizes = opt.quick ? 2 : 3;
    struct contender c[] = {
        {"raw", s2_raw, NULL},
        {"libproc", s2_libproc, NULL},
#ifdef PROC_BENCH_HAVE_LIBUV
        {"libuv", s2_libuv, NULL},
#endif
    };
    int n = (int)(sizeof c / sizeof c[0]);
    for (size_t s = 0; s < nsizes; s++) {
        long mib = (long)(sizes[s] / MIB);
        progress("scenario 2: exec %s, parent holds %ld MiB, %ld ops x %d rounds", true_path, mib,
                 ops, rounds);
        char *mem = NULL;
        if (sizes[s]) {
            mem = malloc(sizes[s]);
            if (!mem)
                die("cannot allocate %ld MiB", mib);
            memset(mem, 0x5a, sizes[s]);
        }
        double *out = xcalloc((size_t)n * (size_t)rounds, sizeof *out);
        run_rounds(c, n, ops, 2, rounds, out);
        report_rounds(2, "exec_true", mib, "MiB", c, n, rounds, out, NULL);
        free(out);
        free(mem);
    }
#ifdef PROC_BENCH_HAVE_LIBUV
    add_note("2: libuv %s forks (not vfork/posix_spawn) on Linux, so its cost grows with the "
             "parent's memory.",
             libuv_version());
#endif
}

/* ========================================================= 4: join latency */

struct latency {
    volatile uint64_t *stamp; /* MAP_SHARED: the child's last timestamp */
    double *samples;          /* us */
    size_t n;
};

static void child_sleep_then_stamp(volatile uint64_t *stamp)
{
    /* Long enough for the parent to be blocked in its wait before we exit. */
    struct timespec d = {0, 300 * 1000};
    while (nanosleep(&d, &d) < 0 && errno == EINTR)
        ;
    *stamp = now_ns();
    _exit(0);
}

static int latency_target(void *arg)
{
    child_sleep_then_stamp(arg);
    return 0;
}

static void latency_raw(struct latency *l)
{
    pid_t slot;
    *l->stamp = 0;
    if (live_fork(&slot) == 0)
        child_sleep_then_stamp(l->stamp);
    reap_ok(slot);
    uint64_t t = now_ns();
    slot = 0;
    live_reset();
    uint64_t s = *l->stamp;
    if (s == 0 || s > t)
        die("raw latency sample without a valid child timestamp");
    l->samples[l->n++] = (double)(t - s) / 1000.0;
}

static void latency_libproc(struct latency *l)
{
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    *l->stamp = 0;
    slot = proc_new(latency_target, (void *)l->stamp);
    if (!slot)
        die("proc_new: %s", strerror(errno));
    CHECK_PROC(proc_start(slot));
    CHECK_PROC(proc_join(slot, PROC_WAIT_FOREVER));
    uint64_t t = now_ns();
    join_ok(slot);
    close_ok(&slot);
    live_reset();
    uint64_t s = *l->stamp;
    if (s == 0 || s > t)
        die("libproc latency sample without a valid child timestamp");
    l->samples[l->n++] = (double)(t - s) / 1000.0;
}

void scenario4(void)
{
    size_t samples = opt.quick ? 200 : 2000;
    progress("scenario 4: join latency, %zu samples each", samples);
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    struct latency raw = {page, xcalloc(samples, sizeof(double)), 0};
    struct latency lib = {page, xcalloc(samples, sizeof(double)), 0};
    for (size_t i = 0; i < 20; i++) { /* warm-up */
        latency_raw(&raw);
        latency_libproc(&lib);
    }
    raw.n = lib.n = 0;
    for (size_t i = 0; i < samples; i++) {
        if (i & 1) {
            latency_libproc(&lib);
            latency_raw(&raw);
        } else {
            latency_raw(&raw);
            latency_libproc(&lib);
        }
    }
    double r50 = quantile(raw.samples, samples, 0.5), r99 = quantile(raw.samples, samples, 0.99);
    double l50 = quantile(lib.samples, samples, 0.5), l99 = quantile(lib.samples, samples, 0.99);
    add_row(4, "join_latency", (long)samples, "samples", "raw", "p50", "us", r50, 1.0,
            (int)samples);
    add_row(4, "join_latency", (long)samples, "samples", "raw", "p99", "us", r99, 1.0,
            (int)samples);
    add_row(4, "join_latency", (long)samples, "samples", "libproc", "p50", "us", l50, l50 / r50,
            (int)samples);
    add_row(4, "join_latency", (long)samples, "samples", "libproc", "p99", "us", l99, l99 / r99,
            (int)samples);
    free(raw.samples);
    free(lib.samples);
    munmap(page, 4096);
}
