/*
 * codec.c -- the workflow layer's rows as msgpack (docs/FORMAT.md section 11).
 *
 * Invariants: every row's bytes are one msgpack map with string keys, so
 * a reader skips keys it does not know; values inside are in the snapshot
 * value encoding (FORMAT.md section 1).  Buffers here are malloc'd (they
 * cross threads and outlive runtimes); a decoded value lives in the
 * runtime it was decoded into.
 */
#include "wf_internal.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {"?",    "pending", "running",   "waiting",
                                           "done", "failed",  "cancelled", "moved"};

const char *tl_wf_status_name(int status)
{
    return status >= TL_WF_PENDING && status <= TL_WF_MOVED ? status_names[status] : "?";
}

int tl__wf_status_parse(const char *s)
{
    for (int i = TL_WF_PENDING; s && i <= TL_WF_MOVED; i++)
        if (strcmp(s, status_names[i]) == 0)
            return i;
    return 0;
}

int tl__wf_check_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > TL_WF_ID_MAX)
        return TL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x20 || id[i] == 0x7f)
            return TL_EINVAL;
    return TL_OK;
}

/* ---- values ---- */

static int take_sbuf(msgpack_sbuffer *sb, void **out, size_t *len)
{
    *out = sb->data;
    *len = sb->size;
    sb->data = NULL;
    return TL_OK;
}

int tl__wf_pack(tl_value v, void **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = tl__pack_value(&pk, v);
    if (rc == TL_OK && !sb.data)
        rc = TL_ENOMEM;
    if (rc != TL_OK) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    return take_sbuf(&sb, out, len);
}

int tl__wf_unpack(tl_runtime *rt, const void *p, size_t n, tl_value *out)
{
    msgpack_unpacked up;
    size_t off = 0;
    *out = tl_nil();
    if (!p || n == 0)
        return TL_OK;
    msgpack_unpacked_init(&up);
    int rc = TL_ECORRUPT;
    if (msgpack_unpack_next(&up, p, n, &off) == MSGPACK_UNPACK_SUCCESS && off == n)
        rc = tl__unpack_value(rt, &up.data, out);
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* ---- map helpers ---- */

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pk_kstr(msgpack_packer *pk, const char *k, const char *v)
{
    pk_str(pk, k);
    pk_str(pk, v);
}

static void pk_kint(msgpack_packer *pk, const char *k, int64_t v)
{
    pk_str(pk, k);
    msgpack_pack_int64(pk, v);
}

/* A value already encoded, or nil. */
static void pk_kraw(msgpack_sbuffer *sb, msgpack_packer *pk, const char *k, const void *p,
                    size_t n)
{
    pk_str(pk, k);
    if (p && n)
        msgpack_sbuffer_write(sb, p, n);
    else
        msgpack_pack_nil(pk);
}

typedef struct mapin {
    msgpack_zone *zone;          /* the objects' memory */
    int own;                     /* zone is this decode's (else reused) */
    msgpack_object root;
    const msgpack_object_map *m;
    const char *base;
    uint32_t next; /* where the next key is looked for first */
} mapin;

static void map_close(mapin *mi)
{
    if (mi->own)
        msgpack_zone_free(mi->zone);
    else
        msgpack_zone_clear(mi->zone); /* keeps its first chunk */
}

void *tl__wf_zone_new(void) { return msgpack_zone_new(4096); }
void tl__wf_zone_free(void *zone)
{
    if (zone)
        msgpack_zone_free(zone);
}

/* zone: one to reuse (NULL: a new one, freed by map_close). */
static int map_open(mapin *mi, const void *p, size_t n, msgpack_zone *zone)
{
    size_t off = 0;
    mi->own = !zone;
    mi->zone = zone ? zone : msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    mi->base = p;
    if (!mi->zone)
        return TL_ENOMEM;
    msgpack_unpack_return ur = p ? msgpack_unpack(p, n, &off, mi->zone, &mi->root)
                                 : MSGPACK_UNPACK_PARSE_ERROR;
    if ((ur != MSGPACK_UNPACK_SUCCESS && ur != MSGPACK_UNPACK_EXTRA_BYTES) ||
        mi->root.type != MSGPACK_OBJECT_MAP) {
        map_close(mi);
        return TL_ECORRUPT;
    }
    mi->m = &mi->root.via.map;
    mi->next = 0;
    return TL_OK;
}

/* Readers ask for the keys in the order the writers put them, so the
 * search starts after the key found last: one compare per key for a row
 * this version wrote, any order still found. */
static const msgpack_object *map_get(mapin *mi, const char *k)
{
    size_t kn = strlen(k);
    uint32_t n = mi->m->size;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t i = (mi->next + j) % n;
        const msgpack_object *key = &mi->m->ptr[i].key;
        if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == kn &&
            memcmp(key->via.str.ptr, k, kn) == 0) {
            mi->next = i + 1;
            return &mi->m->ptr[i].val;
        }
    }
    return NULL;
}

static int64_t map_int(mapin *mi, const char *k)
{
    const msgpack_object *o = map_get(mi, k);
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    return o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? o->via.i64 : 0;
}

static void map_str(mapin *mi, const char *k, char *dst, size_t cap)
{
    const msgpack_object *o = map_get(mi, k);
    size_t n = 0;
    if (o && o->type == MSGPACK_OBJECT_STR) {
        n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
        memcpy(dst, o->via.str.ptr, n);
    }
    dst[n] = 0;
}

/* A copy of the encoded bytes of a value item (re-packed from the
 * object: msgpack-c keeps no offsets). */
static int map_raw(mapin *mi, const char *k, void **out, size_t *len)
{
    const msgpack_object *o = map_get(mi, k);
    *out = NULL;
    *len = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return TL_OK;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_object(&pk, *o) != 0 || !sb.data) {
        msgpack_sbuffer_destroy(&sb);
        return TL_ENOMEM;
    }
    return take_sbuf(&sb, out, len);
}

/* ---- workflow rows ---- */

int tl__wf_pack_rec(const wf_rec *r, void **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int moved = r->move_to[0] || r->moved_from[0] || r->move_error[0] || r->rebind;
    msgpack_pack_map(&pk, moved ? 25 : 21); /* the move's keys only once it moved */
    pk_kstr(&pk, "func", r->func);
    pk_kstr(&pk, "parent", r->parent);
    int sleeping = r->wait == W_NONE && r->status == TL_WF_WAITING;
    pk_kint(&pk, "wait", sleeping ? W_SLEEP : r->wait);
    pk_kstr(&pk, "what", sleeping ? "" : r->what);
    pk_kint(&pk, "deadline", r->deadline);
    pk_kint(&pk, "depth", r->sel_depth);
    pk_kint(&pk, "expired", r->expired);
    pk_kint(&pk, "seq", r->seq);
    pk_kint(&pk, "steps", r->recorded);
    pk_kint(&pk, "attempt", r->attempt);
    pk_kint(&pk, "retry_at", r->retry_at);
    pk_kint(&pk, "tasklet", r->t ? (int64_t)tl_tasklet_id(r->t) : 0);
    pk_kint(&pk, "wake", r->wake ? (int64_t)tl_chan_id(r->wake) : 0);
    pk_kint(&pk, "cancel", r->cancel);
    pk_kint(&pk, "created", r->created);
    pk_kint(&pk, "finished", r->finished);
    pk_kint(&pk, "error", r->error);
    pk_kstr(&pk, "msg", r->errmsg);
    pk_kraw(&sb, &pk, "result", r->result, r->rlen);
    pk_kint(&pk, "updated", r->updated);
    pk_kraw(&sb, &pk, "sarg", r->wait == W_STEP ? r->sarg : NULL, r->salen);
    if (moved) {
        pk_kstr(&pk, "to", r->move_to);
        pk_kstr(&pk, "from", r->moved_from);
        pk_kstr(&pk, "move_error", r->move_error);
        pk_kint(&pk, "rebind", r->rebind);
    }
    if (!sb.data) {
        msgpack_sbuffer_destroy(&sb);
        return TL_ENOMEM;
    }
    return take_sbuf(&sb, out, len);
}

int tl__wf_unpack_rec(const void *p, size_t n, wf_rec *r, int64_t *tasklet, int64_t *wake)
{
    return tl__wf_unpack_rec_in(NULL, p, n, r, tasklet, wake);
}

int tl__wf_unpack_rec_in(void *zone, const void *p, size_t n, wf_rec *r, int64_t *tasklet,
                         int64_t *wake)
{
    mapin mi;
    int orc = map_open(&mi, p, n, zone);
    if (orc != TL_OK)
        return orc;
    map_str(&mi, "func", r->func, sizeof r->func);
    map_str(&mi, "parent", r->parent, sizeof r->parent);
    r->wait = (int)map_int(&mi, "wait");
    map_str(&mi, "what", r->what, sizeof r->what);
    r->deadline = map_int(&mi, "deadline");
    r->sel_depth = map_int(&mi, "depth");
    r->expired = (int)map_int(&mi, "expired");
    r->seq = map_int(&mi, "seq");
    r->recorded = map_int(&mi, "steps");
    r->attempt = (uint32_t)map_int(&mi, "attempt");
    r->retry_at = map_int(&mi, "retry_at");
    *tasklet = map_int(&mi, "tasklet");
    *wake = map_int(&mi, "wake");
    r->cancel = (int)map_int(&mi, "cancel");
    r->created = map_int(&mi, "created");
    r->finished = map_int(&mi, "finished");
    r->error = (int)map_int(&mi, "error");
    map_str(&mi, "msg", r->errmsg, sizeof r->errmsg);
    int rc = map_raw(&mi, "result", &r->result, &r->rlen);
    r->updated = map_int(&mi, "updated");
    if (rc == TL_OK)
        rc = map_raw(&mi, "sarg", &r->sarg, &r->salen);
    map_str(&mi, "to", r->move_to, sizeof r->move_to); /* written last, once it moved */
    map_str(&mi, "from", r->moved_from, sizeof r->moved_from);
    map_str(&mi, "move_error", r->move_error, sizeof r->move_error);
    r->rebind = (int)map_int(&mi, "rebind");
    map_close(&mi);
    return rc;
}

/* ---- step rows ---- */

int tl__wf_pack_step(const wf_out *o, void **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    pk_kstr(&pk, "step", o->name);
    pk_kint(&pk, "seq", o->seq);
    pk_kint(&pk, "attempts", o->attempts);
    pk_kint(&pk, "error", o->rc);
    pk_kstr(&pk, "msg", o->errmsg);
    pk_kraw(&sb, &pk, "result", o->res, o->rlen);
    pk_kint(&pk, "started", o->started);
    pk_kint(&pk, "ended", o->ended);
    if (!sb.data) {
        msgpack_sbuffer_destroy(&sb);
        return TL_ENOMEM;
    }
    return take_sbuf(&sb, out, len);
}

int tl__wf_unpack_step(const void *p, size_t n, wf_out *o)
{
    mapin mi;
    int orc = map_open(&mi, p, n, NULL);
    if (orc != TL_OK)
        return orc;
    map_str(&mi, "step", o->name, sizeof o->name);
    o->seq = map_int(&mi, "seq");
    o->attempts = (uint32_t)map_int(&mi, "attempts");
    o->rc = (int)map_int(&mi, "error");
    map_str(&mi, "msg", o->errmsg, sizeof o->errmsg);
    int rc = map_raw(&mi, "result", &o->res, &o->rlen);
    o->started = map_int(&mi, "started");
    o->ended = map_int(&mi, "ended");
    map_close(&mi);
    return rc;
}

/* ---- message rows ---- */

int tl__wf_pack_msg(int kind, const char *topic, const void *val, size_t vlen, int64_t taken,
                    void **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pk_kint(&pk, "kind", kind);
    pk_kstr(&pk, "topic", topic ? topic : "");
    pk_kraw(&sb, &pk, "value", val, vlen);
    pk_kint(&pk, "taken", taken);
    if (!sb.data) {
        msgpack_sbuffer_destroy(&sb);
        return TL_ENOMEM;
    }
    return take_sbuf(&sb, out, len);
}

/* *val points into p (borrowed) when the value is the map's third item
 * as written by tl__wf_pack_msg; otherwise it is re-encoded into a
 * malloc'd copy that the caller must free: to keep one rule, it is always
 * a malloc'd copy here. */
int tl__wf_msg_taken(void *zone, const void *p, size_t n, int64_t *taken)
{
    mapin mi;
    int rc = map_open(&mi, p, n, zone);
    if (rc != TL_OK)
        return rc;
    *taken = map_int(&mi, "taken");
    map_close(&mi);
    return TL_OK;
}

int tl__wf_unpack_msg(const void *p, size_t n, int *kind, char *topic, const void **val,
                      size_t *vlen, int64_t *taken)
{
    mapin mi;
    int orc = map_open(&mi, p, n, NULL);
    if (orc != TL_OK)
        return orc;
    *kind = (int)map_int(&mi, "kind");
    map_str(&mi, "topic", topic, TL_WF_NAME_MAX + 1);
    void *copy;
    int rc = map_raw(&mi, "value", &copy, vlen);
    *taken = map_int(&mi, "taken");
    *val = copy;
    map_close(&mi);
    return rc;
}

/* ---- named channel rows ---- */

int tl__wf_pack_chan(uint64_t id, size_t cap, void **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pk_kint(&pk, "chan", (int64_t)id);
    pk_kint(&pk, "cap", (int64_t)cap);
    if (!sb.data) {
        msgpack_sbuffer_destroy(&sb);
        return TL_ENOMEM;
    }
    return take_sbuf(&sb, out, len);
}
