/* SPDX-License-Identifier: MIT */
/* The helpers of ipc_testutil.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc_testutil.h"

static proc_t *start(proc_target_fn *fn, void *arg, bool daemon)
{
    proc_t *p = proc_new(fn, arg);
    assert_non_null(p);
    assert_int_equal(proc_set_daemon(p, daemon), 0);
    assert_int_equal(proc_start(p), 0);
    return p;
}

proc_t *it_start(proc_target_fn *fn, void *arg)
{
    return start(fn, arg, false);
}

proc_t *it_start_daemon(proc_target_fn *fn, void *arg)
{
    return start(fn, arg, true);
}

int it_finish(proc_t *p)
{
    assert_int_equal(proc_join(p, IT_BOUND_MS), 0);
    int code = proc_exitcode(p);
    assert_int_equal(proc_close(p), 0);
    return code;
}

int it_finish_progressing(proc_t *p, const long *progress)
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

void it_kill(proc_t *p)
{
    assert_int_equal(proc_kill(p), 0);
    assert_int_equal(it_finish(p), -SIGKILL);
}

/* Not early, and well before a signal flood (IT_FLOOD_MS) ends, which a wait
 * that restarted its timeout at every signal would outlast. */
void it_elapsed_ok(int64_t t0, int want)
{
    int64_t took = tu_now_ms() - t0;
    if (took < want || took > want + 10000)
        fail_msg("a %d ms wait took %lld ms", want, (long long)took);
}

/* ------------------------------------------------------------ signal flood */

volatile sig_atomic_t it_signals;

static void it_on_signal(int sig)
{
    (void)sig;
    it_signals++;
}

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

void it_flood_start(struct it_flood *f)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = it_on_signal; /* no SA_RESTART: blocking calls see EINTR */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
    it_signals = 0;
    assert_int_equal(tu_gate_init(&f->stop), 0);
    f->p = it_start(it_flood_main, f);
    /* Returns once the flood is on (a loaded machine or a sanitizer's fork can
     * take longer to start it than the wait under test lasts), counting anew:
     * it_signals then says how many came during the caller's wait. */
    int64_t end = tu_now_ms() + IT_BOUND_MS;
    while (it_signals == 0 && tu_now_ms() < end)
        poll(NULL, 0, 10); /* a signal ends it early */
    assert_true(it_signals > 0);
    it_signals = 0;
}

void it_flood_stop(struct it_flood *f)
{
    tu_gate_open(&f->stop);
    assert_int_equal(it_finish(f->p), 0);
    tu_gate_destroy(&f->stop);
    /* The handler stays: a signal still in flight must not kill the test. */
}

/* ---------------------------------------------- killing at every instruction */

static void it_stepper_child(struct it_stepper *s)
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

int it_stepper_wait(struct it_stepper *s)
{
    int st = 0;
    assert_int_equal(tu_waitpid(s->pid, &st), s->pid);
    return st;
}

bool it_stepper_start(struct it_stepper *s)
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

bool it_stepper_step(struct it_stepper *s)
{
    assert_int_equal(ptrace(PTRACE_SINGLESTEP, s->pid, NULL, NULL), 0);
    int st = it_stepper_wait(s);
    assert_true(WIFSTOPPED(st));
    if (WSTOPSIG(st) != SIGTRAP && WSTOPSIG(st) != SIGSTOP)
        fail_msg("the traced child stopped with signal %d", WSTOPSIG(st));
    return WSTOPSIG(st) == SIGTRAP;
}

void it_stepper_run(struct it_stepper *s, long n)
{
    for (long i = 0; i < n && it_stepper_step(s); i++)
        ;
}

void it_stepper_kill(struct it_stepper *s)
{
    assert_int_equal(kill(s->pid, SIGKILL), 0);
    int st;
    do
        st = it_stepper_wait(s);
    while (!WIFSIGNALED(st) && !WIFEXITED(st));
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

bool it_kill_point(long n, long steps, long commit)
{
    const long window = IT_SANITIZED ? 3 : 24, stride = IT_SANITIZED ? 397 : 11;
    if (n <= 0 || n >= steps || steps <= 4 * window)
        return true;
    if (commit >= 0 && n >= commit - window && n <= commit + window)
        return true;
    return n % stride == 0;
}

void it_sweep_monotone(long n, bool happened, long *first)
{
    if (happened && *first < 0)
        *first = n;
#if defined(TU_TSAN) && defined(__clang__) && __clang_major__ < 19
    (void)n;
    static bool said;
    if (!said) {
        printf("      (clang TSan: instruction counts differ between runs; the sweep's "
               "monotonicity is not checked)\n");
        said = true;
    }
#else
    if (!happened && *first >= 0)
        fail_msg("killed after %ld instructions the operation had happened, after %ld not", *first,
                 n);
#endif
}

long it_stepper_count(struct it_stepper *s, bool (*committed)(void *arg), long *commit)
{
    long steps = 0;
    *commit = -1;
    while (it_stepper_step(s)) {
        steps++;
        if (*commit < 0 && committed(s->arg))
            *commit = steps;
    }
    it_stepper_kill(s);
    assert_true(*commit > 0);
    return steps;
}
