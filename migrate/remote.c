/*
 * remote.c -- remote channel operations, and the node's layer ops.
 *
 * A channel whose home is another node is a proxy here (src/chan.c).  A
 * tasklet that blocks on one has a *request* (rop) here: hook_remote_op
 * sends OP [req, op, [id, name], value] on the link to the home and
 * records it; DONE [req, code, msg, value] completes it (tl__on_done); a
 * waiter that leaves first (killed, moved) sends CANCEL [req]
 * (hook_remote_cancel), answered CANCELLED [req] if the operation had not
 * happened (its DONE would have come first otherwise).  At the home each
 * OP runs as an *agent* tasklet ("tl.agent", tl__agent_fn) that does the
 * send or receive with the channel's own rendezvous rules and answers
 * DONE when it ends (agent_done); CANCEL kills it.
 *
 * A request:   hook_remote_op --> ISSUED --tl__on_done--> completed, gone
 *                                   |  \--hook_remote_cancel (CANCEL)--> gone
 *                 tl__remote_migrate|   \--tl__remote_link_lost--> TL_ELINK, gone
 *                 (CANCEL)          v
 *                                MOVING --tl__on_cancelled--> tl__depart
 *                                       --tl__on_done--> completed, then tl__depart
 *
 * Tables: a request is in its link's rops (by req: DONE, CANCELLED) and
 * in n->rop_by_t (by tasklet: a cancel, a migrate); an agent in its link's
 * agents (by req: CANCEL) and in n->agent_by_t (agent_done).  A dropped
 * link empties its own two tables (tl__remote_link_lost).
 *
 * Invariants: a tasklet has at most one request (it is blocked on one
 * operation); a request and an agent are in both their tables or in
 * neither, hold a reference to their tasklet and name the link they came
 * through, and go when it drops; a value crossing
 * nodes holds no channel or tasklet reference and nests at most 16 deep
 * (value_check).  After a restart (tl__node_start) agents are killed and
 * waiters on proxies fail: the requests behind them are gone.
 */
#include "node_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the node's layer ops in the runtime (src/internal.h) ---- */

/* ---- the tables: requests and agents by link and req, and by tasklet ---- */

static int req_match(const void *obj, const void *key)
{
    return *(const uint64_t *)obj == *(const uint64_t *)key; /* rop, agent: req first */
}

static int rop_t_match(const void *obj, const void *key)
{
    return ((const rop *)obj)->t == key;
}

static int agent_t_match(const void *obj, const void *key)
{
    return ((const agent *)obj)->t == key;
}

static uint64_t hash_ptr(const tl_node *n, const void *p)
{
    return tl__mix(n, (uint64_t)(uintptr_t)p);
}

/* Records r (req, t, via set) in via->rops and n->rop_by_t. */
static int rop_add(tl_node *n, rop *r)
{
    r->hreq = tl__mix(n, r->req); /* ours */
    r->ht = hash_ptr(n, r->t);
    if (tl__hmap_put(&r->via->rops, r->hreq, r) != TL_OK)
        return TL_ENOMEM;
    if (tl__hmap_put(&n->rop_by_t, r->ht, r) != TL_OK) {
        tl__hmap_del(&r->via->rops, r->hreq, r);
        return TL_ENOMEM;
    }
    return TL_OK;
}

static void rop_remove(tl_node *n, rop *r)
{
    tl__hmap_del(&r->via->rops, r->hreq, r);
    tl__hmap_del(&n->rop_by_t, r->ht, r);
}

static void rop_free(rop *r)
{
    tl_tasklet_release(r->t);
    free(r);
}

static rop *rop_of(tl_node *n, tl_tasklet *t)
{
    return tl__hmap_get(&n->rop_by_t, hash_ptr(n, t), rop_t_match, t);
}

/* Records a (req, t, via set) in via->agents and n->agent_by_t. */
static int agent_add(tl_node *n, agent *a)
{
    a->hreq = tl__hash_u64(n, a->req); /* the peer's: SipHash */
    a->ht = hash_ptr(n, a->t);
    if (tl__hmap_put(&a->via->agents, a->hreq, a) != TL_OK)
        return TL_ENOMEM;
    if (tl__hmap_put(&n->agent_by_t, a->ht, a) != TL_OK) {
        tl__hmap_del(&a->via->agents, a->hreq, a);
        return TL_ENOMEM;
    }
    return TL_OK;
}

static void agent_remove(tl_node *n, agent *a)
{
    tl__hmap_del(&a->via->agents, a->hreq, a);
    tl__hmap_del(&n->agent_by_t, a->ht, a);
}

/* Stops a's tasklet if it still runs, and frees a (taken out already). */
static void agent_stop(agent *a)
{
    if (a->t->state < TL_DONE)
        tl_kill_now(a->t);
    tl_tasklet_release(a->t);
    free(a);
}

/* Whether v can cross nodes: TL_ENOTSUP if it holds a channel or tasklet
 * reference, TL_ERANGE if nested deeper than 16. */
static int value_check(tl_value v, int depth)
{
    if (v.type == TL_V_CHAN || v.type == TL_V_TASKLET)
        return TL_ENOTSUP;
    size_t k = tl_len(v);
    if ((v.type == TL_V_ARRAY || v.type == TL_V_MAP) && depth >= 16)
        return TL_ERANGE;
    int rc = TL_OK;
    for (size_t i = 0; v.type == TL_V_ARRAY && i < k && rc == TL_OK; i++)
        rc = value_check(tl_array_at(v, i), depth + 1);
    for (size_t i = 0; v.type == TL_V_MAP && i < k && rc == TL_OK; i++) {
        rc = value_check(tl_map_key(v, i), depth + 1);
        if (rc == TL_OK)
            rc = value_check(tl_map_val(v, i), depth + 1);
    }
    return rc;
}

/* OP [req, op, [id, name|nil], value|nil] to the home of proxy r. */
static void send_op(conn *l, uint64_t req, int op, const tl__remote *r, const tl_tasklet *t)
{
    msgpack_packer pk;
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, M_OP);
    msgpack_pack_uint64(&pk, req);
    msgpack_pack_uint8(&pk, (uint8_t)op);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, r->id);
    if (r->name)
        tl__pack_str(&pk, r->name);
    else
        msgpack_pack_nil(&pk);
    if (op == TL_OP_SEND)
        tl__pack_value(&pk, t->xfer);
    else
        msgpack_pack_nil(&pk);
    tl__frame_end(l, at);
    tl__flush(l);
}

/* hook_remote_op's refusals, naming the channel (formatted only then:
 * the label is not built on the path of every operation); lost: the
 * link dropped while the request was sent. */
static int op_refused(tl_node *n, tl_chan *ch, int op, int rc, int lost)
{
    char label[160];
    const char *what = op == TL_OP_SEND ? "send" : "receive";
    const char *node = ch->remote->node;
    tl__chan_label(ch, label, sizeof label);
    if (rc == TL_ELINK && !lost)
        return tl__seterr(n->rt, rc, "%s on %s: no link to node %s", what, label, node);
    if (rc == TL_ELINK)
        return tl__seterr(n->rt, rc, "%s on %s: the link to node %s was lost", what, label, node);
    if (rc == TL_EBUSY)
        return tl__seterr(n->rt, rc, "%s on %s: %u operations are in flight to node %s "
                          "already (max_requests)", what, label, n->lim.max_requests, node);
    return tl__seterr(n->rt, rc, "send on %s: a value crossing nodes cannot hold channel "
                      "or tasklet references or nest deeper than 16", label);
}

static int hook_remote_op(void *ud, tl_chan *ch, tl_tasklet *t, int op)
{
    tl_node *n = ud;
    const tl__remote *r = ch->remote;
    conn *l = tl__link_up(n, r->node);
    if (!l)
        return op_refused(n, ch, op, TL_ELINK, 0);
    if (!tl__limit_requests(l))
        return op_refused(n, ch, op, TL_EBUSY, 0);
    int vc = op == TL_OP_SEND ? value_check(t->xfer, 0) : TL_OK;
    if (vc != TL_OK)
        return op_refused(n, ch, op, vc, 0);
    rop *ro = calloc(1, sizeof *ro);
    if (ro) {
        ro->req = ++n->next_req;
        ro->t = tl_tasklet_retain(t);
        ro->via = l;
    }
    if (!ro || rop_add(n, ro) != TL_OK) {
        if (ro)
            rop_free(ro);
        return tl__seterr(n->rt, TL_ENOMEM, "out of memory for a remote operation");
    }
    send_op(l, ro->req, op, r, t);
    if (l->state == L_DEAD) /* the request did not go: tl__link_drop freed it */
        return op_refused(n, ch, op, TL_ELINK, 1);
    return TL_OK;
}

static void hook_remote_cancel(void *ud, tl_chan *ch, tl_tasklet *t)
{
    tl_node *n = ud;
    rop *r = rop_of(n, t);
    (void)ch;
    if (!r)
        return;
    rop_remove(n, r);
    if (r->via->state == L_UP)
        tl__wire_req(r->via, M_CANCEL, r->req);
    rop_free(r);
}

static int hook_move(void *ud, tl_tasklet *t, const char *peer)
{
    tl_node *n = ud;
    if (strlen(peer) >= 64 || !tl__link_up(n, peer))
        return tl__seterr(n->rt, TL_ELINK, "TL_MIGRATE to '%s': no link to that node", peer);
    move m;
    m.t = tl_tasklet_retain(t);
    snprintf(m.peer, sizeof m.peer, "%s", peer);
    if (VEC_PUSH(n->moves, m) != 0) {
        tl_tasklet_release(t);
        return tl__seterr(n->rt, TL_ENOMEM, "TL_MIGRATE: out of memory");
    }
    return TL_OK;
}

static void hook_moves(void *ud)
{
    tl_node *n = ud;
    for (size_t i = 0; i < n->moves.n; i++) {
        tl_tasklet *t = n->moves.v[i].t;
        if (t->state == TL_BLOCKED && t->wait == TL_WAIT_MOVE) {
            tl__wake(t); /* it resumes after TL_MIGRATE, here or there */
            if (tl__depart(n, t, n->moves.v[i].peer, 0) != TL_OK)
                tl__deliver_error(t, n->rt->errcode, n->rt->errmsg);
        }
        tl_tasklet_release(t);
    }
    n->moves.n = 0;
}

/* The node's layer ops (src/internal.h): freeing the runtime waits for
 * tl_node_free; the rest carries remote channels and moves. */
static const char *hook_holder(const tl_runtime *rt, void *ud)
{
    (void)rt;
    (void)ud;
    return "a node is still attached; free it (tl_node_free)";
}

const tl__layer_ops tl__node_ops = {
    .holder = hook_holder,
    .remote_op = hook_remote_op,
    .remote_cancel = hook_remote_cancel,
    .move = hook_move,
    .moves = hook_moves,
    .import_chan = tl__access_import,
    .migrate = tl__node_migrate_op,
};

/* ---- agents: remote operations at the channel's home ---- */

typedef struct agent_l {
    tl_chan *ch;
    tl_value v;
    uint64_t req;
    uint32_t op;
} agent_l;

static void agent_done(tl_frame *f, agent_l *L);

static tl_status agent_step(tl_frame *f, void *locals)
{
    agent_l *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    if (L->op == TL_OP_SEND) {
        TL_SEND(f, L->ch, L->v);
    } else {
        TL_RECV(f, L->ch, L->v);
    }
    agent_done(f, L);
    TL_END(f);
}

static const tl_field agent_fields[] = {
    TL_FIELD(agent_l, ch, TL_T_CHAN),
    TL_FIELD(agent_l, v, TL_T_VALUE),
    TL_FIELD(agent_l, req, TL_T_U64),
    TL_FIELD(agent_l, op, TL_T_U32),
};
const tl_func tl__agent_fn = {"tl.agent", 1, agent_step, sizeof(agent_l), agent_fields,
                                 TL_COUNTOF(agent_fields), NULL};

static void agent_done(tl_frame *f, agent_l *L)
{
    tl_tasklet *t = f->t;
    tl_node *n = tl__layer_state(t->rt, TL__LAYER_NODE);
    int code = tl_frame_error(f);
    const char *msg = code ? tl_frame_errmsg(f) : NULL;
    int with_value = !code && L->op == TL_OP_RECV;
    if (with_value && (code = value_check(L->v, 0)) != TL_OK) {
        msg = "the value received cannot cross nodes (it holds a channel or tasklet "
              "reference, or is nested too deep)";
        with_value = 0;
    }
    agent *a = n ? tl__hmap_get(&n->agent_by_t, hash_ptr(n, t), agent_t_match, t) : NULL;
    if (!a)
        return;
    agent_remove(n, a);
    n->stats.remote_ops++;
    if (a->via->state == L_UP)
        tl__wire_done(a->via, a->req, code, msg, with_value ? &L->v : NULL);
    tl_tasklet_release(a->t);
    free(a);
}

/* ---- frames about channel operations ---- */

/* The local channel an OP names ([id, name|nil]) if the peer may reach
 * it (access.c); else NULL, answered TL_ENOENT whether it exists or not. */
static tl_chan *op_target(conn *l, uint64_t req, const msgpack_object *where)
{
    tl_node *n = l->node;
    char name[256], msg[400];
    uint64_t id = mp_item(where, 0)->via.u64;
    int named = mp_str(mp_item(where, 1), name, sizeof name);
    tl_chan *ch = tl__access_op(l, id, named ? name : NULL);
    if (ch)
        return ch;
    if (named)
        snprintf(msg, sizeof msg, "no channel %s/%s", n->id, name);
    else
        snprintf(msg, sizeof msg, "no channel %s/#%llu", n->id, (unsigned long long)id);
    tl__wire_done(l, req, TL_ENOENT, msg, NULL);
    return NULL;
}

/* An agent tasklet does operation op (value: the msgpack value sent) on
 * ch for request req of l; a failure to start it is answered at once. */
static void start_agent(conn *l, uint64_t req, uint32_t op, tl_chan *ch,
                        const msgpack_object *value)
{
    tl_node *n = l->node;
    agent_l args;
    if (!tl__limit_agents(l)) {
        char msg[256];
        snprintf(msg, sizeof msg, "node %s has too many operations of node %s in progress "
                 "(max_agents %u); retry later", n->id, l->peer, n->lim.max_agents);
        tl__wire_done(l, req, TL_EBUSY, msg, NULL);
        return;
    }
    memset(&args, 0, sizeof args);
    args.ch = ch;
    args.req = req;
    args.op = op;
    if (args.op == TL_OP_SEND && tl__unpack_value(n->rt, value, &args.v) != TL_OK) {
        tl__wire_done(l, req, TL_EPROTO, "the value sent is malformed or holds a reference",
                  NULL);
        return;
    }
    tl_tasklet *t = NULL;
    int rc = tl_spawn(n->rt, &tl__agent_fn, &args, sizeof args, &t);
    tl_release(args.v);
    agent *a = rc == TL_OK ? calloc(1, sizeof *a) : NULL;
    if (a) {
        a->req = req;
        a->t = tl__tasklet_at(t);
        a->via = l;
    }
    if (rc == TL_OK && (!a || agent_add(n, a) != TL_OK)) {
        tl_kill_now(t);
        tl_tasklet_release(t);
        free(a);
        rc = TL_ENOMEM;
    }
    if (rc != TL_OK)
        tl__wire_done(l, req, rc, "the home node could not start the operation", NULL);
}

/* OP at the home: an agent does it. */
void tl__on_op(conn *l, const msgpack_object *o)
{
    if (o->via.array.size < 5 || !mp_is_u(mp_item(o, 1)) || !mp_is_u(mp_item(o, 2)) ||
        (mp_item(o, 2)->via.u64 != TL_OP_SEND && mp_item(o, 2)->via.u64 != TL_OP_RECV) ||
        mp_item(o, 3)->type != MSGPACK_OBJECT_ARRAY || mp_item(o, 3)->via.array.size != 2 ||
        !mp_is_u(mp_item(mp_item(o, 3), 0))) {
        tl__link_drop(l, "malformed channel operation");
        return;
    }
    uint64_t req = mp_item(o, 1)->via.u64;
    tl_chan *ch = op_target(l, req, mp_item(o, 3));
    if (ch)
        start_agent(l, req, (uint32_t)mp_item(o, 2)->via.u64, ch, mp_item(o, 4));
}

/* Takes our request req on link l out of the tables; NULL if none. */
static rop *take_rop(tl_node *n, conn *l, uint64_t req)
{
    rop *r = tl__hmap_get(&l->rops, tl__mix(n, req), req_match, &req);
    if (r)
        rop_remove(n, r);
    return r;
}

void tl__on_done(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char msg[256] = "";
    if (o->via.array.size < 5 || !mp_is_u(mp_item(o, 1)) || !mp_is_i(mp_item(o, 2))) {
        tl__link_drop(l, "malformed answer");
        return;
    }
    rop *r = take_rop(n, l, mp_item(o, 1)->via.u64);
    if (!r)
        return; /* an answer for a waiter that left (killed, moved): dropped */
    int64_t code = mp_is_u(mp_item(o, 2)) ? (mp_item(o, 2)->via.u64 ? 1 : 0) : mp_item(o, 2)->via.i64;
    tl_value v = tl_nil();
    if (code > 0 || code < INT32_MIN)
        code = TL_EPROTO;
    mp_str(mp_item(o, 3), msg, sizeof msg);
    if (code == 0 && tl__unpack_value(n->rt, mp_item(o, 4), &v) != TL_OK) {
        code = TL_EPROTO;
        snprintf(msg, sizeof msg, "node %s answered with a malformed value", l->peer);
    }
    if (r->t->state == TL_BLOCKED && (r->t->flags & TL__TF_REMOTE))
        tl__remote_complete(r->t, (int)code, msg, v);
    else
        tl_release(v);
    if (r->moving[0] && r->t->state == TL_RUNNABLE && tl__depart(n, r->t, r->moving, 0) != TL_OK)
        tl__node_log(n, "tasklet #%llu could not move to %s: %s", (unsigned long long)r->t->id,
                     r->moving, n->rt->errmsg);
    rop_free(r);
}

void tl__on_cancel(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    if (o->via.array.size < 2 || !mp_is_u(mp_item(o, 1))) {
        tl__link_drop(l, "malformed cancel");
        return;
    }
    uint64_t req = mp_item(o, 1)->via.u64;
    agent *a = tl__hmap_get(&l->agents, tl__hash_u64(n, req), req_match, &req);
    if (!a)
        return;
    agent_remove(n, a);
    agent_stop(a);
    /* the operation did not happen: say so (its DONE, had it happened,
     * would have gone out before this) */
    tl__wire_req(l, M_CANCELLED, req);
}

/* The home stopped our request for a waiter that is moving: it moves
 * now, still waiting on the remote channel. */
void tl__on_cancelled(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    if (o->via.array.size < 2 || !mp_is_u(mp_item(o, 1))) {
        tl__link_drop(l, "malformed cancelled");
        return;
    }
    rop *r = take_rop(n, l, mp_item(o, 1)->via.u64);
    if (!r)
        return;
    if (r->moving[0] && r->t->state == TL_BLOCKED) {
        r->t->flags &= (uint16_t)~TL__TF_REMOTE;
        if (tl__depart(n, r->t, r->moving, 0) != TL_OK)
            tl__node_log(n, "tasklet #%llu could not move to %s: %s",
                         (unsigned long long)r->t->id, r->moving, n->rt->errmsg);
    } else if (r->t->state == TL_BLOCKED && (r->t->flags & TL__TF_REMOTE)) {
        /* not asked for: the operation did not happen; say so */
        tl__remote_complete(r->t, TL_EPROTO, "the channel's home cancelled the operation",
                            tl_nil());
    }
    rop_free(r);
}

/* ---- restarts, lost links, moving waiters ---- */

/* After a restart: agents (whose requesters are gone) are killed, and
 * waiters on remote channels (whose requests are lost) fail. */
static void agent_visit(void *obj, void *ud)
{
    tl_tasklet *t = obj;
    VEC(tl_tasklet *) *v = ud;
    if (t->state < TL_DONE && t->top && t->top->fn->fn == &tl__agent_fn)
        VEC_PUSH(*v, tl_tasklet_retain(t));
}

int tl__node_start(tl_node *n)
{
    VEC(tl_tasklet *) stale = {NULL, 0, 0};
    n->started = 1;
    tl__slab_each(&n->rt->tasklets, TL__MAGIC_TASK, agent_visit, &stale);
    for (size_t i = 0; i < stale.n; i++) {
        if (stale.v[i]->state < TL_DONE)
            tl_kill_now(stale.v[i]);
        tl_tasklet_release(stale.v[i]);
    }
    free(stale.v);
    VEC(tl_chan *) proxies = {NULL, 0, 0};
    for (tl__link *l = n->rt->chans.next; l != &n->rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->remote && VEC_PUSH(proxies, tl_chan_retain(ch)) != 0)
            tl_chan_release(ch);
    }
    for (size_t i = 0; i < proxies.n; i++) {
        tl_chan_fail_waiters(proxies.v[i], TL_ELINK, "the request on a remote channel was "
                             "lost in a restart");
        tl_chan_release(proxies.v[i]);
    }
    free(proxies.v);
    return TL_OK;
}

/* l went down: our requests through it fail with TL_ELINK, the agents it
 * started are killed. */
void tl__remote_link_lost(tl_node *n, conn *l)
{
    char msg[160];
    snprintf(msg, sizeof msg, "the link to node %s was lost", l->peer[0] ? l->peer : "?");
    /* l is DEAD: nothing adds to its tables while they are emptied, and
     * each entry leaves the node's tables before its tasklet is touched */
    for (size_t i = 0; i < l->rops.cap; i++) {
        rop *r = l->rops.e[i].obj;
        if (!r)
            continue;
        tl__hmap_del(&n->rop_by_t, r->ht, r);
        if (r->t->state == TL_BLOCKED && (r->t->flags & TL__TF_REMOTE))
            tl__remote_complete(r->t, TL_ELINK, msg, tl_nil());
        rop_free(r);
    }
    tl__hmap_free(&l->rops);
    for (size_t i = 0; i < l->agents.cap; i++) {
        agent *a = l->agents.e[i].obj;
        if (!a)
            continue;
        tl__hmap_del(&n->agent_by_t, a->ht, a);
        agent_stop(a);
    }
    tl__hmap_free(&l->agents);
}

/* tl_node_migrate of t, blocked on a remote channel with its request
 * issued: the request at the home is cancelled first, and t moves when
 * the home answers (tl__on_cancelled, or tl__on_done if it completed
 * meanwhile).  *handled is 0 if t has no request. */
int tl__remote_migrate(tl_node *n, tl_tasklet *t, const char *peer, int *handled)
{
    rop *r = rop_of(n, t);
    *handled = r != NULL;
    if (!r)
        return TL_OK;
    if (r->moving[0])
        return tl__seterr(n->rt, TL_EBUSY, "tl_node_migrate: tasklet #%llu is already "
                          "moving to %s", (unsigned long long)t->id, r->moving);
    snprintf(r->moving, sizeof r->moving, "%s", peer);
    tl__wire_req(r->via, M_CANCEL, r->req);
    return TL_OK;
}

/* The node is closing: moves asked for and not carried out are dropped;
 * the tables go (links are down already: no request or agent is left). */
void tl__remote_free(tl_node *n)
{
    for (size_t i = 0; i < n->moves.n; i++)
        tl_tasklet_release(n->moves.v[i].t);
    tl__hmap_free(&n->rop_by_t);
    tl__hmap_free(&n->agent_by_t);
    free(n->moves.v);
}
