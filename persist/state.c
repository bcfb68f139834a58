/*
 * state.c -- persist's state in a runtime, and its layer ops.
 *
 * The runtime (src/) knows no storage: everything persist keeps per
 * runtime lives in one tl__pstate, held in the runtime's
 * TL__LAYER_PERSIST slot, and the runtime reaches persist only through
 * the ops below (src/internal.h, tl__layer_ops):
 *   on_free    the runtime is freed: free the state
 *   on_reset   a load failed and emptied the runtime: forget freed chunks
 *              and where the store holds what (split.c)
 *   policy     the scheduler's policy step: run the store's policy
 *   chan_gone  a channel was freed while a store is attached: its chunk
 *              must be rewritten (as a tombstone if it is empty now); it
 *              leaves the channel index (tindex.c)
 *   tasklet_note, queued  a tasklet born or freed, a waiter queued, while
 *              a store is attached: the chunk index (tindex.c); a freed
 *              one's chunk is noted for split.c (ps->tgone)
 *   holder     tl_runtime_free asks: a store still attached refuses it
 * Invariants: the slot holds either nothing or a tl__pstate made here;
 * rt->track is set exactly while ps->store is.
 */
#include "persist.h"

static void pstate_free(tl_runtime *rt, void *state)
{
    tl__pstate *ps = state;
    tl__upgrades_free(rt, ps);
    tl__zlib_free(rt, ps);
    tl__free(rt, ps->gone, ps->capgone * sizeof *ps->gone);
    tl__tix_stop(rt, &ps->tix);
    tl__tix_stop(rt, &ps->cix);
    tl__split_reset(rt, ps);
    tl__free(rt, ps, sizeof *ps);
}

static void pstate_reset(tl_runtime *rt, void *state)
{
    tl__pstate *ps = state;
    ps->ngone = 0;
    tl__tix_clear(rt, &ps->tix); /* the runtime is empty */
    tl__tix_clear(rt, &ps->cix);
    tl__split_reset(rt, ps);
}

static int pstate_policy(tl_runtime *rt, void *state, int idle)
{
    (void)rt;
    tl__pstate *ps = state;
    return ps->policy ? ps->policy(ps->policy_ud, idle) : TL_OK;
}

static void pstate_chan_gone(tl_runtime *rt, void *state, uint64_t id)
{
    tl__pstate *ps = state;
    uint64_t key = id >> TL__CHUNK_SHIFT;
    tl__cix_gone(rt, &ps->cix, id);
    if (ps->ngone == SIZE_MAX || (ps->ngone && ps->gone[ps->ngone - 1] == key))
        return;
    if (ps->ngone == ps->capgone) {
        size_t ncap = ps->capgone ? ps->capgone * 2 : 64;
        uint64_t *g = tl__realloc(rt, ps->gone, ps->capgone * sizeof *g, ncap * sizeof *g);
        if (!g) { /* remembered coarsely instead: every chunk is rewritten */
            ps->ngone = SIZE_MAX;
            return;
        }
        ps->gone = g;
        ps->capgone = ncap;
    }
    ps->gone[ps->ngone++] = key;
}

static void pstate_tasklet_note(tl_runtime *rt, void *state, tl_tasklet *t, int born)
{
    tl__pstate *ps = state;
    tl__tix_note(rt, &ps->tix, t, born);
    if (!born && ps->store) /* its chunk's home record must be rewritten */
        tl__split_freed(rt, ps, t->id >> TL__CHUNK_SHIFT);
}

static void pstate_queued(tl_runtime *rt, void *state, tl__waiter *w)
{
    (void)rt;
    tl__pstate *ps = state;
    tl__tix_set_seq(&ps->tix, w, ps->tix.wseq + 1);
}

static const char *pstate_holder(const tl_runtime *rt, void *state)
{
    (void)rt;
    return ((const tl__pstate *)state)->store
               ? "a store is still attached; close it (tl_store_close)" : NULL;
}

static const tl__layer_ops persist_ops = {
    .on_free = pstate_free,
    .on_reset = pstate_reset,
    .policy = pstate_policy,
    .chan_gone = pstate_chan_gone,
    .tasklet_note = pstate_tasklet_note,
    .queued = pstate_queued,
    .holder = pstate_holder,
};

tl__pstate *tl__pstate_get(tl_runtime *rt)
{
    tl__pstate *ps = tl__pstate_peek(rt);
    if (ps)
        return ps;
    ps = tl__calloc(rt, sizeof *ps);
    if (!ps)
        return NULL;
    if (tl__layer_attach(rt, TL__LAYER_PERSIST, &persist_ops, ps) != TL_OK) {
        tl__free(rt, ps, sizeof *ps);
        return NULL;
    }
    return ps;
}

int tl__pstate_attach_store(tl_runtime *rt, tl_store *st)
{
    tl__pstate *ps = tl__pstate_get(rt);
    if (!ps)
        return TL_ENOMEM;
    ps->store = st;
    tl__track(rt, 1);
    tl__tix_start(rt, &ps->tix); /* lost if short of memory: rebuilt later */
    tl__cix_start(rt, &ps->cix); /* likewise */
    return TL_OK;
}

void tl__pstate_detach_store(tl_runtime *rt)
{
    tl__pstate *ps = tl__pstate_peek(rt);
    if (ps) {
        ps->store = NULL;
        tl__tix_stop(rt, &ps->tix);
        tl__tix_stop(rt, &ps->cix);
    }
    tl__pstate_set_policy(rt, NULL, NULL, 0);
    tl__track(rt, 0);
}

void tl__pstate_set_policy(tl_runtime *rt, int (*fn)(void *ud, int idle), void *ud,
                           uint64_t every)
{
    tl__pstate *ps = tl__pstate_peek(rt);
    if (ps) {
        ps->policy = fn;
        ps->policy_ud = ud;
    }
    rt->policy_every = ps && fn ? every : 0;
    rt->policy_count = 0;
}
