/* SPDX-License-Identifier: MIT */
/* Process lifecycle: fork handlers, fresh state in children, work at exit. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

_Thread_local struct proc_inflight *proc_forking;

/* How long daemonic children get between SIGTERM and SIGKILL at exit. */
#define PROC_DAEMON_GRACE_MS 1000

/* Fork handlers: nobody forks while another thread is inside a libproc section. */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&proc_g.lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&proc_g.lock);
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
 */
void proc_lifecycle_reset_child(void)
{
    pid_t self = getpid();
    atomic_store(&proc_g.self, self);
    pthread_mutex_init(&proc_g.lock, NULL);
    proc_init_cond();
    proc_fd_close_inherited();
    proc_g.children = NULL;
    proc_g.live = 0;
    proc_g.unwatched = 0;
    proc_g.starting = 0;
    proc_g.requests = NULL;
    proc_g.pending = NULL;
    proc_g.collect_asked = proc_g.collect_done = 0;
    /* Other threads' starts in progress: their child-side fds are not for us. */
    for (struct proc_inflight *f = proc_g.inflight; f; f = f->next)
        if (f != proc_forking)
            for (int i = 0; i < f->n; i++)
                close(f->fds[i]);
    proc_g.inflight = NULL;
    proc_g.reaper_running = false;
    int wakefd = atomic_exchange(&proc_g.wakefd, -1);
    if (wakefd >= 0)
        close(wakefd);
    close_fd(&proc_g.epfd);
    if (proc_g.current && proc_g.current->kind == PROC_KIND_SELF)
        atomic_store(&proc_g.current->pid, self);
}

static void atfork_child(void)
{
    proc_lifecycle_reset_child();
}

/*
 * Python's behaviour at exit: daemonic children are terminated, non-daemonic
 * ones waited for. Runs at exit() of a process and after a callback-mode
 * target returns; it only sees the calling process's own children.
 */
void proc_lifecycle_exit_work(void)
{
    pthread_mutex_lock(&proc_g.lock);
    size_t n = 0;
    for (struct proc *c = proc_g.children; c; c = c->next)
        if (atomic_load(&c->state) != PROC_DONE)
            n++;
    proc_t **list = n ? malloc(n * sizeof *list) : NULL;
    size_t k = 0;
    if (list)
        for (struct proc *c = proc_g.children; c && k < n; c = c->next)
            if (atomic_load(&c->state) != PROC_DONE)
                list[k++] = c;
    pthread_mutex_unlock(&proc_g.lock);
    if (!list)
        return;

    for (size_t i = 0; i < k; i++)
        if (list[i]->daemon)
            proc_terminate(list[i]);
    /* The reaper cannot wait for what only it can finish. */
    if (!proc_on_reaper_thread()) {
        for (size_t i = 0; i < k; i++) {
            if (list[i]->daemon && proc_join(list[i], PROC_DAEMON_GRACE_MS) == -ETIMEDOUT)
                proc_kill(list[i]);
            proc_join(list[i], PROC_WAIT_FOREVER);
        }
    }
    free(list);
}

static void at_exit(void)
{
    proc_lifecycle_exit_work();
}

void proc_lifecycle_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    atexit(at_exit);
}
