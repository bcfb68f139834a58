/*
 * store_sqlite_retire.c -- the SQLite backend's retention (store_backend.h
 * retire and prune; FORMAT.md section 7, "Retention"): the rows no kept
 * checkpoint reads go, and free pages go back to the file system.
 *
 * Invariants: retire runs inside the checkpoint's write transaction and
 * refuses once that transaction has ended (tl__sq_in_tx), so it never
 * deletes in autocommit; a chunk row goes only when a row of the same
 * (kind, key) at or below the oldest kept checkpoint supersedes it.
 */
#include "store_sqlite_int.h"

#include <stdint.h>

/* Rows below oldest_kept that a newer row at or below it supersedes are
 * read by no remaining checkpoint (FORMAT.md section 7). */
int tl__sq_prune(tl__store_be *be, int64_t oldest_kept)
{
    sq *q = (sq *)be;
    sqlite3_stmt *s;
    int rc = TL_OK;
    static const char *const sql[] = {
        "DELETE FROM chunks WHERE ckpt < ?1 AND EXISTS (SELECT 1 FROM chunks d WHERE d.kind ="
        " chunks.kind AND d.key = chunks.key AND d.ckpt > chunks.ckpt AND d.ckpt <= ?1)",
        "DELETE FROM checkpoints WHERE id < ?1",
    };
    for (size_t i = 0; i < 2 && rc == TL_OK; i++) {
        if (sqlite3_prepare_v2(q->db, sql[i], -1, &s, NULL) != SQLITE_OK)
            return tl__sq_last_err(q, "pruning");
        sqlite3_bind_int64(s, 1, oldest_kept);
        rc = tl__sq_step_done(q, s, "pruning");
        sqlite3_finalize(s);
    }
    return rc;
}

#define RECLAIM_PAGES "64" /* free pages given back per checkpoint */

static int run_int(sq *q, sqlite3_stmt **s, const char *sql, int64_t a)
{
    if (!*s && sqlite3_prepare_v2(q->db, sql, -1, s, NULL) != SQLITE_OK)
        return tl__sq_last_err(q, "retiring old checkpoints");
    sqlite3_bind_int64(*s, 1, a);
    return tl__sq_step_done(q, *s, "retiring old checkpoints");
}

/* Gives free pages back to the file system, RECLAIM_PAGES at a time, in
 * a store made with auto_vacuum=INCREMENTAL (elsewhere SQLite reuses
 * them).  The pragma is prepared again at each run, so it runs only when
 * the free list is not empty. */
static int give_back(sq *q)
{
    if (!q->incremental)
        return TL_OK;
    sqlite3_stmt *f = tl__sq_fixed(q, S_FREE, "PRAGMA freelist_count");
    int64_t nfree = f && sqlite3_step(f) == SQLITE_ROW ? sqlite3_column_int64(f, 0) : -1;
    sqlite3_reset(f); /* NULL: a no-op */
    if (nfree < 0)
        return tl__sq_last_err(q, "giving back free pages");
    if (nfree == 0)
        return TL_OK;
    return tl__sq_step_done(q, tl__sq_fixed(q, S_VACUUM, "PRAGMA incremental_vacuum(" RECLAIM_PAGES ")"),
                            "giving back free pages");
}

/* The (kind, key) pairs checkpoint c wrote into q->keys, or nkeys =
 * SIZE_MAX for more than FEW_KEYS (found on the index chunks_by_ckpt,
 * which covers them). */
static int keys_of(sq *q, int64_t c)
{
    sqlite3_stmt *s = tl__sq_fixed(q, S_KEYS, "SELECT kind, key FROM chunks WHERE ckpt = ?1");
    if (!s)
        return tl__sq_last_err(q, "retiring old checkpoints");
    sqlite3_bind_int64(s, 1, c);
    int rc;
    q->nkeys = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (q->nkeys == 2 * FEW_KEYS) {
            q->nkeys = SIZE_MAX;
            rc = SQLITE_DONE;
            break;
        }
        q->keys[q->nkeys++] = sqlite3_column_int64(s, 0);
        q->keys[q->nkeys++] = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? TL_OK : tl__sq_err(q, rc, "retiring old checkpoints");
}

/* A row is unreadable once a row of the same (kind, key) from a
 * checkpoint in (oldest, oldest_kept] supersedes it: the rows below c of
 * each chunk c wrote go, each found on the primary key.  One DELETE ...
 * IN (SELECT ...) builds and drops a temporary table each time, which
 * costs more than a few statements; it serves checkpoints of many chunks. */
static int drop_superseded(sq *q, int64_t c)
{
    int rc = keys_of(q, c);
    if (rc == TL_OK && q->nkeys == SIZE_MAX)
        return run_int(q, &q->fixed[S_SUP_MANY], "DELETE FROM chunks WHERE (kind, key) IN "
                       "(SELECT kind, key FROM chunks WHERE ckpt = ?1) AND ckpt < ?1", c);
    sqlite3_stmt *d = tl__sq_fixed(q, S_SUP, "DELETE FROM chunks WHERE kind = ?1 AND key = ?2 AND "
                            "ckpt < ?3");
    if (rc == TL_OK && !d)
        rc = tl__sq_last_err(q, "retiring old checkpoints");
    for (size_t i = 0; rc == TL_OK && i < q->nkeys; i += 2) {
        sqlite3_bind_int64(d, 1, q->keys[i]);
        sqlite3_bind_int64(d, 2, q->keys[i + 1]);
        sqlite3_bind_int64(d, 3, c);
        rc = tl__sq_step_done(q, d, "retiring old checkpoints");
    }
    return rc;
}

int tl__sq_retire(tl__store_be *be, int64_t oldest_kept)
{
    sq *q = (sq *)be;
    if (tl__sq_in_tx(q, "retiring old checkpoints") != TL_OK)
        return TL_ESTORE;
    sqlite3_stmt *o = tl__sq_fixed(q, S_OLDEST, "SELECT coalesce(min(id), 0) FROM checkpoints");
    int64_t oldest = o && sqlite3_step(o) == SQLITE_ROW ? sqlite3_column_int64(o, 0) : -1;
    sqlite3_reset(o); /* NULL: a no-op */
    if (oldest < 0)
        return tl__sq_last_err(q, "retiring old checkpoints");
    if (oldest == 0 || oldest >= oldest_kept)
        return TL_OK;
    int rc = TL_OK;
    for (int64_t c = oldest + 1; c <= oldest_kept && rc == TL_OK; c++)
        rc = drop_superseded(q, c);
    if (rc == TL_OK)
        rc = run_int(q, &q->fixed[S_GONE], "DELETE FROM checkpoints WHERE id < ?1", oldest_kept);
    return rc == TL_OK ? give_back(q) : rc;
}
