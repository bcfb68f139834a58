/*
 * sched.c -- the runtime and its scheduler.
 *
 * The run queue is a FIFO of runnable tasklets linked through t->w.link;
 * the current tasklet is not in it while it runs.  One scheduler step
 * pops the head and runs its top frame until the step function returns
 * TL__SWITCH (the tasklet has been parked somewhere: run queue, a wait
 * queue, the timer heap, or it ended); TL__AGAIN means "run the new top
 * frame of the same tasklet" (after a call, return or unwind).
 *
 * Tasklet states and the functions behind each transition:
 *
 *            tl_spawn                      dispatch (run_some, tl__run_now)
 *  (new) ------------> RUNNABLE ---------------------------> RUNNING
 *                       ^ ^  ^ \                             |  |  |  |
 *  tl__wake, timer fire | |  |  `- tl_tasklet_remove -.      |  |  |  |
 *  kill/throw/run:      | |  |                         v     |  |  |  |
 *  tl__switch_to -------' |  |    PAUSED (BLOCKED) <---------'  |  |  |
 *                         |  `-- tl_tasklet_insert/run, kill,   |  |  |
 *                         |      throw (tl__detach)             |  |  |
 *                         `----- tl__yield, preference ---------'  |  |
 *                       |                                          |  |
 *                    BLOCKED <-- tl__send/recv/select/join/sleep --'  |
 *                       |  main: tl__run_scheduler (WAIT_RUN) <-------+
 *                       `-- kill/throw: strike, tl__detach, then      |
 *                           tl__switch_to or tl__run_now              |
 *                                                                     |
 *           tl__return (last frame) -> DONE;  error unwinds last      |
 *           frame (propagate) -> FAILED, or KILLED for TL_EKILLED  <--'
 *           tl_kill_now: any live state -> KILLED at once
 *
 * Stackless's switch to t (kill, throw, run) is tl__switch_to: t first,
 * the caller next, the run queue rotated as Stackless's circular queue
 * would be.  In main-tasklet mode (rt->main), main_idle applies
 * Stackless's rules when the run queue drains: main leaves
 * TL_RUN_SCHEDULER, or the tasklet that just blocked (or a blocked main,
 * when the last tasklet ended) gets TL_EDEADLOCK.
 *
 * Timers are a binary min-heap of wall-clock deadlines; a sleeping
 * tasklet keeps its heap index in t->w.on.  Deadlines are absolute
 * wall-clock times so that a stored runtime can keep them across a
 * restart.
 *
 * The runtime knows no storage: it reaches the layers above it (persist/,
 * migrate/) only through the ops they registered in its slots
 * (tl__layer_ops: on_free, on_reset, policy, chan_gone, tasklet_note,
 * queued, holder, and the
 * node's remote_op, remote_cancel, move, moves).  docs/ARCHITECTURE.md,
 * section 1.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TIMER_CHECK_EVERY 128

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

static int64_t default_clock(void *ud)
{
    struct timespec ts;
    (void)ud;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* tl_config.check, or TL_CHECK=locals in the environment (so that a
 * test suite runs in check mode without a change to its code). */
static int check_mode(const tl_config *cfg)
{
    const char *env = getenv("TL_CHECK");
    if (cfg && cfg->check == TL_CHECK_LOCALS)
        return TL_CHECK_LOCALS;
    return env && strcmp(env, "locals") == 0 ? TL_CHECK_LOCALS : 0;
}

int tl_runtime_new(const tl_config *cfg, tl_runtime **out)
{
    if (!out)
        return TL_EINVAL;
    *out = NULL;
    tl_alloc_fn alloc = cfg && cfg->alloc ? cfg->alloc : default_alloc;
    void *ud = cfg && cfg->alloc ? cfg->alloc_ud : NULL;
    tl_runtime *rt = alloc(ud, NULL, 0, sizeof *rt);
    if (!rt)
        return TL_ENOMEM;
    memset(rt, 0, sizeof *rt);
    rt->alloc = alloc;
    rt->alloc_ud = ud;
    rt->clock = cfg && cfg->clock ? cfg->clock : default_clock;
    rt->clock_ud = cfg && cfg->clock ? cfg->clock_ud : NULL;
    rt->check = check_mode(cfg);
    tl__list_init(&rt->runq);
    tl__list_init(&rt->chans);
    tl__list_init(&rt->dchans);
    tl__slab_init(&rt->tasklets, sizeof(tl_tasklet));
    tl__slab_init(&rt->exts, sizeof(tl__ext));
    tl__slab_init(&rt->chan_slab, sizeof(tl_chan));
    for (int i = 0; i < TL__FRAME_CLASSES; i++)
        tl__slab_init(&rt->frames[i], (size_t)(i + 1) * 16);
    rt->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)rt;
    rt->dlast = UINT64_MAX;
    rt->magic = TL__MAGIC_RT;
    *out = rt;
    return TL_OK;
}

static size_t dset_slot(uint64_t k, size_t cap)
{
    return (size_t)((k * 0x9e3779b97f4a7c15ULL) >> 32) & (cap - 1);
}

static void dset_put(uint64_t *set, size_t cap, uint64_t k)
{
    size_t i = dset_slot(k, cap);
    while (set[i] && set[i] != k + 1)
        i = (i + 1) & (cap - 1);
    set[i] = k + 1;
}

/* Doubles the set (rehashing); false when it would pass TL__DSET_MAX or
 * memory runs out. */
static bool dset_grow(tl_runtime *rt)
{
    size_t ncap = rt->dcap ? 2 * rt->dcap : 64;
    if (ncap > TL__DSET_MAX)
        return false;
    uint64_t *n = tl__calloc(rt, ncap * sizeof *n);
    if (!n)
        return false;
    for (size_t i = 0; i < rt->dcap; i++)
        if (rt->dset[i])
            dset_put(n, ncap, rt->dset[i] - 1);
    tl__free(rt, rt->dset, rt->dcap * sizeof *rt->dset);
    rt->dset = n;
    rt->dcap = ncap;
    return true;
}

void tl__mark_chunk(tl_runtime *rt, uint64_t k)
{
    rt->dlast = k;
    if (!rt->track || rt->dmap_lost || tl__dirty_has(rt, k))
        return;
    if (2 * (rt->dn + 1) > rt->dcap && !dset_grow(rt)) { /* too many: everything changed */
        rt->dmap_lost = 1;
        return;
    }
    dset_put(rt->dset, rt->dcap, k);
    rt->dn++;
}

bool tl__dirty_has(const tl_runtime *rt, uint64_t k)
{
    if (!rt->dn)
        return false;
    for (size_t i = dset_slot(k, rt->dcap); rt->dset[i]; i = (i + 1) & (rt->dcap - 1))
        if (rt->dset[i] == k + 1)
            return true;
    return false;
}

void tl__dirty_clear(tl_runtime *rt)
{
    if (rt->dn)
        memset(rt->dset, 0, rt->dcap * sizeof *rt->dset);
    rt->dn = 0;
    rt->dlast = UINT64_MAX;
    rt->dmap_lost = 0;
}

void tl__dirty_each(const tl_runtime *rt, void (*fn)(uint64_t k, void *ud), void *ud)
{
    for (size_t i = 0; rt->dn && i < rt->dcap; i++)
        if (rt->dset[i])
            fn(rt->dset[i] - 1, ud);
}

void tl__chan_touch_first(tl_chan *ch)
{
    ch->dirty = 1;
    tl__list_push_back(&ch->rt->dchans, &ch->dlink);
}

void tl__set_next_ids(tl_runtime *rt, uint64_t tid, uint64_t cid)
{
    rt->next_tid = tid > rt->next_tid ? tid : rt->next_tid;
    rt->next_cid = cid > rt->next_cid ? cid : rt->next_cid;
}

void tl__track(tl_runtime *rt, int on)
{
    rt->track = on;
    rt->dlast = UINT64_MAX;
    if (on)
        rt->dmap_lost = 1;
}

void tl__note_chan_gone(tl_runtime *rt, uint64_t id)
{
    if (!rt->track)
        return;
    for (int i = 0; i < TL__LAYERS; i++) {
        const tl__layer *l = &rt->layers[i];
        if (l->ops && l->ops->chan_gone)
            l->ops->chan_gone(rt, l->state, id);
    }
}

void tl__note_tasklet_slow(tl_runtime *rt, tl_tasklet *t, int born)
{
    for (int i = 0; i < TL__LAYERS; i++) {
        const tl__layer *l = &rt->layers[i];
        if (l->ops && l->ops->tasklet_note)
            l->ops->tasklet_note(rt, l->state, t, born);
    }
}

void tl__note_queued_slow(tl_runtime *rt, tl__waiter *w)
{
    for (int i = 0; i < TL__LAYERS; i++) {
        const tl__layer *l = &rt->layers[i];
        if (l->ops && l->ops->queued)
            l->ops->queued(rt, l->state, w);
    }
}

int tl_set_node_id(tl_runtime *rt, const char *node)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (!node || strlen(node) >= sizeof rt->node)
        return tl__seterr(rt, TL_EINVAL, "tl_set_node_id: a node id is 1 to %zu bytes",
                          sizeof rt->node - 1);
    memcpy(rt->node, node, strlen(node) + 1);
    return TL_OK;
}

const char *tl_node_id(const tl_runtime *rt)
{
    return rt && rt->magic == TL__MAGIC_RT ? rt->node : "";
}

int tl__layer_attach(tl_runtime *rt, int slot, const tl__layer_ops *ops, void *state)
{
    if (rt->layers[slot].ops && rt->layers[slot].ops != ops)
        return TL_EBUSY;
    rt->layers[slot] = (tl__layer){ops, state};
    return TL_OK;
}

void tl__layer_detach(tl_runtime *rt, int slot)
{
    rt->layers[slot] = (tl__layer){NULL, NULL};
}

int tl__layers_policy(tl_runtime *rt, int idle)
{
    for (int i = 0; i < TL__LAYERS; i++) {
        const tl__layer *l = &rt->layers[i];
        int rc = l->ops && l->ops->policy ? l->ops->policy(rt, l->state, idle) : TL_OK;
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

/* Lets every layer free its state; the layer above (the node) first. */
static void layers_free(tl_runtime *rt)
{
    for (int i = TL__LAYERS - 1; i >= 0; i--) {
        tl__layer l = rt->layers[i];
        tl__layer_detach(rt, i);
        if (l.ops && l.ops->on_free)
            l.ops->on_free(rt, l.state);
    }
}

/* What still holds rt, said for a message ("a store is still attached;
 * close it (tl_store_close)"), or NULL: the layers' holder ops, the
 * node's first. */
static const char *holder(const tl_runtime *rt)
{
    for (int i = TL__LAYERS - 1; i >= 0; i--) {
        const tl__layer *l = &rt->layers[i];
        const char *h = l->ops && l->ops->holder ? l->ops->holder(rt, l->state) : NULL;
        if (h)
            return h;
    }
    return NULL;
}

/* A store or a node keeps a pointer to rt and writes to it when it is
 * closed: freeing rt first would leave them dangling, so it is refused. */
void *tl__stale_handle(tl_runtime *rt, int chan)
{
    size_t size = chan ? sizeof(tl_chan) : sizeof(tl_tasklet);
    if (!rt->stale[chan]) {
        void *tomb = tl__calloc(rt, size); /* magic TL__MAGIC_DEAD */
        if (!tomb)
            return NULL;
        if (chan)
            ((tl_chan *)tomb)->rt = rt;
        else
            ((tl_tasklet *)tomb)->rt = rt;
        rt->stale[chan] = tomb;
    }
    return rt->stale[chan];
}

int tl_runtime_free(tl_runtime *rt)
{
    if (!rt)
        return TL_OK;
    if (rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (rt->running)
        return tl__seterr(rt, TL_EBUSY, "tl_runtime_free: called from inside tl_run; "
                          "free the runtime after tl_run returns");
    const char *held = holder(rt);
    if (held)
        return tl__seterr(rt, TL_EBUSY, "tl_runtime_free: %s before freeing the runtime",
                          held);
    tl__tasklet_free_all(rt);
    tl__free(rt, rt->timers, rt->captimers * sizeof *rt->timers);
    tl__registry_free(rt);
    layers_free(rt);
    tl__free(rt, rt->dset, rt->dcap * sizeof *rt->dset);
    tl__free(rt, rt->stale[0], sizeof(tl_tasklet));
    tl__free(rt, rt->stale[1], sizeof(tl_chan));
    rt->magic = TL__MAGIC_DEAD;
    rt->alloc(rt->alloc_ud, rt, sizeof *rt, 0);
    return TL_OK;
}

int64_t tl_now(const tl_runtime *rt)
{
    return rt ? rt->clock(rt->clock_ud) : 0;
}

uint64_t tl__random(tl_runtime *rt)
{
    uint64_t x = rt->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rt->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* ---- timers: a binary min-heap ---- */

static void heap_set(tl_runtime *rt, size_t i, tl__timer tm)
{
    rt->timers[i] = tm;
    tm.t->w.on = i;
}

static void heap_up(tl_runtime *rt, size_t i)
{
    tl__timer tm = rt->timers[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (rt->timers[p].deadline <= tm.deadline)
            break;
        heap_set(rt, i, rt->timers[p]);
        i = p;
    }
    heap_set(rt, i, tm);
}

static void heap_down(tl_runtime *rt, size_t i)
{
    tl__timer tm = rt->timers[i];
    size_t n = rt->ntimers;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && rt->timers[c + 1].deadline < rt->timers[c].deadline)
            c++;
        if (tm.deadline <= rt->timers[c].deadline)
            break;
        heap_set(rt, i, rt->timers[c]);
        i = c;
    }
    heap_set(rt, i, tm);
}

int tl__timer_add(tl_runtime *rt, tl_tasklet *t, int64_t deadline)
{
    if (rt->ntimers == rt->captimers) {
        size_t ncap = rt->captimers ? rt->captimers * 2 : 16;
        tl__timer *nt = tl__realloc(rt, rt->timers, rt->captimers * sizeof *nt,
                                    ncap * sizeof *nt);
        if (!nt)
            return TL_ENOMEM;
        rt->timers = nt;
        rt->captimers = ncap;
    }
    rt->timers[rt->ntimers] = (tl__timer){deadline, t};
    heap_up(rt, rt->ntimers++);
    return TL_OK;
}

static void heap_remove_at(tl_runtime *rt, size_t i)
{
    size_t last = --rt->ntimers;
    if (i == last)
        return;
    heap_set(rt, i, rt->timers[last]);
    if (i > 0 && rt->timers[i].deadline < rt->timers[(i - 1) / 2].deadline)
        heap_up(rt, i);
    else
        heap_down(rt, i);
}

void tl__timer_remove(tl_runtime *rt, tl_tasklet *t)
{
    heap_remove_at(rt, (size_t)t->w.on);
}

static void fire_timers(tl_runtime *rt)
{
    rt->steps_since_timers = 0;
    if (!rt->ntimers)
        return;
    int64_t now = rt->clock(rt->clock_ud);
    while (rt->ntimers && rt->timers[0].deadline <= now) {
        tl_tasklet *t = rt->timers[0].t;
        heap_remove_at(rt, 0);
        t->w.on = 0;
        tl__wake(t);
    }
}

int tl_next_deadline(const tl_runtime *rt, int64_t *deadline)
{
    if (!rt || rt->magic != TL__MAGIC_RT || !rt->ntimers)
        return 0;
    if (deadline)
        *deadline = rt->timers[0].deadline;
    return 1;
}

tl_status tl__sleep_until(tl_frame *f, int64_t deadline)
{
    tl_tasklet *t = f->t;
    if (tl__timer_add(t->rt, t, deadline) != TL_OK)
        return tl__op_error(f, TL_ENOMEM, "sleep: out of memory for a timer");
    tl__block(t, TL_WAIT_SLEEP);
    return TL__SWITCH;
}

tl_status tl__move(tl_frame *f, const char *node)
{
    tl_tasklet *t = f->t;
    tl_runtime *rt = t->rt;
    if (!node || !*node)
        return tl__op_error(f, TL_EINVAL, "TL_MIGRATE: no node named");
    const tl__layer *nl = tl__node_layer(rt);
    if (!nl->ops || !nl->ops->move)
        return tl__op_error(f, TL_ENOTSUP, "TL_MIGRATE to '%s': this runtime has no node "
                            "(tl_node_new)", node);
    if (strcmp(node, rt->node) == 0)
        return TL__CONT;
    if (nl->ops->move(nl->state, t, node) != TL_OK) {
        tl__deliver_error(t, rt->errcode, rt->errmsg);
        return TL__CONT;
    }
    tl__block(t, TL_WAIT_MOVE);
    rt->moves_pending = 1;
    rt->attention = 1;
    return TL__SWITCH;
}

/* Always a switch, even alone in the run queue: continuing inline would
 * keep a lone yielding tasklet inside one step for ever, so a bounded run
 * would never return, timers never fire and the host never get control. */
tl_status tl__yield(tl_frame *f)
{
    tl_tasklet *t = f->t;
    tl__runq_push_back(t->rt, t);
    return TL__SWITCH;
}

/* ---- the run loop ---- */

static void trace_switch(tl_runtime *rt, tl_tasklet *next)
{
    rt->sched_cb(rt->sched_ud, tl__tasklet_handle(rt->last), tl__tasklet_handle(next));
    rt->last = next;
}

/* ---- check mode (TL_CHECK=locals) ---- */

int (*tl__check_codec)(tl_runtime *rt, tl_tasklet *t);

#define SCRUB_BYTES 16384

/* Fills the C stack below the caller's frame, where the step function it
 * calls next will have its frame, with a pattern: a C local read before
 * it is written after a resumption then holds 0xA5 bytes, not the value
 * the last run left there. */
static __attribute__((noinline)) void scrub_stack(void)
{
    unsigned char pad[SCRUB_BYTES];
    memset(pad, 0xA5, sizeof pad);
    /* the compiler must assume pad is read: the stores stay (one memset,
     * not 16 Ki volatile byte stores, which were 90% of check mode's cost) */
    __asm__ volatile("" : : "r"(pad) : "memory");
}

/* The step loop of dispatch in check mode: before each resumption, t's
 * frames go through the snapshot codec (persist's hook) and the stack is
 * scrubbed.  A frame the codec cannot write fails with its error. */
static __attribute__((noinline)) void check_steps(tl_runtime *rt, tl_tasklet *t)
{
    tl_status s;
    do {
        tl_frame *f = t->top;
        if (tl__check_codec && tl__check_codec(rt, t) != TL_OK) {
            s = tl__fail(f, rt->errcode, rt->errmsg);
            continue;
        }
        scrub_stack();
        s = f->fn->step(f, TL__LOCALS(f));
    } while (s == TL__AGAIN);
}

/* One scheduler step of t, already out of the run queue: its top frame
 * runs until the tasklet switches out. */
static inline __attribute__((always_inline)) void dispatch(tl_runtime *rt, tl_tasklet *t)
{
    t->state = TL_RUNNING;
    if (rt->track) /* a layer tracks changes: note the chunk changed */
        tl__mark(rt, t);
    rt->current = t;
    if (rt->sched_cb)
        trace_switch(rt, t);
    if (rt->check) {
        check_steps(rt, t);
    } else {
        tl_status s;
        do {
            tl_frame *f = t->top;
            s = f->fn->step(f, TL__LOCALS(f));
        } while (s == TL__AGAIN);
    }
    rt->current = NULL;
}

/* ---- Stackless's switches and the main tasklet ---- */

/* Moves the tasklets ahead of t (in the run queue) behind the last. */
static void runq_rotate_to(tl_runtime *rt, tl_tasklet *t)
{
    tl__link *h = &rt->runq, *first = h->next, *before = t->w.link.prev;
    if (first == &t->w.link)
        return;
    h->next = &t->w.link;
    t->w.link.prev = h;
    h->prev->next = first;
    first->prev = h->prev;
    before->next = h;
    h->prev = before;
}

void tl__switch_to(tl_runtime *rt, tl_tasklet *cur, tl_tasklet *target)
{
    if (target->state != TL_RUNNABLE)
        tl__runq_push_back(rt, target);
    if (cur)
        tl__runq_push_back(rt, cur);
    runq_rotate_to(rt, target);
    if (rt->track)
        tl__mark(rt, target);
}

void tl__run_now(tl_runtime *rt, tl_tasklet *t)
{
    uintptr_t cstack = rt->cstack;
    int running = rt->running;
    if (t->state == TL_RUNNABLE)
        tl__runq_remove(rt, t);
    else
        t->wait = TL_WAIT_NONE;
    rt->running = 1;
    rt->cstack = rt->check ? 0 : (uintptr_t)__builtin_frame_address(0);
    dispatch(rt, t);
    rt->cstack = cstack;
    rt->running = running;
    if (rt->moves_pending && !running) {
        rt->moves_pending = 0;
        rt->attention = rt->pending_fail;
        tl__node_layer(rt)->ops->moves(tl__node_layer(rt)->state);
    }
}

/* Waits that nothing but another tasklet of this runtime can end. */
static bool waits_on_tasklets(const tl_tasklet *t)
{
    return t->state == TL_BLOCKED && !(t->flags & TL__TF_REMOTE) &&
           (t->wait == TL_WAIT_SEND || t->wait == TL_WAIT_RECV ||
            t->wait == TL_WAIT_SELECT || t->wait == TL_WAIT_JOIN);
}

/* Stackless's deadlock error, raised in t instead of its wait. */
static void deadlock_in(tl_runtime *rt, tl_tasklet *t)
{
    char label[160];
    tl__tasklet_label(t, label, sizeof label);
    tl__seterr(rt, TL_EDEADLOCK, "deadlock: %s is the last runnable tasklet and cannot "
               "block", label);
    tl__detach(t);
    tl__deliver_error(t, TL_EDEADLOCK, rt->errmsg);
    tl__runq_push_back(rt, t);
    if (rt->track)
        tl__mark(rt, t);
}

/* Main returns from TL_RUN_SCHEDULER; the error value a blocked last
 * sender offers comes with it (Stackless passes main that bomb). */
static void main_revive(tl_runtime *rt, tl_tasklet *m, const tl_tasklet *last)
{
    m->wait = TL_WAIT_NONE;
    if (last && last->state == TL_BLOCKED && last->wait == TL_WAIT_SEND &&
        last->xfer.type == TL_V_ERROR)
        tl__deliver_error(m, last->xfer.aux, tl_error_msg(last->xfer));
    tl__runq_push_back(rt, m);
    if (rt->track)
        tl__mark(rt, m);
}

/* The run queue has drained in main-tasklet mode, after step (the last
 * tasklet run by this run_some; NULL if none ran): Stackless's rules for
 * who learns of it.  Returns whether a tasklet became runnable.  A step's
 * tasklet that ended may be freed: its slot's magic then reads dead (the
 * slab keeps a freed object's head readable). */
static bool main_idle(tl_runtime *rt, tl_tasklet *step)
{
    bool stepped = step != NULL;
    tl_tasklet *m = rt->main, *last = step && step->magic == TL__MAGIC_TASK ? step : NULL;
    if (m->state == TL_BLOCKED && m->wait == TL_WAIT_RUN) {
        main_revive(rt, m, last);
        return true;
    }
    if (!stepped || rt->ntimers)
        return false;
    if (last && waits_on_tasklets(last)) {
        deadlock_in(rt, last);
        return true;
    }
    if ((!last || last->state >= TL_DONE) && waits_on_tasklets(m)) {
        deadlock_in(rt, m);
        return true;
    }
    return false;
}

tl_status tl__run_scheduler(tl_frame *f)
{
    tl_tasklet *t = f->t;
    tl_runtime *rt = t->rt;
    if (t != rt->main)
        return tl__op_error(f, TL_ESTATE, "TL_RUN_SCHEDULER: only the main tasklet "
                            "(tl_set_main) may run the scheduler");
    if (tl__list_empty(&rt->runq))
        return TL__CONT;
    t->state = TL_BLOCKED;
    t->wait = TL_WAIT_RUN;
    return TL__SWITCH;
}

/* Runs up to max steps; returns TL_OK or a detached tasklet's failure.
 * Inlined into tl_run and tl_run_steps: the loop is the yield path. */
static inline __attribute__((always_inline)) int run_some(tl_runtime *rt, uint64_t max,
                                                          uint64_t *ran)
{
    uint64_t n = 0;
    tl_tasklet *t = NULL;
    rt->cstack = rt->check ? 0 : (uintptr_t)__builtin_frame_address(0);
again:
    while (n < max && !tl__list_empty(&rt->runq)) {
        if (++rt->steps_since_timers >= TIMER_CHECK_EVERY)
            fire_timers(rt);
        t = TL__CONTAINER(rt->runq.next, tl_tasklet, w.link);
        tl__list_unlink(&t->w.link);
        rt->nrunnable--;
        dispatch(rt, t);
        n++;
        if (rt->attention) {
            if (rt->moves_pending) {
                rt->moves_pending = 0;
                tl__node_layer(rt)->ops->moves(tl__node_layer(rt)->state);
            }
            rt->attention = rt->pending_fail;
            if (rt->pending_fail)
                break;
        }
        if (rt->policy_every && ++rt->policy_count >= rt->policy_every) {
            rt->policy_count = 0;
            int rc = tl__layers_policy(rt, 0);
            if (rc != TL_OK) {
                *ran += n;
                return rc;
            }
        }
    }
    if (n < max && rt->main && !rt->pending_fail && main_idle(rt, t))
        goto again; /* off the hot loop: only when the run queue drained */
    *ran += n;
    if (rt->pending_fail) {
        int err = rt->pending_fail;
        rt->pending_fail = 0;
        rt->attention = rt->moves_pending;
        return err;
    }
    return TL_OK;
}

/* The layers' policy step (a checkpoint policy's chance to act) when
 * nothing is runnable. */
static int policy_idle(tl_runtime *rt)
{
    return tl__layers_policy(rt, 1);
}

static void sleep_until(tl_runtime *rt, int64_t deadline)
{
    int64_t d = deadline - rt->clock(rt->clock_ud);
    if (d <= 0)
        return;
    struct timespec ts = {(time_t)(d / 1000000000), (long)(d % 1000000000)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

typedef struct {
    char *buf;
    size_t len, cap;
    size_t listed, total;
} deadlock_msg;

static void blocked_visit(void *obj, void *ud)
{
    tl_tasklet *t = obj;
    deadlock_msg *m = ud;
    if (t->state != TL_BLOCKED || t->wait >= TL_WAIT_PAUSED)
        return;
    m->total++;
    if (m->listed >= 8 || m->len >= m->cap)
        return;
    char label[160], on[160] = "";
    static const char *const what[] = {"?", "send on", "receive on", "select on",
                                       "sleep", "join", "move"};
    if (t->wait == TL_WAIT_SEND || t->wait == TL_WAIT_RECV)
        tl__chan_label((tl_chan *)t->w.on, on, sizeof on);
    else if (t->wait == TL_WAIT_JOIN)
        tl__tasklet_label((tl_tasklet *)t->w.on, on, sizeof on);
    int k = snprintf(m->buf + m->len, m->cap - m->len, "%s%s (%s %s)",
                     m->listed ? "; " : "", tl__tasklet_label(t, label, sizeof label),
                     what[t->wait < 7 ? t->wait : 0], on);
    if (k > 0)
        m->len += (size_t)k < m->cap - m->len ? (size_t)k : m->cap - m->len - 1;
    m->listed++;
}

static int report_deadlock(tl_runtime *rt)
{
    char list[400];
    deadlock_msg m = {list, 0, sizeof list, 0, 0};
    list[0] = '\0';
    tl__slab_each(&rt->tasklets, TL__MAGIC_TASK, blocked_visit, &m);
    return tl__seterr(rt, TL_EDEADLOCK,
                      "deadlock: %zu tasklet(s) blocked with nothing left to wake them: %s%s",
                      m.total, list, m.total > m.listed ? "; ..." : "");
}

int tl_run(tl_runtime *rt)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (rt->running)
        return tl__seterr(rt, TL_EBUSY, "tl_run: the runtime is already running");
    rt->running = 1;
    int rc = TL_OK;
    for (;;) {
        uint64_t ran = 0;
        rc = run_some(rt, UINT64_MAX, &ran);
        if (rc != TL_OK)
            break;
        if (rt->sched_cb && rt->last)
            trace_switch(rt, NULL);
        rc = policy_idle(rt);
        if (rc != TL_OK)
            break;
        if (!tl__list_empty(&rt->runq))
            continue;
        if (!rt->ntimers) {
            if (rt->nblocked)
                rc = report_deadlock(rt);
            break;
        }
        sleep_until(rt, rt->timers[0].deadline);
        fire_timers(rt);
    }
    rt->running = 0;
    return rc;
}

int tl_run_steps(tl_runtime *rt, uint64_t max_steps, uint64_t *steps)
{
    uint64_t ran = 0;
    if (steps)
        *steps = 0;
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    if (rt->running)
        return tl__seterr(rt, TL_EBUSY, "tl_run_steps: the runtime is already running");
    rt->running = 1;
    fire_timers(rt);
    int rc = run_some(rt, max_steps, &ran);
    if (rt->sched_cb && rt->last && tl__list_empty(&rt->runq))
        trace_switch(rt, NULL);
    if (rc == TL_OK && tl__list_empty(&rt->runq) && ran)
        rc = policy_idle(rt);
    rt->running = 0;
    if (steps)
        *steps = ran;
    return rc;
}

size_t tl_runnable_count(const tl_runtime *rt)
{
    return rt && rt->magic == TL__MAGIC_RT ? rt->nrunnable : 0;
}

size_t tl_blocked_count(const tl_runtime *rt)
{
    return rt && rt->magic == TL__MAGIC_RT ? rt->nblocked : 0;
}

size_t tl_tasklet_count(const tl_runtime *rt)
{
    return rt && rt->magic == TL__MAGIC_RT ? rt->nlive : 0;
}

void tl_set_schedule_callback(tl_runtime *rt, tl_schedule_cb cb, void *ud)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return;
    rt->sched_cb = cb;
    rt->sched_ud = ud;
}

void tl_set_channel_callback(tl_runtime *rt, tl_channel_cb cb, void *ud)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return;
    rt->chan_cb = cb;
    rt->chan_ud = ud;
}
