/*
 * split.c -- a chunk stored as a home record and a hot record, so that an
 * incremental checkpoint rewrites the objects that changed and not their
 * idle neighbours (docs/ARCHITECTURE.md section 11.2, FORMAT.md 7.1).
 *
 * Chunk key k (ids k << 8 ...) of kind 1 (tasklets) or 2 (channels) has
 * a home record (kind 1, 2) and may have a hot record (kind 3, 4) in the
 * store.  Each object carries where the store holds it: TL__TF_HOME (in
 * the home record), TL__TF_HOT (in the hot record), or neither (born since
 * its chunk was last written); and whether it changed (TL__TF_DIRTY for a
 * tasklet, tl__mark; tl_chan.dirty for a channel) and had changed when its
 * chunk was written last (WARM).  For a dirty chunk, tl__split_write picks:
 *   hot only  no home object changed and none was freed: the hot record
 *             is rewritten with its objects and the newborn, the home
 *             record stays as it is (the common step: one workflow's
 *             tasklet and channel among 160 idle neighbours each);
 *   split     otherwise both are rewritten: the hot record with the
 *             objects that changed twice in a row (or were hot and
 *             changed), the home record with the rest;
 *   whole     small chunks, full checkpoints, too many hot objects: the
 *             home record with every object, the hot one a tombstone.
 * Invariants (while a store is attached, between checkpoints): every
 * object marked HOME is in the stored home record of its chunk and, if it
 * is not dirty, as it is now; likewise HOT and the hot record; an object
 * marked neither is written at its chunk's next write; the home record
 * holds no freed tasklet unless its key is in ps->tgone (nor a freed
 * channel unless in ps->gone); ps->hot lists exactly the keys whose stored
 * hot record is not a tombstone.  A checkpoint rewrites both records of a
 * chunk whenever an object moves between them, in one transaction, so a
 * restore sees every object once, whenever the process dies.  Marks
 * decided for a checkpoint (NHOT, NWARM) take effect only once it
 * committed (tl__split_commit); a failed one leaves everything as it was.
 *
 * TL_CHECK_MARKS=1 (tests): each object's crc as last written is kept, and
 * an object a checkpoint leaves unwritten because it is not marked must
 * still encode to it, or the process aborts naming it (a change without
 * a mark would otherwise be lost silently).
 */
#include "persist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPLIT_MIN 16 /* smaller chunks are written whole */
#define HOT_SHARE 8  /* a hot record holds at most 1/8 of its chunk's objects */

const char *tl__kind_name(int kind)
{
    static const char *const names[] = {"?", "tasklet", "channel", "hot tasklet", "hot channel"};
    return names[kind >= 1 && kind <= 4 ? kind : 0];
}

/* ---- an object's marks ---- */

static unsigned bits_of(int kind, const void *o)
{
    return kind == TL__KIND_TASKLETS ? ((const tl_tasklet *)o)->flags & TL__TF_PLOC
                                     : ((const tl_chan *)o)->ploc;
}

static void set_bits(int kind, void *o, unsigned b)
{
    if (kind == TL__KIND_TASKLETS) {
        tl_tasklet *t = o;
        t->flags = (uint16_t)((t->flags & ~TL__TF_PLOC) | b);
    } else {
        ((tl_chan *)o)->ploc = (uint8_t)b;
    }
}

static bool changed(int kind, const void *o)
{
    return kind == TL__KIND_TASKLETS ? (((const tl_tasklet *)o)->flags & TL__TF_DIRTY) != 0
                                     : ((const tl_chan *)o)->dirty != 0;
}

static uint64_t id_of(int kind, const void *o)
{
    return kind == TL__KIND_TASKLETS ? ((const tl_tasklet *)o)->id : ((const tl_chan *)o)->id;
}

/* ---- sorted key sets ---- */

static size_t lower(const uint64_t *v, size_t n, uint64_t key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool set_has(const uint64_t *v, size_t n, uint64_t key)
{
    size_t at = lower(v, n, key);
    return at < n && v[at] == key;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Adds key to ps->hot[i]; a full checkpoint next when out of memory. */
static void hot_add(tl_runtime *rt, tl__pstate *ps, int i, uint64_t key)
{
    size_t n = ps->nhot[i], at = lower(ps->hot[i], n, key);
    if (at < n && ps->hot[i][at] == key)
        return;
    if (n == ps->caphot[i]) {
        size_t ncap = n ? 2 * n : 16;
        uint64_t *nv = tl__realloc(rt, ps->hot[i], n * sizeof *nv, ncap * sizeof *nv);
        if (!nv) {
            ps->need_full = 1; /* a full checkpoint tombstones every hot record */
            return;
        }
        ps->hot[i] = nv;
        ps->caphot[i] = ncap;
    }
    memmove(&ps->hot[i][at + 1], &ps->hot[i][at], (n - at) * sizeof *ps->hot[i]);
    ps->hot[i][at] = key;
    ps->nhot[i]++;
}

static void hot_del(tl__pstate *ps, int i, uint64_t key)
{
    size_t n = ps->nhot[i], at = lower(ps->hot[i], n, key);
    if (at == n || ps->hot[i][at] != key)
        return;
    memmove(&ps->hot[i][at], &ps->hot[i][at + 1], (n - at - 1) * sizeof *ps->hot[i]);
    ps->nhot[i]--;
}

void tl__split_freed(tl_runtime *rt, tl__pstate *ps, uint64_t key)
{
    if (ps->ntgone && ps->tgone[ps->ntgone - 1] == key)
        return;
    if (ps->ntgone == ps->captgone) {
        size_t ncap = ps->captgone ? 2 * ps->captgone : 64;
        uint64_t *g = tl__realloc(rt, ps->tgone, ps->captgone * sizeof *g, ncap * sizeof *g);
        if (!g) {
            ps->need_full = 1;
            return;
        }
        ps->tgone = g;
        ps->captgone = ncap;
    }
    ps->tgone[ps->ntgone++] = key;
}

/* Whether an object of chunk key was freed since the last checkpoint
 * (the lists sorted on first use in a checkpoint: order is free). */
static bool freed_in(tl__pstate *ps, int kind, uint64_t key)
{
    uint64_t *v = kind == TL__KIND_TASKLETS ? ps->tgone : ps->gone;
    size_t n = kind == TL__KIND_TASKLETS ? ps->ntgone : ps->ngone;
    if (n == SIZE_MAX)
        return true;
    for (size_t i = 1; i < n; i++)
        if (v[i - 1] > v[i]) {
            qsort(v, n, sizeof *v, cmp_u64);
            break;
        }
    return set_has(v, n, key);
}

/* ---- TL_CHECK_MARKS: each object's crc as last written ---- */

typedef struct tl__crcmap {
    struct {
        uint64_t *ids; /* 0: empty (ids start at 1) */
        uint32_t *crcs;
        size_t cap, n;
    } m[2];
} tl__crcmap;

static size_t crc_slot(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ULL) >> 20) & (cap - 1);
}

static uint32_t *crc_find(tl__crcmap *cm, int kind, uint64_t id, int make)
{
    int i = kind == TL__KIND_TASKLETS ? 0 : 1;
    if (make && 2 * (cm->m[i].n + 1) > cm->m[i].cap) {
        size_t ncap = cm->m[i].cap ? 2 * cm->m[i].cap : 1024;
        uint64_t *ids = calloc(ncap, sizeof *ids);
        uint32_t *crcs = calloc(ncap, sizeof *crcs);
        if (!ids || !crcs)
            abort(); /* a test's check: no way to go on unchecked */
        for (size_t j = 0; j < cm->m[i].cap; j++) {
            if (!cm->m[i].ids[j])
                continue;
            size_t s = crc_slot(cm->m[i].ids[j], ncap);
            while (ids[s])
                s = (s + 1) & (ncap - 1);
            ids[s] = cm->m[i].ids[j];
            crcs[s] = cm->m[i].crcs[j];
        }
        free(cm->m[i].ids);
        free(cm->m[i].crcs);
        cm->m[i].ids = ids;
        cm->m[i].crcs = crcs;
        cm->m[i].cap = ncap;
    }
    if (!cm->m[i].cap)
        return NULL;
    size_t s = crc_slot(id, cm->m[i].cap);
    while (cm->m[i].ids[s] && cm->m[i].ids[s] != id)
        s = (s + 1) & (cm->m[i].cap - 1);
    if (!cm->m[i].ids[s] && !make)
        return NULL;
    if (!cm->m[i].ids[s]) {
        cm->m[i].ids[s] = id;
        cm->m[i].n++;
    }
    return &cm->m[i].crcs[s];
}

static void crcmap_free(tl__pstate *ps)
{
    for (int i = 0; ps->marks && i < 2; i++) {
        free(ps->marks->m[i].ids);
        free(ps->marks->m[i].crcs);
    }
    free(ps->marks);
    ps->marks = NULL;
}

/* An object left unwritten because it is not marked must encode as it
 * was last written. */
static void check_unmarked(tl_runtime *rt, tl__pstate *ps, int kind, void *o, uint64_t key)
{
    uint32_t crc, *was = crc_find(ps->marks, kind, id_of(kind, o), 0);
    if (!was || tl__enc_obj_crc(rt, kind, o, &crc) != TL_OK || crc == *was)
        return;
    fprintf(stderr, "libtasklet: TL_CHECK_MARKS: %s #%llu (chunk %llu) changed since it was "
            "last written, without a change mark: a checkpoint would have lost it\n",
            kind == TL__KIND_TASKLETS ? "tasklet" : "channel",
            (unsigned long long)id_of(kind, o), (unsigned long long)key);
    abort();
}

static void note_written(tl_runtime *rt, tl__pstate *ps, int kind, void *o)
{
    uint32_t crc;
    if (tl__enc_obj_crc(rt, kind, o, &crc) == TL_OK)
        *crc_find(ps->marks, kind, id_of(kind, o), 1) = crc;
}

/* The state whose crcs are kept, or NULL when TL_CHECK_MARKS is not 1
 * (the environment read once per process). */
static tl__pstate *marks_state(tl_runtime *rt)
{
    static int wanted = -1;
    if (wanted < 0) {
        const char *e = getenv("TL_CHECK_MARKS");
        wanted = e && strcmp(e, "1") == 0;
    }
    tl__pstate *ps = wanted ? tl__pstate_peek(rt) : NULL;
    if (ps && !ps->marks && !(ps->marks = calloc(1, sizeof *ps->marks)))
        abort(); /* a test's check: no way to go on unchecked */
    return ps;
}

/* ---- a chunk's plan ---- */

typedef struct plan {
    void *home[1u << TL__CHUNK_SHIFT], *hot[1u << TL__CHUNK_SHIFT];
    size_t nhome, nhot;
    int home_too; /* the home record is rewritten */
} plan;

/* Which objects go to the hot record when both records are rewritten:
 * those that changed twice in a row, or were hot and changed; none when
 * they are too many. */
static bool goes_hot(int kind, const void *o, unsigned b)
{
    return changed(kind, o) && (b & (TL__TF_WARM | TL__TF_HOT));
}

/* Decides each object's record: sets NHOT and NWARM (not after a full
 * checkpoint: being born is not a change that recurs), fills p. */
static void plan_chunk(int kind, void **objs, size_t n, int splittable, int full, plan *p)
{
    size_t dirty_home = 0, elsewhere = 0, hot = 0;
    for (size_t i = 0; splittable && i < n; i++) {
        unsigned b = bits_of(kind, objs[i]);
        if (b & TL__TF_HOME)
            dirty_home += changed(kind, objs[i]);
        else
            elsewhere++; /* in the hot record, or nowhere yet */
        hot += goes_hot(kind, objs[i], b);
    }
    p->home_too = !splittable || dirty_home || !elsewhere || elsewhere * HOT_SHARE > n;
    int any_hot = splittable && (p->home_too ? hot && hot * HOT_SHARE <= n : 1);
    p->nhome = p->nhot = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned b = bits_of(kind, objs[i]);
        bool h = any_hot && (p->home_too ? goes_hot(kind, objs[i], b) : !(b & TL__TF_HOME));
        if (h)
            p->hot[p->nhot++] = objs[i];
        else if (p->home_too)
            p->home[p->nhome++] = objs[i];
        b = (b & ~(unsigned)(TL__TF_NHOT | TL__TF_NWARM)) | (h ? TL__TF_NHOT : 0) |
            (!full && changed(kind, objs[i]) ? TL__TF_NWARM : 0);
        set_bits(kind, objs[i], b);
    }
}

static int put_objs(tl_runtime *rt, int kind, uint64_t key, void **objs, size_t n, tl__buf *rec,
                    tl__put_fn put, void *ud, int64_t *bytes)
{
    rec->len = 0;
    int rc = tl__enc_objs(rt, TL__KIND_BASE(kind), objs, n, rec);
    if (rc == TL_OK)
        rc = put(ud, kind, key, rec);
    *bytes += (int64_t)rec->len;
    return rc;
}

int tl__split_write(tl_runtime *rt, int kind, const tl__index *ix, size_t k, int full,
                    tl__buf *rec, tl__put_fn put, void *ud, int64_t *bytes)
{
    tl__pstate *ps = tl__pstate_peek(rt);
    void **objs = ix->objs + ix->start[k];
    size_t n = ix->start[k + 1] - ix->start[k];
    uint64_t key = ix->keys[k];
    plan p;
    int splittable = !full && ps && n >= SPLIT_MIN && !ix->subset && !freed_in(ps, kind, key);
    tl__pstate *chk = full ? NULL : marks_state(rt);
    for (size_t i = 0; chk && i < n; i++)
        if (!changed(kind, objs[i]) && (bits_of(kind, objs[i]) & (TL__TF_HOME | TL__TF_HOT)))
            check_unmarked(rt, chk, kind, objs[i], key);
    plan_chunk(kind, objs, n, splittable, full, &p);
    int rc = TL_OK;
    if (p.home_too)
        rc = put_objs(rt, kind, key, p.home, p.nhome, rec, put, ud, bytes);
    int i = kind == TL__KIND_TASKLETS ? 0 : 1;
    bool stored = !full && ps && set_has(ps->hot[i], ps->nhot[i], key);
    if (rc == TL_OK && (p.nhot || stored)) /* a tombstone replaces one emptied */
        rc = put_objs(rt, TL__KIND_HOT(kind), key, p.hot, p.nhot, rec, put, ud, bytes);
    return rc;
}

void tl__split_commit(tl_runtime *rt, int kind, const tl__index *ix, int full)
{
    tl__pstate *ps = tl__pstate_peek(rt);
    if (!ps || ix->subset)
        return;
    int i = kind == TL__KIND_TASKLETS ? 0 : 1;
    tl__pstate *chk = marks_state(rt);
    if (full)
        ps->nhot[i] = 0; /* the full checkpoint tombstoned every hot record */
    for (size_t k = 0; k < ix->nkeys; k++) {
        if (!ix->dirty[k])
            continue;
        bool any_hot = false;
        for (size_t j = ix->start[k]; j < ix->start[k + 1]; j++) {
            void *o = ix->objs[j];
            unsigned b = bits_of(kind, o);
            any_hot |= (b & TL__TF_NHOT) != 0;
            set_bits(kind, o, ((b & TL__TF_NHOT) ? TL__TF_HOT : TL__TF_HOME) |
                                  ((b & TL__TF_NWARM) ? TL__TF_WARM : 0));
            if (kind == TL__KIND_TASKLETS)
                ((tl_tasklet *)o)->flags &= (uint16_t)~TL__TF_DIRTY;
            if (chk)
                note_written(rt, chk, kind, o);
        }
        if (any_hot)
            hot_add(rt, ps, i, ix->keys[k]);
        else
            hot_del(ps, i, ix->keys[k]);
    }
}

void tl__split_loaded(tl_runtime *rt, int kind, uint64_t key, void *obj)
{
    tl__pstate *ps = tl__pstate_peek(rt);
    if (!ps || !ps->restoring || !obj)
        return;
    int base = TL__KIND_BASE(kind);
    set_bits(base, obj, kind > 2 ? TL__TF_HOT : TL__TF_HOME);
    if (kind > 2)
        hot_add(rt, ps, base == TL__KIND_TASKLETS ? 0 : 1, key);
}

static void note_visit(void *obj, void *ud)
{
    tl_tasklet *t = obj;
    if (t->flags & (TL__TF_HOME | TL__TF_HOT))
        note_written(t->rt, ud, TL__KIND_TASKLETS, t);
}

void tl__split_restored(tl_runtime *rt)
{
    tl__pstate *chk = marks_state(rt);
    if (!chk)
        return;
    tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, note_visit, chk);
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->ploc & (TL__TF_HOME | TL__TF_HOT))
            note_written(rt, chk, TL__KIND_CHANS, ch);
    }
}

void tl__split_reset(tl_runtime *rt, tl__pstate *ps)
{
    tl__free(rt, ps->tgone, ps->captgone * sizeof *ps->tgone);
    ps->tgone = NULL;
    ps->ntgone = ps->captgone = 0;
    for (int i = 0; i < 2; i++) {
        tl__free(rt, ps->hot[i], ps->caphot[i] * sizeof *ps->hot[i]);
        ps->hot[i] = NULL;
        ps->nhot[i] = ps->caphot[i] = 0;
    }
    crcmap_free(ps);
}
