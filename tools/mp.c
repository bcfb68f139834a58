/*
 * mp.c -- msgpack that cannot hurt the tool: a pre-scan that walks the
 * bytes before msgpack-c sees them, plus small typed accessors and the
 * value rules of FORMAT.md section 1.
 *
 * Invariant: cli_mp_parse hands msgpack-c only input in which every str,
 * bin and ext fits in the bytes left, every array or map declares no more
 * items than there are bytes left to hold them (each item takes at least
 * one byte, counted over all open containers), and nesting stays within
 * msgpack-c's own limit.  So msgpack-c allocates at most one object per
 * input byte: a record claiming 4 billion items is refused up front.
 */
#include "cli.h"

#include <string.h>

static uint64_t be_uint(const unsigned char *p, unsigned width)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++)
        v = v << 8 | p[i];
    return v;
}

/* A str, bin or ext: a length of `width` bytes after the type byte, then
 * `pre` more bytes (the ext type), then the data. */
static int mp_sized(const unsigned char *p, size_t left, unsigned width,
                    unsigned pre, uint64_t *skip, cli_err *e)
{
    if (left < 1 + (size_t)width)
        return cli_fail(e, "truncated length");
    *skip = 1 + width + pre + be_uint(p + 1, width);
    return 0;
}

static int mp_container(const unsigned char *p, size_t left, unsigned width,
                        unsigned per_item, uint64_t *skip, uint64_t *items, cli_err *e)
{
    if (left < 1 + (size_t)width)
        return cli_fail(e, "truncated count");
    *skip = 1 + width;
    *items = per_item * be_uint(p + 1, width);
    return 0;
}

/* The size of the value's header and payload (skip) and the items it
 * declares when it is an array (n) or a map (2n). */
static int mp_head(const unsigned char *p, size_t left, uint64_t *skip,
                   uint64_t *items, cli_err *e)
{
    unsigned b = p[0];
    *items = 0;
    *skip = 1;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;
    if (b >= 0xa0 && b <= 0xbf)
        return *skip = 1 + (b & 0x1f), 0;
    if (b >= 0x80 && b <= 0x9f)
        return *items = (b & 0x0f) * (b < 0x90 ? 2u : 1u), 0;
    if (b >= 0xc4 && b <= 0xc6)
        return mp_sized(p, left, 1u << (b - 0xc4), 0, skip, e);
    if (b >= 0xc7 && b <= 0xc9)
        return mp_sized(p, left, 1u << (b - 0xc7), 1, skip, e);
    if (b >= 0xd9 && b <= 0xdb)
        return mp_sized(p, left, 1u << (b - 0xd9), 0, skip, e);
    if (b == 0xca || b == 0xcb)
        return *skip = b == 0xca ? 5 : 9, 0;
    if (b >= 0xcc && b <= 0xd3)
        return *skip = 1 + (1u << ((b - 0xcc) & 3)), 0;
    if (b >= 0xd4 && b <= 0xd8)
        return *skip = 2 + (1u << (b - 0xd4)), 0;
    if (b == 0xdc || b == 0xdd)
        return mp_container(p, left, b == 0xdc ? 2 : 4, 1, skip, items, e);
    if (b == 0xde || b == 0xdf)
        return mp_container(p, left, b == 0xde ? 2 : 4, 2, skip, items, e);
    return cli_fail(e, "invalid type byte 0x%02x", b);
}

int cli_mp_prescan(const unsigned char *p, size_t n, size_t *used, cli_err *e)
{
    uint64_t todo[CLI_MP_DEPTH + 1], pending = 1, skip, items;
    int top = 0;
    size_t pos = 0;
    todo[0] = 1;
    while (top >= 0) {
        if (todo[top] == 0) {
            top--;
            continue;
        }
        todo[top]--;
        pending--;
        if (pos >= n)
            return cli_fail(e, "msgpack truncated at offset %zu (%zu bytes)", pos, n);
        if (mp_head(p + pos, n - pos, &skip, &items, e) < 0)
            return cli_wrap(e, "msgpack at offset %zu", pos);
        if (skip > n - pos)
            return cli_fail(e, "msgpack truncated: the value at offset %zu needs %llu bytes, "
                            "%zu are left", pos, (unsigned long long)skip, n - pos);
        pos += skip;
        if (items == 0)
            continue;
        if (items + pending > n - pos)
            return cli_fail(e, "msgpack at offset %zu declares %llu items but only %zu "
                            "bytes are left", (size_t)(pos - skip), (unsigned long long)items,
                            n - pos);
        if (top == CLI_MP_DEPTH)
            return cli_fail(e, "msgpack nested deeper than %d at offset %zu", CLI_MP_DEPTH,
                            (size_t)(pos - skip)); /* skip <= pos: a size_t */
        todo[++top] = items;
        pending += items;
    }
    *used = pos;
    return 0;
}

int cli_mp_parse(const unsigned char *p, size_t n, msgpack_unpacked *up, cli_err *e)
{
    size_t used = 0, off = 0;
    msgpack_unpacked_init(up);
    if (cli_mp_prescan(p, n, &used, e) < 0)
        return -1;
    if (used != n)
        return cli_fail(e, "%zu stray bytes after the msgpack value (%zu bytes)", n - used, n);
    msgpack_unpack_return r = msgpack_unpack_next(up, (const char *)p, n, &off);
    if (r == MSGPACK_UNPACK_SUCCESS && off == n)
        return 0;
    msgpack_unpacked_destroy(up);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR)
        return cli_fail(e, "msgpack-c ran out of memory");
    return cli_fail(e, "msgpack-c rejects the value (code %d)", (int)r);
}

/* ---- accessors ---- */

const msgpack_object *cli_mp_get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (cli_mp_streq(&map->via.map.ptr[i].key, key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

bool cli_mp_uint(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

bool cli_mp_int(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > INT64_MAX)
        return false;
    *out = (int64_t)o->via.u64;
    return true;
}

bool cli_mp_streq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n
           && !memcmp(o->via.str.ptr, s, n);
}

const char *cli_mp_typename(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative int";
    case MSGPACK_OBJECT_FLOAT32: return "float 32";
    case MSGPACK_OBJECT_FLOAT64: return "float 64";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "unknown type";
}

uint64_t cli_mp_ext_id(const msgpack_object *o)
{
    return be_uint((const unsigned char *)o->via.ext.ptr, 8);
}

int32_t cli_mp_ext_code(const msgpack_object *o)
{
    uint32_t u = (uint32_t)be_uint((const unsigned char *)o->via.ext.ptr, 4);
    return u <= INT32_MAX ? (int32_t)u : -(int32_t)(UINT32_MAX - u) - 1;
}

/* ---- values (FORMAT.md section 1) ---- */

static int check_ext(const msgpack_object *v, cli_err *e)
{
    int type = v->via.ext.type;
    uint32_t size = v->via.ext.size;
    if ((type == 1 || type == 2) && size != 8)
        return cli_fail(e, "%s reference of %u bytes (must be 8)",
                        type == 1 ? "channel" : "tasklet", size);
    if (type == 3 && size < 4)
        return cli_fail(e, "error value of %u bytes (needs a 4-byte code)", size);
    if (type < 1 || type > 3)
        return cli_fail(e, "unknown ext type %d", type);
    return 0;
}

int cli_check_value(const msgpack_object *v, cli_err *e)
{
    if (v->type == MSGPACK_OBJECT_EXT)
        return check_ext(v, e);
    if (v->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < v->via.array.size; i++)
            if (cli_check_value(&v->via.array.ptr[i], e) < 0)
                return cli_wrap(e, "item %u", i);
    }
    if (v->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < v->via.map.size; i++)
            if (cli_check_value(&v->via.map.ptr[i].key, e) < 0
                || cli_check_value(&v->via.map.ptr[i].val, e) < 0)
                return cli_wrap(e, "map entry %u", i);
    }
    return 0;
}

void cli_value_refs(const msgpack_object *v, cli_ref_fn fn, void *ud)
{
    if (v->type == MSGPACK_OBJECT_EXT && (v->via.ext.type == 1 || v->via.ext.type == 2)
        && v->via.ext.size == 8)
        fn(ud, v->via.ext.type, cli_mp_ext_id(v));
    if (v->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < v->via.array.size; i++)
            cli_value_refs(&v->via.array.ptr[i], fn, ud);
    if (v->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < v->via.map.size; i++) {
            cli_value_refs(&v->via.map.ptr[i].key, fn, ud);
            cli_value_refs(&v->via.map.ptr[i].val, fn, ud);
        }
}
