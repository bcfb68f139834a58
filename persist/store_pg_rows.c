/*
 * store_pg_rows.c -- the PostgreSQL backend's rows: chunks and checkpoints,
 * restore in one snapshot, pruning and retention, participants' tables and
 * the mailbox (store_backend.h gives each operation's contract; the
 * connection and the transactions are store_pg.c's).
 *
 * Invariants:
 * - The same rows as the SQLite backend (docs/FORMAT.md section 7): blobs
 *   are bytea, integers bigint, a chunk's key its 64-bit value as bigint.
 * - A participant's table has, besides the columns its tl__table declares,
 *   tl_seq (bigserial), renewed when a row is replaced: rows_read gives
 *   rows in the order they were last written, as SQLite's rowid does for
 *   INSERT OR REPLACE.  It is created on first write, in the checkpoint's
 *   transaction (a rollback takes it away again, and the cache of known
 *   tables is forgotten then).
 * - Table and column names come from tl__table (fixed identifiers in the
 *   library), never from user input; every value is a parameter.
 * - A restore streams chunk rows one at a time (libpq's single-row mode),
 *   so memory does not grow with the store.
 */
#include "store_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checkpoint rows ---- */

int tl__pg_put_chunk(tl__store_be *be, int kind, uint64_t key, int64_t ckpt, const void *data,
                     size_t n)
{
    pg *q = (pg *)be;
    pg_params p = {0};
    tl__pg_i64(&p, kind);
    tl__pg_i64(&p, (int64_t)key);
    tl__pg_i64(&p, ckpt);
    int rc = tl__pg_bytes(q, &p, data, n);
    return rc == TL_OK ? tl__pg_send(q, "INSERT INTO chunks VALUES ($1, $2, $3, $4)", &p,
                                     "writing a chunk")
                       : rc;
}

int tl__pg_put_head(tl__store_be *be, const tl__ckpt_row *r)
{
    pg *q = (pg *)be;
    pg_params p = {0};
    tl__pg_i64(&p, r->id);
    tl__pg_i64(&p, r->time);
    tl__pg_i64(&p, r->tasklets);
    tl__pg_i64(&p, r->chans);
    tl__pg_i64(&p, r->bytes);
    int rc = tl__pg_bytes(q, &p, r->head, r->len);
    return rc == TL_OK ? tl__pg_send(q, "INSERT INTO checkpoints VALUES ($1, $2, $3, $4, $5, $6)",
                                     &p, "writing a checkpoint")
                       : rc;
}

int tl__pg_stored_keys(tl__store_be *be, int (*fn)(void *ud, int kind, uint64_t key), void *ud)
{
    pg *q = (pg *)be;
    PGresult *r = NULL;
    int rc = tl__pg_run(q, "SELECT DISTINCT kind::bigint, key FROM chunks", NULL,
                        "listing chunks", &r);
    if (rc != TL_OK)
        return rc;
    for (int i = 0; rc == TL_OK && i < PQntuples(r); i++)
        rc = fn(ud, (int)tl__pg_col_i64(r, i, 0), (uint64_t)tl__pg_col_i64(r, i, 1));
    PQclear(r);
    return rc;
}

/* ---- restore ---- */

int tl__pg_last_id(tl__store_be *be, int64_t *id)
{
    return tl__pg_int((pg *)be, "SELECT coalesce(max(id), 0) FROM checkpoints", NULL,
                      "reading checkpoints", 0, id);
}

int tl__pg_prev_id(tl__store_be *be, int64_t below, int64_t *id)
{
    pg_params p = {0};
    tl__pg_i64(&p, below);
    return tl__pg_int((pg *)be, "SELECT coalesce(max(id), 0) FROM checkpoints WHERE id < $1", &p,
                      "reading checkpoints", 0, id);
}

static int read_head(pg *q, int64_t at, int64_t *ckpt, tl__raw_fn fn, void *ud)
{
    PGresult *r = NULL;
    pg_params p = {0};
    tl__pg_i64(&p, at);
    int rc = tl__pg_run(q, "SELECT id, head FROM checkpoints WHERE $1 = 0 OR id = $1 ORDER BY id "
                        "DESC LIMIT 1", &p, "reading checkpoints", &r);
    if (rc != TL_OK)
        return rc;
    if (PQntuples(r) == 1) {
        *ckpt = tl__pg_col_i64(r, 0, 0);
        tl__raw rec = {0, 0, PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1)};
        rc = fn(ud, &rec);
    } else if (at) {
        rc = tl__store_fail(q->base.st, TL_ENOENT, "the store has no checkpoint %lld",
                            (long long)at);
    } else {
        rc = tl__store_fail(q->base.st, TL_ENOENT, "the store has no checkpoint yet");
    }
    PQclear(r);
    return rc;
}

/* The newest row per chunk at or below ckpt, one row at a time.  Every
 * result is read to the end, even after fn failed, so that the
 * connection is ready for the next query. */
static int read_chunks(pg *q, int64_t ckpt, tl__raw_fn fn, void *ud)
{
    pg_params p = {0};
    tl__pg_i64(&p, ckpt);
    int rc = tl__pg_drain(q);
    if (rc != TL_OK)
        return rc;
    if (!PQsendQueryParams(q->conn, "SELECT DISTINCT ON (kind, key) kind::bigint, key, data FROM "
                           "chunks WHERE ckpt <= $1 ORDER BY kind, key, ckpt DESC", p.n, p.types,
                           p.vals, p.lens, p.fmts, 1))
        return tl__pg_fail(q, NULL, "reading chunks");
    PQsetSingleRowMode(q->conn);
    int out = TL_OK;
    PGresult *r = NULL;
    while ((r = PQgetResult(q->conn))) {
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_SINGLE_TUPLE && out == TL_OK) {
            tl__raw rec = {(int)tl__pg_col_i64(r, 0, 0), (uint64_t)tl__pg_col_i64(r, 0, 1),
                           PQgetvalue(r, 0, 2), (size_t)PQgetlength(r, 0, 2)};
            out = fn(ud, &rec);
        } else if (s != PGRES_SINGLE_TUPLE && s != PGRES_TUPLES_OK && out == TL_OK) {
            out = tl__pg_fail(q, r, "reading chunks");
        }
        PQclear(r);
    }
    return out;
}

int tl__pg_read(tl__store_be *be, int64_t at, int64_t *ckpt, tl__raw_fn fn, void *ud)
{
    pg *q = (pg *)be;
    /* one consistent view of head and chunks */
    int rc = tl__pg_run(q, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, "restoring",
                        NULL);
    if (rc == TL_OK)
        rc = read_head(q, at, ckpt, fn, ud);
    if (rc == TL_OK)
        rc = read_chunks(q, *ckpt, fn, ud);
    if (PQtransactionStatus(q->conn) != PQTRANS_IDLE)
        PQclear(PQexec(q->conn, "COMMIT"));
    return rc;
}

/* ---- pruning and retention ---- */

static int run_int(pg *q, const char *sql, int64_t a, const char *what)
{
    pg_params p = {0};
    tl__pg_i64(&p, a);
    return tl__pg_run(q, sql, &p, what, NULL);
}

/* Rows below oldest_kept that a newer row at or below it supersedes are
 * read by no remaining checkpoint (FORMAT.md section 7). */
int tl__pg_prune(tl__store_be *be, int64_t oldest_kept)
{
    pg *q = (pg *)be;
    int rc = run_int(q, "DELETE FROM chunks WHERE ckpt < $1 AND EXISTS (SELECT 1 FROM chunks d "
                     "WHERE d.kind = chunks.kind AND d.key = chunks.key AND d.ckpt > chunks.ckpt "
                     "AND d.ckpt <= $1)", oldest_kept, "pruning");
    return rc == TL_OK ? run_int(q, "DELETE FROM checkpoints WHERE id < $1", oldest_kept,
                                 "pruning")
                       : rc;
}

/* The space of deleted rows goes back to the table by autovacuum; nothing
 * to give back here (SQLite's incremental_vacuum). */
int tl__pg_retire(tl__store_be *be, int64_t oldest_kept)
{
    pg *q = (pg *)be;
    int64_t oldest = 0;
    int rc = tl__pg_int(q, "SELECT coalesce(min(id), 0) FROM checkpoints", NULL,
                        "retiring old checkpoints", 0, &oldest);
    if (rc != TL_OK || oldest == 0 || oldest >= oldest_kept)
        return rc;
    for (int64_t c = oldest + 1; c <= oldest_kept && rc == TL_OK; c++)
        rc = run_int(q, "DELETE FROM chunks WHERE (kind, key) IN (SELECT kind, key FROM chunks "
                     "WHERE ckpt = $1) AND ckpt < $1", c, "retiring old checkpoints");
    return rc == TL_OK ? run_int(q, "DELETE FROM checkpoints WHERE id < $1", oldest_kept,
                                 "retiring old checkpoints")
                       : rc;
}

/* ---- participants' tables ---- */

static bool table_known(pg *q, const tl__table *t)
{
    for (int i = 0; i < PG_NTABLES; i++)
        if (q->tables[i].t == t)
            return true;
    return false;
}

static void table_remember(pg *q, const tl__table *t)
{
    for (int i = 0; i < PG_NTABLES; i++)
        if (!q->tables[i].t) {
            q->tables[i].t = t;
            return;
        }
}

/* 1 when t is there (remembered), 0 when not, or an error. */
static int table_exists(pg *q, const tl__table *t)
{
    if (table_known(q, t))
        return 1;
    pg_params p = {0};
    tl__pg_text(&p, t->name);
    int64_t n = 0;
    int rc = tl__pg_int(q, "SELECT count(*) FROM pg_class WHERE relname = $1 AND relnamespace = "
                        "current_schema()::regnamespace AND relkind = 'r'", &p, t->name, 0, &n);
    if (rc != TL_OK)
        return rc;
    if (n)
        table_remember(q, t);
    return n ? 1 : 0;
}

/* Creates t (in the checkpoint's transaction) if it is not there. */
static int ensure_table(pg *q, const tl__table *t)
{
    int rc = table_exists(q, t);
    if (rc != 0)
        return rc < 0 ? rc : TL_OK;
    char sql[512];
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s(%s text PRIMARY KEY%s%s%s%s%s%s%s%s%s"
             ", tl_seq bigserial NOT NULL)", t->name, t->key,
             t->peer ? ", " : "", t->peer ? t->peer : "", t->peer ? " text NOT NULL" : "",
             t->time ? ", " : "", t->time ? t->time : "", t->time ? " bigint NOT NULL" : "",
             t->data ? ", " : "", t->data ? t->data : "", t->data ? " bytea NOT NULL" : "");
    rc = tl__pg_run(q, sql, NULL, t->name, NULL);
    if (rc == TL_OK)
        table_remember(q, t);
    return rc;
}

/* INSERT ... ON CONFLICT DO UPDATE with the columns t has, numbered in
 * order ($1 key, then peer, time, data as present). */
static void put_sql(const tl__table *t, char *sql, size_t n)
{
    char cols[200], vals[40], set[300];
    const char *names[3] = {t->peer, t->time, t->data};
    int at = 1;
    snprintf(cols, sizeof cols, "%s", t->key);
    snprintf(vals, sizeof vals, "$1");
    set[0] = '\0';
    for (int i = 0; i < 3; i++) {
        if (!names[i])
            continue;
        at++;
        size_t c = strlen(cols), v = strlen(vals), s = strlen(set);
        snprintf(cols + c, sizeof cols - c, ", %s", names[i]);
        snprintf(vals + v, sizeof vals - v, ", $%d", at);
        snprintf(set + s, sizeof set - s, "%s = EXCLUDED.%s, ", names[i], names[i]);
    }
    snprintf(sql, n, "INSERT INTO %s(%s) VALUES (%s) ON CONFLICT (%s) DO UPDATE SET %s"
             "tl_seq = DEFAULT", t->name, cols, vals, t->key, set);
}

/* A shared table's writers (owner and posters) take its lock until they
 * commit, so tl_seq values become visible in increasing order: a sequence
 * hands them out at INSERT, not at commit, and a reader's cursor past a
 * larger one would otherwise skip a smaller one committed later. */
static int order_writes(pg *q, const tl__table *t)
{
    if (!t->shared)
        return TL_OK;
    pg_params p = {0};
    tl__pg_text(&p, t->name);
    return tl__pg_send(q, "SELECT pg_advisory_xact_lock(hashtext('libtasklet:' || "
                       "current_schema() || ':' || $1))", &p, t->name);
}

/* A row's columns as the parameters of put_sql's statement. */
static int row_params(pg *q, const tl__table *t, const tl__row *r, pg_params *p)
{
    tl__pg_text(p, r->key);
    if (t->peer)
        tl__pg_text(p, r->peer ? r->peer : "");
    if (t->time)
        tl__pg_i64(p, r->time);
    return t->data ? tl__pg_bytes(q, p, r->data, r->len) : TL_OK;
}

int tl__pg_row_put(tl__store_be *be, const tl__table *t, const tl__row *r)
{
    pg *q = (pg *)be;
    int rc = ensure_table(q, t);
    if (rc == TL_OK)
        rc = order_writes(q, t);
    if (rc != TL_OK)
        return rc;
    char sql[800];
    put_sql(t, sql, sizeof sql);
    pg_params p = {0};
    if ((rc = row_params(q, t, r, &p)) != TL_OK)
        return rc;
    return tl__pg_send(q, sql, &p, t->name);
}

int tl__pg_row_del(tl__store_be *be, const tl__table *t, const char *key)
{
    pg *q = (pg *)be;
    int rc = table_exists(q, t);
    if (rc <= 0)
        return rc; /* no table: no row to delete */
    char sql[200];
    pg_params p = {0};
    if (key) {
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE %s = $1", t->name, t->key);
        tl__pg_text(&p, key);
    } else {
        snprintf(sql, sizeof sql, "DELETE FROM %s", t->name);
    }
    return tl__pg_send(q, sql, &p, t->name);
}

int tl__pg_row_clear(tl__store_be *be, const tl__table *t) { return tl__pg_row_del(be, t, NULL); }

/* SELECT of t's columns (key, peer, time, data, tl_seq), then tail. */
static void select_sql(const tl__table *t, const char *tail, char *sql, size_t n)
{
    snprintf(sql, n, "SELECT %s, %s, %s, %s, tl_seq FROM %s %s", t->key,
             t->peer ? t->peer : "''", t->time ? t->time : "0::bigint",
             t->data ? t->data : "''::bytea", t->name, tail);
}

/* Runs a select_sql query and gives fn each row; TL_ENOENT for none when
 * one was wanted. */
static int rows_run(pg *q, const tl__table *t, const char *tail, const pg_params *p,
                    int want_one, tl__row_fn fn, void *ud)
{
    int rc = table_exists(q, t);
    if (rc <= 0)
        return rc == 0 && want_one ? TL_ENOENT : rc; /* no table: no rows */
    char sql[400];
    select_sql(t, tail, sql, sizeof sql);
    PGresult *r = NULL;
    if ((rc = tl__pg_run(q, sql, p, t->name, &r)) != TL_OK)
        return rc;
    if (want_one && PQntuples(r) == 0)
        rc = TL_ENOENT;
    for (int i = 0; rc == TL_OK && i < PQntuples(r); i++) {
        tl__row row = {PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), tl__pg_col_i64(r, i, 2),
                       PQgetvalue(r, i, 3), (size_t)PQgetlength(r, i, 3),
                       tl__pg_col_i64(r, i, 4)};
        rc = fn(ud, &row);
    }
    PQclear(r);
    return rc;
}

int tl__pg_rows_read(tl__store_be *be, const tl__table *t, tl__row_fn fn, void *ud)
{
    return rows_run((pg *)be, t, "ORDER BY tl_seq", NULL, 0, fn, ud);
}

int tl__pg_tables_make(tl__store_be *be, const tl__table *t) { return ensure_table((pg *)be, t); }

int tl__pg_row_get(tl__store_be *be, const tl__table *t, const char *key, tl__row_fn fn,
                   void *ud)
{
    char tail[120];
    pg_params p = {0};
    tl__pg_text(&p, key);
    snprintf(tail, sizeof tail, "WHERE %s = $1", t->key);
    return rows_run((pg *)be, t, tail, &p, 1, fn, ud);
}

int tl__pg_rows_since(tl__store_be *be, const tl__table *t, int64_t after, tl__row_fn fn,
                      void *ud)
{
    pg_params p = {0};
    tl__pg_i64(&p, after);
    return rows_run((pg *)be, t, "WHERE tl_seq > $1 ORDER BY tl_seq", &p, 0, fn, ud);
}

/* A plain INSERT (no ON CONFLICT: a taken key is TL_EEXIST), waited for,
 * then the announcement, delivered at commit. */
int tl__pg_row_insert(tl__store_be *be, const tl__table *t, const tl__row *r)
{
    pg *q = (pg *)be;
    int rc = ensure_table(q, t);
    if (rc != TL_OK)
        return rc;
    if ((rc = order_writes(q, t)) != TL_OK)
        return rc;
    char sql[800];
    put_sql(t, sql, sizeof sql);
    *strstr(sql, " ON CONFLICT") = '\0';
    pg_params p = {0};
    if ((rc = row_params(q, t, r, &p)) != TL_OK)
        return rc;
    rc = tl__pg_run(q, sql, &p, t->name, NULL);
    return rc == TL_OK ? tl__pg_notify(be, t->name) : rc;
}

int tl__pg_row_del_peer(tl__store_be *be, const tl__table *t, const char *peer)
{
    pg *q = (pg *)be;
    int rc = table_exists(q, t);
    if (rc <= 0 || !t->peer)
        return rc; /* no table (or no such column): no row to delete */
    char sql[200];
    pg_params p = {0};
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE %s = $1", t->name, t->peer);
    tl__pg_text(&p, peer);
    return tl__pg_send(q, sql, &p, t->name);
}

int tl__pg_notify(tl__store_be *be, const char *what)
{
    pg_params p = {0};
    tl__pg_text(&p, what);
    return tl__pg_send((pg *)be, "SELECT pg_notify('" TL__PG_CHANNEL "', 'row ' || $1 || ' ' || "
                       "current_schema())", &p, "announcing a write");
}

/* ---- the mailbox ---- */

int tl__pg_mail_read(tl__store_be *be, const char *to, tl__mail_fn fn, void *ud)
{
    pg *q = (pg *)be;
    pg_params p = {0};
    tl__pg_text(&p, to);
    PGresult *r = NULL;
    int rc = tl__pg_run(q, "SELECT xid, from_node, time, data FROM mailbox WHERE to_node = $1 "
                        "ORDER BY time, xid", &p, "reading the mailbox", &r);
    if (rc != TL_OK)
        return rc;
    for (int i = 0; rc == TL_OK && i < PQntuples(r); i++) {
        tl__mail_row m = {PQgetvalue(r, i, 0), to, PQgetvalue(r, i, 1), tl__pg_col_i64(r, i, 2),
                          PQgetvalue(r, i, 3), (size_t)PQgetlength(r, i, 3)};
        rc = fn(ud, &m);
    }
    PQclear(r);
    return rc;
}

int tl__pg_mail_put(tl__store_be *be, const tl__mail_row *m)
{
    pg *q = (pg *)be;
    pg_params p = {0};
    tl__pg_text(&p, m->xid);
    tl__pg_text(&p, m->to);
    tl__pg_text(&p, m->from);
    tl__pg_i64(&p, m->time);
    int rc = tl__pg_bytes(q, &p, m->data, m->len);
    if (rc == TL_OK)
        rc = tl__pg_run(q, "INSERT INTO mailbox VALUES ($1, $2, $3, $4, $5)", &p,
                        "writing the mailbox", NULL);
    pg_params to = {0};
    tl__pg_text(&to, m->to);
    if (rc == TL_OK) /* delivered when the transaction commits */
        rc = tl__pg_run(q, "SELECT pg_notify('" TL__PG_CHANNEL "', 'mail ' || $1)", &to,
                        "writing the mailbox", NULL);
    return rc;
}

static int taken(pg *q, int64_t n, const char *xid)
{
    if (n < 0)
        return tl_store_errcode(q->base.st);
    if (n != 1)
        return tl__store_fail(q->base.st, TL_EBUSY, "mailbox row %s was taken by another "
                              "process meanwhile", xid);
    return TL_OK;
}

int tl__pg_mail_take(tl__store_be *be, const char *xid)
{
    pg *q = (pg *)be;
    pg_params p = {0};
    tl__pg_text(&p, xid);
    return taken(q, tl__pg_change(q, "DELETE FROM mailbox WHERE xid = $1", &p,
                                  "writing the mailbox"), xid);
}

int tl__pg_mail_refuse(tl__store_be *be, const char *xid, const char *reason)
{
    pg *q = (pg *)be;
    pg_params p = {0};
    tl__pg_text(&p, xid);
    tl__pg_text(&p, reason);
    int rc = taken(q, tl__pg_change(q, "INSERT INTO mailbox_refused SELECT xid, to_node, "
                                    "from_node, time, data, $2 FROM mailbox WHERE xid = $1 "
                                    "ON CONFLICT (xid) DO UPDATE SET reason = EXCLUDED.reason, "
                                    "data = EXCLUDED.data, time = EXCLUDED.time", &p,
                                    "writing the mailbox"), xid);
    return rc == TL_OK ? tl__pg_mail_take(be, xid) : rc;
}
