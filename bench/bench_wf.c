/*
 * bench_wf.c -- tl-bench's durable-workflow benchmarks (docs/PERFORMANCE.md).
 *
 * disk_fsync_per_s: bare SQLite commits with synchronous=FULL on the same
 * disk, measured in the same run, for scale (sqlite_nosync_commit_per_s:
 * the same with synchronous=NORMAL).  wf_step_*: no-op steps through the
 * workflow engine, inline (TL_WF_INLINE: the effect on the engine's
 * thread, its row and the checkpoint committed before the workflow sees
 * the result); wf_pool_step_*: the same step on the worker pool (two
 * thread hand-offs more).  wf_start_waiting_per_s: starting 100,000
 * workflows that wait for a message, one commit.
 * wf_resume_first_step_ms: from a fresh runtime to the first effect run
 * after restoring n suspended workflows (in-process: exec not counted);
 * wf_resume_first_step_cpu_ms: the CPU time of the same, to the first
 * step's commit.
 * wf_message_latency_ms: median from tl_wf_post in a child process to the
 * workflow running after its receive.  wf_stored_bytes_*: bytes of the
 * store file (vacuumed) per workflow.
 * wf_step_fsync_idle_ratio: the sequential fsync'd step rate with n idle
 * workflows waiting, over the same rate in a store of its own, measured in
 * alternating rounds of one run (the order swapped every round) so that
 * the disk's swings fall on both alike; the median of each side, their
 * quotient printed (TL_BENCH_ROUNDS=1 prints each round's two rates).
 */
#define _DEFAULT_SOURCE
#include <sqlite3.h>

#include "tasklet.h"
#include "tasklet_workflow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_wf.h"

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t first_effect_ns;

static int noop_effect(tl_wf_ctx *cx, tl_value arg, tl_value *res)
{
    (void)cx;
    if (!first_effect_ns)
        first_effect_ns = mono_ns();
    *res = tl_retain(arg);
    return TL_OK;
}
/* The no-op step: inline (on the engine's thread, TL_WF_INLINE) and the
 * same on the worker pool (two thread hand-offs per step). */
static const tl_wf_step noop_step = {"bench.noop", noop_effect, TL_WF_INLINE, 0, 0, 0, 0};
static const tl_wf_step pool_step = {"bench.noop_pool", noop_effect, 0, 0, 0, 0, 0};

/* arg: the number of steps, negative for steps on the pool. */
typedef struct steps_t {
    tl_value arg, r;
    int64_t i;
} steps_t;
static const tl_field steps_fields[] = {TL_FIELD(steps_t, arg, TL_T_VALUE),
                                        TL_FIELD(steps_t, r, TL_T_VALUE),
                                        TL_FIELD(steps_t, i, TL_T_I64)};
static tl_status steps_wf(tl_frame *f, void *l)
{
    steps_t *L = l;
    TL_BEGIN(f);
    for (L->i = 0; L->i < llabs(tl_as_i64(L->arg)); L->i++)
        TL_WF_STEP(f, tl_as_i64(L->arg) < 0 ? &pool_step : &noop_step, tl_i64(L->i), L->r);
    TL_END(f);
}
static const tl_func steps_fn = {"bench.steps", 1, steps_wf, sizeof(steps_t), steps_fields, 3,
                                 NULL};

/* Receives "go" arg times; each message holds its post time (mono ns):
 * the latency lands in lat[]; then one step. */
static int64_t *lat;
static int64_t nlat;
typedef struct recv_t {
    tl_value arg, m, r;
    int64_t i;
} recv_t;
static const tl_field recv_fields[] = {TL_FIELD(recv_t, arg, TL_T_VALUE),
                                       TL_FIELD(recv_t, m, TL_T_VALUE),
                                       TL_FIELD(recv_t, r, TL_T_VALUE),
                                       TL_FIELD(recv_t, i, TL_T_I64)};
static tl_status recv_wf(tl_frame *f, void *l)
{
    recv_t *L = l;
    TL_BEGIN(f);
    for (L->i = 0; L->i < tl_as_i64(L->arg); L->i++) {
        TL_WF_RECV(f, "go", -1, L->m);
        if (lat)
            lat[nlat++] = mono_ns() - tl_as_i64(L->m);
    }
    TL_WF_STEP(f, &noop_step, tl_nil(), L->r);
    TL_END(f);
}
static const tl_func recv_fn = {"bench.recv", 1, recv_wf, sizeof(recv_t), recv_fields, 4, NULL};

typedef struct wfb {
    char dir[64], path[96];
    tl_runtime *rt;
    tl_store *st;
    tl_wf *wf;
} wfb;

static int wfb_open(wfb *b, int flags, int restore)
{
    if (!b->dir[0]) {
        snprintf(b->dir, sizeof b->dir, "/tmp/tl_wfbench_XXXXXX");
        if (!mkdtemp(b->dir))
            return TL_EIO;
        snprintf(b->path, sizeof b->path, "%s/s.db", b->dir);
    }
    int rc = tl_runtime_new(NULL, &b->rt);
    if (rc == TL_OK)
        rc = tl_store_open(b->path, flags, &b->st);
    if (rc == TL_OK)
        rc = tl_wf_new(b->rt, b->st, NULL, &b->wf);
    if (rc == TL_OK)
        rc = tl_wf_register(b->wf, &steps_fn);
    if (rc == TL_OK)
        rc = tl_wf_register(b->wf, &recv_fn);
    if (rc == TL_OK)
        rc = tl_wf_register_step(b->wf, &noop_step);
    if (rc == TL_OK)
        rc = tl_wf_register_step(b->wf, &pool_step);
    if (rc == TL_OK && restore)
        rc = tl_wf_restore(b->wf);
    if (rc != TL_OK)
        fprintf(stderr, "tl-bench: workflow engine: %s\n",
                b->rt ? tl_errmsg(b->rt) : tl_strerror(rc));
    return rc;
}

static void wfb_close(wfb *b, int remove)
{
    tl_wf_free(b->wf);
    tl_store_close(b->st);
    tl_runtime_free(b->rt);
    b->wf = NULL;
    if (remove) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", b->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "tl-bench: could not remove %s\n", b->dir);
    }
}

static int start_n(wfb *b, const char *prefix, const tl_func *fn, int64_t arg, uint64_t n)
{
    char id[64];
    for (uint64_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "%s-%llu", prefix, (unsigned long long)i);
        int rc = tl_wf_start(b->wf, id, fn, tl_i64(arg), NULL);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

/* Bare SQLite commits of one small row each, WAL, synchronous FULL
 * (sync) or NORMAL: the floor under one commit per step. */
static int bare_commits(uint64_t n, int sync, double *per_s)
{
    char path[] = "/tmp/tl_fsync_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return TL_EIO;
    close(fd);
    sqlite3 *db;
    sqlite3_open(path, &db);
    sqlite3_exec(db, sync ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(x)"
                          : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t(x)",
                 NULL, NULL, NULL);
    n = n < 20 ? 20 : n;
    int64_t t0 = mono_ns();
    for (uint64_t i = 0; i < n; i++)
        sqlite3_exec(db, "INSERT INTO t VALUES(1)", NULL, NULL, NULL);
    *per_s = (double)n / ((double)(mono_ns() - t0) / 1e9);
    sqlite3_close(db);
    char wal[64];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    unlink(path);
    return TL_OK;
}

int bench_disk_fsync(uint64_t n, double *per_s) { return bare_commits(n, 1, per_s); }
int bench_sqlite_nosync(uint64_t n, double *per_s) { return bare_commits(n, 0, per_s); }

/* workflows x steps no-op steps (steps < 0: on the pool); others idle
 * workflows waiting. */
static int steps_run(int flags, uint64_t workflows, int64_t steps, uint64_t idle,
                     double *per_s)
{
    wfb b = {0};
    int rc = wfb_open(&b, flags, 1);
    if (rc == TL_OK && idle) {
        rc = start_n(&b, "idle", &recv_fn, 1, idle);
        if (rc == TL_OK)
            rc = tl_wf_run(b.wf, 0) == TL_ETIMEDOUT ? TL_OK : TL_ESTATE;
    }
    int64_t t0 = mono_ns();
    if (rc == TL_OK)
        rc = start_n(&b, "w", &steps_fn, steps, workflows);
    while (rc == TL_OK && tl_wf_live(b.wf) > idle) {
        rc = tl_wf_run(b.wf, 50);
        rc = rc == TL_ETIMEDOUT ? TL_OK : rc;
    }
    *per_s = (double)workflows * (double)llabs(steps) / ((double)(mono_ns() - t0) / 1e9);
    if (rc != TL_OK)
        fprintf(stderr, "tl-bench: %s\n", tl_wf_errmsg(b.wf));
    wfb_close(&b, 1);
    return rc;
}

int bench_wf_step_fsync(uint64_t n, double *v) { return steps_run(0, 1, (int64_t)n, 0, v); }
int bench_wf_step_nosync(uint64_t n, double *v)
{
    return steps_run(TL_STORE_NOSYNC, 1, (int64_t)n, 0, v);
}
int bench_wf_step_conc(uint64_t n, double *v) { return steps_run(0, n / 10, 10, 0, v); }
int bench_wf_step_idle(uint64_t n, double *v)
{
    return steps_run(0, 1, (int64_t)(10000 / (100000 / n)), n, v);
}
int bench_wf_pool_fsync(uint64_t n, double *v) { return steps_run(0, 1, -(int64_t)n, 0, v); }
int bench_wf_pool_nosync(uint64_t n, double *v)
{
    return steps_run(TL_STORE_NOSYNC, 1, -(int64_t)n, 0, v);
}
int bench_wf_pool_conc(uint64_t n, double *v) { return steps_run(0, n / 10, -10, 0, v); }

/* Starting n workflows that wait for a message: one engine, one commit. */
int bench_wf_start(uint64_t n, double *per_s)
{
    wfb b = {0};
    int rc = wfb_open(&b, 0, 1);
    int64_t t0 = mono_ns();
    if (rc == TL_OK)
        rc = start_n(&b, "s", &recv_fn, 1, n);
    if (rc == TL_OK)
        rc = tl_wf_run(b.wf, 0) == TL_ETIMEDOUT ? TL_OK : TL_ESTATE;
    *per_s = (double)n / ((double)(mono_ns() - t0) / 1e9);
    if (b.wf)
        wfb_close(&b, 1);
    return rc;
}

static int64_t cpu_ns(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return ((int64_t)u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000;
}

/* The CPU time (every thread of the process) of the last
 * bench_wf_resume's timed part, and its n. */
static double resume_cpu_ms = -1;
static uint64_t resume_cpu_n;

int bench_wf_resume(uint64_t n, double *ms)
{
    wfb b = {0};
    int rc = wfb_open(&b, TL_STORE_NOSYNC, 1);
    if (rc == TL_OK)
        rc = start_n(&b, "r", &recv_fn, 1, n);
    if (rc == TL_OK)
        rc = tl_wf_run(b.wf, 0) == TL_ETIMEDOUT ? TL_OK : TL_ESTATE;
    if (b.wf)
        wfb_close(&b, 0);
    if (rc == TL_OK)
        rc = tl_wf_post(NULL, b.path, "r-0", "go", tl_i64(0), NULL);
    first_effect_ns = 0;
    int64_t t0 = mono_ns(), c0 = cpu_ns();
    if (rc == TL_OK)
        rc = wfb_open(&b, TL_STORE_NOSYNC, 1);
    while (rc == TL_OK && !first_effect_ns && mono_ns() - t0 < 60000000000) {
        rc = tl_wf_run(b.wf, 1);
        rc = rc == TL_ETIMEDOUT ? TL_OK : rc;
    }
    resume_cpu_ms = (double)(cpu_ns() - c0) / 1e6;
    resume_cpu_n = n;
    *ms = (double)(first_effect_ns - t0) / 1e6;
    wfb_close(&b, 1);
    return rc == TL_OK && first_effect_ns ? TL_OK : TL_ESTATE;
}

/* The same restore's CPU time (getrusage, from opening to the first
 * step's commit): the figure the machine's load disturbs least.  Taken
 * from the wall-clock run just before it when there was one. */
int bench_wf_resume_cpu(uint64_t n, double *ms)
{
    double wall;
    int rc = resume_cpu_ms >= 0 && resume_cpu_n == n ? TL_OK : bench_wf_resume(n, &wall);
    *ms = resume_cpu_ms;
    return rc;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* One round of the ratio: a fresh workflow of steps steps in b, whose
 * idle others keep waiting; its rate. */
static int steps_round(wfb *b, int round, int64_t steps, uint64_t idle, int64_t *rate)
{
    char id[32];
    snprintf(id, sizeof id, "round-%d", round);
    int64_t t0 = mono_ns();
    int rc = tl_wf_start(b->wf, id, &steps_fn, tl_i64(steps), NULL);
    while (rc == TL_OK && tl_wf_live(b->wf) > idle) {
        rc = tl_wf_run(b->wf, 50);
        rc = rc == TL_ETIMEDOUT ? TL_OK : rc;
    }
    *rate = (int64_t)((double)steps / ((double)(mono_ns() - t0) / 1e9));
    if (rc != TL_OK)
        fprintf(stderr, "tl-bench: %s\n", tl_wf_errmsg(b->wf));
    return rc;
}

int bench_wf_step_idle_ratio(uint64_t n, double *v)
{
    enum { ROUNDS = 9 };
    int64_t lone[ROUNDS], busy[ROUNDS], steps = n / 100 < 100 ? 100 : (int64_t)(n / 100);
    wfb a = {0}, b = {0};
    int rc = wfb_open(&a, 0, 1);
    if (rc == TL_OK)
        rc = wfb_open(&b, 0, 1);
    if (rc == TL_OK)
        rc = start_n(&b, "idle", &recv_fn, 1, n);
    if (rc == TL_OK)
        rc = tl_wf_run(b.wf, 0) == TL_ETIMEDOUT ? TL_OK : TL_ESTATE;
    for (int r = 0; r < ROUNDS && rc == TL_OK; r++) {
        rc = r % 2 ? steps_round(&b, r, steps, n, &busy[r]) : steps_round(&a, r, steps, 0, &lone[r]);
        if (rc == TL_OK)
            rc = r % 2 ? steps_round(&a, r, steps, 0, &lone[r]) : steps_round(&b, r, steps, n, &busy[r]);
        if (rc == TL_OK && getenv("TL_BENCH_ROUNDS"))
            fprintf(stderr, "round %d: alone %lld steps/s, with %llu idle %lld steps/s\n", r,
                    (long long)lone[r], (unsigned long long)n, (long long)busy[r]);
    }
    if (rc == TL_OK) {
        qsort(lone, ROUNDS, sizeof *lone, cmp64);
        qsort(busy, ROUNDS, sizeof *busy, cmp64);
        *v = (double)busy[ROUNDS / 2] / (double)lone[ROUNDS / 2];
    }
    wfb_close(&a, 1);
    wfb_close(&b, 1);
    return rc;
}

int bench_wf_message_latency(uint64_t n, double *ms)
{
    wfb b = {0};
    n = n < 10 ? 10 : n;
    int rc = wfb_open(&b, TL_STORE_NOSYNC, 1);
    lat = calloc(n, sizeof *lat);
    nlat = 0;
    if (rc == TL_OK)
        rc = tl_wf_start(b.wf, "lat", &recv_fn, tl_i64((int64_t)n), NULL);
    if (rc == TL_OK)
        rc = tl_wf_commit(b.wf);
    pid_t p = rc == TL_OK ? fork() : -1;
    if (p == 0) { /* the poster: one message every 5 ms, stamped */
        for (uint64_t i = 0; i < n; i++) {
            usleep(5000);
            tl_wf_post(NULL, b.path, "lat", "go", tl_i64(mono_ns()), NULL);
        }
        _exit(0);
    }
    while (rc == TL_OK && tl_wf_live(b.wf) > 0) {
        rc = tl_wf_run(b.wf, 100);
        rc = rc == TL_ETIMEDOUT ? TL_OK : rc;
    }
    if (p > 0)
        waitpid(p, NULL, 0);
    qsort(lat, (size_t)nlat, sizeof *lat, cmp64);
    *ms = nlat ? (double)lat[nlat / 2] / 1e6 : -1;
    free(lat);
    lat = NULL;
    wfb_close(&b, 1);
    return rc;
}

static double file_bytes(wfb *b)
{
    sqlite3 *db;
    struct stat sb;
    sqlite3_open(b->path, &db);
    sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE); VACUUM", NULL, NULL, NULL);
    sqlite3_close(db);
    return stat(b->path, &sb) == 0 ? (double)sb.st_size : 0;
}

/* Bytes per workflow: finished with 3 steps (done) or waiting for a
 * message, over the same store holding none. */
static int stored(uint64_t n, int done, double *per)
{
    wfb b = {0};
    int rc = wfb_open(&b, TL_STORE_NOSYNC, 1);
    if (rc == TL_OK)
        rc = tl_wf_commit(b.wf);
    wfb_close(&b, 0);
    double empty = file_bytes(&b);
    rc = rc == TL_OK ? wfb_open(&b, TL_STORE_NOSYNC, 1) : rc;
    if (rc == TL_OK)
        rc = start_n(&b, "s", done ? &steps_fn : &recv_fn, done ? 3 : 1, n);
    while (rc == TL_OK && done && tl_wf_live(b.wf) > 0) {
        rc = tl_wf_run(b.wf, 100);
        rc = rc == TL_ETIMEDOUT ? TL_OK : rc;
    }
    if (rc == TL_OK && !done)
        rc = tl_wf_run(b.wf, 0) == TL_ETIMEDOUT ? TL_OK : TL_ESTATE;
    wfb_close(&b, 0);
    *per = (file_bytes(&b) - empty) / (double)n;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", b.dir);
    rc = system(cmd) == 0 ? rc : rc;
    return rc;
}

int bench_wf_bytes_done(uint64_t n, double *v) { return stored(n, 1, v); }
int bench_wf_bytes_waiting(uint64_t n, double *v) { return stored(n, 0, v); }
