/* SPDX-License-Identifier: MIT */
/*
 * The machine a run came from (kernel, CPU, compiler, build, libproc
 * version, commit, date), so that a table or CSV read later says where its
 * numbers were taken. Printed above the table and as the CSV's leading
 * '#' lines.
 */
#ifndef PROC_BENCH_MACHINE_H
#define PROC_BENCH_MACHINE_H

#include <stdio.h>

/* Takes the record (at the start of the run: the date is the run's start). */
void machine_collect(int argc, char **argv);

/* One "<prefix>key: value" line per field. */
void machine_write(FILE *f, const char *prefix);

#endif /* PROC_BENCH_MACHINE_H */
