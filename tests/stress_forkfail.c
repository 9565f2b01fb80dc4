/* SPDX-License-Identifier: MIT */
/*
 * Fork failure injection for tests/test_stress_forkfail.c, loaded with
 * LD_PRELOAD (tests/CMakeLists.txt sets it for that test). It interposes
 * fork() and posix_spawn(), the two ways libproc creates processes; while
 * armed, they fail like the kernel does when it runs out of processes or
 * memory. The test finds the control functions with dlsym(RTLD_DEFAULT, ...)
 * and skips itself when they are missing (not preloaded).
 *
 *   libproc_test_forkfail_arm(err, count, every)
 *       the next `count` calls (count < 0: all) fail with `err`; every > 1
 *       fails only each every-th call among them (the others go through)
 *   libproc_test_forkfail_disarm()
 *   libproc_test_forkfail_failed()   how many calls failed since the last arm
 *   libproc_test_hold_atexit(entered_w, release_r)
 *       the next __cxa_atexit() call of this process (libproc's one-time
 *       setup registers its atexit handler right after its fork handlers)
 *       writes a byte to entered_w and waits for a byte or EOF on release_r,
 *       so that a test can fork() in the middle of that setup
 *
 * Not built with sanitizers: programs exec'd by the test load it as well.
 */
#include <dlfcn.h>
#include <errno.h>
#include <spawn.h>
#include <stdatomic.h>
#include <unistd.h>

#define PUBLIC __attribute__((visibility("default")))

static _Atomic int arm_err;
static _Atomic int arm_left; /* calls still to consider; < 0: unlimited */
static _Atomic int arm_every = 1;
static _Atomic unsigned arm_seen;
static _Atomic int arm_failed;

PUBLIC void libproc_test_forkfail_arm(int err, int count, int every)
{
    atomic_store(&arm_failed, 0);
    atomic_store(&arm_seen, 0);
    atomic_store(&arm_every, every > 1 ? every : 1);
    atomic_store(&arm_left, count);
    atomic_store(&arm_err, err);
}

PUBLIC void libproc_test_forkfail_disarm(void)
{
    atomic_store(&arm_err, 0);
    atomic_store(&arm_left, 0);
}

PUBLIC int libproc_test_forkfail_failed(void)
{
    return atomic_load(&arm_failed);
}

static _Atomic int hold_entered_w = -1, hold_release_r = -1;
static _Atomic pid_t hold_pid;

PUBLIC void libproc_test_hold_atexit(int entered_w, int release_r)
{
    atomic_store(&hold_pid, getpid());
    atomic_store(&hold_release_r, release_r);
    atomic_store(&hold_entered_w, entered_w);
}

/* Only in the process that armed it: a fork child re-running the setup goes on. */
PUBLIC int __cxa_atexit(void (*fn)(void *), void *arg, void *dso)
{
    int w = atomic_load(&hold_pid) == getpid() ? atomic_exchange(&hold_entered_w, -1) : -1;
    if (w >= 0) {
        char c = 'e';
        ssize_t r;
        while ((r = write(w, &c, 1)) < 0 && errno == EINTR)
            ;
        while ((r = read(atomic_load(&hold_release_r), &c, 1)) < 0 && errno == EINTR)
            ;
    }
    int (*real)(void (*)(void *), void *, void *) =
        (int (*)(void (*)(void *), void *, void *))dlsym(RTLD_NEXT, "__cxa_atexit");
    return real ? real(fn, arg, dso) : -1;
}

/* The errno to fail this call with, or 0 to let it through. */
static int should_fail(void)
{
    int err = atomic_load(&arm_err);
    if (err == 0)
        return 0;
    int left = atomic_load(&arm_left);
    for (;;) {
        if (left == 0)
            return 0;
        if (left < 0 || atomic_compare_exchange_weak(&arm_left, &left, left - 1))
            break;
    }
    unsigned n = atomic_fetch_add(&arm_seen, 1);
    if (n % (unsigned)atomic_load(&arm_every) != 0)
        return 0;
    atomic_fetch_add(&arm_failed, 1);
    return err;
}

PUBLIC pid_t fork(void)
{
    int err = should_fail();
    if (err) {
        errno = err;
        return -1;
    }
    pid_t (*real)(void) = (pid_t(*)(void))dlsym(RTLD_NEXT, "fork");
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    return real();
}

PUBLIC int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    int err = should_fail();
    if (err)
        return err;
    int (*real)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                const posix_spawnattr_t *, char *const[], char *const[]) =
        (int (*)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                 const posix_spawnattr_t *, char *const[], char *const[]))dlsym(RTLD_NEXT,
                                                                                "posix_spawn");
    if (!real)
        return ENOSYS;
    return real(pid, path, fa, attr, argv, envp);
}
