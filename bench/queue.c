/* SPDX-License-Identifier: MIT */
/*
 * Scenario 8: proc_queue_t throughput, one producer process to one
 * consumer, against a raw pipe and Python's multiprocessing.Queue, on a
 * queue nobody polls and on one whose descriptor was asked for
 * (proc_queue_fileno: its readiness kept up); and a producer -> 3 workers
 * -> consumer pipeline by queue capacity against the same processes on two
 * pipes.
 */
#include "harness.h"
#include "live.h"
#include "python.h"
#include "scenarios.h"

#include <libproc/ipc.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

/* ====================================================== 8: queue throughput */

#define S8_MSG 64

struct s8ctx {
    long msgs;       /* per batch */
    proc_queue_t *q; /* libproc's, reused by every batch */
};

/* Message seq: its number in the first 8 bytes, the low byte of it everywhere else. */
static void s8_fill(unsigned char *msg, uint64_t seq)
{
    memset(msg, (int)(seq & 0xff), S8_MSG);
    memcpy(msg, &seq, sizeof seq);
}

static void s8_check(const unsigned char *msg, uint64_t seq, const char *who)
{
    uint64_t got;
    memcpy(&got, msg, sizeof got);
    if (got != seq || msg[S8_MSG - 1] != (unsigned char)(seq & 0xff))
        die("%s: message %" PRIu64 " arrived as %" PRIu64 " (or torn)", who, seq, got);
}

/* Blocks until the consumer says go (one byte on fd). */
static bool s8_wait_go(int fd)
{
    char c;
    ssize_t r;
    do {
        r = read(fd, &c, 1);
    } while (r < 0 && errno == EINTR);
    return r == 1;
}

/* The "go" pipe of a libproc batch, listed in live.fds so that a fatal path closes it. */
static void s8_go_pipe(int go[2])
{
    if (pipe2(go, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    live.fds[0] = go[0];
    live.fds[1] = go[1];
}

static void s8_go(int fd)
{
    ssize_t r;
    do {
        r = write(fd, "g", 1);
    } while (r < 0 && errno == EINTR);
    if (r != 1)
        die("write(go): %s", strerror(errno));
}

static double s8_raw(void *ctx, long ops)
{
    (void)ops;
    long n = ((struct s8ctx *)ctx)->msgs;
    int go[2], data[2];
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(data, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    pid_t slot;
    if (live_fork(&slot) == 0) {
        close(go[1]);
        close(data[0]);
        if (!s8_wait_go(go[0]))
            _exit(4);
        unsigned char msg[S8_MSG];
        for (long i = 0; i < n; i++) {
            s8_fill(msg, (uint64_t)i);
            for (size_t off = 0;
                 off < S8_MSG;) { /* one write: a pipe write <= PIPE_BUF is atomic */
                ssize_t w = write(data[1], msg + off, S8_MSG - off);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w < 0)
                    _exit(2);
                off += (size_t)w;
            }
        }
        _exit(0);
    }
    close(go[0]);
    close(data[1]);
    unsigned char buf[S8_MSG];
    uint64_t t0 = now_ns();
    s8_go(go[1]);
    for (long i = 0; i < n; i++) {
        for (size_t off = 0; off < S8_MSG;) {
            ssize_t r = read(data[0], buf + off, S8_MSG - off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                die("raw pipe: read: %s", r < 0 ? strerror(errno) : "early end of file");
            off += (size_t)r;
        }
        s8_check(buf, (uint64_t)i, "raw pipe");
    }
    uint64_t t1 = now_ns();
    close(go[1]);
    close(data[0]);
    reap_ok(slot);
    slot = 0;
    live_reset();
    return (double)(t1 - t0) / (double)n;
}

struct s8prod {
    proc_queue_t *q;
    int go;
    long n;
};

static int s8_producer(void *arg)
{
    const struct s8prod *p = arg;
    if (!s8_wait_go(p->go))
        return 4;
    unsigned char msg[S8_MSG];
    for (long i = 0; i < p->n; i++) {
        s8_fill(msg, (uint64_t)i);
        if (proc_queue_put(p->q, msg, S8_MSG, 60000) < 0)
            return 2;
    }
    return 0;
}

static double s8_libproc(void *ctx, long ops)
{
    (void)ops;
    struct s8ctx *c = ctx;
    long n = c->msgs;
    int go[2];
    s8_go_pipe(go);
    struct s8prod prod = {c->q, go[0], n};
    proc_t *slot = NULL;
    live.procs = &slot;
    live.nprocs = 1;
    slot = proc_new(s8_producer, &prod);
    if (!slot)
        die("proc_new: %s", strerror(errno));
    CHECK_PROC(proc_start(slot));
    close(go[0]);
    live.fds[0] = -1;
    unsigned char buf[S8_MSG];
    uint64_t t0 = now_ns();
    s8_go(go[1]);
    for (long i = 0; i < n; i++) {
        ssize_t r = proc_queue_get(c->q, buf, sizeof buf, 60000);
        if (r != S8_MSG)
            die("proc_queue_get: %zd (%s)", r, r < 0 ? strerror((int)-r) : "wrong length");
        s8_check(buf, (uint64_t)i, "proc_queue");
    }
    uint64_t t1 = now_ns();
    close(go[1]);
    live.fds[1] = -1;
    join_ok(slot);
    close_ok(&slot);
    live_reset();
    if (proc_queue_size(c->q) != 0)
        die("proc_queue: %zu messages left after the batch", proc_queue_size(c->q));
    return (double)(t1 - t0) / (double)n;
}

static double s8_python(void *ctx, long ops)
{
    (void)ops;
    return python_ns("queue", ((struct s8ctx *)ctx)->msgs);
}

static void scenario8_pipeline(void);

void scenario8(void)
{
    long msgs = opt.quick ? 5000 : 200000;
    long py_msgs = opt.quick ? 1000 : 20000; /* Python is ~100x slower: fewer, same rate */
    size_t max_items = 1024;
    int rounds = rounds_or(opt.quick ? 3 : 7);
    bool have_py = python_start();
    progress("scenario 8: queue throughput, %ld (python %ld) %d-byte messages x %d rounds", msgs,
             py_msgs, S8_MSG, rounds);
    proc_queue_t *q = proc_queue_new(max_items, S8_MSG);
    proc_queue_t *qp = proc_queue_new(max_items, S8_MSG);
    if (!q || !qp)
        die("proc_queue_new: %s", strerror(errno));
    int fd = proc_queue_fileno(qp); /* turns its readiness upkeep on for good */
    if (fd < 0)
        die("proc_queue_fileno: %s", strerror(-fd));
    struct s8ctx big = {msgs, q}, polled = {msgs, qp}, small = {py_msgs, q};
    struct contender c[] = {
        {"raw", s8_raw, &big},
        {"libproc", s8_libproc, &big},
        {"libproc_polled", s8_libproc, &polled},
        {"python", s8_python, &small},
    };
    int n = have_py ? 4 : 3;
    double *out = xcalloc(4 * (size_t)rounds, sizeof *out);
    run_rounds(c, n, 0, 0, rounds, out);
    double med[4];
    for (int i = 0; i < n; i++) {
        med[i] = median(out + (size_t)i * (size_t)rounds, (size_t)rounds); /* ns/msg */
        add_row(8, "queue_throughput", S8_MSG, "bytes", c[i].name, "rate", "msg/s", 1e9 / med[i],
                med[0] / med[i], rounds);
    }
    free(out);
    proc_queue_free(q);
    proc_queue_free(qp);
    add_note("8: one producer process -> one consumer process, %d-byte messages; raw = write()/"
             "read() of one message on a pipe; libproc = proc_queue_t (max_items %zu); %ld "
             "messages per round (python %ld). Ratio = rate / raw rate: higher is better.",
             S8_MSG, max_items, msgs, py_msgs);
    add_note("8: libproc_polled = the same puts and gets on a queue whose proc_queue_fileno() "
             "was called (its eventfd kept readable exactly while a get would not block; nobody "
             "polls it); libproc_polled / libproc = %.2f.",
             med[1] / med[2]);
    if (have_py)
        add_note("8: python %s: multiprocessing.Queue() (unbounded, fork), put(bytes) / get(), "
                 "timed inside Python; libproc / python = %.1f.",
                 python_version(), med[3] / med[1]);
    else
        python_skipped_note("8");
    scenario8_pipeline();
}

/*
 * 8, second part: a 1 -> 3 -> 1 pipeline (producer, three workers passing
 * records on, the benchmark process consuming) by queue capacity. raw = the
 * same processes on two pipes: 64-byte writes are atomic, and every read
 * takes exactly one record, so three readers of one pipe never tear one.
 */
#define S8P_WORKERS 3
#define S8P_STOP UINT64_MAX

struct s8pctx {
    long msgs;
    size_t capacity;
    proc_queue_t *in, *out; /* libproc's, reused by every batch */
};

/* 1: a record; 0: end of file; -1: an error (errno). */
static int s8p_read_record(int fd, unsigned char *buf)
{
    for (size_t off = 0; off < S8_MSG;) {
        ssize_t r = read(fd, buf + off, S8_MSG - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return (int)r;
        off += (size_t)r;
    }
    return 1;
}

static bool s8p_write_record(int fd, const unsigned char *buf)
{
    for (;;) {
        ssize_t w = write(fd, buf, S8_MSG); /* <= PIPE_BUF: all or nothing */
        if (w == S8_MSG)
            return true;
        if (w < 0 && errno == EINTR)
            continue;
        return false;
    }
}

/* Every record 0..n-1 arrived once: a bitmap, checked as the records come. */
static void s8p_mark(uint8_t *seen, long n, const unsigned char *msg, const char *who)
{
    uint64_t seq;
    memcpy(&seq, msg, sizeof seq);
    if (seq >= (uint64_t)n || msg[S8_MSG - 1] != (unsigned char)(seq & 0xff) ||
        (seen[seq / 8] & (1u << (seq % 8))))
        die("%s: record %" PRIu64 " out of range, torn or twice", who, seq);
    seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
}

static double s8p_raw(void *ctx, long ops)
{
    (void)ops;
    long n = ((struct s8pctx *)ctx)->msgs;
    int go[2], a[2], b[2];
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(a, O_CLOEXEC) < 0 || pipe2(b, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    pid_t slots[1 + S8P_WORKERS] = {0};
    live.pids = slots;
    live.npids = 1 + S8P_WORKERS;
    for (int i = 0; i <= S8P_WORKERS; i++) {
        if ((slots[i] = fork()) < 0)
            die("fork: %s", strerror(errno));
        if (slots[i] > 0)
            continue;
        /* Only the ends this child uses: a dead benchmark then ends them all. */
        close(go[1]);
        close(b[0]);
        unsigned char msg[S8_MSG];
        if (i == 0) { /* the producer */
            close(a[0]);
            close(b[1]);
            if (!s8_wait_go(go[0]))
                _exit(4);
            for (long k = 0; k < n; k++) {
                s8_fill(msg, (uint64_t)k);
                if (!s8p_write_record(a[1], msg))
                    _exit(2);
            }
            _exit(0);
        }
        close(go[0]);
        close(a[1]); /* a worker: until the producer's end of file */
        while (s8p_read_record(a[0], msg) == 1)
            if (!s8p_write_record(b[1], msg))
                _exit(2);
        _exit(0);
    }
    close(go[0]);
    close(a[0]);
    close(a[1]);
    close(b[1]);
    uint8_t *seen = xcalloc((size_t)n / 8 + 1, 1);
    unsigned char buf[S8_MSG];
    uint64_t t0 = now_ns();
    s8_go(go[1]);
    for (long k = 0; k < n; k++) {
        int r = s8p_read_record(b[0], buf);
        if (r != 1)
            die("raw pipeline: read: %s", r < 0 ? strerror(errno) : "early end of file");
        s8p_mark(seen, n, buf, "raw pipeline");
    }
    uint64_t t1 = now_ns();
    free(seen);
    close(go[1]);
    close(b[0]);
    for (int i = 0; i <= S8P_WORKERS; i++) {
        reap_ok(slots[i]);
        slots[i] = 0;
    }
    live_reset();
    return (double)(t1 - t0) / (double)n;
}

struct s8pjob {
    struct s8pctx *c;
    int go; /* -1 for the workers */
};

static int s8p_producer(void *arg)
{
    const struct s8pjob *j = arg;
    if (!s8_wait_go(j->go))
        return 4;
    unsigned char msg[S8_MSG];
    for (long k = 0; k < j->c->msgs; k++) {
        s8_fill(msg, (uint64_t)k);
        if (proc_queue_put(j->c->in, msg, S8_MSG, 60000) < 0)
            return 2;
    }
    memset(msg, 0xff, sizeof msg); /* one stop record per worker */
    for (int i = 0; i < S8P_WORKERS; i++)
        if (proc_queue_put(j->c->in, msg, S8_MSG, 60000) < 0)
            return 2;
    return 0;
}

static int s8p_worker(void *arg)
{
    const struct s8pjob *j = arg;
    unsigned char msg[S8_MSG];
    for (;;) {
        if (proc_queue_get(j->c->in, msg, sizeof msg, 60000) != S8_MSG)
            return 2;
        uint64_t seq;
        memcpy(&seq, msg, sizeof seq);
        if (seq == S8P_STOP)
            return 0;
        if (proc_queue_put(j->c->out, msg, S8_MSG, 60000) < 0)
            return 2;
    }
}

static double s8p_libproc(void *ctx, long ops)
{
    (void)ops;
    struct s8pctx *c = ctx;
    long n = c->msgs;
    int go[2];
    s8_go_pipe(go);
    struct s8pjob producer = {c, go[0]}, worker = {c, -1};
    proc_t *slots[1 + S8P_WORKERS] = {NULL};
    live.procs = slots;
    live.nprocs = 1 + S8P_WORKERS;
    for (int i = 0; i <= S8P_WORKERS; i++) {
        slots[i] = i == 0 ? proc_new(s8p_producer, &producer) : proc_new(s8p_worker, &worker);
        if (!slots[i])
            die("proc_new: %s", strerror(errno));
        CHECK_PROC(proc_start(slots[i]));
    }
    close(go[0]);
    live.fds[0] = -1;
    uint8_t *seen = xcalloc((size_t)n / 8 + 1, 1);
    unsigned char buf[S8_MSG];
    uint64_t t0 = now_ns();
    s8_go(go[1]);
    for (long k = 0; k < n; k++) {
        ssize_t r = proc_queue_get(c->out, buf, sizeof buf, 60000);
        if (r != S8_MSG)
            die("proc_queue_get: %zd (%s)", r, r < 0 ? strerror((int)-r) : "wrong length");
        s8p_mark(seen, n, buf, "proc_queue pipeline");
    }
    uint64_t t1 = now_ns();
    free(seen);
    close(go[1]);
    live.fds[1] = -1;
    for (int i = 0; i <= S8P_WORKERS; i++) {
        join_ok(slots[i]);
        close_ok(&slots[i]);
    }
    live_reset();
    if (proc_queue_size(c->in) != 0 || proc_queue_size(c->out) != 0)
        die("proc_queue pipeline: messages left after the batch");
    return (double)(t1 - t0) / (double)n;
}

static void scenario8_pipeline(void)
{
    static const size_t caps_full[] = {16, 64, 256, 1024, 4096}, caps_quick[] = {16, 1024};
    const size_t *caps = opt.quick ? caps_quick : caps_full;
    size_t ncaps = opt.quick ? 2 : 5;
    long msgs = opt.quick ? 2000 : 100000;
    int rounds = rounds_or(opt.quick ? 3 : 5);
    for (size_t i = 0; i < ncaps; i++) {
        progress("scenario 8: 1 -> %d -> 1 pipeline, capacity %zu, %ld records x %d rounds",
                 S8P_WORKERS, caps[i], msgs, rounds);
        struct s8pctx ctx = {msgs, caps[i], proc_queue_new(caps[i], S8_MSG),
                             proc_queue_new(caps[i], S8_MSG)};
        if (!ctx.in || !ctx.out)
            die("proc_queue_new: %s", strerror(errno));
        struct contender c[] = {{"raw", s8p_raw, &ctx}, {"libproc", s8p_libproc, &ctx}};
        double out[2 * 64];
        if (rounds > 64)
            die("scenario 8: at most 64 rounds");
        run_rounds(c, 2, 0, 1, rounds, out); /* warm-up: one batch each (ops unused) */
        double med[2];
        for (int k = 0; k < 2; k++) {
            med[k] = median(out + (size_t)k * (size_t)rounds, (size_t)rounds);
            add_row(8, "queue_pipeline", (long)caps[i], "capacity", c[k].name, "rate", "rec/s",
                    1e9 / med[k], med[0] / med[k], rounds);
        }
        proc_queue_free(ctx.in);
        proc_queue_free(ctx.out);
    }
    add_note("8: queue_pipeline: producer -> %d workers -> the benchmark process, %d-byte "
             "records, %ld per round; libproc = two proc_queue_t of max_items = capacity; raw = "
             "the same processes on two pipes (64 KiB each, whatever the capacity). Ratio = "
             "rate / raw rate.",
             S8P_WORKERS, S8_MSG, msgs);
}

/* The queue_throughput rate of a contender, or 0 when it did not run. */
static double s8_rate(const char *contender)
{
    size_t n;
    const struct row *rows = all_rows(&n);
    for (size_t i = 0; i < n; i++)
        if (rows[i].scenario == 8 && strcmp(rows[i].name, "queue_throughput") == 0 &&
            strcmp(rows[i].contender, contender) == 0)
            return rows[i].value;
    return 0;
}

/* libproc's pipeline rate by capacity: a small queue makes the processes take turns;
 * and what keeping a queue's readiness up costs its throughput. */
void scenario8_info(void)
{
    double off = s8_rate("libproc"), on = s8_rate("libproc_polled");
    info_line("8: queue rate with readiness kept (fileno called) / without", off > 0 && on > 0,
              "%.2fM / %.2fM msg/s = %.2f", on / 1e6, off / 1e6, off > 0 ? on / off : 0.0);
    char pipe8[160] = "";
    size_t off8 = 0, n;
    const struct row *rows = all_rows(&n);
    for (size_t i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        if (r->scenario != 8 || strcmp(r->name, "queue_pipeline") != 0 ||
            strcmp(r->contender, "libproc") != 0)
            continue;
        int w = snprintf(pipe8 + off8, sizeof pipe8 - off8, "%s%ld:%.2fM(%.2fx)", off8 ? " " : "",
                         r->param, r->value / 1e6, r->ratio);
        if (w > 0 && (size_t)w < sizeof pipe8 - off8)
            off8 += (size_t)w;
    }
    info_line("8: 1->3->1 pipeline rec/s by capacity (x raw)", off8 > 0, "%s", pipe8);
}
