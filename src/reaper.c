/* SPDX-License-Identifier: MIT */
/*
 * The reaper: one thread per process that reaps libproc's children (and only
 * them), records exit codes, runs exit callbacks and wakes joiners.
 *
 * With pidfds the thread sleeps in epoll on every child's pidfd, so it learns
 * which child ended in O(1) and keeps working even if a host replaces our
 * SIGCHLD handler. Without pidfds it polls its children with waitpid(pid) when
 * SIGCHLD (or a periodic tick) wakes it. It never calls waitpid(-1).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Without pidfds a host may have replaced our handler: poll that often anyway. */
#define PROC_POLL_TICK_MS 100
#define PROC_EPOLL_BATCH 64
#define PROC_REAPER_STACK (2 * 1024 * 1024)

/* ----------------------------------------------------------------- SIGCHLD */

static void on_sigchld(int sig, siginfo_t *info, void *ctx)
{
    int saved = errno;
    if (atomic_load_explicit(&proc_g.sigchld_wake, memory_order_relaxed)) {
        int fd = atomic_load(&proc_g.wakefd);
        if (fd >= 0) {
            uint64_t one = 1;
            ssize_t r = write(fd, &one, sizeof one);
            (void)r; /* a full eventfd is already a pending wakeup */
        }
    }
    /* Chain to whoever had SIGCHLD before us: the host's handler must still run. */
    /* sa_handler and sa_sigaction share storage: SIG_IGN/SIG_DFL whatever the flags. */
    const struct sigaction *old = &proc_g.old_chld;
    if (old->sa_handler == SIG_IGN || old->sa_handler == SIG_DFL)
        ; /* nothing to chain to */
    else if (old->sa_flags & SA_SIGINFO)
        old->sa_sigaction(sig, info, ctx);
    else
        old->sa_handler(sig);
    errno = saved;
}

/*
 * With pidfds the reaper needs no signal at all, and a handler would only make
 * the host's poll()/select()/nanosleep() fail with EINTR at every child exit;
 * so it is installed only where it is needed: without pidfds, or to take over
 * a SIG_IGN (or SA_NOCLDWAIT) that would make the kernel discard our
 * children's statuses. In that case the host's intent is kept by reaping the
 * children that are not ours.
 */
static int install_handler_locked(void)
{
    if (proc_g.handler_installed)
        return 0;
    if (sigaction(SIGCHLD, NULL, &proc_g.old_chld) < 0)
        return -errno;
    proc_g.host_ignores_chld =
        proc_g.old_chld.sa_handler == SIG_IGN || (proc_g.old_chld.sa_flags & SA_NOCLDWAIT);
    if (proc_sys_have_pidfd() && !proc_g.host_ignores_chld)
        return 0; /* checked again by the next reaper, e.g. in a fork child */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        return -errno;
    proc_g.handler_installed = true;
    return 0;
}

static void update_wake_locked(void)
{
    bool need = !proc_sys_have_pidfd() || proc_g.host_ignores_chld || proc_g.unwatched > 0;
    atomic_store(&proc_g.sigchld_wake, need);
}

void proc_reaper_wake(void)
{
    int fd = atomic_load(&proc_g.wakefd);
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(fd, &one, sizeof one);
        (void)r;
    }
}

/* ------------------------------------------------------------------- reaping */

/*
 * p is joinable from here on (and may be closed by another thread once the
 * lock is dropped). A sentinel pipe turns readable only now, so that a
 * readable sentinel always means proc_join(p, 0) returns 0.
 */
static void mark_done_locked(proc_t *p)
{
    atomic_store(&p->state, PROC_DONE);
    proc_fd_close_locked(&p->pipe_w);
}

/*
 * Records the end of p; the caller holds the lock. Without exit callbacks p is
 * finished at once (joiners are released by the broadcast the caller owes);
 * otherwise it waits on *ended for the reaper to run its callbacks.
 */
static void mark_ended_locked(proc_t *p, int code, proc_t **ended)
{
    atomic_store(&p->exitcode, code);
    proc_g.live--;
    if (!p->callbacks || !ended) { /* no ended list: only callers for callback-less objects */
        mark_done_locked(p);
        proc_g.broadcast_due = true;
        return;
    }
    atomic_store(&p->state, PROC_ENDED);
    p->ended_next = *ended;
    *ended = p;
}

static void broadcast_if_due_locked(void)
{
    if (proc_g.broadcast_due) {
        proc_g.broadcast_due = false;
        pthread_cond_broadcast(&proc_g.cond);
    }
}

/* true when p ended and was queued on *ended; false while it still runs. */
static bool try_reap_pidfd_locked(proc_t *p, proc_t **ended)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = proc_sys_waitid_pidfd(p->pidfd, &si, WEXITED | WNOHANG);
    if (r == 0 && si.si_pid == 0)
        return false;
    /* ECHILD: someone else (a host's waitpid(-1)) took the status. */
    mark_ended_locked(p, r < 0 ? PROC_EXITCODE_UNKNOWN : proc_sys_decode_siginfo(&si), ended);
    return true;
}

static void reap_pidfd_locked(int epfd, proc_t *p, proc_t **ended)
{
    /* With joiners polling, the last one to leave re-arms the pidfd if needed. */
    if (atomic_load(&p->state) != PROC_RUNNING || p->pidfd < 0 || p->joiners > 0)
        return;
    if (!try_reap_pidfd_locked(p, ended)) {
        /* Readable but not waitable yet (e.g. ptraced): listen again. */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = p->pidfd};
        epoll_ctl(epfd, EPOLL_CTL_MOD, p->pidfd, &ev);
    }
}

static bool reap_pid_locked(proc_t *p, proc_t **ended)
{
    int status = 0;
    pid_t r;
    do {
        r = waitpid(atomic_load(&p->pid), &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    proc_g.unwatched--;
    mark_ended_locked(p, r < 0 ? PROC_EXITCODE_UNKNOWN : proc_sys_decode_status(status), ended);
    return true;
}

/* Children without a pidfd: one waitpid(pid, WNOHANG) each. */
static void poll_unwatched_locked(proc_t **ended)
{
    for (proc_t *c = proc_g.children; c && proc_g.unwatched > 0; c = c->next)
        if (atomic_load(&c->state) == PROC_RUNNING && c->pidfd < 0)
            reap_pid_locked(c, ended);
}

static proc_t *find_running_locked(pid_t pid)
{
    for (proc_t *c = proc_g.children; c; c = c->next)
        if (atomic_load(&c->state) == PROC_RUNNING && atomic_load(&c->pid) == pid)
            return c;
    return NULL;
}

/*
 * Reaps c if it has ended, whatever path it is watched by. A pidfd reaped
 * outside its own event leaves epoll, so no later event names it (and a
 * joiner's pidfd, already out, gives a harmless ENOENT).
 */
static bool reap_one_locked(proc_t *c, proc_t **ended)
{
    if (c->pidfd < 0)
        return reap_pid_locked(c, ended);
    if (!try_reap_pidfd_locked(c, ended))
        return false;
    epoll_ctl(proc_g.epfd, EPOLL_CTL_DEL, c->pidfd, NULL);
    return true;
}

/* The host asked for SIG_IGN: its children must not stay zombies because of us. */
static void reap_foreign_locked(proc_t **ended)
{
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
            return;
        proc_t *c = find_running_locked(si.si_pid);
        if (c) {
            if (!reap_one_locked(c, ended))
                return;
            continue;
        }
        if (proc_g.starting > 0)
            return; /* may be ours, not registered yet: proc_start wakes us again */
        while (waitpid(si.si_pid, NULL, WNOHANG) < 0 && errno == EINTR)
            ;
    }
}

/* Hands reaped children whose callbacks are due to the reaper loop. */
static void queue_pending_locked(proc_t *ended)
{
    while (ended) {
        proc_t *next = ended->ended_next;
        ended->ended_next = proc_g.pending;
        proc_g.pending = ended;
        ended = next;
    }
    if (proc_g.pending)
        proc_reaper_wake();
}

/* Reaps p in the calling thread if it has ended; its callbacks go to the reaper. */
static void reap_now_locked(proc_t *p)
{
    proc_t *ended = NULL;
    if (atomic_load(&p->state) == PROC_RUNNING && reap_one_locked(p, &ended)) {
        queue_pending_locked(ended);
        broadcast_if_due_locked();
    }
}

/* Runs the callbacks of a batch; each child is joinable as soon as its own ran. */
static void finish_batch(proc_t *ended)
{
    for (proc_t *p = ended, *next; p; p = next) {
        next = p->ended_next; /* once done, p may be closed */
        for (struct proc_exit_cb *cb = p->callbacks; cb; cb = cb->next)
            cb->fn(p, cb->arg);
        pthread_mutex_lock(&proc_g.lock);
        mark_done_locked(p);
        pthread_cond_broadcast(&proc_g.cond);
        pthread_mutex_unlock(&proc_g.lock);
    }
}

static void *reaper_main(void *arg)
{
    (void)arg;
    /* Set before the thread was created; only a fork child changes them, without us. */
    const int epfd = proc_g.epfd, wakefd = atomic_load(&proc_g.wakefd);
    struct epoll_event evs[PROC_EPOLL_BATCH];
    int timeout = -1; /* a new unwatched child wakes us, which recomputes it */
    for (;;) {
        int n = epoll_wait(epfd, evs, PROC_EPOLL_BATCH, timeout);
        if (n < 0)
            n = 0; /* EINTR; nothing else can fail on a valid epoll fd */
        bool woken = n == 0;
        proc_t *ended = NULL;

        pthread_mutex_lock(&proc_g.lock);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd != wakefd) {
                /* A stale event finds no object, or one that now uses fd otherwise. */
                proc_t *p = proc_fd_owner_locked(fd);
                if (p && p->pidfd == fd)
                    reap_pidfd_locked(epfd, p, &ended);
                continue;
            }
            uint64_t count;
            ssize_t r = read(wakefd, &count, sizeof count);
            (void)r;
            woken = true;
        }
        if (woken) {
            if (proc_g.unwatched > 0)
                poll_unwatched_locked(&ended);
            if (proc_g.host_ignores_chld)
                reap_foreign_locked(&ended);
            while (proc_g.pending) {
                proc_t *p = proc_g.pending;
                proc_g.pending = p->ended_next;
                p->ended_next = ended;
                ended = p;
            }
        }
        update_wake_locked();
        broadcast_if_due_locked();
        timeout = proc_g.unwatched > 0 ? PROC_POLL_TICK_MS : -1;
        pthread_mutex_unlock(&proc_g.lock);

        if (ended)
            finish_batch(ended);
    }
    return NULL;
}

/* ------------------------------------------------------------- public face */

int proc_reaper_ensure_locked(void)
{
    if (proc_g.reaper_running)
        return 0;
    int err = install_handler_locked();
    if (err < 0)
        return err;
    int wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = wakefd};
    if (wakefd < 0 || epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev) < 0) {
        err = -errno;
        goto fail;
    }

    /* The reaper must never take a signal meant for the host's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /*
     * Room for exit callbacks; not the default size, so that glibc does not
     * hand this stack, cached after a fork, to the first thread a child makes
     * (ThreadSanitizer would take that thread for the parent's reaper).
     */
    pthread_attr_setstacksize(&attr, PROC_REAPER_STACK);
    proc_g.epfd = epfd;
    atomic_store(&proc_g.wakefd, wakefd);
    int r = pthread_create(&proc_g.reaper_tid, &attr, reaper_main, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        proc_g.epfd = -1;
        atomic_store(&proc_g.wakefd, -1);
        err = -r;
        goto fail;
    }
    proc_g.reaper_running = true;
    update_wake_locked();
    return 0;

fail:
    if (wakefd >= 0)
        close(wakefd);
    if (epfd >= 0)
        close(epfd);
    return err;
}

/*
 * Reaps, in the calling thread, every child that has already ended, so that
 * proc_active_children() sees exits the reaper has not handled yet; their
 * exit callbacks still run on the reaper thread.
 */
void proc_reaper_collect_locked(void)
{
    proc_t *ended = NULL;
    for (proc_t *c = proc_g.children; c; c = c->next)
        if (atomic_load(&c->state) == PROC_RUNNING)
            reap_one_locked(c, &ended);
    queue_pending_locked(ended);
    broadcast_if_due_locked();
}

bool proc_on_reaper_thread(void)
{
    /* The flag and id are written under the lock before the thread exists. */
    return proc_g.reaper_running && pthread_equal(pthread_self(), proc_g.reaper_tid);
}

/*
 * The sentinel of a child that has exit callbacks, or no pidfd: a pipe whose
 * write end libproc closes when the child becomes joinable (a pidfd turns
 * readable at the exit, before the callbacks ran).
 */
static int open_sentinel_pipe_locked(proc_t *p)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    if (proc_fd_track_locked(pfd[0], p) < 0 || proc_fd_track_locked(pfd[1], p) < 0) {
        proc_fd_untrack_locked(pfd[0]);
        close(pfd[0]);
        close(pfd[1]);
        return -ENOMEM;
    }
    p->pipe_r = pfd[0];
    p->pipe_w = pfd[1];
    return 0;
}

static void close_sentinel_pipe_locked(proc_t *p)
{
    proc_fd_close_locked(&p->pipe_r);
    proc_fd_close_locked(&p->pipe_w);
}

/* The work of proc_reaper_watch_locked(): sentinel, pidfd, registry. */
static int watch_locked(proc_t *p)
{
    p->owner = atomic_load(&proc_g.self);
    p->pidfd = -1;
    if (p->callbacks) {
        int err = open_sentinel_pipe_locked(p);
        if (err < 0)
            return err;
    }
    if (proc_sys_have_pidfd()) {
        int fd = proc_sys_pidfd_open(atomic_load(&p->pid));
        if (fd >= 0) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = fd};
            int err = proc_fd_track_locked(fd, p);
            if (err == 0 && epoll_ctl(proc_g.epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                err = -errno;
            if (err < 0) {
                proc_fd_untrack_locked(fd);
                close(fd);
                return err;
            }
            p->pidfd = fd;
        } else if (fd != -ESRCH) {
            return fd;
        }
        /* ESRCH: already reaped by someone else; waitpid below will say ECHILD. */
    }
    if (p->pidfd < 0) {
        p->start_time = proc_sys_start_time(atomic_load(&p->pid));
        int err = p->pipe_r < 0 ? open_sentinel_pipe_locked(p) : 0;
        if (err < 0)
            return err;
        proc_g.unwatched++;
    }
    atomic_store(&p->state, PROC_RUNNING);
    proc_g.live++;
    proc_registry_add_locked(p);
    update_wake_locked();
    if (p->pidfd < 0)
        proc_reaper_wake(); /* the exit may have come before we listened */
    return 0;
}

/* Registers a freshly started child with the reaper; on failure p owns no fd. */
int proc_reaper_watch_locked(proc_t *p)
{
    int err = watch_locked(p);
    if (err < 0)
        close_sentinel_pipe_locked(p);
    return err;
}

void proc_deadline_from_timeout(struct timespec *deadline, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += timeout_ms / 1000;
    deadline->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000L;
    }
}

/* 0 when woken, -ETIMEDOUT once the deadline (NULL: none) has passed. */
int proc_deadline_wait_locked(const struct timespec *deadline)
{
    if (!deadline)
        return -pthread_cond_wait(&proc_g.cond, &proc_g.lock);
    return -pthread_cond_timedwait(&proc_g.cond, &proc_g.lock, deadline);
}

/* Milliseconds left until deadline, rounded up; 0 once it has passed. */
static int ms_until(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL +
                   (deadline->tv_nsec - now.tv_nsec);
    return ns <= 0 ? 0 : (int)((ns + 999999) / 1000000);
}

/*
 * The at-exit work's wait: as proc_deadline_wait_locked, but it wakes at least
 * every PROC_POLL_TICK_MS and then reaps, in the calling thread, every child
 * that has ended (their exit callbacks still go to the reaper thread). So the
 * exit does not depend on the reaper thread alone, just as a join does not: a
 * reaper that never got going (in a fork child, the thread setup of an
 * allocator whose lock the fork left held) cannot hold up the exit of a
 * process whose non-daemonic children have all ended.
 */
int proc_deadline_poll_locked(const struct timespec *deadline)
{
    bool last = deadline && ms_until(deadline) <= PROC_POLL_TICK_MS;
    struct timespec tick;
    if (!last)
        proc_deadline_from_timeout(&tick, PROC_POLL_TICK_MS);
    int r = proc_deadline_wait_locked(last ? deadline : &tick);
    proc_reaper_collect_locked();
    return r == -ETIMEDOUT && !last ? 0 : r;
}

/* Removal, not a zero mask: a reaped pidfd reports EPOLLHUP whatever the mask. */
static void arm_locked(proc_t *p, bool on)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = p->pidfd};
    epoll_ctl(proc_g.epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, p->pidfd, &ev);
}

/*
 * proc_join for a child without exit callbacks: the joiner waits on the pidfd
 * and reaps the child itself, instead of waiting for the reaper thread to wake
 * it. While joiners wait, the pidfd is out of the reaper's epoll, so the
 * exit wakes only them; the last joiner to leave re-arms it if the child still
 * runs, and the reaper takes over again (children nobody joins).
 */
int proc_reaper_join_pidfd(proc_t *p, int timeout_ms)
{
    struct timespec deadline;
    if (timeout_ms > 0)
        proc_deadline_from_timeout(&deadline, timeout_ms);
    int r = 0, cancel;
    /* A cancelled joiner would leave the lock held or the pidfd unwatched. */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    pthread_mutex_lock(&proc_g.lock);
    if (p->joiners++ == 0 && atomic_load(&p->state) == PROC_RUNNING)
        arm_locked(p, false);
    for (;;) {
        /* No callbacks: mark_ended_locked finishes p at once and needs no batch. */
        if (atomic_load(&p->state) == PROC_RUNNING && try_reap_pidfd_locked(p, NULL))
            broadcast_if_due_locked();
        if (atomic_load(&p->state) == PROC_DONE)
            break;
        int wait_ms = timeout_ms > 0 ? ms_until(&deadline) : timeout_ms;
        if (wait_ms == 0) {
            r = -ETIMEDOUT;
            break;
        }
        pthread_mutex_unlock(&proc_g.lock);
        struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
        int n = poll(&pfd, 1, wait_ms);
        int err = n < 0 ? errno : 0;
        pthread_mutex_lock(&proc_g.lock);
        if (err && err != EINTR) {
            r = -err;
            break;
        }
    }
    if (--p->joiners == 0 && atomic_load(&p->state) == PROC_RUNNING)
        arm_locked(p, true);
    pthread_mutex_unlock(&proc_g.lock);
    pthread_setcancelstate(cancel, NULL);
    return r;
}

/* ----------------------------------------------------------- join, signals */

int proc_join(proc_t *p, int timeout_ms)
{
    if (!p || timeout_ms < -1)
        return -EINVAL;
    if (p->kind == PROC_KIND_SELF)
        return -EDEADLK;
    if (p->kind == PROC_KIND_PARENT)
        return -ECHILD;
    int state = atomic_load(&p->state);
    if (state == PROC_NEW || state == PROC_STARTING)
        return -EINVAL;
    if (p->owner != atomic_load(&proc_g.self))
        return -ECHILD;
    if (state == PROC_DONE)
        return 0;
    /* The reaper finishes children: waiting on it from its own thread never ends. */
    if (proc_on_reaper_thread())
        return -EDEADLK;
    if (p->pidfd >= 0 && !p->callbacks)
        return proc_reaper_join_pidfd(p, timeout_ms);
    if (timeout_ms == 0) /* a poll, as proc_is_alive() */
        return proc_is_alive(p) ? -ETIMEDOUT : 0;

    struct timespec deadline;
    if (timeout_ms > 0)
        proc_deadline_from_timeout(&deadline, timeout_ms);
    int r = 0, cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    pthread_mutex_lock(&proc_g.lock);
    while (atomic_load(&p->state) != PROC_DONE && r == 0) {
        if (p->pidfd >= 0 || atomic_load(&p->state) != PROC_RUNNING) {
            r = proc_deadline_wait_locked(timeout_ms > 0 ? &deadline : NULL);
            continue;
        }
        /*
         * Without a pidfd the joiner also polls the child itself at the
         * reaper's tick, so that a join does not depend on the reaper thread
         * alone (a lost SIGCHLD, or a reaper stuck on a lock a fork left held).
         */
        bool last = timeout_ms > 0 && ms_until(&deadline) <= PROC_POLL_TICK_MS;
        struct timespec tick;
        proc_deadline_from_timeout(&tick, PROC_POLL_TICK_MS);
        r = proc_deadline_wait_locked(last ? &deadline : &tick);
        if (r == -ETIMEDOUT && !last)
            r = 0;
        reap_now_locked(p);
    }
    if (atomic_load(&p->state) == PROC_DONE)
        r = 0;
    pthread_mutex_unlock(&proc_g.lock);
    pthread_setcancelstate(cancel, NULL);
    return r;
}

bool proc_is_alive(proc_t *p)
{
    if (!p)
        return false;
    switch (p->kind) {
    case PROC_KIND_SELF:
        return true;
    case PROC_KIND_PARENT:
        return getppid() == atomic_load(&p->pid);
    case PROC_KIND_CHILD:
        break;
    }
    if (p->owner != atomic_load(&proc_g.self))
        return false;
    int state = atomic_load(&p->state);
    if (state == PROC_RUNNING) {
        /*
         * Polls, as Python's is_alive() does: a child that has ended is
         * reaped here if the reaper has not got to it yet, and the lock
         * waits out a reaper between its waitpid and the state change, so a
         * child already gone from the system is never reported alive.
         */
        pthread_mutex_lock(&proc_g.lock);
        reap_now_locked(p);
        state = atomic_load(&p->state);
        pthread_mutex_unlock(&proc_g.lock);
    }
    /* Alive until joinable: exit callbacks still running count as alive. */
    return state == PROC_RUNNING || state == PROC_ENDED;
}

/* Common checks of proc_signal and proc_signal_tree; 1 = go on and send. */
static int check_signal(proc_t *p, int sig)
{
    if (!p || sig < 0 || sig >= NSIG)
        return -EINVAL;
    if (p->kind != PROC_KIND_CHILD)
        return -ECHILD;
    int state = atomic_load(&p->state);
    if (state == PROC_NEW || state == PROC_STARTING)
        return -EINVAL;
    if (p->owner != atomic_load(&proc_g.self))
        return -ECHILD;
    return 1;
}

/*
 * True while p's pid still names p, unreaped (a zombie too when zombie_ok):
 * nobody, libproc or a host's waitpid, has freed the number yet. Without
 * pidfds a host's waitpid may have taken the child and its pid may be someone
 * else's; the start time tells a newer child with the same pid apart. (A host
 * reaping between this check and the signal cannot be excluded without
 * pidfds.)
 */
static bool unreaped_locked(proc_t *p, bool zombie_ok)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (p->pidfd >= 0) {
        if (proc_sys_waitid_pidfd(p->pidfd, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
            return false;
        return zombie_ok || si.si_pid == 0;
    }
    pid_t pid = atomic_load(&p->pid);
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return false;
    if (si.si_pid != 0 && !zombie_ok)
        return false;
    return !p->start_time || proc_sys_start_time(pid) == p->start_time;
}

/*
 * Sends sig to a running child; 0 once it was reaped (its pid may belong to
 * someone else now). The pidfd names this process, never a successor with the
 * same pid; without one, the lock keeps anyone from reaping it (and freeing
 * the pid) between the check and the kill.
 */
int proc_send_signal_locked(proc_t *p, int sig)
{
    if (atomic_load(&p->state) != PROC_RUNNING)
        return 0;
    int r = 0;
    if (p->pidfd >= 0) {
        r = proc_sys_pidfd_signal(p->pidfd, sig);
    } else {
        /* Our child by that pid, not yet ended, and not a newer one. */
        if (!unreaped_locked(p, false))
            return 0;
        if (kill(atomic_load(&p->pid), sig) < 0)
            r = -errno;
    }
    return r == -ESRCH ? 0 : r;
}

int proc_signal(proc_t *p, int sig)
{
    int r = check_signal(p, sig);
    if (r <= 0)
        return r;
    pthread_mutex_lock(&proc_g.lock);
    r = proc_send_signal_locked(p, sig);
    pthread_mutex_unlock(&proc_g.lock);
    return r;
}

int proc_terminate(proc_t *p)
{
    return proc_signal(p, SIGTERM);
}

int proc_kill(proc_t *p)
{
    return proc_signal(p, SIGKILL);
}

/*
 * The group's id is the child's pid. With PIDFD_SIGNAL_PROCESS_GROUP (Linux
 * 6.9) the pidfd names the group itself, as long as any member lives. Without
 * it: while the child is unreaped (alive or a zombie) its pid holds the
 * number, so the group is its. After the reap, the kernel keeps the number
 * allocated while any member of the group lives, so no process can have it
 * as its pid then: a process that has it means the group is gone and the
 * number reused, and nothing is sent. (The whole group ending and the number
 * going to a new group leader between that check and killpg() cannot be
 * excluded without the pidfd.)
 */
static int signal_group_locked(proc_t *p, int sig)
{
    if (p->pidfd >= 0) {
        int r = proc_sys_pidfd_signal_group(p->pidfd, sig);
        if (r != -EINVAL && r != -ENOSYS)
            return r == -ESRCH ? 0 : r;
    }
    pid_t pid = atomic_load(&p->pid);
    bool ours = atomic_load(&p->state) == PROC_RUNNING && unreaped_locked(p, true);
    if (!ours && (kill(pid, 0) == 0 || errno != ESRCH))
        return 0; /* someone else has the number now */
    if (killpg(pid, sig) < 0)
        return errno == ESRCH ? 0 : -errno;
    return 0;
}

int proc_signal_tree(proc_t *p, int sig)
{
    int r = check_signal(p, sig);
    if (r <= 0)
        return r;
    if (!p->new_group)
        return -EINVAL;
    pthread_mutex_lock(&proc_g.lock);
    r = signal_group_locked(p, sig);
    pthread_mutex_unlock(&proc_g.lock);
    return r;
}
