/* SPDX-License-Identifier: MIT */
/* The helpers of stress_util.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stress_util.h"

void st_raise_limits(void)
{
    const int res[] = {RLIMIT_NOFILE, RLIMIT_NPROC};
    for (size_t i = 0; i < sizeof res / sizeof res[0]; i++) {
        struct rlimit rl;
        if (getrlimit(res[i], &rl) == 0 && rl.rlim_cur != rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            (void)setrlimit(res[i], &rl);
        }
    }
}

void st_child_signals_default(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < 32; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
}

int st_decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return -WTERMSIG(st);
    return -1000;
}

int st_wait_pid(pid_t pid)
{
    int st = 0;
    return tu_waitpid(pid, &st) == pid ? st_decode_status(st) : -1001;
}

int st_pidfd_open(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
}

pid_t st_spawn_sub(const char *mode, const int *fds, int nfds, const char *const *env)
{
    extern char **environ;
    size_t n = 0, extra = 0;
    while (environ[n])
        n++;
    while (env && env[extra])
        extra++;
    char **envp = (char **)calloc(n + extra + 1, sizeof *envp);
    if (!envp)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < extra; i++)
        envp[k++] = (char *)env[i];
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < extra && !replaced; j++) {
            const char *eq = strchr(env[j], '=');
            size_t len = eq ? (size_t)(eq - env[j]) + 1 : strlen(env[j]);
            replaced = strncmp(environ[i], env[j], len) == 0;
        }
        if (!replaced)
            envp[k++] = environ[i];
    }
    envp[k] = NULL;
    char *argv[] = {(char *)"stress-sub", (char *)"--sub", (char *)mode, NULL};
    const char *self = tu_self_exe();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < nfds; i++)
            if (dup2(fds[i], ST_SUB_FD0 + i) < 0)
                _exit(126);
        execve(self, argv, envp);
        _exit(127);
    }
    int err = errno;
    free(envp);
    return pid < 0 ? -err : pid;
}

int st_run_sub(const char *mode, const char *env0)
{
    const char *env[] = {env0, NULL};
    pid_t pid = st_spawn_sub(mode, NULL, 0, env);
    assert_true(pid > 0);
    return st_wait_pid(pid);
}

void st_sub_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

void st_sub_dispatch(int argc, char **argv, unsigned alarm_s, const struct st_sub *subs)
{
    if (argc != 3 || strcmp(argv[1], "--sub") != 0)
        return;
    alarm(alarm_s);
    for (const struct st_sub *s = subs; s->mode; s++)
        if (strcmp(argv[2], s->mode) == 0)
            exit(s->main());
    exit(2);
}

int st_warm_up(void)
{
    proc_t *p = proc_new(NULL, NULL);
    if (!p || proc_start(p) != 0 || proc_join(p, 10000) != 0 || proc_close(p) != 0)
        return -1;
    return 0;
}
