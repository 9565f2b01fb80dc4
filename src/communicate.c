/* SPDX-License-Identifier: MIT */
/*
 * proc_communicate: Python's Popen.communicate on a started child. One
 * thread polls the parent's ends of the child's stdin, stdout and stderr
 * pipes, writing and reading whatever is ready, so no order of the child's
 * reads and writes can deadlock it; then it joins. What a call left undone
 * (a timeout) is kept in p->comm and in the caller's buffers for the next.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libproc/ipc.h>

/* The first read into an empty buffer; growth doubles from there. */
#define COMM_FIRST_CAP ((size_t)64 << 10)
/* The most one write() offers the child's stdin: what a pipe can hold at the most. */
#define COMM_WRITE_MAX ((size_t)1 << 20)

/* What a proc_communicate() call leaves for the next (API: input remembered). */
struct proc__comm {
    const unsigned char *in; /* the first call's input, valid until a call returns 0 */
    size_t in_len, in_off;
    size_t cap[3]; /* capacity of the caller's out (1) and err (2) buffers */
};

static bool is_pipe(const proc_t *p, int stream)
{
    return p->stdio_how[stream] == PROC_STDIO_PIPE;
}

static int check_args(const proc_t *p, const void *input, size_t input_len,
                      const proc_output_t *out, const proc_output_t *err)
{
    if (!p || p->kind != PROC__KIND_CHILD)
        return -EINVAL;
    /* A call after a timeout goes on with the first call's input and ignores its own. */
    bool new_input = !p->comm && input_len > 0;
    if ((new_input && (!input || !is_pipe(p, 0))) || (out && !is_pipe(p, 1)) ||
        (err && !is_pipe(p, 2)))
        return -EINVAL;
    return proc__check_own_child(p);
}

/*
 * Writes to the child's stdin with SIGPIPE blocked in this thread; a SIGPIPE
 * this write raised is taken back, so nothing else in the process sees it.
 */
static ssize_t write_quietly(int fd, const void *buf, size_t len)
{
    sigset_t pipe_only, old, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    ssize_t r = write(fd, buf, len);
    int saved = errno;
    if (r < 0 && errno == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return r;
}

/* Room for at least want more bytes and the NUL after them; false on ENOMEM. */
static bool reserve(proc_output_t *o, size_t *cap, size_t want)
{
    if (o->data && *cap > o->len && *cap - o->len > want)
        return true;
    /* A buffer this object did not grow (a call after one that returned 0) has no known cap. */
    size_t n = *cap > COMM_FIRST_CAP ? *cap : COMM_FIRST_CAP;
    while (n <= o->len || n - o->len <= want) {
        if (n > SIZE_MAX / 2)
            return false;
        n *= 2;
    }
    char *d = realloc(o->data, n);
    if (!d)
        return false;
    o->data = d;
    *cap = n;
    return true;
}

/*
 * Reads what is there from stream i into o (or drops it when o is NULL);
 * 1 at EOF (the end is closed then), 0 to go on, -errno.
 */
static int drain(proc_t *p, struct proc__comm *c, int i, proc_output_t *o)
{
    int fd = proc_stdio_fd(p, i);
    ssize_t r;
    if (o && o->data) {
        if (!reserve(o, &c->cap[i], o->len < COMM_FIRST_CAP ? COMM_FIRST_CAP / 2 : o->len / 2))
            return -ENOMEM;
        r = read(fd, o->data + o->len, c->cap[i] - o->len - 1);
    } else {
        /* Nothing kept yet: data stays NULL unless something comes. */
        char scratch[16384];
        r = read(fd, scratch, sizeof scratch);
        if (r > 0 && o && !reserve(o, &c->cap[i], (size_t)r))
            return -ENOMEM;
        if (r > 0 && o)
            memcpy(o->data + o->len, scratch, (size_t)r);
    }
    if (r > 0 && o) {
        o->len += (size_t)r;
        o->data[o->len] = '\0';
    }
    if (r < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    if (r > 0)
        return 0;
    proc_stdio_close(p, i);
    return 1;
}

/* Writes what fits (stdin is non-blocking while pump() runs); closes stdin when all is written
 * or the child closed it. */
static int feed(proc_t *p, struct proc__comm *c)
{
    int fd = proc_stdio_fd(p, 0);
    size_t n = c->in_len - c->in_off;
    ssize_t r = write_quietly(fd, c->in + c->in_off, n < COMM_WRITE_MAX ? n : COMM_WRITE_MAX);
    if (r > 0)
        c->in_off += (size_t)r;
    else if (r < 0 && errno == EPIPE)
        c->in_off = c->in_len; /* the child closed its stdin: not an error */
    else if (r < 0 && errno != EINTR && errno != EAGAIN)
        return -errno;
    if (c->in_off == c->in_len)
        proc_stdio_close(p, 0);
    return 0;
}

/* Makes fd non-blocking for a while; its old flags, or -1 when they were not changed. */
static int nonblock(int fd)
{
    int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (fl < 0 || (fl & O_NONBLOCK) || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return fl;
}

/* Polls the open ends until all are done or the deadline passes; 0, -ETIMEDOUT, -errno. */
static int pump_fds(proc_t *p, struct proc__comm *c, proc_output_t *out, proc_output_t *err,
                    const struct proc__deadline *d)
{
    proc_output_t *outs[3] = {NULL, out, err};
    for (bool polled = false;; polled = true) {
        struct pollfd fds[3];
        int streams[3], nfds = 0;
        for (int i = 0; i < 3; i++) {
            int fd = proc_stdio_fd(p, i);
            if (fd < 0)
                continue;
            if (i == 0 && c->in_off == c->in_len) {
                proc_stdio_close(p, 0); /* nothing (more) to write */
                continue;
            }
            fds[nfds] = (struct pollfd){.fd = fd, .events = i == 0 ? POLLOUT : POLLIN};
            streams[nfds++] = i;
        }
        if (nfds == 0)
            return 0;
        /* Checked at every pass, not only when poll() times out: a child that never stops
         * writing keeps some end ready at every poll. */
        if (polled && proc__deadline_passed(d))
            return -ETIMEDOUT;
        int k = poll(fds, (nfds_t)nfds, proc__deadline_left_ms(d));
        if (k < 0 && errno != EINTR)
            return -errno;
        for (int j = 0; j < nfds && k > 0; j++) {
            if (!fds[j].revents)
                continue;
            int i = streams[j];
            int r = i == 0 ? feed(p, c) : drain(p, c, i, outs[i]);
            if (r < 0)
                return r;
        }
    }
}

/* pump_fds() with the child's stdin made non-blocking (a write never waits), as it was after. */
static int pump(proc_t *p, struct proc__comm *c, proc_output_t *out, proc_output_t *err,
                const struct proc__deadline *d)
{
    int fd = proc_stdio_fd(p, 0), old = nonblock(fd);
    int r = pump_fds(p, c, out, err, d);
    if (old >= 0 && proc_stdio_fd(p, 0) == fd)
        fcntl(fd, F_SETFL, old);
    return r;
}

int proc_communicate(proc_t *p, const void *input, size_t input_len, proc_output_t *out,
                     proc_output_t *err, int timeout_ms)
{
    struct proc__deadline d;
    if (proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    int r = check_args(p, input, input_len, out, err);
    if (r < 0)
        return r;
    if (!p->comm) {
        p->comm = calloc(1, sizeof *p->comm);
        if (!p->comm)
            return -ENOMEM;
        p->comm->in = input;
        p->comm->in_len = input_len;
    }
    r = pump(p, p->comm, out, err, &d);
    if (r == 0)
        r = proc_join(p, proc__deadline_left_ms(&d));
    if (r == 0) {
        free(p->comm); /* a later call starts afresh */
        p->comm = NULL;
    }
    return r;
}
