/*
 * xarch.c -- a store written mid-run by one build and finished by another
 * (.ci/run: x86-64 writes, i386 finishes, and the reverse; the meson test
 * 'xarch' does both halves in one build).
 *
 *   xarch write DB    runs a counter, a batch and a select part way on a
 *                     fake clock, checkpoints into DB (new) and exits
 *   xarch finish DB   restores DB, lets the select's send case fire, runs
 *                     everything to the end and prints one line of results
 *
 * The select's case array sits in the middle of its locals struct, where
 * its offset differs between 32- and 64-bit ABIs: format 2 names the
 * field, so the cases land in the right place either way.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasklet.h"

static int64_t fake_now = 1767225600LL * 1000000000LL;
static int64_t fake_clock(void *ud) { (void)ud; return fake_now; }

/* ---- the counter: yields n times, adding each i ---- */
typedef struct { int64_t n, i, sum; } counter_t;
static const tl_field counter_fields[] = {
    TL_FIELD(counter_t, n, TL_T_I64), TL_FIELD(counter_t, i, TL_T_I64),
    TL_FIELD(counter_t, sum, TL_T_I64),
};
static tl_status counter(tl_frame *f, void *locals)
{
    counter_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 1; L->i <= L->n; L->i++) {
        L->sum += L->i * L->i;
        TL_YIELD(f);
    }
    TL_RETURN(f, tl_i64(L->sum));
    TL_END(f);
}
static const tl_func counter_fn = {"xarch.counter", 1, counter, sizeof(counter_t),
                                   counter_fields, TL_COUNTOF(counter_fields), NULL};

/* ---- the batch: a producer of n records into a small buffer, a consumer ---- */
typedef struct { tl_chan *ch; int64_t n, i, sum; tl_value v; } batch_t;
static const tl_field batch_fields[] = {
    TL_FIELD(batch_t, ch, TL_T_CHAN), TL_FIELD(batch_t, n, TL_T_I64),
    TL_FIELD(batch_t, i, TL_T_I64), TL_FIELD(batch_t, sum, TL_T_I64),
    TL_FIELD(batch_t, v, TL_T_VALUE),
};
static tl_status producer(tl_frame *f, void *locals)
{
    batch_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        char rec[32];
        int len = snprintf(rec, sizeof rec, "record-%" PRId64, L->i);
        if (tl_str_new(tl_frame_runtime(f), rec, (size_t)len, &L->v) != TL_OK)
            TL_FAIL(f, TL_ENOMEM, "producer: out of memory");
        TL_SEND(f, L->ch, L->v);
        tl_value_set(&L->v, tl_nil());
    }
    TL_END(f);
}
static tl_status consumer(tl_frame *f, void *locals)
{
    batch_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_RECV(f, L->ch, L->v);
        L->sum = L->sum * 31 % 1000000007 + (int64_t)tl_len(L->v);
    }
    TL_RETURN(f, tl_i64(L->sum));
    TL_END(f);
}
static const tl_func producer_fn = {"xarch.producer", 1, producer, sizeof(batch_t),
                                    batch_fields, TL_COUNTOF(batch_fields), NULL};
static const tl_func consumer_fn = {"xarch.consumer", 1, consumer, sizeof(batch_t),
                                    batch_fields, TL_COUNTOF(batch_fields), NULL};

/* ---- the select: its cases in the middle of the struct ---- */
typedef struct { tl_chan *a; int32_t tag; tl_case cs[2]; tl_value v; tl_chan *b; int64_t idx; } sel_t;
static const tl_field sel_fields[] = {
    TL_FIELD(sel_t, a, TL_T_CHAN), TL_FIELD(sel_t, tag, TL_T_I32),
    TL_FIELD(sel_t, cs, TL_T_CASES), TL_FIELD(sel_t, v, TL_T_VALUE),
    TL_FIELD(sel_t, b, TL_T_CHAN), TL_FIELD(sel_t, idx, TL_T_I64),
};
static tl_status selector(tl_frame *f, void *locals)
{
    sel_t *L = locals;
    TL_BEGIN(f);
    L->cs[0] = (tl_case){L->a, TL_OP_SEND, L->v};
    L->cs[1] = (tl_case){L->b, TL_OP_RECV, tl_nil()};
    TL_SELECT(f, L->cs, 2, L->idx, L->v);
    TL_RETURN(f, tl_i64(L->idx * 1000 + L->tag));
    TL_END(f);
}
static const tl_func sel_fn = {"xarch.selector", 1, selector, sizeof(sel_t), sel_fields,
                               TL_COUNTOF(sel_fields), NULL};

static const tl_func *const funcs[] = {&counter_fn, &producer_fn, &consumer_fn, &sel_fn};

static void die(const char *what, int rc, const char *msg)
{
    fprintf(stderr, "xarch: %s: %s (%s)\n", what, tl_strerror(rc), msg ? msg : "");
    exit(1);
}
#define TRY(rt, call) do { int rc_ = (call); if (rc_ != TL_OK) die(#call, rc_, tl_errmsg(rt)); } while (0)

static tl_runtime *runtime(void)
{
    tl_runtime *rt;
    tl_config cfg = {0};
    cfg.clock = fake_clock;
    if (tl_runtime_new(&cfg, &rt) != TL_OK)
        die("tl_runtime_new", TL_ENOMEM, NULL);
    for (size_t i = 0; i < TL_COUNTOF(funcs); i++)
        TRY(rt, tl_register(rt, funcs[i]));
    return rt;
}

static tl_chan *named(tl_runtime *rt, size_t cap, const char *name)
{
    tl_chan *ch;
    TRY(rt, tl_chan_new(rt, cap, &ch));
    TRY(rt, tl_chan_set_name(ch, name));
    TRY(rt, tl_chan_pin(ch, 1));
    return ch;
}

static void spawn_all(tl_runtime *rt)
{
    tl_chan *batch = named(rt, 8, "batch"), *a = named(rt, 0, "a"), *b = named(rt, 0, "b");
    counter_t c = {.n = 500};
    batch_t p = {.ch = batch, .n = 300};
    tl_value msg;
    TRY(rt, tl_spawn(rt, &counter_fn, &c, sizeof c, NULL));
    TRY(rt, tl_spawn(rt, &producer_fn, &p, sizeof p, NULL));
    TRY(rt, tl_spawn(rt, &consumer_fn, &p, sizeof p, NULL));
    TRY(rt, tl_str_new(rt, "sent by the select", 18, &msg));
    sel_t s = {.a = a, .tag = 77, .v = msg, .b = b};
    TRY(rt, tl_spawn(rt, &sel_fn, &s, sizeof s, NULL));
    tl_release(msg);
    tl_chan_release(batch);
    tl_chan_release(a);
    tl_chan_release(b);
}

static int write_store(const char *path)
{
    tl_runtime *rt = runtime();
    tl_store *st;
    uint64_t steps;
    if (tl_store_open(path, 0, &st) != TL_OK)
        die("tl_store_open", tl_store_errcode(st), tl_store_errmsg(st));
    TRY(rt, tl_store_attach(st, rt));
    spawn_all(rt);
    TRY(rt, tl_run_steps(rt, 400, &steps)); /* part way: everyone mid-run */
    if (tl_store_checkpoint(st) != TL_OK)
        die("tl_store_checkpoint", tl_store_errcode(st), tl_store_errmsg(st));
    tl_store_close(st);
    tl_runtime_free(rt);
    return 0;
}

static int64_t result_of(tl_tasklet *t)
{
    tl_value v;
    if (tl_tasklet_result(t, &v) != TL_OK)
        return -1;
    return tl_as_i64(v);
}

static int finish_store(const char *path)
{
    tl_runtime *rt = runtime();
    tl_store *st;
    tl_tasklet *t[4];
    tl_value sent;
    if (tl_store_open(path, 0, &st) != TL_OK)
        die("tl_store_open", tl_store_errcode(st), tl_store_errmsg(st));
    TRY(rt, tl_store_attach(st, rt));
    if (tl_store_restore(st) != TL_OK)
        die("tl_store_restore", tl_store_errcode(st), tl_store_errmsg(st));
    for (uint64_t id = 1; id <= 4; id++)
        if (!(t[id - 1] = tl_tasklet_find(rt, id)) || !tl_tasklet_retain(t[id - 1]))
            die("tl_tasklet_find", TL_ENOENT, tl_errmsg(rt));
    TRY(rt, tl_chan_try_recv(tl_chan_find_name(rt, "a"), &sent)); /* fires the send case */
    TRY(rt, tl_run(rt));
    printf("counter %" PRId64 " batch %" PRId64 " select %" PRId64 " sent \"%s\"\n",
           result_of(t[0]), result_of(t[2]), result_of(t[3]), tl_str_data(sent, NULL));
    tl_release(sent);
    for (int i = 0; i < 4; i++)
        tl_tasklet_release(t[i]);
    tl_store_close(st);
    tl_runtime_free(rt);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "write") == 0)
        return write_store(argv[2]);
    if (argc == 3 && strcmp(argv[1], "finish") == 0)
        return finish_store(argv[2]);
    fprintf(stderr, "usage: xarch write|finish DB\n");
    return 2;
}
