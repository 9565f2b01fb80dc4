/* SPDX-License-Identifier: MIT */
/*
 * Worker pools: the protocol between the parent (pool_worker.c, pool_fast.c)
 * and a worker process (pool_child.c): the messages, the arena's header, the
 * fast region's layout, and what a worker is started with. Nothing here is
 * exported.
 *
 * Each worker has a SOCK_SEQPACKET socketpair to the parent for small
 * fixed-size messages, and an arena: a memfd mapped by both sides. The
 * parent writes a chunk's inputs into the arena and sends PROC__MSG_TASK;
 * the worker runs the items, writing each return value and output into the
 * arena and bumping hdr->done after each, then sends PROC__MSG_RESULT. If the
 * worker dies, hdr->busy and hdr->done tell the parent which items finished
 * and which one was running.
 *
 * Fast jobs skip the dispatcher: the thread that called apply or map borrows
 * the idle workers, copies the inputs into the pool's fast region (one memfd
 * mapped by every worker), sends each PROC__MSG_FAST and sleeps on a futex in
 * the region. The workers claim fixed chunks from a shared counter, run them
 * in place and mark each finished chunk; the last one to leave wakes the
 * caller. A worker's slot names the chunk it is in, so a death blames
 * exactly the item that was running (see struct proc__fast_slot).
 */
#ifndef LIBPROC_POOL_PROTO_H
#define LIBPROC_POOL_PROTO_H

#include <libproc/pool.h>

#include <signal.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Every message starts with its type; each type has one struct and size. */
enum proc__msg_type {
    PROC__MSG_TASK = 1,   /* parent -> worker: struct proc__msg_task */
    PROC__MSG_READY = 2,  /* worker -> parent: the initializer has returned (pool_msg_reply) */
    PROC__MSG_RESULT = 3, /* worker -> parent: the chunk is done (pool_msg_reply) */
    PROC__MSG_ERROR = 4,  /* worker -> parent: chunk not run (pool_msg_reply, err set) */
    PROC__MSG_FAST = 5,   /* caller -> worker: struct proc__msg_fast */
    PROC__MSG_VTASK = 6,  /* parent -> worker: struct proc__msg_vtask (a stream's batch) */
};

/* Run items [0, count) of a chunk laid out in the worker's arena. */
struct proc__msg_task {
    uint32_t type;
    uint32_t pad;
    uint64_t seq; /* the chunk's number, echoed in the reply */
    proc_task_fn *fn;
    uint64_t count;
    uint64_t in_size, out_size;
    uint64_t rc_off, in_off, out_off; /* offsets into the arena */
    uint64_t arena_size;              /* the arena's current length */
};

/*
 * Run a stream's batch: items [0, count) described by the table of struct
 * proc__vitem at table_off in the arena, their inputs in the arena. Outputs
 * go to the worker's output file (boot->outfd), appended from offset 0; the
 * worker grows that file as it needs and says how long it is in the arena
 * header (out_size).
 */
struct proc__msg_vtask {
    uint32_t type;
    uint32_t pad;
    uint64_t seq;
    proc_vtask_fn *fn;
    uint64_t count;
    uint64_t table_off;
    uint64_t arena_size;
    uint64_t out_size; /* the output file's length now (the parent may have shrunk it) */
};

/* One item of a stream's batch. */
struct proc__vitem {
    uint64_t in_off, in_len;   /* parent: its input in the arena */
    uint64_t out_off, out_len; /* worker, once it returned: its output in the output file */
    int64_t rc;                /* worker: the task's value */
};

/* Claim chunks of fast job seq, working in slot `slot` of the fast region. */
struct proc__msg_fast {
    uint32_t type;
    uint32_t pad;
    uint64_t seq;
    uint64_t slot;
    uint64_t region_size; /* the fast region's current length */
};

/* A worker's answer: READY, or RESULT/ERROR for chunk seq. */
struct proc__msg_reply {
    uint32_t type;
    int32_t err; /* ERROR: a positive errno */
    uint64_t seq;
    uint32_t flags; /* PROC__REPLY_* */
    uint32_t pad;
};

/* The worker exits after this reply (max_memory_per_child): give it nothing more. */
#define PROC__REPLY_LEAVING 1u

union proc__msg {
    uint32_t type;
    struct proc__msg_task task;
    struct proc__msg_fast fast;
    struct proc__msg_vtask vtask;
    struct proc__msg_reply reply;
};

/* The size of a message of this type, or 0 for an unknown type. */
static inline size_t proc__msg_size(uint32_t type)
{
    switch (type) {
    case PROC__MSG_TASK:
        return sizeof(struct proc__msg_task);
    case PROC__MSG_FAST:
        return sizeof(struct proc__msg_fast);
    case PROC__MSG_VTASK:
        return sizeof(struct proc__msg_vtask);
    case PROC__MSG_READY:
    case PROC__MSG_RESULT:
    case PROC__MSG_ERROR:
        return sizeof(struct proc__msg_reply);
    default:
        return 0;
    }
}

/* At offset 0 of the arena. */
struct proc__arena_hdr {
    _Atomic uint64_t busy;     /* index + 1 of the item running, 0 before the first */
    _Atomic uint64_t done;     /* items of the chunk that have returned */
    _Atomic uint64_t out_size; /* a stream's batch: the output file's length */
};

/*
 * A worker's place in a fast job, in the fast region. Before running chunk
 * [start, start + count) the worker zeroes busy and done, then publishes
 * start; busy = i + 1 while item i of the chunk runs, done = i + 1 once it
 * returned. A chunk whose state byte is set is finished whatever the slot
 * says; a claimed chunk whose start never reached the slot was not begun.
 */
struct proc__fast_slot {
    _Atomic uint64_t start; /* UINT64_MAX: no chunk yet */
    _Atomic uint64_t busy;
    _Atomic uint64_t done;
    _Atomic uint64_t fail; /* first failing item + 1 (job index) among the items it ran */
    int64_t fail_rc;
    _Atomic uint64_t left; /* the job's seq once the worker has left it */
    uint64_t pad[2];       /* a cache line per slot */
};

/* At offset 0 of the fast region; a slot per borrowed worker follows (slot[]). */
struct proc__fast_region {
    _Atomic uint32_t ring;    /* futex word: bumped by every worker that leaves the job */
    _Atomic uint32_t waiting; /* the caller sleeps on ring: leaving workers wake it */
    _Atomic uint64_t active;  /* (seq << 32) | workers still in the job: a worker late
                                 to leave job seq cannot touch the next job's count */
    uint32_t pad0[12];
    _Atomic uint64_t next; /* first item nobody claimed yet */
    uint64_t pad1[7];
    _Atomic uint64_t copied;      /* items whose inputs are in place: the caller copies
                                     while the workers on other CPUs start */
    _Atomic uint32_t copied_gen;  /* futex word: bumped with every store of copied */
    _Atomic uint32_t copy_waiter; /* a worker sleeps on copied_gen */
    uint64_t pad2[6];
    uint64_t seq, n, chunk, in_size, out_size;
    uint64_t state_off, in_off, out_off; /* state: a byte per chunk, 1 once it is finished */
    proc_task_fn *fn;
    uint64_t pad3[7];
    struct proc__fast_slot slot[]; /* on a cache line of their own */
};

/* Where the slots start: the bytes of the region before slot[0]. */
#define PROC__FAST_SLOTS offsetof(struct proc__fast_region, slot)
_Static_assert(PROC__FAST_SLOTS % 64 == 0, "the fast region's slots start a cache line");

/* What a worker gets from its parent; read in the child only. */
struct proc__worker_boot {
    int fd;            /* the worker's end of the socketpair */
    int memfd;         /* the arena */
    int fastfd;        /* the pool's fast region */
    int outfd;         /* the worker's output file (streams' batches) */
    int cpu;           /* the CPU it runs on, -1: any */
    size_t arena_size; /* its length at the fork */
    long max_tasks;    /* 0: unlimited */
    size_t max_rss;    /* bytes of resident memory after a chunk that make it leave; 0: none */
    void (*init)(void *arg);
    void *initarg;
    sigset_t mask;        /* the signal mask of the thread that created the pool */
    const int *close_fds; /* the pool's other fds, copies the worker must not keep */
    size_t nclose;
};

/* The target of every worker process (pool_child.c). */
int proc__pool_child_main(void *arg);

/* fd's first len bytes mapped shared: old (old_len bytes, NULL for none)
 * grown in place or moved; MAP_FAILED if it cannot. The memfds that parent
 * and workers share only ever grow while mapped. */
static inline void *proc__map_grow(void *old, size_t old_len, size_t len, int fd, int prot)
{
    return old ? mremap(old, old_len, len, MREMAP_MAYMOVE)
               : mmap(NULL, len, prot, MAP_SHARED, fd, 0);
}

#endif /* LIBPROC_POOL_PROTO_H */
