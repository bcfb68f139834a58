/*
 * storetest.h -- what the store tests share: a temporary directory with
 * the store path in it (STORETEST_PREFIX names it), a store opened and
 * attached or the test fails saying why, and SQL run on the store file
 * from outside, as another program would.
 */
#ifndef TL_STORETEST_H
#define TL_STORETEST_H

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

#include "tasklet.h"

#ifndef STORETEST_PREFIX
#define STORETEST_PREFIX "tl-store"
#endif

static char dir[64];
static char path[128];

static inline int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/" STORETEST_PREFIX "-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/app.db", dir);
    return 0;
}

static inline int teardown(void **state)
{
    char cmd[160];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The store at path, opened with flags and attached to rt. */
static inline tl_store *attach_at(tl_runtime *rt, int flags)
{
    tl_store *st;
    int rc = tl_store_open(path, flags, &st);
    if (rc != TL_OK)
        fail_msg("open: %s", tl_store_errmsg(st));
    rc = tl_store_attach(st, rt);
    if (rc != TL_OK)
        fail_msg("attach: %s", tl_store_errmsg(st));
    return st;
}

/* The first column of the first row of a query on the store file, -1
 * when there is none. */
static inline int64_t query(const char *text)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_prepare_v2(db, text, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static inline void sql(const char *text)
{
    sqlite3 *db;
    char *err = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, text, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", text, err);
    sqlite3_close(db);
}

#endif
