/*
 * decode_value.c -- a value record (FORMAT.md section 1) into a tl_value.
 *
 * msgpack types map one to one onto value types; extension 1 and 2 are a
 * channel and a tasklet reference (8-byte big-endian id, resolved through
 * the id maps), extension 3 an error (4-byte code, then its message).
 * Invariants: nesting is at most 16 deep (the encoder's limit); on error
 * *out is nil and every item decoded so far is released; a reference in
 * a message (tl__unpack_value, no id maps) is refused.
 */
#include "decode.h"

static int dec_items(tl__loader *ld, const msgpack_object *o, tl_value *out, int depth)
{
    bool map = o->type == MSGPACK_OBJECT_MAP;
    size_t n = map ? o->via.map.size : o->via.array.size;
    size_t count = map ? 2 * n : n;
    tl_value *items = tl__calloc(ld->rt, (count + 1) * sizeof *items);
    int rc = items ? TL_OK : tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (size_t i = 0; i < n && rc == TL_OK; i++) {
        if (map) {
            rc = tl__dec_value(ld, &o->via.map.ptr[i].key, &items[2 * i], depth + 1);
            if (rc == TL_OK)
                rc = tl__dec_value(ld, &o->via.map.ptr[i].val, &items[2 * i + 1], depth + 1);
        } else {
            rc = tl__dec_value(ld, &o->via.array.ptr[i], &items[i], depth + 1);
        }
    }
    if (rc == TL_OK)
        rc = map ? tl_map_new(ld->rt, items, n, out) : tl_array_new(ld->rt, items, n, out);
    for (size_t i = 0; items && i < count; i++)
        tl_release(items[i]);
    tl__free(ld->rt, items, (count + 1) * sizeof *items);
    return rc;
}

static int dec_ext(tl__loader *ld, const msgpack_object *o, tl_value *out)
{
    int8_t type = o->via.ext.type;
    uint32_t n = o->via.ext.size;
    if ((type == 1 || type == 2) && n == 8) {
        uint64_t id = ext_id(o);
        void *obj = type == 1 ? (void *)tl__ld_chan(ld, id) : (void *)tl__ld_tasklet(ld, id);
        if (!obj)
            return ld->rt->errcode;
        *out = type == 1 ? tl_chan_value(obj) : tl_tasklet_value(obj);
        return TL_OK;
    }
    if (type == 3 && n >= 4) {
        const unsigned char *p = (const unsigned char *)o->via.ext.ptr;
        int32_t code = (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                                 ((uint32_t)p[2] << 8) | p[3]);
        char msg[256];
        size_t m = n - 4 < sizeof msg - 1 ? n - 4 : sizeof msg - 1;
        memcpy(msg, p + 4, m);
        msg[m] = '\0';
        *out = tl_error_value(ld->rt, code, m ? msg : NULL);
        return TL_OK;
    }
    return tl__corrupt(ld, "unknown extension type %d in a value", type);
}

int tl__dec_value(tl__loader *ld, const msgpack_object *o, tl_value *out, int depth)
{
    *out = tl_nil();
    if (depth > 16)
        return tl__corrupt(ld, "a value is nested too deep");
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return TL_OK;
    case MSGPACK_OBJECT_BOOLEAN: *out = tl_bool(o->via.boolean); return TL_OK;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = o->via.u64 > INT64_MAX ? tl_u64(o->via.u64) : tl_i64((int64_t)o->via.u64);
        return TL_OK;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = tl_i64(o->via.i64); return TL_OK;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = tl_f64(o->via.f64); return TL_OK;
    case MSGPACK_OBJECT_STR: return tl_str_new(ld->rt, o->via.str.ptr, o->via.str.size, out);
    case MSGPACK_OBJECT_BIN: return tl_bin_new(ld->rt, o->via.bin.ptr, o->via.bin.size, out);
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP: return dec_items(ld, o, out, depth);
    case MSGPACK_OBJECT_EXT: return dec_ext(ld, o, out);
    default: return tl__corrupt(ld, "unknown msgpack type in a value");
    }
}

int tl__unpack_value(tl_runtime *rt, const void *obj, tl_value *out)
{
    tl__loader ld;
    memset(&ld, 0, sizeof ld);
    ld.rt = rt;
    ld.where = "message";
    ld.import = 1; /* no id maps: a channel or tasklet reference is refused */
    return tl__dec_value(&ld, obj, out, 0);
}
