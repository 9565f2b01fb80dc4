/* SPDX-License-Identifier: MIT */
/*
 * parallel_wc [DIR]: wc's line, word and byte counts of every regular file
 * under DIR (default: the current directory), counted by a pool of worker
 * processes, printed as `wc` prints them, then a total line.
 *
 * Python would write pool.imap_unordered(count, paths). Here every path is
 * one item of a stream (proc_pool_imap, unordered): an input of its own
 * length, an output of 24 bytes. The walk puts paths while the results of
 * earlier ones come back in the order they finish; put only waits when the
 * stream's window is full, and then this program prints results until it is
 * not. Words are counted as GNU wc counts them in the C locale: a word is a
 * run of printable characters that are not spaces.
 *
 * wc pads every number to the width of the total size of the files it was
 * given, so the walk (which learns every size) comes first.
 */
#define _XOPEN_SOURCE 700
#include <libproc/pool.h>
#include <libproc/proc.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct counts {
    uint64_t lines, words, bytes;
};

/* ------------------------------------------------------- in a worker process */

enum { SEP, WORD, OTHER }; /* what a byte does to a word */
static unsigned char kind[256];

static void kinds_init(void)
{
    for (int c = 0; c < 256; c++)
        kind[c] = isspace(c) ? SEP : isprint(c) ? WORD : OTHER;
}

/* The counts of one file; the item's status is 0, or the errno that stopped it. */
static int count_file(const void *in, size_t len, proc_reply_t *reply)
{
    char path[4096];
    if (len == 0 || len >= sizeof path)
        return ENAMETOOLONG;
    memcpy(path, in, len);
    path[len] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct counts c = {0};
    static unsigned char buf[1 << 16];
    int in_word = 0, err = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : 0;
            break;
        }
        c.bytes += (uint64_t)n;
        for (ssize_t i = 0; i < n; i++) {
            unsigned char k = kind[buf[i]];
            c.lines += buf[i] == '\n';
            c.words += k == WORD && !in_word;
            in_word = k == WORD ? 1 : k == SEP ? 0 : in_word;
        }
    }
    close(fd);
    if (err)
        return err;
    return proc_reply_write(reply, &c, sizeof c) == 0 ? 0 : ENOMEM;
}

/* ------------------------------------------------------------- in the parent */

static char **paths;
static size_t npaths, cap;
static uint64_t size_total;

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    if (npaths == cap) {
        cap = cap ? 2 * cap : 1024;
        char **p = realloc(paths, cap * sizeof *p);
        if (!p)
            return -1;
        paths = p;
    }
    if (!(paths[npaths] = strdup(path)))
        return -1;
    npaths++;
    size_total += (uint64_t)st->st_size;
    return 0;
}

static struct counts total;
static int width = 1, failures;

static void print_counts(const struct counts *c, const char *name)
{
    printf("%*" PRIu64 " %*" PRIu64 " %*" PRIu64 " %s\n", width, c->lines, width, c->words, width,
           c->bytes, name);
}

/* Takes one result and prints it; false when there is none left. */
static int print_next(proc_imap_t *m)
{
    proc_result_t r;
    int rc = proc_imap_next(m, &r, PROC_WAIT_FOREVER);
    if (rc < 0)
        return rc == -ENODATA ? 0 : rc;
    const char *name = paths[r.index];
    if (r.status != 0 || r.len != sizeof(struct counts)) {
        /* a positive status is the file's errno, a negative one the pool's */
        fprintf(stderr, "parallel_wc: %s: %s\n", name,
                strerror(r.status > 0   ? r.status
                         : r.status < 0 ? -r.status
                                        : EIO));
        failures++;
    } else {
        struct counts c;
        memcpy(&c, r.data, sizeof c);
        print_counts(&c, name);
        total.lines += c.lines;
        total.words += c.words;
        total.bytes += c.bytes;
    }
    free(r.data);
    return 1;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    kinds_init(); /* before the pool: every worker inherits the table */
    if (nftw(dir, collect, 64, FTW_PHYS) != 0) {
        fprintf(stderr, "parallel_wc: %s: cannot walk it\n", dir);
        return 1;
    }
    for (uint64_t t = size_total; t >= 10; t /= 10)
        width++;

    proc_pool_t *pool = proc_pool_new(NULL); /* one worker per CPU */
    proc_imap_t *m = pool ? proc_pool_imap(pool, count_file, false) : NULL;
    if (!m) {
        perror("parallel_wc: pool");
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < npaths && rc >= 0;) {
        rc = proc_imap_put(m, paths[i], strlen(paths[i]), 0);
        if (rc == 0)
            i++;
        else if (rc == -ETIMEDOUT) /* the window is full: print what is ready */
            rc = print_next(m);
    }
    if (rc >= 0)
        rc = proc_imap_done(m);
    while (rc >= 0 && (rc = print_next(m)) > 0) {
    }
    if (rc < 0)
        fprintf(stderr, "parallel_wc: %s\n", strerror(-rc));
    else if (npaths > 1)
        print_counts(&total, "total");
    proc_imap_free(m);
    proc_pool_close(pool);
    proc_pool_join(pool, PROC_WAIT_FOREVER);
    proc_pool_free(pool);
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    return rc < 0 || failures ? 1 : 0;
}
