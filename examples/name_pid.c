/* SPDX-License-Identifier: MIT */
/*
 * Tutorial: p.name and p.pid, plus current_process() and parent_process().
 *
 * The parent sees the default name "Process-1", renames the object to "egon"
 * and prints its pid. Inside the child, proc_current() is the child's own
 * object (named "egon") and proc_parent() describes the parent
 * ("MainProcess"). The child checks what it sees and reports through its
 * exit code.
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/proc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int child(void *arg)
{
    (void)arg;
    proc_t *me = proc_current();
    proc_t *parent = proc_parent();
    int bad = 0;

    if (me == NULL || parent == NULL) {
        printf("child: proc_current or proc_parent is NULL\n");
        return 2;
    }
    printf("child: current name = %s, pid = %ld (getpid() = %ld)\n", proc_name(me),
           (long)proc_pid(me), (long)getpid());
    printf("child: parent name = %s, pid = %ld (getppid() = %ld), parent alive = %s\n",
           proc_name(parent), (long)proc_pid(parent), (long)getppid(),
           proc_is_alive(parent) ? "true" : "false");
    bad |= strcmp(proc_name(me), "egon") != 0;
    bad |= proc_pid(me) != getpid();
    bad |= strcmp(proc_name(parent), "MainProcess") != 0;
    bad |= proc_pid(parent) != getppid();
    bad |= !proc_is_alive(parent);

    /* Default names of a child's own children extend the child's identity. */
    proc_t *grandchild = proc_new(NULL, NULL);
    if (grandchild == NULL)
        return 3;
    printf("child: a new object here would be called %s\n", proc_name(grandchild));
    bad |= strcmp(proc_name(grandchild), "Process-1:1") != 0;
    if (proc_close(grandchild) < 0)
        return 3;
    return bad ? 1 : 0;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "name_pid: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

int main(void)
{
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);

    proc_t *me = proc_current();
    if (me == NULL)
        return fail("proc_current", -errno);
    printf("parent: current name = %s, pid = %ld (getpid() = %ld), parent object = %s\n",
           proc_name(me), (long)proc_pid(me), (long)getpid(), proc_parent() ? "set" : "NULL");

    proc_t *p = proc_new(child, NULL);
    if (p == NULL)
        return fail("proc_new", -errno);
    printf("parent: default name = %s, pid before start = %ld\n", proc_name(p), (long)proc_pid(p));
    if ((rc = proc_set_name(p, "egon")) < 0)
        return fail("proc_set_name", rc);
    if ((rc = proc_start(p)) < 0)
        return fail("proc_start", rc);
    printf("start\n");
    printf("parent: started %s, pid = %ld\n", proc_name(p), (long)proc_pid(p));

    if ((rc = proc_join(p, PROC_WAIT_FOREVER)) < 0)
        return fail("proc_join", rc);
    printf("parent: %s exited with %d; pid still %ld\n", proc_name(p), proc_exitcode(p),
           (long)proc_pid(p));
    if (proc_exitcode(p) != 0) {
        fprintf(stderr, "name_pid: the child saw unexpected names or pids\n");
        return 1;
    }
    if (strcmp(proc_name(me), "MainProcess") != 0 || proc_pid(me) != getpid())
        return fail("proc_current contents", -EINVAL);
    if ((rc = proc_close(p)) < 0)
        return fail("proc_close", rc);
    return 0;
}
