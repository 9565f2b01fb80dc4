/* SPDX-License-Identifier: MIT */
/* The spawn tests' fixture (spawn_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <libproc/proc.h>

#include "spawn_fixture.h"
#include "testcheck.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

int join_bounded(proc_t *p)
{
    return proc_join(p, BOUND_MS);
}

int ret_arg(void *arg)
{
    return *(const int *)arg;
}

/* stdout redirected into a pipe; restored by restore_stdout() or, after a
 * failed test, by the teardown */
static struct {
    bool active;
    int saved;
    int rd;
} redir = {false, -1, -1};

void redirect_stdout(void)
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
int restore_stdout(void)
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
int spawn_cleanup(void **state)
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
void reap_orphan(pid_t pid)
{
    int st;
    pid_t r = tu_waitpid(pid, &st);
    assert_true(r == pid || (r < 0 && errno == ECHILD));
}

int count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

ssize_t pos_of(const char *hay, const char *needle)
{
    const char *p = strstr(hay, needle);
    return p ? p - hay : -1;
}

/* Reads one '\n'-terminated line (without the '\n'). */
void read_line(int fd, char *buf, size_t cap)
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

proc_t *new_exec(const char *const argv[])
{
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    return p;
}

/* Starts p, joins it and returns its exit code; closes p. */
int run_to_end(proc_t *p)
{
    assert_int_equal(proc_start(p), 0);
    assert_true(proc_pid(p) > 0);
    assert_int_equal(join_bounded(p), 0);
    assert_false(proc_is_alive(p));
    int ec = proc_exitcode(p);
    assert_int_equal(proc_close(p), 0);
    return ec;
}

int exec_status(const char *const argv[])
{
    return run_to_end(new_exec(argv));
}

char tmpdir[64];

void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/libproc-spawn-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char real[PATH_MAX];
    assert_non_null(realpath(tmpdir, real));
    size_t len = strlen(real);
    assert_true(len < sizeof tmpdir);
    memcpy(tmpdir, real, len + 1);
}

void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(tu_write_full(fd, text, strlen(text)), 0);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

void remove_tmpdir(const char *const names[])
{
    char path[PATH_MAX];
    for (size_t i = 0; names && names[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

int mark_ran(void *arg)
{
    int wr = *(int *)arg;
    (void)tu_write_full(wr, "ran", 3);
    return 0;
}

/* proc_start on p must fail with want, synchronously: nothing running or
 * unreaped afterwards, no fd leaked, object closable. */
void check_start_fails(proc_t *p, bool daemon, int want)
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

void check_exec_fails(const char *const argv[], int want)
{
    for (int d = 0; d < 2; d++) {
        int fds = tu_count_fds();
        check_start_fails(new_exec(argv), d == 1, want);
        assert_int_equal(tu_count_fds(), fds);
    }
}

void spawn_warm_up(void)
{
    proc_t *w = new_exec((const char *const[]){"/bin/true", NULL});
    assert_int_equal(run_to_end(w), 0);
    w = proc_new(NULL, NULL);
    assert_non_null(w);
    assert_int_equal(proc_set_daemon(w, true), 0);
    assert_int_equal(run_to_end(w), 0);
}
