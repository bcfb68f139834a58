/*
 * cmd_verify.c -- `tasklet verify DB`: is the store sound?
 *
 *   open            application_id (else exit 2), user_version
 *     -> meta       'format' = 1
 *     -> heads      every checkpoints row: record, head document, counts
 *     -> chunks     every chunks row: record, document shape, kind, key,
 *                   no row newer than the latest checkpoint
 *     -> snapshot   the latest checkpoint (or --ckpt N, or --all of them)
 *                   loaded whole, then cli_xcheck across its records
 *     -> report     "ok: checkpoint N, T tasklets, C channels", exit 0;
 *                   else one line per problem naming the record, exit 1
 *
 * Each damaged record is reported once, even when the snapshot stage
 * meets it again (vstate.reported).
 */
#include "cli.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PRINTED 200

typedef struct vstate {
    cli_store st;
    const cli_opts *o;
    json_t *problems;
    size_t nproblems;
    cli_loc *reported;
    size_t nreported;
    uint64_t records;
    int64_t latest;
    bool has_latest;
} vstate;

static json_t *loc_json(const cli_loc *loc)
{
    json_t *o = json_object();
    char text[160];
    cli_loc_text(loc, text, sizeof text);
    json_object_set_new(o, "record", json_string(text));
    json_object_set_new(o, "table", loc->table ? json_string(loc->table) : json_null());
    if (loc->kind >= 0)
        json_object_set_new(o, "kind", json_integer(loc->kind));
    if (loc->key >= 0)
        json_object_set_new(o, "key", json_integer(loc->key));
    if (loc->ckpt >= 0)
        json_object_set_new(o, "ckpt", json_integer(loc->ckpt));
    if (loc->name)
        json_object_set_new(o, "name", json_string(loc->name));
    return o;
}

static void problem_msg(void *ud, const cli_loc *loc, const char *msg)
{
    vstate *v = ud;
    char where[160];
    v->nproblems++;
    v->reported = cli_xgrow(v->reported, v->nreported, 1, sizeof *v->reported);
    v->reported[v->nreported++] = *loc;
    if (v->o->json) {
        json_t *p = loc_json(loc);
        json_object_set_new(p, "problem", json_string(msg));
        json_array_append_new(v->problems, p);
    } else if (v->nproblems <= MAX_PRINTED) {
        cli_loc_text(loc, where, sizeof where);
        printf("error: %s: %s\n", where, msg);
    }
}

static void problem(vstate *v, const cli_loc *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(vstate *v, const cli_loc *loc, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    problem_msg(v, loc, msg);
}

static void problem_err(vstate *v, const cli_err *e)
{
    problem_msg(v, &e->loc, e->msg);
}

static bool was_reported(const vstate *v, const cli_loc *loc)
{
    for (size_t i = 0; i < v->nreported; i++)
        if (cli_loc_equal(&v->reported[i], loc))
            return true;
    return false;
}

/* ---- stages ---- */

static bool meta_format_ok(sqlite3_stmt *stmt, int64_t *n)
{
    int type = sqlite3_column_type(stmt, 0);
    *n = sqlite3_column_int64(stmt, 0);
    if (type == SQLITE_TEXT)
        *n = strtoll((const char *)sqlite3_column_text(stmt, 0), NULL, 10);
    else if (type != SQLITE_INTEGER)
        return false;
    return *n >= 1 && *n <= CLI_FORMAT_VERSION; /* the store's first format */
}

static void verify_meta(vstate *v)
{
    sqlite3_stmt *stmt = NULL;
    cli_loc loc = cli_loc_named("meta", "format");
    int64_t n = 0;
    if (sqlite3_prepare_v2(v->st.db, "SELECT value FROM meta WHERE key = 'format'", -1, &stmt,
                           NULL) != SQLITE_OK) {
        loc = cli_loc_named("meta", NULL);
        problem(v, &loc, "cannot read: %s", sqlite3_errmsg(v->st.db));
    } else if (sqlite3_step(stmt) != SQLITE_ROW) {
        problem(v, &loc, "missing");
    } else if (!meta_format_ok(stmt, &n)) {
        problem(v, &loc, "is %s, not 1 to %d%s", (const char *)sqlite3_column_text(stmt, 0),
                CLI_FORMAT_VERSION, n > CLI_FORMAT_VERSION ? " (a newer format)" : "");
    }
    sqlite3_finalize(stmt);
}

static void on_ckpt_row(void *ud, const cli_ckpt *ck, cli_doc *head_doc, int rc,
                        const cli_err *e)
{
    vstate *v = ud;
    cli_head head;
    cli_err err = *e;
    v->records++;
    if (rc < 0 || cli_decode_head(head_doc, &head, &err) < 0) {
        problem_err(v, &err);
        return;
    }
    if ((uint64_t)ck->tasklets != head.ntasklets || (uint64_t)ck->channels != head.nchans)
        problem(v, &e->loc, "the row counts %" PRId64 " tasklets and %" PRId64 " channels, "
                "its head %llu and %llu", ck->tasklets, ck->channels,
                (unsigned long long)head.ntasklets, (unsigned long long)head.nchans);
}

static void on_chunk_row(void *ud, cli_chunk *c, int rc, const cli_err *e)
{
    vstate *v = ud;
    v->records++;
    if (rc < 0)
        problem_err(v, e);
    else if (!v->has_latest)
        problem(v, &e->loc, "there is no checkpoint: no checkpoint includes this row, yet "
                "the next one would");
    else if (c->ckpt > v->latest)
        problem(v, &e->loc, "newer than the latest checkpoint %" PRId64 ": no checkpoint "
                "includes this row, yet the next one would", v->latest);
}

static void stage_failed(vstate *v, const cli_err *e)
{
    if (!was_reported(v, &e->loc))
        problem_err(v, e);
}

static void on_bad_chunk(void *ud, const cli_err *e)
{
    stage_failed(ud, e);
}

/* Loads checkpoint id whole and checks it across records; 0 when sound. */
static int verify_snapshot(vstate *v, int64_t id, cli_snap *s)
{
    cli_err e = {{0}, {0}};
    size_t before = v->nproblems;
    cli_loc loc = cli_loc_ckpt(id);
    if (cli_snap_load(&v->st, id, s, on_bad_chunk, v, &e) < 0)
        stage_failed(v, &e);
    else if (s->damaged)
        problem(v, &loc, "checkpoint %" PRId64 " cannot be loaded: %zu of its chunk records "
                "%s damaged", id, s->damaged, s->damaged == 1 ? "is" : "are");
    else
        cli_xcheck(s, problem_msg, v);
    return v->nproblems != before;
}

static void verify_all(vstate *v)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(v->st.db, "SELECT id FROM checkpoints WHERE id < ?1 ORDER BY id",
                           -1, &stmt, NULL) != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return;
    }
    sqlite3_bind_int64(stmt, 1, v->latest);
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        cli_snap s;
        int64_t id = sqlite3_column_int64(stmt, 0);
        if (verify_snapshot(v, id, &s) == 0 && !v->o->json)
            printf("checked checkpoint %" PRId64 ": %llu tasklets, %llu channels\n", id,
                   (unsigned long long)s.head.ntasklets, (unsigned long long)s.head.nchans);
        cli_snap_free(&s);
    }
    sqlite3_finalize(stmt);
}

/* ---- the report ---- */

static int report(vstate *v, const cli_snap *s, int64_t id)
{
    bool ok = v->nproblems == 0;
    if (v->o->json) {
        json_t *r = json_object();
        json_object_set_new(r, "ok", json_boolean(ok));
        json_object_set_new(r, "checkpoint", v->has_latest ? json_integer(id) : json_null());
        json_object_set_new(r, "tasklets", ok && v->has_latest ? cli_json_u64(s->head.ntasklets) : json_null());
        json_object_set_new(r, "channels", ok && v->has_latest ? cli_json_u64(s->head.nchans) : json_null());
        json_object_set_new(r, "records", json_integer((json_int_t)v->records));
        json_object_set_new(r, "problems", json_incref(v->problems));
        cli_json_print(r);
    } else if (ok && v->has_latest) {
        printf("ok: checkpoint %" PRId64 ", %llu tasklets, %llu channels\n", id,
               (unsigned long long)s->head.ntasklets, (unsigned long long)s->head.nchans);
    } else if (ok) {
        printf("ok: no checkpoints\n");
    } else {
        if (v->nproblems > MAX_PRINTED)
            printf("... and %zu more\n", v->nproblems - MAX_PRINTED);
        printf("verify failed: %zu problem%s in %s\n", v->nproblems,
               v->nproblems == 1 ? "" : "s", v->st.path);
    }
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

static int verify_store(vstate *v)
{
    cli_err e = {{0}, {0}};
    cli_snap s;
    int64_t id;
    int found;
    memset(&s, 0, sizeof s);
    if (cli_store_check_version(&v->st, &e) < 0)
        problem_err(v, &e);
    verify_meta(v);
    found = cli_latest_ckpt(&v->st, &v->latest, &e);
    v->has_latest = found == 1;
    if (found < 0)
        problem_err(v, &e);
    if (cli_scan_ckpts(&v->st, on_ckpt_row, v, &e) < 0)
        problem_err(v, &e);
    if (cli_scan_chunks(&v->st, on_chunk_row, v, &e) < 0)
        problem_err(v, &e);
    if (v->o->all && v->has_latest)
        verify_all(v);
    id = v->o->has_ckpt ? v->o->ckpt : v->latest;
    if (v->has_latest || v->o->has_ckpt)
        verify_snapshot(v, id, &s);
    int rc = report(v, &s, id);
    cli_snap_free(&s);
    return rc;
}

int cli_ckpt_sound(cli_store *st, const cli_opts *o, int64_t id)
{
    vstate v;
    cli_snap s;
    memset(&v, 0, sizeof v);
    memset(&s, 0, sizeof s);
    v.st = *st; /* borrowed: not closed here */
    v.o = o;
    v.problems = json_array();
    int bad = verify_snapshot(&v, id, &s);
    if (bad && o->json) /* the problems, for the caller's report */
        json_dumpf(v.problems, stderr, 0);
    cli_snap_free(&s);
    json_decref(v.problems);
    free(v.reported);
    return bad;
}

int cli_cmd_verify(const cli_opts *o)
{
    vstate v;
    memset(&v, 0, sizeof v);
    v.o = o;
    int rc = cli_store_open(&v.st, o->db, false);
    if (rc != CLI_EXIT_OK)
        return rc;
    v.problems = json_array();
    rc = verify_store(&v);
    json_decref(v.problems);
    free(v.reported);
    cli_store_close(&v.st);
    return rc;
}
