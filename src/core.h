/* SPDX-License-Identifier: MIT */
/*
 * The process core: the state shared by the files that implement <libproc/proc.h>
 * (see docs/ARCHITECTURE.md for who may call whom), and the functions that
 * cross those files, grouped by the file that defines them. Built on the base
 * layer (clock.h, sys.h, thread.h). Nothing here is exported.
 */
#ifndef LIBPROC_CORE_H
#define LIBPROC_CORE_H

#include "clock.h"
#include "sys.h"

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

/* Life of an object, in order. Stored atomically so that readers need no lock. */
enum proc__state {
    PROC__NEW,      /* configurable */
    PROC__STARTING, /* proc_start in progress: a second start sees -EBUSY */
    PROC__RUNNING,  /* started, not yet reaped */
    PROC__ENDED,    /* reaped, exit code set, exit callbacks running */
    PROC__DONE,     /* callbacks ran; joiners return */
};

enum proc__kind {
    PROC__KIND_CHILD,  /* made by proc_new / proc_new_exec */
    PROC__KIND_SELF,   /* proc_current(): the calling process itself */
    PROC__KIND_PARENT, /* proc_parent() inside a child */
};

/* Names may change while other threads read them, so old ones live until close. */
struct proc__name_node {
    struct proc__name_node *older;
    char text[];
};
/* A name node holding a copy of text (proc.c); NULL without memory. */
struct proc__name_node *proc__name_node_new(const char *text);

struct proc__exit_cb {
    struct proc__exit_cb *next;
    proc_exit_fn *fn;
    void *arg;
};

/* Most fds an internal child takes along through the fork server (a pool worker's four). */
#define PROC__PASS_MAX 4

struct proc {
    enum proc__kind kind;
    proc_target_fn *target;
    void *arg;
    void *arg_copy; /* proc_set_arg_copy(): what the target gets instead of arg; NULL: none */
    size_t arg_len;
    bool use_forkserver; /* proc_set_forkserver(): callback mode starts through the server */
    int pass_fds[PROC__PASS_MAX]; /* proc__set_pass_fds(): fds a server child gets at these numbers
                                   */
    int npass;
    char **argv; /* exec mode: NULL-terminated copy; NULL in callback mode */
    char **envp; /* NULL: inherit */
    char *cwd;
    bool daemon;
    bool new_group;
    unsigned char *authkey;
    size_t authkey_len;
    struct proc__exit_cb *callbacks;
    _Atomic(struct proc__name_node *) name;
    char *identity; /* "1:2" for Process-1:2; names children of this child */

    _Atomic int state; /* enum proc__state */
    _Atomic pid_t pid;
    _Atomic int exitcode;
    pid_t owner;             /* the process that started it */
    int pidfd;               /* sentinel on Linux; -1 without pidfd */
    int joiners;             /* threads polling pidfd in proc_join: the reaper leaves p to them */
    int stdio_how[3];        /* PROC_STDIO_* or an fd of the caller's, for 0, 1, 2 */
    int stdio_parent[3];     /* the parent's ends of PROC_STDIO_PIPE streams, or -1 */
    struct proc__comm *comm; /* what proc_communicate() left for its next call (communicate.c) */
    int pipe_r, pipe_w;      /* sentinel without pidfd: the reaper closes pipe_w */
    unsigned long long start_time; /* without pidfd: the kernel's start time of pid, or 0 */
    struct rusage rusage;          /* from the reap, once have_rusage */
    bool have_rusage;
    struct proc *prev, *next; /* the owner's registry of started, unclosed children */
    struct proc *ended_next;  /* reaper's batch of children whose callbacks are due */
};

/* Process-wide state. Guarded by lock unless the field says otherwise. */
struct proc__global {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* broadcast when a child reaches PROC__DONE or a request completes */

    struct proc *children; /* registry head */
    struct proc **fdtab;   /* fd number -> object owning it, for every fd libproc owns */
    size_t fdcap;
    size_t live;           /* children in PROC__RUNNING */
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

    bool in_callbacks; /* the reaper runs exit callbacks (user code) right now */

    /* the spawner: a long-lived thread that forks daemons asked for by other threads */
    bool spawner_running;
    struct proc__spawn_req *requests;
    struct proc__inflight *inflight; /* the fds of starts in progress (fork.c) */

    /*
     * The fork server (forkserver.c, forkserver_client.c). fs_lock serializes
     * the requests and guards these fields; they change under lock too, so
     * that a fork child, which closes fs_sock, sees them whole.
     */
    pthread_mutex_t fs_lock;
    int fs_sock;  /* the caller's end of the control socket; -1: no server */
    pid_t fs_pid; /* the server, a plain child of this process */
    int fs_pidfd; /* its pidfd, or -1 */
};

extern struct proc__global proc__g;

/* A start the spawner thread performs for another thread (long-lived parent for PDEATHSIG). */
struct proc__spawn_req {
    struct proc__spawn_req *next;
    struct proc *p;
    struct proc__start_ctx *ctx;
    pid_t result; /* pid, or negative errno */
    bool done;
};

/*
 * The fds of a start in progress, known to the fork handler until the reaper
 * registers the child. A process forked meanwhile by another thread closes
 * the child-side ones (status pipe, stdio ends), or a start would wait for
 * that process instead of its own child and a child's stdin would never see
 * EOF; every fork child, this start's own included, closes the parent's pipe
 * ends, which the fd table takes over at registration.
 */
#define PROC__INFLIGHT_MAX 8
struct proc__inflight {
    struct proc__inflight *next;
    int fds[PROC__INFLIGHT_MAX]; /* child side */
    int n;
    int parent_fds[3]; /* -1: none */
    int pidfd;         /* the child's pidfd from the fork server, until adopted; -1: none */
};

/* The record whose fds the calling thread's fork must keep (its own start). */
extern _Thread_local struct proc__inflight *proc__forking;

/* Everything a start prepares before the fork: nothing is allocated after it. */
struct proc__start_ctx {
    char *path;           /* exec mode: argv[0] resolved through PATH */
    char **envp;          /* exec mode: the child's environment */
    int child_fd[3];      /* dup2'd onto 0, 1, 2 in the child; -1 keeps the parent's */
    const sigset_t *mask; /* the child's signal mask; NULL: the forking thread's */
    struct proc__inflight inflight;
};

/* init.c: the one-time setup every public entry point runs first. */
void proc__init(void);

/* registry.c: the global state, the registry of children, the fd table, the tree */
bool proc__lock_configurable(struct proc *p);
struct proc *proc__current_locked(void);
void proc__registry_remove_locked(struct proc *p);
int proc__fd_track_locked(int fd, struct proc *p);
void proc__fd_untrack_locked(int fd);
/* Untracks and closes *fd if it is open, and sets it to -1. */
void proc__fd_close_locked(int *fd);
struct proc *proc__fd_owner_locked(int fd);
void proc__fd_close_inherited(void);
int proc__check_own_child(const struct proc *p);
/*
 * Registers a started child (p->pid set): its fds in the fd table (stdio pipe
 * ends, a sentinel pipe where one is needed, its pidfd: pidfd if >= 0, taken
 * over, else one opened here), or its start time without a pidfd, and its
 * place in the list. 0 or -errno; on failure p owns no fd any more (pidfd
 * included) and is in no list.
 */
int proc__registry_adopt_locked(struct proc *p, int pidfd);
/* Undoes proc__registry_adopt_locked(): out of the list, every fd of p closed. */
void proc__registry_drop_locked(struct proc *p);

/* fork.c: fork handlers, the fresh state of a fork child, starts in flight */
int proc__fork_handlers_install(void);
/* fork() by a caller that holds proc__g.lock and fs_lock (the fork handlers do not take
 * the first again); in the child, both come back unlocked. */
pid_t proc__fork_locked(void);
void proc__inflight_link(struct proc__inflight *f);
/* fd (just opened under the lock) joins f's child-side fds: 0, or -EMFILE when f is full. */
int proc__inflight_add_locked(struct proc__inflight *f, int fd);
/* A close-on-exec pipe whose two ends are in f from birth: 0, -EMFILE (no room), -errno. */
int proc__inflight_pipe(struct proc__inflight *f, int fds[2]);
/* Closes *fd (if open), one of f's child-side fds, and sets it to -1. */
void proc__inflight_close(struct proc__inflight *f, int *fd);
void proc__inflight_unlink_locked(struct proc__inflight *f);

/* stdio.c */
void proc__stdio_close_all_locked(struct proc *p);

/*
 * child.c: a callback-mode child between its creation and its target. What
 * the child does after it became p (proc__child_become): daemon watch, new
 * group, directory, standard streams, signal mask, environment; then the
 * target, the exit work and _exit.
 */
struct proc__child_setup {
    pid_t parent;
    int status_w;         /* where a failure's errno goes; -1: none */
    bool report_pid;      /* write a struct proc__child_status on success too (fork server) */
    int here_fd;          /* a directory to enter before p->cwd (the caller's); -1: stay */
    int stdio[3];         /* dup2'd onto 0, 1, 2, all >= 3; -1 keeps */
    const sigset_t *mask; /* the child's signal mask; NULL keeps it */
};
/* What a fork server's child reports on its status pipe: err 0 once set up. */
struct proc__child_status {
    int32_t err;
    int32_t pid;
};
/* p becomes this process's own object, the parent's name and key its parent object. */
void proc__child_become(struct proc *p, pid_t parent, struct proc__name_node *parent_name,
                        unsigned char *parent_key, size_t parent_key_len);
_Noreturn void proc__child_run(struct proc *p, const struct proc__child_setup *s);
/* Reports err on fd (a struct proc__child_status when with_pid) and _exit(127)s. */
_Noreturn void proc__child_fail(int fd, int err, bool with_pid);
/* PR_SET_PDEATHSIG(SIGKILL), and SIGKILL now if parent is gone already. */
void proc__child_daemon_of(pid_t parent);
/* dup2s the child's ends of its standard streams (all >= 3) onto 0, 1, 2. */
void proc__child_dup_stdio(const int fds[3]);

/*
 * forkserver_client.c: a start through the fork server, the caller's side.
 * The child's pid (its pidfd in ctx->inflight.pidfd), or -errno:
 * -ENOTCONN without a server, -ECONNRESET when the server was found dead
 * (it is forgotten then), the child's own setup errors (a bad cwd).
 */
pid_t proc__fs_spawn(struct proc *p, struct proc__start_ctx *ctx);
/*
 * Before p starts: fds (n <= PROC__PASS_MAX, each > 2) that a child made by
 * the fork server finds open at the same numbers, as a forked child inherits
 * them (libproc's own children, such as pool workers, need theirs). A forked
 * child ignores it. 0 or -EINVAL.
 */
int proc__set_pass_fds(struct proc *p, const int *fds, int n);
/* With fs_lock: 1 if the server lives, else 0 after forgetting a dead one. */
int proc__fs_check_locked(void);
/* With fs_lock: kills and reaps the server, closes the socket. */
void proc__fs_forget_locked(void);

/* spawn.c: one start in the calling thread: exec plan, standard streams, fork or posix_spawn */
/* The child's pid, or -errno (exec and chdir errors of the child included). */
pid_t proc__spawn_child(struct proc *p, struct proc__start_ctx *ctx);

/* spawner.c: the same, on the long-lived spawner thread (daemons' PDEATHSIG) */
pid_t proc__spawner_delegate(struct proc *p, struct proc__start_ctx *ctx);

/* reaper.c */
int proc__reaper_ensure_locked(void);
void proc__reaper_wake(void);
/*
 * Ends a start whose spawn gave pid (or -errno): registers the child with the
 * reaper (with f->pidfd, the fork server's, if any) and takes f out of
 * flight, or takes a child that cannot be registered back (SIGKILL and
 * reap). 0 or -errno.
 */
int proc__reaper_adopt(struct proc *p, struct proc__inflight *f, pid_t pid);
bool proc__on_reaper_thread(void);
void proc__reaper_collect_locked(void);
/* Reaps p in the calling thread if it has ended; its callbacks go to the reaper. */
void proc__reaper_reap_now_locked(struct proc *p);
/* Without callbacks: true once p (whose pidfd is out of epoll) was reaped and finished. */
bool proc__reaper_try_finish_locked(struct proc *p);
/* Takes p's pidfd out of the reaper's epoll (a joiner waits on it) or back in. */
void proc__reaper_arm_locked(struct proc *p, bool on);
/* How often waits that do not rely on the reaper thread alone look again. */
#define PROC__POLL_TICK_MS 100

/* wait.c: joining, and the work at exit */
void proc__exit_work(void);

/* signal.c */
int proc__signal_send_locked(struct proc *p, int sig);

#endif /* LIBPROC_CORE_H */
