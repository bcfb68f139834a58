/*
 * fanin.c -- several producers, each on its own channel, and one consumer
 * that takes whatever is ready first with TL_SELECT.
 *
 * Producer i sends (i + 1) * 25 numbers on its unbuffered channel, then a
 * nil value as its end-of-stream sentinel, and returns.  The consumer
 * keeps a bit per producer that has not finished; before each select it
 * builds the cases from those producers' channels, and when a sentinel
 * arrives it clears that producer's bit.  When no bit is left it prints a
 * summary and returns.  Which ready case a select takes is random, so the
 * interleaving differs from run to run, but the summary (counts and sums,
 * which do not depend on the order) is always the same.
 *
 * What it shows: TL_SELECT over a changing set of channels; why the case
 * array lives in the locals (a blocked select points into it) while the
 * state that must survive a suspension (the channels, the bitmask, the
 * counters) is in the schema; named channels (tl_chan_set_name), which
 * make deadlock and error messages readable; a clean end without closing
 * anything: every tasklet returns, so tl_run returns TL_OK.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "tasklet.h"

#define NPROD 4

/* ---- producer ---- */

typedef struct {
    tl_chan *out; /* arguments: out, base, count */
    int64_t base, count;
    int64_t i;
} producer_t;

static const tl_field producer_fields[] = {
    TL_FIELD(producer_t, out, TL_T_CHAN),
    TL_FIELD(producer_t, base, TL_T_I64),
    TL_FIELD(producer_t, count, TL_T_I64),
    TL_FIELD(producer_t, i, TL_T_I64),
};

static tl_status producer_step(tl_frame *f, void *locals)
{
    producer_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->count; L->i++)
        TL_SEND(f, L->out, tl_i64(L->base + L->i));
    TL_SEND(f, L->out, tl_nil()); /* the sentinel: no more from us */
    TL_END(f);
}

static const tl_func producer_fn = {
    "fanin.produce", 1, producer_step, sizeof(producer_t),
    producer_fields, TL_COUNTOF(producer_fields), NULL,
};

/* ---- consumer ---- */

typedef struct {
    tl_chan *in[NPROD]; /* argument */
    int64_t live;       /* bit i set: producer i has not sent its sentinel */
    int64_t got[NPROD], sum;
    tl_value v;
    /* Scratch, not in the schema: rebuilt before each select from `in`
     * and `live`.  It must still be in the locals, not on the C stack,
     * because a blocked select refers to it. */
    tl_case cases[NPROD];
    int idx;
} consumer_t;

static const tl_field consumer_fields[] = {
    TL_FIELD(consumer_t, cases, TL_T_CASES),
    TL_FIELD(consumer_t, in[0], TL_T_CHAN),
    TL_FIELD(consumer_t, in[1], TL_T_CHAN),
    TL_FIELD(consumer_t, in[2], TL_T_CHAN),
    TL_FIELD(consumer_t, in[3], TL_T_CHAN),
    TL_FIELD(consumer_t, live, TL_T_I64),
    TL_FIELD(consumer_t, got[0], TL_T_I64),
    TL_FIELD(consumer_t, got[1], TL_T_I64),
    TL_FIELD(consumer_t, got[2], TL_T_I64),
    TL_FIELD(consumer_t, got[3], TL_T_I64),
    TL_FIELD(consumer_t, sum, TL_T_I64),
    TL_FIELD(consumer_t, v, TL_T_VALUE),
};

/* Fills L->cases with a receive on each live producer's channel, in
 * producer order; returns how many. */
static int build_cases(consumer_t *L)
{
    int n = 0;
    for (int i = 0; i < NPROD; i++)
        if (L->live & ((int64_t)1 << i))
            L->cases[n++] = (tl_case){L->in[i], TL_OP_RECV, {0}};
    return n;
}

/* The producer behind case k of the cases build_cases made. */
static int producer_of(const consumer_t *L, int k)
{
    for (int i = 0; i < NPROD; i++)
        if ((L->live & ((int64_t)1 << i)) && k-- == 0)
            return i;
    return -1;
}

static void print_summary(const consumer_t *L)
{
    int64_t total = 0;
    for (int i = 0; i < NPROD; i++)
        total += L->got[i];
    printf("fanin: %d producers, %" PRId64 " values, sum %" PRId64 "; per producer:",
           NPROD, total, L->sum);
    for (int i = 0; i < NPROD; i++)
        printf(" %" PRId64, L->got[i]);
    printf("\n");
}

static tl_status consumer_step(tl_frame *f, void *locals)
{
    consumer_t *L = locals;
    int p;
    TL_BEGIN(f);
    L->live = ((int64_t)1 << NPROD) - 1;
    while (L->live) {
        TL_SELECT(f, L->cases, build_cases(L), L->idx, L->v);
        p = producer_of(L, L->idx);
        if (tl_type(L->v) == TL_V_NIL) {
            L->live &= ~((int64_t)1 << p);
            continue;
        }
        L->got[p]++;
        L->sum += tl_as_i64(L->v);
    }
    print_summary(L);
    TL_END(f);
}

static const tl_func consumer_fn = {
    "fanin.consume", 1, consumer_step, sizeof(consumer_t),
    consumer_fields, TL_COUNTOF(consumer_fields), NULL,
};

/* ---- host ---- */

/* tl_errmsg if it describes rc, else the generic message for rc. */
static const char *errtext(const tl_runtime *rt, int rc)
{
    return tl_errcode(rt) == rc ? tl_errmsg(rt) : tl_strerror(rc);
}

static int fail(tl_runtime *rt, const char *what, int rc)
{
    fprintf(stderr, "fanin: %s: %s\n", what, errtext(rt, rc));
    return rc;
}

static int spawn_producer(tl_runtime *rt, int i, tl_chan **out)
{
    char name[32];
    int rc = tl_chan_new(rt, 0, out);
    if (rc != TL_OK)
        return rc;
    snprintf(name, sizeof name, "producer-%d", i);
    producer_t args = {*out, (int64_t)(i + 1) * 1000, (int64_t)(i + 1) * 25, 0};
    rc = tl_chan_set_name(*out, name);
    if (rc == TL_OK)
        rc = tl_spawn(rt, &producer_fn, &args, sizeof args, NULL);
    return rc;
}

static int spawn_all(tl_runtime *rt)
{
    consumer_t c = {0};
    int rc = TL_OK;
    for (int i = 0; i < NPROD && rc == TL_OK; i++)
        rc = spawn_producer(rt, i, &c.in[i]);
    /* The consumer's arguments are its channels: offsetof(live) bytes. */
    if (rc == TL_OK)
        rc = tl_spawn(rt, &consumer_fn, &c, sizeof c.in, NULL);
    for (int i = 0; i < NPROD; i++)
        tl_chan_release(c.in[i]); /* NULL-safe; the tasklets hold their own */
    return rc;
}

static int run(tl_runtime *rt)
{
    int rc;
    if ((rc = tl_register(rt, &producer_fn)) != TL_OK ||
        (rc = tl_register(rt, &consumer_fn)) != TL_OK)
        return fail(rt, "tl_register", rc);
    if ((rc = spawn_all(rt)) != TL_OK)
        return fail(rt, "spawn", rc);
    if ((rc = tl_run(rt)) != TL_OK)
        return fail(rt, "tl_run", rc);
    return TL_OK;
}

int main(void)
{
    tl_runtime *rt;
    int rc = tl_runtime_new(NULL, &rt);
    if (rc != TL_OK) {
        fprintf(stderr, "fanin: tl_runtime_new: %s\n", tl_strerror(rc));
        return EXIT_FAILURE;
    }
    rc = run(rt);
    tl_runtime_free(rt);
    return rc == TL_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
