/* SPDX-License-Identifier: MIT */
/* The process-object tests' fixture (proc_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>

#include "proc_fixture.h"
#include "testutil.h"

void put_name(const char *name)
{
    char rec[NAME_LEN] = {0};
    if (name)
        snprintf(rec, sizeof rec, "%s", name);
    else
        snprintf(rec, sizeof rec, "<NULL errno=%d>", errno);
    (void)tu_write_full(1, rec, sizeof rec);
}

void expect_name(int fd, const char *want, int bound_ms)
{
    char got[NAME_LEN];
    ssize_t n = tu_read_full(fd, got, NAME_LEN, bound_ms);
    assert_int_equal(n, NAME_LEN);
    got[NAME_LEN - 1] = '\0';
    assert_string_equal(got, want);
}

int default_index(const char *name)
{
    int k = -1;
    char tail;
    assert_non_null(name);
    assert_int_equal(sscanf(name, "Process-%d%c", &k, &tail), 1);
    assert_true(k >= 1);
    return k;
}
