/* SPDX-License-Identifier: MIT */
/*
 * The fork server tests' fixture (tests/support/forkserver_fixture.c),
 * shared by test_forkserver.c (what a served child is and gets) and
 * test_forkserver_faults.c (no server, a busy start, the server or the
 * caller killed, locks held): finding the server, starting and running a
 * served child, and the targets both start. The server's children have only
 * the fds they are given, so they report through their standard streams.
 * Include after <cmocka.h>.
 */
#ifndef LIBPROC_FORKSERVER_FIXTURE_H
#define LIBPROC_FORKSERVER_FIXTURE_H

#include <stddef.h>
#include <sys/types.h>

#include <libproc/proc.h>

#define BOUND_MS 10000 /* bound on any hang; never reached when things work */

/* Our children (any state) other than keep; *last gets one of them. */
int children_except(pid_t keep, pid_t *last);

/* The server just started: this process's only child (0 when it is not). */
pid_t find_server(void);

/* proc_new(fn, arg) set to start through the fork server, asserted. */
proc_t *served(proc_target_fn *fn, void *arg);

/* Starts p, joins it and returns its exit code; p is closed. (Not
 * spawn_fixture.h's run_to_end(), which checks more and bounds longer: both
 * are in libproc_testsupport.) */
int run_to_exit(proc_t *p);

/* Runs p with its stdout on a pipe and reads its whole report of len bytes:
 * its exit code; p is closed. */
int run_reporting(proc_t *p, void *report, size_t len);

/* For a served child's target: writes rec to stdout (run_reporting()'s
 * pipe); 0, or 99 when it could not. */
int report(const void *rec, size_t len);

/* The exit codes the tests pass: the server's children see only memory the
 * server had, so an argument without a copy points at static data. */
extern const int zero, seven, nine, term, abrt;

/* A child's target: returns the int arg points to. */
int ret_int(void *arg);

/* A child's target: reads stdin to its end, then returns 3. */
int read_stdin_to_eof(void *arg);

#endif /* LIBPROC_FORKSERVER_FIXTURE_H */
