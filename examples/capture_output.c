/* SPDX-License-Identifier: MIT */
/*
 * Capturing a program's output, and feeding a child its input.
 *
 * PROC_STDIO_PIPE gives the parent the other end of a pipe (proc_stdio_fd);
 * proc_stdio_close on the stdin pipe is the child's EOF. Works the same for a
 * program (exec mode) and for a function (callback mode).
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/ipc.h>
#include <libproc/proc.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what, int rc)
{
    fprintf(stderr, "capture_output: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

/* Reads fd to EOF into buf (NUL-terminated); returns the length or -errno. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

/* Callback mode: counts the words on stdin and reports on stdout. */
static int count_words(void *arg)
{
    (void)arg;
    int words = 0, c, in_word = 0;
    while ((c = getchar()) != EOF) {
        if (isspace(c))
            in_word = 0;
        else if (!in_word++)
            words++;
    }
    printf("%d words\n", words);
    return 0;
}

int main(void)
{
    char out[4096], err[256];
    int rc;

    /* 1. A program's stdout and stderr, separately. */
    const char *argv[] = {"sh", "-c", "uname -s; echo 'a warning' >&2; exit 3", NULL};
    proc_t *p = proc_new_exec(argv);
    if (!p)
        return fail("proc_new_exec", -errno);
    if ((rc = proc_set_stdio(p, 1, PROC_STDIO_PIPE)) < 0 ||
        (rc = proc_set_stdio(p, 2, PROC_STDIO_PIPE)) < 0)
        return fail("proc_set_stdio", rc);
    if ((rc = proc_start(p)) < 0)
        return fail("proc_start", rc);
    ssize_t n_out = read_all(proc_stdio_fd(p, 1), out, sizeof out);
    ssize_t n_err = read_all(proc_stdio_fd(p, 2), err, sizeof err);
    if (n_out < 0 || n_err < 0)
        return fail("read", n_out < 0 ? (int)n_out : (int)n_err);
    if ((rc = proc_join(p, PROC_WAIT_FOREVER)) < 0)
        return fail("proc_join", rc);
    printf("sh wrote %zd bytes to stdout: %s", n_out, out);
    printf("sh wrote %zd bytes to stderr: %s", n_err, err);
    printf("sh exited with %d\n", proc_exitcode(p));
    if (proc_exitcode(p) != 3 || strcmp(err, "a warning\n") != 0)
        return 1;
    proc_close(p);

    /* 2. A function fed through stdin, its answer read from stdout. */
    p = proc_new(count_words, NULL);
    if (!p)
        return fail("proc_new", -errno);
    if ((rc = proc_set_stdio(p, 0, PROC_STDIO_PIPE)) < 0 ||
        (rc = proc_set_stdio(p, 1, PROC_STDIO_PIPE)) < 0)
        return fail("proc_set_stdio", rc);
    if ((rc = proc_start(p)) < 0)
        return fail("proc_start", rc);
    const char *text = "the quick brown fox\njumps over the lazy dog\n";
    if (write(proc_stdio_fd(p, 0), text, strlen(text)) != (ssize_t)strlen(text))
        return fail("write", -errno);
    proc_stdio_close(p, 0); /* EOF: the child's getchar() returns EOF */
    if ((n_out = read_all(proc_stdio_fd(p, 1), out, sizeof out)) < 0)
        return fail("read", (int)n_out);
    if ((rc = proc_join(p, PROC_WAIT_FOREVER)) < 0)
        return fail("proc_join", rc);
    printf("count_words answered: %s", out);
    proc_close(p);
    return strcmp(out, "9 words\n") == 0 ? 0 : 1;
}
