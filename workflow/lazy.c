/*
 * lazy.c -- restored workflows whose rows are read when first needed.
 *
 * Restore (tl__wf_db_load) walks the restored tasklets once.  A
 * workflow's tasklet has tl.wf.root at the bottom of its frames, and that
 * frame holds the workflow's id and wake channel (await.c,
 * tl__wf_root_info).  One that blocks in TL_WF_RECV with no deadline
 * needs nothing of its row at restore (no timer to arm, no step to hand
 * over or submit, no join to link), so its row is not read: the workflow
 * goes into the lazy table (id -> tasklet and wake channel), its tasklet's
 * userdata is the engine's stub record, and it counts in wf->live.  Every
 * other workflow's row is read at restore, as before.
 *
 * A lazy workflow becomes an ordinary one (its row read, a wf_rec in the
 * hash, tl__wf_lazy_wake) the first time anything asks for it: a lookup
 * by id (a posted message or cancel, tl_wf_cancel, a join), its tasklet
 * running (rec_of sees the stub), or a cancel that cascades to children
 * (tl__wf_lazy_wake_all: the parent is only in the rows).
 *
 * Invariants: an id is in the hash or in the lazy table, never both; a
 * lazy entry holds a reference to its tasklet (given to the wf_rec when it
 * wakes, dropped by tl__wf_lazy_free); entry ids point into the root
 * frame's locals, which live as long as the tasklet (held), and an entry
 * taken out is marked with `tomb`, never NULL, so probing goes past it.
 */
#include "wf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char tomb[] = "";

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ull & SIZE_MAX;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static wf_lazy *slot_of(const tl_wf *wf, const char *id)
{
    if (!wf->nlazy)
        return NULL;
    size_t mask = wf->lcap - 1;
    for (size_t i = hash_str(id) & mask;; i = (i + 1) & mask) {
        wf_lazy *e = &wf->lazy[i];
        if (!e->id)
            return NULL;
        if (e->id != tomb && strcmp(e->id, id) == 0)
            return e;
    }
}

int tl__wf_lazy_has(const tl_wf *wf, const char *id) { return slot_of(wf, id) != NULL; }

static void put(tl_wf *wf, const wf_lazy *in)
{
    size_t mask = wf->lcap - 1, i = hash_str(in->id) & mask;
    while (wf->lazy[i].id)
        i = (i + 1) & mask;
    wf->lazy[i] = *in;
    wf->nlazy++;
}

/* ---- restore: which workflows wait ---- */

typedef struct scan {
    wf_lazy *v;
    size_t n, cap, nquiet;
    int oom;
} scan;

static void visit(void *obj, void *ud)
{
    scan *sc = ud;
    wf_lazy e;
    int quiet;
    if (sc->oom || !tl__wf_root_info(obj, &e.id, &e.wake, &quiet))
        return;
    if (sc->n == sc->cap) {
        size_t nc = sc->cap ? sc->cap * 2 : 256;
        wf_lazy *nv = realloc(sc->v, nc * sizeof *nv);
        if (!nv) {
            sc->oom = 1;
            return;
        }
        sc->v = nv;
        sc->cap = nc;
    }
    e.t = tl__tasklet_handle(obj);
    e.quiet = quiet;
    sc->v[sc->n++] = e;
    sc->nquiet += (size_t)quiet;
}

/* The quiet ones of sc go into the lazy table. */
static int fill(tl_wf *wf, scan *sc)
{
    size_t cap = 16;
    while (cap < sc->nquiet * 2)
        cap *= 2;
    wf->lazy = calloc(cap, sizeof *wf->lazy);
    wf->stub = calloc(1, sizeof *wf->stub);
    if (!wf->lazy || !wf->stub)
        return TL_ENOMEM;
    wf->lcap = cap;
    wf->stub->wf = wf;
    snprintf(wf->stub->id, sizeof wf->stub->id, "(lazy)");
    for (size_t i = 0; i < sc->n; i++) {
        if (!sc->v[i].quiet)
            continue;
        if (tl_tasklet_set_userdata(sc->v[i].t, wf->stub) != TL_OK)
            return TL_ENOMEM;
        tl_tasklet_retain(sc->v[i].t);
        put(wf, &sc->v[i]);
        wf->live++;
    }
    return TL_OK;
}

int tl__wf_lazy_scan(tl_wf *wf, wf_lazy **eager, size_t *neager)
{
    scan sc;
    memset(&sc, 0, sizeof sc);
    *eager = NULL;
    *neager = 0;
    tl__slab_each(&wf->rt->tasklets, TL__MAGIC_TASK, visit, &sc);
    int rc = sc.oom ? TL_ENOMEM : TL_OK;
    if (rc == TL_OK && sc.nquiet)
        rc = fill(wf, &sc);
    if (rc != TL_OK) {
        free(sc.v);
        return tl__wf_err(wf, rc, "restore: out of memory");
    }
    size_t k = 0; /* the others, in place */
    for (size_t i = 0; i < sc.n; i++)
        if (!sc.v[i].quiet || !wf->nlazy)
            sc.v[k++] = sc.v[i];
    *eager = sc.v;
    *neager = k;
    return TL_OK;
}

/* ---- waking ---- */

/* e's row read into a wf_rec on its tasklet; e leaves the table. */
static int wake(tl_wf *wf, wf_lazy *e, wf_rec **out)
{
    wf_rec *r;
    int rc = tl__wf_db_adopt(wf, e->id, e->t, e->wake, &r);
    if (rc != TL_OK)
        return rc;
    if (r->wait != W_RECV || r->deadline || r->expired) {
        tl__wf_hash_del(wf, r);
        tl__wf_rec_free(wf, r);
        tl_tasklet_set_userdata(e->t, wf->stub);
        return tl__wf_err(wf, TL_ECORRUPT, "workflow %s: its tasklet waits in TL_WF_RECV with "
                          "no deadline, its row says otherwise", e->id);
    }
    tl_tasklet_release(e->t); /* the record holds it now */
    e->id = tomb;
    e->t = NULL;
    wf->nlazy--;
    *out = r;
    return TL_OK;
}

int tl__wf_lazy_wake(tl_wf *wf, const char *id, wf_rec **out)
{
    wf_lazy *e = slot_of(wf, id);
    *out = NULL;
    return e ? wake(wf, e, out) : TL_OK;
}

wf_rec *tl__wf_lazy_of(tl_wf *wf, tl_tasklet *t)
{
    const char *id;
    tl_chan *ch;
    int quiet;
    wf_rec *r = NULL;
    tl_tasklet *bare = tl__tasklet_at(t);
    if (bare && tl__wf_root_info(bare, &id, &ch, &quiet) && tl__wf_lazy_wake(wf, id, &r) != TL_OK)
        wf->lazy_rc = tl_errcode(wf->rt); /* tl_wf_run reports it */
    return r;
}

/* A row that cannot be decoded stays lazy (reported by tl_wf_run): it
 * does not stop the others. */
int tl__wf_lazy_wake_all(tl_wf *wf)
{
    for (size_t i = 0; wf->nlazy && i < wf->lcap; i++) {
        wf_lazy *e = &wf->lazy[i];
        wf_rec *r;
        int rc = e->id && e->id != tomb ? wake(wf, e, &r) : TL_OK;
        if (rc == TL_ECORRUPT)
            wf->lazy_rc = rc;
        else if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

void tl__wf_lazy_free(tl_wf *wf)
{
    for (size_t i = 0; wf->nlazy && i < wf->lcap; i++) {
        wf_lazy *e = &wf->lazy[i];
        if (!e->id || e->id == tomb)
            continue;
        tl_tasklet_set_userdata(e->t, NULL);
        tl_tasklet_release(e->t);
        wf->nlazy--;
    }
    free(wf->lazy);
    free(wf->stub);
    wf->lazy = NULL;
    wf->stub = NULL;
    wf->lcap = 0;
}
