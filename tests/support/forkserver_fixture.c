/* SPDX-License-Identifier: MIT */
/* The fork server tests' fixture (forkserver_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "forkserver_fixture.h"
#include "testcheck.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

int children_except(pid_t keep, pid_t *last)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    int n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        char state;
        pid_t ppid;
        if (pid <= 0 || pid == keep || tu_proc_state(pid, &state, &ppid) < 0 || ppid != getpid())
            continue;
        if (last)
            *last = pid;
        n++;
    }
    closedir(d);
    return n;
}

pid_t find_server(void)
{
    pid_t pid = 0;
    return children_except(0, &pid) == 1 ? pid : 0;
}

proc_t *served(proc_target_fn *fn, void *arg)
{
    proc_t *p = proc_new(fn, arg);
    assert_non_null(p);
    EQ(proc_set_forkserver(p, true), 0);
    return p;
}

int run_to_exit(proc_t *p)
{
    EQ(proc_start(p), 0);
    EQ(proc_join(p, BOUND_MS), 0);
    int code = proc_exitcode(p);
    EQ(proc_close(p), 0);
    return code;
}

int run_reporting(proc_t *p, void *report, size_t len)
{
    EQ(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    EQ(proc_start(p), 0);
    EQ(tu_read_full(proc_stdio_fd(p, 1), report, len, BOUND_MS), (ssize_t)len);
    EQ(proc_join(p, BOUND_MS), 0);
    int code = proc_exitcode(p);
    EQ(proc_close(p), 0);
    return code;
}

int report(const void *rec, size_t len)
{
    return tu_write_full(1, rec, len) == 0 ? 0 : 99;
}

/* ---------------------------------------------------------------- targets */

const int zero = 0, seven = 7, nine = 9, term = SIGTERM, abrt = SIGABRT;

int ret_int(void *arg)
{
    return *(const int *)arg;
}

int read_stdin_to_eof(void *arg)
{
    (void)arg;
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 3;
}

/* ------------------------------------------------- a program in two modes */

static pid_t mode_server; /* the server in served mode, else 0 */

int mode_init(int argc, char **argv)
{
    if (argc == 1)
        return 0;
    if (argc != 2 || strcmp(argv[1], SERVED_ARG) != 0) {
        fprintf(stderr, "usage: %s [" SERVED_ARG "]\n", argv[0]);
        return -1;
    }
    int r = proc_forkserver_start(); /* first: no thread exists yet */
    if (r != 0) {
        fprintf(stderr, "proc_forkserver_start: %s\n", strerror(-r));
        return -1;
    }
    mode_server = find_server();
    if (mode_server <= 0) {
        fprintf(stderr, "the fork server is not our only child\n");
        return -1;
    }
    return 0;
}

bool served_mode(void)
{
    return mode_server > 0;
}

proc_t *new_child(proc_target_fn *fn, const void *arg, size_t len)
{
    proc_t *p = served_mode() ? served(fn, NULL) : proc_new(fn, NULL);
    assert_non_null(p);
    if (arg)
        EQ(proc_set_arg_copy(p, arg, len), 0);
    return p;
}

int inherited_fd(int fd)
{
    return served_mode() ? -1 : fd;
}

int stdin_gate_main(void *arg)
{
    tu_gate g = {0, *(const int *)arg};
    return tu_gate_wait(&g, -1) == 0 ? 0 : 99;
}

proc_t *new_stdin_gated(tu_gate *g)
{
    EQ(tu_gate_init(g), 0);
    int wr = inherited_fd(g->wr);
    proc_t *p = new_child(stdin_gate_main, &wr, sizeof wr);
    EQ(proc_set_stdio(p, 0, g->rd), 0);
    return p;
}

proc_t *start_stdin_gated(tu_gate *g)
{
    proc_t *p = new_stdin_gated(g);
    EQ(proc_start(p), 0);
    return p;
}

void assert_no_children_but_server(void)
{
    if (!served_mode()) {
        assert_no_children();
        return;
    }
    EQ(children_except(mode_server, NULL), 0); /* live or zombie */
    char state = tu_child_state(mode_server);
    assert_true(state != 0 && state != 'Z');
}
