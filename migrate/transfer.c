/*
 * transfer.c -- moving tasklets between nodes, exactly once.
 *
 * The source keeps a moving tasklet's snapshot in its outbox (n->out, in
 * departure order) until the destination acknowledges it; with a store,
 * the outbox is checkpointed before anything is sent.  The destination
 * remembers every transfer id it took (n->seen; in its store's inbox
 * before it acknowledges) until the source says FORGET, so a transfer sent
 * again is acknowledged, not imported twice.  A transfer id is a random
 * 64-bit prefix per node instance and a counter, 32 hex digits.
 *
 * A transfer at the source, and the function behind each transition:
 *
 *   tl__depart (tl_node_migrate; TL_MIGRATE via hook_moves; a moving
 *   remote waiter in tl__on_done / tl__on_cancelled; tl__node_store_open
 *   reads it back from the store: DURABLE)
 *        |
 *        v
 *     QUEUED ---tl__node_checkpoint---> DURABLE <------------------.
 *   (durable = 0; no store:               |  send_xfer_batch        | tl__outbox_unsend
 *    DURABLE at once)                     v  (XFER; tried = 1)      | (its link dropped)
 *                                       SENT (sent = link) --------'
 *                                        |                 \
 *                          tl__on_ack    |                  \  tl__on_nack
 *                                        v                   v
 *          freed; FORGET queued (sent by            freed; the tasklet comes
 *          send_forgets once the removal is         back here under a new id,
 *          checkpointed)                            the refusal thrown in it
 *
 *   tl__transfers_free (the node closing): DURABLE ones stay in the store;
 *   the others come back if never sent, else are reported as uncertain.
 *
 * At the destination, tl__on_xfer takes each item: an id in n->seen is a
 * duplicate (ACK queued again); otherwise tl__snapshot_import, the id into
 * n->seen and an ACK queued (a failed import is answered NACK at once).
 * Queued ACKs go out (send_acks) only after tl__node_checkpoint made the
 * imports durable; tl__on_forget drops an id.
 *
 * Invariants: every transfer before n->next_send has been sent; a
 * transfer is sent only when durable; ACK, NACK and FORGET name a
 * transfer by id and peer, and one that is not there is ignored.
 */
#include "node_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- transfer id set ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 32 lowercase hex digits into k; 0 if s is not that. */
int tl__xid_parse(const char *s, xkey *k)
{
    uint64_t w[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
        int v = hexval(s[i]);
        if (v < 0)
            return 0;
        w[i / 16] = w[i / 16] << 4 | (uint64_t)v;
    }
    if (s[32])
        return 0;
    k->hi = w[0];
    k->lo = w[1];
    return 1;
}

void tl__xid_format(xkey k, char out[40])
{
    snprintf(out, 40, "%016llx%016llx", (unsigned long long)k.hi, (unsigned long long)k.lo);
}

static uint64_t xkhash(xkey k)
{
    uint64_t x = k.hi ^ (k.lo * 0x9e3779b97f4a7c15ULL);
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ULL;
    return x ^ (x >> 32);
}

static size_t xset_find(const xset *s, xkey k, int *found)
{
    size_t j = xkhash(k) & (s->cap - 1), tomb = SIZE_MAX;
    *found = 0;
    for (;;) {
        if (s->st[j] == 0)
            return tomb != SIZE_MAX ? tomb : j;
        if (s->st[j] == 2 && tomb == SIZE_MAX)
            tomb = j;
        if (s->st[j] == 1 && s->keys[j].hi == k.hi && s->keys[j].lo == k.lo) {
            *found = 1;
            return j;
        }
        j = (j + 1) & (s->cap - 1);
    }
}

static int xset_has(const xset *s, xkey k)
{
    int found = 0;
    if (s->cap)
        xset_find(s, k, &found);
    return found;
}

int tl__xset_add(xset *s, xkey k)
{
    int found;
    if (2 * (s->used + 1) > s->cap) {
        xset old = *s;
        size_t ncap = 64;
        while (ncap < 4 * (s->n + 1))
            ncap *= 2; /* the rehash also drops the tombstones */
        s->keys = malloc(ncap * sizeof *s->keys);
        s->st = calloc(ncap, 1);
        if (!s->keys || !s->st) {
            free(s->keys);
            free(s->st);
            *s = old;
            return TL_ENOMEM;
        }
        s->cap = ncap;
        s->n = s->used = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.st[i] == 1) {
                size_t j = xset_find(s, old.keys[i], &found);
                s->keys[j] = old.keys[i];
                s->st[j] = 1;
                s->n++;
                s->used++;
            }
        free(old.keys);
        free(old.st);
    }
    size_t j = xset_find(s, k, &found);
    if (found)
        return TL_OK;
    s->used += s->st[j] == 0;
    s->keys[j] = k;
    s->st[j] = 1;
    s->n++;
    return TL_OK;
}

static void xset_del(xset *s, xkey k)
{
    int found = 0;
    size_t j = s->cap ? xset_find(s, k, &found) : 0;
    if (found) {
        s->st[j] = 2;
        s->n--;
    }
}

/* ---- frames about transfers ---- */

static outx *take_outx(tl_node *n, const char *peer, const char *xid)
{
    for (outx **pp = &n->out; *pp; pp = &(*pp)->next) {
        outx *x = *pp;
        if (strcmp(x->xid, xid) == 0 && strcmp(x->peer, peer) == 0) {
            if (n->next_send == x)
                n->next_send = x->next;
            *pp = x->next;
            if (n->out_tail == &x->next)
                n->out_tail = pp;
            n->nout--;
            return x;
        }
    }
    return NULL;
}

void tl__outx_free(tl_node *n, outx *x)
{
    tl_snapshot_free(n->rt, x->data, x->len);
    free(x);
}

static void queue_ack(tl_node *n, conn *l, const char *xid)
{
    xidref r;
    r.l = l;
    snprintf(r.xid, sizeof r.xid, "%s", xid);
    snprintf(r.peer, sizeof r.peer, "%s", l->peer);
    if (VEC_PUSH(n->acks, r) != 0)
        tl__link_drop(l, "out of memory");
}

void tl__on_xfer(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    const msgpack_object *items = mp_item(o, 1);
    char xid[40];
    if (o->via.array.size < 2 || items->type != MSGPACK_OBJECT_ARRAY) {
        tl__link_drop(l, "malformed transfer");
        return;
    }
    for (uint32_t i = 0; i < items->via.array.size && l->state == L_UP; i++) {
        const msgpack_object *it = mp_item(items, i);
        xkey k;
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 2 ||
            !mp_str(mp_item(it, 0), xid, sizeof xid) || !tl__xid_parse(xid, &k) ||
            mp_item(it, 1)->type != MSGPACK_OBJECT_BIN) {
            tl__link_drop(l, "malformed transfer item");
            return;
        }
        if (xset_has(&n->seen, k)) {
            n->stats.duplicates++;
            queue_ack(n, l, xid);
            continue;
        }
        tl_tasklet *t;
        int rc = tl__snapshot_import(n->rt, mp_item(it, 1)->via.bin.ptr, mp_item(it, 1)->via.bin.size,
                                     &t);
        if (rc == TL_OK && tl__xset_add(&n->seen, k) != TL_OK) {
            tl__tasklet_depart(t, TL_EMOVED, "import undone: out of memory");
            rc = tl__seterr(n->rt, TL_ENOMEM, "out of memory");
        }
        if (rc != TL_OK) {
            tl__node_log(n, "refused tasklet %s from %s: %s", xid, l->peer, n->rt->errmsg);
            msgpack_packer pk;
            size_t at = tl__frame_begin(l, &pk);
            msgpack_pack_array(&pk, 4);
            msgpack_pack_uint8(&pk, M_NACK);
            tl__pack_str(&pk, xid);
            msgpack_pack_int(&pk, rc);
            tl__pack_str(&pk, n->rt->errmsg);
            tl__frame_end(l, at);
            tl__flush(l);
            continue;
        }
        n->stats.moved_in++;
        n->need_ckpt |= n->store != NULL;
        queue_ack(n, l, xid);
    }
}

void tl__on_ack(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char xid[40];
    const msgpack_object *xs = mp_item(o, 1);
    if (o->via.array.size < 2 || xs->type != MSGPACK_OBJECT_ARRAY) {
        tl__link_drop(l, "malformed acknowledgement");
        return;
    }
    for (uint32_t i = 0; i < xs->via.array.size; i++) {
        if (!mp_str(mp_item(xs, i), xid, sizeof xid)) {
            tl__link_drop(l, "malformed acknowledgement");
            return;
        }
        outx *x = take_outx(n, l->peer, xid);
        if (!x)
            continue; /* a duplicate: already gone */
        tl__outx_free(n, x);
        n->stats.moved_out++;
        n->need_ckpt |= n->store != NULL;
        xidref r;
        r.l = NULL;
        snprintf(r.xid, sizeof r.xid, "%s", xid);
        snprintf(r.peer, sizeof r.peer, "%s", l->peer);
        VEC_PUSH(n->forgets, r); /* if this fails, the peer keeps the id: harmless */
    }
}

void tl__on_nack(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char xid[40], msg[256] = "";
    if (o->via.array.size < 4 || !mp_str(mp_item(o, 1), xid, sizeof xid) || !mp_is_i(mp_item(o, 2))) {
        tl__link_drop(l, "malformed refusal");
        return;
    }
    mp_str(mp_item(o, 3), msg, sizeof msg);
    int64_t code = mp_is_u(mp_item(o, 2)) ? 0 : mp_item(o, 2)->via.i64;
    if (code >= 0 || code < INT32_MIN)
        code = TL_EPROTO;
    outx *x = take_outx(n, l->peer, xid);
    if (!x)
        return;
    n->stats.refused++;
    n->need_ckpt |= n->store != NULL;
    tl_tasklet *t;
    if (tl__snapshot_import(n->rt, x->data, x->len, &t) == TL_OK) {
        char full[400];
        snprintf(full, sizeof full, "node %s refused the tasklet: %s", l->peer, msg);
        tl_throw_pending(t, (int)code, full);
    } else {
        tl__node_log(n, "tasklet %s refused by %s could not come back: %s", xid, l->peer,
              n->rt->errmsg);
    }
    tl__outx_free(n, x);
}

void tl__on_forget(conn *l, const msgpack_object *o)
{
    char xid[40];
    const msgpack_object *xs = mp_item(o, 1);
    if (o->via.array.size < 2 || xs->type != MSGPACK_OBJECT_ARRAY) {
        tl__link_drop(l, "malformed forget");
        return;
    }
    for (uint32_t i = 0; i < xs->via.array.size; i++) {
        xkey k;
        if (mp_str(mp_item(xs, i), xid, sizeof xid) && tl__xid_parse(xid, &k))
            xset_del(&l->node->seen, k);
    }
}

/* Appends x to the outbox, to be sent once durable. */
void tl__outbox_append(tl_node *n, outx *x)
{
    *n->out_tail = x;
    n->out_tail = &x->next;
    if (!n->next_send)
        n->next_send = x;
    n->nout++;
}

/* Takes suspended t out of the runtime into the outbox. */
int tl__depart(tl_node *n, tl_tasklet *t, const char *peer)
{
    outx *x = calloc(1, sizeof *x);
    if (!x)
        return tl__seterr(n->rt, TL_ENOMEM, "moving a tasklet: out of memory");
    /* a random 64-bit prefix per node instance, then a counter: unique
     * across restarts without a system call per transfer */
    tl__xid_format((xkey){n->xid_prefix, ++n->xid_seq}, x->xid);
    int rc = tl__snapshot_save_moving(t, &x->data, &x->len);
    if (rc != TL_OK) {
        free(x);
        return rc;
    }
    if (x->len + 128 > n->max_frame) {
        size_t len = x->len;
        tl_snapshot_free(n->rt, x->data, x->len);
        free(x);
        return tl__seterr(n->rt, TL_ERANGE, "moving a tasklet: its snapshot (%zu bytes) is "
                          "larger than a frame may be (%u)", len, n->max_frame);
    }
    snprintf(x->peer, sizeof x->peer, "%s", peer);
    char msg[128];
    snprintf(msg, sizeof msg, "moved to node %s", peer);
    tl__tasklet_depart(t, TL_EMOVED, msg);
    x->durable = n->store == NULL;
    n->need_ckpt |= n->store != NULL;
    tl__outbox_append(n, x);
    return TL_OK;
}

/* l went down: what went out on it is to be sent again (the ids make that
 * harmless), and the acknowledgements it waited for are dropped (the peer
 * resends those transfers). */
void tl__outbox_unsend(tl_node *n, conn *l)
{
    for (outx *x = n->out; x; x = x->next)
        if (x->sent == l)
            x->sent = NULL;
    n->next_send = n->out;
    for (size_t i = 0; i < n->acks.n; i++)
        if (n->acks.v[i].l == l)
            n->acks.v[i].l = NULL;
}

/* The node is closing (durable: the outbox is in the store).  Transfers
 * not durable that never left come back, thrown TL_ELINK; those sent and
 * not acknowledged may have arrived and are reported. */
void tl__transfers_free(tl_node *n, int durable)
{
    while (n->out) {
        outx *x = n->out;
        tl_tasklet *t;
        n->out = x->next;
        if (durable && x->durable) {
            tl__outx_free(n, x);
            continue;
        }
        if (!x->tried && tl__snapshot_import(n->rt, x->data, x->len, &t) == TL_OK)
            tl_throw_pending(t, TL_ELINK, "the node closed before the tasklet could move");
        else
            tl__node_log(n, "transfer %s to %s was not acknowledged before the node closed: "
                         "the tasklet may or may not have arrived", x->xid, x->peer);
        tl__outx_free(n, x);
    }
    n->out_tail = &n->out;
    n->next_send = NULL;
    n->nout = 0;
    tl__xset_free(&n->seen);
    free(n->acks.v);
    free(n->forgets.v);
    free(n->xbatch.v);
}

void tl__xset_free(xset *s)
{
    free(s->keys);
    free(s->st);
    memset(s, 0, sizeof *s);
}

/* ---- sending: acknowledgements, forgets, transfers ---- */

/* ACK [xid...] per link, for the imports now durable. */
static void send_acks(tl_node *n)
{
    for (size_t i = 0; i < n->acks.n; i++) {
        conn *l = n->acks.v[i].l;
        if (!l || l->state != L_UP)
            continue;
        size_t cnt = 0;
        for (size_t j = i; j < n->acks.n; j++)
            cnt += n->acks.v[j].l == l;
        msgpack_packer pk;
        size_t at = tl__frame_begin(l, &pk);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint8(&pk, M_ACK);
        msgpack_pack_array(&pk, cnt);
        for (size_t j = i; j < n->acks.n; j++)
            if (n->acks.v[j].l == l) {
                tl__pack_str(&pk, n->acks.v[j].xid);
                n->acks.v[j].l = NULL;
            }
        tl__frame_end(l, at); /* flushed by send_xfers, with what else goes */
    }
    n->acks.n = 0;
}

/* FORGET [xid...] per peer with a link up; the others wait for one. */
static void send_forgets(tl_node *n)
{
    for (size_t i = 0; i < n->forgets.n; i++) {
        conn *l = n->forgets.v[i].peer[0] ? tl__link_up(n, n->forgets.v[i].peer) : NULL;
        size_t cnt = 0;
        if (!l)
            continue;
        for (size_t j = i; j < n->forgets.n; j++)
            cnt += strcmp(n->forgets.v[j].peer, l->peer) == 0;
        msgpack_packer pk;
        size_t at = tl__frame_begin(l, &pk);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint8(&pk, M_FORGET);
        msgpack_pack_array(&pk, cnt);
        for (size_t j = i; j < n->forgets.n; j++)
            if (strcmp(n->forgets.v[j].peer, l->peer) == 0) {
                tl__pack_str(&pk, n->forgets.v[j].xid);
                n->forgets.v[j].peer[0] = '\0';
            }
        tl__frame_end(l, at);
    }
    size_t kept = 0;
    for (size_t i = 0; i < n->forgets.n; i++)
        if (n->forgets.v[i].peer[0])
            n->forgets.v[kept++] = n->forgets.v[i];
    n->forgets.n = kept;
}

/* One XFER frame on l: its peer's durable unsent transfers, in order, up
 * to XFER_BATCH_BYTES (at least one). */
static void send_xfer_batch(tl_node *n, conn *l)
{
    size_t bytes = 0;
    n->xbatch.n = 0;
    for (outx *x = n->next_send; x && l->state == L_UP; x = x->next) {
        if (x->sent || !x->durable || strcmp(x->peer, l->peer) != 0)
            continue;
        if (n->xbatch.n && bytes + x->len > XFER_BATCH_BYTES)
            break;
        if (VEC_PUSH(n->xbatch, x) != 0)
            break;
        bytes += x->len;
    }
    if (!n->xbatch.n)
        return;
    msgpack_packer pk;
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, M_XFER);
    msgpack_pack_array(&pk, n->xbatch.n);
    for (size_t i = 0; i < n->xbatch.n; i++) {
        outx *x = n->xbatch.v[i];
        msgpack_pack_array(&pk, 2);
        tl__pack_str(&pk, x->xid);
        msgpack_pack_bin(&pk, x->len);
        msgpack_pack_bin_body(&pk, x->data, x->len);
        x->sent = l;
        x->tried = 1;
    }
    tl__frame_end(l, at);
}

/* Checkpoints what transfers need, then sends what may go: XFERs that are
 * durable, ACKs for durable imports, FORGETs for durable removals; every
 * link is flushed. */
int tl__settle(tl_node *n)
{
    int rc = tl__node_checkpoint(n);
    if (rc != TL_OK)
        return rc;
    if (!n->need_ckpt) {
        send_acks(n);
        send_forgets(n);
    }
    while (n->next_send && n->next_send->sent)
        n->next_send = n->next_send->next;
    for (conn *l = n->links; l; l = l->next) {
        send_xfer_batch(n, l);
        if (l->state != L_DEAD)
            tl__flush(l);
    }
    return TL_OK;
}
