/* SPDX-License-Identifier: MIT */
/*
 * Scenarios 3 and 5: many live children at once. Mass exit (3): k children
 * block in read() on one pipe, closing its write end releases them all, and
 * the time until all are joined is the cost; the exec contenders run
 * `head -c1` on the pipe (libuv's is in libuv.c). Memory (5): the parent's
 * RSS and heap growth per live libproc child.
 */
#include "mass.h"

#include "harness.h"
#include "libuv.h"
#include "live.h"
#include "scenarios.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Resident set size of this process in bytes, from /proc/self/statm. */
static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        die("/proc/self/statm: %s", strerror(errno));
    long size = 0, resident = 0;
    int n = fscanf(f, "%ld %ld", &size, &resident);
    fclose(f);
    if (n != 2)
        die("/proc/self/statm: unexpected format");
    return resident * sysconf(_SC_PAGESIZE);
}

/* Whether k more children and 2k more fds fit into the soft limits. */
static bool fits_limits(size_t k)
{
    struct rlimit np, nf;
    if (getrlimit(RLIMIT_NPROC, &np) < 0 || getrlimit(RLIMIT_NOFILE, &nf) < 0)
        return false;
    return (np.rlim_cur == RLIM_INFINITY || np.rlim_cur > k + 64) &&
           (nf.rlim_cur == RLIM_INFINITY || nf.rlim_cur > 2 * k + 64);
}

/* =========================================================== 3: mass exit */

void mass_open(struct mass *m)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    m->rfd = fds[0];
    m->wfd = fds[1];
    live.fds[0] = m->rfd;
    live.fds[1] = m->wfd;
}

void mass_close_read(struct mass *m)
{
    close(m->rfd);
    m->rfd = live.fds[0] = -1;
}

uint64_t mass_release(struct mass *m)
{
    uint64_t t0 = now_ns();
    close(m->wfd);
    m->wfd = live.fds[1] = -1;
    return t0;
}

/*
 * Reads a /proc file into buf (at most size - 1 bytes, NUL-terminated).
 * Returns the bytes read, 0 if none could be, -1 if it cannot be opened.
 */
static ssize_t read_proc_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n;
    do {
        n = read(fd, buf, size - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return n;
}

/* 1: pid is blocked in read(2); 0: not (yet); -1: cannot tell. */
static int blocked_in_read(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    if (read_proc_file(path, buf, sizeof buf) <= 0)
        return -1;
    if (buf[0] < '0' || buf[0] > '9')
        return 0; /* "running" */
    return strtol(buf, NULL, 10) == SYS_read;
}

/* Fallback without /proc/PID/syscall: the process sleeps (state S). */
static int sleeping(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    ssize_t n = read_proc_file(path, buf, sizeof buf);
    if (n < 0)
        die("%s: %s", path, strerror(errno));
    if (n == 0)
        die("%s: cannot read", path);
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] == 'S';
}

/*
 * Waits until every child sits in read() on the release pipe, so that the
 * release measures exits only and not the tail of the children's start-up.
 */
static void wait_all_blocked(const pid_t *pids, long k)
{
    uint64_t deadline = now_ns() + 120ull * 1000000000ull;
    for (long i = 0; i < k; i++) {
        for (;;) {
            int r = blocked_in_read(pids[i]);
            if (r < 0)
                r = sleeping(pids[i]);
            if (r > 0)
                break;
            if (now_ns() > deadline)
                die("child %d did not block in read() within 120 s", (int)pids[i]);
            struct timespec d = {0, 500 * 1000};
            nanosleep(&d, NULL);
        }
    }
}

void s3_record_start(void *ctx, uint64_t t0, const pid_t *pids, long k)
{
    wait_all_blocked(pids, k);
    struct s3ctx *c = ctx;
    c->start[c->n++] = (double)(now_ns() - t0) / (double)k;
}

static void s3_record_start_procs(void *ctx, uint64_t t0, proc_t *const *ps, long k)
{
    pid_t *pids = xcalloc((size_t)k, sizeof *pids);
    for (long i = 0; i < k; i++)
        pids[i] = proc_pid(ps[i]);
    s3_record_start(ctx, t0, pids, k);
    free(pids);
}

static int mass_target(void *arg)
{
    struct mass *m = arg;
    close(m->wfd);
    read_until_eof(m->rfd);
    return 0;
}

/* A batch of k raw children: the release pipe and their pids, listed in live. */
static pid_t *open_raw_batch(struct mass *m, long k)
{
    pid_t *pids = xcalloc((size_t)k, sizeof *pids);
    live.pids = pids;
    live.npids = (size_t)k;
    mass_open(m);
    return pids;
}

/* The same for k libproc children. */
static proc_t **open_proc_batch(struct mass *m, long k)
{
    proc_t **ps = xcalloc((size_t)k, sizeof *ps);
    live.procs = ps;
    live.nprocs = (size_t)k;
    mass_open(m);
    return ps;
}

/*
 * The timed end of a scenario 3 batch of k blocked raw children: releases
 * them and reaps them all, then ends the batch (frees pids). ns per child.
 */
static double release_and_reap(struct mass *m, pid_t *pids, long k)
{
    mass_close_read(m);
    uint64_t t0 = mass_release(m);
    for (long i = 0; i < k; i++) {
        reap_ok(pids[i]);
        pids[i] = 0;
    }
    uint64_t t1 = now_ns();
    live_reset();
    free(pids);
    return (double)(t1 - t0) / (double)k;
}

/* The same for libproc children; exit statuses are checked after the clock stops. */
static double release_and_join(struct mass *m, proc_t **ps, long k)
{
    mass_close_read(m);
    uint64_t t0 = mass_release(m);
    for (long i = 0; i < k; i++)
        CHECK_PROC(proc_join(ps[i], PROC_WAIT_FOREVER));
    uint64_t t1 = now_ns();
    for (long i = 0; i < k; i++) {
        join_ok(ps[i]);
        close_ok(&ps[i]);
    }
    live_reset();
    free(ps);
    return (double)(t1 - t0) / (double)k;
}

static double s3_raw(void *ctx, long k)
{
    struct mass m;
    pid_t *pids = open_raw_batch(&m, k);
    uint64_t ts = now_ns();
    for (long i = 0; i < k; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork #%ld: %s", i, strerror(errno));
        if (pid == 0) {
            close(m.wfd);
            read_until_eof(m.rfd);
            _exit(0);
        }
        pids[i] = pid;
    }
    s3_record_start(ctx, ts, pids, k);
    return release_and_reap(&m, pids, k);
}

static double s3_libproc(void *ctx, long k)
{
    struct mass m;
    proc_t **ps = open_proc_batch(&m, k);
    uint64_t ts = now_ns();
    for (long i = 0; i < k; i++) {
        ps[i] = proc_new(mass_target, &m);
        if (!ps[i])
            die("proc_new #%ld: %s", i, strerror(errno));
        CHECK_PROC(proc_start(ps[i]));
    }
    s3_record_start_procs(ctx, ts, ps, k);
    return release_and_join(&m, ps, k);
}

static double s3_raw_exec(void *ctx, long k)
{
    struct mass m;
    pid_t *pids = open_raw_batch(&m, k);
    posix_spawn_file_actions_t fa;
    int err = posix_spawn_file_actions_init(&fa);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, m.rfd, 0);
    if (err)
        die("posix_spawn_file_actions: %s", strerror(err));
    uint64_t ts = now_ns();
    for (long i = 0; i < k; i++)
        pids[i] = spawn_raw(head_path, head_argv, &fa);
    s3_record_start(ctx, ts, pids, k);
    posix_spawn_file_actions_destroy(&fa);
    return release_and_reap(&m, pids, k);
}

/* libproc has no stdio redirection: the pipe goes to fd 0 while the children start. */
static double s3_libproc_exec(void *ctx, long k)
{
    struct mass m;
    const char *const argv[] = {head_path, "-c1", NULL};
    proc_t **ps = open_proc_batch(&m, k);
    int saved0 = fcntl(0, F_DUPFD_CLOEXEC, 3);
    if (saved0 < 0 && errno != EBADF)
        die("dup(0): %s", strerror(errno));
    if (dup2(m.rfd, 0) < 0)
        die("dup2: %s", strerror(errno));
    uint64_t ts = now_ns();
    for (long i = 0; i < k; i++) {
        ps[i] = proc_new_exec(argv);
        if (!ps[i])
            die("proc_new_exec #%ld: %s", i, strerror(errno));
        CHECK_PROC(proc_start(ps[i]));
    }
    s3_record_start_procs(ctx, ts, ps, k);
    if (saved0 >= 0) {
        if (dup2(saved0, 0) < 0)
            die("dup2: %s", strerror(errno));
        close(saved0);
    } else {
        close(0);
    }
    return release_and_join(&m, ps, k);
}

/* The middle k has a target of its own (targets.txt): issue 11's shape. */
#define S3_K_MID 1500

void scenario3(void)
{
    long ks_full[] = {100, S3_K_MID, 4000};
    long ks_quick[] = {50, 200};
    long *ks = opt.quick ? ks_quick : ks_full;
    size_t nks = opt.quick ? 2 : 3;
    struct s3ctx ctx[5];
    struct contender c[] = {
        {"raw", s3_raw, &ctx[0]},           {"libproc", s3_libproc, &ctx[1]},
        {"raw_exec", s3_raw_exec, &ctx[2]}, {"libproc_exec", s3_libproc_exec, &ctx[3]},
#ifdef PROC_BENCH_HAVE_LIBUV
        {"libuv", s3_libuv, &ctx[4]},
#endif
    };
    int n = (int)(sizeof c / sizeof c[0]);
    for (size_t i = 0; i < nks; i++) {
        long k = ks[i];
        int rounds = rounds_or(opt.quick ? 3 : k >= 4000 ? 3 : 5);
        if (!fits_limits((size_t)k)) {
            add_note("3: k=%ld skipped: RLIMIT_NPROC/RLIMIT_NOFILE too low", k);
            continue;
        }
        progress("scenario 3: mass exit of k=%ld children x %d rounds", k, rounds);
        for (int j = 0; j < n; j++) {
            ctx[j].start = xcalloc((size_t)rounds, sizeof(double));
            ctx[j].n = 0;
        }
        double *out = xcalloc((size_t)n * (size_t)rounds, sizeof *out);
        run_rounds(c, n, k, 0, rounds, out);
        double exit_med[5], start_med[5];
        for (int j = 0; j < n; j++) {
            exit_med[j] = median(out + (size_t)j * (size_t)rounds, (size_t)rounds) / 1000.0;
            start_med[j] = median(ctx[j].start, (size_t)ctx[j].n) / 1000.0;
        }
        for (int j = 0; j < n; j++)
            add_row(3, "mass_exit", k, "k", c[j].name, "per_child", "us/child", exit_med[j],
                    exit_med[j] / exit_med[0], rounds);
        for (int j = 0; j < n; j++)
            add_row(3, "mass_exit", k, "k", c[j].name, "start", "us/child", start_med[j],
                    start_med[j] / start_med[0], rounds);
        if (n > 3)
            add_note("3: k=%ld exec contenders vs raw_exec, release->joined: libproc_exec %.2f"
#ifdef PROC_BENCH_HAVE_LIBUV
                     ", libuv %.2f"
#endif
                     ,
                     k, exit_med[3] / exit_med[2]
#ifdef PROC_BENCH_HAVE_LIBUV
                     ,
                     exit_med[4] / exit_med[2]
#endif
            );
        for (int j = 0; j < n; j++)
            free(ctx[j].start);
        free(out);
    }
    add_note("3: raw and libproc fork children that block in read() on the pipe; raw_exec, "
             "libproc_exec%s exec `head -c1` with the pipe as stdin%s.",
#ifdef PROC_BENCH_HAVE_LIBUV
             " and libuv", " (libuv can only spawn programs, so its contender necessarily execs)"
#else
             "", ""
#endif
    );
    add_note("3: per_child = (release -> all joined) / k; start = (first start -> all k blocked "
             "in read()) / k. Ratios are to raw (fork).");
}

/* ================================================================ 5: memory */

void scenario5(void)
{
    long k = opt.quick ? 200 : 2000;
    int rounds = rounds_or(3);
    if (!fits_limits((size_t)k)) {
        add_note("5: skipped: RLIMIT_NPROC/RLIMIT_NOFILE too low for %ld children", k);
        return;
    }
    progress("scenario 5: memory per tracked child, %ld live children x %d rounds", k, rounds);
    double *rss = xcalloc((size_t)rounds, sizeof *rss);
    double *heap = xcalloc((size_t)rounds, sizeof *heap);
    proc_t **ps = xcalloc((size_t)k, sizeof *ps);
    for (int r = 0; r < rounds; r++) {
        struct mass m;
        memset(ps, 0, (size_t)k * sizeof *ps);
        live.procs = ps;
        live.nprocs = (size_t)k;
        mass_open(&m);
        malloc_trim(0); /* freed memory of earlier work must not hide the growth */
        long rss0 = rss_bytes();
        size_t heap0 = mallinfo2().uordblks;
        for (long i = 0; i < k; i++) {
            ps[i] = proc_new(mass_target, &m);
            if (!ps[i])
                die("proc_new #%ld: %s", i, strerror(errno));
            CHECK_PROC(proc_start(ps[i]));
        }
        long rss1 = rss_bytes();
        size_t heap1 = mallinfo2().uordblks;
        rss[r] = (double)(rss1 - rss0) / (double)k;
        heap[r] = ((double)heap1 - (double)heap0) / (double)k;
        mass_close_read(&m);
        mass_release(&m);
        for (long i = 0; i < k; i++) {
            join_ok(ps[i]);
            close_ok(&ps[i]);
        }
        live_reset();
    }
    add_row(5, "memory", k, "children", "libproc", "rss_delta", "B/child",
            median(rss, (size_t)rounds), NO_RATIO, rounds);
    add_row(5, "memory", k, "children", "libproc", "heap_delta", "B/child",
            median(heap, (size_t)rounds), NO_RATIO, rounds);
    add_note("5: rss_delta = parent's RSS growth (/proc/self/statm) / children; heap_delta = "
             "malloc'd bytes (mallinfo2) / children; kernel memory (pidfd, epoll) not included.");
    free(ps);
    free(rss);
    free(heap);
}
