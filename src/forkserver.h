/* SPDX-License-Identifier: MIT */
/*
 * The fork server's protocol: one SOCK_SEQPACKET message a request and one a
 * reply, between the caller (forkserver_client.c) and the server
 * (forkserver.c). Both ends are the same program, the server a fork of the
 * caller, so a request carries the target's address as it is.
 */
#ifndef LIBPROC_FORKSERVER_H
#define LIBPROC_FORKSERVER_H

#include "core.h"

#include <signal.h>
#include <stdint.h>

#define PROC__FS_MAGIC 0x6c70667aU
#define PROC__FS_INLINE_MAX (32 * 1024)       /* a larger blob travels in a memfd */
#define PROC__FS_ALIGN 16                     /* of the argument in the child */
#define PROC__FS_MAX_FDS (6 + PROC__PASS_MAX) /* status, dir, memfd, 3 streams, passed */
#define PROC__FS_PAD(n) (((n) + PROC__FS_ALIGN - 1) & ~(uint64_t)(PROC__FS_ALIGN - 1))

enum {
    PROC__FS_DAEMON = 1U << 0,
    PROC__FS_NEW_GROUP = 1U << 1,
    PROC__FS_ARG_COPY = 1U << 2, /* the blob starts with the target's argument */
    PROC__FS_HERE = 1U << 3,     /* the caller's current directory comes as an fd */
    PROC__FS_MEMFD = 1U << 4,    /* the blob is in a memfd, not in the message */
};

/* The blob's parts after the argument, in order; strings end with their NUL. */
enum {
    PROC__FS_NAME,
    PROC__FS_IDENT, /* "1:2" for Process-1:2 */
    PROC__FS_KEY,
    PROC__FS_PNAME, /* the caller's own name and key: the child's proc_parent() */
    PROC__FS_PKEY,
    PROC__FS_CWD, /* proc_set_cwd()'s, or empty */
    PROC__FS_ENV, /* env_count strings one after the other */
    PROC__FS_PARTS,
};

/*
 * A request: this header, then (unless PROC__FS_MEMFD) the blob: the
 * argument (arg_len bytes, padded to PROC__FS_ALIGN), then the parts. Its
 * fds, in order: the status pipe's write end (the child reports a struct
 * proc__child_status there), the directory (PROC__FS_HERE), the memfd
 * (PROC__FS_MEMFD), the standard streams whose bit is set in stdio, then
 * npass fds the child keeps at the numbers in pass_no.
 */
struct proc__fs_request {
    _Alignas(PROC__FS_ALIGN) uint32_t magic;
    uint32_t flags;
    proc_target_fn *target;
    void *arg;      /* the target's argument without PROC__FS_ARG_COPY */
    int32_t parent; /* the caller's pid */
    uint32_t stdio;
    sigset_t mask; /* the child's signal mask */
    uint64_t blob_len, arg_len;
    uint32_t len[PROC__FS_PARTS];
    uint32_t env_count;
    uint32_t npass;
    int32_t pass_no[PROC__PASS_MAX];
};

/* The reply: the child's pid, its pidfd attached, or -errno. */
struct proc__fs_reply {
    int32_t pid;
};

#endif /* LIBPROC_FORKSERVER_H */
