/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the libproc tests. Header-only (static inline), no
 * cmocka dependency, safe to call in forked children. Keep this file small
 * and stable: several test files include it.
 *
 *   tu_now_ms()                 monotonic clock in milliseconds
 *   tu_pipe(fds)                pipe with O_CLOEXEC on both ends (forked
 *                               children still inherit it; exec'd programs
 *                               do not)
 *   tu_write_full(fd, b, n)     write all n bytes; 0 or -errno
 *   tu_read_full(fd, b, n, ms)  read exactly n bytes unless EOF first;
 *                               returns bytes read, -ETIMEDOUT or -errno
 *   tu_read_to_eof(fd, b, cap, ms)  read until EOF (NUL-terminates b);
 *                               returns bytes read, -ETIMEDOUT or -errno
 *   tu_wait_readable(fd, ms)    1 readable/EOF, 0 timed out, -errno
 *   tu_gate_*                   a pipe gate: children block in
 *                               tu_gate_wait() until the parent calls
 *                               tu_gate_open() (closes the write end; every
 *                               waiter sees EOF, also if the parent dies)
 *   tu_count_fds()              open fds of this process (/proc/self/fd)
 *   tu_count_children(&zomb)    child processes of this process (any state),
 *                               optionally how many of them are zombies
 *   tu_count_zombies()          zombie children of this process
 *   tu_self_exe()               the path to exec to run this test program
 *                               again ("/proc/self/exe", or under valgrind
 *                               the program's real path)
 *   tu_on_valgrind()            true when running under valgrind
 *   TU_ALLOCATOR_FORK_UNSAFE    1 under an AddressSanitizer or
 *                               ThreadSanitizer runtime whose allocator is
 *                               not fork-safe
 *
 * Every timeout is a bound on a hang, never a way to wait for something.
 */
#ifndef LIBPROC_TESTUTIL_H
#define LIBPROC_TESTUTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* valgrind's client requests, when its header is installed (Debian: the
 * valgrind package); without it RUNNING_ON_VALGRIND is 0. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static inline int tu_on_valgrind(void)
{
    return RUNNING_ON_VALGRIND != 0;
}

/*
 * AddressSanitizer runtimes before LLVM 18 (llvm-project PR 75290, which
 * added its pthread_atfork handlers) leave their allocator's locks as they
 * were at fork(): a lock that another thread of the parent held stays held
 * for ever in the child, and the child's first allocation that needs it
 * hangs (seen: the first thread a host-forked child creates blocks inside
 * the runtime's own thread setup). glibc's malloc has no such problem.
 * Tests that fork the whole test process while other threads allocate
 * therefore cannot run reliably under those runtimes; they skip there and
 * run in every other configuration. gcc's libsanitizer follows LLVM's with
 * a delay, so gcc < 15 counts as old.
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
 * one behind malloc(), before LLVM 19 (llvm-project PR 96600). Seen with
 * clang 14: a child of a host fork() made while a worker thread refilled its
 * allocator cache hung in its first malloc()
 * (SizeClassAllocator64::GetFromAllocator). gcc's older libtsan runtime has
 * not been seen to hang here, and the case keeps running under it (the
 * "tsan" configuration), as in the plain and valgrind ones.
 */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(TU_TSAN)
#define TU_TSAN 1
#endif
#if defined(TU_ASAN) && ((defined(__clang__) && __clang_major__ < 18) ||                           \
                         (!defined(__clang__) && defined(__GNUC__) && __GNUC__ < 15))
#define TU_ALLOCATOR_FORK_UNSAFE 1
#elif defined(TU_TSAN) && defined(__clang__) && __clang_major__ < 19
#define TU_ALLOCATOR_FORK_UNSAFE 1
#else
#define TU_ALLOCATOR_FORK_UNSAFE 0
#endif

/* What to execve() to run this program again. Natively "/proc/self/exe".
 * Under valgrind that link names valgrind's tool binary, and valgrind 3.19
 * translates it in readlink() but not in execve() (the traced re-run fails
 * with "mmap(0x58000000, 4096) failed in UME"), so the real path is used. */
static inline const char *tu_self_exe(void)
{
    static char path[4096];
    if (tu_on_valgrind()) {
        ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
        if (n > 0) {
            path[n] = '\0';
            return path;
        }
    }
    return "/proc/self/exe";
}

static inline int64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int tu_pipe(int fds[2])
{
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno;
}

/* 1 when fd is readable (or at EOF/error), 0 on timeout, -errno on failure. */
static inline int tu_wait_readable(int fd, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : tu_now_ms() + timeout_ms;
    for (;;) {
        int left = -1;
        if (deadline >= 0) {
            int64_t d = deadline - tu_now_ms();
            left = d < 0 ? 0 : (int)d;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, left);
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

static inline int tu_write_full(int fd, const void *buf, size_t len)
{
    const char *p = (const char *)buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static inline ssize_t tu_read_full(int fd, void *buf, size_t len, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : tu_now_ms() + timeout_ms;
    char *p = (char *)buf;
    size_t got = 0;
    while (got < len) {
        int left = -1;
        if (deadline >= 0) {
            int64_t d = deadline - tu_now_ms();
            left = d < 0 ? 0 : (int)d;
        }
        int r = tu_wait_readable(fd, left);
        if (r < 0)
            return r;
        if (r == 0)
            return -ETIMEDOUT;
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static inline ssize_t tu_read_to_eof(int fd, char *buf, size_t cap, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : tu_now_ms() + timeout_ms;
    size_t got = 0;
    if (cap == 0)
        return -EINVAL;
    for (;;) {
        int left = -1;
        if (deadline >= 0) {
            int64_t d = deadline - tu_now_ms();
            left = d < 0 ? 0 : (int)d;
        }
        int r = tu_wait_readable(fd, left);
        if (r < 0)
            return r;
        if (r == 0) {
            buf[got] = '\0';
            return -ETIMEDOUT;
        }
        char tmp[256];
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        size_t room = cap - 1 - got;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(buf + got, tmp, take);
        got += take;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

/* ---- gate: children wait until the parent opens it (closes the write end) */

typedef struct tu_gate {
    int rd, wr;
} tu_gate;

static inline int tu_gate_init(tu_gate *g)
{
    g->rd = g->wr = -1;
    int fds[2];
    int r = tu_pipe(fds);
    if (r < 0)
        return r;
    g->rd = fds[0];
    g->wr = fds[1];
    return 0;
}

/* In a child: drops its own copy of the write end, then blocks until the
 * parent opens the gate (or dies). 0 when open, -ETIMEDOUT, -errno. */
static inline int tu_gate_wait(tu_gate *g, int timeout_ms)
{
    if (g->wr >= 0) {
        close(g->wr);
        g->wr = -1;
    }
    char c;
    ssize_t r = tu_read_full(g->rd, &c, 1, timeout_ms);
    return r < 0 ? (int)r : 0;
}

static inline void tu_gate_open(tu_gate *g)
{
    if (g->wr >= 0) {
        close(g->wr);
        g->wr = -1;
    }
}

static inline void tu_gate_destroy(tu_gate *g)
{
    tu_gate_open(g);
    if (g->rd >= 0) {
        close(g->rd);
        g->rd = -1;
    }
}

/* ---- /proc accounting */

static inline int tu_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -errno;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own fd */
}

/* State letter and parent of any process, from /proc/<pid>/stat; 0, or -1
 * when the process does not exist (any more). */
static inline int tu_proc_state(pid_t pid, char *state, pid_t *ppid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t len;
    do {
        len = read(fd, buf, sizeof buf - 1);
    } while (len < 0 && errno == EINTR);
    close(fd);
    if (len <= 0)
        return -1;
    buf[len] = '\0';
    /* "pid (comm) S ppid ...": comm may contain anything, so parse from the last ')'. */
    const char *rp = strrchr(buf, ')');
    int parent;
    if (!rp || sscanf(rp + 1, " %c %d", state, &parent) != 2)
        return -1;
    *ppid = (pid_t)parent;
    return 0;
}

/* Children of this process (any state); *zombies (if not NULL) gets how many
 * of them are zombies. -errno on failure. */
static inline int tu_count_children(int *zombies)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    pid_t self = getpid();
    int n = 0, z = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char state;
        pid_t ppid;
        if (tu_proc_state((pid_t)atoi(e->d_name), &state, &ppid) < 0)
            continue; /* gone meanwhile */
        if (ppid != self)
            continue;
        n++;
        if (state == 'Z')
            z++;
    }
    closedir(d);
    if (zombies)
        *zombies = z;
    return n;
}

static inline int tu_count_zombies(void)
{
    int z = 0;
    int r = tu_count_children(&z);
    return r < 0 ? r : z;
}

#endif /* LIBPROC_TESTUTIL_H */
