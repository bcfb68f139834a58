/*
 * worker.c -- one worker of the many-worker test (tests/pg/torture.c):
 *   pg-worker DIR [BATCH]
 * with TL_PG_URL the database.  DIR is a schema holding the run's
 * directory (dir: one row per group store, done or not) and its logs
 * (exec: every execution of a step, with the group, the workflow and the
 * executing claim's epoch; done: every workflow's end committed; stats:
 * per worker, late writes refused).  A group store holds many workflows
 * (tests/pg/pgflow.h), one tasklet each.  The worker LISTENs, then
 * repeatedly goes round the groups not done in random order, attaching to
 * one nobody holds, running its workflows with a checkpoint after every
 * BATCH steps (0, the default: after one round, every runnable workflow of
 * the group one step), until all ended or the store is taken away
 * (TL_ELOCKED: counted as a late write refused).  With nothing to claim it
 * waits on the listener; it exits 0 once every group is done.
 *
 * The steps' rows reach the store through a participant, in the
 * checkpoint's transaction; the logs go through a connection of its own,
 * outside it: a batch's executions are logged before its checkpoint (so
 * the log sees executions that never committed), the ends after it.
 */
#include <signal.h>
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
static int batch;      /* steps per checkpoint; 0: one round of the group */
static char cur[80];   /* the group being run */
static int64_t epoch;  /* the claim's epoch */
static struct pending {
    int64_t wf, k, exec;
} *pend;               /* the steps run since the last checkpoint */
static int64_t *ended; /* the workflows ended since then */
static int npend, nended, cap, rejected, claims;

/* Where the worker is (for the report after a pause): set before each
 * stage; a SIGCONT records the stage it was stopped in. */
enum { P_IDLE, P_CLAIM, P_STEPS, P_LOG, P_CKPT, P_LOGEND, P_DONE, P_CLOSE, P_WAIT };
static const char *const phase_name[] = {"idle", "claim", "steps", "log", "checkpoint",
                                         "log ends", "dir done", "close", "wait"};
static volatile sig_atomic_t phase, cont_phase = -1;
static int reported;

static void on_cont(int sig)
{
    (void)sig;
    if (cont_phase < 0)
        cont_phase = phase;
}

/* After a SIGCONT: one line on what the worker does next in the group,
 * so that a pause that caught nothing can be told apart from a bug. */
static void after_cont(const char *what, int rc, const char *msg)
{
    if (cont_phase < 0 || reported >= 2)
        return;
    reported++;
    printf("pg-worker %d: continued in %s of %s (epoch %lld): %s: %d %s\n", (int)getpid(),
           phase_name[cont_phase], cur, (long long)epoch, what, rc, msg ? msg : "");
    fflush(stdout);
}

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

static void grow(void)
{
    if (npend < cap && nended < cap)
        return;
    cap = cap ? 2 * cap : 64;
    pend = realloc(pend, (size_t)cap * sizeof *pend);
    ended = realloc(ended, (size_t)cap * sizeof *ended);
    if (!pend || !ended)
        exit(4);
}

static void on_step(int64_t wf, int64_t k)
{
    grow();
    pend[npend++] = (struct pending){wf, k, 0};
}

static void on_end(int64_t wf)
{
    grow();
    ended[nended++] = wf;
}

/* Logs what the last steps did, before their checkpoint (so the log also
 * holds executions that never committed): one row each, whose id the
 * checkpoint records with the step.  Or, with done, the workflows whose
 * end just committed. */
static void log_rows(int done)
{
    int n = done ? nended : npend;
    if (n == 0)
        return;
    char *sql = malloc((size_t)n * 120 + 200);
    if (!sql)
        exit(4);
    size_t len = (size_t)sprintf(sql, done ? "INSERT INTO %s.done(wf, grp, pid, epoch) VALUES "
                                           : "INSERT INTO %s.exec(wf, step, grp, epoch, pid) "
                                             "VALUES ", dirs);
    for (int i = 0; i < n; i++) {
        if (done)
            len += (size_t)sprintf(sql + len, "%s(%lld, ", i ? ", " : "", (long long)ended[i]);
        else
            len += (size_t)sprintf(sql + len, "%s(%lld, %lld, ", i ? ", " : "",
                                   (long long)pend[i].wf, (long long)pend[i].k);
        len += (size_t)sprintf(sql + len, "'%s', %lld, %d)", cur, (long long)epoch,
                               (int)getpid());
    }
    if (!done)
        strcpy(sql + len, " RETURNING id, wf, step");
    PGresult *r = PQexec(logc, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql);
    for (int i = 0; !done && i < PQntuples(r); i++) {
        int64_t wf = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        int64_t k = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        for (int j = 0; j < npend; j++)
            if (pend[j].wf == wf && pend[j].k == k && !pend[j].exec)
                pend[j].exec = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    }
    PQclear(r);
    free(sql);
}

static int part_write(void *ud, tl__store_tx *tx)
{
    (void)ud;
    int rc = TL_OK;
    char key[48], data[32];
    for (int i = 0; i < npend && rc == TL_OK; i++) {
        snprintf(key, sizeof key, "w%lld/step-%04lld", (long long)pend[i].wf,
                 (long long)pend[i].k);
        snprintf(data, sizeof data, "%lld", (long long)pend[i].exec);
        tl__row row = {key, "", epoch, data, strlen(data)};
        rc = tl__tx_put(tx, &steps_table, &row);
    }
    for (int i = 0; i < nended && rc == TL_OK; i++) {
        snprintf(key, sizeof key, "w%lld/done", (long long)ended[i]);
        tl__row row = {key, "", epoch, "", 0};
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
        phase = P_CKPT;
        rc = tl_store_checkpoint(st);
        after_cont("checkpoint", rc, rc == TL_OK ? "" : tl_store_errmsg(st));
        if (rc == TL_OK || rc == TL_ELOCKED)
            break;
        fprintf(stderr, "pg-worker %d: %s: %s (again)\n", (int)getpid(), cur, tl_store_errmsg(st));
        nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    return rc;
}

enum { BUSY, RAN, LOST };

/* Opens group name and claims it: NULL when somebody holds it. */
static tl_store *claim(const char *name, tl_runtime *rt)
{
    char url[1024];
    const char *base = getenv("TL_PG_URL");
    snprintf(url, sizeof url, "%s%soptions=-csearch_path%%3D%s", base,
             strchr(base, '?') ? "&" : "?", name);
    tl_store *st;
    int rc = tl_store_open(url, 0, &st);
    if (rc == TL_OK)
        rc = tl_store_attach(st, rt);
    if (rc != TL_OK) {
        tl_store_close(st);
        return NULL;
    }
    claims++;
    snprintf(cur, sizeof cur, "%s", name);
    PGresult *r = logq("SELECT value FROM %s.meta WHERE key = 'epoch'", name);
    epoch = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    npend = nended = 0;
    tl__store_join(st, &part, NULL);
    if (tl_store_restore(st) != TL_OK) {
        fprintf(stderr, "pg-worker %d: %s: restore: %s\n", (int)getpid(), name,
                tl_store_errmsg(st));
        exit(5);
    }
    return st;
}

/* Runs the claimed group to its end, a checkpoint after every batch of
 * steps; LOST when the group was taken over meanwhile. */
static int run_group(tl_runtime *rt, tl_store *st)
{
    while (tl_tasklet_count(rt) > 0) {
        size_t n = tl_runnable_count(rt);
        if (batch > 0 && (size_t)batch < n)
            n = (size_t)batch;
        phase = P_STEPS;
        if (tl_run_steps(rt, n ? n : 1, NULL) != TL_OK)
            exit(6);
        phase = P_LOG;
        log_rows(0);
        int rc = checkpoint(st);
        if (rc == TL_ELOCKED) {
            rejected++;
            PQclear(logq("UPDATE %s.stats SET rejected = rejected + 1 WHERE pid = %d", dirs,
                         (int)getpid()));
            return LOST;
        }
        if (rc != TL_OK)
            exit(7);
        phase = P_LOGEND;
        log_rows(1);
        npend = nended = 0;
    }
    after_cont("group ended", (int)tl_tasklet_count(rt), "");
    return RAN;
}

/* Runs group name to its end, if nobody holds it. */
static int run_one(const char *name)
{
    tl_runtime *rt;
    if (tl_runtime_new(NULL, &rt) != TL_OK || tl_register(rt, &flow_fn) != TL_OK)
        exit(4);
    phase = P_CLAIM;
    tl_store *st = claim(name, rt);
    int out = st ? run_group(rt, st) : BUSY;
    phase = P_DONE;
    if (out == RAN)
        PQclear(logq("UPDATE %s.dir SET done = true WHERE name = '%s'", dirs, name));
    phase = P_CLOSE;
    tl_store_close(st);
    phase = P_IDLE;
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
    if (argc < 2 || argc > 3 || !getenv("TL_PG_URL")) {
        fprintf(stderr, "usage: TL_PG_URL=... pg-worker DIRSCHEMA [BATCH]\n");
        return 2;
    }
    dirs = argv[1];
    batch = argc == 3 ? atoi(argv[2]) : 0;
    logc = PQconnectdb(getenv("TL_PG_URL"));
    if (PQstatus(logc) != CONNECTION_OK)
        die("connect");
    PQclear(logq("SET synchronous_commit = off"));
    PQclear(logq("INSERT INTO %s.stats VALUES (%d, 0)", dirs, (int)getpid()));
    signal(SIGCONT, on_cont);
    flow_on_step = on_step;
    flow_on_end = on_end;
    tl_store_listener *l;
    if (tl_store_listen(getenv("TL_PG_URL"), &l) != TL_OK) {
        fprintf(stderr, "pg-worker: %s\n", tl_store_listener_errmsg(l));
        return 3;
    }
    int ran, left;
    while ((left = round_robin(&ran)) > 0)
        if (!ran) { /* all held by others: wait for a release; a death is
                     * not announced, so look again after 250 ms at the latest */
            phase = P_WAIT;
            tl_store_listener_wait(l, 250, NULL, 0);
            phase = P_IDLE;
        }
    tl_store_listener_free(l);
    PQfinish(logc);
    free(pend);
    free(ended);
    printf("pg-worker %d: %d claims, %d late writes refused\n", (int)getpid(), claims, rejected);
    return 0;
}
