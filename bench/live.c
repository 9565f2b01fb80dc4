/* SPDX-License-Identifier: MIT */
/*
 * proc_bench's fatal paths: the list of what may still run (live), the
 * SIGINT/SIGTERM/SIGHUP handler and die(), which kill and reap all of it, and
 * the checked reap/join helpers that every scenario uses. See live.h.
 */
#include "live.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct live_batch live = {.fds = {-1, -1}};
proc_pool_t *live_pool, *live_pool_bound, *live_pool_timed;

void live_pool_open(proc_pool_t **slot, const proc_pool_opts_t *po)
{
    sigset_t old;
    block_fatal_signals(&old);
    *slot = proc_pool_new(po);
    int err = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (!*slot)
        die("proc_pool_new(%d workers): %s", po->workers, strerror(err));
}

void live_pool_close(proc_pool_t **slot)
{
    sigset_t old;
    block_fatal_signals(&old);
    int r = *slot ? proc_pool_free(*slot) : 0;
    *slot = NULL;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (r < 0)
        die("proc_pool_free: %s", strerror(-r));
}
struct live_coproc live_py = {0, -1, -1};
static volatile sig_atomic_t fatal_sig; /* a deferred SIGINT/SIGTERM/SIGHUP, see on_fatal_signal */

void live_reset(void)
{
    live.pids = NULL;
    live.npids = 0;
    live.procs = NULL;
    live.nprocs = 0;
    live.fds[0] = live.fds[1] = -1;
}

pid_t live_fork(pid_t *slot)
{
    *slot = 0;
    live.pids = slot;
    live.npids = 1;
    *slot = fork();
    if (*slot < 0)
        die("fork: %s", strerror(errno));
    return *slot;
}

static void reap_quietly(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

void reap_group(pid_t pgid)
{
    for (;;) {
        pid_t r = waitpid(-pgid, NULL, 0);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        break;
    }
}

void live_coproc_kill(struct live_coproc *c)
{
    if (c->to >= 0)
        close(c->to);
    if (c->from >= 0)
        close(c->from);
    c->to = c->from = -1;
    if (c->pid > 0) {
        pid_t pid = c->pid;
        c->pid = 0;
        kill(-pid, SIGKILL);
        reap_quietly(pid);
        reap_group(pid); /* its orphans: we are their subreaper */
    }
}

static void cleanup_live(void)
{
    if (live_pool) {
        proc_pool_free(live_pool); /* terminates: kills and reaps the workers */
        live_pool = NULL;
    }
    if (live_pool_bound) {
        proc_pool_free(live_pool_bound);
        live_pool_bound = NULL;
    }
    if (live_pool_timed) {
        proc_pool_free(live_pool_timed);
        live_pool_timed = NULL;
    }
    live_coproc_kill(&live_py);
    for (int i = 0; i < 2; i++)
        if (live.fds[i] >= 0)
            close(live.fds[i]); /* children blocked on the pipe get EOF */
    for (size_t i = 0; i < live.npids; i++) {
        if (live.pids[i] > 0) {
            kill(live.pids[i], SIGKILL);
            reap_quietly(live.pids[i]);
        }
    }
    for (size_t i = 0; i < live.nprocs; i++) {
        proc_t *p = live.procs[i];
        if (!p)
            continue;
        if (proc_is_alive(p))
            proc_kill(p);
        if (proc_pid(p) > 0)
            proc_join(p, PROC_WAIT_FOREVER);
        proc_close(p);
    }
    live_reset();
}

void reap_all_children(bool block)
{
    for (;;) {
        pid_t r = waitpid(-1, NULL, block ? 0 : WNOHANG);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        break;
    }
}

/*
 * SIGKILLs every child of every thread of this process, as listed in
 * /proc/self/task/TID/children, with async-signal-safe calls only (no
 * opendir, no stdio). Pool workers are forked by libproc's threads; this is
 * how the fatal paths reach them. Without that file (kernels built without
 * CONFIG_PROC_CHILDREN) it does nothing; pool workers then die with their
 * parent anyway (PR_SET_PDEATHSIG).
 */
static void kill_own_children(void)
{
    int dfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    char dents[4096];
    long n;
    while ((n = syscall(SYS_getdents64, dfd, dents, sizeof dents)) > 0) {
        for (long off = 0; off < n;) {
            /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[] */
            unsigned short reclen;
            memcpy(&reclen, dents + off + 16, sizeof reclen);
            const char *name = dents + off + 19;
            off += reclen;
            if (name[0] < '0' || name[0] > '9')
                continue;
            char path[64] = "/proc/self/task/", *p = path + strlen(path);
            for (const char *s = name; *s && p < path + 40; s++)
                *p++ = *s;
            memcpy(p, "/children", sizeof "/children");
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            char buf[4096];
            ssize_t len;
            long pid = 0;
            bool digit = false;
            while ((len = read(fd, buf, sizeof buf)) > 0) {
                for (ssize_t i = 0; i < len; i++) {
                    if (buf[i] >= '0' && buf[i] <= '9') {
                        pid = pid * 10 + (buf[i] - '0');
                        digit = true;
                    } else {
                        if (digit && pid > 0)
                            kill((pid_t)pid, SIGKILL);
                        pid = 0;
                        digit = false;
                    }
                }
            }
            if (digit && pid > 0)
                kill((pid_t)pid, SIGKILL);
            close(fd);
        }
    }
    close(dfd);
}

/*
 * SIGINT/SIGTERM/SIGHUP: kill and reap everything with async-signal-safe
 * calls only, then die of the signal. Runs on the main thread (libproc's
 * reaper blocks all signals), so live is not changing under us.
 */
static void on_fatal_signal(int sig)
{
    if (live_pool || live_pool_bound || live_pool_timed) {
        /*
         * A pool cannot be freed in a signal handler, and its thread replaces
         * killed workers, so a blocking reap here could wait forever. Kill
         * what runs (which ends any wait of the main thread: a map whose
         * worker died fails, Python's answer ends) and let the main thread
         * clean up in die(), which then dies of sig.
         */
        fatal_sig = sig;
        if (live_py.pid > 0)
            kill(-live_py.pid, SIGKILL);
        kill_own_children();
        return;
    }
    for (int i = 0; i < 2; i++)
        if (live.fds[i] >= 0)
            close(live.fds[i]);
    for (size_t i = 0; i < live.npids; i++)
        if (live.pids[i] > 0)
            kill(live.pids[i], SIGKILL);
    for (size_t i = 0; i < live.nprocs; i++)
        /* proc_is_alive() takes a lock: not for a signal handler. */
        if (live.procs[i] && proc_exitcode(live.procs[i]) == PROC_EXITCODE_NONE &&
            proc_pid(live.procs[i]) > 0)
            kill(proc_pid(live.procs[i]), SIGKILL);
    if (live_py.pid > 0)
        kill(-live_py.pid, SIGKILL);
    reap_all_children(true);
    signal(sig, SIG_DFL);
    raise(sig);
}

void install_signal_handlers(void)
{
    int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; i++)
        sigaddset(&sa.sa_mask, sigs[i]);
    for (int i = 0; i < 3; i++)
        if (sigaction(sigs[i], &sa, NULL) < 0)
            die("sigaction: %s", strerror(errno));
}

void block_fatal_signals(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, old);
}

void die(const char *fmt, ...)
{
    va_list ap;
    sigset_t old;
    block_fatal_signals(&old);
    fflush(stdout);
    if (fatal_sig) {
        fprintf(stderr, "proc_bench: interrupted by signal %d\n", (int)fatal_sig);
    } else {
        fputs("proc_bench: error: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    cleanup_live();
    kill_own_children(); /* anything not tracked: never block on it below */
    reap_all_children(true);
    if (fatal_sig) {
        signal(fatal_sig, SIG_DFL);
        raise(fatal_sig); /* pending until the unblock */
        sigprocmask(SIG_SETMASK, &old, NULL);
    }
    exit(1);
}

void check_interrupted(void)
{
    if (fatal_sig)
        die("interrupted");
}

void reap_ok(pid_t pid)
{
    int status;
    pid_t r;
    do {
        r = waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r != pid)
        die("waitpid(%d): %s", (int)pid, strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("child %d ended with status 0x%x", (int)pid, status);
}

void join_ok(proc_t *p)
{
    CHECK_PROC(proc_join(p, PROC_WAIT_FOREVER));
    int code = proc_exitcode(p);
    if (code != 0)
        die("libproc child %d ended with exit code %d", (int)proc_pid(p), code);
}

void close_ok(proc_t **slot)
{
    CHECK_PROC(proc_close(*slot));
    *slot = NULL;
}

pid_t spawn_raw(const char *path, char *const argv[], const posix_spawn_file_actions_t *fa)
{
    pid_t pid;
    int err = posix_spawn(&pid, path, fa, NULL, argv, environ);
    if (err)
        die("posix_spawn(%s): %s", path, strerror(err));
    return pid;
}

void read_until_eof(int fd)
{
    char c;
    ssize_t r;
    do {
        r = read(fd, &c, 1);
    } while (r < 0 && errno == EINTR);
}
