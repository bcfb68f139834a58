/*
 * test_store_import.c -- handover through the store's mailbox, when it
 * goes wrong (issue 11, item 9): an import is all or nothing, also for the
 * value a local receiver would take; a row that can never be imported (its
 * function is not registered here, or it is damaged) becomes a dead letter
 * and the rest come in; a crash between an import's commit and the
 * imported waiters' rendezvous is completed by the restore.
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
#include <unistd.h>

#include "../persist/persist.h"
#define STORETEST_PREFIX "tl-import"
#include "storetest.h"

static int64_t received[8];
static int nreceived;

typedef struct { tl_chan *ch; tl_value v; } io_t;
static const tl_field io_fields[] = {TL_FIELD(io_t, ch, TL_T_CHAN), TL_FIELD(io_t, v, TL_T_VALUE)};

static tl_status sender(tl_frame *f, void *locals)
{
    io_t *L = locals;
    TL_BEGIN(f);
    TL_SEND(f, L->ch, L->v);
    TL_END(f);
}
static const tl_func sender_fn = {"import.sender", 1, sender, sizeof(io_t), io_fields,
                                  TL_COUNTOF(io_fields), NULL};

static tl_status receiver(tl_frame *f, void *locals)
{
    io_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->ch, L->v);
    if (nreceived < 8)
        received[nreceived++] = tl_as_i64(L->v);
    TL_END(f);
}
static const tl_func receiver_fn = {"import.receiver", 1, receiver, sizeof(io_t), io_fields,
                                    TL_COUNTOF(io_fields), NULL};

/* A function only the exporting side has. */
static tl_status only_there(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_YIELD(f);
    TL_END(f);
}
static const tl_func only_there_fn = {"import.only_there", 1, only_there, sizeof(io_t),
                                      io_fields, TL_COUNTOF(io_fields), NULL};

static tl_runtime *new_rt(const char *node, int with_only_there)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_set_node_id(rt, node), TL_OK);
    assert_int_equal(tl_register(rt, &sender_fn), TL_OK);
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    if (with_only_there)
        assert_int_equal(tl_register(rt, &only_there_fn), TL_OK);
    return rt;
}

static tl_store *open_attached(tl_runtime *rt)
{
    return attach_at(rt, TL_STORE_NOSYNC);
}

/* A sender blocked on ch leaves through the mailbox and comes back home
 * (to its own node), where a receiver now waits on ch. */
static tl_tasklet *send_home_through_mailbox(tl_runtime *rt, tl_store *st, tl_chan *ch,
                                             int64_t v)
{
    tl_tasklet *s, *r;
    assert_int_equal(tl_spawn(rt, &sender_fn, &(io_t){.ch = ch, .v = tl_i64(v)}, sizeof(io_t),
                              &s), TL_OK);
    assert_int_equal(tl_run_steps(rt, 10, NULL), TL_OK);
    assert_int_equal(tl_tasklet_wait(s), TL_WAIT_SEND);
    assert_int_equal(tl_store_export(st, s, "A"), TL_OK);
    tl_tasklet_release(s);
    assert_int_equal(tl_spawn(rt, &receiver_fn, &(io_t){.ch = ch}, sizeof(io_t), &r), TL_OK);
    assert_int_equal(tl_run_steps(rt, 10, NULL), TL_OK);
    assert_int_equal(tl_tasklet_wait(r), TL_WAIT_RECV);
    return r;
}

static void test_import_all_or_nothing(void **state)
{
    (void)state;
    nreceived = 0;
    tl_runtime *rt = new_rt("A", 0);
    tl_store *st = open_attached(rt);
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    tl_tasklet *r = send_home_through_mailbox(rt, st, ch, 7);
    /* the import's checkpoint fails (a record limit nothing fits under) */
    tl__store_limit_doc(st, 1);
    size_t n = 99;
    assert_int_equal(tl_store_import(st, rt, &n), TL_ERANGE);
    assert_int_equal(n, 0);
    assert_int_equal(tl_tasklet_state(r), TL_BLOCKED); /* it was handed nothing */
    assert_int_equal(tl_chan_balance(ch), -1);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(nreceived, 0);
    assert_int_equal(query("SELECT count(*) FROM mailbox"), 1); /* still there */
    /* it succeeds: the rendezvous happens once */
    tl__store_limit_doc(st, SIZE_MAX);
    assert_int_equal(tl_store_import(st, rt, &n), TL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(nreceived, 1);
    assert_int_equal(received[0], 7);
    assert_int_equal(tl_store_import(st, rt, &n), TL_OK);
    assert_int_equal(n, 0);
    assert_int_equal(query("SELECT count(*) FROM mailbox"), 0);
    tl_tasklet_release(r);
    tl_chan_release(ch);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* A receiver at home A and a sender of value sent back to it through the
 * mailbox, imported as tl_store_import does it but stopped before the
 * restart, the import committed, then "the crash": the store holds sender
 * and receiver both waiting on one channel.  held_check: the receiver is
 * still blocked before the commit (no partner yet). */
static void commit_import_held(int64_t value, int held_check)
{
    nreceived = 0;
    tl_runtime *rt = new_rt("A", 0);
    tl_store *st = open_attached(rt);
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_pin(ch, 1), TL_OK);
    tl_tasklet *r = send_home_through_mailbox(rt, st, ch, value);
    tl_tasklet *back;
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT data FROM mailbox", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(tl__snapshot_import_held(rt, sqlite3_column_blob(s, 0),
                                              (size_t)sqlite3_column_bytes(s, 0), &back), TL_OK);
    sqlite3_finalize(s);
    sqlite3_close(db);
    if (held_check)
        assert_int_equal(tl_tasklet_state(r), TL_BLOCKED); /* held: no partner yet */
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_tasklet_release(r);
    tl_chan_release(ch);
    tl_store_close(st);
    tl_runtime_free(rt); /* "the crash" after the import's commit */
}

/* Committed with the imported sender still waiting beside the receiver
 * (what a crash right after the import's commit leaves): the restore
 * completes the rendezvous. */
static void test_restore_completes_rendezvous(void **state)
{
    (void)state;
    commit_import_held(9, 1);
    tl_runtime *rt = new_rt("A", 0);
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(nreceived, 1);
    assert_int_equal(received[0], 9);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* The rendezvous a restore completes is a change: the next checkpoint
 * rewrites the channel's chunk as well as its tasklets' (the channel's
 * stored record still lists both waiters), so that checkpoint restores. */
static void test_restored_rendezvous_is_written(void **state)
{
    (void)state;
    commit_import_held(5, 0);
    tl_runtime *rt = new_rt("A", 0);
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_restore(st), TL_OK); /* the rendezvous completes */
    int64_t first = tl_store_last_checkpoint(st);
    assert_int_equal(tl_store_checkpoint(st), TL_OK); /* both runnable, nothing ran */
    assert_int_equal(tl_store_last_checkpoint(st), first + 1);
    tl_store_close(st);
    tl_runtime_free(rt); /* a crash before they run */

    rt = new_rt("A", 0);
    st = open_attached(rt);
    int rc = tl_store_restore(st);
    if (rc != TL_OK)
        fail_msg("restore: %s", tl_store_errmsg(st));
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(nreceived, 1);
    assert_int_equal(received[0], 5);
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_dead_letters(void **state)
{
    (void)state;
    tl_runtime *a = new_rt("A", 1);
    tl_store *st = open_attached(a);
    tl_tasklet *t1, *t2;
    assert_int_equal(tl_spawn(a, &only_there_fn, &(io_t){0}, sizeof(io_t), &t1), TL_OK);
    tl_chan *ch;
    assert_int_equal(tl_chan_new(a, 4, &ch), TL_OK);
    assert_int_equal(tl_spawn(a, &sender_fn, &(io_t){.ch = ch, .v = tl_i64(3)}, sizeof(io_t),
                              &t2), TL_OK);
    assert_int_equal(tl_store_export(st, t1, "B"), TL_OK);
    assert_int_equal(tl_store_export(st, t2, "B"), TL_OK);
    tl_tasklet_release(t1);
    tl_tasklet_release(t2);
    tl_chan_release(ch);
    tl_store_close(st);
    tl_runtime_free(a);

    /* B lacks import.only_there: that row is refused, the other comes in */
    tl_runtime *b = new_rt("B", 0);
    st = open_attached(b);
    size_t n = 0;
    assert_int_equal(tl_store_import(st, b, &n), TL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(tl_tasklet_count(b), 1);
    const char *msg = tl_store_errmsg(st);
    assert_non_null(strstr(msg, "dead letter"));
    assert_non_null(strstr(msg, "TL_ENOFUNC"));
    assert_int_equal(query("SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(query("SELECT count(*) FROM mailbox_refused WHERE reason LIKE "
                           "'TL_ENOFUNC%import.only_there%'"), 1);
    /* it no longer blocks anything */
    assert_int_equal(tl_store_import(st, b, &n), TL_OK);
    assert_int_equal(n, 0);
    assert_string_equal(tl_store_errmsg(st), "no error");
    tl_store_close(st);
    tl_runtime_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_import_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_completes_rendezvous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restored_rendezvous_is_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letters, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
