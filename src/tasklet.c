/*
 * tasklet.c -- tasklets and their heap frames.
 *
 * A tasklet's call stack is a singly linked chain of tl_frame, top first;
 * the scheduler always runs the top frame, so the C stack stays flat and
 * deep recursion costs heap only.  A frame owns the references held in
 * its schema fields of type VALUE, CHAN and TASKLET and releases them when
 * popped, after its function's cleanup.
 *
 * Errors travel up the chain: the failing frame is popped and the error
 * flagged on its caller (TL__F_ERR, unless the caller catches), whose
 * resume point then unwinds in turn.  Kill (TL_EKILLED) and throw are
 * delivered the same way, then switch to their target, as Stackless does
 * (stackless.c: strike, strike_switch, strike_now); only tl_kill_now pops
 * every frame at once.
 *
 * References: t->refs counts user handles, values, joiners, and one for
 * being alive; the tasklet is freed when it drops to zero.  Public entry
 * points take handles (internal.h, "handles"): at() or op_target() first.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* ---- references held in locals ---- */

static void field_retain(const tl_field *fd, char *locals)
{
    void *p = locals + fd->offset;
    switch (fd->type) {
    case TL_T_VALUE: tl_retain(*(tl_value *)p); break;
    case TL_T_CHAN: if (*(tl_chan **)p) tl_chan_retain(*(tl_chan **)p); break;
    case TL_T_TASKLET: if (*(tl_tasklet **)p) tl_tasklet_retain(*(tl_tasklet **)p); break;
    default: break;
    }
}

static void field_release(const tl_field *fd, char *locals)
{
    void *p = locals + fd->offset;
    switch (fd->type) {
    case TL_T_VALUE:
        tl_value_set((tl_value *)p, tl_nil());
        break;
    case TL_T_CHAN:
        tl_chan_release(*(tl_chan **)p);
        *(tl_chan **)p = NULL;
        break;
    case TL_T_TASKLET:
        tl_tasklet_release(*(tl_tasklet **)p);
        *(tl_tasklet **)p = NULL;
        break;
    default:
        break;
    }
}

/* ---- frames ---- */

static tl_frame *frame_alloc(tl_runtime *rt, const tl__fn *e)
{
    if (e->slab_class >= 0)
        return tl__slab_get_fast(rt, &rt->frames[e->slab_class]);
    return tl__alloc(rt, e->frame_size);
}

static void frame_dealloc(tl_runtime *rt, tl_frame *f)
{
    const tl__fn *e = f->fn;
    if (e->slab_class >= 0)
        tl__slab_put_fast(&rt->frames[e->slab_class], f);
    else
        tl__free(rt, f, e->frame_size);
}

static inline int check_args(tl_runtime *rt, const tl__fn *e, const void *args,
                      size_t argsize)
{
    const tl_func *fn = e->fn;
    if (argsize > fn->locals_size || (!args && argsize))
        return tl__seterr(rt, TL_EINVAL, "%s@%u: %zu bytes of arguments for %zu bytes of locals",
                          fn->name, fn->version, argsize, fn->locals_size);
    for (unsigned i = 0; i < e->nrefs; i++) {
        const tl_field *fd = &fn->fields[e->refs[i]];
        if (fd->offset < argsize && fd->offset + fd->size > argsize)
            return tl__seterr(rt, TL_EINVAL, "%s@%u: arguments end inside field '%s'",
                              fn->name, fn->version, fd->name);
    }
    return TL_OK;
}

/* Copies the arguments into a new frame's locals.  Up to 16 bytes, the
 * usual argument struct, move as two (possibly overlapping) words rather
 * than through a call to memcpy. */
static inline void copy_args(char *locals, const void *args, size_t n)
{
    const char *p = args;
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
        memcpy(locals, &a, 8);
        memcpy(locals + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        memcpy(locals, &a, 4);
        memcpy(locals + n - 4, &b, 4);
    } else if (n > 0 && n < 4) {
        locals[0] = p[0];
        locals[n / 2] = p[n / 2];
        locals[n - 1] = p[n - 1];
    } else if (n > 16) {
        memcpy(locals, args, n);
    }
}

/* The head of a new frame f of e, on top of t (not linked yet). */
static inline __attribute__((always_inline)) void frame_head(tl_frame *f, tl_tasklet *t,
                                                             const tl__fn *e)
{
    f->h.pc = 0;
    f->h.flags = 0;
    f->fn = e;
    f->parent = t->top;
    f->t = t;
    ((tl__fn *)e)->live++;
}

/* Pushes a frame for e on t, locals = args then zeros. */
static inline tl_frame *frame_push(tl_runtime *rt, tl_tasklet *t, const tl__fn *e,
                            const void *args, size_t argsize)
{
    tl_frame *f = frame_alloc(rt, e);
    if (!f)
        return NULL;
    size_t ls = e->fn->locals_size;
    char *locals = TL__LOCALS(f);
    frame_head(f, t, e);
    copy_args(locals, args, argsize);
    if (ls > argsize)
        memset(locals + argsize, 0, ls - argsize);
    for (unsigned i = 0; i < e->nrefs; i++) {
        const tl_field *fd = &e->fn->fields[e->refs[i]];
        if (fd->offset < argsize)
            field_retain(fd, locals);
    }
    t->top = f;
    return f;
}

tl_frame *tl__frame_new(tl_runtime *rt, tl_tasklet *t, const tl__fn *e)
{
    return frame_push(rt, t, e, NULL, 0);
}

/* Pops the top frame: its cleanup (if run_cleanup), then its references. */
static inline void frame_drop(tl_tasklet *t, bool run_cleanup)
{
    tl_frame *f = t->top;
    const tl__fn *e = f->fn;
    char *locals = TL__LOCALS(f);
    if (run_cleanup && e->fn->cleanup)
        e->fn->cleanup(f, locals);
    t->top = f->parent;
    for (unsigned i = 0; i < e->nrefs; i++)
        field_release(&e->fn->fields[e->refs[i]], locals);
    ((tl__fn *)e)->live--;
    frame_dealloc(t->rt, f);
}

static void frame_pop(tl_tasklet *t) { frame_drop(t, true); }

/* ---- lifecycle ---- */

tl__ext *tl__ext_get(tl_tasklet *t)
{
    if (!t->ext) {
        tl__ext *x = tl__slab_get(t->rt, &t->rt->exts);
        if (!x)
            return NULL;
        memset(x, 0, sizeof *x);
        tl__list_init(&x->joiners);
        t->ext = x;
    }
    return t->ext;
}

static void set_errmsg(tl_tasklet *t, const char *msg)
{
    tl__ext *x = tl__ext_get(t);
    if (!x)
        return;
    char *copy = msg ? tl__strdup(t->rt, msg) : NULL;
    tl__strfree(t->rt, x->errmsg);
    x->errmsg = copy;
}

static void tasklet_free(tl_tasklet *t)
{
    tl_runtime *rt = t->rt;
    tl_value_set(&t->xfer, tl_nil());
    if (t->ext) {
        tl__strfree(rt, t->ext->name);
        tl__strfree(rt, t->ext->errmsg);
        tl__slab_put(&rt->exts, t->ext);
        t->ext = NULL;
    }
    if (rt->last == t)
        rt->last = NULL;
    tl__mark(rt, t);
    tl__note_tasklet(rt, t, 0);
    tl__slab_put(&rt->tasklets, t);
}

tl_tasklet *tl_tasklet_retain(tl_tasklet *h)
{
    tl_tasklet *t = tl__tasklet_at(h);
    if (!t) {
        tl__bad_tasklet(h, "tl_tasklet_retain");
        return NULL;
    }
    t->refs++;
    return h;
}

void tl_tasklet_release(tl_tasklet *h)
{
    tl_tasklet *t = tl__tasklet_at(h);
    if (!t) {
        if (h)
            tl__bad_tasklet(h, "tl_tasklet_release");
        return;
    }
    if (--t->refs == 0 && !t->rt->tearing_down)
        tasklet_free(t);
}

/* A stale handle's slot is still mapped (slabs keep their memory) and its
 * runtime pointer still readable (internal.h): the runtime it came from. */
static tl_runtime *slot_runtime(const tl_tasklet *h)
{
    const tl_tasklet *t = tl__slot(h);
    tl_runtime *rt = t ? t->rt : NULL;
    return rt && rt->magic == TL__MAGIC_RT ? rt : NULL;
}

const char *tl__tasklet_problem(const tl_tasklet *h, char *buf, size_t n)
{
    const tl_tasklet *t = tl__slot(h);
    int known = t && slot_runtime(h) &&
                (t->magic == TL__MAGIC_TASK || t->magic == TL__MAGIC_DEAD);
    int reused = known && t->magic == TL__MAGIC_TASK; /* a freed slot's other fields are poisoned */
    return tl__handle_problem("tasklet", "tl_tasklet_retain", t, known, reused, reused ? t->id : 0, buf,
                              n);
}

int tl__bad_tasklet(const tl_tasklet *h, const char *what)
{
    char why[200];
    tl_runtime *rt = slot_runtime(h);
    if (!rt)
        return TL_EMISUSE;
    return tl__seterr(rt, TL_EMISUSE, "%s: %s", what, tl__tasklet_problem(h, why, sizeof why));
}

/* The tasklet behind handle h, or NULL with the reason in the error of
 * the runtime h came from (when it can be told). */
static tl_tasklet *at(const tl_tasklet *h, const char *what)
{
    tl_tasklet *t = tl__tasklet_at(h);
    if (!t && h)
        tl__bad_tasklet(h, what);
    return t;
}

/* The same inside a tasklet: the reason is delivered to f (TL_EMISUSE),
 * as is a tasklet of another runtime. */
static tl_tasklet *op_target(tl_frame *f, const tl_tasklet *h, const char *what)
{
    char why[200];
    tl_tasklet *t = tl__tasklet_at(h);
    if (!t)
        tl__op_error(f, TL_EMISUSE, "%s: %s", what, tl__tasklet_problem(h, why, sizeof why));
    else if (t->rt != f->t->rt)
        tl__op_error(f, TL_EMISUSE, "%s: the tasklet belongs to another runtime", what);
    else
        return t;
    return NULL;
}

const char *tl__tasklet_label(const tl_tasklet *t, char *buf, size_t n)
{
    const char *name = t->ext && t->ext->name ? t->ext->name : NULL;
    const tl_func *fn = t->top ? t->top->fn->fn : NULL;
    int k = snprintf(buf, n, "tasklet #%llu", (unsigned long long)t->id);
    if (name && k >= 0 && (size_t)k < n)
        k += snprintf(buf + k, n - (size_t)k, " '%s'", name);
    if (fn && k >= 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, " in %s@%u", fn->name, fn->version);
    return buf;
}


void tl__deliver_error(tl_tasklet *t, int code, const char *msg)
{
    t->err = code;
    set_errmsg(t, msg);
    if (t->top && !(t->top->h.flags & TL__F_CATCH))
        t->top->h.flags |= TL__F_ERR;
}

/* Gives a value to t's resume point; an error value is delivered as an
 * error instead. */
void tl__deliver_value(tl_tasklet *t, tl__vw w)
{
    if (tl__vw_type(w) == TL_V_ERROR) {
        tl_value v = tl__vw_value(w);
        tl__deliver_error(t, v.aux, tl_error_msg(v));
        tl_release(v);
        return;
    }
    tl__vw_replace(&t->xfer, w);
}

tl_status tl__op_error(tl_frame *f, int code, const char *fmt, ...)
{
    tl_runtime *rt = f->t->rt;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rt->errmsg, sizeof rt->errmsg, fmt, ap);
    va_end(ap);
    rt->errcode = code;
    tl__deliver_error(f->t, code, rt->errmsg);
    return TL__CONT;
}

static void wake_joiners(tl_tasklet *t)
{
    if (!t->ext)
        return;
    tl__link *h = &t->ext->joiners;
    while (!tl__list_empty(h)) {
        tl_tasklet *j = TL__CONTAINER(h->next, tl_tasklet, w.link);
        tl__list_unlink(&j->w.link);
        j->w.on = 0;
        if (t->state == TL_DONE)
            tl_value_set(&j->xfer, tl_retain(t->xfer));
        else
            tl__deliver_error(j, t->err, t->ext->errmsg);
        tl__wake(j);
        t->refs--; /* the reference the joiner took; t is still alive here */
    }
}


/* The end of t: final state, joiners woken; with report, a failure is
 * reported to the host (tl_run returns it). */
static inline void end(tl_tasklet *t, int state, int err, bool report)
{
    tl_runtime *rt = t->rt;
    t->state = (uint8_t)state;
    tl__mark(rt, t);
    t->wait = TL_WAIT_NONE;
    t->err = state == TL_DONE ? TL_OK : err;
    rt->nlive--;
    wake_joiners(t);
    if (state == TL_FAILED && report && !rt->pending_fail) {
        char label[160];
        tl__tasklet_label(t, label, sizeof label);
        rt->pending_fail = err;
        rt->attention = 1;
        tl__seterr(rt, err, "%s failed: %s (%s)", label,
                   t->ext && t->ext->errmsg ? t->ext->errmsg : tl_strerror(err),
                   tl_errname(err));
    }
    tl_tasklet_release(t);
}

/* In main-tasklet mode: main's own end leaves the mode (its failure goes
 * to the host); another tasklet's failure goes to main. */
static __attribute__((noinline, cold)) void finish_main_mode(tl_tasklet *t, int state, int err)
{
    tl_runtime *rt = t->rt;
    if (t == rt->main) {
        rt->main = NULL;
        t->refs--; /* the mode's reference; the one for being alive remains */
        end(t, state, err, true);
        return;
    }
    t->refs++; /* kept for main_deliver */
    end(t, state, err, false);
    if (state == TL_FAILED)
        tl__main_deliver(rt, t);
    tl_tasklet_release(t);
}

static void finish(tl_tasklet *t, int state, int err)
{
    if (t->rt->main) {
        finish_main_mode(t, state, err);
        return;
    }
    bool watched = t->refs > 1 || (t->ext && !tl__list_empty(&t->ext->joiners));
    end(t, state, err, !watched);
}

/* The frame on top has been popped with t->err set: pass it on. */
static tl_status propagate(tl_tasklet *t)
{
    if (t->top) {
        if (!(t->top->h.flags & TL__F_CATCH))
            t->top->h.flags |= TL__F_ERR;
        return TL__AGAIN;
    }
    finish(t, t->err == TL_EKILLED ? TL_KILLED : TL_FAILED, t->err);
    return TL__SWITCH;
}

/* ---- entry points behind the macros ---- */

static __attribute__((noinline)) tl_status return_slow(tl_frame *f, tl__vw w)
{
    tl_tasklet *t = f->t;
    tl__vw_retain(w);
    tl__vw_replace(&t->xfer, w);
    frame_drop(t, true);
    if (t->top)
        return TL__AGAIN;
    finish(t, TL_DONE, TL_OK);
    return TL__SWITCH;
}

static __attribute__((noinline)) tl_status return_last(tl_tasklet *t)
{
    finish(t, TL_DONE, TL_OK);
    return TL__SWITCH;
}

tl_status tl__return_w(tl_frame *f, uint64_t head, uint64_t bits)
{
    tl_tasklet *t = f->t;
    const tl__fn *e = f->fn;
    tl__vw w = tl__vw_make(head, bits);
    /* f is t's top frame.  The short way: a scalar from a plain frame. */
    if (!e->plain || tl__vw_type(w) >= TL_V_STR || t->xfer.type >= TL_V_STR)
        return return_slow(f, w);
    tl_frame *parent = f->parent;
    tl__vw_store(&t->xfer, w);
    t->top = parent;
    ((tl__fn *)e)->live--;
    tl__slab_put_fast(&t->rt->frames[e->slab_class], f);
    return parent ? TL__AGAIN : return_last(t);
}

tl_status tl__unwind(tl_frame *f)
{
    tl_tasklet *t = f->t;
    tl_value_set(&t->xfer, tl_nil());
    frame_pop(t);
    return propagate(t);
}

tl_status tl__fail(tl_frame *f, int code, const char *msg)
{
    tl_tasklet *t = f->t;
    t->err = code < 0 ? code : TL_EINVAL;
    set_errmsg(t, msg ? msg : tl_strerror(t->err));
    return tl__unwind(f);
}

tl_status tl__bad_pc(tl_frame *f)
{
    if (f->h.flags & TL__F_PROBE) { /* tl_register asks: no such point */
        f->h.pc = 0;
        return TL__DONE;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "resume point %u is unknown to %s@%u",
             f->h.pc, f->fn->fn->name, f->fn->fn->version);
    return tl__fail(f, TL_EBADPC, msg);
}

tl_value tl__take(tl_frame *f)
{
    tl_value v = f->t->xfer;
    f->t->xfer = tl_nil();
    return v;
}

/* A call pushes the callee's frame and runs its step at once, nested in
 * the caller's C frame: a call that completes without suspending then
 * resumes the caller in place (TL__CONT), saving two trips through the
 * scheduler.  The C stack stays bounded: once direct calls have nested
 * DIRECT_STACK bytes below the scheduler's frame (rt->cstack), the
 * scheduler's flat loop takes over (TL__AGAIN).  Measuring the stack
 * rather than counting calls keeps stores off the call path. */
#define DIRECT_STACK 8192

/* Runs callee, just pushed over f, if the C stack allows. */
static inline tl_status run_callee(tl_runtime *rt, tl_frame *f, tl_frame *callee)
{
    if (rt->cstack - (uintptr_t)__builtin_frame_address(0) > DIRECT_STACK)
        return TL__AGAIN;
    tl_status s = callee->fn->step(callee, TL__LOCALS(callee));
    /* returned, or failed with the error flagged on f */
    return s == TL__AGAIN && f->t->top == f ? TL__CONT : s;
}

/* frame_push without a call out, for a plain function (tl__fn.plain)
 * whose frame is free in its slab and arguments of at most 16 bytes;
 * NULL otherwise. */
static inline tl_frame *push_plain(tl_runtime *rt, tl_tasklet *t, const tl__fn *e,
                                   const void *args, size_t argsize)
{
    if (!e->plain || argsize > e->fn->locals_size || argsize > 16)
        return NULL;
    tl__slab *slab = &rt->frames[e->slab_class]; /* plain: slab_class >= 0 */
    if (!slab->free)
        return NULL;
    tl_frame *f = tl__slab_get_fast(rt, slab);
    frame_head(f, t, e);
    size_t area = e->frame_size - sizeof(tl_frame); /* the locals, rounded to 16 */
    tl__word *w = TL__LOCALS(f);
    for (size_t i = 0; i < TL__PLAIN_LOCALS / 8 && i * 8 < area; i += 2) {
        w[i] = 0;
        w[i + 1] = 0;
    }
    copy_args(TL__LOCALS(f), args, argsize);
    t->top = f;
    return f;
}

/* A call the general way: any function (e: fn's entry, if known),
 * arguments checked. */
static __attribute__((noinline)) tl_status call_slow(tl_frame *f, const tl_func *fn,
                                                     const tl__fn *e, const void *args,
                                                     size_t argsize)
{
    tl_tasklet *t = f->t;
    tl_runtime *rt = t->rt;
    if (!e && fn)
        e = tl__fn_find(rt, fn);
    if (!e)
        return tl__op_error(f, TL_ENOFUNC, "call from %s@%u: function %s is not registered",
                            f->fn->fn->name, f->fn->fn->version, fn ? fn->name : "(null)");
    if (check_args(rt, e, args, argsize) != TL_OK)
        return tl__op_error(f, TL_EINVAL, "%s", rt->errmsg);
    tl_frame *callee = push_plain(rt, t, e, args, argsize);
    if (!callee)
        callee = frame_push(rt, t, e, args, argsize);
    if (!callee)
        return tl__op_error(f, TL_ENOMEM, "call %s@%u: out of memory for a frame",
                            fn->name, fn->version);
    return run_callee(rt, f, callee);
}

tl_status tl__call(tl_frame *f, const tl_func *fn, const void *args,
                   size_t argsize)
{
    return call_slow(f, fn, NULL, args, argsize);
}

tl_status tl__call_into(tl_frame *f, const tl_func *fn, const void *args,
                        size_t argsize, tl_value *dst)
{
    tl_tasklet *t = f->t;
    tl_runtime *rt = t->rt;
    const tl__fn *e = fn == rt->cache_key ? rt->cache_val : NULL;
    tl_frame *callee = e ? push_plain(rt, t, e, args, argsize) : NULL;
    tl_status s = callee ? run_callee(rt, f, callee) : call_slow(f, fn, e, args, argsize);
    return s == TL__CONT ? tl__land(f, dst) : s;
}

tl_status tl__join(tl_frame *f, tl_tasklet *h)
{
    tl_tasklet *t = f->t, *target = op_target(f, h, "join");
    if (!target)
        return TL__CONT;
    if (target == t)
        return tl__op_error(f, TL_ESELF, "join: a tasklet cannot join itself");
    if (target->state == TL_DONE) {
        tl_value_set(&t->xfer, tl_retain(target->xfer));
        return tl__cont(t->rt);
    }
    if (target->state >= TL_FAILED) {
        tl__deliver_error(t, target->err, target->ext ? target->ext->errmsg : NULL);
        return tl__cont(t->rt);
    }
    tl__ext *x = tl__ext_get(target);
    if (!x)
        return tl__op_error(f, TL_ENOMEM, "join: out of memory");
    target->refs++;
    tl__list_push_back(&x->joiners, &t->w.link);
    tl__mark(t->rt, target); /* its record lists its joiners */
    t->w.on = (uintptr_t)target;
    tl__block(t, TL_WAIT_JOIN);
    return TL__SWITCH;
}

int tl__selected(tl_frame *f)
{
    return f->t->ext ? f->t->ext->sel_fired : -1;
}

static void find_visit(void *obj, void *ud)
{
    struct { uint64_t id; tl_tasklet *found; } *q = ud;
    if (((tl_tasklet *)obj)->id == q->id)
        q->found = obj;
}

/* ---- public API ---- */

static int spawn(tl_runtime *rt, const tl__fn *e, const void *args,
                 size_t argsize, tl_tasklet **out)
{
    int rc = check_args(rt, e, args, argsize);
    if (rc != TL_OK)
        return rc;
    tl_tasklet *t = tl__slab_get(rt, &rt->tasklets);
    if (!t)
        return tl__seterr(rt, TL_ENOMEM, "tl_spawn: out of memory for a tasklet");
    tl__tasklet_clear(t);
    t->rt = rt;
    if (!frame_push(rt, t, e, args, argsize)) {
        tl__slab_put(&rt->tasklets, t);
        return tl__seterr(rt, TL_ENOMEM, "tl_spawn: out of memory for a frame");
    }
    t->magic = TL__MAGIC_TASK;
    t->id = ++rt->next_tid;
    t->refs = out ? 2 : 1;
    rt->nlive++;
    tl__note_tasklet(rt, t, 1);
    tl__runq_push_back(rt, t);
    if (out)
        *out = tl__tasklet_handle(t);
    return TL_OK;
}

int tl_spawn(tl_runtime *rt, const tl_func *fn, const void *args,
             size_t argsize, tl_tasklet **out)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    const tl__fn *e = fn ? tl__fn_find(rt, fn) : NULL;
    if (!e)
        return tl__seterr(rt, TL_ENOFUNC, "tl_spawn: function %s is not registered in "
                          "this runtime (call tl_register first)", fn && fn->name ? fn->name : "(null)");
    return spawn(rt, e, args, argsize, out);
}

int tl_spawn_by_name(tl_runtime *rt, const char *name, uint32_t version,
                     const void *args, size_t argsize, tl_tasklet **out)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    const tl_func *fn = tl_lookup(rt, name, version);
    if (!fn)
        return rt->errcode;
    return spawn(rt, tl__fn_find(rt, fn), args, argsize, out);
}

tl_tasklet *tl_current(tl_runtime *rt)
{
    return rt && rt->magic == TL__MAGIC_RT ? tl__tasklet_handle(rt->current) : NULL;
}

uint64_t tl_tasklet_id(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_id");
    return t ? t->id : 0;
}

tl_runtime *tl_tasklet_runtime(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_runtime");
    return t ? t->rt : NULL;
}

int tl_tasklet_state(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_state");
    return t ? t->state : TL_EMISUSE;
}

int tl_tasklet_wait(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_wait");
    return t ? t->wait : TL_EMISUSE;
}

int tl_tasklet_error(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_error");
    return t ? (t->state >= TL_FAILED ? t->err : TL_OK) : TL_EMISUSE;
}

const char *tl_tasklet_errmsg(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_errmsg");
    return t && t->ext && t->ext->errmsg ? t->ext->errmsg : "";
}

const tl_func *tl_tasklet_func(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_func");
    return t && t->top ? t->top->fn->fn : NULL;
}

size_t tl_tasklet_depth(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_depth");
    size_t n = 0;
    for (const tl_frame *f = t ? t->top : NULL; f; f = f->parent)
        n++;
    return n;
}

int tl_tasklet_result(tl_tasklet *h, tl_value *out)
{
    tl_tasklet *t = at(h, "tl_tasklet_result");
    if (!t)
        return TL_EMISUSE;
    if (!out)
        return tl__seterr(t->rt, TL_EMISUSE, "tl_tasklet_result: out is NULL");
    if (t->state != TL_DONE)
        return tl__seterr(t->rt, TL_ESTATE, "tl_tasklet_result: tasklet #%llu has not returned",
                          (unsigned long long)t->id);
    *out = tl_retain(t->xfer);
    return TL_OK;
}

int tl_tasklet_set_name(tl_tasklet *h, const char *name)
{
    tl_tasklet *t = at(h, "tl_tasklet_set_name");
    if (!t)
        return TL_EMISUSE;
    tl__ext *x = tl__ext_get(t);
    char *copy = name ? tl__strdup(t->rt, name) : NULL;
    if (!x || (name && !copy))
        return tl__seterr(t->rt, TL_ENOMEM, "tl_tasklet_set_name: out of memory");
    tl__strfree(t->rt, x->name);
    x->name = copy;
    tl__mark(t->rt, t);
    return TL_OK;
}

const char *tl_tasklet_name(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_name");
    return t && t->ext ? t->ext->name : NULL;
}

int tl_tasklet_set_userdata(tl_tasklet *h, void *ud)
{
    tl_tasklet *t = at(h, "tl_tasklet_set_userdata");
    if (!t)
        return TL_EMISUSE;
    tl__ext *x = tl__ext_get(t);
    if (!x)
        return tl__seterr(t->rt, TL_ENOMEM, "tl_tasklet_set_userdata: out of memory");
    x->userdata = ud;
    return TL_OK;
}

void *tl_tasklet_userdata(const tl_tasklet *h)
{
    const tl_tasklet *t = at(h, "tl_tasklet_userdata");
    return t && t->ext ? t->ext->userdata : NULL;
}

void tl__detach(tl_tasklet *t)
{
    tl_runtime *rt = t->rt;
    if (t->state == TL_RUNNABLE) {
        tl__runq_remove(rt, t);
        return;
    }
    if (t->state != TL_BLOCKED)
        return;
    switch (t->wait) {
    case TL_WAIT_SEND:
    case TL_WAIT_RECV:
    case TL_WAIT_SELECT:
        tl__chan_forget_waiter(t);
        break;
    case TL_WAIT_SLEEP:
        tl__timer_remove(rt, t);
        break;
    case TL_WAIT_JOIN:
        tl__list_unlink(&t->w.link);
        tl__mark(rt, (tl_tasklet *)t->w.on); /* one joiner fewer in its record */
        tl_tasklet_release((tl_tasklet *)t->w.on);
        break;
    case TL_WAIT_PAUSED:
    case TL_WAIT_RUN: /* in no queue, not counted as blocked */
        t->wait = TL_WAIT_NONE;
        return;
    default:
        break;
    }
    t->w.on = 0;
    t->wait = TL_WAIT_NONE;
    rt->nblocked--;
    tl_value_set(&t->xfer, tl_nil());
}

/* Out of the run queue by tl_tasklet_remove, or main inside
 * TL_RUN_SCHEDULER: not blocked in Stackless's sense. */

void tl__tasklet_depart(tl_tasklet *t, int code, const char *msg)
{
    t->refs++;
    tl__detach(t);
    while (t->top)
        frame_drop(t, false);
    set_errmsg(t, msg);
    finish(t, TL_KILLED, code);
    tl_tasklet_release(t);
}

/* Drops what a tasklet the loader built holds (its select block, its
 * frames), running no cleanup: its frames never ran in this process. */
static void drop_contents(tl_tasklet *t)
{
    tl__sel *sel = t->ext ? t->ext->sel : NULL;
    if (sel) {
        for (int i = 0; i < sel->n; i++)
            tl_value_set(&sel->cases[i].value, tl_nil());
        tl__free(t->rt, sel, sel->bytes);
        t->ext->sel = NULL;
    }
    while (t->top)
        frame_drop(t, false);
}

void tl__tasklet_scrap(tl_tasklet *t)
{
    if (t->w.link.next != &t->w.link && (t->wait == TL_WAIT_SEND || t->wait == TL_WAIT_RECV))
        tl__chan_forget_waiter(t);
    else if (t->w.link.next != &t->w.link)
        tl__list_unlink(&t->w.link);
    if (t->wait == TL_WAIT_SLEEP && t->w.on < t->rt->ntimers &&
        t->rt->timers[t->w.on].t == t)
        tl__timer_remove(t->rt, t);
    drop_contents(t);
    tasklet_free(t);
}

/* ---- for the tasklet operations (stackless.c) ---- */

tl_tasklet *tl__tasklet_checked(const tl_tasklet *h, const char *what) { return at(h, what); }
tl_tasklet *tl__op_target(tl_frame *f, const tl_tasklet *h, const char *what)
{
    return op_target(f, h, what);
}
void tl__finish(tl_tasklet *t, int state, int err) { finish(t, state, err); }
void tl__frame_pop(tl_tasklet *t) { frame_pop(t); }
void tl__set_errmsg(tl_tasklet *t, const char *msg) { set_errmsg(t, msg); }

/* ---- frames, from inside ---- */

tl_tasklet *tl_frame_tasklet(const tl_frame *f) { return f ? tl__tasklet_handle(f->t) : NULL; }
tl_runtime *tl_frame_runtime(const tl_frame *f) { return f ? f->t->rt : NULL; }
const tl_func *tl_frame_func(const tl_frame *f) { return f ? f->fn->fn : NULL; }

void tl_frame_catch(tl_frame *f, int on)
{
    if (!f)
        return;
    if (on)
        f->h.flags |= TL__F_CATCH;
    else
        f->h.flags &= ~TL__F_CATCH;
}

int tl_frame_error(tl_frame *f)
{
    if (!f)
        return TL_EMISUSE;
    int err = f->t->err;
    f->t->err = TL_OK;
    return err;
}

const char *tl_frame_errmsg(const tl_frame *f)
{
    if (!f || !f->t->ext || !f->t->ext->errmsg)
        return "";
    return f->t->ext->errmsg;
}

tl_tasklet *tl_tasklet_find(tl_runtime *rt, uint64_t id)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return NULL;
    struct { uint64_t id; tl_tasklet *found; } q = {id, NULL};
    tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, find_visit, &q);
    if (!q.found)
        tl__seterr(rt, TL_ENOENT, "no tasklet #%llu in this runtime", (unsigned long long)id);
    return tl__tasklet_handle(q.found);
}

/* ---- teardown ---- */

static void kill_visit(void *obj, void *ud)
{
    tl_tasklet *t = obj;
    (void)ud;
    if (t->state < TL_DONE)
        tl_kill_now(t);
}

static void free_visit(void *obj, void *ud)
{
    tl_tasklet *t = obj;
    (void)ud;
    tl_value_set(&t->xfer, tl_nil());
    if (t->ext) {
        tl__strfree(t->rt, t->ext->name);
        tl__strfree(t->rt, t->ext->errmsg);
    }
}

/* Kills every tasklet (cleanups run), then frees what tasklets and
 * channels own.  Channels go before the tasklet slabs: buffered values may
 * refer to tasklets, whose headers must still be readable then. */
/* After a failed load: drop what a half-built tasklet holds, running no
 * cleanup (its frames never ran in this process). */
static void reset_visit(void *obj, void *ud)
{
    drop_contents(obj);
    free_visit(obj, ud);
}

void tl__runtime_reset(tl_runtime *rt)
{
    rt->tearing_down = 1;
    tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, reset_visit, NULL);
    tl__chan_free_all(rt);
    /* tasklet and channel slots stay: handles to them stay checkable */
    tl__slab_clear(&rt->tasklets);
    tl__slab_clear(&rt->chan_slab);
    tl__slab_destroy(rt, &rt->exts);
    for (int i = 0; i < TL__FRAME_CLASSES; i++)
        tl__slab_destroy(rt, &rt->frames[i]);
    tl__slab_init(&rt->exts, sizeof(tl__ext));
    for (int i = 0; i < TL__FRAME_CLASSES; i++)
        tl__slab_init(&rt->frames[i], (size_t)(i + 1) * 16);
    tl__list_init(&rt->runq);
    rt->nrunnable = rt->nblocked = rt->nlive = 0;
    rt->ntimers = 0;
    rt->dmap_lost = 1;
    for (int i = 0; i < TL__LAYERS; i++)
        if (rt->layers[i].ops && rt->layers[i].ops->on_reset)
            rt->layers[i].ops->on_reset(rt, rt->layers[i].state);
    rt->current = rt->last = rt->main = NULL;
    rt->tearing_down = 0;
}

void tl__tasklet_free_all(tl_runtime *rt)
{
    rt->current = NULL;
    tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, kill_visit, NULL);
    rt->tearing_down = 1;
    tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, free_visit, NULL);
    tl__chan_free_all(rt);
    tl__slab_destroy(rt, &rt->chan_slab);
    tl__slab_destroy(rt, &rt->tasklets);
    tl__slab_destroy(rt, &rt->exts);
    for (int i = 0; i < TL__FRAME_CLASSES; i++)
        tl__slab_destroy(rt, &rt->frames[i]);
}
