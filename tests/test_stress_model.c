/* SPDX-License-Identifier: MIT */
/*
 * Randomized model test (issue 3): 4 threads run 20,000 random operations
 * (start, join with random timeouts, terminate, kill, signal, is_alive,
 * close, attribute reads) over 64 process slots whose children exit, crash
 * or hang at random, in callback and exec mode, some with exit callbacks.
 * A model of each slot says which results are possible; after every join the
 * exit code must be one of them. The run ends with no hang (alarm), no child
 * or zombie left and no fd gained.
 *
 * Each slot has its own mutex, held for one operation, so proc_close never
 * races another call on the same object (the contract); different slots run
 * concurrently. The seed is fixed and printed; LIBPROC_STRESS_SEED=<n>
 * reruns another one (thread interleavings still differ between runs).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <libproc/proc.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "stress_util.h"

#define SLOTS 64
#define THREADS 4
#define OPS 20000 /* also under sanitizers: about 5 s with TSan */
#define DEFAULT_SEED UINT64_C(20240601)
#define WATCHDOG_S ST_SIZE(300, 800)

enum behaviour { B_EXIT, B_CRASH, B_HANG };

struct slot {
    pthread_mutex_t lock;
    proc_t *p;
    enum behaviour b;
    int value; /* exit code (B_EXIT) or signal (B_CRASH) */
    bool exec_mode;
    bool joined; /* a join returned 0 */
    bool with_cb;
    uint32_t sent; /* fatal signals sent since the start (bit per signal) */
    _Atomic int cb_runs;
    _Atomic int cb_bad; /* the callback saw no exit code */
};

static struct slot slots[SLOTS];

enum op { OP_START, OP_JOIN, OP_TERMINATE, OP_KILL, OP_SIGNAL, OP_ALIVE, OP_CLOSE, OP_ATTR, OPS_N };
static const char *const op_names[] = {"start",  "join",     "terminate", "kill",
                                       "signal", "is_alive", "close",     "attributes"};
static _Atomic long op_count[OPS_N];
static _Atomic long joins_ok, joins_timed_out, closes_busy, starts_total;
static _Atomic long behaviour_count[3];

static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static int violations;
static char first_violations[5][240];

__attribute__((format(printf, 1, 2))) static void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&err_lock);
    if (violations < 5)
        vsnprintf(first_violations[violations], sizeof first_violations[0], fmt, ap);
    violations++;
    pthread_mutex_unlock(&err_lock);
    va_end(ap);
}

/* splitmix64 */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static int rand_below(uint64_t *s, int n)
{
    return (int)(next_rand(s) % (uint64_t)n);
}

/* ------------------------------------------------------------ the children */

static int child_main(void *arg)
{
    struct slot *sl = arg;  /* our copy of the slot */
    alarm(WATCHDOG_S + 30); /* outlives a healthy run: hanging children must not end alone */
    switch (sl->b) {
    case B_EXIT:
        if (sl->value % 2)
            _exit(sl->value);
        return sl->value;
    case B_CRASH:
        st_child_signals_default();
        raise(sl->value);
        return 200; /* not reached */
    case B_HANG:
    default:
        for (;;)
            pause();
    }
}

static void exit_cb(proc_t *p, void *arg)
{
    struct slot *sl = arg;
    if (proc_exitcode(p) == PROC_EXITCODE_NONE || !proc_is_alive(p))
        atomic_fetch_add(&sl->cb_bad, 1);
    atomic_fetch_add(&sl->cb_runs, 1);
}

/* -------------------------------------------------------------- the model */

static bool end_guaranteed(const struct slot *sl)
{
    return sl->b != B_HANG || sl->sent != 0;
}

/* Whether exit code ec is possible for the slot's child. */
static bool possible(const struct slot *sl, int ec)
{
    if (ec < 0 && ec > -32 && (sl->sent & (UINT32_C(1) << -ec)))
        return true;
    if (sl->b == B_EXIT)
        return ec == sl->value;
    if (sl->b == B_CRASH)
        return ec == -sl->value;
    return false;
}

static const int crash_signals[] = {SIGSEGV, SIGABRT, SIGFPE, SIGILL, SIGBUS, SIGQUIT};
/* for proc_signal: fatal ones, and ones that end nothing */
static const int some_signals[] = {SIGTERM, SIGKILL, SIGUSR1, SIGINT,   SIGHUP,
                                   SIGUSR2, 0,       SIGCONT, SIGWINCH, SIGURG};

static bool is_fatal(int sig)
{
    return sig != 0 && sig != SIGCONT && sig != SIGWINCH && sig != SIGURG && sig != SIGCHLD;
}

static void do_start(struct slot *sl, int si, uint64_t *rs)
{
    if (sl->p) {
        /* a started object: a second start is -EBUSY */
        int r = proc_start(sl->p);
        if (r != -EBUSY)
            violation("slot %d: second proc_start = %d, expected -EBUSY", si, r);
        return;
    }
    sl->b = (enum behaviour)rand_below(rs, 3);
    sl->exec_mode = rand_below(rs, 5) == 0;
    sl->with_cb = !sl->exec_mode && rand_below(rs, 8) == 0;
    sl->joined = false;
    sl->sent = 0;
    atomic_store(&sl->cb_runs, 0);
    atomic_store(&sl->cb_bad, 0);
    switch (sl->b) {
    case B_EXIT:
        sl->value = rand_below(rs, 256);
        break;
    case B_CRASH:
        sl->value = crash_signals[rand_below(rs, 6)];
        break;
    default:
        sl->value = 0;
    }
    proc_t *p;
    if (sl->exec_mode) {
        char script[64];
        if (sl->b == B_EXIT)
            snprintf(script, sizeof script, "exit %d", sl->value);
        else if (sl->b == B_CRASH)
            snprintf(script, sizeof script, "kill -%d $$", sl->value);
        else
            snprintf(script, sizeof script, "exec /bin/sleep 1000");
        const char *argv[] = {"/bin/sh", "-c", script, NULL};
        p = proc_new_exec(argv);
    } else {
        p = proc_new(child_main, sl); /* the child reads its copy of the slot */
    }
    if (!p) {
        violation("slot %d: proc_new failed: %s", si, strerror(errno));
        return;
    }
    if (sl->with_cb && proc_on_exit(p, exit_cb, sl) != 0)
        violation("slot %d: proc_on_exit failed", si);
    int r = proc_start(p);
    if (r != 0) {
        violation("slot %d: proc_start = %d (%s)", si, r, strerror(-r));
        proc_close(p);
        return;
    }
    sl->p = p;
    atomic_fetch_add(&starts_total, 1);
    atomic_fetch_add(&behaviour_count[sl->b], 1);
}

static void check_joined(struct slot *sl, int si, const char *when)
{
    int ec = proc_exitcode(sl->p);
    if (!possible(sl, ec))
        violation("slot %d (%s): exit code %d after %s, not possible (behaviour %d, value %d, "
                  "signals sent %#x)",
                  si, sl->exec_mode ? "exec" : "callback", ec, when, (int)sl->b, sl->value,
                  (unsigned)sl->sent);
    if (proc_is_alive(sl->p))
        violation("slot %d: alive after a successful join", si);
    if (sl->with_cb && (atomic_load(&sl->cb_runs) != 1 || atomic_load(&sl->cb_bad) != 0))
        violation("slot %d: exit callback ran %d times (%d without an exit code) by the join", si,
                  atomic_load(&sl->cb_runs), atomic_load(&sl->cb_bad));
}

static void do_join(struct slot *sl, int si, uint64_t *rs)
{
    static const int timeouts[] = {0, 0, 1, 2, 5, 10, 20, -1};
    int t = timeouts[rand_below(rs, 8)];
    if (t == -1 && !end_guaranteed(sl))
        t = 3;
    int r = proc_join(sl->p, t);
    if (r == 0) {
        atomic_fetch_add(&joins_ok, 1);
        if (!end_guaranteed(sl))
            violation("slot %d: join returned 0 for a hanging child nobody signalled (exit "
                      "code %d)",
                      si, proc_exitcode(sl->p));
        check_joined(sl, si, "join");
        sl->joined = true;
    } else if (r == -ETIMEDOUT && t >= 0) {
        atomic_fetch_add(&joins_timed_out, 1);
        if (sl->joined)
            violation("slot %d: join timed out after an earlier join succeeded", si);
    } else {
        violation("slot %d: proc_join(%d) = %d", si, t, r);
    }
}

static void do_signal(struct slot *sl, int si, int sig)
{
    int r = proc_signal(sl->p, sig);
    if (r != 0)
        violation("slot %d: proc_signal(%d) = %d", si, sig, r);
    else if (is_fatal(sig) && !sl->joined)
        sl->sent |= UINT32_C(1) << sig;
}

static void do_close(struct slot *sl, int si)
{
    int ec = proc_exitcode(sl->p);
    bool joined = sl->joined;
    int r = proc_close(sl->p);
    if (r == 0) {
        if (!end_guaranteed(sl))
            violation("slot %d: proc_close succeeded on a hanging child nobody signalled", si);
        else if (ec != PROC_EXITCODE_NONE && !possible(sl, ec))
            violation("slot %d: exit code %d before close, not possible", si, ec);
        sl->p = NULL;
    } else if (r == -EBUSY) {
        atomic_fetch_add(&closes_busy, 1);
        if (joined)
            violation("slot %d: proc_close after a successful join = -EBUSY", si);
    } else {
        violation("slot %d: proc_close = %d", si, r);
    }
}

static void do_attr(struct slot *sl, int si)
{
    int ec = proc_exitcode(sl->p);
    if (ec != PROC_EXITCODE_NONE && !possible(sl, ec))
        violation("slot %d: proc_exitcode = %d, not possible", si, ec);
    if (sl->joined && ec == PROC_EXITCODE_NONE)
        violation("slot %d: no exit code after a join", si);
    if (proc_pid(sl->p) <= 0)
        violation("slot %d: pid %d", si, (int)proc_pid(sl->p));
    if (proc_sentinel(sl->p) < 0)
        violation("slot %d: sentinel %d", si, proc_sentinel(sl->p));
}

static void one_op(uint64_t *rs)
{
    int si = rand_below(rs, SLOTS);
    struct slot *sl = &slots[si];
    int dice = rand_below(rs, 100);
    enum op op = dice < 16   ? OP_START
                 : dice < 40 ? OP_JOIN
                 : dice < 47 ? OP_TERMINATE
                 : dice < 52 ? OP_KILL
                 : dice < 62 ? OP_SIGNAL
                 : dice < 75 ? OP_ALIVE
                 : dice < 90 ? OP_CLOSE
                             : OP_ATTR;
    pthread_mutex_lock(&sl->lock);
    if (!sl->p && op != OP_START) /* an empty slot: every operation but start is a start */
        op = OP_START;
    atomic_fetch_add(&op_count[op], 1);
    switch (op) {
    case OP_START:
        do_start(sl, si, rs);
        break;
    case OP_JOIN:
        do_join(sl, si, rs);
        break;
    case OP_TERMINATE:
        if (proc_terminate(sl->p) != 0)
            violation("slot %d: proc_terminate failed", si);
        else if (!sl->joined)
            sl->sent |= UINT32_C(1) << SIGTERM;
        break;
    case OP_KILL:
        if (proc_kill(sl->p) != 0)
            violation("slot %d: proc_kill failed", si);
        else if (!sl->joined)
            sl->sent |= UINT32_C(1) << SIGKILL;
        break;
    case OP_SIGNAL:
        do_signal(sl, si, some_signals[rand_below(rs, 10)]);
        break;
    case OP_ALIVE: {
        bool alive = proc_is_alive(sl->p);
        if (sl->joined && alive)
            violation("slot %d: alive after a successful join", si);
        if (!end_guaranteed(sl) && !alive)
            violation("slot %d: a hanging child nobody signalled is not alive (exit code %d)", si,
                      proc_exitcode(sl->p));
        break;
    }
    case OP_CLOSE:
        do_close(sl, si);
        break;
    case OP_ATTR:
    default:
        do_attr(sl, si);
        break;
    }
    pthread_mutex_unlock(&sl->lock);
}

struct runner {
    uint64_t state;
    int ops;
};

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    for (int i = 0; i < r->ops; i++)
        one_op(&r->state);
    return NULL;
}

static uint64_t seed_from_env(void)
{
    const char *s = getenv("LIBPROC_STRESS_SEED");
    if (!s || !*s)
        return DEFAULT_SEED;
    return strtoull(s, NULL, 0);
}

static void test_random_model(void **state)
{
    (void)state;
    st_raise_limits();
    /* warm up so that the reaper's own fds count as "before" */
    proc_t *w = proc_new(NULL, NULL);
    assert_non_null(w);
    EQ(proc_start(w), 0);
    EQ(proc_join(w, 10000), 0);
    EQ(proc_close(w), 0);
    int fds_before = tu_count_fds();

    uint64_t seed = seed_from_env();
    print_message("seed %" PRIu64 " (rerun with LIBPROC_STRESS_SEED=%" PRIu64 "), %d threads, "
                  "%d operations, %d slots\n",
                  seed, seed, THREADS, OPS, SLOTS);
    for (int i = 0; i < SLOTS; i++) {
        memset(&slots[i], 0, sizeof slots[i]);
        pthread_mutex_init(&slots[i].lock, NULL);
    }
    alarm(WATCHDOG_S); /* a hang anywhere ends the program (SIGALRM), not just this test */
    int64_t t0 = tu_now_ms();
    struct runner rn[THREADS];
    pthread_t tid[THREADS];
    for (int t = 0; t < THREADS; t++) {
        rn[t].state = seed + (uint64_t)t * UINT64_C(0x1000193);
        rn[t].ops = OPS / THREADS;
        EQ(pthread_create(&tid[t], NULL, runner_main, &rn[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        EQ(pthread_join(tid[t], NULL), 0);
    int64_t took = tu_now_ms() - t0;

    /* the end: everything still there is killed, joined and closed */
    int left = 0;
    for (int i = 0; i < SLOTS; i++) {
        struct slot *sl = &slots[i];
        if (!sl->p)
            continue;
        left++;
        if (!sl->joined) {
            if (proc_kill(sl->p) != 0)
                violation("slot %d: final proc_kill failed", i);
            sl->sent |= UINT32_C(1) << SIGKILL;
            int r = proc_join(sl->p, PROC_WAIT_FOREVER);
            if (r != 0)
                violation("slot %d: final join = %d", i, r);
            check_joined(sl, i, "the final kill");
        }
        if (proc_close(sl->p) != 0)
            violation("slot %d: final close failed", i);
        sl->p = NULL;
    }
    alarm(0);
    for (int i = 0; i < SLOTS; i++)
        pthread_mutex_destroy(&slots[i].lock);

    print_message("%ld children (%ld exit, %ld crash, %ld hang) in %lld ms; joins: %ld ended, "
                  "%ld timed out; %ld closes refused while running; %d left at the end\n",
                  atomic_load(&starts_total), atomic_load(&behaviour_count[B_EXIT]),
                  atomic_load(&behaviour_count[B_CRASH]), atomic_load(&behaviour_count[B_HANG]),
                  (long long)took, atomic_load(&joins_ok), atomic_load(&joins_timed_out),
                  atomic_load(&closes_busy), left);
    char line[400] = "";
    for (int o = 0; o < OPS_N; o++) {
        char part[48];
        snprintf(part, sizeof part, "%s%s %ld", o ? ", " : "operations: ", op_names[o],
                 atomic_load(&op_count[o]));
        strncat(line, part, sizeof line - strlen(line) - 1);
    }
    print_message("%s\n", line);
    for (int i = 0; i < violations && i < 5; i++)
        print_error("violation: %s\n", first_violations[i]);
    if (violations)
        fail_msg("%d violation(s) of the model with seed %" PRIu64, violations, seed);

    int children = tu_wait_children_gone(10000);
    if (children != 0)
        fail_msg("%d child process(es) left (%d zombies)", children, tu_count_zombies());
    EQ(tu_count_zombies(), 0);
    EQ(tu_count_fds(), fds_before);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct rlimit core = {0, 0}; /* crashing children write no core file */
    setrlimit(RLIMIT_CORE, &core);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_model),
    };
    return cmocka_run_group_tests_name("stress_model", tests, NULL, NULL);
}
