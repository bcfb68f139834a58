/*
 * make_golden.c -- made tests/data/golden-v1.db, the store of format
 * version 1 that tests/test_golden.c reads forever.  Kept to document
 * exactly what the file holds; running it again is only for making a
 * golden file of a new format (golden-v2.db, with its own functions):
 * an existing file is never overwritten unless --force is given.
 *
 *   make_golden [--force] PATH
 *
 * Deterministic content: a fake clock (GOLDEN_BASE), a fixed node id, ids
 * handed out in a fixed order.  (The store's meta 'created' row is the
 * wall-clock time of the run; nothing reads it.)  The store, in order:
 *
 *   tasklets  #1 golden.ticker 'golden-ticker', sleeping (5 ticks of 1 s);
 *                holds channels 'mailbox' and 'values'
 *             #2 golden.receiver, blocked receiving on 'inbox'
 *             #3 golden.sleeper, sleeping until 2100-01-01 (GOLDEN_FAR)
 *             #4 golden.sender, blocked sending "hello, golden" on 'outbox'
 *             #5..#256 golden.nop, ended (not stored): they push the next
 *                ids into the second tasklet chunk (id >> 8 == 1)
 *             #257 golden.outer -> golden.inner, blocked receiving on 'deep'
 *             #258 golden.selector, waiting on 'sel-a' and 'sel-b'
 *   channels  #1 inbox, #2 outbox, #3 deep (unbuffered), #4 mailbox
 *             (capacity 2), #5 values (capacity 16, a value of every
 *             kind), #6..#255 released (gone), #256 sel-a, #257 sel-b
 *   checkpoint 1  full: tasklet chunks 0 and 1, channel chunks 0 and 1
 *   checkpoint 2  the clock at +1 s: the ticker ticked (tasklet chunk 0)
 *   checkpoint 3  10 sent into 'mailbox' (channel chunk 0)
 *   checkpoint 4  20 sent into 'inbox': the receiver runnable with the value
 *                 in flight (tasklet chunk 0, channel chunk 0)
 * so that restoring checkpoint 4 reads rows of checkpoints 1 and 4.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "golden_funcs.h"
#include "../../persist/store_sqlite.h"

static int64_t fake_now = GOLDEN_BASE;

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

static tl_status golden_nop(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_END(f);
}
static const tl_func golden_nop_fn = {"golden.nop", 1, golden_nop, 0, NULL, 0, NULL};

static tl_runtime *rt;
static tl_store *st;

static void check(int rc, const char *what, int line)
{
    if (rc == TL_OK)
        return;
    fprintf(stderr, "make_golden:%d: %s: %s (%s)\n", line, what, tl_errname(rc),
            st && tl_store_errcode(st) ? tl_store_errmsg(st) : rt ? tl_errmsg(rt) : "");
    exit(1);
}
#define CHECK(call) check((call), #call, __LINE__)

static tl_chan *chan(size_t cap, const char *name)
{
    tl_chan *ch;
    CHECK(tl_chan_new(rt, cap, &ch));
    if (name)
        CHECK(tl_chan_set_name(ch, name));
    return ch;
}

static tl_value str(const char *s)
{
    tl_value v;
    CHECK(tl_str_new(rt, s, strlen(s), &v));
    return v;
}

/* Runs until nothing is runnable, firing the timers the clock passed. */
static void settle(void)
{
    uint64_t ran;
    do
        CHECK(tl_run_steps(rt, 1000, &ran));
    while (tl_runnable_count(rt) > 0);
}

static void expect_id(uint64_t got, uint64_t want, const char *what)
{
    if (got != want) {
        fprintf(stderr, "make_golden: %s got id %llu, expected %llu\n", what,
                (unsigned long long)got, (unsigned long long)want);
        exit(1);
    }
}

/* The value of every kind that 'values' buffers (tests/test_golden.c
 * checks them in this order). */
static void fill_values(tl_chan *values, tl_chan *mailbox, tl_tasklet *sleeper)
{
    tl_value inner[3], arr, kv[4], map, bin, s, e, cv, tv;
    CHECK(tl_bin_new(rt, "\x00\x01\xfe\xff", 4, &bin));
    s = str("h\xc3\xa9llo");
    inner[0] = tl_i64(1);
    inner[1] = tl_f64(2.5);
    inner[2] = tl_nil();
    CHECK(tl_array_new(rt, inner, 3, &arr));
    kv[0] = str("k");
    kv[1] = arr;
    kv[2] = tl_i64(-1);
    kv[3] = bin;
    CHECK(tl_map_new(rt, kv, 2, &map));
    e = tl_error_value(rt, TL_EUSER - 5, "stored error");
    cv = tl_chan_value(mailbox);
    tv = tl_tasklet_value(sleeper);
    tl_value all[] = {
        tl_nil(), tl_bool(1),  tl_bool(0), tl_i64(-42), tl_i64(INT64_MIN), tl_u64(UINT64_MAX),
        tl_f64(3.25), s, bin, arr, map, e, cv, tv,
    };
    for (size_t i = 0; i < TL_COUNTOF(all); i++)
        CHECK(tl_chan_try_send(values, all[i]));
    tl_release(bin);
    tl_release(s);
    tl_release(arr);
    tl_release(kv[0]);
    tl_release(map);
    tl_release(e);
    tl_release(cv);
    tl_release(tv);
}

static void build(void)
{
    tl_chan *inbox = chan(0, "inbox"), *outbox = chan(0, "outbox"), *deep = chan(0, "deep");
    tl_chan *mailbox = chan(2, "mailbox"), *values = chan(16, "values");
    tl_tasklet *t;

    golden_ticker_t tk = {.n = GOLDEN_TICKS, .base = GOLDEN_BASE, .mailbox = mailbox,
                          .values = values};
    CHECK(tl_spawn(rt, &golden_ticker_fn, &tk, sizeof tk, &t));
    CHECK(tl_tasklet_set_name(t, "golden-ticker"));
    expect_id(tl_tasklet_id(t), 1, "the ticker");
    tl_tasklet_release(t);
    golden_receiver_t rx = {.in = inbox};
    CHECK(tl_spawn(rt, &golden_receiver_fn, &rx, sizeof rx, NULL));
    golden_sleeper_t sl = {.deadline = GOLDEN_FAR};
    tl_tasklet *sleeper;
    CHECK(tl_spawn(rt, &golden_sleeper_fn, &sl, sizeof sl, &sleeper));
    golden_sender_t tx = {.out = outbox, .msg = str("hello, golden")};
    CHECK(tl_spawn(rt, &golden_sender_fn, &tx, sizeof tx, NULL));
    tl_release(tx.msg);
    for (int i = 5; i <= 256; i++)
        CHECK(tl_spawn(rt, &golden_nop_fn, NULL, 0, NULL));
    settle();

    for (;;) { /* channel ids up to 255 are used and released */
        tl_chan *ch = chan(0, NULL);
        uint64_t id = tl_chan_id(ch);
        tl_chan_release(ch);
        if (id == 255)
            break;
    }
    tl_chan *sel_a = chan(0, "sel-a"), *sel_b = chan(0, "sel-b");
    expect_id(tl_chan_id(sel_a), 256, "sel-a");
    golden_outer_t out = {.deep = deep, .k = 7};
    CHECK(tl_spawn(rt, &golden_outer_fn, &out, sizeof out, &t));
    expect_id(tl_tasklet_id(t), 257, "the outer frame's tasklet");
    tl_tasklet_release(t);
    golden_selector_t sel = {.a = sel_a, .b = sel_b};
    CHECK(tl_spawn(rt, &golden_selector_fn, &sel, sizeof sel, NULL));
    settle();

    fill_values(values, mailbox, sleeper);
    tl_tasklet_release(sleeper);
    tl_chan_release(inbox);
    tl_chan_release(outbox);
    tl_chan_release(deep);
    tl_chan_release(mailbox);
    tl_chan_release(values);
    tl_chan_release(sel_a);
    tl_chan_release(sel_b);
}

/* The host sends v on the channel named name. */
static void host_send(const char *name, int64_t v)
{
    tl_chan *ch = tl_chan_find_name(rt, name);
    if (!ch)
        check(TL_ENOENT, name, __LINE__);
    CHECK(tl_chan_try_send(ch, tl_i64(v)));
}

/* Checks that checkpoint ckpt wrote exactly the chunks listed, as
 * kind*10 + key, in order: the file must show incremental checkpoints. */
static void expect_rows(int64_t ckpt, const int *rows, size_t n)
{
    sqlite3 *db = tl__store_sqlite(st);
    sqlite3_stmt *s;
    size_t k = 0;
    if (sqlite3_prepare_v2(db, "SELECT kind * 10 + key FROM chunks WHERE ckpt = ? ORDER BY 1",
                           -1, &s, NULL) != SQLITE_OK)
        check(TL_ESTORE, sqlite3_errmsg(db), __LINE__);
    sqlite3_bind_int64(s, 1, ckpt);
    while (sqlite3_step(s) == SQLITE_ROW) {
        if (k >= n || sqlite3_column_int(s, 0) != rows[k]) {
            fprintf(stderr, "make_golden: checkpoint %lld wrote unexpected chunk %d\n",
                    (long long)ckpt, sqlite3_column_int(s, 0));
            exit(1);
        }
        k++;
    }
    sqlite3_finalize(s);
    if (k != n) {
        fprintf(stderr, "make_golden: checkpoint %lld wrote %zu chunks, expected %zu\n",
                (long long)ckpt, k, n);
        exit(1);
    }
}

static void checkpoint(int64_t want, const int *rows, size_t n)
{
    CHECK(tl_store_checkpoint(st));
    if (tl_store_last_checkpoint(st) != want)
        check(TL_ESTATE, "checkpoint numbering", __LINE__);
    expect_rows(want, rows, n);
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

int main(int argc, char **argv)
{
    int force = argc == 3 && strcmp(argv[1], "--force") == 0;
    const char *path = argv[argc - 1];
    char side[4096];
    tl_config cfg = {0};
    if (argc != 2 + force) {
        fprintf(stderr, "usage: %s [--force] PATH\n", argv[0]);
        return 2;
    }
    if (exists(path) && !force) {
        fprintf(stderr, "make_golden: %s exists; golden files are never remade "
                "(--force only for a new format's file)\n", path);
        return 1;
    }
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
    snprintf(side, sizeof side, "%s-lock", path);
    remove(side);

    cfg.clock = fake_clock;
    CHECK(tl_runtime_new(&cfg, &rt));
    CHECK(tl_set_node_id(rt, GOLDEN_NODE));
    CHECK(golden_register(rt));
    CHECK(tl_register(rt, &golden_nop_fn));
    CHECK(tl_store_open(path, 0, &st));
    CHECK(tl_store_attach(st, rt));

    build();
    static const int full[] = {10, 11, 20, 21}, ticked[] = {10}, mailed[] = {20},
                     woken[] = {10, 20};
    checkpoint(1, full, TL_COUNTOF(full));
    fake_now = GOLDEN_BASE + GOLDEN_SECOND;
    settle();
    checkpoint(2, ticked, TL_COUNTOF(ticked));
    host_send("mailbox", 10);
    checkpoint(3, mailed, TL_COUNTOF(mailed));
    host_send("inbox", 20);
    checkpoint(4, woken, TL_COUNTOF(woken));

    CHECK(tl_store_close(st)); /* the last connection: SQLite folds the WAL in */
    st = NULL;
    tl_runtime_free(rt);
    snprintf(side, sizeof side, "%s-wal", path);
    if (exists(side)) {
        fprintf(stderr, "make_golden: %s remains; the store is not one file\n", side);
        return 1;
    }
    printf("make_golden: wrote %s (4 checkpoints)\n", path);
    return 0;
}
