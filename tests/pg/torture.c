/*
 * torture.c -- many workers on one PostgreSQL database (issue 14): seeds
 * FLOWS workflows (tests/pg/pgflow.h, STEPS steps each) in stores of
 * GROUP workflows each (a worker claims a store: a group), starts
 * WORKERS worker processes (tests/pg/worker.c) and, in the chaos mode,
 * kills workers with SIGKILL at random instants (each replaced at once) and
 * pauses one with SIGSTOP past its lease before resuming it.  Then checks:
 * every workflow completed (its store holds every step and "done", and
 * its end was logged at most once), no recorded step was run again by a
 * later owner, the paused worker's late writes were refused (counted), and
 * no worker is left waiting.  Prints its figures (steps/s, executions,
 * kills, refusals).
 *
 *   pg-torture WORKER [--workers N] [--flows F] [--group G] [--batch B]
 *              [--steps S] [--kills K] [--pause] [--lease MS] [--failover]
 * Defaults: 4 workers, 10,000 workflows of 10 steps in groups of 50 (a
 * store, a schema, per group: 200 stores), a checkpoint per round of a
 * group (--batch B: every B steps instead), 12 kills, a lease of 1.5 s.
 * --failover measures instead how long a killed owner's workflows take to
 * resume elsewhere (one group, two workers).  TL_PG_URL names the
 * database (tests/pg/with-postgres.sh); without it, exit 77 (skipped).
 * Waits are on events or generous wall-clock deadlines, never on speed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h> /* pgtest.h's assertions */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../pgtest.h"
#include "pgflow.h"

#ifndef TL_HAVE_PG
int main(void)
{
    pgtest_require("pg_workers");
    return 77;
}
#else

#define MAXW 16

static struct {
    const char *worker;
    int workers, flows, group, batch, steps, kills, pause, failover;
    int64_t lease;
} opt = {NULL, 4, 10000, 50, 0, 10, 12, 0, 0, 1500};

static char dirs[64];
static pid_t pids[MAXW];
static int failures;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms) { nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL); }

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void check(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", ok ? "ok" : "FAILED");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    failures += !ok;
}

static int64_t q64(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int64_t q64(const char *fmt, ...)
{
    char sql[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return query(sql);
}

static void run_sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void run_sql(const char *fmt, ...)
{
    char sql[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    if (pgtest_exec(pgt_conn, sql) != 0)
        exit(1);
}

/* ---- seeding ---- */

static int groups(void) { return (opt.flows + opt.group - 1) / opt.group; }

/* Group store g: a schema holding workflows g * group ... (at most group
 * of them), each its own tasklet, in one checkpoint. */
static void seed_one(int g)
{
    char name[80], where[1200];
    snprintf(name, sizeof name, "%s_%d", dirs, g);
    run_sql("CREATE SCHEMA %s", name);
    pgtest_url(where, sizeof where, name);
    tl_runtime *rt;
    tl_store *st;
    int rc = tl_runtime_new(NULL, &rt);
    if (rc == TL_OK)
        rc = tl_register(rt, &flow_fn);
    if (rc == TL_OK)
        rc = tl_store_open(where, TL_STORE_NOSYNC, &st);
    if (rc == TL_OK)
        rc = tl_store_attach(st, rt);
    for (int i = g * opt.group; i < (g + 1) * opt.group && i < opt.flows && rc == TL_OK; i++) {
        flow_t a = {i, 0, opt.steps};
        rc = tl_spawn(rt, &flow_fn, &a, sizeof a, NULL);
    }
    if (rc == TL_OK)
        rc = tl_store_checkpoint(st);
    if (rc != TL_OK) {
        fprintf(stderr, "seeding %s: %s\n", name, tl_errmsg(rt));
        exit(1);
    }
    tl_store_close(st);
    tl_runtime_free(rt);
    run_sql("INSERT INTO %s.dir VALUES ('%s', false)", dirs, name);
}

/* fn(g) for every group, in HELPERS processes at once (each with a
 * connection of its own): creating a store's tables, and dropping them,
 * are most of the time outside the run. */
static void for_groups(void (*fn)(int g), const char *what)
{
    enum { HELPERS = 4 };
    pid_t kids[HELPERS];
    fflush(stdout);
    for (int j = 0; j < HELPERS; j++) {
        kids[j] = fork();
        if (kids[j] == 0) {
            if (!(pgt_conn = pgtest_connect()))
                _exit(1);
            for (int g = j; g < groups(); g += HELPERS)
                fn(g);
            PQfinish(pgt_conn);
            _exit(0);
        }
    }
    int bad = 0;
    for (int j = 0; j < HELPERS; j++) {
        int status = 0;
        bad += kids[j] < 0 || waitpid(kids[j], &status, 0) != kids[j] || !WIFEXITED(status) ||
               WEXITSTATUS(status) != 0;
    }
    if (bad) {
        fprintf(stderr, "pg-torture: %s failed in %d processes\n", what, bad);
        exit(1);
    }
}

static void seed(void)
{
    snprintf(dirs, sizeof dirs, "tlw_%d", (int)getpid());
    run_sql("CREATE SCHEMA %s; CREATE TABLE %s.dir(name text PRIMARY KEY, done bool NOT NULL);"
            "CREATE TABLE %s.exec(id bigserial PRIMARY KEY, grp text, wf int, step int,"
            " epoch bigint, pid int); CREATE TABLE %s.done(wf int, grp text, pid int,"
            " epoch bigint); CREATE TABLE %s.stats(pid int, rejected int)",
            dirs, dirs, dirs, dirs, dirs);
    for_groups(seed_one, "seeding");
}

static void drop_one(int g) { run_sql("DROP SCHEMA IF EXISTS %s_%d CASCADE", dirs, g); }

static void cleanup(void)
{
    for_groups(drop_one, "dropping the groups");
    run_sql("DROP SCHEMA IF EXISTS %s CASCADE", dirs);
}

/* ---- workers ---- */

static pid_t start_worker(void)
{
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        char batch[16];
        snprintf(batch, sizeof batch, "%d", opt.batch);
        execl(opt.worker, opt.worker, dirs, batch, (char *)NULL);
        _exit(127);
    }
    return p;
}

static int left(void) { return (int)q64("SELECT count(*) FROM %s.dir WHERE NOT done", dirs); }

static void kill_one(int *kills)
{
    int i = rand() % opt.workers;
    kill(pids[i], SIGKILL);
    waitpid(pids[i], NULL, 0);
    pids[i] = start_worker();
    (*kills)++;
}

/* Pauses worker i if it is in the middle of a group, and resumes it once
 * another worker took that group over and a late write of its was
 * refused.  Whether it is in the middle is read after SIGSTOP, when its
 * log can no longer move: its last execution (the one in flight at most
 * is later) is of a step before the last, of a workflow in a group not
 * done that it still holds under that execution's epoch, so its next write
 * is a checkpoint of that group under that epoch.  0 when it was not
 * caught so (it is resumed at once), else its pid. */
static pid_t pause_one(int i)
{
    char sql[1200], row[200], grp[80];
    long long e0 = 0;
    int step = 0;
    pid_t p = pids[i];
    kill(p, SIGSTOP);
    snprintf(sql, sizeof sql, "SELECT x.step || ' ' || x.epoch || ' ' || x.grp FROM %s.exec x "
             "JOIN %s.dir d ON d.name = x.grp AND NOT d.done WHERE x.id = (SELECT max(id) FROM "
             "%s.exec WHERE pid = %d)", dirs, dirs, dirs, (int)p);
    query_text(sql, row, sizeof row);
    if (sscanf(row, "%d %lld %79s", &step, &e0, grp) != 3 || step >= opt.steps ||
        q64("SELECT count(*) FROM %s.owner o, %s.meta m WHERE o.pid = %d AND m.key = 'epoch' "
            "AND m.value = '%lld'", grp, grp, (int)p, e0) != 1) {
        kill(p, SIGCONT);
        return 0;
    }
    int64_t r0 = q64("SELECT rejected FROM %s.stats WHERE pid = %d", dirs, (int)p);
    /* its lease runs out, another worker claims the group and runs a step
     * of it: an execution under a later epoch */
    double t0 = now_s();
    while (q64("SELECT count(*) FROM %s.exec WHERE grp = '%s' AND epoch > %lld", dirs, grp,
               e0) == 0 && now_s() < t0 + 300)
        sleep_ms(20);
    kill(p, SIGCONT);
    /* its next write is refused; a worker that makes none within a minute
     * was not caught in the middle after all (0: the chaos loop pauses
     * another; a late write that was accepted instead would show in the
     * checks of recorded steps) */
    double t1 = now_s();
    while (q64("SELECT rejected FROM %s.stats WHERE pid = %d", dirs, (int)p) == r0 &&
           now_s() < t1 + 60)
        sleep_ms(20);
    if (q64("SELECT rejected FROM %s.stats WHERE pid = %d", dirs, (int)p) > r0)
        return p;
    /* not caught: say how the group stands, for the reader of the log */
    snprintf(sql, sizeof sql, "SELECT (SELECT value FROM %s.meta WHERE key = 'epoch') || ' "
             "owner ' || coalesce((SELECT pid || ' lease ' || lease_until FROM %s.owner), "
             "'none') || ' done ' || (SELECT done FROM %s.dir WHERE name = '%s') || ' ckpt ' || "
             "(SELECT coalesce(max(id), 0) FROM %s.checkpoints)", grp, grp, dirs, grp, grp);
    query_text(sql, row, sizeof row);
    printf("pg-torture: worker %d paused at step %d of %s (epoch %lld) made no late write "
           "within 60 s; the group now: epoch %s\n", (int)p, step, grp, e0, row);
    return 0;
}

/* Reaps workers that ended; 1 when all have. */
static int all_exited(void)
{
    int alive = 0;
    for (int i = 0; i < opt.workers; i++) {
        if (!pids[i])
            continue;
        int status;
        pid_t r = waitpid(pids[i], &status, WNOHANG);
        if (r == 0) {
            alive++;
            continue;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            check(0, "worker %d ended with status %d", (int)pids[i], status);
        pids[i] = 0;
    }
    return alive == 0;
}

static int64_t progress(void) { return q64("SELECT count(*) FROM %s.exec", dirs); }

/* Kills and the pause happen at points of the run's progress (executions
 * logged), not of time, so that a fast machine sees them all as a slow one
 * does: kill k at about (k + 1) / (kills + 2) of the steps, the pause from
 * a third on (tried on every worker in turn until one is caught in the
 * middle of a workflow), at most one of them per look. */
static void chaos(int *kills, pid_t *paused)
{
    int64_t total = (int64_t)opt.flows * opt.steps, slot = total / (opt.kills + 2), next = 0;
    double deadline = now_s() + 900;
    for (int k = 0; left() > 0 && now_s() < deadline; k++) {
        sleep_ms(5 + rand() % 20);
        int64_t done = progress();
        if (!next)
            next = slot + rand() % (slot / 2 + 1);
        if (opt.pause && !*paused && done >= total / 3) {
            *paused = pause_one(k % opt.workers);
        } else if (*kills < opt.kills && done >= next) {
            kill_one(kills);
            next = (*kills + 1) * slot + rand() % (slot / 2 + 1);
        }
    }
}

/* ---- checks ---- */

/* Workflows of group g (a schema s) not complete: without each of its
 * steps' rows or its end's, or with rows of workflows not its own. */
static int incomplete_in(int g, const char *s)
{
    int lo = g * opt.group, hi = lo + opt.group - 1 < opt.flows ? lo + opt.group - 1
                                                                  : opt.flows - 1;
    int n = (int)q64("SELECT count(*) FROM generate_series(%d, %d) w WHERE (SELECT count(*) "
                     "FROM %s.flow_steps WHERE key LIKE 'w' || w || '/step-%%') <> %d OR NOT "
                     "EXISTS (SELECT 1 FROM %s.flow_steps WHERE key = 'w' || w || '/done')",
                     lo, hi, s, opt.steps, s);
    if (q64("SELECT count(*) FROM %s.flow_steps", s) != (int64_t)(hi - lo + 1) * (opt.steps + 1))
        n++;
    return n;
}

/* Executions in group s of a recorded step after the one recorded, by the
 * recording claim or a later one: a recorded step run again. */
static int reruns_in(const char *s)
{
    return (int)q64("SELECT count(*) FROM %s.exec x JOIN %s.flow_steps f ON f.key = 'w' || "
                    "x.wf || '/step-' || lpad(x.step::text, 4, '0') WHERE x.grp = '%s' AND "
                    "(x.epoch > f.time OR (x.epoch = f.time AND x.id > "
                    "convert_from(f.data, 'UTF8')::bigint))", dirs, s, s);
}

/* Steps of group s recorded without an execution of theirs logged under
 * the recording epoch. */
static int unlogged_in(const char *s)
{
    return (int)q64("SELECT count(*) FROM %s.flow_steps f WHERE key LIKE '%%/step-%%' AND NOT "
                    "EXISTS (SELECT 1 FROM %s.exec x WHERE x.id = convert_from(f.data, "
                    "'UTF8')::bigint AND x.grp = '%s' AND x.epoch = f.time AND f.key = 'w' || "
                    "x.wf || '/step-' || lpad(x.step::text, 4, '0'))", s, dirs, s);
}

static void check_flows(void)
{
    int incomplete = 0, reruns = 0, unlogged = 0;
    run_sql("CREATE INDEX ON %s.exec(grp)", dirs);
    for (int g = 0; g < groups(); g++) {
        char s[80];
        snprintf(s, sizeof s, "%s_%d", dirs, g);
        incomplete += incomplete_in(g, s);
        reruns += reruns_in(s);
        unlogged += unlogged_in(s);
    }
    int64_t twice = q64("SELECT count(*) FROM (SELECT wf FROM %s.done GROUP BY wf HAVING "
                        "count(*) > 1) t", dirs);
    check(incomplete == 0, "%d workflows in %d groups, every one complete with its %d steps "
          "(%d not)", opt.flows, groups(), opt.steps, incomplete);
    check(unlogged == 0, "every recorded step recorded by an execution of its own (%d not)",
          unlogged);
    check(reruns == 0, "no recorded step ran again under a later claim (%d did)", reruns);
    check(twice == 0, "no workflow's end logged twice (%lld were)", (long long)twice);
}

/* What a checkpoint covers, in words. */
static const char *batch_s(void)
{
    static char s[64];
    if (opt.batch)
        snprintf(s, sizeof s, "a checkpoint every %d steps", opt.batch);
    else
        snprintf(s, sizeof s, "a checkpoint per round of a group");
    return s;
}

static int torture(void)
{
    char lease[32];
    snprintf(lease, sizeof lease, "%lld", (long long)opt.lease);
    setenv("TL_PG_LEASE_MS", lease, 1);
    double t0 = now_s();
    seed();
    double t1 = now_s();
    for (int i = 0; i < opt.workers; i++)
        pids[i] = start_worker();
    int kills = 0;
    pid_t paused = 0;
    chaos(&kills, &paused);
    double t2 = now_s(), deadline = t2 + 120;
    while (!all_exited() && now_s() < deadline)
        sleep_ms(50);
    check(all_exited(), "every worker exited once all was done (none stuck)");
    check(left() == 0, "every workflow done in the directory (%d left)", left());
    check_flows();
    int64_t rejected = q64("SELECT coalesce(sum(rejected), 0) FROM %s.stats", dirs);
    int64_t execs = q64("SELECT count(*) FROM %s.exec", dirs);
    if (opt.pause)
        check(paused && rejected > 0, "the paused worker %d: late writes refused: %lld in all",
              (int)paused, (long long)rejected);
    printf("figures: %d workers, %d workflows x %d steps in %d groups, %s, seeded in %.1f s, "
           "run in %.2f s: %.0f steps/s; %lld step executions (%lld more than steps), %d kills, "
           "%lld late writes refused\n", opt.workers, opt.flows, opt.steps, groups(), batch_s(),
           t1 - t0, t2 - t1,
           opt.flows * opt.steps / (t2 - t1), (long long)execs,
           (long long)(execs - (int64_t)opt.flows * opt.steps), kills, (long long)rejected);
    for (int i = 0; i < opt.workers; i++)
        if (pids[i])
            kill(pids[i], SIGKILL), waitpid(pids[i], NULL, 0);
    cleanup();
    printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
    return failures ? 1 : 0;
}

/* One group of long workflows, two workers: kill its owner, time until
 * another worker runs its next step. */
static int failover(void)
{
    opt.flows = opt.group;
    opt.workers = 2;
    setenv("TL_PG_LEASE_MS", "30000", 1);
    seed();
    for (int i = 0; i < opt.workers; i++)
        pids[i] = start_worker();
    double deadline = now_s() + 120;
    while (q64("SELECT count(*) FROM %s.exec", dirs) < 20 && now_s() < deadline)
        sleep_ms(5);
    pid_t owner = (pid_t)q64("SELECT pid FROM %s.exec ORDER BY id DESC LIMIT 1", dirs);
    int64_t e0 = q64("SELECT max(epoch) FROM %s.exec", dirs);
    double t0 = now_s();
    kill(owner, SIGKILL);
    while (q64("SELECT count(*) FROM %s.exec WHERE epoch > %lld", dirs, (long long)e0) == 0 &&
           now_s() < deadline)
        sleep_ms(1);
    double t1 = now_s();
    check(now_s() < deadline, "the killed owner's workflow resumed elsewhere");
    printf("figures: failover %.1f ms from kill -9 to the next step on another worker\n",
           (t1 - t0) * 1000);
    for (int i = 0; i < opt.workers; i++)
        kill(pids[i], SIGKILL), waitpid(pids[i], NULL, 0);
    cleanup();
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    pgtest_require("pg_torture");
    if (argc < 2)
        return 2;
    opt.worker = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "0";
        if (!strcmp(a, "--pause") || !strcmp(a, "--failover")) {
            *(a[2] == 'p' ? &opt.pause : &opt.failover) = 1;
            continue;
        }
        long n = strtol(v, NULL, 10);
        i++;
        if (!strcmp(a, "--workers") && n > 0 && n <= MAXW)
            opt.workers = (int)n;
        else if (!strcmp(a, "--flows") && n > 0)
            opt.flows = (int)n;
        else if (!strcmp(a, "--group") && n > 0 && n <= 100000)
            opt.group = (int)n;
        else if (!strcmp(a, "--batch") && n >= 0)
            opt.batch = (int)n;
        else if (!strcmp(a, "--steps") && n > 0 && n <= 9999)
            opt.steps = (int)n;
        else if (!strcmp(a, "--kills") && n >= 0)
            opt.kills = (int)n;
        else if (!strcmp(a, "--lease") && n >= 100)
            opt.lease = n;
        else
            return fprintf(stderr, "pg-torture: bad option %s %s\n", a, v), 2;
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    if (!(pgt_conn = pgtest_connect()))
        return 1;
    return opt.failover ? failover() : torture();
}
#endif
