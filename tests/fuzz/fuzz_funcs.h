/*
 * fuzz_funcs.h -- the tasklet functions of the snapshot fuzzer, shared by
 * the harness (fuzz_snapshot.c) and the seed generator (make_seeds.c).
 *
 * Invariant: every function survives any locals a snapshot can give it.
 * A loaded frame may hold NULL or foreign handles (the library delivers
 * TL_EMISUSE / TL_EINVAL at the resume point), any integer (arithmetic
 * here wraps through uint64_t, never signed overflow), any loop counter
 * (loops run while 0 <= i < FZ_MAX_LOOP, so one scheduler step always
 * ends), and any resume point (an unknown one fails with TL_EBADPC).
 *
 * The seeds in corpus/ record these functions by name@version and their
 * resume points by source line: after editing this file, regenerate them
 * (tests/fuzz/make_seeds.c) so that their frames resume where they should.
 */
#ifndef TL_FUZZ_FUNCS_H
#define TL_FUZZ_FUNCS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tasklet.h"

#define FZ_MAX_LOOP 8
#define FZ_NODE "fuzz-node"
#define FZ_EPOCH (1700000000LL * 1000000000LL) /* the fake clock's start */
/* The harness and the seed generator each use part of this file. */
#define FZ_UNUSED __attribute__((unused))

static inline int64_t fz_wrap_add(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

static inline int64_t fz_wrap_mul(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a * (uint64_t)b);
}

static inline bool fz_in_loop(int64_t i, int64_t n)
{
    return i >= 0 && i < n && i < FZ_MAX_LOOP;
}

/* One struct with a field of every schema type, so that the decoder's
 * every field branch has a seed that reaches it. */
typedef struct fz_all {
    tl_chan *in, *out;
    tl_tasklet *peer;
    tl_value v, acc;
    int64_t i, n;
    uint64_t u64;
    int32_t i32;
    uint32_t u32;
    double d;
    bool flag;
    char tag[8];
} fz_all;

static const tl_field fz_all_fields[] = {
    TL_FIELD(fz_all, in, TL_T_CHAN),    TL_FIELD(fz_all, out, TL_T_CHAN),
    TL_FIELD(fz_all, peer, TL_T_TASKLET), TL_FIELD(fz_all, v, TL_T_VALUE),
    TL_FIELD(fz_all, acc, TL_T_VALUE),  TL_FIELD(fz_all, i, TL_T_I64),
    TL_FIELD(fz_all, n, TL_T_I64),      TL_FIELD(fz_all, u64, TL_T_U64),
    TL_FIELD(fz_all, i32, TL_T_I32),    TL_FIELD(fz_all, u32, TL_T_U32),
    TL_FIELD(fz_all, d, TL_T_F64),      TL_FIELD(fz_all, flag, TL_T_BOOL),
    TL_FIELD(fz_all, tag, TL_T_BYTES),
};

#define FZ_FUNC(name, ver, step, T, fields, cleanup) \
    { (name), (ver), (step), sizeof(T), (fields), TL_COUNTOF(fields), (cleanup) }

/* ---- nested frames: producer -> square -> leaf ---- */

typedef struct fz_leaf {
    int64_t k;
} fz_leaf;
static const tl_field fz_leaf_fields[] = {TL_FIELD(fz_leaf, k, TL_T_I64)};

static tl_status fz_leaf_step(tl_frame *f, void *locals)
{
    fz_leaf *L = locals;
    TL_BEGIN(f);
    TL_YIELD(f);
    TL_RETURN(f, tl_i64(L->k));
    TL_END(f);
}
static const tl_func fz_leaf_fn = FZ_FUNC("fz.leaf", 1, fz_leaf_step, fz_leaf, fz_leaf_fields, NULL);

typedef struct fz_square {
    int64_t x;
    tl_value r;
} fz_square;
static const tl_field fz_square_fields[] = {
    TL_FIELD(fz_square, x, TL_T_I64), TL_FIELD(fz_square, r, TL_T_VALUE),
};

static tl_status fz_square_step(tl_frame *f, void *locals)
{
    fz_square *L = locals;
    TL_BEGIN(f);
    TL_YIELD(f);
    TL_CALL(f, &fz_leaf_fn, L->r, &(fz_leaf){ .k = L->x });
    TL_RETURN(f, tl_i64(fz_wrap_add(fz_wrap_mul(L->x, L->x), tl_as_i64(L->r) & 1)));
    TL_END(f);
}
static const tl_func fz_square_fn =
    FZ_FUNC("fz.square", 1, fz_square_step, fz_square, fz_square_fields, NULL);

/* Sends square(i) for i < n on out, then "end". */
static tl_status fz_producer_step(tl_frame *f, void *locals)
{
    fz_all *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; fz_in_loop(L->i, L->n); L->i++) {
        TL_CALL(f, &fz_square_fn, L->v, &(fz_square){ .x = L->i });
        TL_SEND(f, L->out, L->v);
    }
    {
        tl_value end;
        if (tl_str_new(tl_frame_runtime(f), "end", 3, &end) == TL_OK)
            tl_value_set(&L->acc, end);
    }
    TL_SEND(f, L->out, L->acc);
    TL_END(f);
}
static const tl_func fz_producer_fn =
    FZ_FUNC("fz.producer", 1, fz_producer_step, fz_all, fz_all_fields, NULL);

/* ---- channels ---- */

/* Receives n values on in, forwarding each on out (if any). */
static tl_status fz_pump_step(tl_frame *f, void *locals)
{
    fz_all *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; fz_in_loop(L->i, L->n); L->i++) {
        TL_RECV(f, L->in, L->v);
        tl_value_set(&L->acc, tl_retain(L->v));
        L->u64 += (uint64_t)tl_as_i64(L->v);
        L->i32 = (int32_t)(L->u64 & 0x7fff);
        L->u32 = (uint32_t)L->i;
        L->d += 0.5;
        L->flag = !L->flag;
        L->tag[(size_t)L->i % sizeof L->tag] = 'a';
        if (L->out)
            TL_SEND(f, L->out, L->v);
    }
    TL_RETURN(f, L->acc);
    TL_END(f);
}
static const tl_func fz_pump_fn = FZ_FUNC("fz.pump", 1, fz_pump_step, fz_all, fz_all_fields, NULL);

/* Sums what it receives into a string local, sleeping between values. */
static tl_status fz_consumer_step(tl_frame *f, void *locals)
{
    fz_all *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; fz_in_loop(L->i, L->n); L->i++) {
        TL_RECV(f, L->in, L->v);
        L->u64 += (uint64_t)tl_as_i64(L->v);
        {
            char buf[40];
            tl_value s;
            snprintf(buf, sizeof buf, "sum=%llu", (unsigned long long)L->u64);
            if (tl_str_new(tl_frame_runtime(f), buf, strlen(buf), &s) == TL_OK)
                tl_value_set(&L->acc, s);
        }
        TL_SLEEP(f, 5);
    }
    TL_RETURN(f, tl_u64(L->u64));
    TL_END(f);
}
static const tl_func fz_consumer_fn =
    FZ_FUNC("fz.consumer", 1, fz_consumer_step, fz_all, fz_all_fields, NULL);

/* Catches the error delivered at its receive and returns its code. */
static tl_status fz_catcher_step(tl_frame *f, void *locals)
{
    fz_all *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_RECV(f, L->in, L->v);
    L->i32 = tl_frame_error(f);
    TL_RETURN(f, tl_i64(L->i32));
    TL_END(f);
}
static const tl_func fz_catcher_fn =
    FZ_FUNC("fz.catcher", 1, fz_catcher_step, fz_all, fz_all_fields, NULL);

/* Fails with a user error once it has received a value. */
static tl_status fz_failer_step(tl_frame *f, void *locals)
{
    fz_all *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    TL_FAIL(f, TL_EUSER - 1, "fz.failer: failing on purpose");
    TL_END(f);
}
static const tl_func fz_failer_fn =
    FZ_FUNC("fz.failer", 1, fz_failer_step, fz_all, fz_all_fields, NULL);

/* ---- sleep and join ---- */

/* Sleeps until the wall-clock deadline n, then sends i on out. */
static tl_status fz_sleeper_step(tl_frame *f, void *locals)
{
    fz_all *L = locals;
    TL_BEGIN(f);
    TL_SLEEP_UNTIL(f, L->n);
    if (L->out)
        TL_SEND(f, L->out, tl_i64(L->i));
    TL_END(f);
}
static const tl_func fz_sleeper_fn =
    FZ_FUNC("fz.sleeper", 1, fz_sleeper_step, fz_all, fz_all_fields, NULL);

/* Joins peer and sends its result on out. */
static tl_status fz_joiner_step(tl_frame *f, void *locals)
{
    fz_all *L = locals;
    TL_BEGIN(f);
    TL_JOIN(f, L->peer, L->v);
    if (L->out)
        TL_SEND(f, L->out, L->v);
    TL_RETURN(f, L->v);
    TL_END(f);
}
static const tl_func fz_joiner_fn =
    FZ_FUNC("fz.joiner", 1, fz_joiner_step, fz_all, fz_all_fields, NULL);

/* ---- select ---- */

/* The cases live in the locals but outside the schema; the send case's
 * value is owned by the locals (released after the select and by the
 * cleanup, which also covers a frame killed while waiting). */
typedef struct fz_sel {
    tl_case cs[3];
    int64_t idx;
    tl_value v;
    tl_chan *a, *b, *c;
} fz_sel;
static const tl_field fz_sel_fields[] = {
    TL_FIELD(fz_sel, cs, TL_T_CASES),
    TL_FIELD(fz_sel, idx, TL_T_I64), TL_FIELD(fz_sel, v, TL_T_VALUE),
    TL_FIELD(fz_sel, a, TL_T_CHAN),  TL_FIELD(fz_sel, b, TL_T_CHAN),
    TL_FIELD(fz_sel, c, TL_T_CHAN),
};

static void fz_sel_release_cases(fz_sel *L)
{
    for (size_t i = 0; i < TL_COUNTOF(L->cs); i++)
        tl_value_set(&L->cs[i].value, tl_nil());
}

static void fz_sel_cleanup(tl_frame *f, void *locals)
{
    (void)f;
    fz_sel_release_cases(locals);
}

/* Receives from a or b, or sends "offer" on c, whichever comes first. */
static tl_status fz_selector_step(tl_frame *f, void *locals)
{
    fz_sel *L = locals;
    TL_BEGIN(f);
    fz_sel_release_cases(L);
    L->cs[0] = (tl_case){L->a, TL_OP_RECV, tl_nil()};
    L->cs[1] = (tl_case){L->b, TL_OP_RECV, tl_nil()};
    L->cs[2] = (tl_case){L->c, TL_OP_SEND, tl_nil()};
    tl_str_new(tl_frame_runtime(f), "offer", 5, &L->cs[2].value);
    TL_SELECT(f, L->cs, 3, L->idx, L->v);
    fz_sel_release_cases(L);
    TL_RETURN(f, tl_i64(fz_wrap_add(fz_wrap_mul(tl_as_i64(L->v), 10), L->idx)));
    TL_END(f);
}
static const tl_func fz_selector_fn =
    FZ_FUNC("fz.selector", 1, fz_selector_step, fz_sel, fz_sel_fields, fz_sel_cleanup);

/* The same with the cases away from offset 0 (the snapshot records
 * their offset in the locals), two of them. */
typedef struct fz_sel2 {
    int64_t idx;
    tl_value v;
    tl_case cs[2];
    tl_chan *a, *b;
} fz_sel2;
static const tl_field fz_sel2_fields[] = {
    TL_FIELD(fz_sel2, cs, TL_T_CASES),
    TL_FIELD(fz_sel2, idx, TL_T_I64), TL_FIELD(fz_sel2, v, TL_T_VALUE),
    TL_FIELD(fz_sel2, a, TL_T_CHAN),  TL_FIELD(fz_sel2, b, TL_T_CHAN),
};

static void fz_sel2_cleanup(tl_frame *f, void *locals)
{
    fz_sel2 *L = locals;
    (void)f;
    for (size_t i = 0; i < TL_COUNTOF(L->cs); i++)
        tl_value_set(&L->cs[i].value, tl_nil());
}

/* Sends its v on a, or receives from b. */
static tl_status fz_selector2_step(tl_frame *f, void *locals)
{
    fz_sel2 *L = locals;
    TL_BEGIN(f);
    fz_sel2_cleanup(f, L);
    L->cs[0] = (tl_case){L->a, TL_OP_SEND, tl_retain(L->v)};
    L->cs[1] = (tl_case){L->b, TL_OP_RECV, tl_nil()};
    TL_SELECT(f, L->cs, 2, L->idx, L->v);
    fz_sel2_cleanup(f, L);
    TL_RETURN(f, L->v);
    TL_END(f);
}
static const tl_func fz_selector2_fn =
    FZ_FUNC("fz.selector2", 1, fz_selector2_step, fz_sel2, fz_sel2_fields, fz_sel2_cleanup);

/* ---- code evolution: counter@1 is loaded as counter@2 by an upgrade ---- */

typedef struct fz_counter1 {
    int64_t count;
    tl_chan *in;
    tl_value v;
    double ratio;
} fz_counter1;
static const tl_field fz_counter1_fields[] = {
    TL_FIELD(fz_counter1, count, TL_T_I64), TL_FIELD(fz_counter1, in, TL_T_CHAN),
    TL_FIELD(fz_counter1, v, TL_T_VALUE),   TL_FIELD(fz_counter1, ratio, TL_T_F64),
};

static tl_status fz_counter1_step(tl_frame *f, void *locals)
{
    fz_counter1 *L = locals;
    TL_BEGIN(f);
    L->count = 41;
    L->ratio = 0.5;
    TL_RECV(f, L->in, L->v);
    TL_RETURN(f, tl_i64(fz_wrap_add(L->count, tl_as_i64(L->v))));
    TL_END(f);
}
static const tl_func fz_counter1_fn FZ_UNUSED =
    FZ_FUNC("fz.counter", 1, fz_counter1_step, fz_counter1, fz_counter1_fields, NULL);

/* v2: count became a double (a changed type only an upgrade may map). */
typedef struct fz_counter2 {
    double count;
    tl_chan *in;
    tl_value v;
} fz_counter2;
static const tl_field fz_counter2_fields[] = {
    TL_FIELD(fz_counter2, count, TL_T_F64), TL_FIELD(fz_counter2, in, TL_T_CHAN),
    TL_FIELD(fz_counter2, v, TL_T_VALUE),
};

static tl_status fz_counter2_step(tl_frame *f, void *locals)
{
    fz_counter2 *L = locals;
    TL_BEGIN(f);
    if (L->count == 0)
        L->count = 41.0;
    TL_RECV(f, L->in, L->v);
    TL_RETURN(f, tl_f64(L->count + tl_as_f64(L->v)));
    TL_END(f);
}
static const tl_func fz_counter2_fn FZ_UNUSED =
    FZ_FUNC("fz.counter", 2, fz_counter2_step, fz_counter2, fz_counter2_fields, NULL);

/* Maps an old frame: count is copied as a double and the frame restarts
 * (resume point 0), which needs no knowledge of v2's line numbers. */
FZ_UNUSED static int fz_counter_upgrade(void *ud, uint32_t old_pc, tl_value old, void *new_locals,
                              uint32_t *new_pc)
{
    fz_counter2 *L = new_locals;
    (void)ud;
    (void)old_pc;
    for (size_t i = 0; i < tl_len(old); i++) {
        size_t n;
        const char *k = tl_str_data(tl_map_key(old, i), &n);
        if (k && n == 5 && memcmp(k, "count", 5) == 0)
            L->count = (double)tl_as_i64(tl_map_val(old, i));
    }
    *new_pc = 0;
    return TL_OK;
}

/* ---- registration ---- */

/* The functions every fuzz runtime registers (counter@1 is not among
 * them: the harness reaches it through the upgrade). */
static const tl_func *const fz_common_funcs[] = {
    &fz_leaf_fn,    &fz_square_fn,  &fz_producer_fn, &fz_pump_fn,     &fz_consumer_fn,
    &fz_catcher_fn, &fz_failer_fn,  &fz_sleeper_fn,  &fz_joiner_fn,   &fz_selector_fn,
    &fz_selector2_fn,
};

/* Registers the common functions; returns TL_OK or the first error. */
static inline int fz_register_common(tl_runtime *rt)
{
    for (size_t i = 0; i < TL_COUNTOF(fz_common_funcs); i++) {
        int rc = tl_register(rt, fz_common_funcs[i]);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

#endif
