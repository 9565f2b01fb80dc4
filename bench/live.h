/* SPDX-License-Identifier: MIT */
/*
 * What may still run, and the fatal paths that end it: every child a batch
 * starts is listed in `live`, so that an error or SIGINT/SIGTERM/SIGHUP kills
 * and reaps it (no child outlives the benchmark, no zombie stays). Also the
 * checked reap/join helpers that die on a child that did not exit with 0.
 */
#ifndef PROC_BENCH_LIVE_H
#define PROC_BENCH_LIVE_H

#include <libproc/pool.h>
#include <libproc/proc.h>

#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

/* The children of the batch that runs; live_reset() empties it afterwards. */
struct live_batch {
    pid_t *pids; /* raw (and libuv) children, 0 once reaped */
    size_t npids;
    proc_t **procs; /* libproc objects, NULL once closed */
    size_t nprocs;
    int fds[2]; /* release or go pipe ends, -1 when closed */
};

extern struct live_batch live;

/*
 * Long-lived objects that outlive single batches (live_reset() leaves them
 * alone): scenario 7's pools, and the Python
 * coprocess of 7-10, which leads its own process group (its multiprocessing
 * children are in it too).
 */
extern proc_pool_t *live_pool;
/* Scenario 7's second pool, made with bind_cpus (on 2+ CPUs). */
extern proc_pool_t *live_pool_bound;
/* Scenario 7's third pool, made with a task_timeout_ms. */
extern proc_pool_t *live_pool_timed;
/* *slot = a new pool made with the fatal signals blocked (the handler must
 * see it there once it has workers); dies if it cannot be made. */
void live_pool_open(proc_pool_t **slot, const proc_pool_opts_t *po);
/* Frees *slot (if any) and clears it, the fatal signals blocked. */
void live_pool_close(proc_pool_t **slot);

struct live_coproc {
    pid_t pid;    /* also the process group; 0: not running */
    int to, from; /* command socket (our end), reply pipe (read end); -1: closed */
};

extern struct live_coproc live_py;

void live_reset(void);
/* Forks one raw child into *slot, which the batch tracks (die() kills it):
 * 0 in the child, its pid in the parent; dies if fork fails. */
pid_t live_fork(pid_t *slot);

/* Kills the coprocess's group, closes its fds and reaps it (not for signal handlers). */
void live_coproc_kill(struct live_coproc *c);
/* Waits for every process of the (dead) group pgid that came to us. */
void reap_group(pid_t pgid);
/* Reaps every remaining child (and orphaned grandchild: we are a subreaper). */
void reap_all_children(bool block);

void install_signal_handlers(void);
void block_fatal_signals(sigset_t *old);

/* Prints the error, kills and reaps everything, exits 1 (or dies of a deferred signal). */
__attribute__((format(printf, 1, 2))) _Noreturn void die(const char *fmt, ...);
/* Between batches: acts on a signal that the handler deferred. */
void check_interrupted(void);

#define CHECK_PROC(expr)                                                                           \
    do {                                                                                           \
        int check_r_ = (expr);                                                                     \
        if (check_r_ < 0)                                                                          \
            die("%s:%d: %s: %s", __FILE__, __LINE__, #expr, strerror(-check_r_));                  \
    } while (0)

/* Waits for a raw child and insists that it exited with status 0. */
void reap_ok(pid_t pid);
/* Joins a libproc child and insists that it exited with 0. */
void join_ok(proc_t *p);
/* Closes a libproc child and clears its slot. */
void close_ok(proc_t **slot);
pid_t spawn_raw(const char *path, char *const argv[], const posix_spawn_file_actions_t *fa);
void read_until_eof(int fd);

#endif /* PROC_BENCH_LIVE_H */
