/*
 * pg.c -- the tool on a postgresql:// location (FORMAT.md sections 7.3
 * and 11), with libpq alone (the tool still does not link libtasklet).
 *
 * Reading commands (ls, show, dump, verify, checkpoints, wf ls, wf show,
 * result) read a copy: cli_pg_copy takes every row of the store's tables
 * in one REPEATABLE READ, READ ONLY transaction (one consistent snapshot,
 * never blocking the owner) and writes them into a SQLite file of the
 * SQLite store's schema -- the same tables, columns and record bytes --
 * which the SQLite code then reads as it reads any store.  `backup URL
 * OUT` keeps that copy.  Posting (send, send-chan, cancel) is one
 * transaction on the server: the target's row is checked, the wf_msg row
 * inserted and announced (NOTIFY libtasklet) to the owner's listener;
 * `result --wait` LISTENs before it reads, and reads again when the owner
 * announces a finished workflow (at least once a second).  Rewriting
 * (prune, rollback: cli_pg_rewrite) is one REPEATABLE READ transaction
 * that locks the epoch row, refuses a live owner, copies the store, runs
 * the SQLite command on the copy (triggers there note what it deletes),
 * deletes the same rows on the server and increments the epoch (an owner
 * paused before is fenced), then commits and prints the command's report.
 *
 * Invariants: table and column names put into SQL come from the server's
 * catalog and are checked to be [a-z_0-9]+ first; every value is a
 * parameter.  Messages never print the URL (it may hold a password).
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool cli_is_url(const char *path)
{
    return path && (!strncmp(path, "postgresql://", 13) || !strncmp(path, "postgres://", 11));
}

#ifdef CLI_HAVE_PG
#include <libpq-fe.h>
#include <poll.h>
#include <time.h>

static void one_line(char *s)
{
    for (char *c = s; *c; c++)
        if (*c == '\n')
            *c = c[1] ? ' ' : '\0';
}

static PGconn *connect_url(const char *url)
{
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"10", "tasklet", url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", c ? PQerrorMessage(c) : "out of memory");
        one_line(msg);
        cli_complain("cannot connect to PostgreSQL at %s:%s/%s: %s", c && PQhost(c) ? PQhost(c) : "?",
                     c && PQport(c) ? PQport(c) : "?", c && PQdb(c) ? PQdb(c) : "?", msg);
        PQfinish(c);
        return NULL;
    }
    /* a tool stopped inside a post holds wf_msg's lock at most this long */
    PQclear(PQexec(c, "SET client_min_messages = warning; "
                   "SET idle_in_transaction_session_timeout = 30000"));
    return c;
}

/* Runs sql (params: text); the result on success, NULL (complained). */
static PGresult *run(PGconn *c, const char *sql, int n, const char *const *vals,
                     const char *what)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 1);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
        return r;
    char msg[400];
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
    one_line(msg);
    if (state && !strcmp(state, "42P01")) /* undefined table */
        cli_complain("%s: not a workflow store (%s)", what, msg);
    else
        cli_complain("%s: %s", what, msg);
    PQclear(r);
    return NULL;
}

/* The store's identity (meta, FORMAT.md 7.3): CLI_EXIT_OK or USAGE. */
static int identify(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT (SELECT value FROM meta WHERE key = 'application'), "
                         "(SELECT value FROM meta WHERE key = 'schema'), current_schema()");
    int rc = CLI_EXIT_USAGE;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        cli_complain("not a libtasklet store (the schema has no table meta)");
    else if (PQgetisnull(r, 0, 0) || strcmp(PQgetvalue(r, 0, 0), "libtasklet"))
        cli_complain("schema %s holds no libtasklet store", PQgetvalue(r, 0, 2));
    else if (atoi(PQgetvalue(r, 0, 1)) > CLI_STORE_VERSION)
        cli_complain("store schema version %s is newer than this tool reads (%d)",
                     PQgetvalue(r, 0, 1), CLI_STORE_VERSION);
    else
        rc = CLI_EXIT_OK;
    PQclear(r);
    return rc;
}

/* ---- the copy ---- */

static int64_t be_int(const char *p, int len)
{
    uint64_t x = 0;
    for (int i = 0; i < len; i++)
        x = x << 8 | (unsigned char)p[i];
    if (len > 0 && len < 8 && ((unsigned char)p[0] & 0x80))
        x |= ~(uint64_t)0 << (8 * len);
    return (int64_t)x;
}

/* Binds column col of row i of binary result r to parameter col + 1. */
static void bind_col(sqlite3_stmt *s, const PGresult *r, int i, int col)
{
    const char *v = PQgetvalue(r, i, col);
    int len = PQgetlength(r, i, col);
    Oid t = PQftype(r, col);
    if (PQgetisnull(r, i, col))
        sqlite3_bind_null(s, col + 1);
    else if (t == 20 || t == 21 || t == 23 || t == 16) /* int8, int2, int4, bool */
        sqlite3_bind_int64(s, col + 1, be_int(v, len));
    else if (t == 17) /* bytea */
        sqlite3_bind_blob(s, col + 1, len ? v : "", len, SQLITE_TRANSIENT);
    else /* text and the like */
        sqlite3_bind_text(s, col + 1, v, len, SQLITE_TRANSIENT);
}

/* Every row select gives, into the SQLite statement insert. */
static int copy_rows(PGconn *c, sqlite3 *db, const char *select, const char *insert)
{
    PGresult *r = run(c, select, 0, NULL, "reading the store");
    if (!r)
        return CLI_EXIT_FAIL;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, insert, -1, &s, NULL) == SQLITE_OK ? CLI_EXIT_OK
                                                                       : CLI_EXIT_FAIL;
    for (int i = 0; rc == CLI_EXIT_OK && i < PQntuples(r); i++) {
        for (int col = 0; col < PQnfields(r); col++)
            bind_col(s, r, i, col);
        if (sqlite3_step(s) != SQLITE_DONE)
            rc = CLI_EXIT_FAIL;
        sqlite3_reset(s);
    }
    if (rc != CLI_EXIT_OK)
        cli_complain("copying the store: %s", sqlite3_errmsg(db));
    sqlite3_finalize(s);
    PQclear(r);
    return rc;
}

static const char sqlite_schema[] =
    "PRAGMA application_id=1414288212; PRAGMA user_version=1;"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value NOT NULL);"
    "CREATE TABLE owner(id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL,"
    " host TEXT NOT NULL, since INTEGER NOT NULL);"
    "CREATE TABLE checkpoints(id INTEGER PRIMARY KEY, time INTEGER NOT NULL,"
    " tasklets INTEGER NOT NULL, channels INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " head BLOB NOT NULL);"
    "CREATE TABLE chunks(kind INTEGER NOT NULL, key INTEGER NOT NULL, ckpt INTEGER NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY (kind, key, ckpt)) WITHOUT ROWID;"
    "CREATE INDEX chunks_by_ckpt ON chunks(ckpt);"
    "CREATE TABLE mailbox(xid TEXT PRIMARY KEY, to_node TEXT NOT NULL, from_node TEXT NOT NULL,"
    " time INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE mailbox_refused(xid TEXT PRIMARY KEY, to_node TEXT NOT NULL,"
    " from_node TEXT NOT NULL, time INTEGER NOT NULL, data BLOB NOT NULL, reason TEXT NOT NULL);";

static const char *const base_copies[][2] = {
    {"SELECT key, value FROM meta", "INSERT OR REPLACE INTO meta VALUES(?,?)"},
    {"SELECT id, pid, host, since FROM owner", "INSERT INTO owner VALUES(?,?,?,?)"},
    {"SELECT id, time, tasklets, channels, bytes, head FROM checkpoints",
     "INSERT INTO checkpoints VALUES(?,?,?,?,?,?)"},
    {"SELECT kind, key, ckpt, data FROM chunks", "INSERT INTO chunks VALUES(?,?,?,?)"},
    {"SELECT xid, to_node, from_node, time, data FROM mailbox",
     "INSERT INTO mailbox VALUES(?,?,?,?,?)"},
    {"SELECT xid, to_node, from_node, time, data, reason FROM mailbox_refused",
     "INSERT INTO mailbox_refused VALUES(?,?,?,?,?,?)"},
};

static bool plain_name(const char *s)
{
    if (!*s || strlen(s) > 60)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static const char *sqlite_type(const char *pgtype)
{
    return !strcmp(pgtype, "bytea") ? "BLOB"
           : !strcmp(pgtype, "bigint") || !strcmp(pgtype, "integer") ? "INTEGER"
                                                                      : "TEXT";
}

/* The SQL of one participant's table (its columns but tl_seq, the first
 * its key; wf_msg's tl_seq is its seq, FORMAT.md section 11). */
static int table_sql(PGconn *c, const char *name, char *create, char *select, char *insert,
                     size_t n)
{
    const char *v[1] = {name};
    PGresult *r = run(c, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                      "WHERE attrelid = (quote_ident(current_schema()) || '.' || $1)::regclass "
                      "AND attnum > 0 AND NOT attisdropped AND attname <> 'tl_seq' ORDER BY "
                      "attnum", 1, v, "reading the store's tables");
    if (!r)
        return CLI_EXIT_FAIL;
    bool msg = !strcmp(name, "wf_msg");
    snprintf(create, n, "CREATE TABLE IF NOT EXISTS %s(%s", name,
             msg ? "seq INTEGER PRIMARY KEY AUTOINCREMENT, " : "");
    snprintf(select, n, "SELECT %s", msg ? "tl_seq, " : "");
    snprintf(insert, n, "INSERT INTO %s VALUES(%s", name, msg ? "?, " : "");
    int rc = CLI_EXIT_OK;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *col = PQgetvalue(r, i, 0);
        if (!plain_name(col))
            rc = CLI_EXIT_FAIL;
        const char *sep = i ? ", " : "";
        size_t a = strlen(create), b = strlen(select), d = strlen(insert);
        snprintf(create + a, n - a, "%s%s %s %s", sep, col, sqlite_type(PQgetvalue(r, i, 1)),
                 i ? "NOT NULL" : msg ? "UNIQUE NOT NULL" : "PRIMARY KEY");
        snprintf(select + b, n - b, "%s%s", sep, col);
        snprintf(insert + d, n - d, "%s?", sep);
    }
    size_t a = strlen(create), b = strlen(select), d = strlen(insert);
    snprintf(create + a, n - a, ")");
    snprintf(select + b, n - b, " FROM %s ORDER BY tl_seq", name);
    snprintf(insert + d, n - d, ")");
    if (PQntuples(r) == 0)
        rc = CLI_EXIT_FAIL;
    PQclear(r);
    if (rc != CLI_EXIT_OK)
        cli_complain("table %s of the store has an unexpected shape", name);
    return rc;
}

/* Every participant's table (those with tl_seq: the node's, the
 * workflows'), created and copied in write order. */
static int copy_participants(PGconn *c, sqlite3 *db)
{
    PGresult *r = run(c, "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = "
                      "c.oid WHERE c.relnamespace = current_schema()::regnamespace AND "
                      "c.relkind = 'r' AND a.attname = 'tl_seq' AND NOT a.attisdropped "
                      "ORDER BY 1", 0, NULL, "listing the store's tables");
    if (!r)
        return CLI_EXIT_FAIL;
    int rc = CLI_EXIT_OK;
    for (int i = 0; rc == CLI_EXIT_OK && i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);
        char create[1024], select[1024], insert[1024];
        if (!plain_name(name))
            continue; /* not one of ours */
        rc = table_sql(c, name, create, select, insert, sizeof create);
        if (rc == CLI_EXIT_OK && sqlite3_exec(db, create, NULL, NULL, NULL) != SQLITE_OK) {
            cli_complain("copying table %s: %s", name, sqlite3_errmsg(db));
            rc = CLI_EXIT_FAIL;
        }
        if (rc == CLI_EXIT_OK)
            rc = copy_rows(c, db, select, insert);
    }
    PQclear(r);
    return rc;
}

static int copy_all(PGconn *c, sqlite3 *db)
{
    if (sqlite3_exec(db, sqlite_schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        cli_complain("making the copy: %s", sqlite3_errmsg(db));
        return CLI_EXIT_FAIL;
    }
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; rc == CLI_EXIT_OK && i < sizeof base_copies / sizeof *base_copies; i++)
        rc = copy_rows(c, db, base_copies[i][0], base_copies[i][1]);
    if (rc == CLI_EXIT_OK)
        rc = copy_participants(c, db);
    if (rc == CLI_EXIT_OK &&
        sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS outbox(xid TEXT PRIMARY KEY, peer TEXT NOT "
                     "NULL, data BLOB NOT NULL); CREATE TABLE IF NOT EXISTS inbox(xid TEXT "
                     "PRIMARY KEY, peer TEXT NOT NULL, time INTEGER NOT NULL); COMMIT", NULL,
                     NULL, NULL) != SQLITE_OK) {
        cli_complain("making the copy: %s", sqlite3_errmsg(db));
        rc = CLI_EXIT_FAIL;
    }
    return rc;
}

int cli_pg_copy(const char *url, const char *out)
{
    PGconn *c = connect_url(url);
    if (!c)
        return CLI_EXIT_USAGE;
    PGresult *r = run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL,
                      "reading the store");
    int rc = r ? identify(c) : CLI_EXIT_FAIL;
    PQclear(r);
    sqlite3 *db = NULL;
    if (rc == CLI_EXIT_OK &&
        sqlite3_open_v2(out, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        cli_complain("%s: cannot create: %s", out, sqlite3_errmsg(db));
        rc = CLI_EXIT_FAIL;
    }
    if (rc == CLI_EXIT_OK)
        rc = copy_all(c, db);
    sqlite3_close(db);
    PQfinish(c);
    return rc;
}

/* ---- posting and waiting ---- */

static PGconn *connect_store(const char *url)
{
    PGconn *c = connect_url(url);
    if (c && identify(c) != CLI_EXIT_OK) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static bool final(const char *st)
{
    return !strcmp(st, "done") || !strcmp(st, "failed") || !strcmp(st, "cancelled");
}

/* Inside the post's transaction: CLI_EXIT_OK or FAIL (complained). */
static int check_target(PGconn *c, int kind, const char *id)
{
    const char *v[1] = {id};
    PGresult *r = run(c, kind == 2 ? "SELECT 'open' FROM wf_chan WHERE name = $1"
                                   : "SELECT status FROM wf WHERE id = $1", 1, v,
                      "posting");
    int rc = r ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    if (r && PQntuples(r) == 0) {
        cli_complain(kind == 2 ? "no channel %s in the store" : "no workflow %s in the store", id);
        rc = CLI_EXIT_FAIL;
    } else if (r && kind != 2 && final(PQgetvalue(r, 0, 0))) {
        cli_complain("workflow %s already finished (%s)", id, PQgetvalue(r, 0, 0));
        rc = CLI_EXIT_FAIL;
    }
    PQclear(r);
    return rc;
}

int cli_pg_post(const char *url, int kind, const char *id, const char *key, int64_t now,
                const void *p, size_t n)
{
    PGconn *c = connect_store(url);
    if (!c)
        return CLI_EXIT_USAGE;
    char wfcol[80], t[24];
    snprintf(wfcol, sizeof wfcol, "%s%s", kind == 2 ? "\x1f" : "", id);
    snprintf(t, sizeof t, "%lld", (long long)now);
    const char *vals[4] = {key, wfcol, t, p};
    int lens[4] = {0, 0, 0, (int)n}, fmts[4] = {0, 0, 0, 1};
    PGresult *r = run(c, "BEGIN", 0, NULL, "posting");
    int rc = r ? check_target(c, kind, id) : CLI_EXIT_FAIL;
    PQclear(r);
    if (rc == CLI_EXIT_OK) { /* the order of wf_msg's tl_seq: FORMAT.md section 11 */
        PQclear(run(c, "SELECT pg_advisory_xact_lock(hashtext('libtasklet:' || current_schema() "
                    "|| ':wf_msg'))", 0, NULL, "posting"));
        r = PQexecParams(c, "INSERT INTO wf_msg(key, wf, time, data) VALUES($1, $2, $3, $4)", 4,
                         NULL, vals, lens, fmts, 1);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            char msg[300];
            snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
            one_line(msg);
            if (state && !strcmp(state, "23505"))
                cli_complain("a message with this key was posted to %s already", id);
            else
                cli_complain("posting to %s: %s", id, msg);
            rc = CLI_EXIT_FAIL;
        }
        PQclear(r);
    }
    if (rc == CLI_EXIT_OK) /* the owner's listener wakes when this commits */
        PQclear(run(c, "SELECT pg_notify('libtasklet', 'row wf_msg ' || current_schema())", 0,
                    NULL, "posting"));
    r = rc == CLI_EXIT_OK ? run(c, "COMMIT", 0, NULL, "posting") : NULL;
    if (!r) {
        PQclear(PQexec(c, "ROLLBACK"));
        rc = CLI_EXIT_FAIL;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps until c hears an announcement, at most ms. */
static void wait_notify(PGconn *c, int64_t ms)
{
    struct pollfd p = {PQsocket(c), POLLIN, 0};
    if (p.fd < 0 || poll(&p, 1, (int)ms) <= 0)
        return;
    PQconsumeInput(c);
    PGnotify *nt;
    while ((nt = PQnotifies(c)))
        PQfreemem(nt);
}

int cli_pg_status(const char *url, const char *id, bool wait, int64_t wait_s, char *st,
                  size_t cap)
{
    PGconn *c = connect_store(url);
    if (!c)
        return CLI_EXIT_USAGE;
    PGresult *l = wait ? run(c, "LISTEN libtasklet", 0, NULL, "listening") : NULL;
    PQclear(l);
    int64_t until = now_ms() + wait_s * 1000;
    const char *v[1] = {id};
    int rc = CLI_EXIT_OK;
    for (;;) {
        PGresult *r = run(c, "SELECT status FROM wf WHERE id = $1", 1, v, "reading the store");
        if (!r || PQntuples(r) == 0) {
            if (r)
                cli_complain("no workflow %s in the store", id);
            PQclear(r);
            rc = CLI_EXIT_FAIL;
            break;
        }
        snprintf(st, cap, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        int64_t left = until - now_ms();
        if (final(st) || !wait || left <= 0)
            break;
        wait_notify(c, left > 1000 ? 1000 : left);
    }
    PQfinish(c);
    return rc;
}

/* ---- rewriting history: prune, rollback ---- */

/* Runs cmd with its standard output into a temporary file (kept until
 * the server committed: nothing is reported done that was not). */
static int captured(int (*cmd)(const cli_opts *o), const cli_opts *o, FILE **out)
{
    fflush(stdout);
    int saved = dup(1);
    *out = tmpfile();
    if (saved < 0 || !*out || dup2(fileno(*out), 1) < 0) {
        if (saved >= 0)
            close(saved);
        cli_complain("cannot make a temporary file");
        return CLI_EXIT_FAIL;
    }
    int rc = cmd(o);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return rc;
}

/* In the transaction: the epoch row locked, no live owner. */
static int lock_unowned(PGconn *c, const char *what)
{
    PGresult *r = PQexec(c, "SELECT 1 FROM meta WHERE key = 'epoch' FOR UPDATE");
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    bool busy = state && (!strcmp(state, "55P03") || !strcmp(state, "40001"));
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    if (!ok) {
        cli_complain(busy ? "%s: the store is being written or claimed by another process "
                     "right now; try again" : "%s: the store has no epoch row (FORMAT.md 7.3)",
                     what);
        return CLI_EXIT_FAIL;
    }
    r = run(c, "SELECT pid::text, host, to_char(lease_until, 'YYYY-MM-DD HH24:MI:SS TZ'), "
            "(lease_until > now() AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = "
            "owner.backend))::text FROM owner WHERE id = 1", 0, NULL, what);
    if (!r)
        return CLI_EXIT_FAIL;
    int rc = CLI_EXIT_OK;
    if (PQntuples(r) == 1 && !strcmp(PQgetvalue(r, 0, 3), "true")) {
        cli_complain("%s: the store is owned by pid %s on host %s, which is still connected "
                     "(its lease runs until %s); stop it first", what, PQgetvalue(r, 0, 0),
                     PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
        rc = CLI_EXIT_FAIL;
    }
    PQclear(r);
    return rc;
}

/* The copy records what the command deletes (kind NULL: a checkpoint). */
static const char gone_sql[] =
    "CREATE TABLE tool_gone(kind INTEGER, key INTEGER, ckpt INTEGER NOT NULL);"
    "CREATE TRIGGER tool_gone_chunk AFTER DELETE ON chunks BEGIN INSERT INTO tool_gone "
    "VALUES(old.kind, old.key, old.ckpt); END;"
    "CREATE TRIGGER tool_gone_ckpt AFTER DELETE ON checkpoints BEGIN INSERT INTO tool_gone "
    "VALUES(NULL, NULL, old.id); END;";

/* What the command deleted on the copy, as PostgreSQL arrays: v[0..2]
 * the chunk rows' kinds, keys and ckpts, v[3] the checkpoints' ids. */
static int gone_arrays(const char *path, char *v[4], int64_t *nrows)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    size_t len[4] = {0};
    *nrows = 0;
    for (int i = 0; i < 4; i++)
        v[i] = NULL;
    int step = SQLITE_ERROR;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT kind, key, ckpt FROM tool_gone", -1, &s, NULL) == SQLITE_OK)
        while ((step = sqlite3_step(s)) == SQLITE_ROW) {
            bool ck = sqlite3_column_type(s, 0) == SQLITE_NULL;
            *nrows += !ck;
            for (int i = ck ? 3 : 0; i < (ck ? 4 : 3); i++) {
                v[i] = cli_xgrow(v[i], len[i], 32, 1);
                len[i] += (size_t)snprintf(v[i] + len[i], 32, "%s%lld", len[i] ? "," : "{",
                                           (long long)sqlite3_column_int64(s, ck ? 2 : i));
            }
        }
    sqlite3_finalize(s);
    sqlite3_close(db);
    for (int i = 0; i < 4; i++) {
        v[i] = cli_xgrow(v[i], len[i], 3, 1);
        snprintf(v[i] + len[i], 3, "%s}", len[i] ? "" : "{");
    }
    if (step != SQLITE_DONE)
        cli_complain("reading the copy: %s", "cannot read what the command removed");
    return step == SQLITE_DONE ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* The same deletions on the server, and the epoch moved on (fencing an
 * owner paused before); still in the transaction. */
static int apply_gone(PGconn *c, const char *path, const char *what)
{
    char *v[4];
    int64_t nrows;
    int rc = gone_arrays(path, v, &nrows);
    PGresult *r = NULL;
    if (rc == CLI_EXIT_OK &&
        (r = run(c, "DELETE FROM chunks WHERE (kind, key, ckpt) IN (SELECT * FROM unnest("
                 "$1::int[], $2::bigint[], $3::bigint[]))", 3, (const char *const *)v, what))) {
        if (atoll(PQcmdTuples(r)) != nrows) {
            cli_complain("%s: the store changed meanwhile; nothing was changed", what);
            rc = CLI_EXIT_FAIL;
        }
    } else {
        rc = CLI_EXIT_FAIL;
    }
    PQclear(r);
    const char *ids[1] = {v[3]};
    if (rc == CLI_EXIT_OK &&
        (!(r = run(c, "DELETE FROM checkpoints WHERE id = ANY($1::bigint[])", 1, ids, what)) ||
         (PQclear(r), !(r = run(c, "UPDATE meta SET value = (value::bigint + 1)::text WHERE "
                                "key = 'epoch'", 0, NULL, what)))))
        rc = CLI_EXIT_FAIL;
    PQclear(r);
    for (int i = 0; i < 4; i++)
        free(v[i]);
    return rc;
}

/* The command on a copy made in the transaction that holds the epoch
 * row, then its deletions applied to the server in that transaction. */
static int on_locked(PGconn *c, const cli_opts *o, int (*cmd)(const cli_opts *o),
                     const char *path, FILE **out, int *cmd_rc)
{
    const char *what = o->has_keep ? "prune" : "rollback";
    PGresult *r = run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL, what);
    int rc = r ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    PQclear(r);
    if (rc == CLI_EXIT_OK)
        PQclear(PQexec(c, "SET LOCAL lock_timeout = '10s'"));
    if (rc == CLI_EXIT_OK)
        rc = lock_unowned(c, what);
    sqlite3 *db = NULL;
    if (rc == CLI_EXIT_OK && sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        rc = CLI_EXIT_FAIL;
    if (rc == CLI_EXIT_OK && (rc = copy_all(c, db)) == CLI_EXIT_OK &&
        sqlite3_exec(db, gone_sql, NULL, NULL, NULL) != SQLITE_OK)
        rc = CLI_EXIT_FAIL;
    sqlite3_close(db);
    cli_opts copy = *o;
    copy.db = path;
    copy.on_copy = true;
    if (rc == CLI_EXIT_OK)
        rc = *cmd_rc = captured(cmd, &copy, out);
    if (rc == CLI_EXIT_OK)
        rc = apply_gone(c, path, what);
    r = rc == CLI_EXIT_OK ? run(c, "COMMIT", 0, NULL, what) : NULL;
    rc = r ? rc : rc == CLI_EXIT_OK ? CLI_EXIT_FAIL : rc;
    PQclear(r);
    return rc;
}

int cli_pg_rewrite(const cli_opts *o, const char *path, int (*cmd)(const cli_opts *o))
{
    PGconn *c = connect_store(o->db);
    if (!c)
        return CLI_EXIT_USAGE;
    FILE *out = NULL;
    int cmd_rc = CLI_EXIT_OK;
    int rc = on_locked(c, o, cmd, path, &out, &cmd_rc);
    PQfinish(c); /* rolls back what was not committed */
    if ((rc == CLI_EXIT_OK || cmd_rc != CLI_EXIT_OK) && out) { /* what it said, or why not */
        char buf[4096];
        size_t n;
        rewind(out);
        while ((n = fread(buf, 1, sizeof buf, out)) > 0)
            fwrite(buf, 1, n, stdout);
    }
    if (out)
        fclose(out);
    return rc;
}

#else /* no libpq */

static int no_pg(void)
{
    cli_complain("a postgresql:// location: this tasklet tool was built without libpq, so it "
                 "reads SQLite store files only");
    return CLI_EXIT_USAGE;
}

int cli_pg_copy(const char *url, const char *out)
{
    (void)url, (void)out;
    return no_pg();
}

int cli_pg_post(const char *url, int kind, const char *id, const char *key, int64_t now,
                const void *p, size_t n)
{
    (void)url, (void)kind, (void)id, (void)key, (void)now, (void)p, (void)n;
    return no_pg();
}

int cli_pg_status(const char *url, const char *id, bool wait, int64_t wait_s, char *st,
                  size_t cap)
{
    (void)url, (void)id, (void)wait, (void)wait_s, (void)st, (void)cap;
    return no_pg();
}

int cli_pg_rewrite(const cli_opts *o, const char *path, int (*cmd)(const cli_opts *o))
{
    (void)o, (void)path, (void)cmd;
    return no_pg();
}

#endif

/* The copy at a temporary path (removed after, with what SQLite and
 * rollback's lock put beside it): read, or rewritten (cli_pg_rewrite). */
static int on_temp(const cli_opts *o, int (*cmd)(const cli_opts *o), bool rewrite)
{
    const char *dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/tasklet-pg-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        cli_complain("%s: cannot make a temporary copy of the store", path);
        return CLI_EXIT_FAIL;
    }
    close(fd);
    int rc = rewrite ? cli_pg_rewrite(o, path, cmd) : cli_pg_copy(o->db, path);
    if (rc == CLI_EXIT_OK && !rewrite) {
        cli_opts copy = *o;
        copy.db = path;
        copy.on_copy = true;
        rc = cmd(&copy);
    }
    unlink(path);
    static const char *const sides[] = {"-journal", "-lock"};
    for (int i = 0; i < 2; i++) {
        char side[4200];
        snprintf(side, sizeof side, "%s%s", path, sides[i]);
        unlink(side);
    }
    return rc;
}

int cli_on_copy(const cli_opts *o, int (*cmd)(const cli_opts *o))
{
    return on_temp(o, cmd, false);
}

int cli_on_rewrite(const cli_opts *o, int (*cmd)(const cli_opts *o))
{
    return on_temp(o, cmd, true);
}
