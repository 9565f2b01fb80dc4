/* SPDX-License-Identifier: MIT */
/*
 * Exec-mode edge cases that a port of libuv's spawn tests found (issue 11),
 * each on both exec paths: posix_spawn (a plain exec child) and libproc's own
 * fork + exec (a daemonic child):
 *  - a stream given as the fd it already is (proc_set_stdio(p, 1, 1)) while
 *    that fd is close-on-exec: the child must still have it;
 *  - a relative PATH entry ("", ".", "sub") with proc_set_cwd(): looked up in
 *    the child's directory, as execvp after chdir, Python and libuv do;
 *  - the program starts with the signals ignored that the parent ignores,
 *    no more (glibc's posix_spawn left its internal signals 32 and 33 ignored).
 * Children report through pipes and exit codes; timeouts only bound hangs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "testutil.h"

#define BOUND_MS 10000

/* Starts p (daemonic on the fork + exec path), joins it, returns its exit code. */
static int run_exec(proc_t *p, bool fork_path)
{
    assert_non_null(p);
    if (fork_path)
        assert_int_equal(proc_set_daemon(p, true), 0);
    int rc = proc_start(p);
    if (rc != 0) {
        proc_close(p);
        return rc;
    }
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    int code = proc_exitcode(p);
    assert_int_equal(proc_close(p), 0);
    return code;
}

/* ---------------------------------------------- an fd given as its own number */

/* Makes fd `target` a close-on-exec copy of fd; returns a saved copy of the old one. */
static int replace_cloexec(int target, int fd)
{
    int saved = fcntl(target, F_DUPFD_CLOEXEC, 3);
    assert_true(saved >= 0);
    assert_int_equal(dup3(fd, target, O_CLOEXEC), target);
    assert_int_equal(fcntl(target, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    return saved;
}

static void restore_fd(int target, int saved)
{
    assert_int_equal(dup2(saved, target), target);
    close(saved);
}

static void check_cloexec_stdout_kept(bool fork_path)
{
    int out[2];
    assert_int_equal(tu_pipe(out), 0);
    fflush(stdout);
    int saved = replace_cloexec(1, out[1]);
    close(out[1]);
    proc_t *p = proc_new_exec((const char *const[]){"/bin/sh", "-c", "echo kept", NULL});
    int code = p ? proc_set_stdio(p, 1, 1) : -ENOMEM;
    if (code == 0)
        code = run_exec(p, fork_path);
    restore_fd(1, saved); /* the pipe's write end now lives only in the child */
    assert_int_equal(code, 0);
    char buf[32];
    assert_int_equal(tu_read_to_eof(out[0], buf, sizeof buf, BOUND_MS), 5);
    assert_string_equal(buf, "kept\n");
    close(out[0]);
}

static void check_cloexec_stdin_kept(bool fork_path)
{
    int in[2];
    assert_int_equal(tu_pipe(in), 0);
    assert_int_equal(tu_write_full(in[1], "abc", 3), 0);
    close(in[1]);
    int saved = replace_cloexec(0, in[0]);
    close(in[0]);
    /* exit 3 if it read the three bytes, 9 if stdin was closed or empty */
    proc_t *p = proc_new_exec((const char *const[]){
        "/bin/sh", "-c", "n=$(wc -c); [ \"$n\" -eq 3 ] && exit 3; exit 9", NULL});
    int code = p ? proc_set_stdio(p, 0, 0) : -ENOMEM;
    if (code == 0)
        code = run_exec(p, fork_path);
    restore_fd(0, saved);
    assert_int_equal(code, 3);
}

static void test_cloexec_stdout_given_as_itself(void **state)
{
    (void)state;
    check_cloexec_stdout_kept(false);
    check_cloexec_stdout_kept(true);
}

static void test_cloexec_stdin_given_as_itself(void **state)
{
    (void)state;
    check_cloexec_stdin_kept(false);
    check_cloexec_stdin_kept(true);
}

/* ------------------------------------------ relative PATH entries with a cwd */

static char dir[PATH_MAX];

static void write_script(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    assert_true(fd >= 0);
    assert_int_equal(tu_write_full(fd, text, strlen(text)), 0);
    close(fd);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/libproc-exec-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/helper", dir);
    write_script(path, "#!/bin/sh\nexit 7\n");
    snprintf(path, sizeof path, "%s/sub", dir);
    if (mkdir(path, 0755) < 0)
        return -1;
    snprintf(path, sizeof path, "%s/sub/subhelper", dir);
    write_script(path, "#!/bin/sh\nexit 8\n");
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/sub/subhelper", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/sub", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/helper", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}

/* Runs argv[0] = name with PATH=path_env in cwd; returns its exit code or start error. */
static int run_in(const char *name, const char *path_env, const char *cwd, bool fork_path)
{
    char env0[64];
    snprintf(env0, sizeof env0, "PATH=%s", path_env);
    const char *envp[] = {env0, NULL};
    proc_t *p = proc_new_exec((const char *const[]){name, NULL});
    assert_non_null(p);
    assert_int_equal(proc_set_env(p, envp), 0);
    if (cwd)
        assert_int_equal(proc_set_cwd(p, cwd), 0);
    return run_exec(p, fork_path);
}

static void test_relative_path_entries_follow_cwd(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++) {
        bool fork_path = f == 1;
        assert_int_equal(run_in("helper", ".", dir, fork_path), 7);
        assert_int_equal(run_in("helper", "", dir, fork_path), 7);
        assert_int_equal(run_in("helper", "/nonexistent:.", dir, fork_path), 7);
        assert_int_equal(run_in("subhelper", "sub", dir, fork_path), 8);
        /* the parent's own directory is not where the child looks */
        assert_int_equal(run_in("helper", ".", "/", fork_path), -ENOENT);
        /* absolute entries are unaffected by the cwd */
        assert_int_equal(run_in("true", "/bin:/usr/bin", dir, fork_path), 0);
    }
}

static void test_relative_path_entries_without_cwd(void **state)
{
    (void)state;
    /* without proc_set_cwd() the child runs in the caller's directory */
    char here[PATH_MAX];
    assert_non_null(getcwd(here, sizeof here));
    assert_int_equal(chdir(dir), 0);
    int code = run_in("helper", ".", NULL, false);
    int code_fork = run_in("helper", ".", NULL, true);
    assert_int_equal(chdir(here), 0);
    assert_int_equal(code, 7);
    assert_int_equal(code_fork, 7);
}

/* ------------------------------------------------- ignored signals inherited */

/* The "SigIgn:" line of /proc/<pid>/status, from text. */
static unsigned long long sig_ignored(const char *text)
{
    const char *line = strstr(text, "SigIgn:");
    assert_non_null(line);
    return strtoull(line + 7, NULL, 16);
}

static unsigned long long child_ignored(bool fork_path)
{
    proc_t *p = proc_new_exec((const char *const[]){"cat", "/proc/self/status", NULL});
    assert_non_null(p);
    assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    if (fork_path)
        assert_int_equal(proc_set_daemon(p, true), 0);
    assert_int_equal(proc_start(p), 0);
    static char text[8192];
    assert_true(tu_read_to_eof(proc_stdio_fd(p, 1), text, sizeof text, BOUND_MS) > 0);
    assert_int_equal(proc_join(p, BOUND_MS), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_close(p), 0);
    return sig_ignored(text);
}

static void test_ignored_signals_are_the_parents(void **state)
{
    (void)state;
    static char text[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_true(tu_read_to_eof(fd, text, sizeof text, BOUND_MS) > 0);
    close(fd);
    unsigned long long mine = sig_ignored(text);
    assert_int_equal(child_ignored(false), mine);
    assert_int_equal(child_ignored(true), mine);
    /* a signal the parent ignores stays ignored in the program (as with execve) */
    struct sigaction ign, old;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    assert_int_equal(sigaction(SIGUSR2, &ign, &old), 0);
    unsigned long long plain = child_ignored(false), forked = child_ignored(true);
    assert_int_equal(sigaction(SIGUSR2, &old, NULL), 0);
    unsigned long long want = mine | 1ULL << (SIGUSR2 - 1);
    assert_int_equal(plain, want);
    assert_int_equal(forked, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cloexec_stdout_given_as_itself),
        cmocka_unit_test(test_cloexec_stdin_given_as_itself),
        cmocka_unit_test(test_relative_path_entries_follow_cwd),
        cmocka_unit_test(test_relative_path_entries_without_cwd),
        cmocka_unit_test(test_ignored_signals_are_the_parents),
    };
    return cmocka_run_group_tests_name("exec_edges", tests, setup_dir, teardown_dir);
}
