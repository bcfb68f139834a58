/*
 * decode_tasklet.c -- a tasklet record.
 *
 * [id, state, wait, err, extrefs, on, xfer, frames, extra] (FORMAT.md 4):
 * the state and wait are checked for consistency, the frames pushed
 * (decode_frame.c), then the extra map (name, error message, select,
 * joiners, queue number) and what the tasklet waits on: a channel (linked from the
 * channel's queue record, or at once on import), a joinee, a deadline.
 * Invariants: a record fills a shell exactly once; an ended tasklet has
 * no frames and a live one has some; a select's cases lie inside the top
 * frame's locals, aligned, overlapping no field; joiners are linked only
 * once every tasklet exists (decode_finish.c).
 */
#include "decode.h"

#include <stdio.h>

/* ---- pass 3: tasklets ---- */

/* Format 1: where a select's n cases lie in the top frame's locals: at
 * byte offset at (the writer's ABI), inside the locals, aligned for
 * tl_case and over no schema field but a TL_T_CASES one (a field written
 * there would alias a case).  NULL with the error set. */
static tl_case *select_cases_at(tl__loader *ld, tl_tasklet *t, uint64_t at, uint32_t n)
{
    const tl_func *fn = t->top->fn->fn;
    size_t size = fn->locals_size;
    if (at > size || n * sizeof(tl_case) > size - at || at % _Alignof(tl_case)) {
        tl__corrupt(ld, "tasklet #%llu: select cases outside the frame",
                    (unsigned long long)t->id);
        return NULL;
    }
    uint64_t hi = at + n * sizeof(tl_case);
    for (size_t i = 0; i < fn->nfields; i++)
        if (fn->fields[i].type != TL_T_CASES && fn->fields[i].offset < hi &&
            at < (uint64_t)fn->fields[i].offset + fn->fields[i].size) {
            tl__corrupt(ld, "tasklet #%llu: select cases overlap field '%s'",
                        (unsigned long long)t->id, fn->fields[i].name);
            return NULL;
        }
    return (tl_case *)(void *)((char *)TL__LOCALS(t->top) + at);
}

/* Format 2: the n cases are the program's TL_T_CASES field of that name,
 * wherever its ABI puts it.  NULL with the error set. */
static tl_case *select_cases_in(tl__loader *ld, tl_tasklet *t, const msgpack_object *name,
                                uint32_t n)
{
    const tl_func *fn = t->top->fn->fn;
    for (size_t i = 0; i < fn->nfields; i++) {
        const tl_field *fd = &fn->fields[i];
        if (!str_is(name, fd->name))
            continue;
        if (fd->type == TL_T_CASES && n * sizeof(tl_case) <= fd->size)
            return (tl_case *)(void *)((char *)TL__LOCALS(t->top) + fd->offset);
        break;
    }
    tl__seterr(ld->rt, TL_ESCHEMA, "%s: tasklet #%llu waits in a select on %u cases in field "
               "'%.*s', which %s@%u lacks (or not as a TL_T_CASES field of %u cases or more); "
               "register an upgrade or a new version", ld->where, (unsigned long long)t->id, n,
               (int)name->via.str.size, name->via.str.ptr, fn->name, fn->version, n);
    return NULL;
}

/* One case [chan id, op, value] into *c. */
static int dec_case(tl__loader *ld, tl_tasklet *t, const msgpack_object *o, tl_case *c)
{
    const msgpack_object *a = o->via.array.ptr;
    if ((!is_array(o, 3) && !is_array(o, 4)) || !is_uint(&a[0]) || !is_uint(&a[1]) ||
        (a[1].via.u64 != TL_OP_SEND && a[1].via.u64 != TL_OP_RECV))
        return tl__corrupt(ld, "tasklet #%llu: bad select case", (unsigned long long)t->id);
    tl_chan *ch = tl__ld_chan(ld, a[0].via.u64);
    if (!ch)
        return ld->rt->errcode;
    c->ch = tl__chan_handle(ch);
    c->op = (int)a[1].via.u64;
    return tl__dec_value(ld, &a[2], &c->value, 0);
}

/* A case's optional 4th item, its queue number (format 2). */
static int dec_case_number(tl__loader *ld, tl_tasklet *t, const msgpack_object *o, int i)
{
    tl__selw *w = &t->ext->sel->ws[i];
    w->w.on = (uintptr_t)tl__slot(t->ext->sel->cases[i].ch) | 1;
    return o->via.array.size == 4 ? tl__ld_number(ld, &w->w, &o->via.array.ptr[3]) : TL_OK;
}

/* extra.sel: {"field": the TL_T_CASES field (format 1: "at", its byte
 * offset), "cases": [...]} */
static int dec_select(tl__loader *ld, tl_tasklet *t, const msgpack_object *sel)
{
    const msgpack_object *at = map_get(sel, "at"), *cases = map_get(sel, "cases");
    const msgpack_object *field = map_get(sel, "field");
    bool v1 = ld->format == 1;
    if ((v1 ? !at || !is_uint(at) : !field || field->type != MSGPACK_OBJECT_STR) || !cases ||
        !is_array(cases, UINT32_MAX) || cases->via.array.size < 1 ||
        cases->via.array.size > TL_SELECT_MAX || !t->top)
        return tl__corrupt(ld, "tasklet #%llu: bad select", (unsigned long long)t->id);
    uint32_t n = cases->via.array.size;
    tl_case *cs = v1 ? select_cases_at(ld, t, at->via.u64, n) : select_cases_in(ld, t, field, n);
    if (!cs)
        return ld->rt->errcode;
    if (!tl__sel_new(ld->rt, t, cs, (int)n))
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (uint32_t i = 0; i < n; i++) {
        int rc = dec_case(ld, t, &cases->via.array.ptr[i], &cs[i]);
        if (rc == TL_OK)
            rc = dec_case_number(ld, t, &cases->via.array.ptr[i], (int)i);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

/* extra.joiners: linked once every tasklet exists (decode_finish.c). */
static int dec_joiners(tl__loader *ld, tl_tasklet *t, const msgpack_object *js)
{
    for (uint32_t j = 0; js && is_array(js, UINT32_MAX) && j < js->via.array.size; j++) {
        if (!is_uint(&js->via.array.ptr[j]))
            return tl__corrupt(ld, "tasklet #%llu: bad joiner", (unsigned long long)t->id);
        void *v = ld->joins;
        int rc = tl__ld_room(ld, &v, &ld->capjoins, ld->njoins, sizeof *ld->joins, 16);
        ld->joins = v;
        if (rc != TL_OK)
            return rc;
        ld->joins[ld->njoins++] = (tl__joinrec){t, js->via.array.ptr[j].via.u64};
    }
    return TL_OK;
}

/* A copy of a string item (at most 255 bytes), or NULL if o is none. */
static char *dup_str(tl__loader *ld, const msgpack_object *o)
{
    char buf[256];
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    snprintf(buf, sizeof buf, "%.*s", (int)o->via.str.size, o->via.str.ptr);
    return tl__strdup(ld->rt, buf);
}

/* extra.fired, the case of the last select that fired (-1: none), which
 * TL_SELECT hands the program as an index into its cases: below its number
 * of cases for a tasklet waiting in a select (the record lists them), and
 * below TL_SELECT_MAX otherwise (a select that ended left no record of its
 * cases: like any local, the value is as trustworthy as its sender). */
static int dec_fired(tl__loader *ld, tl_tasklet *t, const msgpack_object *fired)
{
    int64_t i = fired && is_int(fired) ? as_int(fired) : -1;
    int n = t->ext->sel ? t->ext->sel->n : TL_SELECT_MAX;
    if ((fired && !is_int(fired)) || i < -1 || i >= n)
        return tl__corrupt(ld, "tasklet #%llu: the fired select case is not one of its %d "
                           "cases", (unsigned long long)t->id, n);
    t->ext->sel_fired = (int)i;
    return TL_OK;
}

/* The 9th item of a tasklet record: nil or {"name", "msg", "fired",
 * "joiners", "sel"}, each optional (sel required when waiting in a select). */
static int dec_extra(tl__loader *ld, tl_tasklet *t, const msgpack_object *x)
{
    if (x->type == MSGPACK_OBJECT_NIL)
        return TL_OK;
    if (x->type != MSGPACK_OBJECT_MAP)
        return tl__corrupt(ld, "tasklet #%llu: bad extra", (unsigned long long)t->id);
    if (map_get(x, "q") && x->via.map.size == 1)
        return TL_OK; /* a queue number alone: no tl__ext (dec_wait reads it) */
    tl__ext *e = tl__ext_get(t);
    if (!e)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    const msgpack_object *sel = map_get(x, "sel");
    e->name = dup_str(ld, map_get(x, "name"));
    e->errmsg = dup_str(ld, map_get(x, "msg"));
    int rc = dec_joiners(ld, t, map_get(x, "joiners"));
    if (rc == TL_OK && t->wait == TL_WAIT_SELECT)
        rc = sel ? dec_select(ld, t, sel) : tl__corrupt(ld, "tasklet #%llu: select without "
                                                        "cases", (unsigned long long)t->id);
    return rc == TL_OK ? dec_fired(ld, t, map_get(x, "fired")) : rc;
}

static int check_state(tl__loader *ld, tl_tasklet *t, uint64_t state, uint64_t wait, size_t nframes)
{
    bool ended = state >= TL_DONE && state <= TL_KILLED;
    if ((state != TL_RUNNABLE && state != TL_BLOCKED && !ended) || wait > TL_WAIT_JOIN ||
        (state == TL_BLOCKED) != (wait != TL_WAIT_NONE) || ended == (nframes > 0))
        return tl__corrupt(ld, "tasklet #%llu has an impossible state", (unsigned long long)t->id);
    return TL_OK;
}

static int dec_wait(tl__loader *ld, tl_tasklet *t, const msgpack_object *on,
                    const msgpack_object *extra)
{
    switch (t->wait) {
    case TL_WAIT_SEND:
    case TL_WAIT_RECV:
    {
        tl_chan *ch = is_uint(on) ? tl__ld_chan(ld, on->via.u64) : NULL;
        if (!ch)
            return is_uint(on) ? ld->rt->errcode
                               : tl__corrupt(ld, "tasklet #%llu: bad wait",
                                             (unsigned long long)t->id);
        if (!ld->import) { /* linked from the queue side; the checks see to it */
            const msgpack_object *q = map_get(extra, "q");
            t->w.on = (uintptr_t)ch;
            return q ? tl__ld_number(ld, &t->w, q) : TL_OK;
        }
        int op = t->wait == TL_WAIT_SEND ? TL_OP_SEND : TL_OP_RECV;
        if (ch->remote) {
            tl__proxy_enqueue(ch, t, op);
        } else {
            t->w.on = (uintptr_t)ch;
            tl__chan_enqueue(ch, &t->w, op);
            tl__note_queued(ld->rt, &t->w); /* at the tail: a fresh number */
        }
        return TL_OK;
    }
    case TL_WAIT_JOIN: {
        tl_tasklet *joinee = is_uint(on) ? tl__ld_tasklet(ld, on->via.u64) : NULL;
        if (!joinee)
            return is_uint(on) ? ld->rt->errcode
                               : tl__corrupt(ld, "tasklet #%llu: bad wait",
                                             (unsigned long long)t->id);
        t->w.on = (uintptr_t)joinee; /* linked with the joinee's list */
        return TL_OK;
    }
    case TL_WAIT_SLEEP:
        if (!is_int(on))
            return tl__corrupt(ld, "tasklet #%llu sleeps without a deadline",
                               (unsigned long long)t->id);
        return tl__timer_add(ld->rt, t, as_int(on)) == TL_OK
                   ? TL_OK : tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    default:
        return TL_OK;
    }
}

int tl__dec_tasklet(tl__loader *ld, tl__doc *d, const msgpack_object *o)
{
    const msgpack_object *a = o->via.array.ptr;
    if (!is_array(o, 9) || !is_uint(&a[0]))
        return tl__corrupt(ld, "a tasklet record in chunk %llu is malformed",
                           (unsigned long long)d->key);
    tl_tasklet *t = tl__ld_tasklet(ld, a[0].via.u64);
    if (!t)
        return ld->rt->errcode;
    if (t->state != 0)
        return tl__corrupt(ld, "tasklet #%llu appears twice", (unsigned long long)t->id);
    if (!is_uint(&a[1]) || !is_uint(&a[2]) || !is_int(&a[3]) || !is_array(&a[7], UINT32_MAX))
        return tl__corrupt(ld, "tasklet #%llu: malformed record", (unsigned long long)t->id);
    int rc = check_state(ld, t, a[1].via.u64, a[2].via.u64, a[7].via.array.size);
    if (rc != TL_OK)
        return rc;
    if (ld->import && (a[1].via.u64 >= TL_DONE || a[2].via.u64 == TL_WAIT_SELECT ||
                       a[2].via.u64 == TL_WAIT_JOIN))
        return tl__corrupt(ld, "a moving tasklet must be runnable, or blocked in a send, "
                           "receive or sleep");
    t->state = (uint8_t)a[1].via.u64;
    t->wait = (uint8_t)a[2].via.u64;
    t->err = (int32_t)as_int(&a[3]);
    for (uint32_t i = 0; i < a[7].via.array.size && rc == TL_OK; i++)
        rc = tl__dec_frame(ld, d, t, &a[7].via.array.ptr[i]);
    if (rc == TL_OK)
        rc = tl__dec_value(ld, &a[6], &t->xfer, 0);
    if (rc == TL_OK)
        rc = dec_extra(ld, t, &a[8]);
    if (rc == TL_OK && t->wait == TL_WAIT_SELECT && !(t->ext && t->ext->sel))
        rc = tl__corrupt(ld, "tasklet #%llu waits in a select without its cases",
                         (unsigned long long)t->id);
    if (rc == TL_OK)
        rc = dec_wait(ld, t, &a[5], &a[8]);
    return rc;
}
