/*
 * registry.c -- tasklet functions, registered per runtime by name@version.
 *
 * Two open-addressing tables map a descriptor pointer and a name@version
 * to the same tl__fn, which caches what the hot path needs (the step
 * pointer, frame size and slab class, the fields owning references).
 * A snapshot only ever names functions; it can run nothing that the
 * loading program did not register here.
 *
 * Each entry also keeps the function's shape: the kind of each of its
 * resume points, in order.  tl_register reads it by probing the step
 * function (probe_shape): the TL_ macros answer a frame flagged
 * TL__F_PROBE with a count (pc TL__PROBE) or a kind (TL__PROBE + k) and
 * return at once, so no code of the function body runs.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define MAX_LOCALS 65536

static uint64_t hash_ptr(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_name(const char *name, uint32_t version)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (h ^ version) * 1099511628211ULL;
}

static bool same_name(const tl__fn *e, const char *name, uint32_t version)
{
    return e->fn->version == version && strcmp(e->fn->name, name) == 0;
}

static int map_grow(tl_runtime *rt, tl__fnmap *m, bool by_ptr)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    tl__fn **slots = tl__calloc(rt, ncap * sizeof *slots);
    if (!slots)
        return TL_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        tl__fn *e = m->slots[i];
        if (!e)
            continue;
        uint64_t h = by_ptr ? hash_ptr(e->fn) : hash_name(e->fn->name, e->fn->version);
        size_t j = h & (ncap - 1);
        while (slots[j])
            j = (j + 1) & (ncap - 1);
        slots[j] = e;
    }
    tl__free(rt, m->slots, m->cap * sizeof *m->slots);
    m->slots = slots;
    m->cap = ncap;
    return TL_OK;
}

static int map_reserve(tl_runtime *rt, tl__fnmap *m, bool by_ptr)
{
    if ((m->n + 1) * 2 > m->cap)
        return map_grow(rt, m, by_ptr);
    return TL_OK;
}

/* Inserts e; map_reserve must have made room. */
static void map_put(tl__fnmap *m, tl__fn *e, bool by_ptr)
{
    uint64_t h = by_ptr ? hash_ptr(e->fn) : hash_name(e->fn->name, e->fn->version);
    size_t j = h & (m->cap - 1);
    while (m->slots[j])
        j = (j + 1) & (m->cap - 1);
    m->slots[j] = e;
    m->n++;
}

tl__fn *tl__fn_find(tl_runtime *rt, const tl_func *fn)
{
    if (fn == rt->cache_key)
        return rt->cache_val;
    tl__fnmap *m = &rt->by_ptr;
    if (!m->cap)
        return NULL;
    size_t j = hash_ptr(fn) & (m->cap - 1);
    for (tl__fn *e; (e = m->slots[j]); j = (j + 1) & (m->cap - 1)) {
        if (e->fn == fn) {
            rt->cache_key = fn;
            rt->cache_val = e;
            return e;
        }
    }
    return NULL;
}

static tl__fn *find_by_name(tl_runtime *rt, const char *name, uint32_t version)
{
    tl__fnmap *m = &rt->by_name;
    if (!m->cap)
        return NULL;
    size_t j = hash_name(name, version) & (m->cap - 1);
    for (tl__fn *e; (e = m->slots[j]); j = (j + 1) & (m->cap - 1))
        if (same_name(e, name, version))
            return e;
    return NULL;
}

static size_t type_size(int type)
{
    switch (type) {
    case TL_T_BOOL: return 1;
    case TL_T_I32: case TL_T_U32: return 4;
    case TL_T_I64: case TL_T_U64: case TL_T_F64: return 8;
    case TL_T_VALUE: return sizeof(tl_value);
    case TL_T_CHAN: case TL_T_TASKLET: return sizeof(void *);
    case TL_T_BYTES: return 0; /* any */
    case TL_T_CASES: return 0; /* any number of tl_case */
    default: return (size_t)-1;
    }
}

static bool is_ref_type(int type)
{
    return type == TL_T_VALUE || type == TL_T_CHAN || type == TL_T_TASKLET;
}

static int check_field(tl_runtime *rt, const tl_func *fn, size_t i)
{
    const tl_field *fd = &fn->fields[i];
    size_t want = type_size(fd->type);
    if (!fd->name || !fd->name[0])
        return tl__seterr(rt, TL_ESCHEMA, "tl_register %s@%u: field %zu has no name",
                          fn->name, fn->version, i);
    if (want == (size_t)-1)
        return tl__seterr(rt, TL_ESCHEMA, "tl_register %s@%u: field '%s' has unknown type %u",
                          fn->name, fn->version, fd->name, fd->type);
    if ((want && fd->size != want) || fd->size == 0)
        return tl__seterr(rt, TL_ESCHEMA,
                          "tl_register %s@%u: field '%s' is %u bytes, its type needs %zu",
                          fn->name, fn->version, fd->name, fd->size, want);
    if ((size_t)fd->offset + fd->size > fn->locals_size)
        return tl__seterr(rt, TL_ESCHEMA,
                          "tl_register %s@%u: field '%s' lies outside the %zu-byte locals",
                          fn->name, fn->version, fd->name, fn->locals_size);
    if (fd->type == TL_T_CASES && fd->size % sizeof(tl_case))
        return tl__seterr(rt, TL_ESCHEMA, "tl_register %s@%u: field '%s' (cases) is %u bytes, "
                          "not a whole number of tl_case", fn->name, fn->version, fd->name,
                          fd->size);
    if ((is_ref_type(fd->type) || fd->type == TL_T_CASES) && fd->offset % sizeof(void *))
        return tl__seterr(rt, TL_ESCHEMA, "tl_register %s@%u: field '%s' is misaligned",
                          fn->name, fn->version, fd->name);
    for (size_t j = 0; j < i; j++) {
        const tl_field *o = &fn->fields[j];
        if (strcmp(o->name, fd->name) == 0)
            return tl__seterr(rt, TL_ESCHEMA, "tl_register %s@%u: field '%s' appears twice",
                              fn->name, fn->version, fd->name);
        if (fd->offset < o->offset + o->size && o->offset < fd->offset + fd->size)
            return tl__seterr(rt, TL_ESCHEMA,
                              "tl_register %s@%u: fields '%s' and '%s' overlap",
                              fn->name, fn->version, o->name, fd->name);
    }
    return TL_OK;
}

static int check_func(tl_runtime *rt, const tl_func *fn)
{
    if (!fn->name || !fn->name[0] || !fn->step)
        return tl__seterr(rt, TL_EINVAL, "tl_register: descriptor needs a name and a step function");
    if (fn->locals_size > MAX_LOCALS)
        return tl__seterr(rt, TL_EINVAL, "tl_register %s@%u: locals of %zu bytes exceed %d",
                          fn->name, fn->version, fn->locals_size, MAX_LOCALS);
    if (fn->nfields && !fn->fields)
        return tl__seterr(rt, TL_EINVAL, "tl_register %s@%u: nfields without fields",
                          fn->name, fn->version);
    for (size_t i = 0; i < fn->nfields; i++) {
        int rc = check_field(rt, fn, i);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

/* Asks frame f, flagged as a probe, what resume point pc holds: a count
 * (pc TL__PROBE) or a kind, 0 if none. */
static uint32_t probe(tl_frame *f, uint32_t pc)
{
    f->h.pc = pc;
    f->h.flags = TL__F_PROBE;
    if (f->fn->step(f, TL__LOCALS(f)) != TL__DONE)
        return 0;
    return f->h.pc;
}

static int probe_points(tl_runtime *rt, tl__fn *e, tl_frame *f)
{
    const tl_func *fn = e->fn;
    uint32_t n = probe(f, TL__PROBE);
    if (n > TL__MAX_POINTS)
        return tl__seterr(rt, TL_EINVAL, "tl_register %s@%u: %u resume points (at most %d), or a "
                          "step function not written with TL_BEGIN and TL_END",
                          fn->name, fn->version, n, TL__MAX_POINTS);
    e->shape = tl__calloc(rt, (size_t)n + 1);
    if (!e->shape)
        return tl__seterr(rt, TL_ENOMEM, "tl_register %s@%u: out of memory", fn->name, fn->version);
    e->npoints = n;
    for (uint32_t k = 1; k <= n; k++) {
        uint32_t kind = probe(f, TL__PROBE + k);
        if (kind == 0 || kind > 127)
            return tl__seterr(rt, TL_EINVAL,
                              "tl_register %s@%u: resume point %u of %u has no case: a suspending "
                              "macro inside a nested switch, or __COUNTER__ expanded between "
                              "TL_BEGIN and TL_END", fn->name, fn->version, k, n);
        e->shape[k - 1] = (char)kind;
    }
    return TL_OK;
}

/* Reads e's shape by probing its step function on a scratch frame. */
static int probe_shape(tl_runtime *rt, tl__fn *e)
{
    size_t size = sizeof(tl_frame) + e->fn->locals_size;
    tl_frame *f = tl__calloc(rt, size);
    tl_tasklet dummy;
    if (!f)
        return tl__seterr(rt, TL_ENOMEM, "tl_register %s@%u: out of memory", e->fn->name,
                          e->fn->version);
    memset(&dummy, 0, sizeof dummy);
    dummy.rt = rt; /* for tl_frame_runtime before TL_BEGIN */
    dummy.top = f;
    f->fn = e;
    f->t = &dummy;
    int rc = probe_points(rt, e, f);
    tl__free(rt, f, size);
    return rc;
}

static void fn_entry_free(tl_runtime *rt, tl__fn *e)
{
    tl__free(rt, e->refs, e->nrefs * sizeof *e->refs);
    if (e->v1_lines)
        tl__free(rt, e->v1_lines, e->npoints * sizeof *e->v1_lines);
    if (e->shape)
        tl__free(rt, e->shape, (size_t)e->npoints + 1);
    tl__free(rt, e, sizeof *e);
}

static tl__fn *fn_entry_new(tl_runtime *rt, const tl_func *fn)
{
    tl__fn *e = tl__calloc(rt, sizeof *e);
    if (!e)
        return NULL;
    size_t nrefs = 0;
    for (size_t i = 0; i < fn->nfields; i++)
        nrefs += is_ref_type(fn->fields[i].type);
    if (nrefs) {
        e->refs = tl__alloc(rt, nrefs * sizeof *e->refs);
        if (!e->refs) {
            tl__free(rt, e, sizeof *e);
            return NULL;
        }
        for (size_t i = 0, k = 0; i < fn->nfields; i++)
            if (is_ref_type(fn->fields[i].type))
                e->refs[k++] = (uint16_t)i;
    }
    e->fn = fn;
    e->step = fn->step;
    e->nrefs = (uint16_t)nrefs;
    e->frame_size = (uint32_t)((sizeof(tl_frame) + fn->locals_size + 15) & ~(size_t)15);
    e->slab_class = e->frame_size / 16 <= TL__FRAME_CLASSES ? (int)(e->frame_size / 16) - 1 : -1;
    e->plain = !nrefs && !fn->cleanup && fn->locals_size <= TL__PLAIN_LOCALS;
    return e;
}

int tl_register(tl_runtime *rt, const tl_func *fn)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (!fn)
        return tl__seterr(rt, TL_EINVAL, "tl_register: NULL descriptor");
    int rc = check_func(rt, fn);
    if (rc != TL_OK)
        return rc;
    tl__fn *old = find_by_name(rt, fn->name, fn->version);
    if (old) {
        if (old->fn == fn)
            return TL_OK;
        return tl__seterr(rt, TL_EEXIST, "tl_register: %s@%u is already registered "
                          "with another descriptor", fn->name, fn->version);
    }
    if (tl__fn_find(rt, fn))
        return tl__seterr(rt, TL_EEXIST, "tl_register: this descriptor is already "
                          "registered under another name or version");
    tl__fn *e = fn_entry_new(rt, fn);
    if (!e || map_reserve(rt, &rt->by_name, false) != TL_OK ||
        map_reserve(rt, &rt->by_ptr, true) != TL_OK) {
        if (e)
            fn_entry_free(rt, e);
        return tl__seterr(rt, TL_ENOMEM, "tl_register %s@%u: out of memory", fn->name, fn->version);
    }
    rc = probe_shape(rt, e);
    if (rc != TL_OK) {
        fn_entry_free(rt, e);
        return rc;
    }
    map_put(&rt->by_name, e, false);
    map_put(&rt->by_ptr, e, true);
    return TL_OK;
}

const tl_func *tl_lookup(tl_runtime *rt, const char *name, uint32_t version)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return NULL;
    if (!name) {
        tl__seterr(rt, TL_EINVAL, "tl_lookup: NULL name");
        return NULL;
    }
    tl__fn *e = find_by_name(rt, name, version);
    if (!e) {
        tl__seterr(rt, TL_ENOFUNC, "no tasklet function %s@%u is registered in this runtime",
                   name, version);
        return NULL;
    }
    return e->fn;
}

const char *tl_func_shape(tl_runtime *rt, const tl_func *fn)
{
    if (!rt || rt->magic != TL__MAGIC_RT || !fn)
        return NULL;
    tl__fn *e = tl__fn_find(rt, fn);
    return e ? e->shape : NULL;
}

static int check_lines(tl_runtime *rt, const tl__fn *e, const uint32_t *lines, size_t n)
{
    const tl_func *fn = e->fn;
    if (n != e->npoints || (n && !lines))
        return tl__seterr(rt, TL_EINVAL, "tl_register_v1_lines %s@%u: %zu lines for %u resume "
                          "points", fn->name, fn->version, n, e->npoints);
    for (size_t i = 0; i < n; i++) {
        if (lines[i] == 0)
            return tl__seterr(rt, TL_EINVAL, "tl_register_v1_lines %s@%u: line 0", fn->name,
                              fn->version);
        for (size_t j = 0; j < i; j++)
            if (lines[j] == lines[i])
                return tl__seterr(rt, TL_EINVAL, "tl_register_v1_lines %s@%u: line %u twice",
                                  fn->name, fn->version, lines[i]);
    }
    return TL_OK;
}

int tl_register_v1_lines(tl_runtime *rt, const tl_func *fn, const uint32_t *lines, size_t n)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    tl__fn *e = fn ? tl__fn_find(rt, fn) : NULL;
    if (!e)
        return tl__seterr(rt, TL_ENOFUNC, "tl_register_v1_lines: %s is not registered",
                          fn && fn->name ? fn->name : "(null)");
    int rc = check_lines(rt, e, lines, n);
    if (rc != TL_OK || n == 0)
        return rc;
    uint32_t *copy = tl__alloc(rt, n * sizeof *copy);
    if (!copy)
        return tl__seterr(rt, TL_ENOMEM, "tl_register_v1_lines: out of memory");
    memcpy(copy, lines, n * sizeof *copy);
    if (e->v1_lines)
        tl__free(rt, e->v1_lines, e->npoints * sizeof *e->v1_lines);
    e->v1_lines = copy;
    return TL_OK;
}

int tl__v1_point(const tl__fn *e, uint32_t line, uint32_t *pc)
{
    for (uint32_t k = 0; e->v1_lines && k < e->npoints; k++) {
        if (e->v1_lines[k] == line) {
            *pc = k + 1;
            return 1;
        }
    }
    return 0;
}

static const char *kind_name(char k)
{
    switch (k) {
    case TL__K_YIELD: return "yield";
    case TL__K_SEND: return "send";
    case TL__K_SEND_ERROR: return "send error";
    case TL__K_RECV: return "receive";
    case TL__K_CALL: return "call";
    case TL__K_JOIN: return "join";
    case TL__K_SLEEP: return "sleep";
    case TL__K_SELECT: return "select";
    case TL__K_MIGRATE: return "migrate";
    default: return "?";
    }
}

const char *tl__shape_describe(const char *shape, size_t n, char *buf, size_t cap)
{
    size_t len = 0;
    int k = snprintf(buf, cap, "%zu point%s", n, n == 1 ? "" : "s");
    for (size_t i = 0; k > 0 && (len += (size_t)k) < cap && i < n; i++)
        k = snprintf(buf + len, cap - len, "%s%zu %s", i ? ", " : ": ", i + 1, kind_name(shape[i]));
    if (len >= cap && cap > 4)
        memcpy(buf + cap - 4, "...", 4);
    return buf;
}

void tl__registry_free(tl_runtime *rt)
{
    for (size_t i = 0; i < rt->by_name.cap; i++) {
        tl__fn *e = rt->by_name.slots[i];
        if (e)
            fn_entry_free(rt, e);
    }
    tl__free(rt, rt->by_name.slots, rt->by_name.cap * sizeof(tl__fn *));
    tl__free(rt, rt->by_ptr.slots, rt->by_ptr.cap * sizeof(tl__fn *));
    memset(&rt->by_name, 0, sizeof rt->by_name);
    memset(&rt->by_ptr, 0, sizeof rt->by_ptr);
}
