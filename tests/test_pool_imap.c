/* SPDX-License-Identifier: MIT */
/*
 * Worker pools (<libproc/pool.h>), imap streams: many tiny items and huge
 * outputs, both orders, deaths, timeouts, terminate and free mid-stream, the
 * window, bad input. Rerun as test_pool_imap_queue with LIBPROC_POOL_FAST=0 (streams always
 * take the queue; the rerun checks that fast jobs around them do not matter).
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libproc/pool.h>
#include <libproc/proc.h>

#include "pool_fixture.h"
#include "testcheck.h"
#include "testutil.h"

#ifdef POOL_SANITIZED
#define TINY_ITEMS 100000
#else
#define TINY_ITEMS 1000000
#endif

/* out = in * in + 7 (8 bytes each way). */
static int vtask_square(const void *in, size_t len, proc_reply_t *reply)
{
    uint64_t v;
    if (len != sizeof v)
        return 1;
    memcpy(&v, in, sizeof v);
    v = v * v + 7;
    return proc_reply_write(reply, &v, sizeof v) == 0 ? 0 : 2;
}

/* The next result, bounded; checks the square and frees it; its index. */
static size_t take_square(proc_imap_t *m, unsigned char *seen)
{
    proc_result_t r;
    assert_int_equal(proc_imap_next(m, &r, BOUND_MS), 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, sizeof(uint64_t));
    uint64_t v;
    memcpy(&v, r.data, sizeof v);
    assert_true(v == (uint64_t)r.index * r.index + 7);
    assert_int_equal(seen[r.index]++, 0);
    free(r.data);
    return r.index;
}

/* Many tiny items, both orders: every index once, in put order when ordered. */
static void test_tiny_items(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    for (int ordered = 1; ordered >= 0; ordered--) {
        unsigned char *seen = calloc(TINY_ITEMS, 1);
        assert_non_null(seen);
        proc_imap_t *m = proc_pool_imap(pool, vtask_square, ordered);
        assert_non_null(m);
        size_t taken = 0;
        for (uint64_t i = 0; i < TINY_ITEMS; i++) {
            int rc;
            while ((rc = proc_imap_put(m, &i, sizeof i, 0)) == -ETIMEDOUT) {
                size_t idx = take_square(m, seen); /* the window is full: take one */
                if (ordered)
                    assert_int_equal(idx, taken);
                taken++;
            }
            assert_int_equal(rc, 0);
        }
        assert_int_equal(proc_imap_done(m), 0);
        while (taken < TINY_ITEMS) {
            size_t idx = take_square(m, seen);
            if (ordered)
                assert_int_equal(idx, taken);
            taken++;
        }
        proc_result_t r;
        assert_int_equal(proc_imap_next(m, &r, 0), -ENODATA);
        assert_int_equal(proc_imap_free(m), 0);
        free(seen);
    }
    close_join_free(pool);
}

#ifdef POOL_SANITIZED
#define BIG_ITEMS 200
#else
#define BIG_ITEMS 1000
#endif

struct big_in {
    uint32_t index, mib;
};

/* Item i's output: mib MiB in 64 KiB pieces, each the byte (i & 0xff)
 * after i itself (8 bytes); returns the MiB. */
static int vtask_big(const void *in, size_t len, proc_reply_t *reply)
{
    struct big_in b;
    if (len != sizeof b)
        return -1;
    memcpy(&b, in, sizeof b);
    static unsigned char piece[65536];
    uint64_t index = b.index;
    memset(piece, (int)(index & 0xff), sizeof piece);
    memcpy(piece, &index, sizeof index);
    for (uint32_t i = 0; i < b.mib * 16; i++)
        if (proc_reply_write(reply, piece, sizeof piece) != 0)
            return -2;
    return (int)b.mib;
}

/* Item i's size: mostly 1 MiB, every tenth 4 MiB, every hundredth 64 MiB. */
static uint32_t big_mib(uint32_t i)
{
    return i % 100 == 0 ? 64 : i % 10 == 5 ? 4 : 1;
}

/* Outputs of 1 to 64 MiB (about 2 GB in all), each whole and in order,
 * while put blocks on the window's bytes. */
static void test_big_outputs(void **state)
{
    (void)state;
    proc_pool_t *pool = new_pool(2, 0, NULL);
    proc_imap_t *m = proc_pool_imap(pool, vtask_big, true);
    assert_non_null(m);
    uint32_t put = 0;
    for (uint32_t taken = 0; taken < BIG_ITEMS;) {
        struct big_in b = {.index = put, .mib = big_mib(put)};
        if (put < BIG_ITEMS && proc_imap_put(m, &b, sizeof b, 0) == 0) {
            if (++put == BIG_ITEMS)
                assert_int_equal(proc_imap_done(m), 0);
            continue;
        }
        proc_result_t r; /* the window is full, or all were put: take one */
        assert_int_equal(proc_imap_next(m, &r, BOUND_MS), 0);
        assert_int_equal(r.index, taken);
        uint32_t mib = big_mib(taken);
        assert_int_equal(r.status, (int)mib);
        assert_int_equal(r.len, (size_t)mib << 20);
        const unsigned char *d = r.data;
        for (size_t k = 0; k < r.len; k += 4096) {
            uint64_t idx;
            if (k % 65536 == 0) {
                memcpy(&idx, d + k, sizeof idx);
                assert_int_equal(idx, taken);
            } else {
                assert_int_equal(d[k], taken & 0xff);
            }
        }
        free(r.data);
        taken++;
    }
    proc_result_t r;
    assert_int_equal(proc_imap_next(m, &r, 0), -ENODATA);
    assert_int_equal(proc_imap_free(m), 0);
    close_join_free(pool);
}

/* ----------------------------------------------- misbehaving items in a stream */

/* task_maybe_bad (struct bad_in) as a stream task: 8 bytes out. */
static int vtask_maybe_bad(const void *in, size_t len, proc_reply_t *reply)
{
    uint64_t out = UNTOUCHED;
    if (len != sizeof(struct bad_in))
        return 1;
    int rc = task_maybe_bad(in, &out);
    return proc_reply_write(reply, &out, sizeof out) == 0 ? rc : 2;
}

static void put_bad(proc_imap_t *m, uint32_t value, uint32_t how)
{
    struct bad_in b = {.value = value, .how = how};
    assert_int_equal(proc_imap_put(m, &b, sizeof b, BOUND_MS), 0);
}

/* Takes n results: each index once (in order when ordered); item i failed
 * with fail[i] (0: returned value * 3 + 1). poll: with a timeout of 0, again
 * until there is one (a caller that polls must get every result as surely
 * as one that waits), within BOUND_MS for each. */
static void take_polled(proc_imap_t *m, bool ordered, size_t n, const int *fail, bool poll)
{
    unsigned char *seen = calloc(n, 1);
    assert_non_null(seen);
    for (size_t k = 0; k < n; k++) {
        proc_result_t r;
        int rc;
        int64_t end = tu_now_ms() + BOUND_MS;
        while ((rc = proc_imap_next(m, &r, poll ? 0 : BOUND_MS)) == -ETIMEDOUT && poll &&
               tu_now_ms() < end)
            sched_yield();
        assert_int_equal(rc, 0);
        assert_true(r.index < n);
        if (ordered)
            assert_int_equal(r.index, k);
        assert_int_equal(seen[r.index]++, 0);
        if (fail[r.index]) {
            EQ(r.status, fail[r.index]);
            assert_null(r.data);
            assert_int_equal(r.len, 0);
        } else {
            EQ(r.status, 0);
            assert_int_equal(r.len, sizeof(uint64_t));
            uint64_t v;
            memcpy(&v, r.data, sizeof v);
            assert_true(v == (uint64_t)r.index * 3 + 1);
        }
        free(r.data);
    }
    free(seen);
}

static void take_checked(proc_imap_t *m, bool ordered, size_t n, const int *fail)
{
    take_polled(m, ordered, n, fail, false);
}

/* Kills, from outside, the worker that reports its pid. */
static void *kill_reported(void *arg)
{
    pid_t pid = read_pid(arg);
    if (pid > 0)
        kill(pid, SIGKILL);
    return NULL;
}

/* A worker SIGKILLed mid-stream fails exactly its item (-ECHILD); the
 * items around it, before and after in the same batch too, all return, to a
 * caller that polls (the rest of the victim's batch goes back to the front:
 * an ordered stream's next result is pending while later ones are in). */
static void test_kill_mid_stream(void **state)
{
    (void)state;
    enum { N = 10000, VICTIM = 7777 }; /* N within the window: all put before any is taken */
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(2, 0, NULL);
    static int fail[N];
    fail[VICTIM] = -ECHILD;
    for (int ordered = 1; ordered >= 0; ordered--) {
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, kill_reported, &p), 0);
        proc_imap_t *m = proc_pool_imap(pool, vtask_maybe_bad, ordered);
        assert_non_null(m);
        for (uint32_t i = 0; i < N; i++)
            put_bad(m, i, i == VICTIM ? BAD_KILLED : BAD_NONE);
        assert_int_equal(proc_imap_done(m), 0);
        take_polled(m, ordered, N, fail, true);
        proc_result_t r;
        assert_int_equal(proc_imap_next(m, &r, 0), -ENODATA);
        assert_int_equal(proc_imap_free(m), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
    }
    close_join_free(pool);
    pipes_close(&p);
}

/* task_timeout_ms in a stream: the items that overrun (each way) fail with
 * -ETIMEDOUT, alone; the stream goes on. */
static void test_timeout_in_stream(void **state)
{
    (void)state;
    enum { N = 3000 };
    static const uint32_t how[] = {BAD_SLEEP, BAD_SPIN, BAD_NOTERM};
    static const uint32_t at[] = {0, N / 2, N - 1};
    static int fail[N];
    for (size_t k = 0; k < 3; k++)
        fail[at[k]] = -ETIMEDOUT;
    proc_pool_opts_t o = {.workers = 2, .task_timeout_ms = 200};
    proc_pool_t *pool = open_pool(&o);
    proc_imap_t *m = proc_pool_imap(pool, vtask_maybe_bad, false);
    assert_non_null(m);
    for (uint32_t i = 0; i < N; i++) {
        uint32_t h = BAD_NONE;
        for (size_t k = 0; k < 3; k++)
            if (at[k] == i)
                h = how[k];
        put_bad(m, i, h);
    }
    assert_int_equal(proc_imap_done(m), 0);
    take_checked(m, false, N, fail);
    assert_int_equal(proc_imap_free(m), 0);
    close_join_free(pool);
}

/* proc_pool_terminate() mid-stream: the item running and every one not yet
 * run fail with -ECANCELED, results already in are kept, the stream ends. */
static void test_terminate_mid_stream(void **state)
{
    (void)state;
    enum { N = 100 };
    struct pipes p;
    pipes_open(&p);
    proc_pool_t *pool = new_pool(1, 0, NULL);
    proc_imap_t *m = proc_pool_imap(pool, vtask_maybe_bad, true);
    assert_non_null(m);
    put_bad(m, 0, BAD_NONE);
    proc_result_t r;
    assert_int_equal(proc_imap_next(m, &r, BOUND_MS), 0); /* item 0 is in */
    assert_int_equal(r.status, 0);
    free(r.data);
    put_bad(m, 1, BAD_BLOCK);
    for (uint32_t i = 2; i < N; i++)
        put_bad(m, i, BAD_NONE);
    assert_true(read_pid(&p) > 0); /* item 1 runs and blocks */
    assert_int_equal(proc_pool_terminate(pool), 0);
    for (size_t i = 1; i < N; i++) {
        assert_int_equal(proc_imap_next(m, &r, BOUND_MS), 0);
        assert_int_equal(r.index, i);
        EQ(r.status, -ECANCELED);
        assert_null(r.data);
    }
    assert_int_equal(proc_imap_next(m, &r, 0), -ENODATA);
    assert_int_equal(proc_imap_put(m, &r, 1, 0), -EINVAL);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    free_pool(pool);
    assert_int_equal(proc_imap_free(m), 0); /* after its pool */
    pipes_close(&p);
}

/* Two streams (one of each order), a map and a future share one pool. */
static void test_streams_share_pool(void **state)
{
    (void)state;
    enum { N = 3000 };
    proc_pool_t *pool = new_pool(2, 0, NULL);
    proc_imap_t *a = proc_pool_imap(pool, vtask_maybe_bad, true);
    proc_imap_t *b = proc_pool_imap(pool, vtask_maybe_bad, false);
    assert_non_null(a);
    assert_non_null(b);
    uint32_t v = 5;
    proc_future_t *f = proc_pool_submit(pool, task_square, &v, sizeof v, sizeof(uint64_t));
    assert_non_null(f);
    for (uint32_t i = 0; i < N; i++) {
        put_bad(a, i, BAD_NONE);
        put_bad(b, i, BAD_NONE);
    }
    uint32_t in[100];
    uint64_t out[100];
    for (uint32_t i = 0; i < 100; i++)
        in[i] = i;
    assert_int_equal(proc_pool_map(pool, task_square, in, sizeof *in, out, sizeof *out, 100), 0);
    for (uint32_t i = 0; i < 100; i++)
        assert_true(out[i] == (uint64_t)i * i + 7);
    assert_int_equal(proc_imap_done(a), 0);
    assert_int_equal(proc_imap_done(b), 0);
    static int none[N];
    take_checked(b, false, N, none);
    take_checked(a, true, N, none);
    uint64_t fr = 0;
    assert_int_equal(proc_future_get(f, &fr, sizeof fr, BOUND_MS), 0);
    assert_true(fr == 5 * 5 + 7);
    proc_future_free(f);
    assert_int_equal(proc_imap_free(a), 0);
    assert_int_equal(proc_imap_free(b), 0);
    close_join_free(pool);
}

/* proc_pool_close() with a stream still open (no proc_imap_done()): what
 * was put still runs, the pool joins, put is refused, the stream ends and
 * outlives its pool. */
static void test_close_with_open_stream(void **state)
{
    (void)state;
    enum { N = 1000 };
    proc_pool_t *pool = new_pool(2, 0, NULL);
    proc_imap_t *m = proc_pool_imap(pool, vtask_maybe_bad, true);
    assert_non_null(m);
    for (uint32_t i = 0; i < N; i++)
        put_bad(m, i, BAD_NONE);
    assert_int_equal(proc_pool_close(pool), 0);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    free_pool(pool); /* the stream outlives its pool, as a future does */
    struct bad_in b = {.value = N, .how = BAD_NONE};
    assert_int_equal(proc_imap_put(m, &b, sizeof b, 0), -EINVAL);
    static int none[N];
    take_checked(m, true, N, none);
    proc_result_t r;
    assert_int_equal(proc_imap_next(m, &r, 0), -ENODATA);
    assert_int_equal(proc_imap_done(m), 0);
    assert_int_equal(proc_imap_free(m), 0);
}

/* proc_imap_free() with items pending, running (one blocked) and results
 * untaken: nothing leaks (fds here, memory under ASan), no worker is left
 * over, and the pool goes on with a map and a new stream. */
static void test_free_mid_stream(void **state)
{
    (void)state;
    struct pipes p;
    pipes_open(&p);
    int fds = tu_count_fds();
    proc_pool_t *pool = new_pool(2, 0, NULL);
    proc_imap_t *m = proc_pool_imap(pool, vtask_maybe_bad, false);
    assert_non_null(m);
    put_bad(m, 0, BAD_BLOCK);
    for (uint32_t i = 1; i < 5000; i++)
        put_bad(m, i, BAD_NONE);
    assert_true(read_pid(&p) > 0);
    proc_result_t r;
    assert_int_equal(proc_imap_next(m, &r, BOUND_MS), 0); /* some came back */
    free(r.data);
    assert_int_equal(proc_imap_free(m), 0);
    open_gate(&p, 1); /* the blocked item returns into a freed stream */
    uint32_t in[300];
    uint64_t out[300];
    for (uint32_t i = 0; i < 300; i++)
        in[i] = i;
    assert_int_equal(proc_pool_map(pool, task_square, in, sizeof *in, out, sizeof *out, 300), 0);
    for (uint32_t i = 0; i < 300; i++)
        assert_true(out[i] == (uint64_t)i * i + 7);
    m = proc_pool_imap(pool, vtask_maybe_bad, true);
    assert_non_null(m);
    static int none[100];
    for (uint32_t i = 0; i < 100; i++)
        put_bad(m, i, BAD_NONE);
    assert_int_equal(proc_imap_done(m), 0);
    take_checked(m, true, 100, none);
    assert_int_equal(proc_imap_free(m), 0);
    close_join_free(pool);
    EQ(tu_count_fds(), fds);
    pipes_close(&p);
}

/* The window: put blocks once POOL's 16,384 results are outstanding (put,
 * not yet taken; see proc_imap_put()), whether or not they ran, and a
 * blocked put goes on as soon as one is taken. */
struct blocked_put {
    proc_imap_t *m;
    int rc;
};

static void *put_forever(void *arg)
{
    struct blocked_put *b = arg;
    struct bad_in in = {.value = 16384, .how = BAD_NONE};
    b->rc = proc_imap_put(b->m, &in, sizeof in, PROC_WAIT_FOREVER);
    return NULL;
}

static void test_put_blocks_at_window(void **state)
{
    (void)state;
    enum { WINDOW = 16384 };
    proc_pool_t *pool = new_pool(2, 0, NULL);
    proc_imap_t *m = proc_pool_imap(pool, vtask_maybe_bad, true);
    assert_non_null(m);
    for (uint32_t i = 0; i < WINDOW; i++)
        put_bad(m, i, BAD_NONE);
    struct bad_in extra = {.value = WINDOW, .how = BAD_NONE};
    assert_int_equal(proc_imap_put(m, &extra, sizeof extra, 0), -ETIMEDOUT);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_imap_put(m, &extra, sizeof extra, 50), -ETIMEDOUT);
    assert_true(tu_now_ms() - t0 >= 50);
    struct blocked_put b = {.m = m, .rc = 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, put_forever, &b), 0);
    proc_result_t r;
    assert_int_equal(proc_imap_next(m, &r, BOUND_MS), 0); /* one taken: the put fits */
    assert_int_equal(r.index, 0);
    free(r.data);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(b.rc, 0);
    assert_int_equal(proc_imap_done(m), 0);
    for (size_t i = 1; i <= WINDOW; i++) {
        assert_int_equal(proc_imap_next(m, &r, BOUND_MS), 0);
        assert_int_equal(r.index, i);
        uint64_t v;
        memcpy(&v, r.data, sizeof v);
        assert_true(v == (uint64_t)i * 3 + 1);
        free(r.data);
    }
    assert_int_equal(proc_imap_next(m, &r, 0), -ENODATA);
    assert_int_equal(proc_imap_free(m), 0);
    close_join_free(pool);
}

/* Bad input for every call; proc_reply_write outside a task. */
static void test_imap_misuse(void **state)
{
    (void)state;
    errno = 0;
    assert_null(proc_pool_imap(NULL, vtask_square, true));
    assert_int_equal(errno, EINVAL);
    proc_pool_t *pool = new_pool(1, 0, NULL);
    errno = 0;
    assert_null(proc_pool_imap(pool, NULL, true));
    assert_int_equal(errno, EINVAL);
    proc_imap_t *m = proc_pool_imap(pool, vtask_square, false);
    assert_non_null(m);
    uint64_t v = 1;
    proc_result_t r;
    assert_int_equal(proc_imap_put(NULL, &v, sizeof v, 0), -EINVAL);
    assert_int_equal(proc_imap_put(m, NULL, 1, 0), -EINVAL);
    assert_int_equal(proc_imap_put(m, &v, sizeof v, -2), -EINVAL);
    assert_int_equal(proc_imap_next(NULL, &r, 0), -EINVAL);
    assert_int_equal(proc_imap_next(m, NULL, 0), -EINVAL);
    assert_int_equal(proc_imap_next(m, &r, -2), -EINVAL);
    assert_int_equal(proc_imap_next(m, &r, 0), -ETIMEDOUT); /* nothing put yet */
    assert_int_equal(proc_imap_done(NULL), -EINVAL);
    assert_int_equal(proc_imap_done(m), 0);
    assert_int_equal(proc_imap_put(m, &v, sizeof v, 0), -EINVAL); /* after done */
    assert_int_equal(proc_imap_next(m, &r, 0), -ENODATA);
    assert_int_equal(proc_imap_free(m), 0);
    assert_int_equal(proc_imap_free(NULL), 0);
    assert_int_equal(proc_reply_write(NULL, &v, sizeof v), -EINVAL);
    proc_reply_t *fake = (proc_reply_t *)(void *)&v;
    assert_int_equal(proc_reply_write(fake, &v, sizeof v), -EINVAL); /* not in a task */
    assert_int_equal(proc_pool_close(pool), 0);
    errno = 0;
    assert_null(proc_pool_imap(pool, vtask_square, true));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_pool_join(pool, BOUND_MS), 0);
    free_pool(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_tiny_items, kill_leftovers),
        cmocka_unit_test_teardown(test_big_outputs, kill_leftovers),
        cmocka_unit_test_teardown(test_kill_mid_stream, kill_leftovers),
        cmocka_unit_test_teardown(test_timeout_in_stream, kill_leftovers),
        cmocka_unit_test_teardown(test_terminate_mid_stream, kill_leftovers),
        cmocka_unit_test_teardown(test_streams_share_pool, kill_leftovers),
        cmocka_unit_test_teardown(test_close_with_open_stream, kill_leftovers),
        cmocka_unit_test_teardown(test_free_mid_stream, kill_leftovers),
        cmocka_unit_test_teardown(test_put_blocks_at_window, kill_leftovers),
        cmocka_unit_test_teardown(test_imap_misuse, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_shared, NULL);
}
