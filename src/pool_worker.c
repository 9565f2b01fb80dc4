/* SPDX-License-Identifier: MIT */
/* Worker pools: the loop that runs in every worker process. */
#include "pool_internal.h"

#include <errno.h>
#include <pthread.h>
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
    int fd = b->fd;
    int memfd = b->memfd;
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
    while (recv_msg(fd, &m)) {
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
