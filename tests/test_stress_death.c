/* SPDX-License-Identifier: MIT */
/*
 * Parent death (issue 3): daemonic children die promptly after their parent's
 * normal exit (return from a callback target, exit() or return from main of a
 * root process), its SIGKILL and its crash (SIGSEGV), and the test prints how
 * soon (the wait is bounded at DEATH_BOUND_MS, a bound on a hang); daemons started
 * from a thread that has since exited live on until the parent exits; the
 * non-daemonic children of a parent that exits normally are waited for.
 *
 * The parent ("middle") is either a libproc child of this test or a fresh
 * copy of this program ("--sub root": a root process). Each daemon holds the
 * write end of a "life" pipe, so the test sees EOF on the read end exactly
 * when the last of them is gone. Daemons block in pause(); nothing sleeps.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libproc/proc.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "stress_util.h"

#define DAEMONS ST_SIZE(8, 4) /* callback-mode daemons per middle, plus one exec daemon */
#define ROUNDS ST_SIZE(3, 2)  /* each scenario this often */
/*
 * How long daemons may take to die: a bound on a hang, not the measurement.
 * They are signalled at once (SIGTERM at a normal exit, SIGKILL from the
 * kernel when the parent dies); how soon they then run and die is the
 * scheduler's, and on a loaded 2-CPU machine under a sanitizer that took
 * more than a second. The times measured are printed (worst per scenario).
 */
#define DEATH_BOUND_MS 10000
#define GRACE_MS 1000 /* SIGTERM -> SIGKILL at a normal exit (README) */
#define NONDAEMONS 5

/* ---------------------------------------------------------------- the middle */

struct mid {
    int life_w;             /* every daemon holds it: EOF once all are gone */
    int stubborn_w;         /* held only by the daemon that ignores SIGTERM; -1: no such daemon */
    int report_r, report_w; /* daemons and middle -> test: pids, then a marker */
    int cmd_r, cmd_w;       /* test -> middle */
    int ping_r, ping_w;     /* test -> first daemon */
    int pong_r, pong_w;     /* first daemon -> test */
    int gate_r, gate_w;     /* non-daemonic children wait here */
    int ndaemons;
    bool from_thread;
    bool reaper_first; /* from_thread: libproc's reaper already runs when the thread starts */
    bool nondaemons;
    /* filled in the middle */
    bool is_stubborn;
    int index;
    pid_t thread_tid;
    int thread_rc;
    proc_t *objs[DAEMONS + NONDAEMONS + 2];
    int nobjs;
};

struct report {
    char
        tag; /* 'd' daemon pid, 'e' exec daemon pid, 'n' non-daemon (pid = exit code), 'x' marker */
    int value;
};

static int send_report(int fd, char tag, int value)
{
    struct report r = {tag, value};
    return tu_write_full(fd, &r, sizeof r);
}

/* A daemon: reports its pid, answers pings (the first one), otherwise pauses. */
static int daemon_main(void *arg)
{
    struct mid *m = arg;
    alarm(ST_CHILD_ALARM_S);
    st_child_signals_default();
    if (m->is_stubborn) {
        signal(SIGTERM, SIG_IGN);
        close(m->life_w); /* measured on its own pipe */
    } else if (m->stubborn_w >= 0) {
        close(m->stubborn_w);
    }
    if (send_report(m->report_w, 'd', (int)getpid()) != 0)
        return 1;
    if (m->index == 0 && m->ping_r >= 0) {
        char c;
        while (tu_read_full(m->ping_r, &c, 1, -1) == 1) {
            c++;
            if (tu_write_full(m->pong_w, &c, 1) != 0)
                break;
        }
    }
    for (;;)
        pause();
}

/* A non-daemonic child: waits at the gate, then tells whether its parent is still there. */
static int nondaemon_main(void *arg)
{
    struct mid *m = arg;
    alarm(ST_CHILD_ALARM_S);
    pid_t parent = getppid();
    close(m->gate_w);
    char c;
    (void)tu_read_full(m->gate_r, &c, 1, -1);
    return getppid() == parent ? 10 + m->index : 99;
}

static void report_exit(proc_t *p, void *arg)
{
    struct mid *m = arg;
    send_report(m->report_w, 'n', proc_exitcode(p));
}

static int start_daemons(struct mid *m)
{
    for (int i = 0; i < m->ndaemons; i++) {
        m->index = i;
        m->is_stubborn = m->stubborn_w >= 0 && i == m->ndaemons - 1;
        proc_t *d = proc_new(daemon_main, m); /* the child gets a copy of *m as it is now */
        if (!d || proc_set_daemon(d, true) != 0 || proc_start(d) != 0)
            return -1;
        m->objs[m->nobjs++] = d;
    }
    /* an exec-mode daemon (fork + exec path) holding the life pipe across exec */
    int lw = dup(m->life_w); /* without O_CLOEXEC */
    if (lw < 0)
        return -1;
    const char *argv[] = {"/bin/sleep", "120", NULL};
    proc_t *e = proc_new_exec(argv);
    int r = e ? proc_set_daemon(e, true) : -1;
    if (r == 0)
        r = proc_start(e);
    close(lw);
    if (r != 0)
        return -1;
    m->objs[m->nobjs++] = e;
    return send_report(m->report_w, 'e', (int)proc_pid(e));
}

static void *daemon_thread(void *arg)
{
    struct mid *m = arg;
    m->thread_tid = (pid_t)syscall(SYS_gettid);
    m->thread_rc = start_daemons(m);
    return NULL;
}

/* Bounded wait until the thread tid of this process is gone from the kernel
 * too (its exit, which fires PR_SET_PDEATHSIG, is complete). */
static bool thread_gone(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d", (int)tid);
    int64_t deadline = tu_now_ms() + 10000;
    while (access(path, F_OK) == 0) {
        if (tu_now_ms() > deadline)
            return false;
        sched_yield();
    }
    return true;
}

/* The middle's life: start children, report, obey one command. Returns the
 * exit code for a normal exit; 'c' crashes. */
static int middle_run(struct mid *m, char *cmd_out)
{
    alarm(ST_CHILD_ALARM_S);
    close(m->report_r);
    close(m->cmd_w);
    close(m->ping_w);
    close(m->pong_r);
    m->nobjs = 0;
    if (m->nondaemons) {
        for (int i = 0; i < NONDAEMONS; i++) {
            m->index = i;
            proc_t *n = proc_new(nondaemon_main, m);
            if (!n || proc_on_exit(n, report_exit, m) != 0 || proc_start(n) != 0)
                return 2;
            m->objs[m->nobjs++] = n;
        }
        close(m->gate_r);
        close(m->gate_w);
    }
    if (m->ndaemons > 0) {
        if (m->from_thread) {
            /* A stack size of its own: in a fork child, ThreadSanitizer (gcc 12) aborts
             * with "dup thread with used id" when a new thread reuses the cached default
             * stack, and so the id, of a thread of the parent that it still counts. */
            if (m->reaper_first || ST_TSAN) {
                /* libproc's reaper thread starts here, not in the short-lived thread.
                 * Always under TSan: in a fork child, ThreadSanitizer (gcc 12) aborts with
                 * "dup thread with used id" when a new thread reuses the cached stack, and
                 * so the id, of a thread of the parent that it still counts as alive
                 * (libproc's reaper there). */
                proc_t *w = proc_new(NULL, NULL);
                if (!w || proc_start(w) != 0 || proc_join(w, 30000) != 0 || proc_close(w) != 0)
                    return 9;
            }
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, 512 * 1024);
            pthread_t t;
            int rc = pthread_create(&t, &attr, daemon_thread, m);
            pthread_attr_destroy(&attr);
            if (rc != 0 || pthread_join(t, NULL) != 0)
                return 3;
            if (m->thread_rc != 0)
                return 4;
            if (!thread_gone(m->thread_tid))
                return 5;
        } else if (start_daemons(m) != 0) {
            return 6;
        }
    }
    close(m->life_w);
    if (m->stubborn_w >= 0)
        close(m->stubborn_w);
    close(m->ping_r);
    close(m->pong_w);
    if (send_report(m->report_w, 'x', 0) != 0)
        return 7;
    char c = 0;
    if (tu_read_full(m->cmd_r, &c, 1, -1) != 1)
        c = 'e';
    *cmd_out = c;
    if (send_report(m->report_w, 'y', 0) != 0) /* the parent's end begins now */
        return 8;
    if (c == 'c') {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    return 0;
}

static int middle_target(void *arg)
{
    char cmd;
    return middle_run(arg, &cmd);
}

/* --sub root: the middle as a root process; fds at ST_SUB_FD0.. in struct order. */
static struct mid root_mid; /* reachable at exit: the objects are not leaks */

/* The twelve fds from life_w to gate_w travel to a root middle in this order. */
_Static_assert(offsetof(struct mid, gate_w) == offsetof(struct mid, life_w) + 11 * sizeof(int),
               "struct mid: the fds must be contiguous");

static int sub_root(void)
{
    int *f = &root_mid.life_w;
    for (int i = 0; i < 12; i++) {
        f[i] = ST_SUB_FD0 + i;
        fcntl(f[i], F_SETFD, FD_CLOEXEC); /* as in the test: only the life pipe crosses exec */
    }
    const char *cfg = getenv("LIBPROC_TEST_MID");
    int from_thread = 0, nondaemons = 0, stubborn = 0;
    if (!cfg ||
        sscanf(cfg, "%d %d %d %d", &root_mid.ndaemons, &from_thread, &nondaemons, &stubborn) != 4)
        return 90;
    root_mid.from_thread = from_thread;
    root_mid.nondaemons = nondaemons;
    if (!stubborn) {
        close(root_mid.stubborn_w);
        root_mid.stubborn_w = -1;
    }
    char cmd = 0;
    int r = middle_run(&root_mid, &cmd);
    if (r != 0)
        return r;
    if (cmd == 'r')
        return 0; /* return from main */
    exit(0);      /* exit() */
}

/* ------------------------------------------------------------------ test side */

struct run {
    struct mid m;
    int life[2], stubborn[2], report[2], cmd[2], ping[2], pong[2], gate[2];
    proc_t *p;  /* libproc middle */
    pid_t root; /* root middle (plain child) */
    pid_t daemons[DAEMONS + 1];
    int ndaemon_pids;
};

static void run_cleanup(struct run *r);

static bool reaper_first; /* for the next run_start */

/* Closes, in every pipe of r, the test's end (ours) or the middle's. */
static void close_ends(struct run *r, bool ours)
{
    int *const pipes[] = {r->life, r->stubborn, r->report, r->cmd, r->ping, r->pong, r->gate};
    static const int test_end[] = {0, 0, 0, 1, 1, 0, 1};
    for (size_t i = 0; i < sizeof test_end / sizeof test_end[0]; i++)
        close_fd(&pipes[i][ours ? test_end[i] : 1 - test_end[i]]);
}

/* Starts a middle (libproc child, or root process when root) and reads its reports. */
static void run_start(struct run *r, bool root, int ndaemons, bool from_thread, bool nondaemons,
                      bool stubborn)
{
    memset(r, 0, sizeof *r);
    make_pipe(r->life);
    make_pipe(r->report);
    make_pipe(r->cmd);
    make_pipe(r->ping);
    make_pipe(r->pong);
    make_pipe(r->gate);
    make_pipe(r->stubborn);
    struct mid *m = &r->m;
    *m = (struct mid){.life_w = r->life[1],
                      .stubborn_w = r->stubborn[1],
                      .report_r = r->report[0],
                      .report_w = r->report[1],
                      .cmd_r = r->cmd[0],
                      .cmd_w = r->cmd[1],
                      .ping_r = r->ping[0],
                      .ping_w = r->ping[1],
                      .pong_r = r->pong[0],
                      .pong_w = r->pong[1],
                      .gate_r = r->gate[0],
                      .gate_w = r->gate[1],
                      .ndaemons = ndaemons,
                      .from_thread = from_thread,
                      .reaper_first = reaper_first,
                      .nondaemons = nondaemons};
    if (root) {
        char cfg[64];
        snprintf(cfg, sizeof cfg, "LIBPROC_TEST_MID=%d %d %d %d", ndaemons, from_thread, nondaemons,
                 stubborn);
        const char *env[] = {cfg, NULL};
        r->root = st_spawn_sub("root", &m->life_w, 12, env);
        assert_true(r->root > 0);
    } else {
        if (!stubborn) {
            close_fd(&r->stubborn[1]);
            m->stubborn_w = -1;
        }
        r->p = proc_new(middle_target, m);
        assert_non_null(r->p);
        EQ(proc_start(r->p), 0);
    }
    /* only the middle's tree holds these now */
    close_ends(r, false);

    /* the middle's marker, and a report from every daemon (they run on their own) */
    bool marker = false;
    int want = ndaemons > 0 ? ndaemons + 1 : 0;
    while (!marker || r->ndaemon_pids < want) {
        struct report rep;
        ssize_t n = tu_read_full(r->report[0], &rep, sizeof rep, 30000);
        if (n != (ssize_t)sizeof rep) {
            run_cleanup(r);
            fail_msg("middle stopped reporting (read %zd, %d of %d daemons); middle exit code %d",
                     n, r->ndaemon_pids, want, r->p ? proc_exitcode(r->p) : -1);
        }
        if (rep.tag == 'x')
            marker = true;
        else if ((rep.tag == 'd' || rep.tag == 'e') && r->ndaemon_pids < DAEMONS + 1)
            r->daemons[r->ndaemon_pids++] = rep.value;
    }
}

static void send_cmd(struct run *r, char c)
{
    EQ(tu_write_full(r->cmd[1], &c, 1), 0);
}

/* ms until EOF on fd, or -1 if none within bound_ms. */
static int64_t ms_to_eof(int fd, int64_t t0, int bound_ms)
{
    char buf[16];
    ssize_t n = tu_read_full(fd, buf, sizeof buf, (int)(t0 + bound_ms - tu_now_ms()));
    if (n != 0)
        return -1;
    return tu_now_ms() - t0;
}

/* Middle gone: the test reaps it and checks how it ended. */
static void reap_middle(struct run *r, int expect)
{
    int code;
    if (r->p) {
        EQ(proc_join(r->p, 30000), 0);
        code = proc_exitcode(r->p);
        EQ(proc_close(r->p), 0);
        r->p = NULL;
    } else {
        code = st_wait_pid(r->root);
    }
    if (code != expect)
        fail_msg("middle ended with %d, expected %d", code, expect);
}

static void run_cleanup(struct run *r)
{
    for (int i = 0; i < r->ndaemon_pids; i++)
        kill(r->daemons[i], SIGKILL); /* only matters after a failure */
    close_ends(r, true);
}

static int64_t worst_ms;

static void expect_daemons_gone(struct run *r, int64_t t0, const char *what)
{
    int64_t took = ms_to_eof(r->life[0], t0, DEATH_BOUND_MS);
    if (took < 0) {
        run_cleanup(r);
        fail_msg("%s: daemons still alive %d ms later", what, DEATH_BOUND_MS);
    }
    if (took > worst_ms)
        worst_ms = took;
}

/* ------------------------------------------------------------------- tests */

static int teardown(void **state)
{
    (void)state;
    return check_no_children_left(5000);
}

static void test_daemons_die_at_normal_exit(void **state)
{
    (void)state;
    worst_ms = 0;
    /* variants: libproc child returning from its target; root process exit(); return from main */
    const char cmds[] = {'e', 'e', 'r'};
    for (int v = 0; v < 3; v++) {
        for (int round = 0; round < ROUNDS; round++) {
            struct run r;
            bool stubborn = round == 0 && v < 2;
            run_start(&r, v > 0, DAEMONS, false, false, stubborn);
            int64_t t0 = tu_now_ms();
            send_cmd(&r, cmds[v]);
            expect_daemons_gone(&r, t0, "normal exit of the parent");
            if (stubborn) {
                /* the one ignoring SIGTERM gets SIGKILL after the grace period */
                int64_t took = ms_to_eof(r.stubborn[0], t0, GRACE_MS + DEATH_BOUND_MS);
                if (took < 0) {
                    run_cleanup(&r);
                    fail_msg("a daemon ignoring SIGTERM outlived its parent's exit by %d ms",
                             GRACE_MS + DEATH_BOUND_MS);
                }
                print_message("variant %d: the daemon ignoring SIGTERM died %lld ms after the "
                              "exit command\n",
                              v, (long long)took);
            }
            reap_middle(&r, 0);
            run_cleanup(&r);
        }
    }
    print_message("%d daemons per parent died at most %lld ms after the exit command\n",
                  DAEMONS + 1, (long long)worst_ms);
}

/* Ends the parent of r by SIGKILL: proc_kill() of the libproc child (v 0) or
 * kill() of the root process (v 1). */
static void kill_parent(struct run *r, int v)
{
    if (v == 0)
        EQ(proc_kill(r->p), 0);
    else
        EQ(kill(r->root, SIGKILL), 0);
}

/* Makes the parent of r crash (SIGSEGV), either variant. */
static void crash_parent(struct run *r, int v)
{
    (void)v;
    send_cmd(r, 'c');
}

/* ROUNDS rounds of both variants (v 0: a libproc child, 1: a root process)
 * of a parent of DAEMONS daemons, one of them ignoring SIGTERM, that
 * end(r, v) makes die of a signal (-neg_sig; what): every daemon, the
 * stubborn one included, dies within the bound. Prints the worst delay, the
 * time after which it is counted being `after`. */
static void daemons_die_with_signalled_parent(void (*end)(struct run *r, int v), const char *what,
                                              int neg_sig, const char *after)
{
    worst_ms = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int v = 0; v < 2; v++) {
            struct run r;
            run_start(&r, v == 1, DAEMONS, false, false, true);
            int64_t t0 = tu_now_ms();
            end(&r, v);
            expect_daemons_gone(&r, t0, what);
            EQ(ms_to_eof(r.stubborn[0], t0, DEATH_BOUND_MS) >= 0, 1);
            reap_middle(&r, neg_sig);
            run_cleanup(&r);
        }
    }
    print_message("daemons died at most %lld ms after %s\n", (long long)worst_ms, after);
}

TEST_CASE(test_daemons_die_with_killed_parent, daemons_die_with_signalled_parent, kill_parent,
          "SIGKILL of the parent", -SIGKILL, "their parent's SIGKILL")

TEST_CASE(test_daemons_die_with_crashed_parent, daemons_die_with_signalled_parent, crash_parent,
          "crash of the parent", -SIGSEGV, "their parent crashed (SIGSEGV)")

/* Daemons started from a thread that has exited (fully: its task is gone)
 * still live; they die with the parent, normally exiting or killed. */
static void test_daemons_from_exited_thread(void **state)
{
    (void)state;
    worst_ms = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int v = 0; v < 3; v++) { /* 0 normal exit, 1 SIGKILL, 2 root process exit() */
            struct run r;
            reaper_first = round % 2 == 1; /* else the short-lived thread starts the reaper */
            run_start(&r, v == 2, DAEMONS, true, false, false);
            /* every daemon still exists... */
            for (int i = 0; i < r.ndaemon_pids; i++) {
                int pfd = st_pidfd_open(r.daemons[i]);
                if (pfd < 0) {
                    run_cleanup(&r);
                    fail_msg("daemon %d (pid %d) is gone after its starting thread exited", i,
                             (int)r.daemons[i]);
                }
                int exited = tu_wait_readable(pfd, 0);
                close(pfd);
                if (exited != 0) {
                    run_cleanup(&r);
                    fail_msg("daemon %d (pid %d) died with the thread that started it", i,
                             (int)r.daemons[i]);
                }
            }
            /* ...and works: round trips through the first one */
            for (char c = 'a'; c < 'e'; c++) {
                char back = 0;
                EQ(tu_write_full(r.ping[1], &c, 1), 0);
                if (tu_read_full(r.pong[0], &back, 1, 10000) != 1) {
                    run_cleanup(&r);
                    fail_msg("daemon does not answer after its starting thread exited");
                }
                EQ(back, c + 1);
            }
            int64_t t0 = tu_now_ms();
            if (v == 1)
                EQ(proc_kill(r.p), 0);
            else
                send_cmd(&r, 'e');
            expect_daemons_gone(&r, t0, "end of the parent of thread-started daemons");
            reap_middle(&r, v == 1 ? -SIGKILL : 0);
            run_cleanup(&r);
        }
    }
    print_message("thread-started daemons outlived their thread, then died at most %lld ms "
                  "after their parent\n",
                  (long long)worst_ms);
}

/* A parent that exits normally waits for its non-daemonic children. */
static void test_nondaemons_waited_for_at_exit(void **state)
{
    (void)state;
    for (int round = 0; round < ROUNDS; round++) {
        for (int v = 0; v < 3; v++) { /* libproc child returning; root exit(); root return */
            struct run r;
            run_start(&r, v > 0, 0, false, true, false);
            send_cmd(&r, v == 2 ? 'r' : 'e');
            struct report y;
            EQ(tu_read_full(r.report[0], &y, sizeof y, 30000), sizeof y);
            EQ(y.tag, 'y');
            /* the parent has begun its exit and must now block waiting for its children */
            pid_t mid_pid = r.p ? proc_pid(r.p) : r.root;
            int64_t deadline = tu_now_ms() + 10000;
            char st;
            while ((st = tu_state(mid_pid)) != 'S' && st != 'Z' && st != 0 &&
                   tu_now_ms() < deadline)
                sched_yield();
            if (st != 'S') {
                run_cleanup(&r);
                fail_msg("variant %d: the exiting parent did not wait for its non-daemonic "
                         "children (state '%c')",
                         v, st ? st : '-');
            }
            close_fd(&r.gate[1]); /* release them */
            int seen[NONDAEMONS] = {0};
            for (int i = 0; i < NONDAEMONS; i++) {
                struct report rep;
                EQ(tu_read_full(r.report[0], &rep, sizeof rep, 30000), sizeof rep);
                EQ(rep.tag, 'n');
                /* 10 + i: the child still had its parent when released */
                if (rep.value < 10 || rep.value >= 10 + NONDAEMONS)
                    fail_msg("variant %d: a non-daemonic child ended with %d (99: its parent "
                             "had already gone)",
                             v, rep.value);
                seen[rep.value - 10]++;
            }
            for (int i = 0; i < NONDAEMONS; i++)
                EQ(seen[i], 1);
            reap_middle(&r, 0);
            run_cleanup(&r);
        }
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct rlimit core = {0, 0}; /* the crashing middles write no core file */
    setrlimit(RLIMIT_CORE, &core);
    st_sub_dispatch(argc, argv, 120, (const struct st_sub[]){{"root", sub_root}, {NULL, NULL}});
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_daemons_die_at_normal_exit, teardown),
        cmocka_unit_test_teardown(test_daemons_die_with_killed_parent, teardown),
        cmocka_unit_test_teardown(test_daemons_die_with_crashed_parent, teardown),
        cmocka_unit_test_teardown(test_daemons_from_exited_thread, teardown),
        cmocka_unit_test_teardown(test_nondaemons_waited_for_at_exit, teardown),
    };
    return cmocka_run_group_tests_name("stress_death", tests, NULL, NULL);
}
