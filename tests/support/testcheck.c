/* SPDX-License-Identifier: MIT */
/* The cmocka-side helpers of testcheck.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testcheck.h"

void make_pipe(int fds[2])
{
    assert_int_equal(tu_pipe(fds), 0);
}

void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

ssize_t read_retry(int fd, void *buf, size_t n)
{
    ssize_t r;
    do {
        r = read(fd, buf, n);
    } while (r < 0 && errno == EINTR);
    return r;
}

void assert_no_children(void)
{
    int zombies = -1;
    assert_int_equal(tu_count_children(&zombies), 0);
    assert_int_equal(zombies, 0);
}

void kill_children_left(int bound_ms)
{
    proc_t *left[256];
    size_t n = proc_active_children(left, 256);
    for (size_t i = 0; i < n && i < 256; i++) {
        proc_kill(left[i]);
        proc_join(left[i], bound_ms);
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

void subreaper(bool on)
{
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0), 0);
}

int check_no_children_left(int bound_ms)
{
    int n = tu_wait_children_gone(bound_ms);
    if (n != 0) {
        print_error("test left %d child process(es) behind (%d zombies)\n", n, tu_count_zombies());
        return -1;
    }
    return 0;
}

void run_self(const char *name, const char *mode, bool no_pidfd)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (no_pidfd)
            setenv("LIBPROC_DISABLE_PIDFD", "1", 1);
        if (mode)
            execl(tu_self_exe(), name, "--sub", mode, (char *)NULL);
        else
            execl(tu_self_exe(), name, (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    int st;
    EQ(tu_waitpid(pid, &st), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("re-run '%s'%s failed: status %#x (exit %d, signal %d)", mode ? mode : "all",
                 no_pidfd ? " without pidfd" : "", st, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                 WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
