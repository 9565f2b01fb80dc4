/* SPDX-License-Identifier: MIT */
/*
 * Ping-pong over a duplex Pipe.
 *
 * The child answers every "ping N" with "pong N" until it sees end of file.
 * The parent plays five visible rounds, then times 10,000 round trips, then
 * closes its end: the child's proc_conn_recv() returns -EPIPE and it exits.
 *
 * As with Python's Pipe, each process closes the end it does not use;
 * otherwise end of file never arrives (the child's inherited copy of the
 * parent's end would keep the pipe open).
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/ipc.h>
#include <libproc/proc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#define ROUNDS 10000

static proc_conn_t *parent_end, *child_end;

static int ponger(void *arg)
{
    (void)arg;
    proc_conn_close(parent_end); /* not ours: else no EOF */
    char buf[64];
    ssize_t n;
    while ((n = proc_conn_recv(child_end, buf, sizeof buf, PROC_WAIT_FOREVER)) >= 0) {
        if (n >= 4 && memcmp(buf, "ping", 4) == 0)
            memcpy(buf, "pong", 4);
        if (proc_conn_send(child_end, buf, (size_t)n) < 0)
            return 1;
    }
    return n == -EPIPE ? 0 : 2; /* -EPIPE: the parent closed its end */
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "pipe_ping_pong: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(void)
{
    int rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if ((rc = proc_pipe(&parent_end, &child_end, true)) < 0)
        return fail("proc_pipe", rc);
    proc_t *p = proc_new(ponger, NULL);
    if (!p)
        return fail("proc_new", -errno);
    if ((rc = proc_start(p)) < 0)
        return fail("proc_start", rc);
    proc_conn_close(child_end); /* the child's end lives in the child now */

    char msg[64], reply[64];
    for (int i = 1; i <= 5; i++) {
        int len = snprintf(msg, sizeof msg, "ping %d", i);
        if ((rc = proc_conn_send(parent_end, msg, (size_t)len)) < 0)
            return fail("proc_conn_send", rc);
        ssize_t n = proc_conn_recv(parent_end, reply, sizeof reply, 5000);
        if (n < 0)
            return fail("proc_conn_recv", (int)n);
        printf("sent \"%s\", got \"%.*s\"\n", msg, (int)n, reply);
    }

    double t0 = now_us();
    for (int i = 0; i < ROUNDS; i++) {
        if ((rc = proc_conn_send(parent_end, "ping", 4)) < 0)
            return fail("proc_conn_send", rc);
        ssize_t n = proc_conn_recv(parent_end, reply, sizeof reply, 5000);
        if (n != 4 || memcmp(reply, "pong", 4) != 0)
            return fail("proc_conn_recv", n < 0 ? (int)n : -EPROTO);
    }
    printf("%d round trips, %.1f us each\n", ROUNDS, (now_us() - t0) / ROUNDS);

    proc_conn_close(parent_end); /* EOF for the child */
    if ((rc = proc_join(p, 5000)) < 0)
        return fail("proc_join", rc);
    printf("child exited with %d\n", proc_exitcode(p));
    rc = proc_exitcode(p);
    proc_close(p);
    return rc == 0 ? 0 : 1;
}
