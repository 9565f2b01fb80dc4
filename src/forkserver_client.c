/* SPDX-License-Identifier: MIT */
/*
 * A start through the fork server, the caller's side: the request (what the
 * child needs of p, its fds by SCM_RIGHTS, a large blob in a memfd), the
 * reply (the child's pid and pidfd), the child's status report; and the
 * server's health (a dead one is killed, reaped and forgotten).
 */
#include "core.h"
#include "forkserver.h"
#include "fdpass.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------ the server */

void proc__fs_forget_locked(void)
{
    pthread_mutex_lock(&proc__g.lock);
    int sock = proc__g.fs_sock, pidfd = proc__g.fs_pidfd;
    pid_t pid = proc__g.fs_pid;
    proc__g.fs_sock = proc__g.fs_pidfd = -1;
    proc__g.fs_pid = 0;
    if (sock >= 0)
        close(sock);
    pthread_mutex_unlock(&proc__g.lock);
    if (pidfd >= 0) {
        proc__sys_kill_reap(pidfd, 0);
        close(pidfd);
    } else if (pid > 0 && waitpid(pid, NULL, WNOHANG) == 0) {
        proc__sys_kill_reap(-1, pid); /* still our unreaped child */
    }
}

int proc__fs_check_locked(void)
{
    if (proc__g.fs_sock < 0)
        return 0;
    /* The server's end closes only when it dies. */
    struct pollfd pfd = {.fd = proc__g.fs_sock, .events = POLLIN};
    bool dead = poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR));
    if (!dead && proc__g.fs_pidfd >= 0) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int r = proc__sys_waitid_pidfd(proc__g.fs_pidfd, &si, WEXITED | WNOHANG | WNOWAIT, NULL);
        dead = r < 0 || si.si_pid != 0;
    }
    if (dead)
        proc__fs_forget_locked();
    return !dead;
}

/* ---------------------------------------------------------- the request */

/* One request as it goes out: the header and where its parts are. */
struct message {
    struct proc__fs_request rq;
    const void *part[PROC__FS_PARTS];
    char *env; /* the environment's strings, one after the other (malloc'd) */
    struct iovec iov[3 + PROC__FS_PARTS];
    int iovcnt;
    int fds[PROC__FS_MAX_FDS];
    int nfds;
};

static const char *const *child_env(const proc_t *p)
{
    static const char *const none[] = {NULL};
    if (p->envp)
        return (const char *const *)p->envp;
    return environ ? (const char *const *)environ : none;
}

static int pack_env(struct message *m, const char *const *env)
{
    size_t total = 0, count = 0;
    for (; env[count]; count++)
        total += strlen(env[count]) + 1;
    if (total > UINT32_MAX || count > UINT32_MAX)
        return -E2BIG;
    m->env = malloc(total ? total : 1);
    if (!m->env)
        return -ENOMEM;
    char *at = m->env;
    for (size_t i = 0; i < count; i++) {
        size_t n = strlen(env[i]) + 1;
        memcpy(at, env[i], n);
        at += n;
    }
    m->part[PROC__FS_ENV] = m->env;
    m->rq.len[PROC__FS_ENV] = (uint32_t)total;
    m->rq.env_count = (uint32_t)count;
    return 0;
}

static void set_part(struct message *m, int i, const void *data, size_t len)
{
    m->part[i] = data;
    m->rq.len[i] = (uint32_t)len;
}

/* The header and the parts of p's request; the iovecs follow the header. */
static int pack(struct message *m, const proc_t *p, const struct proc__start_ctx *ctx)
{
    static const unsigned char zeros[PROC__FS_ALIGN] = {0};
    struct proc__fs_request *rq = &m->rq;
    rq->magic = PROC__FS_MAGIC;
    rq->flags = (p->daemon ? PROC__FS_DAEMON : 0) | (p->new_group ? PROC__FS_NEW_GROUP : 0) |
                (p->arg_copy ? PROC__FS_ARG_COPY : 0);
    rq->target = p->target;
    rq->arg = p->arg;
    rq->parent = proc__self_pid();
    if (ctx->mask)
        rq->mask = *ctx->mask;
    else
        pthread_sigmask(SIG_SETMASK, NULL, &rq->mask);
    rq->arg_len = p->arg_copy ? p->arg_len : 0;

    const char *name = atomic_load(&((proc_t *)p)->name)->text;
    pthread_mutex_lock(&proc__g.lock);
    const proc_t *cur = proc__g.current; /* set: proc_start() made sure */
    pthread_mutex_unlock(&proc__g.lock);
    const char *pname = atomic_load(&((proc_t *)cur)->name)->text;
    set_part(m, PROC__FS_NAME, name, strlen(name) + 1);
    set_part(m, PROC__FS_IDENT, p->identity, strlen(p->identity) + 1);
    set_part(m, PROC__FS_KEY, p->authkey, p->authkey_len);
    set_part(m, PROC__FS_PNAME, pname, strlen(pname) + 1);
    set_part(m, PROC__FS_PKEY, cur->authkey, cur->authkey_len);
    set_part(m, PROC__FS_CWD, p->cwd ? p->cwd : "", p->cwd ? strlen(p->cwd) + 1 : 0);
    int r = pack_env(m, child_env(p));
    if (r < 0)
        return r;

    m->iov[0] = (struct iovec){&m->rq, sizeof m->rq};
    m->iovcnt = 1;
    if (rq->arg_len) {
        m->iov[m->iovcnt++] = (struct iovec){p->arg_copy, rq->arg_len};
        size_t pad = PROC__FS_PAD(rq->arg_len) - rq->arg_len;
        if (pad)
            m->iov[m->iovcnt++] = (struct iovec){(void *)zeros, pad};
    }
    rq->blob_len = PROC__FS_PAD(rq->arg_len);
    for (int i = 0; i < PROC__FS_PARTS; i++) {
        m->iov[m->iovcnt++] = (struct iovec){(void *)m->part[i], rq->len[i]};
        rq->blob_len += rq->len[i];
    }
    return 0;
}

/* Opens an fd with open_fd under the lock and puts it in flight: the fd, or -errno. */
static int open_in_flight(struct proc__inflight *f, int (*open_fd)(void))
{
    pthread_mutex_lock(&proc__g.lock);
    int fd = open_fd();
    int r = fd < 0 ? -errno : proc__inflight_add_locked(f, fd);
    if (r < 0 && fd >= 0)
        close(fd);
    pthread_mutex_unlock(&proc__g.lock);
    return r < 0 ? r : fd;
}

static int open_here(void)
{
    return open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

static int open_memfd(void)
{
    return memfd_create("libproc-forkserver", MFD_CLOEXEC);
}

/* The blob (every iovec after the header) into the memfd fd. */
static int fill_memfd(int fd, const struct message *m)
{
    off_t at = 0;
    for (int i = 1; i < m->iovcnt; i++) {
        const char *src = m->iov[i].iov_base;
        size_t left = m->iov[i].iov_len;
        while (left > 0) {
            ssize_t n = pwrite(fd, src, left, at);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return n < 0 ? -errno : -EIO;
            src += n;
            left -= (size_t)n;
            at += n;
        }
    }
    return 0;
}

static int send_request(int sock, struct message *m, bool inline_blob)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * PROC__FS_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = m->iov, .msg_iovlen = inline_blob ? (size_t)m->iovcnt : 1};
    proc__fds_attach(&msg, ctl.buf, m->fds, (size_t)m->nfds); /* the status pipe at least */
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n >= 0)
        return 0;
    return errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN ? -ECONNRESET : -errno;
}

/* ----------------------------------------------------------- the answers */

/*
 * The reply, taken under the lock so that the pidfd it brings is in flight
 * (closed by any fork child) from its first moment: 0, -ECONNRESET when
 * the server died before replying, -EPROTO.
 */
static int recv_reply(int sock, struct proc__inflight *f, struct proc__fs_reply *rep)
{
    for (;;) {
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            return -errno;
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {rep, sizeof *rep};
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl};
        pthread_mutex_lock(&proc__g.lock);
        ssize_t n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        int err = errno;
        if (n > 0)
            proc__fds_received(&msg, &f->pidfd, 1); /* the pidfd, under the lock: in flight */
        pthread_mutex_unlock(&proc__g.lock);
        if (n < 0 && (err == EAGAIN || err == EINTR))
            continue;
        if (n < 0)
            return -err;
        if (n == 0)
            return -ECONNRESET;
        return n == (ssize_t)sizeof *rep && (rep->pid < 0 || f->pidfd >= 0) ? 0 : -EPROTO;
    }
}

/* The child's report; a child gone before it reported counts as started. */
static struct proc__child_status read_status(int fd)
{
    struct proc__child_status st = {0, 0};
    ssize_t n;
    do {
        n = read(fd, &st, sizeof st);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof st)
        st.err = st.pid = 0;
    return st;
}

/* A child that will not be adopted: killed and reaped here. */
static void take_back(struct proc__inflight *f, pid_t pid)
{
    proc__sys_kill_reap(f->pidfd, pid); /* ours and unreaped: the pid is still its own */
    pthread_mutex_lock(&proc__g.lock);
    if (f->pidfd >= 0)
        close(f->pidfd);
    f->pidfd = -1;
    pthread_mutex_unlock(&proc__g.lock);
}

/*
 * After the request went out: the reply, then the child's report on the
 * status pipe. A server that died meanwhile may have made a child whose pid
 * only that report tells: it is taken back.
 */
static pid_t await_child(struct proc__inflight *f, int *status_r)
{
    struct proc__fs_reply rep = {0};
    int r = recv_reply(proc__g.fs_sock, f, &rep);
    pid_t pid = r < 0 ? r : rep.pid;
    struct proc__child_status st = {0, 0};
    if (r < 0 || pid > 0)
        st = read_status(*status_r);
    proc__inflight_close(f, status_r);
    if (r < 0) {
        /* A reply not taken would answer the next request: never talk to this server again. */
        take_back(f, st.pid);
        proc__fs_forget_locked();
        return r;
    }
    if (pid > 0 && st.err) {
        take_back(f, pid);
        return -st.err;
    }
    return pid;
}

static pid_t request(proc_t *p, struct proc__start_ctx *ctx, struct message *m)
{
    struct proc__inflight *f = &ctx->inflight;
    int r = pack(m, p, ctx);
    bool inline_blob = m->rq.blob_len <= PROC__FS_INLINE_MAX;
    int status[2] = {-1, -1}, here = -1, memfd = -1;
    if (r == 0)
        r = proc__inflight_pipe(f, status);
    if (r == 0) {
        m->fds[m->nfds++] = status[1];
        here = open_in_flight(f, open_here); /* none (a removed directory): stay */
        if (here >= 0) {
            m->rq.flags |= PROC__FS_HERE;
            m->fds[m->nfds++] = here;
        }
    }
    if (r == 0 && !inline_blob) {
        memfd = open_in_flight(f, open_memfd);
        r = memfd < 0 ? memfd : fill_memfd(memfd, m);
        if (r == 0) {
            m->rq.flags |= PROC__FS_MEMFD;
            m->fds[m->nfds++] = memfd;
        }
    }
    for (int i = 0; i < 3 && r == 0; i++) {
        if (ctx->child_fd[i] >= 0) {
            m->rq.stdio |= 1U << i;
            m->fds[m->nfds++] = ctx->child_fd[i];
        }
    }
    for (int i = 0; i < p->npass && r == 0; i++) {
        m->rq.pass_no[m->rq.npass++] = p->pass_fds[i];
        m->fds[m->nfds++] = p->pass_fds[i];
    }
    if (r == 0)
        r = send_request(proc__g.fs_sock, m, inline_blob);
    proc__inflight_close(f, &status[1]);
    proc__inflight_close(f, &here);
    proc__inflight_close(f, &memfd);
    if (r == 0)
        return await_child(f, &status[0]);
    proc__inflight_close(f, &status[0]);
    if (r == -ECONNRESET)
        proc__fs_forget_locked();
    return r;
}

int proc__set_pass_fds(proc_t *p, const int *fds, int n)
{
    if (!p || n < 0 || n > PROC__PASS_MAX || (n > 0 && !fds))
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (fds[i] <= 2)
            return -EINVAL;
    for (int i = 0; i < n; i++)
        p->pass_fds[i] = fds[i];
    p->npass = n;
    return 0;
}

pid_t proc__fs_spawn(proc_t *p, struct proc__start_ctx *ctx)
{
    struct message *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    pthread_mutex_lock(&proc__g.fs_lock);
    pid_t r = proc__g.fs_sock < 0 ? -ENOTCONN : request(p, ctx, m);
    pthread_mutex_unlock(&proc__g.fs_lock);
    free(m->env);
    free(m);
    return r;
}
