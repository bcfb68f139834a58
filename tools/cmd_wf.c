/*
 * cmd_wf.c -- `tasklet wf ls`, `wf show`, `send`, `cancel`, `result`: the
 * workflow tables (docs/FORMAT.md section 11), read and posted to with
 * SQL alone, as any process may while the owner runs or not.
 *
 * Invariants: a post is one short transaction (BEGIN IMMEDIATE: the
 * workflow's row is checked and the wf_msg row inserted atomically with
 * respect to the owner's commits); nothing else is ever written.  Rows
 * are distrusted: a blob that is not a msgpack map shows as unreadable.
 * `result --wait` sleeps on inotify on the store's directory.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

static const char *const wait_kinds[] = {"", "step", "recv", "join", "sleep", "select"};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int open_db(const char *path, bool rw, sqlite3 **db)
{
    int rc = cli_check_file(path, rw);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (sqlite3_open_v2(path, db, rw ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, NULL)) {
        cli_complain("%s: %s", path, sqlite3_errmsg(*db));
        sqlite3_close(*db);
        return CLI_EXIT_USAGE;
    }
    sqlite3_busy_timeout(*db, CLI_BUSY_MS);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(*db, "SELECT 1 FROM wf LIMIT 0", -1, &s, NULL) != SQLITE_OK) {
        cli_complain("%s: not a workflow store (no table wf)", path);
        sqlite3_close(*db);
        return CLI_EXIT_USAGE;
    }
    sqlite3_finalize(s);
    return CLI_EXIT_OK;
}

/* A row's blob as a msgpack map, or NULL. */
static const msgpack_object_map *row_map(msgpack_unpacked *up, const void *p, int n)
{
    size_t off = 0;
    msgpack_unpacked_init(up);
    if (!p || n <= 0 || msgpack_unpack_next(up, p, (size_t)n, &off) != MSGPACK_UNPACK_SUCCESS ||
        up->data.type != MSGPACK_OBJECT_MAP)
        return NULL;
    return &up->data.via.map;
}

static const msgpack_object *mget(const msgpack_object_map *m, const char *k)
{
    size_t kn = strlen(k);
    for (uint32_t i = 0; m && i < m->size; i++)
        if (m->ptr[i].key.type == MSGPACK_OBJECT_STR && m->ptr[i].key.via.str.size == kn &&
            !memcmp(m->ptr[i].key.via.str.ptr, k, kn))
            return &m->ptr[i].val;
    return NULL;
}

static int64_t mint(const msgpack_object_map *m, const char *k)
{
    const msgpack_object *o = mget(m, k);
    if (!o)
        return 0;
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER   ? (int64_t)o->via.u64
           : o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? o->via.i64
                                                        : 0;
}

static void mstr(const msgpack_object_map *m, const char *k, char *out, size_t cap)
{
    const msgpack_object *o = mget(m, k);
    size_t n = 0;
    if (o && o->type == MSGPACK_OBJECT_STR) {
        n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
        memcpy(out, o->via.str.ptr, n);
    }
    out[n] = 0;
}

static json_t *mval(const msgpack_object_map *m, const char *k)
{
    const msgpack_object *o = mget(m, k);
    return o ? cli_value_json(o) : json_null();
}

/* One wf row as JSON (what `wf ls` and `wf show` print). */
static json_t *wf_json(sqlite3_stmt *s)
{
    msgpack_unpacked up;
    const msgpack_object_map *m = row_map(&up, sqlite3_column_blob(s, 3),
                                          sqlite3_column_bytes(s, 3));
    char func[96], what[96], wait[128], msg[300], parent[96];
    mstr(m, "func", func, sizeof func);
    mstr(m, "what", what, sizeof what);
    mstr(m, "msg", msg, sizeof msg);
    mstr(m, "parent", parent, sizeof parent);
    int64_t wk = mint(m, "wait");
    snprintf(wait, sizeof wait, "%s%s%s", wk > 0 && wk <= 5 ? wait_kinds[wk] : "",
             wk > 0 ? " " : "", what);
    int64_t created = mint(m, "created");
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:b}",
                          "id", (const char *)sqlite3_column_text(s, 0), "func", func,
                          "status", (const char *)sqlite3_column_text(s, 1), "wait", wait,
                          "parent", parent, "steps", (json_int_t)mint(m, "steps"),
                          "created", (json_int_t)created, "updated",
                          (json_int_t)sqlite3_column_int64(s, 2), "age_s",
                          (json_int_t)(created ? (now_ns() - created) / 1000000000 : 0),
                          "error", (json_int_t)mint(m, "error"), "message", msg,
                          "readable", m != NULL);
    json_object_set_new(j, "result", mval(m, "result"));
    json_object_set_new(j, "deadline", json_integer(mint(m, "deadline")));
    char to[80], from[80], merr[220];
    mstr(m, "to", to, sizeof to);
    mstr(m, "from", from, sizeof from);
    mstr(m, "move_error", merr, sizeof merr);
    json_object_set_new(j, "moved_to", json_string(to));
    json_object_set_new(j, "moved_from", json_string(from));
    json_object_set_new(j, "move_error", json_string(merr));
    if (!strcmp((const char *)sqlite3_column_text(s, 1), "moved")) { /* where it went */
        char line[128];
        snprintf(line, sizeof line, "to %s", to);
        json_object_set_new(j, "wait", json_string(line));
        snprintf(line, sizeof line, "moved to node %s", to);
        json_object_set_new(j, "message", json_string(line));
    }
    msgpack_unpacked_destroy(&up);
    return j;
}

/* Messages posted to named channel name and not yet sent on it. */
static int64_t chan_in_transit(sqlite3 *db, const char *name)
{
    char wfcol[80];
    snprintf(wfcol, sizeof wfcol, "\x1f%s", name);
    sqlite3_stmt *s;
    int64_t n = 0;
    if (sqlite3_prepare_v2(db, "SELECT data FROM wf_msg WHERE wf = ?", -1, &s, NULL))
        return 0;
    sqlite3_bind_text(s, 1, wfcol, -1, SQLITE_STATIC);
    while (sqlite3_step(s) == SQLITE_ROW) {
        msgpack_unpacked up;
        const msgpack_object_map *m = row_map(&up, sqlite3_column_blob(s, 0),
                                              sqlite3_column_bytes(s, 0));
        n += m && mint(m, "taken") == 0;
        msgpack_unpacked_destroy(&up);
    }
    sqlite3_finalize(s);
    return n;
}

/* The named channels (table wf_chan; none in a store from before it). */
static json_t *chans_json(sqlite3 *db)
{
    sqlite3_stmt *s;
    json_t *a = json_array();
    if (sqlite3_prepare_v2(db, "SELECT name, data FROM wf_chan ORDER BY name", -1, &s, NULL))
        return a;
    while (sqlite3_step(s) == SQLITE_ROW) {
        msgpack_unpacked up;
        const char *name = (const char *)sqlite3_column_text(s, 0);
        const msgpack_object_map *m = row_map(&up, sqlite3_column_blob(s, 1),
                                              sqlite3_column_bytes(s, 1));
        json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:I}", "name", name, "chan",
                                           (json_int_t)mint(m, "chan"), "cap",
                                           (json_int_t)mint(m, "cap"), "in_transit",
                                           (json_int_t)chan_in_transit(db, name)));
        msgpack_unpacked_destroy(&up);
    }
    sqlite3_finalize(s);
    return a;
}

static void chans_text(json_t *chans)
{
    size_t i;
    json_t *c;
    json_array_foreach(chans, i, c)
        printf("channel %-20s ch#%" JSON_INTEGER_FORMAT "  capacity %" JSON_INTEGER_FORMAT
               "  in transit %" JSON_INTEGER_FORMAT "\n",
               json_string_value(json_object_get(c, "name")),
               json_integer_value(json_object_get(c, "chan")),
               json_integer_value(json_object_get(c, "cap")),
               json_integer_value(json_object_get(c, "in_transit")));
}

int cli_cmd_wf_ls(const cli_opts *o)
{
    sqlite3 *db;
    int rc = open_db(o->db, false, &db);
    if (rc != CLI_EXIT_OK)
        return rc;
    sqlite3_stmt *s;
    json_t *all = json_array();
    sqlite3_prepare_v2(db, "SELECT id, status, updated, rec FROM wf ORDER BY id", -1, &s, NULL);
    while (sqlite3_step(s) == SQLITE_ROW)
        json_array_append_new(all, wf_json(s));
    sqlite3_finalize(s);
    json_t *chans = chans_json(db);
    if (o->json) {
        cli_json_print(json_pack("{s:o, s:o}", "workflows", all, "channels", chans));
    } else {
        printf("%-20s %-16s %-10s %-24s %6s %8s\n", "ID", "FUNCTION", "STATUS", "WAITS ON",
               "STEPS", "AGE(s)");
        size_t i;
        json_t *w;
        json_array_foreach(all, i, w)
            printf("%-20s %-16s %-10s %-24s %6" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT
                   "\n", json_string_value(json_object_get(w, "id")),
                   json_string_value(json_object_get(w, "func")),
                   json_string_value(json_object_get(w, "status")),
                   json_string_value(json_object_get(w, "wait")),
                   json_integer_value(json_object_get(w, "steps")),
                   json_integer_value(json_object_get(w, "age_s")));
        chans_text(chans);
        json_decref(all);
        json_decref(chans);
    }
    sqlite3_close(db);
    return CLI_EXIT_OK;
}

static json_t *rows_json(sqlite3 *db, const char *sql, const char *id, int steps)
{
    sqlite3_stmt *s;
    json_t *a = json_array();
    sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    while (sqlite3_step(s) == SQLITE_ROW) {
        msgpack_unpacked up;
        const msgpack_object_map *m = row_map(&up, sqlite3_column_blob(s, 2),
                                              sqlite3_column_bytes(s, 2));
        char name[96], msg[300];
        mstr(m, steps ? "step" : "topic", name, sizeof name);
        mstr(m, "msg", msg, sizeof msg);
        json_t *j = json_pack("{s:s, s:s, s:I}", "key", (const char *)sqlite3_column_text(s, 0),
                              steps ? "step" : "topic", name, "time",
                              (json_int_t)sqlite3_column_int64(s, 1));
        json_object_set_new(j, steps ? "result" : "value", mval(m, steps ? "result" : "value"));
        if (steps) {
            json_object_set_new(j, "attempts", json_integer(mint(m, "attempts")));
            json_object_set_new(j, "error", json_integer(mint(m, "error")));
            json_object_set_new(j, "message", json_string(msg));
            json_object_set_new(j, "started", json_integer(mint(m, "started")));
        } else {
            json_object_set_new(j, "kind", json_string(mint(m, "kind") ? "cancel" : "message"));
            json_object_set_new(j, "taken", json_integer(mint(m, "taken")));
        }
        json_array_append_new(a, j);
        msgpack_unpacked_destroy(&up);
    }
    sqlite3_finalize(s);
    return a;
}

static void show_text(json_t *w)
{
    char *res = json_dumps(json_object_get(w, "result"), JSON_ENCODE_ANY | JSON_COMPACT);
    printf("workflow %s  %s  %s\n  function %s  parent %s  steps %" JSON_INTEGER_FORMAT
           "  result %s  error %" JSON_INTEGER_FORMAT " %s\n",
           json_string_value(json_object_get(w, "id")),
           json_string_value(json_object_get(w, "status")),
           json_string_value(json_object_get(w, "wait")),
           json_string_value(json_object_get(w, "func")),
           json_string_value(json_object_get(w, "parent")),
           json_integer_value(json_object_get(w, "steps")), res ? res : "null",
           json_integer_value(json_object_get(w, "error")),
           json_string_value(json_object_get(w, "message")));
    free(res);
    const char *from = json_string_value(json_object_get(w, "moved_from"));
    const char *merr = json_string_value(json_object_get(w, "move_error"));
    if (from && from[0])
        printf("  came from node %s\n", from);
    if (merr && merr[0])
        printf("  last move refused: %s\n", merr);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(w, "steps_done"), i, r) {
        char *v = json_dumps(json_object_get(r, "result"), JSON_ENCODE_ANY | JSON_COMPACT);
        printf("  step %-16s %-12s attempts %" JSON_INTEGER_FORMAT " result %s %s\n",
               json_string_value(json_object_get(r, "key")),
               json_string_value(json_object_get(r, "step")),
               json_integer_value(json_object_get(r, "attempts")), v ? v : "null",
               json_string_value(json_object_get(r, "message")));
        free(v);
    }
    json_array_foreach(json_object_get(w, "messages"), i, r) {
        char *v = json_dumps(json_object_get(r, "value"), JSON_ENCODE_ANY | JSON_COMPACT);
        printf("  %s %-10s %s %s\n", json_string_value(json_object_get(r, "kind")),
               json_string_value(json_object_get(r, "topic")), v ? v : "null",
               json_integer_value(json_object_get(r, "taken")) == -2 ? "(moved with it)"
               : json_integer_value(json_object_get(r, "taken")) < 0 ? "(dropped)"
               : json_integer_value(json_object_get(r, "taken")) ? "(received)"
                                                                 : "(in transit)");
        free(v);
    }
}

int cli_cmd_wf_show(const cli_opts *o)
{
    sqlite3 *db;
    int rc = open_db(o->db, false, &db);
    if (rc != CLI_EXIT_OK)
        return rc;
    sqlite3_stmt *s;
    json_t *w = NULL;
    sqlite3_prepare_v2(db, "SELECT id, status, updated, rec FROM wf WHERE id = ?", -1, &s, NULL);
    sqlite3_bind_text(s, 1, o->arg, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
        w = wf_json(s);
    sqlite3_finalize(s);
    if (!w) {
        cli_complain("no workflow %s in %s", o->arg, o->db);
        sqlite3_close(db);
        return CLI_EXIT_FAIL;
    }
    json_object_set_new(w, "steps_done", rows_json(db, "SELECT key, time, data FROM wf_step "
                                                   "WHERE key > ?1 || '#' AND key < ?1 || '$' "
                                                   "AND wf = ?1 ORDER BY time", o->arg, 1));
    json_object_set_new(w, "messages", rows_json(db, "SELECT key, time, data FROM wf_msg "
                                                 "WHERE wf = ? ORDER BY seq", o->arg, 0));
    if (o->json)
        cli_json_print(w);
    else {
        show_text(w);
        json_decref(w);
    }
    sqlite3_close(db);
    return CLI_EXIT_OK;
}

/* What `tasklet result` prints for a finished workflow: exit 0 when it
 * returned, 1 when it failed or was cancelled. */
int cli_cmd_wf_result_print(const cli_opts *o, const char *status)
{
    sqlite3 *db;
    int rc = open_db(o->db, false, &db);
    if (rc != CLI_EXIT_OK)
        return rc;
    sqlite3_stmt *s;
    json_t *w = NULL;
    sqlite3_prepare_v2(db, "SELECT id, status, updated, rec FROM wf WHERE id = ?", -1, &s, NULL);
    sqlite3_bind_text(s, 1, o->arg, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
        w = wf_json(s);
    sqlite3_finalize(s);
    sqlite3_close(db);
    if (!w)
        return CLI_EXIT_FAIL;
    bool ok = !strcmp(status, "done");
    if (o->json) {
        cli_json_print(json_pack("{s:s, s:s, s:O, s:O, s:O}", "id", o->arg, "status", status,
                                 "result", json_object_get(w, "result"), "error",
                                 json_object_get(w, "error"), "message",
                                 json_object_get(w, "message")));
    } else if (ok) {
        char *v = json_dumps(json_object_get(w, "result"), JSON_ENCODE_ANY | JSON_COMPACT);
        printf("done %s\n", v ? v : "null");
        free(v);
    } else {
        printf("%s %" JSON_INTEGER_FORMAT " %s\n", status,
               json_integer_value(json_object_get(w, "error")),
               json_string_value(json_object_get(w, "message")));
    }
    json_decref(w);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
