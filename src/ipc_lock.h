/* SPDX-License-Identifier: MIT */
/*
 * IPC layer: the locks and waits shared by the IPC objects (queue.c, sync.c,
 * conn.c, shm.c): shared mappings, robust process-shared mutexes, futex wait
 * channels, bounded spins, and the fork-aware lock of a process-private
 * handle. Built on the base layer only (clock.h, sys.h, thread.h).
 *
 * The waiting protocol (queue, semaphore, event):
 *  - the object's state lives in MAP_SHARED memory and changes only while its
 *    robust mutex is held;
 *  - a waiter, holding the mutex, raises its channel's `waiting` flag, reads
 *    `seq`, releases the mutex and sleeps in FUTEX_WAIT on `seq`;
 *  - a waker, holding the mutex, calls proc__ipc_wake() BEFORE it makes its change
 *    visible (the commit): if the flag is up it clears it, bumps `seq` and
 *    wakes every sleeper. The sleepers then queue up on the mutex, which the
 *    waker still holds. If the waker dies anywhere in between, the kernel
 *    marks the mutex owner-died and wakes one of them; the next locker (see
 *    proc__ipc_enter) repairs the object and wakes every channel. So no killed
 *    process can leave a sleeper asleep while there is something to see, and a
 *    killed sleeper holds nothing.
 */
#ifndef LIBPROC_IPC_LOCK_H
#define LIBPROC_IPC_LOCK_H

#include "clock.h"

#include <libproc/ipc.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------ shared memory */

/* Zeroed MAP_SHARED|MAP_ANONYMOUS memory; noreserve adds MAP_NORESERVE. NULL + errno. */
void *proc__ipc_map(size_t len, bool noreserve);
void proc__ipc_unmap(void *mem, size_t len);

/* -------------------------------------------------------- robust mutexes */

/* Process-shared, robust, error-checking. 0 or -errno. */
int proc__ipc_mutex_init(pthread_mutex_t *m);

/*
 * Locks m by d: 0; -EOWNERDEAD (the previous owner died: the caller holds m
 * and must repair, then pthread_mutex_consistent); -ETIMEDOUT; -EDEADLK (the
 * calling thread holds it); -ENOTRECOVERABLE. A blocked caller re-checks the
 * mutex every 250 ms, so that a waiter killed right after an unlock woke it
 * cannot leave the others asleep on a free mutex (kernels before 5.5).
 */
int proc__ipc_mutex_lock(pthread_mutex_t *m, const struct proc__deadline *d);

/* Repairs an object whose mutex the caller got with EOWNERDEAD. */
typedef void proc__ipc_repair_fn(void *obj);

/*
 * Locks an object's internal mutex. The mutex is only ever held for a bounded
 * copy, so a caller whose deadline has passed (timeout 0 included) still
 * waits up to PROC__IPC_GRACE_MS for it. On EOWNERDEAD it runs repair(obj) and
 * marks the mutex consistent. 0 (held), -ETIMEDOUT, -ENOTRECOVERABLE.
 */
#define PROC__IPC_GRACE_MS 20
int proc__ipc_enter(pthread_mutex_t *m, const struct proc__deadline *d, proc__ipc_repair_fn *repair,
                    void *obj);
void proc__ipc_leave(pthread_mutex_t *m);

/* ------------------------------------------------------------- wait channels */

struct proc__ipc_chan {
    _Atomic uint32_t seq;     /* futex word: bumped by every wake */
    _Atomic uint32_t waiting; /* someone may sleep on seq */
};

/*
 * Called with m held (by proc__ipc_enter) when the caller must wait on ch: releases
 * m, sleeps until woken or d passes, and re-enters. 0 with m held again (the
 * caller re-checks its condition); -ETIMEDOUT or another error with m
 * released.
 */
int proc__ipc_wait(struct proc__ipc_chan *ch, pthread_mutex_t *m, const struct proc__deadline *d,
                   proc__ipc_repair_fn *repair, void *obj);

/* With the mutex held, before the commit: wakes every sleeper if there may be one. */
void proc__ipc_wake(struct proc__ipc_chan *ch);

/* Repair: wakes every sleeper unconditionally. */
void proc__ipc_wake_force(struct proc__ipc_chan *ch);

/*
 * Before raising a channel's flag: spins, holding nothing, for up to
 * PROC__IPC_SPIN_NS while *word == val (relaxed loads and a pause instruction), so
 * that a short wait costs neither side a futex syscall. Between batches of
 * reads it yields the CPU: when more processes are runnable than there are
 * CPUs, the one being waited for may need this CPU (a 1 -> 3 -> 1 pipeline on
 * 2 CPUs ran 1.2-2.3x faster for it). A yield may last a time slice when
 * other processes are runnable: PROC__IPC_SPIN_NS bounds the spinning, not the
 * wall time. true if *word changed; false at once if d has passed.
 */
#define PROC__IPC_SPIN_NS 20000
bool proc__ipc_spin_while(const _Atomic uint64_t *word, uint64_t val,
                          const struct proc__deadline *d);

/*
 * The same bounded spin for a wait that can only be checked by a system call
 * (a socket): the caller retries while proc__ipc_spin_more() says so, then sleeps.
 * The first call opens a window of PROC__IPC_SPIN_NS, later ones yield the CPU
 * while it is open; false once it has closed or d has passed.
 * Zero-initialise.
 */
struct proc__ipc_spin {
    bool started;
    struct timespec until;
};
bool proc__ipc_spin_more(struct proc__ipc_spin *s, const struct proc__deadline *d);

/* ------------------------------------------------- process-private handles */

/*
 * A lock for a handle in one process's private memory (a proc_conn_t) that
 * fork() may copy while a thread of the parent holds it: the word names the
 * holding process, so in a fork child a held copy counts as free. Zero is
 * unlocked. Not for memory shared between processes.
 */
typedef _Atomic uint32_t proc__ipc_plock;
void proc__ipc_plock_lock(proc__ipc_plock *l);
/* The same, giving up when d (NULL: never) has passed: 0 or -ETIMEDOUT. */
int proc__ipc_plock_lock_by(proc__ipc_plock *l, const struct proc__deadline *d);
void proc__ipc_plock_unlock(proc__ipc_plock *l);

#endif /* LIBPROC_IPC_LOCK_H */
