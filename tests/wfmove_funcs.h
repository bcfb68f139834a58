/*
 * wfmove_funcs.h -- the workflow and steps the move tests run (in one
 * process, tests/test_wf_move.c, and as real processes,
 * tests/wfmove_peer.c): two steps and two receives, so a workflow can be
 * moved before, between and inside its steps.
 *
 *   m.flow(arg): a = add(arg); v1 = recv "go"; b = hold(v1);
 *                v2 = recv "fin"; return a + b + v2
 *
 * add returns arg + 1, hold returns 2 * arg (and, while wfm_block is set,
 * waits until it is cleared or its attempt is abandoned).  Each attempt
 * is counted and, when wfm_log is set, appended to that file as
 * "NODE KEY" (one write, O_APPEND: it survives a kill -9).
 */
#ifndef WFMOVE_FUNCS_H
#define WFMOVE_FUNCS_H

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tasklet.h"
#include "tasklet_workflow.h"

static char wfm_log[256], wfm_node[64];
static atomic_int wfm_calls, wfm_block, wfm_holding, wfm_saw_cancel;
static char wfm_keys[64][80];
static atomic_int wfm_nkeys;

static void wfm_note(tl_wf_ctx *cx)
{
    atomic_fetch_add(&wfm_calls, 1);
    int i = atomic_fetch_add(&wfm_nkeys, 1);
    if (i < 64)
        snprintf(wfm_keys[i], sizeof wfm_keys[i], "%s %s", wfm_node, tl_wf_ctx_key(cx));
    if (wfm_log[0]) {
        char line[160];
        int n = snprintf(line, sizeof line, "%s %s\n", wfm_node, tl_wf_ctx_key(cx));
        int fd = open(wfm_log, O_WRONLY | O_APPEND | O_CREAT, 0600);
        if (fd >= 0) {
            ssize_t w = write(fd, line, (size_t)n);
            (void)w;
            close(fd);
        }
    }
}

static int wfm_add(tl_wf_ctx *cx, tl_value arg, tl_value *res)
{
    wfm_note(cx);
    *res = tl_i64(tl_as_i64(arg) + 1);
    return TL_OK;
}

static int wfm_hold(tl_wf_ctx *cx, tl_value arg, tl_value *res)
{
    wfm_note(cx);
    atomic_fetch_add(&wfm_holding, 1);
    while (atomic_load(&wfm_block) && !tl_wf_ctx_canceled(cx)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (tl_wf_ctx_canceled(cx))
        atomic_fetch_add(&wfm_saw_cancel, 1);
    *res = tl_i64(2 * tl_as_i64(arg));
    return TL_OK;
}

static const tl_wf_step wfm_add_step = {"add", wfm_add, 0, 0, 0, 0, 0};
static const tl_wf_step wfm_hold_step = {"hold", wfm_hold, 0, 0, 0, 0, 0};

typedef struct wfm_flow_t {
    tl_value arg, a, v1, b, v2;
} wfm_flow_t;
static const tl_field wfm_flow_fields[] = {
    TL_FIELD(wfm_flow_t, arg, TL_T_VALUE), TL_FIELD(wfm_flow_t, a, TL_T_VALUE),
    TL_FIELD(wfm_flow_t, v1, TL_T_VALUE),  TL_FIELD(wfm_flow_t, b, TL_T_VALUE),
    TL_FIELD(wfm_flow_t, v2, TL_T_VALUE)};

static tl_status wfm_flow_step(tl_frame *f, void *l)
{
    wfm_flow_t *L = l;
    TL_BEGIN(f);
    TL_WF_STEP(f, &wfm_add_step, L->arg, L->a);
    TL_WF_RECV(f, "go", -1, L->v1);
    TL_WF_STEP(f, &wfm_hold_step, L->v1, L->b);
    TL_WF_RECV(f, "fin", -1, L->v2);
    TL_RETURN(f, tl_i64(tl_as_i64(L->a) + tl_as_i64(L->b) + tl_as_i64(L->v2)));
    TL_END(f);
}
static const tl_func wfm_flow = {"m.flow", 1, wfm_flow_step, sizeof(wfm_flow_t),
                                 wfm_flow_fields, 5, NULL};

#endif
