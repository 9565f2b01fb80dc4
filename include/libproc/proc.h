/* SPDX-License-Identifier: MIT */
/**
 * @file
 * libproc: Python's multiprocessing.Process for C.
 *
 * Conventions (apply to every function below unless its comment says otherwise):
 *  - Functions returning int return 0 (or a documented non-negative value) on
 *    success and a negative errno on failure. Functions returning a pointer
 *    return NULL and set errno. Nothing prints, aborts or exits.
 *  - A NULL object argument is -EINVAL (NULL / false / 0 for other return types).
 *  - Timeouts are milliseconds as in poll(2): PROC_WAIT_FOREVER (-1) waits
 *    forever, 0 only checks, below -1 is -EINVAL. They run on CLOCK_MONOTONIC
 *    and a signal (EINTR) does not restart the full wait.
 *  - Every function is thread-safe, except that proc_close() must not race any
 *    other call on the same object.
 *  - Reaping: one reaper thread per process, started by the first
 *    proc_start(), reaps libproc's own children only (never waitpid(-1)). On
 *    Linux it watches each child's pidfd and installs no SIGCHLD handler, so
 *    the host's handlers and system calls are untouched. Without pidfds, or
 *    when SIGCHLD is SIG_IGN at the first start, it installs one that chains
 *    to the previous handler (and reaps the host's children for SIG_IGN).
 *  - "The owner" of an object is the process that created it. Forked children
 *    see copies of their parent's objects; in a child such a copy is inert:
 *    proc_is_alive() is false and proc_join()/signals return -ECHILD.
 */
#ifndef LIBPROC_PROC_H
#define LIBPROC_PROC_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <libproc/version.h>

#ifndef PROC_API
#if defined(__GNUC__) || defined(__clang__)
#define PROC_API __attribute__((visibility("default")))
#else
#define PROC_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Timeout value that waits without limit. */
#define PROC_WAIT_FOREVER (-1)
/** Exit code of a process that was not started or is still running (Python's None). */
#define PROC_EXITCODE_NONE INT_MIN
/** The process ended, but something else reaped it first, so its status is lost. */
#define PROC_EXITCODE_UNKNOWN (INT_MIN + 1)

/** A process object. Opaque; create with proc_new()/proc_new_exec(), free with proc_close(). */
typedef struct proc proc_t;

/** Runs in the child; its return value (& 0xff) becomes the exit code. */
typedef int proc_target_fn(void *arg);

/** Exit callback, see proc_on_exit(). */
typedef void proc_exit_fn(proc_t *p, void *arg);

/* ------------------------------------------------------------------ creation */

/**
 * Creates a process object that will run target(arg) in a forked child
 * (callback mode). target may be NULL: the child then exits with status 0.
 * The default name is "Process-N" (N counts from 1 in the creating process;
 * inside a child named with identity "Process-1" its children are
 * "Process-1:1", "Process-1:2", ...). Not daemonic. The authkey is a copy of
 * proc_current()'s.
 * Returns the object, or NULL with errno ENOMEM.
 */
PROC_API proc_t *proc_new(proc_target_fn *target, void *arg);

/**
 * Creates a process object that runs a program (exec mode). argv is a
 * NULL-terminated array; argv[0] is looked up in PATH by execvp(3) rules
 * unless it contains a '/'. The array and its strings are copied.
 * Returns the object, or NULL with errno EINVAL (argv or argv[0] NULL) or ENOMEM.
 */
PROC_API proc_t *proc_new_exec(const char *const argv[]);

/* ------------------------------------------------------------- configuration
 * Only before proc_start(): on a started object these return -EBUSY, checked
 * before any other argument.
 */

/**
 * Marks the child daemonic (Python's p.daemon = True). A daemonic child may
 * not start children of its own (proc_start() there is -EPERM). At a normal
 * exit of the parent, live daemonic children get SIGTERM (then SIGKILL after
 * one second) and are reaped; if the parent dies abnormally (SIGKILL, crash)
 * they receive SIGKILL from the kernel (PR_SET_PDEATHSIG). A daemon started
 * from a thread other than the main thread is forked by libproc's long-lived
 * spawner thread, so it does not die with the short-lived thread that asked
 * (its target then runs on a copy of that thread's stack and thread-locals).
 * Returns 0, -EINVAL, -EBUSY.
 */
PROC_API int proc_set_daemon(proc_t *p, bool daemon);

/**
 * Sets the child's whole environment (a NULL-terminated "KEY=VALUE" array,
 * copied). NULL means inherit the parent's environment at proc_start().
 * In callback mode the child's environ is replaced before the target runs.
 * Returns 0, -EINVAL, -EBUSY, -ENOMEM.
 */
PROC_API int proc_set_env(proc_t *p, const char *const envp[]);

/**
 * Sets the directory the child changes to before running its target or
 * program (both modes). NULL means stay in the parent's directory; "" is
 * -EINVAL. If the child cannot enter it, proc_start() returns that errno
 * (e.g. -ENOENT) and nothing is left running.
 * Returns 0, -EINVAL, -EBUSY, -ENOMEM.
 */
PROC_API int proc_set_cwd(proc_t *p, const char *dir);

/**
 * Registers cb(p, arg) to be called once, on libproc's reaper thread (all
 * signals blocked, a 2 MiB stack), after the exit code is set and before proc_join()
 * returns; during the callbacks proc_is_alive(p) is still true. Several
 * callbacks run in registration order. A callback must not block for long,
 * must not call proc_close(p) (-EBUSY) and gets -EDEADLK from proc_join() on
 * any unfinished process. It may call proc_start() (see there: refused with
 * -ESHUTDOWN once the process is exiting). Callbacks also run during exit():
 * libproc's at-exit work ends the daemonic children and waits for the others,
 * and their callbacks run before it returns. Returns 0, -EINVAL (cb NULL),
 * -EBUSY, -ENOMEM.
 */
PROC_API int proc_on_exit(proc_t *p, proc_exit_fn *cb, void *arg);

/**
 * Sets the authentication key (1..256 bytes, copied), inherited by the child
 * as its proc_current()'s key. Returns 0, -EINVAL, -EBUSY, -ENOMEM.
 */
PROC_API int proc_set_authkey(proc_t *p, const void *key, size_t len);

/**
 * Makes the child the leader of a new process group (setpgid(0, 0)), so that
 * proc_signal_tree() reaches all its descendants. Off by default, so that a
 * terminal's Ctrl-C still reaches the child. Returns 0, -EINVAL, -EBUSY.
 */
PROC_API int proc_set_new_group(proc_t *p, bool on);

/* --------------------------------------------------------------------- names */

/**
 * Renames the object (at any time, also while running; only the parent's view
 * changes after start). name is copied; NULL or "" is -EINVAL.
 * Earlier names returned by proc_name() stay valid until proc_close().
 * Returns 0, -EINVAL, -ENOMEM.
 */
PROC_API int proc_set_name(proc_t *p, const char *name);

/** The current name, valid until proc_close(p); NULL (errno EINVAL) for NULL. */
PROC_API const char *proc_name(const proc_t *p);

/* ----------------------------------------------------------------- lifecycle */

/**
 * Starts the child. Flushes the caller's stdio output buffers first, so
 * nothing buffered is written twice. Callback mode forks and runs the target;
 * the child then flushes stdio and calls _exit(ret & 0xff) (if the target
 * calls exit(), none of the parent's libproc at-exit work runs). Exec mode
 * starts the program with posix_spawn (or fork+exec for daemons) and reports
 * failure synchronously, leaving no process behind.
 * The child starts with the signal mask of the calling thread, except when
 * called from an exit callback (libproc's reaper thread blocks every
 * signal): then with no signal blocked. Exit callbacks may start children,
 * for instance to replace one that died, until the process exits: once
 * libproc's at-exit work has begun (exit() in the parent, or the end of a
 * callback-mode child's target), every start is refused with -ESHUTDOWN, so
 * that exit() always finishes.
 * Returns 0, or -EINVAL (NULL), -EBUSY (already started), -EPERM (the caller
 * is a daemonic libproc child), -ESHUTDOWN (the process is exiting),
 * -ENOENT/-EACCES/-ENOEXEC/... (exec failed or the cwd is bad),
 * -EAGAIN/-ENOMEM (fork failed; the object stays usable), -EMFILE/-ENFILE
 * (no fd for the sentinel), -ENOTCONN/-ECONNRESET (through the fork server:
 * none runs, or it was found dead; see proc_set_forkserver()).
 */
PROC_API int proc_start(proc_t *p);

/**
 * Calls the target in the calling process (Python's p.run()) and returns its
 * value. Changes nothing about the object: pid, exitcode and is_alive are as
 * before, and proc_join() afterwards without proc_start() is -EINVAL.
 * A NULL target returns 0. Returns -EINVAL for NULL or an exec-mode object.
 */
PROC_API int proc_run(proc_t *p);

/**
 * Waits until the process has ended and its exit code is set.
 * Returns 0 once ended; -ETIMEDOUT if still running after timeout_ms;
 * -EINVAL (NULL, never started, timeout below -1); -EDEADLK for the caller's
 * own object (proc_current()) or from an exit callback of p itself; -ECHILD
 * when the caller is not the process that started p. Any number of threads
 * may join the same process.
 */
PROC_API int proc_join(proc_t *p, int timeout_ms);

/**
 * true from a successful proc_start() until libproc has reaped the child
 * and its exit callbacks have returned; once false, proc_join() returns 0 at
 * once. Like Python's, it polls: a child that has ended is reaped by this
 * call if the reaper thread has not done so yet, so a child that is gone is
 * never reported alive. false before start and in any process other than the
 * parent; true for proc_current(); for proc_parent(), whether the parent still
 * lives. Thread-safe; takes libproc's lock, so not for signal handlers.
 */
PROC_API bool proc_is_alive(proc_t *p);

/** proc_signal(p, SIGTERM). */
PROC_API int proc_terminate(proc_t *p);

/** proc_signal(p, SIGKILL). */
PROC_API int proc_kill(proc_t *p);

/**
 * Sends sig (0 probes) to the child. Never signals a recycled PID: the
 * signal goes through the child's pidfd, or (without pidfd) under the
 * reaper's lock; once the child has been reaped nothing is sent.
 * Returns 0 when sent or when the process has already ended; -EINVAL (NULL,
 * never started, sig out of range); -ECHILD (not the caller's child);
 * -EPERM from the kernel.
 */
PROC_API int proc_signal(proc_t *p, int sig);

/**
 * Sends sig to the child's whole process group (killpg(2) of the group the
 * child leads), also after the child itself has ended and been joined, as
 * long as any member of the group lives. Requires proc_set_new_group(p, true).
 * Never signals a group that is not the child's once the child's group is
 * gone and a stranger took its id: on Linux 6.9 and later the signal goes
 * through the child's pidfd (PIDFD_SIGNAL_PROCESS_GROUP), which names the
 * group itself. On older kernels (or without pidfds), after the child was
 * reaped, nothing is sent when a process now has the child's pid (the id
 * cannot be taken while the group lives); only the whole group ending and
 * its id going to a new group leader within the call itself is not excluded.
 * Takes libproc's lock: not for signal handlers.
 * Returns 0 when sent or when nobody is left in the group (nothing sent);
 * -EINVAL (NULL, never started, no group of its own, bad sig); -ECHILD (not
 * the caller's); -EPERM from the kernel.
 */
PROC_API int proc_signal_tree(proc_t *p, int sig);

/** One step of proc_stop(): a signal to send, then how long to wait. */
typedef struct proc_stop_step {
    int sig;        /**< signal to send first; 0 = send nothing, only wait */
    int timeout_ms; /**< then wait this long for the child to end (PROC_WAIT_FOREVER) */
} proc_stop_step_t;

/**
 * Stops a child the way Python's terminate(); join(t); kill() does (reproc's
 * stop sequence): for each step in order, sends sig (to the whole process
 * group when the child leads one, see proc_set_new_group(), else to the
 * child; never to a reused pid or a stranger's group, as proc_signal() and
 * proc_signal_tree() promise) and then waits up to timeout_ms for the child
 * to end. steps NULL means {SIGTERM, 3000}, {SIGKILL, PROC_WAIT_FOREVER}.
 * Returns 0 as soon as the child has ended (proc_join(p, 0) would return 0:
 * exit callbacks included), with nothing sent if it had already ended;
 * -ETIMEDOUT if it is still alive after the last step; -EINVAL (NULL, not
 * started, n == 0 with steps, a bad signal or timeout); -ECHILD (not the
 * caller's child); -EPERM from the kernel; -EDEADLK from the reaper's own
 * thread (an exit callback). Thread-safe.
 */
PROC_API int proc_stop(proc_t *p, const proc_stop_step_t *steps, size_t n);

/**
 * Waits until any of n children has ended, as Python's
 * multiprocessing.connection.wait() on their sentinels: returns the lowest
 * index i for which proc_join(procs[i], 0) would return 0 (children already
 * joined count too), at once if one has already ended. One poll(2) over
 * their sentinels, so thousands of entries are fine; the same object may
 * appear more than once. Returns the index; -ETIMEDOUT when none ended in
 * time; -EINVAL (procs NULL, n == 0, a NULL entry, an entry that is not a
 * started child of the caller, a bad timeout); -ENOMEM; -EDEADLK from the
 * reaper's own thread (an exit callback).
 * Thread-safe.
 */
PROC_API int proc_wait_any(proc_t *const procs[], size_t n, int timeout_ms);

/**
 * Frees the object and everything it owns, including the sentinel fd.
 * Returns 0 (also for NULL); -EBUSY while the process runs or its exit
 * callbacks run (the object is untouched); -EINVAL for proc_current() /
 * proc_parent() objects, which libproc owns.
 * Not thread-safe against other calls on the same object.
 */
PROC_API int proc_close(proc_t *p);

/* ---------------------------------------------------------------- attributes */

/** The child's pid: 0 before start, kept after exit. */
PROC_API pid_t proc_pid(const proc_t *p);

/**
 * PROC_EXITCODE_NONE before start and while running; 0..255 when the child
 * exited; -N when signal N ended it; PROC_EXITCODE_UNKNOWN when something
 * outside libproc reaped it first.
 */
PROC_API int proc_exitcode(const proc_t *p);

/**
 * The ended child's own resource usage, as the reap reported it (wait4(2):
 * ru_utime, ru_stime, ru_maxrss, ...; its own children's usage is not in it).
 * Returns 0 with *ru filled in once the child was reaped (also inside its
 * exit callbacks); -EAGAIN before the start and while the child runs;
 * -ECHILD when something outside libproc reaped it (proc_exitcode() is
 * PROC_EXITCODE_UNKNOWN) or p is a copy inherited through fork; -EINVAL for a
 * NULL argument or an object that is not a child. Thread-safe.
 */
PROC_API int proc_rusage(const proc_t *p, struct rusage *ru);

/** The daemon flag. */
PROC_API bool proc_daemon(const proc_t *p);

/**
 * An fd owned by the object that polls readable exactly when the child is
 * joinable: once it is readable, proc_join(p, 0) returns 0 (exit callbacks
 * have run), and it is not readable before. A pidfd on Linux for a child
 * without exit callbacks; otherwise a pipe that libproc closes when the
 * callbacks have returned. Without pidfds that pipe closes when libproc
 * notices the exit (at SIGCHLD, or within 100 ms when every thread blocks
 * SIGCHLD), while proc_join(p, 0) checks the child itself and may return 0
 * that much sooner. Valid until proc_close(). Do not read from or close it.
 * Python's Process.sentinel, for poll(2)/select(2)/epoll.
 * Returns the fd, or -EINVAL (NULL, not started, or an object that is not a
 * child of the caller).
 */
PROC_API int proc_sentinel(const proc_t *p);

/**
 * The authentication key; *len (if len is not NULL) receives its length.
 * Valid until the key is changed or the object closed. NULL for NULL p.
 */
PROC_API const unsigned char *proc_authkey(const proc_t *p, size_t *len);

/* --------------------------------------------------------------- fork server
 * Callback mode forks the caller. In a program with threads, a lock that
 * another thread holds at that moment (a mutex of the program, malloc's in
 * some allocators, a stdio stream's) stays held for ever in the child. The
 * fork server is a single-threaded copy of the program, made early, that
 * forks the children instead: they see the program's memory as it was when
 * the server started, plus their argument (proc_set_arg_copy()), and no
 * lock of the caller's threads. Python 3.14's default start method on Linux.
 */

/**
 * Starts the fork server: one single-threaded process, a fork of the caller
 * as it is now, that from then on makes the children of proc_start() for
 * objects with proc_set_forkserver(p, true). Call it early in main(), before
 * the program starts any thread. It flushes the caller's stdio output buffers
 * first (as proc_start() does).
 *
 * The server runs no user code (it only clones itself on request, with
 * every signal blocked, so Ctrl-C at a terminal leaves it alone) and dies
 * with the process that started it: it ends at the end of its control
 * socket, and PR_SET_PDEATHSIG kills it when the thread that started it ends
 * (SIGKILL of the process included), which is the process's main thread.
 * It is a plain child of the caller, not one of libproc's children
 * (proc_active_children() does not list it; a waitpid(-1) of the host may
 * reap it once it ended). A fork child of the caller has no server of its
 * own (a child may start one). If the server died (killed), the next
 * start through it returns -ECONNRESET and a new proc_forkserver_start()
 * may start another.
 *
 * What a child of the server has: memory, file descriptors, signal
 * dispositions, resource limits, umask and credentials as the caller had
 * them at proc_forkserver_start(); then, as for a forked child, its name,
 * authkey and daemon flag, the caller as proc_parent() and as its real
 * parent (getppid(), SIGCHLD, proc_join() and the reaper as for a forked
 * child), the caller's current directory and environment at proc_start()
 * (or proc_set_cwd()/proc_set_env()'s), the standard streams of
 * proc_set_stdio(), and the signal mask of the thread calling proc_start().
 * pthread_atfork() child handlers do not run in it (they ran once, in the
 * server). The target's arg must point into memory the server had, unless
 * proc_set_arg_copy() gave the bytes.
 *
 * Returns 0; -EALREADY when this process's server is running; -EBUSY when
 * the process has a thread other than the caller and libproc's own reaper
 * and spawner threads (the server would copy their locks: so also once a
 * pool or a sanitizer runtime started a thread), or while libproc runs exit
 * callbacks (so from an exit callback too); -ENOSYS when this kernel or C
 * library cannot make the server's children the caller's own (Linux 5.2 and
 * clone3 or a known clone(2) argument order, glibc's thread id word);
 * -ENOENT (or what opening it failed with) when /proc/self/task cannot be
 * read, since the thread check needs it (no /proc mounted);
 * -EMFILE/-ENFILE, -EAGAIN/-ENOMEM (fork failed); the init errors of
 * proc_start(). Thread-safe.
 */
PROC_API int proc_forkserver_start(void);

/**
 * Makes proc_start() of this callback-mode object ask the fork server for
 * the child instead of forking the caller (see proc_forkserver_start()). Off
 * by default; exec mode ignores it. proc_start() then returns -ENOTCONN when
 * no server runs, -ECONNRESET when the server was found dead (then
 * -ENOTCONN until one is started again), and otherwise what it returns for a
 * forked child; it flushes no stdio buffer (the child's are the server's,
 * empty). The child is the caller's child in every respect (pid, join, exit
 * code, signals, exit callbacks, sentinel, proc_active_children(), daemon
 * semantics: a daemonic child dies with the caller, not with the server).
 * Returns 0, -EINVAL, -EBUSY.
 */
PROC_API int proc_set_forkserver(proc_t *p, bool on);

/**
 * Gives the target a copy of len bytes (1 to 64 MiB), copied now: in the
 * child, the target's arg points to that copy (aligned for any type, and
 * writable) instead of the pointer given to proc_new(), and so does
 * proc_run()'s. Needed to pass data to a child of the fork server, which
 * sees the caller's memory as it was at proc_forkserver_start(); in plain
 * fork mode the copy is inherited with the rest. Callback mode only.
 * Returns 0, -EINVAL (NULL p or data, len 0 or above 64 MiB, an exec-mode
 * object), -EBUSY (started), -ENOMEM.
 */
PROC_API int proc_set_arg_copy(proc_t *p, const void *data, size_t len);

/* ----------------------------------------------------------- process tree */

/**
 * The calling process's own object, owned by libproc (do not close it). In a
 * root process: name "MainProcess", pid getpid(), alive, not daemonic, a random
 * 32-byte authkey. In a child started by libproc: the child's copy of its own
 * object (name, daemon flag, authkey as set by the parent).
 * NULL with errno ENOMEM only if the first call cannot allocate.
 */
PROC_API proc_t *proc_current(void);

/**
 * In a child started by libproc: an object (owned by libproc) with the
 * parent's name and pid, whose proc_is_alive() tells whether the parent still
 * lives. NULL in a root process.
 */
PROC_API proc_t *proc_parent(void);

/**
 * The live children started by the calling process and not yet closed.
 * Fills out[0..cap) (out may be NULL when cap is 0) and returns how many are
 * alive in total, which may exceed cap.
 */
PROC_API size_t proc_active_children(proc_t **out, size_t cap);

/** The number of CPUs this process may run on (its affinity mask), >= 1. */
PROC_API int proc_cpu_count(void);

#ifdef __cplusplus
}
#endif

#endif /* LIBPROC_PROC_H */
