/*
 * render_value.c -- values (FORMAT.md section 1) as readable text and as
 * JSON built with jansson.
 *
 * Text: nil, true, 42, 0.5, "str" (escaped; long ones cut after 200
 * bytes), bin as 0x-hex (long ones cut after 64 bytes), [a, b], {k: v}, chan#N, tasklet#N, error(code, "msg").
 * JSON: scalars as themselves; everything msgpack has and JSON has not is
 * an object with one tag key: {"bin": hex}, {"map": [[k, v], ...]},
 * {"chan": N}, {"tasklet": N}, {"error": {"code", "msg"}},
 * {"ext": type, "data": hex}, {"float": "nan"|"inf"|"-inf"}.  A uint
 * beyond int64 is a decimal string.  Invalid UTF-8 is never emitted: text
 * escapes it as \xNN, JSON replaces it with U+FFFD.
 */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_BIN_MAX 64
#define TEXT_STR_MAX 200

/* The length (1-4) of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp, min;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2, cp = p[0] & 0x1f, min = 0x80;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, cp = p[0] & 0x0f, min = 0x800;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, cp = p[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static void text_byte(cli_buf *b, unsigned char c, bool quote)
{
    const char *esc = NULL;
    if (c == '\n')
        esc = "\\n";
    else if (c == '\t')
        esc = "\\t";
    else if (c == '\r')
        esc = "\\r";
    else if ((c == '"' || c == '\\') && quote)
        esc = c == '"' ? "\\\"" : "\\\\";
    if (esc)
        cli_buf_put(b, esc, 2);
    else if (c < 0x20 || c >= 0x7f)
        cli_buf_printf(b, "\\x%02x", c);
    else
        cli_buf_put(b, (const char *)&c, 1);
}

void cli_text_str(cli_buf *b, const char *p, size_t n, bool quote)
{
    const unsigned char *u = (const unsigned char *)p;
    if (quote)
        cli_buf_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t len = u[i] >= 0x80 ? utf8_len(u + i, n - i) : 0;
        if (len) {
            cli_buf_put(b, p + i, len);
            i += len;
        } else {
            text_byte(b, u[i++], quote);
        }
    }
    if (quote)
        cli_buf_put(b, "\"", 1);
}

static void hex_put(cli_buf *b, const char *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        char two[2] = {digits[(unsigned char)p[i] >> 4], digits[(unsigned char)p[i] & 15]};
        cli_buf_put(b, two, 2);
    }
}

static void bin_text(cli_buf *b, const char *p, size_t n)
{
    cli_buf_put(b, "0x", 2);
    hex_put(b, p, n < TEXT_BIN_MAX ? n : TEXT_BIN_MAX);
    if (n > TEXT_BIN_MAX)
        cli_buf_printf(b, "... (%zu bytes)", n);
}

static void str_text(cli_buf *b, const char *p, size_t n)
{
    size_t cut = n;
    if (n > TEXT_STR_MAX) {
        cut = TEXT_STR_MAX;
        while (cut > 0 && ((unsigned char)p[cut] & 0xc0) == 0x80)
            cut--; /* not inside a UTF-8 sequence */
    }
    cli_text_str(b, p, cut, true);
    if (cut < n)
        cli_buf_printf(b, "... (%zu bytes)", n);
}

/* The shortest %g that reads back as d, marked as a float. */
static void float_text(cli_buf *b, double d)
{
    char s[40];
    if (isnan(d) || isinf(d)) {
        cli_buf_printf(b, "%s", isnan(d) ? "nan" : d > 0 ? "inf" : "-inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, d);
        if (strtod(s, NULL) == d)
            break;
    }
    cli_buf_printf(b, "%s%s", s, strpbrk(s, ".e") ? "" : ".0");
}

static void ext_text(cli_buf *b, const msgpack_object *v)
{
    const msgpack_object_ext *x = &v->via.ext;
    if ((x->type == 1 || x->type == 2) && x->size == 8) {
        cli_buf_printf(b, "%s#%llu", x->type == 1 ? "chan" : "tasklet",
                       (unsigned long long)cli_mp_ext_id(v));
    } else if (x->type == 3 && x->size >= 4) {
        cli_buf_printf(b, "error(%d, ", (int)cli_mp_ext_code(v));
        cli_text_str(b, x->ptr + 4, x->size - 4, true);
        cli_buf_put(b, ")", 1);
    } else {
        cli_buf_printf(b, "ext(%d, ", x->type);
        bin_text(b, x->ptr, x->size);
        cli_buf_put(b, ")", 1);
    }
}

static void container_text(cli_buf *b, const msgpack_object *v)
{
    bool map = v->type == MSGPACK_OBJECT_MAP;
    uint32_t n = map ? v->via.map.size : v->via.array.size;
    cli_buf_put(b, map ? "{" : "[", 1);
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            cli_buf_put(b, ", ", 2);
        if (map) {
            cli_value_text(b, &v->via.map.ptr[i].key);
            cli_buf_put(b, ": ", 2);
            cli_value_text(b, &v->via.map.ptr[i].val);
        } else {
            cli_value_text(b, &v->via.array.ptr[i]);
        }
    }
    cli_buf_put(b, map ? "}" : "]", 1);
}

void cli_value_text(cli_buf *b, const msgpack_object *v)
{
    switch (v->type) {
    case MSGPACK_OBJECT_NIL: cli_buf_put(b, "nil", 3); break;
    case MSGPACK_OBJECT_BOOLEAN: cli_buf_printf(b, "%s", v->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: cli_buf_printf(b, "%llu", (unsigned long long)v->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: cli_buf_printf(b, "%lld", (long long)v->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: float_text(b, v->via.f64); break;
    case MSGPACK_OBJECT_STR: str_text(b, v->via.str.ptr, v->via.str.size); break;
    case MSGPACK_OBJECT_BIN: bin_text(b, v->via.bin.ptr, v->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP: container_text(b, v); break;
    case MSGPACK_OBJECT_EXT: ext_text(b, v); break;
    }
}

/* ---- JSON ---- */

json_t *cli_json_str(const char *p, size_t n)
{
    cli_buf b = {0};
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len(u + i, n - i);
        cli_buf_put(&b, len ? p + i : "\xef\xbf\xbd", len ? len : 3);
        i += len ? len : 1;
    }
    json_t *s = json_stringn(cli_buf_str(&b), b.len);
    cli_buf_free(&b);
    return s ? s : json_null();
}

json_t *cli_json_u64(uint64_t u)
{
    char s[24];
    if (u <= INT64_MAX)
        return json_integer((json_int_t)u);
    snprintf(s, sizeof s, "%llu", (unsigned long long)u);
    return json_string(s);
}

static json_t *tagged(const char *tag, json_t *v)
{
    json_t *o = json_object();
    json_object_set_new(o, tag, v);
    return o;
}

static json_t *hex_json(const char *p, size_t n)
{
    cli_buf b = {0};
    hex_put(&b, p, n);
    json_t *s = json_string(cli_buf_str(&b));
    cli_buf_free(&b);
    return s;
}

static json_t *float_json(double d)
{
    if (isnan(d) || isinf(d))
        return tagged("float", json_string(isnan(d) ? "nan" : d > 0 ? "inf" : "-inf"));
    return json_real(d);
}

static json_t *ext_json(const msgpack_object *v)
{
    const msgpack_object_ext *x = &v->via.ext;
    if ((x->type == 1 || x->type == 2) && x->size == 8)
        return tagged(x->type == 1 ? "chan" : "tasklet", cli_json_u64(cli_mp_ext_id(v)));
    if (x->type == 3 && x->size >= 4) {
        json_t *err = json_object();
        json_object_set_new(err, "code", json_integer(cli_mp_ext_code(v)));
        json_object_set_new(err, "msg", cli_json_str(x->ptr + 4, x->size - 4));
        return tagged("error", err);
    }
    json_t *o = tagged("ext", json_integer(x->type));
    json_object_set_new(o, "data", hex_json(x->ptr, x->size));
    return o;
}

static json_t *array_json(const msgpack_object *v)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < v->via.array.size; i++)
        json_array_append_new(a, cli_value_json(&v->via.array.ptr[i]));
    return a;
}

static json_t *map_json(const msgpack_object *v)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < v->via.map.size; i++) {
        json_t *kv = json_array();
        json_array_append_new(kv, cli_value_json(&v->via.map.ptr[i].key));
        json_array_append_new(kv, cli_value_json(&v->via.map.ptr[i].val));
        json_array_append_new(a, kv);
    }
    return tagged("map", a);
}

json_t *cli_value_json(const msgpack_object *v)
{
    switch (v->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(v->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return cli_json_u64(v->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)v->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return float_json(v->via.f64);
    case MSGPACK_OBJECT_STR: return cli_json_str(v->via.str.ptr, v->via.str.size);
    case MSGPACK_OBJECT_BIN: return tagged("bin", hex_json(v->via.bin.ptr, v->via.bin.size));
    case MSGPACK_OBJECT_ARRAY: return array_json(v);
    case MSGPACK_OBJECT_MAP: return map_json(v);
    case MSGPACK_OBJECT_EXT: return ext_json(v);
    }
    return json_null();
}

void cli_json_print(json_t *root)
{
    json_dumpf(root, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(root);
}
