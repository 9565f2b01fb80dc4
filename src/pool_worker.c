/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: the parent's view of its workers. Handing one a chunk,
 * reading its replies, settling its chunk when it dies, killing them all
 * (pool_spawn.c starts them).
 */
#include "pool_fast.h"
#include "pool_job.h"
#include "pool_stream.h"
#include "pool_worker.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* An arena grown past this is shrunk again when a smaller chunk comes. */
#define POOL_ARENA_KEEP ((size_t)16 << 20)
/* Input bytes of a stream's batch (a single bigger item goes alone). */
#define POOL_CHUNK_IN ((size_t)4 << 20)
/* Where the return values start in the arena; the header is before. */
#define POOL_ARENA_HDR ((size_t)64)

/* ------------------------------------------------------------------- workers */

static struct proc__arena_hdr *arena_hdr(const struct proc__worker *w)
{
    return (struct proc__arena_hdr *)(void *)w->arena;
}

/*
 * Ends w's chunk. Items [0, done) returned: their values and outputs are
 * taken. If blame is not 0, item done (if any) fails with blame. The items
 * after that are put back on the queue when rest_err is 0, else fail with
 * rest_err. The job may be settled (and freed) here.
 */
static void batch_finish(struct proc_pool *pool, struct proc__worker *w, uint64_t done, int blame,
                         int rest_err);

static void chunk_finish(struct proc_pool *pool, struct proc__worker *w, uint64_t done, int blame,
                         int rest_err)
{
    if (w->job->stream) {
        batch_finish(pool, w, done, blame, rest_err);
        return;
    }
    struct proc__job *j = w->job;
    size_t start = w->start, count = w->count;
    w->job = NULL;
    w->state = PROC__W_IDLE;
    if (done > count)
        done = count;
    size_t settled = (size_t)done;
    if (done > 0) {
        const int *rc = (const int *)(void *)(w->arena + w->rc_off);
        for (size_t i = 0; i < done; i++)
            if (rc[i] != 0) {
                proc__job_note_fail(j, start + i, rc[i]);
                break;
            }
        if (j->out_size)
            memcpy(j->out + start * j->out_size, w->arena + w->out_off, done * j->out_size);
        if (j->n == 1)
            j->ran = true;
    }
    size_t next = done;
    if (blame && next < count) {
        proc__job_note_fail(j, start + next, blame);
        next++;
        settled++;
    }
    if (next < count) {
        if (rest_err == 0) {
            struct proc__range *r = malloc(sizeof *r);
            if (r) {
                r->start = start + next;
                r->count = count - next;
                r->next = j->retry;
                j->retry = r;
                if (!j->queued)
                    proc__queue_push_front(pool, j);
            } else {
                rest_err = -ENOMEM;
            }
        }
        if (rest_err) {
            proc__job_note_fail(j, start + next, rest_err);
            settled += count - next;
        }
    }
    j->remaining -= settled;
    if (j->remaining == 0)
        proc__job_settle(j);
}

/* An output file grown past this is cut to nothing after its batch. */
#define POOL_OUT_KEEP ((size_t)16 << 20)

/* The parent's mapping of w's output file covers its first len bytes: false if it cannot. */
static bool out_map(struct proc__worker *w, size_t len)
{
    if (len <= w->out_len)
        return true;
    void *m = proc__map_grow(w->out, w->out_len, len, w->outfd, PROT_READ);
    if (m == MAP_FAILED)
        return false;
    w->out = m;
    w->out_len = len;
    proc__dontfork(m, len);
    return true;
}

/* Ends w's stream batch as chunk_finish() does a chunk: the outputs of items
 * [0, done) become results, item done fails with blame, the rest go back to
 * the stream or fail with rest_err. */
static void batch_finish(struct proc_pool *pool, struct proc__worker *w, uint64_t done, int blame,
                         int rest_err)
{
    struct proc__job *j = w->job;
    uint64_t size = atomic_load_explicit(&arena_hdr(w)->out_size, memory_order_acquire);
    w->job = NULL;
    w->state = PROC__W_IDLE;
    if (done > w->count)
        done = w->count;
    const unsigned char *out = NULL;
    size_t out_len = 0;
    if (done > 0 && size <= SIZE_MAX && out_map(w, (size_t)size)) {
        out = w->out;
        out_len = (size_t)size;
    }
    const struct proc__vitem *table = (const void *)(w->arena + w->rc_off);
    struct proc__sitem *batch = w->batch;
    w->batch = NULL;
    proc__stream_finish(j->stream, batch, w->count, table, out, out_len, (size_t)done, blame,
                        rest_err, proc__now_ns() - w->sent_ns, (size_t)pool->nworkers);
    w->out_size = (size_t)size;
    if (w->out_size > POOL_OUT_KEEP && ftruncate(w->outfd, 0) == 0) {
        munmap(w->out, w->out_len);
        w->out = NULL;
        w->out_len = w->out_size = 0;
    }
}

/* Makes w's arena at least need bytes long (and shrinks a huge one). */
static int arena_fit(struct proc__worker *w, size_t need)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    if (need > SIZE_MAX - pg)
        return -ENOMEM;
    size_t size = proc__align_up(need, pg);
    if (size > w->arena_size) {
        if (ftruncate(w->memfd, (off_t)size) < 0)
            return -errno;
        void *a = mremap(w->arena, w->arena_size, size, MREMAP_MAYMOVE);
        if (a == MAP_FAILED) {
            int e = errno;
            if (ftruncate(w->memfd, (off_t)w->arena_size) < 0) {
                /* the file stays longer than the mapping: harmless */
            }
            return -e;
        }
        w->arena = a;
        w->arena_size = size;
        proc__dontfork(a, size);
    } else if (w->arena_size > POOL_ARENA_KEEP && size <= POOL_ARENA_KEEP) {
        if (size < PROC__POOL_ARENA_INIT)
            size = PROC__POOL_ARENA_INIT;
        void *a = mremap(w->arena, w->arena_size, size, 0);
        if (a != MAP_FAILED) {
            w->arena = a;
            w->arena_size = size;
            /* frees the pages; the worker's longer mapping is never touched past it */
            if (ftruncate(w->memfd, (off_t)size) < 0) {
                /* the pages stay allocated until the worker ends */
            }
        }
    }
    return 0;
}

/* Before a chunk or a batch goes to w: no item begun, a new seq for its reply. */
static void arena_begin(struct proc_pool *pool, struct proc__worker *w)
{
    struct proc__arena_hdr *hdr = arena_hdr(w);
    atomic_store_explicit(&hdr->busy, 0, memory_order_relaxed);
    atomic_store_explicit(&hdr->done, 0, memory_order_relaxed);
    w->seq = ++pool->seq;
}

/* Sends a task message; a worker that cannot take it is killed (its death
 * puts the chunk back): at most one message is ever queued, so the socket
 * is never full. */
static void worker_send(struct proc__worker *w, const void *m, size_t len)
{
    ssize_t r;
    do {
        r = send(w->fd, m, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    if (r != (ssize_t)len)
        proc_kill(w->proc);
}

/* Hands items [start, start + cnt) of j to the idle worker w. */
void proc__worker_send_chunk(struct proc_pool *pool, struct proc__worker *w, struct proc__job *j,
                             size_t start, size_t cnt)
{
    w->job = j;
    w->start = start;
    w->count = cnt;
    w->state = PROC__W_BUSY;
    if (w->budget > 0)
        w->budget -= (long)cnt;

    /* header, return values, inputs, outputs; each part 64-byte aligned */
    size_t in_bytes = 0, out_bytes = 0, in_off = 0, out_off = 0, need = 0;
    size_t rc_off = POOL_ARENA_HDR;
    bool ok = proc__mul_ok(cnt, j->in_size, &in_bytes) &&
              proc__mul_ok(cnt, j->out_size, &out_bytes) &&
              proc__add_ok(rc_off, cnt * sizeof(int), &in_off) && in_off < SIZE_MAX - 64;
    in_off = proc__align_up(in_off, 64);
    ok = ok && proc__add_ok(in_off, in_bytes, &out_off) && out_off < SIZE_MAX - 64;
    out_off = proc__align_up(out_off, 64);
    ok = ok && proc__add_ok(out_off, out_bytes, &need);
    int rc = ok ? arena_fit(w, need) : -ENOMEM;
    if (rc < 0) {
        chunk_finish(pool, w, 0, 0, rc);
        return;
    }
    if (in_bytes)
        memcpy(w->arena + in_off, j->in + start * j->in_size, in_bytes);
    arena_begin(pool, w);
    w->rc_off = rc_off;
    w->out_off = out_off;
    struct proc__msg_task m = {
        .type = PROC__MSG_TASK,
        .seq = w->seq,
        .fn = j->fn,
        .count = cnt,
        .in_size = j->in_size,
        .out_size = j->out_size,
        .rc_off = rc_off,
        .in_off = in_off,
        .out_off = out_off,
        .arena_size = w->arena_size,
    };
    worker_send(w, &m, sizeof m);
}

/* Hands a batch of stream j's pending items (at most max) to the idle worker w. */
void proc__worker_send_batch(struct proc_pool *pool, struct proc__worker *w, struct proc__job *j,
                             size_t max)
{
    struct proc__sitem *batch = NULL;
    size_t in_bytes = 0;
    size_t cnt = proc__stream_take(j->stream, max, POOL_CHUNK_IN, &batch, &in_bytes);
    if (cnt == 0)
        return;
    w->job = j;
    w->batch = batch;
    w->sent_ns = proc__now_ns();
    w->count = cnt;
    w->start = 0;
    w->state = PROC__W_BUSY;
    if (w->budget > 0)
        w->budget -= (long)cnt;
    /* header, item table, inputs (each 16-byte aligned) */
    size_t table_off = POOL_ARENA_HDR, in_off = 0, need = 0;
    bool ok = proc__mul_ok(cnt, sizeof(struct proc__vitem), &in_off) &&
              proc__add_ok(in_off, table_off, &in_off) &&
              proc__add_ok(in_off, in_bytes + 16 * cnt, &need);
    int rc = ok ? arena_fit(w, need) : -ENOMEM;
    if (rc < 0) {
        chunk_finish(pool, w, 0, 0, rc);
        return;
    }
    struct proc__vitem *table = (struct proc__vitem *)(void *)(w->arena + table_off);
    size_t off = proc__align_up(in_off, 16), i = 0;
    for (const struct proc__sitem *it = batch; it; it = it->next, i++) {
        table[i] = (struct proc__vitem){.in_off = off, .in_len = it->len};
        memcpy(w->arena + off, it->in, it->len);
        off = proc__align_up(off + it->len, 16);
    }
    arena_begin(pool, w);
    atomic_store_explicit(&arena_hdr(w)->out_size, w->out_size, memory_order_relaxed);
    w->rc_off = table_off; /* a batch's table */
    struct proc__msg_vtask m = {
        .type = PROC__MSG_VTASK,
        .seq = w->seq,
        .fn = j->stream_fn,
        .count = cnt,
        .table_off = table_off,
        .arena_size = w->arena_size,
        .out_size = w->out_size,
    };
    worker_send(w, &m, sizeof m);
}

void proc__worker_free(struct proc__worker *w)
{
    if (w->out)
        munmap(w->out, w->out_len);
    if (w->proc) {
        proc_join(w->proc, PROC_WAIT_FOREVER);
        proc_close(w->proc);
    }
    if (w->fd >= 0)
        close(w->fd);
    if (w->memfd >= 0)
        close(w->memfd);
    if (w->outfd >= 0)
        close(w->outfd);
    if (w->arena)
        munmap(w->arena, w->arena_size);
    free(w);
}

/* why: PROC__LOST_CRASH or PROC__LOST_KILLED, for a fast job that borrowed w */
static void worker_remove(struct proc_pool *pool, struct proc__worker *w, int why)
{
    proc__fast_forget(pool, w, why);
    for (size_t i = 0; i < pool->nw; i++)
        if (pool->w[i] == w) {
            pool->w[i] = pool->w[--pool->nw];
            break;
        }
    proc__worker_free(w);
}

/* Takes the messages w sent (also after its death: they stay queued). */
void proc__worker_read(struct proc_pool *pool, struct proc__worker *w)
{
    while (!w->eof) {
        union proc__msg u;
        ssize_t r = recv(w->fd, &u, sizeof u, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r < (ssize_t)sizeof u.type || (size_t)r != proc__msg_size(u.type) ||
            r != (ssize_t)sizeof u.reply) {
            w->eof = true; /* end of file, error, or garbage: wait for the sentinel */
            return;
        }
        const struct proc__msg_reply *m = &u.reply;
        switch (m->type) {
        case PROC__MSG_READY:
            if (w->state == PROC__W_INIT) {
                w->state = PROC__W_IDLE;
                pool->init_deaths = 0;
            }
            break;
        case PROC__MSG_RESULT:
        case PROC__MSG_ERROR:
            if (w->state == PROC__W_BUSY && m->seq == w->seq) {
                if (m->type == PROC__MSG_RESULT)
                    chunk_finish(pool, w, w->count, 0, 0);
                else
                    chunk_finish(pool, w, 0, 0, m->err > 0 ? -m->err : -EIO);
                if (w->budget == 0 || (m->flags & PROC__REPLY_LEAVING))
                    w->leaving = true; /* exits after this result */
            }
            break;
        default:
            break;
        }
    }
}

/* w's process ended: settle its chunk, reap it, forget it. */
void proc__worker_exited(struct proc_pool *pool, struct proc__worker *w)
{
    proc__worker_read(pool, w);
    if (w->state == PROC__W_INIT && !w->told) {
        if (++pool->init_deaths >= pool->max_init_deaths)
            pool->broken = true;
    } else if (w->state == PROC__W_BUSY) {
        struct proc__arena_hdr *hdr = arena_hdr(w);
        uint64_t done = atomic_load_explicit(&hdr->done, memory_order_acquire);
        uint64_t busy = atomic_load_explicit(&hdr->busy, memory_order_acquire);
        int blame = busy > done ? -ECHILD : 0;
        /* Killed for an overdue item: that item fails if it had not
         * returned; one begun after it returned was not at fault. */
        if (w->watch.overdue)
            blame = blame && done < w->watch.overdue ? -ETIMEDOUT : 0;
        chunk_finish(pool, w, done, blame, 0);
    }
    worker_remove(pool, w, PROC__LOST_CRASH);
}

int proc__workers_watch(struct proc_pool *pool)
{
    if (pool->task_timeout_ms == 0)
        return -1;
    int64_t next = INT64_MAX, timeout_ns = (int64_t)pool->task_timeout_ms * 1000000;
    for (size_t i = 0; i < pool->nw; i++) {
        struct proc__worker *w = pool->w[i];
        if (w->state != PROC__W_BUSY || w->watch.overdue)
            continue;
        struct proc__arena_hdr *hdr = arena_hdr(w);
        uint64_t busy = atomic_load_explicit(&hdr->busy, memory_order_acquire);
        uint64_t done = atomic_load_explicit(&hdr->done, memory_order_acquire);
        int64_t now = proc__now_ns();
        if (proc__watch_overdue(&w->watch, w->seq, busy, done, now, timeout_ns, &next)) {
            busy = atomic_load_explicit(&hdr->busy, memory_order_acquire);
            done = atomic_load_explicit(&hdr->done, memory_order_acquire);
            if (!proc__watch_still(&w->watch, w->seq, busy, done))
                continue; /* it returned meanwhile: the next look starts afresh */
            proc__watch_delay(pool);
            /* its death settles the chunk (proc__worker_exited) */
            if (proc_kill(w->proc) == 0)
                w->watch.overdue = busy;
        }
    }
    return proc__ms_until(next, proc__now_ns());
}

/* Kills every worker and reaps it. Chunks they ran: finished items are
 * kept, the others fail with err. */
void proc__workers_kill(struct proc_pool *pool, int err)
{
    for (size_t i = 0; i < pool->nw; i++)
        proc_kill(pool->w[i]->proc);
    while (pool->nw > 0) {
        struct proc__worker *w = pool->w[pool->nw - 1];
        proc_join(w->proc, PROC_WAIT_FOREVER);
        proc__worker_read(pool, w);
        if (w->state == PROC__W_BUSY) {
            struct proc__arena_hdr *hdr = arena_hdr(w);
            uint64_t done = atomic_load_explicit(&hdr->done, memory_order_acquire);
            chunk_finish(pool, w, done, 0, err);
        }
        /* one that had died on its own before our SIGKILL crashed */
        int code = proc_exitcode(w->proc);
        bool crashed = code != -SIGKILL && code != PROC_EXITCODE_UNKNOWN;
        worker_remove(pool, w, crashed ? PROC__LOST_CRASH : PROC__LOST_KILLED);
    }
}
