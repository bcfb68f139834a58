/*
 * durable.c -- the node's rows in the store: everything of the node that
 * touches the store is here, through the store's participant interface
 * (persist/persist.h, docs/ARCHITECTURE.md section 11.1); the node issues
 * no SQL.
 *
 * The node is a participant of its store: in every checkpoint's
 * transaction the store calls write_rows, which rewrites the node's two
 * tables with the runtime's records: outbox (xid, peer, snapshot) --
 * every transfer not yet acknowledged -- and inbox (xid) -- every
 * transfer id taken and not yet forgotten (docs/FORMAT.md).  tl_node_new
 * reads both back (read_tables), so that after a crash the outbox is
 * resent and resent transfers are recognised.
 *
 * Invariants: the tables are rewritten whole in the same transaction as
 * the runtime's records, so the tasklets, the outbox and the inbox are
 * always of one instant; a transfer is sent only after a checkpoint that
 * holds it (tl__node_checkpoint marks it durable), and acknowledged only
 * after one that holds the import.  detach_store means the store is
 * closing: the node goes on in memory only, everything counted durable.
 */
#include "node_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the node's tables in the store ---- */

static const tl__table outbox_table = {"outbox", "xid", "peer", NULL, "data"};
static const tl__table inbox_table = {"inbox", "xid", "peer", "time", NULL};

/* In every checkpoint's transaction. */
static int write_rows(void *ud, tl__store_tx *tx)
{
    tl_node *n = ud;
    int rc = tl__tx_clear(tx, &outbox_table);
    if (rc == TL_OK)
        rc = tl__tx_clear(tx, &inbox_table);
    for (outx *x = n->out; x && rc == TL_OK; x = x->next) {
        tl__row r = {x->xid, x->peer, 0, x->data, x->len};
        rc = tl__tx_put(tx, &outbox_table, &r);
    }
    for (size_t i = 0; i < n->seen.cap && rc == TL_OK; i++) {
        if (n->seen.st[i] != 1)
            continue;
        char xid[40];
        tl__xid_format(n->seen.keys[i], xid);
        tl__row r = {xid, "", 0, NULL, 0};
        rc = tl__tx_put(tx, &inbox_table, &r);
    }
    return rc;
}

/* The store is closing: from now on, memory only. */
static void detach_store(void *ud)
{
    tl_node *n = ud;
    n->store = NULL;
    n->need_ckpt = 0;
    for (outx *x = n->out; x; x = x->next)
        x->durable = 1;
}

static const tl__participant node_participant = {"node's outbox and inbox", write_rows,
                                                  detach_store};

static int read_outbox_row(void *ud, const tl__row *r)
{
    tl_node *n = ud;
    outx *x = calloc(1, sizeof *x);
    void *data = x ? tl__alloc(n->rt, r->len ? r->len : 1) : NULL;
    if (!data) {
        free(x);
        return tl__seterr(n->rt, TL_ENOMEM, "reading the outbox: out of memory");
    }
    if (r->len)
        memcpy(data, r->data, r->len);
    snprintf(x->xid, sizeof x->xid, "%s", r->key);
    snprintf(x->peer, sizeof x->peer, "%s", r->peer ? r->peer : "");
    x->data = data;
    x->len = r->len;
    x->durable = 1;
    if (tl__outbox_append(n, x) != TL_OK) {
        tl__outx_free(n, x);
        return tl__seterr(n->rt, TL_ENOMEM, "reading the outbox: out of memory");
    }
    return TL_OK;
}

static int read_inbox_row(void *ud, const tl__row *r)
{
    tl_node *n = ud;
    xkey k;
    return tl__xid_parse(r->key, &k) ? tl__xset_add(&n->seen, k) : TL_OK;
}

static int read_tables(tl_node *n)
{
    int rc = tl__store_rows(n->store, &outbox_table, read_outbox_row, n);
    if (rc != TL_OK && rc != TL_ENOMEM)
        return tl__seterr(n->rt, rc, "reading the outbox: %s", tl_store_errmsg(n->store));
    if (rc == TL_OK)
        rc = tl__store_rows(n->store, &inbox_table, read_inbox_row, n);
    if (rc != TL_OK && rc != TL_ENOMEM)
        return tl__seterr(n->rt, rc, "reading the inbox: %s", tl_store_errmsg(n->store));
    return rc;
}

/* At tl_node_new: the outbox and inbox come in from the store, and the
 * store's checkpoints write them back (write_rows) from now on. */
int tl__node_store_open(tl_node *n)
{
    if (!n->store)
        return TL_OK;
    int rc = read_tables(n);
    if (rc != TL_OK)
        return rc;
    rc = tl__store_join(n->store, &node_participant, n);
    return rc == TL_OK ? TL_OK
                       : tl__seterr(n->rt, rc, "joining the store: %s", tl_store_errmsg(n->store));
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
    for (outx *x = n->undurable; x; x = x->next)
        x->durable = 1;
    n->undurable = NULL;
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
        tl__store_leave(n->store, &node_participant, n);
    return durable;
}
