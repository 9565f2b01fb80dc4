/* SPDX-License-Identifier: MIT */
/*
 * Pipe() (src/conn.c): message boundaries both ways, one-way pipes, messages
 * up to 64 MiB, -EMSGSIZE leaving the message queued, timeouts (also under a
 * flood of signals), end of file only once every copy of the other end is
 * closed, no SIGPIPE, senders and receivers killed at random moments (only
 * whole messages arrive), several processes sending or receiving on one end,
 * threads receiving on one handle, and no fd leak over 1,000 pipes.
 *
 * Every message carries a header (sender, sequence number, length) and a
 * payload derived from it, so a receiver can check it is whole and unmixed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"

#define INLINE_MAX (64 * 1024) /* conn.c's threshold for a memfd payload */

/* ------------------------------------------------------------ messages */

struct msg_head {
    uint32_t sender, seq;
    uint64_t len;
};

static unsigned char pattern(uint32_t sender, uint32_t seq, size_t i)
{
    return (unsigned char)(sender * 131u + seq * 7u + i * 13u + (i >> 9));
}

/* Fills buf with a message of len bytes (len >= sizeof(struct msg_head)). */
static void msg_fill(unsigned char *buf, size_t len, uint32_t sender, uint32_t seq)
{
    struct msg_head h = {sender, seq, len};
    memcpy(buf, &h, sizeof h);
    for (size_t i = sizeof h; i < len; i++)
        buf[i] = pattern(sender, seq, i);
}

/* True when buf holds a whole, intact message of n bytes; sets *h. */
static bool msg_check(const unsigned char *buf, size_t n, struct msg_head *h)
{
    memset(h, 0, sizeof *h);
    if (n < sizeof *h)
        return false;
    memcpy(h, buf, sizeof *h);
    if (h->len != n)
        return false;
    for (size_t i = sizeof *h; i < n; i++)
        if (buf[i] != pattern(h->sender, h->seq, i))
            return false;
    return true;
}

/* Message sizes that cross the inline/memfd boundary now and then. */
static size_t msg_size(uint32_t seq)
{
    static const size_t sizes[] = {16, 17, 100, 4096, INLINE_MAX, INLINE_MAX + 1, 300 * 1024, 24};
    return sizes[seq % (sizeof sizes / sizeof *sizes)];
}

struct pair {
    proc_conn_t *a, *b;
    tu_gate gate;
    int report[2];
    _Atomic int *counts;
    int id;
};

static void pair_init(struct pair *p, bool duplex)
{
    memset(p, 0, sizeof *p);
    assert_int_equal(proc_pipe(&p->a, &p->b, duplex), 0);
    assert_int_equal(tu_gate_init(&p->gate), 0);
    assert_int_equal(tu_pipe(p->report), 0);
}

static void pair_destroy(struct pair *p)
{
    assert_int_equal(proc_conn_close(p->a), 0);
    assert_int_equal(proc_conn_close(p->b), 0);
    tu_gate_destroy(&p->gate);
    close(p->report[0]);
    close(p->report[1]);
}

/* ------------------------------------------------------------------- tests */

static void argument_errors(void **state)
{
    (void)state;
    proc_conn_t *a = (proc_conn_t *)1, *b = (proc_conn_t *)1;
    char buf[8];
    assert_int_equal(proc_pipe(NULL, &b, true), -EINVAL);
    assert_int_equal(proc_pipe(&a, NULL, true), -EINVAL);
    assert_int_equal(proc_conn_send(NULL, "x", 1), -EINVAL);
    assert_int_equal(proc_conn_recv(NULL, buf, sizeof buf, 0), -EINVAL);
    assert_int_equal(proc_conn_poll(NULL, 0), -EINVAL);
    assert_int_equal(proc_conn_fileno(NULL), -EINVAL);
    assert_int_equal(proc_conn_close(NULL), 0);

    assert_int_equal(proc_pipe(&a, &b, true), 0);
    assert_int_equal(proc_conn_send(a, NULL, 5), -EINVAL);
    assert_int_equal(proc_conn_recv(a, NULL, 5, 0), -EINVAL);
    assert_int_equal(proc_conn_recv(a, buf, sizeof buf, -2), -EINVAL);
    assert_int_equal(proc_conn_poll(a, -2), -EINVAL);
    int fd = proc_conn_fileno(a);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(proc_conn_fileno(b), F_GETFD) & FD_CLOEXEC);
    assert_int_equal(proc_conn_close(a), 0);
    assert_int_equal(proc_conn_close(b), 0);
}

/* Echo server: returns every message on the same end until EOF; exit code 0. */
static int echo_main(void *arg)
{
    struct pair *p = arg;
    proc_conn_close(p->a); /* the parent's end: EOF must not depend on us */
    size_t cap = 2u << 20;
    unsigned char *buf = malloc(cap);
    if (!buf)
        return 1;
    for (;;) {
        ssize_t n = proc_conn_recv(p->b, buf, cap, IT_BOUND_MS);
        if (n == -EPIPE)
            break;
        if (n < 0 || proc_conn_send(p->b, buf, (size_t)n) != 0)
            return 2;
    }
    free(buf);
    return 0;
}

static void duplex_keeps_boundaries_both_ways(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, true);
    proc_t *child = it_start(echo_main, &p);
    assert_int_equal(proc_conn_close(p.b), 0);
    p.b = NULL;

    static const size_t sizes[] = {0, 1, 100, INLINE_MAX - 16, INLINE_MAX, INLINE_MAX + 1, 1 << 20};
    const size_t n = sizeof sizes / sizeof *sizes;
    unsigned char *out = malloc(1 << 20), *in = malloc(1 << 20);
    assert_non_null(out);
    assert_non_null(in);
    /* All sent before any is received: boundaries come from the messages. */
    for (size_t i = 0; i < n; i++) {
        memset(out, (int)(i + 1), sizes[i]);
        assert_int_equal(proc_conn_send(p.a, out, sizes[i]), 0);
    }
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(proc_conn_recv(p.a, in, 1 << 20, IT_BOUND_MS), (ssize_t)sizes[i]);
        for (size_t k = 0; k < sizes[i]; k++)
            if (in[k] != (unsigned char)(i + 1))
                fail_msg("message %zu byte %zu differs", i, k);
    }
    assert_int_equal(proc_conn_poll(p.a, 0), 0);
    assert_int_equal(proc_conn_close(p.a), 0); /* EOF for the child */
    p.a = NULL;
    assert_int_equal(it_finish(child), 0);
    free(out);
    free(in);
    pair_destroy(&p);
}

static int one_way_sender_main(void *arg)
{
    struct pair *p = arg;
    if (proc_conn_recv(p->b, NULL, 0, 0) != -EBADF)
        return 1;
    if (proc_conn_send(p->b, "from child", 10) != 0)
        return 2;
    return 0;
}

static void one_way_pipe(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, false);
    char buf[32];
    assert_int_equal(proc_conn_send(p.a, "x", 1), -EBADF);
    assert_int_equal(proc_conn_recv(p.b, buf, sizeof buf, 0), -EBADF);
    assert_int_equal(proc_conn_poll(p.b, 0), -EBADF);
    /* Not even the raw fd sends the other way. */
    assert_true(send(proc_conn_fileno(p.a), "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0);

    proc_t *child = it_start(one_way_sender_main, &p);
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, IT_BOUND_MS), 10);
    assert_memory_equal(buf, "from child", 10);
    assert_int_equal(it_finish(child), 0);
    assert_int_equal(proc_conn_send(p.b, "from parent", 11), 0);
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, 0), 11);
    assert_memory_equal(buf, "from parent", 11);
    pair_destroy(&p);
}

#define BIG (64u << 20)

static int big_sender_main(void *arg)
{
    struct pair *p = arg;
    unsigned char *buf = malloc(BIG);
    if (!buf)
        return 1;
    msg_fill(buf, BIG, 7, 1);
    int r = proc_conn_send(p->b, buf, BIG);
    free(buf);
    return r == 0 ? 0 : 2;
}

static void message_of_64_mib(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, false);
    proc_t *child = it_start(big_sender_main, &p);
    unsigned char *buf = malloc(BIG);
    assert_non_null(buf);
    assert_int_equal(proc_conn_recv(p.a, buf, BIG - 1, IT_BOUND_MS), -EMSGSIZE);
    assert_int_equal(proc_conn_poll(p.a, 0), 1); /* still there */
    assert_int_equal(proc_conn_recv(p.a, buf, BIG, IT_BOUND_MS), (ssize_t)BIG);
    struct msg_head h;
    assert_true(msg_check(buf, BIG, &h));
    assert_int_equal(h.seq, 1);
    assert_int_equal(it_finish(child), 0);
    free(buf);
    pair_destroy(&p);
}

static void too_small_buffer_keeps_message(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, false);
    static const size_t sizes[] = {100, INLINE_MAX, 200 * 1024};
    unsigned char *buf = malloc(200 * 1024);
    assert_non_null(buf);
    for (size_t i = 0; i < 3; i++) {
        msg_fill(buf, sizes[i], 1, (uint32_t)i);
        assert_int_equal(proc_conn_send(p.b, buf, sizes[i]), 0);
        memset(buf, 0, sizes[i]);
        assert_int_equal(proc_conn_recv(p.a, buf, sizes[i] - 1, 0), -EMSGSIZE);
        assert_int_equal(proc_conn_recv(p.a, NULL, 0, 0), -EMSGSIZE);
        assert_int_equal(proc_conn_poll(p.a, 0), 1);
        assert_int_equal(proc_conn_recv(p.a, buf, sizes[i], 0), (ssize_t)sizes[i]);
        struct msg_head h;
        assert_true(msg_check(buf, sizes[i], &h));
        assert_int_equal(h.seq, i);
    }
    /* An empty message fits a NULL buffer. */
    assert_int_equal(proc_conn_send(p.b, NULL, 0), 0);
    assert_int_equal(proc_conn_recv(p.a, NULL, 0, 0), 0);
    free(buf);
    pair_destroy(&p);
}

static void timeouts(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, true);
    char buf[16];
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, 0), -ETIMEDOUT);
    assert_int_equal(proc_conn_poll(p.a, 0), 0);
    assert_true(tu_now_ms() - t0 < 5000);
    t0 = tu_now_ms();
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, 150), -ETIMEDOUT);
    it_elapsed_ok(t0, 150);
    t0 = tu_now_ms();
    assert_int_equal(proc_conn_poll(p.a, 150), 0);
    it_elapsed_ok(t0, 150);

    struct it_flood f;
    it_flood_start(&f);
    t0 = tu_now_ms();
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, 300), -ETIMEDOUT);
    it_elapsed_ok(t0, 300);
    t0 = tu_now_ms();
    assert_int_equal(proc_conn_poll(p.a, 300), 0);
    it_elapsed_ok(t0, 300);
    it_flood_stop(&f);
    assert_true(it_signals > 0);
    pair_destroy(&p);
}

static int two_then_exit_main(void *arg)
{
    struct pair *p = arg;
    if (proc_conn_send(p->b, "one", 3) != 0 || proc_conn_send(p->b, "two", 3) != 0)
        return 1;
    return 0;
}

static void eof_once_every_copy_is_closed(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, false);
    proc_t *child = it_start(two_then_exit_main, &p);
    assert_int_equal(it_finish(child), 0);
    char buf[8];
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, IT_BOUND_MS), 3);
    assert_memory_equal(buf, "one", 3);
    /* The parent's own copy of b is still open: no EOF yet. */
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, IT_BOUND_MS), 3);
    assert_memory_equal(buf, "two", 3);
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, 50), -ETIMEDOUT);
    assert_int_equal(proc_conn_poll(p.a, 0), 0);
    assert_int_equal(proc_conn_close(p.b), 0);
    p.b = NULL;
    assert_int_equal(proc_conn_poll(p.a, 0), 1);
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, 0), -EPIPE);
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, -1), -EPIPE);
    pair_destroy(&p);
}

static void send_to_closed_end_is_epipe(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, true);
    assert_int_equal(proc_conn_close(p.a), 0);
    p.a = NULL;
    /* No SIGPIPE: the test process would die here. */
    assert_int_equal(proc_conn_send(p.b, "x", 1), -EPIPE);
    char big[INLINE_MAX + 1] = {0};
    assert_int_equal(proc_conn_send(p.b, big, sizeof big), -EPIPE);
    pair_destroy(&p);
}

/* Blocks until killed, never reading what the parent sent. */
static int sit_main(void *arg)
{
    struct pair *p = arg;
    proc_conn_close(p->a);
    (void)tu_write_full(p->report[1], "s", 1);
    (void)tu_gate_wait(&p->gate, -1);
    return 0;
}

static void peer_killed_with_unread_messages(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, true);
    proc_t *child = it_start(sit_main, &p);
    assert_int_equal(proc_conn_close(p.b), 0);
    p.b = NULL;
    char c;
    assert_int_equal(tu_read_full(p.report[0], &c, 1, IT_BOUND_MS), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(proc_conn_send(p.a, "unread", 6), 0);
    it_kill(child);
    char buf[8];
    assert_int_equal(proc_conn_poll(p.a, IT_BOUND_MS), 1);
    assert_int_equal(proc_conn_recv(p.a, buf, sizeof buf, IT_BOUND_MS), -EPIPE);
    assert_int_equal(proc_conn_send(p.a, "x", 1), -EPIPE);
    pair_destroy(&p);
}

/* Sends numbered messages until killed (or the bound is reached). */
static int stream_main(void *arg)
{
    struct pair *p = arg;
    unsigned char *buf = malloc(300 * 1024);
    if (!buf)
        return 1;
    (void)tu_write_full(p->report[1], "s", 1);
    for (uint32_t seq = 0; seq < 1000000; seq++) {
        size_t len = msg_size(seq);
        msg_fill(buf, len, (uint32_t)p->id, seq);
        if (proc_conn_send(p->b, buf, len) != 0)
            return 2;
    }
    return 0;
}

static void killed_sender_leaves_only_whole_messages(void **state)
{
    (void)state;
    unsigned char *buf = malloc(300 * 1024);
    assert_non_null(buf);
    srand((unsigned)tu_now_ms());
    for (int round = 0; round < (IT_SANITIZED ? 5 : 20); round++) {
        struct pair p;
        pair_init(&p, false);
        p.id = round;
        proc_t *child = it_start(stream_main, &p);
        assert_int_equal(proc_conn_close(p.b), 0);
        p.b = NULL;
        char c;
        assert_int_equal(tu_read_full(p.report[0], &c, 1, IT_BOUND_MS), 1);
        /* Receive a random number of messages, then kill at a random moment. */
        uint32_t expect = 0;
        int before = rand() % 40;
        for (int i = 0; i < before; i++) {
            ssize_t n = proc_conn_recv(p.a, buf, 300 * 1024, IT_BOUND_MS);
            struct msg_head h = {0};
            assert_true(n > 0 && msg_check(buf, (size_t)n, &h));
            assert_int_equal(h.seq, expect++);
        }
        it_kill(child);
        for (;;) {
            ssize_t n = proc_conn_recv(p.a, buf, 300 * 1024, IT_BOUND_MS);
            if (n == -EPIPE)
                break;
            struct msg_head h = {0};
            assert_true(n > 0);
            if (!msg_check(buf, (size_t)n, &h))
                fail_msg("round %d: a torn message of %zd bytes after seq %u", round, n, expect);
            assert_int_equal(h.seq, expect++);
        }
        pair_destroy(&p);
    }
    free(buf);
}

#define FANOUT_RECEIVERS 4
#define FANOUT_MESSAGES (IT_SANITIZED ? 400 : 3000)

/* Receives until EOF, starting with a small buffer; counts each message seen. */
static int fan_receiver_main(void *arg)
{
    struct pair *p = arg;
    proc_conn_close(p->b); /* else EOF never comes */
    p->b = NULL;
    size_t big = 300 * 1024;
    unsigned char *buf = malloc(big);
    if (!buf)
        return 1;
    for (;;) {
        ssize_t n = proc_conn_recv(p->a, buf, 64, IT_BOUND_MS);
        if (n == -EMSGSIZE)
            n = proc_conn_recv(p->a, buf, big, IT_BOUND_MS);
        if (n == -EPIPE)
            break;
        struct msg_head h;
        if (n < 0 || !msg_check(buf, (size_t)n, &h) || h.seq >= FANOUT_MESSAGES)
            return 3;
        atomic_fetch_add(&p->counts[h.seq], 1);
    }
    free(buf);
    return 0;
}

static void several_receivers_share_one_end(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, false);
    p.counts = proc_shared_alloc(FANOUT_MESSAGES * sizeof(int));
    assert_non_null(p.counts);
    proc_t *child[FANOUT_RECEIVERS];
    for (int i = 0; i < FANOUT_RECEIVERS; i++)
        child[i] = it_start(fan_receiver_main, &p);
    unsigned char *buf = malloc(300 * 1024);
    assert_non_null(buf);
    for (uint32_t seq = 0; seq < FANOUT_MESSAGES; seq++) {
        size_t len = msg_size(seq);
        msg_fill(buf, len, 0, seq);
        assert_int_equal(proc_conn_send(p.b, buf, len), 0);
    }
    assert_int_equal(proc_conn_close(p.b), 0);
    p.b = NULL;
    for (int i = 0; i < FANOUT_RECEIVERS; i++)
        assert_int_equal(it_finish(child[i]), 0);
    for (int i = 0; i < FANOUT_MESSAGES; i++)
        if (atomic_load(&p.counts[i]) != 1)
            fail_msg("message %d received %d times", i, atomic_load(&p.counts[i]));
    proc_shared_free((void *)p.counts);
    free(buf);
    pair_destroy(&p);
}

#define FANIN_SENDERS 4
#define FANIN_MESSAGES (IT_SANITIZED ? 200 : 1000)

static int fan_sender_main(void *arg)
{
    struct pair *p = arg;
    proc_conn_close(p->a);
    unsigned char *buf = malloc(300 * 1024);
    if (!buf)
        return 1;
    for (uint32_t seq = 0; seq < FANIN_MESSAGES; seq++) {
        size_t len = msg_size(seq + (uint32_t)p->id);
        msg_fill(buf, len, (uint32_t)p->id, seq);
        if (proc_conn_send(p->b, buf, len) != 0)
            return 2;
    }
    free(buf);
    return 0;
}

static void several_senders_share_one_end(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, false);
    proc_t *child[FANIN_SENDERS];
    for (int i = 0; i < FANIN_SENDERS; i++) {
        p.id = i;
        child[i] = it_start(fan_sender_main, &p);
    }
    assert_int_equal(proc_conn_close(p.b), 0);
    p.b = NULL;
    uint32_t next[FANIN_SENDERS] = {0};
    unsigned char *buf = malloc(300 * 1024);
    assert_non_null(buf);
    int total = 0;
    for (;;) {
        ssize_t n = proc_conn_recv(p.a, buf, 300 * 1024, IT_BOUND_MS);
        if (n == -EPIPE)
            break;
        struct msg_head h;
        assert_true(n > 0);
        assert_true(msg_check(buf, (size_t)n, &h));
        assert_true(h.sender < FANIN_SENDERS);
        assert_int_equal(h.seq, next[h.sender]++); /* per sender in order */
        total++;
    }
    assert_int_equal(total, FANIN_SENDERS * FANIN_MESSAGES);
    for (int i = 0; i < FANIN_SENDERS; i++)
        assert_int_equal(it_finish(child[i]), 0);
    free(buf);
    pair_destroy(&p);
}

#define THREAD_MESSAGES (IT_SANITIZED ? 300 : 2000)

struct thread_rx {
    proc_conn_t *a;
    _Atomic int *counts;
    int bad;
};

static void *thread_receiver(void *arg)
{
    struct thread_rx *t = arg;
    unsigned char *buf = malloc(300 * 1024);
    for (;;) {
        ssize_t n = proc_conn_recv(t->a, buf, 300 * 1024, IT_BOUND_MS);
        if (n == -EPIPE)
            break;
        struct msg_head h;
        if (n < 0 || !msg_check(buf, (size_t)n, &h) || h.seq >= THREAD_MESSAGES) {
            t->bad++;
            break;
        }
        atomic_fetch_add(&t->counts[h.seq], 1);
    }
    free(buf);
    return NULL;
}

static int thread_sender_main(void *arg)
{
    struct pair *p = arg;
    proc_conn_close(p->a);
    unsigned char *buf = malloc(300 * 1024);
    if (!buf)
        return 1;
    for (uint32_t seq = 0; seq < THREAD_MESSAGES; seq++) {
        size_t len = msg_size(seq);
        msg_fill(buf, len, 0, seq);
        if (proc_conn_send(p->b, buf, len) != 0)
            return 2;
    }
    free(buf);
    return 0;
}

static void threads_receive_on_one_handle(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, false);
    _Atomic int *counts = calloc(THREAD_MESSAGES, sizeof *counts);
    assert_non_null(counts);
    struct thread_rx rx[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        rx[i] = (struct thread_rx){p.a, counts, 0};
        assert_int_equal(pthread_create(&t[i], NULL, thread_receiver, &rx[i]), 0);
    }
    proc_t *child = it_start(thread_sender_main, &p);
    assert_int_equal(proc_conn_close(p.b), 0);
    p.b = NULL;
    assert_int_equal(it_finish(child), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(rx[i].bad, 0);
    }
    for (int i = 0; i < THREAD_MESSAGES; i++)
        assert_int_equal(atomic_load(&counts[i]), 1);
    free(counts);
    pair_destroy(&p);
}

static void no_fd_leak_over_1000_pipes(void **state)
{
    (void)state;
    int before = tu_count_fds();
    assert_true(before > 0);
    unsigned char *buf = malloc(INLINE_MAX + 100);
    assert_non_null(buf);
    memset(buf, 'z', INLINE_MAX + 100);
    for (int i = 0; i < 1000; i++) {
        proc_conn_t *a, *b;
        assert_int_equal(proc_pipe(&a, &b, i % 2 == 0), 0);
        assert_int_equal(proc_conn_send(b, "ping", 4), 0);
        if (i % 10 == 0) {
            /* Large messages travel as memfds: none may stay open. */
            assert_int_equal(proc_conn_send(b, buf, INLINE_MAX + 100), 0);
            assert_int_equal(proc_conn_send(b, buf, INLINE_MAX + 100), 0);
        }
        assert_int_equal(proc_conn_recv(a, buf, 4, 0), 4);
        if (i % 10 == 0) {
            assert_int_equal(proc_conn_recv(a, buf, 8, 0), -EMSGSIZE);
            assert_int_equal(proc_conn_recv(a, buf, INLINE_MAX + 100, 0), INLINE_MAX + 100);
            /* The second stays unread in the socket when it is closed. */
        }
        assert_int_equal(proc_conn_close(a), 0);
        assert_int_equal(proc_conn_close(b), 0);
    }
    assert_int_equal(tu_count_fds(), before);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(argument_errors),
        cmocka_unit_test(duplex_keeps_boundaries_both_ways),
        cmocka_unit_test(one_way_pipe),
        cmocka_unit_test(message_of_64_mib),
        cmocka_unit_test(too_small_buffer_keeps_message),
        cmocka_unit_test(timeouts),
        cmocka_unit_test(eof_once_every_copy_is_closed),
        cmocka_unit_test(send_to_closed_end_is_epipe),
        cmocka_unit_test(peer_killed_with_unread_messages),
        cmocka_unit_test(killed_sender_leaves_only_whole_messages),
        cmocka_unit_test(several_receivers_share_one_end),
        cmocka_unit_test(several_senders_share_one_end),
        cmocka_unit_test(threads_receive_on_one_handle),
        cmocka_unit_test(no_fd_leak_over_1000_pipes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
