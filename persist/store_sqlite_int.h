/*
 * store_sqlite_int.h -- what the SQLite backend's files share (internal to
 * persist/store_sqlite*.c): the connection struct and the error and
 * statement helpers.  store_sqlite.c is the backend; store_sqlite_mail.c
 * its mailbox (FORMAT.md section 7).
 */
#ifndef TL_STORE_SQLITE_INT_H
#define TL_STORE_SQLITE_INT_H

#include "store_backend.h"

#include <sqlite3.h>
#include <sys/types.h>

#define NCACHE 16
#define FEW_KEYS 256 /* retire: up to this many chunks, one DELETE each */
#define RING 64      /* checkpoints whose chunk keys the backend remembers */

/* The (kind, key) pairs one checkpoint wrote, for its retirement: exact
 * (committed rows only) or many (more than FEW_KEYS: found by a scan). */
typedef struct sq_keys {
    int64_t ckpt;    /* 0: empty */
    int many;
    size_t n, cap;   /* pairs in kk: 2n int64s */
    int64_t *kk;
} sq_keys;

enum { ROW_PUT, ROW_DEL, ROW_CLEAR, ROW_READ };
enum { S_BEGIN, S_COMMIT, S_HEAD, S_OLDEST, S_SUP, S_GONE, S_VACUUM, S_FREE, S_KEYS, S_SUP_MANY, NFIXED }; /* fixed() */

typedef struct sq {
    tl__store_be base;
    sqlite3 *db;
    int flags;
    int lockfd;      /* the owner's flock on path-lock, -1 when not owning */
    int incremental; /* auto_vacuum is INCREMENTAL: retire gives pages back */
    sq_keys cur;     /* what the open transaction's checkpoint wrote */
    sq_keys ring[RING]; /* committed checkpoints', by ckpt % RING */
    int64_t writing; /* the id of the checkpoint the transaction writes */
    mode_t mode;     /* for files we create: 0600, or 0640 */
    char *lockpath;  /* path + "-lock" */
    sqlite3_stmt *ins_chunk, *get_epoch, *fixed[NFIXED];
    struct {
        const tl__table *t;
        int op;
        sqlite3_stmt *s;
    } cache[NCACHE];
} sq;

/* A SQLite failure as our code (I/O trouble: TL_EIO, else TL_ESTORE),
 * with the store's message set; the last error of the connection. */
TL__HIDDEN int tl__sq_err(sq *q, int rc, const char *what);
TL__HIDDEN int tl__sq_last_err(sq *q, const char *what);
/* Runs sql (no rows); steps s to its end (reset, not finalized). */
TL__HIDDEN int tl__sq_exec(sq *q, const char *sql, const char *what);
TL__HIDDEN int tl__sq_step_done(sq *q, sqlite3_stmt *s, const char *what);
/* Binds n bytes at column col (TL_ERANGE past SQLite's limit). */
TL__HIDDEN int tl__sq_bind_bytes(sq *q, sqlite3_stmt *s, int col, const void *p, size_t n);

/* Statement i of the write path (S_*), prepared at its first use (NULL
 * if it does not prepare: sqlite3_step(NULL) is SQLITE_MISUSE). */
TL__HIDDEN sqlite3_stmt *tl__sq_fixed(sq *q, int i, const char *sql);
/* TL_OK while the write transaction begin opened is open, else
 * TL_ESTORE (what names the step refused). */
TL__HIDDEN int tl__sq_in_tx(sq *q, const char *what);

/* store_sqlite_retire.c: the backend's retire and prune operations, and
 * the memory of which chunks each checkpoint wrote (so that no index on
 * chunks(ckpt) is needed): note after each chunk row, committed after
 * the COMMIT, forget when what was noted may no longer be exact. */
TL__HIDDEN int tl__sq_retire(tl__store_be *be, int64_t oldest_kept);
TL__HIDDEN int tl__sq_prune(tl__store_be *be, int64_t oldest_kept);
TL__HIDDEN void tl__sq_keys_note(sq *q, int kind, uint64_t key, int64_t ckpt);
TL__HIDDEN void tl__sq_keys_committed(sq *q);
TL__HIDDEN void tl__sq_keys_forget(sq *q, int all);
TL__HIDDEN void tl__sq_keys_free(sq *q);

/* store_sqlite_vfs.c: the name of the VFS a store's connection opens
 * with (the unix VFS, a WAL frame in one write), registered at the first
 * call; NULL (SQLite's default) where the unix VFS is not there. */
#define TL__SQLITE_VFS "tl-unix"
TL__HIDDEN const char *tl__sqlite_vfs(void);

/* store_sqlite_mail.c: the backend's mailbox operations (store_backend.h). */
TL__HIDDEN int tl__sq_mail_read(tl__store_be *be, const char *to, tl__mail_fn fn, void *ud);
TL__HIDDEN int tl__sq_mail_put(tl__store_be *be, const tl__mail_row *m);
TL__HIDDEN int tl__sq_mail_take(tl__store_be *be, const char *xid);
TL__HIDDEN int tl__sq_mail_refuse(tl__store_be *be, const char *xid, const char *reason);

#endif
