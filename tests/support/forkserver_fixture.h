/* SPDX-License-Identifier: MIT */
/*
 * The fork server tests' fixture (tests/support/forkserver_fixture.c),
 * shared by test_forkserver.c (what a served child is and gets) and
 * test_forkserver_faults.c (no server, a busy start, the server or the
 * caller killed, locks held): finding the server, starting and running a
 * served child, and the targets both start. The server's children have only
 * the fds they are given, so they report through their standard streams.
 * Also the two modes of a program that runs once plain and once with every
 * callback-mode child through the server (test_proc_object.c).
 * Include after <cmocka.h>.
 */
#ifndef LIBPROC_FORKSERVER_FIXTURE_H
#define LIBPROC_FORKSERVER_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <libproc/proc.h>

#include "testutil.h"

#define BOUND_MS 60000 /* bound on any hang; never reached when things work */

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

/* ---- a program in two modes: plain, or, given SERVED_ARG as its argument,
 * served: the server starts first and every callback-mode child the program
 * starts goes through it. The same children work in both: they take their
 * argument as a copy and talk to the parent through their standard streams
 * (a child of the server has no other fd of ours, and no memory we wrote
 * after the server started). */

#define SERVED_ARG "forkserver"

/* For main(), first: the mode from the arguments (none, or SERVED_ARG),
 * then in served mode the server, started while no thread exists. 0, or -1
 * after printing why (a bad argument, the server did not start). */
int mode_init(int argc, char **argv);

/* True in served mode. */
bool served_mode(void);

/* proc_new(fn, NULL) with a copy of the len bytes at arg as the target's
 * argument (none when arg is NULL), through the server in served mode:
 * asserted. */
proc_t *new_child(proc_target_fn *fn, const void *arg, size_t len);

/* fd in plain mode, where a forked child inherits every fd of ours; -1 in
 * served mode, where a child has no fd of ours but its standard streams. */
int inherited_fd(int fd);

/* A child's target: closes the fd *arg (inherited_fd() of a gate's write
 * end, which would keep the gate shut; -1: none), then waits without bound
 * for the gate on its stdin. 0 once it opened, 99 when the wait failed. */
int stdin_gate_main(void *arg);

/* Inits the gate g and makes a new_child() that waits for it on its stdin
 * (stdin_gate_main), not started: asserted. */
proc_t *new_stdin_gated(tu_gate *g);

/* new_stdin_gated(g), started: asserted. */
proc_t *start_stdin_gated(tu_gate *g);

/* assert_no_children(), but in served mode our one child left must be the
 * server, still running. */
void assert_no_children_but_server(void);

#endif /* LIBPROC_FORKSERVER_FIXTURE_H */
