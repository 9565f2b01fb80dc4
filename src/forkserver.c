/* SPDX-License-Identifier: MIT */
/*
 * The fork server: proc_forkserver_start() forks it from the caller; it then
 * serves the requests of forkserver_client.c (protocol: forkserver.h) by
 * cloning itself into children of the caller (CLONE_PARENT), which set
 * themselves up from the request and run the target (child.c).
 */
#include "core.h"
#include "forkserver.h"
#include "fdpass.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define INBOX_SIZE (sizeof(struct proc__fs_request) + PROC__FS_INLINE_MAX)

struct server {
    int sock;
    pid_t *tid_word;   /* the thread descriptor's tid word: a clone child's tid goes there */
    void *robust_head; /* the robust futex list, registered again in each child */
    size_t robust_len;
    unsigned char *inbox; /* a request; each child keeps its own copy */
};

/* ------------------------------------------------------------ the child */

/*
 * Moves the received fds to low or above, off 0..2 (where the server had no
 * fd: a closed stream) and off the numbers the passed fds go to.
 */
static int raise_fds(int *fds, size_t n, int low)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= low)
            continue;
        int up = fcntl(fds[i], F_DUPFD_CLOEXEC, low);
        if (up < 0)
            return errno;
        close(fds[i]);
        fds[i] = up;
    }
    return 0;
}

static bool is_string(const char *s, uint32_t len)
{
    return len > 0 && s[len - 1] == '\0';
}

/* The environment's strings as an environ array: 0 or an errno. */
static int unpack_env(proc_t *p, char *env, uint32_t len, uint32_t count)
{
    p->envp = malloc(((size_t)count + 1) * sizeof *p->envp);
    if (!p->envp)
        return ENOMEM;
    char *end = env + len;
    for (uint32_t i = 0; i < count; i++) {
        char *nul = env < end ? memchr(env, '\0', (size_t)(end - env)) : NULL;
        if (!nul)
            return EPROTO;
        p->envp[i] = env;
        env = nul + 1;
    }
    p->envp[count] = NULL;
    return 0;
}

/* What the child's proc_parent() shows. */
struct parent_view {
    struct proc__name_node *name;
    unsigned char *key;
    size_t key_len;
};

/* p as the request describes it, pointing into blob, which this child keeps. */
static int unpack(const struct proc__fs_request *rq, unsigned char *blob, proc_t *p,
                  struct parent_view *parent)
{
    char *part[PROC__FS_PARTS];
    uint64_t at = PROC__FS_PAD(rq->arg_len);
    for (int i = 0; i < PROC__FS_PARTS; i++) {
        part[i] = (char *)blob + at;
        at += rq->len[i];
    }
    if (at != rq->blob_len || !is_string(part[PROC__FS_NAME], rq->len[PROC__FS_NAME]) ||
        !is_string(part[PROC__FS_IDENT], rq->len[PROC__FS_IDENT]) ||
        !is_string(part[PROC__FS_PNAME], rq->len[PROC__FS_PNAME]) ||
        (rq->len[PROC__FS_CWD] && !is_string(part[PROC__FS_CWD], rq->len[PROC__FS_CWD])))
        return EPROTO;
    p->kind = PROC__KIND_CHILD;
    p->target = rq->target;
    p->arg = rq->arg;
    if (rq->flags & PROC__FS_ARG_COPY) {
        p->arg_copy = blob;
        p->arg_len = rq->arg_len;
    }
    p->daemon = rq->flags & PROC__FS_DAEMON;
    p->new_group = rq->flags & PROC__FS_NEW_GROUP;
    p->authkey = (unsigned char *)part[PROC__FS_KEY];
    p->authkey_len = rq->len[PROC__FS_KEY];
    p->identity = part[PROC__FS_IDENT];
    p->cwd = rq->len[PROC__FS_CWD] ? part[PROC__FS_CWD] : NULL;
    p->pidfd = p->pipe_r = p->pipe_w = -1;
    for (int i = 0; i < 3; i++)
        p->stdio_how[i] = PROC_STDIO_INHERIT;
    atomic_store(&p->exitcode, PROC_EXITCODE_NONE);
    parent->key = (unsigned char *)part[PROC__FS_PKEY];
    parent->key_len = rq->len[PROC__FS_PKEY];
    parent->name = proc__name_node_new(part[PROC__FS_PNAME]); /* strings: is_string() */
    struct proc__name_node *name = proc__name_node_new(part[PROC__FS_NAME]);
    if (!name || !parent->name)
        return ENOMEM;
    atomic_store(&p->name, name);
    return unpack_env(p, part[PROC__FS_ENV], rq->len[PROC__FS_ENV], rq->env_count);
}

/*
 * The clone child: its own copy of the single-threaded server, so it may
 * allocate. It drops the server's socket, renews what the kernel did not
 * copy (the robust futex list) and libproc's cached pid, then becomes the
 * object of the request.
 */
static _Noreturn void child_main(const struct server *s, size_t nfds, int *fds)
{
    close(s->sock);
    proc__self_refresh();
    proc__sys_robust_list_set(s->robust_head, s->robust_len);
    const struct proc__fs_request *rq = (const void *)s->inbox;
    int low = 3;
    for (uint32_t k = 0; k < rq->npass; k++)
        if (rq->pass_no[k] >= low)
            low = rq->pass_no[k] + 1;
    int err = raise_fds(fds, nfds, low);
    int status_w = fds[0];
    if (err)
        proc__child_fail(status_w, err, true);
    size_t i = 1;
    int here = rq->flags & PROC__FS_HERE ? fds[i++] : -1;
    unsigned char *blob = s->inbox + sizeof *rq;
    if (rq->flags & PROC__FS_MEMFD) {
        void *map = mmap(NULL, rq->blob_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fds[i], 0);
        if (map == MAP_FAILED)
            proc__child_fail(status_w, errno, true);
        close(fds[i++]);
        blob = map;
    }
    struct proc__child_setup setup = {
        .parent = rq->parent,
        .status_w = status_w,
        .report_pid = true,
        .here_fd = here,
        .stdio = {-1, -1, -1},
        .mask = &rq->mask,
    };
    for (int k = 0; k < 3; k++)
        if (rq->stdio & (1U << k))
            setup.stdio[k] = fds[i++];
    for (uint32_t k = 0; k < rq->npass; k++, i++) {
        if (dup3(fds[i], rq->pass_no[k], O_CLOEXEC) < 0)
            proc__child_fail(status_w, errno, true);
        close(fds[i]);
    }
    proc_t *p = calloc(1, sizeof *p);
    struct parent_view parent = {NULL, NULL, 0};
    err = p ? unpack(rq, blob, p, &parent) : ENOMEM;
    if (err)
        proc__child_fail(status_w, err, true);
    proc__child_become(p, rq->parent, parent.name, parent.key, parent.key_len);
    proc__child_run(p, &setup);
}

/* ----------------------------------------------------------- the server */

static size_t fds_wanted(const struct proc__fs_request *rq)
{
    size_t n = 1 + !!(rq->flags & PROC__FS_HERE) + !!(rq->flags & PROC__FS_MEMFD);
    for (int k = 0; k < 3; k++)
        n += !!(rq->stdio & (1U << k));
    return n + rq->npass;
}

static int check_request(const struct proc__fs_request *rq, ssize_t n, size_t nfds)
{
    if ((size_t)n < sizeof *rq || rq->magic != PROC__FS_MAGIC || rq->npass > PROC__PASS_MAX ||
        nfds != fds_wanted(rq) || (rq->stdio & ~7U) || rq->arg_len > ((uint64_t)64 << 20))
        return -EPROTO;
    for (uint32_t k = 0; k < rq->npass; k++)
        if (rq->pass_no[k] <= 2 || rq->pass_no[k] == INT32_MAX) /* the child moves fds above it */
            return -EPROTO;
    uint64_t blob = PROC__FS_PAD(rq->arg_len);
    for (int i = 0; i < PROC__FS_PARTS; i++)
        blob += rq->len[i];
    if (blob != rq->blob_len)
        return -EPROTO;
    size_t body = rq->flags & PROC__FS_MEMFD ? 0 : (size_t)blob;
    return (size_t)n == sizeof *rq + body ? 0 : -EPROTO;
}

/* One request into the inbox and its fds into fds: the bytes (0 at EOF) or -errno. */
static ssize_t recv_request(const struct server *s, int *fds, size_t *nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * PROC__FS_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {s->inbox, INBOX_SIZE};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl};
    ssize_t n;
    do {
        n = recvmsg(s->sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    *nfds = proc__fds_received(&msg, fds, PROC__FS_MAX_FDS);
    if (n > 0 && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        return -EPROTO;
    return n;
}

static int send_reply(int sock, pid_t pid, int pidfd)
{
    struct proc__fs_reply rep = {.pid = pid};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {&rep, sizeof rep};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (pidfd >= 0)
        proc__fds_attach(&msg, ctl.buf, &pidfd, 1);
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : 0;
}

/*
 * The server's life: every signal blocked (SIGKILL aside), killed when the
 * thread that forked it ends, and over at the end of its socket. It runs
 * nothing but this loop; each child leaves it in child_main().
 */
static _Noreturn void server_main(int sock, pid_t caller, pid_t *tid_word)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    if (proc__sys_set_pdeathsig(SIGKILL) < 0 || getppid() != caller)
        _exit(0);
    struct server s = {.sock = sock, .tid_word = tid_word};
    if (proc__sys_robust_list_get(&s.robust_head, &s.robust_len) < 0)
        s.robust_head = NULL;
    s.inbox = aligned_alloc(PROC__FS_ALIGN, PROC__FS_PAD(INBOX_SIZE));
    if (!s.inbox)
        _exit(0);
    for (;;) {
        int fds[PROC__FS_MAX_FDS];
        for (size_t i = 0; i < PROC__FS_MAX_FDS; i++)
            fds[i] = -1; /* check_request() makes sure every one used came */
        size_t nfds = 0;
        ssize_t n = recv_request(&s, fds, &nfds);
        if (n == 0 || (n < 0 && n != -EPROTO))
            _exit(0); /* the caller is gone */
        int pidfd = -1;
        pid_t pid = n < 0 ? (pid_t)n : check_request((const void *)s.inbox, n, nfds);
        if (pid == 0)
            pid = proc__sys_clone_sibling(&pidfd, s.tid_word);
        if (pid == 0)
            child_main(&s, nfds, fds);
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        int r = send_reply(sock, pid, pidfd);
        if (pidfd >= 0)
            close(pidfd);
        if (r < 0)
            _exit(0);
    }
}

/* ------------------------------------------------------- starting it */

/*
 * 0 when the calling thread is the process's only one but for libproc's
 * reaper and spawner (which hold nothing but proc__g.lock, held here across
 * the fork, when no exit callback runs), else -EBUSY.
 */
static int check_threads_locked(void)
{
    if (proc__g.in_callbacks)
        return -EBUSY;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -errno;
    long n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    long own = 1 + proc__g.reaper_running + proc__g.spawner_running;
    return n > own ? -EBUSY : 0;
}

static int fork_server(pid_t *tid_word)
{
    pthread_mutex_lock(&proc__g.lock);
    int r = check_threads_locked();
    int sv[2] = {-1, -1};
    if (r == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        r = -errno;
    pid_t caller = proc__self_pid(), pid = -1;
    if (r == 0) {
        pid = proc__fork_locked();
        if (pid == 0) {
            close(sv[0]);
            server_main(sv[1], caller, tid_word);
        }
        if (pid < 0)
            r = -errno;
    }
    if (sv[1] >= 0)
        close(sv[1]);
    if (r == 0) {
        proc__g.fs_sock = sv[0];
        proc__g.fs_pid = pid;
        int pidfd = proc__sys_have_pidfd() ? proc__sys_pidfd_open(pid) : -1;
        proc__g.fs_pidfd = pidfd >= 0 ? pidfd : -1;
    } else if (sv[0] >= 0) {
        close(sv[0]);
    }
    pthread_mutex_unlock(&proc__g.lock);
    return r;
}

int proc_forkserver_start(void)
{
    proc__init();
    if (proc__g.init_err)
        return proc__g.init_err;
    pthread_mutex_lock(&proc__g.fs_lock);
    int r = proc__fs_check_locked() ? -EALREADY : 0;
    pid_t *tid_word = NULL;
    if (r == 0 && (!proc__sys_have_clone_sibling() || !(tid_word = proc__sys_tid_word())))
        r = -ENOSYS;
    if (r == 0) {
        fflush(NULL); /* the server's children must not write it again */
        r = fork_server(tid_word);
    }
    pthread_mutex_unlock(&proc__g.fs_lock);
    return r;
}
