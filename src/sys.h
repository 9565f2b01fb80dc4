/* SPDX-License-Identifier: MIT */
/*
 * Base layer: the only file that makes raw system calls (syscall(2)), each
 * with its fallback beside it, and the cached identity of the calling
 * process. Depends on nothing else in libproc. Every function is
 * async-signal-safe unless it says otherwise, so fork children may call them.
 */
#ifndef LIBPROC_SYS_H
#define LIBPROC_SYS_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>

/* Whether pidfd_open and waitid(P_PIDFD) work here (probed once; not
 * async-signal-safe the first time). LIBPROC_DISABLE_PIDFD=1, a documented
 * test hook, answers no. */
bool proc__sys_have_pidfd(void);
/* A close-on-exec pidfd for pid, or -errno. */
int proc__sys_pidfd_open(pid_t pid);
int proc__sys_pidfd_signal(int pidfd, int sig);
/* Signals the process group whose id is the pidfd's process (not a recycled
 * id): -EINVAL on kernels before 6.9, -ESRCH when the group is empty. */
int proc__sys_pidfd_signal_group(int pidfd, int sig);
/* waitid(P_PIDFD), restarted on EINTR, with the child's resource usage in
 * *ru (NULL: not wanted). 0 or -errno. */
int proc__sys_waitid_pidfd(int pidfd, siginfo_t *info, int options, struct rusage *ru);
/* Kills (SIGKILL) and reaps a child of this process that nobody else will
 * reap: through pidfd when >= 0, else by pid, which the caller knows to be
 * still unreaped (so still the child's own). */
void proc__sys_kill_reap(int pidfd, pid_t pid);
/* Closes every fd in [first, last] (close_range, or one by one). */
void proc__sys_close_range(unsigned first, unsigned last);

/* len random bytes from getrandom (or /dev/urandom): 0 or -errno. */
int proc__sys_random(void *buf, size_t len);
pid_t proc__sys_gettid(void);
/* PR_SET_PDEATHSIG: 0 or -errno (-ENOSYS where there is none). */
int proc__sys_set_pdeathsig(int sig);

/*
 * The fork server's clone of itself: a child whose parent is the caller's
 * parent (CLONE_PARENT; the exit signal is the caller's own, SIGCHLD for a
 * fork()ed caller), a pidfd for it in *pidfd (CLONE_PIDFD), and the child's
 * thread id written into *tid_word in the child (CLONE_CHILD_SETTID, as
 * glibc's fork() keeps its thread descriptor right). 0 in the child, the
 * pid in the caller, or -errno: clone3, else (its system call filtered, as
 * some container runtimes do) the older clone where its argument order is
 * known; -ENOSYS elsewhere.
 */
pid_t proc__sys_clone_sibling(int *pidfd, pid_t *tid_word);
/* Whether proc__sys_clone_sibling() can work here (probed without a child). */
bool proc__sys_have_clone_sibling(void);
/*
 * The word that holds the calling thread's id in the C library's thread
 * descriptor, found through PR_GET_TID_ADDRESS (the address the library gave
 * set_tid_address or clone) and checked to hold that id; NULL when unknown.
 */
pid_t *proc__sys_tid_word(void);
/* The calling thread's robust futex list (get_robust_list): 0 or -errno. */
int proc__sys_robust_list_get(void **head, size_t *len);
/* Registers it again in a clone child, where the kernel cleared it. */
void proc__sys_robust_list_set(void *head, size_t len);

/*
 * Futexes. shared: the word lives in memory shared between processes
 * (MAP_SHARED); otherwise FUTEX_PRIVATE_FLAG. The wait sleeps while *word ==
 * val, until woken or the absolute CLOCK_MONOTONIC time at (NULL: no limit):
 * 0 when woken, -EAGAIN (*word differed), -EINTR, -ETIMEDOUT.
 */
int proc__sys_futex_wait(_Atomic uint32_t *word, uint32_t val, const struct timespec *at,
                         bool shared);
/* Wakes up to n sleepers on word. */
void proc__sys_futex_wake(_Atomic uint32_t *word, int n, bool shared);

/* An exit code as libproc reports it: the status, or -signal. */
int proc__sys_decode_siginfo(const siginfo_t *info);
int proc__sys_decode_status(int status);
/* The kernel's start time of pid (/proc/<pid>/stat field 22), 0 if unknown.
 * Not async-signal-safe (snprintf). */
unsigned long long proc__sys_start_time(pid_t pid);
/* The calling process's anonymous resident memory in bytes (/proc/self/statm:
 * resident minus shared pages: its heap and stacks, not file or shared
 * mappings), 0 if unknown. */
size_t proc__sys_anon_resident(void);

/*
 * getpid() without a system call: cached, and refreshed in every fork child
 * by a fork handler registered at the first call (so a copy of a lock or
 * handle that names the parent is recognised as not ours).
 */
pid_t proc__self_pid(void);
/* Re-reads the pid into the cache; async-signal-safe. */
void proc__self_refresh(void);

#endif /* LIBPROC_SYS_H */
