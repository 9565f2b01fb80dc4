/* SPDX-License-Identifier: MIT */
/* Starting libproc's internal threads. */
#include "thread.h"

#include <signal.h>

int proc__thread_start(pthread_t *tid, void *(*fn)(void *), void *arg, bool detached, size_t stack)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    int r = pthread_attr_init(&attr);
    if (r) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return -r;
    }
    if (detached)
        r = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (!r && stack)
        r = pthread_attr_setstacksize(&attr, stack);
    if (!r)
        r = pthread_create(tid, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -r;
}
