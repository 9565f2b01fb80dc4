/* SPDX-License-Identifier: MIT */
/*
 * Signals to children: proc_signal and its shorthands, and proc_signal_tree
 * for a child's process group. A signal never reaches a process that only
 * reuses a child's pid: the pidfd names the child itself, and without pidfds
 * the lock keeps anyone from reaping it between the check and the kill.
 */
#include "core.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>

/* Common checks of proc_signal and proc_signal_tree; 1 = go on and send. */
static int check_signal(proc_t *p, int sig)
{
    if (!p || sig < 0 || sig >= NSIG)
        return -EINVAL;
    if (p->kind != PROC__KIND_CHILD)
        return -ECHILD;
    int r = proc__check_own_child(p);
    return r < 0 ? r : 1;
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
        if (proc__sys_waitid_pidfd(p->pidfd, &si, WEXITED | WNOHANG | WNOWAIT, NULL) < 0)
            return false;
        return zombie_ok || si.si_pid == 0;
    }
    pid_t pid = atomic_load(&p->pid);
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return false;
    if (si.si_pid != 0 && !zombie_ok)
        return false;
    return !p->start_time || proc__sys_start_time(pid) == p->start_time;
}

/*
 * Sends sig to a running child; 0 once it was reaped (its pid may belong to
 * someone else now). The pidfd names this process, never a successor with the
 * same pid; without one, the lock keeps anyone from reaping it (and freeing
 * the pid) between the check and the kill.
 */
int proc__signal_send_locked(proc_t *p, int sig)
{
    if (atomic_load(&p->state) != PROC__RUNNING)
        return 0;
    int r = 0;
    if (p->pidfd >= 0) {
        r = proc__sys_pidfd_signal(p->pidfd, sig);
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
    pthread_mutex_lock(&proc__g.lock);
    r = proc__signal_send_locked(p, sig);
    pthread_mutex_unlock(&proc__g.lock);
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
        int r = proc__sys_pidfd_signal_group(p->pidfd, sig);
        if (r != -EINVAL && r != -ENOSYS)
            return r == -ESRCH ? 0 : r;
    }
    pid_t pid = atomic_load(&p->pid);
    bool ours = atomic_load(&p->state) == PROC__RUNNING && unreaped_locked(p, true);
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
    pthread_mutex_lock(&proc__g.lock);
    r = signal_group_locked(p, sig);
    pthread_mutex_unlock(&proc__g.lock);
    return r;
}
