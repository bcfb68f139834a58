/*
 * cmd_prune.c -- `tasklet prune DB --keep N`: deletes all but the N newest
 * checkpoints and every chunk row no kept checkpoint needs, in one
 * transaction (FORMAT.md section 7).
 *
 * With K the oldest kept checkpoint, checkpoint M >= K reads for each
 * (kind, key) the newest row with ckpt <= M.  Rows above K stay.  Among
 * the rows with ckpt <= K only the newest can still be read (by K, and by
 * every later M that has no newer row); the others go.  That newest row
 * goes too when it is a tombstone: with nothing older left, "no row" and
 * "a tombstone" read the same.
 *
 *   BEGIN IMMEDIATE -> list checkpoint ids -> K -> plan (decode only the
 *   newest row of each group, to spot tombstones; a damaged one stops the
 *   prune) -> DELETE checkpoints < K -> DELETE planned rows -> COMMIT
 *
 * Any failure rolls back: the store is untouched.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct victim {
    int64_t kind, key, ckpt, bytes;
    bool tombstone;
} victim;

typedef struct plan {
    int64_t *ids;       /* checkpoint ids, newest first */
    size_t nids;
    int64_t oldest_kept;
    victim *rows;
    size_t nrows;
    int64_t bytes;
    int64_t reclaimed;  /* bytes the file shrank by afterwards, -1: could not */
} plan;

static int exec_sql(cli_store *st, const char *sql, cli_err *e)
{
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return cli_sql_fail(st, e, sql);
    return 0;
}

static int list_ckpts(cli_store *st, plan *p, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int step = SQLITE_ERROR;
    e->loc = cli_loc_named("checkpoints", NULL);
    if (sqlite3_prepare_v2(st->db, "SELECT id FROM checkpoints ORDER BY id DESC", -1, &stmt,
                           NULL) == SQLITE_OK)
        while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
            p->ids = cli_xgrow(p->ids, p->nids, 1, sizeof *p->ids);
            p->ids[p->nids++] = sqlite3_column_int64(stmt, 0);
        }
    sqlite3_finalize(stmt);
    return step == SQLITE_DONE ? 0 : cli_sql_fail(st, e, "cannot read checkpoints");
}

/* Is the row at columns 0-3 (kind, key, ckpt, data) a tombstone?  1 yes,
 * 0 no, -1 damaged. */
static int row_is_tombstone(sqlite3_stmt *stmt, const victim *v, cli_err *e)
{
    cli_doc doc;
    char why[sizeof e->msg];
    e->loc = cli_loc_chunk(v->kind, v->key, v->ckpt);
    if (cli_record_decode(sqlite3_column_blob(stmt, 3), (size_t)sqlite3_column_bytes(stmt, 3),
                          &doc, e) < 0) {
        memcpy(why, e->msg, sizeof why);
        return cli_fail(e, "%.900s; prune cannot tell whether this row is a tombstone "
                        "(run 'tasklet verify')", why);
    }
    int tomb = cli_doc_is_tombstone(&doc);
    cli_doc_free(&doc);
    return tomb;
}

/* One row with ckpt <= K; rows come newest first within a (kind, key),
 * and prev is the row before (first: there is none). */
static int plan_row(sqlite3_stmt *stmt, plan *p, victim *prev, bool first, cli_err *e)
{
    victim v = {sqlite3_column_int64(stmt, 0), sqlite3_column_int64(stmt, 1),
                sqlite3_column_int64(stmt, 2), sqlite3_column_bytes(stmt, 3), false};
    bool newest = first || prev->kind != v.kind || prev->key != v.key;
    *prev = v;
    if (newest) {
        int tomb = row_is_tombstone(stmt, &v, e);
        if (tomb <= 0)
            return tomb;
        v.tombstone = true;
    }
    p->rows = cli_xgrow(p->rows, p->nrows, 1, sizeof *p->rows);
    p->rows[p->nrows++] = v;
    p->bytes += v.bytes;
    return 0;
}

static int plan_rows(cli_store *st, plan *p, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    victim prev = {0, 0, 0, 0, false};
    int rc = 0, step = SQLITE_ERROR;
    if (sqlite3_prepare_v2(st->db, "SELECT kind, key, ckpt, data FROM chunks WHERE ckpt <= ?1"
                           " ORDER BY kind, key, ckpt DESC", -1, &stmt, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(stmt, 1, p->oldest_kept);
        for (bool first = true; rc == 0 && (step = sqlite3_step(stmt)) == SQLITE_ROW;
             first = false)
            rc = plan_row(stmt, p, &prev, first, e);
    }
    sqlite3_finalize(stmt);
    if (rc == 0 && step != SQLITE_DONE) {
        e->loc = cli_loc_named("chunks", NULL);
        rc = cli_sql_fail(st, e, "cannot read chunks");
    }
    return rc;
}

static int delete_rows(cli_store *st, const plan *p, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int rc = 0;
    e->loc = cli_loc_named("chunks", NULL);
    if (sqlite3_prepare_v2(st->db, "DELETE FROM chunks WHERE kind = ?1 AND key = ?2"
                           " AND ckpt = ?3", -1, &stmt, NULL) != SQLITE_OK)
        rc = cli_sql_fail(st, e, "cannot delete chunks");
    for (size_t i = 0; rc == 0 && i < p->nrows; i++) {
        sqlite3_bind_int64(stmt, 1, p->rows[i].kind);
        sqlite3_bind_int64(stmt, 2, p->rows[i].key);
        sqlite3_bind_int64(stmt, 3, p->rows[i].ckpt);
        if (sqlite3_step(stmt) != SQLITE_DONE)
            rc = cli_sql_fail(st, e, "cannot delete chunks");
        sqlite3_reset(stmt);
    }
    sqlite3_finalize(stmt);
    return rc;
}

static int delete_ckpts(cli_store *st, const plan *p, cli_err *e)
{
    sqlite3_stmt *stmt = NULL;
    int rc = 0;
    e->loc = cli_loc_named("checkpoints", NULL);
    if (sqlite3_prepare_v2(st->db, "DELETE FROM checkpoints WHERE id < ?1", -1, &stmt, NULL)
        != SQLITE_OK)
        rc = cli_sql_fail(st, e, "cannot delete checkpoints");
    if (rc == 0) {
        sqlite3_bind_int64(stmt, 1, p->oldest_kept);
        if (sqlite3_step(stmt) != SQLITE_DONE)
            rc = cli_sql_fail(st, e, "cannot delete checkpoints");
    }
    sqlite3_finalize(stmt);
    return rc;
}

/* ---- what was removed ---- */

static void report_text(const plan *p, size_t keep)
{
    size_t kept = p->nids < keep ? p->nids : keep, tombs = 0;
    printf("kept %zu checkpoint%s (%" PRId64 "..%" PRId64 ")", kept, kept == 1 ? "" : "s",
           p->oldest_kept, p->ids[0]);
    if (p->nids > kept) {
        printf(", removed %zu:", p->nids - kept);
        for (size_t i = p->nids; i-- > kept;)
            printf(" %" PRId64, p->ids[i]);
    }
    for (size_t i = 0; i < p->nrows; i++)
        tombs += p->rows[i].tombstone;
    printf("\nremoved %zu chunk row%s (%zu superseded, %zu tombstone%s), %" PRId64 " bytes\n",
           p->nrows, p->nrows == 1 ? "" : "s", p->nrows - tombs, tombs, tombs == 1 ? "" : "s",
           p->bytes);
    for (size_t i = 0; i < p->nrows; i++) {
        cli_loc loc = cli_loc_chunk(p->rows[i].kind, p->rows[i].key, p->rows[i].ckpt);
        char where[160];
        cli_loc_text(&loc, where, sizeof where);
        printf("  %s %s\n", where, p->rows[i].tombstone ? "tombstone" : "superseded");
    }
    if (p->reclaimed >= 0)
        printf("gave back %" PRId64 " bytes to the file system\n", p->reclaimed);
    else
        printf("the space was not given back: it is reused by later checkpoints\n");
}

static void report_json(const plan *p, size_t keep)
{
    json_t *r = json_object(), *kept = json_array(), *gone = json_array(), *rows = json_array();
    for (size_t i = 0; i < p->nids; i++)
        json_array_append_new(i < keep ? kept : gone, json_integer(p->ids[i]));
    for (size_t i = 0; i < p->nrows; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "kind", json_integer(p->rows[i].kind));
        json_object_set_new(o, "key", json_integer(p->rows[i].key));
        json_object_set_new(o, "ckpt", json_integer(p->rows[i].ckpt));
        json_object_set_new(o, "bytes", json_integer(p->rows[i].bytes));
        json_object_set_new(o, "reason", json_string(p->rows[i].tombstone ? "tombstone"
                                                                           : "superseded"));
        json_array_append_new(rows, o);
    }
    json_object_set_new(r, "kept", kept);
    json_object_set_new(r, "removed_checkpoints", gone);
    json_object_set_new(r, "removed_chunks", rows);
    json_object_set_new(r, "bytes", json_integer(p->bytes));
    json_object_set_new(r, "reclaimed", p->reclaimed >= 0 ? json_integer(p->reclaimed)
                                                          : json_null());
    cli_json_print(r);
}

/* ---- the transaction ---- */

static int prune_in_txn(cli_store *st, plan *p, int64_t keep, cli_err *e)
{
    if (exec_sql(st, "BEGIN IMMEDIATE", e) < 0 || list_ckpts(st, p, e) < 0)
        return -1;
    if (p->nids == 0)
        return 1;
    p->oldest_kept = p->ids[(size_t)keep < p->nids ? (size_t)keep - 1 : p->nids - 1];
    if (plan_rows(st, p, e) < 0 || delete_ckpts(st, p, e) < 0 || delete_rows(st, p, e) < 0)
        return -1;
    return exec_sql(st, "COMMIT", e);
}

/* Gives free pages back to the file system, after the prune committed:
 * an incremental vacuum in a store made with auto_vacuum=INCREMENTAL, else
 * a VACUUM that also turns it on.  Returns the bytes the file shrank by
 * (-1: it could not -- busy, say -- which leaves a sound store that is
 * only bigger than it needs to be). */
static int64_t reclaim(cli_store *st)
{
    int64_t mode = -1, before = -1, after = -1, page = 0;
    sqlite3_stmt *s = NULL;
    const char *probe[] = {"PRAGMA auto_vacuum", "PRAGMA page_count", "PRAGMA page_size"};
    int64_t *out[] = {&mode, &before, &page};
    for (int i = 0; i < 3; i++) {
        if (sqlite3_prepare_v2(st->db, probe[i], -1, &s, NULL) == SQLITE_OK &&
            sqlite3_step(s) == SQLITE_ROW)
            *out[i] = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
    }
    const char *sql = mode == 2 ? "PRAGMA incremental_vacuum"
                                : "PRAGMA auto_vacuum=INCREMENTAL; VACUUM";
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        cli_complain("prune: the space was not given back: %s", sqlite3_errmsg(st->db));
        return -1;
    }
    if (sqlite3_prepare_v2(st->db, "PRAGMA page_count", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        after = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (after < 0)
        return -1;
    /* turning auto_vacuum on adds pointer-map pages: a tiny store can grow */
    return before > after ? (before - after) * page : 0;
}

static int prune(cli_store *st, const cli_opts *o)
{
    plan p;
    cli_err e = {{0}, {0}};
    memset(&p, 0, sizeof p);
    int rc = cli_store_check_version(st, &e);
    if (rc == 0)
        rc = prune_in_txn(st, &p, o->keep, &e);
    if (rc < 0) {
        if (!sqlite3_get_autocommit(st->db))
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        cli_print_err(&e);
        cli_complain("nothing was removed");
    } else if (rc == 1) {
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        if (o->json)
            report_json(&p, (size_t)o->keep);
        else
            puts("no checkpoints: nothing to prune");
    } else {
        p.reclaimed = o->on_copy ? -1 : reclaim(st); /* PostgreSQL's vacuum reuses it */
        if (o->json)
            report_json(&p, (size_t)o->keep);
        else
            report_text(&p, (size_t)o->keep);
    }
    free(p.ids);
    free(p.rows);
    return rc < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

int cli_cmd_prune(const cli_opts *o)
{
    cli_store st;
    if (!o->has_keep || o->keep < 1) {
        cli_complain("prune: --keep N with N >= 1 is required (see 'tasklet prune --help')");
        return CLI_EXIT_USAGE;
    }
    int rc = cli_store_open(&st, o->db, true);
    if (rc != CLI_EXIT_OK)
        return rc;
    rc = prune(&st, o);
    cli_store_close(&st);
    return rc;
}
