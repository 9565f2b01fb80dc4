/* SPDX-License-Identifier: MIT */
/*
 * The worker pool tests' fixture (pool_fixture.h): the state tasks see, the
 * tasks, and the helpers the test_pool_*.c programs share.
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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

#include <libproc/pool.h>
#include <libproc/proc.h>

#include "pool_fixture.h"
#include "testcheck.h"
#include "testutil.h"

/* ------------------------------------------------------- state seen by tasks
 * Set before proc_pool_new(), so that every worker (a fork) inherits them. */

int g_report_w = -1; /* tasks write their pid here */
int g_gate_r = -1;   /* blocking tasks read one byte from here */
int g_inited;        /* set by the initializer, in the worker */

struct shared *g_shared; /* MAP_SHARED, created before the pool */

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

int task_square(const void *in, void *out)
{
    uint64_t x = *(const uint32_t *)in;
    *(uint64_t *)out = x * x + 7;
    return 0;
}

/* out = 2 * v; returns v (which may be anything, negative too). */
int task_ret_value(const void *in, void *out)
{
    int v = *(const int *)in;
    *(int *)out = 2 * v;
    return v;
}

int task_null_args(const void *in, void *out)
{
    return in == NULL && out == NULL ? 0 : 1;
}

int task_maybe_bad(const void *in, void *out)
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
    case BAD_SLEEP:
        for (;;)
            pause(); /* until task_timeout_ms kills this worker */
    case BAD_SPIN:
        for (volatile unsigned long spins = 0;; spins++) {
        }
    case BAD_NOTERM: {
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, NULL);
        for (;;)
            pause();
    }
    default:
        break;
    }
    *(uint64_t *)out = (uint64_t)b->value * 3 + 1;
    return 0;
}

/* A worker is a daemonic child: it cannot have a pool (children) of its own. */
int task_nested_pool(const void *in, void *out)
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

int task_triple(const void *in, void *out)
{
    *(uint64_t *)out = *(const uint64_t *)in * 3 + 1;
    return 0;
}

/* Reports its pid, blocks until the gate gives a byte, returns 5. */
int task_block(const void *in, void *out)
{
    note_where(in);
    report_pid();
    wait_gate();
    if (out)
        *(int *)out = 55;
    return 5;
}

/* out = 1 when the input lies in the fast region, else 2. */
int task_where(const void *in, void *out)
{
    *(int *)out = in_fast_region(in) ? 1 : 2;
    return 0;
}

int task_pid(const void *in, void *out)
{
    (void)in;
    *(pid_t *)out = getpid();
    return g_inited ? 0 : 1;
}

void init_count(void *arg)
{
    (void)arg;
    g_inited = atomic_fetch_add(&g_shared->inits, 1) + 1; /* this worker's number */
}

/* The worker's number from init_count: unlike its pid, never reused (Linux
 * can give a new process the pid of one that has just ended, not only after
 * the pid counter wrapped). */
int task_worker_number(const void *in, void *out)
{
    (void)in;
    *(pid_t *)out = (pid_t)g_inited;
    return g_inited ? 0 : 1;
}

void init_crash(void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_shared->inits, 1);
    segfault_now();
}

int task_big(const void *in, void *out)
{
    const unsigned char *a = in;
    unsigned char *b = out;
    for (size_t i = 0; i < MIB; i++)
        b[i] = (unsigned char)~a[i];
    return 0;
}

int task_huge(const void *in, void *out)
{
    const unsigned char *a = in;
    unsigned char *b = out;
    for (size_t i = 0; i < HUGE_SIZE; i++)
        b[i] = (unsigned char)(a[i] + 1);
    return 0;
}

void pipes_open(struct pipes *p)
{
    assert_int_equal(tu_pipe(p->report), 0);
    assert_int_equal(tu_pipe(p->gate), 0);
    g_report_w = p->report[1];
    g_gate_r = p->gate[0];
}

void pipes_close(struct pipes *p)
{
    for (int i = 0; i < 2; i++) {
        close(p->report[i]);
        close(p->gate[i]);
    }
    g_report_w = g_gate_r = -1;
}

pid_t read_pid(const struct pipes *p)
{
    pid_t pid = 0;
    assert_int_equal(tu_read_full(p->report[0], &pid, sizeof pid, BOUND_MS), (ssize_t)sizeof pid);
    assert_true(pid > 0);
    return pid;
}

void open_gate(const struct pipes *p, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(tu_write_full(p->gate[1], "x", 1), 0);
}

/* The pools open_pool() made and free_pool() has not freed. */
static proc_pool_t *g_open[8];

static void forget_pool(const proc_pool_t *pool)
{
    for (size_t i = 0; i < sizeof g_open / sizeof g_open[0]; i++)
        if (g_open[i] == pool)
            g_open[i] = NULL;
}

proc_pool_t *open_pool(const proc_pool_opts_t *o)
{
    proc_pool_t *pool = proc_pool_new(o);
    assert_non_null(pool);
    for (size_t i = 0; i < sizeof g_open / sizeof g_open[0]; i++)
        if (!g_open[i]) {
            g_open[i] = pool;
            break;
        }
    return pool;
}

proc_pool_t *new_pool(int workers, int max_tasks, void (*init)(void *))
{
    proc_pool_opts_t o = {
        .workers = workers, .max_tasks_per_child = max_tasks, .initializer = init};
    return open_pool(&o);
}

void free_pool(proc_pool_t *pool)
{
    forget_pool(pool);
    assert_int_equal(proc_pool_free(pool), 0);
    assert_no_children();
}

/* The orderly end: no new work, every queued task done, workers gone. */
void close_join_free(proc_pool_t *pool)
{
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    free_pool(pool);
}

int setup_shared(void **state)
{
    (void)state;
    g_shared =
        mmap(NULL, sizeof *g_shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return g_shared == MAP_FAILED ? -1 : 0;
}

/* After a failed test: kill whatever it left running. */
int kill_leftovers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof g_open / sizeof g_open[0]; i++) {
        proc_pool_free(g_open[i]); /* terminates it first: no replacements */
        g_open[i] = NULL;
    }
    kill_children_left(BOUND_MS);
    atomic_store(&g_shared->inits, 0);
    return 0;
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
void map_with_bad(proc_pool_t *pool, struct pipes *p, const int *bad_idx, const int *bad_how,
                  int nbad)
{
    enum { N = 300 };
    struct bad_in in[N];
    uint64_t out[N];
    bool killed = false;
    int first = N;
    for (int i = 0; i < N; i++) {
        in[i] = (struct bad_in){.value = (uint32_t)i, .how = BAD_NONE};
        out[i] = UNTOUCHED;
    }
    for (int k = 0; k < nbad; k++) {
        in[bad_idx[k]].how = (uint32_t)bad_how[k];
        killed |= bad_how[k] == BAD_KILLED;
        first = bad_idx[k] < first ? bad_idx[k] : first;
    }
    int expect = first < N && BAD_OVERRUNS(in[first].how) ? -ETIMEDOUT : -ECHILD;
    pthread_t t;
    if (killed)
        assert_int_equal(pthread_create(&t, NULL, killer, p), 0);
    assert_int_equal(proc_pool_map(pool, task_maybe_bad, in, sizeof *in, out, sizeof *out, N),
                     expect);
    if (killed)
        assert_int_equal(pthread_join(t, NULL), 0);
    for (int i = 0; i < N; i++) {
        if (in[i].how != BAD_NONE)
            assert_true(out[i] == UNTOUCHED);
        else
            assert_true(out[i] == (uint64_t)i * 3 + 1);
    }
}

bool fast_enabled(void)
{
    const char *e = getenv("LIBPROC_POOL_FAST");
    return !e || strcmp(e, "0") != 0;
}

/* Until an apply runs in a fast job: the dispatcher offers its idle workers
 * to callers when it has nothing queued (bounded, never by the clock). */
void fast_warm(proc_pool_t *pool)
{
    char in = 0;
    for (int i = 0; i < 10000; i++) {
        int where = 0;
        int rc = proc_pool_apply(pool, task_where, &in, 1, &where, sizeof where);
        /* task_where reads a /proc file: on a stalled machine it may
         * really outlast a test's short task_timeout_ms */
        if (rc == -ETIMEDOUT)
            continue;
        assert_int_equal(rc, 0);
        if (where == 1)
            return;
    }
    fail_msg("no apply ran in a fast job");
}

/* map_with_bad() until the first death happens in a fast job (the deaths
 * after it in a one-worker pool take the queue: its chunks are requeued). */
void map_with_bad_fast(proc_pool_t *pool, struct pipes *p, const int *bad_idx, const int *bad_how,
                       int nbad)
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

int apply_bad_fast(proc_pool_t *pool, int how, int expect)
{
    int hits = 0;
    for (int attempt = 0; attempt < 20 && hits == 0; attempt++) {
        fast_warm(pool);
        atomic_store(&g_shared->fast_hits, 0);
        struct bad_in b = {.value = 1, .how = (uint32_t)how};
        uint64_t r = UNTOUCHED;
        assert_int_equal(proc_pool_apply(pool, task_maybe_bad, &b, sizeof b, &r, sizeof r), expect);
        assert_true(r == UNTOUCHED);
        hits = atomic_load(&g_shared->fast_hits);
    }
    return hits;
}

void pool_warm_up(void)
{
    /* libproc's process-wide fds (reaper) exist after the first start */
    proc_pool_t *pool = new_pool(1, 0, NULL);
    free_pool(pool);
}
