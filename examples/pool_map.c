/* SPDX-License-Identifier: MIT */
/*
 * Tutorial, the pool chapter: Pool(3).map(piao, names), then apply_async.
 *
 * Instead of one Process per name, three worker processes share the work:
 * proc_pool_map() hands each name to a free worker and waits for all of
 * them. A task is a plain function: it gets a pointer to its input and one
 * to its output (a fixed-size struct each), and the outputs come back in the
 * order of the inputs, whichever worker ran them. The same pids show up
 * several times: workers are reused. Then one task goes through
 * proc_pool_submit() (apply_async) and one runs on a worker that crashes,
 * which fails that task alone with -ECHILD (Python's Pool would hang).
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/pool.h>
#include <libproc/proc.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NAMES 7

struct piao_in {
    char name[16];
    int work_ms; /* simulated work; the tutorial sleeps a random time */
};

struct piao_out {
    long pid;
    char line[64];
};

static void simulate_work(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Runs in a worker process. */
static int piao(const void *in, void *out)
{
    const struct piao_in *job = in;
    struct piao_out *res = out;
    printf("%s piaoing (pid %ld)\n", job->name, (long)getpid());
    simulate_work(job->work_ms);
    printf("%s piao end\n", job->name);
    res->pid = (long)getpid();
    snprintf(res->line, sizeof res->line, "%s was piaoed by pid %ld", job->name, res->pid);
    return 0;
}

/* A task whose worker dies. */
static int crash(const void *in, void *out)
{
    (void)in;
    (void)out;
    raise(SIGKILL);
    return 0;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "pool_map: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

int main(void)
{
    static const char *const names[NAMES] = {"alex", "wupeiqi", "yuanhao", "egon",
                                             "aaa",  "bbb",     "ccc"};
    struct piao_in in[NAMES];
    struct piao_out out[NAMES];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* the workers inherit line buffering */

    for (int i = 0; i < NAMES; i++) {
        memset(&in[i], 0, sizeof in[i]);
        snprintf(in[i].name, sizeof in[i].name, "%s", names[i]);
        in[i].work_ms = 10 + (i * 37) % 40;
    }

    proc_pool_opts_t opts = {.workers = 3};
    proc_pool_t *pool = proc_pool_new(&opts); /* Pool(3) */
    if (pool == NULL)
        return fail("proc_pool_new", -errno);

    /* pool.map(piao, names) */
    rc = proc_pool_map(pool, piao, in, sizeof in[0], out, sizeof out[0], NAMES);
    if (rc != 0)
        return fail("proc_pool_map", rc);
    printf("main process: map done, results in input order:\n");
    for (int i = 0; i < NAMES; i++)
        printf("  %s\n", out[i].line);

    /* pool.apply_async(piao, ("egon",)).get() */
    struct piao_in one = {.name = "async-egon", .work_ms = 5};
    proc_future_t *f = proc_pool_submit(pool, piao, &one, sizeof one, sizeof out[0]);
    if (f == NULL)
        return fail("proc_pool_submit", -errno);
    printf("main process: submitted, not waiting yet\n");
    rc = proc_future_get(f, &out[0], sizeof out[0], PROC_WAIT_FOREVER);
    proc_future_free(f);
    if (rc != 0)
        return fail("proc_future_get", rc);
    printf("main process: got \"%s\"\n", out[0].line);

    /* A worker that dies fails its own task; the pool carries on. */
    rc = proc_pool_apply(pool, crash, NULL, 0, NULL, 0);
    printf("main process: a task whose worker was killed returned %d (%s)\n", rc,
           rc < 0 ? strerror(-rc) : "?");
    if (rc != -ECHILD)
        return fail("the crash", rc < 0 ? rc : -EPROTO);
    rc = proc_pool_apply(pool, piao, &in[0], sizeof in[0], &out[0], sizeof out[0]);
    if (rc != 0)
        return fail("proc_pool_apply after the crash", rc);
    printf("main process: and the next task still works: \"%s\"\n", out[0].line);

    /* pool.close(); pool.join() */
    if ((rc = proc_pool_close(pool)) < 0)
        return fail("proc_pool_close", rc);
    if ((rc = proc_pool_join(pool, PROC_WAIT_FOREVER)) < 0)
        return fail("proc_pool_join", rc);
    if ((rc = proc_pool_free(pool)) < 0)
        return fail("proc_pool_free", rc);
    printf("main process: all workers gone\n");
    return 0;
}
