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
/* A channel queue longer than this is written as a count, its order given
 * by the waiters' queue numbers (FORMAT.md section 5), when they are known. */
#define TL__LONG_QUEUE 64
/* The largest record document a reader accepts (FORMAT.md section 8):
 * the encoder refuses to write a larger one (TL_ERANGE). */
#define TL__MAX_DOC ((size_t)256 << 20)

/* The chunk -> objects indexes (tindex.c): a chunk's tasklets sorted by
 * id, each with its queue number (0: none); or (ix->chans) a chunk's
 * channels sorted by id. */
typedef struct tl__tent {
    union {
        tl_tasklet *t;
        tl_chan *ch;
    };
    uint64_t seq;
} tl__tent;
typedef struct tl__tchunk {
    uint64_t key;
    uint32_t n, cap;
    tl__tent *e;
} tl__tchunk;
typedef struct tl__tindex {
    tl__tchunk **slots;   /* open addressing by key */
    size_t cap, nchunks;
    size_t total;         /* tasklets indexed */
    uint64_t wseq;        /* the last queue number given */
    tl__tchunk *last;     /* the chunk found last */
    int on;               /* kept: a store is attached */
    int lost;             /* a note was not kept: rebuild, write everything */
    int chans;            /* an index of channels (no queue numbers) */
} tl__tindex;

/* persist's own state in a runtime, in its layer slot (src/internal.h):
 * made on first use (a store attached, a snapshot saved, an upgrade
 * registered, a record inflated), freed with the runtime (state.c). */
typedef struct tl__pstate {
    tl_store *store;          /* the attached store, or NULL */
    int (*policy)(void *ud, int idle); /* its checkpoint policy, or NULL */
    void *policy_ud;
    int subset;               /* encoding only the TL__TF_SUBSET tasklets
                               * and the channels with reserved == 2 (1), or
                               * a moving tasklet (2) */
    uint64_t *gone;           /* chunk keys of channels freed since the last
                               * checkpoint: unsorted, may repeat;
                               * ngone == SIZE_MAX: lost track, rewrite all */
    size_t ngone, capgone;
    struct upgrade *upgrades; /* decode_upgrade.c: tl_register_upgrade */
    tl__tindex tix;           /* tindex.c, while a store is attached */
    tl__tindex cix;           /* the same for channels: every live channel
                               * is in it or in rt->dchans (tl__cix_sync) */
    int need_full;            /* the store's records lack queue numbers the
                               * runtime now has: write everything next */
    int unchecked;            /* records stored raw go without their CRC
                               * (flags 3): a moving tasklet's snapshot that
                               * never rests, sealed by the node's session */
    uint64_t *tgone;          /* split.c: chunk keys of tasklets freed since
                               * the last checkpoint (unsorted, may repeat) */
    size_t ntgone, captgone;
    uint64_t *hot[2];         /* split.c: the chunk keys (tasklets, channels)
                               * whose hot record in the store holds objects,
                               * sorted */
    size_t nhot[2], caphot[2];
    int restoring;            /* tl_store_restore's load: objects note their
                               * records (tl__split_loaded) */
    struct tl__crcmap *marks; /* TL_CHECK_MARKS=1: each object's crc as last
                               * written, to catch a change without a mark */
    void *zdef, *zinf;        /* zlib streams, reused record to record */
    void *zsmall;             /* deflate for documents up to SMALL_WINDOW
                               * bytes (encode.c): small tables to reset */
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
/* The store attached to rt, or NULL. */
static inline tl_store *tl__store_of(const tl_runtime *rt)
{
    const tl__pstate *ps = tl__pstate_peek(rt);
    return ps ? ps->store : NULL;
}
/* What is being encoded: 0 everything, 1 a subset, 2 a moving tasklet. */
static inline int tl__subset(const tl_runtime *rt)
{
    const tl__pstate *ps = tl__pstate_peek(rt);
    return ps ? ps->subset : 0;
}
/* Makes st rt's store: changes are tracked from now on (all changed);
 * TL_ENOMEM. */
TL__HIDDEN int tl__pstate_attach_store(tl_runtime *rt, tl_store *st);
/* rt has no store any more: no tracking, no policy. */
TL__HIDDEN void tl__pstate_detach_store(tl_runtime *rt);
/* The store's checkpoint policy: fn(ud, idle) every `every` steps when
 * busy (0: never) and when idle; fn NULL for none. */
TL__HIDDEN void tl__pstate_set_policy(tl_runtime *rt, int (*fn)(void *ud, int idle), void *ud,
                                      uint64_t every);
TL__HIDDEN void tl__upgrades_free(tl_runtime *rt, tl__pstate *ps);
TL__HIDDEN void tl__zlib_free(tl_runtime *rt, tl__pstate *ps);

/* tindex.c: the index's operations (see tl__tindex). */
TL__HIDDEN int tl__tix_start(tl_runtime *rt, tl__tindex *ix);
TL__HIDDEN void tl__tix_stop(tl_runtime *rt, tl__tindex *ix);
TL__HIDDEN void tl__tix_clear(tl_runtime *rt, tl__tindex *ix);
TL__HIDDEN void tl__tix_note(tl_runtime *rt, tl__tindex *ix, tl_tasklet *t, int born);
TL__HIDDEN tl__tchunk *tl__tix_chunk(const tl__tindex *ix, uint64_t key);
/* A waiter's queue number (a select case's own), 0 when unknown. */
TL__HIDDEN uint64_t tl__tix_seq(tl__tindex *ix, const tl__waiter *w);
TL__HIDDEN void tl__tix_set_seq(tl__tindex *ix, tl__waiter *w, uint64_t seq);
/* Numbers every waiter of every local channel queue afresh, head to tail. */
TL__HIDDEN void tl__tix_number_queues(tl_runtime *rt, tl__tindex *ix);
/* The channel index (tl__pstate.cix): built from every channel, made
 * complete by adding the channels of rt->dchans (those born or renumbered
 * since are there), told of each channel freed. */
TL__HIDDEN int tl__cix_start(tl_runtime *rt, tl__tindex *ix);
TL__HIDDEN void tl__cix_sync(tl_runtime *rt, tl__tindex *ix);
TL__HIDDEN void tl__cix_gone(tl_runtime *rt, tl__tindex *ix, uint64_t id);
/* Whether queue numbers are known for every waiter: a store is attached
 * and its index complete. */
static inline bool tl__tix_ok(const tl_runtime *rt)
{
    const tl__pstate *ps = tl__pstate_peek(rt);
    return ps && ps->tix.on && !ps->tix.lost;
}

/* Whether the next checkpoint must write everything: the dirty set, the
 * freed channels' list or the chunk index lost a note, or a load left
 * numbers the store lacks.  (The channel index losing one costs a rebuild
 * only: rt->dchans still lists every changed channel.) */
static inline bool tl__pstate_wants_full(const tl_runtime *rt)
{
    const tl__pstate *ps = tl__pstate_peek(rt);
    return rt->dmap_lost ||
           (ps && (ps->need_full || ps->ngone == SIZE_MAX || (ps->tix.on && ps->tix.lost)));
}

/* A key with an object, and a stable O(n) sort by key (snapshot.c). */
typedef struct tl__keyed {
    uint64_t id;
    void *obj;
} tl__keyed;
TL__HIDDEN int tl__sort_keyed(tl_runtime *rt, tl__keyed *v, size_t n);

/* A growable byte buffer in the runtime's allocator. */
typedef struct tl__buf {
    tl_runtime *rt;
    char *p;
    size_t len, cap;
    int oom;
    size_t max_doc; /* a record appended may hold at most this (TL__MAX_DOC) */
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
    int subset;           /* only those in the subset (tl__subset) */
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
    return !tl__subset(t->rt) || (t->flags & TL__TF_SUBSET);
}
static inline bool tl__ch_in(const tl_chan *ch)
{
    return !tl__subset(ch->rt) || ch->reserved == 2;
}

/* Encodes suspended tasklet t to move it to another node: a standalone
 * snapshot whose channels are references to their homes (no buffers), the
 * local ones pinned.  TL_ENOTSUP (it waits in a select or join, or holds
 * a tasklet reference), TL_ESTATE, TL_ENOMEM. */
TL__HIDDEN int tl__snapshot_save_moving(tl_tasklet *t, void **buf, size_t *len);
/* The same, calling left(ud, ch) for each local channel the snapshot
 * refers to (the node grants them to the destination).  With unchecked,
 * records stored raw carry no CRC (FORMAT.md section 2, flags 3): only for
 * a snapshot that goes over an authenticated session and never rests (a
 * node without a store); only tl__snapshot_import_wire reads them. */
TL__HIDDEN int tl__snapshot_save_moving_to(tl_tasklet *t, void **buf, size_t *len,
                                           void (*left)(void *ud, tl_chan *ch), void *ud,
                                           int unchecked);
/* Loads such a snapshot into rt, which may hold other tasklets: the
 * tasklet gets a fresh id, channels whose home is rt's node resolve to the
 * local ones, others to proxies (reused when rt has one).  All or nothing.
 * *out (borrowed) is the tasklet.  Proxied operations it waits on are
 * issued through the node's layer ops. */
TL__HIDDEN int tl__snapshot_import(tl_runtime *rt, const void *buf, size_t len,
                                   tl_tasklet **out);

/* ---- participants: components that keep rows in the store ----
 *
 * A participant (the node: its outbox and inbox) joins a store and, in
 * every checkpoint's transaction, writes its own rows next to the chunks,
 * so both commit or neither does.  A row lives in one of the
 * participant's tables: a text key (unique in the table) and the columns
 * the table declares.  The store backend maps a table to its own storage
 * (SQLite: a table of that name, FORMAT.md section 7). */
typedef struct tl__table {
    const char *name; /* table name: [a-z_]+ */
    const char *key;  /* the key column (text, unique) */
    const char *peer; /* a text column, or NULL */
    const char *time; /* an integer column, or NULL */
    const char *data; /* a bytes column, or NULL */
    int shared;       /* other processes insert rows (tl__store_insert): a
                       * backend whose write order (seq) is not commit order
                       * orders those writes (PostgreSQL: a lock) */
} tl__table;

/* One row; a column the table lacks is ignored on write and zero on
 * read.  Strings and bytes are borrowed. */
typedef struct tl__row {
    const char *key;
    const char *peer;
    int64_t time;
    const void *data;
    size_t len;
    int64_t seq; /* on read: the row's place in write order (ignored on write) */
} tl__row;

typedef int (*tl__row_fn)(void *ud, const tl__row *r);

/* The checkpoint transaction a participant writes in. */
typedef struct tl__store_tx tl__store_tx;

typedef struct tl__participant {
    const char *name; /* in error messages */
    /* In every checkpoint's transaction, after the chunks and the head:
     * puts and deletes the participant's rows through tx.  A non-OK
     * return rolls the whole checkpoint back.  It writes what changed
     * since the last commit it was told of, and changes nothing of its
     * own: the checkpoint may still roll back. */
    int (*write)(void *ud, tl__store_tx *tx);
    /* The store is closing: forget it (no more writes will come). */
    void (*detach)(void *ud);
    /* That checkpoint committed: what write wrote is durable (NULL: not
     * told).  Called before tl_store_checkpoint returns; nothing of the
     * participant changed between its write and this call. */
    void (*committed)(void *ud);
    /* Cargo (all NULL: none): rows that travel with a moving tasklet in
     * the node's transfer (docs/ARCHITECTURE.md, "Moving a workflow").
     * cargo names them on the wire ("wf"; [a-z]+).  cargo_out: at the
     * source, inside the checkpoint transaction that writes tasklet tid's
     * transfer to node peer into the outbox (again if it rolls back), the
     * participant writes its own rows for the departure through tx and
     * sets *out (malloc'd; NULL: nothing of its own travels) and *len.
     * cargo_in: t (imported, held) arrived from node from with the bytes
     * this participant's cargo_out gave there; it takes them in, its rows
     * going into the checkpoint that commits the import.  With refused
     * not NULL it is the source taking its tasklet back (the destination
     * refused it: refused says why; p is NULL when the transfer never left,
     * and tid is then the departed tasklet's id).  A non-OK return (rt's
     * error says why) refuses the import. */
    const char *cargo;
    int (*cargo_out)(void *ud, tl__store_tx *tx, uint64_t tid, const char *peer, void **out,
                     size_t *len);
    int (*cargo_in)(void *ud, tl_tasklet *t, uint64_t tid, const char *from, const void *p,
                    size_t n, const char *refused);
} tl__participant;

/* The cargo of moving tasklet tid (cargo.c): every participant's, as one
 * msgpack map {cargo name: bin} in *out (malloc'd; NULL and 0 when none
 * has any), from inside write's transaction tx. */
TL__HIDDEN int tl__store_cargo_out(tl_store *st, tl__store_tx *tx, uint64_t tid,
                                   const char *peer, void **out, size_t *len);
/* Hands each entry of such a map to the participant of that name (see
 * cargo_in); TL_ENOTSUP naming the first entry no participant takes.
 * p NULL (refused set): each participant with cargo is told. */
TL__HIDDEN int tl__store_cargo_in(tl_store *st, tl_tasklet *t, uint64_t tid, const char *from,
                                  const void *p, size_t n, const char *refused);
/* Whether some participant of st takes each entry of cargo map p (rt's
 * error names the first none takes: TL_ENOTSUP; TL_ECORRUPT). */
TL__HIDDEN int tl__store_cargo_takes(tl_store *st, tl_runtime *rt, const void *p, size_t n);
/* Participant i of st (NULL past the last), its ud in *ud. */
TL__HIDDEN const tl__participant *tl__store_part(tl_store *st, size_t i, void **ud);

/* Joins (at most 4 participants per store; TL_ENOMEM beyond) and leaves. */
TL__HIDDEN int tl__store_join(tl_store *st, const tl__participant *p, void *ud);
TL__HIDDEN void tl__store_leave(tl_store *st, const tl__participant *p, void *ud);
/* Inside write: insert or replace a row, delete one by key, delete all. */
TL__HIDDEN int tl__tx_put(tl__store_tx *tx, const tl__table *t, const tl__row *r);
TL__HIDDEN int tl__tx_del(tl__store_tx *tx, const tl__table *t, const char *key);
TL__HIDDEN int tl__tx_clear(tl__store_tx *tx, const tl__table *t);
/* Reads a table's committed rows in the order they were inserted (at
 * open or after a restore); fn's non-OK return stops and is returned. */
TL__HIDDEN int tl__store_rows(tl_store *st, const tl__table *t, tl__row_fn fn, void *ud);
/* Forces the next checkpoint to be written even if the runtime did not
 * change (a participant's rows did). */
TL__HIDDEN void tl__store_touch(tl_store *st);
/* Participant rows written (puts, deletes, clears) through st since it
 * opened, committed or not: tests count what a checkpoint writes. */
TL__HIDDEN uint64_t tl__store_row_writes(const tl_store *st);

/* ---- rows for the layers above, beside the checkpoints ----
 *
 * What the workflow engine needs of a participant's table besides the
 * checkpoint's puts: reading one row by key, reading the rows written
 * since a point, and rows inserted by a process that does not own the
 * store (a posted message) in a transaction of its own.  Optional in a
 * backend: TL_ENOTSUP where it lacks them (SQLite's callers use their own
 * SQL on the store's connection).  store_rows.c. */

/* Creates tables ts[0..n) now, in a transaction of their own, so that
 * other processes can read and insert before the first checkpoint. */
TL__HIDDEN int tl__store_tables(tl_store *st, const tl__table *const *ts, size_t n);
/* fn gets the committed row of t with key (bytes borrowed); TL_ENOENT
 * when there is none (or no table). */
TL__HIDDEN int tl__store_row_get(tl_store *st, const tl__table *t, const char *key,
                                 tl__row_fn fn, void *ud);
/* fn gets every row of t whose seq is above after, in seq order (a row
 * rewritten since gets a new seq). */
TL__HIDDEN int tl__store_rows_since(tl_store *st, const tl__table *t, int64_t after,
                                    tl__row_fn fn, void *ud);
/* In a transaction of its own, not fenced (no ownership needed): calls
 * check(ud) (NULL: none; it may read with tl__store_row_get, and a non-OK
 * return is the result), inserts r into t -- TL_EEXIST when its key is
 * there -- and announces it to listeners (tl_store_listen) at commit. */
TL__HIDDEN int tl__store_insert(tl_store *st, const tl__table *t, const tl__row *r,
                                int (*check)(void *ud), void *ud);
/* Inside a participant's write: deletes every row of t whose peer column
 * is peer; announces what (a short word) to listeners at commit. */
TL__HIDDEN int tl__tx_del_peer(tl__store_tx *tx, const tl__table *t, const char *peer);
TL__HIDDEN int tl__tx_notify(tl__store_tx *tx, const char *what);
/* Inside a participant's write: runs one SQL statement of the caller's
 * (TL_ENOTSUP where the backend has none), and the backend's connection
 * for the caller's own statements in the same transaction (PGconn *; NULL
 * where none). */
TL__HIDDEN int tl__tx_exec(tl__store_tx *tx, const char *sql);
TL__HIDDEN void *tl__tx_conn(tl__store_tx *tx);
/* A listener on st's announcements (tl_store_listen on its location);
 * TL_ENOTSUP for a backend that has none.  *out NULL on failure. */
TL__HIDDEN int tl__store_watch(tl_store *st, tl_store_listener **out);
/* The listener's socket, to poll for POLLIN (then tl_store_listener_wait
 * with timeout 0 takes what arrived), or -1. */
TL__HIDDEN int tl__store_listener_fd(const tl_store_listener *l);

/* Keeps the newest keep checkpoints (keep >= 1) and deletes the rest,
 * with the chunk rows only they read, in one fenced transaction. */
TL__HIDDEN int tl__store_prune(tl_store *st, int64_t keep);
/* Moves mailbox row xid out of the mailbox into the refused rows
 * (FORMAT.md section 7) with a reason, in a transaction of its own;
 * TL_EBUSY when the row is no longer there. */
TL__HIDDEN int tl__store_refuse(tl_store *st, const char *xid, const char *reason);
/* Lowers the largest record document a checkpoint may write (tests;
 * never above TL__MAX_DOC). */
TL__HIDDEN void tl__store_limit_doc(tl_store *st, size_t max_doc);

/* A fresh random transfer id (32 hex digits and a NUL). */
TL__HIDDEN int tl__new_xid(char out[40]);

/* A value in the snapshot encoding (FORMAT.md section 1), into a
 * msgpack_packer; TL_ERANGE when nested deeper than 16. */
TL__HIDDEN int tl__pack_value(void *packer, tl_value v);
/* Packs f's schema fields as the locals map of a frame record (a
 * msgpack_packer *); TL_ERANGE for a value nested too deep. */
TL__HIDDEN int tl__enc_locals(void *packer, const tl_frame *f);
/* check_locals.c: the anchor a static link pulls check mode's codec by. */
TL__HIDDEN extern const int tl__check_locals_linked;
/* And back from a msgpack_object: plain data and errors only (a channel or
 * tasklet reference is TL_ECORRUPT); TL_ENOMEM. */
TL__HIDDEN int tl__unpack_value(tl_runtime *rt, const void *obj, tl_value *out);

/* On-disk field type names, indexed by tl_ftype. */
TL__HIDDEN extern const char *const tl__type_names[12];

/* Encoders: each appends one record to out. */
TL__HIDDEN int tl__enc_head(tl_runtime *rt, int64_t time, const tl__index *tix,
                            const tl__index *cix, tl__buf *out);
TL__HIDDEN int tl__enc_tombstone(tl_runtime *rt, tl__buf *out);
TL__HIDDEN int tl__enc_chunk(tl_runtime *rt, int kind, const tl__index *ix,
                             size_t key, tl__buf *out);
/* A chunk record of the n objects (tasklets or channels) at objs, sorted
 * by id: a tombstone when n is 0. */
TL__HIDDEN int tl__enc_objs(tl_runtime *rt, int kind, void **objs, size_t n, tl__buf *out);
/* The crc32 of one object's record alone (split.c's mark check). */
TL__HIDDEN int tl__enc_obj_crc(tl_runtime *rt, int kind, void *obj, uint32_t *crc);

/* ---- split.c: a chunk as a home record and a hot record ----
 * Chunk key k of kind 1 (2) may be stored as two records: its home
 * record (kind 1, 2) and its hot record (kind 3, 4: TL__KIND_HOT), each
 * object in exactly one of them, so that the few objects that change at
 * every step are rewritten without their idle neighbours (FORMAT.md 7.1,
 * ARCHITECTURE.md 11.2). */
#define TL__KIND_HOT(kind) ((kind) + 2)
#define TL__KIND_BASE(kind) ((kind) > 2 ? (kind) - 2 : (kind))
typedef int (*tl__put_fn)(void *ud, int kind, uint64_t key, const tl__buf *rec);
/* "tasklet", "channel", "hot tasklet", "hot channel" for kinds 1-4. */
TL__HIDDEN const char *tl__kind_name(int kind);
/* Writes chunk ix->keys[k] (dirty) through put: its home record, its hot
 * record or both, as its objects' marks say (full: the home record of
 * every object; the stored hot records are the caller's to tombstone);
 * decides each object's place (TL__TF_NHOT, NWARM) for tl__split_commit.
 * *bytes grows by what was written. */
TL__HIDDEN int tl__split_write(tl_runtime *rt, int kind, const tl__index *ix, size_t k, int full,
                               tl__buf *rec, tl__put_fn put, void *ud, int64_t *bytes);
/* The checkpoint that wrote ix committed: every object of its written
 * chunks takes the place decided, its change mark cleared; the set of
 * chunks with a hot record follows (full: only those written since). */
TL__HIDDEN void tl__split_commit(tl_runtime *rt, int kind, const tl__index *ix, int full);
/* Restore: obj came from a record of kind (1-4) with key; restoring
 * notes where it lies in the store. */
TL__HIDDEN void tl__split_loaded(tl_runtime *rt, int kind, uint64_t key, void *obj);
/* The restore loaded: TL_CHECK_MARKS notes every object as written. */
TL__HIDDEN void tl__split_restored(tl_runtime *rt);
/* A tasklet of chunk key was freed (its home record must be rewritten). */
TL__HIDDEN void tl__split_freed(tl_runtime *rt, tl__pstate *ps, uint64_t key);
/* Forgets everything (the runtime was emptied or freed). */
TL__HIDDEN void tl__split_reset(tl_runtime *rt, tl__pstate *ps);

/* A raw record handed to the loader (bytes borrowed). */
typedef struct tl__raw {
    int kind;        /* 0 for the head */
    uint64_t key;
    const void *p;
    size_t n;
} tl__raw;

/* Rebuilds rt (empty) from a head and its chunks.  where names the source
 * for messages ("snapshot", "store checkpoint 7"); *format (if not NULL)
 * gets the format version the head was written in. */
TL__HIDDEN int tl__load(tl_runtime *rt, const tl__raw *head, const tl__raw *chunks,
                        size_t nchunks, const char *where, uint32_t *format);

/* The same, importing a moving tasklet next to what rt holds (see
 * tl__snapshot_import). */
TL__HIDDEN int tl__import(tl_runtime *rt, const tl__raw *head, const tl__raw *chunks,
                          size_t nchunks, int hold, int unchecked_ok, tl_tasklet **out);

/* Like tl__snapshot_import, but a tasklet blocked in a send or receive
 * waits in its channel's queue without looking for partners and without
 * issuing its remote operation: nothing outside the runtime's own state
 * changes until the caller, once the import is durable, calls
 * tl__import_restart (or undoes it with tl__tasklet_depart). */
TL__HIDDEN int tl__snapshot_import_held(tl_runtime *rt, const void *buf, size_t len,
                                        tl_tasklet **out);
/* tl__snapshot_import (hold 0) or _held (hold 1) of bytes that came over
 * an authenticated, encrypted session or from this process's own memory:
 * records without a CRC (flags 3) are taken too, the session's tag (or
 * nothing at all) having stood between the encoder and here.  Never for
 * bytes that rested in a file or a store. */
TL__HIDDEN int tl__snapshot_import_wire(tl_runtime *rt, const void *buf, size_t len, int hold,
                                        tl_tasklet **out);
TL__HIDDEN void tl__import_restart(tl_runtime *rt, tl_tasklet *t);

/* Inflates src into dst (exactly dstlen bytes expected) with the
 * runtime's reusable stream: raw deflate if raw (record flags 2), else a
 * zlib stream (flags 1); returns 0 on success. */
TL__HIDDEN int tl__inflate(tl_runtime *rt, const void *src, size_t srclen, void *dst,
                           size_t dstlen, int raw);

/* Checks that p[0..n) holds exactly one well-formed msgpack value whose
 * declared counts fit the bytes and whose nesting is at most maxdepth;
 * returns its length, or 0 if malformed. */
TL__HIDDEN size_t tl__msgpack_check(const unsigned char *p, size_t n, int maxdepth);
/* The array header at p[0..n) (fixarray, array 16 or array 32): returns
 * its length in bytes and sets *count to its items; 0 if p does not start
 * with a whole array header. */
TL__HIDDEN size_t tl__msgpack_array_head(const unsigned char *p, size_t n, uint32_t *count);

#endif
