/*
 * order_saga.c -- an order workflow with compensation, durable through
 * kill -9 (docs/API.md, "Workflows").
 *
 *   order_saga DB BANK N [SLEEP_S [WAIT_S]]
 *
 * Starts workflows order-1 .. order-N (idempotently: run it again and it
 * starts none twice).  Each reserves stock (a transactional step on the
 * store's own database), charges a card (a step writing BANK, idempotent
 * by its key), waits up to WAIT_S seconds (default 120) for the topic
 * "shipped" (posted from outside: tasklet send DB order-K shipped '{}'),
 * sleeps SLEEP_S seconds (default 2) durably and confirms.  Orders whose
 * number is a multiple of 7 are declined at charge time; those and the
 * ones never shipped are compensated (refund, stock released).  Prints
 * "done N" and a summary once every order is final (each one that is not
 * done named on stderr, exit status 1).  It may be killed at any instant
 * and run again.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasklet.h"
#include "tasklet_workflow.h"

/* ---- the bank: a separate SQLite file (not user code of the saga) ---- */

static const char *bank_path;

static int bank_exec(tl_wf_ctx *cx, const char *sql, int64_t order, int64_t amount)
{
    sqlite3 *db;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_open(bank_path, &db);
    sqlite3_busy_timeout(db, 10000);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, order);
        sqlite3_bind_text(s, 2, tl_wf_ctx_key(cx), -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, amount);
        rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    }
    sqlite3_finalize(s);
    rc = rc == SQLITE_OK ? TL_OK : tl_wf_ctx_fail(cx, TL_EUSER - 1, sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc;
}

static int store_exec(tl_wf_ctx *cx, const char *fmt, int64_t order)
{
    char sql[160];
    snprintf(sql, sizeof sql, fmt, (long long)order);
    return sqlite3_exec(tl_wf_ctx_db(cx), sql, NULL, NULL, NULL) == SQLITE_OK ? TL_OK : TL_EUSER;
}

/* ---- user code: steps and the workflow ---- */

static int reserve(tl_wf_ctx *cx, tl_value order, tl_value *res)
{
    *res = tl_bool(1);
    return store_exec(cx, "INSERT INTO reservations VALUES(%lld, 'held')", tl_as_i64(order));
}
static int release(tl_wf_ctx *cx, tl_value order, tl_value *res)
{
    *res = tl_bool(1);
    return store_exec(cx, "UPDATE reservations SET state = 'released' WHERE id = %lld",
                      tl_as_i64(order));
}
static int confirm(tl_wf_ctx *cx, tl_value order, tl_value *res)
{
    *res = tl_bool(1);
    return store_exec(cx, "UPDATE reservations SET state = 'confirmed' WHERE id = %lld",
                      tl_as_i64(order));
}
static int charge(tl_wf_ctx *cx, tl_value order, tl_value *res)
{
    int64_t k = tl_as_i64(order);
    int rc = bank_exec(cx, "INSERT INTO attempts VALUES(?1, ?2)", k, 0);
    if (rc == TL_OK && k % 7 == 0)
        return tl_wf_ctx_fail(cx, TL_EUSER, "card declined");
    if (rc == TL_OK) /* the key makes a second charge a no-op */
        rc = bank_exec(cx, "INSERT OR IGNORE INTO charges VALUES(?1, ?2, ?3)", k, 100 + k);
    *res = tl_i64(100 + k);
    return rc;
}
static int refund(tl_wf_ctx *cx, tl_value order, tl_value *res)
{
    *res = tl_bool(1);
    return bank_exec(cx, "INSERT OR IGNORE INTO refunds VALUES(?1, ?2)", tl_as_i64(order), 0);
}

static const tl_wf_step s_reserve = {"reserve", reserve, TL_WF_TX, 5, 10, 1000, 0};
static const tl_wf_step s_release = {"release", release, TL_WF_TX, 5, 10, 1000, 0};
static const tl_wf_step s_confirm = {"confirm", confirm, TL_WF_TX, 5, 10, 1000, 0};
static const tl_wf_step s_charge = {"charge", charge, 0, 3, 50, 1000, 30000};
static const tl_wf_step s_refund = {"refund", refund, 0, 10, 50, 1000, 30000};

typedef struct order_t {
    tl_value arg, r, msg; /* arg: [order number, sleep seconds, wait seconds] */
} order_t;
static const tl_field order_fields[] = {TL_FIELD(order_t, arg, TL_T_VALUE),
                                        TL_FIELD(order_t, r, TL_T_VALUE),
                                        TL_FIELD(order_t, msg, TL_T_VALUE)};

static tl_status order(tl_frame *f, void *locals)
{
    order_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_WF_STEP(f, &s_reserve, tl_array_at(L->arg, 0), L->r);
    TL_WF_STEP(f, &s_charge, tl_array_at(L->arg, 0), L->r);
    if (tl_frame_error(f))
        goto release;
    TL_WF_RECV(f, "shipped", tl_as_i64(tl_array_at(L->arg, 2)) * 1000, L->msg);
    if (tl_frame_error(f))
        goto refund;
    TL_SLEEP(f, tl_as_i64(tl_array_at(L->arg, 1)) * 1000);
    TL_WF_STEP(f, &s_confirm, tl_array_at(L->arg, 0), L->r);
    TL_RETURN(f, tl_i64(1)); /* confirmed */
refund:
    TL_WF_STEP(f, &s_refund, tl_array_at(L->arg, 0), L->r);
release:
    TL_WF_STEP(f, &s_release, tl_array_at(L->arg, 0), L->r);
    TL_RETURN(f, tl_i64(0)); /* compensated */
    TL_END(f);
}
static const tl_func order_fn = {"saga.order", 1, order, sizeof(order_t), order_fields, 3, NULL};

/* ---- the program ---- */

static int setup_tables(tl_store *st, const char *db)
{
    (void)st;
    sqlite3 *b;
    if (sqlite3_open(db, &b) != SQLITE_OK)
        return -1;
    sqlite3_busy_timeout(b, 10000);
    int rc = sqlite3_exec(b, "PRAGMA journal_mode=WAL;"
                          "CREATE TABLE IF NOT EXISTS charges(order_id INTEGER PRIMARY KEY,"
                          " key TEXT NOT NULL, amount INTEGER NOT NULL);"
                          "CREATE TABLE IF NOT EXISTS attempts(order_id INTEGER, key TEXT);"
                          "CREATE TABLE IF NOT EXISTS refunds(order_id INTEGER PRIMARY KEY,"
                          " key TEXT)", NULL, NULL, NULL);
    sqlite3_close(b);
    return rc == SQLITE_OK ? 0 : -1;
}

static int fail(const char *what, const char *msg)
{
    fprintf(stderr, "order_saga: %s: %s\n", what, msg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4 || atoi(argv[3]) < 1)
        return fprintf(stderr, "usage: order_saga DB BANK N [SLEEP_S [WAIT_S]]\n"), 2;
    int n = atoi(argv[3]), sleep_s = argc > 4 ? atoi(argv[4]) : 2;
    int wait_s = argc > 5 ? atoi(argv[5]) : 120;
    bank_path = argv[2];
    tl_runtime *rt;
    tl_store *st;
    tl_wf *wf;
    if (setup_tables(NULL, bank_path) != 0)
        return fail("bank", "cannot create its tables");
    tl_runtime_new(NULL, &rt);
    if (tl_store_open(argv[1], 0, &st) != TL_OK)
        return fail("store", tl_store_errmsg(st));
    if (tl_wf_new(rt, st, NULL, &wf) != TL_OK)
        return fail("engine", tl_errmsg(rt));
    const tl_wf_step *steps[] = {&s_reserve, &s_release, &s_confirm, &s_charge, &s_refund};
    for (size_t i = 0; i < 5; i++)
        tl_wf_register_step(wf, steps[i]);
    tl_wf_register(wf, &order_fn);
    if (tl_wf_restore(wf) != TL_OK)
        return fail("restore", tl_wf_errmsg(wf));
    /* the reservations table lives in the store's own database */
    tl_runtime *tmp;
    tl_runtime_new(NULL, &tmp);
    sqlite3 *sdb;
    sqlite3_open(argv[1], &sdb);
    sqlite3_busy_timeout(sdb, 10000);
    sqlite3_exec(sdb, "CREATE TABLE IF NOT EXISTS reservations(id INTEGER PRIMARY KEY,"
                 " state TEXT NOT NULL)", NULL, NULL, NULL);
    sqlite3_close(sdb);
    for (int k = 1; k <= n; k++) {
        char id[32];
        tl_value kv[3] = {tl_i64(k), tl_i64(sleep_s), tl_i64(wait_s)}, arg;
        snprintf(id, sizeof id, "order-%d", k);
        tl_array_new(rt, kv, 3, &arg);
        int rc = tl_wf_start(wf, id, &order_fn, arg, NULL);
        tl_release(arg);
        if (rc != TL_OK)
            return fail("start", tl_wf_errmsg(wf));
    }
    int rc = tl_wf_run(wf, -1);
    if (rc != TL_OK)
        return fail("run", tl_wf_errmsg(wf));
    int confirmed = 0, compensated = 0, other = 0;
    for (int k = 1; k <= n; k++) {
        char id[32];
        tl_wf_info in;
        memset(&in, 0, sizeof in);
        snprintf(id, sizeof id, "order-%d", k);
        int got = tl_wf_get(tmp, argv[1], id, 0, &in);
        if (got == TL_OK && in.status == TL_WF_DONE) {
            tl_as_i64(in.result) ? confirmed++ : compensated++;
        } else {
            other++;
            fprintf(stderr, "order_saga: %s is not done: %s %s\n", id,
                    got == TL_OK ? tl_wf_status_name(in.status) : "unreadable",
                    got == TL_OK ? in.errmsg : tl_errmsg(tmp));
        }
        tl_release(in.result);
    }
    printf("done %d\nconfirmed %d compensated %d other %d\n", n, confirmed, compensated, other);
    tl_wf_free(wf);
    tl_store_close(st);
    tl_runtime_free(rt);
    tl_runtime_free(tmp);
    return other ? 1 : 0;
}
