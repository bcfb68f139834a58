/*
 * durable.c -- the node's rows in the store: everything of the node that
 * touches the store is here.
 *
 * The store's checkpoint transaction calls write_tables (the store's
 * "extra" hook, tl__store_set_extra) to write the node's two tables with
 * the runtime's records: outbox (xid, peer, snapshot) -- every transfer
 * not yet acknowledged -- and inbox (xid) -- every transfer id taken and
 * not yet forgotten (docs/FORMAT.md).  tl_node_new reads both back
 * (read_tables), so that after a crash the outbox is resent and resent
 * transfers are recognised.
 *
 * Invariants: the tables are rewritten whole in the same transaction as
 * the runtime's records, so the tasklets, the outbox and the inbox are
 * always of one instant; a transfer is sent only after a checkpoint that
 * holds it (tl__node_checkpoint marks it durable), and acknowledged only
 * after one that holds the import.  write_tables(NULL) means the store is
 * closing: the node goes on in memory only, everything counted durable.
 */
#include "../persist/store_sqlite.h" /* transitional: the outbox and inbox SQL */
#include "node_impl.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the node's tables in the store ---- */

static int bind_exec(sqlite3_stmt *s) { return sqlite3_step(s) == SQLITE_DONE ? 0 : -1; }

static int write_tables(void *ud, void *dbp)
{
    tl_node *n = ud;
    sqlite3 *db = dbp;
    sqlite3_stmt *s = NULL;
    if (!db) { /* the store is closing: from now on, memory only */
        n->store = NULL;
        n->need_ckpt = 0;
        for (outx *x = n->out; x; x = x->next)
            x->durable = 1;
        return TL_OK;
    }
    int bad = sqlite3_exec(db, "DELETE FROM outbox; DELETE FROM inbox;", NULL, NULL, NULL) !=
              SQLITE_OK;
    if (!bad)
        bad = sqlite3_prepare_v2(db, "INSERT INTO outbox VALUES(?,?,?)", -1, &s, NULL) != SQLITE_OK;
    for (outx *x = n->out; x && !bad; x = x->next) {
        sqlite3_bind_text(s, 1, x->xid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, x->peer, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 3, x->data, (int)x->len, SQLITE_STATIC);
        bad = bind_exec(s);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    s = NULL;
    if (!bad)
        bad = sqlite3_prepare_v2(db, "INSERT INTO inbox VALUES(?,'',0)", -1, &s, NULL) != SQLITE_OK;
    for (size_t i = 0; i < n->seen.cap && !bad; i++) {
        if (n->seen.st[i] != 1)
            continue;
        char xid[40];
        tl__xid_format(n->seen.keys[i], xid);
        sqlite3_bind_text(s, 1, xid, -1, SQLITE_TRANSIENT);
        bad = bind_exec(s);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    return bad ? TL_ESTORE : TL_OK;
}

static int read_tables(tl_node *n)
{
    sqlite3 *db = tl__store_sqlite(n->store);
    sqlite3_stmt *s = NULL;
    int rc = TL_OK;
    if (sqlite3_prepare_v2(db, "SELECT xid, peer, data FROM outbox ORDER BY rowid", -1, &s,
                           NULL) != SQLITE_OK)
        return tl__seterr(n->rt, TL_ESTORE, "reading the outbox: %s", sqlite3_errmsg(db));
    while (rc == TL_OK && sqlite3_step(s) == SQLITE_ROW) {
        outx *x = calloc(1, sizeof *x);
        size_t len = (size_t)sqlite3_column_bytes(s, 2);
        void *data = x ? tl__alloc(n->rt, len ? len : 1) : NULL;
        if (!data) {
            free(x);
            rc = tl__seterr(n->rt, TL_ENOMEM, "reading the outbox: out of memory");
            break;
        }
        memcpy(data, sqlite3_column_blob(s, 2), len);
        snprintf(x->xid, sizeof x->xid, "%s", (const char *)sqlite3_column_text(s, 0));
        snprintf(x->peer, sizeof x->peer, "%s", (const char *)sqlite3_column_text(s, 1));
        x->data = data;
        x->len = len;
        x->durable = 1;
        tl__outbox_append(n, x);
    }
    sqlite3_finalize(s);
    if (rc == TL_OK &&
        sqlite3_prepare_v2(db, "SELECT xid FROM inbox", -1, &s, NULL) == SQLITE_OK) {
        while (rc == TL_OK && sqlite3_step(s) == SQLITE_ROW) {
            xkey k;
            const char *xid = (const char *)sqlite3_column_text(s, 0);
            if (xid && tl__xid_parse(xid, &k))
                rc = tl__xset_add(&n->seen, k);
        }
        sqlite3_finalize(s);
    }
    return rc;
}


/* At tl_node_new: the outbox and inbox come in from the store, and the
 * store's checkpoints write them back (write_tables) from now on. */
int tl__node_store_open(tl_node *n)
{
    if (!n->store)
        return TL_OK;
    int rc = read_tables(n);
    if (rc != TL_OK)
        return rc;
    tl__store_set_extra(n->store, write_tables, n);
    return TL_OK;
}

/* The checkpoint transfers wait for: new outbox rows before they are sent,
 * inbox rows (and the imported tasklets) before they are acknowledged,
 * removals before FORGET.  Transfers not yet sent are durable after it. */
int tl__node_checkpoint(tl_node *n)
{
    if (!n->need_ckpt || !n->store)
        return TL_OK;
    tl__store_touch(n->store);
    int rc = tl_store_checkpoint(n->store);
    if (rc != TL_OK)
        return tl__seterr(n->rt, rc, "checkpoint for a transfer: %s",
                          tl_store_errmsg(n->store));
    n->need_ckpt = 0;
    for (outx *x = n->next_send; x; x = x->next)
        x->durable = 1;
    return TL_OK;
}

/* At tl_node_free: with a store, the outbox is made durable (the next node
 * on the store resends it) and the store forgets the node.  1 if the
 * outbox is in the store. */
int tl__node_store_close(tl_node *n)
{
    int durable = n->store != NULL;
    if (n->store && n->need_ckpt) {
        tl__store_touch(n->store);
        durable = tl_store_checkpoint(n->store) == TL_OK;
        for (outx *x = n->out; durable && x; x = x->next)
            x->durable = 1;
        if (!durable)
            tl__node_log(n, "closing: the outbox could not be checkpointed: %s",
                         tl_store_errmsg(n->store));
    }
    if (n->store)
        tl__store_set_extra(n->store, NULL, NULL);
    return durable;
}
