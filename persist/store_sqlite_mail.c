/*
 * store_sqlite_mail.c -- the SQLite backend's mailbox (FORMAT.md section
 * 7): rows handed from one runtime to another through the store, taken by
 * deleting them, refused into the dead letters (mailbox_refused).
 * Invariants: every operation runs inside the caller's checkpoint
 * transaction (store_backend.h); a row is taken at most once, since a
 * take or refusal that finds it gone fails with TL_EBUSY.
 */
#include "store_sqlite_int.h"

/* Refused mailbox rows (dead letters), created by the first refusal. */
#define REFUSED_SQL                                                                        \
    "CREATE TABLE IF NOT EXISTS mailbox_refused(xid TEXT PRIMARY KEY, to_node TEXT NOT NULL," \
    " from_node TEXT NOT NULL, time INTEGER NOT NULL, data BLOB NOT NULL,"                  \
    " reason TEXT NOT NULL)"

/* ---- the mailbox ---- */

int tl__sq_mail_read(tl__store_be *be, const char *to, tl__mail_fn fn, void *ud)
{
    sq *q = (sq *)be;
    sqlite3_stmt *s;
    int rc, out = TL_OK;
    if (sqlite3_prepare_v2(q->db, "SELECT xid, to_node, from_node, time, data FROM mailbox "
                           "WHERE to_node = ? ORDER BY time, xid", -1, &s, NULL) != SQLITE_OK)
        return tl__sq_last_err(q, "reading the mailbox");
    sqlite3_bind_text(s, 1, to, -1, SQLITE_STATIC);
    while (out == TL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *xid = (const char *)sqlite3_column_text(s, 0);
        const char *from = (const char *)sqlite3_column_text(s, 2);
        tl__mail_row m = {xid ? xid : "", to, from ? from : "", sqlite3_column_int64(s, 3),
                          sqlite3_column_blob(s, 4), (size_t)sqlite3_column_bytes(s, 4)};
        out = fn(ud, &m);
    }
    if (out == TL_OK && rc != SQLITE_DONE)
        out = tl__sq_err(q, rc, "reading the mailbox");
    sqlite3_finalize(s);
    return out;
}

int tl__sq_mail_put(tl__store_be *be, const tl__mail_row *m)
{
    sq *q = (sq *)be;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(q->db, "INSERT INTO mailbox VALUES(?,?,?,?,?)", -1, &s, NULL) !=
        SQLITE_OK)
        return tl__sq_last_err(q, "writing the mailbox");
    sqlite3_bind_text(s, 1, m->xid, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, m->to, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, m->from, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, m->time);
    int rc = tl__sq_bind_bytes(q, s, 5, m->data, m->len);
    if (rc == TL_OK)
        rc = tl__sq_step_done(q, s, "writing the mailbox");
    sqlite3_finalize(s);
    return rc;
}

/* Runs sql with ?1 = xid, ?2 = text; the number of rows changed or -1. */
static int mail_change(sq *q, const char *sql, const char *xid, const char *text)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(q->db, sql, -1, &s, NULL) != SQLITE_OK) {
        tl__sq_last_err(q, "writing the mailbox");
        return -1;
    }
    sqlite3_bind_text(s, 1, xid, -1, SQLITE_STATIC);
    if (text)
        sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
    int rc = tl__sq_step_done(q, s, "writing the mailbox");
    sqlite3_finalize(s);
    return rc == TL_OK ? sqlite3_changes(q->db) : -1;
}

int tl__sq_mail_take(tl__store_be *be, const char *xid)
{
    sq *q = (sq *)be;
    int n = mail_change(q, "DELETE FROM mailbox WHERE xid = ?1", xid, NULL);
    if (n < 0)
        return tl_store_errcode(q->base.st);
    if (n != 1)
        return tl__store_fail(q->base.st, TL_EBUSY, "mailbox row %s was taken by another "
                              "process meanwhile", xid);
    return TL_OK;
}

int tl__sq_mail_refuse(tl__store_be *be, const char *xid, const char *reason)
{
    sq *q = (sq *)be;
    int rc = tl__sq_exec(q, REFUSED_SQL, "creating the refused mailbox rows");
    if (rc != TL_OK)
        return rc;
    int n = mail_change(q, "INSERT OR REPLACE INTO mailbox_refused SELECT xid, to_node, "
                        "from_node, time, data, ?2 FROM mailbox WHERE xid = ?1", xid, reason);
    if (n < 0)
        return tl_store_errcode(q->base.st);
    if (n != 1)
        return tl__store_fail(q->base.st, TL_EBUSY, "mailbox row %s was taken by another "
                              "process meanwhile", xid);
    return tl__sq_mail_take(be, xid);
}

