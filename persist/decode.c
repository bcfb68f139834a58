/*
 * decode.c -- records back into a runtime, all or nothing: the driver,
 * the record envelope and the head record.
 *
 * The loader streams: it decodes one record, applies it and frees it, so
 * a million tasklets never sit in memory twice.  Order:
 *   1. the head: magic, format, counters, how many objects to expect
 *      (read_head, read_counts: they size the id maps of decode_ids.c);
 *   2. tasklet chunks: functions resolved by name@version (or an upgrade)
 *      and their schemas matched once per chunk (decode_frame.c); frames,
 *      locals, values, timers (decode_tasklet.c, decode_value.c).  A
 *      reference to an object not seen yet creates an empty *shell* with
 *      that id, filled when its record comes;
 *   3. channel chunks: buffers and queues, every tasklet existing by then
 *      (decode_chan.c);
 *   4. checks: no shell left empty (a dangling id), counts as the head
 *      says, every blocked tasklet in the queue it claims; joiners and the
 *      run queue linked; objects nothing refers to dropped
 *      (decode_finish.c).
 * An import (tl__import: a moving tasklet, next to what the runtime holds)
 * reads the channel chunks first, each channel resolved by its home.
 * Invariants: any failure resets the runtime to empty (tl__runtime_reset)
 * or, for an import, scraps the half-built tasklet, so no caller ever
 * sees part of a snapshot; every record is bounds-checked
 * (tl__msgpack_check) before msgpack-c sees it, and its CRC checked after
 * inflating (a record without one, flags 3, is taken only by an import
 * from a node's sealed session: tl__snapshot_import_wire).  A document
 * stored raw is read where it lies in the caller's bytes, never copied.
 */
#include "decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <zlib.h>

#define MAX_RAWLEN ((uint64_t)TL__MAX_DOC) /* the encoder refuses more */
#define MAX_DEPTH 40

int tl__ld_room(tl__loader *ld, void **v, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n < *cap)
        return TL_OK;
    size_t ncap = *cap ? 2 * *cap : first;
    void *nv = tl__realloc(ld->rt, *v, *cap * size, ncap * size);
    if (!nv)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    *v = nv;
    *cap = ncap;
    return TL_OK;
}

int tl__corrupt(tl__loader *ld, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tl__seterr(ld->rt, TL_ECORRUPT, "%s: %s", ld->where, msg);
}

/* ---- the record envelope: ["tlrec", flags, crc, rawlen, payload] ---- */

/* The document of a record: inflated into a new buffer (flags 1, 2), or
 * the record's own bytes, borrowed (0, and 3 when the loader takes
 * records without a CRC): no copy of a large payload stored raw. */
static int inflate_doc(tl__loader *ld, const msgpack_object *rec, tl__doc *d, const char *what)
{
    const msgpack_object *a = rec->via.array.ptr;
    if (!is_array(rec, 5) || !str_is(&a[0], "tlrec") || !is_uint(&a[1]) || !is_uint(&a[2]) ||
        !is_uint(&a[3]) || a[4].type != MSGPACK_OBJECT_BIN)
        return tl__corrupt(ld, "%s: not a record", what);
    uint64_t flags = a[1].via.u64, crc = a[2].via.u64, rawlen = a[3].via.u64;
    if (flags == 3 && !ld->unchecked_ok)
        return tl__corrupt(ld, "%s: a record without a checksum (flags 3) is only taken from a "
                           "node's sealed session", what);
    if (flags > 3 || rawlen > MAX_RAWLEN) /* 0 raw, 1 zlib, 2 raw deflate, 3 raw unchecked */
        return tl__corrupt(ld, "%s: bad record flags or length", what);
    d->len = (size_t)rawlen;
    if (flags == 0 || flags == 3) {
        if (a[4].via.bin.size != d->len)
            return tl__corrupt(ld, "%s: payload length differs from the record's", what);
        d->bytes = (char *)(uintptr_t)a[4].via.bin.ptr; /* read only, never written */
        d->borrowed = 1;
    } else {
        d->bytes = tl__alloc(ld->rt, d->len ? d->len : 1);
        if (!d->bytes)
            return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory for %s", ld->where, what);
        if (tl__inflate(ld->rt, a[4].via.bin.ptr, a[4].via.bin.size, d->bytes, d->len,
                        flags == 2) != 0)
            return tl__corrupt(ld, "%s: compressed payload does not inflate", what);
    }
    if (flags != 3 && crc32(0L, (const Bytef *)d->bytes, (uInt)d->len) != crc)
        return tl__corrupt(ld, "%s: CRC mismatch (damaged record)", what);
    return TL_OK;
}

/* Decodes raw record bytes into d (the document, unpacked). */
static int read_record(tl__loader *ld, const tl__raw *raw, tl__doc *d, const char *what)
{
    msgpack_object rec;
    size_t off = 0;
    int rc;
    msgpack_unpacked_init(&d->up);
    if (!raw->p || tl__msgpack_check(raw->p, raw->n, 8) != raw->n)
        return tl__corrupt(ld, "%s: truncated or malformed record", what);
    if (!ld->zone_ok && !(ld->zone_ok = msgpack_zone_init(&ld->zone, 1024)))
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory for %s", ld->where, what);
    if (msgpack_unpack(raw->p, raw->n, &off, &ld->zone, &rec) != MSGPACK_UNPACK_SUCCESS)
        rc = tl__corrupt(ld, "%s: undecodable record", what);
    else
        rc = inflate_doc(ld, &rec, d, what); /* keeps nothing of rec's own memory */
    msgpack_zone_clear(&ld->zone);
    if (rc != TL_OK)
        return rc;
    off = 0;
    if (tl__msgpack_check((const unsigned char *)d->bytes, d->len, MAX_DEPTH) != d->len ||
        msgpack_unpack_next(&d->up, d->bytes, d->len, &off) != MSGPACK_UNPACK_SUCCESS)
        return tl__corrupt(ld, "%s: malformed document", what);
    return TL_OK;
}

static void doc_free(tl__loader *ld, tl__doc *d)
{
    for (size_t i = 0; d->funcs && i < d->nfuncs; i++)
        if (d->funcs[i].match)
            tl__free(ld->rt, d->funcs[i].match, d->funcs[i].e->fn->nfields + 1);
    msgpack_unpacked_destroy(&d->up);
    if (!d->borrowed)
        tl__free(ld->rt, d->bytes, d->len ? d->len : 1);
    tl__free(ld->rt, d->funcs, (d->nfuncs + 1) * sizeof *d->funcs);
}

/* ---- pass 1: the head record ---- */

static int read_head(tl__loader *ld)
{
    const msgpack_object *h = &ld->head.up.data;
    const msgpack_object *magic = map_get(h, "magic"), *format = map_get(h, "format");
    const msgpack_object *tid = map_get(h, "next_tid"), *cid = map_get(h, "next_cid");
    const msgpack_object *runq = map_get(h, "runq");
    if (!magic || !str_is(magic, "libtasklet"))
        return tl__corrupt(ld, "head: bad magic (not a libtasklet snapshot)");
    if (!format || !is_uint(format))
        return tl__corrupt(ld, "head: no format version");
    if (format->via.u64 > TL_FORMAT_VERSION)
        return tl__seterr(ld->rt, TL_EFORMAT, "%s: format version %llu is newer than this "
                          "library reads (%d); upgrade libtasklet", ld->where,
                          (unsigned long long)format->via.u64, TL_FORMAT_VERSION);
    if (!tid || !cid || !is_uint(tid) || !is_uint(cid) || !runq || !is_array(runq, UINT32_MAX))
        return tl__corrupt(ld, "head: missing counters or run queue");
    ld->max_tid = tid->via.u64;
    ld->max_cid = cid->via.u64;
    ld->format = (uint32_t)format->via.u64;
    return TL_OK;
}

/* ---- passes 2 and 3: chunk records ---- */

/* The object list of a chunk record, or NULL for a tombstone. */
static int chunk_list(tl__loader *ld, tl__doc *d, const msgpack_object **list)
{
    const msgpack_object *o = &d->up.data;
    *list = NULL;
    if (is_array(o, 0))
        return TL_OK; /* tombstone */
    *list = map_get(o, d->kind == TL__KIND_TASKLETS ? "tasklets" : "chans");
    if (!*list || !is_array(*list, UINT32_MAX))
        return tl__corrupt(ld, "chunk %d/%llu is malformed", d->kind, (unsigned long long)d->key);
    return TL_OK;
}

/* Applies one chunk (a home or hot record, rkind 1-4): each record in it
 * goes to its type's decoder; a store's restore notes where each object
 * lies (split.c). */
static int contents_of(tl__loader *ld, tl__doc *d, int rkind)
{
    const msgpack_object *list;
    const tl__pstate *ps = tl__pstate_peek(ld->rt);
    int notes = ps && ps->restoring && !ld->import;
    int rc = chunk_list(ld, d, &list);
    if (rc == TL_OK && list && d->kind == TL__KIND_TASKLETS)
        rc = tl__resolve_funcs(ld, d);
    for (uint32_t i = 0; list && i < list->via.array.size && rc == TL_OK; i++) {
        const msgpack_object *o = &list->via.array.ptr[i];
        rc = d->kind == TL__KIND_TASKLETS ? tl__dec_tasklet(ld, d, o) : tl__dec_chan(ld, o);
        if (rc == TL_OK && notes) /* a decoded record's id is a checked uint */
            tl__split_loaded(ld->rt, rkind, d->key,
                             tl__idmap_find(d->kind == TL__KIND_TASKLETS ? &ld->tasklets
                                                                         : &ld->chans,
                                            o->via.array.ptr[0].via.u64));
    }
    return rc;
}

/* The head's object counts, which size the id maps, may not exceed what
 * the chunk records present can hold (256 objects each). */
static int read_counts(tl__loader *ld, const tl__raw *chunks, size_t n)
{
    const msgpack_object *h = &ld->head.up.data;
    const msgpack_object *nt = map_get(h, "ntasklets"), *nc = map_get(h, "nchans");
    uint64_t tchunks = 0, cchunks = 0;
    for (size_t i = 0; i < n; i++) { /* home and hot records alike */
        tchunks += TL__KIND_BASE(chunks[i].kind) == TL__KIND_TASKLETS;
        cchunks += TL__KIND_BASE(chunks[i].kind) == TL__KIND_CHANS;
    }
    if (!nt || !nc || !is_uint(nt) || !is_uint(nc) ||
        nt->via.u64 > tchunks << TL__CHUNK_SHIFT || nc->via.u64 > cchunks << TL__CHUNK_SHIFT)
        return tl__corrupt(ld, "head: object counts missing or larger than the chunks can hold");
    ld->ntasklets = nt->via.u64;
    ld->nchans = nc->via.u64;
    /* an import holds a few objects whatever the ids: no dense arrays */
    if (tl__idmap_init(ld->rt, &ld->tasklets, ld->ntasklets, ld->max_tid, ld->import) != TL_OK ||
        tl__idmap_init(ld->rt, &ld->chans, ld->nchans, ld->max_cid, ld->import) != TL_OK)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory for %llu objects", ld->where,
                          (unsigned long long)(ld->ntasklets + ld->nchans));
    return TL_OK;
}

/* "chunk KIND/KEY" (snprintf's "chunk %d/%llu", without printf: one per
 * record read). */
static void chunk_label(char what[64], int kind, uint64_t key)
{
    char digits[24];
    size_t n = 6, k = 0;
    memcpy(what, "chunk ", 6);
    what[n++] = (char)('0' + kind); /* 1 to 4 (home or hot records): checked first */
    what[n++] = '/';
    do {
        digits[k++] = (char)('0' + key % 10);
        key /= 10;
    } while (key);
    while (k)
        what[n++] = digits[--k];
    what[n] = '\0';
}

/* Decodes, applies and frees each record of one kind. */
static int stream_kind(tl__loader *ld, int kind, const tl__raw *chunks, size_t n)
{
    char what[64];
    int rc = TL_OK;
    for (size_t i = 0; i < n && rc == TL_OK; i++) {
        if (chunks[i].kind < TL__KIND_TASKLETS || chunks[i].kind > TL__KIND_HOT(TL__KIND_CHANS))
            return tl__corrupt(ld, "chunk %d/%llu: unknown kind", chunks[i].kind,
                               (unsigned long long)chunks[i].key);
        if (TL__KIND_BASE(chunks[i].kind) != kind) /* kinds 3, 4: hot records */
            continue;
        tl__doc d;
        memset(&d, 0, sizeof d);
        d.kind = kind;
        d.key = chunks[i].key;
        chunk_label(what, chunks[i].kind, chunks[i].key);
        rc = read_record(ld, &chunks[i], &d, what);
        if (rc == TL_OK)
            rc = contents_of(ld, &d, chunks[i].kind);
        doc_free(ld, &d);
    }
    return rc;
}

/* ---- the driver ---- */

static int load_all(tl__loader *ld, const tl__raw *head, const tl__raw *chunks, size_t n)
{
    int rc = read_record(ld, head, &ld->head, "head record");
    if (rc == TL_OK)
        rc = read_head(ld);
    if (rc == TL_OK)
        rc = read_counts(ld, chunks, n);
    /* an import resolves channels first: references find them resolved */
    if (rc == TL_OK)
        rc = stream_kind(ld, ld->import ? TL__KIND_CHANS : TL__KIND_TASKLETS, chunks, n);
    if (rc == TL_OK)
        rc = stream_kind(ld, ld->import ? TL__KIND_TASKLETS : TL__KIND_CHANS, chunks, n);
    if (rc != TL_OK)
        return rc;
    return ld->import ? tl__ld_finish_import(ld) : tl__ld_finish(ld);
}

/* What the loader holds besides the runtime's objects. */
static void loader_free(tl__loader *ld)
{
    if (ld->zone_ok)
        msgpack_zone_destroy(&ld->zone);
    doc_free(ld, &ld->head);
    tl__idmap_free(ld->rt, &ld->tasklets);
    tl__idmap_free(ld->rt, &ld->chans);
    tl__free(ld->rt, ld->joins, ld->capjoins * sizeof *ld->joins);
    tl__free(ld->rt, ld->qents, ld->capq * sizeof *ld->qents);
    tl__free(ld->rt, ld->lqs, ld->caplq * sizeof *ld->lqs);
}

int tl__load(tl_runtime *rt, const tl__raw *head, const tl__raw *chunks, size_t n,
             const char *where, uint32_t *format)
{
    tl__loader ld;
    if (rt->nlive || !tl__list_empty(&rt->chans) || rt->tasklets.live)
        return tl__seterr(rt, TL_ENOTEMPTY, "%s: load into a runtime with no tasklets and no "
                          "channels", where);
    if (rt->current)
        return tl__seterr(rt, TL_EBUSY, "%s: cannot load from inside a tasklet", where);
    memset(&ld, 0, sizeof ld);
    ld.rt = rt;
    ld.where = where;
    msgpack_unpacked_init(&ld.head.up);
    tl__pstate *ps = tl__pstate_peek(rt);
    int rc = load_all(&ld, head, chunks, n); /* waiters keep their records' numbers */
    if (format)
        *format = ld.format;
    for (size_t i = 0; i < ld.nlq; i++)
        ld.lqs[i].ch->lq = 0; /* a failed load may leave them set */
    loader_free(&ld);
    if (rc != TL_OK) {
        int code = rt->errcode;
        char msg[sizeof rt->errmsg];
        memcpy(msg, rt->errmsg, sizeof msg);
        tl__runtime_reset(rt);
        rt->errcode = code;
        memcpy(rt->errmsg, msg, sizeof msg);
        return rc;
    }
    if (ps && ld.renumber && ps->tix.on)
        ps->need_full = 1; /* numbered afresh: the store's records lack them */
    rt->errcode = TL_OK; /* lookups on the way (upgrades) are not errors */
    return TL_OK;
}

/* Drops the loader's reference on every channel it resolved. */
static void release_chans(tl__loader *ld)
{
    for (size_t i = 0; ld->chans.objs && i < ld->chans.cap; i++)
        if (ld->chans.objs[i])
            tl_chan_release(ld->chans.objs[i]);
}

/* An imported tasklet blocked in a send or receive waits again: a local
 * channel may have partners already; a proxy's operation is issued through
 * the node's layer ops (a failure completes the wait with that error). */
void tl__import_restart(tl_runtime *rt, tl_tasklet *t)
{
    if (t->state != TL_BLOCKED || (t->wait != TL_WAIT_SEND && t->wait != TL_WAIT_RECV))
        return;
    tl_chan *ch = (tl_chan *)t->w.on;
    const tl__layer *node = tl__node_layer(rt);
    if (!ch->remote) {
        tl__chan_rematch(ch); /* home again: partners may be waiting */
    } else if (!node->ops) {
        tl__remote_complete(t, TL_ELINK, "the runtime has no node for a remote channel",
                            tl_nil());
    } else if (node->ops->remote_op(node->state, ch, t,
                                    t->wait == TL_WAIT_SEND ? TL_OP_SEND : TL_OP_RECV)
               != TL_OK) {
        char msg[sizeof rt->errmsg];
        memcpy(msg, rt->errmsg, sizeof msg);
        tl__remote_complete(t, rt->errcode, msg, tl_nil());
    } else {
        t->flags |= TL__TF_REMOTE;
    }
}

int tl__import(tl_runtime *rt, const tl__raw *head, const tl__raw *chunks, size_t n, int hold,
               int unchecked_ok, tl_tasklet **out)
{
    tl__loader ld;
    if (rt->current)
        return tl__seterr(rt, TL_EBUSY, "import: cannot import from inside a tasklet");
    memset(&ld, 0, sizeof ld);
    ld.rt = rt;
    ld.where = "moving tasklet";
    ld.import = 1;
    ld.unchecked_ok = unchecked_ok;
    msgpack_unpacked_init(&ld.head.up);
    int rc = load_all(&ld, head, chunks, n);
    tl_tasklet *t = ld.moved;
    if (rc != TL_OK && t)
        tl__tasklet_scrap(t);
    release_chans(&ld);
    loader_free(&ld);
    if (rc != TL_OK)
        return rc;
    tl__mark(rt, t);
    rt->errcode = TL_OK;
    *out = t;
    if (!hold)
        tl__import_restart(rt, t);
    return TL_OK;
}
