/* SPDX-License-Identifier: MIT */
/*
 * What p.authkey is for: a connection between two processes, here over
 * TCP, is made only when both hold the same key (Python's
 * multiprocessing.connection.Listener and Client).
 *
 * Run without arguments, it is the whole demo: a listener, a client with
 * the key whose messages come back upper-cased, and a client with another
 * key that is turned away. With arguments it is one side, to pair with
 * Python (examples/authenticated_echo.py speaks the same protocol):
 *
 *   authenticated_echo listen ADDRESS KEY      serve one client, print "ready ADDRESS"
 *   authenticated_echo connect ADDRESS KEY MSG...  send each MSG, print the replies
 *
 * ADDRESS is "tcp:HOST:PORT", "unix:/path" or "unix:@name".
 */
#include <libproc/ipc.h>
#include <libproc/proc.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define TIMEOUT_MS 60000 /* a bound on a hang, generous for loaded machines */

/* Serves one connection: each message comes back upper-cased, until "bye". */
static int serve(proc_listener_t *l)
{
    proc_conn_t *c;
    int r = proc_accept(l, &c, TIMEOUT_MS);
    if (r < 0) {
        printf("listener: a client was turned away: %s\n", strerror(-r));
        return r;
    }
    char buf[256];
    ssize_t n;
    while ((n = proc_conn_recv(c, buf, sizeof buf, TIMEOUT_MS)) >= 0) {
        printf("listener: got \"%.*s\"\n", (int)n, buf);
        if (n == 3 && memcmp(buf, "bye", 3) == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            buf[i] = (char)toupper((unsigned char)buf[i]);
        proc_conn_send(c, buf, (size_t)n);
    }
    proc_conn_close(c);
    return 0;
}

/* Connects with key, sends each message and prints the reply; then "bye". */
static int client(const char *address, const char *key, char *const msgs[], int n)
{
    proc_conn_t *c;
    int r = proc_connect(address, key, strlen(key), &c, TIMEOUT_MS);
    if (r < 0) {
        printf("client with key \"%s\": refused: %s\n", key, strerror(-r));
        return 1;
    }
    for (int i = 0; i < n; i++) {
        char reply[256];
        ssize_t got = proc_conn_send(c, msgs[i], strlen(msgs[i])) == 0
                          ? proc_conn_recv(c, reply, sizeof reply, TIMEOUT_MS)
                          : -1;
        if (got < 0)
            return 1;
        printf("client: sent \"%s\", got \"%.*s\"\n", msgs[i], (int)got, reply);
    }
    proc_conn_send(c, "bye", 3);
    proc_conn_close(c);
    return 0;
}

struct client_args {
    const char *address, *key;
};

static int client_main(void *arg)
{
    const struct client_args *a = arg;
    char *msgs[] = {"hello", "authenticated world"};
    return client(a->address, a->key, msgs, 2);
}

static int demo(void)
{
    proc_listener_t *l = proc_listen("tcp:127.0.0.1:0", "our secret", 10);
    if (!l) {
        perror("proc_listen");
        return 1;
    }
    printf("listener: on %s\n", proc_listener_address(l));
    struct client_args good = {proc_listener_address(l), "our secret"};
    struct client_args bad = {proc_listener_address(l), "a guess"};
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        proc_t *p = proc_new(client_main, i == 0 ? &good : &bad);
        if (!p || proc_start(p) < 0) {
            perror("starting a client");
            return 1;
        }
        int served = serve(l);
        proc_join(p, PROC_WAIT_FOREVER);
        printf("client %d exited with %d\n", i + 1, proc_exitcode(p));
        /* The right key gets through; the wrong one is refused on both sides. */
        ok &= i == 0 ? served == 0 && proc_exitcode(p) == 0 : served < 0 && proc_exitcode(p) == 1;
        proc_close(p);
    }
    proc_listener_close(l);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 1)
        return demo();
    if (argc == 4 && strcmp(argv[1], "listen") == 0) {
        proc_listener_t *l = proc_listen(argv[2], argv[3], strlen(argv[3]));
        if (!l) {
            perror("proc_listen");
            return 1;
        }
        printf("ready %s\n", proc_listener_address(l));
        fflush(stdout);
        int r = serve(l);
        proc_listener_close(l);
        return r == 0 ? 0 : 1;
    }
    if (argc >= 5 && strcmp(argv[1], "connect") == 0)
        return client(argv[2], argv[3], argv + 4, argc - 4);
    fprintf(stderr, "usage: %s [listen ADDRESS KEY | connect ADDRESS KEY MSG...]\n", argv[0]);
    return 2;
}
