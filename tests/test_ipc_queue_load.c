/* SPDX-License-Identifier: MIT */
/*
 * Queue (src/queue.c) under load: 8 producers x 8 consumers x 100,000
 * messages with checksums, threads of one process, and the chaos test:
 * producers and consumers SIGKILLed at random moments while others go on,
 * then every committed message consumed exactly once (but for the
 * documented loss of one message per killed consumer), nothing hanging, and
 * the Lock they share recovered with -EOWNERDEAD wherever its holder died.
 *
 * Children report through exit codes and shared memory
 * (proc_shared_alloc); timeouts only bound hangs. Messages and the queue
 * context: tests/support/queue_fixture.h.
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
#include "queue_fixture.h"

/* ------------------------------------------------------------ 8 x 8 x 100k */

#define STRESS_P 8

#define STRESS_C 8

#define STRESS_N (IT_SANITIZED ? 20000 : 100000)

#define STRESS_MAXLEN (sizeof(struct qmsg) + 48)

static int stress_producer_main(void *arg)
{
    struct qctx *c = arg;
    unsigned char buf[STRESS_MAXLEN];
    uint64_t s = qt_seed();
    for (uint32_t seq = 0; seq < STRESS_N; seq++) {
        size_t len = sizeof(struct qmsg) + qt_rnd(&s) % 49;
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

/* Puts one stop message per consumer on q and asserts that each of
 * the n consumers then ends with 0. */
static void stop_consumers(proc_queue_t *q, proc_t **cons, int n)
{
    unsigned char stop[sizeof(struct qmsg)];
    qmsg_fill((struct qmsg *)stop, sizeof stop, STOP_SRC, 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(proc_queue_put(q, stop, sizeof stop, IT_BOUND_MS), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(it_finish(cons[i]), 0);
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
    stop_consumers(c.q, cons, STRESS_C);
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

#define CHAOS_MAX_INC 8192 /* producer incarnations */

#define CHAOS_PER_INC 4096 /* messages per incarnation; then it exits and is replaced */

#define CHAOS_MAXLEN 2048 /* some messages are large, so kills land inside copies */

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
    for (uint32_t spin = qt_rnd(s) % 2000; spin > 0; spin--)
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
    uint64_t s = qt_seed();
    for (uint32_t seq = 0; seq < CHAOS_PER_INC && !atomic_load(&c->sh->stop); seq++) {
        size_t len = sizeof(struct qmsg) + (qt_rnd(&s) % 8 == 0
                                                ? qt_rnd(&s) % (CHAOS_MAXLEN - sizeof(struct qmsg))
                                                : qt_rnd(&s) % 64);
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
    uint64_t s = qt_seed();
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

    uint64_t s = qt_seed();
    int64_t start = tu_now_ms(), end = start + chaos_seconds() * 1000;
    bool hog_alive = true;
    while (tu_now_ms() < end) {
        /* A random pause, spent waiting on a random producer (replaced if it finished). */
        int slot = (int)(qt_rnd(&s) % CHAOS_PRODUCERS);
        if (proc_join(prod[slot], (int)(qt_rnd(&s) % 15)) == 0) {
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
        uint32_t pick = qt_rnd(&s) % 9;
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
    stop_consumers(c.q, cons, CHAOS_CONSUMERS);
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
        cmocka_unit_test(eight_producers_eight_consumers),
        cmocka_unit_test(threads_of_one_process),
        cmocka_unit_test(chaos_kills_producers_and_consumers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
