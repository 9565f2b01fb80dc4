/* SPDX-License-Identifier: MIT */
/*
 * Queue / JoinableQueue (src/queue.c): FIFO order and sizes, -EMSGSIZE both
 * ways, bounded queues blocking and timing out (also under a flood of
 * signals), waking across processes, task_done/join, an unbounded queue
 * growing and giving its memory back, 16 MiB messages, killed producers
 * (whole message or nothing), killed consumers (at most the one message they
 * were taking), killed waiters, 8 producers x 8 consumers x 100,000 messages
 * with checksums, threads, and the chaos test: producers and consumers
 * SIGKILLed at random moments while others go on, then every committed
 * message consumed exactly once (but for the documented loss of one message
 * per killed consumer), nothing hanging, and the Lock they share recovered
 * with -EOWNERDEAD wherever its holder died.
 *
 * Children report through exit codes and shared memory
 * (proc_shared_alloc); timeouts only bound hangs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"

/* ------------------------------------------------------------ messages */

/* A message: who, which, a checksum over all of it, then padding. */
struct qmsg {
    uint32_t src, seq;
    uint64_t sum;
    unsigned char pad[];
};

#define STOP_SRC 0xffffffffu

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static uint64_t qmsg_sum(const struct qmsg *m, size_t len)
{
    uint64_t s = mix(((uint64_t)m->src << 32 | m->seq) + len);
    for (size_t i = 0; i + sizeof *m < len; i++)
        s = s * 31 + m->pad[i];
    return s;
}

/* Fills a message of len >= sizeof(struct qmsg) bytes. */
static void qmsg_fill(struct qmsg *m, size_t len, uint32_t src, uint32_t seq)
{
    m->src = src;
    m->seq = seq;
    for (size_t i = 0; i + sizeof *m < len; i++)
        m->pad[i] = (unsigned char)(mix(seq + i) >> 7);
    m->sum = qmsg_sum(m, len);
}

static bool qmsg_ok(const struct qmsg *m, ssize_t len)
{
    return len >= (ssize_t)sizeof *m && m->sum == qmsg_sum(m, (size_t)len);
}

static uint32_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 11);
}

static uint64_t seed(void)
{
    return mix((uint64_t)getpid() << 32 ^ (uint64_t)tu_now_ms()) | 1;
}

/* ------------------------------------------------------------------- basics */

static void argument_errors(void **state)
{
    (void)state;
    errno = 0;
    assert_null(proc_queue_new(0, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(proc_queue_new(0, SIZE_MAX / 2));
    assert_int_equal(errno, ENOMEM);
    char buf[8];
    assert_int_equal(proc_queue_put(NULL, "x", 1, 0), -EINVAL);
    assert_int_equal(proc_queue_get(NULL, buf, sizeof buf, 0), -EINVAL);
    assert_int_equal(proc_queue_size(NULL), 0);
    assert_int_equal(proc_queue_task_done(NULL), -EINVAL);
    assert_int_equal(proc_queue_join(NULL, 0), -EINVAL);
    assert_int_equal(proc_queue_free(NULL), 0);

    proc_queue_t *q = proc_queue_new(4, 8);
    assert_non_null(q);
    assert_int_equal(proc_queue_put(q, NULL, 1, 0), -EINVAL);
    assert_int_equal(proc_queue_put(q, "x", 1, -2), -EINVAL);
    assert_int_equal(proc_queue_get(q, NULL, 1, 0), -EINVAL);
    assert_int_equal(proc_queue_get(q, buf, sizeof buf, -2), -EINVAL);
    assert_int_equal(proc_queue_join(q, -2), -EINVAL);
    assert_int_equal(proc_queue_put(q, "123456789", 9, 0), -EMSGSIZE);
    assert_int_equal(proc_queue_size(q), 0);
    assert_int_equal(proc_queue_free(q), 0);
}

static void fifo_sizes_and_wraparound(void **state)
{
    (void)state;
    /* A small bounded ring, so that messages wrap around its end often. */
    proc_queue_t *q = proc_queue_new(3, 100);
    assert_non_null(q);
    unsigned char in[100], out[100];
    size_t lens[3];
    uint64_t s = 12345;
    for (int round = 0; round < 2000; round++) {
        int n = 1 + (int)(rnd(&s) % 3);
        for (int i = 0; i < n; i++) {
            lens[i] = rnd(&s) % 101;
            memset(in, round * 3 + i, lens[i]);
            assert_int_equal(proc_queue_put(q, in, lens[i], 0), 0);
            assert_int_equal(proc_queue_size(q), (size_t)i + 1);
        }
        for (int i = 0; i < n; i++) {
            memset(out, 0xee, sizeof out);
            assert_int_equal(proc_queue_get(q, out, sizeof out, 0), (ssize_t)lens[i]);
            memset(in, round * 3 + i, lens[i]);
            assert_memory_equal(out, in, lens[i]);
        }
        assert_int_equal(proc_queue_size(q), 0);
    }
    /* An empty message, and a too small buffer that leaves the head in place. */
    assert_int_equal(proc_queue_put(q, NULL, 0, 0), 0);
    assert_int_equal(proc_queue_put(q, "hello", 5, 0), 0);
    assert_int_equal(proc_queue_get(q, NULL, 0, 0), 0);
    assert_int_equal(proc_queue_get(q, out, 4, 0), -EMSGSIZE);
    assert_int_equal(proc_queue_get(q, NULL, 0, 0), -EMSGSIZE);
    assert_int_equal(proc_queue_size(q), 1);
    assert_int_equal(proc_queue_get(q, out, 5, 0), 5);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(proc_queue_get(q, out, sizeof out, 0), -ETIMEDOUT);
    proc_queue_free(q);
}

struct qctx {
    proc_queue_t *q;
    tu_gate gate;
    int report[2];
    void *shared;
    int id;
};

static void qctx_init(struct qctx *c, proc_queue_t *q)
{
    memset(c, 0, sizeof *c);
    c->q = q;
    assert_non_null(q);
    assert_int_equal(tu_gate_init(&c->gate), 0);
    assert_int_equal(tu_pipe(c->report), 0);
}

static void qctx_destroy(struct qctx *c)
{
    proc_queue_free(c->q);
    tu_gate_destroy(&c->gate);
    close(c->report[0]);
    close(c->report[1]);
}

static void child_report(struct qctx *c)
{
    (void)tu_write_full(c->report[1], "r", 1);
}

static void await_report(struct qctx *c)
{
    char what;
    assert_int_equal(tu_read_full(c->report[0], &what, 1, IT_BOUND_MS), 1);
}

/* After the gate opens, takes one message (bounded); exit 0 when it got "x". */
static int get_after_gate_main(void *arg)
{
    struct qctx *c = arg;
    if (tu_gate_wait(&c->gate, IT_BOUND_MS) != 0)
        return 1;
    char buf[8];
    return proc_queue_get(c->q, buf, sizeof buf, IT_BOUND_MS) == 1 && buf[0] == 'x' ? 0 : 2;
}

static void bounded_queue_blocks_when_full(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(2, 16));
    assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0);
    assert_int_equal(proc_queue_put(c.q, "y", 1, 0), 0);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_queue_put(c.q, "z", 1, 0), -ETIMEDOUT);
    assert_true(tu_now_ms() - t0 < 5000);
    t0 = tu_now_ms();
    assert_int_equal(proc_queue_put(c.q, "z", 1, 150), -ETIMEDOUT);
    it_elapsed_ok(t0, 150);

    struct it_flood f;
    it_flood_start(&f);
    t0 = tu_now_ms();
    assert_int_equal(proc_queue_put(c.q, "z", 1, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);
    assert_true(it_signals > 0);

    /* A consumer in another process makes room for the blocked put. */
    proc_t *p = it_start(get_after_gate_main, &c);
    tu_gate_open(&c.gate);
    assert_int_equal(proc_queue_put(c.q, "z", 1, IT_BOUND_MS), 0);
    assert_int_equal(it_finish(p), 0);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(buf[0], 'y');
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(buf[0], 'z');
    qctx_destroy(&c);
}

static int put_x_after_gate_main(void *arg)
{
    struct qctx *c = arg;
    if (tu_gate_wait(&c->gate, IT_BOUND_MS) != 0)
        return 1;
    return proc_queue_put(c->q, "x", 1, IT_BOUND_MS) == 0 ? 0 : 2;
}

/* Reports, then takes one message (bounded); exit 0 when it got "x". */
static int blocking_get_main(void *arg)
{
    struct qctx *c = arg;
    child_report(c);
    char buf[8];
    return proc_queue_get(c->q, buf, sizeof buf, IT_BOUND_MS) == 1 && buf[0] == 'x' ? 0 : 2;
}

static void empty_queue_waits_and_wakes(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, 16));
    char buf[8];
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), -ETIMEDOUT);
    assert_true(tu_now_ms() - t0 < 5000);
    t0 = tu_now_ms();
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 150), -ETIMEDOUT);
    it_elapsed_ok(t0, 150);
    struct it_flood f;
    it_flood_start(&f);
    t0 = tu_now_ms();
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);

    /* The parent blocks; a child puts. */
    proc_t *p = it_start(put_x_after_gate_main, &c);
    tu_gate_open(&c.gate);
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, IT_BOUND_MS), 1);
    assert_int_equal(it_finish(p), 0);

    /* Several children block; the parent puts one message each. */
    proc_t *w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = it_start(blocking_get_main, &c);
        await_report(&c);
    }
    assert_int_equal(proc_join(w[0], 20), -ETIMEDOUT);
    for (int i = 0; i < 4; i++)
        assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(it_finish(w[i]), 0);
    assert_int_equal(proc_queue_size(c.q), 0);
    qctx_destroy(&c);
}

static int worker_main(void *arg)
{
    struct qctx *c = arg;
    char buf[8];
    for (int i = 0; i < 3; i++) {
        if (proc_queue_get(c->q, buf, sizeof buf, IT_BOUND_MS) != 1)
            return 1;
        if (proc_queue_task_done(c->q) != 0)
            return 2;
    }
    return 0;
}

static void task_done_and_join(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, 8));
    assert_int_equal(proc_queue_join(c.q, 0), 0); /* nothing put: nothing to wait for */
    assert_int_equal(proc_queue_task_done(c.q), -EINVAL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(proc_queue_put(c.q, "t", 1, 0), 0);
    assert_int_equal(proc_queue_join(c.q, 0), -ETIMEDOUT);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_queue_join(c.q, 120), -ETIMEDOUT);
    it_elapsed_ok(t0, 120);
    proc_t *p = it_start(worker_main, &c);
    assert_int_equal(proc_queue_join(c.q, IT_BOUND_MS), 0);
    assert_int_equal(it_finish(p), 0);
    assert_int_equal(proc_queue_task_done(c.q), -EINVAL); /* more than items */
    assert_int_equal(proc_queue_join(c.q, 0), 0);
    /* Items taken but not done keep join waiting. */
    assert_int_equal(proc_queue_put(c.q, "u", 1, 0), 0);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(proc_queue_join(c.q, 0), -ETIMEDOUT);
    assert_int_equal(proc_queue_task_done(c.q), 0);
    assert_int_equal(proc_queue_join(c.q, 0), 0);
    qctx_destroy(&c);
}

/* Resident shared memory of this process, in KiB (-1 if unknown). */
static long rss_shmem_kib(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "RssShmem: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void unbounded_queue_grows_and_gives_memory_back(void **state)
{
    (void)state;
    const int n = IT_SANITIZED ? 20000 : 100000;
    const size_t len = 1000;
    proc_queue_t *q = proc_queue_new(0, len);
    assert_non_null(q);
    long before = rss_shmem_kib();
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    for (int i = 0; i < n; i++) {
        qmsg_fill((struct qmsg *)buf, len, 1, (uint32_t)i);
        assert_int_equal(proc_queue_put(q, buf, len, 0), 0);
    }
    assert_int_equal(proc_queue_size(q), (size_t)n);
    long full = rss_shmem_kib();
    for (int i = 0; i < n; i++) {
        ssize_t r = proc_queue_get(q, buf, len, 0);
        assert_int_equal(r, (ssize_t)len);
        assert_true(qmsg_ok((struct qmsg *)buf, r));
        assert_int_equal(((struct qmsg *)buf)->seq, (uint32_t)i);
    }
    long after = rss_shmem_kib();
    if (before >= 0 && full >= 0 && after >= 0) {
        /* ~n KiB were resident at the peak; consumed chunks went back. */
        assert_true(full - before > (long)n / 2);
        if (after - before > 8 * 1024)
            fail_msg("RssShmem %ld kB before, %ld full, %ld after draining", before, full, after);
    }
    free(buf);
    proc_queue_free(q);
}

#define HUGE_MSG (16u << 20)

static int huge_producer_main(void *arg)
{
    struct qctx *c = arg;
    unsigned char *buf = malloc(HUGE_MSG);
    if (!buf)
        return 1;
    for (uint32_t i = 0; i < 3; i++) {
        size_t len = HUGE_MSG - i * 1000;
        qmsg_fill((struct qmsg *)buf, len, 2, i);
        if (proc_queue_put(c->q, buf, len, IT_BOUND_MS) != 0)
            return 2;
    }
    free(buf);
    return 0;
}

static void messages_of_16_mib(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(2, HUGE_MSG));
    proc_t *p = it_start(huge_producer_main, &c);
    unsigned char *buf = malloc(HUGE_MSG);
    assert_non_null(buf);
    for (uint32_t i = 0; i < 3; i++) {
        ssize_t r = proc_queue_get(c.q, buf, HUGE_MSG, IT_BOUND_MS);
        assert_int_equal(r, (ssize_t)(HUGE_MSG - i * 1000));
        assert_true(qmsg_ok((struct qmsg *)buf, r));
        assert_int_equal(((struct qmsg *)buf)->seq, i);
    }
    assert_int_equal(it_finish(p), 0);
    free(buf);
    qctx_destroy(&c);
}

/* ------------------------------------------------------------------- kills */

#define KILL_MSG (256 * 1024) /* large: a kill lands inside the copy often */

/* Puts numbered large messages until killed. */
static int endless_producer_main(void *arg)
{
    struct qctx *c = arg;
    unsigned char *buf = malloc(KILL_MSG);
    if (!buf)
        return 1;
    uint64_t s = seed();
    child_report(c);
    for (uint32_t seq = 0;; seq++) {
        size_t len = sizeof(struct qmsg) + rnd(&s) % (KILL_MSG - sizeof(struct qmsg));
        qmsg_fill((struct qmsg *)buf, len, (uint32_t)c->id, seq);
        if (proc_queue_put(c->q, buf, len, IT_BOUND_MS) != 0)
            return 2;
    }
}

static void killed_producer_leaves_whole_message_or_nothing(void **state)
{
    (void)state;
    struct qctx c;
    /* Bounded and small: the producer also gets killed while waiting for room. */
    qctx_init(&c, proc_queue_new(8, KILL_MSG));
    unsigned char *buf = malloc(KILL_MSG);
    assert_non_null(buf);
    uint64_t s = seed();
    uint32_t expect_src = 0;
    for (int round = 0; round < (IT_SANITIZED ? 10 : 40); round++) {
        c.id = round;
        proc_t *p = it_start(endless_producer_main, &c);
        await_report(&c);
        /* Let it run a random while: drain a random number of messages. */
        uint32_t drain = rnd(&s) % 12, next = 0;
        for (uint32_t i = 0; i < drain; i++) {
            ssize_t r = proc_queue_get(c.q, buf, KILL_MSG, IT_BOUND_MS);
            assert_true(qmsg_ok((struct qmsg *)buf, r));
            assert_int_equal(((struct qmsg *)buf)->src, (uint32_t)round);
            assert_int_equal(((struct qmsg *)buf)->seq, next++);
        }
        it_kill(p);
        /* Whatever it committed is there, whole, in order; nothing else. */
        ssize_t r;
        while ((r = proc_queue_get(c.q, buf, KILL_MSG, 0)) >= 0) {
            if (!qmsg_ok((struct qmsg *)buf, r))
                fail_msg("round %d: a torn message of %zd bytes", round, r);
            assert_int_equal(((struct qmsg *)buf)->src, (uint32_t)round);
            assert_int_equal(((struct qmsg *)buf)->seq, next++);
        }
        assert_int_equal(r, -ETIMEDOUT);
        assert_int_equal(proc_queue_size(c.q), 0);
        expect_src++;
    }
    /* The queue still works normally. */
    assert_int_equal(proc_queue_put(c.q, "ok", 2, 0), 0);
    assert_int_equal(proc_queue_get(c.q, buf, KILL_MSG, 0), 2);
    free(buf);
    qctx_destroy(&c);
}

/* Takes messages until killed, recording each seq after get returned. */
static int recording_consumer_main(void *arg)
{
    struct qctx *c = arg;
    _Atomic unsigned char *seen = c->shared;
    unsigned char *buf = malloc(KILL_MSG);
    if (!buf)
        return 1;
    child_report(c);
    for (;;) {
        ssize_t r = proc_queue_get(c->q, buf, KILL_MSG, IT_BOUND_MS);
        if (r < 0 || !qmsg_ok((struct qmsg *)buf, r))
            return 2;
        atomic_fetch_add(&seen[((struct qmsg *)buf)->seq], 1);
    }
}

static void killed_consumer_loses_at_most_one(void **state)
{
    (void)state;
    const uint32_t n = IT_SANITIZED ? 100 : 200;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, KILL_MSG));
    _Atomic unsigned char *seen = proc_shared_alloc(n);
    assert_non_null(seen);
    c.shared = (void *)seen;
    unsigned char *buf = malloc(KILL_MSG);
    assert_non_null(buf);
    uint64_t s = seed();
    int rounds = IT_SANITIZED ? 5 : 20;
    for (int round = 0; round < rounds; round++) {
        memset((void *)seen, 0, n);
        for (uint32_t i = 0; i < n; i++) {
            size_t len = sizeof(struct qmsg) + rnd(&s) % (KILL_MSG - sizeof(struct qmsg));
            qmsg_fill((struct qmsg *)buf, len, 0, i);
            assert_int_equal(proc_queue_put(c.q, buf, len, 0), 0);
        }
        proc_t *p = it_start(recording_consumer_main, &c);
        await_report(&c);
        /* Kill it at a random moment while it consumes. */
        (void)proc_join(p, (int)(rnd(&s) % 20));
        it_kill(p);
        ssize_t r;
        while ((r = proc_queue_get(c.q, buf, KILL_MSG, 0)) >= 0) {
            assert_true(qmsg_ok((struct qmsg *)buf, r));
            atomic_fetch_add(&seen[((struct qmsg *)buf)->seq], 1);
        }
        int lost = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (seen[i] > 1)
                fail_msg("round %d: message %u consumed %u times", round, i, seen[i]);
            lost += seen[i] == 0;
        }
        if (lost > 1)
            fail_msg("round %d: a killed consumer lost %d messages", round, lost);
    }
    proc_shared_free((void *)seen);
    free(buf);
    qctx_destroy(&c);
}

/* Reports, then puts one message into a full queue (bounded wait). */
static int blocking_put_main(void *arg)
{
    struct qctx *c = arg;
    child_report(c);
    return proc_queue_put(c->q, "x", 1, IT_BOUND_MS) == 0 ? 0 : 2;
}

static void killed_waiters_wedge_nobody(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(1, 8));
    for (int i = 0; i < 3; i++) {
        proc_t *victim = it_start(blocking_get_main, &c);
        await_report(&c);
        assert_int_equal(proc_join(victim, 20), -ETIMEDOUT);
        it_kill(victim);
    }
    proc_t *getter = it_start(blocking_get_main, &c);
    await_report(&c);
    assert_int_equal(proc_join(getter, 20), -ETIMEDOUT);
    assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0);
    assert_int_equal(it_finish(getter), 0);

    assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0); /* full now */
    for (int i = 0; i < 3; i++) {
        proc_t *victim = it_start(blocking_put_main, &c);
        await_report(&c);
        assert_int_equal(proc_join(victim, 20), -ETIMEDOUT);
        it_kill(victim);
    }
    proc_t *putter = it_start(blocking_put_main, &c);
    await_report(&c);
    assert_int_equal(proc_join(putter, 20), -ETIMEDOUT);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(it_finish(putter), 0);
    assert_int_equal(proc_queue_size(c.q), 1);
    qctx_destroy(&c);
}

/* ------------------------------------------------- killed at every instruction */

struct sweep {
    proc_queue_t *q;
    unsigned char a[24], b[40], c[32];
    tu_gate gate;
    int report[2];
};

static void sweep_init(struct sweep *w, proc_queue_t *q)
{
    memset(w, 0, sizeof *w);
    w->q = q;
    assert_non_null(q);
    qmsg_fill((struct qmsg *)w->a, sizeof w->a, 1, 1);
    qmsg_fill((struct qmsg *)w->b, sizeof w->b, 2, 2);
    qmsg_fill((struct qmsg *)w->c, sizeof w->c, 3, 3);
    assert_int_equal(tu_gate_init(&w->gate), 0);
    assert_int_equal(tu_pipe(w->report), 0);
    /* Warm up: the traced child must not spend its steps in the dynamic linker. */
    unsigned char buf[64];
    assert_int_equal(proc_queue_put(q, w->a, sizeof w->a, 0), 0);
    assert_int_equal(proc_queue_get(q, buf, sizeof buf, 0), (ssize_t)sizeof w->a);
}

static void sweep_destroy(struct sweep *w)
{
    proc_queue_free(w->q);
    tu_gate_destroy(&w->gate);
    close(w->report[0]);
    close(w->report[1]);
}

/* Which of a, b, c the next message is (1, 2, 3), 0 for none, -1 for anything else. */
static int sweep_next(struct sweep *w, int timeout_ms)
{
    unsigned char buf[64];
    ssize_t r = proc_queue_get(w->q, buf, sizeof buf, timeout_ms);
    if (r == -ETIMEDOUT)
        return 0;
    if (r == sizeof w->a && memcmp(buf, w->a, sizeof w->a) == 0)
        return 1;
    if (r == sizeof w->b && memcmp(buf, w->b, sizeof w->b) == 0)
        return 2;
    if (r == sizeof w->c && memcmp(buf, w->c, sizeof w->c) == 0)
        return 3;
    return -1;
}

static void sweep_put_b(void *arg)
{
    struct sweep *w = arg;
    (void)proc_queue_put(w->q, w->b, sizeof w->b, 0);
}

static void sweep_get(void *arg)
{
    struct sweep *w = arg;
    unsigned char buf[64];
    (void)proc_queue_get(w->q, buf, sizeof buf, 0);
}

/* Reports, then blocks in get: exits with sweep_next()'s code for what it got. */
static int sweep_getter_main(void *arg)
{
    struct sweep *w = arg;
    (void)tu_write_full(w->report[1], "r", 1);
    int what = sweep_next(w, IT_BOUND_MS);
    return what < 0 ? 9 : what;
}

/* Reports, then blocks putting c into a full queue: exit 0 once it is in. */
static int sweep_putter_main(void *arg)
{
    struct sweep *w = arg;
    (void)tu_write_full(w->report[1], "r", 1);
    return proc_queue_put(w->q, w->c, sizeof w->c, IT_BOUND_MS) == 0 ? 0 : 9;
}

static proc_t *sweep_blocked_child(struct sweep *w, proc_target_fn *fn)
{
    proc_t *p = it_start(fn, w);
    char r;
    assert_int_equal(tu_read_full(w->report[0], &r, 1, IT_BOUND_MS), 1);
    assert_int_equal(proc_join(p, 20), -ETIMEDOUT); /* let it fall asleep */
    return p;
}

/*
 * A put is killed after every n of its instructions (near its commit; at a
 * stride elsewhere) while a getter sleeps on the empty queue: the message is
 * then there whole or not at all, and when it is there the sleeping getter
 * gets it without anybody else touching the queue.
 */
static void put_killed_at_every_instruction(void **state)
{
    (void)state;
    struct sweep w;
    sweep_init(&w, proc_queue_new(4, 64));
    struct it_stepper s = {NULL, sweep_put_b, &w, 0};

    /* Counting pass: how long the put is, and where it becomes visible. */
    proc_t *getter = sweep_blocked_child(&w, sweep_getter_main);
    if (!it_stepper_start(&s)) {
        it_kill(getter);
        sweep_destroy(&w);
        skip();
    }
    long steps = 0, commit = -1;
    while (it_stepper_step(&s)) {
        steps++;
        if (commit < 0 && proc_queue_size(w.q) == 1)
            commit = steps;
    }
    it_stepper_kill(&s);
    assert_true(commit > 0);
    assert_int_equal(it_finish(getter), 2);

    long first = -1, points = 0;
    for (long n = 0; n <= steps; n++) {
        if (!it_kill_point(n, steps, commit))
            continue;
        points++;
        getter = sweep_blocked_child(&w, sweep_getter_main);
        assert_true(it_stepper_start(&s));
        it_stepper_run(&s, n);
        it_stepper_kill(&s);
        bool visible = proc_queue_size(w.q) == 1;
        if (visible) {
            /* Committed: the getter must wake by itself (else it sleeps 30 s). */
            assert_int_equal(it_finish(getter), 2);
            assert_int_equal(sweep_next(&w, 0), 0);
            it_sweep_monotone(n, true, &first);
            continue;
        }
        assert_int_equal(proc_queue_put(w.q, w.c, sizeof w.c, IT_BOUND_MS), 0);
        int got = it_finish(getter);
        int rest = sweep_next(&w, 0);
        if (got == 2) /* b was committed after all (journal rolled forward) */
            assert_int_equal(rest, 3);
        else if (got == 3)
            assert_int_equal(rest, 0);
        else
            fail_msg("killed after %ld instructions: the getter got %d", n, got);
        assert_int_equal(sweep_next(&w, 0), 0);
        it_sweep_monotone(n, got == 2, &first);
    }
    assert_true(first >= 0);
    print_message("      put: %ld instructions, visible at %ld, committed from %ld, %ld kill "
                  "points\n",
                  steps, commit, first, points);
    sweep_destroy(&w);
}

/*
 * A get is killed after every n of its instructions while a putter waits for
 * room in the full queue: the head message is then taken whole or left in
 * place, and once it is taken the putter gets its room by itself.
 */
static void get_killed_at_every_instruction(void **state)
{
    (void)state;
    struct sweep w;
    sweep_init(&w, proc_queue_new(2, 64));
    struct it_stepper s = {NULL, sweep_get, &w, 0};

    assert_int_equal(proc_queue_put(w.q, w.a, sizeof w.a, 0), 0);
    assert_int_equal(proc_queue_put(w.q, w.b, sizeof w.b, 0), 0);
    proc_t *putter = sweep_blocked_child(&w, sweep_putter_main);
    if (!it_stepper_start(&s)) {
        it_kill(putter);
        sweep_destroy(&w);
        skip();
    }
    long steps = 0, commit = -1;
    while (it_stepper_step(&s)) {
        steps++;
        if (commit < 0 && proc_queue_size(w.q) == 1)
            commit = steps;
    }
    it_stepper_kill(&s);
    assert_true(commit > 0);
    assert_int_equal(it_finish(putter), 0);
    assert_int_equal(sweep_next(&w, 0), 2);
    assert_int_equal(sweep_next(&w, 0), 3);

    long first = -1, points = 0;
    for (long n = 0; n <= steps; n++) {
        if (!it_kill_point(n, steps, commit))
            continue;
        points++;
        assert_int_equal(proc_queue_put(w.q, w.a, sizeof w.a, 0), 0);
        assert_int_equal(proc_queue_put(w.q, w.b, sizeof w.b, 0), 0);
        putter = sweep_blocked_child(&w, sweep_putter_main);
        assert_true(it_stepper_start(&s));
        it_stepper_run(&s, n);
        it_stepper_kill(&s);
        bool taken = proc_queue_size(w.q) == 1;
        if (taken) /* the putter must get its room by itself */
            assert_int_equal(it_finish(putter), 0);
        int head = sweep_next(&w, IT_BOUND_MS);
        if (head == 1)
            assert_int_equal(sweep_next(&w, IT_BOUND_MS), 2);
        else if (head != 2)
            fail_msg("killed after %ld instructions: the head is %d", n, head);
        assert_int_equal(sweep_next(&w, IT_BOUND_MS), 3);
        assert_int_equal(sweep_next(&w, 0), 0);
        if (!taken)
            assert_int_equal(it_finish(putter), 0);
        it_sweep_monotone(n, head == 2, &first);
    }
    assert_true(first >= 0);
    print_message("      get: %ld instructions, visible at %ld, committed from %ld, %ld kill "
                  "points\n",
                  steps, commit, first, points);
    sweep_destroy(&w);
}

/* ------------------------------------------------------------ 8 x 8 x 100k */

#define STRESS_P 8
#define STRESS_C 8
#define STRESS_N (IT_SANITIZED ? 20000 : 100000)
#define STRESS_MAXLEN (sizeof(struct qmsg) + 48)

static int stress_producer_main(void *arg)
{
    struct qctx *c = arg;
    unsigned char buf[STRESS_MAXLEN];
    uint64_t s = seed();
    for (uint32_t seq = 0; seq < STRESS_N; seq++) {
        size_t len = sizeof(struct qmsg) + rnd(&s) % 49;
        qmsg_fill((struct qmsg *)buf, len, (uint32_t)c->id, seq);
        if (proc_queue_put(c->q, buf, len, IT_BOUND_MS) != 0)
            return 1;
    }
    return 0;
}

static int stress_consumer_main(void *arg)
{
    struct qctx *c = arg;
    _Atomic unsigned char *seen = c->shared;
    unsigned char buf[STRESS_MAXLEN];
    for (;;) {
        ssize_t r = proc_queue_get(c->q, buf, sizeof buf, IT_BOUND_MS);
        const struct qmsg *m = (const struct qmsg *)buf;
        if (r < 0 || !qmsg_ok(m, r))
            return 1;
        if (m->src == STOP_SRC)
            return proc_queue_task_done(c->q) == 0 ? 0 : 2;
        if (m->src >= STRESS_P || m->seq >= STRESS_N)
            return 3;
        atomic_fetch_add(&seen[(size_t)m->src * STRESS_N + m->seq], 1);
        if (proc_queue_task_done(c->q) != 0)
            return 4;
    }
}

static void eight_producers_eight_consumers(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(1024, STRESS_MAXLEN));
    _Atomic unsigned char *seen = proc_shared_alloc((size_t)STRESS_P * STRESS_N);
    assert_non_null(seen);
    c.shared = (void *)seen;
    int64_t t0 = tu_now_ms();
    proc_t *prod[STRESS_P], *cons[STRESS_C];
    for (int i = 0; i < STRESS_C; i++)
        cons[i] = it_start(stress_consumer_main, &c);
    for (int i = 0; i < STRESS_P; i++) {
        c.id = i;
        prod[i] = it_start(stress_producer_main, &c);
    }
    for (int i = 0; i < STRESS_P; i++)
        assert_int_equal(it_finish(prod[i]), 0);
    unsigned char stop[sizeof(struct qmsg)];
    qmsg_fill((struct qmsg *)stop, sizeof stop, STOP_SRC, 0);
    for (int i = 0; i < STRESS_C; i++)
        assert_int_equal(proc_queue_put(c.q, stop, sizeof stop, IT_BOUND_MS), 0);
    for (int i = 0; i < STRESS_C; i++)
        assert_int_equal(it_finish(cons[i]), 0);
    assert_int_equal(proc_queue_join(c.q, IT_BOUND_MS), 0);
    int64_t took = tu_now_ms() - t0;
    for (size_t i = 0; i < (size_t)STRESS_P * STRESS_N; i++)
        if (seen[i] != 1)
            fail_msg("message %zu/%zu consumed %u times", i / STRESS_N, i % STRESS_N, seen[i]);
    assert_int_equal(proc_queue_size(c.q), 0);
    print_message("      %d messages through 8x8 processes in %lld ms\n", STRESS_P * STRESS_N,
                  (long long)took);
    proc_shared_free((void *)seen);
    qctx_destroy(&c);
}

/* ------------------------------------------------------------------ threads */

#define THREAD_N (IT_SANITIZED ? 2000 : 20000)

struct thread_arg {
    proc_queue_t *q;
    uint32_t id;
    _Atomic unsigned char *seen;
    int bad;
};

static void *thread_producer(void *arg)
{
    struct thread_arg *t = arg;
    unsigned char buf[STRESS_MAXLEN];
    for (uint32_t seq = 0; seq < THREAD_N; seq++) {
        size_t len = sizeof(struct qmsg) + seq % 49;
        qmsg_fill((struct qmsg *)buf, len, t->id, seq);
        if (proc_queue_put(t->q, buf, len, IT_BOUND_MS) != 0)
            t->bad++;
    }
    return NULL;
}

static void *thread_consumer(void *arg)
{
    struct thread_arg *t = arg;
    unsigned char buf[STRESS_MAXLEN];
    for (;;) {
        ssize_t r = proc_queue_get(t->q, buf, sizeof buf, IT_BOUND_MS);
        const struct qmsg *m = (const struct qmsg *)buf;
        if (r < 0 || !qmsg_ok(m, r) || (m->src != STOP_SRC && (m->src > 1 || m->seq >= THREAD_N))) {
            t->bad++;
            return NULL;
        }
        if (m->src == STOP_SRC)
            return NULL;
        atomic_fetch_add(&t->seen[(size_t)m->src * THREAD_N + m->seq], 1);
    }
}

static void threads_of_one_process(void **state)
{
    (void)state;
    proc_queue_t *q = proc_queue_new(64, STRESS_MAXLEN);
    assert_non_null(q);
    _Atomic unsigned char *seen = calloc(2 * THREAD_N, 1);
    assert_non_null(seen);
    struct thread_arg a[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thread_arg){q, (uint32_t)(i % 2), seen, 0};
        assert_int_equal(
            pthread_create(&t[i], NULL, i < 2 ? thread_producer : thread_consumer, &a[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    unsigned char stop[sizeof(struct qmsg)];
    qmsg_fill((struct qmsg *)stop, sizeof stop, STOP_SRC, 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(proc_queue_put(q, stop, sizeof stop, IT_BOUND_MS), 0);
    for (int i = 2; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(a[i].bad, 0);
    for (size_t i = 0; i < 2 * THREAD_N; i++)
        assert_int_equal(seen[i], 1);
    free((void *)seen);
    proc_queue_free(q);
}

/* -------------------------------------------------------------------- chaos */

#define CHAOS_PRODUCERS 4
#define CHAOS_CONSUMERS 4
#define CHAOS_MAX_INC 8192  /* producer incarnations */
#define CHAOS_PER_INC 4096  /* messages per incarnation; then it exits and is replaced */
#define CHAOS_MAXLEN 2048   /* some messages are large, so kills land inside copies */
#define CHAOS_LOCK_EVERY 16 /* iterations between turns with the shared Lock */

struct chaos_shared {
    _Atomic uint32_t committed[CHAOS_MAX_INC]; /* per incarnation: puts that returned 0 */
    _Atomic int stop;                          /* producers finish their loop */
    _Atomic int bad_sum;                       /* torn or unknown messages seen */
    _Atomic int lock_errors;      /* acquire failed, or a == b broken without EOWNERDEAD */
    _Atomic int ownerdead;        /* -EOWNERDEAD results */
    _Atomic pid_t lock_holder;    /* set while holding the Lock */
    long a, b;                    /* protected by the Lock: a == b outside it */
    _Atomic unsigned char seen[]; /* [incarnation][seq] */
};

struct chaos_ctx {
    proc_queue_t *q;
    proc_lock_t *lock;
    struct chaos_shared *sh;
    uint32_t inc; /* a producer's incarnation */
    tu_gate gate;
    int report[2];
};

/* One turn with the shared Lock, checking the invariant it protects. */
static void chaos_lock_turn(struct chaos_ctx *c, uint64_t *s)
{
    int r = proc_lock_acquire(c->lock, IT_BOUND_MS);
    if (r != 0 && r != -EOWNERDEAD) {
        atomic_fetch_add(&c->sh->lock_errors, 1);
        return;
    }
    atomic_store(&c->sh->lock_holder, getpid());
    if (r == -EOWNERDEAD) {
        atomic_fetch_add(&c->sh->ownerdead, 1);
        c->sh->b = c->sh->a; /* repair what the dead holder left half-done */
    } else if (c->sh->a != c->sh->b) {
        atomic_fetch_add(&c->sh->lock_errors, 1);
    }
    c->sh->a++;
    for (uint32_t spin = rnd(s) % 2000; spin > 0; spin--)
        atomic_signal_fence(memory_order_seq_cst); /* a window for kills */
    c->sh->b++;
    atomic_store(&c->sh->lock_holder, 0);
    if (proc_lock_release(c->lock) != 0)
        atomic_fetch_add(&c->sh->lock_errors, 1);
}

static int chaos_producer_main(void *arg)
{
    struct chaos_ctx *c = arg;
    unsigned char buf[CHAOS_MAXLEN];
    uint64_t s = seed();
    for (uint32_t seq = 0; seq < CHAOS_PER_INC && !atomic_load(&c->sh->stop); seq++) {
        size_t len =
            sizeof(struct qmsg) +
            (rnd(&s) % 8 == 0 ? rnd(&s) % (CHAOS_MAXLEN - sizeof(struct qmsg)) : rnd(&s) % 64);
        qmsg_fill((struct qmsg *)buf, len, c->inc, seq);
        if (proc_queue_put(c->q, buf, len, IT_BOUND_MS) != 0)
            return 1;
        atomic_store(&c->sh->committed[c->inc], seq + 1);
        if (seq % CHAOS_LOCK_EVERY == 0)
            chaos_lock_turn(c, &s);
    }
    return 0;
}

static int chaos_consumer_main(void *arg)
{
    struct chaos_ctx *c = arg;
    unsigned char buf[CHAOS_MAXLEN];
    uint64_t s = seed();
    for (uint32_t n = 1;; n++) {
        ssize_t r = proc_queue_get(c->q, buf, sizeof buf, IT_BOUND_MS);
        const struct qmsg *m = (const struct qmsg *)buf;
        if (r < 0)
            return 1;
        if (!qmsg_ok(m, r)) {
            atomic_fetch_add(&c->sh->bad_sum, 1);
            continue;
        }
        if (m->src == STOP_SRC)
            return 0;
        if (m->src >= CHAOS_MAX_INC || m->seq >= CHAOS_PER_INC) {
            atomic_fetch_add(&c->sh->bad_sum, 1);
            continue;
        }
        atomic_fetch_add(&c->sh->seen[(size_t)m->src * CHAOS_PER_INC + m->seq], 1);
        if (n % CHAOS_LOCK_EVERY == 0)
            chaos_lock_turn(c, &s);
    }
}

/* Takes the Lock, reports, and holds it until killed. */
static int chaos_hog_main(void *arg)
{
    struct chaos_ctx *c = arg;
    int r = proc_lock_acquire(c->lock, IT_BOUND_MS);
    if (r != 0 && r != -EOWNERDEAD)
        return 1;
    if (r == -EOWNERDEAD) {
        atomic_fetch_add(&c->sh->ownerdead, 1);
        c->sh->b = c->sh->a;
    }
    c->sh->a++; /* half-done on purpose */
    (void)tu_write_full(c->report[1], "h", 1);
    (void)tu_gate_wait(&c->gate, -1);
    return 0;
}

static int chaos_seconds(void)
{
    const char *env = getenv("LIBPROC_CHAOS_SECONDS");
    int secs = env ? atoi(env) : 3;
    return secs > 0 ? secs : 3;
}

static void chaos_kills_producers_and_consumers(void **state)
{
    (void)state;
    struct chaos_ctx c;
    memset(&c, 0, sizeof c);
    c.q = proc_queue_new(256, CHAOS_MAXLEN);
    c.lock = proc_lock_new();
    size_t shared_len = sizeof *c.sh + (size_t)CHAOS_MAX_INC * CHAOS_PER_INC;
    c.sh = proc_shared_alloc(shared_len);
    assert_non_null(c.q);
    assert_non_null(c.lock);
    assert_non_null(c.sh);
    assert_int_equal(tu_gate_init(&c.gate), 0);
    assert_int_equal(tu_pipe(c.report), 0);

    proc_t *prod[CHAOS_PRODUCERS], *cons[CHAOS_CONSUMERS];
    uint32_t prod_inc[CHAOS_PRODUCERS];
    bool inc_killed[CHAOS_MAX_INC] = {false};
    uint32_t next_inc = 0;
    int killed_producers = 0, killed_consumers = 0, finished_producers = 0, holder_kills = 0;
    for (int i = 0; i < CHAOS_CONSUMERS; i++)
        cons[i] = it_start(chaos_consumer_main, &c);
    for (int i = 0; i < CHAOS_PRODUCERS; i++) {
        c.inc = prod_inc[i] = next_inc++;
        prod[i] = it_start(chaos_producer_main, &c);
    }

    /* The hog: a holder that certainly dies holding the Lock, half-way through. */
    proc_t *hog = it_start(chaos_hog_main, &c);
    char h;
    assert_int_equal(tu_read_full(c.report[0], &h, 1, IT_BOUND_MS), 1);

    uint64_t s = seed();
    int64_t start = tu_now_ms(), end = start + chaos_seconds() * 1000;
    bool hog_alive = true;
    while (tu_now_ms() < end) {
        /* A random pause, spent waiting on a random producer (replaced if it finished). */
        int slot = (int)(rnd(&s) % CHAOS_PRODUCERS);
        if (proc_join(prod[slot], (int)(rnd(&s) % 15)) == 0) {
            assert_int_equal(proc_exitcode(prod[slot]), 0);
            assert_int_equal(proc_close(prod[slot]), 0);
            finished_producers++;
            assert_true(next_inc < CHAOS_MAX_INC);
            c.inc = prod_inc[slot] = next_inc++;
            prod[slot] = it_start(chaos_producer_main, &c);
            continue;
        }
        /* The hog dies early: while it holds the Lock, lock turns stall. */
        if (hog_alive && tu_now_ms() > start + 100) {
            it_kill(hog);
            hog_alive = false;
        }
        /* Kill someone: a random producer or consumer, or whoever holds the Lock. */
        uint32_t pick = rnd(&s) % 9;
        pid_t holder = atomic_load(&c.sh->lock_holder);
        if (pick == 8 && holder > 0) {
            for (int i = 0; i < CHAOS_PRODUCERS; i++)
                if (proc_pid(prod[i]) == holder)
                    pick = (uint32_t)i, holder_kills++;
            for (int i = 0; i < CHAOS_CONSUMERS; i++)
                if (proc_pid(cons[i]) == holder)
                    pick = (uint32_t)(CHAOS_PRODUCERS + i), holder_kills++;
        }
        if (pick < CHAOS_PRODUCERS) {
            proc_t *p = prod[pick];
            assert_int_equal(proc_kill(p), 0);
            assert_int_equal(proc_join(p, IT_BOUND_MS), 0);
            /* It may have finished on its own just before. */
            if (proc_exitcode(p) == -SIGKILL) {
                inc_killed[prod_inc[pick]] = true;
                killed_producers++;
            } else {
                assert_int_equal(proc_exitcode(p), 0);
            }
            assert_int_equal(proc_close(p), 0);
            assert_true(next_inc < CHAOS_MAX_INC);
            c.inc = prod_inc[pick] = next_inc++;
            prod[pick] = it_start(chaos_producer_main, &c);
        } else if (pick < CHAOS_PRODUCERS + CHAOS_CONSUMERS) {
            int i = (int)pick - CHAOS_PRODUCERS;
            it_kill(cons[i]);
            killed_consumers++;
            cons[i] = it_start(chaos_consumer_main, &c);
        }
    }
    if (hog_alive)
        it_kill(hog);

    /* Wind down: producers finish, consumers drain and stop. Nothing may hang. */
    atomic_store(&c.sh->stop, 1);
    for (int i = 0; i < CHAOS_PRODUCERS; i++)
        assert_int_equal(it_finish(prod[i]), 0);
    unsigned char stop[sizeof(struct qmsg)];
    qmsg_fill((struct qmsg *)stop, sizeof stop, STOP_SRC, 0);
    for (int i = 0; i < CHAOS_CONSUMERS; i++)
        assert_int_equal(proc_queue_put(c.q, stop, sizeof stop, IT_BOUND_MS), 0);
    for (int i = 0; i < CHAOS_CONSUMERS; i++)
        assert_int_equal(it_finish(cons[i]), 0);
    assert_int_equal(proc_queue_size(c.q), 0);

    /* The Lock is acquirable; a holder died in it at least once (the hog). */
    int r = proc_lock_acquire(c.lock, IT_BOUND_MS);
    assert_true(r == 0 || r == -EOWNERDEAD);
    if (r == -EOWNERDEAD)
        atomic_fetch_add(&c.sh->ownerdead, 1);
    assert_int_equal(proc_lock_release(c.lock), 0);
    assert_true(atomic_load(&c.sh->ownerdead) >= 1);
    assert_int_equal(atomic_load(&c.sh->lock_errors), 0);
    assert_int_equal(atomic_load(&c.sh->bad_sum), 0);

    /* Every committed message consumed exactly once, but for at most one per killed consumer. */
    long committed = 0, consumed = 0, lost = 0, uncounted = 0;
    for (uint32_t inc = 0; inc < next_inc; inc++) {
        uint32_t n = atomic_load(&c.sh->committed[inc]);
        committed += n;
        for (uint32_t seq = 0; seq < CHAOS_PER_INC; seq++) {
            unsigned char k = atomic_load(&c.sh->seen[(size_t)inc * CHAOS_PER_INC + seq]);
            consumed += k;
            if (k > 1)
                fail_msg("incarnation %u message %u consumed %u times", inc, seq, k);
            if (seq < n && k == 0)
                lost++;
            /* Put by a producer killed before it could record the commit. */
            if (seq == n && k == 1 && inc_killed[inc])
                uncounted++;
            else if (seq >= n && k != 0)
                fail_msg("incarnation %u message %u consumed but never put", inc, seq);
        }
    }
    print_message("      %d s: %ld committed, %ld consumed, %d producers and %d consumers "
                  "killed (%d holding the Lock), %d finished, %ld lost, %ld put by killed "
                  "producers unrecorded, %d EOWNERDEAD\n",
                  chaos_seconds(), committed, consumed, killed_producers, killed_consumers,
                  holder_kills, finished_producers, lost, uncounted, atomic_load(&c.sh->ownerdead));
    if (lost > killed_consumers)
        fail_msg("%ld messages lost, but only %d consumers were killed", lost, killed_consumers);
    assert_true(committed > 0);
    assert_true(killed_producers + killed_consumers > 0);

    close(c.report[0]);
    close(c.report[1]);
    tu_gate_destroy(&c.gate);
    proc_shared_free(c.sh);
    proc_lock_free(c.lock);
    proc_queue_free(c.q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(argument_errors),
        cmocka_unit_test(fifo_sizes_and_wraparound),
        cmocka_unit_test(bounded_queue_blocks_when_full),
        cmocka_unit_test(empty_queue_waits_and_wakes),
        cmocka_unit_test(task_done_and_join),
        cmocka_unit_test(unbounded_queue_grows_and_gives_memory_back),
        cmocka_unit_test(messages_of_16_mib),
        cmocka_unit_test(killed_producer_leaves_whole_message_or_nothing),
        cmocka_unit_test(killed_consumer_loses_at_most_one),
        cmocka_unit_test(killed_waiters_wedge_nobody),
        cmocka_unit_test(put_killed_at_every_instruction),
        cmocka_unit_test(get_killed_at_every_instruction),
        cmocka_unit_test(eight_producers_eight_consumers),
        cmocka_unit_test(threads_of_one_process),
        cmocka_unit_test(chaos_kills_producers_and_consumers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
