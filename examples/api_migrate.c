/*
 * api_migrate.c -- the code of docs/API.md section 15, "Moving tasklets",
 * compiled so that the guide's examples stay true.
 *
 *   api_migrate            prints three results and the transfer count
 *
 * Two nodes in one process, "home" and "away", linked with tl_node_pair and
 * each driven by its own thread (home by main, away by a second thread).
 * At home a collector receives three numbers on home's channel "results":
 *   - square_sum moves itself to away with TL_MIGRATE and sends from there
 *     on the channel it brought along (now a remote channel);
 *   - adder, runnable at home, is moved from outside with tl_node_migrate;
 *   - another adder, spawned at away, reaches the channel by its name with
 *     tl_node_chan(away, "home/results"), which home exported
 *     (tl_node_export).
 */
#include <pthread.h>
#include <stdio.h>

#include "tasklet_node.h"

static tl_node *home, *away;

/* [square_sum] */
typedef struct {
    tl_chan *results; /* arguments: home's channel */
    int64_t n;        /* and how far to sum */
    int64_t i, sum;
} square_sum_t;

static const tl_field square_sum_fields[] = {
    TL_FIELD(square_sum_t, results, TL_T_CHAN), TL_FIELD(square_sum_t, n, TL_T_I64),
    TL_FIELD(square_sum_t, i, TL_T_I64),        TL_FIELD(square_sum_t, sum, TL_T_I64),
};

static tl_status square_sum_step(tl_frame *f, void *locals)
{
    square_sum_t *L = locals;
    TL_BEGIN(f);
    TL_MIGRATE(f, "away");                  /* from here on it runs on node "away" */
    for (L->i = 1; L->i <= L->n; L->i++)
        L->sum += L->i * L->i;
    TL_SEND(f, L->results, tl_i64(L->sum)); /* results stayed home: a remote send */
    TL_END(f);
}

static const tl_func square_sum_fn = {"api.square_sum", 1, square_sum_step,
                                      sizeof(square_sum_t), square_sum_fields,
                                      TL_COUNTOF(square_sum_fields), NULL};
/* [square_sum] */

/* Sends 1 + 2 + ... + n on results, wherever it runs. */
typedef struct {
    tl_chan *results;
    int64_t n;
} adder_t;

static const tl_field adder_fields[] = {
    TL_FIELD(adder_t, results, TL_T_CHAN), TL_FIELD(adder_t, n, TL_T_I64),
};

static tl_status adder_step(tl_frame *f, void *locals)
{
    adder_t *L = locals;
    TL_BEGIN(f);
    TL_SEND(f, L->results, tl_i64(L->n * (L->n + 1) / 2));
    TL_END(f);
}

static const tl_func adder_fn = {"api.adder", 1, adder_step, sizeof(adder_t), adder_fields,
                                 TL_COUNTOF(adder_fields), NULL};

/* At home: receives `want` numbers, then stops both nodes. */
typedef struct {
    tl_chan *results;
    int64_t want, got;
    tl_value v;
} collect_t;

static const tl_field collect_fields[] = {
    TL_FIELD(collect_t, results, TL_T_CHAN), TL_FIELD(collect_t, want, TL_T_I64),
    TL_FIELD(collect_t, got, TL_T_I64),      TL_FIELD(collect_t, v, TL_T_VALUE),
};

static tl_status collect_step(tl_frame *f, void *locals)
{
    collect_t *L = locals;
    TL_BEGIN(f);
    for (L->got = 0; L->got < L->want; L->got++) {
        TL_RECV(f, L->results, L->v);
        printf("home received %lld\n", (long long)tl_as_i64(L->v));
    }
    tl_node_stop(away); /* callable from another thread */
    tl_node_stop(home);
    TL_END(f);
}

static const tl_func collect_fn = {"api.collect", 1, collect_step, sizeof(collect_t),
                                   collect_fields, TL_COUNTOF(collect_fields), NULL};

/* [away] */
static void *drive_away(void *arg)
{
    tl_runtime *rt = arg;
    tl_chan *results;
    /* a remote operation needs the link up: wait for it before running */
    int rc = tl_node_wait_peer(away, "home", 5000);
    if (rc == TL_OK)
        rc = tl_node_chan(away, "home/results", &results); /* home's, by name */
    if (rc == TL_OK) {
        adder_t b = {.results = results, .n = 1000};
        rc = tl_spawn(rt, &adder_fn, &b, sizeof b, NULL);
        tl_chan_release(results);
    }
    if (rc == TL_OK)
        rc = tl_node_run(away);
    if (rc != TL_OK) {
        fprintf(stderr, "away: %s\n", tl_node_errmsg(away));
        tl_node_stop(home);
    }
    return NULL;
}
/* [away] */

/* [setup] */
/* A runtime with the functions both nodes need, wrapped in node `id`. */
static int node_of(const char *id, tl_runtime **rt, tl_node **n)
{
    tl_node_config cfg = {0};
    cfg.node_id = id;           /* no secret: tl_node_pair needs none */
    int rc = tl_runtime_new(NULL, rt);
    if (rc == TL_OK)
        rc = tl_register(*rt, &square_sum_fn);
    if (rc == TL_OK)
        rc = tl_register(*rt, &adder_fn);
    if (rc == TL_OK)
        rc = tl_node_new(*rt, &cfg, n);
    return rc;
}
/* [setup] */

static int run(tl_runtime *hrt, tl_runtime *art)
{
    tl_chan *results;
    tl_tasklet *t;
    pthread_t thread;
    /* [home] */
    int rc = tl_node_pair(home, away);                   /* before either runs */
    if (rc == TL_OK)
        rc = tl_register(hrt, &collect_fn);
    if (rc == TL_OK)
        rc = tl_chan_new(hrt, 0, &results);
    if (rc != TL_OK)
        return rc;
    rc = tl_node_export(home, results, "results");       /* away asks for it by name */
    if (rc != TL_OK) {
        tl_chan_release(results);
        return rc;
    }
    collect_t c = {.results = results, .want = 3};
    rc = tl_spawn(hrt, &collect_fn, &c, sizeof c, NULL);
    if (rc != TL_OK || pthread_create(&thread, NULL, drive_away, art) != 0) {
        tl_chan_release(results);
        return rc != TL_OK ? rc : TL_EIO;
    }
    rc = tl_node_wait_peer(home, "away", 5000);          /* the handshake */

    /* from inside: square_sum runs TL_MIGRATE itself */
    square_sum_t s = {.results = results, .n = 10};
    if (rc == TL_OK)
        rc = tl_spawn(hrt, &square_sum_fn, &s, sizeof s, NULL);
    /* from outside: move adder before it ever runs here */
    adder_t a = {.results = results, .n = 100};
    if (rc == TL_OK)
        rc = tl_spawn(hrt, &adder_fn, &a, sizeof a, &t);
    if (rc == TL_OK) {
        rc = tl_node_migrate(home, t, "away");           /* t now reads TL_EMOVED */
        tl_tasklet_release(t);
    }
    tl_chan_release(results);                            /* the tasklets hold it */

    if (rc == TL_OK)
        rc = tl_node_run(home);                          /* until collect stops it */
    else
        tl_node_stop(away);
    pthread_join(thread, NULL);
    /* [home] */
    return rc;
}

int main(void)
{
    tl_runtime *hrt = NULL, *art = NULL;
    int rc = node_of("home", &hrt, &home);
    if (rc == TL_OK)
        rc = node_of("away", &art, &away);
    if (rc == TL_OK)
        rc = run(hrt, art);
    if (rc != TL_OK)
        fprintf(stderr, "api_migrate: %s: %s\n", tl_strerror(rc),
                hrt ? tl_errmsg(hrt) : "cannot create a runtime");
    else {
        tl_node_stats st;
        tl_node_stats_get(home, &st);
        printf("home moved %llu tasklets out\n", (unsigned long long)st.moved_out);
    }
    tl_node_free(away);
    tl_node_free(home);
    tl_runtime_free(art);
    tl_runtime_free(hrt);
    return rc == TL_OK ? 0 : 1;
}
