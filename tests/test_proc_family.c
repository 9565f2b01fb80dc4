/* SPDX-License-Identifier: MIT */
/*
 * A process and its relatives (src/proc.c area): proc_current() and
 * proc_parent() (also once the parent died), active children, the cpu
 * count, and proc_run().
 *
 * Children never call cmocka: they report through pipes and exit codes and
 * the parent asserts. Nothing here waits by the clock; timeouts only bound
 * hangs.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/proc.h>

#include "testutil.h"
#include "testcheck.h"

#define BOUND_MS 10000 /* bound on any hang; never reached when things work */
#define NAME_LEN 64

/* pid is dead or dying, and its parent has been joined: it is ours now. */
static void reap_orphan(pid_t pid)
{
    int st;
    pid_t r = tu_waitpid(pid, &st);
    assert_int_equal(r, pid);
}

static int join_bounded(proc_t *p)
{
    return proc_join(p, BOUND_MS);
}

/* ------------------------------------------------------------ proc_current */

static void test_current_root(void **state)
{
    (void)state;
    proc_t *cur = proc_current();
    assert_non_null(cur);
    assert_ptr_equal(proc_current(), cur);
    assert_string_equal(proc_name(cur), "MainProcess");
    assert_int_equal(proc_pid(cur), getpid());
    assert_true(proc_is_alive(cur));
    assert_false(proc_daemon(cur));
    assert_int_equal(proc_exitcode(cur), PROC_EXITCODE_NONE);
    size_t len = 0;
    const unsigned char *key = proc_authkey(cur, &len);
    assert_non_null(key);
    assert_int_equal(len, 32);
    bool nonzero = false;
    for (size_t i = 0; i < len; i++)
        nonzero |= key[i] != 0;
    assert_true(nonzero); /* random, so all-zero is (practically) impossible */

    assert_int_equal(proc_join(cur, 0), -EDEADLK);
    assert_int_equal(proc_join(cur, 1000), -EDEADLK);
    assert_int_equal(proc_join(cur, -2), -EINVAL);
    assert_int_equal(proc_sentinel(cur), -EINVAL);
    assert_int_equal(proc_close(cur), -EINVAL);
    /* still intact */
    assert_ptr_equal(proc_current(), cur);
    assert_string_equal(proc_name(cur), "MainProcess");
    assert_int_equal(proc_pid(cur), getpid());
    assert_true(proc_is_alive(cur));
    assert_no_children();
}

/* ------------------------------------------------------------- proc_parent */

struct parent_report {
    pid_t self;
    int have;
    int same_ptr;
    pid_t pid;
    int alive;
    int close_rc;
    int cur_pid_ok;
    char name[NAME_LEN];
};

static void fill_parent_report(struct parent_report *r)
{
    memset(r, 0, sizeof *r);
    r->self = getpid();
    proc_t *par = proc_parent();
    r->have = par != NULL;
    if (!par)
        return;
    r->same_ptr = proc_parent() == par;
    r->pid = proc_pid(par);
    r->alive = proc_is_alive(par);
    r->close_rc = proc_close(par);
    r->cur_pid_ok = proc_pid(proc_current()) == getpid() && proc_is_alive(proc_current());
    snprintf(r->name, sizeof r->name, "%s", proc_name(par) ? proc_name(par) : "<NULL>");
}

static int report_parent(void *arg)
{
    int wr = *(int *)arg;
    struct parent_report r;
    fill_parent_report(&r);
    return tu_write_full(wr, &r, sizeof r) == 0 ? 0 : 1;
}

static void test_parent(void **state)
{
    (void)state;
    assert_null(proc_parent());

    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = proc_new(report_parent, &fds[1]);
    assert_non_null(p);
    struct parent_report r;
    start_and_read_report(p, fds, &r, sizeof r, BOUND_MS);
    assert_true(r.have);
    assert_true(r.same_ptr);
    assert_int_equal(r.pid, getpid());
    assert_true(r.alive);
    assert_int_equal(r.close_rc, -EINVAL);
    assert_true(r.cur_pid_ok);
    assert_string_equal(r.name, "MainProcess");
    close(fds[0]);
    assert_int_equal(proc_close(p), 0);
    assert_null(proc_parent());
    assert_no_children();
}

/* A grandchild sees its parent (our child) alive, then dead once it ended. */
struct orphan_args {
    tu_gate child_gate; /* the child _exit()s when this opens */
    tu_gate gc_gate;    /* the grandchild reports again when this opens */
    int wr;
};

static int orphan_grandchild(void *arg)
{
    struct orphan_args *a = arg;
    struct parent_report r;
    tu_gate_open(&a->child_gate); /* drop our copy of the write end */
    fill_parent_report(&r);
    if (tu_write_full(a->wr, &r, sizeof r) != 0)
        return 1;
    if (tu_gate_wait(&a->gc_gate, -1) != 0)
        return 2;
    fill_parent_report(&r);
    return tu_write_full(a->wr, &r, sizeof r) == 0 ? 0 : 3;
}

static int orphan_child(void *arg)
{
    struct orphan_args *a = arg;
    tu_gate_open(&a->gc_gate); /* only the test process may open it */
    proc_t *q = proc_new(orphan_grandchild, a);
    if (!q || proc_start(q) != 0)
        _exit(30);
    if (tu_gate_wait(&a->child_gate, -1) != 0)
        _exit(32);
    _exit(0); /* leave the grandchild behind, skip any at-exit waiting */
}

static void test_parent_dies(void **state)
{
    (void)state;
    subreaper(true);
    struct orphan_args a;
    assert_int_equal(tu_gate_init(&a.child_gate), 0);
    assert_int_equal(tu_gate_init(&a.gc_gate), 0);
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    a.wr = fds[1];
    proc_t *p = proc_new(orphan_child, &a);
    assert_non_null(p);
    assert_int_equal(proc_start(p), 0);
    close(fds[1]);

    struct parent_report r1, r2;
    assert_int_equal(tu_read_full(fds[0], &r1, sizeof r1, BOUND_MS), (ssize_t)sizeof r1);
    assert_true(r1.have);
    assert_int_equal(r1.pid, proc_pid(p));
    assert_true(r1.alive);
    assert_string_equal(r1.name, proc_name(p));

    tu_gate_open(&a.child_gate);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 0);
    tu_gate_open(&a.gc_gate);
    assert_int_equal(tu_read_full(fds[0], &r2, sizeof r2, BOUND_MS), (ssize_t)sizeof r2);
    assert_true(r2.have);
    assert_int_equal(r2.pid, proc_pid(p));
    assert_false(r2.alive);
    assert_string_equal(r2.name, proc_name(p));
    /* the grandchild is not ours; it ends right after its report */
    char eof[8];
    assert_int_equal(tu_read_to_eof(fds[0], eof, sizeof eof, BOUND_MS), 0);
    assert_int_equal(r1.self, r2.self);
    reap_orphan(r2.self);
    subreaper(false);

    close(fds[0]);
    tu_gate_destroy(&a.child_gate);
    tu_gate_destroy(&a.gc_gate);
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

/* ------------------------------------------------------ proc_active_children */

static bool contains(proc_t *const *arr, size_t n, const proc_t *p)
{
    for (size_t i = 0; i < n; i++)
        if (arr[i] == p)
            return true;
    return false;
}

static void test_active_children(void **state)
{
    (void)state;
    assert_int_equal(proc_active_children(NULL, 0), 0);
    tu_gate g[3];
    proc_t *live[3];
    for (int i = 0; i < 3; i++) {
        live[i] = start_gated_child(&g[i]);
    }
    proc_t *unstarted = proc_new(NULL, NULL);
    assert_non_null(unstarted);
    assert_int_equal(proc_active_children(NULL, 0), 3);

    proc_t *out[8];
    memset(out, 0, sizeof out);
    assert_int_equal(proc_active_children(out, 8), 3);
    for (int i = 0; i < 3; i++)
        assert_true(contains(out, 3, live[i]));

    /* more alive than cap: fills cap, returns the total */
    proc_t *two[2] = {NULL, NULL};
    assert_int_equal(proc_active_children(two, 2), 3);
    assert_true(contains(live, 3, two[0]));
    assert_true(contains(live, 3, two[1]));
    assert_true(two[0] != two[1]);

    /* joined ones disappear. Each child also holds copies of the earlier
     * gates' write ends, so release one child with a byte, not with EOF. */
    assert_int_equal(tu_write_full(g[0].wr, "x", 1), 0);
    assert_int_equal(join_bounded(live[0]), 0);
    memset(out, 0, sizeof out);
    assert_int_equal(proc_active_children(out, 8), 2);
    assert_true(contains(out, 2, live[1]));
    assert_true(contains(out, 2, live[2]));
    tu_gate_open(&g[1]);
    tu_gate_open(&g[2]);
    assert_int_equal(join_bounded(live[1]), 0);
    assert_int_equal(join_bounded(live[2]), 0);
    assert_int_equal(proc_active_children(out, 8), 0);

    for (int i = 0; i < 3; i++) {
        assert_int_equal(proc_close(live[i]), 0);
        tu_gate_destroy(&g[i]);
    }
    assert_int_equal(proc_close(unstarted), 0);
    assert_int_equal(proc_active_children(NULL, 0), 0);
    assert_no_children();
}

/* An ended but not yet joined child is not listed: "reaping ended ones first"
 * (API.md). Once its sentinel is readable it has ended. */
static void test_active_children_skips_ended(void **state)
{
    (void)state;
    tu_gate g;
    proc_t *live = start_gated_child(&g);
    proc_t *quick[4];
    for (int i = 0; i < 4; i++) {
        quick[i] = proc_new(NULL, NULL);
        assert_non_null(quick[i]);
        assert_int_equal(proc_start(quick[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(tu_wait_readable(proc_sentinel(quick[i]), BOUND_MS), 1);
    proc_t *out[8] = {NULL};
    assert_int_equal(proc_active_children(out, 8), 1);
    assert_ptr_equal(out[0], live);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(join_bounded(quick[i]), 0);
        assert_int_equal(proc_exitcode(quick[i]), 0);
        assert_int_equal(proc_close(quick[i]), 0);
    }
    tu_gate_open(&g);
    assert_int_equal(join_bounded(live), 0);
    assert_int_equal(proc_active_children(NULL, 0), 0);
    assert_int_equal(proc_close(live), 0);
    tu_gate_destroy(&g);
    assert_no_children();
}

/* ---------------------------------------------------------- proc_cpu_count */

static int cpu_count_pinned(void *arg)
{
    int wr = *(int *)arg;
    cpu_set_t set;
    int result[2] = {-1, -1};
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int first = -1;
        for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
            if (CPU_ISSET(i, &set))
                first = i;
        CPU_ZERO(&set);
        CPU_SET(first, &set);
        if (sched_setaffinity(0, sizeof set, &set) == 0)
            result[0] = proc_cpu_count();
    }
    result[1] = 0;
    return tu_write_full(wr, result, sizeof result) == 0 ? 0 : 1;
}

static void test_cpu_count(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int n = proc_cpu_count();
    assert_true(n >= 1);
    assert_int_equal(n, CPU_COUNT(&set));

    /* follows the affinity mask, not the machine */
    int fds[2];
    assert_int_equal(tu_pipe(fds), 0);
    proc_t *p = proc_new(cpu_count_pinned, &fds[1]);
    assert_non_null(p);
    int result[2];
    start_and_read_report(p, fds, result, sizeof result, BOUND_MS);
    assert_int_equal(result[0], 1);
    close(fds[0]);
    assert_int_equal(proc_close(p), 0);
    assert_no_children();
}

/* ------------------------------------------------------------------ proc_run */

struct run_ctx {
    int calls;
    pid_t pid;
    int ret;
};

static int run_target(void *arg)
{
    struct run_ctx *c = arg;
    c->calls++;
    c->pid = getpid();
    return c->ret;
}

static void test_run(void **state)
{
    (void)state;
    struct run_ctx c = {0, 0, 1000};
    proc_t *p = proc_new(run_target, &c);
    assert_non_null(p);
    assert_int_equal(proc_run(p), 1000); /* the target's value, not & 0xff */
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.pid, getpid());
    assert_int_equal(proc_pid(p), 0);
    assert_int_equal(proc_exitcode(p), PROC_EXITCODE_NONE);
    assert_false(proc_is_alive(p));
    assert_int_equal(proc_sentinel(p), -EINVAL);
    assert_int_equal(proc_join(p, 0), -EINVAL);
    assert_int_equal(proc_signal(p, 0), -EINVAL);
    assert_int_equal(proc_active_children(NULL, 0), 0);
    c.ret = -5;
    assert_int_equal(proc_run(p), -5);
    assert_int_equal(c.calls, 2);
    /* still configurable and startable: run is not start */
    assert_int_equal(proc_set_name(p, "ran"), 0);
    assert_int_equal(proc_set_daemon(p, false), 0);
    c.ret = 1000;
    assert_int_equal(proc_start(p), 0);
    assert_int_equal(join_bounded(p), 0);
    assert_int_equal(proc_exitcode(p), 1000 & 0xff);
    assert_int_equal(c.calls, 2); /* the child's increment is its own */
    assert_int_equal(proc_close(p), 0);

    proc_t *n = proc_new(NULL, NULL);
    assert_non_null(n);
    assert_int_equal(proc_run(n), 0);
    assert_int_equal(proc_close(n), 0);

    proc_t *e = proc_new_exec((const char *const[]){"/bin/true", NULL});
    assert_non_null(e);
    assert_int_equal(proc_run(e), -EINVAL);
    assert_int_equal(proc_pid(e), 0);
    assert_int_equal(proc_close(e), 0);
    assert_no_children();
}

#define T(f) cmocka_unit_test_teardown(f, kill_leftover_children)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_current_root),
        T(test_parent),
        T(test_parent_dies),
        T(test_active_children),
        T(test_active_children_skips_ended),
        T(test_cpu_count),
        T(test_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
