/* SPDX-License-Identifier: MIT */
/* The one-time setup of the process core, run by every public entry point first. */
#include "core.h"

#include <errno.h>
#include <stdlib.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    proc__cond_init(&proc__g.cond);
    /* The cached pid's fork handler goes first: ours read it in the child. */
    (void)proc__self_pid();
    int r = proc__fork_handlers_install();
    /* Python's behaviour at exit (proc__exit_work). Without these handlers
     * libproc is not fork-safe: proc_start refuses to run. */
    if (r == 0 && atexit(proc__exit_work) != 0)
        r = -ENOMEM;
    proc__g.init_err = r;
}

void proc__init(void)
{
    pthread_once(&init_once, global_init);
}
