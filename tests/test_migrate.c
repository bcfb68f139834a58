/*
 * test_migrate.c -- moving tasklets between runtimes (migrate/), in
 * one process: two nodes "A" and "B" linked with tl_node_pair and driven
 * from one thread by polling each in turn (one test drives each from its
 * own thread).  Covers a round trip with nested frames and locals, remote
 * rendezvous both ways, channels by name, a dropped link and a new one,
 * refusal, what cannot move or cross, kill of a remote waiter, handover
 * through the store's mailbox, and snapshots holding proxies and pinned
 * channels.
 *
 * Tasklets write what they saw into records (R[tag]): the node they ran
 * on, their locals, the error they caught.  Each runtime allocates through
 * an allocator that keeps each block's size: teardown checks that every
 * byte came back, and test_load_frees_with_alloc_size that every free
 * states the size the block was given.  test_link_dead_before_op and
 * test_load_frees_with_alloc_size pin library bugs (they fail until fixed).
 * test_many_remote_ops fills and empties the node's request and agent
 * tables in every order; test_node_handle_misuse checks that bad and freed
 * node handles are refused (TL_EMISUSE).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "tasklet.h"
#include "tasklet_node.h"
#include "../migrate/node_internal.h" /* the spin policy */

/* ---- what tasklets record ---- */

typedef struct rec {
    int set;          /* times written */
    int err;          /* error caught, or 0 */
    char node[16];    /* node id of the runtime it ran in */
    int64_t num;
    int type;         /* tl_vtype of a value seen */
    char str[32];
    int remote;       /* its channel local was a proxy */
    char home[16];    /* ... whose home is this node */
    uint64_t chid;    /* the channel's id (the home's id for a proxy) */
    size_t depth;     /* frames on its stack */
    size_t count;     /* live tasklets in its runtime */
} rec;

#define NREC 64
static rec R[NREC];

static rec *mark(tl_frame *f, int tag)
{
    tl_runtime *rt = tl_frame_runtime(f);
    rec *r = &R[tag];
    r->set++;
    snprintf(r->node, sizeof r->node, "%s", tl_node_id(rt));
    r->depth = tl_tasklet_depth(tl_frame_tasklet(f));
    r->count = tl_tasklet_count(rt);
    return r;
}

static void mark_value(rec *r, tl_value v)
{
    const char *s = tl_str_data(v, NULL);
    r->type = tl_type(v);
    r->num = tl_as_i64(v);
    snprintf(r->str, sizeof r->str, "%s", s ? s : "");
}

static void mark_chan(rec *r, const tl_chan *ch)
{
    const char *home = NULL;
    r->remote = tl_chan_remote(ch, &home, &r->chid);
    snprintf(r->home, sizeof r->home, "%s", home ? home : "");
    if (!r->remote)
        r->chid = tl_chan_id(ch);
}

/* ---- the allocator: counts live bytes by the size each block was given,
 * and counts frees whose stated old size differs from it (the tl_alloc_fn
 * contract: osize is the block's size) ---- */

typedef struct size_alloc {
    int64_t live;       /* bytes allocated and not freed */
    uint64_t bad_osize; /* frees or reallocs that stated a wrong size */
} size_alloc;

#define HDR 16

static void *size_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    size_alloc *sa = ud;
    unsigned char *base = ptr ? (unsigned char *)ptr - HDR : NULL;
    size_t had = 0;
    if (base) {
        memcpy(&had, base, sizeof had);
        sa->bad_osize += had != osize;
    }
    if (nsize == 0) {
        sa->live -= (int64_t)had;
        free(base);
        return NULL;
    }
    unsigned char *nb = realloc(base, nsize + HDR);
    if (!nb)
        return NULL;
    sa->live += (int64_t)nsize - (int64_t)had;
    memcpy(nb, &nsize, sizeof nsize);
    return nb + HDR;
}

static tl_config size_config(size_alloc *sa)
{
    tl_config cfg;
    memset(&cfg, 0, sizeof cfg);
    memset(sa, 0, sizeof *sa);
    cfg.alloc = size_alloc_fn;
    cfg.alloc_ud = sa;
    return cfg;
}

/* ---- the fixture: two runtimes, two nodes, one pair ---- */

static struct {
    size_alloc ca[2];
    tl_runtime *rt[2];
    tl_node *n[2];
    tl_tasklet *handles[32];
    size_t nhandles;
    tl_chan *chans[32];
    size_t nchans;
    char log[4096];   /* the nodes' log lines */
} F;

static void quiet_log(void *ud, const char *msg)
{
    size_t k = strlen(F.log);
    (void)ud;
    if (k + strlen(msg) + 2 < sizeof F.log)
        snprintf(F.log + k, sizeof F.log - k, "%s\n", msg);
}

static tl_tasklet *keep(tl_tasklet *t)
{
    assert_true(F.nhandles < TL_COUNTOF(F.handles));
    F.handles[F.nhandles++] = t;
    return t;
}

static tl_chan *keep_chan(tl_chan *ch)
{
    assert_true(F.nchans < TL_COUNTOF(F.chans));
    F.chans[F.nchans++] = ch;
    return ch;
}

static tl_node_stats stats(int i)
{
    tl_node_stats s;
    memset(&s, 0xff, sizeof s);
    tl_node_stats_get(F.n[i], &s);
    return s;
}

/* One round on each node that exists. */
static int pump_once(int timeout_ms)
{
    for (int i = 0; i < 2; i++) {
        int rc = F.n[i] ? tl_node_poll(F.n[i], timeout_ms) : TL_OK;
        if (rc != TL_OK) {
            print_error("tl_node_poll(%d): %s: %s\n", i, tl_errname(rc),
                        tl_errmsg(F.rt[i]));
            return rc;
        }
    }
    return TL_OK;
}

#define PUMP_SECONDS 60 /* a hang is a failure, after this much wall time */

static double pump_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Polls both nodes until cond holds, bounded by wall-clock time, never by
 * a count of rounds: a fast machine runs through any count before a
 * tasklet's 20 ms sleep ends.  After the first rounds each poll may block
 * for up to a millisecond, so a wait for a timer does not spin. */
#define PUMP_UNTIL(cond)                                                   \
    do {                                                                   \
        int ok_ = 0;                                                       \
        double end_ = pump_now() + PUMP_SECONDS;                           \
        for (int i_ = 0; !(ok_ = (cond)) && pump_now() < end_; i_++)       \
            assert_int_equal(pump_once(i_ < 100 ? 0 : 1), TL_OK);          \
        if (!ok_)                                                          \
            print_error("%s:%d: never reached in %d s: %s\n", __FILE__, __LINE__, \
                        PUMP_SECONDS, #cond);                              \
        assert_true(ok_);                                                  \
    } while (0)
#define PUMP_ROUNDS(k)                                                     \
    do {                                                                   \
        for (int i_ = 0; i_ < (k); i_++)                                   \
            assert_int_equal(pump_once(0), TL_OK);                         \
    } while (0)

static tl_node *node_new(tl_runtime *rt, const char *id, tl_store *st)
{
    tl_node_config cfg;
    tl_node *n = NULL;
    memset(&cfg, 0, sizeof cfg);
    cfg.node_id = id;
    cfg.store = st;
    cfg.log = quiet_log;
    assert_int_equal(tl_node_new(rt, &cfg, &n), TL_OK);
    return n;
}

static void pair_up(void)
{
    assert_int_equal(tl_node_pair(F.n[0], F.n[1]), TL_OK);
    PUMP_UNTIL(tl_node_connected(F.n[0], "B") && tl_node_connected(F.n[1], "A"));
}

/* ---- tasklet functions ---- */

/* hop: records (tag), moves to dest, records (tag + 1), returns k * 10. */
typedef struct { char dest[16]; int64_t k; int32_t tag, pad_; } hop_t;
static const tl_field hop_fields[] = {
    TL_FIELD(hop_t, dest, TL_T_BYTES), TL_FIELD(hop_t, k, TL_T_I64),
    TL_FIELD(hop_t, tag, TL_T_I32),
};

static tl_status hop(tl_frame *f, void *locals)
{
    hop_t *L = locals;
    TL_BEGIN(f);
    mark(f, L->tag)->num = L->k;
    TL_MIGRATE(f, L->dest);
    mark(f, L->tag + 1)->num = L->k;
    TL_RETURN(f, tl_i64(L->k * 10));
    TL_END(f);
}
static const tl_func hop_fn = {"test.migrate.hop", 1, hop, sizeof(hop_t), hop_fields,
                               TL_COUNTOF(hop_fields), NULL};

/* trav: calls hop to B (two frames move), records its locals there (20),
 * waits on B's channel "gate", calls hop back to A, records again (40). */
typedef struct { int64_t a; tl_value s; tl_chan *ch; tl_value r; } trav_t;
static const tl_field trav_fields[] = {
    TL_FIELD(trav_t, a, TL_T_I64), TL_FIELD(trav_t, s, TL_T_VALUE),
    TL_FIELD(trav_t, ch, TL_T_CHAN), TL_FIELD(trav_t, r, TL_T_VALUE),
};

static void trav_mark(tl_frame *f, trav_t *L, int tag)
{
    rec *r = mark(f, tag);
    mark_value(r, L->s);
    mark_chan(r, L->ch);
    r->num = L->a * 1000 + tl_as_i64(L->r); /* a and what hop returned */
}

static tl_status trav(tl_frame *f, void *locals)
{
    trav_t *L = locals;
    TL_BEGIN(f);
    TL_CALL(f, &hop_fn, L->r, &(hop_t){.dest = "B", .k = L->a, .tag = 10});
    trav_mark(f, L, 20);
    TL_RECV(f, tl_chan_find_name(tl_frame_runtime(f), "gate"), L->r);
    TL_CALL(f, &hop_fn, L->r, &(hop_t){.dest = "A", .k = L->a + 1, .tag = 30});
    trav_mark(f, L, 40);
    TL_RETURN(f, tl_i64(L->a));
    TL_END(f);
}
static const tl_func trav_fn = {"test.migrate.trav", 1, trav, sizeof(trav_t), trav_fields,
                                TL_COUNTOF(trav_fields), NULL};

/* peer: optionally moves to dest first (records where it resumed and the
 * error caught at id + 1), then one send or receive on ch (op 0: none);
 * records the outcome at id.  Catches errors if catch_err. */
typedef struct {
    tl_chan *ch;
    tl_value v;
    int32_t id, op, catch_err, pad_;
    char dest[16];
} peer_t;
static const tl_field peer_fields[] = {
    TL_FIELD(peer_t, ch, TL_T_CHAN), TL_FIELD(peer_t, v, TL_T_VALUE),
    TL_FIELD(peer_t, id, TL_T_I32), TL_FIELD(peer_t, op, TL_T_I32),
    TL_FIELD(peer_t, catch_err, TL_T_I32), TL_FIELD(peer_t, dest, TL_T_BYTES),
};

static void peer_done(tl_frame *f, peer_t *L)
{
    rec *r = mark(f, L->id);
    r->err = tl_frame_error(f);
    mark_chan(r, L->ch);
    if (!r->err && L->op == TL_OP_RECV)
        mark_value(r, L->v);
}

static tl_status peer(tl_frame *f, void *locals)
{
    peer_t *L = locals;
    TL_BEGIN(f);
    if (L->catch_err)
        tl_frame_catch(f, 1);
    if (L->dest[0]) {
        TL_MIGRATE(f, L->dest);
        mark(f, L->id + 1)->err = tl_frame_error(f); /* where it resumed */
    }
    if (L->op == TL_OP_SEND) {
        TL_SEND(f, L->ch, L->v);
    } else if (L->op == TL_OP_RECV) {
        TL_RECV(f, L->ch, L->v);
    }
    peer_done(f, L);
    TL_END(f);
}
static const tl_func peer_fn = {"test.migrate.peer", 1, peer, sizeof(peer_t), peer_fields,
                                TL_COUNTOF(peer_fields), NULL};

/* only_a: registered on A only.  Moves to dest (or, with op TL_OP_RECV,
 * receives on ch), records what it caught. */
static tl_status only_a(tl_frame *f, void *locals)
{
    peer_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    if (L->op == TL_OP_RECV) {
        TL_RECV(f, L->ch, L->v);
    } else {
        TL_MIGRATE(f, L->dest);
    }
    rec *r = mark(f, L->id);
    r->err = tl_frame_error(f);
    snprintf(r->str, sizeof r->str, "%.31s", tl_frame_errmsg(f));
    TL_END(f);
}
static const tl_func only_a_fn = {"test.migrate.only_a", 1, only_a, sizeof(peer_t),
                                  peer_fields, TL_COUNTOF(peer_fields), NULL};

/* selector: one select receiving on ch; records at id.  The case array
 * is scratch (API.md section 7), built from ch before the select. */
typedef struct {
    tl_case cases[1];
    tl_chan *ch;
    tl_value got;
    int32_t id, idx, catch_err, pad_;
} sel_t;
static const tl_field sel_fields[] = {
    TL_FIELD(sel_t, cases, TL_T_CASES), TL_FIELD(sel_t, ch, TL_T_CHAN),
    TL_FIELD(sel_t, got, TL_T_VALUE), TL_FIELD(sel_t, id, TL_T_I32),
    TL_FIELD(sel_t, idx, TL_T_I32), TL_FIELD(sel_t, catch_err, TL_T_I32),
};

static tl_status selector(tl_frame *f, void *locals)
{
    sel_t *L = locals;
    TL_BEGIN(f);
    if (L->catch_err)
        tl_frame_catch(f, 1);
    L->cases[0] = (tl_case){.ch = L->ch, .op = TL_OP_RECV};
    TL_SELECT(f, L->cases, 1, L->idx, L->got);
    rec *r = mark(f, L->id);
    r->err = tl_frame_error(f);
    if (!r->err)
        mark_value(r, L->got);
    TL_END(f);
}
static const tl_func sel_fn = {"test.migrate.selector", 1, selector, sizeof(sel_t), sel_fields,
                               TL_COUNTOF(sel_fields), NULL};

/* holder: holds a tasklet reference while it receives on ch. */
typedef struct { tl_chan *ch; tl_tasklet *other; tl_value v; int32_t id, pad_; } holder_t;
static const tl_field holder_fields[] = {
    TL_FIELD(holder_t, ch, TL_T_CHAN), TL_FIELD(holder_t, other, TL_T_TASKLET),
    TL_FIELD(holder_t, v, TL_T_VALUE), TL_FIELD(holder_t, id, TL_T_I32),
};

static tl_status holder(tl_frame *f, void *locals)
{
    holder_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->ch, L->v);
    mark_value(mark(f, L->id), L->v);
    TL_END(f);
}
static const tl_func holder_fn = {"test.migrate.holder", 1, holder, sizeof(holder_t),
                                  holder_fields, TL_COUNTOF(holder_fields), NULL};

/* visitor: moves to B, waits on B's channel "hold", records (id), then
 * sends what it got on ch (its channel from home). */
static tl_status visitor(tl_frame *f, void *locals)
{
    peer_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_MIGRATE(f, "B");
    TL_RECV(f, tl_chan_find_name(tl_frame_runtime(f), "hold"), L->v);
    mark_value(mark(f, L->id), L->v);
    TL_SEND(f, L->ch, L->v);
    rec *r = mark(f, L->id + 1);
    r->err = tl_frame_error(f);
    mark_chan(r, L->ch);
    TL_END(f);
}
static const tl_func visitor_fn = {"test.migrate.visitor", 1, visitor, sizeof(peer_t),
                                   peer_fields, TL_COUNTOF(peer_fields), NULL};

/* stepper: records (id, n = 1), yields, records (id + 1, n = 2), yields,
 * records (id + 2, n = 3).  No channels: it can move through a store with
 * no node on either side. */
typedef struct { int64_t n; tl_value s; int32_t id, pad_; } step_t;
static const tl_field step_fields[] = {
    TL_FIELD(step_t, n, TL_T_I64), TL_FIELD(step_t, s, TL_T_VALUE),
    TL_FIELD(step_t, id, TL_T_I32),
};

static void step_mark(tl_frame *f, step_t *L, int tag)
{
    rec *r = mark(f, tag);
    mark_value(r, L->s);
    r->num = ++L->n;
}

static tl_status stepper(tl_frame *f, void *locals)
{
    step_t *L = locals;
    TL_BEGIN(f);
    step_mark(f, L, L->id);
    TL_YIELD(f);
    step_mark(f, L, L->id + 1);
    TL_YIELD(f);
    step_mark(f, L, L->id + 2);
    TL_END(f);
}
static const tl_func step_fn = {"test.migrate.stepper", 1, stepper, sizeof(step_t), step_fields,
                                TL_COUNTOF(step_fields), NULL};

/* sleeper: sleeps ms, records where it woke. */
typedef struct { int64_t ms; int32_t id, pad_; } sleeper_t;
static const tl_field sleeper_fields[] = {
    TL_FIELD(sleeper_t, ms, TL_T_I64), TL_FIELD(sleeper_t, id, TL_T_I32),
};

static tl_status sleeper(tl_frame *f, void *locals)
{
    sleeper_t *L = locals;
    TL_BEGIN(f);
    TL_SLEEP(f, L->ms);
    mark(f, L->id)->num = L->ms;
    TL_END(f);
}
static const tl_func sleeper_fn = {"test.migrate.sleeper", 1, sleeper, sizeof(sleeper_t),
                                   sleeper_fields, TL_COUNTOF(sleeper_fields), NULL};

/* ticker: counts scheduler rounds (one tick, then a zero sleep) until
 * ticker_stop is set. */
static long ticks;
static int ticker_stop;
typedef struct { int64_t n; } ticker_t;
static const tl_field ticker_fields[] = {TL_FIELD(ticker_t, n, TL_T_I64)};
static tl_status ticker(tl_frame *f, void *locals)
{
    ticker_t *L = locals;
    TL_BEGIN(f);
    while (!ticker_stop) {
        ticks++;
        L->n++;
        TL_SLEEP(f, 0);
    }
    TL_END(f);
}
static const tl_func ticker_fn = {"test.migrate.ticker", 1, ticker, sizeof(ticker_t),
                                  ticker_fields, TL_COUNTOF(ticker_fields), NULL};

/* big: carries a large binary to B and records its length there (tag). */
typedef struct { tl_value blob; int32_t tag, pad_; } big_t;
static const tl_field big_fields[] = {TL_FIELD(big_t, blob, TL_T_VALUE),
                                      TL_FIELD(big_t, tag, TL_T_I32)};
static tl_status big(tl_frame *f, void *locals)
{
    big_t *L = locals;
    TL_BEGIN(f);
    TL_MIGRATE(f, "B");
    mark(f, L->tag)->num = (int64_t)tl_len(L->blob);
    TL_END(f);
}
static const tl_func big_fn = {"test.migrate.big", 1, big, sizeof(big_t), big_fields,
                               TL_COUNTOF(big_fields), NULL};

/* shuttle: carries a large binary to B and back, n times, recording the
 * binary's CRC at each arrival (tag + 2i at B, tag + 2i + 1 at A). */
typedef struct { tl_value blob; int64_t n, i; int32_t tag, pad_; } shuttle_t;
static const tl_field shuttle_fields[] = {
    TL_FIELD(shuttle_t, blob, TL_T_VALUE), TL_FIELD(shuttle_t, n, TL_T_I64),
    TL_FIELD(shuttle_t, i, TL_T_I64), TL_FIELD(shuttle_t, tag, TL_T_I32)};
static int64_t blob_crc(tl_value v)
{
    size_t n = 0;
    const char *p = tl_str_data(v, &n);
    return p ? (int64_t)crc32(0L, (const Bytef *)p, (uInt)n) : -1;
}
static tl_status shuttle(tl_frame *f, void *locals)
{
    shuttle_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_MIGRATE(f, "B");
        mark(f, L->tag + 2 * (int)L->i)->num = blob_crc(L->blob);
        TL_MIGRATE(f, "A");
        mark(f, L->tag + 2 * (int)L->i + 1)->num = blob_crc(L->blob);
    }
    TL_END(f);
}
static const tl_func shuttle_fn = {"test.migrate.shuttle", 1, shuttle, sizeof(shuttle_t),
                                   shuttle_fields, TL_COUNTOF(shuttle_fields), NULL};

static const tl_func *const common_fns[] = {
    &hop_fn, &trav_fn, &peer_fn, &sel_fn, &holder_fn, &visitor_fn, &step_fn, &sleeper_fn,
    &ticker_fn, &big_fn, &shuttle_fn,
};

static int register_all(tl_runtime *rt)
{
    for (size_t i = 0; i < TL_COUNTOF(common_fns); i++)
        if (tl_register(rt, common_fns[i]) != TL_OK)
            return -1;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    memset(R, 0, sizeof R);
    for (int i = 0; i < 2; i++) {
        tl_config cfg = size_config(&F.ca[i]);
        if (tl_runtime_new(&cfg, &F.rt[i]) != TL_OK || register_all(F.rt[i]) != 0)
            return -1;
    }
    if (tl_register(F.rt[0], &only_a_fn) != TL_OK)
        return -1;
    F.n[0] = node_new(F.rt[0], "A", NULL);
    F.n[1] = node_new(F.rt[1], "B", NULL);
    pair_up();
    return 0;
}

static int teardown(void **state)
{
    int bad = 0;
    (void)state;
    for (int i = 0; i < 2; i++)
        tl_node_free(F.n[i]);
    for (size_t i = 0; i < F.nhandles; i++)
        tl_tasklet_release(F.handles[i]);
    for (size_t i = 0; i < F.nchans; i++)
        tl_chan_release(F.chans[i]);
    for (int i = 0; i < 2; i++) {
        tl_runtime_free(F.rt[i]);
        if (F.ca[i].live != 0) {
            print_error("teardown: runtime %c still holds %lld bytes\n", 'A' + i,
                        (long long)F.ca[i].live);
            bad = -1;
        }
    }
    return bad;
}

/* ---- helpers ---- */

static tl_chan *chan_new(int side, size_t cap)
{
    tl_chan *ch;
    assert_int_equal(tl_chan_new(F.rt[side], cap, &ch), TL_OK);
    return keep_chan(ch);
}

static tl_tasklet *spawn(int side, const tl_func *fn, const void *args, size_t size)
{
    tl_tasklet *t;
    assert_int_equal(tl_spawn(F.rt[side], fn, args, size, &t), TL_OK);
    return keep(t);
}

static tl_tasklet *spawn_peer(int side, peer_t a)
{
    return spawn(side, &peer_fn, &a, sizeof a);
}

static tl_value str(int side, const char *s)
{
    tl_value v;
    assert_int_equal(tl_str_new(F.rt[side], s, strlen(s), &v), TL_OK);
    return v;
}

/* A proxy on B for A's channel called name, which A exports (if it has
 * one: peers reach only exported channels). */
static tl_chan *proxy_b(const char *name)
{
    char path[64];
    tl_chan *p = NULL, *home = tl_chan_find_name(F.rt[0], name);
    if (home)
        assert_int_equal(tl_node_export(F.n[0], home, name), TL_OK);
    snprintf(path, sizeof path, "A/%s", name);
    assert_int_equal(tl_node_chan(F.n[1], path, &p), TL_OK);
    return keep_chan(p);
}

static void assert_moved(tl_tasklet *t)
{
    assert_int_equal(tl_tasklet_state(t), TL_KILLED);
    assert_int_equal(tl_tasklet_error(t), TL_EMOVED);
}

/* ---- 1. round trip with nested frames and locals ---- */

static void test_round_trip(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    tl_chan *gate = chan_new(1, 0);
    assert_int_equal(tl_chan_set_name(gate, "gate"), TL_OK);
    trav_t args = {.a = 42, .s = str(0, "hello"), .ch = ch};
    tl_tasklet *t = spawn(0, &trav_fn, &args, sizeof args);
    tl_release(args.s);

    /* out to B: it waits there on B's gate */
    PUMP_UNTIL(R[20].set && stats(0).moved_out == 1 && stats(0).pending == 0);
    assert_moved(t);
    assert_int_equal(R[10].set, 1);
    assert_string_equal(R[10].node, "A");
    assert_int_equal(R[10].depth, 2);
    assert_int_equal(R[10].num, 42);
    assert_int_equal(R[11].set, 1);
    assert_string_equal(R[11].node, "B");
    assert_int_equal(R[11].depth, 2); /* both frames moved */
    assert_int_equal(R[11].num, 42);
    assert_int_equal(R[11].count, 1);
    assert_string_equal(R[20].node, "B");
    assert_int_equal(R[20].depth, 1);
    assert_int_equal(R[20].num, 42 * 1000 + 420);
    assert_int_equal(R[20].type, TL_V_STR);
    assert_string_equal(R[20].str, "hello");
    assert_true(R[20].remote); /* the channel stayed home */
    assert_string_equal(R[20].home, "A");
    assert_int_equal(R[20].chid, tl_chan_id(ch));
    assert_true(tl_chan_pinned(ch)); /* left behind: pinned */
    assert_int_equal(tl_tasklet_count(F.rt[0]), 0);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 1);
    assert_int_equal(tl_blocked_count(F.rt[1]), 1);
    assert_int_equal(tl_chan_balance(gate), -1);
    tl_node_stats sa = stats(0), sb = stats(1);
    assert_int_equal(sa.moved_out, 1);
    assert_int_equal(sa.moved_in, 0);
    assert_int_equal(sb.moved_in, 1);
    assert_int_equal(sb.moved_out, 0);
    assert_int_equal(sa.refused + sb.refused + sa.duplicates + sb.duplicates, 0);

    /* back to A */
    assert_int_equal(tl_chan_try_send(gate, tl_i64(7)), TL_OK);
    PUMP_UNTIL(R[40].set && stats(1).moved_out == 1 && tl_tasklet_count(F.rt[0]) == 0);
    assert_int_equal(R[30].set, 1);
    assert_string_equal(R[30].node, "B");
    assert_int_equal(R[30].num, 43);
    assert_string_equal(R[31].node, "A");
    assert_int_equal(R[31].depth, 2);
    assert_int_equal(R[31].num, 43);
    assert_string_equal(R[40].node, "A");
    assert_int_equal(R[40].num, 42 * 1000 + 430);
    assert_string_equal(R[40].str, "hello");
    assert_false(R[40].remote); /* home again: the very same channel */
    assert_int_equal(R[40].chid, tl_chan_id(ch));
    assert_int_equal(R[40].count, 1);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 0);
    sa = stats(0);
    sb = stats(1);
    assert_int_equal(sa.moved_out, 1);
    assert_int_equal(sa.moved_in, 1);
    assert_int_equal(sb.moved_out, 1);
    assert_int_equal(sb.moved_in, 1);
    assert_int_equal(sa.pending + sb.pending, 0);
    assert_int_equal(sa.links_up, 1);
    assert_int_equal(sb.links_dropped, 0);
    /* the proxy B held went with the tasklet */
    tl_chan *p = NULL;
    assert_int_equal(tl_node_chan(F.n[0], "A/nosuch", &p), TL_ENOENT);
}

/* ---- 2. remote rendezvous, both ways ---- */

static void test_remote_rendezvous(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0), *ch2 = chan_new(0, 0);

    /* a receiver blocked on A's channel, moved by the host */
    tl_tasklet *rx = spawn_peer(0, (peer_t){.ch = ch, .id = 1, .op = TL_OP_RECV});
    assert_int_equal(tl_run_steps(F.rt[0], 10, NULL), TL_OK);
    assert_int_equal(tl_tasklet_wait(rx), TL_WAIT_RECV);
    assert_int_equal(tl_node_migrate(F.n[0], rx, "B"), TL_OK);
    assert_moved(rx); /* at once */
    assert_int_equal(tl_chan_balance(ch), 0);
    /* on B it waits on a proxy; at A an agent waits on ch for it */
    PUMP_UNTIL(stats(1).moved_in == 1 && tl_chan_balance(ch) == -1);
    assert_int_equal(tl_blocked_count(F.rt[1]), 1);
    PUMP_ROUNDS(100);
    assert_int_equal(R[1].set, 0);
    assert_int_equal(tl_chan_balance(ch), -1);
    tl_value hello = str(0, "over the wire");
    spawn_peer(0, (peer_t){.ch = ch, .v = hello, .id = 3, .op = TL_OP_SEND});
    tl_release(hello);
    PUMP_UNTIL(R[1].set && R[3].set);
    assert_string_equal(R[1].node, "B");
    assert_int_equal(R[1].err, 0);
    assert_int_equal(R[1].type, TL_V_STR);
    assert_string_equal(R[1].str, "over the wire");
    assert_true(R[1].remote);
    assert_int_equal(R[1].chid, tl_chan_id(ch));
    assert_string_equal(R[3].node, "A");
    assert_int_equal(R[3].err, 0);
    assert_int_equal(stats(0).remote_ops, 1);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0 && tl_tasklet_count(F.rt[1]) == 0);

    /* a sender moved to B blocks until a receiver at home takes its value */
    spawn_peer(0, (peer_t){.ch = ch2, .v = tl_i64(88), .id = 10, .op = TL_OP_SEND,
                           .dest = "B"});
    PUMP_UNTIL(R[11].set && tl_chan_balance(ch2) == 1);
    assert_string_equal(R[11].node, "B");
    PUMP_ROUNDS(500);
    assert_int_equal(R[10].set, 0); /* rendezvous: still blocked */
    assert_int_equal(tl_blocked_count(F.rt[1]), 1);
    assert_int_equal(tl_chan_balance(ch2), 1);
    assert_int_equal(tl_tasklet_count(F.rt[0]), 1); /* the agent */
    spawn_peer(0, (peer_t){.ch = ch2, .id = 12, .op = TL_OP_RECV});
    PUMP_UNTIL(R[10].set && R[12].set);
    assert_string_equal(R[12].node, "A");
    assert_int_equal(R[12].type, TL_V_INT);
    assert_int_equal(R[12].num, 88);
    assert_string_equal(R[10].node, "B");
    assert_int_equal(R[10].err, 0);
    assert_true(R[10].remote);
    assert_int_equal(stats(0).remote_ops, 2);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0 && tl_tasklet_count(F.rt[1]) == 0);
    assert_int_equal(tl_chan_balance(ch2), 0);
}

/* ---- 3. channels by name ---- */

static void test_names(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0), *same = NULL;
    assert_int_equal(tl_chan_set_name(ch, "jobs"), TL_OK);
    assert_int_equal(tl_node_chan(F.n[0], "A/jobs", &same), TL_OK);
    assert_ptr_equal(same, ch); /* own node: the local channel */
    tl_chan_release(same);
    tl_chan *p = proxy_b("jobs");
    const char *home = NULL;
    uint64_t id = 99;
    assert_true(tl_chan_remote(p, &home, &id));
    assert_string_equal(home, "A");
    assert_false(tl_chan_remote(ch, NULL, NULL));
    tl_chan *again = NULL;
    assert_int_equal(tl_node_chan(F.n[1], "A/jobs", &again), TL_OK);
    assert_ptr_equal(again, p); /* one proxy per home channel */
    tl_chan_release(again);
    assert_int_equal(tl_node_chan(F.n[1], "B/jobs", &again), TL_ENOENT);
    assert_int_equal(tl_node_chan(F.n[1], "nopath", &again), TL_EINVAL);

    /* B sends, A receives */
    spawn_peer(1, (peer_t){.ch = p, .v = tl_i64(5), .id = 1, .op = TL_OP_SEND});
    spawn_peer(0, (peer_t){.ch = ch, .id = 2, .op = TL_OP_RECV});
    PUMP_UNTIL(R[1].set && R[2].set);
    assert_int_equal(R[1].err, 0);
    assert_string_equal(R[1].node, "B");
    assert_int_equal(R[2].num, 5);
    /* A sends, B receives */
    spawn_peer(1, (peer_t){.ch = p, .id = 3, .op = TL_OP_RECV});
    spawn_peer(0, (peer_t){.ch = ch, .v = tl_i64(6), .id = 4, .op = TL_OP_SEND});
    PUMP_UNTIL(R[3].set && R[4].set);
    assert_int_equal(R[3].err, 0);
    assert_int_equal(R[3].num, 6);
    assert_string_equal(R[3].node, "B");

    /* a name that does not exist at home: TL_ENOENT at the resume point */
    tl_chan *none = proxy_b("none");
    spawn_peer(1, (peer_t){.ch = none, .id = 5, .op = TL_OP_RECV, .catch_err = 1});
    PUMP_UNTIL(R[5].set);
    assert_int_equal(R[5].err, TL_ENOENT);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0 && tl_tasklet_count(F.rt[1]) == 0);
}

/* ---- 4. a dropped link, then a new one ---- */

static void test_link_break(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    assert_int_equal(tl_chan_set_name(ch, "jobs"), TL_OK);
    tl_chan *p = proxy_b("jobs");
    spawn_peer(1, (peer_t){.ch = p, .id = 1, .op = TL_OP_RECV, .catch_err = 1});
    tl_tasklet *plain = spawn_peer(1, (peer_t){.ch = p, .id = 2, .op = TL_OP_RECV});
    PUMP_UNTIL(tl_chan_balance(ch) == -2); /* two agents wait at A */
    assert_int_equal(tl_tasklet_count(F.rt[0]), 2);
    assert_int_equal(tl_blocked_count(F.rt[1]), 2);

    tl_node_free(F.n[0]); /* drops the link: the agents at A go */
    F.n[0] = NULL;
    assert_int_equal(tl_tasklet_count(F.rt[0]), 0);
    assert_int_equal(tl_chan_balance(ch), 0);
    PUMP_UNTIL(R[1].set && tl_tasklet_state(plain) == TL_FAILED);
    assert_int_equal(R[1].err, TL_ELINK); /* caught at the resume point */
    assert_string_equal(R[1].node, "B");
    assert_int_equal(tl_tasklet_error(plain), TL_ELINK);
    assert_int_equal(R[2].set, 0);
    assert_false(tl_node_connected(F.n[1], "A"));
    assert_int_equal(stats(1).links_dropped, 1);
    /* while it is down, an operation fails at once */
    spawn_peer(1, (peer_t){.ch = p, .id = 3, .op = TL_OP_RECV, .catch_err = 1});
    PUMP_UNTIL(R[3].set);
    assert_int_equal(R[3].err, TL_ELINK);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 0);

    /* a new node on A's runtime and a new pair: the same proxy works */
    F.n[0] = node_new(F.rt[0], "A", NULL);
    assert_int_equal(tl_node_export(F.n[0], ch, "jobs"), TL_OK); /* exports are per node */
    pair_up();
    assert_int_equal(stats(1).links_up, 2);
    spawn_peer(1, (peer_t){.ch = p, .id = 5, .op = TL_OP_RECV, .catch_err = 1});
    spawn_peer(0, (peer_t){.ch = ch, .v = tl_i64(55), .id = 6, .op = TL_OP_SEND});
    PUMP_UNTIL(R[5].set && R[6].set);
    assert_int_equal(R[5].err, 0);
    assert_int_equal(R[5].num, 55);
    assert_int_equal(R[6].err, 0);
    assert_int_equal(stats(0).remote_ops, 1);
}

/* The link dies while B has not noticed yet, and a tasklet then starts a
 * remote operation: the send of its request fails inside the operation.
 * It must get TL_ELINK, not wait forever. */
static void test_link_dead_before_op(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    assert_int_equal(tl_chan_set_name(ch, "jobs"), TL_OK);
    tl_chan *p = proxy_b("jobs");
    tl_node_free(F.n[0]); /* B reads nothing until it polls */
    F.n[0] = NULL;
    tl_tasklet *t = spawn_peer(1, (peer_t){.ch = p, .id = 1, .op = TL_OP_RECV, .catch_err = 1});
    PUMP_ROUNDS(200);
    assert_false(tl_node_connected(F.n[1], "A"));
    if (!R[1].set)
        print_error("still waiting: state %d, wait %d; log:\n%s", tl_tasklet_state(t),
                    tl_tasklet_wait(t), F.log);
    assert_int_equal(R[1].set, 1);
    assert_int_equal(R[1].err, TL_ELINK);
}

/* ---- 5. refusal ---- */

static void test_refused(void **state)
{
    (void)state;
    peer_t a = {.id = 1, .dest = "B"};
    tl_tasklet *t = spawn(0, &only_a_fn, &a, sizeof a);
    uint64_t id = tl_tasklet_id(t);
    PUMP_UNTIL(R[1].set);
    assert_moved(t);
    assert_string_equal(R[1].node, "A");
    assert_int_equal(R[1].err, TL_ENOFUNC);
    tl_node_stats sa = stats(0), sb = stats(1);
    assert_int_equal(sa.refused, 1);
    assert_int_equal(sa.moved_out, 0);
    assert_int_equal(sa.pending, 0);
    assert_int_equal(sb.moved_in, 0);
    tl_tasklet *found = tl_tasklet_find(F.rt[0], id);
    assert_true(found == NULL || found == t); /* back under a new id */
    assert_non_null(strstr(F.log, "refused"));
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 0);
}

/* A receiver refused while blocked: it is back in the receive, with the
 * error delivered there. */
static void test_refused_blocked(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    tl_tasklet *t = spawn(0, &only_a_fn, &(peer_t){.ch = ch, .id = 1, .op = TL_OP_RECV},
                          sizeof(peer_t));
    PUMP_UNTIL(tl_tasklet_wait(t) == TL_WAIT_RECV);
    assert_int_equal(tl_node_migrate(F.n[0], t, "B"), TL_OK);
    assert_moved(t);
    PUMP_UNTIL(R[1].set && stats(0).refused == 1);
    assert_int_equal(R[1].err, TL_ENOFUNC);
    assert_string_equal(R[1].node, "A");
    assert_int_equal(stats(0).pending, 0);
    assert_int_equal(stats(1).moved_in, 0);
    assert_int_equal(tl_chan_balance(ch), 0);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0);
}

/* A remote waiter moved to its channel's home waits there directly: its
 * request at home is cancelled, no agent is left. */
static void test_remote_waiter_goes_home(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    assert_int_equal(tl_chan_set_name(ch, "jobs"), TL_OK);
    tl_chan *p = proxy_b("jobs");
    tl_tasklet *t = spawn_peer(1, (peer_t){.ch = p, .id = 1, .op = TL_OP_RECV});
    PUMP_UNTIL(tl_chan_balance(ch) == -1 && tl_tasklet_count(F.rt[0]) == 1);
    assert_int_equal(tl_node_migrate(F.n[1], t, "A"), TL_OK);
    /* it leaves once the home has cancelled its request */
    assert_int_equal(tl_node_migrate(F.n[1], t, "A"), TL_EBUSY);
    PUMP_UNTIL(tl_tasklet_state(t) == TL_KILLED);
    assert_moved(t);
    PUMP_UNTIL(stats(0).moved_in == 1 && stats(1).pending == 0);
    PUMP_ROUNDS(20);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 0);
    assert_int_equal(tl_tasklet_count(F.rt[0]), 1); /* itself; the agent is gone */
    assert_int_equal(tl_chan_balance(ch), -1);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(12)), TL_OK); /* straight to it */
    PUMP_UNTIL(R[1].set);
    assert_string_equal(R[1].node, "A");
    assert_int_equal(R[1].err, 0);
    assert_int_equal(R[1].num, 12);
    assert_false(R[1].remote); /* the named proxy became the channel itself */
    assert_int_equal(R[1].chid, tl_chan_id(ch));
    assert_int_equal(stats(0).remote_ops, 0);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0);
}

/* The same move while the home's answer is on its way: the receive
 * completes first and the tasklet moves with the value; nothing is lost. */
static void test_remote_waiter_moves_with_answer(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    assert_int_equal(tl_chan_set_name(ch, "jobs"), TL_OK);
    tl_chan *p = proxy_b("jobs");
    tl_tasklet *t = spawn_peer(1, (peer_t){.ch = p, .id = 1, .op = TL_OP_RECV});
    PUMP_UNTIL(tl_chan_balance(ch) == -1);
    spawn_peer(0, (peer_t){.ch = ch, .v = tl_i64(21), .id = 2, .op = TL_OP_SEND});
    double end = pump_now() + PUMP_SECONDS; /* only A: the answer is sent, not read */
    while (!R[2].set && pump_now() < end)
        assert_int_equal(tl_node_poll(F.n[0], 0), TL_OK);
    assert_int_equal(R[2].set, 1);
    assert_int_equal(tl_tasklet_state(t), TL_BLOCKED);
    assert_int_equal(tl_node_migrate(F.n[1], t, "A"), TL_OK);
    PUMP_UNTIL(R[1].set);
    assert_moved(t);
    assert_string_equal(R[1].node, "A");
    assert_int_equal(R[1].err, 0);
    assert_int_equal(R[1].num, 21);
    assert_false(R[1].remote);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0 && stats(1).pending == 0);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 0);
    assert_int_equal(stats(0).moved_in, 1);
    assert_int_equal(stats(1).moved_out, 1);
}

/* A sleeping tasklet moved by the host wakes on the other node. */
static void test_sleeper_moves(void **state)
{
    (void)state;
    tl_tasklet *t = spawn(0, &sleeper_fn, &(sleeper_t){.ms = 20, .id = 1}, sizeof(sleeper_t));
    assert_int_equal(tl_run_steps(F.rt[0], 1, NULL), TL_OK);
    assert_int_equal(tl_tasklet_wait(t), TL_WAIT_SLEEP);
    assert_int_equal(tl_node_migrate(F.n[0], t, "B"), TL_OK);
    int64_t deadline;
    assert_int_equal(tl_next_deadline(F.rt[0], &deadline), 0); /* its timer left A */
    PUMP_UNTIL(stats(1).moved_in == 1);
    assert_int_equal(tl_next_deadline(F.rt[1], &deadline), 1);
    PUMP_UNTIL(R[1].set);
    assert_string_equal(R[1].node, "B");
    assert_int_equal(R[1].num, 20);
}

/* ---- 6. what cannot move, or cross ---- */

static void test_migrate_unknown_and_self(void **state)
{
    (void)state;
    tl_tasklet *t1 = spawn_peer(0, (peer_t){.id = 1, .dest = "Z", .catch_err = 1});
    tl_tasklet *t2 = spawn_peer(0, (peer_t){.id = 3, .dest = "A", .catch_err = 1});
    PUMP_UNTIL(R[1].set && R[3].set);
    assert_int_equal(R[2].err, TL_ELINK); /* delivered at TL_MIGRATE's resume point */
    assert_string_equal(R[2].node, "A");
    assert_int_equal(R[1].err, 0);
    assert_int_equal(tl_tasklet_state(t1), TL_DONE); /* never left */
    assert_int_equal(R[4].set, 1);
    assert_int_equal(R[4].err, 0); /* own node: a no-op */
    assert_string_equal(R[4].node, "A");
    assert_int_equal(tl_tasklet_state(t2), TL_DONE);
    tl_node_stats sa = stats(0), sb = stats(1);
    assert_int_equal(sa.moved_out + sa.pending + sb.moved_in + sa.refused, 0);
    /* without the catch, the error ends the tasklet */
    tl_tasklet *t3 = spawn_peer(0, (peer_t){.id = 5, .dest = "nowhere"});
    PUMP_UNTIL(tl_tasklet_state(t3) == TL_FAILED);
    assert_int_equal(tl_tasklet_error(t3), TL_ELINK);
    assert_int_equal(R[6].set, 0);
}

static void test_host_migrate_refusals(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0), *ch2 = chan_new(0, 0);
    sel_t sa = {.id = 1};
    sa.ch = ch;
    tl_tasklet *sel = spawn(0, &sel_fn, &sa, sizeof sa);
    tl_tasklet *other = spawn_peer(0, (peer_t){.id = 9});
    holder_t ha = {.ch = ch2, .other = other, .id = 2};
    tl_tasklet *hold = spawn(0, &holder_fn, &ha, sizeof ha);
    PUMP_UNTIL(tl_tasklet_wait(sel) == TL_WAIT_SELECT && tl_tasklet_wait(hold) == TL_WAIT_RECV);
    uint64_t sid = tl_tasklet_id(sel), hid = tl_tasklet_id(hold);

    assert_int_equal(tl_node_migrate(F.n[0], sel, "B"), TL_ENOTSUP);
    assert_int_equal(tl_tasklet_state(sel), TL_BLOCKED);
    assert_int_equal(tl_tasklet_wait(sel), TL_WAIT_SELECT);
    assert_int_equal(tl_node_migrate(F.n[0], hold, "B"), TL_ENOTSUP);
    assert_int_equal(tl_tasklet_state(hold), TL_BLOCKED);
    assert_int_equal(tl_tasklet_wait(hold), TL_WAIT_RECV);
    assert_int_equal(tl_node_migrate(F.n[0], hold, "Z"), TL_ELINK);
    assert_int_equal(tl_node_migrate(F.n[0], hold, "B"), TL_ENOTSUP);
    assert_int_equal(tl_node_migrate(F.n[1], hold, "A"), TL_EINVAL); /* not B's */
    assert_ptr_equal(tl_tasklet_find(F.rt[0], sid), sel);
    assert_ptr_equal(tl_tasklet_find(F.rt[0], hid), hold);
    assert_false(tl_chan_pinned(ch)); /* nothing left behind */
    assert_false(tl_chan_pinned(ch2));
    assert_int_equal(tl_chan_balance(ch), -1);
    assert_int_equal(tl_chan_balance(ch2), -1);
    PUMP_ROUNDS(20);
    tl_node_stats s0 = stats(0), s1 = stats(1);
    assert_int_equal(s0.pending + s0.moved_out + s1.moved_in, 0);

    /* untouched: both still complete here */
    assert_int_equal(tl_chan_try_send(ch, tl_i64(31)), TL_OK);
    assert_int_equal(tl_chan_try_send(ch2, tl_i64(32)), TL_OK);
    PUMP_UNTIL(R[1].set && R[2].set);
    assert_int_equal(R[1].num, 31);
    assert_string_equal(R[1].node, "A");
    assert_int_equal(R[2].num, 32);
    assert_string_equal(R[2].node, "A");
    /* ended */
    assert_int_equal(tl_tasklet_state(other), TL_DONE);
    assert_int_equal(tl_node_migrate(F.n[0], other, "B"), TL_ESTATE);
}

static void test_remote_notsup(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    assert_int_equal(tl_chan_set_name(ch, "jobs"), TL_OK);
    tl_chan *p = proxy_b("jobs");
    tl_chan *local_b = chan_new(1, 0);

    /* the host's non-blocking operations */
    assert_int_equal(tl_chan_try_send(p, tl_i64(1)), TL_ENOTSUP);
    tl_value v = tl_nil();
    assert_int_equal(tl_chan_try_recv(p, &v), TL_ENOTSUP);
    assert_int_equal(tl_type(v), TL_V_NIL);

    /* select over a proxy */
    sel_t sa = {.id = 1, .catch_err = 1};
    sa.ch = p;
    spawn(1, &sel_fn, &sa, sizeof sa);
    /* values holding references */
    spawn_peer(1, (peer_t){.ch = p, .v = tl_chan_value(local_b), .id = 2, .op = TL_OP_SEND,
                           .catch_err = 1});
    tl_value item = tl_chan_value(local_b), arr;
    tl_value items[2] = {tl_i64(1), item};
    assert_int_equal(tl_array_new(F.rt[1], items, 2, &arr), TL_OK);
    tl_release(item);
    spawn_peer(1, (peer_t){.ch = p, .v = arr, .id = 3, .op = TL_OP_SEND, .catch_err = 1});
    tl_release(arr);
    PUMP_UNTIL(R[1].set && R[2].set && R[3].set);
    assert_int_equal(R[1].err, TL_ENOTSUP);
    assert_int_equal(R[2].err, TL_ENOTSUP);
    assert_int_equal(R[3].err, TL_ENOTSUP);
    PUMP_ROUNDS(20);
    assert_int_equal(tl_chan_balance(ch), 0); /* nothing reached home */
    assert_int_equal(tl_tasklet_count(F.rt[0]), 0);
    assert_int_equal(stats(0).remote_ops, 0);

    /* a reference sent at home to a remote receiver: the receiver gets
     * TL_ENOTSUP */
    tl_chan *local_a = chan_new(0, 0);
    spawn_peer(1, (peer_t){.ch = p, .id = 4, .op = TL_OP_RECV, .catch_err = 1});
    PUMP_UNTIL(tl_chan_balance(ch) == -1);
    spawn_peer(0, (peer_t){.ch = ch, .v = tl_chan_value(local_a), .id = 5, .op = TL_OP_SEND,
                           .catch_err = 1});
    PUMP_UNTIL(R[4].set && R[5].set);
    assert_int_equal(R[4].err, TL_ENOTSUP);
    /* and the link still works for plain values */
    spawn_peer(1, (peer_t){.ch = p, .v = tl_i64(8), .id = 6, .op = TL_OP_SEND, .catch_err = 1});
    spawn_peer(0, (peer_t){.ch = ch, .id = 7, .op = TL_OP_RECV});
    PUMP_UNTIL(R[6].set && R[7].set);
    assert_int_equal(R[6].err, 0);
    assert_int_equal(R[7].num, 8);
}

/* ---- 7. kill of a remote waiter ---- */

static void test_kill_remote_waiter(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    assert_int_equal(tl_chan_set_name(ch, "jobs"), TL_OK);
    tl_chan *p = proxy_b("jobs");
    tl_tasklet *k = spawn_peer(1, (peer_t){.ch = p, .id = 1, .op = TL_OP_RECV, .catch_err = 1});
    PUMP_UNTIL(tl_chan_balance(ch) == -1);
    assert_int_equal(tl_tasklet_count(F.rt[0]), 1); /* the agent */
    /* k catches errors: tl_kill_now, which nothing catches, ends it here
     * (a Stackless kill would be caught; k2 below gets one) */
    assert_int_equal(tl_kill_now(k), TL_OK);
    assert_int_equal(tl_tasklet_state(k), TL_KILLED);
    assert_int_equal(tl_tasklet_error(k), TL_EKILLED);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 0);
    /* the CANCEL takes the agent away at home */
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0 && tl_chan_balance(ch) == 0);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(1)), TL_EAGAIN); /* no receiver left */
    PUMP_ROUNDS(20);
    assert_int_equal(R[1].set, 0);
    assert_int_equal(stats(0).remote_ops, 0);
    /* the other side keeps working */
    spawn_peer(1, (peer_t){.ch = p, .v = tl_i64(9), .id = 2, .op = TL_OP_SEND, .catch_err = 1});
    spawn_peer(0, (peer_t){.ch = ch, .id = 3, .op = TL_OP_RECV});
    PUMP_UNTIL(R[2].set && R[3].set);
    assert_int_equal(R[2].err, 0);
    assert_int_equal(R[3].num, 9);
    /* a killed remote sender: its value never arrives */
    tl_tasklet *k2 = spawn_peer(1, (peer_t){.ch = p, .v = tl_i64(10), .id = 4,
                                            .op = TL_OP_SEND});
    PUMP_UNTIL(tl_chan_balance(ch) == 1);
    assert_int_equal(tl_kill(k2), TL_OK);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0 && tl_chan_balance(ch) == 0);
    assert_int_equal(tl_chan_try_recv(ch, &(tl_value){0}), TL_EAGAIN);
}

/* ---- 8. two threads ---- */

static struct {
    tl_node *n[2];
    atomic_int visits[2];
    atomic_int done;
    atomic_llong count;
    atomic_int retries;
} TH;

typedef struct { int64_t count; int32_t i, n, err, retries; } counter_t;
static const tl_field counter_fields[] = {
    TL_FIELD(counter_t, count, TL_T_I64), TL_FIELD(counter_t, i, TL_T_I32),
    TL_FIELD(counter_t, n, TL_T_I32), TL_FIELD(counter_t, err, TL_T_I32),
    TL_FIELD(counter_t, retries, TL_T_I32),
};

static void counter_bump(tl_frame *f, counter_t *L)
{
    L->count++;
    atomic_fetch_add(&TH.visits[strcmp(tl_node_id(tl_frame_runtime(f)), "B") == 0], 1);
}

/* Counts on each node, hopping A -> B -> A n times; the first move waits
 * for the link (retrying on TL_ELINK); at the end it stops both nodes. */
static tl_status counter(tl_frame *f, void *locals)
{
    counter_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    for (L->i = 0; L->i < L->n; L->i++) {
        counter_bump(f, L);
        do {
            TL_MIGRATE(f, "B");
            L->err = tl_frame_error(f);
            if (L->err == TL_ELINK && L->retries++ < 20000) {
                TL_SLEEP(f, 1);
            }
        } while (L->err == TL_ELINK && L->retries < 20000);
        if (L->err)
            break;
        counter_bump(f, L);
        TL_MIGRATE(f, "A");
        L->err = tl_frame_error(f);
        if (L->err)
            break;
    }
    counter_bump(f, L);
    atomic_store(&TH.count, L->err ? -L->err : L->count);
    atomic_store(&TH.retries, L->retries);
    atomic_store(&TH.done, 1);
    tl_node_stop(TH.n[0]);
    tl_node_stop(TH.n[1]);
    TL_END(f);
}
static const tl_func counter_fn = {"test.migrate.counter", 1, counter, sizeof(counter_t),
                                   counter_fields, TL_COUNTOF(counter_fields), NULL};

static void *node_thread(void *arg)
{
    tl_node *n = arg;
    intptr_t rc = tl_node_run(n);
    return (void *)rc;
}

static void test_two_threads(void **state)
{
    enum { ROUNDS = 25 };
    pthread_t th[2];
    void *rc[2];
    (void)state;
    /* the fixture's pair is up already; this test makes its own */
    for (int i = 0; i < 2; i++) {
        tl_node_free(F.n[i]);
        F.n[i] = NULL;
        assert_int_equal(tl_register(F.rt[i], &counter_fn), TL_OK);
    }
    memset(&TH, 0, sizeof TH);
    F.n[0] = TH.n[0] = node_new(F.rt[0], "A", NULL);
    F.n[1] = TH.n[1] = node_new(F.rt[1], "B", NULL);
    assert_int_equal(tl_node_pair(F.n[0], F.n[1]), TL_OK);
    counter_t args = {.n = ROUNDS};
    tl_tasklet *t = spawn(0, &counter_fn, &args, sizeof args);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, node_thread, F.n[i]), 0);
    /* a bound, not a timing assertion: stop a hung run after ~60 s */
    for (int i = 0; i < 60000 && !atomic_load(&TH.done); i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    if (!atomic_load(&TH.done)) {
        tl_node_stop(F.n[0]);
        tl_node_stop(F.n[1]);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], &rc[i]), 0);
    assert_true(atomic_load(&TH.done));
    assert_int_equal((intptr_t)rc[0], TL_OK);
    assert_int_equal((intptr_t)rc[1], TL_OK);
    assert_int_equal(atomic_load(&TH.count), 2 * ROUNDS + 1);
    assert_int_equal(atomic_load(&TH.visits[0]), ROUNDS + 1);
    assert_int_equal(atomic_load(&TH.visits[1]), ROUNDS);
    assert_moved(t);
    /* settle the last acknowledgements from this thread */
    PUMP_UNTIL(stats(0).pending == 0 && stats(1).pending == 0 &&
               stats(1).moved_out == ROUNDS && tl_tasklet_count(F.rt[0]) == 0);
    tl_node_stats sa = stats(0), sb = stats(1);
    assert_int_equal(sa.moved_out, ROUNDS);
    assert_int_equal(sa.moved_in, ROUNDS);
    assert_int_equal(sb.moved_in, ROUNDS);
    assert_int_equal(sb.moved_out, ROUNDS);
    assert_int_equal(sa.refused + sb.refused + sa.duplicates + sb.duplicates, 0);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 0);
}

/* ---- the lone link does not starve the rest (issue 12 point 7) ---- */

/* A node whose one link carries traffic waits for it in a blocking recv
 * (node.c, "the lone link"); its listener and wake pipe must still be
 * served while that traffic never stops.  B sends to a channel of A
 * without pause (each send a round trip), both nodes in threads of their
 * own; meanwhile a third node links to A, then tl_node_stop ends both. */
static atomic_int lone_stop;
typedef struct { tl_chan *ch; tl_value v; int64_t i; } lone_t;
static const tl_field lone_fields[] = {
    TL_FIELD(lone_t, ch, TL_T_CHAN), TL_FIELD(lone_t, v, TL_T_VALUE),
    TL_FIELD(lone_t, i, TL_T_I64),
};

static tl_status lone_sender(tl_frame *f, void *locals)
{
    lone_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; !atomic_load(&lone_stop); L->i++)
        TL_SEND(f, L->ch, tl_i64(L->i));
    TL_SEND(f, L->ch, tl_i64(-1));
    TL_END(f);
}

static tl_status lone_receiver(tl_frame *f, void *locals)
{
    lone_t *L = locals;
    TL_BEGIN(f);
    do {
        TL_RECV(f, L->ch, L->v);
        L->i++;
        atomic_store(&TH.count, L->i);
    } while (tl_as_i64(L->v) != -1);
    atomic_store(&TH.count, L->i);
    atomic_store(&TH.done, 1);
    TL_END(f);
}
static const tl_func lone_sender_fn = {"test.migrate.lone_sender", 1, lone_sender,
                                       sizeof(lone_t), lone_fields, TL_COUNTOF(lone_fields),
                                       NULL};
static const tl_func lone_receiver_fn = {"test.migrate.lone_receiver", 1, lone_receiver,
                                         sizeof(lone_t), lone_fields, TL_COUNTOF(lone_fields),
                                         NULL};

static tl_node *secret_node(tl_runtime *rt, const char *id)
{
    static const char secret[] = "test_migrate: the lone link's secret";
    tl_node_config cfg;
    tl_node *n = NULL;
    memset(&cfg, 0, sizeof cfg);
    cfg.node_id = id;
    cfg.secret = secret;
    cfg.secret_len = sizeof secret - 1;
    cfg.log = quiet_log;
    assert_int_equal(tl_node_new(rt, &cfg, &n), TL_OK);
    return n;
}

/* A cargo envelope is found in every header width (the quick test for
 * "not an envelope" must not miss a wide one), and anything else is left
 * as it is. */
static size_t put_head(unsigned char *b, int width, unsigned fix, unsigned w8, unsigned w16,
                       unsigned w32, uint32_t v)
{
    size_t k = 0;
    if (width == 0)
        b[k++] = (unsigned char)(fix | v);
    else if (width == 1)
        b[k++] = (unsigned char)w8, b[k++] = (unsigned char)v;
    else if (width == 2)
        b[k++] = (unsigned char)w16, b[k++] = 0, b[k++] = (unsigned char)v;
    else
        b[k++] = (unsigned char)w32, b[k++] = 0, b[k++] = 0, b[k++] = 0,
        b[k++] = (unsigned char)v;
    return k;
}

static void test_cargo_split_widths(void **state)
{
    (void)state;
    static const char magic[] = "libtasklet-cargo";
    for (int aw = 0; aw < 3; aw++)
        for (int sw = 0; sw < 4; sw++) {
            unsigned char b[64];
            size_t k = put_head(b, aw ? aw + 1 : 0, 0x90, 0, 0xdc, 0xdd, 3);
            k += put_head(b + k, sw, 0xa0, 0xd9, 0xda, 0xdb, sizeof magic - 1);
            memcpy(b + k, magic, sizeof magic - 1);
            k += sizeof magic - 1;
            static const unsigned char parts[] = {0xc4, 2, 'S', 'N', 0xc4, 1, 'C'};
            memcpy(b + k, parts, sizeof parts); /* bin "SN", bin "C" */
            k += 7;
            const void *p = b, *cargo;
            size_t n = k, clen;
            if (tl__cargo_split(&p, &n, &cargo, &clen) != 1)
                fail_msg("array width %d, string width %d: not found", aw, sw);
            assert_int_equal(n, 2);
            assert_memory_equal(p, "SN", 2);
            assert_int_equal(clen, 1);
            assert_memory_equal(cargo, "C", 1);
            b[k - 10] ^= 1; /* the magic's last byte */
            p = b;
            n = k;
            assert_int_equal(tl__cargo_split(&p, &n, &cargo, &clen), 0);
            assert_ptr_equal(p, b);
            assert_int_equal(n, k);
        }
    const unsigned char plain[] = {0x94, 0xa1, 'x', 1, 2, 0x90};
    const void *p = plain, *cargo;
    size_t n = sizeof plain, clen;
    assert_int_equal(tl__cargo_split(&p, &n, &cargo, &clen), 0);
    assert_ptr_equal(p, plain);
    assert_null(cargo);
}

/* When a round waits for the one link alone: only with recent traffic,
 * a wait of at least READ_WAIT_NS (1 ms) or none, and the epoll set
 * waited on within 1 ms (so that the listener, the wake pipe and timers
 * wait at most that); never with a second link.  The link, blocking
 * from then on, still carries traffic both ways. */
static void test_lone_link_rules(void **state)
{
    (void)state;
    const long long ms = 1000000;
    assert_true(tl__node_lone(F.n[0], -1, 0, 0));
    assert_true(tl__node_lone(F.n[0], 5 * ms, ms / 2, ms / 2));
    assert_false(tl__node_lone(F.n[0], ms / 2, 0, 0));     /* a timer is near */
    assert_false(tl__node_lone(F.n[0], 0, 0, 0));          /* work to do */
    assert_false(tl__node_lone(F.n[0], -1, 2 * ms, 0));    /* no recent traffic */
    assert_false(tl__node_lone(F.n[0], -1, 0, 2 * ms));    /* the others' turn */
    assert_true(tl__node_lone(F.n[1], -1, 0, 0));
    test_remote_rendezvous(state); /* both links blocking now */
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    tl_node *c = node_new(rt, "C", NULL);
    assert_int_equal(tl_node_pair(F.n[0], c), TL_OK);
    assert_false(tl__node_lone(F.n[0], -1, 0, 0)); /* two links */
    tl_node_free(c);
    tl_runtime_free(rt);
}

static void test_lone_link_serves_the_rest(void **state)
{
    pthread_t th[2];
    void *rc[2];
    tl_runtime *crt;
    (void)state;
    for (int i = 0; i < 2; i++) {
        tl_node_free(F.n[i]);
        assert_int_equal(tl_register(F.rt[i], &lone_sender_fn), TL_OK);
        assert_int_equal(tl_register(F.rt[i], &lone_receiver_fn), TL_OK);
    }
    memset(&TH, 0, sizeof TH);
    atomic_store(&lone_stop, 0);
    F.n[0] = secret_node(F.rt[0], "A");
    F.n[1] = secret_node(F.rt[1], "B");
    assert_int_equal(tl_node_listen(F.n[0], "tcp://127.0.0.1:0"), TL_OK);
    pair_up();
    tl_chan *home = chan_new(0, 0);
    assert_int_equal(tl_node_export(F.n[0], home, "lone"), TL_OK);
    tl_chan *proxy = NULL;
    assert_int_equal(tl_node_chan(F.n[1], "A/lone", &proxy), TL_OK);
    keep_chan(proxy);
    lone_t a = {home, tl_nil(), 0}, b = {proxy, tl_nil(), 0};
    spawn(0, &lone_receiver_fn, &a, sizeof a);
    spawn(1, &lone_sender_fn, &b, sizeof b);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, node_thread, F.n[i]), 0);
    /* once the messages flow, C links to A's listener */
    for (int i = 0; i < 60000 && atomic_load(&TH.count) < 2000; i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    assert_int_equal(tl_runtime_new(NULL, &crt), TL_OK);
    tl_node *c = secret_node(crt, "C");
    assert_int_equal(tl_node_connect(c, tl_node_address(F.n[0])), TL_OK);
    int linked = tl_node_wait_peer(c, "A", 30000);
    tl_node_free(c);
    tl_runtime_free(crt);
    atomic_store(&lone_stop, 1);
    /* a bound, not a timing assertion: stop a hung run after ~60 s */
    for (int i = 0; i < 60000 && !atomic_load(&TH.done); i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    tl_node_stop(F.n[0]);
    tl_node_stop(F.n[1]);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], &rc[i]), 0);
    assert_int_equal(linked, TL_OK);
    assert_true(atomic_load(&TH.done));
    assert_true(atomic_load(&TH.count) >= 2); /* messages flowed (2000 waited for, not
                                                * required: machine speed) */
    assert_int_equal((intptr_t)rc[0], TL_OK);
    assert_int_equal((intptr_t)rc[1], TL_OK);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0 && tl_tasklet_count(F.rt[1]) == 0);
}

/* ---- 10. snapshots of a runtime holding a proxy and a pinned channel ---- */

static void test_snapshot_proxy_pinned(void **state)
{
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    tl_chan *hold = chan_new(1, 0);
    assert_int_equal(tl_chan_set_name(hold, "hold"), TL_OK);
    spawn(0, &visitor_fn, &(peer_t){.ch = ch, .id = 1}, sizeof(peer_t));
    PUMP_UNTIL(stats(1).moved_in == 1 && tl_chan_balance(hold) == -1);
    /* a pinned channel held by nothing but the runtime */
    tl_chan *keepme;
    assert_int_equal(tl_tasklet_count(F.rt[1]), 1);
    assert_int_equal(tl_chan_new(F.rt[1], 2, &keepme), TL_OK);
    assert_int_equal(tl_chan_set_name(keepme, "keep"), TL_OK);
    assert_int_equal(tl_chan_pin(keepme, 1), TL_OK);
    assert_int_equal(tl_chan_try_send(keepme, tl_i64(77)), TL_OK);
    uint64_t keep_id = tl_chan_id(keepme);
    tl_chan_release(keepme);
    assert_non_null(tl_chan_find_name(F.rt[1], "keep"));
    /* the proxy B got for A's channel */
    tl_chan *proxy = NULL;
    for (uint64_t id = 1; id < 64 && !proxy; id++) {
        tl_chan *c = tl_chan_find(F.rt[1], id);
        if (c && tl_chan_remote(c, NULL, NULL))
            proxy = c;
    }
    assert_non_null(proxy);
    uint64_t proxy_id = tl_chan_id(proxy), home_id = 0;
    const char *home = NULL;
    assert_true(tl_chan_remote(proxy, &home, &home_id));
    assert_string_equal(home, "A");
    assert_int_equal(home_id, tl_chan_id(ch));

    void *snap, *buf;
    size_t len;
    assert_int_equal(tl_snapshot_save(F.rt[1], &snap, &len), TL_OK);
    buf = malloc(len);
    assert_non_null(buf);
    memcpy(buf, snap, len);
    tl_snapshot_free(F.rt[1], snap, len);
    /* B goes away; a new runtime loads the snapshot as node B */
    tl_node_free(F.n[1]);
    F.n[1] = NULL;
    tl_chan_release(hold);
    F.chans[--F.nchans] = NULL; /* hold was the last one kept */
    tl_runtime_free(F.rt[1]);
    assert_int_equal(F.ca[1].live, 0);
    tl_config cfg = size_config(&F.ca[1]);
    assert_int_equal(tl_runtime_new(&cfg, &F.rt[1]), TL_OK);
    assert_int_equal(register_all(F.rt[1]), 0);
    F.n[1] = node_new(F.rt[1], "B", NULL);
    assert_int_equal(tl_snapshot_load(F.rt[1], buf, len), TL_OK);

    tl_chan *k2 = tl_chan_find_name(F.rt[1], "keep");
    assert_non_null(k2);
    assert_int_equal(tl_chan_id(k2), keep_id);
    assert_true(tl_chan_pinned(k2));
    assert_int_equal(tl_chan_count(k2), 1);
    tl_chan *p2 = tl_chan_find(F.rt[1], proxy_id);
    assert_non_null(p2);
    home = NULL;
    home_id = 0;
    assert_true(tl_chan_remote(p2, &home, &home_id));
    assert_string_equal(home, "A");
    assert_int_equal(home_id, tl_chan_id(ch));
    assert_false(tl_chan_pinned(p2));
    /* saved again: the same size (the bytes differ by the head's time) */
    void *buf2;
    size_t len2;
    assert_int_equal(tl_snapshot_save(F.rt[1], &buf2, &len2), TL_OK);
    assert_int_equal(len2, len);
    tl_snapshot_free(F.rt[1], buf2, len2);
    free(buf);

    /* and the loaded proxy works once linked */
    pair_up();
    tl_value got = tl_nil();
    assert_int_equal(tl_chan_try_recv(k2, &got), TL_OK);
    assert_int_equal(tl_as_i64(got), 77);
    assert_int_equal(tl_chan_try_send(tl_chan_find_name(F.rt[1], "hold"), tl_i64(64)), TL_OK);
    spawn_peer(0, (peer_t){.ch = ch, .id = 5, .op = TL_OP_RECV});
    PUMP_UNTIL(R[2].set && R[5].set);
    assert_int_equal(R[1].num, 64);
    assert_string_equal(R[1].node, "B");
    assert_int_equal(R[2].err, 0);
    assert_true(R[2].remote);
    assert_int_equal(R[5].num, 64);
    assert_non_null(tl_chan_find_name(F.rt[1], "keep")); /* still pinned */
}

/* ---- 9. handover through the store's mailbox ---- */

static char dir[64], path[96];

static int setup_store(void **state)
{
    (void)state;
    memset(R, 0, sizeof R);
    snprintf(dir, sizeof dir, "/tmp/tl-migrate-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/mail.db", dir);
    return 0;
}

static int teardown_store(void **state)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal", "-lock"};
    char p[128];
    (void)state;
    for (size_t i = 0; i < TL_COUNTOF(sfx); i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
    return rmdir(dir) == 0 ? 0 : -1;
}

/* A runtime with the test's functions, node id id, and (if st) st
 * attached. */
static tl_runtime *store_rt(size_alloc *sa, const char *id, tl_store **st)
{
    tl_runtime *rt;
    tl_config cfg = size_config(sa);
    assert_int_equal(tl_runtime_new(&cfg, &rt), TL_OK);
    assert_int_equal(register_all(rt), 0);
    assert_int_equal(tl_set_node_id(rt, id), TL_OK);
    if (st) {
        assert_int_equal(tl_store_open(path, TL_STORE_NOSYNC, st), TL_OK);
        assert_int_equal(tl_store_attach(*st, rt), TL_OK);
    }
    return rt;
}

static void free_rt(tl_runtime *rt, size_alloc *sa)
{
    tl_runtime_free(rt);
    assert_int_equal(sa->live, 0);
}

static void test_store_mailbox(void **state)
{
    size_alloc sa, sb, sc, sq;
    tl_store *st, *stb;
    size_t n = 99;
    (void)state;
    tl_runtime *a = store_rt(&sa, "A", &st);
    step_t args = {.id = 10};
    assert_int_equal(tl_str_new(a, "payload", 7, &args.s), TL_OK);
    tl_tasklet *t1, *t2;
    assert_int_equal(tl_spawn(a, &step_fn, &args, sizeof args, &t1), TL_OK);
    args.id = 20;
    assert_int_equal(tl_spawn(a, &step_fn, &args, sizeof args, &t2), TL_OK);
    tl_release(args.s);
    assert_int_equal(tl_run_steps(a, 2, NULL), TL_OK); /* each ran to its first yield */
    assert_int_equal(R[10].num, 1);
    assert_string_equal(R[10].node, "A");
    assert_int_equal(R[20].num, 1);

    /* a tasklet of another runtime is refused */
    tl_runtime *other = store_rt(&sc, "C", NULL);
    tl_tasklet *foreign;
    assert_int_equal(tl_spawn(other, &step_fn, &(step_t){.id = 40}, sizeof(step_t), &foreign),
                     TL_OK);
    assert_int_equal(tl_store_export(st, foreign, "B"), TL_EINVAL);
    assert_int_equal(tl_tasklet_state(foreign), TL_RUNNABLE);
    tl_tasklet_release(foreign);

    assert_int_equal(tl_store_export(st, t1, "B"), TL_OK);
    assert_int_equal(tl_store_export(st, t2, "Q"), TL_OK);
    assert_moved(t1);
    assert_moved(t2);
    assert_int_equal(tl_tasklet_count(a), 0);
    tl_tasklet_release(t1);
    tl_tasklet_release(t2);
    assert_int_equal(tl_store_close(st), TL_OK);
    free_rt(a, &sa);

    /* B takes what is addressed to it, in a checkpoint */
    tl_runtime *b = store_rt(&sb, "B", &stb);
    int rc = tl_store_restore(stb);
    assert_true(rc == TL_OK || rc == TL_ENOENT);
    assert_int_equal(tl_tasklet_count(b), 0); /* A's checkpoint is without them */
    assert_int_equal(tl_store_import(stb, b, &n), TL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(tl_tasklet_count(b), 1);
    assert_int_equal(tl_store_import(stb, b, &n), TL_OK);
    assert_int_equal(n, 0); /* once */
    assert_int_equal(tl_tasklet_count(b), 1);
    /* a runtime no row is addressed to */
    assert_int_equal(tl_store_import(stb, other, &n), TL_OK);
    assert_int_equal(n, 0);
    assert_int_equal(tl_tasklet_count(other), 1);
    /* the import was checkpointed: a restart of B finds it there */
    assert_int_equal(tl_store_close(stb), TL_OK);
    free_rt(b, &sb);
    b = store_rt(&sb, "B", &stb);
    assert_int_equal(tl_store_restore(stb), TL_OK);
    assert_int_equal(tl_tasklet_count(b), 1);
    assert_int_equal(tl_store_import(stb, b, &n), TL_OK);
    assert_int_equal(n, 0);
    assert_int_equal(tl_run(b), TL_OK);
    assert_int_equal(R[10].set, 1);
    assert_int_equal(R[11].set, 1);
    assert_string_equal(R[11].node, "B"); /* it continued there */
    assert_int_equal(R[11].num, 2);
    assert_string_equal(R[11].str, "payload");
    assert_int_equal(R[12].num, 3);
    assert_int_equal(R[20].set, 1);
    assert_int_equal(R[21].set, 0);

    /* Q has no store of its own: a transaction on st alone */
    tl_runtime *q = store_rt(&sq, "Q", NULL);
    assert_int_equal(tl_store_import(stb, q, &n), TL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(tl_store_import(stb, q, &n), TL_OK);
    assert_int_equal(n, 0);
    assert_int_equal(tl_run(q), TL_OK);
    assert_string_equal(R[21].node, "Q");
    assert_int_equal(R[21].num, 2);
    assert_int_equal(R[22].num, 3);
    assert_int_equal(tl_store_close(stb), TL_OK);
    free_rt(b, &sb);
    free_rt(q, &sq);
    assert_int_equal(tl_run(other), TL_OK);
    free_rt(other, &sc);
}

/* The network does not stall the scheduler: while a 4 MiB transfer is in
 * flight (B not reading, so A's socket is full and its frame half written),
 * A's other tasklets keep running; the transfer completes once B reads. */
static void test_io_does_not_stall(void **state)
{
    enum { SIZE = 4 << 20 };
    (void)state;
    unsigned char *bytes = malloc(SIZE);
    assert_non_null(bytes);
    uint64_t x = 88172645463325252ULL; /* xorshift: incompressible */
    for (size_t i = 0; i < SIZE; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes[i] = (unsigned char)x;
    }
    big_t args;
    memset(&args, 0, sizeof args);
    args.tag = 5;
    assert_int_equal(tl_bin_new(F.rt[0], bytes, SIZE, &args.blob), TL_OK);
    free(bytes);
    ticks = 0;
    ticker_stop = 0;
    assert_int_equal(tl_spawn(F.rt[0], &ticker_fn, NULL, 0, NULL), TL_OK);
    assert_int_equal(tl_spawn(F.rt[0], &big_fn, &args, sizeof args, NULL), TL_OK);
    tl_release(args.blob);
    /* A alone: the tasklet leaves, its frame cannot all be written */
    for (int i = 0; i < 5; i++)
        assert_int_equal(tl_node_poll(F.n[0], 0), TL_OK);
    assert_int_equal(stats(0).pending, 1);
    long before = ticks;
    for (int i = 0; i < 50; i++)
        assert_int_equal(tl_node_poll(F.n[0], 0), TL_OK);
    assert_int_equal(stats(0).pending, 1);    /* still in flight ... */
    assert_int_equal(stats(0).moved_out, 0);
    assert_true(ticks - before >= 40);        /* ... and A kept running */
    assert_int_equal(R[5].set, 0);
    PUMP_UNTIL(stats(0).moved_out == 1);
    PUMP_UNTIL(R[5].set == 1);
    assert_string_equal(R[5].node, "B");
    assert_int_equal(R[5].num, SIZE);
    ticker_stop = 1;
    PUMP_ROUNDS(3);
}

/* ---- library bugs ---- */

/* A snapshot load frees the chunk's function table with a size other than
 * the one it allocated (persist/decode.c: resolve_funcs allocates
 * nfuncs + 1 entries, doc_free frees nfuncs), breaking the tl_alloc_fn
 * contract: every migration and every load is off by sizeof(fnref). */
/* A tasklet holding 3 MiB of random bytes (XFER frames of 48 records,
 * the links' big buffers kept between them, its raw records unchecked:
 * the nodes have no store) goes to B and back three times, the bytes the
 * same at every arrival. */
static void test_large_payload_shuttle(void **state)
{
    (void)state;
    size_t n = (size_t)3 << 20;
    unsigned char *bytes = malloc(n);
    assert_non_null(bytes);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i++) { /* xorshift: incompressible */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        bytes[i] = (unsigned char)(x >> 24);
    }
    int64_t want = (int64_t)crc32(0L, bytes, (uInt)n);
    shuttle_t args = {.n = 3, .tag = 50};
    assert_int_equal(tl_bin_new(F.rt[0], bytes, n, &args.blob), TL_OK);
    free(bytes);
    spawn(0, &shuttle_fn, &args, sizeof args);
    tl_release(args.blob);
    PUMP_UNTIL(R[55].set == 1);
    for (int k = 50; k <= 55; k++) {
        assert_int_equal(R[k].set, 1);
        assert_string_equal(R[k].node, k % 2 ? "A" : "B");
        assert_int_equal(R[k].num, want);
    }
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == 0 && stats(1).moved_out == 3);
    assert_int_equal(stats(0).moved_in, 3);
    assert_int_equal(stats(0).frames_rejected + stats(1).frames_rejected, 0);
}

static void test_load_frees_with_alloc_size(void **state)
{
    size_alloc s1, s2;
    void *buf;
    size_t len;
    (void)state;
    memset(R, 0, sizeof R);
    tl_runtime *a = store_rt(&s1, "A", NULL);
    assert_int_equal(tl_spawn(a, &step_fn, &(step_t){.id = 1}, sizeof(step_t), NULL), TL_OK);
    assert_int_equal(tl_snapshot_save(a, &buf, &len), TL_OK);
    tl_runtime *b = store_rt(&s2, "A", NULL);
    int rc = tl_snapshot_load(b, buf, len);
    tl_snapshot_free(a, buf, len);
    uint64_t bad_after_load = s2.bad_osize;
    int rc_run = tl_run(b);
    tl_runtime_free(a);
    tl_runtime_free(b);
    /* assert only now: a failure leaks nothing for ASan to report */
    assert_int_equal(rc, TL_OK);
    assert_int_equal(rc_run, TL_OK);
    assert_int_equal(R[1].num, 1);
    assert_int_equal(bad_after_load, 0);
    assert_int_equal(s1.bad_osize + s2.bad_osize, 0);
    assert_int_equal(s1.live, 0);
    assert_int_equal(s2.live, 0);
}

/* Many requests at once: the tables of requests (B) and agents (A) grow,
 * lose entries in every order (answered, cancelled), and a dropped link
 * fails what is left. */
static void test_many_remote_ops(void **state)
{
    enum { N = 300 };
    static tl_tasklet *t[N];
    (void)state;
    tl_chan *ch = chan_new(0, 0);
    assert_int_equal(tl_chan_set_name(ch, "many"), TL_OK);
    tl_chan *p = proxy_b("many");
    for (int i = 0; i < N; i++) {
        peer_t a = {.ch = p, .id = 0, .op = TL_OP_RECV, .catch_err = 1};
        assert_int_equal(tl_spawn(F.rt[1], &peer_fn, &a, sizeof a, &t[i]), TL_OK);
    }
    PUMP_UNTIL(tl_chan_balance(ch) == -N);
    assert_int_equal(tl_tasklet_count(F.rt[0]), N); /* the agents */
    for (int i = 0; i < N / 3; i++)
        assert_int_equal(tl_chan_try_send(ch, tl_i64(i)), TL_OK);
    PUMP_UNTIL(R[0].set == N / 3);
    assert_int_equal(stats(0).remote_ops, N / 3);
    int killed = 0;
    for (int i = N - 1; i >= 0 && killed < N / 3; i--)
        if (tl_tasklet_state(t[i]) == TL_BLOCKED) {
            assert_int_equal(tl_kill_now(t[i]), TL_OK); /* not caught: R[0] stays */
            killed++;
        }
    assert_int_equal(killed, N / 3);
    PUMP_UNTIL(tl_tasklet_count(F.rt[0]) == N / 3 && tl_chan_balance(ch) == -N / 3);
    tl_node_free(F.n[0]); /* the rest fail with TL_ELINK */
    F.n[0] = NULL;
    PUMP_UNTIL(R[0].set == 2 * N / 3);
    assert_int_equal(R[0].err, TL_ELINK);
    assert_int_equal(tl_blocked_count(F.rt[1]), 0);
    for (int i = 0; i < N; i++)
        tl_tasklet_release(t[i]);
}

/* ---- 11. node handles that catch misuse ---- */

/* An allocator that keeps freed blocks until the test ends, so that a
 * freed handle's memory stays readable and is not reused. */
typedef struct keep_alloc {
    void *kept[256];
    size_t n;
} keep_alloc;

static void *keep_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    keep_alloc *ka = ud;
    (void)osize;
    if (nsize == 0) {
        if (ptr && ka->n < TL_COUNTOF(ka->kept))
            ka->kept[ka->n++] = ptr;
        else
            free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

/* Every entry point refuses bad, TL_EMISUSE or an empty answer. */
static void assert_refused(tl_node *bad, tl_node *good)
{
    tl_chan *ch = (tl_chan *)&ch;
    tl_node_stats st;
    memset(&st, 0x5a, sizeof st);
    assert_int_equal(tl_node_poll(bad, 0), TL_EMISUSE);
    assert_int_equal(tl_node_run(bad), TL_EMISUSE);
    assert_int_equal(tl_node_listen(bad, "tcp://127.0.0.1:0"), TL_EMISUSE);
    assert_int_equal(tl_node_connect(bad, "tcp://127.0.0.1:1"), TL_EMISUSE);
    assert_int_equal(tl_node_wait_peer(bad, "X", 0), TL_EMISUSE);
    assert_int_equal(tl_node_migrate(bad, NULL, "X"), TL_EMISUSE);
    assert_int_equal(tl_node_chan(bad, "X/c", &ch), TL_EMISUSE);
    assert_int_equal(tl_node_pair(bad, good), TL_EMISUSE);
    assert_int_equal(tl_node_pair(good, bad), TL_EMISUSE);
    assert_int_equal(tl_node_connected(bad, "X"), 0);
    assert_null(tl_node_runtime(bad));
    assert_string_equal(tl_node_name(bad), "");
    assert_string_equal(tl_node_address(bad), "");
    assert_string_equal(tl_node_errmsg(bad), "");
    tl_node_stats_get(bad, &st);
    assert_int_equal(st.moved_out, 0x5a5a5a5a5a5a5a5aULL); /* untouched */
    tl_node_stop(bad);
    tl_node_free(bad); /* nothing happens */
}

static void test_node_handle_misuse(void **state)
{
    keep_alloc ka = {{NULL}, 0};
    tl_config cfg;
    tl_runtime *rt[2];
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cfg.alloc = keep_alloc_fn;
    cfg.alloc_ud = &ka;
    for (int i = 0; i < 2; i++)
        assert_int_equal(tl_runtime_new(&cfg, &rt[i]), TL_OK);
    tl_node *n = node_new(rt[0], "M", NULL), *other = node_new(rt[1], "O", NULL);
    uint64_t zeros[64] = {0};
    assert_refused((tl_node *)rt[0], other); /* another kind of handle */
    assert_refused((tl_node *)zeros, other);  /* not a handle at all */
    assert_int_equal(tl_node_poll(n, 0), TL_OK);
    assert_string_equal(tl_node_name(n), "M");
    tl_node_free(n);
    assert_refused(n, other); /* freed, its memory kept by the allocator */
    n = node_new(rt[0], "M2", NULL); /* the runtime is free for a new node */
    tl_node_free(n);
    tl_node_free(other);
    for (int i = 0; i < 2; i++)
        tl_runtime_free(rt[i]);
    for (size_t i = 0; i < ka.n; i++)
        free(ka.kept[i]);
}

/* The spin before a sleep is kept only while it pays (issue 12 point 7):
 * a fresh node spins; after 3 more spins that found nothing than spins
 * that found an answer it sleeps at once, spinning once per 64 waits to
 * learn; one spin that pays brings spinning back. */
static void test_spin_only_while_it_pays(void **state)
{
    (void)state;
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    tl_node *n = node_new(rt, "S", NULL);
    assert_true(tl__node_spin_pays(n));
    tl__node_spin_note(n, 0);
    tl__node_spin_note(n, 1); /* a hit takes a miss back */
    for (int i = 0; i < 2; i++) {
        assert_true(tl__node_spin_pays(n));
        tl__node_spin_note(n, 0);
    }
    assert_true(tl__node_spin_pays(n)); /* two misses net: still spinning */
    tl__node_spin_note(n, 0);
    int spins = 0;
    for (int i = 0; i < 640; i++)
        spins += tl__node_spin_pays(n); /* each a miss under load */
    assert_int_equal(spins, 10);       /* once per 64 waits */
    tl__node_spin_note(n, 1);          /* a retry found an answer */
    assert_true(tl__node_spin_pays(n));
    tl__node_spin_note(n, 1);
    assert_true(tl__node_spin_pays(n));
    tl_node_free(n);
    tl_runtime_free(rt);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TS(fn) cmocka_unit_test_setup_teardown(fn, setup_store, teardown_store)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_round_trip),
        T(test_remote_rendezvous),
        T(test_names),
        T(test_link_break),
        T(test_link_dead_before_op),
        T(test_refused),
        T(test_refused_blocked),
        T(test_remote_waiter_goes_home),
        T(test_remote_waiter_moves_with_answer),
        T(test_sleeper_moves),
        T(test_migrate_unknown_and_self),
        T(test_host_migrate_refusals),
        T(test_remote_notsup),
        T(test_kill_remote_waiter),
        T(test_many_remote_ops),
        T(test_two_threads),
        T(test_lone_link_rules),
        T(test_cargo_split_widths),
        T(test_lone_link_serves_the_rest),
        T(test_snapshot_proxy_pinned),
        T(test_io_does_not_stall),
        T(test_large_payload_shuttle),
        TS(test_store_mailbox),
        cmocka_unit_test(test_load_frees_with_alloc_size),
        cmocka_unit_test(test_node_handle_misuse),
        cmocka_unit_test(test_spin_only_while_it_pays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
