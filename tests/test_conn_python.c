/* SPDX-License-Identifier: MIT */
/*
 * Wire compatibility with CPython's multiprocessing.connection (API 4.5):
 * tests/support/py_peer.py, run by a Python before 3.12 (HMAC-MD5
 * handshake) and by a 3.12 or later ("{sha256}" handshake), as a client of a
 * libproc listener and as a listener for a libproc client: the right key
 * (messages of 0, 1 bytes, 1 MiB and 300 MiB, 1,000 in a row, the 8-byte
 * length form both ways) and a wrong key (-EACCES here, AuthenticationError
 * there). A Python that cannot be found is reported as SKIPPED with what was
 * looked for.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"
#include "net_testutil.h"
#include "testutil.h"

#define KEY "python interop key"
#define KEYHEX "707974686f6e20696e7465726f70206b6579"
#define KEYLEN (sizeof KEY - 1)
#define BOUND 120000 /* 300 MiB through Python, under sanitizers too */
/* The largest message: 300 MiB; under ThreadSanitizer, which instruments every
 * byte of the test's own pattern loop and took this program past ctest's
 * 300 s on a loaded 2-core machine, 32 MiB (still far above the 1 MiB case
 * and many socket buffers). */
#ifdef TU_TSAN
#define BIG (32u << 20)
#else
#define BIG (300u << 20)
#endif

struct python {
    int min, below; /* the versions wanted: [min, below), below 0 for no limit */
    char path[4096];
    bool found;
};

static struct python legacy = {308, 312, "", false}, modern = {312, 0, "", false};

static const char *need_python(void **state)
{
    const struct python *py = *state;
    return py->path;
}

/* Starts py_peer.py; its stdout is a pipe when want_stdout. */
static proc_t *start_peer(const char *python, const char *const extra[], size_t n, bool want_stdout)
{
    const char *argv[16] = {python, LIBPROC_TEST_PY_PEER};
    assert_true(n + 3 <= sizeof argv / sizeof argv[0]);
    for (size_t i = 0; i < n; i++)
        argv[2 + i] = extra[i];
    proc_t *p = proc_new_exec(argv);
    assert_non_null(p);
    if (want_stdout)
        assert_int_equal(proc_set_stdio(p, 1, PROC_STDIO_PIPE), 0);
    assert_int_equal(proc_start(p), 0);
    return p;
}

static int finish_peer(proc_t *p)
{
    assert_int_equal(proc_join(p, BOUND), 0);
    int code = proc_exitcode(p);
    proc_close(p);
    return code;
}

/* Echoes every message of one accepted connection until the peer leaves. */
static void echo_all(proc_conn_t *c)
{
    unsigned char *buf = malloc(BIG + 1);
    assert_non_null(buf);
    ssize_t n;
    while ((n = proc_conn_recv(c, buf, BIG + 1, BOUND)) >= 0)
        assert_int_equal(proc_conn_send(c, buf, (size_t)n), 0);
    assert_int_equal(n, -EPIPE);
    free(buf);
}

static void python_client(void **state)
{
    const char *python = need_python(state);
    char address[96], big[16];
    nt_abstract(address, sizeof address, "pyclient");
    snprintf(big, sizeof big, "%u", BIG);
    proc_listener_t *l = proc_listen(address, KEY, KEYLEN);
    assert_non_null(l);
    const char *args[] = {"client", address, KEYHEX, "0", "1", "1048576", big, "COUNT:1000"};
    proc_t *p = start_peer(python, args, 8, false);
    proc_conn_t *c;
    assert_int_equal(proc_accept(l, &c, BOUND), 0);
    echo_all(c);
    proc_conn_close(c);
    assert_int_equal(finish_peer(p), 0);
    proc_listener_close(l);
}

static void python_client_wrong_key(void **state)
{
    const char *python = need_python(state);
    proc_listener_t *l = proc_listen("tcp:127.0.0.1:0", KEY, KEYLEN);
    assert_non_null(l);
    const char *args[] = {"client", proc_listener_address(l), "00ff", "1"};
    proc_t *p = start_peer(python, args, 4, false);
    proc_conn_t *c;
    assert_int_equal(proc_accept(l, &c, BOUND), -EACCES);
    assert_int_equal(finish_peer(p), 3); /* AuthenticationError */
    proc_listener_close(l);
}

/* Starts a Python listener and reads the address it reports. */
static proc_t *python_server(const char *python, const char *address, char *real, size_t cap)
{
    const char *args[] = {"server", address, KEYHEX};
    proc_t *p = start_peer(python, args, 3, true);
    char line[256];
    size_t n = 0;
    while (n < sizeof line - 1 && (n == 0 || line[n - 1] != '\n')) {
        ssize_t r = tu_read_full(proc_stdio_fd(p, 1), line + n, 1, BOUND);
        assert_int_equal(r, 1);
        n++;
    }
    line[n - 1] = '\0';
    assert_int_equal(strncmp(line, "ready ", 6), 0);
    snprintf(real, cap, "%s", line + 6);
    return p;
}

static void round_trip(proc_conn_t *c, const unsigned char *m, size_t n, unsigned char *back)
{
    assert_int_equal(proc_conn_send(c, m, n), 0);
    assert_int_equal(proc_conn_recv(c, back, n + 1, BOUND), (ssize_t)n);
    assert_memory_equal(m, back, n);
}

/* BURST messages in a row; a thread takes the echoes meanwhile, so that
 * neither side's socket buffer fills while the other waits. */
#define BURST 1000
struct burst {
    proc_conn_t *c;
    const unsigned char *m;
    size_t right; /* echoes that came back as sent */
};

static void *read_burst(void *arg)
{
    struct burst *b = arg;
    unsigned char back[64];
    for (size_t i = 0; i < BURST; i++)
        if (proc_conn_recv(b->c, back, sizeof back, BOUND) == (ssize_t)(i % 50) &&
            memcmp(back, b->m + i, i % 50) == 0)
            b->right++;
    return NULL;
}

static void python_listener(void **state)
{
    const char *python = need_python(state);
    char real[256];
    proc_t *p = python_server(python, "tcp:127.0.0.1:0", real, sizeof real);
    proc_conn_t *c;
    assert_int_equal(proc_connect(real, KEY, KEYLEN, &c, BOUND), 0);
    unsigned char *m = malloc(BIG), *back = malloc(BIG + 1);
    assert_non_null(m);
    assert_non_null(back);
    for (size_t i = 0; i < BIG; i++)
        m[i] = (unsigned char)(i * 7 + (i >> 12));
    static const size_t sizes[] = {0, 1, 1 << 20, BIG};
    for (size_t i = 0; i < 4; i++)
        round_trip(c, m, sizes[i], back);
    struct burst b = {c, m, 0};
    pthread_t reader;
    assert_int_equal(pthread_create(&reader, NULL, read_burst, &b), 0);
    for (size_t i = 0; i < BURST; i++)
        assert_int_equal(proc_conn_send(c, m + i, i % 50), 0);
    assert_int_equal(pthread_join(reader, NULL), 0);
    assert_int_equal(b.right, BURST);
    /* The 8-byte length form, written under the connection. */
    assert_int_equal(nt_send_frame_long(proc_conn_fileno(c), "world", 5), 0);
    assert_int_equal(proc_conn_recv(c, back, 64, BOUND), 5);
    assert_memory_equal(back, "world", 5);
    free(m);
    free(back);
    proc_conn_close(c);
    assert_int_equal(finish_peer(p), 0);
}

static void python_listener_wrong_key(void **state)
{
    const char *python = need_python(state);
    char address[96], real[256];
    nt_abstract(address, sizeof address, "pyserver");
    proc_t *p = python_server(python, address, real, sizeof real);
    assert_string_equal(real, address);
    proc_conn_t *c = (proc_conn_t *)&c;
    assert_int_equal(proc_connect(real, "not the key", 11, &c, BOUND), -EACCES);
    assert_null(c);
    assert_int_equal(finish_peer(p), 3); /* AuthenticationError */
}

#define CASE(fn, py)                                                                               \
    {                                                                                              \
#fn, fn, NULL, NULL, py                                                                    \
    }

/* Runs the four cases with one Python; 77 (ctest's "skipped") when there is none. */
static int run_with(struct python *py, const char *what)
{
    py->found = nt_find_python(py->min, py->below, py->path, sizeof py->path);
    if (!py->found) {
        printf("SKIPPED: %s: no Python found (looked for %s)\n", what, py->path);
        return 77;
    }
    printf("%s: %s (%d)\n", what, py->path, nt_python_version(py->path));
    fflush(stdout);
    const struct CMUnitTest tests[] = {
        CASE(python_client, py),
        CASE(python_client_wrong_key, py),
        CASE(python_listener, py),
        CASE(python_listener_wrong_key, py),
    };
    return cmocka_run_group_tests_name(what, tests, NULL, NULL);
}

/* argv[1]: "legacy" (a Python before 3.12) or "modern" (3.12 or later); none: both. */
int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    const char *which = argc > 1 ? argv[1] : "";
    int r = 0;
    if (strcmp(which, "modern") != 0)
        r = run_with(&legacy, "legacy");
    if (strcmp(which, "legacy") != 0 && (r == 0 || r == 77)) {
        int m = run_with(&modern, "modern");
        r = r == 0 || m != 77 ? m : r;
    }
    return r;
}
