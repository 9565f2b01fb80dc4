/* SPDX-License-Identifier: MIT */
/*
 * The worker pool tests' fixture (tests/support/pool_fixture.c), shared by
 * the test_pool_*.c programs: the state tasks see, the tasks, and helpers
 * around a pool. Include after <cmocka.h>. The state is set before
 * proc_pool_new(), so that every worker (a fork) inherits it.
 */
#ifndef LIBPROC_POOL_FIXTURE_H
#define LIBPROC_POOL_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libproc/pool.h>

/* Defined under ASan/TSan: tests scale their loads down. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define POOL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define POOL_SANITIZED 1
#endif
#endif

#define BOUND_MS 60000 /* bound on any hang; never reached when things work */
#define MIB ((size_t)1 << 20)
#define HUGE_SIZE (17 * MIB) /* past the arena size the pool keeps */
#define UNTOUCHED 0xdeadbeefcafef00dULL

/* ------------------------------------------------------- state seen by tasks */

extern int g_report_w; /* tasks write their pid here */
extern int g_gate_r;   /* blocking tasks read one byte from here */
extern int g_inited;   /* set by the initializer, in the worker */

struct shared {
    _Atomic int inits;
    _Atomic int fast_hits; /* bad tasks whose input was in the pool's fast region */
};
extern struct shared *g_shared; /* MAP_SHARED, created before the pool */

/* ------------------------------------------------------------------- tasks */

/* out (uint64_t) = in (uint32_t) squared + 7; returns 0. */
int task_square(const void *in, void *out);

/* out = 2 * v for the int v in in; returns v (which may be anything,
 * negative too). */
int task_ret_value(const void *in, void *out);

/* 0 when called with NULL input and output, else 1. */
int task_null_args(const void *in, void *out);

/* How a task_maybe_bad item misbehaves. */
enum {
    BAD_NONE,
    BAD_SEGV,
    BAD_EXIT,
    BAD_KILLED,
    BAD_EXIT_REPORT,
    BAD_BLOCK,
    BAD_SLEEP,  /* overruns any task_timeout_ms: sleeps forever */
    BAD_SPIN,   /* spins forever */
    BAD_NOTERM, /* blocks SIGTERM, then sleeps forever */
};

/* Whether a task_maybe_bad item of this kind overruns (-ETIMEDOUT, not -ECHILD). */
#define BAD_OVERRUNS(how) ((how) >= BAD_SLEEP)

struct bad_in {
    uint32_t value;
    uint32_t how;
};

/* Misbehaves as in->how says (a segfault, _exit(3), waits to be killed after
 * reporting its pid, _exit(3) after reporting its negated pid, blocks on the
 * gate after reporting its pid, or one of the three overruns; counting
 * fast_hits), else out (uint64_t) = value * 3 + 1; returns 0. */
int task_maybe_bad(const void *in, void *out);

/* Tries to create a pool in the worker: the errno that refused it (-1 when
 * it worked). */
int task_nested_pool(const void *in, void *out);

/* out (uint64_t) = in (uint64_t) * 3 + 1; returns 0. */
int task_triple(const void *in, void *out);

/* Reports its pid, blocks until the gate gives a byte, sets out (int, if
 * any) to 55 and returns 5. */
int task_block(const void *in, void *out);

/* out (int) = 1 when the input lies in the pool's fast region, else 2. */
int task_where(const void *in, void *out);

/* out (pid_t) = the worker's pid; returns 0 when the initializer ran there. */
int task_pid(const void *in, void *out);

/* Initializer: counts itself in g_shared->inits, g_inited = its number. */
void init_count(void *arg);

/* out (pid_t) = the worker's number from init_count (unlike its pid, never
 * reused); returns 0 when the initializer ran there. */
int task_worker_number(const void *in, void *out);

/* Initializer that counts itself in g_shared->inits and then segfaults. */
void init_crash(void *arg);

/* out = the bytes of in (1 MiB) inverted. */
int task_big(const void *in, void *out);

/* out = the bytes of in (HUGE_SIZE) plus 1. */
int task_huge(const void *in, void *out);

/* ----------------------------------------------------------------- helpers */

struct pipes {
    int report[2];
    int gate[2];
};

/* Opens the report and gate pipes and points g_report_w, g_gate_r at them. */
void pipes_open(struct pipes *p);

/* Closes them again. */
void pipes_close(struct pipes *p);

/* The next pid a task reported (bounded by BOUND_MS). */
pid_t read_pid(const struct pipes *p);

/* Lets n blocked tasks go on (one byte each). */
void open_gate(const struct pipes *p, int n);

/* proc_pool_new(o), asserted non-NULL and noted for kill_leftovers(). */
proc_pool_t *open_pool(const proc_pool_opts_t *o);

/* A new pool of that many workers, max_tasks_per_child and initializer. */
proc_pool_t *new_pool(int workers, int max_tasks, void (*init)(void *));

/* Frees the pool and asserts that no child process is left. */
void free_pool(proc_pool_t *pool);

/* The orderly end: no new work, every queued task done, workers gone. */
void close_join_free(proc_pool_t *pool);

/* Group setup: maps g_shared. */
int setup_shared(void **state);

/* Teardown: frees the pools a failed test left open (their workers would
 * fail every later test), kills what else it left running; resets the inits. */
int kill_leftovers(void **state);

/* A map of 300 task_maybe_bad items, bad at the given indexes as bad_how
 * says: the map fails with the first bad item's error (-ECHILD, or
 * -ETIMEDOUT for an overrun in a pool with task_timeout_ms), each bad item
 * alone (its output untouched), every other item succeeds. */
void map_with_bad(proc_pool_t *pool, struct pipes *p, const int *bad_idx, const int *bad_how,
                  int nbad);

/* Whether fast jobs are on (LIBPROC_POOL_FAST is not 0). */
bool fast_enabled(void);

/* Applies until an apply runs in a fast job (bounded, never by the clock). */
void fast_warm(proc_pool_t *pool);

/* map_with_bad() until the first death happens in a fast job. */
void map_with_bad_fast(proc_pool_t *pool, struct pipes *p, const int *bad_idx, const int *bad_how,
                       int nbad);

/* Applies a task_maybe_bad item that misbehaves as how says, expecting
 * expect, until one ran in a fast job (bounded); how many did. */
int apply_bad_fast(proc_pool_t *pool, int how, int expect);

/* Creates and frees a pool: libproc's process-wide fds exist afterwards. */
void pool_warm_up(void);

#endif /* LIBPROC_POOL_FIXTURE_H */
