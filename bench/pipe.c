/* SPDX-License-Identifier: MIT */
/*
 * Scenario 9: round trips of an 8- and a 64-byte message between the
 * parent and an echoing child: proc_pipe against the SOCK_SEQPACKET
 * socketpair it is built on and Python's multiprocessing.Pipe.
 */
#include "harness.h"
#include "live.h"
#include "python.h"
#include "scenarios.h"

#include <libproc/ipc.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* ================================================== 9: pipe round trips */

#define S9_MAX 64 /* the largest message size */
#define S9_WARM 20

static const size_t s9_sizes[] = {8, 64};
static size_t s9_len; /* this batch's message size */

/* Per contender: per-round p99, next to the p50 that the batch returns. */
struct s9ctx {
    double *p99;
    int n;
    double *samples; /* scratch: ns per round trip */
};

static double s9_finish(struct s9ctx *c, long n)
{
    double p50 = quantile(c->samples, (size_t)n, 0.5); /* sorts */
    c->p99[c->n++] = quantile(c->samples, (size_t)n, 0.99);
    return p50;
}

static double s9_raw(void *ctx, long n)
{
    struct s9ctx *c = ctx;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair: %s", strerror(errno));
    pid_t slot;
    if (live_fork(&slot) == 0) {
        close(sv[0]);
        char buf[S9_MAX];
        for (;;) {
            ssize_t r = recv(sv[1], buf, sizeof buf, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0)
                _exit(0);
            if (r < 0)
                _exit(2);
            if (send(sv[1], buf, (size_t)r, MSG_NOSIGNAL) != r)
                _exit(1);
        }
    }
    close(sv[1]);
    char msg[S9_MAX], buf[S9_MAX];
    memset(msg, 'p', sizeof msg);
    for (long i = 0; i < S9_WARM + n; i++) {
        uint64_t t0 = now_ns();
        if (send(sv[0], msg, s9_len, MSG_NOSIGNAL) != (ssize_t)s9_len)
            die("raw socketpair: send: %s", strerror(errno));
        ssize_t r;
        do {
            r = recv(sv[0], buf, sizeof buf, 0);
        } while (r < 0 && errno == EINTR);
        if (r != (ssize_t)s9_len)
            die("raw socketpair: recv: %zd (%s)", r, r < 0 ? strerror(errno) : "short");
        uint64_t t1 = now_ns();
        if (i >= S9_WARM)
            c->samples[i - S9_WARM] = (double)(t1 - t0);
    }
    close(sv[0]);
    reap_ok(slot);
    slot = 0;
    live_reset();
    return s9_finish(c, n);
}

static proc_conn_t *s9_parent_end, *s9_child_end;

static int s9_echo(void *arg)
{
    (void)arg;
    proc_conn_close(s9_parent_end); /* else the parent's close gives us no EOF */
    char buf[S9_MAX];
    ssize_t r;
    while ((r = proc_conn_recv(s9_child_end, buf, sizeof buf, 60000)) >= 0)
        if (proc_conn_send(s9_child_end, buf, (size_t)r) < 0)
            return 1;
    return r == -EPIPE ? 0 : 2;
}

static double s9_libproc(void *ctx, long n)
{
    struct s9ctx *c = ctx;
    CHECK_PROC(proc_pipe(&s9_parent_end, &s9_child_end, true));
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    slot = proc_new(s9_echo, NULL);
    if (!slot)
        die("proc_new: %s", strerror(errno));
    CHECK_PROC(proc_start(slot));
    proc_conn_close(s9_child_end);
    s9_child_end = NULL;
    char msg[S9_MAX], buf[S9_MAX];
    memset(msg, 'p', sizeof msg);
    for (long i = 0; i < S9_WARM + n; i++) {
        uint64_t t0 = now_ns();
        CHECK_PROC(proc_conn_send(s9_parent_end, msg, s9_len));
        ssize_t r = proc_conn_recv(s9_parent_end, buf, sizeof buf, 60000);
        if (r != (ssize_t)s9_len)
            die("proc_conn_recv: %zd (%s)", r, r < 0 ? strerror((int)-r) : "short");
        uint64_t t1 = now_ns();
        if (i >= S9_WARM)
            c->samples[i - S9_WARM] = (double)(t1 - t0);
    }
    proc_conn_close(s9_parent_end);
    s9_parent_end = NULL;
    join_ok(slot);
    close_ok(&slot);
    live_reset();
    return s9_finish(c, n);
}

static double s9_python(void *ctx, long n)
{
    struct s9ctx *c = ctx;
    char buf[128], cmd[16];
    snprintf(cmd, sizeof cmd, "pipe%zu", s9_len);
    python_cmd(buf, sizeof buf, cmd, n);
    double p50, p99;
    if (sscanf(buf, "%lf %lf", &p50, &p99) != 2 || !(p50 > 0) || !(p99 > 0))
        die("python '%s %ld' answered '%s'", cmd, n, buf);
    c->p99[c->n++] = p99;
    return p50;
}

/* One message size: the contenders interleaved in rounds, then the rows. */
static void scenario9_size(size_t len, long trips, int rounds, bool have_py)
{
    s9_len = len;
    progress("scenario 9: pipe round trips, %ld x %zu-byte ping-pong x %d rounds", trips, len,
             rounds);
    struct s9ctx ctx[3];
    struct contender c[] = {
        {"raw", s9_raw, &ctx[0]},
        {"libproc", s9_libproc, &ctx[1]},
        {"python", s9_python, &ctx[2]},
    };
    int n = have_py ? 3 : 2;
    for (int i = 0; i < n; i++) {
        ctx[i].p99 = xcalloc((size_t)rounds, sizeof(double));
        ctx[i].n = 0;
        ctx[i].samples = xcalloc((size_t)trips, sizeof(double));
    }
    double *out = xcalloc(3 * (size_t)rounds, sizeof *out);
    run_rounds(c, n, trips, 0, rounds, out);
    double p50[3], p99[3];
    for (int i = 0; i < n; i++) {
        p50[i] = median(out + (size_t)i * (size_t)rounds, (size_t)rounds) / 1000.0;
        p99[i] = median(ctx[i].p99, (size_t)ctx[i].n) / 1000.0;
    }
    for (int i = 0; i < n; i++)
        add_row(9, "pipe_round_trip", (long)len, "bytes", c[i].name, "p50", "us/rt", p50[i],
                p50[i] / p50[0], rounds);
    for (int i = 0; i < n; i++)
        add_row(9, "pipe_round_trip", (long)len, "bytes", c[i].name, "p99", "us/rt", p99[i],
                p99[i] / p99[0], rounds);
    for (int i = 0; i < n; i++) {
        free(ctx[i].p99);
        free(ctx[i].samples);
    }
    free(out);
    if (have_py)
        add_note("9: python %s, %zu bytes: multiprocessing.Pipe(duplex=True) send_bytes()/"
                 "recv_bytes(), timed inside Python; python / libproc p50 = %.1f.",
                 python_version(), len, p50[2] / p50[1]);
}

void scenario9(void)
{
    long trips = opt.quick ? 200 : 2000;
    int rounds = rounds_or(opt.quick ? 3 : 9);
    bool have_py = python_start();
    for (size_t i = 0; i < sizeof s9_sizes / sizeof s9_sizes[0]; i++)
        scenario9_size(s9_sizes[i], trips, rounds, have_py);
    add_note("9: parent <-> echoing child, %ld timed round trips per round and size; raw = "
             "socketpair(AF_UNIX, SOCK_SEQPACKET) blocking send()/recv() (what proc_pipe uses); "
             "libproc = proc_pipe(duplex) proc_conn_send()/proc_conn_recv(); p50/p99 = median "
             "over the rounds of each round's percentile.",
             trips);
    if (!have_py)
        python_skipped_note("9");
}

/* Python's round trip next to libproc's, per size: no threshold. */
void scenario9_info(void)
{
    for (size_t k = 0; k < sizeof s9_sizes / sizeof s9_sizes[0]; k++) {
        long len = (long)s9_sizes[k];
        const struct row *rt = find_row(9, len, "libproc", "p50");
        const struct row *rtpy = find_row(9, len, "python", "p50");
        char what9[80];
        snprintf(what9, sizeof what9, "9: pipe round trip p50, python / libproc, %ld bytes", len);
        info_line(what9, rt && rtpy, "%.1fx", rt && rtpy ? rtpy->value / rt->value : 0);
    }
}
