/* SPDX-License-Identifier: MIT */
/* The synchronization tests' fixture (sync_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "ipc_testutil.h"
#include "sync_fixture.h"

void sync_ctx_init(struct sync_ctx *c)
{
    memset(c, 0, sizeof *c);
    assert_int_equal(tu_gate_init(&c->gate), 0);
    assert_int_equal(tu_pipe(c->report), 0);
}

void sync_ctx_destroy(struct sync_ctx *c)
{
    tu_gate_destroy(&c->gate);
    close(c->report[0]);
    close(c->report[1]);
}

void sync_report(struct sync_ctx *c, char what)
{
    (void)tu_write_full(c->report[1], &what, 1);
}

char sync_await(struct sync_ctx *c)
{
    char what = 0;
    assert_int_equal(tu_read_full(c->report[0], &what, 1, IT_BOUND_MS), 1);
    return what;
}
