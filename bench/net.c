/* SPDX-License-Identifier: MIT */
/*
 * Scenario 12: authenticated connections (proc_listen / proc_connect, API
 * 4.5) against plain sockets and Python's multiprocessing.connection:
 *  - connect: connect + one 8-byte round trip + close, over an abstract
 *    unix socket and TCP on 127.0.0.1; raw is a plain socket without a
 *    handshake (what the handshake costs on top), python is
 *    Client(address, authkey) against the same libproc listener;
 *  - round trip: 64-byte ping-pong on one TCP connection; raw is write/read
 *    of the bytes alone, python send_bytes/recv_bytes against libproc's echo;
 *  - bulk: 1 GiB (quick: 64 MiB) in 1 MiB messages over TCP to a sink that
 *    acknowledges the end; raw is write() of the same bytes.
 * Each server is a child forked once per part, killed and reaped after its
 * rounds; Python's side is timed inside Python (the coprocess, python.c).
 */
#include "harness.h"
#include "live.h"
#include "python.h"
#include "scenarios.h"

#include <libproc/ipc.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define S12_KEY "bench key"
#define S12_KEYLEN (sizeof S12_KEY - 1)
#define S12_SMALL 8 /* connect's message */
#define S12_RT 64   /* the round trip's message */
#define S12_CHUNK MIB

enum s12_role { S12_CONNECT, S12_ECHO, S12_SINK };

/* One server for the contenders of a part: a raw one and a libproc one. */
struct s12_server {
    enum s12_role role;
    int family; /* AF_UNIX (abstract) or AF_INET (127.0.0.1) */
    int raw_fd; /* raw listening socket */
    struct sockaddr_storage raw_addr;
    socklen_t raw_len;
    proc_listener_t *l;
    char address[64]; /* the libproc listener's */
    pid_t pids[2];
};

static void full_io(int fd, void *buf, size_t n, bool writing)
{
    for (size_t done = 0; done < n;) {
        ssize_t r = writing ? send(fd, (char *)buf + done, n - done, MSG_NOSIGNAL)
                            : recv(fd, (char *)buf + done, n - done, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            _exit(9); /* only servers and raw clients use it; the parent dies below */
        done += (size_t)r;
    }
}

static void nodelay(int fd, int family)
{
    int one = 1;
    if (family == AF_INET)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ------------------------------------------------------------------ servers */

static _Noreturn void raw_serve(struct s12_server *s)
{
    static char buf[S12_CHUNK];
    for (;;) {
        int fd = accept4(s->raw_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        nodelay(fd, s->family);
        ssize_t r;
        switch (s->role) {
        case S12_CONNECT:
            full_io(fd, buf, S12_SMALL, false);
            full_io(fd, buf, S12_SMALL, true);
            break;
        case S12_ECHO:
            while ((r = recv(fd, buf, S12_RT, MSG_WAITALL)) == S12_RT)
                full_io(fd, buf, S12_RT, true);
            break;
        case S12_SINK:
            while ((r = recv(fd, buf, sizeof buf, 0)) > 0 || (r < 0 && errno == EINTR))
                ;
            full_io(fd, buf, 1, true);
            break;
        }
        close(fd);
    }
}

static _Noreturn void libproc_serve(struct s12_server *s)
{
    static char buf[S12_CHUNK];
    for (;;) {
        proc_conn_t *c;
        if (proc_accept(s->l, &c, PROC_WAIT_FOREVER) < 0)
            continue;
        ssize_t r;
        switch (s->role) {
        case S12_CONNECT:
            if ((r = proc_conn_recv(c, buf, sizeof buf, PROC_WAIT_FOREVER)) >= 0)
                proc_conn_send(c, buf, (size_t)r);
            break;
        case S12_ECHO:
            while ((r = proc_conn_recv(c, buf, sizeof buf, PROC_WAIT_FOREVER)) >= 0)
                proc_conn_send(c, buf, (size_t)r);
            break;
        case S12_SINK: /* messages until an empty one, then "k" */
            while ((r = proc_conn_recv(c, buf, sizeof buf, PROC_WAIT_FOREVER)) > 0)
                ;
            if (r == 0)
                proc_conn_send(c, "k", 1);
            break;
        }
        proc_conn_close(c);
    }
}

static void raw_listen(struct s12_server *s)
{
    memset(&s->raw_addr, 0, sizeof s->raw_addr);
    if (s->family == AF_UNIX) {
        struct sockaddr_un *un = (struct sockaddr_un *)&s->raw_addr;
        un->sun_family = AF_UNIX;
        int n =
            snprintf(un->sun_path + 1, sizeof un->sun_path - 1, "proc-bench-raw-%d", (int)getpid());
        s->raw_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&s->raw_addr;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s->raw_len = sizeof *in;
    }
    s->raw_fd = socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->raw_fd < 0 || bind(s->raw_fd, (struct sockaddr *)&s->raw_addr, s->raw_len) < 0 ||
        listen(s->raw_fd, SOMAXCONN) < 0 ||
        getsockname(s->raw_fd, (struct sockaddr *)&s->raw_addr, &s->raw_len) < 0)
        die("raw listener: %s", strerror(errno));
}

static void s12_servers_start(struct s12_server *s, enum s12_role role, int family)
{
    s->role = role;
    s->family = family;
    raw_listen(s);
    if (family == AF_UNIX)
        snprintf(s->address, sizeof s->address, "unix:@proc-bench-%d", (int)getpid());
    else
        snprintf(s->address, sizeof s->address, "tcp:127.0.0.1:0");
    s->l = proc_listen(s->address, S12_KEY, S12_KEYLEN);
    if (!s->l)
        die("proc_listen(%s): %s", s->address, strerror(errno));
    snprintf(s->address, sizeof s->address, "%s", proc_listener_address(s->l));
    if (live_fork(&s->pids[0]) == 0)
        raw_serve(s);
    if (live_fork(&s->pids[1]) == 0)
        libproc_serve(s);
    live.pids = s->pids; /* both, for die() */
    live.npids = 2;
}

static void s12_servers_stop(struct s12_server *s)
{
    for (int i = 0; i < 2; i++) {
        kill(s->pids[i], SIGKILL);
        while (waitpid(s->pids[i], NULL, 0) < 0 && errno == EINTR)
            ;
        s->pids[i] = 0;
    }
    live_reset();
    close(s->raw_fd);
    proc_listener_close(s->l);
}

/* ----------------------------------------------------------------- clients */

static int raw_connect(const struct s12_server *s)
{
    int fd = socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)&s->raw_addr, s->raw_len) < 0)
        die("raw connect: %s", strerror(errno));
    nodelay(fd, s->family);
    return fd;
}

static proc_conn_t *libproc_connect(const struct s12_server *s)
{
    proc_conn_t *c;
    CHECK_PROC(proc_connect(s->address, S12_KEY, S12_KEYLEN, &c, 60000));
    return c;
}

static double connect_raw(void *ctx, long ops)
{
    const struct s12_server *s = ctx;
    char buf[S12_SMALL] = "ping";
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        int fd = raw_connect(s);
        full_io(fd, buf, S12_SMALL, true);
        full_io(fd, buf, S12_SMALL, false);
        close(fd);
    }
    return (double)(now_ns() - t0) / (double)ops;
}

static double connect_libproc(void *ctx, long ops)
{
    const struct s12_server *s = ctx;
    char buf[S12_SMALL] = "ping";
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        proc_conn_t *c = libproc_connect(s);
        CHECK_PROC(proc_conn_send(c, buf, S12_SMALL));
        if (proc_conn_recv(c, buf, sizeof buf, 60000) != S12_SMALL)
            die("proc_conn_recv: no echo");
        proc_conn_close(c);
    }
    return (double)(now_ns() - t0) / (double)ops;
}

/* The Python contenders: "net<what>|<address> N", timed inside Python. */
static double python_net(const struct s12_server *s, const char *what, long n)
{
    char cmd[96];
    snprintf(cmd, sizeof cmd, "net%s|%s", what, s->address);
    return python_ns(cmd, n);
}

static double connect_python(void *ctx, long ops)
{
    return python_net(ctx, "conn", ops);
}

static double rt_raw(void *ctx, long ops)
{
    int fd = raw_connect(ctx);
    char buf[S12_RT] = "ping";
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        full_io(fd, buf, S12_RT, true);
        full_io(fd, buf, S12_RT, false);
    }
    double ns = (double)(now_ns() - t0) / (double)ops;
    close(fd);
    return ns;
}

/* timeout_ms: the receive's; the echo server's death ends a wait without one (-EPIPE). */
static double rt_libproc_by(void *ctx, long ops, int timeout_ms)
{
    proc_conn_t *c = libproc_connect(ctx);
    char buf[S12_RT] = "ping";
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        CHECK_PROC(proc_conn_send(c, buf, S12_RT));
        if (proc_conn_recv(c, buf, sizeof buf, timeout_ms) != S12_RT)
            die("proc_conn_recv: no echo");
    }
    double ns = (double)(now_ns() - t0) / (double)ops;
    proc_conn_close(c);
    return ns;
}

/* Like raw's blocking read(): no deadline. */
static double rt_libproc(void *ctx, long ops)
{
    return rt_libproc_by(ctx, ops, PROC_WAIT_FOREVER);
}

/* A receive with a deadline asks, polls, then reads. */
static double rt_libproc_deadline(void *ctx, long ops)
{
    return rt_libproc_by(ctx, ops, 60000);
}

static double rt_python(void *ctx, long ops)
{
    return python_net(ctx, "rt", ops);
}

static char *bulk_data(void)
{
    static char *data;
    if (!data) {
        data = xcalloc(1, S12_CHUNK);
        for (size_t i = 0; i < S12_CHUNK; i++)
            data[i] = (char)(i * 7);
    }
    return data;
}

/* ops MiB; ns per MiB */
static double bulk_raw(void *ctx, long ops)
{
    char *data = bulk_data(), ack;
    uint64_t t0 = now_ns();
    int fd = raw_connect(ctx);
    for (long i = 0; i < ops; i++)
        full_io(fd, data, S12_CHUNK, true);
    shutdown(fd, SHUT_WR);
    full_io(fd, &ack, 1, false);
    close(fd);
    return (double)(now_ns() - t0) / (double)ops;
}

static double bulk_libproc(void *ctx, long ops)
{
    char *data = bulk_data(), ack;
    uint64_t t0 = now_ns();
    proc_conn_t *c = libproc_connect(ctx);
    for (long i = 0; i < ops; i++)
        CHECK_PROC(proc_conn_send(c, data, S12_CHUNK));
    CHECK_PROC(proc_conn_send(c, "", 0));
    if (proc_conn_recv(c, &ack, 1, 60000) != 1)
        die("bulk: no acknowledgement");
    proc_conn_close(c);
    return (double)(now_ns() - t0) / (double)ops;
}

static double bulk_python(void *ctx, long ops)
{
    return python_net(ctx, "bulk", ops);
}

/* ---------------------------------------------------------------- the parts */

/* A part's contenders: raw is the baseline; lp_deadline (optional) is libproc with a deadline. */
struct s12_fns {
    batch_fn *raw, *lp, *py, *lp_deadline;
};

static void s12_part(const char *name, long param, const char *param_name, enum s12_role role,
                     int family, struct s12_fns f, long ops, int rounds, double scale,
                     const char *unit)
{
    struct s12_server s;
    s12_servers_start(&s, role, family);
    struct contender c[4] = {{"raw", f.raw, &s}, {"libproc", f.lp, &s}};
    int n = 2;
    if (f.lp_deadline)
        c[n++] = (struct contender){"libproc_deadline", f.lp_deadline, &s};
    if (python_start())
        c[n++] = (struct contender){"python", f.py, &s};
    double *out = xcalloc(4 * (size_t)rounds, sizeof *out);
    run_rounds(c, n, ops, ops / 10 + 1, rounds, out);
    double base = 0;
    for (int i = 0; i < n; i++) {
        double m = median(out + (size_t)i * (size_t)rounds, (size_t)rounds) * scale;
        base = i == 0 ? m : base;
        add_row(12, name, param, param_name, c[i].name, "median", unit, m, m / base, rounds);
    }
    free(out);
    s12_servers_stop(&s);
}

void scenario12(void)
{
    long conns = opt.quick ? 50 : 500, trips = opt.quick ? 500 : 5000;
    long mib = opt.quick ? 64 : 1024;
    int rounds = rounds_or(opt.quick ? 3 : 7);
    progress("scenario 12: authenticated connections: %ld connects, %ld round trips, %ld MiB x "
             "%d rounds",
             conns, trips, mib, rounds);
    struct s12_fns connect = {connect_raw, connect_libproc, connect_python, NULL};
    struct s12_fns rt = {rt_raw, rt_libproc, rt_python, rt_libproc_deadline};
    struct s12_fns bulk = {bulk_raw, bulk_libproc, bulk_python, NULL};
    s12_part("net_connect_unix", -1, "unix", S12_CONNECT, AF_UNIX, connect, conns, rounds, 1e-3,
             "us/op");
    s12_part("net_connect_tcp", -1, "tcp", S12_CONNECT, AF_INET, connect, conns, rounds, 1e-3,
             "us/op");
    s12_part("net_round_trip", S12_RT, "bytes", S12_ECHO, AF_INET, rt, trips, rounds, 1e-3,
             "us/rt");
    s12_part("net_bulk", mib, "MiB", S12_SINK, AF_INET, bulk, mib, rounds, 1024 / 1e6, "ms/GiB");
    add_note("12: connect = connect + one %d-byte round trip + close; raw = a plain socket, no "
             "handshake; libproc = proc_connect (HMAC challenge both ways) + "
             "proc_conn_send/recv + proc_conn_close; python = Client(address, authkey) + "
             "send_bytes/recv_bytes + close, against the same libproc listener, timed inside "
             "Python. Round trip: %d bytes on one TCP connection (TCP_NODELAY), raw = write/read "
             "of the bytes alone, libproc = a receive without a deadline like raw's read, "
             "libproc_deadline = the same with a 60 s one. Bulk: 1 MiB messages over TCP to a sink "
             "that acknowledges the end, raw = write() of the same bytes; time per GiB.",
             S12_SMALL, S12_RT);
    add_note("12: Python's TCP connect costs ~40 ms of its own: its Client leaves Nagle on, so "
             "its last handshake message and its first message go out as two small segments "
             "and the second waits for the peer's delayed ACK (Python against Python too).");
    if (!python_start())
        python_skipped_note("12");
}

/* libproc against raw and Python, per part: the goals of issue 15 are on round trip and bulk. */
void scenario12_info(void)
{
    static const char *const names[] = {"net_connect_unix", "net_connect_tcp", "net_round_trip",
                                        "net_bulk"};
    python_ratio_info(12, names, 4, "python");
}
