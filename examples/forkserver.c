/* SPDX-License-Identifier: MIT */
/*
 * Python 3.14's default start method on Linux, "forkserver", in C.
 *
 * A program with threads should not fork(): a lock another thread holds at
 * that moment stays locked in the child for ever. Here a thread takes the
 * log's mutex and keeps it until the end, while the main thread starts
 * workers that log, so take that mutex: forked from this process they would
 * all hang. proc_forkserver_start(), called first in main(), forks one
 * single-threaded server; children started with proc_set_forkserver(p, true)
 * and a pool with use_forkserver are cloned from it, so they see the memory
 * as it was then (the mutex free), and are still ordinary children of this
 * process: join, exit codes and signals work as usual. Their argument
 * travels as a copy (proc_set_arg_copy()), since the server never saw this
 * process's later memory.
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/pool.h>
#include <libproc/proc.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define WORKERS 4

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

/* What the workers call: it takes the mutex the holder thread keeps. */
static void log_line(const char *what, int n)
{
    pthread_mutex_lock(&log_mutex);
    printf("[pid %ld] %s %d\n", (long)getpid(), what, n);
    fflush(stdout);
    pthread_mutex_unlock(&log_mutex);
}

/* Holds the mutex until main() writes to (or closes) the pipe whose read end is arg. */
static void *holder(void *arg)
{
    int *fds = arg;
    pthread_mutex_lock(&log_mutex);
    char c = 1;
    if (write(fds[1], &c, 1) != 1) /* tell main() the mutex is held */
        return NULL;
    while (read(fds[2], &c, 1) < 0 && errno == EINTR)
        ;
    pthread_mutex_unlock(&log_mutex);
    return NULL;
}

struct job {
    int id;
    int square_of;
};

/* Runs in a child cloned from the server; arg is this child's copy of a struct job. */
static int worker(void *arg)
{
    const struct job *j = arg;
    log_line("worker computes the square of", j->square_of);
    return j->square_of * j->square_of % 256;
}

static int square(const void *in, void *out)
{
    int v;
    memcpy(&v, in, sizeof v);
    log_line("pool worker squares", v);
    v *= v;
    memcpy(out, &v, sizeof v);
    return 0;
}

static int run_workers(void)
{
    proc_t *p[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        struct job j = {i, i + 3};
        p[i] = proc_new(worker, NULL);
        if (!p[i] || proc_set_forkserver(p[i], true) < 0 ||
            proc_set_arg_copy(p[i], &j, sizeof j) < 0 || proc_start(p[i]) < 0) {
            fprintf(stderr, "starting worker %d failed\n", i);
            return 1;
        }
    }
    int bad = 0;
    for (int i = 0; i < WORKERS; i++) {
        int r = proc_join(p[i], 10000);
        printf("worker %d (pid %ld): join %d, exitcode %d\n", i, (long)proc_pid(p[i]), r,
               proc_exitcode(p[i]));
        bad += r != 0 || proc_exitcode(p[i]) != (i + 3) * (i + 3) % 256;
        proc_close(p[i]);
    }
    return bad;
}

static int run_pool(void)
{
    proc_pool_opts_t o = {.workers = 2, .use_forkserver = true};
    proc_pool_t *pool = proc_pool_new(&o);
    if (!pool) {
        fprintf(stderr, "proc_pool_new: %s\n", strerror(errno));
        return 1;
    }
    int in[8], out[8], bad = 0;
    for (int i = 0; i < 8; i++)
        in[i] = i;
    int r = proc_pool_map(pool, square, in, sizeof in[0], out, sizeof out[0], 8);
    printf("pool map: %d; squares:", r);
    for (int i = 0; i < 8; i++) {
        printf(" %d", out[i]);
        bad += out[i] != i * i;
    }
    printf("\n");
    proc_pool_free(pool);
    return bad + (r != 0);
}

int main(void)
{
    int r = proc_forkserver_start(); /* first, while this process has one thread */
    if (r < 0) {
        fprintf(stderr, "proc_forkserver_start: %s\n", strerror(-r));
        return 1;
    }
    int held[2], release[2];
    if (pipe(held) < 0 || pipe(release) < 0)
        return 1;
    int fds[3] = {held[0], held[1], release[0]};
    pthread_t t;
    char c;
    if (pthread_create(&t, NULL, holder, fds) != 0 || read(held[0], &c, 1) != 1)
        return 1;
    printf("a thread holds the log mutex; starting %d workers through the fork server\n", WORKERS);
    fflush(stdout);
    int bad = run_workers() + run_pool();
    close(release[1]); /* the holder lets go */
    pthread_join(t, NULL);
    printf(bad ? "FAILED\n" : "all workers ran: none inherited the held mutex\n");
    return bad != 0;
}
