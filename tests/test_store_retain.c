/*
 * test_store_retain.c -- stores that do not grow for ever, and restores
 * that can step back (issue 11, items 5 and 6): retention of the newest K
 * checkpoints as they are written (on by default), space given back,
 * restoring a given checkpoint, and falling back past a damaged newest
 * checkpoint only when asked, never silently.
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
#include <unistd.h>

#include "tasklet.h"
#define STORETEST_PREFIX "tl-retain"
#include "storetest.h"

typedef struct { tl_chan *in; tl_value v, blob; } rx_t;
static const tl_field rx_fields[] = {
    TL_FIELD(rx_t, in, TL_T_CHAN), TL_FIELD(rx_t, v, TL_T_VALUE), TL_FIELD(rx_t, blob, TL_T_VALUE),
};

static tl_status receiver(tl_frame *f, void *locals)
{
    rx_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    TL_END(f);
}
static const tl_func receiver_fn = {"retain.receiver", 1, receiver, sizeof(rx_t), rx_fields,
                                    TL_COUNTOF(rx_fields), NULL};

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    return rt;
}

static tl_store *open_attached(tl_runtime *rt)
{
    return attach_at(rt, TL_STORE_NOSYNC);
}

/* One more blocked receiver (holding `bytes` of binary, if not 0). */
static void add_receiver(tl_runtime *rt, tl_chan *ch, size_t bytes)
{
    rx_t a = {.in = ch};
    if (bytes) {
        unsigned char *b = malloc(bytes);
        assert_non_null(b);
        for (size_t i = 0; i < bytes; i++)
            b[i] = (unsigned char)(rand() & 0xff);
        assert_int_equal(tl_bin_new(rt, b, bytes, &a.blob), TL_OK);
        free(b);
    }
    assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL), TL_OK);
    tl_release(a.blob);
    assert_int_equal(tl_run_steps(rt, 10, NULL), TL_OK);
}

/* n checkpoints, the k-th with k tasklets (ids 1..k). */
static void write_history(int n, const tl_policy *p, size_t bytes)
{
    tl_runtime *rt = new_rt();
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    tl_store *st = open_attached(rt);
    if (p)
        assert_int_equal(tl_store_set_policy(st, p), TL_OK);
    for (int k = 1; k <= n; k++) {
        add_receiver(rt, ch, bytes);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    tl_chan_release(ch);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
}

/* Restores checkpoint at into a new runtime; returns its tasklet count. */
static size_t restore_count(int64_t at, int flags, int64_t *restored, int expect)
{
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    int rc = tl_store_restore_at(st, at, flags, restored);
    if (rc != expect)
        fail_msg("restore_at(%lld): %s, expected %s: %s", (long long)at, tl_errname(rc),
                 tl_errname(expect), tl_store_errmsg(st));
    size_t n = tl_tasklet_count(rt);
    tl_store_close(st);
    tl_runtime_free(rt);
    return n;
}

/* ---- item 6: retention ---- */

static void test_default_keeps_the_newest(void **state)
{
    (void)state;
    write_history(40, NULL, 0);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), TL_KEEP_DEFAULT);
    assert_int_equal(query("SELECT min(id) FROM checkpoints"), 40 - TL_KEEP_DEFAULT + 1);
    /* no chunk row left that no kept checkpoint reads */
    assert_int_equal(query("SELECT count(*) FROM chunks c WHERE ckpt < (SELECT min(id) FROM "
                           "checkpoints) AND EXISTS (SELECT 1 FROM chunks d WHERE d.kind = "
                           "c.kind AND d.key = c.key AND d.ckpt > c.ckpt AND d.ckpt <= "
                           "(SELECT min(id) FROM checkpoints))"), 0);
    /* every kept checkpoint restores to what it held */
    for (int64_t c = 40 - TL_KEEP_DEFAULT + 1; c <= 40; c++) {
        int64_t got = 0;
        assert_int_equal(restore_count(c, 0, &got, TL_OK), (size_t)c);
        assert_int_equal(got, c);
    }
    restore_count(3, 0, NULL, TL_ENOENT); /* retired */
}

/* No chunk row left that no kept checkpoint reads, and every kept one
 * restores to its count (checkpoint k holds k tasklets). */
static void check_retained(int64_t newest, int64_t keep)
{
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), keep);
    assert_int_equal(query("SELECT min(id) FROM checkpoints"), newest - keep + 1);
    assert_int_equal(query("SELECT count(*) FROM chunks c WHERE ckpt < (SELECT min(id) FROM "
                           "checkpoints) AND EXISTS (SELECT 1 FROM chunks d WHERE d.kind = "
                           "c.kind AND d.key = c.key AND d.ckpt > c.ckpt AND d.ckpt <= "
                           "(SELECT min(id) FROM checkpoints))"), 0);
    for (int64_t c = newest - keep + 1; c <= newest; c++) {
        int64_t got = 0;
        assert_int_equal(restore_count(c, 0, &got, TL_OK), (size_t)c);
        assert_int_equal(got, c);
    }
}

/* n more checkpoints in a new runtime that restored the newest, the
 * store opened afresh (a restart: the backend learns from the table
 * which chunks the checkpoints before it wrote). */
static void continue_history(int n, size_t bytes)
{
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    for (int k = 0; k < n; k++) {
        add_receiver(rt, ch, bytes);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    tl_chan_release(ch);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
}

/* Retention across restarts, in a store made now (no index on
 * chunks(ckpt): the backend remembers which chunks each checkpoint wrote,
 * and reads the table for those written before it) and in one of the
 * older shape that has the index. */
static void test_retention_across_restarts(void **state)
{
    (void)state;
    for (int shape = 0; shape < 2; shape++) {
        unlink(path);
        write_history(5, NULL, 0); /* fewer than kept */
        assert_int_equal(query("SELECT count(*) FROM sqlite_master WHERE name = "
                               "'chunks_by_ckpt'"), 0);
        if (shape)
            sql("CREATE INDEX chunks_by_ckpt ON chunks(ckpt)");
        continue_history(20, 0); /* restart inside the window */
        check_retained(25, TL_KEEP_DEFAULT);
        continue_history(1, 300); /* one restart after another */
        continue_history(3, 0);
        check_retained(29, TL_KEEP_DEFAULT);
        continue_history(100, 0); /* more than the backend remembers */
        check_retained(129, TL_KEEP_DEFAULT);
        assert_int_equal(query("SELECT count(*) FROM sqlite_master WHERE name = "
                               "'chunks_by_ckpt'"), shape);
    }
}

static void test_keep_all_and_keep_n(void **state)
{
    (void)state;
    write_history(30, &(tl_policy){.keep = TL_KEEP_ALL}, 0);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 30);
    assert_int_equal(restore_count(1, 0, NULL, TL_OK), 1);
    unlink(path);
    write_history(30, &(tl_policy){.keep = 3}, 0);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 3);
    assert_int_equal(restore_count(0, 0, NULL, TL_OK), 30);
    assert_int_equal(restore_count(28, 0, NULL, TL_OK), 28);

    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_set_policy(st, &(tl_policy){.keep = -5}), TL_EINVAL);
    assert_non_null(strstr(tl_store_errmsg(st), "keep"));
    tl_store_close(st);
    tl_runtime_free(rt);
}

static int64_t file_bytes(void)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (int64_t)sb.st_size;
}

/* The space of retired checkpoints goes back to the file system, a bit at
 * each checkpoint: the file stays near the size of what is kept. */
static void test_space_is_given_back(void **state)
{
    (void)state;
    write_history(120, &(tl_policy){.keep = TL_KEEP_ALL}, 4096);
    int64_t all = file_bytes();
    unlink(path);
    /* the same history, keeping 2: each checkpoint rewrites the chunk of
     * 256 tasklets that grew, about k * 4 KiB, or (from 16 tasklets on)
     * that chunk's hot record, its newest tasklets (persist/split.c) */
    write_history(120, &(tl_policy){.keep = 2}, 4096);
    int64_t kept = file_bytes();
    fprintf(stderr, "test_store_retain: 120 checkpoints: %lld bytes kept all, %lld kept 2\n",
            (long long)all, (long long)kept);
    assert_true(kept * 4 < all);
    assert_int_equal(query("PRAGMA freelist_count") * query("PRAGMA page_size") <= 64 * 4096 * 2,
                     1);
}

/* ---- item 5: a damaged newest checkpoint ---- */

static void damage_newest(void)
{
    sql("UPDATE chunks SET data = x'00c1' WHERE kind = 1 AND ckpt = "
        "(SELECT max(id) FROM checkpoints)");
}

static void test_fallback_only_when_asked(void **state)
{
    (void)state;
    write_history(10, NULL, 0);
    damage_newest();
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    int rc = tl_store_restore(st);
    assert_int_equal(rc, TL_ECORRUPT);
    assert_non_null(strstr(tl_store_errmsg(st), "checkpoint 10"));
    assert_int_equal(tl_tasklet_count(rt), 0); /* nothing half-loaded */
    int64_t got = 0;
    assert_int_equal(tl_store_restore_at(st, 0, TL_RESTORE_FALLBACK, &got), TL_OK);
    assert_int_equal(got, 9);
    assert_int_equal(tl_tasklet_count(rt), 9);
    const char *msg = tl_store_errmsg(st); /* says what it skipped, and why */
    assert_non_null(strstr(msg, "restored checkpoint 9"));
    assert_non_null(strstr(msg, "checkpoint 10"));
    /* going on from checkpoint 9: the next checkpoint is whole and newest */
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 11);
    tl_store_close(st);
    tl_runtime_free(rt);
    assert_int_equal(restore_count(0, 0, &got, TL_OK), 9);
    assert_int_equal(got, 11);
}

static void test_fallback_when_nothing_loads(void **state)
{
    (void)state;
    write_history(2, &(tl_policy){.keep = TL_KEEP_ALL}, 0);
    sql("UPDATE chunks SET data = x'00c1'");
    int64_t got = -1;
    restore_count(0, TL_RESTORE_FALLBACK, &got, TL_ECORRUPT);
    assert_int_equal(got, 0);
    restore_count(5, 0, NULL, TL_ENOENT);
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_restore_at(st, -1, 0, NULL), TL_EINVAL);
    assert_int_equal(tl_store_restore_at(st, 0, 99, NULL), TL_EINVAL);
    tl_store_close(st);
    tl_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_keeps_the_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_all_and_keep_n, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_across_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_space_is_given_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_only_when_asked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_when_nothing_loads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
