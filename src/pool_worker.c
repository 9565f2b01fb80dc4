/* SPDX-License-Identifier: MIT */
/* Worker pools: the loop that runs in every worker process. */
#include "pool_internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_msg(int fd, const struct pool_msg *m)
{
    for (;;) {
        ssize_t r = send(fd, m, sizeof *m, MSG_NOSIGNAL);
        if (r == (ssize_t)sizeof *m)
            return 0;
        if (r < 0 && errno == EINTR)
            continue;
        return -1;
    }
}

/* 1 for a whole message, 0 for end of file or any failure. */
static int recv_msg(int fd, struct pool_msg *m)
{
    for (;;) {
        ssize_t r = recv(fd, m, sizeof *m, 0);
        if (r == (ssize_t)sizeof *m)
            return 1;
        if (r < 0 && errno == EINTR)
            continue;
        return 0;
    }
}

static void run_chunk(unsigned char *arena, const struct pool_msg *m)
{
    struct pool_arena_hdr *hdr = (struct pool_arena_hdr *)arena;
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

/* Until the caller has copied the inputs of items below need: it copies at
 * memory speed, so spin a little, then sleep (it may be stopped, or share
 * our CPU under a scheduler that yields nothing to it). */
static void wait_copied(struct pool_fast *f, uint64_t need)
{
    for (unsigned spin = 1; atomic_load_explicit(&f->copied, memory_order_acquire) < need; spin++) {
        if (spin < 4096) {
            if (spin % 64 == 0)
                sched_yield();
            else
                proc__cpu_relax();
            continue;
        }
        atomic_store_explicit(&f->copy_waiter, 1, memory_order_seq_cst);
        uint32_t gen = atomic_load_explicit(&f->copied_gen, memory_order_seq_cst);
        if (atomic_load_explicit(&f->copied, memory_order_seq_cst) >= need)
            break;
        struct timespec tick; /* a bound, not a clock */
        clock_gettime(CLOCK_MONOTONIC, &tick);
        proc__timespec_add_ns(&tick, 100000000L);
        proc__sys_futex_wait(&f->copied_gen, gen, &tick, true);
    }
}

/*
 * Claims and runs chunks of the fast job until none is left. The region's
 * length was checked against the job's offsets by the caller that wrote them;
 * the worker checks again, as a bad job must not crash it.
 */
static void run_fast(unsigned char *region, size_t len, const struct pool_msg *m)
{
    struct pool_fast *f = (struct pool_fast *)(void *)region;
    struct pool_fast_slot *s = pool_fast_slot(region, m->count);
    uint64_t n = f->n, chunk = f->chunk, isz = f->in_size, osz = f->out_size;
    if (chunk == 0 || f->state_off + (n + chunk - 1) / chunk > len || f->in_off + n * isz > len ||
        f->out_off + n * osz > len)
        return;
    _Atomic unsigned char *state = (_Atomic unsigned char *)(region + f->state_off);
    const unsigned char *in = region + f->in_off;
    unsigned char *out = region + f->out_off;
    proc_task_fn *fn = f->fn;
    int64_t per_chunk = -1; /* ns, of our last chunk */
    for (;;) {
        if (m->err == 1 && per_chunk >= 0 && osz) {
            /* We share the caller's CPU. Once the other workers can run what
             * is left in the time the caller needs to copy out what is done,
             * leave it to them: the caller then copies while they end. */
            uint64_t next = atomic_load_explicit(&f->next, memory_order_relaxed);
            uint32_t in_job = pool_fast_active(f, m->seq);
            uint32_t others = in_job > 0 ? in_job - 1 : 0;
            if (next < n && others > 0) {
                uint64_t left = (n - next + chunk - 1) / chunk;
                uint64_t finish = left * (uint64_t)per_chunk / others;
                if (finish <= next * osz / POOL_COPY_BYTES_PER_NS)
                    return;
            }
        }
        uint64_t k = atomic_fetch_add_explicit(&f->next, chunk, memory_order_relaxed);
        if (k >= n)
            return;
        int64_t t0 = m->err == 1 ? proc__now_ns() : 0;
        uint64_t cnt = n - k < chunk ? n - k : chunk;
        wait_copied(f, k + cnt);
        atomic_store_explicit(&s->busy, 0, memory_order_relaxed);
        atomic_store_explicit(&s->done, 0, memory_order_relaxed);
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
        if (m->err == 1)
            per_chunk = proc__now_ns() - t0;
    }
}

/*
 * Says the fast job seq is over for this worker and wakes the caller if it
 * sleeps. The count in f->active only changes while it is tagged with seq.
 */
static void fast_leave(unsigned char *region, uint64_t slot, uint64_t seq)
{
    struct pool_fast *f = (struct pool_fast *)(void *)region;
    uint64_t v = atomic_load_explicit(&f->active, memory_order_relaxed);
    while ((uint32_t)(v >> 32) == (uint32_t)seq && (uint32_t)v > 0 &&
           !atomic_compare_exchange_weak_explicit(&f->active, &v, v - 1, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
    }
    atomic_store_explicit(&pool_fast_slot(region, slot)->left, seq, memory_order_seq_cst);
    atomic_fetch_add_explicit(&f->ring, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&f->waiting, memory_order_seq_cst))
        proc__sys_futex_wake(&f->ring, INT_MAX, true);
}

/*
 * Leaves (returning ends the process) when the parent closes its end or
 * sends something unexpected, and after max_tasks task calls. A parent that
 * dies kills its daemonic workers (PR_SET_PDEATHSIG) anyway.
 */
int proc_pool_worker_main(void *arg)
{
    const struct pool_boot *b = arg;
    for (size_t i = 0; i < b->nclose; i++)
        close(b->close_fds[i]);
    pthread_sigmask(SIG_SETMASK, &b->mask, NULL);
    if (b->cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(b->cpu, &one);
        sched_setaffinity(0, sizeof one, &one); /* a failure leaves it where it was */
    }
    int fd = b->fd;
    int memfd = b->memfd;
    int fastfd = b->fastfd;
    long left = b->max_tasks;
    size_t mapped = b->arena_size;
    unsigned char *arena = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (arena == MAP_FAILED) {
        arena = NULL;
        mapped = 0;
    }

    if (b->init)
        b->init(b->initarg);

    struct pool_msg m = {.type = POOL_MSG_READY};
    if (send_msg(fd, &m) < 0)
        return 0;
    unsigned char *fast = NULL;
    size_t fast_len = 0;
    while (recv_msg(fd, &m)) {
        if (m.type == POOL_MSG_FAST) {
            if (m.arena_size > fast_len) {
                if (fast)
                    munmap(fast, fast_len);
                fast_len = (size_t)m.arena_size;
                fast = mmap(NULL, fast_len, PROT_READ | PROT_WRITE, MAP_SHARED, fastfd, 0);
                if (fast == MAP_FAILED)
                    return 0; /* our death tells the caller: the job goes on without us */
            }
            if (fast_len < POOL_FAST_SLOTS ||
                m.count >= (fast_len - POOL_FAST_SLOTS) / sizeof(struct pool_fast_slot))
                return 0;
            run_fast(fast, fast_len, &m);
            fast_leave(fast, m.count, m.seq);
            continue;
        }
        if (m.type != POOL_MSG_TASK)
            return 0;
        if (m.arena_size > mapped) {
            if (arena)
                munmap(arena, mapped);
            mapped = (size_t)m.arena_size;
            arena = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
            if (arena == MAP_FAILED) {
                arena = NULL;
                mapped = 0;
            }
        }
        uint64_t count = m.count;
        if (arena) {
            run_chunk(arena, &m);
            m.type = POOL_MSG_RESULT;
        } else {
            m.type = POOL_MSG_ERROR;
            m.err = ENOMEM;
        }
        if (send_msg(fd, &m) < 0)
            return 0;
        if (arena && left > 0) {
            left -= (long)count;
            if (left <= 0)
                return 0;
        }
    }
    return 0;
}
