/*
 * test_tasklet.c -- tasklets and heap frames: nested calls, the flat C
 * stack, states, join, kill and throw with cleanups, ids and names,
 * argument references, a million tasklets, and no allocation on the hot
 * path.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tasklet.h"
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
    tl_runtime_free(*state);
    assert_int_equal(ca.live, 0); /* everything given back */
    return 0;
}

/* ---- deep recursion: 1,000,000 frames on a flat C stack ---- */

typedef struct { int64_t n; tl_value r; } depth_t;
static const tl_field depth_fields[] = {
    TL_FIELD(depth_t, n, TL_T_I64), TL_FIELD(depth_t, r, TL_T_VALUE),
};
static size_t deepest;
static const tl_func depth_fn;

static tl_status depth(tl_frame *f, void *locals)
{
    depth_t *L = locals;
    TL_BEGIN(f);
    if (L->n == 0) {
        deepest = tl_tasklet_depth(tl_frame_tasklet(f));
        TL_RETURN(f, tl_i64(0));
    }
    TL_CALL(f, &depth_fn, L->r, &(depth_t){ .n = L->n - 1 });
    TL_RETURN(f, tl_i64(tl_as_i64(L->r) + 1));
    TL_END(f);
}
static const tl_func depth_fn = {"test.depth", 1, depth, sizeof(depth_t),
                                 depth_fields, TL_COUNTOF(depth_fields), NULL};

static void test_deep_recursion(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    tl_value r;
    assert_int_equal(tl_register(rt, &depth_fn), TL_OK);
    depth_t a = {.n = 1000000};
    assert_int_equal(tl_spawn(rt, &depth_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    assert_int_equal(tl_tasklet_result(t, &r), TL_OK);
    assert_int_equal(tl_as_i64(r), 1000000);
    assert_int_equal(deepest, 1000001);
    assert_int_equal(tl_tasklet_depth(t), 0);
    tl_tasklet_release(t);
}

/* ---- states, join, results ---- */

typedef struct { tl_chan *ch; tl_value v; tl_tasklet *other; int64_t seen; } st_t;
static const tl_field st_fields[] = {
    TL_FIELD(st_t, ch, TL_T_CHAN), TL_FIELD(st_t, v, TL_T_VALUE),
    TL_FIELD(st_t, other, TL_T_TASKLET), TL_FIELD(st_t, seen, TL_T_I64),
};

static tl_status receiver(tl_frame *f, void *locals)
{
    st_t *L = locals;
    TL_BEGIN(f);
    L->seen = tl_tasklet_state(tl_current(tl_frame_runtime(f)));
    TL_RECV(f, L->ch, L->v);
    TL_RETURN(f, L->v);
    TL_END(f);
}
static const tl_func receiver_fn = {"test.receiver", 1, receiver, sizeof(st_t),
                                    st_fields, TL_COUNTOF(st_fields), NULL};

static tl_status joiner(tl_frame *f, void *locals)
{
    st_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_JOIN(f, L->other, L->v);
    L->seen = tl_frame_error(f);
    TL_RETURN(f, L->v);
    TL_END(f);
}
static const tl_func joiner_fn = {"test.joiner", 1, joiner, sizeof(st_t),
                                  st_fields, TL_COUNTOF(st_fields), NULL};

static void test_states_and_join(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *r, *j;
    tl_chan *ch;
    tl_value v;
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    assert_int_equal(tl_register(rt, &joiner_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    st_t a = {.ch = ch};
    assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, &r), TL_OK);
    st_t b = {.other = r};
    assert_int_equal(tl_spawn(rt, &joiner_fn, &b, sizeof b, &j), TL_OK);
    assert_int_equal(tl_tasklet_state(r), TL_RUNNABLE);
    assert_null(tl_current(rt));

    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_tasklet_state(r), TL_BLOCKED);
    assert_int_equal(tl_tasklet_wait(r), TL_WAIT_RECV);
    assert_int_equal(tl_tasklet_state(j), TL_BLOCKED);
    assert_int_equal(tl_tasklet_wait(j), TL_WAIT_JOIN);

    assert_int_equal(tl_str_new(rt, "hello", 5, &v), TL_OK);
    assert_int_equal(tl_chan_try_send(ch, v), TL_OK);
    tl_release(v);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_state(r), TL_DONE);
    assert_int_equal(tl_tasklet_state(j), TL_DONE);
    assert_int_equal(tl_tasklet_result(j, &v), TL_OK);
    assert_string_equal(tl_str_data(v, NULL), "hello");
    tl_release(v);
    assert_int_equal(tl_tasklet_count(rt), 0);
    tl_tasklet_release(r);
    tl_tasklet_release(j);
    tl_chan_release(ch);
}

static tl_status running_probe(tl_frame *f, void *locals)
{
    st_t *L = locals;
    TL_BEGIN(f);
    L->seen = tl_tasklet_state(tl_current(tl_frame_runtime(f)));
    TL_RETURN(f, tl_i64(L->seen));
    TL_END(f);
}
static const tl_func running_fn = {"test.running", 1, running_probe, sizeof(st_t),
                                   st_fields, TL_COUNTOF(st_fields), NULL};

static void test_current_is_running(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    tl_value v;
    assert_int_equal(tl_register(rt, &running_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &running_fn, NULL, 0, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), TL_RUNNING);
    tl_tasklet_release(t);
}

/* ---- kill and throw unwind frames, running each cleanup ---- */

typedef struct { tl_chan *ch; int64_t level; tl_value v; int64_t caught; } nest_t;
static const tl_field nest_fields[] = {
    TL_FIELD(nest_t, ch, TL_T_CHAN), TL_FIELD(nest_t, level, TL_T_I64),
    TL_FIELD(nest_t, v, TL_T_VALUE), TL_FIELD(nest_t, caught, TL_T_I64),
};
static int64_t cleanup_log[16];
static int ncleanups;
static int64_t catch_level = -1; /* the level that catches errors */
static int64_t caught_code;
static const tl_func nest_fn;

static void nest_cleanup(tl_frame *f, void *locals)
{
    nest_t *L = locals;
    (void)f;
    if (ncleanups < 16)
        cleanup_log[ncleanups++] = L->level;
}

/* Level 0 calls 1 calls 2; level 2 receives on ch. */
static tl_status nest(tl_frame *f, void *locals)
{
    nest_t *L = locals;
    TL_BEGIN(f);
    if (L->level == catch_level)
        tl_frame_catch(f, 1);
    if (L->level < 2) {
        TL_CALL(f, &nest_fn, L->v, &(nest_t){ .ch = L->ch, .level = L->level + 1 });
        if (L->level == catch_level) {
            caught_code = tl_frame_error(f);
            TL_RETURN(f, tl_i64(100 + L->level));
        }
        TL_RETURN(f, L->v);
    }
    TL_RECV(f, L->ch, L->v);
    TL_RETURN(f, L->v);
    TL_END(f);
}
static const tl_func nest_fn = {"test.nest", 1, nest, sizeof(nest_t), nest_fields,
                                TL_COUNTOF(nest_fields), nest_cleanup};

static tl_tasklet *start_nest(tl_runtime *rt, tl_chan **ch)
{
    tl_tasklet *t;
    ncleanups = 0;
    caught_code = 0;
    assert_int_equal(tl_register(rt, &nest_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, ch), TL_OK);
    nest_t a = {.ch = *ch};
    assert_int_equal(tl_spawn(rt, &nest_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_tasklet_depth(t), 3);
    assert_int_equal(tl_chan_balance(*ch), -1);
    return t;
}

static void test_kill_unwinds_with_cleanups(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    catch_level = -1; /* no frame catches: the kill unwinds them all */
    tl_tasklet *t = start_nest(rt, &ch);
    assert_int_equal(tl_kill(t), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_KILLED);
    assert_int_equal(tl_tasklet_error(t), TL_EKILLED);
    assert_int_equal(tl_tasklet_depth(t), 0);
    assert_int_equal(ncleanups, 3);
    assert_int_equal(cleanup_log[0], 2); /* innermost first */
    assert_int_equal(cleanup_log[1], 1);
    assert_int_equal(cleanup_log[2], 0);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_blocked_count(rt), 0);
    assert_int_equal(tl_kill(t), TL_OK); /* Stackless: killing a dead tasklet is a no-op */
    assert_int_equal(tl_run(rt), TL_OK);
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

/* Kill is delivered as TL_EKILLED (Stackless's TaskletExit): a frame that
 * catches errors catches it and goes on. */
static void test_kill_caught_by_outer_frame(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    tl_value v;
    catch_level = 0;
    tl_tasklet *t = start_nest(rt, &ch);
    assert_int_equal(tl_kill(t), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_DONE); /* it ran at once and returned */
    assert_int_equal(caught_code, TL_EKILLED);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), 100);
    assert_int_equal(ncleanups, 3);
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

/* tl_kill_now keeps the immediate kill: no frame can catch it. */
static void test_kill_now_not_caught(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    catch_level = 0;
    tl_tasklet *t = start_nest(rt, &ch);
    assert_int_equal(tl_kill_now(t), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_KILLED);
    assert_int_equal(caught_code, 0);
    assert_int_equal(ncleanups, 3);
    assert_int_equal(tl_kill_now(t), TL_EDONE);
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

static void test_throw_unwinds_to_failed(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    catch_level = -1;
    tl_tasklet *t = start_nest(rt, &ch);
    assert_int_equal(tl_throw(t, TL_EUSER - 5, "boom"), TL_OK);
    /* Stackless: the thrower switches to t, which unwinds before tl_throw returns */
    assert_int_equal(tl_tasklet_state(t), TL_FAILED);
    assert_int_equal(tl_chan_balance(ch), 0);
    assert_int_equal(tl_run(rt), TL_OK); /* someone holds a handle: not reported */
    assert_int_equal(tl_tasklet_error(t), TL_EUSER - 5);
    assert_string_equal(tl_tasklet_errmsg(t), "boom");
    assert_int_equal(ncleanups, 3);
    assert_int_equal(cleanup_log[0], 2);
    assert_int_equal(cleanup_log[2], 0);
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

static void test_throw_caught_by_middle_frame(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    tl_value v;
    catch_level = 1;
    tl_tasklet *t = start_nest(rt, &ch);
    assert_int_equal(tl_throw(t, TL_EUSER - 7, "caught"), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    assert_int_equal(caught_code, TL_EUSER - 7);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), 101);
    assert_int_equal(ncleanups, 3);
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

static void test_throw_before_start(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    ncleanups = 0;
    assert_int_equal(tl_register(rt, &nest_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &nest_fn, NULL, 0, &t), TL_OK);
    assert_int_equal(tl_throw(t, TL_EUSER - 1, "early"), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_FAILED);
    assert_int_equal(ncleanups, 1);
    assert_int_equal(tl_runnable_count(rt), 0);
    assert_int_equal(tl_throw(t, TL_EUSER - 1, "again"), TL_EDONE);
    tl_tasklet_release(t);
}

static void test_join_failed_and_killed(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    tl_tasklet *j;
    catch_level = -1;
    assert_int_equal(tl_register(rt, &joiner_fn), TL_OK);
    tl_tasklet *t = start_nest(rt, &ch);
    st_t b = {.other = t};
    assert_int_equal(tl_spawn(rt, &joiner_fn, &b, sizeof b, &j), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_tasklet_wait(j), TL_WAIT_JOIN);
    assert_int_equal(tl_kill(t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    /* the joiner caught TL_EKILLED and returned nil */
    tl_value v;
    assert_int_equal(tl_tasklet_state(j), TL_DONE);
    assert_int_equal(tl_tasklet_result(j, &v), TL_OK);
    assert_int_equal(tl_type(v), TL_V_NIL);
    tl_tasklet_release(j);
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

static tl_status join_self(tl_frame *f, void *locals)
{
    st_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_JOIN(f, tl_frame_tasklet(f), L->v);
    L->seen = tl_frame_error(f);
    TL_RETURN(f, tl_i64(L->seen));
    TL_END(f);
}
static const tl_func join_self_fn = {"test.join_self", 1, join_self, sizeof(st_t),
                                     st_fields, TL_COUNTOF(st_fields), NULL};

static void test_join_self_is_an_error(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    tl_value v;
    assert_int_equal(tl_register(rt, &join_self_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &join_self_fn, NULL, 0, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), TL_ESELF);
    tl_tasklet_release(t);
}

/* tl_kill, a function, cannot suspend its caller: inside a tasklet it
 * refuses (TL_EBUSY) and TL_KILL is the way (tests/test_stackless.c). */
static tl_status kill_self(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_RETURN(f, tl_i64(tl_kill(tl_frame_tasklet(f))));
    TL_END(f);
}
static const tl_func kill_self_fn = {"test.kill_self", 1, kill_self, 8, NULL, 0, NULL};

static void test_kill_self_refused(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    tl_value v;
    assert_int_equal(tl_register(rt, &kill_self_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &kill_self_fn, NULL, 0, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), TL_EBUSY);
    tl_tasklet_release(t);
}

/* ---- ids, names, user data, argument references ---- */

static void test_ids_names_userdata(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *a, *b;
    int x;
    assert_int_equal(tl_register(rt, &running_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &running_fn, NULL, 0, &a), TL_OK);
    assert_int_equal(tl_spawn(rt, &running_fn, NULL, 0, &b), TL_OK);
    assert_true(tl_tasklet_id(a) > 0);
    assert_true(tl_tasklet_id(b) > tl_tasklet_id(a));
    assert_ptr_equal(tl_tasklet_runtime(a), rt);
    assert_ptr_equal(tl_tasklet_func(a), &running_fn);
    assert_null(tl_tasklet_name(a));
    assert_int_equal(tl_tasklet_set_name(a, "alpha"), TL_OK);
    assert_string_equal(tl_tasklet_name(a), "alpha");
    assert_int_equal(tl_tasklet_set_name(a, "beta"), TL_OK);
    assert_string_equal(tl_tasklet_name(a), "beta");
    assert_int_equal(tl_tasklet_set_userdata(b, &x), TL_OK);
    assert_ptr_equal(tl_tasklet_userdata(b), &x);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_null(tl_tasklet_func(a)); /* ended: no frame */
    assert_string_equal(tl_tasklet_name(a), "beta");
    tl_tasklet_release(a);
    tl_tasklet_release(b);
}

static void test_args_are_retained(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    tl_value v;
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 4, &ch), TL_OK);
    assert_int_equal(tl_str_new(rt, "arg", 3, &v), TL_OK);
    st_t a = {.ch = ch, .v = v};
    assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL), TL_OK);
    tl_release(v);                             /* the frame keeps its own */
    assert_int_equal(tl_chan_try_send(ch, tl_i64(9)), TL_OK);
    tl_chan_release(ch);                       /* likewise */
    assert_int_equal(tl_run(rt), TL_OK);       /* detached: reclaimed */
    assert_int_equal(tl_tasklet_count(rt), 0);
}

/* ---- one million tasklets ---- */

/* ---- calls of plain functions (no reference fields): tl__call's short way ---- */

/* Arguments are a prefix of these locals; the rest must arrive zeroed,
 * even in a frame reused from the slab. */
typedef struct { int32_t a, b, c, d; int64_t e, g, h; } probe_t;
static const tl_field probe_fields[] = {
    TL_FIELD(probe_t, a, TL_T_I32), TL_FIELD(probe_t, b, TL_T_I32),
    TL_FIELD(probe_t, c, TL_T_I32), TL_FIELD(probe_t, d, TL_T_I32),
    TL_FIELD(probe_t, e, TL_T_I64), TL_FIELD(probe_t, g, TL_T_I64),
    TL_FIELD(probe_t, h, TL_T_I64),
};

static tl_status probe(tl_frame *f, void *locals)
{
    probe_t *L = locals;
    TL_BEGIN(f);
    if (L->g || L->h)
        TL_FAIL(f, TL_EUSER, "locals past the arguments were not zeroed");
    L->g = L->h = -1; /* dirties the frame for its next use */
    TL_RETURN(f, tl_i64(L->a + 10 * L->b + 100 * L->c + 1000 * L->d + 10000 * L->e));
    TL_END(f);
}
static const tl_func probe_fn = {"test.probe", 1, probe, sizeof(probe_t), probe_fields,
                                 TL_COUNTOF(probe_fields), NULL};

typedef struct { char k; } tiny_t;
typedef struct { char k[3]; } args3_t;
typedef struct { int32_t a; } args4_t;
typedef struct { int32_t a, b; } args8_t;
typedef struct { int32_t a, b, c; } args12_t;
typedef struct { int32_t a, b, c, d; } args16_t;
typedef struct { int32_t a, b, c, d; int64_t e; } args24_t;

typedef struct { tl_value r[8]; int64_t seen[8]; } probes_t;
static const tl_field probes_fields[] = {
    TL_FIELD(probes_t, r[0], TL_T_VALUE), TL_FIELD(probes_t, r[1], TL_T_VALUE),
    TL_FIELD(probes_t, r[2], TL_T_VALUE), TL_FIELD(probes_t, r[3], TL_T_VALUE),
    TL_FIELD(probes_t, r[4], TL_T_VALUE), TL_FIELD(probes_t, r[5], TL_T_VALUE),
    TL_FIELD(probes_t, r[6], TL_T_VALUE), TL_FIELD(probes_t, r[7], TL_T_VALUE),
    TL_FIELD(probes_t, seen, TL_T_BYTES),
};

static tl_status probes(tl_frame *f, void *locals)
{
    probes_t *L = locals;
    TL_BEGIN(f);
    TL_CALL0(f, &probe_fn, L->r[0]);
    TL_CALL(f, &probe_fn, L->r[1], &(args4_t){1});
    TL_CALL(f, &probe_fn, L->r[2], &(args8_t){1, 2});
    TL_CALL(f, &probe_fn, L->r[3], &(args12_t){1, 2, 3});
    TL_CALL(f, &probe_fn, L->r[4], &(args16_t){1, 2, 3, 4});
    TL_CALL(f, &probe_fn, L->r[5], &(args24_t){1, 2, 3, 4, 5});
    TL_CALL(f, &probe_fn, L->r[6], &(tiny_t){7});
    TL_CALL(f, &probe_fn, L->r[7], &(args3_t){{1, 2, 3}});
    for (int i = 0; i < 8; i++) {
        L->seen[i] = tl_type(L->r[i]) == TL_V_INT ? tl_as_i64(L->r[i]) : -1;
        tl_value_set(&L->r[i], tl_nil());
    }
    TL_END(f);
}
static const tl_func probes_fn = {"test.probes", 1, probes, sizeof(probes_t), probes_fields,
                                  TL_COUNTOF(probes_fields), NULL};

static void test_plain_call_arguments(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    assert_int_equal(tl_register(rt, &probe_fn), TL_OK);
    assert_int_equal(tl_register(rt, &probes_fn), TL_OK);
    for (int round = 0; round < 3; round++) { /* frames come back dirty from the slab */
        assert_int_equal(tl_spawn(rt, &probes_fn, NULL, 0, &t), TL_OK);
        assert_int_equal(tl_run(rt), TL_OK);
        assert_int_equal(tl_tasklet_state(t), TL_DONE);
        tl_tasklet_release(t);
    }
}

/* The results, checked through a probe run from a spawned tasklet. */
typedef struct { int64_t out[8]; } seen_t;
static seen_t last_seen;
static void probes_cleanup(tl_frame *f, void *locals)
{
    (void)f;
    memcpy(last_seen.out, ((probes_t *)locals)->seen, sizeof last_seen.out);
}
static const tl_func probes_seen_fn = {"test.probes_seen", 1, probes, sizeof(probes_t),
                                       probes_fields, TL_COUNTOF(probes_fields), probes_cleanup};

static void test_plain_call_results(void **state)
{
    tl_runtime *rt = *state;
    int64_t want[8] = {0, 1, 21, 321, 4321, 54321, 0, 0};
    int32_t a1 = 0, a3 = 0; /* 1- and 3-byte prefixes of probe_t.a */
    memcpy(&a1, &(tiny_t){7}, sizeof(tiny_t));
    memcpy(&a3, &(args3_t){{1, 2, 3}}, sizeof(args3_t));
    want[6] = a1;
    want[7] = a3;
    assert_int_equal(tl_register(rt, &probe_fn), TL_OK);
    assert_int_equal(tl_register(rt, &probes_seen_fn), TL_OK);
    for (int round = 0; round < 2; round++) {
        memset(&last_seen, 0, sizeof last_seen);
        assert_int_equal(tl_spawn(rt, &probes_seen_fn, NULL, 0, NULL), TL_OK);
        assert_int_equal(tl_run(rt), TL_OK);
        for (int i = 0; i < 8; i++)
            assert_int_equal(last_seen.out[i], want[i]);
    }
}

/* Plain recursion deeper than the C stack allowed for direct calls, a
 * suspension at the bottom (saved and loaded there), or a failure
 * unwinding through it all. */
typedef struct { int64_t n, fail; } psum_t;
static const tl_field psum_fields[] = {TL_FIELD(psum_t, n, TL_T_I64),
                                       TL_FIELD(psum_t, fail, TL_T_I64)};
static const tl_func psum_fn;
static size_t psum_deepest;

static tl_status psum(tl_frame *f, void *locals)
{
    psum_t *L = locals;
    tl_value r = tl_nil();
    TL_BEGIN(f);
    if (L->n == 0) {
        psum_deepest = tl_tasklet_depth(tl_frame_tasklet(f));
        TL_YIELD(f);
        if (L->fail)
            TL_FAIL(f, TL_EUSER, "bottom");
        TL_RETURN(f, tl_i64(0));
    }
    TL_CALL(f, &psum_fn, r, &(psum_t){L->n - 1, L->fail});
    TL_RETURN(f, tl_i64(L->n + tl_as_i64(r)));
    TL_END(f);
}
static const tl_func psum_fn = {"test.psum", 1, psum, sizeof(psum_t), psum_fields,
                                TL_COUNTOF(psum_fields), NULL};

static void test_plain_deep_recursion(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t, *u;
    tl_value v;
    assert_int_equal(tl_register(rt, &psum_fn), TL_OK);
    psum_t a = {100000, 0}, b = {100000, 1};
    assert_int_equal(tl_spawn(rt, &psum_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_spawn(rt, &psum_fn, &b, sizeof b, &u), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(psum_deepest, 100001);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), (int64_t)100000 * 100001 / 2);
    assert_int_equal(tl_tasklet_state(u), TL_FAILED);
    assert_int_equal(tl_tasklet_error(u), TL_EUSER);
    assert_int_equal(tl_tasklet_depth(u), 0);
    tl_tasklet_release(t);
    tl_tasklet_release(u);
}

typedef struct { tl_value r; } pdrive_t;
static const tl_field pdrive_fields[] = {TL_FIELD(pdrive_t, r, TL_T_VALUE)};
static tl_status pdrive(tl_frame *f, void *locals)
{
    pdrive_t *L = locals;
    TL_BEGIN(f);
    TL_CALL(f, &psum_fn, L->r, &(psum_t){50, 0});
    TL_RETURN(f, L->r);
    TL_END(f);
}
static const tl_func pdrive_fn = {"test.pdrive", 1, pdrive, sizeof(pdrive_t), pdrive_fields,
                                  TL_COUNTOF(pdrive_fields), NULL};

/* Frames pushed by plain calls, suspended, are saved and restored like
 * any other. */
static void test_plain_frames_saved(void **state)
{
    tl_runtime *rt = *state, *rt2;
    tl_tasklet *t;
    tl_value v;
    void *buf;
    size_t len;
    uint64_t steps;
    assert_int_equal(tl_register(rt, &psum_fn), TL_OK);
    assert_int_equal(tl_register(rt, &pdrive_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &pdrive_fn, NULL, 0, NULL), TL_OK);
    assert_int_equal(tl_spawn(rt, &pdrive_fn, NULL, 0, NULL), TL_OK);
    assert_int_equal(tl_run_steps(rt, 1, &steps), TL_OK); /* the first yields at depth 52 */
    assert_int_equal(tl_snapshot_save(rt, &buf, &len), TL_OK);
    assert_int_equal(tl_runtime_new(NULL, &rt2), TL_OK);
    assert_int_equal(tl_register(rt2, &psum_fn), TL_OK);
    assert_int_equal(tl_register(rt2, &pdrive_fn), TL_OK);
    assert_int_equal(tl_snapshot_load(rt2, buf, len), TL_OK);
    tl_snapshot_free(rt, buf, len);
    t = tl_tasklet_retain(tl_tasklet_find(rt2, 1));
    assert_non_null(t);
    assert_int_equal(tl_tasklet_depth(t), 52);
    assert_int_equal(tl_run(rt2), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), 50 * 51 / 2);
    tl_tasklet_release(t);
    tl_runtime_free(rt2);
}

static void test_million_tasklets(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    const int n = 1000000;
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    st_t a = {.ch = ch};
    for (int i = 0; i < n; i++)
        assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), (size_t)n);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_blocked_count(rt), (size_t)n);
    assert_int_equal(tl_chan_balance(ch), -n);
    for (int i = 0; i < n; i++)
        assert_int_equal(tl_chan_try_send(ch, tl_i64(i)), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 0);
    assert_int_equal(tl_blocked_count(rt), 0);
    assert_int_equal(tl_chan_balance(ch), 0);
    tl_chan_release(ch);
}

/* ---- no allocation on yield, send or receive ---- */

typedef struct { tl_chan *in, *out; int64_t i; tl_value v; } hot_t;
static const tl_field hot_fields[] = {
    TL_FIELD(hot_t, in, TL_T_CHAN), TL_FIELD(hot_t, out, TL_T_CHAN),
    TL_FIELD(hot_t, i, TL_T_I64), TL_FIELD(hot_t, v, TL_T_VALUE),
};

static tl_status hot_yield(tl_frame *f, void *locals)
{
    hot_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < 1000000; L->i++)
        TL_YIELD(f);
    TL_END(f);
}

static tl_status hot_ping(tl_frame *f, void *locals)
{
    hot_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < 1000000; L->i++) {
        TL_SEND(f, L->out, tl_i64(L->i));
        TL_RECV(f, L->in, L->v);
    }
    TL_END(f);
}

static tl_status hot_pong(tl_frame *f, void *locals)
{
    hot_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < 1000000; L->i++) {
        TL_RECV(f, L->in, L->v);
        TL_SEND(f, L->out, L->v);
    }
    TL_END(f);
}

static const tl_func hot_yield_fn = {"test.hot_yield", 1, hot_yield, sizeof(hot_t),
                                     hot_fields, TL_COUNTOF(hot_fields), NULL};
static const tl_func hot_ping_fn = {"test.hot_ping", 1, hot_ping, sizeof(hot_t),
                                    hot_fields, TL_COUNTOF(hot_fields), NULL};
static const tl_func hot_pong_fn = {"test.hot_pong", 1, hot_pong, sizeof(hot_t),
                                    hot_fields, TL_COUNTOF(hot_fields), NULL};

/* In check mode (TL_CHECK=locals) every resumption is a codec round trip
 * of the frame, which allocates by design, as a restore does: there the
 * steps must give back all they take (nothing grows per step). */
static void assert_steps_allocate_nothing(tl_runtime *rt)
{
    uint64_t steps;
    const char *check = getenv("TL_CHECK");
    assert_int_equal(tl_run_steps(rt, 1000, &steps), TL_OK); /* warm up */
    assert_int_equal(steps, 1000);
    uint64_t before = ca.allocs, frees = ca.frees;
    int64_t live = ca.live;
    assert_int_equal(tl_run_steps(rt, 100000, &steps), TL_OK);
    assert_int_equal(steps, 100000);
    if (check && strcmp(check, "locals") == 0) {
        assert_int_equal(ca.live, live);
        assert_int_equal(ca.allocs - before, ca.frees - frees);
    } else {
        assert_int_equal(ca.allocs, before);
        assert_int_equal(ca.frees, frees);
    }
    tl_runtime_free(rt);
}

static void test_no_alloc_on_yield(void **state)
{
    tl_runtime *rt = *state;
    assert_int_equal(tl_register(rt, &hot_yield_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &hot_yield_fn, NULL, 0, NULL), TL_OK);
    assert_int_equal(tl_spawn(rt, &hot_yield_fn, NULL, 0, NULL), TL_OK);
    assert_steps_allocate_nothing(rt);
    *state = NULL;
}

static void run_pingpong_noalloc(void **state, size_t capacity)
{
    tl_runtime *rt = *state;
    tl_chan *a, *b;
    assert_int_equal(tl_register(rt, &hot_ping_fn), TL_OK);
    assert_int_equal(tl_register(rt, &hot_pong_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, capacity, &a), TL_OK);
    assert_int_equal(tl_chan_new(rt, capacity, &b), TL_OK);
    hot_t p = {.in = b, .out = a}, q = {.in = a, .out = b};
    assert_int_equal(tl_spawn(rt, &hot_ping_fn, &p, sizeof p, NULL), TL_OK);
    assert_int_equal(tl_spawn(rt, &hot_pong_fn, &q, sizeof q, NULL), TL_OK);
    tl_chan_release(a);
    tl_chan_release(b);
    assert_steps_allocate_nothing(rt);
    *state = NULL;
}

static void test_no_alloc_on_send_recv(void **state) { run_pingpong_noalloc(state, 0); }
static void test_no_alloc_on_buffered(void **state) { run_pingpong_noalloc(state, 16); }

/* ---- allocation failure at every point: a clean error, never a crash ---- */

static void test_alloc_failures(void **state)
{
    (void)state;
    for (int64_t k = 0; k < 200; k++) {
        count_alloc fa;
        tl_config cfg = count_config(&fa);
        memset(&fa, 0, sizeof fa);
        fa.fail_at = k;
        tl_runtime *rt = NULL;
        tl_chan *ch = NULL;
        tl_tasklet *t = NULL;
        int rc = tl_runtime_new(&cfg, &rt);
        if (rc == TL_OK) rc = tl_register(rt, &depth_fn);
        if (rc == TL_OK) rc = tl_chan_new(rt, 8, &ch);
        depth_t a = {.n = 50};
        if (rc == TL_OK) rc = tl_spawn(rt, &depth_fn, &a, sizeof a, &t);
        if (rc == TL_OK) {
            rc = tl_run(rt);
            /* a frame that could not be allocated fails the tasklet */
            if (rc == TL_OK && tl_tasklet_state(t) == TL_FAILED)
                assert_int_equal(tl_tasklet_error(t), TL_ENOMEM);
            else
                assert_int_equal(tl_tasklet_state(t), TL_DONE);
        } else {
            assert_int_equal(rc, TL_ENOMEM);
        }
        tl_tasklet_release(t);
        tl_chan_release(ch);
        tl_runtime_free(rt);
        assert_int_equal(fa.live, 0);
    }
}

/* ---- resume points: numbered in order; the shape tl_register reads ---- */

typedef struct { tl_chan *ch; tl_value v; int64_t i, idx; tl_case cs[1]; } shape_t;
static const tl_field shape_fields[] = {
    TL_FIELD(shape_t, cs, TL_T_CASES),
    TL_FIELD(shape_t, ch, TL_T_CHAN), TL_FIELD(shape_t, v, TL_T_VALUE),
    TL_FIELD(shape_t, i, TL_T_I64), TL_FIELD(shape_t, idx, TL_T_I64),
};
static int shape_body_ran;
#define TWO_YIELDS(f) do { TL_YIELD(f); TL_YIELD(f); } while (0)

static tl_status every_kind(tl_frame *f, void *locals)
{
    shape_t *L = locals;
    shape_body_ran++; /* before TL_BEGIN: runs on every entry, probes too */
    TL_BEGIN(f);
    shape_body_ran += 1000; /* never reached by a probe */
    TWO_YIELDS(f); TL_SEND(f, L->ch, L->v); /* three points on one line */
    TL_RECV(f, L->ch, L->v);
    TL_SEND_ERROR(f, L->ch, TL_EUSER, "x");
    TL_CALL0(f, &depth_fn, L->v);
    TL_JOIN(f, NULL, L->v);
    TL_SLEEP(f, 1);
    TL_SLEEP_UNTIL(f, 0);
    TL_SELECT(f, L->cs, 1, L->idx, L->v);
    TL_MIGRATE(f, "elsewhere");
    TL_END(f);
}
static const tl_func every_kind_fn = {"test.every_kind", 1, every_kind, sizeof(shape_t),
                                      shape_fields, TL_COUNTOF(shape_fields), NULL};

static tl_status never_suspends(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_RETURN(f, tl_i64(7));
    TL_END(f);
}
static const tl_func never_fn = {"test.never", 1, never_suspends, 8, NULL, 0, NULL};

/* a suspending macro inside a nested switch: its case labels belong to
 * the inner switch, so the function could never resume there */
static tl_status nested_switch(tl_frame *f, void *locals)
{
    shape_t *L = locals;
    TL_BEGIN(f);
    switch (L->i) {
    case 7:
        TL_YIELD(f);
        break;
    default:
        break;
    }
    TL_YIELD(f);
    TL_END(f);
}
static const tl_func nested_fn = {"test.nested_switch", 1, nested_switch, sizeof(shape_t),
                                  shape_fields, TL_COUNTOF(shape_fields), NULL};

static void test_shape(void **state)
{
    tl_runtime *rt = *state;
    shape_body_ran = 0;
    assert_null(tl_func_shape(rt, &every_kind_fn)); /* not registered */
    assert_int_equal(tl_register(rt, &every_kind_fn), TL_OK);
    assert_string_equal(tl_func_shape(rt, &every_kind_fn), "YYSRECJTTXM");
    assert_true(shape_body_ran < 1000); /* the probe ran none of the body */
    assert_int_equal(tl_register(rt, &never_fn), TL_OK);
    assert_string_equal(tl_func_shape(rt, &never_fn), "");
}

static void test_nested_switch_refused(void **state)
{
    tl_runtime *rt = *state;
    assert_int_equal(tl_register(rt, &nested_fn), TL_EINVAL);
    assert_non_null(strstr(tl_errmsg(rt), "resume point 1 of 2 has no case"));
    assert_non_null(strstr(tl_errmsg(rt), "nested switch"));
    assert_null(tl_lookup(rt, "test.nested_switch", 1));
}

/* the numbering restarts in every function and follows source order */
static tl_status yield_thrice(tl_frame *f, void *locals)
{
    shape_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < 3; L->i++)
        TL_YIELD(f);
    TL_YIELD(f);
    TL_YIELD(f);
    TL_END(f);
}
static const tl_func yield_thrice_fn = {"test.yield_thrice", 1, yield_thrice, sizeof(shape_t),
                                        shape_fields, TL_COUNTOF(shape_fields), NULL};

static void test_points_in_order(void **state)
{
    tl_runtime *rt = *state;
    assert_int_equal(tl_register(rt, &yield_thrice_fn), TL_OK);
    assert_string_equal(tl_func_shape(rt, &yield_thrice_fn), "YYY");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deep_recursion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_states_and_join, setup, teardown),
        cmocka_unit_test_setup_teardown(test_current_is_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_unwinds_with_cleanups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_caught_by_outer_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_now_not_caught, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throw_unwinds_to_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throw_caught_by_middle_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throw_before_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_failed_and_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_self_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_self_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_names_userdata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args_are_retained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_call_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_call_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_deep_recursion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_frames_saved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_million_tasklets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_alloc_on_yield, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_alloc_on_send_recv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_alloc_on_buffered, setup, teardown),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test_setup_teardown(test_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_switch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_points_in_order, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
