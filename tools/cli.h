/*
 * cli.h -- internals of the `tasklet` tool: an independent reader (and
 * pruner) of libtasklet stores, written against docs/FORMAT.md alone.  It
 * uses SQLite, msgpack-c, zlib and jansson and never links libtasklet, so
 * it also proves the format document is sufficient.
 *
 * Invariants:
 * - Every byte read from a store is distrusted.  msgpack is pre-scanned
 *   (cli_mp_parse) so that no declared count makes msgpack-c allocate more
 *   objects than there are bytes; rawlen is capped before anything is
 *   inflated.
 * - Decoded structs (cli_head, cli_tchunk, cli_cchunk) point into the
 *   cli_doc that holds their bytes, and are freed with it.
 * - Problems are reported with the record they are about (cli_loc):
 *   table, kind, key and checkpoint.
 */
#ifndef TL_CLI_H
#define TL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <msgpack.h>
#include <sqlite3.h>

#ifndef CLI_VERSION
#define CLI_VERSION "unknown"
#endif

/* Exit codes (docs/CLI.md). */
enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

#define CLI_APP_ID 1414288212            /* 0x544C5354, "TLST" */
#define CLI_STORE_VERSION 1              /* PRAGMA user_version */
#define CLI_FORMAT_VERSION 2             /* head "format", meta 'format' */
#define CLI_RAWLEN_MAX ((uint64_t)256 << 20)
#define CLI_MP_DEPTH 32                  /* msgpack-c's nesting limit */
#define CLI_BUSY_MS 5000

/* A chunk's home records (1, 2) and hot records (3, 4: FORMAT.md 7.1). */
enum { CLI_KIND_TASKLETS = 1, CLI_KIND_CHANS = 2, CLI_KIND_HOT_TASKLETS = 3, CLI_KIND_HOT_CHANS = 4 };
/* The kind of objects a record of kind k holds (1 or 2). */
static inline int64_t cli_kind_base(int64_t k) { return k > 2 ? k - 2 : k; }

/* ---- where a problem is, and what it is (util.c) ---- */

/* A record of the store: table "chunks" (kind, key, ckpt), "checkpoints"
 * (ckpt is the id), "meta" or "pragma" (name).  -1: not applicable. */
typedef struct cli_loc {
    const char *table; /* NULL: no particular record */
    const char *name;
    int64_t kind, key, ckpt;
} cli_loc;

typedef struct cli_err {
    cli_loc loc;
    char msg[1024];
} cli_err;

cli_loc cli_loc_chunk(int64_t kind, int64_t key, int64_t ckpt);
cli_loc cli_loc_ckpt(int64_t id);
cli_loc cli_loc_named(const char *table, const char *name);
void cli_loc_text(const cli_loc *loc, char *buf, size_t n);
bool cli_loc_equal(const cli_loc *a, const cli_loc *b);

/* Sets e's message (not its location); returns -1. */
int cli_fail(cli_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefixes "context: " to e's message; returns -1. */
int cli_wrap(cli_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "tasklet: [LOC: ]message" on stderr. */
void cli_print_err(const cli_err *e);
void cli_complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation: sizes are bounded by the input first; failure exits 1. */
void *cli_xcalloc(size_t n, size_t size);
void *cli_xrealloc(void *p, size_t n, size_t size);
/* Room for n + add items in p, which holds n items and was only ever
 * grown by cli_xgrow (capacities are powers of two, so appending one at a
 * time costs O(1) amortized). */
void *cli_xgrow(void *p, size_t n, size_t add, size_t size);
char *cli_xstrdup(const char *s);

/* A growable NUL-terminated string. */
typedef struct cli_buf {
    char *p;
    size_t len, cap;
} cli_buf;

void cli_buf_put(cli_buf *b, const char *s, size_t n);
void cli_buf_printf(cli_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *cli_buf_str(const cli_buf *b);
void cli_buf_reset(cli_buf *b);
void cli_buf_free(cli_buf *b);

/* A decimal number, all of s; a leading '#' is allowed. */
bool cli_parse_u64(const char *s, uint64_t *out);

/* ISO 8601 UTC with milliseconds, from ns since the epoch. */
void cli_time_iso(int64_t ns, char *out, size_t n);

/* A text table with aligned columns ('l' or 'r' per column). */
typedef struct cli_table {
    size_t ncols, ncells;
    const char *const *heads;
    const char *align;
    char **cells;
} cli_table;

void cli_table_init(cli_table *t, size_t ncols, const char *const *heads,
                    const char *align);
void cli_table_add(cli_table *t, const char *cell);
void cli_table_addf(cli_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_table_print(const cli_table *t, FILE *out, const char *indent);
void cli_table_free(cli_table *t);

/* ---- msgpack (mp.c) ---- */

int cli_mp_prescan(const unsigned char *p, size_t n, size_t *used, cli_err *e);
/* Exactly one msgpack value filling p[0..n): pre-scanned, then unpacked
 * into up (destroy with msgpack_unpacked_destroy).  Strings and binaries
 * of up point into p. */
int cli_mp_parse(const unsigned char *p, size_t n, msgpack_unpacked *up,
                 cli_err *e);
const msgpack_object *cli_mp_get(const msgpack_object *map, const char *key);
bool cli_mp_uint(const msgpack_object *o, uint64_t *out);
bool cli_mp_int(const msgpack_object *o, int64_t *out);
bool cli_mp_streq(const msgpack_object *o, const char *s);
const char *cli_mp_typename(const msgpack_object *o);
/* The id carried by an ext 1 or ext 2 payload of 8 bytes. */
uint64_t cli_mp_ext_id(const msgpack_object *o);
/* The code of an ext 3 error payload. */
int32_t cli_mp_ext_code(const msgpack_object *o);
/* A value as FORMAT.md section 1 allows: known ext types and sizes. */
int cli_check_value(const msgpack_object *v, cli_err *e);

/* Calls fn for every channel (ext 1) and tasklet (ext 2) reference in v. */
typedef void (*cli_ref_fn)(void *ud, int ext_type, uint64_t id);
void cli_value_refs(const msgpack_object *v, cli_ref_fn fn, void *ud);

/* ---- records (record.c, FORMAT.md section 2) ---- */

typedef struct cli_doc {
    unsigned char *bytes;   /* the uncompressed document */
    size_t len;             /* = rawlen */
    msgpack_unpacked up;    /* up.data: the document */
    uint64_t flags, crc;
    size_t stored;          /* bytes of the whole record */
    void **allocs;          /* decoded structs, freed with the doc */
    size_t nallocs;
} cli_doc;

int cli_record_decode(const void *blob, size_t n, cli_doc *doc, cli_err *e);
void cli_doc_free(cli_doc *doc);
void *cli_doc_alloc(cli_doc *doc, size_t n, size_t size);
bool cli_doc_is_tombstone(const cli_doc *doc);

/* ---- documents (decode.c, FORMAT.md sections 3-5) ---- */

typedef struct cli_str {
    const char *p;
    uint32_t n;
} cli_str;

typedef struct cli_head {
    cli_str magic, lib, node;
    uint64_t format, next_tid, next_cid, ntasklets, nchans;
    int64_t time;
    const msgpack_object *needs, *runq, *map;
} cli_head;

typedef enum cli_ftype {
    CLI_F_BOOL, CLI_F_I32, CLI_F_I64, CLI_F_U32, CLI_F_U64, CLI_F_F64,
    CLI_F_VALUE, CLI_F_CHAN, CLI_F_TASKLET, CLI_F_BYTES, CLI_F_CASES
} cli_ftype;

typedef struct cli_field {
    cli_str name;
    cli_ftype type;
} cli_field;

typedef struct cli_func {
    cli_str name;
    uint64_t version;
    cli_field *fields;
    uint32_t nfields;
    const cli_field **by_name; /* fields sorted by name */
    cli_str shape;             /* format 2: one letter per resume point */
} cli_func;

typedef struct cli_frame {
    uint64_t func, pc, flags;
    const msgpack_object *locals;
} cli_frame;

typedef struct cli_case {
    uint64_t chan, op;
    const msgpack_object *value;
    uint64_t qnum; /* its queue number (FORMAT.md section 4), 0: none */
} cli_case;

enum { CLI_S_RUNNABLE = 1, CLI_S_BLOCKED = 3 };
enum { CLI_W_NONE, CLI_W_SEND, CLI_W_RECV, CLI_W_SELECT, CLI_W_SLEEP, CLI_W_JOIN };

typedef struct cli_tasklet {
    uint64_t id, state, wait;
    int64_t err;
    const msgpack_object *on, *xfer; /* on: NULL when nil */
    cli_frame *frames;
    uint32_t nframes;
    /* extra */
    const msgpack_object *name, *msg, *fired, *joiners;
    bool has_sel;
    uint64_t sel_at;     /* format 1: the cases' byte offset in the locals */
    cli_str sel_field;   /* format 2: the TL_T_CASES field holding them ({NULL, 0} in 1) */
    cli_case *cases;
    uint32_t ncases;
    uint64_t qnum; /* extra.q: its place in a channel queue, 0: none */
} cli_tasklet;

typedef struct cli_tchunk {
    cli_func *funcs;
    uint32_t nfuncs;
    cli_tasklet *tasklets;
    uint32_t ntasklets;
} cli_tchunk;

typedef struct cli_waiter {
    uint64_t tasklet;
    int64_t kase;
} cli_waiter;

typedef struct cli_chan {
    uint64_t id, capacity;
    int64_t preference;
    bool schedule_all, closing;
    const msgpack_object *name, *buffer; /* name: NULL when nil */
    cli_waiter *senders, *receivers;
    uint32_t nsenders, nreceivers;
    /* A queue written as [count] (FORMAT.md section 5): the count, -1 for a
     * listed queue; cli_snap_load fills the list from the waiters' records
     * in queue-number order. */
    int64_t numbered[2]; /* senders, receivers */
    /* The optional 11th item (FORMAT.md section 5): where the channel
     * lives, for a remote channel (home_node NULL: a local one), and
     * whether the runtime pins it. */
    const msgpack_object *home_node, *home_name; /* home_name: NULL when nil */
    uint64_t home_id;
    bool pinned;
} cli_chan;

typedef struct cli_cchunk {
    cli_chan *chans;
    uint32_t nchans;
} cli_cchunk;

const char *cli_ftype_name(cli_ftype t);
int cli_decode_head(cli_doc *doc, cli_head *h, cli_err *e);
int cli_decode_tchunk(cli_doc *doc, int64_t key, cli_tchunk *c, cli_err *e);
int cli_decode_cchunk(cli_doc *doc, int64_t key, cli_cchunk *c, cli_err *e);
/* The local of field f in frame fr, or NULL. */
const msgpack_object *cli_frame_local(const cli_frame *fr, const cli_field *f);

/* ---- the store (store.c, FORMAT.md section 7) ---- */

typedef struct cli_store {
    sqlite3 *db;
    const char *path;
    int64_t user_version;
} cli_store;

/* Opens and identifies the store; returns CLI_EXIT_OK, or the exit code
 * after printing why (USAGE: cannot open, not SQLite, not a libtasklet
 * store; FAIL: cannot read it). */
int cli_store_open(cli_store *st, const char *path, bool writable);
/* Checks that path is a regular file that can be opened (for writing if
 * writable) before SQLite sees it; prints why not and returns
 * CLI_EXIT_USAGE, or CLI_EXIT_OK. */
int cli_check_file(const char *path, bool writable);
void cli_store_close(cli_store *st);
/* An error with the SQLite message; returns -1. */
int cli_sql_fail(cli_store *st, cli_err *e, const char *what);
/* Checks user_version for commands that read the format. */
int cli_store_check_version(cli_store *st, cli_err *e);

typedef struct cli_ckpt {
    int64_t id, time, tasklets, channels, bytes;
} cli_ckpt;

/* 1 and *id when there is a checkpoint, 0 when none, -1 on error. */
int cli_latest_ckpt(cli_store *st, int64_t *id, cli_err *e);

typedef struct cli_chunk {
    int64_t kind, key, ckpt;
    cli_doc doc;
    cli_tchunk t; /* kind 1 */
    cli_cchunk c; /* kind 2 */
} cli_chunk;

/* A chunk row as selected for a checkpoint (tombstones included). */
typedef struct cli_row {
    int64_t kind, key, ckpt;
    bool tombstone;
} cli_row;

typedef struct cli_snap {
    cli_ckpt ck;
    cli_doc head_doc;
    cli_head head;
    cli_chunk *chunks; /* live chunks, by kind then key */
    size_t nchunks;
    cli_row *rows;
    size_t nrows;
    size_t damaged;    /* chunks that failed (tolerant loads) */
} cli_snap;

/* With bad NULL the first damaged record fails the load; otherwise bad is
 * told of each damaged chunk and the load goes on without it. */
typedef void (*cli_bad_fn)(void *ud, const cli_err *e);
int cli_snap_load(cli_store *st, int64_t id, cli_snap *s, cli_bad_fn bad,
                  void *ud, cli_err *e);
void cli_snap_free(cli_snap *s);
/* Decodes one chunk row into c (c->doc owned by c). */
int cli_chunk_decode(cli_chunk *c, const void *blob, size_t n, cli_err *e);
/* The checkpoint row id (no head decoding); 0 found, 1 none, -1 error. */
int cli_ckpt_row(cli_store *st, int64_t id, cli_ckpt *ck, cli_err *e);
/* The chunk that checkpoint n holds for (kind, key): 0 found, 1 none (or a
 * tombstone), -1 error. */
int cli_chunk_at(cli_store *st, int64_t kind, int64_t key, int64_t n,
                 cli_chunk *c, cli_err *e);

/* Every checkpoint row (by id) with its head record decoded, or every
 * chunk row (by kind, key, ckpt) decoded: rc 0 live, 1 tombstone, -1
 * damaged (e says why).  The callee must not keep head or c. */
typedef void (*cli_ckpt_fn)(void *ud, const cli_ckpt *ck, cli_doc *head, int rc,
                            const cli_err *e);
typedef void (*cli_chunk_fn)(void *ud, cli_chunk *c, int rc, const cli_err *e);
int cli_scan_ckpts(cli_store *st, cli_ckpt_fn fn, void *ud, cli_err *e);
int cli_scan_chunks(cli_store *st, cli_chunk_fn fn, void *ud, cli_err *e);

/* ---- cross-record checks of one checkpoint (xcheck.c) ---- */

typedef void (*cli_problem_fn)(void *ud, const cli_loc *loc, const char *msg);
/* Reports through fn every fact of s that contradicts another: counts
 * against the head, dangling ids, queues against waits, runq. */
void cli_xcheck(const cli_snap *s, cli_problem_fn fn, void *ud);

/* ---- rendering (render_value.c, render_snap.c) ---- */

void cli_text_str(cli_buf *b, const char *p, size_t n, bool quote);
void cli_value_text(cli_buf *b, const msgpack_object *v);
json_t *cli_json_str(const char *p, size_t n);
json_t *cli_json_u64(uint64_t u);
json_t *cli_value_json(const msgpack_object *v);
void cli_json_print(json_t *root);

const char *cli_state_name(uint64_t state);
const char *cli_wait_name(uint64_t wait);
void cli_func_label(cli_buf *b, const cli_func *f);
const cli_func *cli_top_func(const cli_tchunk *c, const cli_tasklet *t);
void cli_waiting_text(cli_buf *b, const cli_tasklet *t);
json_t *cli_tasklet_json(const cli_tchunk *c, const cli_tasklet *t, bool full);
void cli_tasklet_print(const cli_tchunk *c, const cli_tasklet *t);
json_t *cli_chan_json(const cli_chan *ch, bool full);
/* "node/name" or "node/#id": where remote channel ch lives (ch->home_node
 * set). */
void cli_chan_home_text(cli_buf *b, const cli_chan *ch);
void cli_chan_print(const cli_chan *ch);
json_t *cli_head_json(const cli_head *h);
void cli_head_print(const cli_head *h);
json_t *cli_funcs_json(const cli_tchunk *c);
void cli_funcs_print(const cli_tchunk *c);
json_t *cli_ckpt_json(const cli_ckpt *ck);

/* ---- commands ---- */

typedef struct cli_opts {
    bool json, all, has_ckpt, has_keep, has_wait, has_to;
    int64_t ckpt, keep, wait, to;
    const char *db, *arg;
    const char *arg2, *arg3; /* send: TOPIC and JSON */
    const char *key;         /* send: --key */
    bool on_copy;            /* db is pg.c's copy of a PostgreSQL store */
} cli_opts;

/* A postgresql:// location (pg.c; without libpq each says so, exit 2):
 * cli_pg_copy writes one consistent copy of the store into a new SQLite
 * store file out; cli_pg_post inserts one wf_msg row (blob p, n bytes)
 * after checking its target, in one transaction, and announces it;
 * cli_pg_status reads workflow id's status into st (waiting, if wait, at
 * most wait_s seconds for it to finish).  Each returns a CLI_EXIT_ code,
 * having complained. */
bool cli_is_url(const char *path);
int cli_pg_copy(const char *url, const char *out);
int cli_pg_post(const char *url, int kind, const char *id, const char *key, int64_t now,
                const void *p, size_t n);
int cli_pg_status(const char *url, const char *id, bool wait, int64_t wait_s, char *st,
                  size_t cap);
/* Runs run(o) on a copy of the PostgreSQL store o->db (a temporary SQLite
 * file, removed after). */
int cli_on_copy(const cli_opts *o, int (*cmd)(const cli_opts *o));
/* prune, rollback on the PostgreSQL store o->db: in one transaction that
 * holds the epoch row (no live owner), cmd runs on a copy at path and
 * what it deleted is deleted on the server, the epoch incremented; its
 * output is printed once that committed.  cli_on_rewrite makes the
 * temporary copy and calls it. */
int cli_pg_rewrite(const cli_opts *o, const char *path, int (*cmd)(const cli_opts *o));
int cli_on_rewrite(const cli_opts *o, int (*cmd)(const cli_opts *o));

int cli_cmd_ls(const cli_opts *o);
/* What is in transit (transit.c): mailbox, dead letters, outbox, inbox. */
void cli_transit_text(cli_store *st);
json_t *cli_transit_json(cli_store *st);
int cli_cmd_show(const cli_opts *o);
int cli_cmd_dump(const cli_opts *o);
int cli_cmd_checkpoints(const cli_opts *o);
int cli_cmd_verify(const cli_opts *o);
int cli_cmd_prune(const cli_opts *o);
int cli_cmd_backup(const cli_opts *o);
/* Workflows (cmd_wf.c, cmd_wf_post.c; FORMAT.md section 11). */
int cli_cmd_wf_ls(const cli_opts *o);
int cli_cmd_wf_show(const cli_opts *o);
int cli_cmd_wf_result_print(const cli_opts *o, const char *status);
int cli_cmd_send(const cli_opts *o);
int cli_cmd_cancel(const cli_opts *o);
int cli_cmd_send_chan(const cli_opts *o);
int cli_cmd_result(const cli_opts *o);
int cli_cmd_rollback(const cli_opts *o);
/* 0 when checkpoint id of the open store loads whole and its records agree
 * (verify's checks); otherwise prints each problem (text, or JSON on
 * stderr with --json) and returns non-zero. */
int cli_ckpt_sound(cli_store *st, const cli_opts *o, int64_t id);

#endif /* TL_CLI_H */
