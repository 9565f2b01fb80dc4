/* SPDX-License-Identifier: MIT */
/*
 * A hostile host (issue 3): a program with its own SIGCHLD handler, installed
 * before libproc's first start (it must still be called) and after it
 * (libproc must still reap its children); with 100 fork() children of its own
 * that it waitpid()s itself while libproc's children exit (every host status
 * arrives, nothing is stolen); with SIGCHLD set to SIG_IGN before libproc's
 * first start (libproc keeps its children's statuses and reaps the host's
 * children, so no zombies) and after it (join never hangs, the exit code is
 * the real one or PROC_EXITCODE_UNKNOWN); and fork() by the host from one
 * thread while other threads are inside libproc.
 *
 * Every SIGCHLD case runs in a fresh copy of this program ("--sub MODE":
 * fork + exec), so that no disposition leaks into other tests and libproc
 * really meets the disposition at its first start. ctest runs the program
 * twice: as is, and with LIBPROC_DISABLE_PIDFD=1 (test_stress_host_nopidfd),
 * where libproc itself depends on SIGCHLD.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libproc/proc.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "stress_util.h"

#define HOST_CHILDREN 100
#define LIB_CHILDREN 50
#define UNJOINED_CHILDREN 100
#define HOST_FORKS ST_SIZE(200, 60)
#define FORK_WORKERS 3

/* ---------------------------------------------------------- sub-process side */

static const char *sub_mode = "?";

/* A failed check in a sub-process: report and leave at once (_exit: libproc's
 * at-exit work would wait for children that are still blocked at a gate). */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "sub %s: %s:%d: check failed: %s: ", sub_mode, __FILE__, __LINE__,     \
                    #cond);                                                                        \
            st_sub_fail(__VA_ARGS__);                                                              \
        }                                                                                          \
    } while (0)

static _Atomic int handler_calls;
static int handler_pipe[2] = {-1, -1};

static void host_handler(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)si;
    (void)ctx;
    int saved = errno;
    atomic_fetch_add(&handler_calls, 1);
    char c = 'h';
    ssize_t r = write(handler_pipe[1], &c, 1); /* non-blocking: full is fine */
    (void)r;
    errno = saved;
}

static void install_host_handler(void)
{
    CHECK(pipe2(handler_pipe, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2: %s", strerror(errno));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = host_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGCHLD, &sa, NULL) == 0, "sigaction: %s", strerror(errno));
}

/* true once the host handler ran since the last call (bounded wait), draining its pipe. */
static bool handler_was_called(int timeout_ms)
{
    if (tu_wait_readable(handler_pipe[0], timeout_ms) != 1)
        return false;
    char buf[256];
    while (read(handler_pipe[0], buf, sizeof buf) > 0)
        ;
    return true;
}

static tu_gate gate;

static int gated_child(void *arg)
{
    alarm(ST_CHILD_ALARM_S);
    if (tu_gate_wait(&gate, ST_CHILD_ALARM_S * 1000) != 0)
        return 254;
    return (int)(intptr_t)arg;
}

/* The host's own child: fork(), wait at the gate, _exit(code). */
static pid_t host_fork(int code, bool gated)
{
    pid_t pid = fork();
    if (pid == 0) {
        alarm(ST_CHILD_ALARM_S);
        if (gated && tu_gate_wait(&gate, ST_CHILD_ALARM_S * 1000) != 0)
            _exit(253);
        _exit(code);
    }
    CHECK(pid > 0, "fork: %s", strerror(errno));
    return pid;
}

static int lib_code(int i)
{
    return 10 + i;
}

static int host_code(int i)
{
    return (100 + i) % 256;
}

static proc_t *start_gated(int code)
{
    proc_t *p = proc_new(gated_child, (void *)(intptr_t)code);
    CHECK(p != NULL, "proc_new");
    int r = proc_start(p);
    CHECK(r == 0, "proc_start = %d", r);
    return p;
}

/* 50 libproc children and 100 host children released together; the host
 * waits for each of its own by pid; libproc joins its own. */
static void mixed_exits(bool expect_handler)
{
    proc_t *lib[LIB_CHILDREN];
    pid_t host[HOST_CHILDREN];
    CHECK(tu_gate_init(&gate) == 0, "gate");
    for (int i = 0; i < HOST_CHILDREN; i++) {
        if (i < LIB_CHILDREN)
            lib[i] = start_gated(lib_code(i));
        host[i] = host_fork(host_code(i), true);
    }
    tu_gate_open(&gate);
    for (int i = 0; i < HOST_CHILDREN; i++) {
        int st = 0;
        pid_t r;
        do {
            r = waitpid(host[i], &st, 0);
        } while (r < 0 && errno == EINTR);
        CHECK(r == host[i], "host child %d: waitpid = %d (%s): its status was stolen", i, (int)r,
              r < 0 ? strerror(errno) : "?");
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == host_code(i), "host child %d: status %#x", i, st);
    }
    for (int i = 0; i < LIB_CHILDREN; i++) {
        int r = proc_join(lib[i], 30000);
        CHECK(r == 0, "libproc child %d: join = %d", i, r);
        CHECK(proc_exitcode(lib[i]) == lib_code(i), "libproc child %d: exit code %d", i,
              proc_exitcode(lib[i]));
        CHECK(proc_close(lib[i]) == 0, "close");
    }
    if (expect_handler)
        CHECK(handler_was_called(10000), "the host's SIGCHLD handler was never called");
    tu_gate_destroy(&gate);
    CHECK(tu_wait_children_gone(10000) == 0, "%d children left", tu_count_children(NULL));
}

/* One host child and one libproc child at a time: the host handler runs for each. */
static void handler_per_exit(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        pid_t pid = host_fork(i, false);
        CHECK(st_wait_pid(pid) == i, "host child status");
        CHECK(handler_was_called(10000), "round %d: no handler call for the host's child", i);
        proc_t *p = proc_new(return_code_main, (void *)(intptr_t)i);
        CHECK(p && proc_start(p) == 0, "start");
        CHECK(proc_join(p, 30000) == 0 && proc_exitcode(p) == i, "join");
        CHECK(proc_close(p) == 0, "close");
        CHECK(handler_was_called(10000), "round %d: no handler call for libproc's child", i);
    }
}

static void libproc_first_start(void)
{
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)3);
    CHECK(p && proc_start(p) == 0, "first start");
    CHECK(proc_join(p, 30000) == 0 && proc_exitcode(p) == 3, "first join");
    CHECK(proc_close(p) == 0, "close");
}

static int sub_handler_before(void)
{
    install_host_handler();
    mixed_exits(true);
    handler_per_exit(20);
    mixed_exits(true);
    CHECK(atomic_load(&handler_calls) > 0, "handler calls");
    return 0;
}

/* libproc must reap children nobody joins, with the host's handler in place. */
static void unjoined_children_reaped(void)
{
    proc_t *ps[UNJOINED_CHILDREN];
    CHECK(tu_gate_init(&gate) == 0, "gate");
    for (int i = 0; i < UNJOINED_CHILDREN; i++)
        ps[i] = start_gated(i);
    tu_gate_open(&gate);
    int64_t deadline = tu_now_ms() + 20000;
    for (int i = 0; i < UNJOINED_CHILDREN; i++) {
        while (proc_is_alive(ps[i]) && tu_now_ms() < deadline)
            sched_yield();
        CHECK(!proc_is_alive(ps[i]), "child %d not reaped without a join", i);
        CHECK(proc_exitcode(ps[i]) == i, "child %d: exit code %d", i, proc_exitcode(ps[i]));
    }
    CHECK(tu_wait_children_gone(10000) == 0, "zombies left: %d", tu_count_zombies());
    for (int i = 0; i < UNJOINED_CHILDREN; i++)
        CHECK(proc_close(ps[i]) == 0, "close");
    tu_gate_destroy(&gate);
}

static int sub_handler_after(void)
{
    libproc_first_start();
    install_host_handler();
    mixed_exits(true);
    handler_per_exit(20);
    unjoined_children_reaped();
    mixed_exits(true);
    return 0;
}

static int sub_sigign_before(void)
{
    CHECK(signal(SIGCHLD, SIG_IGN) != SIG_ERR, "signal");
    for (int round = 0; round < 2; round++) {
        proc_t *lib[LIB_CHILDREN];
        proc_t *ex[10];
        CHECK(tu_gate_init(&gate) == 0, "gate");
        for (int i = 0; i < HOST_CHILDREN; i++) {
            if (i < LIB_CHILDREN)
                lib[i] = start_gated(lib_code(i));
            host_fork(host_code(i), true); /* never waited for by the host */
        }
        for (int i = 0; i < 10; i++) {
            char script[32];
            snprintf(script, sizeof script, "exit %d", 60 + i);
            const char *argv[] = {"/bin/sh", "-c", script, NULL};
            ex[i] = proc_new_exec(argv);
            CHECK(ex[i] && proc_start(ex[i]) == 0, "exec start");
        }
        tu_gate_open(&gate);
        for (int i = 0; i < LIB_CHILDREN; i++) {
            CHECK(proc_join(lib[i], 30000) == 0, "join");
            /* libproc took SIGCHLD over at its first start: the statuses are kept */
            CHECK(proc_exitcode(lib[i]) == lib_code(i), "libproc child %d: exit code %d", i,
                  proc_exitcode(lib[i]));
            CHECK(proc_close(lib[i]) == 0, "close");
        }
        for (int i = 0; i < 10; i++) {
            CHECK(proc_join(ex[i], 30000) == 0, "join");
            CHECK(proc_exitcode(ex[i]) == 60 + i, "exec child %d: exit code %d", i,
                  proc_exitcode(ex[i]));
            CHECK(proc_close(ex[i]) == 0, "close");
        }
        tu_gate_destroy(&gate);
        /* and the host's children, which SIG_IGN promised would not become zombies */
        int left = tu_wait_children_gone(10000);
        CHECK(left == 0, "round %d: %d children left, %d of them zombies", round, left,
              tu_count_zombies());
    }
    return 0;
}

static int sub_sigign_after(void)
{
    libproc_first_start();
    enum { N = LIB_CHILDREN };
    proc_t *before[N], *after[N], *cwd[10], *ex[10];
    CHECK(tu_gate_init(&gate) == 0, "gate");
    for (int i = 0; i < N; i++)
        before[i] = start_gated(lib_code(i));
    CHECK(signal(SIGCHLD, SIG_IGN) != SIG_ERR, "signal");
    for (int i = 0; i < N; i++)
        after[i] = start_gated(lib_code(i));
    for (int i = 0; i < 10; i++) {
        cwd[i] = proc_new(gated_child, (void *)(intptr_t)(70 + i));
        CHECK(cwd[i] && proc_set_cwd(cwd[i], "/") == 0, "cwd");
        CHECK(proc_start(cwd[i]) == 0, "start with cwd under SIG_IGN");
        char script[32];
        snprintf(script, sizeof script, "exit %d", 80 + i);
        const char *argv[] = {"/bin/sh", "-c", script, NULL};
        ex[i] = proc_new_exec(argv);
        CHECK(ex[i] && proc_start(ex[i]) == 0, "exec start under SIG_IGN");
    }
    /* a failing exec must still report synchronously, without hanging on the lost status */
    const char *bad[] = {"/nonexistent/program", NULL};
    proc_t *b = proc_new_exec(bad);
    CHECK(b && proc_start(b) == -ENOENT, "failing exec under SIG_IGN");
    CHECK(proc_close(b) == 0, "close");
    tu_gate_open(&gate);

    int real = 0, unknown = 0;
    for (int k = 0; k < 2 * N + 20; k++) {
        proc_t *p;
        int code;
        if (k < N) {
            p = before[k];
            code = lib_code(k);
        } else if (k < 2 * N) {
            p = after[k - N];
            code = lib_code(k - N);
        } else if (k < 2 * N + 10) {
            p = cwd[k - 2 * N];
            code = 70 + k - 2 * N;
        } else {
            p = ex[k - 2 * N - 10];
            code = 80 + k - 2 * N - 10;
        }
        int r = proc_join(p, PROC_WAIT_FOREVER); /* alarm() bounds a hang */
        CHECK(r == 0, "join %d = %d", k, r);
        int ec = proc_exitcode(p);
        CHECK(ec == code || ec == PROC_EXITCODE_UNKNOWN, "child %d: exit code %d", k, ec);
        if (ec == code)
            real++;
        else
            unknown++;
        CHECK(!proc_is_alive(p), "alive after join");
        CHECK(proc_close(p) == 0, "close");
    }
    tu_gate_destroy(&gate);
    CHECK(proc_active_children(NULL, 0) == 0, "active children");
    CHECK(tu_wait_children_gone(10000) == 0, "children left");
    fprintf(stderr, "sub sigign-after: %d exit codes real, %d PROC_EXITCODE_UNKNOWN\n", real,
            unknown);
    return 0;
}

/* ---------------------------------------------------------- cmocka side */

static void run_sub(const char *mode)
{
    int code = st_run_sub(mode, NULL);
    if (code != 0)
        fail_msg("sub-process '%s' failed: %d (1: a check failed, see above; -14: it hung)", mode,
                 code);
}

static int teardown(void **state)
{
    (void)state;
    return check_no_children_left(5000);
}

TEST_CASE(test_handler_installed_before_libproc, run_sub, "handler-before")

TEST_CASE(test_handler_installed_after_libproc, run_sub, "handler-after")

TEST_CASE(test_sigchld_ignored_before_first_start, run_sub, "sigign-before")

TEST_CASE(test_sigchld_ignored_after_start, run_sub, "sigign-after")

/* ----------------------------------- fork() while other threads are in libproc */

static _Atomic bool stop_workers;
static _Atomic int workers_cycled; /* workers through their first start/join cycle */

struct fw {
    int index;
    long ops;
    int errors;
    char first_error[160];
};

static void fw_error(struct fw *w, const char *what, int v)
{
    if (w->errors++ == 0)
        snprintf(w->first_error, sizeof w->first_error, "worker %d: %s (%d)", w->index, what, v);
}

static void *fork_worker(void *arg)
{
    struct fw *w = arg;
    for (long k = 0; !atomic_load(&stop_workers); k++) {
        proc_t *p;
        int code = (int)(k % 200);
        tu_fork_gate_enter(); /* see TU_FORK_GATE: a no-op but under old ThreadSanitizers */
        switch ((k + w->index) % 4) {
        case 0:
            p = proc_new(return_code_main, (void *)(intptr_t)code);
            break;
        case 1:
            p = proc_new(return_code_main, (void *)(intptr_t)code);
            if (p && proc_set_cwd(p, "/") != 0) /* a status pipe is in flight during the fork */
                fw_error(w, "set_cwd", 0);
            break;
        case 2: {
            const char *argv[] = {"/bin/sh", "-c", "exit 5", NULL};
            p = proc_new_exec(argv);
            code = 5;
            break;
        }
        default:
            p = proc_new(return_code_main, (void *)(intptr_t)code);
            if (p && proc_set_daemon(p, true) != 0) /* forked by the reaper thread */
                fw_error(w, "set_daemon", 0);
            break;
        }
        if (!p) {
            tu_fork_gate_leave();
            fw_error(w, "proc_new", errno);
            continue;
        }
        proc_set_name(p, "worker-child");
        (void)proc_name(p);
        int r = proc_start(p);
        tu_fork_gate_leave();
        if (r != 0) {
            fw_error(w, "proc_start", r);
        } else {
            (void)proc_active_children(NULL, 0);
            r = proc_join(p, 30000);
            if (r != 0)
                fw_error(w, "proc_join", r);
            else if (proc_exitcode(p) != code)
                fw_error(w, "exit code", proc_exitcode(p));
        }
        tu_fork_gate_enter();
        if (proc_close(p) != 0)
            fw_error(w, "proc_close", 0);
        tu_fork_gate_leave();
        if (w->ops++ == 0)
            atomic_fetch_add(&workers_cycled, 1);
    }
    return NULL;
}

/* In the host's fork child: libproc must work (no lock left held, fresh state). */
static int forked_host_child(int i)
{
    alarm(20); /* a deadlock ends as SIGALRM */
    if (proc_active_children(NULL, 0) != 0)
        return 10; /* inherited the parent's children */
    proc_t *cur = proc_current();
    if (!cur || proc_pid(cur) != getpid())
        return 11;
    proc_t *p = proc_new(return_code_main, (void *)(intptr_t)(i % 100));
    if (!p || proc_start(p) != 0)
        return 12;
    if (proc_join(p, 10000) != 0 || proc_exitcode(p) != i % 100)
        return 13;
    if (proc_close(p) != 0)
        return 14;
    const char *argv[] = {"/bin/sh", "-c", "exit 6", NULL};
    p = proc_new_exec(argv);
    if (!p || proc_start(p) != 0 || proc_join(p, 10000) != 0 || proc_exitcode(p) != 6)
        return 15;
    if (proc_close(p) != 0)
        return 16;
    return 0;
}

static void test_fork_while_threads_in_libproc(void **state)
{
    (void)state;
    SKIP_IF_HOST_FORK_UNSAFE();
    struct fw w[FORK_WORKERS];
    pthread_t t[FORK_WORKERS];
    atomic_store(&stop_workers, false);
    atomic_store(&workers_cycled, 0);
    for (int i = 0; i < FORK_WORKERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].index = i;
        EQ(pthread_create(&t[i], NULL, fork_worker, &w[i]), 0);
    }
    /* The first fork waits until every worker has been through libproc once,
     * as in test_lifecycle: a fork that interrupts libproc's one-time
     * initialisation (pthread_once) hangs the child under ThreadSanitizer,
     * whose pthread_once() never lets a fork child re-run it as glibc's does,
     * and the sanitizers' allocators are busiest while the new threads fill
     * their caches. */
    int64_t ready_by = tu_now_ms() + 10000;
    while (atomic_load(&workers_cycled) < FORK_WORKERS && tu_now_ms() < ready_by)
        sched_yield();
    if (atomic_load(&workers_cycled) < FORK_WORKERS) {
        atomic_store(&stop_workers, true);
        for (int i = 0; i < FORK_WORKERS; i++)
            pthread_join(t[i], NULL);
        fail_msg("only %d of %d workers got through one start and join in 10 s",
                 atomic_load(&workers_cycled), FORK_WORKERS);
    }
    int bad = 0, first_bad = -1, first_code = 0;
    int64_t t0 = tu_now_ms();
    for (int i = 0; i < HOST_FORKS; i++) {
        pid_t pid = tu_fork_gated();
        if (pid == 0)
            _exit(forked_host_child(i));
        assert_true(pid > 0);
        int code = st_wait_pid(pid);
        if (code != 0 && bad++ == 0) {
            first_bad = i;
            first_code = code;
        }
    }
    int64_t took = tu_now_ms() - t0;
    atomic_store(&stop_workers, true);
    long ops = 0;
    int errors = 0;
    for (int i = 0; i < FORK_WORKERS; i++) {
        EQ(pthread_join(t[i], NULL), 0);
        if (w[i].errors)
            print_error("%d error(s), first: %s\n", w[i].errors, w[i].first_error);
        ops += w[i].ops;
        errors += w[i].errors;
    }
    if (bad)
        fail_msg("%d of %d fork children failed; first: #%d with %d (-14: deadlocked, "
                 "10 inherited children, 12-16 libproc unusable)",
                 bad, HOST_FORKS, first_bad, first_code);
    EQ(errors, 0);
    print_message("%d host forks in %lld ms while %d threads ran %ld libproc start/join cycles\n",
                  HOST_FORKS, (long long)took, FORK_WORKERS, ops);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--sub") == 0) {
        sub_mode = argv[2];
        alarm(120); /* a hang in a sub-process shows up as SIGALRM */
        if (strcmp(sub_mode, "handler-before") == 0)
            return sub_handler_before();
        if (strcmp(sub_mode, "handler-after") == 0)
            return sub_handler_after();
        if (strcmp(sub_mode, "sigign-before") == 0)
            return sub_sigign_before();
        if (strcmp(sub_mode, "sigign-after") == 0)
            return sub_sigign_after();
        return 2;
    }
    st_raise_limits();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_handler_installed_before_libproc, teardown),
        cmocka_unit_test_teardown(test_handler_installed_after_libproc, teardown),
        cmocka_unit_test_teardown(test_sigchld_ignored_before_first_start, teardown),
        cmocka_unit_test_teardown(test_sigchld_ignored_after_start, teardown),
        cmocka_unit_test_teardown(test_fork_while_threads_in_libproc, teardown),
    };
    return cmocka_run_group_tests_name("stress_host", tests, NULL, NULL);
}
