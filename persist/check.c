/*
 * check.c -- a bounded walk over msgpack bytes, run before msgpack-c ever
 * sees them.
 *
 * msgpack-c allocates an array's or map's items as soon as it reads the
 * count, so four bytes claiming 2^32 items would ask for ~100 GB.  This
 * walk rejects any count that cannot fit in the bytes that remain (each
 * item takes at least one byte) and any nesting deeper than maxdepth, with
 * an explicit stack and no allocation.
 */
#include "persist.h"

#define MAX_STACK 64

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t x = 0;
    for (int i = 0; i < n; i++)
        x = (x << 8) | p[i];
    return x;
}

/* Describes the value starting at p: its header length, the payload bytes
 * that follow, and the number of nested items.  Returns 0 on a bad byte. */
static int head_of(const unsigned char *p, size_t n, size_t *hdr, uint64_t *payload,
                   uint64_t *items)
{
    unsigned char b = p[0];
    *payload = 0;
    *items = 0;
    *hdr = 1;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 1;
    if ((b & 0xe0) == 0xa0) { *payload = b & 0x1f; return 1; }
    if ((b & 0xf0) == 0x90) { *items = b & 0x0f; return 1; }
    if ((b & 0xf0) == 0x80) { *items = 2u * (b & 0x0f); return 1; }
    static const struct { unsigned char b; unsigned char len, kind; } t[] = {
        {0xc4, 1, 1}, {0xc5, 2, 1}, {0xc6, 4, 1},       /* bin 8/16/32      */
        {0xc7, 1, 2}, {0xc8, 2, 2}, {0xc9, 4, 2},       /* ext 8/16/32      */
        {0xca, 4, 0}, {0xcb, 8, 0},                     /* float            */
        {0xcc, 1, 0}, {0xcd, 2, 0}, {0xce, 4, 0}, {0xcf, 8, 0}, /* uint     */
        {0xd0, 1, 0}, {0xd1, 2, 0}, {0xd2, 4, 0}, {0xd3, 8, 0}, /* int      */
        {0xd4, 2, 0}, {0xd5, 3, 0}, {0xd6, 5, 0}, {0xd7, 9, 0}, {0xd8, 17, 0}, /* fixext */
        {0xd9, 1, 1}, {0xda, 2, 1}, {0xdb, 4, 1},       /* str 8/16/32      */
        {0xdc, 2, 3}, {0xdd, 4, 3},                     /* array 16/32      */
        {0xde, 2, 4}, {0xdf, 4, 4},                     /* map 16/32        */
    };
    for (size_t i = 0; i < TL_COUNTOF(t); i++) {
        if (t[i].b != b)
            continue;
        if (n < 1u + t[i].len)
            return 0;
        *hdr = 1u + t[i].len;
        if (t[i].kind == 0) {
            *payload = 0; /* fixed-size: the length is the payload */
            *hdr = 1u + t[i].len;
        } else if (t[i].kind == 1) {
            *payload = be(p + 1, t[i].len);
        } else if (t[i].kind == 2) {
            *payload = be(p + 1, t[i].len) + 1; /* + the type byte */
        } else {
            *items = be(p + 1, t[i].len) * (t[i].kind == 4 ? 2u : 1u);
        }
        return 1;
    }
    return 0; /* 0xc1: never used */
}

size_t tl__msgpack_check(const unsigned char *p, size_t n, int maxdepth)
{
    uint64_t left[MAX_STACK]; /* items still expected at each open level */
    int depth = 0;
    size_t off = 0;
    if (maxdepth > MAX_STACK)
        maxdepth = MAX_STACK;
    do {
        size_t hdr;
        uint64_t payload, items;
        if (off >= n || !head_of(p + off, n - off, &hdr, &payload, &items))
            return 0;
        if (payload > n - off - hdr || items > n - off - hdr)
            return 0;
        off += hdr + (size_t)payload;
        if (items) {
            if (depth == maxdepth)
                return 0;
            left[depth++] = items;
            continue;
        }
        while (depth > 0 && --left[depth - 1] == 0)
            depth--;
    } while (depth > 0);
    return off;
}

size_t tl__msgpack_array_head(const unsigned char *p, size_t n, uint32_t *count)
{
    size_t hdr;
    uint64_t payload, items;
    if (n == 0 || ((p[0] & 0xf0) != 0x90 && p[0] != 0xdc && p[0] != 0xdd) ||
        !head_of(p, n, &hdr, &payload, &items))
        return 0;
    *count = (uint32_t)items;
    return hdr;
}
