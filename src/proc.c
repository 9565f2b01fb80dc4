/* SPDX-License-Identifier: MIT */
/* The process object: creation, configuration, names, attributes, the process tree, close. */
#include "core.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROC_DEFAULT_AUTHKEY_LEN 32
#define PROC_MAX_AUTHKEY_LEN 256
#define PROC_MAX_ARG_COPY ((size_t)64 << 20) /* API 4.6: any size up to 64 MiB */

/* ----------------------------------------------------------------- helpers */

struct proc__name_node *proc__name_node_new(const char *text)
{
    size_t n = strlen(text) + 1;
    struct proc__name_node *node = malloc(sizeof *node + n);
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
    return p->kind == PROC__KIND_CHILD;
}

static bool is_started(const proc_t *p)
{
    return atomic_load(&p->state) != PROC__NEW;
}

/* ------------------------------------------------------- the process tree */

struct proc *proc__current_locked(void)
{
    if (proc__g.current)
        return proc__g.current;
    struct proc *m = &proc__g.main_obj;
    unsigned char *key = malloc(PROC_DEFAULT_AUTHKEY_LEN);
    struct proc__name_node *name = proc__name_node_new("MainProcess");
    if (!key || !name || proc__sys_random(key, PROC_DEFAULT_AUTHKEY_LEN) < 0) {
        free(key);
        free(name);
        errno = ENOMEM;
        return NULL;
    }
    m->kind = PROC__KIND_SELF;
    m->authkey = key;
    m->authkey_len = PROC_DEFAULT_AUTHKEY_LEN;
    atomic_store(&m->name, name);
    atomic_store(&m->state, PROC__RUNNING);
    atomic_store(&m->pid, getpid());
    atomic_store(&m->exitcode, PROC_EXITCODE_NONE);
    m->owner = getpid();
    m->pidfd = m->pipe_r = m->pipe_w = -1;
    proc__g.current = m;
    return m;
}

proc_t *proc_current(void)
{
    proc__init();
    pthread_mutex_lock(&proc__g.lock);
    struct proc *cur = proc__current_locked();
    pthread_mutex_unlock(&proc__g.lock);
    return cur;
}

proc_t *proc_parent(void)
{
    proc__init();
    pthread_mutex_lock(&proc__g.lock);
    struct proc *par = proc__g.have_parent ? &proc__g.parent_obj : NULL;
    pthread_mutex_unlock(&proc__g.lock);
    return par;
}

size_t proc_active_children(proc_t **out, size_t cap)
{
    if (!out)
        cap = 0;
    proc__init();
    size_t n = 0;
    pthread_mutex_lock(&proc__g.lock);
    proc__reaper_collect_locked();
    for (struct proc *c = proc__g.children; c; c = c->next) {
        /* Collected just now; proc_is_alive() would take the lock again. */
        int state = atomic_load(&c->state);
        if (state != PROC__RUNNING && state != PROC__ENDED)
            continue;
        if (n < cap)
            out[n] = c;
        n++;
    }
    pthread_mutex_unlock(&proc__g.lock);
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
    proc__init();
    struct proc *p = calloc(1, sizeof *p);
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    p->kind = PROC__KIND_CHILD;
    p->pidfd = p->pipe_r = p->pipe_w = -1;
    for (int i = 0; i < 3; i++) {
        p->stdio_how[i] = PROC_STDIO_INHERIT;
        p->stdio_parent[i] = -1;
    }
    atomic_store(&p->state, PROC__NEW);
    atomic_store(&p->exitcode, PROC_EXITCODE_NONE);

    pthread_mutex_lock(&proc__g.lock);
    struct proc *cur = proc__current_locked();
    unsigned long n = ++proc__g.counter;
    const char *prefix = proc__g.identity;
    char ident[256];
    snprintf(ident, sizeof ident, "%s%s%lu", prefix, *prefix ? ":" : "", n);
    if (cur) {
        p->authkey = malloc(cur->authkey_len);
        if (p->authkey) {
            memcpy(p->authkey, cur->authkey, cur->authkey_len);
            p->authkey_len = cur->authkey_len;
        }
    }
    pthread_mutex_unlock(&proc__g.lock);

    char name[sizeof ident + 16];
    snprintf(name, sizeof name, "Process-%s", ident);
    p->identity = strdup(ident);
    struct proc__name_node *node = proc__name_node_new(name);
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

static int set_flag(proc_t *p, bool *flag, bool value)
{
    int r = check_configurable(p);
    if (r < 0)
        return r;
    if (!proc__lock_configurable(p))
        return -EBUSY;
    *flag = value;
    pthread_mutex_unlock(&proc__g.lock);
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
    if (!proc__lock_configurable(p)) {
        free_strv(copy);
        return -EBUSY;
    }
    char **old = p->envp;
    p->envp = copy;
    pthread_mutex_unlock(&proc__g.lock);
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
    if (!proc__lock_configurable(p)) {
        free(copy);
        return -EBUSY;
    }
    char *old = p->cwd;
    p->cwd = copy;
    pthread_mutex_unlock(&proc__g.lock);
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
    struct proc__exit_cb *node = malloc(sizeof *node);
    if (!node)
        return -ENOMEM;
    node->next = NULL;
    node->fn = cb;
    node->arg = arg;
    if (!proc__lock_configurable(p)) {
        free(node);
        return -EBUSY;
    }
    struct proc__exit_cb **tail = &p->callbacks;
    while (*tail)
        tail = &(*tail)->next;
    *tail = node;
    pthread_mutex_unlock(&proc__g.lock);
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
    if (!proc__lock_configurable(p)) {
        free(copy);
        return -EBUSY;
    }
    unsigned char *old = p->authkey;
    p->authkey = copy;
    p->authkey_len = len;
    pthread_mutex_unlock(&proc__g.lock);
    free(old);
    return 0;
}

int proc_set_forkserver(proc_t *p, bool on)
{
    return set_flag(p, p ? &p->use_forkserver : NULL, on);
}

int proc_set_arg_copy(proc_t *p, const void *data, size_t len)
{
    int r = check_configurable(p);
    if (r < 0)
        return r;
    if (p->argv || !data || len == 0 || len > PROC_MAX_ARG_COPY)
        return -EINVAL;
    void *copy = malloc(len);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, data, len);
    if (!proc__lock_configurable(p)) {
        free(copy);
        return -EBUSY;
    }
    void *old = p->arg_copy;
    p->arg_copy = copy;
    p->arg_len = len;
    pthread_mutex_unlock(&proc__g.lock);
    free(old);
    return 0;
}

/* ------------------------------------------------------------------- names */

int proc_set_name(proc_t *p, const char *name)
{
    if (!p || !name || !*name)
        return -EINVAL;
    struct proc__name_node *node = proc__name_node_new(name);
    if (!node)
        return -ENOMEM;
    /* Keep the older names reachable: another thread may still be reading one. */
    struct proc__name_node *old = atomic_load(&p->name);
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
    struct proc__name_node *node = atomic_load(&((proc_t *)p)->name);
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

int proc_rusage(const proc_t *p, struct rusage *ru)
{
    if (!p || !ru || !is_child_object(p))
        return -EINVAL;
    int state = atomic_load(&((proc_t *)p)->state);
    if (state == PROC__NEW || state == PROC__STARTING)
        return -EAGAIN;
    if (p->owner != proc__self_pid())
        return -ECHILD; /* a copy inherited through fork: the child is not ours */
    if (state != PROC__ENDED && state != PROC__DONE)
        return -EAGAIN; /* from the reap on (exit callbacks may ask) */
    if (!p->have_rusage)
        return -ECHILD; /* reaped by something else: PROC_EXITCODE_UNKNOWN */
    *ru = p->rusage;
    return 0;
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
    if (state == PROC__NEW || state == PROC__STARTING || p->owner != proc__self_pid())
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

int proc_close(proc_t *p)
{
    if (!p)
        return 0;
    if (!is_child_object(p))
        return -EINVAL;
    proc__init();
    pthread_mutex_lock(&proc__g.lock);
    if (p == proc__g.current) {
        pthread_mutex_unlock(&proc__g.lock);
        return -EINVAL;
    }
    int state = atomic_load(&p->state);
    bool mine = p->owner == proc__self_pid();
    if (state == PROC__STARTING || (mine && (state == PROC__RUNNING || state == PROC__ENDED))) {
        pthread_mutex_unlock(&proc__g.lock);
        return -EBUSY;
    }
    if (mine && state == PROC__DONE)
        proc__registry_remove_locked(p);
    /*
     * Closed under the lock: a fork in between would otherwise hand the fds of
     * an unregistered object to the child. A copy inherited through fork owns
     * no fds: the fork handler closed the numbers it still holds.
     */
    if (mine) {
        proc__stdio_close_all_locked(p);
        proc__fd_close_locked(&p->pidfd);
        proc__fd_close_locked(&p->pipe_r);
        proc__fd_close_locked(&p->pipe_w);
    }
    pthread_mutex_unlock(&proc__g.lock);
    free_strv(p->argv);
    free_strv(p->envp);
    free(p->cwd);
    free(p->arg_copy);
    free(p->authkey);
    free(p->identity);
    free(p->comm);
    for (struct proc__exit_cb *cb = p->callbacks, *next; cb; cb = next) {
        next = cb->next;
        free(cb);
    }
    for (struct proc__name_node *n = atomic_load(&p->name), *older; n; n = older) {
        older = n->older;
        free(n);
    }
    free(p);
    return 0;
}
