/* SPDX-License-Identifier: MIT */
/*
 * Tutorial: p.daemon = True, p.join(timeout).
 *
 * The daemonic child must be marked before start, may not start children of
 * its own, and does not outlive its parent: when main() returns, libproc
 * sends it SIGTERM and reaps it. join() with a short timeout just gives up
 * waiting (-ETIMEDOUT); the child keeps running in the background.
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/proc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int ready_pipe[2];

static int egon(void *arg)
{
    const char *name = arg;
    printf("%s is piaoing (pid %ld, daemon = %s)\n", name, (long)getpid(),
           proc_daemon(proc_current()) ? "true" : "false");

    /* A daemonic process may not have children. */
    proc_t *grandchild = proc_new(NULL, NULL);
    int rc = grandchild ? proc_start(grandchild) : -errno;
    printf("%s: starting a child of its own: %s\n", name, strerror(-rc));
    proc_close(grandchild);
    fflush(stdout);

    /* Report to the parent whether that was refused as documented, then block
     * until libproc terminates us at the parent's exit. */
    char verdict = rc == -EPERM ? 'y' : 'n';
    close(ready_pipe[0]);
    if (write(ready_pipe[1], &verdict, 1) != 1)
        return 1;
    for (;;)
        pause();
    return 0; /* not reached */
}

/* Runs on libproc's reaper thread once the daemon has been reaped. */
static void on_daemon_exit(proc_t *p, void *arg)
{
    (void)arg;
    printf("[on_exit] %s ended, exitcode %d\n", proc_name(p), proc_exitcode(p));
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "daemon_join_timeout: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

int main(void)
{
    char verdict;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(ready_pipe) < 0)
        return fail("pipe", -errno);

    proc_t *p = proc_new(egon, "egon");
    if (p == NULL)
        return fail("proc_new", -errno);
    if ((rc = proc_set_name(p, "egon")) < 0)
        return fail("proc_set_name", rc);
    if ((rc = proc_set_daemon(p, true)) < 0) /* must come before proc_start */
        return fail("proc_set_daemon", rc);
    if ((rc = proc_on_exit(p, on_daemon_exit, NULL)) < 0)
        return fail("proc_on_exit", rc);
    if ((rc = proc_start(p)) < 0)
        return fail("proc_start", rc);
    close(ready_pipe[1]);

    rc = proc_set_daemon(p, false);
    printf("changing daemon after start: %s\n", strerror(-rc));
    if (rc != -EBUSY)
        return fail("proc_set_daemon after start (expected EBUSY)", rc);

    if (read(ready_pipe[0], &verdict, 1) != 1)
        return fail("read from child", -EIO);
    close(ready_pipe[0]);
    if (verdict != 'y') {
        fprintf(stderr, "daemon_join_timeout: the daemon was allowed to start a child\n");
        return 1;
    }

    rc = proc_join(p, 1); /* wait 1 ms, then stop waiting */
    printf("join(p, 1 ms): %s\n", strerror(-rc));
    if (rc != -ETIMEDOUT)
        return fail("proc_join (expected ETIMEDOUT)", rc);
    printf("start\n");
    printf("is_alive = %s; main returns now, libproc terminates the daemon\n",
           proc_is_alive(p) ? "true" : "false");
    /* p is still running, so it cannot be closed here; libproc owns the rest. */
    return 0;
}
