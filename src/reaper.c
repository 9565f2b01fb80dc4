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
#include "core.h"
#include "thread.h"

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

#define PROC_EPOLL_BATCH 64
#define PROC_REAPER_STACK (2 * 1024 * 1024)

/* ----------------------------------------------------------------- SIGCHLD */

static void on_sigchld(int sig, siginfo_t *info, void *ctx)
{
    int saved = errno;
    if (atomic_load_explicit(&proc__g.sigchld_wake, memory_order_relaxed)) {
        int fd = atomic_load(&proc__g.wakefd);
        if (fd >= 0) {
            uint64_t one = 1;
            ssize_t r = write(fd, &one, sizeof one);
            (void)r; /* a full eventfd is already a pending wakeup */
        }
    }
    /* Chain to whoever had SIGCHLD before us: the host's handler must still run. */
    /* sa_handler and sa_sigaction share storage: SIG_IGN/SIG_DFL whatever the flags. */
    const struct sigaction *old = &proc__g.old_chld;
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
    if (proc__g.handler_installed)
        return 0;
    if (sigaction(SIGCHLD, NULL, &proc__g.old_chld) < 0)
        return -errno;
    proc__g.host_ignores_chld =
        proc__g.old_chld.sa_handler == SIG_IGN || (proc__g.old_chld.sa_flags & SA_NOCLDWAIT);
    if (proc__sys_have_pidfd() && !proc__g.host_ignores_chld)
        return 0; /* checked again by the next reaper, e.g. in a fork child */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        return -errno;
    proc__g.handler_installed = true;
    return 0;
}

static void update_wake_locked(void)
{
    bool need = !proc__sys_have_pidfd() || proc__g.host_ignores_chld || proc__g.unwatched > 0;
    atomic_store(&proc__g.sigchld_wake, need);
}

void proc__reaper_wake(void)
{
    int fd = atomic_load(&proc__g.wakefd);
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
    atomic_store(&p->state, PROC__DONE);
    proc__fd_close_locked(&p->pipe_w);
}

/*
 * Records the end of p; the caller holds the lock. Without exit callbacks p is
 * finished at once (joiners are released by the broadcast the caller owes);
 * otherwise it waits on *ended for the reaper to run its callbacks.
 */
static void mark_ended_locked(proc_t *p, int code, const struct rusage *ru, proc_t **ended)
{
    if (ru) {
        p->rusage = *ru;
        p->have_rusage = true;
    }
    atomic_store(&p->exitcode, code);
    proc__g.live--;
    if (!p->callbacks || !ended) { /* no ended list: only callers for callback-less objects */
        mark_done_locked(p);
        proc__g.broadcast_due = true;
        return;
    }
    atomic_store(&p->state, PROC__ENDED);
    p->ended_next = *ended;
    *ended = p;
}

static void broadcast_if_due_locked(void)
{
    if (proc__g.broadcast_due) {
        proc__g.broadcast_due = false;
        pthread_cond_broadcast(&proc__g.cond);
    }
}

/* true when p ended and was queued on *ended; false while it still runs. */
static bool try_reap_pidfd_locked(proc_t *p, proc_t **ended)
{
    siginfo_t si;
    struct rusage ru;
    memset(&si, 0, sizeof si);
    int r = proc__sys_waitid_pidfd(p->pidfd, &si, WEXITED | WNOHANG, &ru);
    if (r == 0 && si.si_pid == 0)
        return false;
    /* ECHILD: someone else (a host's waitpid(-1)) took the status. */
    if (r < 0)
        mark_ended_locked(p, PROC_EXITCODE_UNKNOWN, NULL, ended);
    else
        mark_ended_locked(p, proc__sys_decode_siginfo(&si), &ru, ended);
    return true;
}

static void reap_pidfd_locked(int epfd, proc_t *p, proc_t **ended)
{
    /* With joiners polling, the last one to leave re-arms the pidfd if needed. */
    if (atomic_load(&p->state) != PROC__RUNNING || p->pidfd < 0 || p->joiners > 0)
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
    struct rusage ru;
    pid_t r;
    do {
        r = wait4(atomic_load(&p->pid), &status, WNOHANG, &ru);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    proc__g.unwatched--;
    if (r < 0)
        mark_ended_locked(p, PROC_EXITCODE_UNKNOWN, NULL, ended);
    else
        mark_ended_locked(p, proc__sys_decode_status(status), &ru, ended);
    return true;
}

/* Children without a pidfd: one waitpid(pid, WNOHANG) each. */
static void poll_unwatched_locked(proc_t **ended)
{
    for (proc_t *c = proc__g.children; c && proc__g.unwatched > 0; c = c->next)
        if (atomic_load(&c->state) == PROC__RUNNING && c->pidfd < 0)
            reap_pid_locked(c, ended);
}

static proc_t *find_running_locked(pid_t pid)
{
    for (proc_t *c = proc__g.children; c; c = c->next)
        if (atomic_load(&c->state) == PROC__RUNNING && atomic_load(&c->pid) == pid)
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
    epoll_ctl(proc__g.epfd, EPOLL_CTL_DEL, c->pidfd, NULL);
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
        if (proc__g.starting > 0)
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
        ended->ended_next = proc__g.pending;
        proc__g.pending = ended;
        ended = next;
    }
    if (proc__g.pending)
        proc__reaper_wake();
}

void proc__reaper_reap_now_locked(proc_t *p)
{
    proc_t *ended = NULL;
    if (atomic_load(&p->state) == PROC__RUNNING && reap_one_locked(p, &ended)) {
        queue_pending_locked(ended);
        broadcast_if_due_locked();
    }
}

/*
 * Runs the callbacks of a batch; each child is joinable as soon as its own
 * ran. The last one's join sees in_callbacks cleared with it.
 */
static void finish_batch(proc_t *ended)
{
    for (proc_t *p = ended, *next; p; p = next) {
        next = p->ended_next; /* once done, p may be closed */
        for (struct proc__exit_cb *cb = p->callbacks; cb; cb = cb->next)
            cb->fn(p, cb->arg);
        pthread_mutex_lock(&proc__g.lock);
        mark_done_locked(p);
        if (!next)
            proc__g.in_callbacks = false;
        pthread_cond_broadcast(&proc__g.cond);
        pthread_mutex_unlock(&proc__g.lock);
    }
}

static void *reaper_main(void *arg)
{
    (void)arg;
    /* Set before the thread was created; only a fork child changes them, without us. */
    const int epfd = proc__g.epfd, wakefd = atomic_load(&proc__g.wakefd);
    struct epoll_event evs[PROC_EPOLL_BATCH];
    int timeout = -1; /* a new unwatched child wakes us, which recomputes it */
    for (;;) {
        int n = epoll_wait(epfd, evs, PROC_EPOLL_BATCH, timeout);
        if (n < 0)
            n = 0; /* EINTR; nothing else can fail on a valid epoll fd */
        bool woken = n == 0;
        proc_t *ended = NULL;

        pthread_mutex_lock(&proc__g.lock);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd != wakefd) {
                /* A stale event finds no object, or one that now uses fd otherwise. */
                proc_t *p = proc__fd_owner_locked(fd);
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
            if (proc__g.unwatched > 0)
                poll_unwatched_locked(&ended);
            if (proc__g.host_ignores_chld)
                reap_foreign_locked(&ended);
            while (proc__g.pending) {
                proc_t *p = proc__g.pending;
                proc__g.pending = p->ended_next;
                p->ended_next = ended;
                ended = p;
            }
        }
        update_wake_locked();
        broadcast_if_due_locked();
        timeout = proc__g.unwatched > 0 ? PROC__POLL_TICK_MS : -1;
        proc__g.in_callbacks = ended != NULL; /* a fork server is not forked meanwhile */
        pthread_mutex_unlock(&proc__g.lock);

        if (ended)
            finish_batch(ended);
    }
    return NULL;
}

/* ------------------------------------------------------------- public face */

int proc__reaper_ensure_locked(void)
{
    if (proc__g.reaper_running)
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

    /*
     * Room for exit callbacks; not the default size, so that glibc does not
     * hand this stack, cached after a fork, to the first thread a child makes
     * (ThreadSanitizer would take that thread for the parent's reaper).
     */
    proc__g.epfd = epfd;
    atomic_store(&proc__g.wakefd, wakefd);
    err = proc__thread_start(&proc__g.reaper_tid, reaper_main, NULL, true, PROC_REAPER_STACK);
    if (err < 0) {
        proc__g.epfd = -1;
        atomic_store(&proc__g.wakefd, -1);
        goto fail;
    }
    proc__g.reaper_running = true;
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
void proc__reaper_collect_locked(void)
{
    proc_t *ended = NULL;
    for (proc_t *c = proc__g.children; c; c = c->next)
        if (atomic_load(&c->state) == PROC__RUNNING)
            reap_one_locked(c, &ended);
    queue_pending_locked(ended);
    broadcast_if_due_locked();
}

bool proc__on_reaper_thread(void)
{
    /* The flag and id are written under the lock before the thread exists. */
    return proc__g.reaper_running && pthread_equal(pthread_self(), proc__g.reaper_tid);
}

/*
 * A registered child joins what the reaper watches: its pidfd in epoll, or,
 * without one, the count of children it polls for.
 */
int proc__reaper_adopt(proc_t *p, struct proc__inflight *f, pid_t pid)
{
    pthread_mutex_lock(&proc__g.lock);
    int r = pid < 0 ? pid : 0;
    int pidfd = f->pidfd;
    f->pidfd = -1;
    if (r == 0) {
        atomic_store(&p->pid, pid);
        r = proc__registry_adopt_locked(p, pidfd);
    } else if (pidfd >= 0) {
        close(pidfd);
    }
    if (r == 0 && p->pidfd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = p->pidfd};
        if (epoll_ctl(proc__g.epfd, EPOLL_CTL_ADD, p->pidfd, &ev) < 0) {
            r = -errno;
            proc__registry_drop_locked(p);
        }
    } else if (r == 0) {
        proc__g.unwatched++;
        proc__reaper_wake(); /* the exit may have come before we listened */
    }
    /* Only now: until the fd table had the parent's pipe ends, forks closed them as in flight. */
    proc__inflight_unlink_locked(f);
    if (r == 0) {
        atomic_store(&p->state, PROC__RUNNING);
        proc__g.live++;
        proc__g.starting--;
        update_wake_locked();
    } else {
        atomic_store(&p->state, PROC__NEW);
    }
    pthread_mutex_unlock(&proc__g.lock);
    if (r < 0) {
        if (pid > 0) {
            /* Started but not registered: taken back rather than lost. The
             * start still counts, so a reaper reaping the host's children
             * leaves it alone and its pid stays this child's until here. */
            proc__sys_kill_reap(-1, pid);
            atomic_store(&p->pid, 0);
        }
        pthread_mutex_lock(&proc__g.lock);
        proc__g.starting--;
        pthread_mutex_unlock(&proc__g.lock);
    }
    if (proc__g.host_ignores_chld)
        proc__reaper_wake();
    return r;
}

/* Removal, not a zero mask: a reaped pidfd reports EPOLLHUP whatever the mask. */
void proc__reaper_arm_locked(proc_t *p, bool on)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = p->pidfd};
    epoll_ctl(proc__g.epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, p->pidfd, &ev);
}

/* Without callbacks a reap finishes p at once and needs no batch. */
bool proc__reaper_try_finish_locked(proc_t *p)
{
    if (atomic_load(&p->state) == PROC__RUNNING && try_reap_pidfd_locked(p, NULL))
        broadcast_if_due_locked();
    return atomic_load(&p->state) == PROC__DONE;
}
