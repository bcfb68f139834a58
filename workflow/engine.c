/*
 * engine.c -- the workflow engine: workflows by id, the run loop, group
 * commit, restore.
 *
 * The run loop (tl_wf_run), one round:
 *
 *   take finished jobs from the pool (tl__wf_job_done) and fire due timers
 *   take in posted messages if another process wrote the store (intake)
 *   run runnable tasklets (tl_run_steps, at most cfg.batch_steps)
 *   commit (tl_wf_commit): ONE transaction holding the checkpoint's chunks,
 *     every changed workflow row, every recorded step, every message
 *     received, and the TL_WF_TX steps' own writes; then hand the
 *     recorded results to their workflows (after the commit, never before)
 *   if nothing is runnable: poll(eventfd of the pool, inotify on the
 *     store's directory) until the next deadline
 *
 * Group commit falls out of the loop: whatever finished while the last
 * commit was being written goes into the next one, so with many
 * workflows one fsync carries many steps.
 *
 * Invariants: a wf_rec exists for every live workflow (hash by id, the
 * tasklet's userdata); finished ones stay until their final row is
 * committed, then go.  wf->live counts the unfinished.
 */
#define _GNU_SOURCE
#include "wf_internal.h"
#include "../persist/store_sqlite.h"

#include <poll.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int tl__wf_err(tl_wf *wf, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(wf->errmsg, sizeof wf->errmsg, fmt, ap);
    va_end(ap);
    tl__seterr(wf->rt, code, "%s", wf->errmsg);
    return code;
}

static int bad(const tl_wf *wf) { return !wf || wf->magic != WF_MAGIC; }

/* ---- workflows by id ---- */

static size_t hash_id(const char *s)
{
    size_t h = 1469598103934665603ull & SIZE_MAX;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static wf_rec *hashed(tl_wf *wf, const char *id)
{
    if (!wf->hcap)
        return NULL;
    for (wf_rec *r = wf->hash[hash_id(id) & (wf->hcap - 1)]; r; r = r->hnext)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

/* The live record of id (*out NULL: none), its row read first if it was
 * restored lazily (lazy.c); an error only if that row cannot be read. */
int tl__wf_lookup(tl_wf *wf, const char *id, wf_rec **out)
{
    *out = hashed(wf, id);
    return *out || !wf->nlazy ? TL_OK : tl__wf_lazy_wake(wf, id, out);
}

wf_rec *tl__wf_find(tl_wf *wf, const char *id)
{
    wf_rec *r;
    if (tl__wf_lookup(wf, id, &r) != TL_OK)
        wf->lazy_rc = tl_errcode(wf->rt); /* tl_wf_run reports it */
    return r;
}

/* The record of the workflow t runs (NULL: not a workflow's tasklet). */
wf_rec *tl__wf_rec_of(tl_tasklet *t)
{
    wf_rec *r = tl_tasklet_userdata(t);
    return r && r == r->wf->stub ? tl__wf_lazy_of(r->wf, t) : r;
}

static int hash_grow(tl_wf *wf)
{
    size_t ncap = wf->hcap ? wf->hcap * 2 : 64;
    wf_rec **nh = calloc(ncap, sizeof *nh);
    if (!nh)
        return TL_ENOMEM;
    for (size_t i = 0; i < wf->hcap; i++)
        for (wf_rec *r = wf->hash[i], *nx; r; r = nx) {
            nx = r->hnext;
            size_t b = hash_id(r->id) & (ncap - 1);
            r->hnext = nh[b];
            nh[b] = r;
        }
    free(wf->hash);
    wf->hash = nh;
    wf->hcap = ncap;
    return TL_OK;
}

int tl__wf_hash_put(tl_wf *wf, wf_rec *r)
{
    if ((wf->live + 1) * 2 > wf->hcap && hash_grow(wf) != TL_OK)
        return TL_ENOMEM;
    size_t b = hash_id(r->id) & (wf->hcap - 1);
    r->hnext = wf->hash[b];
    wf->hash[b] = r;
    return TL_OK;
}

void tl__wf_hash_del(tl_wf *wf, wf_rec *r)
{
    for (wf_rec **p = &wf->hash[hash_id(r->id) & (wf->hcap - 1)]; *p; p = &(*p)->hnext)
        if (*p == r) {
            *p = r->hnext;
            return;
        }
}

void tl__wf_dirty(tl_wf *wf, wf_rec *r)
{
    r->updated = tl_now(wf->rt);
    if (!r->dirty) {
        r->dirty = 1;
        r->dnext = wf->dirty;
        wf->dirty = r;
    }
}

/* A timer entry naming r left the heap; true when r was freed (then the
 * entry is stale, and r goes with its last one). */
static bool timer_release(wf_rec *r)
{
    r->ntimers--;
    if (!r->gone)
        return false;
    if (!r->ntimers)
        free(r);
    return true;
}

/* Frees what r holds; r itself stays while timer entries name it
 * (r->gone: they are dropped as they come out of the heap), so freeing
 * never walks the heap. */
void tl__wf_rec_free(tl_wf *wf, wf_rec *r)
{
    if (r->job) {
        atomic_store(&r->job->canceled, 1);
        r->job->rec = NULL;
    }
    for (size_t i = 0; wf->joined && i < wf->hcap; i++) /* none joined: no joiner */
        for (wf_rec *c = wf->hash[i]; c; c = c->hnext)
            if (c->joiner == r)
                c->joiner = NULL;
    while (r->mail) {
        wf_msg *m = r->mail;
        r->mail = m->next;
        free(m->val);
        free(m);
    }
    if (r->t) {
        tl_tasklet_set_userdata(r->t, NULL);
        tl_tasklet_release(r->t);
    }
    tl_chan_release(r->wake);
    free(r->sarg);
    free(r->result);
    if (r->ntimers)
        r->gone = 1;
    else
        free(r);
}

/* ---- timers: a binary heap by deadline ---- */

static void heap_swap(wf_timer *a, wf_timer *b)
{
    wf_timer t = *a;
    *a = *b;
    *b = t;
}

int tl__wf_timer_add(tl_wf *wf, int64_t at, wf_rec *r, int kind)
{
    if (wf->ntimers == wf->captimers) {
        size_t nc = wf->captimers ? wf->captimers * 2 : 64;
        wf_timer *nt = realloc(wf->timers, nc * sizeof *nt);
        if (!nt)
            return TL_ENOMEM;
        wf->timers = nt;
        wf->captimers = nc;
    }
    size_t i = wf->ntimers++;
    wf->timers[i] = (wf_timer){at, r, r->gen, kind, r->attempt};
    r->ntimers++;
    while (i > 0 && wf->timers[(i - 1) / 2].at > wf->timers[i].at) {
        heap_swap(&wf->timers[(i - 1) / 2], &wf->timers[i]);
        i = (i - 1) / 2;
    }
    return TL_OK;
}

static wf_timer heap_pop(tl_wf *wf)
{
    wf_timer top = wf->timers[0];
    wf->timers[0] = wf->timers[--wf->ntimers];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < wf->ntimers && wf->timers[l].at < wf->timers[m].at)
            m = l;
        if (l + 1 < wf->ntimers && wf->timers[l + 1].at < wf->timers[m].at)
            m = l + 1;
        if (m == i)
            break;
        heap_swap(&wf->timers[i], &wf->timers[m]);
        i = m;
    }
    return top;
}

int64_t tl__wf_next_timer(const tl_wf *wf)
{
    return wf->ntimers ? wf->timers[0].at : 0;
}

void tl__wf_fire_timers(tl_wf *wf)
{
    int64_t now = tl_now(wf->rt);
    while (wf->ntimers && wf->timers[0].at <= now) {
        wf_timer tm = heap_pop(wf);
        if (!timer_release(tm.rec))
            tl__wf_timer_fire(wf, &tm);
    }
}

/* ---- steps ---- */

const tl_wf_step *tl__wf_step_find(tl_wf *wf, const char *name)
{
    for (size_t i = 0; i < wf->nsteps; i++)
        if (strcmp(wf->steps[i]->name, name) == 0)
            return wf->steps[i];
    return NULL;
}

int tl_wf_register_step(tl_wf *wf, const tl_wf_step *s)
{
    if (bad(wf))
        return TL_EMISUSE;
    if (!s || !s->fn || !s->name || !s->name[0] || strlen(s->name) > TL_WF_NAME_MAX)
        return tl__wf_err(wf, TL_EINVAL, "tl_wf_register_step: a step needs a name of 1 to %d "
                          "bytes and a function", TL_WF_NAME_MAX);
    const tl_wf_step *old = tl__wf_step_find(wf, s->name);
    if (old)
        return old == s ? TL_OK
                        : tl__wf_err(wf, TL_EEXIST, "tl_wf_register_step: another step is "
                                     "named %s", s->name);
    if (wf->nsteps == wf->capsteps) {
        size_t nc = wf->capsteps ? wf->capsteps * 2 : 16;
        const tl_wf_step **ns = realloc(wf->steps, nc * sizeof *ns);
        if (!ns)
            return tl__wf_err(wf, TL_ENOMEM, "tl_wf_register_step: out of memory");
        wf->steps = ns;
        wf->capsteps = nc;
    }
    wf->steps[wf->nsteps++] = s;
    return TL_OK;
}

int tl_wf_register(tl_wf *wf, const tl_func *fn)
{
    if (bad(wf))
        return TL_EMISUSE;
    if (!fn || fn->nfields == 0 || strcmp(fn->fields[0].name, "arg") != 0 ||
        fn->fields[0].type != TL_T_VALUE || fn->fields[0].offset != 0)
        return tl__wf_err(wf, TL_ESCHEMA, "tl_wf_register: %s: a workflow function's locals "
                          "begin with `tl_value arg` (schema field \"arg\" of type TL_T_VALUE, "
                          "listed first)", fn && fn->name ? fn->name : "(null)");
    int rc = tl_register(wf->rt, fn);
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "%s", tl_errmsg(wf->rt));
    return TL_OK;
}

/* ---- the engine ---- */

/* The engine is a participant of its store: its rows go into every
 * checkpoint transaction. */
static int part_write(void *ud, tl__store_tx *tx) { return tl__wf_db_write(ud, tx); }
static void part_detach(void *ud)
{
    tl__wf_db_finalize(ud); /* the store closes: its connection with it */
    ((tl_wf *)ud)->st = NULL;
}
static void part_committed(void *ud) { tl__wf_committed(ud); }
static const tl__participant wf_part = {"workflow engine", part_write, part_detach,
                                        part_committed, "wf", tl__wf_cargo_out,
                                        tl__wf_cargo_in};

static int engine_init(tl_wf *wf)
{
    int rc = tl_store_attach(wf->st, wf->rt);
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "tl_wf_new: %s", tl_store_errmsg(wf->st));
    wf->db = tl__store_sqlite(wf->st);
    if (wf->db)
        tl__wf_busy(wf->db, 5000); /* the store's own timeout, in short waits */
    rc = tl__wf_db_init(wf);
    if (rc == TL_OK)
        rc = tl_register(wf->rt, &tl__wf_root);
    if (rc == TL_OK)
        rc = tl_register(wf->rt, &tl_wf__await);
    if (rc != TL_OK)
        return rc;
    rc = tl__store_join(wf->st, &wf_part, wf);
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "tl_wf_new: %s", tl_store_errmsg(wf->st));
    rc = tl__wf_pool_start(&wf->pool, wf->cfg.workers);
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "tl_wf_new: cannot start the worker threads");
    const char *path = wf->db ? sqlite3_db_filename(wf->db, "main") : NULL;
    if (wf->db) /* PostgreSQL: the listener's socket (tl__wf_dbs_init) */
        wf->watch = path && path[0] ? tl__wf_watch_open(path, 1) : -1;
    wf->poked = 1; /* the first round looks at the store */
    return TL_OK;
}

int tl_wf_new(tl_runtime *rt, tl_store *st, const tl_wf_config *cfg, tl_wf **out)
{
    if (!out)
        return TL_EINVAL;
    *out = NULL;
    if (!rt || !st)
        return TL_EINVAL;
    tl_wf *wf = calloc(1, sizeof *wf);
    if (!wf)
        return tl__seterr(rt, TL_ENOMEM, "tl_wf_new: out of memory");
    wf->magic = WF_MAGIC;
    wf->rt = rt;
    wf->st = st;
    wf->watch = -1;
    wf->outs_tail = &wf->outs;
    wf->inlq_tail = &wf->inlq;
    if (cfg)
        wf->cfg = *cfg;
    if (!wf->cfg.workers)
        wf->cfg.workers = 4;
    if (!wf->cfg.batch_steps)
        wf->cfg.batch_steps = 4096;
    int rc = engine_init(wf);
    if (rc != TL_OK) {
        tl_wf_free(wf);
        return rc;
    }
    *out = wf;
    return TL_OK;
}

static void free_msgs(wf_msg *m)
{
    while (m) {
        wf_msg *nx = m->next;
        free(m->val);
        free(m);
        m = nx;
    }
}

static void free_jobs(wf_job *j)
{
    for (wf_job *nx; j; j = nx) {
        nx = j->next;
        tl__wf_job_free(j);
    }
}

void tl_wf_free(tl_wf *wf)
{
    if (bad(wf))
        return;
    if (wf->pool.threads) {
        for (size_t i = 0; i < wf->hcap; i++)
            for (wf_rec *r = wf->hash[i]; r; r = r->hnext)
                if (r->job)
                    atomic_store(&r->job->canceled, 1);
        tl__wf_pool_stop(&wf->pool); /* frees every job it held */
    }
    wf_rec *all = NULL;
    for (size_t i = 0; i < wf->hcap; i++)
        for (wf_rec *r = wf->hash[i], *nx; r; r = nx) {
            nx = r->hnext;
            r->job = NULL; /* freed with the pool, the txq or the inlq */
            r->hnext = all;
            all = r;
        }
    wf->hcap = 0; /* so that freeing one looks at no other */
    while (all) {
        wf_rec *nx = all->hnext;
        tl__wf_rec_free(wf, all);
        all = nx;
    }
    free_jobs(wf->txq);
    free_jobs(wf->inlq);
    tl_runtime_free(wf->inl_rt);
    for (wf_out *o = wf->outs, *nx; o; o = nx) {
        nx = o->next;
        tl__wf_out_free(o);
    }
    for (wf_out *o = wf->ready, *nx; o; o = nx) {
        nx = o->next;
        tl__wf_out_free(o);
    }
    free_msgs(wf->taken);
    tl__wf_lazy_free(wf);
    tl__wf_zone_free(wf->rowzone);
    tl__wf_moves_free(wf);
    tl__wf_chan_free(wf);
    tl__wf_db_finalize(wf);
    if (wf->st)
        tl__store_leave(wf->st, &wf_part, wf);
    if (wf->watch >= 0 && !wf->listen)
        close(wf->watch);
    tl_store_listener_free(wf->listen);
    free(wf->hash);
    free(wf->steps);
    for (size_t i = 0; i < wf->ntimers; i++) /* every record is gone now */
        timer_release(wf->timers[i].rec);
    free(wf->timers);
    wf->magic = 0;
    free(wf);
}

size_t tl_wf_live(const tl_wf *wf) { return bad(wf) ? 0 : wf->live; }
const char *tl_wf_errmsg(const tl_wf *wf) { return bad(wf) ? "invalid workflow engine" : wf->errmsg; }
tl_runtime *tl_wf_runtime(tl_wf *wf) { return bad(wf) ? NULL : wf->rt; }

/* ---- starting ---- */

static int spawn_root(tl_wf *wf, wf_rec *r, const tl_func *fn, tl_value arg)
{
    struct {
        tl_value arg;
        tl_chan *wake;
        char id[TL_WF_ID_MAX + 1];
        char fn[64];
        uint32_t ver;
    } a;
    memset(&a, 0, sizeof a);
    int rc = tl_chan_new(wf->rt, 1, &r->wake);
    if (rc != TL_OK)
        return rc;
    a.arg = arg;
    a.wake = r->wake;
    snprintf(a.id, sizeof a.id, "%s", r->id);
    snprintf(a.fn, sizeof a.fn, "%s", fn->name);
    a.ver = fn->version;
    rc = tl_spawn(wf->rt, &tl__wf_root, &a, sizeof a, &r->t);
    if (rc == TL_OK)
        rc = tl_tasklet_set_userdata(r->t, r);
    if (rc == TL_OK)
        rc = tl_tasklet_set_name(r->t, r->id);
    return rc;
}

int tl__wf_start_rec(tl_wf *wf, const char *id, const tl_func *fn, tl_value arg,
                     const char *parent, int *created)
{
    if (created)
        *created = 0;
    if (tl__wf_check_id(id) != TL_OK)
        return tl__wf_err(wf, TL_EINVAL, "tl_wf_start: a workflow id is 1 to %d bytes with "
                          "no control characters", TL_WF_ID_MAX);
    if (!fn || !fn->name || strlen(fn->name) >= 64 || !tl_lookup(wf->rt, fn->name, fn->version))
        return tl__wf_err(wf, TL_EINVAL, "tl_wf_start(%s): the function is not registered "
                          "(tl_wf_register)", id);
    if (hashed(wf, id) || tl__wf_lazy_has(wf, id))
        return TL_OK;
    int st = 0;
    int rc = tl__wf_db_find(wf, id, NULL, NULL, &st);
    if (rc == TL_OK)
        return TL_OK; /* exists in the store (finished) */
    if (rc != TL_ENOENT)
        return tl__wf_err(wf, rc, "tl_wf_start(%s): reading the store failed", id);
    wf_rec *r = calloc(1, sizeof *r);
    if (r)
        snprintf(r->id, sizeof r->id, "%s", id);
    if (!r || tl__wf_hash_put(wf, r) != TL_OK) {
        free(r);
        return tl__wf_err(wf, TL_ENOMEM, "tl_wf_start(%s): out of memory", id);
    }
    r->wf = wf;
    snprintf(r->func, sizeof r->func, "%s@%u", fn->name, (unsigned)fn->version);
    snprintf(r->parent, sizeof r->parent, "%s", parent ? parent : "");
    r->status = TL_WF_PENDING;
    r->created = tl_now(wf->rt);
    wf->live++;
    rc = spawn_root(wf, r, fn, arg);
    if (rc != TL_OK) {
        tl__wf_hash_del(wf, r);
        wf->live--;
        if (r->t)
            tl_kill(r->t);
        tl__wf_rec_free(wf, r);
        return tl__wf_err(wf, rc, "tl_wf_start(%s): %s", id, tl_errmsg(wf->rt));
    }
    tl__wf_dirty(wf, r);
    wf->force = 1; /* its row soon, so that posts to it find it */
    if (created)
        *created = 1;
    return TL_OK;
}

int tl_wf_start(tl_wf *wf, const char *id, const tl_func *fn, tl_value arg, int *created)
{
    if (bad(wf))
        return TL_EMISUSE;
    return tl__wf_start_rec(wf, id, fn, arg, NULL, created);
}

static wf_rec *frame_rec(tl_frame *f) { return f ? tl__wf_rec_of(tl_frame_tasklet(f)) : NULL; }

const char *tl_wf_self(tl_frame *f)
{
    wf_rec *r = frame_rec(f);
    return r ? r->id : NULL;
}

int tl_wf_start_child(tl_frame *f, const char *id, const tl_func *fn, tl_value arg)
{
    wf_rec *r = frame_rec(f);
    if (!r)
        return tl__seterr(tl_frame_runtime(f), TL_ESTATE, "tl_wf_start_child: not in a workflow");
    return tl__wf_start_rec(r->wf, id, fn, arg, r->id, NULL);
}

int tl_wf_cancel(tl_wf *wf, const char *id)
{
    if (bad(wf))
        return TL_EMISUSE;
    wf_rec *r = id ? tl__wf_find(wf, id) : NULL;
    if (r && r->moving)
        return tl__wf_err(wf, TL_EMOVED, "tl_wf_cancel: workflow %s is moving to node %s: "
                          "cancel it there (tl_wf_cancel_at on its store)", id, r->move_to);
    if (r)
        return tl__wf_do_cancel(wf, r);
    int st = 0;
    int rc = id ? tl__wf_db_find(wf, id, NULL, NULL, &st) : TL_ENOENT;
    if (rc == TL_OK && st == TL_WF_MOVED)
        return tl__wf_err(wf, TL_EMOVED, "tl_wf_cancel: workflow %s moved to another node: "
                          "cancel it there (tasklet wf show names the node)", id);
    if (rc == TL_OK)
        return tl__wf_err(wf, TL_EDONE, "tl_wf_cancel: workflow %s already finished (%s)", id,
                          tl_wf_status_name(st));
    return tl__wf_err(wf, TL_ENOENT, "tl_wf_cancel: no workflow %s", id ? id : "(null)");
}

/* ---- messages ---- */

wf_msg *tl__wf_take_msg(tl_wf *wf, wf_rec *r)
{
    for (wf_msg **p = &r->mail; *p; p = &(*p)->next) {
        wf_msg *m = *p;
        if (strcmp(m->topic, r->what) != 0)
            continue;
        *p = m->next;
        if (r->mail_tail == &m->next)
            r->mail_tail = p;
        m->taken = tl_now(wf->rt);
        m->next = wf->taken;
        wf->taken = m;
        return m;
    }
    return NULL;
}

/* A message row read by intake: to its workflow's mailbox, or marked
 * dropped when no live workflow has that id. */
int tl__wf_intake_one(tl_wf *wf, const char *id, wf_msg *m)
{
    if (m->len > tl__wf_max_record(wf)) { /* its receiver could never be checkpointed */
        m->taken = -1;
        m->next = wf->taken;
        wf->taken = m;
        tl__wf_err(wf, TL_ERANGE, "a message of %zu bytes to %s is larger than the store's "
                   "record limit: dropped", m->len, id);
        return TL_OK;
    }
    if (m->kind == 2)
        return tl__wf_chan_take(wf, m);
    wf_rec *r;
    int rc = tl__wf_lookup(wf, id, &r);
    if (rc == TL_ECORRUPT) /* a lazy row that cannot be read: as if it had none */
        wf->lazy_rc = rc;
    else if (rc != TL_OK) { /* taken in again by the next intake */
        wf->cursor = m->seq - 1;
        free(m->val);
        free(m);
        return rc;
    }
    if (r && r->moving) { /* its row travels with it (read in the hand-off, move.c) */
        free(m->val);
        free(m);
        return TL_OK;
    }
    if (!r || r->status >= TL_WF_DONE || m->kind == 1) {
        m->taken = r && r->status < TL_WF_DONE ? tl_now(wf->rt) : -1;
        m->next = wf->taken;
        wf->taken = m;
        if (r && r->status < TL_WF_DONE)
            return tl__wf_do_cancel(wf, r);
        return TL_OK;
    }
    m->next = NULL;
    if (!r->mail)
        r->mail_tail = &r->mail;
    *r->mail_tail = m;
    r->mail_tail = &m->next;
    if (r->wait == W_RECV && !r->expired && strcmp(r->what, m->topic) == 0) {
        wf_msg *got = tl__wf_take_msg(wf, r);
        return tl__wf_deliver(wf, r, TL_OK, NULL, got->val, got->len);
    }
    return TL_OK;
}

/* Monotonic ns (not tl_now: a test's fake clock may stand still). */
static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define DRAIN_NS 200000 /* a busy engine reads its inotify fd at most this often */

/* Takes in what other processes posted: on SQLite with inotify, only
 * after an event (watch.c), else at every round.  A busy engine (rounds
 * of well under a millisecond, such as inline steps) looks at the inotify
 * fd every DRAIN_NS, not at every round (a read(2) each); an idle one
 * polls it (run.c wait_events), so no event waits longer than that. */
int tl__wf_intake(tl_wf *wf)
{
    if (wf->db && wf->watch >= 0) {
        int64_t now = mono_ns();
        if (!wf->poked && now - wf->drained < DRAIN_NS)
            return TL_OK;
        wf->drained = now;
        wf->poked |= tl__wf_watch_drain(wf->watch);
        if (!wf->poked)
            return TL_OK;
        wf->poked = 0;
    }
    if (!tl__wf_db_changed(wf))
        return TL_OK;
    return tl__wf_db_intake(wf);
}
