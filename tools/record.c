/*
 * record.c -- the record envelope of FORMAT.md section 2:
 *
 *     [ "tlrec", flags: uint, crc32: uint, rawlen: uint, payload: bin ]
 *
 * cli_record_decode checks the envelope, inflates the payload when flags
 * say it is compressed (1: a zlib stream, 2: raw deflate), checks its
 * length and CRC, and unpacks the document.
 *
 * Invariants: nothing is allocated before rawlen is checked against
 * CLI_RAWLEN_MAX and, for a compressed payload, against the most zlib can
 * inflate that many bytes to (1032:1); the document is a private copy,
 * so the SQLite blob may go away as soon as this returns.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define ZLIB_MAX_RATIO 1032u

static int envelope_uint(const msgpack_object *a, uint32_t i, const char *what,
                         uint64_t *out, cli_err *e)
{
    if (!cli_mp_uint(&a->via.array.ptr[i], out))
        return cli_fail(e, "record item %u (%s) is a %s, not a uint", i, what,
                        cli_mp_typename(&a->via.array.ptr[i]));
    return 0;
}

/* Checks the five items; sets flags, crc and len (rawlen) of doc. */
static int record_envelope(const msgpack_object *a, cli_doc *doc,
                           const msgpack_object **payload, cli_err *e)
{
    uint64_t rawlen;
    if (a->type != MSGPACK_OBJECT_ARRAY)
        return cli_fail(e, "record is a %s, not an array", cli_mp_typename(a));
    if (a->via.array.size != 5)
        return cli_fail(e, "record has %u items, not 5", a->via.array.size);
    if (!cli_mp_streq(&a->via.array.ptr[0], "tlrec"))
        return cli_fail(e, "record does not start with the tag \"tlrec\"");
    if (envelope_uint(a, 1, "flags", &doc->flags, e) < 0
        || envelope_uint(a, 2, "crc32", &doc->crc, e) < 0
        || envelope_uint(a, 3, "rawlen", &rawlen, e) < 0)
        return -1;
    if (doc->flags > 2)
        return cli_fail(e, "record flags 0x%llx are not 0, 1 or 2 (reserved bits set)",
                        (unsigned long long)doc->flags);
    if (doc->crc > UINT32_MAX)
        return cli_fail(e, "record crc32 %llu does not fit 32 bits",
                        (unsigned long long)doc->crc);
    if (rawlen > CLI_RAWLEN_MAX)
        return cli_fail(e, "record rawlen %llu exceeds the %llu-byte limit",
                        (unsigned long long)rawlen, (unsigned long long)CLI_RAWLEN_MAX);
    *payload = &a->via.array.ptr[4];
    if ((*payload)->type != MSGPACK_OBJECT_BIN)
        return cli_fail(e, "record payload is a %s, not a bin", cli_mp_typename(*payload));
    doc->len = (size_t)rawlen;
    return 0;
}

/* Inflates the payload: a zlib stream (flags 1) or raw deflate (2). */
static int zinflate(const msgpack_object *bin, cli_doc *doc, uLong *in, uLongf *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, doc->flags == 2 ? -15 : 15) != Z_OK)
        return Z_MEM_ERROR;
    zs.next_in = (Bytef *)(uintptr_t)bin->via.bin.ptr;
    zs.avail_in = (uInt)*in;
    zs.next_out = doc->bytes;
    zs.avail_out = (uInt)*out;
    int z = inflate(&zs, Z_FINISH);
    *in = zs.total_in;
    *out = zs.total_out;
    inflateEnd(&zs);
    if (z == Z_STREAM_END)
        return Z_OK;
    return z == Z_OK || (z == Z_BUF_ERROR && zs.avail_out == 0) ? Z_BUF_ERROR : Z_DATA_ERROR;
}

static int record_inflate(const msgpack_object *bin, cli_doc *doc, cli_err *e)
{
    uLong in = bin->via.bin.size;
    uLongf out = (uLongf)doc->len;
    if ((uint64_t)doc->len > (uint64_t)in * ZLIB_MAX_RATIO + 64)
        return cli_fail(e, "rawlen %zu is more than %lu compressed bytes can inflate to",
                        doc->len, (unsigned long)in);
    doc->bytes = cli_xcalloc(doc->len ? doc->len : 1, 1);
    int z = zinflate(bin, doc, &in, &out);
    if (z == Z_BUF_ERROR && out == doc->len)
        return cli_fail(e, "payload inflates to more than rawlen (%zu) bytes", doc->len);
    if (z == Z_MEM_ERROR)
        return cli_fail(e, "out of memory inflating the payload");
    if (z != Z_OK)
        return cli_fail(e, "payload is not a valid %s (corrupt or truncated)",
                        doc->flags == 2 ? "deflate stream" : "zlib stream");
    if (out != doc->len)
        return cli_fail(e, "payload inflates to %lu bytes, rawlen says %zu",
                        (unsigned long)out, doc->len);
    if (in != bin->via.bin.size)
        return cli_fail(e, "%lu stray bytes after the compressed stream",
                        (unsigned long)(bin->via.bin.size - in));
    return 0;
}

static int record_payload(const msgpack_object *bin, cli_doc *doc, cli_err *e)
{
    if (doc->flags) {
        if (record_inflate(bin, doc, e) < 0)
            return -1;
    } else {
        if (bin->via.bin.size != doc->len)
            return cli_fail(e, "payload has %u bytes, rawlen says %zu", bin->via.bin.size,
                            doc->len);
        doc->bytes = cli_xcalloc(doc->len ? doc->len : 1, 1);
        if (doc->len)
            memcpy(doc->bytes, bin->via.bin.ptr, doc->len);
    }
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), doc->bytes, (uInt)doc->len);
    if (crc != doc->crc)
        return cli_fail(e, "crc32 mismatch: the record says 0x%08x, the document has 0x%08x",
                        (unsigned)doc->crc, (unsigned)crc);
    return 0;
}

int cli_record_decode(const void *blob, size_t n, cli_doc *doc, cli_err *e)
{
    msgpack_unpacked env;
    const msgpack_object *payload = NULL;
    memset(doc, 0, sizeof *doc);
    msgpack_unpacked_init(&doc->up);
    doc->stored = n;
    if (cli_mp_parse(blob, n, &env, e) < 0)
        return cli_wrap(e, "record");
    int rc = record_envelope(&env.data, doc, &payload, e);
    if (rc == 0)
        rc = record_payload(payload, doc, e);
    msgpack_unpacked_destroy(&env);
    if (rc == 0 && cli_mp_parse(doc->bytes, doc->len, &doc->up, e) < 0)
        rc = cli_wrap(e, "document");
    if (rc < 0)
        cli_doc_free(doc);
    return rc;
}

void *cli_doc_alloc(cli_doc *doc, size_t n, size_t size)
{
    void *p = cli_xcalloc(n, size);
    doc->allocs = cli_xgrow(doc->allocs, doc->nallocs, 1, sizeof *doc->allocs);
    doc->allocs[doc->nallocs++] = p;
    return p;
}

void cli_doc_free(cli_doc *doc)
{
    for (size_t i = 0; i < doc->nallocs; i++)
        free(doc->allocs[i]);
    free(doc->allocs);
    msgpack_unpacked_destroy(&doc->up);
    free(doc->bytes);
    doc->allocs = NULL;
    doc->nallocs = 0;
    doc->bytes = NULL;
}

bool cli_doc_is_tombstone(const cli_doc *doc)
{
    return doc->up.data.type == MSGPACK_OBJECT_ARRAY && doc->up.data.via.array.size == 0;
}
