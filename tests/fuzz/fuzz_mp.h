/*
 * fuzz_mp.h -- msgpack and record helpers shared by the snapshot fuzzer's
 * mutator (fuzz_snapshot.c) and its seed generator (make_seeds.c):
 *   - mp_skip / array_head: walk raw msgpack bytes, bounded by the input;
 *   - record_doc / wrap_record: a record's document out of and back into
 *     its [ "tlrec", flags, crc, len, bin ] wrapper (docs/FORMAT.md), with
 *     zlib doing the compression and the CRC;
 *   - mp_widen: the same msgpack value with every header written wider
 *     than it needs (a width class, below), which a reader must take as it
 *     takes the shortest form.  msgpack-c's packer always writes the
 *     shortest form, so only these headers are written by hand here.
 *
 * Width classes (class 0 is the shortest form, what the library writes):
 *   1: array 16, map 16, str 8,  bin 8,  integers in at least 2 bytes
 *   2: array 16, map 16, str 16, bin 16, integers in at least 4 bytes
 *   3: array 32, map 32, str 32, bin 32, integers in 8 bytes
 * With the outer structure and every record's document written in classes
 * 1 to 3, the seeds hold every width of every container and string.
 */
#ifndef TL_FUZZ_MP_H
#define TL_FUZZ_MP_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zlib.h>

#ifndef TL_COUNTOF
#define TL_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))
#endif

static inline uint64_t be_read(const uint8_t *p, int n)
{
    uint64_t x = 0;
    for (int i = 0; i < n; i++)
        x = (x << 8) | p[i];
    return x;
}

/* How the value at p is headed: its kind, header length and either its
 * payload bytes or its item count.  kind: 'i' integer, 's' str, 'b' bin,
 * 'a' array, 'm' map (items = 2 * pairs), 'o' anything else (nil, bool,
 * float, ext: hdr + payload is the whole value); 0 if malformed. */
typedef struct mp_head {
    char kind;
    size_t hdr;
    uint64_t payload, items;
} mp_head;

static inline mp_head mp_read_head(const uint8_t *p, size_t n)
{
    static const struct { uint8_t b, len; char kind; } t[] = {
        {0xc4, 1, 'b'}, {0xc5, 2, 'b'}, {0xc6, 4, 'b'}, {0xc7, 1, 'e'}, {0xc8, 2, 'e'},
        {0xc9, 4, 'e'}, {0xca, 4, 'o'}, {0xcb, 8, 'o'}, {0xcc, 1, 'i'}, {0xcd, 2, 'i'},
        {0xce, 4, 'i'}, {0xcf, 8, 'i'}, {0xd0, 1, 'i'}, {0xd1, 2, 'i'}, {0xd2, 4, 'i'},
        {0xd3, 8, 'i'}, {0xd4, 2, 'o'}, {0xd5, 3, 'o'}, {0xd6, 5, 'o'}, {0xd7, 9, 'o'},
        {0xd8, 17, 'o'}, {0xd9, 1, 's'}, {0xda, 2, 's'}, {0xdb, 4, 's'}, {0xdc, 2, 'a'},
        {0xdd, 4, 'a'}, {0xde, 2, 'm'}, {0xdf, 4, 'm'},
    };
    mp_head h = {0, 1, 0, 0};
    if (n == 0)
        return h;
    uint8_t b = p[0];
    if (b <= 0x7f || b >= 0xe0)
        h.kind = 'i';
    else if (b == 0xc0 || b == 0xc2 || b == 0xc3)
        h.kind = 'o';
    else if ((b & 0xe0) == 0xa0)
        h.kind = 's', h.payload = b & 0x1f;
    else if ((b & 0xf0) == 0x90)
        h.kind = 'a', h.items = b & 0x0f;
    else if ((b & 0xf0) == 0x80)
        h.kind = 'm', h.items = 2u * (b & 0x0f);
    if (h.kind)
        return h;
    size_t i = 0;
    while (i < TL_COUNTOF(t) && t[i].b != b)
        i++;
    if (i == TL_COUNTOF(t) || n < 1u + t[i].len)
        return h;
    h.kind = t[i].kind;
    h.hdr = 1u + t[i].len;
    uint64_t x = be_read(p + 1, t[i].len);
    if (h.kind == 's' || h.kind == 'b')
        h.payload = x;
    else if (h.kind == 'e')
        h.kind = 'o', h.payload = x + 1; /* ext: a type byte, then x bytes */
    else if (h.kind == 'a' || h.kind == 'm')
        h.items = h.kind == 'm' ? 2u * x : x;
    else if (h.kind == 'o')
        h.payload = t[i].len, h.hdr = 1; /* fixed-size: float, fixext */
    return h;
}

/* Length of the msgpack value at p (at most n bytes), 0 if malformed or
 * nested deeper than depth.  Counts are checked against the bytes left. */
static inline size_t mp_skip(const uint8_t *p, size_t n, int depth)
{
    if (n == 0 || depth < 0)
        return 0;
    mp_head h = mp_read_head(p, n);
    if (!h.kind || h.hdr > n)
        return 0;
    if (h.kind == 'i') /* fixints are 1 byte; the others are all header */
        return h.hdr;
    if (h.payload > n - h.hdr || h.items > n - h.hdr)
        return 0;
    size_t off = h.hdr + (size_t)h.payload;
    for (uint64_t i = 0; i < h.items; i++) {
        size_t k = mp_skip(p + off, n - off, depth - 1);
        if (!k)
            return 0;
        off += k;
    }
    return off;
}

/* An array header at p: its length in bytes, and the item count. */
static inline size_t array_head(const uint8_t *p, size_t n, uint64_t *count)
{
    mp_head h = mp_read_head(p, n);
    if (h.kind != 'a' || h.hdr > n)
        return 0;
    *count = h.items;
    return h.hdr;
}

static inline int sbuf_write(void *data, const char *buf, size_t len)
{
    return msgpack_sbuffer_write(data, buf, len);
}

/* The document of the record at p, inflated into doc (cap bytes). */
static inline size_t record_doc(const uint8_t *p, size_t n, uint8_t *doc, size_t cap,
                                int *compressed)
{
    msgpack_unpacked up;
    size_t off = 0, len = 0;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, (const char *)p, n, &off) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_ARRAY && up.data.via.array.size == 5) {
        const msgpack_object *a = up.data.via.array.ptr;
        if (a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[4].type == MSGPACK_OBJECT_BIN) {
            *compressed = a[1].via.u64 != 0; /* 1 zlib stream, 2 raw deflate */
            if (!*compressed && a[4].via.bin.size <= cap) {
                len = a[4].via.bin.size;
                memcpy(doc, a[4].via.bin.ptr, len);
            } else if (*compressed) {
                z_stream zs;
                memset(&zs, 0, sizeof zs);
                if (inflateInit2(&zs, a[1].via.u64 == 2 ? -15 : 15) == Z_OK) {
                    zs.next_in = (Bytef *)(uintptr_t)a[4].via.bin.ptr;
                    zs.avail_in = a[4].via.bin.size;
                    zs.next_out = doc;
                    zs.avail_out = (uInt)cap;
                    if (inflate(&zs, Z_FINISH) == Z_STREAM_END)
                        len = zs.total_out;
                    inflateEnd(&zs);
                }
            }
        }
    }
    msgpack_unpacked_destroy(&up);
    return len;
}

/* A record around doc, with the right length and CRC: compressed as
 * format 2 writes it (raw deflate, flags 2). */
static inline void wrap_record(msgpack_sbuffer *sb, const uint8_t *doc, size_t len, int compress)
{
    msgpack_packer pk;
    uint8_t *z = NULL;
    size_t zn = 0;
    if (compress) {
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        zn = compressBound((uLong)len) + 64;
        z = malloc(zn);
        compress = z && deflateInit2(&zs, 1, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK;
        if (compress) {
            zs.next_in = (Bytef *)(uintptr_t)doc;
            zs.avail_in = (uInt)len;
            zs.next_out = z;
            zs.avail_out = (uInt)zn;
            compress = deflate(&zs, Z_FINISH) == Z_STREAM_END;
            zn = zs.total_out;
            deflateEnd(&zs);
        }
    }
    msgpack_packer_init(&pk, sb, sbuf_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_str(&pk, 5);
    msgpack_pack_str_body(&pk, "tlrec", 5);
    msgpack_pack_uint32(&pk, compress ? 2 : 0);
    msgpack_pack_uint64(&pk, crc32(0L, doc, (uInt)len));
    msgpack_pack_uint64(&pk, len);
    msgpack_pack_bin(&pk, compress ? zn : len);
    msgpack_pack_bin_body(&pk, compress ? (const void *)z : (const void *)doc, compress ? zn : len);
    free(z);
}

/* ---- wider headers ---- */

static inline void mp_put(msgpack_sbuffer *out, uint8_t tag, uint64_t x, int bytes)
{
    uint8_t h[9] = {tag};
    for (int i = 0; i < bytes; i++)
        h[1 + i] = (uint8_t)(x >> (8 * (bytes - 1 - i)));
    msgpack_sbuffer_write(out, (const char *)h, 1u + (size_t)bytes);
}

/* The integer at p (header h) in class cls: at least 2, 4 or 8 bytes. */
static inline void mp_widen_int(const uint8_t *p, mp_head h, msgpack_sbuffer *out, int cls)
{
    static const int least[4] = {0, 2, 4, 8};
    uint8_t b = p[0];
    int neg = b >= 0xe0 || (b >= 0xd0 && b <= 0xd3);
    uint64_t u = h.hdr == 1 ? (uint64_t)(int64_t)(int8_t)b : be_read(p + 1, (int)h.hdr - 1);
    if (neg && h.hdr > 1 && h.hdr < 9) /* sign-extend d0..d2 */
        u = (uint64_t)((int64_t)(u << (64 - 8 * (h.hdr - 1))) >> (64 - 8 * (h.hdr - 1)));
    if (!neg && b <= 0x7f)
        u = b;
    if (neg && (int64_t)u >= 0) /* a signed tag holding a value >= 0 */
        neg = 0;
    int need = 1;
    if (neg) {
        int64_t v = (int64_t)u;
        need = v >= INT8_MIN ? 1 : v >= INT16_MIN ? 2 : v >= INT32_MIN ? 4 : 8;
    } else {
        need = u <= UINT8_MAX ? 1 : u <= UINT16_MAX ? 2 : u <= UINT32_MAX ? 4 : 8;
    }
    int bytes = need > least[cls] ? need : least[cls];
    static const uint8_t utag[9] = {0, 0xcc, 0xcd, 0, 0xce, 0, 0, 0, 0xcf};
    static const uint8_t stag[9] = {0, 0xd0, 0xd1, 0, 0xd2, 0, 0, 0, 0xd3};
    mp_put(out, neg ? stag[bytes] : utag[bytes], u, bytes);
}

/* Writes the value at p (n bytes) into out with every header in class cls
 * (1 to 3); returns the bytes read, 0 if malformed. */
static inline size_t mp_widen(const uint8_t *p, size_t n, msgpack_sbuffer *out, int cls, int depth)
{
    size_t len = mp_skip(p, n, depth);
    if (!len)
        return 0;
    mp_head h = mp_read_head(p, n);
    switch (h.kind) {
    case 'i':
        mp_widen_int(p, h, out, cls);
        return len;
    case 's': {
        static const uint8_t tag[4] = {0, 0xd9, 0xda, 0xdb};
        static const int bytes[4] = {0, 1, 2, 4};
        int need = h.payload > 0xffff ? 3 : h.payload > 0xff ? 2 : 1, c = need > cls ? need : cls;
        mp_put(out, tag[c], h.payload, bytes[c]);
        msgpack_sbuffer_write(out, (const char *)p + h.hdr, (size_t)h.payload);
        return len;
    }
    case 'b': {
        static const uint8_t tag[4] = {0, 0xc4, 0xc5, 0xc6};
        static const int bytes[4] = {0, 1, 2, 4};
        int need = h.payload > 0xffff ? 3 : h.payload > 0xff ? 2 : 1, c = need > cls ? need : cls;
        mp_put(out, tag[c], h.payload, bytes[c]);
        msgpack_sbuffer_write(out, (const char *)p + h.hdr, (size_t)h.payload);
        return len;
    }
    case 'a':
    case 'm': {
        uint64_t count = h.kind == 'm' ? h.items / 2 : h.items;
        int wide = cls == 3 || count > 0xffff;
        mp_put(out, (uint8_t)(h.kind == 'a' ? (wide ? 0xdd : 0xdc) : (wide ? 0xdf : 0xde)), count,
               wide ? 4 : 2);
        size_t off = h.hdr;
        for (uint64_t i = 0; i < h.items; i++)
            off += mp_widen(p + off, n - off, out, cls, depth - 1);
        return len;
    }
    default:
        msgpack_sbuffer_write(out, (const char *)p, len);
        return len;
    }
}

/* The record r re-wrapped around its document written in width class cls,
 * with a CRC of the new document; r as it was if it is not a record. */
static inline void mp_widen_record(msgpack_packer *pk, msgpack_sbuffer *sb, msgpack_object r,
                                   int cls)
{
    msgpack_sbuffer raw, doc;
    msgpack_packer rp;
    size_t cap = 1u << 22, len = 0;
    uint8_t *plain = malloc(cap);
    int compressed = 0;
    msgpack_sbuffer_init(&raw);
    msgpack_sbuffer_init(&doc);
    msgpack_packer_init(&rp, &raw, msgpack_sbuffer_write);
    msgpack_pack_object(&rp, r);
    if (plain)
        len = record_doc((const uint8_t *)raw.data, raw.size, plain, cap, &compressed);
    if (len && mp_widen(plain, len, &doc, cls, 64) == len)
        wrap_record(sb, (const uint8_t *)doc.data, doc.size, compressed);
    else
        msgpack_pack_object(pk, r);
    free(plain);
    msgpack_sbuffer_destroy(&doc);
    msgpack_sbuffer_destroy(&raw);
}

/* The snapshot buf with every header, of its outer structure and inside
 * each record's document, in width class cls (1 to 3), appended to out.
 * Returns 0 if buf is not a snapshot's outer structure. */
static inline int mp_widen_snapshot(const void *buf, size_t len, int cls, msgpack_sbuffer *out)
{
    msgpack_unpacked up;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t off = 0;
    int ok = 0;
    msgpack_unpacked_init(&up);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_unpack_next(&up, buf, len, &off) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_ARRAY && up.data.via.array.size == 4 &&
        up.data.via.array.ptr[3].type == MSGPACK_OBJECT_ARRAY) {
        const msgpack_object *o = up.data.via.array.ptr, *chunks = &o[3];
        ok = 1;
        msgpack_pack_array(&pk, 4);
        msgpack_pack_object(&pk, o[0]);
        msgpack_pack_object(&pk, o[1]);
        mp_widen_record(&pk, &sb, o[2], cls);
        msgpack_pack_array(&pk, chunks->via.array.size);
        for (uint32_t i = 0; i < chunks->via.array.size; i++) {
            const msgpack_object *e = &chunks->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 3) {
                msgpack_pack_object(&pk, *e);
                continue;
            }
            msgpack_pack_array(&pk, 3);
            msgpack_pack_object(&pk, e->via.array.ptr[0]);
            msgpack_pack_object(&pk, e->via.array.ptr[1]);
            mp_widen_record(&pk, &sb, e->via.array.ptr[2], cls);
        }
        ok = mp_widen((const uint8_t *)sb.data, sb.size, out, cls, 64) == sb.size;
    }
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&up);
    return ok;
}

#endif
