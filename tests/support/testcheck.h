/* SPDX-License-Identifier: MIT */
/*
 * cmocka-side helpers shared by the test programs (testutil.h holds the ones
 * that are safe in forked children and need no cmocka); the functions are in
 * tests/support/testcheck.c. Include after <cmocka.h>.
 */
#ifndef LIBPROC_TESTCHECK_H
#define LIBPROC_TESTCHECK_H

#include <stdbool.h>
#include <sys/types.h>

#include <libproc/proc.h>

#include "testutil.h"

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
 * skipped (and reported so) under an AddressSanitizer runtime that is not
 * fork-safe; under such a ThreadSanitizer runtime the test runs with its
 * forks kept out of the other threads' allocations (the fork gate, see
 * TU_FORK_GATE in testutil.h), and says so. */
#define SKIP_IF_HOST_FORK_UNSAFE()                                                                 \
    do {                                                                                           \
        if (TU_ALLOCATOR_FORK_UNSAFE && !TU_FORK_GATE) {                                           \
            print_message("skipped: this AddressSanitizer runtime is not fork-safe (its "          \
                          "allocator and thread setup); the case runs in the default, tsan and "   \
                          "valgrind configurations\n");                                            \
            skip();                                                                                \
        }                                                                                          \
        if (TU_FORK_GATE)                                                                          \
            print_message("note: this ThreadSanitizer runtime's malloc is not fork-safe: host "    \
                          "forks wait while another thread creates, starts or closes a "           \
                          "process\n");                                                            \
    } while (0)

/* A pipe with O_CLOEXEC on both ends; fails the test when it cannot. */
void make_pipe(int fds[2]);

/* Closes *fd if it is open and sets it to -1. */
void close_fd(int *fd);

/* read(2) retried on EINTR: its result. */
ssize_t read_retry(int fd, void *buf, size_t n);

/* Asserts that no child of ours is left, alive or zombie. */
void assert_no_children(void);

/* After a failed test: kills (and joins, bounded) whatever libproc children
 * it left running and turns the subreaper flag off, so that one failure does
 * not cascade into the next tests or hang the program's exit. */
void kill_children_left(int bound_ms);

/* Inits the gate g and starts a libproc child that waits for it
 * (tu_gate_main), both asserted: the child. */
proc_t *start_gated_child(tu_gate *g);

/* Starts p, whose target writes a report of len bytes to fds[1] (closed
 * here once p started), reads the report from fds[0] into out, then joins p
 * within bound_ms: all asserted, an exit code of 0 included. */
void start_and_read_report(proc_t *p, int fds[2], void *out, size_t len, int bound_ms);

/* Grandchildren orphaned by a test are re-parented to the test process (not
 * to a pid 1 that may never reap them), and the test reaps them itself. */
void subreaper(bool on);

/* For a teardown: waits up to bound_ms until no child of ours is left (the
 * gap between an exit and its reaping); 0, or -1 after printing how many
 * (and how many zombies) the test left behind. */
int check_no_children_left(int bound_ms);

/* For a teardown: check_no_children_left(bound_ms), then 0 only if as many
 * fds are open as fds_at_start (else -1 after printing both counts). */
int check_nothing_left(int bound_ms, int fds_at_start);

/* A teardown: kill_children_left(10000) (a bound never reached when things
 * work); always 0. */
int kill_leftover_children(void **state);

/* A child's target: returns arg, an intptr_t. */
int return_code_main(void *arg);

/* Teardown for every test: no child of ours (live or zombie) may remain;
 * check_no_children_left(3000). */
int no_children_left(void **state);

/* Runs this program (named name in its argv[0]) again, as "--sub mode" or,
 * when mode is NULL, the whole suite, with LIBPROC_DISABLE_PIDFD=1 when
 * no_pidfd, and fails the test unless it exits 0. */
void run_self(const char *name, const char *mode, bool no_pidfd);

/* The body of a program's test_all_again_without_pidfd: runs the whole
 * program (name) again with LIBPROC_DISABLE_PIDFD=1, libproc's switch to
 * the paths kernels without pidfds take; skipped in that re-run itself. */
void run_all_again_without_pidfd(const char *name);

/* Defines the test name (a cmocka test function) as the one call
 * fn(args...): one case of a check shared by several tests. */
#define TEST_CASE(name, fn, ...)                                                                   \
    static void name(void **state)                                                                 \
    {                                                                                              \
        (void)state;                                                                               \
        fn(__VA_ARGS__);                                                                           \
    }

/* Defines the test test_all_again_without_pidfd of program name (a string):
 * run_all_again_without_pidfd(name). */
#define TEST_ALL_AGAIN_WITHOUT_PIDFD(name)                                                         \
    static void test_all_again_without_pidfd(void **state)                                         \
    {                                                                                              \
        (void)state;                                                                               \
        run_all_again_without_pidfd(name);                                                         \
    }

/* Group setup: under a sanitizer runtime whose allocator is not fork-safe
 * (TU_ALLOCATOR_FORK_UNSAFE), brings libproc's reaper thread up (an exec'd
 * child with an exit callback, joined) before the first test, so that no
 * fork meets that thread's setup; elsewhere nothing. 0, or -1 on failure. */
int settle_reaper(void **state);

#endif /* LIBPROC_TESTCHECK_H */
