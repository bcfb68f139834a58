/*
 * store_pg.c -- the PostgreSQL backend of the store interface
 * (store_backend.h): opening a postgresql:// URL, identifying the schema,
 * ownership by lease with a fencing epoch, and the write transaction.  The
 * rows themselves are in store_pg_rows.c; the tables in docs/FORMAT.md
 * section 7.3.
 *
 * A store is the set of tables in the connection's current schema (the
 * first existing one on its search_path, "public" by default): one
 * database holds many stores, one per schema, chosen in the URL with
 * ?options=-csearch_path%3Dname.
 *
 * Invariants:
 * - Every write happens inside BEGIN ... COMMIT (READ COMMITTED), so a
 *   crash or a lost connection at any instant leaves the last commit
 *   whole.  With TL_STORE_NOSYNC the session runs with
 *   synchronous_commit=off (a server crash may lose the last commits, never
 *   tear one).
 * - The fencing epoch is meta('epoch'), a row every claim and every fenced
 *   begin locks FOR UPDATE: claim increments it, a fenced begin compares it
 *   with its own, inside the same transaction, before anything is written,
 *   so a process whose claim was superseded writes nothing.  The row lock
 *   also serialises writers, as SQLite's write lock does.
 * - Ownership is a lease, not a lock: the owner row holds the owner's pid,
 *   host, its server connection (backend pid) and a deadline on the
 *   server's clock, pushed forward by every fenced begin.  A claim is
 *   refused while the deadline is ahead and the owner's connection is
 *   still there; a dead owner (its connection gone) is taken over at once,
 *   a paused or partitioned one when its lease runs out.  The owner's
 *   session has idle_in_transaction_session_timeout set to its lease, and a
 *   claim ends the session of a transaction on the epoch row older than a
 *   lease (a process stopped in the middle of a pipeline, which that
 *   timeout does not see as idle), so a process stopped inside a
 *   transaction cannot hold the epoch row longer.
 * - Nothing is written to a schema before it is identified as ours (or as
 *   empty): a schema with other tables is refused untouched.  Creation
 *   happens under a transaction-scoped advisory lock, so two processes
 *   opening the same empty schema create it once.
 * - Messages name host:port/dbname and the schema, never the password.
 */
#include "store_pg.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 1
#define DEFAULT_LEASE_MS 30000
#define MAX_RECORD 1000000000 /* as SQLite's default length limit */

/* The tables of docs/FORMAT.md section 7.3.  Participants' tables are
 * created on first use (store_pg_rows.c). */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS owner(id int PRIMARY KEY CHECK (id = 1), pid bigint NOT NULL,"
    " host text NOT NULL, since bigint NOT NULL, backend int NOT NULL,"
    " lease_until timestamptz NOT NULL);"
    "CREATE TABLE IF NOT EXISTS checkpoints(id bigint PRIMARY KEY, time bigint NOT NULL,"
    " tasklets bigint NOT NULL, channels bigint NOT NULL, bytes bigint NOT NULL,"
    " head bytea NOT NULL);"
    "CREATE TABLE IF NOT EXISTS chunks(kind int NOT NULL, key bigint NOT NULL,"
    " ckpt bigint NOT NULL, data bytea NOT NULL, PRIMARY KEY (kind, key, ckpt));"
    "CREATE INDEX IF NOT EXISTS chunks_by_ckpt ON chunks(ckpt);"
    "CREATE TABLE IF NOT EXISTS mailbox(xid text PRIMARY KEY, to_node text NOT NULL,"
    " from_node text NOT NULL, time bigint NOT NULL, data bytea NOT NULL);"
    "CREATE INDEX IF NOT EXISTS mailbox_to ON mailbox(to_node, time, xid);"
    "CREATE TABLE IF NOT EXISTS mailbox_refused(xid text PRIMARY KEY, to_node text NOT NULL,"
    " from_node text NOT NULL, time bigint NOT NULL, data bytea NOT NULL,"
    " reason text NOT NULL);";

/* ---- errors, parameters, queries ---- */

/* SQLSTATE classes to our codes. */
static int state_code(const char *state)
{
    if (!state)
        return TL_EIO; /* no answer from the server: the connection */
    if (!strncmp(state, "08", 2) || !strncmp(state, "53", 2) || !strncmp(state, "57", 2) ||
        !strncmp(state, "58", 2) || !strcmp(state, "25006") || !strcmp(state, "25P03"))
        return TL_EIO; /* connection, resources (disk full), shutdown, read-only,
                        * the session cut off idle in its transaction */
    if (!strncmp(state, "54", 2) || !strcmp(state, "22001") || !strcmp(state, "22003"))
        return TL_ERANGE;
    if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03"))
        return TL_EBUSY;
    if (!strcmp(state, "42501"))
        return TL_EPERM;
    if (!strcmp(state, "23505"))
        return TL_EEXIST; /* a unique key taken (row_insert) */
    return TL_ESTORE;
}

/* libpq's messages end with a newline (and sometimes hold more lines). */
static void one_line(char *buf, size_t n, const char *msg)
{
    snprintf(buf, n, "%s", msg && *msg ? msg : "no detail");
    for (char *c = buf; *c; c++)
        if (*c == '\n')
            *c = c[1] ? ' ' : '\0';
}

int tl__pg_fail(pg *q, const PGresult *r, const char *what)
{
    char msg[300];
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *text = r && PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                           ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                           : PQerrorMessage(q->conn);
    one_line(msg, sizeof msg, text);
    int code = PQstatus(q->conn) == CONNECTION_BAD ? TL_EIO : state_code(state);
    return tl__store_fail(q->base.st, code, "%s: %s (PostgreSQL %s%s%s)", what, msg, q->where,
                          state ? ", SQLSTATE " : "", state ? state : "");
}

void tl__pg_i64(pg_params *p, int64_t v)
{
    int i = p->n++;
    snprintf(p->num[i], sizeof p->num[i], "%lld", (long long)v);
    p->types[i] = 20; /* int8 */
    p->vals[i] = p->num[i];
    p->lens[i] = 0;
    p->fmts[i] = 0;
}

void tl__pg_text(pg_params *p, const char *s)
{
    int i = p->n++;
    p->types[i] = 25; /* text */
    p->vals[i] = s ? s : "";
    p->lens[i] = 0;
    p->fmts[i] = 0;
}

int tl__pg_bytes(pg *q, pg_params *p, const void *data, size_t n)
{
    if (n > MAX_RECORD)
        return tl__store_fail(q->base.st, TL_ERANGE, "a record of %zu bytes is larger than the "
                              "PostgreSQL store holds (%d)", n, MAX_RECORD);
    int i = p->n++;
    p->types[i] = 17; /* bytea */
    p->vals[i] = n ? data : "";
    p->lens[i] = (int)n;
    p->fmts[i] = 1;
    return TL_OK;
}

int tl__pg_send(pg *q, const char *sql, const pg_params *p, const char *what)
{
    if (PQpipelineStatus(q->conn) == PQ_PIPELINE_OFF && !PQenterPipelineMode(q->conn))
        return tl__pg_fail(q, NULL, what);
    if (!PQsendQueryParams(q->conn, sql, p ? p->n : 0, p ? p->types : NULL, p ? p->vals : NULL,
                           p ? p->lens : NULL, p ? p->fmts : NULL, 1))
        return tl__pg_fail(q, NULL, what);
    q->piped_what[q->piped++] = what;
    return q->piped == PG_PIPE_MAX ? tl__pg_drain(q) : TL_OK;
}

/* Reads the results of the writes in flight, up to the sync point; the
 * first failure is the error (those after it were skipped by the server). */
int tl__pg_drain(pg *q)
{
    if (PQpipelineStatus(q->conn) == PQ_PIPELINE_OFF)
        return TL_OK;
    int rc = PQpipelineSync(q->conn) ? TL_OK : tl__pg_fail(q, NULL, "sending writes");
    for (int i = 0, nulls = 0; rc == TL_OK || PQstatus(q->conn) == CONNECTION_OK;) {
        PGresult *r = PQgetResult(q->conn);
        if (!r) { /* between one query's results and the next's */
            if (++nulls > q->piped + 1 || PQstatus(q->conn) == CONNECTION_BAD)
                break;
            i += i < q->piped - 1;
            continue;
        }
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        if (rc == TL_OK && s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK &&
            s != PGRES_PIPELINE_ABORTED)
            rc = tl__pg_fail(q, r, q->piped ? q->piped_what[i] : "writing");
        PQclear(r);
    }
    q->piped = 0;
    if (!PQexitPipelineMode(q->conn) && rc == TL_OK)
        rc = tl__pg_fail(q, NULL, "ending a batch of writes");
    return rc;
}

int tl__pg_run(pg *q, const char *sql, const pg_params *p, const char *what, PGresult **res)
{
    int rc = tl__pg_drain(q);
    if (rc != TL_OK)
        return rc;
    PGresult *r = PQexecParams(q->conn, sql, p ? p->n : 0, p ? p->types : NULL,
                               p ? p->vals : NULL, p ? p->lens : NULL, p ? p->fmts : NULL, 1);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        rc = tl__pg_fail(q, r, what);
        PQclear(r);
        return rc;
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return TL_OK;
}

int64_t tl__pg_change(pg *q, const char *sql, const pg_params *p, const char *what)
{
    PGresult *r = NULL;
    if (tl__pg_run(q, sql, p, what, &r) != TL_OK)
        return -1;
    int64_t n = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return n;
}

int64_t tl__pg_col_i64(const PGresult *r, int row, int col)
{
    const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    uint64_t x = 0;
    if (PQgetisnull(r, row, col) || len > 8)
        return 0;
    for (int i = 0; i < len; i++)
        x = x << 8 | v[i];
    if (len > 0 && len < 8 && (v[0] & 0x80)) /* sign-extend int2 and int4 */
        x |= ~(uint64_t)0 << (8 * len);
    return (int64_t)x;
}

int tl__pg_int(pg *q, const char *sql, const pg_params *p, const char *what, int64_t dflt,
               int64_t *out)
{
    PGresult *r = NULL;
    int rc = tl__pg_run(q, sql, p, what, &r);
    if (rc != TL_OK)
        return rc;
    *out = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? tl__pg_col_i64(r, 0, 0) : dflt;
    PQclear(r);
    return TL_OK;
}

/* Several statements in one round trip, for schema and settings. */
static int exec_simple(pg *q, const char *sql, const char *what)
{
    int rc0 = tl__pg_drain(q);
    if (rc0 != TL_OK)
        return rc0;
    PGresult *r = PQexec(q->conn, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? TL_OK : tl__pg_fail(q, r, what);
    PQclear(r);
    return rc;
}

/* Ends a transaction that failed, keeping the store's error message. */
static void rollback_quiet(pg *q)
{
    char keep[512];
    snprintf(keep, sizeof keep, "%s", tl_store_errmsg(q->base.st));
    int code = tl_store_errcode(q->base.st);
    if (tl__pg_drain(q) != TL_OK && code != TL_OK) /* the error that made us roll back stays */
        tl__store_fail(q->base.st, code, "%s", keep);
    if (PQtransactionStatus(q->conn) != PQTRANS_IDLE)
        PQclear(PQexec(q->conn, "ROLLBACK"));
}

static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "relation already exists, skipping" and the like */
}

void tl__pg_tables_forget(pg *q) { memset(q->tables, 0, sizeof q->tables); }

/* ---- opening ---- */

/* msg without the password of location (libpq quotes the URL it could
 * not parse): every occurrence of the text between "user:" and "@". */
static void redact(char *msg, const char *location)
{
    const char *auth = strstr(location, "://");
    const char *at = auth ? strchr(auth + 3, '@') : NULL;
    const char *colon = auth ? memchr(auth + 3, ':', at ? (size_t)(at - auth - 3) : 0) : NULL;
    if (!colon || at - colon < 2)
        return;
    size_t n = (size_t)(at - colon - 1);
    for (char *hit = msg; *hit; hit++)
        if (!strncmp(hit, colon + 1, n)) {
            memset(hit, '*', n);
            hit += n - 1;
        }
}

/* What a message may name of location: host:port/dbname, no password. */
static int describe(pg *q, tl_store *st, const char *location)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(location, &err);
    if (!opts) {
        char msg[200];
        one_line(msg, sizeof msg, err ? err : "out of memory");
        redact(msg, location);
        PQfreemem(err);
        return tl__store_fail(st, TL_EINVAL, "tl_store_open: not a valid PostgreSQL URL: %s",
                              msg);
    }
    const char *host = "localhost", *port = "5432", *db = "(the user's database)";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
        else if (!strcmp(o->keyword, "dbname"))
            db = o->val;
    }
    snprintf(q->where, sizeof q->where, "%.100s:%.20s/%.100s", host, port, db);
    PQconninfoFree(opts);
    return TL_OK;
}

/* The session's settings, on every new connection (the first one and each
 * PQreset: a reset session has the server's defaults again, without the
 * idle_in_transaction timeout that keeps a stopped owner from holding the
 * epoch row past its lease). */
static int set_up_session(pg *q)
{
    PQsetNoticeProcessor(q->conn, quiet_notices, NULL);
    char sql[256];
    /* without TL_STORE_NOSYNC, the server's synchronous_commit (on by
     * default; a replicated setup may ask for more) */
    snprintf(sql, sizeof sql, "%sSET default_transaction_read_only = %s; SET "
             "idle_in_transaction_session_timeout = %lld",
             q->flags & TL_STORE_NOSYNC ? "SET synchronous_commit = off; " : "",
             q->flags & TL_STORE_READONLY ? "on" : "off", (long long)q->lease_ms);
    return exec_simple(q, sql, "setting up the session");
}

static int connect_to(pg *q, const char *location)
{
    /* the URL's own connect_timeout (and the rest) win over these: later
     * keywords override earlier ones, and dbname expands the URL */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"10", "libtasklet", location, NULL};
    q->conn = PQconnectdbParams(keys, vals, 1);
    if (!q->conn)
        return tl__store_fail(q->base.st, TL_ENOMEM, "tl_store_open: out of memory");
    if (PQstatus(q->conn) != CONNECTION_OK) {
        char msg[300];
        one_line(msg, sizeof msg, PQerrorMessage(q->conn));
        redact(msg, location);
        return tl__store_fail(q->base.st, TL_EIO, "cannot connect to PostgreSQL at %s: %s",
                              q->where, msg);
    }
    return set_up_session(q);
}

/* The current schema, named in where; TL_ENOENT when the search_path
 * names none that exists. */
static int find_schema(pg *q)
{
    PGresult *r = NULL;
    int rc = tl__pg_run(q, "SELECT current_schema()", NULL, "finding the schema", &r);
    if (rc != TL_OK)
        return rc;
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
        PQclear(r);
        return tl__store_fail(q->base.st, TL_ENOENT, "PostgreSQL %s: no schema on the "
                              "search_path exists; create it (CREATE SCHEMA name) first",
                              q->where);
    }
    size_t len = strlen(q->where);
    snprintf(q->where + len, sizeof q->where - len, ", schema %.60s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return TL_OK;
}

enum { SCHEMA_EMPTY, SCHEMA_OURS };

/* SCHEMA_EMPTY, SCHEMA_OURS or an error; reads only. */
static int check_identity(pg *q)
{
    int64_t tables = 0, ours = 0, ver = 0;
    int rc = tl__pg_int(q, "SELECT count(*) FROM pg_class WHERE relnamespace = "
                        "current_schema()::regnamespace AND relkind IN ('r', 'p', 'v', 'm')",
                        NULL, "identifying the store", 0, &tables);
    if (rc == TL_OK && tables > 0)
        rc = tl__pg_int(q, "SELECT count(*) FROM pg_class WHERE relname = 'meta' AND "
                        "relnamespace = current_schema()::regnamespace", NULL,
                        "identifying the store", 0, &ours);
    if (rc == TL_OK && ours > 0)
        rc = tl__pg_int(q, "SELECT CASE WHEN (SELECT value FROM meta WHERE key = "
                        "'application') = 'libtasklet' THEN coalesce((SELECT value FROM meta "
                        "WHERE key = 'schema'), '0')::bigint ELSE -1 END", NULL,
                        "identifying the store", -1, &ver);
    if (rc != TL_OK)
        return rc;
    if (tables == 0) {
        if (q->flags & TL_STORE_READONLY)
            return tl__store_fail(q->base.st, TL_ENOENT, "PostgreSQL %s: no libtasklet store "
                                  "here (the schema has no tables)", q->where);
        return SCHEMA_EMPTY;
    }
    if (ours == 0 || ver < 1)
        return tl__store_fail(q->base.st, TL_ENOTSTORE, "PostgreSQL %s holds tables of "
                              "another application, not a libtasklet store; it was left "
                              "untouched (choose another schema with ?options=-csearch_path"
                              "%%3Dname)", q->where);
    if (ver > SCHEMA_VERSION)
        return tl__store_fail(q->base.st, TL_EFORMAT, "PostgreSQL %s has store version %lld, "
                              "newer than this library reads (%d); upgrade libtasklet",
                              q->where, (long long)ver, SCHEMA_VERSION);
    return SCHEMA_OURS;
}

static int create_schema(pg *q)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO meta VALUES ('application', 'libtasklet'), ('schema', '%d'),"
             " ('format', '%d'), ('lib', '%s'), ('created', '%lld'), ('epoch', '0')"
             " ON CONFLICT (key) DO NOTHING",
             SCHEMA_VERSION, TL_FORMAT_VERSION, TL_VERSION_STRING,
             (long long)time(NULL) * 1000000000LL);
    int rc = exec_simple(q, schema_sql, "creating the store");
    return rc == TL_OK ? exec_simple(q, sql, "creating the store") : rc;
}

/* Identifies the schema and, empty and writable, creates the store, under
 * an advisory lock on the schema's name for the transaction. */
static int open_schema(pg *q)
{
    int rc = exec_simple(q, "BEGIN; SELECT pg_advisory_xact_lock(hashtext('libtasklet:' || "
                         "current_schema()))", "identifying the store");
    int kind = rc == TL_OK ? check_identity(q) : rc;
    if (kind == SCHEMA_EMPTY)
        kind = create_schema(q);
    if (kind < 0) {
        rollback_quiet(q);
        return kind;
    }
    return exec_simple(q, "COMMIT", "creating the store");
}

static void pg_close(tl__store_be *be)
{
    pg *q = (pg *)be;
    if (!q)
        return;
    PQfinish(q->conn); /* the server rolls back a transaction left open */
    free(q);
}

/* TL_PG_LEASE_MS (milliseconds) overrides the lease, for tests and for
 * deployments that want a shorter takeover. */
static int64_t lease_from_env(void)
{
    const char *e = getenv("TL_PG_LEASE_MS");
    long long v = e ? strtoll(e, NULL, 10) : 0;
    return v >= 100 && v <= 86400000 ? v : DEFAULT_LEASE_MS;
}

static int pg_open(tl_store *st, const char *location, int flags, tl__store_be **out)
{
    pg *q = calloc(1, sizeof *q);
    if (!q)
        return tl__store_fail(st, TL_ENOMEM, "tl_store_open: out of memory");
    q->base.ops = &tl__store_pg_ops;
    q->base.st = st;
    q->flags = flags;
    q->lease_ms = lease_from_env();
    int rc = describe(q, st, location);
    if (rc == TL_OK)
        rc = connect_to(q, location);
    if (rc == TL_OK)
        rc = find_schema(q);
    if (rc == TL_OK)
        rc = open_schema(q);
    if (rc != TL_OK) {
        pg_close(&q->base);
        return rc;
    }
    *out = &q->base;
    return TL_OK;
}

static size_t pg_max_record(tl__store_be *be)
{
    (void)be;
    return MAX_RECORD;
}

/* ---- ownership ---- */

/* The owner row's report, and whether it still holds the store: its lease
 * is ahead and its connection is there (and it is not this handle). */
static int owner_live(pg *q, bool *live, char *who, size_t n)
{
    PGresult *r = NULL;
    int rc = tl__pg_run(q, "SELECT pid, host, to_char(lease_until, 'YYYY-MM-DD HH24:MI:SS TZ'),"
                        " lease_until > now() AND backend <> pg_backend_pid() AND EXISTS "
                        "(SELECT 1 FROM pg_stat_activity a WHERE a.pid = owner.backend) "
                        "FROM owner WHERE id = 1", NULL, "claiming the store", &r);
    if (rc != TL_OK)
        return rc;
    *live = false;
    if (PQntuples(r) == 1) {
        *live = *PQgetvalue(r, 0, 3) != 0;
        snprintf(who, n, "pid %lld on host %.100s (its lease runs until %.40s)",
                 (long long)tl__pg_col_i64(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return TL_OK;
}

static int take_over(pg *q, int64_t *epoch)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    pg_params p = {0};
    tl__pg_i64(&p, (int64_t)getpid());
    tl__pg_text(&p, host);
    tl__pg_i64(&p, (int64_t)time(NULL));
    tl__pg_i64(&p, q->lease_ms);
    int rc = tl__pg_run(q, "INSERT INTO owner VALUES (1, $1, $2, $3, pg_backend_pid(), now() + "
                        "$4 * interval '1 millisecond') ON CONFLICT (id) DO UPDATE SET pid = "
                        "EXCLUDED.pid, host = EXCLUDED.host, since = EXCLUDED.since, backend = "
                        "EXCLUDED.backend, lease_until = EXCLUDED.lease_until", &p,
                        "claiming the store", NULL);
    if (rc == TL_OK)
        rc = tl__pg_int(q, "UPDATE meta SET value = (value::bigint + 1)::text WHERE key = "
                        "'epoch' RETURNING value::bigint", NULL, "claiming the store", 0, epoch);
    /* chunk rows newer than every checkpoint belong to none (a hand edit):
     * they would make the next checkpoint of that id fail */
    if (rc == TL_OK)
        rc = tl__pg_run(q, "DELETE FROM chunks WHERE ckpt > (SELECT coalesce(max(id), 0) FROM "
                        "checkpoints)", NULL, "removing chunk rows of no checkpoint", NULL);
    return rc;
}

/* The epoch row, locked for this claim: rows 1, or 0 when another
 * transaction holds it.  A holder whose transaction began more than a lease
 * ago has outlived any lease it renewed, and is ended first (its backend
 * terminated; pg_terminate_backend waits until it is gone).  That is the
 * owner stopped inside a checkpoint's pipeline: its session waits for the
 * rest of the pipeline, which idle_in_transaction_session_timeout does not
 * count as idle, so without this it held the row until it was resumed. */
static int lock_epoch(pg *q, int64_t *rows)
{
    static const char lock_sql[] = "SELECT count(*) FROM (SELECT 1 FROM meta WHERE key = "
                                   "'epoch' FOR UPDATE SKIP LOCKED) e";
    pg_params p = {0};
    tl__pg_i64(&p, q->lease_ms);
    int64_t ended = 0;
    int rc = tl__pg_int(q, lock_sql, NULL, "claiming the store", 0, rows);
    if (rc == TL_OK && *rows == 0)
        rc = tl__pg_int(q, "WITH h AS MATERIALIZED (SELECT a.pid FROM pg_stat_activity a "
                        "WHERE a.backend_xid = (SELECT xmax FROM meta WHERE key = 'epoch') AND "
                        "a.xact_start < now() - $1 * interval '1 millisecond') SELECT count(*) "
                        "FROM h WHERE pg_terminate_backend(h.pid, 10000)", &p,
                        "ending a holder of the store past its lease", 0, &ended);
    if (rc == TL_OK && ended > 0)
        rc = tl__pg_int(q, lock_sql, NULL, "claiming the store", 0, rows);
    return rc;
}

static int pg_claim(tl__store_be *be, int64_t *epoch)
{
    pg *q = (pg *)be;
    char who[300] = "";
    bool live = false;
    int64_t next = 0;
    int64_t rows = 0;
    /* SKIP LOCKED: a row another transaction holds (its owner writing, or
     * another worker claiming) is that process's; this worker moves on */
    int rc = exec_simple(q, "BEGIN", "claiming the store");
    if (rc == TL_OK)
        rc = lock_epoch(q, &rows);
    if (rc == TL_OK && rows == 0)
        rc = tl__store_fail(q->base.st, TL_ELOCKED, "the store (PostgreSQL %s) is being "
                            "written or claimed by another process right now; try again",
                            q->where);
    if (rc == TL_OK)
        rc = owner_live(q, &live, who, sizeof who);
    if (rc == TL_OK && live)
        rc = tl__store_fail(q->base.st, TL_ELOCKED, "the store (PostgreSQL %s) is owned by %s, "
                            "which is still connected; stop that process (or close that "
                            "store) first, or wait until its lease runs out", q->where, who);
    if (rc == TL_OK)
        rc = take_over(q, &next);
    if (rc == TL_OK)
        rc = exec_simple(q, "COMMIT", "claiming the store");
    if (rc != TL_OK) {
        rollback_quiet(q);
        return rc;
    }
    *epoch = next;
    return TL_OK;
}

static void pg_release(tl__store_be *be, int64_t epoch)
{
    pg *q = (pg *)be;
    pg_params p = {0};
    tl__pg_i64(&p, epoch);
    /* an idle worker waiting in tl_store_listener_wait wakes up */
    if (tl__pg_change(q, "DELETE FROM owner WHERE id = 1 AND (SELECT value FROM meta WHERE key "
                      "= 'epoch') = $1::text", &p, "releasing the store") == 1)
        tl__pg_run(q, "SELECT pg_notify('" TL__PG_CHANNEL "', 'store ' || current_schema())",
                   NULL, "releasing the store", NULL);
}

/* ---- the write transaction ---- */

/* BEGIN, then in the same round trip: the epoch is still ours (its row
 * stays locked until commit, and it is locked before the owner row, as
 * claim does) and the lease moves forward. */
static int begin_fenced(pg *q, int64_t epoch)
{
    char sql[400];
    snprintf(sql, sizeof sql, "BEGIN; UPDATE owner SET lease_until = now() + interval '%lld "
             "milliseconds', backend = pg_backend_pid() WHERE id = 1 AND (SELECT value FROM meta "
             "WHERE key = 'epoch' FOR UPDATE) = '%lld'", (long long)q->lease_ms, (long long)epoch);
    PGresult *r = PQexec(q->conn, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? TL_OK : tl__pg_fail(q, r, "checking ownership");
    bool ours = rc == TL_OK && strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    int64_t cur = 0;
    if (rc == TL_OK && !ours &&
        (rc = tl__pg_int(q, "SELECT value::bigint FROM meta WHERE key = 'epoch'", NULL,
                         "checking ownership", 0, &cur)) == TL_OK)
        rc = tl__store_fail(q->base.st, TL_ELOCKED, "this handle no longer owns the store: "
                            "it was claimed again since (epoch %lld, ours %lld; its lease "
                            "ran out or its owner row was taken over); nothing was written",
                            (long long)cur, (long long)epoch);
    return rc;
}

static int pg_begin(tl__store_be *be, int64_t epoch)
{
    pg *q = (pg *)be;
    int rc = TL_OK;
    if (PQstatus(q->conn) == CONNECTION_BAD) { /* lost since: one new try */
        PQreset(q->conn);
        if (PQstatus(q->conn) == CONNECTION_OK)
            rc = set_up_session(q);
    }
    if (rc == TL_OK)
        rc = epoch > 0 ? begin_fenced(q, epoch) : exec_simple(q, "BEGIN", "starting a transaction");
    if (rc != TL_OK)
        rollback_quiet(q);
    return rc;
}

/* The writes in flight and the COMMIT go in one round trip; a write that
 * failed aborted the transaction, so the COMMIT then rolls back. */
static int pg_commit(tl__store_be *be)
{
    pg *q = (pg *)be;
    int rc = tl__pg_send(q, "COMMIT", NULL, "committing");
    if (rc == TL_OK)
        rc = tl__pg_drain(q);
    if (rc == TL_OK && PQtransactionStatus(q->conn) != PQTRANS_IDLE)
        rc = tl__store_fail(q->base.st, TL_ESTORE, "committing: the transaction is still "
                            "open (PostgreSQL %s)", q->where);
    return rc;
}

static void pg_rollback(tl__store_be *be)
{
    pg *q = (pg *)be;
    rollback_quiet(q);
    tl__pg_tables_forget(q); /* a table created in it is gone again */
}

/* A participant's own SQL inside the checkpoint's transaction. */
static int pg_tx_exec(tl__store_be *be, const char *sql)
{
    return tl__pg_run((pg *)be, sql, NULL, sql, NULL);
}

static void *pg_tx_conn(tl__store_be *be)
{
    pg *q = (pg *)be;
    return tl__pg_drain(q) == TL_OK ? q->conn : NULL; /* out of pipeline mode */
}

const tl__store_ops tl__store_pg_ops = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .max_record = pg_max_record,
    .claim = pg_claim,
    .release = pg_release,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .put_chunk = tl__pg_put_chunk,
    .put_head = tl__pg_put_head,
    .stored_keys = tl__pg_stored_keys,
    .last_id = tl__pg_last_id,
    .prev_id = tl__pg_prev_id,
    .read = tl__pg_read,
    .prune = tl__pg_prune,
    .retire = tl__pg_retire,
    .row_put = tl__pg_row_put,
    .row_del = tl__pg_row_del,
    .row_clear = tl__pg_row_clear,
    .rows_read = tl__pg_rows_read,
    .mail_read = tl__pg_mail_read,
    .mail_put = tl__pg_mail_put,
    .mail_take = tl__pg_mail_take,
    .mail_refuse = tl__pg_mail_refuse,
    .tables_make = tl__pg_tables_make,
    .row_get = tl__pg_row_get,
    .rows_since = tl__pg_rows_since,
    .row_insert = tl__pg_row_insert,
    .row_del_peer = tl__pg_row_del_peer,
    .notify = tl__pg_notify,
    .tx_exec = pg_tx_exec,
    .tx_conn = pg_tx_conn,
};
