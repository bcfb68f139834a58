/*
 * decode_upgrade.c -- upgrades: how a frame of an old function version
 * becomes a frame of a registered one.
 *
 * tl_register_upgrade keeps (name, old version) -> (target, callback) in a
 * list on the runtime; the frame decoder (decode_frame.c) asks for one
 * when a chunk names a function the program does not register, and runs
 * it on each such frame with the frame's old locals as a value map.
 * Invariants: the target is registered before its upgrade is; the list is
 * kept in persist's state (tl__pstate) and freed with the runtime
 * (tl__upgrades_free).
 */
#include "decode.h"

const struct upgrade *tl__find_upgrade(tl_runtime *rt, const char *name, size_t n, uint32_t v)
{
    const tl__pstate *ps = tl__pstate_peek(rt);
    for (const struct upgrade *u = ps ? ps->upgrades : NULL; u; u = u->next)
        if (u->old_version == v && strlen(u->name) == n && memcmp(u->name, name, n) == 0)
            return u;
    return NULL;
}

int tl__run_upgrade(tl__loader *ld, const tl__fnref *r, const msgpack_object *map, char *locals,
                           uint32_t *pc)
{
    tl_value old;
    int rc = tl__dec_value(ld, map, &old, 0);
    if (rc != TL_OK)
        return rc;
    rc = r->up->fn(r->up->ud, *pc, old, locals, pc);
    tl_release(old);
    if (rc != TL_OK)
        return tl__seterr(ld->rt, rc, "%s: the upgrade of %s failed (%s)", ld->where, r->label,
                          tl_strerror(rc));
    if (*pc > r->e->npoints)
        return tl__seterr(ld->rt, TL_EBADPC, "%s: the upgrade of %s gave resume point %u, but "
                          "%s@%u has %u", ld->where, r->label, *pc, r->e->fn->name,
                          r->e->fn->version, r->e->npoints);
    return TL_OK;
}

int tl_register_upgrade(tl_runtime *rt, const char *name, uint32_t old_version,
                        const tl_func *to, tl_upgrade_fn fn, void *ud)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (!name || !to || !fn)
        return tl__seterr(rt, TL_EINVAL, "tl_register_upgrade: name, target and function are needed");
    if (!tl__fn_find(rt, to))
        return tl__seterr(rt, TL_ENOFUNC, "tl_register_upgrade: register %s@%u first",
                          to->name, to->version);
    tl__pstate *ps = tl__pstate_get(rt);
    struct upgrade *u = ps ? tl__calloc(rt, sizeof *u) : NULL;
    char *copy = u ? tl__strdup(rt, name) : NULL;
    if (!u || !copy) {
        tl__free(rt, u, sizeof *u);
        tl__strfree(rt, copy);
        return tl__seterr(rt, TL_ENOMEM, "tl_register_upgrade: out of memory");
    }
    *u = (struct upgrade){ps->upgrades, copy, old_version, to, fn, ud};
    ps->upgrades = u;
    return TL_OK;
}

void tl__upgrades_free(tl_runtime *rt, tl__pstate *ps)
{
    while (ps->upgrades) {
        struct upgrade *u = ps->upgrades;
        ps->upgrades = u->next;
        tl__strfree(rt, u->name);
        tl__free(rt, u, sizeof *u);
    }
}
