/* SPDX-License-Identifier: MIT */
/*
 * The libuv contenders (uv_spawn) of scenarios 2 and 3. libuv.c is compiled
 * only when CMake finds libuv, which then defines PROC_BENCH_HAVE_LIBUV.
 */
#ifndef PROC_BENCH_LIBUV_H
#define PROC_BENCH_LIBUV_H

#ifdef PROC_BENCH_HAVE_LIBUV
double s2_libuv(void *ctx, long ops); /* exec /bin/true, one child at a time */
double s3_libuv(void *ctx, long k);   /* mass exit of k `head -c1` children */
const char *libuv_version(void);
#endif

#endif /* PROC_BENCH_LIBUV_H */
