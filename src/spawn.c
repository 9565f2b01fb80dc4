/* SPDX-License-Identifier: MIT */
/*
 * One start in the calling thread: the exec plan (PATH lookup in the parent,
 * so the child only calls execve), the standard streams, then the fork path
 * (callback mode, and exec mode where posix_spawn cannot do it) or
 * posix_spawn, or a request to the fork server (forkserver_client.c); and
 * the exec child's side (a callback-mode child is child.c's).
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------ PATH lookup */

static bool is_executable_file(const char *path, bool *exists)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return false;
    *exists = true;
    return S_ISREG(st.st_mode) && faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0;
}

/* The child's PATH: a replaced environment brings its own, as in Python's subprocess. */
static const char *child_path(const proc_t *p)
{
    const char *path = NULL;
    if (p->envp) {
        for (char **e = p->envp; *e && !path; e++)
            if (strncmp(*e, "PATH=", 5) == 0)
                path = *e + 5;
    } else {
        path = getenv("PATH");
    }
    return path ? path : "/bin:/usr/bin";
}

/*
 * execvp(3) rules, done in the parent so the child only calls execve: a name
 * with a '/' is used as is; otherwise the first executable regular file along
 * PATH wins, and a miss is EACCES if some candidate existed, else ENOENT. A
 * relative entry ("" is ".") is relative to the directory the child execs in:
 * with proc_set_cwd() the candidate is looked up as <cwd>/<entry>/<file>, and
 * <entry>/<file> is what the child executes after its chdir.
 */
static int plan_exec(struct proc__start_ctx *plan, const proc_t *p)
{
    const char *file = p->argv[0];
    plan->envp = p->envp ? p->envp : environ;
    if (!*file)
        return -ENOENT;
    if (strchr(file, '/')) {
        plan->path = strdup(file);
        return plan->path ? 0 : -ENOMEM;
    }
    const char *path = child_path(p);
    size_t flen = strlen(file), clen = p->cwd ? strlen(p->cwd) + 1 : 0;
    /* full: "<cwd>/" then the candidate "<entry>/<file>", which buf points at */
    char *full = malloc(clen + strlen(path) + flen + 3);
    if (!full)
        return -ENOMEM;
    if (clen) {
        memcpy(full, p->cwd, clen - 1);
        full[clen - 1] = '/';
    }
    char *buf = full + clen;
    bool seen = false;
    for (const char *dir = path;; dir++) {
        const char *end = strchrnul(dir, ':');
        size_t dlen = (size_t)(end - dir);
        if (dlen == 0) {
            buf[0] = '.';
            dlen = 1;
        } else {
            memcpy(buf, dir, dlen);
        }
        buf[dlen] = '/';
        memcpy(buf + dlen + 1, file, flen + 1);
        if (is_executable_file(buf[0] == '/' ? buf : full, &seen)) {
            plan->path = strdup(buf);
            free(full);
            return plan->path ? 0 : -ENOMEM;
        }
        dir = end;
        if (!*end)
            break;
    }
    free(full);
    return seen ? -EACCES : -ENOENT;
}

/* ------------------------------------------------------- standard streams */

static void inflight_push(struct proc__start_ctx *ctx, int fd)
{
    ctx->inflight.fds[ctx->inflight.n++] = fd;
}

/* Closes the child's ends and, unless the child started, the parent's (still in flight). */
static void close_start_fds_locked(proc_t *p, struct proc__start_ctx *ctx, bool started)
{
    for (int i = 0; i < 3; i++) {
        if (ctx->child_fd[i] >= 0)
            close(ctx->child_fd[i]);
        ctx->child_fd[i] = -1;
    }
    ctx->inflight.n = 0;
    if (started)
        return;
    for (int i = 0; i < 3; i++) {
        if (ctx->inflight.parent_fds[i] >= 0) {
            close(ctx->inflight.parent_fds[i]);
            ctx->inflight.parent_fds[i] = -1;
            p->stdio_parent[i] = -1;
        }
    }
}

/*
 * Opens what the child's streams need, under the lock (the fork handler must
 * see a consistent picture): the parent's pipe ends and the child's ends are
 * in flight until the reaper registers the child, so every fork child closes
 * the parent's, and every one but this start's own the child's. A child end
 * that landed on 0..2 is moved up, so that the child's dup2s cannot overwrite
 * one another (a 0<->1 swap included).
 */
static int open_streams(proc_t *p, struct proc__start_ctx *ctx)
{
    int r = 0;
    pthread_mutex_lock(&proc__g.lock);
    for (int i = 0; i < 3 && r == 0; i++) {
        int how = p->stdio_how[i], child = -1;
        /* An fd equal to i is dup'd like any other: dup2 onto i then clears
         * its FD_CLOEXEC, or a caller's close-on-exec stdout would vanish. */
        if (how == PROC_STDIO_INHERIT)
            continue;
        if (how == PROC_STDIO_NULL) {
            child = open("/dev/null", (i == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
        } else if (how == PROC_STDIO_PIPE) {
            int fds[2];
            if (pipe2(fds, O_CLOEXEC) == 0) {
                child = i == 0 ? fds[0] : fds[1];
                p->stdio_parent[i] = ctx->inflight.parent_fds[i] = i == 0 ? fds[1] : fds[0];
            }
        } else {
            child = fcntl(how, F_DUPFD_CLOEXEC, 3);
        }
        if (child >= 0 && child <= 2) {
            int moved = fcntl(child, F_DUPFD_CLOEXEC, 3);
            int err = errno;
            close(child);
            child = moved;
            errno = err;
        }
        if (child < 0)
            r = -errno;
        else
            inflight_push(ctx, child);
        ctx->child_fd[i] = child;
    }
    if (r < 0)
        close_start_fds_locked(p, ctx, false);
    pthread_mutex_unlock(&proc__g.lock);
    return r;
}

/* After the spawn: the child's ends are the child's now; a failed start drops the parent's too. */
static void close_streams(proc_t *p, struct proc__start_ctx *ctx, bool started)
{
    pthread_mutex_lock(&proc__g.lock);
    close_start_fds_locked(p, ctx, started);
    pthread_mutex_unlock(&proc__g.lock);
}

/* ------------------------------------------------------------- child sides */

/* Callback mode: the child becomes p; the rest is child.c's. */
static void child_run_target(proc_t *p, const struct proc__start_ctx *ctx, pid_t parent,
                             proc_t *old_current, int status_w)
{
    proc__child_become(p, parent, old_current ? atomic_load(&old_current->name) : NULL,
                       old_current ? old_current->authkey : NULL,
                       old_current ? old_current->authkey_len : 0);
    struct proc__child_setup setup = {
        .parent = parent,
        .status_w = status_w,
        .here_fd = -1,
        .stdio = {ctx->child_fd[0], ctx->child_fd[1], ctx->child_fd[2]},
        .mask = ctx->mask,
    };
    proc__child_run(p, &setup);
}

/* Exec mode after a real fork: only async-signal-safe calls until execve. */
static void child_exec(const proc_t *p, const struct proc__start_ctx *plan, pid_t parent,
                       int status_w, const sigset_t *mask)
{
    /* Handlers of the parent must not run here: reset the caught ones. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN &&
            sa.sa_handler != SIG_DFL) {
            sa.sa_handler = SIG_DFL;
            sa.sa_flags = 0;
            sigaction(sig, &sa, NULL);
        }
    }
    if (p->daemon)
        proc__child_daemon_of(parent);
    if (p->new_group && setpgid(0, 0) < 0)
        proc__child_fail(status_w, errno, false);
    if (p->cwd && chdir(p->cwd) < 0)
        proc__child_fail(status_w, errno, false);
    proc__child_dup_stdio(plan->child_fd);
    sigprocmask(SIG_SETMASK, mask, NULL);
    execve(plan->path, p->argv, plan->envp);
    proc__child_fail(status_w, errno, false);
}

/* ----------------------------------------------------------- parent sides */

/* Reads the child's errno report; 0 once the CLOEXEC write end closed. */
static int read_child_status(int fd)
{
    int err = 0;
    ssize_t r;
    do {
        r = read(fd, &err, sizeof err);
    } while (r < 0 && errno == EINTR);
    return r == (ssize_t)sizeof err ? err : 0;
}

static void reap_failed(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static pid_t fork_and_report(proc_t *p, struct proc__start_ctx *ctx)
{
    bool exec_mode = p->argv != NULL;
    int fds[2] = {-1, -1};
    /* Only the child can tell whether chdir/exec worked; it says so through this pipe. */
    if (exec_mode || p->cwd) {
        int r = proc__inflight_pipe(&ctx->inflight, fds); /* ends leave the list as they close */
        if (r < 0)
            return r;
    }

    sigset_t all, old;
    sigfillset(&all);
    pid_t parent = proc__self_pid();
    proc_t *old_current = proc__g.current;
    if (exec_mode) /* no handler of the parent may run in the child before execve */
        pthread_sigmask(SIG_SETMASK, &all, &old);
    proc__forking = &ctx->inflight;
    pid_t pid = fork();
    if (pid == 0) {
        if (fds[0] >= 0)
            close(fds[0]);
        if (exec_mode)
            child_exec(p, ctx, parent, fds[1], ctx->mask ? ctx->mask : &old);
        child_run_target(p, ctx, parent, old_current, fds[1]);
    }
    int fork_err = errno;
    proc__forking = NULL;
    if (exec_mode)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (fds[1] >= 0)
        proc__inflight_close(&ctx->inflight, &fds[1]);
    if (pid < 0) {
        if (fds[0] >= 0)
            proc__inflight_close(&ctx->inflight, &fds[0]);
        return -fork_err;
    }
    if (p->new_group)
        setpgid(pid, pid); /* also in the parent: whoever runs first, the group exists */
    if (fds[0] >= 0) {
        int err = read_child_status(fds[0]);
        proc__inflight_close(&ctx->inflight, &fds[0]);
        if (err) {
            reap_failed(pid);
            return -err;
        }
    }
    return pid;
}

#ifdef LIBPROC_HAVE_ADDCHDIR_NP
/*
 * glibc's posix_spawn leaves its two internal signals (32 and 33) at SIG_IGN
 * in the child, and SIG_IGN survives execve, so the program would start with
 * them ignored though the parent ignores nothing there. POSIX_SPAWN_SETSIGDEF
 * resets them. sigaddset() refuses those numbers, so their bits are set
 * directly (the kernel's layout: bit sig - 1).
 */
static short reset_internal_signals(posix_spawnattr_t *attr)
{
#if defined(__GLIBC__) && defined(__linux__)
    sigset_t def;
    sigemptyset(&def);
    const unsigned word = 8 * sizeof def.__val[0];
    for (int sig = 32; sig < SIGRTMIN; sig++)
        def.__val[(unsigned)(sig - 1) / word] |= 1UL << ((unsigned)(sig - 1) % word);
    if (posix_spawnattr_setsigdefault(attr, &def) == 0)
        return POSIX_SPAWN_SETSIGDEF;
#else
    (void)attr;
#endif
    return 0;
}

/* vfork-style start whose cost does not grow with the parent's memory. */
static pid_t posix_spawn_exec(const proc_t *p, const struct proc__start_ctx *plan)
{
    const sigset_t *mask = plan->mask;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    int err = posix_spawnattr_init(&attr);
    if (err)
        return -err;
    err = posix_spawn_file_actions_init(&fa);
    if (err) {
        posix_spawnattr_destroy(&attr);
        return -err;
    }
    short flags = (short)((p->new_group ? POSIX_SPAWN_SETPGROUP : 0) |
                          (mask ? POSIX_SPAWN_SETSIGMASK : 0) | reset_internal_signals(&attr));
    err = posix_spawnattr_setflags(&attr, flags);
    if (!err && p->new_group)
        err = posix_spawnattr_setpgroup(&attr, 0);
    if (!err && mask)
        err = posix_spawnattr_setsigmask(&attr, mask);
    if (!err && p->cwd)
        err = posix_spawn_file_actions_addchdir_np(&fa, p->cwd);
    for (int i = 0; i < 3 && !err; i++)
        if (plan->child_fd[i] >= 0)
            err = posix_spawn_file_actions_adddup2(&fa, plan->child_fd[i], i);
    pid_t pid = -1;
    if (!err)
        err = posix_spawn(&pid, plan->path, &fa, &attr, p->argv, plan->envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return err ? -err : pid;
}
#endif

static pid_t spawn_now(proc_t *p, struct proc__start_ctx *ctx)
{
    if (!p->argv && p->use_forkserver)
        return proc__fs_spawn(p, ctx);
#ifdef LIBPROC_HAVE_ADDCHDIR_NP
    /* posix_spawn cannot set PDEATHSIG, so daemons take the fork path. */
    if (p->argv && !p->daemon)
        return posix_spawn_exec(p, ctx);
#endif
    return fork_and_report(p, ctx);
}

pid_t proc__spawn_child(proc_t *p, struct proc__start_ctx *ctx)
{
    pid_t pid = p->argv ? plan_exec(ctx, p) : 0;
    if (pid == 0)
        pid = open_streams(p, ctx);
    if (pid == 0) {
        pid = spawn_now(p, ctx);
        close_streams(p, ctx, pid > 0);
    }
    free(ctx->path);
    ctx->path = NULL;
    return pid;
}
