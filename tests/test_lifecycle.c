/* SPDX-License-Identifier: MIT */
/*
 * Tests for the lifecycle area (src/lifecycle.c): fork safety, at-exit work
 * (waiting for non-daemonic children, terminating daemonic ones), daemons and
 * parent death, daemons started from short-lived threads, proc_current() and
 * proc_parent() in children, and fd hygiene.
 *
 * Many tests use a "middle" process (a libproc child of the test) that starts a
 * grandchild. Processes report through pipes; a process that must stay alive
 * blocks in read() or pause(). "The grandchild is gone" is observed as EOF on a
 * pipe whose write end only the grandchild holds, bounded by poll().
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

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "testcheck.h"

/* ------------------------------------------------------------------ helpers */

#define CHILD_ALARM_S 30

static int no_children_left(void **state)
{
    (void)state;
    return check_no_children_left(3000);
}

/* How many of our fds are libproc-style kernel objects (pidfd, epoll, eventfd,
 * signalfd: "anon_inode:..." links). This test program opens none itself, so in
 * a fresh child any such fd was inherited from the parent's libproc. */
static int count_anon_inode_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], link[256];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len <= 0)
            continue;
        link[len] = '\0';
        if (strncmp(link, "anon_inode:", 11) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static int return_code_main(void *arg)
{
    return (int)(intptr_t)arg;
}

/* ------------------------------------------------------------ fork safety */

#define CHURN_THREADS 3
#define HOST_FORKS 50

static atomic_bool g_stop;
static atomic_int g_churn_iters;
static atomic_int g_churn_errors;

static void *churn_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        proc_t *p = proc_new(return_code_main, (void *)(intptr_t)3);
        if (!p) {
            atomic_fetch_add(&g_churn_errors, 1);
            continue;
        }
        (void)proc_set_name(p, "churn");
        if (proc_start(p) != 0 || proc_join(p, 10000) != 0 || proc_exitcode(p) != 3)
            atomic_fetch_add(&g_churn_errors, 1);
        (void)proc_active_children(NULL, 0);
        (void)proc_current();
        if (proc_close(p) != 0)
            atomic_fetch_add(&g_churn_errors, 1);
        atomic_fetch_add(&g_churn_iters, 1);
    }
    return NULL;
}

/* Runs in a host-forked child: returns 42 when libproc works there. */
static int forked_child_check(void)
{
    if (count_anon_inode_fds() != 0)
        return 9; /* the parent's pidfds / reaper fds leaked into the child */
    if (proc_active_children(NULL, 0) != 0)
        return 10;
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)7);
    if (!p)
        return 11;
    if (proc_start(p) != 0)
        return 12;
    if (proc_join(p, 10000) != 0)
        return 13;
    if (proc_exitcode(p) != 7)
        return 14;
    if (proc_active_children(NULL, 0) != 0)
        return 15;
    if (proc_close(p) != 0)
        return 16;
    return 42;
}

static void test_fork_while_threads_use_libproc(void **state)
{
    (void)state;
    SKIP_IF_ALLOCATOR_FORK_UNSAFE();
    atomic_store(&g_stop, false);
    atomic_store(&g_churn_iters, 0);
    atomic_store(&g_churn_errors, 0);
    pthread_t th[CHURN_THREADS];
    for (int i = 0; i < CHURN_THREADS; i++)
        EQ(pthread_create(&th[i], NULL, churn_main, NULL), 0);
    int64_t deadline = tu_now_ms() + 10000;
    while (atomic_load(&g_churn_iters) < CHURN_THREADS && tu_now_ms() < deadline)
        sched_yield();

    int bad_iter = -1, bad_status = 0;
    for (int i = 0; i < HOST_FORKS && bad_iter < 0; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(20); /* a deadlock here becomes SIGALRM, not a hang */
            _exit(forked_child_check());
        }
        if (pid < 0) {
            bad_iter = i;
            bad_status = -errno;
            break;
        }
        int st;
        pid_t r;
        do {
            r = waitpid(pid, &st, 0);
        } while (r < 0 && errno == EINTR);
        if (r != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 42) {
            bad_iter = i;
            bad_status = r == pid ? st : -1;
        }
    }
    atomic_store(&g_stop, true);
    for (int i = 0; i < CHURN_THREADS; i++)
        EQ(pthread_join(th[i], NULL), 0);
    if (bad_iter >= 0)
        fail_msg("host fork #%d: child status %#x (exit %d, signal %d; exit 42 is success, "
                 "SIGALRM(14) means it deadlocked)",
                 bad_iter, bad_status, WIFEXITED(bad_status) ? WEXITSTATUS(bad_status) : -1,
                 WIFSIGNALED(bad_status) ? WTERMSIG(bad_status) : 0);
    EQ(atomic_load(&g_churn_errors), 0);
    assert_true(atomic_load(&g_churn_iters) >= CHURN_THREADS);
}

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
    EQ(tu_read_full(out[0], &c, 1, 10000), 1);
    EQ(c, 'M');
    /* the middle has called exit(0) but must wait for its grandchild */
    EQ(proc_join(m, 300), -ETIMEDOUT);
    assert_true(proc_is_alive(m));
    EQ(tu_wait_readable(out[0], 0), 0); /* the grandchild has not written yet */

    EQ(tu_write_full(rel[1], "x", 1), 0); /* release the grandchild */
    EQ(proc_join(m, 10000), 0);
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
    EQ(proc_join(m, 10000), 0); /* exit() finished: one grace period at most */
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
    if (tu_read_full(a->ready_r, &dpid, sizeof dpid, 10000) != (ssize_t)sizeof dpid ||
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
    EQ(tu_read_full(out[0], &dpid, sizeof dpid, 10000), sizeof dpid);
    assert_true(dpid > 0);
    int64_t t0 = tu_now_ms();
    EQ(proc_join(m, 10000), 0);
    EQ(proc_exitcode(m), 0);
    int64_t took = tu_now_ms() - t0;
    if (took > 5000)
        fail_msg("the middle process took %lld ms to exit", (long long)took);
    /* the daemon is dead: EOF on the pipe only it held */
    if (!tu_eof_within(out[0], 3000))
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
    EQ(tu_read_full(out[0], &dpid, sizeof dpid, 10000), sizeof dpid);
    assert_true(dpid > 0);
    assert_true(proc_is_alive(m));
    EQ(proc_kill(m), 0);
    EQ(proc_join(m, 10000), 0);
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
    EQ(tu_read_full(stat[0], &rc, sizeof rc, 10000), sizeof rc);
    EQ(tu_read_full(stat[0], &dpid, sizeof dpid, 10000), sizeof dpid);
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
    EQ(proc_join(m, 10000), 0);
    EQ(proc_exitcode(m), -SIGKILL);
    if (!tu_eof_within(pong[0], 2000))
        fail_msg("daemon %d survived its parent's SIGKILL for 2 s", (int)dpid);
    EQ(proc_close(m), 0);
    close_fd(&ping[1]);
    close_fd(&pong[0]);
    close_fd(&stat[0]);
    close_fd(&hold[1]);
}

/* --------------------------------------------- proc_current / proc_parent */

struct cur {
    char name[64];
    bool daemon;
    unsigned char key[256];
    size_t keylen;
    char pname[64];
    pid_t ppid;
};

static int cur_child(void *arg)
{
    struct cur *a = arg;
    alarm(CHILD_ALARM_S);
    if (count_anon_inode_fds() != 0)
        return 9; /* the parent's pidfds / reaper fds leaked into the child */
    proc_t *me = proc_current();
    if (!me)
        return 10;
    const char *name = proc_name(me);
    if (!name || strcmp(name, a->name) != 0)
        return 11;
    if (proc_daemon(me) != a->daemon)
        return 12;
    size_t len = 0;
    const unsigned char *k = proc_authkey(me, &len);
    if (!k || len != a->keylen || memcmp(k, a->key, len) != 0)
        return 13;
    if (proc_pid(me) != getpid())
        return 14;
    if (!proc_is_alive(me))
        return 15;
    if (proc_join(me, 0) != -EDEADLK)
        return 16;
    if (proc_close(me) != -EINVAL)
        return 17;
    if (proc_current() != me)
        return 18;

    proc_t *par = proc_parent();
    if (!par)
        return 20;
    const char *pname = proc_name(par);
    if (!pname || strcmp(pname, a->pname) != 0)
        return 21;
    if (proc_pid(par) != a->ppid || getppid() != a->ppid)
        return 22;
    if (!proc_is_alive(par))
        return 23;
    if (proc_close(par) != -EINVAL)
        return 24;

    if (a->daemon) {
        proc_t *g = proc_new(NULL, NULL);
        if (!g)
            return 30;
        if (proc_start(g) != -EPERM)
            return 31;
        if (proc_close(g) != 0)
            return 32;
    }
    return 0;
}

static void run_cur_child(proc_t *p)
{
    EQ(proc_start(p), 0);
    EQ(proc_join(p, 10000), 0);
    int ec = proc_exitcode(p);
    if (ec != 0)
        fail_msg("child check failed with code %d (9 inherited libproc fds, 11 name, "
                 "12 daemon, 13 authkey, 14 pid, 15 alive, 16 join self, 17 close self, "
                 "18 identity, 20 no parent, 21 parent name, 22 parent pid, 23 parent alive, "
                 "24 close parent, 31 daemon could start a child)",
                 ec);
    EQ(proc_close(p), 0);
}

static void test_current_and_parent_in_child(void **state)
{
    (void)state;
    assert_null(proc_parent()); /* this test program is a root process */
    proc_t *main_cur = proc_current();
    assert_non_null(main_cur);
    assert_string_equal(proc_name(main_cur), "MainProcess");
    EQ(proc_pid(main_cur), getpid());

    /* explicit settings */
    struct cur a;
    memset(&a, 0, sizeof a);
    strcpy(a.name, "worker-A");
    a.daemon = true;
    memcpy(a.key, "0123456789abcdef", 16);
    a.keylen = 16;
    strcpy(a.pname, proc_name(main_cur));
    a.ppid = getpid();
    proc_t *p = proc_new(cur_child, &a);
    assert_non_null(p);
    EQ(proc_set_name(p, a.name), 0);
    EQ(proc_set_daemon(p, true), 0);
    EQ(proc_set_authkey(p, a.key, a.keylen), 0);
    run_cur_child(p);

    /* defaults: the parent's authkey, not daemonic, the default name */
    struct cur b;
    memset(&b, 0, sizeof b);
    size_t klen = 0;
    const unsigned char *k = proc_authkey(main_cur, &klen);
    assert_non_null(k);
    EQ(klen, 32);
    memcpy(b.key, k, klen);
    b.keylen = klen;
    b.daemon = false;
    strcpy(b.pname, proc_name(main_cur));
    b.ppid = getpid();
    proc_t *q = proc_new(cur_child, &b);
    assert_non_null(q);
    assert_non_null(proc_name(q));
    snprintf(b.name, sizeof b.name, "%s", proc_name(q));
    run_cur_child(q);
}

/* ---------------------- a grandchild sees its parent die via proc_parent() */

struct pv {
    int rep_r, rep_w;   /* grandchild -> test */
    int go_r, go_w;     /* test -> grandchild: "your parent is dead now" */
    int hold_r, hold_w; /* keeps the middle blocked */
};

static int pv_grandchild(void *arg)
{
    struct pv *a = arg;
    char c;
    alarm(CHILD_ALARM_S);
    proc_t *par = proc_parent();
    char r1 = '1';
    if (!par)
        r1 = 'n';
    else if (strcmp(proc_name(par), "pv-middle") != 0)
        r1 = 'm';
    else if (proc_pid(par) != getppid())
        r1 = 'p';
    else if (!proc_is_alive(par))
        r1 = '0';
    if (0 != tu_write_full(a->rep_w, &r1, 1))
        return 1;
    if (read_retry(a->go_r, &c, 1) != 1)
        return 2;
    int64_t deadline = tu_now_ms() + 3000;
    bool alive;
    while ((alive = proc_is_alive(par)) && tu_now_ms() < deadline)
        sched_yield();
    char r2 = alive ? '1' : '0';
    return tu_write_full(a->rep_w, &r2, 1) == 0 ? 0 : 3;
}

static int pv_middle(void *arg)
{
    struct pv *a = arg;
    char c;
    alarm(CHILD_ALARM_S);
    close(a->rep_r);
    close(a->go_w);
    close(a->hold_w);
    proc_t *g = proc_new(pv_grandchild, a);
    if (!g || proc_start(g) != 0) {
        (void)tu_write_full(a->rep_w, "E", 1);
        return 3;
    }
    close(a->rep_w);
    (void)read_retry(a->hold_r, &c, 1); /* the test SIGKILLs us here */
    return 0;
}

static void test_grandchild_sees_parent_death(void **state)
{
    (void)state;
    int rep[2], go[2], hold[2];
    make_pipe(rep);
    make_pipe(go);
    make_pipe(hold);
    struct pv a = {rep[0], rep[1], go[0], go[1], hold[0], hold[1]};
    proc_t *m = proc_new(pv_middle, &a);
    assert_non_null(m);
    EQ(proc_set_name(m, "pv-middle"), 0);
    EQ(proc_start(m), 0);
    close_fd(&rep[1]);
    close_fd(&go[0]);
    close_fd(&hold[0]);

    char r = 0;
    EQ(tu_read_full(rep[0], &r, 1, 10000), 1);
    if (r != '1')
        fail_msg("grandchild's first view of proc_parent(): '%c' (n: NULL, m: wrong name, "
                 "p: wrong pid, 0: not alive)",
                 r);
    EQ(proc_kill(m), 0);
    EQ(proc_join(m, 10000), 0);
    EQ(proc_exitcode(m), -SIGKILL);
    EQ(tu_write_full(go[1], "g", 1), 0);
    r = 0;
    EQ(tu_read_full(rep[0], &r, 1, 10000), 1);
    if (r != '0')
        fail_msg("grandchild's proc_parent() still alive 3 s after the parent was killed");
    assert_true(tu_eof_within(rep[0], 5000)); /* the grandchild has finished */
    EQ(proc_close(m), 0);
    close_fd(&rep[0]);
    close_fd(&go[1]);
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
    if (tu_read_full(ready[0], &dpid, sizeof dpid, 10000) != (ssize_t)sizeof dpid)
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
    EQ(tu_read_full(dmn[0], &dpid, sizeof dpid, 10000), sizeof dpid);
    EQ(tu_read_full(out[0], &c, 1, 10000), 1);
    EQ(c, 'M');
    /* main has returned: the daemon is terminated ... */
    if (!tu_eof_within(dmn[0], 3000))
        fail_msg("daemonic child %d still alive 3 s after main returned", (int)dpid);
    /* ... but the process waits for its non-daemonic child */
    EQ(tu_wait_readable(out[0], 300), 0);
    EQ(waitpid(pid, &st, WNOHANG), 0);

    EQ(tu_write_full(rel[1], "x", 1), 0); /* release the non-daemonic child */
    EQ(tu_read_full(out[0], &c, 1, 10000), 1);
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

/* ------------------------------------------------------------ fd hygiene */

static void cycle_once(proc_t *p, int code)
{
    assert_non_null(p);
    EQ(proc_start(p), 0);
    EQ(proc_join(p, 10000), 0);
    EQ(proc_exitcode(p), code);
    EQ(proc_close(p), 0);
}

static void test_fd_count_stable(void **state)
{
    (void)state;
    cycle_once(proc_new(NULL, NULL), 0); /* the reaper may open its fds lazily */
    int before = tu_count_fds();
    assert_true(before > 0);
    for (int i = 0; i < 200; i++)
        cycle_once(proc_new(return_code_main, (void *)(intptr_t)(i & 0x7f)), i & 0x7f);
    EQ(tu_count_fds(), before);

    static const char *const argv_true[] = {"true", NULL};
    cycle_once(proc_new_exec(argv_true), 0);
    before = tu_count_fds();
    for (int i = 0; i < 50; i++)
        cycle_once(proc_new_exec(argv_true), 0);
    EQ(tu_count_fds(), before);

    /* objects closed without join after the end, and never-started objects */
    for (int i = 0; i < 20; i++) {
        proc_t *p = proc_new(NULL, NULL);
        assert_non_null(p);
        EQ(proc_close(p), 0);
    }
    EQ(tu_count_fds(), before);
}

/* The whole suite again on the library's pidfd-less paths (its testing switch
 * LIBPROC_DISABLE_PIDFD=1). */
static void test_all_again_without_pidfd(void **state)
{
    (void)state;
    if (getenv("LIBPROC_DISABLE_PIDFD"))
        skip(); /* this is the re-run */
    run_self("test_lifecycle", NULL, true);
}

/* ----------------------------------------------------------- group setup */

static void settle_cb(proc_t *p, void *arg)
{
    (void)p;
    (void)arg;
}

/*
 * Under a sanitizer runtime whose allocator is not fork-safe
 * (TU_ALLOCATOR_FORK_UNSAFE), the first proc_start() creates libproc's reaper
 * thread and forks at once; the sanitizer's setup of that new thread
 * allocates, and a fork at that moment leaves the allocator's lock held in the
 * child, where the child's own reaper thread and LeakSanitizer's check at
 * exit() then block for ever. The middles of the at-exit tests are such
 * children, so there the reaper is brought up first: an exec'd child (no fork
 * copy of the allocator) with an exit callback, joined, proves that the reaper
 * thread is past its setup, since callbacks run on it. Elsewhere nothing is
 * done, and the first test's start is the process's first start.
 */
static int settle_reaper(void **state)
{
    (void)state;
    if (!TU_ALLOCATOR_FORK_UNSAFE)
        return 0;
    print_message("note: this sanitizer runtime is not fork-safe: libproc's reaper is "
                  "started before the first test\n");
    static const char *const argv_true[] = {"true", NULL};
    proc_t *p = proc_new_exec(argv_true);
    if (!p || proc_on_exit(p, settle_cb, NULL) != 0 || proc_start(p) != 0 ||
        proc_join(p, 10000) != 0 || proc_close(p) != 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--sub") == 0)
        return strcmp(argv[2], "atexit-root") == 0 ? sub_atexit_root() : 2;
    const struct CMUnitTest tests[] = {
        T(test_fork_while_threads_use_libproc), T(test_at_exit_waits_for_nondaemonic_children),
        T(test_at_exit_terminates_daemons),     T(test_at_exit_refuses_restarts),
        T(test_parent_death_kills_daemon),      T(test_daemon_from_short_lived_thread),
        T(test_current_and_parent_in_child),    T(test_grandchild_sees_parent_death),
        T(test_at_exit_of_root_process),        T(test_fd_count_stable),
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, settle_reaper, NULL);
}
