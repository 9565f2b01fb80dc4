/* SPDX-License-Identifier: MIT */
/*
 * Targets as data: reads the targets file (one target per line: scenario,
 * rows, measure, comparison, limit, why) at the start of a run, and after it
 * checks every target against the result rows and prints MET, MISSED or
 * n/a (its rows were not measured). A missed target never changes the exit
 * status. The format is described in bench/README.md.
 */
#include "targets.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Which rows' param a key selects. */
enum psel { P_EXACT, P_NONE, P_ALL, P_MIN, P_MAX, P_SAME };
enum measure { M_RATIO, M_VALUE, M_QUOTIENT };
enum cmp { C_LE, C_GE, C_LT, C_GT };

/* name:param:contender:metric */
struct key {
    char name[40];
    enum psel psel;
    long param; /* P_EXACT */
    char contender[24];
    char metric[16];
};

struct target {
    int scenario;
    struct key rows;
    enum measure measure;
    struct key den; /* M_QUOTIENT: value of rows / value of den */
    enum cmp cmp;
    double limit;
    char label[160]; /* rows, measure, cmp and limit as written in the file */
};

static struct target *targets;
static size_t ntargets;
static char targets_path[512];
static char targets_missing[160]; /* why there are no targets, if so */

/* ================================================================ parsing */

static bool copy_field(char *dst, size_t cap, const char *src, size_t len)
{
    if (len == 0 || len >= cap)
        return false;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

static bool parse_param(const char *s, size_t len, struct key *k, bool den)
{
    char buf[24];
    if (!copy_field(buf, sizeof buf, s, len))
        return false;
    static const struct {
        const char *word;
        enum psel sel;
    } words[] = {{"-", P_NONE}, {"*", P_ALL}, {"min", P_MIN}, {"max", P_MAX}, {"=", P_SAME}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcmp(buf, words[i].word) == 0) {
            k->psel = words[i].sel;
            /* '=' only makes sense for the denominator, '*' only for the rows */
            return den ? k->psel != P_ALL : k->psel != P_SAME;
        }
    }
    char *end;
    errno = 0;
    k->param = strtol(buf, &end, 10);
    k->psel = P_EXACT;
    return !*end && errno == 0 && k->param >= 0;
}

static bool parse_key(const char *s, struct key *k, bool den)
{
    const char *f[4];
    size_t len[4];
    for (int i = 0; i < 4; i++) {
        f[i] = s;
        s += strcspn(s, ":");
        len[i] = (size_t)(s - f[i]);
        if ((i < 3) != (*s == ':'))
            return false; /* not exactly four fields */
        if (*s)
            s++;
    }
    return copy_field(k->name, sizeof k->name, f[0], len[0]) && parse_param(f[1], len[1], k, den) &&
           copy_field(k->contender, sizeof k->contender, f[2], len[2]) &&
           copy_field(k->metric, sizeof k->metric, f[3], len[3]);
}

static bool parse_measure(const char *s, struct target *t)
{
    if (strcmp(s, "ratio") == 0) {
        t->measure = M_RATIO;
        return true;
    }
    if (strcmp(s, "value") == 0) {
        t->measure = M_VALUE;
        return true;
    }
    t->measure = M_QUOTIENT;
    return strncmp(s, "value/", 6) == 0 && parse_key(s + 6, &t->den, true);
}

static bool parse_cmp(const char *s, enum cmp *c)
{
    static const char *const names[] = {"<=", ">=", "<", ">"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *c = (enum cmp)i;
            return true;
        }
    }
    return false;
}

/* One non-comment line; NULL when it is fine, else what is wrong. */
static const char *parse_line(char *line, struct target *t)
{
    char *field[5], *save = NULL;
    for (int i = 0; i < 5; i++)
        if (!(field[i] = strtok_r(i ? NULL : line, " \t", &save)))
            return "want: scenario rows measure comparison limit why";
    char *why = strtok_r(NULL, "", &save);
    char *end;
    long s = strtol(field[0], &end, 10);
    if (*end || s < 1 || s > MAX_SCENARIO)
        return "scenario: 1-10";
    t->scenario = (int)s;
    if (!parse_key(field[1], &t->rows, false))
        return "rows: name:param:contender:metric, param a number, -, *, min or max";
    if (!parse_measure(field[2], t))
        return "measure: ratio, value or value/name:param:contender:metric (param may be =)";
    if (!parse_cmp(field[3], &t->cmp))
        return "comparison: <=, >=, < or >";
    t->limit = strtod(field[4], &end);
    if (*end || end == field[4])
        return "limit: a number";
    if (!why || !*(why + strspn(why, " \t")))
        return "every target says why (the rest of the line)";
    snprintf(t->label, sizeof t->label, "%d: %s %s %s %s", t->scenario, field[1], field[2],
             field[3], field[4]);
    return NULL;
}

void targets_load(const char *path, bool required)
{
    snprintf(targets_path, sizeof targets_path, "%s", path);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (required) {
            fprintf(stderr, "proc_bench: %s: %s\n", path, strerror(errno));
            exit(2);
        }
        snprintf(targets_missing, sizeof targets_missing, "%s", strerror(errno));
        return;
    }
    char line[1024];
    size_t cap = 0;
    for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
        line[strcspn(line, "\r\n")] = '\0';
        const char *p = line + strspn(line, " \t");
        if (!*p || *p == '#')
            continue;
        if (ntargets == cap) {
            cap = cap ? 2 * cap : 32;
            targets = realloc(targets, cap * sizeof *targets);
            if (!targets) {
                fprintf(stderr, "proc_bench: out of memory\n");
                exit(2);
            }
        }
        memset(&targets[ntargets], 0, sizeof targets[ntargets]);
        const char *err = parse_line(line, &targets[ntargets]);
        if (err) {
            fprintf(stderr, "proc_bench: %s:%d: %s\n", path, lineno, err);
            exit(2);
        }
        ntargets++;
    }
    fclose(f);
}

/* ============================================================== checking */

static bool key_matches(const struct row *r, int scenario, const struct key *k)
{
    return r->scenario == scenario && strcmp(r->name, k->name) == 0 &&
           strcmp(r->contender, k->contender) == 0 && strcmp(r->metric, k->metric) == 0;
}

/* The one row a key selects (every selector but '*'); same: the param for '='. */
static const struct row *select_row(int scenario, const struct key *k, long same)
{
    size_t n;
    const struct row *rows = all_rows(&n), *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        if (!key_matches(r, scenario, k))
            continue;
        switch (k->psel) {
        case P_EXACT:
        case P_SAME:
            if (r->param == (k->psel == P_SAME ? same : k->param))
                return r;
            break;
        case P_NONE:
            if (r->param < 0)
                return r;
            break;
        case P_MIN:
            if (!best || r->param < best->param)
                best = r;
            break;
        case P_MAX:
            if (!best || r->param > best->param)
                best = r;
            break;
        case P_ALL:
            return r;
        }
    }
    return best;
}

/* The measured number of row r for target t; false when there is none. */
static bool measure(const struct target *t, const struct row *r, double *v)
{
    switch (t->measure) {
    case M_RATIO:
        *v = r->ratio;
        return r->ratio != NO_RATIO;
    case M_VALUE:
        *v = r->value;
        return true;
    case M_QUOTIENT: {
        const struct row *d = select_row(t->scenario, &t->den, r->param);
        if (!d || d == r || !(d->value > 0))
            return false; /* a row over itself (one k only) tells nothing */
        *v = r->value / d->value;
        return true;
    }
    }
    return false;
}

static bool compare(enum cmp c, double v, double limit)
{
    switch (c) {
    case C_LE:
        return v <= limit;
    case C_GE:
        return v >= limit;
    case C_LT:
        return v < limit;
    case C_GT:
        return v > limit;
    }
    return false;
}

/* Appends one row's number to the detail; with_param: "k=4000:" before it. */
static void detail_add(char *buf, size_t cap, const struct target *t, const struct row *r, double v,
                       bool with_param)
{
    size_t off = strlen(buf);
    char param[48] = "";
    if (with_param)
        snprintf(param, sizeof param, "%s=%ld:", r->param_name, r->param);
    const char *unit = t->measure == M_VALUE ? r->unit : t->measure == M_QUOTIENT ? "x" : "";
    snprintf(buf + off, cap - off, "%s%s%.2f%s%s", off ? " " : "", param, v,
             t->measure == M_VALUE ? " " : "", unit);
}

/* How many rows a '*' key matches: their params are shown when there are several. */
static size_t count_rows(const struct target *t)
{
    size_t n, count = 0;
    const struct row *rows = all_rows(&n);
    for (size_t i = 0; i < n; i++)
        count += key_matches(&rows[i], t->scenario, &t->rows);
    return count;
}

static void check_target(const struct target *t)
{
    bool have = false, met = true;
    char detail[200] = "";
    size_t n;
    const struct row *rows = all_rows(&n);
    if (t->rows.psel == P_ALL) {
        bool several = count_rows(t) > 1;
        for (size_t i = 0; i < n; i++) {
            double v;
            if (!key_matches(&rows[i], t->scenario, &t->rows) || !measure(t, &rows[i], &v))
                continue;
            have = true;
            met = met && compare(t->cmp, v, t->limit);
            detail_add(detail, sizeof detail, t, &rows[i], v, several);
        }
    } else {
        const struct row *r = select_row(t->scenario, &t->rows, -1);
        double v;
        if (r && measure(t, r, &v)) {
            have = true;
            met = compare(t->cmp, v, t->limit);
            detail_add(detail, sizeof detail, t, r, v,
                       t->rows.psel == P_MIN || t->rows.psel == P_MAX);
        }
    }
    printf("  %-7s %-60s %s\n",
           !have ? "n/a"
           : met ? "MET"
                 : "MISSED",
           t->label, have ? detail : "");
}

void print_targets(const struct scenario *s, size_t n)
{
    if (targets_missing[0])
        printf("\ntargets: none (%s: %s)\n", targets_path, targets_missing);
    else
        printf("\ntargets (%s):\n", targets_path);
    for (int k = 1; k <= MAX_SCENARIO; k++) {
        for (size_t i = 0; i < ntargets; i++)
            if (targets[i].scenario == k)
                check_target(&targets[i]);
        for (size_t i = 0; i < n; i++)
            if (s[i].number == k && s[i].info)
                s[i].info();
    }
    free(targets);
    targets = NULL;
    ntargets = 0;
}
