/*
 * store_listen.c -- waiting for work on PostgreSQL (tl_store_listen):
 * a connection of its own that LISTENs on channel "libtasklet", where the
 * PostgreSQL backend NOTIFYs a store's release and a new mailbox row when
 * they commit (store_pg.c, store_pg_rows.c).
 *
 * Invariants: a listener is valid while magic is set (cleared at free);
 * LISTEN runs before tl_store_listen returns, so an announcement committed
 * after that is never missed (PostgreSQL queues it on the connection); a
 * lost connection is made again (and LISTENs again) inside wait, which
 * then answers TL_OK so that the caller looks for work again.  Built
 * without libpq, every function answers TL_ENOTSUP.
 */
#include "persist.h"

#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef TL_HAVE_PG
#include <libpq-fe.h>
#endif

#define TL__MAGIC_LISTENER 0x746c4c53u /* "tlLS" */

struct tl_store_listener {
    uint32_t magic;
    int errcode;
#ifdef TL_HAVE_PG
    PGconn *conn;
#endif
    char errmsg[400];
};

static int l_err(tl_store_listener *l, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int l_err(tl_store_listener *l, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->errmsg, sizeof l->errmsg, fmt, ap);
    va_end(ap);
    for (char *c = l->errmsg; *c; c++)
        if (*c == '\n')
            *c = c[1] ? ' ' : '\0';
    return l->errcode = code;
}

static bool valid(const tl_store_listener *l) { return l && l->magic == TL__MAGIC_LISTENER; }

const char *tl_store_listener_errmsg(const tl_store_listener *l)
{
    if (!valid(l))
        return "not a store listener (freed, or never made)";
    return l->errcode ? l->errmsg : "no error";
}

int tl__store_listener_fd(const tl_store_listener *l)
{
#ifdef TL_HAVE_PG
    return valid(l) && l->conn ? PQsocket(l->conn) : -1;
#else
    (void)l;
    return -1;
#endif
}

void tl_store_listener_free(tl_store_listener *l)
{
    if (!valid(l))
        return;
#ifdef TL_HAVE_PG
    PQfinish(l->conn);
#endif
    l->magic = 0;
    free(l);
}

#ifdef TL_HAVE_PG

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* the server's notices ("terminating connection ...") */
}

static int do_listen(tl_store_listener *l)
{
    PGresult *r = PQexec(l->conn, "LISTEN libtasklet");
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK
                 ? TL_OK
                 : l_err(l, TL_EIO, "tl_store_listen: LISTEN failed: %s",
                         PQerrorMessage(l->conn));
    PQclear(r);
    return rc;
}

static int connect_listener(tl_store_listener *l, const char *location)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(location, &err);
    if (!opts) {
        /* libpq quotes the URL: say only that it is bad */
        PQfreemem(err);
        return l_err(l, TL_EINVAL, "tl_store_listen: not a valid PostgreSQL URL");
    }
    PQconninfoFree(opts);
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"10", "libtasklet listener", location, NULL};
    l->conn = PQconnectdbParams(keys, vals, 1);
    if (!l->conn)
        return l_err(l, TL_ENOMEM, "tl_store_listen: out of memory");
    if (PQstatus(l->conn) != CONNECTION_OK)
        return l_err(l, TL_EIO, "tl_store_listen: cannot connect to PostgreSQL at %s:%s/%s: %s",
                     PQhost(l->conn) ? PQhost(l->conn) : "?",
                     PQport(l->conn) ? PQport(l->conn) : "?", PQdb(l->conn) ? PQdb(l->conn) : "?",
                     PQerrorMessage(l->conn));
    PQsetNoticeProcessor(l->conn, quiet, NULL);
    return do_listen(l);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Takes what arrived: 1 when there was an announcement, 0 when none, -1
 * when the connection failed. */
static int drain(tl_store_listener *l, char *what, size_t n)
{
    if (!PQconsumeInput(l->conn))
        return -1;
    int got = 0;
    PGnotify *nt;
    while ((nt = PQnotifies(l->conn))) {
        if (!got && what && n)
            snprintf(what, n, "%s", nt->extra ? nt->extra : "");
        got = 1;
        PQfreemem(nt);
    }
    return got;
}

/* The connection was lost: made again (and LISTENing), or TL_EIO. */
static int reconnect(tl_store_listener *l, char *what, size_t n)
{
    PQreset(l->conn);
    PQsetNoticeProcessor(l->conn, quiet, NULL);
    if (PQstatus(l->conn) != CONNECTION_OK)
        return l_err(l, TL_EIO, "tl_store_listener_wait: lost the connection to PostgreSQL "
                     "and cannot make it again: %s", PQerrorMessage(l->conn));
    int rc = do_listen(l);
    if (rc == TL_OK && what && n)
        snprintf(what, n, "reconnected");
    return rc;
}

int tl_store_listen(const char *location, tl_store_listener **out)
{
    if (!out)
        return TL_EINVAL;
    tl_store_listener *l = calloc(1, sizeof *l);
    *out = l;
    if (!l)
        return TL_ENOMEM;
    l->magic = TL__MAGIC_LISTENER;
    if (!location || (strncmp(location, "postgresql://", 13) && strncmp(location, "postgres://", 11)))
        return l_err(l, TL_ENOTSUP, "tl_store_listen: only a postgresql:// location has "
                     "announcements to wait for");
    int rc = connect_listener(l, location);
    if (rc != TL_OK && l->conn) { /* a listener that failed only tells why */
        PQfinish(l->conn);
        l->conn = NULL;
    }
    return rc;
}

int tl_store_listener_wait(tl_store_listener *l, int64_t timeout_ms, char *what, size_t n)
{
    if (!valid(l) || !l->conn)
        return TL_EMISUSE;
    if (what && n)
        what[0] = '\0';
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int got = drain(l, what, n);
        if (got < 0 || PQstatus(l->conn) == CONNECTION_BAD || PQsocket(l->conn) < 0)
            return reconnect(l, what, n);
        if (got)
            return l->errcode = TL_OK;
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return l_err(l, TL_ETIMEDOUT, "tl_store_listener_wait: nothing announced in %lld ms",
                         (long long)timeout_ms);
        struct pollfd p = {PQsocket(l->conn), POLLIN, 0};
        if (poll(&p, 1, left > 1000000 ? 1000000 : (int)left) < 0 && errno != EINTR)
            return l_err(l, TL_EIO, "tl_store_listener_wait: poll: %s", strerror(errno));
    }
}

#else /* no libpq */

int tl_store_listen(const char *location, tl_store_listener **out)
{
    (void)location;
    if (!out)
        return TL_EINVAL;
    tl_store_listener *l = calloc(1, sizeof *l);
    *out = l;
    if (!l)
        return TL_ENOMEM;
    l->magic = TL__MAGIC_LISTENER;
    return l_err(l, TL_ENOTSUP, "tl_store_listen: this build has no PostgreSQL store backend");
}

int tl_store_listener_wait(tl_store_listener *l, int64_t timeout_ms, char *what, size_t n)
{
    (void)timeout_ms, (void)what, (void)n;
    return valid(l) ? l_err(l, TL_ENOTSUP, "tl_store_listener_wait: no PostgreSQL in this build")
                    : TL_EMISUSE;
}

#endif
