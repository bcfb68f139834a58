/*
 * tindex.c -- the chunk -> tasklets index and the waiters' queue numbers,
 * and the chunk -> channels index, kept while a store is attached, so that
 * an incremental checkpoint visits only the chunks that changed
 * (docs/ARCHITECTURE.md section 11.2).
 *
 * Each chunk key (tasklet id >> 8) with live tasklets has a tl__tchunk:
 * its tasklets sorted by id, each with the queue number (seq) of the
 * channel queue it waits in.  The chunks are found through an
 * open-addressing table (linear probing, backward-shift deletion).  The
 * core feeds it through the layer ops tasklet_note (born / freed) and
 * queued (a waiter joined a queue's tail); the loader sets the numbers it
 * reads.  A select's cases carry their own numbers (tl__selw.seq).
 * Invariants while ix->on and !ix->lost: every live tasklet is in the
 * chunk of its id exactly once; in every local channel queue the waiters'
 * numbers increase from head to tail; ix->wseq is the largest number given.
 * A note that cannot be kept (out of memory) sets lost: the next
 * checkpoint rebuilds the index (tl__tix_start) and writes everything.
 *
 * The channel index (ix->chans, the same table; seq unused) is fed
 * lazily: a channel is born dirty, so it is in rt->dchans, and
 * tl__cix_sync adds the channels listed there (a loaded channel gets its
 * id after it was made: it is added with the id it ends with); the layer
 * op chan_gone takes a freed one out (tl__cix_gone).  Invariant while on
 * and !lost: every live channel is in the chunk of its id, or in
 * rt->dchans, or both, and no freed one is in the index.  Lost: the next
 * checkpoint rebuilds it (tl__cix_start); what changed is still listed in
 * rt->dchans, so the checkpoint stays incremental.
 */
#include "persist.h"

static size_t slot_of(uint64_t key, size_t cap)
{
    return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 29) & (cap - 1);
}

tl__tchunk *tl__tix_chunk(const tl__tindex *ix, uint64_t key)
{
    if (!ix->nchunks)
        return NULL;
    for (size_t i = slot_of(key, ix->cap); ix->slots[i]; i = (i + 1) & (ix->cap - 1))
        if (ix->slots[i]->key == key)
            return ix->slots[i];
    return NULL;
}

static void table_put(tl__tchunk **slots, size_t cap, tl__tchunk *c)
{
    size_t i = slot_of(c->key, cap);
    while (slots[i])
        i = (i + 1) & (cap - 1);
    slots[i] = c;
}

static bool table_grow(tl_runtime *rt, tl__tindex *ix)
{
    size_t ncap = ix->cap ? 2 * ix->cap : 64;
    tl__tchunk **ns = tl__calloc(rt, ncap * sizeof *ns);
    if (!ns)
        return false;
    for (size_t i = 0; i < ix->cap; i++)
        if (ix->slots[i])
            table_put(ns, ncap, ix->slots[i]);
    tl__free(rt, ix->slots, ix->cap * sizeof *ix->slots);
    ix->slots = ns;
    ix->cap = ncap;
    return true;
}

/* Takes chunk c out of the table (backward-shift: no tombstones). */
static void table_del(tl__tindex *ix, const tl__tchunk *c)
{
    size_t mask = ix->cap - 1, i = slot_of(c->key, ix->cap);
    while (ix->slots[i] != c)
        i = (i + 1) & mask;
    for (size_t j = (i + 1) & mask; ix->slots[j]; j = (j + 1) & mask) {
        size_t home = slot_of(ix->slots[j]->key, ix->cap);
        if (((j - home) & mask) >= ((j - i) & mask)) { /* may move back to i */
            ix->slots[i] = ix->slots[j];
            i = j;
        }
    }
    ix->slots[i] = NULL;
    ix->nchunks--;
}

static tl__tchunk *chunk_make(tl_runtime *rt, tl__tindex *ix, uint64_t key)
{
    if (2 * (ix->nchunks + 1) > ix->cap && !table_grow(rt, ix))
        return NULL;
    tl__tchunk *c = tl__calloc(rt, sizeof *c);
    if (!c)
        return NULL;
    c->key = key;
    table_put(ix->slots, ix->cap, c);
    ix->nchunks++;
    return c;
}

static uint64_t ent_id(const tl__tindex *ix, const tl__tent *e)
{
    return ix->chans ? e->ch->id : e->t->id;
}

/* Where the object of this id is, or would go, in c (binary search). */
static uint32_t pos_of(const tl__tindex *ix, const tl__tchunk *c, uint64_t id)
{
    uint32_t lo = 0, hi = c->n;
    if (hi && ent_id(ix, &c->e[hi - 1]) < id)
        return hi; /* the usual case: a new id is the largest */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ent_id(ix, &c->e[mid]) < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static tl__tchunk *chunk_of(tl__tindex *ix, uint64_t key)
{
    if (ix->last && ix->last->key == key)
        return ix->last;
    tl__tchunk *c = tl__tix_chunk(ix, key);
    if (c)
        ix->last = c;
    return c;
}

/* Makes room for one more entry in c; false when out of memory (an empty
 * c is then taken out of the table). */
static bool entry_room(tl_runtime *rt, tl__tindex *ix, tl__tchunk *c)
{
    if (c->n < c->cap)
        return true;
    uint32_t ncap = c->cap ? 2 * c->cap : 4;
    tl__tent *ne = tl__realloc(rt, c->e, c->cap * sizeof *ne, ncap * sizeof *ne);
    if (ne) {
        c->e = ne;
        c->cap = ncap;
        return true;
    }
    if (!c->n) {
        table_del(ix, c);
        tl__free(rt, c, sizeof *c);
        ix->last = NULL;
    }
    return false;
}

/* Adds obj (a tasklet, or a channel in a channel index) of this id; an
 * object already there is left as it is. */
static int add(tl_runtime *rt, tl__tindex *ix, void *obj, uint64_t id)
{
    uint64_t key = id >> TL__CHUNK_SHIFT;
    tl__tchunk *c = chunk_of(ix, key);
    if (!c && !(c = chunk_make(rt, ix, key)))
        return TL_ENOMEM;
    uint32_t at = pos_of(ix, c, id);
    if (at < c->n && (void *)c->e[at].t == obj)
        return TL_OK;
    if (!entry_room(rt, ix, c))
        return TL_ENOMEM;
    memmove(&c->e[at + 1], &c->e[at], (c->n - at) * sizeof *c->e);
    c->e[at].seq = 0;
    if (ix->chans)
        c->e[at].ch = obj;
    else
        c->e[at].t = obj;
    c->n++;
    ix->total++;
    return TL_OK;
}

/* Takes obj (or, obj NULL, the object of this id) out; nothing if it is
 * not there. */
static void del(tl_runtime *rt, tl__tindex *ix, const void *obj, uint64_t id)
{
    tl__tchunk *c = chunk_of(ix, id >> TL__CHUNK_SHIFT);
    uint32_t at = c ? pos_of(ix, c, id) : 0;
    if (!c || at == c->n ||
        (obj ? (const void *)c->e[at].t != obj : ent_id(ix, &c->e[at]) != id))
        return;
    memmove(&c->e[at], &c->e[at + 1], (c->n - at - 1) * sizeof *c->e);
    c->n--;
    ix->total--;
    if (c->n)
        return;
    table_del(ix, c);
    tl__free(rt, c->e, c->cap * sizeof *c->e);
    tl__free(rt, c, sizeof *c);
    ix->last = NULL;
}

void tl__tix_note(tl_runtime *rt, tl__tindex *ix, tl_tasklet *t, int born)
{
    if (!ix->on || ix->lost)
        return;
    if (!born)
        del(rt, ix, t, t->id);
    else if (add(rt, ix, t, t->id) != TL_OK)
        ix->lost = 1;
}

static tl__tent *entry_of(tl__tindex *ix, const tl_tasklet *t)
{
    tl__tchunk *c = chunk_of(ix, t->id >> TL__CHUNK_SHIFT);
    uint32_t at = c ? pos_of(ix, c, t->id) : 0;
    return c && at < c->n && c->e[at].t == t ? &c->e[at] : NULL;
}

uint64_t tl__tix_seq(tl__tindex *ix, const tl__waiter *w)
{
    if (w->on & 1)
        return ((const tl__selw *)w)->seq;
    tl__tent *e = ix->on && !ix->lost ? entry_of(ix, TL__CONTAINER(w, tl_tasklet, w)) : NULL;
    return e ? e->seq : 0;
}

void tl__tix_set_seq(tl__tindex *ix, tl__waiter *w, uint64_t seq)
{
    ix->wseq = seq > ix->wseq ? seq : ix->wseq;
    if (w->on & 1) {
        ((tl__selw *)w)->seq = seq;
        return;
    }
    tl__tent *e = ix->on && !ix->lost ? entry_of(ix, TL__CONTAINER(w, tl_tasklet, w)) : NULL;
    if (e)
        e->seq = seq;
    else if (ix->on)
        ix->lost = 1;
}

void tl__tix_clear(tl_runtime *rt, tl__tindex *ix)
{
    for (size_t i = 0; i < ix->cap; i++) {
        tl__tchunk *c = ix->slots[i];
        if (c) {
            tl__free(rt, c->e, c->cap * sizeof *c->e);
            tl__free(rt, c, sizeof *c);
        }
    }
    tl__free(rt, ix->slots, ix->cap * sizeof *ix->slots);
    uint64_t wseq = ix->wseq;
    int on = ix->on, chans = ix->chans;
    memset(ix, 0, sizeof *ix);
    ix->wseq = wseq; /* numbers only grow */
    ix->on = on;
    ix->chans = chans;
}

static void add_visit(void *obj, void *ud)
{
    struct { tl_runtime *rt; tl__tindex *ix; } *c = ud;
    tl_tasklet *t = obj;
    if (!c->ix->lost && add(c->rt, c->ix, t, t->id) != TL_OK)
        c->ix->lost = 1;
}

void tl__tix_number_queues(tl_runtime *rt, tl__tindex *ix)
{
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        const tl__link *qs[2] = {&ch->sendq, &ch->recvq};
        for (int k = 0; k < 2 && !ch->remote; k++)
            for (tl__link *w = qs[k]->next; w != qs[k]; w = w->next)
                tl__tix_set_seq(ix, (tl__waiter *)w, ix->wseq + 1);
    }
}

int tl__tix_start(tl_runtime *rt, tl__tindex *ix)
{
    tl__tix_clear(rt, ix);
    ix->on = 1;
    struct { tl_runtime *rt; tl__tindex *ix; } c = {rt, ix};
    tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, add_visit, &c);
    if (!ix->lost)
        tl__tix_number_queues(rt, ix);
    return ix->lost ? TL_ENOMEM : TL_OK;
}

void tl__tix_stop(tl_runtime *rt, tl__tindex *ix)
{
    tl__tix_clear(rt, ix);
    ix->on = 0;
}

/* ---- the channel index ---- */

int tl__cix_start(tl_runtime *rt, tl__tindex *ix)
{
    ix->chans = 1;
    tl__tix_clear(rt, ix);
    ix->on = 1;
    for (tl__link *l = rt->chans.next; l != &rt->chans && !ix->lost; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (add(rt, ix, ch, ch->id) != TL_OK)
            ix->lost = 1;
    }
    return ix->lost ? TL_ENOMEM : TL_OK;
}

void tl__cix_sync(tl_runtime *rt, tl__tindex *ix)
{
    for (tl__link *l = rt->dchans.next; ix->on && l != &rt->dchans && !ix->lost; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, dlink);
        if (add(rt, ix, ch, ch->id) != TL_OK)
            ix->lost = 1;
    }
}

void tl__cix_gone(tl_runtime *rt, tl__tindex *ix, uint64_t id)
{
    if (ix->on && !ix->lost)
        del(rt, ix, NULL, id);
}
