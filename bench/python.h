/* SPDX-License-Identifier: MIT */
/*
 * The Python coprocess that serves the Python contenders of scenarios 7-12:
 * one python3 started once, one command per line, its own timing back; and
 * the start+join loop of scenarios 6 and 13, a python3 per batch.
 */
#ifndef PROC_BENCH_PYTHON_H
#define PROC_BENCH_PYTHON_H

#include <stdbool.h>
#include <stddef.h>

/* Starts the coprocess (once per run); false when Python cannot take part. */
bool python_start(void);
/* Ends it normally (it must exit with 0); nothing when it does not run. */
void python_stop(void);
/* Sends "cmd n" and returns the answer line in buf. */
void python_cmd(char *buf, size_t cap, const char *cmd, long n);
/* The answer's first number, which must be a positive time in ns. */
double python_ns(const char *cmd, long n);
/* INFO lines: for each row name of the scenario, python's median over
 * libproc's (what: the Python contender, as the line names it). */
void python_ratio_info(int scenario, const char *const *names, int n, const char *what);
/* The coprocess's Python version. */
const char *python_version(void);
/* Scenarios 6 and 13: a python3 in PATH (false: none), and a loop of ops
 * start+joins in a python3 of its own with the start method ctx (a string;
 * NULL: fork), timed by Python: ns per start+join. */
bool python_found(void);
double python_start_join(void *ctx, long ops);
/* The Python version that loop reported. */
const char *python_loop_version(void);
/* Notes that scenario what runs without its Python contender, and why. */
void python_skipped_note(const char *what);

#endif /* PROC_BENCH_PYTHON_H */
