/* SPDX-License-Identifier: MIT */
/*
 * The authentication of CPython's multiprocessing.connection, both halves,
 * so that a libproc end and a Python end (3.11 or 3.12+) accept each other:
 *
 *   listener                                   client
 *   "#CHALLENGE#" + M        ---------->       R = mac(key, M)
 *   check R                  <----------       R
 *   "#WELCOME#" / "#FAILURE#" --------->
 *   then the same with the roles swapped: the client challenges.
 *
 * Our challenges are "{sha256}" + 40 random bytes (Python 3.12's). The MAC
 * covers the whole M, prefix included, so a peer cannot swap in a weaker
 * digest for one we named. A response is "{name}" + HMAC-name(key, M); a
 * 16-byte response without a prefix is Python 3.11's raw HMAC-MD5, which
 * 3.12 still accepts and so do we. Answering, a challenge of 20 bytes (3.11's
 * length) without a prefix gets the raw HMAC-MD5, a prefixed one the
 * digest it names. Every message of the handshake is at most 256 bytes:
 * nothing a peer says before it has proved the key is allocated.
 */
#include "conn.h"
#include "sys.h"

#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define AUTH_MSG_MAX 256 /* Python's recv_bytes(256) during the handshake */
#define AUTH_NONCE 40    /* random bytes of our challenge (Python 3.12's MESSAGE_LENGTH) */
#define AUTH_LEGACY_CHALLENGE 20
#define AUTH_LEGACY_RESPONSE 16 /* a raw HMAC-MD5 */
#define AUTH_NAME_MAX 8         /* the longest digest name Python allows, "sha3_384" */

static const char challenge_tag[] = "#CHALLENGE#";
static const char welcome[] = "#WELCOME#";
static const char failure[] = "#FAILURE#";
static const char our_prefix[] = "{sha256}";

/* The digests Python's handshake allows, by the names it writes. */
static const EVP_MD *digest_by_name(const unsigned char *name, size_t len)
{
    static const struct {
        const char *name;
        const EVP_MD *(*md)(void);
    } known[] = {{"md5", EVP_md5},
                 {"sha256", EVP_sha256},
                 {"sha384", EVP_sha384},
                 {"sha3_256", EVP_sha3_256},
                 {"sha3_384", EVP_sha3_384}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i].name) == len && memcmp(known[i].name, name, len) == 0)
            return known[i].md();
    return NULL;
}

/*
 * Splits a challenge or response into its digest and payload, as Python's
 * _get_digest_name_and_payload: a legacy length means MD5 and no prefix
 * (*legacy), otherwise "{name}" must lead. NULL when neither.
 */
static const EVP_MD *split_digest(const unsigned char *msg, size_t len, size_t *payload_at,
                                  bool *legacy)
{
    *legacy = len == AUTH_LEGACY_CHALLENGE || len == AUTH_LEGACY_RESPONSE;
    *payload_at = 0;
    if (*legacy)
        return EVP_md5();
    if (len < 2 || msg[0] != '{')
        return NULL;
    const unsigned char *end =
        memchr(msg + 1, '}', len - 1 < AUTH_NAME_MAX + 1 ? len - 1 : AUTH_NAME_MAX + 1);
    if (!end)
        return NULL;
    *payload_at = (size_t)(end - msg) + 1;
    return digest_by_name(msg + 1, (size_t)(end - msg) - 1);
}

/* HMAC of msg under key with md into out (EVP_MAX_MD_SIZE bytes): its length, or 0. */
static unsigned mac(const EVP_MD *md, const unsigned char *key, size_t keylen,
                    const unsigned char *msg, size_t len, unsigned char *out)
{
    unsigned n = 0;
    if (!HMAC(md, key, (int)keylen, msg, len, out, &n))
        return 0;
    return n;
}

static ssize_t recv_small(proc_conn_t *c, unsigned char *buf, const struct proc__deadline *d)
{
    ssize_t n = proc__stream_recv(c, buf, AUTH_MSG_MAX, AUTH_MSG_MAX, d);
    if (n == -EMSGSIZE)
        n = -EPROTO; /* cannot happen: max == cap */
    return n;
}

/* Checks a response to our challenge m: true when it proves the key. */
static bool response_ok(const unsigned char *key, size_t keylen, const unsigned char *m,
                        size_t mlen, const unsigned char *resp, size_t rlen)
{
    size_t at;
    bool legacy;
    const EVP_MD *md = split_digest(resp, rlen, &at, &legacy);
    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned n = md ? mac(md, key, keylen, m, mlen, want) : 0;
    if (n == 0 || rlen - at != n)
        return false;
    return CRYPTO_memcmp(want, resp + at, n) == 0;
}

/* Sends a challenge and checks the answer; the peer hears whether it passed. */
static int deliver(proc_conn_t *c, const unsigned char *key, size_t keylen,
                   const struct proc__deadline *d)
{
    unsigned char msg[sizeof challenge_tag - 1 + sizeof our_prefix - 1 + AUTH_NONCE];
    size_t tag = sizeof challenge_tag - 1, pre = sizeof our_prefix - 1;
    memcpy(msg, challenge_tag, tag);
    memcpy(msg + tag, our_prefix, pre);
    int r = proc__sys_random(msg + tag + pre, AUTH_NONCE);
    if (r == 0)
        r = proc__stream_send(c, msg, sizeof msg);
    if (r < 0)
        return r;
    unsigned char resp[AUTH_MSG_MAX];
    ssize_t n = recv_small(c, resp, d);
    if (n < 0)
        return (int)n;
    bool ok = response_ok(key, keylen, msg + tag, sizeof msg - tag, resp, (size_t)n);
    const char *verdict = ok ? welcome : failure;
    r = proc__stream_send(c, verdict, strlen(verdict));
    return !ok ? -EACCES : r;
}

/* Answers the peer's challenge and waits for its verdict. */
static int answer(proc_conn_t *c, const unsigned char *key, size_t keylen,
                  const struct proc__deadline *d)
{
    unsigned char msg[AUTH_MSG_MAX];
    ssize_t n = recv_small(c, msg, d);
    if (n < 0)
        return (int)n;
    size_t tag = sizeof challenge_tag - 1;
    if ((size_t)n < tag + AUTH_LEGACY_CHALLENGE || memcmp(msg, challenge_tag, tag) != 0)
        return -EACCES; /* not a challenge: the peer is not a multiprocessing listener */
    const unsigned char *m = msg + tag;
    size_t mlen = (size_t)n - tag, at;
    bool legacy;
    const EVP_MD *md = split_digest(m, mlen, &at, &legacy);
    unsigned char resp[AUTH_NAME_MAX + 2 + EVP_MAX_MD_SIZE];
    size_t pre = legacy ? 0 : at;
    unsigned len = md ? mac(md, key, keylen, m, mlen, resp + pre) : 0;
    if (len == 0)
        return -EACCES;   /* a digest we do not know */
    memcpy(resp, m, pre); /* "{name}" as the challenge wrote it */
    int r = proc__stream_send(c, resp, pre + len);
    n = r == 0 ? recv_small(c, msg, d) : r;
    if (n < 0)
        return (int)n;
    bool welcomed = (size_t)n == strlen(welcome) && memcmp(msg, welcome, (size_t)n) == 0;
    return welcomed ? 0 : -EACCES;
}

int proc__auth_server(proc_conn_t *c, const unsigned char *key, size_t keylen,
                      const struct proc__deadline *d)
{
    int r = deliver(c, key, keylen, d);
    return r == 0 ? answer(c, key, keylen, d) : r;
}

int proc__auth_client(proc_conn_t *c, const unsigned char *key, size_t keylen,
                      const struct proc__deadline *d)
{
    int r = answer(c, key, keylen, d);
    return r == 0 ? deliver(c, key, keylen, d) : r;
}
