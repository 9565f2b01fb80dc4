/* SPDX-License-Identifier: MIT */
/*
 * Producers and consumers over a JoinableQueue.
 *
 * Two producers each make five buns and put them on a bounded queue; two
 * daemonic consumers take buns off it forever and mark each one done with
 * proc_queue_task_done(). The main process joins the producers, then waits
 * with proc_queue_join() until every bun has been eaten, and exits: libproc
 * terminates the daemonic consumers at exit, as Python does.
 *
 * The queue is created before the children start, so they all share it. A
 * shared counter (proc_shared_alloc + a C11 atomic) lets main check the sum.
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/ipc.h>
#include <libproc/proc.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define PRODUCERS 2
#define CONSUMERS 2
#define BUNS 5
#define MSG_MAX 64

struct shop {
    proc_queue_t *queue;
    _Atomic int *eaten; /* in shared memory */
};

static struct shop shop;

static int producer(void *arg)
{
    const char *name = arg;
    for (int i = 1; i <= BUNS; i++) {
        char bun[MSG_MAX];
        int len = snprintf(bun, sizeof bun, "bun %d from %s", i, name);
        int rc = proc_queue_put(shop.queue, bun, (size_t)len, PROC_WAIT_FOREVER);
        if (rc < 0) {
            fprintf(stderr, "%s: put: %s\n", name, strerror(-rc));
            return 1;
        }
        printf("%s made %.*s\n", name, len, bun);
    }
    return 0;
}

static int consumer(void *arg)
{
    const char *name = arg;
    for (;;) {
        char bun[MSG_MAX];
        ssize_t len = proc_queue_get(shop.queue, bun, sizeof bun, PROC_WAIT_FOREVER);
        if (len < 0) {
            fprintf(stderr, "%s: get: %s\n", name, strerror((int)-len));
            return 1;
        }
        printf("%s ate %.*s (pid %ld)\n", name, (int)len, bun, (long)getpid());
        atomic_fetch_add(shop.eaten, 1);
        proc_queue_task_done(shop.queue);
    }
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "queue_producer_consumer: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

int main(void)
{
    static const char *makers[PRODUCERS] = {"baker-1", "baker-2"};
    static const char *eaters[CONSUMERS] = {"eater-1", "eater-2"};
    proc_t *prod[PRODUCERS], *cons[CONSUMERS];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    shop.queue = proc_queue_new(3, MSG_MAX); /* at most 3 buns wait on the counter */
    shop.eaten = proc_shared_alloc(sizeof *shop.eaten);
    if (!shop.queue || !shop.eaten)
        return fail("allocation", -errno);

    for (int i = 0; i < CONSUMERS; i++) {
        cons[i] = proc_new(consumer, (void *)eaters[i]);
        if (!cons[i])
            return fail("proc_new", -errno);
        if ((rc = proc_set_daemon(cons[i], true)) < 0 || (rc = proc_start(cons[i])) < 0)
            return fail("starting a consumer", rc);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        prod[i] = proc_new(producer, (void *)makers[i]);
        if (!prod[i])
            return fail("proc_new", -errno);
        if ((rc = proc_start(prod[i])) < 0)
            return fail("starting a producer", rc);
    }

    for (int i = 0; i < PRODUCERS; i++) {
        if ((rc = proc_join(prod[i], PROC_WAIT_FOREVER)) < 0)
            return fail("proc_join", rc);
        if (proc_exitcode(prod[i]) != 0)
            return fail("a producer", -EIO);
        proc_close(prod[i]);
    }
    /* q.join(): every bun put has been marked done by a consumer. */
    if ((rc = proc_queue_join(shop.queue, PROC_WAIT_FOREVER)) < 0)
        return fail("proc_queue_join", rc);

    int eaten = atomic_load(shop.eaten);
    printf("main: all %d buns eaten, queue size %zu\n", eaten, proc_queue_size(shop.queue));
    if (eaten != PRODUCERS * BUNS)
        return fail("counting buns", -EIO);
    /* Returning from main terminates the daemonic consumers (blocked in get). */
    return 0;
}
