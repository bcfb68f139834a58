/*
 * store_sqlite.c -- the SQLite backend of the store interface
 * (store_backend.h): one file in WAL mode, tables in docs/FORMAT.md
 * section 7.  The mailbox's operations are in store_sqlite_mail.c; what
 * the two share, in store_sqlite_int.h.
 *
 * Invariants:
 * - Every write happens inside BEGIN IMMEDIATE ... COMMIT (begin), so
 *   SQLite's write lock serialises writers and a crash at any instant
 *   leaves the last commit whole.  With TL_STORE_NOSYNC the WAL is not
 *   fsynced at commit (synchronous=NORMAL).
 * - The fencing epoch is meta('epoch'): claim increments it inside its
 *   write transaction, and a fenced begin reads it inside its own, so a
 *   write by a process whose claim was superseded is refused before it
 *   writes anything.
 * - Nothing is written to a file before it is identified as ours (or as
 *   empty): a foreign SQLite file, a garbage file, a directory or a FIFO
 *   is refused untouched.  The path is only stat()ed before SQLite opens
 *   it: an open()+close() of our own on the database file would drop the
 *   POSIX locks SQLite holds on it for another connection of this process.
 * - Ownership is flock(LOCK_EX) on path-lock, held from claim to release
 *   and dropped by the kernel when the process dies; the owner row is a
 *   report, never the lock.  Files we create get mode 0600 (0640 with
 *   TL_STORE_GROUP_READ); SQLite gives -wal and -shm the database's mode.
 * - Participant tables are named by the participant's tl__table (fixed
 *   identifiers in the library, never user input); their statements are
 *   prepared once and cached.
 */
#include "store_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define APP_ID 1414288212 /* 0x544C5354 "TLST" */
#define SCHEMA_VERSION 1
/* The WAL is copied into the database (a checkpoint of SQLite's, two
 * fsyncs) once it holds this many pages, 32 MiB, instead of SQLite's
 * 1,000: a commit of a few pages pays for it 8 times less often. */
#define WAL_PAGES 8192
#include "store_sqlite_int.h"

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

/* ---- errors and small helpers ---- */

/* Maps a SQLite failure to our codes: I/O trouble (full, read-only) is
 * TL_EIO, the rest TL_ESTORE. */
int tl__sq_err(sq *q, int rc, const char *what)
{
    int code = TL_ESTORE;
    int prim = rc & 0xff;
    if (prim == SQLITE_FULL || prim == SQLITE_IOERR || prim == SQLITE_READONLY ||
        prim == SQLITE_CANTOPEN)
        code = TL_EIO;
    else if (prim == SQLITE_NOTADB)
        code = TL_ENOTSTORE;
    else if (prim == SQLITE_TOOBIG)
        code = TL_ERANGE;
    return tl__store_fail(q->base.st, code, "%s: %s (SQLite: %s)", what, sqlite3_errstr(rc),
                          q->db ? sqlite3_errmsg(q->db) : "no database");
}

int tl__sq_last_err(sq *q, const char *what)
{
    return tl__sq_err(q, sqlite3_errcode(q->db), what);
}

static int query_int(sq *q, const char *sql, int64_t *out)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(q->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    return rc;
}

int tl__sq_exec(sq *q, const char *sql, const char *what)
{
    int rc = sqlite3_exec(q->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? TL_OK : tl__sq_err(q, rc, what);
}

/* Statement i of the write path, prepared at its first use (NULL if it
 * does not prepare: sqlite3_step(NULL) is SQLITE_MISUSE). */
sqlite3_stmt *tl__sq_fixed(sq *q, int i, const char *sql)
{
    if (!q->fixed[i])
        sqlite3_prepare_v2(q->db, sql, -1, &q->fixed[i], NULL);
    return q->fixed[i];
}

/* Runs a statement that returns no row, then resets it. */
int tl__sq_step_done(sq *q, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? TL_OK : tl__sq_err(q, rc, what);
}

/* Binds n bytes; SQLite takes an int length, so more is TL_ERANGE. */
int tl__sq_bind_bytes(sq *q, sqlite3_stmt *s, int col, const void *p, size_t n)
{
    if (n > INT_MAX)
        return tl__store_fail(q->base.st, TL_ERANGE, "a record of %zu bytes is larger than "
                              "SQLite stores (%d)", n, INT_MAX);
    sqlite3_bind_blob(s, col, n ? p : "", (int)n, SQLITE_STATIC);
    return TL_OK;
}

/* ---- opening and identifying ---- */

static int init_schema(sq *q)
{
    char sql[256];
    /* before the first table: free pages can then be given back bit by bit
     * (retire) instead of only by a VACUUM */
    int rc = tl__sq_exec(q, "PRAGMA auto_vacuum=INCREMENTAL", "creating the store");
    if (rc == TL_OK)
        rc = tl__sq_exec(q, "BEGIN IMMEDIATE", "creating the store");
    if (rc == TL_OK)
        rc = tl__sq_exec(q, schema_sql, "creating the store");
    snprintf(sql, sizeof sql,
             "PRAGMA application_id=%d; PRAGMA user_version=%d;"
             "INSERT OR REPLACE INTO meta VALUES('format', %d), ('lib', '%s'), ('created', %lld);",
             APP_ID, SCHEMA_VERSION, TL_FORMAT_VERSION, TL_VERSION_STRING,
             (long long)time(NULL) * 1000000000LL);
    if (rc == TL_OK)
        rc = tl__sq_exec(q, sql, "creating the store");
    if (rc == TL_OK)
        return tl__sq_exec(q, "COMMIT", "creating the store");
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

enum { FILE_EMPTY, FILE_OURS };

/* FILE_EMPTY (a new or empty database: ours to initialise), FILE_OURS, or
 * an error.  Reads only: nothing is written to a file that is not ours. */
static int check_identity(sq *q, const char *path)
{
    tl_store *st = q->base.st;
    int64_t app = 0, ver = 0, tables = 0;
    int rc = query_int(q, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = query_int(q, "PRAGMA user_version", &ver);
    if (rc == SQLITE_OK)
        rc = query_int(q, "SELECT count(*) FROM sqlite_master", &tables);
    if ((rc & 0xff) == SQLITE_NOTADB)
        return tl__store_fail(st, TL_ENOTSTORE, "%s is not a SQLite database, so not a "
                              "libtasklet store; it was left untouched", path);
    if (rc != SQLITE_OK)
        return tl__sq_err(q, rc, path);
    if (app == 0 && ver == 0 && tables == 0) {
        if (q->flags & TL_STORE_READONLY)
            return tl__store_fail(st, TL_ENOENT, "%s: no libtasklet store here (empty file)", path);
        return FILE_EMPTY;
    }
    if (app != APP_ID)
        return tl__store_fail(st, TL_ENOTSTORE, "%s is a SQLite file of another application "
                              "(application_id %lld), not a libtasklet store; it was left "
                              "untouched", path, (long long)app);
    if (ver > SCHEMA_VERSION)
        return tl__store_fail(st, TL_EFORMAT, "%s has store version %lld, newer than this "
                              "library reads (%d); upgrade libtasklet", path, (long long)ver,
                              SCHEMA_VERSION);
    return FILE_OURS;
}

/* WAL mode, checked: the pragma answers with the mode it is in, which is
 * not WAL where WAL cannot work (some network and in-memory files). */
static int enable_wal(sq *q, const char *path)
{
    sqlite3_stmt *s = NULL;
    char mode[16] = "";
    int rc = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *m = sqlite3_column_text(s, 0);
        snprintf(mode, sizeof mode, "%s", m ? (const char *)m : "");
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK)
        return tl__sq_err(q, rc, "enabling WAL");
    if (strcmp(mode, "wal") != 0)
        return tl__store_fail(q->base.st, TL_EIO, "%s: SQLite cannot use WAL mode there (it "
                              "stays in mode '%s'); a store needs a local file system", path,
                              mode);
    return TL_OK;
}

static int configure(sq *q, const char *path)
{
    if (q->flags & TL_STORE_READONLY)
        return TL_OK;
    int rc = enable_wal(q, path);
    if (rc == TL_OK)
        rc = tl__sq_exec(q, q->flags & TL_STORE_NOSYNC ? "PRAGMA synchronous=NORMAL"
                                                : "PRAGMA synchronous=FULL", "setting durability");
    if (rc == TL_OK)
        sqlite3_wal_autocheckpoint(q->db, WAL_PAGES);
    return rc;
}

/* Identifies, then (ours or empty, and writable) configures WAL and
 * creates or completes the schema. */
static int open_schema(sq *q, const char *path)
{
    int kind = check_identity(q, path);
    if (kind < 0)
        return kind;
    int rc = configure(q, path);
    if (rc != TL_OK)
        return rc;
    if (kind == FILE_EMPTY)
        return init_schema(q);
    if (!(q->flags & TL_STORE_READONLY) &&
        sqlite3_exec(q->db, MIGRATION_SQL, NULL, NULL, NULL) != SQLITE_OK)
        return tl__sq_last_err(q, path);
    return TL_OK;
}

/* What is at path, before SQLite sees it (stat only; see the head
 * comment).  A missing file is created here, empty, with our mode. */
static int check_path(sq *q, const char *path)
{
    tl_store *st = q->base.st;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ELOOP)
            return tl__store_fail(st, TL_ENOTSTORE, "%s: too many levels of symbolic links "
                                  "(a loop?)", path);
        if (errno == EACCES)
            return tl__store_fail(st, TL_EPERM, "%s: permission denied (a directory on the "
                                  "way cannot be searched)", path);
        if (errno != ENOENT)
            return tl__store_fail(st, TL_EIO, "%s: %s", path, strerror(errno));
        if (q->flags & TL_STORE_READONLY)
            return tl__store_fail(st, TL_ENOENT, "%s: no such file", path);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, q->mode);
        if (fd < 0 && errno != EEXIST)
            return tl__store_fail(st, errno == EACCES ? TL_EPERM : TL_EIO,
                                  "%s: cannot create the store: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd); /* new and empty: no SQLite lock on it to lose */
        return TL_OK;
    }
    if (S_ISDIR(sb.st_mode))
        return tl__store_fail(st, TL_ENOTSTORE, "%s is a directory, not a store file", path);
    if (!S_ISREG(sb.st_mode))
        return tl__store_fail(st, TL_ENOTSTORE, "%s is not a regular file (a FIFO, socket or "
                              "device); a store is a regular SQLite file", path);
    if (sb.st_size > 0 && sb.st_size < 512) /* SQLite would read it as empty */
        return tl__store_fail(st, TL_ENOTSTORE, "%s (%lld bytes) is not a SQLite database, so "
                              "not a libtasklet store; it was left untouched", path,
                              (long long)sb.st_size);
    if (access(path, (q->flags & TL_STORE_READONLY) ? R_OK : R_OK | W_OK) != 0) {
        if (errno == EROFS)
            return tl__store_fail(st, TL_EIO, "%s: the file system is read-only (open the "
                                  "store with TL_STORE_READONLY to read it)", path);
        return tl__store_fail(st, TL_EPERM, "%s: permission denied (mode %03o, owner uid %u)",
                              path, (unsigned)(sb.st_mode & 0777), (unsigned)sb.st_uid);
    }
    return TL_OK;
}

static int prepare_writes(sq *q, const char *path)
{
    if (q->flags & TL_STORE_READONLY)
        return TL_OK;
    if (sqlite3_prepare_v2(q->db, "INSERT INTO chunks(kind, key, ckpt, data) VALUES(?,?,?,?)", -1,
                           &q->ins_chunk, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db, "SELECT value FROM meta WHERE key = 'epoch'", -1, &q->get_epoch,
                           NULL) != SQLITE_OK)
        return tl__sq_last_err(q, path);
    int64_t av = 0;
    if (query_int(q, "PRAGMA auto_vacuum", &av) != SQLITE_OK)
        return tl__sq_last_err(q, path);
    q->incremental = av == 2;
    return TL_OK;
}

static void sq_close(tl__store_be *be)
{
    sq *q = (sq *)be;
    if (!q)
        return;
    if (q->db && !sqlite3_get_autocommit(q->db))
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < NCACHE; i++)
        sqlite3_finalize(q->cache[i].s);
    for (int i = 0; i < NFIXED; i++)
        sqlite3_finalize(q->fixed[i]);
    sqlite3_finalize(q->ins_chunk);
    sqlite3_finalize(q->get_epoch);
    sqlite3_close(q->db);
    tl__sq_keys_free(q);
    if (q->lockfd >= 0)
        close(q->lockfd);
    free(q->lockpath);
    free(q);
}

static int sq_open(tl_store *st, const char *path, int flags, tl__store_be **out)
{
    sq *q = calloc(1, sizeof *q);
    if (!q)
        return tl__store_fail(st, TL_ENOMEM, "tl_store_open: out of memory");
    q->base.ops = &tl__store_sqlite_ops;
    q->base.st = st;
    q->flags = flags;
    q->lockfd = -1;
    q->mode = flags & TL_STORE_GROUP_READ ? 0640 : 0600;
    q->lockpath = malloc(strlen(path) + 6);
    if (!q->lockpath) {
        free(q);
        return tl__store_fail(st, TL_ENOMEM, "tl_store_open: out of memory");
    }
    sprintf(q->lockpath, "%s-lock", path);
    int oflags = flags & TL_STORE_READONLY ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
    int rc = check_path(q, path);
    if (rc == TL_OK) {
        rc = sqlite3_open_v2(path, &q->db, oflags | SQLITE_OPEN_NOMUTEX, tl__sqlite_vfs());
        rc = rc == SQLITE_OK ? TL_OK : tl__sq_err(q, rc, path);
    }
    if (rc == TL_OK) {
        sqlite3_busy_timeout(q->db, 5000);
        rc = open_schema(q, path);
    }
    if (rc == TL_OK)
        rc = prepare_writes(q, path);
    if (rc != TL_OK) {
        sq_close(&q->base);
        return rc;
    }
    *out = &q->base;
    return TL_OK;
}

static size_t sq_max_record(tl__store_be *be)
{
    int lim = sqlite3_limit(((sq *)be)->db, SQLITE_LIMIT_LENGTH, -1);
    return lim > 0 ? (size_t)lim : (size_t)INT_MAX;
}

/* ---- ownership ---- */

static void hostname(char *buf, size_t n)
{
    if (gethostname(buf, n) != 0)
        snprintf(buf, n, "localhost");
    buf[n - 1] = '\0';
}

/* "pid N on host H" of the owner row, for messages. */
static void owner_row(sq *q, char *buf, size_t n)
{
    sqlite3_stmt *s = NULL;
    snprintf(buf, n, "an unknown process (no owner row)");
    if (sqlite3_prepare_v2(q->db, "SELECT pid, host FROM owner WHERE id = 1", -1, &s, NULL) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        const char *host = (const char *)sqlite3_column_text(s, 1);
        snprintf(buf, n, "pid %lld on host %s", (long long)sqlite3_column_int64(s, 0),
                 host ? host : "?");
    }
    sqlite3_finalize(s);
}

/* Takes the OS lock that makes us the owner: flock on path-lock, which
 * conflicts with every other open of it (another process, or another
 * tl_store of this one) and goes away with the process. */
static int take_lock(sq *q)
{
    int fd = open(q->lockpath, O_RDWR | O_CREAT | O_CLOEXEC, q->mode);
    if (fd < 0)
        return tl__store_fail(q->base.st, errno == EACCES ? TL_EPERM : TL_EIO,
                              "%s: cannot open the owner lock: %s", q->lockpath, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char who[300];
        close(fd);
        if (err != EWOULDBLOCK)
            return tl__store_fail(q->base.st, TL_EIO, "%s: cannot lock: %s", q->lockpath,
                                  strerror(err));
        owner_row(q, who, sizeof who);
        return tl__store_fail(q->base.st, TL_ELOCKED, "the store is owned by %s, which holds "
                              "its lock %s; stop that process (or close that store) first",
                              who, q->lockpath);
    }
    q->lockfd = fd;
    return TL_OK;
}

static void drop_lock(sq *q)
{
    if (q->lockfd >= 0)
        close(q->lockfd); /* releases the flock */
    q->lockfd = -1;
}

/* Chunk rows newer than every checkpoint belong to no checkpoint (a hand
 * edit, or a checkpoint row deleted by hand): no checkpoint can read them,
 * and they would make the next checkpoint of that id fail on the primary
 * key.  The owner removes them when it claims the store. */
static int drop_orphan_chunks(sq *q)
{
    return tl__sq_exec(q, "DELETE FROM chunks WHERE ckpt > (SELECT coalesce(max(id), 0) FROM "
                "checkpoints)", "removing chunk rows of no checkpoint");
}

static int sq_claim(tl__store_be *be, int64_t *epoch)
{
    sq *q = (sq *)be;
    char host[256], sql[512];
    int64_t old = 0;
    hostname(host, sizeof host);
    int rc = q->lockfd >= 0 ? TL_OK : take_lock(q);
    if (rc == TL_OK)
        rc = tl__sq_exec(q, "BEGIN IMMEDIATE", "claiming the store");
    if (rc != TL_OK) {
        drop_lock(q);
        return rc;
    }
    if (query_int(q, "SELECT coalesce((SELECT value FROM meta WHERE key = 'epoch'), 0)", &old) !=
        SQLITE_OK)
        rc = tl__sq_last_err(q, "claiming the store");
    if (rc == TL_OK) {
        char *h = sqlite3_mprintf("%q", host);
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO owner VALUES(1, %lld, '%s', %lld);"
                 "INSERT OR REPLACE INTO meta VALUES('epoch', %lld)", (long long)getpid(),
                 h ? h : "?", (long long)time(NULL), (long long)old + 1);
        sqlite3_free(h);
        rc = tl__sq_exec(q, sql, "claiming the store");
    }
    if (rc == TL_OK)
        rc = drop_orphan_chunks(q);
    if (rc == TL_OK)
        rc = tl__sq_exec(q, "COMMIT", "claiming the store");
    if (rc != TL_OK) {
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
        drop_lock(q);
        return rc;
    }
    *epoch = old + 1;
    tl__sq_keys_forget(q, 1); /* what others wrote meanwhile is read again */
    return TL_OK;
}

static void sq_release(tl__store_be *be, int64_t epoch)
{
    char sql[160];
    snprintf(sql, sizeof sql, "DELETE FROM owner WHERE id = 1 AND (SELECT value FROM meta "
             "WHERE key = 'epoch') = %lld", (long long)epoch);
    sqlite3_exec(((sq *)be)->db, sql, NULL, NULL, NULL);
    drop_lock((sq *)be);
    tl__sq_keys_forget((sq *)be, 1);
}

/* ---- the write transaction ---- */

static int check_epoch(sq *q, int64_t epoch)
{
    int64_t cur = 0;
    int rc = sqlite3_step(q->get_epoch);
    if (rc == SQLITE_ROW)
        cur = sqlite3_column_int64(q->get_epoch, 0);
    sqlite3_reset(q->get_epoch);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return tl__sq_err(q, rc, "checking ownership");
    if (cur != epoch)
        return tl__store_fail(q->base.st, TL_ELOCKED, "this handle no longer owns the store: "
                              "it was claimed again since (epoch %lld, ours %lld); nothing was "
                              "written", (long long)cur, (long long)epoch);
    return TL_OK;
}

static int sq_begin(tl__store_be *be, int64_t epoch)
{
    sq *q = (sq *)be;
    tl__sq_keys_forget(q, 0);
    int rc = tl__sq_step_done(q, tl__sq_fixed(q, S_BEGIN, "BEGIN IMMEDIATE"), "starting a transaction");
    if (rc == TL_OK && epoch > 0 && (rc = check_epoch(q, epoch)) != TL_OK)
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* The write transaction begin opened is still open: an error SQLite
 * answers with a rollback (or SQL of a participant's own) may have ended
 * it, and what follows must not run in autocommit (retention would
 * delete the checkpoints before one that never commits). */
int tl__sq_in_tx(sq *q, const char *what)
{
    if (!sqlite3_get_autocommit(q->db))
        return TL_OK;
    return tl__store_fail(q->base.st, TL_ESTORE, "%s: the checkpoint's transaction was ended "
                          "before its commit (rolled back); nothing more is written", what);
}

static int sq_commit(tl__store_be *be)
{
    sq *q = (sq *)be;
    int rc = tl__sq_in_tx(q, "committing");
    if (rc == TL_OK)
        rc = tl__sq_step_done(q, tl__sq_fixed(q, S_COMMIT, "COMMIT"), "committing");
    if (rc == TL_OK)
        tl__sq_keys_committed(q); /* its chunks are a checkpoint's now */
    return rc;
}

/* A passive checkpoint: copies the WAL's pages into the main file as far
 * as no reader holds them back, without waiting for one. */
static void sq_settle(tl__store_be *be)
{
    sq *q = (sq *)be;
    sqlite3_wal_checkpoint_v2(q->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

static void sq_rollback(tl__store_be *be)
{
    sq *q = (sq *)be;
    if (!sqlite3_get_autocommit(q->db))
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    tl__sq_keys_forget(q, 0);
    /* a participant's table created in this transaction is gone again */
    for (int i = 0; i < NCACHE; i++) {
        sqlite3_finalize(q->cache[i].s);
        q->cache[i].s = NULL;
    }
}

/* ---- checkpoint rows ---- */

static int sq_put_chunk(tl__store_be *be, int kind, uint64_t key, int64_t ckpt, const void *p,
                        size_t n)
{
    sq *q = (sq *)be;
    sqlite3_stmt *s = q->ins_chunk;
    sqlite3_bind_int(s, 1, kind);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)key);
    sqlite3_bind_int64(s, 3, ckpt);
    int rc = tl__sq_bind_bytes(q, s, 4, p, n);
    if (rc == TL_OK)
        rc = tl__sq_step_done(q, s, "writing a chunk");
    if (rc == TL_OK)
        tl__sq_keys_note(q, kind, key, ckpt); /* for its retirement */
    return rc;
}

static int sq_put_head(tl__store_be *be, const tl__ckpt_row *r)
{
    sq *q = (sq *)be;
    sqlite3_stmt *s = tl__sq_fixed(q, S_HEAD, "INSERT INTO checkpoints VALUES(?,?,?,?,?,?)");
    if (!s)
        return tl__sq_last_err(q, "writing a checkpoint");
    q->writing = r->id;
    sqlite3_bind_int64(s, 1, r->id);
    sqlite3_bind_int64(s, 2, r->time);
    sqlite3_bind_int64(s, 3, r->tasklets);
    sqlite3_bind_int64(s, 4, r->chans);
    sqlite3_bind_int64(s, 5, r->bytes);
    int rc = tl__sq_bind_bytes(q, s, 6, r->head, r->len);
    return rc == TL_OK ? tl__sq_step_done(q, s, "writing a checkpoint") : rc;
}

static int sq_stored_keys(tl__store_be *be, int (*fn)(void *ud, int kind, uint64_t key), void *ud)
{
    sq *q = (sq *)be;
    sqlite3_stmt *s;
    int rc, out = TL_OK;
    if (sqlite3_prepare_v2(q->db, "SELECT DISTINCT kind, key FROM chunks", -1, &s, NULL) !=
        SQLITE_OK)
        return tl__sq_last_err(q, "listing chunks");
    while (out == TL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        out = fn(ud, sqlite3_column_int(s, 0), (uint64_t)sqlite3_column_int64(s, 1));
    if (out == TL_OK && rc != SQLITE_DONE)
        out = tl__sq_err(q, rc, "listing chunks");
    sqlite3_finalize(s);
    return out;
}

/* ---- restore ---- */

static int sq_last_id(tl__store_be *be, int64_t *id)
{
    sq *q = (sq *)be;
    int rc = query_int(q, "SELECT coalesce(max(id), 0) FROM checkpoints", id);
    return rc == SQLITE_OK ? TL_OK : tl__sq_err(q, rc, "reading checkpoints");
}

static int read_head(sq *q, int64_t at, int64_t *ckpt, tl__raw_fn fn, void *ud)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(q->db, "SELECT id, head FROM checkpoints WHERE ?1 = 0 OR id = ?1"
                                " ORDER BY id DESC LIMIT 1", -1, &s, NULL);
    if (rc != SQLITE_OK)
        return tl__sq_err(q, rc, "reading checkpoints");
    sqlite3_bind_int64(s, 1, at);
    rc = sqlite3_step(s);
    int out;
    if (rc == SQLITE_ROW) {
        *ckpt = sqlite3_column_int64(s, 0);
        tl__raw rec = {0, 0, sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1)};
        out = fn(ud, &rec);
    } else if (rc == SQLITE_DONE && at) {
        out = tl__store_fail(q->base.st, TL_ENOENT, "the store has no checkpoint %lld",
                             (long long)at);
    } else {
        out = rc == SQLITE_DONE ? tl__store_fail(q->base.st, TL_ENOENT,
                                                 "the store has no checkpoint yet")
                                : tl__sq_err(q, rc, "reading checkpoints");
    }
    sqlite3_finalize(s);
    return out;
}

static int read_chunks(sq *q, int64_t ckpt, tl__raw_fn fn, void *ud)
{
    sqlite3_stmt *s;
    /* the newest row per chunk at or below ckpt, found on the primary key
     * (kind, key, ckpt) without reading the superseded rows' blobs */
    int rc = sqlite3_prepare_v2(q->db,
        "SELECT c.kind, c.key, c.data FROM (SELECT kind, key, max(ckpt) AS m FROM chunks"
        " WHERE ckpt <= ?1 GROUP BY kind, key) l JOIN chunks c"
        " ON c.kind = l.kind AND c.key = l.key AND c.ckpt = l.m ORDER BY c.kind, c.key",
        -1, &s, NULL);
    if (rc != SQLITE_OK)
        return tl__sq_err(q, rc, "reading chunks");
    sqlite3_bind_int64(s, 1, ckpt);
    int out = TL_OK;
    while (out == TL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        tl__raw rec = {sqlite3_column_int(s, 0), (uint64_t)sqlite3_column_int64(s, 1),
                       sqlite3_column_blob(s, 2), (size_t)sqlite3_column_bytes(s, 2)};
        out = fn(ud, &rec);
    }
    sqlite3_finalize(s);
    if (out == TL_OK && rc != SQLITE_DONE)
        out = tl__sq_err(q, rc, "reading chunks");
    return out;
}

static int sq_prev_id(tl__store_be *be, int64_t below, int64_t *id)
{
    sq *q = (sq *)be;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(q->db, "SELECT coalesce(max(id), 0) FROM checkpoints WHERE id < ?1",
                           -1, &s, NULL) != SQLITE_OK)
        return tl__sq_last_err(q, "reading checkpoints");
    sqlite3_bind_int64(s, 1, below);
    int rc = sqlite3_step(s);
    *id = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? TL_OK : tl__sq_err(q, rc, "reading checkpoints");
}

static int sq_read(tl__store_be *be, int64_t at, int64_t *ckpt, tl__raw_fn fn, void *ud)
{
    sq *q = (sq *)be;
    int rc = tl__sq_exec(q, "BEGIN", "restoring"); /* one consistent view */
    if (rc == TL_OK)
        rc = read_head(q, at, ckpt, fn, ud);
    if (rc == TL_OK)
        rc = read_chunks(q, *ckpt, fn, ud);
    sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL);
    return rc;
}

/* ---- participants' tables ---- */

static char *row_sql(const tl__table *t, int op)
{
    switch (op) {
    case ROW_PUT:
        return sqlite3_mprintf("INSERT OR REPLACE INTO %s(%s%s%s%s%s%s%s) VALUES(?1%s%s%s)",
                               t->name, t->key, t->peer ? ", " : "", t->peer ? t->peer : "",
                               t->time ? ", " : "", t->time ? t->time : "", t->data ? ", " : "",
                               t->data ? t->data : "", t->peer ? ", ?2" : "",
                               t->time ? ", ?3" : "", t->data ? ", ?4" : "");
    case ROW_DEL:
        return sqlite3_mprintf("DELETE FROM %s WHERE %s = ?1", t->name, t->key);
    case ROW_CLEAR:
        return sqlite3_mprintf("DELETE FROM %s", t->name);
    default:
        return sqlite3_mprintf("SELECT %s, %s, %s, %s FROM %s ORDER BY rowid", t->key,
                               t->peer ? t->peer : "''", t->time ? t->time : "0",
                               t->data ? t->data : "x''", t->name);
    }
}

static bool table_exists(sq *q, const char *name)
{
    sqlite3_stmt *s;
    bool yes = false;
    if (sqlite3_prepare_v2(q->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                           "name = ?", -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(s) == SQLITE_ROW;
    }
    sqlite3_finalize(s);
    return yes;
}

/* A participant's table that is not there yet is created (in the
 * checkpoint's transaction) with the columns it declares. */
static int create_table(sq *q, const tl__table *t)
{
    char *sql = sqlite3_mprintf(
        "CREATE TABLE IF NOT EXISTS %s(%s TEXT PRIMARY KEY%s%s%s%s%s%s%s%s%s)", t->name, t->key,
        t->peer ? ", " : "", t->peer ? t->peer : "", t->peer ? " TEXT NOT NULL" : "",
        t->time ? ", " : "", t->time ? t->time : "", t->time ? " INTEGER NOT NULL" : "",
        t->data ? ", " : "", t->data ? t->data : "", t->data ? " BLOB NOT NULL" : "");
    int rc = sql ? tl__sq_exec(q, sql, t->name) : tl__store_fail(q->base.st, TL_ENOMEM, "out of memory");
    sqlite3_free(sql);
    return rc;
}

/* The cached statement for op on t (prepared on first use); NULL with
 * *missing set when a table to read is not there (it has no rows). */
static sqlite3_stmt *row_stmt(sq *q, const tl__table *t, int op, bool *missing)
{
    int free_slot = -1;
    *missing = false;
    for (int i = 0; i < NCACHE; i++) {
        if (q->cache[i].s && q->cache[i].t == t && q->cache[i].op == op)
            return q->cache[i].s;
        if (!q->cache[i].s && free_slot < 0)
            free_slot = i;
    }
    if (!table_exists(q, t->name) && (op == ROW_READ || create_table(q, t) != TL_OK)) {
        *missing = op == ROW_READ;
        return NULL;
    }
    char *sql = row_sql(t, op);
    sqlite3_stmt *s = NULL;
    int rc = sql ? sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL)
                 : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        tl__sq_err(q, rc, t->name);
        return NULL;
    }
    if (free_slot >= 0)
        q->cache[free_slot].t = t, q->cache[free_slot].op = op, q->cache[free_slot].s = s;
    return s;
}

/* A statement row_stmt could not cache is finalized after use. */
static int row_done(sq *q, sqlite3_stmt *s, int rc)
{
    for (int i = 0; i < NCACHE; i++)
        if (q->cache[i].s == s)
            return rc;
    sqlite3_finalize(s);
    return rc;
}

static int sq_row_put(tl__store_be *be, const tl__table *t, const tl__row *r)
{
    sq *q = (sq *)be;
    bool missing;
    if (tl__sq_in_tx(q, t->name) != TL_OK)
        return TL_ESTORE;
    sqlite3_stmt *s = row_stmt(q, t, ROW_PUT, &missing);
    if (!s)
        return tl_store_errcode(q->base.st);
    int rc = TL_OK;
    sqlite3_bind_text(s, 1, r->key, -1, SQLITE_STATIC);
    if (t->peer)
        sqlite3_bind_text(s, 2, r->peer ? r->peer : "", -1, SQLITE_STATIC);
    if (t->time)
        sqlite3_bind_int64(s, 3, r->time);
    if (t->data)
        rc = tl__sq_bind_bytes(q, s, 4, r->data, r->len);
    if (rc == TL_OK)
        rc = tl__sq_step_done(q, s, t->name);
    else
        sqlite3_clear_bindings(s);
    return row_done(q, s, rc);
}

static int sq_row_del(tl__store_be *be, const tl__table *t, const char *key)
{
    sq *q = (sq *)be;
    bool missing;
    if (tl__sq_in_tx(q, t->name) != TL_OK)
        return TL_ESTORE;
    sqlite3_stmt *s = row_stmt(q, t, key ? ROW_DEL : ROW_CLEAR, &missing);
    if (!s)
        return tl_store_errcode(q->base.st);
    if (key)
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    return row_done(q, s, tl__sq_step_done(q, s, t->name));
}

static int sq_row_clear(tl__store_be *be, const tl__table *t) { return sq_row_del(be, t, NULL); }

static int sq_rows_read(tl__store_be *be, const tl__table *t, tl__row_fn fn, void *ud)
{
    sq *q = (sq *)be;
    bool missing;
    sqlite3_stmt *s = row_stmt(q, t, ROW_READ, &missing);
    int rc, out = TL_OK;
    if (!s)
        return missing ? TL_OK : tl_store_errcode(q->base.st);
    while (out == TL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        tl__row r = {(const char *)sqlite3_column_text(s, 0),
                     (const char *)sqlite3_column_text(s, 1), sqlite3_column_int64(s, 2),
                     sqlite3_column_blob(s, 3), (size_t)sqlite3_column_bytes(s, 3)};
        if (!r.key)
            r.key = "";
        out = fn(ud, &r);
    }
    if (out == TL_OK && rc != SQLITE_DONE)
        out = tl__sq_err(q, rc, t->name);
    sqlite3_reset(s);
    return row_done(q, s, out);
}

const tl__store_ops tl__store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .max_record = sq_max_record,
    .claim = sq_claim,
    .release = sq_release,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .put_chunk = sq_put_chunk,
    .put_head = sq_put_head,
    .stored_keys = sq_stored_keys,
    .last_id = sq_last_id,
    .prev_id = sq_prev_id,
    .read = sq_read,
    .prune = tl__sq_prune,
    .retire = tl__sq_retire,
    .settle = sq_settle,
    .row_put = sq_row_put,
    .row_del = sq_row_del,
    .row_clear = sq_row_clear,
    .rows_read = sq_rows_read,
    .mail_read = tl__sq_mail_read,
    .mail_put = tl__sq_mail_put,
    .mail_take = tl__sq_mail_take,
    .mail_refuse = tl__sq_mail_refuse,
};

void *tl__store_sqlite_db(tl__store_be *be)
{
    return be && be->ops == &tl__store_sqlite_ops ? ((sq *)be)->db : NULL;
}
