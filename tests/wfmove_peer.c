/*
 * wfmove_peer.c -- one node of tests/test_wf_move_proc.c: a runtime with
 * a SQLite store, a workflow engine and a node on it, as a real process
 * that the test kills with kill -9 and starts again.
 *
 *   wfmove_peer src NAME DB ADDR LOG N   dials ADDR; starts workflows
 *       wf-1 .. wf-N (m.flow, tests/wfmove_funcs.h; idempotently) and
 *       moves to node "B" each one its store shows waiting for "go"
 *       (its first step recorded); prints "all-moved" once every one is
 *       moved and acknowledged.
 *   wfmove_peer dst NAME DB ADDR LOG N   listens on ADDR (port 0: any),
 *       prints "listen ADDR" with the port.
 *
 * Both run their engine and node until killed.  Steps log "NAME KEY" to
 * LOG.  The secret comes from $TL_NODE_SECRET.
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tasklet.h"
#include "tasklet_node.h"
#include "tasklet_workflow.h"
#include "wfmove_funcs.h"
#include "../persist/persist.h" /* the participant interface, for WFMOVE_PAUSE */

#include <signal.h>

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "wfmove_peer %s: %s: %s\n", wfm_node, what, msg);
    exit(2);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void quiet(void *ud, const char *msg) { (void)ud; (void)msg; }

/* WFMOVE_PAUSE=1: the first checkpoint that holds a hand-off (at the
 * source, after a tl_wf_move) or an import (at the destination) stops
 * inside its transaction, after the engine's and the node's rows (this
 * participant joined last), prints "paused" and waits for SIGKILL. */
static tl_node *the_node;
static int src_moved;
static int pause_write(void *ud, tl__store_tx *tx)
{
    tl_node_stats s;
    (void)ud;
    (void)tx;
    tl_node_stats_get(the_node, &s);
    if (!src_moved && s.moved_in == 0)
        return TL_OK;
    printf("paused\n");
    fflush(stdout);
    for (;;)
        pause();
}
static const tl__participant pause_part = {"pause in the hand-off", pause_write, NULL, NULL};

/* Moves what may move; 1 once every workflow is moved and acknowledged. */
static int move_some(tl_wf *wf, tl_node *n, tl_runtime *scratch, const char *db, int count,
                     unsigned char *moved)
{
    int all = 1;
    for (int k = 1; k <= count; k++) {
        char id[32];
        tl_wf_info in;
        if (moved[k])
            continue;
        snprintf(id, sizeof id, "wf-%d", k);
        if (tl_wf_get(scratch, db, id, 0, &in) == TL_OK) {
            tl_release(in.result);
            if (in.status == TL_WF_MOVED)
                moved[k] = 1;
            else if (in.status == TL_WF_WAITING && strcmp(in.wait, "recv go") == 0)
                src_moved |= tl_wf_move(wf, id, "B") == TL_OK; /* else again later */
        }
        all &= moved[k];
    }
    tl_node_stats s;
    tl_node_stats_get(n, &s);
    return all && s.pending == 0;
}

int main(int argc, char **argv)
{
    if (argc != 7)
        die("usage", "src|dst NAME DB ADDR LOG N");
    int src = strcmp(argv[1], "src") == 0, count = atoi(argv[6]);
    snprintf(wfm_node, sizeof wfm_node, "%s", argv[2]);
    snprintf(wfm_log, sizeof wfm_log, "%s", argv[5]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    char secret[256];
    size_t slen;
    tl_runtime *rt, *scratch;
    tl_store *st;
    tl_wf *wf;
    tl_node *n;
    if (tl_runtime_new(NULL, &rt) || tl_runtime_new(NULL, &scratch))
        die("runtime", "out of memory");
    if (tl_node_secret_load(rt, NULL, secret, sizeof secret, &slen) != TL_OK)
        die("secret", tl_errmsg(rt));
    if (tl_store_open(argv[3], 0, &st) != TL_OK)
        die("store", "cannot open");
    if (tl_wf_new(rt, st, NULL, &wf) != TL_OK)
        die("engine", tl_errmsg(rt));
    tl_node_config cfg = {.node_id = argv[2], .secret = secret, .secret_len = slen,
                          .store = st, .log = quiet};
    if (tl_node_new(rt, &cfg, &n) != TL_OK)
        die("node", tl_errmsg(rt));
    if (tl_wf_register(wf, &wfm_flow) || tl_wf_register_step(wf, &wfm_add_step) ||
        tl_wf_register_step(wf, &wfm_hold_step))
        die("register", tl_wf_errmsg(wf));
    if (tl_wf_restore(wf) != TL_OK)
        die("restore", tl_wf_errmsg(wf));
    the_node = n;
    if (getenv("WFMOVE_PAUSE") && tl__store_join(st, &pause_part, NULL) != TL_OK)
        die("pause", "cannot join the store");
    if (src ? tl_node_connect(n, argv[4]) : tl_node_listen(n, argv[4]))
        die("link", tl_errmsg(rt));
    if (!src)
        printf("listen %s\n", tl_node_address(n));
    for (int k = 1; src && k <= count; k++) {
        char id[32];
        snprintf(id, sizeof id, "wf-%d", k);
        if (tl_wf_start(wf, id, &wfm_flow, tl_i64(k), NULL) != TL_OK)
            die("start", tl_wf_errmsg(wf));
    }
    unsigned char *moved = calloc((size_t)count + 1, 1);
    int said = 0;
    int64_t next = 0;
    for (;;) {
        int rc = tl_wf_run(wf, 0);
        if (rc != TL_OK && rc != TL_ETIMEDOUT)
            die("run", tl_wf_errmsg(wf));
        if (tl_node_poll(n, 2) != TL_OK)
            die("poll", tl_errmsg(rt));
        if (src && mono_ms() >= next) {
            next = mono_ms() + 20;
            if (move_some(wf, n, scratch, argv[3], count, moved) && !said++)
                printf("all-moved\n");
        }
    }
}
