/* SPDX-License-Identifier: MIT */
/*
 * Waiting for children: proc_join, proc_is_alive, and the work at exit
 * (Python's: daemonic children ended, the others waited for). No wait here
 * depends on the reaper thread alone: each also reaps in the calling thread.
 */
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

/* How long daemonic children get between SIGTERM and SIGKILL at exit. */
#define PROC_DAEMON_GRACE_MS 1000

/*
 * As proc__cond_wait on proc__g.cond, but it wakes at least every
 * PROC__POLL_TICK_MS and then reaps, in the calling thread, every child that
 * has ended (their exit callbacks still go to the reaper thread). So the exit
 * does not depend on the reaper thread alone, just as a join does not: a
 * reaper that never got going (in a fork child, the thread setup of an
 * allocator whose lock the fork left held) cannot hold up the exit of a
 * process whose non-daemonic children have all ended.
 */
static int wait_polling_locked(const struct proc__deadline *d)
{
    bool last = d->timeout_ms >= 0 && proc__deadline_left_ms(d) <= PROC__POLL_TICK_MS;
    struct proc__deadline tick;
    proc__deadline_init(&tick, PROC__POLL_TICK_MS);
    int r = proc__cond_wait(&proc__g.cond, &proc__g.lock, last ? d : &tick);
    proc__reaper_collect_locked();
    return r == -ETIMEDOUT && !last ? 0 : r;
}

/*
 * proc_join for a child without exit callbacks: the joiner waits on the pidfd
 * and reaps the child itself, instead of waiting for the reaper thread to wake
 * it. While joiners wait, the pidfd is out of the reaper's epoll, so the
 * exit wakes only them; the last joiner to leave re-arms it if the child still
 * runs, and the reaper takes over again (children nobody joins).
 */
static int join_pidfd(proc_t *p, const struct proc__deadline *d)
{
    int r = 0, cancel;
    /* A cancelled joiner would leave the lock held or the pidfd unwatched. */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    pthread_mutex_lock(&proc__g.lock);
    if (p->joiners++ == 0 && atomic_load(&p->state) == PROC__RUNNING)
        proc__reaper_arm_locked(p, false);
    while (!proc__reaper_try_finish_locked(p)) {
        int wait_ms = proc__deadline_left_ms(d);
        if (wait_ms == 0) {
            r = -ETIMEDOUT;
            break;
        }
        pthread_mutex_unlock(&proc__g.lock);
        struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
        int n = poll(&pfd, 1, wait_ms);
        int err = n < 0 ? errno : 0;
        pthread_mutex_lock(&proc__g.lock);
        if (err && err != EINTR) {
            r = -err;
            break;
        }
    }
    if (--p->joiners == 0 && atomic_load(&p->state) == PROC__RUNNING)
        proc__reaper_arm_locked(p, true);
    pthread_mutex_unlock(&proc__g.lock);
    pthread_setcancelstate(cancel, NULL);
    return r;
}

/* proc_join for the others: woken by the reaper through proc__g.cond. */
static int join_cond(proc_t *p, const struct proc__deadline *d)
{
    int r = 0, cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    pthread_mutex_lock(&proc__g.lock);
    while (atomic_load(&p->state) != PROC__DONE && r == 0) {
        if (p->pidfd >= 0 || atomic_load(&p->state) != PROC__RUNNING) {
            r = proc__cond_wait(&proc__g.cond, &proc__g.lock, d);
            continue;
        }
        /*
         * Without a pidfd the joiner also polls the child itself at the
         * reaper's tick, so that a join does not depend on the reaper thread
         * alone (a lost SIGCHLD, or a reaper stuck on a lock a fork left held).
         */
        bool last = d->timeout_ms > 0 && proc__deadline_left_ms(d) <= PROC__POLL_TICK_MS;
        struct proc__deadline tick;
        proc__deadline_init(&tick, PROC__POLL_TICK_MS);
        r = proc__cond_wait(&proc__g.cond, &proc__g.lock, last ? d : &tick);
        if (r == -ETIMEDOUT && !last)
            r = 0;
        proc__reaper_reap_now_locked(p);
    }
    if (atomic_load(&p->state) == PROC__DONE)
        r = 0;
    pthread_mutex_unlock(&proc__g.lock);
    pthread_setcancelstate(cancel, NULL);
    return r;
}

int proc_join(proc_t *p, int timeout_ms)
{
    struct proc__deadline d;
    if (!p || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    if (p->kind == PROC__KIND_SELF)
        return -EDEADLK;
    if (p->kind == PROC__KIND_PARENT)
        return -ECHILD;
    int r = proc__check_own_child(p);
    if (r < 0)
        return r;
    if (atomic_load(&p->state) == PROC__DONE)
        return 0;
    /* The reaper finishes children: waiting on it from its own thread never ends. */
    if (proc__on_reaper_thread())
        return -EDEADLK;
    if (p->pidfd >= 0 && !p->callbacks)
        return join_pidfd(p, &d);
    if (timeout_ms == 0) /* a poll, as proc_is_alive() */
        return proc_is_alive(p) ? -ETIMEDOUT : 0;
    return join_cond(p, &d);
}

static bool stop_steps_valid(const proc_stop_step_t *steps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (steps[i].sig < 0 || steps[i].sig >= NSIG || steps[i].timeout_ms < PROC_WAIT_FOREVER)
            return false;
    return n > 0;
}

int proc_stop(proc_t *p, const proc_stop_step_t *steps, size_t n)
{
    static const proc_stop_step_t python_way[] = {{SIGTERM, 3000}, {SIGKILL, PROC_WAIT_FOREVER}};
    if (!steps) {
        steps = python_way;
        n = sizeof python_way / sizeof python_way[0];
    }
    if (!p || !stop_steps_valid(steps, n) || p->kind != PROC__KIND_CHILD)
        return -EINVAL;
    int r = proc_join(p, 0); /* also the checks: not started, not ours */
    for (size_t i = 0; i < n && r == -ETIMEDOUT; i++) {
        if (steps[i].sig) {
            r = p->new_group ? proc_signal_tree(p, steps[i].sig) : proc_signal(p, steps[i].sig);
            if (r < 0)
                return r;
        }
        r = proc_join(p, steps[i].timeout_ms);
    }
    return r;
}

/*
 * The lowest index whose child has ended, -ETIMEDOUT if none, or an error of
 * proc_join. Looks at every entry (fds NULL), or at those whose sentinel woke
 * and those without a pidfd, whose sentinel pipe the reaper closes only at
 * its next look (and whose join may reap sooner by itself).
 */
static int first_ended(proc_t *const procs[], size_t n, const struct pollfd *fds)
{
    for (size_t i = 0; i < n; i++) {
        if (fds && !fds[i].revents && procs[i]->pidfd >= 0)
            continue;
        int r = proc_join(procs[i], 0);
        if (r != -ETIMEDOUT)
            return r == 0 ? (int)i : r;
    }
    return -ETIMEDOUT;
}

int proc_wait_any(proc_t *const procs[], size_t n, int timeout_ms)
{
    struct proc__deadline d;
    if (!procs || n == 0 || n > INT_MAX || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    struct pollfd *fds = calloc(n, sizeof *fds);
    if (!fds)
        return -ENOMEM;
    int r = 0;
    bool lagging = false; /* some entry has no pidfd: look again at every tick */
    for (size_t i = 0; i < n && r >= 0; i++) {
        r = procs[i] ? proc_sentinel(procs[i]) : -EINVAL;
        fds[i] = (struct pollfd){.fd = r, .events = POLLIN};
        lagging = lagging || (r >= 0 && procs[i]->pidfd < 0);
    }
    if (r >= 0)
        r = first_ended(procs, n, NULL);
    while (r == -ETIMEDOUT) {
        int wait_ms = proc__deadline_left_ms(&d);
        if (wait_ms == 0)
            break;
        if (lagging && (wait_ms < 0 || wait_ms > PROC__POLL_TICK_MS))
            wait_ms = PROC__POLL_TICK_MS;
        int k = poll(fds, (nfds_t)n, wait_ms);
        if (k < 0 && errno != EINTR) {
            r = -errno;
            break;
        }
        r = first_ended(procs, n, fds);
    }
    free(fds);
    return r;
}

bool proc_is_alive(proc_t *p)
{
    if (!p)
        return false;
    switch (p->kind) {
    case PROC__KIND_SELF:
        return true;
    case PROC__KIND_PARENT:
        return getppid() == atomic_load(&p->pid);
    case PROC__KIND_CHILD:
        break;
    }
    if (p->owner != proc__self_pid())
        return false;
    int state = atomic_load(&p->state);
    if (state == PROC__RUNNING) {
        /*
         * Polls, as Python's is_alive() does: a child that has ended is
         * reaped here if the reaper has not got to it yet, and the lock
         * waits out a reaper between its waitpid and the state change, so a
         * child already gone from the system is never reported alive.
         */
        pthread_mutex_lock(&proc__g.lock);
        proc__reaper_reap_now_locked(p);
        state = atomic_load(&p->state);
        pthread_mutex_unlock(&proc__g.lock);
    }
    /* Alive until joinable: exit callbacks still running count as alive. */
    return state == PROC__RUNNING || state == PROC__ENDED;
}

/* ------------------------------------------------------------------ at exit */

static proc_t *first_unfinished_locked(bool daemons)
{
    for (proc_t *c = proc__g.children; c; c = c->next)
        if (atomic_load(&c->state) != PROC__DONE && c->daemon == daemons)
            return c;
    return NULL;
}

static void signal_daemons_locked(int sig)
{
    for (proc_t *c = proc__g.children; c; c = c->next)
        if (c->daemon)
            proc__signal_send_locked(c, sig);
}

/*
 * Python's behaviour at exit: daemonic children are terminated (SIGKILL after
 * one grace period shared by all of them), non-daemonic ones waited for, and
 * no child is started any more. Runs when a process exits normally and after
 * a callback-mode target returns, and only sees the calling process's own
 * children. All under the lock: another thread may close finished objects
 * meanwhile, so no pointer is kept across a wait.
 */
void proc__exit_work(void)
{
    pthread_mutex_lock(&proc__g.lock);
    /* From here on proc_start() refuses: an exit callback that replaces the
     * daemons this work ends would otherwise keep the exit from finishing. */
    proc__g.exiting = true;
    if (proc__g.children) {
        int cancel;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
        signal_daemons_locked(SIGTERM);
        /* The reaper cannot wait for what only it can finish. */
        bool can_wait = !proc__on_reaper_thread();
        struct proc__deadline grace, forever;
        proc__deadline_init(&grace, PROC_DAEMON_GRACE_MS);
        proc__deadline_init(&forever, PROC_WAIT_FOREVER);
        bool killed = false;
        while (can_wait && first_unfinished_locked(true)) {
            if (killed) {
                wait_polling_locked(&forever);
            } else if (wait_polling_locked(&grace) == -ETIMEDOUT) {
                signal_daemons_locked(SIGKILL);
                killed = true;
            }
        }
        while (can_wait && first_unfinished_locked(false))
            wait_polling_locked(&forever);
        pthread_setcancelstate(cancel, NULL);
    }
    pthread_mutex_unlock(&proc__g.lock);
}
