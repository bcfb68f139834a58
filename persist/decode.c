/*
 * decode.c -- records back into a runtime, all or nothing.
 *
 * The loader streams: it decodes one record, applies it and frees it, so
 * a million tasklets never sit in memory twice.  Order:
 *   1. the head: magic, format, counters, how many objects to expect;
 *   2. tasklet chunks: functions resolved by name@version (or an upgrade)
 *      and their schemas matched once per chunk; frames, locals, values,
 *      timers.  A reference to an object not seen yet creates an empty
 *      *shell* with that id, filled when its record comes;
 *   3. channel chunks: buffers and queues (every tasklet exists by then);
 *   4. checks: no shell left empty (a dangling id), counts as the head
 *      says, every blocked tasklet in the queue it claims; joiners and the
 *      run queue linked; objects nothing refers to dropped.
 * Any failure resets the runtime to empty (tl__runtime_reset).  Every
 * record is bounds-checked (tl__msgpack_check) before msgpack-c sees it,
 * and its CRC checked after inflating.
 */
#include "persist.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#define MAX_RAWLEN ((uint64_t)256 << 20)
#define MAX_DEPTH 40

/* How a schema field of the program's function appears in the snapshot. */
enum { FIELD_ABSENT, FIELD_SAME, FIELD_CHANGED };

typedef struct fnref {
    const tl__fn *e;              /* what the frame becomes */
    const msgpack_object *fields; /* the snapshot's schema: [[name, type]...] */
    const struct upgrade *up;
    uint8_t *match;               /* per field of e: FIELD_* */
    char label[160];
} fnref;

typedef struct doc {
    int kind;
    uint64_t key;
    char *bytes;      /* the inflated document */
    size_t len;
    msgpack_unpacked up;
    fnref *funcs;
    size_t nfuncs;
} doc;

/* id -> object: a dense array when ids are dense (the usual case), else
 * an open-addressing table; either way bounded by the head's counts. */
typedef struct idmap {
    uint64_t *ids;
    void **objs;
    size_t cap, n, limit;
    uint64_t maxid;  /* the head's counter: no id above it */
    int direct;
} idmap;

typedef struct joinrec {
    tl_tasklet *joinee;
    uint64_t joiner;
} joinrec;

typedef struct loader {
    tl_runtime *rt;
    const char *where;
    doc head;
    idmap tasklets, chans;
    uint64_t max_tid, max_cid, ntasklets, nchans;
    joinrec *joins;
    size_t njoins, capjoins;
    int import;          /* tl__import: one moving tasklet, next to others */
    tl_tasklet *moved;   /* import: that tasklet */
} loader;

static int corrupt(loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int corrupt(loader *ld, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tl__seterr(ld->rt, TL_ECORRUPT, "%s: %s", ld->where, msg);
}

/* ---- small helpers over msgpack objects ---- */

static bool is_uint(const msgpack_object *o) { return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER; }
static bool is_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}
static int64_t as_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o->via.u64 : o->via.i64;
}
static bool is_array(const msgpack_object *o, uint32_t n)
{
    return o->type == MSGPACK_OBJECT_ARRAY && (n == UINT32_MAX || o->via.array.size == n);
}
static bool str_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++)
        if (str_is(&m->via.map.ptr[i].key, key))
            return &m->via.map.ptr[i].val;
    return NULL;
}

static uint64_t ext_id(const msgpack_object *o)
{
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = (id << 8) | (unsigned char)o->via.ext.ptr[i];
    return id;
}

/* ---- id maps ---- */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    return x ^ (x >> 27);
}

static int idmap_init(tl_runtime *rt, idmap *m, uint64_t n, uint64_t maxid, int sparse)
{
    memset(m, 0, sizeof *m);
    m->limit = (size_t)n;
    m->maxid = maxid;
    if (!sparse && maxid <= 4 * n + 65536 && maxid < ((uint64_t)1 << 26)) {
        m->direct = 1;
        m->cap = (size_t)maxid + 1;
        m->objs = tl__calloc(rt, m->cap * sizeof *m->objs);
        return m->objs ? TL_OK : TL_ENOMEM;
    }
    m->cap = 16;
    while (m->cap < 2 * n + 16)
        m->cap *= 2;
    m->ids = tl__calloc(rt, m->cap * sizeof *m->ids);
    m->objs = tl__calloc(rt, m->cap * sizeof *m->objs);
    return m->ids && m->objs ? TL_OK : TL_ENOMEM;
}

static void idmap_free(tl_runtime *rt, idmap *m)
{
    tl__free(rt, m->ids, m->direct ? 0 : m->cap * sizeof *m->ids);
    tl__free(rt, m->objs, m->cap * sizeof *m->objs);
}

/* The slot for id, or NULL when the map cannot hold it (more objects
 * than the head announced, or an id beyond its counter). */
static void **idmap_slot(idmap *m, uint64_t id)
{
    if (id > m->maxid)
        return NULL;
    if (m->direct)
        return &m->objs[id];
    size_t j = mix(id) & (m->cap - 1);
    while (m->objs[j] && m->ids[j] != id)
        j = (j + 1) & (m->cap - 1);
    if (!m->objs[j] && m->n >= m->limit)
        return NULL;
    m->ids[j] = id;
    return &m->objs[j];
}

static void *idmap_find(idmap *m, uint64_t id)
{
    void **slot = idmap_slot(m, id);
    return slot ? *slot : NULL;
}

/* ---- records ---- */

static int inflate_doc(loader *ld, const msgpack_object *rec, doc *d, const char *what)
{
    const msgpack_object *a = rec->via.array.ptr;
    if (!is_array(rec, 5) || !str_is(&a[0], "tlrec") || !is_uint(&a[1]) || !is_uint(&a[2]) ||
        !is_uint(&a[3]) || a[4].type != MSGPACK_OBJECT_BIN)
        return corrupt(ld, "%s: not a record", what);
    uint64_t flags = a[1].via.u64, crc = a[2].via.u64, rawlen = a[3].via.u64;
    if (flags > 1 || rawlen > MAX_RAWLEN)
        return corrupt(ld, "%s: bad record flags or length", what);
    d->len = (size_t)rawlen;
    d->bytes = tl__alloc(ld->rt, d->len ? d->len : 1);
    if (!d->bytes)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory for %s", ld->where, what);
    if (flags & 1) {
        if (tl__inflate(ld->rt, a[4].via.bin.ptr, a[4].via.bin.size, d->bytes, d->len) != 0)
            return corrupt(ld, "%s: compressed payload does not inflate", what);
    } else {
        if (a[4].via.bin.size != d->len)
            return corrupt(ld, "%s: payload length differs from the record's", what);
        memcpy(d->bytes, a[4].via.bin.ptr, d->len);
    }
    if (crc32(0L, (const Bytef *)d->bytes, (uInt)d->len) != crc)
        return corrupt(ld, "%s: CRC mismatch (damaged record)", what);
    return TL_OK;
}

/* Decodes raw record bytes into d (the document, unpacked). */
static int read_record(loader *ld, const tl__raw *raw, doc *d, const char *what)
{
    msgpack_unpacked rec;
    size_t off = 0;
    int rc;
    msgpack_unpacked_init(&d->up);
    if (!raw->p || tl__msgpack_check(raw->p, raw->n, 8) != raw->n)
        return corrupt(ld, "%s: truncated or malformed record", what);
    msgpack_unpacked_init(&rec);
    if (msgpack_unpack_next(&rec, raw->p, raw->n, &off) != MSGPACK_UNPACK_SUCCESS)
        rc = corrupt(ld, "%s: undecodable record", what);
    else
        rc = inflate_doc(ld, &rec.data, d, what);
    msgpack_unpacked_destroy(&rec);
    if (rc != TL_OK)
        return rc;
    off = 0;
    if (tl__msgpack_check((const unsigned char *)d->bytes, d->len, MAX_DEPTH) != d->len ||
        msgpack_unpack_next(&d->up, d->bytes, d->len, &off) != MSGPACK_UNPACK_SUCCESS)
        return corrupt(ld, "%s: malformed document", what);
    return TL_OK;
}

static void doc_free(loader *ld, doc *d)
{
    for (size_t i = 0; d->funcs && i < d->nfuncs; i++)
        if (d->funcs[i].match)
            tl__free(ld->rt, d->funcs[i].match, d->funcs[i].e->fn->nfields + 1);
    msgpack_unpacked_destroy(&d->up);
    tl__free(ld->rt, d->bytes, d->len ? d->len : 1);
    tl__free(ld->rt, d->funcs, (d->nfuncs + 1) * sizeof *d->funcs);
}

/* ---- pass 1: the head ---- */

static int read_head(loader *ld)
{
    const msgpack_object *h = &ld->head.up.data;
    const msgpack_object *magic = map_get(h, "magic"), *format = map_get(h, "format");
    const msgpack_object *tid = map_get(h, "next_tid"), *cid = map_get(h, "next_cid");
    const msgpack_object *runq = map_get(h, "runq");
    if (!magic || !str_is(magic, "libtasklet"))
        return corrupt(ld, "head: bad magic (not a libtasklet snapshot)");
    if (!format || !is_uint(format))
        return corrupt(ld, "head: no format version");
    if (format->via.u64 > TL_FORMAT_VERSION)
        return tl__seterr(ld->rt, TL_EFORMAT, "%s: format version %llu is newer than this "
                          "library reads (%d); upgrade libtasklet", ld->where,
                          (unsigned long long)format->via.u64, TL_FORMAT_VERSION);
    if (!tid || !cid || !is_uint(tid) || !is_uint(cid) || !runq || !is_array(runq, UINT32_MAX))
        return corrupt(ld, "head: missing counters or run queue");
    ld->max_tid = tid->via.u64;
    ld->max_cid = cid->via.u64;
    return TL_OK;
}

/* ---- pass 2: functions and shells ---- */

struct upgrade {
    struct upgrade *next;
    char *name;
    uint32_t old_version;
    const tl_func *to;
    tl_upgrade_fn fn;
    void *ud;
};

static const struct upgrade *find_upgrade(tl_runtime *rt, const char *name, size_t n, uint32_t v)
{
    for (const struct upgrade *u = rt->upgrades; u; u = u->next)
        if (u->old_version == v && strlen(u->name) == n && memcmp(u->name, name, n) == 0)
            return u;
    return NULL;
}

/* Matches the program's schema against the snapshot's, once per chunk. */
static int match_fields(loader *ld, fnref *r)
{
    const tl_func *fn = r->e->fn;
    r->match = tl__calloc(ld->rt, fn->nfields + 1);
    if (!r->match)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (size_t i = 0; i < fn->nfields; i++) {
        for (uint32_t j = 0; j < r->fields->via.array.size; j++) {
            const msgpack_object *fd = &r->fields->via.array.ptr[j];
            if (!is_array(fd, 2) || !str_is(&fd->via.array.ptr[0], fn->fields[i].name))
                continue;
            r->match[i] = str_is(&fd->via.array.ptr[1], tl__type_names[fn->fields[i].type])
                              ? FIELD_SAME : FIELD_CHANGED;
            break;
        }
    }
    return TL_OK;
}

static int resolve_func(loader *ld, const msgpack_object *f, fnref *r)
{
    const msgpack_object *a = f->via.array.ptr;
    char name[128];
    if (!is_array(f, 3) || a[0].type != MSGPACK_OBJECT_STR || a[0].via.str.size >= sizeof name ||
        !is_uint(&a[1]) || a[1].via.u64 > UINT32_MAX || !is_array(&a[2], UINT32_MAX))
        return corrupt(ld, "a function entry is malformed");
    memcpy(name, a[0].via.str.ptr, a[0].via.str.size);
    name[a[0].via.str.size] = '\0';
    uint32_t version = (uint32_t)a[1].via.u64;
    snprintf(r->label, sizeof r->label, "%s@%u", name, version);
    r->fields = &a[2];
    const tl_func *fn = tl_lookup(ld->rt, name, version);
    if (!fn) {
        r->up = find_upgrade(ld->rt, name, strlen(name), version);
        if (!r->up)
            return tl__seterr(ld->rt, TL_ENOFUNC, "%s needs function %s, which this program "
                              "does not register (and no upgrade from it is registered)",
                              ld->where, r->label);
        fn = r->up->to;
    }
    r->e = tl__fn_find(ld->rt, fn);
    if (!r->e)
        return tl__seterr(ld->rt, TL_ENOFUNC, "%s: upgrade target of %s is not registered",
                          ld->where, r->label);
    return match_fields(ld, r);
}

/* The tasklet with this id, created as an empty shell (state 0) if its
 * record has not been seen yet. */
static tl_tasklet *get_tasklet(loader *ld, uint64_t id)
{
    void **slot = id && ld->tasklets.objs ? idmap_slot(&ld->tasklets, id) : NULL;
    if (!slot) {
        corrupt(ld, "tasklet id %llu is out of range or more tasklets than the head "
                "announces", (unsigned long long)id);
        return NULL;
    }
    if (ld->import && (*slot || ld->moved)) {
        corrupt(ld, "a moving tasklet may not refer to tasklets (#%llu)", (unsigned long long)id);
        return NULL;
    }
    if (*slot)
        return *slot;
    tl_tasklet *t = tl__slab_get(ld->rt, &ld->rt->tasklets);
    if (!t) {
        tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->magic = TL__MAGIC_TASK;
    t->rt = ld->rt;
    t->id = ld->import ? ++ld->rt->next_tid : id;
    if (ld->import)
        ld->moved = t;
    t->refs = 1; /* the loader's, until finish: a temporary reference
                  * (an upgrade's old locals) must not free a shell */
    tl__list_init(&t->w.link);
    *slot = t;
    ld->tasklets.n++;
    return t;
}

/* The channel with this id, created as an unbuffered shell (reserved = 1)
 * if its record has not been seen yet. */
static tl_chan *get_chan(loader *ld, uint64_t id)
{
    void **slot = id && ld->chans.objs ? idmap_slot(&ld->chans, id) : NULL;
    tl_chan *ch;
    if (!slot) {
        corrupt(ld, "channel id %llu is out of range or more channels than the head "
                "announces", (unsigned long long)id);
        return NULL;
    }
    if (*slot)
        return *slot;
    if (ld->import) { /* channel records come first: every id is known */
        corrupt(ld, "a reference to channel #%llu, which the snapshot lacks (dangling id)",
                (unsigned long long)id);
        return NULL;
    }
    if (tl_chan_new(ld->rt, 0, &ch) != TL_OK)
        return NULL;
    ch->id = id;
    ch->refs = 1; /* the loader's, until finish */
    ch->reserved = 1;
    *slot = ch;
    ld->chans.n++;
    return ch;
}

static int chunk_list(loader *ld, doc *d, const msgpack_object **list)
{
    const msgpack_object *o = &d->up.data;
    *list = NULL;
    if (is_array(o, 0))
        return TL_OK; /* tombstone */
    *list = map_get(o, d->kind == TL__KIND_TASKLETS ? "tasklets" : "chans");
    if (!*list || !is_array(*list, UINT32_MAX))
        return corrupt(ld, "chunk %d/%llu is malformed", d->kind, (unsigned long long)d->key);
    return TL_OK;
}

/* ---- pass 3: values ---- */

static int dec_value(loader *ld, const msgpack_object *o, tl_value *out, int depth);

static int dec_items(loader *ld, const msgpack_object *o, tl_value *out, int depth)
{
    bool map = o->type == MSGPACK_OBJECT_MAP;
    size_t n = map ? o->via.map.size : o->via.array.size;
    size_t count = map ? 2 * n : n;
    tl_value *items = tl__calloc(ld->rt, (count + 1) * sizeof *items);
    int rc = items ? TL_OK : tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (size_t i = 0; i < n && rc == TL_OK; i++) {
        if (map) {
            rc = dec_value(ld, &o->via.map.ptr[i].key, &items[2 * i], depth + 1);
            if (rc == TL_OK)
                rc = dec_value(ld, &o->via.map.ptr[i].val, &items[2 * i + 1], depth + 1);
        } else {
            rc = dec_value(ld, &o->via.array.ptr[i], &items[i], depth + 1);
        }
    }
    if (rc == TL_OK)
        rc = map ? tl_map_new(ld->rt, items, n, out) : tl_array_new(ld->rt, items, n, out);
    for (size_t i = 0; items && i < count; i++)
        tl_release(items[i]);
    tl__free(ld->rt, items, (count + 1) * sizeof *items);
    return rc;
}

static int dec_ext(loader *ld, const msgpack_object *o, tl_value *out)
{
    int8_t type = o->via.ext.type;
    uint32_t n = o->via.ext.size;
    if ((type == 1 || type == 2) && n == 8) {
        uint64_t id = ext_id(o);
        void *obj = type == 1 ? (void *)get_chan(ld, id) : (void *)get_tasklet(ld, id);
        if (!obj)
            return ld->rt->errcode;
        *out = type == 1 ? tl_chan_value(obj) : tl_tasklet_value(obj);
        return TL_OK;
    }
    if (type == 3 && n >= 4) {
        const unsigned char *p = (const unsigned char *)o->via.ext.ptr;
        int32_t code = (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                                 ((uint32_t)p[2] << 8) | p[3]);
        char msg[256];
        size_t m = n - 4 < sizeof msg - 1 ? n - 4 : sizeof msg - 1;
        memcpy(msg, p + 4, m);
        msg[m] = '\0';
        *out = tl_error_value(ld->rt, code, m ? msg : NULL);
        return TL_OK;
    }
    return corrupt(ld, "unknown extension type %d in a value", type);
}

static int dec_value(loader *ld, const msgpack_object *o, tl_value *out, int depth)
{
    *out = tl_nil();
    if (depth > 16)
        return corrupt(ld, "a value is nested too deep");
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return TL_OK;
    case MSGPACK_OBJECT_BOOLEAN: *out = tl_bool(o->via.boolean); return TL_OK;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = o->via.u64 > INT64_MAX ? tl_u64(o->via.u64) : tl_i64((int64_t)o->via.u64);
        return TL_OK;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = tl_i64(o->via.i64); return TL_OK;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = tl_f64(o->via.f64); return TL_OK;
    case MSGPACK_OBJECT_STR: return tl_str_new(ld->rt, o->via.str.ptr, o->via.str.size, out);
    case MSGPACK_OBJECT_BIN: return tl_bin_new(ld->rt, o->via.bin.ptr, o->via.bin.size, out);
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP: return dec_items(ld, o, out, depth);
    case MSGPACK_OBJECT_EXT: return dec_ext(ld, o, out);
    default: return corrupt(ld, "unknown msgpack type in a value");
    }
}

/* ---- pass 3: frames and locals ---- */

static const msgpack_object *snapshot_type(const fnref *r, const char *field)
{
    for (uint32_t i = 0; i < r->fields->via.array.size; i++) {
        const msgpack_object *fd = &r->fields->via.array.ptr[i];
        if (is_array(fd, 2) && str_is(&fd->via.array.ptr[0], field))
            return &fd->via.array.ptr[1];
    }
    return NULL;
}

static int dec_ref_field(loader *ld, const tl_field *fd, const msgpack_object *o, void *p)
{
    int chan = fd->type == TL_T_CHAN;
    if (o->type == MSGPACK_OBJECT_NIL)
        return TL_OK;
    if (o->type != MSGPACK_OBJECT_EXT || o->via.ext.type != (chan ? 1 : 2) || o->via.ext.size != 8)
        return corrupt(ld, "field '%s' does not hold a %s reference", fd->name, chan ? "channel" : "tasklet");
    uint64_t id = ext_id(o);
    void *obj = chan ? (void *)get_chan(ld, id) : (void *)get_tasklet(ld, id);
    if (!obj)
        return ld->rt->errcode;
    if (chan)
        *(tl_chan **)p = tl_chan_retain(obj);
    else
        *(tl_tasklet **)p = tl_tasklet_retain(obj);
    return TL_OK;
}

static int dec_field(loader *ld, const tl_field *fd, const msgpack_object *o, char *locals)
{
    void *p = locals + fd->offset;
    int64_t i;
    switch (fd->type) {
    case TL_T_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN) break;
        *(unsigned char *)p = o->via.boolean;
        return TL_OK;
    case TL_T_I32:
    case TL_T_I64:
        if (!is_int(o)) break;
        i = as_int(o);
        if (fd->type == TL_T_I32) {
            if (i < INT32_MIN || i > INT32_MAX) break;
            int32_t x = (int32_t)i;
            memcpy(p, &x, 4);
        } else {
            memcpy(p, &i, 8);
        }
        return TL_OK;
    case TL_T_U32:
    case TL_T_U64:
        if (!is_uint(o) || (fd->type == TL_T_U32 && o->via.u64 > UINT32_MAX)) break;
        if (fd->type == TL_T_U32) {
            uint32_t x = (uint32_t)o->via.u64;
            memcpy(p, &x, 4);
        } else {
            memcpy(p, &o->via.u64, 8);
        }
        return TL_OK;
    case TL_T_F64:
        if (o->type != MSGPACK_OBJECT_FLOAT64 && o->type != MSGPACK_OBJECT_FLOAT32) break;
        memcpy(p, &o->via.f64, 8);
        return TL_OK;
    case TL_T_VALUE: return dec_value(ld, o, (tl_value *)p, 0);
    case TL_T_CHAN:
    case TL_T_TASKLET: return dec_ref_field(ld, fd, o, p);
    default:
        if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != fd->size) break;
        memcpy(p, o->via.bin.ptr, fd->size);
        return TL_OK;
    }
    return corrupt(ld, "field '%s' holds a value of the wrong kind for %s",
                   fd->name, tl__type_names[fd->type]);
}

/* The value of field i in a locals map: written in schema order, so item
 * i is almost always it. */
static const msgpack_object *local_value(const msgpack_object *map, size_t i, const char *name)
{
    if (i < map->via.map.size && str_is(&map->via.map.ptr[i].key, name))
        return &map->via.map.ptr[i].val;
    return map_get(map, name);
}

/* Fills the locals of a frame of r->e from the snapshot's map, by name. */
static int dec_locals(loader *ld, const fnref *r, const msgpack_object *map, char *locals)
{
    const tl_func *fn = r->e->fn;
    for (size_t i = 0; i < fn->nfields; i++) {
        const tl_field *fd = &fn->fields[i];
        if (r->match[i] == FIELD_ABSENT)
            continue; /* added field: stays zero */
        if (r->match[i] == FIELD_CHANGED) {
            if (r->up)
                continue; /* the upgrade maps it */
            const msgpack_object *type = snapshot_type(r, fd->name);
            return tl__seterr(ld->rt, TL_ESCHEMA, "%s: field '%s' of %s changed type (the "
                              "snapshot has %.*s, the program %s); register an upgrade or a "
                              "new version", ld->where, fd->name, r->label,
                              type->type == MSGPACK_OBJECT_STR ? (int)type->via.str.size : 1,
                              type->type == MSGPACK_OBJECT_STR ? type->via.str.ptr : "?",
                              tl__type_names[fd->type]);
        }
        const msgpack_object *val = local_value(map, i, fd->name);
        if (!val)
            continue;
        int rc = dec_field(ld, fd, val, locals);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

static int run_upgrade(loader *ld, const fnref *r, const msgpack_object *map, char *locals,
                       uint32_t *pc)
{
    tl_value old;
    int rc = dec_value(ld, map, &old, 0);
    if (rc != TL_OK)
        return rc;
    rc = r->up->fn(r->up->ud, *pc, old, locals, pc);
    tl_release(old);
    if (rc != TL_OK)
        return tl__seterr(ld->rt, rc, "%s: the upgrade of %s failed (%s)", ld->where, r->label,
                          tl_strerror(rc));
    return TL_OK;
}

static int dec_frame(loader *ld, doc *d, tl_tasklet *t, const msgpack_object *fo)
{
    const msgpack_object *a = fo->via.array.ptr;
    if (!is_array(fo, 4) || !is_uint(&a[0]) || a[0].via.u64 >= d->nfuncs || !is_uint(&a[1]) ||
        a[1].via.u64 > UINT32_MAX || !is_uint(&a[2]) || a[3].type != MSGPACK_OBJECT_MAP)
        return corrupt(ld, "a frame of tasklet #%llu is malformed", (unsigned long long)t->id);
    const fnref *r = &d->funcs[a[0].via.u64];
    tl_frame *f = tl__frame_new(ld->rt, t, r->e);
    if (!f)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory for a frame", ld->where);
    f->h.pc = (uint32_t)a[1].via.u64;
    f->h.flags = (uint32_t)a[2].via.u64 & (TL__F_ERR | TL__F_CATCH);
    int rc = dec_locals(ld, r, &a[3], TL__LOCALS(f));
    if (rc == TL_OK && r->up)
        rc = run_upgrade(ld, r, &a[3], TL__LOCALS(f), &f->h.pc);
    return rc;
}

/* ---- pass 3: tasklets ---- */

static int dec_select(loader *ld, tl_tasklet *t, const msgpack_object *sel)
{
    const msgpack_object *at = map_get(sel, "at"), *cases = map_get(sel, "cases");
    if (!at || !is_uint(at) || !cases || !is_array(cases, UINT32_MAX) ||
        cases->via.array.size < 1 || cases->via.array.size > TL_SELECT_MAX || !t->top)
        return corrupt(ld, "tasklet #%llu: bad select", (unsigned long long)t->id);
    uint32_t n = cases->via.array.size;
    size_t size = t->top->fn->fn->locals_size;
    if (at->via.u64 > size || n * sizeof(tl_case) > size - at->via.u64 ||
        at->via.u64 % _Alignof(tl_case))
        return corrupt(ld, "tasklet #%llu: select cases outside the frame", (unsigned long long)t->id);
    const tl_func *fn = t->top->fn->fn;
    uint64_t lo = at->via.u64, hi = lo + n * sizeof(tl_case);
    for (size_t i = 0; i < fn->nfields; i++)
        if (fn->fields[i].offset < hi && lo < (uint64_t)fn->fields[i].offset + fn->fields[i].size)
            return corrupt(ld, "tasklet #%llu: select cases overlap field '%s'",
                           (unsigned long long)t->id, fn->fields[i].name);
    tl_case *cs = (tl_case *)(void *)((char *)TL__LOCALS(t->top) + at->via.u64);
    tl__sel *s = tl__sel_new(ld->rt, t, cs, (int)n);
    if (!s)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *c = &cases->via.array.ptr[i];
        if (!is_array(c, 3) || !is_uint(&c->via.array.ptr[0]) || !is_uint(&c->via.array.ptr[1]) ||
            (c->via.array.ptr[1].via.u64 != TL_OP_SEND && c->via.array.ptr[1].via.u64 != TL_OP_RECV))
            return corrupt(ld, "tasklet #%llu: bad select case", (unsigned long long)t->id);
        tl_chan *ch = get_chan(ld, c->via.array.ptr[0].via.u64);
        if (!ch)
            return ld->rt->errcode;
        cs[i].ch = ch;
        cs[i].op = (int)c->via.array.ptr[1].via.u64;
        int rc = dec_value(ld, &c->via.array.ptr[2], &cs[i].value, 0);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

static int dec_extra(loader *ld, tl_tasklet *t, const msgpack_object *x)
{
    if (x->type == MSGPACK_OBJECT_NIL)
        return TL_OK;
    if (x->type != MSGPACK_OBJECT_MAP)
        return corrupt(ld, "tasklet #%llu: bad extra", (unsigned long long)t->id);
    tl__ext *e = tl__ext_get(t);
    if (!e)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    const msgpack_object *name = map_get(x, "name"), *msg = map_get(x, "msg");
    const msgpack_object *fired = map_get(x, "fired"), *sel = map_get(x, "sel");
    char buf[256];
    if (name && name->type == MSGPACK_OBJECT_STR) {
        snprintf(buf, sizeof buf, "%.*s", (int)name->via.str.size, name->via.str.ptr);
        e->name = tl__strdup(ld->rt, buf);
    }
    if (msg && msg->type == MSGPACK_OBJECT_STR) {
        snprintf(buf, sizeof buf, "%.*s", (int)msg->via.str.size, msg->via.str.ptr);
        e->errmsg = tl__strdup(ld->rt, buf);
    }
    e->sel_fired = fired && is_int(fired) ? (int)as_int(fired) : -1;
    const msgpack_object *js = map_get(x, "joiners");
    for (uint32_t j = 0; js && is_array(js, UINT32_MAX) && j < js->via.array.size; j++) {
        if (!is_uint(&js->via.array.ptr[j]))
            return corrupt(ld, "tasklet #%llu: bad joiner", (unsigned long long)t->id);
        if (ld->njoins == ld->capjoins) {
            size_t ncap = ld->capjoins ? 2 * ld->capjoins : 16;
            joinrec *nj = tl__realloc(ld->rt, ld->joins, ld->capjoins * sizeof *nj, ncap * sizeof *nj);
            if (!nj)
                return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
            ld->joins = nj;
            ld->capjoins = ncap;
        }
        ld->joins[ld->njoins++] = (joinrec){t, js->via.array.ptr[j].via.u64};
    }
    if (t->wait == TL_WAIT_SELECT)
        return sel ? dec_select(ld, t, sel) : corrupt(ld, "tasklet #%llu: select without cases",
                                                       (unsigned long long)t->id);
    return TL_OK;
}

static int check_state(loader *ld, tl_tasklet *t, uint64_t state, uint64_t wait, size_t nframes)
{
    bool ended = state >= TL_DONE && state <= TL_KILLED;
    if ((state != TL_RUNNABLE && state != TL_BLOCKED && !ended) || wait > TL_WAIT_JOIN ||
        (state == TL_BLOCKED) != (wait != TL_WAIT_NONE) || ended == (nframes > 0))
        return corrupt(ld, "tasklet #%llu has an impossible state", (unsigned long long)t->id);
    return TL_OK;
}

static int dec_wait(loader *ld, tl_tasklet *t, const msgpack_object *on)
{
    switch (t->wait) {
    case TL_WAIT_SEND:
    case TL_WAIT_RECV:
    {
        tl_chan *ch = is_uint(on) ? get_chan(ld, on->via.u64) : NULL;
        if (!ch)
            return is_uint(on) ? ld->rt->errcode
                               : corrupt(ld, "tasklet #%llu: bad wait", (unsigned long long)t->id);
        if (!ld->import)
            return TL_OK; /* linked from the queue side; the checks see to it */
        int op = t->wait == TL_WAIT_SEND ? TL_OP_SEND : TL_OP_RECV;
        if (ch->remote) {
            tl__proxy_enqueue(ch, t, op);
        } else {
            t->w.on = (uintptr_t)ch;
            tl__chan_enqueue(ch, &t->w, op);
        }
        return TL_OK;
    }
    case TL_WAIT_JOIN: {
        tl_tasklet *joinee = is_uint(on) ? get_tasklet(ld, on->via.u64) : NULL;
        if (!joinee)
            return is_uint(on) ? ld->rt->errcode
                               : corrupt(ld, "tasklet #%llu: bad wait", (unsigned long long)t->id);
        t->w.on = (uintptr_t)joinee; /* linked with the joinee's list */
        return TL_OK;
    }
    case TL_WAIT_SLEEP:
        if (!is_int(on))
            return corrupt(ld, "tasklet #%llu sleeps without a deadline", (unsigned long long)t->id);
        return tl__timer_add(ld->rt, t, as_int(on)) == TL_OK
                   ? TL_OK : tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    default:
        return TL_OK;
    }
}

static int dec_tasklet(loader *ld, doc *d, const msgpack_object *o)
{
    const msgpack_object *a = o->via.array.ptr;
    if (!is_array(o, 9) || !is_uint(&a[0]))
        return corrupt(ld, "a tasklet record in chunk %llu is malformed", (unsigned long long)d->key);
    tl_tasklet *t = get_tasklet(ld, a[0].via.u64);
    if (!t)
        return ld->rt->errcode;
    if (t->state != 0)
        return corrupt(ld, "tasklet #%llu appears twice", (unsigned long long)t->id);
    if (!is_uint(&a[1]) || !is_uint(&a[2]) || !is_int(&a[3]) || !is_array(&a[7], UINT32_MAX))
        return corrupt(ld, "tasklet #%llu: malformed record", (unsigned long long)t->id);
    int rc = check_state(ld, t, a[1].via.u64, a[2].via.u64, a[7].via.array.size);
    if (rc != TL_OK)
        return rc;
    if (ld->import && (a[1].via.u64 >= TL_DONE || a[2].via.u64 == TL_WAIT_SELECT ||
                       a[2].via.u64 == TL_WAIT_JOIN))
        return corrupt(ld, "a moving tasklet must be runnable, or blocked in a send, "
                       "receive or sleep");
    t->state = (uint8_t)a[1].via.u64;
    t->wait = (uint8_t)a[2].via.u64;
    t->err = (int32_t)as_int(&a[3]);
    for (uint32_t i = 0; i < a[7].via.array.size && rc == TL_OK; i++)
        rc = dec_frame(ld, d, t, &a[7].via.array.ptr[i]);
    if (rc == TL_OK)
        rc = dec_value(ld, &a[6], &t->xfer, 0);
    if (rc == TL_OK)
        rc = dec_extra(ld, t, &a[8]);
    if (rc == TL_OK && t->wait == TL_WAIT_SELECT && !(t->ext && t->ext->sel))
        rc = corrupt(ld, "tasklet #%llu waits in a select without its cases",
                     (unsigned long long)t->id);
    if (rc == TL_OK)
        rc = dec_wait(ld, t, &a[5]);
    return rc;
}

/* ---- pass 3: channels ---- */

static int link_waiter(loader *ld, tl_chan *ch, uint64_t tid, int64_t idx, int op)
{
    tl_tasklet *t = idmap_find(&ld->tasklets, tid);
    if (!t || t->state != TL_BLOCKED)
        return corrupt(ld, "channel #%llu queues tasklet #%llu, which is not blocked",
                       (unsigned long long)ch->id, (unsigned long long)tid);
    tl__waiter *wt;
    if (idx < 0) {
        if (t->wait != (op == TL_OP_SEND ? TL_WAIT_SEND : TL_WAIT_RECV))
            return corrupt(ld, "tasklet #%llu is queued on channel #%llu but waits for something else",
                           (unsigned long long)t->id, (unsigned long long)ch->id);
        wt = &t->w;
        wt->on = (uintptr_t)ch;
        if (ch->remote) {
            if (wt->link.next != &wt->link)
                return corrupt(ld, "tasklet #%llu is queued twice", (unsigned long long)t->id);
            tl__proxy_enqueue(ch, t, op);
            return TL_OK;
        }
    } else {
        if (ch->remote)
            return corrupt(ld, "channel #%llu is remote and queues a select",
                           (unsigned long long)ch->id);
        tl__sel *s = t->ext ? t->ext->sel : NULL;
        if (t->wait != TL_WAIT_SELECT || !s || idx >= s->n || s->cases[idx].ch != ch ||
            s->cases[idx].op != op)
            return corrupt(ld, "channel #%llu queues a select case that tasklet #%llu lacks",
                           (unsigned long long)ch->id, (unsigned long long)t->id);
        wt = &s->ws[idx].w;
        wt->on = (uintptr_t)ch | 1;
    }
    if (wt->link.next != &wt->link)
        return corrupt(ld, "tasklet #%llu is queued twice", (unsigned long long)t->id);
    tl__chan_enqueue(ch, wt, op);
    return TL_OK;
}

/* [ids (delta-coded), cases ([position, case index] of select waiters)] */
static int dec_queue(loader *ld, tl_chan *ch, const msgpack_object *q, int op)
{
    const msgpack_object *ids = &q->via.array.ptr[0], *cases = &q->via.array.ptr[1];
    uint64_t id = 0;
    uint32_t next_sel = 0;
    int rc = TL_OK;
    if (!is_array(q, 2) || !is_array(ids, UINT32_MAX) || !is_array(cases, UINT32_MAX))
        return corrupt(ld, "channel #%llu: malformed queue", (unsigned long long)ch->id);
    for (uint32_t i = 0; i < ids->via.array.size && rc == TL_OK; i++) {
        const msgpack_object *c = next_sel < cases->via.array.size ? &cases->via.array.ptr[next_sel] : NULL;
        int64_t idx = -1;
        if (!is_int(&ids->via.array.ptr[i]))
            return corrupt(ld, "channel #%llu: malformed queue", (unsigned long long)ch->id);
        id += (uint64_t)as_int(&ids->via.array.ptr[i]);
        if (c && is_array(c, 2) && is_uint(&c->via.array.ptr[0]) && c->via.array.ptr[0].via.u64 == i) {
            if (!is_int(&c->via.array.ptr[1]))
                return corrupt(ld, "channel #%llu: malformed queue", (unsigned long long)ch->id);
            idx = as_int(&c->via.array.ptr[1]);
            if (idx < 0)
                return corrupt(ld, "channel #%llu: negative select case", (unsigned long long)ch->id);
            next_sel++;
        }
        rc = link_waiter(ld, ch, id, idx, op);
    }
    if (rc == TL_OK && next_sel != cases->via.array.size)
        return corrupt(ld, "channel #%llu: select cases out of order", (unsigned long long)ch->id);
    return rc;
}

/* The channel of a record: a new one, or the shell references made. */
static tl_chan *chan_of_record(loader *ld, const msgpack_object *a)
{
    uint64_t id = a[0].via.u64;
    size_t cap = (size_t)a[2].via.u64;
    tl_chan *ch = get_chan(ld, id);
    if (!ch)
        return NULL;
    if (!ch->reserved) {
        corrupt(ld, "channel #%llu appears twice", (unsigned long long)id);
        return NULL;
    }
    ch->reserved = 0;
    if (cap) {
        ch->buf = tl__alloc(ld->rt, cap * sizeof *ch->buf);
        if (!ch->buf) {
            tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
            return NULL;
        }
        ch->cap = cap;
    }
    return ch;
}

/* The 11th item of a channel record: {"home": [node, id, name|nil],
 * "pinned": true}, both optional.  *node is NULL without a home. */
typedef struct chan_extra {
    char node[64];
    int home, pinned;
    uint64_t id;
    char name[256];
    int named;
} chan_extra;

static int chan_extra_of(loader *ld, const msgpack_object *o, chan_extra *x)
{
    memset(x, 0, sizeof *x);
    if (o->via.array.size < 11)
        return TL_OK;
    const msgpack_object *m = &o->via.array.ptr[10];
    if (m->type != MSGPACK_OBJECT_MAP)
        return corrupt(ld, "a channel record's extra is not a map");
    const msgpack_object *home = map_get(m, "home"), *pinned = map_get(m, "pinned");
    if (pinned)
        x->pinned = pinned->type == MSGPACK_OBJECT_BOOLEAN && pinned->via.boolean;
    if (!home)
        return TL_OK;
    const msgpack_object *h = home->via.array.ptr;
    if (!is_array(home, 3) || h[0].type != MSGPACK_OBJECT_STR || h[0].via.str.size == 0 ||
        h[0].via.str.size >= sizeof x->node || !is_uint(&h[1]) ||
        (h[2].type != MSGPACK_OBJECT_NIL &&
         (h[2].type != MSGPACK_OBJECT_STR || h[2].via.str.size >= sizeof x->name)) ||
        (h[1].via.u64 == 0 && h[2].type == MSGPACK_OBJECT_NIL) ||
        memchr(h[0].via.str.ptr, 0, h[0].via.str.size) ||
        (h[2].type == MSGPACK_OBJECT_STR && memchr(h[2].via.str.ptr, 0, h[2].via.str.size)))
        return corrupt(ld, "a channel record has a malformed home");
    x->home = 1;
    memcpy(x->node, h[0].via.str.ptr, h[0].via.str.size);
    x->id = h[1].via.u64;
    if (h[2].type == MSGPACK_OBJECT_STR) {
        x->named = 1;
        memcpy(x->name, h[2].via.str.ptr, h[2].via.str.size);
    }
    return TL_OK;
}

/* Import: the channel a moving tasklet's reference means here (retained
 * for the loader): the local one when its home is this node, else a proxy
 * (an existing one for the same home channel, or a new one). */
static tl_chan *resolve_home(loader *ld, const chan_extra *x)
{
    tl_runtime *rt = ld->rt;
    tl_chan *ch = NULL;
    if (strcmp(x->node, rt->node) == 0) {
        ch = x->named ? tl_chan_find_name(rt, x->name) : tl_chan_find(rt, x->id);
        if (!ch || ch->remote) {
            char id[24];
            snprintf(id, sizeof id, "#%llu", (unsigned long long)x->id);
            tl__seterr(rt, TL_ENOENT, "%s: the moving tasklet refers to channel %s/%s, which "
                       "no longer exists here", ld->where, x->node, x->named ? x->name : id);
            return NULL;
        }
        return tl_chan_retain(ch);
    }
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next) {
        tl_chan *p = TL__CONTAINER(l, tl_chan, all);
        const tl__remote *r = p->remote;
        if (r && r->id == x->id && strcmp(r->node, x->node) == 0 && !r->name == !x->named &&
            (!x->named || strcmp(r->name, x->name) == 0))
            return tl_chan_retain(p);
    }
    if (tl_chan_new(rt, 0, &ch) != TL_OK)
        return NULL;
    if (tl__chan_make_proxy(ch, x->node, x->id, x->named ? x->name : NULL) != TL_OK) {
        tl_chan_release(ch);
        return NULL;
    }
    return ch;
}

static int dec_chan_import(loader *ld, const msgpack_object *o)
{
    const msgpack_object *a = o->via.array.ptr;
    chan_extra x;
    if (!is_array(o, 11) || !is_uint(&a[0]))
        return corrupt(ld, "a moving tasklet's channel record is malformed");
    int rc = chan_extra_of(ld, o, &x);
    if (rc != TL_OK)
        return rc;
    if (!x.home)
        return corrupt(ld, "a moving tasklet's channel #%llu has no home",
                       (unsigned long long)a[0].via.u64);
    void **slot = a[0].via.u64 ? idmap_slot(&ld->chans, a[0].via.u64) : NULL;
    if (!slot || *slot)
        return corrupt(ld, "channel id %llu is out of range or appears twice",
                       (unsigned long long)a[0].via.u64);
    tl_chan *ch = resolve_home(ld, &x);
    if (!ch)
        return ld->rt->errcode;
    *slot = ch;
    ld->chans.n++;
    return TL_OK;
}

static int dec_chan(loader *ld, const msgpack_object *o)
{
    const msgpack_object *a = o->via.array.ptr;
    chan_extra x;
    if (ld->import)
        return dec_chan_import(ld, o);
    if ((!is_array(o, 10) && !is_array(o, 11)) || !is_uint(&a[0]) || !is_uint(&a[2]) ||
        a[2].via.u64 > ((uint64_t)1 << 24))
        return corrupt(ld, "a channel record is malformed");
    int xrc = chan_extra_of(ld, o, &x);
    if (xrc != TL_OK)
        return xrc;
    tl_chan *ch = chan_of_record(ld, a);
    if (!ch)
        return ld->rt->errcode;
    if (x.home && (a[2].via.u64 || a[7].type != MSGPACK_OBJECT_ARRAY || a[7].via.array.size))
        return corrupt(ld, "remote channel #%llu has a buffer", (unsigned long long)ch->id);
    if (x.home && tl__chan_make_proxy(ch, x.node, x.id, x.named ? x.name : NULL) != TL_OK)
        return ld->rt->errcode;
    if (x.pinned && !ch->pinned) {
        ch->pinned = 1;
        ch->refs++;
    }
    if ((a[1].type != MSGPACK_OBJECT_NIL && a[1].type != MSGPACK_OBJECT_STR) || !is_int(&a[3]) ||
        as_int(&a[3]) < -1 || as_int(&a[3]) > 1 || a[4].type != MSGPACK_OBJECT_BOOLEAN ||
        a[5].type != MSGPACK_OBJECT_BOOLEAN || !is_array(&a[7], UINT32_MAX) ||
        a[7].via.array.size > ch->cap || !is_array(&a[8], 2) || !is_array(&a[9], 2))
        return corrupt(ld, "channel #%llu: malformed record", (unsigned long long)ch->id);
    if (a[1].type == MSGPACK_OBJECT_STR) {
        char buf[256];
        snprintf(buf, sizeof buf, "%.*s", (int)a[1].via.str.size, a[1].via.str.ptr);
        if (tl_chan_set_name(ch, buf) != TL_OK)
            return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    }
    ch->pref = (int8_t)as_int(&a[3]);
    ch->sched_all = a[4].via.boolean;
    ch->closing = a[5].via.boolean;
    int rc = TL_OK;
    for (uint32_t i = 0; i < a[7].via.array.size && rc == TL_OK; i++) {
        rc = dec_value(ld, &a[7].via.array.ptr[i], &ch->buf[i], 0);
        ch->count += rc == TL_OK;
    }
    if (rc == TL_OK)
        rc = dec_queue(ld, ch, &a[8], TL_OP_SEND);
    if (rc == TL_OK)
        rc = dec_queue(ld, ch, &a[9], TL_OP_RECV);
    return rc;
}

static int resolve_funcs(loader *ld, doc *d)
{
    const msgpack_object *funcs = map_get(&d->up.data, "funcs");
    int rc = TL_OK;
    if (!funcs || !is_array(funcs, UINT32_MAX))
        return corrupt(ld, "tasklet chunk %llu has no function table", (unsigned long long)d->key);
    d->nfuncs = funcs->via.array.size;
    d->funcs = tl__calloc(ld->rt, (d->nfuncs + 1) * sizeof *d->funcs);
    if (!d->funcs)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (size_t i = 0; i < d->nfuncs && rc == TL_OK; i++)
        rc = resolve_func(ld, &funcs->via.array.ptr[i], &d->funcs[i]);
    return rc;
}

static int contents_of(loader *ld, doc *d)
{
    const msgpack_object *list;
    int rc = chunk_list(ld, d, &list);
    if (rc == TL_OK && list && d->kind == TL__KIND_TASKLETS)
        rc = resolve_funcs(ld, d);
    for (uint32_t i = 0; list && i < list->via.array.size && rc == TL_OK; i++)
        rc = d->kind == TL__KIND_TASKLETS ? dec_tasklet(ld, d, &list->via.array.ptr[i])
                                          : dec_chan(ld, &list->via.array.ptr[i]);
    return rc;
}

/* ---- pass 4: joiners, run queue, checks, references ---- */

static int link_joiners(loader *ld)
{
    for (size_t i = 0; i < ld->njoins; i++) {
        tl_tasklet *t = ld->joins[i].joinee;
        tl_tasklet *w = idmap_find(&ld->tasklets, ld->joins[i].joiner);
        if (!w || w->wait != TL_WAIT_JOIN || w->w.on != (uintptr_t)t ||
            w->w.link.next != &w->w.link || t->state >= TL_DONE)
            return corrupt(ld, "tasklet #%llu lists a joiner that does not join it",
                           (unsigned long long)t->id);
        tl__list_push_back(&t->ext->joiners, &w->w.link);
        t->refs++;
    }
    return TL_OK;
}

static int link_runq(loader *ld)
{
    const msgpack_object *runq = map_get(&ld->head.up.data, "runq");
    for (uint32_t i = 0; i < runq->via.array.size; i++) {
        const msgpack_object *id = &runq->via.array.ptr[i];
        tl_tasklet *t = is_uint(id) ? idmap_find(&ld->tasklets, id->via.u64) : NULL;
        if (!t || t->state != TL_RUNNABLE || t->w.link.next != &t->w.link)
            return corrupt(ld, "the run queue lists a tasklet that is not runnable");
        tl__runq_push_back(ld->rt, t);
    }
    return TL_OK;
}

typedef struct finish_ctx {
    loader *ld;
    int rc;
} finish_ctx;

static void finish_visit(void *obj, void *ud)
{
    finish_ctx *c = ud;
    tl_tasklet *t = obj;
    bool linked = t->w.link.next != &t->w.link;
    if (c->rc != TL_OK)
        return;
    if (t->state == 0) {
        c->rc = corrupt(c->ld, "a reference to tasklet #%llu, which the snapshot lacks "
                        "(dangling id)", (unsigned long long)t->id);
        return;
    }
    if (t->state < TL_DONE) {
        t->refs++; /* alive */
        c->ld->rt->nlive++;
    }
    if (t->state == TL_BLOCKED) {
        c->ld->rt->nblocked++;
        bool sel_ok = true;
        if (t->wait == TL_WAIT_SELECT)
            for (int i = 0; i < t->ext->sel->n; i++)
                sel_ok = sel_ok && t->ext->sel->ws[i].w.link.next != &t->ext->sel->ws[i].w.link;
        bool ok = t->wait == TL_WAIT_SELECT ? sel_ok : t->wait == TL_WAIT_SLEEP ? !linked : linked;
        if (!ok)
            c->rc = corrupt(c->ld, "tasklet #%llu is blocked but not in the queue it waits on",
                            (unsigned long long)t->id);
    } else if (t->state == TL_RUNNABLE && !linked) {
        c->rc = corrupt(c->ld, "runnable tasklet #%llu is missing from the run queue",
                        (unsigned long long)t->id);
    }
}

/* Drops the loader's reference: an ended tasklet nothing refers to goes. */
static void drop_visit(void *obj, void *ud)
{
    (void)ud;
    tl_tasklet_release(obj);
}

/* Drops the loader's reference on every channel: those nothing refers to
 * go.  They are collected first: freeing one releases what its buffer
 * holds, which may free others, so the list is not walked while freeing.
 * (Every channel still listed keeps the loader's reference until its turn,
 * so no cascade frees one twice.) */
static int drop_unreferenced_chans(loader *ld)
{
    tl_runtime *rt = ld->rt;
    size_t n = 0, k = 0;
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next)
        n++;
    if (!n)
        return TL_OK;
    tl_chan **drop = tl__alloc(rt, n * sizeof *drop);
    if (!drop)
        return tl__seterr(rt, TL_ENOMEM, "%s: out of memory", ld->where);
    for (tl__link *l = rt->chans.next; l != &rt->chans; l = l->next)
        drop[k++] = TL__CONTAINER(l, tl_chan, all);
    for (size_t i = 0; i < k; i++)
        tl_chan_release(drop[i]);
    tl__free(rt, drop, n * sizeof *drop);
    return TL_OK;
}

static int check_chans(loader *ld)
{
    for (tl__link *l = ld->rt->chans.next; l != &ld->rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->reserved)
            return corrupt(ld, "a reference to channel #%llu, which the snapshot lacks "
                           "(dangling id)", (unsigned long long)ch->id);
    }
    return TL_OK;
}

static int check_counts(loader *ld)
{
    if (ld->tasklets.n != ld->ntasklets || ld->chans.n != ld->nchans)
        return corrupt(ld, "%zu tasklets and %zu channels, the head announces %llu and %llu "
                       "(a chunk is missing)", ld->tasklets.n, ld->chans.n,
                       (unsigned long long)ld->ntasklets, (unsigned long long)ld->nchans);
    return TL_OK;
}

static int finish(loader *ld)
{
    finish_ctx c = {ld, TL_OK};
    c.rc = check_chans(ld);
    if (c.rc == TL_OK)
        c.rc = link_joiners(ld);
    if (c.rc == TL_OK)
        c.rc = link_runq(ld);
    if (c.rc == TL_OK)
        tl__slab_each(&ld->rt->tasklets, TL__MAGIC_TASK, finish_visit, &c);
    if (c.rc == TL_OK)
        c.rc = check_counts(ld);
    if (c.rc != TL_OK)
        return c.rc;
    tl__slab_each(&ld->rt->tasklets, TL__MAGIC_TASK, drop_visit, NULL);
    int rc = drop_unreferenced_chans(ld);
    if (rc != TL_OK)
        return rc;
    ld->rt->next_tid = ld->max_tid;
    ld->rt->next_cid = ld->max_cid;
    return TL_OK;
}

/* ---- driver ---- */

/* The head's object counts, which size the id maps, may not exceed what
 * the chunk records present can hold (256 objects each). */
static int read_counts(loader *ld, const tl__raw *chunks, size_t n)
{
    const msgpack_object *h = &ld->head.up.data;
    const msgpack_object *nt = map_get(h, "ntasklets"), *nc = map_get(h, "nchans");
    uint64_t tchunks = 0, cchunks = 0;
    for (size_t i = 0; i < n; i++) {
        tchunks += chunks[i].kind == TL__KIND_TASKLETS;
        cchunks += chunks[i].kind == TL__KIND_CHANS;
    }
    if (!nt || !nc || !is_uint(nt) || !is_uint(nc) ||
        nt->via.u64 > tchunks << TL__CHUNK_SHIFT || nc->via.u64 > cchunks << TL__CHUNK_SHIFT)
        return corrupt(ld, "head: object counts missing or larger than the chunks can hold");
    ld->ntasklets = nt->via.u64;
    ld->nchans = nc->via.u64;
    /* an import holds a few objects whatever the ids: no dense arrays */
    if (idmap_init(ld->rt, &ld->tasklets, ld->ntasklets, ld->max_tid, ld->import) != TL_OK ||
        idmap_init(ld->rt, &ld->chans, ld->nchans, ld->max_cid, ld->import) != TL_OK)
        return tl__seterr(ld->rt, TL_ENOMEM, "%s: out of memory for %llu objects", ld->where,
                          (unsigned long long)(ld->ntasklets + ld->nchans));
    return TL_OK;
}

/* Decodes, applies and frees each record of one kind. */
static int stream_kind(loader *ld, int kind, const tl__raw *chunks, size_t n)
{
    char what[64];
    int rc = TL_OK;
    for (size_t i = 0; i < n && rc == TL_OK; i++) {
        if (chunks[i].kind != TL__KIND_TASKLETS && chunks[i].kind != TL__KIND_CHANS)
            return corrupt(ld, "chunk %d/%llu: unknown kind", chunks[i].kind,
                           (unsigned long long)chunks[i].key);
        if (chunks[i].kind != kind)
            continue;
        doc d;
        memset(&d, 0, sizeof d);
        d.kind = kind;
        d.key = chunks[i].key;
        snprintf(what, sizeof what, "chunk %d/%llu", kind, (unsigned long long)chunks[i].key);
        rc = read_record(ld, &chunks[i], &d, what);
        if (rc == TL_OK)
            rc = contents_of(ld, &d);
        doc_free(ld, &d);
    }
    return rc;
}

/* Import: the moving tasklet complete and alone; then it joins the run
 * queue (if runnable) and the runtime's counts. */
static int finish_import(loader *ld)
{
    tl_tasklet *t = ld->moved;
    if (!t || ld->tasklets.n != 1 || t->state == 0)
        return corrupt(ld, "a moving snapshot must hold exactly one tasklet");
    if (ld->chans.n != ld->nchans)
        return corrupt(ld, "%zu channels, the head announces %llu", ld->chans.n,
                       (unsigned long long)ld->nchans);
    const msgpack_object *runq = map_get(&ld->head.up.data, "runq");
    uint32_t nrun = runq ? runq->via.array.size : 0;
    if ((t->state == TL_RUNNABLE) != (nrun == 1) || nrun > 1 ||
        (nrun && (!is_uint(&runq->via.array.ptr[0]) ||
                  idmap_find(&ld->tasklets, runq->via.array.ptr[0].via.u64) != t)))
        return corrupt(ld, "the run queue does not match the moving tasklet");
    if (t->state == TL_RUNNABLE)
        tl__runq_push_back(ld->rt, t);
    else
        ld->rt->nblocked++;
    ld->rt->nlive++;
    return TL_OK; /* the loader's reference becomes the "alive" one */
}

static int load_all(loader *ld, const tl__raw *head, const tl__raw *chunks, size_t n)
{
    int rc = read_record(ld, head, &ld->head, "head record");
    if (rc == TL_OK)
        rc = read_head(ld);
    if (rc == TL_OK)
        rc = read_counts(ld, chunks, n);
    /* an import resolves channels first: references find them resolved */
    if (rc == TL_OK)
        rc = stream_kind(ld, ld->import ? TL__KIND_CHANS : TL__KIND_TASKLETS, chunks, n);
    if (rc == TL_OK)
        rc = stream_kind(ld, ld->import ? TL__KIND_TASKLETS : TL__KIND_CHANS, chunks, n);
    if (rc != TL_OK)
        return rc;
    return ld->import ? finish_import(ld) : finish(ld);
}

int tl__load(tl_runtime *rt, const tl__raw *head, const tl__raw *chunks, size_t n,
             const char *where)
{
    loader ld;
    if (rt->nlive || !tl__list_empty(&rt->chans) || rt->tasklets.live)
        return tl__seterr(rt, TL_ENOTEMPTY, "%s: load into a runtime with no tasklets and no "
                          "channels", where);
    if (rt->current)
        return tl__seterr(rt, TL_EBUSY, "%s: cannot load from inside a tasklet", where);
    memset(&ld, 0, sizeof ld);
    ld.rt = rt;
    ld.where = where;
    msgpack_unpacked_init(&ld.head.up);
    int rc = load_all(&ld, head, chunks, n);
    doc_free(&ld, &ld.head);
    idmap_free(rt, &ld.tasklets);
    idmap_free(rt, &ld.chans);
    tl__free(rt, ld.joins, ld.capjoins * sizeof *ld.joins);
    if (rc != TL_OK) {
        int code = rt->errcode;
        char msg[sizeof rt->errmsg];
        memcpy(msg, rt->errmsg, sizeof msg);
        tl__runtime_reset(rt);
        rt->errcode = code;
        memcpy(rt->errmsg, msg, sizeof msg);
        return rc;
    }
    tl__dmap_reserve(rt, rt->next_tid);
    tl__clear_dirty(rt);
    rt->errcode = TL_OK; /* lookups on the way (upgrades) are not errors */
    return TL_OK;
}

int tl__unpack_value(tl_runtime *rt, const void *obj, tl_value *out)
{
    loader ld;
    memset(&ld, 0, sizeof ld);
    ld.rt = rt;
    ld.where = "message";
    ld.import = 1; /* no id maps: a channel or tasklet reference is refused */
    return dec_value(&ld, obj, out, 0);
}

/* Drops the loader's reference on every channel it resolved. */
static void release_chans(loader *ld)
{
    for (size_t i = 0; ld->chans.objs && i < ld->chans.cap; i++)
        if (ld->chans.objs[i])
            tl_chan_release(ld->chans.objs[i]);
}

int tl__import(tl_runtime *rt, const tl__raw *head, const tl__raw *chunks, size_t n,
               tl_tasklet **out)
{
    loader ld;
    if (rt->current)
        return tl__seterr(rt, TL_EBUSY, "import: cannot import from inside a tasklet");
    memset(&ld, 0, sizeof ld);
    ld.rt = rt;
    ld.where = "moving tasklet";
    ld.import = 1;
    msgpack_unpacked_init(&ld.head.up);
    int rc = load_all(&ld, head, chunks, n);
    doc_free(&ld, &ld.head);
    tl_tasklet *t = ld.moved;
    if (rc != TL_OK && t)
        tl__tasklet_scrap(t);
    release_chans(&ld);
    idmap_free(rt, &ld.tasklets);
    idmap_free(rt, &ld.chans);
    tl__free(rt, ld.joins, ld.capjoins * sizeof *ld.joins);
    if (rc != TL_OK)
        return rc;
    tl__dmap_reserve(rt, rt->next_tid);
    tl__mark(rt, t);
    rt->errcode = TL_OK;
    *out = t;
    if (t->state == TL_BLOCKED && (t->wait == TL_WAIT_SEND || t->wait == TL_WAIT_RECV)) {
        tl_chan *ch = (tl_chan *)t->w.on;
        if (!ch->remote) {
            tl__chan_rematch(ch); /* home again: partners may be waiting */
        } else if (!rt->hooks) {
            tl__remote_complete(t, TL_ELINK, "the runtime has no node for a remote channel",
                                tl_nil());
        } else if (rt->hooks->remote_op(rt->hooks_ud, ch, t,
                                        t->wait == TL_WAIT_SEND ? TL_OP_SEND : TL_OP_RECV)
                   != TL_OK) {
            char msg[sizeof rt->errmsg];
            memcpy(msg, rt->errmsg, sizeof msg);
            tl__remote_complete(t, rt->errcode, msg, tl_nil());
        } else {
            t->flags |= TL__TF_REMOTE;
        }
    }
    return TL_OK;
}

int tl_register_upgrade(tl_runtime *rt, const char *name, uint32_t old_version,
                        const tl_func *to, tl_upgrade_fn fn, void *ud)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (!name || !to || !fn)
        return tl__seterr(rt, TL_EINVAL, "tl_register_upgrade: name, target and function are needed");
    if (!tl__fn_find(rt, to))
        return tl__seterr(rt, TL_ENOFUNC, "tl_register_upgrade: register %s@%u first",
                          to->name, to->version);
    struct upgrade *u = tl__calloc(rt, sizeof *u);
    char *copy = tl__strdup(rt, name);
    if (!u || !copy) {
        tl__free(rt, u, sizeof *u);
        tl__strfree(rt, copy);
        return tl__seterr(rt, TL_ENOMEM, "tl_register_upgrade: out of memory");
    }
    *u = (struct upgrade){rt->upgrades, copy, old_version, to, fn, ud};
    rt->upgrades = u;
    return TL_OK;
}

void tl__upgrades_free(tl_runtime *rt)
{
    while (rt->upgrades) {
        struct upgrade *u = rt->upgrades;
        rt->upgrades = u->next;
        tl__strfree(rt, u->name);
        tl__free(rt, u, sizeof *u);
    }
}
