/*
 * client.c -- what any process can do with only the store's path: post a
 * message, ask for a cancel, read or await a workflow.
 *
 * Invariants: each call opens its own SQLite connection (so it works
 * while the owner runs, with no ownership, node or secret), writes in one
 * short transaction of its own (BEGIN IMMEDIATE, so the existence check
 * and the insert are atomic with respect to the owner's commits) and
 * closes.  A post is a row in wf_msg; the owner takes it in inside a
 * checkpoint transaction (db.c), once.  Waiting for a result sleeps on
 * inotify (watch.c), not in a polling loop.
 */
#define _GNU_SOURCE
#include "wf_internal.h"

#include <poll.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int tl__wf_cerr(tl_runtime *rt, int code, const char *fmt, ...)
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

static int open_db(tl_runtime *rt, const char *path, int rw, sqlite3 **db)
{
    *db = NULL;
    if (!path)
        return tl__wf_cerr(rt, TL_EINVAL, "no store path");
    int rc = sqlite3_open_v2(path, db, rw ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_close(*db);
        *db = NULL;
        return tl__wf_cerr(rt, TL_ENOENT, "cannot open the store %s: %s", path, sqlite3_errstr(rc));
    }
    tl__wf_busy(*db, 10000);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(*db, "SELECT 1 FROM wf LIMIT 0", -1, &s, NULL) != SQLITE_OK) {
        sqlite3_close(*db);
        *db = NULL;
        return tl__wf_cerr(rt, TL_ENOENT, "%s holds no workflows (not a workflow store)", path);
    }
    sqlite3_finalize(s);
    return TL_OK;
}

/* A post is as durable as the owner's own commits: fsync'd unless the
 * owner runs its store without (wf_conf, written by tl_wf_new). */
static void follow_durability(sqlite3 *db)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT value FROM wf_conf WHERE key = 'durability'", -1, &s,
                           NULL) != SQLITE_OK)
        return; /* a store from before wf_conf: fsync */
    int nosync = sqlite3_step(s) == SQLITE_ROW &&
                 strcmp((const char *)sqlite3_column_text(s, 0), "nosync") == 0;
    sqlite3_finalize(s);
    if (nosync)
        sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
}

/* Whether the store has named channel name (table wf_chan). */
static int chan_known(tl_runtime *rt, sqlite3 *db, const char *name)
{
    sqlite3_stmt *s;
    int found = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM wf_chan WHERE name = ?", -1, &s, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(s) == SQLITE_ROW;
        sqlite3_finalize(s);
    }
    return found ? TL_OK
                 : tl__wf_cerr(rt, TL_ENOENT, "no channel %s in the store (its owner opens it with "
                        "tl_wf_chan)", name);
}

/* Inside the post's transaction: its target exists (and, a workflow,
 * has not finished). */
static int check_target(tl_runtime *rt, sqlite3 *db, int kind, const char *id)
{
    int st = 0;
    if (kind == 2)
        return chan_known(rt, db, id);
    void *p = NULL;
    size_t n = 0;
    int rc = tl__wf_db_get(db, id, &p, &n, &st);
    if (rc == TL_ENOENT)
        return tl__wf_cerr(rt, TL_ENOENT, "no workflow %s in the store", id);
    if (rc == TL_OK && st == TL_WF_MOVED) {
        wf_rec r;
        int64_t a, b;
        memset(&r, 0, sizeof r);
        tl__wf_unpack_rec(p, n, &r, &a, &b);
        free(r.result);
        free(r.sarg);
        free(p);
        return tl__wf_cerr(rt, TL_EMOVED, "workflow %s moved to node %s: post to that node's store",
                    id, r.move_to);
    }
    free(p);
    if (rc == TL_OK && st >= TL_WF_DONE)
        return tl__wf_cerr(rt, TL_EDONE, "workflow %s already finished (%s)", id,
                    tl_wf_status_name(st));
    return rc;
}

/* Inserts a wf_msg row for id (a workflow, or kind 2 a named channel),
 * in a transaction that first checks its target. */
static int insert_msg(tl_runtime *rt, sqlite3 *db, int kind, const char *id, const char *key,
                      const void *p, size_t n)
{
    char wfcol[TL_WF_ID_MAX + 2];
    snprintf(wfcol, sizeof wfcol, "%s%s", kind == 2 ? "\x1f" : "", id);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return tl__wf_cerr(rt, TL_ESTORE, "posting to %s: %s", id, sqlite3_errmsg(db));
    int rc = check_target(rt, db, kind, id);
    sqlite3_stmt *s = NULL;
    if (rc == TL_OK && sqlite3_prepare_v2(db, "INSERT INTO wf_msg(key, wf, time, data) "
                                          "VALUES(?,?,?,?)", -1, &s, NULL) != SQLITE_OK)
        rc = tl__wf_cerr(rt, TL_ESTORE, "posting to %s: %s", id, sqlite3_errmsg(db));
    if (rc == TL_OK) {
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, wfcol, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, tl__wf_wall_ns());
        sqlite3_bind_blob(s, 4, p, (int)n, SQLITE_STATIC);
        int src = sqlite3_step(s);
        if (src == SQLITE_CONSTRAINT || (sqlite3_extended_errcode(db) & 0xff) == SQLITE_CONSTRAINT)
            rc = tl__wf_cerr(rt, TL_EEXIST, "a message with this deduplication key was posted to %s "
                      "already", id);
        else if (src == SQLITE_TOOBIG)
            rc = tl__wf_cerr(rt, TL_ERANGE, "the message is larger than the store's record limit");
        else if (src != SQLITE_DONE)
            rc = tl__wf_cerr(rt, TL_ESTORE, "posting to %s: %s", id, sqlite3_errmsg(db));
    }
    sqlite3_finalize(s);
    if (rc == TL_OK && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = tl__wf_cerr(rt, TL_EIO, "posting to %s: %s", id, sqlite3_errmsg(db));
    if (rc != TL_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static void random_key(char *out, size_t cap, const char *id, const char *tag)
{
    char x[40];
    if (tl__new_xid(x) != TL_OK)
        snprintf(x, sizeof x, "%llx-%d", (unsigned long long)tl__wf_wall_ns(), (int)getpid());
    snprintf(out, cap, "%s|%s|%s", id, tag, x);
}

static int post(tl_runtime *rt, const char *path, const char *id, int kind, const char *topic,
                tl_value msg, const char *dedup)
{
    if (tl__wf_check_id(id) != TL_OK)
        return tl__wf_cerr(rt, TL_EINVAL, "a workflow id is 1 to %d bytes with no control characters",
                    TL_WF_ID_MAX);
    if (kind == 2 && strlen(id) > TL_WF_NAME_MAX)
        return tl__wf_cerr(rt, TL_EINVAL, "a channel name is 1 to %d bytes", TL_WF_NAME_MAX);
    if (kind == 0 && (!topic || !topic[0] || strlen(topic) > TL_WF_NAME_MAX))
        return tl__wf_cerr(rt, TL_EINVAL, "a topic is 1 to %d bytes", TL_WF_NAME_MAX);
    if (dedup && (!dedup[0] || strlen(dedup) > 200))
        return tl__wf_cerr(rt, TL_EINVAL, "a deduplication key is 1 to 200 bytes");
    void *val = NULL, *p = NULL;
    size_t vlen = 0, n = 0;
    int rc = tl__wf_pack(msg, &val, &vlen);
    if (rc == TL_OK)
        rc = tl__wf_pack_msg(kind, topic, val, vlen, 0, &p, &n);
    free(val);
    if (rc != TL_OK)
        return tl__wf_cerr(rt, rc, "the message cannot be encoded: %s", tl_strerror(rc));
    if (n > TL__MAX_DOC - 4096) {
        free(p);
        return tl__wf_cerr(rt, TL_ERANGE, "a message of %zu bytes is larger than the store's record "
                    "limit", n);
    }
    char key[320], target[TL_WF_ID_MAX + 2];
    snprintf(target, sizeof target, "%s%s", kind == 2 ? "\x1f" : "", id);
    if (dedup)
        snprintf(key, sizeof key, "%s|k|%s", target, dedup);
    else
        random_key(key, sizeof key, target, kind ? "c" : "r");
    if (tl__wf_is_url(path)) { /* PostgreSQL: client_store.c */
        rc = tl__wf_post_store(rt, path, kind, id, key, p, n);
        free(p);
        return rc;
    }
    sqlite3 *db;
    rc = open_db(rt, path, 1, &db);
    if (rc == TL_OK)
        follow_durability(db);
    if (rc == TL_OK)
        rc = insert_msg(rt, db, kind, id, key, p, n);
    sqlite3_close(db);
    free(p);
    return rc;
}

int tl_wf_post(tl_runtime *rt, const char *path, const char *id, const char *topic,
               tl_value msg, const char *dedup_key)
{
    return post(rt, path, id, 0, topic, msg, dedup_key);
}

int tl_wf_post_chan(tl_runtime *rt, const char *path, const char *name, tl_value msg,
                    const char *dedup_key)
{
    return post(rt, path, name, 2, name, msg, dedup_key);
}

int tl_wf_cancel_at(tl_runtime *rt, const char *path, const char *id)
{
    return post(rt, path, id, 1, "", tl_nil(), NULL);
}

static int read_info(tl_runtime *rt, sqlite3 *db, const char *id, tl_wf_info *out)
{
    void *p = NULL;
    size_t n = 0;
    int st = 0;
    int rc = tl__wf_db_get(db, id, &p, &n, &st);
    if (rc == TL_ENOENT)
        return tl__wf_cerr(rt, TL_ENOENT, "no workflow %s in the store", id);
    if (rc != TL_OK)
        return tl__wf_cerr(rt, rc, "reading workflow %s: %s", id, sqlite3_errmsg(db));
    return tl__wf_info_decode(rt, id, p, n, st, out);
}

/* Frees p. */
int tl__wf_info_decode(tl_runtime *rt, const char *id, const void *p, size_t n, int st,
                       tl_wf_info *out)
{
    int rc;
    wf_rec r;
    int64_t a, b;
    memset(&r, 0, sizeof r);
    rc = tl__wf_unpack_rec(p, n, &r, &a, &b);
    free((void *)p);
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "%s", id);
    snprintf(out->func, sizeof out->func, "%s", r.func);
    snprintf(out->parent, sizeof out->parent, "%s", r.parent);
    out->status = st;
    static const char *const kinds[] = {"", "step", "recv", "join", "sleep", "select"};
    if (r.wait > 0 && r.wait <= 5)
        snprintf(out->wait, sizeof out->wait, "%s %s", kinds[r.wait], r.what);
    out->deadline = r.deadline;
    out->steps = r.recorded;
    out->created = r.created;
    out->updated = r.updated;
    out->finished = r.finished;
    out->error = r.error;
    snprintf(out->errmsg, sizeof out->errmsg, "%s", r.errmsg);
    snprintf(out->moved_to, sizeof out->moved_to, "%s", st == TL_WF_MOVED ? r.move_to : "");
    snprintf(out->moved_from, sizeof out->moved_from, "%s", r.moved_from);
    snprintf(out->move_error, sizeof out->move_error, "%s", r.move_error);
    if (rc == TL_OK && st == TL_WF_DONE && rt)
        rc = tl__wf_unpack(rt, r.result, r.rlen, &out->result);
    free(r.result);
    free(r.sarg);
    return rc == TL_OK ? TL_OK : tl__wf_cerr(rt, rc, "workflow %s: its row does not decode", id);
}

int tl_wf_get(tl_runtime *rt, const char *path, const char *id, int64_t wait_ms,
              tl_wf_info *out)
{
    if (!rt || !out || !id)
        return TL_EINVAL;
    if (tl__wf_is_url(path))
        return tl__wf_get_store(rt, path, id, wait_ms, out);
    sqlite3 *db;
    int rc = open_db(rt, path, 0, &db);
    int watch = rc == TL_OK && wait_ms ? tl__wf_watch_open(path, 0) : -1;
    int64_t until = wait_ms < 0 ? -1 : tl__wf_wall_ns() + wait_ms * 1000000;
    while (rc == TL_OK) {
        rc = read_info(rt, db, id, out);
        if (rc != TL_OK || out->status >= TL_WF_DONE || wait_ms == 0)
            break;
        int64_t left = until < 0 ? 1000 : (until - tl__wf_wall_ns()) / 1000000;
        if (left <= 0) {
            rc = tl__wf_cerr(rt, TL_ETIMEDOUT, "workflow %s is still %s", id,
                      tl_wf_status_name(out->status));
            break;
        }
        struct pollfd pf = {watch, POLLIN, 0};
        int ms = watch < 0 ? 50 : left > 1000 ? 1000 : (int)left;
        if (watch >= 0 ? poll(&pf, 1, ms) > 0 : (usleep((useconds_t)ms * 1000), 0))
            tl__wf_watch_drain(watch);
    }
    if (watch >= 0)
        close(watch);
    sqlite3_close(db);
    return rc;
}
