/*
 * test_layers.c -- the layer interface of the core (src/internal.h,
 * tl__layer_ops): how persist/ and migrate/ plug into a runtime without
 * the runtime knowing them.  Two fake layers take the two slots and
 * record every call: a slot refuses other ops; on_free runs at
 * tl_runtime_free, the node's slot first; the policy op runs every
 * policy_every steps while busy and once when idle, and its error stops
 * tl_run; chan_gone reports freed channels only while changes are
 * tracked (tl__track), which also starts the tasklet change map;
 * a holder makes tl_runtime_free refuse (TL_EBUSY, naming it); on_reset
 * runs when the runtime is emptied.  Linked against
 * libtasklet-core alone, like test_core_only.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../src/internal.h"

typedef struct fake {
    int slot;
    int frees, resets, busy, idle, fail_with, holding;
    uint64_t gone[8];
    int ngone;
} fake;

static int free_order[4], nfree_order;

static void fake_free(tl_runtime *rt, void *state)
{
    (void)rt;
    fake *f = state;
    f->frees++;
    if (nfree_order < 4)
        free_order[nfree_order++] = f->slot;
}
static void fake_reset(tl_runtime *rt, void *state) { (void)rt; ((fake *)state)->resets++; }
static int fake_policy(tl_runtime *rt, void *state, int idle)
{
    (void)rt;
    fake *f = state;
    *(idle ? &f->idle : &f->busy) += 1;
    return f->fail_with;
}
static void fake_chan_gone(tl_runtime *rt, void *state, uint64_t id)
{
    (void)rt;
    fake *f = state;
    if (f->ngone < 8)
        f->gone[f->ngone++] = id;
}

static const char *fake_holder(const tl_runtime *rt, void *state)
{
    (void)rt;
    return ((fake *)state)->holding ? "a fake is still attached; close it (fake_close)" : NULL;
}

static const tl__layer_ops fake_ops = {
    .on_free = fake_free, .on_reset = fake_reset, .policy = fake_policy,
    .chan_gone = fake_chan_gone, .holder = fake_holder,
};
static const tl__layer_ops other_ops = {.on_free = NULL};

typedef struct { int32_t i, n; } yielder_t;
static const tl_field yielder_fields[] = {
    TL_FIELD(yielder_t, i, TL_T_I32), TL_FIELD(yielder_t, n, TL_T_I32),
};
static tl_status yielder(tl_frame *f, void *locals)
{
    yielder_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++)
        TL_YIELD(f);
    TL_END(f);
}
static const tl_func yielder_fn = {"layers.yielder", 1, yielder, sizeof(yielder_t),
                                   yielder_fields, TL_COUNTOF(yielder_fields), NULL};

static tl_runtime *new_runtime(void)
{
    tl_runtime *rt = NULL;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &yielder_fn), TL_OK);
    return rt;
}

static void slot_refuses_other_ops(void **state)
{
    (void)state;
    tl_runtime *rt = new_runtime();
    fake a = {.slot = TL__LAYER_PERSIST};
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_PERSIST, &fake_ops, &a), TL_OK);
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_PERSIST, &other_ops, NULL), TL_EBUSY);
    assert_ptr_equal(tl__layer_state(rt, TL__LAYER_PERSIST), &a);
    tl__layer_detach(rt, TL__LAYER_PERSIST);
    assert_null(tl__layer_state(rt, TL__LAYER_PERSIST));
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_PERSIST, &other_ops, NULL), TL_OK);
    assert_int_equal(tl_runtime_free(rt), TL_OK);
    assert_int_equal(a.frees, 0); /* detached before the end */
}

static void free_runs_node_then_persist(void **state)
{
    (void)state;
    tl_runtime *rt = new_runtime();
    fake p = {.slot = TL__LAYER_PERSIST}, n = {.slot = TL__LAYER_NODE};
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_PERSIST, &fake_ops, &p), TL_OK);
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_NODE, &fake_ops, &n), TL_OK);
    nfree_order = 0;
    assert_int_equal(tl_runtime_free(rt), TL_OK);
    assert_int_equal(p.frees, 1);
    assert_int_equal(n.frees, 1);
    assert_int_equal(nfree_order, 2);
    assert_int_equal(free_order[0], TL__LAYER_NODE);
    assert_int_equal(free_order[1], TL__LAYER_PERSIST);
}

static void policy_every_steps_and_idle(void **state)
{
    (void)state;
    tl_runtime *rt = new_runtime();
    fake p = {.slot = TL__LAYER_PERSIST};
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_PERSIST, &fake_ops, &p), TL_OK);
    rt->policy_every = 4;
    yielder_t y = {0, 11}; /* 12 steps: the first and one after each yield */
    assert_int_equal(tl_spawn(rt, &yielder_fn, &y, sizeof y, NULL), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(p.busy, 3);
    assert_int_equal(p.idle, 1);
    p.fail_with = TL_EIO; /* a failing policy stops the run */
    assert_int_equal(tl_spawn(rt, &yielder_fn, &y, sizeof y, NULL), TL_OK);
    assert_int_equal(tl_run(rt), TL_EIO);
    assert_int_equal(p.busy, 4);
    assert_int_equal(tl_runtime_free(rt), TL_OK);
}

static void chan_gone_while_tracked(void **state)
{
    (void)state;
    tl_runtime *rt = new_runtime();
    fake p = {.slot = TL__LAYER_PERSIST};
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_PERSIST, &fake_ops, &p), TL_OK);
    tl_chan *a = NULL, *b = NULL;
    assert_int_equal(tl_chan_new(rt, 0, &a), TL_OK);
    tl_chan_release(a); /* not tracked: not reported */
    assert_int_equal(p.ngone, 0);
    tl__track(rt, 1);
    assert_true(rt->track);
    assert_int_equal(rt->dmap_lost, 1); /* starting counts everything changed */
    assert_int_equal(tl_chan_new(rt, 0, &b), TL_OK);
    uint64_t id = tl_chan_id(b);
    tl_chan_release(b);
    assert_int_equal(p.ngone, 1);
    assert_true(p.gone[0] == id);
    tl__track(rt, 0);
    assert_int_equal(tl_chan_new(rt, 0, &a), TL_OK);
    tl_chan_release(a);
    assert_int_equal(p.ngone, 1);
    assert_int_equal(tl_runtime_free(rt), TL_OK);
}

static void tracked_tasklets_are_marked(void **state)
{
    (void)state;
    tl_runtime *rt = new_runtime();
    tl__track(rt, 1);
    tl__dirty_clear(rt);
    yielder_t y = {0, 1};
    tl_tasklet *t = NULL;
    assert_int_equal(tl_spawn(rt, &yielder_fn, &y, sizeof y, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_true(tl__dirty_has(rt, tl_tasklet_id(t) >> 8));
    assert_false(tl__dirty_has(rt, (tl_tasklet_id(t) >> 8) + 1));
    assert_int_equal(rt->dmap_lost, 0);
    tl_tasklet_release(t);
    assert_int_equal(tl_runtime_free(rt), TL_OK);
}

/* The dirty set is sized by what changed, not by the id space: marks of
 * tasklets with ids near 2^40 take a few slots, and a flood of changed
 * chunks past TL__DSET_MAX turns into "everything changed". */
static void dirty_set_is_sparse(void **state)
{
    (void)state;
    tl_runtime *rt = new_runtime();
    tl__set_next_ids(rt, (uint64_t)1 << 40, (uint64_t)1 << 40);
    tl__track(rt, 1);
    tl__dirty_clear(rt);
    yielder_t y = {0, 1};
    tl_tasklet *t = NULL;
    assert_int_equal(tl_spawn(rt, &yielder_fn, &y, sizeof y, &t), TL_OK);
    assert_true(tl_tasklet_id(t) > ((uint64_t)1 << 40));
    assert_int_equal(tl_run(rt), TL_OK);
    assert_true(tl__dirty_has(rt, tl_tasklet_id(t) >> 8));
    assert_int_equal(rt->dmap_lost, 0);
    assert_true(rt->dn == 1 && rt->dcap <= 64);
    for (uint64_t k = 0; k < TL__DSET_MAX && !rt->dmap_lost; k++)
        tl__mark_chunk(rt, k * 977);
    assert_int_equal(rt->dmap_lost, 1);
    assert_true(rt->dcap <= TL__DSET_MAX);
    tl__dirty_clear(rt);
    assert_true(rt->dn == 0 && !rt->dmap_lost && !tl__dirty_has(rt, 0));
    tl_tasklet_release(t);
    assert_int_equal(tl_runtime_free(rt), TL_OK);
}

static void free_refused_while_held(void **state)
{
    (void)state;
    tl_runtime *rt = new_runtime();
    fake p = {.slot = TL__LAYER_PERSIST, .holding = 1};
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_PERSIST, &fake_ops, &p), TL_OK);
    assert_int_equal(tl_runtime_free(rt), TL_EBUSY);
    assert_non_null(strstr(tl_errmsg(rt), "a fake is still attached"));
    assert_int_equal(p.frees, 0);
    p.holding = 0; /* closed */
    assert_int_equal(tl_runtime_free(rt), TL_OK);
    assert_int_equal(p.frees, 1);
}

static void reset_tells_the_layers(void **state)
{
    (void)state;
    tl_runtime *rt = new_runtime();
    fake p = {.slot = TL__LAYER_PERSIST};
    assert_int_equal(tl__layer_attach(rt, TL__LAYER_PERSIST, &fake_ops, &p), TL_OK);
    yielder_t y = {0, 1};
    assert_int_equal(tl_spawn(rt, &yielder_fn, &y, sizeof y, NULL), TL_OK);
    tl__runtime_reset(rt);
    assert_int_equal(p.resets, 1);
    assert_int_equal(tl_tasklet_count(rt), 0);
    assert_int_equal(tl_runtime_free(rt), TL_OK);
    assert_int_equal(p.frees, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slot_refuses_other_ops),
        cmocka_unit_test(free_runs_node_then_persist),
        cmocka_unit_test(policy_every_steps_and_idle),
        cmocka_unit_test(chan_gone_while_tracked),
        cmocka_unit_test(tracked_tasklets_are_marked),
        cmocka_unit_test(dirty_set_is_sparse),
        cmocka_unit_test(free_refused_while_held),
        cmocka_unit_test(reset_tells_the_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
