/* SPDX-License-Identifier: MIT */
/* Waiting for the IPC objects: robust process-shared mutexes, futex channels, spins, plocks. */
#include "ipc_lock.h"
#include "sys.h"
#include "thread.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <unistd.h>

/*
 * pthread_mutex_clocklock() waits on CLOCK_MONOTONIC (glibc 2.30+). Without it
 * (other C libraries, and ThreadSanitizer, which does not intercept it) timed
 * waits use pthread_mutex_timedlock() in slices on CLOCK_REALTIME, re-armed
 * from the monotonic deadline, so that a jump of the wall clock shifts a wait
 * by at most one slice.
 */
#if defined(__SANITIZE_THREAD__)
#define IPC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IPC_TSAN 1
#endif
#endif
#if defined(__GLIBC__) && !defined(IPC_TSAN) &&                                                    \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
#define IPC_HAVE_CLOCKLOCK 1
#endif

#ifdef IPC_TSAN
/* gcc 12's TSan records a pthread_mutex_timedlock() only when it returns 0. */
#include <sanitizer/tsan_interface.h>
#define TSAN_NOTE_OWNERDEAD(m, r)                                                                  \
    do {                                                                                           \
        if ((r) == EOWNERDEAD) {                                                                   \
            __tsan_mutex_pre_lock((m), __tsan_mutex_try_lock);                                     \
            __tsan_mutex_post_lock((m), __tsan_mutex_try_lock, 0);                                 \
        }                                                                                          \
    } while (0)
#else
#define TSAN_NOTE_OWNERDEAD(m, r) ((void)0)
#endif

#define NSEC 1000000000LL

/* -------------------------------------------------------- robust mutexes */

int proc__ipc_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int r = pthread_mutexattr_init(&attr);
    if (r)
        return -r;
    r = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!r)
        r = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!r)
        r = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    if (!r)
        r = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return -r;
}

/* Locks m, waiting until the monotonic time at. Positive errno. */
static int lock_until(pthread_mutex_t *m, const struct timespec *at)
{
#ifdef IPC_HAVE_CLOCKLOCK
    return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, at);
#else
    for (;;) {
        long long left = proc__ns_until(at);
        if (left <= 0) {
            int r = pthread_mutex_trylock(m);
            return r == EBUSY ? ETIMEDOUT : r;
        }
        if (left > NSEC / 4)
            left = NSEC / 4;
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        proc__timespec_add_ns(&rt, left);
        int r = pthread_mutex_timedlock(m, &rt);
        TSAN_NOTE_OWNERDEAD(m, r);
        if (r != ETIMEDOUT)
            return r;
    }
#endif
}

static bool before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/*
 * Locks m by the monotonic time at (NULL: no limit), in slices of
 * IPC_SLICE_MS. An unlock wakes one sleeping waiter; if that one is killed
 * before it takes the mutex, the others could sleep on a free mutex until the
 * next contention. Linux 5.5 and later wake another waiter themselves then
 * (glibc leaves the mutex in robust_list.list_op_pending); on older kernels
 * the end of a slice ends such a sleep. Positive errno.
 */
#define IPC_SLICE_MS 250
static int lock_by(pthread_mutex_t *m, const struct timespec *at)
{
    for (;;) {
        struct timespec slice;
        proc__mono_after(&slice, (long long)IPC_SLICE_MS * 1000000LL);
        bool last = at && !before(&slice, at);
        int r = lock_until(m, last ? at : &slice);
        if (r != ETIMEDOUT || last)
            return r;
    }
}

int proc__ipc_mutex_lock(pthread_mutex_t *m, const struct proc__deadline *d)
{
    int r = pthread_mutex_trylock(m);
    if (r == EBUSY)
        r = d->timeout_ms == 0 ? ETIMEDOUT : lock_by(m, d->timeout_ms < 0 ? NULL : &d->at);
    return -r;
}

/* Between two reads of a word another process is about to change. */
#define IPC_SPIN_PAUSES 8

/*
 * The internal mutexes are held only for a short copy, so a contended locker
 * retries for up to PROC__IPC_SPIN_NS before it sleeps in the kernel, which spares
 * both it and the unlocker (FUTEX_WAKE) a syscall. It retries every
 * IPC_BACKOFF_NS, not at once: a producer and a consumer that both hammer the
 * mutex keep its cache line (and the state's) bouncing between their CPUs on
 * every message, while a backed-off one lets the holder do several operations
 * in a row (this doubled a queue's throughput). The pauses read only the
 * clock; after each failed try it yields the CPU, which the holder may be
 * waiting for when more processes are runnable than there are CPUs. Positive
 * errno; EBUSY once PROC__IPC_SPIN_NS has passed.
 */
#define IPC_BACKOFF_NS 2000
static int trylock_spin(pthread_mutex_t *m)
{
    struct timespec now, until;
    clock_gettime(CLOCK_MONOTONIC, &now);
    until = now;
    proc__timespec_add_ns(&until, PROC__IPC_SPIN_NS);
    for (;;) {
        struct timespec retry = now;
        proc__timespec_add_ns(&retry, IPC_BACKOFF_NS);
        do {
            for (int k = 0; k < IPC_SPIN_PAUSES; k++)
                proc__cpu_relax();
            clock_gettime(CLOCK_MONOTONIC, &now);
        } while (before(&now, &retry));
        int r = pthread_mutex_trylock(m);
        if (r != EBUSY)
            return r;
        if (!before(&now, &until))
            return EBUSY;
        sched_yield();
    }
}

int proc__ipc_enter(pthread_mutex_t *m, const struct proc__deadline *d, proc__ipc_repair_fn *repair,
                    void *obj)
{
    int r = pthread_mutex_trylock(m);
    if (r == EBUSY)
        r = trylock_spin(m);
    if (r == EBUSY) {
        if (d->timeout_ms < 0) {
            r = lock_by(m, NULL);
        } else {
            struct timespec at;
            proc__mono_after(&at, (long long)PROC__IPC_GRACE_MS * 1000000LL);
            if (d->timeout_ms > 0 && before(&at, &d->at))
                at = d->at;
            r = lock_by(m, &at);
        }
    }
    if (r == EOWNERDEAD) {
        repair(obj);
        r = pthread_mutex_consistent(m);
    }
    return -r;
}

void proc__ipc_leave(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
}

/* ------------------------------------------------------------- wait channels */

int proc__ipc_wait(struct proc__ipc_chan *ch, pthread_mutex_t *m, const struct proc__deadline *d,
                   proc__ipc_repair_fn *repair, void *obj)
{
    if (proc__deadline_passed(d)) {
        pthread_mutex_unlock(m);
        return -ETIMEDOUT;
    }
    atomic_store(&ch->waiting, 1);
    uint32_t seq = atomic_load(&ch->seq);
    pthread_mutex_unlock(m);
    /* Shared: the word lives in MAP_SHARED memory. EINTR does not restart
     * the wait, whose deadline is absolute. */
    int r = proc__sys_futex_wait(&ch->seq, seq, d->timeout_ms > 0 ? &d->at : NULL, true);
    if (r == -ETIMEDOUT)
        return -ETIMEDOUT;
    if (r < 0 && r != -EAGAIN && r != -EINTR)
        return r;
    return proc__ipc_enter(m, d, repair, obj);
}

void proc__ipc_wake_force(struct proc__ipc_chan *ch)
{
    atomic_store(&ch->waiting, 0);
    atomic_fetch_add(&ch->seq, 1);
    proc__sys_futex_wake(&ch->seq, INT_MAX, true);
}

bool proc__ipc_spin_while(const _Atomic uint64_t *word, uint64_t val,
                          const struct proc__deadline *d)
{
    if (proc__deadline_passed(d))
        return false;
    struct timespec until;
    proc__mono_after(&until, PROC__IPC_SPIN_NS);
    for (;;) {
        for (int i = 0; i < 16; i++) {
            if (atomic_load_explicit(word, memory_order_relaxed) != val)
                return true;
            for (int k = 0; k < IPC_SPIN_PAUSES; k++)
                proc__cpu_relax();
        }
        if (proc__ns_until(&until) <= 0)
            return false;
        sched_yield();
    }
}

bool proc__ipc_spin_more(struct proc__ipc_spin *s, const struct proc__deadline *d)
{
    if (proc__deadline_passed(d))
        return false;
    if (!s->started) {
        s->started = true;
        proc__mono_after(&s->until, PROC__IPC_SPIN_NS);
        return true;
    }
    if (proc__ns_until(&s->until) <= 0)
        return false;
    sched_yield();
    return true;
}

void proc__ipc_wake(struct proc__ipc_chan *ch)
{
    if (atomic_load_explicit(&ch->waiting, memory_order_relaxed))
        proc__ipc_wake_force(ch);
}

/* ------------------------------------------------- process-private handles */

#define PLOCK_WAITERS 0x80000000u /* pids are below 2^22 */

/* A word naming another process was copied by fork() while a thread of the
 * parent held it: in this process nobody holds it. */
int proc__ipc_plock_lock_by(proc__ipc_plock *l, const struct proc__deadline *d)
{
    uint32_t self = (uint32_t)proc__self_pid(), v = 0;
    if (atomic_compare_exchange_strong(l, &v, self))
        return 0;
    bool slept = false;
    for (;;) {
        if (v == 0) {
            if (atomic_compare_exchange_strong(l, &v, self | PLOCK_WAITERS))
                return 0;
            continue;
        }
        if ((v & ~PLOCK_WAITERS) != self) {
            if (atomic_compare_exchange_strong(l, &v, self))
                return 0;
            continue;
        }
        if (d && proc__deadline_passed(d)) {
            /* The unlock's one wake-up may have been ours: pass it on, or a
             * waiter without a deadline could sleep on a free lock. */
            if (slept)
                proc__sys_futex_wake(l, 1, false);
            return -ETIMEDOUT;
        }
        if (!(v & PLOCK_WAITERS)) {
            if (!atomic_compare_exchange_strong(l, &v, v | PLOCK_WAITERS))
                continue;
            v |= PLOCK_WAITERS;
        }
        proc__sys_futex_wait(l, v, d && d->timeout_ms > 0 ? &d->at : NULL, false);
        slept = true;
        v = atomic_load(l);
    }
}

void proc__ipc_plock_lock(proc__ipc_plock *l)
{
    proc__ipc_plock_lock_by(l, NULL);
}

void proc__ipc_plock_unlock(proc__ipc_plock *l)
{
    if (atomic_exchange(l, 0) & PLOCK_WAITERS)
        proc__sys_futex_wake(l, 1, false);
}
