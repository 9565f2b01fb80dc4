/* SPDX-License-Identifier: MIT */
/*
 * The fork server's faults (API 4.6; src/forkserver.c,
 * src/forkserver_client.c): without a server a start is -ENOTCONN (exec
 * mode needs none), proc_forkserver_start() is -EBUSY while another thread
 * exists and -EALREADY once it started, the server's death gives
 * -ECONNRESET, then -ENOTCONN, and a new server works; a thread's locks do
 * not reach the server's children; the caller killed takes its server and
 * its daemonic child along. All of it again without pidfds. What a served
 * child is and gets is tests/test_forkserver.c; what both share is
 * tests/support/forkserver_fixture.c.
 *
 * Each case needs a process of its own (no server, a thread at the start,
 * the server killed, a thread holding locks for good, the caller killed),
 * so each runs in a fresh copy of this program ("--sub <mode>", started by
 * run_self(), or by test_caller_killed, which kills it) that starts its
 * server, or none, itself; main() starts none. Nothing waits by the clock;
 * timeouts only bound hangs.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "forkserver_fixture.h"
#include "testutil.h"
#include "testcheck.h"

#define SELF "test_forkserver_faults"
#ifdef TU_TSAN
#define UNDER_TSAN 1 /* see start_again() */
#else
#define UNDER_TSAN 0
#endif

static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static FILE *g_stream; /* opened before the server, so its children have it */

/* ------------------------------------------------------------- helpers */

/*
 * proc_forkserver_start() once threads have run (libproc's reaper, a joined
 * one): true when it started the server. ThreadSanitizer's runtime starts a
 * thread of its own with the first thread, which counts (-EBUSY): false
 * then, after a note.
 */
static bool start_again(void)
{
    int r = proc_forkserver_start();
    if (UNDER_TSAN && r == -EBUSY) {
        print_message("note: ThreadSanitizer's background thread counts as a thread\n");
        return false;
    }
    EQ(r, 0);
    return true;
}

/* ------------------------------------------------------------- the faults */

/* No server: -ENOTCONN, the object stays usable; exec mode does not need one. */
static void sub_no_server(void **state)
{
    (void)state;
    static const char *const argv[] = {"true", NULL};
    proc_t *e = proc_new_exec(argv);
    assert_non_null(e);
    EQ(proc_set_forkserver(e, true), 0);
    EQ(run_to_exit(e), 0);
    proc_t *p = served(ret_int, (void *)&seven);
    EQ(proc_start(p), -ENOTCONN);
    assert_false(proc_is_alive(p));
    EQ(settle_reaper(NULL), 0); /* see there: forks must not meet its setup */
    if (start_again())          /* only libproc's reaper runs besides us */
        EQ(run_to_exit(p), 7);
    else
        EQ(proc_close(p), 0);
}

static void *wait_on_fd(void *arg)
{
    char c;
    (void)read_retry(*(int *)arg, &c, 1);
    return NULL;
}

/* -EBUSY while another thread exists, 0 once it ended, then -EALREADY. */
static void sub_busy(void **state)
{
    (void)state;
    int hold[2];
    make_pipe(hold);
    pthread_t t;
    EQ(pthread_create(&t, NULL, wait_on_fd, &hold[0]), 0);
    EQ(proc_forkserver_start(), -EBUSY);
    close_fd(&hold[1]);
    EQ(pthread_join(t, NULL), 0);
    close_fd(&hold[0]);
    if (!start_again())
        return;
    EQ(proc_forkserver_start(), -EALREADY);
    EQ(run_to_exit(served(ret_int, (void *)&seven)), 7);
}

/* The server SIGKILLed: an error, no hang; then a new server works. */
static void sub_server_killed(void **state)
{
    (void)state;
    EQ(proc_forkserver_start(), 0);
    pid_t srv = find_server();
    assert_true(srv > 0);
    EQ(run_to_exit(served(ret_int, (void *)&seven)), 7);
    EQ(kill(srv, SIGKILL), 0);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    EQ(waitid(P_PID, (id_t)srv, &si, WEXITED | WNOWAIT), 0); /* dead, not reaped */
    proc_t *p = served(ret_int, (void *)&seven);
    EQ(proc_start(p), -ECONNRESET);
    EQ(tu_child_state(srv), 0); /* the dead server was reaped */
    EQ(proc_start(p), -ENOTCONN);
    EQ(settle_reaper(NULL), 0);
    if (start_again()) /* libproc's reaper thread runs: allowed */
        EQ(run_to_exit(p), 7);
    else
        EQ(proc_close(p), 0);
}

/* A thread holds a mutex and a stream's lock while 1,000 children that need
 * both start and finish through the server (250 under ThreadSanitizer, where
 * each costs tens of ms; the locks are held throughout either way). A plain
 * fork would copy the held mutex (shown with a trylock), and its proc_start
 * would block on the stream. */
#ifdef TU_TSAN
#define LOCKED_CHILDREN 250
#else
#define LOCKED_CHILDREN 1000
#endif
#define LOCKED_BATCH 25

static int trylock_main(void *arg)
{
    (void)arg;
    _exit(pthread_mutex_trylock(&g_mutex) == EBUSY ? 42 : 0); /* no exit work: stdio is held */
}

static int locking_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_mutex);
    fprintf(g_stream, "child %d\n", (int)getpid());
    fflush(g_stream);
    pthread_mutex_unlock(&g_mutex);
    return 0;
}

struct holder {
    int ready_w, go_r;
};

/* Takes the mutex, then (when told) the stream's lock, and holds both until told again. */
static void *hold_locks(void *arg)
{
    const struct holder *h = arg;
    char c = 'r';
    pthread_mutex_lock(&g_mutex);
    (void)tu_write_full(h->ready_w, &c, 1);
    (void)read_retry(h->go_r, &c, 1);
    flockfile(g_stream);
    (void)tu_write_full(h->ready_w, &c, 1);
    (void)read_retry(h->go_r, &c, 1);
    funlockfile(g_stream);
    pthread_mutex_unlock(&g_mutex);
    return NULL;
}

static void sub_locks_held(void **state)
{
    (void)state;
    EQ(proc_forkserver_start(), 0);
    int ready[2], go[2];
    make_pipe(ready);
    make_pipe(go);
    struct holder h = {ready[1], go[0]};
    pthread_t t;
    EQ(pthread_create(&t, NULL, hold_locks, &h), 0);
    char c = 'g';
    EQ(tu_read_full(ready[0], &c, 1, BOUND_MS), 1);
    /* The hazard, with the mutex alone (a plain start would also block in
     * its fflush(NULL) once the stream is held): a forked copy has it held. */
    EQ(run_to_exit(proc_new(trylock_main, NULL)), 42);
    EQ(tu_write_full(go[1], &c, 1), 0);
    EQ(tu_read_full(ready[0], &c, 1, BOUND_MS), 1);
    proc_t *ps[LOCKED_BATCH];
    for (int done = 0; done < LOCKED_CHILDREN; done += LOCKED_BATCH) {
        for (int i = 0; i < LOCKED_BATCH; i++) {
            ps[i] = served(locking_main, NULL);
            EQ(proc_start(ps[i]), 0);
        }
        for (int i = 0; i < LOCKED_BATCH; i++) {
            EQ(proc_join(ps[i], BOUND_MS), 0);
            EQ(proc_exitcode(ps[i]), 0);
            EQ(proc_close(ps[i]), 0);
        }
    }
    EQ(tu_write_full(go[1], &c, 1), 0);
    EQ(pthread_join(t, NULL), 0);
    close_fd(&ready[0]);
    close_fd(&ready[1]);
    close_fd(&go[0]);
    close_fd(&go[1]);
}

static int pause_forever(void *arg)
{
    (void)arg;
    while (pause() < 0) /* only a signal ends it */
        ;
    return 0;
}

/*
 * The caller killed: its server and its daemonic child die within 1 s; its
 * other child is left to whoever reaps orphans (here the test, a subreaper).
 * The sub reports the three pids on fd REPORT_FD (its stdout is cmocka's),
 * then waits to be killed.
 */
#define REPORT_FD 9
struct orphans {
    pid_t server, daemon, plain;
};

static void sub_caller_killed(void **state)
{
    (void)state;
    EQ(proc_forkserver_start(), 0);
    struct orphans o = {find_server(), 0, 0};
    assert_true(o.server > 0);
    proc_t *d = served(pause_forever, NULL), *n = served(read_stdin_to_eof, NULL);
    EQ(proc_set_daemon(d, true), 0);
    EQ(proc_set_stdio(n, 0, PROC_STDIO_PIPE), 0); /* EOF when we die */
    EQ(proc_start(d), 0);
    EQ(proc_start(n), 0);
    o.daemon = proc_pid(d);
    o.plain = proc_pid(n);
    EQ(tu_write_full(REPORT_FD, &o, sizeof o), 0);
    for (;;)
        pause();
}

/* Waits up to bound_ms for our child pid to end, reaps it: its status, or -1. */
static int reap_within(pid_t pid, int bound_ms)
{
    int64_t deadline = tu_now_ms() + bound_ms;
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && tu_now_ms() < deadline)
        sched_yield();
    return r == pid ? st : -1;
}

static void test_caller_killed(void **state)
{
    (void)state;
    subreaper(true);
    int out[2];
    make_pipe(out);
    fflush(NULL);
    pid_t sub = fork();
    if (sub == 0) {
        if (out[1] == REPORT_FD) /* dup2 would keep its close-on-exec flag */
            fcntl(REPORT_FD, F_SETFD, 0);
        else
            dup2(out[1], REPORT_FD);
        execl(tu_self_exe(), SELF, "--sub", "caller-killed", (char *)NULL);
        _exit(127);
    }
    assert_true(sub > 0);
    close_fd(&out[1]);
    struct orphans o;
    EQ(tu_read_full(out[0], &o, sizeof o, BOUND_MS), (ssize_t)sizeof o);
    close_fd(&out[0]);
    EQ(kill(sub, SIGKILL), 0);
    EQ(tu_waitpid(sub, NULL), sub);
    int st = reap_within(o.daemon, 1000);
    if (st == -1 || !WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
        fail_msg("daemon %d: status %#x (errno %d)", (int)o.daemon, st, errno);
    st = reap_within(o.server, 1000);
    if (st == -1) /* SIGKILL, or its exit at the end of its socket */
        fail_msg("server %d: status %#x (errno %d)", (int)o.server, st, errno);
    st = reap_within(o.plain, BOUND_MS); /* its stdin ended with the caller */
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 3)
        fail_msg("plain child %d: status %#x (errno %d)", (int)o.plain, st, errno);
    subreaper(false);
}

TEST_CASE(test_no_server, run_self, SELF, "no-server", false)
TEST_CASE(test_busy, run_self, SELF, "busy", false)
TEST_CASE(test_server_killed, run_self, SELF, "server-killed", false)
TEST_CASE(test_locks_held, run_self, SELF, "locks-held", false)

/* Everything again on libproc's paths for kernels without pidfds (the
 * server's pidfd is then dropped; the reaper watches the pid). */
TEST_ALL_AGAIN_WITHOUT_PIDFD(SELF)

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

static int run_sub(const char *mode)
{
    alarm(strcmp(mode, "locks-held") == 0 ? 300 : 60); /* a hang shows up as a failure */
    static const struct {
        const char *mode;
        CMUnitTestFunction fn;
    } subs[] = {
        {"no-server", sub_no_server},         {"busy", sub_busy},
        {"server-killed", sub_server_killed}, {"locks-held", sub_locks_held},
        {"caller-killed", sub_caller_killed},
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(mode, subs[i].mode) == 0) {
            const struct CMUnitTest t[] = {cmocka_unit_test(subs[i].fn)};
            return cmocka_run_group_tests_name(mode, t, NULL, NULL);
        }
    }
    return 2;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* What the server's children share with the caller exists before it. */
    g_stream = fopen("/dev/null", "w");
    if (!g_stream)
        return 1;
    if (argc == 3 && strcmp(argv[1], "--sub") == 0)
        return run_sub(argv[2]);
    const struct CMUnitTest tests[] = {
        T(test_no_server),  T(test_busy),          T(test_server_killed),
        T(test_locks_held), T(test_caller_killed), T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
