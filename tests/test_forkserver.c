/* SPDX-License-Identifier: MIT */
/*
 * The fork server (API 4.6; src/forkserver.c, src/forkserver_client.c):
 * starts through it keep every guarantee of a forked child (exit codes,
 * join, sentinel, exit callbacks, proc_active_children(), the child's name,
 * authkey, daemon flag and parent, the caller as its real parent, cwd, env,
 * standard streams, signal mask, robust locks), the argument travels as
 * bytes up to 64 MiB, a thread's locks do not reach its children, and the
 * server's death, -EBUSY, -ENOTCONN and -EALREADY are as documented.
 *
 * main() starts the server before anything else, so that no thread exists
 * yet (cmocka creates none). The cases that need a process of their own (no
 * server, a thread at the start, the server killed, the caller killed, a
 * thread holding locks for good) run in a fresh copy of this program
 * ("--sub <mode>", started by run_self()). The server's children have only
 * the fds they are given, so they report through their standard streams.
 * Nothing waits by the clock; timeouts only bound hangs.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "testutil.h"
#include "testcheck.h"

#define BOUND_MS 10000 /* bound on any hang; never reached when things work */
#define MiB ((size_t)1 << 20)
#define SELF "test_forkserver"
#ifdef TU_TSAN
#define UNDER_TSAN 1 /* see start_again() */
#else
#define UNDER_TSAN 0
#endif

static pid_t server_pid;    /* this process's server (main() started it), or 0 */
static proc_lock_t *g_lock; /* made before the server, so its children have it */
static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static FILE *g_stream; /* opened before the server, ditto */

/* ------------------------------------------------------------- helpers */

/* Our children (any state) other than keep; *last gets one of them. */
static int children_except(pid_t keep, pid_t *last)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    int n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        char state;
        pid_t ppid;
        if (pid <= 0 || pid == keep || tu_proc_state(pid, &state, &ppid) < 0 || ppid != getpid())
            continue;
        if (last)
            *last = pid;
        n++;
    }
    closedir(d);
    return n;
}

/* The server just started: this process's only child. */
static pid_t find_server(void)
{
    pid_t pid = 0;
    return children_except(0, &pid) == 1 ? pid : 0;
}

/* Teardown: no child is left but the server (the gap between an exit and its reaping allowed). */
static int only_server_left(void **state)
{
    (void)state;
    int64_t deadline = tu_now_ms() + 3000;
    int n;
    while ((n = children_except(server_pid, NULL)) != 0 && tu_now_ms() < deadline)
        sched_yield();
    if (n != 0)
        print_error("test left %d child process(es) behind\n", n);
    return n == 0 ? 0 : -1;
}

static proc_t *served(proc_target_fn *fn, void *arg)
{
    proc_t *p = proc_new(fn, arg);
    assert_non_null(p);
    EQ(proc_set_forkserver(p, true), 0);
    return p;
}

/* Starts p, joins it and returns its exit code; p is closed. */
static int run_to_end(proc_t *p)
{
    EQ(proc_start(p), 0);
    EQ(proc_join(p, BOUND_MS), 0);
    int code = proc_exitcode(p);
    EQ(proc_close(p), 0);
    return code;
}

/* Runs p with its stdout on a pipe and reads its whole report of len bytes. */
static int run_reporting(proc_t *p, void *report, size_t len)
{
    EQ(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    EQ(proc_start(p), 0);
    EQ(tu_read_full(proc_stdio_fd(p, 1), report, len, BOUND_MS), (ssize_t)len);
    EQ(proc_join(p, BOUND_MS), 0);
    int code = proc_exitcode(p);
    EQ(proc_close(p), 0);
    return code;
}

static int report(const void *rec, size_t len)
{
    return tu_write_full(1, rec, len) == 0 ? 0 : 99;
}

/* ------------------------------------------------------------- targets */

/* The exit codes the tests pass: the server's children see only memory the
 * server had, so an argument without a copy points at static data. */
static const int zero = 0, seven = 7, nine = 9, term = SIGTERM, abrt = SIGABRT;

static int ret_int(void *arg)
{
    return *(const int *)arg;
}

static int die_by(void *arg)
{
    raise(*(const int *)arg);
    return 99;
}

static int exit_now(void *arg)
{
    exit(*(const int *)arg);
}

static int read_stdin_to_eof(void *arg)
{
    (void)arg;
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 3;
}

static int pause_forever(void *arg)
{
    (void)arg;
    while (pause() < 0) /* only a signal ends it */
        ;
    return 0;
}

/* Echoes one byte from stdin to stdout, then waits for EOF on stdin. */
static int echo_then_wait(void *arg)
{
    char c;
    if (read(0, &c, 1) != 1 || write(1, &c, 1) != 1)
        return 98;
    return read_stdin_to_eof(arg);
}

/* The bytes of an argument of len bytes (>= 16): its length, then a pattern. */
static unsigned char pattern_byte(size_t i)
{
    return (unsigned char)((i * 2654435761U) >> 13);
}

static unsigned char *make_arg(size_t len)
{
    unsigned char *b = malloc(len);
    assert_non_null(b);
    uint64_t n = len;
    memcpy(b, &n, sizeof n);
    for (size_t i = sizeof n; i < len; i++)
        b[i] = pattern_byte(i);
    return b;
}

/* 0 when arg holds make_arg()'s bytes, 1 when they differ, 2 when misaligned. */
static int check_arg(void *arg)
{
    if ((uintptr_t)arg % 16 != 0)
        return 2;
    const unsigned char *b = arg;
    uint64_t n;
    memcpy(&n, b, sizeof n);
    for (size_t i = sizeof n; i < n; i++)
        if (b[i] != pattern_byte(i))
            return 1;
    ((unsigned char *)arg)[n - 1] ^= 1; /* the copy is writable */
    return 0;
}

static int check_one_byte(void *arg)
{
    return *(const unsigned char *)arg == 0xa5 ? 0 : 1;
}

/* ------------------------------------------------------- exit and join */

static void test_exit_codes(void **state)
{
    (void)state;
    EQ(run_to_end(served(NULL, NULL)), 0);
    EQ(run_to_end(served(ret_int, (void *)&zero)), 0);
    EQ(run_to_end(served(ret_int, (void *)&seven)), 7);
    EQ(run_to_end(served(exit_now, (void *)&nine)), 9);
    EQ(run_to_end(served(die_by, (void *)&term)), -SIGTERM);
    EQ(run_to_end(served(die_by, (void *)&abrt)), -SIGABRT);
    /* A pointer into memory made after the server started needs a copy. */
    int eight = 8;
    proc_t *c = served(ret_int, NULL);
    EQ(proc_set_arg_copy(c, &eight, sizeof eight), 0);
    EQ(run_to_end(c), 8);
    proc_t *p = served(read_stdin_to_eof, NULL);
    EQ(proc_set_stdio(p, 0, PROC_STDIO_PIPE), 0);
    EQ(proc_start(p), 0);
    EQ(proc_kill(p), 0);
    EQ(proc_join(p, BOUND_MS), 0);
    EQ(proc_exitcode(p), -SIGKILL);
    EQ(proc_close(p), 0);
}

static void count_cb(proc_t *p, void *arg)
{
    (void)p;
    (*(int *)arg)++;
}

static void test_join_sentinel_children(void **state)
{
    (void)state;
    int calls = 0;
    proc_t *p = served(read_stdin_to_eof, NULL);
    EQ(proc_set_stdio(p, 0, PROC_STDIO_PIPE), 0);
    EQ(proc_on_exit(p, count_cb, &calls), 0);
    EQ(proc_start(p), 0);
    assert_true(proc_pid(p) > 0);
    assert_true(proc_is_alive(p));
    EQ(tu_child_state(proc_pid(p)) != 0, 1); /* the caller's own child */
    proc_t *kids[4];
    EQ(proc_active_children(kids, 4), 1);
    assert_ptr_equal(kids[0], p);
    int fd = proc_sentinel(p);
    assert_true(fd >= 0);
    EQ(tu_poll_in(fd, 0, NULL), 0);
    EQ(proc_join(p, 0), -ETIMEDOUT);
    EQ(proc_stdio_close(p, 0), 0); /* EOF: the child returns 3 */
    EQ(tu_poll_in(fd, BOUND_MS, NULL), 1);
    EQ(proc_join(p, 0), 0);
    EQ(proc_exitcode(p), 3);
    EQ(calls, 1);
    struct rusage ru;
    EQ(proc_rusage(p, &ru), 0);
    assert_false(proc_is_alive(p));
    EQ(proc_active_children(NULL, 0), 0);
    proc_t *const one[] = {p};
    EQ(proc_wait_any(one, 1, 0), 0);
    EQ(proc_close(p), 0);
}

/* A daemon asked for by a short-lived thread outlives that thread. */
static void *start_daemon_thread(void *arg)
{
    return (void *)(intptr_t)proc_start(arg);
}

static void test_daemon_from_thread(void **state)
{
    (void)state;
    proc_t *p = served(echo_then_wait, NULL);
    EQ(proc_set_daemon(p, true), 0);
    EQ(proc_set_stdio(p, 0, PROC_STDIO_PIPE), 0);
    EQ(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    pthread_t t;
    void *r = NULL;
    EQ(pthread_create(&t, NULL, start_daemon_thread, p), 0);
    EQ(pthread_join(t, &r), 0);
    EQ((intptr_t)r, 0);
    char c = 'x';
    EQ(tu_write_full(proc_stdio_fd(p, 0), &c, 1), 0);
    c = 0;
    EQ(tu_read_full(proc_stdio_fd(p, 1), &c, 1, BOUND_MS), 1);
    EQ(c, 'x');
    EQ(proc_stdio_close(p, 0), 0);
    EQ(proc_join(p, BOUND_MS), 0);
    EQ(proc_exitcode(p), 3);
    EQ(proc_close(p), 0);
}

/* ------------------------------------------------------------ argument */

static void arg_case(size_t len, bool server)
{
    unsigned char *b = make_arg(len);
    proc_t *p = proc_new(check_arg, NULL);
    assert_non_null(p);
    EQ(proc_set_forkserver(p, server), 0);
    EQ(proc_set_arg_copy(p, b, len), 0);
    memset(b, 0, len); /* copied at the call */
    free(b);
    EQ(run_to_end(p), 0);
}

static void test_arg_copy_sizes(void **state)
{
    (void)state;
    unsigned char one = 0xa5;
    proc_t *p = served(check_one_byte, NULL);
    EQ(proc_set_arg_copy(p, &one, 1), 0);
    EQ(run_to_end(p), 0);
    /* In the message, around the memfd threshold (32 KiB with the names), and in a memfd. */
    const size_t sizes[] = {16, 1000, 32 * 1024 - 512, 32 * 1024, MiB, 64 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        arg_case(sizes[i], true);
    arg_case(MiB, false); /* plain fork mode too */
    p = proc_new(check_arg, NULL);
    assert_non_null(p);
    unsigned char *b = make_arg(64);
    EQ(proc_set_arg_copy(p, b, 64), 0);
    EQ(proc_run(p), 0); /* proc_run passes the copy too */
    EQ(proc_close(p), 0);
    free(b);
}

/* ---------------------------------------------------- what the child is */

struct ident {
    char name[64], parent_name[64], child_name[64];
    unsigned char key[64], parent_key[64];
    size_t key_len, parent_key_len;
    int daemon, parent_alive;
    pid_t self, current, ppid, parent;
};

static void copy_name(char *to, const char *from)
{
    snprintf(to, 64, "%s", from ? from : "(null)");
}

static int ident_main(void *arg)
{
    (void)arg;
    struct ident r;
    memset(&r, 0, sizeof r);
    proc_t *cur = proc_current(), *par = proc_parent();
    if (!cur || !par)
        return 90;
    copy_name(r.name, proc_name(cur));
    copy_name(r.parent_name, proc_name(par));
    const unsigned char *k = proc_authkey(cur, &r.key_len);
    memcpy(r.key, k, r.key_len < 64 ? r.key_len : 64);
    k = proc_authkey(par, &r.parent_key_len);
    memcpy(r.parent_key, k, r.parent_key_len < 64 ? r.parent_key_len : 64);
    r.daemon = proc_daemon(cur);
    r.parent_alive = proc_is_alive(par);
    r.self = getpid();
    r.current = proc_pid(cur);
    r.ppid = getppid();
    r.parent = proc_pid(par);
    proc_t *g = proc_new(NULL, NULL); /* its own first child's name */
    if (!g)
        return 91;
    copy_name(r.child_name, proc_name(g));
    proc_close(g);
    return report(&r, sizeof r);
}

static void expect_ident(const struct ident *r, proc_t *p, const char *name, bool daemon)
{
    assert_string_equal(r->name, name);
    assert_string_equal(r->parent_name, "MainProcess");
    char child[80];
    snprintf(child, sizeof child, "Process-%s:1", name + strlen("Process-"));
    if (strncmp(name, "Process-", 8) == 0)
        assert_string_equal(r->child_name, child);
    EQ(r->daemon, daemon);
    EQ(r->parent_alive, 1);
    EQ(r->self, proc_pid(p));
    EQ(r->current, r->self);
    EQ(r->ppid, getpid()); /* the caller's child, not the server's */
    EQ(r->parent, getpid());
    size_t len;
    const unsigned char *main_key = proc_authkey(proc_current(), &len);
    EQ(r->parent_key_len, len);
    assert_memory_equal(r->parent_key, main_key, len);
}

/* Starts p with its stdout on a pipe, reads its ident report, checks it and joins p. */
static void check_ident(proc_t *p, const char *name, bool daemon, const void *key, size_t len)
{
    struct ident r;
    EQ(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    EQ(proc_start(p), 0);
    EQ(tu_read_full(proc_stdio_fd(p, 1), &r, sizeof r, BOUND_MS), (ssize_t)sizeof r);
    expect_ident(&r, p, name, daemon);
    EQ(r.key_len, len);
    assert_memory_equal(r.key, key, len);
    EQ(proc_join(p, BOUND_MS), 0);
    EQ(proc_exitcode(p), 0);
    EQ(proc_close(p), 0);
}

static void test_identity_in_child(void **state)
{
    (void)state;
    proc_t *p = served(ident_main, NULL);
    char name[64];
    copy_name(name, proc_name(p)); /* Process-N: its own first child is Process-N:1 */
    size_t len;
    const unsigned char *main_key = proc_authkey(proc_current(), &len);
    check_ident(p, name, false, main_key, len);

    static const unsigned char key[16] = "0123456789abcdef";
    p = served(ident_main, NULL);
    EQ(proc_set_name(p, "served-one"), 0);
    EQ(proc_set_authkey(p, key, sizeof key), 0);
    EQ(proc_set_daemon(p, true), 0);
    check_ident(p, "served-one", true, key, sizeof key);
}

/* ------------------------------------------------ what the child inherits */

struct env_report {
    char cwd[256], var[64];
    int env_count, mask_has_usr2;
};

static int env_main(void *arg)
{
    (void)arg;
    extern char **environ;
    struct env_report r;
    memset(&r, 0, sizeof r);
    if (!getcwd(r.cwd, sizeof r.cwd))
        return 90;
    const char *v = getenv("LIBPROC_FS_VAR");
    snprintf(r.var, sizeof r.var, "%s", v ? v : "(unset)");
    while (environ[r.env_count])
        r.env_count++;
    sigset_t mask;
    pthread_sigmask(SIG_SETMASK, NULL, &mask);
    r.mask_has_usr2 = sigismember(&mask, SIGUSR2);
    return report(&r, sizeof r);
}

static void test_cwd_env_mask(void **state)
{
    (void)state;
    struct env_report r;
    char here[256];
    assert_non_null(getcwd(here, sizeof here));
    /* The caller's directory and environment at proc_start(), not at the server's start. */
    EQ(chdir("/"), 0);
    EQ(setenv("LIBPROC_FS_VAR", "late", 1), 0);
    sigset_t usr2, old;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    EQ(pthread_sigmask(SIG_BLOCK, &usr2, &old), 0);
    int code = run_reporting(served(env_main, NULL), &r, sizeof r);
    EQ(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    EQ(chdir(here), 0);
    unsetenv("LIBPROC_FS_VAR");
    EQ(code, 0);
    assert_string_equal(r.cwd, "/");
    assert_string_equal(r.var, "late");
    EQ(r.mask_has_usr2, 1);

    static const char *const env[] = {"LIBPROC_FS_VAR=given", "X=1", NULL};
    proc_t *p = served(env_main, NULL);
    EQ(proc_set_env(p, env), 0);
    EQ(proc_set_cwd(p, "/tmp"), 0);
    EQ(run_reporting(p, &r, sizeof r), 0);
    assert_string_equal(r.var, "given");
    EQ(r.env_count, 2);
    char real[256];
    assert_non_null(realpath("/tmp", real));
    assert_string_equal(r.cwd, real);
    EQ(r.mask_has_usr2, 0);

    /* A bad directory: its errno from proc_start, nothing left running, the object usable. */
    p = served(env_main, NULL);
    EQ(proc_set_cwd(p, "/nonexistent/libproc-forkserver"), 0);
    EQ(proc_start(p), -ENOENT);
    assert_false(proc_is_alive(p));
    EQ(children_except(server_pid, NULL), 0);
    EQ(proc_close(p), 0);
}

/* A robust lock taken and never released by a server child: the kernel
 * marks it for the next owner, which needs the child's thread id right. */
static int take_lock_and_leave(void *arg)
{
    (void)arg;
    return proc_lock_acquire(g_lock, BOUND_MS) == 0 ? 0 : 1;
}

static void test_robust_lock_of_dead_child(void **state)
{
    (void)state;
    EQ(run_to_end(served(take_lock_and_leave, NULL)), 0);
    EQ(proc_lock_acquire(g_lock, BOUND_MS), -EOWNERDEAD);
    EQ(proc_lock_release(g_lock), 0);
}

/* ------------------------------------------------------ bad arguments */

static void test_bad_arguments(void **state)
{
    (void)state;
    unsigned char b[16] = {1};
    EQ(proc_forkserver_start(), -EALREADY);
    EQ(proc_set_forkserver(NULL, true), -EINVAL);
    EQ(proc_set_arg_copy(NULL, b, 1), -EINVAL);
    proc_t *p = proc_new(check_arg, NULL);
    assert_non_null(p);
    EQ(proc_set_arg_copy(p, NULL, 1), -EINVAL);
    EQ(proc_set_arg_copy(p, b, 0), -EINVAL);
    EQ(proc_set_arg_copy(p, b, 64 * MiB + 1),
       -EINVAL); /* never read: the length is checked first */
    EQ(proc_set_arg_copy(p, b, 65 * MiB), -EINVAL);
    EQ(proc_set_arg_copy(p, b, SIZE_MAX), -EINVAL);
    EQ(proc_set_forkserver(proc_current(), true), -EBUSY);
    EQ(proc_set_arg_copy(proc_current(), b, 1), -EBUSY);
    EQ(proc_set_forkserver(p, true), 0);
    EQ(proc_set_forkserver(p, false), 0);
    EQ(proc_close(p), 0);

    /* Started: -EBUSY before anything else. */
    p = served(ret_int, (void *)&zero);
    EQ(proc_start(p), 0);
    EQ(proc_set_forkserver(p, false), -EBUSY);
    EQ(proc_set_arg_copy(p, NULL, 0), -EBUSY);
    EQ(proc_join(p, BOUND_MS), 0);
    EQ(proc_close(p), 0);

    /* Exec mode: no argument copy, and the fork server flag is ignored. */
    static const char *const argv[] = {"true", NULL};
    p = proc_new_exec(argv);
    assert_non_null(p);
    EQ(proc_set_arg_copy(p, b, 1), -EINVAL);
    EQ(proc_set_forkserver(p, true), 0);
    EQ(run_to_end(p), 0);
}

/* ------------------------------------------------- in a process of its own */

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

/* No server: -ENOTCONN, the object stays usable; exec mode does not need one. */
static void sub_no_server(void **state)
{
    (void)state;
    static const char *const argv[] = {"true", NULL};
    proc_t *e = proc_new_exec(argv);
    assert_non_null(e);
    EQ(proc_set_forkserver(e, true), 0);
    EQ(run_to_end(e), 0);
    proc_t *p = served(ret_int, (void *)&seven);
    EQ(proc_start(p), -ENOTCONN);
    assert_false(proc_is_alive(p));
    EQ(settle_reaper(NULL), 0); /* see there: forks must not meet its setup */
    if (start_again())          /* only libproc's reaper runs besides us */
        EQ(run_to_end(p), 7);
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
    EQ(run_to_end(served(ret_int, (void *)&seven)), 7);
}

/* The server SIGKILLed: an error, no hang; then a new server works. */
static void sub_server_killed(void **state)
{
    (void)state;
    EQ(proc_forkserver_start(), 0);
    pid_t srv = find_server();
    assert_true(srv > 0);
    EQ(run_to_end(served(ret_int, (void *)&seven)), 7);
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
        EQ(run_to_end(p), 7);
    else
        EQ(proc_close(p), 0);
}

/* A thread holds a mutex and a stream's lock while 1,000 children that need
 * both start and finish through the server. A plain fork would copy the held
 * mutex (shown with a trylock), and its proc_start would block on the stream. */
#define LOCKED_CHILDREN 1000
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
    EQ(run_to_end(proc_new(trylock_main, NULL)), 42);
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

#define T(f) cmocka_unit_test_teardown(f, only_server_left)

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
    g_lock = proc_lock_new();
    g_stream = fopen("/dev/null", "w");
    if (!g_lock || !g_stream)
        return 1;
    if (argc == 3 && strcmp(argv[1], "--sub") == 0)
        return run_sub(argv[2]);
    int r = proc_forkserver_start(); /* first: no thread exists yet */
    if (r != 0) {
        fprintf(stderr, "proc_forkserver_start: %s\n", strerror(-r));
        return 1;
    }
    server_pid = find_server();
    if (server_pid <= 0)
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_exit_codes),
        T(test_join_sentinel_children),
        T(test_daemon_from_thread),
        T(test_arg_copy_sizes),
        T(test_identity_in_child),
        T(test_cwd_env_mask),
        T(test_robust_lock_of_dead_child),
        T(test_bad_arguments),
        T(test_no_server),
        T(test_busy),
        T(test_server_killed),
        T(test_locks_held),
        T(test_caller_killed),
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
