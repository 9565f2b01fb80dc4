/* SPDX-License-Identifier: MIT */
/*
 * Pipe(): a connected pair of AF_UNIX SOCK_SEQPACKET sockets. Every message is
 * exactly one record, so it arrives whole or not at all, whoever is killed
 * when: a 16-byte header and, up to CONN_INLINE_MAX bytes, the payload; a
 * larger payload is written to a memfd that travels in the record
 * (SCM_RIGHTS), which keeps even a 64 MiB message atomic and lets a receive
 * find it complete the moment the record is there.
 *
 * Receiving peeks at the header first, so that a too small buffer leaves the
 * message in the socket (-EMSGSIZE). The peek and the receive run under a
 * per-handle lock (a proc__ipc_plock), so threads of one process cannot take each other's
 * message in between. Another process receiving from the same end can; if
 * the record taken then does not fit, it is kept in the handle ("stash") and
 * handed out by the next call.
 */
#include "conn.h"
#include "fdpass.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define CONN_MAGIC 0x4d43504cu /* "LPCM" */
#define CONN_INLINE 1u
#define CONN_MEMFD 2u
#define CONN_INLINE_MAX ((size_t)64 << 10)
#define CONN_MAX_FDS 4 /* room for a foreign record's extra fds, which are closed */

struct conn_hdr {
    uint32_t magic;
    uint32_t kind;
    uint64_t len; /* the message's length */
};

/* --------------------------------------------------------------------- setup */

proc_conn_t *proc__conn_new(int fd, bool readable, bool writable, bool stream)
{
    proc_conn_t *c = calloc(1, sizeof *c);
    if (c) {
        c->fd = fd;
        c->readable = readable;
        c->writable = writable;
        c->stream = stream;
        c->stash_fd = -1;
    }
    return c;
}

int proc_pipe(proc_conn_t **a, proc_conn_t **b, bool duplex)
{
    if (!a || !b)
        return -EINVAL;
    *a = *b = NULL;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    /* One-way: the kernel refuses sends from a's socket too, not only the API. */
    int r = duplex || shutdown(sv[0], SHUT_WR) == 0 ? 0 : -errno;
    proc_conn_t *ca = r ? NULL : proc__conn_new(sv[0], true, duplex, false);
    proc_conn_t *cb = r ? NULL : proc__conn_new(sv[1], duplex, true, false);
    if (!ca || !cb) {
        free(ca);
        free(cb);
        close(sv[0]);
        close(sv[1]);
        return r ? r : -ENOMEM;
    }
    *a = ca;
    *b = cb;
    return 0;
}

static void stash_clear(proc_conn_t *c)
{
    free(c->stash_data);
    c->stash_data = NULL;
    if (c->stash_fd >= 0)
        close(c->stash_fd);
    c->stash_fd = -1;
    atomic_store(&c->stash_full, false);
}

int proc_conn_close(proc_conn_t *c)
{
    if (!c)
        return 0;
    stash_clear(c);
    proc__stream_release(c);
    close(c->fd);
    free(c->scratch);
    free(c);
    return 0;
}

int proc_conn_fileno(const proc_conn_t *c)
{
    return c ? c->fd : -EINVAL;
}

/* ---------------------------------------------------------------------- send */

static int send_errno(int err)
{
    return err == ECONNRESET || err == ENOTCONN ? -EPIPE : -err;
}

/* Sends one record: the header, payload bytes inline, and optionally an fd. */
static int send_record(int fd, uint32_t kind, uint64_t msg_len, const void *payload, size_t n,
                       int pass_fd)
{
    struct conn_hdr h = {CONN_MAGIC, kind, msg_len};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)payload, n}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = n ? 2 : 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    if (pass_fd >= 0)
        proc__fds_attach(&m, ctl.buf, &pass_fd, 1);
    for (;;) {
        if (sendmsg(fd, &m, MSG_NOSIGNAL) >= 0)
            return 0; /* SOCK_SEQPACKET: the whole record or nothing */
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return send_errno(errno);
        /* Someone made the shared file description non-blocking: wait for room. */
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, -1);
    }
}

static int send_memfd(int fd, const void *msg, size_t len)
{
    int mfd = memfd_create("libproc-conn", MFD_CLOEXEC);
    if (mfd < 0)
        return -errno;
    const unsigned char *p = msg;
    size_t done = 0;
    int r = 0;
    while (done < len) {
        ssize_t w = write(mfd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            r = errno == ENOSPC ? -ENOMEM : -errno;
            break;
        }
        done += (size_t)w;
    }
    if (r == 0)
        r = send_record(fd, CONN_MEMFD, len, NULL, 0, mfd);
    close(mfd);
    return r;
}

int proc_conn_send(proc_conn_t *c, const void *msg, size_t len)
{
    if (!c || (!msg && len > 0))
        return -EINVAL;
    if (!c->writable)
        return -EBADF;
    if (c->stream)
        return proc__stream_send(c, msg, len);
    if (len <= CONN_INLINE_MAX) {
        int r = send_record(c->fd, CONN_INLINE, len, msg, len, -1);
        if (r != -EMSGSIZE) /* EMSGSIZE: a socket buffer shrunk below the record */
            return r;
    }
    return send_memfd(c->fd, msg, len);
}

/* ------------------------------------------------------------------- receive */

static ssize_t recv_errno(int err)
{
    if (err == EAGAIN || err == EWOULDBLOCK)
        return -EAGAIN;
    return err == ECONNRESET ? -EPIPE : -err;
}

static ssize_t read_memfd(int fd, void *buf, uint64_t len)
{
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (unsigned char *)buf + done, (size_t)(len - done), (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EPROTO; /* shorter than announced */
        done += (uint64_t)n;
    }
    return (ssize_t)len;
}

/* Hands out the stashed record. */
static ssize_t take_stash(proc_conn_t *c, void *buf, size_t cap)
{
    uint64_t len = c->stash_len;
    if (len > cap)
        return -EMSGSIZE;
    ssize_t r = (ssize_t)len;
    if (c->stash_fd >= 0)
        r = read_memfd(c->stash_fd, buf, len);
    else if (len > 0)
        memcpy(buf, c->stash_data, (size_t)len);
    stash_clear(c);
    return r;
}

/*
 * Takes the next record off the socket; its header said it fits in cap, but
 * another process may have taken that one first. An inline payload lands in
 * buf, spilling into the scratch buffer only if it is larger than cap.
 */
static ssize_t take_record(proc_conn_t *c, void *buf, size_t cap)
{
    struct conn_hdr h;
    size_t direct = cap < CONN_INLINE_MAX ? cap : CONN_INLINE_MAX;
    struct iovec iov[3] = {{&h, sizeof h}, {buf, direct}, {NULL, 0}};
    size_t niov = 2;
    if (direct < CONN_INLINE_MAX) {
        if (!c->scratch && !(c->scratch = malloc(CONN_INLINE_MAX)))
            return -ENOMEM;
        iov[2].iov_base = c->scratch;
        iov[2].iov_len = CONN_INLINE_MAX - direct;
        niov = 3;
    }
    union {
        char buf[CMSG_SPACE(sizeof(int) * CONN_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr m = {.msg_iov = iov,
                       .msg_iovlen = niov,
                       .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    ssize_t n;
    do
        n = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return recv_errno(errno);
    if (n == 0)
        return -EPIPE;
    int fd = -1;
    proc__fds_received(&m, &fd, 1); /* one at most; others are closed */
    uint64_t got = (uint64_t)n - sizeof h;
    bool ok = (size_t)n >= sizeof h && h.magic == CONN_MAGIC && !(m.msg_flags & MSG_TRUNC);
    if (ok && h.kind == CONN_INLINE && fd < 0 && got == h.len) {
        if (h.len <= cap)
            return (ssize_t)h.len;
        c->stash_data = malloc((size_t)h.len);
        if (!c->stash_data)
            return -ENOMEM; /* the message is lost */
        if (direct)
            memcpy(c->stash_data, buf, direct);
        memcpy(c->stash_data + direct, c->scratch, (size_t)h.len - direct);
    } else if (ok && h.kind == CONN_MEMFD && got == 0 && fd >= 0) {
        if (h.len <= cap) {
            ssize_t r = read_memfd(fd, buf, h.len);
            close(fd);
            return r;
        }
        c->stash_fd = fd;
    } else {
        if (fd >= 0)
            close(fd);
        /* A memfd message whose fd the kernel could not install here. */
        if (ok && h.kind == CONN_MEMFD && (m.msg_flags & MSG_CTRUNC))
            return -EMFILE;
        return -EPROTO;
    }
    c->stash_len = h.len;
    atomic_store(&c->stash_full, true);
    return -EMSGSIZE;
}

/* One attempt without waiting: the length, -EAGAIN when nothing is there, or an error. */
static ssize_t recv_once(proc_conn_t *c, void *buf, size_t cap)
{
    if (atomic_load(&c->stash_full))
        return take_stash(c, buf, cap);
    struct conn_hdr h;
    ssize_t n;
    do
        n = recv(c->fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return recv_errno(errno);
    if (n == 0)
        return -EPIPE; /* end of file: the other end is closed everywhere */
    if ((size_t)n == sizeof h && h.magic == CONN_MAGIC && h.len > cap)
        return -EMSGSIZE; /* stays queued */
    return take_record(c, buf, cap);
}

ssize_t proc_conn_recv(proc_conn_t *c, void *buf, size_t cap, int timeout_ms)
{
    struct proc__deadline d;
    if (!c || (!buf && cap > 0) || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    if (!c->readable)
        return -EBADF;
    if (c->stream)
        return proc__stream_recv(c, buf, cap, UINT64_MAX, &d);
    struct proc__ipc_spin spin = {0};
    for (;;) {
        proc__ipc_plock_lock(&c->lock);
        ssize_t r = recv_once(c, buf, cap);
        proc__ipc_plock_unlock(&c->lock);
        if (r != -EAGAIN)
            return r;
        /* The peer is usually answering right now: asking again for a few
         * microseconds costs less than being woken from poll(). */
        if (proc__ipc_spin_more(&spin, &d))
            continue;
        int w = proc__conn_wait_readable(c->fd, &d);
        if (w <= 0)
            return w == 0 ? -ETIMEDOUT : w;
    }
}

int proc_conn_poll(proc_conn_t *c, int timeout_ms)
{
    struct proc__deadline d;
    if (!c || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    if (!c->readable)
        return -EBADF;
    if (c->stream)
        return proc__stream_poll(c, &d);
    if (atomic_load(&c->stash_full))
        return 1;
    return proc__conn_wait_readable(c->fd, &d);
}
