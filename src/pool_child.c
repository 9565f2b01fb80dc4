/* SPDX-License-Identifier: MIT */
/* Worker pools: the loop that runs in every worker process. */
#include "clock.h"
#include "pool_proto.h"
#include "sys.h"
#include "thread.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_reply(int fd, uint32_t type, int err, uint64_t seq, uint32_t flags)
{
    struct proc__msg_reply m = {.type = type, .err = err, .seq = seq, .flags = flags};
    for (;;) {
        ssize_t r = send(fd, &m, sizeof m, MSG_NOSIGNAL);
        if (r == (ssize_t)sizeof m)
            return 0;
        if (r < 0 && errno == EINTR)
            continue;
        return -1;
    }
}

/* 1 for a whole message of a type the parent sends, 0 for end of file or anything else. */
static int recv_msg(int fd, union proc__msg *m)
{
    for (;;) {
        ssize_t r = recv(fd, m, sizeof *m, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < (ssize_t)sizeof m->type || (size_t)r != proc__msg_size(m->type))
            return 0;
        return m->type == PROC__MSG_TASK || m->type == PROC__MSG_FAST || m->type == PROC__MSG_VTASK;
    }
}

static void run_chunk(unsigned char *arena, const struct proc__msg_task *m)
{
    struct proc__arena_hdr *hdr = (struct proc__arena_hdr *)arena;
    int *rc = (int *)(arena + m->rc_off);
    const unsigned char *in = arena + m->in_off;
    unsigned char *out = arena + m->out_off;
    if (m->out_size)
        memset(out, 0, m->count * m->out_size); /* every output starts zeroed */
    for (uint64_t i = 0; i < m->count; i++) {
        void *o = m->out_size ? out + i * m->out_size : NULL;
        atomic_store_explicit(&hdr->busy, i + 1, memory_order_release);
        rc[i] = m->fn(m->in_size ? in + i * m->in_size : NULL, o);
        atomic_store_explicit(&hdr->done, i + 1, memory_order_release);
    }
}

/* How long a worker spins for inputs still being copied in: a whole job's
 * inputs (at most 4 MiB) are copied in well under a millisecond, and a
 * caller that takes longer was probably descheduled. Bounds the CPU burnt,
 * not the wait. */
#define POOL_COPY_SPIN_NS 50000

/* Until the caller has copied the inputs of items below need: it copies at
 * memory speed, so spin a little (yielding: it may need this CPU), then
 * sleep (it may be stopped, or descheduled for a while). */
static void wait_copied(struct proc__fast_region *f, uint64_t need)
{
    int64_t spin_end = proc__now_ns() + POOL_COPY_SPIN_NS;
    while (atomic_load_explicit(&f->copied, memory_order_acquire) < need) {
        if (proc__now_ns() < spin_end) {
            proc__cpu_relax();
            sched_yield(); /* the caller may be waiting for this CPU */
            continue;
        }
        atomic_store_explicit(&f->copy_waiter, 1, memory_order_seq_cst);
        uint32_t gen = atomic_load_explicit(&f->copied_gen, memory_order_seq_cst);
        if (atomic_load_explicit(&f->copied, memory_order_seq_cst) >= need)
            break;
        struct timespec tick; /* a bound, not a clock */
        proc__mono_after(&tick, 100000000L);
        proc__sys_futex_wait(&f->copied_gen, gen, &tick, true);
    }
}

/*
 * Claims and runs chunks of the fast job until none is left. The region's
 * length was checked against the job's offsets by the caller that wrote them;
 * the worker checks again, as a bad job must not crash it.
 */
static void run_fast(unsigned char *region, size_t len, const struct proc__msg_fast *m)
{
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)region;
    struct proc__fast_slot *s = &f->slot[m->slot];
    uint64_t n = f->n, chunk = f->chunk, isz = f->in_size, osz = f->out_size;
    if (chunk == 0 || f->state_off + (n + chunk - 1) / chunk > len || f->in_off + n * isz > len ||
        f->out_off + n * osz > len)
        return;
    _Atomic unsigned char *state = (_Atomic unsigned char *)(region + f->state_off);
    const unsigned char *in = region + f->in_off;
    unsigned char *out = region + f->out_off;
    proc_task_fn *fn = f->fn;
    for (;;) {
        uint64_t k = atomic_fetch_add_explicit(&f->next, chunk, memory_order_relaxed);
        if (k >= n)
            return;
        uint64_t cnt = n - k < chunk ? n - k : chunk;
        wait_copied(f, k + cnt);
        atomic_store_explicit(&s->busy, 0, memory_order_relaxed);
        /* release: a watcher that reads this 0 then reads busy 0 or later */
        atomic_store_explicit(&s->done, 0, memory_order_release);
        atomic_store_explicit(&s->start, k, memory_order_release);
        if (osz)
            memset(out + k * osz, 0, cnt * osz); /* every output starts zeroed */
        for (uint64_t i = 0; i < cnt; i++) {
            uint64_t x = k + i;
            atomic_store_explicit(&s->busy, i + 1, memory_order_release);
            int rc = fn(isz ? in + x * isz : NULL, osz ? out + x * osz : NULL);
            if (rc != 0 && atomic_load_explicit(&s->fail, memory_order_relaxed) == 0) {
                s->fail_rc = rc;
                atomic_store_explicit(&s->fail, x + 1, memory_order_release);
            }
            atomic_store_explicit(&s->done, i + 1, memory_order_release);
        }
        atomic_store_explicit(&state[k / chunk], 1, memory_order_release);
    }
}

/*
 * Says the fast job seq is over for this worker and wakes the caller if it
 * sleeps. The count in f->active only changes while it is tagged with seq.
 */
static void fast_leave(unsigned char *region, uint64_t slot, uint64_t seq)
{
    struct proc__fast_region *f = (struct proc__fast_region *)(void *)region;
    uint64_t v = atomic_load_explicit(&f->active, memory_order_relaxed);
    while ((uint32_t)(v >> 32) == (uint32_t)seq && (uint32_t)v > 0 &&
           !atomic_compare_exchange_weak_explicit(&f->active, &v, v - 1, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
    }
    atomic_store_explicit(&f->slot[slot].left, seq, memory_order_seq_cst);
    atomic_fetch_add_explicit(&f->ring, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&f->waiting, memory_order_seq_cst))
        proc__sys_futex_wake(&f->ring, INT_MAX, true);
}

/* What a worker keeps between messages. */
struct child {
    int fd, memfd, fastfd, outfd;
    unsigned char *out; /* the output file, mapped (out_len bytes) */
    size_t out_len;
    long left;      /* task calls it may still make; <= 0 unlimited */
    size_t max_rss; /* leave once a chunk left more anonymous memory resident; 0: never */
    unsigned char *arena, *fast;
    size_t arena_len, fast_len;
};

/* Maps len bytes of fd in place of *map (of *mapped bytes); false if it cannot. */
static bool remap(int fd, unsigned char **map, size_t *mapped, size_t len)
{
    if (*map)
        munmap(*map, *mapped);
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    *map = m == MAP_FAILED ? NULL : m;
    *mapped = *map ? len : 0;
    return *map != NULL;
}

/* A fast job; false when the worker must leave (our death tells the caller). */
static bool handle_fast(struct child *c, const struct proc__msg_fast *m)
{
    if (m->region_size > c->fast_len && !remap(c->fastfd, &c->fast, &c->fast_len, m->region_size))
        return false;
    if (c->fast_len < PROC__FAST_SLOTS ||
        m->slot >= (c->fast_len - PROC__FAST_SLOTS) / sizeof(struct proc__fast_slot))
        return false;
    run_fast(c->fast, c->fast_len, m);
    fast_leave(c->fast, m->slot, m->seq);
    return true;
}

/* ------------------------------------------------------------ stream batches */

/* Where a stream's task writes its output: the item's bytes are appended to
 * the worker's output file. */
struct proc_reply {
    struct child *c;
    struct proc__arena_hdr *hdr;
    uint64_t used; /* bytes of the output file this batch wrote */
    uint64_t cap;  /* the output file's length */
    uint64_t len;  /* the running item's output so far */
};

/* The running task's reply: NULL between tasks and in any process that is
 * not a worker, so that proc_reply_write() elsewhere is -EINVAL. */
static struct proc_reply *running_reply;

/* The output file grows to hold need bytes: doubling, whole pages. */
static int out_grow(struct proc_reply *r, uint64_t need)
{
    struct child *c = r->c;
    uint64_t cap = r->cap < 65536 ? 65536 : r->cap;
    while (cap < need && cap <= UINT64_MAX / 2)
        cap *= 2;
    if (cap < need || cap > SIZE_MAX || ftruncate(c->outfd, (off_t)cap) < 0)
        return -ENOMEM;
    if (cap > c->out_len) {
        void *m = proc__map_grow(c->out, c->out_len, cap, c->outfd, PROT_READ | PROT_WRITE);
        if (m == MAP_FAILED)
            return -ENOMEM; /* cap unchanged: nothing is written past the mapping */
        c->out = m;
        c->out_len = cap;
    }
    r->cap = cap;
    atomic_store_explicit(&r->hdr->out_size, cap, memory_order_release);
    return 0;
}

int proc_reply_write(proc_reply_t *reply, const void *data, size_t len)
{
    if (!reply || reply != running_reply || (len && !data))
        return -EINVAL;
    uint64_t need;
    if (len == 0)
        return 0;
    if (__builtin_add_overflow(reply->used, (uint64_t)len, &need))
        return -ENOMEM;
    if (need > reply->cap) {
        int rc = out_grow(reply, need);
        if (rc < 0)
            return rc;
    }
    memcpy(reply->c->out + reply->used, data, len);
    reply->used = need;
    reply->len += len;
    return 0;
}

/* Runs a stream's batch; the table and inputs were checked against the arena. */
static void run_vchunk(struct child *c, const struct proc__msg_vtask *m)
{
    struct proc__arena_hdr *hdr = (struct proc__arena_hdr *)(void *)c->arena;
    struct proc__vitem *table = (struct proc__vitem *)(void *)(c->arena + m->table_off);
    struct proc_reply r = {.c = c, .hdr = hdr, .cap = m->out_size};
    atomic_store_explicit(&hdr->out_size, m->out_size, memory_order_release);
    for (uint64_t i = 0; i < m->count; i++) {
        struct proc__vitem *it = &table[i];
        const void *in = it->in_len ? c->arena + it->in_off : NULL;
        it->out_off = r.used;
        r.len = 0;
        atomic_store_explicit(&hdr->busy, i + 1, memory_order_release);
        running_reply = &r;
        int rc = m->fn(in, (size_t)it->in_len, &r);
        running_reply = NULL;
        it->out_len = r.len;
        it->rc = rc;
        atomic_store_explicit(&hdr->done, i + 1, memory_order_release);
    }
}

/* Whether a batch's table and inputs lie inside the arena (a bad one must not crash us). */
static bool vchunk_fits(const struct child *c, const struct proc__msg_vtask *m)
{
    uint64_t end;
    if (m->table_off > c->arena_len ||
        __builtin_mul_overflow(m->count, (uint64_t)sizeof(struct proc__vitem), &end) ||
        __builtin_add_overflow(end, m->table_off, &end) || end > c->arena_len)
        return false;
    const struct proc__vitem *table = (const void *)(c->arena + m->table_off);
    for (uint64_t i = 0; i < m->count; i++)
        if (table[i].in_off > c->arena_len || table[i].in_len > c->arena_len - table[i].in_off)
            return false;
    return true;
}

/* Sends RESULT (leaving if over max_rss) and counts the budget; false when the worker must leave.
 */
static bool chunk_done(struct child *c, uint64_t seq, uint64_t count)
{
    bool too_big = c->max_rss > 0 && proc__sys_anon_resident() > c->max_rss;
    if (send_reply(c->fd, PROC__MSG_RESULT, 0, seq, too_big ? PROC__REPLY_LEAVING : 0) < 0 ||
        too_big)
        return false;
    if (c->left > 0) {
        c->left -= (long)count;
        if (c->left <= 0)
            return false;
    }
    return true;
}

/* A stream's batch; false when the worker must leave. */
static bool handle_vtask(struct child *c, const struct proc__msg_vtask *m)
{
    if (m->arena_size > c->arena_len)
        remap(c->memfd, &c->arena, &c->arena_len, m->arena_size);
    if (!c->arena || !vchunk_fits(c, m))
        return send_reply(c->fd, PROC__MSG_ERROR, c->arena ? EINVAL : ENOMEM, m->seq, 0) == 0;
    run_vchunk(c, m);
    return chunk_done(c, m->seq, m->count);
}

/* A chunk in the arena; false when the worker must leave. */
static bool handle_task(struct child *c, const struct proc__msg_task *m)
{
    if (m->arena_size > c->arena_len)
        remap(c->memfd, &c->arena, &c->arena_len, m->arena_size);
    if (!c->arena)
        return send_reply(c->fd, PROC__MSG_ERROR, ENOMEM, m->seq, 0) == 0;
    run_chunk(c->arena, m);
    return chunk_done(c, m->seq, m->count);
}

/*
 * Leaves (returning ends the process) when the parent closes its end or
 * sends something unexpected, and after max_tasks task calls. A parent that
 * dies kills its daemonic workers (PR_SET_PDEATHSIG) anyway.
 */
int proc__pool_child_main(void *arg)
{
    const struct proc__worker_boot *b = arg;
    for (size_t i = 0; i < b->nclose; i++)
        close(b->close_fds[i]);
    pthread_sigmask(SIG_SETMASK, &b->mask, NULL);
    if (b->cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(b->cpu, &one);
        sched_setaffinity(0, sizeof one, &one); /* a failure leaves it where it was */
    }
    struct child c = {.fd = b->fd,
                      .memfd = b->memfd,
                      .fastfd = b->fastfd,
                      .outfd = b->outfd,
                      .left = b->max_tasks,
                      .max_rss = b->max_rss};
    remap(c.memfd, &c.arena, &c.arena_len, b->arena_size);
    if (b->init)
        b->init(b->initarg);
    if (send_reply(c.fd, PROC__MSG_READY, 0, 0, 0) < 0)
        return 0;
    union proc__msg m;
    while (recv_msg(c.fd, &m)) {
        bool go_on = m.type == PROC__MSG_FAST    ? handle_fast(&c, &m.fast)
                     : m.type == PROC__MSG_VTASK ? handle_vtask(&c, &m.vtask)
                                                 : handle_task(&c, &m.task);
        if (!go_on)
            break;
    }
    return 0;
}
