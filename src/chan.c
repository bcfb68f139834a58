/*
 * chan.c -- channels with Stackless semantics, buffers and select.
 *
 * A channel keeps two FIFO queues of waiters: senders (each offering a
 * value: a plain sender keeps it in t->xfer, a select waiter in its case)
 * and receivers.  balance = nsend - nrecv.  A value is only ever moved,
 * never copied through a pointer the user owns.
 *
 * After a rendezvous the side that waited is woken.  Who runs next
 * (after_rendezvous) is Stackless's rule: with schedule_all both go to the
 * back of the run queue, woken side first; if the waiting side is the
 * preferred one (preference -1 prefers receivers, 1 senders) it runs next
 * and the current tasklet goes to the back; otherwise the woken side goes
 * to the back and the current tasklet continues.
 *
 * Every queued waiter holds a reference on its channel, so a channel is
 * never freed under a blocked tasklet.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define MAX_CAPACITY ((size_t)1 << 24)
#define SEL_TAG ((uintptr_t)1)

/* The channel behind handle h, or NULL with the reason in the error of
 * the runtime h came from (when it can be told). */
static tl_chan *at(const tl_chan *h, const char *what)
{
    tl_chan *ch = tl__chan_at(h);
    if (!ch && h)
        tl__bad_chan(h, what);
    return ch;
}

/* A stale handle's slot is still mapped and its runtime pointer readable
 * (internal.h): the runtime it came from. */
static tl_runtime *slot_runtime(const tl_chan *h)
{
    const tl_chan *ch = tl__slot(h);
    tl_runtime *rt = ch ? ch->rt : NULL;
    return rt && rt->magic == TL__MAGIC_RT ? rt : NULL;
}

const char *tl__chan_problem(const tl_chan *h, char *buf, size_t n)
{
    const tl_chan *ch = tl__slot(h);
    int known = ch && slot_runtime(h) &&
                (ch->magic == TL__MAGIC_CHAN || ch->magic == TL__MAGIC_DEAD);
    int reused = known && ch->magic == TL__MAGIC_CHAN; /* a freed slot's other fields are poisoned */
    return tl__handle_problem("channel", "tl_chan_retain", ch, known, reused, reused ? ch->id : 0, buf,
                              n);
}

int tl__bad_chan(const tl_chan *h, const char *what)
{
    char why[200];
    tl_runtime *rt = slot_runtime(h);
    if (!rt)
        return TL_EMISUSE;
    return tl__seterr(rt, TL_EMISUSE, "%s: %s", what, tl__chan_problem(h, why, sizeof why));
}

const char *tl__chan_label(const tl_chan *ch, char *buf, size_t n)
{
    if (ch->remote && ch->remote->name)
        snprintf(buf, n, "remote channel %s/%s", ch->remote->node, ch->remote->name);
    else if (ch->remote)
        snprintf(buf, n, "remote channel %s/#%llu", ch->remote->node,
                 (unsigned long long)ch->remote->id);
    else if (ch->name)
        snprintf(buf, n, "channel #%llu '%s'", (unsigned long long)ch->id, ch->name);
    else
        snprintf(buf, n, "channel #%llu", (unsigned long long)ch->id);
    return buf;
}

/* ---- lifecycle ---- */

int tl_chan_new(tl_runtime *rt, size_t capacity, tl_chan **out)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (!out)
        return tl__seterr(rt, TL_EINVAL, "tl_chan_new: out is NULL");
    int rc = tl__chan_create(rt, capacity, out);
    if (rc == TL_OK)
        *out = tl__chan_handle(*out);
    return rc;
}

int tl__chan_create(tl_runtime *rt, size_t capacity, tl_chan **out)
{
    if (capacity > MAX_CAPACITY)
        return tl__seterr(rt, TL_ERANGE, "tl_chan_new: capacity %zu exceeds %zu",
                          capacity, MAX_CAPACITY);
    tl_chan *ch = tl__slab_get(rt, &rt->chan_slab);
    tl_value *buf = capacity ? tl__alloc(rt, capacity * sizeof *buf) : NULL;
    if (!ch || (capacity && !buf)) {
        if (ch)
            tl__slab_put(&rt->chan_slab, ch);
        tl__free(rt, buf, capacity * sizeof *buf);
        return tl__seterr(rt, TL_ENOMEM, "tl_chan_new: out of memory");
    }
    tl__chan_clear(ch);
    ch->magic = TL__MAGIC_CHAN;
    ch->pref = -1;
    ch->refs = 1;
    ch->id = ++rt->next_cid;
    ch->rt = rt;
    ch->buf = buf;
    ch->cap = capacity;
    tl__list_init(&ch->sendq);
    tl__list_init(&ch->recvq);
    tl__list_push_back(&rt->chans, &ch->all);
    tl__chan_touch(ch);
    *out = ch;
    return TL_OK;
}

static void chan_free(tl_chan *ch)
{
    tl_runtime *rt = ch->rt;
    for (size_t i = 0; i < ch->count; i++)
        tl_release(ch->buf[(ch->head + i) % ch->cap]);
    tl__free(rt, ch->buf, ch->cap * sizeof *ch->buf);
    tl__strfree(rt, ch->name);
    if (ch->remote) {
        tl__strfree(rt, ch->remote->name);
        tl__free(rt, ch->remote, sizeof *ch->remote);
    }
    tl__list_unlink(&ch->all);
    if (ch->dirty)
        tl__list_unlink(&ch->dlink);
    if (!rt->tearing_down)
        tl__note_chan_gone(rt, ch->id);
    tl__slab_put(&rt->chan_slab, ch);
}

tl_chan *tl_chan_retain(tl_chan *h)
{
    tl_chan *ch = at(h, "tl_chan_retain");
    if (!ch)
        return NULL;
    ch->refs++;
    return h;
}

void tl_chan_release(tl_chan *h)
{
    tl_chan *ch = at(h, "tl_chan_release");
    if (!ch)
        return;
    if (--ch->refs == 0 && !ch->rt->tearing_down)
        chan_free(ch);
}

void tl__chan_free_all(tl_runtime *rt)
{
    while (!tl__list_empty(&rt->chans))
        chan_free(TL__CONTAINER(rt->chans.next, tl_chan, all));
}

int tl__chan_make_proxy(tl_chan *ch, const char *node, uint64_t id, const char *name)
{
    tl__remote *r = tl__calloc(ch->rt, sizeof *r);
    char *nm = name ? tl__strdup(ch->rt, name) : NULL;
    if (!r || (name && !nm)) {
        tl__free(ch->rt, r, sizeof *r);
        tl__strfree(ch->rt, nm);
        return tl__seterr(ch->rt, TL_ENOMEM, "out of memory for a remote channel");
    }
    snprintf(r->node, sizeof r->node, "%s", node);
    r->id = id;
    r->name = nm;
    ch->remote = r;
    tl__chan_touch(ch);
    return TL_OK;
}

int tl_chan_pin(tl_chan *h, int on)
{
    tl_chan *ch = at(h, "tl_chan_pin");
    if (!ch)
        return TL_EMISUSE;
    if (!on == !ch->pinned)
        return TL_OK;
    ch->pinned = on != 0;
    tl__chan_touch(ch);
    if (on)
        ch->refs++;
    else
        tl_chan_release(ch);
    return TL_OK;
}

int tl_chan_pinned(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_pinned");
    return ch ? ch->pinned : 0;
}


int tl_chan_remote(const tl_chan *h, const char **node, uint64_t *id)
{
    const tl_chan *ch = at(h, "tl_chan_remote");
    if (!ch || !ch->remote)
        return 0;
    if (node)
        *node = ch->remote->node;
    if (id)
        *id = ch->remote->id;
    return 1;
}

/* ---- properties ---- */

uint64_t tl_chan_id(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_id");
    return ch ? ch->id : 0;
}

const char *tl_chan_name(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_name");
    return ch ? ch->name : NULL;
}
size_t tl_chan_capacity(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_capacity");
    return ch ? ch->cap : 0;
}

size_t tl_chan_count(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_count");
    return ch ? ch->count : 0;
}

int tl_chan_balance(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_balance");
    return ch ? ch->nsend - ch->nrecv : 0;
}

int tl_chan_preference(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_preference");
    return ch ? ch->pref : 0;
}

int tl_chan_schedule_all(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_schedule_all");
    return ch ? ch->sched_all : 0;
}

int tl_chan_closing(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_closing");
    return ch ? ch->closing : 0;
}


int tl_chan_closed(const tl_chan *h)
{
    const tl_chan *ch = at(h, "tl_chan_closed");
    return ch && ch->closing && ch->nsend == 0 && ch->nrecv == 0 && ch->count == 0;
}

int tl_chan_set_name(tl_chan *h, const char *name)
{
    tl_chan *ch = at(h, "tl_chan_set_name");
    if (!ch)
        return TL_EMISUSE;
    char *copy = name ? tl__strdup(ch->rt, name) : NULL;
    if (name && !copy)
        return tl__seterr(ch->rt, TL_ENOMEM, "tl_chan_set_name: out of memory");
    tl__strfree(ch->rt, ch->name);
    ch->name = copy;
    tl__chan_touch(ch);
    return TL_OK;
}

int tl_chan_set_preference(tl_chan *h, int pref)
{
    tl_chan *ch = at(h, "tl_chan_set_preference");
    if (!ch)
        return TL_EMISUSE;
    ch->pref = (int8_t)((pref > 0) - (pref < 0)); /* Stackless keeps the sign */
    tl__chan_touch(ch);
    return TL_OK;
}

int tl_chan_set_schedule_all(tl_chan *h, int on)
{
    tl_chan *ch = at(h, "tl_chan_set_schedule_all");
    if (!ch)
        return TL_EMISUSE;
    ch->sched_all = on != 0;
    tl__chan_touch(ch);
    return TL_OK;
}

int tl_chan_close(tl_chan *h)
{
    tl_chan *ch = at(h, "tl_chan_close");
    if (!ch)
        return TL_EMISUSE;
    ch->closing = 1;
    tl__chan_touch(ch);
    return TL_OK;
}

int tl_chan_open(tl_chan *h)
{
    tl_chan *ch = at(h, "tl_chan_open");
    if (!ch)
        return TL_EMISUSE;
    ch->closing = 0;
    tl__chan_touch(ch);
    return TL_OK;
}

tl_chan *tl_chan_find(tl_runtime *rt, uint64_t id)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return NULL;
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->id == id)
            return tl__chan_handle(ch);
    }
    tl__seterr(rt, TL_ENOENT, "no channel #%llu in this runtime", (unsigned long long)id);
    return NULL;
}

tl_chan *tl_chan_find_name(tl_runtime *rt, const char *name)
{
    if (!rt || rt->magic != TL__MAGIC_RT || !name)
        return NULL;
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->name && !ch->remote && strcmp(ch->name, name) == 0)
            return tl__chan_handle(ch);
    }
    tl__seterr(rt, TL_ENOENT, "no channel named '%s' in this runtime", name);
    return NULL;
}

/* ---- waiters ---- */

static tl__link *queue_of(tl_chan *ch, int op) { return op == TL_OP_SEND ? &ch->sendq : &ch->recvq; }

void tl__chan_enqueue(tl_chan *ch, tl__waiter *w, int op)
{
    tl__list_push_back(queue_of(ch, op), &w->link);
    tl__chan_touch(ch);
    if (op == TL_OP_SEND)
        ch->nsend++;
    else
        ch->nrecv++;
    ch->refs++;
}

/* Unlinks w; the channel reference it held passes to the caller. */
static void dequeue(tl_chan *ch, tl__waiter *w, int op)
{
    tl__list_unlink(&w->link);
    tl__chan_touch(ch);
    if (op == TL_OP_SEND)
        ch->nsend--;
    else
        ch->nrecv--;
}

static tl__sel *sel_alloc(tl_runtime *rt, int n)
{
    size_t bytes = sizeof(tl__sel) + (size_t)n * sizeof(tl__selw);
    tl__sel *s = tl__alloc(rt, bytes);
    if (s)
        s->bytes = bytes;
    return s;
}

/* Ends a select: unlinks all its waiters but the one already taken
 * (fired), releases their channel references (the fired one's passes to
 * the caller), records the fired case. */
static tl_tasklet *sel_finish(tl__sel *sel, int fired)
{
    tl_tasklet *t = sel->t;
    for (int i = 0; i < sel->n; i++) {
        tl__selw *w = &sel->ws[i];
        tl_chan *ch = (tl_chan *)(w->w.on & ~SEL_TAG);
        if (i == fired)
            continue;
        dequeue(ch, &w->w, sel->cases[i].op);
        tl_chan_release(ch);
    }
    for (int i = 0; sel->owns_values && i < sel->n; i++)
        tl_value_set(&sel->cases[i].value, tl_nil());
    t->ext->sel = NULL;
    t->ext->sel_fired = fired;
    tl__free(t->rt, sel, sel->bytes);
    return t;
}

/* Drops a reference the caller knows is valid (no handle check). */
static inline void chan_unref(tl_chan *ch)
{
    if (--ch->refs == 0 && !ch->rt->tearing_down)
        chan_free(ch);
}

/* Unblocks the owner of waiter w (already dequeued from ch); for a
 * sender, *v receives the value it offered.  The waiter's reference on ch
 * passes to the caller, who drops it (chan_unref) once done with ch: the
 * waiter may have held the last one. */
static tl_tasklet *release_waiter(tl__waiter *w, tl__vw *v)
{
    tl_tasklet *t;
    if (w->on & SEL_TAG) {
        tl__selw *sw = (tl__selw *)w;
        tl_case *c = &sw->sel->cases[sw->idx];
        if (v)
            *v = tl__vw_of(tl_retain(c->value));
        t = sel_finish(sw->sel, sw->idx);
    } else {
        t = TL__CONTAINER(w, tl_tasklet, w);
        if (v) {
            *v = tl__vw_load(&t->xfer);
            tl__vw_store(&t->xfer, tl__vw_make(0, 0));
        }
    }
    t->w.on = 0;
    t->wait = TL_WAIT_NONE;
    t->rt->nblocked--;
    return t;
}

static tl_tasklet *take_sender(tl_chan *ch, tl__vw *v)
{
    tl__waiter *w = (tl__waiter *)ch->sendq.next;
    dequeue(ch, w, TL_OP_SEND);
    return release_waiter(w, v);
}

static tl_tasklet *take_receiver(tl_chan *ch)
{
    tl__waiter *w = (tl__waiter *)ch->recvq.next;
    dequeue(ch, w, TL_OP_RECV);
    return release_waiter(w, NULL);
}

void tl__chan_forget_waiter(tl_tasklet *t)
{
    if (t->wait == TL_WAIT_SELECT) {
        sel_finish(t->ext->sel, -1);
        t->ext->sel_fired = -1;
        return;
    }
    tl_chan *ch = (tl_chan *)t->w.on;
    if (ch->remote) {
        tl__list_unlink(&t->w.link);
        tl__chan_touch(ch);
        if (t->flags & TL__TF_REMOTE) {
            t->flags &= (uint16_t)~TL__TF_REMOTE;
            const tl__layer *node = tl__node_layer(t->rt);
            if (node->ops)
                node->ops->remote_cancel(node->state, ch, t);
        }
    } else {
        dequeue(ch, &t->w, t->wait == TL_WAIT_SEND ? TL_OP_SEND : TL_OP_RECV);
    }
    tl_chan_release(ch);
}

static inline size_t slot(const tl_chan *ch, size_t i);

/* ---- proxies: channels whose home is another node ---- */

void tl__proxy_enqueue(tl_chan *ch, tl_tasklet *t, int op)
{
    tl__list_push_back(op == TL_OP_SEND ? &ch->sendq : &ch->recvq, &t->w.link);
    t->w.on = (uintptr_t)ch;
    ch->refs++;
    tl__chan_touch(ch);
}

void tl__remote_complete(tl_tasklet *t, int code, const char *msg, tl_value v)
{
    tl_chan *ch = (tl_chan *)t->w.on;
    int wait = t->wait;
    tl__list_unlink(&t->w.link);
    t->flags &= (uint16_t)~TL__TF_REMOTE;
    t->w.on = 0;
    tl__chan_touch(ch);
    if (wait == TL_WAIT_SEND)
        tl_value_set(&t->xfer, tl_nil());
    if (code < 0) {
        tl_release(v);
        tl__deliver_error(t, code, msg);
    } else if (wait == TL_WAIT_RECV) {
        tl__deliver_value(t, tl__vw_of(v));
    } else {
        tl_release(v);
    }
    tl__mark(t->rt, t);
    tl__wake(t);
    tl_chan_release(ch);
}

static __attribute__((noinline, cold)) tl_status remote_block(tl_frame *f, tl_chan *ch, tl__vw v, int op)
{
    tl_tasklet *t = f->t;
    tl_runtime *rt = t->rt;
    const tl__layer *node = tl__node_layer(rt);
    if (!node->ops) {
        char label[96];
        tl__vw_release(v);
        return tl__op_error(f, TL_ELINK, "%s on %s: a remote channel, and this runtime has "
                            "no node", op == TL_OP_SEND ? "send" : "receive",
                            tl__chan_label(ch, label, sizeof label));
    }
    if (op == TL_OP_SEND)
        tl__vw_replace(&t->xfer, v);
    tl__proxy_enqueue(ch, t, op);
    tl__block(t, op == TL_OP_SEND ? TL_WAIT_SEND : TL_WAIT_RECV);
    if (node->ops->remote_op(node->state, ch, t, op) != TL_OK) {
        tl__list_unlink(&t->w.link);
        t->w.on = 0;
        t->wait = TL_WAIT_NONE;
        t->state = TL_RUNNING;
        rt->nblocked--;
        tl_value_set(&t->xfer, tl_nil());
        tl__deliver_error(t, rt->errcode, rt->errmsg);
        tl_chan_release(ch);
        return TL__CONT;
    }
    t->flags |= TL__TF_REMOTE;
    return TL__SWITCH;
}

void tl__chan_rematch(tl_chan *ch)
{
    ch->refs++;
    for (;;) {
        tl__vw v;
        if (ch->count && ch->nrecv) {
            v = tl__vw_load(&ch->buf[ch->head]);
            ch->head = slot(ch, 1);
            ch->count--;
            tl_tasklet *r = take_receiver(ch);
            tl__deliver_value(r, v);
            tl__runq_push_back(ch->rt, r);
            ch->refs--;
        } else if (ch->nsend && (ch->nrecv || ch->count < ch->cap)) {
            tl_tasklet *s = take_sender(ch, &v);
            tl__runq_push_back(ch->rt, s);
            ch->refs--;
            if (ch->nrecv) {
                tl_tasklet *r = take_receiver(ch);
                tl__deliver_value(r, v);
                tl__runq_push_back(ch->rt, r);
                ch->refs--;
            } else {
                tl__vw_store(&ch->buf[slot(ch, ch->count++)], v);
            }
        } else {
            break;
        }
        tl__chan_touch(ch);
    }
    tl_chan_release(ch);
}

/* Makes target runnable after a rendezvous; dir is +1 when cur sent,
 * -1 when it received.  cur is NULL outside tasklets. */
static tl_status after_rendezvous(tl_chan *ch, tl_tasklet *cur, tl_tasklet *target, int dir)
{
    tl_runtime *rt = ch->rt;
    if (cur) {
        if (ch->sched_all) {
            tl__runq_push_back(rt, target);
            tl__runq_push_back(rt, cur);
            return TL__SWITCH;
        }
        if (ch->pref == -dir) {
            tl__runq_push_front(rt, target);
            tl__runq_push_back(rt, cur);
            return TL__SWITCH;
        }
    }
    tl__runq_push_back(rt, target);
    return cur ? tl__cont(rt) : TL__CONT;
}

/* ---- the operations ---- */

/* Slot i places after head, wrapping without a division. */
static inline size_t slot(const tl_chan *ch, size_t i)
{
    size_t k = ch->head + i;
    return k >= ch->cap ? k - ch->cap : k;
}

/* Completes a send of v (owned) if it can without blocking. */
static inline __attribute__((always_inline)) bool send_now(tl_chan *ch, tl_tasklet *cur, tl__vw v, tl_status *st)
{
    if (ch->nrecv) {
        tl_tasklet *target = take_receiver(ch);
        tl__deliver_value(target, v);
        *st = after_rendezvous(ch, cur, target, +1);
        chan_unref(ch); /* the waiter's reference; ch may go now */
        return true;
    }
    if (ch->count < ch->cap) {
        tl__vw_store(&ch->buf[slot(ch, ch->count++)], v);
        tl__chan_touch(ch);
        *st = tl__cont(ch->rt);
        return true;
    }
    return false;
}

/* Completes a receive into *out if it can without blocking. */
static inline __attribute__((always_inline)) bool recv_now(tl_chan *ch, tl_tasklet *cur, tl__vw *out, tl_status *st)
{
    if (ch->count) {
        *out = tl__vw_load(&ch->buf[ch->head]);
        ch->head = slot(ch, 1);
        ch->count--;
        tl__chan_touch(ch);
        *st = tl__cont(ch->rt);
        if (ch->nsend) { /* a blocked sender's value takes the freed slot */
            tl__vw v;
            tl_tasklet *sender = take_sender(ch, &v);
            tl__vw_store(&ch->buf[slot(ch, ch->count++)], v);
            *st = after_rendezvous(ch, cur, sender, -1);
            chan_unref(ch); /* the waiter's reference */
        }
        return true;
    }
    if (ch->nsend) {
        tl_tasklet *sender = take_sender(ch, out);
        *st = after_rendezvous(ch, cur, sender, -1);
        chan_unref(ch); /* the waiter's reference; ch may go now */
        return true;
    }
    return false;
}

static __attribute__((noinline, cold)) tl_status send_closing(tl_frame *f, tl_chan *ch, tl__vw v)
{
    char label[96];
    tl__vw_release(v);
    return tl__op_error(f, TL_ECLOSED, "send on %s, which is closing",
                        tl__chan_label(ch, label, sizeof label));
}

static __attribute__((noinline, cold)) tl_status recv_closing(tl_frame *f, tl_chan *ch)
{
    char label[96];
    return tl__op_error(f, TL_ECLOSED, "receive on %s, which is %s",
                        tl__chan_label(ch, label, sizeof label),
                        tl_chan_closed(ch) ? "closed" : "closing");
}

static bool can_send(const tl_chan *ch) { return ch->nrecv || ch->count < ch->cap; }
static bool can_recv(const tl_chan *ch) { return ch->count || ch->nsend; }

/* An operation's channel handle h is invalid (ch NULL) or foreign. */
static __attribute__((noinline, cold)) tl_status bad_op_chan(tl_frame *f, const char *op,
                                                             const tl_chan *h, const tl_chan *ch)
{
    char why[200];
    if (ch)
        return tl__op_error(f, TL_EMISUSE, "%s: the channel belongs to another runtime", op);
    return tl__op_error(f, TL_EMISUSE, "%s: %s", op, tl__chan_problem(h, why, sizeof why));
}

/* The channel callback, given handles. */
static __attribute__((noinline)) void chan_event(tl_runtime *rt, tl_chan *ch, tl_tasklet *t,
                                                 int sending, int will_block)
{
    rt->chan_cb(rt->chan_ud, tl__chan_handle(ch), tl__tasklet_handle(t), sending, will_block);
}

static tl_status send_value(tl_frame *f, tl_chan *h, tl__vw v)
{
    tl_tasklet *t = f->t;
    tl_runtime *rt = t->rt;
    tl_chan *ch = tl__chan_at(h);
    tl_status st;
    if (!ch || ch->rt != rt) {
        tl__vw_release(v);
        return bad_op_chan(f, "send", h, ch);
    }
    if (rt->chan_cb)
        chan_event(rt, ch, t, 1, !can_send(ch) && !ch->closing);
    if (send_now(ch, t, v, &st))
        return st;
    if (ch->remote)
        return remote_block(f, ch, v, TL_OP_SEND);
    if (ch->closing)
        return send_closing(f, ch, v);
    tl__vw_replace(&t->xfer, v); /* a value left there (a damaged snapshot) is released */
    t->w.on = (uintptr_t)ch;
    tl__chan_enqueue(ch, &t->w, TL_OP_SEND);
    tl__block(t, TL_WAIT_SEND);
    tl__note_queued(t->rt, &t->w);
    return TL__SWITCH;
}

tl_status tl__send_w(tl_frame *f, tl_chan *ch, uint64_t head, uint64_t bits)
{
    tl__vw w = tl__vw_make(head, bits);
    tl__vw_retain(w);
    return send_value(f, ch, w);
}

tl_status tl__send_error(tl_frame *f, tl_chan *ch, int code, const char *msg)
{
    return send_value(f, ch, tl__vw_of(tl_error_value(f->t->rt, code, msg)));
}

/* A receive; with dst, a value received at once goes straight there
 * (TL__DONE), not through t->xfer and tl__take. */
static inline __attribute__((always_inline)) tl_status recv(tl_frame *f, tl_chan *h,
                                                            tl_value *dst)
{
    tl_tasklet *t = f->t;
    tl_runtime *rt = t->rt;
    tl_chan *ch = tl__chan_at(h);
    tl_status st;
    tl__vw v;
    if (!ch || ch->rt != rt)
        return bad_op_chan(f, "receive", h, ch);
    if (rt->chan_cb)
        chan_event(rt, ch, t, 0, !can_recv(ch) && !ch->closing);
    if (recv_now(ch, t, &v, &st)) {
        if (dst && st == TL__CONT && tl__vw_type(v) != TL_V_ERROR &&
            !(f->h.flags & TL__F_ERR)) {
            tl__vw_set(dst, v);
            return TL__DONE;
        }
        tl__deliver_value(t, v);
        return st;
    }
    if (ch->remote)
        return remote_block(f, ch, tl__vw_make(0, 0), TL_OP_RECV);
    if (ch->closing)
        return recv_closing(f, ch);
    t->w.on = (uintptr_t)ch;
    tl__chan_enqueue(ch, &t->w, TL_OP_RECV);
    tl__block(t, TL_WAIT_RECV);
    tl__note_queued(t->rt, &t->w);
    return TL__SWITCH;
}

tl_status tl__recv(tl_frame *f, tl_chan *ch)
{
    return recv(f, ch, NULL);
}

tl_status tl__recv_into(tl_frame *f, tl_chan *ch, tl_value *dst)
{
    return recv(f, ch, dst);
}

int tl_chan_try_send(tl_chan *h, tl_value v)
{
    tl_status st;
    tl_chan *ch = at(h, "tl_chan_try_send");
    if (!ch)
        return TL_EMISUSE;
    tl_runtime *rt = ch->rt;
    if (ch->remote)
        return tl__seterr(rt, TL_ENOTSUP, "tl_chan_try_send: channel #%llu is remote; "
                          "send from a tasklet", (unsigned long long)ch->id);
    if (rt->chan_cb)
        chan_event(rt, ch, rt->current, 1, 0);
    if (send_now(ch, NULL, tl__vw_of(tl_retain(v)), &st))
        return TL_OK;
    tl_release(v);
    if (ch->closing)
        return tl__seterr(rt, TL_ECLOSED, "tl_chan_try_send: channel #%llu is closing",
                          (unsigned long long)ch->id);
    return tl__seterr(rt, TL_EAGAIN, "tl_chan_try_send: no receiver is waiting and "
                      "the buffer is full");
}

int tl_chan_try_recv(tl_chan *h, tl_value *out)
{
    tl_status st;
    tl_chan *ch = at(h, "tl_chan_try_recv");
    if (!ch)
        return TL_EMISUSE;
    tl_runtime *rt = ch->rt;
    if (!out)
        return tl__seterr(rt, TL_EMISUSE, "tl_chan_try_recv: out is NULL");
    if (ch->remote)
        return tl__seterr(rt, TL_ENOTSUP, "tl_chan_try_recv: channel #%llu is remote; "
                          "receive from a tasklet", (unsigned long long)ch->id);
    if (rt->chan_cb)
        chan_event(rt, ch, rt->current, 0, 0);
    tl__vw w;
    if (recv_now(ch, NULL, &w, &st)) {
        *out = tl__vw_value(w);
        return TL_OK;
    }
    if (ch->closing)
        return tl__seterr(rt, TL_ECLOSED, "tl_chan_try_recv: channel #%llu is %s",
                          (unsigned long long)ch->id, tl_chan_closed(ch) ? "closed" : "closing");
    return tl__seterr(rt, TL_EAGAIN, "tl_chan_try_recv: no sender is waiting and "
                      "the buffer is empty");
}

int tl_chan_fail_waiters(tl_chan *h, int err, const char *msg)
{
    tl_chan *ch = at(h, "tl_chan_fail_waiters");
    if (!ch)
        return TL_EMISUSE;
    if (err >= 0)
        return tl__seterr(ch->rt, TL_EINVAL, "tl_chan_fail_waiters: code %d is not negative", err);
    tl_chan_retain(ch);
    while (ch->remote && (!tl__list_empty(&ch->sendq) || !tl__list_empty(&ch->recvq))) {
        tl__link *l = !tl__list_empty(&ch->sendq) ? ch->sendq.next : ch->recvq.next;
        tl_tasklet *t = TL__CONTAINER(l, tl_tasklet, w.link);
        const tl__layer *node = tl__node_layer(ch->rt);
        if ((t->flags & TL__TF_REMOTE) && node->ops) /* the home stops its agent */
            node->ops->remote_cancel(node->state, ch, t);
        tl__remote_complete(t, err, msg ? msg : tl_strerror(err), tl_nil());
    }
    while (ch->nsend || ch->nrecv) {
        tl__vw v = tl__vw_make(0, 0);
        tl_tasklet *t = ch->nsend ? take_sender(ch, &v) : take_receiver(ch);
        chan_unref(ch); /* the waiter's; ours keeps ch alive */
        tl__vw_release(v);
        tl__deliver_error(t, err, msg ? msg : tl_strerror(err));
        tl__runq_push_back(ch->rt, t);
    }
    tl_chan_release(ch);
    return TL_OK;
}

/* ---- select ---- */

static tl_status select_fire(tl_frame *f, tl_case *c)
{
    tl_status st;
    tl__vw v;
    tl_chan *ch = tl__slot(c->ch); /* checked by tl__select */
    if (c->op == TL_OP_SEND) {
        send_now(ch, f->t, tl__vw_of(tl_retain(c->value)), &st);
        return st;
    }
    recv_now(ch, f->t, &v, &st);
    tl__deliver_value(f->t, v);
    return st;
}

static tl_status select_block(tl_frame *f, tl_case *cases, int n)
{
    tl_tasklet *t = f->t;
    tl__sel *sel = sel_alloc(t->rt, n);
    if (!sel)
        return tl__op_error(f, TL_ENOMEM, "select: out of memory");
    sel->t = t;
    sel->cases = cases;
    sel->n = n;
    sel->owns_values = 0; /* the program's cases borrow their values */
    for (int i = 0; i < n; i++) {
        tl__selw *w = &sel->ws[i];
        w->sel = sel;
        w->idx = i;
        w->seq = 0;
        tl_chan *ch = tl__slot(cases[i].ch); /* checked by tl__select */
        w->w.on = (uintptr_t)ch | SEL_TAG;
        tl__chan_enqueue(ch, &w->w, cases[i].op);
        tl__note_queued(t->rt, &w->w);
    }
    t->ext->sel = sel;
    tl__block(t, TL_WAIT_SELECT);
    return TL__SWITCH;
}

tl__sel *tl__sel_new(tl_runtime *rt, tl_tasklet *t, tl_case *cases, int n)
{
    tl__sel *sel = sel_alloc(rt, n);
    if (!sel)
        return NULL;
    sel->t = t;
    sel->cases = cases;
    sel->n = n;
    sel->owns_values = 1; /* the loader decodes each case's value */
    for (int i = 0; i < n; i++) {
        sel->ws[i].sel = sel;
        sel->ws[i].idx = i;
        sel->ws[i].seq = 0;
        sel->ws[i].w.on = 1;
        tl__list_init(&sel->ws[i].w.link);
    }
    t->ext->sel = sel;
    return sel;
}

/* The index of f's TL_T_CASES schema field that starts at cases and holds
 * n of them; -1 if cases lie in the locals but in no such field, -2 if
 * they lie outside the locals (on the C stack, say). */
int tl__cases_field(const tl_frame *f, const tl_case *cases, int n)
{
    const tl_func *fn = f->fn->fn;
    const char *locals = TL__LOCALS(f), *at = (const char *)cases;
    if (at < locals || at > locals + fn->locals_size ||
        (size_t)n * sizeof(tl_case) > fn->locals_size - (size_t)(at - locals))
        return -2;
    for (size_t i = 0; i < fn->nfields; i++) {
        const tl_field *fd = &fn->fields[i];
        if (fd->type == TL_T_CASES && locals + fd->offset == at &&
            (size_t)n * sizeof(tl_case) <= fd->size)
            return (int)i;
    }
    return -1;
}

/* A select's cases must be a TL_T_CASES field, which a snapshot can name
 * whatever the ABI of the program that loads it. */
static tl_status bad_cases(tl_frame *f, int where)
{
    const tl_func *fn = f->fn->fn;
    return tl__op_error(f, TL_EINVAL, "TL_SELECT in %s@%u: the cases must be a TL_T_CASES field "
                        "of the locals schema (TL_FIELD(T, cases, TL_T_CASES)), so that a "
                        "snapshot can restore the select; these lie %s", fn->name, fn->version,
                        where == -2 ? "outside the frame's locals (on the C stack?)"
                                    : "in the locals but in no TL_T_CASES field large enough");
}

tl_status tl__select(tl_frame *f, tl_case *cases, int n)
{
    tl_tasklet *t = f->t;
    tl_runtime *rt = t->rt;
    int nready = 0, closing = -1;
    if (!cases || n < 1 || n > TL_SELECT_MAX)
        return tl__op_error(f, TL_EINVAL, "select: %d cases (1 to %d allowed)", n, TL_SELECT_MAX);
    int where = tl__cases_field(f, cases, n);
    if (where < 0)
        return bad_cases(f, where);
    for (int i = 0; i < n; i++) {
        tl_chan *ch = tl__chan_at(cases[i].ch);
        char why[200];
        if (!ch) /* a NULL channel is a bad argument; any other, a bad handle */
            return tl__op_error(f, cases[i].ch ? TL_EMISUSE : TL_EINVAL, "select: case %d: %s",
                                i, tl__chan_problem(cases[i].ch, why, sizeof why));
        if (ch->rt != rt || (cases[i].op != TL_OP_SEND && cases[i].op != TL_OP_RECV))
            return tl__op_error(f, TL_EINVAL, "select: case %d has an invalid channel or op", i);
        if (ch->remote)
            return tl__op_error(f, TL_ENOTSUP, "select: case %d is on a remote channel "
                                "(select works on local channels only)", i);
        bool ready = cases[i].op == TL_OP_SEND ? can_send(ch) : can_recv(ch);
        nready += ready;
        if (!ready && ch->closing && closing < 0)
            closing = i;
    }
    tl__ext *x = tl__ext_get(t);
    if (!x)
        return tl__op_error(f, TL_ENOMEM, "select: out of memory");
    if (nready) {
        int k = (int)(((tl__random(rt) >> 32) * (uint64_t)nready) >> 32);
        for (int i = 0; i < n; i++) {
            tl_chan *ch = tl__slot(cases[i].ch);
            bool ready = cases[i].op == TL_OP_SEND ? can_send(ch) : can_recv(ch);
            if (ready && k-- == 0) {
                x->sel_fired = i;
                if (rt->chan_cb)
                    chan_event(rt, ch, t, cases[i].op == TL_OP_SEND, 0);
                return select_fire(f, &cases[i]);
            }
        }
    }
    x->sel_fired = -1;
    if (closing >= 0) {
        char label[96];
        return tl__op_error(f, TL_ECLOSED, "select: case %d would block on %s, which is closing",
                            closing, tl__chan_label(tl__slot(cases[closing].ch), label,
                                                    sizeof label));
    }
    for (int i = 0; i < n && rt->chan_cb; i++)
        chan_event(rt, tl__slot(cases[i].ch), t, cases[i].op == TL_OP_SEND, 1);
    return select_block(f, cases, n);
}
