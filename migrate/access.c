/*
 * access.c -- which local channels a peer may reach (docs/PROTOCOL.md
 * section 7).
 *
 * A peer operates (OP) on, or sends tasklets that refer to, only:
 *   - the channels the program exported (tl_node_export), by their export
 *     name or by id;
 *   - the channels named in tasklets this node sent to that peer: each
 *     departure grants the destination the local channels the snapshot
 *     refers to (tl__access_grant, called from tl__depart).
 * Anything else -- an id or name that is not exported and not granted,
 * whether or not such a channel exists -- is answered exactly like a
 * channel that does not exist, so a peer cannot tell the two apart or
 * enumerate channels.
 *
 * Tables: n->exports (by name, SipHash: names come from peers) and
 * n->export_ids (the same entries by channel id); each peer's grants
 * (p->grants, by channel id).  An export holds a reference to its channel;
 * a grant holds only a handle (tl__chan_handle), checked on use, so that
 * unpinning a channel left behind still frees it.
 *
 * Invariants: an export is in both maps or neither; grants live as long as
 * their peerinfo (until the node is freed), so a link that drops and comes
 * back keeps them.  Grants are not in the store: after a restart of this
 * node only exported channels are reachable (API.md says so).
 */
#include "node_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct export {
    char name[256];
    uint64_t hname, hid;
    tl_chan *ch;           /* retained */
} export;

typedef struct grant {
    uint64_t id;           /* first: req_match-style lookups by id */
    tl_chan *h;            /* the channel's handle (stale once it is freed) */
} grant;

static int export_name_match(const void *obj, const void *key)
{
    return strcmp(((const export *)obj)->name, key) == 0;
}

static int id_match(const void *obj, const void *key)
{
    return *(const uint64_t *)obj == *(const uint64_t *)key;
}

static int export_id_match(const void *obj, const void *key)
{
    return ((const export *)obj)->ch->id == *(const uint64_t *)key;
}

static export *export_by_name(const tl_node *n, const char *name)
{
    return tl__hmap_get(&n->exports, tl__hash(n, name, strlen(name)), export_name_match, name);
}

static export *export_by_id(const tl_node *n, uint64_t id)
{
    return tl__hmap_get(&n->export_ids, tl__hash_u64(n, id), export_id_match, &id);
}

/* The live local channel behind grant g, or NULL. */
static tl_chan *grant_chan(const grant *g)
{
    tl_chan *ch = g ? tl__chan_at(g->h) : NULL;
    return ch && !ch->remote && ch->id == g->id ? ch : NULL;
}

static tl_chan *granted(const tl_node *n, const peerinfo *p, uint64_t id)
{
    return p ? grant_chan(tl__hmap_get(&p->grants, tl__hash_u64(n, id), id_match, &id)) : NULL;
}

int tl_node_export(tl_node *n, tl_chan *h, const char *name)
{
    tl_chan *ch = tl__chan_at(h);
    if (!n || n->magic != TL__MAGIC_NODE || !name)
        return TL_EMISUSE;
    if (!ch)
        return h ? tl__bad_chan(h, "tl_node_export") : TL_EMISUSE;
    if (ch->rt != n->rt || ch->remote)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_export: the channel is not a local "
                          "channel of this node's runtime");
    size_t k = strlen(name);
    if (k == 0 || k > 255)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_export: a name of 1 to 255 bytes");
    export *e = export_by_name(n, name);
    if (e)
        return e->ch == ch ? TL_OK
                           : tl__seterr(n->rt, TL_EEXIST, "tl_node_export: '%s' is exported "
                                        "already, for another channel", name);
    e = calloc(1, sizeof *e);
    if (!e)
        return tl__seterr(n->rt, TL_ENOMEM, "tl_node_export: out of memory");
    memcpy(e->name, name, k + 1);
    e->hname = tl__hash(n, name, k);
    e->hid = tl__hash_u64(n, ch->id);
    e->ch = ch;
    if (tl__hmap_put(&n->exports, e->hname, e) != TL_OK) {
        free(e);
        return tl__seterr(n->rt, TL_ENOMEM, "tl_node_export: out of memory");
    }
    if (tl__hmap_put(&n->export_ids, e->hid, e) != TL_OK) {
        tl__hmap_del(&n->exports, e->hname, e);
        free(e);
        return tl__seterr(n->rt, TL_ENOMEM, "tl_node_export: out of memory");
    }
    tl_chan_retain(ch);
    return TL_OK;
}

int tl_node_unexport(tl_node *n, const char *name)
{
    if (!n || n->magic != TL__MAGIC_NODE || !name)
        return TL_EMISUSE;
    export *e = export_by_name(n, name);
    if (!e)
        return tl__seterr(n->rt, TL_ENOENT, "tl_node_unexport: '%s' is not exported", name);
    tl__hmap_del(&n->exports, e->hname, e);
    tl__hmap_del(&n->export_ids, e->hid, e);
    tl_chan_release(e->ch);
    free(e);
    return TL_OK;
}

tl_chan *tl__access_exported(const tl_node *n, const char *name)
{
    export *e = export_by_name(n, name);
    return e ? e->ch : NULL;
}

void tl__access_free(tl_node *n)
{
    for (size_t i = 0; i < n->exports.cap; i++) {
        export *e = n->exports.e[i].obj;
        if (e) {
            tl_chan_release(e->ch);
            free(e);
        }
    }
    tl__hmap_free(&n->exports);
    tl__hmap_free(&n->export_ids);
}

/* ---- grants ---- */

/* A tasklet leaving for peer ud refers to local channel ch. */
static void grant_one(void *ud, tl_chan *ch)
{
    peerinfo *p = ud;
    tl_node *n = p->node;
    uint64_t h = tl__hash_u64(n, ch->id);
    grant *g = tl__hmap_get(&p->grants, h, id_match, &ch->id);
    if (g) {
        g->h = tl__chan_handle(ch); /* the same channel; refreshed */
        return;
    }
    g = calloc(1, sizeof *g);
    if (!g || tl__hmap_put(&p->grants, h, g) != TL_OK) {
        free(g); /* the peer then cannot reach ch: its operations fail, safely */
        tl__node_log(n, "out of memory granting channel #%llu to %s",
                     (unsigned long long)ch->id, p->name);
        return;
    }
    g->id = ch->id;
    g->h = tl__chan_handle(ch);
}

int tl__access_save_moving(tl_node *n, tl_tasklet *t, const char *peer, void **buf,
                           size_t *len)
{
    peerinfo *p = tl__peer_get(n, peer, 1);
    if (!p)
        return tl__seterr(n->rt, TL_ENOMEM, "moving a tasklet: out of memory");
    /* without a store the snapshot never rests: the session's tag
     * authenticates it, no CRC (FORMAT.md section 2, flags 3) */
    return tl__snapshot_save_moving_to(t, buf, len, grant_one, p, n->store == NULL);
}

void tl__access_peer_free(peerinfo *p)
{
    for (size_t i = 0; i < p->grants.cap; i++)
        free(p->grants.e[i].obj);
    tl__hmap_free(&p->grants);
}

/* ---- checks ---- */

tl_chan *tl__access_op(conn *l, uint64_t id, const char *name)
{
    tl_node *n = l->node;
    if (name) {
        tl_chan *ch = tl__access_exported(n, name);
        if (ch)
            return ch;
        ch = granted(n, l->p, id); /* a tasklet we sent names it by name and id */
        return ch && ch->name && strcmp(ch->name, name) == 0 ? ch : NULL;
    }
    tl_chan *ch = granted(n, l->p, id);
    if (ch)
        return ch;
    export *e = export_by_id(n, id);
    return e ? e->ch : NULL;
}

void tl__access_taken(tl_node *n, xkey k, const char *peer)
{
    peerinfo **who = tl__xset_who(&n->seen, k);
    if (who) /* out of memory for the peer: anyone may forget it, as with old rows */
        *who = peer && peer[0] ? tl__peer_get(n, peer, 1) : NULL;
}

int tl__access_may_forget(const conn *l, xkey k)
{
    peerinfo **who = tl__xset_who(&l->node->seen, k);
    return who && (!*who || *who == l->p);
}

/* The layer op (src/internal.h): an import from n->importing may refer to
 * local channel ch only if that peer may reach it; refused exactly like a
 * channel that does not exist. */
int tl__access_import(void *ud, tl_chan *ch)
{
    tl_node *n = ud;
    if (!n->importing) /* the store's mailbox: the program's own */
        return 1;
    return granted(n, n->importing, ch->id) == ch || export_by_id(n, ch->id) != NULL;
}
