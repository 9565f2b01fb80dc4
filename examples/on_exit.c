/* SPDX-License-Identifier: MIT */
/*
 * Exit callbacks: proc_on_exit() runs a function once the child has ended
 * and its exit code is known, before proc_join() returns, on libproc's
 * reaper thread. Exit codes are 0..255 for a normal exit and -N for a
 * process that signal N ended (Python's exitcode convention).
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/proc.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct child {
    const char *name;
    proc_target_fn *target;
    int expected; /* exit code we expect */
    int seen;     /* filled in by the callback */
    int calls;    /* how many times the callback ran */
};

static int ret_zero(void *arg)
{
    (void)arg;
    return 0;
}

static int ret_three(void *arg)
{
    (void)arg;
    return 3;
}

static int ret_300(void *arg) /* only the low 8 bits survive: 300 & 0xff = 44 */
{
    (void)arg;
    return 300;
}

/*
 * Leaving early. exit(7) would give the same exit code (and libproc makes sure
 * the parent's at-exit work does not run in the child), but exit() runs
 * atexit handlers and destructors inside a copy of a multithreaded process
 * (libproc's reaper is a thread), where only async-signal-safe calls are
 * strictly safe. _exit() is the fork-safe way out.
 */
static int leaves_early(void *arg)
{
    (void)arg;
    _exit(7);
}

static int blocks(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return 0; /* not reached */
}

static void on_child_exit(proc_t *p, void *arg)
{
    struct child *c = arg;
    c->seen = proc_exitcode(p);
    c->calls++;
    printf("[on_exit] %-8s pid %ld exitcode %d\n", proc_name(p), (long)proc_pid(p), c->seen);
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "on_exit: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

int main(void)
{
    struct child children[] = {
        {"zero", ret_zero, 0, 0, 0},           {"three", ret_three, 3, 0, 0},
        {"ret300", ret_300, 300 & 0xff, 0, 0}, {"exit7", leaves_early, 7, 0, 0},
        {"killed", blocks, -SIGKILL, 0, 0},
    };
    enum { N = sizeof children / sizeof children[0] };
    proc_t *procs[N] = {NULL};
    int rc, ok = 1;

    setvbuf(stdout, NULL, _IOLBF, 0);

    for (int i = 0; i < N; i++) {
        procs[i] = proc_new(children[i].target, NULL);
        if (procs[i] == NULL)
            return fail("proc_new", -errno);
        if ((rc = proc_set_name(procs[i], children[i].name)) < 0)
            return fail("proc_set_name", rc);
        if ((rc = proc_on_exit(procs[i], on_child_exit, &children[i])) < 0)
            return fail("proc_on_exit", rc);
        if ((rc = proc_start(procs[i])) < 0)
            return fail("proc_start", rc);
    }

    /* The last child would block forever: kill it. */
    if ((rc = proc_kill(procs[N - 1])) < 0)
        return fail("proc_kill", rc);

    for (int i = 0; i < N; i++) {
        if ((rc = proc_join(procs[i], PROC_WAIT_FOREVER)) < 0)
            return fail("proc_join", rc);
        /* The callback has run by the time proc_join returns. */
        const struct child *c = &children[i];
        int good =
            c->calls == 1 && c->seen == c->expected && proc_exitcode(procs[i]) == c->expected;
        printf("joined %-8s exitcode %4d, expected %4d, callback ran %d time(s): %s\n", c->name,
               proc_exitcode(procs[i]), c->expected, c->calls, good ? "ok" : "WRONG");
        ok &= good;
        if ((rc = proc_close(procs[i])) < 0)
            return fail("proc_close", rc);
    }
    return ok ? 0 : 1;
}
