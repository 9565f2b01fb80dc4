/* SPDX-License-Identifier: MIT */
/*
 * IPC layer: the connection handle (proc_conn_t) as its files share it.
 * Two kinds of channel sit behind the one public type:
 *  - a pipe end (conn.c): SOCK_SEQPACKET records with libproc's own header,
 *    a memfd for large messages;
 *  - a stream socket from proc_accept()/proc_connect() (conn_stream.c):
 *    Python's multiprocessing.connection framing, a 4-byte big-endian
 *    length (or -1 and an 8-byte one) before each message, so that either
 *    end may be CPython.
 */
#ifndef LIBPROC_CONN_H
#define LIBPROC_CONN_H

#include "ipc_lock.h"

#include <stdint.h>
#include <sys/types.h>

/* What a stream receive has read of the message it is in the middle of. */
struct proc__conn_rx {
    unsigned char hdr[12]; /* the length prefix: 4 bytes, or 4 + 8 */
    unsigned hdr_got;
    bool have_len;
    uint64_t len;        /* the message's length, once have_len */
    unsigned char *part; /* its body so far, when a call gave up before the end */
    uint64_t got;        /* bytes in part */
    _Atomic int broken;  /* a framing error: every later receive returns it
                            (read without the lock by proc_conn_poll) */
};

struct proc_conn {
    int fd;
    bool readable, writable;
    bool stream;          /* Python's framing over a stream socket */
    proc__ipc_plock lock; /* held across a receive (a pipe's peek and take) */
    /* pipes: a record taken off the socket that did not fit the caller's buffer */
    _Atomic bool stash_full;
    uint64_t stash_len;
    unsigned char *stash_data; /* inline payload, or NULL */
    int stash_fd;              /* memfd payload, or -1 */
    unsigned char *scratch;    /* CONN_INLINE_MAX bytes, allocated on first need */
    /* streams */
    proc__ipc_plock send_lock; /* one message at a time on the wire */
    int send_broken;           /* a send stopped mid-message: every later send returns it */
    struct proc__conn_rx rx;
};

/* 1 when fd is readable (or at end of file or error), 0 when d passed, -errno. */
int proc__conn_wait_readable(int fd, const struct proc__deadline *d);

/* A handle for fd (owned from now on), or NULL (ENOMEM; fd untouched). */
proc_conn_t *proc__conn_new(int fd, bool readable, bool writable, bool stream);

/* Stream framing. The handle's locks are taken inside. */
/* One whole message: 0 or -errno (-EPIPE once the peer is gone). */
int proc__stream_send(proc_conn_t *c, const void *msg, size_t len);
/*
 * One whole message into buf (cap bytes) by d: its length; -EMSGSIZE when it
 * is longer than cap (it stays: a later call gets it); -EPROTO when the peer
 * announces more than max bytes (nothing is allocated; the connection is
 * unusable from then on) or breaks the framing; -EPIPE at end of file;
 * -ETIMEDOUT (what was read so far is kept for the next call).
 */
ssize_t proc__stream_recv(proc_conn_t *c, void *buf, size_t cap, uint64_t max,
                          const struct proc__deadline *d);
/* 1 when a receive has something to read (or end of file), 0 when d passed, -errno. */
int proc__stream_poll(proc_conn_t *c, const struct proc__deadline *d);
/* Frees what a receive kept between calls. */
void proc__stream_release(proc_conn_t *c);

/* Python's authentication handshake (conn_auth.c), on a fresh stream handle. */
/* The listener's half first: challenge the peer, then answer its challenge. 0, -EACCES, -errno. */
int proc__auth_server(proc_conn_t *c, const unsigned char *key, size_t keylen,
                      const struct proc__deadline *d);
/* The client's half: answer the listener's challenge, then challenge it. 0, -EACCES, -errno. */
int proc__auth_client(proc_conn_t *c, const unsigned char *key, size_t keylen,
                      const struct proc__deadline *d);

#endif /* LIBPROC_CONN_H */
