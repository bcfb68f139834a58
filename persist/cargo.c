/*
 * cargo.c -- rows that travel with a moving tasklet: the store's
 * participants' share of a node's transfer (docs/ARCHITECTURE.md, "Moving
 * a workflow"; the wire form is docs/PROTOCOL.md section 4).
 *
 * A transfer's cargo is one msgpack map {cargo name: bin}, each bin what
 * one participant's cargo_out gave at the source; at the destination
 * each entry goes to the participant of that name (cargo_in).  The node
 * carries the map next to the tasklet's snapshot and knows nothing of
 * what is in it; persist only routes it.
 *
 * Invariants: cargo_out runs inside the checkpoint transaction that
 * writes the transfer, so what a participant gives and the rows it
 * writes for the departure commit with the hand-off or not at all;
 * cargo_in runs while the import is held, before the checkpoint that
 * commits it.  An entry no participant takes refuses the whole import.
 */
#include "persist.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct piece {
    const char *name;
    void *p;
    size_t n;
} piece;

#define MAX_PIECES 4

static int pack_pieces(const piece *v, size_t k, void **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, k);
    for (size_t i = 0; i < k; i++) {
        size_t nl = strlen(v[i].name);
        msgpack_pack_str(&pk, nl);
        msgpack_pack_str_body(&pk, v[i].name, nl);
        msgpack_pack_bin(&pk, v[i].n);
        msgpack_pack_bin_body(&pk, v[i].p, v[i].n);
    }
    if (!sb.data) {
        msgpack_sbuffer_destroy(&sb);
        return TL_ENOMEM;
    }
    *out = sb.data;
    *len = sb.size;
    return TL_OK;
}

int tl__store_cargo_out(tl_store *st, tl__store_tx *tx, uint64_t tid, const char *peer,
                        void **out, size_t *len)
{
    piece v[MAX_PIECES];
    size_t k = 0;
    void *ud;
    const tl__participant *p;
    int rc = TL_OK;
    *out = NULL;
    *len = 0;
    for (size_t i = 0; rc == TL_OK && k < MAX_PIECES && (p = tl__store_part(st, i, &ud)); i++) {
        if (!p->cargo_out)
            continue;
        v[k] = (piece){p->cargo, NULL, 0};
        rc = p->cargo_out(ud, tx, tid, peer, &v[k].p, &v[k].n);
        if (rc == TL_OK && v[k].p)
            k++;
    }
    if (rc == TL_OK && k)
        rc = pack_pieces(v, k, out, len);
    for (size_t i = 0; i < k; i++)
        free(v[i].p);
    return rc;
}

static const tl__participant *part_named(tl_store *st, const char *name, size_t nl, void **ud)
{
    const tl__participant *p;
    for (size_t i = 0; (p = tl__store_part(st, i, ud)); i++)
        if (p->cargo_in && p->cargo && strlen(p->cargo) == nl && memcmp(p->cargo, name, nl) == 0)
            return p;
    return NULL;
}

/* The transfer never left (refused, p NULL): every participant with cargo
 * looks for what it holds of tid. */
static int tell_all_back(tl_store *st, tl_tasklet *t, uint64_t tid, const char *refused)
{
    void *ud;
    const tl__participant *p;
    int rc = TL_OK;
    for (size_t i = 0; rc == TL_OK && (p = tl__store_part(st, i, &ud)); i++)
        if (p->cargo_in)
            rc = p->cargo_in(ud, t, tid, "", NULL, 0, refused);
    return rc;
}

int tl__store_cargo_takes(tl_store *st, tl_runtime *rt, const void *p, size_t n)
{
    msgpack_unpacked up;
    size_t off = 0;
    int rc = TL_OK;
    msgpack_unpacked_init(&up);
    if (tl__msgpack_check(p, n, 24) != n || /* a peer's bytes: counts fit them */
        msgpack_unpack_next(&up, p, n, &off) != MSGPACK_UNPACK_SUCCESS ||
        up.data.type != MSGPACK_OBJECT_MAP)
        rc = tl__seterr(rt, TL_ECORRUPT, "a moving tasklet's cargo is malformed");
    for (uint32_t i = 0; rc == TL_OK && i < up.data.via.map.size; i++) {
        const msgpack_object *k = &up.data.via.map.ptr[i].key;
        void *ud;
        if (k->type != MSGPACK_OBJECT_STR)
            rc = tl__seterr(rt, TL_ECORRUPT, "a moving tasklet's cargo is malformed");
        else if (!part_named(st, k->via.str.ptr, k->via.str.size, &ud))
            rc = tl__seterr(rt, TL_ENOTSUP, "node %s cannot take this tasklet: it carries "
                            "'%.*s' rows and no layer on its store takes them (a workflow needs "
                            "a workflow engine, tl_wf_new, on the destination's store)",
                            rt->node[0] ? rt->node : "(unnamed)", (int)k->via.str.size,
                            k->via.str.ptr);
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

int tl__store_cargo_in(tl_store *st, tl_tasklet *t, uint64_t tid, const char *from,
                       const void *p, size_t n, const char *refused)
{
    tl_runtime *rt = t->rt;
    if (!p)
        return refused ? tell_all_back(st, t, tid, refused) : TL_OK;
    msgpack_unpacked up;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    if (tl__msgpack_check(p, n, 24) != n || /* a peer's bytes: counts fit them */
        msgpack_unpack_next(&up, p, n, &off) != MSGPACK_UNPACK_SUCCESS ||
        up.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&up);
        return tl__seterr(rt, TL_ECORRUPT, "a moving tasklet's cargo is malformed");
    }
    int rc = TL_OK;
    const msgpack_object_map *m = &up.data.via.map;
    for (uint32_t i = 0; rc == TL_OK && i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
        void *ud;
        if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_BIN) {
            rc = tl__seterr(rt, TL_ECORRUPT, "a moving tasklet's cargo is malformed");
            break;
        }
        const tl__participant *pt = part_named(st, k->via.str.ptr, k->via.str.size, &ud);
        if (!pt)
            rc = tl__seterr(rt, TL_ENOTSUP, "node %s cannot take this tasklet: it carries "
                            "'%.*s' rows and no layer on its store takes them (a workflow needs "
                            "a workflow engine, tl_wf_new, on the destination's store)",
                            rt->node[0] ? rt->node : "(unnamed)", (int)k->via.str.size,
                            k->via.str.ptr);
        else
            rc = pt->cargo_in(ud, t, tid, from, v->via.bin.ptr, v->via.bin.size, refused);
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}
