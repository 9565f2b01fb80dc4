/* SPDX-License-Identifier: MIT */
/*
 * Lock, Semaphore and Event across processes. Each object is one shared page:
 * a robust process-shared mutex, and for the semaphore and the event a value
 * and a futex wait channel (see ipc_lock.h for the waiting protocol).
 *
 * Lock: the robust mutex itself; a dead holder's lock goes to the next
 * acquirer with -EOWNERDEAD. Semaphore and event: every change is a single
 * store made under the mutex after the waiters were woken, so a process
 * killed at any point has made it entirely or not at all, and repair only has
 * to wake everybody.
 */
#include "ipc_lock.h"
#include "sys.h"

#include <errno.h>
#include <limits.h>

struct proc_lock {
    pthread_mutex_t mutex;
    _Atomic pid_t holder; /* thread id of the holder; 0 when free or its holder died */
    size_t map_len;
};

struct proc_sem {
    pthread_mutex_t mutex;
    struct proc__ipc_chan chan;
    _Atomic uint32_t value;
    size_t map_len;
};

struct proc_event {
    pthread_mutex_t mutex;
    struct proc__ipc_chan chan;
    _Atomic uint32_t flag;
    size_t map_len;
};

/* A zeroed shared mapping for an object of size bytes whose first member is its mutex. */
static void *object_new(size_t size)
{
    pthread_mutex_t *m = proc__ipc_map(size, false);
    if (!m) {
        errno = ENOMEM;
        return NULL;
    }
    int r = proc__ipc_mutex_init(m);
    if (r < 0) {
        proc__ipc_unmap(m, size);
        errno = -r;
        return NULL;
    }
    return m;
}

/* ---------------------------------------------------------------------- lock */

/*
 * The calling thread's id, cached per thread. The cached process id is
 * renewed in every fork child, which renews this cache there (the forking
 * thread gets a new id).
 */
static pid_t self_tid(void)
{
    static _Thread_local pid_t tid, tid_pid;
    pid_t pid = proc__self_pid();
    if (tid_pid != pid) {
        tid = proc__sys_gettid();
        tid_pid = pid;
    }
    return tid;
}

proc_lock_t *proc_lock_new(void)
{
    proc_lock_t *l = object_new(sizeof *l);
    if (l)
        l->map_len = sizeof *l;
    return l;
}

/*
 * Ownership is checked against `holder` before calling into pthread, so that
 * relocking and foreign unlocks are answered without tripping the mutex's own
 * error checks (which sanitizers report as bugs). A holder killed between the
 * mutex and `holder` is still seen as dead by the mutex.
 */
int proc_lock_acquire(proc_lock_t *l, int timeout_ms)
{
    struct proc__deadline d;
    if (!l || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    pid_t me = self_tid();
    if (atomic_load(&l->holder) == me)
        return -EDEADLK;
    int r = proc__ipc_mutex_lock(&l->mutex, &d);
    if (r == -EOWNERDEAD)
        pthread_mutex_consistent(&l->mutex); /* the caller holds it and learns of the death */
    if (r == 0 || r == -EOWNERDEAD)
        atomic_store(&l->holder, me);
    return r;
}

int proc_lock_release(proc_lock_t *l)
{
    if (!l)
        return -EINVAL;
    if (atomic_load(&l->holder) != self_tid())
        return -EPERM;
    atomic_store(&l->holder, 0);
    return -pthread_mutex_unlock(&l->mutex);
}

int proc_lock_free(proc_lock_t *l)
{
    /* Not pthread_mutex_destroy: other processes may still use the mutex. */
    if (l)
        proc__ipc_unmap(l, l->map_len);
    return 0;
}

/* ----------------------------------------------------------------- semaphore */

static void sem_repair(void *obj)
{
    proc__ipc_wake_force(&((proc_sem_t *)obj)->chan);
}

proc_sem_t *proc_sem_new(unsigned value)
{
    if (value > INT_MAX) {
        errno = EINVAL;
        return NULL;
    }
    proc_sem_t *s = object_new(sizeof *s);
    if (s) {
        s->map_len = sizeof *s;
        atomic_store(&s->value, value);
    }
    return s;
}

int proc_sem_acquire(proc_sem_t *s, int timeout_ms)
{
    struct proc__deadline d;
    if (!s || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    int r = proc__ipc_enter(&s->mutex, &d, sem_repair, s);
    while (r == 0 && atomic_load(&s->value) == 0)
        r = proc__ipc_wait(&s->chan, &s->mutex, &d, sem_repair, s);
    if (r < 0)
        return r;
    atomic_fetch_sub(&s->value, 1);
    proc__ipc_leave(&s->mutex);
    return 0;
}

int proc_sem_release(proc_sem_t *s)
{
    struct proc__deadline d;
    if (!s)
        return -EINVAL;
    proc__deadline_init(&d, PROC_WAIT_FOREVER);
    int r = proc__ipc_enter(&s->mutex, &d, sem_repair, s);
    if (r < 0)
        return r;
    if (atomic_load(&s->value) >= INT_MAX) {
        r = -EOVERFLOW;
    } else {
        proc__ipc_wake(&s->chan);
        atomic_fetch_add(&s->value, 1);
    }
    proc__ipc_leave(&s->mutex);
    return r;
}

int proc_sem_free(proc_sem_t *s)
{
    if (s)
        proc__ipc_unmap(s, s->map_len);
    return 0;
}

/* --------------------------------------------------------------------- event */

static void event_repair(void *obj)
{
    proc__ipc_wake_force(&((proc_event_t *)obj)->chan);
}

proc_event_t *proc_event_new(void)
{
    proc_event_t *e = object_new(sizeof *e);
    if (e)
        e->map_len = sizeof *e;
    return e;
}

int proc_event_set(proc_event_t *e)
{
    struct proc__deadline d;
    if (!e)
        return -EINVAL;
    if (atomic_load(&e->flag))
        return 0;
    proc__deadline_init(&d, PROC_WAIT_FOREVER);
    int r = proc__ipc_enter(&e->mutex, &d, event_repair, e);
    if (r < 0)
        return r;
    if (!atomic_load(&e->flag)) {
        proc__ipc_wake(&e->chan);
        atomic_store(&e->flag, 1);
    }
    proc__ipc_leave(&e->mutex);
    return 0;
}

int proc_event_clear(proc_event_t *e)
{
    if (!e)
        return -EINVAL;
    atomic_store(&e->flag, 0); /* nobody waits for a clear */
    return 0;
}

bool proc_event_is_set(proc_event_t *e)
{
    return e && atomic_load(&e->flag);
}

int proc_event_wait(proc_event_t *e, int timeout_ms)
{
    struct proc__deadline d;
    if (!e || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    if (atomic_load(&e->flag))
        return 0;
    if (timeout_ms == 0)
        return -ETIMEDOUT;
    int r = proc__ipc_enter(&e->mutex, &d, event_repair, e);
    while (r == 0 && !atomic_load(&e->flag))
        r = proc__ipc_wait(&e->chan, &e->mutex, &d, event_repair, e);
    if (r == 0)
        proc__ipc_leave(&e->mutex);
    return r;
}

int proc_event_free(proc_event_t *e)
{
    if (e)
        proc__ipc_unmap(e, e->map_len);
    return 0;
}
