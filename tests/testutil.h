/*
 * testutil.h -- helpers shared by the cmocka tests: a counting allocator
 * that can also fail the Nth allocation on purpose (Lua's ltests.h idea),
 * and a fake wall clock.
 */
#ifndef TL_TESTUTIL_H
#define TL_TESTUTIL_H

#include <stdint.h>
#include <stdlib.h>

#include "tasklet.h"

typedef struct count_alloc {
    uint64_t allocs;   /* successful new blocks and reallocs */
    uint64_t frees;
    int64_t live;      /* bytes currently allocated */
    int64_t fail_at;   /* fail the allocation with this index (0-based), -1: never */
    uint64_t seen;     /* allocation requests so far */
} count_alloc;

static inline void *count_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    count_alloc *ca = ud;
    if (nsize == 0) {
        if (ptr) {
            ca->frees++;
            ca->live -= (int64_t)osize;
        }
        free(ptr);
        return NULL;
    }
    if (ca->fail_at >= 0 && (int64_t)ca->seen++ == ca->fail_at)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p) {
        ca->allocs++;
        ca->live += (int64_t)nsize - (ptr ? (int64_t)osize : 0);
    }
    return p;
}

static inline tl_config count_config(count_alloc *ca)
{
    tl_config cfg = {0};
    ca->fail_at = -1;
    cfg.alloc = count_alloc_fn;
    cfg.alloc_ud = ca;
    return cfg;
}

typedef struct fake_clock {
    int64_t now;
} fake_clock;

static inline int64_t fake_clock_fn(void *ud)
{
    return ((fake_clock *)ud)->now;
}

#endif
