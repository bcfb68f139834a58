/*
 * move.c -- moving a workflow to another node's store (tl_wf_move),
 * exactly once: its tasklet goes in the node's transfer, and its rows
 * (its wf row, its steps, its messages) go with it as the transfer's
 * cargo (persist/cargo.c; docs/ARCHITECTURE.md, "Moving a workflow").
 *
 * At the source:
 *
 *   live --tl_wf_move--> moving --cargo_out (in the checkpoint writing the
 *        transfer: the cargo read, the row written "moved", the messages
 *        not yet received marked moved)--> committed: tl__wf_moves_committed
 *        frees the record.  Refused later (NACK): tl__wf_cargo_in with
 *        refused set brings it back from the cargo; undone before it left
 *        (the node closed): back from memory (back_unsent).
 *
 * tl_wf_move commits first, so every result recorded and every message
 * received is in the rows the hand-off reads.  A workflow waiting on its
 * wake channel is woken with nil and marked rebind: its await receives
 * again, on the wake channel it has where it runs next (await.c).  The
 * root frame drops its reference to the wake channel before the snapshot
 * (it would stay behind as a remote channel), and gets the new one where
 * the workflow arrives.
 *
 * At the destination, tl__wf_cargo_in checks (no workflow of that id
 * here, unless one that moved away; its function and step registered),
 * makes the record and queues the rows (wf->arrivals), which the write
 * hook puts into the checkpoint that commits the import; once it
 * committed, the waits resume as after a restore (tl__wf_resume_wait: a
 * recorded step is handed over, one in flight runs again with the same
 * key) and the arrived messages are taken in (their rows have new seqs,
 * past the intake cursor).
 *
 * Invariants: a moving record is in the hash (its id is taken) but not
 * live; nothing runs for it; its rows are written only by cargo_out.
 */
#include "wf_internal.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAKEN_MOVED (-2) /* a message row's taken: it went with its workflow */

static wf_rec *moving_by_tid(tl_wf *wf, uint64_t tid, wf_rec ***at)
{
    for (wf_rec **p = &wf->moves; *p; p = &(*p)->mnext)
        if ((*p)->move_tid == tid) {
            if (at)
                *at = p;
            return *p;
        }
    return NULL;
}

/* ---- tl_wf_move ---- */

static int has_live_children(tl_wf *wf, const wf_rec *r)
{
    for (size_t i = 0; i < wf->hcap; i++)
        for (wf_rec *c = wf->hash[i]; c; c = c->hnext)
            if (c != r && strcmp(c->parent, r->id) == 0 && c->status < TL_WF_DONE)
                return 1;
    return 0;
}

/* Whether r may move now (an error naming why not). */
static int movable(tl_wf *wf, wf_rec *r)
{
    const char *id = r->id;
    if (r->moving)
        return tl__wf_err(wf, TL_EBUSY, "tl_wf_move: workflow %s is moving to %s already", id,
                          r->move_to);
    if (r->status >= TL_WF_DONE)
        return tl__wf_err(wf, TL_EDONE, "tl_wf_move: workflow %s finished (%s)", id,
                          tl_wf_status_name(r->status));
    if (r->cancel)
        return tl__wf_err(wf, TL_ESTATE, "tl_wf_move: workflow %s is being cancelled", id);
    if (r->wait == W_JOIN || r->wait == W_SELECT)
        return tl__wf_err(wf, TL_ENOTSUP, "tl_wf_move: workflow %s waits in a %s; it can move "
                          "when it waits in a step, a receive or a sleep, or runs", id,
                          r->wait == W_JOIN ? "join" : "TL_WF_SELECT");
    wf_rec *parent = r->parent[0] ? tl__wf_find(wf, r->parent) : NULL;
    if ((parent && parent->status < TL_WF_DONE) || has_live_children(wf, r))
        return tl__wf_err(wf, TL_ENOTSUP, "tl_wf_move: workflow %s has a live %s here: parents "
                          "and children move only once the other finished", id,
                          parent ? "parent" : "child");
    if (r->arrived || tl__wf_result_pending(wf, r) || tl_chan_count(r->wake))
        return tl__wf_err(wf, TL_EBUSY, "tl_wf_move: a result is being handed to workflow %s; "
                          "run the engine (tl_wf_run) and try again", id);
    int st = tl_tasklet_state(r->t), w = tl_tasklet_wait(r->t);
    if (st == TL_BLOCKED && w == TL_WAIT_RECV && r->wait != W_NONE)
        return TL_OK; /* on its wake channel */
    if (st == TL_RUNNABLE || (st == TL_BLOCKED && w == TL_WAIT_SLEEP))
        return TL_OK;
    return tl__wf_err(wf, st == TL_BLOCKED ? TL_ENOTSUP : TL_ESTATE, "tl_wf_move: workflow %s "
                      "%s; it can move when it waits in a step, a receive or a sleep, or runs",
                      id, st == TL_BLOCKED ? "waits on a channel of its own (channels stay)"
                                           : "is not suspended");
}

/* Why id cannot move when it is not live here. */
static int not_here(tl_wf *wf, const char *id)
{
    void *p = NULL;
    size_t n = 0;
    int st = 0;
    int rc = tl__wf_db_find(wf, id, &p, &n, &st);
    wf_rec tmp;
    int64_t a, b;
    memset(&tmp, 0, sizeof tmp);
    if (rc == TL_OK && st == TL_WF_MOVED)
        tl__wf_unpack_rec(p, n, &tmp, &a, &b);
    free(p);
    free(tmp.result);
    free(tmp.sarg);
    if (rc == TL_ENOENT)
        return tl__wf_err(wf, TL_ENOENT, "tl_wf_move: no workflow %s", id);
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "tl_wf_move(%s): reading the store failed", id);
    if (st == TL_WF_MOVED)
        return tl__wf_err(wf, TL_EMOVED, "tl_wf_move: workflow %s moved to node %s already",
                          id, tmp.move_to);
    return tl__wf_err(wf, TL_EDONE, "tl_wf_move: workflow %s finished (%s)", id,
                      tl_wf_status_name(st));
}

/* Wakes r off its wake channel (it will receive again, rebind), drops
 * the root frame's reference to the channel, and hands the tasklet to
 * the node. */
static int depart(tl_wf *wf, wf_rec *r, const char *peer, size_t cargo)
{
    const tl__layer *nl = tl__node_layer(wf->rt);
    if (tl_tasklet_state(r->t) == TL_BLOCKED && tl_tasklet_wait(r->t) == TL_WAIT_RECV) {
        if (tl_chan_try_send(r->wake, tl_nil()) != TL_OK)
            return tl__wf_err(wf, TL_ESTATE, "tl_wf_move: workflow %s cannot be woken", r->id);
        r->rebind = 1;
        tl__wf_dirty(wf, r);
    }
    tl__wf_root_wake(r->t, NULL);
    r->move_tid = tl_tasklet_id(r->t);
    int rc = nl->ops->migrate(nl->state, r->t, peer, cargo);
    if (rc != TL_OK) {
        tl__wf_root_wake(r->t, r->wake); /* rebind stays: harmless here */
        return tl__wf_err(wf, rc, "tl_wf_move(%s): %s", r->id, tl_errmsg(wf->rt));
    }
    tl__wf_abandon(wf, r); /* an attempt in flight runs again there, same key */
    return TL_OK;
}

int tl_wf_move(tl_wf *wf, const char *id, const char *peer)
{
    if (!wf || wf->magic != WF_MAGIC)
        return TL_EMISUSE;
    if (!id || !peer || !peer[0])
        return tl__wf_err(wf, TL_EINVAL, "tl_wf_move: an id and a node are needed");
    if (tl_current(wf->rt))
        return tl__wf_err(wf, TL_EBUSY, "tl_wf_move: called from inside a tasklet");
    const tl__layer *nl = tl__node_layer(wf->rt);
    if (!nl->ops || !nl->ops->migrate)
        return tl__wf_err(wf, TL_ENOTSUP, "tl_wf_move: the engine's runtime has no node "
                          "(tl_node_new with the engine's store)");
    if (!wf->db)
        return tl__wf_err(wf, TL_ENOTSUP, "tl_wf_move: moving workflows needs a SQLite store "
                          "for now (this engine's is on PostgreSQL)");
    int rc = tl_wf_commit(wf); /* every result and message received is in the rows */
    if (rc != TL_OK)
        return rc;
    wf_rec *r = tl__wf_find(wf, id);
    if (!r)
        return not_here(wf, id);
    rc = movable(wf, r);
    void *p = NULL;
    size_t n = 0;
    if (rc == TL_OK && tl__wf_pack_rec(r, &p, &n) != TL_OK)
        rc = tl__wf_err(wf, TL_ENOMEM, "tl_wf_move: out of memory");
    free(p);
    if (rc == TL_OK)
        rc = depart(wf, r, peer, n + tl__wf_db_size(wf, id) + 1024);
    if (rc != TL_OK)
        return rc;
    r->moving = 1;
    r->move_written = 0;
    r->gen++; /* its timers are stale */
    snprintf(r->move_to, sizeof r->move_to, "%s", peer);
    r->move_error[0] = 0;
    r->mnext = wf->moves;
    wf->moves = r;
    wf->live--;
    return TL_OK;
}

/* ---- the hand-off: inside the checkpoint writing the transfer ---- */

typedef struct rowv {
    struct row1 {
        char *key;
        int64_t time;
        void *p;
        size_t n;
    } *v;
    size_t k, cap;
} rowv;

static int rowv_add(void *ud, const char *key, int64_t time, const void *p, size_t n)
{
    rowv *rv = ud;
    if (rv->k == rv->cap) {
        size_t nc = rv->cap ? rv->cap * 2 : 16;
        struct row1 *nv = realloc(rv->v, nc * sizeof *nv);
        if (!nv)
            return TL_ENOMEM;
        rv->v = nv;
        rv->cap = nc;
    }
    struct row1 *e = &rv->v[rv->k];
    e->key = strdup(key ? key : "");
    e->p = malloc(n ? n : 1);
    if (!e->key || !e->p) {
        free(e->key);
        free(e->p);
        return TL_ENOMEM;
    }
    memcpy(e->p, p, n);
    e->n = n;
    e->time = time;
    rv->k++;
    return TL_OK;
}

static void rowv_free(rowv *rv)
{
    for (size_t i = 0; i < rv->k; i++) {
        free(rv->v[i].key);
        free(rv->v[i].p);
    }
    free(rv->v);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_rows(msgpack_packer *pk, const char *name, const rowv *rv)
{
    pack_str(pk, name);
    msgpack_pack_array(pk, rv->k);
    for (size_t i = 0; i < rv->k; i++) {
        msgpack_pack_array(pk, 3);
        pack_str(pk, rv->v[i].key);
        msgpack_pack_int64(pk, rv->v[i].time);
        msgpack_pack_bin(pk, rv->v[i].n);
        msgpack_pack_bin_body(pk, rv->v[i].p, rv->v[i].n);
    }
}

/* {id, status, rec, steps, msgs}: what travels (docs/FORMAT.md 11). */
static int pack_cargo(const wf_rec *r, const rowv *steps, const rowv *msgs, void **out,
                      size_t *len)
{
    void *rec;
    size_t rlen;
    if (tl__wf_pack_rec(r, &rec, &rlen) != TL_OK)
        return TL_ENOMEM;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "id");
    pack_str(&pk, r->id);
    pack_str(&pk, "status");
    msgpack_pack_int(&pk, r->status);
    pack_str(&pk, "rec");
    msgpack_pack_bin(&pk, rlen);
    msgpack_pack_bin_body(&pk, rec, rlen);
    free(rec);
    pack_rows(&pk, "steps", steps);
    pack_rows(&pk, "msgs", msgs);
    if (!sb.data) {
        msgpack_sbuffer_destroy(&sb);
        return TL_ENOMEM;
    }
    *out = sb.data;
    *len = sb.size;
    return TL_OK;
}

/* The source's rows for the departure: the workflow "moved" (naming
 * where), its messages not yet received marked moved. */
static int write_departure(tl_wf *wf, tl__store_tx *tx, wf_rec *r, const rowv *msgs)
{
    int rc = TL_OK;
    for (size_t i = 0; i < msgs->k && rc == TL_OK; i++) {
        int kind;
        char topic[TL_WF_NAME_MAX + 1];
        const void *val;
        size_t vlen;
        int64_t taken;
        if (tl__wf_unpack_msg(msgs->v[i].p, msgs->v[i].n, &kind, topic, &val, &vlen,
                              &taken) != TL_OK)
            continue;
        void *p = NULL;
        size_t n;
        if (taken == 0 && tl__wf_pack_msg(kind, topic, val, vlen, TAKEN_MOVED, &p, &n) == TL_OK)
            rc = tl__wf_db_put(wf, tx, 0, msgs->v[i].key, r->id, msgs->v[i].time, p, n);
        free((void *)val);
        free(p);
    }
    wf_rec gone = *r;
    gone.status = TL_WF_MOVED;
    gone.wait = W_NONE;
    gone.what[0] = 0;
    gone.t = NULL;
    gone.wake = NULL;
    gone.rebind = 0;
    gone.updated = tl_now(wf->rt);
    return rc == TL_OK ? tl__wf_db_put_rec(wf, tx, &gone) : rc;
}

int tl__wf_cargo_out(void *ud, tl__store_tx *tx, uint64_t tid, const char *peer, void **out,
                     size_t *len)
{
    tl_wf *wf = ud;
    wf_rec *r = moving_by_tid(wf, tid, NULL);
    *out = NULL;
    *len = 0;
    if (!r)
        return TL_OK;
    (void)peer;
    rowv steps = {0}, msgs = {0};
    int rc = tl__wf_db_rows(wf, 1, r->id, rowv_add, &steps);
    if (rc == TL_OK)
        rc = tl__wf_db_rows(wf, 0, r->id, rowv_add, &msgs);
    if (rc == TL_OK)
        rc = pack_cargo(r, &steps, &msgs, out, len);
    if (rc == TL_OK)
        rc = write_departure(wf, tx, r, &msgs);
    rowv_free(&steps);
    rowv_free(&msgs);
    if (rc != TL_OK) {
        free(*out);
        *out = NULL;
        return rc == TL_ENOMEM ? tl__wf_err(wf, rc, "moving %s: out of memory", r->id) : rc;
    }
    r->move_written = 1;
    return TL_OK;
}

/* ---- arrival (and return): tl__wf_cargo_in ---- */

typedef struct cargo {
    char id[TL_WF_ID_MAX + 1];
    int status;
    const void *rec;
    size_t rlen;
    const msgpack_object *steps, *msgs;
} cargo;

static const msgpack_object *cget(const msgpack_object_map *m, const char *k)
{
    size_t kn = strlen(k);
    for (uint32_t i = 0; i < m->size; i++)
        if (m->ptr[i].key.type == MSGPACK_OBJECT_STR && m->ptr[i].key.via.str.size == kn &&
            memcmp(m->ptr[i].key.via.str.ptr, k, kn) == 0)
            return &m->ptr[i].val;
    return NULL;
}

static int rows_ok(const msgpack_object *a)
{
    if (!a || a->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        const msgpack_object *e = &a->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 3 ||
            e->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
            e->via.array.ptr[0].via.str.size >= TL_WF_ID_MAX + 280 ||
            (e->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
             e->via.array.ptr[1].type != MSGPACK_OBJECT_NEGATIVE_INTEGER) ||
            e->via.array.ptr[2].type != MSGPACK_OBJECT_BIN)
            return 0;
    }
    return 1;
}

static int cargo_parse(const msgpack_object *o, cargo *c)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return TL_ECORRUPT;
    const msgpack_object_map *m = &o->via.map;
    const msgpack_object *id = cget(m, "id"), *st = cget(m, "status"), *rec = cget(m, "rec");
    c->steps = cget(m, "steps");
    c->msgs = cget(m, "msgs");
    if (!id || id->type != MSGPACK_OBJECT_STR || id->via.str.size == 0 ||
        id->via.str.size > TL_WF_ID_MAX || !st || st->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        st->via.u64 < TL_WF_PENDING || st->via.u64 > TL_WF_WAITING || !rec ||
        rec->type != MSGPACK_OBJECT_BIN || !rows_ok(c->steps) || !rows_ok(c->msgs))
        return TL_ECORRUPT;
    memcpy(c->id, id->via.str.ptr, id->via.str.size);
    c->id[id->via.str.size] = 0;
    c->status = (int)st->via.u64;
    c->rec = rec->via.bin.ptr;
    c->rlen = rec->via.bin.size;
    return tl__wf_check_id(c->id) == TL_OK ? TL_OK : TL_ECORRUPT;
}

/* Whether this engine can take r (decoded from the cargo) in. */
static int can_take(tl_wf *wf, const wf_rec *r, const char *refused)
{
    const char *node = wf->rt->node[0] ? wf->rt->node : "(this node)";
    int st = 0;
    if (tl__wf_find(wf, r->id))
        return tl__wf_err(wf, TL_EEXIST, "node %s runs a workflow %s already", node, r->id);
    int rc = tl__wf_db_find(wf, r->id, NULL, NULL, &st);
    if (rc == TL_OK && st != TL_WF_MOVED && !refused)
        return tl__wf_err(wf, TL_EEXIST, "node %s's store has a workflow %s already (%s)",
                          node, r->id, tl_wf_status_name(st));
    if (rc != TL_OK && rc != TL_ENOENT)
        return tl__wf_err(wf, rc, "node %s: reading its store failed", node);
    char name[80];
    snprintf(name, sizeof name, "%s", r->func);
    char *at = strrchr(name, '@');
    if (at)
        *at = 0;
    if (!at || !tl_lookup(wf->rt, name, (uint32_t)strtoul(at + 1, NULL, 10)))
        return tl__wf_err(wf, TL_ENOFUNC, "node %s has no workflow function %s registered "
                          "(tl_wf_register)", node, r->func);
    if (r->wait == W_STEP && !tl__wf_step_find(wf, r->what))
        return tl__wf_err(wf, TL_ENOFUNC, "node %s has no step %s registered "
                          "(tl_wf_register_step): workflow %s waits in it", node, r->what, r->id);
    return TL_OK;
}

static void arrivals_drop(wf_arrival *a)
{
    while (a) {
        wf_arrival *nx = a->next;
        free(a->data);
        free(a);
        a = nx;
    }
}

/* The cargo's rows as arrivals (in order), onto *list; TL_ENOMEM. */
static int queue_rows(const msgpack_object *rows, int step, const char *id, wf_arrival ***tail)
{
    for (uint32_t i = 0; i < rows->via.array.size; i++) {
        const msgpack_object *e = rows->via.array.ptr[i].via.array.ptr;
        wf_arrival *a = calloc(1, sizeof *a);
        size_t n = e[2].via.bin.size;
        if (!a || !(a->data = malloc(n ? n : 1))) {
            free(a);
            return TL_ENOMEM;
        }
        a->step = step;
        memcpy(a->key, e[0].via.str.ptr, e[0].via.str.size);
        snprintf(a->wf, sizeof a->wf, "%s", id);
        a->time = e[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)e[1].via.u64
                                                                : e[1].via.i64;
        memcpy(a->data, e[2].via.bin.ptr, n);
        a->len = n;
        **tail = a;
        *tail = &a->next;
    }
    return TL_OK;
}

/* r (taken in, or back) is live again with tasklet t: a wake channel of
 * its own, found from t, counted. */
static int adopt(tl_wf *wf, wf_rec *r, tl_tasklet *obj)
{
    tl_tasklet *t = tl__tasklet_handle(tl__tasklet_at(obj));
    if (!r->wake && tl_chan_new(wf->rt, 1, &r->wake) != TL_OK)
        return tl__wf_err(wf, TL_ENOMEM, "taking workflow %s in: out of memory", r->id);
    if (!tl__wf_root_wake(t, r->wake))
        return tl__wf_err(wf, TL_ECORRUPT, "workflow %s came with a tasklet that is not a "
                          "workflow's", r->id);
    if (tl_tasklet_set_userdata(t, r) != TL_OK)
        return tl__wf_err(wf, TL_ENOMEM, "taking workflow %s in: out of memory", r->id);
    r->t = tl_tasklet_retain(t);
    r->arrived = 1;
    wf->arrived = 1;
    wf->live++;
    wf->force = 1;
    tl__wf_dirty(wf, r);
    return TL_OK;
}

/* The record the cargo describes, checked; *rows its rows. */
static int take_cargo(tl_wf *wf, const cargo *c, const char *from, const char *refused,
                      wf_rec **out, wf_arrival **rows)
{
    wf_rec *r = calloc(1, sizeof *r);
    int64_t tid, wid;
    if (!r)
        return tl__wf_err(wf, TL_ENOMEM, "taking workflow %s in: out of memory", c->id);
    r->wf = wf;
    snprintf(r->id, sizeof r->id, "%s", c->id);
    int rc = tl__wf_unpack_rec(c->rec, c->rlen, r, &tid, &wid);
    if (rc != TL_OK)
        rc = tl__wf_err(wf, TL_ECORRUPT, "workflow %s: its row in the transfer does not "
                        "decode", c->id);
    if (rc == TL_OK)
        rc = can_take(wf, r, refused);
    wf_arrival *list = NULL, **tail = &list;
    if (rc == TL_OK && (queue_rows(c->steps, 1, c->id, &tail) != TL_OK ||
                        queue_rows(c->msgs, 0, c->id, &tail) != TL_OK))
        rc = tl__wf_err(wf, TL_ENOMEM, "taking workflow %s in: out of memory", c->id);
    if (rc != TL_OK) {
        arrivals_drop(list);
        free(r->result);
        free(r->sarg);
        free(r);
        return rc;
    }
    r->status = c->status;
    if (r->wait == W_SLEEP || r->wait > W_SELECT)
        r->wait = W_NONE; /* in TL_SLEEP: the runtime's own timer */
    r->move_to[0] = 0;
    if (!refused)
        snprintf(r->moved_from, sizeof r->moved_from, "%s", from);
    snprintf(r->move_error, sizeof r->move_error, "%s", refused ? refused : "");
    *out = r;
    *rows = list;
    return TL_OK;
}

static int arrive(tl_wf *wf, tl_tasklet *t, const char *from, const void *p, size_t n,
                  const char *refused)
{
    msgpack_unpacked up;
    size_t off = 0;
    cargo c;
    msgpack_unpacked_init(&up);
    int rc = msgpack_unpack_next(&up, p, n, &off) == MSGPACK_UNPACK_SUCCESS
                 ? cargo_parse(&up.data, &c) : TL_ECORRUPT;
    wf_rec *r = NULL;
    wf_arrival *rows = NULL;
    if (rc != TL_OK)
        rc = tl__wf_err(wf, TL_ECORRUPT, "a moving workflow's rows are malformed");
    else
        rc = take_cargo(wf, &c, from, refused, &r, &rows);
    msgpack_unpacked_destroy(&up);
    if (rc == TL_OK && tl__wf_hash_put(wf, r) != TL_OK)
        rc = tl__wf_err(wf, TL_ENOMEM, "taking workflow %s in: out of memory", r->id);
    if (rc == TL_OK && (rc = adopt(wf, r, t)) != TL_OK)
        tl__wf_hash_del(wf, r);
    if (rc != TL_OK) {
        arrivals_drop(rows);
        if (r)
            tl__wf_rec_free(wf, r);
        return rc;
    }
    wf_arrival **end = &wf->arrivals;
    while (*end)
        end = &(*end)->next;
    *end = rows;
    return TL_OK;
}

/* One of r's message rows, read again after a move was undone: intake
 * skipped it while r was moving (the row was to travel). */
static int reread_row(void *ud, const char *key, int64_t time, const void *p, size_t n)
{
    wf_rec *r = ud;
    for (wf_msg *m = r->mail; m; m = m->next)
        if (strcmp(m->key, key) == 0)
            return TL_OK; /* in its mailbox since before the move */
    wf_msg *m = calloc(1, sizeof *m);
    const void *val = NULL;
    if (!m)
        return tl__wf_err(r->wf, TL_ENOMEM, "workflow %s: out of memory", r->id);
    if (tl__wf_unpack_msg(p, n, &m->kind, m->topic, &val, &m->len, &m->taken) != TL_OK ||
        m->taken) {
        free((void *)val);
        free(m);
        return TL_OK;
    }
    m->val = (void *)val;
    m->posted = time;
    snprintf(m->key, sizeof m->key, "%s", key);
    snprintf(m->wf, sizeof m->wf, "%s", r->id);
    return tl__wf_intake_one(r->wf, r->id, m);
}

/* The transfer of tid never left (the node closed first): the record
 * still in memory is live again with tasklet t. */
static int back_unsent(tl_wf *wf, tl_tasklet *t, uint64_t tid, const char *refused)
{
    wf_rec **at;
    wf_rec *r = moving_by_tid(wf, tid, &at);
    if (!r)
        return TL_OK; /* not a workflow's */
    *at = r->mnext;
    r->mnext = NULL;
    r->moving = 0;
    r->move_written = 0;
    r->move_to[0] = 0;
    snprintf(r->move_error, sizeof r->move_error, "%s", refused);
    tl_tasklet_set_userdata(r->t, NULL);
    tl_tasklet_release(r->t);
    r->t = NULL;
    r->gen++;
    int rc = adopt(wf, r, t);
    return rc == TL_OK ? tl__wf_db_rows(wf, 0, r->id, reread_row, r) : rc;
}

int tl__wf_cargo_in(void *ud, tl_tasklet *t, uint64_t tid, const char *from, const void *p,
                    size_t n, const char *refused)
{
    tl_wf *wf = ud;
    if (!p)
        return back_unsent(wf, t, tid, refused ? refused : "");
    if (!wf->db)
        return tl__seterr(wf->rt, TL_ENOTSUP, "node %s keeps its workflows on PostgreSQL: "
                          "workflows cannot move there yet", wf->rt->node);
    int rc = arrive(wf, t, from, p, n, refused);
    if (rc != TL_OK && wf->rt->errcode != rc)
        tl__seterr(wf->rt, rc, "%s", wf->errmsg);
    return rc;
}

int tl__wf_arrivals_write(tl_wf *wf, tl__store_tx *tx)
{
    int rc = TL_OK;
    for (wf_arrival *a = wf->arrivals; a && rc == TL_OK; a = a->next)
        rc = tl__wf_db_put(wf, tx, a->step, a->key, a->wf, a->time, a->data, a->len);
    return rc;
}

/* A record taken in is committed: its wait resumes as after a restore,
 * and a message it waits for that is in its mailbox already is handed
 * over (posted before it left: the rows taken in come by intake). */
static void resume(tl_wf *wf, wf_rec *r)
{
    r->arrived = 0;
    if (tl__wf_resume_wait(wf, r) != TL_OK) {
        tl__wf_deliver(wf, r, tl_errcode(wf->rt), wf->errmsg, NULL, 0);
        return;
    }
    if (r->wait == W_RECV && !r->expired) {
        wf_msg *m = tl__wf_take_msg(wf, r);
        if (m)
            tl__wf_deliver(wf, r, TL_OK, NULL, m->val, m->len);
    }
}

void tl__wf_moves_committed(tl_wf *wf)
{
    for (wf_rec **p = &wf->moves; *p;) {
        wf_rec *r = *p;
        if (!r->move_written) {
            p = &r->mnext;
            continue;
        }
        *p = r->mnext; /* handed off: the node has it, the row says moved */
        tl__wf_hash_del(wf, r);
        tl__wf_rec_free(wf, r);
    }
    arrivals_drop(wf->arrivals);
    wf->arrivals = NULL;
    if (!wf->arrived)
        return;
    wf->arrived = 0;
    for (size_t i = 0; i < wf->hcap; i++)
        for (wf_rec *r = wf->hash[i]; r; r = r->hnext)
            if (r->arrived)
                resume(wf, r);
    wf->data_version = -7; /* the arrived messages: intake in the next round */
}

void tl__wf_moves_free(tl_wf *wf)
{
    arrivals_drop(wf->arrivals);
    wf->arrivals = NULL;
    wf->moves = NULL; /* the records are freed with the hash */
}
