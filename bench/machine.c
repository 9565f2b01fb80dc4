/* SPDX-License-Identifier: MIT */
/*
 * The machine record: collected once at the start of a run, written above
 * the table and at the top of the CSV. Build facts come from compile
 * definitions that bench/CMakeLists.txt sets (build type, sanitizer) and
 * from the generated commit.h (the source's git commit at build time).
 */
#include "machine.h"

#include "harness.h"

#include <libproc/proc.h>

#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifdef PROC_BENCH_HAVE_LIBUV
#include <uv.h>
#endif
#ifdef PROC_BENCH_HAVE_COMMIT_H
#include "commit.h" /* generated at every build: PROC_BENCH_COMMIT */
#endif
#ifndef PROC_BENCH_COMMIT
#define PROC_BENCH_COMMIT "unknown"
#endif
#ifndef PROC_BENCH_BUILD_TYPE
#define PROC_BENCH_BUILD_TYPE ""
#endif
#ifndef PROC_BENCH_SANITIZE
#define PROC_BENCH_SANITIZE ""
#endif

#if defined(__clang__)
#define COMPILER __VERSION__ /* "Clang 14.0.6", "Debian Clang 14.0.6", ... */
#elif defined(__GNUC__)
#define COMPILER "gcc " __VERSION__ /* gcc's __VERSION__ is the bare number */
#else
#define COMPILER "unknown"
#endif

static struct {
    char date[32];
    char kernel[256]; /* uname -s -r -m */
    char cpu_model[128];
    long cpus_online;
    int cpus_usable;
    char args[256];
} m;

/* /proc/cpuinfo's first "model name" (x86; many ARM kernels have none). */
static void read_cpu_model(char *buf, size_t len)
{
    snprintf(buf, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            continue;
        v += strspn(v + 1, " \t") + 1;
        snprintf(buf, len, "%.*s", (int)strcspn(v, "\n"), v);
        break;
    }
    fclose(f);
}

void machine_collect(int argc, char **argv)
{
    time_t t = time(NULL);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(m.date, sizeof m.date, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(m.date, sizeof m.date, "unknown");
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(m.kernel, sizeof m.kernel, "%s %s %s", u.sysname, u.release, u.machine);
    else
        snprintf(m.kernel, sizeof m.kernel, "unknown");
    read_cpu_model(m.cpu_model, sizeof m.cpu_model);
    m.cpus_online = sysconf(_SC_NPROCESSORS_ONLN);
    m.cpus_usable = proc_cpu_count();
    size_t off = 0;
    for (int i = 1; i < argc && off < sizeof m.args; i++) {
        int w = snprintf(m.args + off, sizeof m.args - off, "%s%s", i > 1 ? " " : "", argv[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

void machine_write(FILE *f, const char *prefix)
{
    fprintf(f, "%sdate: %s\n", prefix, m.date);
    fprintf(f, "%skernel: %s\n", prefix, m.kernel);
    fprintf(f, "%scpu_model: %s\n", prefix, m.cpu_model);
    fprintf(f, "%scpus_online: %ld\n", prefix, m.cpus_online);
    fprintf(f, "%scpus_usable: %d\n", prefix, m.cpus_usable); /* proc_cpu_count(): affinity */
    fprintf(f, "%scompiler: %s\n", prefix, COMPILER);
    fprintf(f, "%sbuild_type: %s\n", prefix,
            *PROC_BENCH_BUILD_TYPE ? PROC_BENCH_BUILD_TYPE : "unknown");
    if (*PROC_BENCH_SANITIZE)
        fprintf(f, "%ssanitize: %s\n", prefix, PROC_BENCH_SANITIZE);
    fprintf(f, "%slibproc: %s\n", prefix, PROC_VERSION_STRING);
    fprintf(f, "%scommit: %s\n", prefix, PROC_BENCH_COMMIT);
#ifdef PROC_BENCH_HAVE_LIBUV
    fprintf(f, "%slibuv: %s\n", prefix, uv_version_string());
#else
    fprintf(f, "%slibuv: none\n", prefix);
#endif
    fprintf(f, "%smode: %s\n", prefix, opt.quick ? "quick" : "full");
    fprintf(f, "%sargs: %s\n", prefix, m.args);
}
