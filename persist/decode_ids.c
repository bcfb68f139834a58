/*
 * decode_ids.c -- ids in a snapshot to the objects being built.
 *
 * Records refer to tasklets and channels by 64-bit id, often before the
 * record of that id comes.  Each kind has a tl__idmap, sized from the
 * head: a dense array when ids are dense, else an open-addressing table.
 * A reference to an id not seen yet creates a *shell*: a tasklet in state
 * 0, or a channel with reserved = 1, filled by its record later
 * (decode_finish.c refuses any shell left empty).
 * Invariants: no id above the head's counter and no more objects than the
 * head announces (tl__idmap_slot returns NULL instead), so a snapshot
 * cannot make the loader allocate beyond its counts; every object created
 * here holds one reference for the loader until tl__ld_finish; an import
 * creates exactly one tasklet (the moving one) and no channel shell.
 */
#include "decode.h"

/* ---- id maps ---- */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    return x ^ (x >> 27);
}

int tl__idmap_init(tl_runtime *rt, tl__idmap *m, uint64_t n, uint64_t maxid, int sparse)
{
    memset(m, 0, sizeof *m);
    m->limit = (size_t)n;
    m->maxid = maxid;
    if (!sparse && maxid <= 4 * n + 65536 && maxid < ((uint64_t)1 << 26)) {
        m->direct = 1;
        m->cap = (size_t)maxid + 1;
        m->objs = tl__calloc(rt, m->cap * sizeof *m->objs);
        return m->objs ? TL_OK : TL_ENOMEM;
    }
    m->cap = 16;
    while (m->cap < 2 * n + 16)
        m->cap *= 2;
    m->ids = tl__calloc(rt, m->cap * sizeof *m->ids);
    m->objs = tl__calloc(rt, m->cap * sizeof *m->objs);
    return m->ids && m->objs ? TL_OK : TL_ENOMEM;
}

void tl__idmap_free(tl_runtime *rt, tl__idmap *m)
{
    tl__free(rt, m->ids, m->direct ? 0 : m->cap * sizeof *m->ids);
    tl__free(rt, m->objs, m->cap * sizeof *m->objs);
}

/* The slot for id, or NULL when the map cannot hold it (more objects
 * than the head announced, or an id beyond its counter). */
void **tl__idmap_slot(tl__idmap *m, uint64_t id)
{
    if (id > m->maxid)
        return NULL;
    if (m->direct)
        return &m->objs[id];
    size_t j = mix(id) & (m->cap - 1);
    while (m->objs[j] && m->ids[j] != id)
        j = (j + 1) & (m->cap - 1);
    if (!m->objs[j] && m->n >= m->limit)
        return NULL;
    m->ids[j] = id;
    return &m->objs[j];
}

void *tl__idmap_find(tl__idmap *m, uint64_t id)
{
    void **slot = tl__idmap_slot(m, id);
    return slot ? *slot : NULL;
}

/* The tasklet with this id, created as an empty shell (state 0) if its
 * record has not been seen yet. */
/* Check mode: the live object the id names, or NULL with the error set. */
static void *resolve_live(tl__loader *ld, int chan, uint64_t id)
{
    void *obj = ld->resolve(ld->resolve_ud, chan, id);
    if (!obj)
        tl__corrupt(ld, "no live %s #%llu", chan ? "channel" : "tasklet", (unsigned long long)id);
    return obj;
}

tl_tasklet *tl__ld_tasklet(tl__loader *ld, uint64_t id)
{
    if (ld->resolve)
        return resolve_live(ld, 0, id);
    void **slot = id && ld->tasklets.objs ? tl__idmap_slot(&ld->tasklets, id) : NULL;
    if (!slot) {
        tl__corrupt(ld, "tasklet id %llu is out of range or more tasklets than the head "
                    "announces", (unsigned long long)id);
        return NULL;
    }
    if (ld->import && (*slot || ld->moved)) {
        tl__corrupt(ld, "a moving tasklet may not refer to tasklets (#%llu)",
                    (unsigned long long)id);
        return NULL;
    }
    if (*slot)
        return *slot;
    tl_tasklet *t = tl__slab_get(ld->rt, &ld->rt->tasklets);
    if (!t) {
        tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
        return NULL;
    }
    tl__tasklet_clear(t);
    t->magic = TL__MAGIC_TASK;
    t->rt = ld->rt;
    t->id = ld->import ? ++ld->rt->next_tid : id;
    if (ld->import)
        ld->moved = t;
    t->refs = 1; /* the loader's, until tl__ld_finish: a temporary reference
                  * (an upgrade's old locals) must not free a shell */
    tl__list_init(&t->w.link);
    *slot = t;
    ld->tasklets.n++;
    tl__note_tasklet(ld->rt, t, 1);
    return t;
}

/* The channel with this id, created as an unbuffered shell (reserved = 1)
 * if its record has not been seen yet. */
tl_chan *tl__ld_chan(tl__loader *ld, uint64_t id)
{
    if (ld->resolve)
        return resolve_live(ld, 1, id);
    void **slot = id && ld->chans.objs ? tl__idmap_slot(&ld->chans, id) : NULL;
    tl_chan *ch;
    if (!slot) {
        tl__corrupt(ld, "channel id %llu is out of range or more channels than the head "
                    "announces", (unsigned long long)id);
        return NULL;
    }
    if (*slot)
        return *slot;
    if (ld->import) { /* channel records come first: every id is known */
        tl__corrupt(ld, "a reference to channel #%llu, which the snapshot lacks (dangling id)",
                    (unsigned long long)id);
        return NULL;
    }
    if (tl__chan_create(ld->rt, 0, &ch) != TL_OK)
        return NULL;
    ch->id = id;
    ch->refs = 1; /* the loader's, until tl__ld_finish */
    ch->reserved = 1;
    *slot = ch;
    ld->chans.n++;
    return ch;
}
