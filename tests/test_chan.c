/*
 * test_chan.c -- channels with Stackless semantics: balance, who runs
 * after a rendezvous (preference, schedule_all), FIFO order of waiters,
 * close, kill of a waiter, errors sent through channels, buffers, select
 * (readiness, fairness, cleanup), references and strings as values, the
 * host's try_send / try_recv, and the channel callback.
 *
 * Every tasklet appends events to one log (EV(id, phase)) so each test can
 * assert the exact execution order.  The runtime allocates through a
 * counting allocator: teardown checks that every byte came back, and the
 * tests that must release a value watch the one "big" string block.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasklet.h"
#include "testutil.h"

/* ---- the allocator: counts bytes, and the blocks of big strings ---- */

#define BIG_LEN 100000
#define IS_BIG(n) ((n) > BIG_LEN && (n) < BIG_LEN + 512)

static count_alloc ca;
static int64_t big_blocks; /* live blocks of a big string's size */

static void *chan_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    void *p = count_alloc_fn(ud, ptr, osize, nsize);
    if (nsize == 0 || p) {
        big_blocks -= ptr && IS_BIG(osize);
        big_blocks += nsize && IS_BIG(nsize);
    }
    return p;
}

/* ---- what tasklets record ---- */

enum { PH_BEFORE = 0, PH_AFTER = 1, PH_ERROR = 2, PH_MARK = 3 };
#define EV(id, ph) ((id) * 10 + (ph))
#define MAXID 16
#define LOG_CAP 256

typedef struct cb_rec {
    tl_chan *ch;
    tl_tasklet *t;
    int sending, will_block;
} cb_rec;

static struct {
    int log[LOG_CAP];
    size_t nlog;
    int type[MAXID];        /* last value received by tasklet id */
    int64_t num[MAXID];
    char str[MAXID][64];
    int err[MAXID];         /* error caught by tasklet id */
    char msg[MAXID][96];
    int sel_idx[MAXID];     /* last case fired in tasklet id's select */
    int64_t vals[64];       /* values received by seq_receiver, in order */
    size_t nvals;
    int hits[4];            /* select: how often each case fired */
    cb_rec cbs[16];
    size_t ncbs;
    tl_tasklet *handles[64]; /* released by teardown */
    size_t nhandles;
} g;

static void log_ev(int id, int phase)
{
    if (g.nlog < LOG_CAP)
        g.log[g.nlog] = EV(id, phase);
    g.nlog++;
}

static void log_reset(void) { g.nlog = 0; }

static void record_value(int id, tl_value v)
{
    const char *s = tl_str_data(v, NULL);
    g.type[id] = tl_type(v);
    g.num[id] = tl_as_i64(v);
    snprintf(g.str[id], sizeof g.str[id], "%s", s ? s : "");
}

static void record_error(tl_frame *f, int id, int err)
{
    g.err[id] = err;
    snprintf(g.msg[id], sizeof g.msg[id], "%s", tl_frame_errmsg(f));
}

static void assert_log(const int *want, size_t n)
{
    int same = g.nlog == n && memcmp(g.log, want, n * sizeof *want) == 0;
    if (!same) {
        print_error("log:   ");
        for (size_t i = 0; i < g.nlog && i < LOG_CAP; i++)
            print_error(" %d", g.log[i]);
        print_error("\nwant:  ");
        for (size_t i = 0; i < n; i++)
            print_error(" %d", want[i]);
        print_error("\n");
    }
    assert_true(same);
}
#define ASSERT_LOG(...)                                   \
    do {                                                  \
        static const int want_[] = {__VA_ARGS__};         \
        assert_log(want_, TL_COUNTOF(want_));             \
    } while (0)

/* ---- tasklet functions ---- */

/* peer: one send (op TL_OP_SEND), error send (OP_SEND_ERROR) or receive. */
enum { OP_SEND_ERROR = 3 };
typedef struct {
    tl_chan *ch;
    tl_value v;
    int32_t id, op, catch_err, code;
    char msg[64]; /* an error send's message */
} peer_t;
static const tl_field peer_fields[] = {
    TL_FIELD(peer_t, ch, TL_T_CHAN), TL_FIELD(peer_t, v, TL_T_VALUE),
    TL_FIELD(peer_t, id, TL_T_I32), TL_FIELD(peer_t, op, TL_T_I32),
    TL_FIELD(peer_t, catch_err, TL_T_I32), TL_FIELD(peer_t, code, TL_T_I32),
    TL_FIELD(peer_t, msg, TL_T_BYTES),
};

static void peer_done(tl_frame *f, peer_t *L)
{
    int err = tl_frame_error(f);
    if (err) {
        record_error(f, L->id, err);
        log_ev(L->id, PH_ERROR);
        return;
    }
    if (L->op == TL_OP_RECV)
        record_value(L->id, L->v);
    log_ev(L->id, PH_AFTER);
}

static tl_status peer(tl_frame *f, void *locals)
{
    peer_t *L = locals;
    TL_BEGIN(f);
    if (L->catch_err)
        tl_frame_catch(f, 1);
    log_ev(L->id, PH_BEFORE);
    if (L->op == TL_OP_SEND) {
        TL_SEND(f, L->ch, L->v);
    } else if (L->op == OP_SEND_ERROR) {
        TL_SEND_ERROR(f, L->ch, L->code, L->msg);
    } else {
        TL_RECV(f, L->ch, L->v);
    }
    peer_done(f, L);
    TL_END(f);
}
static const tl_func peer_fn = {"test.chan.peer", 1, peer, sizeof(peer_t),
                                peer_fields, TL_COUNTOF(peer_fields), NULL};

/* seq_sender sends base .. base+n-1; seq_receiver receives n values. */
typedef struct { tl_chan *ch; tl_value v; int32_t id, n, i, base; } seq_t;
static const tl_field seq_fields[] = {
    TL_FIELD(seq_t, ch, TL_T_CHAN), TL_FIELD(seq_t, v, TL_T_VALUE),
    TL_FIELD(seq_t, id, TL_T_I32), TL_FIELD(seq_t, n, TL_T_I32),
    TL_FIELD(seq_t, i, TL_T_I32), TL_FIELD(seq_t, base, TL_T_I32),
};

static tl_status seq_sender(tl_frame *f, void *locals)
{
    seq_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_SEND(f, L->ch, tl_i64(L->base + L->i));
        log_ev(L->id, PH_AFTER);
    }
    TL_END(f);
}
static const tl_func seq_sender_fn = {"test.chan.seq_sender", 1, seq_sender, sizeof(seq_t),
                                      seq_fields, TL_COUNTOF(seq_fields), NULL};

static tl_status seq_receiver(tl_frame *f, void *locals)
{
    seq_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_RECV(f, L->ch, L->v);
        if (g.nvals < TL_COUNTOF(g.vals))
            g.vals[g.nvals++] = tl_as_i64(L->v);
        log_ev(L->id, PH_AFTER);
    }
    TL_END(f);
}
static const tl_func seq_receiver_fn = {"test.chan.seq_receiver", 1, seq_receiver,
                                        sizeof(seq_t), seq_fields, TL_COUNTOF(seq_fields),
                                        NULL};

/* marker: logs that it ran. */
typedef struct { int32_t id; } marker_t;
static const tl_field marker_fields[] = {TL_FIELD(marker_t, id, TL_T_I32)};

static tl_status marker(tl_frame *f, void *locals)
{
    marker_t *L = locals;
    TL_BEGIN(f);
    log_ev(L->id, PH_MARK);
    TL_END(f);
}
static const tl_func marker_fn = {"test.chan.marker", 1, marker, sizeof(marker_t),
                                  marker_fields, TL_COUNTOF(marker_fields), NULL};

/* selector: `rounds` selects over up to four cases.  The channels, ops
 * and send values are schema fields; the case array is scratch, rebuilt
 * before each select (API.md section 7), so that a restore -- or check
 * mode, where every resumption is one -- finds them.  With refill, the
 * fired case is made ready again. */
typedef struct {
    tl_case cases[4];
    tl_chan *ch[4];
    tl_value val[4];        /* a send case's value */
    tl_value got;
    int32_t op[4];
    int32_t id, n, rounds, i, idx, refill, catch_err, pad_;
} selector_t;
static const tl_field selector_fields[] = {
    TL_FIELD(selector_t, cases, TL_T_CASES),
    TL_FIELD(selector_t, ch[0], TL_T_CHAN), TL_FIELD(selector_t, ch[1], TL_T_CHAN),
    TL_FIELD(selector_t, ch[2], TL_T_CHAN), TL_FIELD(selector_t, ch[3], TL_T_CHAN),
    TL_FIELD(selector_t, val[0], TL_T_VALUE), TL_FIELD(selector_t, val[1], TL_T_VALUE),
    TL_FIELD(selector_t, val[2], TL_T_VALUE), TL_FIELD(selector_t, val[3], TL_T_VALUE),
    TL_FIELD(selector_t, op[0], TL_T_I32), TL_FIELD(selector_t, op[1], TL_T_I32),
    TL_FIELD(selector_t, op[2], TL_T_I32), TL_FIELD(selector_t, op[3], TL_T_I32),
    TL_FIELD(selector_t, got, TL_T_VALUE), TL_FIELD(selector_t, id, TL_T_I32),
    TL_FIELD(selector_t, n, TL_T_I32), TL_FIELD(selector_t, rounds, TL_T_I32),
    TL_FIELD(selector_t, i, TL_T_I32), TL_FIELD(selector_t, idx, TL_T_I32),
    TL_FIELD(selector_t, refill, TL_T_I32), TL_FIELD(selector_t, catch_err, TL_T_I32),
};

static void select_build(selector_t *L)
{
    for (int i = 0; i < 4; i++)
        L->cases[i] = (tl_case){.ch = L->ch[i], .op = L->op[i], .value = L->val[i]};
}

static void select_refill(selector_t *L)
{
    tl_case *c = &L->cases[L->idx];
    tl_value v;
    if (c->op == TL_OP_RECV) {
        assert_int_equal(tl_chan_try_send(c->ch, L->got), TL_OK);
        return;
    }
    assert_int_equal(tl_chan_try_recv(c->ch, &v), TL_OK);
    tl_release(v);
}

static void select_done(tl_frame *f, selector_t *L)
{
    int err = tl_frame_error(f);
    if (err) {
        record_error(f, L->id, err);
        g.sel_idx[L->id] = L->idx;
        log_ev(L->id, PH_ERROR);
        return;
    }
    assert_in_range(L->idx, 0, L->n - 1);
    if (L->idx < 4)
        g.hits[L->idx]++;
    g.sel_idx[L->id] = L->idx;
    record_value(L->id, L->got);
    if (L->refill)
        select_refill(L);
    log_ev(L->id, PH_AFTER);
}

static tl_status selector(tl_frame *f, void *locals)
{
    selector_t *L = locals;
    TL_BEGIN(f);
    if (L->catch_err)
        tl_frame_catch(f, 1);
    for (L->i = 0; L->i < (L->rounds ? L->rounds : 1); L->i++) {
        log_ev(L->id, PH_BEFORE);
        select_build(L);
        TL_SELECT(f, L->cases, L->n, L->idx, L->got);
        select_done(f, L);
    }
    TL_END(f);
}
static const tl_func selector_fn = {"test.chan.selector", 1, selector, sizeof(selector_t),
                                    selector_fields, TL_COUNTOF(selector_fields), NULL};

/* catcher: calls peer (receive, not catching) and catches what unwinds. */
typedef struct { tl_chan *ch; tl_value res; int32_t id, depth; } catcher_t;
static const tl_field catcher_fields[] = {
    TL_FIELD(catcher_t, ch, TL_T_CHAN), TL_FIELD(catcher_t, res, TL_T_VALUE),
    TL_FIELD(catcher_t, id, TL_T_I32), TL_FIELD(catcher_t, depth, TL_T_I32),
};

static tl_status catcher(tl_frame *f, void *locals)
{
    catcher_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_CALL(f, &peer_fn, L->res, &(peer_t){.ch = L->ch, .id = L->id + 1, .op = TL_OP_RECV});
    L->depth = (int32_t)tl_tasklet_depth(tl_frame_tasklet(f));
    record_error(f, L->id, tl_frame_error(f));
    log_ev(L->id, g.err[L->id] ? PH_ERROR : PH_AFTER);
    TL_END(f);
}
static const tl_func catcher_fn = {"test.chan.catcher", 1, catcher, sizeof(catcher_t),
                                   catcher_fields, TL_COUNTOF(catcher_fields), NULL};

/* client sends a reply channel it made over `main`, then receives on it;
 * server receives the channel and answers 99 on it. */
typedef struct { tl_chan *main, *reply; tl_value v; int32_t id, pad_; } rpc_t;
static const tl_field rpc_fields[] = {
    TL_FIELD(rpc_t, main, TL_T_CHAN), TL_FIELD(rpc_t, reply, TL_T_CHAN),
    TL_FIELD(rpc_t, v, TL_T_VALUE), TL_FIELD(rpc_t, id, TL_T_I32),
};

static tl_status client(tl_frame *f, void *locals)
{
    rpc_t *L = locals;
    TL_BEGIN(f);
    assert_int_equal(tl_chan_new(tl_frame_runtime(f), 0, &L->reply), TL_OK);
    g.num[L->id + 1] = (int64_t)tl_chan_id(L->reply);
    tl_value_set(&L->v, tl_chan_value(L->reply));
    TL_SEND(f, L->main, L->v);
    TL_RECV(f, L->reply, L->v);
    record_value(L->id, L->v);
    TL_END(f);
}
static const tl_func client_fn = {"test.chan.client", 1, client, sizeof(rpc_t),
                                  rpc_fields, TL_COUNTOF(rpc_fields), NULL};

static tl_status server(tl_frame *f, void *locals)
{
    rpc_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->main, L->v);
    g.type[L->id] = tl_type(L->v);
    g.num[L->id] = (int64_t)tl_chan_id(tl_as_chan(L->v));
    TL_SEND(f, tl_as_chan(L->v), tl_i64(99));
    TL_END(f);
}
static const tl_func server_fn = {"test.chan.server", 1, server, sizeof(rpc_t),
                                  rpc_fields, TL_COUNTOF(rpc_fields), NULL};

/* worker yields once and returns 123; joiner receives a tasklet value
 * and joins it. */
static tl_status worker(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_YIELD(f);
    TL_RETURN(f, tl_i64(123));
    TL_END(f);
}
static const tl_func worker_fn = {"test.chan.worker", 1, worker, sizeof(marker_t),
                                  marker_fields, TL_COUNTOF(marker_fields), NULL};

typedef struct { tl_chan *ch; tl_value v, res; int32_t id, pad_; } joiner_t;
static const tl_field joiner_fields[] = {
    TL_FIELD(joiner_t, ch, TL_T_CHAN), TL_FIELD(joiner_t, v, TL_T_VALUE),
    TL_FIELD(joiner_t, res, TL_T_VALUE), TL_FIELD(joiner_t, id, TL_T_I32),
};

static tl_status joiner(tl_frame *f, void *locals)
{
    joiner_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->ch, L->v);
    g.type[L->id] = tl_type(L->v);
    g.num[L->id] = (int64_t)tl_tasklet_id(tl_as_tasklet(L->v));
    TL_JOIN(f, tl_as_tasklet(L->v), L->res);
    g.vals[g.nvals++] = tl_as_i64(L->res);
    TL_END(f);
}
static const tl_func joiner_fn = {"test.chan.joiner", 1, joiner, sizeof(joiner_t),
                                  joiner_fields, TL_COUNTOF(joiner_fields), NULL};

static const tl_func *const all_fns[] = {
    &peer_fn, &seq_sender_fn, &seq_receiver_fn, &marker_fn, &selector_fn,
    &catcher_fn, &client_fn, &server_fn, &worker_fn, &joiner_fn,
};

/* ---- fixtures and helpers ---- */

static selector_t select_args(int id, tl_chan *const *chs, const int *ops, int n)
{
    selector_t a = {.id = id, .n = n};
    for (int i = 0; i < n; i++) {
        a.ch[i] = chs[i];
        a.op[i] = ops[i];
    }
    return a;
}

static tl_runtime *runtime_new(void)
{
    tl_runtime *rt;
    tl_config cfg = count_config(&ca);
    cfg.alloc = chan_alloc_fn;
    if (tl_runtime_new(&cfg, &rt) != TL_OK)
        return NULL;
    for (size_t i = 0; i < TL_COUNTOF(all_fns); i++)
        if (tl_register(rt, all_fns[i]) != TL_OK)
            return NULL;
    return rt;
}

static int setup(void **state)
{
    memset(&ca, 0, sizeof ca);
    ca.fail_at = -1;
    big_blocks = 0;
    memset(&g, 0, sizeof g);
    *state = runtime_new();
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    for (size_t i = 0; i < g.nhandles; i++)
        tl_tasklet_release(g.handles[i]);
    tl_runtime_free(*state);
    if (ca.live != 0 || big_blocks != 0) {
        print_error("teardown: %lld bytes and %lld big blocks still allocated\n",
                    (long long)ca.live, (long long)big_blocks);
        return -1;
    }
    return 0;
}

static tl_tasklet *keep(tl_tasklet *t)
{
    assert_true(g.nhandles < TL_COUNTOF(g.handles));
    g.handles[g.nhandles++] = t;
    return t;
}

/* A restart: the runtime is saved, freed (with the test's handles) and
 * loaded into a new one, which replaces *state. */
static tl_runtime *reload(void **state)
{
    void *buf;
    size_t len;
    assert_int_equal(tl_snapshot_save(*state, &buf, &len), TL_OK);
    void *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    tl_snapshot_free(*state, buf, len);
    for (size_t i = 0; i < g.nhandles; i++)
        tl_tasklet_release(g.handles[i]);
    g.nhandles = 0;
    tl_runtime_free(*state);
    *state = runtime_new();
    assert_non_null(*state);
    assert_int_equal(tl_snapshot_load(*state, copy, len), TL_OK);
    free(copy);
    return *state;
}

static tl_tasklet *spawn(tl_runtime *rt, const tl_func *fn, const void *args, size_t n)
{
    tl_tasklet *t = NULL;
    assert_int_equal(tl_spawn(rt, fn, args, n, &t), TL_OK);
    return keep(t);
}

static tl_tasklet *spawn_recv(tl_runtime *rt, tl_chan *ch, int id, int catch_err)
{
    peer_t a = {.ch = ch, .id = id, .op = TL_OP_RECV, .catch_err = catch_err};
    return spawn(rt, &peer_fn, &a, sizeof a);
}

static tl_tasklet *spawn_send(tl_runtime *rt, tl_chan *ch, int id, tl_value v, int catch_err)
{
    peer_t a = {.ch = ch, .v = v, .id = id, .op = TL_OP_SEND, .catch_err = catch_err};
    return spawn(rt, &peer_fn, &a, sizeof a);
}

static tl_tasklet *spawn_send_error(tl_runtime *rt, tl_chan *ch, int id, int code,
                                    const char *msg)
{
    peer_t a = {.ch = ch, .id = id, .op = OP_SEND_ERROR, .code = code};
    snprintf(a.msg, sizeof a.msg, "%s", msg);
    return spawn(rt, &peer_fn, &a, sizeof a);
}

static tl_tasklet *spawn_seq(tl_runtime *rt, const tl_func *fn, tl_chan *ch, int id, int n,
                             int base)
{
    seq_t a = {.ch = ch, .id = id, .n = n, .base = base};
    return spawn(rt, fn, &a, sizeof a);
}

static void spawn_marker(tl_runtime *rt, int id)
{
    marker_t a = {.id = id};
    spawn(rt, &marker_fn, &a, sizeof a);
}

/* Runs until no tasklet is runnable (blocked ones may remain). */
static void run_idle(tl_runtime *rt)
{
    assert_int_equal(tl_run_steps(rt, UINT64_MAX, NULL), TL_OK);
    assert_int_equal(tl_runnable_count(rt), 0);
}

static tl_chan *chan_new(tl_runtime *rt, size_t capacity)
{
    tl_chan *ch = NULL;
    assert_int_equal(tl_chan_new(rt, capacity, &ch), TL_OK);
    assert_non_null(ch);
    return ch;
}

static tl_value str_new(tl_runtime *rt, const char *s)
{
    tl_value v;
    assert_int_equal(tl_str_new(rt, s, strlen(s), &v), TL_OK);
    return v;
}

static tl_value big_str(tl_runtime *rt)
{
    char *buf = malloc(BIG_LEN);
    tl_value v;
    assert_non_null(buf);
    memset(buf, 'x', BIG_LEN);
    memcpy(buf, "big:", 4);
    assert_int_equal(tl_str_new(rt, buf, BIG_LEN, &v), TL_OK);
    free(buf);
    return v;
}

static int64_t try_recv_i64(tl_chan *ch)
{
    tl_value v;
    assert_int_equal(tl_chan_try_recv(ch, &v), TL_OK);
    assert_int_equal(tl_type(v), TL_V_INT);
    return tl_as_i64(v);
}

#define E_BOOM (TL_EUSER - 7)

/* ---- balance ---- */

static void test_balance_signs(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    assert_int_equal(tl_chan_balance(ch), 0);

    for (int i = 1; i <= 4; i++)
        spawn_recv(rt, ch, i, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), -4);
    assert_int_equal(tl_blocked_count(rt), 4);
    spawn_seq(rt, &seq_sender_fn, ch, 5, 4, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_blocked_count(rt), 0);

    for (int i = 1; i <= 3; i++)
        spawn_send(rt, ch, i, tl_i64(i), 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), 3);
    assert_int_equal(tl_blocked_count(rt), 3);
    spawn_seq(rt, &seq_receiver_fn, ch, 6, 3, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_blocked_count(rt), 0);
    assert_int_equal(tl_tasklet_count(rt), 0);
    tl_chan_release(ch);
}

/* ---- who runs after a rendezvous ---- */

/* Receiver id 1, sender id 2 (sends 7), bystander id 3 spawned last, so it
 * is in the run queue when the rendezvous happens. */
enum { RID = 1, SID = 2, XID = 3 };
enum {
    R_BEFORE = EV(RID, PH_BEFORE), R_AFTER = EV(RID, PH_AFTER),
    S_BEFORE = EV(SID, PH_BEFORE), S_AFTER = EV(SID, PH_AFTER),
    X_MARK = EV(XID, PH_MARK)
};

static void rendezvous(tl_runtime *rt, int pref, int sched_all, int receiver_waits)
{
    tl_chan *ch = chan_new(rt, 0);
    assert_int_equal(tl_chan_set_preference(ch, pref), TL_OK);
    assert_int_equal(tl_chan_set_schedule_all(ch, sched_all), TL_OK);
    log_reset();
    g.num[RID] = 0;
    if (receiver_waits) {
        spawn_recv(rt, ch, RID, 0);
        spawn_send(rt, ch, SID, tl_i64(7), 0);
    } else {
        spawn_send(rt, ch, SID, tl_i64(7), 0);
        spawn_recv(rt, ch, RID, 0);
    }
    spawn_marker(rt, XID);
    run_idle(rt);
    assert_int_equal(g.num[RID], 7);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_tasklet_count(rt), 0);
    tl_chan_release(ch);
}

static void test_preference_default_is_receiver(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    assert_int_equal(tl_chan_preference(ch), -1);
    assert_int_equal(tl_chan_schedule_all(ch), 0);
    /* Stackless normalises the preference to its sign */
    assert_int_equal(tl_chan_set_preference(ch, 2), TL_OK);
    assert_int_equal(tl_chan_preference(ch), 1);
    assert_int_equal(tl_chan_set_preference(ch, -7), TL_OK);
    assert_int_equal(tl_chan_preference(ch), -1);
    assert_int_equal(tl_chan_set_preference(ch, 1), TL_OK);
    assert_int_equal(tl_chan_preference(ch), 1);
    assert_int_equal(tl_chan_set_schedule_all(ch, 5), TL_OK);
    assert_int_equal(tl_chan_schedule_all(ch), 1);
    tl_chan_release(ch);
}

static void test_preference_receiver(void **state)
{
    tl_runtime *rt = *state;
    /* Sender arrives at a waiting receiver: the receiver is preferred, so
     * it runs at once and the sender goes behind the bystander. */
    rendezvous(rt, -1, 0, 1);
    ASSERT_LOG(R_BEFORE, S_BEFORE, R_AFTER, X_MARK, S_AFTER);
    /* Receiver arrives at a waiting sender: the sender is not preferred;
     * it goes to the back and the receiver continues. */
    rendezvous(rt, -1, 0, 0);
    ASSERT_LOG(S_BEFORE, R_BEFORE, R_AFTER, X_MARK, S_AFTER);
}

static void test_preference_neither(void **state)
{
    tl_runtime *rt = *state;
    rendezvous(rt, 0, 0, 1);
    ASSERT_LOG(R_BEFORE, S_BEFORE, S_AFTER, X_MARK, R_AFTER);
    rendezvous(rt, 0, 0, 0);
    ASSERT_LOG(S_BEFORE, R_BEFORE, R_AFTER, X_MARK, S_AFTER);
}

static void test_preference_sender(void **state)
{
    tl_runtime *rt = *state;
    /* The waiting receiver is not preferred: the sender continues. */
    rendezvous(rt, 1, 0, 1);
    ASSERT_LOG(R_BEFORE, S_BEFORE, S_AFTER, X_MARK, R_AFTER);
    /* The waiting sender is preferred: it runs before the bystander. */
    rendezvous(rt, 1, 0, 0);
    ASSERT_LOG(S_BEFORE, R_BEFORE, S_AFTER, X_MARK, R_AFTER);
}

static void test_schedule_all(void **state)
{
    tl_runtime *rt = *state;
    /* Both sides go behind the bystander, the woken one first, whatever
     * the preference. */
    for (int pref = -1; pref <= 1; pref++) {
        rendezvous(rt, pref, 1, 1);
        ASSERT_LOG(R_BEFORE, S_BEFORE, X_MARK, R_AFTER, S_AFTER);
        rendezvous(rt, pref, 1, 0);
        ASSERT_LOG(S_BEFORE, R_BEFORE, X_MARK, S_AFTER, R_AFTER);
    }
}

/* ---- FIFO among waiters ---- */

static void test_fifo_receivers(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_tasklet *r[5];
    for (int i = 0; i < 5; i++)
        r[i] = spawn_recv(rt, ch, i + 1, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), -5);
    log_reset();
    spawn_seq(rt, &seq_sender_fn, ch, 6, 5, 0);
    run_idle(rt);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(tl_tasklet_state(r[i]), TL_DONE);
        assert_int_equal(g.num[i + 1], i);
    }
    /* Each woken receiver (preferred) ran before the sender went on. */
    ASSERT_LOG(11, 61, 21, 61, 31, 61, 41, 61, 51, 61);
    tl_chan_release(ch);
}

static void test_fifo_senders(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    for (int i = 0; i < 5; i++)
        spawn_send(rt, ch, i + 1, tl_i64(100 + i), 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), 5);
    log_reset();
    spawn_seq(rt, &seq_receiver_fn, ch, 6, 5, 0);
    run_idle(rt);
    assert_int_equal(g.nvals, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(g.vals[i], 100 + i);
    /* The receiver was never preempted; the senders resume in order. */
    ASSERT_LOG(61, 61, 61, 61, 61, 11, 21, 31, 41, 51);
    tl_chan_release(ch);
}

static void test_fifo_mixed_with_select(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_chan *other = chan_new(rt, 0);
    tl_chan *chs[2] = {other, ch};
    static const int ops[2] = {TL_OP_RECV, TL_OP_RECV};
    spawn_recv(rt, ch, 1, 0);
    selector_t a = select_args(2, chs, ops, 2);
    spawn(rt, &selector_fn, &a, sizeof a);
    spawn_recv(rt, ch, 3, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), -3);
    assert_int_equal(tl_chan_balance(other), -1);
    spawn_seq(rt, &seq_sender_fn, ch, 4, 3, 0);
    run_idle(rt);
    assert_int_equal(g.num[1], 0);
    assert_int_equal(g.sel_idx[2], 1);
    assert_int_equal(g.num[2], 1); /* the select waited second */
    assert_int_equal(g.num[3], 2);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_chan_balance(other), 0);
    tl_chan_release(ch);
    tl_chan_release(other);
}

/* ---- close ---- */

static void test_close_refuses_blocking_ops(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    assert_int_equal(tl_chan_closing(ch), 0);
    assert_int_equal(tl_chan_closed(ch), 0);
    assert_int_equal(tl_chan_close(ch), TL_OK);
    assert_int_equal(tl_chan_closing(ch), 1);
    assert_int_equal(tl_chan_closed(ch), 1); /* nobody waits, nothing buffered */

    tl_tasklet *r = spawn_recv(rt, ch, 1, 1);   /* catches */
    tl_tasklet *s = spawn_send(rt, ch, 2, tl_i64(5), 0); /* unwinds */
    run_idle(rt);
    ASSERT_LOG(EV(1, PH_BEFORE), EV(1, PH_ERROR), EV(2, PH_BEFORE));
    assert_int_equal(g.err[1], TL_ECLOSED);
    assert_non_null(strstr(g.msg[1], "closed"));
    assert_int_equal(tl_tasklet_state(r), TL_DONE);
    assert_int_equal(tl_tasklet_state(s), TL_FAILED);
    assert_int_equal(tl_tasklet_error(s), TL_ECLOSED);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(1)), TL_ECLOSED);
    assert_int_equal(tl_chan_try_recv(ch, &(tl_value){0}), TL_ECLOSED);

    /* open() undoes close(): a receiver blocks again. */
    assert_int_equal(tl_chan_open(ch), TL_OK);
    assert_int_equal(tl_chan_closing(ch), 0);
    assert_int_equal(tl_chan_closed(ch), 0);
    tl_tasklet *r2 = spawn_recv(rt, ch, 3, 1);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(r2), TL_BLOCKED);
    assert_int_equal(tl_chan_balance(ch), -1);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(8)), TL_OK);
    run_idle(rt);
    assert_int_equal(g.num[3], 8);
    assert_int_equal(g.err[3], TL_OK);
    tl_chan_release(ch);
}

static void test_close_completes_ops_that_can(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_tasklet *s = spawn_send(rt, ch, 1, tl_i64(5), 0);
    run_idle(rt);
    assert_int_equal(tl_chan_close(ch), TL_OK);
    assert_int_equal(tl_chan_closing(ch), 1);
    assert_int_equal(tl_chan_closed(ch), 0); /* a sender still waits */
    assert_int_equal(tl_tasklet_state(s), TL_BLOCKED);

    tl_tasklet *r = spawn_recv(rt, ch, 2, 0);
    run_idle(rt);
    assert_int_equal(g.num[2], 5);
    assert_int_equal(tl_tasklet_state(r), TL_DONE);
    assert_int_equal(tl_tasklet_state(s), TL_DONE);
    assert_int_equal(tl_chan_closed(ch), 1);

    /* A receiver blocked before close stays blocked and is still served. */
    tl_chan *ch2 = chan_new(rt, 0);
    tl_tasklet *r2 = spawn_recv(rt, ch2, 3, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_close(ch2), TL_OK);
    assert_int_equal(tl_chan_closed(ch2), 0);
    assert_int_equal(tl_tasklet_state(r2), TL_BLOCKED);
    assert_int_equal(tl_chan_try_send(ch2, tl_i64(9)), TL_OK);
    assert_int_equal(tl_chan_closed(ch2), 1);
    run_idle(rt);
    assert_int_equal(g.num[3], 9);
    assert_int_equal(tl_tasklet_state(r2), TL_DONE);
    tl_chan_release(ch);
    tl_chan_release(ch2);
}

static void test_close_buffered_drains(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 2);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(1)), TL_OK);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(2)), TL_OK);
    assert_int_equal(tl_chan_close(ch), TL_OK);
    assert_int_equal(tl_chan_closed(ch), 0);
    assert_int_equal(try_recv_i64(ch), 1);
    assert_int_equal(tl_chan_closed(ch), 0);
    tl_tasklet *r = spawn_recv(rt, ch, 1, 0);
    run_idle(rt);
    assert_int_equal(g.num[1], 2);
    assert_int_equal(tl_tasklet_state(r), TL_DONE);
    assert_int_equal(tl_chan_closed(ch), 1);
    tl_tasklet *r2 = spawn_recv(rt, ch, 2, 0);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(r2), TL_FAILED);
    assert_int_equal(tl_tasklet_error(r2), TL_ECLOSED);
    tl_chan_release(ch);
}

/* ---- kill of a waiter ---- */

static void test_kill_blocked_sender(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_value big = big_str(rt);
    tl_tasklet *s = spawn_send(rt, ch, 1, big, 0);
    tl_release(big); /* the tasklet holds the only references now */
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), 1);
    assert_int_equal(big_blocks, 1);

    assert_int_equal(tl_kill(s), TL_OK);
    assert_int_equal(tl_tasklet_state(s), TL_KILLED);
    assert_int_equal(tl_tasklet_error(s), TL_EKILLED);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_blocked_count(rt), 0);
    assert_int_equal(big_blocks, 0); /* the value in flight was released */
    assert_int_equal(tl_kill(s), TL_OK); /* Stackless: a no-op on a dead tasklet */

    /* A later receiver is not matched with the dead sender. */
    assert_int_equal(tl_chan_try_recv(ch, &(tl_value){0}), TL_EAGAIN);
    tl_tasklet *r = spawn_recv(rt, ch, 2, 0);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(r), TL_BLOCKED);
    assert_int_equal(tl_chan_balance(ch), -1);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(42)), TL_OK);
    run_idle(rt);
    assert_int_equal(g.num[2], 42);
    tl_chan_release(ch);
}

static void test_kill_blocked_receiver(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_tasklet *r[3];
    for (int i = 0; i < 3; i++)
        r[i] = spawn_recv(rt, ch, i + 1, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), -3);
    assert_int_equal(tl_kill(r[1]), TL_OK);
    assert_int_equal(tl_chan_balance(ch), -2);
    assert_int_equal(tl_tasklet_state(r[1]), TL_KILLED);

    spawn_seq(rt, &seq_sender_fn, ch, 5, 2, 10);
    run_idle(rt);
    assert_int_equal(g.num[1], 10);
    assert_int_equal(g.num[3], 11); /* the dead receiver was skipped */
    assert_int_equal(g.type[2], TL_V_NIL);
    assert_int_equal(tl_chan_balance(ch), 0);

    /* With the only receiver killed, a later sender blocks. */
    tl_tasklet *lone = spawn_recv(rt, ch, 4, 0);
    run_idle(rt);
    assert_int_equal(tl_kill(lone), TL_OK);
    assert_int_equal(tl_chan_balance(ch), 0);
    tl_tasklet *s = spawn_send(rt, ch, 6, tl_i64(1), 0);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(s), TL_BLOCKED);
    assert_int_equal(tl_tasklet_wait(s), TL_WAIT_SEND);
    assert_int_equal(tl_chan_balance(ch), 1);
    assert_int_equal(try_recv_i64(ch), 1);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(s), TL_DONE);
    tl_chan_release(ch);
}

/* ---- errors through channels ---- */

/* tl_throw takes a blocked tasklet out of the channel queue and runs it
 * next, ahead of what was already runnable. */
static void test_throw_blocked_receiver(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_tasklet *r = spawn_recv(rt, ch, 1, 1);
    tl_tasklet *s = spawn_recv(rt, ch, 2, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), -2);
    spawn_marker(rt, 3);
    log_reset();
    assert_int_equal(tl_throw(r, E_BOOM, "thrown"), TL_OK);
    assert_int_equal(tl_chan_balance(ch), -1);
    run_idle(rt);
    ASSERT_LOG(EV(1, PH_ERROR), EV(3, PH_MARK));
    assert_int_equal(g.err[1], E_BOOM);
    assert_string_equal(g.msg[1], "thrown");
    /* The next send goes to the remaining receiver. */
    assert_int_equal(tl_chan_try_send(ch, tl_i64(77)), TL_OK);
    run_idle(rt);
    assert_int_equal(g.num[2], 77);
    assert_int_equal(tl_tasklet_state(s), TL_DONE);
    tl_chan_release(ch);
}


static void test_send_error_unwinds_receiver(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_tasklet *r = spawn_recv(rt, ch, 1, 0);
    tl_tasklet *s = spawn_send_error(rt, ch, 2, E_BOOM, "boom");
    run_idle(rt);
    /* The receiver unwinds at its resume point and never logs "after". */
    ASSERT_LOG(EV(1, PH_BEFORE), EV(2, PH_BEFORE), EV(2, PH_AFTER));
    assert_int_equal(tl_tasklet_state(r), TL_FAILED);
    assert_int_equal(tl_tasklet_error(r), E_BOOM);
    assert_int_equal(tl_tasklet_state(s), TL_DONE);
    assert_int_equal(tl_chan_balance(ch), 0);
    tl_chan_release(ch);
}

static void test_send_error_caught(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    /* The error is sent first and waits; the receiver arrives and catches. */
    tl_tasklet *s = spawn_send_error(rt, ch, 2, E_BOOM, "boom: disk on fire");
    tl_tasklet *r = spawn_recv(rt, ch, 1, 1);
    run_idle(rt);
    ASSERT_LOG(EV(2, PH_BEFORE), EV(1, PH_BEFORE), EV(1, PH_ERROR), EV(2, PH_AFTER));
    assert_int_equal(g.err[1], E_BOOM);
    assert_string_equal(g.msg[1], "boom: disk on fire");
    assert_int_equal(tl_tasklet_state(r), TL_DONE);
    assert_int_equal(tl_tasklet_state(s), TL_DONE);
    tl_chan_release(ch);
}

static void test_send_error_reaches_caller_frame(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    catcher_t a = {.ch = ch, .id = 1};
    tl_tasklet *c = spawn(rt, &catcher_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(tl_tasklet_depth(c), 2); /* blocked in the callee */
    spawn_send_error(rt, ch, 5, E_BOOM, "from afar");
    run_idle(rt);
    /* The callee (id 2) unwound; the catching caller (id 1) got the code. */
    ASSERT_LOG(EV(2, PH_BEFORE), EV(5, PH_BEFORE), EV(1, PH_ERROR), EV(5, PH_AFTER));
    assert_int_equal(g.err[1], E_BOOM);
    assert_string_equal(g.msg[1], "from afar");
    assert_int_equal(tl_tasklet_state(c), TL_DONE);
    tl_chan_release(ch);
}

static void test_error_value_from_host(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 1);
    tl_value e = tl_error_value(rt, E_BOOM, "queued");
    assert_int_equal(tl_chan_try_send(ch, e), TL_OK); /* buffered */
    tl_release(e);
    tl_tasklet *r = spawn_recv(rt, ch, 1, 1);
    run_idle(rt);
    assert_int_equal(g.err[1], E_BOOM);
    assert_string_equal(g.msg[1], "queued");
    assert_int_equal(tl_tasklet_state(r), TL_DONE);

    /* The host receives an error as a value it must release. */
    tl_tasklet *s = spawn_send_error(rt, ch, 2, E_BOOM - 1, "to host");
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(s), TL_DONE); /* it went into the buffer */
    tl_value v;
    assert_int_equal(tl_chan_try_recv(ch, &v), TL_OK);
    assert_int_equal(tl_type(v), TL_V_ERROR);
    assert_int_equal(tl_error_code(v), E_BOOM - 1);
    assert_string_equal(tl_error_msg(v), "to host");
    tl_release(v);
    tl_chan_release(ch);
}

/* An error's message survives a restore, both while it is in flight (a
 * sender blocked in TL_SEND_ERROR) and once delivered (a receiver woken
 * with the error pending, not yet run). */
static void test_error_message_survives_restore(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    spawn_send_error(rt, ch, 2, E_BOOM, "boom: disk on fire");
    run_idle(rt);
    uint64_t id = tl_chan_id(ch);
    tl_chan_release(ch);
    rt = reload(state);
    ch = tl_chan_retain(tl_chan_find(rt, id));
    assert_non_null(ch);
    spawn_recv(rt, ch, 1, 1);
    run_idle(rt);
    assert_int_equal(g.err[1], E_BOOM);
    assert_string_equal(g.msg[1], "boom: disk on fire");

    spawn_recv(rt, ch, 3, 1);
    run_idle(rt);
    assert_int_equal(tl_chan_fail_waiters(ch, E_BOOM - 1, "torn down"), TL_OK);
    assert_int_equal(tl_runnable_count(rt), 1);
    tl_chan_release(ch);
    rt = reload(state);
    run_idle(rt);
    assert_int_equal(g.err[3], E_BOOM - 1);
    assert_string_equal(g.msg[3], "torn down");
}

static void test_fail_waiters(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_tasklet *r1 = spawn_recv(rt, ch, 1, 1);
    tl_tasklet *r2 = spawn_recv(rt, ch, 2, 0);
    tl_tasklet *r3 = spawn_recv(rt, ch, 3, 1);
    run_idle(rt);
    assert_int_equal(tl_chan_fail_waiters(ch, 0, NULL), TL_EINVAL);
    assert_int_equal(tl_chan_balance(ch), -3);
    spawn_marker(rt, 9); /* already runnable: the woken go behind it */
    log_reset();
    assert_int_equal(tl_chan_fail_waiters(ch, E_BOOM, "torn down"), TL_OK);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_runnable_count(rt), 4);
    run_idle(rt);
    /* In waiting order; r2 unwound without logging. */
    ASSERT_LOG(EV(9, PH_MARK), EV(1, PH_ERROR), EV(3, PH_ERROR));
    assert_int_equal(g.err[1], E_BOOM);
    assert_string_equal(g.msg[1], "torn down");
    assert_int_equal(tl_tasklet_state(r1), TL_DONE);
    assert_int_equal(tl_tasklet_state(r2), TL_FAILED);
    assert_int_equal(tl_tasklet_error(r2), E_BOOM);
    assert_int_equal(tl_tasklet_state(r3), TL_DONE);

    /* A failed sender's value is released. */
    tl_value big = big_str(rt);
    tl_tasklet *s = spawn_send(rt, ch, 3, big, 0);
    tl_release(big);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch), 1);
    assert_int_equal(tl_chan_fail_waiters(ch, E_BOOM, NULL), TL_OK);
    assert_int_equal(tl_chan_balance(ch), 0);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(s), TL_FAILED);
    assert_int_equal(tl_tasklet_error(s), E_BOOM);
    assert_int_equal(big_blocks, 0);
    tl_chan_release(ch);
}

/* ---- buffered channels ---- */

static void test_buffered_send_blocks_when_full(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 3);
    assert_int_equal(tl_chan_capacity(ch), 3);
    tl_tasklet *s = spawn_seq(rt, &seq_sender_fn, ch, 1, 4, 0);
    run_idle(rt);
    ASSERT_LOG(11, 11, 11); /* three sends completed, the fourth blocked */
    assert_int_equal(tl_chan_count(ch), 3);
    assert_int_equal(tl_chan_balance(ch), 1);
    assert_int_equal(tl_tasklet_wait(s), TL_WAIT_SEND);

    /* Taking one lets the blocked sender's value into the buffer. */
    assert_int_equal(try_recv_i64(ch), 0);
    assert_int_equal(tl_chan_count(ch), 3);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_tasklet_state(s), TL_RUNNABLE);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(s), TL_DONE);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(try_recv_i64(ch), i);
    assert_int_equal(tl_chan_count(ch), 0);
    assert_int_equal(tl_chan_try_recv(ch, &(tl_value){0}), TL_EAGAIN);
    tl_chan_release(ch);
}

static void test_buffered_fifo_and_direct_handoff(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tl_chan_try_send(ch, tl_i64(10 + i)), TL_OK);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(99)), TL_EAGAIN);
    assert_int_equal(tl_errcode(rt), TL_EAGAIN);
    spawn_seq(rt, &seq_receiver_fn, ch, 1, 4, 0);
    run_idle(rt);
    assert_int_equal(g.nvals, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(g.vals[i], 10 + i);
    /* The fourth receive waits on the empty buffer; a send goes straight
     * to the receiver. */
    assert_int_equal(tl_chan_balance(ch), -1);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(13)), TL_OK);
    assert_int_equal(tl_chan_count(ch), 0);
    run_idle(rt);
    assert_int_equal(g.nvals, 4);
    assert_int_equal(g.vals[3], 13);
    tl_chan_release(ch);
}

static void buffered_wake(tl_runtime *rt, int pref)
{
    tl_chan *ch = chan_new(rt, 1);
    assert_int_equal(tl_chan_set_preference(ch, pref), TL_OK);
    log_reset();
    spawn_seq(rt, &seq_sender_fn, ch, SID, 2, 0); /* 0 buffered, 1 blocks */
    spawn_recv(rt, ch, RID, 0);
    spawn_marker(rt, XID);
    run_idle(rt);
    assert_int_equal(g.num[RID], 0);
    assert_int_equal(try_recv_i64(ch), 1);
    tl_chan_release(ch);
}

static void test_buffered_wake_follows_preference(void **state)
{
    tl_runtime *rt = *state;
    buffered_wake(rt, -1); /* the woken sender is not preferred */
    ASSERT_LOG(S_AFTER, R_BEFORE, R_AFTER, X_MARK, S_AFTER);
    buffered_wake(rt, 1);
    ASSERT_LOG(S_AFTER, R_BEFORE, S_AFTER, X_MARK, R_AFTER);
}

/* ---- select ---- */

static void test_select_first_ready_wins(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[3] = {chan_new(rt, 0), chan_new(rt, 1), chan_new(rt, 0)};
    static const int ops[3] = {TL_OP_RECV, TL_OP_RECV, TL_OP_RECV};
    /* Only case 1 is ready (a buffered value). */
    assert_int_equal(tl_chan_try_send(ch[1], tl_i64(7)), TL_OK);
    selector_t a = select_args(1, ch, ops, 3);
    spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(g.sel_idx[1], 1);
    assert_int_equal(g.num[1], 7);

    /* Only case 2 is ready (a waiting sender, woken but not preferred). */
    log_reset();
    spawn_send(rt, ch[2], 2, tl_i64(8), 0);
    run_idle(rt);
    spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(g.sel_idx[1], 2);
    assert_int_equal(g.num[1], 8);
    ASSERT_LOG(20, 10, 11, 21);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl_chan_balance(ch[i]), 0);
        tl_chan_release(ch[i]);
    }
}

static void select_fairness(tl_runtime *rt, const int *ops)
{
    tl_chan *ch[4];
    for (int i = 0; i < 4; i++) {
        ch[i] = chan_new(rt, 1);
        if (ops[i] == TL_OP_RECV)
            assert_int_equal(tl_chan_try_send(ch[i], tl_i64(i)), TL_OK);
    }
    selector_t a = select_args(1, ch, ops, 4);
    a.rounds = 4000;
    a.refill = 1;
    tl_tasklet *t = spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    int sum = 0;
    for (int i = 0; i < 4; i++) {
        /* between 15% and 35% of the 4000 selects */
        assert_in_range(g.hits[i], 600, 1400);
        sum += g.hits[i];
        tl_chan_release(ch[i]);
    }
    assert_int_equal(sum, 4000);
}

static void test_select_fair_recv(void **state)
{
    static const int ops[4] = {TL_OP_RECV, TL_OP_RECV, TL_OP_RECV, TL_OP_RECV};
    select_fairness(*state, ops);
}

static void test_select_fair_mixed(void **state)
{
    static const int ops[4] = {TL_OP_RECV, TL_OP_SEND, TL_OP_RECV, TL_OP_SEND};
    select_fairness(*state, ops);
}

static void test_select_blocks_until_send(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[3] = {chan_new(rt, 0), chan_new(rt, 0), chan_new(rt, 0)};
    static const int ops[3] = {TL_OP_RECV, TL_OP_RECV, TL_OP_RECV};
    selector_t a = select_args(1, ch, ops, 3);
    tl_tasklet *t = spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(t), TL_BLOCKED);
    assert_int_equal(tl_tasklet_wait(t), TL_WAIT_SELECT);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tl_chan_balance(ch[i]), -1);

    spawn_send(rt, ch[1], 2, tl_i64(42), 0);
    spawn_marker(rt, 3);
    run_idle(rt);
    /* The selecting receiver was waiting and is preferred. */
    ASSERT_LOG(10, 20, 11, 33, 21);
    assert_int_equal(g.sel_idx[1], 1);
    assert_int_equal(g.num[1], 42);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tl_chan_balance(ch[i]), 0);
    /* No stale waiter is left behind on the other channels. */
    assert_int_equal(tl_chan_try_send(ch[0], tl_i64(1)), TL_EAGAIN);
    assert_int_equal(tl_chan_try_send(ch[2], tl_i64(1)), TL_EAGAIN);
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    for (int i = 0; i < 3; i++)
        tl_chan_release(ch[i]);
}

static void test_select_send_case(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[2] = {chan_new(rt, 0), chan_new(rt, 0)};
    static const int ops[2] = {TL_OP_RECV, TL_OP_SEND};
    tl_value s = str_new(rt, "offered");
    selector_t a = select_args(1, ch, ops, 2);
    a.val[1] = s;
    tl_tasklet *t = spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch[0]), -1);
    assert_int_equal(tl_chan_balance(ch[1]), 1);

    /* The host takes the offered value: the select fires case 1. */
    tl_value v;
    assert_int_equal(tl_chan_try_recv(ch[1], &v), TL_OK);
    assert_string_equal(tl_str_data(v, NULL), "offered");
    tl_release(v);
    assert_int_equal(tl_chan_balance(ch[0]), 0);
    assert_int_equal(tl_chan_balance(ch[1]), 0);
    assert_int_equal(tl_tasklet_state(t), TL_RUNNABLE);
    run_idle(rt);
    assert_int_equal(g.sel_idx[1], 1);
    assert_int_equal(g.type[1], TL_V_NIL);

    /* A send case that is ready at once: the waiting receiver is preferred. */
    log_reset();
    spawn_recv(rt, ch[1], 2, 0);
    spawn(rt, &selector_fn, &a, sizeof a);
    spawn_marker(rt, 3);
    run_idle(rt);
    ASSERT_LOG(20, 10, 21, 33, 11);
    assert_string_equal(g.str[2], "offered");
    assert_int_equal(g.sel_idx[1], 1);
    tl_release(s);
    tl_chan_release(ch[0]);
    tl_chan_release(ch[1]);
}

static void test_select_kill_cleans_every_channel(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[3] = {chan_new(rt, 0), chan_new(rt, 0), chan_new(rt, 0)};
    static const int ops[3] = {TL_OP_RECV, TL_OP_RECV, TL_OP_SEND};
    selector_t a = select_args(1, ch, ops, 3);
    a.val[2] = tl_i64(5);
    tl_tasklet *t = spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(tl_chan_balance(ch[0]), -1);
    assert_int_equal(tl_chan_balance(ch[1]), -1);
    assert_int_equal(tl_chan_balance(ch[2]), 1);

    assert_int_equal(tl_kill(t), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_KILLED);
    assert_int_equal(tl_blocked_count(rt), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tl_chan_balance(ch[i]), 0);
    assert_int_equal(tl_chan_try_send(ch[0], tl_i64(1)), TL_EAGAIN);
    assert_int_equal(tl_chan_try_send(ch[1], tl_i64(1)), TL_EAGAIN);
    assert_int_equal(tl_chan_try_recv(ch[2], &(tl_value){0}), TL_EAGAIN);

    /* The channels still work: a new receiver is not confused. */
    spawn_recv(rt, ch[1], 2, 0);
    run_idle(rt);
    assert_int_equal(tl_chan_try_send(ch[1], tl_i64(3)), TL_OK);
    run_idle(rt);
    assert_int_equal(g.num[2], 3);
    for (int i = 0; i < 3; i++)
        tl_chan_release(ch[i]);
}

static void test_select_on_closing_channel(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[2] = {chan_new(rt, 0), chan_new(rt, 0)};
    static const int ops[2] = {TL_OP_RECV, TL_OP_RECV};
    assert_int_equal(tl_chan_close(ch[1]), TL_OK);
    selector_t a = select_args(1, ch, ops, 2);
    a.catch_err = 1;
    tl_tasklet *t = spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    /* Nothing is ready and a case would block on a closing channel. */
    assert_int_equal(g.err[1], TL_ECLOSED);
    assert_int_equal(g.sel_idx[1], -1);
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    assert_int_equal(tl_chan_balance(ch[0]), 0);
    tl_chan_release(ch[0]);
    tl_chan_release(ch[1]);
}

static void test_select_fail_waiters(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[2] = {chan_new(rt, 0), chan_new(rt, 0)};
    static const int ops[2] = {TL_OP_RECV, TL_OP_SEND};
    selector_t a = select_args(1, ch, ops, 2);
    a.catch_err = 1;
    a.val[1] = tl_i64(4);
    tl_tasklet *t = spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(tl_chan_fail_waiters(ch[0], E_BOOM, "select torn down"), TL_OK);
    assert_int_equal(tl_chan_balance(ch[0]), 0);
    assert_int_equal(tl_chan_balance(ch[1]), 0); /* its other case left too */
    run_idle(rt);
    assert_int_equal(g.err[1], E_BOOM);
    assert_string_equal(g.msg[1], "select torn down");
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    assert_int_equal(tl_chan_try_recv(ch[1], &(tl_value){0}), TL_EAGAIN);
    tl_chan_release(ch[0]);
    tl_chan_release(ch[1]);
}

static void test_select_receives_error(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[2] = {chan_new(rt, 0), chan_new(rt, 1)};
    static const int ops[2] = {TL_OP_RECV, TL_OP_RECV};
    selector_t a = select_args(1, ch, ops, 2);
    a.catch_err = 1;
    spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    /* Blocked select woken by an error sent on case 0. */
    spawn_send_error(rt, ch[0], 2, E_BOOM, "to select");
    run_idle(rt);
    assert_int_equal(g.err[1], E_BOOM);
    assert_string_equal(g.msg[1], "to select");
    assert_int_equal(tl_chan_balance(ch[1]), 0);

    /* Ready select taking an error value from a buffer. */
    tl_value e = tl_error_value(rt, E_BOOM - 1, "buffered");
    assert_int_equal(tl_chan_try_send(ch[1], e), TL_OK);
    tl_release(e);
    spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(g.err[1], E_BOOM - 1);
    assert_string_equal(g.msg[1], "buffered");
    assert_int_equal(tl_chan_count(ch[1]), 0);
    tl_chan_release(ch[0]);
    tl_chan_release(ch[1]);
}

static void test_select_rejects_bad_cases(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[1] = {chan_new(rt, 0)};
    static const int ops[1] = {TL_OP_RECV};
    selector_t a = select_args(1, ch, ops, 1);
    a.catch_err = 1;
    a.n = 0;
    spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(g.err[1], TL_EINVAL);
    g.err[1] = 0;
    a.n = 1;
    a.op[0] = 7;
    spawn(rt, &selector_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(g.err[1], TL_EINVAL);
    assert_int_equal(tl_chan_balance(ch[0]), 0);
    tl_chan_release(ch[0]);
}

/* Tasklets still blocked (plain and select, one holding a big string)
 * when the runtime is freed: teardown checks every byte came back. */
static void test_free_runtime_with_blocked_waiters(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch[2] = {chan_new(rt, 0), chan_new(rt, 1)};
    static const int ops[2] = {TL_OP_RECV, TL_OP_RECV};
    tl_value big = big_str(rt);
    spawn_send(rt, ch[0], 1, big, 0);
    tl_release(big);
    selector_t a = select_args(2, ch, ops, 2);
    a.ch[0] = chan_new(rt, 0); /* a channel only the select knows */
    spawn(rt, &selector_fn, &a, sizeof a);
    spawn_recv(rt, ch[1], 3, 0);
    run_idle(rt);
    assert_int_equal(tl_blocked_count(rt), 3);
    assert_int_equal(tl_chan_balance(ch[0]), 1);
    assert_int_equal(tl_chan_balance(a.ch[0]), -1);
    assert_int_equal(tl_chan_balance(ch[1]), -2);
    assert_int_equal(big_blocks, 1);
    tl_chan_release(a.ch[0]); /* now kept alive by the waiter only */
    tl_chan_release(ch[0]);
    tl_chan_release(ch[1]);
}

/* ---- references and strings as values ---- */

static void test_channel_reference_over_channel(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *main_ch = chan_new(rt, 0);
    int64_t live = 0;
    for (int round = 0; round < 2; round++) {
        rpc_t a = {.main = main_ch, .id = 1};
        rpc_t b = {.main = main_ch, .id = 3};
        memset(g.num, 0, sizeof g.num);
        spawn(rt, &client_fn, &a, sizeof a);
        spawn(rt, &server_fn, &b, sizeof b);
        run_idle(rt);
        assert_int_equal(g.num[1], 99);          /* the client got the answer */
        assert_int_equal(g.type[3], TL_V_CHAN);  /* the server got a channel */
        assert_int_equal(g.num[3], g.num[2]);    /* ... the client's reply channel */
        assert_int_equal(tl_tasklet_count(rt), 0);
        /* The second round allocates nothing more: the reply channel of
         * the first was freed with its last reference. */
        if (round == 1)
            assert_int_equal(ca.live, live);
        live = ca.live;
    }
    tl_chan_release(main_ch);
}

static void test_tasklet_reference_over_channel(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 1);
    tl_tasklet *w = spawn(rt, &worker_fn, &(marker_t){0}, sizeof(marker_t));
    tl_value tv = tl_tasklet_value(w);
    assert_int_equal(tl_type(tv), TL_V_TASKLET);
    assert_ptr_equal(tl_as_tasklet(tv), w);
    assert_int_equal(tl_chan_try_send(ch, tv), TL_OK);
    tl_release(tv);
    joiner_t a = {.ch = ch, .id = 1};
    tl_tasklet *j = spawn(rt, &joiner_fn, &a, sizeof a);
    run_idle(rt);
    assert_int_equal(g.type[1], TL_V_TASKLET);
    assert_int_equal(g.num[1], (int64_t)tl_tasklet_id(w));
    assert_int_equal(g.nvals, 1);
    assert_int_equal(g.vals[0], 123); /* joined through the received value */
    assert_int_equal(tl_tasklet_state(j), TL_DONE);
    tl_chan_release(ch);
}

/* References still in buffers when the runtime is freed: a tasklet in
 * one channel, and that channel in another.  The handles are left to
 * tl_runtime_free, which must release them without touching freed memory
 * (checked by ASan) and give every byte back (checked by teardown). */
static void test_references_left_in_buffers(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *a = chan_new(rt, 2);
    tl_chan *b = chan_new(rt, 2);
    tl_tasklet *w = spawn(rt, &worker_fn, &(marker_t){0}, sizeof(marker_t));
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(w), TL_DONE);
    tl_value tv = tl_tasklet_value(w);
    tl_value av = tl_chan_value(a);
    tl_value s = str_new(rt, "left behind");
    assert_int_equal(tl_chan_try_send(a, tv), TL_OK);
    assert_int_equal(tl_chan_try_send(b, av), TL_OK); /* b refers to a */
    assert_int_equal(tl_chan_try_send(b, s), TL_OK);
    tl_release(tv);
    tl_release(av);
    tl_release(s);
    assert_int_equal(tl_chan_count(a), 1);
    assert_int_equal(tl_chan_count(b), 2);
    /* a and b are not released here on purpose. */
}

static void test_strings_are_shared(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *buf = chan_new(rt, 1);
    tl_chan *sync = chan_new(rt, 0);
    tl_value big = big_str(rt);
    assert_int_equal(big_blocks, 1);
    assert_int_equal(tl_chan_try_send(buf, big), TL_OK);
    assert_int_equal(big_blocks, 1); /* shared, not copied */
    tl_release(big);
    assert_int_equal(big_blocks, 1); /* the buffer keeps it alive */

    /* A tasklet takes it from the buffer; when it ends, nothing holds it. */
    tl_tasklet *r1 = spawn_recv(rt, buf, 1, 0);
    run_idle(rt);
    assert_int_equal(g.type[1], TL_V_STR);
    assert_memory_equal(g.str[1], "big:xxxx", 8);
    assert_int_equal(tl_tasklet_state(r1), TL_DONE);
    assert_int_equal(big_blocks, 0);

    /* Two senders on the full buffer: the second's value moves into the
     * buffer when the host takes the first, and is not leaked. */
    for (int i = 0; i < 2; i++) {
        big = big_str(rt);
        spawn_send(rt, buf, 4 + i, big, 0);
        tl_release(big);
    }
    run_idle(rt);
    assert_int_equal(tl_chan_balance(buf), 1);
    for (int i = 0; i < 2; i++) {
        tl_value v;
        assert_int_equal(tl_chan_try_recv(buf, &v), TL_OK);
        assert_memory_equal(tl_str_data(v, NULL), "big:", 4);
        tl_release(v);
        run_idle(rt);
    }
    assert_int_equal(tl_tasklet_count(rt), 0);
    assert_int_equal(big_blocks, 0);

    /* By rendezvous between two tasklets. */
    tl_value s = str_new(rt, "hello");
    spawn_send(rt, sync, 2, s, 0);
    spawn_recv(rt, sync, 3, 0);
    tl_release(s);
    run_idle(rt);
    assert_string_equal(g.str[3], "hello");
    tl_chan_release(buf);
    tl_chan_release(sync);
}

/* ---- the host's non-blocking operations ---- */

static void test_try_ops_from_host(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = chan_new(rt, 0);
    tl_value v = tl_i64(-1);
    assert_int_equal(tl_chan_try_recv(ch, &v), TL_EAGAIN);
    assert_int_equal(tl_errcode(rt), TL_EAGAIN);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(1)), TL_EAGAIN);
    tl_value big = big_str(rt);
    assert_int_equal(tl_chan_try_send(ch, big), TL_EAGAIN);
    assert_int_equal(big_blocks, 1); /* the refused copy was dropped */
    tl_release(big);
    assert_int_equal(big_blocks, 0);
    assert_int_equal(tl_chan_try_send(NULL, tl_i64(1)), TL_EMISUSE);
    assert_int_equal(tl_chan_try_recv(ch, NULL), TL_EMISUSE);

    /* try_send wakes a blocked receiver; it goes to the back of the queue. */
    tl_tasklet *r = spawn_recv(rt, ch, 1, 0);
    run_idle(rt);
    spawn_marker(rt, 2);
    log_reset();
    assert_int_equal(tl_chan_try_send(ch, tl_i64(5)), TL_OK);
    assert_int_equal(tl_tasklet_state(r), TL_RUNNABLE);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_runnable_count(rt), 2);
    run_idle(rt);
    ASSERT_LOG(EV(2, PH_MARK), EV(1, PH_AFTER));
    assert_int_equal(g.num[1], 5);

    /* try_recv wakes a blocked sender. */
    tl_tasklet *s = spawn_send(rt, ch, 3, tl_i64(6), 0);
    run_idle(rt);
    assert_int_equal(try_recv_i64(ch), 6);
    assert_int_equal(tl_tasklet_state(s), TL_RUNNABLE);
    assert_int_equal(tl_chan_balance(ch), 0);
    run_idle(rt);
    assert_int_equal(tl_tasklet_state(s), TL_DONE);
    tl_chan_release(ch);
}

/* ---- the channel callback ---- */

static void chan_cb(void *ud, tl_chan *ch, tl_tasklet *t, int sending, int will_block)
{
    (void)ud;
    if (g.ncbs < TL_COUNTOF(g.cbs))
        g.cbs[g.ncbs] = (cb_rec){ch, t, sending, will_block};
    g.ncbs++;
}

static void assert_cb(size_t i, tl_chan *ch, tl_tasklet *t, int sending, int will_block)
{
    assert_ptr_equal(g.cbs[i].ch, ch);
    assert_ptr_equal(g.cbs[i].t, t);
    assert_int_equal(g.cbs[i].sending, sending);
    assert_int_equal(g.cbs[i].will_block, will_block);
}

static void test_channel_callback(void **state)
{
    tl_runtime *rt = *state;
    int ud;
    tl_chan *ch = chan_new(rt, 0);
    tl_set_channel_callback(rt, chan_cb, &ud);
    tl_tasklet *r = spawn_recv(rt, ch, 1, 0);
    tl_tasklet *s1 = spawn_send(rt, ch, 2, tl_i64(5), 0);
    tl_tasklet *s2 = spawn_send(rt, ch, 3, tl_i64(6), 0);
    tl_tasklet *r2 = spawn_recv(rt, ch, 4, 0);
    run_idle(rt);
    assert_int_equal(g.ncbs, 4);
    assert_cb(0, ch, r, 0, 1);  /* nobody sending yet: blocks */
    assert_cb(1, ch, s1, 1, 0); /* a receiver waits */
    assert_cb(2, ch, s2, 1, 1); /* nobody receiving: blocks */
    assert_cb(3, ch, r2, 0, 0); /* a sender waits */
    assert_int_equal(g.num[4], 6);

    /* The host: never about to block, and no tasklet. */
    assert_int_equal(tl_chan_try_send(ch, tl_i64(1)), TL_EAGAIN);
    assert_int_equal(tl_chan_try_recv(ch, &(tl_value){0}), TL_EAGAIN);
    assert_int_equal(g.ncbs, 6);
    assert_cb(4, ch, NULL, 1, 0);
    assert_cb(5, ch, NULL, 0, 0);

    tl_set_channel_callback(rt, NULL, NULL);
    spawn_recv(rt, ch, 5, 0);
    run_idle(rt);
    assert_int_equal(g.ncbs, 6);
    tl_chan_release(ch);
}

/* ---- argument checks ---- */

static void test_chan_new_checks(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch = NULL;
    assert_int_equal(tl_chan_new(rt, 0, NULL), TL_EINVAL);
    assert_int_equal(tl_chan_new(NULL, 0, &ch), TL_EMISUSE);
    assert_int_equal(tl_chan_new(rt, SIZE_MAX, &ch), TL_ERANGE); /* any size_t */
    assert_int_equal(tl_chan_new(rt, ((size_t)1 << 24) + 1, &ch), TL_ERANGE);
    assert_null(ch);
    ch = chan_new(rt, 0);
    assert_int_equal(tl_chan_capacity(ch), 0);
    assert_int_not_equal(tl_chan_id(ch), 0);
    assert_int_equal(tl_chan_set_name(ch, "pipe"), TL_OK);
    assert_string_equal(tl_chan_name(ch), "pipe");
    tl_chan_release(ch);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_chan_new_checks),
        T(test_balance_signs),
        T(test_preference_default_is_receiver),
        T(test_preference_receiver),
        T(test_preference_neither),
        T(test_preference_sender),
        T(test_schedule_all),
        T(test_fifo_receivers),
        T(test_fifo_senders),
        T(test_fifo_mixed_with_select),
        T(test_close_refuses_blocking_ops),
        T(test_close_completes_ops_that_can),
        T(test_close_buffered_drains),
        T(test_kill_blocked_sender),
        T(test_kill_blocked_receiver),
        T(test_throw_blocked_receiver),
        T(test_send_error_unwinds_receiver),
        T(test_send_error_caught),
        T(test_send_error_reaches_caller_frame),
        T(test_error_value_from_host),
        T(test_error_message_survives_restore),
        T(test_fail_waiters),
        T(test_buffered_send_blocks_when_full),
        T(test_buffered_fifo_and_direct_handoff),
        T(test_buffered_wake_follows_preference),
        T(test_select_first_ready_wins),
        T(test_select_fair_recv),
        T(test_select_fair_mixed),
        T(test_select_blocks_until_send),
        T(test_select_send_case),
        T(test_select_kill_cleans_every_channel),
        T(test_select_on_closing_channel),
        T(test_select_fail_waiters),
        T(test_select_receives_error),
        T(test_select_rejects_bad_cases),
        T(test_free_runtime_with_blocked_waiters),
        T(test_channel_reference_over_channel),
        T(test_tasklet_reference_over_channel),
        T(test_strings_are_shared),
        T(test_try_ops_from_host),
        T(test_channel_callback),
        /* last: on failure ASan aborts the run */
        T(test_references_left_in_buffers),
    };
    return cmocka_run_group_tests_name("chan", tests, NULL, NULL);
}
