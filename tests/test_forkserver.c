/* SPDX-License-Identifier: MIT */
/*
 * The fork server (API 4.6; src/forkserver.c, src/forkserver_client.c):
 * starts through it keep every guarantee of a forked child (exit codes,
 * join, sentinel, exit callbacks, proc_active_children(), the child's name,
 * authkey, daemon flag and parent, the caller as its real parent, cwd, env,
 * standard streams, signal mask, robust locks), the argument travels as
 * bytes up to 64 MiB, and bad arguments, -EALREADY included, are refused as
 * documented; all of it again without pidfds. The faults (no server,
 * -EBUSY, the server or the caller killed, a thread holding locks) are
 * tests/test_forkserver_faults.c; what both share is
 * tests/support/forkserver_fixture.c.
 *
 * main() starts the server before anything else, so that no thread exists
 * yet (cmocka creates none). The server's children have only the fds they
 * are given, so they report through their standard streams. Nothing waits
 * by the clock; timeouts only bound hangs.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "forkserver_fixture.h"
#include "testutil.h"
#include "testcheck.h"

#define MiB ((size_t)1 << 20)
#define SELF "test_forkserver"

static pid_t server_pid;    /* this process's server (main() started it) */
static proc_lock_t *g_lock; /* made before the server, so its children have it */

/* ------------------------------------------------------------- helpers */

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

/* ------------------------------------------------------------- targets */

static int die_by(void *arg)
{
    raise(*(const int *)arg);
    return 99;
}

static int exit_now(void *arg)
{
    exit(*(const int *)arg);
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
    EQ(run_to_exit(served(NULL, NULL)), 0);
    EQ(run_to_exit(served(ret_int, (void *)&zero)), 0);
    EQ(run_to_exit(served(ret_int, (void *)&seven)), 7);
    EQ(run_to_exit(served(exit_now, (void *)&nine)), 9);
    EQ(run_to_exit(served(die_by, (void *)&term)), -SIGTERM);
    EQ(run_to_exit(served(die_by, (void *)&abrt)), -SIGABRT);
    /* A pointer into memory made after the server started needs a copy. */
    int eight = 8;
    proc_t *c = served(ret_int, NULL);
    EQ(proc_set_arg_copy(c, &eight, sizeof eight), 0);
    EQ(run_to_exit(c), 8);
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
    EQ(run_to_exit(p), 0);
}

static void test_arg_copy_sizes(void **state)
{
    (void)state;
    unsigned char one = 0xa5;
    proc_t *p = served(check_one_byte, NULL);
    EQ(proc_set_arg_copy(p, &one, 1), 0);
    EQ(run_to_exit(p), 0);
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
    EQ(run_to_exit(served(take_lock_and_leave, NULL)), 0);
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
    EQ(run_to_exit(p), 0);
}

/* Everything again on libproc's paths for kernels without pidfds (the
 * server's pidfd is then dropped; the reaper watches the pid). */
TEST_ALL_AGAIN_WITHOUT_PIDFD(SELF)

/* ------------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_teardown(f, only_server_left)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    /* What the server's children share with the caller exists before it. */
    g_lock = proc_lock_new();
    if (!g_lock)
        return 1;
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
        T(test_all_again_without_pidfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
