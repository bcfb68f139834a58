/*
 * cmd_wf_post.c -- `tasklet send`, `tasklet cancel`, `tasklet result`:
 * posting to a workflow and awaiting it with SQL alone (FORMAT.md
 * section 9), owner running or stopped.
 *
 * Invariants: a post is one BEGIN IMMEDIATE transaction that checks the
 * workflow's row (exists, not finished) and inserts one wf_msg row; the
 * message value is the JSON converted to msgpack (null, booleans,
 * integers, reals, strings, arrays, objects as maps with string keys).
 * A running owner notices the commit through inotify on the directory.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static int pack_json(msgpack_packer *pk, json_t *j, int depth)
{
    if (depth > 16)
        return -1;
    switch (json_typeof(j)) {
    case JSON_NULL: return msgpack_pack_nil(pk);
    case JSON_TRUE: return msgpack_pack_true(pk);
    case JSON_FALSE: return msgpack_pack_false(pk);
    case JSON_INTEGER: return msgpack_pack_int64(pk, json_integer_value(j));
    case JSON_REAL: return msgpack_pack_double(pk, json_real_value(j));
    case JSON_STRING:
        pack_str(pk, json_string_value(j), json_string_length(j));
        return 0;
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, v)
            if (pack_json(pk, v, depth + 1))
                return -1;
        return 0;
    }
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        msgpack_pack_map(pk, json_object_size(j));
        json_object_foreach(j, k, v) {
            pack_str(pk, k, strlen(k));
            if (pack_json(pk, v, depth + 1))
                return -1;
        }
        return 0;
    }
    }
    return -1;
}

static void pack_kv(msgpack_packer *pk, const char *k, int64_t v)
{
    pack_str(pk, k, strlen(k));
    msgpack_pack_int64(pk, v);
}

/* The wf_msg blob: {"kind", "topic", "value", "taken": 0}. */
static int message_blob(int kind, const char *topic, json_t *val, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pack_kv(&pk, "kind", kind);
    pack_str(&pk, "topic", 5);
    pack_str(&pk, topic, strlen(topic));
    pack_str(&pk, "value", 5);
    if (val ? pack_json(&pk, val, 0) : msgpack_pack_nil(&pk))
        return -1;
    pack_kv(&pk, "taken", 0);
    return 0;
}

static int wf_status(sqlite3 *db, const char *id, char *out, size_t cap)
{
    sqlite3_stmt *s;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "SELECT status FROM wf WHERE id = ?", -1, &s, NULL))
        return -2;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) {
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
        rc = 0;
    }
    sqlite3_finalize(s);
    return rc;
}

static bool final(const char *st)
{
    return !strcmp(st, "done") || !strcmp(st, "failed") || !strcmp(st, "cancelled") ||
           !strcmp(st, "moved");
}

/* The node a moved workflow went to (its row's "to"), or "?". */
static void moved_to(sqlite3 *db, const char *id, char *out, size_t cap)
{
    sqlite3_stmt *s;
    snprintf(out, cap, "?");
    if (sqlite3_prepare_v2(db, "SELECT rec FROM wf WHERE id = ?", -1, &s, NULL))
        return;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (sqlite3_step(s) == SQLITE_ROW &&
        msgpack_unpack_next(&up, sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0),
                            &off) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < up.data.via.map.size; i++) {
            const msgpack_object_kv *kv = &up.data.via.map.ptr[i];
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 2 &&
                !memcmp(kv->key.via.str.ptr, "to", 2) && kv->val.type == MSGPACK_OBJECT_STR)
                snprintf(out, cap, "%.*s", (int)kv->val.via.str.size, kv->val.via.str.ptr);
        }
    msgpack_unpacked_destroy(&up);
    sqlite3_finalize(s);
}

static int open_rw(const char *path, bool rw, sqlite3 **db)
{
    int rc = cli_check_file(path, rw);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (sqlite3_open_v2(path, db, rw ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, NULL)) {
        cli_complain("%s: %s", path, sqlite3_errmsg(*db));
        sqlite3_close(*db);
        return CLI_EXIT_USAGE;
    }
    sqlite3_busy_timeout(*db, 10000);
    char st[32];
    if (wf_status(*db, "", st, sizeof st) == -2) {
        cli_complain("%s: not a workflow store (no table wf)", path);
        sqlite3_close(*db);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

static bool chan_known(sqlite3 *db, const char *name)
{
    sqlite3_stmt *s;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM wf_chan WHERE name = ?", -1, &s, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(s) == SQLITE_ROW;
        sqlite3_finalize(s);
    }
    return found;
}

/* Inside the post's transaction: the target exists (a workflow that has
 * not finished, or kind 2 a named channel); CLI_EXIT_OK or FAIL. */
static int check_target(sqlite3 *db, int kind, const char *id)
{
    char st[32];
    if (kind == 2 && !chan_known(db, id)) {
        cli_complain("no channel %s in the store", id);
        return CLI_EXIT_FAIL;
    }
    if (kind == 2)
        return CLI_EXIT_OK;
    if (wf_status(db, id, st, sizeof st) != 0) {
        cli_complain("no workflow %s in the store", id);
        return CLI_EXIT_FAIL;
    }
    if (!strcmp(st, "moved")) {
        char to[80];
        moved_to(db, id, to, sizeof to);
        cli_complain("workflow %s moved to node %s: post to that node's store", id, to);
        return CLI_EXIT_FAIL;
    }
    if (final(st)) {
        cli_complain("workflow %s already finished (%s)", id, st);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* Posts to a workflow id, or (kind 2) to named channel id, whose rows'
 * wf column is "\x1f" NAME (FORMAT.md section 11). */
static int insert(sqlite3 *db, int kind, const char *id, const char *key,
                  const msgpack_sbuffer *sb)
{
    char wfcol[80];
    snprintf(wfcol, sizeof wfcol, "%s%s", kind == 2 ? "\x1f" : "", id);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        cli_complain("%s: %s", id, sqlite3_errmsg(db));
        return CLI_EXIT_FAIL;
    }
    int rc = check_target(db, kind, id);
    sqlite3_stmt *s = NULL;
    if (rc == CLI_EXIT_OK)
        sqlite3_prepare_v2(db, "INSERT INTO wf_msg(key, wf, time, data) VALUES(?,?,?,?)", -1,
                           &s, NULL);
    if (s) {
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, wfcol, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, now_ns());
        sqlite3_bind_blob(s, 4, sb->data, (int)sb->size, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE) {
            bool dup = (sqlite3_errcode(db) & 0xff) == SQLITE_CONSTRAINT;
            cli_complain(dup ? "a message with this key was posted to %s already"
                             : "posting to %s: %s", id, sqlite3_errmsg(db));
            rc = CLI_EXIT_FAIL;
        }
        sqlite3_finalize(s);
    }
    if (rc == CLI_EXIT_OK && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        cli_complain("posting to %s: %s", id, sqlite3_errmsg(db));
        rc = CLI_EXIT_FAIL;
    }
    if (rc != CLI_EXIT_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static void random_key(char *out, size_t cap, const char *id, const char *tag)
{
    unsigned char r[16] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, r, sizeof r) != (ssize_t)sizeof r)
        memcpy(r, &(int64_t){now_ns()}, 8);
    if (fd >= 0)
        close(fd);
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", r[i]);
    snprintf(out, cap, "%s|%s|%s", id, tag, hex);
}

static int post(const cli_opts *o, int kind, const char *topic, json_t *val)
{
    if (!o->arg[0] || strlen(o->arg) > 63 || (kind == 0 && (!topic[0] || strlen(topic) > 63))) {
        cli_complain("a workflow id and a topic are 1 to 63 bytes");
        return CLI_EXIT_USAGE;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (message_blob(kind, topic, val, &sb) != 0) {
        msgpack_sbuffer_destroy(&sb);
        cli_complain("the message is nested deeper than 16");
        return CLI_EXIT_USAGE;
    }
    char key[400], target[80];
    snprintf(target, sizeof target, "%s%s", kind == 2 ? "\x1f" : "", o->arg);
    if (o->key)
        snprintf(key, sizeof key, "%s|k|%s", target, o->key);
    else
        random_key(key, sizeof key, target, kind ? "c" : "r");
    sqlite3 *db;
    int rc = cli_is_url(o->db) ? cli_pg_post(o->db, kind, o->arg, key, now_ns(), sb.data, sb.size)
                               : open_rw(o->db, true, &db);
    if (rc == CLI_EXIT_OK && !cli_is_url(o->db)) {
        rc = insert(db, kind, o->arg, key, &sb);
        sqlite3_close(db);
    }
    msgpack_sbuffer_destroy(&sb);
    static const char *const kinds[] = {"message", "cancel", "channel message"};
    if (rc == CLI_EXIT_OK && o->json)
        cli_json_print(json_pack("{s:s, s:s, s:s}", "posted", kinds[kind], kind == 2 ? "chan"
                                 : "id", o->arg, "key", key));
    return rc;
}

int cli_cmd_send(const cli_opts *o)
{
    json_error_t err;
    json_t *val = json_loads(o->arg3, JSON_DECODE_ANY, &err);
    if (!val) {
        cli_complain("send: the message is not JSON: %s", err.text);
        return CLI_EXIT_USAGE;
    }
    int rc = post(o, 0, o->arg2, val);
    json_decref(val);
    return rc;
}

int cli_cmd_cancel(const cli_opts *o) { return post(o, 1, "", NULL); }

int cli_cmd_send_chan(const cli_opts *o)
{
    json_error_t err;
    json_t *val = json_loads(o->arg2, JSON_DECODE_ANY, &err);
    if (!val) {
        cli_complain("send-chan: the message is not JSON: %s", err.text);
        return CLI_EXIT_USAGE;
    }
    int rc = post(o, 2, o->arg, val);
    json_decref(val);
    return rc;
}

/* Waits for a change to the store's directory, at most ms. */
static void wait_change(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (fd < 0) {
        usleep((useconds_t)(ms < 50 ? ms : 50) * 1000);
        return;
    }
    if (poll(&p, 1, ms) > 0) {
        char buf[4096];
        while (read(fd, buf, sizeof buf) > 0) {
        }
    }
}

static int watch_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *sl = strrchr(dir, '/');
    if (sl)
        *(sl == dir ? sl + 1 : sl) = 0;
    else
        snprintf(dir, sizeof dir, ".");
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd >= 0 && inotify_add_watch(fd, dir, IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static char pg_status[32]; /* result_print's status, on a PostgreSQL store's copy */
static int print_copy(const cli_opts *o) { return cli_cmd_wf_result_print(o, pg_status); }

/* `result` on a postgresql:// location: the status on the server
 * (waiting there), then the row from a copy. */
static int result_pg(const cli_opts *o)
{
    int rc = cli_pg_status(o->db, o->arg, o->has_wait, o->wait, pg_status, sizeof pg_status);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (!final(pg_status)) {
        cli_complain("workflow %s is still %s", o->arg, pg_status);
        return CLI_EXIT_FAIL;
    }
    return cli_on_copy(o, print_copy);
}

int cli_cmd_result(const cli_opts *o)
{
    if (cli_is_url(o->db))
        return result_pg(o);
    sqlite3 *db;
    int rc = open_rw(o->db, false, &db);
    if (rc != CLI_EXIT_OK)
        return rc;
    int fd = o->has_wait ? watch_dir(o->db) : -1;
    int64_t until = now_ns() + o->wait * 1000000000;
    char st[32];
    for (;;) {
        if (wf_status(db, o->arg, st, sizeof st) != 0) {
            cli_complain("no workflow %s in %s", o->arg, o->db);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (final(st) || !o->has_wait || now_ns() >= until)
            break;
        int64_t left = (until - now_ns()) / 1000000;
        wait_change(fd, left > 1000 ? 1000 : (int)left + 1);
    }
    if (fd >= 0)
        close(fd);
    sqlite3_close(db);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (!final(st)) {
        cli_complain("workflow %s is still %s", o->arg, st);
        return CLI_EXIT_FAIL;
    }
    /* the full row, as `wf show` prints it */
    cli_opts show = *o;
    return cli_cmd_wf_result_print(&show, st);
}
