/* SPDX-License-Identifier: MIT */
/*
 * A listener against hostile peers (src/listen.c, conn_auth.c): one that
 * connects and says nothing, one that sends random bytes, length prefixes of
 * 2^62 and 2^31 - 1 (never allocated: under ASan such a malloc would abort the
 * test), a truncated digest, a response replayed from another connection, and
 * 1,000 connections opened and dropped at once while an honest client is
 * served. After each, the listener serves an honest client, and no fd is
 * left behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"
#include "net_testutil.h"
#include "testutil.h"

#define KEY "hostile test key"
#define KEYLEN (sizeof KEY - 1)
#define BOUND IT_BOUND_MS
#define DROPPED 1000

/* An honest client: connects, 20 round trips, leaves. Exit code 0 when all went well. */
static int honest_main(void *arg)
{
    const char *address = arg;
    proc_conn_t *c;
    if (proc_connect(address, KEY, KEYLEN, &c, BOUND) < 0)
        return 2;
    for (int i = 0; i < 20; i++) {
        char buf[16];
        if (proc_conn_send(c, &i, sizeof i) < 0 || proc_conn_recv(c, buf, sizeof buf, BOUND) != 4 ||
            memcmp(buf, &i, 4) != 0)
            return 3;
    }
    proc_conn_close(c);
    return 0;
}

/* Accepts the honest client and echoes until it leaves. */
static void serve_honest(proc_listener_t *l, proc_t *p)
{
    proc_conn_t *c;
    assert_int_equal(proc_accept(l, &c, BOUND), 0);
    char buf[16];
    ssize_t n;
    while ((n = proc_conn_recv(c, buf, sizeof buf, BOUND)) > 0)
        assert_int_equal(proc_conn_send(c, buf, (size_t)n), 0);
    assert_int_equal(n, -EPIPE);
    proc_conn_close(c);
    assert_int_equal(it_finish(p), 0);
}

static void still_serves(proc_listener_t *l, const char *address)
{
    serve_honest(l, it_start(honest_main, (void *)address));
}

struct fixture {
    char address[96];
    proc_listener_t *l;
    int fds;
};

static int setup(void **state)
{
    static struct fixture f;
    nt_abstract(f.address, sizeof f.address, "hostile");
    f.l = proc_listen(f.address, KEY, KEYLEN);
    f.fds = tu_count_fds();
    *state = &f;
    return f.l ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    still_serves(f->l, f->address);
    int fds = tu_count_fds();
    proc_listener_close(f->l);
    if (fds != f->fds) {
        fprintf(stderr, "fds: %d at the start, %d at the end\n", f->fds, fds);
        return -1;
    }
    return 0;
}

static void silent_peer_costs_the_timeout(void **state)
{
    struct fixture *f = *state;
    int fd = nt_raw_connect(f->address);
    assert_true(fd >= 0);
    proc_conn_t *c = (proc_conn_t *)&c;
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_accept(f->l, &c, 200), -ETIMEDOUT);
    it_elapsed_ok(t0, 200);
    assert_null(c);
    close(fd);
}

static void random_bytes(void **state)
{
    struct fixture *f = *state;
    for (unsigned seed = 1; seed <= 20; seed++) {
        int fd = nt_raw_connect(f->address);
        assert_true(fd >= 0);
        unsigned char junk[4096];
        srand(seed);
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (unsigned char)rand();
        assert_int_equal(tu_write_full(fd, junk, sizeof junk), 0);
        proc_conn_t *c;
        int r = proc_accept(f->l, &c, BOUND);
        assert_true(r == -ECONNABORTED || r == -EACCES);
        close(fd);
    }
}

static void huge_length_prefixes(void **state)
{
    struct fixture *f = *state;
    static const unsigned char prefixes[][12] = {
        {0xff, 0xff, 0xff, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0}, /* -1, then 2^62 */
        {0x7f, 0xff, 0xff, 0xff},                            /* 2^31 - 1 */
        {0xff, 0xff, 0xff, 0xfe}};                           /* -2 */
    for (size_t i = 0; i < 3; i++) {
        int fd = nt_raw_connect(f->address);
        assert_true(fd >= 0);
        assert_int_equal(tu_write_full(fd, prefixes[i], i == 0 ? 12 : 4), 0);
        proc_conn_t *c;
        assert_int_equal(proc_accept(f->l, &c, BOUND), -ECONNABORTED);
        close(fd);
    }
}

/* The peer answers with the first 10 bytes of the right response. */
static int truncated_main(void *arg)
{
    int fd = nt_raw_connect(arg);
    unsigned char resp[256];
    if (nt_answer(fd, KEY, KEYLEN, resp) == 0)
        return 2;
    if (nt_send_frame(fd, resp, 10) < 0)
        return 3;
    return nt_recv_is(fd, "#FAILURE#") ? 0 : 4;
}

static void truncated_digest(void **state)
{
    struct fixture *f = *state;
    proc_t *p = it_start(truncated_main, f->address);
    proc_conn_t *c;
    assert_int_equal(proc_accept(f->l, &c, BOUND), -EACCES);
    assert_int_equal(it_finish(p), 0);
}

/* Completes connection A honestly, then replays A's response on B. */
static int replay_main(void *arg)
{
    int a = nt_raw_connect(arg), b = -1;
    unsigned char msg[256], resp[256];
    size_t r = nt_answer(a, KEY, KEYLEN, resp);
    if (r == 0)
        return 2;
    if (nt_send_frame(a, resp, r) < 0 || !nt_recv_is(a, "#WELCOME#"))
        return 3; /* the response was right for A */
    close(a);
    b = nt_raw_connect(arg);
    if (nt_recv_frame(b, msg, sizeof msg, BOUND) < 11 || nt_send_frame(b, resp, r) < 0)
        return 4;
    bool refused = nt_recv_is(b, "#FAILURE#");
    close(b);
    return refused ? 0 : 5;
}

static void replayed_response(void **state)
{
    struct fixture *f = *state;
    proc_t *p = it_start(replay_main, f->address);
    proc_conn_t *c;
    /* A proved the key, then left without answering the listener's challenge. */
    assert_int_equal(proc_accept(f->l, &c, BOUND), -ECONNABORTED);
    assert_int_equal(proc_accept(f->l, &c, BOUND), -EACCES); /* B, with A's response */
    assert_int_equal(it_finish(p), 0);
}

/* Opens DROPPED connections, then closes them all at once. */
static int dropper_main(void *arg)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < DROPPED + 64) {
        rl.rlim_cur = rl.rlim_max < DROPPED + 64 ? rl.rlim_max : DROPPED + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    static int fds[DROPPED];
    for (int i = 0; i < DROPPED; i++)
        if ((fds[i] = nt_raw_connect(arg)) < 0)
            return 2;
    for (int i = 0; i < DROPPED; i++)
        close(fds[i]);
    return 0;
}

static void thousand_dropped_while_serving(void **state)
{
    struct fixture *f = *state;
    proc_listener_t *l = proc_listen("tcp:127.0.0.1:0", KEY, KEYLEN);
    assert_non_null(l);
    char address[64];
    snprintf(address, sizeof address, "%s", proc_listener_address(l));
    proc_t *dropper = it_start(dropper_main, address);
    proc_t *honest = it_start(honest_main, address);
    int aborted = 0, served = 0;
    while (aborted < DROPPED || served < 1) {
        proc_conn_t *c;
        int r = proc_accept(l, &c, BOUND);
        if (r == -ECONNABORTED) {
            aborted++;
            continue;
        }
        assert_int_equal(r, 0);
        served++;
        char buf[16];
        ssize_t n;
        while ((n = proc_conn_recv(c, buf, sizeof buf, BOUND)) > 0)
            assert_int_equal(proc_conn_send(c, buf, (size_t)n), 0);
        assert_int_equal(n, -EPIPE);
        proc_conn_close(c);
    }
    assert_int_equal(served, 1);
    assert_int_equal(it_finish(dropper), 0);
    assert_int_equal(it_finish(honest), 0);
    proc_listener_close(l);
    (void)f;
}

static int nothing_main(void *arg)
{
    (void)arg;
    return 0;
}

int main(void)
{
    /* SIGPIPE keeps its default action: a send of the library's to a peer
     * that left must not raise it (MSG_NOSIGNAL). */
    /* libproc's own fds (the reaper's) open with the first child, before any count. */
    proc_t *warm = proc_new(nothing_main, NULL);
    if (!warm || proc_start(warm) < 0 || proc_join(warm, BOUND) < 0)
        return 1;
    proc_close(warm);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(silent_peer_costs_the_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(random_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(huge_length_prefixes, setup, teardown),
        cmocka_unit_test_setup_teardown(truncated_digest, setup, teardown),
        cmocka_unit_test_setup_teardown(replayed_response, setup, teardown),
        cmocka_unit_test_setup_teardown(thousand_dropped_while_serving, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
