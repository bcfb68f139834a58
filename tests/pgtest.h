/*
 * pgtest.h -- what the PostgreSQL store tests share: the server from
 * TL_PG_URL (tests/pg/with-postgres.sh starts one), a fresh schema per
 * test with the store URL that selects it (url), and SQL run in that
 * schema from outside, as another program would.
 *
 * Without TL_PG_URL (or in a build without libpq) the program says it was
 * skipped and exits 77, meson's code for a skipped test; with
 * TL_PG_REQUIRED=1 (CI) that is a failure instead.
 */
#ifndef TL_PGTEST_H
#define TL_PGTEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef TL_HAVE_PG
#include <libpq-fe.h>
#endif

/* Exits 77 (skipped) or 1 (required) unless a server is there; prints
 * why either way. */
static inline void pgtest_require(const char *name)
{
    const char *why = NULL;
#ifndef TL_HAVE_PG
    why = "this build has no PostgreSQL backend (libpq was not found)";
#else
    if (!getenv("TL_PG_URL") || !*getenv("TL_PG_URL"))
        why = "TL_PG_URL is not set (run it under tests/pg/with-postgres.sh)";
#endif
    if (!why)
        return;
    const char *req = getenv("TL_PG_REQUIRED");
    if (req && *req && strcmp(req, "0") != 0) {
        fprintf(stderr, "%s: FAILED: %s, and TL_PG_REQUIRED is set\n", name, why);
        exit(1);
    }
    printf("%s: skipped: %s\n", name, why);
    exit(77);
}

#ifdef TL_HAVE_PG
static PGconn *pgt_conn;   /* the tests' own connection, in the test's schema */
static char pgt_schema[64];
static char url[1024];      /* the store's location: the test's schema */

static inline PGconn *pgtest_connect(void)
{
    PGconn *c = PQconnectdb(getenv("TL_PG_URL"));
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pgtest: cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static inline int pgtest_exec(PGconn *c, const char *text)
{
    PGresult *r = PQexec(c, text);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "pgtest: %s: %s", text, PQerrorMessage(c));
    PQclear(r);
    return ok ? 0 : -1;
}

/* The URL of schema name on the test server. */
static inline void pgtest_url(char *out, size_t n, const char *name)
{
    const char *base = getenv("TL_PG_URL");
    snprintf(out, n, "%s%soptions=-csearch_path%%3D%s", base, strchr(base, '?') ? "&" : "?",
             name);
}

static inline int setup(void **state)
{
    static int seq;
    char cmd[200];
    (void)state;
    if (!(pgt_conn = pgtest_connect()))
        return -1;
    snprintf(pgt_schema, sizeof pgt_schema, "tlt_%d_%d", (int)getpid(), ++seq);
    pgtest_url(url, sizeof url, pgt_schema);
    snprintf(cmd, sizeof cmd, "CREATE SCHEMA %s; SET search_path = %s", pgt_schema, pgt_schema);
    return pgtest_exec(pgt_conn, cmd);
}

static inline int teardown(void **state)
{
    char cmd[120];
    (void)state;
    snprintf(cmd, sizeof cmd, "DROP SCHEMA %s CASCADE", pgt_schema);
    int rc = pgtest_exec(pgt_conn, cmd);
    PQfinish(pgt_conn);
    pgt_conn = NULL;
    return rc;
}

/* The first column of the first row of a query in the test's schema
 * (as text, read as an integer; "t"/"f" as 1/0), -1 when there is none. */
static inline int64_t query(const char *text)
{
    PGresult *r = PQexec(pgt_conn, text);
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
        const char *s = PQgetvalue(r, 0, 0);
        v = !strcmp(s, "t") ? 1 : !strcmp(s, "f") ? 0 : strtoll(s, NULL, 10);
    } else if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "pgtest: %s: %s", text, PQerrorMessage(pgt_conn));
    }
    PQclear(r);
    return v;
}

/* The first column of the first row as text into out ("" when none). */
static inline void query_text(const char *text, char *out, size_t n)
{
    PGresult *r = PQexec(pgt_conn, text);
    snprintf(out, n, "%s", PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0
                               ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

static inline void sql(const char *text) { assert_int_equal(pgtest_exec(pgt_conn, text), 0); }
#endif

#endif
