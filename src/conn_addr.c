/* SPDX-License-Identifier: MIT */
/*
 * Addresses of listeners and clients, as text: "unix:/path" (a socket file),
 * "unix:@name" (Linux's abstract namespace), "tcp:HOST:PORT" and
 * "tcp:[IPv6]:PORT". HOST may be a name; it is resolved to IPv4 with
 * getaddrinfo(3) (which may block, on DNS) and the first answer is taken.
 */
#include "conn_addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADDR_HOST_MAX 256

static int parse_unix(const char *rest, struct proc__addr *a)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
    size_t n = strlen(rest);
    if (n == 0 || n >= sizeof un->sun_path || (rest[0] == '@' && n == 1))
        return -EINVAL;
    un->sun_family = AF_UNIX;
    a->family = AF_UNIX;
    if (rest[0] == '@') {
        un->sun_path[0] = '\0'; /* abstract: the name's bytes, no terminator */
        memcpy(un->sun_path + 1, rest + 1, n - 1);
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        memcpy(un->sun_path, rest, n + 1);
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

/* "PORT": decimal, 0..65535, nothing after it. */
static int parse_port(const char *s)
{
    if (*s < '0' || *s > '9' || strlen(s) > 5)
        return -EINVAL;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v > 65535 ? -EINVAL : (int)v;
}

/* Splits "HOST:PORT" or "[V6]:PORT" into host (no brackets) and port. */
static int split_host_port(const char *rest, char *host, int *port, bool *v6)
{
    const char *colon;
    *v6 = rest[0] == '[';
    if (*v6) {
        const char *close = strchr(rest, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        rest++;
        colon = close + 1;
        if ((size_t)(close - rest) >= ADDR_HOST_MAX)
            return -EINVAL;
        memcpy(host, rest, (size_t)(close - rest));
        host[close - rest] = '\0';
    } else {
        colon = strrchr(rest, ':');
        if (!colon || (size_t)(colon - rest) >= ADDR_HOST_MAX ||
            memchr(rest, ':', (size_t)(colon - rest)))
            return -EINVAL;
        memcpy(host, rest, (size_t)(colon - rest));
        host[colon - rest] = '\0';
    }
    *port = parse_port(colon + 1);
    return host[0] && *port >= 0 ? 0 : -EINVAL;
}

static int parse_tcp(const char *rest, struct proc__addr *a)
{
    char host[ADDR_HOST_MAX], port_text[12];
    int port;
    bool v6;
    if (split_host_port(rest, host, &port, &v6) < 0)
        return -EINVAL;
    snprintf(port_text, sizeof port_text, "%d", port);
    /* Unbracketed is IPv4, as Python's (host, port) tuples are: "localhost"
     * must not become ::1 where a Python peer listens on 127.0.0.1. */
    struct addrinfo hints = {.ai_family = v6 ? AF_INET6 : AF_INET,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (v6 ? AI_NUMERICHOST : 0)};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, port_text, &hints, &res);
    if (g != 0)
        return g == EAI_MEMORY ? -ENOMEM : v6 ? -EINVAL : -EADDRNOTAVAIL;
    memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
    a->len = res->ai_addrlen;
    a->family = res->ai_family;
    freeaddrinfo(res);
    return 0;
}

int proc__addr_parse(const char *text, struct proc__addr *a)
{
    memset(a, 0, sizeof *a);
    if (strncmp(text, "unix:", 5) == 0)
        return parse_unix(text + 5, a);
    if (strncmp(text, "tcp:", 4) == 0)
        return parse_tcp(text + 4, a);
    return -EINVAL;
}

const char *proc__addr_socket_file(const struct proc__addr *a)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
    return a->family == AF_UNIX && un->sun_path[0] != '\0' ? un->sun_path : NULL;
}

char *proc__addr_format(const struct sockaddr_storage *ss, socklen_t len)
{
    char buf[sizeof(struct sockaddr_un) + INET6_ADDRSTRLEN + 16];
    const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
    size_t path = len > offsetof(struct sockaddr_un, sun_path)
                      ? len - offsetof(struct sockaddr_un, sun_path)
                      : 0;
    if (ss->ss_family == AF_UNIX && path > 0 && un->sun_path[0] == '\0') {
        snprintf(buf, sizeof buf, "unix:@%.*s", (int)(path - 1), un->sun_path + 1);
    } else if (ss->ss_family == AF_UNIX) {
        snprintf(buf, sizeof buf, "unix:%.*s", (int)strnlen(un->sun_path, path), un->sun_path);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, sizeof buf, "tcp:%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        char host[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(buf, sizeof buf, "tcp:[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    } else {
        errno = EAFNOSUPPORT;
        return NULL;
    }
    return strdup(buf);
}
