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

static int cerr(tl_runtime *rt, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cerr(tl_runtime *rt, int code, const char *fmt, ...)
{
    if (rt) {
        char msg[600];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        tl__seterr(rt, code, "%s", msg);
    }
    return code;
}

int tl__wf_is_url(const char *path)
{
    return path && (!strncmp(path, "postgresql://", 13) || !strncmp(path, "postgres://", 11));
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int open_store(tl_runtime *rt, const char *url, int flags, tl_store **st)
{
    int rc = tl_store_open(url, flags, st);
    if (rc != TL_OK) {
        cerr(rt, rc, "cannot open the store: %s", tl_store_errmsg(*st));
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
            return cerr(t->rt, TL_ENOENT, "no channel %s in the store (its owner opens it with "
                        "tl_wf_chan)", t->id);
    } else {
        rc = tl__wf_dbs_get(t->st, t->id, NULL, NULL, &st);
        if (rc == TL_ENOENT)
            return cerr(t->rt, TL_ENOENT, "no workflow %s in the store", t->id);
        if (rc == TL_OK && st >= TL_WF_DONE)
            return cerr(t->rt, TL_EDONE, "workflow %s already finished (%s)", t->id,
                        tl_wf_status_name(st));
    }
    return rc == TL_OK ? TL_OK : cerr(t->rt, rc, "posting to %s: %s", t->id,
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
    tl__row row = {key, wfcol, now_ns(), p, n, 0};
    rc = tl__store_insert(st, &tl__wf_t_msg, &row, check_target, &t);
    if (rc == TL_EEXIST)
        cerr(rt, TL_EEXIST, "a message with this deduplication key was posted to %s already", id);
    else if (rc == TL_ERANGE)
        cerr(rt, TL_ERANGE, "the message is larger than the store's record limit");
    else if (rc != TL_OK && rc != TL_ENOENT && rc != TL_EDONE)
        cerr(rt, rc, "posting to %s: %s", id, tl_store_errmsg(st));
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
        return cerr(rt, TL_ENOENT, "no workflow %s in the store", id);
    if (rc != TL_OK)
        return cerr(rt, rc, "reading workflow %s: %s", id, tl_store_errmsg(st));
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
    int64_t until = wait_ms < 0 ? -1 : now_ns() + wait_ms * 1000000;
    while (rc == TL_OK) {
        rc = read_info(rt, st, id, out);
        if (rc != TL_OK || out->status >= TL_WF_DONE || wait_ms == 0)
            break;
        tl_release(out->result);
        int64_t left = until < 0 ? 1000 : (until - now_ns()) / 1000000;
        if (left <= 0) {
            rc = cerr(rt, TL_ETIMEDOUT, "workflow %s is still %s", id,
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
