/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the stress and fault suite (tests/test_stress_*.c), on top
 * of testutil.h and testcheck.h (EQ()); the functions are in
 * tests/support/stress_util.c. Include after <cmocka.h>. No timer is ever
 * used to wait for something: every timeout bounds a hang.
 */
#ifndef LIBPROC_STRESS_UTIL_H
#define LIBPROC_STRESS_UTIL_H

#include "testcheck.h" /* EQ() */
#include "testutil.h"

#include <stdbool.h>
#include <sys/types.h>

#ifdef LIBPROC_TEST_SANITIZED
#define ST_SANITIZED 1
#else
#define ST_SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define ST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ST_TSAN 1
#endif
#endif
#ifndef ST_TSAN
#define ST_TSAN 0
#endif

/* Sizes shrink under sanitizers (fork is many times slower there), never to
 * nothing: the plain build's or a sanitizer build's (LIBPROC_TEST_SANITIZED,
 * set by tests/CMakeLists.txt). */
#define ST_SIZE(plain, sanitized) (ST_SANITIZED ? (sanitized) : (plain))

/* Safety net in every child: a failing test cannot leave a process behind for long. */
#define ST_CHILD_ALARM_S 60

/* Sub-processes receive the fds they need at these numbers. */
#define ST_SUB_FD0 200

/* For a setup: runs one child to its end (started, joined within 10 s,
 * closed), so that libproc's reaper and its fds exist: 0, or -1 on failure. */
int st_warm_up(void);

/* Raises the RLIMIT_NOFILE and RLIMIT_NPROC soft limits to the hard ones. */
void st_raise_limits(void);

/* In a child: every catchable signal back to SIG_DFL and none blocked
 * (cmocka and the sanitizers install handlers for SIGSEGV & co.). */
void st_child_signals_default(void);

/* In a sub-process, the end of a failed check: fmt (printf-style) and a
 * newline on stderr, flushed, then _exit(1) (not exit: libproc's at-exit work
 * would wait for children that are still blocked). */
_Noreturn void st_sub_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A sub-process mode of a program: its name after --sub and its main. */
struct st_sub {
    const char *mode;
    int (*main)(void);
};

/* When argv is "PROG --sub MODE": arms alarm(alarm_s) (a hang in the
 * sub-process shows up as SIGALRM), runs the main of MODE in subs (ended by
 * a NULL mode) and exits with its result, or 2 for an unknown mode.
 * Otherwise returns. */
void st_sub_dispatch(int argc, char **argv, unsigned alarm_s, const struct st_sub *subs);

/* A wait status decoded: exit code 0..255, -signo, or -1000 for neither. */
int st_decode_status(int st);

/* waitpid() that survives EINTR: the status decoded as by
 * st_decode_status(), or -1001 when the wait failed. */
int st_wait_pid(pid_t pid);

/* A pidfd of any process (not only a child), or -errno. */
int st_pidfd_open(pid_t pid);

/* fork + exec of this program as "stress-sub --sub MODE"; fds[i] (below
 * ST_SUB_FD0) becomes fd ST_SUB_FD0 + i in the new program, without
 * O_CLOEXEC, and env entries ("K=V") are added to (or replace those of) the
 * environment. Returns the pid or -errno. */
pid_t st_spawn_sub(const char *mode, const int *fds, int nfds, const char *const *env);

/* st_spawn_sub(mode) with env0 ("K=V", or NULL for none) added to the
 * environment and no fds, asserted, then waited for: its status decoded as
 * by st_wait_pid(). */
int st_run_sub(const char *mode, const char *env0);

#endif /* LIBPROC_STRESS_UTIL_H */
