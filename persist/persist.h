/*
 * persist.h -- what the snapshot codec and the store share (internal).
 *
 * The runtime is written as records (docs/FORMAT.md): one head and chunks
 * of at most 256 tasklets or channels, grouped by id >> 8.  The encoder
 * works from a tl__index (every object bucketed by chunk, sorted by id);
 * the loader takes raw records and rebuilds the runtime all or nothing.
 */
#ifndef TL_PERSIST_H
#define TL_PERSIST_H

#include "../src/internal.h"

#define TL__KIND_TASKLETS 1
#define TL__KIND_CHANS 2
#define TL__CHUNK_SHIFT 8

/* persist's own state in a runtime, in its layer slot (src/internal.h):
 * made on first use (an upgrade registered, a record compressed or
 * inflated), freed with the runtime (state.c). */
typedef struct tl__pstate {
    struct upgrade *upgrades; /* decode.c: tl_register_upgrade */
    void *zdef, *zinf;        /* zlib streams, reused record to record */
    unsigned char *zbuf;      /* compression output, reused */
    size_t zcap;
} tl__pstate;

/* rt's persist state, made if need be; NULL when out of memory. */
TL__HIDDEN tl__pstate *tl__pstate_get(tl_runtime *rt);
/* rt's persist state, or NULL if none was made. */
static inline tl__pstate *tl__pstate_peek(const tl_runtime *rt)
{
    return (tl__pstate *)tl__layer_state(rt, TL__LAYER_PERSIST);
}
TL__HIDDEN void tl__upgrades_free(tl_runtime *rt, tl__pstate *ps);
TL__HIDDEN void tl__zlib_free(tl_runtime *rt, tl__pstate *ps);

/* A growable byte buffer in the runtime's allocator. */
typedef struct tl__buf {
    tl_runtime *rt;
    char *p;
    size_t len, cap;
    int oom;
} tl__buf;

TL__HIDDEN void tl__buf_init(tl__buf *b, tl_runtime *rt);
TL__HIDDEN void tl__buf_free(tl__buf *b);
TL__HIDDEN int tl__buf_write(void *data, const char *p, size_t n);

/* Objects of one kind grouped by chunk: keys[i] is a chunk key (id >> 8),
 * in increasing order, and objs[start[i] .. start[i+1]) its objects,
 * sorted by id.  Sparse: only chunks with collected objects, plus dirty
 * empty ones (to be written as tombstones), are listed. */
typedef struct tl__index {
    size_t total;         /* objects of this kind in the snapshot */
    int subset;           /* only those in the subset (rt->subset) */
    size_t nkeys;
    uint64_t *keys;
    size_t *start;        /* nkeys + 1 */
    void **objs;
    unsigned char *dirty; /* per listed chunk */
    size_t cap;           /* allocated entries of keys, start, dirty */
} tl__index;

/* The position of chunk key in ix, or SIZE_MAX. */
TL__HIDDEN size_t tl__index_find(const tl__index *ix, uint64_t key);

/* Builds the index of tasklets (kind 1) or channels (kind 2) and marks
 * the chunks that changed since the last checkpoint (every chunk when all
 * is set).  For tasklets, only the dirty chunks' objects are collected,
 * unless all is set: the other ranges are left empty. */
TL__HIDDEN int tl__index_build(tl_runtime *rt, int kind, int all, tl__index *ix);
TL__HIDDEN void tl__index_free(tl_runtime *rt, tl__index *ix);
/* After a committed checkpoint: forget what was dirty. */
TL__HIDDEN void tl__clear_dirty(tl_runtime *rt);

/* In the snapshot being encoded (always, unless encoding a subset). */
static inline bool tl__t_in(const tl_tasklet *t)
{
    return !t->rt->subset || (t->flags & TL__TF_SUBSET);
}
static inline bool tl__ch_in(const tl_chan *ch)
{
    return !ch->rt->subset || ch->reserved == 2;
}

/* Encodes suspended tasklet t to move it to another node: a standalone
 * snapshot whose channels are references to their homes (no buffers), the
 * local ones pinned.  TL_ENOTSUP (it waits in a select or join, or holds
 * a tasklet reference), TL_ESTATE, TL_ENOMEM. */
TL__HIDDEN int tl__snapshot_save_moving(tl_tasklet *t, void **buf, size_t *len);
/* Loads such a snapshot into rt, which may hold other tasklets: the
 * tasklet gets a fresh id, channels whose home is rt's node resolve to the
 * local ones, others to proxies (reused when rt has one).  All or nothing.
 * *out (borrowed) is the tasklet.  Proxied operations it waits on are
 * issued through rt's hooks. */
TL__HIDDEN int tl__snapshot_import(tl_runtime *rt, const void *buf, size_t len,
                                   tl_tasklet **out);

/* The node's hook into every checkpoint transaction (db: the sqlite3
 * handle), and a way to force the next checkpoint to be written. */
TL__HIDDEN void tl__store_set_extra(tl_store *st, int (*fn)(void *ud, void *db), void *ud);
TL__HIDDEN void tl__store_touch(tl_store *st);
/* A fresh random transfer id (32 hex digits and a NUL). */
TL__HIDDEN int tl__new_xid(char out[40]);

/* A value in the snapshot encoding (FORMAT.md section 1), into a
 * msgpack_packer; TL_ERANGE when nested deeper than 16. */
TL__HIDDEN int tl__pack_value(void *packer, tl_value v);
/* And back from a msgpack_object: plain data and errors only (a channel or
 * tasklet reference is TL_ECORRUPT); TL_ENOMEM. */
TL__HIDDEN int tl__unpack_value(tl_runtime *rt, const void *obj, tl_value *out);

/* On-disk field type names, indexed by tl_ftype. */
TL__HIDDEN extern const char *const tl__type_names[11];

/* Encoders: each appends one record to out. */
TL__HIDDEN int tl__enc_head(tl_runtime *rt, int64_t time, const tl__index *tix,
                            const tl__index *cix, tl__buf *out);
TL__HIDDEN int tl__enc_tombstone(tl_runtime *rt, tl__buf *out);
TL__HIDDEN int tl__enc_chunk(tl_runtime *rt, int kind, const tl__index *ix,
                             size_t key, tl__buf *out);

/* A raw record handed to the loader (bytes borrowed). */
typedef struct tl__raw {
    int kind;        /* 0 for the head */
    uint64_t key;
    const void *p;
    size_t n;
} tl__raw;

/* Rebuilds rt (empty) from a head and its chunks.  where names the source
 * for messages ("snapshot", "store checkpoint 7"). */
TL__HIDDEN int tl__load(tl_runtime *rt, const tl__raw *head, const tl__raw *chunks,
                        size_t nchunks, const char *where);

/* The same, importing a moving tasklet next to what rt holds (see
 * tl__snapshot_import). */
TL__HIDDEN int tl__import(tl_runtime *rt, const tl__raw *head, const tl__raw *chunks,
                          size_t nchunks, tl_tasklet **out);

/* Inflates src into dst (exactly dstlen bytes expected) with the
 * runtime's reusable stream; returns 0 on success. */
TL__HIDDEN int tl__inflate(tl_runtime *rt, const void *src, size_t srclen, void *dst,
                           size_t dstlen);

/* Checks that p[0..n) holds exactly one well-formed msgpack value whose
 * declared counts fit the bytes and whose nesting is at most maxdepth;
 * returns its length, or 0 if malformed. */
TL__HIDDEN size_t tl__msgpack_check(const unsigned char *p, size_t n, int maxdepth);

#endif
