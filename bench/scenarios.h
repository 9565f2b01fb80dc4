/* SPDX-License-Identifier: MIT */
/*
 * The scenarios that main.c lists, one group per file: start.c (1, 2, 4),
 * mass.c (3, 5), python.c (6 and the Python contenders of 7-10), pool.c (7),
 * queue.c (8), pipe.c (9), communicate.c (10), stream.c (11), net.c (12),
 * forkserver.c (13); libuv.c holds the libuv contenders of 2 and 3.
 */
#ifndef PROC_BENCH_SCENARIOS_H
#define PROC_BENCH_SCENARIOS_H

void scenario1(void);  /* start+join, fork mode */
void scenario2(void);  /* exec /bin/true with the parent's memory */
void scenario3(void);  /* mass exit */
void scenario4(void);  /* join latency */
void scenario5(void);  /* memory per live child */
void scenario6(void);  /* Python multiprocessing start+join */
void scenario7(void);  /* pool map */
void scenario8(void);  /* queue throughput and pipeline */
void scenario9(void);  /* pipe round trips */
void scenario10(void); /* exec + capture: proc_communicate */
void scenario11(void); /* streams: imap, parallel_wc */
void scenario12(void); /* authenticated connections: connect, round trip, bulk */
void scenario13(void); /* start+join through the fork server, by the caller's memory */
/* Starts the fork server when scenario 13 runs: call first in main(). */
void scenario13_setup(void);

/* INFO lines under the targets: numbers shown without a pass mark. */
void scenario7_info(void);
void scenario8_info(void);
void scenario9_info(void);
void scenario10_info(void);
void scenario11_info(void);
void scenario12_info(void);
void scenario13_info(void);

/* Scenario 7's tiny task (out = in * in + 7 on longs), which 11's map runs too. */
int s7_square(const void *in, void *out);

/* Scenario 1's batches, which scenario 6 runs again next to Python. */
double s1_raw(void *ctx, long ops);
double s1_libproc(void *ctx, long ops);
/* Scenario 13's: scenario 1's libproc batch through the fork server. */
double s13_served(void *ctx, long ops);

/* The programs the exec contenders run; main.c finds them. */
extern const char *true_path;
extern char *true_argv[];
extern const char *head_path;
extern char *head_argv[];

#endif /* PROC_BENCH_SCENARIOS_H */
