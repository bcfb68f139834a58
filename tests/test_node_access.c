/*
 * test_node_access.c -- which local channels a peer may reach, and whose
 * transfers a peer's ACK, NACK and FORGET may settle (migrate/access.c,
 * docs/PROTOCOL.md section 7; issue 12 point 2).
 *
 * Three nodes in one process: A paired with B and with C.  A holds a
 * named channel it does not export ("secret"), an unnamed one ("plain")
 * and an exported one ("pub").
 *   - test_probe_ids: B probes A's channel ids 1..N and names: only the
 *     exported channel answers; every other id or name, existing or not,
 *     gets the same TL_ENOENT "no channel A/..." and A's channels see no
 *     waiter.
 *   - test_grant_by_tasklet: a tasklet A sends to B that holds "plain"
 *     reaches it from B; C, which got no tasklet, cannot, by id.
 *   - test_import_refused: a tasklet B sends to A that refers to A's
 *     "secret" is refused (it comes back to B with TL_ENOENT); one that
 *     refers to "pub" is taken.
 *   - test_forged_forget: a FORGET for a transfer A sent, coming from
 *     another peer, leaves the id remembered (a resend is still a
 *     duplicate); A's own FORGET removes it.
 *   - test_forged_ack: an ACK or NACK for A's transfer to B that comes on
 *     another link (even one claiming to be B) changes nothing; the real
 *     ACK then settles it.
 * Waits are on conditions, bounded by wall-clock time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../migrate/node_internal.h"
#include "../persist/persist.h"
#include "tasklet.h"
#include "tasklet_node.h"

/* ---- a tasklet that does one operation and records the outcome ---- */

typedef struct out {
    int set, err;
    int64_t num;
    char msg[160];
} out;
static out O[128];

typedef struct op_t {
    tl_chan *ch;
    tl_value v;
    int32_t slot, op;
    char dest[16];
} op_t;
static const tl_field op_fields[] = {
    TL_FIELD(op_t, ch, TL_T_CHAN), TL_FIELD(op_t, v, TL_T_VALUE),
    TL_FIELD(op_t, slot, TL_T_I32), TL_FIELD(op_t, op, TL_T_I32),
    TL_FIELD(op_t, dest, TL_T_BYTES),
};

static tl_status op_step(tl_frame *f, void *locals)
{
    op_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    if (L->dest[0])
        TL_MIGRATE(f, L->dest);
    if (L->op == TL_OP_SEND) {
        TL_SEND(f, L->ch, L->v);
    } else {
        TL_RECV(f, L->ch, L->v);
    }
    out *o = &O[L->slot];
    o->set = 1;
    o->err = tl_frame_error(f);
    o->num = o->err ? 0 : tl_as_i64(L->v);
    snprintf(o->msg, sizeof o->msg, "%s", o->err ? tl_frame_errmsg(f) : "");
    TL_END(f);
}
static const tl_func op_fn = {"test.access.op", 1, op_step, sizeof(op_t), op_fields,
                              TL_COUNTOF(op_fields), NULL};

/* ---- the fixture: A paired with B and with C ---- */

enum { A, B, C, NN };
static const char *const ids[NN] = {"A", "B", "C"};
static struct {
    tl_runtime *rt[NN];
    tl_node *n[NN];
    tl_chan *secret, *plain, *pub;
} F;

static void quiet(void *ud, const char *msg)
{
    (void)ud;
    if (getenv("ACCESS_LOG"))
        fprintf(stderr, "%s\n", msg);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pump_once(void)
{
    for (int i = 0; i < NN; i++)
        assert_int_equal(tl_node_poll(F.n[i], 0), TL_OK);
}

#define PUMP_UNTIL(cond)                                                          \
    do {                                                                          \
        double end_ = now_s() + 60;                                               \
        while (!(cond) && now_s() < end_)                                         \
            pump_once();                                                          \
        if (!(cond))                                                              \
            print_error("%s:%d: never reached: %s\n", __FILE__, __LINE__, #cond); \
        assert_true(cond);                                                        \
    } while (0)

static tl_node_stats stats(int i)
{
    tl_node_stats s;
    tl_node_stats_get(F.n[i], &s);
    return s;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    memset(O, 0, sizeof O);
    for (int i = 0; i < NN; i++) {
        tl_node_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.node_id = ids[i];
        cfg.log = quiet;
        assert_int_equal(tl_runtime_new(NULL, &F.rt[i]), TL_OK);
        assert_int_equal(tl_register(F.rt[i], &op_fn), TL_OK);
        assert_int_equal(tl_node_new(F.rt[i], &cfg, &F.n[i]), TL_OK);
    }
    assert_int_equal(tl_chan_new(F.rt[A], 0, &F.secret), TL_OK);
    assert_int_equal(tl_chan_set_name(F.secret, "secret"), TL_OK);
    assert_int_equal(tl_chan_new(F.rt[A], 0, &F.plain), TL_OK);
    assert_int_equal(tl_chan_new(F.rt[A], 0, &F.pub), TL_OK);
    assert_int_equal(tl_node_export(F.n[A], F.pub, "pub"), TL_OK);
    assert_int_equal(tl_node_pair(F.n[A], F.n[B]), TL_OK);
    assert_int_equal(tl_node_pair(F.n[A], F.n[C]), TL_OK);
    PUMP_UNTIL(tl_node_connected(F.n[B], "A") && tl_node_connected(F.n[C], "A") &&
               tl_node_connected(F.n[A], "B") && tl_node_connected(F.n[A], "C"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_chan_release(F.secret);
    tl_chan_release(F.plain);
    tl_chan_release(F.pub);
    for (int i = 0; i < NN; i++) {
        tl_node_free(F.n[i]);
        tl_runtime_free(F.rt[i]);
    }
    return 0;
}

/* A proxy at node `at` for A's channel #id (what a snapshot or a forged OP
 * can name). */
static tl_chan *proxy_id(int at, uint64_t id)
{
    tl_chan *ch;
    assert_int_equal(tl__chan_create(F.rt[at], 0, &ch), TL_OK);
    assert_int_equal(tl__chan_make_proxy(ch, "A", id, NULL), TL_OK);
    return tl__chan_handle(ch);
}

static void spawn_op(int at, tl_chan *ch, int op, int64_t v, int slot, const char *dest)
{
    op_t a;
    memset(&a, 0, sizeof a);
    a.ch = ch;
    a.v = tl_i64(v);
    a.slot = slot;
    a.op = op;
    if (dest)
        snprintf(a.dest, sizeof a.dest, "%s", dest);
    assert_int_equal(tl_spawn(F.rt[at], &op_fn, &a, sizeof a, NULL), TL_OK);
}

/* ---- probing ---- */

/* How many of O[from..to] are set. */
static int answered(int from, int to)
{
    int k = 0;
    for (int i = from; i <= to; i++)
        k += O[i].set;
    return k;
}

static void test_probe_ids(void **state)
{
    (void)state;
    enum { N = 40 };
    uint64_t pub = tl_chan_id(F.pub);
    assert_true(tl_chan_id(F.plain) < N && pub < N);
    for (uint64_t id = 1; id <= N; id++) {
        tl_chan *p = proxy_id(B, id);
        spawn_op(B, p, TL_OP_RECV, 0, (int)id, NULL);
        tl_chan_release(p);
    }
    PUMP_UNTIL(tl_chan_balance(F.pub) == -1 && answered(1, N) == N - 1);
    for (uint64_t id = 1; id <= N; id++) {
        if (id == pub)
            continue;
        char want[64];
        snprintf(want, sizeof want, "no channel A/#%llu", (unsigned long long)id);
        assert_true(O[id].set);
        assert_int_equal(O[id].err, TL_ENOENT);
        assert_string_equal(O[id].msg, want); /* the same for existing and missing ids */
    }
    /* nothing of A's but the exported channel was touched */
    assert_int_equal(tl_chan_balance(F.secret), 0);
    assert_int_equal(tl_chan_balance(F.plain), 0);
    assert_int_equal(tl_tasklet_count(F.rt[A]), 1); /* the agent on "pub" */
    assert_int_equal(tl_chan_try_send(F.pub, tl_i64(7)), TL_OK);
    PUMP_UNTIL(O[pub].set);
    assert_int_equal(O[pub].err, TL_OK);
    assert_int_equal(O[pub].num, 7);

    /* by name: an existing name not exported answers like a missing one */
    tl_chan *s = NULL, *m = NULL, *e = NULL;
    assert_int_equal(tl_node_chan(F.n[B], "A/secret", &s), TL_OK);
    assert_int_equal(tl_node_chan(F.n[B], "A/missing", &m), TL_OK);
    assert_int_equal(tl_node_chan(F.n[B], "A/pub", &e), TL_OK);
    spawn_op(B, s, TL_OP_RECV, 0, 100, NULL);
    spawn_op(B, m, TL_OP_RECV, 0, 101, NULL);
    spawn_op(B, e, TL_OP_SEND, 8, 102, NULL);
    PUMP_UNTIL(O[100].set && O[101].set && tl_chan_balance(F.pub) == 1);
    assert_int_equal(O[100].err, TL_ENOENT);
    assert_int_equal(O[101].err, TL_ENOENT);
    assert_string_equal(O[100].msg, "no channel A/secret");
    assert_string_equal(O[101].msg, "no channel A/missing");
    tl_value v;
    assert_int_equal(tl_chan_try_recv(F.pub, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), 8);
    PUMP_UNTIL(O[102].set);
    assert_int_equal(O[102].err, TL_OK);
    assert_int_equal(tl_chan_balance(F.secret), 0);

    /* once unexported, "pub" is refused like the others */
    assert_int_equal(tl_node_unexport(F.n[A], "pub"), TL_OK);
    assert_int_equal(tl_node_unexport(F.n[A], "pub"), TL_ENOENT);
    spawn_op(B, e, TL_OP_RECV, 0, 103, NULL);
    PUMP_UNTIL(O[103].set);
    assert_int_equal(O[103].err, TL_ENOENT);
    assert_string_equal(O[103].msg, "no channel A/pub");
    tl_chan_release(s);
    tl_chan_release(m);
    tl_chan_release(e);
}

static void test_export_errors(void **state)
{
    (void)state;
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(tl_node_export(F.n[A], F.pub, "pub"), TL_OK); /* again: fine */
    assert_int_equal(tl_node_export(F.n[A], F.plain, "pub"), TL_EEXIST);
    assert_int_equal(tl_node_export(F.n[A], F.plain, ""), TL_EINVAL);
    assert_int_equal(tl_node_export(F.n[A], F.plain, big), TL_EINVAL);
    assert_int_equal(tl_node_export(F.n[B], F.plain, "x"), TL_EINVAL); /* A's channel */
    tl_chan *p = proxy_id(A, 1);
    assert_int_equal(tl_node_export(F.n[A], p, "remote"), TL_EINVAL);
    tl_chan_release(p);
    assert_int_equal(tl_node_export(NULL, F.plain, "x"), TL_EMISUSE);
    assert_int_equal(tl_node_export(F.n[A], NULL, "x"), TL_EMISUSE);
    /* the own node finds an exported channel by its export name */
    assert_int_equal(tl_node_export(F.n[A], F.plain, "alias"), TL_OK);
    tl_chan *same = NULL;
    assert_int_equal(tl_node_chan(F.n[A], "A/alias", &same), TL_OK);
    assert_ptr_equal(same, F.plain);
    tl_chan_release(same);
}

/* ---- grants ---- */

static void test_grant_by_tasklet(void **state)
{
    (void)state;
    /* a tasklet holding "plain" moves to B and receives on it from there */
    spawn_op(A, F.plain, TL_OP_RECV, 0, 1, "B");
    PUMP_UNTIL(stats(B).moved_in == 1 && tl_chan_balance(F.plain) == -1);
    assert_int_equal(tl_chan_try_send(F.plain, tl_i64(41)), TL_OK);
    PUMP_UNTIL(O[1].set);
    assert_int_equal(O[1].err, TL_OK);
    assert_int_equal(O[1].num, 41);
    /* B may reach it by id now (it was given it); C, never given it, may not */
    uint64_t id = tl_chan_id(F.plain);
    tl_chan *pb = proxy_id(B, id), *pc = proxy_id(C, id);
    spawn_op(B, pb, TL_OP_RECV, 0, 2, NULL);
    spawn_op(C, pc, TL_OP_RECV, 0, 3, NULL);
    PUMP_UNTIL(O[3].set && tl_chan_balance(F.plain) == -1);
    assert_int_equal(O[3].err, TL_ENOENT);
    assert_false(O[2].set);
    assert_int_equal(tl_chan_try_send(F.plain, tl_i64(42)), TL_OK);
    PUMP_UNTIL(O[2].set);
    assert_int_equal(O[2].num, 42);
    tl_chan_release(pb);
    tl_chan_release(pc);
    /* a named channel travels as [id, name]: granted, it answers that way */
    spawn_op(A, F.secret, TL_OP_RECV, 0, 4, "B");
    PUMP_UNTIL(stats(B).moved_in == 2 && tl_chan_balance(F.secret) == -1);
    assert_int_equal(tl_chan_try_send(F.secret, tl_i64(43)), TL_OK);
    PUMP_UNTIL(O[4].set);
    assert_int_equal(O[4].err, TL_OK);
    assert_int_equal(O[4].num, 43);
    /* but by name alone (tl_node_chan) it stays refused: it is not exported */
    tl_chan *byname = NULL;
    assert_int_equal(tl_node_chan(F.n[B], "A/secret", &byname), TL_OK);
    spawn_op(B, byname, TL_OP_RECV, 0, 5, NULL);
    PUMP_UNTIL(O[5].set);
    assert_int_equal(O[5].err, TL_ENOENT);
    tl_chan_release(byname);
}

static void test_import_refused(void **state)
{
    (void)state;
    /* B sends A a tasklet that refers to A's "secret" (by id): refused as
     * missing, and it comes back to B with that error */
    tl_chan *ps = proxy_id(B, tl_chan_id(F.secret)), *pp = proxy_id(B, tl_chan_id(F.pub));
    spawn_op(B, ps, TL_OP_RECV, 0, 1, "A");
    PUMP_UNTIL(O[1].set);
    assert_int_equal(O[1].err, TL_ENOENT);
    assert_int_equal(stats(A).moved_in, 0);
    assert_int_equal(stats(B).refused, 1);
    assert_int_equal(tl_chan_balance(F.secret), 0);
    /* one that refers to the exported channel is taken */
    spawn_op(B, pp, TL_OP_RECV, 0, 2, "A");
    PUMP_UNTIL(stats(A).moved_in == 1 && tl_chan_balance(F.pub) == -1);
    assert_int_equal(tl_chan_try_send(F.pub, tl_i64(5)), TL_OK);
    PUMP_UNTIL(O[2].set);
    assert_int_equal(O[2].err, TL_OK);
    assert_int_equal(O[2].num, 5);
    tl_chan_release(ps);
    tl_chan_release(pp);
}

/* ---- frames forged on other links ---- */

static msgpack_sbuffer fbuf;
static msgpack_packer fpk;

static void frame_begin(int type, uint32_t items)
{
    msgpack_sbuffer_init(&fbuf);
    msgpack_sbuffer_write(&fbuf, "\0\0\0\0", 4);
    msgpack_packer_init(&fpk, &fbuf, msgpack_sbuffer_write);
    msgpack_pack_array(&fpk, items);
    msgpack_pack_uint8(&fpk, (uint8_t)type);
}

static void pack_str(const char *s)
{
    msgpack_pack_str(&fpk, strlen(s));
    msgpack_pack_str_body(&fpk, s, strlen(s));
}

/* Ends the frame and feeds it to node `at` on a new link authenticated as
 * peer. */
static void frame_feed(int at, const char *peer)
{
    uint32_t n = (uint32_t)fbuf.size - 4;
    unsigned char *p = (unsigned char *)fbuf.data;
    p[0] = (unsigned char)(n >> 24);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
    assert_int_equal(tl__node_feed_as(F.n[at], fbuf.data, fbuf.size, peer), TL_OK);
    msgpack_sbuffer_destroy(&fbuf);
}

/* FORGET or ACK [type, [xid]]. */
static void feed_ids(int at, const char *peer, int type, const char *xid)
{
    frame_begin(type, 2);
    msgpack_pack_array(&fpk, 1);
    pack_str(xid);
    frame_feed(at, peer);
}

static void feed_xfer(int at, const char *peer, const char *xid, const void *snap, size_t len)
{
    frame_begin(10, 2);
    msgpack_pack_array(&fpk, 1);
    msgpack_pack_array(&fpk, 2);
    pack_str(xid);
    msgpack_pack_bin(&fpk, len);
    msgpack_pack_bin_body(&fpk, snap, len);
    frame_feed(at, peer);
}

static void test_forged_forget(void **state)
{
    (void)state;
    /* a transfer "from A" to B: a tasklet of A's runtime, sent as A sends */
    static const char xid[] = "0123456789abcdef0123456789abcdef";
    tl_tasklet *t;
    void *snap;
    size_t len;
    op_t a = {.ch = NULL, .slot = 2, .op = TL_OP_SEND}; /* fails at once, caught */
    assert_int_equal(tl_spawn(F.rt[A], &op_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl__snapshot_save_moving(tl__tasklet_at(t), &snap, &len), TL_OK);
    tl_kill_now(t);
    tl_tasklet_release(t);

    feed_xfer(B, "A", xid, snap, len);
    assert_int_equal(stats(B).moved_in, 1);
    /* C says FORGET: B still remembers the id, a resend is a duplicate */
    feed_ids(B, "C", 13, xid);
    feed_xfer(B, "A", xid, snap, len);
    assert_int_equal(stats(B).moved_in, 1);
    assert_int_equal(stats(B).duplicates, 1);
    /* A's own FORGET removes it: the same id is then taken afresh */
    feed_ids(B, "A", 13, xid);
    feed_xfer(B, "A", xid, snap, len);
    assert_int_equal(stats(B).moved_in, 2);
    assert_int_equal(stats(B).duplicates, 1);
    tl_snapshot_free(F.rt[A], snap, len);
}

static void test_forged_ack(void **state)
{
    (void)state;
    tl_tasklet *t;
    op_t a = {.ch = F.pub, .slot = 1, .op = TL_OP_RECV};
    assert_int_equal(tl_spawn(F.rt[A], &op_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_node_migrate(F.n[A], t, "B"), TL_OK);
    tl_tasklet_release(t);
    assert_int_equal(tl_node_poll(F.n[A], 0), TL_OK); /* the XFER goes out; B not polled */
    char xid[40];
    assert_non_null(tl__node_first_xid(F.n[A]));
    snprintf(xid, sizeof xid, "%s", tl__node_first_xid(F.n[A]));
    /* an ACK and a NACK for it on other links, one claiming to be B */
    feed_ids(A, "B", 11, xid);
    feed_ids(A, "C", 11, xid);
    frame_begin(12, 4);
    pack_str(xid);
    msgpack_pack_int(&fpk, TL_ENOENT);
    pack_str("forged");
    frame_feed(A, "B");
    assert_int_equal(stats(A).pending, 1);
    assert_int_equal(stats(A).moved_out, 0);
    assert_int_equal(stats(A).refused, 0);
    /* the real ACK, on the link the transfer went out on, settles it */
    PUMP_UNTIL(stats(A).moved_out == 1);
    assert_int_equal(stats(A).pending, 0);
    assert_int_equal(stats(B).moved_in, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_probe_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grant_by_tasklet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_forget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_ack, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
