/* SPDX-License-Identifier: MIT */
/* Base layer: fds passed with a message (SCM_RIGHTS), attached and received. */
#ifndef LIBPROC_FDPASS_H
#define LIBPROC_FDPASS_H

#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Attaches fds[0..n) to m, n >= 1, as one SCM_RIGHTS message in buf, which
 * holds CMSG_SPACE(n * sizeof(int)) bytes aligned for a struct cmsghdr.
 */
static inline void proc__fds_attach(struct msghdr *m, void *buf, const int *fds, size_t n)
{
    size_t len = CMSG_SPACE(n * sizeof(int));
    memset(buf, 0, len);
    m->msg_control = buf;
    m->msg_controllen = len;
    struct cmsghdr *c = CMSG_FIRSTHDR(m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
}

/*
 * The first cap fds passed with m, in order, into fds; any more are closed,
 * so that a peer cannot make us leak fds by sending extras. Their count.
 */
static inline size_t proc__fds_received(struct msghdr *m, int *fds, size_t cap)
{
    size_t got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (got < cap)
                fds[got++] = fd;
            else
                close(fd);
        }
    }
    return got;
}

#endif /* LIBPROC_FDPASS_H */
