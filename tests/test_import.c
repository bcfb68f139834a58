/*
 * test_import.c -- kill -9 of examples/wf_import as a real process.
 *
 * Runs `wf_import DB TARGET 6000 200` (30 chunks) again and again, killing
 * it with SIGKILL at least IMPORT_KILLS (default 15) times: each kill comes
 * right after the store shows progress (a new step row) plus a random
 * 0-20 ms, or after 300 ms without progress, never after a count of
 * anything.  A store whose import finished before its share of kills is
 * checked and replaced by a fresh one.  Each store's last run must print
 * progress lines and "done 6000 records, amount total T" with the total
 * of the generated records, and:
 *   - items and applied hold one row per record: each record was
 *     inserted exactly once, however often its chunk ran;
 *   - one step row per chunk, every attempt with the key import#<chunk+1>;
 *   - a chunk whose step was recorded before a kill never ran again;
 *   - each chunk ran at most its own attempts plus one per kill.
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

#define N 6000
#define CHUNK 200
#define CHUNKS (N / CHUNK)

static const char *importer;
static char dir[64], db[96], target[96], out[96];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The same records as the example's. */
static int64_t amount_of(int64_t k)
{
    uint64_t x = (uint64_t)k * 0x9E3779B97F4A7C15u;
    x ^= x >> 31;
    return (int64_t)(x % 100000);
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

static pid_t start_import(void)
{
    pid_t p = fork();
    if (p == 0) {
        if (!freopen(out, "w", stdout))
            _exit(126);
        execl(importer, importer, db, target, "6000", "200", (char *)NULL);
        _exit(127);
    }
    return p;
}

static int64_t attempts_of(int c)
{
    char sql[100];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM attempts WHERE chunk = %d", c);
    return count(target, sql);
}

/* Chunks whose step was recorded, with their attempt counts then. */
static int64_t frozen[CHUNKS];

static void freeze_recorded(void)
{
    for (int c = 0; c < CHUNKS; c++) {
        char sql[100];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM wf_step WHERE key = 'import#%d'", c + 1);
        if (frozen[c] < 0 && count(db, sql) == 1)
            frozen[c] = attempts_of(c);
    }
}

/* One run, killed once the store shows progress (or after 300 ms
 * without); 1 when it finished on its own first. */
static int one_kill(int *kills)
{
    int64_t before = count(db, "SELECT count(*) FROM wf_step");
    pid_t p = start_import();
    int64_t t0 = now_ms();
    int st = 0;
    for (;;) {
        if (waitpid(p, &st, WNOHANG) == p)
            return 1;
        int64_t n = count(db, "SELECT count(*) FROM wf_step");
        if ((n > before && n >= 0) || now_ms() - t0 > 300)
            break;
        usleep(1000);
    }
    usleep((useconds_t)(rand() % 20000));
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
    (*kills)++;
    freeze_recorded();
    return 0;
}

static void fresh_store(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -f %s/*", dir);
    assert_int_equal(system(cmd), 0);
    for (int c = 0; c < CHUNKS; c++)
        frozen[c] = -1;
}

static void check_output(void)
{
    char buf[8192], want[80];
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int64_t total = 0;
    for (int64_t k = 1; k <= N; k++)
        total += amount_of(k);
    snprintf(want, sizeof want, "done %d records, amount total %lld\n", N, (long long)total);
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "progress "));
}

/* Lets a last run finish and checks the store after its kills. */
static void finish_and_verify(int kills)
{
    pid_t p = start_import();
    int st;
    assert_int_equal(waitpid(p, &st, 0), p);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    check_output();
    assert_int_equal(count(target, "SELECT count(*) FROM items"), N);
    assert_int_equal(count(target, "SELECT count(*) FROM applied"), N);
    assert_int_equal(count(target, "SELECT count(DISTINCT id) FROM applied"), N);
    assert_int_equal(count(db, "SELECT count(*) FROM wf_step"), CHUNKS);
    assert_int_equal(count(target, "SELECT count(*) FROM attempts WHERE key <> "
                                   "'import#' || (chunk + 1)"), 0);
    int64_t extra = 0;
    for (int c = 0; c < CHUNKS; c++) {
        int64_t a = attempts_of(c), base = c % 5 == 2 ? 2 : 1;
        if (frozen[c] >= 0)
            assert_int_equal(a, frozen[c]); /* recorded: never ran again */
        assert_true(a >= base);
        assert_true(a - base <= kills);
        extra += a - base;
    }
    print_message("a store through %d kills: in-flight chunks run again: %lld\n", kills,
                  (long long)extra);
}

static void test_import_kill9(void **state)
{
    (void)state;
    int want = getenv("IMPORT_KILLS") ? atoi(getenv("IMPORT_KILLS")) : 15;
    srand((unsigned)time(NULL));
    snprintf(dir, sizeof dir, "/tmp/tl_import_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/i.db", dir);
    snprintf(target, sizeof target, "%s/target.db", dir);
    snprintf(out, sizeof out, "%s/import.out", dir);
    fresh_store();
    int kills = 0, on_store = 0, stores = 1;
    int64_t t0 = now_ms();
    while (kills < want && now_ms() - t0 < 500000) {
        int before = on_store;
        if (one_kill(&on_store)) {
            finish_and_verify(on_store);
            fresh_store();
            on_store = 0;
            stores++;
        }
        kills += on_store - before > 0 ? on_store - before : 0;
    }
    print_message("%d kills over %d stores in %lld ms\n", kills, stores,
                  (long long)(now_ms() - t0));
    assert_true(kills >= want);
    finish_and_verify(on_store);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    importer = getenv("WF_IMPORT");
    if (!importer) {
        fprintf(stderr, "set WF_IMPORT\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_import_kill9)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
