/* SPDX-License-Identifier: MIT */
/* Monotonic time, deadlines and deadline-bounded condition waits. */
#include "clock.h"

#include <errno.h>
#include <limits.h>

#define NSEC 1000000000LL

int64_t proc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NSEC + ts.tv_nsec;
}

void proc__timespec_add_ns(struct timespec *ts, long long ns)
{
    ts->tv_sec += (time_t)(ns / NSEC);
    ts->tv_nsec += (long)(ns % NSEC);
    if (ts->tv_nsec >= NSEC) {
        ts->tv_sec++;
        ts->tv_nsec -= NSEC;
    }
}

void proc__mono_after(struct timespec *ts, long long ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    proc__timespec_add_ns(ts, ns);
}

long long proc__ns_until(const struct timespec *at)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)(at->tv_sec - now.tv_sec) * NSEC + (at->tv_nsec - now.tv_nsec);
}

int proc__deadline_init(struct proc__deadline *d, int timeout_ms)
{
    if (timeout_ms < -1)
        return -EINVAL;
    d->timeout_ms = timeout_ms;
    d->at.tv_sec = 0;
    d->at.tv_nsec = 0;
    if (timeout_ms > 0)
        proc__mono_after(&d->at, (long long)timeout_ms * 1000000LL);
    return 0;
}

int proc__deadline_left_ms(const struct proc__deadline *d)
{
    if (d->timeout_ms <= 0)
        return d->timeout_ms;
    return proc__poll_ms(proc__ns_until(&d->at));
}

int proc__poll_ms(long long ns)
{
    if (ns <= 0)
        return 0;
    long long ms = ns / 1000000 + (ns % 1000000 != 0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

bool proc__deadline_passed(const struct proc__deadline *d)
{
    if (d->timeout_ms <= 0)
        return d->timeout_ms == 0;
    return proc__ns_until(&d->at) <= 0;
}

int proc__cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int r = pthread_condattr_init(&attr);
    if (r)
        return -r;
    r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (!r)
        r = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return -r;
}

int proc__cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu, const struct proc__deadline *d)
{
    if (d->timeout_ms < 0)
        return -pthread_cond_wait(cv, mu);
    if (d->timeout_ms == 0)
        return -ETIMEDOUT;
    int r = pthread_cond_timedwait(cv, mu, &d->at);
    return r == ETIMEDOUT ? -ETIMEDOUT : -r;
}
