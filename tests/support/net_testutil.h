/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the tests of authenticated connections (test_conn_*.c): peers
 * written by hand, byte by byte, in the wire format of CPython's
 * multiprocessing.connection, so that a test can be the honest client, a
 * hostile one, or a sender of crafted frames. Every wait is bounded.
 */
#ifndef LIBPROC_TEST_NET_TESTUTIL_H
#define LIBPROC_TEST_NET_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* "unix:@libproc-test-<pid>-<tag>-<n>": an abstract name no other run uses. */
void nt_abstract(char *buf, size_t cap, const char *tag);

/* A plain stream socket connected to a proc_listen() address, no handshake; -1 on failure. */
int nt_raw_connect(const char *address);

/* Sends one frame: the 4-byte big-endian length and the bytes. 0 or -1. */
int nt_send_frame(int fd, const void *p, size_t n);

/* Sends the 8-byte length form (-1, then the length) and the bytes. 0 or -1. */
int nt_send_frame_long(int fd, const void *p, uint64_t n);

/* Receives one frame of at most cap bytes within timeout_ms: its length, or -1. */
ssize_t nt_recv_frame(int fd, void *buf, size_t cap, int timeout_ms);

/* Receives one frame (within 10 s): whether it is exactly want, e.g. "#WELCOME#". */
bool nt_recv_is(int fd, const char *want);

/* What Python answers to challenge m (after "#CHALLENGE#"): its length in out. */
size_t nt_response(const void *key, size_t keylen, const unsigned char *m, size_t n,
                   unsigned char *out);

/* HMAC-digest (Python's name: md5, sha256, sha384, sha3_256, ...) of m under key; its length, 0 if
 * unknown. */
size_t nt_mac(const char *digest, const void *key, size_t keylen, const void *m, size_t n,
              unsigned char *out);

/* Reads the listener's challenge from fd and computes (does not send) the
 * right answer into resp (256 bytes): its length, or 0 when no challenge came. */
size_t nt_answer(int fd, const void *key, size_t keylen, unsigned char *resp);

/* A valid challenge of our own for the peer ("#CHALLENGE#{sha256}" + 40 bytes). */
size_t nt_challenge(unsigned char *out);

/* The client's whole handshake by hand on fd with key: 0, or -1 when refused or broken. */
int nt_raw_client_handshake(int fd, const void *key, size_t keylen);

/* The version of a Python interpreter as major * 100 + minor (311), or -1. */
int nt_python_version(const char *python);

/*
 * A Python interpreter of at least (min) and below (below) (e.g. 312, 0
 * for no upper bound): python3 on PATH, python3.N on PATH, or one of
 * pyenv's versions ($PYENV_ROOT or ~/.pyenv). Copies its path to out and
 * returns true, or false (out says what was looked for).
 */
bool nt_find_python(int min, int below, char *out, size_t cap);

#endif /* LIBPROC_TEST_NET_TESTUTIL_H */
