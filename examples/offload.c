/*
 * offload.c -- a coordinator hands work to worker processes as tasklets.
 *
 *   offload [WORKERS]      1 to 16, default 3; 4 chunks of work per worker
 *
 * The coordinator ("coord") forks WORKERS processes ("w1", ...), each with
 * a runtime and a node on a free TCP port of 127.0.0.1, which coord dials;
 * the shared secret comes from /dev/urandom before the fork.  One work
 * tasklet per chunk of [1, N] holds coord's channel in its locals and
 * starts with TL_MIGRATE to its worker.  The channel stays home: on the
 * worker it is a remote channel, on which the tasklet sends the sum of the
 * squares of its chunk to the collector tasklet at coord.  The collector
 * checks the total against the closed form N(N+1)(2N+1)/6 and stops coord;
 * coord exits, its links drop, and the workers exit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tasklet_node.h"

#define MAX_WORKERS 16
#define N 1000000

static unsigned char g_secret[32];
static tl_node *g_node; /* this process's node */
static int g_ok;        /* coord: the total matched */

/* ---- the work tasklet: starts at coord, runs on a worker ---- */
typedef struct {
    tl_chan *results; /* arguments: coord's channel, */
    char worker[64];  /* where to run, */
    int64_t lo, hi;   /* and the chunk [lo, hi) */
    int64_t i, sum;
} work_t;

static const tl_field work_fields[] = {
    TL_FIELD(work_t, results, TL_T_CHAN), TL_FIELD(work_t, worker, TL_T_BYTES),
    TL_FIELD(work_t, lo, TL_T_I64), TL_FIELD(work_t, hi, TL_T_I64),
    TL_FIELD(work_t, i, TL_T_I64), TL_FIELD(work_t, sum, TL_T_I64),
};

static tl_status work_step(tl_frame *f, void *locals)
{
    work_t *L = locals;
    TL_BEGIN(f);
    TL_MIGRATE(f, L->worker); /* from here on, on the worker */
    for (L->i = L->lo; L->i < L->hi; L->i++)
        L->sum += L->i * L->i;
    printf("  %s: squares of [%lld, %lld) sum to %lld\n", tl_node_id(tl_frame_runtime(f)),
           (long long)L->lo, (long long)L->hi, (long long)L->sum);
    fflush(stdout);
    TL_SEND(f, L->results, tl_i64(L->sum)); /* remote: done once coord's collector took it */
    TL_END(f);
}

static const tl_func work_fn = {"offload.work", 1, work_step, sizeof(work_t), work_fields,
                                TL_COUNTOF(work_fields), NULL};

/* ---- the collector: runs at coord ---- */
typedef struct {
    tl_chan *results; /* arguments: coord's channel and the number of chunks */
    int64_t chunks, got, total;
    tl_value v;
} collect_t;

static const tl_field collect_fields[] = {
    TL_FIELD(collect_t, results, TL_T_CHAN), TL_FIELD(collect_t, chunks, TL_T_I64),
    TL_FIELD(collect_t, got, TL_T_I64), TL_FIELD(collect_t, total, TL_T_I64),
    TL_FIELD(collect_t, v, TL_T_VALUE),
};

static tl_status collect_step(tl_frame *f, void *locals)
{
    collect_t *L = locals;
    TL_BEGIN(f);
    for (L->got = 0; L->got < L->chunks; L->got++) {
        TL_RECV(f, L->results, L->v);
        L->total += tl_as_i64(L->v);
    }
    int64_t direct = (int64_t)N * (N + 1) / 2 * (2 * N + 1) / 3; /* no overflow */
    g_ok = L->total == direct;
    printf("sum of squares 1..%d: %lld, direct %lld: %s\n", N, (long long)L->total,
           (long long)direct, g_ok ? "match" : "MISMATCH");
    tl_node_stop(g_node);
    TL_END(f);
}

static const tl_func collect_fn = {"offload.collect", 1, collect_step, sizeof(collect_t),
                                   collect_fields, TL_COUNTOF(collect_fields), NULL};

/* ---- processes ---- */
/* The nodes' log lines (links up and down), shown with OFFLOAD_VERBOSE=1. */
static void log_line(void *id, const char *msg)
{
    if (getenv("OFFLOAD_VERBOSE"))
        fprintf(stderr, "offload %s: %s\n", (const char *)id, msg);
}

/* Sets g_node: node id around a new runtime with both functions. */
static int node_open(const char *id)
{
    tl_runtime *rt = NULL;
    tl_node_config cfg = {.node_id = id, .secret = g_secret, .secret_len = sizeof g_secret,
                          .log = log_line, .log_ud = (void *)id};
    int rc = tl_runtime_new(NULL, &rt);
    if (rc == TL_OK && (rc = tl_register(rt, &work_fn)) == TL_OK &&
        (rc = tl_register(rt, &collect_fn)) == TL_OK &&
        (rc = tl_node_new(rt, &cfg, &g_node)) == TL_OK)
        return TL_OK;
    fprintf(stderr, "offload %s: %s\n", id, rt ? tl_errmsg(rt) : tl_strerror(rc));
    tl_runtime_free(rt);
    return rc;
}

/* A worker: writes its address on fd, serves until coord's link, once up,
 * drops (or a minute passes). */
static int worker(const char *id, int fd)
{
    char addr[64] = "";
    int rc = node_open(id), seen = 0; /* seen: 1 coord is linked, 2 it was */
    if (rc == TL_OK && (rc = tl_node_listen(g_node, "tcp://127.0.0.1:0")) == TL_OK)
        snprintf(addr, sizeof addr, "%s", tl_node_address(g_node));
    ssize_t k = write(fd, addr, sizeof addr); /* "" tells coord it failed */
    close(fd);
    for (time_t end = time(NULL) + 60; k > 0 && rc == TL_OK && seen < 2 && time(NULL) < end;) {
        seen = tl_node_connected(g_node, "coord") ? 1 : 2 * seen;
        rc = tl_node_poll(g_node, 100);
    }
    if (rc != TL_OK)
        fprintf(stderr, "offload %s: %s\n", id, tl_node_errmsg(g_node));
    tl_runtime *rt = tl_node_runtime(g_node);
    tl_node_free(g_node);
    tl_runtime_free(rt);
    return k > 0 ? rc : TL_EIO;
}

/* Forks worker "w<i+1>" and reads its address (64 bytes) from a pipe. */
static pid_t start_worker(int i, char addr[64])
{
    int p[2];
    char id[16];
    snprintf(id, sizeof id, "w%d", i + 1);
    if (pipe(p) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        exit(worker(id, p[1]) == TL_OK ? 0 : 1);
    }
    close(p[1]);
    ssize_t k = pid > 0 ? read(p[0], addr, 64) : -1;
    close(p[0]);
    addr[63] = '\0';
    return k == 64 && addr[0] ? pid : -1;
}

/* Spawns the collector and one work tasklet per chunk, then runs coord. */
static int coordinate(int workers, int64_t chunks)
{
    tl_runtime *rt = tl_node_runtime(g_node);
    tl_chan *results;
    int rc = tl_chan_new(rt, 0, &results);
    collect_t c = {results, chunks, 0, 0, {0}};
    if (rc == TL_OK)
        rc = tl_spawn(rt, &collect_fn, &c, sizeof c, NULL);
    for (int64_t k = 0; k < chunks && rc == TL_OK; k++) {
        work_t w = {results, "", 1 + N * k / chunks, 1 + N * (k + 1) / chunks, 0, 0};
        snprintf(w.worker, sizeof w.worker, "w%d", (int)(k % workers) + 1);
        rc = tl_spawn(rt, &work_fn, &w, sizeof w, NULL);
    }
    tl_chan_release(results); /* NULL-safe; the tasklets hold their own */
    return rc == TL_OK ? tl_node_run(g_node) : rc;
}

int main(int argc, char **argv)
{
    int workers = argc > 1 ? atoi(argv[1]) : 3, started = 0, rc = TL_OK, ok = 1, status;
    pid_t pids[MAX_WORKERS];
    char addr[MAX_WORKERS][64], id[16];
    if (workers < 1 || workers > MAX_WORKERS)
        return fprintf(stderr, "usage: offload [WORKERS (1 to 16)]\n"), 2;
    FILE *urandom = fopen("/dev/urandom", "rb");
    if (!urandom || fread(g_secret, sizeof g_secret, 1, urandom) != 1)
        rc = TL_EIO;
    if (urandom)
        fclose(urandom);
    /* The workers first, so that they inherit nothing of coord's node. */
    for (; rc == TL_OK && started < workers; started++)
        if ((pids[started] = start_worker(started, addr[started])) < 0)
            rc = TL_EIO;
    if (rc == TL_OK)
        rc = node_open("coord");
    for (int i = 0; i < workers && rc == TL_OK; i++) {
        snprintf(id, sizeof id, "w%d", i + 1);
        if ((rc = tl_node_connect(g_node, addr[i])) == TL_OK)
            rc = tl_node_wait_peer(g_node, id, 5000);
    }
    printf("offload: %d workers, %d chunks\n", workers, 4 * workers);
    fflush(stdout); /* before the workers' lines */
    if (rc == TL_OK)
        rc = coordinate(workers, 4 * workers);
    if (rc != TL_OK)
        fprintf(stderr, "offload: %s\n", g_node ? tl_node_errmsg(g_node) : tl_strerror(rc));
    tl_runtime *rt = tl_node_runtime(g_node);
    tl_node_free(g_node); /* the links drop: the workers exit */
    tl_runtime_free(rt);
    for (int i = 0; i < started; i++)
        if (pids[i] > 0 && (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) ||
                            WEXITSTATUS(status) != 0))
            ok = 0;
    return rc == TL_OK && g_ok && ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
