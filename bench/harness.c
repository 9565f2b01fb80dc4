/* SPDX-License-Identifier: MIT */
/*
 * proc_bench's harness: options, the clock, result rows and notes, the
 * interleaved rounds and their medians, the printed table and the CSV. The
 * scenarios (one file per group) report through it; main.c lists them.
 */
#include "harness.h"

#include "live.h"
#include "machine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef PROC_BENCH_TARGETS
#define PROC_BENCH_TARGETS "targets.txt" /* CMake points it at bench/targets.txt */
#endif

/* ================================================================ options */

struct bench_opts opt = {.targets = PROC_BENCH_TARGETS};

int rounds_or(int def)
{
    return opt.rounds > 0 ? opt.rounds : def;
}

bool want(int scenario)
{
    return opt.only == 0 || (opt.only & (1u << scenario));
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: proc_bench [--quick] [--rounds N] [--csv FILE] [--only LIST] [--targets FILE]\n"
            "  --quick         tiny sizes, a few seconds (CI smoke run)\n"
            "  --rounds N      rounds per scenario (defaults: 1:31 2:21 3:5 (3 at k=4000) 5:3 6:5\n"
            "                  7:41 (CPU-bound part 5) 8:7 9:9; --quick 1:5 2:3 3:3 5:3 6:3 7:3\n"
            "                  8:3 9:3); scenario 4 is per sample\n"
            "  --csv FILE      also write the results as CSV\n"
            "  --only LIST     run only these scenarios, e.g. --only 1,3\n"
            "  --targets FILE  the pass/fail targets (default %s)\n",
            PROC_BENCH_TARGETS);
}

void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--quick") == 0) {
            opt.quick = true;
        } else if (strcmp(a, "--rounds") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 10000) {
                fprintf(stderr, "proc_bench: --rounds wants 1..10000\n");
                exit(2);
            }
            opt.rounds = (int)n;
        } else if (strcmp(a, "--csv") == 0 && i + 1 < argc) {
            opt.csv = argv[++i];
        } else if (strcmp(a, "--targets") == 0 && i + 1 < argc) {
            opt.targets = argv[++i];
            opt.targets_given = true;
        } else if (strcmp(a, "--only") == 0 && i + 1 < argc) {
            for (const char *s = argv[++i]; *s;) {
                char *end;
                long k = strtol(s, &end, 10);
                if (end == s || k < 1 || k > MAX_SCENARIO || (*end && *end != ',')) {
                    fprintf(stderr, "proc_bench: --only wants scenario numbers 1-%d\n",
                            MAX_SCENARIO);
                    exit(2);
                }
                opt.only |= 1u << k;
                s = *end ? end + 1 : end;
            }
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            usage(stderr);
            exit(2);
        }
    }
}

/* ================================================================ helpers */

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        die("out of memory");
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double quantile(double *v, size_t n, double q)
{
    qsort(v, n, sizeof *v, cmp_double);
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n)
        return v[n - 1];
    return v[i] + (v[i + 1] - v[i]) * (pos - (double)i);
}

double median(const double *v, size_t n)
{
    double *copy = xcalloc(n, sizeof *copy);
    memcpy(copy, v, n * sizeof *copy);
    double m = quantile(copy, n, 0.5);
    free(copy);
    return m;
}

void progress(const char *fmt, ...)
{
    va_list ap;
    fputs("proc_bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ================================================================ results */

static struct row *rows;
static size_t nrows, caprows;
static char notes[48][320];
static size_t nnotes;

void add_row(int scenario, const char *name, long param, const char *param_name,
             const char *contender, const char *metric, const char *unit, double value,
             double ratio, int n)
{
    if (nrows == caprows) {
        caprows = caprows ? caprows * 2 : 64;
        struct row *r = realloc(rows, caprows * sizeof *r);
        if (!r)
            die("out of memory");
        rows = r;
    }
    struct row *r = &rows[nrows++];
    memset(r, 0, sizeof *r);
    r->scenario = scenario;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->param = param;
    snprintf(r->param_name, sizeof r->param_name, "%s", param_name);
    snprintf(r->contender, sizeof r->contender, "%s", contender);
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    r->value = value;
    r->ratio = ratio;
    r->n = n;
}

const struct row *find_row(int scenario, long param, const char *contender, const char *metric)
{
    for (size_t i = 0; i < nrows; i++)
        if (rows[i].scenario == scenario && rows[i].param == param &&
            strcmp(rows[i].contender, contender) == 0 && strcmp(rows[i].metric, metric) == 0)
            return &rows[i];
    return NULL;
}

void add_note(const char *fmt, ...)
{
    if (nnotes == sizeof notes / sizeof notes[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(notes[nnotes++], sizeof notes[0], fmt, ap);
    va_end(ap);
}

const struct row *all_rows(size_t *n)
{
    *n = nrows;
    return rows;
}

void free_rows(void)
{
    free(rows);
    rows = NULL;
    nrows = caprows = 0;
}

/* ========================================================= round machinery */

void run_rounds(const struct contender *c, int n, long ops, long warm_ops, int rounds, double *out)
{
    for (int i = 0; i < n; i++) {
        if (warm_ops > 0)
            c[i].fn(c[i].ctx, warm_ops);
        check_interrupted();
    }
    for (int r = 0; r < rounds; r++) {
        for (int j = 0; j < n; j++) {
            int i = (r + j) % n;
            out[i * rounds + r] = c[i].fn(c[i].ctx, ops);
            check_interrupted();
        }
    }
}

void report_rounds(int scenario, const char *name, long param, const char *param_name,
                   const struct contender *c, int n, int rounds, const double *out, double *medians)
{
    double base = 0;
    for (int i = 0; i < n; i++) {
        double m = median(out + (size_t)i * (size_t)rounds, (size_t)rounds) / 1000.0;
        if (i == 0)
            base = m;
        if (medians)
            medians[i] = m;
        add_row(scenario, name, param, param_name, c[i].name, "median", "us/op", m,
                base > 0 ? m / base : NO_RATIO, rounds);
    }
}

/* ================================================================= output */

static void fmt_param(const struct row *r, char *buf, size_t len)
{
    if (r->param < 0) /* no number; a name alone tells variants apart */
        snprintf(buf, len, "%s", r->param_name[0] ? r->param_name : "-");
    else
        snprintf(buf, len, "%s=%ld", r->param_name, r->param);
}

static const struct scenario *scenario_of(const struct scenario *s, size_t n, int number)
{
    for (size_t i = 0; i < n; i++)
        if (s[i].number == number)
            return &s[i];
    return NULL;
}

/* Whether contender is one of the baselines ("raw", or "loop / raw": one per row group). */
static bool is_baseline(const char *baselines, const char *contender)
{
    size_t len = strlen(contender);
    for (const char *b = baselines; (b = strstr(b, contender)) != NULL; b += len)
        if ((b == baselines || b[-1] == ' ') && (b[len] == '\0' || b[len] == ' '))
            return true;
    return false;
}

void print_table(const struct scenario *s, size_t n)
{
    printf("\n%-31s %-13s %-13s %-10s %12s %-9s %s\n", "scenario", "param", "contender", "metric",
           "median", "unit", "ratio");
    int last = 0;
    for (int k = 1; k <= MAX_SCENARIO; k++) {
        const struct scenario *sc = scenario_of(s, n, k);
        for (size_t i = 0; sc && i < nrows; i++) {
            const struct row *r = &rows[i];
            if (r->scenario != k)
                continue;
            char param[32], ratio[32];
            fmt_param(r, param, sizeof param);
            if (r->ratio == NO_RATIO)
                snprintf(ratio, sizeof ratio, "-");
            else if (is_baseline(sc->baseline, r->contender))
                snprintf(ratio, sizeof ratio, "1.00 (baseline)");
            else
                snprintf(ratio, sizeof ratio, "%.2f", r->ratio);
            printf("%-31s %-13s %-13s %-10s %12.2f %-9s %s\n", last != k ? sc->title : "", param,
                   r->contender, r->metric, r->value, r->unit, ratio);
            last = k;
        }
    }
    if (nnotes)
        printf("\nnotes:\n");
    for (long k = 1; k <= MAX_SCENARIO; k++) /* notes start with their scenario number */
        for (size_t i = 0; i < nnotes; i++)
            if (strtol(notes[i], NULL, 10) == k)
                printf("  %s\n", notes[i]);
}

void info_line(const char *what, bool have, const char *fmt, ...)
{
    char detail[160] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    printf("  %-7s %-60s %s\n", !have ? "n/a" : "INFO", what, have ? detail : "");
}

void write_csv(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die("%s: %s", path, strerror(errno));
    machine_write(f, "# "); /* a '#' comment to gnuplot, pandas (comment='#') and R */
    fprintf(f, "scenario,name,param,contender,metric,unit,median,ratio,n\n");
    for (int s = 1; s <= MAX_SCENARIO; s++) {
        for (size_t i = 0; i < nrows; i++) {
            const struct row *r = &rows[i];
            if (r->scenario != s)
                continue;
            fprintf(f, "%d,%s,", r->scenario, r->name);
            if (r->param >= 0)
                fprintf(f, "%ld", r->param);
            fprintf(f, ",%s,%s,%s,%.3f,", r->contender, r->metric, r->unit, r->value);
            if (r->ratio != NO_RATIO)
                fprintf(f, "%.4f", r->ratio);
            fprintf(f, ",%d\n", r->n);
        }
    }
    if (fclose(f) != 0)
        die("%s: %s", path, strerror(errno));
}
