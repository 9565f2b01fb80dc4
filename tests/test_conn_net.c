/* SPDX-License-Identifier: MIT */
/*
 * Authenticated connections between libproc processes (src/listen.c,
 * conn_auth.c, conn_stream.c): every address family, the real address of
 * port 0, the socket file's life, right and wrong keys both ways, the
 * default key, the errors of proc_connect, message sizes and bursts, a
 * receive cut by a timeout in the middle of a message, -EMSGSIZE, crafted
 * frames (the 8-byte length form, a negative length, a peer leaving
 * mid-message), the 8-byte form we send above 2^31 - 1 bytes, and bad
 * arguments for every call. Clients are forked
 * children; crafted frames come from the raw socket under a connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"
#include "net_testutil.h"
#include "testutil.h"

#define KEY "the key of this test"
#define KEYLEN (sizeof KEY - 1)
#define BOUND IT_BOUND_MS

static unsigned char byte_at(size_t i, unsigned seed)
{
    return (unsigned char)(i * 31u + (i >> 11) + seed * 7u);
}

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = byte_at(i, seed);
    return p;
}

/* ------------------------------------------------------------- the client */

struct client {
    char address[128];
    const char *key; /* NULL: proc_current()'s authkey */
    size_t keylen;
    const size_t *sizes; /* messages to send, each echoed back */
    size_t n;
};

/* Connects, sends each message and checks its echo. Exit code: 0, or what failed. */
static int client_main(void *arg)
{
    const struct client *cl = arg;
    proc_conn_t *c;
    int r = proc_connect(cl->address, cl->key, cl->keylen, &c, BOUND);
    if (r < 0)
        return r == -EACCES ? 13 : 2;
    for (size_t i = 0; i < cl->n; i++) {
        unsigned char *m = pattern(cl->sizes[i], (unsigned)i);
        unsigned char *back = malloc(cl->sizes[i] + 1);
        bool ok = proc_conn_send(c, m, cl->sizes[i]) == 0 &&
                  proc_conn_recv(c, back, cl->sizes[i] + 1, BOUND) == (ssize_t)cl->sizes[i] &&
                  memcmp(m, back, cl->sizes[i]) == 0;
        free(m);
        free(back);
        if (!ok)
            return 3;
    }
    return proc_conn_close(c) == 0 ? 0 : 4;
}

/* Accepts one peer and echoes its messages until it leaves: how many, or -errno. */
static long serve_echo(proc_listener_t *l)
{
    proc_conn_t *c;
    int r = proc_accept(l, &c, BOUND);
    if (r < 0)
        return r;
    size_t cap = 64u << 20;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    long n = 0;
    ssize_t got;
    while ((got = proc_conn_recv(c, buf, cap, BOUND)) >= 0) {
        assert_int_equal(proc_conn_send(c, buf, (size_t)got), 0);
        n++;
    }
    assert_int_equal(got, -EPIPE);
    free(buf);
    proc_conn_close(c);
    return n;
}

/* A client child with key (NULL: the inherited authkey) sends sizes[0..n), l echoes them. */
static void serve_one_client(proc_listener_t *l, const char *key, size_t keylen,
                             const size_t *sizes, size_t n)
{
    struct client cl = {.key = key, .keylen = keylen, .sizes = sizes, .n = n};
    snprintf(cl.address, sizeof cl.address, "%s", proc_listener_address(l));
    proc_t *p = it_start(client_main, &cl);
    assert_int_equal(serve_echo(l), (long)n);
    assert_int_equal(it_finish(p), 0);
}

static void echo_round(const char *address, const size_t *sizes, size_t n)
{
    proc_listener_t *l = proc_listen(address, KEY, KEYLEN);
    assert_non_null(l);
    serve_one_client(l, KEY, KEYLEN, sizes, n);
    assert_int_equal(proc_listener_close(l), 0);
}

/* A listener with KEY on a fresh abstract address, which is copied to address. */
static proc_listener_t *listen_abstract(char *address, size_t cap, const char *tag)
{
    nt_abstract(address, cap, tag);
    proc_listener_t *l = proc_listen(address, KEY, KEYLEN);
    assert_non_null(l);
    return l;
}

/* ------------------------------------------------------------------ tests */

static void every_family_round_trips(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 5, 65536, 1 << 20, 3};
    char abstract[96], path[96];
    nt_abstract(abstract, sizeof abstract, "family");
    snprintf(path, sizeof path, "unix:/tmp/libproc-test-%d.sock", (int)getpid());
    const char *addresses[] = {abstract, path, "tcp:127.0.0.1:0", "tcp:[::1]:0"};
    int fds = 0;
    for (int round = 0; round < 2; round++) { /* the first one starts libproc's own fds */
        if (round == 1)
            fds = tu_count_fds();
        for (size_t i = 0; i < sizeof addresses / sizeof addresses[0]; i++)
            echo_round(addresses[i], sizes, sizeof sizes / sizeof sizes[0]);
    }
    assert_int_equal(tu_count_fds(), fds);
}

static void many_messages_in_a_row(void **state)
{
    (void)state;
    static size_t sizes[1000];
    for (size_t i = 0; i < 1000; i++)
        sizes[i] = i % 97;
    echo_round("tcp:127.0.0.1:0", sizes, 1000);
}

static void message_of_64_mib(void **state)
{
    (void)state;
    static const size_t sizes[] = {64u << 20};
    char a[96];
    nt_abstract(a, sizeof a, "big");
    echo_round(a, sizes, 1);
}

static void real_address_and_socket_file(void **state)
{
    (void)state;
    proc_listener_t *l = proc_listen("tcp:127.0.0.1:0", KEY, KEYLEN);
    assert_non_null(l);
    const char *a = proc_listener_address(l);
    assert_int_equal(strncmp(a, "tcp:127.0.0.1:", 14), 0);
    assert_true(atoi(a + 14) > 0);
    assert_true(proc_listener_fileno(l) >= 0);
    proc_listener_close(l);

    char path[96], address[112];
    snprintf(path, sizeof path, "/tmp/libproc-test-%d-file.sock", (int)getpid());
    snprintf(address, sizeof address, "unix:%s", path);
    l = proc_listen(address, KEY, KEYLEN);
    assert_non_null(l);
    assert_string_equal(proc_listener_address(l), address);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    errno = 0;
    assert_null(proc_listen(address, KEY, KEYLEN)); /* the file is taken */
    assert_int_equal(errno, EADDRINUSE);
    assert_int_equal(stat(path, &st), 0); /* and the failed listen left it alone */
    /* Someone removed our file and listens there now: our close leaves theirs. */
    assert_int_equal(unlink(path), 0);
    proc_listener_t *theirs = proc_listen(address, KEY, KEYLEN);
    assert_non_null(theirs);
    proc_listener_close(l);
    assert_int_equal(stat(path, &st), 0);
    proc_listener_close(theirs);
    assert_int_equal(stat(path, &st), -1); /* closing removed it */
}

/* Readiness of the listening fd, then an accept that does not wait: the
 * handshake still gets its own time. */
static void poll_then_accept_at_once(void **state)
{
    (void)state;
    char a[96];
    proc_listener_t *l = listen_abstract(a, sizeof a, "poll");
    static const size_t sizes[] = {3};
    struct client cl = {.key = KEY, .keylen = KEYLEN, .sizes = sizes, .n = 1};
    snprintf(cl.address, sizeof cl.address, "%s", a);
    proc_t *p = it_start(client_main, &cl);
    assert_int_equal(tu_wait_readable(proc_listener_fileno(l), BOUND), 1);
    proc_conn_t *c;
    assert_int_equal(proc_accept(l, &c, 0), 0);
    char buf[8];
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), 3);
    assert_int_equal(proc_conn_send(c, buf, 3), 0);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), -EPIPE);
    proc_conn_close(c);
    assert_int_equal(it_finish(p), 0);
    proc_listener_close(l);
}

/* The key is checked both ways: each side refuses the other's wrong key. */
static void wrong_key_is_refused_both_ways(void **state)
{
    (void)state;
    char a[96];
    proc_listener_t *l = listen_abstract(a, sizeof a, "wrong");
    struct client cl = {.key = "another key", .keylen = 11};
    snprintf(cl.address, sizeof cl.address, "%s", a);
    proc_t *p = it_start(client_main, &cl);
    proc_conn_t *c = (proc_conn_t *)&c;
    assert_int_equal(proc_accept(l, &c, BOUND), -EACCES);
    assert_null(c);
    assert_int_equal(it_finish(p), 13); /* the client got -EACCES too */
    /* The listener goes on: a client with the right key gets through. */
    static const size_t sizes[] = {10};
    serve_one_client(l, KEY, KEYLEN, sizes, 1);
    proc_listener_close(l);
}

/* NULL is proc_current()'s authkey, which a child inherits from its parent. */
static void default_key_is_the_authkey(void **state)
{
    (void)state;
    char a[96];
    nt_abstract(a, sizeof a, "default");
    proc_listener_t *l = proc_listen(a, NULL, 0);
    assert_non_null(l);
    static const size_t sizes[] = {7};
    serve_one_client(l, NULL, 0, sizes, 1);
    size_t len; /* the same key, given explicitly */
    const unsigned char *mine = proc_authkey(proc_current(), &len);
    serve_one_client(l, (const char *)mine, len, sizes, 1);
    proc_listener_close(l);
}

/* No file, nobody listening, a closed port, and a listener that never
 * accepts (the handshake cannot finish). */
static void connect_errors(void **state)
{
    (void)state;
    proc_conn_t *c = (proc_conn_t *)&c;
    assert_int_equal(proc_connect("unix:/tmp/libproc-test-no-such.sock", KEY, KEYLEN, &c, 1000),
                     -ENOENT);
    assert_null(c);
    char a[96];
    nt_abstract(a, sizeof a, "nobody");
    assert_int_equal(proc_connect(a, KEY, KEYLEN, &c, 1000), -ECONNREFUSED);
    proc_listener_t *l = proc_listen("tcp:127.0.0.1:0", KEY, KEYLEN);
    assert_non_null(l);
    char closed[64];
    snprintf(closed, sizeof closed, "%s", proc_listener_address(l));
    proc_listener_close(l);
    assert_int_equal(proc_connect(closed, KEY, KEYLEN, &c, 1000), -ECONNREFUSED);

    l = proc_listen(a, KEY, KEYLEN);
    assert_non_null(l);
    int64_t t0 = tu_now_ms();
    assert_int_equal(proc_connect(a, KEY, KEYLEN, &c, 200), -ETIMEDOUT);
    it_elapsed_ok(t0, 200);
    assert_null(c);
    proc_listener_close(l);
}

/* The raw socket under a connection: a hand-made peer in a child. */
struct crafted {
    char address[96];
    int step;  /* which frames to send */
    int go[2]; /* the parent's go-ahead between two halves */
};

static int crafted_main(void *arg)
{
    struct crafted *cr = arg;
    int fd = nt_raw_connect(cr->address);
    if (fd < 0 || nt_raw_client_handshake(fd, KEY, KEYLEN) < 0)
        return 2;
    static const unsigned char hello[] = "0123456789";
    unsigned char neg[4] = {0xff, 0xff, 0xff, 0xfe};
    static const unsigned char rest_of_header[5] = {0, 3, 'a', 'b', 'c'};
    char c;
    switch (cr->step) {
    case 0: /* the 8-byte length form, then half a message, a pause, the rest */
        if (nt_send_frame_long(fd, hello, 10) < 0 || tu_write_full(fd,
                                                                   "\0\0\0\x0a"
                                                                   "01234",
                                                                   9) < 0)
            return 3;
        if (tu_read_full(cr->go[0], &c, 1, BOUND) != 1)
            return 4;
        return tu_write_full(fd, "56789", 5) == 0 && nt_send_frame(fd, hello, 10) == 0 ? 0 : 5;
    case 1: /* a negative length other than -1 */
        return tu_write_full(fd, neg, 4) == 0 ? 0 : 3;
    case 2: /* half a header, a pause, the rest */
        if (tu_write_full(fd, "\0\0", 2) < 0 || tu_read_full(cr->go[0], &c, 1, BOUND) != 1)
            return 3;
        return tu_write_full(fd, rest_of_header, 5) == 0 ? 0 : 4;
    case 3: /* a length no receive can return (above SSIZE_MAX) */
        return tu_write_full(fd, "\xff\xff\xff\xff\x80\0\0\0\0\0\0\x01", 12) == 0 ? 0 : 3;
    default: /* leaves in the middle of a message */
        return tu_write_full(fd,
                             "\0\0\0\x0a"
                             "012",
                             7) == 0
                   ? 0
                   : 3;
    }
}

static proc_conn_t *accept_crafted(proc_listener_t *l, struct crafted *cr, int step, proc_t **p)
{
    cr->step = step;
    *p = it_start(crafted_main, cr);
    proc_conn_t *c;
    assert_int_equal(proc_accept(l, &c, BOUND), 0);
    return c;
}

static void crafted_frames(void **state)
{
    (void)state;
    struct crafted cr;
    assert_int_equal(tu_pipe(cr.go), 0);
    proc_listener_t *l = listen_abstract(cr.address, sizeof cr.address, "crafted");
    proc_t *p;
    char buf[32];
    proc_conn_t *c = accept_crafted(l, &cr, 0, &p);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), 10); /* the 8-byte form */
    assert_memory_equal(buf, "0123456789", 10);
    assert_int_equal(proc_conn_recv(c, buf, 5, BOUND), -EMSGSIZE);         /* too small: it stays */
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, 100), -ETIMEDOUT); /* half of it came */
    assert_int_equal(tu_write_full(cr.go[1], "g", 1), 0);
    char fresh[32] = {0}; /* what the timed-out call read must come from the handle */
    assert_int_equal(proc_conn_recv(c, fresh, sizeof fresh, BOUND), 10);
    assert_memory_equal(fresh, "0123456789", 10);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), 10);
    assert_int_equal(proc_conn_poll(c, BOUND), 1); /* end of file */
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), -EPIPE);
    assert_int_equal(it_finish(p), 0);
    proc_conn_close(c);

    c = accept_crafted(l, &cr, 1, &p);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), -EPROTO);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), -EPROTO); /* for good */
    assert_int_equal(it_finish(p), 0);
    proc_conn_close(c);

    c = accept_crafted(l, &cr, 2, &p);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, 100), -ETIMEDOUT); /* 2 of 4 bytes */
    assert_int_equal(tu_write_full(cr.go[1], "g", 1), 0);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), 3);
    assert_memory_equal(buf, "abc", 3);
    assert_int_equal(it_finish(p), 0);
    proc_conn_close(c);

    c = accept_crafted(l, &cr, 3, &p);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), -EPROTO);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), -EPROTO);
    assert_int_equal(it_finish(p), 0);
    proc_conn_close(c);

    c = accept_crafted(l, &cr, 4, &p);
    assert_int_equal(proc_conn_recv(c, buf, sizeof buf, BOUND), -EPROTO);
    assert_int_equal(it_finish(p), 0);
    proc_conn_close(c);
    proc_listener_close(l);
    close(cr.go[0]);
    close(cr.go[1]);
}

/* ------------------------------------------- our sender's 8-byte length form */

#define BIG_LEN ((size_t)1 << 31) /* one past the 4-byte form's longest */

/* Reads the header of one message, which must be the 8-byte form of
 * BIG_LEN bytes, and its first MiB with the mark the parent put there, then
 * leaves: moving the whole 2 GiB would cost tens of seconds on a slow
 * machine, and the body goes out as any message's does. */
static int big_reader_main(void *arg)
{
    int fd = nt_raw_connect(arg);
    if (fd < 0 || nt_raw_client_handshake(fd, KEY, KEYLEN) < 0)
        return 2;
    unsigned char h[12];
    if (tu_read_full(fd, h, sizeof h, BOUND) != (ssize_t)sizeof h)
        return 3;
    uint64_t len = 0;
    for (int i = 4; i < 12; i++)
        len = len << 8 | h[i];
    if (memcmp(h, "\xff\xff\xff\xff", 4) != 0 || len != BIG_LEN)
        return 4;
    static unsigned char chunk[1 << 20];
    if (tu_read_full(fd, chunk, sizeof chunk, BOUND) != (ssize_t)sizeof chunk)
        return 5;
    return chunk[0] == 0x5a && chunk[1] == 0 ? 0 : 6;
}

/* A message above 2^31 - 1 bytes goes out in Python's 8-byte form (the
 * buffer is untouched memory but for its first byte). */
static void sender_uses_the_8_byte_form(void **state)
{
    (void)state;
    char address[96];
    proc_listener_t *l = listen_abstract(address, sizeof address, "big");
    proc_t *p = it_start(big_reader_main, address);
    proc_conn_t *c;
    assert_int_equal(proc_accept(l, &c, BOUND), 0);
    unsigned char *big = mmap(NULL, BIG_LEN, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    assert_true(big != MAP_FAILED);
    big[0] = 0x5a;
    assert_int_equal(proc_conn_send(c, big, BIG_LEN), -EPIPE); /* the reader left */
    assert_int_equal(it_finish(p), 0);
    munmap(big, BIG_LEN);
    proc_conn_close(c);
    proc_listener_close(l);
}

static void argument_errors(void **state)
{
    (void)state;
    static const char *bad[] = {"",
                                "unix:",
                                "unix:@",
                                "tcp:",
                                "tcp:127.0.0.1",
                                "tcp:127.0.0.1:",
                                "tcp:127.0.0.1:65536",
                                "tcp:127.0.0.1:1x",
                                "tcp::80",
                                "tcp:[::1]",
                                "tcp:[::1:80",
                                "tcp:[nonsense]:80",
                                "udp:1.2.3.4:5"};
    proc_conn_t *c;
    char long_path[160] = "unix:/"; /* longer than sun_path */
    memset(long_path + 6, 'a', sizeof long_path - 7);
    errno = 0;
    assert_null(proc_listen(long_path, KEY, KEYLEN));
    assert_int_equal(errno, EINVAL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        assert_null(proc_listen(bad[i], KEY, KEYLEN));
        assert_int_equal(errno, EINVAL);
        assert_int_equal(proc_connect(bad[i], KEY, KEYLEN, &c, 0), -EINVAL);
    }
    char a[96];
    nt_abstract(a, sizeof a, "args");
    errno = 0;
    assert_null(proc_listen(NULL, KEY, KEYLEN));
    assert_int_equal(errno, EINVAL);
    char big[257] = {0};
    assert_null(proc_listen(a, KEY, 0));
    assert_null(proc_listen(a, big, sizeof big));
    assert_int_equal(proc_connect(a, KEY, 0, &c, 0), -EINVAL);
    assert_int_equal(proc_connect(a, big, sizeof big, &c, 0), -EINVAL);
    assert_int_equal(proc_connect(NULL, KEY, KEYLEN, &c, 0), -EINVAL);
    assert_int_equal(proc_connect(a, KEY, KEYLEN, NULL, 0), -EINVAL);
    assert_int_equal(proc_connect(a, KEY, KEYLEN, &c, -2), -EINVAL);
    proc_listener_t *l = proc_listen(a, big, 256); /* 256 bytes is allowed */
    assert_non_null(l);
    assert_int_equal(proc_accept(NULL, &c, 0), -EINVAL);
    assert_int_equal(proc_accept(l, NULL, 0), -EINVAL);
    assert_int_equal(proc_accept(l, &c, -2), -EINVAL);
    assert_int_equal(proc_accept(l, &c, 0), -ETIMEDOUT);
    errno = 0;
    assert_null(proc_listener_address(NULL));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(proc_listener_fileno(NULL), -EINVAL);
    assert_int_equal(proc_listener_close(NULL), 0);
    proc_listener_close(l);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(argument_errors),
        cmocka_unit_test(every_family_round_trips),
        cmocka_unit_test(many_messages_in_a_row),
        cmocka_unit_test(message_of_64_mib),
        cmocka_unit_test(real_address_and_socket_file),
        cmocka_unit_test(poll_then_accept_at_once),
        cmocka_unit_test(wrong_key_is_refused_both_ways),
        cmocka_unit_test(default_key_is_the_authkey),
        cmocka_unit_test(connect_errors),
        cmocka_unit_test(crafted_frames),
        cmocka_unit_test(sender_uses_the_8_byte_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
