/*
 * alloc.c -- every byte the runtime uses goes through the runtime's
 * pluggable allocator; fixed-size objects come from slabs.
 *
 * Invariants: a slab never returns memory to the allocator before
 * tl__slab_destroy, so reading the head of a freed object is always
 * defined; that is how stale handles are caught.  The head is the first 24
 * bytes: a 16-bit magic (zeroed on free), the slot's 16-bit generation
 * (kept across free and reuse; 0 in a fresh slot), at offset 8 the free
 * list link, and at offset 16 what the object put there (a tasklet's or a
 * channel's runtime, untouched by free).  Under AddressSanitizer the rest
 * of a free object is poisoned.
 */
#include "internal.h"

#include <string.h>

#ifdef TL__ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

void *tl__alloc(tl_runtime *rt, size_t n)
{
    return rt->alloc(rt->alloc_ud, NULL, 0, n);
}

void *tl__calloc(tl_runtime *rt, size_t n)
{
    void *p = rt->alloc(rt->alloc_ud, NULL, 0, n);
    if (p)
        memset(p, 0, n);
    return p;
}

void *tl__realloc(tl_runtime *rt, void *p, size_t o, size_t n)
{
    return rt->alloc(rt->alloc_ud, p, o, n);
}

void tl__free(tl_runtime *rt, void *p, size_t n)
{
    if (p)
        rt->alloc(rt->alloc_ud, p, n, 0);
}

char *tl__strdup(tl_runtime *rt, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tl__alloc(rt, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void tl__strfree(tl_runtime *rt, char *s)
{
    if (s)
        tl__free(rt, s, strlen(s) + 1);
}

/* ---- slabs ---- */

struct tl__chunk {
    tl__chunk *next;
    size_t count;
    size_t used; /* objects handed out from the fresh tail */
    size_t pad_;
    /* objects follow */
};

#define SLAB_FIRST 32
#define SLAB_MAXCOUNT 16384
#define FREE_NEXT(obj) (*(void **)((char *)(obj) + 8))
#define HEAD_KEPT 24 /* bytes of a free object left readable */

void tl__slab_init(tl__slab *s, size_t objsize)
{
    memset(s, 0, sizeof *s);
    s->objsize = (objsize + 7) & ~(size_t)7;
    if (s->objsize < 16)
        s->objsize = 16;
    s->nextcount = SLAB_FIRST;
}

static char *chunk_objs(tl__chunk *c) { return (char *)(c + 1); }

static int slab_grow(tl_runtime *rt, tl__slab *s)
{
    size_t count = s->nextcount;
    tl__chunk *c = tl__alloc(rt, sizeof *c + count * s->objsize);
    if (!c)
        return TL_ENOMEM;
#ifdef TL__GEN_SHIFT
    if (((uintptr_t)c + sizeof *c + count * s->objsize) >> TL__GEN_SHIFT) {
        /* handles keep a generation in these address bits */
        tl__free(rt, c, sizeof *c + count * s->objsize);
        return TL_ENOMEM;
    }
#endif
    c->next = s->chunks;
    c->count = count;
    c->used = 0;
    s->chunks = c;
    POISON(chunk_objs(c), count * s->objsize);
    if (s->nextcount < SLAB_MAXCOUNT)
        s->nextcount *= 2;
    return TL_OK;
}

void *tl__slab_get(tl_runtime *rt, tl__slab *s)
{
    void *obj = s->free;
    if (obj) {
        UNPOISON(obj, s->objsize);
        s->free = FREE_NEXT(obj);
    } else {
        tl__chunk *c = s->chunks;
        if (!c || c->used == c->count) {
            if (slab_grow(rt, s) != TL_OK)
                return NULL;
            c = s->chunks;
        }
        obj = chunk_objs(c) + c->used++ * s->objsize;
        UNPOISON(obj, s->objsize);
        memset(obj, 0, 4); /* magic dead, generation 0 */
    }
    s->live++;
    return obj;
}

void tl__slab_put(tl__slab *s, void *obj)
{
    *(uint16_t *)obj = TL__MAGIC_DEAD;
    FREE_NEXT(obj) = s->free;
    s->free = obj;
    s->live--;
    if (s->objsize > HEAD_KEPT)
        POISON((char *)obj + HEAD_KEPT, s->objsize - HEAD_KEPT);
}

void tl__slab_each(tl__slab *s, uint32_t magic, tl__slab_visit fn, void *ud)
{
    for (tl__chunk *c = s->chunks; c; c = c->next) {
        for (size_t i = 0; i < c->used; i++) {
            void *obj = chunk_objs(c) + i * s->objsize;
            if (*(uint16_t *)obj == magic)
                fn(obj, ud);
        }
    }
}

void tl__slab_clear(tl__slab *s)
{
    s->free = NULL;
    for (tl__chunk *c = s->chunks; c; c = c->next) {
        for (size_t i = c->used; i-- > 0;) {
            void *obj = chunk_objs(c) + i * s->objsize;
            *(uint16_t *)obj = TL__MAGIC_DEAD;
            FREE_NEXT(obj) = s->free;
            s->free = obj;
            if (s->objsize > HEAD_KEPT)
                POISON((char *)obj + HEAD_KEPT, s->objsize - HEAD_KEPT);
        }
    }
    s->live = 0;
}

void tl__slab_destroy(tl_runtime *rt, tl__slab *s)
{
    tl__chunk *c = s->chunks;
    while (c) {
        tl__chunk *next = c->next;
        UNPOISON(chunk_objs(c), c->count * s->objsize);
        tl__free(rt, c, sizeof *c + c->count * s->objsize);
        c = next;
    }
    s->chunks = NULL;
    s->free = NULL;
    s->live = 0;
}
