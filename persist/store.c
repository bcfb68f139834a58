/*
 * store.c -- the SQLite store: checkpoints in one transaction each,
 * incremental, owned by one running process at a time.
 *
 * State machine of a store handle (function behind each transition):
 *
 *   tl_store_open --> OPEN --tl_store_attach--> OWNER (owner row = us)
 *                      |                          |  tl_store_checkpoint:
 *                      |                          |  BEGIN IMMEDIATE, insert
 *                      |                          |  dirty chunks + head,
 *                      |                          |  COMMIT (or ROLLBACK and
 *                      |                          |  keep the dirty flags)
 *                      |                          |  tl_store_restore: load
 *                      |                          |  the latest checkpoint
 *                      `------ tl_store_close <---'  (owner row deleted)
 *
 * A crash at any instant leaves the previous checkpoint whole: every
 * checkpoint is one SQLite transaction in WAL mode.  With TL_STORE_NOSYNC
 * the WAL is not fsynced at commit (synchronous=NORMAL): a process crash
 * loses nothing committed, a power loss may lose the last checkpoints.
 */
#include "persist.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define APP_ID 1414288212 /* 0x544C5354 "TLST" */
#define SCHEMA_VERSION 1
#define POLICY_POLL_STEPS 256

struct tl_store {
    sqlite3 *db;
    int flags;
    tl_runtime *rt;
    int owner;          /* we hold the owner row */
    int full_next;      /* next checkpoint writes every chunk */
    int64_t last;       /* latest checkpoint id */
    int64_t last_time;  /* when we last checkpointed (ns) */
    tl_policy policy;
    sqlite3_stmt *ins_chunk;
    int (*extra)(void *ud, void *db); /* the node's tables, per checkpoint */
    void *extra_ud;
    int touched;        /* next checkpoint writes even if nothing changed */
    struct mail *mail;  /* mailbox rows to insert with the next checkpoint */
    char (*unmail)[40]; /* mailbox rows to delete with it */
    size_t nunmail;
    int errcode;
    char errmsg[512];
};

/* Tables for moving tasklets (added in 0.2, created on open if missing):
 * the mailbox (handover through the store), and a node's outbox (sent,
 * not yet acknowledged) and inbox (transfer ids already taken). */
#define MIGRATION_SQL                                                                   \
    "CREATE TABLE IF NOT EXISTS mailbox(xid TEXT PRIMARY KEY, to_node TEXT NOT NULL,"  \
    " from_node TEXT NOT NULL, time INTEGER NOT NULL, data BLOB NOT NULL);"            \
    "CREATE TABLE IF NOT EXISTS outbox(xid TEXT PRIMARY KEY, peer TEXT NOT NULL,"      \
    " data BLOB NOT NULL);"                                                            \
    "CREATE TABLE IF NOT EXISTS inbox(xid TEXT PRIMARY KEY, peer TEXT NOT NULL,"       \
    " time INTEGER NOT NULL);"

struct mail {
    struct mail *next;
    char xid[40], to[64];
    void *data;
    size_t len;
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value NOT NULL);"
    "CREATE TABLE IF NOT EXISTS owner(id INTEGER PRIMARY KEY CHECK (id = 1),"
    " pid INTEGER NOT NULL, host TEXT NOT NULL, since INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS checkpoints(id INTEGER PRIMARY KEY, time INTEGER NOT NULL,"
    " tasklets INTEGER NOT NULL, channels INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " head BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS chunks(kind INTEGER NOT NULL, key INTEGER NOT NULL,"
    " ckpt INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (kind, key, ckpt)) WITHOUT ROWID;"
    MIGRATION_SQL;

/* ---- errors ---- */

static int st_err(tl_store *st, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int st_err(tl_store *st, int code, const char *fmt, ...)
{
    va_list ap;
    st->errcode = code;
    va_start(ap, fmt);
    vsnprintf(st->errmsg, sizeof st->errmsg, fmt, ap);
    va_end(ap);
    if (st->rt) {
        st->rt->errcode = code;
        snprintf(st->rt->errmsg, sizeof st->rt->errmsg, "%s", st->errmsg);
    }
    return code;
}

/* Maps a SQLite failure to our codes: I/O trouble (full, read-only) is
 * TL_EIO, the rest TL_ESTORE. */
static int sql_err(tl_store *st, int rc, const char *what)
{
    int code = TL_ESTORE;
    int prim = rc & 0xff;
    if (prim == SQLITE_FULL || prim == SQLITE_IOERR || prim == SQLITE_READONLY ||
        prim == SQLITE_CANTOPEN)
        code = TL_EIO;
    else if (prim == SQLITE_NOTADB)
        code = TL_EFORMAT;
    return st_err(st, code, "%s: %s (SQLite: %s)", what, sqlite3_errstr(rc),
                  st->db ? sqlite3_errmsg(st->db) : "no database");
}

int tl_store_errcode(const tl_store *st) { return st ? st->errcode : TL_EMISUSE; }

const char *tl_store_errmsg(const tl_store *st)
{
    if (!st)
        return "no store";
    return st->errcode == TL_OK ? "no error" : st->errmsg;
}

int64_t tl_store_last_checkpoint(const tl_store *st) { return st ? st->last : 0; }

/* ---- opening ---- */

static int pragma_int(tl_store *st, const char *sql, int64_t *out)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    return rc;
}

static int exec(tl_store *st, const char *sql, const char *what)
{
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? TL_OK : sql_err(st, rc, what);
}

static int init_schema(tl_store *st)
{
    char sql[256];
    int rc = exec(st, "BEGIN IMMEDIATE", "creating the store");
    if (rc == TL_OK)
        rc = exec(st, schema_sql, "creating the store");
    snprintf(sql, sizeof sql,
             "PRAGMA application_id=%d; PRAGMA user_version=%d;"
             "INSERT OR REPLACE INTO meta VALUES('format', %d), ('lib', '%s'), ('created', %lld);",
             APP_ID, SCHEMA_VERSION, TL_FORMAT_VERSION, TL_VERSION_STRING,
             (long long)time(NULL) * 1000000000LL);
    if (rc == TL_OK)
        rc = exec(st, sql, "creating the store");
    if (rc == TL_OK)
        return exec(st, "COMMIT", "creating the store");
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int check_identity(tl_store *st, const char *path)
{
    int64_t app = 0, ver = 0, tables = 0;
    int rc = pragma_int(st, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = pragma_int(st, "PRAGMA user_version", &ver);
    if (rc == SQLITE_OK)
        rc = pragma_int(st, "SELECT count(*) FROM sqlite_master", &tables);
    if (rc != SQLITE_OK)
        return sql_err(st, rc, path);
    if (app == 0 && ver == 0 && tables == 0) {
        if (st->flags & TL_STORE_READONLY)
            return st_err(st, TL_ENOENT, "%s: no libtasklet store here (empty file)", path);
        return init_schema(st);
    }
    if (app == APP_ID && ver <= SCHEMA_VERSION && !(st->flags & TL_STORE_READONLY) &&
        sqlite3_exec(st->db, MIGRATION_SQL, NULL, NULL, NULL) != SQLITE_OK)
        return sql_err(st, sqlite3_errcode(st->db), path);
    if (app != APP_ID)
        return st_err(st, TL_EFORMAT, "%s is a SQLite file of another application "
                      "(application_id %lld), not a libtasklet store", path, (long long)app);
    if (ver > SCHEMA_VERSION)
        return st_err(st, TL_EFORMAT, "%s has store version %lld, newer than this library "
                      "reads (%d); upgrade libtasklet", path, (long long)ver, SCHEMA_VERSION);
    return TL_OK;
}

static int configure(tl_store *st)
{
    sqlite3_busy_timeout(st->db, 5000);
    if (st->flags & TL_STORE_READONLY)
        return TL_OK;
    int rc = exec(st, "PRAGMA journal_mode=WAL", "enabling WAL");
    if (rc == TL_OK)
        rc = exec(st, st->flags & TL_STORE_NOSYNC ? "PRAGMA synchronous=NORMAL"
                                                  : "PRAGMA synchronous=FULL", "setting durability");
    return rc;
}

static void load_last(tl_store *st)
{
    int64_t last = 0;
    if (pragma_int(st, "SELECT coalesce(max(id), 0) FROM checkpoints", &last) == SQLITE_OK)
        st->last = last;
}

int tl_store_open(const char *path, int flags, tl_store **out)
{
    if (!out)
        return TL_EINVAL;
    tl_store *st = calloc(1, sizeof *st);
    *out = st;
    if (!st)
        return TL_ENOMEM;
    st->flags = flags;
    st->full_next = 1;
    if (!path)
        return st_err(st, TL_EINVAL, "tl_store_open: no path");
    int oflags = flags & TL_STORE_READONLY ? SQLITE_OPEN_READONLY
                                           : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(path, &st->db, oflags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return sql_err(st, rc, path);
    rc = configure(st);
    if (rc == TL_OK)
        rc = check_identity(st, path);
    if (rc == TL_OK && !(flags & TL_STORE_READONLY))
        rc = sqlite3_prepare_v2(st->db, "INSERT INTO chunks(kind, key, ckpt, data) VALUES(?,?,?,?)",
                                -1, &st->ins_chunk, NULL) == SQLITE_OK
                 ? TL_OK : sql_err(st, sqlite3_errcode(st->db), path);
    if (rc == TL_OK)
        load_last(st);
    return rc;
}

/* ---- ownership ---- */

static void hostname(char *buf, size_t n)
{
    if (gethostname(buf, n) != 0)
        snprintf(buf, n, "localhost");
    buf[n - 1] = '\0';
}

/* Whether pid runs: it exists and is not a zombie (a killed owner its
 * parent has not reaped yet is dead for our purpose). */
static bool pid_alive(int64_t pid)
{
    char path[64], buf[256];
    if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno != EPERM))
        return false;
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return true; /* no /proc: trust kill() */
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *end = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return !(end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X'));
}

static int claim_owner(tl_store *st)
{
    char host[256];
    sqlite3_stmt *s = NULL;
    int rc = exec(st, "BEGIN IMMEDIATE", "claiming the store");
    hostname(host, sizeof host);
    if (rc != TL_OK)
        return rc;
    if (sqlite3_prepare_v2(st->db, "SELECT pid, host, since FROM owner WHERE id = 1", -1, &s, NULL) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        int64_t pid = sqlite3_column_int64(s, 0);
        const char *ohost = (const char *)sqlite3_column_text(s, 1);
        bool same_host = ohost && strcmp(ohost, host) == 0;
        if (pid != getpid() && (!same_host || pid_alive(pid))) {
            rc = st_err(st, TL_ELOCKED, "the store is owned by pid %lld on host %s; stop that "
                        "process first (a dead owner on this host is taken over)",
                        (long long)pid, ohost ? ohost : "?");
        }
    }
    sqlite3_finalize(s);
    if (rc == TL_OK) {
        char sql[512];
        char *q = sqlite3_mprintf("%q", host);
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO owner VALUES(1, %lld, '%s', %lld)",
                 (long long)getpid(), q ? q : "?", (long long)time(NULL));
        sqlite3_free(q);
        rc = exec(st, sql, "claiming the store");
    }
    if (rc == TL_OK)
        rc = exec(st, "COMMIT", "claiming the store");
    if (rc != TL_OK)
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int tl_store_attach(tl_store *st, tl_runtime *rt)
{
    if (!st || !st->db || !rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (st->flags & TL_STORE_READONLY)
        return st_err(st, TL_EINVAL, "tl_store_attach: the store was opened read-only");
    if (st->rt || rt->track_gone)
        return st_err(st, TL_EINVAL, "tl_store_attach: one runtime per store, one store per runtime");
    int rc = claim_owner(st);
    if (rc != TL_OK)
        return rc;
    st->owner = 1;
    st->rt = rt;
    rt->store = st;
    rt->track_gone = 1;
    tl__dmap_reserve(rt, rt->next_tid);
    rt->dmap_lost = 1;
    st->full_next = 1;
    return TL_OK;
}

/* ---- checkpoint ---- */

static int put_chunk(tl_store *st, int kind, size_t key, int64_t ckpt, const tl__buf *rec)
{
    sqlite3_stmt *s = st->ins_chunk;
    sqlite3_reset(s);
    sqlite3_bind_int(s, 1, kind);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)key);
    sqlite3_bind_int64(s, 3, ckpt);
    sqlite3_bind_blob(s, 4, rec->p, (int)rec->len, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? TL_OK : sql_err(st, rc, "writing a chunk");
}

static int put_chunk(tl_store *st, int kind, size_t key, int64_t ckpt, const tl__buf *rec);

/* In a full checkpoint, chunks the store still has but the runtime does
 * not must be written as tombstones too: those in the runtime's id range
 * are marked dirty (and so written, empty), those beyond it written here. */
static int mark_stored_keys(tl_store *st, tl__index *tix, tl__index *cix, int64_t ckpt)
{
    sqlite3_stmt *s;
    uint64_t *beyond = NULL; /* (kind << 62) | key */
    size_t n = 0, cap = 0;
    int out = TL_OK, rc;
    if (sqlite3_prepare_v2(st->db, "SELECT DISTINCT kind, key FROM chunks", -1, &s, NULL) != SQLITE_OK)
        return sql_err(st, sqlite3_errcode(st->db), "listing chunks");
    while (out == TL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        int kind = sqlite3_column_int(s, 0);
        uint64_t key = (uint64_t)sqlite3_column_int64(s, 1);
        tl__index *ix = kind == TL__KIND_TASKLETS ? tix : cix;
        size_t at = tl__index_find(ix, key);
        if (at != SIZE_MAX) {
            ix->dirty[at] = 1;
            continue;
        }
        if (n == cap) {
            uint64_t *nb = realloc(beyond, (cap = cap ? 2 * cap : 16) * sizeof *nb);
            if (!nb)
                out = st_err(st, TL_ENOMEM, "checkpoint: out of memory");
            else
                beyond = nb;
        }
        if (out == TL_OK)
            beyond[n++] = ((uint64_t)kind << 62) | key;
    }
    sqlite3_finalize(s);
    if (out == TL_OK && rc != SQLITE_DONE)
        out = sql_err(st, rc, "listing chunks");
    tl__buf tomb;
    tl__buf_init(&tomb, st->rt);
    if (out == TL_OK && n)
        out = tl__enc_tombstone(st->rt, &tomb);
    for (size_t i = 0; i < n && out == TL_OK; i++)
        out = put_chunk(st, (int)(beyond[i] >> 62), (size_t)(beyond[i] & ((1ULL << 62) - 1)),
                        ckpt, &tomb);
    tl__buf_free(&tomb);
    free(beyond);
    return out;
}

static int write_kind(tl_store *st, int kind, const tl__index *ix, int64_t ckpt, int64_t *bytes)
{
    tl__buf rec;
    int rc = TL_OK;
    tl__buf_init(&rec, st->rt);
    for (size_t k = 0; k < ix->nkeys && rc == TL_OK; k++) {
        if (!ix->dirty[k])
            continue;
        rec.len = 0;
        rc = tl__enc_chunk(st->rt, kind, ix, k, &rec);
        if (rc == TL_OK)
            rc = put_chunk(st, kind, (size_t)ix->keys[k], ckpt, &rec);
        *bytes += (int64_t)rec.len;
    }
    tl__buf_free(&rec);
    return rc;
}

static bool any_dirty(const tl__index *ix)
{
    for (size_t k = 0; k < ix->nkeys; k++)
        if (ix->dirty[k])
            return true;
    return false;
}

static int put_head(tl_store *st, int64_t ckpt, int64_t now, const tl__index *tix,
                    const tl__index *cix, int64_t bytes)
{
    tl__buf rec;
    sqlite3_stmt *s;
    tl__buf_init(&rec, st->rt);
    int rc = tl__enc_head(st->rt, now, tix, cix, &rec);
    if (rc != TL_OK)
        return rc;
    if (sqlite3_prepare_v2(st->db, "INSERT INTO checkpoints VALUES(?,?,?,?,?,?)", -1, &s, NULL) !=
        SQLITE_OK) {
        tl__buf_free(&rec);
        return sql_err(st, sqlite3_errcode(st->db), "writing a checkpoint");
    }
    sqlite3_bind_int64(s, 1, ckpt);
    sqlite3_bind_int64(s, 2, now);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)tix->total);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)cix->total);
    sqlite3_bind_int64(s, 5, bytes + (int64_t)rec.len);
    sqlite3_bind_blob(s, 6, rec.p, (int)rec.len, SQLITE_STATIC);
    int src = sqlite3_step(s);
    sqlite3_finalize(s);
    tl__buf_free(&rec);
    return src == SQLITE_DONE ? TL_OK : sql_err(st, src, "writing a checkpoint");
}

/* The mailbox rows queued by tl_store_export and tl_store_import. */
static int write_mail(tl_store *st, int64_t now)
{
    sqlite3_stmt *s = NULL;
    int rc = SQLITE_OK;
    if (st->mail)
        rc = sqlite3_prepare_v2(st->db, "INSERT INTO mailbox VALUES(?,?,?,?,?)", -1, &s, NULL);
    for (struct mail *m = st->mail; m && rc == SQLITE_OK; m = m->next) {
        sqlite3_bind_text(s, 1, m->xid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, m->to, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, st->rt->node, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, now);
        sqlite3_bind_blob(s, 5, m->data, (int)m->len, SQLITE_STATIC);
        rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(st->db);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    s = NULL;
    if (rc == SQLITE_OK && st->nunmail)
        rc = sqlite3_prepare_v2(st->db, "DELETE FROM mailbox WHERE xid = ?", -1, &s, NULL);
    for (size_t i = 0; i < st->nunmail && rc == SQLITE_OK; i++) {
        sqlite3_bind_text(s, 1, st->unmail[i], -1, SQLITE_STATIC);
        rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(st->db);
        sqlite3_reset(s);
        if (rc == SQLITE_OK && sqlite3_changes(st->db) != 1) {
            sqlite3_finalize(s);
            return st_err(st, TL_EBUSY, "mailbox row %s was taken by another process meanwhile",
                          st->unmail[i]);
        }
    }
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? TL_OK : sql_err(st, rc, "writing the mailbox");
}

static int write_checkpoint(tl_store *st, tl__index *tix, tl__index *cix, int64_t ckpt)
{
    int64_t bytes = 0, now = tl_now(st->rt);
    int rc = exec(st, "BEGIN IMMEDIATE", "starting a checkpoint");
    if (rc != TL_OK)
        return rc;
    if (st->full_next)
        rc = mark_stored_keys(st, tix, cix, ckpt);
    if (rc == TL_OK)
        rc = write_kind(st, TL__KIND_TASKLETS, tix, ckpt, &bytes);
    if (rc == TL_OK)
        rc = write_kind(st, TL__KIND_CHANS, cix, ckpt, &bytes);
    if (rc == TL_OK)
        rc = put_head(st, ckpt, now, tix, cix, bytes);
    if (rc == TL_OK)
        rc = write_mail(st, now);
    if (rc == TL_OK && st->extra && st->extra(st->extra_ud, st->db) != TL_OK)
        rc = st->errcode ? st->errcode : st_err(st, TL_ESTORE, "writing the node's tables");
    if (rc == TL_OK) {
        int src = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
        rc = src == SQLITE_OK ? TL_OK : sql_err(st, src, "committing a checkpoint");
    }
    if (rc != TL_OK) {
        char keep[sizeof st->errmsg];
        memcpy(keep, st->errmsg, sizeof keep);
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        memcpy(st->errmsg, keep, sizeof keep);
    }
    st->last_time = now;
    return rc;
}

int tl_store_checkpoint(tl_store *st)
{
    tl__index tix, cix;
    if (!st || !st->db)
        return TL_EMISUSE;
    if (!st->rt)
        return st_err(st, TL_EINVAL, "tl_store_checkpoint: attach a runtime first");
    if (st->rt->current)
        return st_err(st, TL_EBUSY, "tl_store_checkpoint: called from inside a tasklet; "
                      "checkpoints happen between scheduler steps");
    int rc = tl__index_build(st->rt, TL__KIND_TASKLETS, st->full_next, &tix);
    if (rc != TL_OK)
        return st_err(st, rc, "%s", st->rt->errmsg);
    rc = tl__index_build(st->rt, TL__KIND_CHANS, st->full_next, &cix);
    if (rc != TL_OK) {
        tl__index_free(st->rt, &tix);
        return st_err(st, rc, "%s", st->rt->errmsg);
    }
    if (st->full_next || st->touched || st->mail || st->nunmail || any_dirty(&tix) ||
        any_dirty(&cix)) {
        rc = write_checkpoint(st, &tix, &cix, st->last + 1);
        if (rc == TL_OK) {
            st->last++;
            st->full_next = 0;
            st->touched = 0;
            tl__clear_dirty(st->rt);
        } else if (st->errcode != rc) {
            st_err(st, rc, "checkpoint: %s", st->rt->errmsg);
        }
    }
    tl__index_free(st->rt, &tix);
    tl__index_free(st->rt, &cix);
    return rc;
}

/* ---- restore ---- */

typedef struct raw_list {
    tl__raw *raws;
    size_t n, cap;
} raw_list;

static int raw_push(tl_store *st, raw_list *l, int kind, uint64_t key, const void *p, int n)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        tl__raw *r = realloc(l->raws, ncap * sizeof *r);
        if (!r)
            return st_err(st, TL_ENOMEM, "restore: out of memory");
        l->raws = r;
        l->cap = ncap;
    }
    void *copy = malloc(n > 0 ? (size_t)n : 1);
    if (!copy)
        return st_err(st, TL_ENOMEM, "restore: out of memory");
    if (n > 0)
        memcpy(copy, p, (size_t)n);
    l->raws[l->n++] = (tl__raw){kind, key, copy, (size_t)(n > 0 ? n : 0)};
    return TL_OK;
}

static void raw_free(raw_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free((void *)l->raws[i].p);
    free(l->raws);
}

static int read_chunks(tl_store *st, int64_t ckpt, raw_list *l)
{
    sqlite3_stmt *s;
    /* the newest row per chunk at or below ckpt, found on the primary key
     * (kind, key, ckpt) without reading the superseded rows' blobs */
    int rc = sqlite3_prepare_v2(st->db,
        "SELECT c.kind, c.key, c.data FROM (SELECT kind, key, max(ckpt) AS m FROM chunks"
        " WHERE ckpt <= ?1 GROUP BY kind, key) l JOIN chunks c"
        " ON c.kind = l.kind AND c.key = l.key AND c.ckpt = l.m ORDER BY c.kind, c.key",
        -1, &s, NULL);
    if (rc != SQLITE_OK)
        return sql_err(st, rc, "reading chunks");
    sqlite3_bind_int64(s, 1, ckpt);
    int out = TL_OK;
    while (out == TL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        out = raw_push(st, l, sqlite3_column_int(s, 0), (uint64_t)sqlite3_column_int64(s, 1),
                       sqlite3_column_blob(s, 2), sqlite3_column_bytes(s, 2));
    sqlite3_finalize(s);
    if (out == TL_OK && rc != SQLITE_DONE)
        out = sql_err(st, rc, "reading chunks");
    return out;
}

static int read_head(tl_store *st, int64_t *ckpt, raw_list *head)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, "SELECT id, head FROM checkpoints ORDER BY id DESC LIMIT 1",
                                -1, &s, NULL);
    if (rc != SQLITE_OK)
        return sql_err(st, rc, "reading checkpoints");
    rc = sqlite3_step(s);
    int out;
    if (rc == SQLITE_ROW) {
        *ckpt = sqlite3_column_int64(s, 0);
        out = raw_push(st, head, 0, 0, sqlite3_column_blob(s, 1), sqlite3_column_bytes(s, 1));
    } else {
        out = rc == SQLITE_DONE ? st_err(st, TL_ENOENT, "the store has no checkpoint yet")
                                : sql_err(st, rc, "reading checkpoints");
    }
    sqlite3_finalize(s);
    return out;
}

int tl_store_restore(tl_store *st)
{
    raw_list head = {0}, chunks = {0};
    int64_t ckpt = 0;
    char where[64];
    if (!st || !st->db)
        return TL_EMISUSE;
    if (!st->rt)
        return st_err(st, TL_EINVAL, "tl_store_restore: attach a runtime first");
    int rc = exec(st, "BEGIN", "restoring"); /* one consistent view */
    if (rc == TL_OK)
        rc = read_head(st, &ckpt, &head);
    if (rc == TL_OK)
        rc = read_chunks(st, ckpt, &chunks);
    sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    if (rc == TL_OK) {
        snprintf(where, sizeof where, "store checkpoint %lld", (long long)ckpt);
        rc = tl__load(st->rt, &head.raws[0], chunks.raws, chunks.n, where);
        if (rc != TL_OK)
            st_err(st, rc, "%s", st->rt->errmsg);
    }
    if (rc == TL_OK) {
        st->last = ckpt;
        st->full_next = 0; /* the runtime now equals checkpoint ckpt */
    }
    raw_free(&head);
    raw_free(&chunks);
    return rc;
}

/* ---- policy ---- */

static int policy_hook(void *ud, int idle)
{
    tl_store *st = ud;
    const tl_policy *p = &st->policy;
    bool due = (!idle && p->every_steps) || (idle && p->on_idle);
    if (!due && p->every_ms)
        due = tl_now(st->rt) - st->last_time >= (int64_t)p->every_ms * 1000000;
    return due ? tl_store_checkpoint(st) : TL_OK;
}

int tl_store_set_policy(tl_store *st, const tl_policy *p)
{
    if (!st || !p)
        return TL_EMISUSE;
    if (!st->rt)
        return st_err(st, TL_EINVAL, "tl_store_set_policy: attach a runtime first");
    st->policy = *p;
    st->last_time = tl_now(st->rt);
    tl_runtime *rt = st->rt;
    bool any = p->every_steps || p->every_ms || p->on_idle;
    rt->policy_hook = any ? policy_hook : NULL;
    rt->policy_ud = st;
    rt->policy_every = p->every_steps ? p->every_steps : p->every_ms ? POLICY_POLL_STEPS : 0;
    rt->policy_count = 0;
    return TL_OK;
}

/* ---- handover through the mailbox ---- */

static void mail_clear(tl_store *st)
{
    while (st->mail) {
        struct mail *m = st->mail;
        st->mail = m->next;
        tl_snapshot_free(st->rt, m->data, m->len);
        free(m);
    }
    free(st->unmail);
    st->unmail = NULL;
    st->nunmail = 0;
}

/* A fresh transfer id: 32 hex digits from the kernel's random source. */
int tl__new_xid(char out[40])
{
    unsigned char r[16];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(r, 1, sizeof r, f) : 0;
    if (f)
        fclose(f);
    if (got != sizeof r)
        return TL_EIO;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    return TL_OK;
}

int tl_store_export(tl_store *st, tl_tasklet *t, const char *to)
{
    if (!st || !st->db || !t || t->magic != TL__MAGIC_TASK)
        return TL_EMISUSE;
    tl_runtime *rt = t->rt;
    if (st->rt != rt)
        return st_err(st, TL_EINVAL, "tl_store_export: the tasklet's runtime is not the one "
                      "attached to this store");
    if (!to || !*to || strlen(to) >= 64)
        return st_err(st, TL_EINVAL, "tl_store_export: the node name must be 1 to 63 bytes");
    struct mail *m = calloc(1, sizeof *m);
    if (!m)
        return st_err(st, TL_ENOMEM, "tl_store_export: out of memory");
    int rc = tl__new_xid(m->xid);
    if (rc != TL_OK) {
        free(m);
        return st_err(st, rc, "tl_store_export: no random source for a transfer id");
    }
    snprintf(m->to, sizeof m->to, "%s", to);
    rc = tl__snapshot_save_moving(t, &m->data, &m->len);
    if (rc != TL_OK) {
        free(m);
        return st_err(st, rc, "tl_store_export: %s", rt->errmsg);
    }
    char msg[128];
    snprintf(msg, sizeof msg, "moved to node '%s' through the store", to);
    tl__tasklet_depart(t, TL_EMOVED, msg);
    st->mail = m;
    rc = tl_store_checkpoint(st);
    st->mail = NULL;
    if (rc != TL_OK) {
        /* nothing was written: the tasklet comes back, under a new id */
        tl_tasklet *back;
        char keep[sizeof st->errmsg];
        memcpy(keep, st->errmsg, sizeof keep);
        if (tl__snapshot_import(rt, m->data, m->len, &back) != TL_OK)
            snprintf(keep, sizeof keep, "%.200s; and the tasklet could not be put back: %.200s",
                     st->errmsg, rt->errmsg);
        memcpy(st->errmsg, keep, sizeof keep);
        st->errcode = rc;
    }
    tl_snapshot_free(rt, m->data, m->len);
    free(m);
    return rc;
}

int tl_store_import(tl_store *st, tl_runtime *rt, size_t *count)
{
    sqlite3_stmt *s = NULL;
    size_t n = 0;
    if (count)
        *count = 0;
    if (!st || !st->db || !rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (st->flags & TL_STORE_READONLY)
        return st_err(st, TL_EINVAL, "tl_store_import: the store was opened read-only");
    if (rt->store && rt->store != st)
        return st_err(st, TL_EINVAL, "tl_store_import: the runtime checkpoints into another "
                      "store; the handover would not be one transaction");
    if (!rt->node[0])
        return st_err(st, TL_EINVAL, "tl_store_import: the runtime has no node id");
    int attached = st->rt == rt;
    int rc = exec(st, attached ? "BEGIN" : "BEGIN IMMEDIATE", "importing");
    if (rc != TL_OK)
        return rc;
    rc = sqlite3_prepare_v2(st->db, "SELECT xid, data FROM mailbox WHERE to_node = ? "
                            "ORDER BY time, xid", -1, &s, NULL) == SQLITE_OK
             ? TL_OK : sql_err(st, sqlite3_errcode(st->db), "reading the mailbox");
    tl_tasklet **got = NULL;
    size_t cap = 0;
    if (rc == TL_OK)
        sqlite3_bind_text(s, 1, rt->node, -1, SQLITE_STATIC);
    while (rc == TL_OK) {
        int src = sqlite3_step(s);
        if (src == SQLITE_DONE)
            break;
        if (src != SQLITE_ROW) {
            rc = sql_err(st, src, "reading the mailbox");
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            tl_tasklet **ng = realloc(got, ncap * sizeof *ng);
            char (*nu)[40] = realloc(st->unmail, ncap * sizeof *nu);
            if (nu)
                st->unmail = nu;
            if (!ng || !nu) {
                free(ng ? ng : got);
                got = NULL;
                rc = st_err(st, TL_ENOMEM, "tl_store_import: out of memory");
                break;
            }
            got = ng;
            cap = ncap;
        }
        snprintf(st->unmail[n], 40, "%s", (const char *)sqlite3_column_text(s, 0));
        rc = tl__snapshot_import(rt, sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1),
                                 &got[n]);
        if (rc != TL_OK)
            st_err(st, rc, "tl_store_import: mailbox row %s: %s", st->unmail[n], rt->errmsg);
        else
            n++;
    }
    sqlite3_finalize(s);
    st->nunmail = n;
    if (rc == TL_OK && n && attached) {
        sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL); /* the read */
        rc = tl_store_checkpoint(st); /* the deletes ride on it */
    } else if (rc == TL_OK && n) {
        rc = write_mail(st, 0);
        if (rc == TL_OK && sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            rc = sql_err(st, sqlite3_errcode(st->db), "committing the import");
    }
    if (rc != TL_OK || !n || !attached)
        sqlite3_exec(st->db, attached ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
    if (rc != TL_OK) {
        /* all or nothing: what came in goes again, silently */
        for (size_t i = 0; i < n; i++)
            tl__tasklet_depart(got[i], TL_EMOVED, "import undone");
    } else if (count) {
        *count = n;
    }
    free(got);
    free(st->unmail);
    st->unmail = NULL;
    st->nunmail = 0;
    return rc;
}

void tl__store_set_extra(tl_store *st, int (*fn)(void *ud, void *db), void *ud)
{
    st->extra = fn;
    st->extra_ud = ud;
}

void tl__store_touch(tl_store *st) { st->touched = 1; }

/* ---- closing ---- */

int tl_store_close(tl_store *st)
{
    int rc = TL_OK;
    if (!st)
        return TL_OK;
    if (st->rt && st->policy.on_close && !st->rt->running)
        rc = tl_store_checkpoint(st);
    if (st->owner)
        sqlite3_exec(st->db, "DELETE FROM owner WHERE id = 1", NULL, NULL, NULL);
    mail_clear(st);
    if (st->extra)
        st->extra(st->extra_ud, NULL); /* the node forgets this store */
    if (st->rt) {
        st->rt->store = NULL;
        st->rt->track_gone = 0;
        st->rt->policy_hook = NULL;
        st->rt->policy_every = 0;
    }
    sqlite3_finalize(st->ins_chunk);
    sqlite3_close(st->db);
    free(st);
    return rc;
}

void *tl_store_sqlite(tl_store *st) { return st ? st->db : NULL; }
