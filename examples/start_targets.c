/* SPDX-License-Identifier: MIT */
/*
 * Tutorial, way one: Process(name=i, target=piao, args=(i,)).start()
 *
 * Three children named "aaa", "bbb" and "ccc" each run piao(name). The parent
 * prints "main process" right after starting them (it does not wait), then
 * joins them one by one.
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/proc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NCHILD 3

struct job {
    const char *name;
    int work_ms; /* simulated work; the tutorial sleeps a random time */
};

static void simulate_work(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static int piao(void *arg)
{
    const struct job *job = arg;
    printf("%s piaoing (pid %ld)\n", job->name, (long)getpid());
    simulate_work(job->work_ms);
    printf("%s piao end\n", job->name);
    return 0;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "start_targets: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

int main(void)
{
    static struct job jobs[NCHILD] = {{"aaa", 30}, {"bbb", 10}, {"ccc", 20}};
    proc_t *procs[NCHILD] = {NULL};
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);

    for (int i = 0; i < NCHILD; i++) {
        procs[i] = proc_new(piao, &jobs[i]);
        if (procs[i] == NULL)
            return fail("proc_new", -errno);
        if ((rc = proc_set_name(procs[i], jobs[i].name)) < 0)
            return fail("proc_set_name", rc);
        if ((rc = proc_start(procs[i])) < 0)
            return fail("proc_start", rc);
    }

    /* The children run on their own; the parent goes on immediately. */
    printf("main process\n");

    for (int i = 0; i < NCHILD; i++) {
        if ((rc = proc_join(procs[i], PROC_WAIT_FOREVER)) < 0)
            return fail("proc_join", rc);
        printf("joined %s (pid %ld), exitcode %d\n", proc_name(procs[i]), (long)proc_pid(procs[i]),
               proc_exitcode(procs[i]));
        if (proc_exitcode(procs[i]) != 0) {
            fprintf(stderr, "start_targets: %s exited with %d\n", proc_name(procs[i]),
                    proc_exitcode(procs[i]));
            return 1;
        }
        if ((rc = proc_close(procs[i])) < 0)
            return fail("proc_close", rc);
    }
    printf("all children done\n");
    return 0;
}
