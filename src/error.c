/*
 * error.c -- error codes, their messages, and the per-runtime last error.
 *
 * The table in tasklet.h (TL_ERRNO_MAP) is the only list of codes; the
 * strings here are generated from it.
 */
#include "internal.h"

#include <stdio.h>

int tl_version_number(void) { return TL_VERSION_NUMBER; }
const char *tl_version_string(void) { return TL_VERSION_STRING; }

const char *tl_strerror(int code)
{
    switch (code) {
    case TL_OK:
        return "success";
#define X(name, c, msg) \
    case c:             \
        return msg;
        TL_ERRNO_MAP(X)
#undef X
    default:
        return code < TL_EUSER ? "user error" : "unknown error";
    }
}

const char *tl_errname(int code)
{
    switch (code) {
    case TL_OK:
        return "TL_OK";
#define X(name, c, msg) \
    case c:             \
        return "TL_" #name;
        TL_ERRNO_MAP(X)
#undef X
    default:
        return code < TL_EUSER ? "TL_EUSER" : "TL_E?";
    }
}

int tl__seterr(tl_runtime *rt, int code, const char *fmt, ...)
{
    va_list ap;
    rt->errcode = code;
    va_start(ap, fmt);
    vsnprintf(rt->errmsg, sizeof rt->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

int tl_errcode(const tl_runtime *rt)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return TL_EMISUSE;
    return rt->errcode;
}

const char *tl_errmsg(const tl_runtime *rt)
{
    if (!rt || rt->magic != TL__MAGIC_RT)
        return "invalid runtime handle";
    return rt->errcode == TL_OK ? "no error" : rt->errmsg;
}

const char *tl__handle_problem(const char *kind, const char *retain, const void *slot,
                               int known, int reused, uint64_t id, char *buf, size_t n)
{
    if (!slot)
        snprintf(buf, n, "NULL %s handle", kind);
    else if (!known)
        snprintf(buf, n, "not a %s handle", kind);
    else if (reused)
        snprintf(buf, n, "stale %s handle: its %s was freed and %s #%llu now uses its memory "
                 "(a handle is valid while a reference is held: %s)", kind, kind, kind,
                 (unsigned long long)id, retain);
    else
        snprintf(buf, n, "stale %s handle: its %s was freed (a handle is valid while a "
                 "reference is held: %s)", kind, kind, retain);
    return buf;
}
