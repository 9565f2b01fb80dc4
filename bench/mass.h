/* SPDX-License-Identifier: MIT */
/*
 * Scenario 3's release pipe and start clock, shared by mass.c (3 and 5) and
 * the libuv contender of 3 (libuv.c): k children block in read() on one
 * pipe and are released at once by closing its write end.
 */
#ifndef PROC_BENCH_MASS_H
#define PROC_BENCH_MASS_H

#include <stdint.h>
#include <sys/types.h>

struct mass {
    int rfd, wfd; /* the release pipe, both ends O_CLOEXEC, listed in live.fds */
};

void mass_open(struct mass *m);
void mass_close_read(struct mass *m);
/* Closes the write end: every child sees EOF. Returns the release time. */
uint64_t mass_release(struct mass *m);

/* Per contender: the start cost per child of each round (ns), for the "start" rows. */
struct s3ctx {
    double *start;
    int n;
};

/* Start time: from t0 (the first start) until all k children block in read(). */
void s3_record_start(void *ctx, uint64_t t0, const pid_t *pids, long k);

#endif /* PROC_BENCH_MASS_H */
