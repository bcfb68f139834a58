/*
 * test_store_backend.c -- the store interface (persist/store_backend.h)
 * on its SQLite backend: participants' rows commit with a checkpoint or
 * not at all, a handle whose claim was superseded cannot write (fencing
 * epoch), records over the reader's limit are refused with the previous
 * checkpoint kept, pruning, refusing a mailbox row, store handles
 * checked by magic, and a churn of changes, failed checkpoints and
 * restarts whose every newest checkpoint loads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../persist/persist.h"
#include "../persist/store_sqlite.h"
#define STORETEST_PREFIX "tl-stbe"
#include "storetest.h"

/* A receiver blocked on a channel, holding a value it was given. */
typedef struct { tl_chan *in; tl_value keep, v; } rx_t;
static const tl_field rx_fields[] = {
    TL_FIELD(rx_t, in, TL_T_CHAN), TL_FIELD(rx_t, keep, TL_T_VALUE), TL_FIELD(rx_t, v, TL_T_VALUE),
};

static tl_status receiver(tl_frame *f, void *locals)
{
    rx_t *L = locals;
    TL_BEGIN(f);
    for (;;)
        TL_RECV(f, L->in, L->v);
    TL_END(f);
}
static const tl_func receiver_fn = {"stbe.receiver", 1, receiver, sizeof(rx_t), rx_fields,
                                    TL_COUNTOF(rx_fields), NULL};

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    return rt;
}

static tl_store *open_at(const char *where, tl_runtime *rt)
{
    tl_store *st;
    int rc = tl_store_open(where, rt ? 0 : TL_STORE_READONLY, &st);
    if (rc != TL_OK)
        fail_msg("open: %s", tl_store_errmsg(st));
    if (rt && (rc = tl_store_attach(st, rt)) != TL_OK)
        fail_msg("attach: %s", tl_store_errmsg(st));
    return st;
}

/* One receiver on channel "in" (made on first use), holding keep. */
static void spawn_holder(tl_runtime *rt, tl_value keep)
{
    tl_chan *ch = tl_chan_find_name(rt, "in");
    if (ch) {
        tl_chan_retain(ch);
    } else {
        assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
        assert_int_equal(tl_chan_set_name(ch, "in"), TL_OK);
    }
    rx_t a = {.in = ch, .keep = keep};
    assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
}

/* ---- a participant ---- */

static const tl__table test_table = {"test_rows", "k", "peer", "time", "data"};

typedef struct part_state {
    int nrows;      /* rows "r0".. written in every checkpoint */
    int fail;       /* fail after writing them */
    int committed;  /* checkpoints it was told committed */
    int detached;
} part_state;

static int part_write(void *ud, tl__store_tx *tx)
{
    part_state *ps = ud;
    int rc = tl__tx_clear(tx, &test_table);
    for (int i = 0; i < ps->nrows && rc == TL_OK; i++) {
        char key[16], data[16];
        snprintf(key, sizeof key, "r%d", i);
        snprintf(data, sizeof data, "data %d", i);
        tl__row r = {key, "peer", 1000 + i, data, strlen(data)};
        rc = tl__tx_put(tx, &test_table, &r);
    }
    if (rc == TL_OK && ps->nrows > 1)
        rc = tl__tx_del(tx, &test_table, "r0");
    return rc == TL_OK && ps->fail ? TL_EIO : rc;
}

static void part_committed(void *ud) { ((part_state *)ud)->committed++; }
static void part_detach(void *ud) { ((part_state *)ud)->detached++; }

static const tl__participant test_part = {"test participant", part_write, part_detach,
                                          part_committed};

typedef struct seen_rows {
    int n;
    char keys[8][16];
    int64_t times[8];
    char data[8][16];
} seen_rows;

static int collect(void *ud, const tl__row *r)
{
    seen_rows *sr = ud;
    if (sr->n < 8) {
        snprintf(sr->keys[sr->n], 16, "%s", r->key);
        sr->times[sr->n] = r->time;
        snprintf(sr->data[sr->n], 16, "%.*s", (int)r->len, (const char *)r->data);
        assert_string_equal(r->peer, "peer");
    }
    sr->n++;
    return TL_OK;
}

/* The rows committed, as another handle reads them. */
static seen_rows committed_rows(void)
{
    seen_rows sr = {0};
    tl_store *ro = open_at(path, NULL);
    assert_int_equal(tl__store_rows(ro, &test_table, collect, &sr), TL_OK);
    tl_store_close(ro);
    return sr;
}

static void test_participant_rows_ride_on_checkpoints(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(path, rt);
    part_state ps = {.nrows = 1, .fail = 1};
    assert_int_equal(tl__store_join(st, &test_part, &ps), TL_OK);
    spawn_holder(rt, tl_nil());
    /* the first checkpoint creates the participant's table, then fails:
     * neither the chunks nor the table remain */
    assert_int_equal(tl_store_checkpoint(st), TL_EIO);
    assert_non_null(strstr(tl_store_errmsg(st), "test participant"));
    assert_non_null(strstr(tl_store_errmsg(st), "no checkpoint yet"));
    assert_int_equal(tl_store_last_checkpoint(st), 0);
    assert_int_equal(committed_rows().n, 0);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 0);
    assert_int_equal(ps.committed, 0); /* told only of a commit */
    /* now it goes through, rows and chunks in one commit */
    ps.fail = 0;
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    seen_rows sr = committed_rows();
    assert_int_equal(ps.committed, 1);
    assert_int_equal(sr.n, 1);
    assert_string_equal(sr.keys[0], "r0");
    assert_int_equal(sr.times[0], 1000);
    assert_string_equal(sr.data[0], "data 0");
    /* a failed checkpoint leaves the previous rows */
    ps.nrows = 3;
    ps.fail = 1;
    tl__store_touch(st);
    assert_int_equal(tl_store_checkpoint(st), TL_EIO);
    assert_non_null(strstr(tl_store_errmsg(st), "checkpoint 1 stays the newest"));
    assert_int_equal(committed_rows().n, 1);
    assert_int_equal(tl_store_last_checkpoint(st), 1);
    assert_int_equal(ps.committed, 1);
    /* and the retry writes them: r0 deleted, r1 r2 in insertion order */
    ps.fail = 0;
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    sr = committed_rows();
    assert_int_equal(ps.committed, 2);
    assert_int_equal(sr.n, 2);
    assert_string_equal(sr.keys[0], "r1");
    assert_string_equal(sr.keys[1], "r2");
    assert_string_equal(sr.data[1], "data 2");
    /* a participant that left is no longer called; one still there is
     * told when the store closes */
    part_state other = {.nrows = 5};
    assert_int_equal(tl__store_join(st, &test_part, &other), TL_OK);
    tl__store_leave(st, &test_part, &other);
    tl__store_touch(st);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(committed_rows().n, 2);
    assert_int_equal(tl_store_close(st), TL_OK);
    assert_int_equal(ps.detached, 1);
    assert_int_equal(other.detached, 0);
    tl_runtime_free(rt);
}

/* ---- fencing ---- */

static void test_superseded_claim_cannot_write(void **state)
{
    (void)state;
    tl_runtime *a = new_rt(), *b = new_rt();
    tl_store *sa = open_at(path, a);
    part_state ps = {.nrows = 1};
    assert_int_equal(tl__store_join(sa, &test_part, &ps), TL_OK);
    spawn_holder(a, tl_nil());
    assert_int_equal(tl_store_checkpoint(sa), TL_OK);
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), 1);
    /* another claim, after someone removed the owner lock file by hand
     * (otherwise the lock refuses it: test_store's ownership tests) */
    char lock[160];
    snprintf(lock, sizeof lock, "%s-lock", path);
    assert_int_equal(unlink(lock), 0);
    tl_store *sb = open_at(path, b);
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), 2);
    /* the first handle's writes are refused, its participant's too */
    ps.nrows = 2;
    spawn_holder(a, tl_i64(7));
    assert_int_equal(tl_store_checkpoint(sa), TL_ELOCKED);
    assert_non_null(strstr(tl_store_errmsg(sa), "no longer owns the store"));
    assert_int_equal(tl__store_prune(sa, 1), TL_ELOCKED);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 1);
    assert_int_equal(committed_rows().n, 1);
    /* the new owner writes; the old handle's close leaves its claim */
    assert_int_equal(tl_store_checkpoint(sb), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(sb), 2);
    assert_int_equal(tl_store_close(sa), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM owner"), 1);
    assert_int_equal(tl_store_close(sb), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM owner"), 0);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

/* ---- the record limit ---- */

/* rawlen of the newest record (kind, key) in the store at where. */
static uint64_t stored_rawlen(const char *where, int kind, int key)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    uint64_t raw = 0;
    assert_int_equal(sqlite3_open(where, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT data FROM chunks WHERE kind = ? AND key = ? "
                                        "ORDER BY ckpt DESC LIMIT 1", -1, &s, NULL), SQLITE_OK);
    sqlite3_bind_int(s, 1, kind);
    sqlite3_bind_int(s, 2, key);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, sqlite3_column_blob(s, 0),
                                         (size_t)sqlite3_column_bytes(s, 0), NULL),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(u.data.via.array.size, 5);
    raw = u.data.via.array.ptr[3].via.u64;
    msgpack_unpacked_destroy(&u);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return raw;
}

/* 20,000 bytes that do not compress. */
static tl_value big_value(tl_runtime *rt)
{
    static unsigned char bytes[20000];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof bytes; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        bytes[i] = (unsigned char)x;
    }
    tl_value v;
    assert_int_equal(tl_bin_new(rt, bytes, sizeof bytes, &v), TL_OK);
    return v;
}

/* Two holders, the second with the big value: what chunk 0 holds. */
static void big_state(tl_runtime *rt, tl_store *st_between)
{
    spawn_holder(rt, tl_nil());
    if (st_between)
        assert_int_equal(tl_store_checkpoint(st_between), TL_OK);
    tl_value v = big_value(rt);
    spawn_holder(rt, v);
    tl_release(v);
}

static void test_record_limit(void **state)
{
    (void)state;
    /* the encoder at its limit: a tombstone's document is 1 byte */
    tl_runtime *rt = new_rt();
    tl__buf out;
    tl__buf_init(&out, rt);
    assert_int_equal(out.max_doc, TL__MAX_DOC);
    out.max_doc = 1;
    assert_int_equal(tl__enc_tombstone(rt, &out), TL_OK);
    out.max_doc = 0;
    out.len = 0;
    assert_int_equal(tl__enc_tombstone(rt, &out), TL_ERANGE);
    assert_non_null(strstr(tl_errmsg(rt), "larger than a reader accepts"));
    tl__buf_free(&out);
    tl_runtime_free(rt);

    /* the size of the big chunk's document, measured in a first store */
    char first[160];
    snprintf(first, sizeof first, "%s/first.db", dir);
    rt = new_rt();
    tl_store *st = open_at(first, rt);
    big_state(rt, NULL);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    uint64_t rawlen = stored_rawlen(first, TL__KIND_TASKLETS, 0);
    assert_true(rawlen > 20000);
    tl_store_close(st);
    tl_runtime_free(rt);

    /* one byte under it: refused, and the previous checkpoint (with the
     * participant's rows) stays the newest */
    rt = new_rt();
    st = open_at(path, rt);
    part_state ps = {.nrows = 1};
    assert_int_equal(tl__store_join(st, &test_part, &ps), TL_OK);
    big_state(rt, st);
    ps.nrows = 3;
    tl__store_limit_doc(st, (size_t)rawlen - 1);
    assert_int_equal(tl_store_checkpoint(st), TL_ERANGE);
    assert_non_null(strstr(tl_store_errmsg(st), "larger than a reader accepts"));
    assert_non_null(strstr(tl_store_errmsg(st), "tasklet chunk 0"));
    assert_non_null(strstr(tl_store_errmsg(st), "checkpoint 1 stays the newest"));
    assert_int_equal(tl_store_last_checkpoint(st), 1);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 1);
    assert_int_equal(committed_rows().n, 1);
    /* exactly at it: written */
    tl__store_limit_doc(st, (size_t)rawlen);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    assert_int_equal(stored_rawlen(path, TL__KIND_TASKLETS, 0), rawlen);
    assert_int_equal(committed_rows().n, 2);
    tl_store_close(st);
    tl_runtime_free(rt);
    /* and what was written loads */
    rt = new_rt();
    st = open_at(path, rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- pruning ---- */

static void test_prune(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(path, rt);
    for (int i = 0; i < 300; i++) /* two tasklet chunks */
        spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_chan *in = tl_chan_find_name(rt, "in");
    for (int i = 0; i < 4; i++) { /* one tasklet of chunk 0 receives each time */
        assert_int_equal(tl_chan_try_send(in, tl_i64(i)), TL_OK);
        assert_int_equal(tl_run(rt), TL_EDEADLOCK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    assert_int_equal(tl_store_last_checkpoint(st), 5);
    int64_t rows = query("SELECT count(*) FROM chunks");
    assert_int_equal(tl__store_prune(st, 0), TL_EINVAL);
    assert_int_equal(tl__store_prune(st, 2), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 2);
    assert_int_equal(query("SELECT min(id) FROM checkpoints"), 4);
    assert_true(query("SELECT count(*) FROM chunks") < rows);
    /* the rows checkpoint 4 reads stay: chunk 1 of checkpoint 1 */
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE kind = 1 AND key = 1"), 1);
    assert_int_equal(tl__store_prune(st, 10), TL_OK); /* nothing to do */
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = open_at(path, rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 300);
    assert_int_equal(tl_store_last_checkpoint(st), 5);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- the mailbox: refusing a row ---- */

static void test_mailbox_refuse(void **state)
{
    (void)state;
    tl_runtime *a = new_rt(), *b = new_rt();
    assert_int_equal(tl_set_node_id(a, "a"), TL_OK);
    assert_int_equal(tl_set_node_id(b, "b"), TL_OK);
    tl_store *st = open_at(path, a);
    tl_tasklet *t;
    tl_chan *ch;
    assert_int_equal(tl_chan_new(a, 0, &ch), TL_OK);
    rx_t args = {.in = ch};
    assert_int_equal(tl_spawn(a, &receiver_fn, &args, sizeof args, &t), TL_OK);
    assert_int_equal(tl_run(a), TL_EDEADLOCK);
    assert_int_equal(tl_store_export(st, t, "b"), TL_OK);
    tl_tasklet_release(t);
    tl_chan_release(ch);
    assert_int_equal(query("SELECT count(*) FROM mailbox"), 1);
    sqlite3 *db;
    sqlite3_stmt *s;
    char xid[40];
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT xid FROM mailbox", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    snprintf(xid, sizeof xid, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
    assert_int_equal(tl__store_refuse(st, xid, "the function is not registered"), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(query("SELECT count(*) FROM mailbox_refused WHERE reason = "
                                 "'the function is not registered'"), 1);
    assert_int_equal(tl__store_refuse(st, xid, "again"), TL_EBUSY);
    assert_non_null(strstr(tl_store_errmsg(st), xid));
    size_t n = 99;
    assert_int_equal(tl_store_import(st, b, &n), TL_OK);
    assert_int_equal(n, 0);
    tl_store_close(st);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

/* ---- churn across failed checkpoints and restarts ---- */

typedef struct { tl_chan *ch; tl_value v; } io_t;
static const tl_field io_fields[] = {TL_FIELD(io_t, ch, TL_T_CHAN), TL_FIELD(io_t, v, TL_T_VALUE)};

static tl_status rx_once(tl_frame *f, void *locals)
{
    io_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->ch, L->v);
    TL_END(f);
}
static const tl_func rx_once_fn = {"stbe.rx_once", 1, rx_once, sizeof(io_t), io_fields,
                                   TL_COUNTOF(io_fields), NULL};

static tl_status tx_once(tl_frame *f, void *locals)
{
    io_t *L = locals;
    TL_BEGIN(f);
    TL_SEND(f, L->ch, L->v);
    TL_END(f);
}
static const tl_func tx_once_fn = {"stbe.tx_once", 1, tx_once, sizeof(io_t), io_fields,
                                   TL_COUNTOF(io_fields), NULL};

static uint32_t churn_seed;
static uint32_t rnd(void) { return (churn_seed = churn_seed * 1103515245u + 12345u) >> 8; }

/* Named channel cK (made when it is not there: names do not hold a
 * channel, its waiters do), with a reference for the caller. */
static tl_chan *named(tl_runtime *rt, int k)
{
    char name[8];
    snprintf(name, sizeof name, "c%d", k);
    tl_chan *ch = tl_chan_find_name(rt, name);
    if (ch)
        return tl_chan_retain(ch);
    assert_int_equal(tl_chan_new(rt, (size_t)(k % 2), &ch), TL_OK);
    assert_int_equal(tl_chan_set_name(ch, name), TL_OK);
    return ch;
}

static void spawn_io(tl_runtime *rt, const tl_func *fn, tl_chan *ch, int64_t v, tl_tasklet **out)
{
    io_t a = {.ch = ch, .v = tl_i64(v)};
    assert_int_equal(tl_spawn(rt, fn, &a, sizeof a, out), TL_OK);
}

#define NHELD 64

/* One change of the churn: waiters and senders on named and fresh
 * channels, tasklets that end while the host holds them, jumps to new
 * chunks, checkpoints that fail (the participant after every chunk and
 * the head are written; SQLITE_BUSY at begin, another connection holding
 * the write lock). */
static void churn_op(tl_runtime *rt, tl_store *st, part_state *ps, tl_tasklet **held,
                     int *nheld, size_t *expect)
{
    tl_chan *ch;
    switch (rnd() % 8) {
    case 0:
    case 1:
        ch = named(rt, (int)(rnd() % 4));
        spawn_io(rt, rnd() % 2 ? &rx_once_fn : &tx_once_fn, ch, 1, NULL);
        tl_chan_release(ch);
        break;
    case 2: /* a fresh channel with both ends: all three go */
    case 3: /* the same, the receiver held by the host until the restart */
        assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
        spawn_io(rt, &rx_once_fn, ch, 0, *nheld < NHELD ? &held[*nheld] : NULL);
        *nheld += *nheld < NHELD;
        spawn_io(rt, &tx_once_fn, ch, 2, NULL);
        tl_chan_release(ch);
        break;
    case 4: /* the next tasklets in another chunk */
        tl__set_next_ids(rt, rt->next_tid + 256 * (1 + rnd() % 3), rt->next_cid + 256 * (rnd() % 2));
        break;
    case 5: { /* a checkpoint that fails after writing everything */
        ps->fail = 1;
        tl__store_touch(st);
        assert_int_equal(tl_store_checkpoint(st), TL_EIO);
        ps->fail = 0;
        break;
    }
    case 6: { /* a checkpoint that finds the store locked */
        sqlite3 *other;
        assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
        assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_busy_timeout(tl__store_sqlite(st), 1);
        tl__store_touch(st);
        assert_int_not_equal(tl_store_checkpoint(st), TL_OK);
        sqlite3_busy_timeout(tl__store_sqlite(st), 5000);
        assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(other);
        break;
    }
    default: /* a checkpoint that goes in */
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
        *expect = tl_tasklet_count(rt);
        return;
    }
    int rc = tl_run(rt);
    assert_true(rc == TL_OK || rc == TL_EDEADLOCK);
}

/* Restarts ("kill -9": the runtime and store dropped, nothing written
 * after the last successful checkpoint) between rounds of changes and
 * failed checkpoints, retention keeping 2: every newest checkpoint loads
 * (its chunks agree with its head) with the tasklets it had. */
static void test_churn_across_failed_checkpoints(void **state)
{
    (void)state;
    size_t expect = 0;
    for (int round = 0; round < 120; round++) {
        if (round % 40 == 0) { /* three seeds, each on a fresh store */
            churn_seed = 12345u + (uint32_t)round;
            expect = 0;
            char rm[200];
            snprintf(rm, sizeof rm, "rm -f %s*", path);
            assert_int_equal(system(rm), 0);
        }
        tl_runtime *rt = new_rt();
        assert_int_equal(tl_register(rt, &rx_once_fn), TL_OK);
        assert_int_equal(tl_register(rt, &tx_once_fn), TL_OK);
        tl_store *st = open_at(path, rt);
        tl_policy pol = {.keep = 2};
        assert_int_equal(tl_store_set_policy(st, &pol), TL_OK);
        part_state ps = {.nrows = 1};
        assert_int_equal(tl__store_join(st, &test_part, &ps), TL_OK);
        if (round % 40) {
            int rc = tl_store_restore(st);
            if (rc != TL_OK && !(rc == TL_ENOENT && tl_store_last_checkpoint(st) == 0))
                fail_msg("round %d: restore: %s", round, tl_store_errmsg(st));
            assert_int_equal(tl_tasklet_count(rt), expect);
        }
        tl_tasklet *held[NHELD];
        int nheld = 0;
        for (int i = 0, n = 1 + (int)(rnd() % 8); i < n; i++)
            churn_op(rt, st, &ps, held, &nheld, &expect);
        tl_store_close(st); /* the held handles die with the process */
        tl_runtime_free(rt);
    }
    assert_true(query("SELECT max(id) FROM checkpoints") > 10); /* the last seed's */
}

/* A participant whose SQL ends the checkpoint's transaction (an error
 * SQLite answers with a rollback, or a ROLLBACK of its own). */
static int ender_write(void *ud, tl__store_tx *tx)
{
    (void)tx;
    sqlite3_exec(ud, "ROLLBACK", NULL, NULL, NULL);
    return TL_OK;
}
static const tl__participant ender_part = {"ender", ender_write, NULL, NULL};

/* Nothing is written outside the checkpoint's transaction once it ended
 * early: retention (keep 1) does not delete the checkpoints before it in
 * autocommit, the checkpoint fails, and the previous one restores. */
static void test_transaction_ended_early(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(path, rt);
    tl_policy pol = {.keep = 1};
    assert_int_equal(tl_store_set_policy(st, &pol), TL_OK);
    spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl__store_join(st, &ender_part, tl__store_sqlite(st)), TL_OK);
    spawn_holder(rt, tl_nil());
    assert_int_not_equal(tl_store_checkpoint(st), TL_OK);
    assert_non_null(strstr(tl_store_errmsg(st), "checkpoint 1 stays the newest"));
    assert_int_equal(query("SELECT count(*) FROM checkpoints WHERE id = 1"), 1);
    tl__store_leave(st, &ender_part, tl__store_sqlite(st));
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = open_at(path, rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 1);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- handles ---- */

static void test_bad_handles(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    _Alignas(16) unsigned char junk[1024] = {0};
    tl_store *bad[] = {(tl_store *)junk, (tl_store *)rt};
    for (size_t i = 0; i < 2; i++) {
        tl_store *st = bad[i];
        assert_int_equal(tl_store_attach(st, rt), TL_EMISUSE);
        assert_int_equal(tl_store_checkpoint(st), TL_EMISUSE);
        assert_int_equal(tl_store_restore(st), TL_EMISUSE);
        tl_policy p = {.on_idle = 1};
        assert_int_equal(tl_store_set_policy(st, &p), TL_EMISUSE);
        size_t n;
        assert_int_equal(tl_store_import(st, rt, &n), TL_EMISUSE);
        assert_int_equal(tl_store_errcode(st), TL_EMISUSE);
        assert_non_null(strstr(tl_store_errmsg(st), "not a store handle"));
        assert_int_equal(tl_store_last_checkpoint(st), 0);
        assert_int_equal(tl_store_close(st), TL_EMISUSE);
        assert_null(tl__store_sqlite(st));
    }
    /* a handle whose open failed only tells why and closes */
    tl_store *st;
    assert_int_equal(tl_store_open(NULL, 0, &st), TL_EINVAL);
    assert_int_equal(tl_store_attach(st, rt), TL_EMISUSE);
    assert_int_equal(tl_store_checkpoint(st), TL_EMISUSE);
    assert_non_null(strstr(tl_store_errmsg(st), "no path"));
    assert_int_equal(tl_store_close(st), TL_OK);
    /* a postgresql:// location: a backend this build lacks, or (with
     * libpq) a server that is not there (nothing listens on port 1) */
    int rc = tl_store_open("postgresql://127.0.0.1:1/app", 0, &st);
    if (rc == TL_ENOTSUP) {
        assert_non_null(strstr(tl_store_errmsg(st), "no PostgreSQL store backend"));
    } else {
        assert_int_equal(rc, TL_EIO);
        assert_non_null(strstr(tl_store_errmsg(st), "cannot connect to PostgreSQL"));
    }
    assert_int_equal(tl_store_checkpoint(st), TL_EMISUSE);
    assert_int_equal(tl_store_close(st), TL_OK);
    /* the runtime was not touched by any of this */
    tl_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_participant_rows_ride_on_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_superseded_claim_cannot_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_refuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_churn_across_failed_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_ended_early, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_handles, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
