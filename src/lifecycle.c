/* SPDX-License-Identifier: MIT */
/* Process lifecycle: fork handlers, fresh state in children, work at exit. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

_Thread_local struct proc_inflight *proc_forking;

/* How long daemonic children get between SIGTERM and SIGKILL at exit. */
#define PROC_DAEMON_GRACE_MS 1000

/*
 * Fork handlers: nobody forks while another thread is inside a libproc section.
 * They can end up registered twice in one process: when a fork() happens while
 * another thread runs libproc's one-time initialisation after its
 * pthread_atfork(), glibc's pthread_once() runs that initialisation again in
 * the child, which registers them a second time. The forking thread's depth
 * makes every registration after the first a no-op (a second lock of
 * proc_g.lock would deadlock the child's next fork).
 */
static _Thread_local unsigned fork_depth;

static void atfork_prepare(void)
{
    if (fork_depth++ == 0)
        pthread_mutex_lock(&proc_g.lock);
}

static void atfork_parent(void)
{
    if (--fork_depth == 0)
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
    proc_g.spawner_running = false;
    proc_g.pending = NULL;
    proc_g.exiting = false;
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
    if (--fork_depth == 0)
        proc_lifecycle_reset_child();
}

static proc_t *first_unfinished_locked(bool daemons)
{
    for (proc_t *c = proc_g.children; c; c = c->next)
        if (atomic_load(&c->state) != PROC_DONE && c->daemon == daemons)
            return c;
    return NULL;
}

static void signal_daemons_locked(int sig)
{
    for (proc_t *c = proc_g.children; c; c = c->next)
        if (c->daemon)
            proc_send_signal_locked(c, sig);
}

/*
 * Python's behaviour at exit: daemonic children are terminated (SIGKILL after
 * one grace period shared by all of them), non-daemonic ones waited for, and
 * no child is started any more. Runs
 * when a process exits normally and after a callback-mode target returns, and only
 * sees the calling process's own children. All under the lock: another thread
 * may close finished objects meanwhile, so no pointer is kept across a wait.
 */
void proc_lifecycle_exit_work(void)
{
    pthread_mutex_lock(&proc_g.lock);
    /* From here on proc_start() refuses: an exit callback that replaces the
     * daemons this work ends would otherwise keep the exit from finishing. */
    proc_g.exiting = true;
    if (proc_g.children) {
        int cancel;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
        signal_daemons_locked(SIGTERM);
        /* The reaper cannot wait for what only it can finish. */
        bool can_wait = !proc_on_reaper_thread();
        struct timespec grace;
        proc_deadline_from_timeout(&grace, PROC_DAEMON_GRACE_MS);
        bool killed = false;
        /* Polling waits: the exit must not depend on the reaper thread alone. */
        while (can_wait && first_unfinished_locked(true)) {
            if (killed) {
                proc_deadline_poll_locked(NULL);
            } else if (proc_deadline_poll_locked(&grace) == -ETIMEDOUT) {
                signal_daemons_locked(SIGKILL);
                killed = true;
            }
        }
        while (can_wait && first_unfinished_locked(false))
            proc_deadline_poll_locked(NULL);
        pthread_setcancelstate(cancel, NULL);
    }
    pthread_mutex_unlock(&proc_g.lock);
}

static void at_exit(void)
{
    proc_lifecycle_exit_work();
}

/* Without these handlers libproc is not fork-safe: proc_start refuses to run. */
int proc_lifecycle_init(void)
{
    int r = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (r != 0)
        return -r;
    return atexit(at_exit) == 0 ? 0 : -ENOMEM;
}
