/*
 * test_saga.c -- kill -9 torture of examples/order_saga as a real process.
 *
 * Runs `order_saga DB BANK 30 1 86400` again and again, killing it with
 * SIGKILL at least SAGA_KILLS (default 50) times: each kill comes right
 * after the store shows progress (a new step row: during steps, commits
 * and message intake) plus a random 0-20 ms, or after 300 ms without
 * progress (while it waits), never after a fixed count of anything.
 * Between runs and while it runs, `tasklet send DB order-K shipped '{}'
 * --key shipped` posts the messages (no time limit but a generous safety
 * bound: a loaded machine only makes it slower, and an order waits a day
 * for its message, so none is compensated because the machine was slow).
 * A saga that finishes before the kills are done is checked and replaced
 * by a fresh store (kills are counted over all of them).  Each store's
 * last run must end with "done 30" and exit 0, and:
 *   - every order is confirmed or compensated, once (reservations);
 *   - `charges` has one row per order that is not a multiple of 7;
 *   - a charge whose step was recorded before a kill never ran again
 *     (its attempts rows did not grow after that kill);
 *   - each order's charge ran at most once more than its own attempts
 *     per kill, always with the key order-K#2.
 */
#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 30

static const char *saga, *cli;
static char dir[64], db[96], bank[96];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t count(const char *path, const char *sql)
{
    sqlite3 *d;
    sqlite3_stmt *s;
    int64_t n = -1;
    if (sqlite3_open_v2(path, &d, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(d, 5000);
        if (sqlite3_prepare_v2(d, sql, -1, &s, NULL) == SQLITE_OK) {
            if (sqlite3_step(s) == SQLITE_ROW)
                n = sqlite3_column_int64(s, 0);
            sqlite3_finalize(s);
        }
    }
    sqlite3_close(d);
    return n;
}

static pid_t start_saga(void)
{
    pid_t p = fork();
    if (p == 0) {
        char out[128];
        snprintf(out, sizeof out, "%s/saga.out", dir);
        freopen(out, "a", stdout);
        execl(saga, saga, db, bank, "30", "1", "86400", (char *)NULL);
        _exit(127);
    }
    return p;
}

/* `tasklet send`; 0 when posted. */
static int send_shipped(int k)
{
    pid_t p = fork();
    if (p == 0) {
        char id[32];
        snprintf(id, sizeof id, "order-%d", k);
        freopen("/dev/null", "w", stderr);
        execl(cli, cli, "send", "--key", "shipped", db, id, "shipped", "{}", (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int posted[N + 1];

static void post_some(int how_many)
{
    for (int i = 0; i < how_many; i++) {
        int k = 1 + rand() % N;
        if (!posted[k] && send_shipped(k) == 0)
            posted[k] = 1;
    }
}

static int64_t attempts_of(int k)
{
    char sql[100];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM attempts WHERE order_id = %d", k);
    return count(bank, sql);
}

/* Orders whose charge was recorded, with their attempt counts then. */
static int64_t frozen[N + 1];

static void freeze_recorded(void)
{
    /* one read of each file: the recorded charges, then their attempts */
    sqlite3 *d;
    sqlite3_stmt *s;
    int rec[N + 1] = {0};
    if (sqlite3_open_v2(db, &d, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(d, "SELECT key FROM wf_step WHERE key GLOB 'order-*#2'", -1, &s,
                           NULL) == SQLITE_OK) {
        while (sqlite3_step(s) == SQLITE_ROW)
            rec[atoi((const char *)sqlite3_column_text(s, 0) + 6) % (N + 1)] = 1;
        sqlite3_finalize(s);
    }
    sqlite3_close(d);
    for (int k = 1; k <= N; k++)
        if (frozen[k] < 0 && rec[k])
            frozen[k] = attempts_of(k);
}

/* One run of the saga, killed once the store shows progress (or after
 * 300 ms without); 1 when it finished on its own before that. */
static int one_kill(int *kills)
{
    int64_t before = count(db, "SELECT count(*) FROM wf_step");
    pid_t p = start_saga();
    int64_t t0 = now_ms(), last_post = t0;
    int st = 0;
    for (;;) {
        if (waitpid(p, &st, WNOHANG) == p)
            return 1; /* finished on its own */
        int64_t n = count(db, "SELECT count(*) FROM wf_step");
        if ((n > before && n >= 0) || now_ms() - t0 > 300)
            break;
        if (now_ms() - last_post > 50) { /* some posts while it runs */
            post_some(1);
            last_post = now_ms();
        }
        usleep(1000);
    }
    if (getenv("SAGA_TRACE"))
        fprintf(stderr, "kill %d after %lld ms (steps %lld -> %lld)\n", *kills,
                (long long)(now_ms() - t0), (long long)before,
                (long long)count(db, "SELECT count(*) FROM wf_step"));
    usleep((useconds_t)(rand() % 20000));
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
    (*kills)++;
    freeze_recorded();
    return 0;
}

/* A new store and bank: nothing posted, nothing recorded. */
static void fresh_store(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -f %s/*", dir);
    assert_int_equal(system(cmd), 0);
    for (int k = 0; k <= N; k++) {
        frozen[k] = -1;
        posted[k] = 0;
    }
}

/* Lets a last run finish, posting what is left once its workflows exist
 * (every run on this store may have been killed before its starts were
 * committed: a kill comes after 300 ms without progress, and a loaded
 * machine takes longer to get there), and checks the store after the
 * `kills` kills it went through. */
static void finish_and_verify(int kills)
{
    pid_t p = start_saga();
    int st, ended = 0;
    while (!ended && count(db, "SELECT count(*) FROM wf") < N) {
        ended = waitpid(p, &st, WNOHANG) == p; /* it cannot end before: told below */
        usleep(1000);
    }
    for (int k = 1; k <= N && !ended; k++)
        if (!posted[k] && send_shipped(k) != 0)
            assert_int_equal(k % 7, 0); /* declined: finished before shipping */
    if (!ended)
        assert_int_equal(waitpid(p, &st, 0), p);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* every order final, once */
    assert_int_equal(count(db, "SELECT count(*) FROM reservations"), N);
    assert_int_equal(count(db, "SELECT count(*) FROM reservations WHERE state = 'confirmed'"),
                     N - N / 7);
    assert_int_equal(count(db, "SELECT count(*) FROM reservations WHERE state = 'released'"),
                     N / 7);
    assert_int_equal(count(db, "SELECT count(*) FROM wf WHERE status = 'done'"), N);
    /* one charge per charged order, none for the declined */
    assert_int_equal(count(bank, "SELECT count(*) FROM charges"), N - N / 7);
    assert_int_equal(count(bank, "SELECT count(*) FROM charges WHERE order_id % 7 = 0"), 0);
    assert_int_equal(count(bank, "SELECT count(*) FROM attempts WHERE key <> "
                                 "'order-' || order_id || '#2'"), 0);
    int64_t extra = 0;
    for (int k = 1; k <= N; k++) {
        int64_t a = attempts_of(k), base = k % 7 ? 1 : 3;
        if (frozen[k] >= 0)
            assert_int_equal(a, frozen[k]); /* recorded: never ran again */
        assert_true(a >= base);
        assert_true(a - base <= kills);
        extra += a - base;
    }
    print_message("a store through %d kills: in-flight charges run again: %lld\n", kills,
                  (long long)extra);
}

/* Kills are counted over as many stores as it takes: a store whose saga
 * finished before its share of kills (a fast machine) is checked whole and
 * replaced by a fresh one, so the number of kills never depends on how
 * fast the machine or the disk is. */
static void test_saga_kill9(void **state)
{
    (void)state;
    int want = getenv("SAGA_KILLS") ? atoi(getenv("SAGA_KILLS")) : 50;
    srand((unsigned)time(NULL));
    snprintf(dir, sizeof dir, "/tmp/tl_saga_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/s.db", dir);
    snprintf(bank, sizeof bank, "%s/bank.db", dir);
    fresh_store();
    int kills = 0, on_store = 0, stores = 1;
    int64_t t0 = now_ms();
    while (kills < want && now_ms() - t0 < 1500000) {
        int before = on_store;
        if (one_kill(&on_store)) {
            finish_and_verify(on_store);
            fresh_store();
            on_store = 0;
            stores++;
        }
        kills += on_store - before > 0 ? on_store - before : 0;
        if (rand() % 3 == 0)
            post_some(2); /* while it is stopped */
    }
    print_message("%d kills over %d stores in %lld ms\n", kills, stores,
                  (long long)(now_ms() - t0));
    assert_true(kills >= want);
    finish_and_verify(on_store);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    saga = getenv("ORDER_SAGA");
    cli = getenv("TASKLET_CLI");
    if (!saga || !cli) {
        fprintf(stderr, "set ORDER_SAGA and TASKLET_CLI\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_saga_kill9)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
