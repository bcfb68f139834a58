/*
 * store.c -- the SQLite side of FORMAT.md section 7: opening a store and
 * proving it is one (application_id), reading checkpoint rows, and
 * selecting the chunk rows a checkpoint consists of (for every (kind,
 * key) the row with the largest ckpt <= N, unless it is a tombstone).
 *
 * Invariants: a blob is decoded -- and so copied -- before the next
 * sqlite3_step; read-only commands open with SQLITE_OPEN_READONLY and read
 * inside one transaction, so a process checkpointing or pruning meanwhile
 * cannot change what they see.  Every connection has a busy timeout.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SELECT_CHUNKS                                                         \
    "SELECT c.kind, c.key, c.ckpt, c.data FROM chunks c"                      \
    " WHERE c.ckpt = (SELECT max(ckpt) FROM chunks d"                         \
    "                  WHERE d.kind = c.kind AND d.key = c.key AND d.ckpt <= ?1)" \
    " ORDER BY c.kind, c.key"

int cli_sql_fail(cli_store *st, cli_err *e, const char *what)
{
    return cli_fail(e, "%s: %s", what, sqlite3_errmsg(st->db));
}

/* ---- opening ---- */

static int pragma_int(cli_store *st, const char *name, int64_t *out)
{
    char sql[64];
    sqlite3_stmt *stmt = NULL;
    snprintf(sql, sizeof sql, "PRAGMA %s", name);
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(stmt, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(stmt);
    return rc;
}

static int open_fail(cli_store *st, int code, const char *fmt, const char *detail)
{
    cli_complain(fmt, st->path, detail);
    cli_store_close(st);
    return code;
}

static int store_identify(cli_store *st)
{
    int64_t app = 0;
    int rc = pragma_int(st, "application_id", &app);
    if (rc == SQLITE_NOTADB)
        return open_fail(st, CLI_EXIT_USAGE, "%s: not a SQLite database%s", "");
    if (rc == SQLITE_CANTOPEN)
        return open_fail(st, CLI_EXIT_USAGE, "%s: cannot open: %s", sqlite3_errmsg(st->db));
    if (rc != SQLITE_OK)
        return open_fail(st, CLI_EXIT_FAIL, "%s: cannot read the database: %s",
                         sqlite3_errmsg(st->db));
    if (app != CLI_APP_ID) {
        char detail[128];
        snprintf(detail, sizeof detail, "%" PRId64 " (0x%08" PRIx64 ")", app, (uint64_t)app & 0xffffffffu);
        return open_fail(st, CLI_EXIT_USAGE,
                         "%s: not a libtasklet store: its application_id is %s, a store's is "
                         "1414288212 (0x544c5354, \"TLST\")", detail);
    }
    rc = pragma_int(st, "user_version", &st->user_version);
    if (rc != SQLITE_OK)
        return open_fail(st, CLI_EXIT_FAIL, "%s: cannot read the database: %s",
                         sqlite3_errmsg(st->db));
    return CLI_EXIT_OK;
}

/* What is at path, before SQLite opens it: SQLite would block for ever
 * on a FIFO, and reports a directory, a symlink loop or an unreadable file
 * as one vague error.  CLI_EXIT_OK when it is a regular file we can read
 * (and write, if writable). */
int cli_check_file(const char *path, bool writable)
{
    struct stat sb;
    if (!strncmp(path, "postgresql://", 13) || !strncmp(path, "postgres://", 11)) {
        cli_complain("a postgresql:// location: this command works on SQLite store files "
                     "only (on PostgreSQL the tool reads, posts and awaits: ls, show, dump, "
                     "verify, checkpoints, backup, wf ls, wf show, send, send-chan, cancel, "
                     "result, prune, rollback; docs/CLI.md)");
        return CLI_EXIT_USAGE;
    }
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            cli_complain("%s: cannot open: no such file", path);
        else if (errno == ELOOP)
            cli_complain("%s: cannot open: too many levels of symbolic links (a loop?)", path);
        else
            cli_complain("%s: cannot open: %s", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    if (S_ISDIR(sb.st_mode)) {
        cli_complain("%s: cannot open: it is a directory, not a store file", path);
        return CLI_EXIT_USAGE;
    }
    if (!S_ISREG(sb.st_mode)) {
        cli_complain("%s: cannot open: not a regular file (a FIFO, socket or device); "
                     "a store is a regular SQLite file", path);
        return CLI_EXIT_USAGE;
    }
    int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        cli_complain("%s: cannot open%s: %s", path, writable ? " for writing" : "",
                     strerror(errno));
        return CLI_EXIT_USAGE;
    }
    close(fd);
    return CLI_EXIT_OK;
}

int cli_store_open(cli_store *st, const char *path, bool writable)
{
    int flags = writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY;
    memset(st, 0, sizeof *st);
    st->path = path;
    int rc = cli_check_file(path, writable);
    if (rc != CLI_EXIT_OK)
        return rc;
    rc = sqlite3_open_v2(path, &st->db, flags, NULL);
    if (rc != SQLITE_OK)
        return open_fail(st, CLI_EXIT_USAGE, "%s: cannot open: %s",
                         st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    sqlite3_busy_timeout(st->db, CLI_BUSY_MS);
    rc = store_identify(st);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (!writable && sqlite3_exec(st->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return open_fail(st, CLI_EXIT_FAIL, "%s: cannot start a read transaction: %s",
                         sqlite3_errmsg(st->db));
    return CLI_EXIT_OK;
}

void cli_store_close(cli_store *st)
{
    if (st->db && !sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close_v2(st->db);
    st->db = NULL;
}

int cli_store_check_version(cli_store *st, cli_err *e)
{
    e->loc = cli_loc_named("pragma", "user_version");
    if (st->user_version == CLI_STORE_VERSION)
        return 0;
    if (st->user_version > CLI_STORE_VERSION)
        return cli_fail(e, "store schema version %" PRId64 " is newer than this tool reads (%d)",
                        st->user_version, CLI_STORE_VERSION);
    return cli_fail(e, "store schema version is %" PRId64 ", not %d", st->user_version,
                    CLI_STORE_VERSION);
}

/* ---- checkpoint rows ---- */

int cli_latest_ckpt(cli_store *st, int64_t *id, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int found = -1;
    e->loc = cli_loc_named("checkpoints", NULL);
    if (sqlite3_prepare_v2(st->db, "SELECT max(id) FROM checkpoints", -1, &stmt, NULL)
            != SQLITE_OK
        || sqlite3_step(stmt) != SQLITE_ROW) {
        cli_sql_fail(st, e, "cannot read checkpoints");
    } else {
        found = sqlite3_column_type(stmt, 0) != SQLITE_NULL;
        *id = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return found;
}

static int col_int(sqlite3_stmt *stmt, int col, int64_t *out, cli_err *e)
{
    if (sqlite3_column_type(stmt, col) != SQLITE_INTEGER)
        return cli_fail(e, "column %s is not an integer", sqlite3_column_name(stmt, col));
    *out = sqlite3_column_int64(stmt, col);
    return 0;
}

static int ckpt_columns(sqlite3_stmt *stmt, cli_ckpt *ck, cli_doc *head, cli_err *e)
{
    if (col_int(stmt, 0, &ck->id, e) < 0 || col_int(stmt, 1, &ck->time, e) < 0
        || col_int(stmt, 2, &ck->tasklets, e) < 0 || col_int(stmt, 3, &ck->channels, e) < 0
        || col_int(stmt, 4, &ck->bytes, e) < 0)
        return -1;
    if (!head)
        return 0;
    if (sqlite3_column_type(stmt, 5) != SQLITE_BLOB)
        return cli_fail(e, "column head is not a BLOB");
    return cli_record_decode(sqlite3_column_blob(stmt, 5),
                             (size_t)sqlite3_column_bytes(stmt, 5), head, e);
}

/* 0 and the row (with the head record decoded into head, unless NULL),
 * 1 when there is no such checkpoint, -1 on error. */
static int read_ckpt(cli_store *st, int64_t id, cli_ckpt *ck, cli_doc *head, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int rc = -1;
    e->loc = cli_loc_ckpt(id);
    if (sqlite3_prepare_v2(st->db, "SELECT id, time, tasklets, channels, bytes, head"
                           " FROM checkpoints WHERE id = ?1", -1, &stmt, NULL) != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return cli_sql_fail(st, e, "cannot read checkpoints");
    }
    sqlite3_bind_int64(stmt, 1, id);
    int step = sqlite3_step(stmt);
    if (step == SQLITE_ROW)
        rc = ckpt_columns(stmt, ck, head, e);
    else if (step == SQLITE_DONE)
        rc = 1;
    else
        cli_sql_fail(st, e, "cannot read checkpoints");
    sqlite3_finalize(stmt);
    return rc;
}

int cli_ckpt_row(cli_store *st, int64_t id, cli_ckpt *ck, cli_err *e)
{
    return read_ckpt(st, id, ck, NULL, e);
}

/* ---- chunks ---- */

int cli_chunk_decode(cli_chunk *c, const void *blob, size_t n, cli_err *e)
{
    memset(&c->t, 0, sizeof c->t);
    memset(&c->c, 0, sizeof c->c);
    e->loc = cli_loc_chunk(c->kind, c->key, c->ckpt);
    if (cli_record_decode(blob, n, &c->doc, e) < 0)
        return -1;
    int rc = 1;
    if (c->key < 0)
        rc = cli_fail(e, "negative chunk key");
    else if (cli_doc_is_tombstone(&c->doc))
        rc = 1;
    else if (c->kind > CLI_KIND_HOT_CHANS || c->kind < CLI_KIND_TASKLETS)
        rc = cli_fail(e, "unknown chunk kind %" PRId64 " (1: tasklets, 2: channels, 3 and 4: "
                      "their hot records)", c->kind);
    else if (cli_kind_base(c->kind) == CLI_KIND_TASKLETS)
        rc = cli_decode_tchunk(&c->doc, c->key, &c->t, e);
    else
        rc = cli_decode_cchunk(&c->doc, c->key, &c->c, e);
    if (rc != 0)
        cli_doc_free(&c->doc);
    return rc;
}

/* Reads (kind, key, ckpt, data) at columns 0-3 and decodes the row. */
static int chunk_row(sqlite3_stmt *stmt, cli_chunk *c, cli_err *e)
{
    memset(c, 0, sizeof *c);
    c->kind = c->key = c->ckpt = -1;
    e->loc = cli_loc_named("chunks", NULL);
    if (col_int(stmt, 0, &c->kind, e) < 0 || col_int(stmt, 1, &c->key, e) < 0
        || col_int(stmt, 2, &c->ckpt, e) < 0)
        return -1;
    e->loc = cli_loc_chunk(c->kind, c->key, c->ckpt);
    if (sqlite3_column_type(stmt, 3) != SQLITE_BLOB)
        return cli_fail(e, "column data is not a BLOB");
    return cli_chunk_decode(c, sqlite3_column_blob(stmt, 3),
                            (size_t)sqlite3_column_bytes(stmt, 3), e);
}

static void snap_add_row(cli_snap *s, const cli_chunk *c, bool tombstone)
{
    s->rows = cli_xgrow(s->rows, s->nrows, 1, sizeof *s->rows);
    s->rows[s->nrows].kind = c->kind;
    s->rows[s->nrows].key = c->key;
    s->rows[s->nrows].ckpt = c->ckpt;
    s->rows[s->nrows++].tombstone = tombstone;
}

/* One selected row: kept when live, noted when a tombstone, reported
 * through bad (or failing the load) when damaged. */
static int snap_take_row(cli_snap *s, sqlite3_stmt *stmt, cli_bad_fn bad, void *ud,
                         cli_err *e)
{
    s->chunks = cli_xgrow(s->chunks, s->nchunks, 1, sizeof *s->chunks);
    cli_chunk *c = &s->chunks[s->nchunks];
    int rc = chunk_row(stmt, c, e);
    snap_add_row(s, c, rc == 1);
    if (rc == 0)
        s->nchunks++;
    if (rc >= 0)
        return 0;
    s->damaged++;
    if (!bad)
        return -1;
    bad(ud, e);
    return 0;
}

static int snap_chunks(cli_store *st, cli_snap *s, cli_bad_fn bad, void *ud, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int rc = 0, step;
    if (sqlite3_prepare_v2(st->db, SELECT_CHUNKS, -1, &stmt, NULL) != SQLITE_OK) {
        sqlite3_finalize(stmt);
        e->loc = cli_loc_named("chunks", NULL);
        return cli_sql_fail(st, e, "cannot read chunks");
    }
    sqlite3_bind_int64(stmt, 1, s->ck.id);
    while (rc == 0 && (step = sqlite3_step(stmt)) == SQLITE_ROW)
        rc = snap_take_row(s, stmt, bad, ud, e);
    if (rc == 0 && step != SQLITE_DONE) {
        e->loc = cli_loc_named("chunks", NULL);
        rc = cli_sql_fail(st, e, "cannot read chunks");
    }
    sqlite3_finalize(stmt);
    return rc;
}

/* ---- queues given by number ---- */

typedef struct qent {
    uint64_t qnum, tasklet;
    int64_t kase;
} qent;

static int qent_cmp(const void *a, const void *b)
{
    const qent *x = a, *y = b;
    if (x->qnum != y->qnum)
        return (x->qnum > y->qnum) - (x->qnum < y->qnum);
    return (x->kase > y->kase) - (x->kase < y->kase);
}

/* The waiters of channel chan's queue (side 1 senders, 2 receivers) that
 * carry a queue number, in any order; *n of them. */
static qent *numbered_waiters(const cli_snap *s, uint64_t chan, int side, size_t *n)
{
    qent *v = NULL;
    *n = 0;
    for (size_t i = 0; i < s->nchunks; i++) {
        const cli_tchunk *c = &s->chunks[i].t;
        for (uint32_t j = 0; cli_kind_base(s->chunks[i].kind) == CLI_KIND_TASKLETS &&
                             j < c->ntasklets; j++) {
            const cli_tasklet *t = &c->tasklets[j];
            if (t->state != CLI_S_BLOCKED)
                continue;
            if ((int)t->wait == side && t->qnum && t->on && t->on->via.u64 == chan) {
                v = cli_xgrow(v, *n, 1, sizeof *v);
                v[(*n)++] = (qent){t->qnum, t->id, -1};
            }
            for (uint32_t k = 0; t->wait == CLI_W_SELECT && k < t->ncases; k++)
                if (t->cases[k].chan == chan && (int)t->cases[k].op == side && t->cases[k].qnum) {
                    v = cli_xgrow(v, *n, 1, sizeof *v);
                    v[(*n)++] = (qent){t->cases[k].qnum, t->id, (int64_t)k};
                }
        }
    }
    return v;
}

/* Fills the lists of queues written as [count] from the waiters' records
 * (cli_xcheck compares each list with its count). */
static void snap_number_queues(cli_snap *s)
{
    for (size_t i = 0; i < s->nchunks; i++) {
        cli_chunk *c = &s->chunks[i];
        for (uint32_t j = 0; cli_kind_base(c->kind) == CLI_KIND_CHANS && j < c->c.nchans; j++) {
            cli_chan *ch = &c->c.chans[j];
            for (int side = 1; side <= 2; side++) {
                size_t n;
                if (ch->numbered[side - 1] < 0)
                    continue;
                qent *v = numbered_waiters(s, ch->id, side, &n);
                if (n)
                    qsort(v, n, sizeof *v, qent_cmp);
                cli_waiter *w = cli_doc_alloc(&c->doc, n ? n : 1, sizeof *w);
                for (size_t k = 0; k < n; k++)
                    w[k] = (cli_waiter){v[k].tasklet, v[k].kase};
                *(side == 1 ? &ch->senders : &ch->receivers) = w;
                *(side == 1 ? &ch->nsenders : &ch->nreceivers) = (uint32_t)n;
                free(v);
            }
        }
    }
}

int cli_snap_load(cli_store *st, int64_t id, cli_snap *s, cli_bad_fn bad, void *ud,
                  cli_err *e)
{
    memset(s, 0, sizeof *s);
    msgpack_unpacked_init(&s->head_doc.up);
    int rc = read_ckpt(st, id, &s->ck, &s->head_doc, e);
    if (rc == 1) {
        e->loc = cli_loc_named(NULL, NULL);
        return cli_fail(e, "there is no checkpoint %" PRId64, id);
    }
    if (rc < 0 || cli_decode_head(&s->head_doc, &s->head, e) < 0)
        return -1;
    rc = snap_chunks(st, s, bad, ud, e);
    if (rc == 0)
        snap_number_queues(s);
    return rc;
}

void cli_snap_free(cli_snap *s)
{
    for (size_t i = 0; i < s->nchunks; i++)
        cli_doc_free(&s->chunks[i].doc);
    free(s->chunks);
    free(s->rows);
    cli_doc_free(&s->head_doc);
    memset(s, 0, sizeof *s);
}

int cli_chunk_at(cli_store *st, int64_t kind, int64_t key, int64_t n, cli_chunk *c,
                 cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int rc = 1;
    if (sqlite3_prepare_v2(st->db, "SELECT kind, key, ckpt, data FROM chunks WHERE kind = ?1"
                           " AND key = ?2 AND ckpt <= ?3 ORDER BY ckpt DESC LIMIT 1",
                           -1, &stmt, NULL) != SQLITE_OK) {
        sqlite3_finalize(stmt);
        e->loc = cli_loc_named("chunks", NULL);
        return cli_sql_fail(st, e, "cannot read chunks");
    }
    sqlite3_bind_int64(stmt, 1, kind);
    sqlite3_bind_int64(stmt, 2, key);
    sqlite3_bind_int64(stmt, 3, n);
    int step = sqlite3_step(stmt);
    if (step == SQLITE_ROW)
        rc = chunk_row(stmt, c, e);
    else if (step != SQLITE_DONE)
        rc = cli_sql_fail(st, e, "cannot read chunks");
    sqlite3_finalize(stmt);
    return rc;
}

/* ---- scanning every row (tasklet verify) ---- */

int cli_scan_ckpts(cli_store *st, cli_ckpt_fn fn, void *ud, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int step;
    e->loc = cli_loc_named("checkpoints", NULL);
    if (sqlite3_prepare_v2(st->db, "SELECT id, time, tasklets, channels, bytes, head"
                           " FROM checkpoints ORDER BY id", -1, &stmt, NULL) != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return cli_sql_fail(st, e, "cannot read checkpoints");
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        cli_ckpt ck = {-1, 0, 0, 0, 0};
        cli_doc head;
        cli_err row_err;
        memset(&head, 0, sizeof head);
        row_err.loc = cli_loc_ckpt(sqlite3_column_int64(stmt, 0));
        int rc = ckpt_columns(stmt, &ck, &head, &row_err);
        fn(ud, &ck, &head, rc, &row_err);
        cli_doc_free(&head);
    }
    sqlite3_finalize(stmt);
    if (step != SQLITE_DONE)
        return cli_sql_fail(st, e, "cannot read checkpoints");
    return 0;
}

int cli_scan_chunks(cli_store *st, cli_chunk_fn fn, void *ud, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int step;
    e->loc = cli_loc_named("chunks", NULL);
    if (sqlite3_prepare_v2(st->db, "SELECT kind, key, ckpt, data FROM chunks"
                           " ORDER BY kind, key, ckpt", -1, &stmt, NULL) != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return cli_sql_fail(st, e, "cannot read chunks");
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        cli_chunk c;
        cli_err row_err;
        int rc = chunk_row(stmt, &c, &row_err);
        fn(ud, &c, rc, &row_err);
        if (rc == 0)
            cli_doc_free(&c.doc);
    }
    sqlite3_finalize(stmt);
    if (step != SQLITE_DONE)
        return cli_sql_fail(st, e, "cannot read chunks");
    return 0;
}
