/* SPDX-License-Identifier: MIT */
/*
 * A child's standard streams as its parent configures and uses them:
 * inherited, /dev/null, a pipe to the parent, or a given fd. spawn.c opens
 * them at a start.
 */
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
    /* Until the start is over its ends are the start's; a fork copy owns none. */
    int fd = p->stdio_parent[stream];
    return fd >= 0 && proc__check_own_child(p) == 0 ? fd : -EBADF;
}

int proc_stdio_close(proc_t *p, int stream)
{
    if (!p || !valid_stream(stream))
        return -EINVAL;
    pthread_mutex_lock(&proc__g.lock);
    int fd = p->stdio_parent[stream];
    int r = -EBADF;
    if (fd >= 0 && proc__check_own_child(p) == 0) {
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
