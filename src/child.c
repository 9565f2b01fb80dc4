/* SPDX-License-Identifier: MIT */
/*
 * A callback-mode child between its creation and its target, forked by the
 * caller (spawn.c) or cloned by the fork server (forkserver.c): it becomes
 * its own object, then sets itself up as the parent asked, runs the target
 * and the exit work, and _exits. Python runs arbitrary code after fork too;
 * this is that exception to async-signal-safety.
 */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static void write_all(int fd, const void *buf, size_t len)
{
    ssize_t r;
    do {
        r = write(fd, buf, len);
    } while (r < 0 && errno == EINTR);
}

static void report(int fd, int err, bool with_pid)
{
    if (fd < 0)
        return;
    if (with_pid) {
        struct proc__child_status st = {.err = err, .pid = getpid()};
        write_all(fd, &st, sizeof st);
    } else if (err) {
        write_all(fd, &err, sizeof err);
    }
}

void proc__child_fail(int fd, int err, bool with_pid)
{
    report(fd, err, with_pid);
    _exit(127);
}

/* PDEATHSIG fires when the forking thread ends: callers make sure it is long-lived. */
void proc__child_daemon_of(pid_t parent)
{
    /* Cannot fail for SIGKILL on Linux; where unsupported there is no watch at all. */
    (void)proc__sys_set_pdeathsig(SIGKILL);
    if (getppid() != parent)
        raise(SIGKILL); /* the parent died before the prctl took effect */
}

void proc__child_dup_stdio(const int fds[3])
{
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            dup2(fds[i], i);
}

/*
 * After the fork handlers reset libproc (or the fork server's child did the
 * same): p becomes this process's own object, and the parent object carries
 * the parent's name and key.
 */
void proc__child_become(proc_t *p, pid_t parent, struct proc__name_node *parent_name,
                        unsigned char *parent_key, size_t parent_key_len)
{
    proc_t *par = &proc__g.parent_obj;
    memset(par, 0, sizeof *par);
    par->kind = PROC__KIND_PARENT;
    /* The parent's name node is a copy in our memory and nobody frees it here. */
    atomic_store(&par->name, parent_name);
    atomic_store(&par->pid, parent);
    atomic_store(&par->state, PROC__RUNNING);
    atomic_store(&par->exitcode, PROC_EXITCODE_NONE);
    par->owner = parent;
    par->pidfd = par->pipe_r = par->pipe_w = -1;
    par->authkey = parent_key;
    par->authkey_len = parent_key_len;
    proc__g.have_parent = true;

    pid_t self = getpid();
    p->kind = PROC__KIND_SELF;
    atomic_store(&p->pid, self);
    atomic_store(&p->state, PROC__RUNNING);
    p->owner = self;
    p->prev = p->next = NULL;
    for (int i = 0; i < 3; i++)
        p->stdio_parent[i] = -1; /* the parent's ends: closed here by the fork handler */
    proc__g.current = p;
    proc__g.identity = p->identity;
    proc__g.counter = 0;
}

/* The directories: the caller's (fork server), then the one asked for. */
static int enter_dirs(const proc_t *p, const struct proc__child_setup *s)
{
    if (s->here_fd >= 0 && fchdir(s->here_fd) < 0)
        return errno;
    if (p->cwd && chdir(p->cwd) < 0)
        return errno;
    return 0;
}

void proc__child_run(proc_t *p, const struct proc__child_setup *s)
{
    if (p->daemon)
        proc__child_daemon_of(s->parent);
    if (p->new_group)
        setpgid(0, 0);
    int err = enter_dirs(p, s);
    if (err)
        proc__child_fail(s->status_w, err, s->report_pid);
    if (s->here_fd >= 0)
        close(s->here_fd);
    report(s->status_w, 0, s->report_pid);
    if (s->status_w >= 0)
        close(s->status_w);
    proc__child_dup_stdio(s->stdio);
    for (int i = 0; i < 3; i++) /* no exec will close them here */
        if (s->stdio[i] >= 0)
            close(s->stdio[i]);
    if (s->mask)
        pthread_sigmask(SIG_SETMASK, s->mask, NULL);
    if (p->envp)
        environ = p->envp;
    void *arg = p->arg_copy ? p->arg_copy : p->arg;
    int ret = p->target ? p->target(arg) : 0;
    proc__exit_work();
    fflush(NULL);
    _exit(ret & 0xff);
}
