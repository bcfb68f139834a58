/*
 * stackless.c -- Stackless's tasklet operations: kill and throw delivered
 * inside the target at its suspension point, then a switch to it (strike,
 * strike_switch; tl_kill_now pops every frame at once), run, remove and
 * insert, and the main-tasklet mode (docs/API.md section 8,
 * docs/ARCHITECTURE.md section 7, each rule with its trace test in
 * tests/test_stackless.c).
 *
 * Invariants: a floating tasklet (removed, TL_WAIT_PAUSED) is blocked on
 * nothing and counted neither runnable nor blocked; an operation from
 * inside a tasklet goes through its macro (TL_KILL, TL_THROW, TL_RUN),
 * since a plain function cannot suspend its caller; every public entry
 * point checks its handle first (tl__tasklet_checked, tl__op_target).
 * The frame and lifecycle machinery they use lives in tasklet.c.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static bool floating(const tl_tasklet *t)
{
    return t->state == TL_BLOCKED && (t->wait == TL_WAIT_PAUSED || t->wait == TL_WAIT_RUN);
}

static bool blocked(const tl_tasklet *t) { return t->state == TL_BLOCKED && !floating(t); }

/* ---- kill, throw, run: Stackless's tasklet operations ---- */

/* Delivers code at the suspension point of t (alive, not running; the
 * caller holds a reference).  A tasklet that never ran has no suspension
 * point: it is unwound and ends now (TL_KILLED for TL_EKILLED).  Returns
 * whether t is left to run: detached from its wait, or still in the run
 * queue where it was. */
static bool strike(tl_tasklet *t, int code, const char *msg)
{
    if (t->top->h.pc == 0) {
        tl__detach(t);
        while (t->top)
            tl__frame_pop(t);
        tl__set_errmsg(t, msg);
        tl__finish(t, code == TL_EKILLED ? TL_KILLED : TL_FAILED, code);
        return false;
    }
    if (t->state != TL_RUNNABLE)
        tl__detach(t);
    tl__deliver_error(t, code, msg);
    return true;
}

/* In main-tasklet mode, the error a tasklet failed with goes on to main,
 * which runs next. */
void tl__main_deliver(tl_runtime *rt, const tl_tasklet *failed)
{
    tl_tasklet *m = rt->main;
    const char *msg = failed->ext && failed->ext->errmsg ? failed->ext->errmsg
                                                         : tl_strerror(failed->err);
    if (m == rt->current) {
        tl__deliver_error(m, failed->err, msg);
        return;
    }
    tl__detach(m);
    tl__deliver_error(m, failed->err, msg);
    tl__switch_to(rt, NULL, m);
}

/* The host-side forms switch by running the target now: not possible from
 * inside a tasklet, whose step function cannot be suspended by a call. */
static int outside(tl_tasklet *t, const char *what, const char *macro)
{
    if (!t->rt->current)
        return TL_OK;
    return tl__seterr(t->rt, TL_EBUSY, "%s: called inside a tasklet, which a function "
                      "cannot suspend: use %s", what, macro);
}

static int ended_err(tl_tasklet *t, const char *what)
{
    return tl__seterr(t->rt, TL_EDONE, "%s: tasklet #%llu has already ended", what,
                      (unsigned long long)t->id);
}

/* Host side: strike t, then let it run now. */
static int strike_now(tl_tasklet *t, int code, const char *msg)
{
    t->refs++;
    if (strike(t, code, msg))
        tl__run_now(t->rt, t);
    tl_tasklet_release(t);
    return TL_OK;
}

/* Inside a tasklet (f's): strike t, then switch to it. */
static tl_status strike_switch(tl_frame *f, tl_tasklet *t, int code, const char *msg)
{
    t->refs++;
    bool run = strike(t, code, msg);
    if (run)
        tl__switch_to(t->rt, f->t, t);
    tl_tasklet_release(t);
    return run ? TL__SWITCH : TL__CONT;
}

int tl_kill(tl_tasklet *t)
{
    if (!(t = tl__tasklet_checked(t, "tl_kill")))
        return TL_EMISUSE;
    if (t->state >= TL_DONE)
        return TL_OK;
    int rc = outside(t, "tl_kill", "TL_KILL(f, t)");
    return rc != TL_OK ? rc : strike_now(t, TL_EKILLED, "killed");
}

int tl_throw(tl_tasklet *t, int code, const char *msg)
{
    if (!(t = tl__tasklet_checked(t, "tl_throw")))
        return TL_EMISUSE;
    if (code >= 0)
        return tl__seterr(t->rt, TL_EINVAL, "tl_throw: error code %d is not negative", code);
    if (t->state >= TL_DONE)
        return ended_err(t, "tl_throw: cannot throw to a dead tasklet");
    int rc = outside(t, "tl_throw", "TL_THROW(f, t, code, msg)");
    return rc != TL_OK ? rc : strike_now(t, code, msg ? msg : tl_strerror(code));
}

int tl_throw_pending(tl_tasklet *t, int code, const char *msg)
{
    if (!(t = tl__tasklet_checked(t, "tl_throw_pending")))
        return TL_EMISUSE;
    if (code >= 0)
        return tl__seterr(t->rt, TL_EINVAL, "tl_throw_pending: error code %d is not negative",
                          code);
    if (t->state >= TL_DONE)
        return ended_err(t, "tl_throw_pending: cannot throw to a dead tasklet");
    if (t == t->rt->current)
        return tl__seterr(t->rt, TL_ESELF, "tl_throw_pending: tasklet #%llu is the running "
                          "tasklet; use TL_THROW or TL_FAIL", (unsigned long long)t->id);
    t->refs++;
    if (strike(t, code, msg ? msg : tl_strerror(code)) && t->state != TL_RUNNABLE)
        tl__runq_push_back(t->rt, t);
    tl__mark(t->rt, t);
    tl_tasklet_release(t);
    return TL_OK;
}

int tl_kill_now(tl_tasklet *t)
{
    if (!(t = tl__tasklet_checked(t, "tl_kill_now")))
        return TL_EMISUSE;
    if (t->state >= TL_DONE)
        return ended_err(t, "tl_kill_now");
    if (t == t->rt->current)
        return tl__seterr(t->rt, TL_ESELF, "tl_kill_now: tasklet #%llu is the running "
                          "tasklet; return, TL_FAIL or TL_KILL instead",
                          (unsigned long long)t->id);
    t->refs++; /* keep t while its cleanups run */
    tl__detach(t);
    while (t->top)
        tl__frame_pop(t);
    tl__set_errmsg(t, "killed");
    tl__finish(t, TL_KILLED, TL_EKILLED);
    tl_tasklet_release(t);
    return TL_OK;
}

/* What tl_tasklet_run and TL_RUN refuse: an ended or a blocked tasklet. */
static int run_check(tl_tasklet *t, const char *what)
{
    if (t->state >= TL_DONE)
        return ended_err(t, what);
    if (blocked(t))
        return tl__seterr(t->rt, TL_ESTATE, "%s: tasklet #%llu is blocked: a channel, "
                          "timer or join wakes it, not a run", what, (unsigned long long)t->id);
    return TL_OK;
}

int tl_tasklet_run(tl_tasklet *t)
{
    if (!(t = tl__tasklet_checked(t, "tl_tasklet_run")))
        return TL_EMISUSE;
    int rc = run_check(t, "tl_tasklet_run");
    if (rc == TL_OK)
        rc = outside(t, "tl_tasklet_run", "TL_RUN(f, t)");
    if (rc != TL_OK)
        return rc;
    if (floating(t))
        tl__detach(t);
    tl__run_now(t->rt, t);
    return TL_OK;
}

int tl_tasklet_remove(tl_tasklet *t)
{
    if (!(t = tl__tasklet_checked(t, "tl_tasklet_remove")))
        return TL_EMISUSE;
    if (t == t->rt->current)
        return tl__seterr(t->rt, TL_ESELF, "tl_tasklet_remove: the current tasklet "
                          "cannot be removed");
    if (blocked(t))
        return tl__seterr(t->rt, TL_ESTATE, "tl_tasklet_remove: tasklet #%llu is blocked",
                          (unsigned long long)t->id);
    if (t->state != TL_RUNNABLE)
        return TL_OK; /* paused already, or ended */
    tl__runq_remove(t->rt, t);
    t->state = TL_BLOCKED;
    t->wait = TL_WAIT_PAUSED;
    tl__mark(t->rt, t);
    return TL_OK;
}

int tl_tasklet_insert(tl_tasklet *t)
{
    if (!(t = tl__tasklet_checked(t, "tl_tasklet_insert")))
        return TL_EMISUSE;
    if (t->state >= TL_DONE)
        return ended_err(t, "tl_tasklet_insert: cannot run a dead tasklet");
    if (blocked(t))
        return tl__seterr(t->rt, TL_ESTATE, "tl_tasklet_insert: tasklet #%llu is blocked: "
                          "a channel, timer or join wakes it", (unsigned long long)t->id);
    if (floating(t)) {
        tl__detach(t);
        tl__runq_push_back(t->rt, t);
        tl__mark(t->rt, t);
    }
    return TL_OK;
}

tl_status tl__kill(tl_frame *f, tl_tasklet *t)
{
    if (!(t = tl__op_target(f, t, "TL_KILL")))
        return TL__CONT;
    if (t->state >= TL_DONE)
        return TL__CONT;
    if (t == f->t) {
        tl__deliver_error(t, TL_EKILLED, "killed");
        return TL__CONT;
    }
    return strike_switch(f, t, TL_EKILLED, "killed");
}

tl_status tl__throw(tl_frame *f, tl_tasklet *t, int code, const char *msg)
{
    if (!(t = tl__op_target(f, t, "TL_THROW")))
        return TL__CONT;
    if (code >= 0)
        return tl__op_error(f, TL_EINVAL, "TL_THROW: error code %d is not negative", code);
    if (t->state >= TL_DONE)
        return tl__op_error(f, TL_EDONE, "TL_THROW: tasklet #%llu has ended: cannot throw "
                            "to a dead tasklet", (unsigned long long)t->id);
    msg = msg ? msg : tl_strerror(code);
    if (t == f->t) {
        tl__deliver_error(t, code, msg);
        return TL__CONT;
    }
    return strike_switch(f, t, code, msg);
}

tl_status tl__run(tl_frame *f, tl_tasklet *t)
{
    tl_runtime *rt = f->t->rt;
    if (!(t = tl__op_target(f, t, "TL_RUN")))
        return TL__CONT;
    if (t == f->t)
        return TL__CONT;
    if (run_check(t, "TL_RUN") != TL_OK)
        return tl__op_error(f, rt->errcode, "%s", rt->errmsg);
    if (floating(t))
        tl__detach(t);
    tl__switch_to(rt, f->t, t);
    return TL__SWITCH;
}

int tl_set_main(tl_runtime *rt, tl_tasklet *h)
{
    tl_tasklet *t = h ? tl__tasklet_checked(h, "tl_set_main") : NULL;
    if (!rt || rt->magic != TL__MAGIC_RT || (h && (!t || t->rt != rt)))
        return TL_EMISUSE;
    if (t && t->state >= TL_DONE)
        return ended_err(t, "tl_set_main");
    tl_tasklet *old = rt->main;
    rt->main = tl_tasklet_retain(t);
    if (old && old != t && old->state == TL_BLOCKED && old->wait == TL_WAIT_RUN) {
        tl__detach(old); /* no longer main: TL_RUN_SCHEDULER returns */
        tl__runq_push_back(rt, old);
    }
    tl_tasklet_release(old);
    return TL_OK;
}

tl_tasklet *tl_main(const tl_runtime *rt)
{
    return rt && rt->magic == TL__MAGIC_RT ? tl__tasklet_handle(rt->main) : NULL;
}
