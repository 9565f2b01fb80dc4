/* SPDX-License-Identifier: MIT */
/*
 * proc_bench: what libproc costs next to the raw system calls, libuv's
 * uv_spawn (when built with libuv) and Python's multiprocessing.
 *
 * Every scenario runs its contenders interleaved in rounds (A B, B A, ...)
 * inside one process, so that drift of the machine hits all of them alike,
 * and reports per contender the median over the rounds plus the ratio of that
 * median to the baseline contender's median. See bench/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <libproc/proc.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef PROC_BENCH_HAVE_LIBUV
#include <uv.h>
#endif

extern char **environ;

#define MIB (1024UL * 1024UL)
#define NO_RATIO (-1.0)

/* ================================================================ options */

static struct {
    bool quick;
    int rounds; /* 0: per-scenario default */
    const char *csv;
    unsigned only; /* bit n set: run scenario n; 0: all */
} opt;

static int rounds_or(int def)
{
    return opt.rounds > 0 ? opt.rounds : def;
}

static bool want(int scenario)
{
    return opt.only == 0 || (opt.only & (1u << scenario));
}

/* ================================================================ results */

struct row {
    int scenario;
    char name[40];       /* scenario short name (CSV) */
    long param;          /* MiB, k, samples, children; -1: none */
    char param_name[12]; /* "MiB", "k", ... */
    char contender[24];
    char metric[16];
    char unit[12];
    double value;
    double ratio; /* NO_RATIO: none */
    int n;        /* rounds or samples behind the median */
};

static struct row *rows;
static size_t nrows, caprows;
static char notes[24][320];
static size_t nnotes;

/* ============================================================ live children
 * Everything that may still run is listed here, so that a fatal error can
 * kill and reap it: no child outlives the benchmark, no zombie stays.
 */
static struct {
    pid_t *pids; /* raw (and libuv) children, 0 once reaped */
    size_t npids;
    proc_t **procs; /* libproc objects, NULL once closed */
    size_t nprocs;
    int fds[2]; /* release pipe ends, -1 when closed */
} live = {.fds = {-1, -1}};

static void live_reset(void)
{
    live.pids = NULL;
    live.npids = 0;
    live.procs = NULL;
    live.nprocs = 0;
    live.fds[0] = live.fds[1] = -1;
}

static void reap_quietly(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static void cleanup_live(void)
{
    for (int i = 0; i < 2; i++)
        if (live.fds[i] >= 0)
            close(live.fds[i]); /* children blocked on the pipe get EOF */
    for (size_t i = 0; i < live.npids; i++) {
        if (live.pids[i] > 0) {
            kill(live.pids[i], SIGKILL);
            reap_quietly(live.pids[i]);
        }
    }
    for (size_t i = 0; i < live.nprocs; i++) {
        proc_t *p = live.procs[i];
        if (!p)
            continue;
        if (proc_is_alive(p))
            proc_kill(p);
        if (proc_pid(p) > 0)
            proc_join(p, PROC_WAIT_FOREVER);
        proc_close(p);
    }
    live_reset();
}

static _Noreturn void die(const char *fmt, ...);

/* Reaps every remaining child (and orphaned grandchild: we are a subreaper). */
static void reap_all_children(bool block)
{
    for (;;) {
        pid_t r = waitpid(-1, NULL, block ? 0 : WNOHANG);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        break;
    }
}

/*
 * SIGINT/SIGTERM/SIGHUP: kill and reap everything with async-signal-safe
 * calls only, then die of the signal. Runs on the main thread (libproc's
 * reaper blocks all signals), so live is not changing under us.
 */
static void on_fatal_signal(int sig)
{
    for (int i = 0; i < 2; i++)
        if (live.fds[i] >= 0)
            close(live.fds[i]);
    for (size_t i = 0; i < live.npids; i++)
        if (live.pids[i] > 0)
            kill(live.pids[i], SIGKILL);
    for (size_t i = 0; i < live.nprocs; i++)
        if (live.procs[i] && proc_is_alive(live.procs[i]))
            kill(proc_pid(live.procs[i]), SIGKILL);
    reap_all_children(true);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_signal_handlers(void)
{
    int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; i++)
        sigaddset(&sa.sa_mask, sigs[i]);
    for (int i = 0; i < 3; i++)
        if (sigaction(sigs[i], &sa, NULL) < 0)
            die("sigaction: %s", strerror(errno));
}

static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("proc_bench: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    cleanup_live();
    reap_all_children(true);
    exit(1);
}

#define CHECK_PROC(expr)                                                                           \
    do {                                                                                           \
        int check_r_ = (expr);                                                                     \
        if (check_r_ < 0)                                                                          \
            die("%s:%d: %s: %s", __FILE__, __LINE__, #expr, strerror(-check_r_));                  \
    } while (0)

static void progress(const char *fmt, ...)
{
    va_list ap;
    fputs("proc_bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ================================================================ helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        die("out of memory");
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v in place. */
static double quantile(double *v, size_t n, double q)
{
    qsort(v, n, sizeof *v, cmp_double);
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n)
        return v[n - 1];
    return v[i] + (v[i + 1] - v[i]) * (pos - (double)i);
}

static double median(const double *v, size_t n)
{
    double *copy = xcalloc(n, sizeof *copy);
    memcpy(copy, v, n * sizeof *copy);
    double m = quantile(copy, n, 0.5);
    free(copy);
    return m;
}

static void add_row(int scenario, const char *name, long param, const char *param_name,
                    const char *contender, const char *metric, const char *unit, double value,
                    double ratio, int n)
{
    if (nrows == caprows) {
        caprows = caprows ? caprows * 2 : 64;
        struct row *r = realloc(rows, caprows * sizeof *r);
        if (!r)
            die("out of memory");
        rows = r;
    }
    struct row *r = &rows[nrows++];
    memset(r, 0, sizeof *r);
    r->scenario = scenario;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->param = param;
    snprintf(r->param_name, sizeof r->param_name, "%s", param_name);
    snprintf(r->contender, sizeof r->contender, "%s", contender);
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    r->value = value;
    r->ratio = ratio;
    r->n = n;
}

static const struct row *find_row(int scenario, long param, const char *contender,
                                  const char *metric)
{
    for (size_t i = 0; i < nrows; i++)
        if (rows[i].scenario == scenario && rows[i].param == param &&
            strcmp(rows[i].contender, contender) == 0 && strcmp(rows[i].metric, metric) == 0)
            return &rows[i];
    return NULL;
}

static void add_note(const char *fmt, ...)
{
    if (nnotes == sizeof notes / sizeof notes[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(notes[nnotes++], sizeof notes[0], fmt, ap);
    va_end(ap);
}

/* Waits for a raw child and insists that it exited with status 0. */
static void reap_ok(pid_t pid)
{
    int status;
    pid_t r;
    do {
        r = waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r != pid)
        die("waitpid(%d): %s", (int)pid, strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("child %d ended with status 0x%x", (int)pid, status);
}

/* Joins and closes a libproc child and insists that it exited with 0. */
static void join_ok(proc_t *p)
{
    CHECK_PROC(proc_join(p, PROC_WAIT_FOREVER));
    int code = proc_exitcode(p);
    if (code != 0)
        die("libproc child %d ended with exit code %d", (int)proc_pid(p), code);
}

static void close_ok(proc_t **slot)
{
    CHECK_PROC(proc_close(*slot));
    *slot = NULL;
}

static pid_t spawn_raw(const char *path, char *const argv[], const posix_spawn_file_actions_t *fa)
{
    pid_t pid;
    int err = posix_spawn(&pid, path, fa, NULL, argv, environ);
    if (err)
        die("posix_spawn(%s): %s", path, strerror(err));
    return pid;
}

static void read_until_eof(int fd)
{
    char c;
    ssize_t r;
    do {
        r = read(fd, &c, 1);
    } while (r < 0 && errno == EINTR);
}

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

static const char *find_in_path(const char *name, char *buf, size_t len)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchrnul(path, ':');
        int n = snprintf(buf, len, "%.*s/%s", (int)(end - path), path, name);
        if (n > 0 && (size_t)n < len && access(buf, X_OK) == 0)
            return buf;
        path = *end ? end + 1 : end;
    }
    return NULL;
}

static void raise_limits(void)
{
    int res[] = {RLIMIT_NPROC, RLIMIT_NOFILE};
    const char *names[] = {"RLIMIT_NPROC", "RLIMIT_NOFILE"};
    for (int i = 0; i < 2; i++) {
        struct rlimit rl;
        if (getrlimit(res[i], &rl) < 0)
            die("getrlimit(%s): %s", names[i], strerror(errno));
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            if (setrlimit(res[i], &rl) < 0)
                die("setrlimit(%s): %s", names[i], strerror(errno));
        }
    }
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

/* ========================================================= round machinery */

/* Runs one batch of ops and returns the mean per op in ns (or per child). */
typedef double batch_fn(void *ctx, long ops);

struct contender {
    const char *name;
    batch_fn *fn;
    void *ctx;
};

/*
 * rounds x every contender, interleaved: round r starts with contender
 * r % n, so no contender is always first. One untimed warm-up batch each.
 * out[c * rounds + r] receives the result of contender c in round r.
 */
static void run_rounds(const struct contender *c, int n, long ops, long warm_ops, int rounds,
                       double *out)
{
    for (int i = 0; i < n; i++)
        if (warm_ops > 0)
            c[i].fn(c[i].ctx, warm_ops);
    for (int r = 0; r < rounds; r++) {
        for (int j = 0; j < n; j++) {
            int i = (r + j) % n;
            out[i * rounds + r] = c[i].fn(c[i].ctx, ops);
        }
    }
}

/* Median per contender, rows with the ratio to contender 0 (the baseline). */
static void report_rounds(int scenario, const char *name, long param, const char *param_name,
                          const struct contender *c, int n, int rounds, const double *out,
                          double *medians)
{
    double base = 0;
    for (int i = 0; i < n; i++) {
        double m = median(out + (size_t)i * (size_t)rounds, (size_t)rounds) / 1000.0;
        if (i == 0)
            base = m;
        if (medians)
            medians[i] = m;
        add_row(scenario, name, param, param_name, c[i].name, "median", "us/op", m,
                base > 0 ? m / base : NO_RATIO, rounds);
    }
}

/* ================================================ 1: start+join, fork mode */

static double s1_raw(void *ctx, long ops)
{
    (void)ctx;
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0)
            _exit(0);
        slot = pid;
        reap_ok(pid);
        slot = 0;
    }
    uint64_t t1 = now_ns();
    live_reset();
    return (double)(t1 - t0) / (double)ops;
}

static double s1_libproc(void *ctx, long ops)
{
    (void)ctx;
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        slot = proc_new(NULL, NULL);
        if (!slot)
            die("proc_new: %s", strerror(errno));
        CHECK_PROC(proc_start(slot));
        join_ok(slot);
        close_ok(&slot);
    }
    uint64_t t1 = now_ns();
    live_reset();
    return (double)(t1 - t0) / (double)ops;
}

static void scenario1(void)
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

static char *true_argv[] = {"true", NULL};
static const char *true_path = "/bin/true";

static double s2_raw(void *ctx, long ops)
{
    (void)ctx;
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        slot = spawn_raw(true_path, true_argv, NULL);
        reap_ok(slot);
        slot = 0;
    }
    uint64_t t1 = now_ns();
    live_reset();
    return (double)(t1 - t0) / (double)ops;
}

static double s2_libproc(void *ctx, long ops)
{
    (void)ctx;
    const char *const argv[] = {true_path, NULL};
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        slot = proc_new_exec(argv);
        if (!slot)
            die("proc_new_exec: %s", strerror(errno));
        CHECK_PROC(proc_start(slot));
        join_ok(slot);
        close_ok(&slot);
    }
    uint64_t t1 = now_ns();
    live_reset();
    return (double)(t1 - t0) / (double)ops;
}

#ifdef PROC_BENCH_HAVE_LIBUV
/*
 * libuv takes SIGCHLD over while a loop with processes exists and sets it to
 * SIG_DFL when the loop closes. Each libuv batch gets its own loop and the
 * disposition (libproc's handler) is put back afterwards, so the other
 * contenders always run in the setting of a normal libproc program.
 */
struct uv_batch {
    uv_loop_t loop;
    struct sigaction saved_chld;
    size_t exited;
    size_t bad;
    pid_t *pids; /* entries zeroed when libuv has reaped them */
};

struct uv_child {
    uv_process_t handle;
    struct uv_batch *batch;
    size_t index;
};

static void uv_batch_open(struct uv_batch *b)
{
    memset(b, 0, sizeof *b);
    if (sigaction(SIGCHLD, NULL, &b->saved_chld) < 0)
        die("sigaction: %s", strerror(errno));
    int r = uv_loop_init(&b->loop);
    if (r < 0)
        die("uv_loop_init: %s", uv_strerror(r));
}

static void uv_batch_close(struct uv_batch *b)
{
    int r = uv_loop_close(&b->loop);
    if (r < 0)
        die("uv_loop_close: %s", uv_strerror(r));
    if (sigaction(SIGCHLD, &b->saved_chld, NULL) < 0)
        die("sigaction: %s", strerror(errno));
}

static void uv_on_exit(uv_process_t *h, int64_t status, int term_signal)
{
    struct uv_child *c = h->data;
    if (status != 0 || term_signal != 0)
        c->batch->bad++;
    c->batch->exited++;
    if (c->batch->pids)
        c->batch->pids[c->index] = 0;
    uv_close((uv_handle_t *)h, NULL);
}

/* Spawns one child into the batch; its pid is recorded in b->pids[index]. */
static void uv_spawn_child(struct uv_batch *b, struct uv_child *c, size_t index,
                           uv_process_options_t *o)
{
    c->batch = b;
    c->index = index;
    c->handle.data = c;
    int r = uv_spawn(&b->loop, &c->handle, o);
    if (r < 0) {
        uv_close((uv_handle_t *)&c->handle, NULL);
        uv_run(&b->loop, UV_RUN_NOWAIT);
        die("uv_spawn(%s): %s", o->file, uv_strerror(r));
    }
    b->pids[index] = c->handle.pid;
}

static double s2_libuv(void *ctx, long ops)
{
    (void)ctx;
    struct uv_batch b;
    struct uv_child child;
    pid_t slot = 0;
    uv_batch_open(&b);
    b.pids = &slot;
    live.pids = &slot;
    live.npids = 1;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = true_path;
    o.args = true_argv;
    o.exit_cb = uv_on_exit;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        uv_spawn_child(&b, &child, 0, &o);
        uv_run(&b.loop, UV_RUN_DEFAULT);
        if (slot != 0)
            die("uv_run returned before the child's exit callback");
    }
    uint64_t t1 = now_ns();
    live_reset();
    if (b.bad)
        die("libuv: %zu children failed", b.bad);
    uv_batch_close(&b);
    return (double)(t1 - t0) / (double)ops;
}
#endif

static void scenario2(void)
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
             uv_version_string());
#endif
}

/* =========================================================== 3: mass exit */

static const char *head_path = "/usr/bin/head";
static char *head_argv[] = {"head", "-c1", NULL};

struct mass {
    int rfd, wfd; /* the release pipe, both ends O_CLOEXEC */
};

static void mass_open(struct mass *m)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    m->rfd = fds[0];
    m->wfd = fds[1];
    live.fds[0] = m->rfd;
    live.fds[1] = m->wfd;
}

static void mass_close_read(struct mass *m)
{
    close(m->rfd);
    m->rfd = live.fds[0] = -1;
}

/* Closes the write end: every child sees EOF. Returns the release time. */
static uint64_t mass_release(struct mass *m)
{
    uint64_t t0 = now_ns();
    close(m->wfd);
    m->wfd = live.fds[1] = -1;
    return t0;
}

/* 1: pid is blocked in read(2); 0: not (yet); -1: cannot tell. */
static int blocked_in_read(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n;
    do {
        n = read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    if (buf[0] < '0' || buf[0] > '9')
        return 0; /* "running" */
    return strtol(buf, NULL, 10) == SYS_read;
}

/* Fallback without /proc/PID/syscall: the process sleeps (state S). */
static int sleeping(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("%s: %s", path, strerror(errno));
    ssize_t n;
    do {
        n = read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        die("%s: cannot read", path);
    buf[n] = '\0';
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

/* Per contender: the start cost per child of each round (ns), for the "start" rows. */
struct s3ctx {
    double *start;
    int n;
};

/* Start time: from the first start until all k children block in read(). */
static void s3_record_start(void *ctx, uint64_t t0, const pid_t *pids, long k)
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

static double s3_raw(void *ctx, long k)
{
    struct mass m;
    pid_t *pids = xcalloc((size_t)k, sizeof *pids);
    live.pids = pids;
    live.npids = (size_t)k;
    mass_open(&m);
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
    mass_close_read(&m);
    uint64_t t0 = mass_release(&m);
    for (long i = 0; i < k; i++) {
        reap_ok(pids[i]);
        pids[i] = 0;
    }
    uint64_t t1 = now_ns();
    live_reset();
    free(pids);
    return (double)(t1 - t0) / (double)k;
}

static double s3_libproc(void *ctx, long k)
{
    struct mass m;
    proc_t **ps = xcalloc((size_t)k, sizeof *ps);
    live.procs = ps;
    live.nprocs = (size_t)k;
    mass_open(&m);
    uint64_t ts = now_ns();
    for (long i = 0; i < k; i++) {
        ps[i] = proc_new(mass_target, &m);
        if (!ps[i])
            die("proc_new #%ld: %s", i, strerror(errno));
        CHECK_PROC(proc_start(ps[i]));
    }
    s3_record_start_procs(ctx, ts, ps, k);
    mass_close_read(&m);
    uint64_t t0 = mass_release(&m);
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

static double s3_raw_exec(void *ctx, long k)
{
    struct mass m;
    pid_t *pids = xcalloc((size_t)k, sizeof *pids);
    live.pids = pids;
    live.npids = (size_t)k;
    mass_open(&m);
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
    mass_close_read(&m);
    uint64_t t0 = mass_release(&m);
    for (long i = 0; i < k; i++) {
        reap_ok(pids[i]);
        pids[i] = 0;
    }
    uint64_t t1 = now_ns();
    live_reset();
    free(pids);
    return (double)(t1 - t0) / (double)k;
}

/* libproc has no stdio redirection: the pipe goes to fd 0 while the children start. */
static double s3_libproc_exec(void *ctx, long k)
{
    struct mass m;
    const char *const argv[] = {head_path, "-c1", NULL};
    proc_t **ps = xcalloc((size_t)k, sizeof *ps);
    live.procs = ps;
    live.nprocs = (size_t)k;
    mass_open(&m);
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
    mass_close_read(&m);
    uint64_t t0 = mass_release(&m);
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

#ifdef PROC_BENCH_HAVE_LIBUV
static double s3_libuv(void *ctx, long k)
{
    struct mass m;
    struct uv_batch b;
    struct uv_child *kids = xcalloc((size_t)k, sizeof *kids);
    pid_t *pids = xcalloc((size_t)k, sizeof *pids);
    live.pids = pids;
    live.npids = (size_t)k;
    mass_open(&m);
    uv_batch_open(&b);
    b.pids = pids;
    uv_stdio_container_t stdio[1];
    stdio[0].flags = UV_INHERIT_FD;
    stdio[0].data.fd = m.rfd;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = head_path;
    o.args = head_argv;
    o.exit_cb = uv_on_exit;
    o.stdio = stdio;
    o.stdio_count = 1;
    uint64_t ts = now_ns();
    for (long i = 0; i < k; i++)
        uv_spawn_child(&b, &kids[i], (size_t)i, &o);
    s3_record_start(ctx, ts, pids, k);
    mass_close_read(&m);
    uint64_t t0 = mass_release(&m);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uint64_t t1 = now_ns();
    if (b.exited != (size_t)k)
        die("libuv: %zu of %ld exit callbacks", b.exited, k);
    if (b.bad)
        die("libuv: %zu children failed", b.bad);
    live_reset();
    uv_batch_close(&b);
    free(kids);
    free(pids);
    return (double)(t1 - t0) / (double)k;
}
#endif

static void scenario3(void)
{
    long ks_full[] = {100, 1000, 4000};
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
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    *l->stamp = 0;
    slot = fork();
    if (slot < 0)
        die("fork: %s", strerror(errno));
    if (slot == 0)
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

static void scenario4(void)
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

/* ================================================================ 5: memory */

static void scenario5(void)
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

/* ================================================================ 6: Python */

static const char python_script[] =
    "import multiprocessing as mp, sys, time\n"
    "def f():\n"
    "    pass\n"
    "if __name__ == '__main__':\n"
    "    ctx = mp.get_context('fork')\n"
    "    n = int(sys.argv[1])\n"
    "    for _ in range(5):\n"
    "        p = ctx.Process(target=f); p.start(); p.join()\n"
    "    t0 = time.perf_counter()\n"
    "    for _ in range(n):\n"
    "        p = ctx.Process(target=f); p.start(); p.join()\n"
    "        if p.exitcode != 0: sys.exit(3)\n"
    "    print((time.perf_counter() - t0) / n * 1e6, sys.version.split()[0])\n";

static char python_path[4096];
static char python_version[32];

/* Runs the Python loop with ops iterations; returns its own per-op time in ns. */
static double s6_python(void *ctx, long ops)
{
    (void)ctx;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    char count[32];
    snprintf(count, sizeof count, "%ld", ops);
    char *argv[] = {"python3", "-c", (char *)python_script, count, NULL};
    posix_spawn_file_actions_t fa;
    int err = posix_spawn_file_actions_init(&fa);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    if (err)
        die("posix_spawn_file_actions: %s", strerror(err));
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    live.fds[0] = fds[0];
    live.fds[1] = fds[1];
    slot = spawn_raw(python_path, argv, &fa);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    live.fds[1] = -1;
    char buf[256];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read from python: %s", strerror(errno));
        if (r == 0 || (len += (size_t)r) == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    close(fds[0]);
    live.fds[0] = -1;
    reap_ok(slot);
    live_reset();
    char *end;
    double us = strtod(buf, &end);
    if (end == buf || us <= 0)
        die("python printed no timing: '%s'", buf);
    if (sscanf(end, " %31s", python_version) != 1)
        snprintf(python_version, sizeof python_version, "?");
    return us * 1000.0;
}

static void scenario6(void)
{
    if (!find_in_path("python3", python_path, sizeof python_path)) {
        add_note("6: skipped: no python3 in PATH");
        return;
    }
    long ops = opt.quick ? 20 : 200;
    int rounds = rounds_or(opt.quick ? 3 : 5);
    progress("scenario 6: Python multiprocessing (fork) vs libproc, %ld ops x %d rounds", ops,
             rounds);
    struct contender c[] = {
        {"libproc", s1_libproc, NULL},
        {"python", s6_python, NULL},
        {"raw", s1_raw, NULL},
    };
    double med[3];
    double *out = xcalloc(3 * (size_t)rounds, sizeof *out);
    run_rounds(c, 3, ops, 0, rounds, out);
    report_rounds(6, "python_start_join", -1, "", c, 3, rounds, out, med);
    free(out);
    add_note("6: python / raw fork+waitpid = %.1f: no fork-based library can beat that ratio "
             "on this machine.",
             med[1] / med[2]);
    add_note("6: python %s (%s), multiprocessing fork context, Process(target=f).start(); "
             "join(), timed inside Python; ratio = python / libproc.",
             python_version, python_path);
}

/* ================================================================= output */

static void fmt_param(const struct row *r, char *buf, size_t len)
{
    if (r->param < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%s=%ld", r->param_name, r->param);
}

static const char *scenario_title(int s)
{
    switch (s) {
    case 1:
        return "1 start+join (fork, exit 0)";
    case 2:
        return "2 exec /bin/true";
    case 3:
        return "3 mass exit (release->joined)";
    case 4:
        return "4 join latency (exit->join)";
    case 5:
        return "5 memory per live child";
    case 6:
        return "6 Python multiprocessing";
    default:
        return "?";
    }
}

static void print_table(void)
{
    printf("\n%-31s %-13s %-13s %-10s %12s %-9s %s\n", "scenario", "param", "contender", "metric",
           "median", "unit", "ratio");
    int last = 0;
    for (int s = 1; s <= 6; s++) {
        for (size_t i = 0; i < nrows; i++) {
            const struct row *r = &rows[i];
            if (r->scenario != s)
                continue;
            char param[32], ratio[32];
            fmt_param(r, param, sizeof param);
            if (r->ratio == NO_RATIO)
                snprintf(ratio, sizeof ratio, "-");
            else if (strcmp(r->contender, s == 6 ? "libproc" : "raw") == 0)
                snprintf(ratio, sizeof ratio, "1.00 (baseline)");
            else
                snprintf(ratio, sizeof ratio, "%.2f", r->ratio);
            printf("%-31s %-13s %-13s %-10s %12.2f %-9s %s\n", last != s ? scenario_title(s) : "",
                   param, r->contender, r->metric, r->value, r->unit, ratio);
            last = s;
        }
    }
    if (nnotes)
        printf("\nnotes:\n");
    for (char s = '1'; s <= '6'; s++) /* notes start with their scenario number */
        for (size_t i = 0; i < nnotes; i++)
            if (notes[i][0] == s)
                printf("  %s\n", notes[i]);
}

static void target_line(const char *what, bool have, bool met, const char *fmt, ...)
{
    char detail[160] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    printf("  %-7s %-52s %s\n", !have ? "n/a" : met ? "MET" : "MISSED", what, have ? detail : "");
}

static void print_targets(void)
{
    printf("\ntargets (issue 4):\n");
    const struct row *r = find_row(1, -1, "libproc", "median");
    target_line("1: start+join ratio <= 1.10", r, r && r->ratio <= 1.10, "%.2f", r ? r->ratio : 0);

    bool have2 = false, met2 = true;
    char buf2[160] = "";
    size_t off = 0;
    for (size_t i = 0; i < nrows; i++) {
        if (rows[i].scenario != 2 || strcmp(rows[i].contender, "libproc") != 0)
            continue;
        have2 = true;
        met2 = met2 && rows[i].ratio <= 1.10;
        int w = snprintf(buf2 + off, sizeof buf2 - off, "%s%ldMiB:%.2f", off ? " " : "",
                         rows[i].param, rows[i].ratio);
        if (w > 0 && (size_t)w < sizeof buf2 - off)
            off += (size_t)w;
    }
    target_line("2: exec ratio <= 1.10 at every parent size", have2, met2, "%s", buf2);

    long kmin = -1, kmax = -1;
    for (size_t i = 0; i < nrows; i++) {
        if (rows[i].scenario != 3 || strcmp(rows[i].contender, "libproc") != 0)
            continue;
        if (kmin < 0 || rows[i].param < kmin)
            kmin = rows[i].param;
        if (rows[i].param > kmax)
            kmax = rows[i].param;
    }
    const struct row *hi = find_row(3, kmax, "libproc", "per_child");
    const struct row *lo = find_row(3, kmin, "libproc", "per_child");
    char what[80];
    if (kmax < 0)
        snprintf(what, sizeof what, "3: mass exit ratio <= 1.20 at the largest k");
    else
        snprintf(what, sizeof what, "3: mass exit ratio <= 1.20 at k=%ld", kmax);
    target_line(what, hi, hi && hi->ratio <= 1.20, "%.2f", hi ? hi->ratio : 0);
    if (kmax < 0)
        snprintf(what, sizeof what, "3: libproc per-child, largest k within 1.3x of smallest");
    else
        snprintf(what, sizeof what, "3: libproc per-child k=%ld within 1.3x of k=%ld", kmax, kmin);
    bool have_scale = hi && lo && kmax != kmin;
    target_line(what, have_scale, have_scale && hi->value <= 1.3 * lo->value, "%.2fx",
                have_scale ? hi->value / lo->value : 0);

    const struct row *p99 = NULL;
    for (size_t i = 0; i < nrows; i++)
        if (rows[i].scenario == 4 && strcmp(rows[i].contender, "libproc") == 0 &&
            strcmp(rows[i].metric, "p99") == 0)
            p99 = &rows[i];
    target_line("4: join latency p99 <= 200 us", p99, p99 && p99->value <= 200.0, "%.1f us",
                p99 ? p99->value : 0);

    const struct row *mem = NULL;
    for (size_t i = 0; i < nrows; i++)
        if (rows[i].scenario == 5 && strcmp(rows[i].metric, "rss_delta") == 0)
            mem = &rows[i];
    target_line("5: <= 512 B RSS per tracked child", mem, mem && mem->value <= 512.0, "%.0f B",
                mem ? mem->value : 0);

    const struct row *py = find_row(6, -1, "python", "median");
    target_line("6: >= 13x faster than Python (start+join)", py, py && py->ratio >= 13.0, "%.1fx",
                py ? py->ratio : 0);
}

static void write_csv(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die("%s: %s", path, strerror(errno));
    fprintf(f, "scenario,name,param,contender,metric,unit,median,ratio,n\n");
    for (int s = 1; s <= 6; s++) {
        for (size_t i = 0; i < nrows; i++) {
            const struct row *r = &rows[i];
            if (r->scenario != s)
                continue;
            fprintf(f, "%d,%s,", r->scenario, r->name);
            if (r->param >= 0)
                fprintf(f, "%ld", r->param);
            fprintf(f, ",%s,%s,%s,%.3f,", r->contender, r->metric, r->unit, r->value);
            if (r->ratio != NO_RATIO)
                fprintf(f, "%.4f", r->ratio);
            fprintf(f, ",%d\n", r->n);
        }
    }
    if (fclose(f) != 0)
        die("%s: %s", path, strerror(errno));
}

/* ================================================================== main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: proc_bench [--quick] [--rounds N] [--csv FILE] [--only LIST]\n"
            "  --quick      tiny sizes, a few seconds (CI smoke run)\n"
            "  --rounds N   rounds per scenario (defaults: 1:31 2:21 3:5 (3 at k=4000) 5:3 6:5;\n"
            "               --quick 1:5 2:3 3:3 5:3 6:3); scenario 4 is per sample\n"
            "  --csv FILE   also write the results as CSV\n"
            "  --only LIST  run only these scenarios, e.g. --only 1,3\n");
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--quick") == 0) {
            opt.quick = true;
        } else if (strcmp(a, "--rounds") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 10000) {
                fprintf(stderr, "proc_bench: --rounds wants 1..10000\n");
                exit(2);
            }
            opt.rounds = (int)n;
        } else if (strcmp(a, "--csv") == 0 && i + 1 < argc) {
            opt.csv = argv[++i];
        } else if (strcmp(a, "--only") == 0 && i + 1 < argc) {
            for (const char *s = argv[++i]; *s; s++) {
                if (*s >= '1' && *s <= '6')
                    opt.only |= 1u << (*s - '0');
                else if (*s != ',') {
                    fprintf(stderr, "proc_bench: --only wants scenario numbers 1-6\n");
                    exit(2);
                }
            }
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            usage(stderr);
            exit(2);
        }
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    install_signal_handlers();
    /* Orphaned grandchildren (Python's, if Python dies) come to us, not to init. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        die("prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));
    raise_limits();
    if (access(true_path, X_OK) != 0)
        true_path = "/usr/bin/true";
    if (access(head_path, X_OK) != 0)
        head_path = "/bin/head";
    if (access(true_path, X_OK) != 0 || access(head_path, X_OK) != 0)
        die("need /bin/true and /usr/bin/head");
    if (!proc_current())
        die("proc_current: %s", strerror(errno));

    uint64_t t0 = now_ns();
    /*
     * Order: the libuv-free scenarios first. Once libuv has initialized, it
     * keeps a pthread_atfork child handler that makes every later fork child
     * (raw and libproc alike) a little slower.
     */
    if (want(1))
        scenario1();
    if (want(4))
        scenario4();
    if (want(5))
        scenario5();
    if (want(6))
        scenario6();
    if (want(2))
        scenario2();
    if (want(3))
        scenario3();
    double secs = (double)(now_ns() - t0) / 1e9;
    reap_all_children(false); /* nothing should be left; be sure */

    printf("proc_bench: libproc %s, %s mode, %d CPUs, %.1f s%s\n", PROC_VERSION_STRING,
           opt.quick ? "quick" : "full", proc_cpu_count(), secs,
#ifdef PROC_BENCH_HAVE_LIBUV
           ", with libuv"
#else
           ", without libuv"
#endif
    );
    print_table();
    print_targets();
    if (opt.csv) {
        write_csv(opt.csv);
        printf("\nCSV written to %s\n", opt.csv);
    }
    free(rows);
    return 0;
}
