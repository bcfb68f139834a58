/*
 * test_node_rows.c -- the node's rows in the store (migrate/durable.c):
 * two nodes "A" and "B" in one process (tl_node_pair), each runtime on a
 * store of its own and a fake clock (tests/testutil.h), driven from one
 * thread by polling each in turn.
 *
 *   - a checkpoint writes only the rows that changed: with 20 outbox rows
 *     and 20 inbox ids already stored, one transfer costs its source one
 *     put and one delete, and its destination the same (the old node
 *     rewrote both tables whole in every checkpoint);
 *   - inbox rows carry the peer and the time the id was taken, ids age out
 *     after tl_node_config.inbox_keep_ns (young ones stay; a row without a
 *     time, from an older version, is given the time it was read back),
 *     also after many ids were forgotten; the default window is 7 days and
 *     a negative one keeps ids for good;
 *   - an import is held until a checkpoint holds it (issue 12 point 5): a
 *     moved tasklet blocked on a channel of its source issues its remote
 *     operation only after the destination's checkpoint committed, so
 *     while that checkpoint fails the home sees nothing, and afterwards
 *     exactly one operation; a node closed while an import is still held
 *     undoes it (the source sends it again).
 *
 * Waits are bounded by wall-clock time (60 s against hangs), never by a
 * count of rounds; no assertion depends on timing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tasklet.h"
#include "tasklet_node.h"
#include "testutil.h"
#include "../persist/persist.h"

#define T0 1700000000000000000LL /* the fake clocks start here (ns) */
#define HOUR 3600000000000LL
#define DAY (24 * HOUR)

/* ---- the fixture ---- */

static struct {
    char dir[64], path[2][128];
    fake_clock clock[2];
    tl_runtime *rt[2];
    tl_store *st[2];
    tl_node *n[2];
    int arrived;          /* movers that resumed at their destination */
    int received;         /* values the receiver at A got */
    int64_t value;
    char log[4096];
} F;

static void quiet_log(void *ud, const char *msg)
{
    size_t k = strlen(F.log);
    (void)ud;
    if (k + strlen(msg) + 2 < sizeof F.log)
        snprintf(F.log + k, sizeof F.log - k, "%s\n", msg);
}

/* mover: moves to dest, counts its arrival there. */
typedef struct { char dest[16]; } mover_t;
static const tl_field mover_fields[] = {TL_FIELD(mover_t, dest, TL_T_BYTES)};
static tl_status mover(tl_frame *f, void *locals)
{
    mover_t *L = locals;
    TL_BEGIN(f);
    TL_MIGRATE(f, L->dest);
    F.arrived++;
    TL_END(f);
}
static const tl_func mover_fn = {"test.rows.mover", 1, mover, sizeof(mover_t), mover_fields,
                                 TL_COUNTOF(mover_fields), NULL};

/* sender: sends v on ch (wherever it is by then), counts its arrival. */
typedef struct { tl_chan *ch; int64_t v; } sender_t;
static const tl_field sender_fields[] = {TL_FIELD(sender_t, ch, TL_T_CHAN),
                                         TL_FIELD(sender_t, v, TL_T_I64)};
static tl_status sender(tl_frame *f, void *locals)
{
    sender_t *L = locals;
    TL_BEGIN(f);
    TL_SEND(f, L->ch, tl_i64(L->v));
    F.arrived++;
    TL_END(f);
}
static const tl_func sender_fn = {"test.rows.sender", 1, sender, sizeof(sender_t),
                                  sender_fields, TL_COUNTOF(sender_fields), NULL};

/* receiver: receives one value on ch, counts it. */
typedef struct { tl_chan *ch; tl_value got; } receiver_t;
static const tl_field receiver_fields[] = {TL_FIELD(receiver_t, ch, TL_T_CHAN),
                                           TL_FIELD(receiver_t, got, TL_T_VALUE)};
static tl_status receiver(tl_frame *f, void *locals)
{
    receiver_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->ch, L->got);
    F.received++;
    F.value = tl_as_i64(L->got);
    TL_END(f);
}
static const tl_func receiver_fn = {"test.rows.receiver", 1, receiver, sizeof(receiver_t),
                                    receiver_fields, TL_COUNTOF(receiver_fields), NULL};

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    snprintf(F.dir, sizeof F.dir, "/tmp/tl-node-rows-XXXXXX");
    if (!mkdtemp(F.dir))
        return -1;
    for (int i = 0; i < 2; i++) {
        snprintf(F.path[i], sizeof F.path[i], "%s/%c.db", F.dir, 'a' + i);
        F.clock[i].now = T0;
        tl_config cfg = {.clock = fake_clock_fn, .clock_ud = &F.clock[i]};
        if (tl_runtime_new(&cfg, &F.rt[i]) != TL_OK || tl_register(F.rt[i], &mover_fn) != TL_OK ||
            tl_register(F.rt[i], &sender_fn) != TL_OK ||
            tl_register(F.rt[i], &receiver_fn) != TL_OK)
            return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    for (int i = 0; i < 2; i++) {
        tl_node_free(F.n[i]);
        tl_store_close(F.st[i]);
        tl_runtime_free(F.rt[i]);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", F.dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Side i's store, opened and attached (its tables exist from then on). */
static void open_store(int i)
{
    assert_int_equal(tl_store_open(F.path[i], TL_STORE_NOSYNC, &F.st[i]), TL_OK);
    assert_int_equal(tl_store_attach(F.st[i], F.rt[i]), TL_OK);
}

/* Side i's node (A or B), on its store if it has one. */
static void node_new(int i, int64_t keep)
{
    tl_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.node_id = i ? "B" : "A";
    cfg.store = F.st[i];
    cfg.log = quiet_log;
    cfg.inbox_keep_ns = keep;
    assert_int_equal(tl_node_new(F.rt[i], &cfg, &F.n[i]), TL_OK);
}

/* ---- SQL on a store file, from outside ---- */

static int64_t query(int i, const char *text)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v = -1;
    assert_int_equal(sqlite3_open(F.path[i], &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    if (sqlite3_prepare_v2(db, text, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void sql(int i, const char *text)
{
    sqlite3 *db;
    char *err = NULL;
    assert_int_equal(sqlite3_open(F.path[i], &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    if (sqlite3_exec(db, text, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", text, err);
    sqlite3_close(db);
}

/* An inbox row of side i: id n (32 hex digits), from peer, taken at. */
static void put_inbox(int i, int n, const char *peer, int64_t at)
{
    char text[256];
    snprintf(text, sizeof text, "INSERT INTO inbox(xid, peer, time) VALUES "
             "('%032x', '%s', %lld)", n, peer, (long long)at);
    sql(i, text);
}

static int64_t inbox_time(int i, int n)
{
    char text[128];
    snprintf(text, sizeof text, "SELECT time FROM inbox WHERE xid = '%032x'", n);
    return query(i, text);
}

/* ---- pumping ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void poll_ok(int i, int ms)
{
    if (!F.n[i])
        return;
    int rc = tl_node_poll(F.n[i], ms);
    if (rc != TL_OK)
        fail_msg("tl_node_poll(%c): %s: %s\n%s", 'A' + i, tl_errname(rc), tl_errmsg(F.rt[i]),
                 F.log);
}

/* Polls A then B until cond holds, looked at after each poll (so that a
 * test can stop between the two), bounded by wall-clock time. */
#define PUMP_UNTIL(cond)                                                            \
    do {                                                                            \
        double end_ = now_s() + 60;                                                 \
        int ok_ = (cond);                                                           \
        for (int i_ = 0; !ok_ && now_s() < end_; i_++)                              \
            for (int s_ = 0; s_ < 2 && !(ok_ = (cond)); s_++)                       \
                poll_ok(s_, i_ < 100 ? 0 : 1);                                      \
        if (!ok_)                                                                   \
            fail_msg("%s:%d: never reached: %s\n%s", __FILE__, __LINE__, #cond, F.log); \
    } while (0)

static void pair_up(void)
{
    assert_int_equal(tl_node_pair(F.n[0], F.n[1]), TL_OK);
    PUMP_UNTIL(tl_node_connected(F.n[0], "B") && tl_node_connected(F.n[1], "A"));
}

static tl_node_stats stats(int i)
{
    tl_node_stats s;
    memset(&s, 0, sizeof s);
    tl_node_stats_get(F.n[i], &s);
    return s;
}

static void spawn_mover(void)
{
    mover_t a = {"B"};
    assert_int_equal(tl_spawn(F.rt[0], &mover_fn, &a, sizeof a, NULL), TL_OK);
}

/* ---- a checkpoint writes what changed ---- */

static void test_rows_written_per_change(void **state)
{
    (void)state;
    open_store(0);
    open_store(1);
    /* rows stored already: 20 transfers to a node Z that never links, 20
     * ids taken from it */
    for (int k = 1; k <= 20; k++) {
        char text[160];
        snprintf(text, sizeof text, "INSERT INTO outbox(xid, peer, data) VALUES "
                 "('%032x', 'Z', x'00')", 1000 + k);
        sql(0, text);
        put_inbox(1, 2000 + k, "Z", T0 - HOUR);
    }
    node_new(0, 0);
    node_new(1, 0);
    pair_up();
    uint64_t wa = tl__store_row_writes(F.st[0]), wb = tl__store_row_writes(F.st[1]);
    spawn_mover();
    /* moved, acknowledged, forgotten, and each removal checkpointed */
    PUMP_UNTIL(F.arrived == 1 && stats(0).moved_out == 1 &&
               query(0, "SELECT count(*) FROM outbox") == 20 &&
               query(1, "SELECT count(*) FROM inbox") == 20);
    /* A: the transfer's row put, then deleted; B: its id's row the same */
    assert_int_equal(tl__store_row_writes(F.st[0]) - wa, 2);
    assert_int_equal(tl__store_row_writes(F.st[1]) - wb, 2);
    assert_int_equal(query(0, "SELECT count(*) FROM outbox WHERE peer = 'Z'"), 20);
    assert_int_equal(query(1, "SELECT count(*) FROM inbox WHERE peer = 'Z'"), 20);
    assert_int_equal(query(1, "SELECT min(time) FROM inbox"), T0 - HOUR); /* untouched */
    /* a round with nothing new writes nothing */
    tl__store_touch(F.st[0]);
    assert_int_equal(tl_store_checkpoint(F.st[0]), TL_OK);
    assert_int_equal(tl__store_row_writes(F.st[0]) - wa, 2);
}

/* ---- inbox times and aging ---- */

static void test_inbox_times_and_aging(void **state)
{
    (void)state;
    open_store(1);
    put_inbox(1, 1, "Z", T0 - HOUR - 1000000000LL); /* older than the window */
    put_inbox(1, 2, "Z", T0 - HOUR / 2);
    put_inbox(1, 3, "Z", 0); /* an older version's row: no time */
    node_new(0, 0);          /* A: no store */
    node_new(1, HOUR);
    pair_up();
    PUMP_UNTIL(inbox_time(1, 1) == -1 && inbox_time(1, 3) == T0);
    assert_int_equal(inbox_time(1, 2), T0 - HOUR / 2);

    /* a transfer's id is stored with its peer and the time it was taken;
     * B goes before it reads A's FORGET, so the id stays */
    spawn_mover();
    PUMP_UNTIL(stats(0).moved_out == 1);
    tl_node_free(F.n[1]);
    F.n[1] = NULL;
    assert_int_equal(F.arrived, 1);
    assert_int_equal(query(1, "SELECT count(*) FROM inbox WHERE peer = 'A'"), 1);
    assert_int_equal(query(1, "SELECT time FROM inbox WHERE peer = 'A'"), T0);

    /* a new node on the store reads the times back; half a window on, the
     * young row is older than the window, the others are not */
    node_new(1, HOUR);
    F.clock[1].now = T0 + HOUR / 2 + 1000000000LL;
    uint64_t wb = tl__store_row_writes(F.st[1]);
    PUMP_UNTIL(inbox_time(1, 2) == -1);
    assert_int_equal(tl__store_row_writes(F.st[1]) - wb, 1); /* one delete */
    assert_int_equal(inbox_time(1, 3), T0);
    assert_int_equal(query(1, "SELECT count(*) FROM inbox WHERE peer = 'A'"), 1);
    /* a whole window after they were taken, they go too */
    F.clock[1].now = T0 + HOUR;
    PUMP_UNTIL(query(1, "SELECT count(*) FROM inbox") == 0);
    assert_int_equal(tl__store_row_writes(F.st[1]) - wb, 3);
}

/* Many ids forgotten among a few kept: the aging log drops the forgotten
 * ones (compaction) and still ages the kept ones at their time. */
static void test_aging_after_many_forgets(void **state)
{
    (void)state;
    open_store(1);
    for (int k = 1; k <= 20; k++)
        put_inbox(1, k, "Z", T0 - HOUR / 2);
    node_new(0, 0);
    node_new(1, HOUR);
    pair_up();
    for (int k = 0; k < 100; k++)
        spawn_mover();
    PUMP_UNTIL(F.arrived == 100 && stats(0).moved_out == 100 &&
               query(1, "SELECT count(*) FROM inbox") == 20);
    assert_int_equal(query(1, "SELECT count(*) FROM inbox WHERE peer = 'Z'"), 20);
    F.clock[1].now = T0 + HOUR / 2 - 1;
    poll_ok(1, 0);
    assert_int_equal(query(1, "SELECT count(*) FROM inbox"), 20);
    F.clock[1].now = T0 + HOUR / 2;
    PUMP_UNTIL(query(1, "SELECT count(*) FROM inbox") == 0);
}

/* The default window is 7 days; a negative one keeps ids for good.  Aging
 * runs in every tl_node_poll, so one poll shows it. */
static void test_inbox_default_and_no_aging(void **state)
{
    (void)state;
    open_store(1);
    put_inbox(1, 1, "Z", T0 - 7 * DAY - 1000000000LL);
    put_inbox(1, 2, "Z", T0 - 7 * DAY + 1000000000LL);
    node_new(1, 0);
    poll_ok(1, 0);
    assert_int_equal(inbox_time(1, 1), -1);
    assert_int_equal(inbox_time(1, 2), T0 - 7 * DAY + 1000000000LL);
    tl_node_free(F.n[1]);
    put_inbox(1, 3, "Z", 1); /* ancient */
    node_new(1, -1);
    F.clock[1].now = T0 + 365 * DAY;
    poll_ok(1, 0);
    poll_ok(1, 0);
    assert_int_equal(query(1, "SELECT count(*) FROM inbox"), 2);
    assert_int_equal(inbox_time(1, 3), 1);
}

/* ---- an import is held until a checkpoint holds it ---- */

/* A participant of B's store that fails its checkpoints while *ud. */
static int gate_write(void *ud, tl__store_tx *tx)
{
    (void)tx;
    return *(int *)ud ? TL_EIO : TL_OK;
}
static const tl__participant gate = {"test gate", gate_write, NULL, NULL};

/* One round of both nodes while B's checkpoints fail. */
static void poll_failing(void)
{
    poll_ok(0, 1);
    int rc = tl_node_poll(F.n[1], 1);
    assert_true(rc == TL_OK || rc == TL_EIO);
}

static void test_import_held_until_durable(void **state)
{
    int closed = 1;
    tl_chan *c;
    tl_tasklet *t;
    (void)state;
    open_store(1);
    node_new(0, 0);
    node_new(1, 0);
    assert_int_equal(tl__store_join(F.st[1], &gate, &closed), TL_OK);
    closed = 0;
    pair_up();
    /* at A: a sender blocked on A's channel c */
    assert_int_equal(tl_chan_new(F.rt[0], 0, &c), TL_OK);
    assert_int_equal(tl_chan_set_name(c, "c"), TL_OK);
    sender_t a = {c, 7};
    assert_int_equal(tl_spawn(F.rt[0], &sender_fn, &a, sizeof a, &t), TL_OK);
    PUMP_UNTIL(tl_tasklet_state(t) == TL_BLOCKED);
    /* it moves to B, whose checkpoints fail: there it waits on a remote
     * channel, and a receiver waits on c at A */
    closed = 1;
    assert_int_equal(tl_node_migrate(F.n[0], t, "B"), TL_OK);
    receiver_t r = {c, tl_nil()};
    assert_int_equal(tl_spawn(F.rt[0], &receiver_fn, &r, sizeof r, NULL), TL_OK);
    double end = now_s() + 60;
    while (stats(1).moved_in == 0 && now_s() < end)
        poll_failing();
    assert_int_equal(stats(1).moved_in, 1);
    for (int k = 0; k < 50; k++) /* an operation sent would be done by now */
        poll_failing();
    assert_int_equal(F.received, 0);
    assert_int_equal(stats(0).remote_ops, 0);
    assert_int_equal(stats(0).moved_out, 0); /* not acknowledged either */
    assert_int_equal(query(1, "SELECT count(*) FROM inbox"), 0);
    /* the checkpoint goes through: then the operation, once */
    closed = 0;
    PUMP_UNTIL(F.received == 1 && F.arrived == 1 && stats(0).moved_out == 1);
    assert_int_equal(F.value, 7);
    assert_int_equal(stats(0).remote_ops, 1);
    tl__store_leave(F.st[1], &gate, &closed);
    tl_tasklet_release(t);
    tl_chan_release(c);
}

/* A node that closes while an import is still held (its checkpoints
 * failed) undoes the import: the runtime keeps no copy that a later
 * checkpoint could write, the store no id, and the source still holds the
 * transfer, so that it can send it again. */
static void test_held_import_undone_at_close(void **state)
{
    int closed = 0;
    (void)state;
    open_store(1);
    node_new(0, 0);
    node_new(1, 0);
    assert_int_equal(tl__store_join(F.st[1], &gate, &closed), TL_OK);
    pair_up();
    closed = 1;
    spawn_mover();
    double end = now_s() + 60;
    while (stats(1).moved_in == 0 && now_s() < end)
        poll_failing();
    assert_int_equal(stats(1).moved_in, 1);
    assert_int_equal(tl_tasklet_count(F.rt[1]), 1);
    tl_node_free(F.n[1]); /* its last checkpoint fails too */
    F.n[1] = NULL;
    assert_int_equal(tl_tasklet_count(F.rt[1]), 0);
    assert_int_equal(F.arrived, 0);
    tl__store_leave(F.st[1], &gate, &closed);
    assert_int_equal(tl_store_checkpoint(F.st[1]), TL_OK);
    assert_int_equal(query(1, "SELECT count(*) FROM inbox"), 0);
    assert_int_equal(stats(0).pending, 1); /* A sends it again to the next B */
    assert_int_equal(stats(0).moved_out, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rows_written_per_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbox_times_and_aging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aging_after_many_forgets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbox_default_and_no_aging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_held_until_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_import_undone_at_close, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
