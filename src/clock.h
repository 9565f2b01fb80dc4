/* SPDX-License-Identifier: MIT */
/*
 * Base layer: monotonic time and the one deadline type every wait in libproc
 * uses (the process core, the IPC objects and the pool alike). Depends on
 * nothing else in libproc.
 */
#ifndef LIBPROC_CLOCK_H
#define LIBPROC_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* A poll(2)-style timeout turned into a point on CLOCK_MONOTONIC. */
struct proc__deadline {
    int timeout_ms;     /* -1 forever, 0 check only, > 0 bounded */
    struct timespec at; /* when timeout_ms > 0 */
};

/* Starts d now: 0, or -EINVAL for timeout_ms < -1. */
int proc__deadline_init(struct proc__deadline *d, int timeout_ms);
/* Milliseconds left, rounded up: -1 forever, 0 once passed. */
int proc__deadline_left_ms(const struct proc__deadline *d);
/* ns as a poll() timeout: rounded up to whole ms, 0 for ns <= 0, at most INT_MAX. */
int proc__poll_ms(long long ns);
/* A bounded deadline (timeout 0 included) whose time has come. */
bool proc__deadline_passed(const struct proc__deadline *d);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t proc__now_ns(void);
/* *ts = the CLOCK_MONOTONIC time ns (>= 0) from now. */
void proc__mono_after(struct timespec *ts, long long ns);
/* Adds ns (>= 0) to ts, keeping tv_nsec normalised. */
void proc__timespec_add_ns(struct timespec *ts, long long ns);
/* Nanoseconds from now until the monotonic time at (negative once passed). */
long long proc__ns_until(const struct timespec *at);

/* A condition variable that waits on CLOCK_MONOTONIC: 0 or -errno. */
int proc__cond_init(pthread_cond_t *cv);
/*
 * Waits on cv (mu held) until woken or d passes: 0 when woken (spuriously
 * too: the caller re-checks its condition), -ETIMEDOUT once d has passed
 * (at once for timeout 0). Not a cancellation point: a cancelled waiter
 * would leave mu locked, so callers disable cancellation around it.
 */
int proc__cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu, const struct proc__deadline *d);

#endif /* LIBPROC_CLOCK_H */
