/*
 * worker.c -- one worker of the many-worker test (tests/pg/torture.c):
 *   pg-worker DIR
 * with TL_PG_URL the database.  DIR is a schema holding the run's
 * directory (dir: one row per workflow store, done or not) and its logs
 * (exec: every execution of a step, with the executing claim's epoch;
 * done: every completion committed; stats: per worker, claims and late
 * writes refused).  The worker LISTENs, then repeatedly goes round the
 * workflows not done in random order, attaching to one nobody holds,
 * running it step by step with a checkpoint after each step, until it
 * ends or the store is taken away (TL_ELOCKED: counted as a late write
 * refused).  With nothing to claim it waits on the listener; it exits 0
 * once every workflow is done.
 *
 * The steps' rows reach the store through a participant, in the
 * checkpoint's transaction; the logs go through a connection of its own,
 * outside it (so they see executions that never committed).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "../../persist/persist.h"
#include "pgflow.h"

static const tl__table steps_table = {"flow_steps", "key", "peer", "time", "data"};

static PGconn *logc;
static const char *dirs;
static char cur[80];   /* the workflow being run */
static int64_t epoch;  /* the claim's epoch */
static struct pending {
    int64_t k, exec;
} pend[64];
static int npend, finished, rejected, claims;

static void die(const char *what)
{
    fprintf(stderr, "pg-worker %d: %s: %s\n", (int)getpid(), what, PQerrorMessage(logc));
    exit(3);
}

static PGresult *logq(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A query on the log connection (every name in it is ours). */
static PGresult *logq(const char *fmt, ...)
{
    char sql[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(logc, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql);
    return r;
}

static void on_step(int64_t k)
{
    PGresult *r = logq("INSERT INTO %s.exec(wf, step, epoch, pid) VALUES ('%s', %lld, %lld, %d) "
                       "RETURNING id", dirs, cur, (long long)k, (long long)epoch, (int)getpid());
    if (npend < 64)
        pend[npend++] = (struct pending){k, strtoll(PQgetvalue(r, 0, 0), NULL, 10)};
    PQclear(r);
}

static int part_write(void *ud, tl__store_tx *tx)
{
    (void)ud;
    int rc = TL_OK;
    for (int i = 0; i < npend && rc == TL_OK; i++) {
        char key[32], data[32];
        snprintf(key, sizeof key, "step-%04lld", (long long)pend[i].k);
        snprintf(data, sizeof data, "%lld", (long long)pend[i].exec);
        tl__row row = {key, "", epoch, data, strlen(data)};
        rc = tl__tx_put(tx, &steps_table, &row);
    }
    if (rc == TL_OK && finished) {
        tl__row row = {"done", "", epoch, "", 0};
        rc = tl__tx_put(tx, &steps_table, &row);
    }
    return rc;
}

static const tl__participant part = {"flow steps", part_write, NULL};

/* A checkpoint, tried again after a lost connection; TL_ELOCKED when the
 * store was taken over. */
static int checkpoint(tl_store *st)
{
    int rc = TL_OK;
    for (int attempt = 0; attempt < 5; attempt++) {
        rc = tl_store_checkpoint(st);
        if (rc == TL_OK || rc == TL_ELOCKED)
            break;
        fprintf(stderr, "pg-worker %d: %s: %s (again)\n", (int)getpid(), cur, tl_store_errmsg(st));
        nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    return rc;
}

static void mark_done(void)
{
    PQclear(logq("UPDATE %s.dir SET done = true WHERE name = '%s'", dirs, cur));
}

enum { BUSY, RAN, LOST };

/* Runs workflow name to its end, if nobody holds it. */
static int run_one(const char *name)
{
    char url[1024];
    const char *base = getenv("TL_PG_URL");
    snprintf(url, sizeof url, "%s%soptions=-csearch_path%%3D%s", base,
             strchr(base, '?') ? "&" : "?", name);
    tl_runtime *rt;
    tl_store *st;
    if (tl_runtime_new(NULL, &rt) != TL_OK || tl_register(rt, &flow_fn) != TL_OK)
        exit(4);
    int rc = tl_store_open(url, 0, &st);
    if (rc == TL_OK)
        rc = tl_store_attach(st, rt);
    if (rc != TL_OK) {
        tl_store_close(st);
        tl_runtime_free(rt);
        return BUSY;
    }
    claims++;
    snprintf(cur, sizeof cur, "%s", name);
    PGresult *r = logq("SELECT value FROM %s.meta WHERE key = 'epoch'", name);
    epoch = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    npend = 0;
    finished = 0;
    tl__store_join(st, &part, NULL);
    rc = tl_store_restore(st);
    int out = RAN;
    if (rc != TL_OK) {
        fprintf(stderr, "pg-worker %d: %s: restore: %s\n", (int)getpid(), name,
                tl_store_errmsg(st));
        exit(5);
    }
    while (out == RAN && tl_tasklet_count(rt) > 0) {
        if (tl_run_steps(rt, 1, NULL) != TL_OK)
            exit(6);
        finished = tl_tasklet_count(rt) == 0;
        rc = checkpoint(st);
        if (rc == TL_ELOCKED) {
            rejected++;
            PQclear(logq("UPDATE %s.stats SET rejected = rejected + 1 WHERE pid = %d", dirs,
                         (int)getpid()));
            out = LOST;
        } else if (rc != TL_OK) {
            exit(7);
        } else {
            npend = 0;
        }
    }
    if (out == RAN && finished)
        PQclear(logq("INSERT INTO %s.done VALUES ('%s', %d, %lld)", dirs, name, (int)getpid(),
                     (long long)epoch));
    if (out == RAN)
        mark_done();
    tl_store_close(st);
    tl_runtime_free(rt);
    return out;
}

/* One round over the workflows not done; how many are left. */
static int round_robin(int *ran)
{
    PGresult *r = logq("SELECT name FROM %s.dir WHERE NOT done ORDER BY random()", dirs);
    int n = PQntuples(r);
    *ran = 0;
    for (int i = 0; i < n && !*ran; i++) /* after one, look again */
        if (run_one(PQgetvalue(r, i, 0)) != BUSY)
            (*ran)++;
    PQclear(r);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 2 || !getenv("TL_PG_URL")) {
        fprintf(stderr, "usage: TL_PG_URL=... pg-worker DIRSCHEMA\n");
        return 2;
    }
    dirs = argv[1];
    logc = PQconnectdb(getenv("TL_PG_URL"));
    if (PQstatus(logc) != CONNECTION_OK)
        die("connect");
    PQclear(logq("SET synchronous_commit = off"));
    PQclear(logq("INSERT INTO %s.stats VALUES (%d, 0)", dirs, (int)getpid()));
    flow_on_step = on_step;
    tl_store_listener *l;
    if (tl_store_listen(getenv("TL_PG_URL"), &l) != TL_OK) {
        fprintf(stderr, "pg-worker: %s\n", tl_store_listener_errmsg(l));
        return 3;
    }
    int ran, left;
    while ((left = round_robin(&ran)) > 0)
        if (!ran) /* all held by others: wait for a release; a death is not
                   * announced, so look again after 250 ms at the latest */
            tl_store_listener_wait(l, 250, NULL, 0);
    tl_store_listener_free(l);
    PQfinish(logc);
    printf("pg-worker %d: %d claims, %d late writes refused\n", (int)getpid(), claims, rejected);
    return 0;
}
