/*
 * fuzz_frames.c -- libFuzzer harness for a node's frame decoder
 * (migrate/frame.c and the handlers it calls, docs/PROTOCOL.md) and for
 * what the frames then start.
 *
 * Input: one byte of options, then the bytes a peer sends on a link.  Bit 0
 * of the options byte set: the link counts as authenticated already (peer
 * "fuzz-peer"), so XFER, ACK, NACK, FORGET, OP, DONE and CANCEL are acted
 * on; clear: the link is in its handshake (HELLO, AUTH, the 1024-byte
 * limit).  The bytes go to tl__node_feed (migrate/node_internal.h), which
 * parses the frames, runs what they started, answers and drops the link.
 * Bit 1 set: before that, every stored (not compressed) record of every
 * snapshot inside an XFER frame gets a correct crc32 and rawlen
 * (fix_xfers), so that mutated snapshots reach the import decoder instead
 * of stopping at the CRC check.
 *
 * For each input, in a fresh runtime with the functions of fuzz_funcs.h and
 * fuzz_frame_funcs.h (fz.relay, the one the seeds move) and
 * a node "fuzz-node" holding named channels: "inbox" (exported; a pump waits on it
 * and forwards to "results", buffered) and "feed" (exported; a producer waits to
 * send on it).  Rules, any broken one aborts after saying which:
 *   - feeding never crashes, leaks or trips a sanitizer, whatever the bytes;
 *   - afterwards the runtime still saves, the save loads into another
 *     runtime (with a node, so "tl.agent" frames resolve), and the runtime
 *     keeps running (a bounded number of steps);
 *   - everything is freed (LeakSanitizer checks that).
 *
 * Without libFuzzer this is a plain LLVMFuzzerTestOneInput that replay.c
 * drives (meson tests 'fuzz-frames-corpus' and 'fuzz-frames-crashes').
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zlib.h>

#include "../../migrate/node_internal.h"
#include "../../persist/persist.h" /* tl__msgpack_check */
#include "fuzz_frame_funcs.h"

#define FZ_PEER "fuzz-peer"
#define FZ_SECRET "fuzz-frames-shared-secret"

static int64_t fake_now;

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

/* The node's log lines, shown when FZ_FRAMES_LOG is set (to see what a
 * seed does); with FZ_MUST_LOAD set, a refused tasklet aborts. */
static void node_log(void *ud, const char *msg)
{
    (void)ud;
    if (getenv("FZ_FRAMES_LOG"))
        fprintf(stderr, "fuzz_frames: %s\n", msg);
    /* the seeds are genuine frames, in every header width: none of their
     * tasklets may be refused (test fuzz-frames-corpus sets this) */
    if (getenv("FZ_MUST_LOAD") && strstr(msg, "refused")) {
        fprintf(stderr, "fuzz_frames: FZ_MUST_LOAD is set and: %s\n", msg);
        abort();
    }
}

static void die(const char *rule, tl_runtime *rt, int rc)
{
    fprintf(stderr, "fuzz_frames: %s (rc %d %s): %s\n", rule, rc, tl_errname(rc),
            rt ? tl_errmsg(rt) : "");
    abort();
}

static tl_runtime *new_runtime(tl_node **node)
{
    tl_runtime *rt;
    tl_config cfg = {0};
    cfg.clock = fake_clock;
    if (tl_runtime_new(&cfg, &rt) != TL_OK)
        die("tl_runtime_new failed", NULL, TL_ENOMEM);
    int rc = fz_register_common(rt);
    if (rc == TL_OK)
        rc = tl_register(rt, &fz_relay_fn);
    if (rc != TL_OK)
        die("registering the fuzz functions failed", rt, rc);
    tl_node_config nc = {0};
    nc.node_id = FZ_NODE;
    nc.secret = FZ_SECRET;
    nc.secret_len = strlen(FZ_SECRET);
    nc.log = node_log;
    rc = tl_node_new(rt, &nc, node);
    if (rc != TL_OK)
        die("tl_node_new failed", rt, rc);
    return rt;
}

static tl_chan *named_chan(tl_runtime *rt, size_t cap, const char *name)
{
    tl_chan *ch;
    int rc = tl_chan_new(rt, cap, &ch);
    if (rc == TL_OK)
        rc = tl_chan_set_name(ch, name);
    if (rc == TL_OK)
        rc = tl_chan_pin(ch, 1);
    if (rc != TL_OK)
        die("making a named channel failed", rt, rc);
    return ch;
}

/* The home side of remote operations: "inbox" has a receiver, "feed" a
 * sender waiting (both exported: peers reach only those), "results"
 * buffers what the pump forwards. */
static void populate(tl_runtime *rt, tl_node *n)
{
    tl_chan *inbox = named_chan(rt, 0, "inbox");
    tl_chan *results = named_chan(rt, 4, "results");
    tl_chan *feed = named_chan(rt, 0, "feed");
    fz_all pump = {.in = inbox, .out = results, .n = 3};
    fz_all prod = {.out = feed, .n = 2};
    int rc = tl_spawn(rt, &fz_pump_fn, &pump, sizeof pump, NULL);
    if (rc == TL_OK)
        rc = tl_spawn(rt, &fz_producer_fn, &prod, sizeof prod, NULL);
    if (rc == TL_OK)
        rc = tl_node_export(n, inbox, "inbox");
    if (rc == TL_OK)
        rc = tl_node_export(n, feed, "feed");
    if (rc != TL_OK)
        die("tl_spawn or tl_node_export failed", rt, rc);
    tl_chan_release(inbox);
    tl_chan_release(results);
    tl_chan_release(feed);
    rc = tl_run_steps(rt, 1000, NULL);
    if (rc != TL_OK)
        die("running the home tasklets failed", rt, rc);
}

/* Whatever the frames did, the runtime must save and the save load. */
static void check_save(tl_runtime *rt)
{
    void *buf;
    size_t len;
    int rc = tl_snapshot_save(rt, &buf, &len);
    if (rc != TL_OK)
        die("the runtime does not save after the frames", rt, rc);
    tl_node *n2;
    tl_runtime *rt2 = new_runtime(&n2);
    rc = tl_snapshot_load(rt2, buf, len);
    if (rc != TL_OK)
        die("the runtime's save does not load", rt2, rc);
    tl_snapshot_free(rt, buf, len);
    tl_node_free(n2);
    tl_runtime_free(rt2);
}

/* ---- bit 1: fix the CRCs of transferred snapshots ---- */

/* msgpack_sbuffer_write, but a no-op for 0 bytes (msgpack-c would do
 * pointer arithmetic on the empty buffer's NULL). */
static void put(msgpack_sbuffer *out, const void *p, size_t n)
{
    if (n)
        msgpack_sbuffer_write(out, p, n);
}

/* A record [tag, flags, crc32, rawlen, payload] stored uncompressed, with
 * its crc32 and rawlen made right; anything else as it was. */
static void pack_record(msgpack_packer *pk, const msgpack_object *r)
{
    const msgpack_object *a = r->via.array.ptr;
    if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size != 5 ||
        a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[1].via.u64 != 0 ||
        a[4].type != MSGPACK_OBJECT_BIN) {
        msgpack_pack_object(pk, *r);
        return;
    }
    msgpack_pack_array(pk, 5);
    msgpack_pack_object(pk, a[0]);
    msgpack_pack_object(pk, a[1]);
    msgpack_pack_uint32(pk, (uint32_t)crc32(0L, (const Bytef *)a[4].via.bin.ptr,
                                            (uInt)a[4].via.bin.size));
    msgpack_pack_uint32(pk, a[4].via.bin.size);
    msgpack_pack_object(pk, a[4]);
}

/* A standalone snapshot [magic, format, head, [[kind, key, record]...]]
 * with its records fixed, into out. */
static void fix_snapshot(const char *p, size_t n, msgpack_sbuffer *out)
{
    msgpack_unpacked up;
    msgpack_packer pk;
    size_t off = 0;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_unpacked_init(&up);
    /* msgpack-c allocates what counts announce: pre-scan, as the library does */
    int ok = tl__msgpack_check((const unsigned char *)p, n, 40) == n &&
             msgpack_unpack_next(&up, p, n, &off) == MSGPACK_UNPACK_SUCCESS && off == n;
    const msgpack_object *o = &up.data, *a = o->via.array.ptr;
    if (!ok || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4 ||
        a[3].type != MSGPACK_OBJECT_ARRAY) {
        put(out, p, n);
        msgpack_unpacked_destroy(&up);
        return;
    }
    msgpack_pack_array(&pk, 4);
    msgpack_pack_object(&pk, a[0]);
    msgpack_pack_object(&pk, a[1]);
    pack_record(&pk, &a[2]);
    msgpack_pack_array(&pk, a[3].via.array.size);
    for (uint32_t i = 0; i < a[3].via.array.size; i++) {
        const msgpack_object *c = &a[3].via.array.ptr[i];
        if (c->type != MSGPACK_OBJECT_ARRAY || c->via.array.size != 3) {
            msgpack_pack_object(&pk, *c);
            continue;
        }
        msgpack_pack_array(&pk, 3);
        msgpack_pack_object(&pk, c->via.array.ptr[0]);
        msgpack_pack_object(&pk, c->via.array.ptr[1]);
        pack_record(&pk, &c->via.array.ptr[2]);
    }
    msgpack_unpacked_destroy(&up);
}

/* One frame's body, an XFER's snapshots fixed, into out. */
static void fix_frame(const char *p, size_t n, msgpack_sbuffer *out)
{
    msgpack_unpacked up;
    msgpack_packer pk;
    size_t off = 0;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_unpacked_init(&up);
    /* msgpack-c allocates what counts announce: pre-scan, as the library does */
    int ok = tl__msgpack_check((const unsigned char *)p, n, 40) == n &&
             msgpack_unpack_next(&up, p, n, &off) == MSGPACK_UNPACK_SUCCESS && off == n;
    const msgpack_object *o = &up.data, *a = o->via.array.ptr;
    if (!ok || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
        a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 != 10 ||
        a[1].type != MSGPACK_OBJECT_ARRAY) {
        put(out, p, n);
        msgpack_unpacked_destroy(&up);
        return;
    }
    msgpack_pack_array(&pk, 2);
    msgpack_pack_object(&pk, a[0]);
    msgpack_pack_array(&pk, a[1].via.array.size);
    for (uint32_t i = 0; i < a[1].via.array.size; i++) {
        const msgpack_object *it = &a[1].via.array.ptr[i];
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 2 ||
            it->via.array.ptr[1].type != MSGPACK_OBJECT_BIN) {
            msgpack_pack_object(&pk, *it);
            continue;
        }
        msgpack_sbuffer snap;
        msgpack_sbuffer_init(&snap);
        fix_snapshot(it->via.array.ptr[1].via.bin.ptr, it->via.array.ptr[1].via.bin.size, &snap);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_object(&pk, it->via.array.ptr[0]);
        msgpack_pack_bin(&pk, snap.size);
        if (snap.size)
            msgpack_pack_bin_body(&pk, snap.data, snap.size);
        msgpack_sbuffer_destroy(&snap);
    }
    msgpack_unpacked_destroy(&up);
}

/* The byte stream with every complete frame passed through fix_frame (its
 * length prefix rewritten); what follows the last one is kept as is. */
static void fix_xfers(const uint8_t *in, size_t len, msgpack_sbuffer *out)
{
    size_t off = 0;
    while (len - off >= 4) {
        const uint8_t *h = in + off;
        size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (n > len - off - 4)
            break;
        size_t at = out->size;
        put(out, "\0\0\0\0", 4);
        fix_frame((const char *)h + 4, n, out);
        size_t m = out->size - at - 4;
        unsigned char *p = (unsigned char *)out->data + at;
        p[0] = (unsigned char)(m >> 24);
        p[1] = (unsigned char)(m >> 16);
        p[2] = (unsigned char)(m >> 8);
        p[3] = (unsigned char)m;
        off += 4 + n;
    }
    put(out, in + off, len - off);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fake_now = FZ_EPOCH;
    tl_node *n;
    tl_runtime *rt = new_runtime(&n);
    populate(rt, n);
    if (data[0] & 2) {
        msgpack_sbuffer fixed;
        msgpack_sbuffer_init(&fixed);
        fix_xfers(data + 1, size - 1, &fixed);
        tl__node_feed(n, fixed.size ? fixed.data : "", fixed.size, data[0] & 1);
        msgpack_sbuffer_destroy(&fixed);
    } else {
        tl__node_feed(n, data + 1, size - 1, data[0] & 1);
    }
    check_save(rt);
    fake_now += 1000000000; /* sleepers wake */
    tl_run_steps(rt, 1000, NULL);
    tl_node_free(n);
    tl_runtime_free(rt);
    return 0;
}
