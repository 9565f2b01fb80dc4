/* SPDX-License-Identifier: MIT */
/*
 * The handshake's digests (src/conn_auth.c), beyond what the two Python
 * generations send: a listener accepts a response in any digest Python's
 * handshake allows (md5, sha256, sha384, sha3_256, sha3_384, with the prefix;
 * md5 also bare, as Python 3.11 sends it) and refuses another (sha1) or a MAC
 * of one digest under another's name; a client answers a challenge in the
 * digest it names, a bare 20-byte one in raw MD5, and refuses a digest it
 * does not know or a first message that is not a challenge. The peer facing
 * libproc is written by hand (tests/support/net_testutil.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libproc/ipc.h>
#include <libproc/proc.h>

#include "ipc_testutil.h"
#include "net_testutil.h"
#include "testutil.h"

#define KEY "handshake key"
#define KEYLEN (sizeof KEY - 1)
#define BOUND IT_BOUND_MS

/* ------------------------------------------------ libproc as the listener */

struct answer {
    char address[96];
    const char *prefix; /* "{name}" written before the MAC, or "" */
    const char *digest; /* the MAC's digest */
};

/* Answers the listener's challenge as told; exit 0 when welcomed, 1 when refused. */
static int answer_main(void *arg)
{
    const struct answer *a = arg;
    int fd = nt_raw_connect(a->address);
    unsigned char msg[256], resp[256];
    ssize_t n = nt_recv_frame(fd, msg, sizeof msg, BOUND);
    if (n != 59 || memcmp(msg, "#CHALLENGE#{sha256}", 19) != 0)
        return 2; /* our challenges are Python 3.12's */
    size_t pre = strlen(a->prefix);
    memcpy(resp, a->prefix, pre);
    size_t mac = nt_mac(a->digest, KEY, KEYLEN, msg + 11, (size_t)n - 11, resp + pre);
    if (mac == 0 || nt_send_frame(fd, resp, pre + mac) < 0)
        return 3;
    n = nt_recv_frame(fd, msg, sizeof msg, BOUND);
    if (n == 9 && memcmp(msg, "#FAILURE#", 9) == 0)
        return 1;
    if (n != 9 || memcmp(msg, "#WELCOME#", 9) != 0)
        return 4;
    /* The second half: our challenge, the listener's answer. */
    size_t c = nt_challenge(msg);
    if (nt_send_frame(fd, msg, c) < 0 || (n = nt_recv_frame(fd, resp, sizeof resp, BOUND)) < 0)
        return 5;
    unsigned char want[128];
    size_t w = nt_response(KEY, KEYLEN, msg + 11, c - 11, want);
    if ((size_t)n != w || memcmp(resp, want, w) != 0)
        return 6;
    return nt_send_frame(fd, "#WELCOME#", 9) == 0 ? 0 : 7;
}

static int try_answer(const char *prefix, const char *digest)
{
    struct answer a = {.prefix = prefix, .digest = digest};
    nt_abstract(a.address, sizeof a.address, "answer");
    proc_listener_t *l = proc_listen(a.address, KEY, KEYLEN);
    assert_non_null(l);
    proc_t *p = it_start(answer_main, &a);
    proc_conn_t *c = NULL;
    int r = proc_accept(l, &c, BOUND);
    proc_conn_close(c);
    int code = it_finish(p);
    assert_int_equal(code, r == 0 ? 0 : 1); /* both sides agree */
    proc_listener_close(l);
    return r;
}

static void listener_accepts_every_allowed_digest(void **state)
{
    (void)state;
    static const char *const names[] = {"md5", "sha256", "sha384", "sha3_256", "sha3_384"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "{%s}", names[i]);
        assert_int_equal(try_answer(prefix, names[i]), 0);
    }
    assert_int_equal(try_answer("", "md5"), 0); /* Python 3.11: 16 bytes, no prefix */
}

static void listener_refuses_other_digests(void **state)
{
    (void)state;
    assert_int_equal(try_answer("{sha1}", "sha1"), -EACCES);       /* not allowed */
    assert_int_equal(try_answer("{sha384}", "sha256"), -EACCES);   /* a MAC under another name */
    assert_int_equal(try_answer("{sha256}", "sha3_256"), -EACCES); /* same length, other digest */
    assert_int_equal(try_answer("", "sha256"), -EACCES);           /* 32 bytes without a prefix */
}

/* ------------------------------------------------- libproc as the client */

static int connect_main(void *arg)
{
    proc_conn_t *c;
    int r = proc_connect(arg, KEY, KEYLEN, &c, BOUND);
    if (r == 0)
        proc_conn_close(c);
    return r == 0 ? 0 : r == -EACCES ? 1 : 2;
}

/* A listening socket of our own, and the address of it. */
static int raw_listener(char *address, size_t cap)
{
    nt_abstract(address, cap, "raw");
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(address + 6);
    memcpy(un.sun_path + 1, address + 6, n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&un,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)),
                     0);
    assert_int_equal(listen(fd, 4), 0);
    return fd;
}

/* Sends challenge (after "#CHALLENGE#") to a proc_connect() in a child; returns
 * the child's answer in resp (its length), and finishes the handshake when
 * the answer is expected. */
static ssize_t challenge_client(const void *challenge, size_t n, unsigned char *resp,
                                const unsigned char *expected, size_t elen, int *code)
{
    char address[96];
    int lfd = raw_listener(address, sizeof address);
    proc_t *p = it_start(connect_main, address);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    unsigned char msg[256];
    memcpy(msg, "#CHALLENGE#", 11);
    memcpy(msg + 11, challenge, n);
    assert_int_equal(nt_send_frame(fd, msg, 11 + n), 0);
    ssize_t r = nt_recv_frame(fd, resp, 256, BOUND); /* -1 when it hung up */
    if (r == (ssize_t)elen && memcmp(resp, expected, elen) == 0) {
        assert_int_equal(nt_send_frame(fd, "#WELCOME#", 9), 0);
        ssize_t m = nt_recv_frame(fd, msg, sizeof msg, BOUND); /* its challenge */
        assert_true(m > 11);
        unsigned char answer[128];
        size_t a = nt_response(KEY, KEYLEN, msg + 11, (size_t)m - 11, answer);
        assert_int_equal(nt_send_frame(fd, answer, a), 0);
        assert_int_equal(nt_recv_frame(fd, msg, sizeof msg, BOUND), 9);
    }
    close(fd);
    close(lfd);
    *code = it_finish(p);
    return r;
}

static void client_answers_in_the_named_digest(void **state)
{
    (void)state;
    unsigned char legacy[20], modern[52], resp[256], want[128];
    memset(legacy, 0x5a, sizeof legacy);
    int code;
    size_t w = nt_mac("md5", KEY, KEYLEN, legacy, sizeof legacy, want); /* raw, 16 bytes */
    assert_int_equal(challenge_client(legacy, sizeof legacy, resp, want, w, &code), 16);
    assert_int_equal(code, 0);

    memcpy(modern, "{sha3_384}", 10);
    memset(modern + 10, 0xa5, 42);
    memcpy(want, "{sha3_384}", 10);
    w = 10 + nt_mac("sha3_384", KEY, KEYLEN, modern, sizeof modern, want + 10);
    assert_int_equal(challenge_client(modern, sizeof modern, resp, want, w, &code), (ssize_t)w);
    assert_int_equal(code, 0);
}

static void client_refuses_what_it_cannot_answer(void **state)
{
    (void)state;
    unsigned char sha1[46], resp[256];
    memcpy(sha1, "{sha1}", 6);
    memset(sha1 + 6, 1, 40);
    int code;
    assert_int_equal(challenge_client(sha1, sizeof sha1, resp, NULL, 0, &code), -1); /* hung up */
    assert_int_equal(code, 1);                                                       /* -EACCES */
    unsigned char short_one[10] = {0};
    assert_int_equal(challenge_client(short_one, sizeof short_one, resp, NULL, 0, &code), -1);
    assert_int_equal(code, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(listener_accepts_every_allowed_digest),
        cmocka_unit_test(listener_refuses_other_digests),
        cmocka_unit_test(client_answers_in_the_named_digest),
        cmocka_unit_test(client_refuses_what_it_cannot_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
