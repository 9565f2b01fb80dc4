/* SPDX-License-Identifier: MIT */
/* Shared memory: Value/Array (proc_shared_alloc) and the mappings behind the IPC objects. */
#include "ipc_lock.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

void *proc__ipc_map(size_t len, bool noreserve)
{
    int flags = MAP_SHARED | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, -1, 0);
    return mem == MAP_FAILED ? NULL : mem;
}

void proc__ipc_unmap(void *mem, size_t len)
{
    if (mem)
        munmap(mem, len);
}

/*
 * The mapping starts with a header holding its length, so that
 * proc_shared_free() knows what to unmap. 64 bytes keep the user's memory
 * aligned for any type and on its own cache line.
 */
#define SHM_HEADER 64

void *proc_shared_alloc(size_t size)
{
    if (size == 0) {
        errno = EINVAL;
        return NULL;
    }
    if (size > SIZE_MAX - SHM_HEADER) {
        errno = ENOMEM;
        return NULL;
    }
    size_t len = size + SHM_HEADER;
    unsigned char *base = proc__ipc_map(len, false);
    if (!base)
        return NULL;
    *(size_t *)base = len;
    return base + SHM_HEADER;
}

void proc_shared_free(void *mem)
{
    if (!mem)
        return;
    unsigned char *base = (unsigned char *)mem - SHM_HEADER;
    proc__ipc_unmap(base, *(size_t *)base);
}
