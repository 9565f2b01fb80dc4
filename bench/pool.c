/* SPDX-License-Identifier: MIT */
/*
 * Scenario 7: proc_pool_map on a running pool of one worker per CPU. Tiny
 * tasks (what handing a task over costs) against one process calling the
 * same function and Python's Pool.map, and a CPU-bound map (the speed-up)
 * against the same loop and raw forked children splitting the work.
 */
#include "harness.h"
#include "live.h"
#include "python.h"
#include "scenarios.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* ============================================================ 7: pool map */

/* The timed pool's task_timeout_ms: no task comes near it; what is measured
 * is what watching for it costs. */
#define S7_TASK_TIMEOUT_MS 10000

/* The tiny task: out = in * in + 7 on longs. */
int s7_square(const void *in, void *out)
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

/* Tiny tasks: loop, libproc, (if it runs) Python and (on 2+ CPUs) libproc on bound workers,
 * interleaved. */
static void scenario7_tiny(int cpus, bool have_py)
{
    long items = opt.quick ? 10000 : 100000;
    int rounds = rounds_or(opt.quick ? 3 : 41); /* each map is short and noisy: many cheap rounds */
    progress("scenario 7: pool map of %ld tiny tasks, %d workers, x %d rounds", items, cpus,
             rounds);
    struct s7ctx ctx = {live_pool, xcalloc((size_t)items, sizeof(long)),
                        xcalloc((size_t)items, sizeof(long))};
    for (long i = 0; i < items; i++)
        ctx.in[i] = i;
    struct s7ctx bound = {live_pool_bound, ctx.in, ctx.out};
    struct s7ctx timed = {live_pool_timed, ctx.in, ctx.out};
    struct contender c[5] = {{"loop", s7_loop, &ctx},
                             {"libproc", s7_libproc, &ctx},
                             {"libproc_timeout", s7_libproc, &timed}};
    int n = 3, py = -1, bind = -1;
    if (have_py)
        c[py = n++] = (struct contender){"python", s7_python, &ctx};
    if (bound.pool)
        c[bind = n++] = (struct contender){"libproc_bind", s7_libproc, &bound};
    double med[5];
    double *out = xcalloc(5 * (size_t)rounds, sizeof *out);
    run_rounds(c, n, items, items, rounds, out); /* warm-up: Python creates its Pool there */
    for (int i = 0; i < n; i++) {
        med[i] = median(out + (size_t)i * (size_t)rounds, (size_t)rounds);
        add_row(7, "pool_map", items, "items", c[i].name, "median", "ns/task", med[i],
                med[i] / med[0], rounds);
    }
    add_row(7, "pool_map", items, "items", "libproc", "overhead", "ns/task", med[1] - med[0],
            NO_RATIO, rounds);
    if (py >= 0) {
        char buf[16];
        python_cmd(buf, sizeof buf, "endmap", 0);
        add_row(7, "pool_map", items, "items", "python", "overhead", "ns/task", med[py] - med[0],
                NO_RATIO, rounds);
        add_note("7: python %s: multiprocessing.Pool(%d).map(f, list(range(%ld))) on a running "
                 "pool, timed inside Python; python / libproc = %.1f.",
                 python_version(), cpus, items, med[py] / med[1]);
    } else {
        python_skipped_note("7");
    }
    add_note("7: libproc_timeout: the same map on a pool made with task_timeout_ms = %d (the "
             "waiting thread samples which task each worker runs); libproc_timeout / libproc = "
             "%.3f.",
             S7_TASK_TIMEOUT_MS, med[2] / med[1]);
    if (bind >= 0)
        add_note("7: libproc_bind: the same map on a second pool made with bind_cpus (one worker "
                 "bound per CPU; the default leaves them unbound); libproc / libproc_bind = %.2f.",
                 med[1] / med[bind]);
    add_note("7: pool_map: out = in*in+7 on longs; loop = one process calling the same function "
             "pointer; overhead = contender - loop, per task.");
    free(out);
    free(ctx.in);
    free(ctx.out);
}

/* CPU-bound: loop, libproc and raw_fork, interleaved. */
static void scenario7_cpu(int cpus)
{
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
}

void scenario7(void)
{
    int cpus = proc_cpu_count();
    proc_pool_opts_t po;
    memset(&po, 0, sizeof po);
    po.workers = cpus;
    live_pool_open(&live_pool, &po);
    po.task_timeout_ms = S7_TASK_TIMEOUT_MS;
    live_pool_open(&live_pool_timed, &po);
    po.task_timeout_ms = 0;
    po.bind_cpus = true;
    if (cpus > 1)
        live_pool_open(&live_pool_bound, &po);
    bool have_py = python_start();
    scenario7_tiny(cpus, have_py);
    live_pool_close(&live_pool_bound); /* not during the CPU-bound part */
    live_pool_close(&live_pool_timed);
    scenario7_cpu(cpus);
    CHECK_PROC(proc_pool_close(live_pool));
    CHECK_PROC(proc_pool_join(live_pool, 60000));
    live_pool_close(&live_pool);
    check_interrupted();
}

/* The CPU-bound speed-up next to the CPUs and raw_fork's: no threshold, the machine decides. */
void scenario7_info(void)
{
    const struct row *speed = NULL, *cpus = NULL, *rawspeed = NULL;
    size_t n;
    const struct row *rows = all_rows(&n);
    for (size_t i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        if (r->scenario != 7 || strcmp(r->name, "pool_map_cpu") != 0)
            continue;
        if (strcmp(r->contender, "libproc") == 0 && strcmp(r->metric, "speedup") == 0)
            speed = r;
        if (strcmp(r->contender, "raw_fork") == 0 && strcmp(r->metric, "speedup") == 0)
            rawspeed = r;
        if (strcmp(r->metric, "cpus") == 0)
            cpus = r;
    }
    info_line("7: CPU-bound map speed-up, close to the CPUs", speed && cpus && rawspeed,
              "%.2fx on %.0f CPUs (raw fork: %.2fx)", speed ? speed->value : 0,
              cpus ? cpus->value : 0, rawspeed ? rawspeed->value : 0);
}
