/*
 * db.c -- the workflow tables (docs/FORMAT.md section 11): the engine's
 * participant rows in every checkpoint transaction, and reading them back.
 *
 * Three tables, each shaped as the store's participant tables are (a text
 * key, a text column, a time, one msgpack blob):
 *   wf(id, status, updated, rec)          one row per workflow, kept after
 *                                         it finished (retention)
 *   wf_step(key "<id>#<n>", wf, time, data) one row per recorded step
 *   wf_msg(seq, key, wf, time, data)      posted messages and cancel
 *                                         requests (seq: arrival order)
 * The owner writes them only inside the checkpoint transaction (the
 * store's hook calls tl__wf_db_write), so a row and the tasklet state it
 * describes commit together.  Other processes only insert into wf_msg
 * (client.c), each in a transaction of its own.
 *
 * Adapter note: the store interface (persist/) gives participants
 * put/delete/read of such rows; what it does not give yet (a query by key,
 * an insert by a process that does not own the store, a SAVEPOINT for
 * TL_WF_TX effects) is done here with SQL on the store's connection, all
 * behind these functions.
 */
#include "wf_internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FINAL "('done','failed','cancelled','moved')"

/* wf and wf_step are WITHOUT ROWID tables with no other index (FORMAT.md
 * section 11): a step's commit rewrites one b-tree page of each, not a
 * rowid table's page and its key index's (and wf_step's index on wf).  A
 * workflow's steps are found by key range (STEPS_OF).  Stores made before
 * keep their rowid tables and the wf_step_wf index: every statement here
 * reads and writes both shapes. */
static const char wf_schema[] =
    "CREATE TABLE IF NOT EXISTS wf(id TEXT PRIMARY KEY, status TEXT NOT NULL,"
    " updated INTEGER NOT NULL, rec BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS wf_step(key TEXT PRIMARY KEY, wf TEXT NOT NULL,"
    " time INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS wf_msg(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " key TEXT UNIQUE NOT NULL, wf TEXT NOT NULL, time INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS wf_msg_wf ON wf_msg(wf);"
    "CREATE TABLE IF NOT EXISTS wf_chan(name TEXT PRIMARY KEY, kind TEXT NOT NULL,"
    " time INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS wf_conf(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

static int sqlerr(tl_wf *wf, sqlite3 *db, const char *what)
{
    int rc = sqlite3_errcode(db) & 0xff;
    int code = rc == SQLITE_FULL || rc == SQLITE_IOERR || rc == SQLITE_READONLY ? TL_EIO
               : rc == SQLITE_TOOBIG                                          ? TL_ERANGE
                                                                              : TL_ESTORE;
    return tl__wf_err(wf, code, "workflows: %s: %s", what, sqlite3_errmsg(db));
}

/* Posters follow the owner's durability choice (client.c): wf_conf says
 * it, written only when it changed (a write at every start would cost an
 * fsync). */
static int note_durability(tl_wf *wf, sqlite3 *db)
{
    sqlite3_stmt *s;
    int64_t sync = 2;
    if (sqlite3_prepare_v2(db, "PRAGMA synchronous", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        sync = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    const char *want = sync >= 2 ? "fsync" : "nosync";
    int same = 0;
    if (sqlite3_prepare_v2(db, "SELECT value = ? FROM wf_conf WHERE key = 'durability'", -1, &s,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, want, -1, SQLITE_STATIC);
        same = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0);
    }
    sqlite3_finalize(s);
    if (same)
        return TL_OK;
    if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO wf_conf VALUES('durability', ?)", -1, &s,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, want, -1, SQLITE_STATIC);
        same = sqlite3_step(s) == SQLITE_DONE;
    }
    sqlite3_finalize(s);
    return same ? TL_OK : sqlerr(wf, db, "writing the workflow settings");
}

int tl__wf_db_init(tl_wf *wf)
{
    sqlite3 *db = wf->db;
    if (!db)
        return tl__wf_dbs_init(wf); /* PostgreSQL */
    if (sqlite3_exec(db, wf_schema, NULL, NULL, NULL) != SQLITE_OK)
        return sqlerr(wf, db, "creating the workflow tables");
    return note_durability(wf, db);
}

/* ---- writing, inside the checkpoint transaction ---- */

#define T_WF tl__wf_t_wf /* db_store.c */
#define T_STEP tl__wf_t_step
#define T_MSG tl__wf_t_msg

static int put(tl_wf *wf, tl__store_tx *tx, const tl__table *t, const char *key,
               const char *peer, int64_t time, const void *p, size_t n)
{
    tl__row row = {key, peer, time, p, n};
    int rc = tl__tx_put(tx, t, &row);
    return rc == TL_OK ? TL_OK : tl__wf_err(wf, rc, "workflows: writing a %s row: %s", t->name,
                                            tl_store_errmsg(wf->st));
}

static int write_step(tl_wf *wf, tl__store_tx *tx, const wf_out *o, const char *id)
{
    void *p;
    size_t n;
    int rc = tl__wf_pack_step(o, &p, &n);
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "workflows: out of memory for a step row");
    rc = put(wf, tx, &T_STEP, o->key, id, o->ended, p, n);
    free(p);
    return rc;
}

static int exec(tl_wf *wf, sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? TL_OK : sqlerr(wf, db, sql);
}

/* A statement of run_tx's in the commit's transaction, on either backend. */
static int tx_sql(tl_wf *wf, tl__store_tx *tx, const char *sql)
{
    if (wf->db)
        return exec(wf, wf->db, sql);
    int rc = tl__tx_exec(tx, sql);
    return rc == TL_OK ? TL_OK : tl__wf_err(wf, rc, "workflows: %s: %s", sql,
                                            tl_store_errmsg(wf->st));
}

/* One TL_WF_TX attempt: the effect inside a savepoint of the commit's
 * transaction (on the store's connection: the effect's own SQL), its row
 * next to its writes; a failed attempt leaves nothing. */
static int run_tx(tl_wf *wf, tl__store_tx *tx, wf_job *j)
{
    int rc = tx_sql(wf, tx, "SAVEPOINT wf_tx");
    if (rc != TL_OK)
        return rc;
    j->db = wf->db ? wf->db : tl__tx_conn(tx); /* PostgreSQL: its PGconn */
    if (!j->db)
        return tl__wf_err(wf, TL_ESTORE, "workflows: no connection for a TL_WF_TX step: %s",
                          tl_store_errmsg(wf->st));
    if (!wf->inl_rt && tl_runtime_new(NULL, &wf->inl_rt) != TL_OK)
        wf->inl_rt = NULL;
    tl__wf_job_run(j, wf->inl_rt);
    uint32_t max = j->step->max_attempts ? j->step->max_attempts : 1;
    if (j->rc != TL_OK) {
        rc = tx_sql(wf, tx, "ROLLBACK TO wf_tx");
        if (rc == TL_OK)
            rc = tx_sql(wf, tx, "RELEASE wf_tx");
        if (rc != TL_OK || j->attempt < max)
            return rc;
    }
    wf_out o;
    memset(&o, 0, sizeof o);
    snprintf(o.key, sizeof o.key, "%s", j->key);
    snprintf(o.name, sizeof o.name, "%s", j->step->name);
    snprintf(o.errmsg, sizeof o.errmsg, "%s", j->rc ? j->errmsg : "");
    o.seq = j->seq;
    o.attempts = j->attempt;
    o.rc = j->rc;
    o.res = j->res;
    o.rlen = j->rlen;
    o.started = j->started;
    o.ended = j->ended;
    rc = write_step(wf, tx, &o, j->id);
    if (rc == TL_OK && j->rc == TL_OK)
        rc = tx_sql(wf, tx, "RELEASE wf_tx");
    if (rc == TL_OK) {
        j->counted = 1;
        j->rec->recorded++;
        tl__wf_dirty(wf, j->rec);
    }
    return rc;
}

static int write_txq(tl_wf *wf, tl__store_tx *tx)
{
    int rc = TL_OK;
    while (wf->txq && rc == TL_OK) {
        wf_job *j = wf->txq;
        wf->txq = j->next;
        j->next = wf->txdone;
        wf->txdone = j;
        rc = run_tx(wf, tx, j);
    }
    return rc;
}

int tl__wf_sqlerr(tl_wf *wf, void *db, const char *what) { return sqlerr(wf, db, what); }

int tl__wf_db_put(tl_wf *wf, tl__store_tx *tx, int step, const char *key, const char *id,
                  int64_t time, const void *p, size_t n)
{
    return put(wf, tx, step ? &T_STEP : &T_MSG, key, id, time, p, n);
}

/* r's row (its status in the column, the rest in the blob). */
int tl__wf_db_put_rec(tl_wf *wf, tl__store_tx *tx, wf_rec *r)
{
    void *p;
    size_t n;
    int sleeping = r->status == TL_WF_RUNNING && r->t && !r->moving &&
                   tl_tasklet_state(r->t) == TL_BLOCKED && tl_tasklet_wait(r->t) == TL_WAIT_SLEEP;
    if (sleeping) /* in TL_SLEEP: shown as waiting on "sleep" */
        r->status = TL_WF_WAITING;
    int rc = tl__wf_pack_rec(r, &p, &n);
    if (sleeping)
        r->status = TL_WF_RUNNING;
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "workflows: out of memory for a row");
    rc = put(wf, tx, &T_WF, r->id, tl_wf_status_name(sleeping ? TL_WF_WAITING : r->status),
             r->updated, p, n);
    free(p);
    return rc;
}

static int write_recs(tl_wf *wf, tl__store_tx *tx)
{
    for (wf_rec *r = wf->dirty; r; r = r->dnext) {
        if (r->moving)
            continue; /* its departure row is the cargo's (move.c) */
        int rc = tl__wf_db_put_rec(wf, tx, r);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

/* A received (or dropped) message's row is rewritten with the time it
 * was taken: it stays for deduplication and `tasklet wf show`. */
static int write_taken(tl_wf *wf, tl__store_tx *tx)
{
    int rc = TL_OK;
    for (wf_msg *m = wf->taken; m && rc == TL_OK; m = m->next) {
        void *p;
        size_t n;
        rc = tl__wf_pack_msg(m->kind, m->topic, m->val, m->len, m->taken, &p, &n);
        if (rc != TL_OK)
            return tl__wf_err(wf, rc, "workflows: out of memory marking a message");
        rc = put(wf, tx, &T_MSG, m->key, m->wf, m->posted, p, n);
        free(p);
    }
    return rc;
}

/* Deletes through tx every row of table t whose key `sel` selects. */
static int del_selected(tl_wf *wf, tl__store_tx *tx, const tl__table *t, const char *sel,
                        int64_t cut)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(wf->db, sel, -1, &s, NULL) != SQLITE_OK)
        return sqlerr(wf, wf->db, "selecting rows past the retention");
    sqlite3_bind_int64(s, 1, cut);
    int rc = TL_OK, src = SQLITE_DONE;
    while (rc == TL_OK && (src = sqlite3_step(s)) == SQLITE_ROW)
        rc = tl__tx_del(tx, t, (const char *)sqlite3_column_text(s, 0));
    if (rc == TL_OK && src != SQLITE_DONE) /* not a silent end: the rest would still commit */
        rc = sqlerr(wf, wf->db, "selecting rows past the retention");
    sqlite3_finalize(s);
    return rc;
}

/* Finished workflows older than the retention go, with their rows. */
static int prune(tl_wf *wf, tl__store_tx *tx)
{
    int64_t now = tl_now(wf->rt);
    if (!wf->cfg.retention_ms || now - wf->last_prune < 1000000000)
        return TL_OK;
    wf->last_prune = now;
    int64_t cut = now - wf->cfg.retention_ms * 1000000;
    if (!wf->db)
        return tl__wf_dbs_prune(wf, tx, cut);
#define OLD "(SELECT id FROM wf WHERE status IN " FINAL " AND updated < ?1)"
    int rc = del_selected(wf, tx, &T_STEP, "SELECT s.key FROM wf w CROSS JOIN wf_step s ON "
                          TL_WF_STEPS_OF("s", "w.id") " WHERE w.status IN " FINAL
                          " AND w.updated < ?1", cut);
    if (rc == TL_OK)
        rc = del_selected(wf, tx, &T_MSG, "SELECT key FROM wf_msg WHERE wf IN " OLD, cut);
    if (rc == TL_OK)
        rc = del_selected(wf, tx, &T_WF, "SELECT id FROM wf WHERE id IN " OLD, cut);
#undef OLD
    return rc;
}

/* PostgreSQL: awaiting processes (tl_wf_get) wake when a workflow's
 * final row commits (SQLite's see the file change). */
static int announce_ends(tl_wf *wf, tl__store_tx *tx)
{
    for (wf_rec *r = wf->dirty; r && !wf->db; r = r->dnext)
        if (r->status >= TL_WF_DONE)
            return tl__tx_notify(tx, "wf");
    return TL_OK;
}

int tl__wf_db_write(tl_wf *wf, tl__store_tx *tx)
{
    if (wf->txdone) /* the checkpoint that ran them rolled back */
        tl__wf_tx_rollback(wf);
    int rc = tl__wf_arrivals_write(wf, tx);
    if (rc == TL_OK)
        rc = write_txq(wf, tx);
    if (rc == TL_OK)
        rc = write_recs(wf, tx);
    if (rc == TL_OK)
        rc = announce_ends(wf, tx);
    for (wf_out *o = wf->outs; o && rc == TL_OK; o = o->next)
        if (!o->written)
            rc = write_step(wf, tx, o, o->rec ? o->rec->id : "");
    if (rc == TL_OK)
        rc = write_taken(wf, tx);
    if (rc == TL_OK)
        rc = tl__wf_chan_write(wf, tx);
    if (rc == TL_OK)
        rc = prune(wf, tx);
    return rc;
}

/* ---- reading ---- */

/* The engine's statements on the store's connection, prepared at their
 * first use and kept (reset after each use, so that none holds a read
 * transaction open); finalized before the store closes. */
static sqlite3_stmt *stmt(tl_wf *wf, int i, const char *sql)
{
    sqlite3_stmt **s = (sqlite3_stmt **)&wf->stmts[i];
    if (!*s)
        sqlite3_prepare_v2(wf->db, sql, -1, s, NULL);
    return *s;
}

void tl__wf_db_finalize(tl_wf *wf)
{
    for (size_t i = 0; i < TL_COUNTOF(wf->stmts); i++) {
        sqlite3_finalize(wf->stmts[i]);
        wf->stmts[i] = NULL;
    }
}

#define SQL_GET "SELECT status, rec FROM wf WHERE id = ?"

static int read_wf(sqlite3_stmt *s, const char *id, void **rec, size_t *len, int *status)
{
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *status = tl__wf_status_parse((const char *)sqlite3_column_text(s, 0));
        if (rec) {
            size_t n = (size_t)sqlite3_column_bytes(s, 1);
            *rec = malloc(n ? n : 1);
            if (*rec)
                memcpy(*rec, sqlite3_column_blob(s, 1), n);
            *len = n;
            rc = *rec ? TL_OK : TL_ENOMEM;
        } else {
            rc = TL_OK;
        }
    } else {
        rc = rc == SQLITE_DONE ? TL_ENOENT : TL_ESTORE;
    }
    sqlite3_reset(s);
    return rc;
}

int tl__wf_db_get(void *db, const char *id, void **rec, size_t *len, int *status)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, SQL_GET, -1, &s, NULL))
        return TL_ESTORE;
    int rc = read_wf(s, id, rec, len, status);
    sqlite3_finalize(s);
    return rc;
}

int tl__wf_db_find(tl_wf *wf, const char *id, void **rec, size_t *len, int *status)
{
    if (!wf->db)
        return tl__wf_dbs_get(wf->st, id, rec, len, status);
    sqlite3_stmt *s = stmt(wf, WF_ST_GET, SQL_GET);
    return s ? read_wf(s, id, rec, len, status) : TL_ESTORE;
}

int tl__wf_db_step(tl_wf *wf, const char *key, wf_out *o)
{
    sqlite3 *db = wf->db;
    if (!db)
        return tl__wf_dbs_step(wf, key, o);
    sqlite3_stmt *s = stmt(wf, WF_ST_STEP, "SELECT data FROM wf_step WHERE key = ?");
    if (!s)
        return sqlerr(wf, db, "reading a step");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        rc = tl__wf_unpack_step(sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0), o);
    else
        rc = rc == SQLITE_DONE ? TL_ENOENT : sqlerr(wf, db, "reading a step");
    sqlite3_reset(s);
    return rc;
}

/* Whether another connection committed since we last looked. */
int tl__wf_db_changed(tl_wf *wf)
{
    if (!wf->db)
        return tl__wf_dbs_changed(wf);
    sqlite3_stmt *s = stmt(wf, WF_ST_VERSION, "PRAGMA data_version");
    int64_t v = s && sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -2;
    sqlite3_reset(s);
    int changed = v != wf->data_version;
    wf->data_version = v;
    return changed;
}

int tl__wf_db_intake(tl_wf *wf)
{
    sqlite3 *db = wf->db;
    if (!db)
        return tl__wf_dbs_intake(wf);
    sqlite3_stmt *s = stmt(wf, WF_ST_INTAKE, "SELECT seq, wf, data, key, time FROM wf_msg "
                           "WHERE seq > ? ORDER BY seq");
    if (!s)
        return sqlerr(wf, db, "reading posted messages");
    sqlite3_bind_int64(s, 1, wf->cursor);
    int rc = TL_OK, src;
    if (!wf->rowzone)
        wf->rowzone = tl__wf_zone_new(); /* NULL: each row gets its own */
    while (rc == TL_OK && (src = sqlite3_step(s)) == SQLITE_ROW) {
        wf->cursor = sqlite3_column_int64(s, 0);
        int64_t taken = 0; /* after a restore every row is read again: most were taken */
        if (tl__wf_msg_taken(wf->rowzone, sqlite3_column_blob(s, 2),
                             (size_t)sqlite3_column_bytes(s, 2), &taken) == TL_OK && taken)
            continue;
        wf_msg *m = calloc(1, sizeof *m);
        const void *val = NULL;
        if (!m)
            rc = tl__wf_err(wf, TL_ENOMEM, "workflows: out of memory taking in messages");
        else if (tl__wf_unpack_msg(sqlite3_column_blob(s, 2), (size_t)sqlite3_column_bytes(s, 2),
                                   &m->kind, m->topic, &val, &m->len, &m->taken) != TL_OK)
            m->taken = -1; /* unreadable: skipped (tasklet wf show lists it) */
        if (!m)
            break;
        m->val = (void *)val;
        m->seq = wf->cursor;
        snprintf(m->key, sizeof m->key, "%s", (const char *)sqlite3_column_text(s, 3));
        snprintf(m->wf, sizeof m->wf, "%s", (const char *)sqlite3_column_text(s, 1));
        m->posted = sqlite3_column_int64(s, 4);
        char id[TL_WF_ID_MAX + 1];
        snprintf(id, sizeof id, "%s", (const char *)sqlite3_column_text(s, 1));
        if (m->taken) {
            free(m->val);
            free(m);
            continue;
        }
        rc = tl__wf_intake_one(wf, id, m);
    }
    sqlite3_reset(s);
    return rc;
}

int tl__wf_db_rows(tl_wf *wf, int step, const char *id,
                   int (*fn)(void *ud, const char *key, int64_t time, const void *p, size_t n),
                   void *ud)
{
    sqlite3_stmt *s;
    const char *sql = step ? "SELECT key, time, data FROM wf_step WHERE wf = ? ORDER BY time"
                           : "SELECT key, time, data FROM wf_msg WHERE wf = ? ORDER BY seq";
    if (sqlite3_prepare_v2(wf->db, sql, -1, &s, NULL) != SQLITE_OK)
        return sqlerr(wf, wf->db, "reading a workflow's rows");
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = TL_OK, src = SQLITE_DONE;
    while (rc == TL_OK && (src = sqlite3_step(s)) == SQLITE_ROW)
        rc = fn(ud, (const char *)sqlite3_column_text(s, 0), sqlite3_column_int64(s, 1),
                sqlite3_column_blob(s, 2), (size_t)sqlite3_column_bytes(s, 2));
    if (rc == TL_OK && src != SQLITE_DONE)
        rc = sqlerr(wf, wf->db, "reading a workflow's rows");
    sqlite3_finalize(s);
    return rc;
}

size_t tl__wf_db_size(tl_wf *wf, const char *id)
{
    sqlite3_stmt *s;
    int64_t n = 0;
    if (sqlite3_prepare_v2(wf->db, "SELECT (SELECT total(length(data)) + 100 * count(*) FROM "
                           "wf_step WHERE wf = ?1) + (SELECT total(length(data)) + 300 * "
                           "count(*) FROM wf_msg WHERE wf = ?1)", -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
    }
    return n > 0 ? (size_t)n : 0;
}

/* ---- restore: the live workflows' rows ---- */

int tl__wf_resume_wait(tl_wf *wf, wf_rec *r)
{
    if (r->expired && r->wait != W_NONE) /* decided before the stop: the same branch */
        return tl__wf_timeout_out(wf, r, &wf->ready) == TL_OK
                   ? TL_OK : tl__wf_err(wf, TL_ENOMEM, "restore: out of memory");
    if (r->wait == W_STEP && r->deadline && tl__wf_timer_add(wf, r->deadline, r, 0) != TL_OK)
        return tl__wf_err(wf, TL_ENOMEM, "restore: out of memory");
    if (r->wait == W_STEP) {
        wf_out *o = calloc(1, sizeof *o);
        if (!o)
            return tl__wf_err(wf, TL_ENOMEM, "restore: out of memory");
        snprintf(o->key, sizeof o->key, "%s#%lld", r->id, (long long)r->seq);
        int rc = tl__wf_db_step(wf, o->key, o);
        if (rc == TL_OK) { /* recorded, not yet handed over */
            o->rec = r;
            o->gen = r->gen;
            o->kind = W_STEP;
            o->written = 1;
            o->next = wf->ready;
            wf->ready = o;
            return TL_OK;
        }
        tl__wf_out_free(o);
        if (rc != TL_ENOENT)
            return rc;
        if (r->retry_at)
            return tl__wf_step_find(wf, r->what)
                       ? tl__wf_timer_add(wf, r->retry_at, r, 1)
                       : tl__wf_err(wf, TL_ENOFUNC, "restore: workflow %s waits in step %s, "
                                    "which is not registered", r->id, r->what);
        return tl__wf_submit(wf, r); /* in flight at the crash: again, same key */
    }
    if (r->deadline && (r->wait == W_RECV || r->wait == W_JOIN || r->wait == W_SELECT))
        return tl__wf_timer_add(wf, r->deadline, r, 0);
    return TL_OK;
}

/* Tasklets and channels of the restored runtime by id: one pass over
 * each (tl_tasklet_find and tl_chan_find scan, and restore asks for every
 * workflow's pair), then binary search. */
typedef struct idx_ent {
    uint64_t id;
    void *obj;
} idx_ent;
typedef struct idx {
    idx_ent *v;
    size_t n, cap;
} idx;
typedef struct loadix {
    idx t, c;
} loadix;

static void idx_add(idx *x, uint64_t id, void *obj)
{
    if (x->n == x->cap) {
        size_t nc = x->cap ? x->cap * 2 : 256;
        idx_ent *nv = realloc(x->v, nc * sizeof *nv);
        if (!nv)
            return; /* found by the slow path instead */
        x->v = nv;
        x->cap = nc;
    }
    x->v[x->n++] = (idx_ent){id, obj};
}

static int idx_cmp(const void *a, const void *b)
{
    uint64_t x = ((const idx_ent *)a)->id, y = ((const idx_ent *)b)->id;
    return x < y ? -1 : x > y;
}

static void visit_tasklet(void *obj, void *ud) { idx_add(ud, ((tl_tasklet *)obj)->id, obj); }

static void idx_build(tl_runtime *rt, loadix *x)
{
    memset(x, 0, sizeof *x);
    tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, visit_tasklet, &x->t);
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        idx_add(&x->c, ch->id, ch);
    }
    if (x->t.v)
        qsort(x->t.v, x->t.n, sizeof(idx_ent), idx_cmp);
    if (x->c.v)
        qsort(x->c.v, x->c.n, sizeof(idx_ent), idx_cmp);
}

static void *idx_find(const idx *x, uint64_t id)
{
    idx_ent key = {id, NULL};
    idx_ent *e = x->v ? bsearch(&key, x->v, x->n, sizeof key, idx_cmp) : NULL;
    return e ? e->obj : NULL;
}

static tl_tasklet *find_tasklet(tl_runtime *rt, const loadix *x, uint64_t id)
{
    tl_tasklet *t = idx_find(&x->t, id);
    return t ? tl__tasklet_handle(t) : tl_tasklet_find(rt, id);
}

static tl_chan *find_chan(tl_runtime *rt, const loadix *x, uint64_t id)
{
    tl_chan *ch = idx_find(&x->c, id);
    return ch ? tl__chan_handle(ch) : tl_chan_find(rt, id);
}

/* r (decoded from its row) on its restored tasklet t and wake channel ch
 * (handles, retained here), with the row's status, in the hash. */
static int adopt(tl_wf *wf, wf_rec *r, tl_tasklet *t, tl_chan *ch, int status)
{
    r->t = tl_tasklet_retain(t);
    r->wake = tl_chan_retain(ch);
    if (r->wait == W_SLEEP || r->wait > W_SELECT)
        r->wait = W_NONE; /* in TL_SLEEP: the runtime's own timer */
    r->status = status;
    if (tl_tasklet_set_userdata(t, r) != TL_OK || tl__wf_hash_put(wf, r) != TL_OK) {
        tl__wf_rec_free(wf, r);
        return tl__wf_err(wf, TL_ENOMEM, "restore: out of memory");
    }
    return TL_OK;
}

static wf_rec *decode_row(tl_wf *wf, const char *id, const void *p, size_t n, int64_t *tid,
                          int64_t *wid)
{
    wf_rec *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->wf = wf;
    snprintf(r->id, sizeof r->id, "%s", id);
    if (!wf->rowzone)
        wf->rowzone = tl__wf_zone_new(); /* NULL: each row gets its own */
    if (tl__wf_unpack_rec_in(wf->rowzone, p, n, r, tid, wid) != TL_OK)
        *tid = *wid = -1; /* found by no lookup: reported as corrupt */
    return r;
}

static int not_in_checkpoint(tl_wf *wf, wf_rec *r, int64_t tid, int64_t wid)
{
    int rc = tl__wf_err(wf, TL_ECORRUPT, "restore: workflow %s: its tasklet %lld or wake "
                        "channel %lld is not in the checkpoint", r->id, (long long)tid,
                        (long long)wid);
    free(r->result);
    free(r->sarg);
    free(r);
    return rc;
}

static int load_one(tl_wf *wf, const loadix *x, const char *id, int status, const void *p,
                    size_t n)
{
    int64_t tid = 0, wid = 0;
    wf_rec *r = decode_row(wf, id, p, n, &tid, &wid);
    if (!r)
        return tl__wf_err(wf, TL_ENOMEM, "restore: out of memory");
    tl_tasklet *t = tid > 0 ? find_tasklet(wf->rt, x, (uint64_t)tid) : NULL;
    tl_chan *ch = t ? find_chan(wf->rt, x, (uint64_t)wid) : NULL;
    if (!ch)
        return not_in_checkpoint(wf, r, tid, wid);
    int rc = adopt(wf, r, t, ch, status);
    wf->live += rc == TL_OK;
    return rc;
}

/* Workflow id's row read and adopted on t and ch (the tasklet and wake
 * channel its root frame names: lazy.c); not counted in wf->live. */
int tl__wf_db_adopt(tl_wf *wf, const char *id, tl_tasklet *t, tl_chan *ch, wf_rec **out)
{
    void *p = NULL;
    size_t n = 0;
    int st = 0;
    int rc = tl__wf_db_find(wf, id, &p, &n, &st);
    if (rc != TL_OK) {
        free(p);
        return tl__wf_err(wf, rc == TL_ENOENT ? TL_ECORRUPT : rc, "restore: workflow %s: "
                          "its row %s", id, rc == TL_ENOENT ? "is missing" : "cannot be read");
    }
    int64_t tid = 0, wid = 0;
    wf_rec *r = decode_row(wf, id, p, n, &tid, &wid);
    free(p);
    if (!r)
        return tl__wf_err(wf, TL_ENOMEM, "restore: out of memory");
    if (tid != (int64_t)tl_tasklet_id(t) || wid != (int64_t)tl_chan_id(ch))
        return not_in_checkpoint(wf, r, tid, wid);
    rc = adopt(wf, r, t, ch, st);
    *out = rc == TL_OK ? r : NULL;
    return rc;
}

/* r waits for a child that finished (its row is final): hand it over. */
static int join_finished(tl_wf *wf, wf_rec *r)
{
    void *p = NULL;
    size_t n = 0;
    int st = 0;
    int rc = tl__wf_db_find(wf, r->what, &p, &n, &st);
    wf_out *o = rc == TL_OK ? calloc(1, sizeof *o) : NULL;
    if (!o) {
        free(p);
        return tl__wf_err(wf, rc == TL_OK ? TL_ENOMEM : rc, "restore: workflow %s waits "
                          "for %s, which is not in the store", r->id, r->what);
    }
    wf_rec c;
    int64_t a, b;
    memset(&c, 0, sizeof c);
    rc = tl__wf_unpack_rec(p, n, &c, &a, &b);
    free(p);
    o->rec = r;
    o->gen = r->gen;
    o->kind = W_JOIN;
    o->written = 1;
    o->rc = st == TL_WF_DONE ? TL_OK : c.error ? c.error : TL_ECANCELED;
    snprintf(o->errmsg, sizeof o->errmsg, "%.199s", c.errmsg);
    o->res = c.result;
    o->rlen = c.rlen;
    o->next = wf->ready;
    wf->ready = o;
    return rc;
}

/* One live workflow's row (id, status, rec) restored, unless it is lazy
 * (left for later). */
static int load_row(tl_wf *wf, void *ud, const char *id, const char *status, const void *p,
                    size_t n)
{
    if (tl__wf_lazy_has(wf, id))
        return TL_OK;
    return load_one(wf, ud, id, tl__wf_status_parse(status), p, n);
}

static int load_rows(tl_wf *wf, loadix *x)
{
    sqlite3 *db = wf->db;
    sqlite3_stmt *s;
    if (!db) /* PostgreSQL */
        return tl__wf_dbs_live(wf, load_row, x);
    if (sqlite3_prepare_v2(db, "SELECT id, status, rec FROM wf WHERE status NOT IN " FINAL,
                           -1, &s, NULL))
        return sqlerr(wf, db, "reading the workflows");
    int rc = TL_OK;
    while (rc == TL_OK && sqlite3_step(s) == SQLITE_ROW)
        rc = load_row(wf, x, (const char *)sqlite3_column_text(s, 0),
                      (const char *)sqlite3_column_text(s, 1), sqlite3_column_blob(s, 2),
                      (size_t)sqlite3_column_bytes(s, 2));
    sqlite3_finalize(s);
    return rc;
}

/* Every live workflow's row, in one pass over table wf. */
static int load_scan(tl_wf *wf)
{
    loadix x;
    idx_build(wf->rt, &x);
    int rc = load_rows(wf, &x);
    free(x.t.v);
    free(x.c.v);
    return rc;
}

/* The rows of the workflows in v (not lazy), one lookup by id each: when
 * most are lazy, cheaper than the pass over every row. */
static int load_by_id(tl_wf *wf, const wf_lazy *v, size_t n)
{
    int rc = TL_OK;
    for (size_t i = 0; i < n && rc == TL_OK; i++) {
        wf_rec *r;
        rc = tl__wf_db_adopt(wf, v[i].id, v[i].t, v[i].wake, &r);
        wf->live += rc == TL_OK;
    }
    return rc;
}

/* Each restored workflow waiting for a child: the child (waking it if
 * lazy, so the hash may grow: the joiners are listed first) knows its
 * joiner, or it finished and its end is handed over. */
static int link_joins(tl_wf *wf)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < wf->hcap; i++)
        for (wf_rec *r = wf->hash[i]; r; r = r->hnext)
            n += r->wait == W_JOIN && !r->expired;
    wf_rec **v = n ? malloc(n * sizeof *v) : NULL;
    if (n && !v)
        return tl__wf_err(wf, TL_ENOMEM, "restore: out of memory");
    for (size_t i = 0; i < wf->hcap; i++)
        for (wf_rec *r = wf->hash[i]; r; r = r->hnext)
            if (r->wait == W_JOIN && !r->expired)
                v[k++] = r;
    int rc = TL_OK;
    for (size_t i = 0; i < n && rc == TL_OK; i++) {
        wf_rec *c;
        rc = tl__wf_lookup(wf, v[i]->what, &c);
        if (rc == TL_OK && c)
            c->joiner = v[i];
        else if (rc == TL_OK)
            rc = join_finished(wf, v[i]);
        wf->joined = 1;
    }
    free(v);
    return rc;
}

int tl__wf_db_load(tl_wf *wf)
{
    wf_lazy *eager;
    size_t neager;
    int rc = tl__wf_lazy_scan(wf, &eager, &neager);
    if (rc == TL_OK)
        rc = wf->nlazy && neager * 3 < wf->nlazy ? load_by_id(wf, eager, neager)
                                                 : load_scan(wf);
    free(eager);
    for (size_t i = 0; rc == TL_OK && i < wf->hcap; i++)
        for (wf_rec *r = wf->hash[i]; r && rc == TL_OK; r = r->hnext)
            rc = tl__wf_resume_wait(wf, r);
    return rc == TL_OK ? link_joins(wf) : rc;
}
