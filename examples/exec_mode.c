/* SPDX-License-Identifier: MIT */
/*
 * Exec mode: the child runs another program instead of a C function.
 *
 * argv[0] is looked up in PATH. A program that cannot be started is reported
 * by proc_start() itself (here -ENOENT), with no process left behind.
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/proc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what, int rc)
{
    fprintf(stderr, "exec_mode: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

/* Starts argv, waits for it and checks its exit code. */
static int run_program(const char *const argv[], int expected)
{
    int rc;
    proc_t *p = proc_new_exec(argv);
    if (p == NULL)
        return fail("proc_new_exec", -errno);
    printf("starting %s as %s\n", argv[0], proc_name(p));
    if ((rc = proc_start(p)) < 0)
        return fail("proc_start", rc);
    printf("started %s, pid %ld\n", argv[0], (long)proc_pid(p));
    if ((rc = proc_join(p, PROC_WAIT_FOREVER)) < 0)
        return fail("proc_join", rc);
    printf("%s exited with %d\n", argv[0], proc_exitcode(p));
    if (proc_exitcode(p) != expected) {
        fprintf(stderr, "exec_mode: expected exit code %d\n", expected);
        return 1;
    }
    if ((rc = proc_close(p)) < 0)
        return fail("proc_close", rc);
    return 0;
}

int main(void)
{
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);

    const char *const echo[] = {"echo", "hello from exec", NULL};
    if (run_program(echo, 0) != 0)
        return 1;

    const char *const sh[] = {"sh", "-c", "exit 3", NULL};
    if (run_program(sh, 3) != 0)
        return 1;

    /* A missing program: proc_start fails synchronously. */
    const char *const missing[] = {"libproc-no-such-program", NULL};
    proc_t *p = proc_new_exec(missing);
    if (p == NULL)
        return fail("proc_new_exec", -errno);
    rc = proc_start(p);
    printf("starting %s: proc_start returned %d (%s)\n", missing[0], rc, strerror(-rc));
    if (rc != -ENOENT)
        return fail("proc_start of a missing program (expected ENOENT)", rc);
    printf("after the failed start: is_alive = %s, pid = %ld\n",
           proc_is_alive(p) ? "true" : "false", (long)proc_pid(p));
    if (proc_is_alive(p))
        return 1;
    if ((rc = proc_close(p)) < 0)
        return fail("proc_close", rc);
    return 0;
}
