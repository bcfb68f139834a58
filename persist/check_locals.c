/*
 * check_locals.c -- the codec half of check mode (TL_CHECK=locals).
 *
 * In check mode the scheduler (src/sched.c) treats every resumption as a
 * restart: it overwrites the C stack the step function will use, and,
 * through the hook tl__check_codec that this file registers, it writes
 * the frame about to run out through the snapshot codec and reads it
 * back, as a restore would: the schema fields come back
 * (references to the same live channels and tasklets), every other byte
 * of the locals is zero, a select's cases survive only into the resume
 * point of that select.  A program that keeps state outside its schema
 * misbehaves at the first resumption instead of after a crash.
 *
 * Layering: core may not call persist, so persist registers the hook once
 * per process from a constructor; core calls it only when set.
 * Invariants: on failure the frame is untouched; on success it holds the
 * decoded locals and the references of the old ones are released.
 */
#include "decode.h"

#include <msgpack.h>
#include <string.h>

/* The live objects a frame's locals refer to, so that the decoder resolves
 * ids without a search of the runtime. */
typedef struct liveset {
    tl_runtime *rt;
    struct { uint64_t id; void *obj; int chan; } *v;
    size_t n, cap;
    int oom;
} liveset;

static void live_add(liveset *s, int chan, void *handle)
{
    void *obj = chan ? (void *)tl__chan_at(handle) : (void *)tl__tasklet_at(handle);
    if (!obj) /* NULL or stale: encoded as nil or as stale, not by id */
        return;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? 2 * s->cap : 8;
        void *nv = tl__realloc(s->rt, s->v, s->cap * sizeof *s->v, ncap * sizeof *s->v);
        if (!nv) {
            s->oom = 1;
            return;
        }
        s->v = nv;
        s->cap = ncap;
    }
    s->v[s->n].id = chan ? ((tl_chan *)obj)->id : ((tl_tasklet *)obj)->id;
    s->v[s->n].obj = obj;
    s->v[s->n++].chan = chan;
}

static void live_value(liveset *s, tl_value v, int depth)
{
    if (depth > 16)
        return;
    switch (v.type) {
    case TL_V_CHAN: live_add(s, 1, tl_as_chan(v)); break;
    case TL_V_TASKLET: live_add(s, 0, tl_as_tasklet(v)); break;
    case TL_V_ARRAY:
        for (size_t i = 0; i < tl_len(v); i++)
            live_value(s, tl_array_at(v, i), depth + 1);
        break;
    case TL_V_MAP:
        for (size_t i = 0; i < tl_len(v); i++) {
            live_value(s, tl_map_key(v, i), depth + 1);
            live_value(s, tl_map_val(v, i), depth + 1);
        }
        break;
    default: break;
    }
}

static void live_collect(liveset *s, const tl_func *fn, const char *locals)
{
    for (size_t i = 0; i < fn->nfields; i++) {
        const void *p = locals + fn->fields[i].offset;
        switch (fn->fields[i].type) {
        case TL_T_CHAN: live_add(s, 1, *(tl_chan *const *)p); break;
        case TL_T_TASKLET: live_add(s, 0, *(tl_tasklet *const *)p); break;
        case TL_T_VALUE: live_value(s, *(const tl_value *)p, 0); break;
        default: break;
        }
    }
}

static void *live_find(void *ud, int chan, uint64_t id)
{
    liveset *s = ud;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].id == id && s->v[i].chan == chan)
            return s->v[i].obj;
    return NULL;
}

/* Drops the references the schema fields of locals own (a stale handle
 * owns none: passing it on would only overwrite the runtime's message). */
static void release_refs(const tl_func *fn, char *locals)
{
    for (size_t i = 0; i < fn->nfields; i++) {
        void *p = locals + fn->fields[i].offset;
        switch (fn->fields[i].type) {
        case TL_T_VALUE: tl_release(*(tl_value *)p); break;
        case TL_T_CHAN: if (tl__chan_at(*(tl_chan **)p)) tl_chan_release(*(tl_chan **)p); break;
        case TL_T_TASKLET:
            if (tl__tasklet_at(*(tl_tasklet **)p))
                tl_tasklet_release(*(tl_tasklet **)p);
            break;
        default: break;
        }
    }
}

/* A restore brings a select's cases back while it waits: the frame about
 * to resume at a select point keeps them, every other frame loses them. */
static void keep_cases(const tl_frame *f, const char *old, char *fresh)
{
    const tl__fn *e = f->fn;
    if (f != f->t->top || f->h.pc == 0 || f->h.pc > e->npoints ||
        e->shape[f->h.pc - 1] != TL__K_SELECT)
        return;
    for (size_t i = 0; i < e->fn->nfields; i++) {
        const tl_field *fd = &e->fn->fields[i];
        if (fd->type == TL_T_CASES)
            memcpy(fresh + fd->offset, old + fd->offset, fd->size);
    }
}

/* Decodes the packed locals of f into fresh (zeroed). */
static int decode_into(tl_runtime *rt, const tl_frame *f, const tl__buf *b, liveset *live,
                       char *fresh)
{
    tl__loader ld;
    msgpack_unpacked up;
    size_t off = 0;
    memset(&ld, 0, sizeof ld);
    ld.rt = rt;
    ld.where = "check mode (TL_CHECK=locals)";
    ld.format = TL_FORMAT_VERSION;
    ld.resolve = live_find;
    ld.resolve_ud = live;
    msgpack_unpacked_init(&up);
    int rc = msgpack_unpack_next(&up, b->p, b->len, &off) == MSGPACK_UNPACK_SUCCESS
                 ? tl__dec_locals_own(&ld, f->fn, &up.data, fresh)
                 : tl__corrupt(&ld, "the locals did not decode");
    msgpack_unpacked_destroy(&up);
    return rc;
}

static int recode_frame(tl_runtime *rt, tl_frame *f)
{
    const tl_func *fn = f->fn->fn;
    size_t size = fn->locals_size;
    liveset live = {rt, NULL, 0, 0, 0};
    tl__buf b;
    msgpack_packer pk;
    char *fresh = tl__calloc(rt, size ? size : 1);
    tl__buf_init(&b, rt);
    msgpack_packer_init(&pk, &b, tl__buf_write);
    live_collect(&live, fn, TL__LOCALS(f));
    int rc = !fresh || live.oom ? tl__seterr(rt, TL_ENOMEM, "check mode: out of memory")
                                : tl__enc_locals(&pk, f);
    if (rc == TL_OK && b.oom)
        rc = tl__seterr(rt, TL_ENOMEM, "check mode: out of memory");
    if (rc == TL_OK)
        rc = decode_into(rt, f, &b, &live, fresh);
    if (rc == TL_OK) {
        keep_cases(f, TL__LOCALS(f), fresh);
        release_refs(fn, TL__LOCALS(f));
        memcpy(TL__LOCALS(f), fresh, size);
    } else if (fresh) {
        release_refs(fn, fresh); /* what decoded before the failure */
    }
    tl__free(rt, fresh, size ? size : 1);
    tl__free(rt, live.v, live.cap * sizeof *live.v);
    tl__buf_free(&b);
    return rc;
}

/* The frame of t about to run out through the codec and back.  Only the
 * top frame: a frame below it cannot run (or be changed: nothing outside
 * the schema points into locals) until it is on top, and then it goes
 * through the codec before it resumes.  So every frame is restored before
 * each of its resumptions, at a cost independent of the depth (every
 * frame at each step made a million-deep recursion quadratic). */
static int check_recode(tl_runtime *rt, tl_tasklet *t)
{
    return recode_frame(rt, t->top);
}

/* Pulled into every static link of the build (meson.build), so that the
 * constructor below runs even in a program that calls no persist API. */
const int tl__check_locals_linked = 1;

__attribute__((constructor)) static void check_register(void)
{
    tl__check_codec = check_recode;
}
