/*
 * make_seeds.c -- writes the fuzzer's seed corpus: small real snapshots
 * (tl_snapshot_save output) of runtimes caught mid-flight, one file per
 * situation the decoder must rebuild: blocked senders and receivers,
 * buffered values of every type, nested frames, selects, sleepers, joins,
 * ended tasklets still referenced, pending errors, a frame of an old
 * function version, and ids spread over several chunks.  Each is also
 * written three more times (seed-NAME-w1, -w2, -w3) with every msgpack
 * header, of the outer structure and inside each record's document,
 * wider than it needs (fuzz_mp.h: array/map 16 and 32, str 8/16/32,
 * bin 8/16/32, wider integers): valid msgpack a reader must take, so that
 * the fuzzers start from every width (test fuzz-corpus loads each).
 *
 * Usage: make_seeds DIR.  Deterministic: a fake clock and a fixed node id,
 * so regenerating gives the same bytes (unless fuzz_funcs.h changed).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "fuzz_funcs.h"
#include "fuzz_mp.h"

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
            fprintf(stderr, "make_seeds:%d: %s: %s\n", __LINE__, #call,        \
                    tl_strerror(rc_));                                         \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    tl_config cfg = {0};
    fake_now = FZ_EPOCH;
    cfg.clock = fake_clock;
    CHECK(tl_runtime_new(&cfg, &rt));
    CHECK(tl_set_node_id(rt, FZ_NODE));
    CHECK(fz_register_common(rt));
    CHECK(tl_register(rt, &fz_counter1_fn));
    return rt;
}

static tl_chan *chan(tl_runtime *rt, size_t cap, const char *name)
{
    tl_chan *ch;
    CHECK(tl_chan_new(rt, cap, &ch));
    if (name)
        CHECK(tl_chan_set_name(ch, name));
    return ch;
}

/* Spawns fn over a copy of args; returns a handle the caller releases. */
static tl_tasklet *spawn(tl_runtime *rt, const tl_func *fn, const void *args, size_t n,
                         const char *name)
{
    tl_tasklet *t;
    CHECK(tl_spawn(rt, fn, args, n, &t));
    if (name)
        CHECK(tl_tasklet_set_name(t, name));
    return t;
}

static void spawn_detached(tl_runtime *rt, const tl_func *fn, const void *args, size_t n)
{
    CHECK(tl_spawn(rt, fn, args, n, NULL));
}

static void run_until_stuck(tl_runtime *rt)
{
    int rc = tl_run(rt);
    if (rc != TL_OK && rc != TL_EDEADLOCK) {
        fprintf(stderr, "make_seeds: run: %s\n", tl_errmsg(rt));
        exit(1);
    }
}

static void run_steps(tl_runtime *rt, uint64_t n)
{
    uint64_t ran;
    CHECK(tl_run_steps(rt, n, &ran));
}

static tl_value str(tl_runtime *rt, const char *s)
{
    tl_value v;
    CHECK(tl_str_new(rt, s, strlen(s), &v));
    return v;
}

/* ---- the situations ---- */

/* Three receivers queued on "pipe"; two producers blocked sending on
 * "out", each holding its value in flight. */
static void seed_rendezvous(tl_runtime *rt)
{
    tl_chan *pipe = chan(rt, 0, "pipe"), *out = chan(rt, 0, "out");
    fz_all r = {.in = pipe, .n = 4}, p = {.out = out, .n = 3};
    for (int i = 0; i < 3; i++)
        spawn_detached(rt, &fz_pump_fn, &r, sizeof r);
    for (int i = 0; i < 2; i++)
        spawn_detached(rt, &fz_producer_fn, &p, sizeof p);
    tl_chan_release(pipe);
    tl_chan_release(out);
    run_until_stuck(rt);
}

/* Buffers holding a value of every kind; a closing channel; preference
 * and schedule_all set. */
static void seed_buffered(tl_runtime *rt)
{
    tl_chan *buf = chan(rt, 8, "buffered"), *more = chan(rt, 4, NULL);
    tl_chan *closing = chan(rt, 2, "closing"), *idle = chan(rt, 0, "idle");
    CHECK(tl_chan_set_preference(buf, 1));
    CHECK(tl_chan_set_schedule_all(buf, 1));
    CHECK(tl_chan_set_preference(more, 0));
    fz_all a = {.in = idle, .out = buf, .n = 2};
    tl_tasklet *holder = spawn(rt, &fz_pump_fn, &a, sizeof a, "holder");
    fz_all b = {.in = idle, .out = more, .peer = holder, .n = 2, .u64 = 7, .i32 = -3, .u32 = 9,
                .d = 1.25, .flag = true, .tag = "tagged!"};
    b.v = str(rt, "a string local");
    spawn_detached(rt, &fz_pump_fn, &b, sizeof b);
    tl_release(b.v);
    fz_all c = {.in = idle, .out = closing, .n = 1};
    spawn_detached(rt, &fz_pump_fn, &c, sizeof c);

    tl_value inner[2], arr, map, kv[4], s = str(rt, "hello"), bin;
    CHECK(tl_bin_new(rt, "\x00\x01\x02\xff", 4, &bin));
    inner[0] = tl_f64(3.0);
    inner[1] = str(rt, "two");
    CHECK(tl_array_new(rt, inner, 2, &arr));
    kv[0] = str(rt, "k");
    kv[1] = arr;
    kv[2] = tl_i64(2);
    kv[3] = tl_nil();
    CHECK(tl_map_new(rt, kv, 2, &map));
    tl_value vals[] = {
        tl_nil(), tl_bool(1), tl_i64(-5), tl_u64(UINT64_MAX - 5), tl_f64(2.5), s, bin, map,
    };
    for (size_t i = 0; i < TL_COUNTOF(vals); i++)
        CHECK(tl_chan_try_send(buf, vals[i]));
    tl_value err = tl_error_value(rt, TL_EUSER - 7, "an error in a buffer");
    tl_value cv = tl_chan_value(closing), tv = tl_tasklet_value(holder);
    CHECK(tl_chan_try_send(more, err));
    CHECK(tl_chan_try_send(more, cv));
    CHECK(tl_chan_try_send(more, tv));
    CHECK(tl_chan_try_send(closing, tl_i64(99)));
    CHECK(tl_chan_close(closing));
    tl_release(err);
    tl_release(cv);
    tl_release(tv);
    tl_release(s);
    tl_release(bin);
    tl_release(inner[1]);
    tl_release(kv[0]);
    tl_release(arr);
    tl_release(map);
    tl_tasklet_release(holder);
    tl_chan_release(buf);
    tl_chan_release(more);
    tl_chan_release(closing);
    tl_chan_release(idle);
    run_until_stuck(rt);
}

/* A producer three frames deep (producer -> square -> leaf), runnable. */
static void seed_nested(tl_runtime *rt)
{
    tl_chan *out = chan(rt, 0, "out");
    fz_all p = {.out = out, .n = 2};
    spawn_detached(rt, &fz_producer_fn, &p, sizeof p);
    spawn_detached(rt, &fz_producer_fn, &p, sizeof p);
    tl_chan_release(out);
    run_steps(rt, 3);
}

/* Two selectors waiting on the same three channels, behind a plain
 * receiver on one of them; the send case offers a string. */
static void seed_select(tl_runtime *rt)
{
    tl_chan *a = chan(rt, 0, "a"), *b = chan(rt, 0, "b"), *c = chan(rt, 0, "c");
    fz_all r = {.in = a, .n = 1};
    spawn_detached(rt, &fz_pump_fn, &r, sizeof r);
    fz_sel s = {.a = a, .b = b, .c = c};
    tl_tasklet *t = spawn(rt, &fz_selector_fn, &s, sizeof s, "selector");
    spawn_detached(rt, &fz_selector_fn, &s, sizeof s);
    tl_tasklet_release(t);
    tl_chan_release(a);
    tl_chan_release(b);
    tl_chan_release(c);
    run_until_stuck(rt);
}

/* A selector whose cases sit at a non-zero offset of its locals, offering
 * a value on one channel; a plain sender queued ahead of it. */
static void seed_select_offset(tl_runtime *rt)
{
    tl_chan *a = chan(rt, 0, "a"), *b = chan(rt, 1, "b");
    fz_all p = {.out = a, .n = 1};
    spawn_detached(rt, &fz_producer_fn, &p, sizeof p);
    fz_sel2 s = {.a = a, .b = b};
    s.v = str(rt, "offered");
    spawn_detached(rt, &fz_selector2_fn, &s, sizeof s);
    tl_release(s.v);
    tl_chan_release(a);
    tl_chan_release(b);
    run_until_stuck(rt);
}

/* What only the host held when the snapshot was taken (the loader drops
 * it): a channel buffering a reference to an older channel, and ended
 * tasklets.  Older first: see crashes/ for the other order. */
static void seed_hostheld(tl_runtime *rt)
{
    tl_chan *older = chan(rt, 1, "older"), *held = chan(rt, 2, "held"), *in = chan(rt, 0, "in");
    tl_value ov = tl_chan_value(older);
    CHECK(tl_chan_try_send(held, ov));
    tl_release(ov);
    fz_leaf l = {.k = 3};
    tl_tasklet *done = spawn(rt, &fz_leaf_fn, &l, sizeof l, "done, held by the host");
    fz_all a = {.in = in, .n = 1};
    spawn_detached(rt, &fz_pump_fn, &a, sizeof a);
    run_until_stuck(rt);
    tl_value dv = tl_tasklet_value(done);
    CHECK(tl_chan_try_send(held, dv));
    tl_release(dv);
    tl_chan_release(older);
    tl_chan_release(in);
    (void)held; /* the host keeps held and done: not saved as references */
    (void)done;
}

/* A consumer sleeping between values, and a sleeper with a deadline in
 * the year 2100. */
static void seed_sleep(tl_runtime *rt)
{
    tl_chan *in = chan(rt, 4, "in"), *out = chan(rt, 0, NULL);
    CHECK(tl_chan_try_send(in, tl_i64(3)));
    CHECK(tl_chan_try_send(in, tl_i64(4)));
    fz_all c = {.in = in, .n = 5};
    spawn_detached(rt, &fz_consumer_fn, &c, sizeof c);
    fz_all s = {.out = out, .i = 12, .n = 4102444800LL * 1000000000LL};
    spawn_detached(rt, &fz_sleeper_fn, &s, sizeof s);
    tl_chan_release(in);
    tl_chan_release(out);
    run_steps(rt, 4);
}

/* A joiner waiting on a blocked pump; ended tasklets (done, failed,
 * killed) kept alive by references from live ones. */
static void seed_join(tl_runtime *rt)
{
    tl_chan *in = chan(rt, 0, "in"), *out = chan(rt, 0, "out"), *kick = chan(rt, 1, NULL);
    fz_all p = {.in = in, .n = 1};
    tl_tasklet *pump = spawn(rt, &fz_pump_fn, &p, sizeof p, "joined");
    fz_all j = {.peer = pump, .out = out};
    spawn_detached(rt, &fz_joiner_fn, &j, sizeof j);
    fz_leaf l = {.k = 7};
    tl_tasklet *done = spawn(rt, &fz_leaf_fn, &l, sizeof l, "done");
    fz_all f = {.in = kick};
    tl_tasklet *failed = spawn(rt, &fz_failer_fn, &f, sizeof f, "failed");
    CHECK(tl_chan_try_send(kick, tl_i64(1)));
    tl_tasklet *killed = spawn(rt, &fz_pump_fn, &p, sizeof p, "killed");
    run_until_stuck(rt);
    CHECK(tl_kill(killed));
    fz_all h1 = {.in = in, .peer = done, .n = 1}, h2 = {.in = in, .peer = failed, .n = 1};
    fz_all h3 = {.in = in, .peer = killed, .n = 1};
    spawn_detached(rt, &fz_pump_fn, &h1, sizeof h1);
    spawn_detached(rt, &fz_pump_fn, &h2, sizeof h2);
    spawn_detached(rt, &fz_pump_fn, &h3, sizeof h3);
    fz_all j2 = {.peer = done, .out = out};
    spawn_detached(rt, &fz_joiner_fn, &j2, sizeof j2); /* joins at once, blocks sending */
    tl_tasklet_release(pump);
    tl_tasklet_release(done);
    tl_tasklet_release(failed);
    tl_tasklet_release(killed);
    tl_chan_release(in);
    tl_chan_release(out);
    tl_chan_release(kick);
    run_until_stuck(rt);
}

/* Errors waiting to be delivered (tl_throw_pending: tl_throw would run
 * the targets at once): one thrown into a blocked pump (its
 * frame flagged), one into a catcher (caught: no flag). */
static void seed_errors(tl_runtime *rt)
{
    tl_chan *in = chan(rt, 0, "in");
    fz_all a = {.in = in, .n = 2};
    tl_tasklet *p = spawn(rt, &fz_pump_fn, &a, sizeof a, "thrown");
    tl_tasklet *c = spawn(rt, &fz_catcher_fn, &a, sizeof a, "catcher");
    run_until_stuck(rt);
    CHECK(tl_throw_pending(p, TL_EUSER - 2, "thrown into a pump"));
    CHECK(tl_throw_pending(c, TL_EUSER - 3, "thrown into a catcher"));
    tl_tasklet_release(p);
    tl_tasklet_release(c);
    tl_chan_release(in);
}

/* A frame of fz.counter@1, which the harness only knows through an
 * upgrade to @2. */
static void seed_upgrade(tl_runtime *rt)
{
    tl_chan *in = chan(rt, 0, "in");
    fz_counter1 a = {.in = in};
    spawn_detached(rt, &fz_counter1_fn, &a, sizeof a);
    tl_chan_release(in);
    run_until_stuck(rt);
}

/* Tasklet and channel ids in two chunks each (ids >> 8 = 0 and 1). */
static void seed_chunks(tl_runtime *rt)
{
    tl_chan *first = chan(rt, 0, "first");
    for (int i = 0; i < 262; i++)
        tl_chan_release(chan(rt, 0, NULL));
    tl_chan *last = chan(rt, 3, "last");
    CHECK(tl_chan_try_send(last, tl_i64(300)));
    tl_tasklet *ts[300];
    fz_all a = {.in = first, .out = last, .n = 2};
    for (int i = 0; i < 300; i++)
        ts[i] = spawn(rt, &fz_pump_fn, &a, sizeof a, NULL);
    run_until_stuck(rt);
    for (int i = 0; i < 300; i++) {
        if (i >= 3 && i < 290)
            CHECK(tl_kill(ts[i]));
        tl_tasklet_release(ts[i]);
    }
    tl_chan_release(first);
    tl_chan_release(last);
}

/* test_snapshot's world in miniature: producer -> pipe -> consumer ->
 * joiner -> result, and a selector, a few steps in. */
static void seed_world(tl_runtime *rt)
{
    tl_chan *pipe = chan(rt, 3, NULL), *result = chan(rt, 4, "result");
    tl_chan *a = chan(rt, 0, NULL), *b = chan(rt, 0, "b"), *c = chan(rt, 1, NULL);
    fz_all p = {.out = pipe, .n = 5};
    spawn_detached(rt, &fz_producer_fn, &p, sizeof p);
    fz_all k = {.in = pipe, .n = 6};
    tl_tasklet *cons = spawn(rt, &fz_consumer_fn, &k, sizeof k, "consumer");
    fz_all j = {.out = result, .peer = cons};
    spawn_detached(rt, &fz_joiner_fn, &j, sizeof j);
    fz_sel s = {.a = a, .b = b, .c = c};
    CHECK(tl_chan_try_send(c, tl_i64(1))); /* c full: the send case waits */
    spawn_detached(rt, &fz_selector_fn, &s, sizeof s);
    tl_tasklet_release(cons);
    tl_chan_release(pipe);
    tl_chan_release(result);
    tl_chan_release(a);
    tl_chan_release(b);
    tl_chan_release(c);
    run_steps(rt, 9);
}

static void seed_empty(tl_runtime *rt) { (void)rt; }

static const struct {
    const char *name;
    void (*build)(tl_runtime *rt);
} seeds[] = {
    {"rendezvous", seed_rendezvous}, {"buffered", seed_buffered}, {"nested", seed_nested},
    {"select", seed_select},         {"sleep", seed_sleep},       {"join", seed_join},
    {"errors", seed_errors},         {"upgrade", seed_upgrade},   {"chunks", seed_chunks},
    {"world", seed_world},           {"empty", seed_empty},       {"select2", seed_select_offset},
    {"hostheld", seed_hostheld},
};

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/seed-%s.snap", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    printf("%s: %zu bytes\n", path, n);
}

/* The snapshot with every header, of its outer structure and of each
 * record's document, in width class cls: seed-NAME-wCLS. */
static void write_wide(const char *dir, const char *name, const void *buf, size_t len, int cls)
{
    msgpack_sbuffer wide;
    char wname[64];
    msgpack_sbuffer_init(&wide);
    if (!mp_widen_snapshot(buf, len, cls, &wide)) {
        fprintf(stderr, "make_seeds: %s: cannot widen\n", name);
        exit(1);
    }
    snprintf(wname, sizeof wname, "%s-w%d", name, cls);
    write_file(dir, wname, wide.data, wide.size);
    msgpack_sbuffer_destroy(&wide);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < TL_COUNTOF(seeds); i++) {
        tl_runtime *rt = new_rt();
        void *buf;
        size_t len;
        seeds[i].build(rt);
        CHECK(tl_snapshot_save(rt, &buf, &len));
        write_file(argv[1], seeds[i].name, buf, len);
        for (int cls = 1; cls <= 3; cls++)
            write_wide(argv[1], seeds[i].name, buf, len, cls);
        tl_snapshot_free(rt, buf, len);
        tl_runtime_free(rt);
    }
    return 0;
}
