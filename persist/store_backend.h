/*
 * store_backend.h -- what a store backend provides (internal).
 *
 * persist/store.c keeps everything that does not depend on where the
 * bytes go: the public tl_store_* API, handle checks, which chunks a
 * checkpoint writes, the record size limit, the mailbox's all-or-nothing
 * import, the participants (the node's outbox and inbox).  A backend
 * (persist/store_sqlite.c today, PostgreSQL next) stores and finds bytes
 * through the operations below.  docs/ARCHITECTURE.md section 11.1 gives
 * the contract in prose: who calls what, in which transaction.
 *
 * Rules every backend follows:
 * - One connection per tl__store_be; store.c calls it from one thread.
 * - Write operations (put_*, row_*, mail_put, mail_take, mail_refuse,
 *   prune) are only called between a successful begin and commit or
 *   rollback; nothing they do is visible to anyone before commit, and a
 *   rollback (or a crash) undoes all of them.
 * - begin(epoch > 0) is fenced: it must atomically, inside the new
 *   transaction, check that the store's current epoch is still epoch, and
 *   fail with TL_ELOCKED otherwise (a newer claim took the store over).
 *   begin(0) opens an unfenced transaction that may only touch the
 *   mailbox (a runtime handing tasklets over through a store it does not
 *   own).
 * - Errors are reported with tl__store_fail (the store's message and the
 *   attached runtime's), naming what failed and the backend's detail.
 *   I/O trouble (full, read-only, unreachable) is TL_EIO, a record the
 *   backend cannot hold TL_ERANGE, anything else TL_ESTORE.
 */
#ifndef TL_STORE_BACKEND_H
#define TL_STORE_BACKEND_H

#include "persist.h"

/* Every backend's connection starts with this. */
typedef struct tl__store_be {
    const struct tl__store_ops *ops;
    tl_store *st; /* for tl__store_fail */
} tl__store_be;

/* A checkpoint's row: its id (increasing), the head's time (ns), the
 * objects it holds, the record bytes it wrote and the head record. */
typedef struct tl__ckpt_row {
    int64_t id, time, tasklets, chans, bytes;
    const void *head;
    size_t len;
} tl__ckpt_row;

/* A mailbox row: a moving-tasklet snapshot addressed to a node. */
typedef struct tl__mail_row {
    const char *xid, *to, *from;
    int64_t time;
    const void *data;
    size_t len;
} tl__mail_row;

typedef int (*tl__raw_fn)(void *ud, const tl__raw *rec);
typedef int (*tl__mail_fn)(void *ud, const tl__mail_row *m);

typedef struct tl__store_ops {
    const char *name;

    /* Opens location (flags: TL_STORE_*) and identifies it: an empty
     * location becomes a new store (unless read-only), a store of this
     * format opens, anything else is refused (TL_EFORMAT) without being
     * written to.  *out is set on success only. */
    int (*open)(tl_store *st, const char *location, int flags, tl__store_be **out);
    /* Closes the connection; a transaction still open is rolled back. */
    void (*close)(tl__store_be *be);
    /* The largest record (bytes) the backend stores. */
    size_t (*max_record)(tl__store_be *be);

    /* Ownership.  claim makes this process the store's only writer: a
     * live other owner is refused (TL_ELOCKED, naming it), a dead one
     * taken over.  It increments the store's epoch in the same
     * transaction and returns the new one: every later fenced begin
     * checks it.  release gives ownership up if epoch is still current
     * (a newer owner's claim is left alone). */
    int (*claim)(tl__store_be *be, int64_t *epoch);
    void (*release)(tl__store_be *be, int64_t epoch);

    /* The write transaction (fenced by epoch, see above). */
    int (*begin)(tl__store_be *be, int64_t epoch);
    int (*commit)(tl__store_be *be);
    void (*rollback)(tl__store_be *be);
    /* After a large commit (a full checkpoint): puts what it wrote in its
     * final place now (SQLite: a passive WAL checkpoint), so that the small
     * commits after it do not pay for it.  Optional (NULL); never fails
     * the commit. */
    void (*settle)(tl__store_be *be);

    /* Checkpoint rows.  put_chunk stores record (kind, key) of checkpoint
     * ckpt; put_head the checkpoint itself, after its chunks.
     * stored_keys calls fn once for every (kind, key) that has a chunk
     * row (a full checkpoint writes tombstones for those it lacks). */
    int (*put_chunk)(tl__store_be *be, int kind, uint64_t key, int64_t ckpt, const void *p,
                     size_t n);
    int (*put_head)(tl__store_be *be, const tl__ckpt_row *row);
    int (*stored_keys)(tl__store_be *be, int (*fn)(void *ud, int kind, uint64_t key), void *ud);

    /* Restore.  last_id: the newest checkpoint id (0: none).  read: in
     * one consistent snapshot of the store, the newest checkpoint (at 0)
     * or checkpoint at: fn gets its head (kind 0) and then, in (kind, key)
     * order, for every (kind, key) the chunk row with the largest
     * ckpt <= that checkpoint, tombstones included (bytes borrowed for
     * the call).  *ckpt is the checkpoint read; TL_ENOENT when none. */
    int (*last_id)(tl__store_be *be, int64_t *id);
    /* The newest checkpoint id below `below` (0: none), for a restore that
     * falls back to an older checkpoint. */
    int (*prev_id)(tl__store_be *be, int64_t below, int64_t *id);
    int (*read)(tl__store_be *be, int64_t at, int64_t *ckpt, tl__raw_fn fn, void *ud);

    /* Pruning: deletes the checkpoints older than oldest_kept and every
     * chunk row none of the remaining checkpoints reads. */
    int (*prune)(tl__store_be *be, int64_t oldest_kept);
    /* Retention as you go, in a checkpoint's transaction: moves the oldest
     * kept checkpoint up to oldest_kept, deleting the checkpoint rows below
     * it and the chunk rows superseded by rows of the checkpoints it moves
     * past -- work in proportion to what those checkpoints wrote, not to
     * the store's size -- then gives back a bounded number of free pages
     * to the file system.  Keeps prune's result when every earlier
     * checkpoint was also retired (or pruned). */
    int (*retire)(tl__store_be *be, int64_t oldest_kept);

    /* Participants' rows (see tl__table in persist.h): insert or replace
     * by key, delete by key, delete all; rows_read gives a table's rows in
     * the order they were inserted (bytes borrowed for the call). */
    int (*row_put)(tl__store_be *be, const tl__table *t, const tl__row *r);
    int (*row_del)(tl__store_be *be, const tl__table *t, const char *key);
    int (*row_clear)(tl__store_be *be, const tl__table *t);
    int (*rows_read)(tl__store_be *be, const tl__table *t, tl__row_fn fn, void *ud);

    /* The mailbox.  mail_read gives the rows addressed to node `to`, the
     * oldest first (by time, then xid); it may run outside a transaction.
     * mail_put adds a row; mail_take claims one by deleting it, TL_EBUSY
     * when it is no longer there (another process took it); mail_refuse
     * moves it out of the mailbox into the refused rows with a reason. */
    int (*mail_read)(tl__store_be *be, const char *to, tl__mail_fn fn, void *ud);
    int (*mail_put)(tl__store_be *be, const tl__mail_row *m);
    int (*mail_take)(tl__store_be *be, const char *xid);
    int (*mail_refuse)(tl__store_be *be, const char *xid, const char *reason);

    /* Optional (NULL: TL_ENOTSUP), for the layers above (persist.h,
     * store_rows.c).  tables_make creates t now (autocommit); row_get
     * reads one committed row by key (TL_ENOENT); rows_since the rows
     * whose seq is above after, in seq order, seq filled in; row_insert
     * adds a new row (TL_EEXIST when the key is there) in a transaction
     * begun with begin(0); row_del_peer deletes the rows whose peer
     * column is peer; notify announces what to listeners at commit. */
    int (*tables_make)(tl__store_be *be, const tl__table *t);
    int (*row_get)(tl__store_be *be, const tl__table *t, const char *key, tl__row_fn fn,
                   void *ud);
    int (*rows_since)(tl__store_be *be, const tl__table *t, int64_t after, tl__row_fn fn,
                      void *ud);
    int (*row_insert)(tl__store_be *be, const tl__table *t, const tl__row *r);
    int (*row_del_peer)(tl__store_be *be, const tl__table *t, const char *peer);
    int (*notify)(tl__store_be *be, const char *what);
    /* Inside the checkpoint's transaction, for a participant's own SQL
     * (TL_WF_TX steps): tx_exec runs one statement; tx_conn hands out the
     * connection (PGconn *), every write sent before it done first. */
    int (*tx_exec)(tl__store_be *be, const char *sql);
    void *(*tx_conn)(tl__store_be *be);
} tl__store_ops;

/* st's backend connection and (if location is not NULL) the location it
 * was opened with; NULL when st is not an open store.  Inside a
 * participant's write, tx's. */
TL__HIDDEN tl__store_be *tl__store_backend(tl_store *st, const char **location);
TL__HIDDEN tl__store_be *tl__tx_backend(tl__store_tx *tx);

/* Records the store's error (and the attached runtime's); returns code. */
TL__HIDDEN int tl__store_fail(tl_store *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The backends. */
TL__HIDDEN extern const tl__store_ops tl__store_sqlite_ops;
/* Built when libpq is found (TL_HAVE_PG): store_pg.c. */
TL__HIDDEN extern const tl__store_ops tl__store_pg_ops;
/* The SQLite connection of be, or NULL (another backend). */
TL__HIDDEN void *tl__store_sqlite_db(tl__store_be *be);

#endif
