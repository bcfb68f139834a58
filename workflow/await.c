/*
 * await.c -- a workflow's tasklet: its root frame and its suspension points.
 *
 * Every workflow tasklet starts in tl.wf.root, which calls the user's
 * workflow function and, when it ends, hands the result or error to the
 * engine (tl__wf_finished).  TL_WF_STEP / TL_WF_RECV / TL_WF_JOIN call
 * tl.wf.await, which asks the engine for the thing awaited (begin): if it
 * is there at once (a message already taken in, a finished child) the
 * frame returns it; otherwise the frame blocks receiving on the
 * workflow's wake channel, and the engine sends the value or an error
 * value there (tl__wf_deliver) once it is recorded.
 *
 * Wait state (wf_rec.wait, written to the workflow's row):
 *
 *   NONE --await_begin--> STEP  --(job done, committed) tl__wf_deliver--> NONE
 *        \                  `--(attempt failed) retry timer--> STEP (attempt+1)
 *         `-------------> RECV  --tl__wf_intake finds the topic--> NONE
 *          `------------> JOIN  --child finished, committed--> NONE
 *   any wait --tl__wf_timer_fire (deadline)--> NONE (TL_ETIMEDOUT)
 *   any wait --tl__wf_do_cancel--> NONE (TL_ECANCELED thrown)
 *
 * Each change bumps wf_rec.gen, so a late timer or job result for an
 * older wait is recognised and dropped.
 */
#include "wf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sqlite3.h>
#include <string.h>

/* The largest result a row may hold: the store's record limit, less room
 * for the rest of the row. */
size_t tl__wf_max_record(tl_wf *wf)
{
    size_t lim = TL__MAX_DOC;
    int sl = wf->db ? sqlite3_limit(wf->db, SQLITE_LIMIT_LENGTH, -1) : -1;
    if (sl > 0 && (size_t)sl < lim + 4096)
        lim = (size_t)sl > 4096 ? (size_t)sl - 4096 : 0;
    return lim;
}

/* ---- the root frame ---- */

typedef struct root_t {
    tl_value arg;
    tl_chan *wake;
    char id[TL_WF_ID_MAX + 1];
    char fn[64];
    uint32_t ver;
    tl_value res;
} root_t;

static const tl_field root_fields[] = {
    TL_FIELD(root_t, arg, TL_T_VALUE), TL_FIELD(root_t, wake, TL_T_CHAN),
    TL_FIELD(root_t, id, TL_T_BYTES),  TL_FIELD(root_t, fn, TL_T_BYTES),
    TL_FIELD(root_t, ver, TL_T_U32),   TL_FIELD(root_t, res, TL_T_VALUE),
};

static wf_rec *rec_of(tl_frame *f) { return tl__wf_rec_of(tl_frame_tasklet(f)); }

static tl_wf *engine_of(tl_frame *f)
{
    wf_rec *r = rec_of(f);
    return r ? r->wf : NULL;
}

static tl_status root_step(tl_frame *f, void *locals)
{
    root_t *L = locals;
    wf_rec *r = rec_of(f);
    tl_wf *wf = engine_of(f);
    const tl_func *fn;
    TL_BEGIN(f);
    if (!r || !wf)
        TL_FAIL(f, TL_ESTATE, "workflow tasklet without its engine");
    tl_frame_catch(f, 1);
    fn = tl_lookup(tl_frame_runtime(f), L->fn, L->ver);
    if (!fn) {
        tl__wf_finished(wf, r, TL_ENOFUNC, tl_errmsg(tl_frame_runtime(f)), tl_nil());
        TL_RETURN(f, tl_nil());
    }
    r->status = TL_WF_RUNNING;
    tl__wf_dirty(wf, r);
    TL_CALL(f, fn, L->res, &L->arg);
    if (r && wf) {
        int err = tl_frame_error(f);
        tl__wf_finished(wf, r, err, err ? tl_frame_errmsg(f) : "", L->res);
    }
    TL_RETURN(f, tl_nil());
    TL_END(f);
}

const tl_func tl__wf_root = {"tl.wf.root", 1, root_step, sizeof(root_t),
                             root_fields, TL_COUNTOF(root_fields), NULL};

int tl__wf_root_wake(tl_tasklet *h, tl_chan *ch)
{
    tl_tasklet *t = tl__tasklet_at(h);
    tl_frame *f = t ? t->top : NULL;
    while (f && f->parent)
        f = f->parent;
    if (!f || strcmp(f->fn->fn->name, tl__wf_root.name) != 0)
        return 0;
    root_t *L = TL__LOCALS(f);
    tl_chan *old = L->wake;
    L->wake = ch ? tl_chan_retain(ch) : NULL;
    tl_chan_release(old);
    tl__mark(t->rt, t);
    return 1;
}

/* ---- tl.wf.await: one suspension point ---- */

typedef struct await_t {
    tl_wf__args a;               /* what the macro passed (a.what is scratch) */
    char name[TL_WF_NAME_MAX + 1];
    int64_t seq;
    tl_value v;
} await_t;

static const tl_field await_fields[] = {
    {"arg", TL_T_VALUE, sizeof(tl_value), offsetof(await_t, a.arg)},
    {"kind", TL_T_I32, sizeof(int32_t), offsetof(await_t, a.kind)},
    {"timeout_ms", TL_T_I64, sizeof(int64_t), offsetof(await_t, a.timeout_ms)},
    TL_FIELD(await_t, name, TL_T_BYTES),
    TL_FIELD(await_t, seq, TL_T_I64),
    TL_FIELD(await_t, v, TL_T_VALUE),
};

static int set_what(tl_wf *wf, wf_rec *r, await_t *L, const char *name)
{
    if (!name || !name[0] || strlen(name) > TL_WF_NAME_MAX)
        return tl__wf_err(wf, TL_EINVAL, "workflow %s: a step, topic or child id must be 1 to "
                          "%d bytes", r->id, TL_WF_NAME_MAX);
    snprintf(L->name, sizeof L->name, "%s", name);
    snprintf(r->what, sizeof r->what, "%s", name);
    return TL_OK;
}

static int begin_step(tl_wf *wf, wf_rec *r, await_t *L)
{
    const tl_wf_step *s = L->a.what;
    int rc = set_what(wf, r, L, s ? s->name : NULL);
    if (rc != TL_OK)
        return rc;
    if (tl__wf_step_find(wf, s->name) != s)
        return tl__wf_err(wf, TL_ENOFUNC, "workflow %s: step %s is not registered "
                          "(tl_wf_register_step)", r->id, s->name);
    free(r->sarg);
    r->sarg = NULL;
    rc = tl__wf_pack(L->a.arg, &r->sarg, &r->salen);
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "workflow %s: the argument of step %s cannot be stored",
                          r->id, s->name);
    L->seq = ++r->seq;
    r->wait = W_STEP;
    r->attempt = 1;
    r->retry_at = 0;
    rc = tl__wf_submit(wf, r);
    return rc == TL_OK ? 1 : rc;
}

static int begin_recv(tl_wf *wf, wf_rec *r, await_t *L)
{
    int rc = set_what(wf, r, L, L->a.what);
    if (rc != TL_OK)
        return rc;
    wf_msg *m = tl__wf_take_msg(wf, r);
    if (m) {
        rc = tl__wf_unpack(wf->rt, m->val, m->len, &L->v);
        r->what[0] = 0;
        return rc == TL_OK ? 0 : tl__wf_err(wf, rc, "workflow %s: a message on %s does not "
                                            "decode", r->id, L->name);
    }
    r->wait = W_RECV;
    return 1;
}

static int begin_join(tl_wf *wf, wf_rec *r, await_t *L)
{
    int rc = set_what(wf, r, L, L->a.what);
    if (rc != TL_OK)
        return rc;
    wf_rec *c = tl__wf_find(wf, L->name);
    if (c) {
        c->joiner = r;
        wf->joined = 1;
        r->wait = W_JOIN;
        return 1;
    }
    void *rec = NULL;
    size_t len = 0;
    int st = 0;
    rc = tl__wf_db_find(wf, L->name, &rec, &len, &st);
    if (rc == TL_ENOENT)
        return tl__wf_err(wf, TL_ENOENT, "workflow %s: TL_WF_JOIN of unknown workflow %s",
                          r->id, L->name);
    wf_rec tmp;
    int64_t a, b;
    memset(&tmp, 0, sizeof tmp);
    if (rc == TL_OK)
        rc = tl__wf_unpack_rec(rec, len, &tmp, &a, &b);
    free(rec);
    if (rc == TL_OK && st == TL_WF_DONE)
        rc = tl__wf_unpack(wf->rt, tmp.result, tmp.rlen, &L->v);
    else if (rc == TL_OK)
        rc = tl__wf_err(wf, tmp.error ? tmp.error : TL_ESTATE, "%s", tmp.errmsg);
    free(tmp.result);
    r->what[0] = 0;
    return rc;
}

const void *tl_wf__stash(tl_frame *f, const void *what)
{
    wf_rec *r = rec_of(f);
    if (r)
        r->stash = what;
    return what;
}

/* The wait's durable deadline: in the row (restore sets its timer again)
 * and on the engine's timer heap.  The row commits at the end of this
 * round (force), not on the next group commit: a crash after the wait
 * began then restores it with this deadline, not a new one. */
static int set_deadline(tl_wf *wf, wf_rec *r, int64_t timeout_ms)
{
    r->deadline = tl_now(wf->rt) + timeout_ms * 1000000;
    wf->force = 1;
    return tl__wf_timer_add(wf, r->deadline, r, 0);
}

/* > 0: suspend on the wake channel; 0: L->v holds the answer; < 0: an
 * error to deliver at once. */
static int await_begin(tl_wf *wf, wf_rec *r, await_t *L)
{
    int rc;
    if (!L->a.what)
        L->a.what = r->stash; /* written out before it started (check mode) */
    r->stash = NULL;
    r->gen++;
    r->deadline = 0;
    r->expired = 0;
    if (L->a.kind == TL_WF__STEP)
        rc = begin_step(wf, r, L);
    else if (L->a.kind == TL_WF__RECV)
        rc = begin_recv(wf, r, L);
    else if (L->a.kind == TL_WF__JOIN)
        rc = begin_join(wf, r, L);
    else
        rc = tl__wf_err(wf, TL_EINVAL, "workflow %s: unknown wait kind %d", r->id,
                        (int)L->a.kind);
    if (rc > 0 && L->a.timeout_ms >= 0 && set_deadline(wf, r, L->a.timeout_ms) != TL_OK)
        rc = TL_ENOMEM;
    if (rc < 0)
        r->wait = W_NONE;
    r->status = rc > 0 ? TL_WF_WAITING : TL_WF_RUNNING;
    tl__wf_dirty(wf, r);
    return rc;
}

static tl_status await_step(tl_frame *f, void *locals)
{
    await_t *L = locals;
    wf_rec *r = rec_of(f);
    int rc;
    TL_BEGIN(f);
    if (!r)
        TL_FAIL(f, TL_ESTATE, "TL_WF_STEP, TL_WF_RECV and TL_WF_JOIN work only in a workflow");
    rc = await_begin(r->wf, r, L);
    if (rc < 0)
        TL_FAIL(f, rc, r->wf->errmsg);
    if (rc == 0)
        TL_RETURN(f, L->v);
again:
    TL_RECV(f, r->wake, L->v);
    if (r && r->rebind) { /* woken by a move (move.c): wait on the wake channel it has now */
        r->rebind = 0;
        tl__wf_dirty(r->wf, r);
        goto again;
    }
    TL_RETURN(f, L->v);
    TL_END(f);
}

const tl_func tl_wf__await = {"tl.wf.await", 1, await_step, sizeof(await_t),
                              await_fields, TL_COUNTOF(await_fields), NULL};

/* ---- what a restored tasklet says about its workflow (lazy.c) ---- */

/* Whether t (a bare tasklet) is a workflow's: its bottom frame is
 * tl.wf.root.  Then *id points into that frame's locals (valid while the
 * tasklet lives), *wake is its wake channel, and *quiet says whether its
 * row can wait until it is needed: t blocks in TL_WF_RECV with no
 * deadline, the one wait whose row asks restore to do nothing (no timer,
 * no step to hand over or submit, no join to link). */
int tl__wf_root_info(tl_tasklet *t, const char **id, tl_chan **wake, int *quiet)
{
    tl_frame *f = t->top;
    while (f && f->parent)
        f = f->parent;
    if (!f || f->fn->fn != &tl__wf_root)
        return 0;
    root_t *R = TL__LOCALS(f);
    if (!memchr(R->id, 0, sizeof R->id) || !R->id[0])
        return 0;
    *id = R->id;
    *wake = R->wake;
    const await_t *A = t->top->fn->fn == &tl_wf__await ? TL__LOCALS(t->top) : NULL;
    *quiet = A && A->a.kind == TL_WF__RECV && A->a.timeout_ms < 0 &&
             t->state == TL_BLOCKED && t->wait == TL_WAIT_RECV;
    return 1;
}

/* ---- TL_WF_SELECT: a channel select with a durable deadline ---- */

/* The select itself is the runtime's (its cases in the caller's locals);
 * the engine only keeps the deadline, in the row, and on expiry throws
 * TL_ETIMEDOUT into the tasklet if it still waits in that select (the
 * same tasklet depth, wait TL_WAIT_SELECT).  A select that fired first
 * clears the wait when it resumes (tl_wf__select_end). */
tl_status tl_wf__select(tl_frame *f, tl_case *cases, int n, int64_t timeout_ms)
{
    wf_rec *r = rec_of(f);
    if (!r)
        return tl__fail(f, TL_ESTATE, "TL_WF_SELECT works only in a workflow");
    tl_wf *wf = r->wf;
    r->gen++;
    r->deadline = 0;
    r->expired = 0;
    r->wait = W_NONE;
    if (n < 1 || n > TL_SELECT_MAX || !cases)
        return tl__select(f, cases, n); /* its own error */
    if (timeout_ms >= 0) {
        r->wait = W_SELECT;
        r->sel_depth = (int64_t)tl_tasklet_depth(r->t);
        snprintf(r->what, sizeof r->what, "%d cases", n);
        if (set_deadline(wf, r, timeout_ms) != TL_OK) {
            r->wait = W_NONE;
            return tl__fail(f, TL_ENOMEM, "TL_WF_SELECT: out of memory for its deadline");
        }
        r->status = TL_WF_WAITING;
        tl__wf_dirty(wf, r);
    }
    return tl__select(f, cases, n);
}

void tl_wf__select_end(tl_frame *f)
{
    wf_rec *r = rec_of(f);
    if (!r || r->wait != W_SELECT)
        return;
    r->wait = W_NONE;
    r->what[0] = 0;
    r->deadline = 0;
    r->expired = 0;
    r->gen++;
    r->status = TL_WF_RUNNING;
    tl__wf_dirty(r->wf, r);
}

/* Whether r still waits in the TL_WF_SELECT that set its deadline. */
static int select_blocked(const wf_rec *r)
{
    return tl_tasklet_state(r->t) == TL_BLOCKED && tl_tasklet_wait(r->t) == TL_WAIT_SELECT &&
           (int64_t)tl_tasklet_depth(r->t) == r->sel_depth;
}

/* The timeout reaches a TL_WF_SELECT: thrown into it, unless a case fired
 * first (the frame then clears the wait when it runs). */
static int select_timeout(tl_wf *wf, wf_rec *r, int rc, const char *msg)
{
    if (!select_blocked(r))
        return TL_OK;
    if (tl_throw_pending(r->t, rc, msg) != TL_OK)
        return tl__wf_err(wf, tl_errcode(wf->rt), "workflow %s: delivering a timeout: %s",
                          r->id, tl_errmsg(wf->rt));
    return TL_OK;
}

/* Whether r's step result is recorded and waits to be handed over: then
 * the result wins over a deadline that expires meanwhile. */
int tl__wf_result_pending(const tl_wf *wf, const wf_rec *r)
{
    for (const wf_out *o = wf->outs; o; o = o->next)
        if (o->rec == r && o->gen == r->gen)
            return 1;
    for (const wf_out *o = wf->ready; o; o = o->next)
        if (o->rec == r && o->gen == r->gen)
            return 1;
    return 0;
}

/* ---- what the engine does for the waits ---- */

/* Hands the answer to the workflow waiting on its wake channel. */
int tl__wf_deliver(tl_wf *wf, wf_rec *r, int rc, const char *msg, const void *res, size_t rlen)
{
    tl_value v = tl_nil();
    if (rc == TL_OK && tl__wf_unpack(wf->rt, res, rlen, &v) != TL_OK) {
        rc = TL_ECORRUPT;
        msg = "a recorded result does not decode";
    }
    if (rc != TL_OK)
        v = tl_error_value(wf->rt, rc, msg && msg[0] ? msg : tl_strerror(rc));
    int was = r->wait;
    r->wait = W_NONE;
    r->what[0] = 0;
    r->deadline = 0;
    r->expired = 0;
    r->gen++;
    r->status = TL_WF_RUNNING;
    tl__wf_dirty(wf, r);
    if (was == W_SELECT) {
        int trc = select_timeout(wf, r, rc, msg);
        tl_release(v);
        return trc;
    }
    int src = tl_chan_try_send(r->wake, v);
    tl_release(v);
    if (src != TL_OK)
        return tl__wf_err(wf, src, "workflow %s: its wake channel refused a value (%s)", r->id,
                          tl_strerror(src));
    return TL_OK;
}

static uint32_t backoff_ms(const tl_wf_step *s, uint32_t attempt)
{
    uint64_t d = s->backoff_ms ? s->backoff_ms : 100;
    uint64_t cap = s->backoff_max_ms ? s->backoff_max_ms : 60000;
    for (uint32_t i = 1; i < attempt && d < cap; i++)
        d *= 2;
    return (uint32_t)(d < cap ? d : cap);
}

/* Starts attempt r->attempt of the step r waits in. */
int tl__wf_submit(tl_wf *wf, wf_rec *r)
{
    const tl_wf_step *s = tl__wf_step_find(wf, r->what);
    if (!s)
        return tl__wf_err(wf, TL_ENOFUNC, "workflow %s waits in step %s, which is not "
                          "registered (tl_wf_register_step before tl_wf_restore)", r->id, r->what);
    wf_job *j = calloc(1, sizeof *j);
    if (!j || (r->salen && !(j->arg = malloc(r->salen)))) {
        free(j);
        return tl__wf_err(wf, TL_ENOMEM, "workflow %s: out of memory for a step", r->id);
    }
    if (r->salen)
        memcpy(j->arg, r->sarg, r->salen);
    j->alen = r->salen;
    j->rec = r;
    j->step = s;
    j->seq = r->seq;
    j->attempt = r->attempt ? r->attempt : 1;
    snprintf(j->id, sizeof j->id, "%s", r->id);
    snprintf(j->key, sizeof j->key, "%s#%lld", r->id, (long long)r->seq);
    r->job = j;
    r->retry_at = 0;
    if (s->flags & TL_WF_TX) {
        j->next = wf->txq;
        wf->txq = j;
        wf->force = 1;
        return TL_OK;
    }
    if (s->flags & TL_WF_INLINE) { /* run at the end of this round */
        j->next = NULL;
        *wf->inlq_tail = j;
        wf->inlq_tail = &j->next;
        return TL_OK;
    }
    if (s->timeout_ms)
        tl__wf_timer_add(wf, tl_now(wf->rt) + (int64_t)s->timeout_ms * 1000000, r, 2);
    wf->inflight++;
    tl__wf_pool_submit(&wf->pool, j);
    return TL_OK;
}

/* An attempt failed: retry after the backoff, or record the failure. */
static void attempt_failed(tl_wf *wf, wf_rec *r, const tl_wf_step *s, int rc, const char *msg,
                           int64_t started, int64_t ended)
{
    uint32_t max = s->max_attempts ? s->max_attempts : 1;
    if (r->attempt < max && rc != TL_ERANGE) {
        r->attempt++;
        r->retry_at = tl_now(wf->rt) + (int64_t)backoff_ms(s, r->attempt - 1) * 1000000;
        tl__wf_timer_add(wf, r->retry_at, r, 1);
        tl__wf_dirty(wf, r);
        return;
    }
    wf_out *o = calloc(1, sizeof *o);
    if (!o) {
        tl__wf_deliver(wf, r, TL_ENOMEM, "out of memory recording a step", NULL, 0);
        return;
    }
    o->rec = r;
    o->gen = r->gen;
    o->kind = W_STEP;
    snprintf(o->key, sizeof o->key, "%s#%lld", r->id, (long long)r->seq);
    snprintf(o->name, sizeof o->name, "%s", s->name);
    o->seq = r->seq;
    o->attempts = r->attempt;
    o->rc = rc;
    snprintf(o->errmsg, sizeof o->errmsg, "%s", msg);
    o->started = started;
    o->ended = ended;
    *wf->outs_tail = o;
    wf->outs_tail = &o->next;
    r->recorded++;
    tl__wf_dirty(wf, r);
}

static void record_ok(tl_wf *wf, wf_rec *r, wf_job *j)
{
    wf_out *o = calloc(1, sizeof *o);
    if (!o) {
        attempt_failed(wf, r, j->step, TL_ENOMEM, "out of memory recording a step",
                       j->started, j->ended);
        return;
    }
    o->rec = r;
    o->gen = r->gen;
    o->kind = W_STEP;
    snprintf(o->key, sizeof o->key, "%s", j->key);
    snprintf(o->name, sizeof o->name, "%s", j->step->name);
    o->seq = j->seq;
    o->attempts = j->attempt;
    o->res = j->res;
    o->rlen = j->rlen;
    j->res = NULL;
    o->started = j->started;
    o->ended = j->ended;
    o->written = j->db != NULL; /* a TL_WF_TX step wrote its row in the commit */
    *wf->outs_tail = o;
    wf->outs_tail = &o->next;
    r->recorded++;
    tl__wf_dirty(wf, r);
}

/* A job came back from a worker (or from the commit, TL_WF_TX). */
void tl__wf_job_done(tl_wf *wf, wf_job *j)
{
    wf_rec *r = j->rec;
    if (r && r->job == j) {
        r->job = NULL;
        if (j->counted)
            r->recorded--; /* counted once already, when its row was written */
        size_t limit = tl__wf_max_record(wf);
        if (j->rc == TL_OK && j->rlen > limit) {
            j->rc = TL_ERANGE;
            snprintf(j->errmsg, sizeof j->errmsg, "step %s: a result of %zu bytes is larger "
                     "than the store's record limit", j->step->name, j->rlen);
        }
        if (j->rc == TL_OK)
            record_ok(wf, r, j);
        else
            attempt_failed(wf, r, j->step, j->rc, j->errmsg, j->started, j->ended);
    }
    tl__wf_job_free(j);
}

void tl__wf_out_free(wf_out *o)
{
    if (o) {
        free(o->res);
        free(o);
    }
}

/* Takes j out of the list at *head (tail: its tail pointer, or NULL). */
static int unlink_job(wf_job **head, wf_job ***tail, wf_job *j)
{
    for (wf_job **p = head; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            if (tail && *tail == &j->next)
                *tail = p;
            return 1;
        }
    return 0;
}

/* Abandons the attempt in flight: a worker's result will be dropped. */
void tl__wf_abandon(tl_wf *wf, wf_rec *r)
{
    wf_job *j = r->job;
    if (!j)
        return;
    r->job = NULL;
    atomic_store(&j->canceled, 1);
    if (unlink_job(&wf->txq, NULL, j) || unlink_job(&wf->inlq, &wf->inlq_tail, j)) {
        tl__wf_job_free(j);
        return;
    }
    j->rec = NULL; /* the pool still has it */
}

/* Runs the TL_WF_INLINE attempts the round reached, on this thread. */
void tl__wf_run_inline(tl_wf *wf)
{
    while (wf->inlq) {
        wf_job *j = wf->inlq;
        wf->inlq = j->next;
        if (!wf->inlq)
            wf->inlq_tail = &wf->inlq;
        j->next = NULL;
        if (!wf->inl_rt && tl_runtime_new(NULL, &wf->inl_rt) != TL_OK)
            wf->inl_rt = NULL;
        tl__wf_job_run(j, wf->inl_rt);
        tl__wf_job_done(wf, j);
    }
}

void tl__wf_timer_fire(tl_wf *wf, const wf_timer *tm)
{
    wf_rec *r = tm->rec;
    if (!r || tm->gen != r->gen || r->wait == W_NONE)
        return;
    if (tm->kind == 1) {
        if (r->wait == W_STEP && !r->job && r->retry_at && tm->attempt == r->attempt &&
            tl__wf_submit(wf, r) != TL_OK)
            tl__wf_deliver(wf, r, tl_errcode(wf->rt), wf->errmsg, NULL, 0);
        return;
    }
    if (tm->kind == 2) {
        if (r->job && r->job->attempt == tm->attempt) {
            const tl_wf_step *s = r->job->step;
            int64_t started = tl_now(wf->rt) - (int64_t)s->timeout_ms * 1000000;
            tl__wf_abandon(wf, r);
            char msg[160];
            snprintf(msg, sizeof msg, "step %s: attempt %u timed out after %u ms", s->name,
                     tm->attempt, s->timeout_ms);
            attempt_failed(wf, r, s, TL_ETIMEDOUT, msg, started, tl_now(wf->rt));
        }
        return;
    }
    if (r->deadline == 0 || tm->at != r->deadline || r->expired)
        return;
    if ((r->wait == W_SELECT && !select_blocked(r)) || (r->wait == W_STEP && tl__wf_result_pending(wf, r)))
        return; /* the case or the recorded result wins */
    if (r->wait == W_JOIN) {
        wf_rec *c = tl__wf_find(wf, r->what);
        if (c && c->joiner == r)
            c->joiner = NULL;
    }
    tl__wf_abandon(wf, r);
    r->expired = 1;
    tl__wf_dirty(wf, r);
    if (tl__wf_timeout_out(wf, r, &wf->outs) != TL_OK)
        tl__wf_deliver(wf, r, TL_ENOMEM, "out of memory delivering a timeout", NULL, 0);
}

/* The timeout of r's wait, to hand over after the next commit (or, at
 * restore, at once): the decision is in the row (expired) before the
 * workflow acts on it, so a restarted owner takes the same branch even if
 * a message or a child's end came in meanwhile. */
int tl__wf_timeout_out(tl_wf *wf, wf_rec *r, wf_out **list)
{
    wf_out *o = calloc(1, sizeof *o);
    if (!o)
        return TL_ENOMEM;
    o->rec = r;
    o->gen = r->gen;
    o->kind = r->wait;
    o->rc = TL_ETIMEDOUT;
    o->written = 1; /* no step row */
    snprintf(o->errmsg, sizeof o->errmsg, "workflow %.63s: %s on %.63s timed out", r->id,
             r->wait == W_SELECT ? "TL_WF_SELECT" : "waiting", r->what);
    if (list == &wf->outs) {
        *wf->outs_tail = o;
        wf->outs_tail = &o->next;
    } else {
        o->next = *list;
        *list = o;
    }
    wf->force = 1;
    return TL_OK;
}

/* The root frame saw the workflow function end. */
void tl__wf_finished(tl_wf *wf, wf_rec *r, int code, const char *msg, tl_value res)
{
    r->status = code == TL_OK ? (r->cancel ? TL_WF_CANCELLED : TL_WF_DONE)
                : code == TL_ECANCELED ? TL_WF_CANCELLED
                                       : TL_WF_FAILED;
    r->error = code;
    snprintf(r->errmsg, sizeof r->errmsg, "%s", msg ? msg : "");
    if (code == TL_OK) {
        int rc = tl__wf_pack(res, &r->result, &r->rlen);
        if (rc == TL_OK && r->rlen > tl__wf_max_record(wf)) {
            free(r->result);
            r->result = NULL;
            r->rlen = 0;
            rc = TL_ERANGE;
        }
        if (rc != TL_OK) {
            r->status = TL_WF_FAILED;
            r->error = rc;
            snprintf(r->errmsg, sizeof r->errmsg, "the workflow's result cannot be stored: %s",
                     tl_strerror(rc));
        }
    }
    r->wait = W_NONE;
    r->what[0] = 0;
    r->deadline = 0;
    r->expired = 0;
    r->gen++;
    r->finished = tl_now(wf->rt);
    wf->live--;
    wf->force = 1;
    tl__wf_dirty(wf, r);
}

/* Cancels r (running or waiting) and its live children. */
int tl__wf_do_cancel(tl_wf *wf, wf_rec *r)
{
    if (r->status >= TL_WF_DONE)
        return tl__wf_err(wf, TL_EDONE, "workflow %s already finished (%s)", r->id,
                          tl_wf_status_name(r->status));
    if (r->cancel)
        return TL_OK;
    r->cancel = 1;
    wf->force = 1;
    tl__wf_dirty(wf, r);
    int rc = tl__wf_lazy_wake_all(wf); /* a child's parent is in its row */
    if (rc != TL_OK)
        return rc;
    for (size_t i = 0; i < wf->hcap; i++)
        for (wf_rec *c = wf->hash[i]; c; c = c->hnext)
            if (c != r && strcmp(c->parent, r->id) == 0 && c->status < TL_WF_DONE)
                tl__wf_do_cancel(wf, c);
    if (r->status == TL_WF_PENDING) { /* never ran: nowhere to deliver */
        tl_kill(r->t);
        tl__wf_finished(wf, r, TL_ECANCELED, "cancelled before it started", tl_nil());
        return TL_OK;
    }
    if (r->wait == W_JOIN) {
        wf_rec *c = tl__wf_find(wf, r->what);
        if (c && c->joiner == r)
            c->joiner = NULL;
    }
    tl__wf_abandon(wf, r);
    r->wait = W_NONE;
    r->what[0] = 0;
    r->deadline = 0;
    r->expired = 0;
    r->gen++;
    if (tl_current(wf->rt) == r->t)
        return TL_OK; /* it cancels itself: it sees the flag at its next wait */
    rc = tl_throw(r->t, TL_ECANCELED, "workflow cancelled");
    return rc == TL_OK ? TL_OK : tl__wf_err(wf, rc, "cancelling %s: %s", r->id,
                                            tl_errmsg(wf->rt));
}
