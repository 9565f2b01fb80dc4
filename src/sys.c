/* SPDX-License-Identifier: MIT */
/* Thin wrappers over Linux-only system calls, each with a portable fallback. */
#include "sys.h"

#include <libproc/proc.h>

#include <asm/posix_types.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* 1 = pidfds work, 0 = not, -1 = not probed. The probe result never changes. */
static _Atomic int have_pidfd = -1;

bool proc__sys_have_pidfd(void)
{
    int v = atomic_load_explicit(&have_pidfd, memory_order_relaxed);
    if (v >= 0)
        return v;
    v = 0;
#if defined(__linux__) && defined(SYS_pidfd_open) && defined(SYS_pidfd_send_signal)
    /* Testing aid: run everything on the paths older kernels take. */
    const char *off = getenv("LIBPROC_DISABLE_PIDFD");
    if (!(off && *off && strcmp(off, "0") != 0)) {
        /*
         * Probed with an invalid fd, so that the answer needs no free fd (a
         * first start at RLIMIT_NOFILE must not turn pidfds off for good):
         * a kernel that knows the call rejects the fd, one that does not
         * rejects the call (waitid takes no negative id, so INT_MAX is the
         * invalid fd there). waitid(P_PIDFD) came one release after
         * pidfd_open (5.4 vs 5.3).
         */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        bool open_ok = syscall(SYS_pidfd_open, -1, 0) < 0 && errno == EINVAL;
        bool wait_ok = syscall(SYS_waitid, P_PIDFD, INT_MAX, &si, WEXITED | WNOHANG, NULL) < 0 &&
                       errno == EBADF;
        v = open_ok && wait_ok;
    }
#endif
    atomic_store_explicit(&have_pidfd, v, memory_order_relaxed);
    return v;
}

int proc__sys_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    /* pidfds are always close-on-exec. */
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

int proc__sys_pidfd_signal(int pidfd, int sig)
{
#ifdef SYS_pidfd_send_signal
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
#else
    (void)pidfd;
    (void)sig;
    return -ENOSYS;
#endif
}

/* <linux/pidfd.h> of Linux 6.9; older kernels reject the flag with EINVAL. */
#ifndef PIDFD_SIGNAL_PROCESS_GROUP
#define PIDFD_SIGNAL_PROCESS_GROUP (1U << 2)
#endif

int proc__sys_pidfd_signal_group(int pidfd, int sig)
{
#ifdef SYS_pidfd_send_signal
    long r = syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, PIDFD_SIGNAL_PROCESS_GROUP);
    return r < 0 ? -errno : 0;
#else
    (void)pidfd;
    (void)sig;
    return -ENOSYS;
#endif
}

/*
 * The kernel's struct rusage for waitid(2): its own long type throughout,
 * which is not glibc's layout on 32-bit ABIs built with 64-bit time_t.
 */
struct kernel_rusage {
    struct {
        __kernel_long_t tv_sec, tv_usec;
    } ru_utime, ru_stime;
    __kernel_long_t counts[14]; /* ru_maxrss ... ru_nivcsw, in struct rusage's order */
};

static void rusage_from_kernel(struct rusage *ru, const struct kernel_rusage *k)
{
    memset(ru, 0, sizeof *ru);
    ru->ru_utime.tv_sec = (time_t)k->ru_utime.tv_sec;
    ru->ru_utime.tv_usec = (suseconds_t)k->ru_utime.tv_usec;
    ru->ru_stime.tv_sec = (time_t)k->ru_stime.tv_sec;
    ru->ru_stime.tv_usec = (suseconds_t)k->ru_stime.tv_usec;
    long *to[14] = {&ru->ru_maxrss,  &ru->ru_ixrss,  &ru->ru_idrss,  &ru->ru_isrss,
                    &ru->ru_minflt,  &ru->ru_majflt, &ru->ru_nswap,  &ru->ru_inblock,
                    &ru->ru_oublock, &ru->ru_msgsnd, &ru->ru_msgrcv, &ru->ru_nsignals,
                    &ru->ru_nvcsw,   &ru->ru_nivcsw};
    for (int i = 0; i < 14; i++)
        *to[i] = (long)k->counts[i];
}

int proc__sys_waitid_pidfd(int pidfd, siginfo_t *info, int options, struct rusage *ru)
{
    struct kernel_rusage kru = {0};
    long r;
    do { /* the system call: glibc's waitid() has no rusage argument */
        r = syscall(SYS_waitid, P_PIDFD, pidfd, info, options, ru ? &kru : NULL);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (ru)
        rusage_from_kernel(ru, &kru);
    return 0;
}

void proc__sys_kill_reap(int pidfd, pid_t pid)
{
    if (pidfd >= 0) {
        siginfo_t si;
        proc__sys_pidfd_signal(pidfd, SIGKILL);
        proc__sys_waitid_pidfd(pidfd, &si, WEXITED, NULL); /* ECHILD: a host reaped it */
    } else if (pid > 0) {
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
}

int proc__sys_random(void *buf, size_t len)
{
    unsigned char *out = buf;
    size_t got = 0;
#ifdef SYS_getrandom
    while (got < len) {
        long r = syscall(SYS_getrandom, out + got, len - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
#endif
    if (got < len) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        while (got < len) {
            ssize_t r = read(fd, out + got, len - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                int err = r < 0 ? errno : EIO;
                close(fd);
                return -err;
            }
            got += (size_t)r;
        }
        close(fd);
    }
    return 0;
}

void proc__sys_close_range(unsigned first, unsigned last)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, first, last, 0) == 0)
        return;
#endif
    for (unsigned fd = first; fd <= last; fd++)
        close((int)fd);
}

int proc__sys_futex_wait(_Atomic uint32_t *word, uint32_t val, const struct timespec *at,
                         bool shared)
{
    /* The bitset form takes an absolute CLOCK_MONOTONIC time: a signal that
     * interrupts the wait does not stretch it. */
    int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    long r = syscall(SYS_futex, (uint32_t *)word, op, val, at, NULL, FUTEX_BITSET_MATCH_ANY);
    return r < 0 ? -errno : 0;
}

void proc__sys_futex_wake(_Atomic uint32_t *word, int n, bool shared)
{
    int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    syscall(SYS_futex, (uint32_t *)word, op, n, NULL, NULL, 0);
}

pid_t proc__sys_gettid(void)
{
#ifdef SYS_gettid
    return (pid_t)syscall(SYS_gettid);
#else
    return getpid();
#endif
}

int proc__sys_set_pdeathsig(int sig)
{
#ifdef PR_SET_PDEATHSIG
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) < 0 ? -errno : 0;
#else
    (void)sig;
    return -ENOSYS;
#endif
}

/* ---------------------------------------------------------- fork server */

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#if !defined(SYS_clone3) && defined(__linux__)
#define SYS_clone3 435 /* the same number on every architecture */
#endif

/* struct clone_args of <linux/sched.h>, its first version: eight 64-bit words. */
enum {
    CA_FLAGS,
    CA_PIDFD,
    CA_CHILD_TID,
    CA_PARENT_TID,
    CA_EXIT_SIGNAL,
    CA_STACK,
    CA_STACK_SIZE,
    CA_TLS,
    CA_V0
};

#define SIBLING_FLAGS (CLONE_PARENT | CLONE_PIDFD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID)

/* clone(2) with its arguments in this architecture's order; -1/ENOSYS where unknown. */
static long clone_legacy(int *pidfd, pid_t *tid_word)
{
    /* With CLONE_PIDFD the pidfd goes where the parent's tid would. */
#if defined(__x86_64__)
    return syscall(SYS_clone, SIBLING_FLAGS | SIGCHLD, 0UL, pidfd, tid_word, 0UL);
#elif defined(__aarch64__)
    return syscall(SYS_clone, SIBLING_FLAGS | SIGCHLD, 0UL, pidfd, 0UL, tid_word);
#else
    (void)pidfd;
    (void)tid_word;
    errno = ENOSYS;
    return -1;
#endif
}

pid_t proc__sys_clone_sibling(int *pidfd, pid_t *tid_word)
{
#ifdef __linux__
    /* No stack (a copy of the caller's, as fork()), no exit signal: with
     * CLONE_PARENT the kernel takes the caller's own. */
    uint64_t args[CA_V0] = {0};
    args[CA_FLAGS] = SIBLING_FLAGS;
    args[CA_PIDFD] = (uint64_t)(uintptr_t)pidfd;
    args[CA_CHILD_TID] = (uint64_t)(uintptr_t)tid_word;
    long r = syscall(SYS_clone3, args, sizeof args);
    if (r < 0 && errno == ENOSYS)
        r = clone_legacy(pidfd, tid_word);
    return r < 0 ? -errno : (pid_t)r;
#else
    (void)pidfd;
    (void)tid_word;
    return -ENOSYS;
#endif
}

bool proc__sys_have_clone_sibling(void)
{
#ifdef __linux__
    /* A size below the first version's is EINVAL where clone3 exists. */
    if (syscall(SYS_clone3, NULL, 0) < 0 && errno == EINVAL)
        return true;
#if (defined(__x86_64__) || defined(__aarch64__)) && defined(SYS_pidfd_open)
    /* CLONE_PIDFD came with Linux 5.2, one release before pidfd_open. */
    return syscall(SYS_pidfd_open, -1, 0) < 0 && errno == EINVAL;
#endif
#endif
    return false;
}

pid_t *proc__sys_tid_word(void)
{
#if defined(__linux__) && defined(PR_GET_TID_ADDRESS)
    pid_t *word = NULL;
    if (prctl(PR_GET_TID_ADDRESS, &word, 0, 0, 0) < 0 || !word)
        return NULL;
    return *word == proc__sys_gettid() ? word : NULL;
#else
    return NULL;
#endif
}

int proc__sys_robust_list_get(void **head, size_t *len)
{
#ifdef SYS_get_robust_list
    return syscall(SYS_get_robust_list, 0, head, len) < 0 ? -errno : 0;
#else
    (void)head;
    (void)len;
    return -ENOSYS;
#endif
}

void proc__sys_robust_list_set(void *head, size_t len)
{
#ifdef SYS_set_robust_list
    if (head)
        syscall(SYS_set_robust_list, head, len);
#else
    (void)head;
    (void)len;
#endif
}

int proc__sys_decode_siginfo(const siginfo_t *info)
{
    if (info->si_code == CLD_EXITED)
        return info->si_status & 0xff;
    return -info->si_status; /* CLD_KILLED, CLD_DUMPED */
}

int proc__sys_decode_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return -WTERMSIG(status);
    return PROC_EXITCODE_UNKNOWN;
}

/*
 * The kernel's start time of pid (field 22 of /proc/<pid>/stat), 0 when it
 * cannot be read. Without pidfds, it tells a child from a newer process that
 * got its pid after a host reaped the child.
 */
/* Reads a small /proc file into buf (NUL-terminated): false if it cannot. */
static bool read_proc_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n;
    do {
        n = read(fd, buf, size - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

unsigned long long proc__sys_start_time(pid_t pid)
{
    char path[48], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!read_proc_file(path, buf, sizeof buf))
        return 0;
    const char *s = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    if (!s)
        return 0;
    s++;
    for (int field = 3; field < 22 && s; field++) /* the field after ')' is the 3rd */
        s = strchr(s + 1, ' ');
    return s ? strtoull(s + 1, NULL, 10) : 0;
}

size_t proc__sys_anon_resident(void)
{
    char buf[256];
    if (!read_proc_file("/proc/self/statm", buf, sizeof buf))
        return 0;
    /* size resident shared ...: pages */
    char *end;
    if (strtoul(buf, &end, 10) == 0) /* size: never 0 */
        return 0;
    unsigned long resident = strtoul(end, &end, 10);
    unsigned long shared = strtoul(end, &end, 10);
    if (*end != ' ' || shared > resident)
        return 0;
    return (size_t)(resident - shared) * (size_t)sysconf(_SC_PAGESIZE);
}

/* ---------------------------------------------------------------- identity */

/* The cached pid: 0 until the first call, -1 when no fork handler could be
 * registered (then every call asks getpid()). Relaxed: it is the only thing
 * read, and the fast path must stay one plain load (ThreadSanitizer makes a
 * pthread_once() there a long, variable path). */
static _Atomic pid_t self_pid;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

void proc__self_refresh(void)
{
    if (atomic_load_explicit(&self_pid, memory_order_relaxed) != -1)
        atomic_store_explicit(&self_pid, getpid(), memory_order_relaxed);
}

static void self_init(void)
{
    pid_t v = pthread_atfork(NULL, NULL, proc__self_refresh) == 0 ? getpid() : -1;
    atomic_store_explicit(&self_pid, v, memory_order_relaxed);
}

pid_t proc__self_pid(void)
{
    pid_t p = atomic_load_explicit(&self_pid, memory_order_relaxed);
    if (p > 0)
        return p;
    if (p == 0) {
        pthread_once(&self_once, self_init);
        p = atomic_load_explicit(&self_pid, memory_order_relaxed);
    }
    return p > 0 ? p : getpid();
}
