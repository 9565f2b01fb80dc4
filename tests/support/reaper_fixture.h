/* SPDX-License-Identifier: MIT */
/*
 * The reaper tests' fixture (tests/support/reaper_fixture.c), shared by the
 * test_reaper_*.c programs: children that block until the test lets them
 * go. Include after <cmocka.h>.
 */
#ifndef LIBPROC_REAPER_FIXTURE_H
#define LIBPROC_REAPER_FIXTURE_H

#include <libproc/proc.h>

/* A safety net for children a broken test leaves blocked, never a bound a
 * passing test can reach: starting test_mass_exit's children took more than
 * 30 s under valgrind on a slow machine, and the first ones died of SIGALRM. */
#define CHILD_ALARM_S 300

/* A child that blocks until the write end of its pipe is closed (or a byte
 * arrives), then returns code. */
struct blocker {
    int rfd;
    int wfd; /* closed in the child so that only the test holds it */
    int code;
};

/* Makes the pipe fds (make_pipe(), asserted) and a blocker on it that
 * returns code. */
struct blocker blocker_pipe(int fds[2], int code);

/* A child's target (arg: its struct blocker): blocks as above, returns code. */
int blocker_main(void *arg);

/* Starts a blocker child (asserted). */
proc_t *start_blocker(struct blocker *b);

#endif /* LIBPROC_REAPER_FIXTURE_H */
