/*
 * cmd_view.c -- the read-only views: `ls` (tasklets and channels of a
 * checkpoint), `show` (one tasklet: record fields, frames, locals), `dump`
 * (head and every chunk) and `checkpoints` (the checkpoint rows).
 *
 * Each opens the store read-only, picks the latest checkpoint (or --ckpt
 * N), decodes what it shows -- refusing, with the record named, anything
 * damaged -- and prints text or, with --json, one JSON document.
 */
#include "cli.h"

#include <inttypes.h>
#include <string.h>

/* Opens the store and picks the checkpoint; *none when there is none. */
static int view_open(const cli_opts *o, cli_store *st, int64_t *id, bool *none)
{
    cli_err e = {{0}, {0}};
    int rc = cli_store_open(st, o->db, false);
    *none = false;
    if (rc != CLI_EXIT_OK)
        return rc;
    if (cli_store_check_version(st, &e) == 0) {
        if (o->has_ckpt) {
            *id = o->ckpt;
            return CLI_EXIT_OK;
        }
        int found = cli_latest_ckpt(st, id, &e);
        *none = found == 0;
        if (found >= 0)
            return CLI_EXIT_OK;
    }
    cli_print_err(&e);
    cli_store_close(st);
    return CLI_EXIT_FAIL;
}

static int load_failed(const cli_err *e, const cli_opts *o)
{
    cli_print_err(e);
    if (e->loc.table)
        cli_complain("run 'tasklet verify %s' for a full report", o->db);
    return CLI_EXIT_FAIL;
}

static int no_checkpoint(const cli_opts *o)
{
    if (o->json) {
        json_t *r = json_object();
        json_object_set_new(r, "checkpoint", json_null());
        json_object_set_new(r, "tasklets", json_array());
        json_object_set_new(r, "channels", json_array());
        cli_json_print(r);
    } else {
        puts("no checkpoints");
    }
    return CLI_EXIT_OK;
}

static void ckpt_line(const cli_ckpt *ck)
{
    char iso[48];
    cli_time_iso(ck->time, iso, sizeof iso);
    printf("checkpoint %" PRId64 " at %s: %" PRId64 " tasklets, %" PRId64 " channels, %" PRId64
           " bytes\n", ck->id, iso, ck->tasklets, ck->channels, ck->bytes);
}

/* ---- ls ---- */

static void ls_tasklet_row(cli_table *tab, const cli_tchunk *c, const cli_tasklet *t)
{
    cli_buf b = {0};
    const cli_func *top = cli_top_func(c, t);
    cli_table_addf(tab, "%llu", (unsigned long long)t->id);
    if (t->name)
        cli_text_str(&b, t->name->via.str.ptr, t->name->via.str.size, false);
    cli_table_add(tab, t->name ? cli_buf_str(&b) : "-");
    cli_buf_reset(&b);
    if (top)
        cli_func_label(&b, top);
    cli_table_add(tab, top ? cli_buf_str(&b) : "-");
    if (t->err)
        cli_table_addf(tab, "%s (err %lld)", cli_state_name(t->state), (long long)t->err);
    else
        cli_table_add(tab, cli_state_name(t->state));
    cli_buf_reset(&b);
    cli_waiting_text(&b, t);
    cli_table_add(tab, cli_buf_str(&b));
    cli_buf_free(&b);
}

static void ls_chan_row(cli_table *tab, const cli_chan *ch)
{
    cli_buf b = {0};
    cli_table_addf(tab, "%llu", (unsigned long long)ch->id);
    if (ch->name)
        cli_text_str(&b, ch->name->via.str.ptr, ch->name->via.str.size, false);
    cli_table_add(tab, ch->name ? cli_buf_str(&b) : "-");
    cli_table_addf(tab, "%lld", (long long)ch->nsenders - (long long)ch->nreceivers);
    cli_table_addf(tab, "%u", ch->buffer->via.array.size);
    cli_table_addf(tab, "%llu", (unsigned long long)ch->capacity);
    cli_table_add(tab, ch->closing ? "yes" : "no");
    cli_table_add(tab, ch->pinned ? "yes" : "no");
    cli_buf_reset(&b);
    if (ch->home_node)
        cli_chan_home_text(&b, ch);
    cli_table_add(tab, ch->home_node ? cli_buf_str(&b) : "-");
    cli_buf_free(&b);
}

static void ls_text(const cli_snap *s)
{
    static const char *const theads[] = {"ID", "NAME", "FUNCTION", "STATE", "WAITING"};
    static const char *const cheads[] = {"ID",       "NAME",    "BALANCE", "QUEUE",
                                         "CAPACITY", "CLOSING", "PINNED",  "HOME"};
    cli_table tt, ct;
    cli_table_init(&tt, 5, theads, "rllll");
    cli_table_init(&ct, 8, cheads, "rlrrrlll");
    for (size_t i = 0; i < s->nchunks; i++) {
        const cli_chunk *c = &s->chunks[i];
        for (uint32_t k = 0; k < c->t.ntasklets; k++)
            ls_tasklet_row(&tt, &c->t, &c->t.tasklets[k]);
        for (uint32_t k = 0; k < c->c.nchans; k++)
            ls_chan_row(&ct, &c->c.chans[k]);
    }
    ckpt_line(&s->ck);
    printf("\ntasklets (%zu)\n", tt.ncells / 5);
    cli_table_print(&tt, stdout, "  ");
    printf("\nchannels (%zu)\n", ct.ncells / 8);
    cli_table_print(&ct, stdout, "  ");
    cli_table_free(&tt);
    cli_table_free(&ct);
}

static json_t *ls_json(const cli_snap *s)
{
    json_t *r = json_object(), *ts = json_array(), *cs = json_array();
    for (size_t i = 0; i < s->nchunks; i++) {
        const cli_chunk *c = &s->chunks[i];
        for (uint32_t k = 0; k < c->t.ntasklets; k++)
            json_array_append_new(ts, cli_tasklet_json(&c->t, &c->t.tasklets[k], false));
        for (uint32_t k = 0; k < c->c.nchans; k++)
            json_array_append_new(cs, cli_chan_json(&c->c.chans[k], false));
    }
    json_object_set_new(r, "checkpoint", cli_ckpt_json(&s->ck));
    json_object_set_new(r, "tasklets", ts);
    json_object_set_new(r, "channels", cs);
    return r;
}

int cli_cmd_ls(const cli_opts *o)
{
    cli_store st;
    cli_snap s;
    cli_err e;
    int64_t id = 0;
    bool none;
    int rc = view_open(o, &st, &id, &none);
    if (rc != CLI_EXIT_OK || none) {
        if (rc == CLI_EXIT_OK)
            cli_store_close(&st);
        return rc != CLI_EXIT_OK ? rc : no_checkpoint(o);
    }
    if (cli_snap_load(&st, id, &s, NULL, NULL, &e) < 0) {
        rc = load_failed(&e, o);
    } else if (o->json) {
        json_t *r = ls_json(&s);
        json_object_set_new(r, "in_transit", cli_transit_json(&st));
        cli_json_print(r);
    } else {
        ls_text(&s);
        cli_transit_text(&st);
    }
    cli_snap_free(&s);
    cli_store_close(&st);
    return rc;
}

/* ---- show ---- */

static const cli_tasklet *chunk_tasklet(const cli_chunk *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->t.ntasklets; i++)
        if (c->t.tasklets[i].id == id)
            return &c->t.tasklets[i];
    return NULL;
}

static void show_print(const cli_opts *o, const cli_ckpt *ck, const cli_chunk *c,
                       const cli_tasklet *t)
{
    char where[160];
    cli_loc loc = cli_loc_chunk(c->kind, c->key, c->ckpt);
    cli_loc_text(&loc, where, sizeof where);
    if (o->json) {
        json_t *r = json_object(), *chunk = json_object();
        json_object_set_new(chunk, "kind", json_integer(c->kind));
        json_object_set_new(chunk, "key", json_integer(c->key));
        json_object_set_new(chunk, "ckpt", json_integer(c->ckpt));
        json_object_set_new(r, "checkpoint", json_integer(ck->id));
        json_object_set_new(r, "chunk", chunk);
        json_object_set_new(r, "tasklet", cli_tasklet_json(&c->t, t, true));
        cli_json_print(r);
        return;
    }
    printf("checkpoint %" PRId64 ", record %s\n", ck->id, where);
    cli_tasklet_print(&c->t, t);
}

/* Finds tasklet tid in checkpoint id and shows it; an exit code. */
static int show_tasklet(const cli_opts *o, cli_store *st, int64_t id, uint64_t tid)
{
    cli_ckpt ck;
    cli_chunk c;
    cli_err e = {{0}, {0}};
    const cli_tasklet *t = NULL;
    int rc = cli_ckpt_row(st, id, &ck, &e);
    if (rc != 0)
        return rc < 0 ? load_failed(&e, o)
                      : (cli_complain("there is no checkpoint %" PRId64, id), CLI_EXIT_FAIL);
    /* in its chunk's home record, or else in the chunk's hot record */
    for (int64_t kind = CLI_KIND_TASKLETS; !t && kind <= CLI_KIND_HOT_TASKLETS; kind += 2) {
        if (kind != CLI_KIND_TASKLETS && rc == 0)
            cli_doc_free(&c.doc);
        rc = cli_chunk_at(st, kind, (int64_t)(tid >> 8), id, &c, &e);
        if (rc < 0)
            return load_failed(&e, o);
        if (rc == 0)
            t = chunk_tasklet(&c, tid);
    }
    if (t)
        show_print(o, &ck, &c, t);
    else
        cli_complain("checkpoint %" PRId64 " has no tasklet %llu", id, (unsigned long long)tid);
    if (rc == 0)
        cli_doc_free(&c.doc);
    return t ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

int cli_cmd_show(const cli_opts *o)
{
    cli_store st;
    uint64_t tid;
    int64_t id = 0;
    bool none;
    if (!cli_parse_u64(o->arg, &tid) || (tid >> 8) > INT64_MAX) {
        cli_complain("show: '%s' is not a tasklet id", o->arg);
        return CLI_EXIT_USAGE;
    }
    int rc = view_open(o, &st, &id, &none);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (none) {
        cli_complain("%s has no checkpoints", o->db);
        rc = CLI_EXIT_FAIL;
    } else {
        rc = show_tasklet(o, &st, id, tid);
    }
    cli_store_close(&st);
    return rc;
}

/* ---- dump ---- */

static json_t *record_json(const cli_doc *d)
{
    json_t *r = json_object();
    json_object_set_new(r, "bytes", json_integer((json_int_t)d->stored));
    json_object_set_new(r, "compressed", json_boolean(d->flags != 0));
    json_object_set_new(r, "rawlen", json_integer((json_int_t)d->len));
    json_object_set_new(r, "crc32", json_integer((json_int_t)d->crc));
    return r;
}

static json_t *chunk_json(const cli_chunk *c)
{
    json_t *o = json_object(), *list = json_array();
    json_object_set_new(o, "kind", json_integer(c->kind));
    json_object_set_new(o, "key", json_integer(c->key));
    json_object_set_new(o, "ckpt", json_integer(c->ckpt));
    json_object_set_new(o, "record", record_json(&c->doc));
    if (cli_kind_base(c->kind) == CLI_KIND_TASKLETS) {
        json_object_set_new(o, "funcs", cli_funcs_json(&c->t));
        for (uint32_t i = 0; i < c->t.ntasklets; i++)
            json_array_append_new(list, cli_tasklet_json(&c->t, &c->t.tasklets[i], true));
    }
    for (uint32_t i = 0; i < c->c.nchans; i++)
        json_array_append_new(list, cli_chan_json(&c->c.chans[i], true));
    json_object_set_new(o, cli_kind_base(c->kind) == CLI_KIND_TASKLETS ? "tasklets" : "chans",
                        list);
    return o;
}

static json_t *dump_json(const cli_snap *s)
{
    json_t *r = json_object(), *chunks = json_array(), *tombs = json_array();
    json_t *head = cli_head_json(&s->head);
    json_object_set_new(head, "record", record_json(&s->head_doc));
    for (size_t i = 0; i < s->nchunks; i++)
        json_array_append_new(chunks, chunk_json(&s->chunks[i]));
    for (size_t i = 0; i < s->nrows; i++) {
        if (!s->rows[i].tombstone)
            continue;
        json_t *t = json_object();
        json_object_set_new(t, "kind", json_integer(s->rows[i].kind));
        json_object_set_new(t, "key", json_integer(s->rows[i].key));
        json_object_set_new(t, "ckpt", json_integer(s->rows[i].ckpt));
        json_array_append_new(tombs, t);
    }
    json_object_set_new(r, "checkpoint", cli_ckpt_json(&s->ck));
    json_object_set_new(r, "head", head);
    json_object_set_new(r, "chunks", chunks);
    json_object_set_new(r, "tombstones", tombs);
    return r;
}

static void record_line(const char *what, const cli_loc *loc, const cli_doc *d)
{
    char where[160];
    cli_loc_text(loc, where, sizeof where);
    printf("\n== %s, %s: record %zu bytes, %s, document %zu bytes, crc32 0x%08llx\n", what,
           where, d->stored, d->flags == 2 ? "deflate" : d->flags ? "zlib" : "stored", d->len,
           (unsigned long long)d->crc);
}

static void dump_chunk(const cli_chunk *c)
{
    cli_loc loc = cli_loc_chunk(c->kind, c->key, c->ckpt);
    static const char *const what[] = {"?", "tasklet chunk", "channel chunk",
                                       "tasklet chunk (hot record)", "channel chunk (hot record)"};
    record_line(what[c->kind >= 1 && c->kind <= 4 ? c->kind : 0], &loc, &c->doc);
    cli_funcs_print(&c->t);
    for (uint32_t i = 0; i < c->t.ntasklets; i++) {
        putchar('\n');
        cli_tasklet_print(&c->t, &c->t.tasklets[i]);
    }
    for (uint32_t i = 0; i < c->c.nchans; i++) {
        putchar('\n');
        cli_chan_print(&c->c.chans[i]);
    }
}

static void dump_text(const cli_snap *s)
{
    cli_loc loc = cli_loc_ckpt(s->ck.id);
    ckpt_line(&s->ck);
    record_line("head", &loc, &s->head_doc);
    cli_head_print(&s->head);
    for (size_t i = 0; i < s->nchunks; i++)
        dump_chunk(&s->chunks[i]);
    for (size_t i = 0; i < s->nrows; i++) {
        cli_loc t = cli_loc_chunk(s->rows[i].kind, s->rows[i].key, s->rows[i].ckpt);
        char where[160];
        cli_loc_text(&t, where, sizeof where);
        if (s->rows[i].tombstone)
            printf("\n== tombstone, %s\n", where);
    }
}

int cli_cmd_dump(const cli_opts *o)
{
    cli_store st;
    cli_snap s;
    cli_err e;
    int64_t id = 0;
    bool none;
    int rc = view_open(o, &st, &id, &none);
    if (rc != CLI_EXIT_OK || none) {
        if (rc == CLI_EXIT_OK)
            cli_store_close(&st);
        return rc != CLI_EXIT_OK ? rc : no_checkpoint(o);
    }
    if (cli_snap_load(&st, id, &s, NULL, NULL, &e) < 0)
        rc = load_failed(&e, o);
    else if (o->json)
        cli_json_print(dump_json(&s));
    else
        dump_text(&s);
    cli_snap_free(&s);
    cli_store_close(&st);
    return rc;
}

/* ---- checkpoints ---- */

static void ckpt_add(sqlite3_stmt *stmt, cli_table *tab, json_t *arr)
{
    cli_ckpt ck = {sqlite3_column_int64(stmt, 0), sqlite3_column_int64(stmt, 1),
                   sqlite3_column_int64(stmt, 2), sqlite3_column_int64(stmt, 3),
                   sqlite3_column_int64(stmt, 4)};
    char iso[48];
    cli_time_iso(ck.time, iso, sizeof iso);
    json_array_append_new(arr, cli_ckpt_json(&ck));
    cli_table_addf(tab, "%" PRId64, ck.id);
    cli_table_add(tab, iso);
    cli_table_addf(tab, "%" PRId64, ck.tasklets);
    cli_table_addf(tab, "%" PRId64, ck.channels);
    cli_table_addf(tab, "%" PRId64, ck.bytes);
}

static int ckpt_list(cli_store *st, bool json)
{
    static const char *const heads[] = {"ID", "TIME", "TASKLETS", "CHANNELS", "BYTES"};
    sqlite3_stmt *stmt = NULL;
    cli_table tab;
    json_t *arr = json_array();
    int step = SQLITE_ERROR;
    cli_table_init(&tab, 5, heads, "rlrrr");
    if (sqlite3_prepare_v2(st->db, "SELECT id, time, tasklets, channels, bytes FROM checkpoints"
                           " ORDER BY id", -1, &stmt, NULL) == SQLITE_OK)
        while ((step = sqlite3_step(stmt)) == SQLITE_ROW)
            ckpt_add(stmt, &tab, arr);
    sqlite3_finalize(stmt);
    if (step == SQLITE_DONE && json)
        cli_json_print(json_incref(arr));
    else if (step == SQLITE_DONE)
        cli_table_print(&tab, stdout, "");
    else
        cli_complain("%s: cannot read checkpoints: %s", st->path, sqlite3_errmsg(st->db));
    json_decref(arr);
    cli_table_free(&tab);
    return step == SQLITE_DONE ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

int cli_cmd_checkpoints(const cli_opts *o)
{
    cli_store st;
    cli_err e = {{0}, {0}};
    int rc = cli_store_open(&st, o->db, false);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (cli_store_check_version(&st, &e) < 0) {
        cli_print_err(&e);
        rc = CLI_EXIT_FAIL;
    } else {
        rc = ckpt_list(&st, o->json);
    }
    cli_store_close(&st);
    return rc;
}
