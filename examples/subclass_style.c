/* SPDX-License-Identifier: MIT */
/*
 * Tutorial, way two: class Piao(Process) with its own state and run().
 *
 * C has no classes, so the "subclass" is a struct that carries its state and
 * a run function pointer. A small trampoline target hands the struct to its
 * own run(). proc_start() runs it in a child; proc_run() runs it right here in
 * the calling process (Python's p.run()), which is why such a "run" cannot be
 * joined: the tutorial's "p.join can only join a process opened by start".
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/proc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct piao {
    const char *name;
    int rounds;
    int done; /* state the object updates while it runs */
    int (*run)(struct piao *self);
};

static int piao_run(struct piao *self)
{
    for (int i = 1; i <= self->rounds; i++) {
        struct timespec ts = {0, 5 * 1000000L}; /* simulated work, 5 ms */
        printf("%s is piaoing, round %d/%d (pid %ld)\n", self->name, i, self->rounds,
               (long)getpid());
        nanosleep(&ts, NULL);
        self->done++;
    }
    printf("%s is piao end\n", self->name);
    return 0;
}

/* The target every "subclass" object shares: dispatch to the object's run(). */
static int trampoline(void *arg)
{
    struct piao *self = arg;
    return self->run(self);
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "subclass_style: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

int main(void)
{
    struct piao objs[3] = {
        {"aaa", 1, 0, piao_run},
        {"bbb", 2, 0, piao_run},
        {"ccc", 3, 0, piao_run},
    };
    proc_t *procs[3] = {NULL};
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);

    /* p.run(): runs in this process, no child, nothing to join. */
    struct piao local = {"local", 1, 0, piao_run};
    proc_t *direct = proc_new(trampoline, &local);
    if (direct == NULL)
        return fail("proc_new", -errno);
    if ((rc = proc_run(direct)) < 0)
        return fail("proc_run", rc);
    printf("proc_run returned %d in pid %ld; local.done = %d\n", rc, (long)getpid(), local.done);
    rc = proc_join(direct, PROC_WAIT_FOREVER);
    printf("proc_join after proc_run only: %s (expected: %s)\n", strerror(-rc), strerror(EINVAL));
    if (rc != -EINVAL)
        return fail("proc_join after proc_run", rc);
    if ((rc = proc_close(direct)) < 0)
        return fail("proc_close", rc);

    /* p.start(): each object runs in its own child. */
    for (int i = 0; i < 3; i++) {
        procs[i] = proc_new(trampoline, &objs[i]);
        if (procs[i] == NULL)
            return fail("proc_new", -errno);
        if ((rc = proc_set_name(procs[i], objs[i].name)) < 0)
            return fail("proc_set_name", rc);
        if ((rc = proc_start(procs[i])) < 0)
            return fail("proc_start", rc);
    }
    printf("main process\n");

    for (int i = 0; i < 3; i++) {
        if ((rc = proc_join(procs[i], PROC_WAIT_FOREVER)) < 0)
            return fail("proc_join", rc);
        /* The child worked on its own copy of the struct: ours is unchanged. */
        printf("%s: exitcode %d, parent's copy has done = %d\n", proc_name(procs[i]),
               proc_exitcode(procs[i]), objs[i].done);
        if (proc_exitcode(procs[i]) != 0 || objs[i].done != 0)
            return 1;
        if ((rc = proc_close(procs[i])) < 0)
            return fail("proc_close", rc);
    }
    return 0;
}
