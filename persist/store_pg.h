/*
 * store_pg.h -- what the two files of the PostgreSQL backend share
 * (internal): the connection, and small helpers over libpq.
 *
 * store_pg.c opens, identifies, claims and runs the transactions;
 * store_pg_rows.c stores and reads the rows (chunks, checkpoints,
 * participants' tables, the mailbox).  Every query is sent with
 * PQexecParams, parameters typed, bytea and results in binary format.
 */
#ifndef TL_STORE_PG_H
#define TL_STORE_PG_H

#include "store_backend.h"

#include <libpq-fe.h>

#define PG_NTABLES 16
#define TL__PG_CHANNEL "libtasklet" /* LISTEN/NOTIFY channel */
#define PG_MAXPARAM 8
#define PG_PIPE_MAX 256 /* writes in flight before their results are read */

typedef struct pg {
    tl__store_be base;
    PGconn *conn;
    int flags;
    int64_t lease_ms;  /* how long a claim or a fenced begin holds the lease */
    char where[300];   /* host:port/dbname, schema: no password, for messages */
    struct {
        const tl__table *t; /* participant tables known to exist */
    } tables[PG_NTABLES];
    int piped;                        /* writes sent, results not read yet */
    const char *piped_what[PG_PIPE_MAX]; /* what each was, for messages */
} pg;

/* Parameters of one query: text for numbers and strings, binary bytea. */
typedef struct pg_params {
    int n;
    Oid types[PG_MAXPARAM];
    const char *vals[PG_MAXPARAM];
    int lens[PG_MAXPARAM];
    int fmts[PG_MAXPARAM];
    char num[PG_MAXPARAM][24];
} pg_params;

TL__HIDDEN void tl__pg_i64(pg_params *p, int64_t v);
TL__HIDDEN void tl__pg_text(pg_params *p, const char *s);
/* TL_ERANGE (and nothing added) past what one bytea parameter holds. */
TL__HIDDEN int tl__pg_bytes(pg *q, pg_params *p, const void *data, size_t n);

/* Runs sql with params p (NULL: none).  On success *res (if res is not
 * NULL) gets the result, to PQclear; on failure the store's error is set,
 * naming what, and the code returned (TL_EIO for a lost or refused
 * connection, a full disk or a read-only server; TL_ERANGE for a value
 * the server cannot hold; TL_EBUSY for a serialization failure or a
 * deadlock; TL_ESTORE for the rest). */
TL__HIDDEN int tl__pg_run(pg *q, const char *sql, const pg_params *p, const char *what,
                          PGresult **res);
/* Sets the store's error for r's failure (r NULL: the connection's). */
TL__HIDDEN int tl__pg_fail(pg *q, const PGresult *r, const char *what);
/* Sends a write whose result nobody waits for (libpq's pipeline mode):
 * its error, if any, comes from the next tl__pg_drain -- which every
 * other query, the commit and the rollback run first -- naming what. */
TL__HIDDEN int tl__pg_send(pg *q, const char *sql, const pg_params *p, const char *what);
TL__HIDDEN int tl__pg_drain(pg *q);
/* Same, for the number of rows the command changed (or -1 on failure). */
TL__HIDDEN int64_t tl__pg_change(pg *q, const char *sql, const pg_params *p, const char *what);
/* Same, for the bigint in the first column of the first row (dflt when
 * there is no row). */
TL__HIDDEN int tl__pg_int(pg *q, const char *sql, const pg_params *p, const char *what,
                          int64_t dflt, int64_t *out);

/* A binary result column as an integer (int2, int4 or int8), or as bytes. */
TL__HIDDEN int64_t tl__pg_col_i64(const PGresult *r, int row, int col);

TL__HIDDEN void tl__pg_tables_forget(pg *q);

/* The row operations (store_pg_rows.c). */
TL__HIDDEN int tl__pg_put_chunk(tl__store_be *be, int kind, uint64_t key, int64_t ckpt,
                                const void *p, size_t n);
TL__HIDDEN int tl__pg_put_head(tl__store_be *be, const tl__ckpt_row *row);
TL__HIDDEN int tl__pg_stored_keys(tl__store_be *be, int (*fn)(void *ud, int kind, uint64_t key),
                                  void *ud);
TL__HIDDEN int tl__pg_last_id(tl__store_be *be, int64_t *id);
TL__HIDDEN int tl__pg_prev_id(tl__store_be *be, int64_t below, int64_t *id);
TL__HIDDEN int tl__pg_read(tl__store_be *be, int64_t at, int64_t *ckpt, tl__raw_fn fn, void *ud);
TL__HIDDEN int tl__pg_prune(tl__store_be *be, int64_t oldest_kept);
TL__HIDDEN int tl__pg_retire(tl__store_be *be, int64_t oldest_kept);
TL__HIDDEN int tl__pg_row_put(tl__store_be *be, const tl__table *t, const tl__row *r);
TL__HIDDEN int tl__pg_row_del(tl__store_be *be, const tl__table *t, const char *key);
TL__HIDDEN int tl__pg_row_clear(tl__store_be *be, const tl__table *t);
TL__HIDDEN int tl__pg_rows_read(tl__store_be *be, const tl__table *t, tl__row_fn fn, void *ud);
TL__HIDDEN int tl__pg_tables_make(tl__store_be *be, const tl__table *t);
TL__HIDDEN int tl__pg_row_get(tl__store_be *be, const tl__table *t, const char *key,
                              tl__row_fn fn, void *ud);
TL__HIDDEN int tl__pg_rows_since(tl__store_be *be, const tl__table *t, int64_t after,
                                 tl__row_fn fn, void *ud);
TL__HIDDEN int tl__pg_row_insert(tl__store_be *be, const tl__table *t, const tl__row *r);
TL__HIDDEN int tl__pg_row_del_peer(tl__store_be *be, const tl__table *t, const char *peer);
TL__HIDDEN int tl__pg_notify(tl__store_be *be, const char *what);
TL__HIDDEN int tl__pg_mail_read(tl__store_be *be, const char *to, tl__mail_fn fn, void *ud);
TL__HIDDEN int tl__pg_mail_put(tl__store_be *be, const tl__mail_row *m);
TL__HIDDEN int tl__pg_mail_take(tl__store_be *be, const char *xid);
TL__HIDDEN int tl__pg_mail_refuse(tl__store_be *be, const char *xid, const char *reason);

#endif
