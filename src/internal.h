/* SPDX-License-Identifier: MIT */
/* Internal state shared by the files of libproc. Nothing here is exported. */
#ifndef LIBPROC_INTERNAL_H
#define LIBPROC_INTERNAL_H

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

/* Life of an object, in order. Stored atomically so that readers need no lock. */
enum proc_state {
    PROC_NEW,      /* configurable */
    PROC_STARTING, /* proc_start in progress: a second start sees -EBUSY */
    PROC_RUNNING,  /* started, not yet reaped */
    PROC_ENDED,    /* reaped, exit code set, exit callbacks running */
    PROC_DONE,     /* callbacks ran; joiners return */
};

enum proc_kind {
    PROC_KIND_CHILD,  /* made by proc_new / proc_new_exec */
    PROC_KIND_SELF,   /* proc_current(): the calling process itself */
    PROC_KIND_PARENT, /* proc_parent() inside a child */
};

/* Names may change while other threads read them, so old ones live until close. */
struct proc_name_node {
    struct proc_name_node *older;
    char text[];
};

struct proc_exit_cb {
    struct proc_exit_cb *next;
    proc_exit_fn *fn;
    void *arg;
};

struct proc {
    enum proc_kind kind;
    proc_target_fn *target;
    void *arg;
    char **argv; /* exec mode: NULL-terminated copy; NULL in callback mode */
    char **envp; /* NULL: inherit */
    char *cwd;
    bool daemon;
    bool new_group;
    unsigned char *authkey;
    size_t authkey_len;
    struct proc_exit_cb *callbacks;
    _Atomic(struct proc_name_node *) name;
    char *identity; /* "1:2" for Process-1:2; names children of this child */

    _Atomic int state; /* enum proc_state */
    _Atomic pid_t pid;
    _Atomic int exitcode;
    pid_t owner;         /* the process that started it */
    int pidfd;           /* sentinel on Linux; -1 without pidfd */
    int joiners;         /* threads polling pidfd in proc_join: the reaper leaves p to them */
    int stdio_how[3];    /* PROC_STDIO_* or an fd of the caller's, for 0, 1, 2 */
    int stdio_parent[3]; /* the parent's ends of PROC_STDIO_PIPE streams, or -1 */
    int pipe_r, pipe_w;  /* sentinel without pidfd: the reaper closes pipe_w */
    unsigned long long start_time; /* without pidfd: the kernel's start time of pid, or 0 */
    struct proc *prev, *next;      /* the owner's registry of started, unclosed children */
    struct proc *ended_next;       /* reaper's batch of children whose callbacks are due */
};

/* Process-wide state. Guarded by lock unless the field says otherwise. */
struct proc_global {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* broadcast when a child reaches PROC_DONE or a request completes */
    _Atomic pid_t self;  /* getpid(), refreshed in every fork child */

    struct proc *children; /* registry head */
    struct proc **fdtab;   /* fd number -> object owning it, for every fd libproc owns */
    size_t fdcap;
    size_t live;           /* children in PROC_RUNNING */
    size_t unwatched;      /* running children without a pidfd: reaper polls them */
    size_t starting;       /* starts between fork and registration */
    bool broadcast_due;    /* a child finished; joiners must be woken */
    unsigned long counter; /* for default names */
    const char *identity;  /* "" in a root process */
    struct proc *current;
    struct proc main_obj;
    struct proc parent_obj;
    bool have_parent;
    int init_err; /* the fork and exit handlers could not be registered */
    bool exiting; /* at-exit work has begun in this process: no new starts */

    /* reaper */
    bool reaper_running;
    pthread_t reaper_tid;
    int epfd;
    _Atomic int wakefd;        /* eventfd; also written by the SIGCHLD handler */
    _Atomic bool sigchld_wake; /* the handler must wake the reaper (no pidfds to watch) */
    bool handler_installed;    /* per process image: dispositions survive fork */
    bool host_ignores_chld;    /* SIGCHLD was SIG_IGN before us: we reap the host's children */
    struct sigaction old_chld;
    struct proc *pending; /* reaped outside the event loop, callbacks still due */

    /* the spawner: a long-lived thread that forks daemons asked for by other threads */
    bool spawner_running;
    struct proc_spawn_req *requests;
    struct proc_inflight *inflight; /* write ends of status pipes of starts in progress */
};

extern struct proc_global proc_g;

/* A start the spawner thread performs for another thread (long-lived parent for PDEATHSIG). */
struct proc_spawn_req {
    struct proc_spawn_req *next;
    struct proc *p;
    struct proc_start_ctx *ctx;
    pid_t result; /* pid, or negative errno */
    bool done;
};

/*
 * The child-side fds of a start in progress (status pipe, stdio ends), known
 * to the fork handler: a process forked meanwhile by another thread closes
 * them, or a start would wait for that process instead of its own child, and
 * a child's stdin would never see EOF.
 */
#define PROC_INFLIGHT_MAX 8
struct proc_inflight {
    struct proc_inflight *next;
    int fds[PROC_INFLIGHT_MAX];
    int n;
};

/* The record whose fds the calling thread's fork must keep (its own start). */
extern _Thread_local struct proc_inflight *proc_forking;

/* Everything a start prepares before the fork: nothing is allocated after it. */
struct proc_start_ctx {
    char *path;           /* exec mode: argv[0] resolved through PATH */
    char **envp;          /* exec mode: the child's environment */
    int child_fd[3];      /* dup2'd onto 0, 1, 2 in the child; -1 keeps the parent's */
    const sigset_t *mask; /* the child's signal mask; NULL: the forking thread's */
    struct proc_inflight inflight;
};

/* proc.c */
void proc_g_init(void);
bool proc_lock_configurable(struct proc *p);
void proc_init_cond(void);
struct proc *proc_ensure_current_locked(void);
void proc_registry_add_locked(struct proc *p);
void proc_registry_remove_locked(struct proc *p);
int proc_fd_track_locked(int fd, struct proc *p);
void proc_fd_untrack_locked(int fd);
/* Untracks and closes *fd if it is open, and sets it to -1. */
void proc_fd_close_locked(int *fd);
struct proc *proc_fd_owner_locked(int fd);
void proc_fd_close_inherited(void);
void proc_child_became(struct proc *p, pid_t parent_pid, struct proc *old_current);

/* stdio.c */
int proc_stdio_prepare(struct proc *p, struct proc_start_ctx *ctx);
void proc_stdio_finish(struct proc *p, struct proc_start_ctx *ctx, bool started);
void proc_stdio_close_all_locked(struct proc *p);

/* spawn.c */
pid_t proc_spawn_now(struct proc *p, struct proc_start_ctx *ctx);

/* reaper.c */
int proc_reaper_ensure_locked(void);
void proc_reaper_wake(void);
int proc_reaper_watch_locked(struct proc *p);
bool proc_on_reaper_thread(void);
int proc_reaper_join_pidfd(struct proc *p, int timeout_ms);
int proc_send_signal_locked(struct proc *p, int sig);
void proc_reaper_collect_locked(void);
int proc_deadline_wait_locked(const struct timespec *deadline);
int proc_deadline_poll_locked(const struct timespec *deadline);
void proc_deadline_from_timeout(struct timespec *deadline, int timeout_ms);

/* lifecycle.c */
int proc_lifecycle_init(void);
void proc_lifecycle_exit_work(void);
void proc_lifecycle_reset_child(void);

/* sys.c */
bool proc_sys_have_pidfd(void);
int proc_sys_pidfd_open(pid_t pid);
int proc_sys_pidfd_signal(int pidfd, int sig);
/* Signals the process group whose id is the pidfd's process (not a recycled
 * id): -EINVAL on kernels before 6.9, -ESRCH when the group is empty. */
int proc_sys_pidfd_signal_group(int pidfd, int sig);
int proc_sys_waitid_pidfd(int pidfd, siginfo_t *info, int options);
int proc_sys_random(void *buf, size_t len);
pid_t proc_sys_gettid(void);
int proc_sys_set_pdeathsig(int sig);
int proc_sys_decode_siginfo(const siginfo_t *info);
int proc_sys_decode_status(int status);
unsigned long long proc_sys_start_time(pid_t pid);

#endif /* LIBPROC_INTERNAL_H */
