/* SPDX-License-Identifier: MIT */
/* The process object: creation, configuration, names, attributes, the registry. */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PROC_DEFAULT_AUTHKEY_LEN 32
#define PROC_MAX_AUTHKEY_LEN 256

struct proc_global proc_g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .epfd = -1,
    .wakefd = -1,
    .identity = "",
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

void proc_init_cond(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&proc_g.cond, &attr);
    pthread_condattr_destroy(&attr);
}

static void global_init(void)
{
    proc_init_cond();
    atomic_store(&proc_g.self, getpid());
    proc_g.init_err = proc_lifecycle_init();
}

void proc_g_init(void)
{
    pthread_once(&init_once, global_init);
}

/* ----------------------------------------------------------------- helpers */

static struct proc_name_node *name_node(const char *text)
{
    size_t n = strlen(text) + 1;
    struct proc_name_node *node = malloc(sizeof *node + n);
    if (node) {
        node->older = NULL;
        memcpy(node->text, text, n);
    }
    return node;
}

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **s = v; *s; s++)
        free(*s);
    free(v);
}

static char **copy_strv(const char *const *v)
{
    size_t n = 0;
    while (v[n])
        n++;
    char **out = calloc(n + 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[i] = strdup(v[i]);
        if (!out[i]) {
            free_strv(out);
            return NULL;
        }
    }
    return out;
}

static bool is_child_object(const proc_t *p)
{
    return p->kind == PROC_KIND_CHILD;
}

static bool is_started(const proc_t *p)
{
    return atomic_load(&p->state) != PROC_NEW;
}

/* ---------------------------------------------------------------- registry */

void proc_registry_add_locked(struct proc *p)
{
    p->prev = NULL;
    p->next = proc_g.children;
    if (proc_g.children)
        proc_g.children->prev = p;
    proc_g.children = p;
}

void proc_registry_remove_locked(struct proc *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else if (proc_g.children == p)
        proc_g.children = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/*
 * Every fd libproc owns for its children, indexed by number. The reaper maps
 * epoll events back to objects through it, so an event fetched just before
 * its object was closed finds NULL (or the object now using that number, which
 * it checks), never freed memory. Fork children close all of them without
 * writing to the objects, which would copy every page that holds one.
 */
int proc_fd_track_locked(int fd, struct proc *p)
{
    if ((size_t)fd >= proc_g.fdcap) {
        size_t cap = proc_g.fdcap ? proc_g.fdcap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        struct proc **tab = realloc(proc_g.fdtab, cap * sizeof *tab);
        if (!tab)
            return -ENOMEM;
        memset(tab + proc_g.fdcap, 0, (cap - proc_g.fdcap) * sizeof *tab);
        proc_g.fdtab = tab;
        proc_g.fdcap = cap;
    }
    proc_g.fdtab[fd] = p;
    return 0;
}

void proc_fd_untrack_locked(int fd)
{
    if (fd >= 0 && (size_t)fd < proc_g.fdcap)
        proc_g.fdtab[fd] = NULL;
}

struct proc *proc_fd_owner_locked(int fd)
{
    return fd >= 0 && (size_t)fd < proc_g.fdcap ? proc_g.fdtab[fd] : NULL;
}

static void close_fd_range(unsigned first, unsigned last)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, first, last, 0) == 0)
        return;
#endif
    for (unsigned fd = first; fd <= last; fd++)
        close((int)fd);
}

/* In a fork child: the parent's pidfds and sentinel pipes are not ours. */
void proc_fd_close_inherited(void)
{
    size_t fd = 0;
    while (fd < proc_g.fdcap) {
        if (!proc_g.fdtab[fd]) {
            fd++;
            continue;
        }
        size_t last = fd;
        while (last + 1 < proc_g.fdcap && proc_g.fdtab[last + 1])
            last++;
        close_fd_range((unsigned)fd, (unsigned)last);
        memset(proc_g.fdtab + fd, 0, (last - fd + 1) * sizeof *proc_g.fdtab);
        fd = last + 1;
    }
}

/* ------------------------------------------------------- the process tree */

struct proc *proc_ensure_current_locked(void)
{
    if (proc_g.current)
        return proc_g.current;
    struct proc *m = &proc_g.main_obj;
    unsigned char *key = malloc(PROC_DEFAULT_AUTHKEY_LEN);
    struct proc_name_node *name = name_node("MainProcess");
    if (!key || !name || proc_sys_random(key, PROC_DEFAULT_AUTHKEY_LEN) < 0) {
        free(key);
        free(name);
        errno = ENOMEM;
        return NULL;
    }
    m->kind = PROC_KIND_SELF;
    m->authkey = key;
    m->authkey_len = PROC_DEFAULT_AUTHKEY_LEN;
    atomic_store(&m->name, name);
    atomic_store(&m->state, PROC_RUNNING);
    atomic_store(&m->pid, getpid());
    atomic_store(&m->exitcode, PROC_EXITCODE_NONE);
    m->owner = getpid();
    m->pidfd = m->pipe_r = m->pipe_w = -1;
    proc_g.current = m;
    return m;
}

/*
 * Called in a freshly forked child of proc_start (callback mode), after the
 * fork handlers reset libproc: p becomes this process's own object and the
 * former current object describes the parent.
 */
void proc_child_became(struct proc *p, pid_t parent_pid, struct proc *old_current)
{
    struct proc *par = &proc_g.parent_obj;
    memset(par, 0, sizeof *par);
    par->kind = PROC_KIND_PARENT;
    /* The parent's name node is a copy in our memory and nobody frees it here. */
    atomic_store(&par->name, old_current ? atomic_load(&old_current->name) : NULL);
    atomic_store(&par->pid, parent_pid);
    atomic_store(&par->state, PROC_RUNNING);
    atomic_store(&par->exitcode, PROC_EXITCODE_NONE);
    par->owner = parent_pid;
    par->pidfd = par->pipe_r = par->pipe_w = -1;
    if (old_current) {
        par->authkey = old_current->authkey;
        par->authkey_len = old_current->authkey_len;
    }
    proc_g.have_parent = true;

    pid_t self = getpid();
    p->kind = PROC_KIND_SELF;
    atomic_store(&p->pid, self);
    atomic_store(&p->state, PROC_RUNNING);
    p->owner = self;
    p->prev = p->next = NULL;
    proc_g.current = p;
    proc_g.identity = p->identity;
    proc_g.counter = 0;
}

proc_t *proc_current(void)
{
    proc_g_init();
    pthread_mutex_lock(&proc_g.lock);
    struct proc *cur = proc_ensure_current_locked();
    pthread_mutex_unlock(&proc_g.lock);
    return cur;
}

proc_t *proc_parent(void)
{
    proc_g_init();
    pthread_mutex_lock(&proc_g.lock);
    struct proc *par = proc_g.have_parent ? &proc_g.parent_obj : NULL;
    pthread_mutex_unlock(&proc_g.lock);
    return par;
}

size_t proc_active_children(proc_t **out, size_t cap)
{
    if (!out)
        cap = 0;
    proc_g_init();
    size_t n = 0;
    pthread_mutex_lock(&proc_g.lock);
    proc_reaper_collect_locked();
    for (struct proc *c = proc_g.children; c; c = c->next) {
        /* Collected just now; proc_is_alive() would take the lock again. */
        int state = atomic_load(&c->state);
        if (state != PROC_RUNNING && state != PROC_ENDED)
            continue;
        if (n < cap)
            out[n] = c;
        n++;
    }
    pthread_mutex_unlock(&proc_g.lock);
    return n;
}

int proc_cpu_count(void)
{
    /* Grow the mask until the kernel accepts it: machines may exceed CPU_SETSIZE. */
    for (int ncpu = 1024; ncpu <= (1 << 20); ncpu *= 2) {
        size_t size = CPU_ALLOC_SIZE(ncpu);
        cpu_set_t *set = CPU_ALLOC(ncpu);
        if (!set)
            break;
        if (sched_getaffinity(0, size, set) == 0) {
            int n = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return n > 0 ? n : 1;
        }
        int err = errno;
        CPU_FREE(set);
        if (err != EINVAL)
            break;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---------------------------------------------------------------- creation */

static proc_t *new_object(void)
{
    proc_g_init();
    struct proc *p = calloc(1, sizeof *p);
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    p->kind = PROC_KIND_CHILD;
    p->pidfd = p->pipe_r = p->pipe_w = -1;
    for (int i = 0; i < 3; i++) {
        p->stdio_how[i] = PROC_STDIO_INHERIT;
        p->stdio_parent[i] = -1;
    }
    atomic_store(&p->state, PROC_NEW);
    atomic_store(&p->exitcode, PROC_EXITCODE_NONE);

    pthread_mutex_lock(&proc_g.lock);
    struct proc *cur = proc_ensure_current_locked();
    unsigned long n = ++proc_g.counter;
    const char *prefix = proc_g.identity;
    char ident[256];
    snprintf(ident, sizeof ident, "%s%s%lu", prefix, *prefix ? ":" : "", n);
    if (cur) {
        p->authkey = malloc(cur->authkey_len);
        if (p->authkey) {
            memcpy(p->authkey, cur->authkey, cur->authkey_len);
            p->authkey_len = cur->authkey_len;
        }
    }
    pthread_mutex_unlock(&proc_g.lock);

    char name[sizeof ident + 16];
    snprintf(name, sizeof name, "Process-%s", ident);
    p->identity = strdup(ident);
    struct proc_name_node *node = name_node(name);
    atomic_store(&p->name, node);
    if (!cur || !p->authkey || !p->identity || !node) {
        proc_close(p);
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

proc_t *proc_new(proc_target_fn *target, void *arg)
{
    proc_t *p = new_object();
    if (p) {
        p->target = target;
        p->arg = arg;
    }
    return p;
}

proc_t *proc_new_exec(const char *const argv[])
{
    if (!argv || !argv[0]) {
        errno = EINVAL;
        return NULL;
    }
    char **copy = copy_strv(argv);
    if (!copy) {
        errno = ENOMEM;
        return NULL;
    }
    proc_t *p = new_object();
    if (!p) {
        free_strv(copy);
        return NULL;
    }
    p->argv = copy;
    return p;
}

/* ----------------------------------------------------------- configuration */

/* NULL is -EINVAL, a started (or libproc-owned) object -EBUSY: before anything else. */
static int check_configurable(const proc_t *p)
{
    if (!p)
        return -EINVAL;
    if (!is_child_object(p) || is_started(p))
        return -EBUSY;
    return 0;
}

/*
 * Takes the lock if p may still be configured: proc_start moves p out of
 * PROC_NEW under the same lock, so a setter never changes what a start reads.
 */
bool proc_lock_configurable(proc_t *p)
{
    pthread_mutex_lock(&proc_g.lock);
    if (!is_started(p))
        return true;
    pthread_mutex_unlock(&proc_g.lock);
    return false;
}

static int set_flag(proc_t *p, bool *flag, bool value)
{
    int r = check_configurable(p);
    if (r < 0)
        return r;
    if (!proc_lock_configurable(p))
        return -EBUSY;
    *flag = value;
    pthread_mutex_unlock(&proc_g.lock);
    return 0;
}

int proc_set_daemon(proc_t *p, bool daemon)
{
    return set_flag(p, p ? &p->daemon : NULL, daemon);
}

int proc_set_new_group(proc_t *p, bool on)
{
    return set_flag(p, p ? &p->new_group : NULL, on);
}

int proc_set_env(proc_t *p, const char *const envp[])
{
    int r = check_configurable(p);
    if (r < 0)
        return r;
    char **copy = NULL;
    if (envp && !(copy = copy_strv(envp)))
        return -ENOMEM;
    if (!proc_lock_configurable(p)) {
        free_strv(copy);
        return -EBUSY;
    }
    char **old = p->envp;
    p->envp = copy;
    pthread_mutex_unlock(&proc_g.lock);
    free_strv(old);
    return 0;
}

int proc_set_cwd(proc_t *p, const char *dir)
{
    int r = check_configurable(p);
    if (r < 0)
        return r;
    if (dir && !*dir)
        return -EINVAL;
    char *copy = NULL;
    if (dir && !(copy = strdup(dir)))
        return -ENOMEM;
    if (!proc_lock_configurable(p)) {
        free(copy);
        return -EBUSY;
    }
    char *old = p->cwd;
    p->cwd = copy;
    pthread_mutex_unlock(&proc_g.lock);
    free(old);
    return 0;
}

int proc_on_exit(proc_t *p, proc_exit_fn *cb, void *arg)
{
    int r = check_configurable(p);
    if (r < 0)
        return r;
    if (!cb)
        return -EINVAL;
    struct proc_exit_cb *node = malloc(sizeof *node);
    if (!node)
        return -ENOMEM;
    node->next = NULL;
    node->fn = cb;
    node->arg = arg;
    if (!proc_lock_configurable(p)) {
        free(node);
        return -EBUSY;
    }
    struct proc_exit_cb **tail = &p->callbacks;
    while (*tail)
        tail = &(*tail)->next;
    *tail = node;
    pthread_mutex_unlock(&proc_g.lock);
    return 0;
}

int proc_set_authkey(proc_t *p, const void *key, size_t len)
{
    int r = check_configurable(p);
    if (r < 0)
        return r;
    if (!key || len == 0 || len > PROC_MAX_AUTHKEY_LEN)
        return -EINVAL;
    unsigned char *copy = malloc(len);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, key, len);
    if (!proc_lock_configurable(p)) {
        free(copy);
        return -EBUSY;
    }
    unsigned char *old = p->authkey;
    p->authkey = copy;
    p->authkey_len = len;
    pthread_mutex_unlock(&proc_g.lock);
    free(old);
    return 0;
}

/* ------------------------------------------------------------------- names */

int proc_set_name(proc_t *p, const char *name)
{
    if (!p || !name || !*name)
        return -EINVAL;
    struct proc_name_node *node = name_node(name);
    if (!node)
        return -ENOMEM;
    /* Keep the older names reachable: another thread may still be reading one. */
    struct proc_name_node *old = atomic_load(&p->name);
    do {
        node->older = old;
    } while (!atomic_compare_exchange_weak(&p->name, &old, node));
    return 0;
}

const char *proc_name(const proc_t *p)
{
    if (!p) {
        errno = EINVAL;
        return NULL;
    }
    struct proc_name_node *node = atomic_load(&((proc_t *)p)->name);
    return node ? node->text : NULL;
}

/* -------------------------------------------------------------- attributes */

pid_t proc_pid(const proc_t *p)
{
    return p ? atomic_load(&((proc_t *)p)->pid) : 0;
}

int proc_exitcode(const proc_t *p)
{
    return p ? atomic_load(&((proc_t *)p)->exitcode) : PROC_EXITCODE_NONE;
}

bool proc_daemon(const proc_t *p)
{
    return p ? p->daemon : false;
}

int proc_sentinel(const proc_t *p)
{
    if (!p || !is_child_object(p))
        return -EINVAL;
    int state = atomic_load(&((proc_t *)p)->state);
    if (state == PROC_NEW || state == PROC_STARTING || p->owner != atomic_load(&proc_g.self))
        return -EINVAL;
    /* The pipe, where there is one, turns readable when the child is joinable;
     * a pidfd at the exit, which is the same moment only without callbacks. */
    if (p->pipe_r >= 0)
        return p->pipe_r;
    return p->pidfd >= 0 ? p->pidfd : -EINVAL;
}

const unsigned char *proc_authkey(const proc_t *p, size_t *len)
{
    if (!p) {
        if (len)
            *len = 0;
        errno = EINVAL;
        return NULL;
    }
    if (len)
        *len = p->authkey_len;
    return p->authkey;
}

/* ------------------------------------------------------------------- close */

void proc_fd_close_locked(int *fd)
{
    if (*fd >= 0) {
        proc_fd_untrack_locked(*fd);
        close(*fd);
        *fd = -1;
    }
}

int proc_close(proc_t *p)
{
    if (!p)
        return 0;
    if (!is_child_object(p))
        return -EINVAL;
    proc_g_init();
    pthread_mutex_lock(&proc_g.lock);
    if (p == proc_g.current) {
        pthread_mutex_unlock(&proc_g.lock);
        return -EINVAL;
    }
    int state = atomic_load(&p->state);
    bool mine = p->owner == atomic_load(&proc_g.self);
    if (state == PROC_STARTING || (mine && (state == PROC_RUNNING || state == PROC_ENDED))) {
        pthread_mutex_unlock(&proc_g.lock);
        return -EBUSY;
    }
    if (mine && state == PROC_DONE)
        proc_registry_remove_locked(p);
    /*
     * Closed under the lock: a fork in between would otherwise hand the fds of
     * an unregistered object to the child. A copy inherited through fork owns
     * no fds: the fork handler closed the numbers it still holds.
     */
    if (mine) {
        proc_stdio_close_all_locked(p);
        proc_fd_close_locked(&p->pidfd);
        proc_fd_close_locked(&p->pipe_r);
        proc_fd_close_locked(&p->pipe_w);
    }
    pthread_mutex_unlock(&proc_g.lock);
    free_strv(p->argv);
    free_strv(p->envp);
    free(p->cwd);
    free(p->authkey);
    free(p->identity);
    for (struct proc_exit_cb *cb = p->callbacks, *next; cb; cb = next) {
        next = cb->next;
        free(cb);
    }
    for (struct proc_name_node *n = atomic_load(&p->name), *older; n; n = older) {
        older = n->older;
        free(n);
    }
    free(p);
    return 0;
}
