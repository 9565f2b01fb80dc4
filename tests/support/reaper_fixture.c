/* SPDX-License-Identifier: MIT */
/* The reaper tests' fixture (reaper_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <unistd.h>

#include "reaper_fixture.h"
#include "testcheck.h"

struct blocker blocker_pipe(int fds[2], int code)
{
    make_pipe(fds);
    return (struct blocker){fds[0], fds[1], code};
}

int blocker_main(void *arg)
{
    struct blocker *b = arg;
    char c;
    alarm(CHILD_ALARM_S);
    if (b->wfd >= 0)
        close(b->wfd);
    (void)read_retry(b->rfd, &c, 1);
    return b->code;
}

/* Starts a blocker child. */
proc_t *start_blocker(struct blocker *b)
{
    proc_t *p = proc_new(blocker_main, b);
    assert_non_null(p);
    EQ(proc_start(p), 0);
    return p;
}
