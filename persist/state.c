/*
 * state.c -- persist's state in a runtime, and its layer ops.
 *
 * The runtime (src/) knows no storage: everything persist keeps per
 * runtime lives in one tl__pstate, held in the runtime's
 * TL__LAYER_PERSIST slot.  Invariant: the slot holds either nothing or a
 * tl__pstate made here, freed by on_free when the runtime is freed.
 */
#include "persist.h"

static void pstate_free(tl_runtime *rt, void *state)
{
    tl__pstate *ps = state;
    tl__upgrades_free(rt, ps);
    tl__zlib_free(rt, ps);
    tl__free(rt, ps, sizeof *ps);
}

static const tl__layer_ops persist_ops = {
    .on_free = pstate_free,
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
