/* SPDX-License-Identifier: MIT */
/*
 * The process core's global state (proc__g), the registry of started
 * children, and the fd table: every fd libproc owns for its children, by
 * number.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct proc__global proc__g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .epfd = -1,
    .wakefd = -1,
    .identity = "",
    .fs_lock = PTHREAD_MUTEX_INITIALIZER,
    .fs_sock = -1,
    .fs_pidfd = -1,
};

static void registry_add_locked(struct proc *p)
{
    p->prev = NULL;
    p->next = proc__g.children;
    if (proc__g.children)
        proc__g.children->prev = p;
    proc__g.children = p;
}

void proc__registry_remove_locked(struct proc *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else if (proc__g.children == p)
        proc__g.children = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/*
 * Every fd libproc owns for its children, indexed by number. The reaper maps
 * epoll events back to objects through it, so an event fetched just before
 * its object was closed finds NULL (or the object now using that number, which
 * it checks), never freed memory. Fork children close all of them without
 * writing to the objects, which would copy every page that holds one.
 */
int proc__fd_track_locked(int fd, struct proc *p)
{
    if ((size_t)fd >= proc__g.fdcap) {
        size_t cap = proc__g.fdcap ? proc__g.fdcap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        struct proc **tab = realloc(proc__g.fdtab, cap * sizeof *tab);
        if (!tab)
            return -ENOMEM;
        memset(tab + proc__g.fdcap, 0, (cap - proc__g.fdcap) * sizeof *tab);
        proc__g.fdtab = tab;
        proc__g.fdcap = cap;
    }
    proc__g.fdtab[fd] = p;
    return 0;
}

void proc__fd_untrack_locked(int fd)
{
    if (fd >= 0 && (size_t)fd < proc__g.fdcap)
        proc__g.fdtab[fd] = NULL;
}

struct proc *proc__fd_owner_locked(int fd)
{
    return fd >= 0 && (size_t)fd < proc__g.fdcap ? proc__g.fdtab[fd] : NULL;
}

/* In a fork child: the parent's pidfds and sentinel pipes are not ours. */
void proc__fd_close_inherited(void)
{
    size_t fd = 0;
    while (fd < proc__g.fdcap) {
        if (!proc__g.fdtab[fd]) {
            fd++;
            continue;
        }
        size_t last = fd;
        while (last + 1 < proc__g.fdcap && proc__g.fdtab[last + 1])
            last++;
        proc__sys_close_range((unsigned)fd, (unsigned)last);
        memset(proc__g.fdtab + fd, 0, (last - fd + 1) * sizeof *proc__g.fdtab);
        fd = last + 1;
    }
}

void proc__fd_close_locked(int *fd)
{
    if (*fd >= 0) {
        proc__fd_untrack_locked(*fd);
        close(*fd);
        *fd = -1;
    }
}

/* ----------------------------------------------------------- registration */

/* proc_sentinel()'s fd and, without a pidfd, what a reap closes to wake waiters. */
static int open_sentinel_locked(struct proc *p)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    p->pipe_r = pfd[0];
    p->pipe_w = pfd[1];
    int r = proc__fd_track_locked(pfd[0], p);
    return r < 0 ? r : proc__fd_track_locked(pfd[1], p);
}

void proc__registry_drop_locked(struct proc *p)
{
    proc__registry_remove_locked(p);
    for (int i = 0; i < 3; i++)
        proc__fd_close_locked(&p->stdio_parent[i]);
    proc__fd_close_locked(&p->pipe_r);
    proc__fd_close_locked(&p->pipe_w);
    proc__fd_close_locked(&p->pidfd);
}

/*
 * A pidfd where the kernel has them (pidfd: one already open for the child,
 * or -1); else the start time that tells a reused pid apart.
 */
static int identify_locked(struct proc *p, int pidfd)
{
    pid_t pid = atomic_load(&p->pid);
    if (pidfd >= 0 && !proc__sys_have_pidfd()) {
        close(pidfd); /* the paths without pidfds, as the test hook asks */
        pidfd = -1;
    }
    if (pidfd >= 0) {
        p->pidfd = pidfd;
        return proc__fd_track_locked(pidfd, p);
    }
    if (proc__sys_have_pidfd()) {
        int fd = proc__sys_pidfd_open(pid);
        if (fd >= 0) {
            p->pidfd = fd;
            return proc__fd_track_locked(fd, p);
        }
        if (fd != -ESRCH)
            return fd;
        /* ESRCH: already reaped by someone else; waitpid will say ECHILD. */
    }
    p->start_time = proc__sys_start_time(pid);
    return p->pipe_r < 0 ? open_sentinel_locked(p) : 0;
}

int proc__registry_adopt_locked(struct proc *p, int pidfd)
{
    p->owner = proc__self_pid();
    p->pidfd = -1;
    int r = 0;
    for (int i = 0; i < 3 && r == 0; i++)
        if (p->stdio_parent[i] >= 0)
            r = proc__fd_track_locked(p->stdio_parent[i], p);
    if (r == 0 && p->callbacks)
        r = open_sentinel_locked(p);
    if (r == 0)
        r = identify_locked(p, pidfd);
    else if (pidfd >= 0)
        close(pidfd);
    if (r < 0) {
        proc__registry_drop_locked(p);
        return r;
    }
    registry_add_locked(p);
    return 0;
}

/* ---------------------------------------------------------- configuration */

/*
 * Takes the lock if p may still be configured: proc_start moves p out of
 * PROC__NEW under the same lock, so a setter never changes what a start reads.
 */
bool proc__lock_configurable(proc_t *p)
{
    pthread_mutex_lock(&proc__g.lock);
    if (atomic_load(&p->state) == PROC__NEW)
        return true;
    pthread_mutex_unlock(&proc__g.lock);
    return false;
}

/*
 * For calls on a started child of the caller (p is a PROC__KIND_CHILD): 0,
 * -EINVAL while it is not started, -ECHILD when another process started it
 * (this is a copy inherited through fork).
 */
int proc__check_own_child(const struct proc *p)
{
    int state = atomic_load(&((struct proc *)p)->state);
    if (state == PROC__NEW || state == PROC__STARTING)
        return -EINVAL;
    return p->owner == proc__self_pid() ? 0 : -ECHILD;
}
