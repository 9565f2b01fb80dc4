/* SPDX-License-Identifier: MIT */
/*
 * The lifecycle area (src/fork.c) across fork: fork safety (a host
 * fork() while threads use libproc, and of a process without threads),
 * proc_current() and proc_parent() in children, a grandchild seeing its
 * parent die, and fd hygiene.
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

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "testcheck.h"

/* ------------------------------------------------------------------ helpers */

#define CHILD_ALARM_S 30

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
        tu_fork_gate_enter(); /* see TU_FORK_GATE: a no-op but under old ThreadSanitizers */
        proc_t *p = proc_new(return_code_main, (void *)(intptr_t)3);
        if (p)
            (void)proc_set_name(p, "churn");
        int r = p ? proc_start(p) : -ENOMEM;
        tu_fork_gate_leave();
        if (r != 0 || proc_join(p, 10000) != 0 || proc_exitcode(p) != 3)
            atomic_fetch_add(&g_churn_errors, 1);
        (void)proc_active_children(NULL, 0);
        (void)proc_current();
        tu_fork_gate_enter();
        if (p && proc_close(p) != 0)
            atomic_fetch_add(&g_churn_errors, 1);
        tu_fork_gate_leave();
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
    SKIP_IF_HOST_FORK_UNSAFE();
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
        pid_t pid = tu_fork_gated();
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

/* ----------------------------------------- fork of a single-threaded process */

/*
 * --sub single-threaded-fork: a fresh process that has set libproc up but runs
 * no thread yet forks (the fork handlers hold libproc's lock across it), its
 * fork child starts and joins a child of its own (whose reaper thread takes
 * that lock), and then the parent starts its first child.
 */
static int sub_single_threaded_fork(void)
{
    /* static: the fork child's copy stays reachable (valgrind's leak check at
     * its _exit() would count a copy held only in a dead register as lost) */
    static proc_t *p;
    p = proc_new(return_code_main, (void *)(intptr_t)5); /* set up, no thread */
    if (!p)
        return 2;
    pid_t pid = fork();
    if (pid == 0) {
        alarm(CHILD_ALARM_S);
        proc_t *c = proc_new(return_code_main, (void *)(intptr_t)7);
        bool ok = c && proc_start(c) == 0 && proc_join(c, 10000) == 0 && proc_exitcode(c) == 7;
        _exit(ok && proc_close(c) == 0 ? 0 : 3);
    }
    int st = 0;
    if (pid < 0 || tu_waitpid(pid, &st) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "the fork child failed: status %#x\n", st);
        return 3;
    }
    /* the parent's own first start, after the fork */
    if (proc_start(p) != 0 || proc_join(p, 10000) != 0 || proc_exitcode(p) != 5)
        return 4;
    return proc_close(p) == 0 ? 0 : 5;
}

TEST_CASE(test_fork_of_a_single_threaded_process, run_self, "test_lifecycle_fork",
          "single-threaded-fork", false)

/* The whole suite again on the library's pidfd-less paths (its testing switch
 * LIBPROC_DISABLE_PIDFD=1). */
TEST_ALL_AGAIN_WITHOUT_PIDFD("test_lifecycle_fork")

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, no_children_left)

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--sub") == 0) {
        alarm(2 * CHILD_ALARM_S); /* a hang in a sub-test shows up as a failure */
        return strcmp(argv[2], "single-threaded-fork") == 0 ? sub_single_threaded_fork() : 2;
    }
    const struct CMUnitTest tests[] = {
        T(test_fork_while_threads_use_libproc),    T(test_current_and_parent_in_child),
        T(test_grandchild_sees_parent_death),      T(test_fd_count_stable),
        T(test_fork_of_a_single_threaded_process), T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, settle_reaper, NULL);
}
