/* SPDX-License-Identifier: MIT */
/*
 * The spawn tests' fixture (tests/support/spawn_fixture.c), shared by the
 * test_spawn_*.c programs. Include after <cmocka.h>.
 */
#ifndef LIBPROC_SPAWN_FIXTURE_H
#define LIBPROC_SPAWN_FIXTURE_H

#include <stdbool.h>
#include <sys/types.h>

#include <libproc/proc.h>

#define BOUND_MS 60000 /* bound on any hang; never reached when things work */

/* proc_join(p) bounded by BOUND_MS: its result. */
int join_bounded(proc_t *p);

/* A child's target: returns the int arg points to. */
int ret_arg(void *arg);

/* Redirects stdout (not CLOEXEC, so children inherit it) into a pipe, fully
 * buffered. */
void redirect_stdout(void);

/* Puts stdout back: the pipe's read end (its write ends now live only in
 * children), or -1 when stdout was not redirected. */
int restore_stdout(void);

/* Teardown: puts stdout back and kills whatever a failed test left running,
 * so that one failure does not cascade or hang the program's exit. */
int spawn_cleanup(void **state);

/* Reaps pid, dead or dying with its parent joined: it is either ours now or
 * was reaped by that parent before it died (ECHILD). */
void reap_orphan(pid_t pid);

/* How often needle occurs in hay. */
int count_substr(const char *hay, const char *needle);

/* Where needle first occurs in hay, or -1. */
ssize_t pos_of(const char *hay, const char *needle);

/* Reads one '\n'-terminated line (without the '\n'), bounded by BOUND_MS. */
void read_line(int fd, char *buf, size_t cap);

/* proc_new_exec(argv), asserted. */
proc_t *new_exec(const char *const argv[]);

/* Starts p, joins it and returns its exit code; closes p. */
int run_to_end(proc_t *p);

/* run_to_end() of an exec child of argv. */
int exec_status(const char *const argv[]);

/* The directory make_tmpdir() created (its real path). */
extern char tmpdir[64];

/* Creates a fresh directory under /tmp, in tmpdir. */
void make_tmpdir(void);

/* Writes text to path, with mode. */
void write_file(const char *path, const char *text, mode_t mode);

/* Removes the files names (NULL-terminated, may be NULL) in tmpdir, then
 * tmpdir itself. */
void remove_tmpdir(const char *const names[]);

/* A child's target: writes "ran" to the fd arg points to. */
int mark_ran(void *arg);

/* proc_start on p (made daemonic if daemon) must fail with want,
 * synchronously: nothing running or unreaped afterwards, object closable. */
void check_start_fails(proc_t *p, bool daemon, int want);

/* check_start_fails() of an exec child of argv, daemonic and not, with no fd
 * leaked. */
void check_exec_fails(const char *const argv[], int want);

/* Runs an exec child and a daemonic one: libproc's process-wide state is
 * set up afterwards. */
void spawn_warm_up(void);

#endif /* LIBPROC_SPAWN_FIXTURE_H */
