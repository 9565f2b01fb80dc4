/* SPDX-License-Identifier: MIT */
/*
 * Python's multiprocessing as a contender: scenario 6 (a `python3 -c` loop
 * of Process(target=f).start(); join(), timed inside Python, next to
 * libproc and raw fork), and the coprocess that serves the Python
 * contenders of 7-10 (see python.h). Without python3 they are left out.
 */
#include "python.h"

#include "harness.h"
#include "live.h"
#include "scenarios.h"

#include <errno.h>
#include <fcntl.h>
#include <libproc/proc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern char **environ;

static const char *find_in_path(const char *name, char *buf, size_t len)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchrnul(path, ':');
        int n = snprintf(buf, len, "%.*s/%s", (int)(end - path), path, name);
        if (n > 0 && (size_t)n < len && access(buf, X_OK) == 0)
            return buf;
        path = *end ? end + 1 : end;
    }
    return NULL;
}

/* ================================================================ 6: Python */

/* The target is a builtin (os.getpid), which every start method can find by name. */
static const char python_script[] =
    "import multiprocessing as mp, os, sys, time\n"
    "if __name__ == '__main__':\n"
    "    ctx = mp.get_context(sys.argv[2])\n"
    "    n = int(sys.argv[1])\n"
    "    for _ in range(5):\n"
    "        p = ctx.Process(target=os.getpid); p.start(); p.join()\n"
    "    t0 = time.perf_counter()\n"
    "    for _ in range(n):\n"
    "        p = ctx.Process(target=os.getpid); p.start(); p.join()\n"
    "        if p.exitcode != 0: sys.exit(3)\n"
    "    print((time.perf_counter() - t0) / n * 1e6, sys.version.split()[0])\n";

static char python_path[4096];
static char s6_version[32];

/* Runs the Python loop with ops iterations in the start method ctx (a string,
 * NULL: fork); returns its own per-op time in ns. */
double python_start_join(void *ctx, long ops)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    char count[32];
    snprintf(count, sizeof count, "%ld", ops);
    char *argv[] = {"python3", "-c", (char *)python_script, count, ctx ? ctx : "fork", NULL};
    posix_spawn_file_actions_t fa;
    int err = posix_spawn_file_actions_init(&fa);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    if (err)
        die("posix_spawn_file_actions: %s", strerror(err));
    pid_t slot = 0;
    live.pids = &slot;
    live.npids = 1;
    live.fds[0] = fds[0];
    live.fds[1] = fds[1];
    slot = spawn_raw(python_path, argv, &fa);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    live.fds[1] = -1;
    char buf[256];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read from python: %s", strerror(errno));
        if (r == 0 || (len += (size_t)r) == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    close(fds[0]);
    live.fds[0] = -1;
    reap_ok(slot);
    live_reset();
    char *end;
    double us = strtod(buf, &end);
    if (end == buf || us <= 0)
        die("python printed no timing: '%s'", buf);
    if (sscanf(end, " %31s", s6_version) != 1)
        snprintf(s6_version, sizeof s6_version, "?");
    return us * 1000.0;
}

const char *python_loop_version(void)
{
    return s6_version;
}

bool python_found(void)
{
    return find_in_path("python3", python_path, sizeof python_path) != NULL;
}

void scenario6(void)
{
    if (!python_found()) {
        add_note("6: skipped: no python3 in PATH");
        return;
    }
    long ops = opt.quick ? 20 : 200;
    int rounds = rounds_or(opt.quick ? 3 : 5);
    progress("scenario 6: Python multiprocessing (fork) vs libproc, %ld ops x %d rounds", ops,
             rounds);
    struct contender c[] = {
        {"libproc", s1_libproc, NULL},
        {"python", python_start_join, NULL},
        {"raw", s1_raw, NULL},
    };
    double med[3];
    double *out = xcalloc(3 * (size_t)rounds, sizeof *out);
    run_rounds(c, 3, ops, 0, rounds, out);
    report_rounds(6, "python_start_join", -1, "", c, 3, rounds, out, med);
    free(out);
    add_note("6: python / raw fork+waitpid = %.1f: no fork-based library can beat that ratio "
             "on this machine.",
             med[1] / med[2]);
    add_note("6: python %s (%s), multiprocessing fork context, Process(target=os.getpid).start(); "
             "join(), timed inside Python; ratio = python / libproc.",
             s6_version, python_path);
}

/* ===================================================== Python coprocess (7-10)
 * One python3 process serves the Python contenders of scenarios 7-12: it
 * reads one command per line ("map N", "imap N", "imapu N", "endmap 0", "queue N", "pipe<bytes> N",
 * "catrun MiB", "echorun N", "net<what>|<address> N", "quit 0") on its stdin (a socket: sending to
 * a dead Python is then -EPIPE, not SIGPIPE) and answers each with one line on its stdout, its own
 * timing in ns. So its Pool is created once and stays up across the rounds, as libproc's does. It
 * leads its own process group, which also holds its multiprocessing children: the fatal paths kill
 * the whole group.
 */

static const char python_coproc_script[] =
    "import multiprocessing as mp, subprocess, sys, time\n"
    "def sq(x):\n"
    "    return x * x + 7\n"
    "def producer(q, go, n):\n"
    "    msg = b'm' * 64\n"
    "    go.wait()\n"
    "    put = q.put\n"
    "    for _ in range(n):\n"
    "        put(msg)\n"
    "def echo(c, other):\n"
    "    other.close()\n"
    "    try:\n"
    "        while True:\n"
    "            c.send_bytes(c.recv_bytes())\n"
    "    except EOFError:\n"
    "        pass\n"
    "def net(cmd, n):\n" /* scenario 12's contenders, against libproc's servers */
    "    from multiprocessing.connection import Client\n"
    "    what, address = cmd[3:].split('|', 1)\n"
    "    if address.startswith('unix:@'):\n"
    "        address = '\\0' + address[6:]\n"
    "    else:\n"
    "        host, port = address[4:].rsplit(':', 1); address = (host, int(port))\n"
    "    key = b'bench key'\n"
    "    clock = time.perf_counter_ns\n"
    "    if what == 'conn':\n"
    "        t0 = clock()\n"
    "        for _ in range(n):\n"
    "            c = Client(address, authkey=key)\n"
    "            c.send_bytes(b'ping\\0\\0\\0\\0')\n"
    "            if len(c.recv_bytes()) != 8:\n"
    "                sys.exit(3)\n"
    "            c.close()\n"
    "        return (clock() - t0) / n\n"
    "    c = Client(address, authkey=key)\n"
    "    if what == 'rt':\n"
    "        msg = b'p' * 64\n"
    "        t0 = clock()\n"
    "        for _ in range(n):\n"
    "            c.send_bytes(msg)\n"
    "            if len(c.recv_bytes()) != 64:\n"
    "                sys.exit(3)\n"
    "    else:\n" /* bulk: n MiB, then an empty message; the sink answers one byte */
    "        data = bytes(range(256)) * 4096\n"
    "        t0 = clock()\n"
    "        for _ in range(n):\n"
    "            c.send_bytes(data)\n"
    "        c.send_bytes(b'')\n"
    "        if c.recv_bytes() != b'k':\n"
    "            sys.exit(3)\n"
    "    t = (clock() - t0) / n\n"
    "    c.close()\n"
    "    return t\n"
    "def main():\n"
    "    ctx = mp.get_context('fork')\n"
    "    workers = int(sys.argv[1])\n"
    "    try:\n" /* Pool, Queue and Event need POSIX semaphores (/dev/shm) */
    "        ctx.Lock()\n"
    "        q = ctx.Queue(); q.close()\n"
    "    except Exception as e:\n"
    "        print('nomp', type(e).__name__, flush=True)\n"
    "        return\n"
    "    print('ready', sys.version.split()[0], flush=True)\n"
    "    pool = None\n"
    "    clock = time.perf_counter_ns\n"
    "    for line in iter(sys.stdin.readline, ''):\n"
    "        cmd, n = line.split()\n"
    "        n = int(n)\n"
    "        if cmd == 'quit':\n"
    "            break\n"
    "        elif cmd == 'map':\n"
    "            if pool is None:\n"
    "                pool = ctx.Pool(workers)\n"
    "            data = list(range(n))\n"
    "            t0 = clock()\n"
    "            r = pool.map(sq, data)\n"
    "            t1 = clock()\n"
    "            if len(r) != n or r[-1] != (n - 1) * (n - 1) + 7:\n"
    "                sys.exit(3)\n"
    "            print((t1 - t0) / n, flush=True)\n"
    "        elif cmd in ('imap', 'imapu'):\n" /* "imap N": 11 */
    "            if pool is None:\n"
    "                pool = ctx.Pool(workers)\n"
    "            go = pool.imap if cmd == 'imap' else pool.imap_unordered\n"
    "            t0 = clock()\n"
    "            s = 0\n"
    "            for r in go(sq, range(n), chunksize=1000):\n"
    "                s += r\n"
    "            t1 = clock()\n"
    "            if s != sum(x * x + 7 for x in range(n)):\n"
    "                sys.exit(3)\n"
    "            print((t1 - t0) / n, flush=True)\n"
    "        elif cmd == 'endmap':\n"
    "            if pool is not None:\n"
    "                pool.close(); pool.join(); pool = None\n"
    "            print('ok', flush=True)\n"
    "        elif cmd == 'queue':\n"
    "            q = ctx.Queue(); go = ctx.Event()\n"
    "            p = ctx.Process(target=producer, args=(q, go, n)); p.start()\n"
    "            get = q.get\n"
    "            t0 = clock()\n"
    "            go.set()\n"
    "            for _ in range(n):\n"
    "                if len(get()) != 64:\n"
    "                    sys.exit(3)\n"
    "            t1 = clock()\n"
    "            p.join(); q.close(); q.join_thread()\n"
    "            if p.exitcode != 0:\n"
    "                sys.exit(3)\n"
    "            print((t1 - t0) / n, flush=True)\n"
    "        elif cmd.startswith('pipe'):\n" /* "pipe<bytes> N" */
    "            size = int(cmd[4:])\n"
    "            a, b = ctx.Pipe(duplex=True)\n"
    "            p = ctx.Process(target=echo, args=(b, a)); p.start(); b.close()\n"
    "            msg = b'p' * size\n"
    "            for _ in range(20):\n"
    "                a.send_bytes(msg); a.recv_bytes()\n"
    "            s = []\n"
    "            for _ in range(n):\n"
    "                t0 = clock(); a.send_bytes(msg)\n"
    "                if len(a.recv_bytes()) != size:\n"
    "                    sys.exit(3)\n"
    "                s.append(clock() - t0)\n"
    "            a.close(); p.join()\n"
    "            if p.exitcode != 0:\n"
    "                sys.exit(3)\n"
    "            s.sort()\n"
    "            print(s[len(s) // 2], s[min(len(s) - 1, len(s) * 99 // 100)], flush=True)\n"
    "        elif cmd == 'catrun':\n" /* "catrun MiB": 10 */
    "            data = b'c' * (n << 20)\n"
    "            t0 = clock()\n"
    "            r = subprocess.run(['cat'], input=data, capture_output=True)\n"
    "            t1 = clock()\n"
    "            if r.returncode != 0 or r.stdout != data:\n"
    "                sys.exit(3)\n"
    "            print(t1 - t0, flush=True)\n"
    "        elif cmd == 'echorun':\n" /* "echorun N": 10 */
    "            t0 = clock()\n"
    "            for _ in range(n):\n"
    "                r = subprocess.run(['echo', 'hi'], capture_output=True)\n"
    "                if r.returncode != 0 or r.stdout != b'hi\\n':\n"
    "                    sys.exit(3)\n"
    "            print((clock() - t0) / n, flush=True)\n"
    "        elif cmd.startswith('net'):\n" /* "net<what>|<address> N": 12 */
    "            print(net(cmd, n), flush=True)\n"
    "        else:\n"
    "            sys.exit(2)\n"
    "    if pool is not None:\n"
    "        pool.terminate(); pool.join()\n"
    "if __name__ == '__main__':\n"
    "    main()\n";

static bool py_tried;       /* python_start() ran (once per benchmark run) */
static char py_version[32]; /* of the coprocess */
static char py_skip[128];   /* why there is no coprocess, for the notes */

/* Reads one line (without the '\n') from the coprocess, waiting up to 10 min. */
static void python_read_line(char *buf, size_t cap)
{
    size_t len = 0;
    uint64_t deadline = now_ns() + 600ull * 1000000000ull;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline)
            die("python coprocess: no answer within 10 minutes");
        struct pollfd p = {.fd = live_py.from, .events = POLLIN};
        int n = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("poll: %s", strerror(errno));
        if (n == 0)
            continue;
        char c;
        ssize_t r = read(live_py.from, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read from python: %s", strerror(errno));
        if (r == 0)
            die("python coprocess exited (see its traceback above)");
        if (c == '\n')
            break;
        if (len + 1 < cap)
            buf[len++] = c;
    }
    buf[len] = '\0';
}

void python_cmd(char *buf, size_t cap, const char *cmd, long n)
{
    char line[64];
    int len = snprintf(line, sizeof line, "%s %ld\n", cmd, n);
    for (int off = 0; off < len;) {
        ssize_t w = send(live_py.to, line + off, (size_t)(len - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            die("python coprocess gone: %s", strerror(errno));
        off += (int)w;
    }
    python_read_line(buf, cap);
}

double python_ns(const char *cmd, long n)
{
    char buf[128];
    python_cmd(buf, sizeof buf, cmd, n);
    char *end;
    double v = strtod(buf, &end);
    if (end == buf || !(v > 0))
        die("python '%s %ld' answered '%s'", cmd, n, buf);
    return v;
}

/*
 * Starts the coprocess (once); true when it runs. Without python3, or when
 * its multiprocessing cannot work here (no /dev/shm for its semaphores), the
 * Python contenders are left out and py_skip says why.
 */
bool python_start(void)
{
    if (live_py.pid > 0)
        return true;
    if (py_tried)
        return false;
    py_tried = true;
    if (!find_in_path("python3", python_path, sizeof python_path)) {
        snprintf(py_skip, sizeof py_skip, "no python3 in PATH");
        return false;
    }
    int sv[2], out[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair: %s", strerror(errno));
    if (pipe2(out, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    char cpus[16];
    snprintf(cpus, sizeof cpus, "%d", proc_cpu_count());
    char *argv[] = {"python3", "-c", (char *)python_coproc_script, cpus, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int err = posix_spawn_file_actions_init(&fa);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (!err)
        err = posix_spawnattr_init(&attr);
    if (!err)
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    if (!err)
        err = posix_spawnattr_setpgroup(&attr, 0);
    if (err)
        die("posix_spawn attributes: %s", strerror(err));
    pid_t pid;
    err = posix_spawn(&pid, python_path, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (err)
        die("posix_spawn(%s): %s", python_path, strerror(err));
    live_py.pid = pid;
    live_py.to = sv[0];
    live_py.from = out[0];
    close(sv[1]);
    close(out[1]);
    char buf[128];
    python_read_line(buf, sizeof buf);
    if (sscanf(buf, "ready %31s", py_version) == 1)
        return true;
    snprintf(py_skip, sizeof py_skip, "python3 multiprocessing unusable here (%.60s)", buf);
    live_coproc_kill(&live_py); /* it printed why and is returning anyway */
    return false;
}

void python_stop(void)
{
    if (live_py.pid <= 0)
        return;
    char line[] = "quit 0\n";
    if (send(live_py.to, line, sizeof line - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof line - 1))
        die("python coprocess gone: %s", strerror(errno));
    close(live_py.to);
    live_py.to = -1;
    pid_t pid = live_py.pid;
    reap_ok(pid);
    live_py.pid = 0;
    close(live_py.from);
    live_py.from = -1;
    kill(-pid, SIGKILL); /* nothing should be left of its group (ESRCH); be sure */
    reap_group(pid);
}

void python_skipped_note(const char *what)
{
    add_note("%s: python contender skipped: %s", what, py_skip);
}

void python_ratio_info(int scenario, const char *const *names, int n, const char *what)
{
    for (int k = 0; k < n; k++) {
        const struct row *lp = NULL, *py = NULL;
        size_t nrows;
        const struct row *rows = all_rows(&nrows);
        for (size_t i = 0; i < nrows; i++) {
            if (rows[i].scenario != scenario || strcmp(rows[i].name, names[k]) != 0)
                continue;
            if (strcmp(rows[i].contender, "libproc") == 0)
                lp = &rows[i];
            else if (strcmp(rows[i].contender, "python") == 0)
                py = &rows[i];
        }
        char line[96];
        snprintf(line, sizeof line, "%d: %s, %s / libproc", scenario, names[k], what);
        info_line(line, lp && py, "%.1fx", lp && py ? py->value / lp->value : 0);
    }
}

const char *python_version(void)
{
    return py_version;
}
