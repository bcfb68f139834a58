/*
 * bench_node.c -- what a node's rows cost a checkpoint.
 *
 *   checkpoint_node_rows_100k  one checkpoint of a one-tasklet change while
 *                              the node holds n transfer ids in its inbox
 *                              and n transfers in its outbox (put in the
 *                              store's tables before the node opens it, as
 *                              a node restarting after a long life finds
 *                              them); the mean of ROUNDS checkpoints, in us.
 *                              A node that rewrote both tables in every
 *                              checkpoint paid for all 2n rows each time.
 *
 * The store does not fsync (TL_STORE_NOSYNC): the figure is the
 * checkpoint's own work, not the disk's.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_node.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tasklet.h"
#include "tasklet_node.h"

#define ROUNDS 20

static tl_status idle(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_YIELD(f);
    TL_END(f);
}
static const tl_func idle_fn = {"bench.node.idle", 1, idle, 0, NULL, 0, NULL};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n inbox and n outbox rows, from outside, in one transaction. */
static int fill(const char *path, uint64_t n, int64_t now)
{
    sqlite3 *db;
    sqlite3_stmt *in = NULL, *out = NULL;
    int ok = sqlite3_open(path, &db) == SQLITE_OK &&
             sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK &&
             sqlite3_prepare_v2(db, "INSERT INTO inbox(xid, peer, time) VALUES(?1, 'Z', ?2)",
                                -1, &in, NULL) == SQLITE_OK &&
             sqlite3_prepare_v2(db, "INSERT INTO outbox(xid, peer, data) VALUES(?1, 'Z', "
                                "x'00')", -1, &out, NULL) == SQLITE_OK;
    for (uint64_t i = 0; ok && i < n; i++) {
        char xid[40];
        snprintf(xid, sizeof xid, "%032llx", (unsigned long long)i + 1);
        sqlite3_bind_text(in, 1, xid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(in, 2, now);
        sqlite3_bind_text(out, 1, xid, -1, SQLITE_TRANSIENT);
        ok = sqlite3_step(in) == SQLITE_DONE && sqlite3_step(out) == SQLITE_DONE;
        sqlite3_reset(in);
        sqlite3_reset(out);
    }
    sqlite3_finalize(in);
    sqlite3_finalize(out);
    ok = ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(db);
    return ok ? TL_OK : TL_EIO;
}

static int timed_rounds(tl_runtime *rt, tl_store *st, double *us)
{
    double total = 0;
    int rc = tl_store_checkpoint(st);
    for (int k = 0; k < ROUNDS && rc == TL_OK; k++) {
        rc = tl_spawn(rt, &idle_fn, NULL, 0, NULL);
        double t0 = now_s();
        if (rc == TL_OK)
            rc = tl_store_checkpoint(st);
        total += now_s() - t0;
    }
    *us = total / ROUNDS * 1e6;
    return rc;
}

int bench_ckpt_node_rows(uint64_t n, double *us)
{
    char dir[] = "/tmp/tl_nodebench_XXXXXX", path[64], cmd[96];
    tl_runtime *rt = NULL;
    tl_store *st = NULL;
    tl_node *node = NULL;
    if (!mkdtemp(dir))
        return TL_EIO;
    snprintf(path, sizeof path, "%s/node.db", dir);
    int rc = tl_runtime_new(NULL, &rt);
    if (rc == TL_OK)
        rc = tl_register(rt, &idle_fn);
    if (rc == TL_OK)
        rc = tl_store_open(path, TL_STORE_NOSYNC, &st);
    if (rc == TL_OK)
        rc = tl_store_attach(st, rt);
    if (rc == TL_OK)
        rc = fill(path, n, tl_now(rt));
    tl_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.node_id = "A";
    cfg.store = st;
    if (rc == TL_OK)
        rc = tl_node_new(rt, &cfg, &node);
    if (rc == TL_OK)
        rc = timed_rounds(rt, st, us);
    if (rc != TL_OK)
        fprintf(stderr, "checkpoint_node_rows: %s\n", st ? tl_store_errmsg(st) : "");
    tl_node_free(node);
    tl_store_close(st);
    tl_runtime_free(rt);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? rc : TL_EIO;
}
