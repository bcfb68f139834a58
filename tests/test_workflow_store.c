/*
 * test_workflow_store.c -- the shape of the workflow tables (FORMAT.md
 * section 11): new stores get WITHOUT ROWID tables `wf` and `wf_step`
 * with no other index; stores made before (rowid tables, index
 * wf_step_wf) keep working: steps, restore, retention and `wf show` find
 * a workflow's steps by key range, and never those of a workflow whose id
 * begins with "<id>#".  The engine looks at the store after another
 * process's (or connection's) post closes its connection, not after its
 * own writes: a post from a child process and one from a thread of the
 * owner's process each wake a tl_wf_run that would otherwise sleep 60 s.
 *
 * Every test runs an engine on a SQLite store in a fresh temporary
 * directory; "a crash" is an engine freed without finishing.
 */
#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tasklet.h"
#include "tasklet_workflow.h"
#include "../persist/store_sqlite.h"

static atomic_int calls;
static _Atomic int64_t clock_skew;

static int64_t skew_clock(void *ud)
{
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + atomic_load(&clock_skew);
}

static int add_one(tl_wf_ctx *cx, tl_value arg, tl_value *res)
{
    (void)cx;
    atomic_fetch_add(&calls, 1);
    *res = tl_i64(tl_as_i64(arg) + 1);
    return TL_OK;
}
static const tl_wf_step add_step = {"add_one", add_one, TL_WF_INLINE, 0, 0, 0, 0};

/* Two steps, then waits for "go" when the argument is negative. */
typedef struct two_t {
    tl_value arg, r1, r2, m;
} two_t;
static const tl_field two_fields[] = {
    TL_FIELD(two_t, arg, TL_T_VALUE), TL_FIELD(two_t, r1, TL_T_VALUE),
    TL_FIELD(two_t, r2, TL_T_VALUE), TL_FIELD(two_t, m, TL_T_VALUE)};
static tl_status two_steps(tl_frame *f, void *l)
{
    two_t *L = l;
    TL_BEGIN(f);
    TL_WF_STEP(f, &add_step, L->arg, L->r1);
    TL_WF_STEP(f, &add_step, L->r1, L->r2);
    if (tl_as_i64(L->arg) < 0)
        TL_WF_RECV(f, "go", -1, L->m);
    TL_RETURN(f, L->r2);
    TL_END(f);
}
static const tl_func two_fn = {"t.two", 1, two_steps, sizeof(two_t), two_fields, 4, NULL};

typedef struct eng {
    char dir[64], path[96];
    tl_runtime *rt;
    tl_store *st;
    tl_wf *wf;
} eng;

/* The tables as stores made before this shape have them. */
static const char old_schema[] =
    "CREATE TABLE wf(id TEXT PRIMARY KEY, status TEXT NOT NULL,"
    " updated INTEGER NOT NULL, rec BLOB NOT NULL);"
    "CREATE TABLE wf_step(key TEXT PRIMARY KEY, wf TEXT NOT NULL,"
    " time INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE INDEX wf_step_wf ON wf_step(wf);";

static void eng_open(eng *e, int old_shape, int restore)
{
    if (!e->dir[0]) {
        snprintf(e->dir, sizeof e->dir, "/tmp/tl_wfst_XXXXXX");
        assert_non_null(mkdtemp(e->dir));
        snprintf(e->path, sizeof e->path, "%s/s.db", e->dir);
    }
    tl_config cfg = {0};
    cfg.clock = skew_clock;
    assert_int_equal(tl_runtime_new(&cfg, &e->rt), TL_OK);
    assert_int_equal(tl_store_open(e->path, TL_STORE_NOSYNC, &e->st), TL_OK);
    if (old_shape)
        assert_int_equal(sqlite3_exec(tl__store_sqlite(e->st), old_schema, NULL, NULL, NULL),
                         SQLITE_OK);
    tl_wf_config wc = {0};
    wc.retention_ms = 60000;
    assert_int_equal(tl_wf_new(e->rt, e->st, &wc, &e->wf), TL_OK);
    assert_int_equal(tl_wf_register(e->wf, &two_fn), TL_OK);
    assert_int_equal(tl_wf_register_step(e->wf, &add_step), TL_OK);
    if (restore)
        assert_int_equal(tl_wf_restore(e->wf), TL_OK);
}

static void eng_close(eng *e)
{
    tl_wf_free(e->wf);
    tl_store_close(e->st);
    tl_runtime_free(e->rt);
    e->wf = NULL;
}

static void eng_done(eng *e)
{
    if (e->wf)
        eng_close(e);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", e->dir);
    assert_int_equal(system(cmd), 0);
}

static int64_t count(eng *e, const char *sql)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(tl__store_sqlite(e->st), sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

/* Runs until id is final (bounded by a wall-clock deadline). */
static int run_until_final(eng *e, const char *id)
{
    tl_wf_info in;
    for (int64_t t0 = skew_clock(NULL);;) {
        int rc = tl_wf_run(e->wf, 20);
        assert_true(rc == TL_OK || rc == TL_ETIMEDOUT);
        assert_int_equal(tl_wf_get(e->rt, e->path, id, 0, &in), TL_OK);
        tl_release(in.result);
        if (in.status >= TL_WF_DONE)
            return in.status;
        if (skew_clock(NULL) - t0 > 60000000000)
            fail_msg("%s never finished", id);
    }
}

/* New stores: WITHOUT ROWID, no index on wf_step(wf). */
static void test_new_shape(void **state)
{
    (void)state;
    eng e = {0};
    eng_open(&e, 0, 1);
    assert_int_equal(count(&e, "SELECT count(*) FROM sqlite_master WHERE name IN ('wf', "
                               "'wf_step') AND sql LIKE '%WITHOUT ROWID'"), 2);
    assert_int_equal(count(&e, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                               "tbl_name IN ('wf', 'wf_step')"), 0);
    eng_done(&e);
}

/* Steps, a crash and restore, a message, retention and `wf show` on one
 * shape: workflow "a" (steps a#1, a#2) finishes first and goes with the
 * retention; "a#1" (steps a#1#1, a#1#2, inside a's key range) stays. */
static void shape_round(int old_shape)
{
    eng e = {0};
    atomic_store(&clock_skew, 0);
    atomic_store(&calls, 0);
    eng_open(&e, old_shape, 1);
    assert_int_equal(tl_wf_start(e.wf, "a", &two_fn, tl_i64(1), NULL), TL_OK);
    assert_int_equal(run_until_final(&e, "a"), TL_WF_DONE);
    atomic_store(&clock_skew, 30000000000); /* 30 s later: a is kept */
    assert_int_equal(tl_wf_start(e.wf, "a#1", &two_fn, tl_i64(-1), NULL), TL_OK);
    for (int64_t t0 = skew_clock(NULL); count(&e, "SELECT count(*) FROM wf_step") < 4;) {
        if (skew_clock(NULL) - t0 > 60000000000)
            fail_msg("the steps of a#1 were never recorded");
        int rc = tl_wf_run(e.wf, 20);
        assert_true(rc == TL_OK || rc == TL_ETIMEDOUT);
    }
    eng_close(&e); /* a crash while a#1 waits */
    eng_open(&e, 0, 1);
    atomic_store(&clock_skew, 100000000000); /* a#1 finishes at 100 s */
    assert_int_equal(tl_wf_post(NULL, e.path, "a#1", "go", tl_i64(0), NULL), TL_OK);
    assert_int_equal(run_until_final(&e, "a#1"), TL_WF_DONE);
    assert_int_equal(atomic_load(&calls), 4); /* recorded steps never ran again */
    atomic_store(&clock_skew, 130000000000); /* a is 130 s old, a#1 30 s */
    assert_int_equal(tl_wf_start(e.wf, "n", &two_fn, tl_i64(1), NULL), TL_OK);
    assert_int_equal(run_until_final(&e, "n"), TL_WF_DONE);
    assert_int_equal(count(&e, "SELECT count(*) FROM wf WHERE id = 'a'"), 0);
    assert_int_equal(count(&e, "SELECT count(*) FROM wf_step WHERE wf = 'a'"), 0);
    assert_int_equal(count(&e, "SELECT count(*) FROM wf_step WHERE wf = 'a#1'"), 2);
    assert_int_equal(count(&e, "SELECT count(*) FROM sqlite_master WHERE name = 'wf_step_wf'"),
                     old_shape);
    const char *cli = getenv("TASKLET_CLI");
    if (cli) {
        char cmd[512], out[4096] = "";
        snprintf(cmd, sizeof cmd, "%s wf show %s 'a#1'", cli, e.path);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        assert_int_equal(pclose(p), 0);
        assert_non_null(strstr(out, "a#1#1"));
        assert_non_null(strstr(out, "a#1#2"));
    }
    atomic_store(&clock_skew, 0);
    eng_done(&e);
}

static void test_new_shape_round(void **state)
{
    (void)state;
    shape_round(0);
}

/* A store made before keeps its shape (the engine creates nothing over
 * it) and works the same. */
static void test_old_shape_round(void **state)
{
    (void)state;
    shape_round(1);
}

/* A post made 50 ms after it starts, from a thread of this process. */
static void *post_later(void *path)
{
    usleep(50000);
    if (tl_wf_post(NULL, path, "w", "go", tl_i64(1), NULL) != TL_OK)
        abort();
    return NULL;
}

/* Waits in tl_wf_run (60 s: nothing else wakes it) for the post that
 * finishes workflow w; from a child process, or else from a thread. */
static void woken_by(int child)
{
    eng e = {0};
    atomic_store(&clock_skew, 0);
    eng_open(&e, 0, 1);
    assert_int_equal(tl_wf_start(e.wf, "w", &two_fn, tl_i64(-1), NULL), TL_OK);
    assert_int_equal(tl_wf_commit(e.wf), TL_OK);
    assert_int_equal(tl_wf_run(e.wf, 0), TL_ETIMEDOUT); /* its steps done, waiting */
    pthread_t th;
    pid_t p = -1;
    if (child) {
        p = fork();
        assert_true(p >= 0);
        if (p == 0) {
            usleep(50000);
            _exit(tl_wf_post(NULL, e.path, "w", "go", tl_i64(1), NULL) == TL_OK ? 0 : 1);
        }
    } else {
        assert_int_equal(pthread_create(&th, NULL, post_later, e.path), 0);
    }
    assert_int_equal(tl_wf_run(e.wf, 60000), TL_OK); /* every workflow finished */
    if (child) {
        int ws;
        assert_int_equal(waitpid(p, &ws, 0), p);
        assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    } else {
        pthread_join(th, NULL);
    }
    eng_done(&e);
}

static void test_woken_by_other_process(void **state)
{
    (void)state;
    woken_by(1);
}

static void test_woken_by_own_thread(void **state)
{
    (void)state;
    woken_by(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_shape),
        cmocka_unit_test(test_new_shape_round),
        cmocka_unit_test(test_old_shape_round),
        cmocka_unit_test(test_woken_by_other_process),
        cmocka_unit_test(test_woken_by_own_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
