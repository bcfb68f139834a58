/*
 * xcheck.c -- facts of one checkpoint that span records, checked by
 * `tasklet verify` after every record decoded on its own:
 *
 * - the selected chunks hold as many tasklets (channels) as the head's
 *   ntasklets (nchans), and no id beyond next_tid (next_cid);
 * - every function a chunk uses is in the head's `needs`;
 * - the runq names each runnable tasklet once, and nothing else;
 * - every id referenced exists: wait targets (channels of send/receive,
 *   joined tasklets, select cases), channel queues, joiners, and the
 *   channel and tasklet references in values (xfer, locals, select
 *   values, buffers) -- references keep their objects alive, so a
 *   dangling one is a damaged checkpoint (a loader says TL_ECORRUPT);
 * - a tasklet blocked on a plain send/receive sits in that channel's
 *   queue, and every queued waiter is blocked on that very operation;
 * - a joined tasklet lists its joiner, a buffer holds at most capacity.
 *
 * - no id is held twice (by a chunk's home record and its hot record).
 *
 * Invariant: chunks come sorted by kind then key, and each chunk's ids
 * are sorted and satisfy id >> 8 == key (checked by the decoders), so the
 * index built here is sorted without sorting unless hot records (kinds 3
 * and 4, FORMAT.md 7.1) come after them; then it is sorted.
 */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct xt {
    uint64_t id;
    const cli_tasklet *t;
    cli_loc loc;
} xt;

typedef struct xc {
    uint64_t id;
    const cli_chan *ch;
    cli_loc loc;
} xc;

/* A fact "a relates to b": (channel, tasklet) of a plain waiter in a
 * queue (side: 1 senders, 2 receivers), or (joined, joiner). */
typedef struct xpair {
    uint64_t a, b;
    uint64_t side;
} xpair;

typedef struct xctx {
    const cli_snap *s;
    cli_problem_fn report;
    void *ud;
    xt *ts;
    size_t nt;
    xc *cs;
    size_t nc;
    xpair *queued, *joins; /* sorted, for lookups in O(log n) */
    size_t nqueued, njoins;
} xctx;

static void reportf(xctx *x, const cli_loc *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reportf(xctx *x, const cli_loc *loc, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    x->report(x->ud, loc, msg);
}

static const xt *find_t(const xctx *x, uint64_t id)
{
    size_t lo = 0, hi = x->nt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->ts[mid].id == id)
            return &x->ts[mid];
        if (x->ts[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const xc *find_c(const xctx *x, uint64_t id)
{
    size_t lo = 0, hi = x->nc;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->cs[mid].id == id)
            return &x->cs[mid];
        if (x->cs[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int xt_cmp(const void *a, const void *b)
{
    uint64_t p = ((const xt *)a)->id, q = ((const xt *)b)->id;
    return (p > q) - (p < q);
}

static int xc_cmp(const void *a, const void *b)
{
    uint64_t p = ((const xc *)a)->id, q = ((const xc *)b)->id;
    return (p > q) - (p < q);
}

/* Sorts the index when hot records made it unsorted; reports an id held
 * twice. */
static void sort_index(xctx *x, bool hot)
{
    if (!hot)
        return;
    qsort(x->ts, x->nt, sizeof *x->ts, xt_cmp);
    qsort(x->cs, x->nc, sizeof *x->cs, xc_cmp);
    for (size_t i = 1; i < x->nt; i++)
        if (x->ts[i].id == x->ts[i - 1].id)
            reportf(x, &x->ts[i].loc, "tasklet %llu is held twice (also at chunk %lld/%lld)",
                    (unsigned long long)x->ts[i].id, (long long)x->ts[i - 1].loc.kind,
                    (long long)x->ts[i - 1].loc.key);
    for (size_t i = 1; i < x->nc; i++)
        if (x->cs[i].id == x->cs[i - 1].id)
            reportf(x, &x->cs[i].loc, "channel %llu is held twice (also at chunk %lld/%lld)",
                    (unsigned long long)x->cs[i].id, (long long)x->cs[i - 1].loc.kind,
                    (long long)x->cs[i - 1].loc.key);
}

static void build_index(xctx *x)
{
    bool hot = false;
    for (size_t i = 0; i < x->s->nchunks; i++) {
        const cli_chunk *c = &x->s->chunks[i];
        cli_loc loc = cli_loc_chunk(c->kind, c->key, c->ckpt);
        x->ts = cli_xgrow(x->ts, x->nt, c->t.ntasklets, sizeof *x->ts);
        for (uint32_t k = 0; k < c->t.ntasklets; k++)
            x->ts[x->nt++] = (xt){c->t.tasklets[k].id, &c->t.tasklets[k], loc};
        x->cs = cli_xgrow(x->cs, x->nc, c->c.nchans, sizeof *x->cs);
        for (uint32_t k = 0; k < c->c.nchans; k++)
            x->cs[x->nc++] = (xc){c->c.chans[k].id, &c->c.chans[k], loc};
        hot |= c->kind > CLI_KIND_CHANS;
    }
    sort_index(x, hot);
}

/* ---- against the head ---- */

/* "key 0 @3, key 1 @2 (tombstone)": which rows of kind were selected. */
static void selected_rows(const cli_snap *s, int64_t kind, cli_buf *b)
{
    size_t shown = 0;
    for (size_t i = 0; i < s->nrows && shown < 8; i++) {
        if (s->rows[i].kind != kind)
            continue;
        cli_buf_printf(b, "%skey %lld @%lld%s", shown++ ? ", " : "", (long long)s->rows[i].key,
                       (long long)s->rows[i].ckpt, s->rows[i].tombstone ? " (tombstone)" : "");
    }
    if (!shown)
        cli_buf_put(b, "none", 4);
}

static void check_count(xctx *x, int64_t kind, uint64_t want, size_t have, const char *what)
{
    cli_loc loc = cli_loc_ckpt(x->s->ck.id);
    cli_buf rows = {0};
    if (want == have)
        return;
    selected_rows(x->s, kind, &rows);
    reportf(x, &loc, "the head says %llu %s, the chunks it selects hold %zu (rows of kind %lld "
            "selected: %s); a chunk row is missing or stale",
            (unsigned long long)want, what, have, (long long)kind, cli_buf_str(&rows));
    cli_buf_free(&rows);
}

static void check_next_ids(xctx *x)
{
    const cli_head *h = &x->s->head;
    if (x->nt && x->ts[x->nt - 1].id > h->next_tid)
        reportf(x, &x->ts[x->nt - 1].loc, "tasklet %llu is beyond the head's next_tid %llu",
                (unsigned long long)x->ts[x->nt - 1].id, (unsigned long long)h->next_tid);
    if (x->nc && x->cs[x->nc - 1].id > h->next_cid)
        reportf(x, &x->cs[x->nc - 1].loc, "channel %llu is beyond the head's next_cid %llu",
                (unsigned long long)x->cs[x->nc - 1].id, (unsigned long long)h->next_cid);
}

static bool in_needs(const cli_head *h, const char *label, size_t n)
{
    for (uint32_t i = 0; i < h->needs->via.array.size; i++) {
        const msgpack_object *s = &h->needs->via.array.ptr[i];
        if (s->via.str.size == n && !memcmp(s->via.str.ptr, label, n))
            return true;
    }
    return false;
}

static void check_needs(xctx *x)
{
    cli_buf b = {0};
    for (size_t i = 0; i < x->s->nchunks; i++) {
        const cli_chunk *c = &x->s->chunks[i];
        cli_loc loc = cli_loc_chunk(c->kind, c->key, c->ckpt);
        for (uint32_t k = 0; k < c->t.nfuncs; k++) {
            cli_buf_reset(&b);
            cli_buf_put(&b, c->t.funcs[k].name.p, c->t.funcs[k].name.n);
            cli_buf_printf(&b, "@%llu", (unsigned long long)c->t.funcs[k].version);
            if (!in_needs(&x->s->head, cli_buf_str(&b), b.len))
                reportf(x, &loc, "funcs[%u] is not in the head's needs", k);
        }
    }
    cli_buf_free(&b);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void check_runq(xctx *x)
{
    const msgpack_object *q = x->s->head.runq;
    cli_loc loc = cli_loc_ckpt(x->s->ck.id);
    uint64_t *ids = cli_xcalloc(q->via.array.size, sizeof *ids);
    for (uint32_t i = 0; i < q->via.array.size; i++) {
        const xt *t = find_t(x, ids[i] = q->via.array.ptr[i].via.u64);
        if (!t || t->t->state != CLI_S_RUNNABLE)
            reportf(x, &loc, "the head's runq names tasklet %llu, which is %s",
                    (unsigned long long)ids[i], t ? cli_state_name(t->t->state) : "missing");
    }
    qsort(ids, q->via.array.size, sizeof *ids, cmp_u64);
    for (uint32_t i = 1; i < q->via.array.size; i++)
        if (ids[i] == ids[i - 1])
            reportf(x, &loc, "the head's runq names tasklet %llu twice", (unsigned long long)ids[i]);
    for (size_t i = 0; i < x->nt; i++)
        if (x->ts[i].t->state == CLI_S_RUNNABLE
            && !bsearch(&x->ts[i].id, ids, q->via.array.size, sizeof *ids, cmp_u64))
            reportf(x, &x->ts[i].loc, "tasklet %llu is runnable but not in the head's runq",
                    (unsigned long long)x->ts[i].id);
    free(ids);
}

/* ---- references in values ---- */

typedef struct refctx {
    xctx *x;
    const cli_loc *loc;
    const char *what;
} refctx;

static void on_ref(void *ud, int type, uint64_t id)
{
    refctx *r = ud;
    if (type == 1 && !find_c(r->x, id))
        reportf(r->x, r->loc, "%s refers to channel %llu, which the checkpoint does not hold",
                r->what, (unsigned long long)id);
    if (type == 2 && !find_t(r->x, id))
        reportf(r->x, r->loc, "%s refers to tasklet %llu, which the checkpoint does not hold",
                r->what, (unsigned long long)id);
}

static void check_refs(xctx *x, const cli_loc *loc, const msgpack_object *v, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

static void check_refs(xctx *x, const cli_loc *loc, const msgpack_object *v, const char *fmt,
                       ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    refctx r = {x, loc, what};
    cli_value_refs(v, on_ref, &r);
}

static void tasklet_refs(xctx *x, const xt *e)
{
    const cli_tasklet *t = e->t;
    unsigned long long id = (unsigned long long)t->id;
    check_refs(x, &e->loc, t->xfer, "tasklet %llu xfer", id);
    for (uint32_t f = 0; f < t->nframes; f++)
        for (uint32_t i = 0; i < t->frames[f].locals->via.map.size; i++) {
            const msgpack_object_kv *kv = &t->frames[f].locals->via.map.ptr[i];
            check_refs(x, &e->loc, &kv->val, "tasklet %llu frame %u local \"%.*s\"", id, f,
                       (int)kv->key.via.str.size, kv->key.via.str.ptr);
        }
    for (uint32_t i = 0; i < t->ncases; i++)
        check_refs(x, &e->loc, t->cases[i].value, "tasklet %llu select case %u", id, i);
}

/* ---- waits and queues ---- */

static int pair_cmp(const void *x, const void *y)
{
    const xpair *p = x, *q = y;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    if (p->side != q->side)
        return p->side < q->side ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

static bool has_pair(const xpair *pairs, size_t n, uint64_t a, uint64_t side, uint64_t b)
{
    xpair key = {a, b, side};
    return n && bsearch(&key, pairs, n, sizeof *pairs, pair_cmp);
}

static void add_queue(xctx *x, uint64_t chan, const cli_waiter *w, uint32_t n, uint64_t side)
{
    x->queued = cli_xgrow(x->queued, x->nqueued, n, sizeof *x->queued);
    for (uint32_t i = 0; i < n; i++)
        if (w[i].kase < 0)
            x->queued[x->nqueued++] = (xpair){chan, w[i].tasklet, side};
}

/* The plain waiters of every queue and the joiners of every tasklet. */
static void build_pairs(xctx *x)
{
    for (size_t i = 0; i < x->nc; i++) {
        add_queue(x, x->cs[i].id, x->cs[i].ch->senders, x->cs[i].ch->nsenders, CLI_W_SEND);
        add_queue(x, x->cs[i].id, x->cs[i].ch->receivers, x->cs[i].ch->nreceivers, CLI_W_RECV);
    }
    for (size_t i = 0; i < x->nt; i++) {
        const msgpack_object *j = x->ts[i].t->joiners;
        uint32_t n = j ? j->via.array.size : 0;
        x->joins = cli_xgrow(x->joins, x->njoins, n, sizeof *x->joins);
        for (uint32_t k = 0; k < n; k++)
            x->joins[x->njoins++] = (xpair){x->ts[i].id, j->via.array.ptr[k].via.u64, 0};
    }
    if (x->nqueued)
        qsort(x->queued, x->nqueued, sizeof *x->queued, pair_cmp);
    if (x->njoins)
        qsort(x->joins, x->njoins, sizeof *x->joins, pair_cmp);
}

static void check_chan_wait(xctx *x, const xt *e)
{
    const cli_tasklet *t = e->t;
    bool send = t->wait == CLI_W_SEND;
    const xc *c = find_c(x, t->on->via.u64);
    if (!c) {
        reportf(x, &e->loc, "tasklet %llu waits to %s on channel %llu, which the checkpoint "
                "does not hold", (unsigned long long)t->id, send ? "send" : "receive",
                (unsigned long long)t->on->via.u64);
        return;
    }
    if (!has_pair(x->queued, x->nqueued, c->id, t->wait, t->id))
        reportf(x, &e->loc, "tasklet %llu waits to %s on channel %llu but is not in its %s",
                (unsigned long long)t->id, send ? "send" : "receive", (unsigned long long)c->id,
                send ? "senders" : "receivers");
}

static void check_join_wait(xctx *x, const xt *e)
{
    const xt *target = find_t(x, e->t->on->via.u64);
    if (!target)
        reportf(x, &e->loc, "tasklet %llu joins tasklet %llu, which the checkpoint does not hold",
                (unsigned long long)e->id, (unsigned long long)e->t->on->via.u64);
    else if (!has_pair(x->joins, x->njoins, target->id, 0, e->id))
        reportf(x, &e->loc, "tasklet %llu joins tasklet %llu, whose joiners do not list it",
                (unsigned long long)e->id, (unsigned long long)target->id);
}

static void check_select_wait(xctx *x, const xt *e)
{
    if (!e->t->has_sel) {
        reportf(x, &e->loc, "tasklet %llu is blocked in a select but has no extra.sel",
                (unsigned long long)e->id);
        return;
    }
    for (uint32_t i = 0; i < e->t->ncases; i++)
        if (!find_c(x, e->t->cases[i].chan))
            reportf(x, &e->loc, "tasklet %llu select case %u is on channel %llu, which the "
                    "checkpoint does not hold", (unsigned long long)e->id, i,
                    (unsigned long long)e->t->cases[i].chan);
}

static void check_joiners(xctx *x, const xt *e)
{
    const msgpack_object *j = e->t->joiners;
    for (uint32_t i = 0; j && i < j->via.array.size; i++) {
        const xt *w = find_t(x, j->via.array.ptr[i].via.u64);
        if (!w || w->t->state != CLI_S_BLOCKED || w->t->wait != CLI_W_JOIN
            || w->t->on->via.u64 != e->id)
            reportf(x, &e->loc, "tasklet %llu lists joiner %llu, which is %s",
                    (unsigned long long)e->id, (unsigned long long)j->via.array.ptr[i].via.u64,
                    w ? "not blocked joining it" : "missing");
    }
}

static void check_tasklet(xctx *x, const xt *e)
{
    tasklet_refs(x, e);
    check_joiners(x, e);
    if (e->t->state != CLI_S_BLOCKED)
        return;
    if (e->t->wait == CLI_W_SEND || e->t->wait == CLI_W_RECV)
        check_chan_wait(x, e);
    else if (e->t->wait == CLI_W_JOIN)
        check_join_wait(x, e);
    else if (e->t->wait == CLI_W_SELECT)
        check_select_wait(x, e);
}

/* A queued waiter is blocked on exactly this operation of this channel. */
static const char *waiter_problem(const xt *w, const cli_waiter *q, uint64_t chan, bool send)
{
    const cli_tasklet *t = w ? w->t : NULL;
    if (!t)
        return "missing";
    if (t->state != CLI_S_BLOCKED)
        return "not blocked";
    if (q->kase < 0)
        return t->wait != (send ? CLI_W_SEND : CLI_W_RECV) || t->on->via.u64 != chan
                   ? "not blocked on this operation" : NULL;
    if (t->wait != CLI_W_SELECT || !t->has_sel)
        return "not in a select";
    if ((uint64_t)q->kase >= t->ncases)
        return "in a select with fewer cases";
    if (t->cases[q->kase].chan != chan || t->cases[q->kase].op != (send ? 1u : 2u))
        return "in a select whose case differs";
    return NULL;
}

static void check_queue(xctx *x, const xc *c, const cli_waiter *q, uint32_t n, bool send)
{
    for (uint32_t i = 0; i < n; i++) {
        const char *why = waiter_problem(find_t(x, q[i].tasklet), &q[i], c->id, send);
        if (why)
            reportf(x, &c->loc, "channel %llu %s[%u] is tasklet %llu (case %lld), which is %s",
                    (unsigned long long)c->id, send ? "senders" : "receivers", i,
                    (unsigned long long)q[i].tasklet, (long long)q[i].kase, why);
    }
}

static void check_chan(xctx *x, const xc *c)
{
    const cli_chan *ch = c->ch;
    if (ch->buffer->via.array.size > ch->capacity)
        reportf(x, &c->loc, "channel %llu buffers %u values, more than its capacity %llu",
                (unsigned long long)ch->id, ch->buffer->via.array.size,
                (unsigned long long)ch->capacity);
    check_refs(x, &c->loc, ch->buffer, "channel %llu buffer", (unsigned long long)ch->id);
    check_queue(x, c, ch->senders, ch->nsenders, true);
    check_queue(x, c, ch->receivers, ch->nreceivers, false);
    for (int side = 0; side < 2; side++)
        if (ch->numbered[side] >= 0 &&
            (uint64_t)ch->numbered[side] != (side ? ch->nreceivers : ch->nsenders))
            reportf(x, &c->loc, "channel %llu counts %lld %s, %u records give it a queue number",
                    (unsigned long long)ch->id, (long long)ch->numbered[side],
                    side ? "receivers" : "senders", side ? ch->nreceivers : ch->nsenders);
}

void cli_xcheck(const cli_snap *s, cli_problem_fn fn, void *ud)
{
    xctx x = {s, fn, ud, NULL, 0, NULL, 0, NULL, NULL, 0, 0};
    build_index(&x);
    build_pairs(&x);
    check_count(&x, CLI_KIND_TASKLETS, s->head.ntasklets, x.nt, "tasklets");
    check_count(&x, CLI_KIND_CHANS, s->head.nchans, x.nc, "channels");
    check_next_ids(&x);
    check_needs(&x);
    check_runq(&x);
    for (size_t i = 0; i < x.nt; i++)
        check_tasklet(&x, &x.ts[i]);
    for (size_t i = 0; i < x.nc; i++)
        check_chan(&x, &x.cs[i]);
    free(x.ts);
    free(x.cs);
    free(x.queued);
    free(x.joins);
}
