/* SPDX-License-Identifier: MIT */
#include "net_testutil.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

void nt_abstract(char *buf, size_t cap, const char *tag)
{
    static int n;
    snprintf(buf, cap, "unix:@libproc-test-%d-%s-%d", (int)getpid(), tag, n++);
}

static int connect_tcp(const char *rest)
{
    char host[64];
    const char *colon = strrchr(rest, ':');
    if (!colon || (size_t)(colon - rest) >= sizeof host)
        return -1;
    memcpy(host, rest, (size_t)(colon - rest));
    host[colon - rest] = '\0';
    int port = atoi(colon + 1);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    bool v6 = host[0] == '[';
    if (v6) {
        host[strlen(host) - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &in6.sin6_addr) != 1)
            return -1;
    } else if (inet_pton(AF_INET, host, &in.sin_addr) != 1) {
        return -1;
    }
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const struct sockaddr *sa = v6 ? (const struct sockaddr *)&in6 : (const struct sockaddr *)&in;
    if (fd >= 0 && connect(fd, sa, v6 ? sizeof in6 : sizeof in) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int nt_raw_connect(const char *address)
{
    if (strncmp(address, "tcp:", 4) == 0)
        return connect_tcp(address + 4);
    if (strncmp(address, "unix:", 5) != 0)
        return -1;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    const char *path = address + 5;
    size_t n = strlen(path);
    if (n >= sizeof un.sun_path)
        return -1;
    memcpy(un.sun_path, path, n);
    if (path[0] == '@')
        un.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] != '@'));
    if (fd >= 0 && connect(fd, (struct sockaddr *)&un, len) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

int nt_send_frame(int fd, const void *p, size_t n)
{
    unsigned char h[4];
    put_be(h, n, 4);
    return tu_write_full(fd, h, 4) == 0 && tu_write_full(fd, p, n) == 0 ? 0 : -1;
}

int nt_send_frame_long(int fd, const void *p, uint64_t n)
{
    unsigned char h[12];
    memset(h, 0xff, 4);
    put_be(h + 4, n, 8);
    return tu_write_full(fd, h, 12) == 0 && tu_write_full(fd, p, (size_t)n) == 0 ? 0 : -1;
}

ssize_t nt_recv_frame(int fd, void *buf, size_t cap, int timeout_ms)
{
    unsigned char h[4];
    if (tu_read_full(fd, h, 4, timeout_ms) != 4)
        return -1;
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (n > cap || tu_read_full(fd, buf, n, timeout_ms) != (ssize_t)n)
        return -1;
    return (ssize_t)n;
}

bool nt_recv_is(int fd, const char *want)
{
    char msg[256];
    ssize_t n = nt_recv_frame(fd, msg, sizeof msg, 10000);
    return n == (ssize_t)strlen(want) && memcmp(msg, want, (size_t)n) == 0;
}

size_t nt_response(const void *key, size_t keylen, const unsigned char *m, size_t n,
                   unsigned char *out)
{
    unsigned len = 0;
    if (n == 20) { /* Python 3.11's challenge: a raw HMAC-MD5 */
        HMAC(EVP_md5(), key, (int)keylen, m, n, out, &len);
        return len;
    }
    memcpy(out, "{sha256}", 8);
    HMAC(EVP_sha256(), key, (int)keylen, m, n, out + 8, &len);
    return 8 + len;
}

size_t nt_mac(const char *digest, const void *key, size_t keylen, const void *m, size_t n,
              unsigned char *out)
{
    char name[32];
    snprintf(name, sizeof name, "%s", digest);
    for (char *p = name; *p; p++)
        if (*p == '_')
            *p = '-'; /* OpenSSL's spelling: sha3-256 */
    const EVP_MD *md = EVP_get_digestbyname(name);
    unsigned len = 0;
    if (!md || !HMAC(md, key, (int)keylen, m, n, out, &len))
        return 0;
    return len;
}

size_t nt_challenge(unsigned char *out)
{
    memcpy(out, "#CHALLENGE#{sha256}", 19);
    RAND_bytes(out + 19, 40);
    return 59;
}

size_t nt_answer(int fd, const void *key, size_t keylen, unsigned char *resp)
{
    unsigned char msg[256];
    ssize_t n = nt_recv_frame(fd, msg, sizeof msg, 10000);
    if (n < 11 || memcmp(msg, "#CHALLENGE#", 11) != 0)
        return 0;
    return nt_response(key, keylen, msg + 11, (size_t)n - 11, resp);
}

int nt_raw_client_handshake(int fd, const void *key, size_t keylen)
{
    unsigned char msg[256], resp[256];
    ssize_t n;
    size_t r = nt_answer(fd, key, keylen, resp);
    if (r == 0 || nt_send_frame(fd, resp, r) < 0 || !nt_recv_is(fd, "#WELCOME#"))
        return -1;
    size_t c = nt_challenge(msg);
    if (nt_send_frame(fd, msg, c) < 0)
        return -1;
    n = nt_recv_frame(fd, resp, sizeof resp, 10000);
    unsigned char want[128];
    size_t w = nt_response(key, keylen, msg + 11, c - 11, want);
    if (n != (ssize_t)w || memcmp(resp, want, w) != 0)
        return -1;
    return nt_send_frame(fd, "#WELCOME#", 9);
}

int nt_python_version(const char *python)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import sys; print(sys.version_info[0] * 100 + sys.version_info[1])' "
             "2>/dev/null",
             python);
    FILE *f = popen(cmd, "r");
    int v = -1;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = -1;
        pclose(f);
    }
    return v;
}

static bool fits(const char *python, int min, int below)
{
    int v = nt_python_version(python);
    return v >= min && (below == 0 || v < below);
}

/* python3 and python3.N on PATH, by the shell's lookup. */
static bool on_path(const char *name, char *out, size_t cap)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s 2>/dev/null", name);
    FILE *f = popen(cmd, "r");
    bool ok = f && fgets(out, (int)cap, f) != NULL;
    if (f)
        pclose(f);
    if (ok)
        out[strcspn(out, "\n")] = '\0';
    return ok && out[0] == '/';
}

bool nt_find_python(int min, int below, char *out, size_t cap)
{
    char name[32];
    if (on_path("python3", out, cap) && fits(out, min, below))
        return true;
    for (int minor = min % 100; minor < 20 && (below == 0 || 300 + minor < below); minor++) {
        snprintf(name, sizeof name, "python3.%d", minor);
        if (on_path(name, out, cap) && fits(out, min, below))
            return true;
    }
    const char *root = getenv("PYENV_ROOT"), *home = getenv("HOME");
    char pattern[4200];
    if (root)
        snprintf(pattern, sizeof pattern, "%s/versions/3.*/bin/python3", root);
    else
        snprintf(pattern, sizeof pattern, "%s/.pyenv/versions/3.*/bin/python3",
                 home ? home : "/root");
    glob_t g;
    bool found = false;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !found; i++) {
            if (fits(g.gl_pathv[i], min, below)) {
                snprintf(out, cap, "%s", g.gl_pathv[i]);
                found = true;
            }
        }
        globfree(&g);
    }
    if (!found)
        snprintf(out, cap, "python3 >= %d.%d%s on PATH or under pyenv", min / 100, min % 100,
                 below ? " (below the next version)" : "");
    return found;
}
