/* SPDX-License-Identifier: MIT */
/*
 * Python's subprocess.run(cmd, input=..., capture_output=True, timeout=t) in
 * C: start a program with its three streams on pipes, feed it its input and
 * collect stdout and stderr with proc_communicate(), stop it with a stop
 * sequence (to its whole process group) when the time runs out, then report
 * its exit code, CPU time and peak memory (proc_rusage()).
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/ipc.h>
#include <libproc/proc.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

struct run_result {
    int exitcode;
    bool timed_out;
    proc_output_t out, err;
    struct rusage ru;
};

/* Runs argv with input on its stdin, for at most timeout_ms; 0 or -errno. */
static int run(const char *const argv[], const char *input, int timeout_ms, struct run_result *res)
{
    memset(res, 0, sizeof *res);
    proc_t *p = proc_new_exec(argv);
    if (!p)
        return -errno;
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = proc_set_stdio(p, i, PROC_STDIO_PIPE);
    if (rc == 0) /* its own process group: the stop sequence reaches what it starts too */
        rc = proc_set_new_group(p, true);
    if (rc == 0)
        rc = proc_start(p);
    if (rc == 0) {
        rc = proc_communicate(p, input, strlen(input), &res->out, &res->err, timeout_ms);
        if (rc == -ETIMEDOUT) { /* as subprocess.run: stop it, then collect what is left */
            res->timed_out = true;
            const proc_stop_step_t steps[] = {{SIGTERM, 500}, {SIGKILL, PROC_WAIT_FOREVER}};
            rc = proc_stop(p, steps, 2);
            if (rc == 0)
                rc = proc_communicate(p, NULL, 0, &res->out, &res->err, PROC_WAIT_FOREVER);
        }
    }
    if (rc == 0) {
        res->exitcode = proc_exitcode(p);
        rc = proc_rusage(p, &res->ru);
    }
    proc_close(p);
    return rc;
}

static void report(const char *what, const struct run_result *r)
{
    printf("%s: exit code %d%s, %.1f ms CPU, max RSS %ld KiB\n", what, r->exitcode,
           r->timed_out ? " (timed out, stopped)" : "",
           (double)(r->ru.ru_utime.tv_sec + r->ru.ru_stime.tv_sec) * 1e3 +
               (double)(r->ru.ru_utime.tv_usec + r->ru.ru_stime.tv_usec) / 1e3,
           r->ru.ru_maxrss);
    printf("  stdout (%zu bytes): %s", r->out.len, r->out.data ? r->out.data : "\n");
    printf("  stderr (%zu bytes): %s", r->err.len, r->err.data ? r->err.data : "\n");
}

int main(void)
{
    struct run_result r;
    const char *const sort[] = {"sort", NULL};
    if (run(sort, "pear\napple\nfig\n", 5000, &r) != 0 || r.exitcode != 0 || !r.out.data ||
        strcmp(r.out.data, "apple\nfig\npear\n") != 0) {
        fprintf(stderr, "run_capture: sort did not sort\n");
        return 1;
    }
    report("sort", &r);
    free(r.out.data);
    free(r.err.data);

    /* Ignores SIGTERM and never ends by itself: the stop sequence's SIGKILL ends it. */
    const char *const stubborn[] = {"sh", "-c",
                                    "trap '' TERM; echo started; echo oops >&2; "
                                    "while :; do sleep 1; done",
                                    NULL};
    if (run(stubborn, "", 1000, &r) != 0 || !r.timed_out || r.exitcode != -SIGKILL) {
        fprintf(stderr, "run_capture: the stubborn program was not stopped as expected\n");
        return 1;
    }
    report("stubborn", &r);
    free(r.out.data);
    free(r.err.data);
    return 0;
}
