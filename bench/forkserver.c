/* SPDX-License-Identifier: MIT */
/*
 * Scenario 13: start+join through the fork server while the caller holds
 * 0, 1 and 4 GiB of touched memory, against raw fork + waitpid and
 * libproc's plain fork from the same caller, and Python's forkserver start
 * method. A fork copies the caller's page tables, so its cost grows with the
 * caller; the server is a copy of the caller as it was at the start of
 * main(), so its starts should not.
 */
#include "harness.h"
#include "live.h"
#include "python.h"
#include "scenarios.h"

#include <stdlib.h>
#include <string.h>

#include <libproc/proc.h>

void scenario13_setup(void)
{
    if (!want(13))
        return;
    int r = proc_forkserver_start(); /* before any thread of this process exists */
    if (r < 0)
        die("proc_forkserver_start: %s", strerror(-r));
}

/* The caller's memory for one size: mib MiB, every page touched. */
static char *hold(long mib)
{
    if (mib == 0)
        return NULL;
    size_t len = (size_t)mib << 20;
    char *mem = malloc(len);
    if (!mem)
        die("cannot allocate %ld MiB", mib);
    memset(mem, 0x5a, len);
    return mem;
}

void scenario13(void)
{
    const long sizes_full[] = {0, 1024, 4096}, sizes_quick[] = {0, 256};
    const long *sizes = opt.quick ? sizes_quick : sizes_full;
    size_t nsizes = opt.quick ? 2 : 3;
    long ops = opt.quick ? 10 : 50;
    int rounds = rounds_or(opt.quick ? 3 : 7);
    static char method[] = "forkserver";
    bool have_py = python_found();
    struct contender c[] = {
        {"raw", s1_raw, NULL},
        {"libproc", s1_libproc, NULL},
        {"libproc_forkserver", s13_served, NULL},
        {"python_forkserver", python_start_join, method},
    };
    for (size_t s = 0; s < nsizes; s++) {
        /* Python's forkserver does not depend on our memory: once, at 0. */
        int n = have_py && sizes[s] == 0 ? 4 : 3;
        progress("scenario 13: start+join, fork server vs fork, caller holds %ld MiB, %ld ops x "
                 "%d rounds",
                 sizes[s], ops, rounds);
        char *mem = hold(sizes[s]);
        double *out = xcalloc((size_t)n * (size_t)rounds, sizeof *out);
        run_rounds(c, n, ops, ops / 5, rounds, out);
        report_rounds(13, "forkserver_start_join", sizes[s], "MiB", c, n, rounds, out, NULL);
        free(out);
        free(mem);
    }
    add_note("13: start+join of a child that returns at once (callback mode), one at a time, "
             "while this process holds the MiB of the row (malloc'd, every page written); "
             "libproc_forkserver = proc_set_forkserver(p, true), the server started at the top "
             "of main(); raw and libproc fork this process.");
    if (have_py)
        add_note("13: python_forkserver: Python %s multiprocessing forkserver context, "
                 "Process(target=os.getpid).start(); join(), timed inside Python (its own "
                 "process: the row's MiB are not Python's).",
                 python_loop_version());
    else
        add_note("13: python contender skipped: no python3 in PATH");
}

void scenario13_info(void)
{
    const struct row *small = find_row(13, 0, "raw", "median");
    if (!small)
        return;
    size_t n;
    const struct row *rows = all_rows(&n);
    for (size_t i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        if (r->scenario == 13 && strcmp(r->metric, "median") == 0 &&
            strcmp(r->contender, "python_forkserver") != 0)
            info_line("13: start+join / raw fork from the 0 MiB caller", true,
                      "%s at %ld MiB: %.2f", r->contender, r->param, r->value / small->value);
    }
}
