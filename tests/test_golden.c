/*
 * test_golden.c -- reads tests/data/golden-v1.db, a store written by
 * libtasklet 0.1.0 (format 1, store schema 1; see tests/golden/
 * make_golden.c for exactly what it holds), and must pass forever: a later
 * format or schema has to keep reading this file, upgrading it if need be.
 *
 * Each test works on a copy in a temporary directory (the path of the
 * original comes from the GOLDEN_DB environment variable), restores the
 * latest checkpoint (4, built incrementally from rows of checkpoints 1
 * and 4), checks what was stored, then feeds the channels and runs every
 * tasklet to its end.  The functions are those of tests/golden/
 * golden_funcs.h, whose names, schemas and resume points are frozen.
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
#include <sys/stat.h>

#include "tasklet.h"
#include "golden/golden_funcs.h"

#define TICKER 1
#define RECEIVER 2
#define SLEEPER 3
#define SENDER 4
#define NESTED 257
#define SELECTOR 258

static char dir[64];
static char path[128];
static int64_t fake_now;

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

/* ---- fixtures: a private copy of the golden file ---- */

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    char buf[8192];
    size_t n;
    int ok = in && out;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

static int setup(void **state)
{
    const char *golden = getenv("GOLDEN_DB");
    (void)state;
    if (!golden) {
        fprintf(stderr, "test_golden: set GOLDEN_DB to the path of tests/data/golden-v1.db\n");
        return -1;
    }
    snprintf(dir, sizeof dir, "/tmp/tl-golden-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/golden-v1.db", dir);
    if (copy_file(golden, path) != 0) {
        fprintf(stderr, "test_golden: cannot copy %s to %s\n", golden, path);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- helpers ---- */

typedef struct world {
    tl_runtime *rt;
    tl_store *st;
} world;

static void restore(world *w)
{
    tl_config cfg = {0};
    fake_now = GOLDEN_BASE + GOLDEN_SECOND + GOLDEN_SECOND / 2; /* no timer due yet */
    cfg.clock = fake_clock;
    assert_int_equal(tl_runtime_new(&cfg, &w->rt), TL_OK);
    assert_int_equal(golden_register(w->rt), TL_OK);
    int rc = tl_store_open(path, 0, &w->st);
    if (rc != TL_OK)
        fail_msg("tl_store_open: %s", tl_store_errmsg(w->st));
    rc = tl_store_attach(w->st, w->rt);
    if (rc != TL_OK)
        fail_msg("tl_store_attach: %s", tl_store_errmsg(w->st));
    rc = tl_store_restore(w->st);
    if (rc != TL_OK)
        fail_msg("tl_store_restore: %s", tl_store_errmsg(w->st));
}

static void close_world(world *w)
{
    assert_int_equal(tl_store_close(w->st), TL_OK);
    tl_runtime_free(w->rt);
}

static tl_chan *chan(world *w, const char *name)
{
    tl_chan *ch = tl_chan_find_name(w->rt, name);
    if (!ch)
        fail_msg("no channel '%s': %s", name, tl_errmsg(w->rt));
    return ch;
}

/* Runs until nothing is runnable and no timer the clock passed is left. */
static void run_until_quiet(world *w)
{
    for (int i = 0; i < 10000; i++) {
        int64_t d;
        uint64_t ran;
        int due = tl_next_deadline(w->rt, &d) && d <= fake_now;
        if (tl_runnable_count(w->rt) == 0 && !due)
            return;
        int rc = tl_run_steps(w->rt, 1000, &ran);
        if (rc != TL_OK)
            fail_msg("tl_run_steps: %s", tl_errmsg(w->rt));
    }
    fail_msg("the runtime never became quiet");
}

static void expect_tasklet(world *w, uint64_t id, const char *func, const char *name, int state,
                           int wait, size_t depth)
{
    tl_tasklet *t = tl_tasklet_find(w->rt, id);
    if (!t)
        fail_msg("tasklet #%llu is missing", (unsigned long long)id);
    assert_string_equal(tl_tasklet_func(t)->name, func);
    assert_int_equal(tl_tasklet_func(t)->version, 1);
    if (name)
        assert_string_equal(tl_tasklet_name(t), name);
    else
        assert_null(tl_tasklet_name(t));
    assert_int_equal(tl_tasklet_state(t), state);
    assert_int_equal(tl_tasklet_wait(t), wait);
    assert_int_equal(tl_tasklet_depth(t), depth);
    assert_int_equal(tl_tasklet_error(t), TL_OK);
}

static void expect_chan(world *w, const char *name, uint64_t id, size_t cap, size_t count,
                        int balance)
{
    tl_chan *ch = chan(w, name);
    assert_int_equal(tl_chan_id(ch), id);
    assert_int_equal(tl_chan_capacity(ch), cap);
    assert_int_equal(tl_chan_count(ch), count);
    assert_int_equal(tl_chan_balance(ch), balance);
    assert_false(tl_chan_closing(ch));
}

static int64_t sql_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s;
    int64_t v = -1;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static void expect_sql_text(sqlite3 *db, const char *sql, const char *want)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), want);
    sqlite3_finalize(s);
}

/* ---- the file itself ---- */

static void test_file_identity(void **state)
{
    sqlite3 *db;
    char wal[4096];
    struct stat sb;
    (void)state;
    /* one self-contained file: a WAL beside it with content would mean
     * someone wrote to the golden file (a reader may leave an empty one) */
    snprintf(wal, sizeof wal, "%s-wal", getenv("GOLDEN_DB"));
    if (stat(wal, &sb) == 0 && sb.st_size > 0)
        fail_msg("%s is not empty: the golden file was written to", wal);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sql_int(db, "PRAGMA application_id"), 1414288212);
    assert_int_equal(sql_int(db, "PRAGMA user_version"), 1);
    /* GOLDEN_FORMAT: the snapshot format the file was made in (1 or 2) */
    const char *format = getenv("GOLDEN_FORMAT");
    assert_int_equal(sql_int(db, "SELECT value FROM meta WHERE key = 'format'"),
                     format ? atoi(format) : 1);
    expect_sql_text(db, "SELECT value FROM meta WHERE key = 'lib'", "0.1.0");
    assert_int_equal(sql_int(db, "SELECT count(*) FROM owner"), 0);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM checkpoints"), 4);
    assert_int_equal(sql_int(db, "SELECT max(time) FROM checkpoints"), GOLDEN_BASE + GOLDEN_SECOND);
    /* the chunks each checkpoint wrote, as kind * 10 + key: incremental */
    expect_sql_text(db, "SELECT group_concat(kind * 10 + key) FROM (SELECT kind, key FROM "
                    "chunks WHERE ckpt = 1 ORDER BY kind, key)", "10,11,20,21");
    expect_sql_text(db, "SELECT group_concat(kind * 10 + key) FROM chunks WHERE ckpt = 2", "10");
    expect_sql_text(db, "SELECT group_concat(kind * 10 + key) FROM chunks WHERE ckpt = 3", "20");
    expect_sql_text(db, "SELECT group_concat(kind * 10 + key) FROM (SELECT kind, key FROM "
                    "chunks WHERE ckpt = 4 ORDER BY kind, key)", "10,20");
    sqlite3_close(db);
}

/* ---- what was stored ---- */

static void expect_stored_state(world *w, int receiver_restored)
{
    expect_tasklet(w, TICKER, "golden.ticker", "golden-ticker", TL_BLOCKED, TL_WAIT_SLEEP, 1);
    if (receiver_restored)
        expect_tasklet(w, RECEIVER, "golden.receiver", NULL, TL_RUNNABLE, TL_WAIT_NONE, 1);
    else
        assert_null(tl_tasklet_find(w->rt, RECEIVER)); /* ended, nothing refers to it */
    expect_tasklet(w, SLEEPER, "golden.sleeper", NULL, TL_BLOCKED, TL_WAIT_SLEEP, 1);
    expect_tasklet(w, SENDER, "golden.sender", NULL, TL_BLOCKED, TL_WAIT_SEND, 1);
    expect_tasklet(w, NESTED, "golden.inner", NULL, TL_BLOCKED, TL_WAIT_RECV, 2);
    expect_tasklet(w, SELECTOR, "golden.selector", NULL, TL_BLOCKED, TL_WAIT_SELECT, 1);
    assert_null(tl_tasklet_find(w->rt, 5)); /* the ended golden.nop tasklets */
    assert_null(tl_tasklet_find(w->rt, 256));
    assert_int_equal(tl_tasklet_count(w->rt), 5 + receiver_restored);
    assert_int_equal(tl_runnable_count(w->rt), (size_t)receiver_restored);
    assert_int_equal(tl_blocked_count(w->rt), 5);

    int64_t deadline;
    assert_true(tl_next_deadline(w->rt, &deadline));
    assert_int_equal(deadline, GOLDEN_BASE + 2 * GOLDEN_SECOND); /* the ticker's next tick */

    if (receiver_restored)
        expect_chan(w, "inbox", 1, 0, 0, 0);
    else
        assert_null(tl_chan_find_name(w->rt, "inbox")); /* only the receiver held it */
    expect_chan(w, "outbox", 2, 0, 0, 1);   /* the sender */
    expect_chan(w, "deep", 3, 0, 0, -1);    /* golden.inner */
    expect_chan(w, "mailbox", 4, 2, 1, 0);  /* 10, sent at checkpoint 3 */
    expect_chan(w, "values", 5, 16, 14, 0);
    expect_chan(w, "sel-a", 256, 0, 0, -1); /* the selector, both cases */
    expect_chan(w, "sel-b", 257, 0, 0, -1);
    assert_null(tl_chan_find(w->rt, 6)); /* released before checkpoint 1 */
    assert_null(tl_chan_find(w->rt, 255));
}

static void test_restore_state(void **state)
{
    world w;
    (void)state;
    restore(&w);
    assert_int_equal(tl_store_last_checkpoint(w.st), 4);
    expect_stored_state(&w, 1);
    close_world(&w);
}

/* ---- running it to the end ---- */

static tl_value take(world *w, const char *name)
{
    tl_value v;
    int rc = tl_chan_try_recv(chan(w, name), &v);
    if (rc != TL_OK)
        fail_msg("try_recv on '%s': %s", name, tl_errmsg(w->rt));
    return v;
}

static void expect_str(tl_value v, int type, const char *bytes, size_t n)
{
    size_t len;
    assert_int_equal(tl_type(v), type);
    const char *p = tl_str_data(v, &len);
    assert_int_equal(len, n);
    assert_memory_equal(p, bytes, n);
}

/* The values buffered in 'values', in order: one of every kind. */
static void expect_values(world *w)
{
    tl_value v, x;
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_NIL);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_BOOL);
    assert_true(tl_as_bool(v));
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_BOOL);
    assert_false(tl_as_bool(v));
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_INT);
    assert_int_equal(tl_as_i64(v), -42);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_INT);
    assert_true(tl_as_i64(v) == INT64_MIN);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_UINT); /* above INT64_MAX: stays unsigned */
    assert_true(tl_as_u64(v) == UINT64_MAX);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_DOUBLE);
    assert_true(tl_as_f64(v) == 3.25);
    v = take(w, "values");
    expect_str(v, TL_V_STR, "h\xc3\xa9llo", 6);
    tl_release(v);
    v = take(w, "values");
    expect_str(v, TL_V_BIN, "\x00\x01\xfe\xff", 4);
    tl_release(v);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_ARRAY);
    assert_int_equal(tl_len(v), 3);
    assert_int_equal(tl_as_i64(tl_array_at(v, 0)), 1);
    assert_true(tl_as_f64(tl_array_at(v, 1)) == 2.5);
    assert_int_equal(tl_type(tl_array_at(v, 2)), TL_V_NIL);
    tl_release(v);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_MAP);
    assert_int_equal(tl_len(v), 2);
    tl_value key;
    assert_int_equal(tl_str_new(w->rt, "k", 1, &key), TL_OK);
    assert_true(tl_map_get(v, key, &x));
    assert_int_equal(tl_type(x), TL_V_ARRAY);
    assert_int_equal(tl_len(x), 3);
    tl_release(key);
    assert_true(tl_map_get(v, tl_i64(-1), &x));
    expect_str(x, TL_V_BIN, "\x00\x01\xfe\xff", 4);
    tl_release(v);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_ERROR);
    assert_int_equal(tl_error_code(v), TL_EUSER - 5);
    assert_string_equal(tl_error_msg(v), "stored error");
    tl_release(v);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_CHAN);
    assert_ptr_equal(tl_as_chan(v), chan(w, "mailbox"));
    tl_release(v);
    v = take(w, "values");
    assert_int_equal(tl_type(v), TL_V_TASKLET);
    assert_ptr_equal(tl_as_tasklet(v), tl_tasklet_find(w->rt, SLEEPER));
    tl_release(v);
    assert_int_equal(tl_chan_count(chan(w, "values")), 0);
}

static tl_tasklet *hold(world *w, uint64_t id)
{
    tl_tasklet *t = tl_tasklet_find(w->rt, id);
    if (!t)
        fail_msg("tasklet #%llu is missing", (unsigned long long)id);
    return tl_tasklet_retain(t);
}

static tl_value result(tl_tasklet *t)
{
    tl_value v;
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    return v;
}

static void expect_ticker_result(tl_tasklet *t)
{
    tl_value v = result(t);
    assert_int_equal(tl_type(v), TL_V_ARRAY);
    assert_int_equal(tl_len(v), 7);
    assert_int_equal(tl_as_i64(tl_array_at(v, 0)), 1 + 2 + 3 + 4 + 5 + 10);
    assert_true(tl_as_bool(tl_array_at(v, 1)));
    assert_int_equal(tl_as_i64(tl_array_at(v, 2)), -123456);
    assert_true(tl_as_u64(tl_array_at(v, 3)) == 4000000000u);
    assert_true(tl_as_u64(tl_array_at(v, 4)) == UINT64_MAX - 1);
    assert_true(tl_as_f64(tl_array_at(v, 5)) == -0.375);
    expect_str(tl_array_at(v, 6), TL_V_BIN, "gold\0!", 6);
    tl_release(v);
}

/* Feeds every channel a tasklet waits on, moves the clock past every
 * deadline, and checks what each tasklet returns. */
static void finish_everything(world *w, int receiver_restored)
{
    tl_tasklet *ticker = hold(w, TICKER), *sleeper = hold(w, SLEEPER);
    tl_tasklet *sender = hold(w, SENDER), *nested = hold(w, NESTED);
    tl_tasklet *selector = hold(w, SELECTOR);
    tl_value v;

    if (receiver_restored) { /* it holds 20, received before checkpoint 4 */
        tl_tasklet *receiver = hold(w, RECEIVER);
        run_until_quiet(w);
        assert_int_equal(tl_as_i64(result(receiver)), 40);
        tl_tasklet_release(receiver);
    }
    v = take(w, "outbox");
    expect_str(v, TL_V_STR, "hello, golden", 13);
    tl_release(v);
    run_until_quiet(w);
    assert_int_equal(tl_as_i64(result(sender)), 13);

    assert_int_equal(tl_chan_try_send(chan(w, "deep"), tl_i64(5)), TL_OK);
    run_until_quiet(w);
    assert_int_equal(tl_as_i64(result(nested)), 1000 + 5 * 7);

    assert_int_equal(tl_chan_try_send(chan(w, "sel-b"), tl_i64(7)), TL_OK);
    run_until_quiet(w);
    assert_int_equal(tl_as_i64(result(selector)), 7 * 10 + 1);
    assert_null(tl_chan_find_name(w->rt, "sel-a")); /* nothing holds it any more */

    expect_values(w);

    fake_now = GOLDEN_BASE + 10 * GOLDEN_SECOND; /* every tick is due */
    run_until_quiet(w);
    expect_ticker_result(ticker); /* its sum includes the 10 in 'mailbox' */

    assert_int_equal(tl_tasklet_state(sleeper), TL_BLOCKED);
    fake_now = GOLDEN_FAR;
    run_until_quiet(w);
    v = result(sleeper);
    expect_str(v, TL_V_STR, "woke", 4);
    tl_release(v);

    assert_int_equal(tl_tasklet_count(w->rt), 0);
    assert_int_equal(tl_blocked_count(w->rt), 0);
    assert_false(tl_next_deadline(w->rt, NULL));
    tl_tasklet_release(ticker);
    tl_tasklet_release(sleeper);
    tl_tasklet_release(sender);
    tl_tasklet_release(nested);
    tl_tasklet_release(selector);
}

static void test_restore_and_finish(void **state)
{
    world w;
    (void)state;
    restore(&w);
    finish_everything(&w, 1);
    close_world(&w);
}

/* A process restarting on the old file checkpoints onto it and a later
 * restart reads both: the receiver ends, checkpoint 5 records that. */
static void test_checkpoint_onto_old_file(void **state)
{
    world w;
    (void)state;
    restore(&w);
    tl_tasklet *receiver = hold(&w, RECEIVER);
    run_until_quiet(&w);
    assert_int_equal(tl_as_i64(result(receiver)), 40);
    tl_tasklet_release(receiver);
    int rc = tl_store_checkpoint(w.st);
    if (rc != TL_OK)
        fail_msg("tl_store_checkpoint: %s", tl_store_errmsg(w.st));
    assert_int_equal(tl_store_last_checkpoint(w.st), 5);
    close_world(&w);

    restore(&w);
    assert_int_equal(tl_store_last_checkpoint(w.st), 5);
    expect_stored_state(&w, 0);
    finish_everything(&w, 0);
    close_world(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_and_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_onto_old_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
