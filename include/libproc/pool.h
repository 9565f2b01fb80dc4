/* SPDX-License-Identifier: MIT */
/**
 * @file
 * libproc: worker pools. Python's multiprocessing.Pool for C: apply, map,
 * apply_async (futures) and imap / imap_unordered (streams of items of any
 * size, proc_pool_imap()) over a fixed number of forked worker processes.
 *
 * The conventions of <libproc/proc.h> apply: int functions return 0 (or a
 * documented non-negative value) or a negative errno, pointer functions NULL
 * with errno set; a NULL object is -EINVAL except that proc_pool_free(NULL)
 * is 0 and proc_future_free(NULL) does nothing; timeouts are poll(2)-style
 * milliseconds (PROC_WAIT_FOREVER waits, 0 only checks, below -1 is -EINVAL)
 * on CLOCK_MONOTONIC, and a signal handler interrupting a wait does not
 * restart the full timeout. Nothing prints, aborts or exits. Every fd is
 * O_CLOEXEC.
 *
 * Workers are daemonic callback-mode children (proc_new() + proc_start(),
 * no exec), named "PoolWorker-N", so a task is a plain function pointer of
 * the program and sees the memory of the parent as it was when its worker
 * was forked. Inputs are copied into memory shared with the workers, outputs
 * are copied from there straight into the caller's buffer; small items go in
 * chunks (as Python's chunksize), so a map of a million tiny items costs a
 * few dozen round trips to the workers.
 *
 * Two paths, same results. When every worker is idle and the pool has
 * nothing queued, proc_pool_apply() and proc_pool_map() run as a "fast job":
 * the calling thread borrows the workers, copies the inputs into one shared
 * region (jobs up to 4 MiB of inputs plus outputs), wakes the workers, which
 * claim chunks of n / (16 * workers) items from a shared counter, and sleeps
 * until they are done; no other thread is involved. Otherwise (a busy pool,
 * a bigger job, a second concurrent fast job, futures, streams,
 * max_tasks_per_child, max_memory_per_child) the job joins the pool's
 * queue and the pool's own thread hands it out in chunks of
 * n / (4 * workers). Work queued while a fast job runs starts when it
 * ends. A stream counts as queued work until it is over (done or freed, and
 * drained to the workers): while one is open, apply and map take the queue.
 * (Test hook: LIBPROC_POOL_FAST=0 in the environment, read by
 * proc_pool_new(), turns fast jobs off for that pool, so that a test suite
 * can run every job through the queue; LIBPROC_POOL_KILL_DELAY_MS=N delays
 * the SIGKILL of a task that overran task_timeout_ms by N ms.)
 *
 * Workers keep the CPU affinity of the thread that calls proc_pool_new().
 * With bind_cpus they are bound one per CPU instead, spread over the CPUs
 * that thread may run on (a pool of more workers than CPUs puts several on a
 * CPU; with a single allowed CPU nothing is bound): this can help where the
 * scheduler places a woken process on a busy CPU, and then tasks run with the
 * binding (threads or processes a task starts share its one CPU unless the
 * task widens its mask with sched_setaffinity(2)).
 *
 * Crash safety: a worker that dies while running a task (crash, signal,
 * SIGKILL from outside, _exit() or exit() in the task) fails exactly that
 * task with -ECHILD. The pool notices the death on the worker's pidfd
 * (proc_sentinel()), keeps the outputs of the tasks of the same chunk that
 * had already finished, runs the tasks that had not yet started on other
 * workers, and starts a replacement worker. Nothing hangs and no other task
 * is affected (Python's Pool hangs here). In a fast job the same holds; the
 * items nobody had started when the death was seen go to the queue, where
 * the replacement helps with them. A worker that dies between tasks
 * fails nothing. If workers keep dying before their initializer finishes
 * (workers + 2 such deaths in a row, with no worker finishing its
 * initializer in between), the pool stops starting workers: once none is
 * left, every pending and later task fails with -ECHILD (no endless respawn).
 *
 * A pool belongs to the process that created it; in any other process (e.g.
 * a forked child holding a copy) every call returns -ECHILD (NULL + ECHILD
 * for proc_pool_submit()) and proc_pool_free() does nothing. Futures and
 * streams, too, are for the process that made them.
 *
 * Each pool has one thread of its own in the parent (all signals blocked)
 * that hands out the work and forks replacement workers while the caller's
 * threads keep running; the fork-safety notes of the README apply to tasks
 * and initializers as to any callback-mode child. A process that is itself
 * a daemonic libproc child (e.g. a pool worker) cannot create a pool
 * (NULL + EPERM), as it cannot start children.
 */
#ifndef LIBPROC_POOL_H
#define LIBPROC_POOL_H

#include <libproc/proc.h>

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A task: runs in a worker. in points to in_size bytes of input (NULL when
 * in_size is 0); out to out_size bytes for the output, zero-filled before the
 * call (NULL when out_size is 0). Returns 0 on success; any other value is
 * the task's failure and is handed back as is (see proc_pool_apply()).
 */
typedef int proc_task_fn(const void *in, void *out);

/** Pool options; a zero-filled struct (or NULL) means the defaults. */
typedef struct proc_pool_opts {
    int workers;             /**< number of workers; 0 = proc_cpu_count() */
    int max_tasks_per_child; /**< 0 = unlimited; else a worker is replaced after that many tasks */
    /** If not NULL, runs once in each worker, before its first task. */
    void (*initializer)(void *arg);
    void *initarg; /**< argument of initializer */
    /**
     * Pebble's and billiard's per-task timeout (0: none): a task (an apply, a
     * map item, a future) that runs longer than this many milliseconds fails
     * with -ETIMEDOUT; its worker is killed with SIGKILL (a task cannot block
     * or catch it) and replaced, and every other task goes on as after a
     * crash (see "Crash safety"). The time counts from the moment the task
     * starts in its worker, not from the call. Tasks pay nothing for it: the
     * thread that waits for the workers looks at which task each one runs,
     * at least 8 times per timeout, so a task is never stopped before its
     * time is up and at most timeout / 8 (plus scheduling delay) after.
     */
    int task_timeout_ms;
    /**
     * billiard's memory cap (0: none): a worker whose own resident memory (anonymous
     * pages: heap and stacks, not the pool's shared buffers or libraries) exceeds this
     * many bytes after a chunk of tasks hands in that chunk's results and exits; a
     * replacement starts. Nothing is lost or failed because of it. Checked once per
     * chunk (an apply or a future is a chunk of one task); a pool with a cap runs every
     * job through its queue (no fast jobs).
     */
    size_t max_memory_per_child;
    /** false (default): workers keep the creator's CPU affinity; true: one per allowed CPU. */
    bool bind_cpus;
    /**
     * false (default): workers are forked from the creating process; true: workers and
     * their replacements are made by the fork server (proc_forkserver_start(), which must
     * be running: proc_pool_new() fails with ENOTCONN otherwise), so a pool is safe to
     * create and keep alive in a program with threads. Workers then see the program's
     * memory as it was when the server started: the initializer's initargs must point to
     * data that existed then (a static object, or one made before proc_forkserver_start()),
     * and functions must not come from a library loaded after it. Tasks, their inputs
     * and results travel as usual.
     */
    bool use_forkserver;
} proc_pool_opts_t;

/** A pool of worker processes. Opaque; create with proc_pool_new(), free with proc_pool_free(). */
typedef struct proc_pool proc_pool_t;

/** The pending result of proc_pool_submit() (Python's AsyncResult). */
typedef struct proc_future proc_future_t;

/**
 * Creates a pool and starts its workers (Python's Pool(processes,
 * initializer, initargs, maxtasksperchild)). opts NULL means the defaults.
 * max_tasks_per_child counts task calls: with 1, every task runs in a fresh
 * process (a map item is one task, even though items travel in chunks).
 * Workers inherit the signal mask of the calling thread and its CPU
 * affinity (or, with bind_cpus, are bound one per CPU; see above). The pool
 * keeps a shared region for fast jobs, as large as the biggest one so far
 * (at most about 4 MiB). Returns the pool, or NULL with errno EINVAL
 * (workers < 0, max_tasks_per_child < 0 or task_timeout_ms < 0), EPERM (the caller is a daemonic
 * libproc child), ENOMEM, EMFILE/ENFILE, EAGAIN (a worker could not be forked). Thread-safe.
 */
PROC_API proc_pool_t *proc_pool_new(const proc_pool_opts_t *opts);

/**
 * Runs fn(in, out) in a worker and waits for it (Python's pool.apply). in
 * (in_size bytes) is copied to the worker; the worker's out_size bytes of
 * output are copied into out when the task finished. 1 MiB and more per task
 * is fine.
 * Returns the task's own return value when it is >= 0 (a task returning a
 * negative value gets it back as is); -ECHILD when the worker died while
 * running the task (out is then untouched); -ETIMEDOUT when it ran longer
 * than the pool's task_timeout_ms (out untouched); -ECANCELED when the pool was
 * terminated before the task finished; -EINVAL (NULL pool or fn, in NULL
 * with in_size > 0, out NULL with out_size > 0, pool closed or terminated);
 * -ENOMEM; -ECHILD when the pool can no longer start workers (see above)
 * or for a pool of another process.
 * Thread-safe: any number of threads may apply, map and submit at once; one
 * of them at a time runs a fast job, the others take the queue.
 */
PROC_API int proc_pool_apply(proc_pool_t *pool, proc_task_fn *fn, const void *in, size_t in_size,
                             void *out, size_t out_size);

/**
 * Runs fn on n items and waits for all of them (Python's pool.map): item i
 * has input in + i * in_size and output out + i * out_size. Items are handed
 * to the workers in chunks (about n / (16 * workers) items in a fast job,
 * n / (4 * workers) through the queue, at most about 4 MiB of input and
 * output per chunk), without per-item allocations, so a map of a million
 * tiny items is fast and runs in bounded memory.
 * Returns 0 when every task returned 0, else the value of the first failing
 * item in index order (the task's own value, -ECHILD for an item whose
 * worker died while running it, -ETIMEDOUT for one that overran
 * task_timeout_ms, -ECANCELED for an item that never finished
 * because the pool was terminated). Either way out holds the output of every
 * item that finished; the out slot of an item that did not finish is left
 * untouched. n == 0 returns 0 at once. Errors as proc_pool_apply(), plus
 * -EINVAL when n * in_size or n * out_size overflows.
 * Thread-safe.
 */
PROC_API int proc_pool_map(proc_pool_t *pool, proc_task_fn *fn, const void *in, size_t in_size,
                           void *out, size_t out_size, size_t n);

/**
 * Queues fn(in, out) and returns at once (Python's pool.apply_async). in
 * is copied before the call returns; the output (out_size bytes) is kept in
 * the future until proc_future_get(). Tasks start in submission order.
 * Returns a future, to be released with proc_future_free(), or NULL with
 * errno EINVAL (NULL pool or fn, in NULL with in_size > 0, pool closed or
 * terminated), ENOMEM, ECHILD (a pool of another process).
 * Thread-safe.
 */
PROC_API proc_future_t *proc_pool_submit(proc_pool_t *pool, proc_task_fn *fn, const void *in,
                                         size_t in_size, size_t out_size);

/**
 * Waits until the future's task has finished, failed or been cancelled
 * (Python's AsyncResult.wait/ready).
 * Returns 0 when done (whatever the task's result), -ETIMEDOUT, -EINVAL
 * (NULL, timeout below -1).
 * Thread-safe: any number of threads may wait for and get one future.
 */
PROC_API int proc_future_wait(proc_future_t *f, int timeout_ms);

/**
 * Waits like proc_future_wait(), then copies the task's output into out
 * (out_size bytes, at most the out_size given to proc_pool_submit(); out may
 * be NULL when out_size is 0) and returns the task's result with the
 * meaning of proc_pool_apply(): its own value when >= 0, -ECHILD (its worker
 * died while running it), -ETIMEDOUT (it overran the pool's task_timeout_ms),
 * -ECANCELED (the pool was terminated or freed first). When the task did
 * not finish, out is left untouched. May be called again; the result stays
 * in the future until proc_future_free().
 * Returns -ETIMEDOUT also when timeout_ms passed first (out untouched;
 * proc_future_wait() returning 0 tells a task that overran from a task still
 * running), -EINVAL (NULL f, out NULL with
 * out_size > 0, out_size larger than submitted, timeout below -1).
 * Thread-safe.
 */
PROC_API int proc_future_get(proc_future_t *f, void *out, size_t out_size, int timeout_ms);

/**
 * Releases the caller's handle. A future may be freed before its task ran,
 * and also after its pool was freed: the task still runs (unless the pool
 * is terminated) and its result is discarded. NULL does nothing.
 * Must not race other calls on the same future.
 */
PROC_API void proc_future_free(proc_future_t *f);

/**
 * Stops accepting tasks (Python's pool.close): later apply/map return
 * -EINVAL and submit NULL + EINVAL. Tasks already queued still run; then the
 * workers exit. Returns 0 (also when already closed or terminated), -EINVAL
 * (NULL), -ECHILD (another process's pool).
 * Thread-safe.
 */
PROC_API int proc_pool_close(proc_pool_t *pool);

/**
 * Stops the pool now (Python's pool.terminate): no new tasks (-EINVAL);
 * every worker is killed (SIGKILL) and reaped before this returns; every
 * task that had not finished fails with -ECANCELED (outputs of tasks that had
 * finished are kept, also of items of a map that is cut short). Returns 0
 * (also when already terminated or joined), -EINVAL (NULL), -ECHILD.
 * Thread-safe.
 */
PROC_API int proc_pool_terminate(proc_pool_t *pool);

/**
 * Waits until every worker has exited and been reaped (Python's pool.join),
 * i.e. after proc_pool_close() until the queued tasks ran and the workers
 * exited, after proc_pool_terminate() at once.
 * Returns 0, -ETIMEDOUT, -EINVAL (NULL, timeout below -1, or the pool is
 * neither closed nor terminated: Python's "Pool is still running"), -ECHILD.
 * Thread-safe: any number of threads may join.
 */
PROC_API int proc_pool_join(proc_pool_t *pool, int timeout_ms);

/**
 * Frees the pool. If it still runs (not joined, closed or not), it is
 * terminated first: pending tasks fail with -ECANCELED and every worker is
 * killed and reaped. Outstanding futures stay valid (free them with
 * proc_future_free()). Returns 0 (also for NULL), -ECHILD (another
 * process's copy; nothing is freed).
 * Must not race other calls on the same pool.
 */
PROC_API int proc_pool_free(proc_pool_t *pool);

/* ------------------------------------------------------------ imap streams */

/** What a variable-size task writes its output through (proc_reply_write()). */
typedef struct proc_reply proc_reply_t;

/**
 * A task of a stream: runs in a worker on in_len bytes at in (NULL when
 * in_len is 0) and writes any amount of output with proc_reply_write().
 * Returns its status: >= 0 is handed back as is in proc_result_t.status;
 * keep negative values for libproc's own errors.
 */
typedef int proc_vtask_fn(const void *in, size_t in_len, proc_reply_t *reply);

/**
 * In a worker, inside the task that reply was given to: appends len bytes
 * of data to the item's output (any size: the output grows as needed; 64
 * MiB in one item is fine). Returns 0, -EINVAL (reply is not the running
 * task's, data NULL with len > 0, or called outside a task), -ENOMEM.
 */
PROC_API int proc_reply_write(proc_reply_t *reply, const void *data, size_t len);

/** One item's result, from proc_imap_next(). */
typedef struct proc_result {
    size_t index; /**< the item's place in put order, from 0 */
    int status;   /**< the task's own value (>= 0), or -ECHILD, -ETIMEDOUT, -ECANCELED */
    void *data;   /**< the item's output, malloc'd (the caller frees it); NULL when empty */
    size_t len;   /**< its length in bytes */
} proc_result_t;

/** A stream of items through a pool (Python's imap / imap_unordered). */
typedef struct proc_imap proc_imap_t;

/**
 * Starts a stream over pool (Python's pool.imap with ordered, else
 * imap_unordered): items given with proc_imap_put() run fn in the workers,
 * in batches of about a millisecond of work each (a stream of a million
 * tiny items costs a few hundred round trips; slow items go one by one),
 * and their results come back with proc_imap_next(), in put order
 * when ordered, else as they finish. Memory stays bounded whatever the
 * stream's length: put blocks while too many items are queued, running or
 * waiting to be taken. Several streams, maps and futures may share a pool.
 * Returns the stream, or NULL with errno EINVAL (NULL pool or fn, pool
 * closed or terminated), ENOMEM, ECHILD (a pool of another process).
 * Thread-safe.
 */
PROC_API proc_imap_t *proc_pool_imap(proc_pool_t *pool, proc_vtask_fn *fn, bool ordered);

/**
 * Adds an item: its in_len bytes at in are copied before the call returns.
 * Blocks, up to timeout_ms, while the stream's window is full: 16,384 items
 * put and not yet taken with proc_imap_next() (queued, running, or finished),
 * or 256 MiB of their inputs and outputs (an item that finds the window
 * empty always fits, however big). Returns 0, -ETIMEDOUT (the window stayed
 * full; nothing was added), -EINVAL (NULL m, in NULL with in_len > 0,
 * timeout below -1, after proc_imap_done(), or once the pool was closed or
 * terminated; a put racing proc_pool_close() may still be taken, and then
 * runs), -ENOMEM. Thread-safe; items put by several threads at once are
 * ordered as the calls were.
 */
PROC_API int proc_imap_put(proc_imap_t *m, const void *in, size_t in_len, int timeout_ms);

/**
 * Says no more items come: once every result is taken, proc_imap_next()
 * returns -ENODATA. Returns 0, -EINVAL (NULL). Calling it again is fine.
 */
PROC_API int proc_imap_done(proc_imap_t *m);

/**
 * Takes the next result (the next in put order when the stream is ordered,
 * else the first to finish) into *r, waiting up to timeout_ms; r->data is
 * the caller's to free. An item's status is its task's value, or: -ECHILD
 * (its worker died while running it: only that item fails, the rest of its
 * batch runs again elsewhere), -ETIMEDOUT (it overran task_timeout_ms),
 * -ECANCELED (proc_pool_terminate() came before it finished), -ENOMEM (its
 * output could not be copied out of the worker, or the worker's memory
 * could not hold its batch), -EIO or -EINVAL (the worker's account of the
 * batch was out of bounds: memory a task corrupted).
 * Returns 0, -ETIMEDOUT (none ready in time), -ENODATA (every result was
 * taken and no more can come: after proc_imap_done(), or once the pool was
 * closed or terminated), -EINVAL (NULL m or r, timeout below -1).
 * Thread-safe.
 */
PROC_API int proc_imap_next(proc_imap_t *m, proc_result_t *r, int timeout_ms);

/**
 * Ends the stream and frees it, also before it is drained: items not yet
 * handed to a worker are dropped, results still to come are discarded, and
 * results not taken are freed. The pool stays usable. Returns 0 (also for
 * NULL). Must not race other calls on the same stream.
 */
PROC_API int proc_imap_free(proc_imap_t *m);

#ifdef __cplusplus
}
#endif

#endif /* LIBPROC_POOL_H */
