/*
 * decode_finish.c -- pass 4: what holds only once every record is in.
 *
 * A whole load (tl__ld_finish): no shell left empty (a dangling id), as
 * many objects as the head announces, every blocked tasklet in the queue
 * it claims, joiners and the run queue linked; then the loader's
 * reference on every object is dropped, so what nothing refers to goes.
 * The runtime equals the checkpoint once every check has passed; what
 * the restore then does differs from it (the rendezvous it completes, the
 * objects the drop frees), so the change tracking is reset before those
 * and not after: their chunks are marked and the next incremental
 * checkpoint rewrites them (else a channel's stored record would still
 * queue the waiters the rendezvous woke, and the head would announce fewer
 * objects than the chunks hold: "a chunk is missing" at the next load).
 * An import (tl__ld_finish_import): one complete tasklet, the run queue
 * naming it exactly when it is runnable.
 * Invariants: nothing is linked or freed before every check has passed
 * (a failure leaves the driver to reset the runtime); counts nlive and
 * nblocked of the runtime match the tasklets that were loaded.
 */
#include "decode.h"

/* ---- pass 4: joiners, run queue, checks, references ---- */

static int link_joiners(tl__loader *ld)
{
    for (size_t i = 0; i < ld->njoins; i++) {
        tl_tasklet *t = ld->joins[i].joinee;
        tl_tasklet *w = tl__idmap_find(&ld->tasklets, ld->joins[i].joiner);
        if (!w || w->wait != TL_WAIT_JOIN || w->w.on != (uintptr_t)t ||
            w->w.link.next != &w->w.link || t->state >= TL_DONE)
            return tl__corrupt(ld, "tasklet #%llu lists a joiner that does not join it",
                               (unsigned long long)t->id);
        tl__list_push_back(&t->ext->joiners, &w->w.link);
        t->refs++;
    }
    return TL_OK;
}

static int link_runq(tl__loader *ld)
{
    const msgpack_object *runq = map_get(&ld->head.up.data, "runq");
    for (uint32_t i = 0; i < runq->via.array.size; i++) {
        const msgpack_object *id = &runq->via.array.ptr[i];
        tl_tasklet *t = is_uint(id) ? tl__idmap_find(&ld->tasklets, id->via.u64) : NULL;
        if (!t || t->state != TL_RUNNABLE || t->w.link.next != &t->w.link)
            return tl__corrupt(ld, "the run queue lists a tasklet that is not runnable");
        tl__runq_push_back(ld->rt, t);
    }
    return TL_OK;
}

typedef struct finish_ctx {
    tl__loader *ld;
    int rc;
} finish_ctx;

static void finish_visit(void *obj, void *ud)
{
    finish_ctx *c = ud;
    tl_tasklet *t = obj;
    bool linked = t->w.link.next != &t->w.link;
    if (c->rc != TL_OK)
        return;
    if (t->state == 0) {
        c->rc = tl__corrupt(c->ld, "a reference to tasklet #%llu, which the snapshot lacks "
                            "(dangling id)", (unsigned long long)t->id);
        return;
    }
    if (t->state < TL_DONE) {
        t->refs++; /* alive */
        c->ld->rt->nlive++;
    }
    if (t->state == TL_BLOCKED) {
        c->ld->rt->nblocked++;
        bool sel_ok = true;
        if (t->wait == TL_WAIT_SELECT)
            for (int i = 0; i < t->ext->sel->n; i++)
                sel_ok = sel_ok && t->ext->sel->ws[i].w.link.next != &t->ext->sel->ws[i].w.link;
        bool ok = t->wait == TL_WAIT_SELECT ? sel_ok : t->wait == TL_WAIT_SLEEP ? !linked : linked;
        if (!ok)
            c->rc = tl__corrupt(c->ld, "tasklet #%llu is blocked but not in the queue it waits on",
                                (unsigned long long)t->id);
    } else if (t->state == TL_RUNNABLE && !linked) {
        c->rc = tl__corrupt(c->ld, "runnable tasklet #%llu is missing from the run queue",
                            (unsigned long long)t->id);
    }
}

/* Drops the loader's reference: an ended tasklet nothing refers to goes. */
static void drop_visit(void *obj, void *ud)
{
    (void)ud;
    tl_tasklet_release(obj);
}

/* Drops the loader's reference on every channel: those nothing refers to
 * go.  They are collected first: freeing one releases what its buffer
 * holds, which may free others, so the list is not walked while freeing.
 * (Every channel still listed keeps the loader's reference until its turn,
 * so no cascade frees one twice.) */
static int drop_unreferenced_chans(tl__loader *ld)
{
    tl_runtime *rt = ld->rt;
    size_t n = 0, k = 0;
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next)
        n++;
    if (!n)
        return TL_OK;
    tl_chan **drop = tl__alloc(rt, n * sizeof *drop);
    if (!drop)
        return tl__seterr(rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next)
        drop[k++] = TL__CONTAINER(l, tl_chan, all);
    for (size_t i = 0; i < k; i++)
        tl_chan_release(drop[i]);
    tl__free(rt, drop, n * sizeof *drop);
    return TL_OK;
}

static int check_chans(tl__loader *ld)
{
    for (tl__link *l = ld->rt->chans.next; l != &ld->rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->reserved)
            return tl__corrupt(ld, "a reference to channel #%llu, which the snapshot lacks "
                               "(dangling id)", (unsigned long long)ch->id);
    }
    return TL_OK;
}

static int check_counts(tl__loader *ld)
{
    if (ld->tasklets.n != ld->ntasklets || ld->chans.n != ld->nchans)
        return tl__corrupt(ld, "%zu tasklets and %zu channels, the head announces %llu and %llu "
                           "(a chunk is missing)", ld->tasklets.n, ld->chans.n,
                           (unsigned long long)ld->ntasklets, (unsigned long long)ld->nchans);
    return TL_OK;
}

/* A checkpoint committed by tl_store_import holds the imported waiters
 * before they looked for partners (tl__snapshot_import_held); a crash
 * before that leaves a local channel with a sender and a receiver both
 * waiting.  The restore completes such rendezvous, as the import would
 * have (tl__chan_rematch does nothing where nothing matches). */
static void rematch_all(tl_runtime *rt)
{
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (!ch->remote && (ch->nsend || ch->count) && (ch->nrecv || ch->count < ch->cap))
            tl__chan_rematch(ch); /* the loader still holds a reference */
    }
}

int tl__ld_finish(tl__loader *ld)
{
    finish_ctx c = {ld, TL_OK};
    c.rc = tl__ld_link_numbered(ld);
    if (c.rc == TL_OK)
        c.rc = check_chans(ld);
    if (c.rc == TL_OK)
        c.rc = link_joiners(ld);
    if (c.rc == TL_OK)
        c.rc = link_runq(ld);
    if (c.rc == TL_OK)
        tl__slab_each(&ld->rt->tasklets, TL__MAGIC_TASK, finish_visit, &c);
    if (c.rc == TL_OK)
        c.rc = check_counts(ld);
    if (c.rc != TL_OK)
        return c.rc;
    tl__clear_dirty(ld->rt); /* the checkpoint as read; the rendezvous and drops are changes */
    rematch_all(ld->rt);
    tl__slab_each(&ld->rt->tasklets, TL__MAGIC_TASK, drop_visit, NULL);
    int rc = drop_unreferenced_chans(ld);
    if (rc != TL_OK)
        return rc;
    ld->rt->next_tid = ld->max_tid;
    ld->rt->next_cid = ld->max_cid;
    return TL_OK;
}

/* Import: the moving tasklet complete and alone; then it joins the run
 * queue (if runnable) and the runtime's counts. */
int tl__ld_finish_import(tl__loader *ld)
{
    tl_tasklet *t = ld->moved;
    if (!t || ld->tasklets.n != 1 || t->state == 0)
        return tl__corrupt(ld, "a moving snapshot must hold exactly one tasklet");
    if (ld->chans.n != ld->nchans)
        return tl__corrupt(ld, "%zu channels, the head announces %llu", ld->chans.n,
                           (unsigned long long)ld->nchans);
    const msgpack_object *runq = map_get(&ld->head.up.data, "runq");
    uint32_t nrun = runq ? runq->via.array.size : 0;
    if ((t->state == TL_RUNNABLE) != (nrun == 1) || nrun > 1 ||
        (nrun && (!is_uint(&runq->via.array.ptr[0]) ||
                  tl__idmap_find(&ld->tasklets, runq->via.array.ptr[0].via.u64) != t)))
        return tl__corrupt(ld, "the run queue does not match the moving tasklet");
    if (t->state == TL_RUNNABLE)
        tl__runq_push_back(ld->rt, t);
    else
        ld->rt->nblocked++;
    ld->rt->nlive++;
    return TL_OK; /* the loader's reference becomes the "alive" one */
}
