/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the IPC tests (test_ipc_*.c), on top of testutil.h. Include
 * after <cmocka.h>. Children never use cmocka: they report through exit
 * codes, pipes and shared memory.
 *
 *   IT_SANITIZED                1 under ASan/TSan: tests scale their loads down
 *   it_start(fn, arg)           a started libproc child (callback mode)
 *   it_finish(p)                joins (bounded), closes, returns the exit code
 *   it_finish_progressing(p, c) the same, bounded on *c not changing for
 *                               IT_BOUND_MS (work that grows with the load)
 *   it_kill(p)                  SIGKILL, join, close
 *   it_flood_start/stop         a child that sends the test process SIGUSR1
 *                               every millisecond for at most 15 s (handler
 *                               without SA_RESTART, left installed), to check
 *                               that waits survive EINTR without restarting
 *                               their timeout
 *   it_elapsed_ok(t0, want)     a bounded wait took at least `want` ms and
 *                               did not run far over it
 *   it_stepper_*                runs an operation in a ptrace'd child one
 *                               instruction at a time, so that a test can
 *                               SIGKILL it after exactly n instructions
 *   it_kill_point(n, steps, c)  which n a sweep over an operation of `steps`
 *                               instructions tries: every one near c (where
 *                               its effect became visible), a stride elsewhere
 */
#ifndef LIBPROC_IPC_TESTUTIL_H
#define LIBPROC_IPC_TESTUTIL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "testutil.h"

#if defined(LIBPROC_TEST_SANITIZED) && LIBPROC_TEST_SANITIZED
#define IT_SANITIZED 1
#elif defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define IT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define IT_SANITIZED 1
#endif
#endif
#ifndef IT_SANITIZED
#define IT_SANITIZED 0
#endif

/* Bound on anything that should finish: a hang fails instead of blocking ctest. */
#define IT_BOUND_MS 30000

static inline proc_t *it_start(proc_target_fn *fn, void *arg)
{
    proc_t *p = proc_new(fn, arg);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    return p;
}

static inline int it_finish(proc_t *p)
{
    assert_int_equal(proc_join(p, IT_BOUND_MS), 0);
    int code = proc_exitcode(p);
    assert_int_equal(proc_close(p), 0);
    return code;
}

/*
 * it_finish() for a child whose work grows with the machine's load (it takes
 * turns on a contended lock, say): the bound is on no progress, not on the
 * total. Waits while *progress keeps changing, failing only after
 * IT_BOUND_MS without a change.
 */
static inline int it_finish_progressing(proc_t *p, const long *progress)
{
    long seen = __atomic_load_n(progress, __ATOMIC_RELAXED);
    for (;;) {
        int r = proc_join(p, IT_BOUND_MS);
        if (r == 0)
            break;
        assert_int_equal(r, -ETIMEDOUT);
        long now = __atomic_load_n(progress, __ATOMIC_RELAXED);
        if (now == seen)
            fail_msg("no progress for %d ms", IT_BOUND_MS);
        seen = now;
    }
    int code = proc_exitcode(p);
    assert_int_equal(proc_close(p), 0);
    return code;
}

static inline void it_kill(proc_t *p)
{
    assert_int_equal(proc_kill(p), 0);
    assert_int_equal(it_finish(p), -SIGKILL);
}

/* A wait of `want` ms that started at t0 ended now: not early, and well before
 * a signal flood (IT_FLOOD_MS) ends, which a wait that restarted its timeout
 * at every signal would outlast. Loose, for loaded machines. */
static inline void it_elapsed_ok(int64_t t0, int want)
{
    int64_t took = tu_now_ms() - t0;
    if (took < want || took > want + 10000)
        fail_msg("a %d ms wait took %lld ms", want, (long long)took);
}

/* ------------------------------------------------------------ signal flood */

#define IT_FLOOD_MS 15000 /* longest flood */

static volatile sig_atomic_t it_signals;

static void it_on_signal(int sig)
{
    (void)sig;
    it_signals++;
}

struct it_flood {
    proc_t *p;
    tu_gate stop;
};

static int it_flood_main(void *arg)
{
    struct it_flood *f = arg;
    if (f->stop.wr >= 0) {
        close(f->stop.wr);
        f->stop.wr = -1;
    }
    pid_t parent = getppid();
    int64_t end = tu_now_ms() + IT_FLOOD_MS;
    /* The gate doubles as the pace: one signal per millisecond until it opens. */
    while (tu_now_ms() < end && tu_wait_readable(f->stop.rd, 1) == 0)
        kill(parent, SIGUSR1);
    return 0;
}

static inline void it_flood_start(struct it_flood *f)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = it_on_signal; /* no SA_RESTART: blocking calls see EINTR */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
    it_signals = 0;
    assert_int_equal(tu_gate_init(&f->stop), 0);
    f->p = it_start(it_flood_main, f);
}

static inline void it_flood_stop(struct it_flood *f)
{
    tu_gate_open(&f->stop);
    assert_int_equal(it_finish(f->p), 0);
    tu_gate_destroy(&f->stop);
    /* The handler stays: a signal still in flight must not kill the test. */
}

/* ---------------------------------------------- killing at every instruction */

/*
 * The traced child is a plain fork() child, not a libproc one: libproc's
 * reaper waits for its children with waitid(P_PIDFD, WEXITED), and the kernel
 * reports a tracee's ptrace stops to every thread of its tracer's process,
 * so the reaper could take a stop the test is waiting for. The child calls
 * only libproc's IPC functions, which are fine in a fork child.
 */

typedef void it_op_fn(void *arg);

struct it_stepper {
    it_op_fn *pre; /* optional: runs in the child before it stops */
    it_op_fn *op;
    void *arg;
    pid_t pid;
};

static inline void it_stepper_child(struct it_stepper *s)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves nothing stopped */
    if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0)
        _exit(99);
    if (s->pre)
        s->pre(s->arg);
    raise(SIGSTOP); /* the parent takes over here */
    s->op(s->arg);
    raise(SIGSTOP); /* the operation has returned */
    _exit(0);
}

/* Waits for the traced child's next stop (or end): its wait status. */
static inline int it_stepper_wait(struct it_stepper *s)
{
    int st = 0;
    pid_t r;
    do
        r = waitpid(s->pid, &st, 0);
    while (r < 0 && errno == EINTR);
    assert_int_equal(r, s->pid);
    return st;
}

/* Starts s->op in a traced child, stopped just before it. false when this
 * system does not permit ptrace (the child is gone then). */
static inline bool it_stepper_start(struct it_stepper *s)
{
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0)
        it_stepper_child(s);
    int st = it_stepper_wait(s);
    if (WIFEXITED(st)) {
        assert_int_equal(WEXITSTATUS(st), 99);
        return false;
    }
    assert_true(WIFSTOPPED(st));
    return true;
}

/* Runs one instruction; false once the operation has returned. */
static inline bool it_stepper_step(struct it_stepper *s)
{
    assert_int_equal(ptrace(PTRACE_SINGLESTEP, s->pid, NULL, NULL), 0);
    int st = it_stepper_wait(s);
    assert_true(WIFSTOPPED(st));
    if (WSTOPSIG(st) != SIGTRAP && WSTOPSIG(st) != SIGSTOP)
        fail_msg("the traced child stopped with signal %d", WSTOPSIG(st));
    return WSTOPSIG(st) == SIGTRAP;
}

/* Runs up to n instructions. */
static inline void it_stepper_run(struct it_stepper *s, long n)
{
    for (long i = 0; i < n && it_stepper_step(s); i++)
        ;
}

static inline void it_stepper_kill(struct it_stepper *s)
{
    assert_int_equal(kill(s->pid, SIGKILL), 0);
    int st;
    do
        st = it_stepper_wait(s);
    while (!WIFSIGNALED(st) && !WIFEXITED(st));
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

static inline bool it_kill_point(long n, long steps, long commit)
{
    const long window = IT_SANITIZED ? 3 : 24, stride = IT_SANITIZED ? 397 : 11;
    if (n <= 0 || n >= steps || steps <= 4 * window)
        return true;
    if (commit >= 0 && n >= commit - window && n <= commit + window)
        return true;
    return n % stride == 0;
}

#endif /* LIBPROC_IPC_TESTUTIL_H */
