/* SPDX-License-Identifier: MIT */
/* Fork handlers, the fresh state of a fork child, and the starts in flight it must not keep. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

_Thread_local struct proc__inflight *proc__forking;

/*
 * Fork handlers: nobody forks while another thread is inside a libproc section.
 * They can end up registered twice in one process: when a fork() happens while
 * another thread runs libproc's one-time initialisation after its
 * pthread_atfork(), glibc's pthread_once() runs that initialisation again in
 * the child, which registers them a second time. The forking thread's depth
 * makes every registration after the first a no-op (a second lock of
 * proc__g.lock would deadlock the child's next fork).
 */
static _Thread_local unsigned fork_depth;

static void atfork_prepare(void)
{
    if (fork_depth++ == 0)
        pthread_mutex_lock(&proc__g.lock);
}

static void atfork_parent(void)
{
    if (--fork_depth == 0)
        pthread_mutex_unlock(&proc__g.lock);
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/*
 * In any fork child: the parent's children, reaper thread and fds are not
 * ours. Copies of the parent's objects stay in memory but become inert, since
 * their owner is not this process.
 *
 * The forking thread holds proc__g.lock (from the prepare handler or from
 * proc__fork_locked()'s caller), and fs_lock too when own_fs_lock: the child
 * unlocks what it holds rather than re-initialising it. ThreadSanitizer keeps
 * a re-initialised mutex's owner, and reports a "double lock" when a thread
 * the child starts later takes it (and so in the fork server's children).
 * fs_lock is re-initialised only when another thread may have held it.
 */
static void reset_child(bool own_fs_lock)
{
    proc__self_refresh();
    pid_t self = proc__self_pid();
    proc__cond_init(&proc__g.cond);
    proc__fd_close_inherited();
    proc__g.children = NULL;
    proc__g.live = 0;
    proc__g.unwatched = 0;
    proc__g.starting = 0;
    proc__g.requests = NULL;
    proc__g.spawner_running = false;
    proc__g.pending = NULL;
    proc__g.exiting = false;
    /* Starts in progress: other threads' child-side fds and every parent end are not for us. */
    for (struct proc__inflight *f = proc__g.inflight; f; f = f->next) {
        if (f != proc__forking)
            for (int i = 0; i < f->n; i++)
                close(f->fds[i]);
        for (int i = 0; i < 3; i++)
            close(f->parent_fds[i]);
        close(f->pidfd);
    }
    proc__g.inflight = NULL;
    proc__g.in_callbacks = false;
    /* The fork server serves the process that started it, not this one. */
    if (own_fs_lock)
        pthread_mutex_unlock(&proc__g.fs_lock);
    else
        pthread_mutex_init(&proc__g.fs_lock, NULL);
    close_fd(&proc__g.fs_sock);
    close_fd(&proc__g.fs_pidfd);
    proc__g.fs_pid = 0;
    proc__g.reaper_running = false;
    int wakefd = atomic_exchange(&proc__g.wakefd, -1);
    if (wakefd >= 0)
        close(wakefd);
    close_fd(&proc__g.epfd);
    if (proc__g.current && proc__g.current->kind == PROC__KIND_SELF)
        atomic_store(&proc__g.current->pid, self);
    pthread_mutex_unlock(&proc__g.lock);
}

static void atfork_child(void)
{
    if (--fork_depth == 0)
        reset_child(false);
}

/*
 * The caller holds proc__g.lock and fs_lock: the depth makes the prepare
 * handler skip the first (and the parent handler keep it), and the child,
 * whose depth then ends at 0 only here, gets its fresh state as from any fork,
 * with both unlocked.
 */
pid_t proc__fork_locked(void)
{
    fork_depth++;
    pid_t pid = fork();
    if (--fork_depth == 0 && pid == 0)
        reset_child(true);
    return pid;
}

void proc__inflight_link(struct proc__inflight *f)
{
    pthread_mutex_lock(&proc__g.lock);
    f->next = proc__g.inflight;
    proc__g.inflight = f;
    pthread_mutex_unlock(&proc__g.lock);
}

int proc__inflight_add_locked(struct proc__inflight *f, int fd)
{
    if (f->n == PROC__INFLIGHT_MAX)
        return -EMFILE;
    f->fds[f->n++] = fd;
    return 0;
}

int proc__inflight_pipe(struct proc__inflight *f, int fds[2])
{
    /* Made and registered in one locked section, so that no fork by another
     * thread can catch an unregistered end. */
    pthread_mutex_lock(&proc__g.lock);
    int r = f->n > PROC__INFLIGHT_MAX - 2 ? -EMFILE : 0;
    if (r == 0 && pipe2(fds, O_CLOEXEC) < 0)
        r = -errno;
    if (r == 0) {
        f->fds[f->n++] = fds[0];
        f->fds[f->n++] = fds[1];
    }
    pthread_mutex_unlock(&proc__g.lock);
    return r;
}

void proc__inflight_close(struct proc__inflight *f, int *fd)
{
    if (*fd < 0)
        return;
    pthread_mutex_lock(&proc__g.lock);
    for (int i = 0; i < f->n; i++)
        if (f->fds[i] == *fd)
            f->fds[i] = -1;
    close(*fd);
    *fd = -1;
    pthread_mutex_unlock(&proc__g.lock);
}

void proc__inflight_unlink_locked(struct proc__inflight *f)
{
    struct proc__inflight **pp = &proc__g.inflight;
    while (*pp && *pp != f)
        pp = &(*pp)->next;
    if (*pp)
        *pp = f->next;
}

int proc__fork_handlers_install(void)
{
    return -pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
