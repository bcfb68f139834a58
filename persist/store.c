/*
 * store.c -- the store, independent of its backend: the public tl_store_*
 * API, handle checks, what a checkpoint writes, the record size limit,
 * the mailbox's handover and the participants' rows.  The bytes go
 * through a backend's operations (store_backend.h; SQLite in
 * store_sqlite.c).  docs/ARCHITECTURE.md section 11.1 gives the interface.
 *
 * State machine of a store handle (function behind each transition):
 *
 *   tl_store_open --> OPEN --tl_store_attach--> OWNER (ops->claim: epoch E)
 *                      |                          |  tl_store_checkpoint:
 *                      |                          |  ops->begin(E) (refused
 *                      |                          |  once the store was
 *                      |                          |  claimed again), dirty
 *                      |                          |  chunks + head, mailbox,
 *                      |                          |  participants' rows,
 *                      |                          |  ops->commit (or
 *                      |                          |  rollback, keeping the
 *                      |                          |  dirty flags)
 *                      |                          |  tl_store_restore:
 *                      |                          |  ops->read of the newest
 *                      `------ tl_store_close <---'  (ops->release(E))
 *
 * Invariants: a handle is valid while magic is TL__MAGIC_STORE (cleared
 * at close); it owns the store while epoch > 0; a checkpoint is one
 * backend transaction, so a crash at any instant leaves the previous
 * checkpoint whole, and every record it writes is one a reader accepts
 * (st->max_doc <= TL__MAX_DOC, and the backend's max_record).
 */
#include "store_backend.h"
#include "store_sqlite.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TL__MAGIC_STORE 0x746c5354u /* "tlST" */
#define POLICY_POLL_STEPS 256
#define MAX_PARTS 4

/* A mailbox row that cannot be imported (unknown function, damaged): it
 * moves to the dead letters in the import's transaction. */
struct refusal {
    struct refusal *next;
    char xid[40];
    char reason[400];
};

struct mail {
    struct mail *next;
    char xid[40], to[64];
    void *data;
    size_t len;
};

struct tl_store {
    uint32_t magic;
    tl__store_be *be;   /* NULL when the open failed */
    int flags;
    tl_runtime *rt;
    int64_t epoch;      /* our claim while we own the store, else 0 */
    int full_next;      /* next checkpoint writes every chunk */
    int64_t last;       /* latest checkpoint id */
    int64_t last_time;  /* when we last checkpointed (ns) */
    size_t max_doc;     /* largest record document a checkpoint writes */
    tl_policy policy;
    int64_t keep;       /* retention: newest checkpoints kept, 0: all */
    int notice;         /* errmsg says what a successful call did (a
                         * restore that fell back) */
    struct {
        const tl__participant *p;
        void *ud;
    } parts[MAX_PARTS];
    size_t nparts;
    int touched;        /* next checkpoint writes even if nothing changed */
    uint64_t row_writes; /* participant rows written (tl__store_row_writes) */
    struct mail *mail;  /* mailbox rows to insert with the next checkpoint */
    char (*unmail)[40]; /* mailbox rows to take with it */
    size_t nunmail;
    struct refusal *refused; /* mailbox rows to refuse with it (dead letters) */
    char *location;     /* as opened (tl__store_watch) */
    int errcode;
    char errmsg[512];
};

struct tl__store_tx {
    tl_store *st;
};

/* ---- handles and errors ---- */

static bool valid(const tl_store *st) { return st && st->magic == TL__MAGIC_STORE; }
static bool usable(const tl_store *st) { return valid(st) && st->be; }

static int st_verr(tl_store *st, int code, const char *fmt, va_list ap)
{
    st->errcode = code;
    st->notice = 0;
    vsnprintf(st->errmsg, sizeof st->errmsg, fmt, ap);
    if (st->rt) {
        st->rt->errcode = code;
        snprintf(st->rt->errmsg, sizeof st->rt->errmsg, "%s", st->errmsg);
    }
    return code;
}

static int st_err(tl_store *st, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int st_err(tl_store *st, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    st_verr(st, code, fmt, ap);
    va_end(ap);
    return code;
}

int tl__store_fail(tl_store *st, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    st_verr(st, code, fmt, ap);
    va_end(ap);
    return code;
}

int tl_store_errcode(const tl_store *st) { return valid(st) ? st->errcode : TL_EMISUSE; }

const char *tl_store_errmsg(const tl_store *st)
{
    if (!st)
        return "no store";
    if (!valid(st))
        return "not a store handle (closed, or never opened)";
    return st->errcode == TL_OK && !st->notice ? "no error" : st->errmsg;
}

int64_t tl_store_last_checkpoint(const tl_store *st) { return valid(st) ? st->last : 0; }

/* ---- opening ---- */

/* The backend a location names: a URL scheme, or else a SQLite file. */
static const tl__store_ops *backend_for(tl_store *st, const char *location)
{
    if (strncmp(location, "postgresql://", 13) == 0 || strncmp(location, "postgres://", 11) == 0) {
#ifdef TL_HAVE_PG
        (void)st;
        return &tl__store_pg_ops;
#else
        st_err(st, TL_ENOTSUP, "tl_store_open: %.200s: this build has no PostgreSQL store "
               "backend (a plain path opens a SQLite store)", location);
        return NULL;
#endif
    }
    return &tl__store_sqlite_ops;
}

int tl_store_open(const char *path, int flags, tl_store **out)
{
    if (!out)
        return TL_EINVAL;
    tl_store *st = calloc(1, sizeof *st);
    *out = st;
    if (!st)
        return TL_ENOMEM;
    st->magic = TL__MAGIC_STORE;
    st->flags = flags;
    st->full_next = 1;
    st->max_doc = TL__MAX_DOC;
    st->keep = TL_KEEP_DEFAULT;
    if (!path)
        return st_err(st, TL_EINVAL, "tl_store_open: no path");
    const tl__store_ops *ops = backend_for(st, path);
    if (!ops)
        return st->errcode;
    st->location = strdup(path);
    if (!st->location)
        return st_err(st, TL_ENOMEM, "tl_store_open: out of memory");
    int rc = ops->open(st, path, flags, &st->be);
    if (rc == TL_OK && ops->last_id(st->be, &st->last) != TL_OK)
        st->last = 0;
    if (rc == TL_OK)
        st->errcode = TL_OK;
    return rc;
}

/* ---- ownership ---- */

int tl_store_attach(tl_store *st, tl_runtime *rt)
{
    if (!usable(st) || !rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (st->flags & TL_STORE_READONLY)
        return st_err(st, TL_EINVAL, "tl_store_attach: the store was opened read-only");
    if (st->rt || tl__store_of(rt))
        return st_err(st, TL_EINVAL, "tl_store_attach: one runtime per store, one store per runtime");
    if (!tl__pstate_get(rt))
        return st_err(st, TL_ENOMEM, "tl_store_attach: out of memory");
    int rc = st->be->ops->claim(st->be, &st->epoch);
    if (rc != TL_OK)
        return rc;
    st->rt = rt;
    tl__pstate_attach_store(rt, st); /* the state exists: cannot fail */
    st->full_next = 1;
    return TL_OK;
}

/* ---- checkpoint ---- */

/* Writes one record, refusing one the backend cannot hold. */
static int put_record(tl_store *st, int kind, uint64_t key, int64_t ckpt, const tl__buf *rec)
{
    size_t max = st->be->ops->max_record(st->be);
    if (rec->len > max)
        return st_err(st, TL_ERANGE, "the %s chunk %llu (ids %llu to %llu) is %zu bytes, more "
                      "than the store holds in one record (%zu)", tl__kind_name(kind),
                      (unsigned long long)key, (unsigned long long)key << TL__CHUNK_SHIFT,
                      ((unsigned long long)(key + 1) << TL__CHUNK_SHIFT) - 1, rec->len, max);
    return st->be->ops->put_chunk(st->be, kind, key, ckpt, rec->p, rec->len);
}

typedef struct put_ctx {
    tl_store *st;
    int64_t ckpt;
    int failed; /* put_record failed: its message is set */
} put_ctx;

static int put_cb(void *ud, int kind, uint64_t key, const tl__buf *rec)
{
    put_ctx *pc = ud;
    int rc = put_record(pc->st, kind, key, pc->ckpt, rec);
    pc->failed = rc != TL_OK;
    return rc;
}

/* In a full checkpoint, chunks the store still has but the runtime does
 * not must be written as tombstones too: those in the runtime's id range
 * are marked dirty (and so written, empty), those beyond it written here. */
typedef struct stored_scan {
    tl_store *st;
    tl__index *ix[2];
    uint64_t *beyond; /* (kind << 60) | key */
    size_t n, cap;
} stored_scan;

static int scan_key(void *ud, int kind, uint64_t key)
{
    stored_scan *sc = ud;
    tl__index *ix = sc->ix[kind == TL__KIND_TASKLETS ? 0 : 1];
    size_t at = kind <= TL__KIND_CHANS ? tl__index_find(ix, key) : SIZE_MAX; /* hot: gone */
    if (at != SIZE_MAX) {
        ix->dirty[at] = 1;
        return TL_OK;
    }
    if (sc->n == sc->cap) {
        size_t ncap = sc->cap ? 2 * sc->cap : 16;
        uint64_t *nb = realloc(sc->beyond, ncap * sizeof *nb);
        if (!nb)
            return st_err(sc->st, TL_ENOMEM, "checkpoint: out of memory");
        sc->beyond = nb;
        sc->cap = ncap;
    }
    sc->beyond[sc->n++] = ((uint64_t)kind << 60) | key;
    return TL_OK;
}

static int mark_stored_keys(tl_store *st, tl__index *tix, tl__index *cix, int64_t ckpt)
{
    stored_scan sc = {st, {tix, cix}, NULL, 0, 0};
    int rc = st->be->ops->stored_keys(st->be, scan_key, &sc);
    tl__buf tomb;
    tl__buf_init(&tomb, st->rt);
    if (rc == TL_OK && sc.n)
        rc = tl__enc_tombstone(st->rt, &tomb);
    for (size_t i = 0; i < sc.n && rc == TL_OK; i++)
        rc = put_record(st, (int)(sc.beyond[i] >> 60), sc.beyond[i] & ((1ULL << 60) - 1), ckpt,
                        &tomb);
    tl__buf_free(&tomb);
    free(sc.beyond);
    return rc;
}

static int write_kind(tl_store *st, int kind, const tl__index *ix, int64_t ckpt, int64_t *bytes)
{
    tl__buf rec;
    int rc = TL_OK;
    put_ctx pc = {st, ckpt, 0};
    tl__buf_init(&rec, st->rt);
    rec.max_doc = st->max_doc;
    for (size_t k = 0; k < ix->nkeys && rc == TL_OK; k++) {
        if (!ix->dirty[k])
            continue;
        rc = tl__split_write(st->rt, kind, ix, k, st->full_next, &rec, put_cb, &pc, bytes);
        if (rc != TL_OK && !pc.failed) /* the encoder's */
            st_err(st, rc, "the %s chunk %llu: %s", tl__kind_name(kind),
                   (unsigned long long)ix->keys[k], st->rt->errmsg);
    }
    tl__buf_free(&rec);
    return rc;
}

static bool any_dirty(const tl__index *ix)
{
    for (size_t k = 0; k < ix->nkeys; k++)
        if (ix->dirty[k])
            return true;
    return false;
}

static int put_head(tl_store *st, int64_t ckpt, int64_t now, const tl__index *tix,
                    const tl__index *cix, int64_t bytes)
{
    tl__buf rec;
    tl__buf_init(&rec, st->rt);
    rec.max_doc = st->max_doc;
    int rc = tl__enc_head(st->rt, now, tix, cix, &rec);
    if (rc != TL_OK) {
        tl__buf_free(&rec); /* what was written before the failure */
        return st_err(st, rc, "the head: %s", st->rt->errmsg);
    }
    tl__ckpt_row row = {ckpt, now, (int64_t)tix->total, (int64_t)cix->total,
                        bytes + (int64_t)rec.len, rec.p, rec.len};
    if (rec.len > st->be->ops->max_record(st->be))
        rc = st_err(st, TL_ERANGE, "the head is %zu bytes, more than the store holds in one "
                    "record", rec.len);
    else
        rc = st->be->ops->put_head(st->be, &row);
    tl__buf_free(&rec);
    return rc;
}

/* The mailbox rows queued by tl_store_export and tl_store_import. */
static int write_mail(tl_store *st, int64_t now)
{
    int rc = TL_OK;
    for (struct mail *m = st->mail; m && rc == TL_OK; m = m->next) {
        tl__mail_row row = {m->xid, m->to, st->rt ? st->rt->node : "", now, m->data, m->len};
        rc = st->be->ops->mail_put(st->be, &row);
    }
    for (size_t i = 0; i < st->nunmail && rc == TL_OK; i++)
        rc = st->be->ops->mail_take(st->be, st->unmail[i]);
    for (struct refusal *r = st->refused; r && rc == TL_OK; r = r->next)
        rc = st->be->ops->mail_refuse(st->be, r->xid, r->reason);
    return rc;
}

/* Every participant writes its rows in the checkpoint's transaction. */
static int write_parts(tl_store *st)
{
    tl__store_tx tx = {st};
    for (size_t i = 0; i < st->nparts; i++) {
        int saved = st->errcode;
        st->errcode = TL_OK;
        int rc = st->parts[i].p->write(st->parts[i].ud, &tx);
        if (rc != TL_OK)
            return st->errcode ? st->errcode
                               : st_err(st, rc, "writing the rows of the %s",
                                        st->parts[i].p->name);
        st->errcode = saved;
    }
    return TL_OK;
}

/* The checkpoint committed: each participant's rows are durable. */
static void tell_committed(tl_store *st)
{
    for (size_t i = 0; i < st->nparts; i++)
        if (st->parts[i].p->committed)
            st->parts[i].p->committed(st->parts[i].ud);
}

static int write_all(tl_store *st, tl__index *tix, tl__index *cix, int64_t ckpt, int64_t now)
{
    int64_t bytes = 0;
    int rc = st->full_next ? mark_stored_keys(st, tix, cix, ckpt) : TL_OK;
    if (rc == TL_OK)
        rc = write_kind(st, TL__KIND_TASKLETS, tix, ckpt, &bytes);
    if (rc == TL_OK)
        rc = write_kind(st, TL__KIND_CHANS, cix, ckpt, &bytes);
    if (rc == TL_OK)
        rc = put_head(st, ckpt, now, tix, cix, bytes);
    if (rc == TL_OK)
        rc = write_mail(st, now);
    if (rc == TL_OK)
        rc = write_parts(st);
    return rc;
}

static int write_checkpoint(tl_store *st, tl__index *tix, tl__index *cix, int64_t ckpt)
{
    int64_t now = tl_now(st->rt);
    int rc = st->be->ops->begin(st->be, st->epoch);
    if (rc != TL_OK)
        return rc;
    rc = write_all(st, tix, cix, ckpt, now);
    if (rc == TL_OK && st->keep > 0 && ckpt > st->keep) /* retention, as we go */
        rc = st->be->ops->retire(st->be, ckpt - st->keep + 1);
    if (rc == TL_OK)
        rc = st->be->ops->commit(st->be);
    if (rc != TL_OK) {
        char keep[sizeof st->errmsg];
        memcpy(keep, st->errmsg, sizeof keep);
        st->be->ops->rollback(st->be);
        memcpy(st->errmsg, keep, sizeof keep);
    }
    st->last_time = now;
    return rc;
}

int tl_store_renew(tl_store *st)
{
    if (!usable(st))
        return TL_EMISUSE;
    if (!st->rt || !st->epoch)
        return st_err(st, TL_EINVAL, "tl_store_renew: attach a runtime first");
    int rc = st->be->ops->begin(st->be, st->epoch);
    if (rc == TL_OK)
        rc = st->be->ops->commit(st->be);
    if (rc != TL_OK)
        st->be->ops->rollback(st->be);
    return rc;
}

/* Names the checkpoint that failed and the one that stays the newest. */
static void fail_checkpoint(tl_store *st, int rc)
{
    char why[sizeof st->errmsg], newest[64] = "the store has no checkpoint yet";
    memcpy(why, st->errmsg, sizeof why);
    if (st->last)
        snprintf(newest, sizeof newest, "checkpoint %lld stays the newest", (long long)st->last);
    st_err(st, rc, "checkpoint %lld not written (%s): %.400s", (long long)st->last + 1, newest,
           why);
}

int tl_store_checkpoint(tl_store *st)
{
    tl__index tix, cix;
    if (!usable(st))
        return TL_EMISUSE;
    if (!st->rt)
        return st_err(st, TL_EINVAL, "tl_store_checkpoint: attach a runtime first");
    if (st->last == INT64_MAX) /* the next id would overflow */
        return st_err(st, TL_ERANGE, "tl_store_checkpoint: checkpoint ids are exhausted (the "
                      "newest is %lld); nothing was written -- copy the runtime into a new "
                      "store", (long long)st->last);
    if (st->rt->current)
        return st_err(st, TL_EBUSY, "tl_store_checkpoint: called from inside a tasklet; "
                      "checkpoints happen between scheduler steps");
    if (tl__pstate_wants_full(st->rt))
        st->full_next = 1; /* lost track of what changed: write everything */
    int rc = tl__index_build(st->rt, TL__KIND_TASKLETS, st->full_next, &tix);
    if (rc != TL_OK)
        return st_err(st, rc, "%s", st->rt->errmsg);
    rc = tl__index_build(st->rt, TL__KIND_CHANS, st->full_next, &cix);
    if (rc != TL_OK) {
        tl__index_free(st->rt, &tix);
        return st_err(st, rc, "%s", st->rt->errmsg);
    }
    if (st->full_next || st->touched || st->mail || st->nunmail || st->refused ||
        any_dirty(&tix) ||
        any_dirty(&cix)) {
        rc = write_checkpoint(st, &tix, &cix, st->last + 1);
        if (rc == TL_OK && st->full_next && st->be->ops->settle)
            st->be->ops->settle(st->be); /* its bytes are the full one's cost */
        if (rc == TL_OK) {
            tl__split_commit(st->rt, TL__KIND_TASKLETS, &tix, st->full_next);
            tl__split_commit(st->rt, TL__KIND_CHANS, &cix, st->full_next);
            st->last++;
            st->full_next = 0;
            st->touched = 0;
            tl__clear_dirty(st->rt);
            tell_committed(st);
        } else {
            fail_checkpoint(st, rc);
        }
    }
    tl__index_free(st->rt, &tix);
    tl__index_free(st->rt, &cix);
    return rc;
}

/* ---- restore ---- */

typedef struct raw_list {
    tl__raw *raws;
    size_t n, cap;
} raw_list;

typedef struct read_lists {
    tl_store *st;
    raw_list head, chunks;
} read_lists;

static int raw_push(void *ud, const tl__raw *rec)
{
    read_lists *r = ud;
    raw_list *l = rec->kind == 0 ? &r->head : &r->chunks;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        tl__raw *nr = realloc(l->raws, ncap * sizeof *nr);
        if (!nr)
            return st_err(r->st, TL_ENOMEM, "restore: out of memory");
        l->raws = nr;
        l->cap = ncap;
    }
    void *copy = malloc(rec->n ? rec->n : 1);
    if (!copy)
        return st_err(r->st, TL_ENOMEM, "restore: out of memory");
    if (rec->n)
        memcpy(copy, rec->p, rec->n);
    l->raws[l->n++] = (tl__raw){rec->kind, rec->key, copy, rec->n};
    return TL_OK;
}

static void raw_free(raw_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free((void *)l->raws[i].p);
    free(l->raws);
}

/* Loads checkpoint at (0: the newest) into the attached runtime; *ckpt
 * the one read.  On failure the runtime is empty again (tl__load). */
static int restore_one(tl_store *st, int64_t at, int64_t *ckpt, uint32_t *format)
{
    char where[64];
    read_lists r = {st, {0}, {0}};
    int rc = st->be->ops->read(st->be, at, ckpt, raw_push, &r);
    if (rc == TL_OK && r.head.n != 1)
        rc = st_err(st, TL_ESTORE, "restore: the backend gave no head for checkpoint %lld",
                    (long long)*ckpt);
    tl__pstate *ps = tl__pstate_peek(st->rt); /* attached: it exists */
    if (rc == TL_OK) {
        snprintf(where, sizeof where, "store checkpoint %lld", (long long)*ckpt);
        tl__split_reset(st->rt, ps);
        ps->restoring = 1; /* objects note their records */
        rc = tl__load(st->rt, &r.head.raws[0], r.chunks.raws, r.chunks.n, where, format);
        ps->restoring = 0;
        if (rc == TL_OK)
            tl__split_restored(st->rt);
        if (rc != TL_OK)
            st_err(st, rc, "%s", st->rt->errmsg);
    }
    raw_free(&r.head);
    raw_free(&r.chunks);
    return rc;
}

/* The newest checkpoint older than ckpt (0: none, or unreadable). */
static int64_t older_checkpoint(tl_store *st, int64_t ckpt)
{
    int64_t id = 0;
    return st->be->ops->prev_id(st->be, ckpt, &id) == TL_OK ? id : 0;
}

/* Tries older checkpoints after the newest failed with rc; keeps the
 * first failure's message in front of the outcome. */
static int restore_fallback(tl_store *st, int64_t failed, int rc, int64_t *ckpt,
                            uint32_t *format)
{
    char first[sizeof st->errmsg];
    memcpy(first, st->errmsg, sizeof first);
    int64_t at = failed;
    while (rc != TL_OK && rc != TL_ENOMEM && (at = older_checkpoint(st, at)) > 0)
        rc = restore_one(st, at, ckpt, format);
    if (rc != TL_OK)
        return st_err(st, rc, "no checkpoint loads; the newest failed: %.400s", first);
    st_err(st, TL_OK, "restored checkpoint %lld, the newest that loads; skipped the newer: "
           "%.380s", (long long)*ckpt, first);
    st->notice = 1;
    return TL_OK;
}

int tl_store_restore_at(tl_store *st, int64_t at, int flags, int64_t *restored)
{
    int64_t ckpt = at;
    uint32_t format = 0;
    if (restored)
        *restored = 0;
    if (!usable(st))
        return TL_EMISUSE;
    if (!st->rt)
        return st_err(st, TL_EINVAL, "tl_store_restore: attach a runtime first");
    st->notice = 0;
    if (at < 0 || (flags & ~TL_RESTORE_FALLBACK))
        return st_err(st, TL_EINVAL, "tl_store_restore_at: bad checkpoint or flags");
    int rc = restore_one(st, at, &ckpt, &format);
    if (rc != TL_OK && rc != TL_ENOENT && rc != TL_ENOMEM && rc != TL_ENOTEMPTY &&
        (flags & TL_RESTORE_FALLBACK))
        rc = restore_fallback(st, ckpt ? ckpt : st->last, rc, &ckpt, &format);
    if (rc != TL_OK)
        return rc;
    if (restored)
        *restored = ckpt;
    /* the runtime now equals checkpoint ckpt.  The next checkpoint is
     * written whole when that is not the newest (newer rows must not show
     * through) or is of an older format (no checkpoint mixes formats). */
    st->full_next = format != TL_FORMAT_VERSION || ckpt != st->last;
    return TL_OK;
}

int tl_store_restore(tl_store *st) { return tl_store_restore_at(st, 0, 0, NULL); }

/* ---- pruning and limits ---- */

int tl__store_prune(tl_store *st, int64_t keep)
{
    if (!usable(st) || !st->epoch)
        return TL_EMISUSE;
    if (keep < 1)
        return st_err(st, TL_EINVAL, "prune: keep at least one checkpoint");
    int64_t newest = 0;
    int rc = st->be->ops->begin(st->be, st->epoch);
    if (rc == TL_OK)
        rc = st->be->ops->last_id(st->be, &newest);
    if (rc == TL_OK && newest > keep)
        rc = st->be->ops->prune(st->be, newest - keep + 1);
    if (rc == TL_OK)
        return st->be->ops->commit(st->be);
    st->be->ops->rollback(st->be);
    return rc;
}

int tl__store_refuse(tl_store *st, const char *xid, const char *reason)
{
    if (!usable(st) || !xid || !reason)
        return TL_EMISUSE;
    if (st->flags & TL_STORE_READONLY)
        return st_err(st, TL_EINVAL, "refusing a mailbox row: the store was opened read-only");
    int rc = st->be->ops->begin(st->be, 0); /* the mailbox only: not fenced */
    if (rc == TL_OK)
        rc = st->be->ops->mail_refuse(st->be, xid, reason);
    if (rc == TL_OK)
        return st->be->ops->commit(st->be);
    st->be->ops->rollback(st->be);
    return rc;
}

void tl__store_limit_doc(tl_store *st, size_t max_doc)
{
    if (valid(st))
        st->max_doc = max_doc < TL__MAX_DOC ? max_doc : TL__MAX_DOC;
}

/* ---- policy ---- */

static int policy_hook(void *ud, int idle)
{
    tl_store *st = ud;
    const tl_policy *p = &st->policy;
    bool due = (!idle && p->every_steps) || (idle && p->on_idle);
    if (!due && p->every_ms)
        due = tl_now(st->rt) - st->last_time >= (int64_t)p->every_ms * 1000000;
    return due ? tl_store_checkpoint(st) : TL_OK;
}

int tl_store_set_policy(tl_store *st, const tl_policy *p)
{
    if (!usable(st) || !p)
        return TL_EMISUSE;
    if (!st->rt)
        return st_err(st, TL_EINVAL, "tl_store_set_policy: attach a runtime first");
    if (p->keep < TL_KEEP_ALL)
        return st_err(st, TL_EINVAL, "tl_store_set_policy: keep must be at least 1, or 0 "
                      "(the default, %d), or TL_KEEP_ALL", TL_KEEP_DEFAULT);
    st->policy = *p;
    st->keep = p->keep == 0 ? TL_KEEP_DEFAULT : p->keep == TL_KEEP_ALL ? 0 : p->keep;
    st->last_time = tl_now(st->rt);
    tl_runtime *rt = st->rt;
    bool any = p->every_steps || p->every_ms || p->on_idle;
    tl__pstate_set_policy(rt, any ? policy_hook : NULL, st,
                          p->every_steps ? p->every_steps : p->every_ms ? POLICY_POLL_STEPS : 0);
    return TL_OK;
}

/* ---- handover through the mailbox ---- */

static void mail_clear(tl_store *st)
{
    while (st->mail) {
        struct mail *m = st->mail;
        st->mail = m->next;
        tl_snapshot_free(st->rt, m->data, m->len);
        free(m);
    }
    free(st->unmail);
    st->unmail = NULL;
    st->nunmail = 0;
}

/* A fresh transfer id: 32 hex digits from the kernel's random source. */
int tl__new_xid(char out[40])
{
    unsigned char r[16];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(r, 1, sizeof r, f) : 0;
    if (f)
        fclose(f);
    if (got != sizeof r)
        return TL_EIO;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    return TL_OK;
}

/* The export failed, nothing was written: the tasklet comes back, under
 * a new id. */
static void export_undo(tl_store *st, tl_runtime *rt, struct mail *m, int rc)
{
    tl_tasklet *back;
    char keep[sizeof st->errmsg];
    memcpy(keep, st->errmsg, sizeof keep);
    if (tl__snapshot_import(rt, m->data, m->len, &back) != TL_OK)
        snprintf(keep, sizeof keep, "%.200s; and the tasklet could not be put back: %.200s",
                 st->errmsg, rt->errmsg);
    memcpy(st->errmsg, keep, sizeof keep);
    st->errcode = rc;
}

int tl_store_export(tl_store *st, tl_tasklet *h, const char *to)
{
    tl_tasklet *t = tl__tasklet_at(h);
    if (!usable(st) || !t)
        return t || !h ? TL_EMISUSE : tl__bad_tasklet(h, "tl_store_export");
    tl_runtime *rt = t->rt;
    if (st->rt != rt)
        return st_err(st, TL_EINVAL, "tl_store_export: the tasklet's runtime is not the one "
                      "attached to this store");
    if (!to || !*to || strlen(to) >= 64)
        return st_err(st, TL_EINVAL, "tl_store_export: the node name must be 1 to 63 bytes");
    struct mail *m = calloc(1, sizeof *m);
    if (!m)
        return st_err(st, TL_ENOMEM, "tl_store_export: out of memory");
    int rc = tl__new_xid(m->xid);
    if (rc != TL_OK) {
        free(m);
        return st_err(st, rc, "tl_store_export: no random source for a transfer id");
    }
    snprintf(m->to, sizeof m->to, "%s", to);
    rc = tl__snapshot_save_moving(t, &m->data, &m->len);
    if (rc != TL_OK) {
        free(m);
        return st_err(st, rc, "tl_store_export: %s", rt->errmsg);
    }
    char msg[128];
    snprintf(msg, sizeof msg, "moved to node '%s' through the store", to);
    tl__tasklet_depart(t, TL_EMOVED, msg);
    st->mail = m;
    rc = tl_store_checkpoint(st);
    st->mail = NULL;
    if (rc != TL_OK)
        export_undo(st, rt, m, rc);
    tl_snapshot_free(rt, m->data, m->len);
    free(m);
    return rc;
}

/* What tl_store_import has taken in so far. */
typedef struct import_state {
    tl_store *st;
    tl_runtime *rt;
    tl_tasklet **got;
    size_t n, cap;
    size_t refused;     /* rows turned into dead letters */
} import_state;

static int refuse_row(import_state *im, const char *xid, int rc)
{
    struct refusal *r = calloc(1, sizeof *r);
    if (!r)
        return st_err(im->st, TL_ENOMEM, "tl_store_import: out of memory");
    snprintf(r->xid, sizeof r->xid, "%s", xid);
    snprintf(r->reason, sizeof r->reason, "%s: %.370s", tl_errname(rc), im->rt->errmsg);
    r->next = im->st->refused;
    im->st->refused = r;
    im->refused++;
    return TL_OK;
}

static void free_refusals(tl_store *st)
{
    while (st->refused) {
        struct refusal *r = st->refused;
        st->refused = r->next;
        free(r);
    }
}

static int import_row(void *ud, const tl__mail_row *m)
{
    import_state *im = ud;
    tl_store *st = im->st;
    if (im->n == im->cap) {
        size_t ncap = im->cap ? 2 * im->cap : 16;
        tl_tasklet **ng = realloc(im->got, ncap * sizeof *ng);
        if (ng)
            im->got = ng;
        char (*nu)[40] = realloc(st->unmail, ncap * sizeof *nu);
        if (nu)
            st->unmail = nu;
        if (!ng || !nu)
            return st_err(st, TL_ENOMEM, "tl_store_import: out of memory");
        im->cap = ncap;
    }
    snprintf(st->unmail[im->n], 40, "%s", m->xid);
    int rc = tl__snapshot_import_held(im->rt, m->data, m->len, &im->got[im->n]);
    if (rc == TL_ENOMEM)
        return st_err(st, rc, "tl_store_import: mailbox row %s: %s", m->xid, im->rt->errmsg);
    if (rc != TL_OK) /* this row can never come in here: a dead letter */
        return refuse_row(im, m->xid, rc);
    im->n++;
    st->nunmail = im->n;
    return TL_OK;
}

/* The rows taken: with the runtime's checkpoint when st is its store,
 * else in a transaction of their own. */
static int import_commit(tl_store *st, import_state *im)
{
    if (st->rt == im->rt)
        return tl_store_checkpoint(st); /* the takes ride on it */
    int rc = write_mail(st, 0);
    if (rc == TL_OK)
        rc = st->be->ops->commit(st->be);
    return rc;
}

static int import_check(tl_store *st, tl_runtime *rt)
{
    if (!usable(st) || !rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (st->flags & TL_STORE_READONLY)
        return st_err(st, TL_EINVAL, "tl_store_import: the store was opened read-only");
    if (tl__store_of(rt) && tl__store_of(rt) != st)
        return st_err(st, TL_EINVAL, "tl_store_import: the runtime checkpoints into another "
                      "store; the handover would not be one transaction");
    if (!rt->node[0])
        return st_err(st, TL_EINVAL, "tl_store_import: the runtime has no node id");
    return TL_OK;
}

int tl_store_import(tl_store *st, tl_runtime *rt, size_t *count)
{
    if (count)
        *count = 0;
    int rc = import_check(st, rt);
    if (rc != TL_OK)
        return rc;
    st->notice = 0; /* a notice tells of the last call only */
    int attached = st->rt == rt;
    import_state im = {st, rt, NULL, 0, 0, 0};
    rc = attached ? TL_OK : st->be->ops->begin(st->be, 0);
    if (rc == TL_OK)
        rc = st->be->ops->mail_read(st->be, rt->node, import_row, &im);
    if (rc == TL_OK && (im.n || im.refused))
        rc = import_commit(st, &im);
    if (!attached && (rc != TL_OK || !(im.n || im.refused)))
        st->be->ops->rollback(st->be);
    /* all or nothing: the imported waiters looked for no partner and
     * issued no remote operation yet (held), so undoing them undoes
     * everything; once committed, they take up their waits */
    for (size_t i = 0; i < im.n; i++) {
        if (rc == TL_OK)
            tl__import_restart(rt, im.got[i]);
        else
            tl__tasklet_depart(im.got[i], TL_EMOVED, "import undone");
    }
    if (rc == TL_OK && count)
        *count = im.n;
    if (rc == TL_OK && im.refused) {
        st_err(st, TL_OK, "tl_store_import: %zu imported; %zu mailbox row%s refused as dead "
               "letters (table mailbox_refused), the last: %.40s: %.300s", im.n, im.refused,
               im.refused == 1 ? "" : "s", st->refused->xid, st->refused->reason);
        st->notice = 1;
    }
    free_refusals(st);
    free(im.got);
    free(st->unmail);
    st->unmail = NULL;
    st->nunmail = 0;
    return rc;
}

/* ---- participants ---- */

int tl__store_join(tl_store *st, const tl__participant *p, void *ud)
{
    if (!usable(st) || !p || !p->write)
        return TL_EMISUSE;
    if (st->nparts == MAX_PARTS)
        return st_err(st, TL_ENOMEM, "the store has %d participants already", MAX_PARTS);
    st->parts[st->nparts].p = p;
    st->parts[st->nparts].ud = ud;
    st->nparts++;
    return TL_OK;
}

const tl__participant *tl__store_part(tl_store *st, size_t i, void **ud)
{
    if (!valid(st) || i >= st->nparts)
        return NULL;
    *ud = st->parts[i].ud;
    return st->parts[i].p;
}

void tl__store_leave(tl_store *st, const tl__participant *p, void *ud)
{
    if (!valid(st))
        return;
    for (size_t i = 0; i < st->nparts; i++) {
        if (st->parts[i].p == p && st->parts[i].ud == ud) {
            memmove(&st->parts[i], &st->parts[i + 1], (st->nparts - i - 1) * sizeof st->parts[0]);
            st->nparts--;
            return;
        }
    }
}

int tl__tx_put(tl__store_tx *tx, const tl__table *t, const tl__row *r)
{
    tl_store *st = tx->st;
    st->row_writes++;
    return st->be->ops->row_put(st->be, t, r);
}

int tl__tx_del(tl__store_tx *tx, const tl__table *t, const char *key)
{
    tl_store *st = tx->st;
    st->row_writes++;
    return st->be->ops->row_del(st->be, t, key);
}

int tl__tx_clear(tl__store_tx *tx, const tl__table *t)
{
    tl_store *st = tx->st;
    st->row_writes++;
    return st->be->ops->row_clear(st->be, t);
}

int tl__store_rows(tl_store *st, const tl__table *t, tl__row_fn fn, void *ud)
{
    if (!usable(st) || !t || !fn)
        return TL_EMISUSE;
    return st->be->ops->rows_read(st->be, t, fn, ud);
}

void tl__store_touch(tl_store *st)
{
    if (valid(st))
        st->touched = 1;
}

uint64_t tl__store_row_writes(const tl_store *st) { return valid(st) ? st->row_writes : 0; }

tl__store_be *tl__store_backend(tl_store *st, const char **location)
{
    if (location)
        *location = valid(st) ? st->location : NULL;
    return usable(st) ? st->be : NULL;
}

tl__store_be *tl__tx_backend(tl__store_tx *tx) { return tx->st->be; }

void *tl__store_sqlite(tl_store *st) { return usable(st) ? tl__store_sqlite_db(st->be) : NULL; }

/* ---- closing ---- */

int tl_store_close(tl_store *st)
{
    int rc = TL_OK;
    if (!st)
        return TL_OK;
    if (!valid(st))
        return TL_EMISUSE;
    if (st->rt && st->policy.on_close && !st->rt->running)
        rc = tl_store_checkpoint(st);
    if (st->epoch)
        st->be->ops->release(st->be, st->epoch);
    mail_clear(st);
    while (st->nparts) { /* each participant forgets this store */
        st->nparts--;
        if (st->parts[st->nparts].p->detach)
            st->parts[st->nparts].p->detach(st->parts[st->nparts].ud);
    }
    if (st->rt)
        tl__pstate_detach_store(st->rt);
    if (st->be)
        st->be->ops->close(st->be);
    st->magic = 0;
    free(st->location);
    free(st);
    return rc;
}
