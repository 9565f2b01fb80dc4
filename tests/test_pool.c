/* SPDX-License-Identifier: MIT */
/*
 * Worker pools (<libproc/pool.h>): every row of section 3 of the API
 * contract with real worker processes. Results and misuse, a map of a
 * million items, tasks that segfault, _exit() or are SIGKILLed from outside
 * while the rest of their map succeeds, many threads submitting futures,
 * close/terminate/join, max_tasks_per_child, initializers (also crashing
 * ones) and 1 MiB (and bigger) inputs and outputs. Then the same deaths,
 * terminate, close and queued work while a fast job (a map run by the calling
 * thread on borrowed workers, see src/pool.c) is in flight, and the binding
 * of workers to CPUs. Run again with LIBPROC_POOL_FAST=0 (test_pool_queue),
 * where every job takes the dispatcher's queue and the fast tests skip.
 *
 * Tasks never call cmocka: they report through their outputs, return
 * values, pipes and shared memory, and the parent asserts. A task that must
 * hang blocks in read() on a gate pipe; nothing here waits by the clock, the
 * timeouts only bound hangs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/pool.h>
#include <libproc/proc.h>

#include "testcheck.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define POOL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define POOL_SANITIZED 1
#endif
#endif

#ifdef POOL_SANITIZED
#define FUTURE_THREADS 8
#define FUTURES_PER_THREAD 2500
#define MAX_TASKS_ITEMS 400
#else
#define FUTURE_THREADS 8
#define FUTURES_PER_THREAD 10000
#define MAX_TASKS_ITEMS 1000
#endif

#define BOUND_MS 20000 /* bound on any hang; never reached when things work */
#define MILLION 1000000
#define MIB ((size_t)1 << 20)
#define HUGE_SIZE (17 * MIB) /* past the arena size the pool keeps */
#define UNTOUCHED 0xdeadbeefcafef00dULL

/* ------------------------------------------------------- state seen by tasks
 * Set before proc_pool_new(), so that every worker (a fork) inherits them. */

static int g_report_w = -1; /* tasks write their pid here */
static int g_gate_r = -1;   /* blocking tasks read one byte from here */
static int g_inited;        /* set by the initializer, in the worker */

struct shared {
    _Atomic int inits;
    _Atomic int fast_hits; /* bad tasks whose input was in the pool's fast region */
};
static struct shared *g_shared; /* MAP_SHARED, created before the pool */

static void report_pid(void)
{
    pid_t pid = getpid();
    tu_write_full(g_report_w, &pid, sizeof pid);
}

static void wait_gate(void)
{
    char c;
    ssize_t r;
    do {
        r = read(g_gate_r, &c, 1);
    } while (r < 0 && errno == EINTR);
}

/* A real segmentation fault, without a core dump or a sanitizer's report. */
static void segfault_now(void)
{
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    volatile char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page[0] = 1;
    raise(SIGSEGV); /* not reached */
}

/* Whether p lies in the pool's fast region (a memfd named libproc-pool-fast),
 * i.e. the task runs in a fast job; read from the worker's /proc/self/maps. */
static bool in_fast_region(const void *p)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return false;
    char line[512];
    bool fast = false;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi) {
            fast = strstr(line, "libproc-pool-fast") != NULL;
            break;
        }
    }
    fclose(f);
    return fast;
}

static void note_where(const void *in)
{
    if (in && in_fast_region(in))
        atomic_fetch_add(&g_shared->fast_hits, 1);
}

/* ------------------------------------------------------------------- tasks */

static int task_square(const void *in, void *out)
{
    uint64_t x = *(const uint32_t *)in;
    *(uint64_t *)out = x * x + 7;
    return 0;
}

/* out = 2 * v; returns v (which may be anything, negative too). */
static int task_ret_value(const void *in, void *out)
{
    int v = *(const int *)in;
    *(int *)out = 2 * v;
    return v;
}

static int task_null_args(const void *in, void *out)
{
    return in == NULL && out == NULL ? 0 : 1;
}

enum { BAD_NONE, BAD_SEGV, BAD_EXIT, BAD_KILLED, BAD_EXIT_REPORT, BAD_BLOCK };

struct bad_in {
    uint32_t value;
    uint32_t how;
};

static int task_maybe_bad(const void *in, void *out)
{
    const struct bad_in *b = in;
    if (b->how != BAD_NONE)
        note_where(in);
    switch (b->how) {
    case BAD_SEGV:
        segfault_now();
        break;
    case BAD_EXIT:
        _exit(3);
    case BAD_KILLED:
        report_pid();
        for (;;)
            pause(); /* until the test kills this worker */
    case BAD_EXIT_REPORT: {
        pid_t neg = -getpid(); /* negative: told apart from BAD_BLOCK's */
        tu_write_full(g_report_w, &neg, sizeof neg);
        _exit(3);
    }
    case BAD_BLOCK:
        report_pid();
        wait_gate();
        break;
    default:
        break;
    }
    *(uint64_t *)out = (uint64_t)b->value * 3 + 1;
    return 0;
}

/* A worker is a daemonic child: it cannot have a pool (children) of its own. */
static int task_nested_pool(const void *in, void *out)
{
    (void)in;
    (void)out;
    errno = 0;
    proc_pool_t *pool = proc_pool_new(NULL);
    if (pool) {
        proc_pool_free(pool);
        return -1;
    }
    return errno;
}

static int task_triple(const void *in, void *out)
{
    *(uint64_t *)out = *(const uint64_t *)in * 3 + 1;
    return 0;
}

/* Reports its pid, blocks until the gate gives a byte, returns 5. */
static int task_block(const void *in, void *out)
{
    note_where(in);
    report_pid();
    wait_gate();
    if (out)
        *(int *)out = 55;
    return 5;
}

/* out = 1 when the input lies in the fast region, else 2. */
static int task_where(const void *in, void *out)
{
    *(int *)out = in_fast_region(in) ? 1 : 2;
    return 0;
}

static int task_pid(const void *in, void *out)
{
    (void)in;
    *(pid_t *)out = getpid();
    return g_inited ? 0 : 1;
}

static void init_count(void *arg)
{
    (void)arg;
    g_inited = atomic_fetch_add(&g_shared->inits, 1) + 1; /* this worker's number */
}

/* The worker's number from init_count: unlike its pid, never reused, however
 * fast the machine's other processes make the pid counter wrap. */
static int task_worker_number(const void *in, void *out)
{
    (void)in;
    *(pid_t *)out = (pid_t)g_inited;
    return g_inited ? 0 : 1;
}

static void init_crash(void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_shared->inits, 1);
    segfault_now();
}

static int task_big(const void *in, void *out)
{
    const unsigned char *a = in;
    unsigned char *b = out;
    for (size_t i = 0; i < MIB; i++)
        b[i] = (unsigned char)~a[i];
    return 0;
}

static int task_huge(const void *in, void *out)
{
    const unsigned char *a = in;
    unsigned char *b = out;
    for (size_t i = 0; i < HUGE_SIZE; i++)
        b[i] = (unsigned char)(a[i] + 1);
    return 0;
}

/* ----------------------------------------------------------------- helpers */

struct pipes {
    int report[2];
    int gate[2];
};

static void pipes_open(struct pipes *p)
{
    assert_int_equal(tu_pipe(p->report), 0);
    assert_int_equal(tu_pipe(p->gate), 0);
    g_report_w = p->report[1];
    g_gate_r = p->gate[0];
}

static void pipes_close(struct pipes *p)
{
    for (int i = 0; i < 2; i++) {
        close(p->report[i]);
        close(p->gate[i]);
    }
    g_report_w = g_gate_r = -1;
}

static pid_t read_pid(const struct pipes *p)
{
    pid_t pid = 0;
    assert_int_equal(tu_read_full(p->report[0], &pid, sizeof pid, BOUND_MS), (ssize_t)sizeof pid);
    assert_true(pid > 0);
    return pid;
}

static void open_gate(const struct pipes *p, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(tu_write_full(p->gate[1], "x", 1), 0);
}

static proc_pool_t *new_pool(int workers, int max_tasks, void (*init)(void *))
{
    proc_pool_opts_t o = {
        .workers = workers, .max_tasks_per_child = max_tasks, .initializer = init};
    proc_pool_t *pool = proc_pool_new(&o);
    assert_non_null(pool);
    return pool;
}

static void free_pool(proc_pool_t *pool)
{
    assert_int_equal(proc_pool_free(pool), 0);
    assert_no_children();
}

/* The orderly end: no new work, every queued task done, workers gone. */
static void close_join_free(proc_pool_t *pool)
{
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    free_pool(pool);
}

static int setup_shared(void **state)
{
    (void)state;
    g_shared =
        mmap(NULL, sizeof *g_shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return g_shared == MAP_FAILED ? -1 : 0;
}

/* After a failed test: kill whatever it left running. */
static int kill_leftovers(void **state)
{
    (void)state;
    kill_children_left(BOUND_MS);
    atomic_store(&g_shared->inits, 0);
    return 0;
}

/* ------------------------------------------------------------------- tests */

static void test_misuse(void **state)
{
    (void)state;
    proc_pool_opts_t o = {.workers = -1};
    errno = 0;
    assert_null(proc_pool_new(&o));
    assert_int_equal(errno, EINVAL);
    o = (proc_pool_opts_t){.workers = 1, .max_tasks_per_child = -1};
    errno = 0;
    assert_null(proc_pool_new(&o));
    assert_int_equal(errno, EINVAL);

    int v = 1, r = 0;
    assert_int_equal(proc_pool_apply(NULL, task_ret_value, &v, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(NULL, task_ret_value, &v, sizeof v, &r, sizeof r, 1), -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(NULL, task_ret_value, &v, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_close(NULL), -EINVAL);
    assert_int_equal(proc_pool_terminate(NULL), -EINVAL);
    assert_int_equal(proc_pool_join(NULL, 0), -EINVAL);
    assert_int_equal(proc_pool_free(NULL), 0);
    assert_int_equal(proc_future_wait(NULL, 0), -EINVAL);
    assert_int_equal(proc_future_get(NULL, &r, sizeof r, 0), -EINVAL);
    proc_future_free(NULL);

    proc_pool_t *pool = new_pool(1, 0, NULL);
    assert_int_equal(proc_pool_apply(pool, NULL, &v, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(pool, NULL, &v, sizeof v, &r, sizeof r, 1), -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(pool, NULL, &v, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_apply(pool, task_ret_value, NULL, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, NULL, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(pool, task_ret_value, &v, SIZE_MAX / 2, &r, sizeof r, 4),
                     -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(pool, task_ret_value, NULL, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    /* Python: "Pool is still running" */
    assert_int_equal(proc_pool_join(pool, 0), -EINVAL);
    assert_int_equal(proc_pool_join(pool, -2), -EINVAL);

    proc_future_t *f = proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r);
    assert_non_null(f);
    assert_int_equal(proc_future_wait(f, -2), -EINVAL);
    assert_int_equal(proc_future_get(f, &r, sizeof r, -5), -EINVAL);
    long long too_big = 0;
    assert_int_equal(proc_future_get(f, &too_big, sizeof too_big, BOUND_MS), -EINVAL);
    assert_int_equal(proc_future_get(f, NULL, sizeof r, BOUND_MS), -EINVAL);
    assert_int_equal(proc_future_get(f, &r, sizeof r, BOUND_MS), 1);
    assert_int_equal(r, 2);
    assert_int_equal(proc_future_get(f, NULL, 0, 0), 1); /* again, without the output */
    proc_future_free(f);
    assert_int_equal(proc_pool_map(pool, task_ret_value, NULL, sizeof v, NULL, sizeof r, 0), 0);
    free_pool(pool);
}

static void test_default_workers(void **state)
{
    (void)state;
    proc_pool_t *pool = proc_pool_new(NULL);
    assert_non_null(pool);
    assert_int_equal(proc_active_children(NULL, 0), (size_t)proc_cpu_count());
    int v = 21, r = 0;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 21);
    assert_int_equal(r, 42);
    free_pool(pool);

    proc_pool_opts_t zero = {0};
    pool = proc_pool_new(&zero);
    assert_non_null(pool);
    assert_int_equal(proc_active_children(NULL, 0), (size_t)proc_cpu_count());
    free_pool(pool);
}

static void test_results(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    int v = 7, r = 0;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 7);
    assert_int_equal(r, 14);
    v = 0;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 0);
    assert_int_equal(r, 0);
    v = -42; /* a task's negative value comes back as is */
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), -42);
    assert_int_equal(r, -84);

    enum { N = 100 };
    int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = 0;
    in[60] = 9;
    in[30] = 5;
    in[90] = -3;
    /* the first failing index wins, not the first to fail in time */
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, N), 5);
    for (int i = 0; i < N; i++)
        assert_int_equal(out[i], 2 * in[i]);
    in[30] = 0;
    in[60] = 0;
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, N), -3);
    in[90] = 0;
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, N), 0);

    /* no input, no output: the task gets NULL, NULL */
    assert_int_equal(proc_pool_map(pool, task_null_args, NULL, 0, NULL, 0, 1000), 0);
    assert_int_equal(proc_pool_apply(pool, task_null_args, NULL, 0, NULL, 0), 0);

    assert_int_equal(proc_pool_apply(pool, task_nested_pool, NULL, 0, NULL, 0), EPERM);

    proc_future_t *f = proc_pool_submit(pool, task_ret_value, &(int){11}, sizeof(int), sizeof r);
    assert_non_null(f);
    assert_int_equal(proc_future_wait(f, BOUND_MS), 0);
    assert_int_equal(proc_future_get(f, &r, sizeof r, 0), 11);
    assert_int_equal(r, 22);
    proc_future_free(f);
    free_pool(pool);
}

static void test_map_million(void **state)
{
    (void)state;
    uint32_t *in = malloc(MILLION * sizeof *in);
    uint64_t *out = malloc(MILLION * sizeof *out);
    assert_non_null(in);
    assert_non_null(out);
    uint64_t want = 0;
    for (uint32_t i = 0; i < MILLION; i++) {
        in[i] = i * 2654435761u;
        want += (uint64_t)in[i] * in[i] + 7;
    }
    memset(out, 0, MILLION * sizeof *out);
    proc_pool_t *pool = new_pool(2, 0, NULL);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_pool_map(pool, task_square, in, sizeof *in, out, sizeof *out, MILLION),
                     0);
    int64_t t1 = tu_now_ms();
    uint64_t sum = 0;
    for (uint32_t i = 0; i < MILLION; i++)
        sum += out[i];
    assert_true(sum == want);
    assert_true(out[MILLION - 1] == (uint64_t)in[MILLION - 1] * in[MILLION - 1] + 7);
    print_message("map of 1,000,000 items: %lld ms\n", (long long)(t1 - t0));
    free_pool(pool);
    free(in);
    free(out);
}

/* Kills, from outside, the worker that reports its pid. */
static void *killer(void *arg)
{
    const struct pipes *p = arg;
    pid_t pid = 0;
    if (tu_read_full(p->report[0], &pid, sizeof pid, BOUND_MS) == (ssize_t)sizeof pid && pid > 0)
        kill(pid, SIGKILL);
    return NULL;
}

/* A map with bad items at the given indexes (-1: none): each bad one fails
 * alone with -ECHILD, every other item succeeds. */
static void map_with_bad(proc_pool_t *pool, struct pipes *p, const int *bad_idx, const int *bad_how,
                         int nbad)
{
    enum { N = 300 };
    struct bad_in in[N];
    uint64_t out[N];
    bool killed = false;
    for (int i = 0; i < N; i++) {
        in[i] = (struct bad_in){.value = (uint32_t)i, .how = BAD_NONE};
        out[i] = UNTOUCHED;
    }
    for (int k = 0; k < nbad; k++) {
        in[bad_idx[k]].how = (uint32_t)bad_how[k];
        killed |= bad_how[k] == BAD_KILLED;
    }
    pthread_t t;
    if (killed)
        assert_int_equal(pthread_create(&t, NULL, killer, p), 0);
    assert_int_equal(proc_pool_map(pool, task_maybe_bad, in, sizeof *in, out, sizeof *out, N),
                     -ECHILD);
    if (killed)
        assert_int_equal(pthread_join(t, NULL), 0);
    for (int i = 0; i < N; i++) {
        if (in[i].how != BAD_NONE)
            assert_true(out[i] == UNTOUCHED);
        else
            assert_true(out[i] == (uint64_t)i * 3 + 1);
    }
}

static bool fast_enabled(void)
{
    const char *e = getenv("LIBPROC_POOL_FAST");
    return !e || strcmp(e, "0") != 0;
}

/* Until an apply runs in a fast job: the dispatcher offers its idle workers
 * to callers when it has nothing queued (bounded, never by the clock). */
static void fast_warm(proc_pool_t *pool)
{
    char in = 0;
    for (int i = 0; i < 10000; i++) {
        int where = 0;
        assert_int_equal(proc_pool_apply(pool, task_where, &in, 1, &where, sizeof where), 0);
        if (where == 1)
            return;
    }
    fail_msg("no apply ran in a fast job");
}

/* map_with_bad() until the first death happens in a fast job (the deaths
 * after it in a one-worker pool take the queue: its chunks are requeued). */
static void map_with_bad_fast(proc_pool_t *pool, struct pipes *p, const int *bad_idx,
                              const int *bad_how, int nbad)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        fast_warm(pool);
        atomic_store(&g_shared->fast_hits, 0);
        map_with_bad(pool, p, bad_idx, bad_how, nbad);
        if (atomic_load(&g_shared->fast_hits) > 0)
            return;
    }
    fail_msg("no death happened in a fast job");
}

static void test_worker_dies_mid_task(void **state)
{
    (void)state;
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(2, 0, NULL);

    map_with_bad(pool, &p, (int[]){17}, (int[]){BAD_SEGV}, 1);
    map_with_bad(pool, &p, (int[]){150}, (int[]){BAD_EXIT}, 1);
    map_with_bad(pool, &p, (int[]){299}, (int[]){BAD_KILLED}, 1);
    map_with_bad(pool, &p, (int[]){0, 1, 40, 41, 200},
                 (int[]){BAD_EXIT, BAD_SEGV, BAD_KILLED, BAD_SEGV, BAD_EXIT}, 5);

    /* apply and futures alike */
    struct bad_in b = {.value = 1, .how = BAD_SEGV};
    uint64_t r = UNTOUCHED;
    assert_int_equal(proc_pool_apply(pool, task_maybe_bad, &b, sizeof b, &r, sizeof r), -ECHILD);
    assert_true(r == UNTOUCHED);
    b.how = BAD_EXIT;
    proc_future_t *f = proc_pool_submit(pool, task_maybe_bad, &b, sizeof b, sizeof r);
    b.how = BAD_NONE;
    proc_future_t *g = proc_pool_submit(pool, task_maybe_bad, &b, sizeof b, sizeof r);
    assert_non_null(f);
    assert_non_null(g);
    assert_int_equal(proc_future_get(f, &r, sizeof r, BOUND_MS), -ECHILD);
    assert_true(r == UNTOUCHED);
    assert_int_equal(proc_future_get(g, &r, sizeof r, BOUND_MS), 0);
    assert_true(r == 4);
    proc_future_free(f);
    proc_future_free(g);

    /* An idle worker killed from outside fails nothing; the pool goes on. */
    pid_t idle = 0;
    proc_pool_apply(pool, task_pid, NULL, 0, &idle, sizeof idle);
    assert_true(idle > 0);
    assert_int_equal(kill(idle, SIGKILL), 0);
    map_with_bad(pool, &p, (int[]){5}, (int[]){BAD_EXIT}, 1);

    close_join_free(pool);

    /*
     * One worker, so each replacement must go on exactly where the dead one
     * stopped: a death fails only the item it ran, the rest of its chunk
     * goes back to the queue. Deaths at the first and last items of the map,
     * on both sides of a chunk boundary (chunks of 75 here), and several in
     * one map.
     */
    proc_pool_t *one = new_pool(1, 0, NULL);
    map_with_bad(one, &p, (int[]){10}, (int[]){BAD_KILLED}, 1);
    map_with_bad(one, &p, (int[]){74, 75}, (int[]){BAD_SEGV, BAD_EXIT}, 2);
    map_with_bad(one, &p, (int[]){0, 80, 160, 299},
                 (int[]){BAD_EXIT, BAD_KILLED, BAD_SEGV, BAD_EXIT}, 4);
    close_join_free(one);
    pipes_close(&p);
}

struct submitter {
    proc_pool_t *pool;
    uint64_t base;
    int failures;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;
    proc_future_t **f = calloc(FUTURES_PER_THREAD, sizeof *f);
    if (!f) {
        s->failures++;
        return NULL;
    }
    for (int i = 0; i < FUTURES_PER_THREAD; i++) {
        uint64_t v = s->base + (uint64_t)i;
        f[i] = proc_pool_submit(s->pool, task_triple, &v, sizeof v, sizeof(uint64_t));
        if (!f[i])
            s->failures++;
    }
    for (int i = 0; i < FUTURES_PER_THREAD; i++) {
        uint64_t r = 0;
        if (!f[i])
            continue;
        if (proc_future_get(f[i], &r, sizeof r, BOUND_MS) != 0 ||
            r != (s->base + (uint64_t)i) * 3 + 1)
            s->failures++;
        proc_future_free(f[i]);
    }
    free(f);
    return NULL;
}

static void test_futures_many_threads(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    pthread_t t[FUTURE_THREADS];
    struct submitter s[FUTURE_THREADS];
    int64_t t0 = tu_now_ms();
    for (int i = 0; i < FUTURE_THREADS; i++) {
        s[i] = (struct submitter){.pool = pool, .base = (uint64_t)i * 1000000};
        assert_int_equal(pthread_create(&t[i], NULL, submit_many, &s[i]), 0);
    }
    for (int i = 0; i < FUTURE_THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(s[i].failures, 0);
    }
    print_message("%d threads x %d futures: %lld ms\n", FUTURE_THREADS, FUTURES_PER_THREAD,
                  (long long)(tu_now_ms() - t0));
    free_pool(pool);
}

struct map_thread {
    proc_pool_t *pool;
    uint32_t base;
    int failures;
};

static void *maps_in_thread(void *arg)
{
    struct map_thread *m = arg;
    enum { N = 5000 };
    uint32_t *in = malloc(N * sizeof *in);
    uint64_t *out = malloc(N * sizeof *out);
    if (!in || !out) {
        m->failures++;
    } else {
        for (int round = 0; round < 20; round++) {
            for (uint32_t i = 0; i < N; i++)
                in[i] = m->base + (uint32_t)round * N + i;
            if (proc_pool_map(m->pool, task_square, in, sizeof *in, out, sizeof *out, N) != 0)
                m->failures++;
            for (uint32_t i = 0; i < N; i++)
                if (out[i] != (uint64_t)in[i] * in[i] + 7)
                    m->failures++;
        }
    }
    free(in);
    free(out);
    return NULL;
}

/* Maps from several threads at once share the workers. */
static void test_concurrent_maps(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    enum { T = 4 };
    pthread_t t[T];
    struct map_thread m[T];
    for (int i = 0; i < T; i++) {
        m[i] = (struct map_thread){.pool = pool, .base = (uint32_t)i * 1000000u};
        assert_int_equal(pthread_create(&t[i], NULL, maps_in_thread, &m[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(m[i].failures, 0);
    }
    free_pool(pool);
}

struct getter {
    proc_future_t *f;
    int rc, out;
};

static void *get_one(void *arg)
{
    struct getter *g = arg;
    g->rc = proc_future_get(g->f, &g->out, sizeof g->out, BOUND_MS);
    return NULL;
}

/* Several threads wait for one future; a wait with a timeout times out. */
static void test_future_waiters(void **state)
{
    (void)state;
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(1, 0, NULL);
    proc_future_t *f = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
    assert_non_null(f);
    read_pid(&p); /* it runs */
    assert_int_equal(proc_future_wait(f, 0), -ETIMEDOUT);
    assert_int_equal(proc_future_wait(f, 20), -ETIMEDOUT);
    int r = -1;
    assert_int_equal(proc_future_get(f, &r, sizeof r, 0), -ETIMEDOUT);
    assert_int_equal(r, -1);
    enum { W = 4 };
    pthread_t t[W];
    struct getter g[W];
    for (int i = 0; i < W; i++) {
        g[i] = (struct getter){.f = f, .rc = -1};
        assert_int_equal(pthread_create(&t[i], NULL, get_one, &g[i]), 0);
    }
    open_gate(&p, 1);
    for (int i = 0; i < W; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(g[i].rc, 5);
        assert_int_equal(g[i].out, 55);
    }
    assert_int_equal(proc_future_wait(f, 0), 0);
    proc_future_free(f);
    free_pool(pool);
    pipes_close(&p);
}

static void warm_up(void)
{
    /* libproc's process-wide fds (reaper) exist after the first start */
    proc_pool_t *pool = new_pool(1, 0, NULL);
    free_pool(pool);
}

struct mapper {
    proc_pool_t *pool;
    int rc;
    int out[64];
};

static void *map_blocking(void *arg)
{
    struct mapper *m = arg;
    for (int i = 0; i < 64; i++)
        m->out[i] = -1;
    m->rc = proc_pool_map(m->pool, task_block, NULL, 0, m->out, sizeof(int), 64);
    return NULL;
}

static void test_terminate_running(void **state)
{
    (void)state;
    warm_up();
    struct pipes p;
    pipes_open(&p);
    int fds = tu_count_fds();
    proc_pool_t *pool = new_pool(2, 0, NULL);

    enum { Q = 20 };
    proc_future_t *blocked[2], *queued[Q];
    for (int i = 0; i < 2; i++) {
        blocked[i] = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
        assert_non_null(blocked[i]);
    }
    for (int i = 0; i < Q; i++) {
        uint64_t v = (uint64_t)i;
        queued[i] = proc_pool_submit(pool, task_triple, &v, sizeof v, sizeof v);
        assert_non_null(queued[i]);
    }
    pid_t pids[2] = {read_pid(&p), read_pid(&p)}; /* both workers are stuck */
    assert_int_not_equal(pids[0], pids[1]);
    assert_int_equal(proc_pool_terminate(pool), 0);

    /* the workers are gone and reaped */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kill(pids[i], 0), -1);
        assert_int_equal(errno, ESRCH);
    }
    assert_no_children();
    for (int i = 0; i < 2; i++) {
        int r = -1;
        assert_int_equal(proc_future_get(blocked[i], &r, sizeof r, 0), -ECANCELED);
        assert_int_equal(r, -1);
        proc_future_free(blocked[i]);
    }
    for (int i = 0; i < Q; i++) {
        assert_int_equal(proc_future_get(queued[i], NULL, 0, 0), -ECANCELED);
        proc_future_free(queued[i]);
    }

    /* no new work; join, close and terminate are fine */
    int v = 1, r;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(pool, task_ret_value, &v, sizeof v, &r, sizeof r, 1), -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_join(pool, 0), 0);
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_terminate(pool), 0);
    free_pool(pool);
    assert_int_equal(tu_count_fds(), fds);

    /* terminate while a map runs in another thread: the map fails with
     * -ECANCELED, the outputs of items that never finished are untouched */
    pool = new_pool(2, 0, NULL);
    struct mapper m = {.pool = pool};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, map_blocking, &m), 0);
    read_pid(&p);
    read_pid(&p);
    assert_int_equal(proc_pool_terminate(pool), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(m.rc, -ECANCELED);
    for (int i = 0; i < 64; i++)
        assert_int_equal(m.out[i], -1);
    free_pool(pool);
    assert_int_equal(tu_count_fds(), fds);
    pipes_close(&p);
}

/* ------------------------------------------------------------- fast jobs */

/*
 * test_worker_dies_mid_task's deaths inside fast jobs. A fast job's chunks
 * are n / (16 * workers) items: 10 of these 300 on two workers, 19 on one.
 * After a death the dead worker's unfinished items and (with one worker)
 * every chunk nobody claimed take the queue, to a replacement worker.
 */
static void test_fast_deaths(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip();
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(2, 0, NULL);
    map_with_bad_fast(pool, &p, (int[]){0}, (int[]){BAD_SEGV}, 1);
    map_with_bad_fast(pool, &p, (int[]){9}, (int[]){BAD_EXIT}, 1);
    map_with_bad_fast(pool, &p, (int[]){10}, (int[]){BAD_KILLED}, 1);
    map_with_bad_fast(pool, &p, (int[]){299}, (int[]){BAD_SEGV}, 1);
    map_with_bad_fast(pool, &p, (int[]){9, 10, 150, 299},
                      (int[]){BAD_SEGV, BAD_EXIT, BAD_KILLED, BAD_EXIT}, 4);

    /* an apply is a fast job of one item */
    int hits = 0;
    for (int attempt = 0; attempt < 20 && hits == 0; attempt++) {
        fast_warm(pool);
        atomic_store(&g_shared->fast_hits, 0);
        struct bad_in b = {.value = 1, .how = BAD_SEGV};
        uint64_t r = UNTOUCHED;
        assert_int_equal(proc_pool_apply(pool, task_maybe_bad, &b, sizeof b, &r, sizeof r),
                         -ECHILD);
        assert_true(r == UNTOUCHED);
        hits = atomic_load(&g_shared->fast_hits);
    }
    assert_int_equal(hits, 1);
    close_join_free(pool);

    proc_pool_t *one = new_pool(1, 0, NULL);
    map_with_bad_fast(one, &p, (int[]){0}, (int[]){BAD_EXIT}, 1);
    map_with_bad_fast(one, &p, (int[]){18}, (int[]){BAD_KILLED}, 1);
    map_with_bad_fast(one, &p, (int[]){19}, (int[]){BAD_SEGV}, 1);
    map_with_bad_fast(one, &p, (int[]){299}, (int[]){BAD_EXIT}, 1);
    map_with_bad_fast(one, &p, (int[]){18, 19, 160, 299},
                      (int[]){BAD_SEGV, BAD_EXIT, BAD_KILLED, BAD_SEGV}, 4);
    close_join_free(one);
    pipes_close(&p);
}

struct fast_mapper {
    proc_pool_t *pool;
    int n, rc;
    char in[64];
    int out[64];
};

static void *map_blocking_fast(void *arg)
{
    struct fast_mapper *m = arg;
    for (int i = 0; i < 64; i++)
        m->out[i] = -1;
    m->rc = proc_pool_map(m->pool, task_block, m->in, 1, m->out, sizeof(int), (size_t)m->n);
    return NULL;
}

/*
 * A fast job that blocks in its workers: terminate fails it with -ECANCELED
 * (outputs of unfinished items untouched, no zombie, no fd left); close
 * lets it finish, and a future submitted meanwhile waits for the borrowed
 * workers and then runs.
 */
static void test_fast_terminate_close(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip();
    warm_up();
    struct pipes p;
    pipes_open(&p);
    int fds = tu_count_fds();

    int hits = 0;
    for (int attempt = 0; attempt < 20 && hits == 0; attempt++) {
        proc_pool_t *pool = new_pool(2, 0, NULL);
        fast_warm(pool);
        atomic_store(&g_shared->fast_hits, 0);
        struct fast_mapper m = {.pool = pool, .n = 64};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, map_blocking_fast, &m), 0);
        read_pid(&p); /* a worker blocks in the map; the other may too */
        hits = atomic_load(&g_shared->fast_hits);
        assert_int_equal(proc_pool_terminate(pool), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(m.rc, -ECANCELED);
        for (int i = 0; i < 64; i++)
            assert_int_equal(m.out[i], -1);
        free_pool(pool);
        while (tu_read_full(p.report[0], &(pid_t){0}, sizeof(pid_t), 0) > 0) {
            /* the other worker's pid, if it blocked too */
        }
    }
    assert_true(hits > 0);
    assert_int_equal(tu_count_fds(), fds);

    hits = 0;
    for (int attempt = 0; attempt < 20 && hits == 0; attempt++) {
        proc_pool_t *pool = new_pool(2, 0, NULL);
        fast_warm(pool);
        atomic_store(&g_shared->fast_hits, 0);
        struct fast_mapper m = {.pool = pool, .n = 8};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, map_blocking_fast, &m), 0);
        read_pid(&p);
        hits = atomic_load(&g_shared->fast_hits);
        uint64_t v = 5, r = 0;
        proc_future_t *f = proc_pool_submit(pool, task_triple, &v, sizeof v, sizeof r);
        assert_non_null(f);
        assert_int_equal(proc_pool_close(pool), 0);
        assert_int_equal(proc_pool_join(pool, 0), -ETIMEDOUT);
        open_gate(&p, 8); /* one byte per item */
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(m.rc, 5); /* task_block returns 5 */
        for (int i = 0; i < 8; i++)
            assert_int_equal(m.out[i], 55);
        assert_int_equal(proc_future_get(f, &r, sizeof r, BOUND_MS), 0);
        assert_true(r == 16);
        proc_future_free(f);
        assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
        free_pool(pool);
        while (tu_read_full(p.report[0], &(pid_t){0}, sizeof(pid_t), 0) > 0) {
            /* pids of the other items */
        }
    }
    assert_true(hits > 0);
    assert_int_equal(tu_count_fds(), fds);
    pipes_close(&p);
}

struct bad_mapper {
    proc_pool_t *pool;
    int rc;
    struct bad_in in[64];
    uint64_t out[64];
};

static void *map_bad(void *arg)
{
    struct bad_mapper *m = arg;
    m->rc =
        proc_pool_map(m->pool, task_maybe_bad, m->in, sizeof *m->in, m->out, sizeof *m->out, 64);
    return NULL;
}

/*
 * A worker of a fast job crashes while another blocks, then the pool is
 * terminated: the crashed item stays -ECHILD (the map's value: it is the
 * first failing index), the blocked one is cancelled. Whether the
 * dispatcher saw the crash before terminate or terminate's kill finds the
 * worker already dead, a crash is not turned into a cancellation.
 */
static void test_fast_crash_then_terminate(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip();
    struct pipes p;
    pipes_open(&p);
    int hits = 0;
    for (int attempt = 0; attempt < 20 && hits < 2; attempt++) {
        proc_pool_t *pool = new_pool(2, 0, NULL);
        fast_warm(pool);
        atomic_store(&g_shared->fast_hits, 0);
        struct bad_mapper m = {.pool = pool};
        for (int i = 0; i < 64; i++) {
            m.in[i] = (struct bad_in){.value = (uint32_t)i, .how = BAD_NONE};
            m.out[i] = UNTOUCHED;
        }
        m.in[0].how = BAD_EXIT_REPORT; /* chunks are 2 items: 0 and 2 go to both workers */
        m.in[2].how = BAD_BLOCK;
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, map_bad, &m), 0);
        pid_t dead = 0;
        for (int k = 0; k < 2; k++) {
            pid_t pid = 0;
            assert_int_equal(tu_read_full(p.report[0], &pid, sizeof pid, BOUND_MS),
                             (ssize_t)sizeof pid);
            if (pid < 0)
                dead = -pid;
        }
        assert_true(dead > 0);
        /* until the crashed worker is a zombie or reaped (bounded) */
        int64_t end = tu_now_ms() + BOUND_MS;
        char st = 0;
        pid_t pp;
        while (tu_proc_state(dead, &st, &pp) == 0 && st != 'Z' && tu_now_ms() < end)
            sched_yield();
        hits = atomic_load(&g_shared->fast_hits);
        assert_int_equal(proc_pool_terminate(pool), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(m.rc, -ECHILD);
        assert_true(m.out[0] == UNTOUCHED);
        assert_true(m.out[2] == UNTOUCHED);
        for (int i = 1; i < 64; i++)
            assert_true(m.out[i] == UNTOUCHED || (i != 2 && m.out[i] == (uint64_t)i * 3 + 1));
        free_pool(pool);
    }
    assert_int_equal(hits, 2); /* both items ran in one fast job */
    pipes_close(&p);
}

/* Fast jobs of every size, with and without inputs or outputs. (Several
 * threads at once, one fast and the others queued: test_concurrent_maps.) */
static void test_fast_results(void **state)
{
    (void)state;
    if (!fast_enabled())
        skip();
    proc_pool_t *pool = new_pool(2, 0, NULL);
    static const size_t sizes[] = {1, 2, 31, 32, 33, 1000, 100000, 400000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        uint32_t *in = malloc(n * sizeof *in);
        uint64_t *out = malloc(n * sizeof *out);
        assert_non_null(in);
        assert_non_null(out);
        for (size_t i = 0; i < n; i++) {
            in[i] = (uint32_t)(i * 2654435761u);
            out[i] = UNTOUCHED;
        }
        fast_warm(pool);
        assert_int_equal(proc_pool_map(pool, task_square, in, sizeof *in, out, sizeof *out, n), 0);
        for (size_t i = 0; i < n; i++)
            assert_true(out[i] == (uint64_t)in[i] * in[i] + 7);
        free(in);
        free(out);
    }
    /* a task's return value: the first failing index's, in index order */
    int in[100], out[100];
    for (int i = 0; i < 100; i++)
        in[i] = i == 37 ? -4 : i == 90 ? 9 : 0;
    fast_warm(pool);
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, 100),
                     -4);
    for (int i = 0; i < 100; i++)
        assert_int_equal(out[i], 2 * in[i]);
    fast_warm(pool);
    assert_int_equal(proc_pool_map(pool, task_null_args, NULL, 0, NULL, 0, 1000), 0);
    free_pool(pool);
}

/* Workers are bound one per CPU the creating thread may use; with
 * LIBPROC_POOL_BIND=0 they keep its whole set. */
static void test_workers_bound(void **state)
{
    (void)state;
    cpu_set_t mine;
    assert_int_equal(sched_getaffinity(0, sizeof mine, &mine), 0);
    int ncpu = CPU_COUNT(&mine);
    if (ncpu < 2)
        skip(); /* one CPU: nothing to spread over */
    int nw = ncpu < 8 ? ncpu : 8;
    struct pipes p;
    pipes_open(&p);
    for (int bind = 1; bind >= 0; bind--) {
        if (!bind)
            assert_int_equal(setenv("LIBPROC_POOL_BIND", "0", 1), 0);
        proc_pool_t *pool = new_pool(nw, 0, NULL);
        if (!bind)
            unsetenv("LIBPROC_POOL_BIND");
        proc_future_t *f[8];
        for (int i = 0; i < nw; i++)
            assert_non_null(f[i] = proc_pool_submit(pool, task_block, NULL, 0, 0));
        cpu_set_t used;
        CPU_ZERO(&used);
        for (int i = 0; i < nw; i++) {
            pid_t pid = read_pid(&p); /* one per worker: each blocks in its task */
            cpu_set_t set;
            assert_int_equal(sched_getaffinity(pid, sizeof set, &set), 0);
            if (bind) {
                assert_int_equal(CPU_COUNT(&set), 1);
                cpu_set_t both;
                CPU_AND(&both, &set, &mine);
                assert_int_equal(CPU_COUNT(&both), 1);
                CPU_AND(&both, &set, &used);
                assert_int_equal(CPU_COUNT(&both), 0); /* a CPU of its own */
                CPU_OR(&used, &used, &set);
            } else {
                assert_true(CPU_EQUAL(&set, &mine));
            }
        }
        open_gate(&p, nw);
        for (int i = 0; i < nw; i++) {
            assert_int_equal(proc_future_get(f[i], NULL, 0, BOUND_MS), 5);
            proc_future_free(f[i]);
        }
        free_pool(pool);
    }
    pipes_close(&p);
}

/* proc_pool_free on a running pool terminates it; futures outlive it. */
static void test_free_running(void **state)
{
    (void)state;
    warm_up();
    struct pipes p;
    pipes_open(&p);
    int fds = tu_count_fds();
    proc_pool_t *pool = new_pool(1, 0, NULL);
    proc_future_t *f = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
    proc_future_t *g = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
    assert_non_null(f);
    assert_non_null(g);
    read_pid(&p);
    free_pool(pool);
    assert_int_equal(proc_future_get(f, NULL, 0, 0), -ECANCELED);
    assert_int_equal(proc_future_get(g, NULL, 0, 0), -ECANCELED);
    proc_future_free(f);
    proc_future_free(g);

    /* a closed pool with queued work is terminated too; an idle one quietly */
    pool = new_pool(1, 0, NULL);
    f = proc_pool_submit(pool, task_block, NULL, 0, 0);
    assert_non_null(f);
    read_pid(&p);
    assert_int_equal(proc_pool_close(pool), 0);
    free_pool(pool);
    assert_int_equal(proc_future_get(f, NULL, 0, 0), -ECANCELED);
    proc_future_free(f);
    free_pool(new_pool(3, 0, NULL));
    assert_int_equal(tu_count_fds(), fds);
    pipes_close(&p);
}

static void test_close_join(void **state)
{
    (void)state;
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(2, 0, NULL);

    /* queued tasks still run after close */
    enum { N = 50 };
    proc_future_t *f[N];
    for (int i = 0; i < N; i++) {
        uint64_t v = (uint64_t)i;
        f[i] = proc_pool_submit(pool, task_triple, &v, sizeof v, sizeof v);
        assert_non_null(f[i]);
    }
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_close(pool), 0);
    int v = 1, r;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), -EINVAL);
    assert_int_equal(proc_pool_map(pool, task_ret_value, &v, sizeof v, &r, sizeof r, 1), -EINVAL);
    assert_int_equal(proc_pool_map(pool, task_ret_value, &v, sizeof v, &r, sizeof r, 0), -EINVAL);
    errno = 0;
    assert_null(proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_no_children();
    for (int i = 0; i < N; i++) {
        uint64_t out = 0;
        assert_int_equal(proc_future_get(f[i], &out, sizeof out, 0), 0);
        assert_true(out == (uint64_t)i * 3 + 1);
        proc_future_free(f[i]);
    }
    assert_int_equal(proc_pool_join(pool, 0), 0);
    free_pool(pool);

    /* join waits for a task that still runs, with a timeout */
    pool = new_pool(1, 0, NULL);
    proc_future_t *b = proc_pool_submit(pool, task_block, NULL, 0, sizeof(int));
    assert_non_null(b);
    read_pid(&p);
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, 0), -ETIMEDOUT);
    assert_int_equal(proc_pool_join(pool, 30), -ETIMEDOUT);
    open_gate(&p, 1);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_int_equal(proc_future_get(b, &r, sizeof r, 0), 5);
    assert_int_equal(r, 55);
    proc_future_free(b);
    assert_no_children();
    free_pool(pool);
    pipes_close(&p);
}

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static size_t distinct_pids(pid_t *pids, size_t n)
{
    qsort(pids, n, sizeof *pids, cmp_pid);
    size_t d = n ? 1 : 0;
    for (size_t i = 1; i < n; i++)
        d += pids[i] != pids[i - 1];
    return d;
}

static void test_max_tasks_per_child(void **state)
{
    (void)state;
    atomic_store(&g_shared->inits, 0);
    proc_pool_t *pool = new_pool(2, 1, init_count);
    pid_t *pids = calloc(MAX_TASKS_ITEMS, sizeof *pids);
    assert_non_null(pids);
    int64_t t0 = tu_now_ms();
    assert_int_equal(
        proc_pool_map(pool, task_worker_number, NULL, 0, pids, sizeof *pids, MAX_TASKS_ITEMS), 0);
    print_message("max_tasks_per_child = 1, %d tasks: %lld ms\n", MAX_TASKS_ITEMS,
                  (long long)(tu_now_ms() - t0));
    assert_int_equal(distinct_pids(pids, MAX_TASKS_ITEMS), MAX_TASKS_ITEMS);
    assert_true(atomic_load(&g_shared->inits) >= MAX_TASKS_ITEMS);

    /* futures and apply too: every task in a fresh process */
    pid_t a = 0, b = 0;
    assert_int_equal(proc_pool_apply(pool, task_worker_number, NULL, 0, &a, sizeof a), 0);
    assert_int_equal(proc_pool_apply(pool, task_worker_number, NULL, 0, &b, sizeof b), 0);
    assert_int_not_equal(a, b);
    close_join_free(pool);
    free(pids);

    /* max 3: a map of 30 items uses at least 10 workers */
    pool = new_pool(2, 3, init_count);
    pid_t p30[30];
    assert_int_equal(proc_pool_map(pool, task_worker_number, NULL, 0, p30, sizeof *p30, 30), 0);
    size_t d = distinct_pids(p30, 30);
    assert_true(d >= 10);
    for (int i = 0; i < 30; i++) { /* no worker ran more than 3 */
        int same = 0;
        for (int k = 0; k < 30; k++)
            same += p30[k] == p30[i];
        assert_true(same <= 3);
    }
    free_pool(pool);
}

static void test_initializer(void **state)
{
    (void)state;
    atomic_store(&g_shared->inits, 0);
    proc_pool_t *pool = new_pool(2, 0, init_count);
    enum { N = 1000 };
    pid_t pids[N];
    assert_int_equal(proc_pool_map(pool, task_pid, NULL, 0, pids, sizeof *pids, N), 0);
    assert_true(distinct_pids(pids, N) <= 2);
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_int_equal(atomic_load(&g_shared->inits), 2); /* once per worker */
    free_pool(pool);
    assert_int_equal(g_inited, 0); /* it ran in the workers, not here */
}

/* An initializer that crashes: the pool gives up instead of respawning
 * forever, and every task fails with -ECHILD. */
static void test_initializer_crashes(void **state)
{
    (void)state;
    atomic_store(&g_shared->inits, 0);
    proc_pool_t *pool = new_pool(2, 0, init_crash);
    int v = 1, r = -1;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), -ECHILD);
    assert_int_equal(r, -1);
    int in[10] = {0}, out[10];
    assert_int_equal(proc_pool_map(pool, task_ret_value, in, sizeof *in, out, sizeof *out, 10),
                     -ECHILD);
    proc_future_t *f = proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r);
    assert_non_null(f);
    assert_int_equal(proc_future_get(f, &r, sizeof r, BOUND_MS), -ECHILD);
    proc_future_free(f);
    int inits = atomic_load(&g_shared->inits);
    assert_true(inits >= 2 && inits <= 8); /* workers + 2 deaths in a row, then no more */
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    assert_no_children();
    free_pool(pool);
}

static void test_big_io(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    enum { K = 3 };
    unsigned char *in = malloc(K * MIB), *out = malloc(K * MIB);
    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i < K * MIB; i++)
        in[i] = (unsigned char)(i * 7 + i / 4096);

    assert_int_equal(proc_pool_apply(pool, task_big, in, MIB, out, MIB), 0);
    for (size_t i = 0; i < MIB; i++)
        assert_true(out[i] == (unsigned char)~in[i]);

    memset(out, 0, K * MIB);
    assert_int_equal(proc_pool_map(pool, task_big, in, MIB, out, MIB, K), 0);
    for (size_t i = 0; i < K * MIB; i++)
        assert_true(out[i] == (unsigned char)~in[i]);

    proc_future_t *f = proc_pool_submit(pool, task_big, in + MIB, MIB, MIB);
    assert_non_null(f);
    memset(out, 0, MIB);
    assert_int_equal(proc_future_get(f, out, MIB, BOUND_MS), 0);
    for (size_t i = 0; i < MIB; i++)
        assert_true(out[i] == (unsigned char)~in[MIB + i]);
    proc_future_free(f);
    free(in);
    free(out);

    /* bigger than the arena a worker keeps: it grows, then shrinks again */
    in = malloc(HUGE_SIZE);
    out = malloc(HUGE_SIZE);
    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i < HUGE_SIZE; i++)
        in[i] = (unsigned char)(i ^ (i >> 13));
    for (int round = 0; round < 2; round++) {
        assert_int_equal(proc_pool_apply(pool, task_huge, in, HUGE_SIZE, out, HUGE_SIZE), 0);
        for (size_t i = 0; i < HUGE_SIZE; i++)
            if (out[i] != (unsigned char)(in[i] + 1))
                fail_msg("byte %zu", i);
    }
    int v = 3, r;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 3);
    free(in);
    free(out);
    free_pool(pool);
}

/* A pool belongs to its creator: in a forked copy every call is -ECHILD. */
static void test_other_process(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(1, 0, NULL);
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) {
        int v = 1, r;
        bool ok = proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r) == -ECHILD;
        errno = 0;
        ok = ok && proc_pool_submit(pool, task_ret_value, &v, sizeof v, sizeof r) == NULL &&
             errno == ECHILD;
        ok = ok && proc_pool_close(pool) == -ECHILD && proc_pool_join(pool, 0) == -ECHILD &&
             proc_pool_terminate(pool) == -ECHILD && proc_pool_free(pool) == -ECHILD;
        _exit(ok ? 0 : 1);
    }
    int st = 0;
    pid_t w;
    while ((w = waitpid(c, &st, 0)) < 0 && errno == EINTR)
        ;
    assert_int_equal(w, c);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    int v = 4, r;
    assert_int_equal(proc_pool_apply(pool, task_ret_value, &v, sizeof v, &r, sizeof r), 4);
    free_pool(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_misuse, kill_leftovers),
        cmocka_unit_test_teardown(test_default_workers, kill_leftovers),
        cmocka_unit_test_teardown(test_results, kill_leftovers),
        cmocka_unit_test_teardown(test_map_million, kill_leftovers),
        cmocka_unit_test_teardown(test_worker_dies_mid_task, kill_leftovers),
        cmocka_unit_test_teardown(test_futures_many_threads, kill_leftovers),
        cmocka_unit_test_teardown(test_concurrent_maps, kill_leftovers),
        cmocka_unit_test_teardown(test_future_waiters, kill_leftovers),
        cmocka_unit_test_teardown(test_terminate_running, kill_leftovers),
        cmocka_unit_test_teardown(test_free_running, kill_leftovers),
        cmocka_unit_test_teardown(test_close_join, kill_leftovers),
        cmocka_unit_test_teardown(test_max_tasks_per_child, kill_leftovers),
        cmocka_unit_test_teardown(test_initializer, kill_leftovers),
        cmocka_unit_test_teardown(test_initializer_crashes, kill_leftovers),
        cmocka_unit_test_teardown(test_big_io, kill_leftovers),
        cmocka_unit_test_teardown(test_other_process, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_deaths, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_terminate_close, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_crash_then_terminate, kill_leftovers),
        cmocka_unit_test_teardown(test_fast_results, kill_leftovers),
        cmocka_unit_test_teardown(test_workers_bound, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_shared, NULL);
}
