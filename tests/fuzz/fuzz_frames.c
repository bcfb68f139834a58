/*
 * fuzz_frames.c -- libFuzzer harness for a node's frame decoder
 * (migrate/node.c, docs/PROTOCOL.md) and for what the frames then start.
 *
 * Input: one byte of options, then the bytes a peer sends on a link.  Bit 0
 * of the options byte set: the link counts as authenticated already (peer
 * "fuzz-peer"), so XFER, ACK, NACK, FORGET, OP, DONE and CANCEL are acted
 * on; clear: the link is in its handshake (HELLO, AUTH, the 1024-byte
 * limit).  The bytes go to tl__node_feed (migrate/node_internal.h), which
 * parses the frames, runs what they started, answers and drops the link.
 *
 * For each input, in a fresh runtime with the functions of fuzz_funcs.h and
 * fuzz_frame_funcs.h (fz.relay, the one the seeds move) and
 * a node "fuzz-node" holding named channels: "inbox" (a pump waits on it
 * and forwards to "results", buffered) and "feed" (a producer waits to
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

#include "../../migrate/node_internal.h"
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
 * seed does). */
static void node_log(void *ud, const char *msg)
{
    (void)ud;
    if (getenv("FZ_FRAMES_LOG"))
        fprintf(stderr, "fuzz_frames: %s\n", msg);
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
 * sender waiting, "results" buffers what the pump forwards. */
static void populate(tl_runtime *rt)
{
    tl_chan *inbox = named_chan(rt, 0, "inbox");
    tl_chan *results = named_chan(rt, 4, "results");
    tl_chan *feed = named_chan(rt, 0, "feed");
    fz_all pump = {.in = inbox, .out = results, .n = 3};
    fz_all prod = {.out = feed, .n = 2};
    int rc = tl_spawn(rt, &fz_pump_fn, &pump, sizeof pump, NULL);
    if (rc == TL_OK)
        rc = tl_spawn(rt, &fz_producer_fn, &prod, sizeof prod, NULL);
    if (rc != TL_OK)
        die("tl_spawn failed", rt, rc);
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fake_now = FZ_EPOCH;
    tl_node *n;
    tl_runtime *rt = new_runtime(&n);
    populate(rt);
    tl__node_feed(n, data + 1, size - 1, data[0] & 1);
    check_save(rt);
    fake_now += 1000000000; /* sleepers wake */
    tl_run_steps(rt, 1000, NULL);
    tl_node_free(n);
    tl_runtime_free(rt);
    return 0;
}
