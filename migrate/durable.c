/*
 * durable.c -- the node's rows in the store: everything of the node that
 * touches the store is here, through the store's participant interface
 * (persist/persist.h, docs/ARCHITECTURE.md section 11.1); the node issues
 * no SQL.
 *
 * The node is a participant of its store: in every checkpoint's
 * transaction the store calls write_rows, which writes what changed since
 * the last commit in the node's two tables (docs/FORMAT.md): outbox (xid,
 * peer, snapshot) -- a row put for every transfer not yet durable (from
 * n->undurable on), one deleted for every durable one acknowledged or
 * refused since (n->out_gone) -- and inbox (xid, peer, time taken) -- a row
 * put for every id taken since (n->in_new), one deleted for every id
 * forgotten or aged out (n->in_gone).  When the transaction has committed
 * the store calls rows_committed: only then are those changes counted
 * durable (the lists emptied, the held imports restarted), so a checkpoint
 * that rolls back is simply written again by the next one.  tl_node_new
 * reads both tables back (read_tables), so that after a crash the outbox
 * is resent and resent transfers are recognised.
 *
 * Aging: every id taken is in n->inlog with its time, oldest first;
 * tl__inbox_age (every tl__settle) drops the ids older than
 * n->inbox_keep from n->seen and the store (docs/PROTOCOL.md section 5
 * says why the window is safe).  inlog keeps entries of ids already
 * forgotten (inlog_stale) until they reach its head or it is compacted.
 *
 * Invariants: the rows change in the same transaction as the runtime's
 * records, so the tasklets, the outbox and the inbox are always of one
 * instant; a transfer is sent only after a checkpoint that holds it
 * (durable), acknowledged only after one that holds the import, and an
 * import does nothing outside the runtime (its remote operation, a
 * rendezvous) before that commit (n->held).  write_rows changes nothing.
 * detach_store means the store is closing: the node goes on in memory
 * only, everything counted durable.
 */
#include "node_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the node's tables in the store ---- */

static const tl__table outbox_table = {"outbox", "xid", "peer", NULL, "data"};
static const tl__table inbox_table = {"inbox", "xid", "peer", "time", NULL};

/* The outbox rows: transfers not yet durable (all after n->undurable),
 * and deletions of the durable ones since acknowledged or refused. */
static int write_outbox(tl_node *n, tl__store_tx *tx)
{
    int rc = TL_OK;
    for (outx *x = n->undurable; x && rc == TL_OK; x = x->next) {
        if (x->cargo) /* its rows' layers write the departure here too */
            rc = tl__cargo_wrap(n, tx, x);
        tl__row r = {x->xid, x->peer, 0, x->data, x->len};
        if (rc == TL_OK)
            rc = tl__tx_put(tx, &outbox_table, &r);
    }
    for (size_t i = 0; i < n->out_gone.n && rc == TL_OK; i++)
        rc = tl__tx_del(tx, &outbox_table, n->out_gone.v[i].s);
    return rc;
}

/* The inbox rows: ids taken (with their time and peer) that are still
 * held, deletions of ids forgotten or aged out that were not taken again. */
static int write_inbox(tl_node *n, tl__store_tx *tx)
{
    int rc = TL_OK;
    char xid[40];
    for (size_t i = 0; i < n->in_new.n && rc == TL_OK; i++) {
        const innew *e = &n->in_new.v[i];
        if (!tl__xset_has_at(&n->seen, e->k, e->at))
            continue; /* forgotten already: in_gone deletes it */
        tl__xid_format(e->k, xid);
        tl__row r = {xid, e->peer, e->at, NULL, 0};
        rc = tl__tx_put(tx, &inbox_table, &r);
    }
    for (size_t i = 0; i < n->in_gone.n && rc == TL_OK; i++) {
        tl__xid_format(n->in_gone.v[i], xid);
        rc = tl__tx_del(tx, &inbox_table, xid);
    }
    return rc;
}

/* In every checkpoint's transaction: what changed since the last commit
 * (nothing here changes until rows_committed says it is durable). */
static int write_rows(void *ud, tl__store_tx *tx)
{
    tl_node *n = ud;
    int rc = write_outbox(n, tx);
    return rc == TL_OK ? write_inbox(n, tx) : rc;
}

/* The held imports take up their waits (a remote operation goes out). */
static void restart_held(tl_node *n)
{
    while (n->held.n) {
        tl_tasklet *t = n->held.v[--n->held.n];
        tl__import_restart(n->rt, t);
        tl_tasklet_release(t);
    }
}

/* That checkpoint committed: everything write_rows wrote is durable. */
static void rows_committed(void *ud)
{
    tl_node *n = ud;
    for (outx *x = n->undurable; x; x = x->next)
        x->durable = 1;
    n->undurable = NULL;
    n->out_gone.n = n->in_new.n = n->in_gone.n = 0;
    n->need_ckpt = 0;
    restart_held(n);
}

/* The store is closing: from now on, memory only. */
static void detach_store(void *ud)
{
    tl_node *n = ud;
    rows_committed(n);
    n->store = NULL;
    for (outx *x = n->out; x; x = x->next)
        x->durable = 1;
}

static const tl__participant node_participant = {"node's outbox and inbox", write_rows,
                                                  detach_store, rows_committed};

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

/* An inbox row: its id, taken at its time.  A row without one (time 0,
 * written by an older version) or with one in the future counts from now
 * and is written again with that time. */
static int read_inbox_row(void *ud, const tl__row *r)
{
    tl_node *n = ud;
    xkey k;
    if (!tl__xid_parse(r->key, &k))
        return TL_OK;
    int64_t now = tl_now(n->rt), at = r->time > 0 && r->time <= now ? r->time : now;
    int rc = tl__xset_add(&n->seen, k, at);
    if (rc == TL_OK)
        tl__access_taken(n, k, r->peer);
    if (rc == TL_OK && VEC_PUSH(n->inlog, ((inid){k, at})) != 0)
        rc = TL_ENOMEM;
    if (rc == TL_OK && at != r->time) {
        innew e = {k, at, ""};
        snprintf(e.peer, sizeof e.peer, "%s", r->peer ? r->peer : "");
        rc = VEC_PUSH(n->in_new, e) != 0 ? TL_ENOMEM : TL_OK;
        n->need_ckpt = 1;
    }
    return rc == TL_OK ? rc : tl__seterr(n->rt, TL_ENOMEM, "reading the inbox: out of memory");
}

static int inid_cmp(const void *a, const void *b)
{
    int64_t x = ((const inid *)a)->at, y = ((const inid *)b)->at;
    return (x > y) - (x < y);
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
    if (n->inlog.n) /* oldest first, for aging */
        qsort(n->inlog.v, n->inlog.n, sizeof *n->inlog.v, inid_cmp);
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
 * removals before FORGET.  rows_committed does the bookkeeping (for this
 * checkpoint and any other). */
int tl__node_checkpoint(tl_node *n)
{
    if (!n->need_ckpt || !n->store)
        return TL_OK;
    tl__store_touch(n->store);
    int rc = tl_store_checkpoint(n->store);
    if (rc != TL_OK)
        return tl__seterr(n->rt, rc, "checkpoint for a transfer: %s",
                          tl_store_errmsg(n->store));
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
        if (!durable)
            tl__node_log(n, "closing: the outbox could not be checkpointed: %s",
                         tl_store_errmsg(n->store));
    }
    if (n->store)
        tl__store_leave(n->store, &node_participant, n);
    return durable;
}

/* ---- what changes: the rows to write at the next checkpoint ---- */

void tl__outbox_gone(tl_node *n, const outx *x)
{
    xidstr r;
    if (!n->store || !x->durable)
        return; /* no row: never written, or no store */
    snprintf(r.s, sizeof r.s, "%s", x->xid);
    if (VEC_PUSH(n->out_gone, r) != 0) /* the row stays: resent, acknowledged again */
        tl__node_log(n, "out of memory: transfer %s stays in the store's outbox", x->xid);
}

int tl__inbox_add(tl_node *n, xkey k, const char *peer)
{
    int64_t at = tl_now(n->rt);
    innew e = {k, at, ""};
    snprintf(e.peer, sizeof e.peer, "%s", peer);
    if (tl__xset_add(&n->seen, k, at) != TL_OK)
        return TL_ENOMEM;
    tl__access_taken(n, k, peer);
    if (VEC_PUSH(n->inlog, ((inid){k, at})) != 0) {
        tl__xset_take(&n->seen, k, at);
        return TL_ENOMEM;
    }
    if (n->store && VEC_PUSH(n->in_new, e) != 0) {
        tl__xset_take(&n->seen, k, at);
        n->inlog_stale++;
        return TL_ENOMEM;
    }
    n->need_ckpt |= n->store != NULL;
    return TL_OK;
}

/* k left n->seen: its row goes with the next checkpoint. */
static void inbox_dropped(tl_node *n, xkey k)
{
    n->inlog_stale++;
    if (!n->store)
        return;
    n->need_ckpt = 1;
    if (VEC_PUSH(n->in_gone, k) != 0) /* the row stays: aged out after a restart */
        tl__node_log(n, "out of memory: an inbox id stays in the store");
}

void tl__inbox_forget(tl_node *n, xkey k)
{
    if (tl__xset_take(&n->seen, k, INT64_MIN))
        inbox_dropped(n, k);
}

/* The aging log without its garbage: entries before inlog_head and those
 * no longer in n->seen. */
static void inlog_compact(tl_node *n)
{
    size_t j = 0;
    for (size_t i = n->inlog_head; i < n->inlog.n; i++)
        if (tl__xset_has_at(&n->seen, n->inlog.v[i].k, n->inlog.v[i].at))
            n->inlog.v[j++] = n->inlog.v[i];
    n->inlog.n = j;
    n->inlog_head = n->inlog_stale = 0;
}

void tl__inbox_age(tl_node *n)
{
    int64_t now = n->inbox_keep >= 0 && n->inlog_head < n->inlog.n ? tl_now(n->rt) : 0;
    while (n->inbox_keep >= 0 && n->inlog_head < n->inlog.n) { /* no clock read without */
        const inid *e = &n->inlog.v[n->inlog_head];
        if (e->at > now || now - e->at < n->inbox_keep)
            break; /* oldest first: the rest is younger */
        n->inlog_head++;
        if (tl__xset_take(&n->seen, e->k, e->at))
            inbox_dropped(n, e->k); /* counted stale, and it leaves the log now: */
        if (n->inlog_stale)
            n->inlog_stale--;
    }
    size_t garbage = n->inlog_head + n->inlog_stale;
    if (garbage > 64 && garbage > n->inlog.n - garbage)
        inlog_compact(n);
}

int tl__import_hold(tl_node *n, tl_tasklet *t)
{
    if (!n->store) {
        tl__import_restart(n->rt, t);
        return TL_OK;
    }
    if (VEC_PUSH(n->held, t) != 0)
        return TL_ENOMEM;
    tl_tasklet_retain(t);
    n->need_ckpt = 1;
    return TL_OK;
}

void tl__import_unhold(tl_node *n, tl_tasklet *t)
{
    if (n->held.n && n->held.v[n->held.n - 1] == t) {
        n->held.n--;
        tl_tasklet_release(t);
    }
}

/* At tl_node_free, after tl__node_store_close: an import still held was
 * never checkpointed; it is undone (its source sends it again). */
void tl__node_durable_free(tl_node *n)
{
    while (n->held.n) {
        tl_tasklet *t = n->held.v[--n->held.n];
        if (t->state < TL_DONE)
            tl__tasklet_depart(t, TL_EMOVED, "import undone: the node closed before a "
                               "checkpoint held it");
        tl_tasklet_release(t);
    }
    free(n->held.v);
    free(n->out_gone.v);
    free(n->in_new.v);
    free(n->in_gone.v);
    free(n->inlog.v);
}
