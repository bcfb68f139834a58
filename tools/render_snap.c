/*
 * render_snap.c -- decoded snapshot records (head, functions, tasklets,
 * channels, checkpoint rows) as text and as JSON.  docs/CLI.md shows the
 * output; the JSON shapes documented there are built here and nowhere
 * else, so `ls`, `show` and `dump` stay consistent.
 */
#include "cli.h"

#include <string.h>

static const char *const state_names[] = {
    "state0", "runnable", "running", "blocked", "done", "failed", "killed",
};
static const char *const wait_names[] = {"none", "send", "recv", "select", "sleep", "join"};

const char *cli_state_name(uint64_t state)
{
    return state < sizeof state_names / sizeof *state_names ? state_names[state] : "?";
}

const char *cli_wait_name(uint64_t wait)
{
    return wait < sizeof wait_names / sizeof *wait_names ? wait_names[wait] : "?";
}

void cli_func_label(cli_buf *b, const cli_func *f)
{
    cli_text_str(b, f->name.p, f->name.n, false);
    cli_buf_printf(b, "@%llu", (unsigned long long)f->version);
}

const cli_func *cli_top_func(const cli_tchunk *c, const cli_tasklet *t)
{
    if (t->nframes == 0)
        return NULL;
    return &c->funcs[t->frames[t->nframes - 1].func];
}

static void on_text(cli_buf *b, const cli_tasklet *t)
{
    uint64_t id = 0;
    int64_t when = 0;
    char iso[48];
    if (t->wait == CLI_W_SLEEP && t->on && cli_mp_int(t->on, &when)) {
        cli_time_iso(when, iso, sizeof iso);
        cli_buf_printf(b, " until %s", iso);
    } else if (t->on && cli_mp_uint(t->on, &id)) {
        cli_buf_printf(b, " %s%llu", t->wait == CLI_W_JOIN ? "#" : "ch#", (unsigned long long)id);
    }
}

void cli_waiting_text(cli_buf *b, const cli_tasklet *t)
{
    if (t->wait == CLI_W_NONE) {
        cli_buf_put(b, "-", 1);
    } else if (t->wait == CLI_W_SELECT) {
        if (t->has_sel)
            cli_buf_printf(b, "select %u case%s", t->ncases, t->ncases == 1 ? "" : "s");
        else
            cli_buf_put(b, "select", 6);
    } else {
        cli_buf_printf(b, "%s", cli_wait_name(t->wait));
        on_text(b, t);
    }
}

static json_t *opt_str_json(const msgpack_object *o)
{
    return o ? cli_json_str(o->via.str.ptr, o->via.str.size) : json_null();
}

/* ---- tasklets ---- */

static json_t *locals_json(const cli_func *fn, const cli_frame *fr)
{
    json_t *a = json_array();
    cli_buf text = {0};
    for (uint32_t i = 0; i < fn->nfields; i++) {
        const cli_field *f = &fn->fields[i];
        const msgpack_object *v = cli_frame_local(fr, f);
        json_t *l = json_object();
        json_object_set_new(l, "name", cli_json_str(f->name.p, f->name.n));
        json_object_set_new(l, "type", json_string(cli_ftype_name(f->type)));
        json_object_set_new(l, "value", v ? cli_value_json(v) : json_null());
        cli_buf_reset(&text);
        if (v)
            cli_value_text(&text, v);
        json_object_set_new(l, "text", json_string(v ? cli_buf_str(&text) : "(missing)"));
        json_array_append_new(a, l);
    }
    cli_buf_free(&text);
    return a;
}

static json_t *frame_json(const cli_tchunk *c, const cli_frame *fr, uint32_t index)
{
    const cli_func *fn = &c->funcs[fr->func];
    cli_buf label = {0};
    json_t *o = json_object();
    cli_func_label(&label, fn);
    json_object_set_new(o, "index", json_integer(index));
    json_object_set_new(o, "function", json_string(cli_buf_str(&label)));
    json_object_set_new(o, "name", cli_json_str(fn->name.p, fn->name.n));
    json_object_set_new(o, "version", cli_json_u64(fn->version));
    json_object_set_new(o, "pc", cli_json_u64(fr->pc));
    json_object_set_new(o, "flags", cli_json_u64(fr->flags));
    json_object_set_new(o, "error_pending", json_boolean(fr->flags & 1));
    json_object_set_new(o, "catches", json_boolean(fr->flags & 2));
    json_object_set_new(o, "locals", locals_json(fn, fr));
    cli_buf_free(&label);
    return o;
}

static json_t *select_json(const cli_tasklet *t)
{
    json_t *sel = json_object(), *cases = json_array();
    if (t->sel_field.p)
        json_object_set_new(sel, "field", json_stringn(t->sel_field.p, t->sel_field.n));
    else
        json_object_set_new(sel, "at", cli_json_u64(t->sel_at));
    for (uint32_t i = 0; i < t->ncases; i++) {
        json_t *k = json_object();
        json_object_set_new(k, "chan", cli_json_u64(t->cases[i].chan));
        json_object_set_new(k, "op", json_string(t->cases[i].op == 1 ? "send" : "recv"));
        json_object_set_new(k, "value", cli_value_json(t->cases[i].value));
        json_array_append_new(cases, k);
    }
    json_object_set_new(sel, "cases", cases);
    return sel;
}

static void tasklet_json_full(json_t *o, const cli_tchunk *c, const cli_tasklet *t)
{
    json_t *frames = json_array();
    json_object_set_new(o, "xfer", cli_value_json(t->xfer));
    json_object_set_new(o, "msg", opt_str_json(t->msg));
    json_object_set_new(o, "fired", t->fired ? cli_value_json(t->fired) : json_null());
    json_object_set_new(o, "joiners", t->joiners ? cli_value_json(t->joiners) : json_array());
    json_object_set_new(o, "select", t->has_sel ? select_json(t) : json_null());
    for (uint32_t i = 0; i < t->nframes; i++)
        json_array_append_new(frames, frame_json(c, &t->frames[i], i));
    json_object_set_new(o, "frames", frames);
}

json_t *cli_tasklet_json(const cli_tchunk *c, const cli_tasklet *t, bool full)
{
    json_t *o = json_object();
    const cli_func *top = cli_top_func(c, t);
    cli_buf b = {0};
    json_object_set_new(o, "id", cli_json_u64(t->id));
    json_object_set_new(o, "name", opt_str_json(t->name));
    if (top)
        cli_func_label(&b, top);
    json_object_set_new(o, "function", top ? json_string(cli_buf_str(&b)) : json_null());
    json_object_set_new(o, "state", json_string(cli_state_name(t->state)));
    json_object_set_new(o, "state_code", json_integer((json_int_t)t->state));
    json_object_set_new(o, "wait", json_string(cli_wait_name(t->wait)));
    json_object_set_new(o, "wait_code", json_integer((json_int_t)t->wait));
    json_object_set_new(o, "on", t->on ? cli_value_json(t->on) : json_null());
    cli_buf_reset(&b);
    cli_waiting_text(&b, t);
    json_object_set_new(o, "waiting", json_string(cli_buf_str(&b)));
    json_object_set_new(o, "err", json_integer((json_int_t)t->err));
    if (full)
        tasklet_json_full(o, c, t);
    cli_buf_free(&b);
    return o;
}

static void print_field(const char *name, const char *value)
{
    printf("  %-9s %s\n", name, value);
}

static void print_value_field(const char *name, const msgpack_object *v)
{
    cli_buf b = {0};
    cli_value_text(&b, v);
    print_field(name, cli_buf_str(&b));
    cli_buf_free(&b);
}

static void print_locals(const cli_func *fn, const cli_frame *fr)
{
    static const char *const heads[] = {"NAME", "TYPE", "VALUE"};
    cli_table tab;
    cli_buf b = {0};
    cli_table_init(&tab, 3, heads, "lll");
    for (uint32_t i = 0; i < fn->nfields; i++) {
        const msgpack_object *v = cli_frame_local(fr, &fn->fields[i]);
        cli_buf_reset(&b);
        cli_text_str(&b, fn->fields[i].name.p, fn->fields[i].name.n, false);
        cli_table_add(&tab, cli_buf_str(&b));
        cli_table_add(&tab, cli_ftype_name(fn->fields[i].type));
        cli_buf_reset(&b);
        if (v)
            cli_value_text(&b, v);
        cli_table_add(&tab, v ? cli_buf_str(&b) : "(missing)");
    }
    if (fn->nfields)
        cli_table_print(&tab, stdout, "       ");
    cli_table_free(&tab);
    cli_buf_free(&b);
}

static void print_frames(const cli_tchunk *c, const cli_tasklet *t)
{
    cli_buf b = {0};
    printf("  %-9s %u, bottom to top\n", "frames", t->nframes);
    for (uint32_t i = 0; i < t->nframes; i++) {
        const cli_frame *fr = &t->frames[i];
        cli_buf_reset(&b);
        cli_func_label(&b, &c->funcs[fr->func]);
        printf("  #%u %s  pc %llu  flags %llu%s%s\n", i, cli_buf_str(&b),
               (unsigned long long)fr->pc, (unsigned long long)fr->flags,
               fr->flags & 1 ? " (error pending)" : "", fr->flags & 2 ? " (catches)" : "");
        print_locals(&c->funcs[fr->func], fr);
    }
    cli_buf_free(&b);
}

static void print_select(const cli_tasklet *t)
{
    cli_buf b = {0};
    if (t->sel_field.p)
        printf("  %-9s in field %.*s, %u cases\n", "select", (int)t->sel_field.n, t->sel_field.p,
               t->ncases);
    else
        printf("  %-9s at %llu, %u cases\n", "select", (unsigned long long)t->sel_at, t->ncases);
    for (uint32_t i = 0; i < t->ncases; i++) {
        const cli_case *k = &t->cases[i];
        cli_buf_reset(&b);
        if (k->value->type != MSGPACK_OBJECT_NIL) {
            cli_buf_put(&b, " ", 1);
            cli_value_text(&b, k->value);
        }
        printf("    case %u: %s ch#%llu%s\n", i, k->op == 1 ? "send" : "recv",
               (unsigned long long)k->chan, cli_buf_str(&b));
    }
    cli_buf_free(&b);
}

static void print_extra(const cli_tasklet *t)
{
    if (t->msg)
        print_value_field("msg", t->msg);
    if (t->fired)
        print_value_field("fired", t->fired);
    if (t->joiners)
        print_value_field("joiners", t->joiners);
    if (t->has_sel)
        print_select(t);
}

void cli_tasklet_print(const cli_tchunk *c, const cli_tasklet *t)
{
    cli_buf b = {0};
    printf("tasklet %llu", (unsigned long long)t->id);
    if (t->name) {
        cli_text_str(&b, t->name->via.str.ptr, t->name->via.str.size, true);
        printf(" %s", cli_buf_str(&b));
    }
    printf("\n  %-9s %s\n", "state", cli_state_name(t->state));
    cli_buf_reset(&b);
    cli_waiting_text(&b, t);
    print_field("wait", cli_buf_str(&b));
    printf("  %-9s %lld\n", "err", (long long)t->err);
    print_value_field("xfer", t->xfer);
    print_extra(t);
    print_frames(c, t);
    cli_buf_free(&b);
}

/* ---- channels ---- */

static json_t *waiters_json(const cli_waiter *w, uint32_t n)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < n; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "tasklet", cli_json_u64(w[i].tasklet));
        json_object_set_new(o, "case", json_integer((json_int_t)w[i].kase));
        json_array_append_new(a, o);
    }
    return a;
}

/* The home of a remote channel: {"node", "id", "name"}, or null. */
static json_t *home_json(const cli_chan *ch)
{
    if (!ch->home_node)
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "node", opt_str_json(ch->home_node));
    json_object_set_new(o, "id", cli_json_u64(ch->home_id));
    json_object_set_new(o, "name", opt_str_json(ch->home_name));
    return o;
}

void cli_chan_home_text(cli_buf *b, const cli_chan *ch)
{
    cli_text_str(b, ch->home_node->via.str.ptr, ch->home_node->via.str.size, false);
    if (ch->home_name) {
        cli_buf_printf(b, "/");
        cli_text_str(b, ch->home_name->via.str.ptr, ch->home_name->via.str.size, false);
    } else {
        cli_buf_printf(b, "/#%llu", (unsigned long long)ch->home_id);
    }
}

json_t *cli_chan_json(const cli_chan *ch, bool full)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", cli_json_u64(ch->id));
    json_object_set_new(o, "name", opt_str_json(ch->name));
    json_object_set_new(o, "balance", json_integer((json_int_t)ch->nsenders - ch->nreceivers));
    json_object_set_new(o, "queue", json_integer(ch->buffer->via.array.size));
    json_object_set_new(o, "capacity", cli_json_u64(ch->capacity));
    json_object_set_new(o, "closing", json_boolean(ch->closing));
    json_object_set_new(o, "pinned", json_boolean(ch->pinned));
    json_object_set_new(o, "home", home_json(ch));
    if (!full)
        return o;
    json_object_set_new(o, "preference", json_integer((json_int_t)ch->preference));
    json_object_set_new(o, "schedule_all", json_boolean(ch->schedule_all));
    json_object_set_new(o, "buffer", cli_value_json(ch->buffer));
    json_object_set_new(o, "senders", waiters_json(ch->senders, ch->nsenders));
    json_object_set_new(o, "receivers", waiters_json(ch->receivers, ch->nreceivers));
    return o;
}

static void print_waiters(const char *what, const cli_waiter *w, uint32_t n)
{
    cli_buf b = {0};
    for (uint32_t i = 0; i < n; i++) {
        cli_buf_printf(&b, "%s#%llu", i ? ", " : "", (unsigned long long)w[i].tasklet);
        if (w[i].kase >= 0)
            cli_buf_printf(&b, " (select case %lld)", (long long)w[i].kase);
    }
    print_field(what, n ? cli_buf_str(&b) : "-");
    cli_buf_free(&b);
}

void cli_chan_print(const cli_chan *ch)
{
    cli_buf b = {0};
    printf("channel %llu", (unsigned long long)ch->id);
    if (ch->name) {
        cli_text_str(&b, ch->name->via.str.ptr, ch->name->via.str.size, true);
        printf(" %s", cli_buf_str(&b));
    }
    printf("\n  capacity %llu, queue %u, balance %lld, preference %lld, schedule_all %s, "
           "closing %s\n",
           (unsigned long long)ch->capacity, ch->buffer->via.array.size,
           (long long)ch->nsenders - (long long)ch->nreceivers, (long long)ch->preference,
           ch->schedule_all ? "true" : "false", ch->closing ? "true" : "false");
    if (ch->home_node) {
        cli_buf_reset(&b);
        cli_chan_home_text(&b, ch);
        print_field("home", cli_buf_str(&b));
    }
    if (ch->pinned)
        print_field("pinned", "true");
    print_value_field("buffer", ch->buffer);
    print_waiters("senders", ch->senders, ch->nsenders);
    print_waiters("receivers", ch->receivers, ch->nreceivers);
    cli_buf_free(&b);
}

/* ---- functions ---- */

json_t *cli_funcs_json(const cli_tchunk *c)
{
    json_t *a = json_array();
    cli_buf b = {0};
    for (uint32_t i = 0; i < c->nfuncs; i++) {
        const cli_func *fn = &c->funcs[i];
        json_t *o = json_object(), *fields = json_array();
        cli_buf_reset(&b);
        cli_func_label(&b, fn);
        json_object_set_new(o, "index", json_integer(i));
        json_object_set_new(o, "function", json_string(cli_buf_str(&b)));
        json_object_set_new(o, "name", cli_json_str(fn->name.p, fn->name.n));
        json_object_set_new(o, "version", cli_json_u64(fn->version));
        if (fn->shape.p) /* format 2 */
            json_object_set_new(o, "shape", cli_json_str(fn->shape.p, fn->shape.n));
        for (uint32_t k = 0; k < fn->nfields; k++) {
            json_t *f = json_object();
            json_object_set_new(f, "name", cli_json_str(fn->fields[k].name.p, fn->fields[k].name.n));
            json_object_set_new(f, "type", json_string(cli_ftype_name(fn->fields[k].type)));
            json_array_append_new(fields, f);
        }
        json_object_set_new(o, "fields", fields);
        json_array_append_new(a, o);
    }
    cli_buf_free(&b);
    return a;
}

void cli_funcs_print(const cli_tchunk *c)
{
    cli_buf b = {0};
    for (uint32_t i = 0; i < c->nfuncs; i++) {
        const cli_func *fn = &c->funcs[i];
        cli_buf_reset(&b);
        cli_func_label(&b, fn);
        cli_buf_put(&b, ":", 1);
        for (uint32_t k = 0; k < fn->nfields; k++) {
            cli_buf_put(&b, k ? ", " : " ", k ? 2 : 1);
            cli_text_str(&b, fn->fields[k].name.p, fn->fields[k].name.n, false);
            cli_buf_printf(&b, " %s", cli_ftype_name(fn->fields[k].type));
        }
        printf("func %u: %s\n", i, cli_buf_str(&b));
    }
    cli_buf_free(&b);
}

/* ---- the head and checkpoint rows ---- */

static bool head_known(const msgpack_object *key)
{
    static const char *const known[] = {"magic", "format", "lib", "node", "time", "needs",
                                        "next_tid", "next_cid", "ntasklets", "nchans", "runq"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (cli_mp_streq(key, known[i]))
            return true;
    return false;
}

static json_t *head_other_json(const cli_head *h)
{
    json_t *other = json_object();
    cli_buf b = {0};
    for (uint32_t i = 0; i < h->map->via.map.size; i++) {
        const msgpack_object_kv *kv = &h->map->via.map.ptr[i];
        if (head_known(&kv->key))
            continue;
        cli_buf_reset(&b);
        cli_value_text(&b, &kv->key);
        json_object_set_new(other, cli_buf_str(&b), cli_value_json(&kv->val));
    }
    cli_buf_free(&b);
    return other;
}

json_t *cli_head_json(const cli_head *h)
{
    json_t *o = json_object();
    char iso[48];
    cli_time_iso(h->time, iso, sizeof iso);
    json_object_set_new(o, "magic", cli_json_str(h->magic.p, h->magic.n));
    json_object_set_new(o, "format", cli_json_u64(h->format));
    json_object_set_new(o, "lib", cli_json_str(h->lib.p, h->lib.n));
    json_object_set_new(o, "node", cli_json_str(h->node.p, h->node.n));
    json_object_set_new(o, "time", json_integer((json_int_t)h->time));
    json_object_set_new(o, "time_iso", json_string(iso));
    json_object_set_new(o, "needs", cli_value_json(h->needs));
    json_object_set_new(o, "next_tid", cli_json_u64(h->next_tid));
    json_object_set_new(o, "next_cid", cli_json_u64(h->next_cid));
    json_object_set_new(o, "ntasklets", cli_json_u64(h->ntasklets));
    json_object_set_new(o, "nchans", cli_json_u64(h->nchans));
    json_object_set_new(o, "runq", cli_value_json(h->runq));
    json_object_set_new(o, "other", head_other_json(h));
    return o;
}

static void print_str_field(const char *name, cli_str s)
{
    cli_buf b = {0};
    cli_text_str(&b, s.p, s.n, true);
    print_field(name, cli_buf_str(&b));
    cli_buf_free(&b);
}

void cli_head_print(const cli_head *h)
{
    char iso[48];
    cli_time_iso(h->time, iso, sizeof iso);
    puts("head");
    print_str_field("magic", h->magic);
    printf("  %-9s %llu\n", "format", (unsigned long long)h->format);
    print_str_field("lib", h->lib);
    print_str_field("node", h->node);
    printf("  %-9s %s (%lld)\n", "time", iso, (long long)h->time);
    print_value_field("needs", h->needs);
    printf("  %-9s %llu\n  %-9s %llu\n  %-9s %llu\n  %-9s %llu\n", "next_tid",
           (unsigned long long)h->next_tid, "next_cid", (unsigned long long)h->next_cid,
           "ntasklets", (unsigned long long)h->ntasklets, "nchans",
           (unsigned long long)h->nchans);
    print_value_field("runq", h->runq);
    for (uint32_t i = 0; i < h->map->via.map.size; i++) {
        const msgpack_object_kv *kv = &h->map->via.map.ptr[i];
        if (head_known(&kv->key))
            continue;
        cli_buf b = {0};
        cli_value_text(&b, &kv->key);
        print_value_field(cli_buf_str(&b), &kv->val);
        cli_buf_free(&b);
    }
}

json_t *cli_ckpt_json(const cli_ckpt *ck)
{
    json_t *o = json_object();
    char iso[48];
    cli_time_iso(ck->time, iso, sizeof iso);
    json_object_set_new(o, "id", json_integer(ck->id));
    json_object_set_new(o, "time", json_integer(ck->time));
    json_object_set_new(o, "time_iso", json_string(iso));
    json_object_set_new(o, "tasklets", json_integer(ck->tasklets));
    json_object_set_new(o, "channels", json_integer(ck->channels));
    json_object_set_new(o, "bytes", json_integer(ck->bytes));
    return o;
}
