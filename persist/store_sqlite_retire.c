/*
 * store_sqlite_retire.c -- the SQLite backend's retention (store_backend.h
 * retire and prune; FORMAT.md section 7, "Retention"): the rows no kept
 * checkpoint reads go, and free pages go back to the file system.
 *
 * Invariants: retire runs inside the checkpoint's write transaction and
 * refuses once that transaction has ended (tl__sq_in_tx), so it never
 * deletes in autocommit; a chunk row goes only when a row of the same
 * (kind, key) at or below the oldest kept checkpoint supersedes it.
 * The keys remembered for checkpoint c (ring[c % RING] with ckpt == c)
 * are exactly the chunk rows c has in the table: noted as they are
 * inserted, kept only once the COMMIT succeeded, or read from the table
 * inside the write transaction; dropped at claim, release, prune and when
 * c is retired.  A key too many would delete the row a kept checkpoint
 * reads, so anything uncertain is read again, never guessed.
 */
#include "store_sqlite_int.h"

#include <stdint.h>
#include <stdlib.h>

/* Rows below oldest_kept that a newer row at or below it supersedes are
 * read by no remaining checkpoint (FORMAT.md section 7). */
int tl__sq_prune(tl__store_be *be, int64_t oldest_kept)
{
    sq *q = (sq *)be;
    tl__sq_keys_forget(q, 1);
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

/* ---- which chunks each checkpoint wrote ---- */

static void keys_reset(sq_keys *k, int64_t ckpt)
{
    k->ckpt = ckpt;
    k->many = 0;
    k->n = 0;
}

static void keys_add(sq_keys *k, int64_t kind, int64_t key)
{
    if (k->many)
        return;
    if (k->n == FEW_KEYS) {
        k->many = 1;
        return;
    }
    if (k->n == k->cap) {
        size_t ncap = k->cap ? 2 * k->cap : 8;
        int64_t *nk = realloc(k->kk, 2 * ncap * sizeof *nk);
        if (!nk) { /* found by a scan instead: slower, as exact */
            k->many = 1;
            return;
        }
        k->kk = nk;
        k->cap = ncap;
    }
    k->kk[2 * k->n] = kind;
    k->kk[2 * k->n + 1] = key;
    k->n++;
}

void tl__sq_keys_note(sq *q, int kind, uint64_t key, int64_t ckpt)
{
    if (q->cur.ckpt != ckpt)
        keys_reset(&q->cur, ckpt);
    keys_add(&q->cur, kind, (int64_t)key);
}

/* The transaction committed: what it wrote is now a checkpoint's, exact
 * (its slot's older checkpoint, RING ids back, is forgotten). */
void tl__sq_keys_committed(sq *q)
{
    if (q->cur.ckpt > 0) {
        sq_keys *slot = &q->ring[q->cur.ckpt % RING], t = *slot;
        *slot = q->cur;
        q->cur = t; /* its buffer, reused */
    }
    keys_reset(&q->cur, 0);
    q->writing = 0;
}

/* all: every checkpoint's keys (the store may have changed while we did
 * not own it: a claim, a release, a prune); else the open transaction's. */
void tl__sq_keys_forget(sq *q, int all)
{
    keys_reset(&q->cur, 0);
    q->writing = 0;
    for (int i = 0; all && i < RING; i++)
        keys_reset(&q->ring[i], 0);
}

void tl__sq_keys_free(sq *q)
{
    free(q->cur.kk);
    for (int i = 0; i < RING; i++)
        free(q->ring[i].kk);
}

/* Checkpoints written before this connection wrote (another process, or
 * before a restart) are learnt from the table: one scan for the RING ids
 * from c on, below the checkpoint being written (its own rows may still
 * roll back).  The scan reads the chunk rows' keys (an index range where
 * an older store has chunks_by_ckpt, the whole table otherwise), once per
 * RING checkpoints. */
static int learn(sq *q, int64_t c)
{
    int64_t hi = c + RING - 1;
    if (q->writing > 0 && hi >= q->writing)
        hi = q->writing - 1;
    for (int64_t x = c; x <= hi; x++)
        keys_reset(&q->ring[x % RING], x);
    sqlite3_stmt *s = tl__sq_fixed(q, S_KEYS, "SELECT ckpt, kind, key FROM chunks WHERE "
                                   "ckpt >= ?1 AND ckpt <= ?2");
    if (!s)
        return tl__sq_last_err(q, "retiring old checkpoints");
    sqlite3_bind_int64(s, 1, c);
    sqlite3_bind_int64(s, 2, hi);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t x = sqlite3_column_int64(s, 0);
        keys_add(&q->ring[x % RING], sqlite3_column_int64(s, 1), sqlite3_column_int64(s, 2));
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc == SQLITE_DONE)
        return TL_OK;
    for (int64_t x = c; x <= hi; x++)
        keys_reset(&q->ring[x % RING], 0); /* what was read may be partial */
    return tl__sq_err(q, rc, "retiring old checkpoints");
}

/* A row is unreadable once a row of the same (kind, key) from a
 * checkpoint in (oldest, oldest_kept] supersedes it: the rows below c of
 * each chunk c wrote go, each found on the primary key.  A checkpoint of
 * many chunks (a full one) takes one DELETE ... IN (SELECT ...) instead,
 * which scans the table where it has no index on ckpt. */
static int drop_superseded(sq *q, int64_t c)
{
    sq_keys *k = &q->ring[c % RING];
    int rc = k->ckpt == c ? TL_OK : learn(q, c);
    if (rc == TL_OK && (k->ckpt != c || k->many))
        return run_int(q, &q->fixed[S_SUP_MANY], "DELETE FROM chunks WHERE (kind, key) IN "
                       "(SELECT kind, key FROM chunks WHERE ckpt = ?1) AND ckpt < ?1", c);
    sqlite3_stmt *d = tl__sq_fixed(q, S_SUP, "DELETE FROM chunks WHERE kind = ?1 AND key = ?2 "
                                   "AND ckpt < ?3");
    if (rc == TL_OK && !d)
        rc = tl__sq_last_err(q, "retiring old checkpoints");
    for (size_t i = 0; rc == TL_OK && i < k->n; i++) {
        sqlite3_bind_int64(d, 1, k->kk[2 * i]);
        sqlite3_bind_int64(d, 2, k->kk[2 * i + 1]);
        sqlite3_bind_int64(d, 3, c);
        rc = tl__sq_step_done(q, d, "retiring old checkpoints");
    }
    if (rc == TL_OK)
        keys_reset(k, 0); /* retired: nothing reads its keys again */
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
