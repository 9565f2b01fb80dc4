/* SPDX-License-Identifier: MIT */
/*
 * A small supervisor: runs several shell commands at once, each in its own
 * process group, handles each as soon as it ends (proc_wait_any(), Python's
 * multiprocessing.connection.wait()), and gives the last one still running
 * half a second more, after which its whole tree is stopped (proc_stop() on
 * the group), grandchildren that linger included.
 */
#define _POSIX_C_SOURCE 200809L
#include <libproc/proc.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define NCMDS 3

static const char *const cmds[NCMDS] = {
    "exit 0",
    "sleep 0.2; exit 7",
    /* leaves a grandchild behind and never ends by itself */
    "sleep 300 & while :; do sleep 1; done",
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(void)
{
    proc_t *running[NCMDS];
    const char *what[NCMDS];
    for (int i = 0; i < NCMDS; i++) {
        const char *argv[] = {"sh", "-c", cmds[i], NULL};
        running[i] = proc_new_exec(argv);
        if (!running[i] || proc_set_new_group(running[i], true) != 0 ||
            proc_start(running[i]) != 0) {
            fprintf(stderr, "supervise: cannot start %s\n", cmds[i]);
            return 1;
        }
        what[i] = cmds[i];
    }
    size_t left = NCMDS;
    long long deadline = -1;
    int stopped = 0, ended = 0;
    while (left > 0) {
        if (left == 1 && deadline < 0)
            deadline = now_ms() + 500;
        long long wait = deadline < 0 ? PROC_WAIT_FOREVER : deadline - now_ms();
        int i = proc_wait_any(running, left, wait < 0 && deadline >= 0 ? 0 : (int)wait);
        if (i == -ETIMEDOUT) { /* past the deadline: stop every tree still running */
            for (size_t k = 0; k < left; k++) {
                const proc_stop_step_t steps[] = {{SIGTERM, 1000}, {SIGKILL, PROC_WAIT_FOREVER}};
                if (proc_stop(running[k], steps, 2) != 0)
                    return 1;
                printf("stopped after the deadline: %s (exit code %d)\n", what[k],
                       proc_exitcode(running[k]));
                proc_close(running[k]);
                stopped++;
            }
            break;
        }
        if (i < 0) {
            fprintf(stderr, "supervise: proc_wait_any: %s\n", strerror(-i));
            return 1;
        }
        printf("ended: %s (exit code %d)\n", what[i], proc_exitcode(running[i]));
        proc_join(running[i], 0);
        proc_close(running[i]);
        running[i] = running[left - 1]; /* keep the array dense */
        what[i] = what[left - 1];
        left--;
        ended++;
    }
    return ended == 2 && stopped == 1 ? 0 : 1;
}
