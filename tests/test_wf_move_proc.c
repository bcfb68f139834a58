/*
 * test_wf_move_proc.c -- moving workflows exactly once between real
 * processes under kill -9: nodes of tests/wfmove_peer.c (WFMOVE_PEER, set
 * by meson) on 127.0.0.1, each with its own store and workflow engine.
 *
 * The source A starts N workflows (tests/wfmove_funcs.h) and moves each to
 * B once its first step is recorded; meanwhile this test posts "fin" to
 * each (with a deduplication key) at A's store, or at B's once A answers
 * that it moved, and kills A or B with SIGKILL at random instants and
 * starts it again, again and again.  Then, no more kills, it posts "go"
 * to B's store and awaits every result there.  Exactly once means:
 *   - A's store says every workflow moved to B and its outbox is empty;
 *     B's store holds exactly the N workflows, each done with the result
 *     its messages make (so the pending "fin" arrived, once);
 *   - a recorded step never ran again: B never ran a first step (A moved
 *     only workflows whose first step its store had recorded), A never a
 *     second one (its "go" was posted at B only);
 *   - B holds exactly one "fin" row per workflow (the dedup key travelled).
 *
 * And a deterministic pair: A killed inside the checkpoint transaction of
 * its hand-off, then B inside the one of its import (WFMOVE_PAUSE stops
 * the peer there), before either commits: A's store still has every
 * workflow, B's none, and the restarted pair moves each once.
 *
 * No assertion depends on timing: waits are bounded only against hangs.
 * WFMOVE_SEED=n replays a run's kill instants.
 */
#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tasklet.h"
#include "tasklet_workflow.h"

#define SECRET "libtasklet-test-cluster-secret"
#define N 16
#define NSTR "16"
#define KILLS 16
#define WAIT_MS 90000 /* a bound against hangs, never an expectation */

typedef struct proc {
    pid_t pid;
    int out; /* its stdout */
    char buf[4096];
    size_t len;
    const char *argv[8];
    int pause; /* WFMOVE_PAUSE: stops inside its first hand-off or import */
} proc;

static char dir[64], db_a[96], db_b[96], steplog[96], addr[128];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void proc_start(proc *p)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        setenv("TL_NODE_SECRET", SECRET, 1);
        if (p->pause)
            setenv("WFMOVE_PAUSE", "1", 1);
        execv(getenv("WFMOVE_PEER"), (char *const *)p->argv);
        _exit(127);
    }
    close(fds[1]);
    p->out = fds[0];
    p->len = 0;
}

static void proc_kill(proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    close(p->out);
    p->pid = 0;
}

/* Reads what p printed for up to ms; 1 once a line starting with want
 * came (copied to line). */
static int proc_line(proc *p, const char *want, char *line, size_t cap, int ms)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        char *nl;
        while ((nl = memchr(p->buf, '\n', p->len))) {
            *nl = 0;
            int hit = strncmp(p->buf, want, strlen(want)) == 0;
            if (hit && line)
                snprintf(line, cap, "%.*s", (int)(cap - 1), p->buf);
            size_t k = (size_t)(nl - p->buf) + 1;
            memmove(p->buf, nl + 1, p->len - k);
            p->len -= k;
            if (hit)
                return 1;
        }
        int left = (int)(end - now_ms());
        struct pollfd pf = {p->out, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, left) <= 0)
            return 0;
        ssize_t got = read(p->out, p->buf + p->len, sizeof p->buf - p->len - 1);
        if (got <= 0)
            return 0;
        p->len += (size_t)got;
    }
}

static void start_b(proc *b, const char *listen)
{
    static char at[128];
    snprintf(at, sizeof at, "%s", listen);
    const char *argv[] = {"wfmove_peer", "dst", "B", db_b, at, steplog, NSTR, NULL};
    memcpy(b->argv, argv, sizeof argv);
    proc_start(b);
    char line[200];
    assert_true(proc_line(b, "listen ", line, sizeof line, WAIT_MS));
    snprintf(addr, sizeof addr, "%.120s", line + 7);
}

static void start_a(proc *a)
{
    const char *argv[] = {"wfmove_peer", "src", "A", db_a, addr, steplog, NSTR, NULL};
    memcpy(a->argv, argv, sizeof argv);
    proc_start(a);
}

static int status_at(const char *db, const char *id, tl_wf_info *in)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    int rc = tl_wf_get(rt, db, id, 0, in);
    if (rc == TL_OK)
        tl_release(in->result);
    tl_runtime_free(rt);
    return rc == TL_OK ? in->status : rc;
}

/* Posts "fin" to wf-k where it is: A's store, or B's once A says it moved. */
static int post_fin(int k)
{
    char id[32], key[32];
    snprintf(id, sizeof id, "wf-%d", k);
    snprintf(key, sizeof key, "fin-%d", k);
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    int rc = tl_wf_post(rt, db_a, id, "fin", tl_i64(1000 * k), key);
    if (rc == TL_EMOVED)
        rc = tl_wf_post(rt, db_b, id, "fin", tl_i64(1000 * k), key);
    tl_runtime_free(rt);
    return rc == TL_OK || rc == TL_EEXIST;
}

static int64_t sql_count(const char *db, const char *sql)
{
    sqlite3 *h;
    sqlite3_stmt *s;
    int64_t n = -1;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(h, 10000);
    if (sqlite3_prepare_v2(h, sql, -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
    }
    sqlite3_close(h);
    return n;
}

static int log_count(const char *line)
{
    FILE *f = fopen(steplog, "r");
    char buf[200];
    int k = 0;
    while (f && fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\n")] = 0;
        k += strcmp(buf, line) == 0;
    }
    if (f)
        fclose(f);
    return k;
}

static int all_moved(void)
{
    for (int k = 1; k <= N; k++) {
        char id[32];
        tl_wf_info in;
        snprintf(id, sizeof id, "wf-%d", k);
        if (status_at(db_a, id, &in) != TL_WF_MOVED)
            return 0;
    }
    return sql_count(db_a, "SELECT count(*) FROM outbox") == 0;
}

/* Phase 1: A moves them all while this posts "fin" and kills A or B. */
static void move_under_kills(proc *a, proc *b, unsigned seed)
{
    int posted[N + 1] = {0}, kills = 0;
    int64_t end = now_ms() + WAIT_MS;
    while (!all_moved()) {
        assert_true(now_ms() < end);
        for (int k = 1; k <= N; k++)
            if (!posted[k] && rand_r(&seed) % 4 == 0)
                posted[k] = post_fin(k);
        if (kills < KILLS) {
            struct timespec ts = {0, (long)(rand_r(&seed) % 150) * 1000000L};
            nanosleep(&ts, NULL);
            proc *victim = rand_r(&seed) % 2 ? a : b;
            proc_kill(victim);
            if (victim == b)
                start_b(b, addr);
            else
                start_a(a);
            kills++;
        } else {
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
        }
    }
    for (int k = 1; k <= N; k++)
        while (!posted[k]) {
            assert_true(now_ms() < end);
            posted[k] = post_fin(k);
        }
}

/* Phase 2: "go" at B's store, every result awaited there, and checked. */
static void finish_at_b(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    for (int k = 1; k <= N; k++) {
        char id[32], line[64];
        tl_wf_info in;
        snprintf(id, sizeof id, "wf-%d", k);
        assert_int_equal(tl_wf_post(rt, db_b, id, "go", tl_i64(10 * k), NULL), TL_OK);
        assert_int_equal(tl_wf_get(rt, db_b, id, WAIT_MS, &in), TL_OK);
        assert_int_equal(in.status, TL_WF_DONE);
        assert_int_equal(tl_as_i64(in.result), (k + 1) + 20 * k + 1000 * k);
        assert_string_equal(in.moved_from, "A");
        tl_release(in.result);
        assert_int_equal(status_at(db_a, id, &in), TL_WF_MOVED);
        assert_string_equal(in.moved_to, "B");
        snprintf(line, sizeof line, "B %s#1", id);
        assert_int_equal(log_count(line), 0); /* recorded at A: never ran again */
        snprintf(line, sizeof line, "A %s#2", id);
        assert_int_equal(log_count(line), 0);
        snprintf(line, sizeof line, "B %s#2", id);
        assert_int_equal(log_count(line), 1);
        snprintf(line, sizeof line, "A %s#1", id);
        assert_true(log_count(line) >= 1);
    }
    tl_runtime_free(rt);
    assert_int_equal(sql_count(db_b, "SELECT count(*) FROM wf"), N);
    assert_int_equal(sql_count(db_b, "SELECT count(*) FROM wf_msg WHERE key LIKE '%|k|fin-%'"),
                     N);
}

static void test_move_exactly_once_under_kill9(void **state)
{
    (void)state;
    const char *env = getenv("WFMOVE_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    print_message("WFMOVE_SEED=%u\n", seed);
    snprintf(dir, sizeof dir, "/tmp/tl_wfmp_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(db_a, sizeof db_a, "%s/a.db", dir);
    snprintf(db_b, sizeof db_b, "%s/b.db", dir);
    snprintf(steplog, sizeof steplog, "%s/steps.log", dir);
    proc a = {0}, b = {0};
    start_b(&b, "tcp://127.0.0.1:0");
    start_a(&a);
    move_under_kills(&a, &b, seed);
    finish_at_b();
    proc_kill(&a);
    proc_kill(&b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Killed inside the hand-off's transaction (A) and inside the import's
 * (B), before either commits: nothing of it is visible after, and the
 * restarted pair moves every workflow once. */
static void test_kill9_inside_the_handoff(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/tl_wfmp_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(db_a, sizeof db_a, "%s/a.db", dir);
    snprintf(db_b, sizeof db_b, "%s/b.db", dir);
    snprintf(steplog, sizeof steplog, "%s/steps.log", dir);
    proc a = {0}, b = {0};
    b.pause = 1;
    start_b(&b, "tcp://127.0.0.1:0");
    a.pause = 1;
    start_a(&a);
    assert_true(proc_line(&a, "paused", NULL, 0, WAIT_MS)); /* inside A's hand-off */
    tl_wf_info in;
    for (int k = 1; k <= N; k++) { /* not one has left A's store yet */
        char id[32];
        snprintf(id, sizeof id, "wf-%d", k);
        int st = status_at(db_a, id, &in);
        assert_true(st == TL_WF_WAITING || st == TL_WF_RUNNING || st == TL_WF_PENDING);
    }
    proc_kill(&a);
    a.pause = 0;
    start_a(&a);
    assert_true(proc_line(&b, "paused", NULL, 0, WAIT_MS)); /* inside B's import */
    for (int k = 1; k <= N; k++) {
        char id[32];
        snprintf(id, sizeof id, "wf-%d", k);
        assert_int_equal(status_at(db_b, id, &in), TL_ENOENT);
    }
    proc_kill(&b);
    b.pause = 0;
    start_b(&b, addr);
    int64_t end = now_ms() + WAIT_MS;
    while (!all_moved()) {
        assert_true(now_ms() < end);
        for (int k = 1; k <= N; k++)
            post_fin(k);
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    for (int k = 1; k <= N; k++)
        post_fin(k); /* the dedup key: refused if it came along */
    finish_at_b();
    proc_kill(&a);
    proc_kill(&b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill9_inside_the_handoff),
        cmocka_unit_test(test_move_exactly_once_under_kill9),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
