/* SPDX-License-Identifier: MIT */
/*
 * Tutorial: p.terminate() and p.is_alive().
 *
 * terminate() only sends SIGTERM; the child needs a moment to die and be
 * reaped, so is_alive() right afterwards may still say true. After join()
 * it is false and the exit code is -15 (-SIGTERM).
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/proc.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int ready_pipe[2];

/* The child announces itself, then blocks until a signal ends it. */
static int egon(void *arg)
{
    const char *name = arg;
    printf("%s is piaoing (pid %ld)\n", name, (long)getpid());
    fflush(stdout);
    close(ready_pipe[0]);
    if (write(ready_pipe[1], "r", 1) != 1)
        return 1;
    for (;;)
        pause();
    return 0; /* not reached */
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "terminate_is_alive: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

static const char *yes_no(bool b)
{
    return b ? "true" : "false";
}

int main(void)
{
    char c;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(ready_pipe) < 0)
        return fail("pipe", -errno);

    proc_t *p1 = proc_new(egon, "egon1");
    if (p1 == NULL)
        return fail("proc_new", -errno);
    if ((rc = proc_set_name(p1, "egon1")) < 0)
        return fail("proc_set_name", rc);
    printf("before start: is_alive = %s\n", yes_no(proc_is_alive(p1)));
    if ((rc = proc_start(p1)) < 0)
        return fail("proc_start", rc);
    close(ready_pipe[1]);

    /* Wait (on a pipe, not a timer) until the child is really running. */
    if (read(ready_pipe[0], &c, 1) != 1)
        return fail("read from child", -EIO);
    close(ready_pipe[0]);

    if ((rc = proc_terminate(p1)) < 0)
        return fail("proc_terminate", rc);
    /* Not immediate: this may well still print true. */
    printf("right after terminate: is_alive = %s\n", yes_no(proc_is_alive(p1)));

    if ((rc = proc_join(p1, PROC_WAIT_FOREVER)) < 0)
        return fail("proc_join", rc);
    printf("start\n");
    printf("after join: is_alive = %s, exitcode = %d (-SIGTERM = %d)\n", yes_no(proc_is_alive(p1)),
           proc_exitcode(p1), -SIGTERM);
    if (proc_is_alive(p1) || proc_exitcode(p1) != -SIGTERM) {
        fprintf(stderr, "terminate_is_alive: unexpected state after join\n");
        return 1;
    }

    /* Terminating an ended process is a harmless no-op. */
    if ((rc = proc_terminate(p1)) < 0)
        return fail("proc_terminate after exit", rc);
    printf("terminate again after exit: ok (no-op)\n");

    if ((rc = proc_close(p1)) < 0)
        return fail("proc_close", rc);
    return 0;
}
