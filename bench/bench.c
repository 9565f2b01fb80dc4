/* SPDX-License-Identifier: MIT */
/*
 * proc_bench: what libproc costs next to the raw system calls, libuv's
 * uv_spawn (when built with libuv) and Python's multiprocessing: processes
 * (scenarios 1-6), the worker pool (7), the queue (8) and the pipe (9).
 *
 * Every scenario runs its contenders interleaved in rounds (A B, B A, ...)
 * inside one process, so that drift of the machine hits all of them alike,
 * and reports per contender the median over the rounds plus the ratio of that
 * median to the baseline contender's median. See bench/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <libproc/ipc.h>
#include <libproc/pool.h>
#include <libproc/proc.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
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
#include <sys/socket.h>
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
static char notes[48][320];
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

/*
 * Long-lived objects of scenarios 7-9, which outlive single batches (so
 * live_reset() leaves them alone): the libproc pool of scenario 7 and the
 * Python coprocess of 7-9, which leads its own process group (its own
 * multiprocessing children are in it too).
 */
static proc_pool_t *live_pool;
static volatile sig_atomic_t fatal_sig; /* a deferred SIGINT/SIGTERM/SIGHUP, see on_fatal_signal */
static struct {
    pid_t pid;    /* also the process group; 0: not running */
    int to, from; /* command socket (our end), reply pipe (read end); -1: closed */
} py = {0, -1, -1};

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

static void python_kill(void);

static void cleanup_live(void)
{
    if (live_pool) {
        proc_pool_free(live_pool); /* terminates: kills and reaps the workers */
        live_pool = NULL;
    }
    python_kill();
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

__attribute__((format(printf, 1, 2))) static _Noreturn void die(const char *fmt, ...);

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
 * SIGKILLs every child of every thread of this process, as listed in
 * /proc/self/task/TID/children, with async-signal-safe calls only (no
 * opendir, no stdio). Pool workers are forked by libproc's threads; this is
 * how the fatal paths reach them. Without that file (kernels built without
 * CONFIG_PROC_CHILDREN) it does nothing; pool workers then die with their
 * parent anyway (PR_SET_PDEATHSIG).
 */
static void kill_own_children(void)
{
    int dfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    char dents[4096];
    long n;
    while ((n = syscall(SYS_getdents64, dfd, dents, sizeof dents)) > 0) {
        for (long off = 0; off < n;) {
            /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[] */
            unsigned short reclen;
            memcpy(&reclen, dents + off + 16, sizeof reclen);
            const char *name = dents + off + 19;
            off += reclen;
            if (name[0] < '0' || name[0] > '9')
                continue;
            char path[64] = "/proc/self/task/", *p = path + strlen(path);
            for (const char *s = name; *s && p < path + 40; s++)
                *p++ = *s;
            memcpy(p, "/children", sizeof "/children");
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            char buf[4096];
            ssize_t len;
            long pid = 0;
            bool digit = false;
            while ((len = read(fd, buf, sizeof buf)) > 0) {
                for (ssize_t i = 0; i < len; i++) {
                    if (buf[i] >= '0' && buf[i] <= '9') {
                        pid = pid * 10 + (buf[i] - '0');
                        digit = true;
                    } else {
                        if (digit && pid > 0)
                            kill((pid_t)pid, SIGKILL);
                        pid = 0;
                        digit = false;
                    }
                }
            }
            if (digit && pid > 0)
                kill((pid_t)pid, SIGKILL);
            close(fd);
        }
    }
    close(dfd);
}

/*
 * SIGINT/SIGTERM/SIGHUP: kill and reap everything with async-signal-safe
 * calls only, then die of the signal. Runs on the main thread (libproc's
 * reaper blocks all signals), so live is not changing under us.
 */
static void on_fatal_signal(int sig)
{
    if (live_pool) {
        /*
         * A pool cannot be freed in a signal handler, and its thread replaces
         * killed workers, so a blocking reap here could wait forever. Kill
         * what runs (which ends any wait of the main thread: a map whose
         * worker died fails, Python's answer ends) and let the main thread
         * clean up in die(), which then dies of sig.
         */
        fatal_sig = sig;
        if (py.pid > 0)
            kill(-py.pid, SIGKILL);
        kill_own_children();
        return;
    }
    for (int i = 0; i < 2; i++)
        if (live.fds[i] >= 0)
            close(live.fds[i]);
    for (size_t i = 0; i < live.npids; i++)
        if (live.pids[i] > 0)
            kill(live.pids[i], SIGKILL);
    for (size_t i = 0; i < live.nprocs; i++)
        /* proc_is_alive() takes a lock: not for a signal handler. */
        if (live.procs[i] && proc_exitcode(live.procs[i]) == PROC_EXITCODE_NONE &&
            proc_pid(live.procs[i]) > 0)
            kill(proc_pid(live.procs[i]), SIGKILL);
    if (py.pid > 0)
        kill(-py.pid, SIGKILL);
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

static void block_fatal_signals(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, old);
}

static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    sigset_t old;
    block_fatal_signals(&old);
    fflush(stdout);
    if (fatal_sig) {
        fprintf(stderr, "proc_bench: interrupted by signal %d\n", (int)fatal_sig);
    } else {
        fputs("proc_bench: error: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    cleanup_live();
    kill_own_children(); /* anything not tracked: never block on it below */
    reap_all_children(true);
    if (fatal_sig) {
        signal(fatal_sig, SIG_DFL);
        raise(fatal_sig); /* pending until the unblock */
        sigprocmask(SIG_SETMASK, &old, NULL);
    }
    exit(1);
}

/* Between batches: acts on a signal that on_fatal_signal deferred. */
static void check_interrupted(void)
{
    if (fatal_sig)
        die("interrupted");
}

#define CHECK_PROC(expr)                                                                           \
    do {                                                                                           \
        int check_r_ = (expr);                                                                     \
        if (check_r_ < 0)                                                                          \
            die("%s:%d: %s: %s", __FILE__, __LINE__, #expr, strerror(-check_r_));                  \
    } while (0)

__attribute__((format(printf, 1, 2))) static void progress(const char *fmt, ...)
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

__attribute__((format(printf, 1, 2))) static void add_note(const char *fmt, ...)
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
    for (int i = 0; i < n; i++) {
        if (warm_ops > 0)
            c[i].fn(c[i].ctx, warm_ops);
        check_interrupted();
    }
    for (int r = 0; r < rounds; r++) {
        for (int j = 0; j < n; j++) {
            int i = (r + j) % n;
            out[i * rounds + r] = c[i].fn(c[i].ctx, ops);
            check_interrupted();
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

/* The middle k, with its own target: the shape of issue 11's measurement. */
#define S3_K_MID 1500
#define S3_K_MID_STR "1500"

static void scenario3(void)
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

/* ===================================================== Python coprocess (7-9)
 * One python3 process serves the Python contenders of scenarios 7-9: it
 * reads one command per line ("map N", "endmap 0", "queue N", "pipe<bytes> N",
 * "quit 0") on its stdin (a socket: sending to a dead Python is then -EPIPE,
 * not SIGPIPE) and answers each with one line on its stdout, its own timing
 * in ns. So its Pool is created once and stays up across the rounds, as
 * libproc's does. It leads its own process group, which also holds its
 * multiprocessing children: the fatal paths kill the whole group.
 */

static const char python_coproc_script[] =
    "import multiprocessing as mp, sys, time\n"
    "def sq(x):\n"
    "    return x * x + 7\n"
    "def producer(q, go, n):\n"
    "    msg = b'm' * 64\n"
    "    go.wait()\n"
    "    put = q.put\n"
    "    for _ in range(n):\n"
    "        put(msg)\n"
    "def echo(c, other):\n"
    "    other.close()\n"
    "    try:\n"
    "        while True:\n"
    "            c.send_bytes(c.recv_bytes())\n"
    "    except EOFError:\n"
    "        pass\n"
    "def main():\n"
    "    ctx = mp.get_context('fork')\n"
    "    workers = int(sys.argv[1])\n"
    "    try:\n" /* Pool, Queue and Event need POSIX semaphores (/dev/shm) */
    "        ctx.Lock()\n"
    "        q = ctx.Queue(); q.close()\n"
    "    except Exception as e:\n"
    "        print('nomp', type(e).__name__, flush=True)\n"
    "        return\n"
    "    print('ready', sys.version.split()[0], flush=True)\n"
    "    pool = None\n"
    "    clock = time.perf_counter_ns\n"
    "    for line in iter(sys.stdin.readline, ''):\n"
    "        cmd, n = line.split()\n"
    "        n = int(n)\n"
    "        if cmd == 'quit':\n"
    "            break\n"
    "        elif cmd == 'map':\n"
    "            if pool is None:\n"
    "                pool = ctx.Pool(workers)\n"
    "            data = list(range(n))\n"
    "            t0 = clock()\n"
    "            r = pool.map(sq, data)\n"
    "            t1 = clock()\n"
    "            if len(r) != n or r[-1] != (n - 1) * (n - 1) + 7:\n"
    "                sys.exit(3)\n"
    "            print((t1 - t0) / n, flush=True)\n"
    "        elif cmd == 'endmap':\n"
    "            if pool is not None:\n"
    "                pool.close(); pool.join(); pool = None\n"
    "            print('ok', flush=True)\n"
    "        elif cmd == 'queue':\n"
    "            q = ctx.Queue(); go = ctx.Event()\n"
    "            p = ctx.Process(target=producer, args=(q, go, n)); p.start()\n"
    "            get = q.get\n"
    "            t0 = clock()\n"
    "            go.set()\n"
    "            for _ in range(n):\n"
    "                if len(get()) != 64:\n"
    "                    sys.exit(3)\n"
    "            t1 = clock()\n"
    "            p.join(); q.close(); q.join_thread()\n"
    "            if p.exitcode != 0:\n"
    "                sys.exit(3)\n"
    "            print((t1 - t0) / n, flush=True)\n"
    "        elif cmd.startswith('pipe'):\n" /* "pipe<bytes> N" */
    "            size = int(cmd[4:])\n"
    "            a, b = ctx.Pipe(duplex=True)\n"
    "            p = ctx.Process(target=echo, args=(b, a)); p.start(); b.close()\n"
    "            msg = b'p' * size\n"
    "            for _ in range(20):\n"
    "                a.send_bytes(msg); a.recv_bytes()\n"
    "            s = []\n"
    "            for _ in range(n):\n"
    "                t0 = clock(); a.send_bytes(msg)\n"
    "                if len(a.recv_bytes()) != size:\n"
    "                    sys.exit(3)\n"
    "                s.append(clock() - t0)\n"
    "            a.close(); p.join()\n"
    "            if p.exitcode != 0:\n"
    "                sys.exit(3)\n"
    "            s.sort()\n"
    "            print(s[len(s) // 2], s[min(len(s) - 1, len(s) * 99 // 100)], flush=True)\n"
    "        else:\n"
    "            sys.exit(2)\n"
    "    if pool is not None:\n"
    "        pool.terminate(); pool.join()\n"
    "if __name__ == '__main__':\n"
    "    main()\n";

static bool py_tried;       /* python_start() ran (once per benchmark run) */
static char py_version[32]; /* of the coprocess */
static char py_skip[128];   /* why there is no coprocess, for the notes */

/* Waits for every process of the (dead) coprocess's group that came to us. */
static void python_reap_group(pid_t pgid)
{
    for (;;) {
        pid_t r = waitpid(-pgid, NULL, 0);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        break;
    }
}

/* Fatal paths (not the signal handler): kills the coprocess's group and reaps it. */
static void python_kill(void)
{
    if (py.to >= 0)
        close(py.to);
    if (py.from >= 0)
        close(py.from);
    py.to = py.from = -1;
    if (py.pid > 0) {
        pid_t pid = py.pid;
        py.pid = 0;
        kill(-pid, SIGKILL);
        reap_quietly(pid);
        python_reap_group(pid); /* its orphans: we are their subreaper */
    }
}

/* Reads one line (without the '\n') from the coprocess, waiting up to 10 min. */
static void python_read_line(char *buf, size_t cap)
{
    size_t len = 0;
    uint64_t deadline = now_ns() + 600ull * 1000000000ull;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline)
            die("python coprocess: no answer within 10 minutes");
        struct pollfd p = {.fd = py.from, .events = POLLIN};
        int n = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("poll: %s", strerror(errno));
        if (n == 0)
            continue;
        char c;
        ssize_t r = read(py.from, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read from python: %s", strerror(errno));
        if (r == 0)
            die("python coprocess exited (see its traceback above)");
        if (c == '\n')
            break;
        if (len + 1 < cap)
            buf[len++] = c;
    }
    buf[len] = '\0';
}

/* Sends "cmd n" and returns the answer line in buf. */
static void python_cmd(char *buf, size_t cap, const char *cmd, long n)
{
    char line[64];
    int len = snprintf(line, sizeof line, "%s %ld\n", cmd, n);
    for (int off = 0; off < len;) {
        ssize_t w = send(py.to, line + off, (size_t)(len - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            die("python coprocess gone: %s", strerror(errno));
        off += (int)w;
    }
    python_read_line(buf, cap);
}

/* The answer's first number, which must be a positive time in ns. */
static double python_ns(const char *cmd, long n)
{
    char buf[128];
    python_cmd(buf, sizeof buf, cmd, n);
    char *end;
    double v = strtod(buf, &end);
    if (end == buf || !(v > 0))
        die("python '%s %ld' answered '%s'", cmd, n, buf);
    return v;
}

/*
 * Starts the coprocess (once); true when it runs. Without python3, or when
 * its multiprocessing cannot work here (no /dev/shm for its semaphores), the
 * Python contenders are left out and py_skip says why.
 */
static bool python_start(void)
{
    if (py.pid > 0)
        return true;
    if (py_tried)
        return false;
    py_tried = true;
    if (!find_in_path("python3", python_path, sizeof python_path)) {
        snprintf(py_skip, sizeof py_skip, "no python3 in PATH");
        return false;
    }
    int sv[2], out[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair: %s", strerror(errno));
    if (pipe2(out, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    char cpus[16];
    snprintf(cpus, sizeof cpus, "%d", proc_cpu_count());
    char *argv[] = {"python3", "-c", (char *)python_coproc_script, cpus, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int err = posix_spawn_file_actions_init(&fa);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (!err)
        err = posix_spawnattr_init(&attr);
    if (!err)
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    if (!err)
        err = posix_spawnattr_setpgroup(&attr, 0);
    if (err)
        die("posix_spawn attributes: %s", strerror(err));
    pid_t pid;
    err = posix_spawn(&pid, python_path, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (err)
        die("posix_spawn(%s): %s", python_path, strerror(err));
    py.pid = pid;
    py.to = sv[0];
    py.from = out[0];
    close(sv[1]);
    close(out[1]);
    char buf[128];
    python_read_line(buf, sizeof buf);
    if (sscanf(buf, "ready %31s", py_version) == 1)
        return true;
    snprintf(py_skip, sizeof py_skip, "python3 multiprocessing unusable here (%.60s)", buf);
    python_kill(); /* it printed why and is returning anyway */
    return false;
}

/* Ends the coprocess normally; it must exit with 0. */
static void python_stop(void)
{
    if (py.pid <= 0)
        return;
    char line[] = "quit 0\n";
    if (send(py.to, line, sizeof line - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof line - 1))
        die("python coprocess gone: %s", strerror(errno));
    close(py.to);
    py.to = -1;
    pid_t pid = py.pid;
    reap_ok(pid);
    py.pid = 0;
    close(py.from);
    py.from = -1;
    kill(-pid, SIGKILL); /* nothing should be left of its group (ESRCH); be sure */
    python_reap_group(pid);
}

static void s789_python_failed(const char *what)
{
    add_note("%s: python contender skipped: %s", what, py_skip);
}

/* ============================================================ 7: pool map */

/* The tiny task: out = in * in + 7 on longs. */
static int s7_square(const void *in, void *out)
{
    long x;
    memcpy(&x, in, sizeof x);
    x = x * x + 7;
    memcpy(out, &x, sizeof x);
    return 0;
}

/* The baseline calls through this, so the compiler cannot inline the task. */
static proc_task_fn *volatile s7_square_ptr = s7_square;

struct s7ctx {
    proc_pool_t *pool;
    long *in, *out; /* n items */
};

static void s7_check(const struct s7ctx *c, long n, const char *who)
{
    for (long i = 0; i < n; i++)
        if (c->out[i] != c->in[i] * c->in[i] + 7)
            die("%s: item %ld: got %ld, want %ld", who, i, c->out[i], c->in[i] * c->in[i] + 7);
}

/* Per-item time in ns. */
static double s7_loop(void *ctx, long n)
{
    struct s7ctx *c = ctx;
    memset(c->out, 0, (size_t)n * sizeof *c->out);
    proc_task_fn *fn = s7_square_ptr;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        if (fn(&c->in[i], &c->out[i]) != 0)
            die("loop: item %ld failed", i);
    uint64_t t1 = now_ns();
    s7_check(c, n, "loop");
    return (double)(t1 - t0) / (double)n;
}

static double s7_libproc(void *ctx, long n)
{
    struct s7ctx *c = ctx;
    memset(c->out, 0, (size_t)n * sizeof *c->out);
    uint64_t t0 = now_ns();
    int rc =
        proc_pool_map(c->pool, s7_square, c->in, sizeof *c->in, c->out, sizeof *c->out, (size_t)n);
    uint64_t t1 = now_ns();
    if (rc != 0)
        die("proc_pool_map: %d (%s)", rc, rc < 0 ? strerror(-rc) : "a task failed");
    s7_check(c, n, "proc_pool_map");
    return (double)(t1 - t0) / (double)n;
}

static double s7_python(void *ctx, long n)
{
    (void)ctx;
    return python_ns("map", n);
}

/* CPU-bound: count the primes in [lo, hi) by trial division. */
struct s7range {
    uint32_t lo, hi;
};

static int s7_count_primes(const void *in, void *out)
{
    struct s7range r;
    memcpy(&r, in, sizeof r);
    uint64_t count = 0;
    for (uint32_t n = r.lo; n < r.hi; n++) {
        if (n < 2 || (n > 2 && n % 2 == 0))
            continue;
        bool prime = true;
        for (uint32_t d = 3; d * d <= n; d += 2) {
            if (n % d == 0) {
                prime = false;
                break;
            }
        }
        count += prime;
    }
    memcpy(out, &count, sizeof count);
    return 0;
}

static proc_task_fn *volatile s7_count_primes_ptr = s7_count_primes;

struct s7cpu {
    proc_pool_t *pool;
    struct s7range *ranges; /* n ranges */
    uint64_t *counts;       /* MAP_SHARED, so that raw_fork's children can fill it in */
    uint64_t expect;        /* primes below the limit, from a sieve */
    int cpus;
};

static void s7cpu_check(const struct s7cpu *c, long n, const char *who)
{
    uint64_t sum = 0;
    for (long i = 0; i < n; i++)
        sum += c->counts[i];
    if (sum != c->expect)
        die("%s: counted %" PRIu64 " primes, the sieve %" PRIu64, who, sum, c->expect);
}

/* Time of the whole map of n ranges, in ns. */
static double s7cpu_loop(void *ctx, long n)
{
    struct s7cpu *c = ctx;
    memset(c->counts, 0, (size_t)n * sizeof *c->counts);
    proc_task_fn *fn = s7_count_primes_ptr;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        if (fn(&c->ranges[i], &c->counts[i]) != 0)
            die("loop: range %ld failed", i);
    uint64_t t1 = now_ns();
    s7cpu_check(c, n, "loop");
    return (double)(t1 - t0);
}

static double s7cpu_libproc(void *ctx, long n)
{
    struct s7cpu *c = ctx;
    memset(c->counts, 0, (size_t)n * sizeof *c->counts);
    uint64_t t0 = now_ns();
    int rc = proc_pool_map(c->pool, s7_count_primes, c->ranges, sizeof *c->ranges, c->counts,
                           sizeof *c->counts, (size_t)n);
    uint64_t t1 = now_ns();
    if (rc != 0)
        die("proc_pool_map: %d (%s)", rc, rc < 0 ? strerror(-rc) : "a task failed");
    s7cpu_check(c, n, "proc_pool_map");
    return (double)(t1 - t0);
}

/*
 * What the machine gives: one forked child per CPU, child k counting the
 * ranges i with i % cpus == k, no pool (fork and wait are in the time; they
 * are tiny next to the work). Its speed-up bounds any pool's.
 */
static double s7cpu_raw_fork(void *ctx, long n)
{
    struct s7cpu *c = ctx;
    memset(c->counts, 0, (size_t)n * sizeof *c->counts);
    pid_t *pids = xcalloc((size_t)c->cpus, sizeof *pids);
    live.pids = pids;
    live.npids = (size_t)c->cpus;
    proc_task_fn *fn = s7_count_primes_ptr;
    uint64_t t0 = now_ns();
    for (int k = 0; k < c->cpus; k++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            for (long i = k; i < n; i += c->cpus)
                if (fn(&c->ranges[i], &c->counts[i]) != 0)
                    _exit(1);
            _exit(0);
        }
        pids[k] = pid;
    }
    for (int k = 0; k < c->cpus; k++) {
        reap_ok(pids[k]);
        pids[k] = 0;
    }
    uint64_t t1 = now_ns();
    live_reset();
    free(pids);
    s7cpu_check(c, n, "raw_fork");
    return (double)(t1 - t0);
}

static uint64_t sieve_count(uint32_t limit)
{
    unsigned char *composite = xcalloc(limit + 1u, 1);
    uint64_t count = 0;
    for (uint64_t i = 2; i < limit; i++) {
        if (composite[i])
            continue;
        count++;
        for (uint64_t j = i * i; j < limit; j += i)
            composite[j] = 1;
    }
    free(composite);
    return count;
}

static void scenario7(void)
{
    long items = opt.quick ? 10000 : 100000;
    int rounds = rounds_or(opt.quick ? 3 : 11);
    int cpus = proc_cpu_count();
    proc_pool_opts_t po;
    memset(&po, 0, sizeof po);
    po.workers = cpus;
    sigset_t old;
    block_fatal_signals(&old); /* on_fatal_signal must see the pool once it has workers */
    live_pool = proc_pool_new(&po);
    int err = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (!live_pool)
        die("proc_pool_new(%d workers): %s", cpus, strerror(err));
    bool have_py = python_start();

    /* tiny tasks */
    progress("scenario 7: pool map of %ld tiny tasks, %d workers, x %d rounds", items, cpus,
             rounds);
    struct s7ctx ctx = {live_pool, xcalloc((size_t)items, sizeof(long)),
                        xcalloc((size_t)items, sizeof(long))};
    for (long i = 0; i < items; i++)
        ctx.in[i] = i;
    struct contender c[] = {
        {"loop", s7_loop, &ctx},
        {"libproc", s7_libproc, &ctx},
        {"python", s7_python, &ctx},
    };
    int n = have_py ? 3 : 2;
    double med[3];
    double *out = xcalloc(3 * (size_t)rounds, sizeof *out);
    run_rounds(c, n, items, items, rounds, out); /* warm-up: Python creates its Pool there */
    for (int i = 0; i < n; i++) {
        med[i] = median(out + (size_t)i * (size_t)rounds, (size_t)rounds);
        add_row(7, "pool_map", items, "items", c[i].name, "median", "ns/task", med[i],
                med[i] / med[0], rounds);
    }
    add_row(7, "pool_map", items, "items", "libproc", "overhead", "ns/task", med[1] - med[0],
            NO_RATIO, rounds);
    if (have_py) {
        char buf[16];
        python_cmd(buf, sizeof buf, "endmap", 0);
        add_row(7, "pool_map", items, "items", "python", "overhead", "ns/task", med[2] - med[0],
                NO_RATIO, rounds);
        add_note("7: python %s: multiprocessing.Pool(%d).map(f, list(range(%ld))) on a running "
                 "pool, timed inside Python; python / libproc = %.1f.",
                 py_version, cpus, items, med[2] / med[1]);
    } else {
        s789_python_failed("7");
    }
    add_note("7: pool_map: out = in*in+7 on longs; loop = one process calling the same function "
             "pointer; overhead = contender - loop, per task.");
    free(out);
    free(ctx.in);
    free(ctx.out);

    /* CPU-bound */
    long nranges = opt.quick ? 8 : 64;
    uint32_t limit = opt.quick ? 200000u : 3000000u;
    int crounds = rounds_or(opt.quick ? 3 : 5);
    progress("scenario 7: CPU-bound map, primes below %u in %ld ranges, x %d rounds", limit,
             nranges, crounds);
    size_t counts_len = (size_t)nranges * sizeof(uint64_t);
    uint64_t *counts =
        mmap(NULL, counts_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counts == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    struct s7cpu cc = {live_pool, xcalloc((size_t)nranges, sizeof(struct s7range)), counts,
                       sieve_count(limit), cpus};
    for (long i = 0; i < nranges; i++) {
        cc.ranges[i].lo = (uint32_t)((uint64_t)limit * (uint64_t)i / (uint64_t)nranges);
        cc.ranges[i].hi = (uint32_t)((uint64_t)limit * (uint64_t)(i + 1) / (uint64_t)nranges);
    }
    struct contender cpu[] = {
        {"loop", s7cpu_loop, &cc},
        {"libproc", s7cpu_libproc, &cc},
        {"raw_fork", s7cpu_raw_fork, &cc},
    };
    double cmed[3];
    double *cout = xcalloc(3 * (size_t)crounds, sizeof *cout);
    run_rounds(cpu, 3, nranges, 0, crounds, cout);
    for (int i = 0; i < 3; i++) {
        cmed[i] = median(cout + (size_t)i * (size_t)crounds, (size_t)crounds) / 1e6;
        add_row(7, "pool_map_cpu", nranges, "ranges", cpu[i].name, "median", "ms/map", cmed[i],
                cmed[i] / cmed[0], crounds);
    }
    for (int i = 1; i < 3; i++)
        add_row(7, "pool_map_cpu", nranges, "ranges", cpu[i].name, "speedup", "x",
                cmed[0] / cmed[i], NO_RATIO, crounds);
    add_row(7, "pool_map_cpu", nranges, "ranges", "libproc", "cpus", "count", cpus, NO_RATIO,
            crounds);
    add_note("7: pool_map_cpu: primes below %u by trial division in %ld equal ranges; speedup = "
             "loop / contender; libproc with %d workers (one per CPU); raw_fork = %d forked "
             "children splitting the ranges statically, no pool: what the machine gives.",
             limit, nranges, cpus, cpus);
    free(cout);
    free(cc.ranges);
    munmap(counts, counts_len);

    CHECK_PROC(proc_pool_close(live_pool));
    CHECK_PROC(proc_pool_join(live_pool, 60000));
    block_fatal_signals(&old);
    CHECK_PROC(proc_pool_free(live_pool));
    live_pool = NULL;
    sigprocmask(SIG_SETMASK, &old, NULL);
    check_interrupted();
}

/* ====================================================== 8: queue throughput */

#define S8_MSG 64

struct s8ctx {
    long msgs;       /* per batch */
    proc_queue_t *q; /* libproc's, reused by every batch */
};

/* Message seq: its number in the first 8 bytes, the low byte of it everywhere else. */
static void s8_fill(unsigned char *msg, uint64_t seq)
{
    memset(msg, (int)(seq & 0xff), S8_MSG);
    memcpy(msg, &seq, sizeof seq);
}

static void s8_check(const unsigned char *msg, uint64_t seq, const char *who)
{
    uint64_t got;
    memcpy(&got, msg, sizeof got);
    if (got != seq || msg[S8_MSG - 1] != (unsigned char)(seq & 0xff))
        die("%s: message %" PRIu64 " arrived as %" PRIu64 " (or torn)", who, seq, got);
}

/* Blocks until the consumer says go (one byte on fd). */
static bool s8_wait_go(int fd)
{
    char c;
    ssize_t r;
    do {
        r = read(fd, &c, 1);
    } while (r < 0 && errno == EINTR);
    return r == 1;
}

/* The "go" pipe of a libproc batch, listed in live.fds so that a fatal path closes it. */
static void s8_go_pipe(int go[2])
{
    if (pipe2(go, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    live.fds[0] = go[0];
    live.fds[1] = go[1];
}

static void s8_go(int fd)
{
    ssize_t r;
    do {
        r = write(fd, "g", 1);
    } while (r < 0 && errno == EINTR);
    if (r != 1)
        die("write(go): %s", strerror(errno));
}

static double s8_raw(void *ctx, long ops)
{
    (void)ops;
    long n = ((struct s8ctx *)ctx)->msgs;
    int go[2], data[2];
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(data, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    slot = fork();
    if (slot < 0)
        die("fork: %s", strerror(errno));
    if (slot == 0) {
        close(go[1]);
        close(data[0]);
        if (!s8_wait_go(go[0]))
            _exit(4);
        unsigned char msg[S8_MSG];
        for (long i = 0; i < n; i++) {
            s8_fill(msg, (uint64_t)i);
            for (size_t off = 0;
                 off < S8_MSG;) { /* one write: a pipe write <= PIPE_BUF is atomic */
                ssize_t w = write(data[1], msg + off, S8_MSG - off);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w < 0)
                    _exit(2);
                off += (size_t)w;
            }
        }
        _exit(0);
    }
    close(go[0]);
    close(data[1]);
    unsigned char buf[S8_MSG];
    uint64_t t0 = now_ns();
    s8_go(go[1]);
    for (long i = 0; i < n; i++) {
        for (size_t off = 0; off < S8_MSG;) {
            ssize_t r = read(data[0], buf + off, S8_MSG - off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                die("raw pipe: read: %s", r < 0 ? strerror(errno) : "early end of file");
            off += (size_t)r;
        }
        s8_check(buf, (uint64_t)i, "raw pipe");
    }
    uint64_t t1 = now_ns();
    close(go[1]);
    close(data[0]);
    reap_ok(slot);
    slot = 0;
    live_reset();
    return (double)(t1 - t0) / (double)n;
}

struct s8prod {
    proc_queue_t *q;
    int go;
    long n;
};

static int s8_producer(void *arg)
{
    const struct s8prod *p = arg;
    if (!s8_wait_go(p->go))
        return 4;
    unsigned char msg[S8_MSG];
    for (long i = 0; i < p->n; i++) {
        s8_fill(msg, (uint64_t)i);
        if (proc_queue_put(p->q, msg, S8_MSG, 60000) < 0)
            return 2;
    }
    return 0;
}

static double s8_libproc(void *ctx, long ops)
{
    (void)ops;
    struct s8ctx *c = ctx;
    long n = c->msgs;
    int go[2];
    s8_go_pipe(go);
    struct s8prod prod = {c->q, go[0], n};
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    slot = proc_new(s8_producer, &prod);
    if (!slot)
        die("proc_new: %s", strerror(errno));
    CHECK_PROC(proc_start(slot));
    close(go[0]);
    live.fds[0] = -1;
    unsigned char buf[S8_MSG];
    uint64_t t0 = now_ns();
    s8_go(go[1]);
    for (long i = 0; i < n; i++) {
        ssize_t r = proc_queue_get(c->q, buf, sizeof buf, 60000);
        if (r != S8_MSG)
            die("proc_queue_get: %zd (%s)", r, r < 0 ? strerror((int)-r) : "wrong length");
        s8_check(buf, (uint64_t)i, "proc_queue");
    }
    uint64_t t1 = now_ns();
    close(go[1]);
    live.fds[1] = -1;
    join_ok(slot);
    close_ok(&slot);
    live_reset();
    if (proc_queue_size(c->q) != 0)
        die("proc_queue: %zu messages left after the batch", proc_queue_size(c->q));
    return (double)(t1 - t0) / (double)n;
}

static double s8_python(void *ctx, long ops)
{
    (void)ops;
    return python_ns("queue", ((struct s8ctx *)ctx)->msgs);
}

static void scenario8_pipeline(void);

static void scenario8(void)
{
    long msgs = opt.quick ? 5000 : 200000;
    long py_msgs = opt.quick ? 1000 : 20000; /* Python is ~100x slower: fewer, same rate */
    size_t max_items = 1024;
    int rounds = rounds_or(opt.quick ? 3 : 7);
    bool have_py = python_start();
    progress("scenario 8: queue throughput, %ld (python %ld) %d-byte messages x %d rounds", msgs,
             py_msgs, S8_MSG, rounds);
    proc_queue_t *q = proc_queue_new(max_items, S8_MSG);
    if (!q)
        die("proc_queue_new: %s", strerror(errno));
    struct s8ctx big = {msgs, q}, small = {py_msgs, q};
    struct contender c[] = {
        {"raw", s8_raw, &big},
        {"libproc", s8_libproc, &big},
        {"python", s8_python, &small},
    };
    int n = have_py ? 3 : 2;
    double *out = xcalloc(3 * (size_t)rounds, sizeof *out);
    run_rounds(c, n, 0, 0, rounds, out);
    double med[3];
    for (int i = 0; i < n; i++) {
        med[i] = median(out + (size_t)i * (size_t)rounds, (size_t)rounds); /* ns/msg */
        add_row(8, "queue_throughput", S8_MSG, "bytes", c[i].name, "rate", "msg/s", 1e9 / med[i],
                med[0] / med[i], rounds);
    }
    free(out);
    proc_queue_free(q);
    add_note("8: one producer process -> one consumer process, %d-byte messages; raw = write()/"
             "read() of one message on a pipe; libproc = proc_queue_t (max_items %zu); %ld "
             "messages per round (python %ld). Ratio = rate / raw rate: higher is better.",
             S8_MSG, max_items, msgs, py_msgs);
    if (have_py)
        add_note("8: python %s: multiprocessing.Queue() (unbounded, fork), put(bytes) / get(), "
                 "timed inside Python; libproc / python = %.1f.",
                 py_version, med[2] / med[1]);
    else
        s789_python_failed("8");
    scenario8_pipeline();
}

/*
 * 8, second part: a 1 -> 3 -> 1 pipeline (producer, three workers passing
 * records on, the benchmark process consuming) by queue capacity. raw = the
 * same processes on two pipes: 64-byte writes are atomic, and every read
 * takes exactly one record, so three readers of one pipe never tear one.
 */
#define S8P_WORKERS 3
#define S8P_STOP UINT64_MAX

struct s8pctx {
    long msgs;
    size_t capacity;
    proc_queue_t *in, *out; /* libproc's, reused by every batch */
};

/* 1: a record; 0: end of file; -1: an error (errno). */
static int s8p_read_record(int fd, unsigned char *buf)
{
    for (size_t off = 0; off < S8_MSG;) {
        ssize_t r = read(fd, buf + off, S8_MSG - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return (int)r;
        off += (size_t)r;
    }
    return 1;
}

static bool s8p_write_record(int fd, const unsigned char *buf)
{
    for (;;) {
        ssize_t w = write(fd, buf, S8_MSG); /* <= PIPE_BUF: all or nothing */
        if (w == S8_MSG)
            return true;
        if (w < 0 && errno == EINTR)
            continue;
        return false;
    }
}

/* Every record 0..n-1 arrived once: a bitmap, checked as the records come. */
static void s8p_mark(uint8_t *seen, long n, const unsigned char *msg, const char *who)
{
    uint64_t seq;
    memcpy(&seq, msg, sizeof seq);
    if (seq >= (uint64_t)n || msg[S8_MSG - 1] != (unsigned char)(seq & 0xff) ||
        (seen[seq / 8] & (1u << (seq % 8))))
        die("%s: record %" PRIu64 " out of range, torn or twice", who, seq);
    seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
}

static double s8p_raw(void *ctx, long ops)
{
    (void)ops;
    long n = ((struct s8pctx *)ctx)->msgs;
    int go[2], a[2], b[2];
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(a, O_CLOEXEC) < 0 || pipe2(b, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    pid_t slots[1 + S8P_WORKERS] = {0};
    live.pids = slots;
    live.npids = 1 + S8P_WORKERS;
    for (int i = 0; i <= S8P_WORKERS; i++) {
        if ((slots[i] = fork()) < 0)
            die("fork: %s", strerror(errno));
        if (slots[i] > 0)
            continue;
        /* Only the ends this child uses: a dead benchmark then ends them all. */
        close(go[1]);
        close(b[0]);
        unsigned char msg[S8_MSG];
        if (i == 0) { /* the producer */
            close(a[0]);
            close(b[1]);
            if (!s8_wait_go(go[0]))
                _exit(4);
            for (long k = 0; k < n; k++) {
                s8_fill(msg, (uint64_t)k);
                if (!s8p_write_record(a[1], msg))
                    _exit(2);
            }
            _exit(0);
        }
        close(go[0]);
        close(a[1]); /* a worker: until the producer's end of file */
        while (s8p_read_record(a[0], msg) == 1)
            if (!s8p_write_record(b[1], msg))
                _exit(2);
        _exit(0);
    }
    close(go[0]);
    close(a[0]);
    close(a[1]);
    close(b[1]);
    uint8_t *seen = xcalloc((size_t)n / 8 + 1, 1);
    unsigned char buf[S8_MSG];
    uint64_t t0 = now_ns();
    s8_go(go[1]);
    for (long k = 0; k < n; k++) {
        int r = s8p_read_record(b[0], buf);
        if (r != 1)
            die("raw pipeline: read: %s", r < 0 ? strerror(errno) : "early end of file");
        s8p_mark(seen, n, buf, "raw pipeline");
    }
    uint64_t t1 = now_ns();
    free(seen);
    close(go[1]);
    close(b[0]);
    for (int i = 0; i <= S8P_WORKERS; i++) {
        reap_ok(slots[i]);
        slots[i] = 0;
    }
    live_reset();
    return (double)(t1 - t0) / (double)n;
}

struct s8pjob {
    struct s8pctx *c;
    int go; /* -1 for the workers */
};

static int s8p_producer(void *arg)
{
    const struct s8pjob *j = arg;
    if (!s8_wait_go(j->go))
        return 4;
    unsigned char msg[S8_MSG];
    for (long k = 0; k < j->c->msgs; k++) {
        s8_fill(msg, (uint64_t)k);
        if (proc_queue_put(j->c->in, msg, S8_MSG, 60000) < 0)
            return 2;
    }
    memset(msg, 0xff, sizeof msg); /* one stop record per worker */
    for (int i = 0; i < S8P_WORKERS; i++)
        if (proc_queue_put(j->c->in, msg, S8_MSG, 60000) < 0)
            return 2;
    return 0;
}

static int s8p_worker(void *arg)
{
    const struct s8pjob *j = arg;
    unsigned char msg[S8_MSG];
    for (;;) {
        if (proc_queue_get(j->c->in, msg, sizeof msg, 60000) != S8_MSG)
            return 2;
        uint64_t seq;
        memcpy(&seq, msg, sizeof seq);
        if (seq == S8P_STOP)
            return 0;
        if (proc_queue_put(j->c->out, msg, S8_MSG, 60000) < 0)
            return 2;
    }
}

static double s8p_libproc(void *ctx, long ops)
{
    (void)ops;
    struct s8pctx *c = ctx;
    long n = c->msgs;
    int go[2];
    s8_go_pipe(go);
    struct s8pjob producer = {c, go[0]}, worker = {c, -1};
    proc_t *slots[1 + S8P_WORKERS] = {NULL};
    live.procs = slots;
    live.nprocs = 1 + S8P_WORKERS;
    for (int i = 0; i <= S8P_WORKERS; i++) {
        slots[i] = i == 0 ? proc_new(s8p_producer, &producer) : proc_new(s8p_worker, &worker);
        if (!slots[i])
            die("proc_new: %s", strerror(errno));
        CHECK_PROC(proc_start(slots[i]));
    }
    close(go[0]);
    live.fds[0] = -1;
    uint8_t *seen = xcalloc((size_t)n / 8 + 1, 1);
    unsigned char buf[S8_MSG];
    uint64_t t0 = now_ns();
    s8_go(go[1]);
    for (long k = 0; k < n; k++) {
        ssize_t r = proc_queue_get(c->out, buf, sizeof buf, 60000);
        if (r != S8_MSG)
            die("proc_queue_get: %zd (%s)", r, r < 0 ? strerror((int)-r) : "wrong length");
        s8p_mark(seen, n, buf, "proc_queue pipeline");
    }
    uint64_t t1 = now_ns();
    free(seen);
    close(go[1]);
    live.fds[1] = -1;
    for (int i = 0; i <= S8P_WORKERS; i++) {
        join_ok(slots[i]);
        close_ok(&slots[i]);
    }
    live_reset();
    if (proc_queue_size(c->in) != 0 || proc_queue_size(c->out) != 0)
        die("proc_queue pipeline: messages left after the batch");
    return (double)(t1 - t0) / (double)n;
}

static void scenario8_pipeline(void)
{
    static const size_t caps_full[] = {16, 64, 256, 1024, 4096}, caps_quick[] = {16, 1024};
    const size_t *caps = opt.quick ? caps_quick : caps_full;
    size_t ncaps = opt.quick ? 2 : 5;
    long msgs = opt.quick ? 2000 : 100000;
    int rounds = rounds_or(opt.quick ? 3 : 5);
    for (size_t i = 0; i < ncaps; i++) {
        progress("scenario 8: 1 -> %d -> 1 pipeline, capacity %zu, %ld records x %d rounds",
                 S8P_WORKERS, caps[i], msgs, rounds);
        struct s8pctx ctx = {msgs, caps[i], proc_queue_new(caps[i], S8_MSG),
                             proc_queue_new(caps[i], S8_MSG)};
        if (!ctx.in || !ctx.out)
            die("proc_queue_new: %s", strerror(errno));
        struct contender c[] = {{"raw", s8p_raw, &ctx}, {"libproc", s8p_libproc, &ctx}};
        double out[2 * 64];
        if (rounds > 64)
            die("scenario 8: at most 64 rounds");
        run_rounds(c, 2, 0, 1, rounds, out); /* warm-up: one batch each (ops unused) */
        double med[2];
        for (int k = 0; k < 2; k++) {
            med[k] = median(out + (size_t)k * (size_t)rounds, (size_t)rounds);
            add_row(8, "queue_pipeline", (long)caps[i], "capacity", c[k].name, "rate", "rec/s",
                    1e9 / med[k], med[0] / med[k], rounds);
        }
        proc_queue_free(ctx.in);
        proc_queue_free(ctx.out);
    }
    add_note("8: queue_pipeline: producer -> %d workers -> the benchmark process, %d-byte "
             "records, %ld per round; libproc = two proc_queue_t of max_items = capacity; raw = "
             "the same processes on two pipes (64 KiB each, whatever the capacity). Ratio = "
             "rate / raw rate.",
             S8P_WORKERS, S8_MSG, msgs);
}

/* ================================================== 9: pipe round trips */

#define S9_MAX 64 /* the largest message size */
#define S9_WARM 20

static const size_t s9_sizes[] = {8, 64};
static size_t s9_len; /* this batch's message size */

/* Per contender: per-round p99, next to the p50 that the batch returns. */
struct s9ctx {
    double *p99;
    int n;
    double *samples; /* scratch: ns per round trip */
};

static double s9_finish(struct s9ctx *c, long n)
{
    double p50 = quantile(c->samples, (size_t)n, 0.5); /* sorts */
    c->p99[c->n++] = quantile(c->samples, (size_t)n, 0.99);
    return p50;
}

static double s9_raw(void *ctx, long n)
{
    struct s9ctx *c = ctx;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair: %s", strerror(errno));
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    slot = fork();
    if (slot < 0)
        die("fork: %s", strerror(errno));
    if (slot == 0) {
        close(sv[0]);
        char buf[S9_MAX];
        for (;;) {
            ssize_t r = recv(sv[1], buf, sizeof buf, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0)
                _exit(0);
            if (r < 0)
                _exit(2);
            if (send(sv[1], buf, (size_t)r, MSG_NOSIGNAL) != r)
                _exit(1);
        }
    }
    close(sv[1]);
    char msg[S9_MAX], buf[S9_MAX];
    memset(msg, 'p', sizeof msg);
    for (long i = 0; i < S9_WARM + n; i++) {
        uint64_t t0 = now_ns();
        if (send(sv[0], msg, s9_len, MSG_NOSIGNAL) != (ssize_t)s9_len)
            die("raw socketpair: send: %s", strerror(errno));
        ssize_t r;
        do {
            r = recv(sv[0], buf, sizeof buf, 0);
        } while (r < 0 && errno == EINTR);
        if (r != (ssize_t)s9_len)
            die("raw socketpair: recv: %zd (%s)", r, r < 0 ? strerror(errno) : "short");
        uint64_t t1 = now_ns();
        if (i >= S9_WARM)
            c->samples[i - S9_WARM] = (double)(t1 - t0);
    }
    close(sv[0]);
    reap_ok(slot);
    slot = 0;
    live_reset();
    return s9_finish(c, n);
}

static proc_conn_t *s9_parent_end, *s9_child_end;

static int s9_echo(void *arg)
{
    (void)arg;
    proc_conn_close(s9_parent_end); /* else the parent's close gives us no EOF */
    char buf[S9_MAX];
    ssize_t r;
    while ((r = proc_conn_recv(s9_child_end, buf, sizeof buf, 60000)) >= 0)
        if (proc_conn_send(s9_child_end, buf, (size_t)r) < 0)
            return 1;
    return r == -EPIPE ? 0 : 2;
}

static double s9_libproc(void *ctx, long n)
{
    struct s9ctx *c = ctx;
    CHECK_PROC(proc_pipe(&s9_parent_end, &s9_child_end, true));
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    slot = proc_new(s9_echo, NULL);
    if (!slot)
        die("proc_new: %s", strerror(errno));
    CHECK_PROC(proc_start(slot));
    proc_conn_close(s9_child_end);
    s9_child_end = NULL;
    char msg[S9_MAX], buf[S9_MAX];
    memset(msg, 'p', sizeof msg);
    for (long i = 0; i < S9_WARM + n; i++) {
        uint64_t t0 = now_ns();
        CHECK_PROC(proc_conn_send(s9_parent_end, msg, s9_len));
        ssize_t r = proc_conn_recv(s9_parent_end, buf, sizeof buf, 60000);
        if (r != (ssize_t)s9_len)
            die("proc_conn_recv: %zd (%s)", r, r < 0 ? strerror((int)-r) : "short");
        uint64_t t1 = now_ns();
        if (i >= S9_WARM)
            c->samples[i - S9_WARM] = (double)(t1 - t0);
    }
    proc_conn_close(s9_parent_end);
    s9_parent_end = NULL;
    join_ok(slot);
    close_ok(&slot);
    live_reset();
    return s9_finish(c, n);
}

static double s9_python(void *ctx, long n)
{
    struct s9ctx *c = ctx;
    char buf[128], cmd[16];
    snprintf(cmd, sizeof cmd, "pipe%zu", s9_len);
    python_cmd(buf, sizeof buf, cmd, n);
    double p50, p99;
    if (sscanf(buf, "%lf %lf", &p50, &p99) != 2 || !(p50 > 0) || !(p99 > 0))
        die("python '%s %ld' answered '%s'", cmd, n, buf);
    c->p99[c->n++] = p99;
    return p50;
}

/* One message size: the contenders interleaved in rounds, then the rows. */
static void scenario9_size(size_t len, long trips, int rounds, bool have_py)
{
    s9_len = len;
    progress("scenario 9: pipe round trips, %ld x %zu-byte ping-pong x %d rounds", trips, len,
             rounds);
    struct s9ctx ctx[3];
    struct contender c[] = {
        {"raw", s9_raw, &ctx[0]},
        {"libproc", s9_libproc, &ctx[1]},
        {"python", s9_python, &ctx[2]},
    };
    int n = have_py ? 3 : 2;
    for (int i = 0; i < n; i++) {
        ctx[i].p99 = xcalloc((size_t)rounds, sizeof(double));
        ctx[i].n = 0;
        ctx[i].samples = xcalloc((size_t)trips, sizeof(double));
    }
    double *out = xcalloc(3 * (size_t)rounds, sizeof *out);
    run_rounds(c, n, trips, 0, rounds, out);
    double p50[3], p99[3];
    for (int i = 0; i < n; i++) {
        p50[i] = median(out + (size_t)i * (size_t)rounds, (size_t)rounds) / 1000.0;
        p99[i] = median(ctx[i].p99, (size_t)ctx[i].n) / 1000.0;
    }
    for (int i = 0; i < n; i++)
        add_row(9, "pipe_round_trip", (long)len, "bytes", c[i].name, "p50", "us/rt", p50[i],
                p50[i] / p50[0], rounds);
    for (int i = 0; i < n; i++)
        add_row(9, "pipe_round_trip", (long)len, "bytes", c[i].name, "p99", "us/rt", p99[i],
                p99[i] / p99[0], rounds);
    for (int i = 0; i < n; i++) {
        free(ctx[i].p99);
        free(ctx[i].samples);
    }
    free(out);
    if (have_py)
        add_note("9: python %s, %zu bytes: multiprocessing.Pipe(duplex=True) send_bytes()/"
                 "recv_bytes(), timed inside Python; python / libproc p50 = %.1f.",
                 py_version, len, p50[2] / p50[1]);
}

static void scenario9(void)
{
    long trips = opt.quick ? 200 : 2000;
    int rounds = rounds_or(opt.quick ? 3 : 9);
    bool have_py = python_start();
    for (size_t i = 0; i < sizeof s9_sizes / sizeof s9_sizes[0]; i++)
        scenario9_size(s9_sizes[i], trips, rounds, have_py);
    add_note("9: parent <-> echoing child, %ld timed round trips per round and size; raw = "
             "socketpair(AF_UNIX, SOCK_SEQPACKET) blocking send()/recv() (what proc_pipe uses); "
             "libproc = proc_pipe(duplex) proc_conn_send()/proc_conn_recv(); p50/p99 = median "
             "over the rounds of each round's percentile.",
             trips);
    if (!have_py)
        s789_python_failed("9");
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
    case 7:
        return "7 pool map (running pool)";
    case 8:
        return "8 queue throughput";
    case 9:
        return "9 pipe round trip";
    default:
        return "?";
    }
}

/* The contender that the ratios of scenario s are relative to. */
static const char *baseline_of(int s)
{
    return s == 6 ? "libproc" : s == 7 ? "loop" : "raw";
}

static void print_table(void)
{
    printf("\n%-31s %-13s %-13s %-10s %12s %-9s %s\n", "scenario", "param", "contender", "metric",
           "median", "unit", "ratio");
    int last = 0;
    for (int s = 1; s <= 9; s++) {
        for (size_t i = 0; i < nrows; i++) {
            const struct row *r = &rows[i];
            if (r->scenario != s)
                continue;
            char param[32], ratio[32];
            fmt_param(r, param, sizeof param);
            if (r->ratio == NO_RATIO)
                snprintf(ratio, sizeof ratio, "-");
            else if (strcmp(r->contender, baseline_of(s)) == 0)
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
    for (char s = '1'; s <= '9'; s++) /* notes start with their scenario number */
        for (size_t i = 0; i < nnotes; i++)
            if (notes[i][0] == s)
                printf("  %s\n", notes[i]);
}

__attribute__((format(printf, 4, 5))) static void target_line(const char *what, bool have, bool met,
                                                              const char *fmt, ...)
{
    char detail[160] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    printf("  %-7s %-52s %s\n", !have ? "n/a" : met ? "MET" : "MISSED", what, have ? detail : "");
}

/* A number to show next to the targets, without a pass mark. */
__attribute__((format(printf, 3, 4))) static void report_line(const char *what, bool have,
                                                              const char *fmt, ...)
{
    char detail[160] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    printf("  %-7s %-52s %s\n", !have ? "n/a" : "INFO", what, have ? detail : "");
}

static void print_targets(void)
{
    printf("\ntargets (1-6: issues 4 and 11; 7-9: pool and IPC, issue 11):\n");
    const struct row *r1 = find_row(1, -1, "libproc", "median");
    target_line("1: start+join ratio <= 1.05", r1, r1 && r1->ratio <= 1.05, "%.2f",
                r1 ? r1->ratio : 0);

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
    const struct row *mid = find_row(3, S3_K_MID, "libproc", "per_child");
    target_line("3: mass exit ratio <= 1.05 at k=" S3_K_MID_STR, mid, mid && mid->ratio <= 1.05,
                "%.2f", mid ? mid->ratio : 0);
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

    const struct row *py6 = find_row(6, -1, "python", "median");
    target_line("6: >= 13x faster than Python (start+join)", py6, py6 && py6->ratio >= 13.0,
                "%.1fx", py6 ? py6->ratio : 0);

    const struct row *lib7 = NULL, *py7 = NULL, *speed = NULL, *cpus = NULL, *rawspeed = NULL;
    for (size_t i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        if (r->scenario != 7)
            continue;
        bool tiny = strcmp(r->name, "pool_map") == 0;
        if (tiny && strcmp(r->contender, "libproc") == 0 && strcmp(r->metric, "median") == 0)
            lib7 = r;
        if (tiny && strcmp(r->contender, "python") == 0 && strcmp(r->metric, "median") == 0)
            py7 = r;
        if (!tiny && strcmp(r->contender, "libproc") == 0 && strcmp(r->metric, "speedup") == 0)
            speed = r;
        if (!tiny && strcmp(r->contender, "raw_fork") == 0 && strcmp(r->metric, "speedup") == 0)
            rawspeed = r;
        if (!tiny && strcmp(r->metric, "cpus") == 0)
            cpus = r;
    }
    bool have7 = lib7 && py7;
    target_line("7: pool map >= 50x faster than Python Pool.map", have7,
                have7 && py7->value >= 50.0 * lib7->value, "%.1fx",
                have7 ? py7->value / lib7->value : 0);
    report_line("7: CPU-bound map speed-up, close to the CPUs", speed && cpus && rawspeed,
                "%.2fx on %.0f CPUs (raw fork: %.2fx)", speed ? speed->value : 0,
                cpus ? cpus->value : 0, rawspeed ? rawspeed->value : 0);

    const struct row *q = NULL, *qpy = NULL;
    for (size_t i = 0; i < nrows; i++) {
        if (rows[i].scenario != 8 || strcmp(rows[i].name, "queue_throughput") != 0)
            continue;
        if (strcmp(rows[i].contender, "libproc") == 0)
            q = &rows[i];
        if (strcmp(rows[i].contender, "python") == 0)
            qpy = &rows[i];
    }
    target_line("8: queue >= 0.7x raw pipe throughput", q, q && q->ratio >= 0.7, "%.2fx",
                q ? q->ratio : 0);
    target_line("8: queue >= 20x Python's Queue throughput", q && qpy,
                q && qpy && q->value >= 20.0 * qpy->value, "%.1fx",
                q && qpy ? q->value / qpy->value : 0);
    char pipe8[160] = "";
    size_t off8 = 0;
    for (size_t i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        if (r->scenario != 8 || strcmp(r->name, "queue_pipeline") != 0 ||
            strcmp(r->contender, "libproc") != 0)
            continue;
        int w = snprintf(pipe8 + off8, sizeof pipe8 - off8, "%s%ld:%.2fM(%.2fx)", off8 ? " " : "",
                         r->param, r->value / 1e6, r->ratio);
        if (w > 0 && (size_t)w < sizeof pipe8 - off8)
            off8 += (size_t)w;
    }
    report_line("8: 1->3->1 pipeline rec/s by capacity (x raw)", off8 > 0, "%s", pipe8);

    for (size_t k = 0; k < sizeof s9_sizes / sizeof s9_sizes[0]; k++) {
        long len = (long)s9_sizes[k];
        const struct row *rt = find_row(9, len, "libproc", "p50");
        const struct row *rtpy = find_row(9, len, "python", "p50");
        char what9[80];
        snprintf(what9, sizeof what9, "9: round trip p50 <= 1.00x blocking raw, %ld B", len);
        target_line(what9, rt, rt && rt->ratio <= 1.00, "%.2fx (%.1f us)", rt ? rt->ratio : 0,
                    rt ? rt->value : 0);
        snprintf(what9, sizeof what9, "9: pipe round trip p50, python / libproc, %ld bytes", len);
        report_line(what9, rt && rtpy, "%.1fx", rt && rtpy ? rtpy->value / rt->value : 0);
    }
}

static void write_csv(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die("%s: %s", path, strerror(errno));
    fprintf(f, "scenario,name,param,contender,metric,unit,median,ratio,n\n");
    for (int s = 1; s <= 9; s++) {
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
    fprintf(f, "usage: proc_bench [--quick] [--rounds N] [--csv FILE] [--only LIST]\n"
               "  --quick      tiny sizes, a few seconds (CI smoke run)\n"
               "  --rounds N   rounds per scenario (defaults: 1:31 2:21 3:5 (3 at k=4000) 5:3 6:5\n"
               "               7:11 (CPU-bound part 5) 8:7 9:9; --quick 1:5 2:3 3:3 5:3 6:3 7:3\n"
               "               8:3 9:3); scenario 4 is per sample\n"
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
                if (*s >= '1' && *s <= '9')
                    opt.only |= 1u << (*s - '0');
                else if (*s != ',') {
                    fprintf(stderr, "proc_bench: --only wants scenario numbers 1-9\n");
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
    if (want(7))
        scenario7();
    if (want(8))
        scenario8();
    if (want(9))
        scenario9();
    python_stop(); /* the coprocess of 7-9, if any */
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
