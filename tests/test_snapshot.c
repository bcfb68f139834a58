/*
 * test_snapshot.c -- the snapshot codec: a runtime saved mid-flight and
 * loaded into another runtime finishes exactly as the original does;
 * determinism; schema and code evolution; and bad bytes of every kind get
 * a clear error and leave the runtime empty and usable.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <zlib.h>
#include <stdio.h>
#include <string.h>

#include "tasklet.h"
#include "testutil.h"

static fake_clock clk;

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    tl_config cfg = {0};
    cfg.clock = fake_clock_fn;
    cfg.clock_ud = &clk;
    assert_int_equal(tl_runtime_new(&cfg, &rt), TL_OK);
    assert_int_equal(tl_set_node_id(rt, "node-a"), TL_OK);
    return rt;
}

/* ---- a small world: producers, a pipeline, a sleeper, a joiner, a select ---- */

typedef struct { tl_chan *out, *in; int64_t i, n, sum; tl_value v; tl_tasklet *peer; } w_t;
static const tl_field w_fields[] = {
    TL_FIELD(w_t, out, TL_T_CHAN), TL_FIELD(w_t, in, TL_T_CHAN), TL_FIELD(w_t, i, TL_T_I64),
    TL_FIELD(w_t, n, TL_T_I64), TL_FIELD(w_t, sum, TL_T_I64), TL_FIELD(w_t, v, TL_T_VALUE),
    TL_FIELD(w_t, peer, TL_T_TASKLET),
};

typedef struct { int64_t x; tl_value r; } sq_t;
static const tl_field sq_fields[] = {TL_FIELD(sq_t, x, TL_T_I64), TL_FIELD(sq_t, r, TL_T_VALUE)};

static tl_status square(tl_frame *f, void *locals)
{
    sq_t *L = locals;
    TL_BEGIN(f);
    TL_YIELD(f); /* suspends inside a nested frame */
    TL_RETURN(f, tl_i64(L->x * L->x));
    TL_END(f);
}
static const tl_func square_fn = {"snap.square", 1, square, sizeof(sq_t), sq_fields,
                                  TL_COUNTOF(sq_fields), NULL};

static tl_status producer(tl_frame *f, void *locals)
{
    w_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_CALL(f, &square_fn, L->v, &(sq_t){ .x = L->i });
        TL_SEND(f, L->out, L->v);
    }
    TL_SEND(f, L->out, tl_i64(-1));
    TL_END(f);
}

static tl_status consumer(tl_frame *f, void *locals)
{
    w_t *L = locals;
    TL_BEGIN(f);
    for (;;) {
        TL_RECV(f, L->in, L->v);
        if (tl_as_i64(L->v) < 0)
            break;
        L->sum += tl_as_i64(L->v);
        if (tl_type(L->v) == TL_V_INT) {
            char buf[32];
            snprintf(buf, sizeof buf, "sum=%lld", (long long)L->sum);
            tl_value s;
            tl_str_new(tl_frame_runtime(f), buf, strlen(buf), &s);
            tl_value_set(&L->v, s); /* a string local survives the snapshot */
        }
        TL_SLEEP(f, 5);
    }
    TL_RETURN(f, tl_i64(L->sum));
    TL_END(f);
}

static tl_status joiner(tl_frame *f, void *locals)
{
    w_t *L = locals;
    TL_BEGIN(f);
    TL_JOIN(f, L->peer, L->v);
    TL_SEND(f, L->out, L->v);
    TL_END(f);
}

typedef struct { tl_case cs[2]; int64_t idx, got; tl_value v; tl_chan *a, *b; } sel_t;
static const tl_field sel_fields[] = {
    TL_FIELD(sel_t, cs, TL_T_CASES),
    TL_FIELD(sel_t, idx, TL_T_I64), TL_FIELD(sel_t, got, TL_T_I64), TL_FIELD(sel_t, v, TL_T_VALUE),
    TL_FIELD(sel_t, a, TL_T_CHAN), TL_FIELD(sel_t, b, TL_T_CHAN),
};

static tl_status selector(tl_frame *f, void *locals)
{
    sel_t *L = locals;
    TL_BEGIN(f);
    L->cs[0] = (tl_case){L->a, TL_OP_RECV, tl_nil()};
    L->cs[1] = (tl_case){L->b, TL_OP_RECV, tl_nil()};
    TL_SELECT(f, L->cs, 2, L->idx, L->v);
    L->got = tl_as_i64(L->v) * 10 + L->idx;
    TL_RETURN(f, tl_i64(L->got));
    TL_END(f);
}

static const tl_func producer_fn = {"snap.producer", 1, producer, sizeof(w_t), w_fields,
                                    TL_COUNTOF(w_fields), NULL};
static const tl_func consumer_fn = {"snap.consumer", 1, consumer, sizeof(w_t), w_fields,
                                    TL_COUNTOF(w_fields), NULL};
static const tl_func joiner_fn = {"snap.joiner", 1, joiner, sizeof(w_t), w_fields,
                                  TL_COUNTOF(w_fields), NULL};
static const tl_func selector_fn = {"snap.selector", 1, selector, sizeof(sel_t), sel_fields,
                                    TL_COUNTOF(sel_fields), NULL};

static void register_all(tl_runtime *rt)
{
    assert_int_equal(tl_register(rt, &square_fn), TL_OK);
    assert_int_equal(tl_register(rt, &producer_fn), TL_OK);
    assert_int_equal(tl_register(rt, &consumer_fn), TL_OK);
    assert_int_equal(tl_register(rt, &joiner_fn), TL_OK);
    assert_int_equal(tl_register(rt, &selector_fn), TL_OK);
}

/* Builds the world and runs it a little; returns the result channel. */
static void build_world(tl_runtime *rt)
{
    tl_chan *pipe, *result, *a, *b;
    tl_tasklet *cons;
    register_all(rt);
    assert_int_equal(tl_chan_new(rt, 3, &pipe), TL_OK);
    assert_int_equal(tl_chan_new(rt, 4, &result), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &a), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &b), TL_OK);
    assert_int_equal(tl_chan_set_name(result, "result"), TL_OK);
    assert_int_equal(tl_chan_set_name(b, "b"), TL_OK);
    w_t p = {.out = pipe, .n = 12};
    assert_int_equal(tl_spawn(rt, &producer_fn, &p, sizeof p, NULL), TL_OK);
    w_t c = {.in = pipe};
    assert_int_equal(tl_spawn(rt, &consumer_fn, &c, sizeof c, &cons), TL_OK);
    assert_int_equal(tl_tasklet_set_name(cons, "consumer"), TL_OK);
    w_t j = {.out = result, .peer = cons};
    assert_int_equal(tl_spawn(rt, &joiner_fn, &j, sizeof j, NULL), TL_OK);
    sel_t s = {.a = a, .b = b};
    assert_int_equal(tl_spawn(rt, &selector_fn, &s, sizeof s, NULL), TL_OK);
    w_t sel_feed = {.out = b, .n = 0};
    (void)sel_feed;
    tl_tasklet_release(cons);
    tl_chan_release(pipe);
    tl_chan_release(a);
    tl_chan_release(b);
    tl_chan_release(result);
    uint64_t steps;
    assert_int_equal(tl_run_steps(rt, 9, &steps), TL_OK);
}

/* Runs to the end, feeding the selector and the clock; returns a digest. */
static int64_t finish_world(tl_runtime *rt)
{
    tl_chan *result = tl_chan_find_name(rt, "result");
    tl_chan *b = tl_chan_find_name(rt, "b");
    assert_non_null(result);
    assert_non_null(b);
    tl_chan_retain(result);
    tl_chan_retain(b);
    assert_int_equal(tl_chan_try_send(b, tl_i64(7)), TL_OK); /* wakes the selector */
    for (int i = 0; i < 1000 && tl_tasklet_count(rt) > 0; i++) {
        uint64_t steps;
        assert_int_equal(tl_run_steps(rt, 1000, &steps), TL_OK);
        clk.now += 5 * 1000000;
    }
    assert_int_equal(tl_tasklet_count(rt), 0);
    tl_value v;
    assert_int_equal(tl_chan_try_recv(result, &v), TL_OK);
    int64_t digest = tl_as_i64(v);
    tl_chan_release(result);
    tl_chan_release(b);
    return digest;
}

static void save(tl_runtime *rt, void **buf, size_t *len)
{
    int rc = tl_snapshot_save(rt, buf, len);
    if (rc != TL_OK)
        fail_msg("save: %s", tl_errmsg(rt));
}

static void test_round_trip_mid_flight(void **state)
{
    (void)state;
    clk.now = 1700000000LL * 1000000000LL;
    tl_runtime *a = new_rt();
    build_world(a);
    void *buf;
    size_t len;
    save(a, &buf, &len);
    assert_true(tl_blocked_count(a) > 0);
    int64_t expect = finish_world(a);
    assert_int_equal(expect, 506); /* sum of squares 0..11 */

    clk.now = 1700000000LL * 1000000000LL;
    tl_runtime *b = new_rt();
    register_all(b);
    int rc = tl_snapshot_load(b, buf, len);
    if (rc != TL_OK)
        fail_msg("load: %s", tl_errmsg(b));
    assert_int_equal(tl_tasklet_count(b), 4);
    tl_tasklet *cons = NULL;
    for (uint64_t id = 1; id <= 4 && !cons; id++) {
        tl_tasklet *t = tl_tasklet_find(b, id);
        if (t && tl_tasklet_name(t) && strcmp(tl_tasklet_name(t), "consumer") == 0)
            cons = t;
    }
    assert_non_null(cons);
    assert_int_equal(finish_world(b), expect);
    tl_snapshot_free(a, buf, len);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

static void test_deterministic(void **state)
{
    (void)state;
    clk.now = 1700000000LL * 1000000000LL;
    tl_runtime *a = new_rt();
    build_world(a);
    void *b1, *b2, *b3;
    size_t n1, n2, n3;
    save(a, &b1, &n1);
    save(a, &b2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    /* and a loaded copy saves to the same bytes */
    tl_runtime *b = new_rt();
    register_all(b);
    assert_int_equal(tl_snapshot_load(b, b1, n1), TL_OK);
    save(b, &b3, &n3);
    assert_int_equal(n1, n3);
    assert_memory_equal(b1, b3, n1);
    tl_snapshot_free(a, b1, n1);
    tl_snapshot_free(a, b2, n2);
    tl_snapshot_free(b, b3, n3);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

/* ---- bad bytes ---- */

static void expect_rejected(tl_runtime *rt, const void *p, size_t n)
{
    int rc = tl_snapshot_load(rt, p, n);
    if (rc == TL_OK) {
        /* a flip in a payload that still decodes must not have passed
         * the CRC; a flip that keeps the snapshot valid is impossible
         * except in bytes the format ignores (none), so: */
        fail_msg("damaged snapshot loaded");
    }
    assert_true(rc == TL_ECORRUPT || rc == TL_EFORMAT || rc == TL_ENOFUNC || rc == TL_ESCHEMA ||
                rc == TL_ENOMEM);
    assert_true(strlen(tl_errmsg(rt)) > 10);
    assert_int_equal(tl_tasklet_count(rt), 0);
    assert_null(tl_chan_find(rt, 1));
}

static void test_truncated_and_flipped(void **state)
{
    (void)state;
    clk.now = 1700000000LL * 1000000000LL;
    tl_runtime *a = new_rt();
    build_world(a);
    void *buf;
    size_t len;
    save(a, &buf, &len);
    tl_runtime *b = new_rt();
    register_all(b);
    unsigned char *copy = malloc(len);
    for (size_t cut = 0; cut < len; cut += 1 + cut / 64)
        expect_rejected(b, buf, cut);
    int accepted = 0;
    for (size_t pos = 0; pos < len; pos++) {
        memcpy(copy, buf, len);
        copy[pos] ^= 0x10;
        if (tl_snapshot_load(b, copy, len) == TL_OK) {
            /* only a flip the format cannot see may pass: none should */
            accepted++;
            tl_runtime_free(b);
            b = new_rt();
            register_all(b);
        } else {
            assert_int_equal(tl_tasklet_count(b), 0);
        }
    }
    /* every byte is covered by a CRC, a length or a structural check,
     * except the node id and time strings of the head, whose flips stay
     * valid strings; nothing else may load */
    fprintf(stderr, "accepted %d of %zu flips\n", accepted, len);
    assert_true(accepted <= 24);
    /* after all that the runtime still loads the good snapshot */
    assert_int_equal(tl_snapshot_load(b, buf, len), TL_OK);
    assert_int_equal(tl_tasklet_count(b), 4);
    free(copy);
    tl_snapshot_free(a, buf, len);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

static void test_random_bytes(void **state)
{
    (void)state;
    tl_runtime *b = new_rt();
    unsigned char junk[4096];
    uint64_t x = 88172645463325252ULL;
    for (int round = 0; round < 300; round++) {
        size_t n = (size_t)(x % sizeof junk);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk[i] = (unsigned char)x;
        }
        if (n > 2 && round % 3 == 0) { /* plausible prefixes too */
            junk[0] = 0x94;
            junk[1] = 0xdd; /* array32 claiming a huge count */
        }
        expect_rejected(b, junk, n);
    }
    tl_runtime_free(b);
}

/* ---- every width of the standalone snapshot's array headers ---- */

/* An array header of n items in the width asked (0 fixarray, 1 array 16,
 * 2 array 32), whatever width n needs: msgpack allows any. */
static void put_array_head(msgpack_sbuffer *sb, int width, uint32_t n)
{
    unsigned char h[5] = {(unsigned char)(0x90 | n), 0, 0, 0, 0};
    size_t len = 1;
    if (width == 1) {
        h[0] = 0xdc, h[1] = (unsigned char)(n >> 8), h[2] = (unsigned char)n, len = 3;
    } else if (width == 2) {
        h[0] = 0xdd, h[1] = (unsigned char)(n >> 24), h[2] = (unsigned char)(n >> 16);
        h[3] = (unsigned char)(n >> 8), h[4] = (unsigned char)n, len = 5;
    } else {
        assert_true(n < 16);
    }
    msgpack_sbuffer_write(sb, (const char *)h, len);
}

/* The snapshot buf with its outer array, its chunk list and each chunk
 * entry headed in the widths asked (the items re-packed as they were). */
static void rewrap(const void *buf, size_t len, int outer, int list, int entry,
                   msgpack_sbuffer *sb)
{
    msgpack_unpacked up;
    msgpack_packer pk;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    const msgpack_object *o = up.data.via.array.ptr, *chunks = &o[3];
    put_array_head(sb, outer, 4);
    for (int i = 0; i < 3; i++)
        msgpack_pack_object(&pk, o[i]);
    put_array_head(sb, list, chunks->via.array.size);
    for (uint32_t i = 0; i < chunks->via.array.size; i++) {
        put_array_head(sb, entry, 3);
        for (uint32_t k = 0; k < 3; k++)
            msgpack_pack_object(&pk, chunks->via.array.ptr[i].via.array.ptr[k]);
    }
    msgpack_unpacked_destroy(&up);
}

/* A valid snapshot whose array headers are wider than they need be loads
 * (it once made the loader read past the buffer: locate() took the outer
 * header for one byte), and every truncation of it is refused. */
static void test_wide_array_headers(void **state)
{
    (void)state;
    clk.now = 1700000000LL * 1000000000LL;
    tl_runtime *a = new_rt();
    build_world(a);
    void *buf;
    size_t len;
    save(a, &buf, &len);
    msgpack_sbuffer same;
    rewrap(buf, len, 0, 0, 0, &same); /* the helper itself changes nothing */
    assert_int_equal(same.size, len);
    assert_memory_equal(same.data, buf, len);
    msgpack_sbuffer_destroy(&same);
    for (int w = 1; w < 27; w++) {
        msgpack_sbuffer sb;
        rewrap(buf, len, w % 3, w / 3 % 3, w / 9, &sb);
        tl_runtime *b = new_rt();
        register_all(b);
        /* a copy of exactly sb.size bytes: ASan sees any read past it */
        unsigned char *exact = malloc(sb.size);
        memcpy(exact, sb.data, sb.size);
        if (tl_snapshot_load(b, exact, sb.size) != TL_OK)
            fail_msg("widths %d/%d/%d: %s", w % 3, w / 3 % 3, w / 9, tl_errmsg(b));
        assert_int_equal(tl_tasklet_count(b), 4);
        void *again;
        size_t alen;
        save(b, &again, &alen); /* the same state: the writer's own widths */
        assert_int_equal(alen, len);
        assert_memory_equal(again, buf, len);
        tl_snapshot_free(b, again, alen);
        tl_runtime_free(b);
        b = new_rt();
        register_all(b);
        for (size_t cut = 0; cut < sb.size; cut += 1 + cut / 32) {
            unsigned char *part = malloc(cut + 1);
            memcpy(part, exact, cut);
            expect_rejected(b, part, cut);
            free(part);
        }
        tl_runtime_free(b);
        free(exact);
        msgpack_sbuffer_destroy(&sb);
    }
    tl_snapshot_free(a, buf, len);
    tl_runtime_free(a);
}

/* Wide headers whose counts disagree with the format are refused. */
static void test_wide_header_wrong_count(void **state)
{
    (void)state;
    clk.now = 1700000000LL * 1000000000LL;
    tl_runtime *a = new_rt();
    build_world(a);
    void *buf;
    size_t len;
    save(a, &buf, &len);
    tl_runtime *b = new_rt();
    register_all(b);
    /* array 16 claiming 5 items: the snapshot and a nil */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    put_array_head(&sb, 1, 5);
    msgpack_sbuffer_write(&sb, (const char *)buf + 1, len - 1);
    msgpack_sbuffer_write(&sb, "\xc0", 1);
    expect_rejected(b, sb.data, sb.size);
    /* array 32 claiming 3: the chunk list left out */
    msgpack_sbuffer_clear(&sb);
    msgpack_sbuffer wide;
    rewrap(buf, len, 2, 0, 0, &wide);
    memcpy(wide.data, "\xdd\0\0\0\3", 5);
    expect_rejected(b, wide.data, wide.size);
    msgpack_sbuffer_destroy(&wide);
    /* the bytes that walked the old locate() off the buffer: an array 16
     * outer header, a nil head and 15 chunk entries [1, 0, nil] */
    msgpack_sbuffer_clear(&sb);
    msgpack_sbuffer_write(&sb, "\xdc\0\4\xb3libtasklet-snapshot\1\xc0\x9f", 26);
    for (int i = 0; i < 15; i++)
        msgpack_sbuffer_write(&sb, "\x93\1\0\xc0", 4);
    unsigned char *exact = malloc(sb.size);
    memcpy(exact, sb.data, sb.size);
    expect_rejected(b, exact, sb.size);
    free(exact);
    msgpack_sbuffer_destroy(&sb);
    tl_runtime_free(b);
    tl_snapshot_free(a, buf, len);
    tl_runtime_free(a);
}

/* ---- extra.fired: an index, bounded by the cases it indexes ---- */

/* The snapshot buf with extra.fired of every tasklet record set to fired
 * (an int, or a string when as_str), its chunk records re-sealed. */
static void forge_fired(const void *buf, size_t len, int64_t fired, int as_str,
                        msgpack_sbuffer *out)
{
    msgpack_unpacked up, doc;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_object *chunks = &up.data.via.array.ptr[3];
    msgpack_sbuffer docs[8];
    unsigned char *raw[8] = {0};
    assert_true(chunks->via.array.size <= 8);
    for (uint32_t c = 0; c < chunks->via.array.size; c++) {
        msgpack_object *entry = chunks->via.array.ptr[c].via.array.ptr;
        msgpack_object *rec = entry[2].via.array.ptr; /* ["tlrec", flags, crc, rawlen, bin] */
        uLongf rawlen = (uLongf)rec[3].via.u64;
        raw[c] = malloc(rawlen + 1);
        if (rec[1].via.u64) { /* 1: a zlib stream, 2: raw deflate (FORMAT.md section 2) */
            z_stream zs = {0};
            assert_int_equal(inflateInit2(&zs, rec[1].via.u64 == 2 ? -15 : 15), Z_OK);
            zs.next_in = (Bytef *)rec[4].via.bin.ptr;
            zs.avail_in = rec[4].via.bin.size;
            zs.next_out = raw[c];
            zs.avail_out = (uInt)rawlen;
            assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
            inflateEnd(&zs);
        } else {
            memcpy(raw[c], rec[4].via.bin.ptr, rawlen);
        }
        size_t doff = 0;
        msgpack_unpacked_init(&doc);
        assert_int_equal(msgpack_unpack_next(&doc, (const char *)raw[c], rawlen, &doff),
                         MSGPACK_UNPACK_SUCCESS);
        for (uint32_t k = 0; entry[0].via.u64 == 1 && k < doc.data.via.map.size; k++) {
            msgpack_object *list = &doc.data.via.map.ptr[k].val;
            if (doc.data.via.map.ptr[k].key.via.str.size != 8) /* "tasklets" */
                continue;
            for (uint32_t t = 0; t < list->via.array.size; t++) {
                msgpack_object *extra = &list->via.array.ptr[t].via.array.ptr[8];
                for (uint32_t x = 0; extra->type == MSGPACK_OBJECT_MAP && x < extra->via.map.size;
                     x++) {
                    msgpack_object_kv *kv = &extra->via.map.ptr[x];
                    if (kv->key.via.str.size != 5 || memcmp(kv->key.via.str.ptr, "fired", 5))
                        continue;
                    kv->val.type = as_str ? MSGPACK_OBJECT_STR
                                   : fired < 0 ? MSGPACK_OBJECT_NEGATIVE_INTEGER
                                               : MSGPACK_OBJECT_POSITIVE_INTEGER;
                    if (as_str)
                        kv->val.via.str = (msgpack_object_str){1, "x"};
                    else
                        kv->val.via.i64 = fired;
                }
            }
        }
        msgpack_packer dp;
        msgpack_sbuffer_init(&docs[c]);
        msgpack_packer_init(&dp, &docs[c], msgpack_sbuffer_write);
        msgpack_pack_object(&dp, doc.data);
        msgpack_unpacked_destroy(&doc);
        rec[1].via.u64 = 0; /* stored, not compressed */
        rec[2].via.u64 = crc32(0, (const Bytef *)docs[c].data, (uInt)docs[c].size);
        rec[3].via.u64 = docs[c].size;
        rec[4].via.bin.ptr = docs[c].data;
        rec[4].via.bin.size = (uint32_t)docs[c].size;
    }
    msgpack_packer pk;
    msgpack_sbuffer_init(out);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, up.data);
    for (uint32_t c = 0; c < chunks->via.array.size; c++) {
        msgpack_sbuffer_destroy(&docs[c]);
        free(raw[c]);
    }
    msgpack_unpacked_destroy(&up);
}

/* Loads buf with extra.fired forged to fired: TL_OK or the load's error. */
static int load_with_fired(const void *buf, size_t len, int64_t fired, int as_str)
{
    msgpack_sbuffer sb;
    forge_fired(buf, len, fired, as_str, &sb);
    tl_runtime *b = new_rt();
    register_all(b);
    int rc = tl_snapshot_load(b, sb.data, sb.size);
    if (rc != TL_OK) {
        assert_non_null(strstr(tl_errmsg(b), "fired select case"));
        assert_int_equal(tl_tasklet_count(b), 0);
    }
    tl_runtime_free(b);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void test_fired_bounded(void **state)
{
    (void)state;
    tl_runtime *a = new_rt();
    tl_chan *ca, *cb;
    register_all(a);
    assert_int_equal(tl_chan_new(a, 0, &ca), TL_OK);
    assert_int_equal(tl_chan_new(a, 1, &cb), TL_OK);
    sel_t args = {.a = ca, .b = cb};
    assert_int_equal(tl_spawn(a, &selector_fn, &args, sizeof args, NULL), TL_OK);
    assert_int_equal(tl_run(a), TL_EDEADLOCK); /* waits in a select of 2 cases */
    void *buf;
    size_t len;
    save(a, &buf, &len);
    assert_int_equal(load_with_fired(buf, len, -1, 0), TL_OK);
    assert_int_equal(load_with_fired(buf, len, 1, 0), TL_OK);
    assert_int_equal(load_with_fired(buf, len, 2, 0), TL_ECORRUPT); /* case 2 of 2 */
    assert_int_equal(load_with_fired(buf, len, -2, 0), TL_ECORRUPT);
    assert_int_equal(load_with_fired(buf, len, 0, 1), TL_ECORRUPT);
    tl_snapshot_free(a, buf, len);
    /* the select fired: runnable, its cases no longer in the record */
    assert_int_equal(tl_chan_try_send(cb, tl_i64(7)), TL_OK);
    assert_int_equal(tl_blocked_count(a), 0);
    save(a, &buf, &len);
    assert_int_equal(load_with_fired(buf, len, 1, 0), TL_OK);
    assert_int_equal(load_with_fired(buf, len, TL_SELECT_MAX - 1, 0), TL_OK);
    assert_int_equal(load_with_fired(buf, len, TL_SELECT_MAX, 0), TL_ECORRUPT);
    assert_int_equal(load_with_fired(buf, len, INT64_MAX, 0), TL_ECORRUPT);
    assert_int_equal(load_with_fired(buf, len, INT64_MIN, 0), TL_ECORRUPT);
    tl_snapshot_free(a, buf, len);
    tl_chan_release(ca);
    tl_chan_release(cb);
    tl_runtime_free(a);
}

static void test_wrong_magic_and_newer_format(void **state)
{
    (void)state;
    clk.now = 1700000000LL * 1000000000LL;
    tl_runtime *a = new_rt();
    build_world(a);
    void *buf;
    size_t len;
    save(a, &buf, &len);
    unsigned char *copy = malloc(len);
    tl_runtime *b = new_rt();
    register_all(b);
    memcpy(copy, buf, len);
    copy[2] = 'X'; /* "libtasklet-snapshot" -> "lXbtasklet-snapshot" */
    assert_int_equal(tl_snapshot_load(b, copy, len), TL_ECORRUPT);
    assert_non_null(strstr(tl_errmsg(b), "magic"));
    memcpy(copy, buf, len);
    assert_int_equal(copy[21], TL_FORMAT_VERSION); /* the format version follows the magic */
    copy[21] = TL_FORMAT_VERSION + 1;
    assert_int_equal(tl_snapshot_load(b, copy, len), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(b), "newer"));
    free(copy);
    tl_snapshot_free(a, buf, len);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

static void test_unknown_function(void **state)
{
    (void)state;
    clk.now = 1700000000LL * 1000000000LL;
    tl_runtime *a = new_rt();
    build_world(a);
    void *buf;
    size_t len;
    save(a, &buf, &len);
    tl_runtime *b = new_rt();
    assert_int_equal(tl_register(b, &square_fn), TL_OK); /* the rest is missing */
    assert_int_equal(tl_snapshot_load(b, buf, len), TL_ENOFUNC);
    /* "needs function NAME@1, which ...": the label is built without printf */
    const char *m = strstr(tl_errmsg(b), "needs function ");
    assert_non_null(m);
    assert_true(m[15] != '@');
    assert_non_null(strstr(m, "@1, which this program does not register"));
    assert_int_equal(tl_tasklet_count(b), 0);
    tl_snapshot_free(a, buf, len);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

static void test_not_empty(void **state)
{
    (void)state;
    tl_runtime *a = new_rt();
    build_world(a);
    void *buf;
    size_t len;
    save(a, &buf, &len);
    assert_int_equal(tl_snapshot_load(a, buf, len), TL_ENOTEMPTY);
    tl_snapshot_free(a, buf, len);
    tl_runtime_free(a);
}

/* ---- schema evolution ---- */

typedef struct { int64_t count; tl_chan *in; tl_value v; double ratio; } v1_t;
static const tl_field v1_fields[] = {
    TL_FIELD(v1_t, count, TL_T_I64), TL_FIELD(v1_t, in, TL_T_CHAN),
    TL_FIELD(v1_t, v, TL_T_VALUE), TL_FIELD(v1_t, ratio, TL_T_F64),
};

static tl_status counter_v1(tl_frame *f, void *locals)
{
    v1_t *L = locals;
    TL_BEGIN(f);
    L->count = 41;
    L->ratio = 0.5;
    TL_RECV(f, L->in, L->v);
    TL_RETURN(f, tl_i64(L->count + tl_as_i64(L->v)));
    TL_END(f);
}
static const tl_func counter_v1_fn = {"snap.counter", 1, counter_v1, sizeof(v1_t), v1_fields,
                                      TL_COUNTOF(v1_fields), NULL};

/* v1 with a field added (extra) and one removed (ratio); same resume points */
typedef struct { int64_t count; tl_chan *in; tl_value v; int64_t extra; } v1b_t;
static const tl_field v1b_fields[] = {
    TL_FIELD(v1b_t, count, TL_T_I64), TL_FIELD(v1b_t, in, TL_T_CHAN),
    TL_FIELD(v1b_t, v, TL_T_VALUE), TL_FIELD(v1b_t, extra, TL_T_I64),
};
static int64_t seen_extra = -1;

static tl_status counter_v1b(tl_frame *f, void *locals)
{
    v1b_t *L = locals;
    TL_BEGIN(f);
    L->count = -1000; /* never runs: loaded frames resume at the receive */
    TL_RECV(f, L->in, L->v); /* the same resume point as counter_v1's */
    seen_extra = L->extra;
    TL_RETURN(f, tl_i64(L->count + tl_as_i64(L->v)));
    TL_END(f);
}
static const tl_func counter_v1b_fn = {"snap.counter", 1, counter_v1b, sizeof(v1b_t), v1b_fields,
                                       TL_COUNTOF(v1b_fields), NULL};

typedef struct { double count; tl_chan *in; tl_value v; } bad_t;
static const tl_field bad_fields[] = {
    TL_FIELD(bad_t, count, TL_T_F64), TL_FIELD(bad_t, in, TL_T_CHAN), TL_FIELD(bad_t, v, TL_T_VALUE),
};
static const tl_func counter_bad_fn = {"snap.counter", 1, counter_v1b, sizeof(bad_t), bad_fields,
                                       TL_COUNTOF(bad_fields), NULL};

static void counter_snapshot(void **buf, size_t *len)
{
    tl_runtime *a = new_rt();
    tl_chan *ch;
    assert_int_equal(tl_register(a, &counter_v1_fn), TL_OK);
    assert_int_equal(tl_chan_new(a, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_set_name(ch, "in"), TL_OK);
    v1_t args = {.in = ch};
    assert_int_equal(tl_spawn(a, &counter_v1_fn, &args, sizeof args, NULL), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_run(a), TL_EDEADLOCK);
    save(a, buf, len);
    /* the caller frees with any runtime's default allocator */
    void *copy = malloc(*len);
    memcpy(copy, *buf, *len);
    tl_snapshot_free(a, *buf, *len);
    *buf = copy;
    tl_runtime_free(a);
}

static int64_t finish_counter(tl_runtime *b)
{
    tl_tasklet *t = tl_tasklet_find(b, 1);
    tl_value v;
    assert_non_null(t);
    tl_tasklet_retain(t);
    assert_int_equal(tl_chan_try_send(tl_chan_find_name(b, "in"), tl_i64(1)), TL_OK);
    assert_int_equal(tl_run(b), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    tl_tasklet_release(t);
    return tl_as_i64(v);
}

static void test_fields_added_and_removed(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    counter_snapshot(&buf, &len);
    tl_runtime *b = new_rt();
    assert_int_equal(tl_register(b, &counter_v1b_fn), TL_OK);
    assert_int_equal(tl_snapshot_load(b, buf, len), TL_OK);
    assert_int_equal(finish_counter(b), 42);
    assert_int_equal(seen_extra, 0); /* added: zero */
    tl_runtime_free(b);
    free(buf);
}

static void test_field_type_changed(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    counter_snapshot(&buf, &len);
    tl_runtime *b = new_rt();
    assert_int_equal(tl_register(b, &counter_bad_fn), TL_OK);
    assert_int_equal(tl_snapshot_load(b, buf, len), TL_ESCHEMA);
    assert_non_null(strstr(tl_errmsg(b), "'count'"));
    assert_non_null(strstr(tl_errmsg(b), "changed type"));
    assert_int_equal(tl_tasklet_count(b), 0);
    tl_runtime_free(b);
    free(buf);
}

/* v2: count became a double and the resume point moved; an upgrade maps */
typedef struct { double count; tl_chan *in; tl_value v; } v2_t;
static const tl_field v2_fields[] = {
    TL_FIELD(v2_t, count, TL_T_F64), TL_FIELD(v2_t, in, TL_T_CHAN), TL_FIELD(v2_t, v, TL_T_VALUE),
};
enum { v2_recv_pc = 1 };

static tl_status counter_v2(tl_frame *f, void *locals)
{
    v2_t *L = locals;
    TL_BEGIN(f);
    L->count = 41.0;
    TL_RECV(f, L->in, L->v); /* resume point 1 */
    TL_RETURN(f, tl_i64((int64_t)(L->count * 100) + tl_as_i64(L->v)));
    TL_END(f);
}
static const tl_func counter_v2_fn = {"snap.counter", 2, counter_v2, sizeof(v2_t), v2_fields,
                                      TL_COUNTOF(v2_fields), NULL};

static int upgrade_v1(void *ud, uint32_t old_pc, tl_value old, void *nl, uint32_t *new_pc)
{
    v2_t *L = nl;
    tl_value count;
    (void)ud;
    if (old_pc == 0)
        return TL_EBADPC; /* v1 frames are only ever saved at the receive */
    for (size_t i = 0; i < tl_len(old); i++) {
        size_t n;
        const char *k = tl_str_data(tl_map_key(old, i), &n);
        if (k && strcmp(k, "count") == 0) {
            count = tl_map_val(old, i);
            L->count = (double)tl_as_i64(count);
        }
    }
    *new_pc = v2_recv_pc;
    return TL_OK;
}

static void test_upgrade_hook(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    counter_snapshot(&buf, &len);
    /* without the hook: a clear error naming the old version */
    tl_runtime *b = new_rt();
    assert_int_equal(tl_register(b, &counter_v2_fn), TL_OK);
    assert_int_equal(tl_snapshot_load(b, buf, len), TL_ENOFUNC);
    assert_non_null(strstr(tl_errmsg(b), "snap.counter@1"));
    /* with it: continues under v2 */
    assert_int_equal(tl_register_upgrade(b, "snap.counter", 1, &counter_v2_fn, upgrade_v1, NULL),
                     TL_OK);
    int rc = tl_snapshot_load(b, buf, len);
    if (rc != TL_OK)
        fail_msg("%s", tl_errmsg(b));
    assert_int_equal(finish_counter(b), 4101);
    tl_runtime_free(b);
    free(buf);
}

/* ---- dangling references: a chunk removed from a snapshot ---- */

static void test_dangling_channel(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    counter_snapshot(&buf, &len);
    /* rebuild the outer array without its channel chunk */
    msgpack_unpacked up;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_object *chunks = &up.data.via.array.ptr[3];
    assert_int_equal(chunks->via.array.size, 2);
    chunks->via.array.size = 1; /* keep the tasklet chunk only */
    /* and make the head agree (nchans 0), re-sealing its record */
    msgpack_object *head = &up.data.via.array.ptr[2];
    assert_int_equal(head->via.array.ptr[1].via.u64, 0); /* small: not compressed */
    msgpack_unpacked hd;
    size_t hoff = 0;
    msgpack_unpacked_init(&hd);
    assert_int_equal(msgpack_unpack_next(&hd, head->via.array.ptr[4].via.bin.ptr,
                                         head->via.array.ptr[4].via.bin.size, &hoff),
                     MSGPACK_UNPACK_SUCCESS);
    for (uint32_t i = 0; i < hd.data.via.map.size; i++) {
        msgpack_object_kv *kv = &hd.data.via.map.ptr[i];
        if (kv->key.via.str.size == 6 && memcmp(kv->key.via.str.ptr, "nchans", 6) == 0)
            kv->val.via.u64 = 0;
    }
    msgpack_sbuffer hb;
    msgpack_packer hp;
    msgpack_sbuffer_init(&hb);
    msgpack_packer_init(&hp, &hb, msgpack_sbuffer_write);
    msgpack_pack_object(&hp, hd.data);
    head->via.array.ptr[2].via.u64 = crc32(0, (const unsigned char *)hb.data, (unsigned)hb.size);
    head->via.array.ptr[3].via.u64 = hb.size;
    head->via.array.ptr[4].via.bin.ptr = hb.data;
    head->via.array.ptr[4].via.bin.size = (uint32_t)hb.size;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, up.data);
    tl_runtime *b = new_rt();
    assert_int_equal(tl_register(b, &counter_v1_fn), TL_OK);
    assert_int_equal(tl_snapshot_load(b, sb.data, sb.size), TL_ECORRUPT);
    assert_non_null(strstr(tl_errmsg(b), "channel #1"));
    assert_int_equal(tl_tasklet_count(b), 0);
    /* still usable */
    assert_int_equal(tl_snapshot_load(b, buf, len), TL_OK);
    assert_int_equal(finish_counter(b), 42);
    tl_runtime_free(b);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&hb);
    msgpack_unpacked_destroy(&hd);
    msgpack_unpacked_destroy(&up);
    free(buf);
}

/* ---- one tasklet with what it references ---- */

typedef struct { tl_chan *in, *side; tl_value v; int64_t sum; } one_t;
static const tl_field one_fields[] = {
    TL_FIELD(one_t, in, TL_T_CHAN), TL_FIELD(one_t, side, TL_T_CHAN),
    TL_FIELD(one_t, v, TL_T_VALUE), TL_FIELD(one_t, sum, TL_T_I64),
};

static tl_status one(tl_frame *f, void *locals)
{
    one_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    L->sum = tl_as_i64(L->v);
    TL_RECV(f, L->side, L->v);
    L->sum += tl_as_i64(L->v);
    TL_RECV(f, L->side, L->v);
    L->sum += (int64_t)tl_len(L->v);
    TL_RETURN(f, tl_i64(L->sum));
    TL_END(f);
}
static const tl_func one_fn = {"snap.one", 1, one, sizeof(one_t), one_fields,
                               TL_COUNTOF(one_fields), NULL};

static void test_save_one_tasklet(void **state)
{
    (void)state;
    tl_runtime *a = new_rt(), *b = new_rt();
    tl_chan *in, *side, *other;
    tl_tasklet *t;
    tl_value s;
    assert_int_equal(tl_register(a, &one_fn), TL_OK);
    assert_int_equal(tl_register(b, &one_fn), TL_OK);
    assert_int_equal(tl_chan_new(a, 0, &in), TL_OK);
    assert_int_equal(tl_chan_new(a, 4, &side), TL_OK);
    assert_int_equal(tl_chan_new(a, 0, &other), TL_OK);
    assert_int_equal(tl_chan_set_name(in, "in"), TL_OK);
    assert_int_equal(tl_chan_try_send(side, tl_i64(10)), TL_OK);
    assert_int_equal(tl_str_new(a, "twenty chars long!!!", 20, &s), TL_OK);
    assert_int_equal(tl_chan_try_send(side, s), TL_OK);
    tl_release(s);
    one_t args = {.in = in, .side = side};
    assert_int_equal(tl_spawn(a, &one_fn, &args, sizeof args, &t), TL_OK);
    one_t bystander = {.in = in};             /* also waits on in: stays behind */
    assert_int_equal(tl_spawn(a, &one_fn, &bystander, sizeof bystander, NULL), TL_OK);
    one_t unrelated = {.in = other};
    assert_int_equal(tl_spawn(a, &one_fn, &unrelated, sizeof unrelated, NULL), TL_OK);
    assert_int_equal(tl_run(a), TL_EDEADLOCK);
    assert_int_equal(tl_chan_balance(in), -2);

    void *buf;
    size_t len;
    assert_int_equal(tl_snapshot_save_tasklet(t, &buf, &len), TL_OK);
    assert_int_equal(tl_snapshot_load(b, buf, len), TL_OK);
    assert_int_equal(tl_tasklet_count(b), 1);
    tl_tasklet *moved = tl_tasklet_find(b, tl_tasklet_id(t));
    assert_non_null(moved);
    tl_tasklet_retain(moved);
    tl_chan *bin = tl_chan_find_name(b, "in");
    assert_non_null(bin);
    assert_int_equal(tl_chan_balance(bin), -1);           /* only the saved waiter */
    assert_non_null(tl_chan_find(b, tl_chan_id(side)));
    assert_int_equal(tl_chan_count(tl_chan_find(b, tl_chan_id(side))), 2);
    assert_null(tl_chan_find(b, tl_chan_id(other)));      /* not referenced */
    assert_int_equal(tl_chan_try_send(bin, tl_i64(5)), TL_OK);
    assert_int_equal(tl_run(b), TL_OK);
    tl_value r;
    assert_int_equal(tl_tasklet_result(moved, &r), TL_OK);
    assert_int_equal(tl_as_i64(r), 5 + 10 + 20);
    /* the source is untouched: still three blocked, marks cleared */
    assert_int_equal(tl_blocked_count(a), 3);
    void *whole;
    size_t wlen;
    assert_int_equal(tl_snapshot_save(a, &whole, &wlen), TL_OK);
    assert_true(wlen > len);
    tl_snapshot_free(a, whole, wlen);
    tl_snapshot_free(a, buf, len);
    tl_tasklet_release(moved);
    tl_tasklet_release(t);
    tl_chan_release(in);
    tl_chan_release(side);
    tl_chan_release(other);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

/* ---- shapes: a frame resumes only in a function of the same shape ----
 * snap.shift@1 in five builds: as saved, shifted by lines (loads), with a
 * point added, one removed, two swapped (each refused), and @2 with an
 * added point and an upgrade mapping the old points. */
typedef struct { tl_chan *in; tl_value v; int64_t log; } shift_t;
static const tl_field shift_fields[] = {
    TL_FIELD(shift_t, in, TL_T_CHAN), TL_FIELD(shift_t, v, TL_T_VALUE),
    TL_FIELD(shift_t, log, TL_T_I64),
};
#define SHIFT_FN(step, version) \
    {"snap.shift", (version), (step), sizeof(shift_t), shift_fields, TL_COUNTOF(shift_fields), NULL}

static tl_status shift_saved(tl_frame *f, void *locals)
{
    shift_t *L = locals;
    TL_BEGIN(f);
    L->log = 1;
    TL_YIELD(f);
    L->log = L->log * 10 + 2;
    TL_RECV(f, L->in, L->v);
    L->log = L->log * 10 + tl_as_i64(L->v);
    TL_YIELD(f);
    TL_RETURN(f, tl_i64(L->log * 10 + 4));
    TL_END(f);
}

/* the same function three lines further down, with code and comments
 * between its points: format 1 resumed it one point off */
static tl_status shift_moved(tl_frame *f, void *locals)
{
    shift_t *L = locals;
    int64_t unused = 0;
    (void)unused;
    TL_BEGIN(f);
    L->log = 1;

    /* a comment */
    TL_YIELD(f);
    unused++;
    L->log = L->log * 10 + 2;
    TL_RECV(f, L->in, L->v);
    unused++;
    L->log = L->log * 10 + tl_as_i64(L->v);
    TL_YIELD(f);
    TL_RETURN(f, tl_i64(L->log * 10 + 4));
    TL_END(f);
}

static tl_status shift_added(tl_frame *f, void *locals)
{
    shift_t *L = locals;
    TL_BEGIN(f);
    L->log = 1;
    TL_YIELD(f);
    L->log = L->log * 10 + 2;
    TL_YIELD(f); /* added */
    TL_RECV(f, L->in, L->v);
    L->log = L->log * 10 + tl_as_i64(L->v);
    TL_YIELD(f);
    TL_RETURN(f, tl_i64(L->log * 10 + 4));
    TL_END(f);
}

static tl_status shift_removed(tl_frame *f, void *locals)
{
    shift_t *L = locals;
    TL_BEGIN(f);
    L->log = 1;
    TL_YIELD(f);
    L->log = L->log * 10 + 2;
    TL_RECV(f, L->in, L->v);
    TL_RETURN(f, tl_i64(L->log * 10 + tl_as_i64(L->v)));
    TL_END(f);
}

static tl_status shift_swapped(tl_frame *f, void *locals)
{
    shift_t *L = locals;
    TL_BEGIN(f);
    L->log = 1;
    TL_RECV(f, L->in, L->v);
    L->log = L->log * 10 + tl_as_i64(L->v);
    TL_YIELD(f);
    TL_YIELD(f);
    TL_RETURN(f, tl_i64(L->log * 10 + 4));
    TL_END(f);
}

static const tl_func shift_saved_fn = SHIFT_FN(shift_saved, 1);
static const tl_func shift_moved_fn = SHIFT_FN(shift_moved, 1);
static const tl_func shift_added_fn = SHIFT_FN(shift_added, 1);
static const tl_func shift_removed_fn = SHIFT_FN(shift_removed, 1);
static const tl_func shift_swapped_fn = SHIFT_FN(shift_swapped, 1);
static const tl_func shift_v2_fn = SHIFT_FN(shift_added, 2);

/* A snapshot of snap.shift@1 blocked in its receive (resume point 2). */
static void shift_snapshot(void **buf, size_t *len)
{
    tl_runtime *a = new_rt();
    tl_chan *ch;
    assert_int_equal(tl_register(a, &shift_saved_fn), TL_OK);
    assert_string_equal(tl_func_shape(a, &shift_saved_fn), "YRY");
    assert_int_equal(tl_chan_new(a, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_set_name(ch, "in"), TL_OK);
    shift_t args = {.in = ch};
    assert_int_equal(tl_spawn(a, &shift_saved_fn, &args, sizeof args, NULL), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_run(a), TL_EDEADLOCK);
    save(a, buf, len);
    void *copy = malloc(*len); /* the tests free it with free() */
    memcpy(copy, *buf, *len);
    tl_snapshot_free(a, *buf, *len);
    *buf = copy;
    tl_runtime_free(a);
}

/* Loads the snapshot under fn and finishes it; the result, or the load's
 * error code. */
static int64_t shift_resume(const tl_func *fn, const void *buf, size_t len, tl_runtime **out)
{
    tl_runtime *b = new_rt();
    *out = b;
    assert_int_equal(tl_register(b, fn), TL_OK);
    int rc = tl_snapshot_load(b, buf, len);
    if (rc != TL_OK)
        return rc;
    return finish_counter(b);
}

static void test_shape_moved_lines_load(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    tl_runtime *b;
    shift_snapshot(&buf, &len);
    assert_int_equal(shift_resume(&shift_moved_fn, buf, len, &b), 1214);
    tl_runtime_free(b);
    free(buf);
}

static void expect_shape_refused(const tl_func *fn, const char *theirs)
{
    void *buf;
    size_t len;
    tl_runtime *b;
    shift_snapshot(&buf, &len);
    assert_int_equal(shift_resume(fn, buf, len, &b), TL_ESHAPE);
    const char *msg = tl_errmsg(b);
    assert_non_null(strstr(msg, "snap.shift@1 changed shape"));
    assert_non_null(strstr(msg, "3 points: 1 yield, 2 receive, 3 yield"));
    assert_non_null(strstr(msg, theirs));
    assert_non_null(strstr(msg, "Bump the function's version and register an upgrade"));
    assert_non_null(strstr(msg, "restore with the build that wrote the snapshot"));
    assert_int_equal(tl_tasklet_count(b), 0);
    tl_runtime_free(b);
    free(buf);
}

static void test_shape_point_added(void **state)
{
    (void)state;
    expect_shape_refused(&shift_added_fn, "4 points: 1 yield, 2 yield, 3 receive, 4 yield");
}

static void test_shape_point_removed(void **state)
{
    (void)state;
    expect_shape_refused(&shift_removed_fn, "2 points: 1 yield, 2 receive");
}

static void test_shape_points_swapped(void **state)
{
    (void)state;
    expect_shape_refused(&shift_swapped_fn, "3 points: 1 receive, 2 yield, 3 yield");
}

/* v2 inserted a yield before the receive: old points 2 and 3 are 3, 4 */
static int shift_upgrade(void *ud, uint32_t old_pc, tl_value old, void *nl, uint32_t *new_pc)
{
    (void)ud;
    (void)old;
    (void)nl;
    static const uint32_t map[] = {0, 1, 3, 4};
    if (old_pc >= TL_COUNTOF(map))
        return TL_EBADPC;
    *new_pc = map[old_pc];
    return TL_OK;
}

static int shift_bad_upgrade(void *ud, uint32_t old_pc, tl_value old, void *nl, uint32_t *new_pc)
{
    (void)ud;
    (void)old;
    (void)nl;
    *new_pc = old_pc + 10;
    return TL_OK;
}

static void test_shape_upgrade_maps_points(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    shift_snapshot(&buf, &len);
    tl_runtime *b = new_rt();
    assert_int_equal(tl_register(b, &shift_v2_fn), TL_OK);
    assert_int_equal(tl_register_upgrade(b, "snap.shift", 1, &shift_v2_fn, shift_upgrade, NULL),
                     TL_OK);
    int rc = tl_snapshot_load(b, buf, len);
    if (rc != TL_OK)
        fail_msg("%s", tl_errmsg(b));
    assert_int_equal(finish_counter(b), 1214); /* resumed at the receive */
    tl_runtime_free(b);
    /* an upgrade that names a point v2 lacks is refused */
    b = new_rt();
    assert_int_equal(tl_register(b, &shift_v2_fn), TL_OK);
    assert_int_equal(tl_register_upgrade(b, "snap.shift", 1, &shift_v2_fn, shift_bad_upgrade,
                                         NULL), TL_OK);
    assert_int_equal(tl_snapshot_load(b, buf, len), TL_EBADPC);
    assert_non_null(strstr(tl_errmsg(b), "gave resume point 12, but snap.shift@2 has 4"));
    tl_runtime_free(b);
    free(buf);
}

/* ---- select cases by schema field; a restored send case does not leak ---- */

/* the cases in the middle of the struct: their offset differs between
 * ABIs, their field name does not */
typedef struct { tl_chan *a; int64_t pad; tl_case cs[2]; tl_value v; tl_chan *b; int64_t idx; } mid_t;
static const tl_field mid_fields[] = {
    TL_FIELD(mid_t, a, TL_T_CHAN), TL_FIELD(mid_t, cs, TL_T_CASES),
    TL_FIELD(mid_t, v, TL_T_VALUE), TL_FIELD(mid_t, b, TL_T_CHAN), TL_FIELD(mid_t, idx, TL_T_I64),
};

/* sends v on a or receives on b; returns the index of the case */
static tl_status mid_select(tl_frame *f, void *locals)
{
    mid_t *L = locals;
    TL_BEGIN(f);
    L->cs[0] = (tl_case){L->a, TL_OP_SEND, L->v};
    L->cs[1] = (tl_case){L->b, TL_OP_RECV, tl_nil()};
    TL_SELECT(f, L->cs, 2, L->idx, L->v);
    TL_RETURN(f, tl_i64(L->idx));
    TL_END(f);
}
static const tl_func mid_fn = {"snap.mid_select", 1, mid_select, sizeof(mid_t), mid_fields,
                               TL_COUNTOF(mid_fields), NULL};

/* the same function with its cases outside any TL_T_CASES field */
static const tl_field mid_bad_fields[] = {
    TL_FIELD(mid_t, a, TL_T_CHAN), TL_FIELD(mid_t, v, TL_T_VALUE),
    TL_FIELD(mid_t, b, TL_T_CHAN), TL_FIELD(mid_t, idx, TL_T_I64),
};
static const tl_func mid_bad_fn = {"snap.mid_select", 1, mid_select, sizeof(mid_t),
                                   mid_bad_fields, TL_COUNTOF(mid_bad_fields), NULL};

typedef struct { tl_chan *a; tl_value v; int64_t idx; } stack_t_;
static const tl_field stack_fields[] = {
    TL_FIELD(stack_t_, a, TL_T_CHAN), TL_FIELD(stack_t_, v, TL_T_VALUE),
    TL_FIELD(stack_t_, idx, TL_T_I64),
};
static tl_status stack_select(tl_frame *f, void *locals)
{
    stack_t_ *L = locals;
    tl_case cs[1] = {{L->a, TL_OP_RECV, {0}}}; /* on the C stack: refused */
    TL_BEGIN(f);
    TL_SELECT(f, cs, 1, L->idx, L->v);
    TL_END(f);
}
static const tl_func stack_fn = {"snap.stack_select", 1, stack_select, sizeof(stack_t_),
                                 stack_fields, TL_COUNTOF(stack_fields), NULL};

static void expect_select_refused(const tl_func *fn, const void *args, size_t argsize,
                                  const char *where)
{
    tl_runtime *rt = new_rt();
    tl_tasklet *t;
    assert_int_equal(tl_register(rt, fn), TL_OK);
    assert_int_equal(tl_spawn(rt, fn, args, argsize, &t), TL_OK);
    tl_run(rt);
    assert_int_equal(tl_tasklet_state(t), TL_FAILED);
    assert_int_equal(tl_tasklet_error(t), TL_EINVAL);
    assert_non_null(strstr(tl_tasklet_errmsg(t), "the cases must be a TL_T_CASES field"));
    assert_non_null(strstr(tl_tasklet_errmsg(t), where));
    tl_tasklet_release(t);
    tl_runtime_free(rt);
}

static void test_select_cases_not_in_a_field(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_chan *a, *b;
    assert_int_equal(tl_chan_new(rt, 0, &a), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &b), TL_OK);
    mid_t m = {.a = a, .b = b};
    stack_t_ s = {.a = a};
    expect_select_refused(&stack_fn, &s, sizeof s, "outside the frame's locals");
    expect_select_refused(&mid_bad_fn, &m, sizeof m, "in no TL_T_CASES field");
    tl_chan_release(a);
    tl_chan_release(b);
    tl_runtime_free(rt);
}

/* A snapshot of mid_select waiting to send a string on "a" or receive on
 * "b", made in a runtime whose every byte is counted. */
static void mid_snapshot(void **buf, size_t *len)
{
    count_alloc ca;
    tl_config cfg = count_config(&ca);
    tl_runtime *a;
    tl_chan *ca_, *cb;
    tl_value msg;
    memset(&ca, 0, sizeof ca);
    ca.fail_at = -1;
    assert_int_equal(tl_runtime_new(&cfg, &a), TL_OK);
    assert_int_equal(tl_register(a, &mid_fn), TL_OK);
    assert_int_equal(tl_chan_new(a, 0, &ca_), TL_OK);
    assert_int_equal(tl_chan_new(a, 0, &cb), TL_OK);
    assert_int_equal(tl_chan_set_name(ca_, "a"), TL_OK);
    assert_int_equal(tl_chan_set_name(cb, "b"), TL_OK);
    assert_int_equal(tl_str_new(a, "a value of some sixty bytes, as the issue measured it", 54,
                                &msg), TL_OK);
    mid_t args = {.a = ca_, .v = msg, .b = cb};
    assert_int_equal(tl_spawn(a, &mid_fn, &args, sizeof args, NULL), TL_OK);
    tl_release(msg);
    tl_chan_release(ca_);
    tl_chan_release(cb);
    assert_int_equal(tl_run(a), TL_EDEADLOCK);
    void *tmp;
    save(a, &tmp, len);
    *buf = malloc(*len);
    memcpy(*buf, tmp, *len);
    tl_snapshot_free(a, tmp, *len);
    tl_runtime_free(a);
    assert_int_equal(ca.live, 0);
}

/* Loads the select, then fires its send case (fire) or kills it; every
 * byte is given back. */
static void mid_restore(const void *buf, size_t len, int fire)
{
    count_alloc ca;
    tl_config cfg = count_config(&ca);
    tl_runtime *b;
    tl_value got;
    memset(&ca, 0, sizeof ca);
    ca.fail_at = -1;
    assert_int_equal(tl_runtime_new(&cfg, &b), TL_OK);
    assert_int_equal(tl_register(b, &mid_fn), TL_OK);
    int rc = tl_snapshot_load(b, buf, len);
    if (rc != TL_OK)
        fail_msg("%s", tl_errmsg(b));
    tl_tasklet *t = tl_tasklet_retain(tl_tasklet_find(b, 1));
    assert_int_equal(tl_tasklet_wait(t), TL_WAIT_SELECT);
    if (fire) {
        assert_int_equal(tl_chan_try_recv(tl_chan_find_name(b, "a"), &got), TL_OK);
        assert_string_equal(tl_str_data(got, NULL),
                            "a value of some sixty bytes, as the issue measured it");
        tl_release(got);
        assert_int_equal(tl_run(b), TL_OK);
        assert_int_equal(tl_tasklet_result(t, &got), TL_OK);
        assert_int_equal(tl_as_i64(got), 0); /* the send case fired */
    } else {
        assert_int_equal(tl_kill(t), TL_OK);
    }
    tl_tasklet_release(t);
    tl_runtime_free(b);
    assert_int_equal(ca.live, 0); /* the loaded send value was released */
}

static void test_select_by_field_no_leak(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    mid_snapshot(&buf, &len);
    mid_restore(buf, len, 1);
    mid_restore(buf, len, 0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_mid_flight),
        cmocka_unit_test(test_shape_moved_lines_load),
        cmocka_unit_test(test_select_cases_not_in_a_field),
        cmocka_unit_test(test_select_by_field_no_leak),
        cmocka_unit_test(test_shape_point_added),
        cmocka_unit_test(test_shape_point_removed),
        cmocka_unit_test(test_shape_points_swapped),
        cmocka_unit_test(test_shape_upgrade_maps_points),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_truncated_and_flipped),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_wide_array_headers),
        cmocka_unit_test(test_wide_header_wrong_count),
        cmocka_unit_test(test_fired_bounded),
        cmocka_unit_test(test_wrong_magic_and_newer_format),
        cmocka_unit_test(test_unknown_function),
        cmocka_unit_test(test_not_empty),
        cmocka_unit_test(test_fields_added_and_removed),
        cmocka_unit_test(test_field_type_changed),
        cmocka_unit_test(test_upgrade_hook),
        cmocka_unit_test(test_dangling_channel),
        cmocka_unit_test(test_save_one_tasklet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
