/* SPDX-License-Identifier: MIT */
/*
 * The libuv contenders: uv_spawn of /bin/true (scenario 2) and of k
 * `head -c1` children on the release pipe (scenario 3). Compiled only when
 * CMake finds libuv (PROC_BENCH_HAVE_LIBUV).
 */
#include "libuv.h"

#include "harness.h"
#include "live.h"
#include "mass.h"
#include "scenarios.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

/*
 * libuv takes SIGCHLD over while a loop with processes exists and sets it to
 * SIG_DFL when the loop closes. Each libuv batch gets its own loop and the
 * disposition (libproc's handler) is put back afterwards, so the other
 * contenders always run in the setting of a normal libproc program.
 */
struct uv_batch {
    uv_loop_t loop;
    struct sigaction saved_chld;
    size_t exited;
    size_t bad;
    pid_t *pids; /* entries zeroed when libuv has reaped them */
};

struct uv_child {
    uv_process_t handle;
    struct uv_batch *batch;
    size_t index;
};

static void uv_batch_open(struct uv_batch *b)
{
    memset(b, 0, sizeof *b);
    if (sigaction(SIGCHLD, NULL, &b->saved_chld) < 0)
        die("sigaction: %s", strerror(errno));
    int r = uv_loop_init(&b->loop);
    if (r < 0)
        die("uv_loop_init: %s", uv_strerror(r));
}

static void uv_batch_close(struct uv_batch *b)
{
    int r = uv_loop_close(&b->loop);
    if (r < 0)
        die("uv_loop_close: %s", uv_strerror(r));
    if (sigaction(SIGCHLD, &b->saved_chld, NULL) < 0)
        die("sigaction: %s", strerror(errno));
}

static void uv_on_exit(uv_process_t *h, int64_t status, int term_signal)
{
    struct uv_child *c = h->data;
    if (status != 0 || term_signal != 0)
        c->batch->bad++;
    c->batch->exited++;
    if (c->batch->pids)
        c->batch->pids[c->index] = 0;
    uv_close((uv_handle_t *)h, NULL);
}

/* Spawns one child into the batch; its pid is recorded in b->pids[index]. */
static void uv_spawn_child(struct uv_batch *b, struct uv_child *c, size_t index,
                           uv_process_options_t *o)
{
    c->batch = b;
    c->index = index;
    c->handle.data = c;
    int r = uv_spawn(&b->loop, &c->handle, o);
    if (r < 0) {
        uv_close((uv_handle_t *)&c->handle, NULL);
        uv_run(&b->loop, UV_RUN_NOWAIT);
        die("uv_spawn(%s): %s", o->file, uv_strerror(r));
    }
    b->pids[index] = c->handle.pid;
}

double s2_libuv(void *ctx, long ops)
{
    (void)ctx;
    struct uv_batch b;
    struct uv_child child;
    pid_t slot = 0;
    uv_batch_open(&b);
    b.pids = &slot;
    live.pids = &slot;
    live.npids = 1;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = true_path;
    o.args = true_argv;
    o.exit_cb = uv_on_exit;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        uv_spawn_child(&b, &child, 0, &o);
        uv_run(&b.loop, UV_RUN_DEFAULT);
        if (slot != 0)
            die("uv_run returned before the child's exit callback");
    }
    uint64_t t1 = now_ns();
    live_reset();
    if (b.bad)
        die("libuv: %zu children failed", b.bad);
    uv_batch_close(&b);
    return (double)(t1 - t0) / (double)ops;
}

double s3_libuv(void *ctx, long k)
{
    struct mass m;
    struct uv_batch b;
    struct uv_child *kids = xcalloc((size_t)k, sizeof *kids);
    pid_t *pids = xcalloc((size_t)k, sizeof *pids);
    live.pids = pids;
    live.npids = (size_t)k;
    mass_open(&m);
    uv_batch_open(&b);
    b.pids = pids;
    uv_stdio_container_t stdio[1];
    stdio[0].flags = UV_INHERIT_FD;
    stdio[0].data.fd = m.rfd;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = head_path;
    o.args = head_argv;
    o.exit_cb = uv_on_exit;
    o.stdio = stdio;
    o.stdio_count = 1;
    uint64_t ts = now_ns();
    for (long i = 0; i < k; i++)
        uv_spawn_child(&b, &kids[i], (size_t)i, &o);
    s3_record_start(ctx, ts, pids, k);
    mass_close_read(&m);
    uint64_t t0 = mass_release(&m);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uint64_t t1 = now_ns();
    if (b.exited != (size_t)k)
        die("libuv: %zu of %ld exit callbacks", b.exited, k);
    if (b.bad)
        die("libuv: %zu children failed", b.bad);
    live_reset();
    uv_batch_close(&b);
    free(kids);
    free(pids);
    return (double)(t1 - t0) / (double)k;
}

const char *libuv_version(void)
{
    return uv_version_string();
}
