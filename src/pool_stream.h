/* SPDX-License-Identifier: MIT */
/* Worker pools: imap streams, the dispatcher's side (pool_stream.c). */
#ifndef LIBPROC_POOL_STREAM_H
#define LIBPROC_POOL_STREAM_H

#include "pool_types.h"

/* An item handed out: its input, kept until its result is in. */
struct proc__sitem {
    struct proc__sitem *next;
    size_t index, len;
    unsigned char in[];
};

/* Whether the stream has items to hand out (and room for their results). */
bool proc__stream_has_work(struct proc_imap *m);
/* Whether the stream can leave the queue: no more items will come (done, freed, terminated, or
 * pool_closed), none pending or in flight. */
bool proc__stream_over(struct proc_imap *m, bool pool_closed);
/* Takes a batch of pending items for a worker (at most max, about a millisecond of their
 * measured work, at most max_in_bytes of input unless one item is bigger) into *list; how many. */
size_t proc__stream_take(struct proc_imap *m, size_t max, size_t max_in_bytes,
                         struct proc__sitem **list, size_t *in_bytes);
/* A batch ended: items [0, done) returned (their table entries and the output file), item done
 * fails with blame if not 0, the rest go back to the front (rest_err 0) or fail with rest_err.
 * elapsed_ns: from its hand-over to now (sizes the next batches when all returned). */
void proc__stream_finish(struct proc_imap *m, struct proc__sitem *list, size_t count,
                         const struct proc__vitem *table, const unsigned char *out, size_t out_len,
                         size_t done, int blame, int rest_err, int64_t elapsed_ns, size_t nworkers);
/* The pool drops its reference next (the stream is over): the caller's
 * calls on the stream must not touch the pool any more. */
void proc__stream_detach(struct proc_imap *m);
/* Terminate: every pending item fails with err; no more items; detached. */
void proc__stream_cancel(struct proc_imap *m, int err);
/* The stream's job is being freed: what the stream still holds goes. */
void proc__stream_destroy(struct proc_imap *m);

#endif /* LIBPROC_POOL_STREAM_H */
