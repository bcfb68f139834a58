/*
 * store_rows.c -- participants' rows outside the owner's checkpoints, for
 * the layers above (persist.h, "rows for the layers above"): read one by
 * key, read those written since a point, insert one as a process that
 * does not own the store, delete by peer and announce inside a
 * checkpoint, and a listener on the store's announcements.
 *
 * Invariants: these only reach the backend's optional operations
 * (store_backend.h); a backend without one answers TL_ENOTSUP, naming
 * it.  An insert is one unfenced transaction (begin(0)): its check and
 * its row commit together or not at all, and nothing else is written.
 */
#include "store_backend.h"

#include <stdio.h>
#include <string.h>

/* TL_OK when be is there and has the operation (have); else the error. */
static int need(tl_store *st, tl__store_be *be, bool have, const char *what)
{
    if (!be)
        return TL_EMISUSE;
    if (!have)
        return tl__store_fail(st, TL_ENOTSUP, "%s: the %s store backend does not provide it",
                              what, be->ops->name);
    return TL_OK;
}

int tl__store_tables(tl_store *st, const tl__table *const *ts, size_t n)
{
    tl__store_be *be = tl__store_backend(st, NULL);
    int rc = need(st, be, be && be->ops->tables_make, "creating tables");
    for (size_t i = 0; rc == TL_OK && i < n; i++)
        rc = be->ops->tables_make(be, ts[i]);
    return rc;
}

int tl__store_row_get(tl_store *st, const tl__table *t, const char *key, tl__row_fn fn,
                      void *ud)
{
    tl__store_be *be = tl__store_backend(st, NULL);
    int rc = need(st, be, be && be->ops->row_get, "reading a row");
    return rc == TL_OK ? be->ops->row_get(be, t, key, fn, ud) : rc;
}

int tl__store_rows_since(tl_store *st, const tl__table *t, int64_t after, tl__row_fn fn,
                         void *ud)
{
    tl__store_be *be = tl__store_backend(st, NULL);
    int rc = need(st, be, be && be->ops->rows_since, "reading new rows");
    return rc == TL_OK ? be->ops->rows_since(be, t, after, fn, ud) : rc;
}

int tl__store_insert(tl_store *st, const tl__table *t, const tl__row *r,
                     int (*check)(void *ud), void *ud)
{
    tl__store_be *be = tl__store_backend(st, NULL);
    int rc = need(st, be, be && be->ops->row_insert, "inserting a row");
    if (rc != TL_OK)
        return rc;
    rc = be->ops->begin(be, 0);
    if (rc != TL_OK)
        return rc;
    if (check)
        rc = check(ud);
    if (rc == TL_OK)
        rc = be->ops->row_insert(be, t, r);
    if (rc == TL_OK)
        rc = be->ops->commit(be);
    if (rc != TL_OK) {
        char keep[512];
        int code = tl_store_errcode(st);
        snprintf(keep, sizeof keep, "%s", tl_store_errmsg(st));
        be->ops->rollback(be);
        if (code != TL_OK)
            tl__store_fail(st, code, "%s", keep);
    }
    return rc;
}

int tl__tx_del_peer(tl__store_tx *tx, const tl__table *t, const char *peer)
{
    tl__store_be *be = tl__tx_backend(tx);
    int rc = need(be->st, be, be->ops->row_del_peer != NULL, "deleting rows");
    return rc == TL_OK ? be->ops->row_del_peer(be, t, peer) : rc;
}

int tl__tx_notify(tl__store_tx *tx, const char *what)
{
    tl__store_be *be = tl__tx_backend(tx);
    return be->ops->notify ? be->ops->notify(be, what) : TL_OK;
}

int tl__tx_exec(tl__store_tx *tx, const char *sql)
{
    tl__store_be *be = tl__tx_backend(tx);
    int rc = need(be->st, be, be->ops->tx_exec != NULL, "running a statement");
    return rc == TL_OK ? be->ops->tx_exec(be, sql) : rc;
}

void *tl__tx_conn(tl__store_tx *tx)
{
    tl__store_be *be = tl__tx_backend(tx);
    return be->ops->tx_conn ? be->ops->tx_conn(be) : NULL;
}

int tl__store_watch(tl_store *st, tl_store_listener **out)
{
    const char *where = NULL;
    tl__store_be *be = tl__store_backend(st, &where);
    *out = NULL;
    int rc = need(st, be, be && be->ops->notify, "listening");
    if (rc != TL_OK)
        return rc;
    tl_store_listener *l = NULL;
    rc = tl_store_listen(where, &l);
    if (rc != TL_OK) {
        tl__store_fail(st, rc, "%s", tl_store_listener_errmsg(l));
        tl_store_listener_free(l);
        return rc;
    }
    *out = l;
    return TL_OK;
}
