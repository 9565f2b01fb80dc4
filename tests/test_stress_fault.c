/* SPDX-License-Identifier: MIT */
/*
 * Faults (issue 3): RLIMIT_NOFILE too low for the next fd, exec of a missing
 * program / a directory / a non-executable file / a file of unknown format,
 * a bad cwd. Each must give a negative errno from proc_start, leave no child
 * (live or zombie) and no fd behind, and keep the object closable and
 * restartable once the cause is fixed. (Fork failure: test_stress_forkfail.)
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "stress_util.h"

static int fds_at_start;
static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/libproc-fault-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    if (st_warm_up() != 0)
        return -1;
    fds_at_start = tu_count_fds();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return check_nothing_left(5000, fds_at_start);
}

/* What a failed start must leave: a never-started object, no child, no fd. */
static void assert_failed_cleanly(proc_t *p, int fds_before)
{
    EQ(proc_pid(p), 0);
    EQ(proc_exitcode(p), PROC_EXITCODE_NONE);
    assert_false(proc_is_alive(p));
    EQ(proc_join(p, 0), -EINVAL);
    EQ(proc_active_children(NULL, 0), 0);
    EQ(tu_count_children(NULL), 0);
    EQ(tu_count_fds(), fds_before);
}

/* ------------------------------------------------------------ RLIMIT_NOFILE */

/* *_PIPE_CB: stdout to a pipe and an exit callback (a sentinel pipe besides
 * the pidfd): more fds to run out of, after the fork too. */
enum mode {
    CALLBACK,
    CALLBACK_CWD,
    CALLBACK_DAEMON,
    CALLBACK_PIPE_CB,
    EXEC,
    EXEC_CWD,
    EXEC_DAEMON,
    EXEC_PIPE_CB,
    MODES
};
static const char *const mode_names[] = {
    "callback", "callback+cwd", "callback+daemon", "callback+pipe+on_exit",
    "exec",     "exec+cwd",     "exec+daemon",     "exec+pipe+on_exit"};

static void nothing_on_exit(proc_t *p, void *arg)
{
    (void)p;
    (void)arg;
}

static proc_t *make(enum mode m)
{
    proc_t *p;
    if (m >= EXEC) {
        const char *argv[] = {"/bin/sh", "-c", "exit 21", NULL};
        p = proc_new_exec(argv);
    } else {
        p = proc_new(return_code_main, (void *)(intptr_t)21);
    }
    if (p && (m == CALLBACK_CWD || m == EXEC_CWD) && proc_set_cwd(p, "/") != 0)
        return NULL;
    if (p && (m == CALLBACK_DAEMON || m == EXEC_DAEMON) && proc_set_daemon(p, true) != 0)
        return NULL;
    if (p && (m == CALLBACK_PIPE_CB || m == EXEC_PIPE_CB) &&
        (proc_set_stdio(p, 1, PROC_STDIO_PIPE) != 0 || proc_on_exit(p, nothing_on_exit, NULL) != 0))
        return NULL;
    return p;
}

/*
 * The RLIMIT_NOFILE soft limit that leaves exactly `headroom` fd numbers free
 * for new fds (fds open above a limit stay usable, new ones must be below it;
 * inherited fds may leave holes).
 */
static rlim_t limit_for_headroom(int headroom)
{
    int free_seen = 0;
    for (int fd = 0;; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        if (free_seen == headroom)
            return (rlim_t)fd;
        free_seen++;
    }
}

/* Limits this process to `headroom` more fds; returns the old limit. */
static struct rlimit limit_fds(int headroom)
{
    struct rlimit old, rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    rl = old;
    rl.rlim_cur = limit_for_headroom(headroom);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    return old;
}

/* The kind of fd libproc gave as the sentinel, e.g. "anon_inode:[pidfd]" or "pipe:[...]". */
static void fd_kind(int fd, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
}

static bool pidfds_expected(void)
{
    const char *off = getenv("LIBPROC_DISABLE_PIDFD");
    if (off && *off && strcmp(off, "0") != 0)
        return false;
    int fd = st_pidfd_open(getpid());
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static void test_rlimit_nofile(void **state)
{
    (void)state;
    int failures = 0, successes = 0;
    for (enum mode m = 0; m < MODES; m++) {
        for (int headroom = 0; headroom <= 6; headroom++) {
            proc_t *p = make(m);
            assert_non_null(p);
            int fds_before = tu_count_fds();
            struct rlimit old = limit_fds(headroom);
            int r = proc_start(p);
            EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
            if (headroom == 0 && r != -EMFILE)
                fail_msg("%s with no free fd: proc_start = %d, expected -EMFILE", mode_names[m], r);
            if (r < 0) {
                if (r != -EMFILE)
                    fail_msg("%s with %d free fd(s): proc_start = %d (%s), expected 0 or -EMFILE",
                             mode_names[m], headroom, r, strerror(-r));
                failures++;
                assert_failed_cleanly(p, fds_before);
                EQ(proc_stdio_fd(p, 1), -EBADF);
                if (headroom % 2) { /* closable as is */
                    EQ(proc_close(p), 0);
                    p = make(m);
                    assert_non_null(p);
                }
            } else {
                successes++;
            }
            /* usable again with fds to spare; restartable if it failed */
            if (r < 0)
                EQ(proc_start(p), 0);
            EQ(proc_join(p, 30000), 0);
            if (proc_exitcode(p) != 21)
                fail_msg("%s, %d free fd(s): exit code %d", mode_names[m], headroom,
                         proc_exitcode(p));
            EQ(proc_close(p), 0);
            EQ(tu_count_fds(), fds_before);
        }
    }
    print_message("RLIMIT_NOFILE at open fds + 0..6, 8 start modes: %d starts failed with "
                  "-EMFILE, %d succeeded\n",
                  failures, successes);
}

/* --sub nofile-first: the first proc_start of a process (which sets up the
 * reaper) with `headroom` free fds (argv-free: read from LIBPROC_TEST_HEADROOM). */
static int sub_nofile_first(void)
{
    const char *h = getenv("LIBPROC_TEST_HEADROOM");
    int headroom = h ? atoi(h) : 0;
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)5);
    if (!p)
        return 10;
    int fds_before = tu_count_fds();
    bool want_pidfd = pidfds_expected(); /* probed before the limit (closes its fd) */
    struct rlimit old, rl;
    getrlimit(RLIMIT_NOFILE, &old);
    rl = old;
    rl.rlim_cur = limit_for_headroom(headroom);
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 11;
    int r = proc_start(p);
    setrlimit(RLIMIT_NOFILE, &old);
    if (r < 0) {
        if (r != -EMFILE) {
            fprintf(stderr, "first start with %d free fds: %d\n", headroom, r);
            return 12;
        }
        if (proc_pid(p) != 0 || proc_is_alive(p) || proc_join(p, 0) != -EINVAL)
            return 13;
        if (tu_count_children(NULL) != 0)
            return 14;
        if (headroom == 0 && tu_count_fds() != fds_before)
            return 15; /* nothing set up, nothing may stay open */
        r = proc_start(p);
        if (r != 0) {
            fprintf(stderr, "start after the limit was lifted: %d\n", r);
            return 16;
        }
    } else if (headroom == 0) {
        return 17; /* needed at least a sentinel fd */
    }
    if (proc_join(p, 30000) != 0 || proc_exitcode(p) != 5)
        return 18;
    if (proc_close(p) != 0)
        return 19;
    /* and again, normally: with pidfds as on any other start (a probe that met the
     * exhausted fd table must not have turned them off for good), and so without
     * a SIGCHLD handler of libproc's (README: none is installed with pidfds) */
    p = proc_new(return_code_main, (void *)(intptr_t)6);
    if (!p || proc_start(p) != 0)
        return 20;
    char kind[64];
    fd_kind(proc_sentinel(p), kind, sizeof kind);
    struct sigaction sa;
    sigaction(SIGCHLD, NULL, &sa);
    if (proc_join(p, 30000) != 0 || proc_exitcode(p) != 6)
        return 21;
    if (proc_close(p) != 0)
        return 22;
    if (want_pidfd && strstr(kind, "pidfd") == NULL) {
        fprintf(stderr,
                "after a first start with %d free fd(s) the sentinel is '%s', not a pidfd\n",
                headroom, kind);
        return 23;
    }
    if (want_pidfd && ((sa.sa_flags & SA_SIGINFO) || sa.sa_handler != SIG_DFL)) {
        fprintf(stderr,
                "after a first start with %d free fd(s) libproc installed a SIGCHLD "
                "handler although pidfds work\n",
                headroom);
        return 24;
    }
    return 0;
}

static void test_rlimit_nofile_first_start(void **state)
{
    (void)state;
    int failed = 0;
    for (int headroom = 0; headroom <= 4; headroom++) {
        char env0[64];
        snprintf(env0, sizeof env0, "LIBPROC_TEST_HEADROOM=%d", headroom);
        int code = st_run_sub("nofile-first", env0);
        if (code != 0) {
            print_error("first start with %d free fd(s): sub-process failed with %d (12 wrong "
                        "errno, 13 object not clean, 14 child left, 15 fd left, 16 restart "
                        "failed, 18 wrong exit, 23 pidfds turned off for good, 24 SIGCHLD "
                        "handler)\n",
                        headroom, code);
            failed++;
        }
    }
    EQ(failed, 0);
}

/* ---------------------------------------------------------- exec failures */

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    EQ(tu_write_full(fd, text, strlen(text)), 0);
    EQ(close(fd), 0);
    EQ(chmod(path, mode), 0);
}

struct exec_case {
    const char *what;
    const char *argv0;                 /* relative names are looked up in PATH=tmpdir */
    int err;                           /* expected -errno */
    void (*prepare)(const char *path); /* makes the failure */
    void (*fix)(const char *path);     /* removes it: then the program exits 7 */
};

static void make_nothing(const char *path)
{
    unlink(path);
}

static void make_dir(const char *path)
{
    EQ(mkdir(path, 0755), 0);
}

static void make_non_executable(const char *path)
{
    write_file(path, "#!/bin/sh\nexit 7\n", 0644);
}

static void make_unknown_format(const char *path)
{
    write_file(path, "this is not a program\n\x01\x02\x03", 0755);
}

static void fix_program(const char *path)
{
    rmdir(path);
    write_file(path, "#!/bin/sh\nexit 7\n", 0755);
}

static const struct exec_case exec_cases[] = {
    {"missing program (path)", "/missing", -ENOENT, make_nothing, fix_program},
    {"missing program (PATH)", "missing", -ENOENT, make_nothing, fix_program},
    {"directory (path)", "/dir", -EACCES, make_dir, fix_program},
    {"directory (PATH)", "dir", -EACCES, make_dir, fix_program},
    {"non-executable file (path)", "/noexec", -EACCES, make_non_executable, fix_program},
    {"non-executable file (PATH)", "noexec", -EACCES, make_non_executable, fix_program},
    {"unknown format (path)", "/garbage", -ENOEXEC, make_unknown_format, fix_program},
};

static void test_exec_failures(void **state)
{
    (void)state;
    char pathenv[128];
    snprintf(pathenv, sizeof pathenv, "PATH=%s", tmpdir);
    const char *envp[] = {pathenv, NULL};
    int n = 0;
    for (size_t c = 0; c < sizeof exec_cases / sizeof exec_cases[0]; c++) {
        const struct exec_case *ec = &exec_cases[c];
        /* kinds: 0 posix_spawn, 1 posix_spawn + cwd, 2 daemon (fork + exec), 3 daemon + cwd */
        for (int kind = 0; kind < 4; kind++) {
            char file[128], argv0[128];
            const char *name = ec->argv0[0] == '/' ? ec->argv0 + 1 : ec->argv0;
            snprintf(file, sizeof file, "%s/%s%zu-%d", tmpdir, name, c, kind);
            if (ec->argv0[0] == '/')
                snprintf(argv0, sizeof argv0, "%s", file);
            else
                snprintf(argv0, sizeof argv0, "%s%zu-%d", name, c, kind);
            ec->prepare(file);
            const char *argv[] = {argv0, NULL};
            proc_t *p = proc_new_exec(argv);
            assert_non_null(p);
            EQ(proc_set_env(p, envp), 0);
            if (kind % 2)
                EQ(proc_set_cwd(p, "/"), 0);
            if (kind >= 2)
                EQ(proc_set_daemon(p, true), 0);
            int fds_before = tu_count_fds();
            int r = proc_start(p);
            if (r != ec->err)
                fail_msg("%s, kind %d: proc_start = %d (%s), expected %d", ec->what, kind, r,
                         r < 0 ? strerror(-r) : "started", ec->err);
            assert_failed_cleanly(p, fds_before);
            EQ(proc_start(p), ec->err); /* the same again */
            ec->fix(file);
            r = proc_start(p); /* restartable once the program is there */
            if (r != 0)
                fail_msg("%s, kind %d: start after the fix = %d", ec->what, kind, r);
            EQ(proc_join(p, 30000), 0);
            EQ(proc_exitcode(p), 7);
            EQ(proc_close(p), 0);
            n++;
        }
    }
    /* the empty program name */
    const char *argv[] = {"", NULL};
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    int fds_before = tu_count_fds();
    EQ(proc_start(p), -ENOENT);
    assert_failed_cleanly(p, fds_before);
    EQ(proc_close(p), 0);
    print_message("%d failing execs in 4 start paths, each reported synchronously, then fixed "
                  "and restarted\n",
                  n);
}

/* ------------------------------------------------------------------ bad cwd */

static int report_cwd(void *arg)
{
    char buf[256];
    if (!getcwd(buf, sizeof buf))
        return 99;
    return strcmp(buf, (const char *)arg) == 0 ? 0 : 98;
}

static void test_bad_cwd(void **state)
{
    (void)state;
    char missing[128], file[128], dir[128];
    snprintf(missing, sizeof missing, "%s/no-such-dir", tmpdir);
    snprintf(file, sizeof file, "%s/a-file", tmpdir);
    snprintf(dir, sizeof dir, "%s/no-such-dir", tmpdir);
    write_file(file, "x", 0644);
    const struct {
        const char *cwd;
        int err;
    } cases[] = {{missing, -ENOENT}, {file, -ENOTDIR}};
    int n = 0;
    for (size_t c = 0; c < 2; c++) {
        /* kinds: 0 callback, 1 callback daemon, 2 exec (posix_spawn), 3 exec daemon (fork) */
        for (int kind = 0; kind < 4; kind++) {
            proc_t *p;
            if (kind >= 2) {
                char script[300];
                snprintf(script, sizeof script, "test \"$(pwd)\" = '%s' && exit 0; exit 98", dir);
                const char *argv[] = {"/bin/sh", "-c", script, NULL};
                p = proc_new_exec(argv);
            } else {
                p = proc_new(report_cwd, dir);
            }
            assert_non_null(p);
            EQ(proc_set_cwd(p, cases[c].cwd), 0);
            if (kind % 2)
                EQ(proc_set_daemon(p, true), 0);
            int fds_before = tu_count_fds();
            int r = proc_start(p);
            if (r != cases[c].err)
                fail_msg("cwd %s, kind %d: proc_start = %d, expected %d", cases[c].cwd, kind, r,
                         cases[c].err);
            assert_failed_cleanly(p, fds_before);
            if (c == 0) {
                /* fix it: the directory appears; the same object starts there */
                EQ(mkdir(dir, 0755), 0);
                EQ(proc_start(p), 0);
                EQ(proc_join(p, 30000), 0);
                EQ(proc_exitcode(p), 0);
                EQ(rmdir(dir), 0);
            }
            EQ(proc_close(p), 0);
            n++;
        }
    }
    print_message("%d bad-cwd starts reported synchronously\n", n);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    st_sub_dispatch(argc, argv, 60,
                    (const struct st_sub[]){{"nofile-first", sub_nofile_first}, {NULL, NULL}});
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_rlimit_nofile, teardown),
        cmocka_unit_test_teardown(test_rlimit_nofile_first_start, teardown),
        cmocka_unit_test_teardown(test_exec_failures, teardown),
        cmocka_unit_test_teardown(test_bad_cwd, teardown),
    };
    return cmocka_run_group_tests_name("stress_fault", tests, setup, group_teardown);
}
