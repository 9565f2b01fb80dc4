/* SPDX-License-Identifier: MIT */
/*
 * Fork failure (issue 3, faults): fork() and posix_spawn() are made to fail
 * by tests/stress_forkfail.c, an LD_PRELOAD interposer that ctest loads for
 * this program. proc_start must return the error (-EAGAIN, -ENOMEM), leave
 * nothing running, keep the object closable and restartable, and leave
 * libproc fully usable: in callback mode, exec mode (posix_spawn and the
 * fork path of daemons), with a cwd (status pipe), for a daemon requested
 * from another thread (forked by the reaper thread), for the very first start
 * of a process, and with failures sprinkled over concurrent starts. Also a
 * fork() made in the middle of libproc's one-time setup.
 *
 * Without the interposer (run by hand) every test is skipped, and the
 * program exits 77, which ctest reports as skipped.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libproc/proc.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "stress_util.h"

#define MIXED_THREADS 4
#define MIXED_PER_THREAD ST_SIZE(150, 50)

static void (*ff_arm)(int err, int count, int every);
static void (*ff_disarm)(void);
static int (*ff_failed)(void);
static int skipped;
static int fds_at_start;

static bool find_interposer(void)
{
    ff_arm = (void (*)(int, int, int))dlsym(RTLD_DEFAULT, "libproc_test_forkfail_arm");
    ff_disarm = (void (*)(void))dlsym(RTLD_DEFAULT, "libproc_test_forkfail_disarm");
    ff_failed = (int (*)(void))dlsym(RTLD_DEFAULT, "libproc_test_forkfail_failed");
    return ff_arm && ff_disarm && ff_failed;
}

static void need_interposer(void)
{
    if (!ff_arm) {
        print_message("skipped: stress_forkfail is not preloaded (ctest sets LD_PRELOAD)\n");
        skipped++;
        skip();
    }
}

static int setup(void **state)
{
    (void)state;
    if (find_interposer() && st_warm_up() != 0)
        return -1;
    fds_at_start = tu_count_fds();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (ff_disarm)
        ff_disarm();
    return check_nothing_left(5000, fds_at_start);
}

/* What a failed start must leave: a never-started, usable object; no child. */
static void assert_not_started(proc_t *p)
{
    EQ(proc_pid(p), 0);
    EQ(proc_exitcode(p), PROC_EXITCODE_NONE);
    assert_false(proc_is_alive(p));
    EQ(proc_join(p, 0), -EINVAL);
    EQ(proc_sentinel(p), -EINVAL);
    EQ(proc_signal(p, 0), -EINVAL);
    EQ(proc_active_children(NULL, 0), 0);
    EQ(tu_count_children(NULL), 0);
}

static void start_join_expect(proc_t *p, int code)
{
    EQ(proc_start(p), 0);
    EQ(proc_join(p, 30000), 0);
    EQ(proc_exitcode(p), code);
}

/* Fails the next start of a fresh object made by make(), then starts it for real. */
static void fail_then_restart(proc_t *(*make)(void), int err, int code)
{
    /* closable right after the failure */
    proc_t *p = make();
    assert_non_null(p);
    ff_arm(err, 1, 1);
    EQ(proc_start(p), -err);
    EQ(ff_failed(), 1);
    assert_not_started(p);
    EQ(proc_close(p), 0);

    /* restartable: the same object starts once fork works again */
    p = make();
    assert_non_null(p);
    ff_arm(err, 1, 1);
    EQ(proc_start(p), -err);
    assert_not_started(p);
    EQ(proc_set_name(p, "after-fork-failure"), 0); /* still configurable */
    EQ(proc_set_daemon(p, proc_daemon(p)), 0);
    ff_disarm();
    start_join_expect(p, code);
    EQ(proc_close(p), 0);

    /* several failures in a row, then success */
    p = make();
    assert_non_null(p);
    ff_arm(err, 3, 1);
    for (int i = 0; i < 3; i++)
        EQ(proc_start(p), -err);
    start_join_expect(p, code);
    EQ(proc_close(p), 0);
}

static proc_t *make_callback(void)
{
    return proc_new(return_code_main, (void *)(intptr_t)42);
}

static proc_t *make_callback_cwd(void)
{
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)43);
    if (p && proc_set_cwd(p, "/") != 0)
        return NULL;
    return p;
}

static proc_t *make_callback_daemon(void)
{
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)44);
    if (p && proc_set_daemon(p, true) != 0)
        return NULL;
    return p;
}

static proc_t *make_exec(void)
{
    const char *argv[] = {"sh", "-c", "exit 45", NULL};
    return proc_new_exec(argv);
}

static proc_t *make_exec_cwd(void)
{
    const char *argv[] = {"sh", "-c", "exit 46", NULL};
    proc_t *p = proc_new_exec(argv);
    if (p && proc_set_cwd(p, "/") != 0)
        return NULL;
    return p;
}

static proc_t *make_exec_daemon(void)
{
    const char *argv[] = {"sh", "-c", "exit 47", NULL};
    proc_t *p = proc_new_exec(argv);
    if (p && proc_set_daemon(p, true) != 0)
        return NULL;
    return p;
}

static void test_callback_fork_fails(void **state)
{
    (void)state;
    need_interposer();
    fail_then_restart(make_callback, EAGAIN, 42);
    fail_then_restart(make_callback, ENOMEM, 42);
    fail_then_restart(make_callback_daemon, EAGAIN, 44);
}

static void test_callback_with_cwd_fork_fails(void **state)
{
    (void)state;
    need_interposer();
    fail_then_restart(make_callback_cwd, EAGAIN, 43);
    fail_then_restart(make_callback_cwd, ENOMEM, 43);
}

static void test_exec_spawn_fails(void **state)
{
    (void)state;
    need_interposer();
    fail_then_restart(make_exec, EAGAIN, 45);
    fail_then_restart(make_exec, ENOMEM, 45);
    fail_then_restart(make_exec_cwd, EAGAIN, 46);
}

static void test_exec_daemon_fork_fails(void **state)
{
    (void)state;
    need_interposer();
    fail_then_restart(make_exec_daemon, EAGAIN, 47);
    fail_then_restart(make_exec_daemon, ENOMEM, 47);
}

/* A daemon requested from a thread other than the main thread is forked by the
 * reaper thread: its fork failure must come back to the requesting thread. */
struct from_thread {
    proc_t *(*make)(void);
    int rc_fail, rc_ok, code;
    pid_t pid_after_fail;
};

static void *daemon_thread(void *arg)
{
    struct from_thread *a = arg;
    proc_t *p = a->make();
    if (!p) {
        a->rc_fail = -ENOMEM;
        return NULL;
    }
    ff_arm(EAGAIN, 1, 1);
    a->rc_fail = proc_start(p);
    a->pid_after_fail = proc_pid(p);
    ff_disarm();
    a->rc_ok = proc_start(p);
    if (a->rc_ok == 0 && proc_join(p, 30000) == 0)
        a->code = proc_exitcode(p);
    proc_close(p);
    return NULL;
}

static void test_daemon_from_thread_fork_fails(void **state)
{
    (void)state;
    need_interposer();
    proc_t *(*makers[])(void) = {make_callback_daemon, make_exec_daemon};
    const int codes[] = {44, 47};
    for (int i = 0; i < 2; i++) {
        struct from_thread a = {.make = makers[i], .rc_fail = 1, .rc_ok = 1, .code = -1};
        pthread_t t;
        EQ(pthread_create(&t, NULL, daemon_thread, &a), 0);
        EQ(pthread_join(t, NULL), 0);
        EQ(a.rc_fail, -EAGAIN);
        EQ(a.pid_after_fail, 0);
        EQ(a.rc_ok, 0);
        EQ(a.code, codes[i]);
    }
}

/* --sub first-start: the very first proc_start of a process fails (the reaper
 * is being set up at that moment); the next one works. Exit code 0 = pass. */
static int sub_first_start(void)
{
    if (!find_interposer())
        return 77;
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)9);
    if (!p)
        return 10;
    ff_arm(EAGAIN, 1, 1);
    int r = proc_start(p);
    if (r != -EAGAIN) {
        fprintf(stderr, "first proc_start with fork failing = %d\n", r);
        return 11;
    }
    if (proc_is_alive(p) || proc_pid(p) != 0 || proc_join(p, 0) != -EINVAL)
        return 12;
    ff_disarm();
    if (proc_start(p) != 0 || proc_join(p, 30000) != 0 || proc_exitcode(p) != 9)
        return 13;
    return proc_close(p) == 0 ? 0 : 14;
}

static void test_first_start_fork_fails(void **state)
{
    (void)state;
    need_interposer();
    int code = st_run_sub("first-start", NULL);
    if (code != 0)
        fail_msg("sub-process: %d (11 wrong error, 12 object not clean, 13 restart failed)", code);
}

/*
 * A fork() in the middle of libproc's one-time setup, after it registered its
 * fork handlers and before it finished: glibc's pthread_once() runs the setup
 * again in the child, which registered the handlers a second time, and the
 * child's own next fork locked libproc's lock twice and hung. The interposer
 * holds the setup at its atexit() call while the main thread forks.
 */
static void *first_libproc_call(void *arg)
{
    (void)arg;
    (void)proc_active_children(NULL, 0);
    return NULL;
}

static int sub_fork_during_setup(void)
{
    void (*hold)(int, int) = (void (*)(int, int))dlsym(RTLD_DEFAULT, "libproc_test_hold_atexit");
    if (!find_interposer() || !hold)
        return 77;
    int entered[2], release[2];
    if (tu_pipe(entered) != 0 || tu_pipe(release) != 0)
        return 10;
    hold(entered[1], release[0]);
    pthread_t t;
    if (pthread_create(&t, NULL, first_libproc_call, NULL) != 0)
        return 11;
    char c;
    if (tu_read_full(entered[0], &c, 1, 30000) != 1)
        return 12;
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        proc_t *p = proc_new(return_code_main, (void *)(intptr_t)7);
        int r = p ? proc_start(p) : -ENOMEM;
        r = r ? r : proc_join(p, 10000);
        _exit(r == 0 && proc_exitcode(p) == 7 ? 0 : 1);
    }
    if (pid < 0)
        return 13;
    close(release[1]); /* the setup in this process goes on */
    pthread_join(t, NULL);
    int code = st_wait_pid(pid);
    if (code != 0) {
        fprintf(stderr, "fork child of a fork during libproc's setup: %d (%s)\n", code,
                code == -SIGALRM ? "hung" : "libproc failed");
        return 14;
    }
    return 0;
}

static void test_fork_during_first_setup(void **state)
{
    (void)state;
    need_interposer();
    if (ST_TSAN) {
        /* ThreadSanitizer's pthread_once() never lets a fork child re-run a
         * routine that another thread was running at the fork: the child
         * waits for ever (with gcc's and clang's runtimes alike). */
        print_message("skipped: ThreadSanitizer's pthread_once() hangs in this fork child "
                      "(the case runs in the default, asan and valgrind configurations)\n");
        skipped++;
        skip();
    }
    int code = st_run_sub("fork-during-setup", NULL);
    if (code == 77) {
        print_message("skipped: the interposer has no atexit hold\n");
        skipped++;
        skip();
    }
    if (code != 0)
        fail_msg("sub-process: %d (14: the fork child hung or failed)", code);
}

/* Failures sprinkled over concurrent starts of every kind. */
struct mixed {
    int index;
    int started, failed, errors;
    char first_error[160];
};

static void *mixed_thread(void *arg)
{
    struct mixed *m = arg;
    proc_t *(*makers[])(void) = {make_callback, make_callback_cwd, make_exec,
                                 make_exec_cwd, make_exec_daemon,  make_callback_daemon};
    const int codes[] = {42, 43, 45, 46, 47, 44};
    for (int i = 0; i < MIXED_PER_THREAD; i++) {
        int k = (i + m->index) % 6;
        proc_t *p = makers[k]();
        if (!p) {
            m->errors++;
            continue;
        }
        int r = proc_start(p);
        if (r == -EAGAIN) {
            m->failed++;
            if (proc_pid(p) != 0 || proc_is_alive(p) || proc_join(p, 0) != -EINVAL) {
                if (m->errors++ == 0)
                    snprintf(m->first_error, sizeof m->first_error,
                             "kind %d: object not clean after -EAGAIN", k);
            }
        } else if (r == 0) {
            m->started++;
            r = proc_join(p, 30000);
            if ((r != 0 || proc_exitcode(p) != codes[k]) && m->errors++ == 0)
                snprintf(m->first_error, sizeof m->first_error,
                         "kind %d: join %d, exit code %d, expected %d", k, r, proc_exitcode(p),
                         codes[k]);
        } else if (m->errors++ == 0) {
            snprintf(m->first_error, sizeof m->first_error, "kind %d: proc_start = %d", k, r);
        }
        if (proc_close(p) != 0 && m->errors++ == 0)
            snprintf(m->first_error, sizeof m->first_error, "kind %d: proc_close failed", k);
    }
    return NULL;
}

static void test_failures_among_concurrent_starts(void **state)
{
    (void)state;
    need_interposer();
    ff_arm(EAGAIN, -1, 3); /* every third process creation fails */
    struct mixed m[MIXED_THREADS];
    pthread_t t[MIXED_THREADS];
    for (int i = 0; i < MIXED_THREADS; i++) {
        memset(&m[i], 0, sizeof m[i]);
        m[i].index = i;
        EQ(pthread_create(&t[i], NULL, mixed_thread, &m[i]), 0);
    }
    int started = 0, failed = 0, errors = 0;
    for (int i = 0; i < MIXED_THREADS; i++) {
        EQ(pthread_join(t[i], NULL), 0);
        if (m[i].errors)
            print_error("thread %d: %d error(s), first: %s\n", i, m[i].errors, m[i].first_error);
        started += m[i].started;
        failed += m[i].failed;
        errors += m[i].errors;
    }
    int injected = ff_failed();
    ff_disarm();
    EQ(errors, 0);
    EQ(started + failed, MIXED_THREADS * MIXED_PER_THREAD);
    EQ(failed, injected);
    assert_true(failed > 0);
    assert_true(started > 0);
    print_message("%d starts: %d failed with -EAGAIN as injected, %d ran\n", started + failed,
                  failed, started);
    /* fully usable afterwards */
    proc_t *p = make_callback();
    assert_non_null(p);
    start_join_expect(p, 42);
    EQ(proc_close(p), 0);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    st_sub_dispatch(argc, argv, 60,
                    (const struct st_sub[]){{"first-start", sub_first_start},
                                            {"fork-during-setup", sub_fork_during_setup},
                                            {NULL, NULL}});
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_callback_fork_fails, teardown),
        cmocka_unit_test_teardown(test_callback_with_cwd_fork_fails, teardown),
        cmocka_unit_test_teardown(test_exec_spawn_fails, teardown),
        cmocka_unit_test_teardown(test_exec_daemon_fork_fails, teardown),
        cmocka_unit_test_teardown(test_daemon_from_thread_fork_fails, teardown),
        cmocka_unit_test_teardown(test_first_start_fork_fails, teardown),
        cmocka_unit_test_teardown(test_fork_during_first_setup, teardown),
        cmocka_unit_test_teardown(test_failures_among_concurrent_starts, teardown),
    };
    int failed = cmocka_run_group_tests_name("stress_forkfail", tests, setup, NULL);
    return failed == 0 && skipped ? 77 : failed;
}
