/*
 * test_handles.c -- handles that catch misuse: a tasklet or channel handle
 * kept after its object was freed is refused (TL_EMISUSE, a message naming
 * the entry point) by every public entry point, even when a newer object
 * reuses the slot; handles keep their identity (the same pointer from
 * every function that gives one, also after a snapshot load); and a
 * runtime is not freed under its store or node.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tasklet.h"
#include "tasklet_node.h"
#include "testutil.h"

static count_alloc ca;

static int setup(void **state)
{
    tl_runtime *rt;
    tl_config cfg = count_config(&ca);
    memset(&ca, 0, sizeof ca);
    ca.fail_at = -1;
    if (tl_runtime_new(&cfg, &rt) != TL_OK)
        return -1;
    *state = rt;
    return 0;
}

static int teardown(void **state)
{
    assert_int_equal(tl_runtime_free(*state), TL_OK);
    assert_int_equal(ca.live, 0); /* everything given back */
    return 0;
}

/* Test-only knowledge of the representation (src/internal.h, "handles"):
 * where handles carry a generation it sits in bits 48..63, the address
 * below; elsewhere a reused slot cannot be told from the old object and
 * the tests about reuse are skipped. */
#if UINTPTR_MAX > 0xffffffffu && (defined(__x86_64__) || defined(__aarch64__))
#define HANDLE_GEN 1
#else
#define HANDLE_GEN 0
#endif

/* Whether two handles name the same slot. */
static int same_slot(const void *a, const void *b)
{
#if HANDLE_GEN
    return (((uintptr_t)a ^ (uintptr_t)b) & (((uintptr_t)1 << 48) - 1)) == 0;
#else
    return a == b;
#endif
}

static void assert_errmsg_has(tl_runtime *rt, const char *what)
{
    if (!strstr(tl_errmsg(rt), what))
        fail_msg("errmsg \"%s\" lacks \"%s\"", tl_errmsg(rt), what);
}

/* ---- tasklet functions ---- */

static tl_status ret_step(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_RETURN(f, tl_i64(7));
    TL_END(f);
}
static const tl_func ret_fn = {"test.ret", 1, ret_step, 8, NULL, 0, NULL};

/* Blocks receiving on ch (held in its schema) until killed or sent to. */
typedef struct { tl_chan *ch; tl_value v; } block_t;
static const tl_field block_fields[] = {
    TL_FIELD(block_t, ch, TL_T_CHAN), TL_FIELD(block_t, v, TL_T_VALUE),
};
static tl_status block_step(tl_frame *f, void *locals)
{
    block_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->ch, L->v);
    TL_END(f);
}
static const tl_func block_fn = {"test.block", 1, block_step, sizeof(block_t), block_fields,
                                 TL_COUNTOF(block_fields), NULL};

/* One operation on a handle held in the schema, the error it met
 * recorded.  A stale handle there is neither retained nor released, and a
 * snapshot keeps it stale (test_stale_handles_survive_restore; check mode
 * restores every tasklet at each resumption). */
enum { OP_SEND = 1, OP_RECV, OP_SELECT, OP_JOIN, OP_KILL, OP_THROW, OP_RUN };
typedef struct {
    tl_chan *ch;
    tl_tasklet *t;
    int32_t op, idx;
    tl_value v;
    tl_case cases[1];
} op_t;
static const tl_field op_fields[] = {
    TL_FIELD(op_t, cases, TL_T_CASES),
    TL_FIELD(op_t, ch, TL_T_CHAN), TL_FIELD(op_t, t, TL_T_TASKLET),
    TL_FIELD(op_t, op, TL_T_I32), TL_FIELD(op_t, v, TL_T_VALUE),
};
static int op_err;
static char op_msg[256];

static tl_status op_step(tl_frame *f, void *locals)
{
    op_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    if (L->op == OP_SEND) {
        TL_SEND(f, L->ch, tl_i64(1));
    } else if (L->op == OP_RECV) {
        TL_RECV(f, L->ch, L->v);
    } else if (L->op == OP_SELECT) {
        L->cases[0].ch = L->ch;
        L->cases[0].op = TL_OP_RECV;
        TL_SELECT(f, L->cases, 1, L->idx, L->v);
    } else if (L->op == OP_JOIN) {
        TL_JOIN(f, L->t, L->v);
    } else if (L->op == OP_KILL) {
        TL_KILL(f, L->t);
    } else if (L->op == OP_THROW) {
        TL_THROW(f, L->t, TL_EUSER - 1, "boom");
    } else {
        TL_RUN(f, L->t);
    }
    op_err = tl_frame_error(f);
    snprintf(op_msg, sizeof op_msg, "%s", tl_frame_errmsg(f));
    TL_END(f);
}
static const tl_func op_fn = {"test.op", 1, op_step, sizeof(op_t), op_fields,
                              TL_COUNTOF(op_fields), NULL};

static void register_all(tl_runtime *rt)
{
    assert_int_equal(tl_register(rt, &ret_fn), TL_OK);
    assert_int_equal(tl_register(rt, &block_fn), TL_OK);
    assert_int_equal(tl_register(rt, &op_fn), TL_OK);
}

static void run_op(tl_runtime *rt, op_t a)
{
    op_err = 0;
    op_msg[0] = '\0';
    assert_int_equal(tl_spawn(rt, &op_fn, &a, sizeof a, NULL), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
}

/* A handle to a tasklet that has ended and been freed. */
static tl_tasklet *freed_tasklet(tl_runtime *rt)
{
    tl_tasklet *t;
    assert_int_equal(tl_spawn(rt, &ret_fn, NULL, 0, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    tl_tasklet_release(t);
    return t;
}

/* A stale handle, and (in *fresh) a newer tasklet blocked on ch that took
 * the stale handle's slot. */
static tl_tasklet *stale_tasklet(tl_runtime *rt, tl_chan *ch, tl_tasklet **fresh)
{
    if (!HANDLE_GEN) {
        tl_chan_release(ch);
        skip();
    }
    tl_tasklet *stale = freed_tasklet(rt);
    block_t b = {ch, {0}};
    assert_int_equal(tl_spawn(rt, &block_fn, &b, sizeof b, fresh), TL_OK);
    assert_true(same_slot(stale, *fresh)); /* the case this file is about */
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_tasklet_state(*fresh), TL_BLOCKED);
    return stale;
}

/* ---- tasklets ---- */

static void test_stale_tasklet_kill_and_throw(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    tl_tasklet *fresh;
    register_all(rt);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    tl_tasklet *stale = stale_tasklet(rt, ch, &fresh);
    assert_true(stale != fresh);

    assert_int_equal(tl_kill(stale), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_kill: stale tasklet handle");
    assert_int_equal(tl_errcode(rt), TL_EMISUSE);
    assert_int_equal(tl_tasklet_state(fresh), TL_BLOCKED);
    assert_int_equal(tl_throw(stale, TL_EUSER - 1, "boom"), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_throw: stale tasklet handle");
    assert_int_equal(tl_tasklet_state(fresh), TL_BLOCKED);
    assert_int_equal(tl_throw_pending(stale, TL_EUSER - 1, "boom"), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_throw_pending: stale tasklet handle");
    assert_int_equal(tl_kill_now(stale), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_kill_now: stale tasklet handle");
    assert_int_equal(tl_tasklet_run(stale), TL_EMISUSE);
    assert_int_equal(tl_tasklet_remove(stale), TL_EMISUSE);
    assert_int_equal(tl_tasklet_insert(stale), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_tasklet_insert: stale tasklet handle");
    assert_int_equal(tl_set_main(rt, stale), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_set_main: stale tasklet handle");
    assert_null(tl_main(rt));
    assert_int_equal(tl_tasklet_state(fresh), TL_BLOCKED);
    assert_int_equal(tl_runnable_count(rt), 0);

    /* the same from inside a tasklet: the error is delivered */
    static const struct { int op; const char *msg; } ops[] = {
        {OP_JOIN, "join: stale tasklet handle"},
        {OP_KILL, "TL_KILL: stale tasklet handle"},
        {OP_THROW, "TL_THROW: stale tasklet handle"},
        {OP_RUN, "TL_RUN: stale tasklet handle"},
    };
    for (size_t i = 0; i < TL_COUNTOF(ops); i++) {
        op_t a = {.op = ops[i].op, .t = stale};
        op_err = 0;
        op_msg[0] = '\0';
        assert_int_equal(tl_spawn(rt, &op_fn, &a, sizeof a, NULL), TL_OK);
        assert_int_equal(tl_run(rt), TL_EDEADLOCK); /* fresh is still blocked */
        assert_int_equal(op_err, TL_EMISUSE);
        if (!strstr(op_msg, ops[i].msg))
            fail_msg("op %d: \"%s\" lacks \"%s\"", ops[i].op, op_msg, ops[i].msg);
        assert_int_equal(tl_tasklet_state(fresh), TL_BLOCKED);
    }

    assert_int_equal(tl_kill(fresh), TL_OK);
    tl_tasklet_release(fresh);
    tl_chan_release(ch);
}

static void test_stale_tasklet_accessors(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    tl_tasklet *fresh;
    tl_value v = tl_i64(3);
    register_all(rt);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    tl_tasklet *stale = stale_tasklet(rt, ch, &fresh);
    assert_int_equal(tl_tasklet_set_name(fresh, "fresh"), TL_OK);
    assert_int_equal(tl_tasklet_set_userdata(fresh, &ca), TL_OK);

    assert_int_equal(tl_tasklet_id(stale), 0);
    assert_errmsg_has(rt, "tl_tasklet_id: stale tasklet handle");
    assert_null(tl_tasklet_runtime(stale));
    assert_int_equal(tl_tasklet_state(stale), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_tasklet_state: stale tasklet handle");
    assert_int_equal(tl_tasklet_wait(stale), TL_EMISUSE);
    assert_null(tl_tasklet_func(stale));
    assert_int_equal(tl_tasklet_depth(stale), 0);
    assert_int_equal(tl_tasklet_error(stale), TL_EMISUSE);
    assert_string_equal(tl_tasklet_errmsg(stale), "");
    assert_null(tl_tasklet_name(stale));
    assert_null(tl_tasklet_userdata(stale));
    assert_int_equal(tl_tasklet_result(stale, &v), TL_EMISUSE);
    assert_int_equal(tl_as_i64(v), 3); /* untouched */
    assert_int_equal(tl_tasklet_set_name(stale, "stale"), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_tasklet_set_name: stale tasklet handle");
    assert_int_equal(tl_tasklet_set_userdata(stale, NULL), TL_EMISUSE);
    assert_string_equal(tl_tasklet_name(fresh), "fresh");
    assert_ptr_equal(tl_tasklet_userdata(fresh), &ca);

    /* references: no count moves on the newer tasklet */
    assert_null(tl_tasklet_retain(stale));
    assert_errmsg_has(rt, "tl_tasklet_retain: stale tasklet handle");
    tl_tasklet_release(stale);
    tl_tasklet_release(stale);
    assert_errmsg_has(rt, "tl_tasklet_release: stale tasklet handle");
    assert_int_equal(tl_type(tl_tasklet_value(stale)), TL_V_NIL);
    assert_errmsg_has(rt, "tl_tasklet_value: stale tasklet handle");
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(tl_snapshot_save_tasklet(stale, &buf, &len), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_snapshot_save_tasklet: stale tasklet handle");
    assert_null(buf);

    assert_int_equal(tl_tasklet_state(fresh), TL_BLOCKED);
    assert_int_equal(tl_kill(fresh), TL_OK);
    assert_int_equal(tl_tasklet_state(fresh), TL_KILLED); /* still held by us */
    tl_tasklet_release(fresh);
    tl_chan_release(ch);
}

static void test_freed_tasklet_slot(void **state)
{
    tl_runtime *rt = *state;
    register_all(rt);
    tl_tasklet *stale = freed_tasklet(rt); /* slot free, not reused */
    assert_int_equal(tl_kill(stale), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_kill: stale tasklet handle: its tasklet was freed (");
    assert_int_equal(tl_tasklet_state(stale), TL_EMISUSE);
    assert_null(tl_tasklet_retain(stale));
}

/* ---- channels ---- */

/* A stale channel handle, and (in *fresh) a newer buffered channel holding
 * one value that took its slot. */
static tl_chan *stale_chan(tl_runtime *rt, tl_chan **fresh)
{
    tl_chan *stale;
    if (!HANDLE_GEN)
        skip();
    assert_int_equal(tl_chan_new(rt, 0, &stale), TL_OK);
    tl_chan_release(stale);
    assert_int_equal(tl_chan_new(rt, 2, fresh), TL_OK);
    assert_true(same_slot(stale, *fresh));
    assert_true(stale != *fresh);
    assert_int_equal(tl_chan_try_send(*fresh, tl_i64(5)), TL_OK);
    return stale;
}

static void test_stale_chan_from_host(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *fresh;
    tl_value v = tl_nil();
    tl_chan *stale = stale_chan(rt, &fresh);

    assert_int_equal(tl_chan_try_send(stale, tl_i64(1)), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_chan_try_send: stale channel handle");
    assert_int_equal(tl_chan_try_recv(stale, &v), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_chan_try_recv: stale channel handle");
    assert_int_equal(tl_type(v), TL_V_NIL);
    assert_int_equal(tl_chan_count(fresh), 1);

    assert_int_equal(tl_chan_close(stale), TL_EMISUSE);
    assert_errmsg_has(rt, "tl_chan_close: stale channel handle");
    assert_int_equal(tl_chan_closing(fresh), 0);
    assert_int_equal(tl_chan_open(stale), TL_EMISUSE);
    assert_int_equal(tl_chan_set_name(stale, "x"), TL_EMISUSE);
    assert_null(tl_chan_name(fresh));
    assert_int_equal(tl_chan_set_preference(stale, 1), TL_EMISUSE);
    assert_int_equal(tl_chan_preference(fresh), -1);
    assert_int_equal(tl_chan_set_schedule_all(stale, 1), TL_EMISUSE);
    assert_int_equal(tl_chan_schedule_all(fresh), 0);
    assert_int_equal(tl_chan_fail_waiters(stale, TL_EUSER, NULL), TL_EMISUSE);
    assert_int_equal(tl_chan_pin(stale, 1), TL_EMISUSE);
    assert_int_equal(tl_chan_pinned(fresh), 0);

    assert_int_equal(tl_chan_id(stale), 0);
    assert_errmsg_has(rt, "tl_chan_id: stale channel handle");
    assert_null(tl_chan_name(stale));
    assert_int_equal(tl_chan_capacity(stale), 0);
    assert_int_equal(tl_chan_count(stale), 0);
    assert_int_equal(tl_chan_balance(stale), 0);
    assert_int_equal(tl_chan_closing(stale), 0);
    assert_int_equal(tl_chan_closed(stale), 0);
    assert_int_equal(tl_chan_remote(stale, NULL, NULL), 0);

    assert_null(tl_chan_retain(stale));
    assert_errmsg_has(rt, "tl_chan_retain: stale channel handle");
    tl_chan_release(stale); /* a no-op: fresh keeps its one reference */
    assert_errmsg_has(rt, "tl_chan_release: stale channel handle");
    assert_int_equal(tl_type(tl_chan_value(stale)), TL_V_NIL);
    assert_errmsg_has(rt, "tl_chan_value: stale channel handle");

    assert_int_equal(tl_chan_try_recv(fresh, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), 5);
    tl_chan_release(fresh);
}

static void test_stale_chan_in_tasklets(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *fresh;
    register_all(rt);
    tl_chan *stale = stale_chan(rt, &fresh);
    static const struct { int op; const char *msg; } cases[] = {
        {OP_SEND, "send: stale channel handle"},
        {OP_RECV, "receive: stale channel handle"},
        {OP_SELECT, "select: case 0: stale channel handle"},
    };
    for (size_t i = 0; i < TL_COUNTOF(cases); i++) {
        run_op(rt, (op_t){.op = cases[i].op, .ch = stale});
        assert_int_equal(op_err, TL_EMISUSE);
        if (!strstr(op_msg, cases[i].msg))
            fail_msg("op %d: \"%s\" lacks \"%s\"", cases[i].op, op_msg, cases[i].msg);
        assert_int_equal(tl_chan_count(fresh), 1); /* fresh untouched */
    }
    /* a NULL case stays an invalid argument */
    run_op(rt, (op_t){.op = OP_SELECT, .ch = NULL});
    assert_int_equal(op_err, TL_EINVAL);
    /* the fresh handle works */
    run_op(rt, (op_t){.op = OP_RECV, .ch = fresh});
    assert_int_equal(op_err, TL_OK);
    assert_int_equal(tl_chan_count(fresh), 0);
    tl_chan_release(fresh);
}

/* A stale handle in a schema field is saved as stale and loads as a
 * stale handle (FORMAT.md: id 0), not as NULL and not as the newer object
 * that took its slot: the loaded program meets the same error. */
static void load_and_run_op(tl_runtime *rt, const char *want)
{
    void *buf;
    size_t len;
    tl_runtime *r2;
    tl_config cfg = count_config(&ca);
    assert_int_equal(tl_snapshot_save(rt, &buf, &len), TL_OK);
    assert_int_equal(tl_runtime_new(&cfg, &r2), TL_OK);
    register_all(r2);
    assert_int_equal(tl_snapshot_load(r2, buf, len), TL_OK);
    tl_snapshot_free(rt, buf, len);
    assert_null(tl_chan_find(r2, 2)); /* nothing refers to the newer channel */
    op_err = 0;
    op_msg[0] = '\0';
    tl_run(r2);
    assert_int_equal(op_err, TL_EMISUSE);
    if (!strstr(op_msg, want))
        fail_msg("\"%s\" lacks \"%s\"", op_msg, want);
    assert_int_equal(tl_runtime_free(r2), TL_OK);
}

static void test_stale_handles_survive_restore(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *fresh, *ch;
    tl_tasklet *t, *tfresh;
    register_all(rt);
    tl_chan *stale = stale_chan(rt, &fresh); /* fresh is channel #2, in its slot */
    assert_int_equal(tl_chan_id(fresh), 2);
    op_t a = {.op = OP_RECV, .ch = stale};
    assert_int_equal(tl_spawn(rt, &op_fn, &a, sizeof a, &t), TL_OK);
    load_and_run_op(rt, "receive: stale channel handle");
    assert_int_equal(tl_kill(t), TL_OK);
    tl_tasklet_release(t);
    tl_chan_release(fresh);

    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    tl_tasklet *tstale = stale_tasklet(rt, ch, &tfresh);
    op_t j = {.op = OP_JOIN, .t = tstale};
    assert_int_equal(tl_spawn(rt, &op_fn, &j, sizeof j, &t), TL_OK);
    load_and_run_op(rt, "join: stale tasklet handle");
    assert_int_equal(tl_kill(t), TL_OK);
    assert_int_equal(tl_kill(tfresh), TL_OK);
    tl_tasklet_release(t);
    tl_tasklet_release(tfresh);
    tl_chan_release(ch);
}

/* ---- identity: one pointer per object, from every function ---- */

static tl_tasklet *spawned;
static tl_chan *made;
static int same_current, same_frame, same_value, cb_next, cb_chan;

typedef struct { tl_chan *ch; tl_value v; } ident_t;
static const tl_field ident_fields[] = {
    TL_FIELD(ident_t, ch, TL_T_CHAN), TL_FIELD(ident_t, v, TL_T_VALUE),
};
static tl_status ident_step(tl_frame *f, void *locals)
{
    ident_t *L = locals;
    tl_runtime *rt = tl_frame_runtime(f);
    TL_BEGIN(f);
    same_current = tl_current(rt) == spawned;
    same_frame = tl_frame_tasklet(f) == spawned;
    L->v = tl_tasklet_value(tl_current(rt));
    same_value = tl_as_tasklet(L->v) == spawned;
    TL_SEND(f, L->ch, tl_i64(1));
    TL_END(f);
}
static const tl_func ident_fn = {"test.ident", 1, ident_step, sizeof(ident_t), ident_fields,
                                 TL_COUNTOF(ident_fields), NULL};

static void on_switch(void *ud, tl_tasklet *prev, tl_tasklet *next)
{
    (void)ud;
    (void)prev;
    cb_next += next == spawned;
}

static void on_chan(void *ud, tl_chan *ch, tl_tasklet *t, int sending, int will_block)
{
    (void)ud;
    (void)sending;
    (void)will_block;
    cb_chan += ch == made && t == spawned;
}

static void test_handle_identity(void **state)
{
    tl_runtime *rt = *state;
    tl_value v = tl_nil();
    assert_int_equal(tl_register(rt, &ident_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 1, &made), TL_OK);
    ident_t a = {made, {0}};
    assert_int_equal(tl_spawn(rt, &ident_fn, &a, sizeof a, &spawned), TL_OK);
    assert_ptr_equal(tl_tasklet_find(rt, tl_tasklet_id(spawned)), spawned);
    assert_ptr_equal(tl_chan_find(rt, tl_chan_id(made)), made);
    assert_int_equal(tl_chan_set_name(made, "made"), TL_OK);
    assert_ptr_equal(tl_chan_find_name(rt, "made"), made);
    assert_ptr_equal(tl_chan_retain(made), made);
    tl_chan_release(made);
    v = tl_chan_value(made);
    assert_ptr_equal(tl_as_chan(v), made);
    tl_release(v);
    tl_set_schedule_callback(rt, on_switch, NULL);
    tl_set_channel_callback(rt, on_chan, NULL);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_true(same_current && same_frame && same_value);
    assert_int_equal(cb_next, 1);
    assert_int_equal(cb_chan, 1);
    tl_tasklet_release(spawned);
    tl_chan_release(made);
}

/* After a load, the handles the loader wrote into locals (a schema field,
 * a select case) are the ones the program gets for the same channel. */
typedef struct { tl_chan *ch; tl_value v; int32_t idx, same; tl_case cases[1]; } sel_t;
static const tl_field sel_fields[] = {
    TL_FIELD(sel_t, cases, TL_T_CASES),
    TL_FIELD(sel_t, ch, TL_T_CHAN), TL_FIELD(sel_t, v, TL_T_VALUE),
    TL_FIELD(sel_t, idx, TL_T_I32), TL_FIELD(sel_t, same, TL_T_I32),
};
static int loaded_same;
static tl_status sel_step(tl_frame *f, void *locals)
{
    sel_t *L = locals;
    TL_BEGIN(f);
    L->cases[0].ch = L->ch;
    L->cases[0].op = TL_OP_RECV;
    TL_SELECT(f, L->cases, 1, L->idx, L->v);
    loaded_same = L->cases[0].ch == L->ch &&
                  L->ch == tl_chan_find_name(tl_frame_runtime(f), "in") &&
                  tl_as_i64(L->v) == 9;
    TL_END(f);
}
static const tl_func sel_fn = {"test.sel", 1, sel_step, sizeof(sel_t), sel_fields,
                               TL_COUNTOF(sel_fields), NULL};

static void test_identity_after_load(void **state)
{
    tl_runtime *rt = *state, *rt2;
    tl_chan *ch;
    void *buf;
    size_t len;
    assert_int_equal(tl_register(rt, &sel_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_set_name(ch, "in"), TL_OK);
    sel_t a = {.ch = ch};
    assert_int_equal(tl_spawn(rt, &sel_fn, &a, sizeof a, NULL), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_snapshot_save(rt, &buf, &len), TL_OK);

    assert_int_equal(tl_runtime_new(NULL, &rt2), TL_OK);
    assert_int_equal(tl_register(rt2, &sel_fn), TL_OK);
    assert_int_equal(tl_snapshot_load(rt2, buf, len), TL_OK);
    tl_snapshot_free(rt, buf, len);
    tl_chan *in = tl_chan_find_name(rt2, "in");
    assert_non_null(in);
    loaded_same = 0;
    assert_int_equal(tl_chan_try_send(in, tl_i64(9)), TL_OK);
    assert_int_equal(tl_run(rt2), TL_OK);
    assert_int_equal(loaded_same, 1);
    assert_int_equal(tl_runtime_free(rt2), TL_OK);
}

/* A failed load resets the runtime to empty, and a load reuses slots:
 * handles from before stay checkable through both. */
static void test_stale_across_loads(void **state)
{
    tl_runtime *rt = *state, *src;
    tl_chan *ch, *stale_ch;
    void *buf;
    size_t len;
    register_all(rt);
    tl_tasklet *stale = freed_tasklet(rt);
    assert_int_equal(tl_chan_new(rt, 0, &stale_ch), TL_OK);
    tl_chan_release(stale_ch);

    /* a snapshot of a tasklet blocked on a channel, from another runtime */
    assert_int_equal(tl_runtime_new(NULL, &src), TL_OK);
    register_all(src);
    assert_int_equal(tl_chan_new(src, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_set_name(ch, "in"), TL_OK);
    block_t b = {ch, {0}};
    assert_int_equal(tl_spawn(src, &block_fn, &b, sizeof b, NULL), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_run(src), TL_EDEADLOCK);
    assert_int_equal(tl_snapshot_save(src, &buf, &len), TL_OK);

    /* refused (its function is not registered there): the runtime is reset */
    tl_runtime *bare;
    assert_int_equal(tl_runtime_new(NULL, &bare), TL_OK);
    tl_tasklet *bare_stale;
    assert_int_equal(tl_register(bare, &ret_fn), TL_OK);
    bare_stale = freed_tasklet(bare);
    assert_int_equal(tl_snapshot_load(bare, buf, len), TL_ENOFUNC);
    assert_int_equal(tl_kill(bare_stale), TL_EMISUSE);
    assert_errmsg_has(bare, "tl_kill: stale tasklet handle");
    assert_int_equal(tl_runtime_free(bare), TL_OK);

    /* loaded: the loaded objects may take the stale handles' slots */
    assert_int_equal(tl_snapshot_load(rt, buf, len), TL_OK);
    tl_snapshot_free(src, buf, len);
    assert_int_equal(tl_runtime_free(src), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 1);
    if (HANDLE_GEN) { /* without a generation (32-bit), only until a slot is reused */
        assert_int_equal(tl_kill(stale), TL_EMISUSE);
        assert_int_equal(tl_chan_close(stale_ch), TL_EMISUSE);
    }
    assert_int_equal(tl_tasklet_count(rt), 1);
    tl_chan *in = tl_chan_find_name(rt, "in");
    assert_non_null(in);
    assert_int_equal(tl_chan_closing(in), 0);
    assert_int_equal(tl_chan_balance(in), -1); /* the loaded receiver waits */
}

/* ---- freeing a runtime before its store or node ---- */

static char dir[64], path[96];

static void temp_store_path(void)
{
    snprintf(dir, sizeof dir, "/tmp/tl_handles_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
}

static void remove_temp_store(void)
{
    char p[128];
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < TL_COUNTOF(suffix); i++) {
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void test_runtime_free_refused_under_store(void **state)
{
    tl_runtime *rt = *state;
    tl_store *st;
    temp_store_path();
    assert_int_equal(tl_store_open(path, TL_STORE_NOSYNC, &st), TL_OK);
    assert_int_equal(tl_store_attach(st, rt), TL_OK);
    assert_int_equal(tl_runtime_free(rt), TL_EBUSY);
    assert_errmsg_has(rt, "tl_store_close");
    /* refused means untouched: the runtime and the store still work */
    register_all(rt);
    assert_int_equal(tl_spawn(rt, &ret_fn, NULL, 0, NULL), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_close(st), TL_OK);
    remove_temp_store(); /* teardown frees rt, now allowed */
}

static void test_runtime_free_refused_under_node(void **state)
{
    tl_runtime *rt = *state;
    tl_node *n;
    tl_node_config cfg = {.node_id = "alone"};
    assert_int_equal(tl_node_new(rt, &cfg, &n), TL_OK);
    assert_int_equal(tl_runtime_free(rt), TL_EBUSY);
    assert_errmsg_has(rt, "tl_node_free");
    assert_int_equal(tl_runtime_free(NULL), TL_OK);
    tl_node_free(n); /* teardown frees rt, now allowed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stale_tasklet_kill_and_throw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_tasklet_accessors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freed_tasklet_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_chan_from_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_chan_in_tasklets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_handles_survive_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handle_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_after_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_across_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_free_refused_under_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_free_refused_under_node, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
