/* SPDX-License-Identifier: MIT */
/*
 * Messages over a stream socket in the framing of CPython's
 * multiprocessing.connection: a signed 4-byte big-endian length, or -1 and
 * then an unsigned 8-byte one for messages over 2^31 - 1 bytes, followed by
 * the bytes. A stream has no record boundaries, so a receive that stops in
 * the middle of a message (timeout, a too small buffer) keeps what it has
 * read in the handle (struct proc__conn_rx) and the next call goes on from
 * there; the receive lock is held for the whole call so that two threads
 * never read parts of one message.
 */
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define STREAM_SHORT_MAX 0x7fffffffu /* longest length of the 4-byte form */

/* ---------------------------------------------------------------------- send */

/* Waits until fd takes more bytes (someone may have made it non-blocking). */
static int wait_writable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    while (poll(&p, 1, -1) < 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

static int send_errno(int err)
{
    return err == ECONNRESET || err == ENOTCONN ? -EPIPE : -err;
}

/*
 * Writes every byte of iov[0..n): header and body in one call when the
 * kernel takes them. *started: some bytes went out.
 */
static int send_all(int fd, struct iovec *iov, int n, bool *started)
{
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return send_errno(errno);
            int r = wait_writable(fd);
            if (r < 0)
                return r;
            continue;
        }
        size_t left = (size_t)w;
        *started = true;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (unsigned char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

int proc__stream_send(proc_conn_t *c, const void *msg, size_t len)
{
    unsigned char hdr[12];
    size_t hlen = 4;
    if ((uint64_t)len > STREAM_SHORT_MAX) {
        memset(hdr, 0xff, 4); /* -1: the 8-byte length follows */
        put_be(hdr + 4, len, 8);
        hlen = 12;
    } else {
        put_be(hdr, len, 4);
    }
    struct iovec iov[2] = {{hdr, hlen}, {(void *)msg, len}};
    proc__ipc_plock_lock(&c->send_lock);
    bool started = false;
    int r = c->send_broken ? c->send_broken : send_all(c->fd, iov, len ? 2 : 1, &started);
    /* Half a message on the wire: the peer would read the next one's header
     * inside this body, so nothing more may be sent. */
    if (r < 0 && started)
        c->send_broken = r;
    proc__ipc_plock_unlock(&c->send_lock);
    return r;
}

/* ------------------------------------------------------------------- receive */

int proc__conn_wait_readable(int fd, const struct proc__deadline *d)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, proc__deadline_left_ms(d));
        if (n >= 0)
            return n > 0;
        if (errno != EINTR && errno != EAGAIN)
            return -errno;
    }
}

/*
 * Reads up to n bytes by d: how many (> 0); -EPIPE at end of file; -ETIMEDOUT.
 * Waiting without a limit, it lets the kernel fill the whole range.
 */
static ssize_t read_some(int fd, void *p, size_t n, const struct proc__deadline *d)
{
    int flags = d->timeout_ms < 0 ? MSG_WAITALL : MSG_DONTWAIT;
    for (;;) {
        ssize_t r = recv(fd, p, n, flags);
        if (r > 0)
            return r;
        if (r == 0)
            return -EPIPE;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET)
            return -EPIPE;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        /* No spin before poll() here, unlike a pipe: these sockets often
         * cross a network, where an answer takes longer than any spin; and
         * on loopback a spin that halved an idle round trip made it slower
         * than the wake-up it saves beside a background load (bench 12, the
         * handshake and a 64-byte ping-pong). */
        int w = proc__conn_wait_readable(fd, d);
        if (w <= 0)
            return w == 0 ? -ETIMEDOUT : w;
    }
}

/* Reads until [p, p + n) is full, counting in *got. 0 or what read_some returned. */
static int read_full(int fd, unsigned char *p, uint64_t n, uint64_t *got,
                     const struct proc__deadline *d)
{
    while (*got < n) {
        uint64_t want = n - *got;
        ssize_t r = read_some(fd, p + *got, want > SSIZE_MAX ? SSIZE_MAX : (size_t)want, d);
        if (r < 0)
            return (int)r;
        *got += (uint64_t)r;
    }
    return 0;
}

/* Every later receive returns err: the stream is out of step. */
static int set_broken(struct proc__conn_rx *rx, int err)
{
    atomic_store_explicit(&rx->broken, err, memory_order_relaxed);
    return err;
}

static uint64_t get_be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads the length prefix: 0 (rx->len set), or -errno (end of file before any byte: -EPIPE). */
static int read_header(proc_conn_t *c, const struct proc__deadline *d)
{
    struct proc__conn_rx *rx = &c->rx;
    uint64_t got = rx->hdr_got;
    int r = read_full(c->fd, rx->hdr, 4, &got, d);
    if (r == 0 && get_be(rx->hdr, 4) == 0xffffffffu)
        r = read_full(c->fd, rx->hdr, 12, &got, d);
    rx->hdr_got = (unsigned)got;
    if (r == -EPIPE && got > 0)
        r = set_broken(rx, -EPROTO); /* the peer left in the middle of a message */
    if (r < 0)
        return r;
    uint64_t len = get_be(rx->hdr, 4);
    if (len == 0xffffffffu)
        len = get_be(rx->hdr + 4, 8);
    else if (len > STREAM_SHORT_MAX)
        return set_broken(rx, -EPROTO); /* a negative length other than -1 */
    rx->len = len;
    rx->have_len = true;
    return 0;
}

static ssize_t finish(struct proc__conn_rx *rx)
{
    ssize_t n = (ssize_t)rx->len;
    free(rx->part);
    memset(rx, 0, sizeof *rx);
    return n;
}

/*
 * The body, into buf unless an earlier call began it in rx->part (between
 * calls, bytes read always live there); a call that stops half-way moves
 * what it read into rx->part.
 */
static ssize_t read_body(proc_conn_t *c, unsigned char *buf, const struct proc__deadline *d)
{
    struct proc__conn_rx *rx = &c->rx;
    int r = read_full(c->fd, rx->part ? rx->part : buf, rx->len, &rx->got, d);
    if (r == 0) {
        if (rx->part)
            memcpy(buf, rx->part, (size_t)rx->len);
        return finish(rx);
    }
    if (r == -EPIPE)
        return set_broken(rx, -EPROTO); /* the peer left in the middle of a message */
    if (!rx->part && rx->got > 0) {
        rx->part = malloc((size_t)rx->len);
        if (!rx->part)
            return set_broken(rx, -ENOMEM); /* the rest of the stream is out of step */
        memcpy(rx->part, buf, (size_t)rx->got);
    }
    return r;
}

ssize_t proc__stream_recv(proc_conn_t *c, void *buf, size_t cap, uint64_t max,
                          const struct proc__deadline *d)
{
    if (proc__ipc_plock_lock_by(&c->lock, d) < 0)
        return -ETIMEDOUT;
    struct proc__conn_rx *rx = &c->rx;
    ssize_t r = atomic_load_explicit(&rx->broken, memory_order_relaxed);
    if (r == 0 && !rx->have_len)
        r = read_header(c, d);
    if (r == 0 && (rx->len > max || rx->len > SSIZE_MAX))
        r = set_broken(rx, -EPROTO); /* never allocated, never read */
    else if (r == 0 && rx->len > cap)
        r = -EMSGSIZE;
    else if (r == 0)
        r = read_body(c, buf, d);
    proc__ipc_plock_unlock(&c->lock);
    return r;
}

int proc__stream_poll(proc_conn_t *c, const struct proc__deadline *d)
{
    if (atomic_load_explicit(&c->rx.broken, memory_order_relaxed))
        return 1; /* a receive returns at once */
    return proc__conn_wait_readable(c->fd, d);
}

void proc__stream_release(proc_conn_t *c)
{
    free(c->rx.part);
    memset(&c->rx, 0, sizeof c->rx);
}
