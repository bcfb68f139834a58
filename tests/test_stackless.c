/*
 * test_stackless.c -- Stackless's tasklet operations, as trace tests:
 * kill, throw (and its pending form), run / remove / insert, the main
 * tasklet (run, uncaught errors, deadlock), preference by sign, and
 * snapshots of tasklets being killed or thrown at.
 *
 * Each tasklet appends events ("A cleanup") to one trace, and each test
 * compares the whole trace with the one Stackless gives.  Every expected
 * trace says where it comes from: "PyPy" means the PyPy 7.3 script in
 * tests/stackless/ (its .out file holds the lines, produced by
 * `pypy3 x.py`); "C source" means read from stackless-dev/stackless,
 * branch master-slp, Stackless/module/taskletobject.c (tasklet_run,
 * insert, remove, throw, kill) and the scheduling rules behind it (a
 * switch inserts the target at the end of the circular run queue, before
 * the current tasklet, and rotates the queue's head to it).  PyPy's
 * stackless.py has no throw, and its run() and deadlock handling differ
 * from the C code in the cases noted.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tasklet.h"
#include "testutil.h"

#define E_BOOM (TL_EUSER - 5)

/* ---- the trace ---- */

#define TRACE_CAP 64
static char trace[TRACE_CAP][64];
static size_t ntrace;

static void ev(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ev(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (ntrace < TRACE_CAP)
        vsnprintf(trace[ntrace++], sizeof trace[0], fmt, ap);
    va_end(ap);
}

/* Fails, printing both traces, unless the trace is exactly want[0..n). */
static void expect_trace(const char *const *want, size_t n)
{
    int same = ntrace == n;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(trace[i], want[i]) == 0;
    if (!same) {
        for (size_t i = 0; i < n || i < ntrace; i++)
            print_error("%2zu  want %-28s got %s\n", i, i < n ? want[i] : "-",
                        i < ntrace ? trace[i] : "-");
        fail_msg("trace differs");
    }
    ntrace = 0;
}
#define EXPECT(...)                                                  \
    do {                                                             \
        static const char *const want_[] = {__VA_ARGS__};            \
        expect_trace(want_, sizeof want_ / sizeof want_[0]);         \
    } while (0)

/* ---- tasklet functions; each logs under its tasklet's name ---- */

typedef struct {
    tl_chan *ch, *ch2;
    tl_tasklet *other;
    int64_t code;
    tl_value v;
} loc_t;
static const tl_field loc_fields[] = {
    TL_FIELD(loc_t, ch, TL_T_CHAN),
    TL_FIELD(loc_t, ch2, TL_T_CHAN),
    TL_FIELD(loc_t, other, TL_T_TASKLET),
    TL_FIELD(loc_t, code, TL_T_I64),
    TL_FIELD(loc_t, v, TL_T_VALUE),
};

static const char *me(tl_frame *f) { return tl_tasklet_name(tl_frame_tasklet(f)); }
static const char *name_of(tl_tasklet *t) { return tl_tasklet_name(t); }

/* Python's try/finally around the body: the cleanup. */
static void log_cleanup(tl_frame *f, void *locals)
{
    (void)locals;
    ev("%s cleanup", me(f));
}

#define FUNC(id, fn, cleanup)                                                    \
    static const tl_func id = {"stackless." #fn, 1, fn, sizeof(loc_t), loc_fields, \
                               TL_COUNTOF(loc_fields), cleanup}

/* A: starts, blocks receiving; its cleanup logs. */
static tl_status blocker(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_BEGIN(f);
    ev("%s start", me(f));
    TL_RECV(f, L->ch, L->v);
    ev("%s got a value", me(f));
    TL_END(f);
}
FUNC(blocker_fn, blocker, log_cleanup);

/* C: catches what is delivered at its receive, and goes on. */
static tl_status catcher(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    int err;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    ev("%s start", me(f));
    TL_RECV(f, L->ch, L->v);
    err = tl_frame_error(f);
    if (err == TL_EKILLED)
        ev("%s caught kill", me(f));
    else if (err != TL_OK)
        ev("%s caught %d: %s", me(f), err, tl_frame_errmsg(f));
    ev("%s goes on", me(f));
    TL_END(f);
}
FUNC(catcher_fn, catcher, NULL);

static tl_status bystander(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    ev("%s runs", me(f));
    TL_END(f);
}
FUNC(bystander_fn, bystander, NULL);

static tl_status self_killer(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_KILL(f, tl_frame_tasklet(f));
    if (tl_frame_error(f) == TL_EKILLED)
        ev("%s caught own kill", me(f));
    TL_END(f);
}
FUNC(self_killer_fn, self_killer, NULL);

static tl_status killer(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_BEGIN(f);
    ev("%s kills %s", me(f), name_of(L->other));
    TL_KILL(f, L->other);
    ev("%s after kill", me(f));
    TL_END(f);
}
FUNC(killer_fn, killer, NULL);

/* T: throws L->code at L->other, catching what comes back. */
static tl_status thrower(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    int err;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    ev("%s throws at %s", me(f), name_of(L->other));
    TL_THROW(f, L->other, (int)L->code, "thrown");
    err = tl_frame_error(f);
    if (err != TL_OK)
        ev("%s got %s", me(f), tl_errname(err));
    ev("%s after throw", me(f));
    TL_END(f);
}
FUNC(thrower_fn, thrower, NULL);

/* R: runs L->other, catching what comes back. */
static tl_status runner(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    int err;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    ev("%s runs %s", me(f), name_of(L->other));
    TL_RUN(f, L->other);
    err = tl_frame_error(f);
    if (err != TL_OK)
        ev("%s got %s", me(f), tl_errname(err));
    ev("%s after run", me(f));
    TL_END(f);
}
FUNC(runner_fn, runner, NULL);

static tl_status failer(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    ev("%s runs", me(f));
    TL_FAIL(f, E_BOOM, "boom");
    TL_END(f);
}
FUNC(failer_fn, failer, NULL);

/* main: runs the scheduler twice, reporting what run delivers. */
static tl_status main_runs(tl_frame *f, void *locals)
{
    int err;
    (void)locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_RUN_SCHEDULER(f);
    err = tl_frame_error(f);
    if (err != TL_OK)
        ev("%s got %s from run: %s", me(f), tl_errname(err), tl_frame_errmsg(f));
    else
        ev("%s: run returned", me(f));
    TL_RUN_SCHEDULER(f);
    ev("%s done", me(f));
    TL_END(f);
}
FUNC(main_runs_fn, main_runs, NULL);

/* main: receives on L->ch, reporting a value or an error. */
static tl_status main_recv(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    int err;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_RECV(f, L->ch, L->v);
    err = tl_frame_error(f);
    if (err != TL_OK)
        ev("%s got %s", me(f), tl_errname(err));
    else
        ev("%s receives %lld", me(f), (long long)tl_as_i64(L->v));
    TL_END(f);
}
FUNC(main_recv_fn, main_recv, NULL);

/* X: the last runnable tasklet, blocking on ch2; then sends 7 on ch. */
static tl_status last_blocker(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    int err;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_RECV(f, L->ch2, L->v);
    err = tl_frame_error(f);
    if (err != TL_OK)
        ev("%s got %s", me(f), tl_errname(err));
    TL_SEND(f, L->ch, tl_i64(7));
    TL_END(f);
}
FUNC(last_blocker_fn, last_blocker, NULL);

static tl_status error_sender(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_BEGIN(f);
    ev("%s sends an error", me(f));
    TL_SEND_ERROR(f, L->ch, E_BOOM, "sent");
    TL_END(f);
}
FUNC(error_sender_fn, error_sender, NULL);

static tl_status schedule_from_non_main(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_RUN_SCHEDULER(f);
    ev("%s got %s", me(f), tl_errname(tl_frame_error(f)));
    TL_END(f);
}
FUNC(non_main_fn, schedule_from_non_main, NULL);

/* Preference: a receiver that finds a sender waiting. */
static tl_status receiver(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->ch, L->v);
    ev("%s received", me(f));
    TL_END(f);
}
FUNC(receiver_fn, receiver, NULL);

static tl_status sender(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_BEGIN(f);
    TL_SEND(f, L->ch, tl_i64(1));
    ev("%s sent", me(f));
    TL_END(f);
}
FUNC(sender_fn, sender, NULL);

static const tl_func *const all_fns[] = {
    &blocker_fn, &catcher_fn, &bystander_fn, &self_killer_fn, &killer_fn,
    &thrower_fn, &runner_fn, &failer_fn, &main_runs_fn, &main_recv_fn,
    &last_blocker_fn, &error_sender_fn, &non_main_fn, &receiver_fn, &sender_fn,
};

/* ---- fixtures ---- */

static tl_runtime *rt;
static tl_chan *ch, *ch2;

static tl_runtime *new_runtime(void)
{
    tl_runtime *r;
    assert_int_equal(tl_runtime_new(NULL, &r), TL_OK);
    for (size_t i = 0; i < TL_COUNTOF(all_fns); i++)
        assert_int_equal(tl_register(r, all_fns[i]), TL_OK);
    return r;
}

static int setup(void **state)
{
    (void)state;
    rt = new_runtime();
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &ch2), TL_OK);
    ntrace = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_chan_release(ch);
    tl_chan_release(ch2);
    tl_runtime_free(rt);
    return 0;
}

/* A tasklet named name running fn over ch, ch2 and other (handle kept). */
static tl_tasklet *spawn(const char *name, const tl_func *fn, tl_tasklet *other,
                         int64_t code)
{
    tl_tasklet *t;
    loc_t a = {.ch = ch, .ch2 = ch2, .other = other, .code = code};
    assert_int_equal(tl_spawn(rt, fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_tasklet_set_name(t, name), TL_OK);
    return t;
}

/* ---- 1. kill ---- */

/* Trace: PyPy, tests/stackless/kill.py (kill.out lines 1-13), the host
 * playing main.  Kill raises TaskletExit (TL_EKILLED) inside the target at
 * its suspension point, its cleanup runs, then the killer goes on; a dead
 * target is a no-op; a caught kill lets the target go on; self-kill. */
static void test_kill_host(void **state)
{
    (void)state;
    tl_tasklet *a = spawn("A", &blocker_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK); /* A runs and blocks */
    tl_tasklet *b = spawn("B", &bystander_fn, NULL, 0);
    ev("main kills A");
    assert_int_equal(tl_kill(a), TL_OK);
    ev("main after kill");
    ev("A alive=%s", tl_tasklet_state(a) < TL_DONE ? "True" : "False");
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_kill(a), TL_OK);
    ev("kill dead: no error");
    tl_tasklet *c = spawn("C", &catcher_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    ev("main kills C");
    assert_int_equal(tl_kill(c), TL_OK);
    ev("main after kill C");
    tl_tasklet *s = spawn("S", &self_killer_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("A start", "main kills A", "A cleanup", "main after kill", "A alive=False",
           "B runs", "kill dead: no error", "C start", "main kills C", "C caught kill",
           "C goes on", "main after kill C", "S caught own kill");
    assert_int_equal(tl_tasklet_state(a), TL_KILLED);
    assert_int_equal(tl_tasklet_error(a), TL_EKILLED);
    assert_int_equal(tl_tasklet_state(c), TL_DONE); /* it caught the kill */
    assert_int_equal(tl_tasklet_state(s), TL_DONE);
    tl_tasklet_release(a);
    tl_tasklet_release(b);
    tl_tasklet_release(c);
    tl_tasklet_release(s);
}

/* Trace: PyPy, tests/stackless/kill.py (kill.out lines 14-18).  A tasklet
 * kills: the target runs at once, then the killer, then the rest. */
static void test_kill_from_tasklet(void **state)
{
    (void)state;
    tl_tasklet *a = spawn("A", &blocker_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    tl_tasklet *k = spawn("K", &killer_fn, a, 0);
    tl_tasklet *b = spawn("B", &bystander_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("A start", "K kills A", "A cleanup", "K after kill", "B runs");
    assert_int_equal(tl_tasklet_state(a), TL_KILLED);
    tl_tasklet_release(a);
    tl_tasklet_release(k);
    tl_tasklet_release(b);
}

/* Trace: C source (impl_tasklet_kill -> throw of TaskletExit; a tasklet
 * that has not run yet dies without running any of its code). */
static void test_kill_not_started(void **state)
{
    (void)state;
    tl_tasklet *a = spawn("A", &blocker_fn, NULL, 0);
    assert_int_equal(tl_kill(a), TL_OK);
    assert_int_equal(tl_tasklet_state(a), TL_KILLED);
    assert_int_equal(tl_run_steps(rt, 0, NULL), TL_OK);
    EXPECT("A cleanup"); /* the cleanup still runs, the body never did */
    tl_tasklet_release(a);
}

/* The host-side function cannot suspend a tasklet: inside one it refuses. */
static tl_status kill_by_function(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_BEGIN(f);
    ev("%s: tl_kill gives %s", me(f), tl_errname(tl_kill(L->other)));
    ev("%s: tl_tasklet_run gives %s", me(f), tl_errname(tl_tasklet_run(L->other)));
    TL_END(f);
}
FUNC(kill_by_function_fn, kill_by_function, NULL);

static void test_functions_refuse_inside(void **state)
{
    (void)state;
    assert_int_equal(tl_register(rt, &kill_by_function_fn), TL_OK);
    tl_tasklet *b = spawn("B", &bystander_fn, NULL, 0);
    tl_tasklet *k = spawn("K", &kill_by_function_fn, b, 0);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("B runs", "K: tl_kill gives TL_OK", /* B had ended: a no-op */
           "K: tl_tasklet_run gives TL_EDONE");
    tl_tasklet_release(k);
    tl_tasklet *a = spawn("A", &blocker_fn, NULL, 0);
    k = spawn("K", &kill_by_function_fn, a, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    EXPECT("A start", "K: tl_kill gives TL_EBUSY", "K: tl_tasklet_run gives TL_ESTATE");
    tl_tasklet_release(a);
    tl_tasklet_release(b);
    tl_tasklet_release(k);
}

/* ---- 2. throw ---- */

/* Trace: C source (_impl_tasklet_throw_bomb: not pending, the thrower
 * switches to the target; an uncaught error ends it; catching frames go
 * on; throw to self raises at once; throw to a dead tasklet is an error).
 * PyPy's stackless.py has no tasklet.throw. */
static void test_throw_from_tasklet(void **state)
{
    (void)state;
    tl_tasklet *c = spawn("C", &catcher_fn, NULL, 0);
    tl_tasklet *a = spawn("A", &blocker_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    tl_tasklet *t1 = spawn("T", &thrower_fn, c, E_BOOM);
    tl_tasklet *t2 = spawn("U", &thrower_fn, a, E_BOOM);
    tl_tasklet *b = spawn("B", &bystander_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("C start", "A start", "T throws at C", "C caught -105: thrown", "C goes on",
           "T after throw", "U throws at A", "A cleanup", "U after throw", "B runs");
    assert_int_equal(tl_tasklet_state(a), TL_FAILED);
    assert_int_equal(tl_tasklet_error(a), E_BOOM);
    /* to a dead tasklet: an error for the thrower */
    tl_tasklet *t3 = spawn("V", &thrower_fn, a, E_BOOM);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("V throws at A", "V got TL_EDONE", "V after throw");
    tl_tasklet_release(c);
    tl_tasklet_release(a);
    tl_tasklet_release(t1);
    tl_tasklet_release(t2);
    tl_tasklet_release(t3);
    tl_tasklet_release(b);
}

/* Throw to itself: raised in the thrower at once (C source: "raise it
 * directly if target is ourselves"). */
static tl_status self_thrower(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_THROW(f, tl_frame_tasklet(f), E_BOOM, "at myself");
    ev("%s caught %d: %s", me(f), tl_frame_error(f), tl_frame_errmsg(f));
    TL_END(f);
}
FUNC(self_thrower_fn, self_thrower, NULL);

static void test_throw_self(void **state)
{
    (void)state;
    assert_int_equal(tl_register(rt, &self_thrower_fn), TL_OK);
    tl_tasklet *s = spawn("S", &self_thrower_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("S caught -105: at myself");
    tl_tasklet_release(s);
}

/* Trace: C source, the host playing main: tl_throw runs the target at
 * once; to a dead tasklet it is an error (RuntimeError "You cannot throw
 * to a dead tasklet"). */
static void test_throw_host(void **state)
{
    (void)state;
    tl_tasklet *a = spawn("A", &blocker_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    ev("main throws");
    assert_int_equal(tl_throw(a, E_BOOM, "thrown"), TL_OK);
    ev("main after throw");
    EXPECT("A start", "main throws", "A cleanup", "main after throw");
    assert_int_equal(tl_tasklet_state(a), TL_FAILED);
    assert_int_equal(tl_throw(a, E_BOOM, NULL), TL_EDONE);
    assert_int_equal(tl_throw_pending(a, E_BOOM, NULL), TL_EDONE);
    assert_int_equal(tl_throw(a, 0, NULL), TL_EINVAL);
    tl_tasklet_release(a);
}

/* Trace: C source (throw with pending=True: a blocked target is unblocked
 * and inserted at the end of the run queue; a runnable one keeps its
 * place; nothing switches). */
static void test_throw_pending(void **state)
{
    (void)state;
    tl_tasklet *c = spawn("C", &catcher_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    tl_tasklet *x = spawn("X", &bystander_fn, NULL, 0);
    tl_tasklet *y = spawn("Y", &bystander_fn, NULL, 0);
    ev("main throws pending");
    assert_int_equal(tl_throw_pending(c, E_BOOM, "later"), TL_OK);
    ev("main goes on");
    assert_int_equal(tl_tasklet_state(c), TL_RUNNABLE);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("C start", "main throws pending", "main goes on", "X runs", "Y runs",
           "C caught -105: later", "C goes on");
    tl_tasklet_release(c);
    tl_tasklet_release(x);
    tl_tasklet_release(y);
}

/* ---- 3. run, remove, insert ---- */

/* Trace: PyPy, tests/stackless/runq.py (runq.out lines 1-9), the host
 * playing main.  (PyPy's run() of a tasklet still in the queue appends it
 * twice and crashes, so the script removes it first.) */
static void test_run_remove_insert_host(void **state)
{
    (void)state;
    tl_tasklet *a = spawn("A", &bystander_fn, NULL, 0);
    tl_tasklet *b = spawn("B", &bystander_fn, NULL, 0);
    assert_int_equal(tl_tasklet_remove(b), TL_OK);
    ev("main runs B");
    assert_int_equal(tl_tasklet_run(b), TL_OK);
    ev("main after B.run");
    assert_int_equal(tl_run(rt), TL_OK);
    tl_tasklet_release(a);
    tl_tasklet_release(b);
    a = spawn("A", &bystander_fn, NULL, 0);
    b = spawn("B", &bystander_fn, NULL, 0);
    tl_tasklet *c = spawn("C", &bystander_fn, NULL, 0);
    assert_int_equal(tl_tasklet_remove(b), TL_OK);
    ev("B removed");
    assert_int_equal(tl_run(rt), TL_OK);
    ev("B alive=%s", tl_tasklet_state(b) < TL_DONE ? "True" : "False");
    assert_int_equal(tl_tasklet_state(b), TL_BLOCKED);
    assert_int_equal(tl_tasklet_wait(b), TL_WAIT_PAUSED);
    assert_int_equal(tl_blocked_count(rt), 0); /* not blocked: no deadlock either */
    assert_int_equal(tl_tasklet_insert(b), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("main runs B", "B runs", "main after B.run", "A runs", "B removed", "A runs",
           "C runs", "B alive=True", "B runs");
    tl_tasklet_release(a);
    tl_tasklet_release(b);
    tl_tasklet_release(c);
}

/* Errors: PyPy, tests/stackless/runq.py (runq.out lines 10-16), which
 * match taskletobject.c's RuntimeErrors (impl_tasklet_remove, _insert). */
static tl_status remove_self(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    ev("remove current: %s", tl_errname(tl_tasklet_remove(tl_frame_tasklet(f))));
    TL_END(f);
}
FUNC(remove_self_fn, remove_self, NULL);

static void test_run_remove_insert_errors(void **state)
{
    (void)state;
    assert_int_equal(tl_register(rt, &remove_self_fn), TL_OK);
    tl_tasklet *t = spawn("A", &blocker_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    ntrace = 0;
    ev("remove blocked: %s", tl_errname(tl_tasklet_remove(t)));
    ev("insert blocked: %s", tl_errname(tl_tasklet_insert(t)));
    ev("run blocked: %s", tl_errname(tl_tasklet_run(t)));
    tl_tasklet *r = spawn("R", &remove_self_fn, NULL, 0);
    tl_tasklet *d = spawn("D", &bystander_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    ev("insert dead: %s", tl_errname(tl_tasklet_insert(d)));
    ev("run dead: %s", tl_errname(tl_tasklet_run(d)));
    ev("remove dead: %s", tl_errname(tl_tasklet_remove(d)));
    EXPECT("remove blocked: TL_ESTATE", "insert blocked: TL_ESTATE", "run blocked: TL_ESTATE",
           "remove current: TL_ESELF", "D runs", "insert dead: TL_EDONE",
           "run dead: TL_EDONE", "remove dead: TL_OK");
    assert_int_equal(tl_tasklet_remove(NULL), TL_EMISUSE);
    tl_tasklet_release(t);
    tl_tasklet_release(r);
    tl_tasklet_release(d);
}

/* Trace: C source (impl_tasklet_run_remove: insert at the end, then switch,
 * which rotates the run queue's head to the target: "this behaviour
 * upsets FIFO order").  R runs C, the last in the queue: C, then R, then
 * the others; R runs B, in the middle: B and those behind it, then R,
 * then those that were ahead. */
static void test_run_from_tasklet(void **state)
{
    (void)state;
    tl_tasklet *a = spawn("A", &bystander_fn, NULL, 0);
    tl_tasklet *b = spawn("B", &bystander_fn, NULL, 0);
    tl_tasklet *c = spawn("C", &bystander_fn, NULL, 0);
    tl_tasklet *r = spawn("R", &runner_fn, c, 0);
    /* queue: A B C R; step A, B, C go first unless R runs earlier */
    assert_int_equal(tl_tasklet_remove(r), TL_OK);
    assert_int_equal(tl_tasklet_run(r), TL_OK); /* queue A B C, R current */
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("R runs C", "C runs", "R after run", "A runs", "B runs");
    tl_tasklet_release(a);
    tl_tasklet_release(b);
    tl_tasklet_release(c);
    tl_tasklet_release(r);
    a = spawn("A", &bystander_fn, NULL, 0);
    b = spawn("B", &bystander_fn, NULL, 0);
    c = spawn("C", &bystander_fn, NULL, 0);
    r = spawn("R", &runner_fn, b, 0);
    assert_int_equal(tl_tasklet_remove(r), TL_OK);
    assert_int_equal(tl_tasklet_run(r), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("R runs B", "B runs", "C runs", "R after run", "A runs");
    tl_tasklet_release(a);
    tl_tasklet_release(b);
    tl_tasklet_release(c);
    tl_tasklet_release(r);
}

/* ---- 4. the main tasklet ---- */

/* Trace: PyPy, tests/stackless/main.py (main.out): an uncaught error of
 * another tasklet is raised in main by run(), before the rest run. */
static void test_main_run_gets_uncaught_error(void **state)
{
    (void)state;
    tl_tasklet *m = spawn("main", &main_runs_fn, NULL, 0);
    assert_int_equal(tl_set_main(rt, m), TL_OK);
    assert_ptr_equal(tl_main(rt), m);
    tl_tasklet *f = spawn("F", &failer_fn, NULL, 0);
    tl_tasklet_release(f);
    tl_tasklet *l = spawn("L", &bystander_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_OK); /* delivered to main, not to the host */
    EXPECT("F runs", "main got TL_EUSER from run: boom", "L runs", "main done");
    assert_null(tl_main(rt)); /* main ended: host-driven again */
    tl_tasklet_release(m);
    tl_tasklet_release(l);
}

/* Trace: C source (schedule_task_block: with main not floating, the last
 * runnable tasklet that tries to block gets the deadlock error itself).
 * PyPy's emulation asserts in this case. */
static void test_main_last_blocker_gets_deadlock(void **state)
{
    (void)state;
    tl_tasklet *m = spawn("main", &main_recv_fn, NULL, 0);
    assert_int_equal(tl_set_main(rt, m), TL_OK);
    tl_tasklet *x = spawn("X", &last_blocker_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("X got TL_EDEADLOCK", "main receives 7");
    tl_tasklet_release(m);
    tl_tasklet_release(x);
}

/* Trace: PyPy, tests/stackless/main_deadlock.py: main blocked on a
 * channel when the last other tasklet ends gets the deadlock error. */
static void test_main_blocked_gets_deadlock(void **state)
{
    (void)state;
    tl_tasklet *m = spawn("main", &main_recv_fn, NULL, 0);
    assert_int_equal(tl_set_main(rt, m), TL_OK);
    tl_tasklet *e = spawn("E", &bystander_fn, NULL, 0);
    tl_tasklet_release(e);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("E runs", "main got TL_EDEADLOCK");
    tl_tasklet_release(m);
}

/* Trace: C source (schedule_task_block, revive_main: the blocking
 * tasklet's tempval, when it is a bomb, is passed to main, whose run()
 * raises it).  The sender stays blocked with its value. */
static void test_main_run_gets_blocked_senders_error(void **state)
{
    (void)state;
    tl_tasklet *m = spawn("main", &main_runs_fn, NULL, 0);
    assert_int_equal(tl_set_main(rt, m), TL_OK);
    tl_tasklet *s = spawn("S", &error_sender_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK); /* main ended; S still blocked */
    EXPECT("S sends an error", "main got TL_EUSER from run: sent", "main done");
    assert_int_equal(tl_tasklet_wait(s), TL_WAIT_SEND);
    tl_tasklet_release(m);
    tl_tasklet_release(s);
}

/* C source: run() called from another tasklet is a RuntimeError. */
static void test_run_scheduler_only_from_main(void **state)
{
    (void)state;
    tl_tasklet *n = spawn("N", &non_main_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("N got TL_ESTATE");
    assert_int_equal(tl_set_main(rt, n), TL_EDONE);
    tl_tasklet_release(n);
}

/* Host-driven mode stays the default: the host gets the deadlock. */
static void test_host_mode_default(void **state)
{
    (void)state;
    assert_null(tl_main(rt));
    tl_tasklet *m = spawn("M", &main_recv_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(ntrace, 0);
    assert_int_equal(tl_tasklet_wait(m), TL_WAIT_RECV);
    tl_tasklet_release(m);
}

/* ---- 5. preference by its sign ---- */

/* C source (channel_set_preference: the value is normalised to -1, 0, 1).
 * With preference 5 (senders), a receiver that finds a sender waiting
 * lets the sender run first. */
static void test_preference_sign(void **state)
{
    (void)state;
    assert_int_equal(tl_chan_set_preference(ch, 5), TL_OK);
    assert_int_equal(tl_chan_preference(ch), 1);
    tl_tasklet *s = spawn("S", &sender_fn, NULL, 0);
    tl_tasklet *r = spawn("R", &receiver_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("S sent", "R received");
    assert_int_equal(tl_chan_set_preference(ch, -3), TL_OK);
    assert_int_equal(tl_chan_preference(ch), -1);
    assert_int_equal(tl_chan_set_preference(ch, 0), TL_OK);
    assert_int_equal(tl_chan_preference(ch), 0);
    tl_tasklet_release(s);
    tl_tasklet_release(r);
}

/* ---- 6. snapshots of tasklets being killed or thrown at ---- */

/* Saves rt, loads it into a fresh runtime, which becomes rt. */
static void reload(void)
{
    void *buf;
    size_t len;
    assert_int_equal(tl_snapshot_save(rt, &buf, &len), TL_OK);
    tl_runtime *r2 = new_runtime();
    assert_int_equal(tl_snapshot_load(r2, buf, len), TL_OK);
    tl_snapshot_free(rt, buf, len);
    tl_chan_release(ch);
    tl_chan_release(ch2);
    tl_runtime_free(rt);
    rt = r2;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &ch2), TL_OK);
}

/* A kill in flight (the target runnable with TL_EKILLED pending, the
 * killer behind it) and a pending throw survive a snapshot: the loaded
 * runtime goes on with the same trace as test_kill_from_tasklet. */
static void test_snapshot_mid_kill_and_throw(void **state)
{
    (void)state;
    tl_tasklet *a = spawn("A", &blocker_fn, NULL, 0);
    tl_tasklet *c = spawn("C", &catcher_fn, NULL, 0);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    tl_tasklet *k = spawn("K", &killer_fn, a, 0);
    tl_tasklet *b = spawn("B", &bystander_fn, NULL, 0);
    assert_int_equal(tl_throw_pending(c, E_BOOM, "pending"), TL_OK);
    assert_int_equal(tl_run_steps(rt, 1, NULL), TL_OK); /* K switched to A */
    assert_int_equal(tl_tasklet_state(a), TL_RUNNABLE);
    tl_tasklet_release(a);
    tl_tasklet_release(c);
    tl_tasklet_release(k);
    tl_tasklet_release(b);
    EXPECT("A start", "C start", "K kills A");
    reload();
    ntrace = 0; /* freeing the first runtime ran A's cleanup there */
    a = tl_tasklet_retain(tl_tasklet_find(rt, 1));
    assert_non_null(a);
    assert_int_equal(tl_tasklet_state(a), TL_RUNNABLE);
    assert_int_equal(tl_run(rt), TL_OK);
    EXPECT("A cleanup", "K after kill", "B runs", "C caught -105: pending", "C goes on");
    assert_int_equal(tl_tasklet_state(a), TL_KILLED); /* the kill, not a failure */
    tl_tasklet_release(a);
}

/* Removed tasklets and main inside TL_RUN_SCHEDULER have no snapshot
 * field yet: saving refuses with a clear error rather than lose them. */
static void test_snapshot_refuses_paused(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    tl_tasklet *a = spawn("A", &bystander_fn, NULL, 0);
    assert_int_equal(tl_tasklet_remove(a), TL_OK);
    assert_int_equal(tl_snapshot_save(rt, &buf, &len), TL_ESTATE);
    assert_non_null(strstr(tl_errmsg(rt), "removed from the run queue"));
    assert_int_equal(tl_tasklet_insert(a), TL_OK);
    assert_int_equal(tl_snapshot_save(rt, &buf, &len), TL_OK);
    tl_snapshot_free(rt, buf, len);
    tl_tasklet_release(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_from_tasklet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_not_started, setup, teardown),
        cmocka_unit_test_setup_teardown(test_functions_refuse_inside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throw_from_tasklet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throw_self, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throw_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throw_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_remove_insert_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_remove_insert_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_from_tasklet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_main_run_gets_uncaught_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_main_last_blocker_gets_deadlock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_main_blocked_gets_deadlock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_main_run_gets_blocked_senders_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_run_scheduler_only_from_main, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_mode_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_preference_sign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_mid_kill_and_throw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_refuses_paused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
