/*
 * test_cli.c -- the `tasklet` tool, run as a real child process against
 * stores this test writes itself, byte by byte per docs/FORMAT.md, with
 * sqlite3, msgpack-c and zlib (no libtasklet: the tool and this writer
 * are two independent readings of the spec).
 *
 * The fixture store has three checkpoints:
 *   1: tasklet 1; channels 1 and 256                (all rows new)
 *   2: tasklets 1, 2, 300; channels 1, 2, 256       (256 unchanged)
 *   3: tasklets 1-7 (every state and wait kind, a compressed chunk),
 *      tasklet chunk 1 becomes a tombstone; channel chunk 1 still @1
 * and the migration tests add a fourth (write_migrate_ckpt): channels
 * 1-4 and 256, with remote and pinned ones, and the migration tables.
 * Each test gets a fresh temporary directory (mkdtemp) and store; the
 * tool's path comes from the TASKLET_CLI environment variable.  The
 * golden store libtasklet wrote (TASKLET_GOLDEN, if the file exists) must
 * verify too.
 * Every run also asserts that no sanitizer spoke on stderr.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>
#include <sqlite3.h>
#include <zlib.h>

extern char **environ;

#define T0 INT64_C(1700000000000000000) /* 2023-11-14T22:13:20Z */
#define BIG_U64 ((UINT64_C(1) << 63) + 5)

typedef struct fixture {
    char dir[64], db[96], out[96], err[96], junk[96];
} fixture;

static const char *cli_path;

/* ---- msgpack writing ---- */

static void pstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void pref(msgpack_packer *pk, int8_t type, uint64_t id)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(id >> (56 - 8 * i));
    msgpack_pack_ext_with_body(pk, b, 8, type);
}

static void perror_value(msgpack_packer *pk, int32_t code, const char *msg)
{
    unsigned char b[64];
    uint32_t u = (uint32_t)code;
    size_t n = strlen(msg);
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(u >> (24 - 8 * i));
    memcpy(b + 4, msg, n);
    msgpack_pack_ext_with_body(pk, b, 4 + n, 3);
}

typedef struct doc {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} doc;

static void doc_init(doc *d)
{
    msgpack_sbuffer_init(&d->sb);
    msgpack_packer_init(&d->pk, &d->sb, msgpack_sbuffer_write);
}

/* Wraps bytes into a record (FORMAT.md section 2) with the given facts. */
static void raw_record(doc *rec, uint64_t flags, uint64_t crc, uint64_t rawlen,
                       const void *payload, size_t n)
{
    doc_init(rec);
    msgpack_pack_array(&rec->pk, 5);
    pstr(&rec->pk, "tlrec");
    msgpack_pack_uint64(&rec->pk, flags);
    msgpack_pack_uint64(&rec->pk, crc);
    msgpack_pack_uint64(&rec->pk, rawlen);
    msgpack_pack_bin(&rec->pk, n);
    msgpack_pack_bin_body(&rec->pk, payload, n);
}

/* The record of a document: compressed (level 1) from 512 bytes on. */
static void record_of(const doc *d, doc *rec)
{
    uLong crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)d->sb.data, (uInt)d->sb.size);
    if (d->sb.size < 512) {
        raw_record(rec, 0, crc, d->sb.size, d->sb.data, d->sb.size);
        return;
    }
    uLongf zlen = compressBound(d->sb.size);
    Bytef *z = malloc(zlen);
    assert_non_null(z);
    assert_int_equal(compress2(z, &zlen, (const Bytef *)d->sb.data, d->sb.size, 1), Z_OK);
    raw_record(rec, 1, crc, d->sb.size, z, zlen);
    free(z);
}

/* ---- fixture documents ---- */

static void funcs(msgpack_packer *pk)
{
    static const char *const main_fields[][2] = {
        {"n", "i64"}, {"out", "chan"}, {"v", "value"}, {"buf", "bytes"},
        {"ok", "bool"}, {"ratio", "f64"}, {"child", "tasklet"}, {"cnt", "u32"},
    };
    static const char *const worker_fields[][2] = {
        {"in", "chan"}, {"got", "value"}, {"i", "i32"}, {"big", "u64"},
    };
    msgpack_pack_array(pk, 2);
    msgpack_pack_array(pk, 3);
    pstr(pk, "main");
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_array(pk, 8);
    for (int i = 0; i < 8; i++) {
        msgpack_pack_array(pk, 2);
        pstr(pk, main_fields[i][0]);
        pstr(pk, main_fields[i][1]);
    }
    msgpack_pack_array(pk, 3);
    pstr(pk, "worker");
    msgpack_pack_uint64(pk, 2);
    msgpack_pack_array(pk, 4);
    for (int i = 0; i < 4; i++) {
        msgpack_pack_array(pk, 2);
        pstr(pk, worker_fields[i][0]);
        pstr(pk, worker_fields[i][1]);
    }
}

static void main_frame(msgpack_packer *pk, uint64_t pc, uint64_t out, bool big, uint64_t child)
{
    static const unsigned char dead[] = {0xde, 0xad, 0xbe, 0xef};
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint64(pk, pc);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_map(pk, 8);
    pstr(pk, "n");
    msgpack_pack_int64(pk, 42);
    pstr(pk, "out");
    if (out)
        pref(pk, 1, out);
    else
        msgpack_pack_nil(pk);
    pstr(pk, "v");
    msgpack_pack_array(pk, big ? 5 : 4);
    msgpack_pack_int64(pk, 1);
    pstr(pk, "two");
    perror_value(pk, -4, "closed");
    msgpack_pack_map(pk, 1);
    pstr(pk, "k");
    msgpack_pack_double(pk, 0.5);
    if (big) {
        char s[601];
        memset(s, 'a', 600);
        s[600] = '\0';
        pstr(pk, s);
    }
    pstr(pk, "buf");
    msgpack_pack_bin(pk, 4);
    msgpack_pack_bin_body(pk, dead, 4);
    pstr(pk, "ok");
    msgpack_pack_true(pk);
    pstr(pk, "ratio");
    msgpack_pack_double(pk, 0.25);
    pstr(pk, "child");
    if (child)
        pref(pk, 2, child);
    else
        msgpack_pack_nil(pk);
    pstr(pk, "cnt");
    msgpack_pack_uint32(pk, 7);
}

static void worker_frame(msgpack_packer *pk, uint64_t pc, uint64_t flags, uint64_t in)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_uint64(pk, pc);
    msgpack_pack_uint64(pk, flags);
    msgpack_pack_map(pk, 4);
    pstr(pk, "in");
    pref(pk, 1, in);
    pstr(pk, "got");
    msgpack_pack_nil(pk);
    pstr(pk, "i");
    msgpack_pack_int64(pk, -3);
    pstr(pk, "big");
    msgpack_pack_uint64(pk, BIG_U64);
}

/* The first six items of a tasklet record; on < 0 means nil. */
static void tasklet_head(msgpack_packer *pk, uint64_t id, uint64_t state, uint64_t wait,
                         int64_t err, int64_t on)
{
    msgpack_pack_array(pk, 9);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_uint64(pk, state);
    msgpack_pack_uint64(pk, wait);
    msgpack_pack_int64(pk, err);
    msgpack_pack_uint64(pk, 0); /* extrefs: reserved */
    if (on < 0)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_int64(pk, on);
}

/* Channel 1's receivers at checkpoint 3 written as [count] (FORMAT.md
 * section 5): the count is numbered_receivers, and the waiters carry their
 * queue numbers (tasklet 2 extra.q 20, tasklet 5's case 0 number 10). */
static int numbered_receivers;

static void name_extra(msgpack_packer *pk, const char *name, bool joiner4)
{
    bool q = joiner4 && numbered_receivers;
    msgpack_pack_map(pk, (joiner4 ? 2 : 1) + q);
    if (q) {
        pstr(pk, "q");
        msgpack_pack_uint64(pk, 20);
    }
    pstr(pk, "name");
    pstr(pk, name);
    if (joiner4) {
        pstr(pk, "joiners");
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint64(pk, 4);
    }
}

static void tasklet_1(msgpack_packer *pk, int ckpt)
{
    tasklet_head(pk, 1, 1, 0, 0, -1);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 1);
    main_frame(pk, 10, 1, ckpt == 3, 0);
    name_extra(pk, "main", false);
}

static void tasklet_2(msgpack_packer *pk, int ckpt)
{
    tasklet_head(pk, 2, 3, 2, 0, 1); /* blocked, receiving on channel 1 */
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 2);
    main_frame(pk, 5, 0, false, 0);
    worker_frame(pk, 57, 2, 1);
    name_extra(pk, "worker", ckpt == 3);
}

static void tasklet_3(msgpack_packer *pk)
{
    tasklet_head(pk, 3, 3, 4, 0, T0 + INT64_C(3600000000000)); /* sleeps an hour */
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 1);
    worker_frame(pk, 20, 0, 256);
    msgpack_pack_nil(pk);
}

static void tasklet_4(msgpack_packer *pk)
{
    tasklet_head(pk, 4, 3, 5, 0, 2); /* joins tasklet 2 */
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 1);
    main_frame(pk, 30, 0, false, 2);
    msgpack_pack_nil(pk);
}

static void tasklet_5(msgpack_packer *pk)
{
    tasklet_head(pk, 5, 3, 3, 0, -1); /* select: recv on 1, send "hello" on 2 */
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 1);
    worker_frame(pk, 40, 0, 2);
    msgpack_pack_map(pk, 2);
    pstr(pk, "fired");
    msgpack_pack_int64(pk, -1);
    pstr(pk, "sel");
    msgpack_pack_map(pk, 2);
    pstr(pk, "at");
    msgpack_pack_uint64(pk, 16);
    pstr(pk, "cases");
    msgpack_pack_array(pk, 2);
    msgpack_pack_array(pk, numbered_receivers ? 4 : 3);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_uint64(pk, 2);
    msgpack_pack_nil(pk);
    if (numbered_receivers)
        msgpack_pack_uint64(pk, 10);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, 2);
    msgpack_pack_uint64(pk, 1);
    pstr(pk, "hello");
}

static void tasklet_6_7(msgpack_packer *pk)
{
    tasklet_head(pk, 6, 4, 0, 0, -1); /* done, returned "result" */
    pstr(pk, "result");
    msgpack_pack_array(pk, 0);
    msgpack_pack_nil(pk);
    tasklet_head(pk, 7, 5, 0, -100, -1); /* failed */
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 0);
    msgpack_pack_map(pk, 1);
    pstr(pk, "msg");
    pstr(pk, "boom");
}

static void tasklet_chunk0(doc *d, int ckpt)
{
    static const uint32_t count[] = {0, 1, 2, 7};
    doc_init(d);
    msgpack_pack_map(&d->pk, 2);
    pstr(&d->pk, "funcs");
    funcs(&d->pk);
    pstr(&d->pk, "tasklets");
    msgpack_pack_array(&d->pk, count[ckpt]);
    tasklet_1(&d->pk, ckpt);
    if (ckpt >= 2)
        tasklet_2(&d->pk, ckpt);
    if (ckpt == 3) {
        tasklet_3(&d->pk);
        tasklet_4(&d->pk);
        tasklet_5(&d->pk);
        tasklet_6_7(&d->pk);
    }
}

static void tasklet_chunk1(doc *d)
{
    doc_init(d);
    msgpack_pack_map(&d->pk, 2);
    pstr(&d->pk, "funcs");
    funcs(&d->pk);
    pstr(&d->pk, "tasklets");
    msgpack_pack_array(&d->pk, 1);
    tasklet_head(&d->pk, 300, 1, 0, 0, -1);
    msgpack_pack_nil(&d->pk);
    msgpack_pack_array(&d->pk, 1);
    worker_frame(&d->pk, 0, 0, 1);
    msgpack_pack_nil(&d->pk);
}

static void tombstone(doc *d)
{
    doc_init(d);
    msgpack_pack_array(&d->pk, 0);
}

/* [id, name, capacity, preference, schedule_all, closing, extrefs, ...]:
 * the first 7 of a record's `items` (10, or 11 with the extra map). */
static void chan_head_n(msgpack_packer *pk, size_t items, uint64_t id, const char *name,
                        uint64_t cap, bool closing)
{
    msgpack_pack_array(pk, items);
    msgpack_pack_uint64(pk, id);
    if (name)
        pstr(pk, name);
    else
        msgpack_pack_nil(pk);
    msgpack_pack_uint64(pk, cap);
    msgpack_pack_int64(pk, id == 2 ? 0 : -1);
    if (id == 2)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    if (closing)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    msgpack_pack_uint64(pk, 0); /* extrefs: reserved */
}

static void chan_head(msgpack_packer *pk, uint64_t id, const char *name, uint64_t cap,
                      bool closing)
{
    chan_head_n(pk, 10, id, name, cap, closing);
}

/* A queue (FORMAT.md section 5): [ids delta-coded, [[position, case]...]];
 * kases[i] < 0 is a plain send or receive. */
static void queue(msgpack_packer *pk, size_t n, const uint64_t *ids, const int *kases)
{
    size_t nsel = 0;
    msgpack_pack_array(pk, 2);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_int64(pk, (int64_t)(ids[i] - (i ? ids[i - 1] : 0)));
        nsel += kases[i] >= 0;
    }
    msgpack_pack_array(pk, nsel);
    for (size_t i = 0; i < n; i++)
        if (kases[i] >= 0) {
            msgpack_pack_array(pk, 2);
            msgpack_pack_uint64(pk, i);
            msgpack_pack_uint64(pk, (uint64_t)kases[i]);
        }
}

/* Channel 1's receivers: at checkpoint 2 tasklet 2; at checkpoint 3
 * tasklet 5 (a select, case 0) and then tasklet 2, so that the ids go
 * down (a negative delta).  With drop_receiver_2 the queue loses tasklet
 * 2, which still waits on the channel. */
static bool drop_receiver_2;

static void chan1_receivers(msgpack_packer *pk, int ckpt)
{
    static const uint64_t ids3[] = {5, 2}, ids2[] = {2};
    static const int kases3[] = {0, -1}, kases2[] = {-1};
    if (ckpt == 3 && numbered_receivers) {
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint64(pk, (uint64_t)numbered_receivers);
    } else if (ckpt == 3)
        queue(pk, drop_receiver_2 ? 1 : 2, ids3, kases3);
    else
        queue(pk, ckpt == 2 ? 1 : 0, ids2, kases2);
}

static void chan_chunk0(doc *d, int ckpt)
{
    static const uint64_t five[] = {5};
    static const int case1[] = {1};
    doc_init(d);
    msgpack_pack_map(&d->pk, 1);
    pstr(&d->pk, "chans");
    msgpack_pack_array(&d->pk, ckpt == 1 ? 1 : 2);
    chan_head(&d->pk, 1, "jobs", 0, false);
    msgpack_pack_array(&d->pk, 0);              /* buffer */
    queue(&d->pk, 0, NULL, NULL);               /* senders */
    chan1_receivers(&d->pk, ckpt);
    if (ckpt == 1)
        return;
    chan_head(&d->pk, 2, NULL, 2, false);
    msgpack_pack_array(&d->pk, ckpt == 3 ? 2 : 0);
    if (ckpt == 3) {
        msgpack_pack_int64(&d->pk, 1);
        pstr(&d->pk, "x");
    }
    queue(&d->pk, ckpt == 3 ? 1 : 0, five, case1); /* senders: 5 in a select */
    queue(&d->pk, 0, NULL, NULL);
}

static void chan_chunk1(doc *d)
{
    doc_init(d);
    msgpack_pack_map(&d->pk, 1);
    pstr(&d->pk, "chans");
    msgpack_pack_array(&d->pk, 1);
    chan_head(&d->pk, 256, "idle", 0, true);
    msgpack_pack_array(&d->pk, 0);
    queue(&d->pk, 0, NULL, NULL);
    queue(&d->pk, 0, NULL, NULL);
}

/* Checkpoint 4 (test_migration_records): channel chunk 0 of checkpoint 3
 * with the 11th items a migrating runtime writes (FORMAT.md section 5):
 * channel 1 pinned, 3 a remote channel addressed by name, 4 one addressed
 * by id (pinned, and with a key readers must skip).  Damage: BAD_EXTRA
 * makes channel 3's extra an array instead of a map, BAD_BUFFER gives
 * remote channel 3 a capacity. */
enum { GOOD, BAD_EXTRA, BAD_BUFFER };

static void chan_chunk0_migrate(doc *d, int damage)
{
    static const uint64_t five[] = {5};
    static const int case1[] = {1};
    msgpack_packer *pk = &d->pk;
    doc_init(d);
    msgpack_pack_map(pk, 1);
    pstr(pk, "chans");
    msgpack_pack_array(pk, 4);
    chan_head_n(pk, 11, 1, "jobs", 0, false);
    msgpack_pack_array(pk, 0);
    queue(pk, 0, NULL, NULL);
    chan1_receivers(pk, 3);
    msgpack_pack_map(pk, 1);
    pstr(pk, "pinned");
    msgpack_pack_true(pk);
    chan_head(pk, 2, NULL, 2, false);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, 1);
    pstr(pk, "x");
    queue(pk, 1, five, case1);
    queue(pk, 0, NULL, NULL);
    chan_head_n(pk, 11, 3, NULL, damage == BAD_BUFFER ? 2 : 0, false);
    msgpack_pack_array(pk, 0);
    queue(pk, 0, NULL, NULL);
    queue(pk, 0, NULL, NULL);
    if (damage == BAD_EXTRA) {
        msgpack_pack_array(pk, 0);
    } else {
        msgpack_pack_map(pk, 1);
        pstr(pk, "home");
        msgpack_pack_array(pk, 3);
        pstr(pk, "node-b");
        msgpack_pack_uint64(pk, 7);
        pstr(pk, "orders");
    }
    chan_head_n(pk, 11, 4, NULL, 0, false);
    msgpack_pack_array(pk, 0);
    queue(pk, 0, NULL, NULL);
    queue(pk, 0, NULL, NULL);
    msgpack_pack_map(pk, 3);
    pstr(pk, "home");
    msgpack_pack_array(pk, 3);
    pstr(pk, "node-b");
    msgpack_pack_uint64(pk, 9);
    msgpack_pack_nil(pk);
    pstr(pk, "pinned");
    msgpack_pack_true(pk);
    pstr(pk, "later");
    msgpack_pack_uint64(pk, 1);
}

static void head_doc(doc *d, int ckpt, uint64_t ntasklets, uint64_t nchans)
{
    doc_init(d);
    msgpack_packer *pk = &d->pk;
    msgpack_pack_map(pk, 11);
    pstr(pk, "magic");
    pstr(pk, "libtasklet");
    pstr(pk, "format");
    msgpack_pack_uint64(pk, 1);
    pstr(pk, "lib");
    pstr(pk, "0.1.0");
    pstr(pk, "node");
    pstr(pk, "test-node");
    pstr(pk, "time");
    msgpack_pack_int64(pk, T0 + ckpt * INT64_C(1000000000));
    pstr(pk, "needs");
    msgpack_pack_array(pk, 2);
    pstr(pk, "main@1");
    pstr(pk, "worker@2");
    pstr(pk, "next_tid");
    msgpack_pack_uint64(pk, ckpt == 1 ? 1 : 300);
    pstr(pk, "next_cid");
    msgpack_pack_uint64(pk, 256);
    pstr(pk, "ntasklets");
    msgpack_pack_uint64(pk, ntasklets);
    pstr(pk, "nchans");
    msgpack_pack_uint64(pk, nchans);
    pstr(pk, "runq");
    msgpack_pack_array(pk, ckpt == 2 ? 2 : 1);
    msgpack_pack_uint64(pk, 1);
    if (ckpt == 2)
        msgpack_pack_uint64(pk, 300);
}

/* ---- fixture store ---- */

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
}

static sqlite3 *store_create(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    exec_ok(db, "PRAGMA journal_mode=WAL; PRAGMA application_id=1414288212;"
                " PRAGMA user_version=1;"
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value NOT NULL);"
                "CREATE TABLE owner(id INTEGER PRIMARY KEY CHECK (id = 1),"
                " pid INTEGER NOT NULL, host TEXT NOT NULL, since INTEGER NOT NULL);"
                "CREATE TABLE checkpoints(id INTEGER PRIMARY KEY, time INTEGER NOT NULL,"
                " tasklets INTEGER NOT NULL, channels INTEGER NOT NULL,"
                " bytes INTEGER NOT NULL, head BLOB NOT NULL);"
                "CREATE TABLE chunks(kind INTEGER NOT NULL, key INTEGER NOT NULL,"
                " ckpt INTEGER NOT NULL, data BLOB NOT NULL,"
                " PRIMARY KEY (kind, key, ckpt)) WITHOUT ROWID;"
                "INSERT INTO meta VALUES ('format', 1), ('created', 1700000000000000000),"
                " ('lib', '0.1.0');");
    return db;
}

static void put_blob(sqlite3 *db, const char *sql, const int64_t *ints, int nints,
                     const doc *blob)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    for (int i = 0; i < nints; i++)
        sqlite3_bind_int64(st, i + 1, ints[i]);
    sqlite3_bind_blob(st, nints + 1, blob->sb.data, (int)blob->sb.size, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

/* Stores document d as the chunk (kind, key) of checkpoint ckpt. */
static int64_t put_chunk(sqlite3 *db, int64_t kind, int64_t key, int64_t ckpt, doc *d)
{
    doc rec;
    int64_t ints[] = {kind, key, ckpt};
    record_of(d, &rec);
    put_blob(db, "INSERT INTO chunks VALUES (?1, ?2, ?3, ?4)", ints, 3, &rec);
    int64_t n = (int64_t)rec.sb.size;
    msgpack_sbuffer_destroy(&rec.sb);
    msgpack_sbuffer_destroy(&d->sb);
    return n;
}

static void put_ckpt(sqlite3 *db, int64_t id, int64_t nt, int64_t nc, int64_t bytes)
{
    doc head, rec;
    head_doc(&head, (int)id, (uint64_t)nt, (uint64_t)nc);
    record_of(&head, &rec);
    int64_t ints[] = {id, T0 + id * INT64_C(1000000000), nt, nc,
                      bytes + (int64_t)rec.sb.size};
    put_blob(db, "INSERT INTO checkpoints VALUES (?1, ?2, ?3, ?4, ?5, ?6)", ints, 5, &rec);
    msgpack_sbuffer_destroy(&rec.sb);
    msgpack_sbuffer_destroy(&head.sb);
}

static void write_ckpt1(sqlite3 *db)
{
    doc d;
    int64_t bytes = 0;
    exec_ok(db, "BEGIN");
    tasklet_chunk0(&d, 1);
    bytes += put_chunk(db, 1, 0, 1, &d);
    chan_chunk0(&d, 1);
    bytes += put_chunk(db, 2, 0, 1, &d);
    chan_chunk1(&d);
    bytes += put_chunk(db, 2, 1, 1, &d);
    put_ckpt(db, 1, 1, 2, bytes);
    exec_ok(db, "COMMIT");
}

static void write_ckpt2(sqlite3 *db)
{
    doc d;
    int64_t bytes = 0;
    exec_ok(db, "BEGIN");
    tasklet_chunk0(&d, 2);
    bytes += put_chunk(db, 1, 0, 2, &d);
    tasklet_chunk1(&d);
    bytes += put_chunk(db, 1, 1, 2, &d);
    chan_chunk0(&d, 2);
    bytes += put_chunk(db, 2, 0, 2, &d);
    put_ckpt(db, 2, 3, 3, bytes);
    exec_ok(db, "COMMIT");
}

static void write_ckpt3(sqlite3 *db)
{
    doc d;
    int64_t bytes = 0;
    exec_ok(db, "BEGIN");
    tasklet_chunk0(&d, 3);
    bytes += put_chunk(db, 1, 0, 3, &d);
    tombstone(&d);
    bytes += put_chunk(db, 1, 1, 3, &d);
    chan_chunk0(&d, 3);
    bytes += put_chunk(db, 2, 0, 3, &d);
    put_ckpt(db, 3, 7, 3, bytes);
    exec_ok(db, "COMMIT");
}

static void write_store(const char *path)
{
    sqlite3 *db = store_create(path);
    write_ckpt1(db);
    write_ckpt2(db);
    write_ckpt3(db);
    sqlite3_close(db);
}

/* Runs SQL against the fixture store (to damage it on purpose). */
static void store_sql(const fixture *fx, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    exec_ok(db, sql);
    sqlite3_close(db);
}

static int64_t store_count(const fixture *fx, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* Replaces the data of chunk row (kind, key, ckpt) with the record rec. */
static void replace_chunk(const fixture *fx, int kind, int key, int ckpt, doc *rec)
{
    sqlite3 *db;
    int64_t ints[] = {kind, key, ckpt};
    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    put_blob(db, "UPDATE chunks SET data = ?4 WHERE kind = ?1 AND key = ?2 AND ckpt = ?3",
             ints, 3, rec);
    sqlite3_close(db);
    msgpack_sbuffer_destroy(&rec->sb);
}

/* ---- running the tool ---- */

typedef struct run {
    int status;
    char *out, *err;
    char cmd[256];
} run;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc((size_t)n + 1, 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

/* Runs `tasklet ARGS...` (NULL-terminated) with stdout and stderr in files. */
static run run_cli(const fixture *fx, ...)
{
    const char *argv[16] = {cli_path};
    int argc = 1;
    va_list ap;
    va_start(ap, fx);
    while (argc < 15 && (argv[argc] = va_arg(ap, const char *)) != NULL)
        argc++;
    va_end(ap);
    argv[argc] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, fx->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, fx->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, cli_path, &fa, NULL, (char *const *)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);

    run r = {-1, slurp(fx->out), slurp(fx->err), "tasklet"};
    for (int i = 1; i < argc; i++) {
        strncat(r.cmd, " ", sizeof r.cmd - strlen(r.cmd) - 1);
        strncat(r.cmd, argv[i], sizeof r.cmd - strlen(r.cmd) - 1);
    }
    if (!WIFEXITED(status))
        fail_msg("%s died of signal %d\n%s", r.cmd, WTERMSIG(status), r.err);
    r.status = WEXITSTATUS(status);
    if (strstr(r.err, "Sanitizer") || strstr(r.err, "runtime error"))
        fail_msg("%s: sanitizer report:\n%s", r.cmd, r.err);
    return r;
}

static void run_free(run *r)
{
    free(r->out);
    free(r->err);
}

#define assert_contains(hay, needle)                                                  \
    do {                                                                              \
        if (!strstr((hay), (needle)))                                                 \
            fail_msg("expected \"%s\" in:\n%s", (needle), (hay));                     \
    } while (0)

/* The run, after checking it exited with `code`. */
static run expect_run(run r, int code)
{
    if (r.status != code)
        fail_msg("%s: exit %d, expected %d\nstdout:\n%s\nstderr:\n%s", r.cmd, r.status, code,
                 r.out, r.err);
    return r;
}

/* EXPECT(fx, code, args...): runs `tasklet args...`, expecting exit code. */
#define EXPECT(fx, code, ...) expect_run(run_cli((fx), __VA_ARGS__, (const char *)NULL), (code))

static json_t *json_of(const run *r)
{
    json_error_t err;
    json_t *j = json_loads(r->out, 0, &err);
    if (!j)
        fail_msg("not JSON (%s):\n%s", err.text, r->out);
    return j;
}

/* The object in array a whose "id" is id. */
static json_t *by_id(json_t *a, json_int_t id)
{
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        if (json_integer_value(json_object_get(o, "id")) == id)
            return o;
    }
    fail_msg("no id %lld", (long long)id);
    return NULL;
}

/* ---- setup ---- */

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/tlcli.XXXXXX", tmp && strlen(tmp) < 32 ? tmp : "/tmp");
    if (!fx || !mkdtemp(fx->dir))
        return -1;
    snprintf(fx->db, sizeof fx->db, "%s/store.db", fx->dir);
    snprintf(fx->out, sizeof fx->out, "%s/out", fx->dir);
    snprintf(fx->err, sizeof fx->err, "%s/err", fx->dir);
    snprintf(fx->junk, sizeof fx->junk, "%s/junk", fx->dir);
    write_store(fx->db);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    static const char *const files[] = {"store.db", "store.db-wal", "store.db-shm", "store.db-lock", "out",
                                        "err", "junk", "golden.db", "golden.db-wal",
                                        "golden.db-shm"};
    fixture *fx = *state;
    char path[128];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", fx->dir, files[i]);
        unlink(path);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* ---- usage ---- */

static void test_usage(void **state)
{
    fixture *fx = *state;
    static const char *const cmds[] = {"ls", "show", "dump", "verify", "checkpoints", "prune"};
    run r = EXPECT(fx, 0, "--help");
    for (size_t i = 0; i < 6; i++)
        assert_contains(r.out, cmds[i]);
    run_free(&r);
    for (size_t i = 0; i < 6; i++) {
        r = EXPECT(fx, 0, cmds[i], "--help");
        assert_contains(r.out, "usage: tasklet");
        run_free(&r);
    }
    r = EXPECT(fx, 2, (const char *)NULL);
    run_free(&r);
    r = EXPECT(fx, 2, "frobnicate", fx->db);
    assert_contains(r.err, "unknown command");
    run_free(&r);
    r = EXPECT(fx, 2, "ls");
    assert_contains(r.err, "missing DB");
    run_free(&r);
    r = EXPECT(fx, 2, "ls", "--bogus", fx->db);
    run_free(&r);
    r = EXPECT(fx, 2, "show", fx->db, "seven");
    run_free(&r);
    r = EXPECT(fx, 2, "prune", fx->db);
    run_free(&r);
    r = EXPECT(fx, 2, "prune", fx->db, "--keep", "0");
    run_free(&r);
    r = EXPECT(fx, 2, "ls", fx->db, "extra");
    run_free(&r);
}

/* ---- reading a good store ---- */

static void test_ls_text(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "ls", fx->db);
    assert_contains(r.out, "checkpoint 3 at 2023-11-14T22:13:23.000Z: 7 tasklets, 3 channels");
    assert_contains(r.out, "recv ch#1");
    assert_contains(r.out, "sleep until 2023-11-14T23:13:20.000Z");
    assert_contains(r.out, "join #2");
    assert_contains(r.out, "select 2 cases");
    assert_contains(r.out, "worker@2");
    assert_contains(r.out, "main@1");
    assert_contains(r.out, "failed (err -100)");
    assert_contains(r.out, "jobs");
    assert_contains(r.out, "idle");
    run_free(&r);
}

static void test_ls_json(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "ls", "--json", fx->db);
    json_t *j = json_of(&r), *ts = json_object_get(j, "tasklets"), *cs = json_object_get(j, "channels");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "checkpoint"), "id")), 3);
    assert_int_equal(json_array_size(ts), 7);
    assert_int_equal(json_array_size(cs), 3);
    json_t *t2 = by_id(ts, 2);
    assert_string_equal(json_string_value(json_object_get(t2, "name")), "worker");
    assert_string_equal(json_string_value(json_object_get(t2, "function")), "worker@2");
    assert_string_equal(json_string_value(json_object_get(t2, "state")), "blocked");
    assert_string_equal(json_string_value(json_object_get(t2, "waiting")), "recv ch#1");
    assert_int_equal(json_integer_value(json_object_get(t2, "on")), 1);
    assert_true(json_is_null(json_object_get(by_id(ts, 6), "function")));
    json_t *c1 = by_id(cs, 1), *c2 = by_id(cs, 2);
    assert_int_equal(json_integer_value(json_object_get(c1, "balance")), -2);
    assert_int_equal(json_integer_value(json_object_get(c2, "balance")), 1);
    assert_int_equal(json_integer_value(json_object_get(c2, "queue")), 2);
    assert_int_equal(json_integer_value(json_object_get(c2, "capacity")), 2);
    assert_true(json_is_null(json_object_get(c2, "name")));
    assert_true(json_is_true(json_object_get(by_id(cs, 256), "closing")));
    json_decref(j);
    run_free(&r);
}

static void test_show(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "show", fx->db, "1");
    assert_contains(r.out, "tasklet 1 \"main\"");
    assert_contains(r.out, "#0 main@1  pc 10");
    assert_contains(r.out, "chan#1");
    assert_contains(r.out, "error(-4, \"closed\")");
    assert_contains(r.out, "0xdeadbeef");
    assert_contains(r.out, "{\"k\": 0.5}");
    assert_contains(r.out, "0.25");
    run_free(&r);
    r = EXPECT(fx, 0, "show", fx->db, "4");
    assert_contains(r.out, "tasklet#2");
    run_free(&r);
    r = EXPECT(fx, 0, "show", fx->db, "5");
    assert_contains(r.out, "case 1: send ch#2 \"hello\"");
    run_free(&r);
    r = EXPECT(fx, 1, "show", fx->db, "99");
    assert_contains(r.err, "no tasklet 99");
    run_free(&r);
    r = EXPECT(fx, 0, "show", "--ckpt", "2", fx->db, "2");
    assert_contains(r.out, "checkpoint 2, record chunks(kind=1, key=0, ckpt=2)");
    run_free(&r);
}

static void test_show_json(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "show", "--json", fx->db, "2");
    json_t *j = json_of(&r), *t = json_object_get(j, "tasklet");
    json_t *frames = json_object_get(t, "frames");
    assert_int_equal(json_array_size(frames), 2);
    json_t *top = json_array_get(frames, 1);
    assert_string_equal(json_string_value(json_object_get(top, "function")), "worker@2");
    assert_int_equal(json_integer_value(json_object_get(top, "pc")), 57);
    assert_true(json_is_true(json_object_get(top, "catches")));
    json_t *locals = json_object_get(top, "locals");
    json_t *in = json_array_get(locals, 0), *big = json_array_get(locals, 3);
    assert_string_equal(json_string_value(json_object_get(in, "type")), "chan");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(in, "value"), "chan")), 1);
    assert_string_equal(json_string_value(json_object_get(in, "text")), "chan#1");
    assert_string_equal(json_string_value(json_object_get(big, "value")), "9223372036854775813");
    json_t *bottom_locals = json_object_get(json_array_get(frames, 0), "locals");
    json_t *buf = json_array_get(bottom_locals, 3), *v = json_array_get(bottom_locals, 2);
    assert_string_equal(json_string_value(json_object_get(json_object_get(buf, "value"), "bin")),
                        "deadbeef");
    json_t *err = json_object_get(json_array_get(json_object_get(v, "value"), 2), "error");
    assert_int_equal(json_integer_value(json_object_get(err, "code")), -4);
    assert_string_equal(json_string_value(json_object_get(err, "msg")), "closed");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(t, "joiners"), 0)), 4);
    json_decref(j);
    run_free(&r);
}

static void test_dump(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "dump", fx->db);
    assert_contains(r.out, "tasklet chunk, chunks(kind=1, key=0, ckpt=3): record");
    assert_contains(r.out, "zlib");
    assert_contains(r.out, "channel chunk, chunks(kind=2, key=1, ckpt=1)");
    assert_contains(r.out, "tombstone, chunks(kind=1, key=1, ckpt=3)");
    assert_contains(r.out, "\"libtasklet\"");
    assert_contains(r.out, "tasklet 7");
    assert_contains(r.out, "channel 256 \"idle\"");
    assert_contains(r.out, "receivers #5 (select case 0), #2");
    assert_contains(r.out, "senders   #5 (select case 1)");
    run_free(&r);
    r = EXPECT(fx, 0, "dump", "--json", fx->db);
    json_t *j = json_of(&r), *chunks = json_object_get(j, "chunks");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "head"), "ntasklets")), 7);
    assert_int_equal(json_array_size(chunks), 3);
    json_t *c0 = json_array_get(chunks, 0);
    assert_true(json_is_true(json_object_get(json_object_get(c0, "record"), "compressed")));
    assert_int_equal(json_array_size(json_object_get(c0, "tasklets")), 7);
    assert_int_equal(json_array_size(json_object_get(c0, "funcs")), 2);
    assert_int_equal(json_array_size(json_object_get(json_array_get(chunks, 1), "chans")), 2);
    assert_int_equal(json_array_size(json_object_get(j, "tombstones")), 1);
    json_decref(j);
    run_free(&r);
}

static void test_checkpoints(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "checkpoints", fx->db);
    assert_contains(r.out, "2023-11-14T22:13:21.000Z");
    assert_contains(r.out, "2023-11-14T22:13:23.000Z");
    run_free(&r);
    r = EXPECT(fx, 0, "checkpoints", "--json", fx->db);
    json_t *j = json_of(&r);
    assert_int_equal(json_array_size(j), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 2), "tasklets")), 7);
    assert_true(json_integer_value(json_object_get(json_array_get(j, 0), "bytes")) > 0);
    json_decref(j);
    run_free(&r);
}

static void test_verify_ok(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "verify", fx->db);
    assert_string_equal(r.out, "ok: checkpoint 3, 7 tasklets, 3 channels\n");
    run_free(&r);
    r = EXPECT(fx, 0, "verify", "--all", fx->db);
    assert_contains(r.out, "checked checkpoint 1: 1 tasklets, 2 channels");
    run_free(&r);
    r = EXPECT(fx, 0, "verify", "--json", fx->db);
    json_t *j = json_of(&r);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_int_equal(json_integer_value(json_object_get(j, "records")), 12);
    json_decref(j);
    run_free(&r);
}

static void test_read_only(void **state)
{
    fixture *fx = *state;
    char *before = slurp(fx->db);
    struct stat st;
    assert_int_equal(stat(fx->db, &st), 0);
    run r = EXPECT(fx, 0, "ls", fx->db);
    run_free(&r);
    r = EXPECT(fx, 0, "verify", fx->db);
    run_free(&r);
    char *after = slurp(fx->db);
    assert_memory_equal(before, after, (size_t)st.st_size);
    free(before);
    free(after);
}

/* ---- damage ---- */

static void test_flipped_payload(void **state)
{
    fixture *fx = *state;
    /* The payload is the record's last item: its last byte is document. */
    store_sql(fx, "UPDATE chunks SET data = CAST(substr(data, 1, length(data) - 1)"
                  " || x'ff' AS BLOB) WHERE kind = 2 AND key = 0 AND ckpt = 3");
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "chunks(kind=2, key=0, ckpt=3)");
    assert_contains(r.out, "crc32 mismatch");
    run_free(&r);
    r = EXPECT(fx, 1, "ls", fx->db);
    assert_contains(r.err, "chunks(kind=2, key=0, ckpt=3)");
    assert_contains(r.err, "tasklet verify");
    run_free(&r);
}

static void test_flipped_compressed(void **state)
{
    fixture *fx = *state;
    store_sql(fx, "UPDATE chunks SET data = CAST(substr(data, 1, length(data) - 40)"
                  " || x'5a' || substr(data, length(data) - 38) AS BLOB)"
                  " WHERE kind = 1 AND key = 0 AND ckpt = 3");
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "chunks(kind=1, key=0, ckpt=3)");
    run_free(&r);
    r = EXPECT(fx, 1, "show", fx->db, "1");
    assert_contains(r.err, "chunks(kind=1, key=0, ckpt=3)");
    run_free(&r);
}

static void test_truncated(void **state)
{
    fixture *fx = *state;
    store_sql(fx, "UPDATE chunks SET data = substr(data, 1, length(data) - 7)"
                  " WHERE kind = 1 AND key = 0 AND ckpt = 3;"
                  "UPDATE checkpoints SET head = substr(head, 1, 20) WHERE id = 2");
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "chunks(kind=1, key=0, ckpt=3)");
    assert_contains(r.out, "truncated");
    assert_contains(r.out, "checkpoints(id=2)");
    run_free(&r);
}

static void test_deleted_row(void **state)
{
    fixture *fx = *state;
    store_sql(fx, "DELETE FROM chunks WHERE kind = 2 AND key = 1");
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "checkpoints(id=3): the head says 3 channels, the chunks it"
                           " selects hold 2");
    assert_contains(r.out, "refers to channel 256");
    run_free(&r);
}

static void test_deleted_latest_row(void **state)
{
    fixture *fx = *state;
    store_sql(fx, "DELETE FROM chunks WHERE kind = 1 AND key = 0 AND ckpt = 3");
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "checkpoints(id=3): the head says 7 tasklets");
    assert_contains(r.out, "key 0 @2");
    run_free(&r);
}

static void test_wrong_application_id(void **state)
{
    fixture *fx = *state;
    store_sql(fx, "PRAGMA application_id = 42");
    run r = EXPECT(fx, 2, "verify", fx->db);
    assert_contains(r.err, "not a libtasklet store");
    assert_contains(r.err, "application_id is 42");
    run_free(&r);
    r = EXPECT(fx, 2, "ls", fx->db);
    run_free(&r);
    r = EXPECT(fx, 2, "prune", fx->db, "--keep", "1");
    run_free(&r);
}

static void test_not_sqlite(void **state)
{
    fixture *fx = *state;
    FILE *f = fopen(fx->junk, "wb");
    assert_non_null(f);
    srand(7);
    for (int i = 0; i < 8192; i++)
        fputc(rand() & 0xff, f);
    fclose(f);
    static const char *const cmds[] = {"verify", "ls", "dump", "checkpoints"};
    for (size_t i = 0; i < 4; i++) {
        run r = EXPECT(fx, 2, cmds[i], fx->junk);
        assert_contains(r.err, "not a SQLite database");
        run_free(&r);
    }
    run r = EXPECT(fx, 2, "verify", fx->dir);
    run_free(&r);
    r = EXPECT(fx, 2, "verify", "/nonexistent/store.db");
    assert_contains(r.err, "cannot open");
    run_free(&r);
}

static void test_schema_version(void **state)
{
    fixture *fx = *state;
    store_sql(fx, "PRAGMA user_version = 2; UPDATE meta SET value = 3 WHERE key = 'format'");
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "PRAGMA user_version");
    assert_contains(r.out, "meta(key='format')");
    run_free(&r);
    r = EXPECT(fx, 1, "ls", fx->db);
    assert_contains(r.err, "newer");
    run_free(&r);
}

/* ---- hostile records: bounded before anything is allocated ---- */

static void test_hostile_counts(void **state)
{
    fixture *fx = *state;
    static const unsigned char huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const unsigned char deep[40] = {
        0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
        0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
        0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0xc0};
    doc rec;
    raw_record(&rec, 0, crc32(0, huge_array, 5), 5, huge_array, 5);
    replace_chunk(fx, 2, 0, 3, &rec);
    raw_record(&rec, 1, 0, 0xffffffffu, "x", 1);           /* rawlen over the cap */
    replace_chunk(fx, 2, 0, 2, &rec);
    raw_record(&rec, 1, 0, 200u << 20, "xxxxxxxx", 8);     /* impossible ratio */
    replace_chunk(fx, 1, 0, 1, &rec);
    raw_record(&rec, 0, crc32(0, deep, 40), 40, deep, 40); /* nested 39 deep */
    replace_chunk(fx, 1, 1, 2, &rec);
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "declares 4294967295 items but only 0 bytes are left");
    assert_contains(r.out, "exceeds");
    assert_contains(r.out, "compressed bytes can inflate to");
    assert_contains(r.out, "nested deeper than 32");
    run_free(&r);
    r = EXPECT(fx, 1, "dump", fx->db);
    run_free(&r);
}

/* XORs byte pos (modulo the length) of chunk row (kind, key, ckpt). */
static void mutate_chunk(const fixture *fx, int kind, int key, int ckpt, unsigned pos,
                         unsigned char x)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    doc rec;
    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT data FROM chunks WHERE kind = ?1 AND"
                                        " key = ?2 AND ckpt = ?3", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_int(st, 1, kind);
    sqlite3_bind_int(st, 2, key);
    sqlite3_bind_int(st, 3, ckpt);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    doc_init(&rec);
    msgpack_sbuffer_write(&rec.sb, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    rec.sb.data[pos % rec.sb.size] ^= (char)x;
    replace_chunk(fx, kind, key, ckpt, &rec);
}

static void test_hostile_mutations(void **state)
{
    fixture *fx = *state;
    static const int rows[][3] = {{1, 0, 3}, {2, 0, 3}, {2, 1, 1}};
    unsigned seed = 12345;
    int failed = 0;
    for (int i = 0; i < 60; i++) {
        const int *row = rows[i % 3];
        seed = seed * 1103515245u + 12345u;
        unsigned pos = (seed >> 8) % 4096, x = 1 + (seed >> 20) % 255;
        mutate_chunk(fx, row[0], row[1], row[2], pos, (unsigned char)x);
        run r = run_cli(fx, "verify", fx->db, (const char *)NULL);
        assert_true(r.status == 0 || r.status == 1);
        failed += r.status == 1;
        run_free(&r);
        r = run_cli(fx, "dump", "--json", fx->db, (const char *)NULL);
        assert_true(r.status == 0 || r.status == 1);
        run_free(&r);
        mutate_chunk(fx, row[0], row[1], row[2], pos, (unsigned char)x); /* undo */
    }
    assert_int_equal(failed, 60);
}

/* A queue that contradicts a wait, and a queue whose select position
 * points past its ids. */
static void test_inconsistent_queue(void **state)
{
    fixture *fx = *state;
    static const uint64_t ids[] = {2};
    doc d, rec;
    drop_receiver_2 = true;
    chan_chunk0(&d, 3);
    drop_receiver_2 = false;
    record_of(&d, &rec);
    msgpack_sbuffer_destroy(&d.sb);
    replace_chunk(fx, 2, 0, 3, &rec);
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "chunks(kind=1, key=0, ckpt=3): tasklet 2 waits to receive on"
                           " channel 1 but is not in its receivers");
    run_free(&r);

    doc_init(&d);
    msgpack_pack_map(&d.pk, 1);
    pstr(&d.pk, "chans");
    msgpack_pack_array(&d.pk, 1);
    chan_head(&d.pk, 256, "idle", 0, true);
    msgpack_pack_array(&d.pk, 0);
    queue(&d.pk, 1, ids, (const int[]){-1});
    msgpack_pack_array(&d.pk, 2);               /* receivers: [[2], [[1, 0]]] */
    msgpack_pack_array(&d.pk, 1);
    msgpack_pack_uint64(&d.pk, 2);
    msgpack_pack_array(&d.pk, 1);
    msgpack_pack_array(&d.pk, 2);
    msgpack_pack_uint64(&d.pk, 1);
    msgpack_pack_uint64(&d.pk, 0);
    record_of(&d, &rec);
    msgpack_sbuffer_destroy(&d.sb);
    replace_chunk(fx, 2, 1, 1, &rec);
    r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "chunks(kind=2, key=1, ckpt=1): channel 256: receivers:"
                           " cases[0]: position 1 is out of order or beyond the 1 ids");
    run_free(&r);
}

/* Rewrites checkpoint 3's chunks with channel 1's receivers as [count]. */
static void write_numbered(const fixture *fx, int count)
{
    doc d, rec;
    numbered_receivers = count;
    tasklet_chunk0(&d, 3);
    record_of(&d, &rec);
    msgpack_sbuffer_destroy(&d.sb);
    replace_chunk(fx, 1, 0, 3, &rec);
    chan_chunk0(&d, 3);
    record_of(&d, &rec);
    msgpack_sbuffer_destroy(&d.sb);
    replace_chunk(fx, 2, 0, 3, &rec);
    numbered_receivers = 0;
}

static void test_numbered_queue(void **state)
{
    fixture *fx = *state;
    write_numbered(fx, 2);
    run r = EXPECT(fx, 0, "verify", fx->db);
    assert_string_equal(r.out, "ok: checkpoint 3, 7 tasklets, 3 channels\n");
    run_free(&r);
    r = EXPECT(fx, 0, "dump", fx->db);
    assert_contains(r.out, "receivers #5 (select case 0), #2"); /* by number, not by id */
    run_free(&r);
    write_numbered(fx, 3);
    r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "channel 1 counts 3 receivers, 2 records give it a queue number");
    run_free(&r);
}

/* ---- prune ---- */

static void test_prune(void **state)
{
    fixture *fx = *state;
    run before = EXPECT(fx, 0, "ls", "--json", fx->db);
    run r = EXPECT(fx, 0, "prune", fx->db, "--keep", "2");
    assert_contains(r.out, "kept 2 checkpoints (2..3), removed 1: 1");
    assert_contains(r.out, "removed 2 chunk rows (2 superseded, 0 tombstones)");
    run_free(&r);
    assert_int_equal(store_count(fx, "SELECT count(*) FROM checkpoints"), 2);
    assert_int_equal(store_count(fx, "SELECT count(*) FROM chunks"), 7);
    r = EXPECT(fx, 0, "verify", "--all", fx->db);
    assert_contains(r.out, "checked checkpoint 2: 3 tasklets, 3 channels");
    run_free(&r);

    r = EXPECT(fx, 0, "prune", "--json", "--keep=1", fx->db);
    json_t *j = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(j, "removed_checkpoints")), 1);
    assert_int_equal(json_array_size(json_object_get(j, "removed_chunks")), 4);
    json_decref(j);
    run_free(&r);
    assert_int_equal(store_count(fx, "SELECT count(*) FROM checkpoints"), 1);
    assert_int_equal(store_count(fx, "SELECT count(*) FROM chunks"), 3);
    assert_int_equal(store_count(fx, "SELECT count(*) FROM chunks WHERE kind = 1 AND key = 1"), 0);
    assert_int_equal(store_count(fx, "SELECT ckpt FROM chunks WHERE kind = 2 AND key = 1"), 1);
    r = EXPECT(fx, 0, "verify", fx->db);
    assert_string_equal(r.out, "ok: checkpoint 3, 7 tasklets, 3 channels\n");
    run_free(&r);
    run after = EXPECT(fx, 0, "ls", "--json", fx->db);
    assert_string_equal(before.out, after.out);
    run_free(&before);
    run_free(&after);
    r = EXPECT(fx, 0, "prune", fx->db, "--keep", "1");
    assert_contains(r.out, "removed 0 chunk rows");
    run_free(&r);
}

static void test_prune_refuses_damage(void **state)
{
    fixture *fx = *state;
    store_sql(fx, "UPDATE chunks SET data = CAST(substr(data, 1, length(data) - 1)"
                  " || x'00' AS BLOB) WHERE kind = 2 AND key = 1 AND ckpt = 1");
    run r = EXPECT(fx, 1, "prune", fx->db, "--keep", "1");
    assert_contains(r.err, "chunks(kind=2, key=1, ckpt=1)");
    assert_contains(r.err, "nothing was removed");
    run_free(&r);
    assert_int_equal(store_count(fx, "SELECT count(*) FROM checkpoints"), 3);
    assert_int_equal(store_count(fx, "SELECT count(*) FROM chunks"), 9);
}

static void test_empty_store(void **state)
{
    fixture *fx = *state;
    unlink(fx->db);
    sqlite3_close(store_create(fx->db));
    run r = EXPECT(fx, 0, "ls", fx->db);
    assert_contains(r.out, "no checkpoints");
    run_free(&r);
    r = EXPECT(fx, 0, "verify", fx->db);
    assert_string_equal(r.out, "ok: no checkpoints\n");
    run_free(&r);
    r = EXPECT(fx, 0, "prune", fx->db, "--keep", "3");
    run_free(&r);
    r = EXPECT(fx, 1, "show", fx->db, "1");
    run_free(&r);
}

/* The golden store libtasklet itself wrote (tests/data/golden-v1.db, when
 * it exists): the writer and this reader agree on every byte. */
/* A store a node wrote: checkpoint 4 has remote and pinned channels (the
 * 11th item of a channel record), and the store has the mailbox, outbox
 * and inbox tables of migration (FORMAT.md section 7). */
static void write_migrate_ckpt(const fixture *fx, int damage)
{
    sqlite3 *db;
    doc d;
    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    exec_ok(db, "CREATE TABLE mailbox(xid TEXT PRIMARY KEY, to_node TEXT NOT NULL,"
                " from_node TEXT NOT NULL, time INTEGER NOT NULL, data BLOB NOT NULL);"
                "CREATE TABLE outbox(xid TEXT PRIMARY KEY, peer TEXT NOT NULL,"
                " data BLOB NOT NULL);"
                "CREATE TABLE inbox(xid TEXT PRIMARY KEY, peer TEXT NOT NULL,"
                " time INTEGER NOT NULL);"
                "INSERT INTO mailbox VALUES ('00ff', 'node-b', 'test-node', 0, x'90');"
                "INSERT INTO outbox VALUES ('01ff', 'node-b', x'90');"
                "INSERT INTO inbox VALUES ('02ff', '', 0);"
                "BEGIN");
    chan_chunk0_migrate(&d, damage);
    int64_t bytes = put_chunk(db, 2, 0, 4, &d);
    put_ckpt(db, 4, 7, 5, bytes);
    exec_ok(db, "COMMIT");
    sqlite3_close(db);
}

static void test_migration_records(void **state)
{
    fixture *fx = *state;
    write_migrate_ckpt(fx, GOOD);
    run r = EXPECT(fx, 0, "verify", "--all", fx->db);
    assert_contains(r.out, "ok: checkpoint");
    run_free(&r);
    r = EXPECT(fx, 0, "ls", fx->db);
    assert_contains(r.out, "PINNED");
    assert_contains(r.out, "node-b/orders");
    assert_contains(r.out, "node-b/#9");
    run_free(&r);
    r = EXPECT(fx, 0, "ls", "--json", fx->db);
    json_t *j = json_of(&r), *cs = json_object_get(j, "channels");
    assert_int_equal(json_array_size(cs), 5);
    assert_true(json_is_true(json_object_get(by_id(cs, 1), "pinned")));
    assert_true(json_is_null(json_object_get(by_id(cs, 1), "home")));
    assert_true(json_is_false(json_object_get(by_id(cs, 2), "pinned")));
    json_t *h3 = json_object_get(by_id(cs, 3), "home"), *h4 = json_object_get(by_id(cs, 4), "home");
    assert_string_equal(json_string_value(json_object_get(h3, "node")), "node-b");
    assert_int_equal(json_integer_value(json_object_get(h3, "id")), 7);
    assert_string_equal(json_string_value(json_object_get(h3, "name")), "orders");
    assert_int_equal(json_integer_value(json_object_get(h4, "id")), 9);
    assert_true(json_is_null(json_object_get(h4, "name")));
    assert_true(json_is_true(json_object_get(by_id(cs, 4), "pinned")));
    json_decref(j);
    run_free(&r);
    r = EXPECT(fx, 0, "dump", fx->db);
    assert_contains(r.out, "  home      node-b/orders\n");
    assert_contains(r.out, "  pinned    true\n");
    run_free(&r);
    r = EXPECT(fx, 0, "dump", "--json", fx->db);
    json_decref(json_of(&r));
    run_free(&r);
    r = EXPECT(fx, 0, "show", fx->db, "2");
    run_free(&r);
    r = EXPECT(fx, 0, "verify", "--ckpt", "3", fx->db);
    run_free(&r);
}

static void test_migration_bad_extra(void **state)
{
    fixture *fx = *state;
    write_migrate_ckpt(fx, BAD_EXTRA);
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "extra is a array, not a map");
    run_free(&r);
}

static void test_migration_remote_buffer(void **state)
{
    fixture *fx = *state;
    write_migrate_ckpt(fx, BAD_BUFFER);
    run r = EXPECT(fx, 1, "verify", fx->db);
    assert_contains(r.out, "a remote channel with capacity 2");
    run_free(&r);
}

/* A copy of the golden store named by environment variable var in the
 * fixture's directory, verified and dumped; its path in path. */
static void check_golden(fixture *fx, const char *var, char *path, size_t cap)
{
    const char *golden = getenv(var);
    FILE *in = golden ? fopen(golden, "rb") : NULL;
    if (!in)
        fail_msg("%s names no readable store (%s)", var, golden ? golden : "unset");
    snprintf(path, cap, "%s/golden.db", fx->dir);
    FILE *out = fopen(path, "wb");
    assert_non_null(out);
    for (int c; (c = fgetc(in)) != EOF;)
        fputc(c, out);
    fclose(in);
    fclose(out);
    run r = EXPECT(fx, 0, "verify", "--all", path);
    assert_contains(r.out, "ok: checkpoint");
    run_free(&r);
    r = EXPECT(fx, 0, "dump", "--json", path);
    json_decref(json_of(&r));
    run_free(&r);
}

static void test_golden_store(void **state)
{
    char path[128];
    check_golden(*state, "TASKLET_GOLDEN", path, sizeof path);
}

/* Format 2 (issue 9): a select's cases are a TL_T_CASES field ("cases")
 * named by extra.sel.field, no byte offset; the tool reads, verifies and
 * shows both forms. */
static void test_golden_v2_select(void **state)
{
    fixture *fx = *state;
    char path[128];
    check_golden(fx, "TASKLET_GOLDEN_V2", path, sizeof path);
    run r = EXPECT(fx, 0, "show", "--json", path, "258");
    json_t *j = json_of(&r), *sel = json_object_get(json_object_get(j, "tasklet"), "select");
    assert_non_null(sel);
    assert_string_equal(json_string_value(json_object_get(sel, "field")), "cs");
    assert_null(json_object_get(sel, "at"));
    assert_int_equal(json_array_size(json_object_get(sel, "cases")), 2);
    json_decref(j);
    run_free(&r);
    r = EXPECT(fx, 0, "show", path, "258");
    assert_contains(r.out, "select    in field cs, 2 cases");
    run_free(&r);
}

/* Format 2: a long channel queue written as [count] (FORMAT.md section 5). */
static void test_golden_v2_queue(void **state)
{
    char path[128];
    check_golden(*state, "TASKLET_GOLDEN_QUEUE", path, sizeof path);
}

/* ---- files that are not stores (issue 11, item 8) ---- */

/* A FIFO, a directory and a symlink loop each get their own message at
 * once (SQLite alone blocks for ever opening a FIFO). */
static void test_not_a_regular_file(void **state)
{
    fixture *fx = *state;
    alarm(60); /* a hang is a failure */
    assert_int_equal(mkfifo(fx->junk, 0600), 0);
    static const char *const cmds[] = {"verify", "ls", "dump", "checkpoints"};
    for (size_t i = 0; i < 4; i++) {
        run r = EXPECT(fx, 2, cmds[i], fx->junk);
        assert_contains(r.err, "not a regular file");
        run_free(&r);
    }
    run r = EXPECT(fx, 2, "show", fx->junk, "1");
    assert_contains(r.err, "not a regular file");
    run_free(&r);
    r = EXPECT(fx, 2, "prune", "--keep", "1", fx->junk);
    assert_contains(r.err, "not a regular file");
    run_free(&r);
    unlink(fx->junk);
    r = EXPECT(fx, 2, "verify", fx->dir);
    assert_contains(r.err, "is a directory");
    run_free(&r);
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/loop-a", fx->dir);
    snprintf(b, sizeof b, "%s/loop-b", fx->dir);
    assert_int_equal(symlink(b, a), 0);
    assert_int_equal(symlink(a, b), 0);
    r = EXPECT(fx, 2, "ls", a);
    assert_contains(r.err, "symbolic links");
    run_free(&r);
    unlink(a);
    unlink(b);
    r = EXPECT(fx, 2, "ls", "/nonexistent/store.db");
    assert_contains(r.err, "no such file");
    run_free(&r);
    /* a PostgreSQL store nobody answers for: said plainly, without the
     * URL's password (a build without libpq says it reads SQLite only) */
    r = EXPECT(fx, 2, "ls", "postgresql://app:s3cret@127.0.0.1:1/db");
    if (!strstr(r.err, "SQLite store files only"))
        assert_contains(r.err, "cannot connect to PostgreSQL at 127.0.0.1:1/db");
    assert_null(strstr(r.err, "s3cret"));
    run_free(&r);
    /* a command that rewrites checkpoints (tests/test_store_pg.c) too */
    r = EXPECT(fx, 2, "prune", "--keep", "1", "postgresql://app:s3cret@127.0.0.1:1/db");
    if (!strstr(r.err, "SQLite store files only"))
        assert_contains(r.err, "cannot connect to PostgreSQL at 127.0.0.1:1/db");
    assert_null(strstr(r.err, "s3cret"));
    run_free(&r);
    alarm(0);
}

/* ---- backup (issue 11, item 7) ---- */

static void copy_file(const char *from, const char *to)
{
    struct stat sb;
    assert_int_equal(stat(from, &sb), 0);
    char *bytes = slurp(from);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, (size_t)sb.st_size, f), (size_t)sb.st_size);
    fclose(f);
    free(bytes);
}

/* Committed checkpoints that sit only in the -wal file (its writer still
 * has the store open and never checkpointed the WAL): a copy of the main
 * file misses them, `tasklet backup` does not, and its copy stands alone. */
static void test_backup_takes_the_wal(void **state)
{
    fixture *fx = *state;
    unlink(fx->db);
    sqlite3 *db = store_create(fx->db);
    exec_ok(db, "PRAGMA wal_autocheckpoint=0");
    write_ckpt1(db);
    exec_ok(db, "PRAGMA wal_checkpoint(TRUNCATE)"); /* checkpoint 1 in the main file */
    write_ckpt2(db);
    write_ckpt3(db); /* 2 and 3 only in the WAL while db stays open */

    char copy[128], bak[128], wal[160];
    snprintf(copy, sizeof copy, "%s/copy.db", fx->dir);
    snprintf(bak, sizeof bak, "%s/backup.db", fx->dir);
    copy_file(fx->db, copy);
    run r = EXPECT(fx, 0, "verify", copy);
    assert_contains(r.out, "ok: checkpoint 1,"); /* what cp gives: an older store */
    run_free(&r);

    r = EXPECT(fx, 0, "backup", fx->db, bak);
    assert_contains(r.out, "checkpoint 3");
    run_free(&r);
    sqlite3_close(db);
    struct stat sb;
    assert_int_equal(stat(bak, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(wal, sizeof wal, "%s-wal", bak);
    assert_int_equal(access(wal, F_OK), -1); /* self-contained */
    r = EXPECT(fx, 0, "verify", "--all", bak);
    assert_contains(r.out, "ok: checkpoint 3,");
    run_free(&r);
    unlink(copy);
    unlink(bak);
}

static void test_backup_refusals(void **state)
{
    fixture *fx = *state;
    char bak[128];
    snprintf(bak, sizeof bak, "%s/backup.db", fx->dir);
    run r = EXPECT(fx, 2, "backup", fx->db, fx->db);
    assert_contains(r.err, "never overwrites");
    run_free(&r);
    r = EXPECT(fx, 2, "backup", fx->db);
    assert_contains(r.err, "missing OUT");
    run_free(&r);
    FILE *f = fopen(fx->junk, "wb");
    assert_non_null(f);
    fputs("not a store", f);
    fclose(f);
    r = EXPECT(fx, 2, "backup", fx->junk, bak);
    run_free(&r);
    assert_int_equal(access(bak, F_OK), -1); /* nothing left behind */
    r = EXPECT(fx, 0, "backup", "--json", fx->db, bak);
    json_t *j = json_of(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "checkpoint")), 3);
    json_decref(j);
    run_free(&r);
    unlink(bak);
}

/* ---- rollback (issue 11, item 5) ---- */

static void test_rollback(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "rollback", "--to", "2", fx->db);
    assert_contains(r.out, "rolled back to checkpoint 2: removed 1 newer checkpoint");
    run_free(&r);
    assert_int_equal(store_count(fx, "SELECT max(id) FROM checkpoints"), 2);
    assert_int_equal(store_count(fx, "SELECT count(*) FROM chunks WHERE ckpt > 2"), 0);
    r = EXPECT(fx, 0, "verify", "--all", fx->db);
    assert_contains(r.out, "ok: checkpoint 2,");
    run_free(&r);
    r = EXPECT(fx, 0, "rollback", "--json", "--to", "1", fx->db);
    json_t *j = json_of(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "newest")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "removed_checkpoints")), 1);
    json_decref(j);
    run_free(&r);
}

static void test_rollback_refusals(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 2, "rollback", fx->db);
    assert_contains(r.err, "--to N");
    run_free(&r);
    r = EXPECT(fx, 1, "rollback", "--to", "9", fx->db);
    assert_contains(r.err, "no checkpoint 9");
    run_free(&r);
    /* a checkpoint that does not verify is not made the newest */
    store_sql(fx, "UPDATE chunks SET data = x'00c1' WHERE ckpt = 2 AND kind = 1");
    r = EXPECT(fx, 1, "rollback", "--to", "2", fx->db);
    assert_contains(r.err, "does not verify");
    run_free(&r);
    assert_int_equal(store_count(fx, "SELECT max(id) FROM checkpoints"), 3);
    /* nor while a process owns the store (holds its lock) */
    char lock[160];
    snprintf(lock, sizeof lock, "%s-lock", fx->db);
    int fd = open(lock, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    r = EXPECT(fx, 1, "rollback", "--to", "1", fx->db);
    assert_contains(r.err, "owned by a running process");
    run_free(&r);
    close(fd);
    unlink(lock);
    assert_int_equal(store_count(fx, "SELECT max(id) FROM checkpoints"), 3);
}

/* prune gives the space back (issue 11, item 6) */
static void test_prune_gives_space_back(void **state)
{
    fixture *fx = *state;
    run r = EXPECT(fx, 0, "prune", "--keep", "1", fx->db);
    assert_contains(r.out, "gave back");
    run_free(&r);
    assert_int_equal(store_count(fx, "PRAGMA freelist_count"), 0);
    assert_int_equal(store_count(fx, "PRAGMA auto_vacuum"), 2); /* incremental from now on */
    r = EXPECT(fx, 0, "verify", fx->db);
    assert_contains(r.out, "ok: checkpoint 3,");
    run_free(&r);
}

/* ---- what is in transit is visible (issue 11, item 9) ---- */

static void test_ls_shows_transit(void **state)
{
    fixture *fx = *state;
    store_sql(fx, "CREATE TABLE mailbox(xid TEXT PRIMARY KEY, to_node TEXT NOT NULL,"
                  " from_node TEXT NOT NULL, time INTEGER NOT NULL, data BLOB NOT NULL);"
                  "CREATE TABLE mailbox_refused(xid TEXT PRIMARY KEY, to_node TEXT NOT NULL,"
                  " from_node TEXT NOT NULL, time INTEGER NOT NULL, data BLOB NOT NULL,"
                  " reason TEXT NOT NULL);"
                  "INSERT INTO mailbox VALUES('aa11', 'B', 'A', 5, x'0102');"
                  "INSERT INTO mailbox_refused VALUES('bb22', 'B', 'A', 6, x'03',"
                  " 'TL_ENOFUNC: needs function jobs.worker@2');");
    run r = EXPECT(fx, 0, "ls", fx->db);
    assert_contains(r.out, "mailbox (not yet imported):\n  aa11  node B  from A  2 bytes");
    assert_contains(r.out, "dead letters");
    assert_contains(r.out, "reason: TL_ENOFUNC: needs function jobs.worker@2");
    run_free(&r);
    r = EXPECT(fx, 0, "ls", "--json", fx->db);
    json_t *j = json_of(&r);
    json_t *dl = json_object_get(json_object_get(j, "in_transit"), "mailbox_refused");
    assert_int_equal(json_array_size(dl), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(dl, 0), "xid")), "bb22");
    json_decref(j);
    run_free(&r);
}

int main(int argc, char **argv)
{
    cli_path = argc > 1 ? argv[1] : getenv("TASKLET_CLI");
    if (!cli_path) {
        fprintf(stderr, "test_cli: set TASKLET_CLI to the tasklet executable\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_regular_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_takes_the_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_gives_space_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ls_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ls_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ls_shows_transit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_show, setup, teardown),
        cmocka_unit_test_setup_teardown(test_show_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_compressed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_latest_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_application_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_sqlite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_mutations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inconsistent_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numbered_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_refuses_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_bad_extra, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_remote_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_golden_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_golden_v2_select, setup, teardown),
        cmocka_unit_test_setup_teardown(test_golden_v2_queue, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
