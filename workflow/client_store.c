/*
 * client_store.c -- tl_wf_post, tl_wf_post_chan, tl_wf_cancel_at and
 * tl_wf_get on a postgresql:// location: what client.c does with its own
 * SQLite connection, done through a store handle of its own that never
 * claims the store (no ownership, no lease, no epoch).
 *
 * Invariants: a post is one transaction (tl__store_insert): the check that
 * its target exists and has not finished, and the wf_msg row, commit
 * together, and the row is announced to the owner's listener at commit
 * (so a running owner takes it in within milliseconds).  Awaiting a
 * result LISTENs before it first reads the row, so the announcement of
 * the workflow's final row (db.c, announce_ends) is never missed; it
 * reads again at least once a second in case the listener's connection
 * was lost.
 */
#define _GNU_SOURCE
#include "wf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int tl__wf_is_url(const char *path)
{
    return path && (!strncmp(path, "postgresql://", 13) || !strncmp(path, "postgres://", 11));
}

static int open_store(tl_runtime *rt, const char *url, int flags, tl_store **st)
{
    int rc = tl_store_open(url, flags, st);
    if (rc != TL_OK) {
        tl__wf_cerr(rt, rc, "cannot open the store: %s", tl_store_errmsg(*st));
        tl_store_close(*st);
        *st = NULL;
    }
    return rc;
}

typedef struct target {
    tl_runtime *rt;
    tl_store *st;
    int kind;
    const char *id;
} target;

static int exists(void *ud, const tl__row *r)
{
    (void)ud, (void)r;
    return TL_OK;
}

/* Inside the post's transaction: its target exists (and, a workflow,
 * has not finished). */
static int check_target(void *ud)
{
    target *t = ud;
    int st = 0, rc;
    if (t->kind == 2) {
        rc = tl__store_row_get(t->st, &tl__wf_t_chan, t->id, exists, NULL);
        if (rc == TL_ENOENT)
            return tl__wf_cerr(t->rt, TL_ENOENT, "no channel %s in the store (its owner opens it with "
                        "tl_wf_chan)", t->id);
    } else {
        rc = tl__wf_dbs_get(t->st, t->id, NULL, NULL, &st);
        if (rc == TL_ENOENT)
            return tl__wf_cerr(t->rt, TL_ENOENT, "no workflow %s in the store", t->id);
        if (rc == TL_OK && st >= TL_WF_DONE)
            return tl__wf_cerr(t->rt, TL_EDONE, "workflow %s already finished (%s)", t->id,
                        tl_wf_status_name(st));
    }
    return rc == TL_OK ? TL_OK : tl__wf_cerr(t->rt, rc, "posting to %s: %s", t->id,
                                      tl_store_errmsg(t->st));
}

int tl__wf_post_store(tl_runtime *rt, const char *url, int kind, const char *id,
                      const char *key, const void *p, size_t n)
{
    tl_store *st;
    int rc = open_store(rt, url, 0, &st);
    if (rc != TL_OK)
        return rc;
    char wfcol[TL_WF_ID_MAX + 2];
    snprintf(wfcol, sizeof wfcol, "%s%s", kind == 2 ? "\x1f" : "", id);
    target t = {rt, st, kind, id};
    tl__row row = {key, wfcol, tl__wf_wall_ns(), p, n, 0};
    rc = tl__store_insert(st, &tl__wf_t_msg, &row, check_target, &t);
    if (rc == TL_EEXIST)
        tl__wf_cerr(rt, TL_EEXIST, "a message with this deduplication key was posted to %s already", id);
    else if (rc == TL_ERANGE)
        tl__wf_cerr(rt, TL_ERANGE, "the message is larger than the store's record limit");
    else if (rc != TL_OK && rc != TL_ENOENT && rc != TL_EDONE)
        tl__wf_cerr(rt, rc, "posting to %s: %s", id, tl_store_errmsg(st));
    tl_store_close(st);
    return rc;
}

/* One read of id's row into *out. */
static int read_info(tl_runtime *rt, tl_store *st, const char *id, tl_wf_info *out)
{
    void *p = NULL;
    size_t n = 0;
    int status = 0;
    int rc = tl__wf_dbs_get(st, id, &p, &n, &status);
    if (rc == TL_ENOENT)
        return tl__wf_cerr(rt, TL_ENOENT, "no workflow %s in the store", id);
    if (rc != TL_OK)
        return tl__wf_cerr(rt, rc, "reading workflow %s: %s", id, tl_store_errmsg(st));
    return tl__wf_info_decode(rt, id, p, n, status, out);
}

int tl__wf_get_store(tl_runtime *rt, const char *url, const char *id, int64_t wait_ms,
                     tl_wf_info *out)
{
    tl_store *st;
    tl_store_listener *l = NULL;
    int rc = open_store(rt, url, TL_STORE_READONLY, &st);
    if (rc == TL_OK && wait_ms && tl_store_listen(url, &l) != TL_OK) {
        tl_store_listener_free(l); /* then it reads once a second */
        l = NULL;
    }
    int64_t until = wait_ms < 0 ? -1 : tl__wf_wall_ns() + wait_ms * 1000000;
    while (rc == TL_OK) {
        rc = read_info(rt, st, id, out);
        if (rc != TL_OK || out->status >= TL_WF_DONE || wait_ms == 0)
            break;
        tl_release(out->result);
        int64_t left = until < 0 ? 1000 : (until - tl__wf_wall_ns()) / 1000000;
        if (left <= 0) {
            rc = tl__wf_cerr(rt, TL_ETIMEDOUT, "workflow %s is still %s", id,
                      tl_wf_status_name(out->status));
            break;
        }
        int64_t ms = left > 1000 ? 1000 : left;
        if (l)
            tl_store_listener_wait(l, ms, NULL, 0);
        else
            nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000}, NULL);
    }
    tl_store_listener_free(l);
    tl_store_close(st);
    return rc;
}
