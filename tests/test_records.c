/*
 * test_records.c -- the record envelope (docs/FORMAT.md section 2):
 * compression only where it pays.  A document of incompressible bytes is
 * stored raw (flags 0), a compressible one as raw deflate (flags 2, the
 * record's crc32 its one checksum); records of earlier writers (flags 1,
 * a zlib stream) still load; any other flags value is refused as corrupt.
 * A moving tasklet's snapshot made to go over a node's sealed session
 * stores its raw records without a CRC (flags 3): only the import from a
 * session takes them, never a load from a file or a store.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "tasklet.h"
#include "../persist/persist.h" /* the moving snapshot and its import from a session */

#define PAYLOAD (64u << 10)

typedef struct {
    tl_chan *in;
    tl_value keep, got;
} holder_t;

static const tl_field holder_fields[] = {
    TL_FIELD(holder_t, in, TL_T_CHAN),
    TL_FIELD(holder_t, keep, TL_T_VALUE),
    TL_FIELD(holder_t, got, TL_T_VALUE),
};

static tl_status holder(tl_frame *f, void *locals)
{
    holder_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->got);
    TL_END(f);
}

static const tl_func holder_fn = {"rec.holder", 1, holder, sizeof(holder_t), holder_fields,
                                  TL_COUNTOF(holder_fields), NULL};

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &holder_fn), TL_OK);
    return rt;
}

/* A snapshot of one tasklet blocked on a channel, holding bytes[n]. */
static void *snapshot_holding(const unsigned char *bytes, size_t n, size_t *len)
{
    tl_runtime *rt = new_rt();
    tl_chan *ch;
    holder_t a = {0};
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    a.in = ch;
    assert_int_equal(tl_bin_new(rt, bytes, n, &a.keep), TL_OK);
    assert_int_equal(tl_spawn(rt, &holder_fn, &a, sizeof a, NULL), TL_OK);
    tl_release(a.keep);
    assert_int_equal(tl_run_steps(rt, 100, NULL), TL_OK);
    void *buf, *copy;
    assert_int_equal(tl_snapshot_save(rt, &buf, len), TL_OK);
    copy = malloc(*len);
    memcpy(copy, buf, *len);
    tl_snapshot_free(rt, buf, *len);
    tl_chan_release(ch);
    tl_runtime_free(rt);
    return copy;
}

/* The envelope of the tasklet chunk (kind 1): [tlrec, flags, crc, rawlen, bin]. */
static msgpack_object *tasklet_record(msgpack_unpacked *up, const void *buf, size_t len)
{
    size_t off = 0;
    msgpack_unpacked_init(up);
    assert_int_equal(msgpack_unpack_next(up, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_object *chunks = &up->data.via.array.ptr[3];
    for (uint32_t i = 0; i < chunks->via.array.size; i++) {
        msgpack_object *e = chunks->via.array.ptr[i].via.array.ptr;
        if (e[0].via.u64 == 1)
            return e[2].via.array.ptr;
    }
    fail_msg("no tasklet chunk");
    return NULL;
}

static int contains(const unsigned char *hay, size_t n, const unsigned char *needle, size_t k)
{
    for (size_t i = 0; i + k <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, k) == 0)
            return 1;
    return 0;
}

/* Loads buf and checks the tasklet's bytes are bytes[n]. */
static void loads_holding(const void *buf, size_t len, const unsigned char *bytes, size_t n)
{
    tl_runtime *rt = new_rt();
    assert_int_equal(tl_snapshot_load(rt, buf, len), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 1);
    void *again;
    size_t alen;
    /* the value survived: a second save holds the same bytes somewhere */
    assert_int_equal(tl_snapshot_save(rt, &again, &alen), TL_OK);
    msgpack_unpacked up;
    msgpack_object *rec = tasklet_record(&up, again, alen);
    unsigned char *doc = malloc(rec[3].via.u64);
    if (rec[1].via.u64 == 0) {
        memcpy(doc, rec[4].via.bin.ptr, rec[3].via.u64);
    } else {
        z_stream zs = {0};
        assert_int_equal(inflateInit2(&zs, -15), Z_OK);
        zs.next_in = (Bytef *)rec[4].via.bin.ptr;
        zs.avail_in = rec[4].via.bin.size;
        zs.next_out = doc;
        zs.avail_out = (uInt)rec[3].via.u64;
        assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
        inflateEnd(&zs);
    }
    assert_true(contains(doc, rec[3].via.u64, bytes, n));
    free(doc);
    msgpack_unpacked_destroy(&up);
    tl_snapshot_free(rt, again, alen);
    tl_runtime_free(rt);
}

static unsigned char *random_bytes(size_t n)
{
    unsigned char *p = malloc(n);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (unsigned char)(x >> 24);
    }
    return p;
}

static void test_incompressible_stored_raw(void **state)
{
    (void)state;
    unsigned char *bytes = random_bytes(PAYLOAD);
    size_t len;
    void *buf = snapshot_holding(bytes, PAYLOAD, &len);
    msgpack_unpacked up;
    msgpack_object *rec = tasklet_record(&up, buf, len);
    assert_int_equal(rec[1].via.u64, 0); /* raw: deflating would not pay */
    assert_int_equal(rec[4].via.bin.size, rec[3].via.u64);
    assert_int_equal(rec[2].via.u64, crc32(0L, (const Bytef *)rec[4].via.bin.ptr,
                                           rec[4].via.bin.size));
    msgpack_unpacked_destroy(&up);
    loads_holding(buf, len, bytes, PAYLOAD);
    free(buf);
    free(bytes);
}

static void test_compressible_raw_deflate(void **state)
{
    (void)state;
    unsigned char *bytes = calloc(1, PAYLOAD);
    size_t len;
    void *buf = snapshot_holding(bytes, PAYLOAD, &len);
    msgpack_unpacked up;
    msgpack_object *rec = tasklet_record(&up, buf, len);
    assert_int_equal(rec[1].via.u64, 2); /* raw deflate, no zlib wrapper */
    assert_true(rec[4].via.bin.size < rec[3].via.u64 / 8);
    msgpack_unpacked_destroy(&up);
    loads_holding(buf, len, bytes, PAYLOAD);
    free(buf);
    free(bytes);
}

/* The snapshot buf with its tasklet record re-sealed with flags (1: a
 * zlib stream of the document; other values: the raw document). */
static msgpack_sbuffer reseal(const void *buf, size_t len, uint64_t flags)
{
    msgpack_unpacked up;
    msgpack_object *rec = tasklet_record(&up, buf, len);
    assert_int_equal(rec[1].via.u64, 0);
    uLongf zn = compressBound((uLong)rec[4].via.bin.size);
    unsigned char *z = malloc(zn);
    if (flags == 1) {
        assert_int_equal(compress2(z, &zn, (const Bytef *)rec[4].via.bin.ptr,
                                   rec[4].via.bin.size, 1), Z_OK);
        rec[4].via.bin.ptr = (const char *)z;
        rec[4].via.bin.size = (uint32_t)zn;
    }
    rec[1].via.u64 = flags;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, up.data);
    msgpack_unpacked_destroy(&up);
    free(z);
    return sb;
}

static void test_zlib_records_still_load(void **state)
{
    (void)state;
    unsigned char *bytes = random_bytes(PAYLOAD);
    size_t len;
    void *buf = snapshot_holding(bytes, PAYLOAD, &len);
    msgpack_sbuffer sb = reseal(buf, len, 1);
    loads_holding(sb.data, sb.size, bytes, PAYLOAD);
    msgpack_sbuffer_destroy(&sb);
    free(buf);
    free(bytes);
}

/* A moving tasklet holding bytes[n], saved unchecked or not; the
 * runtime is freed, the snapshot copied out. */
static void *moving_holding(const unsigned char *bytes, size_t n, int unchecked, size_t *len)
{
    tl_runtime *rt = new_rt();
    tl_chan *ch;
    tl_tasklet *t;
    holder_t a = {0};
    assert_int_equal(tl_set_node_id(rt, "rec-a"), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    a.in = ch;
    assert_int_equal(tl_bin_new(rt, bytes, n, &a.keep), TL_OK);
    assert_int_equal(tl_spawn(rt, &holder_fn, &a, sizeof a, &t), TL_OK);
    tl_release(a.keep);
    assert_int_equal(tl_run_steps(rt, 100, NULL), TL_OK);
    void *buf, *copy;
    assert_int_equal(tl__snapshot_save_moving_to(tl__tasklet_at(t), &buf, len, NULL, NULL,
                                                 unchecked), TL_OK);
    copy = malloc(*len);
    memcpy(copy, buf, *len);
    tl_snapshot_free(rt, buf, *len);
    tl_tasklet_release(t);
    tl_chan_release(ch);
    tl_runtime_free(rt);
    return copy;
}

/* Imports buf into a fresh runtime of node "rec-b" as from a session
 * (wire) or as from a store: the code. */
static int import_into_fresh(const void *buf, size_t len, int wire)
{
    tl_runtime *rt = new_rt();
    tl_tasklet *t = NULL;
    assert_int_equal(tl_set_node_id(rt, "rec-b"), TL_OK);
    int rc = wire ? tl__snapshot_import_wire(rt, buf, len, 0, &t)
                  : tl__snapshot_import(rt, buf, len, &t);
    assert_int_equal(tl_tasklet_count(rt), rc == TL_OK ? 1 : 0);
    if (rc != TL_OK)
        assert_non_null(strstr(tl_errmsg(rt), "without a checksum"));
    tl_runtime_free(rt);
    return rc;
}

static void test_unchecked_only_from_a_session(void **state)
{
    (void)state;
    unsigned char *bytes = random_bytes(PAYLOAD);
    size_t len, clen;
    void *buf = moving_holding(bytes, PAYLOAD, 1, &len);
    void *checked = moving_holding(bytes, PAYLOAD, 0, &clen);
    msgpack_unpacked up;
    msgpack_object *rec = tasklet_record(&up, buf, len);
    assert_int_equal(rec[1].via.u64, 3); /* raw, no CRC */
    assert_int_equal(rec[2].via.u64, 0);
    assert_true(contains((const unsigned char *)rec[4].via.bin.ptr, rec[4].via.bin.size, bytes,
                         PAYLOAD));
    msgpack_unpacked_destroy(&up);
    rec = tasklet_record(&up, checked, clen);
    assert_int_equal(rec[1].via.u64, 0);
    msgpack_unpacked_destroy(&up);
    assert_int_equal(import_into_fresh(buf, len, 1), TL_OK);
    assert_int_equal(import_into_fresh(checked, clen, 1), TL_OK);
    assert_int_equal(import_into_fresh(checked, clen, 0), TL_OK);
    assert_int_equal(import_into_fresh(buf, len, 0), TL_ECORRUPT); /* never from a store */
    tl_runtime *rt = new_rt();
    assert_int_equal(tl_snapshot_load(rt, buf, len), TL_ECORRUPT); /* nor from a file */
    assert_non_null(strstr(tl_errmsg(rt), "without a checksum"));
    tl_runtime_free(rt);
    free(buf);
    free(checked);
    free(bytes);
}

static void test_unknown_flags_refused(void **state)
{
    (void)state;
    unsigned char *bytes = random_bytes(PAYLOAD);
    size_t len;
    void *buf = snapshot_holding(bytes, PAYLOAD, &len);
    for (uint64_t flags = 3; flags <= 4; flags++) { /* 3: no CRC, never from a file */
        msgpack_sbuffer sb = reseal(buf, len, flags);
        tl_runtime *rt = new_rt();
        assert_int_equal(tl_snapshot_load(rt, sb.data, sb.size), TL_ECORRUPT);
        assert_non_null(strstr(tl_errmsg(rt), flags == 3 ? "without a checksum"
                                                         : "bad record flags"));
        assert_int_equal(tl_tasklet_count(rt), 0);
        tl_runtime_free(rt);
        msgpack_sbuffer_destroy(&sb);
    }
    free(buf);
    free(bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incompressible_stored_raw),
        cmocka_unit_test(test_compressible_raw_deflate),
        cmocka_unit_test(test_zlib_records_still_load),
        cmocka_unit_test(test_unknown_flags_refused),
        cmocka_unit_test(test_unchecked_only_from_a_session),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
