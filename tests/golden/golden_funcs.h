/*
 * golden_funcs.h -- the tasklet functions stored in tests/data/golden-v1.db,
 * shared by the program that made that file (make_golden.c) and the test
 * that must read it forever (tests/test_golden.c).
 *
 * FROZEN.  The file names these functions by name@version, their locals by
 * field name and type, and every suspended frame by its resume point,
 * which the TL_ macros of format 1 took from __LINE__.  So that no edit
 * elsewhere in this file could move a resume point, each suspending macro
 * is pinned by a #line directive right before it (1101, 1111, 1201, ...);
 * since format 2 numbers points in order within each function, those
 * lines are now the tables golden_register gives tl_register_v1_lines,
 * and they must not change either; the select's
 * case array sits at offset 0 of its locals because the file records that
 * offset.  Do not rename a function, field or type, do not move a pinned
 * line away from its directive, and do not reorder golden_selector_t.
 * A new behaviour gets a new function or version, never an edit here.
 * (After the first #line, compiler messages about the rest of this file
 * give the pinned numbering, not the physical lines.)
 */
#ifndef TL_GOLDEN_FUNCS_H
#define TL_GOLDEN_FUNCS_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "tasklet.h"

#define GOLDEN_SECOND 1000000000LL
/* The fake clock: 2026-01-01T00:00:00Z, and a deadline in 2100. */
#define GOLDEN_BASE (1767225600LL * GOLDEN_SECOND)
#define GOLDEN_FAR (4102444800LL * GOLDEN_SECOND)
#define GOLDEN_NODE "golden-node"
#define GOLDEN_TICKS 5

/* ---- golden.ticker: sleeps GOLDEN_TICKS times, then takes one value
 * from its mailbox; holds a field of every scalar schema type ---- */
typedef struct golden_ticker_t {
    int64_t i, n, sum, base;
    tl_chan *mailbox, *values;
    tl_value v;
    bool started;
    int32_t i32;
    uint32_t u32;
    uint64_t u64;
    double f64;
    char tag[6];
} golden_ticker_t;

static const tl_field golden_ticker_fields[] = {
    TL_FIELD(golden_ticker_t, i, TL_T_I64),
    TL_FIELD(golden_ticker_t, n, TL_T_I64),
    TL_FIELD(golden_ticker_t, sum, TL_T_I64),
    TL_FIELD(golden_ticker_t, base, TL_T_I64),
    TL_FIELD(golden_ticker_t, mailbox, TL_T_CHAN),
    TL_FIELD(golden_ticker_t, values, TL_T_CHAN),
    TL_FIELD(golden_ticker_t, v, TL_T_VALUE),
    TL_FIELD(golden_ticker_t, started, TL_T_BOOL),
    TL_FIELD(golden_ticker_t, i32, TL_T_I32),
    TL_FIELD(golden_ticker_t, u32, TL_T_U32),
    TL_FIELD(golden_ticker_t, u64, TL_T_U64),
    TL_FIELD(golden_ticker_t, f64, TL_T_F64),
    TL_FIELD(golden_ticker_t, tag, TL_T_BYTES),
};

/* Returns [sum, started, i32, u32, u64, f64, tag as binary]. */
static tl_status golden_ticker(tl_frame *f, void *locals)
{
    golden_ticker_t *L = locals;
    tl_runtime *rt = tl_frame_runtime(f);
    TL_BEGIN(f);
    L->started = true;
    L->i32 = -123456;
    L->u32 = 4000000000u;
    L->u64 = UINT64_MAX - 1;
    L->f64 = -0.375;
    memcpy(L->tag, "gold\0!", 6);
    for (L->i = 0; L->i < L->n; L->i++) {
        L->sum += L->i + 1;
#line 1101
        TL_SLEEP_UNTIL(f, L->base + (L->i + 1) * GOLDEN_SECOND);
    }
#line 1111
    TL_RECV(f, L->mailbox, L->v);
    L->sum += tl_as_i64(L->v);
    {
        tl_value items[7], out;
        items[0] = tl_i64(L->sum);
        items[1] = tl_bool(L->started);
        items[2] = tl_i64(L->i32);
        items[3] = tl_u64(L->u32);
        items[4] = tl_u64(L->u64);
        items[5] = tl_f64(L->f64);
        if (tl_bin_new(rt, L->tag, sizeof L->tag, &items[6]) != TL_OK)
            TL_FAIL(f, TL_ENOMEM, "golden.ticker: out of memory");
        int rc = tl_array_new(rt, items, 7, &out);
        tl_release(items[6]);
        if (rc != TL_OK)
            TL_FAIL(f, rc, "golden.ticker: out of memory");
        tl_value_set(&L->v, out);
    }
    TL_RETURN(f, L->v);
    TL_END(f);
}
static const tl_func golden_ticker_fn = {
    "golden.ticker", 1, golden_ticker, sizeof(golden_ticker_t), golden_ticker_fields,
    TL_COUNTOF(golden_ticker_fields), NULL,
};

/* ---- golden.receiver: receives one integer, returns twice it ---- */
typedef struct golden_receiver_t {
    tl_chan *in;
    tl_value v;
    int64_t got;
} golden_receiver_t;

static const tl_field golden_receiver_fields[] = {
    TL_FIELD(golden_receiver_t, in, TL_T_CHAN),
    TL_FIELD(golden_receiver_t, v, TL_T_VALUE),
    TL_FIELD(golden_receiver_t, got, TL_T_I64),
};

static tl_status golden_receiver(tl_frame *f, void *locals)
{
    golden_receiver_t *L = locals;
    TL_BEGIN(f);
#line 1201
    TL_RECV(f, L->in, L->v);
    L->got = tl_as_i64(L->v);
    TL_RETURN(f, tl_i64(L->got * 2));
    TL_END(f);
}
static const tl_func golden_receiver_fn = {
    "golden.receiver", 1, golden_receiver, sizeof(golden_receiver_t), golden_receiver_fields,
    TL_COUNTOF(golden_receiver_fields), NULL,
};

/* ---- golden.sleeper: sleeps until a wall-clock deadline, returns "woke" ---- */
typedef struct golden_sleeper_t {
    int64_t deadline;
    tl_value note;
} golden_sleeper_t;

static const tl_field golden_sleeper_fields[] = {
    TL_FIELD(golden_sleeper_t, deadline, TL_T_I64),
    TL_FIELD(golden_sleeper_t, note, TL_T_VALUE),
};

static tl_status golden_sleeper(tl_frame *f, void *locals)
{
    golden_sleeper_t *L = locals;
    TL_BEGIN(f);
#line 1301
    TL_SLEEP_UNTIL(f, L->deadline);
    if (tl_str_new(tl_frame_runtime(f), "woke", 4, &L->note) != TL_OK)
        TL_FAIL(f, TL_ENOMEM, "golden.sleeper: out of memory");
    TL_RETURN(f, L->note);
    TL_END(f);
}
static const tl_func golden_sleeper_fn = {
    "golden.sleeper", 1, golden_sleeper, sizeof(golden_sleeper_t), golden_sleeper_fields,
    TL_COUNTOF(golden_sleeper_fields), NULL,
};

/* ---- golden.sender: sends its string, returns its length ---- */
typedef struct golden_sender_t {
    tl_chan *out;
    tl_value msg;
    int64_t sent;
} golden_sender_t;

static const tl_field golden_sender_fields[] = {
    TL_FIELD(golden_sender_t, out, TL_T_CHAN),
    TL_FIELD(golden_sender_t, msg, TL_T_VALUE),
    TL_FIELD(golden_sender_t, sent, TL_T_I64),
};

static tl_status golden_sender(tl_frame *f, void *locals)
{
    golden_sender_t *L = locals;
    TL_BEGIN(f);
#line 1401
    TL_SEND(f, L->out, L->msg);
    L->sent = (int64_t)tl_len(L->msg);
    TL_RETURN(f, tl_i64(L->sent));
    TL_END(f);
}
static const tl_func golden_sender_fn = {
    "golden.sender", 1, golden_sender, sizeof(golden_sender_t), golden_sender_fields,
    TL_COUNTOF(golden_sender_fields), NULL,
};

/* ---- golden.outer -> golden.inner: two frames, the inner one receiving ---- */
typedef struct golden_inner_t {
    tl_chan *in;
    int64_t k;
    tl_value v;
} golden_inner_t;

static const tl_field golden_inner_fields[] = {
    TL_FIELD(golden_inner_t, in, TL_T_CHAN),
    TL_FIELD(golden_inner_t, k, TL_T_I64),
    TL_FIELD(golden_inner_t, v, TL_T_VALUE),
};

/* Returns k times the integer it receives. */
static tl_status golden_inner(tl_frame *f, void *locals)
{
    golden_inner_t *L = locals;
    TL_BEGIN(f);
#line 1601
    TL_RECV(f, L->in, L->v);
    TL_RETURN(f, tl_i64(tl_as_i64(L->v) * L->k));
    TL_END(f);
}
static const tl_func golden_inner_fn = {
    "golden.inner", 1, golden_inner, sizeof(golden_inner_t), golden_inner_fields,
    TL_COUNTOF(golden_inner_fields), NULL,
};

typedef struct golden_outer_t {
    tl_chan *deep;
    int64_t k;
    tl_value r;
} golden_outer_t;

static const tl_field golden_outer_fields[] = {
    TL_FIELD(golden_outer_t, deep, TL_T_CHAN),
    TL_FIELD(golden_outer_t, k, TL_T_I64),
    TL_FIELD(golden_outer_t, r, TL_T_VALUE),
};

/* Returns 1000 + what golden.inner returns. */
static tl_status golden_outer(tl_frame *f, void *locals)
{
    golden_outer_t *L = locals;
    TL_BEGIN(f);
#line 1501
    TL_CALL(f, &golden_inner_fn, L->r, &(golden_inner_t){ .in = L->deep, .k = L->k });
    TL_RETURN(f, tl_i64(1000 + tl_as_i64(L->r)));
    TL_END(f);
}
static const tl_func golden_outer_fn = {
    "golden.outer", 1, golden_outer, sizeof(golden_outer_t), golden_outer_fields,
    TL_COUNTOF(golden_outer_fields), NULL,
};

/* ---- golden.selector: receives from a or b, returns value * 10 + case ---- */
typedef struct golden_selector_t {
    tl_case cs[2]; /* offset 0: the file records it */
    int64_t idx;
    tl_value v;
    tl_chan *a, *b;
} golden_selector_t;

static const tl_field golden_selector_fields[] = {
    TL_FIELD(golden_selector_t, cs, TL_T_CASES),
    TL_FIELD(golden_selector_t, idx, TL_T_I64),
    TL_FIELD(golden_selector_t, v, TL_T_VALUE),
    TL_FIELD(golden_selector_t, a, TL_T_CHAN),
    TL_FIELD(golden_selector_t, b, TL_T_CHAN),
};

static tl_status golden_selector(tl_frame *f, void *locals)
{
    golden_selector_t *L = locals;
    TL_BEGIN(f);
    L->cs[0] = (tl_case){L->a, TL_OP_RECV, tl_nil()};
    L->cs[1] = (tl_case){L->b, TL_OP_RECV, tl_nil()};
#line 1701
    TL_SELECT(f, L->cs, 2, L->idx, L->v);
    TL_RETURN(f, tl_i64(tl_as_i64(L->v) * 10 + L->idx));
    TL_END(f);
}
static const tl_func golden_selector_fn = {
    "golden.selector", 1, golden_selector, sizeof(golden_selector_t), golden_selector_fields,
    TL_COUNTOF(golden_selector_fields), NULL,
};

/* ---- registration ---- */

static const tl_func *const golden_funcs[] = {
    &golden_ticker_fn, &golden_receiver_fn, &golden_sleeper_fn, &golden_sender_fn,
    &golden_inner_fn,  &golden_outer_fn,    &golden_selector_fn,
};

/* Format 1 stored each frame's resume point as the line of its macro:
 * the pinned lines above, in the order of each function's macros. */
static const uint32_t golden_ticker_lines[] = {1101, 1111};
static const uint32_t golden_receiver_lines[] = {1201};
static const uint32_t golden_sleeper_lines[] = {1301};
static const uint32_t golden_sender_lines[] = {1401};
static const uint32_t golden_inner_lines[] = {1601};
static const uint32_t golden_outer_lines[] = {1501};
static const uint32_t golden_selector_lines[] = {1701};
static const uint32_t *const golden_lines[] = {
    golden_ticker_lines, golden_receiver_lines, golden_sleeper_lines, golden_sender_lines,
    golden_inner_lines,  golden_outer_lines,    golden_selector_lines,
};
static const size_t golden_nlines[] = {2, 1, 1, 1, 1, 1, 1};

/* Registers every function the golden store needs, with the line tables
 * that map its format-1 resume points; TL_OK or the first error. */
static inline int golden_register(tl_runtime *rt)
{
    for (size_t i = 0; i < TL_COUNTOF(golden_funcs); i++) {
        int rc = tl_register(rt, golden_funcs[i]);
        if (rc == TL_OK)
            rc = tl_register_v1_lines(rt, golden_funcs[i], golden_lines[i], golden_nlines[i]);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

#endif
