/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the libproc tests (tests/support/testutil.c, part of
 * the libproc_testsupport library). No cmocka dependency, safe to call in
 * forked children. Every timeout is a bound on a hang, never a way to wait
 * for something.
 */
#ifndef LIBPROC_TESTUTIL_H
#define LIBPROC_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * AddressSanitizer runtimes before LLVM 18 (llvm-project PR 75290, which
 * added its pthread_atfork handlers) leave their allocator's locks as they
 * were at fork(): a lock that another thread of the parent held stays held
 * for ever in the child, and the child's first allocation that needs it
 * hangs (seen: the first thread a host-forked child creates blocks inside
 * the runtime's own thread setup). glibc's malloc has no such problem.
 * Tests that fork the whole test process while other threads allocate
 * therefore cannot run reliably under those runtimes; they skip there and
 * run in every other configuration (under ThreadSanitizer through the fork
 * gate below). gcc's libsanitizer follows LLVM's with a delay, so gcc < 15
 * counts as old.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(TU_ASAN)
#define TU_ASAN 1
#endif
/*
 * ThreadSanitizer's fork handling locked only its internal allocator, not the
 * one behind malloc(), before LLVM 19 (llvm-project PR 96600); gcc < 15
 * ships such a runtime too (gcc 12's ForkBefore takes the thread registry
 * and report locks only). Seen with clang 14 and with gcc 12: the child of a
 * host fork() made while a worker thread refilled its allocator cache hung
 * in its first malloc() (SizeClassAllocator64::GetFromAllocator, gcc 12: in
 * proc_new()'s calloc, twice in about 170 runs of test_lifecycle_fork).
 */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(TU_TSAN)
#define TU_TSAN 1
#endif
/* 1 under an AddressSanitizer or ThreadSanitizer runtime whose allocator is
 * not fork-safe (see above). */
#if defined(TU_ASAN) && ((defined(__clang__) && __clang_major__ < 18) ||                           \
                         (!defined(__clang__) && defined(__GNUC__) && __GNUC__ < 15))
#define TU_ALLOCATOR_FORK_UNSAFE 1
#elif defined(TU_TSAN) && ((defined(__clang__) && __clang_major__ < 19) ||                         \
                           (!defined(__clang__) && defined(__GNUC__) && __GNUC__ < 15))
#define TU_ALLOCATOR_FORK_UNSAFE 1
#else
#define TU_ALLOCATOR_FORK_UNSAFE 0
#endif

/*
 * The fork gate: how a test forks the whole test process while its other
 * threads use libproc, under such a ThreadSanitizer runtime. The threads
 * hold the gate (shared) around the calls that allocate or free outside
 * libproc's own lock (proc_new, proc_start, proc_close: libproc's fork
 * handlers already keep a fork out of its locked sections), and
 * tu_fork_gated() takes it exclusively for the fork. A fork then still
 * lands while those threads wait in proc_join() with children running and
 * exiting and the reaper at work, but never inside another thread's
 * malloc(). Everywhere else (plain builds, valgrind, fork-safe runtimes)
 * the gate does nothing and a fork can land anywhere. Under AddressSanitizer
 * it is not enough (the child's first thread also blocks in the runtime's
 * thread setup), so such tests skip there.
 */
#if defined(TU_TSAN) && TU_ALLOCATOR_FORK_UNSAFE
#define TU_FORK_GATE 1
#else
#define TU_FORK_GATE 0
#endif

/* Holds the gate (shared; a no-op when TU_FORK_GATE is 0). */
void tu_fork_gate_enter(void);

/* Releases what tu_fork_gate_enter() took. */
void tu_fork_gate_leave(void);

/* fork() with the gate held exclusively (plain fork() when TU_FORK_GATE is
 * 0). The child must not use the gate. */
pid_t tu_fork_gated(void);

/* ---- running */

/* True when this process runs under valgrind. */
int tu_on_valgrind(void);

/* What to execve() to run this program again: "/proc/self/exe", or under
 * valgrind (which does not translate that link in execve) the real path. */
const char *tu_self_exe(void);

/* ---- time */

/* The monotonic clock in milliseconds. */
int64_t tu_now_ms(void);

/* Milliseconds left until deadline (a tu_now_ms() value), at least 0; -1
 * (no bound) when deadline is negative. */
int tu_left_ms(int64_t deadline);

/* ---- fds */

/* A pipe with O_CLOEXEC on both ends (forked children still inherit it;
 * exec'd programs do not); 0 or -errno. */
int tu_pipe(int fds[2]);

/* 1 when fd is readable (or at EOF/error), 0 on timeout, -errno on failure;
 * a negative timeout waits without bound. */
int tu_wait_readable(int fd, int timeout_ms);

/* poll(2) of fd for POLLIN, retried on EINTR with the time left: poll's
 * result (1 ready, 0 timed out, -1); *revents (if not NULL) gets the events. */
int tu_poll_in(int fd, int timeout_ms, short *revents);

/* Writes all len bytes (retrying on EINTR); 0 or -errno. */
int tu_write_full(int fd, const void *buf, size_t len);

/* Reads exactly len bytes unless EOF comes first: the bytes read,
 * -ETIMEDOUT or -errno. */
ssize_t tu_read_full(int fd, void *buf, size_t len, int timeout_ms);

/* Reads until EOF into buf (NUL-terminated, at most cap - 1 bytes kept):
 * the bytes kept, -ETIMEDOUT or -errno. */
ssize_t tu_read_to_eof(int fd, char *buf, size_t cap, int timeout_ms);

/* Waits up to timeout_ms for EOF on fd, discarding data: true on EOF. */
bool tu_eof_within(int fd, int timeout_ms);

/* ---- gate: children wait until the parent opens it (closes the write end;
 * every waiter sees EOF, also if the parent dies) */

typedef struct tu_gate {
    int rd, wr;
} tu_gate;

/* Creates the gate's pipe; 0 or -errno. */
int tu_gate_init(tu_gate *g);

/* In a child: drops its own copy of the write end, then blocks until the
 * parent opens the gate (or dies). 0 when open, -ETIMEDOUT, -errno. */
int tu_gate_wait(tu_gate *g, int timeout_ms);

/* Opens the gate: closes this process's write end. */
void tu_gate_open(tu_gate *g);

/* Opens the gate and closes its read end too. */
void tu_gate_destroy(tu_gate *g);

/* A child's target (arg: a tu_gate): waits for the gate without bound;
 * 0 once it opened, 99 when the wait failed. */
int tu_gate_main(void *arg);

/* ---- /proc accounting */

/* Open fds of this process (/proc/self/fd), or -errno. */
int tu_count_fds(void);

/* State letter and parent of any process, from /proc/<pid>/stat; 0, or -1
 * when the process does not exist (any more). */
int tu_proc_state(pid_t pid, char *state, pid_t *ppid);

/* State letter of any process, or 0 when it does not exist. */
char tu_state(pid_t pid);

/* State letter of pid if it is a child of this process, else 0 (gone, or
 * not ours). */
char tu_child_state(pid_t pid);

/* Waits up to timeout_ms until pid's main thread is blocked in system call nr
 * (/proc/<pid>/syscall): 0, -ETIMEDOUT, or -errno when the file cannot be read. */
int tu_wait_blocked_in(pid_t pid, long nr, int timeout_ms);

/* Children of this process (any state); *zombies (if not NULL) gets how many
 * of them are zombies. -errno on failure. */
int tu_count_children(int *zombies);

/* Zombie children of this process, or -errno. */
int tu_count_zombies(void);

/* waitpid(pid, status, 0) retried on EINTR: its result (errno set when -1). */
pid_t tu_waitpid(pid_t pid, int *status);

/* Waits (bounded, yielding) until this process has no child at all, live or
 * zombie: how many are left. */
int tu_wait_children_gone(int timeout_ms);

#endif /* LIBPROC_TESTUTIL_H */
