/* SPDX-License-Identifier: MIT */
/*
 * cmocka-side helpers shared by the test programs (testutil.h holds the ones
 * that are safe in forked children and need no cmocka). Include after
 * <cmocka.h> and "testutil.h".
 */
#ifndef LIBPROC_TESTCHECK_H
#define LIBPROC_TESTCHECK_H

#include <errno.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <libproc/proc.h>

/* Compares two integers and prints both in decimal on failure. */
#define EQ(actual, expected)                                                                       \
    do {                                                                                           \
        long long eq_a_ = (long long)(actual);                                                     \
        long long eq_e_ = (long long)(expected);                                                   \
        if (eq_a_ != eq_e_)                                                                        \
            fail_msg("%s:%d: %s == %lld, expected %s == %lld", __FILE__, __LINE__, #actual, eq_a_, \
                     #expected, eq_e_);                                                            \
    } while (0)

/* For tests that fork the whole test process while other threads allocate:
 * skipped (and reported so) where the sanitizer's allocator is not fork-safe
 * (see TU_ALLOCATOR_FORK_UNSAFE in testutil.h). */
#define SKIP_IF_ALLOCATOR_FORK_UNSAFE()                                                            \
    do {                                                                                           \
        if (TU_ALLOCATOR_FORK_UNSAFE) {                                                            \
            print_message("skipped: this sanitizer runtime's allocator is not fork-safe\n");       \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static inline void make_pipe(int fds[2])
{
    assert_int_equal(tu_pipe(fds), 0);
}

static inline void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static inline ssize_t read_retry(int fd, void *buf, size_t n)
{
    ssize_t r;
    do {
        r = read(fd, buf, n);
    } while (r < 0 && errno == EINTR);
    return r;
}

/* Every test ends with no child of ours left, alive or zombie. */
static inline void assert_no_children(void)
{
    int zombies = -1;
    assert_int_equal(tu_count_children(&zombies), 0);
    assert_int_equal(zombies, 0);
}

/* After a failed test: kill whatever it left running, so that one failure
 * does not cascade into the next tests or hang the program's exit. */
static inline void kill_children_left(int bound_ms)
{
    proc_t *left[64];
    size_t n = proc_active_children(left, 64);
    for (size_t i = 0; i < n && i < 64; i++) {
        proc_kill(left[i]);
        proc_join(left[i], bound_ms);
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

/* Grandchildren orphaned by a test are re-parented to the test process (not
 * to a pid 1 that may never reap them), and the test reaps them itself. */
static inline void subreaper(bool on)
{
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0), 0);
}

#endif /* LIBPROC_TESTCHECK_H */
