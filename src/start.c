/* SPDX-License-Identifier: MIT */
/*
 * proc_start: checks, starts the child in this thread or on the spawner (exec
 * plan, standard streams, fork or posix_spawn), and has the reaper adopt it;
 * and proc_run.
 */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------------- start */

static bool on_main_thread(void)
{
    return proc__sys_gettid() == proc__self_pid();
}

int proc_start(proc_t *p)
{
    if (!p)
        return -EINVAL;
    if (p->kind != PROC__KIND_CHILD)
        return -EBUSY;
    proc__init();

    pthread_mutex_lock(&proc__g.lock);
    int r = 0;
    proc_t *cur = proc__current_locked();
    if (atomic_load(&p->state) != PROC__NEW)
        r = -EBUSY;
    else if (proc__g.init_err)
        r = proc__g.init_err;
    else if (!cur)
        r = -ENOMEM;
    else if (cur->daemon)
        r = -EPERM;
    else if (proc__g.exiting)
        r = -ESHUTDOWN;
    else
        r = proc__reaper_ensure_locked();
    if (r < 0) {
        pthread_mutex_unlock(&proc__g.lock);
        return r;
    }
    atomic_store(&p->state, PROC__STARTING);
    proc__g.starting++;
    pthread_mutex_unlock(&proc__g.lock);

    struct proc__start_ctx ctx = {.child_fd = {-1, -1, -1},
                                  .inflight = {.parent_fds = {-1, -1, -1}, .pidfd = -1}};
    /* The fork server's child is no copy of this process: nothing to flush, and
     * its PDEATHSIG follows the server's parent thread, not the one asking. */
    bool served = p->use_forkserver && !p->argv;
    sigset_t mask;
    /* Its record on this stack is linked for every fork to see: no cancellation until adopted. */
    int cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    proc__inflight_link(&ctx.inflight);
    /* Nothing buffered in the parent may be written again by the child. */
    if (!served)
        fflush(NULL);
    pid_t pid;
    if (p->daemon && !on_main_thread() && !served) {
        /* PDEATHSIG follows the forking thread: fork from the long-lived spawner. */
        pthread_sigmask(SIG_SETMASK, NULL, &mask);
        if (proc__on_reaper_thread())
            sigemptyset(&mask);
        ctx.mask = &mask;
        pid = proc__spawner_delegate(p, &ctx);
    } else {
        if (proc__on_reaper_thread()) {
            /* From an exit callback: the reaper blocks every signal, the child must not. */
            sigemptyset(&mask);
            ctx.mask = &mask;
        }
        pid = proc__spawn_child(p, &ctx);
    }
    r = proc__reaper_adopt(p, &ctx.inflight, pid);
    pthread_setcancelstate(cancel, NULL);
    return r;
}

int proc_run(proc_t *p)
{
    if (!p || p->argv)
        return -EINVAL;
    return p->target ? p->target(p->arg_copy ? p->arg_copy : p->arg) : 0;
}
