/* SPDX-License-Identifier: MIT */
/*
 * The spawner: a thread that lives as long as the process and forks daemonic
 * children asked for by other threads. PR_SET_PDEATHSIG fires when the thread
 * that forked ends, so a daemon started by a short-lived thread must be
 * forked by one that never ends; this one runs no user code, so it is always
 * free to fork.
 */
#include "core.h"
#include "thread.h"

/*
 * Serves the requests of proc__spawner_delegate(). Its child runs the target with the requester's
 * signal mask, on a copy of this thread's stack (default size) and thread-local storage.
 */
static void *spawner_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&proc__g.lock);
    for (;;) {
        while (!proc__g.requests)
            pthread_cond_wait(&proc__g.cond, &proc__g.lock);
        struct proc__spawn_req *req = proc__g.requests;
        proc__g.requests = NULL;
        pthread_mutex_unlock(&proc__g.lock);
        while (req) {
            struct proc__spawn_req *next = req->next;
            pid_t pid = proc__spawn_child(req->p, req->ctx);
            pthread_mutex_lock(&proc__g.lock);
            req->result = pid;
            req->done = true;
            pthread_cond_broadcast(&proc__g.cond);
            pthread_mutex_unlock(&proc__g.lock);
            req = next;
        }
        pthread_mutex_lock(&proc__g.lock);
    }
    return NULL;
}

static int spawner_ensure_locked(void)
{
    if (proc__g.spawner_running)
        return 0;
    pthread_t tid;
    int r = proc__thread_start(&tid, spawner_main, NULL, true, 0);
    if (r < 0)
        return r;
    proc__g.spawner_running = true;
    return 0;
}

pid_t proc__spawner_delegate(proc_t *p, struct proc__start_ctx *ctx)
{
    struct proc__spawn_req req = {.p = p, .ctx = ctx};
    int cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    pthread_mutex_lock(&proc__g.lock);
    pid_t r = spawner_ensure_locked();
    if (r == 0) {
        req.next = proc__g.requests;
        proc__g.requests = &req;
        pthread_cond_broadcast(&proc__g.cond);
        while (!req.done)
            pthread_cond_wait(&proc__g.cond, &proc__g.lock);
        r = req.result;
    }
    pthread_mutex_unlock(&proc__g.lock);
    pthread_setcancelstate(cancel, NULL);
    return r;
}
