/* SPDX-License-Identifier: MIT */
/* IPC layer: the text form of listener and client addresses (conn_addr.c). */
#ifndef LIBPROC_CONN_ADDR_H
#define LIBPROC_CONN_ADDR_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

struct proc__addr {
    struct sockaddr_storage ss;
    socklen_t len;
    int family; /* AF_UNIX, AF_INET or AF_INET6 */
};

/*
 * "unix:/path", "unix:@name", "tcp:HOST:PORT", "tcp:[V6]:PORT" into *a: 0;
 * -EINVAL when malformed; -EADDRNOTAVAIL when HOST does not resolve; -ENOMEM.
 */
int proc__addr_parse(const char *text, struct proc__addr *a);
/* The path of a socket file the address names, inside a (NULL: abstract or TCP). */
const char *proc__addr_socket_file(const struct proc__addr *a);
/* The text form of a socket address, malloc'd; NULL + errno (ENOMEM, EAFNOSUPPORT). */
char *proc__addr_format(const struct sockaddr_storage *ss, socklen_t len);

#endif /* LIBPROC_CONN_ADDR_H */
