/*
 * decode_frame.c -- a chunk's function table and each frame record.
 *
 * A tasklet chunk lists its functions once as [name, version, schema];
 * each is resolved to a registered function (or an upgrade to one) and
 * its schema matched field by field against the program's, once per
 * chunk (match_fields: FIELD_SAME, FIELD_CHANGED or FIELD_ABSENT).  A
 * frame record [func, pc, flags, locals] then fills the frame's locals by
 * field name: an added field stays zero, a removed one is ignored, one
 * whose type changed needs an upgrade (TL_ESCHEMA otherwise).
 * Invariants: a frame's function index is below the table's size; a
 * local is written only through its field's offset and size, after its
 * type is checked; references in locals are retained for the frame.
 */
#include "decode.h"

#include <stdio.h>

/* How a schema field of the program's function appears in the snapshot. */
enum { FIELD_ABSENT, FIELD_SAME, FIELD_CHANGED };

/* Matches the program's schema against the snapshot's, once per chunk. */
static int match_fields(tl__loader *ld, tl__fnref *r)
{
    const tl_func *fn = r->e->fn;
    r->match = tl__calloc(ld->rt, fn->nfields + 1);
    if (!r->match)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (size_t i = 0; i < fn->nfields; i++) {
        for (uint32_t j = 0; j < r->fields->via.array.size; j++) {
            const msgpack_object *fd = &r->fields->via.array.ptr[j];
            if (!is_array(fd, 2) || !str_is(&fd->via.array.ptr[0], fn->fields[i].name))
                continue;
            r->match[i] = str_is(&fd->via.array.ptr[1], tl__type_names[fn->fields[i].type])
                              ? FIELD_SAME : FIELD_CHANGED;
            break;
        }
    }
    return TL_OK;
}

/* Format 2 stores each function's shape: a frame of name@version may
 * resume only under a function of the same shape, else a point of one
 * kind would continue at another (or at none). */
static int check_shape(tl__loader *ld, const tl__fnref *r, const msgpack_object *shape)
{
    const tl__fn *e = r->e;
    size_t n = shape->via.str.size;
    char mine[256], theirs[256];
    if (n == e->npoints && memcmp(shape->via.str.ptr, e->shape, n) == 0)
        return TL_OK;
    return tl__seterr(ld->rt, TL_ESHAPE, "%s: %s changed shape: the snapshot's frames stopped "
                      "in a function of %s; this program's %s has %s.  Resuming them would "
                      "continue at the wrong point.  Bump the function's version and register "
                      "an upgrade from %s that maps the old resume points "
                      "(tl_register_upgrade), or restore with the build that wrote the snapshot",
                      ld->where, r->label,
                      tl__shape_describe(shape->via.str.ptr, n, theirs, sizeof theirs),
                      r->label, tl__shape_describe(e->shape, e->npoints, mine, sizeof mine),
                      r->label);
}

/* "name@version" into label (snprintf's "%s@%u", which cost a tenth of
 * a moving tasklet's import). */
static void label_of(char *label, size_t cap, const char *name, uint32_t version)
{
    char digits[10];
    size_t n = strlen(name), k = 0;
    do {
        digits[k++] = (char)('0' + version % 10);
        version /= 10;
    } while (version);
    if (n + 1 + k >= cap)
        n = cap - 2 - k; /* the name truncated, the version kept */
    memcpy(label, name, n);
    label[n++] = '@';
    while (k)
        label[n++] = digits[--k];
    label[n] = '\0';
}

static int resolve_func(tl__loader *ld, const msgpack_object *f, tl__fnref *r)
{
    const msgpack_object *a = f->via.array.ptr;
    char name[128];
    uint32_t items = ld->format >= 2 ? 4 : 3; /* format 2 adds the shape */
    if (f->type != MSGPACK_OBJECT_ARRAY || f->via.array.size != items ||
        a[0].type != MSGPACK_OBJECT_STR || a[0].via.str.size >= sizeof name ||
        !is_uint(&a[1]) || a[1].via.u64 > UINT32_MAX || !is_array(&a[2], UINT32_MAX) ||
        (items == 4 && (a[3].type != MSGPACK_OBJECT_STR || a[3].via.str.size > TL__MAX_POINTS)))
        return tl__corrupt(ld, "a function entry is malformed");
    memcpy(name, a[0].via.str.ptr, a[0].via.str.size);
    name[a[0].via.str.size] = '\0';
    uint32_t version = (uint32_t)a[1].via.u64;
    label_of(r->label, sizeof r->label, name, version);
    r->fields = &a[2];
    const tl_func *fn = tl_lookup(ld->rt, name, version);
    if (!fn) {
        r->up = tl__find_upgrade(ld->rt, name, strlen(name), version);
        if (!r->up)
            return tl__seterr(ld->rt, TL_ENOFUNC, "%s needs function %s, which this program "
                              "does not register (and no upgrade from it is registered)",
                              ld->where, r->label);
        fn = r->up->to;
    }
    r->e = tl__fn_find(ld->rt, fn);
    if (!r->e)
        return tl__seterr(ld->rt, TL_ENOFUNC, "%s: upgrade target of %s is not registered",
                          ld->where, r->label);
    if (items == 4 && !r->up) {
        int rc = check_shape(ld, r, &a[3]);
        if (rc != TL_OK)
            return rc;
    }
    return match_fields(ld, r);
}

int tl__resolve_funcs(tl__loader *ld, tl__doc *d)
{
    const msgpack_object *funcs = map_get(&d->up.data, "funcs");
    int rc = TL_OK;
    if (!funcs || !is_array(funcs, UINT32_MAX))
        return tl__corrupt(ld, "tasklet chunk %llu has no function table",
                           (unsigned long long)d->key);
    d->nfuncs = funcs->via.array.size;
    d->funcs = tl__calloc(ld->rt, (d->nfuncs + 1) * sizeof *d->funcs);
    if (!d->funcs)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (size_t i = 0; i < d->nfuncs && rc == TL_OK; i++)
        rc = resolve_func(ld, &funcs->via.array.ptr[i], &d->funcs[i]);
    return rc;
}
/* ---- pass 3: frames and locals ---- */

static const msgpack_object *snapshot_type(const tl__fnref *r, const char *field)
{
    for (uint32_t i = 0; i < r->fields->via.array.size; i++) {
        const msgpack_object *fd = &r->fields->via.array.ptr[i];
        if (is_array(fd, 2) && str_is(&fd->via.array.ptr[0], field))
            return &fd->via.array.ptr[1];
    }
    return NULL;
}

static int dec_ref_field(tl__loader *ld, const tl_field *fd, const msgpack_object *o, void *p)
{
    int chan = fd->type == TL_T_CHAN;
    if (o->type == MSGPACK_OBJECT_NIL)
        return TL_OK;
    if (o->type != MSGPACK_OBJECT_EXT || o->via.ext.type != (chan ? 1 : 2) || o->via.ext.size != 8)
        return tl__corrupt(ld, "field '%s' does not hold a %s reference",
                           fd->name, chan ? "channel" : "tasklet");
    uint64_t id = ext_id(o);
    if (id == 0) { /* the program's handle was stale: it stays so */
        *(void **)p = tl__stale_handle(ld->rt, chan);
        return *(void **)p ? TL_OK : tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    }
    void *obj = chan ? (void *)tl__ld_chan(ld, id) : (void *)tl__ld_tasklet(ld, id);
    if (!obj)
        return ld->rt->errcode;
    if (chan)
        *(tl_chan **)p = tl__chan_handle(tl_chan_retain(obj));
    else
        *(tl_tasklet **)p = tl__tasklet_handle(tl_tasklet_retain(obj));
    return TL_OK;
}

static int dec_field(tl__loader *ld, const tl_field *fd, const msgpack_object *o, char *locals)
{
    void *p = locals + fd->offset;
    int64_t i;
    switch (fd->type) {
    case TL_T_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN) break;
        *(unsigned char *)p = o->via.boolean;
        return TL_OK;
    case TL_T_I32:
    case TL_T_I64:
        if (!is_int(o)) break;
        i = as_int(o);
        if (fd->type == TL_T_I32) {
            if (i < INT32_MIN || i > INT32_MAX) break;
            int32_t x = (int32_t)i;
            memcpy(p, &x, 4);
        } else {
            memcpy(p, &i, 8);
        }
        return TL_OK;
    case TL_T_U32:
    case TL_T_U64:
        if (!is_uint(o) || (fd->type == TL_T_U32 && o->via.u64 > UINT32_MAX)) break;
        if (fd->type == TL_T_U32) {
            uint32_t x = (uint32_t)o->via.u64;
            memcpy(p, &x, 4);
        } else {
            memcpy(p, &o->via.u64, 8);
        }
        return TL_OK;
    case TL_T_F64:
        if (o->type != MSGPACK_OBJECT_FLOAT64 && o->type != MSGPACK_OBJECT_FLOAT32) break;
        memcpy(p, &o->via.f64, 8);
        return TL_OK;
    case TL_T_VALUE: return tl__dec_value(ld, o, (tl_value *)p, 0);
    case TL_T_CHAN:
    case TL_T_TASKLET: return dec_ref_field(ld, fd, o, p);
    case TL_T_CASES: return TL_OK; /* scratch; a select's come from extra.sel */
    default:
        if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != fd->size) break;
        memcpy(p, o->via.bin.ptr, fd->size);
        return TL_OK;
    }
    return tl__corrupt(ld, "field '%s' holds a value of the wrong kind for %s",
                       fd->name, tl__type_names[fd->type]);
}

/* The value of field i in a locals map: written in schema order, so item
 * i is almost always it. */
static const msgpack_object *local_value(const msgpack_object *map, size_t i, const char *name)
{
    if (i < map->via.map.size && str_is(&map->via.map.ptr[i].key, name))
        return &map->via.map.ptr[i].val;
    return map_get(map, name);
}

/* Fills the locals of a frame of r->e from the snapshot's map, by name. */
static int dec_locals(tl__loader *ld, const tl__fnref *r, const msgpack_object *map, char *locals)
{
    const tl_func *fn = r->e->fn;
    for (size_t i = 0; i < fn->nfields; i++) {
        const tl_field *fd = &fn->fields[i];
        if (r->match[i] == FIELD_ABSENT)
            continue; /* added field: stays zero */
        if (r->match[i] == FIELD_CHANGED) {
            if (r->up)
                continue; /* the upgrade maps it */
            const msgpack_object *type = snapshot_type(r, fd->name);
            return tl__seterr(ld->rt, TL_ESCHEMA, "%s: field '%s' of %s changed type (the "
                              "snapshot has %.*s, the program %s); register an upgrade or a "
                              "new version", ld->where, fd->name, r->label,
                              type->type == MSGPACK_OBJECT_STR ? (int)type->via.str.size : 1,
                              type->type == MSGPACK_OBJECT_STR ? type->via.str.ptr : "?",
                              tl__type_names[fd->type]);
        }
        const msgpack_object *val = local_value(map, i, fd->name);
        if (!val)
            continue;
        int rc = dec_field(ld, fd, val, locals);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

/* Format 1 stored a source line as the resume point: the program's line
 * table (tl_register_v1_lines) maps it.  An upgrade gets the line. */
static int v1_point(tl__loader *ld, const tl__fnref *r, tl_frame *f)
{
    if (ld->format != 1 || f->h.pc == 0 || r->up || tl__v1_point(r->e, f->h.pc, &f->h.pc))
        return TL_OK;
    return tl__seterr(ld->rt, TL_EBADPC, "%s: a frame of %s stopped at line %u (format 1 "
                      "numbered resume points by source line); give the lines of its "
                      "suspending macros in that build with tl_register_v1_lines, or register "
                      "an upgrade (docs/FORMAT.md, \"From format 1 to format 2\")", ld->where,
                      r->label, f->h.pc);
}

int tl__dec_frame(tl__loader *ld, tl__doc *d, tl_tasklet *t, const msgpack_object *fo)
{
    const msgpack_object *a = fo->via.array.ptr;
    if (!is_array(fo, 4) || !is_uint(&a[0]) || a[0].via.u64 >= d->nfuncs || !is_uint(&a[1]) ||
        a[1].via.u64 > UINT32_MAX || !is_uint(&a[2]) || a[3].type != MSGPACK_OBJECT_MAP)
        return tl__corrupt(ld, "a frame of tasklet #%llu is malformed", (unsigned long long)t->id);
    const tl__fnref *r = &d->funcs[a[0].via.u64];
    tl_frame *f = tl__frame_new(ld->rt, t, r->e);
    if (!f)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory for a frame", ld->where);
    f->h.pc = (uint32_t)a[1].via.u64;
    f->h.flags = (uint32_t)a[2].via.u64 & (TL__F_ERR | TL__F_CATCH);
    int rc = v1_point(ld, r, f);
    if (rc == TL_OK)
        rc = dec_locals(ld, r, &a[3], TL__LOCALS(f));
    if (rc == TL_OK && r->up)
        rc = tl__run_upgrade(ld, r, &a[3], TL__LOCALS(f), &f->h.pc);
    /* a resume point the function has (0 is its start): any other would
     * reach its default case, or one of the probe cases tl_register asks
     * (pc TL__PROBE + k), which return without running the function */
    if (rc == TL_OK && f->h.pc > r->e->npoints)
        rc = tl__seterr(ld->rt, TL_EBADPC, "%s: a frame of tasklet #%llu stopped at resume "
                        "point %u, which %s@%u does not have (it has %u)", ld->where,
                        (unsigned long long)t->id, f->h.pc, r->e->fn->name, r->e->fn->version,
                        r->e->npoints);
    return rc;
}

int tl__dec_locals_own(tl__loader *ld, const tl__fn *e, const msgpack_object *map, char *locals)
{
    tl__fnref r;
    memset(&r, 0, sizeof r);
    r.e = e;
    r.match = tl__alloc(ld->rt, e->fn->nfields + 1);
    if (!r.match)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    memset(r.match, FIELD_SAME, e->fn->nfields + 1);
    snprintf(r.label, sizeof r.label, "%s@%u", e->fn->name, e->fn->version);
    int rc = map->type == MSGPACK_OBJECT_MAP ? dec_locals(ld, &r, map, locals)
                                              : tl__corrupt(ld, "locals are not a map");
    tl__free(ld->rt, r.match, e->fn->nfields + 1);
    return rc;
}
