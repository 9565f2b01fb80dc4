/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the stress and fault suite (tests/test_stress_*.c), on top
 * of testutil.h. Include it after <cmocka.h>: EQ() reports through fail_msg().
 *
 *   ST_SIZE(plain, sanitized)  a size for the plain build / a sanitizer build
 *                              (LIBPROC_TEST_SANITIZED, set by tests/CMakeLists.txt)
 *   EQ(actual, expected)       from testcheck.h: integer comparison printing both
 *   st_raise_limits()          RLIMIT_NOFILE / RLIMIT_NPROC soft limits to hard
 *   st_child_signals_default() in a child: every catchable signal back to
 *                              SIG_DFL and none blocked (cmocka and the
 *                              sanitizers install handlers for SIGSEGV & co.)
 *   st_wait_children_gone(ms)  bounded wait until this process has no child at
 *                              all (live or zombie); returns how many are left
 *   st_spawn_sub(...)          fork + exec of this program as "--sub MODE",
 *                              handing fds over at ST_SUB_FD0, ST_SUB_FD0+1, ...
 *   st_wait_pid(pid)           waitpid() that survives EINTR; the status
 *                              decoded as exit code 0..255 or -signo
 *   st_pidfd_open(pid)         pidfd of any process (not only a child)
 *
 * No timer is ever used to wait for something: every timeout bounds a hang.
 */
#ifndef LIBPROC_STRESS_UTIL_H
#define LIBPROC_STRESS_UTIL_H

#include "testutil.h"
#include "testcheck.h" /* EQ() */

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#ifdef LIBPROC_TEST_SANITIZED
#define ST_SANITIZED 1
#else
#define ST_SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define ST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ST_TSAN 1
#endif
#endif
#ifndef ST_TSAN
#define ST_TSAN 0
#endif

/* Sizes shrink under sanitizers (fork is many times slower there), never to nothing. */
#define ST_SIZE(plain, sanitized) (ST_SANITIZED ? (sanitized) : (plain))

/* Safety net in every child: a failing test cannot leave a process behind for long. */
#define ST_CHILD_ALARM_S 60

/* Sub-processes receive the fds they need at these numbers. */
#define ST_SUB_FD0 200

static inline void st_raise_limits(void)
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

static inline void st_child_signals_default(void)
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

static inline int st_wait_children_gone(int timeout_ms)
{
    int64_t deadline = tu_now_ms() + timeout_ms;
    int n;
    while ((n = tu_count_children(NULL)) != 0 && tu_now_ms() < deadline)
        sched_yield();
    return n;
}

static inline int st_decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return -WTERMSIG(st);
    return -1000;
}

static inline int st_wait_pid(pid_t pid)
{
    int st = 0;
    pid_t r;
    do {
        r = waitpid(pid, &st, 0);
    } while (r < 0 && errno == EINTR);
    return r == pid ? st_decode_status(st) : -1001;
}

static inline int st_pidfd_open(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
}

/*
 * fork + exec of /proc/self/exe as "NAME --sub MODE"; fds[i] (< ST_SUB_FD0)
 * becomes fd ST_SUB_FD0 + i in the new program, without O_CLOEXEC. env
 * entries ("K=V") are added to the environment. Returns the pid or -errno.
 */
static inline pid_t st_spawn_sub(const char *mode, const int *fds, int nfds, const char *const *env)
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
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < nfds; i++)
            if (dup2(fds[i], ST_SUB_FD0 + i) < 0)
                _exit(126);
        execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    int err = errno;
    free(envp);
    return pid < 0 ? -err : pid;
}

#endif /* LIBPROC_STRESS_UTIL_H */
