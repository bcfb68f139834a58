/*
 * value.c -- tl_value: msgpack's data model plus channel, tasklet and
 * error references.
 *
 * Scalars live in the 16-byte value.  Strings, binaries, arrays and maps
 * point to an immutable tl__obj with a reference count (not atomic: a
 * runtime is driven by one thread at a time) and the runtime whose
 * allocator made it.  An error value's pointer is a string object holding
 * the message, or NULL.
 */
#include "internal.h"

#include <string.h>

typedef struct tl__obj {
    uint32_t refs;
    uint32_t reserved;
    tl_runtime *rt;
    size_t n;     /* bytes (str/bin), items (array) or pairs (map) */
    size_t bytes; /* allocation size */
} tl__obj;

#define OBJ(v) ((tl__obj *)(v).as.p)
#define OBJ_BYTES(o) ((char *)((o) + 1))
#define OBJ_ITEMS(o) ((tl_value *)(void *)((o) + 1))

/* Doubles convert with saturation (NaN gives 0): a plain cast of an
 * out-of-range double is undefined behaviour, and values come from files
 * and peers. */
static int64_t f64_to_i64(double d)
{
    if (d != d)
        return 0;
    if (d >= 9223372036854775807.0)
        return INT64_MAX;
    if (d <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

int64_t tl_as_i64(tl_value v)
{
    switch (v.type) {
    case TL_V_INT: return v.as.i;
    case TL_V_UINT: return (int64_t)v.as.u;
    case TL_V_DOUBLE: return f64_to_i64(v.as.d);
    case TL_V_BOOL: return v.as.b;
    default: return 0;
    }
}

uint64_t tl_as_u64(tl_value v)
{
    switch (v.type) {
    case TL_V_INT: return (uint64_t)v.as.i;
    case TL_V_UINT: return v.as.u;
    case TL_V_DOUBLE:
        if (!(v.as.d > 0))
            return 0; /* and NaN */
        return v.as.d >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v.as.d;
    case TL_V_BOOL: return (uint64_t)v.as.b;
    default: return 0;
    }
}

double tl_as_f64(tl_value v)
{
    switch (v.type) {
    case TL_V_INT: return (double)v.as.i;
    case TL_V_UINT: return (double)v.as.u;
    case TL_V_DOUBLE: return v.as.d;
    default: return 0.0;
    }
}

int tl_as_bool(tl_value v)
{
    switch (v.type) {
    case TL_V_NIL: return 0;
    case TL_V_BOOL: return v.as.b;
    case TL_V_INT: return v.as.i != 0;
    case TL_V_UINT: return v.as.u != 0;
    case TL_V_DOUBLE: return v.as.d != 0.0;
    default: return 1;
    }
}

static tl__obj *obj_new(tl_runtime *rt, size_t n, size_t payload)
{
    size_t bytes = sizeof(tl__obj) + payload;
    tl__obj *o = tl__alloc(rt, bytes);
    if (!o)
        return NULL;
    o->refs = 1;
    o->reserved = 0;
    o->rt = rt;
    o->n = n;
    o->bytes = bytes;
    return o;
}

static int bytes_new(tl_runtime *rt, int type, const void *p, size_t n,
                     tl_value *out)
{
    if (!rt || rt->magic != TL__MAGIC_RT || !out)
        return TL_EMISUSE;
    if (!p && n)
        return tl__seterr(rt, TL_EINVAL, "tl_str_new: NULL data with length %zu", n);
    if (n > UINT32_MAX)
        return tl__seterr(rt, TL_ERANGE, "tl_str_new: %zu bytes exceed the 4 GiB limit", n);
    tl__obj *o = obj_new(rt, n, n + 1);
    if (!o)
        return tl__seterr(rt, TL_ENOMEM, "tl_str_new: out of memory for %zu bytes", n);
    if (n)
        memcpy(OBJ_BYTES(o), p, n);
    OBJ_BYTES(o)[n] = '\0';
    *out = tl_nil();
    out->type = (uint8_t)type;
    out->as.p = o;
    return TL_OK;
}

int tl_str_new(tl_runtime *rt, const char *s, size_t n, tl_value *out)
{
    return bytes_new(rt, TL_V_STR, s, n, out);
}

int tl_bin_new(tl_runtime *rt, const void *p, size_t n, tl_value *out)
{
    return bytes_new(rt, TL_V_BIN, p, n, out);
}

const char *tl_str_data(tl_value v, size_t *len)
{
    if ((v.type != TL_V_STR && v.type != TL_V_BIN) || !v.as.p) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = OBJ(v)->n;
    return OBJ_BYTES(OBJ(v));
}

static int items_new(tl_runtime *rt, int type, const tl_value *items,
                     size_t nitems, size_t n, tl_value *out)
{
    if (!rt || rt->magic != TL__MAGIC_RT || !out)
        return TL_EMISUSE;
    if (!items && nitems)
        return tl__seterr(rt, TL_EINVAL, "tl_array_new/tl_map_new: NULL items");
    if (nitems > UINT32_MAX)
        return tl__seterr(rt, TL_ERANGE, "tl_array_new/tl_map_new: too many items");
    tl__obj *o = obj_new(rt, n, nitems * sizeof(tl_value));
    if (!o)
        return tl__seterr(rt, TL_ENOMEM, "tl_array_new/tl_map_new: out of memory");
    for (size_t i = 0; i < nitems; i++)
        OBJ_ITEMS(o)[i] = tl_retain(items[i]);
    *out = tl_nil();
    out->type = (uint8_t)type;
    out->as.p = o;
    return TL_OK;
}

int tl_array_new(tl_runtime *rt, const tl_value *items, size_t n, tl_value *out)
{
    return items_new(rt, TL_V_ARRAY, items, n, n, out);
}

int tl_map_new(tl_runtime *rt, const tl_value *kv, size_t npairs, tl_value *out)
{
    if (npairs > SIZE_MAX / 2)
        return TL_ERANGE;
    return items_new(rt, TL_V_MAP, kv, 2 * npairs, npairs, out);
}

size_t tl_len(tl_value v)
{
    switch (v.type) {
    case TL_V_STR:
    case TL_V_BIN:
    case TL_V_ARRAY:
    case TL_V_MAP:
        return OBJ(v)->n;
    default:
        return 0;
    }
}

tl_value tl_array_at(tl_value v, size_t i)
{
    if (v.type != TL_V_ARRAY || i >= OBJ(v)->n)
        return tl_nil();
    return OBJ_ITEMS(OBJ(v))[i];
}

tl_value tl_map_key(tl_value v, size_t i)
{
    if (v.type != TL_V_MAP || i >= OBJ(v)->n)
        return tl_nil();
    return OBJ_ITEMS(OBJ(v))[2 * i];
}

tl_value tl_map_val(tl_value v, size_t i)
{
    if (v.type != TL_V_MAP || i >= OBJ(v)->n)
        return tl_nil();
    return OBJ_ITEMS(OBJ(v))[2 * i + 1];
}

int tl_map_get(tl_value map, tl_value key, tl_value *out)
{
    size_t n = map.type == TL_V_MAP ? OBJ(map)->n : 0;
    for (size_t i = 0; i < n; i++) {
        if (tl_equal(OBJ_ITEMS(OBJ(map))[2 * i], key)) {
            if (out)
                *out = OBJ_ITEMS(OBJ(map))[2 * i + 1];
            return 1;
        }
    }
    return 0;
}

static int items_equal(tl_value a, tl_value b, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!tl_equal(OBJ_ITEMS(OBJ(a))[i], OBJ_ITEMS(OBJ(b))[i]))
            return 0;
    return 1;
}

int tl_equal(tl_value a, tl_value b)
{
    if (a.type != b.type)
        return 0;
    switch (a.type) {
    case TL_V_NIL: return 1;
    case TL_V_BOOL: return a.as.b == b.as.b;
    case TL_V_INT: return a.as.i == b.as.i;
    case TL_V_UINT: return a.as.u == b.as.u;
    case TL_V_DOUBLE: return a.as.d == b.as.d;
    case TL_V_STR:
    case TL_V_BIN:
        return OBJ(a)->n == OBJ(b)->n &&
               memcmp(OBJ_BYTES(OBJ(a)), OBJ_BYTES(OBJ(b)), OBJ(a)->n) == 0;
    case TL_V_ARRAY:
        return OBJ(a)->n == OBJ(b)->n && items_equal(a, b, OBJ(a)->n);
    case TL_V_MAP:
        return OBJ(a)->n == OBJ(b)->n && items_equal(a, b, 2 * OBJ(a)->n);
    case TL_V_ERROR:
        return a.aux == b.aux;
    default:
        return a.as.p == b.as.p;
    }
}

/* A value holds the bare object (internal.h, "handles"); the program
 * gets handles from tl_as_chan and tl_as_tasklet. */
tl_value tl_chan_value(tl_chan *h)
{
    tl_value v = tl_nil();
    tl_chan *ch = tl__chan_at(h);
    if (!ch) {
        if (h)
            tl__bad_chan(h, "tl_chan_value");
        return v;
    }
    v.type = TL_V_CHAN;
    v.as.p = tl_chan_retain(ch);
    return v;
}

tl_value tl_tasklet_value(tl_tasklet *h)
{
    tl_value v = tl_nil();
    tl_tasklet *t = tl__tasklet_at(h);
    if (!t) {
        if (h)
            tl__bad_tasklet(h, "tl_tasklet_value");
        return v;
    }
    v.type = TL_V_TASKLET;
    v.as.p = tl_tasklet_retain(t);
    return v;
}

tl_chan *tl_as_chan(tl_value v)
{
    return v.type == TL_V_CHAN ? tl__chan_handle(v.as.p) : NULL;
}

tl_tasklet *tl_as_tasklet(tl_value v)
{
    return v.type == TL_V_TASKLET ? tl__tasklet_handle(v.as.p) : NULL;
}

tl_value tl_error_value(tl_runtime *rt, int code, const char *msg)
{
    tl_value v = tl_nil();
    v.type = TL_V_ERROR;
    v.aux = code < 0 ? code : TL_EINVAL;
    if (msg && rt && rt->magic == TL__MAGIC_RT) {
        tl_value s;
        if (bytes_new(rt, TL_V_STR, msg, strlen(msg), &s) == TL_OK)
            v.as.p = s.as.p;
    }
    return v;
}

int tl_error_code(tl_value v) { return v.type == TL_V_ERROR ? v.aux : TL_OK; }

const char *tl_error_msg(tl_value v)
{
    if (v.type != TL_V_ERROR || !v.as.p)
        return NULL;
    return OBJ_BYTES(OBJ(v));
}

void tl__retain_slow(tl_value v)
{
    switch (v.type) {
    case TL_V_CHAN: tl_chan_retain(v.as.p); break;
    case TL_V_TASKLET: tl_tasklet_retain(v.as.p); break;
    default:
        if (v.as.p)
            OBJ(v)->refs++;
    }
}

static void obj_free(tl_value v)
{
    tl__obj *o = OBJ(v);
    if (v.type == TL_V_ARRAY || v.type == TL_V_MAP) {
        size_t count = v.type == TL_V_MAP ? 2 * o->n : o->n;
        for (size_t i = 0; i < count; i++)
            tl_release(OBJ_ITEMS(o)[i]);
    }
    tl__free(o->rt, o, o->bytes);
}

void tl__release_slow(tl_value v)
{
    switch (v.type) {
    case TL_V_CHAN: tl_chan_release(v.as.p); break;
    case TL_V_TASKLET: tl_tasklet_release(v.as.p); break;
    default:
        if (v.as.p && --OBJ(v)->refs == 0)
            obj_free(v);
    }
}
