/*
 * decode_chan.c -- a channel record.
 *
 * [id, name, capacity, preference, schedule_all, closing, extrefs,
 * buffer, senders, receivers, extra?] (FORMAT.md 5): a shell or new channel gets its
 * buffer and flags, then its queues link the tasklets (or select cases)
 * waiting on it.  extra may give a home ([node, id, name]): the channel is
 * a proxy for a channel of another node.  On import a channel record is
 * only a home, resolved to the local channel or a proxy (resolve_home).
 * Invariants: every tasklet a queue names exists and is blocked on this
 * very channel (or select case); no waiter is queued twice; a remote
 * channel has no buffer; the buffer never holds more than its capacity.
 */
#include "decode.h"

#include <stdio.h>

/* ---- pass 3: channels ---- */

static int link_waiter(tl__loader *ld, tl_chan *ch, uint64_t tid, int64_t idx, int op)
{
    tl_tasklet *t = tl__idmap_find(&ld->tasklets, tid);
    if (!t || t->state != TL_BLOCKED)
        return tl__corrupt(ld, "channel #%llu queues tasklet #%llu, which is not blocked",
                           (unsigned long long)ch->id, (unsigned long long)tid);
    tl__waiter *wt;
    if (idx < 0) {
        if (t->wait != (op == TL_OP_SEND ? TL_WAIT_SEND : TL_WAIT_RECV))
            return tl__corrupt(ld, "tasklet #%llu is queued on channel #%llu but waits for something else",
                               (unsigned long long)t->id, (unsigned long long)ch->id);
        wt = &t->w;
        wt->on = (uintptr_t)ch;
        if (ch->remote) {
            if (wt->link.next != &wt->link)
                return tl__corrupt(ld, "tasklet #%llu is queued twice", (unsigned long long)t->id);
            tl__proxy_enqueue(ch, t, op);
            return TL_OK;
        }
    } else {
        if (ch->remote)
            return tl__corrupt(ld, "channel #%llu is remote and queues a select",
                               (unsigned long long)ch->id);
        tl__sel *s = t->ext ? t->ext->sel : NULL;
        if (t->wait != TL_WAIT_SELECT || !s || idx >= s->n || tl__slot(s->cases[idx].ch) != ch ||
            s->cases[idx].op != op)
            return tl__corrupt(ld, "channel #%llu queues a select case that tasklet #%llu lacks",
                               (unsigned long long)ch->id, (unsigned long long)t->id);
        wt = &s->ws[idx].w;
        wt->on = (uintptr_t)ch | 1;
    }
    if (wt->link.next != &wt->link)
        return tl__corrupt(ld, "tasklet #%llu is queued twice", (unsigned long long)t->id);
    tl__chan_enqueue(ch, wt, op);
    return TL_OK;
}

/* [count]: the queue's waiters are those whose records give a queue
 * number for it, in number order (linked by tl__ld_link_numbered). */
static int dec_numbered(tl__loader *ld, tl_chan *ch, const msgpack_object *q, int op)
{
    const msgpack_object *n = &q->via.array.ptr[0];
    if (!is_uint(n) || n->via.u64 > ld->ntasklets * TL_SELECT_MAX || ch->remote)
        return tl__corrupt(ld, "channel #%llu: malformed queue", (unsigned long long)ch->id);
    void *v = ld->lqs;
    int rc = tl__ld_room(ld, &v, &ld->caplq, ld->nlq, sizeof *ld->lqs, 8);
    ld->lqs = v;
    if (rc != TL_OK)
        return rc;
    ld->lqs[ld->nlq++] = (tl__lqueue){ch, op, n->via.u64};
    ch->lq |= (uint8_t)(op == TL_OP_SEND ? 1 : 2);
    ld->numbered = 1;
    return TL_OK;
}

/* Whether w's queue number follows *prev (listed queues keep them in
 * order; a reader of a store written without them numbers afresh). */
static void check_order(tl__loader *ld, const tl__waiter *w, uint64_t *prev)
{
    const tl__pstate *ps = tl__pstate_peek(ld->rt);
    if (!ps || !ps->tix.on)
        return;
    uint64_t seq = tl__tix_seq((tl__tindex *)&ps->tix, w);
    if (!seq || seq <= *prev)
        ld->renumber = 1;
    *prev = seq;
}

/* [ids (delta-coded), cases ([position, case index] of select waiters)],
 * or [count] (dec_numbered) */
static int dec_queue(tl__loader *ld, tl_chan *ch, const msgpack_object *q, int op)
{
    const msgpack_object *ids = &q->via.array.ptr[0], *cases = &q->via.array.ptr[1];
    uint64_t id = 0, prev = 0;
    uint32_t next_sel = 0;
    int rc = TL_OK;
    if (is_array(q, 1))
        return dec_numbered(ld, ch, q, op);
    if (!is_array(q, 2) || !is_array(ids, UINT32_MAX) || !is_array(cases, UINT32_MAX))
        return tl__corrupt(ld, "channel #%llu: malformed queue", (unsigned long long)ch->id);
    for (uint32_t i = 0; i < ids->via.array.size && rc == TL_OK; i++) {
        const msgpack_object *c = next_sel < cases->via.array.size ? &cases->via.array.ptr[next_sel] : NULL;
        int64_t idx = -1;
        if (!is_int(&ids->via.array.ptr[i]))
            return tl__corrupt(ld, "channel #%llu: malformed queue", (unsigned long long)ch->id);
        id += (uint64_t)as_int(&ids->via.array.ptr[i]);
        if (c && is_array(c, 2) && is_uint(&c->via.array.ptr[0]) && c->via.array.ptr[0].via.u64 == i) {
            if (!is_int(&c->via.array.ptr[1]))
                return tl__corrupt(ld, "channel #%llu: malformed queue",
                                   (unsigned long long)ch->id);
            idx = as_int(&c->via.array.ptr[1]);
            if (idx < 0)
                return tl__corrupt(ld, "channel #%llu: negative select case",
                                   (unsigned long long)ch->id);
            next_sel++;
        }
        rc = link_waiter(ld, ch, id, idx, op);
        if (rc == TL_OK)
            check_order(ld, (const tl__waiter *)(op == TL_OP_SEND ? ch->sendq.prev
                                                                  : ch->recvq.prev), &prev);
    }
    if (rc == TL_OK && next_sel != cases->via.array.size)
        return tl__corrupt(ld, "channel #%llu: select cases out of order",
                           (unsigned long long)ch->id);
    return rc;
}

/* The channel of a record: a new one, or the shell references made. */
static tl_chan *chan_of_record(tl__loader *ld, const msgpack_object *a)
{
    uint64_t id = a[0].via.u64;
    size_t cap = (size_t)a[2].via.u64;
    tl_chan *ch = tl__ld_chan(ld, id);
    if (!ch)
        return NULL;
    if (!ch->reserved) {
        tl__corrupt(ld, "channel #%llu appears twice", (unsigned long long)id);
        return NULL;
    }
    ch->reserved = 0;
    if (cap) {
        ch->buf = tl__alloc(ld->rt, cap * sizeof *ch->buf);
        if (!ch->buf) {
            tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
            return NULL;
        }
        ch->cap = cap;
    }
    return ch;
}

/* The 11th item of a channel record: {"home": [node, id, name|nil],
 * "pinned": true}, both optional.  *node is NULL without a home. */
typedef struct chan_extra {
    char node[64];
    int home, pinned;
    uint64_t id;
    char name[256];
    int named;
} chan_extra;

static int chan_extra_of(tl__loader *ld, const msgpack_object *o, chan_extra *x)
{
    memset(x, 0, sizeof *x);
    if (o->via.array.size < 11)
        return TL_OK;
    const msgpack_object *m = &o->via.array.ptr[10];
    if (m->type != MSGPACK_OBJECT_MAP)
        return tl__corrupt(ld, "a channel record's extra is not a map");
    const msgpack_object *home = map_get(m, "home"), *pinned = map_get(m, "pinned");
    if (pinned)
        x->pinned = pinned->type == MSGPACK_OBJECT_BOOLEAN && pinned->via.boolean;
    if (!home)
        return TL_OK;
    const msgpack_object *h = home->via.array.ptr;
    if (!is_array(home, 3) || h[0].type != MSGPACK_OBJECT_STR || h[0].via.str.size == 0 ||
        h[0].via.str.size >= sizeof x->node || !is_uint(&h[1]) ||
        (h[2].type != MSGPACK_OBJECT_NIL &&
         (h[2].type != MSGPACK_OBJECT_STR || h[2].via.str.size >= sizeof x->name)) ||
        (h[1].via.u64 == 0 && h[2].type == MSGPACK_OBJECT_NIL) ||
        memchr(h[0].via.str.ptr, 0, h[0].via.str.size) ||
        (h[2].type == MSGPACK_OBJECT_STR && memchr(h[2].via.str.ptr, 0, h[2].via.str.size)))
        return tl__corrupt(ld, "a channel record has a malformed home");
    x->home = 1;
    memcpy(x->node, h[0].via.str.ptr, h[0].via.str.size);
    x->id = h[1].via.u64;
    if (h[2].type == MSGPACK_OBJECT_STR) {
        x->named = 1;
        memcpy(x->name, h[2].via.str.ptr, h[2].via.str.size);
    }
    return TL_OK;
}

/* Whether the node (if any) lets the tasklet being imported reach local
 * channel ch; one it does not is reported as missing. */
static int import_allowed(tl_runtime *rt, tl_chan *ch)
{
    const tl__layer *ly = tl__node_layer(rt);
    return !ly->ops || !ly->ops->import_chan || ly->ops->import_chan(ly->state, ch);
}

/* Import: the channel a moving tasklet's reference means here (retained
 * for the loader): the local one when its home is this node, else a proxy
 * (an existing one for the same home channel, or a new one). */
static tl_chan *resolve_home(tl__loader *ld, const chan_extra *x)
{
    tl_runtime *rt = ld->rt;
    tl_chan *ch = NULL;
    if (strcmp(x->node, rt->node) == 0) {
        ch = tl__chan_at(x->named ? tl_chan_find_name(rt, x->name) : tl_chan_find(rt, x->id));
        if (!ch || ch->remote || !import_allowed(rt, ch)) {
            char id[24];
            snprintf(id, sizeof id, "#%llu", (unsigned long long)x->id);
            tl__seterr(rt, TL_ENOENT, "%s: the moving tasklet refers to channel %s/%s, which "
                       "no longer exists here", ld->where, x->node, x->named ? x->name : id);
            return NULL;
        }
        return tl_chan_retain(ch);
    }
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next) {
        tl_chan *p = TL__CONTAINER(l, tl_chan, all);
        const tl__remote *r = p->remote;
        if (r && r->id == x->id && strcmp(r->node, x->node) == 0 && !r->name == !x->named &&
            (!x->named || strcmp(r->name, x->name) == 0))
            return tl_chan_retain(p);
    }
    if (tl__chan_create(rt, 0, &ch) != TL_OK)
        return NULL;
    if (tl__chan_make_proxy(ch, x->node, x->id, x->named ? x->name : NULL) != TL_OK) {
        tl_chan_release(ch);
        return NULL;
    }
    return ch;
}

static int dec_chan_import(tl__loader *ld, const msgpack_object *o)
{
    const msgpack_object *a = o->via.array.ptr;
    chan_extra x;
    if (!is_array(o, 11) || !is_uint(&a[0]))
        return tl__corrupt(ld, "a moving tasklet's channel record is malformed");
    int rc = chan_extra_of(ld, o, &x);
    if (rc != TL_OK)
        return rc;
    if (!x.home)
        return tl__corrupt(ld, "a moving tasklet's channel #%llu has no home",
                           (unsigned long long)a[0].via.u64);
    void **slot = a[0].via.u64 ? tl__idmap_slot(&ld->chans, a[0].via.u64) : NULL;
    if (!slot || *slot)
        return tl__corrupt(ld, "channel id %llu is out of range or appears twice",
                           (unsigned long long)a[0].via.u64);
    tl_chan *ch = resolve_home(ld, &x);
    if (!ch)
        return ld->rt->errcode;
    *slot = ch;
    ld->chans.n++;
    return TL_OK;
}

int tl__dec_chan(tl__loader *ld, const msgpack_object *o)
{
    const msgpack_object *a = o->via.array.ptr;
    chan_extra x;
    if (ld->import)
        return dec_chan_import(ld, o);
    if ((!is_array(o, 10) && !is_array(o, 11)) || !is_uint(&a[0]) || !is_uint(&a[2]) ||
        a[2].via.u64 > ((uint64_t)1 << 24))
        return tl__corrupt(ld, "a channel record is malformed");
    int xrc = chan_extra_of(ld, o, &x);
    if (xrc != TL_OK)
        return xrc;
    tl_chan *ch = chan_of_record(ld, a);
    if (!ch)
        return ld->rt->errcode;
    if (x.home && (a[2].via.u64 || a[7].type != MSGPACK_OBJECT_ARRAY || a[7].via.array.size))
        return tl__corrupt(ld, "remote channel #%llu has a buffer", (unsigned long long)ch->id);
    if (x.home && tl__chan_make_proxy(ch, x.node, x.id, x.named ? x.name : NULL) != TL_OK)
        return ld->rt->errcode;
    if (x.pinned && !ch->pinned) {
        ch->pinned = 1;
        ch->refs++;
    }
    if ((a[1].type != MSGPACK_OBJECT_NIL && a[1].type != MSGPACK_OBJECT_STR) || !is_int(&a[3]) ||
        as_int(&a[3]) < -1 || as_int(&a[3]) > 1 || a[4].type != MSGPACK_OBJECT_BOOLEAN ||
        a[5].type != MSGPACK_OBJECT_BOOLEAN || !is_array(&a[7], UINT32_MAX) ||
        a[7].via.array.size > ch->cap || (!is_array(&a[8], 2) && !is_array(&a[8], 1)) ||
        (!is_array(&a[9], 2) && !is_array(&a[9], 1)))
        return tl__corrupt(ld, "channel #%llu: malformed record", (unsigned long long)ch->id);
    if (a[1].type == MSGPACK_OBJECT_STR) {
        char buf[256];
        snprintf(buf, sizeof buf, "%.*s", (int)a[1].via.str.size, a[1].via.str.ptr);
        if (tl_chan_set_name(ch, buf) != TL_OK)
            return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    }
    ch->pref = (int8_t)as_int(&a[3]);
    ch->sched_all = a[4].via.boolean;
    ch->closing = a[5].via.boolean;
    int rc = TL_OK;
    for (uint32_t i = 0; i < a[7].via.array.size && rc == TL_OK; i++) {
        rc = tl__dec_value(ld, &a[7].via.array.ptr[i], &ch->buf[i], 0);
        ch->count += rc == TL_OK;
    }
    if (rc == TL_OK)
        rc = dec_queue(ld, ch, &a[8], TL_OP_SEND);
    if (rc == TL_OK)
        rc = dec_queue(ld, ch, &a[9], TL_OP_RECV);
    return rc;
}

/* ---- queues given by number ---- */

int tl__ld_number(tl__loader *ld, tl__waiter *w, const msgpack_object *o)
{
    const tl__pstate *ps = tl__pstate_peek(ld->rt);
    if (!is_uint(o) || o->via.u64 == 0)
        return tl__corrupt(ld, "a queue number is not a positive integer");
    if (ps && ps->tix.on)
        tl__tix_set_seq((tl__tindex *)&ps->tix, w, o->via.u64);
    void *v = ld->qents;
    int rc = tl__ld_room(ld, &v, &ld->capq, ld->nq, sizeof *ld->qents, 256);
    ld->qents = v;
    if (rc != TL_OK)
        return rc;
    ld->qents[ld->nq++] = (tl__keyed){o->via.u64, w};
    return TL_OK;
}

static uint64_t waiter_tid(const tl__waiter *w)
{
    return w->on & 1 ? ((const tl__selw *)w)->sel->t->id : TL__CONTAINER(w, tl_tasklet, w)->id;
}

/* The channel and operation of a waiter noted by tl__ld_number. */
static tl_chan *waiter_chan(const tl__waiter *w, int *op)
{
    if (w->on & 1) {
        const tl__selw *sw = (const tl__selw *)w;
        *op = sw->sel->cases[sw->idx].op;
        return (tl_chan *)(w->on & ~(uintptr_t)1);
    }
    *op = TL__CONTAINER(w, tl_tasklet, w)->wait == TL_WAIT_SEND ? TL_OP_SEND : TL_OP_RECV;
    return (tl_chan *)w->on;
}

/* Links the noted waiters of numbered queues in number order. */
static int link_in_order(tl__loader *ld)
{
    for (size_t i = 0; i < ld->nq; i++) {
        tl__waiter *w = ld->qents[i].obj;
        int op;
        tl_chan *ch = waiter_chan(w, &op);
        if (!(ch->lq & (op == TL_OP_SEND ? 1 : 2)))
            continue; /* a listed queue: linked already */
        if (w->link.next != &w->link)
            return tl__corrupt(ld, "tasklet #%llu is queued twice",
                               (unsigned long long)waiter_tid(w));
        tl__chan_enqueue(ch, w, op);
    }
    return TL_OK;
}

/* Each numbered queue holds as many waiters as its record counts. */
static int check_numbered(tl__loader *ld)
{
    for (size_t i = 0; i < ld->nlq; i++) {
        const tl_chan *ch = ld->lqs[i].ch;
        int32_t got = ld->lqs[i].op == TL_OP_SEND ? ch->nsend : ch->nrecv;
        if ((uint64_t)got != ld->lqs[i].count)
            return tl__corrupt(ld, "channel #%llu: its record counts %llu %s, %ld records "
                               "give it a queue number", (unsigned long long)ch->id,
                               (unsigned long long)ld->lqs[i].count,
                               ld->lqs[i].op == TL_OP_SEND ? "senders" : "receivers",
                               (long)got);
    }
    for (size_t i = 0; i < ld->nlq; i++)
        ld->lqs[i].ch->lq = 0;
    return TL_OK;
}

int tl__ld_link_numbered(tl__loader *ld)
{
    tl__pstate *ps = tl__pstate_peek(ld->rt);
    int rc = ld->numbered ? tl__sort_keyed(ld->rt, ld->qents, ld->nq) : TL_OK;
    if (rc != TL_OK)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    if (ld->numbered && (rc = link_in_order(ld)) == TL_OK)
        rc = check_numbered(ld);
    if (rc == TL_OK && ld->renumber && ps && ps->tix.on)
        tl__tix_number_queues(ld->rt, &ps->tix);
    return rc;
}
