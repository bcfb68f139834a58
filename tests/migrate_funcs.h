/*
 * migrate_funcs.h -- the tasklet functions of the exactly-once test,
 * shared by the node program (tests/migrate_peer.c) and the test that
 * inspects its stores afterwards (tests/test_migrate_proc.c): a store
 * restores only into a runtime that registers the same names, versions
 * and schemas.
 *
 *   mp.carrier   carries number n: sleeps until `due`, then moves to node
 *                `dest` (retrying while there is no link), and there hands n
 *                to the local channel "collector".
 *   mp.collector receives numbers on "collector" and counts each one in
 *                `seen`; the string "dump" makes it send `seen` (a binary,
 *                one count per number) on the channel "collector.dump".
 */
#ifndef MIGRATE_FUNCS_H
#define MIGRATE_FUNCS_H

#include <string.h>

#include "tasklet.h"

#define MP_MAX_CARRIERS 512

/* Where the functions report what they do, for a failing run's story:
 * the node program prints; the test that inspects stores stays quiet. */
static void (*mp_trace)(const char *what, int64_t n, uint64_t id, int64_t k);

typedef struct carrier_l {
    int64_t n, due, tries;
    char dest[16];
    tl_chan *out;
} carrier_l;

static const tl_field carrier_fields[] = {
    TL_FIELD(carrier_l, n, TL_T_I64),      TL_FIELD(carrier_l, due, TL_T_I64),
    TL_FIELD(carrier_l, tries, TL_T_I64),  TL_FIELD(carrier_l, dest, TL_T_BYTES),
    TL_FIELD(carrier_l, out, TL_T_CHAN),
};

static tl_status carrier(tl_frame *f, void *locals)
{
    carrier_l *L = locals;
    tl_runtime *rt = tl_frame_runtime(f);
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_SLEEP_UNTIL(f, L->due);
    while (strcmp(tl_node_id(rt), L->dest) != 0) {
        TL_MIGRATE(f, L->dest);
        if (tl_frame_error(f) != TL_OK) {
            L->tries++;
            TL_SLEEP(f, 20);
        }
    }
    {
        tl_chan *ch = tl_chan_find_name(rt, "collector");
        if (!ch)
            TL_FAIL(f, TL_ENOENT, "mp.carrier: no channel 'collector' at the destination");
        L->out = tl_chan_retain(ch);
    }
    if (mp_trace)
        mp_trace("arrived", L->n, tl_tasklet_id(tl_frame_tasklet(f)), L->tries);
    TL_SEND(f, L->out, tl_i64(L->n));
    TL_END(f);
}

static const tl_func carrier_fn = {"mp.carrier", 1, carrier, sizeof(carrier_l), carrier_fields,
                                   TL_COUNTOF(carrier_fields), NULL};

typedef struct collector_l {
    tl_chan *in, *dump;
    tl_value v;
    uint32_t distinct, dups, total;
    uint8_t seen[MP_MAX_CARRIERS];
} collector_l;

static const tl_field collector_fields[] = {
    TL_FIELD(collector_l, in, TL_T_CHAN),       TL_FIELD(collector_l, dump, TL_T_CHAN),
    TL_FIELD(collector_l, v, TL_T_VALUE),       TL_FIELD(collector_l, distinct, TL_T_U32),
    TL_FIELD(collector_l, dups, TL_T_U32),      TL_FIELD(collector_l, total, TL_T_U32),
    TL_FIELD(collector_l, seen, TL_T_BYTES),
};

/* What the collector counted, for the node program's status lines (not
 * persisted: the locals are). */
static uint32_t mp_collected, mp_duplicates;

static void collector_count(collector_l *L, int64_t n)
{
    L->total++;
    if (n < 0 || n >= MP_MAX_CARRIERS)
        return;
    if (L->seen[n] < 255)
        L->seen[n]++;
    if (L->seen[n] == 1)
        L->distinct++;
    else
        L->dups++;
    mp_collected = L->distinct;
    mp_duplicates = L->dups;
}

static tl_status collector(tl_frame *f, void *locals)
{
    collector_l *L = locals;
    TL_BEGIN(f);
    for (;;) {
        TL_RECV(f, L->in, L->v);
        mp_collected = L->distinct;
        mp_duplicates = L->dups;
        if (tl_type(L->v) == TL_V_INT || tl_type(L->v) == TL_V_UINT) {
            collector_count(L, tl_as_i64(L->v));
            if (mp_trace && tl_as_i64(L->v) >= 0 && tl_as_i64(L->v) < MP_MAX_CARRIERS)
                mp_trace("got", tl_as_i64(L->v), 0, L->seen[tl_as_i64(L->v)]);
        } else if (tl_type(L->v) == TL_V_STR) {
            tl_value_set(&L->v, tl_nil());
            if (tl_bin_new(tl_frame_runtime(f), L->seen, sizeof L->seen, &L->v) != TL_OK)
                TL_FAIL(f, TL_ENOMEM, "mp.collector: out of memory");
            TL_SEND(f, L->dump, L->v);
        }
    }
    TL_END(f);
}

static const tl_func collector_fn = {"mp.collector", 1, collector, sizeof(collector_l),
                                     collector_fields, TL_COUNTOF(collector_fields), NULL};

#endif
