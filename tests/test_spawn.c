/* SPDX-License-Identifier: MIT */
/*
 * Starting children (src/spawn.c area): exit codes, exit() and crashes in
 * the target, stdio flushing, exec mode and its synchronous failures, argv,
 * environment, working directory, process groups and proc_signal_tree(),
 * daemonic children, running out of fds.
 *
 * Children never call cmocka: they report through pipes and exit codes and
 * the parent asserts. Nothing here waits by the clock; timeouts only bound
 * hangs.
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
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/proc.h>

#include "testutil.h"
#include "testcheck.h"

#define BOUND_MS 10000 /* bound on any hang; never reached when things work */

extern char **environ;

/* ------------------------------------------------------------------ helpers */

static int join_bounded(proc_t *p)
{
    return proc_join(p, BOUND_MS);
}

static int ret_arg(void *arg)
{
    return *(const int *)arg;
}

static int wait_gate(void *arg)
{
    return tu_gate_wait(arg, -1) == 0 ? 0 : 99;
}

/* stdout redirected into a pipe; restored by restore_stdout() or, after a
 * failed test, by the teardown */
static struct {
    bool active;
    int saved;
    int rd;
} redir = {false, -1, -1};

static void redirect_stdout(void)
{
    int fds[2];
    fflush(stdout);
    assert_int_equal(tu_pipe(fds), 0);
    redir.saved = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0);
    assert_true(redir.saved >= 0);
    assert_int_equal(dup2(fds[1], STDOUT_FILENO), STDOUT_FILENO); /* not CLOEXEC */
    close(fds[1]);
    redir.rd = fds[0];
    redir.active = true;
    setvbuf(stdout, NULL, _IOFBF, BUFSIZ);
}

/* Returns the pipe's read end; its write ends now live only in children. */
static int restore_stdout(void)
{
    if (!redir.active)
        return -1;
    fflush(stdout);
    dup2(redir.saved, STDOUT_FILENO);
    close(redir.saved);
    redir.active = false;
    setvbuf(stdout, NULL, isatty(STDOUT_FILENO) ? _IOLBF : _IOFBF, BUFSIZ);
    int rd = redir.rd;
    redir.rd = -1;
    return rd;
}

/* After a failed test: put stdout back and kill whatever it left running, so
 * that one failure does not cascade or hang the program's exit. */
static int cleanup(void **state)
{
    (void)state;
    int rd = restore_stdout();
    if (rd >= 0)
        close(rd);
    kill_children_left(BOUND_MS);
    return 0;
}

/* pid is dead or dying and its parent has been joined, so pid is either ours
 * now or was reaped by that parent before it died. */
static void reap_orphan(pid_t pid)
{
    int st;
    pid_t r = tu_waitpid(pid, &st);
    assert_true(r == pid || (r < 0 && errno == ECHILD));
}

static int count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static ssize_t pos_of(const char *hay, const char *needle)
{
    const char *p = strstr(hay, needle);
    return p ? p - hay : -1;
}

/* Reads one '\n'-terminated line (without the '\n'). */
static void read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        char c;
        assert_int_equal(tu_read_full(fd, &c, 1, BOUND_MS), 1);
        if (c == '\n')
            break;
        assert_true(n + 1 < cap);
        buf[n++] = c;
    }
    buf[n] = '\0';
}

static proc_t *new_exec(const char *const argv[])
{
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    return p;
}

/* Starts p, joins it and returns its exit code; closes p. */
static int run_to_end(proc_t *p)
{
    assert_int_equal(proc_start(p), 0);
    assert_true(proc_pid(p) > 0);
    assert_int_equal(join_bounded(p), 0);
    assert_false(proc_is_alive(p));
    int ec = proc_exitcode(p);
    assert_int_equal(proc_close(p), 0);
    return ec;
}

static int exec_status(const char *const argv[])
{
    return run_to_end(new_exec(argv));
}

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/libproc-spawn-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char real[PATH_MAX];
    assert_non_null(realpath(tmpdir, real));
    size_t len = strlen(real);
    assert_true(len < sizeof tmpdir);
    memcpy(tmpdir, real, len + 1);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(tu_write_full(fd, text, strlen(text)), 0);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static void remove_tmpdir(const char *const names[])
{
    char path[PATH_MAX];
    for (size_t i = 0; names && names[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

/* --------------------------------------------------------- callback mode */

static void test_callback_exit_codes(void **state)
{
    (void)state;
    static const int rets[] = {0, 1, 42, 255, 256, 257, -1, 1000};
    for (size_t i = 0; i < sizeof rets / sizeof rets[0]; i++) {
        proc_t *p = proc_new(ret_arg, (void *)&rets[i]);
        assert_non_null(p);
        assert_int_equal(run_to_end(p), rets[i] & 0xff);
    }
    proc_t *n = proc_new(NULL, NULL);
    assert_non_null(n);
    assert_int_equal(run_to_end(n), 0);
    assert_no_children();
}

struct ids {
    pid_t pid, ppid;
};

static int report_ids(void *arg)
{
    tu_gate *g = arg; /* g->wr is abused as the report fd: see the test */
    struct ids id = {getpid(), getppid()};
    if (tu_write_full(g[1].wr, &id, sizeof id) != 0)
        return 1;
    return tu_gate_wait(&g[0], -1) == 0 ? 0 : 2;
}

static void test_callback_running_state(void **state)
{
    (void)state;
    tu_gate g[2]; /* [0] the gate, [1] only a pipe for the report */
    assert_int_equal(tu_gate_init(&g[0]), 0);
    assert_int_equal(tu_gate_init(&g[1]), 0);
    proc_t *p = proc_new(report_ids, g);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    struct ids id;
    assert_int_equal(tu_read_full(g[1].rd, &id, sizeof id, BOUND_MS), (ssize_t)sizeof id);
    pid_t pid = proc_pid(p);
    assert_true(pid > 0);
    assert_int_equal(id.pid, pid);
    assert_int_equal(id.ppid, getpid());
    assert_true(proc_is_alive(p));
    assert_int_equal(proc_exitcode(p), PROC_EXITCODE_NONE);
    assert_int_equal(proc_join(p, 0), -ETIMEDOUT);
    int sfd = proc_sentinel(p);
    assert_true(sfd >= 0);
    assert_int_equal(tu_wait_readable(sfd, 0), 0);

    tu_gate_open(&g[0]);
    assert_int_equal(tu_wait_readable(sfd, BOUND_MS), 1);
    assert_int_equal(proc_join(p, PROC_WAIT_FOREVER), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_false(proc_is_alive(p));
    assert_int_equal(proc_pid(p), pid);      /* kept after exit */
    assert_int_equal(proc_sentinel(p), sfd); /* valid until close */
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g[0]);
    tu_gate_destroy(&g[1]);
    assert_no_children();
}

static int exit_3(void *arg)
{
    (void)arg;
    exit(3);
}

/* exit() in the target: its code, and none of the parent's libproc at-exit
 * work (waiting for non-daemonic children, terminating daemonic ones) runs in
 * the child. */
static void test_target_calls_exit(void **state)
{
    (void)state;
    tu_gate g;
    assert_int_equal(tu_gate_init(&g), 0);
    proc_t *sibling = proc_new(wait_gate, &g);
    assert_non_null(sibling);
    assert_int_equal(proc_start(sibling), 0);
    proc_t *daemon = proc_new(wait_gate, &g);
    assert_non_null(daemon);
    assert_int_equal(proc_set_daemon(daemon, true), 0);
    assert_int_equal(proc_start(daemon), 0);

    proc_t *p = proc_new(exit_3, NULL);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(proc_join(p, BOUND_MS), 0); /* promptly, not after the sibling */
    assert_int_equal(proc_exitcode(p), 3);
    /* both others untouched */
    assert_int_equal(proc_join(sibling, 0), -ETIMEDOUT);
    assert_int_equal(proc_join(daemon, 0), -ETIMEDOUT);
    assert_true(proc_is_alive(sibling));
    assert_true(proc_is_alive(daemon));

    tu_gate_open(&g);
    assert_int_equal(join_bounded(sibling), 0);
    assert_int_equal(join_bounded(daemon), 0);
    assert_int_equal(proc_exitcode(sibling), 0);
    assert_int_equal(proc_exitcode(daemon), 0); /* not SIGTERMed */
    assert_int_equal(proc_close(p), 0);
    assert_int_equal(proc_close(sibling), 0);
    assert_int_equal(proc_close(daemon), 0);
    tu_gate_destroy(&g);
    assert_no_children();
}

static void no_core(int sig)
{
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    signal(sig, SIG_DFL); /* cmocka and sanitizers may have handlers */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static int die_segv(void *arg)
{
    (void)arg;
    no_core(SIGSEGV);
    raise(SIGSEGV);
    return 100;
}

static int die_abort(void *arg)
{
    (void)arg;
    no_core(SIGABRT);
    abort();
}

static int die_kill(void *arg)
{
    (void)arg;
    raise(SIGKILL);
    return 100;
}

static void test_target_crashes(void **state)
{
    (void)state;
    proc_t *p = proc_new(die_segv, NULL);
    assert_non_null(p);
    assert_int_equal(run_to_end(p), -SIGSEGV);
    p = proc_new(die_abort, NULL);
    assert_non_null(p);
    assert_int_equal(run_to_end(p), -SIGABRT);
    p = proc_new(die_kill, NULL);
    assert_non_null(p);
    assert_int_equal(run_to_end(p), -SIGKILL);
    assert_no_children();
}

/* ------------------------------------------------------------- stdio flush */

static int print_c(void *arg)
{
    (void)arg;
    printf("<c>"); /* no newline: only the child's own flush writes it */
    return 0;
}

static void test_stdio_flush_callback(void **state)
{
    (void)state;
    redirect_stdout();
    int fd2 = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0);
    assert_true(fd2 >= 0);
    FILE *f = fdopen(fd2, "w");
    assert_non_null(f);
    setvbuf(f, NULL, _IOFBF, 4096);

    printf("<p1>");
    fprintf(f, "<f1>");
    proc_t *p = proc_new(print_c, NULL);
    int rc_start = p ? proc_start(p) : -ENOMEM;
    int rc_join = p ? join_bounded(p) : -ENOMEM;
    int ec = proc_exitcode(p);
    printf("<p2>");
    fclose(f);
    int rd = restore_stdout();

    assert_non_null(p);
    assert_int_equal(rc_start, 0);
    assert_int_equal(rc_join, 0);
    assert_int_equal(ec, 0);
    char out[256];
    assert_true(tu_read_to_eof(rd, out, sizeof out, BOUND_MS) >= 0);
    close(rd);
    /* every piece exactly once, the parent's buffered text before the child's */
    assert_int_equal(count_substr(out, "<p1>"), 1);
    assert_int_equal(count_substr(out, "<f1>"), 1);
    assert_int_equal(count_substr(out, "<c>"), 1);
    assert_int_equal(count_substr(out, "<p2>"), 1);
    assert_true(pos_of(out, "<p1>") < pos_of(out, "<c>"));
    assert_true(pos_of(out, "<f1>") < pos_of(out, "<c>"));
    assert_true(pos_of(out, "<c>") < pos_of(out, "<p2>"));
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

static void test_stdio_flush_exec(void **state)
{
    (void)state;
    redirect_stdout();
    printf("<p>");
    proc_t *p = proc_new_exec((const char *const[]){"/bin/sh", "-c", "printf '<e>'", NULL});
    int rc_start = p ? proc_start(p) : -ENOMEM;
    int rc_join = p ? join_bounded(p) : -ENOMEM;
    int ec = proc_exitcode(p);
    int rd = restore_stdout();

    assert_non_null(p);
    assert_int_equal(rc_start, 0);
    assert_int_equal(rc_join, 0);
    assert_int_equal(ec, 0);
    char out[64];
    assert_true(tu_read_to_eof(rd, out, sizeof out, BOUND_MS) >= 0);
    close(rd);
    assert_string_equal(out, "<p><e>"); /* flushed before the program wrote */
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

/* ------------------------------------------------------------- start twice */

static void test_start_twice(void **state)
{
    (void)state;
    tu_gate g;
    assert_int_equal(tu_gate_init(&g), 0);
    proc_t *p = proc_new(wait_gate, &g);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    pid_t pid = proc_pid(p);
    assert_int_equal(proc_start(p), -EBUSY);
    assert_int_equal(proc_pid(p), pid);
    assert_int_equal(proc_active_children(NULL, 0), 1); /* no second child */
    tu_gate_open(&g);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_start(p), -EBUSY);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_pid(p), pid);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g);

    proc_t *e = new_exec((const char *const[]){"/bin/true", NULL});
    assert_int_equal(proc_start(e), 0);
    assert_int_equal(proc_start(e), -EBUSY);
    assert_int_equal(join_bounded(e), 0);
    assert_int_equal(proc_start(e), -EBUSY);
    assert_int_equal(proc_exitcode(e), 0);
    assert_int_equal(proc_close(e), 0);
    assert_no_children();
}

/* ---------------------------------------------------------------- exec mode */

static void test_exec_exit_codes(void **state)
{
    (void)state;
    assert_int_equal(exec_status((const char *const[]){"/bin/true", NULL}), 0);
    assert_int_equal(exec_status((const char *const[]){"/bin/false", NULL}), 1);
    assert_int_equal(exec_status((const char *const[]){"/bin/sh", "-c", "exit 42", NULL}), 42);
    assert_int_equal(exec_status((const char *const[]){"/bin/sh", "-c", "kill -TERM $$", NULL}),
                     -SIGTERM);
    /* PATH lookup */
    assert_int_equal(exec_status((const char *const[]){"true", NULL}), 0);
    assert_int_equal(exec_status((const char *const[]){"sh", "-c", "exit 7", NULL}), 7);
    /* the arguments arrive as given */
    assert_int_equal(exec_status((const char *const[]){
                         "sh", "-c", "test \"$0\" = name && test \"$1\" = 'a b' && test $# = 2",
                         "name", "a b", "", NULL}),
                     0);
    assert_no_children();
}

static void test_exec_running_state(void **state)
{
    (void)state;
    tu_gate g;
    assert_int_equal(tu_gate_init(&g), 0);
    /* cat blocks reading the gate: make it the child's stdin for the start */
    int saved0 = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0);
    assert_int_equal(dup2(g.rd, STDIN_FILENO), STDIN_FILENO);
    proc_t *p = proc_new_exec((const char *const[]){"cat", NULL});
    int rc = p ? proc_start(p) : -ENOMEM;
    if (saved0 >= 0) {
        dup2(saved0, STDIN_FILENO);
        close(saved0);
    } else {
        close(STDIN_FILENO);
    }
    assert_non_null(p);
    assert_int_equal(rc, 0);
    assert_true(proc_pid(p) > 0);
    assert_true(proc_is_alive(p));
    assert_int_equal(proc_exitcode(p), PROC_EXITCODE_NONE);
    assert_int_equal(proc_join(p, 0), -ETIMEDOUT);
    int sfd = proc_sentinel(p);
    assert_true(sfd >= 0);
    assert_int_equal(tu_wait_readable(sfd, 0), 0);
    assert_int_equal(proc_close(p), -EBUSY);
    tu_gate_open(&g);
    assert_int_equal(tu_wait_readable(sfd, BOUND_MS), 1);
    assert_int_equal(proc_join(p, PROC_WAIT_FOREVER), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g);
    assert_no_children();
}

static int mark_ran(void *arg)
{
    int wr = *(int *)arg;
    (void)tu_write_full(wr, "ran", 3);
    return 0;
}

/* proc_start on p must fail with want, synchronously: nothing running or
 * unreaped afterwards, no fd leaked, object closable. */
static void check_start_fails(proc_t *p, bool daemon, int want)
{
    assert_non_null(p);
    if (daemon)
        assert_int_equal(proc_set_daemon(p, true), 0);
    assert_int_equal(proc_start(p), want);
    assert_no_children();
    assert_false(proc_is_alive(p));
    assert_int_equal(proc_active_children(NULL, 0), 0);
    assert_int_equal(proc_close(p), 0);
}

static void check_exec_fails(const char *const argv[], int want)
{
    for (int d = 0; d < 2; d++) {
        int fds = tu_count_fds();
        check_start_fails(new_exec(argv), d == 1, want);
        assert_int_equal(tu_count_fds(), fds);
    }
}

static void warm_up(void)
{
    proc_t *w = new_exec((const char *const[]){"/bin/true", NULL});
    assert_int_equal(run_to_end(w), 0);
    w = proc_new(NULL, NULL);
    assert_non_null(w);
    assert_int_equal(proc_set_daemon(w, true), 0);
    assert_int_equal(run_to_end(w), 0);
}

static void test_exec_failures(void **state)
{
    (void)state;
    warm_up(); /* the reaper's own long-lived fds are not leaks */
    make_tmpdir();
    char noexec[PATH_MAX];
    snprintf(noexec, sizeof noexec, "%s/noexec", tmpdir);
    write_file(noexec, "#!/bin/sh\nexit 0\n", 0644);

    check_exec_fails((const char *const[]){"no-such-program-libproc", NULL}, -ENOENT);
    check_exec_fails((const char *const[]){"/no/such/dir/prog", NULL}, -ENOENT);
    check_exec_fails((const char *const[]){"/tmp", NULL}, -EACCES);
    check_exec_fails((const char *const[]){noexec, NULL}, -EACCES);

    /* the objects stay creatable/startable afterwards */
    assert_int_equal(exec_status((const char *const[]){"/bin/true", NULL}), 0);
    remove_tmpdir((const char *const[]){"noexec", NULL});
    assert_no_children();
}

/* execvp rules for PATH: the first executable match wins, a non-executable
 * match is skipped, and EACCES is reported when only such matches exist. */
static void test_exec_path_rules(void **state)
{
    (void)state;
    make_tmpdir();
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/libproc-script", tmpdir);
    write_file(path, "#!/bin/sh\nexit 9\n", 0755);
    snprintf(path, sizeof path, "%s/libproc-noexec", tmpdir);
    write_file(path, "#!/bin/sh\nexit 0\n", 0644);
    snprintf(path, sizeof path, "%s/true", tmpdir);
    write_file(path, "#!/bin/sh\nexit 0\n", 0644);

    const char *old = getenv("PATH");
    char *saved = strdup(old ? old : "/usr/bin:/bin");
    assert_non_null(saved);
    char newpath[PATH_MAX + 64];
    snprintf(newpath, sizeof newpath, "%s:%s", tmpdir, saved);
    assert_int_equal(setenv("PATH", newpath, 1), 0);

    int s1 = exec_status((const char *const[]){"libproc-script", NULL});
    int s2 = exec_status((const char *const[]){"true", NULL}); /* skips tmpdir/true */
    proc_t *p = proc_new_exec((const char *const[]){"libproc-noexec", NULL});
    int r3 = p ? proc_start(p) : -ENOMEM;
    int z3 = tu_count_children(NULL);
    int c3 = proc_close(p);
    setenv("PATH", saved, 1);
    free(saved);

    assert_int_equal(s1, 9);
    assert_int_equal(s2, 0);
    assert_int_equal(r3, -EACCES);
    assert_int_equal(z3, 0);
    assert_int_equal(c3, 0);
    remove_tmpdir((const char *const[]){"libproc-script", "libproc-noexec", "true", NULL});
    assert_no_children();
}

static void test_exec_argv_copied(void **state)
{
    (void)state;
    char *a0 = strdup("/bin/sh"), *a1 = strdup("-c"), *a2 = strdup("exit 5");
    assert_non_null(a0);
    assert_non_null(a1);
    assert_non_null(a2);
    const char *argv[] = {a0, a1, a2, NULL};
    proc_t *p = new_exec(argv);
    /* mutate and free everything the caller passed */
    a2[5] = '9';
    argv[2] = "exit 7";
    argv[0] = "/bin/false";
    free(a0);
    free(a1);
    free(a2);
    assert_int_equal(run_to_end(p), 5);
    assert_no_children();
}

/* ---------------------------------------------------------------- environment */

#define MARK "LIBPROC_TEST_SPAWN_MARK"

static void test_env_exec(void **state)
{
    (void)state;
    assert_int_equal(setenv(MARK, "parent", 1), 0);
    char *e0 = strdup("FOO=bar");
    assert_non_null(e0);
    const char *envp[] = {e0, NULL};
    proc_t *p = new_exec((const char *const[]){
        "/bin/sh", "-c", "test \"$FOO\" = bar && test -z \"${" MARK "+set}\"", NULL});
    assert_int_equal(proc_set_env(p, envp), 0);
    e0[4] = 'X'; /* copied */
    envp[0] = "FOO=baz";
    free(e0);
    assert_int_equal(run_to_end(p), 0);

    /* NULL = inherit, read at proc_start() */
    p = new_exec((const char *const[]){"/bin/sh", "-c", "test \"$" MARK "\" = late", NULL});
    assert_int_equal(proc_set_env(p, (const char *const[]){"FOO=bar", NULL}), 0);
    assert_int_equal(proc_set_env(p, NULL), 0);
    assert_int_equal(setenv(MARK, "late", 1), 0);
    assert_int_equal(run_to_end(p), 0);

    /* an empty environment */
    p = new_exec((const char *const[]){"/bin/sh", "-c", "test -z \"${" MARK "+set}\"", NULL});
    assert_int_equal(proc_set_env(p, (const char *const[]){NULL}), 0);
    assert_int_equal(run_to_end(p), 0);
    unsetenv(MARK);
    assert_no_children();
}

static int check_env_replaced(void *arg)
{
    (void)arg;
    int bad = 0;
    const char *foo = getenv("FOO");
    if (!foo || strcmp(foo, "bar") != 0)
        bad |= 1;
    if (getenv(MARK))
        bad |= 2;
    if (!environ || !environ[0] || strcmp(environ[0], "FOO=bar") != 0 || environ[1])
        bad |= 4;
    return bad;
}

static int check_env_inherited(void *arg)
{
    (void)arg;
    const char *m = getenv(MARK);
    return m && strcmp(m, "late") == 0 ? 0 : 1;
}

static void test_env_callback(void **state)
{
    (void)state;
    assert_int_equal(setenv(MARK, "parent", 1), 0);
    char *e0 = strdup("FOO=bar");
    assert_non_null(e0);
    const char *envp[] = {e0, NULL};
    proc_t *p = proc_new(check_env_replaced, NULL);
    assert_non_null(p);
    assert_int_equal(proc_set_env(p, envp), 0);
    e0[4] = 'X';
    free(e0);
    assert_int_equal(run_to_end(p), 0);
    /* the parent's environment is untouched */
    assert_string_equal(getenv(MARK), "parent");
    assert_null(getenv("FOO"));

    p = proc_new(check_env_inherited, NULL);
    assert_non_null(p);
    assert_int_equal(proc_set_env(p, NULL), 0);
    assert_int_equal(setenv(MARK, "late", 1), 0);
    assert_int_equal(run_to_end(p), 0);
    unsetenv(MARK);
    assert_no_children();
}

/* ---------------------------------------------------------------------- cwd */

static int report_cwd(void *arg)
{
    int wr = *(int *)arg;
    char buf[PATH_MAX];
    if (!getcwd(buf, sizeof buf))
        return 1;
    return tu_write_full(wr, buf, strlen(buf)) == 0 ? 0 : 2;
}

static void test_cwd_callback(void **state)
{
    (void)state;
    make_tmpdir();
    char before[PATH_MAX];
    assert_non_null(getcwd(before, sizeof before));
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = proc_new(report_cwd, &fds[1]);
    assert_non_null(p);
    assert_int_equal(proc_set_cwd(p, tmpdir), 0);
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);
    char got[PATH_MAX];
    assert_true(tu_read_to_eof(fds[0], got, sizeof got, BOUND_MS) >= 0);
    close(fds[0]);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_string_equal(got, tmpdir);
    char after[PATH_MAX];
    assert_non_null(getcwd(after, sizeof after));
    assert_string_equal(after, before); /* the parent did not move */
    assert_int_equal(proc_close(p), 0);
    remove_tmpdir(NULL);
    assert_no_children();
}

static void test_cwd_exec(void **state)
{
    (void)state;
    make_tmpdir();
    char before[PATH_MAX];
    assert_non_null(getcwd(before, sizeof before));
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "test \"$(pwd -P)\" = '%s'", tmpdir);
    for (int d = 0; d < 2; d++) {
        proc_t *p = new_exec((const char *const[]){"/bin/sh", "-c", cmd, NULL});
        assert_int_equal(proc_set_daemon(p, d == 1), 0);
        assert_int_equal(proc_set_cwd(p, tmpdir), 0);
        assert_int_equal(run_to_end(p), 0);
    }
    /* NULL: the parent's directory */
    char real_before[PATH_MAX];
    assert_non_null(realpath(before, real_before));
    snprintf(cmd, sizeof cmd, "test \"$(pwd -P)\" = '%s'", real_before);
    proc_t *p = new_exec((const char *const[]){"/bin/sh", "-c", cmd, NULL});
    assert_int_equal(proc_set_cwd(p, tmpdir), 0);
    assert_int_equal(proc_set_cwd(p, NULL), 0);
    assert_int_equal(run_to_end(p), 0);
    char after[PATH_MAX];
    assert_non_null(getcwd(after, sizeof after));
    assert_string_equal(after, before);
    remove_tmpdir(NULL);
    assert_no_children();
}

static void test_cwd_bad(void **state)
{
    (void)state;
    warm_up();
    make_tmpdir();
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s/file", tmpdir);
    write_file(file, "x", 0644);
    static const char *const missing = "/no/such/dir/libproc";
    struct {
        const char *dir;
        int err;
    } cases[] = {{missing, -ENOENT}, {file, -ENOTDIR}};

    for (size_t c = 0; c < 2; c++) {
        for (int d = 0; d < 2; d++) {
            int fds0 = tu_count_fds();
            /* callback mode: the target never runs */
            int fds[2];
            assert_int_equal(tu_pipe(fds), 0);
            proc_t *p = proc_new(mark_ran, &fds[1]);
            assert_non_null(p);
            assert_int_equal(proc_set_cwd(p, cases[c].dir), 0);
            check_start_fails(p, d == 1, cases[c].err);
            close(fds[1]);
            char out[8];
            assert_int_equal(tu_read_to_eof(fds[0], out, sizeof out, BOUND_MS), 0);
            close(fds[0]);
            /* exec mode */
            p = new_exec((const char *const[]){"/bin/true", NULL});
            assert_int_equal(proc_set_cwd(p, cases[c].dir), 0);
            check_start_fails(p, d == 1, cases[c].err);
            assert_int_equal(tu_count_fds(), fds0);
        }
    }
    remove_tmpdir((const char *const[]){"file", NULL});
    assert_no_children();
}

/* ---------------------------------------------------------- process groups */

static int report_pgid(void *arg)
{
    tu_gate *g = arg; /* [0] gate, [1] report pipe */
    pid_t r[2] = {getpid(), getpgid(0)};
    if (tu_write_full(g[1].wr, r, sizeof r) != 0)
        return 1;
    return tu_gate_wait(&g[0], -1) == 0 ? 0 : 2;
}

static void check_group(bool new_group)
{
    tu_gate g[2];
    assert_int_equal(tu_gate_init(&g[0]), 0);
    assert_int_equal(tu_gate_init(&g[1]), 0);
    proc_t *p = proc_new(report_pgid, g);
    assert_non_null(p);
    if (new_group)
        assert_int_equal(proc_set_new_group(p, true), 0);
    assert_int_equal(proc_start(p), 0);
    pid_t r[2];
    assert_int_equal(tu_read_full(g[1].rd, r, sizeof r, BOUND_MS), (ssize_t)sizeof r);
    pid_t pid = proc_pid(p);
    assert_int_equal(r[0], pid);
    if (new_group) {
        assert_int_equal(r[1], pid);
        assert_int_equal(getpgid(pid), pid);
        assert_int_equal(proc_signal_tree(p, 0), 0);
    } else {
        assert_int_equal(r[1], getpgrp());
        assert_int_equal(getpgid(pid), getpgrp());
        assert_int_equal(proc_signal_tree(p, SIGTERM), -EINVAL);
        assert_int_equal(proc_signal_tree(p, 0), -EINVAL);
    }
    assert_int_equal(getpgrp(), getpgid(0)); /* the parent stays where it was */
    tu_gate_open(&g[0]);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0); /* nothing was sent */
    if (!new_group)
        assert_int_equal(proc_signal_tree(p, SIGTERM), -EINVAL);
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&g[0]);
    tu_gate_destroy(&g[1]);
    assert_no_children();
}

static void test_new_group(void **state)
{
    (void)state;
    check_group(true);
}

static void test_no_group(void **state)
{
    (void)state;
    check_group(false);
}

/* exec: sh starts a background sleep and reports its pid on stdout; the pipe
 * behind stdout is held only by sh and the sleep, so EOF means both died. */
static void test_signal_tree_exec(void **state)
{
    (void)state;
    subreaper(true);
    proc_t *p =
        new_exec((const char *const[]){"/bin/sh", "-c", "sleep 1000 & echo $!; wait", NULL});
    assert_int_equal(proc_set_new_group(p, true), 0);
    redirect_stdout();
    int rc = proc_start(p);
    int rd = restore_stdout();
    assert_int_equal(rc, 0);

    char line[32];
    read_line(rd, line, sizeof line);
    pid_t gpid = (pid_t)atol(line);
    assert_true(gpid > 0);
    assert_int_equal(getpgid(proc_pid(p)), proc_pid(p));
    assert_int_equal(getpgid(gpid), proc_pid(p));

    assert_int_equal(proc_signal_tree(p, SIGTERM), 0);
    char rest[16];
    assert_int_equal(tu_read_to_eof(rd, rest, sizeof rest, BOUND_MS), 0); /* both gone */
    close(rd);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), -SIGTERM);
    reap_orphan(gpid);
    subreaper(false);
    /* nobody left in the group */
    assert_int_equal(proc_signal_tree(p, SIGTERM), 0);
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

struct tree_args {
    tu_gate gate; /* never opened while the tree lives */
    int wr;       /* report + life pipe */
    bool leave;   /* the child _exit()s, leaving the grandchild behind */
};

static int tree_child(void *arg)
{
    struct tree_args *a = arg;
    proc_t *q = proc_new(wait_gate, &a->gate);
    if (!q || proc_start(q) != 0)
        return 40;
    pid_t gpid = proc_pid(q);
    if (tu_write_full(a->wr, &gpid, sizeof gpid) != 0)
        return 41;
    if (a->leave)
        _exit(0);
    proc_join(q, -1);
    return 42;
}

static void check_signal_tree_callback(bool leave)
{
    subreaper(true);
    struct tree_args a;
    assert_int_equal(tu_gate_init(&a.gate), 0);
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    a.wr = fds[1];
    a.leave = leave;
    proc_t *p = proc_new(tree_child, &a);
    assert_non_null(p);
    assert_int_equal(proc_set_new_group(p, true), 0);
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);
    pid_t gpid = 0;
    assert_int_equal(tu_read_full(fds[0], &gpid, sizeof gpid, BOUND_MS), (ssize_t)sizeof gpid);
    assert_true(gpid > 0);
    assert_int_equal(getpgid(gpid), proc_pid(p));
    if (leave) {
        /* the child is gone, its group is not */
        assert_int_equal(join_bounded(p), 0);
        assert_int_equal(proc_exitcode(p), 0);
        assert_int_equal(getpgid(gpid), proc_pid(p));
        assert_int_equal(proc_signal_tree(p, SIGKILL), 0);
    } else {
        assert_int_equal(proc_signal_tree(p, SIGKILL), 0);
        assert_int_equal(join_bounded(p), 0);
        assert_int_equal(proc_exitcode(p), -SIGKILL);
    }
    char rest[16];
    assert_int_equal(tu_read_to_eof(fds[0], rest, sizeof rest, BOUND_MS), 0); /* all gone */
    close(fds[0]);
    reap_orphan(gpid);
    subreaper(false);
    assert_int_equal(proc_signal_tree(p, SIGKILL), 0); /* nobody left */
    assert_int_equal(proc_close(p), 0);
    tu_gate_destroy(&a.gate);
    assert_no_children();
}

static void test_signal_tree_callback(void **state)
{
    (void)state;
    check_signal_tree_callback(false);
}

static void test_signal_tree_after_child_ended(void **state)
{
    (void)state;
    check_signal_tree_callback(true);
}

/* ------------------------------------------------------------------ daemons */

struct daemon_report {
    int start_cb;
    int start_exec;
    int is_daemon;
};

static int daemon_tries_children(void *arg)
{
    int wr = *(int *)arg;
    struct daemon_report r = {1, 1, 0};
    proc_t *q = proc_new(NULL, NULL);
    if (q)
        r.start_cb = proc_start(q);
    proc_close(q);
    proc_t *e = proc_new_exec((const char *const[]){"/bin/true", NULL});
    if (e)
        r.start_exec = proc_start(e);
    proc_close(e);
    r.is_daemon = proc_daemon(proc_current());
    return tu_write_full(wr, &r, sizeof r) == 0 ? 0 : 1;
}

static void test_daemon_cannot_start_children(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = proc_new(daemon_tries_children, &fds[1]);
    assert_non_null(p);
    assert_int_equal(proc_set_daemon(p, true), 0);
    assert_true(proc_daemon(p));
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);
    struct daemon_report r;
    assert_int_equal(tu_read_full(fds[0], &r, sizeof r, BOUND_MS), (ssize_t)sizeof r);
    char rest[8];
    assert_int_equal(tu_read_to_eof(fds[0], rest, sizeof rest, BOUND_MS), 0);
    close(fds[0]);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    assert_int_equal(r.start_cb, -EPERM);
    assert_int_equal(r.start_exec, -EPERM);
    assert_true(r.is_daemon);
    assert_true(proc_daemon(p));
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

static void test_daemon_exec(void **state)
{
    (void)state;
    proc_t *p = new_exec((const char *const[]){"/bin/sh", "-c", "exit 5", NULL});
    assert_int_equal(proc_set_daemon(p, true), 0);
    assert_int_equal(run_to_end(p), 5);
    static const int v = 17;
    p = proc_new(ret_arg, (void *)&v);
    assert_non_null(p);
    assert_int_equal(proc_set_daemon(p, true), 0);
    assert_int_equal(run_to_end(p), 17);
    assert_no_children();
}

/* ------------------------------------------------------------ out of fds */

static void test_start_without_fds(void **state)
{
    (void)state;
    warm_up();
    proc_t *p = proc_new(NULL, NULL);
    proc_t *e = proc_new_exec((const char *const[]){"/bin/true", NULL});
    assert_non_null(p);
    assert_non_null(e);

    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int src = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(src >= 0);
    /* lower the limit to just above the highest open fd, then fill every
     * hole below it, so that no new fd can be had. Fds at or above the
     * current soft limit do not count: no new fd can be had there anyway,
     * and under valgrind that is where its own fds are listed (valgrind
     * refuses a soft limit above the hard limit it shows the program). */
    int maxfd = src;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.' && atoi(de->d_name) > maxfd &&
            (rlim_t)atoi(de->d_name) < old.rlim_cur)
            maxfd = atoi(de->d_name);
    closedir(d);
    struct rlimit low = {(rlim_t)maxfd + 1, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int fillers[4096], nf = 0;
    while (nf < 4096) {
        int fd = fcntl(src, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            break;
        fillers[nf++] = fd;
    }
    int rc_cb = proc_start(p);
    int rc_ex = proc_start(e);
    for (int i = 0; i < nf; i++)
        close(fillers[i]);
    close(src);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

    assert_true(rc_cb == -EMFILE || rc_cb == -ENFILE);
    assert_true(rc_ex == -EMFILE || rc_ex == -ENFILE);
    assert_no_children();
    assert_false(proc_is_alive(p));
    assert_false(proc_is_alive(e));
    assert_int_equal(proc_close(p), 0);
    assert_int_equal(proc_close(e), 0);
    /* and everything works again */
    warm_up();
    assert_no_children();
}

#define T(f) cmocka_unit_test_teardown(f, cleanup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_callback_exit_codes),
        T(test_callback_running_state),
        T(test_target_calls_exit),
        T(test_target_crashes),
        T(test_stdio_flush_callback),
        T(test_stdio_flush_exec),
        T(test_start_twice),
        T(test_exec_exit_codes),
        T(test_exec_running_state),
        T(test_exec_failures),
        T(test_exec_path_rules),
        T(test_exec_argv_copied),
        T(test_env_exec),
        T(test_env_callback),
        T(test_cwd_callback),
        T(test_cwd_exec),
        T(test_cwd_bad),
        T(test_new_group),
        T(test_no_group),
        T(test_signal_tree_exec),
        T(test_signal_tree_callback),
        T(test_signal_tree_after_child_ended),
        T(test_daemon_cannot_start_children),
        T(test_daemon_exec),
        T(test_start_without_fds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
