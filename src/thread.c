/* SPDX-License-Identifier: MIT */
/* Starting libproc's internal threads. */
#include "thread.h"

#include <errno.h>
#include <semaphore.h>
#include <signal.h>

struct launch {
    void *(*fn)(void *);
    void *arg;
    sem_t running;
};

static void *launch_main(void *p)
{
    struct launch *l = p;
    void *(*fn)(void *) = l->fn;
    void *arg = l->arg;
    sem_post(&l->running); /* l lives on the creator's stack: not touched after this */
    return fn(arg);
}

int proc__thread_start(pthread_t *tid, void *(*fn)(void *), void *arg, bool detached, size_t stack)
{
    struct launch l = {.fn = fn, .arg = arg};
    if (sem_init(&l.running, 0, 0) < 0)
        return -errno;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    int r = pthread_attr_init(&attr);
    if (!r) {
        if (detached)
            r = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (!r && stack)
            r = pthread_attr_setstacksize(&attr, stack);
        if (!r)
            r = pthread_create(tid, &attr, launch_main, &l);
        pthread_attr_destroy(&attr);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* A thread still being set up may hold the allocator's locks of a runtime
     * that does not guard fork() (older AddressSanitizers: clang 14's, gcc 12's);
     * a child forked then would hang in its first malloc. So starts wait
     * until the new thread runs its own code. */
    while (!r && sem_wait(&l.running) < 0 && errno == EINTR)
        ;
    sem_destroy(&l.running);
    return -r;
}
