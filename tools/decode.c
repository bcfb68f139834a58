/*
 * decode.c -- the documents of FORMAT.md sections 3-5, one decoder per
 * record type: head, function, field, frame, locals, tasklet (and its
 * `on`, frames and `extra`), select, tasklet chunk, channel, waiter list,
 * channel chunk.
 *
 * Each decoder checks the shape the spec gives (array lengths, item
 * types, ranges, ids sorted and in their chunk, func indexes in range,
 * locals matching their schema) and fills a struct that points into the
 * document.  Facts that need more than one document (references between
 * chunks, counts against the head) are checked by `tasklet verify`.
 * Unknown keys of maps are ignored, as the spec asks of readers.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static const char *const ftype_names[] = {
    "bool", "i32", "i64", "u32", "u64", "f64", "value", "chan", "tasklet", "bytes",
    "cases", /* format 2: a select's case array, saved as nil (its cases are in extra.sel) */
};

const char *cli_ftype_name(cli_ftype t)
{
    return (unsigned)t < sizeof ftype_names / sizeof *ftype_names ? ftype_names[t] : "?";
}

/* ---- typed items ---- */

static int want_array(const msgpack_object *o, uint32_t n, const char *what, cli_err *e)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return cli_fail(e, "%s is a %s, not an array", what, cli_mp_typename(o));
    if (n != UINT32_MAX && o->via.array.size != n)
        return cli_fail(e, "%s has %u items, not %u", what, o->via.array.size, n);
    return 0;
}

static int want_str(const msgpack_object *o, cli_str *s, const char *what, cli_err *e)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return cli_fail(e, "%s is a %s, not a str", what, cli_mp_typename(o));
    s->p = o->via.str.ptr;
    s->n = o->via.str.size;
    return 0;
}

static int want_uint(const msgpack_object *o, uint64_t *u, const char *what, cli_err *e)
{
    if (!cli_mp_uint(o, u))
        return cli_fail(e, "%s is a %s, not a uint", what, cli_mp_typename(o));
    return 0;
}

static int want_int(const msgpack_object *o, int64_t *i, const char *what, cli_err *e)
{
    if (!cli_mp_int(o, i))
        return cli_fail(e, "%s is a %s, not an int64", what, cli_mp_typename(o));
    return 0;
}

static int want_key(const msgpack_object *m, const char *key, const msgpack_object **out,
                    cli_err *e)
{
    *out = cli_mp_get(m, key);
    if (!*out)
        return cli_fail(e, "no \"%s\" key", key);
    return 0;
}

/* An array under key whose items all have type `item`. */
static int want_list(const msgpack_object *m, const char *key, msgpack_object_type item,
                     const msgpack_object **out, cli_err *e)
{
    if (want_key(m, key, out, e) < 0 || want_array(*out, UINT32_MAX, key, e) < 0)
        return -1;
    for (uint32_t i = 0; i < (*out)->via.array.size; i++)
        if ((*out)->via.array.ptr[i].type != item)
            return cli_fail(e, "%s[%u] is a %s", key, i,
                            cli_mp_typename(&(*out)->via.array.ptr[i]));
    return 0;
}

/* ---- the head (section 3) ---- */

static int head_str(const msgpack_object *m, const char *key, cli_str *s, cli_err *e)
{
    const msgpack_object *o;
    return want_key(m, key, &o, e) < 0 ? -1 : want_str(o, s, key, e);
}

static int head_uint(const msgpack_object *m, const char *key, uint64_t *u, cli_err *e)
{
    const msgpack_object *o;
    return want_key(m, key, &o, e) < 0 ? -1 : want_uint(o, u, key, e);
}

static int head_identity(const msgpack_object *m, cli_head *h, cli_err *e)
{
    if (head_str(m, "magic", &h->magic, e) < 0)
        return -1;
    if (h->magic.n != 10 || memcmp(h->magic.p, "libtasklet", 10))
        return cli_fail(e, "magic is not \"libtasklet\"");
    if (head_uint(m, "format", &h->format, e) < 0)
        return -1;
    if (h->format > CLI_FORMAT_VERSION)
        return cli_fail(e, "format %llu is newer than this tool reads (%d); use a newer tasklet",
                        (unsigned long long)h->format, CLI_FORMAT_VERSION);
    if (h->format < 1)
        return cli_fail(e, "format 0 does not exist");
    return 0;
}

int cli_decode_head(cli_doc *doc, cli_head *h, cli_err *e)
{
    const msgpack_object *m = &doc->up.data, *time;
    memset(h, 0, sizeof *h);
    h->map = m;
    if (m->type != MSGPACK_OBJECT_MAP)
        return cli_fail(e, "head is a %s, not a map", cli_mp_typename(m));
    if (head_identity(m, h, e) < 0 || head_str(m, "lib", &h->lib, e) < 0
        || head_str(m, "node", &h->node, e) < 0 || want_key(m, "time", &time, e) < 0
        || want_int(time, &h->time, "time", e) < 0
        || head_uint(m, "next_tid", &h->next_tid, e) < 0
        || head_uint(m, "next_cid", &h->next_cid, e) < 0
        || head_uint(m, "ntasklets", &h->ntasklets, e) < 0
        || head_uint(m, "nchans", &h->nchans, e) < 0
        || want_list(m, "needs", MSGPACK_OBJECT_STR, &h->needs, e) < 0
        || want_list(m, "runq", MSGPACK_OBJECT_POSITIVE_INTEGER, &h->runq, e) < 0)
        return cli_wrap(e, "head");
    return 0;
}

/* ---- functions and their schemas (section 4, "funcs") ---- */

static int decode_field(const msgpack_object *o, cli_field *f, cli_err *e)
{
    cli_str type = {NULL, 0};
    if (want_array(o, 2, "field", e) < 0
        || want_str(&o->via.array.ptr[0], &f->name, "field name", e) < 0
        || want_str(&o->via.array.ptr[1], &type, "field type", e) < 0)
        return -1;
    for (size_t i = 0; i < sizeof ftype_names / sizeof *ftype_names; i++)
        if (strlen(ftype_names[i]) == type.n && !memcmp(ftype_names[i], type.p, type.n)) {
            f->type = (cli_ftype)i;
            return 0;
        }
    return cli_fail(e, "field \"%.*s\" has unknown type \"%.*s\"", (int)f->name.n,
                    f->name.p, (int)type.n, type.p);
}

static int str_cmp(const char *a, uint32_t an, const char *b, uint32_t bn)
{
    uint32_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (an > bn) - (an < bn);
}

static int field_cmp(const void *a, const void *b)
{
    const cli_field *x = *(const cli_field *const *)a, *y = *(const cli_field *const *)b;
    return str_cmp(x->name.p, x->name.n, y->name.p, y->name.n);
}

static const cli_field *func_field(const cli_func *f, const char *name, uint32_t n)
{
    size_t lo = 0, hi = f->nfields;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const cli_field *x = f->by_name[mid];
        int c = str_cmp(name, n, x->name.p, x->name.n);
        if (c == 0)
            return x;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int index_fields(cli_doc *doc, cli_func *f, cli_err *e)
{
    f->by_name = cli_doc_alloc(doc, f->nfields, sizeof *f->by_name);
    for (uint32_t i = 0; i < f->nfields; i++)
        f->by_name[i] = &f->fields[i];
    qsort(f->by_name, f->nfields, sizeof *f->by_name, field_cmp);
    for (uint32_t i = 1; i < f->nfields; i++)
        if (field_cmp(&f->by_name[i - 1], &f->by_name[i]) == 0)
            return cli_fail(e, "field \"%.*s\" appears twice", (int)f->by_name[i]->name.n,
                            f->by_name[i]->name.p);
    return 0;
}

static int decode_func(cli_doc *doc, const msgpack_object *o, cli_func *f, cli_err *e)
{
    const msgpack_object *fields;
    bool shaped = o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4; /* format 2 */
    if ((!shaped && want_array(o, 3, "function", e) < 0)
        || (shaped && want_str(&o->via.array.ptr[3], &f->shape, "function shape", e) < 0)
        || want_str(&o->via.array.ptr[0], &f->name, "function name", e) < 0
        || want_uint(&o->via.array.ptr[1], &f->version, "function version", e) < 0)
        return -1;
    fields = &o->via.array.ptr[2];
    if (want_array(fields, UINT32_MAX, "fields", e) < 0)
        return -1;
    f->nfields = fields->via.array.size;
    f->fields = cli_doc_alloc(doc, f->nfields, sizeof *f->fields);
    for (uint32_t i = 0; i < f->nfields; i++)
        if (decode_field(&fields->via.array.ptr[i], &f->fields[i], e) < 0)
            return cli_wrap(e, "field %u", i);
    return index_fields(doc, f, e);
}

static int decode_funcs(cli_doc *doc, const msgpack_object *arr, cli_tchunk *c, cli_err *e)
{
    if (want_array(arr, UINT32_MAX, "funcs", e) < 0)
        return -1;
    c->nfuncs = arr->via.array.size;
    c->funcs = cli_doc_alloc(doc, c->nfuncs, sizeof *c->funcs);
    for (uint32_t i = 0; i < c->nfuncs; i++)
        if (decode_func(doc, &arr->via.array.ptr[i], &c->funcs[i], e) < 0)
            return cli_wrap(e, "funcs[%u]", i);
    return 0;
}

/* ---- frames and locals ---- */

static bool local_fits(cli_ftype type, const msgpack_object *v)
{
    int64_t i;
    uint64_t u;
    bool ext = v->type == MSGPACK_OBJECT_EXT && v->via.ext.size == 8;
    switch (type) {
    case CLI_F_BOOL: return v->type == MSGPACK_OBJECT_BOOLEAN;
    case CLI_F_I32: return cli_mp_int(v, &i) && i >= INT32_MIN && i <= INT32_MAX;
    case CLI_F_I64: return cli_mp_int(v, &i);
    case CLI_F_U32: return cli_mp_uint(v, &u) && u <= UINT32_MAX;
    case CLI_F_U64: return cli_mp_uint(v, &u);
    case CLI_F_F64:
        return v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32;
    case CLI_F_VALUE: return true;
    case CLI_F_CHAN:
        return v->type == MSGPACK_OBJECT_NIL || (ext && v->via.ext.type == 1);
    case CLI_F_TASKLET:
        return v->type == MSGPACK_OBJECT_NIL || (ext && v->via.ext.type == 2);
    case CLI_F_BYTES: return v->type == MSGPACK_OBJECT_BIN;
    case CLI_F_CASES: return v->type == MSGPACK_OBJECT_NIL;
    }
    return false;
}

static int check_local(const cli_field *f, const msgpack_object *v, cli_err *e)
{
    if (!local_fits(f->type, v))
        return cli_fail(e, "local \"%.*s\" (%s) holds a %s that does not fit its type",
                        (int)f->name.n, f->name.p, cli_ftype_name(f->type),
                        cli_mp_typename(v));
    if (f->type == CLI_F_VALUE && cli_check_value(v, e) < 0)
        return cli_wrap(e, "local \"%.*s\"", (int)f->name.n, f->name.p);
    return 0;
}

/* One local: its key names a schema field not seen yet, its value fits. */
static int check_local_entry(const cli_func *fn, const msgpack_object_kv *kv, bool *seen,
                             cli_err *e)
{
    const cli_field *f;
    if (kv->key.type != MSGPACK_OBJECT_STR)
        return cli_fail(e, "a locals key is a %s, not a str", cli_mp_typename(&kv->key));
    f = func_field(fn, kv->key.via.str.ptr, kv->key.via.str.size);
    if (!f)
        return cli_fail(e, "local \"%.*s\" is not in the schema of %.*s@%llu",
                        (int)kv->key.via.str.size, kv->key.via.str.ptr, (int)fn->name.n,
                        fn->name.p, (unsigned long long)fn->version);
    if (seen[f - fn->fields])
        return cli_fail(e, "local \"%.*s\" appears twice", (int)f->name.n, f->name.p);
    seen[f - fn->fields] = true;
    return check_local(f, &kv->val, e);
}

static int check_locals(const cli_func *fn, const msgpack_object *locals, cli_err *e)
{
    int rc = 0;
    if (locals->type != MSGPACK_OBJECT_MAP)
        return cli_fail(e, "locals is a %s, not a map", cli_mp_typename(locals));
    bool *seen = cli_xcalloc(fn->nfields, sizeof *seen);
    for (uint32_t i = 0; rc == 0 && i < locals->via.map.size; i++)
        rc = check_local_entry(fn, &locals->via.map.ptr[i], seen, e);
    for (uint32_t i = 0; rc == 0 && i < fn->nfields; i++)
        if (!seen[i])
            rc = cli_fail(e, "local \"%.*s\" of the schema is missing",
                          (int)fn->fields[i].name.n, fn->fields[i].name.p);
    free(seen);
    return rc;
}

static int decode_frame(const msgpack_object *o, const cli_tchunk *c, cli_frame *fr,
                        cli_err *e)
{
    const msgpack_object *a = o->via.array.ptr;
    if (want_array(o, 4, "frame", e) < 0 || want_uint(&a[0], &fr->func, "func", e) < 0
        || want_uint(&a[1], &fr->pc, "pc", e) < 0
        || want_uint(&a[2], &fr->flags, "flags", e) < 0)
        return -1;
    if (fr->func >= c->nfuncs)
        return cli_fail(e, "func index %llu is out of range (the chunk has %u funcs)",
                        (unsigned long long)fr->func, c->nfuncs);
    fr->locals = &a[3];
    return check_locals(&c->funcs[fr->func], fr->locals, e);
}

const msgpack_object *cli_frame_local(const cli_frame *fr, const cli_field *f)
{
    const msgpack_object *m = fr->locals;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == f->name.n
            && (f->name.n == 0 || !memcmp(k->via.str.ptr, f->name.p, f->name.n)))
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

/* ---- tasklet records ---- */

static int tasklet_scalars(const msgpack_object *a, cli_tasklet *t, cli_err *e)
{
    if (want_uint(&a[0], &t->id, "id", e) < 0 || want_uint(&a[1], &t->state, "state", e) < 0
        || want_uint(&a[2], &t->wait, "wait", e) < 0 || want_int(&a[3], &t->err, "err", e) < 0)
        return -1; /* a[4], extrefs, is reserved: readers ignore it */
    if (t->state < 1 || t->state > 6 || t->state == 2)
        return cli_fail(e, "state %llu is not 1, 3, 4, 5 or 6", (unsigned long long)t->state);
    if (t->wait > CLI_W_JOIN)
        return cli_fail(e, "wait %llu is not 0..5", (unsigned long long)t->wait);
    return 0;
}

static int tasklet_on(const msgpack_object *on, cli_tasklet *t, cli_err *e)
{
    uint64_t u;
    int64_t i;
    bool needs_on = t->wait != CLI_W_NONE && t->wait != CLI_W_SELECT;
    t->on = on->type == MSGPACK_OBJECT_NIL ? NULL : on;
    if (!t->on && needs_on)
        return cli_fail(e, "on is nil, but wait %s needs it", cli_wait_name(t->wait));
    if (t->on && !needs_on)
        return cli_fail(e, "on is a %s, but must be nil for wait %s", cli_mp_typename(on),
                        cli_wait_name(t->wait));
    if (t->on && t->wait == CLI_W_SLEEP)
        return want_int(on, &i, "on (a deadline)", e);
    if (t->on)
        return want_uint(on, &u, "on (an id)", e);
    return 0;
}

static int tasklet_frames(cli_doc *doc, const msgpack_object *arr, const cli_tchunk *c,
                          cli_tasklet *t, cli_err *e)
{
    if (want_array(arr, UINT32_MAX, "frames", e) < 0)
        return -1;
    t->nframes = arr->via.array.size;
    t->frames = cli_doc_alloc(doc, t->nframes, sizeof *t->frames);
    for (uint32_t i = 0; i < t->nframes; i++)
        if (decode_frame(&arr->via.array.ptr[i], c, &t->frames[i], e) < 0)
            return cli_wrap(e, "frame %u", i);
    return 0;
}

static int decode_case(const msgpack_object *o, cli_case *k, cli_err *e)
{
    if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4
        && want_uint(&o->via.array.ptr[3], &k->qnum, "case queue number", e) < 0)
        return -1;
    if ((o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4)
        && want_array(o, 3, "case", e) < 0)
        return -1;
    if (want_uint(&o->via.array.ptr[0], &k->chan, "case channel", e) < 0
        || want_uint(&o->via.array.ptr[1], &k->op, "case op", e) < 0)
        return -1;
    if (k->op != 1 && k->op != 2)
        return cli_fail(e, "op %llu is not 1 (send) or 2 (receive)",
                        (unsigned long long)k->op);
    k->value = &o->via.array.ptr[2];
    return cli_check_value(k->value, e) < 0 ? cli_wrap(e, "case value") : 0;
}

static int decode_sel(cli_doc *doc, const msgpack_object *sel, cli_tasklet *t, cli_err *e)
{
    const msgpack_object *at, *field, *cases;
    if (sel->type != MSGPACK_OBJECT_MAP)
        return cli_fail(e, "sel is a %s, not a map", cli_mp_typename(sel));
    /* format 2 names the cases' field; format 1 gave their byte offset */
    field = cli_mp_get(sel, "field");
    if (field ? want_str(field, &t->sel_field, "field", e) < 0
              : want_key(sel, "at", &at, e) < 0 || want_uint(at, &t->sel_at, "at", e) < 0)
        return cli_wrap(e, "sel");
    if (want_key(sel, "cases", &cases, e) < 0
        || want_array(cases, UINT32_MAX, "cases", e) < 0)
        return cli_wrap(e, "sel");
    t->has_sel = true;
    t->ncases = cases->via.array.size;
    t->cases = cli_doc_alloc(doc, t->ncases, sizeof *t->cases);
    for (uint32_t i = 0; i < t->ncases; i++)
        if (decode_case(&cases->via.array.ptr[i], &t->cases[i], e) < 0)
            return cli_wrap(e, "sel case %u", i);
    return 0;
}

/* An optional key of `extra`: *out NULL when absent, else of `type`
 * (MSGPACK_OBJECT_NEGATIVE_INTEGER standing for any int64). */
static int extra_key(const msgpack_object *x, const char *key, msgpack_object_type type,
                     const msgpack_object **out, cli_err *e)
{
    int64_t i;
    *out = cli_mp_get(x, key);
    if (!*out)
        return 0;
    if (type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return want_int(*out, &i, key, e);
    if ((*out)->type != type)
        return cli_fail(e, "%s is a %s", key, cli_mp_typename(*out));
    return 0;
}

static int tasklet_extra(cli_doc *doc, const msgpack_object *x, cli_tasklet *t, cli_err *e)
{
    const msgpack_object *sel;
    if (x->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (x->type != MSGPACK_OBJECT_MAP)
        return cli_fail(e, "extra is a %s, not a map or nil", cli_mp_typename(x));
    if (extra_key(x, "name", MSGPACK_OBJECT_STR, &t->name, e) < 0
        || extra_key(x, "msg", MSGPACK_OBJECT_STR, &t->msg, e) < 0
        || extra_key(x, "fired", MSGPACK_OBJECT_NEGATIVE_INTEGER, &t->fired, e) < 0)
        return cli_wrap(e, "extra");
    const msgpack_object *q = cli_mp_get(x, "q");
    if (q && want_uint(q, &t->qnum, "q", e) < 0)
        return cli_wrap(e, "extra");
    t->joiners = cli_mp_get(x, "joiners");
    if (t->joiners && want_list(x, "joiners", MSGPACK_OBJECT_POSITIVE_INTEGER, &t->joiners, e) < 0)
        return cli_wrap(e, "extra");
    sel = cli_mp_get(x, "sel");
    return sel ? decode_sel(doc, sel, t, e) : 0;
}

static int decode_tasklet(cli_doc *doc, const msgpack_object *o, const cli_tchunk *c,
                          cli_tasklet *t, uint32_t index, cli_err *e)
{
    const msgpack_object *a = o->via.array.ptr;
    if (want_array(o, 9, "tasklet record", e) < 0 || tasklet_scalars(a, t, e) < 0)
        return cli_wrap(e, "tasklets[%u]", index);
    t->xfer = &a[6];
    if (tasklet_on(&a[5], t, e) < 0 || cli_check_value(t->xfer, e) < 0
        || tasklet_frames(doc, &a[7], c, t, e) < 0 || tasklet_extra(doc, &a[8], t, e) < 0)
        return cli_wrap(e, "tasklet %llu", (unsigned long long)t->id);
    return 0;
}

/* Ids are sorted, unique, and belong in the chunk (id >> 8 == key). */
static int check_chunk_id(uint64_t id, uint64_t prev, uint32_t index, int64_t key,
                          const char *what, cli_err *e)
{
    if ((int64_t)(id >> 8) != key)
        return cli_fail(e, "%s %llu does not belong in chunk key %lld (id >> 8 = %llu)", what,
                        (unsigned long long)id, (long long)key, (unsigned long long)(id >> 8));
    if (index > 0 && id <= prev)
        return cli_fail(e, "%s %llu follows %llu: ids are not sorted and unique", what,
                        (unsigned long long)id, (unsigned long long)prev);
    return 0;
}

int cli_decode_tchunk(cli_doc *doc, int64_t key, cli_tchunk *c, cli_err *e)
{
    const msgpack_object *m = &doc->up.data, *funcs, *list;
    memset(c, 0, sizeof *c);
    if (m->type != MSGPACK_OBJECT_MAP)
        return cli_fail(e, "tasklet chunk is a %s, not a map", cli_mp_typename(m));
    if (want_key(m, "funcs", &funcs, e) < 0 || decode_funcs(doc, funcs, c, e) < 0
        || want_key(m, "tasklets", &list, e) < 0
        || want_array(list, UINT32_MAX, "tasklets", e) < 0)
        return cli_wrap(e, "tasklet chunk");
    c->ntasklets = list->via.array.size;
    c->tasklets = cli_doc_alloc(doc, c->ntasklets, sizeof *c->tasklets);
    for (uint32_t i = 0; i < c->ntasklets; i++) {
        cli_tasklet *t = &c->tasklets[i];
        if (decode_tasklet(doc, &list->via.array.ptr[i], c, t, i, e) < 0
            || check_chunk_id(t->id, i ? t[-1].id : 0, i, key, "tasklet", e) < 0)
            return -1;
    }
    return 0;
}

/* ---- channel records (section 5) ---- */

static int chan_scalars(const msgpack_object *a, cli_chan *ch, cli_err *e)
{
    if (want_uint(&a[0], &ch->id, "id", e) < 0)
        return -1;
    if (a[1].type != MSGPACK_OBJECT_NIL && a[1].type != MSGPACK_OBJECT_STR)
        return cli_fail(e, "name is a %s, not a str or nil", cli_mp_typename(&a[1]));
    ch->name = a[1].type == MSGPACK_OBJECT_STR ? &a[1] : NULL;
    if (want_uint(&a[2], &ch->capacity, "capacity", e) < 0
        || want_int(&a[3], &ch->preference, "preference", e) < 0)
        return -1;
    if (a[4].type != MSGPACK_OBJECT_BOOLEAN || a[5].type != MSGPACK_OBJECT_BOOLEAN)
        return cli_fail(e, "schedule_all and closing must be bools");
    ch->schedule_all = a[4].via.boolean;
    ch->closing = a[5].via.boolean;
    return 0; /* a[6], extrefs, is reserved: readers ignore it */
}

/* The select waiters of a queue: [position, case index] pairs, positions
 * increasing and inside the queue. */
static int decode_cases(const msgpack_object *arr, cli_waiter *w, uint32_t n, cli_err *e)
{
    uint64_t pos, kase;
    if (want_array(arr, UINT32_MAX, "cases", e) < 0)
        return -1;
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *c = &arr->via.array.ptr[i];
        if (want_array(c, 2, "case", e) < 0
            || want_uint(&c->via.array.ptr[0], &pos, "position", e) < 0
            || want_uint(&c->via.array.ptr[1], &kase, "case index", e) < 0)
            return cli_wrap(e, "cases[%u]", i);
        if (pos >= n || (i > 0 && pos <= arr->via.array.ptr[i - 1].via.array.ptr[0].via.u64))
            return cli_fail(e, "cases[%u]: position %llu is out of order or beyond the %u ids",
                            i, (unsigned long long)pos, n);
        if (kase > INT64_MAX)
            return cli_fail(e, "cases[%u]: case index %llu is out of range", i,
                            (unsigned long long)kase);
        w[pos].kase = (int64_t)kase;
    }
    return 0;
}

/* A queue: [ids (delta-coded ints), cases], or [count] (*numbered: the
 * count; otherwise -1). */
static int decode_waiters(cli_doc *doc, const msgpack_object *q, cli_waiter **out,
                          uint32_t *n, int64_t *numbered, const char *what, cli_err *e)
{
    const msgpack_object *ids;
    uint64_t id = 0, count;
    int64_t delta;
    *numbered = -1;
    if (q->type == MSGPACK_OBJECT_ARRAY && q->via.array.size == 1) {
        if (want_uint(&q->via.array.ptr[0], &count, "count", e) < 0 || count > INT64_MAX)
            return cli_wrap(e, "%s", what);
        *numbered = (int64_t)count;
        return 0;
    }
    if (want_array(q, 2, what, e) < 0)
        return -1;
    ids = &q->via.array.ptr[0];
    if (want_array(ids, UINT32_MAX, "ids", e) < 0)
        return cli_wrap(e, "%s", what);
    *n = ids->via.array.size;
    *out = cli_doc_alloc(doc, *n, sizeof **out);
    for (uint32_t i = 0; i < *n; i++) {
        if (want_int(&ids->via.array.ptr[i], &delta, "id delta", e) < 0)
            return cli_wrap(e, "%s ids[%u]", what, i);
        id += (uint64_t)delta; /* modulo 2^64, as the writer subtracts */
        (*out)[i].tasklet = id;
        (*out)[i].kase = -1;
    }
    if (decode_cases(&q->via.array.ptr[1], *out, *n, e) < 0)
        return cli_wrap(e, "%s", what);
    return 0;
}

/* The 11th item: {"home": [node: str, id: uint, name: str|nil],
 * "pinned": bool}, both optional, other keys ignored.  A home names its
 * channel by name or by a non-zero id. */
static int decode_chan_extra(const msgpack_object *x, cli_chan *ch, cli_err *e)
{
    const msgpack_object *home, *pinned;
    if (x->type != MSGPACK_OBJECT_MAP)
        return cli_fail(e, "extra is a %s, not a map", cli_mp_typename(x));
    if (extra_key(x, "pinned", MSGPACK_OBJECT_BOOLEAN, &pinned, e) < 0
        || extra_key(x, "home", MSGPACK_OBJECT_ARRAY, &home, e) < 0)
        return cli_wrap(e, "extra");
    ch->pinned = pinned && pinned->via.boolean;
    if (!home)
        return 0;
    const msgpack_object *h = home->via.array.ptr;
    if (want_array(home, 3, "home", e) < 0)
        return cli_wrap(e, "extra");
    if (h[0].type != MSGPACK_OBJECT_STR || h[0].via.str.size == 0)
        return cli_fail(e, "extra: home node is not a non-empty str");
    if (want_uint(&h[1], &ch->home_id, "home id", e) < 0)
        return cli_wrap(e, "extra");
    if (h[2].type != MSGPACK_OBJECT_NIL && h[2].type != MSGPACK_OBJECT_STR)
        return cli_fail(e, "extra: home name is a %s, not a str or nil",
                        cli_mp_typename(&h[2]));
    if (h[2].type == MSGPACK_OBJECT_NIL && ch->home_id == 0)
        return cli_fail(e, "extra: home has neither an id nor a name");
    ch->home_node = &h[0];
    ch->home_name = h[2].type == MSGPACK_OBJECT_STR ? &h[2] : NULL;
    return 0;
}

static int decode_chan(cli_doc *doc, const msgpack_object *o, cli_chan *ch, uint32_t index,
                       cli_err *e)
{
    const msgpack_object *a = o->via.array.ptr;
    if (want_array(o, UINT32_MAX, "channel record", e) < 0)
        return cli_wrap(e, "chans[%u]", index);
    if (o->via.array.size != 10 && o->via.array.size != 11)
        return cli_fail(e, "chans[%u]: channel record has %u items, not 10 or 11", index,
                        o->via.array.size);
    if (chan_scalars(a, ch, e) < 0)
        return cli_wrap(e, "chans[%u]", index);
    if (o->via.array.size == 11 && decode_chan_extra(&a[10], ch, e) < 0)
        return cli_wrap(e, "channel %llu", (unsigned long long)ch->id);
    ch->buffer = &a[7];
    if (want_array(ch->buffer, UINT32_MAX, "buffer", e) < 0
        || cli_check_value(ch->buffer, e) < 0
        || decode_waiters(doc, &a[8], &ch->senders, &ch->nsenders, &ch->numbered[0], "senders",
                          e) < 0
        || decode_waiters(doc, &a[9], &ch->receivers, &ch->nreceivers, &ch->numbered[1],
                          "receivers", e) < 0)
        return cli_wrap(e, "channel %llu", (unsigned long long)ch->id);
    if (ch->home_node && (ch->capacity || ch->buffer->via.array.size))
        return cli_fail(e, "channel %llu: a remote channel with capacity %llu and %u buffered "
                        "values (it holds none)", (unsigned long long)ch->id,
                        (unsigned long long)ch->capacity, ch->buffer->via.array.size);
    return 0;
}

int cli_decode_cchunk(cli_doc *doc, int64_t key, cli_cchunk *c, cli_err *e)
{
    const msgpack_object *m = &doc->up.data, *list;
    memset(c, 0, sizeof *c);
    if (m->type != MSGPACK_OBJECT_MAP)
        return cli_fail(e, "channel chunk is a %s, not a map", cli_mp_typename(m));
    if (want_key(m, "chans", &list, e) < 0 || want_array(list, UINT32_MAX, "chans", e) < 0)
        return cli_wrap(e, "channel chunk");
    c->nchans = list->via.array.size;
    c->chans = cli_doc_alloc(doc, c->nchans, sizeof *c->chans);
    for (uint32_t i = 0; i < c->nchans; i++) {
        cli_chan *ch = &c->chans[i];
        if (decode_chan(doc, &list->via.array.ptr[i], ch, i, e) < 0
            || check_chunk_id(ch->id, i ? ch[-1].id : 0, i, key, "channel", e) < 0)
            return -1;
    }
    return 0;
}
