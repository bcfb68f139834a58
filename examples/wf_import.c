/*
 * wf_import.c -- a resumable batch import: a workflow loads N records into
 * a separate SQLite file in chunks, one durable step per chunk, with
 * retries and backoff, printing a progress line; kill it at any instant
 * and run it again, and every record is imported exactly once.
 *
 *   wf_import DB TARGET N [CHUNK]        (CHUNK default 500)
 *
 * The records are generated (record k: id k, an amount from a fixed
 * seed), as if read from a file.  Workflow "import" runs step "load" for
 * chunk 0, 1, ...: the effect logs its attempt in TARGET's table attempts,
 * fails on the first attempt of every fifth chunk ("target busy": it is
 * retried after a backoff), then in one TARGET transaction inserts the
 * chunk's rows into items with INSERT OR IGNORE and, for each row that
 * was new, one row into applied.  A chunk whose step was running when the
 * process died runs again with the same key and inserts nothing twice, so
 * applied ends with one row per record.  The workflow adds up what each
 * chunk returns (its record count and amount total, recorded in the
 * store): run again after it finished, it prints the same last line.
 * docs/API.md, "Durable workflows"; tests/test_import.c kills it.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasklet.h"
#include "tasklet_workflow.h"

static const char *target_path;

/* Record k's amount in cents: a fixed function of k (the "file"). */
static int64_t amount_of(int64_t k)
{
    uint64_t x = (uint64_t)k * 0x9E3779B97F4A7C15u;
    x ^= x >> 31;
    return (int64_t)(x % 100000);
}

static int target_exec(sqlite3 *db, const char *sql, int64_t a, const char *key, int64_t b)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(s, 1, a);
    sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, b);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(s);
    return rc;
}

/* Inserts records [lo, hi) in one transaction; each new one also into
 * applied.  Returns 0, or -1 (rolled back). */
static int insert_chunk(sqlite3 *db, int64_t lo, int64_t hi, const char *key)
{
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -1;
    int rc = 0;
    for (int64_t k = lo; k < hi && rc == 0; k++) {
        rc = target_exec(db, "INSERT OR IGNORE INTO items VALUES(?1, ?2, ?3)", k, key,
                         amount_of(k));
        if (rc == 0 && sqlite3_changes(db) == 1)
            rc = target_exec(db, "INSERT INTO applied VALUES(?1, ?2, ?3)", k, key, 0);
    }
    if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = -1;
    if (rc != 0)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ---- the step and the workflow ---- */

/* arg [chunk, N, CHUNK]; result [records, amount total]. */
static int load(tl_wf_ctx *cx, tl_value arg, tl_value *res)
{
    int64_t c = tl_as_i64(tl_array_at(arg, 0)), n = tl_as_i64(tl_array_at(arg, 1));
    int64_t size = tl_as_i64(tl_array_at(arg, 2)), lo = c * size + 1;
    int64_t hi = lo + size > n + 1 ? n + 1 : lo + size, total = 0;
    sqlite3 *db;
    int rc = sqlite3_open(target_path, &db) == SQLITE_OK ? 0 : -1;
    sqlite3_busy_timeout(db, 10000);
    if (rc == 0)
        rc = target_exec(db, "INSERT INTO attempts VALUES(?1, ?2, ?3)", c, tl_wf_ctx_key(cx),
                         tl_wf_ctx_attempt(cx));
    if (rc == 0 && c % 5 == 2 && tl_wf_ctx_attempt(cx) == 1) {
        sqlite3_close(db);
        return tl_wf_ctx_fail(cx, TL_EUSER, "target busy"); /* retried after a backoff */
    }
    if (rc == 0)
        rc = insert_chunk(db, lo, hi, tl_wf_ctx_key(cx));
    rc = rc == 0 ? TL_OK : tl_wf_ctx_fail(cx, TL_EUSER - 1, sqlite3_errmsg(db));
    sqlite3_close(db);
    for (int64_t k = lo; k < hi; k++)
        total += amount_of(k);
    tl_value kv[2] = {tl_i64(hi - lo), tl_i64(total)};
    return rc == TL_OK ? tl_array_new(tl_wf_ctx_runtime(cx), kv, 2, res) : rc;
}
static const tl_wf_step s_load = {"load", load, 0, 6, 20, 500, 60000};

typedef struct import_t {
    tl_value arg, a, r;   /* arg: [N, CHUNK]; a: the step's argument */
    int64_t chunk, records, total;
} import_t;
static const tl_field import_fields[] = {
    TL_FIELD(import_t, arg, TL_T_VALUE),   TL_FIELD(import_t, a, TL_T_VALUE),
    TL_FIELD(import_t, r, TL_T_VALUE),     TL_FIELD(import_t, chunk, TL_T_I64),
    TL_FIELD(import_t, records, TL_T_I64), TL_FIELD(import_t, total, TL_T_I64)};

/* v = [x, y] (or [x, y, z] with z >= 0) built in f's runtime. */
static int pair(tl_frame *f, tl_value *v, int64_t x, int64_t y, int64_t z)
{
    tl_value kv[3] = {tl_i64(x), tl_i64(y), tl_i64(z)}, out;
    int rc = tl_array_new(tl_frame_runtime(f), kv, z >= 0 ? 3 : 2, &out);
    if (rc == TL_OK)
        tl_value_set(v, out);
    return rc;
}

static tl_status import(tl_frame *f, void *locals)
{
    import_t *L = locals;
    int64_t n = tl_as_i64(tl_array_at(L->arg, 0)), size = tl_as_i64(tl_array_at(L->arg, 1));
    TL_BEGIN(f);
    for (L->chunk = 0; L->chunk * size < n; L->chunk++) {
        if (pair(f, &L->a, L->chunk, n, size) != TL_OK)
            TL_FAIL(f, TL_ENOMEM, "out of memory");
        TL_WF_STEP(f, &s_load, L->a, L->r); /* after its retries, an error ends the import */
        L->records += tl_as_i64(tl_array_at(L->r, 0));
        L->total += tl_as_i64(tl_array_at(L->r, 1));
    }
    if (pair(f, &L->r, L->records, L->total, -1) != TL_OK)
        TL_FAIL(f, TL_ENOMEM, "out of memory");
    TL_RETURN(f, L->r);
    TL_END(f);
}
static const tl_func import_fn = {"import.run", 1, import, sizeof(import_t), import_fields, 6,
                                  NULL};

/* ---- the program ---- */

static int fail(const char *what, const char *msg)
{
    fprintf(stderr, "wf_import: %s: %s\n", what, msg);
    return 1;
}

static int setup_target(const char *path)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    sqlite3_busy_timeout(db, 10000);
    int rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL;"
                          "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, key TEXT,"
                          " amount INTEGER);"
                          "CREATE TABLE IF NOT EXISTS applied(id INTEGER, key TEXT, x INTEGER);"
                          "CREATE TABLE IF NOT EXISTS attempts(chunk INTEGER, key TEXT,"
                          " attempt INTEGER)", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

/* "progress C/T chunks (R/N records)", printed when C changed. */
static void progress(tl_runtime *rt, const char *db, int64_t chunks, int64_t size, int64_t n,
                     int64_t *shown)
{
    tl_wf_info in;
    if (tl_wf_get(rt, db, "import", 0, &in) != TL_OK)
        return;
    tl_release(in.result);
    if (in.steps == *shown)
        return;
    *shown = in.steps;
    int64_t recs = in.steps * size < n ? in.steps * size : n;
    printf("progress %lld/%lld chunks (%lld/%lld records)%s%s\n", (long long)in.steps,
           (long long)chunks, (long long)recs, (long long)n, in.wait[0] ? ", in " : "",
           in.wait);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 4 || atoll(argv[3]) < 1 || (argc > 4 && atoll(argv[4]) < 1))
        return fprintf(stderr, "usage: wf_import DB TARGET N [CHUNK]\n"), 2;
    int64_t n = atoll(argv[3]), size = argc > 4 ? atoll(argv[4]) : 500;
    int64_t chunks = (n + size - 1) / size, shown = -1;
    target_path = argv[2];
    if (setup_target(target_path) != 0)
        return fail("target", "cannot create its tables");
    tl_runtime *rt, *tmp;
    tl_store *st;
    tl_wf *wf;
    tl_runtime_new(NULL, &rt);
    tl_runtime_new(NULL, &tmp);
    if (tl_store_open(argv[1], 0, &st) != TL_OK)
        return fail("store", tl_store_errmsg(st));
    if (tl_wf_new(rt, st, NULL, &wf) != TL_OK)
        return fail("engine", tl_errmsg(rt));
    tl_wf_register_step(wf, &s_load);
    tl_wf_register(wf, &import_fn);
    if (tl_wf_restore(wf) != TL_OK)
        return fail("restore", tl_wf_errmsg(wf));
    tl_value kv[2] = {tl_i64(n), tl_i64(size)}, arg;
    tl_array_new(rt, kv, 2, &arg);
    int rc = tl_wf_start(wf, "import", &import_fn, arg, NULL); /* once: the id is stable */
    tl_release(arg);
    if (rc != TL_OK)
        return fail("start", tl_wf_errmsg(wf));
    while ((rc = tl_wf_run(wf, 200)) == TL_ETIMEDOUT)
        progress(tmp, argv[1], chunks, size, n, &shown);
    if (rc != TL_OK)
        return fail("run", tl_wf_errmsg(wf));
    progress(tmp, argv[1], chunks, size, n, &shown);
    tl_wf_info in;
    rc = tl_wf_get(tmp, argv[1], "import", 0, &in);
    if (rc != TL_OK || in.status != TL_WF_DONE)
        return fail("import", rc == TL_OK ? in.errmsg : tl_errmsg(tmp));
    printf("done %lld records, amount total %lld\n", (long long)tl_as_i64(tl_array_at(in.result, 0)),
           (long long)tl_as_i64(tl_array_at(in.result, 1)));
    tl_release(in.result);
    tl_wf_free(wf);
    tl_store_close(st);
    tl_runtime_free(rt);
    tl_runtime_free(tmp);
    return 0;
}
