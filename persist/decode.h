/*
 * decode.h -- what the loader's files share (internal to persist/decode*.c).
 *
 * The loader (decode.c) reads the head record, then streams the chunk
 * records; each record type has its own decoder:
 *   decode_tasklet.c  a tasklet record: state, wait, extra, select cases;
 *   decode_frame.c    the chunk's function table and each frame's locals;
 *   decode_value.c    a value (FORMAT.md section 1);
 *   decode_chan.c     a channel record: buffer, queues, home (proxies);
 *   decode_ids.c      ids to objects: the id maps and the shells;
 *   decode_finish.c   the checks and links once every record is in;
 *   decode_upgrade.c  registered upgrades and running them on old frames.
 * Invariants every decoder keeps: a msgpack object is looked at only
 * after its type (and an array's size) is checked; an error sets the
 * runtime's message through tl__corrupt or tl__seterr and is returned at
 * once, leaving the cleanup to the driver (which resets the runtime);
 * objects are created only through the id maps (tl__ld_tasklet,
 * tl__ld_chan), so every id is bounded by the head's counters and counts.
 */
#ifndef TL_DECODE_H
#define TL_DECODE_H

#include "persist.h"

#include <msgpack.h>
#include <string.h>

/* A registered upgrade (tl_register_upgrade; listed in tl__pstate). */
struct upgrade {
    struct upgrade *next;
    char *name;
    uint32_t old_version;
    const tl_func *to;
    tl_upgrade_fn fn;
    void *ud;
};

/* A function of a chunk's table, resolved against the program. */
typedef struct tl__fnref {
    const tl__fn *e;              /* what the frame becomes */
    const msgpack_object *fields; /* the snapshot's schema: [[name, type]...] */
    const struct upgrade *up;
    uint8_t *match;               /* per field of e: FIELD_* (decode_frame.c) */
    char label[160];
} tl__fnref;

/* One record, inflated and unpacked (its objects point into bytes). */
typedef struct tl__doc {
    int kind;
    uint64_t key;
    char *bytes;      /* the inflated document */
    size_t len;
    int borrowed;     /* bytes point into the record (stored raw): not freed */
    msgpack_unpacked up;
    tl__fnref *funcs; /* tasklet chunks: the function table */
    size_t nfuncs;
} tl__doc;

/* id -> object: a dense array when ids are dense (the usual case), else
 * an open-addressing table; either way bounded by the head's counts. */
typedef struct tl__idmap {
    uint64_t *ids;
    void **objs;
    size_t cap, n, limit;
    uint64_t maxid;  /* the head's counter: no id above it */
    int direct;
} tl__idmap;

/* A queue given by number: [count] in its channel's record. */
typedef struct tl__lqueue {
    tl_chan *ch;
    int op;
    uint64_t count;
} tl__lqueue;

/* A joiner a tasklet record lists, linked once every tasklet exists. */
typedef struct tl__joinrec {
    tl_tasklet *joinee;
    uint64_t joiner;
} tl__joinrec;

typedef struct tl__loader {
    tl_runtime *rt;
    const char *where;
    msgpack_zone zone;   /* a record's outer array is decoded into it (once */
    int zone_ok;         /* zone_ok), cleared after each: no allocation per record */
    tl__doc head;
    tl__idmap tasklets, chans;
    uint64_t max_tid, max_cid, ntasklets, nchans;
    tl__joinrec *joins;
    size_t njoins, capjoins;
    uint32_t format;     /* the head's format version */
    /* check mode (check_locals.c): ids name live objects, found here
     * instead of in the id maps */
    void *(*resolve)(void *ud, int chan, uint64_t id);
    void *resolve_ud;
    tl__keyed *qents;    /* waiters with a queue number: (number, waiter) */
    size_t nq, capq;
    int numbered;        /* some queue is given by number (tl_chan.lq set) */
    tl__lqueue *lqs;     /* those queues */
    size_t nlq, caplq;
    int renumber;        /* a listed queue's numbers are missing or out of
                          * order: number them afresh, write all next */
    int import;          /* tl__import: one moving tasklet, next to others */
    int unchecked_ok;    /* records without a CRC (flags 3) are taken: the
                          * bytes came over a sealed session */
    tl_tasklet *moved;   /* import: that tasklet */
} tl__loader;

/* ---- small helpers over msgpack objects (no symbols: static inline) ---- */

static inline bool is_uint(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
}
static inline bool is_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}
static inline int64_t as_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o->via.u64 : o->via.i64;
}
/* An array of n items (any number when n is UINT32_MAX). */
static inline bool is_array(const msgpack_object *o, uint32_t n)
{
    return o->type == MSGPACK_OBJECT_ARRAY && (n == UINT32_MAX || o->via.array.size == n);
}
static inline bool str_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}
/* The value of a string key in a map, or NULL (o not a map, key absent). */
static inline const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++)
        if (str_is(&m->via.map.ptr[i].key, key))
            return &m->via.map.ptr[i].val;
    return NULL;
}
/* The big-endian id of a reference extension (its size checked: 8). */
static inline uint64_t ext_id(const msgpack_object *o)
{
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = (id << 8) | (unsigned char)o->via.ext.ptr[i];
    return id;
}

/* ---- decode.c ---- */

/* Sets TL_ECORRUPT with "where: message" and returns it. */
/* Room for one more element in the loader's growable array *v (*cap
 * elements of size bytes, count n): doubles it, first elements the first
 * time.  TL_ENOMEM (message set) when it cannot. */
TL__HIDDEN int tl__ld_room(tl__loader *ld, void **v, size_t *cap, size_t n, size_t size,
                           size_t first);
TL__HIDDEN int tl__corrupt(tl__loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- decode_ids.c ---- */

/* Sizes m for n objects with ids up to maxid (sparse: never dense). */
TL__HIDDEN int tl__idmap_init(tl_runtime *rt, tl__idmap *m, uint64_t n, uint64_t maxid,
                              int sparse);
TL__HIDDEN void tl__idmap_free(tl_runtime *rt, tl__idmap *m);
/* The slot for id, or NULL when the map cannot hold it (more objects
 * than the head announced, or an id beyond its counter). */
TL__HIDDEN void **tl__idmap_slot(tl__idmap *m, uint64_t id);
TL__HIDDEN void *tl__idmap_find(tl__idmap *m, uint64_t id);
/* The tasklet or channel with this id, created as an empty shell if its
 * record has not been seen yet; NULL with the error set. */
TL__HIDDEN tl_tasklet *tl__ld_tasklet(tl__loader *ld, uint64_t id);
TL__HIDDEN tl_chan *tl__ld_chan(tl__loader *ld, uint64_t id);

/* ---- decode_value.c ---- */

/* A value at nesting depth (at most 16) into *out (nil on error). */
TL__HIDDEN int tl__dec_value(tl__loader *ld, const msgpack_object *o, tl_value *out, int depth);

/* ---- decode_frame.c ---- */

/* Fills locals (zeroed) of a frame of e from a map its own schema wrote
 * (check mode, check_locals.c). */
TL__HIDDEN int tl__dec_locals_own(tl__loader *ld, const tl__fn *e, const msgpack_object *map,
                                  char *locals);
/* Resolves a tasklet chunk's function table into d->funcs. */
TL__HIDDEN int tl__resolve_funcs(tl__loader *ld, tl__doc *d);
/* Pushes one frame record ([func, pc, flags, locals]) onto t. */
TL__HIDDEN int tl__dec_frame(tl__loader *ld, tl__doc *d, tl_tasklet *t, const msgpack_object *fo);

/* ---- decode_upgrade.c ---- */

/* The upgrade registered from name[0..n)@v, or NULL. */
TL__HIDDEN const struct upgrade *tl__find_upgrade(tl_runtime *rt, const char *name, size_t n,
                                                  uint32_t v);
/* Runs r's upgrade on a frame's old locals (map), which may move *pc. */
TL__HIDDEN int tl__run_upgrade(tl__loader *ld, const tl__fnref *r, const msgpack_object *map,
                               char *locals, uint32_t *pc);

/* ---- decode_tasklet.c, decode_chan.c: one record each ---- */

TL__HIDDEN int tl__dec_tasklet(tl__loader *ld, tl__doc *d, const msgpack_object *o);
TL__HIDDEN int tl__dec_chan(tl__loader *ld, const msgpack_object *o);
/* Waiter w (its `on` set) has queue number o (a positive integer) in its
 * record: noted for the queues given by number. */
TL__HIDDEN int tl__ld_number(tl__loader *ld, tl__waiter *w, const msgpack_object *o);
/* Links the waiters of the queues given by number, in number order, and
 * checks each queue's count; numbers listed queues afresh if need be. */
TL__HIDDEN int tl__ld_link_numbered(tl__loader *ld);

/* ---- decode_finish.c ---- */

/* A whole load: no dangling id, counts as announced, every blocked
 * tasklet in its queue, joiners and run queue linked; then the loader's
 * references dropped (what nothing refers to goes). */
TL__HIDDEN int tl__ld_finish(tl__loader *ld);
/* An import: the moving tasklet complete and alone, then counted. */
TL__HIDDEN int tl__ld_finish_import(tl__loader *ld);

#endif
