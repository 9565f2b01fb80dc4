/* SPDX-License-Identifier: MIT */
/* Base layer: libproc's own threads, and the pause inside a spin-wait. */
#ifndef LIBPROC_THREAD_H
#define LIBPROC_THREAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Starts fn(arg) on a new thread with every signal blocked: libproc's threads
 * (reaper, spawner, pool dispatchers) must never take a signal meant for the
 * host's threads. stack 0 keeps the default size. Returns once the thread
 * runs fn (see thread.c for why). 0 or -errno.
 */
int proc__thread_start(pthread_t *tid, void *(*fn)(void *), void *arg, bool detached, size_t stack);

/* Inside a spin-wait loop: lets a sibling hyperthread run, saves power. */
static inline void proc__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif /* LIBPROC_THREAD_H */
