/* SPDX-License-Identifier: MIT */
/*
 * The process-object tests' fixture (tests/support/proc_fixture.c), for
 * test_proc_object.c: names as children report them, one fixed-size record
 * each, on their stdout (the one channel a child has in both of that
 * program's modes). Include after <cmocka.h>.
 */
#ifndef LIBPROC_PROC_FIXTURE_H
#define LIBPROC_PROC_FIXTURE_H

#define NAME_LEN 64 /* one record */

/* In a child: writes name (or, when it is NULL, "<NULL errno=E>") as one
 * record to stdout. */
void put_name(const char *name);

/* Reads the next record a child reported on fd (within bound_ms) and
 * asserts it is want. */
void expect_name(int fd, const char *want, int bound_ms);

/* Index K of a default name "Process-K", asserted to be one. */
int default_index(const char *name);

#endif /* LIBPROC_PROC_FIXTURE_H */
