/*
 * travel.c -- one tasklet visits three processes in turn and comes home.
 *
 * The same binary runs as a node or as home (examples/travel.sh starts
 * them all on 127.0.0.1; the cluster's secret is in $TL_NODE_SECRET, or in
 * the file named by $TRAVEL_SECRET_FILE, never on a command line):
 *
 *   travel node ID WEIGHT [PEER=ADDR...]  listens on a free TCP port, prints
 *                                         "ID listening on ADDR", dials the
 *                                         peers; exits when home has left
 *   travel home PEER=ADDR...              dials the peers, then sends the
 *                                         traveler through them in order
 *
 * The traveler keeps what it learns in its locals: the route so far (node
 * ids) and a running total, to which each node adds its WEIGHT.  Its frame
 * moves with TL_MIGRATE and resumes on the next node right after the macro.
 * A hop that fails (the next link is not up yet) resumes at the same point
 * with the error, caught: the traveler waits 20 ms and tries again.  Back
 * home it prints "home -> n1 -> n2 -> n3 -> home, total 60".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tasklet_node.h"

#define MAX_HOPS 8
#define MAX_TRIES 100
#define NODE_LIFETIME_S 60 /* a node left behind gives up after this */

static int64_t g_weight; /* what this process adds to the total */
static tl_node *g_node;  /* this process's node */
static int g_home_done;  /* home: the traveler came back */

/* ---- the traveler ---- */
typedef struct {
    char hops[MAX_HOPS][64]; /* arguments: the nodes to visit, in order */
    int64_t nhops;
    int64_t hop, tries, total;
    char route[MAX_HOPS * 68 + 16];
} traveler_t;

static const tl_field traveler_fields[] = {
    TL_FIELD(traveler_t, hops, TL_T_BYTES), TL_FIELD(traveler_t, nhops, TL_T_I64),
    TL_FIELD(traveler_t, hop, TL_T_I64), TL_FIELD(traveler_t, tries, TL_T_I64),
    TL_FIELD(traveler_t, total, TL_T_I64), TL_FIELD(traveler_t, route, TL_T_BYTES),
};

/* Hop i goes to hops[i]; the last hop (i == nhops) goes home. */
static const char *next_stop(const traveler_t *L)
{
    return L->hop < L->nhops ? L->hops[L->hop] : "home";
}

/* Runs on the node just reached: notes it and adds its weight. */
static void arrive(tl_frame *f, traveler_t *L)
{
    size_t len = strlen(L->route);
    snprintf(L->route + len, sizeof L->route - len, " -> %s", tl_node_id(tl_frame_runtime(f)));
    L->total += g_weight;
}

static tl_status traveler_step(tl_frame *f, void *locals)
{
    traveler_t *L = locals;
    TL_BEGIN(f);
    snprintf(L->route, sizeof L->route, "%s", tl_node_id(tl_frame_runtime(f)));
    tl_frame_catch(f, 1); /* a failed hop resumes with the error, not unwinding */
    for (L->hop = 0; L->hop <= L->nhops; L->hop++) {
        for (L->tries = 0;; L->tries++) {
            TL_MIGRATE(f, next_stop(L));
            if (tl_frame_error(f) == TL_OK)
                break; /* we are there now: this line runs on the new node */
            if (L->tries == MAX_TRIES)
                TL_FAIL(f, TL_ELINK, tl_frame_errmsg(f));
            TL_SLEEP(f, 20);
        }
        arrive(f, L);
    }
    printf("%s, total %lld\n", L->route, (long long)L->total);
    fflush(stdout);
    g_home_done = 1;
    TL_END(f);
}

static const tl_func traveler_fn = {"travel.traveler", 1, traveler_step, sizeof(traveler_t),
                                    traveler_fields, TL_COUNTOF(traveler_fields), NULL};

/* ---- the processes ---- */
/* Prints "travel: what: detail" to stderr and returns rc. */
static int complain(int rc, const char *what, const char *detail)
{
    fprintf(stderr, "travel: %s%s%s\n", what, *detail ? ": " : "", detail);
    return rc;
}

static void quiet_log(void *ud, const char *msg)
{
    (void)ud;
    if (getenv("TRAVEL_VERBOSE"))
        fprintf(stderr, "travel %s: %s\n", tl_node_name(g_node), msg);
}

/* Dials each PEER=ADDR argument and waits until every link is up. */
static int link_peers(tl_node *n, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        int rc = eq ? tl_node_connect(n, eq + 1) : TL_EINVAL;
        if (rc != TL_OK)
            return complain(rc, "bad peer (want ID=tcp://HOST:PORT)", argv[i]);
    }
    for (int i = 0; i < argc; i++) {
        *strchr(argv[i], '=') = '\0';
        int rc = tl_node_wait_peer(n, argv[i], 5000);
        if (rc != TL_OK)
            return complain(rc, "waiting for a peer", tl_node_errmsg(n));
    }
    return TL_OK;
}

/* A node serves until home, once linked, has left (or a timeout). */
static int serve(tl_node *n)
{
    time_t end = time(NULL) + NODE_LIFETIME_S;
    /* seen: 0 home not linked yet, 1 linked, 2 gone */
    for (int seen = 0; seen < 2; seen = tl_node_connected(n, "home") ? 1 : 2 * seen) {
        int rc = time(NULL) < end ? tl_node_poll(n, 100) : TL_ELINK;
        if (rc != TL_OK)
            return complain(rc, "serving", rc == TL_ELINK ? "home never came" : tl_node_errmsg(n));
    }
    return TL_OK;
}

/* Home spawns the traveler with the route, then runs until it is back. */
static int send_traveler(tl_node *n, int argc, char **argv)
{
    traveler_t args;
    memset(&args, 0, sizeof args);
    if (argc > MAX_HOPS)
        return complain(TL_EINVAL, "too many hops", "");
    for (int i = 0; i < argc; i++)
        snprintf(args.hops[i], sizeof args.hops[i], "%s", argv[i]); /* ids, after link_peers */
    args.nhops = argc;
    int rc = tl_spawn(tl_node_runtime(n), &traveler_fn, &args, sizeof args, NULL);
    time_t end = time(NULL) + 10;
    while (rc == TL_OK && !g_home_done && time(NULL) < end)
        rc = tl_node_poll(n, 100);
    if (rc != TL_OK)
        return complain(rc, "home", tl_node_errmsg(n));
    return g_home_done ? TL_OK : complain(TL_ELINK, "the traveler did not come back", "");
}

static int run(tl_runtime *rt, int argc, char **argv)
{
    static unsigned char secret[256];
    size_t secret_len;
    int home = strcmp(argv[1], "home") == 0;
    /* from $TL_NODE_SECRET, or the file $TRAVEL_SECRET_FILE: never argv */
    int rc = tl_node_secret_load(rt, getenv("TRAVEL_SECRET_FILE"), secret, sizeof secret,
                                 &secret_len);
    if (rc != TL_OK)
        return complain(rc, "secret", tl_errmsg(rt));
    tl_node_config cfg = {.node_id = home ? "home" : argv[2], .secret = secret,
                          .secret_len = secret_len, .log = quiet_log};
    rc = tl_register(rt, &traveler_fn);
    if (rc == TL_OK)
        rc = tl_node_new(rt, &cfg, &g_node);
    if (rc != TL_OK)
        return complain(rc, "setup", tl_errmsg(rt));
    if (home) {
        rc = link_peers(g_node, argc - 2, argv + 2);
        if (rc == TL_OK)
            rc = send_traveler(g_node, argc - 2, argv + 2);
    } else {
        g_weight = strtoll(argv[3], NULL, 10);
        if ((rc = tl_node_listen(g_node, "tcp://127.0.0.1:0")) != TL_OK)
            complain(rc, "listen", tl_node_errmsg(g_node));
        if (rc == TL_OK) {
            printf("%s listening on %s\n", argv[2], tl_node_address(g_node));
            fflush(stdout); /* travel.sh waits for this line */
            rc = link_peers(g_node, argc - 4, argv + 4);
        }
        if (rc == TL_OK)
            rc = serve(g_node);
    }
    tl_node_free(g_node);
    return rc;
}

int main(int argc, char **argv)
{
    tl_runtime *rt;
    if (argc < 3 || (strcmp(argv[1], "home") != 0 && (strcmp(argv[1], "node") != 0 || argc < 4))) {
        fprintf(stderr, "usage: travel node ID WEIGHT [PEER=ADDR...]\n"
                        "       travel home PEER=ADDR...\n"
                        "(the secret, 16 bytes or more, in $TL_NODE_SECRET or in the file\n"
                        "$TRAVEL_SECRET_FILE, mode 600; never on the command line; see "
                        "travel.sh)\n");
        return 2;
    }
    if (tl_runtime_new(NULL, &rt) != TL_OK)
        return EXIT_FAILURE;
    int rc = run(rt, argc, argv);
    tl_runtime_free(rt);
    return rc == TL_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
