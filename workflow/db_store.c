/*
 * db_store.c -- the workflow tables on a store without a SQLite
 * connection (PostgreSQL): the same tables, rows and records as db.c's
 * (docs/FORMAT.md section 11), reached through the store's row operations
 * (persist.h, "rows for the layers above") instead of SQL.
 *
 * What differs from SQLite, and how:
 * - The tables are made when the engine starts (tl__store_tables), so
 *   that posters can insert before the first checkpoint; each has the
 *   backend's write-order column (tl_seq on PostgreSQL), which is the
 *   message's seq.
 * - Woken by announcements, not inotify: the engine listens on the store
 *   (tl__store_watch) before it first reads the messages, a post
 *   announces its row at commit, so none is missed; the engine polls the
 *   listener's socket and, when it fired, reads the rows since its cursor.
 * - A finished workflow's final row is announced with its commit, so an
 *   awaiting process (tl_wf_get) wakes then.
 * - Retention reads the wf rows to find the old finished ones (at most
 *   once a second) and deletes their steps and messages by workflow.
 * Invariants: as db.c's -- the owner writes only inside the checkpoint
 * transaction; posters only insert into wf_msg, one transaction each.
 */
#include "wf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const tl__table tl__wf_t_wf = {"wf", "id", "status", "updated", "rec"};
const tl__table tl__wf_t_step = {"wf_step", "key", "wf", "time", "data"};
/* posters insert: seq order must be commit order (rows_since's cursor) */
const tl__table tl__wf_t_msg = {"wf_msg", "key", "wf", "time", "data", 1};
const tl__table tl__wf_t_chan = {"wf_chan", "name", "kind", "time", "data"};

static int store_err(tl_wf *wf, int rc, const char *what)
{
    return tl__wf_err(wf, rc, "workflows: %s: %s", what, tl_store_errmsg(wf->st));
}

int tl__wf_dbs_init(tl_wf *wf)
{
    static const tl__table *const all[] = {&tl__wf_t_wf, &tl__wf_t_step, &tl__wf_t_msg,
                                           &tl__wf_t_chan};
    int rc = tl__store_tables(wf->st, all, TL_COUNTOF(all));
    if (rc != TL_OK)
        return store_err(wf, rc, "creating the workflow tables");
    rc = tl__store_watch(wf->st, &wf->listen);
    if (rc != TL_OK)
        return store_err(wf, rc, "listening for posted messages");
    wf->watch = tl__store_listener_fd(wf->listen);
    return TL_OK;
}

/* ---- one workflow's row ---- */

typedef struct got_wf {
    void **rec;
    size_t *len;
    int *status;
} got_wf;

static int take_wf(void *ud, const tl__row *r)
{
    got_wf *g = ud;
    *g->status = tl__wf_status_parse(r->peer);
    if (!g->rec)
        return TL_OK;
    *g->rec = malloc(r->len ? r->len : 1);
    if (!*g->rec)
        return TL_ENOMEM;
    memcpy(*g->rec, r->data, r->len);
    *g->len = r->len;
    return TL_OK;
}

int tl__wf_dbs_get(tl_store *st, const char *id, void **rec, size_t *len, int *status)
{
    got_wf g = {rec, len, status};
    return tl__store_row_get(st, &tl__wf_t_wf, id, take_wf, &g);
}

static int take_step(void *ud, const tl__row *r)
{
    return tl__wf_unpack_step(r->data, r->len, ud);
}

int tl__wf_dbs_step(tl_wf *wf, const char *key, wf_out *o)
{
    int rc = tl__store_row_get(wf->st, &tl__wf_t_step, key, take_step, o);
    return rc == TL_OK || rc == TL_ENOENT ? rc : store_err(wf, rc, "reading a step");
}

/* ---- posted messages ---- */

/* Whether the listener heard an announcement (or lost its connection and
 * made it again: something may have been missed). */
int tl__wf_dbs_changed(tl_wf *wf)
{
    return wf->listen && tl_store_listener_wait(wf->listen, 0, NULL, 0) == TL_OK;
}

static int take_msg(void *ud, const tl__row *r)
{
    tl_wf *wf = ud;
    wf->cursor = r->seq;
    wf_msg *m = calloc(1, sizeof *m);
    const void *val = NULL;
    if (!m)
        return tl__wf_err(wf, TL_ENOMEM, "workflows: out of memory taking in messages");
    if (tl__wf_unpack_msg(r->data, r->len, &m->kind, m->topic, &val, &m->len, &m->taken) !=
        TL_OK)
        m->taken = -1; /* unreadable: skipped (tasklet wf show lists it) */
    m->val = (void *)val;
    m->seq = r->seq;
    snprintf(m->key, sizeof m->key, "%s", r->key);
    snprintf(m->wf, sizeof m->wf, "%s", r->peer);
    m->posted = r->time;
    if (m->taken) {
        free(m->val);
        free(m);
        return TL_OK;
    }
    return tl__wf_intake_one(wf, r->peer, m);
}

int tl__wf_dbs_intake(tl_wf *wf)
{
    int rc = tl__store_rows_since(wf->st, &tl__wf_t_msg, wf->cursor, take_msg, wf);
    return rc == TL_OK || wf->errmsg[0] ? rc : store_err(wf, rc, "reading posted messages");
}

/* ---- restore ---- */

typedef struct live_rows {
    tl_wf *wf;
    int (*fn)(tl_wf *wf, void *ud, const char *id, const char *status, const void *p,
              size_t n);
    void *ud;
} live_rows;

static int take_live(void *ud, const tl__row *r)
{
    live_rows *l = ud;
    if (tl__wf_status_parse(r->peer) >= TL_WF_DONE)
        return TL_OK;
    return l->fn(l->wf, l->ud, r->key, r->peer, r->data, r->len);
}

int tl__wf_dbs_live(tl_wf *wf,
                    int (*fn)(tl_wf *wf, void *ud, const char *id, const char *status,
                              const void *p, size_t n),
                    void *ud)
{
    live_rows l = {wf, fn, ud};
    int rc = tl__store_rows(wf->st, &tl__wf_t_wf, take_live, &l);
    return rc == TL_OK || wf->errmsg[0] ? rc : store_err(wf, rc, "reading the workflows");
}

/* ---- retention ---- */

typedef struct old_ids {
    int64_t cut;
    char (*id)[TL_WF_ID_MAX + 1];
    size_t n, cap;
} old_ids;

static int take_old(void *ud, const tl__row *r)
{
    old_ids *o = ud;
    if (tl__wf_status_parse(r->peer) < TL_WF_DONE || r->time >= o->cut)
        return TL_OK;
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 16;
        void *nv = realloc(o->id, nc * sizeof *o->id);
        if (!nv)
            return TL_ENOMEM;
        o->id = nv;
        o->cap = nc;
    }
    snprintf(o->id[o->n++], sizeof o->id[0], "%s", r->key);
    return TL_OK;
}

/* Inside the commit: finished workflows updated before cut go, with their
 * steps and messages. */
int tl__wf_dbs_prune(tl_wf *wf, tl__store_tx *tx, int64_t cut)
{
    old_ids o = {cut, NULL, 0, 0};
    int rc = tl__store_rows(wf->st, &tl__wf_t_wf, take_old, &o);
    for (size_t i = 0; rc == TL_OK && i < o.n; i++) {
        rc = tl__tx_del_peer(tx, &tl__wf_t_step, o.id[i]);
        if (rc == TL_OK)
            rc = tl__tx_del_peer(tx, &tl__wf_t_msg, o.id[i]);
        if (rc == TL_OK)
            rc = tl__tx_del(tx, &tl__wf_t_wf, o.id[i]);
    }
    free(o.id);
    return rc == TL_OK ? TL_OK : store_err(wf, rc, "removing workflows past the retention");
}
