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
 * Where a transfer is: every one is in n->out (departure order; what the
 * store's outbox holds) and, by id, in n->outmap; a transfer to send is
 * in its peer's unsent list (departure order), one sent in the sent list
 * of the link it went out on.  Its states at the source, and the function
 * behind each transition:
 *
 *   tl__depart (tl_node_migrate; TL_MIGRATE via hook_moves; a moving
 *   remote waiter in tl__on_done / tl__on_cancelled), or
 *   tl__node_store_open (read back from the store: DURABLE at once)
 *        |  tl__outbox_append
 *        v
 *     QUEUED ---rows_committed--------> DURABLE <-------------------.
 *   (durable = 0, from n->undurable   (p->unsent)                    |
 *    on; no store: DURABLE at once;       |  send_xfer_batch         | tl__outbox_unsend
 *    rows_committed: any checkpoint's     |                          |
 *    commit, durable.c)                   |                          |
 *                                         v  (XFER; tried = 1)       | (its link dropped:
 *                                       SENT (l->sent) -------------'  back to the front)
 *                                        |                 \
 *                          tl__on_ack    |                  \  tl__on_nack
 *                                        v                   v
 *          freed; FORGET queued in p->forgets        freed; the tasklet comes
 *          (settle_link sends them once the          back here under a new id,
 *          removal is checkpointed)                  the refusal thrown in it
 *
 *   tl__transfers_free (the node closing): DURABLE ones stay in the store;
 *   the others come back if never sent, else are reported as uncertain.
 *
 * At the destination, tl__on_xfer takes each item: an id in n->seen is a
 * duplicate (ACK queued again); otherwise tl__snapshot_import_wire (held), the id
 * into n->seen (tl__inbox_add), the tasklet held (tl__import_hold: its
 * wait starts once a checkpoint holds it) and an ACK queued on the link (a
 * failed import is answered NACK at once).  Queued ACKs go out
 * (settle_link) only after a checkpoint made the imports durable;
 * tl__on_forget drops an id, tl__inbox_age one older than the window.
 *
 * Invariants: a transfer is sent only when durable, and durability comes
 * in departure order, so the durable transfers of a peer's unsent list
 * are a prefix of it; transfers go out only on the peer's newest link up
 * (tl__peer_link); an ACK or NACK counts only for a transfer that went
 * out on the link it came on, a FORGET only for an id taken from the same
 * peer (n->seen remembers who): any other is ignored, so one link cannot
 * settle or unguard another's transfers.
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
    static const char hex[] = "0123456789abcdef"; /* as %016llx%016llx, without printf */
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(k.hi >> (60 - 4 * i)) & 15];
        out[16 + i] = hex[(k.lo >> (60 - 4 * i)) & 15];
    }
    out[32] = '\0';
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

/* s rehashed into ncap slots (dropping the tombstones). */
static int xset_grow(xset *s, size_t ncap)
{
    xset old = *s;
    int found;
    s->keys = malloc(ncap * sizeof *s->keys);
    s->at = malloc(ncap * sizeof *s->at);
    s->who = malloc(ncap * sizeof *s->who);
    s->st = calloc(ncap, 1);
    if (!s->keys || !s->at || !s->who || !s->st) {
        free(s->keys);
        free(s->at);
        free(s->who);
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
            s->at[j] = old.at[i];
            s->who[j] = old.who[i];
            s->st[j] = 1;
            s->n++;
            s->used++;
        }
    free(old.keys);
    free(old.at);
    free(old.who);
    free(old.st);
    return TL_OK;
}

int tl__xset_add(xset *s, xkey k, int64_t at)
{
    int found;
    if (2 * (s->used + 1) > s->cap) {
        size_t ncap = 64;
        while (ncap < 4 * (s->n + 1))
            ncap *= 2;
        if (xset_grow(s, ncap) != TL_OK)
            return TL_ENOMEM;
    }
    size_t j = xset_find(s, k, &found);
    if (found)
        return TL_OK;
    s->used += s->st[j] == 0;
    s->keys[j] = k;
    s->at[j] = at;
    s->who[j] = NULL;
    s->st[j] = 1;
    s->n++;
    return TL_OK;
}

peerinfo **tl__xset_who(const xset *s, xkey k)
{
    int found = 0;
    size_t j = s->cap ? xset_find(s, k, &found) : 0;
    return found ? &s->who[j] : NULL;
}

int tl__xset_has_at(const xset *s, xkey k, int64_t at)
{
    int found = 0;
    size_t j = s->cap ? xset_find(s, k, &found) : 0;
    return found && s->at[j] == at;
}

/* Removes k (any time when at is INT64_MIN); 1 if it was there. */
int tl__xset_take(xset *s, xkey k, int64_t at)
{
    int found = 0;
    size_t j = s->cap ? xset_find(s, k, &found) : 0;
    if (!found || (at != INT64_MIN && s->at[j] != at))
        return 0;
    s->st[j] = 2;
    s->n--;
    return 1;
}

/* ---- frames about transfers ---- */

static int outx_match(const void *obj, const void *key)
{
    return strcmp(((const outx *)obj)->xid, key) == 0;
}

static uint64_t xkey_hash(const tl_node *n, xkey k)
{
    return tl__mix(n, k.hi ^ tl__mix(n, k.lo)); /* our ids: a lookup cannot add any */
}

/* Takes transfer xid out of the outbox, if it went out on link l (an ACK
 * or NACK answers only what its own link carried); NULL if not. */
static outx *take_outx(tl_node *n, const conn *l, const char *xid)
{
    xkey k;
    if (!tl__xid_parse(xid, &k))
        return NULL;
    outx *x = tl__hmap_get(&n->outmap, xkey_hash(n, k), outx_match, xid);
    if (!x || x->sent != l)
        return NULL;
    tl__hmap_del(&n->outmap, x->hash, x);
    tl__list_unlink(&x->q);
    if (n->undurable == x)
        n->undurable = x->next;
    if (x->prev)
        x->prev->next = x->next;
    else
        n->out = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        n->out_last = x->prev;
    n->nout--;
    return x;
}

/* One of our own transfers back into the runtime (held or not): without a
 * store it never left this process's memory, and may lack CRCs. */
static int import_own(tl_node *n, const outx *x, int hold, tl_tasklet **t,
                      const void **cargo, size_t *clen)
{
    const void *p = x->data;
    size_t len = x->len;
    *cargo = NULL;
    *clen = 0;
    if (!p) { /* with rows that travel, never written: the bare snapshot */
        p = x->snap;
        len = x->slen;
    } else {
        tl__cargo_split(&p, &len, cargo, clen);
    }
    if (n->store)
        return hold ? tl__snapshot_import_held(n->rt, p, len, t)
                    : tl__snapshot_import(n->rt, p, len, t);
    return tl__snapshot_import_wire(n->rt, p, len, hold, t);
}

void tl__outx_free(tl_node *n, outx *x)
{
    tl_snapshot_free(n->rt, x->data, x->len);
    tl_snapshot_free(n->rt, x->snap, x->slen);
    free(x);
}

static void queue_ack(conn *l, const char *xid)
{
    xidstr r;
    snprintf(r.s, sizeof r.s, "%s", xid);
    if (VEC_PUSH(l->acks, r) != 0)
        tl__link_drop(l, "out of memory");
}

/* NACK [xid, code, msg]: the import failed (rt's error says why). */
static void send_nack(conn *l, const char *xid, int code)
{
    tl_node *n = l->node;
    msgpack_packer pk;
    tl__node_log(n, "refused tasklet %s from %s: %s", xid, l->peer, n->rt->errmsg);
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint8(&pk, M_NACK);
    tl__pack_str(&pk, xid);
    msgpack_pack_int(&pk, code);
    tl__pack_str(&pk, n->rt->errmsg);
    tl__frame_end(l, at);
    tl__flush(l);
}

/* An import's store rows (cargo), taken in last: undone with the rest
 * if they are refused. */
static int take_cargo(conn *l, xkey k, tl_tasklet *t, const void *cargo, size_t clen)
{
    tl_node *n = l->node;
    int rc = tl__store_cargo_in(n->store, t, 0, l->peer, cargo, clen, NULL);
    if (rc != TL_OK) {
        char msg[sizeof n->rt->errmsg];
        memcpy(msg, n->rt->errmsg, sizeof msg);
        tl__import_unhold(n, t);
        tl__inbox_forget(n, k);
        tl__tasklet_depart(t, TL_EMOVED, "import undone: its rows were refused");
        tl__seterr(n->rt, rc, "%s", msg);
    }
    return rc;
}

/* Imports one transfer's snapshot (held) and takes its id. */
static int import_item(conn *l, xkey k, const void *p, size_t len, tl_tasklet **t)
{
    tl_node *n = l->node;
    /* held: its wait starts (a remote operation issued, a local partner
     * met) only once a checkpoint holds it (tl__import_hold) */
    n->importing = l->p; /* the channels it may reach: access.c */
    int rc = tl__snapshot_import_wire(n->rt, p, len, 1, t);
    n->importing = NULL;
    if (rc == TL_OK && tl__inbox_add(n, k, l->peer) != TL_OK) {
        tl__tasklet_depart(*t, TL_EMOVED, "import undone: out of memory");
        rc = tl__seterr(n->rt, TL_ENOMEM, "out of memory");
    } else if (rc == TL_OK && tl__import_hold(n, *t) != TL_OK) {
        tl__inbox_forget(n, k);
        tl__tasklet_depart(*t, TL_EMOVED, "import undone: out of memory");
        rc = tl__seterr(n->rt, TL_ENOMEM, "out of memory");
    }
    return rc;
}

/* One transfer [xid, snapshot or cargo envelope]: acknowledged if seen
 * before, else imported and acknowledged (once durable) or refused. */
static void take_item(conn *l, const char *xid, xkey k, const msgpack_object *snap)
{
    tl_node *n = l->node;
    if (xset_has(&n->seen, k)) {
        n->stats.duplicates++;
        queue_ack(l, xid);
        return;
    }
    const void *p = snap->via.bin.ptr, *cargo;
    size_t len = snap->via.bin.size, clen;
    tl__cargo_split(&p, &len, &cargo, &clen);
    tl_tasklet *t;
    int rc = cargo && !n->store
                 ? tl__seterr(n->rt, TL_ENOTSUP, "node %s has no store: it cannot take a "
                              "tasklet whose store rows travel with it (a workflow)", n->id)
             : cargo ? tl__store_cargo_takes(n->store, n->rt, cargo, clen)
                     : TL_OK;
    if (rc == TL_OK)
        rc = import_item(l, k, p, len, &t);
    if (rc == TL_OK && cargo)
        rc = take_cargo(l, k, t, cargo, clen);
    if (rc != TL_OK) {
        send_nack(l, xid, rc);
        return;
    }
    n->stats.moved_in++;
    n->need_ckpt |= n->store != NULL;
    queue_ack(l, xid);
}

void tl__on_xfer(conn *l, const msgpack_object *o)
{
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
        take_item(l, xid, k, mp_item(it, 1));
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
        outx *x = take_outx(n, l, xid);
        if (!x)
            continue; /* a duplicate: already gone */
        tl__outbox_gone(n, x);
        tl__outx_free(n, x);
        n->stats.moved_out++;
        n->need_ckpt |= n->store != NULL;
        xidstr r;
        snprintf(r.s, sizeof r.s, "%s", xid);
        VEC_PUSH(l->p->forgets, r); /* if this fails, the peer keeps the id: harmless */
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
    outx *x = take_outx(n, l, xid);
    if (!x)
        return;
    n->stats.refused++;
    n->need_ckpt |= n->store != NULL;
    tl__outbox_gone(n, x);
    tl_tasklet *t;
    const void *cargo;
    size_t clen;
    char full[400];
    snprintf(full, sizeof full, "node %s refused the tasklet: %s", l->peer, msg);
    /* held: the error thrown ends its wait, no remote operation is issued;
     * one with store rows is taken back by their layers instead */
    if (import_own(n, x, 1, &t, &cargo, &clen) == TL_OK) {
        if (!cargo || !n->store ||
            tl__store_cargo_in(n->store, t, x->tid, n->id, cargo, clen, full) != TL_OK)
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
        if (mp_str(mp_item(xs, i), xid, sizeof xid) && tl__xid_parse(xid, &k) &&
            tl__access_may_forget(l, k))
            tl__inbox_forget(l->node, k);
    }
}

/* Appends x (x->peer, x->xid, x->durable set) to the outbox, to be sent
 * once durable.  TL_ENOMEM, x in nothing. */
int tl__outbox_append(tl_node *n, outx *x)
{
    xkey k;
    x->p = tl__peer_get(n, x->peer, 1);
    if (!x->p)
        return TL_ENOMEM;
    if (tl__xid_parse(x->xid, &k)) { /* else never acknowledged: resent to no avail */
        x->hash = xkey_hash(n, k);
        if (tl__hmap_put(&n->outmap, x->hash, x) != TL_OK)
            return TL_ENOMEM;
    }
    x->next = NULL;
    x->prev = n->out_last;
    if (n->out_last)
        n->out_last->next = x;
    else
        n->out = x;
    n->out_last = x;
    tl__list_push_back(&x->p->unsent, &x->q);
    if (!x->durable && !n->undurable)
        n->undurable = x;
    n->nout++;
    return TL_OK;
}

/* Takes suspended t out of the runtime into the outbox; with cargo
 * (about that many bytes of store rows travel with it), the envelope is
 * made at each write of its outbox row (tl__cargo_wrap). */
int tl__depart(tl_node *n, tl_tasklet *t, const char *peer, size_t cargo)
{
    outx *x = calloc(1, sizeof *x);
    if (!x)
        return tl__seterr(n->rt, TL_ENOMEM, "moving a tasklet: out of memory");
    /* a random 64-bit prefix per node instance, then a counter: unique
     * across restarts without a system call per transfer */
    tl__xid_format((xkey){n->xid_prefix, ++n->xid_seq}, x->xid);
    int rc = tl__access_save_moving(n, t, peer, &x->data, &x->len);
    if (rc != TL_OK) {
        free(x);
        return rc;
    }
    if (x->len + cargo + 128 > n->max_frame) {
        size_t len = x->len;
        tl_snapshot_free(n->rt, x->data, x->len);
        free(x);
        return tl__seterr(n->rt, TL_ERANGE, "moving a tasklet: its snapshot (%zu bytes, and "
                          "%zu of rows) is larger than a frame may be (%u)", len, cargo,
                          n->max_frame);
    }
    snprintf(x->peer, sizeof x->peer, "%s", peer);
    x->durable = n->store == NULL;
    if (cargo) {
        x->cargo = 1;
        x->tid = t->id;
        x->snap = x->data;
        x->slen = x->len;
        x->data = NULL;
        x->len = 0;
    }
    if (tl__outbox_append(n, x) != TL_OK) {
        tl__outx_free(n, x);
        return tl__seterr(n->rt, TL_ENOMEM, "moving a tasklet: out of memory");
    }
    char msg[128] = "moved to node "; /* peer is under 64 bytes (migrate, node.c) */
    strncat(msg, peer, sizeof msg - strlen(msg) - 1);
    tl__tasklet_depart(t, TL_EMOVED, msg);
    n->need_ckpt |= n->store != NULL;
    return TL_OK;
}

/* ---- cargo: [TL__CARGO_MAGIC, snapshot, cargo] (docs/PROTOCOL.md 4) ---- */

#define TL__CARGO_MAGIC "libtasklet-cargo"

int tl__cargo_wrap(tl_node *n, tl__store_tx *tx, outx *x)
{
    void *cargo;
    size_t clen;
    int rc = tl__store_cargo_out(n->store, tx, x->tid, x->peer, &cargo, &clen);
    if (rc != TL_OK)
        return rc;
    if (!cargo) /* its layer left the store: the hand-off cannot be whole */
        return tl__seterr(n->rt, TL_ESTATE, "moving tasklet %s: the layer whose rows travel "
                          "with it (a workflow engine) left the store before they were "
                          "written; free the node before the engine", x->xid);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    tl__pack_str(&pk, TL__CARGO_MAGIC);
    msgpack_pack_bin(&pk, x->slen);
    msgpack_pack_bin_body(&pk, x->snap, x->slen);
    msgpack_pack_bin(&pk, clen);
    msgpack_pack_bin_body(&pk, cargo, clen);
    free(cargo);
    void *env = sb.data ? tl__alloc(n->rt, sb.size) : NULL;
    if (!env) {
        msgpack_sbuffer_destroy(&sb);
        return tl__seterr(n->rt, TL_ENOMEM, "moving a tasklet: out of memory for its rows");
    }
    memcpy(env, sb.data, sb.size);
    tl_snapshot_free(n->rt, x->data, x->len);
    x->data = env;
    x->len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return TL_OK;
}

/* The length in a msgpack header at b[*at] of the family fix (its low
 * bits under mask), or of the 8/16/32-bit forms w8, w16, w32 (0: none);
 * -1 if b[*at] is none of them or the header runs past n. */
static long long mp_head(const unsigned char *b, size_t n, size_t *at, unsigned fix,
                         unsigned mask, unsigned w8, unsigned w16, unsigned w32)
{
    if (*at >= n)
        return -1;
    unsigned c = b[(*at)++];
    int k = (c & ~mask) == fix ? 0 : w8 && c == w8 ? 1 : c == w16 ? 2 : c == w32 ? 4 : -1;
    if (k < 0 || n - *at < (size_t)k)
        return -1;
    unsigned long long v = k ? 0 : c & mask;
    for (int i = 0; i < k; i++)
        v = v << 8 | b[(*at)++];
    return (long long)v;
}

/* Whether p[0..n) may be a cargo envelope: an array of 3 that starts with
 * TL__CARGO_MAGIC, in any header width.  Plain snapshot bytes fail here
 * without being decoded (they did twice over before: a tenth of an
 * import's instructions). */
static int may_be_cargo(const unsigned char *p, size_t n)
{
    size_t at = 0, m = strlen(TL__CARGO_MAGIC);
    if (!p || mp_head(p, n, &at, 0x90, 0x0f, 0, 0xdc, 0xdd) != 3 ||
        mp_head(p, n, &at, 0xa0, 0x1f, 0xd9, 0xda, 0xdb) != (long long)m)
        return 0;
    return n - at >= m && memcmp(p + at, TL__CARGO_MAGIC, m) == 0;
}

int tl__cargo_split(const void **p, size_t *n, const void **cargo, size_t *clen)
{
    msgpack_unpacked up;
    size_t off = 0;
    int found = 0;
    *cargo = NULL;
    *clen = 0;
    if (!may_be_cargo(*p, *n))
        return 0;
    msgpack_unpacked_init(&up);
    /* a peer's bytes: msgpack-c allocates what the counts announce, so
     * they are checked against the bytes first (else the snapshot decoder
     * refuses them) */
    if (*p && tl__msgpack_check(*p, *n, 40) == *n &&
        msgpack_unpack_next(&up, *p, *n, &off) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_ARRAY && up.data.via.array.size == 3) {
        const msgpack_object *a = up.data.via.array.ptr;
        char magic[32];
        found = mp_str(&a[0], magic, sizeof magic) && strcmp(magic, TL__CARGO_MAGIC) == 0 &&
                a[1].type == MSGPACK_OBJECT_BIN && a[2].type == MSGPACK_OBJECT_BIN;
        if (found) { /* the parts point into *p (msgpack-c does not copy bins) */
            *p = a[1].via.bin.ptr;
            *n = a[1].via.bin.size;
            *cargo = a[2].via.bin.ptr;
            *clen = a[2].via.bin.size;
        }
    }
    msgpack_unpacked_destroy(&up);
    return found;
}

/* l went down: what went out on it is to be sent again, first (the ids
 * make that harmless), and the acknowledgements it waited for are dropped
 * (the peer resends those transfers). */
void tl__outbox_unsend(tl_node *n, conn *l)
{
    (void)n;
    while (!tl__list_empty(&l->sent)) {
        outx *x = TL__CONTAINER(l->sent.prev, outx, q);
        tl__list_unlink(&x->q);
        x->sent = NULL;
        tl__list_push_front(&x->p->unsent, &x->q);
    }
    l->acks.n = 0;
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
        const void *cargo;
        size_t clen;
        if (!x->tried && import_own(n, x, 0, &t, &cargo, &clen) == TL_OK) {
            /* one with store rows: their layer takes it back (it never left) */
            if (!x->cargo || !n->store ||
                tl__store_cargo_in(n->store, t, x->tid, n->id, NULL, 0,
                                   "the node closed before it could move") != TL_OK)
                tl_throw_pending(t, TL_ELINK, "the node closed before the tasklet could move");
        } else {
            tl__node_log(n, "transfer %s to %s was not acknowledged before the node closed: "
                         "the tasklet may or may not have arrived", x->xid, x->peer);
        }
        tl__outx_free(n, x);
    }
    n->out_last = n->undurable = NULL;
    n->nout = 0;
    tl__hmap_free(&n->outmap);
    tl__xset_free(&n->seen);
    free(n->xbatch.v);
}

void tl__xset_free(xset *s)
{
    free(s->keys);
    free(s->at);
    free(s->who);
    free(s->st);
    memset(s, 0, sizeof *s);
}

/* ---- sending: acknowledgements, forgets, transfers ---- */

/* FRAME [xid...] of type ACK or FORGET. */
static void send_ids(conn *l, int type, const xidstr *ids, size_t cnt)
{
    msgpack_packer pk;
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, (uint8_t)type);
    msgpack_pack_array(&pk, cnt);
    for (size_t i = 0; i < cnt; i++)
        tl__pack_str(&pk, ids[i].s);
    tl__frame_end(l, at);
}

/* One XFER frame on l: its peer's durable unsent transfers, in order, up
 * to XFER_BATCH_BYTES (at least one). */
static void send_xfer_batch(tl_node *n, conn *l)
{
    size_t bytes = 0;
    n->xbatch.n = 0;
    for (tl__link *q = l->p->unsent.next; q != &l->p->unsent; q = q->next) {
        outx *x = TL__CONTAINER(q, outx, q);
        if (!x->durable || (n->xbatch.n && bytes + x->len > XFER_BATCH_BYTES))
            break; /* the durable ones come first: departure order */
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
        tl__list_unlink(&x->q);
        tl__list_push_back(&l->sent, &x->q);
        x->sent = l;
        x->tried = 1;
    }
    tl__frame_end(l, at);
}

/* What goes out on l: with nothing left to checkpoint, the ACKs of its
 * imports and, on its peer's newest link, the FORGETs and a batch of
 * transfers; then l is flushed. */
static void settle_link(tl_node *n, conn *l)
{
    int newest = l->state == L_UP && tl__peer_link(l->p) == l;
    if (!n->need_ckpt && l->state == L_UP && l->acks.n) {
        send_ids(l, M_ACK, l->acks.v, l->acks.n);
        l->acks.n = 0;
    }
    if (!n->need_ckpt && newest && l->p->forgets.n) {
        send_ids(l, M_FORGET, l->p->forgets.v, l->p->forgets.n);
        l->p->forgets.n = 0;
    }
    if (newest && tl__queue_has_room(l)) /* else the peer is slow: wait, not queue */
        send_xfer_batch(n, l);
    if (l->state != L_DEAD)
        tl__flush(l);
}

/* Checkpoints what transfers need, then sends what may go: XFERs that are
 * durable, ACKs for durable imports, FORGETs for durable removals; every
 * link is flushed. */
int tl__settle(tl_node *n)
{
    tl__inbox_age(n);
    int rc = tl__node_checkpoint(n);
    if (rc != TL_OK)
        return rc;
    for (conn *l = n->links; l; l = l->next)
        settle_link(n, l);
    return TL_OK;
}
