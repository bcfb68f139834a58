/*
 * make_frame_seeds.c -- writes the frame fuzzer's seed corpus
 * (corpus-frames/): one options byte (bit 0: the link is authenticated,
 * bit 1: the harness fixes snapshot CRCs)
 * then frames as a peer "fuzz-peer" sends them to node "fuzz-node"
 * (docs/PROTOCOL.md): HELLO, a HELLO of another protocol version, AUTH,
 * XFER with real moving-tasklet snapshots (tl__snapshot_save_moving, what
 * tl_node_migrate sends), OP, DONE, CANCEL, CANCELLED, ACK, NACK, FORGET, ERROR, and
 * garbage.
 *
 * Usage: make_frame_seeds DIR.  The snapshots hold a time and the XFER ids
 * are fixed, so the bytes differ between runs only in the snapshot times.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "../../migrate/node_internal.h"
#include "../../persist/persist.h"
#include "fuzz_frame_funcs.h"
#include "fuzz_mp.h"

#define FZ_PEER "fuzz-peer"

enum { M_HELLO = 1, M_AUTH = 2, M_ERROR = 3, M_XFER = 10, M_ACK = 11, M_NACK = 12,
       M_FORGET = 13, M_OP = 20, M_DONE = 21, M_CANCEL = 22, M_CANCELLED = 23 };

static int64_t fake_now = FZ_EPOCH;

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

#define CHECK(call)                                                            \
    do {                                                                       \
        int rc_ = (call);                                                      \
        if (rc_ != TL_OK) {                                                    \
            fprintf(stderr, "make_frame_seeds:%d: %s: %s\n", __LINE__, #call,  \
                    tl_strerror(rc_));                                         \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

/* ---- a seed: the options byte, then frames ---- */

static msgpack_sbuffer seed;
static msgpack_packer pk;
static size_t frame_at;
static int wide_cls; /* 0, or every header wider, in that class (fuzz_mp.h) */

/* opts: bit 0 the link is authenticated, bit 1 the harness fixes the
 * CRCs of transferred snapshots (fuzz_frames.c). */
static void seed_begin(int opts)
{
    msgpack_sbuffer_init(&seed);
    msgpack_packer_init(&pk, &seed, msgpack_sbuffer_write);
    char opt = (char)opts;
    msgpack_sbuffer_write(&seed, &opt, 1);
}

static void frame_begin(void)
{
    frame_at = seed.size;
    msgpack_sbuffer_write(&seed, "\0\0\0\0", 4);
}

static void frame_end(void)
{
    if (wide_cls) { /* the frame's body again, with wider headers */
        msgpack_sbuffer w;
        msgpack_sbuffer_init(&w);
        size_t body = frame_at + 4, n = seed.size - body;
        if (mp_widen((const uint8_t *)seed.data + body, n, &w, wide_cls, 64) != n) {
            fprintf(stderr, "make_frame_seeds: cannot widen a frame\n");
            exit(1);
        }
        seed.size = body;
        msgpack_sbuffer_write(&seed, w.data, w.size);
        msgpack_sbuffer_destroy(&w);
    }
    size_t n = seed.size - frame_at - 4;
    unsigned char *p = (unsigned char *)seed.data + frame_at;
    p[0] = (unsigned char)(n >> 24);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
}

static void str(const char *s)
{
    msgpack_pack_str(&pk, strlen(s));
    msgpack_pack_str_body(&pk, s, strlen(s));
}

static void bin(const void *p, size_t n)
{
    msgpack_pack_bin(&pk, n);
    msgpack_pack_bin_body(&pk, p, n);
}

static void seed_write(const char *dir, const char *name)
{
    char path[4096];
    if (wide_cls)
        snprintf(path, sizeof path, "%s/%s-w%d", dir, name, wide_cls);
    else
        snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(seed.data, 1, seed.size, f) != seed.size || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    msgpack_sbuffer_destroy(&seed);
}

static void hello(uint32_t version)
{
    static const unsigned char nonce[32] = {1, 2, 3, 4, 5, 6, 7, 8};
    frame_begin();
    msgpack_pack_array(&pk, 6);
    msgpack_pack_uint8(&pk, M_HELLO);
    str("libtasklet-node");
    msgpack_pack_uint32(&pk, version);
    str(FZ_PEER);
    bin(nonce, sizeof nonce);
    msgpack_pack_uint8(&pk, 3); /* the cipher offer: both */
    frame_end();
}

static void auth(void)
{
    static const unsigned char mac[32] = {9, 9, 9};
    frame_begin();
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, M_AUTH);
    bin(mac, sizeof mac);
    frame_end();
}

static void xfer(const char *xid, const void *snap, size_t len)
{
    msgpack_sbuffer w;
    msgpack_sbuffer_init(&w);
    if (wide_cls && !mp_widen_snapshot(snap, len, wide_cls, &w)) {
        fprintf(stderr, "make_frame_seeds: cannot widen a snapshot\n");
        exit(1);
    }
    frame_begin();
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, M_XFER);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    str(xid);
    if (wide_cls)
        bin(w.data, w.size);
    else
        bin(snap, len);
    frame_end();
    msgpack_sbuffer_destroy(&w);
}

static void op(uint64_t req, int kind, uint64_t id, const char *name, int64_t value)
{
    frame_begin();
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, M_OP);
    msgpack_pack_uint64(&pk, req);
    msgpack_pack_uint8(&pk, (uint8_t)kind);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, id);
    if (name)
        str(name);
    else
        msgpack_pack_nil(&pk);
    if (kind == TL_OP_SEND)
        msgpack_pack_int64(&pk, value);
    else
        msgpack_pack_nil(&pk);
    frame_end();
}

static void done(uint64_t req, int code, const char *msg, int64_t value)
{
    frame_begin();
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, M_DONE);
    msgpack_pack_uint64(&pk, req);
    msgpack_pack_int(&pk, code);
    if (msg)
        str(msg);
    else
        msgpack_pack_nil(&pk);
    if (code == 0)
        msgpack_pack_int64(&pk, value);
    else
        msgpack_pack_nil(&pk);
    frame_end();
}

static void xid_list(int type, const char *xid)
{
    frame_begin();
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, (uint8_t)type);
    msgpack_pack_array(&pk, 1);
    str(xid);
    frame_end();
}

/* ---- moving-tasklet snapshots, as the peer "fuzz-peer" makes them ---- */

static tl_runtime *peer_rt(tl_node **node)
{
    tl_runtime *rt;
    tl_config cfg = {0};
    cfg.clock = fake_clock;
    CHECK(tl_runtime_new(&cfg, &rt));
    CHECK(fz_register_common(rt));
    CHECK(tl_register(rt, &fz_relay_fn));
    tl_node_config nc = {0};
    nc.node_id = FZ_PEER;
    CHECK(tl_node_new(rt, &nc, node));
    return rt;
}

typedef struct snap {
    void *p;
    size_t len;
} snap;

static snap take(tl_runtime *rt, tl_tasklet *t)
{
    snap s;
    void *buf;
    /* t is the program's handle; the internal call takes the object */
    if (tl__snapshot_save_moving(tl__tasklet_at(t), &buf, &s.len) != TL_OK) {
        fprintf(stderr, "make_frame_seeds: %s (state %d)\n", tl_errmsg(rt), (int)tl_tasklet_state(t));
        exit(1);
    }
    s.p = malloc(s.len);
    memcpy(s.p, buf, s.len);
    tl_snapshot_free(rt, buf, s.len);
    return s;
}

/* A relay blocked in a receive on a channel of the peer's: at fuzz-node it
 * becomes a remote receive, an OP back to fuzz-peer (request 1). */
static snap snap_remote_recv(void)
{
    tl_node *n;
    tl_runtime *rt = peer_rt(&n);
    tl_chan *in;
    tl_tasklet *t;
    CHECK(tl_chan_new(rt, 0, &in));
    fz_relay a = {.in = in, .n = 2};
    CHECK(tl_spawn(rt, &fz_relay_fn, &a, sizeof a, &t));
    CHECK(tl_run_steps(rt, 100, NULL));
    snap s = take(rt, t);
    tl_tasklet_release(t);
    tl_chan_release(in);
    tl_node_free(n);
    tl_runtime_free(rt);
    return s;
}

/* A runnable relay holding fuzz-node's own "inbox" (a proxy at the peer):
 * at fuzz-node it resolves to the local channel. */
static snap snap_home_chan(void)
{
    tl_node *n;
    tl_runtime *rt = peer_rt(&n);
    tl_chan *in, *out;
    tl_tasklet *t;
    CHECK(tl_node_chan(n, FZ_NODE "/inbox", &in));
    CHECK(tl_chan_new(rt, 2, &out));
    fz_relay a = {.in = in, .out = out, .n = 1};
    CHECK(tl_spawn(rt, &fz_relay_fn, &a, sizeof a, &t));
    snap s = take(rt, t);
    tl_tasklet_release(t);
    tl_chan_release(in);
    tl_chan_release(out);
    tl_node_free(n);
    tl_runtime_free(rt);
    return s;
}

/* A sleeper that then sends, and a square mid-call (nested frames). */
static snap snap_sleeper(void)
{
    tl_node *n;
    tl_runtime *rt = peer_rt(&n);
    tl_chan *out;
    tl_tasklet *t;
    CHECK(tl_chan_new(rt, 0, &out));
    fz_relay a = {.out = out, .until = FZ_EPOCH + 500000000, .n = 1, .v = {0}};
    CHECK(tl_spawn(rt, &fz_relay_fn, &a, sizeof a, &t));
    CHECK(tl_run_steps(rt, 100, NULL));
    snap s = take(rt, t);
    tl_tasklet_release(t);
    tl_chan_release(out);
    tl_node_free(n);
    tl_runtime_free(rt);
    return s;
}

static snap snap_nested(void)
{
    tl_node *n;
    tl_runtime *rt = peer_rt(&n);
    tl_tasklet *t;
    fz_square a = {.x = 12};
    CHECK(tl_spawn(rt, &fz_square_fn, &a, sizeof a, &t));
    /* it runs while alone: a second tasklet makes its yields suspend it */
    fz_leaf other = {.k = 1};
    CHECK(tl_spawn(rt, &fz_leaf_fn, &other, sizeof other, NULL));
    CHECK(tl_run_steps(rt, 2, NULL));
    snap s = take(rt, t);
    tl_tasklet_release(t);
    tl_node_free(n);
    tl_runtime_free(rt);
    return s;
}

#define XID1 "0123456789abcdef0123456789abcdef"
#define XID2 "fedcba9876543210fedcba9876543210"

/* Every seed, its headers in the width class wide_cls (0: shortest). */
static void write_seeds(const char *dir, snap recv, snap home, snap sleeper, snap nested)
{
    seed_begin(0); hello(TL_PROTO_VERSION); seed_write(dir, "hello");
    seed_begin(0); hello(TL_PROTO_VERSION); auth(); seed_write(dir, "hello-auth");
    seed_begin(0); hello(TL_PROTO_VERSION + 1); seed_write(dir, "hello-version2");
    seed_begin(0); op(1, TL_OP_SEND, 0, "inbox", 5); seed_write(dir, "op-before-auth");

    seed_begin(3); xfer(XID1, recv.p, recv.len); seed_write(dir, "xfer-remote-recv");
    seed_begin(3); xfer(XID1, recv.p, recv.len); done(1, 0, NULL, 42);
    seed_write(dir, "xfer-remote-recv-done");
    seed_begin(3); xfer(XID1, recv.p, recv.len); done(1, TL_ECLOSED, "closed at home", 0);
    seed_write(dir, "xfer-remote-recv-error");
    seed_begin(3); xfer(XID1, home.p, home.len); xfer(XID1, home.p, home.len);
    seed_write(dir, "xfer-home-chan-twice");
    seed_begin(3); xfer(XID1, home.p, home.len); xid_list(M_FORGET, XID1);
    xfer(XID1, home.p, home.len); seed_write(dir, "xfer-forget-xfer");
    seed_begin(3); xfer(XID2, sleeper.p, sleeper.len); seed_write(dir, "xfer-sleeper");
    seed_begin(3); xfer(XID2, nested.p, nested.len); seed_write(dir, "xfer-nested");

    seed_begin(1); op(1, TL_OP_SEND, 0, "inbox", 5); op(2, TL_OP_RECV, 0, "results", 0);
    op(3, TL_OP_RECV, 0, "feed", 0); seed_write(dir, "op-named");
    seed_begin(1); op(7, TL_OP_SEND, 1, NULL, -3); op(8, TL_OP_RECV, 3, NULL, 0);
    op(9, TL_OP_RECV, 99, NULL, 0); seed_write(dir, "op-by-id");
    seed_begin(1); op(4, TL_OP_RECV, 0, "inbox", 0);
    frame_begin(); msgpack_pack_array(&pk, 2); msgpack_pack_uint8(&pk, M_CANCEL);
    msgpack_pack_uint64(&pk, 4); frame_end(); seed_write(dir, "op-cancel");
    seed_begin(3); xfer(XID1, recv.p, recv.len);
    frame_begin(); msgpack_pack_array(&pk, 2); msgpack_pack_uint8(&pk, M_CANCELLED);
    msgpack_pack_uint64(&pk, 1); frame_end(); seed_write(dir, "xfer-remote-recv-cancelled");
    seed_begin(1); done(1, 0, NULL, 1); done(2, TL_ELINK, "gone", 0);
    seed_write(dir, "done-unknown");
    seed_begin(1); xid_list(M_ACK, XID1); xid_list(M_FORGET, XID2);
    frame_begin(); msgpack_pack_array(&pk, 4); msgpack_pack_uint8(&pk, M_NACK); str(XID1);
    msgpack_pack_int(&pk, TL_ENOENT); str("no such function"); frame_end();
    seed_write(dir, "ack-nack-forget");
    seed_begin(1);
    frame_begin(); msgpack_pack_array(&pk, 3); msgpack_pack_uint8(&pk, M_ERROR);
    msgpack_pack_int(&pk, TL_EPROTO); str("bye"); frame_end();
    seed_write(dir, "error");
    if (!wide_cls) {
        seed_begin(1); msgpack_sbuffer_write(&seed, "\0\0\0\x05\x93\x01\xc1\xff\x00garbage", 16);
        seed_write(dir, "garbage");
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    snap recv = snap_remote_recv(), home = snap_home_chan(), sleeper = snap_sleeper(),
         nested = snap_nested();

    for (wide_cls = 0; wide_cls <= 3; wide_cls++)
        write_seeds(dir, recv, home, sleeper, nested);

    free(recv.p);
    free(home.p);
    free(sleeper.p);
    free(nested.p);
    return 0;
}
