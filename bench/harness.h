/* SPDX-License-Identifier: MIT */
/*
 * proc_bench's harness: the options, the clock, the result rows and notes,
 * the interleaved rounds with their medians, and the output (the table and
 * the CSV). Every scenario file reports through it. See bench/README.md.
 */
#ifndef PROC_BENCH_HARNESS_H
#define PROC_BENCH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MIB (1024UL * 1024UL)
#define MAX_SCENARIO 13 /* scenarios are numbered 1..MAX_SCENARIO */
#define NO_RATIO (-1.0)

/* ---------------------------------------------------------------- options */

struct bench_opts {
    bool quick;
    int rounds; /* 0: per-scenario default */
    const char *csv;
    const char *targets; /* the targets file */
    bool targets_given;  /* --targets: the file must exist */
    unsigned only;       /* bit n set: run scenario n; 0: all */
};

extern struct bench_opts opt;

/* Parses argv into opt; exits 0 on --help, 2 on a bad option. */
void parse_args(int argc, char **argv);

/* --rounds N if given, else the scenario's default. */
int rounds_or(int def);

/* Whether --only lets this scenario run. */
bool want(int scenario);

/* ---------------------------------------------------------------- helpers */

uint64_t now_ns(void);
void *xcalloc(size_t n, size_t size);
/* Sorts v in place. */
double quantile(double *v, size_t n, double q);
double median(const double *v, size_t n);
__attribute__((format(printf, 1, 2))) void progress(const char *fmt, ...);

/* ---------------------------------------------------------------- results */

struct row {
    int scenario;
    char name[40];       /* scenario short name (CSV) */
    long param;          /* MiB, k, samples, children; -1: none */
    char param_name[12]; /* "MiB", "k", ... */
    char contender[24];
    char metric[16];
    char unit[12];
    double value;
    double ratio; /* NO_RATIO: none */
    int n;        /* rounds or samples behind the median */
};

void add_row(int scenario, const char *name, long param, const char *param_name,
             const char *contender, const char *metric, const char *unit, double value,
             double ratio, int n);
/* The first row with these fields, or NULL. */
const struct row *find_row(int scenario, long param, const char *contender, const char *metric);
/* All rows so far, in the order they were added. */
const struct row *all_rows(size_t *n);
void free_rows(void);

/* A note under the table; it must start with its scenario number. */
__attribute__((format(printf, 1, 2))) void add_note(const char *fmt, ...);

/* ------------------------------------------------------- round machinery */

/* Runs one batch of ops and returns the mean per op in ns (or per child). */
typedef double batch_fn(void *ctx, long ops);

struct contender {
    const char *name;
    batch_fn *fn;
    void *ctx;
};

/*
 * rounds x every contender, interleaved: round r starts with contender
 * r % n, so no contender is always first. One untimed warm-up batch each.
 * out[c * rounds + r] receives the result of contender c in round r.
 */
void run_rounds(const struct contender *c, int n, long ops, long warm_ops, int rounds, double *out);

/* Median per contender in us, rows with the ratio to contender 0 (the baseline). */
void report_rounds(int scenario, const char *name, long param, const char *param_name,
                   const struct contender *c, int n, int rounds, const double *out,
                   double *medians);

/* ---------------------------------------------------------------- output */

/* One scenario of main's table. */
struct scenario {
    int number;
    const char *name;     /* as in the CSV's name column (the first, if several) */
    const char *title;    /* in the printed table */
    const char *baseline; /* the contender the ratios are relative to ("a / b": per row group) */
    void (*run)(void);
    void (*info)(void); /* INFO lines under the targets, or NULL */
};

/* The table, scenarios in number order, then the notes. */
void print_table(const struct scenario *s, size_t n);

/* A number shown next to the targets, without a pass mark. */
__attribute__((format(printf, 3, 4))) void info_line(const char *what, bool have, const char *fmt,
                                                     ...);

/* The CSV: the machine as leading '#' lines, then the header and one line per row. */
void write_csv(const char *path);

#endif /* PROC_BENCH_HARNESS_H */
