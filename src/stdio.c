/* SPDX-License-Identifier: MIT */
/* The child's standard streams: inherited, /dev/null, a pipe to the parent, or a given fd. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

static bool valid_stream(int stream)
{
    return stream >= 0 && stream <= 2;
}

int proc_set_stdio(proc_t *p, int stream, int how)
{
    if (!p)
        return -EINVAL;
    if (p->kind != PROC__KIND_CHILD || atomic_load(&p->state) != PROC__NEW)
        return -EBUSY;
    if (!valid_stream(stream) || how < PROC_STDIO_NULL)
        return -EINVAL;
    if (how >= 0 && fcntl(how, F_GETFD) < 0)
        return -EBADF;
    if (!proc__lock_configurable(p))
        return -EBUSY;
    p->stdio_how[stream] = how;
    pthread_mutex_unlock(&proc__g.lock);
    return 0;
}

int proc_stdio_fd(const proc_t *p, int stream)
{
    if (!p || !valid_stream(stream))
        return -EINVAL;
    int fd = p->stdio_parent[stream];
    return fd >= 0 && p->owner == proc__self_pid() ? fd : -EBADF;
}

int proc_stdio_close(proc_t *p, int stream)
{
    if (!p || !valid_stream(stream))
        return -EINVAL;
    pthread_mutex_lock(&proc__g.lock);
    int fd = p->stdio_parent[stream];
    int r = -EBADF;
    if (fd >= 0 && p->owner == proc__self_pid()) {
        proc__fd_untrack_locked(fd);
        close(fd);
        p->stdio_parent[stream] = -1;
        r = 0;
    }
    pthread_mutex_unlock(&proc__g.lock);
    return r;
}

void proc__stdio_close_all_locked(proc_t *p)
{
    for (int i = 0; i < 3; i++) {
        if (p->stdio_parent[i] >= 0) {
            proc__fd_untrack_locked(p->stdio_parent[i]);
            close(p->stdio_parent[i]);
            p->stdio_parent[i] = -1;
        }
    }
}

static void inflight_push(struct proc__start_ctx *ctx, int fd)
{
    ctx->inflight.fds[ctx->inflight.n++] = fd;
}

/*
 * Opens what the child's streams need, before the fork and under the lock (the
 * fork handler must see a consistent picture): the parent's pipe ends go into
 * the fd table, so every fork child closes them, and the child's ends are
 * in-flight fds, closed by every fork child except this start's own. A child
 * end that landed on 0..2 is moved up, so that the child's dup2s cannot
 * overwrite one another (a 0<->1 swap included).
 */
int proc__stdio_prepare(proc_t *p, struct proc__start_ctx *ctx)
{
    int r = 0;
    pthread_mutex_lock(&proc__g.lock);
    for (int i = 0; i < 3 && r == 0; i++) {
        int how = p->stdio_how[i], child = -1;
        /* An fd equal to i is dup'd like any other: dup2 onto i then clears
         * its FD_CLOEXEC, or a caller's close-on-exec stdout would vanish. */
        if (how == PROC_STDIO_INHERIT) {
            ctx->child_fd[i] = -1;
            continue;
        }
        if (how == PROC_STDIO_NULL) {
            child = open("/dev/null", (i == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
            if (child < 0)
                r = -errno;
        } else if (how == PROC_STDIO_PIPE) {
            int fds[2];
            if (pipe2(fds, O_CLOEXEC) < 0) {
                r = -errno;
            } else {
                int parent = i == 0 ? fds[1] : fds[0];
                child = i == 0 ? fds[0] : fds[1];
                r = proc__fd_track_locked(parent, p);
                if (r < 0) {
                    close(parent);
                    close(child);
                    child = -1;
                } else {
                    p->stdio_parent[i] = parent;
                }
            }
        } else {
            child = fcntl(how, F_DUPFD_CLOEXEC, 3);
            if (child < 0)
                r = -errno;
        }
        if (child >= 0 && child <= 2) {
            int moved = fcntl(child, F_DUPFD_CLOEXEC, 3);
            int err = errno;
            close(child);
            child = moved;
            if (child < 0)
                r = -err;
        }
        if (child >= 0)
            inflight_push(ctx, child);
        ctx->child_fd[i] = child;
    }
    pthread_mutex_unlock(&proc__g.lock);
    if (r < 0)
        proc__stdio_finish(p, ctx, false);
    return r;
}

/* After the start: the child's ends are the child's now; a failed start drops the pipes too. */
void proc__stdio_finish(proc_t *p, struct proc__start_ctx *ctx, bool started)
{
    pthread_mutex_lock(&proc__g.lock);
    for (int i = 0; i < 3; i++) {
        if (ctx->child_fd[i] >= 0)
            close(ctx->child_fd[i]);
        ctx->child_fd[i] = -1;
    }
    ctx->inflight.n = 0;
    if (!started)
        proc__stdio_close_all_locked(p);
    pthread_mutex_unlock(&proc__g.lock);
}
