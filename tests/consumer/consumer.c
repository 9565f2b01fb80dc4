/* SPDX-License-Identifier: MIT */
/* A program outside the project that uses the installed libproc: it is built
 * through pkg-config (shared and static) and through find_package(libproc). */
#include <libproc/proc.h>

#include <stdio.h>

#ifndef PROC_VERSION_MAJOR
#error "<libproc/proc.h> does not define PROC_VERSION_MAJOR"
#endif

static int child_main(void *arg)
{
    return *(const int *)arg;
}

int main(void)
{
    int code = 42;
    proc_t *p = proc_new(child_main, &code);
    if (!p) {
        perror("proc_new");
        return 1;
    }
    int rc = proc_start(p);
    if (rc != 0) {
        fprintf(stderr, "proc_start: %d\n", rc);
        return 1;
    }
    rc = proc_join(p, 30000);
    if (rc != 0) {
        fprintf(stderr, "proc_join: %d\n", rc);
        return 1;
    }
    if (proc_exitcode(p) != code) {
        fprintf(stderr, "exitcode %d, expected %d\n", proc_exitcode(p), code);
        return 1;
    }
    rc = proc_close(p);
    if (rc != 0) {
        fprintf(stderr, "proc_close: %d\n", rc);
        return 1;
    }
    printf("OK libproc %d.%d.%d\n", PROC_VERSION_MAJOR, PROC_VERSION_MINOR, PROC_VERSION_PATCH);
    return 0;
}
