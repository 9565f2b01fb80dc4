/* SPDX-License-Identifier: MIT */
/*
 * Listener and Client of Python's multiprocessing.connection: stream
 * sockets (AF_UNIX, or TCP over IPv4/IPv6) whose two ends prove to each
 * other that they hold the same key before either sees a message. The
 * connection that comes out is a proc_conn_t in stream mode (conn_stream.c).
 *
 * The listening socket is non-blocking: accept waits in poll(2), so that a
 * peer that another thread or process took first costs a retry, not a hang.
 * A listener made a socket file removes it when it is closed by the process
 * that made it (as Python's Listener does); an abstract name needs nothing.
 */
#include "conn.h"
#include "conn_addr.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUTH_KEY_MAX 256

struct proc_listener {
    int fd;
    int family;
    char *address;     /* the bound address, in proc_listen()'s syntax */
    char *socket_file; /* a path this process bound, removed at close; or NULL */
    dev_t file_dev;    /* ... and the file it made there, so that close */
    ino_t file_ino;    /* never removes someone else's socket at that path */
    pid_t owner;       /* the process that bound it */
    size_t keylen;
    unsigned char key[AUTH_KEY_MAX];
};

/* The key to use: key itself, or the calling process's authkey for NULL. 0 or -EINVAL. */
static int pick_key(const void *key, size_t keylen, unsigned char *out, size_t *outlen)
{
    if (!key) {
        proc_t *me = proc_current();
        key = me ? proc_authkey(me, &keylen) : NULL;
        if (!key)
            return -ENOMEM;
    }
    if (keylen == 0 || keylen > AUTH_KEY_MAX)
        return -EINVAL;
    memcpy(out, key, keylen);
    *outlen = keylen;
    return 0;
}

/* Python's connections carry whole messages per write: Nagle only delays them. */
static void tune_socket(int fd, int family)
{
    int one = 1;
    if (family == AF_INET || family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* --------------------------------------------------------------------- listen */

static int bind_listen(struct proc_listener *l, const struct proc__addr *a, const char *path)
{
    l->fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (l->fd < 0)
        return -errno;
    int one = 1;
    if (a->family != AF_UNIX)
        (void)setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l->fd, (const struct sockaddr *)&a->ss, a->len) < 0)
        return -errno;
    struct stat st;
    if (path && (stat(path, &st) < 0 || !(l->socket_file = strdup(path)))) {
        unlink(path);
        return -ENOMEM;
    } /* from now on, closing removes the file */
    if (path) {
        l->file_dev = st.st_dev;
        l->file_ino = st.st_ino;
    }
    if (listen(l->fd, SOMAXCONN) < 0)
        return -errno;
    struct sockaddr_storage bound;
    socklen_t len = sizeof bound;
    if (getsockname(l->fd, (struct sockaddr *)&bound, &len) < 0)
        return -errno;
    l->address = proc__addr_format(a->family == AF_UNIX ? &a->ss : &bound,
                                   a->family == AF_UNIX ? a->len : len);
    return l->address ? 0 : -ENOMEM;
}

static void listener_free(struct proc_listener *l)
{
    if (l->fd >= 0)
        close(l->fd);
    struct stat st;
    if (l->socket_file && l->owner == getpid() && lstat(l->socket_file, &st) == 0 &&
        st.st_dev == l->file_dev && st.st_ino == l->file_ino)
        unlink(l->socket_file);
    free(l->socket_file);
    free(l->address);
    free(l);
}

proc_listener_t *proc_listen(const char *address, const void *authkey, size_t keylen)
{
    struct proc__addr a;
    int r = address ? proc__addr_parse(address, &a) : -EINVAL;
    struct proc_listener *l = r == 0 ? calloc(1, sizeof *l) : NULL;
    if (r == 0 && !l)
        r = -ENOMEM;
    if (r == 0) {
        l->fd = -1;
        l->family = a.family;
        l->owner = getpid();
        r = pick_key(authkey, keylen, l->key, &l->keylen);
    }
    if (r == 0)
        r = bind_listen(l, &a, proc__addr_socket_file(&a));
    if (r < 0) {
        if (l)
            listener_free(l);
        errno = -r;
        return NULL;
    }
    return l;
}

const char *proc_listener_address(const proc_listener_t *l)
{
    if (!l)
        errno = EINVAL;
    return l ? l->address : NULL;
}

int proc_listener_fileno(const proc_listener_t *l)
{
    return l ? l->fd : -EINVAL;
}

int proc_listener_close(proc_listener_t *l)
{
    if (l)
        listener_free(l);
    return 0;
}

/* --------------------------------------------------------------------- accept */

/* Takes one pending peer by d: its fd, or -ETIMEDOUT / -errno. */
static int accept_by(int lfd, const struct proc__deadline *d)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int n = poll(&p, 1, proc__deadline_left_ms(d));
        if (n == 0)
            return -ETIMEDOUT;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

/* Runs a handshake on a fresh socket: 0 with *c, or -errno (the socket is closed). */
static int authenticate(int fd, int family, const unsigned char *key, size_t keylen, bool server,
                        proc_conn_t **c, const struct proc__deadline *d)
{
    tune_socket(fd, family);
    proc_conn_t *conn = proc__conn_new(fd, true, true, true);
    if (!conn) {
        close(fd);
        return -ENOMEM;
    }
    int r =
        server ? proc__auth_server(conn, key, keylen, d) : proc__auth_client(conn, key, keylen, d);
    if (r < 0) {
        proc_conn_close(conn);
        /* A peer that hung up or broke the framing did not prove the key either. */
        return r == -EPIPE || r == -EPROTO ? -ECONNABORTED : r;
    }
    *c = conn;
    return 0;
}

int proc_accept(proc_listener_t *l, proc_conn_t **c, int timeout_ms)
{
    struct proc__deadline d;
    if (!l || !c || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    *c = NULL;
    int fd = accept_by(l->fd, &d);
    if (fd < 0)
        return fd;
    /* The peer that came gets a budget of its own: one that arrived late in
     * the wait is not cut short, and a silent one never holds the listener
     * for ever, nor fails a poll-then-accept with timeout 0. */
    proc__deadline_init(&d, timeout_ms > 0 ? timeout_ms : PROC_HANDSHAKE_TIMEOUT_MS);
    return authenticate(fd, l->family, l->key, l->keylen, true, c, &d);
}

/* -------------------------------------------------------------------- connect */

/* Connects fd to a by d (a non-blocking connect, then a wait for its outcome). 0 or -errno. */
static int connect_by(int fd, const struct proc__addr *a, const struct proc__deadline *d)
{
    while (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN && a->family == AF_UNIX) {
            /* The listener's backlog is full: it has to accept first. */
            if (proc__deadline_passed(d))
                return -ETIMEDOUT;
            struct timespec nap = {0, 1000000};
            nanosleep(&nap, NULL);
            continue;
        }
        if (errno != EINPROGRESS)
            return -errno;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n;
        while ((n = poll(&p, 1, proc__deadline_left_ms(d))) < 0 && errno == EINTR)
            ;
        if (n == 0)
            return -ETIMEDOUT;
        int err = 0;
        socklen_t len = sizeof err;
        if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        return -err;
    }
    return 0;
}

int proc_connect(const char *address, const void *authkey, size_t keylen, proc_conn_t **c,
                 int timeout_ms)
{
    struct proc__deadline d;
    if (!address || !c || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    *c = NULL;
    unsigned char key[AUTH_KEY_MAX];
    struct proc__addr a;
    int r = pick_key(authkey, keylen, key, &keylen);
    if (r == 0)
        r = proc__addr_parse(address, &a);
    if (r < 0)
        return r;
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    r = connect_by(fd, &a, &d);
    /* Blocking from here: sends wait for room, receives poll by their own deadline. */
    if (r == 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
        r = -errno;
    if (r < 0) {
        close(fd);
        return r;
    }
    return authenticate(fd, a.family, key, keylen, false, c, &d);
}
