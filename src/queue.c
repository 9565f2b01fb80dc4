/* SPDX-License-Identifier: MIT */
/*
 * Queue / JoinableQueue across processes.
 *
 * One MAP_SHARED mapping: this header (robust mutex, three wait channels,
 * state) followed by a byte ring. A message is an 8-byte length followed by
 * its bytes, padded to 8; it may wrap around the end of the ring.
 *
 * Commit protocol. Every operation runs under the robust mutex. A put copies
 * the message into free space past the tail, a get copies the head message
 * out; neither changes what other processes can see until the commit, which
 * writes the new state (head offset, bytes used, put and get counters) into a
 * journal, marks the journal valid with one store, applies it and marks it
 * invalid again. A process that dies holding the mutex has therefore either
 * not reached the marking store (the state is untouched; its half-copied
 * bytes lie in free space) or reached it (the next locker, which gets
 * EOWNERDEAD, applies the journal again: idempotent). task_done is a single
 * counter store. Waiters are woken before the commit (see ipc_lock.h),
 * and repair wakes every channel.
 *
 * Closing is one store of the Q_CLOSED bit under the mutex, after the
 * waiters were woken: puts then fail, gets take what is left and then fail
 * instead of waiting.
 *
 * Readiness. Every queue has an eventfd, inherited by fork like the mapping
 * (its number is in the header). Once some process asked for it
 * (proc_queue_fileno sets Q_POLLED) it is kept readable exactly while a get
 * would not block: an item is queued or the queue is closed. efd_set mirrors
 * whether its counter is non-zero, so that only the put that makes the
 * queue non-empty and the get that empties it make a system call. A change
 * that makes the queue readable raises the eventfd before its commit, one
 * that makes it unreadable drains it after its commit: a process killed in
 * between leaves at worst readiness with nothing to get (a poller woken for
 * nothing), which the next locker's repair takes back, never a poller asleep
 * while a get would succeed. Until Q_POLLED is set puts and gets leave the
 * eventfd alone.
 *
 * Memory. The ring is reserved with MAP_NORESERVE and touched lazily. When
 * the queue runs empty the head returns to offset 0, so light traffic stays
 * in the first pages; on large rings the consumer returns each 1 MiB chunk it
 * has left behind to the system (MADV_REMOVE), so resident memory follows
 * the queue's contents rather than its history.
 */
#include "ipc_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define Q_HDR 8u                    /* length prefix of a message */
#define Q_CHUNK ((uint64_t)1 << 20) /* unit of returning memory */
#define Q_MIN_RESERVE ((uint64_t)64 << 20)
#define Q_MAX_RESERVE ((uint64_t)64 << 30)

/* The bits of proc_queue.mode, each set once, under the mutex. */
#define Q_CLOSED 1u /* proc_queue_close: no more puts */
#define Q_POLLED 2u /* proc_queue_fileno: the eventfd is kept */

/* Head offset, bytes in use, messages ever put and ever got. */
struct qvals {
    uint64_t roff, used, nput, nget;
};

struct qstate {
    _Atomic uint64_t roff, used, nput, nget;
};

/*
 * The mutex, the wait channels, the read-only fields and the state each get
 * their own cache line(s), so that the two sides' writes to one do not evict
 * the others from the other side's cache.
 */
#define Q_LINE 64
struct proc_queue {
    _Alignas(Q_LINE) pthread_mutex_t mutex;
    _Alignas(Q_LINE) struct proc__ipc_chan not_empty, not_full, all_done;
    /* fixed at creation */
    _Alignas(Q_LINE) size_t map_len;
    size_t ring_off;    /* page-aligned offset of the ring in the mapping */
    size_t page;        /* the page size */
    uint64_t ring_len;  /* bytes, a multiple of 8 */
    uint64_t max_items; /* 0: unbounded */
    uint64_t max_msg;
    int efd;               /* the eventfd, the same number in every process */
    _Atomic uint32_t mode; /* Q_CLOSED, Q_POLLED: read by every operation */
    /* changed under the mutex, through the journal */
    _Alignas(Q_LINE) struct qstate st;
    struct qstate jnl;
    _Atomic uint32_t jnl_valid;
    _Atomic uint32_t efd_set; /* under the mutex: the eventfd's counter is not zero */
    _Alignas(Q_LINE) _Atomic uint64_t ndone; /* task_done calls */
};

static uint64_t slot_len(uint64_t len)
{
    return Q_HDR + ((len + 7) & ~(uint64_t)7);
}

static unsigned char *ring(proc_queue_t *q)
{
    return (unsigned char *)q + q->ring_off;
}

static uint64_t ring_add(const proc_queue_t *q, uint64_t off, uint64_t n)
{
    off += n;
    return off >= q->ring_len ? off - q->ring_len : off;
}

static void ring_write(proc_queue_t *q, uint64_t off, const void *src, uint64_t n)
{
    uint64_t first = n < q->ring_len - off ? n : q->ring_len - off;
    if (first)
        memcpy(ring(q) + off, src, first);
    if (n > first)
        memcpy(ring(q), (const unsigned char *)src + first, n - first);
}

static void ring_read(proc_queue_t *q, uint64_t off, void *dst, uint64_t n)
{
    uint64_t first = n < q->ring_len - off ? n : q->ring_len - off;
    if (first)
        memcpy(dst, ring(q) + off, first);
    if (n > first)
        memcpy((unsigned char *)dst + first, ring(q), n - first);
}

/* --------------------------------------------------------------- the journal */

static struct qvals load_state(proc_queue_t *q)
{
    struct qvals v = {atomic_load(&q->st.roff), atomic_load(&q->st.used), atomic_load(&q->st.nput),
                      atomic_load(&q->st.nget)};
    return v;
}

static void apply_journal(proc_queue_t *q)
{
    atomic_store_explicit(&q->st.roff, atomic_load(&q->jnl.roff), memory_order_release);
    atomic_store_explicit(&q->st.used, atomic_load(&q->jnl.used), memory_order_release);
    atomic_store_explicit(&q->st.nput, atomic_load(&q->jnl.nput), memory_order_release);
    atomic_store_explicit(&q->st.nget, atomic_load(&q->jnl.nget), memory_order_release);
    atomic_store_explicit(&q->jnl_valid, 0, memory_order_release);
}

/*
 * The commit: after the store of jnl_valid = 1 the operation has happened.
 * Release stores suffice: each one publishes every write before it (message
 * bytes, then the journal, then its mark), which is all a process that finds
 * the writer dead needs; the readers hold the mutex. Full barriers doubled
 * the cost of a put.
 */
static void commit(proc_queue_t *q, const struct qvals *v)
{
    atomic_store_explicit(&q->jnl.roff, v->roff, memory_order_release);
    atomic_store_explicit(&q->jnl.used, v->used, memory_order_release);
    atomic_store_explicit(&q->jnl.nput, v->nput, memory_order_release);
    atomic_store_explicit(&q->jnl.nget, v->nget, memory_order_release);
    atomic_store_explicit(&q->jnl_valid, 1, memory_order_release);
    apply_journal(q);
}

/* --------------------------------------------------------------- readiness */

static uint32_t mode_of(proc_queue_t *q)
{
    return atomic_load_explicit(&q->mode, memory_order_relaxed);
}

/* Makes the eventfd readable unless it is. */
static void efd_raise(proc_queue_t *q)
{
    if (atomic_load_explicit(&q->efd_set, memory_order_relaxed))
        return;
    uint64_t one = 1;
    if (write(q->efd, &one, sizeof one) == (ssize_t)sizeof one)
        atomic_store_explicit(&q->efd_set, 1, memory_order_relaxed);
}

/* Makes the eventfd unreadable: one read takes the whole counter (none waits: non-blocking). */
static void efd_drain(proc_queue_t *q)
{
    uint64_t n;
    ssize_t r = read(q->efd, &n, sizeof n);
    (void)r; /* EAGAIN: it was not readable */
    atomic_store_explicit(&q->efd_set, 0, memory_order_relaxed);
}

/* The eventfd from the state, whatever efd_set says (its writer may have died before the store). */
static void efd_sync(proc_queue_t *q)
{
    efd_drain(q);
    if (atomic_load(&q->st.nput) != atomic_load(&q->st.nget) || (mode_of(q) & Q_CLOSED))
        efd_raise(q);
}

static void repair(void *obj)
{
    proc_queue_t *q = obj;
    if (atomic_load(&q->jnl_valid))
        apply_journal(q);
    if (mode_of(q) & Q_POLLED)
        efd_sync(q);
    proc__ipc_wake_force(&q->not_empty);
    proc__ipc_wake_force(&q->not_full);
    proc__ipc_wake_force(&q->all_done);
}

/* ------------------------------------------------------------ giving memory back */

static bool overlaps(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    return a < d && c < b;
}

/* Whether [a, b) holds bytes of the live region described by v. */
static bool holds_live(const proc_queue_t *q, uint64_t a, uint64_t b, const struct qvals *v)
{
    if (v->used == 0)
        return false;
    uint64_t end = v->roff + v->used;
    if (end <= q->ring_len)
        return overlaps(a, b, v->roff, end);
    return overlaps(a, b, v->roff, q->ring_len) || overlaps(a, b, 0, end - q->ring_len);
}

static void trim_segment(proc_queue_t *q, uint64_t s, uint64_t e, const struct qvals *v)
{
    uint64_t page = q->page;
    for (uint64_t k = s / Q_CHUNK; k * Q_CHUNK < e; k++) {
        uint64_t a = k * Q_CHUNK;
        uint64_t b = a + Q_CHUNK < q->ring_len ? a + Q_CHUNK : q->ring_len;
        if (k == 0 || holds_live(q, a, b, v))
            continue;
        madvise(ring(q) + a, (size_t)((b - a + page - 1) / page * page), MADV_REMOVE);
    }
}

/* After a get consumed [from, from + len): frees the chunks it has left behind. */
static void trim(proc_queue_t *q, uint64_t from, uint64_t len, const struct qvals *v)
{
    if (q->ring_len < 4 * Q_CHUNK)
        return;
    uint64_t end = from + len;
    if (end <= q->ring_len) {
        trim_segment(q, from, end, v);
    } else {
        trim_segment(q, from, q->ring_len, v);
        trim_segment(q, 0, end - q->ring_len, v);
    }
}

/* ------------------------------------------------------------------ the API */

/* How much address space an unbounded queue reserves: the machine's RAM, clamped. */
static uint64_t reserve_len(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : Q_MIN_RESERVE;
    if (ram < Q_MIN_RESERVE)
        ram = Q_MIN_RESERVE;
    return ram > Q_MAX_RESERVE ? Q_MAX_RESERVE : ram;
}

/*
 * The queue's eventfd: the fd or -errno. Never 0-2: a callback-mode child's
 * standard streams are moved there (proc_set_stdio), which would leave the
 * child's puts writing to its stdin.
 */
static int new_eventfd(void)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fd > 2)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int err = errno;
    close(fd);
    return moved < 0 ? -err : moved;
}

proc_queue_t *proc_queue_new(size_t max_items, size_t max_msg)
{
    if (max_msg == 0) {
        errno = EINVAL;
        return NULL;
    }
    if (max_msg > Q_MAX_RESERVE) {
        errno = ENOMEM;
        return NULL;
    }
    uint64_t slot = slot_len(max_msg), reserve = reserve_len();
    uint64_t len = reserve;
    if (max_items > 0 && max_items <= reserve / slot)
        len = (uint64_t)max_items * slot;
    if (len < slot)
        len = slot;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t off = (sizeof(proc_queue_t) + page - 1) / page * page;
    proc_queue_t *q;
    for (;;) {
        q = proc__ipc_map(off + (size_t)len, true);
        if (q)
            break;
        /* Less address space than RAM (e.g. a ulimit -v): an unbounded queue takes less. */
        if (max_items > 0 || len / 2 < slot || len / 2 < Q_MIN_RESERVE / 4) {
            errno = ENOMEM;
            return NULL;
        }
        len = len / 2 & ~(uint64_t)7;
    }
    int r = proc__ipc_mutex_init(&q->mutex);
    if (r == 0) {
        q->efd = new_eventfd();
        r = q->efd < 0 ? q->efd : 0;
    }
    if (r < 0) {
        proc__ipc_unmap(q, off + (size_t)len);
        errno = -r;
        return NULL;
    }
    q->map_len = off + (size_t)len;
    q->ring_off = off;
    q->page = page;
    q->ring_len = len;
    q->max_items = max_items;
    q->max_msg = max_msg;
    return q;
}

int proc_queue_put(proc_queue_t *q, const void *msg, size_t len, int timeout_ms)
{
    struct proc__deadline d;
    if (!q || (!msg && len > 0) || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    if (len > q->max_msg)
        return -EMSGSIZE;
    uint64_t need = slot_len(len);
    struct qvals v = {0, 0, 0, 0};
    uint32_t mode = 0;
    bool spun = false;
    int r = proc__ipc_enter(&q->mutex, &d, repair, q);
    while (r == 0) {
        mode = mode_of(q);
        if (mode & Q_CLOSED) {
            proc__ipc_leave(&q->mutex);
            return -EPIPE;
        }
        v = load_state(q);
        if (v.used + need <= q->ring_len && (q->max_items == 0 || v.nput - v.nget < q->max_items))
            break;
        if (q->max_items == 0) {
            proc__ipc_leave(&q->mutex);
            return -ENOMEM;
        }
        if (!spun) {
            /* A consumer is usually about to make room: spin before sleeping. */
            spun = true;
            proc__ipc_leave(&q->mutex);
            if (proc__ipc_spin_while(&q->st.nget, v.nget, &d) || d.timeout_ms != 0) {
                r = proc__ipc_enter(&q->mutex, &d, repair, q);
                continue;
            }
            return -ETIMEDOUT;
        }
        r = proc__ipc_wait(&q->not_full, &q->mutex, &d, repair, q);
    }
    if (r < 0)
        return r;

    uint64_t off = ring_add(q, v.roff, v.used), hdr = len;
    memcpy(ring(q) + off, &hdr, Q_HDR); /* 8-aligned and ring_len % 8 == 0: never split */
    ring_write(q, ring_add(q, off, Q_HDR), msg, len);
    proc__ipc_wake(&q->not_empty);
    if (mode & Q_POLLED)
        efd_raise(q);
    v.used += need;
    v.nput++;
    commit(q, &v);
    proc__ipc_leave(&q->mutex);
    return 0;
}

ssize_t proc_queue_get(proc_queue_t *q, void *buf, size_t cap, int timeout_ms)
{
    struct proc__deadline d;
    if (!q || (!buf && cap > 0) || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    uint32_t mode = 0;
    bool spun = false;
    int r = proc__ipc_enter(&q->mutex, &d, repair, q);
    while (r == 0) {
        uint64_t put = atomic_load(&q->st.nput);
        mode = mode_of(q);
        if (put != atomic_load(&q->st.nget))
            break;
        if (mode & Q_CLOSED) {
            proc__ipc_leave(&q->mutex);
            return -EPIPE;
        }
        if (!spun) {
            /* A producer is usually about to put: spin before sleeping. */
            spun = true;
            proc__ipc_leave(&q->mutex);
            if (proc__ipc_spin_while(&q->st.nput, put, &d) || d.timeout_ms != 0) {
                r = proc__ipc_enter(&q->mutex, &d, repair, q);
                continue;
            }
            return -ETIMEDOUT;
        }
        r = proc__ipc_wait(&q->not_empty, &q->mutex, &d, repair, q);
    }
    if (r < 0)
        return r;

    struct qvals v = load_state(q);
    uint64_t len;
    memcpy(&len, ring(q) + v.roff, Q_HDR);
    if (len > q->max_msg || slot_len(len) > v.used) {
        proc__ipc_leave(&q->mutex); /* cannot happen unless someone scribbled over the ring */
        return -EIO;
    }
    if (len > cap) {
        proc__ipc_leave(&q->mutex);
        return -EMSGSIZE;
    }
    ring_read(q, ring_add(q, v.roff, Q_HDR), buf, len);
    if (q->max_items > 0)
        proc__ipc_wake(&q->not_full);
    uint64_t from = v.roff, taken = slot_len(len);
    v.roff = ring_add(q, v.roff, taken);
    v.used -= taken;
    v.nget++;
    if (v.used == 0)
        v.roff = 0;
    commit(q, &v);
    if (v.used == 0 && (mode & (Q_POLLED | Q_CLOSED)) == Q_POLLED &&
        atomic_load_explicit(&q->efd_set, memory_order_relaxed))
        efd_drain(q);
    trim(q, from, taken, &v);
    proc__ipc_leave(&q->mutex);
    return (ssize_t)len;
}

size_t proc_queue_size(proc_queue_t *q)
{
    if (!q)
        return 0;
    uint64_t got = atomic_load(&q->st.nget), put = atomic_load(&q->st.nput);
    return put > got ? (size_t)(put - got) : 0;
}

/* Locks q for an operation that never waits for the queue's state (only for the mutex). */
static int enter_to_change(proc_queue_t *q)
{
    struct proc__deadline d;
    proc__deadline_init(&d, PROC_WAIT_FOREVER);
    return proc__ipc_enter(&q->mutex, &d, repair, q);
}

int proc_queue_task_done(proc_queue_t *q)
{
    if (!q)
        return -EINVAL;
    int r = enter_to_change(q);
    if (r < 0)
        return r;
    uint64_t done = atomic_load(&q->ndone), put = atomic_load(&q->st.nput);
    if (done >= put) {
        r = -EINVAL;
    } else {
        if (done + 1 == put)
            proc__ipc_wake(&q->all_done);
        atomic_store(&q->ndone, done + 1);
    }
    proc__ipc_leave(&q->mutex);
    return r;
}

int proc_queue_join(proc_queue_t *q, int timeout_ms)
{
    struct proc__deadline d;
    if (!q || proc__deadline_init(&d, timeout_ms) < 0)
        return -EINVAL;
    int r = proc__ipc_enter(&q->mutex, &d, repair, q);
    while (r == 0 && atomic_load(&q->ndone) != atomic_load(&q->st.nput))
        r = proc__ipc_wait(&q->all_done, &q->mutex, &d, repair, q);
    if (r == 0)
        proc__ipc_leave(&q->mutex);
    return r;
}

int proc_queue_close(proc_queue_t *q)
{
    if (!q)
        return -EINVAL;
    int r = enter_to_change(q);
    if (r < 0)
        return r;
    uint32_t mode = mode_of(q);
    if (!(mode & Q_CLOSED)) {
        proc__ipc_wake(&q->not_empty);
        proc__ipc_wake(&q->not_full);
        if (mode & Q_POLLED)
            efd_raise(q);
        atomic_store_explicit(&q->mode, mode | Q_CLOSED, memory_order_relaxed);
    }
    proc__ipc_leave(&q->mutex);
    return 0;
}

int proc_queue_fileno(proc_queue_t *q)
{
    if (!q)
        return -EINVAL;
    if (mode_of(q) & Q_POLLED)
        return q->efd;
    int r = enter_to_change(q);
    if (r < 0)
        return r;
    uint32_t mode = mode_of(q);
    if (!(mode & Q_POLLED)) {
        efd_sync(q);
        atomic_store_explicit(&q->mode, mode | Q_POLLED, memory_order_relaxed);
    }
    proc__ipc_leave(&q->mutex);
    return q->efd;
}

int proc_queue_free(proc_queue_t *q)
{
    if (q) {
        close(q->efd);
        proc__ipc_unmap(q, q->map_len);
    }
    return 0;
}
