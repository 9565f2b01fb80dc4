/* SPDX-License-Identifier: MIT */
/**
 * @file
 * libproc: talking to children. Python's multiprocessing Pipe, Queue,
 * JoinableQueue, Lock, Semaphore, Event and Value/Array for C.
 *
 * The conventions of <libproc/proc.h> apply here too: int functions return 0
 * (or a documented non-negative value) or a negative errno, pointer functions
 * NULL with errno set; a NULL object is -EINVAL (NULL / false / 0 for other
 * return types) except that the destructors (proc_conn_close, proc_queue_free,
 * proc_lock_free, proc_sem_free, proc_event_free, proc_shared_free) accept NULL
 * as a no-op returning 0; timeouts are poll(2)-style milliseconds
 * (PROC_WAIT_FOREVER waits, 0 only checks, below -1 is -EINVAL) on
 * CLOCK_MONOTONIC, and a signal handler interrupting a wait does not restart
 * the full timeout. Nothing prints, aborts or exits. Every fd is O_CLOEXEC.
 *
 * Sharing: create an object BEFORE proc_start(); forked children (callback
 * mode) inherit it and use the same handle. Each process frees its own handle
 * (the destructors only release the calling process's resources). Objects are
 * not inherited by exec-mode children.
 *
 * Kill safety: every object below keeps working for the surviving processes
 * when any process using it is killed at any instruction, SIGKILL included: no
 * deadlock, no torn message, no duplicated message, no leak in the survivors.
 * The precise guarantee of each object is in its comment. Shared state lives
 * in MAP_SHARED memory guarded by process-shared robust mutexes; waiters sleep
 * on futex sequence counters that are always bumped while the guarding mutex
 * is held, so a process killed half-way through waking others hands the wake
 * on to the next locker (which sees the mutex's owner-died state and repairs).
 * Waits never hold the mutex, so a waiter killed while waiting affects nobody.
 *
 * Not async-signal-safe: do not call these functions from signal handlers.
 */
#ifndef LIBPROC_IPC_H
#define LIBPROC_IPC_H

#include <libproc/proc.h>

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ standard streams */

/** proc_set_stdio(): the child uses the parent's stream (the default). */
#define PROC_STDIO_INHERIT (-1)
/** proc_set_stdio(): a pipe; the parent gets its end from proc_stdio_fd(). */
#define PROC_STDIO_PIPE (-2)
/** proc_set_stdio(): /dev/null. */
#define PROC_STDIO_NULL (-3)

/**
 * Chooses what the child's standard stream `stream` (0 stdin, 1 stdout,
 * 2 stderr) is, in both modes: PROC_STDIO_INHERIT, PROC_STDIO_PIPE,
 * PROC_STDIO_NULL, or an fd >= 0 of the parent that the child gets as a
 * duplicate (the parent keeps its fd). Only before proc_start(). The child's
 * dup2()s are ordered so that overlapping choices (e.g. stdout to the
 * parent's fd 2 and stderr to the parent's fd 1) come out right.
 * Returns 0; -EBUSY once started (checked first); -EINVAL (NULL, stream not
 * 0..2, how below -3); -EBADF when how is an fd that is not open.
 */
PROC_API int proc_set_stdio(proc_t *p, int stream, int how);

/**
 * The parent's end of a PROC_STDIO_PIPE stream (the write end for stdin, the
 * read end for stdout/stderr), created by proc_start(). Owned by p: valid
 * until proc_stdio_close() or proc_close(); do not close it yourself.
 * Returns the fd; -EBADF when the stream is not a pipe, not started yet, its
 * end was closed, or the caller is not the process that started p; -EINVAL
 * (NULL, stream not 0..2).
 */
PROC_API int proc_stdio_fd(const proc_t *p, int stream);

/**
 * Closes the parent's end of a PROC_STDIO_PIPE stream now, e.g. to give the
 * child's stdin EOF. proc_close() closes any still open.
 * Returns 0; -EBADF when there is no open end; -EINVAL (NULL, stream not 0..2).
 */
PROC_API int proc_stdio_close(proc_t *p, int stream);

/** Output captured by proc_communicate(). Zero-initialise before the first call. */
typedef struct proc_output {
    char *data; /**< malloc'd, NUL-terminated; the caller frees it; NULL when nothing was read */
    size_t len; /**< bytes in data, the NUL not counted */
} proc_output_t;

/**
 * Python's Popen.communicate() on a started child: writes input to its stdin
 * pipe and closes it, reads its stdout and stderr pipes to EOF at the same
 * time (one thread, poll(2): no deadlock whatever the sizes or the order in
 * which the child reads and writes), then joins it. out/err (either may be
 * NULL: that stream is then read and dropped) receive what the child wrote,
 * appended, in buffers that grow by doubling. A child that closes its stdin
 * early is not an error. Writing never raises SIGPIPE in the process.
 * Returns 0 once the child has ended, whatever its exit code; -ETIMEDOUT when
 * the time ran out: the child is left running, what was read so far is in
 * out/err, and a later call goes on from there (pass the same out/err again,
 * unchanged; as in Python, the first call's input is remembered, a later call
 * goes on writing what is left of it and ignores its own input arguments, so
 * that buffer must stay valid until a call returns 0). -EINVAL (NULL, not
 * started, input_len > 0 but input NULL or stdin not PROC_STDIO_PIPE, a non-NULL out or
 * err whose stream is not a pipe, a bad timeout); -ECHILD (not the caller's
 * child); -ENOMEM (what was read so far stays in out/err).
 * Not thread-safe against other calls on the same object.
 */
PROC_API int proc_communicate(proc_t *p, const void *input, size_t input_len, proc_output_t *out,
                              proc_output_t *err, int timeout_ms);

/* ------------------------------------------------------------------- Pipe() */

/**
 * One end of a message channel (Python's Connection). Opaque.
 *
 * Each proc_conn_send() is one message, received whole by one
 * proc_conn_recv(), in order. Messages of any size (tested to 64 MiB) are
 * atomic: small ones travel as one SOCK_SEQPACKET record, large ones (over
 * 64 KiB) as a memfd passed in one record. A sender killed at any moment has
 * sent a message entirely or not at all; a receiver killed inside
 * proc_conn_recv() either left the message in the channel or had taken it
 * (then it is lost, as if it had been killed just after the call returned).
 * Several processes or threads may send on the same end at once (messages
 * never interleave) and receive from the same end at once (each message goes
 * to exactly one of them, whole).
 *
 * End of file: proc_conn_recv() returns -EPIPE once every copy of the other
 * end is closed (in every process: children inherit both ends, so close the
 * end a process does not use, as with Python's Pipe) and nothing is left.
 */
typedef struct proc_conn proc_conn_t;

/**
 * Creates a connected pair (Python's Pipe(duplex)). With duplex both ends
 * send and receive; without, *a only receives and *b only sends (sending on
 * *a or receiving on *b is -EBADF).
 * Returns 0 and sets *a and *b; -EINVAL (a or b NULL), -EMFILE, -ENFILE,
 * -ENOMEM (then *a and *b are NULL).
 */
PROC_API int proc_pipe(proc_conn_t **a, proc_conn_t **b, bool duplex);

/**
 * Sends len bytes (len 0 is a valid, empty message) as one message. Blocks
 * while the channel is full (its buffer is the kernel's socket buffer).
 * Returns 0; -EINVAL (NULL c, msg NULL with len > 0); -EBADF (a receive-only
 * end); -EPIPE (the other end is closed everywhere: no SIGPIPE is raised);
 * -ENOMEM, -ENOBUFS, -EMFILE, -ETOOMANYREFS (resources for a large message).
 * Thread-safe; messages of concurrent senders never interleave.
 */
PROC_API int proc_conn_send(proc_conn_t *c, const void *msg, size_t len);

/**
 * Receives one whole message into buf (cap bytes; buf may be NULL when cap is
 * 0), waiting up to timeout_ms for one to arrive.
 * Returns the length of the message (0 for an empty one); -ETIMEDOUT when
 * none arrived in time; -EMSGSIZE when cap is too small (the message stays
 * queued: call again with a larger buffer); -EPIPE once the other end is
 * closed in every process and nothing is left; -EBADF (a send-only end);
 * -EINVAL (NULL c, buf NULL with cap > 0, timeout below -1); -EPROTO (a
 * record that libproc did not send, e.g. written to the fileno directly; it
 * is dropped); -EMFILE (a large message whose memfd could not be received:
 * that message is lost).
 * Thread-safe. When another process receives from the same end and takes
 * the checked message between this call's size check and its receive, and
 * the message after it is too large for cap, that one is kept by this handle:
 * its next call returns it (-EMSGSIZE until cap fits) before anything else.
 * Waiting (on a pipe's end): with timeout_ms other than 0, an empty channel is asked again,
 * yielding the CPU in between, for up to 20 us of this thread's time before
 * the call sleeps in poll(): an answer that comes at once then costs no
 * wake-up. So a call that waits uses up to 20 us of CPU (a few dozen system
 * calls) first.
 */
PROC_API ssize_t proc_conn_recv(proc_conn_t *c, void *buf, size_t cap, int timeout_ms);

/**
 * Waits up to timeout_ms until proc_conn_recv() would not block.
 * Returns 1 when a message or end of file is ready, 0 when not (in time);
 * -EBADF (a send-only end); -EINVAL (NULL c, timeout below -1). On a
 * connection from proc_accept() or proc_connect(), 1 means that bytes of a
 * message (or end of file) are there: the rest of a large message may still
 * be on its way.
 */
PROC_API int proc_conn_poll(proc_conn_t *c, int timeout_ms);

/**
 * The end's file descriptor, for poll/select/epoll (readable when a message
 * or end of file is ready; on a connection from proc_accept() or
 * proc_connect(), when bytes of a message are: see proc_conn_poll()). Owned
 * by c: do not read, write or close it.
 * Returns the fd, or -EINVAL for NULL.
 */
PROC_API int proc_conn_fileno(const proc_conn_t *c);

/**
 * Closes this process's copy of the end and frees the handle. The other end
 * sees end of file once every process has closed (or lost by exiting) its
 * copy. Returns 0 (also for NULL). Must not race other calls on c.
 */
PROC_API int proc_conn_close(proc_conn_t *c);

/* ------------------------------------------- Listener() / Client() */

/**
 * A listening socket that hands out authenticated connections (Python's
 * multiprocessing.connection.Listener). Opaque.
 *
 * Addresses are text: "unix:/path" (a socket file; it must not exist yet,
 * and the listener removes it when the process that made it closes it),
 * "unix:@name" (Linux's abstract namespace: no file), "tcp:HOST:PORT" (HOST
 * an IPv4 address or a name, resolved to IPv4 with getaddrinfo(3), the first
 * answer taken: as Python's (host, port) tuples; resolving a name may block
 * on DNS beyond a call's timeout) and "tcp:[IPv6]:PORT". Port 0 picks a free
 * port; proc_listener_address() tells which.
 *
 * Keys: both ends prove to each other that they hold the same key before a
 * message passes, with the challenge-response of CPython's
 * multiprocessing.connection (HMAC over a random challenge from
 * getrandom(2); the key itself never travels). A libproc end and a Python
 * end (3.11's HMAC-MD5 handshake and 3.12's "{sha256}" one) accept each
 * other, and a connection's proc_conn_send()/proc_conn_recv() are Python's
 * send_bytes()/recv_bytes(). A NULL key means proc_current()'s authkey
 * (Python's default); otherwise keylen is 1..256 bytes.
 *
 * Connections from proc_accept() and proc_connect() are proc_conn_t like a
 * pipe's ends, with these differences: they are TCP or AF_UNIX streams with
 * Python's framing (a 4-byte big-endian length, or -1 and an 8-byte length
 * for messages over 2 GiB, then the bytes), so any size up to available
 * memory passes; a receive that times out in the middle of a message keeps
 * what it read and the next call goes on; a peer that breaks the framing
 * makes every later receive return -EPROTO (and one that could not keep a
 * message it had begun, -ENOMEM); a send that failed with part of a message
 * on the wire makes every later send return that error; other socket errors
 * come back as their negative errno; a connection belongs to the
 * process that made it (a forked child must not use an inherited copy while
 * the parent does). Threads of one process may send and receive at once;
 * concurrent receivers (and concurrent senders) take turns, whole message
 * by whole message.
 *
 * Thread-safety: a listener may be used by several threads at once except
 * for proc_listener_close().
 */
typedef struct proc_listener proc_listener_t;

/**
 * How long proc_accept() gives a peer to finish the handshake when its own
 * timeout is 0 or PROC_WAIT_FOREVER, so that a silent peer never holds a
 * listener for ever (and a poll on proc_listener_fileno() followed by
 * proc_accept(l, &c, 0) works).
 */
#define PROC_HANDSHAKE_TIMEOUT_MS 10000

/**
 * Binds and listens on address with the given key (NULL: proc_current()'s
 * authkey, keylen ignored).
 * Returns the listener, or NULL with errno EINVAL (NULL or malformed
 * address, keylen 0 or over 256), EADDRINUSE (the socket file or port is
 * taken), EADDRNOTAVAIL (HOST does not resolve, or is not this machine's),
 * EACCES (no permission for the path or port), ENOENT (the socket file's
 * directory does not exist), ENOMEM, EMFILE, ENFILE, or another errno of
 * socket(2), bind(2) or listen(2).
 */
PROC_API proc_listener_t *proc_listen(const char *address, const void *authkey, size_t keylen);

/**
 * The address the listener is bound to, in proc_listen()'s syntax, with the
 * real port when 0 was asked for (e.g. "tcp:127.0.0.1:40311"). Owned by l.
 * NULL with errno EINVAL for NULL.
 */
PROC_API const char *proc_listener_address(const proc_listener_t *l);

/**
 * The listening socket's fd, for poll/select/epoll: readable when a peer is
 * waiting to be accepted. Owned by l: do not read, accept on or close it.
 * Returns the fd, or -EINVAL for NULL.
 */
PROC_API int proc_listener_fileno(const proc_listener_t *l);

/**
 * Waits up to timeout_ms for a peer, then authenticates it within a budget
 * of its own: timeout_ms again, or PROC_HANDSHAKE_TIMEOUT_MS when timeout_ms
 * is 0 or PROC_WAIT_FOREVER. So a peer that says nothing costs at most that
 * budget, and a call returns within twice a positive timeout_ms.
 * Returns 0 with a new connection in *c (the caller closes it with
 * proc_conn_close()); -ETIMEDOUT (no peer came, or it did not finish the
 * handshake in time: it is dropped); -EACCES (the peer's answer did not
 * prove our key, a wrong key or well-framed garbage: it is told so, as
 * Python's AuthenticationError, and dropped; or its challenge named a digest
 * we do not know); -ECONNABORTED (the peer hung up, or broke the framing,
 * e.g. announced a message over 256 bytes, before it had proved the key);
 * -EINVAL (NULL l or c, timeout below -1); -EMFILE, -ENFILE, -ENOMEM. On
 * every error *c is NULL and the listener stays usable. Thread-safe:
 * concurrent callers each take a different peer.
 */
PROC_API int proc_accept(proc_listener_t *l, proc_conn_t **c, int timeout_ms);

/**
 * Closes the listener (peers not yet accepted are dropped) and, when the
 * calling process made it, removes its socket file. Connections already
 * accepted stay open. Returns 0 (also for NULL). Must not race other calls on l.
 */
PROC_API int proc_listener_close(proc_listener_t *l);

/**
 * Connects to a listener at address (Python's
 * multiprocessing.connection.Client) and runs the handshake with the given
 * key (NULL: proc_current()'s authkey, keylen ignored), all within
 * timeout_ms.
 * Returns 0 with the connection in *c; -EACCES (the listener holds another
 * key, did not prove it holds ours, or is not a multiprocessing listener;
 * also no permission to connect to the socket file); -ECONNREFUSED (nobody
 * listens there); -ENOENT (no such socket file); -ETIMEDOUT; -ECONNABORTED (the
 * listener hung up or broke the protocol during the handshake); -EINVAL
 * (NULL or malformed address, NULL c, keylen 0 or over 256, timeout below
 * -1); -EADDRNOTAVAIL (HOST does not resolve); -EMFILE, -ENFILE, -ENOMEM,
 * and what connect(2) reports (-ENETUNREACH, ...). On error *c is NULL.
 * Thread-safe.
 */
PROC_API int proc_connect(const char *address, const void *authkey, size_t keylen, proc_conn_t **c,
                          int timeout_ms);

/* ------------------------------------------------------------------ Queue() */

/**
 * A multi-producer, multi-consumer FIFO of messages between any processes
 * (Python's JoinableQueue). Opaque.
 *
 * Kill safety. Every message is copied into a ring in shared memory while
 * the queue's robust mutex is held, and becomes visible only at the commit:
 * one store that marks a small journal of the new positions and counters
 * valid, after which they are applied (a process that finds the mutex's
 * previous owner dead rolls a valid journal forward; without one, the state
 * is untouched). Hence:
 *  - a producer killed inside proc_queue_put() leaves either the whole
 *    message or nothing; nothing half-written is ever seen and nothing is
 *    duplicated;
 *  - a consumer killed inside proc_queue_get() either leaves the message in
 *    the queue (killed before the commit) or had taken it (killed after it);
 *    in the second case that one message is lost, exactly as if the process
 *    had been killed right after proc_queue_get() returned. So a killed
 *    consumer loses at most the one message it was taking, per thread in
 *    proc_queue_get();
 *  - processes waiting in put/get/join are never left asleep by a killed
 *    process, and a waiter that is killed disturbs nobody;
 *  - a process killed inside proc_queue_close() has closed the queue or has
 *    not; the descriptor of proc_queue_fileno() is never left unreadable
 *    while a get would succeed (a kill can at worst leave it readable with
 *    nothing to get, until the next operation on the queue).
 * Items taken by a consumer that dies before proc_queue_task_done() stay
 * unfinished (proc_queue_join() waits for them), as in Python.
 */
typedef struct proc_queue proc_queue_t;

/**
 * Creates a queue for messages of up to max_msg bytes (>= 1) holding at most
 * max_items messages, or with max_items 0 as many as memory allows (the ring
 * reserves address space up to the machine's RAM, capped at 64 GiB, and only
 * touches pages as it fills; consumed regions are returned to the system).
 * Create it before proc_start() of the processes that use it.
 *
 * Choosing max_items: a full queue lets one put through per get, so the
 * producers and consumers then take turns at the pace of a process wake-up
 * (tens of microseconds) instead of a copy (tens of nanoseconds). Give it
 * room for the bursts of the slower side, at least a few hundred items for
 * small messages: a bounded queue costs max_items x (max_msg rounded up to 8,
 * plus 8) bytes of address space, touched only as it fills. On 2 CPUs, 64-byte
 * records through producer -> 3 workers -> consumer (`proc_bench` scenario 8)
 * ran at about 0.2 M/s with 16 items, 0.6-0.7 M/s with 64 and 1.2-1.5 M/s
 * from 256 up.
 *
 * Every queue holds one file descriptor (an eventfd, O_CLOEXEC) in each
 * process that has it, for proc_queue_fileno(); forked children inherit it
 * with the same number. Do not close it behind the queue's back (a child
 * that closes every inherited descriptor cannot use the queue).
 *
 * Returns the queue, or NULL with errno EINVAL (max_msg 0), ENOMEM, or
 * EMFILE / ENFILE (no file descriptor left for its eventfd).
 */
PROC_API proc_queue_t *proc_queue_new(size_t max_items, size_t max_msg);

/**
 * Appends a copy of msg (len bytes, 0 allowed) at the tail, waiting up to
 * timeout_ms for room in a bounded queue.
 * Returns 0 (committed); -EPIPE when the queue is closed (proc_queue_close(),
 * by any process; also when it closes while this call waits for room);
 * -ETIMEDOUT when the queue stayed full; -EMSGSIZE when len > max_msg;
 * -ENOMEM when an unbounded queue has exhausted its memory; -EINVAL (NULL q,
 * msg NULL with len > 0, timeout below -1).
 * A timeout of 0 still waits up to a few milliseconds for the queue's internal
 * lock, which other processes hold only to copy one message.
 * Thread-safe.
 */
PROC_API int proc_queue_put(proc_queue_t *q, const void *msg, size_t len, int timeout_ms);

/**
 * Removes the message at the head into buf (cap bytes), waiting up to
 * timeout_ms for one.
 * Returns its length; -EPIPE when the queue is empty and closed
 * (proc_queue_close(), by any process): at once, without waiting, and also
 * when it closes while this call waits; a closed queue still hands out the
 * messages put before the close. -ETIMEDOUT when the queue stayed empty;
 * -EMSGSIZE when cap is smaller than the head message (it stays at the
 * head); -EINVAL (NULL q, buf NULL with cap > 0, timeout below -1). Same
 * note on timeout 0 as proc_queue_put(). Thread-safe.
 */
PROC_API ssize_t proc_queue_get(proc_queue_t *q, void *buf, size_t cap, int timeout_ms);

/** Number of messages in the queue right now (approximate while others use it); 0 for NULL. */
PROC_API size_t proc_queue_size(proc_queue_t *q);

/**
 * Marks one item taken by proc_queue_get() as processed (JoinableQueue).
 * Returns 0; -EINVAL (NULL, or called more times than items were put).
 */
PROC_API int proc_queue_task_done(proc_queue_t *q);

/**
 * Waits up to timeout_ms until every item ever put has been marked with
 * proc_queue_task_done(). Returns 0; -ETIMEDOUT; -EINVAL (NULL, bad timeout).
 */
PROC_API int proc_queue_join(proc_queue_t *q, int timeout_ms);

/**
 * Closes the queue for every process that shares it (Python's Queue.close()
 * stops only the caller's puts; this is end of stream for everybody): every
 * later proc_queue_put() returns -EPIPE, and proc_queue_get() returns the
 * messages still queued, then -EPIPE at once instead of waiting. Processes
 * blocked in proc_queue_get() on the empty queue, or in proc_queue_put() on
 * a full bounded one, wake up and return -EPIPE; proc_queue_fileno()'s
 * descriptor becomes readable for good. proc_queue_task_done() and
 * proc_queue_join() work as before. The queue stays mapped: each process
 * still frees its handle with proc_queue_free().
 * Returns 0, also when the queue was already closed; -EINVAL for NULL;
 * -ENOTRECOVERABLE when the queue's lock is broken (cannot happen unless
 * its memory was overwritten). Thread-safe; a process killed inside it has
 * closed the queue or has not.
 */
PROC_API int proc_queue_close(proc_queue_t *q);

/**
 * A file descriptor for poll(2), select(2) or epoll that is readable while
 * proc_queue_get() would not block: a message is queued, or the queue is
 * closed (readable then also when it is empty, as end of file is on a pipe).
 * It is readable in every process that shares the queue, whichever process
 * put, took or closed. Owned by q (the eventfd made by proc_queue_new(),
 * closed by proc_queue_free()): do not read, write or close it; it has the
 * same number in every process that inherited the queue.
 *
 * The first call, in any process, turns the upkeep on for the queue's
 * lifetime: from then on the put that makes the queue non-empty and the get
 * that empties it each make one more system call. Until then puts and gets
 * cost nothing extra.
 *
 * Readiness is a hint, as for a socket: with several consumers another one
 * may take the message first, so get with a timeout of 0 after poll and
 * expect -ETIMEDOUT now and then. A process killed in the middle of a put
 * or a get can leave the descriptor readable with nothing queued until the
 * next put, get or close on the queue (such a get returns
 * -ETIMEDOUT); it never leaves it unreadable while a message is queued.
 * Returns the descriptor (>= 0); -EINVAL for NULL; -ENOTRECOVERABLE as for
 * proc_queue_close(). Thread-safe.
 */
PROC_API int proc_queue_fileno(proc_queue_t *q);

/**
 * Unmaps the queue from the calling process, closes this process's copy of
 * its descriptor and frees this process's handle; other processes keep using
 * their own. Returns 0 (also for NULL). Must not race other calls on q in
 * this process.
 */
PROC_API int proc_queue_free(proc_queue_t *q);

/* --------------------------------------------- Lock / Semaphore / Event */

/**
 * A mutual exclusion lock across processes (Python's multiprocessing.Lock),
 * held by one thread at a time. Opaque.
 *
 * Kill safety: a robust mutex. When the holder dies (any way, SIGKILL
 * included) the next acquirer gets -EOWNERDEAD and holds the lock; whatever
 * the lock protected may be half-updated and is the caller's to repair.
 * Waiters are never left blocked by a dead holder.
 */
typedef struct proc_lock proc_lock_t;

/** Creates an unlocked lock. NULL with errno ENOMEM on failure. */
PROC_API proc_lock_t *proc_lock_new(void);

/**
 * Acquires the lock for the calling thread, waiting up to timeout_ms.
 * Returns 0; -EOWNERDEAD when the previous holder died while holding it (the
 * caller now holds it); -ETIMEDOUT; -EDEADLK when the calling thread already
 * holds it (Python would deadlock); -EINVAL (NULL, timeout below -1).
 */
PROC_API int proc_lock_acquire(proc_lock_t *l, int timeout_ms);

/**
 * Releases the lock. Returns 0; -EPERM when the calling thread does not hold
 * it (another thread or process holds it, or nobody); -EINVAL for NULL.
 */
PROC_API int proc_lock_release(proc_lock_t *l);

/** Unmaps the lock from the calling process. Returns 0 (also for NULL). */
PROC_API int proc_lock_free(proc_lock_t *l);

/**
 * A counting semaphore across processes (Python's multiprocessing.Semaphore).
 * Opaque.
 *
 * Kill safety: a process killed inside acquire or release either changed the
 * value or did not; waiters are never left asleep by it. A semaphore has no
 * owner: units acquired by a process that dies are not given back.
 */
typedef struct proc_sem proc_sem_t;

/** Creates a semaphore with the given value (at most INT_MAX; else NULL, errno EINVAL). */
PROC_API proc_sem_t *proc_sem_new(unsigned value);

/**
 * Takes one unit, waiting up to timeout_ms for the value to be positive.
 * Returns 0; -ETIMEDOUT; -EINVAL (NULL, timeout below -1).
 */
PROC_API int proc_sem_acquire(proc_sem_t *s, int timeout_ms);

/**
 * Gives one unit back (any thread or process may) and wakes a waiter.
 * Returns 0; -EOVERFLOW when the value is already INT_MAX; -EINVAL for NULL.
 */
PROC_API int proc_sem_release(proc_sem_t *s);

/** Unmaps the semaphore from the calling process. Returns 0 (also for NULL). */
PROC_API int proc_sem_free(proc_sem_t *s);

/**
 * A flag processes can wait for (Python's multiprocessing.Event). Opaque.
 * Kill safety: a process killed inside proc_event_set() has set the flag and
 * woken every waiter, or has not set it; waiters are never left asleep.
 */
typedef struct proc_event proc_event_t;

/** Creates a cleared event. NULL with errno ENOMEM on failure. */
PROC_API proc_event_t *proc_event_new(void);

/** Sets the flag and wakes every waiter. Returns 0; -EINVAL for NULL. */
PROC_API int proc_event_set(proc_event_t *e);

/** Clears the flag. Returns 0; -EINVAL for NULL. */
PROC_API int proc_event_clear(proc_event_t *e);

/** Whether the flag is set; false for NULL. */
PROC_API bool proc_event_is_set(proc_event_t *e);

/**
 * Waits up to timeout_ms for the flag to be set.
 * Returns 0 when set (at once if it already is); -ETIMEDOUT; -EINVAL (NULL,
 * timeout below -1).
 */
PROC_API int proc_event_wait(proc_event_t *e, int timeout_ms);

/** Unmaps the event from the calling process. Returns 0 (also for NULL). */
PROC_API int proc_event_free(proc_event_t *e);

/* ------------------------------------------------------------ Value / Array */

/**
 * Allocates size bytes of zeroed memory shared by the calling process and
 * every child it starts afterwards (MAP_SHARED | MAP_ANONYMOUS), aligned to
 * 64 bytes. Plain memory: guard concurrent updates with a proc_lock_t or
 * C11 atomics (lock-free atomics work across processes).
 * Returns the memory, or NULL with errno EINVAL (size 0) or ENOMEM.
 */
PROC_API void *proc_shared_alloc(size_t size);

/**
 * Unmaps memory from proc_shared_alloc() in the calling process (other
 * processes keep their mapping). NULL is a no-op.
 */
PROC_API void proc_shared_free(void *mem);

#ifdef __cplusplus
}
#endif

#endif /* LIBPROC_IPC_H */
