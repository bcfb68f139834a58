/*
 * test_store.c -- the SQLite store: checkpoint and restore, incremental
 * checkpoints, identity checks, ownership between real processes, a full
 * or read-only disk during a checkpoint, and checkpoint policies.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tasklet.h"
#include "../persist/store_sqlite.h"

#include <msgpack.h>

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/tl-store-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/app.db", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[160];
    (void)state;
    snprintf(cmd, sizeof cmd, "%s/mnt", dir);
    umount2(cmd, MNT_DETACH); /* a test that mounted and failed */
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct { tl_chan *in; tl_value v; int64_t got; } rx_t;
static const tl_field rx_fields[] = {
    TL_FIELD(rx_t, in, TL_T_CHAN), TL_FIELD(rx_t, v, TL_T_VALUE), TL_FIELD(rx_t, got, TL_T_I64),
};

static tl_status receiver(tl_frame *f, void *locals)
{
    rx_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    L->got = tl_as_i64(L->v);
    TL_YIELD(f);
    TL_RETURN(f, tl_i64(L->got));
    TL_END(f);
}
static const tl_func receiver_fn = {"store.receiver", 1, receiver, sizeof(rx_t), rx_fields,
                                    TL_COUNTOF(rx_fields), NULL};

typedef struct { int64_t i, n; } loop_t;
static const tl_field loop_fields[] = {TL_FIELD(loop_t, i, TL_T_I64), TL_FIELD(loop_t, n, TL_T_I64)};

static tl_status looper(tl_frame *f, void *locals)
{
    loop_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++)
        TL_YIELD(f);
    TL_END(f);
}
static const tl_func looper_fn = {"store.looper", 1, looper, sizeof(loop_t), loop_fields,
                                  TL_COUNTOF(loop_fields), NULL};

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    assert_int_equal(tl_register(rt, &looper_fn), TL_OK);
    return rt;
}

static tl_store *open_attached(tl_runtime *rt)
{
    tl_store *st;
    int rc = tl_store_open(path, 0, &st);
    if (rc != TL_OK)
        fail_msg("open: %s", tl_store_errmsg(st));
    rc = tl_store_attach(st, rt);
    if (rc != TL_OK)
        fail_msg("attach: %s", tl_store_errmsg(st));
    return st;
}

static int64_t query(const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* n receivers blocked on a named channel */
static void spawn_receivers(tl_runtime *rt, int n)
{
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_set_name(ch, "in"), TL_OK);
    rx_t a = {.in = ch};
    for (int i = 0; i < n; i++)
        assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
}

static void test_restore_without_checkpoint(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_ENOENT);
    assert_int_equal(tl_store_last_checkpoint(st), 0);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
    assert_int_equal(query("PRAGMA application_id"), 1414288212);
    assert_int_equal(query("PRAGMA user_version"), 1);
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'format'"), TL_FORMAT_VERSION);
    assert_int_equal(query("SELECT count(*) FROM owner"), 0); /* released on close */
}

static void test_checkpoint_and_restore(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    spawn_receivers(rt, 5);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 1);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
    {
        sqlite3 *db;
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
        sqlite3_finalize(s);
        sqlite3_close(db);
    }

    rt = new_rt();
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 1);
    assert_int_equal(tl_tasklet_count(rt), 5);
    assert_int_equal(tl_blocked_count(rt), 5);
    tl_chan *in = tl_chan_find_name(rt, "in");
    assert_non_null(in);
    assert_int_equal(tl_chan_balance(in), -5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(tl_chan_try_send(in, tl_i64(i)), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 0);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);

    rt = new_rt(); /* the last checkpoint: nothing left */
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 0);
    assert_null(tl_chan_find_name(rt, "in")); /* nothing refers to it any more */
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_incremental(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    spawn_receivers(rt, 2000);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    int64_t full_rows = query("SELECT count(*) FROM chunks WHERE ckpt = 1");
    int64_t full_bytes = query("SELECT bytes FROM checkpoints WHERE id = 1");
    assert_int_equal(full_rows, 8 + 1); /* 2000 tasklets in 8 chunks, one channel chunk */
    /* nothing changed: no new checkpoint */
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 1);
    /* wake 20 receivers (the first 20, all in chunk 0) */
    tl_chan *in = tl_chan_find_name(rt, "in");
    for (int i = 0; i < 20; i++)
        assert_int_equal(tl_chan_try_send(in, tl_i64(100 + i)), TL_OK);
    uint64_t steps;
    assert_int_equal(tl_run_steps(rt, 20, &steps), TL_OK); /* each is past its receive */
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE ckpt = 2"), 2);
    assert_true(query("SELECT bytes FROM checkpoints WHERE id = 2") * 4 < full_bytes);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);

    rt = new_rt(); /* checkpoint 2 = chunk 0 of ckpt 2 + chunks 1..7 of ckpt 1 */
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 2000);
    assert_int_equal(tl_runnable_count(rt), 20);
    assert_int_equal(tl_blocked_count(rt), 1980);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_tasklet_count(rt), 1980);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* internal (src/sched.c), for tests: the next tasklet and channel ids */
void tl__set_next_ids(tl_runtime *rt, uint64_t tid, uint64_t cid);

/* Ids near 2^40: the dirty set is sized by what changed, so a checkpoint
 * after one change stays incremental (one tasklet chunk and the channel's
 * chunk written), before and after a restore. */
static void test_incremental_high_ids(void **state)
{
    (void)state;
    const uint64_t base = ((uint64_t)1 << 40) - 1000;
    tl_runtime *rt = new_rt();
    tl__set_next_ids(rt, base, base);
    tl_store *st = open_attached(rt);
    spawn_receivers(rt, 2000); /* ids base+1 .. base+2000: chunks 2^32-4 .. 2^32+3 */
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE ckpt = 1"), 8 + 1);
    tl_chan *in = tl_chan_find_name(rt, "in");
    assert_true(tl_chan_id(in) > base);
    for (int i = 0; i < 20; i++) /* the first 20 receivers: all in one chunk */
        assert_int_equal(tl_chan_try_send(in, tl_i64(100 + i)), TL_OK);
    uint64_t steps;
    assert_int_equal(tl_run_steps(rt, 20, &steps), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE ckpt = 2"), 2);
    assert_int_equal(query("SELECT min(key) FROM chunks WHERE ckpt = 2 AND kind = 1"),
                     (int64_t)((base + 1) >> 8));
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);

    rt = new_rt();
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 2000);
    assert_int_equal(tl_runnable_count(rt), 20);
    assert_int_equal(tl_blocked_count(rt), 1980);
    in = tl_chan_find_name(rt, "in"); /* the last receiver: its id survived */
    assert_int_equal(tl_chan_try_send(in, tl_i64(7)), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_tasklet_count(rt), 1979);
    assert_int_equal(tl_store_checkpoint(st), TL_OK); /* full after a restore */
    in = tl_chan_find_name(rt, "in");
    assert_int_equal(tl_chan_try_send(in, tl_i64(8)), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    int64_t last = tl_store_last_checkpoint(st);
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM chunks WHERE ckpt = %lld", (long long)last);
    assert_int_equal(query(sql), 2); /* still incremental at these ids */
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* A tasklet that ended while the host still held it is in the checkpoint;
 * the restore drops it (host handles do not survive a restart).  That is a
 * change: the next checkpoint rewrites its chunk although nothing else of
 * that chunk ran (the order saga's kill -9 torture: the first commit after
 * a restart recorded a step's result, and the checkpoint after it
 * announced one tasklet fewer than its chunks held). */
static void test_restore_drops_ended(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    spawn_receivers(rt, 1);
    loop_t l = {0, 0};
    tl_tasklet *t;
    assert_int_equal(tl_spawn(rt, &looper_fn, &l, sizeof l, &t), TL_OK); /* ends at once */
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(query("SELECT tasklets FROM checkpoints WHERE id = 1"), 2);
    tl_tasklet_release(t);
    tl_store_close(st); /* a crash: nothing written after checkpoint 1 */
    tl_runtime_free(rt);

    rt = new_rt();
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 1); /* the ended one went */
    tl__set_next_ids(rt, 1000, 0); /* a new tasklet in another chunk */
    l.n = 1;
    assert_int_equal(tl_spawn(rt, &looper_fn, &l, sizeof l, NULL), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE ckpt = 2 AND kind = 1 AND "
                           "key = 0"), 1);
    tl_store_close(st);
    tl_runtime_free(rt);

    rt = new_rt(); /* checkpoint 2 loads: its head and chunks agree */
    st = open_attached(rt);
    int rc = tl_store_restore(st);
    if (rc != TL_OK)
        fail_msg("restore: %s", tl_store_errmsg(st));
    assert_int_equal(tl_tasklet_count(rt), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_not_ours(void **state)
{
    (void)state;
    tl_store *st;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA application_id = 42; CREATE TABLE t(x);", NULL, NULL,
                                  NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(tl_store_open(path, 0, &st), TL_ENOTSTORE);
    assert_non_null(strstr(tl_store_errmsg(st), "another application"));
    tl_store_close(st);

    FILE *fp = fopen(path, "wb"); /* random bytes: not a database at all */
    for (int i = 0; i < 4096; i++)
        fputc((i * 7919) & 0xff, fp);
    fclose(fp);
    int rc = tl_store_open(path, 0, &st);
    assert_int_equal(rc, TL_ENOTSTORE);
    assert_true(strlen(tl_store_errmsg(st)) > 10);
    tl_store_close(st);
}

static void test_newer_store_version(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    tl_store_close(st);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 2", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(tl_store_open(path, 0, &st), TL_EFORMAT);
    assert_non_null(strstr(tl_store_errmsg(st), "newer"));
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- a long queue given by number ---- */

/* A waiter with a tag: receives from in (or, a selector, from in or
 * other), then reports tag * 100000 + the value on out; woken with an
 * even value from LQ_AGAIN on, it waits again (at the queue's tail). */
typedef struct { tl_case cs[2]; tl_chan *in, *other, *out; int64_t tag, idx; tl_value v; } lq_t;
static const tl_field lq_fields[] = {
    TL_FIELD(lq_t, cs, TL_T_CASES), TL_FIELD(lq_t, in, TL_T_CHAN), TL_FIELD(lq_t, other, TL_T_CHAN),
    TL_FIELD(lq_t, out, TL_T_CHAN), TL_FIELD(lq_t, tag, TL_T_I64), TL_FIELD(lq_t, idx, TL_T_I64),
    TL_FIELD(lq_t, v, TL_T_VALUE),
};

#define LQ_AGAIN 1000000

static tl_status lq_rx(tl_frame *f, void *locals)
{
    lq_t *L = locals;
    TL_BEGIN(f);
    for (;;) {
        if (L->other) {
            L->cs[0] = (tl_case){L->other, TL_OP_RECV, tl_nil()};
            L->cs[1] = (tl_case){L->in, TL_OP_RECV, tl_nil()};
            TL_SELECT(f, L->cs, 2, L->idx, L->v);
        } else {
            TL_RECV(f, L->in, L->v);
        }
        TL_SEND(f, L->out, tl_i64(L->tag * 100000 + tl_as_i64(L->v) % 100000));
        if (tl_as_i64(L->v) < LQ_AGAIN || tl_as_i64(L->v) % 2)
            break; /* an even LQ_AGAIN + i: back to the tail of the queue */
    }
    TL_END(f);
}
static const tl_func lq_rx_fn = {"store.lq_rx", 1, lq_rx, sizeof(lq_t), lq_fields,
                                 TL_COUNTOF(lq_fields), NULL};

#define LQ_MAX 4096

typedef struct lq_run {
    tl_runtime *rt;
    tl_chan *in, *other, *out;
    tl_tasklet *h[LQ_MAX]; /* spawned here, still held */
    int n, tag;
} lq_run;

static tl_runtime *lq_rt(void)
{
    tl_runtime *rt = new_rt();
    assert_int_equal(tl_register(rt, &lq_rx_fn), TL_OK);
    return rt;
}

static void lq_chans(lq_run *r)
{
    r->in = tl_chan_find_name(r->rt, "in");
    r->other = tl_chan_find_name(r->rt, "other");
    r->out = tl_chan_find_name(r->rt, "out");
    assert_non_null(r->in);
    assert_non_null(r->other);
    assert_non_null(r->out);
}

static void lq_new(lq_run *r)
{
    tl_chan *c[3];
    const char *names[3] = {"in", "other", "out"};
    r->rt = lq_rt();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl_chan_new(r->rt, i == 2 ? LQ_MAX : 0, &c[i]), TL_OK);
        assert_int_equal(tl_chan_set_name(c[i], names[i]), TL_OK);
        assert_int_equal(tl_chan_pin(c[i], 1), TL_OK);
        tl_chan_release(c[i]);
    }
    lq_chans(r);
}

/* k more waiters at the tail of in's queue; every 7th a selector. */
static void lq_spawn(lq_run *r, int k)
{
    for (int i = 0; i < k; i++, r->tag++) {
        lq_t a = {.in = r->in, .out = r->out, .tag = r->tag,
                  .other = r->tag % 7 == 3 ? r->other : NULL};
        assert_true(r->n < LQ_MAX);
        assert_int_equal(tl_spawn(r->rt, &lq_rx_fn, &a, sizeof a, &r->h[r->n++]), TL_OK);
    }
    assert_int_equal(tl_run(r->rt), TL_EDEADLOCK);
}

/* Kills the waiter held at i (the tail: the newest). */
static void lq_kill(lq_run *r, int i)
{
    assert_int_equal(tl_kill(r->h[i]), TL_OK);
    tl_tasklet_release(r->h[i]);
    memmove(&r->h[i], &r->h[i + 1], (size_t)(--r->n - i) * sizeof *r->h);
}

/* Wakes the first k of in's queue (every other one queues again at the
 * tail); what they report is dropped. */
static void lq_wake(lq_run *r, int k)
{
    tl_value v;
    for (int i = 0; i < k; i++)
        assert_int_equal(tl_chan_try_send(r->in, tl_i64(LQ_AGAIN + r->tag + i)), TL_OK);
    assert_int_equal(tl_run(r->rt), TL_EDEADLOCK);
    while (tl_chan_try_recv(r->out, &v) == TL_OK)
        tl_release(v);
}

/* Rounds of changes at both ends and in the middle, a checkpoint each. */
static void lq_rounds(lq_run *r, tl_store *st, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        lq_spawn(r, 9);
        lq_wake(r, 5);
        lq_kill(r, r->n - 1);
        lq_kill(r, (i * 37) % r->n);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
}

/* Who gets each value when in's waiters are woken one by one. */
static int lq_drain(tl_runtime *rt, int64_t *seq)
{
    tl_chan *in = tl_chan_find_name(rt, "in"), *out = tl_chan_find_name(rt, "out");
    tl_value v;
    int n = 0;
    while (tl_chan_try_send(in, tl_i64(n)) == TL_OK) {
        int rc = tl_run(rt); /* the last one leaves nothing blocked */
        assert_true(rc == TL_EDEADLOCK || rc == TL_OK);
        assert_int_equal(tl_chan_try_recv(out, &v), TL_OK);
        assert_true(n < LQ_MAX);
        seq[n++] = tl_as_i64(v);
    }
    return n;
}

/* The uncompressed length of the newest record of in's channel chunk. */
static int64_t lq_chan_record_len(void)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t len = -1;
    msgpack_unpacked up;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT data FROM chunks WHERE kind = 2 ORDER BY "
                                        "ckpt DESC LIMIT 1", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0),
                            NULL) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_ARRAY && up.data.via.array.size == 5)
        len = (int64_t)up.data.via.array.ptr[3].via.u64; /* ["tlrec", z, crc, rawlen, bin] */
    msgpack_unpacked_destroy(&up);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return len;
}

static void test_long_queue_by_number(void **state)
{
    (void)state;
    int64_t want[LQ_MAX], got[LQ_MAX];
    int fd[2], nwant = 0;
    assert_int_equal(pipe(fd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) { /* builds the queue, checkpoints, reports the order, dies */
        lq_run *r = calloc(1, sizeof *r);
        lq_new(r);
        tl_store *st = open_attached(r->rt);
        lq_spawn(r, 400);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
        lq_rounds(r, st, 40);
        int n = lq_drain(r->rt, want); /* after the last checkpoint: not stored */
        if (write(fd[1], &n, sizeof n) != sizeof n ||
            write(fd[1], want, (size_t)n * sizeof *want) != (ssize_t)(n * sizeof *want))
            _exit(2);
        raise(SIGKILL); /* no close: the store as a crash leaves it */
    }
    close(fd[1]);
    assert_int_equal(read(fd[0], &nwant, sizeof nwant), sizeof nwant);
    assert_int_equal(read(fd[0], want, (size_t)nwant * sizeof *want), nwant * sizeof *want);
    close(fd[0]);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status));
    assert_true(nwant > 300);
    /* the channel chunk is a few bytes, however long the queue */
    assert_true(lq_chan_record_len() < 200);

    /* the crashed store restores in the order the child had */
    tl_runtime *rt = lq_rt();
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 41);
    assert_int_equal(lq_drain(rt, got), nwant);
    assert_memory_equal(want, got, (size_t)nwant * sizeof *want);
    tl_store_close(st); /* nothing checkpointed since the restore */
    tl_runtime_free(rt);

    /* more incremental checkpoints after a restore: a second restore has
     * the same order as the runtime that wrote them */
    lq_run *r = calloc(1, sizeof *r);
    r->rt = lq_rt();
    st = open_attached(r->rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    lq_chans(r);
    lq_rounds(r, st, 10);
    assert_true(query("SELECT count(*) FROM chunks WHERE ckpt = 42") < 10);
    assert_true(lq_chan_record_len() < 200);
    assert_int_equal(tl_store_close(st), TL_OK);
    for (int i = 0; i < r->n; i++)
        tl_tasklet_release(r->h[i]);
    int n1 = lq_drain(r->rt, want);
    tl_runtime_free(r->rt);
    rt = lq_rt();
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(lq_drain(rt, got), n1);
    assert_true(n1 > 300);
    assert_memory_equal(want, got, (size_t)n1 * sizeof *want);
    tl_store_close(st);
    tl_runtime_free(rt);
    free(r);
}

/* tests/data/golden-v2-queue.db, a store with a queue by number (FORMAT.md
 * section 5), made once by TL_MAKE_GOLDEN_QUEUE=PATH ./test_store: 100
 * waiters on "in" (tags 0..99, every 7th a select on "other" and "in"),
 * checkpoint 1 full; the first 10 woken with an even value from LQ_AGAIN on,
 * back at the tail (checkpoint 2); tag 50 killed (checkpoint 3).  Its queue
 * is then tags 10..49, 51..99, 0..9. */
static int make_golden_queue(const char *to)
{
    lq_run *r = calloc(1, sizeof *r);
    tl_store *st;
    tl_value v;
    if (!r)
        return 1;
    lq_new(r);
    if (tl_store_open(to, 0, &st) != TL_OK || tl_store_attach(st, r->rt) != TL_OK)
        return 1;
    lq_spawn(r, 100);
    int rc = tl_store_checkpoint(st);
    for (int i = 0; rc == TL_OK && i < 10; i++)
        rc = tl_chan_try_send(r->in, tl_i64(LQ_AGAIN + 2 * i));
    if (rc == TL_OK && tl_run(r->rt) == TL_EDEADLOCK)
        rc = tl_store_checkpoint(st);
    while (tl_chan_try_recv(r->out, &v) == TL_OK)
        tl_release(v);
    if (rc == TL_OK && (rc = tl_kill(r->h[50])) == TL_OK)
        rc = tl_store_checkpoint(st);
    tl_store_close(st);
    return rc == TL_OK ? 0 : 1;
}

static void test_golden_queue(void **state)
{
    (void)state;
    const char *golden = getenv("GOLDEN_QUEUE_DB");
    char cmd[400];
    int64_t got[LQ_MAX];
    if (!golden) {
        skip();
        return;
    }
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", golden, path);
    assert_int_equal(system(cmd), 0);
    tl_runtime *rt = lq_rt();
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 3);
    assert_true(lq_chan_record_len() < 200); /* written by number */
    int n = lq_drain(rt, got);
    assert_int_equal(n, 99);
    for (int i = 0; i < n; i++) {
        int64_t tag = i < 40 ? 10 + i : i < 89 ? 11 + i : i - 89;
        if (got[i] / 100000 != tag)
            fail_msg("place %d: tag %lld, expected %lld", i, (long long)(got[i] / 100000),
                     (long long)tag);
    }
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- ownership between processes ---- */

/* A child process that owns the store until it is killed; returns its pid
 * once it does. */
static pid_t spawn_owner(void)
{
    int ready[2];
    char c;
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        tl_runtime *rt;
        tl_store *st;
        if (tl_runtime_new(NULL, &rt) != TL_OK || tl_store_open(path, 0, &st) != TL_OK ||
            tl_store_attach(st, rt) != TL_OK)
            _exit(3);
        if (write(ready[1], "k", 1) != 1)
            _exit(4);
        pause();
        _exit(0);
    }
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    close(ready[1]);
    return child;
}

static void test_owner_lock_and_takeover(void **state)
{
    (void)state;
    pid_t child = spawn_owner();
    tl_runtime *rt = new_rt();
    tl_store *st;
    assert_int_equal(tl_store_open(path, 0, &st), TL_OK);
    assert_int_equal(tl_store_attach(st, rt), TL_ELOCKED);
    char want[32];
    snprintf(want, sizeof want, "pid %d", (int)child);
    assert_non_null(strstr(tl_store_errmsg(st), want));
    /* reading is still allowed */
    tl_store *ro;
    assert_int_equal(tl_store_open(path, TL_STORE_READONLY, &ro), TL_OK);
    tl_store_close(ro);
    /* the owner dies without cleaning up: its row is stale and taken over */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_int_equal(query("SELECT pid FROM owner"), child);
    assert_int_equal(tl_store_attach(st, rt), TL_OK);
    assert_int_equal(query("SELECT pid FROM owner"), getpid());
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_zombie_owner_is_dead(void **state)
{
    (void)state;
    pid_t child = spawn_owner();
    kill(child, SIGKILL);
    /* not reaped yet: a zombie until waitpid (waited for up to 30 s) */
    for (int i = 0; i < 30000; i++) {
        char p[64], buf[128] = "";
        snprintf(p, sizeof p, "/proc/%d/stat", (int)child);
        FILE *fp = fopen(p, "r");
        if (fp) {
            size_t n = fread(buf, 1, sizeof buf - 1, fp);
            buf[n] = '\0';
            fclose(fp);
        }
        if (strstr(buf, ") Z"))
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    tl_runtime *rt = new_rt();
    tl_store *st;
    assert_int_equal(tl_store_open(path, 0, &st), TL_OK);
    assert_int_equal(tl_store_attach(st, rt), TL_OK);
    waitpid(child, NULL, 0);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- a full or read-only disk during a checkpoint ---- */

static void test_disk_full_keeps_last_checkpoint(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    spawn_receivers(rt, 100);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    sqlite3 *db = tl__store_sqlite(st);
    char sql[64];
    int64_t pages = 0;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    pages = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK); /* the disk is full */
    /* lots of new state that cannot fit */
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    rx_t a = {.in = ch};
    for (int i = 0; i < 20000; i++)
        assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_EIO);
    assert_int_equal(tl_store_errcode(st), TL_EIO);
    assert_non_null(strstr(tl_store_errmsg(st), "full"));
    assert_int_equal(tl_store_last_checkpoint(st), 1);
    /* the previous checkpoint is whole and loadable */
    {
        tl_runtime *other = new_rt();
        tl_store *ro;
        assert_int_equal(tl_store_open(path, TL_STORE_READONLY, &ro), TL_OK);
        tl_store_close(ro);
        assert_int_equal(query("SELECT count(*) FROM checkpoints"), 1);
        tl_runtime_free(other);
    }
    /* space again: the retry writes everything that was pending */
    assert_int_equal(sqlite3_exec(db, "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 20100);
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_read_only_disk(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    spawn_receivers(rt, 10);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(sqlite3_exec(tl__store_sqlite(st), "PRAGMA query_only = 1", NULL, NULL, NULL),
                     SQLITE_OK);
    tl_chan *in = tl_chan_find_name(rt, "in");
    assert_int_equal(tl_chan_try_send(in, tl_i64(1)), TL_OK);
    uint64_t steps;
    assert_int_equal(tl_run_steps(rt, 1, &steps), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_EIO);
    assert_non_null(strstr(tl_store_errmsg(st), "read"));
    assert_int_equal(sqlite3_exec(tl__store_sqlite(st), "PRAGMA query_only = 0", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- a real full, then read-only, filesystem (needs root for mount) ---- */

static int mount_tmpfs(const char *where, const char *opts)
{
    return mount("tmpfs", where, "tmpfs", 0, opts);
}

static void test_real_full_then_read_only_fs(void **state)
{
    (void)state;
    char mnt[128], db[160];
    snprintf(mnt, sizeof mnt, "%s/mnt", dir);
    assert_int_equal(mkdir(mnt, 0700), 0);
    if (geteuid() != 0 || mount_tmpfs(mnt, "size=256k") != 0) {
        skip(); /* unprivileged: the pragma-based tests above still run */
        return;
    }
    snprintf(db, sizeof db, "%s/app.db", mnt);
    tl_runtime *rt = new_rt();
    tl_store *st;
    assert_int_equal(tl_store_open(db, 0, &st), TL_OK);
    assert_int_equal(tl_store_attach(st, rt), TL_OK);
    spawn_receivers(rt, 100);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    /* far more than 256 KiB of new state: the disk fills up */
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 400; i++) {
        unsigned char blob[2048]; /* incompressible: zlib cannot hide it */
        for (size_t k = 0; k < sizeof blob; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            blob[k] = (unsigned char)x;
        }
        tl_value big;
        assert_int_equal(tl_bin_new(rt, blob, sizeof blob, &big), TL_OK);
        rx_t a = {.in = ch, .v = big};  /* 2 KiB in each one's locals */
        assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL), TL_OK);
        tl_release(big);
    }
    tl_chan_release(ch);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    int rc = tl_store_checkpoint(st);
    assert_int_equal(rc, TL_EIO);
    assert_non_null(strstr(tl_store_errmsg(st), "full"));
    assert_int_equal(tl_store_last_checkpoint(st), 1);
    /* the last good checkpoint is whole: another runtime restores it */
    {
        tl_runtime *other = new_rt();
        tl_store *ro;
        assert_int_equal(tl_store_open(db, TL_STORE_READONLY, &ro), TL_OK);
        tl_store_close(ro);
        tl_runtime_free(other);
    }
    /* room again: the retry writes everything pending */
    assert_int_equal(mount(NULL, mnt, NULL, MS_REMOUNT, "size=64m"), 0);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
    /* the filesystem turns read-only (while the store is closed: the kernel
     * refuses to remount a filesystem with files open for writing) */
    assert_int_equal(mount(NULL, mnt, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
    rt = new_rt();
    rc = tl_store_open(db, 0, &st);
    if (rc == TL_OK)
        rc = tl_store_attach(st, rt);
    assert_int_equal(rc, TL_EIO);
    assert_true(strlen(tl_store_errmsg(st)) > 10);
    tl_store_close(st);
    tl_runtime_free(rt);
    /* writable again: everything committed is there */
    assert_int_equal(mount(NULL, mnt, NULL, MS_REMOUNT, NULL), 0);
    rt = new_rt();
    assert_int_equal(tl_store_open(db, 0, &st), TL_OK);
    assert_int_equal(tl_store_attach(st, rt), TL_OK);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 500);
    tl_store_close(st);
    tl_runtime_free(rt);
    assert_int_equal(umount(mnt), 0);
}

/* ---- policies ---- */

static void test_policies(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    tl_policy p = {.every_steps = 100, .on_idle = 1, .on_close = 1};
    assert_int_equal(tl_store_set_policy(st, &p), TL_OK);
    loop_t a = {.n = 1000};
    assert_int_equal(tl_spawn(rt, &looper_fn, &a, sizeof a, NULL), TL_OK);
    assert_int_equal(tl_spawn(rt, &looper_fn, &a, sizeof a, NULL), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    /* 2002 steps: 20 on the step count, then one when idle */
    assert_int_equal(tl_store_last_checkpoint(st), 21);
    /* on close: only if something changed since */
    assert_int_equal(tl_spawn(rt, &looper_fn, &a, sizeof a, NULL), TL_OK);
    assert_int_equal(tl_store_close(st), TL_OK);
    assert_int_equal(query("SELECT max(id) FROM checkpoints"), 22);
    tl_runtime_free(rt);

    rt = new_rt(); /* on idle with the bounded run */
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 1);
    assert_int_equal(tl_spawn(rt, &looper_fn, &a, sizeof a, NULL), TL_OK); /* two: yields switch */
    tl_policy q = {.on_idle = 1};
    assert_int_equal(tl_store_set_policy(st, &q), TL_OK);
    uint64_t steps;
    assert_int_equal(tl_run_steps(rt, 10, &steps), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 22); /* still busy */
    assert_int_equal(tl_run_steps(rt, 10000, &steps), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 23);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* every_ms, on a fake clock that each step moves on by 1 ms */
static int64_t fake_now;
static int64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

static tl_status ticker(tl_frame *f, void *locals)
{
    loop_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        fake_now += 1000000;
        TL_YIELD(f);
    }
    TL_END(f);
}
static const tl_func ticker_fn = {"store.ticker", 1, ticker, sizeof(loop_t), loop_fields,
                                  TL_COUNTOF(loop_fields), NULL};

static void test_policy_every_ms(void **state)
{
    (void)state;
    tl_runtime *rt;
    tl_config cfg = {0};
    cfg.clock = fake_clock;
    fake_now = 1700000000LL * 1000000000LL;
    assert_int_equal(tl_runtime_new(&cfg, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &ticker_fn), TL_OK);
    tl_store *st = open_attached(rt);
    tl_policy p = {.every_ms = 500};
    assert_int_equal(tl_store_set_policy(st, &p), TL_OK);
    loop_t a = {.n = 3000};
    assert_int_equal(tl_spawn(rt, &ticker_fn, &a, sizeof a, NULL), TL_OK);
    assert_int_equal(tl_spawn(rt, &ticker_fn, &a, sizeof a, NULL), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    /* 6000 ms of fake time, looked at every 256 steps (256 ms): a checkpoint
     * at most every 512 ms and at least every 768 ms */
    int64_t n = tl_store_last_checkpoint(st);
    assert_true(n >= 6000 / 768 && n <= 6000 / 500);
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_damaged_chunk(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    spawn_receivers(rt, 300);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_store_close(st);
    tl_runtime_free(rt);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE chunks SET data = substr(data, 1, length(data) - 9) "
                                      "|| x'00' || substr(data, length(data) - 7) "
                                      "WHERE kind = 1 AND key = 1", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    rt = new_rt();
    st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_ECORRUPT);
    assert_non_null(strstr(tl_store_errmsg(st), "chunk 1/1"));
    assert_int_equal(tl_tasklet_count(rt), 0);
    tl_store_close(st);
    tl_runtime_free(rt);
}

int main(void)
{
    if (getenv("TL_MAKE_GOLDEN_QUEUE"))
        return make_golden_queue(getenv("TL_MAKE_GOLDEN_QUEUE"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restore_without_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_and_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incremental, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_drops_ended, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_ours, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_store_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_lock_and_takeover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zombie_owner_is_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_keeps_last_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_full_then_read_only_fs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy_every_ms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_chunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incremental_high_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_queue_by_number, setup, teardown),
        cmocka_unit_test_setup_teardown(test_golden_queue, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
