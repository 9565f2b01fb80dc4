/* SPDX-License-Identifier: MIT */
/*
 * proc_bench: what libproc costs next to the raw system calls, libuv's
 * uv_spawn (when built with libuv) and Python's multiprocessing: processes
 * (scenarios 1-6), the worker pool (7), the queue (8), the pipe (9) and
 * running a program with its output captured (10).
 *
 * Every scenario runs its contenders interleaved in rounds (A B, B A, ...)
 * inside one process, so that drift of the machine hits all of them alike,
 * and reports per contender the median over the rounds plus the ratio of that
 * median to the baseline contender's median. This file lists the scenarios
 * and runs them; the harness (harness.c), the fatal paths (live.c), the
 * targets (targets.c, targets.txt) and the machine record (machine.c) do the
 * rest. See bench/README.md.
 */
#include "harness.h"
#include "live.h"
#include "machine.h"
#include "python.h"
#include "scenarios.h"
#include "targets.h"

#include <libproc/proc.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

const char *true_path = "/bin/true";
char *true_argv[] = {"true", NULL};
const char *head_path = "/usr/bin/head";
char *head_argv[] = {"head", "-c1", NULL};

/*
 * In run order: the libuv-free scenarios first. Once libuv has initialized,
 * it keeps a pthread_atfork child handler that makes every later fork child
 * (raw and libproc alike) a little slower. Number 0 is a step, not a
 * scenario: it ends the Python coprocess of 7-10 before 2 and 3 (always runs).
 */
static const struct scenario scenarios[] = {
    {1, "start_join", "1 start+join (fork, exit 0)", "raw", scenario1, NULL},
    {4, "join_latency", "4 join latency (exit->join)", "raw", scenario4, NULL},
    {5, "memory", "5 memory per live child", "raw", scenario5, NULL},
    {6, "python_start_join", "6 Python multiprocessing", "libproc", scenario6, NULL},
    {7, "pool_map", "7 pool map (running pool)", "loop", scenario7, scenario7_info},
    {8, "queue_throughput", "8 queue throughput", "raw", scenario8, scenario8_info},
    {9, "pipe_round_trip", "9 pipe round trip", "raw", scenario9, scenario9_info},
    {10, "communicate", "10 exec + communicate", "loop / raw", scenario10, scenario10_info},
    {11, "imap", "11 streams (imap, parallel_wc)", "map / xargs", scenario11, scenario11_info},
    {12, "net_connect_unix", "12 authenticated connections", "raw", scenario12, scenario12_info},
    {13, "forkserver_start_join", "13 fork server start+join", "raw", scenario13, scenario13_info},
    {0, "python_stop", "", "", python_stop, NULL},
    {2, "exec_true", "2 exec /bin/true", "raw", scenario2, NULL},
    {3, "mass_exit", "3 mass exit (release->joined)", "raw", scenario3, NULL},
};
#define NSCENARIOS (sizeof scenarios / sizeof scenarios[0])

static void raise_limits(void)
{
    int res[] = {RLIMIT_NPROC, RLIMIT_NOFILE};
    const char *names[] = {"RLIMIT_NPROC", "RLIMIT_NOFILE"};
    for (int i = 0; i < 2; i++) {
        struct rlimit rl;
        if (getrlimit(res[i], &rl) < 0)
            die("getrlimit(%s): %s", names[i], strerror(errno));
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            if (setrlimit(res[i], &rl) < 0)
                die("setrlimit(%s): %s", names[i], strerror(errno));
        }
    }
}

static void find_programs(void)
{
    if (access(true_path, X_OK) != 0)
        true_path = "/usr/bin/true";
    if (access(head_path, X_OK) != 0)
        head_path = "/bin/head";
    if (access(true_path, X_OK) != 0 || access(head_path, X_OK) != 0)
        die("need /bin/true and /usr/bin/head");
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    scenario13_setup(); /* the fork server: first, while this process has one thread */
    targets_load(opt.targets, opt.targets_given);
    machine_collect(argc, argv);
    install_signal_handlers();
    /* Orphaned grandchildren (Python's, if Python dies) come to us, not to init. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        die("prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));
    raise_limits();
    find_programs();
    if (!proc_current())
        die("proc_current: %s", strerror(errno));

    uint64_t t0 = now_ns();
    for (size_t i = 0; i < NSCENARIOS; i++)
        if (scenarios[i].number == 0 || want(scenarios[i].number))
            scenarios[i].run();
    double secs = (double)(now_ns() - t0) / 1e9;
    reap_all_children(false); /* nothing should be left; be sure */

    printf("proc_bench: libproc %s, %s mode, %d CPUs, %.1f s%s\n", PROC_VERSION_STRING,
           opt.quick ? "quick" : "full", proc_cpu_count(), secs,
#ifdef PROC_BENCH_HAVE_LIBUV
           ", with libuv"
#else
           ", without libuv"
#endif
    );
    printf("machine:\n");
    machine_write(stdout, "  ");
    print_table(scenarios, NSCENARIOS);
    print_targets(scenarios, NSCENARIOS);
    if (opt.csv) {
        write_csv(opt.csv);
        printf("\nCSV written to %s\n", opt.csv);
    }
    free_rows();
    return 0;
}
