/* SPDX-License-Identifier: MIT */
/*
 * The lifecycle area (src/wait.c, src/init.c) at a process's end: at-exit work
 * (waiting for non-daemonic children, terminating daemonic ones, refusing
 * restarts from exit callbacks, also at the exit of a root process that
 * returns from main), daemons dying with their parent, and daemons started
 * from short-lived threads.
 *
 * Many tests use a "middle" process (a libproc child of the test) that starts a
 * grandchild. Processes report through pipes; a process that must stay alive
 * blocks in read() or pause(). "The grandchild is gone" is observed as EOF on a
 * pipe whose write end only the grandchild holds, bounded by poll(). The whole
 * program runs again on libproc's paths for kernels without pidfds
 * (test_all_again_without_pidfd).
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <sched.h>

#include <libproc/proc.h>

#include "testutil.h"

/* Bounds on a hang, never a measurement: a sanitized build on a loaded
 * machine takes seconds to exit a process (leak checks at exit). */
#define HANG_MS 60000

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "testcheck.h"

/* ------------------------------------------------------------------ helpers */

#define CHILD_ALARM_S 30

/* ------------------------------------------- at exit: wait for non-daemons */

struct ae {
    int rel_r, rel_w; /* test -> grandchild: release */
    int out_r, out_w; /* middle/grandchild -> test */
};

static int ae_grandchild(void *arg)
{
    struct ae *a = arg;
    char c;
    alarm(CHILD_ALARM_S);
    (void)read_retry(a->rel_r, &c, 1);
    return tu_write_full(a->out_w, "G", 1) == 0 ? 0 : 1;
}

static int ae_middle(void *arg)
{
    struct ae *a = arg;
    alarm(CHILD_ALARM_S);
    close(a->rel_w);
    close(a->out_r);
    proc_t *g = proc_new(ae_grandchild, a);
    if (!g || proc_start(g) != 0) {
        (void)tu_write_full(a->out_w, "E", 1);
        return 3;
    }
    (void)tu_write_full(a->out_w, "M", 1);
    exit(0); /* libproc's at-exit work must wait for g */
}

static void test_at_exit_waits_for_nondaemonic_children(void **state)
{
    (void)state;
    int rel[2], out[2];
    make_pipe(rel);
    make_pipe(out);
    struct ae a = {rel[0], rel[1], out[0], out[1]};
    proc_t *m = proc_new(ae_middle, &a);
    assert_non_null(m);
    EQ(proc_start(m), 0);
    close_fd(&out[1]);

    char c = 0;
    EQ(tu_read_full(out[0], &c, 1, HANG_MS), 1);
    EQ(c, 'M');
    /* the middle has called exit(0) but must wait for its grandchild */
    EQ(proc_join(m, 300), -ETIMEDOUT);
    assert_true(proc_is_alive(m));
    EQ(tu_wait_readable(out[0], 0), 0); /* the grandchild has not written yet */

    EQ(tu_write_full(rel[1], "x", 1), 0); /* release the grandchild */
    EQ(proc_join(m, HANG_MS), 0);
    EQ(proc_exitcode(m), 0);
    EQ(tu_read_full(out[0], &c, 1, 0), 1); /* written before the middle ended */
    EQ(c, 'G');
    assert_true(tu_eof_within(out[0], 5000));
    EQ(proc_close(m), 0);
    close_fd(&rel[0]);
    close_fd(&rel[1]);
    close_fd(&out[0]);
}

/* ---------------------------------- at exit: no restarts from exit callbacks */

/* A supervisor's restart-on-death: every daemon that ends is replaced from its
 * exit callback. At exit() the replacement must be refused, or exit() would
 * end daemons for ever. */
struct rs {
    int out_w;    /* daemons hold it: EOF once all are gone */
    int report_w; /* the callback's proc_start() results */
};

static int rs_daemon(void *arg)
{
    (void)arg;
    alarm(CHILD_ALARM_S);
    for (;;)
        pause(); /* until SIGTERM */
    return 0;
}

static void rs_restart(proc_t *p, void *arg);

/* Started daemons stay referenced until the process ends (no leak report). */
static proc_t *rs_started[4];

static int rs_count;

static int rs_start_daemon(struct rs *r)
{
    proc_t *d = proc_new(rs_daemon, r);
    if (!d)
        return -ENOMEM;
    int rc = proc_set_daemon(d, true);
    if (rc == 0)
        rc = proc_on_exit(d, rs_restart, r);
    if (rc == 0 && rs_count == 4)
        rc = -ENOSPC;
    if (rc == 0)
        rc = proc_start(d);
    if (rc == 0)
        rs_started[rs_count++] = d;
    else
        proc_close(d);
    return rc;
}

static void rs_restart(proc_t *p, void *arg)
{
    (void)p;
    struct rs *r = arg;
    int rc = rs_start_daemon(r);
    (void)tu_write_full(r->report_w, &rc, sizeof rc);
}

static int rs_middle(void *arg)
{
    struct rs *r = arg;
    alarm(CHILD_ALARM_S);
    if (rs_start_daemon(r) != 0)
        return 3;
    close(r->out_w);
    exit(0); /* ends the daemon; its callback tries to replace it */
}

static void test_at_exit_refuses_restarts(void **state)
{
    (void)state;
    int out[2], report[2];
    make_pipe(out);
    make_pipe(report);
    struct rs r = {out[1], report[1]};
    proc_t *m = proc_new(rs_middle, &r);
    assert_non_null(m);
    EQ(proc_start(m), 0);
    close_fd(&out[1]);
    close_fd(&report[1]);
    EQ(proc_join(m, HANG_MS), 0); /* exit() finished: one grace period at most */
    EQ(proc_exitcode(m), 0);
    int rc = 0;
    EQ(tu_read_full(report[0], &rc, sizeof rc, 0), (ssize_t)sizeof rc);
    EQ(rc, -ESHUTDOWN);
    EQ(tu_read_full(report[0], &rc, sizeof rc, 0), 0); /* one callback, one refusal */
    assert_true(tu_eof_within(out[0], 5000));          /* no daemon left */
    EQ(proc_close(m), 0);
    close_fd(&out[0]);
    close_fd(&report[0]);
}

/* ------------------------------------------- at exit: terminate daemons */

struct de {
    int out_r, out_w;     /* daemon -> test: pid, then EOF when the daemon is gone */
    int ready_r, ready_w; /* daemon -> middle */
    int hold_r, hold_w;   /* keeps the middle blocked (parent-death variant) */
};

static int de_daemon(void *arg)
{
    struct de *a = arg;
    pid_t me = getpid();
    alarm(CHILD_ALARM_S);
    if (0 != tu_write_full(a->ready_w, &me, sizeof me))
        return 1;
    for (;;)
        pause();
}

/* Starts a daemonic grandchild and forwards its pid to the test. 0 on success. */
static int de_start_daemon(struct de *a)
{
    int rp[2];
    if (pipe2(rp, O_CLOEXEC) != 0)
        return 1;
    a->ready_r = rp[0];
    a->ready_w = rp[1];
    proc_t *d = proc_new(de_daemon, a);
    if (!d || proc_set_daemon(d, true) != 0 || proc_start(d) != 0)
        return 2;
    close(a->ready_w);
    pid_t dpid = 0;
    if (tu_read_full(a->ready_r, &dpid, sizeof dpid, HANG_MS) != (ssize_t)sizeof dpid ||
        dpid != proc_pid(d))
        return 3;
    if (0 != tu_write_full(a->out_w, &dpid, sizeof dpid))
        return 4;
    close(a->out_w); /* from now on only the daemon holds it */
    return 0;
}

static int de_middle_exit(void *arg)
{
    struct de *a = arg;
    alarm(CHILD_ALARM_S);
    close(a->out_r);
    int r = de_start_daemon(a);
    if (r != 0)
        return r;
    exit(0); /* at exit, libproc terminates the daemon and reaps it */
}

static void test_at_exit_terminates_daemons(void **state)
{
    (void)state;
    int out[2];
    make_pipe(out);
    struct de a = {.out_r = out[0], .out_w = out[1], .hold_r = -1, .hold_w = -1};
    proc_t *m = proc_new(de_middle_exit, &a);
    assert_non_null(m);
    EQ(proc_start(m), 0);
    close_fd(&out[1]);

    pid_t dpid = 0;
    EQ(tu_read_full(out[0], &dpid, sizeof dpid, HANG_MS), sizeof dpid);
    assert_true(dpid > 0);
    /* A daemon that outlived its parent's exit would hold up the join. */
    EQ(proc_join(m, HANG_MS), 0);
    EQ(proc_exitcode(m), 0);
    /* the daemon is dead: EOF on the pipe only it held */
    if (!tu_eof_within(out[0], HANG_MS))
        fail_msg("daemonic grandchild %d still holds its pipe after its parent exited", (int)dpid);
    /* and it was reaped by its parent, not left as a zombie for init */
    char st = tu_state(dpid);
    if (st == 'Z')
        fail_msg("daemonic grandchild %d left as a zombie", (int)dpid);
    EQ(proc_close(m), 0);
    close_fd(&out[0]);
}

/* ------------------------------------------------------- parent death */

static int de_middle_block(void *arg)
{
    struct de *a = arg;
    char c;
    alarm(CHILD_ALARM_S);
    close(a->out_r);
    close(a->hold_w);
    int r = de_start_daemon(a);
    if (r != 0)
        return r;
    (void)read_retry(a->hold_r, &c, 1); /* the test SIGKILLs us here */
    return 0;
}

static void test_parent_death_kills_daemon(void **state)
{
    (void)state;
    int out[2], hold[2];
    make_pipe(out);
    make_pipe(hold);
    struct de a = {.out_r = out[0], .out_w = out[1], .hold_r = hold[0], .hold_w = hold[1]};
    proc_t *m = proc_new(de_middle_block, &a);
    assert_non_null(m);
    EQ(proc_start(m), 0);
    close_fd(&out[1]);
    close_fd(&hold[0]);

    pid_t dpid = 0;
    EQ(tu_read_full(out[0], &dpid, sizeof dpid, HANG_MS), sizeof dpid);
    assert_true(dpid > 0);
    assert_true(proc_is_alive(m));
    EQ(proc_kill(m), 0);
    EQ(proc_join(m, HANG_MS), 0);
    EQ(proc_exitcode(m), -SIGKILL);
    int64_t t0 = tu_now_ms();
    if (!tu_eof_within(out[0], 2000))
        fail_msg("daemonic grandchild %d survived its parent's SIGKILL for 2 s", (int)dpid);
    int64_t took = tu_now_ms() - t0;
    print_message("daemon gone %lld ms after its parent was reaped\n", (long long)took);
    EQ(proc_close(m), 0);
    close_fd(&out[0]);
    close_fd(&hold[1]);
}

/* ------------------------------------------ daemon started from a thread */

struct dt {
    int ping_r, ping_w; /* test -> daemon */
    int pong_r, pong_w; /* daemon -> test; EOF once the daemon is gone */
    int stat_r, stat_w; /* middle -> test */
    int hold_r, hold_w; /* keeps the middle blocked */
    proc_t *d;
    int start_rc;
};

static int dt_daemon(void *arg)
{
    struct dt *a = arg;
    alarm(CHILD_ALARM_S);
    for (;;) {
        char c;
        if (read_retry(a->ping_r, &c, 1) != 1)
            return 0;
        c++;
        if (0 != tu_write_full(a->pong_w, &c, 1))
            return 1;
    }
}

static void *dt_thread(void *arg)
{
    struct dt *a = arg;
    a->d = proc_new(dt_daemon, a);
    if (!a->d) {
        a->start_rc = -ENOMEM;
        return NULL;
    }
    a->start_rc = proc_set_daemon(a->d, true);
    if (a->start_rc == 0)
        a->start_rc = proc_start(a->d);
    return NULL;
}

static int dt_middle(void *arg)
{
    struct dt *a = arg;
    char c;
    alarm(CHILD_ALARM_S);
    close(a->ping_w);
    close(a->pong_r);
    close(a->stat_r);
    close(a->hold_w);
    pthread_t t;
    int rc = pthread_create(&t, NULL, dt_thread, a);
    if (rc == 0)
        rc = pthread_join(t, NULL);
    if (rc == 0)
        rc = a->start_rc;
    /* the thread that asked for the daemon has exited */
    close(a->pong_w);
    close(a->ping_r);
    pid_t dpid = rc == 0 ? proc_pid(a->d) : 0;
    if (0 != tu_write_full(a->stat_w, &rc, sizeof rc) ||
        0 != tu_write_full(a->stat_w, &dpid, sizeof dpid))
        return 2;
    (void)read_retry(a->hold_r, &c, 1); /* the test SIGKILLs us here */
    return 0;
}

static void test_daemon_from_short_lived_thread(void **state)
{
    (void)state;
    int ping[2], pong[2], stat[2], hold[2];
    make_pipe(ping);
    make_pipe(pong);
    make_pipe(stat);
    make_pipe(hold);
    struct dt a = {ping[0], ping[1], pong[0], pong[1], stat[0], stat[1], hold[0], hold[1], NULL, 0};
    proc_t *m = proc_new(dt_middle, &a);
    assert_non_null(m);
    EQ(proc_start(m), 0);
    close_fd(&ping[0]);
    close_fd(&pong[1]);
    close_fd(&stat[1]);
    close_fd(&hold[0]);

    int rc = 1;
    pid_t dpid = 0;
    EQ(tu_read_full(stat[0], &rc, sizeof rc, HANG_MS), sizeof rc);
    EQ(tu_read_full(stat[0], &dpid, sizeof dpid, HANG_MS), sizeof dpid);
    EQ(rc, 0);
    assert_true(dpid > 0);

    /* the daemon outlived the thread that started it: round trips work */
    for (char c = 'a'; c < 'd'; c++) {
        char r = 0;
        EQ(tu_write_full(ping[1], &c, 1), 0);
        if (tu_read_full(pong[0], &r, 1, 5000) != 1)
            fail_msg("daemon %d did not answer after its starting thread exited", (int)dpid);
        EQ(r, c + 1);
    }

    /* and it dies with the middle process */
    EQ(proc_kill(m), 0);
    EQ(proc_join(m, HANG_MS), 0);
    EQ(proc_exitcode(m), -SIGKILL);
    if (!tu_eof_within(pong[0], 2000))
        fail_msg("daemon %d survived its parent's SIGKILL for 2 s", (int)dpid);
    EQ(proc_close(m), 0);
    close_fd(&ping[1]);
    close_fd(&pong[0]);
    close_fd(&stat[0]);
    close_fd(&hold[1]);
}

/* ------------------------- at exit of a root process (return from main) */

/* Fixed fd numbers the root sub-process gets its pipes on. */
#define ROOT_REL_FD 100 /* test -> non-daemonic child: release */

#define ROOT_OUT_FD 101 /* 'M' from main just before it returns, 'G' from the child */

#define ROOT_DMN_FD 102 /* the daemon's pid; then EOF once the daemon is gone */

static int root_nondaemon(void *arg)
{
    char c;
    (void)arg;
    alarm(CHILD_ALARM_S);
    close(ROOT_DMN_FD);
    (void)read_retry(ROOT_REL_FD, &c, 1);
    return tu_write_full(ROOT_OUT_FD, "G", 1) == 0 ? 0 : 1;
}

static int g_root_ready_w = -1;

static int root_daemon(void *arg)
{
    (void)arg;
    alarm(CHILD_ALARM_S);
    close(ROOT_OUT_FD);
    close(ROOT_REL_FD);
    pid_t me = getpid();
    if (tu_write_full(g_root_ready_w, &me, sizeof me) != 0)
        return 1;
    for (;;)
        pause();
}

/* "--sub atexit-root": a root process starts a daemonic and a non-daemonic
 * child, then returns from main. */
static int sub_atexit_root(void)
{
    alarm(CHILD_ALARM_S);
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0)
        return 1;
    g_root_ready_w = ready[1];
    proc_t *g = proc_new(root_nondaemon, NULL);
    proc_t *d = proc_new(root_daemon, NULL);
    if (!g || !d || proc_set_daemon(d, true) != 0)
        return 2;
    if (proc_start(g) != 0 || proc_start(d) != 0)
        return 3;
    close(ready[1]);
    /* the daemon runs (else at exit it could be terminated before it began) */
    pid_t dpid = 0;
    if (tu_read_full(ready[0], &dpid, sizeof dpid, HANG_MS) != (ssize_t)sizeof dpid)
        return 4;
    if (tu_write_full(ROOT_DMN_FD, &dpid, sizeof dpid) != 0)
        return 5;
    close(ROOT_DMN_FD); /* from now on only the daemon holds it */
    close(ROOT_REL_FD);
    if (tu_write_full(ROOT_OUT_FD, "M", 1) != 0)
        return 6;
    return 0; /* libproc: terminate d, then wait for g */
}

static void test_at_exit_of_root_process(void **state)
{
    (void)state;
    int rel[2], out[2], dmn[2];
    make_pipe(rel);
    make_pipe(out);
    make_pipe(dmn);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (dup2(rel[0], ROOT_REL_FD) < 0 || dup2(out[1], ROOT_OUT_FD) < 0 ||
            dup2(dmn[1], ROOT_DMN_FD) < 0)
            _exit(126);
        execl(tu_self_exe(), "test_lifecycle", "--sub", "atexit-root", (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    close_fd(&rel[0]);
    close_fd(&out[1]);
    close_fd(&dmn[1]);

    pid_t dpid = 0;
    char c = 0;
    int st = 0;
    EQ(tu_read_full(dmn[0], &dpid, sizeof dpid, HANG_MS), sizeof dpid);
    EQ(tu_read_full(out[0], &c, 1, HANG_MS), 1);
    EQ(c, 'M');
    /* main has returned: the daemon is terminated ... */
    if (!tu_eof_within(dmn[0], 3000))
        fail_msg("daemonic child %d still alive 3 s after main returned", (int)dpid);
    /* ... but the process waits for its non-daemonic child */
    EQ(tu_wait_readable(out[0], 300), 0);
    EQ(waitpid(pid, &st, WNOHANG), 0);

    EQ(tu_write_full(rel[1], "x", 1), 0); /* release the non-daemonic child */
    EQ(tu_read_full(out[0], &c, 1, HANG_MS), 1);
    EQ(c, 'G');
    pid_t r;
    do {
        r = waitpid(pid, &st, 0); /* bounded by the sub-process's alarm() */
    } while (r < 0 && errno == EINTR);
    EQ(r, pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("root sub-process: status %#x (exit %d, signal %d)", st,
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    assert_true(tu_eof_within(out[0], 5000));
    close_fd(&rel[1]);
    close_fd(&out[0]);
    close_fd(&dmn[0]);
}

/* The whole suite again on the library's pidfd-less paths (its testing switch
 * LIBPROC_DISABLE_PIDFD=1). */
TEST_ALL_AGAIN_WITHOUT_PIDFD("test_lifecycle_exit")

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--sub") == 0)
        return strcmp(argv[2], "atexit-root") == 0 ? sub_atexit_root() : 2;
    const struct CMUnitTest tests[] = {
        T(test_at_exit_waits_for_nondaemonic_children),
        T(test_at_exit_terminates_daemons),
        T(test_at_exit_refuses_restarts),
        T(test_parent_death_kills_daemon),
        T(test_daemon_from_short_lived_thread),
        T(test_at_exit_of_root_process),
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, settle_reaper, NULL);
}
