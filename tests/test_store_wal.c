/*
 * test_store_wal.c -- the store's WAL as written through the VFS tl-unix
 * (persist/store_sqlite_vfs.c: a frame's header and page in one write):
 * other connections read every commit at once, a plain SQLite reads the
 * file, and a store killed with SIGKILL at random instants -- inside
 * commits and inside SQLite's copy of the WAL into the database -- opens
 * at a whole checkpoint no older than the last one it reported.
 */
#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tasklet.h"
#include "../persist/store_sqlite.h"
#define STORETEST_PREFIX "tl-wal"
#include "storetest.h"

typedef struct { tl_chan *in; tl_value v, blob; } rx_t;
static const tl_field rx_fields[] = {
    TL_FIELD(rx_t, in, TL_T_CHAN), TL_FIELD(rx_t, v, TL_T_VALUE), TL_FIELD(rx_t, blob, TL_T_VALUE),
};

static tl_status receiver(tl_frame *f, void *locals)
{
    rx_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    TL_END(f);
}
static const tl_func receiver_fn = {"wal.receiver", 1, receiver, sizeof(rx_t), rx_fields,
                                    TL_COUNTOF(rx_fields), NULL};

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    if (tl_runtime_new(NULL, &rt) != TL_OK || tl_register(rt, &receiver_fn) != TL_OK)
        return NULL;
    return rt;
}

/* One more blocked receiver holding `bytes` of random binary (nothing to
 * deflate: every byte goes to the WAL). */
static int add_receiver(tl_runtime *rt, tl_chan *ch, size_t bytes)
{
    rx_t a = {.in = ch};
    unsigned char *b = malloc(bytes);
    if (!b)
        return TL_ENOMEM;
    for (size_t i = 0; i < bytes; i++)
        b[i] = (unsigned char)(rand() & 0xff);
    int rc = tl_bin_new(rt, b, bytes, &a.blob);
    free(b);
    if (rc == TL_OK)
        rc = tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL);
    tl_release(a.blob);
    return rc == TL_OK ? tl_run_steps(rt, 10, NULL) : rc;
}

static char *integrity(void)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    static char out[256];
    snprintf(out, sizeof out, "no answer");
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        snprintf(out, sizeof out, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

/* While the store is open, its commits sit in the WAL, written through
 * tl-unix: a plain SQLite connection (the default VFS) in this process
 * reads every one of them, and finds the file sound. */
static void test_plain_sqlite_reads_the_wal(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    tl_store *st = attach_at(rt, TL_STORE_NOSYNC);
    for (int k = 1; k <= 40; k++) {
        assert_int_equal(add_receiver(rt, ch, 3000), TL_OK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
        assert_int_equal(query("SELECT max(id) FROM checkpoints"), k);
    }
    char wal[160];
    struct stat sb;
    snprintf(wal, sizeof wal, "%s-wal", path);
    assert_int_equal(stat(wal, &sb), 0);
    assert_true(sb.st_size > 40 * 4096); /* the commits are in the WAL */
    assert_string_equal(integrity(), "ok");
    assert_int_equal(query("SELECT tasklets FROM checkpoints WHERE id = 40"), 40);
    tl_chan_release(ch);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);

    rt = new_rt();
    st = attach_at(rt, 0);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 40);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* The same through SQLite alone: a connection on tl-unix writes single
 * rows; one on the default VFS sees each commit as soon as it returns,
 * and the held header never reaches a reader late or out of place. */
static void test_other_connection_sees_each_commit(void **state)
{
    (void)state;
    tl_store *st; /* registers tl-unix */
    assert_int_equal(tl_store_open(path, 0, &st), TL_OK);
    tl_store_close(st);
    sqlite3 *w, *r;
    assert_int_equal(sqlite3_open_v2(path, &w, SQLITE_OPEN_READWRITE, "tl-unix"), SQLITE_OK);
    assert_int_equal(sqlite3_open_v2(path, &r, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(w, "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER "
                                  "PRIMARY KEY, v BLOB)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_wal_autocheckpoint(w, 50); /* copies into the database file often */
    sqlite3_stmt *ins, *cnt;
    assert_int_equal(sqlite3_prepare_v2(w, "INSERT INTO t VALUES(?1, randomblob(?2))", -1, &ins,
                                        NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(r, "SELECT count(*), coalesce(sum(length(v)), 0) FROM t",
                                        -1, &cnt, NULL), SQLITE_OK);
    int64_t bytes = 0;
    for (int k = 1; k <= 400; k++) {
        int len = (k * 977) % 9000; /* rows on one page and across several */
        sqlite3_bind_int(ins, 1, k);
        sqlite3_bind_int(ins, 2, len);
        assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_reset(ins);
        bytes += len;
        assert_int_equal(sqlite3_step(cnt), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(cnt, 0), k);
        assert_int_equal(sqlite3_column_int64(cnt, 1), bytes);
        sqlite3_reset(cnt);
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(cnt);
    sqlite3_close(r);
    sqlite3_close(w);
    assert_string_equal(integrity(), "ok");
}

/* The child: checkpoints for ever, each holding more random bytes (a
 * growing chunk of about 0.5 MiB on average, so SQLite copies the WAL
 * into the database every few dozen commits), and after each commit
 * writes its id to fd. */
static void writer(int fd)
{
    tl_runtime *rt = new_rt();
    tl_chan *ch;
    tl_store *st;
    if (!rt || tl_store_open(path, TL_STORE_NOSYNC, &st) || tl_store_attach(st, rt) != TL_OK)
        _exit(2);
    int rc = tl_store_restore(st); /* the rounds before: their receivers wait on */
    if ((rc != TL_OK && rc != TL_ENOENT) || tl_chan_new(rt, 0, &ch) != TL_OK)
        _exit(2);
    for (;;) {
        if (add_receiver(rt, ch, 4000) != TL_OK || tl_store_checkpoint(st) != TL_OK)
            _exit(3);
        int64_t id = tl_store_last_checkpoint(st);
        if (write(fd, &id, sizeof id) != sizeof id)
            _exit(4);
    }
}

/* The last id the child reported before it died (0 if none). */
static int64_t last_reported(int fd)
{
    int64_t id, last = 0;
    while (read(fd, &id, sizeof id) == sizeof id)
        last = id;
    return last;
}

static void test_sigkill_in_commits_and_wal_copies(void **state)
{
    (void)state;
    srand((unsigned)time(NULL));
    int64_t reported = 0;
    for (int round = 0; round < 8; round++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            writer(p[1]);
        }
        close(p[1]);
        int64_t first;
        assert_int_equal(read(p[0], &first, sizeof first), sizeof first); /* it is writing */
        usleep(20000 + (useconds_t)(rand() % 300000));
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status)) /* it never stops on its own */
            fail_msg("round %d: the writer exited with %d", round, WEXITSTATUS(status));
        int64_t last = last_reported(p[0]);
        close(p[0]);
        reported = last > first ? last : first;

        assert_string_equal(integrity(), "ok");
        tl_runtime *rt = new_rt();
        tl_store *st = attach_at(rt, 0);
        int64_t at = 0;
        assert_int_equal(tl_store_restore_at(st, 0, 0, &at), TL_OK);
        if (at < reported)
            fail_msg("round %d: restored checkpoint %lld, the child had committed %lld", round,
                     (long long)at, (long long)reported);
        assert_int_equal(tl_tasklet_count(rt), (size_t)at); /* one receiver per checkpoint */
        tl_store_close(st);
        tl_runtime_free(rt);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plain_sqlite_reads_the_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_connection_sees_each_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_in_commits_and_wal_copies, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
