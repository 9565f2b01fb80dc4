/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the IPC tests (test_ipc_*.c), on top of testutil.h; the
 * functions are in tests/support/ipc_testutil.c. Include after <cmocka.h>.
 * Children never use cmocka: they report through exit codes, pipes and
 * shared memory.
 */
#ifndef LIBPROC_IPC_TESTUTIL_H
#define LIBPROC_IPC_TESTUTIL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "testutil.h"

/* 1 under ASan/TSan: tests scale their loads down. (The IPC tests are unit
 * tests, built without LIBPROC_TEST_SANITIZED, as is the support library.) */
#if defined(LIBPROC_TEST_SANITIZED) && LIBPROC_TEST_SANITIZED
#define IT_SANITIZED 1
#elif defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define IT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define IT_SANITIZED 1
#endif
#endif
#ifndef IT_SANITIZED
#define IT_SANITIZED 0
#endif

/* Bound on anything that should finish: a hang fails instead of blocking ctest. */
#define IT_BOUND_MS 30000

/* A started libproc child (callback mode); fails the test when it cannot. */
proc_t *it_start(proc_target_fn *fn, void *arg);

/* it_start, daemonic: a case that fails while the child still waits (say, on
 * a lock) does not leave the program waiting for it at exit. */
proc_t *it_start_daemon(proc_target_fn *fn, void *arg);

/* Joins p (bounded by IT_BOUND_MS), closes it and returns its exit code. */
int it_finish(proc_t *p);

/* it_finish() for a child whose work grows with the machine's load (it takes
 * turns on a contended lock, say): the bound is on no progress, not on the
 * total. Waits while *progress keeps changing, failing only after
 * IT_BOUND_MS without a change. */
int it_finish_progressing(proc_t *p, const long *progress);

/* SIGKILLs p, joins and closes it. */
void it_kill(proc_t *p);

/* A wait of `want` ms that started at t0 ended now: fails when it ended
 * early, or so late that it must have restarted its timeout at a signal of
 * a flood (loose, for loaded machines). */
void it_elapsed_ok(int64_t t0, int want);

/* ------------------------------------------------------------ signal flood */

#define IT_FLOOD_MS 15000 /* longest flood */

/* SIGUSR1s received by the handler it_flood_start() installs. */
extern volatile sig_atomic_t it_signals;

/* A flood: a child that sends the test process SIGUSR1 every millisecond
 * for at most IT_FLOOD_MS, to check that waits survive EINTR without
 * restarting their timeout. */
struct it_flood {
    proc_t *p;
    tu_gate stop;
};

/* Installs a SIGUSR1 handler without SA_RESTART (left installed), starts the
 * flood and returns once its first signal came, with it_signals reset: what
 * it counts from then on came during the caller's wait. */
void it_flood_start(struct it_flood *f);

/* Stops the flood and joins its child. */
void it_flood_stop(struct it_flood *f);

/* ---------------------------------------------- killing at every instruction */

/*
 * The traced child is a plain fork() child, not a libproc one: libproc's
 * reaper waits for its children with waitid(P_PIDFD, WEXITED), and the kernel
 * reports a tracee's ptrace stops to every thread of its tracer's process,
 * so the reaper could take a stop the test is waiting for. The child calls
 * only libproc's IPC functions, which are fine in a fork child.
 */

typedef void it_op_fn(void *arg);

struct it_stepper {
    it_op_fn *pre; /* optional: runs in the child before it stops */
    it_op_fn *op;
    void *arg;
    pid_t pid;
};

/* Waits for the traced child's next stop (or end): its wait status. */
int it_stepper_wait(struct it_stepper *s);

/* Starts s->op in a traced child, stopped just before it. false when this
 * system does not permit ptrace (the child is gone then). */
bool it_stepper_start(struct it_stepper *s);

/* Runs one instruction; false once the operation has returned. */
bool it_stepper_step(struct it_stepper *s);

/* Runs up to n instructions. */
void it_stepper_run(struct it_stepper *s, long n);

/* SIGKILLs the traced child and reaps it. */
void it_stepper_kill(struct it_stepper *s);

/* The counting pass of a kill sweep (s started): runs s's operation step by
 * step to its end, then kills the child: the number of steps; *commit is the
 * first step after which committed(s->arg) held (asserted found). */
long it_stepper_count(struct it_stepper *s, bool (*committed)(void *arg), long *commit);

/* Whether a sweep over an operation of `steps` instructions kills at
 * instruction n: every one near commit (where its effect became visible,
 * -1 if unknown), a stride elsewhere. */
bool it_kill_point(long n, long steps, long commit);

/* Where a kill sweep stands: fails unless the effect, once seen (happened)
 * at some n, is seen at every later n too; *first is the first such n (-1
 * before). Not checked under clang's ThreadSanitizer runtime (before LLVM 19),
 * where the same operation in the same state ran 895 instructions to its
 * commit in one run and 897 or more in another (its per-atomic work depends
 * on metadata the forked child inherits, not on the program): there an
 * instruction count is not a program point. The sweep's other checks run. */
void it_sweep_monotone(long n, bool happened, long *first);

#endif /* LIBPROC_IPC_TESTUTIL_H */
