/*
 * snapshot.c -- chunk indexes and standalone snapshots.
 *
 * tl__index_build buckets every tasklet or channel by chunk key (id >> 8)
 * with a counting sort, then orders each bucket by id: O(n) for a million
 * objects.  An incremental checkpoint's index is built from the chunk
 * indexes instead (tindex.c): the chunks of the tasklet dirty set and of
 * the channels listed in rt->dchans (or freed), so it costs what changed;
 * tl__clear_dirty empties both.  A standalone snapshot (tl_snapshot_save)
 * is the head record and every chunk record in one msgpack array;
 * tl_snapshot_load hands the same records to the loader the store uses.
 */
#include "persist.h"

#include <msgpack.h>
#include <string.h>

/* ---- chunk index ---- */

/* An object with its id, for sorting without chasing pointers. */
typedef tl__keyed idobj;

typedef struct collect {
    tl_runtime *rt;
    int kind, all;
    tl__index *ix;
    idobj *v;
    size_t n, cap;
    int oom;
    uint64_t lastkey; /* the chunk looked up last in the dirty set */
    bool lastin;
} collect;

static uint64_t obj_id(const void *obj, int kind)
{
    return kind == TL__KIND_TASKLETS ? ((const tl_tasklet *)obj)->id : ((const tl_chan *)obj)->id;
}

/* Whether an object goes into this index: all of them, the subset, or
 * (incremental tasklets) those whose chunk is in the dirty set. */
static bool wanted(collect *c, const void *obj)
{
    if (c->ix->subset)
        return c->kind == TL__KIND_TASKLETS ? tl__t_in(obj) : tl__ch_in(obj);
    if (c->all || c->kind == TL__KIND_CHANS)
        return true;
    uint64_t key = obj_id(obj, c->kind) >> TL__CHUNK_SHIFT;
    if (key != c->lastkey) { /* neighbours in the slab are often of one chunk */
        c->lastkey = key;
        c->lastin = tl__dirty_has(c->rt, key);
    }
    return c->lastin;
}

static void collect_visit(void *obj, void *ud)
{
    collect *c = ud;
    bool in = wanted(c, obj);
    c->ix->total += !c->ix->subset || in;
    if (!in || c->oom)
        return;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? 2 * c->cap : 256;
        idobj *nv = tl__realloc(c->rt, c->v, c->cap * sizeof *nv, ncap * sizeof *nv);
        if (!nv) {
            c->oom = 1;
            return;
        }
        c->v = nv;
        c->cap = ncap;
    }
    c->v[c->n++] = (idobj){obj_id(obj, c->kind), obj};
}

/* LSD radix sort by id, 11 bits a pass, as many passes as the largest id
 * needs: O(n), whatever order the slab walk gave. */
static int sort_by_id(tl_runtime *rt, idobj *v, size_t n)
{
    uint64_t max = 0;
    for (size_t i = 0; i < n; i++)
        max = v[i].id > max ? v[i].id : max;
    if (n < 2 || !max)
        return TL_OK;
    idobj *tmp = tl__alloc(rt, n * sizeof *tmp);
    if (!tmp)
        return TL_ENOMEM;
    idobj *src = v, *dst = tmp;
    for (int shift = 0; shift < 64 && (max >> shift); shift += 11) {
        size_t count[2048] = {0};
        for (size_t i = 0; i < n; i++)
            count[(src[i].id >> shift) & 2047]++;
        for (size_t d = 0, sum = 0; d < 2048; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i].id >> shift) & 2047]++] = src[i];
        idobj *t = src;
        src = dst;
        dst = t;
    }
    if (src != v)
        memcpy(v, src, n * sizeof *v);
    tl__free(rt, tmp, n * sizeof *tmp);
    return TL_OK;
}

int tl__sort_keyed(tl_runtime *rt, tl__keyed *v, size_t n)
{
    return sort_by_id(rt, v, n);
}

static void each_object(tl_runtime *rt, int kind, tl__slab_visit fn, void *ud)
{
    if (kind == TL__KIND_TASKLETS) {
        tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, fn, ud);
        return;
    }
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next)
        fn(TL__CONTAINER(l, tl_chan, all), ud);
}

/* Chunks changed while empty now (their objects were freed): listed too,
 * so that tombstones replace what the store has for them. */
typedef struct keylist {
    uint64_t *out;
    size_t n, max;
} keylist;

static void keylist_add(uint64_t k, void *ud)
{
    keylist *l = ud;
    if (l->n < l->max)
        l->out[l->n++] = k;
}

static size_t dirty_empty_keys(tl_runtime *rt, int kind, uint64_t *out, size_t max)
{
    size_t n = 0;
    if (kind == TL__KIND_TASKLETS) {
        keylist l = {out, 0, max};
        tl__dirty_each(rt, keylist_add, &l);
        return l.n;
    }
    const tl__pstate *ps = tl__pstate_peek(rt);
    for (size_t i = 0; ps && i < ps->ngone && n < max; i++)
        out[n++] = ps->gone[i];
    return n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Channel chunks freed since the last checkpoint (SIZE_MAX: lost track). */
static size_t gone_count(const tl_runtime *rt)
{
    const tl__pstate *ps = tl__pstate_peek(rt);
    return ps ? ps->ngone : 0;
}

/* Allocates ix's arrays for n objects and up to room extra keys, and
 * *extra (room + 1 keys, esize bytes).  On failure frees what it got:
 * tl__index_free cannot know these sizes yet (cap, start[nkeys]). */
static int group_alloc(tl_runtime *rt, tl__index *ix, size_t n, size_t room, uint64_t **extra,
                       size_t esize)
{
    size_t cap = n + room + 1;
    *extra = tl__alloc(rt, esize);
    ix->keys = tl__alloc(rt, cap * sizeof *ix->keys);
    ix->start = tl__alloc(rt, (cap + 1) * sizeof *ix->start);
    ix->dirty = tl__calloc(rt, cap);
    ix->objs = tl__alloc(rt, (n + 1) * sizeof *ix->objs);
    if (*extra && ix->keys && ix->start && ix->dirty && ix->objs) {
        ix->cap = cap;
        return TL_OK;
    }
    tl__free(rt, *extra, esize);
    tl__free(rt, ix->keys, cap * sizeof *ix->keys);
    tl__free(rt, ix->start, (cap + 1) * sizeof *ix->start);
    tl__free(rt, ix->dirty, cap);
    tl__free(rt, ix->objs, (n + 1) * sizeof *ix->objs);
    ix->keys = NULL;
    ix->start = NULL;
    ix->dirty = NULL;
    ix->objs = NULL;
    return TL_ENOMEM;
}

/* Merges the sorted objects v[0..n) and the sorted extra keys into ix's
 * chunk list: a key for every chunk that has objects or is an extra key
 * (dirty), each with its objects. */
static void group_keys(int kind, int all, tl__index *ix, const idobj *v, size_t n,
                       const uint64_t *extra, size_t nextra)
{
    size_t i = 0, e = 0, k = 0;
    while (i < n || e < nextra) {
        uint64_t key = i < n ? v[i].id >> TL__CHUNK_SHIFT : UINT64_MAX;
        if (e < nextra && extra[e] < key)
            key = extra[e];
        ix->keys[k] = key;
        ix->start[k] = i;
        ix->dirty[k] = (unsigned char)(all || kind == TL__KIND_TASKLETS);
        while (e < nextra && extra[e] == key) {
            ix->dirty[k] = 1;
            e++;
        }
        for (; i < n && v[i].id >> TL__CHUNK_SHIFT == key; i++) {
            ix->objs[i] = v[i].obj;
            if (kind == TL__KIND_CHANS && ((const tl_chan *)v[i].obj)->dirty)
                ix->dirty[k] = 1;
        }
        k++;
    }
    ix->nkeys = k;
    ix->start[k] = n;
}

/* Fills keys/start/dirty from the sorted objects and the extra keys. */
static int group(tl_runtime *rt, int kind, int all, tl__index *ix, const idobj *v, size_t n)
{
    size_t room = all ? 0 : (kind == TL__KIND_TASKLETS ? rt->dn : gone_count(rt));
    size_t esize = (room + 1) * sizeof(uint64_t); /* freed with this size */
    uint64_t *extra;
    if (group_alloc(rt, ix, n, room, &extra, esize) != TL_OK)
        return TL_ENOMEM;
    size_t nextra = all ? 0 : dirty_empty_keys(rt, kind, extra, room);
    qsort(extra, nextra, sizeof *extra, cmp_u64);
    group_keys(kind, all, ix, v, n, extra, nextra);
    tl__free(rt, extra, esize);
    return TL_OK;
}

/* Lists the objects of the sorted dirty chunk keys, fills ix. */
static void fill_from_tix(const tl__tindex *tx, tl__index *ix, const uint64_t *keys, size_t nk)
{
    size_t n = 0;
    for (size_t k = 0; k < nk; k++) {
        const tl__tchunk *c = tl__tix_chunk(tx, keys[k]);
        ix->keys[k] = keys[k];
        ix->start[k] = n;
        ix->dirty[k] = 1;
        for (uint32_t i = 0; c && i < c->n; i++)
            ix->objs[n++] = tx->chans ? (void *)c->e[i].ch : (void *)c->e[i].t;
    }
    ix->nkeys = nk;
    ix->start[nk] = n;
}

/* Sorts keys[0..n) and drops repeats; returns how many are left. */
static size_t sort_unique(uint64_t *keys, size_t n)
{
    size_t k = 0;
    qsort(keys, n, sizeof *keys, cmp_u64);
    for (size_t i = 0; i < n; i++)
        if (!k || keys[i] != keys[k - 1])
            keys[k++] = keys[i];
    return k;
}

/* The incremental index of the nk dirty chunk keys (room allocated, esize
 * bytes) from a chunk index (tindex.c): their objects, found without a
 * walk over all of them.  Frees keys. */
static int index_from_keys(tl_runtime *rt, const tl__tindex *tx, tl__index *ix, uint64_t *keys,
                           size_t nk, size_t room, size_t esize)
{
    size_t n = 0;
    uint64_t *extra;
    nk = sort_unique(keys, nk);
    for (size_t k = 0; k < nk; k++) {
        const tl__tchunk *c = tl__tix_chunk(tx, keys[k]);
        n += c ? c->n : 0;
    }
    int rc = group_alloc(rt, ix, n, room, &extra, esize);
    if (rc == TL_OK) {
        tl__free(rt, extra, esize);
        fill_from_tix(tx, ix, keys, nk);
        ix->total = tx->total;
    }
    tl__free(rt, keys, esize);
    return rc;
}

/* The incremental tasklet index: the chunks of the dirty set. */
static int index_from_tix(tl_runtime *rt, const tl__tindex *tx, tl__index *ix)
{
    size_t room = rt->dn, esize = (room + 1) * sizeof(uint64_t);
    uint64_t *keys = tl__alloc(rt, esize);
    if (!keys)
        return TL_ENOMEM;
    keylist l = {keys, 0, room};
    tl__dirty_each(rt, keylist_add, &l);
    return index_from_keys(rt, tx, ix, keys, l.n, room, esize);
}

/* The incremental channel index: the chunks of the channels in
 * rt->dchans and of those freed since the last checkpoint. */
static int index_from_cix(tl_runtime *rt, const tl__pstate *ps, tl__index *ix)
{
    size_t room = ps->ngone, n = 0;
    for (tl__link *l = rt->dchans.next; l != &rt->dchans; l = l->next)
        room++;
    size_t esize = (room + 1) * sizeof(uint64_t);
    uint64_t *keys = tl__alloc(rt, esize);
    if (!keys)
        return TL_ENOMEM;
    for (tl__link *l = rt->dchans.next; l != &rt->dchans; l = l->next)
        keys[n++] = TL__CONTAINER(l, tl_chan, dlink)->id >> TL__CHUNK_SHIFT;
    for (size_t i = 0; i < ps->ngone; i++)
        keys[n++] = ps->gone[i];
    return index_from_keys(rt, &ps->cix, ix, keys, n, room, esize);
}

/* Whether the channel index can give an incremental index (made
 * complete first; rebuilt if it lost a note). */
static bool cix_usable(tl_runtime *rt, tl__pstate *ps)
{
    if (!ps || !ps->cix.on || ps->ngone == SIZE_MAX)
        return false;
    tl__cix_sync(rt, &ps->cix);
    if (ps->cix.lost)
        tl__cix_start(rt, &ps->cix);
    return !ps->cix.lost;
}

int tl__index_build(tl_runtime *rt, int kind, int all, tl__index *ix)
{
    tl__pstate *ps = tl__pstate_peek(rt);
    if (kind == TL__KIND_TASKLETS) /* woken, not yet run: changed too */
        for (tl__link *l = rt->runq.next; l != &rt->runq; l = l->next)
            tl__mark(rt, TL__CONTAINER(l, tl_tasklet, w.link));
    all = all || (kind == TL__KIND_TASKLETS ? rt->dmap_lost : gone_count(rt) == SIZE_MAX);
    memset(ix, 0, sizeof *ix);
    ix->subset = tl__subset(rt);
    if (kind == TL__KIND_TASKLETS && ps && ps->tix.on && !ix->subset && ps->tix.lost) {
        tl__tix_start(rt, &ps->tix); /* a note was lost: rebuilt, all written */
        all = 1;
    }
    bool from_tix = kind == TL__KIND_TASKLETS && tl__tix_ok(rt);
    if (!all && !ix->subset && (from_tix || (kind == TL__KIND_CHANS && cix_usable(rt, ps)))) {
        if ((from_tix ? index_from_tix(rt, &ps->tix, ix) : index_from_cix(rt, ps, ix)) == TL_OK)
            return TL_OK;
        tl__index_free(rt, ix);
        return tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory for the chunk index");
    }
    collect c = {rt, kind, all, ix, NULL, 0, 0, 0, UINT64_MAX, false};
    each_object(rt, kind, collect_visit, &c);
    int rc = c.oom ? TL_ENOMEM : sort_by_id(rt, c.v, c.n);
    if (rc == TL_OK)
        rc = group(rt, kind, all || ix->subset, ix, c.v, c.n);
    tl__free(rt, c.v, c.cap * sizeof *c.v);
    if (rc != TL_OK) {
        tl__index_free(rt, ix);
        return tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory for the chunk index");
    }
    return TL_OK;
}

size_t tl__index_find(const tl__index *ix, uint64_t key)
{
    size_t lo = 0, hi = ix->nkeys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ix->keys[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->nkeys && ix->keys[lo] == key ? lo : SIZE_MAX;
}

void tl__index_free(tl_runtime *rt, tl__index *ix)
{
    if (ix->start)
        tl__free(rt, ix->objs, (ix->start[ix->nkeys] + 1) * sizeof *ix->objs);
    tl__free(rt, ix->keys, ix->cap * sizeof *ix->keys);
    tl__free(rt, ix->start, (ix->cap + 1) * sizeof *ix->start);
    tl__free(rt, ix->dirty, ix->cap);
    memset(ix, 0, sizeof *ix);
}

void tl__clear_dirty(tl_runtime *rt)
{
    tl__dirty_clear(rt);
    tl__pstate *ps = tl__pstate_peek(rt);
    if (ps) /* a channel leaving rt->dchans must be in the channel index */
        tl__cix_sync(rt, &ps->cix);
    while (!tl__list_empty(&rt->dchans)) {
        tl_chan *ch = TL__CONTAINER(rt->dchans.next, tl_chan, dlink);
        tl__list_unlink(&ch->dlink);
        ch->dirty = 0;
    }
    if (ps) {
        ps->ngone = 0;
        ps->ntgone = 0;
        ps->need_full = 0;
    }
}

/* ---- standalone snapshots ---- */

static int save_chunks(tl_runtime *rt, int kind, const tl__index *ix, msgpack_packer *pk,
                       tl__buf *out)
{
    for (size_t k = 0; k < ix->nkeys; k++) {
        if (ix->start[k] == ix->start[k + 1])
            continue;
        msgpack_pack_array(pk, 3);
        msgpack_pack_int(pk, kind);
        msgpack_pack_uint64(pk, ix->keys[k]);
        int rc = tl__enc_chunk(rt, kind, ix, k, out);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

static size_t nonempty(const tl__index *ix)
{
    size_t n = 0;
    for (size_t k = 0; k < ix->nkeys; k++)
        n += ix->start[k] != ix->start[k + 1];
    return n;
}

/* The index of the objects given (tasklets, or channels tagged with the
 * low bit) of one kind: a moving tasklet's snapshot is built from its
 * closure, never from a walk over the whole runtime. */
static int index_of(tl_runtime *rt, int kind, const uintptr_t *objs, size_t nobjs, tl__index *ix)
{
    memset(ix, 0, sizeof *ix);
    ix->subset = tl__subset(rt);
    idobj *v = tl__alloc(rt, (nobjs + 1) * sizeof *v);
    size_t n = 0;
    if (!v)
        return tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory for the chunk index");
    for (size_t i = 0; i < nobjs; i++)
        if ((int)(objs[i] & 1) == (kind == TL__KIND_CHANS)) {
            void *obj = (void *)(objs[i] & ~(uintptr_t)1);
            v[n++] = (idobj){obj_id(obj, kind), obj};
        }
    ix->total = n;
    int rc = sort_by_id(rt, v, n);
    if (rc == TL_OK)
        rc = group(rt, kind, 1, ix, v, n);
    tl__free(rt, v, (nobjs + 1) * sizeof *v);
    if (rc != TL_OK) {
        tl__index_free(rt, ix);
        return tl__seterr(rt, TL_ENOMEM, "snapshot: out of memory for the chunk index");
    }
    return TL_OK;
}

/* The tasklet and channel indexes of a save: of everything, or (objs)
 * of those objects. */
static int index_pair(tl_runtime *rt, const uintptr_t *objs, size_t nobjs, tl__index *tix,
                      tl__index *cix)
{
    int rc = objs ? index_of(rt, TL__KIND_TASKLETS, objs, nobjs, tix)
                  : tl__index_build(rt, TL__KIND_TASKLETS, 1, tix);
    if (rc != TL_OK)
        return rc;
    rc = objs ? index_of(rt, TL__KIND_CHANS, objs, nobjs, cix)
              : tl__index_build(rt, TL__KIND_CHANS, 1, cix);
    if (rc != TL_OK)
        tl__index_free(rt, tix);
    return rc;
}

/* [magic, format, head, [[kind, key, record]...]] into out. */
static int write_snapshot(tl_runtime *rt, const tl__index *tix, const tl__index *cix,
                          tl__buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, tl__buf_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_str(&pk, 19);
    msgpack_pack_str_body(&pk, "libtasklet-snapshot", 19);
    msgpack_pack_uint32(&pk, TL_FORMAT_VERSION);
    int rc = tl__enc_head(rt, tl_now(rt), tix, cix, out);
    if (rc == TL_OK) {
        msgpack_pack_array(&pk, nonempty(tix) + nonempty(cix));
        rc = save_chunks(rt, TL__KIND_TASKLETS, tix, &pk, out);
    }
    if (rc == TL_OK)
        rc = save_chunks(rt, TL__KIND_CHANS, cix, &pk, out);
    if (rc == TL_OK && out->oom)
        rc = tl__seterr(rt, TL_ENOMEM, "tl_snapshot_save: out of memory");
    return rc;
}

/* A standalone snapshot: of everything, or (objs) of those objects. */
static int save(tl_runtime *rt, void **buf, size_t *len, const uintptr_t *objs, size_t nobjs)
{
    tl__index tix, cix;
    tl__buf out;
    int rc = index_pair(rt, objs, nobjs, &tix, &cix);
    if (rc != TL_OK)
        return rc;
    tl__buf_init(&out, rt);
    rc = write_snapshot(rt, &tix, &cix, &out);
    tl__index_free(rt, &tix);
    tl__index_free(rt, &cix);
    if (rc != TL_OK) {
        tl__buf_free(&out);
        return rc;
    }
    *buf = out.p;
    *len = out.len;
    /* the caller frees exactly len bytes: shrink the block to that */
    if (out.cap != out.len) {
        char *p = tl__realloc(rt, out.p, out.cap, out.len ? out.len : 1);
        if (p)
            *buf = p;
        else
            tl__free(rt, out.p, out.cap), *buf = NULL, rc = TL_ENOMEM;
    }
    return rc == TL_OK ? TL_OK : tl__seterr(rt, rc, "tl_snapshot_save: out of memory");
}

int tl_snapshot_save(tl_runtime *rt, void **buf, size_t *len)
{
    if (!rt || rt->magic != TL__MAGIC_RT || !buf || !len)
        return TL_EMISUSE;
    if (rt->current)
        return tl__seterr(rt, TL_EBUSY, "tl_snapshot_save: called from inside a tasklet; "
                          "save between scheduler steps");
    return save(rt, buf, len, NULL, 0);
}

/* ---- one tasklet and what it references ---- */

/* Objects reached so far (channels tagged with the low bit), in order;
 * processed breadth first, unmarked at the end. */
typedef struct closure {
    tl_runtime *rt;
    uintptr_t *objs;
    size_t n, cap;
    int oom;
    int moving;      /* channels are left behind: their buffers not reached */
    size_t trefs;    /* tasklet references met (moving: none allowed) */
} closure;

static void reach(closure *c, uintptr_t obj)
{
    if (c->n == c->cap) {
        size_t ncap = c->cap ? 2 * c->cap : 32;
        uintptr_t *no = tl__realloc(c->rt, c->objs, c->cap * sizeof *no, ncap * sizeof *no);
        if (!no) {
            c->oom = 1;
            return;
        }
        c->objs = no;
        c->cap = ncap;
    }
    c->objs[c->n++] = obj;
}

static void reach_tasklet(closure *c, tl_tasklet *h)
{
    tl_tasklet *t = tl__tasklet_at(h); /* a handle from the locals, or bare */
    if (t)
        c->trefs++;
    if (t && t->magic == TL__MAGIC_TASK && !(t->flags & TL__TF_SUBSET)) {
        t->flags |= TL__TF_SUBSET;
        reach(c, (uintptr_t)t);
    }
}

static void reach_chan(closure *c, tl_chan *h)
{
    tl_chan *ch = tl__chan_at(h); /* a handle from the locals, or bare */
    if (ch && ch->reserved != 2) {
        ch->reserved = 2;
        reach(c, (uintptr_t)ch | 1);
    }
}

static void reach_value(closure *c, tl_value v, int depth)
{
    size_t n = tl_len(v);
    if (depth > 16)
        return; /* the encoder reports it */
    if (v.type == TL_V_CHAN)
        reach_chan(c, v.as.p);
    else if (v.type == TL_V_TASKLET)
        reach_tasklet(c, v.as.p);
    for (size_t i = 0; v.type == TL_V_ARRAY && i < n; i++)
        reach_value(c, tl_array_at(v, i), depth + 1);
    for (size_t i = 0; v.type == TL_V_MAP && i < n; i++) {
        reach_value(c, tl_map_key(v, i), depth + 1);
        reach_value(c, tl_map_val(v, i), depth + 1);
    }
}

static void reach_frame(closure *c, const tl_frame *f)
{
    const tl_func *fn = f->fn->fn;
    const char *locals = TL__LOCALS(f);
    for (unsigned i = 0; i < f->fn->nrefs; i++) {
        const tl_field *fd = &fn->fields[f->fn->refs[i]];
        const void *p = locals + fd->offset;
        if (fd->type == TL_T_VALUE)
            reach_value(c, *(const tl_value *)p, 0);
        else if (fd->type == TL_T_CHAN)
            reach_chan(c, *(tl_chan *const *)p);
        else
            reach_tasklet(c, *(tl_tasklet *const *)p);
    }
}

static void reach_from_tasklet(closure *c, tl_tasklet *t)
{
    for (const tl_frame *f = t->top; f; f = f->parent)
        reach_frame(c, f);
    reach_value(c, t->xfer, 0);
    if (t->state != TL_BLOCKED)
        return;
    if (t->wait == TL_WAIT_SEND || t->wait == TL_WAIT_RECV)
        reach_chan(c, (tl_chan *)t->w.on);
    else if (t->wait == TL_WAIT_JOIN)
        reach_tasklet(c, (tl_tasklet *)t->w.on);
    else if (t->wait == TL_WAIT_SELECT)
        for (int i = 0; i < t->ext->sel->n; i++) {
            reach_chan(c, t->ext->sel->cases[i].ch);
            reach_value(c, t->ext->sel->cases[i].value, 0);
        }
}

static void closure_of(closure *c, tl_tasklet *root)
{
    reach_tasklet(c, root);
    for (size_t i = 0; i < c->n && !c->oom; i++) {
        if (c->objs[i] & 1) {
            tl_chan *ch = (tl_chan *)(c->objs[i] & ~(uintptr_t)1);
            for (size_t k = 0; k < ch->count && !c->moving; k++)
                reach_value(c, ch->buf[(ch->head + k) % ch->cap], 0);
        } else {
            reach_from_tasklet(c, (tl_tasklet *)c->objs[i]);
        }
    }
}

static void closure_clear(closure *c)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->objs[i] & 1)
            ((tl_chan *)(c->objs[i] & ~(uintptr_t)1))->reserved = 0;
        else
            ((tl_tasklet *)c->objs[i])->flags &= (uint16_t)~TL__TF_SUBSET;
    }
    tl__free(c->rt, c->objs, c->cap * sizeof *c->objs);
}

int tl_snapshot_save_tasklet(tl_tasklet *h, void **buf, size_t *len)
{
    tl_tasklet *t = tl__tasklet_at(h);
    if (!t || !buf || !len)
        return t ? TL_EMISUSE : tl__bad_tasklet(h, "tl_snapshot_save_tasklet");
    tl_runtime *rt = t->rt;
    if (rt->current)
        return tl__seterr(rt, TL_EBUSY, "tl_snapshot_save_tasklet: called from inside a "
                          "tasklet; save between scheduler steps");
    closure c = {rt, NULL, 0, 0, 0, 0, 0};
    closure_of(&c, t);
    tl__pstate *ps = tl__pstate_get(rt);
    int rc = c.oom || !ps ? tl__seterr(rt, TL_ENOMEM, "tl_snapshot_save_tasklet: out of memory")
                          : TL_OK;
    if (rc == TL_OK) {
        ps->subset = 1;
        rc = save(rt, buf, len, c.objs, c.n);
        ps->subset = 0;
    }
    closure_clear(&c);
    return rc;
}

int tl__snapshot_save_moving(tl_tasklet *t, void **buf, size_t *len)
{
    return tl__snapshot_save_moving_to(t, buf, len, NULL, NULL, 0);
}

int tl__snapshot_save_moving_to(tl_tasklet *t, void **buf, size_t *len,
                                void (*left)(void *ud, tl_chan *ch), void *ud, int unchecked)
{
    tl_runtime *rt = t->rt;
    char label[160];
    if (rt->current)
        return tl__seterr(rt, TL_EBUSY, "moving a tasklet: called from inside a tasklet");
    if (t->state != TL_RUNNABLE && t->state != TL_BLOCKED)
        return tl__seterr(rt, TL_ESTATE, "%s cannot move: it is not suspended",
                          tl__tasklet_label(t, label, sizeof label));
    if (t->state == TL_BLOCKED && t->wait != TL_WAIT_SEND && t->wait != TL_WAIT_RECV &&
        t->wait != TL_WAIT_SLEEP)
        return tl__seterr(rt, TL_ENOTSUP, "%s cannot move while it waits in a %s",
                          tl__tasklet_label(t, label, sizeof label),
                          t->wait == TL_WAIT_SELECT ? "select" : "join");
    if (!rt->node[0])
        return tl__seterr(rt, TL_ESTATE, "moving a tasklet: the runtime has no node id");
    if (t->state == TL_BLOCKED && (t->flags & TL__TF_REMOTE))
        return tl__seterr(rt, TL_EBUSY, "%s cannot move while its operation on a remote "
                          "channel is in flight (tl_node_migrate waits for it)",
                          tl__tasklet_label(t, label, sizeof label));
    closure c = {rt, NULL, 0, 0, 0, 1, 0};
    closure_of(&c, t);
    tl__pstate *ps = tl__pstate_get(rt);
    int rc = c.oom || !ps ? tl__seterr(rt, TL_ENOMEM, "moving a tasklet: out of memory") : TL_OK;
    if (rc == TL_OK && c.trefs > 1)
        rc = tl__seterr(rt, TL_ENOTSUP, "%s cannot move: it holds a tasklet reference "
                        "(only channels can be left behind)",
                        tl__tasklet_label(t, label, sizeof label));
    if (rc == TL_OK) {
        ps->subset = 2;
        ps->unchecked = unchecked;
        rc = save(rt, buf, len, c.objs, c.n);
        ps->subset = 0;
        ps->unchecked = 0;
    }
    for (size_t i = 0; rc == TL_OK && i < c.n; i++) {
        tl_chan *ch = (tl_chan *)(c.objs[i] & ~(uintptr_t)1);
        if ((c.objs[i] & 1) && !ch->remote) {
            tl_chan_pin(ch, 1); /* others will address it */
            if (left)
                left(ud, ch);
        }
    }
    closure_clear(&c);
    return rc;
}

void tl_snapshot_free(tl_runtime *rt, void *buf, size_t len)
{
    if (rt && rt->magic == TL__MAGIC_RT && buf)
        tl__free(rt, buf, len ? len : 1);
}

/* ---- standalone load ---- */

static bool is_str(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

/* The records inside an outer array, by their offsets in buf: re-packing
 * would copy, so each record is located with tl__msgpack_check. */
static int split_records(tl_runtime *rt, const msgpack_object *chunks, tl__raw **out)
{
    tl__raw *raws = tl__calloc(rt, (chunks->via.array.size + 1) * sizeof *raws);
    if (!raws)
        return tl__seterr(rt, TL_ENOMEM, "tl_snapshot_load: out of memory");
    *out = raws;
    for (uint32_t i = 0; i < chunks->via.array.size; i++) {
        const msgpack_object *c = &chunks->via.array.ptr[i];
        if (c->type != MSGPACK_OBJECT_ARRAY || c->via.array.size != 3 ||
            c->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            c->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return tl__seterr(rt, TL_ECORRUPT, "snapshot: chunk entry %u is malformed", i);
        raws[i].kind = (int)c->via.array.ptr[0].via.u64;
        raws[i].key = c->via.array.ptr[1].via.u64;
    }
    return TL_OK;
}

/* Steps *off over one whole msgpack value of p[0..n), its length in *len
 * (when len is not NULL); -1 if none starts there. */
static int skip_value(const unsigned char *p, size_t n, size_t *off, size_t *len)
{
    size_t k = *off < n ? tl__msgpack_check(p + *off, n - *off, 40) : 0;
    if (!k)
        return -1;
    if (len)
        *len = k;
    *off += k;
    return 0;
}

/* Steps *off over the header of an array of count items, of any width
 * (a writer may use array 16 or 32 where fixarray would do); -1 if p holds
 * no such header at *off. */
static int skip_array_head(const unsigned char *p, size_t n, size_t *off, size_t count)
{
    uint32_t items;
    size_t k = *off < n ? tl__msgpack_array_head(p + *off, n - *off, &items) : 0;
    if (!k || items != count)
        return -1;
    *off += k;
    return 0;
}

/* Finds where each record of the outer array [magic, format, head,
 * [[kind, key, record]...]] starts and ends, walking the bytes with the
 * checker: every step is bounded by n and must agree with the decoded
 * structure (nraws chunk entries). */
static int locate(const unsigned char *p, size_t n, size_t *head_at, size_t *head_len,
                  tl__raw *raws, size_t nraws)
{
    size_t off = 0;
    if (skip_array_head(p, n, &off, 4) || skip_value(p, n, &off, NULL) ||
        skip_value(p, n, &off, NULL))
        return -1;
    *head_at = off;
    if (skip_value(p, n, &off, head_len) || skip_array_head(p, n, &off, nraws))
        return -1;
    for (size_t i = 0; i < nraws; i++) {
        if (skip_array_head(p, n, &off, 3) || skip_value(p, n, &off, NULL) ||
            skip_value(p, n, &off, NULL))
            return -1;
        raws[i].p = p + off;
        if (skip_value(p, n, &off, &raws[i].n))
            return -1;
    }
    return 0;
}

/* The outer array decoded: [magic, format (at most ours), head, chunks]. */
static int check_outer(tl_runtime *rt, const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4 ||
        !is_str(&o->via.array.ptr[0], "libtasklet-snapshot"))
        return tl__seterr(rt, TL_ECORRUPT, "tl_snapshot_load: not a libtasklet snapshot "
                          "(bad magic)");
    const msgpack_object *format = &o->via.array.ptr[1];
    if (format->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return tl__seterr(rt, TL_ECORRUPT, "tl_snapshot_load: no format version");
    if (format->via.u64 > TL_FORMAT_VERSION)
        return tl__seterr(rt, TL_EFORMAT, "tl_snapshot_load: format version %llu is newer "
                          "than this library reads (%d); upgrade libtasklet",
                          (unsigned long long)format->via.u64, TL_FORMAT_VERSION);
    if (o->via.array.ptr[3].type != MSGPACK_OBJECT_ARRAY)
        return tl__seterr(rt, TL_ECORRUPT, "tl_snapshot_load: no chunk list");
    return TL_OK;
}

/* Hands the records of buf (chunks: its decoded chunk list) to the loader. */
static int load_records(tl_runtime *rt, const void *buf, size_t len,
                        const msgpack_object *chunks, int import, tl_tasklet **out)
{
    tl__raw *raws = NULL;
    size_t head_at = 0, head_len = 0, n = chunks->via.array.size;
    int rc = split_records(rt, chunks, &raws);
    if (rc == TL_OK && locate(buf, len, &head_at, &head_len, raws, n))
        rc = tl__seterr(rt, TL_ECORRUPT, "tl_snapshot_load: cannot locate the records");
    if (rc == TL_OK) {
        tl__raw head = {0, 0, (const char *)buf + head_at, head_len};
        rc = import ? tl__import(rt, &head, raws, n, (import & 3) == 2, import & 4, out)
                    : tl__load(rt, &head, raws, n, "snapshot", NULL);
    }
    if (raws)
        tl__free(rt, raws, (n + 1) * sizeof *raws);
    return rc;
}

/* A standalone snapshot into rt: loaded whole (import 0) or imported
 * next to what rt holds (import 1, *out the tasklet; 2: held, see
 * tl__snapshot_import_held; | 4: unchecked records taken, see
 * tl__snapshot_import_wire). */
static int load_standalone(tl_runtime *rt, const void *buf, size_t len, int import,
                           tl_tasklet **out)
{
    msgpack_unpacked up;
    size_t off = 0;
    if (!buf || tl__msgpack_check(buf, len, 40) != len)
        return tl__seterr(rt, TL_ECORRUPT, "tl_snapshot_load: %zu bytes are not one well-formed "
                          "snapshot (truncated or damaged)", len);
    msgpack_unpacked_init(&up);
    int rc = msgpack_unpack_next(&up, buf, len, &off) == MSGPACK_UNPACK_SUCCESS
                 ? check_outer(rt, &up.data)
                 : tl__seterr(rt, TL_ECORRUPT, "tl_snapshot_load: undecodable msgpack");
    if (rc == TL_OK)
        rc = load_records(rt, buf, len, &up.data.via.array.ptr[3], import, out);
    msgpack_unpacked_destroy(&up);
    return rc;
}

int tl_snapshot_load(tl_runtime *rt, const void *buf, size_t len)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    return load_standalone(rt, buf, len, 0, NULL);
}

int tl__snapshot_import(tl_runtime *rt, const void *buf, size_t len, tl_tasklet **out)
{
    *out = NULL;
    return load_standalone(rt, buf, len, 1, out);
}

int tl__snapshot_import_held(tl_runtime *rt, const void *buf, size_t len, tl_tasklet **out)
{
    *out = NULL;
    return load_standalone(rt, buf, len, 2, out);
}

int tl__snapshot_import_wire(tl_runtime *rt, const void *buf, size_t len, int hold,
                             tl_tasklet **out)
{
    *out = NULL;
    return load_standalone(rt, buf, len, (hold ? 2 : 1) | 4, out);
}
