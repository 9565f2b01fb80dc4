/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: what the parent side (pool.c) and the worker side
 * (pool_worker.c) agree on. Nothing here is exported.
 *
 * Each worker has a SOCK_SEQPACKET socketpair to the parent for small
 * fixed-size messages, and an arena: a memfd mapped by both sides. The
 * parent writes a chunk's inputs into the arena and sends POOL_MSG_TASK;
 * the worker runs the items, writing each return value and output into the
 * arena and bumping hdr->done after each, then sends POOL_MSG_RESULT. If the
 * worker dies, hdr->busy and hdr->done tell the parent which items finished
 * and which one was running.
 */
#ifndef LIBPROC_POOL_INTERNAL_H
#define LIBPROC_POOL_INTERNAL_H

#include <libproc/pool.h>

#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum pool_msg_type {
    POOL_MSG_TASK = 1,   /* parent -> worker: run a chunk */
    POOL_MSG_READY = 2,  /* worker -> parent: the initializer has returned */
    POOL_MSG_RESULT = 3, /* worker -> parent: the chunk is done */
    POOL_MSG_ERROR = 4,  /* worker -> parent: chunk not run; err is a positive errno */
};

struct pool_msg {
    uint32_t type;
    int32_t err;
    uint64_t seq;
    proc_task_fn *fn;
    uint64_t count;
    uint64_t in_size, out_size;
    uint64_t rc_off, in_off, out_off; /* offsets into the arena */
    uint64_t arena_size;              /* the arena's current length */
};

/* At offset 0 of the arena. */
struct pool_arena_hdr {
    _Atomic uint64_t busy; /* index + 1 of the item running, 0 before the first */
    _Atomic uint64_t done; /* items of the chunk that have returned */
};

/* What a worker gets from its parent; read in the child only. */
struct pool_boot {
    int fd;            /* the worker's end of the socketpair */
    int memfd;         /* the arena */
    size_t arena_size; /* its length at the fork */
    long max_tasks;    /* 0: unlimited */
    void (*init)(void *arg);
    void *initarg;
    sigset_t mask;        /* the signal mask of the thread that created the pool */
    const int *close_fds; /* the pool's other fds, copies the worker must not keep */
    size_t nclose;
};

/* The target of every worker process. */
int proc_pool_worker_main(void *arg);

#endif /* LIBPROC_POOL_INTERNAL_H */
