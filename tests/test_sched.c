/*
 * test_sched.c -- the scheduler: FIFO run queue, the bounded run
 * (watchdog), wall-clock timers, deadlock reports, failure reports,
 * tracing callbacks, and several runtimes on several threads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tasklet.h"
#include "testutil.h"

static fake_clock clk;

static int setup(void **state)
{
    tl_runtime *rt;
    if (tl_runtime_new(NULL, &rt) != TL_OK)
        return -1;
    *state = rt;
    return 0;
}

static int setup_fake_clock(void **state)
{
    tl_runtime *rt;
    tl_config cfg = {0};
    clk.now = 1700000000LL * 1000000000LL;
    cfg.clock = fake_clock_fn;
    cfg.clock_ud = &clk;
    if (tl_runtime_new(&cfg, &rt) != TL_OK)
        return -1;
    *state = rt;
    return 0;
}

static int teardown(void **state)
{
    tl_runtime_free(*state);
    return 0;
}

static int order[64];
static int norder;

static void log_id(int id)
{
    if (norder < 64)
        order[norder++] = id;
}

typedef struct { int64_t id, i, n, ms; tl_chan *ch; tl_value v; } w_t;
static const tl_field w_fields[] = {
    TL_FIELD(w_t, id, TL_T_I64), TL_FIELD(w_t, i, TL_T_I64), TL_FIELD(w_t, n, TL_T_I64),
    TL_FIELD(w_t, ms, TL_T_I64), TL_FIELD(w_t, ch, TL_T_CHAN), TL_FIELD(w_t, v, TL_T_VALUE),
};

static tl_status yielder(tl_frame *f, void *locals)
{
    w_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        log_id((int)L->id);
        TL_YIELD(f);
    }
    TL_END(f);
}
static const tl_func yielder_fn = {"test.yielder", 1, yielder, sizeof(w_t), w_fields,
                                   TL_COUNTOF(w_fields), NULL};

static void test_fifo_round_robin(void **state)
{
    tl_runtime *rt = *state;
    norder = 0;
    assert_int_equal(tl_register(rt, &yielder_fn), TL_OK);
    for (int id = 1; id <= 3; id++) {
        w_t a = {.id = id, .n = 3};
        assert_int_equal(tl_spawn(rt, &yielder_fn, &a, sizeof a, NULL), TL_OK);
    }
    assert_int_equal(tl_runnable_count(rt), 3);
    assert_int_equal(tl_run(rt), TL_OK);
    int want[] = {1, 2, 3, 1, 2, 3, 1, 2, 3};
    assert_int_equal(norder, 9);
    assert_memory_equal(order, want, sizeof want);
}

static void test_yield_alone_is_a_step(void **state)
{
    tl_runtime *rt = *state;
    uint64_t steps;
    norder = 0;
    assert_int_equal(tl_register(rt, &yielder_fn), TL_OK);
    w_t a = {.id = 7, .n = 5};
    assert_int_equal(tl_spawn(rt, &yielder_fn, &a, sizeof a, NULL), TL_OK);
    /* with nobody else runnable, a yield still ends the step */
    assert_int_equal(tl_run_steps(rt, 1, &steps), TL_OK);
    assert_int_equal(steps, 1);
    assert_int_equal(norder, 1);
    assert_int_equal(tl_tasklet_count(rt), 1);
    assert_int_equal(tl_run_steps(rt, 100, &steps), TL_OK);
    assert_int_equal(steps, 5); /* four more yields, then the end */
    assert_int_equal(norder, 5);
    assert_int_equal(tl_tasklet_count(rt), 0);
}

static void test_bounded_run(void **state)
{
    tl_runtime *rt = *state;
    uint64_t steps, total = 0;
    norder = 0;
    assert_int_equal(tl_register(rt, &yielder_fn), TL_OK);
    for (int id = 1; id <= 2; id++) {
        w_t a = {.id = id, .n = 100};
        assert_int_equal(tl_spawn(rt, &yielder_fn, &a, sizeof a, NULL), TL_OK);
    }
    assert_int_equal(tl_run_steps(rt, 10, &steps), TL_OK);
    assert_int_equal(steps, 10);
    assert_int_equal(tl_runnable_count(rt), 2);
    assert_int_equal(tl_tasklet_count(rt), 2);
    total = steps;
    while (tl_runnable_count(rt)) {
        assert_int_equal(tl_run_steps(rt, 7, &steps), TL_OK);
        assert_true(steps <= 7);
        total += steps;
    }
    /* 100 yields each, plus the final resumption that returns */
    assert_int_equal(total, 2 * 101);
    assert_int_equal(tl_tasklet_count(rt), 0);
    assert_int_equal(tl_run_steps(rt, 5, &steps), TL_OK);
    assert_int_equal(steps, 0);
}

/* ---- timers ---- */

static tl_status sleeper(tl_frame *f, void *locals)
{
    w_t *L = locals;
    TL_BEGIN(f);
    TL_SLEEP(f, L->ms);
    log_id((int)L->id);
    TL_RETURN(f, tl_i64(tl_now(tl_frame_runtime(f))));
    TL_END(f);
}
static const tl_func sleeper_fn = {"test.sleeper", 1, sleeper, sizeof(w_t), w_fields,
                                   TL_COUNTOF(w_fields), NULL};

static void test_timers_fake_clock(void **state)
{
    tl_runtime *rt = *state;
    uint64_t steps;
    int64_t deadline, start = clk.now;
    norder = 0;
    assert_int_equal(tl_register(rt, &sleeper_fn), TL_OK);
    int64_t ms[] = {30, 10, 20};
    for (int i = 0; i < 3; i++) {
        w_t a = {.id = i + 1, .ms = ms[i]};
        assert_int_equal(tl_spawn(rt, &sleeper_fn, &a, sizeof a, NULL), TL_OK);
    }
    assert_int_equal(tl_next_deadline(rt, &deadline), 0);
    assert_int_equal(tl_run_steps(rt, 100, &steps), TL_OK);
    assert_int_equal(steps, 3);
    assert_int_equal(tl_blocked_count(rt), 3);
    assert_int_equal(tl_next_deadline(rt, &deadline), 1);
    assert_int_equal(deadline, start + 10 * 1000000);
    clk.now += 9 * 1000000; /* not yet */
    assert_int_equal(tl_run_steps(rt, 100, &steps), TL_OK);
    assert_int_equal(steps, 0);
    clk.now += 1000000; /* t = 10 ms: the second one wakes */
    assert_int_equal(tl_run_steps(rt, 100, &steps), TL_OK);
    assert_int_equal(steps, 1);
    assert_int_equal(norder, 1);
    assert_int_equal(order[0], 2);
    clk.now += 100 * 1000000; /* both others are due: earliest first */
    assert_int_equal(tl_run_steps(rt, 100, &steps), TL_OK);
    assert_int_equal(steps, 2);
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 1);
    assert_int_equal(tl_next_deadline(rt, &deadline), 0);
    assert_int_equal(tl_tasklet_count(rt), 0);
}

static void test_sleep_real_clock(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    tl_value v;
    assert_int_equal(tl_register(rt, &sleeper_fn), TL_OK);
    w_t a = {.id = 1, .ms = 20};
    int64_t start = tl_now(rt);
    assert_int_equal(tl_spawn(rt, &sleeper_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK); /* sleeps until the deadline */
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_true(tl_as_i64(v) >= start + 20 * 1000000); /* never woken early */
    tl_tasklet_release(t);
}

/* A lone tasklet that only yields still hands control back: a bounded run
 * returns after its steps, and a timer due meanwhile fires (issue 11,
 * item 10: the yield used to continue inline when the queue was empty). */
static void test_lone_yield_returns_to_host(void **state)
{
    tl_runtime *rt = *state;
    norder = 0;
    assert_int_equal(tl_register(rt, &yielder_fn), TL_OK);
    assert_int_equal(tl_register(rt, &sleeper_fn), TL_OK);
    w_t a = {.id = 1, .n = INT64_MAX};
    tl_tasklet *y;
    assert_int_equal(tl_spawn(rt, &yielder_fn, &a, sizeof a, &y), TL_OK);
    uint64_t steps = 0;
    assert_int_equal(tl_run_steps(rt, 5, &steps), TL_OK);
    assert_int_equal(steps, 5);
    assert_int_equal(norder, 5);
    w_t s = {.id = 2, .ms = 10};
    tl_tasklet *sl;
    assert_int_equal(tl_spawn(rt, &sleeper_fn, &s, sizeof s, &sl), TL_OK);
    assert_int_equal(tl_run_steps(rt, 2, NULL), TL_OK); /* the sleeper is asleep */
    assert_int_equal(tl_tasklet_wait(sl), TL_WAIT_SLEEP);
    clk.now += 10 * 1000000;
    for (int i = 0; i < 100 && tl_tasklet_state(sl) != TL_DONE; i++)
        assert_int_equal(tl_run_steps(rt, 1000, NULL), TL_OK);
    assert_int_equal(tl_tasklet_state(sl), TL_DONE); /* woken while the yielder runs */
    assert_int_equal(tl_tasklet_state(y), TL_RUNNABLE);
    assert_int_equal(tl_kill(y), TL_OK);
}

static void test_kill_sleeper_removes_timer(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t[3];
    int64_t deadline;
    uint64_t steps;
    assert_int_equal(tl_register(rt, &sleeper_fn), TL_OK);
    for (int i = 0; i < 3; i++) {
        w_t a = {.id = i, .ms = 10 + i};
        assert_int_equal(tl_spawn(rt, &sleeper_fn, &a, sizeof a, &t[i]), TL_OK);
    }
    assert_int_equal(tl_run_steps(rt, 10, &steps), TL_OK);
    assert_int_equal(tl_kill(t[0]), TL_OK);
    assert_int_equal(tl_next_deadline(rt, &deadline), 1);
    assert_int_equal(deadline, clk.now + 11 * 1000000);
    assert_int_equal(tl_kill(t[2]), TL_OK);
    assert_int_equal(tl_kill(t[1]), TL_OK);
    assert_int_equal(tl_next_deadline(rt, &deadline), 0);
    assert_int_equal(tl_blocked_count(rt), 0);
    for (int i = 0; i < 3; i++)
        tl_tasklet_release(t[i]);
}

/* ---- deadlock and failure reports ---- */

static tl_status waiter(tl_frame *f, void *locals)
{
    w_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->ch, L->v);
    TL_END(f);
}
static const tl_func waiter_fn = {"test.waiter", 1, waiter, sizeof(w_t), w_fields,
                                  TL_COUNTOF(w_fields), NULL};

static void test_deadlock_names_blocked(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    tl_tasklet *a, *b;
    assert_int_equal(tl_register(rt, &waiter_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_set_name(ch, "jobs"), TL_OK);
    w_t args = {.ch = ch};
    assert_int_equal(tl_spawn(rt, &waiter_fn, &args, sizeof args, &a), TL_OK);
    assert_int_equal(tl_spawn(rt, &waiter_fn, &args, sizeof args, &b), TL_OK);
    assert_int_equal(tl_tasklet_set_name(a, "consumer-a"), TL_OK);
    assert_int_equal(tl_tasklet_set_name(b, "consumer-b"), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_errcode(rt), TL_EDEADLOCK);
    const char *msg = tl_errmsg(rt);
    assert_non_null(strstr(msg, "2 tasklet(s) blocked"));
    assert_non_null(strstr(msg, "'consumer-a'"));
    assert_non_null(strstr(msg, "'consumer-b'"));
    assert_non_null(strstr(msg, "receive on channel #"));
    assert_non_null(strstr(msg, "'jobs'"));
    assert_non_null(strstr(msg, "test.waiter@1"));
    /* the host can unblock them and go on */
    assert_int_equal(tl_chan_try_send(ch, tl_i64(1)), TL_OK);
    assert_int_equal(tl_chan_try_send(ch, tl_i64(2)), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    tl_tasklet_release(a);
    tl_tasklet_release(b);
    tl_chan_release(ch);
}

static tl_status failer(tl_frame *f, void *locals)
{
    w_t *L = locals;
    TL_BEGIN(f);
    log_id((int)L->id);
    if (L->id == 2)
        TL_FAIL(f, TL_EUSER - 42, "disk on fire");
    TL_END(f);
}
static const tl_func failer_fn = {"test.failer", 1, failer, sizeof(w_t), w_fields,
                                  TL_COUNTOF(w_fields), NULL};

static void test_detached_failure_reported(void **state)
{
    tl_runtime *rt = *state;
    norder = 0;
    assert_int_equal(tl_register(rt, &failer_fn), TL_OK);
    for (int id = 1; id <= 3; id++) {
        w_t a = {.id = id};
        assert_int_equal(tl_spawn(rt, &failer_fn, &a, sizeof a, NULL), TL_OK);
    }
    assert_int_equal(tl_run(rt), TL_EUSER - 42);
    assert_non_null(strstr(tl_errmsg(rt), "disk on fire"));
    assert_non_null(strstr(tl_errmsg(rt), "tasklet #2"));
    assert_int_equal(norder, 2); /* stopped right after the failure */
    assert_int_equal(tl_run(rt), TL_OK); /* and goes on */
    assert_int_equal(norder, 3);
}

static tl_status nested_run(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_RETURN(f, tl_i64(tl_run(tl_frame_runtime(f))));
    TL_END(f);
}
static const tl_func nested_run_fn = {"test.nested_run", 1, nested_run, 8, NULL, 0, NULL};

static void test_run_inside_tasklet_is_busy(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    tl_value v;
    assert_int_equal(tl_register(rt, &nested_run_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &nested_run_fn, NULL, 0, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), TL_EBUSY);
    tl_tasklet_release(t);
}

/* ---- tracing ---- */

typedef struct { int n; uint64_t prev[16], next[16]; } trace_t;

static void on_switch(void *ud, tl_tasklet *prev, tl_tasklet *next)
{
    trace_t *tr = ud;
    if (tr->n < 16) {
        tr->prev[tr->n] = prev ? tl_tasklet_id(prev) : 0;
        tr->next[tr->n] = next ? tl_tasklet_id(next) : 0;
    }
    tr->n++;
}

static void test_schedule_callback(void **state)
{
    tl_runtime *rt = *state;
    trace_t tr = {0};
    tl_tasklet *a, *b;
    assert_int_equal(tl_register(rt, &yielder_fn), TL_OK);
    w_t args = {.n = 1};
    assert_int_equal(tl_spawn(rt, &yielder_fn, &args, sizeof args, &a), TL_OK);
    assert_int_equal(tl_spawn(rt, &yielder_fn, &args, sizeof args, &b), TL_OK);
    tl_set_schedule_callback(rt, on_switch, &tr);
    assert_int_equal(tl_run(rt), TL_OK);
    uint64_t ia = tl_tasklet_id(a), ib = tl_tasklet_id(b);
    /* a, b, a (returns), b (returns), idle */
    assert_int_equal(tr.n, 5);
    assert_int_equal(tr.prev[0], 0);
    assert_int_equal(tr.next[0], ia);
    assert_int_equal(tr.prev[1], ia);
    assert_int_equal(tr.next[1], ib);
    assert_int_equal(tr.next[2], ia);
    assert_int_equal(tr.next[3], ib);
    assert_int_equal(tr.next[4], 0);
    tl_tasklet_release(a);
    tl_tasklet_release(b);
}

/* ---- several runtimes, one thread each ---- */

typedef struct { tl_chan *in, *out; int64_t i, n, sum; tl_value v; } pp_t;
static const tl_field pp_fields[] = {
    TL_FIELD(pp_t, in, TL_T_CHAN), TL_FIELD(pp_t, out, TL_T_CHAN), TL_FIELD(pp_t, i, TL_T_I64),
    TL_FIELD(pp_t, n, TL_T_I64), TL_FIELD(pp_t, sum, TL_T_I64), TL_FIELD(pp_t, v, TL_T_VALUE),
};

static tl_status ping(tl_frame *f, void *locals)
{
    pp_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_SEND(f, L->out, tl_i64(L->i));
        TL_RECV(f, L->in, L->v);
        L->sum += tl_as_i64(L->v);
    }
    TL_RETURN(f, tl_i64(L->sum));
    TL_END(f);
}

static tl_status pong(tl_frame *f, void *locals)
{
    pp_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_RECV(f, L->in, L->v);
        TL_SEND(f, L->out, tl_i64(2 * tl_as_i64(L->v)));
    }
    TL_END(f);
}
static const tl_func ping_fn = {"test.ping", 1, ping, sizeof(pp_t), pp_fields,
                                TL_COUNTOF(pp_fields), NULL};
static const tl_func pong_fn = {"test.pong", 1, pong, sizeof(pp_t), pp_fields,
                                TL_COUNTOF(pp_fields), NULL};

typedef struct { int64_t n, result; int rc; } thread_job;

static void *thread_main(void *arg)
{
    thread_job *job = arg;
    tl_runtime *rt;
    tl_chan *a, *b;
    tl_tasklet *t;
    tl_value v = tl_nil();
    job->rc = tl_runtime_new(NULL, &rt);
    if (job->rc != TL_OK)
        return NULL;
    tl_register(rt, &ping_fn);
    tl_register(rt, &pong_fn);
    tl_chan_new(rt, 0, &a);
    tl_chan_new(rt, 0, &b);
    pp_t p = {.in = b, .out = a, .n = job->n}, q = {.in = a, .out = b, .n = job->n};
    tl_spawn(rt, &ping_fn, &p, sizeof p, &t);
    tl_spawn(rt, &pong_fn, &q, sizeof q, NULL);
    job->rc = tl_run(rt);
    tl_tasklet_result(t, &v);
    job->result = tl_as_i64(v);
    tl_tasklet_release(t);
    tl_chan_release(a);
    tl_chan_release(b);
    tl_runtime_free(rt);
    return NULL;
}

static void test_two_runtimes_two_threads(void **state)
{
    (void)state;
    pthread_t th[2];
    thread_job jobs[2] = {{.n = 200000}, {.n = 300000}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 2; i++) {
        int64_t n = jobs[i].n;
        assert_int_equal(jobs[i].rc, TL_OK);
        assert_int_equal(jobs[i].result, n * (n - 1)); /* sum of 2i */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fifo_round_robin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yield_alone_is_a_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timers_fake_clock, setup_fake_clock, teardown),
        cmocka_unit_test_setup_teardown(test_sleep_real_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_sleeper_removes_timer, setup_fake_clock, teardown),
        cmocka_unit_test_setup_teardown(test_lone_yield_returns_to_host, setup_fake_clock, teardown),
        cmocka_unit_test_setup_teardown(test_deadlock_names_blocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detached_failure_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_inside_tasklet_is_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schedule_callback, setup, teardown),
        cmocka_unit_test(test_two_runtimes_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
