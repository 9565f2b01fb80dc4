/* SPDX-License-Identifier: MIT */
/*
 * Queue end of stream and readiness (src/queue.c): proc_queue_close() seen
 * by every process (puts fail, gets drain then fail at once, getters and
 * putters asleep in other processes wake), proc_queue_fileno() readable
 * exactly while a get would not block, in whichever process polls, and
 * poll(2) over two queues and a socket in one set.
 *
 * Children report through exit codes and pipes; a child's being asleep is
 * read from /proc/<pid>/syscall; timeouts only bound hangs. The kill sweeps
 * of a polled queue are in test_ipc_queue_kill.c.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"
#include "queue_fixture.h"
#include "testcheck.h"

/* Waits until p's main thread sleeps in system call nr. Where /proc/<pid>/syscall
 * cannot be read the test goes on unchecked (what it asserts holds either way). */
static void await_asleep_in(proc_t *p, long nr)
{
    int r = tu_wait_blocked_in(proc_pid(p), nr, IT_BOUND_MS);
    if (r == -ETIMEDOUT)
        fail_msg("child %d never slept in system call %ld", (int)proc_pid(p), nr);
}

/* ------------------------------------------------------------------- basics */

static void null_arguments(void **state)
{
    (void)state;
    assert_int_equal(proc_queue_close(NULL), -EINVAL);
    assert_int_equal(proc_queue_fileno(NULL), -EINVAL);
}

static void fileno_is_one_cloexec_fd_closed_by_free(void **state)
{
    (void)state;
    int before = tu_count_fds();
    assert_true(before > 0);
    proc_queue_t *q = proc_queue_new(0, 8);
    assert_non_null(q);
    assert_int_equal(tu_count_fds(), before + 1);
    int fd = proc_queue_fileno(q);
    assert_true(fd >= 0);
    assert_int_equal(proc_queue_fileno(q), fd);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(tu_count_fds(), before + 1);
    assert_int_equal(proc_queue_free(q), 0);
    assert_int_equal(tu_count_fds(), before);
}

/* With standard input closed, the lowest free number is 0: the queue's fd must not be it. */
static int no_stdin_main(void *arg)
{
    (void)arg;
    close(0);
    proc_queue_t *q = proc_queue_new(4, 8);
    if (!q)
        return 1;
    int fd = proc_queue_fileno(q);
    bool stdin_free = fcntl(0, F_GETFD) < 0 && errno == EBADF;
    proc_queue_free(q);
    return fd > 2 && stdin_free ? 0 : 2;
}

static void fileno_is_never_a_standard_stream(void **state)
{
    (void)state;
    assert_int_equal(it_finish(it_start(no_stdin_main, NULL)), 0);
}

/* With no descriptor left (RLIMIT_NOFILE at the lowest free number): EMFILE. */
static int new_without_fds_main(void *arg)
{
    (void)arg;
    int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (lowest < 0)
        return 1;
    close(lowest);
    struct rlimit old, rl;
    if (getrlimit(RLIMIT_NOFILE, &old) < 0)
        return 2;
    rl = old;
    rl.rlim_cur = (rlim_t)lowest;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 3;
    errno = 0;
    proc_queue_t *q = proc_queue_new(4, 8);
    int err = errno;
    if (setrlimit(RLIMIT_NOFILE, &old) < 0)
        return 4;
    if (q || err != EMFILE)
        return 5;
    q = proc_queue_new(4, 8); /* nothing was left behind: it works again */
    return q && proc_queue_free(q) == 0 ? 0 : 6;
}

static void new_fails_with_emfile(void **state)
{
    (void)state;
    assert_int_equal(it_finish(it_start(new_without_fds_main, NULL)), 0);
}

/* ------------------------------------------------------------------- close */

static int close_main(void *arg)
{
    return proc_queue_close(((struct qctx *)arg)->q) == 0 ? 0 : 1;
}

static int put_main(void *arg)
{
    struct qctx *c = arg;
    int r = proc_queue_put(c->q, "x", 1, IT_BOUND_MS);
    return r == 0 ? 0 : r == -EPIPE ? 3 : 2;
}

static void put_after_close_is_epipe_in_every_process(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(4, 8));
    assert_int_equal(proc_queue_put(c.q, "a", 1, 0), 0);
    assert_int_equal(it_finish(it_start(close_main, &c)), 0); /* another process closes */
    assert_int_equal(proc_queue_put(c.q, "b", 1, 0), -EPIPE);
    assert_int_equal(proc_queue_put(c.q, "b", 1, PROC_WAIT_FOREVER), -EPIPE);
    assert_int_equal(proc_queue_put(c.q, NULL, 0, 0), -EPIPE);
    assert_int_equal(it_finish(it_start(put_main, &c)), 3);
    assert_int_equal(proc_queue_size(c.q), 1);
    qctx_destroy(&c);
}

static void get_returns_queued_items_then_epipe(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, 8));
    assert_int_equal(proc_queue_put(c.q, "a", 1, 0), 0);
    assert_int_equal(proc_queue_put(c.q, "bc", 2, 0), 0);
    assert_int_equal(proc_queue_close(c.q), 0);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, NULL, 0, 0), -EMSGSIZE); /* the head stays */
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(buf[0], 'a');
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 2);
    assert_memory_equal(buf, "bc", 2);
    /* Empty and closed: -EPIPE at once, not a wait that would end in -ETIMEDOUT. */
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, IT_BOUND_MS), -EPIPE);
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, PROC_WAIT_FOREVER), -EPIPE);
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), -EPIPE);
    qctx_destroy(&c);
}

static void close_is_idempotent(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(2, 8));
    assert_int_equal(proc_queue_put(c.q, "a", 1, 0), 0);
    assert_int_equal(proc_queue_close(c.q), 0);
    assert_int_equal(proc_queue_close(c.q), 0);
    assert_int_equal(it_finish(it_start(close_main, &c)), 0);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1); /* not lost by a second close */
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), -EPIPE);
    /* task_done and join go on as before. */
    assert_int_equal(proc_queue_task_done(c.q), 0);
    assert_int_equal(proc_queue_join(c.q, 0), 0);
    qctx_destroy(&c);
}

/* Reports, then gets without a time limit until the get fails, reporting
 * each message: exit code = messages got, 100 + that when the failure was
 * not -EPIPE. */
static int drain_forever_main(void *arg)
{
    struct qctx *c = arg;
    qctx_report(c);
    char buf[8];
    int got = 0;
    ssize_t r;
    while ((r = proc_queue_get(c->q, buf, sizeof buf, PROC_WAIT_FOREVER)) == 1) {
        got++;
        qctx_report(c);
    }
    return r == -EPIPE ? got : 100 + got;
}

#define GETTERS 3

static void close_wakes_getters_blocked_in_other_processes(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, 8));
    proc_t *p[GETTERS];
    for (int i = 0; i < GETTERS; i++) {
        p[i] = it_start(drain_forever_main, &c);
        qctx_await(&c);
    }
    for (int i = 0; i < GETTERS; i++)
        await_asleep_in(p[i], SYS_futex);
    assert_int_equal(proc_queue_put(c.q, "x", 1, 0), 0);
    assert_int_equal(proc_queue_put(c.q, "y", 1, 0), 0);
    qctx_await(&c);
    qctx_await(&c);
    /* Both taken, every getter asleep again on the empty queue: now close. */
    for (int i = 0; i < GETTERS; i++)
        await_asleep_in(p[i], SYS_futex);
    assert_int_equal(proc_queue_close(c.q), 0);
    int total = 0;
    for (int i = 0; i < GETTERS; i++) {
        int code = it_finish(p[i]);
        assert_true(code >= 0 && code <= 2); /* woke with -EPIPE */
        total += code;
    }
    assert_int_equal(total, 2);
    qctx_destroy(&c);
}

/* Reports, then puts into the full queue without a time limit: 0 when -EPIPE. */
static int put_forever_main(void *arg)
{
    struct qctx *c = arg;
    qctx_report(c);
    int r = proc_queue_put(c->q, "z", 1, PROC_WAIT_FOREVER);
    return r == -EPIPE ? 0 : r == 0 ? 1 : 2;
}

static void close_wakes_putter_blocked_on_full_queue(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(1, 8));
    assert_int_equal(proc_queue_put(c.q, "a", 1, 0), 0);
    proc_t *p = it_start(put_forever_main, &c);
    qctx_await(&c);
    await_asleep_in(p, SYS_futex);
    assert_int_equal(proc_queue_close(c.q), 0);
    assert_int_equal(it_finish(p), 0);
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_int_equal(buf[0], 'a');
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), -EPIPE);
    qctx_destroy(&c);
}

/* ------------------------------------------------------------------ fileno */

static int take_main(void *arg)
{
    char buf[8];
    return proc_queue_get(((struct qctx *)arg)->q, buf, sizeof buf, IT_BOUND_MS) == 1 ? 0 : 1;
}

static void fileno_readable_while_get_would_not_block(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, 8));
    int fd = proc_queue_fileno(c.q);
    assert_true(fd >= 0);
    assert_false(qt_readable(fd));
    assert_int_equal(it_finish(it_start(put_main, &c)), 0); /* a put in another process */
    assert_true(qt_readable(fd));
    assert_int_equal(proc_queue_put(c.q, "y", 1, 0), 0);
    assert_true(qt_readable(fd));
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), 1);
    assert_true(qt_readable(fd));                            /* one left */
    assert_int_equal(it_finish(it_start(take_main, &c)), 0); /* the last, in another process */
    assert_false(qt_readable(fd));
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), -ETIMEDOUT);
    assert_false(qt_readable(fd));
    assert_int_equal(it_finish(it_start(close_main, &c)), 0);
    assert_true(qt_readable(fd)); /* closed and empty: a get returns -EPIPE at once */
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), -EPIPE);
    assert_true(qt_readable(fd));
    qctx_destroy(&c);
}

static void fileno_stays_readable_once_closed_queue_drains(void **state)
{
    (void)state;
    struct qctx c;
    qctx_init(&c, proc_queue_new(0, 8));
    int fd = proc_queue_fileno(c.q);
    assert_int_equal(proc_queue_put(c.q, "a", 1, 0), 0);
    assert_int_equal(proc_queue_close(c.q), 0);
    assert_true(qt_readable(fd));
    assert_int_equal(it_finish(it_start(take_main, &c)), 0); /* the last, in another process */
    assert_true(qt_readable(fd));
    char buf[8];
    assert_int_equal(proc_queue_get(c.q, buf, sizeof buf, 0), -EPIPE);
    assert_true(qt_readable(fd));
    qctx_destroy(&c);
}

static void fileno_turned_on_late_matches_the_queue(void **state)
{
    (void)state;
    proc_queue_t *q = proc_queue_new(0, 8);
    assert_non_null(q);
    assert_int_equal(proc_queue_put(q, "a", 1, 0), 0);
    assert_int_equal(proc_queue_put(q, "b", 1, 0), 0);
    int fd = proc_queue_fileno(q);
    assert_true(qt_readable(fd));
    char buf[8];
    assert_int_equal(proc_queue_get(q, buf, sizeof buf, 0), 1);
    assert_true(qt_readable(fd));
    assert_int_equal(proc_queue_get(q, buf, sizeof buf, 0), 1);
    assert_false(qt_readable(fd));
    proc_queue_free(q);

    /* Closed before anyone polled: readable from the first call on. */
    q = proc_queue_new(0, 8);
    assert_non_null(q);
    assert_int_equal(proc_queue_close(q), 0);
    assert_true(qt_readable(proc_queue_fileno(q)));
    proc_queue_free(q);
}

/* --------------------------------------------------------- one poll set */

enum { SRC_Q1, SRC_Q2, SRC_SOCK, NSRC };

struct pollset_ctx {
    proc_queue_t *q[2];
    int sock[2];   /* [0] the parent's end, [1] the child's */
    int report[2]; /* the child's acknowledgements */
};

/* Waits (ppoll, bounded) until one source is ready: its index, -1 if not exactly one. */
static int wait_one_ready(struct pollfd *p)
{
    struct timespec bound = {IT_BOUND_MS / 1000, 0};
    int n;
    do {
        n = ppoll(p, NSRC, &bound, NULL);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        return -1;
    for (int i = 0; i < NSRC; i++)
        if (p[i].revents)
            return p[i].revents == POLLIN ? i : -1;
    return -1;
}

/* Takes what source i has ready: the byte got, 'E' for a closed queue's end, '?' for anything else.
 */
static char consume(struct pollset_ctx *c, int i)
{
    char b = '?';
    if (i == SRC_SOCK)
        return read(c->sock[1], &b, 1) == 1 ? b : '?';
    ssize_t r = proc_queue_get(c->q[i], &b, 1, 0);
    return r == 1 ? b : r == -EPIPE ? 'E' : '?';
}

/*
 * The child polls both queues' descriptors and its socket in one set. Each
 * time exactly one must be ready: it takes from it, checks that nothing is
 * ready any more (but a closed queue, which stays readable), and
 * acknowledges with the source's index and the byte it got.
 */
static int pollset_child_main(void *arg)
{
    struct pollset_ctx *c = arg;
    close(c->sock[0]);
    struct pollfd p[NSRC] = {{proc_queue_fileno(c->q[0]), POLLIN, 0},
                             {proc_queue_fileno(c->q[1]), POLLIN, 0},
                             {c->sock[1], POLLIN, 0}};
    if (p[0].fd < 0 || p[1].fd < 0)
        return 1;
    if (tu_write_full(c->report[1], "r", 1) < 0)
        return 2;
    for (;;) {
        int i = wait_one_ready(p);
        if (i < 0)
            return 3;
        char ack[2] = {(char)('0' + i), consume(c, i)};
        if (ack[1] == 'E')
            p[i].fd = -1; /* readable for good from now on */
        struct timespec now = {0, 0};
        if (ppoll(p, NSRC, &now, NULL) != 0)
            return 4;
        if (tu_write_full(c->report[1], ack, 2) < 0)
            return 5;
        if (ack[1] == 'E' && p[0].fd < 0 && p[1].fd < 0)
            return 0; /* both queues closed: done */
    }
}

static void poll_set_sees_each_source_in_turn(void **state)
{
    (void)state;
    struct pollset_ctx c;
    c.q[0] = proc_queue_new(0, 8);
    c.q[1] = proc_queue_new(4, 8);
    assert_non_null(c.q[0]);
    assert_non_null(c.q[1]);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c.sock), 0);
    assert_int_equal(tu_pipe(c.report), 0);
    proc_t *p = it_start(pollset_child_main, &c);
    close(c.sock[1]);
    char ack[2];
    assert_int_equal(tu_read_full(c.report[0], ack, 1, IT_BOUND_MS), 1);

    /* What the parent makes ready, in order: a source and a byte ('E': close it). */
    static const struct {
        int src;
        char byte;
    } steps[] = {{SRC_Q2, 'a'}, {SRC_SOCK, 'b'}, {SRC_Q1, 'c'},   {SRC_SOCK, 'd'}, {SRC_Q1, 'e'},
                 {SRC_Q2, 'f'}, {SRC_Q2, 'E'},   {SRC_SOCK, 'g'}, {SRC_Q1, 'h'},   {SRC_Q1, 'E'}};
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        await_asleep_in(p, SYS_ppoll); /* the readiness must wake a sleeping poll */
        int src = steps[k].src;
        char b = steps[k].byte;
        if (src == SRC_SOCK)
            assert_int_equal(tu_write_full(c.sock[0], &b, 1), 0);
        else if (b == 'E')
            assert_int_equal(proc_queue_close(c.q[src]), 0);
        else
            assert_int_equal(proc_queue_put(c.q[src], &b, 1, 0), 0);
        assert_int_equal(tu_read_full(c.report[0], ack, 2, IT_BOUND_MS), 2);
        if (ack[0] != '0' + src || ack[1] != b)
            fail_msg("step %zu: made source %d ready with '%c', the child saw %c '%c'", k, src, b,
                     ack[0], ack[1]);
    }
    assert_int_equal(it_finish(p), 0);
    close(c.sock[0]);
    close(c.report[0]);
    close(c.report[1]);
    proc_queue_free(c.q[0]);
    proc_queue_free(c.q[1]);
}

/* A failed test's children (some wait without a time limit) are killed, not waited for at exit. */
#define T(f) cmocka_unit_test_teardown(f, kill_leftover_children)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(null_arguments),
        T(fileno_is_one_cloexec_fd_closed_by_free),
        T(fileno_is_never_a_standard_stream),
        T(new_fails_with_emfile),
        T(put_after_close_is_epipe_in_every_process),
        T(get_returns_queued_items_then_epipe),
        T(close_is_idempotent),
        T(close_wakes_getters_blocked_in_other_processes),
        T(close_wakes_putter_blocked_on_full_queue),
        T(fileno_readable_while_get_would_not_block),
        T(fileno_stays_readable_once_closed_queue_drains),
        T(fileno_turned_on_late_matches_the_queue),
        T(poll_set_sees_each_source_in_turn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
