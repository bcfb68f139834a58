/*
 * encode.c -- the runtime to msgpack records (docs/FORMAT.md).
 *
 * Invariants: output is deterministic (objects sorted by id, locals in
 * schema order, zlib at a fixed level); nothing written is a pointer.
 * Encoding never changes the runtime; dirty flags are only cleared by
 * tl__clear_dirty once a checkpoint is committed.
 */
#include "persist.h"

#include <limits.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define COMPRESS_MIN 1024    /* shorter documents are stored raw */
#define COMPRESS_SAMPLE 4096 /* longer ones are first tried on a sample this long */
#define MAX_VALUE_DEPTH 16

/* ---- buffers ---- */

void tl__buf_init(tl__buf *b, tl_runtime *rt)
{
    memset(b, 0, sizeof *b);
    b->rt = rt;
    b->max_doc = TL__MAX_DOC;
}

void tl__buf_free(tl__buf *b)
{
    tl__free(b->rt, b->p, b->cap);
    b->p = NULL;
    b->len = b->cap = 0;
}

int tl__buf_write(void *data, const char *p, size_t n)
{
    tl__buf *b = data;
    if (b->oom)
        return -1;
    if (n == 0) /* p may be NULL: an empty buffer appended */
        return 0;
    if (b->len + n > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n)
            ncap *= 2;
        char *np = tl__realloc(b->rt, b->p, b->cap, ncap);
        if (!np) {
            b->oom = 1;
            return -1;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_ref(msgpack_packer *pk, int8_t type, uint64_t id)
{
    unsigned char be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (unsigned char)(id >> (56 - 8 * i));
    msgpack_pack_ext(pk, 8, type);
    msgpack_pack_ext_body(pk, be, 8);
}

/* ---- values ---- */

static int enc_value(msgpack_packer *pk, tl_value v, int depth);

static int enc_items(msgpack_packer *pk, tl_value v, int depth)
{
    size_t n = tl_len(v);
    if (v.type == TL_V_ARRAY) {
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++)
            if (enc_value(pk, tl_array_at(v, i), depth + 1) != TL_OK)
                return TL_ERANGE;
        return TL_OK;
    }
    msgpack_pack_map(pk, n);
    for (size_t i = 0; i < n; i++)
        if (enc_value(pk, tl_map_key(v, i), depth + 1) != TL_OK ||
            enc_value(pk, tl_map_val(v, i), depth + 1) != TL_OK)
            return TL_ERANGE;
    return TL_OK;
}

static void enc_error(msgpack_packer *pk, tl_value v)
{
    const char *msg = tl_error_msg(v);
    size_t n = msg ? strlen(msg) : 0;
    uint32_t code = (uint32_t)tl_error_code(v);
    unsigned char be[4] = {(unsigned char)(code >> 24), (unsigned char)(code >> 16),
                           (unsigned char)(code >> 8), (unsigned char)code};
    msgpack_pack_ext(pk, 4 + n, 3);
    msgpack_pack_ext_body(pk, be, 4);
    if (n)
        msgpack_pack_ext_body(pk, msg, n);
}

static int enc_value(msgpack_packer *pk, tl_value v, int depth)
{
    size_t n;
    const char *s;
    if (depth > MAX_VALUE_DEPTH)
        return TL_ERANGE;
    switch (v.type) {
    case TL_V_NIL: msgpack_pack_nil(pk); break;
    case TL_V_BOOL: v.as.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
    case TL_V_INT: msgpack_pack_int64(pk, v.as.i); break;
    case TL_V_UINT: msgpack_pack_uint64(pk, v.as.u); break;
    case TL_V_DOUBLE: msgpack_pack_double(pk, v.as.d); break;
    case TL_V_STR:
        s = tl_str_data(v, &n);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, s, n);
        break;
    case TL_V_BIN:
        s = tl_str_data(v, &n);
        msgpack_pack_bin(pk, n);
        msgpack_pack_bin_body(pk, s, n);
        break;
    case TL_V_ARRAY:
    case TL_V_MAP: return enc_items(pk, v, depth);
    case TL_V_CHAN: pack_ref(pk, 1, tl_chan_id(v.as.p)); break;
    case TL_V_TASKLET: pack_ref(pk, 2, tl_tasklet_id(v.as.p)); break;
    case TL_V_ERROR: enc_error(pk, v); break;
    default: msgpack_pack_nil(pk); break;
    }
    return TL_OK;
}

/* ---- locals ---- */

/* On-disk field type names, indexed by tl_ftype (FORMAT.md section 4). */
const char *const tl__type_names[12] = {
    "?", "bool", "i32", "i64", "u32", "u64", "f64", "value", "chan", "tasklet", "bytes", "cases",
};

int tl__pack_value(void *packer, tl_value v)
{
    return enc_value(packer, v, 0);
}

static int enc_field(msgpack_packer *pk, const tl_field *fd, const char *locals)
{
    const void *p = locals + fd->offset;
    pack_cstr(pk, fd->name);
    switch (fd->type) {
    case TL_T_BOOL: *(const unsigned char *)p ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
    case TL_T_I32: { int32_t x; memcpy(&x, p, 4); msgpack_pack_int32(pk, x); break; }
    case TL_T_I64: { int64_t x; memcpy(&x, p, 8); msgpack_pack_int64(pk, x); break; }
    case TL_T_U32: { uint32_t x; memcpy(&x, p, 4); msgpack_pack_uint32(pk, x); break; }
    case TL_T_U64: { uint64_t x; memcpy(&x, p, 8); msgpack_pack_uint64(pk, x); break; }
    case TL_T_F64: { double x; memcpy(&x, p, 8); msgpack_pack_double(pk, x); break; }
    case TL_T_VALUE: return enc_value(pk, *(const tl_value *)p, 0);
    case TL_T_CHAN: {
        const tl_chan *h = *(tl_chan *const *)p, *ch = tl__chan_at(h);
        if (ch || h) /* id 0: a stale handle, restored stale (FORMAT.md 4) */
            pack_ref(pk, 1, ch ? ch->id : 0);
        else
            msgpack_pack_nil(pk);
        break;
    }
    case TL_T_TASKLET: {
        const tl_tasklet *h = *(tl_tasklet *const *)p, *t = tl__tasklet_at(h);
        if (t || h)
            pack_ref(pk, 2, t ? t->id : 0);
        else
            msgpack_pack_nil(pk);
        break;
    }
    case TL_T_CASES: /* scratch: a waiting select's cases are in extra.sel */
        msgpack_pack_nil(pk);
        break;
    default:
        msgpack_pack_bin(pk, fd->size);
        msgpack_pack_bin_body(pk, p, fd->size);
    }
    return TL_OK;
}

/* Functions used by one chunk, in order of first use. */
typedef struct functab {
    const tl__fn *fn[64];
    size_t n;
    int overflow;
} functab;

static size_t functab_index(functab *ft, const tl__fn *e)
{
    for (size_t i = 0; i < ft->n; i++)
        if (ft->fn[i] == e)
            return i;
    if (ft->n == TL_COUNTOF(ft->fn)) {
        ft->overflow = 1;
        return 0;
    }
    ft->fn[ft->n] = e;
    return ft->n++;
}

int tl__enc_locals(void *packer, const tl_frame *f)
{
    msgpack_packer *pk = packer;
    const tl_func *fn = f->fn->fn;
    msgpack_pack_map(pk, fn->nfields);
    for (size_t i = 0; i < fn->nfields; i++)
        if (enc_field(pk, &fn->fields[i], TL__LOCALS(f)) != TL_OK)
            return TL_ERANGE;
    return TL_OK;
}

static int enc_frame(msgpack_packer *pk, const tl_frame *f, functab *ft)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, functab_index(ft, f->fn));
    msgpack_pack_uint32(pk, f->h.pc);
    msgpack_pack_uint32(pk, f->h.flags & (TL__F_ERR | TL__F_CATCH));
    return tl__enc_locals(pk, f);
}

static int enc_frames(msgpack_packer *pk, const tl_tasklet *t, functab *ft)
{
    const tl_frame *small[32], **chain = small;
    size_t depth = tl_tasklet_depth(t), i = depth;
    int rc = TL_OK;
    if (depth > TL_COUNTOF(small)) {
        chain = tl__alloc(t->rt, depth * sizeof *chain);
        if (!chain)
            return tl__seterr(t->rt, TL_ENOMEM, "snapshot: out of memory");
    }
    for (const tl_frame *f = t->top; f; f = f->parent)
        chain[--i] = f; /* bottom first */
    msgpack_pack_array(pk, depth);
    for (i = 0; i < depth && rc == TL_OK; i++)
        rc = enc_frame(pk, chain[i], ft);
    if (chain != small)
        tl__free(t->rt, chain, depth * sizeof *chain);
    return rc;
}

static int64_t wait_on(const tl_tasklet *t, const tl_runtime *rt)
{
    switch (t->wait) {
    case TL_WAIT_SEND:
    case TL_WAIT_RECV: return (int64_t)((const tl_chan *)t->w.on)->id;
    case TL_WAIT_SLEEP: return rt->timers[t->w.on].deadline;
    case TL_WAIT_JOIN: return (int64_t)((const tl_tasklet *)t->w.on)->id;
    default: return 0;
    }
}

/* Whether records carry queue numbers: a store is attached and its chunk
 * index complete (never in a subset snapshot). */
static int numbers_known(tl_runtime *rt)
{
    return !tl__subset(rt) && tl__tix_ok(rt);
}

/* The queue number of t, waiting in a send or receive on a local channel
 * (0: none, or not known). */
static uint64_t queue_number(const tl_tasklet *t)
{
    if (t->state != TL_BLOCKED || (t->wait != TL_WAIT_SEND && t->wait != TL_WAIT_RECV) ||
        ((const tl_chan *)t->w.on)->remote || !numbers_known(t->rt))
        return 0;
    return tl__tix_seq(&tl__pstate_peek(t->rt)->tix, &t->w);
}

static int enc_select(msgpack_packer *pk, const tl_tasklet *t)
{
    const tl__sel *sel = t->ext->sel;
    const tl_func *fn = t->top->fn->fn;
    int field = tl__cases_field(t->top, sel->cases, sel->n);
    if (field < 0) /* only a select restored from format 1 can be so */
        return tl__seterr(t->rt, TL_ESTATE, "tasklet #%llu waits in a select of %s@%u whose "
                          "cases are in no TL_T_CASES field of its schema (restored from a "
                          "format-1 snapshot): declare the array as one to save it",
                          (unsigned long long)t->id, fn->name, fn->version);
    pack_cstr(pk, "sel");
    msgpack_pack_map(pk, 2);
    pack_cstr(pk, "field"); /* format 2: by name, not by byte offset */
    pack_cstr(pk, fn->fields[field].name);
    pack_cstr(pk, "cases");
    msgpack_pack_array(pk, (size_t)sel->n);
    int numbered = numbers_known(t->rt);
    for (int i = 0; i < sel->n; i++) {
        msgpack_pack_array(pk, numbered ? 4 : 3);
        msgpack_pack_uint64(pk, ((const tl_chan *)tl__slot(sel->cases[i].ch))->id);
        msgpack_pack_int(pk, sel->cases[i].op);
        if (enc_value(pk, sel->cases[i].value, 0) != TL_OK)
            return TL_ERANGE;
        if (numbered) /* its queue number (FORMAT.md section 5) */
            msgpack_pack_uint64(pk, sel->ws[i].seq);
    }
    return TL_OK;
}

static size_t joiner_count(const tl__ext *x)
{
    size_t n = 0;
    for (tl__link *l = x->joiners.next; l != &x->joiners; l = l->next)
        n += tl__t_in(TL__CONTAINER(l, tl_tasklet, w.link));
    return n;
}

static size_t extra_count(const tl_tasklet *t, uint64_t q)
{
    const tl__ext *x = t->ext;
    if (!x)
        return q != 0;
    return (x->name != NULL) + (x->errmsg != NULL) + 1 /* fired */ +
           (joiner_count(x) > 0) + (x->sel != NULL) + (q != 0);
}

static int enc_extra(msgpack_packer *pk, const tl_tasklet *t)
{
    const tl__ext *x = t->ext;
    uint64_t q = queue_number(t);
    size_t n = extra_count(t, q);
    if (!n) {
        msgpack_pack_nil(pk);
        return TL_OK;
    }
    msgpack_pack_map(pk, n);
    if (q) { /* format 2: the place in its queue (FORMAT.md section 4) */
        pack_cstr(pk, "q");
        msgpack_pack_uint64(pk, q);
    }
    if (!x)
        return TL_OK;
    if (x->name) { pack_cstr(pk, "name"); pack_cstr(pk, x->name); }
    if (x->errmsg) { pack_cstr(pk, "msg"); pack_cstr(pk, x->errmsg); }
    pack_cstr(pk, "fired");
    msgpack_pack_int(pk, x->sel_fired);
    size_t nj = joiner_count(x);
    if (nj) {
        pack_cstr(pk, "joiners");
        msgpack_pack_array(pk, nj);
        for (tl__link *l = x->joiners.next; l != &x->joiners; l = l->next)
            if (tl__t_in(TL__CONTAINER(l, tl_tasklet, w.link)))
                msgpack_pack_uint64(pk, TL__CONTAINER(l, tl_tasklet, w.link)->id);
    }
    return x->sel ? enc_select(pk, t) : TL_OK;
}

static int enc_tasklet(msgpack_packer *pk, const tl_tasklet *t, functab *ft)
{
    if (t->state == TL_BLOCKED && t->wait >= TL_WAIT_PAUSED) /* no format field yet */
        return tl__seterr(t->rt, TL_ESTATE, "tasklet #%llu is %s: snapshots have no "
                          "field for that state yet; save before or after", (unsigned long long)t->id,
                          t->wait == TL_WAIT_RUN ? "the main tasklet inside TL_RUN_SCHEDULER"
                                                 : "removed from the run queue");
    msgpack_pack_array(pk, 9);
    msgpack_pack_uint64(pk, t->id);
    msgpack_pack_uint8(pk, t->state);
    msgpack_pack_uint8(pk, t->wait);
    msgpack_pack_int32(pk, t->err);
    msgpack_pack_uint8(pk, 0); /* extrefs: reserved */
    if (t->state == TL_BLOCKED && t->wait != TL_WAIT_SELECT)
        msgpack_pack_int64(pk, wait_on(t, t->rt));
    else
        msgpack_pack_nil(pk);
    if (enc_value(pk, t->xfer, 0) != TL_OK || enc_frames(pk, t, ft) != TL_OK)
        return tl__seterr(t->rt, TL_ERANGE, "tasklet #%llu holds a value nested deeper "
                          "than %d levels", (unsigned long long)t->id, MAX_VALUE_DEPTH);
    return enc_extra(pk, t);
}

static void enc_funcs(msgpack_packer *pk, const functab *ft)
{
    msgpack_pack_array(pk, ft->n);
    for (size_t i = 0; i < ft->n; i++) {
        const tl_func *fn = ft->fn[i]->fn;
        msgpack_pack_array(pk, 4);
        pack_cstr(pk, fn->name);
        msgpack_pack_uint32(pk, fn->version);
        msgpack_pack_array(pk, fn->nfields);
        for (size_t j = 0; j < fn->nfields; j++) {
            msgpack_pack_array(pk, 2);
            pack_cstr(pk, fn->fields[j].name);
            pack_cstr(pk, tl__type_names[fn->fields[j].type]);
        }
        pack_cstr(pk, ft->fn[i]->shape); /* format 2 */
    }
}

/* The tasklets of one chunk, then the functions their frames use (the
 * table fills as the frames are written, so it goes last: a reader looks
 * both keys up by name). */
static int enc_tasklet_chunk(tl_runtime *rt, void **objs, size_t n, tl__buf *doc)
{
    msgpack_packer pk;
    functab ft = {.n = 0};
    int rc = TL_OK;
    msgpack_packer_init(&pk, doc, tl__buf_write);
    msgpack_pack_map(&pk, 2);
    pack_cstr(&pk, "tasklets");
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n && rc == TL_OK; i++)
        rc = enc_tasklet(&pk, objs[i], &ft);
    if (rc == TL_OK && ft.overflow)
        rc = tl__seterr(rt, TL_ERANGE, "more than 64 functions in one chunk of 256 tasklets");
    if (rc == TL_OK) {
        pack_cstr(&pk, "funcs");
        enc_funcs(&pk, &ft);
    }
    return rc == TL_OK && doc->oom ? TL_ENOMEM : rc;
}

static uint64_t waiter_tid(const tl__waiter *w)
{
    return w->on & 1 ? ((const tl__selw *)w)->sel->t->id : TL__CONTAINER(w, tl_tasklet, w)->id;
}

static const tl_tasklet *waiter_tasklet(const tl__waiter *w)
{
    return w->on & 1 ? ((const tl__selw *)w)->sel->t : TL__CONTAINER(w, tl_tasklet, w);
}

/* A queue as [ids, cases]: ids delta-coded (waiters usually arrive in id
 * order, so a million of them compress to almost nothing), cases the
 * [position, case index] of the select waiters among them.  Waiters left
 * out of a subset snapshot are skipped.  A long queue of a local channel,
 * when every record carries its waiters' queue numbers, is only [count]:
 * touching the channel then costs nothing per waiter (FORMAT.md 5). */
static void enc_queue(msgpack_packer *pk, const tl_chan *ch, const tl__link *q, size_t n)
{
    uint64_t prev = 0;
    size_t nsel = 0, pos = 0;
    const tl__waiter *w0 = (const tl__waiter *)q->next;
    if (n > TL__LONG_QUEUE && !ch->remote && numbers_known(ch->rt)) {
        msgpack_pack_array(pk, 1); /* [count]: the waiters' records give the order */
        msgpack_pack_uint64(pk, n);
        return;
    }
    if (q->next != q && (tl__subset(waiter_tasklet(w0)->rt) ||
                         (!(w0->on & 1) && ((const tl_chan *)w0->on)->remote))) {
        n = 0;
        for (const tl__link *l = q->next; l != q; l = l->next)
            n += tl__t_in(waiter_tasklet((const tl__waiter *)l));
    }
    msgpack_pack_array(pk, 2);
    msgpack_pack_array(pk, n);
    for (const tl__link *l = q->next; l != q; l = l->next) {
        if (!tl__t_in(waiter_tasklet((const tl__waiter *)l)))
            continue;
        uint64_t id = waiter_tid((const tl__waiter *)l);
        msgpack_pack_int64(pk, (int64_t)(id - prev));
        prev = id;
        nsel += ((const tl__waiter *)l)->on & 1;
    }
    msgpack_pack_array(pk, nsel);
    for (const tl__link *l = q->next; l != q; l = l->next) {
        const tl__waiter *w = (const tl__waiter *)l;
        if (!tl__t_in(waiter_tasklet(w)))
            continue;
        pos++;
        if (!(w->on & 1))
            continue;
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint64(pk, pos - 1);
        msgpack_pack_int(pk, ((const tl__selw *)w)->idx);
    }
}

/* The 11th item: where the channel lives (for a proxy, and for every
 * channel of a moving tasklet) and whether it is pinned. */
static void enc_chan_extra(msgpack_packer *pk, const tl_chan *ch, int moving)
{
    const tl__remote *r = ch->remote;
    int home = r != NULL || moving, pinned = ch->pinned && !moving;
    msgpack_pack_map(pk, (size_t)(home + pinned));
    if (home) {
        pack_cstr(pk, "home");
        msgpack_pack_array(pk, 3);
        pack_cstr(pk, r ? r->node : ch->rt->node);
        msgpack_pack_uint64(pk, r ? r->id : ch->id);
        if (r && r->name)
            pack_cstr(pk, r->name);
        else
            msgpack_pack_nil(pk);
    }
    if (pinned) {
        pack_cstr(pk, "pinned");
        msgpack_pack_true(pk);
    }
}

static int enc_chan(msgpack_packer *pk, const tl_chan *ch)
{
    int moving = tl__subset(ch->rt) == 2;
    int extra = moving || ch->remote || ch->pinned;
    msgpack_pack_array(pk, extra ? 11 : 10);
    msgpack_pack_uint64(pk, ch->id);
    if (ch->name && !moving)
        pack_cstr(pk, ch->name);
    else
        msgpack_pack_nil(pk);
    msgpack_pack_uint64(pk, moving ? 0 : ch->cap);
    msgpack_pack_int(pk, ch->pref);
    ch->sched_all ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    ch->closing ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    msgpack_pack_uint8(pk, 0); /* extrefs: reserved */
    msgpack_pack_array(pk, moving ? 0 : ch->count);
    for (size_t i = 0; !moving && i < ch->count; i++)
        if (enc_value(pk, ch->buf[(ch->head + i) % ch->cap], 0) != TL_OK)
            return tl__seterr(ch->rt, TL_ERANGE, "channel #%llu buffers a value nested too deep",
                              (unsigned long long)ch->id);
    enc_queue(pk, ch, &ch->sendq, (size_t)ch->nsend);
    enc_queue(pk, ch, &ch->recvq, (size_t)ch->nrecv);
    if (extra)
        enc_chan_extra(pk, ch, moving);
    return TL_OK;
}

static int enc_chan_chunk(void **objs, size_t n, tl__buf *doc)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, doc, tl__buf_write);
    msgpack_pack_map(&pk, 1);
    pack_cstr(&pk, "chans");
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++)
        if (enc_chan(&pk, objs[i]) != TL_OK)
            return TL_ERANGE;
    return doc->oom ? TL_ENOMEM : TL_OK;
}

/* ---- zlib streams, kept per runtime: setting one up costs ~256 KB of
 * allocation, far more than compressing a 10 KB chunk.  A document of at
 * most SMALL_DOC bytes goes through a second stream with a window that
 * holds it whole and a small hash table: deflateReset clears the hash
 * table, 64 KiB for the large stream, which cost more than compressing a
 * 600-byte record.  Both write raw deflate that inflate(-15) reads, so
 * the choice is not in the format. ---- */

#define SMALL_DOC 4096 /* 2^SMALL_WBITS: the small stream's window */
#define SMALL_WBITS 12
#define SMALL_MEMLEVEL 4 /* a hash table of 2^(4+7) entries: 4 KiB */

static z_stream *new_deflater(int wbits, int memlevel)
{
    z_stream *zs = calloc(1, sizeof *zs);
    /* raw deflate (RFC 1951): the record's crc32 is its one checksum,
     * no adler32 of a zlib stream besides it */
    if (!zs || deflateInit2(zs, 1, Z_DEFLATED, -wbits, memlevel, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(zs);
        return NULL;
    }
    return zs;
}

static z_stream *deflater(tl__pstate *ps, size_t n)
{
    void **slot = n <= SMALL_DOC ? &ps->zsmall : &ps->zdef;
    if (!*slot)
        *slot = n <= SMALL_DOC ? new_deflater(SMALL_WBITS, SMALL_MEMLEVEL) : new_deflater(15, 8);
    if (*slot)
        deflateReset(*slot);
    return *slot;
}

int tl__inflate(tl_runtime *rt, const void *src, size_t srclen, void *dst, size_t dstlen,
                int raw)
{
    tl__pstate *ps = tl__pstate_get(rt);
    if (!ps)
        return -1;
    if (!ps->zinf) {
        z_stream *zs = calloc(1, sizeof *zs);
        if (!zs || inflateInit(zs) != Z_OK) {
            free(zs);
            return -1;
        }
        ps->zinf = zs;
    }
    if (srclen > UINT_MAX || dstlen > UINT_MAX) /* zlib counts in uInt: refuse, never cast */
        return -1;
    z_stream *zs = ps->zinf;
    if (inflateReset2(zs, raw ? -15 : 15) != Z_OK) /* flags 2: raw deflate, 1: zlib stream */
        return -1;
    zs->next_in = (Bytef *)(uintptr_t)src;
    zs->avail_in = (uInt)srclen;
    zs->next_out = dst;
    zs->avail_out = (uInt)dstlen;
    int zrc = inflate(zs, Z_FINISH);
    return zrc == Z_STREAM_END && zs->total_out == dstlen && zs->avail_in == 0 ? 0 : -1;
}

void tl__zlib_free(tl_runtime *rt, tl__pstate *ps)
{
    for (int i = 0; i < 2; i++) {
        void *zs = i ? ps->zsmall : ps->zdef;
        if (zs) {
            deflateEnd(zs);
            free(zs);
        }
    }
    if (ps->zinf) {
        inflateEnd(ps->zinf);
        free(ps->zinf);
    }
    tl__free(rt, ps->zbuf, ps->zcap);
    ps->zdef = ps->zinf = ps->zsmall = NULL;
    ps->zbuf = NULL;
    ps->zcap = 0;
}

/* zlib and crc32 take uInt lengths, SQLite int ones: a record is never
 * longer than what both hold, because a document over TL__MAX_DOC is
 * refused before it is compressed (finish_record) or inflated (the decoder's
 * rawlen check). */
_Static_assert(TL__MAX_DOC <= INT_MAX && TL__MAX_DOC <= UINT_MAX,
               "a record must fit zlib's uInt and SQLite's int lengths");

/* Deflates n bytes at p into the reused output buffer (*z); returns the
 * compressed length, 0 on failure. */
static size_t deflate_into(tl__pstate *ps, const void *p, size_t n, const unsigned char **z)
{
    z_stream *zs = deflater(ps, n);
    if (!zs)
        return 0;
    zs->next_in = (Bytef *)(uintptr_t)p;
    zs->avail_in = (uInt)n;
    zs->next_out = ps->zbuf;
    zs->avail_out = (uInt)ps->zcap;
    *z = ps->zbuf;
    return deflate(zs, Z_FINISH) == Z_STREAM_END ? (size_t)zs->total_out : 0;
}

/* Whether a compressed length c of n bytes is worth keeping: at least 1/8
 * smaller.  Otherwise the record is stored raw, and reading it costs a
 * copy instead of an inflate. */
static int pays(size_t c, size_t n) { return c > 0 && c <= n - n / 8; }

/* Compresses doc into the reused output buffer *z if that pays; returns
 * the length, 0 if the record is better stored raw, -1 on failure.  A
 * long document is first tried on a sample of its head, so that
 * incompressible bytes (images, ciphertext, random ids) cost a 4 KiB
 * trial instead of deflating them all. */
static ptrdiff_t compress_doc(tl_runtime *rt, const tl__buf *doc, const unsigned char **z)
{
    tl__pstate *ps = tl__pstate_get(rt);
    if (!ps)
        return -1;
    size_t need = deflateBound(NULL, (uLong)doc->len) + 64;
    if (need > ps->zcap) {
        unsigned char *nb = tl__realloc(rt, ps->zbuf, ps->zcap, need);
        if (!nb)
            return -1;
        ps->zbuf = nb;
        ps->zcap = need;
    }
    if (doc->len > 2 * COMPRESS_SAMPLE &&
        !pays(deflate_into(ps, doc->p, COMPRESS_SAMPLE, z), COMPRESS_SAMPLE))
        return 0;
    size_t c = deflate_into(ps, doc->p, doc->len, z);
    if (!c)
        return -1;
    return pays(c, doc->len) ? (ptrdiff_t)c : 0;
}

/* ---- records ---- */

/* A record is ["tlrec", flags, crc, rawlen, bin payload] (FORMAT.md
 * section 2).  Its document is written straight into the output after
 * room for the widest header (REC_HEAD bytes: crc as uint32, rawlen as
 * uint64, payload as bin32), then the header goes in front: in that width
 * when the document stays raw and is long (no byte of it moves), else in
 * the shortest one, the payload moved up to it. */
#define REC_HEAD 27
#define REC_WIDE_MIN ((size_t)64 << 10)

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
}

/* The header in its widest form, exactly REC_HEAD bytes. */
static void wide_head(unsigned char *h, unsigned flags, uint32_t crc, size_t rawlen)
{
    memcpy(h, "\x95\xa5tlrec", 7);
    h[7] = (unsigned char)flags;
    h[8] = 0xce;
    put_be(h + 9, crc, 4);
    h[13] = 0xcf;
    put_be(h + 14, rawlen, 8);
    h[22] = 0xc6;
    put_be(h + 23, rawlen, 4);
}

/* The header in its shortest form into h (at most REC_HEAD bytes). */
static size_t short_head(unsigned char *h, unsigned flags, uint32_t crc, size_t rawlen,
                         size_t paylen)
{
    tl__buf b = {.p = (char *)h, .cap = REC_HEAD, .max_doc = 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, tl__buf_write);
    msgpack_pack_array(&pk, 5);
    pack_cstr(&pk, "tlrec");
    msgpack_pack_uint8(&pk, (uint8_t)flags);
    msgpack_pack_uint32(&pk, crc);
    msgpack_pack_uint64(&pk, rawlen);
    msgpack_pack_bin(&pk, paylen);
    return b.len;
}

/* The record whose document was written at out->p[at + REC_HEAD ..
 * out->len): compressed if that pays, checksummed unless stored raw in an
 * unchecked snapshot (flags 3), its header put in front. */
static int finish_record(tl_runtime *rt, tl__buf *out, size_t at)
{
    unsigned char h[REC_HEAD];
    const unsigned char *z = NULL;
    tl__buf doc = {.p = out->p + at + REC_HEAD, .len = out->len - at - REC_HEAD};
    if (doc.len > out->max_doc)
        return tl__seterr(rt, TL_ERANGE, "a record of %zu bytes (uncompressed) is larger than "
                          "a reader accepts (%zu bytes, FORMAT.md section 8): keep less in one "
                          "tasklet's locals or one channel's buffer", doc.len, out->max_doc);
    ptrdiff_t c = doc.len >= COMPRESS_MIN ? compress_doc(rt, &doc, &z) : 0;
    if (c < 0)
        return tl__seterr(rt, TL_ENOMEM, "snapshot: cannot compress a record");
    const tl__pstate *ps = tl__pstate_peek(rt);
    unsigned flags = c > 0 ? 2 : ps && ps->unchecked ? 3 : 0;
    uint32_t crc = flags == 3 ? 0 : (uint32_t)crc32(0L, (const Bytef *)doc.p, (uInt)doc.len);
    if (c > 0) { /* the compressed bytes replace the document */
        size_t k = short_head(h, flags, crc, doc.len, (size_t)c);
        memcpy(out->p + at, h, k);
        memcpy(out->p + at + k, z, (size_t)c);
        out->len = at + k + (size_t)c;
    } else if (doc.len >= REC_WIDE_MIN) {
        wide_head((unsigned char *)out->p + at, flags, crc, doc.len);
    } else {
        size_t k = short_head(h, flags, crc, doc.len, doc.len);
        memmove(out->p + at + k, doc.p, doc.len);
        memcpy(out->p + at, h, k);
        out->len = at + k + doc.len;
    }
    return TL_OK;
}

/* Starts a record in out: room for its header; the caller writes the
 * document after it, then calls finish_record(rt, out, *at). */
static int begin_record(tl__buf *out, size_t *at)
{
    static const char room[REC_HEAD] = {0};
    *at = out->len;
    return tl__buf_write(out, room, sizeof room);
}

int tl__enc_tombstone(tl_runtime *rt, tl__buf *out)
{
    msgpack_packer pk;
    size_t at;
    begin_record(out, &at);
    msgpack_packer_init(&pk, out, tl__buf_write);
    msgpack_pack_array(&pk, 0);
    return out->oom ? tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory")
                    : finish_record(rt, out, at);
}

int tl__enc_chunk(tl_runtime *rt, int kind, const tl__index *ix, size_t key, tl__buf *out)
{
    return tl__enc_objs(rt, kind, ix->objs + ix->start[key], ix->start[key + 1] - ix->start[key],
                        out);
}

int tl__enc_objs(tl_runtime *rt, int kind, void **objs, size_t n, tl__buf *out)
{
    size_t at;
    int rc;
    if (n == 0)
        return tl__enc_tombstone(rt, out);
    begin_record(out, &at);
    if (kind == TL__KIND_TASKLETS)
        rc = enc_tasklet_chunk(rt, objs, n, out);
    else
        rc = enc_chan_chunk(objs, n, out);
    if (rc == TL_OK && out->oom)
        rc = tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory");
    return rc == TL_OK ? finish_record(rt, out, at) : rc;
}

/* The crc32 of one object's record alone (a tasklet with the functions
 * its frames use): persist/split.c's check of the change marks. */
int tl__enc_obj_crc(tl_runtime *rt, int kind, void *obj, uint32_t *crc)
{
    tl__buf doc;
    msgpack_packer pk;
    functab ft = {.n = 0};
    int rc = TL_OK;
    tl__buf_init(&doc, rt);
    msgpack_packer_init(&pk, &doc, tl__buf_write);
    if (kind == TL__KIND_TASKLETS) {
        rc = enc_tasklet(&pk, obj, &ft);
        enc_funcs(&pk, &ft);
    } else {
        rc = enc_chan(&pk, obj);
    }
    *crc = (uint32_t)crc32(0L, (const Bytef *)doc.p, (uInt)doc.len);
    rc = rc == TL_OK && doc.oom ? TL_ENOMEM : rc;
    tl__buf_free(&doc);
    return rc;
}

/* ---- head ---- */

static int cmp_fn(const void *a, const void *b)
{
    const tl_func *x = (*(const tl__fn *const *)a)->fn, *y = (*(const tl__fn *const *)b)->fn;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->version > y->version) - (x->version < y->version);
}

/* Appends "name@version" to pk without printf. */
static void pack_needed(msgpack_packer *pk, const tl_func *fn)
{
    char buf[300], digits[12];
    size_t n = strlen(fn->name), k = 0;
    uint32_t v = fn->version;
    if (n > sizeof buf - sizeof digits - 1)
        n = sizeof buf - sizeof digits - 1;
    memcpy(buf, fn->name, n);
    buf[n++] = '@';
    do
        digits[k++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (k)
        buf[n++] = digits[--k];
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, buf, n);
}

/* The functions with live frames, from the per-function frame counts (or,
 * for a subset, from its frames: a moving tasklet has a few). */
static int enc_needs(msgpack_packer *pk, tl_runtime *rt, const tl__index *tix)
{
    size_t cap = tl__subset(rt) ? 16 : rt->by_name.n + 1, n = 0;
    const tl__fn **used = tl__alloc(rt, cap * sizeof *used);
    if (!used)
        return tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory");
    if (tl__subset(rt)) {
        for (size_t i = 0; i < tix->start[tix->nkeys]; i++)
            for (const tl_frame *f = ((const tl_tasklet *)tix->objs[i])->top; f; f = f->parent) {
                size_t j = 0;
                while (j < n && used[j] != f->fn)
                    j++;
                if (j < n)
                    continue;
                if (n == cap) {
                    const tl__fn **nu = tl__realloc(rt, used, cap * sizeof *used,
                                                    2 * cap * sizeof *used);
                    if (!nu) {
                        tl__free(rt, used, cap * sizeof *used);
                        return tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory");
                    }
                    used = nu;
                    cap *= 2;
                }
                used[n++] = f->fn;
            }
    } else {
        for (size_t i = 0; i < rt->by_name.cap; i++) {
            const tl__fn *e = rt->by_name.slots[i];
            if (e && e->live)
                used[n++] = e;
        }
    }
    qsort(used, n, sizeof used[0], cmp_fn);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        pack_needed(pk, used[i]->fn);
    tl__free(rt, used, cap * sizeof *used);
    return TL_OK;
}

/* The head's run queue: the moving tasklet if it is runnable (a moving
 * tasklet's snapshot), else the subset's (or every) runnable tasklet. */
static void enc_runq(msgpack_packer *pk, tl_runtime *rt, const tl__index *tix)
{
    if (tl__subset(rt) == 2) {
        const tl_tasklet *t = tix->nkeys ? tix->objs[0] : NULL;
        int runnable = t && t->state == TL_RUNNABLE;
        msgpack_pack_array(pk, (size_t)runnable);
        if (runnable)
            msgpack_pack_uint64(pk, t->id);
        return;
    }
    size_t nq = 0;
    for (tl__link *l = rt->runq.next; l != &rt->runq; l = l->next)
        nq += tl__t_in(TL__CONTAINER(l, tl_tasklet, w.link));
    msgpack_pack_array(pk, nq);
    for (tl__link *l = rt->runq.next; l != &rt->runq; l = l->next)
        if (tl__t_in(TL__CONTAINER(l, tl_tasklet, w.link)))
            msgpack_pack_uint64(pk, TL__CONTAINER(l, tl_tasklet, w.link)->id);
}

int tl__enc_head(tl_runtime *rt, int64_t time, const tl__index *tix,
                 const tl__index *cix, tl__buf *out)
{
    msgpack_packer pk;
    size_t at;
    begin_record(out, &at);
    msgpack_packer_init(&pk, out, tl__buf_write);
    msgpack_pack_map(&pk, 11);
    pack_cstr(&pk, "magic"); pack_cstr(&pk, "libtasklet");
    pack_cstr(&pk, "format"); msgpack_pack_uint32(&pk, TL_FORMAT_VERSION);
    pack_cstr(&pk, "lib"); pack_cstr(&pk, TL_VERSION_STRING);
    pack_cstr(&pk, "node"); pack_cstr(&pk, rt->node);
    pack_cstr(&pk, "time"); msgpack_pack_int64(&pk, time);
    pack_cstr(&pk, "needs");
    if (enc_needs(&pk, rt, tix) != TL_OK)
        return TL_ENOMEM;
    pack_cstr(&pk, "next_tid"); msgpack_pack_uint64(&pk, rt->next_tid);
    pack_cstr(&pk, "next_cid"); msgpack_pack_uint64(&pk, rt->next_cid);
    pack_cstr(&pk, "ntasklets"); msgpack_pack_uint64(&pk, tix->total);
    pack_cstr(&pk, "nchans"); msgpack_pack_uint64(&pk, cix->total);
    pack_cstr(&pk, "runq");
    enc_runq(&pk, rt, tix);
    return out->oom ? tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory")
                    : finish_record(rt, out, at);
}
