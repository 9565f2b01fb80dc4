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

proc_t *start_gated_child(tu_gate *g)
{
    assert_int_equal(tu_gate_init(g), 0);
    proc_t *p = proc_new(tu_gate_main, g);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    return p;
}

void subreaper(bool on)
{
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0), 0);
}

void start_and_read_report(proc_t *p, int fds[2], void *out, size_t len, int bound_ms)
{
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);
    assert_int_equal(tu_read_full(fds[0], out, len, bound_ms), (ssize_t)len);
    assert_int_equal(proc_join(p, bound_ms), 0);
    assert_int_equal(proc_exitcode(p), 0);
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

int check_nothing_left(int bound_ms, int fds_at_start)
{
    if (check_no_children_left(bound_ms) != 0)
        return -1;
    int fds = tu_count_fds();
    if (fds != fds_at_start) {
        print_error("open fds: %d before the test, %d after\n", fds_at_start, fds);
        return -1;
    }
    return 0;
}

int kill_leftover_children(void **state)
{
    (void)state;
    kill_children_left(10000);
    return 0;
}

int return_code_main(void *arg)
{
    return (int)(intptr_t)arg;
}

int no_children_left(void **state)
{
    (void)state;
    return check_no_children_left(3000);
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
int settle_reaper(void **state)
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

void run_all_again_without_pidfd(const char *name)
{
    if (getenv("LIBPROC_DISABLE_PIDFD"))
        skip(); /* this is the re-run */
    run_self(name, NULL, true);
}
