/* SPDX-License-Identifier: MIT */
/*
 * The pass/fail targets, kept as data in a text file (bench/targets.txt by
 * default, --targets FILE otherwise) rather than in code: which rows each
 * one applies to, what is compared with what, and why. The format is in
 * bench/README.md and at the top of targets.txt.
 */
#ifndef PROC_BENCH_TARGETS_H
#define PROC_BENCH_TARGETS_H

#include "harness.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * Reads and checks the file before anything runs; a syntax error exits 2.
 * A file that cannot be opened exits 2 when required (given with --targets),
 * otherwise the run goes on without targets and says so.
 */
void targets_load(const char *path, bool required);

/* Per scenario in number order: its targets (MET / MISSED / n/a), then its INFO lines. */
void print_targets(const struct scenario *s, size_t n);

#endif /* PROC_BENCH_TARGETS_H */
