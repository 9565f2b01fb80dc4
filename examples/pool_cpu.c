/* SPDX-License-Identifier: MIT */
/*
 * A CPU-bound map: counting primes by trial division in 64 ranges, once in
 * a plain loop in this process and once with proc_pool_map() on one worker
 * per CPU. Prints both times and the speed-up, and checks that both give
 * the same answer. The speed-up depends on the machine (its CPUs, its load);
 * this program succeeds whatever it is, as long as the answers agree.
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/pool.h>
#include <libproc/proc.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define RANGES 64
#define LIMIT 3000000u /* primes below this */

struct range {
    uint32_t lo, hi;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int is_prime(uint32_t n)
{
    if (n < 2)
        return 0;
    if (n % 2 == 0)
        return n == 2;
    for (uint32_t d = 3; d <= n / d; d += 2)
        if (n % d == 0)
            return 0;
    return 1;
}

/* The task: how many primes are in [lo, hi). */
static int count_primes(const void *in, void *out)
{
    const struct range *r = in;
    uint64_t count = 0;
    for (uint32_t n = r->lo; n < r->hi; n++)
        count += (uint64_t)is_prime(n);
    *(uint64_t *)out = count;
    return 0;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "pool_cpu: %s failed: %s\n", what, strerror(-rc));
    return 1;
}

int main(void)
{
    struct range in[RANGES];
    uint64_t loop_out[RANGES], pool_out[RANGES];
    uint32_t step = LIMIT / RANGES;
    for (int i = 0; i < RANGES; i++) {
        in[i].lo = (uint32_t)i * step;
        in[i].hi = i == RANGES - 1 ? LIMIT : (uint32_t)(i + 1) * step;
    }

    int cpus = proc_cpu_count();
    proc_pool_opts_t opts = {.workers = cpus};
    proc_pool_t *pool = proc_pool_new(&opts); /* started before timing, like Pool() */
    if (pool == NULL)
        return fail("proc_pool_new", -errno);

    double t0 = now();
    for (int i = 0; i < RANGES; i++)
        count_primes(&in[i], &loop_out[i]);
    double t_loop = now() - t0;

    t0 = now();
    int rc =
        proc_pool_map(pool, count_primes, in, sizeof in[0], pool_out, sizeof pool_out[0], RANGES);
    double t_pool = now() - t0;
    if (rc != 0)
        return fail("proc_pool_map", rc);
    if ((rc = proc_pool_close(pool)) < 0 || (rc = proc_pool_join(pool, PROC_WAIT_FOREVER)) < 0 ||
        (rc = proc_pool_free(pool)) < 0)
        return fail("closing the pool", rc);

    uint64_t total_loop = 0, total_pool = 0;
    for (int i = 0; i < RANGES; i++) {
        total_loop += loop_out[i];
        total_pool += pool_out[i];
        if (loop_out[i] != pool_out[i]) {
            fprintf(stderr, "pool_cpu: range %d: loop %llu, pool %llu\n", i,
                    (unsigned long long)loop_out[i], (unsigned long long)pool_out[i]);
            return 1;
        }
    }
    printf("primes below %u: %llu (loop) = %llu (pool)\n", LIMIT, (unsigned long long)total_loop,
           (unsigned long long)total_pool);
    printf("plain loop:           %8.3f s\n", t_loop);
    printf("pool of %3d workers:  %8.3f s\n", cpus, t_pool);
    printf("speed-up:             %8.2fx on %d CPU%s (depends on the machine and its load)\n",
           t_pool > 0 ? t_loop / t_pool : 0.0, cpus, cpus == 1 ? "" : "s");
    return 0;
}
