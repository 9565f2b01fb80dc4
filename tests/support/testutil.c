/* SPDX-License-Identifier: MIT */
/* The helpers of testutil.h. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
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

int tu_on_valgrind(void)
{
    return RUNNING_ON_VALGRIND != 0;
}

/* Natively "/proc/self/exe". Under valgrind that link names valgrind's tool
 * binary, and valgrind 3.19 translates it in readlink() but not in execve()
 * (the traced re-run fails with "mmap(0x58000000, 4096) failed in UME"), so
 * the real path is used. */
const char *tu_self_exe(void)
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

int64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tu_left_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t d = deadline - tu_now_ms();
    return d < 0 ? 0 : (int)d;
}

int tu_pipe(int fds[2])
{
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno;
}

int tu_wait_readable(int fd, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : tu_now_ms() + timeout_ms;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, tu_left_ms(deadline));
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

int tu_poll_in(int fd, int timeout_ms, short *revents)
{
    int64_t deadline = tu_now_ms() + timeout_ms;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, tu_left_ms(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (revents)
            *revents = pfd.revents;
        return r;
    }
}

int tu_write_full(int fd, const void *buf, size_t len)
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

/* Waits (until deadline, -1: none) for fd to be readable, then reads up to
 * n bytes, again after EINTR or EAGAIN: the count, 0 at EOF, -ETIMEDOUT, or
 * -errno. */
static ssize_t read_some(int fd, void *buf, size_t n, int64_t deadline)
{
    for (;;) {
        int r = tu_wait_readable(fd, tu_left_ms(deadline));
        if (r < 0)
            return r;
        if (r == 0)
            return -ETIMEDOUT;
        ssize_t k = read(fd, buf, n);
        if (k >= 0)
            return k;
        if (errno != EINTR && errno != EAGAIN)
            return -errno;
    }
}

ssize_t tu_read_full(int fd, void *buf, size_t len, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : tu_now_ms() + timeout_ms;
    char *p = (char *)buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read_some(fd, p + got, len - got, deadline);
        if (n < 0)
            return n;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

ssize_t tu_read_to_eof(int fd, char *buf, size_t cap, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : tu_now_ms() + timeout_ms;
    size_t got = 0;
    if (cap == 0)
        return -EINVAL;
    for (;;) {
        char tmp[256];
        ssize_t n = read_some(fd, tmp, sizeof tmp, deadline);
        if (n == -ETIMEDOUT) {
            buf[got] = '\0';
            return -ETIMEDOUT;
        }
        if (n < 0)
            return n;
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

bool tu_eof_within(int fd, int timeout_ms)
{
    int64_t deadline = tu_now_ms() + timeout_ms;
    for (;;) {
        if (tu_poll_in(fd, tu_left_ms(deadline), NULL) <= 0)
            return false;
        char buf[64];
        ssize_t r;
        do {
            r = read(fd, buf, sizeof buf);
        } while (r < 0 && errno == EINTR);
        if (r == 0)
            return true;
        if (r < 0)
            return false;
    }
}

/* ---- gate */

int tu_gate_init(tu_gate *g)
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

int tu_gate_wait(tu_gate *g, int timeout_ms)
{
    if (g->wr >= 0) {
        close(g->wr);
        g->wr = -1;
    }
    char c;
    ssize_t r = tu_read_full(g->rd, &c, 1, timeout_ms);
    return r < 0 ? (int)r : 0;
}

void tu_gate_open(tu_gate *g)
{
    if (g->wr >= 0) {
        close(g->wr);
        g->wr = -1;
    }
}

void tu_gate_destroy(tu_gate *g)
{
    tu_gate_open(g);
    if (g->rd >= 0) {
        close(g->rd);
        g->rd = -1;
    }
}

int tu_gate_main(void *arg)
{
    return tu_gate_wait(arg, -1) == 0 ? 0 : 99;
}

/* ---- /proc accounting */

int tu_count_fds(void)
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

int tu_proc_state(pid_t pid, char *state, pid_t *ppid)
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

char tu_state(pid_t pid)
{
    char state;
    pid_t ppid;
    return tu_proc_state(pid, &state, &ppid) == 0 ? state : 0;
}

char tu_child_state(pid_t pid)
{
    char state;
    pid_t ppid;
    return tu_proc_state(pid, &state, &ppid) == 0 && ppid == getpid() ? state : 0;
}

/* The system call pid's main thread is blocked in (-1: running), or -errno. */
static long blocked_in(pid_t pid)
{
    char path[64], buf[64];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int err = errno;
    close(fd);
    if (n <= 0)
        return n < 0 ? -err : -EIO;
    buf[n] = '\0';
    return strncmp(buf, "running", 7) == 0 ? -1 : strtol(buf, NULL, 10);
}

int tu_wait_blocked_in(pid_t pid, long nr, int timeout_ms)
{
    int64_t end = tu_now_ms() + timeout_ms;
    for (;;) {
        long r = blocked_in(pid);
        if (r == nr)
            return 0;
        if (r < -1)
            return (int)r;
        if (tu_now_ms() >= end)
            return -ETIMEDOUT;
        poll(NULL, 0, 1); /* not a stand-in: the condition is checked again */
    }
}

int tu_count_children(int *zombies)
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

int tu_count_zombies(void)
{
    int z = 0;
    int r = tu_count_children(&z);
    return r < 0 ? r : z;
}

int tu_wait_children_gone(int timeout_ms)
{
    int64_t deadline = tu_now_ms() + timeout_ms;
    int n;
    while ((n = tu_count_children(NULL)) != 0 && tu_now_ms() < deadline)
        sched_yield();
    return n;
}

pid_t tu_waitpid(pid_t pid, int *status)
{
    pid_t r;
    do {
        r = waitpid(pid, status, 0);
    } while (r < 0 && errno == EINTR);
    return r;
}

#if TU_FORK_GATE
static pthread_rwlock_t fork_gate;
static pthread_once_t fork_gate_once = PTHREAD_ONCE_INIT;

static void fork_gate_init(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    /* The forking thread must not wait behind an endless stream of holders. */
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&fork_gate, &a);
    pthread_rwlockattr_destroy(&a);
}

void tu_fork_gate_enter(void)
{
    pthread_once(&fork_gate_once, fork_gate_init);
    pthread_rwlock_rdlock(&fork_gate);
}

void tu_fork_gate_leave(void)
{
    pthread_rwlock_unlock(&fork_gate);
}

pid_t tu_fork_gated(void)
{
    pthread_once(&fork_gate_once, fork_gate_init);
    pthread_rwlock_wrlock(&fork_gate);
    pid_t pid = fork();
    int saved = errno;
    if (pid != 0) /* the child's copy stays taken: it is not to be used there */
        pthread_rwlock_unlock(&fork_gate);
    errno = saved;
    return pid;
}
#else
void tu_fork_gate_enter(void)
{
}

void tu_fork_gate_leave(void)
{
}

pid_t tu_fork_gated(void)
{
    return fork();
}
#endif
