/*
 * test_store_pg.c -- the store on its PostgreSQL backend (persist/
 * store_pg*.c), against a real server (TL_PG_URL; tests/pg/
 * with-postgres.sh): what test_store_backend shows for SQLite that applies
 * (checkpoint and restore, participants' rows riding on checkpoints,
 * fencing, pruning, retention, the record limit, the mailbox, a handover
 * taken exactly once by two racing processes), then what is PostgreSQL's
 * own: the lease (a live owner refused, a dead one taken over at once, an
 * expired one taken over and its late writes refused, one stopped in the
 * middle of a checkpoint's pipeline taken over, tl_store_renew), a
 * claim that skips a locked epoch row, the listener idle workers wait on,
 * a lost connection, and bad locations (a bad URL, no server, no schema,
 * another application's tables, a newer store) refused with a clear code
 * and message.
 * Skipped (exit 77) without a server; see pgtest.h.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../persist/persist.h"
#include "pgtest.h"

#ifdef TL_HAVE_PG

/* A receiver blocked on a channel, holding a value it was given. */
typedef struct { tl_chan *in; tl_value keep, v; } rx_t;
static const tl_field rx_fields[] = {
    TL_FIELD(rx_t, in, TL_T_CHAN), TL_FIELD(rx_t, keep, TL_T_VALUE), TL_FIELD(rx_t, v, TL_T_VALUE),
};

static tl_status receiver(tl_frame *f, void *locals)
{
    rx_t *L = locals;
    TL_BEGIN(f);
    for (;;)
        TL_RECV(f, L->in, L->v);
    TL_END(f);
}
static const tl_func receiver_fn = {"stpg.receiver", 1, receiver, sizeof(rx_t), rx_fields,
                                    TL_COUNTOF(rx_fields), NULL};

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    return rt;
}

static tl_store *open_at(const char *where, tl_runtime *rt)
{
    tl_store *st;
    int rc = tl_store_open(where, rt ? 0 : TL_STORE_READONLY, &st);
    if (rc != TL_OK)
        fail_msg("open: %s", tl_store_errmsg(st));
    if (rt && (rc = tl_store_attach(st, rt)) != TL_OK)
        fail_msg("attach: %s", tl_store_errmsg(st));
    return st;
}

/* One receiver on channel "in" (made on first use), holding keep. */
static void spawn_holder(tl_runtime *rt, tl_value keep)
{
    tl_chan *ch = tl_chan_find_name(rt, "in");
    if (ch) {
        tl_chan_retain(ch);
    } else {
        assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
        assert_int_equal(tl_chan_set_name(ch, "in"), TL_OK);
    }
    rx_t a = {.in = ch, .keep = keep};
    assert_int_equal(tl_spawn(rt, &receiver_fn, &a, sizeof a, NULL), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
}

/* A runtime restored from the store at url: its tasklet count. */
static size_t restored_count(int64_t at)
{
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(url, rt);
    int64_t got = 0;
    assert_int_equal(tl_store_restore_at(st, at, 0, &got), TL_OK);
    if (at)
        assert_int_equal(got, at);
    size_t n = tl_tasklet_count(rt);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
    return n;
}

/* ---- checkpoint and restore ---- */

static void test_checkpoint_restore(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(url, rt);
    assert_int_equal(query("SELECT count(*) FROM meta WHERE key = 'application' AND value = "
                           "'libtasklet'"), 1);
    for (int i = 0; i < 300; i++) /* three tasklet chunks */
        spawn_holder(rt, tl_i64(i));
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_chan *in = tl_chan_find_name(rt, "in");
    assert_int_equal(tl_chan_try_send(in, tl_i64(1)), TL_OK); /* one chunk changes */
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 2);
    assert_true(query("SELECT count(*) FROM chunks WHERE ckpt = 2") <
                query("SELECT count(*) FROM chunks WHERE ckpt = 1"));
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
    assert_int_equal(restored_count(0), 300);
    assert_int_equal(restored_count(1), 300);
    /* a read-only handle reads, and cannot attach */
    tl_store *ro = open_at(url, NULL);
    assert_int_equal(tl_store_last_checkpoint(ro), 2);
    tl_store_close(ro);
}

/* ---- a participant ---- */

static const tl__table test_table = {"test_rows", "k", "peer", "time", "data"};

typedef struct part_state {
    int nrows; /* rows "r0".. written in every checkpoint */
    int fail;  /* fail after writing them */
} part_state;

static int part_write(void *ud, tl__store_tx *tx)
{
    part_state *ps = ud;
    int rc = tl__tx_clear(tx, &test_table);
    for (int i = 0; i < ps->nrows && rc == TL_OK; i++) {
        char key[16], data[16];
        snprintf(key, sizeof key, "r%d", i);
        snprintf(data, sizeof data, "data %d", i);
        tl__row r = {key, "peer", 1000 + i, data, strlen(data)};
        rc = tl__tx_put(tx, &test_table, &r);
    }
    if (rc == TL_OK && ps->nrows > 1)
        rc = tl__tx_del(tx, &test_table, "r0");
    return rc == TL_OK && ps->fail ? TL_EIO : rc;
}

static const tl__participant test_part = {"test participant", part_write, NULL};

typedef struct seen_rows {
    int n;
    char keys[8][16];
    int64_t times[8];
    char data[8][16];
} seen_rows;

static int collect(void *ud, const tl__row *r)
{
    seen_rows *sr = ud;
    if (sr->n < 8) {
        snprintf(sr->keys[sr->n], 16, "%s", r->key);
        sr->times[sr->n] = r->time;
        snprintf(sr->data[sr->n], 16, "%.*s", (int)r->len, (const char *)r->data);
        assert_string_equal(r->peer, "peer");
    }
    sr->n++;
    return TL_OK;
}

static seen_rows committed_rows(void)
{
    seen_rows sr = {0};
    tl_store *ro = open_at(url, NULL);
    assert_int_equal(tl__store_rows(ro, &test_table, collect, &sr), TL_OK);
    tl_store_close(ro);
    return sr;
}

static void test_participant_rows_ride_on_checkpoints(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(url, rt);
    part_state ps = {.nrows = 1, .fail = 1};
    assert_int_equal(tl__store_join(st, &test_part, &ps), TL_OK);
    spawn_holder(rt, tl_nil());
    /* the first checkpoint creates the participant's table, then fails:
     * neither the chunks nor the table remain */
    assert_int_equal(tl_store_checkpoint(st), TL_EIO);
    assert_non_null(strstr(tl_store_errmsg(st), "test participant"));
    assert_int_equal(committed_rows().n, 0);
    assert_int_equal(query("SELECT count(*) FROM pg_tables WHERE tablename = 'test_rows'"), 0);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 0);
    ps.fail = 0;
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    seen_rows sr = committed_rows();
    assert_int_equal(sr.n, 1);
    assert_string_equal(sr.keys[0], "r0");
    assert_int_equal(sr.times[0], 1000);
    assert_string_equal(sr.data[0], "data 0");
    /* a failed checkpoint leaves the previous rows */
    ps.nrows = 3;
    ps.fail = 1;
    tl__store_touch(st);
    assert_int_equal(tl_store_checkpoint(st), TL_EIO);
    assert_non_null(strstr(tl_store_errmsg(st), "checkpoint 1 stays the newest"));
    assert_int_equal(committed_rows().n, 1);
    /* the retry writes them: r0 deleted, r1 r2 in insertion order */
    ps.fail = 0;
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    sr = committed_rows();
    assert_int_equal(sr.n, 2);
    assert_string_equal(sr.keys[0], "r1");
    assert_string_equal(sr.keys[1], "r2");
    assert_string_equal(sr.data[1], "data 2");
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
}

/* ---- ownership: the lease and the fencing epoch ---- */

static void test_live_owner_refused_expired_one_fenced(void **state)
{
    (void)state;
    tl_runtime *a = new_rt(), *b = new_rt();
    tl_store *sa = open_at(url, a);
    part_state ps = {.nrows = 1};
    assert_int_equal(tl__store_join(sa, &test_part, &ps), TL_OK);
    spawn_holder(a, tl_nil());
    assert_int_equal(tl_store_checkpoint(sa), TL_OK);
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), 1);
    /* a live owner (lease ahead, connected) is refused, named */
    tl_store *sb;
    assert_int_equal(tl_store_open(url, 0, &sb), TL_OK);
    assert_int_equal(tl_store_attach(sb, b), TL_ELOCKED);
    assert_non_null(strstr(tl_store_errmsg(sb), "is owned by pid"));
    assert_non_null(strstr(tl_store_errmsg(sb), "lease"));
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), 1);
    /* its lease runs out (as if it were paused past it): taken over */
    sql("UPDATE owner SET lease_until = now() - interval '1 second'");
    assert_int_equal(tl_store_attach(sb, b), TL_OK);
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), 2);
    /* the old owner's late writes are refused, its participant's too */
    ps.nrows = 2;
    spawn_holder(a, tl_i64(7));
    assert_int_equal(tl_store_checkpoint(sa), TL_ELOCKED);
    assert_non_null(strstr(tl_store_errmsg(sa), "no longer owns the store"));
    assert_int_equal(tl__store_prune(sa, 1), TL_ELOCKED);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 1);
    assert_int_equal(committed_rows().n, 1);
    /* the new owner writes and renews its lease; the old handle's close
     * leaves the new claim alone */
    sql("UPDATE owner SET lease_until = now()");
    assert_int_equal(tl_store_checkpoint(sb), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(sb), 2);
    assert_int_equal(query("SELECT lease_until > now() + interval '5 seconds' FROM owner"), 1);
    assert_int_equal(tl_store_close(sa), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM owner"), 1);
    assert_int_equal(tl_store_close(sb), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM owner"), 0);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

/* An owner killed without closing: its connection goes, and the store is
 * taken over long before its (hour-long) lease runs out. */
static void test_dead_owner_taken_over(void **state)
{
    (void)state;
    setenv("TL_PG_LEASE_MS", "3600000", 1);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        tl_runtime *rt = new_rt();
        tl_store *st;
        if (tl_store_open(url, 0, &st) != TL_OK || tl_store_attach(st, rt) != TL_OK)
            _exit(1);
        spawn_holder(rt, tl_nil());
        _exit(tl_store_checkpoint(st) == TL_OK ? 0 : 2); /* no close: as kill -9 */
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(query("SELECT lease_until > now() + interval '30 minutes' FROM owner"), 1);
    tl_runtime *rt = new_rt();
    tl_store *st;
    assert_int_equal(tl_store_open(url, 0, &st), TL_OK);
    int rc;
    time_t deadline = time(NULL) + 120; /* the server notices the closed socket */
    while ((rc = tl_store_attach(st, rt)) == TL_ELOCKED && time(NULL) < deadline)
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    assert_int_equal(rc, TL_OK);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 1);
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
    unsetenv("TL_PG_LEASE_MS");
}

/* A participant that writes one row large enough to leave the pipeline
 * on the wire (libpq sends at 64 KiB), then stops its process: an owner
 * paused in the middle of a checkpoint, its session neither idle nor done. */
static int stop_write(void *ud, tl__store_tx *tx)
{
    size_t n = 256 * 1024;
    char *big = malloc(n);
    if (!big)
        return TL_ENOMEM;
    memset(big, 'x', n);
    tl__row r = {"big", "peer", 1, big, n};
    int rc = tl__tx_put(tx, &test_table, &r);
    free(big);
    if (rc == TL_OK && *(int *)ud)
        raise(SIGSTOP);
    return rc;
}

static const tl__participant stop_part = {"stopping participant", stop_write, NULL};

/* An owner stopped inside a checkpoint's pipeline, past its lease: the
 * server's idle-in-transaction timeout does not end that session, so the
 * claim does (it held the epoch row until resumed before).  Its writes
 * fail when it resumes, and its retry is refused as fenced. */
static void test_owner_stopped_mid_pipeline(void **state)
{
    (void)state;
    setenv("TL_PG_LEASE_MS", "1000", 1);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        tl_runtime *rt = new_rt();
        tl_store *st;
        int stop = 0;
        if (tl_store_open(url, 0, &st) != TL_OK || tl_store_attach(st, rt) != TL_OK ||
            tl__store_join(st, &stop_part, &stop) != TL_OK)
            _exit(1);
        spawn_holder(rt, tl_nil());
        if (tl_store_checkpoint(st) != TL_OK)
            _exit(2);
        stop = 1;
        spawn_holder(rt, tl_nil());
        int rc1 = tl_store_checkpoint(st); /* stops inside; fails on resuming */
        int rc2 = tl_store_checkpoint(st);
        _exit(rc1 != TL_OK && rc2 == TL_ELOCKED ? 0 : 10 + (rc1 != TL_OK));
    }
    unsetenv("TL_PG_LEASE_MS"); /* the child's lease only */
    int status;
    assert_int_equal(waitpid(child, &status, WUNTRACED), child);
    assert_true(WIFSTOPPED(status));
    tl_runtime *rt = new_rt();
    tl_store *st;
    assert_int_equal(tl_store_open(url, 0, &st), TL_OK);
    int rc;
    time_t deadline = time(NULL) + 60; /* its lease of 1 s runs out */
    while ((rc = tl_store_attach(st, rt)) == TL_ELOCKED && time(NULL) < deadline)
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    if (rc != TL_OK) {
        kill(child, SIGKILL); /* its session goes, and the schema can be dropped */
        waitpid(child, &status, 0);
        fail_msg("not taken over: %s", tl_store_errmsg(st));
    }
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), 2);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 1); /* checkpoint 1's */
    assert_int_equal(query("SELECT count(*) FROM test_rows"), 1);
    assert_int_equal(kill(child, SIGCONT), 0);
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 1);
    spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* A store of rt with checkpoint 1, whose second checkpoint failed with
 * TL_EIO: the server dropped the owner's connection (pg_terminate_backend
 * waits until it is gone). */
static tl_store *connection_lost_once(tl_runtime *rt)
{
    tl_store *st = open_at(url, rt);
    spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(query("SELECT pg_terminate_backend(backend, 60000) FROM owner"), 1);
    spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_EIO);
    return st;
}

/* The server drops the owner's connection: that checkpoint fails with
 * TL_EIO, the next one reconnects, and (the epoch still ours) writes. */
static void test_connection_lost(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = connection_lost_once(rt);
    assert_non_null(strstr(tl_store_errmsg(st), "PostgreSQL"));
    assert_non_null(strstr(tl_store_errmsg(st), "checkpoint 1 stays the newest"));
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
    assert_int_equal(restored_count(0), 2);
}

/* A participant that stays idle inside the checkpoint's transaction for
 * *ud milliseconds before writing. */
static int slow_write(void *ud, tl__store_tx *tx)
{
    int ms = *(int *)ud;
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
    tl__row r = {"slow", "", 0, "x", 1};
    return tl__tx_put(tx, &test_table, &r);
}

static const tl__participant slow_part = {"slow participant", slow_write, NULL};

/* A reconnected session has the settings of the first one again: an owner
 * idle in its transaction past its lease is cut off by the server (else a
 * stopped owner would hold the epoch row, and no worker could claim). */
static void test_reconnect_keeps_session_settings(void **state)
{
    (void)state;
    setenv("TL_PG_LEASE_MS", "400", 1);
    tl_runtime *rt = new_rt();
    tl_store *st = connection_lost_once(rt);
    int idle_ms = 2000; /* five leases */
    assert_int_equal(tl__store_join(st, &slow_part, &idle_ms), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_EIO);
    assert_non_null(strstr(tl_store_errmsg(st), "idle-in-transaction"));
    assert_int_equal(tl_store_last_checkpoint(st), 1);
    assert_non_null(strstr(tl_store_errmsg(st), "checkpoint 1 stays the newest"));
    tl__store_leave(st, &slow_part, &idle_ms);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
    unsetenv("TL_PG_LEASE_MS");
}


/* tl_store_renew pushes the lease forward without a checkpoint, and
 * tells a handle that was taken over. */
static void test_renew(void **state)
{
    (void)state;
    tl_runtime *a = new_rt(), *b = new_rt();
    tl_store *sa = open_at(url, a);
    sql("UPDATE owner SET lease_until = now() + interval '2 seconds'");
    assert_int_equal(tl_store_renew(sa), TL_OK);
    assert_int_equal(query("SELECT lease_until > now() + interval '10 seconds' FROM owner"), 1);
    assert_int_equal(tl_store_last_checkpoint(sa), 0); /* nothing written */
    sql("UPDATE owner SET lease_until = now() - interval '1 second'");
    tl_store *sb = open_at(url, b);
    assert_int_equal(tl_store_renew(sa), TL_ELOCKED);
    assert_non_null(strstr(tl_store_errmsg(sa), "no longer owns the store"));
    assert_int_equal(tl_store_renew(sb), TL_OK);
    tl_store *ro = open_at(url, NULL);
    assert_int_equal(tl_store_renew(ro), TL_EINVAL);
    tl_store_close(ro);
    tl_store_close(sa);
    tl_store_close(sb);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

/* A claim does not wait behind a transaction holding the epoch row (its
 * owner writing, another worker claiming): refused at once. */
static void test_claim_skips_locked(void **state)
{
    (void)state;
    tl_store *st;
    assert_int_equal(tl_store_open(url, 0, &st), TL_OK); /* creates the store */
    sql("BEGIN; SELECT value FROM meta WHERE key = 'epoch' FOR UPDATE");
    tl_runtime *rt = new_rt();
    time_t t0 = time(NULL);
    assert_int_equal(tl_store_attach(st, rt), TL_ELOCKED);
    assert_non_null(strstr(tl_store_errmsg(st), "right now"));
    assert_true(time(NULL) - t0 < 60); /* did not wait for the lock */
    sql("COMMIT");
    assert_int_equal(tl_store_attach(st, rt), TL_OK);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* An idle worker's listener hears a release and a mailbox row. */
static void test_listener(void **state)
{
    (void)state;
    tl_store_listener *l;
    char what[128];
    assert_int_equal(tl_store_listen(url, &l), TL_OK);
    assert_int_equal(tl_store_listener_wait(l, 50, what, sizeof what), TL_ETIMEDOUT);
    assert_non_null(strstr(tl_store_listener_errmsg(l), "nothing announced"));
    tl_runtime *a = new_rt();
    assert_int_equal(tl_set_node_id(a, "a"), TL_OK);
    tl_store *st = open_at(url, a);
    assert_int_equal(tl_store_close(st), TL_OK); /* released: announced */
    assert_int_equal(tl_store_listener_wait(l, 60000, what, sizeof what), TL_OK);
    char want[128];
    snprintf(want, sizeof want, "store %s", pgt_schema);
    assert_string_equal(what, want);
    /* a tasklet handed to node b, announced when it commits */
    st = open_at(url, a);
    tl_tasklet *t;
    tl_chan *ch;
    assert_int_equal(tl_chan_new(a, 0, &ch), TL_OK);
    rx_t args = {.in = ch};
    assert_int_equal(tl_spawn(a, &receiver_fn, &args, sizeof args, &t), TL_OK);
    assert_int_equal(tl_run(a), TL_EDEADLOCK);
    assert_int_equal(tl_store_export(st, t, "b"), TL_OK);
    tl_tasklet_release(t);
    tl_chan_release(ch);
    assert_int_equal(tl_store_listener_wait(l, 60000, what, sizeof what), TL_OK);
    assert_string_equal(what, "mail b");
    /* the connection dropped: made again, and the caller told to look */
    assert_true(query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                      "application_name = 'libtasklet listener'") >= 1);
    time_t deadline = time(NULL) + 60;
    int rc;
    while ((rc = tl_store_listener_wait(l, 100, what, sizeof what)) == TL_ETIMEDOUT &&
           time(NULL) < deadline)
        ;
    assert_int_equal(rc, TL_OK);
    assert_string_equal(what, "reconnected");
    tl_store_close(st);
    assert_int_equal(tl_store_listener_wait(l, 60000, what, sizeof what), TL_OK);
    tl_store_listener_free(l);
    tl_runtime_free(a);
    /* bad locations */
    assert_int_equal(tl_store_listen("/tmp/app.db", &l), TL_ENOTSUP);
    assert_non_null(strstr(tl_store_listener_errmsg(l), "postgresql://"));
    tl_store_listener_free(l);
    assert_int_equal(tl_store_listen("postgresql://x:s3cret@[::1", &l), TL_EINVAL);
    assert_null(strstr(tl_store_listener_errmsg(l), "s3cret"));
    tl_store_listener_free(l);
    assert_int_equal(tl_store_listen("postgresql://127.0.0.1:1/x", &l), TL_EIO);
    assert_non_null(strstr(tl_store_listener_errmsg(l), "cannot connect"));
    assert_int_equal(tl_store_listener_wait(l, 10, NULL, 0), TL_EMISUSE);
    tl_store_listener_free(l);
    assert_int_equal(tl_store_listener_wait(NULL, 10, NULL, 0), TL_EMISUSE);
    tl_store_listener_free(NULL);
}

/* ---- pruning ---- */

static void test_prune(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(url, rt);
    for (int i = 0; i < 300; i++)
        spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_chan *in = tl_chan_find_name(rt, "in");
    for (int i = 0; i < 4; i++) { /* one tasklet of chunk 0 receives each time */
        assert_int_equal(tl_chan_try_send(in, tl_i64(i)), TL_OK);
        assert_int_equal(tl_run(rt), TL_EDEADLOCK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    int64_t rows = query("SELECT count(*) FROM chunks");
    assert_int_equal(tl__store_prune(st, 0), TL_EINVAL);
    assert_int_equal(tl__store_prune(st, 2), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 2);
    assert_int_equal(query("SELECT min(id) FROM checkpoints"), 4);
    assert_true(query("SELECT count(*) FROM chunks") < rows);
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE kind = 1 AND key = 1"), 1);
    tl_store_close(st);
    tl_runtime_free(rt);
    assert_int_equal(restored_count(0), 300);
}


/* ---- retention, stepping back, the record limit ---- */

/* Keeping the newest 5 as checkpoints are written, in their transactions;
 * the kept ones restore, the retired ones are gone. */
static void test_retention(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(url, rt);
    tl_policy p = {.keep = 5};
    assert_int_equal(tl_store_set_policy(st, &p), TL_OK);
    for (int i = 0; i < 300; i++) /* two tasklet chunks */
        spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_chan *in = tl_chan_find_name(rt, "in");
    for (int i = 0; i < 11; i++) { /* chunk 0 changes each time; chunk 1 never */
        assert_int_equal(tl_chan_try_send(in, tl_i64(i)), TL_OK);
        assert_int_equal(tl_run(rt), TL_EDEADLOCK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    assert_int_equal(tl_store_last_checkpoint(st), 12);
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 5);
    assert_int_equal(query("SELECT min(id) FROM checkpoints"), 8);
    /* chunk 1 of checkpoint 1 is still read by every kept checkpoint */
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE kind = 1 AND key = 1"), 1);
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE kind = 1 AND key = 0 AND ckpt < 8"),
                     0);
    tl_store_close(st);
    tl_runtime_free(rt);
    assert_int_equal(restored_count(8), 300);
    assert_int_equal(restored_count(0), 300);
    /* a retired checkpoint: refused, or the nearest older one kept (none) */
    rt = new_rt();
    st = open_at(url, rt);
    int64_t got = 0;
    assert_int_equal(tl_store_restore_at(st, 7, 0, &got), TL_ENOENT);
    assert_non_null(strstr(tl_store_errmsg(st), "7"));
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* 20,000 bytes that do not compress. */
static tl_value big_value(tl_runtime *rt)
{
    static unsigned char bytes[20000];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof bytes; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        bytes[i] = (unsigned char)x;
    }
    tl_value v;
    assert_int_equal(tl_bin_new(rt, bytes, sizeof bytes, &v), TL_OK);
    return v;
}

/* A record over the reader's limit is refused before anything is written;
 * the previous checkpoint stays the newest and loads. */
static void test_record_limit(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(url, rt);
    spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_value v = big_value(rt);
    spawn_holder(rt, v);
    tl_release(v);
    tl__store_limit_doc(st, 10000);
    assert_int_equal(tl_store_checkpoint(st), TL_ERANGE);
    assert_non_null(strstr(tl_store_errmsg(st), "checkpoint 1 stays the newest"));
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 1);
    tl__store_limit_doc(st, TL__MAX_DOC);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_true(query("SELECT max(length(data)) FROM chunks") > 20000);
    tl_store_close(st);
    tl_runtime_free(rt);
    assert_int_equal(restored_count(0), 2);
    assert_int_equal(restored_count(1), 1);
}

/* ---- the mailbox ---- */

static void test_mailbox(void **state)
{
    (void)state;
    tl_runtime *a = new_rt(), *b = new_rt();
    assert_int_equal(tl_set_node_id(a, "a"), TL_OK);
    assert_int_equal(tl_set_node_id(b, "b"), TL_OK);
    tl_store *st = open_at(url, a);
    for (int i = 0; i < 2; i++) {
        tl_tasklet *t;
        tl_chan *ch;
        assert_int_equal(tl_chan_new(a, 0, &ch), TL_OK);
        rx_t args = {.in = ch};
        assert_int_equal(tl_spawn(a, &receiver_fn, &args, sizeof args, &t), TL_OK);
        assert_int_equal(tl_run(a), TL_EDEADLOCK);
        assert_int_equal(tl_store_export(st, t, "b"), TL_OK);
        tl_tasklet_release(t);
        tl_chan_release(ch);
    }
    assert_int_equal(query("SELECT count(*) FROM mailbox WHERE to_node = 'b'"), 2);
    char xid[64];
    query_text("SELECT xid FROM mailbox ORDER BY time, xid LIMIT 1", xid, sizeof xid);
    assert_int_equal(tl__store_refuse(st, xid, "the function is not registered"), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM mailbox"), 1);
    assert_int_equal(query("SELECT count(*) FROM mailbox_refused WHERE reason = "
                           "'the function is not registered'"), 1);
    assert_int_equal(tl__store_refuse(st, xid, "again"), TL_EBUSY);
    assert_non_null(strstr(tl_store_errmsg(st), xid));
    size_t n = 99;
    assert_int_equal(tl_store_import(st, b, &n), TL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(tl_tasklet_count(b), 1);
    assert_int_equal(query("SELECT count(*) FROM mailbox"), 0);
    tl_store_close(st);
    tl_runtime_free(a);
    tl_runtime_free(b);
}


/* Two processes of node "b" take the same mailbox at once, each in
 * transactions of its own: every tasklet arrives exactly once. */
static int import_all(int out_fd)
{
    tl_runtime *rt;
    tl_store *st;
    if (tl_runtime_new(NULL, &rt) != TL_OK || tl_register(rt, &receiver_fn) != TL_OK ||
        tl_set_node_id(rt, "b") != TL_OK || tl_store_open(url, 0, &st) != TL_OK)
        return 1;
    time_t deadline = time(NULL) + 120;
    int64_t busy = 0;
    while (time(NULL) < deadline) {
        size_t n = 0;
        int rc = tl_store_import(st, rt, &n);
        if (rc == TL_EBUSY) { /* the other took a row first: all rolled back */
            busy++;
            continue;
        }
        if (rc != TL_OK)
            return 2;
        if (n == 0 && query("SELECT count(*) FROM mailbox") == 0)
            break;
    }
    int64_t got[2] = {(int64_t)tl_tasklet_count(rt), busy};
    tl_store_close(st);
    tl_runtime_free(rt);
    return write(out_fd, got, sizeof got) == sizeof got ? 0 : 3;
}

static void test_handover_exactly_once(void **state)
{
    (void)state;
    tl_runtime *a = new_rt();
    assert_int_equal(tl_set_node_id(a, "a"), TL_OK);
    tl_store *st = open_at(url, a);
    enum { N = 40 };
    for (int i = 0; i < N; i++) {
        tl_tasklet *t;
        tl_chan *ch;
        assert_int_equal(tl_chan_new(a, 0, &ch), TL_OK);
        rx_t args = {.in = ch};
        assert_int_equal(tl_spawn(a, &receiver_fn, &args, sizeof args, &t), TL_OK);
        assert_int_equal(tl_run(a), TL_EDEADLOCK);
        assert_int_equal(tl_store_export(st, t, "b"), TL_OK);
        tl_tasklet_release(t);
        tl_chan_release(ch);
    }
    assert_int_equal(query("SELECT count(*) FROM mailbox"), N);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            pgt_conn = pgtest_connect(); /* the parent's is left alone: a
                                          * PQfinish here would end it */
            char sp[100];
            snprintf(sp, sizeof sp, "SET search_path = %s", pgt_schema);
            _exit(pgt_conn && pgtest_exec(pgt_conn, sp) == 0 ? import_all(fds[1]) : 4);
        }
    }
    int64_t total = 0;
    for (int k = 0; k < 2; k++) {
        int status;
        int64_t got[2];
        assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_int_equal(read(fds[0], got, sizeof got), sizeof got);
        total += got[0];
    }
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(total, N);
    assert_int_equal(query("SELECT count(*) FROM mailbox"), 0);
    tl_store_close(st);
    tl_runtime_free(a);
}

/* ---- bad locations ---- */

static void expect_open(const char *where, int flags, int code, const char *says)
{
    tl_store *st;
    assert_int_equal(tl_store_open(where, flags, &st), code);
    if (!strstr(tl_store_errmsg(st), says))
        fail_msg("%s: the message \"%s\" does not say \"%s\"", where, tl_store_errmsg(st), says);
    assert_null(strstr(tl_store_errmsg(st), "s3cret")); /* never the password */
    assert_int_equal(tl_store_checkpoint(st), TL_EMISUSE);
    assert_int_equal(tl_store_close(st), TL_OK);
}

static void test_bad_locations(void **state)
{
    (void)state;
    char where[1200], other[80];
    expect_open("postgresql://tl:s3cret@[::1/x", 0, TL_EINVAL, "not a valid PostgreSQL URL");
    expect_open("postgresql://tl@127.0.0.1:5432/x?nosuchoption=1", 0, TL_EINVAL,
                "not a valid PostgreSQL URL");
    /* nothing listens on port 1: refused at once */
    expect_open("postgresql://tl:s3cret@127.0.0.1:1/app", 0, TL_EIO,
                "cannot connect to PostgreSQL at 127.0.0.1:1/app");
    snprintf(where, sizeof where, "%s_nosuchdb", getenv("TL_PG_URL"));
    expect_open(where, 0, TL_EIO, "cannot connect");
    /* a search_path naming no schema */
    pgtest_url(where, sizeof where, "tl_no_such_schema");
    expect_open(where, 0, TL_ENOENT, "no schema on the search_path exists");
    /* read-only on an empty schema: nothing created */
    expect_open(url, TL_STORE_READONLY, TL_ENOENT, "no libtasklet store here");
    assert_int_equal(query("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"), 0);
    /* another application's tables: refused, untouched */
    snprintf(other, sizeof other, "%s_other", pgt_schema);
    snprintf(where, sizeof where, "CREATE SCHEMA %s; CREATE TABLE %s.orders(id int);"
             "CREATE TABLE %s.meta(key text, value text)", other, other, other);
    sql(where);
    pgtest_url(where, sizeof where, other);
    expect_open(where, 0, TL_ENOTSTORE, "another application");
    snprintf(where, sizeof where, "SELECT count(*) FROM pg_tables WHERE schemaname = '%s'", other);
    assert_int_equal(query(where), 2);
    snprintf(where, sizeof where, "DROP SCHEMA %s CASCADE", other);
    sql(where);
    /* a newer store version */
    tl_store *st;
    assert_int_equal(tl_store_open(url, 0, &st), TL_OK);
    tl_store_close(st);
    sql("UPDATE meta SET value = '99' WHERE key = 'schema'");
    expect_open(url, 0, TL_EFORMAT, "store version 99, newer");
}

/* ---- the CLI's prune and rollback (tools/pg.c) ---- */

/* `TASKLET_CLI args` (stderr too) into out: its exit status. */
static int cli(const char *args, char *out, size_t n)
{
    char line[2000];
    snprintf(line, sizeof line, "%s %s 2>&1", getenv("TASKLET_CLI"), args);
    FILE *p = popen(line, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int64_t rows_now(void)
{
    return query("SELECT (SELECT count(*) FROM chunks) * 1000 + (SELECT count(*) FROM "
                 "checkpoints) * 10 + (SELECT value::bigint FROM meta WHERE key = 'epoch')");
}

/* Checkpoint N holds N tasklets; rollback --to 2 is refused while the
 * owner is live, done once its lease ran out (the owner fenced), refused
 * for a missing or a damaged checkpoint, the store untouched each time. */
static void test_cli_rollback(void **state)
{
    (void)state;
    char args[1400], out[4000];
    if (!getenv("TASKLET_CLI"))
        skip();
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(url, rt);
    for (int i = 0; i < 3; i++) {
        spawn_holder(rt, tl_i64(i));
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    int64_t before = rows_now();
    snprintf(args, sizeof args, "rollback --to 2 '%s'", url);
    int rc = cli(args, out, sizeof out);
    if (rc != 1 || !strstr(out, "is owned by pid"))
        fail_msg("%d: %s", rc, out);
    assert_int_equal(rows_now(), before);
    sql("UPDATE owner SET lease_until = now() - interval '1 second'"); /* paused past it */
    assert_int_equal(cli(args, out, sizeof out), 0);
    assert_string_equal(out, "rolled back to checkpoint 2: removed 1 newer checkpoint and 2 "
                             "chunk rows\n");
    assert_int_equal(query("SELECT max(id) FROM checkpoints"), 2);
    assert_int_equal(query("SELECT count(*) FROM chunks WHERE ckpt > 2"), 0);
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), 2);
    spawn_holder(rt, tl_nil()); /* the paused owner's late write: fenced */
    assert_int_equal(tl_store_checkpoint(st), TL_ELOCKED);
    assert_int_equal(query("SELECT max(id) FROM checkpoints"), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
    /* a new owner restores checkpoint 2; its next checkpoint is 3 */
    rt = new_rt();
    st = open_at(url, rt);
    int64_t got = 0;
    assert_int_equal(tl_store_restore_at(st, 0, 0, &got), TL_OK);
    assert_int_equal(got, 2);
    assert_int_equal(tl_tasklet_count(rt), 2);
    spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(tl_store_last_checkpoint(st), 3);
    tl_store_close(st);
    tl_runtime_free(rt);
    /* a missing checkpoint, a damaged one: refused, untouched */
    before = rows_now();
    snprintf(args, sizeof args, "rollback --to 9 '%s'", url);
    assert_int_equal(cli(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "no checkpoint 9"));
    sql("UPDATE chunks SET data = '\\xdeadbeef'::bytea WHERE ckpt = 2");
    snprintf(args, sizeof args, "rollback --to 2 '%s'", url);
    assert_int_equal(cli(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "does not verify"));
    assert_int_equal(rows_now(), before);
    assert_null(strstr(out, "postgresql://"));
}

/* The history of test_prune, written at where. */
static void prune_history(const char *where)
{
    tl_runtime *rt = new_rt();
    tl_store *st = open_at(where, rt);
    for (int i = 0; i < 300; i++)
        spawn_holder(rt, tl_nil());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_chan *in = tl_chan_find_name(rt, "in");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tl_chan_try_send(in, tl_i64(i)), TL_OK);
        assert_int_equal(tl_run(rt), TL_EDEADLOCK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(rt);
}

/* prune --keep 2 removes on PostgreSQL what it removes on SQLite for the
 * same history (the report but what the file gave back is the same). */
static void test_cli_prune_as_sqlite(void **state)
{
    (void)state;
    char args[1400], pg_out[8000], lite_out[8000], path[80];
    if (!getenv("TASKLET_CLI"))
        skip();
    snprintf(path, sizeof path, "/tmp/tl_stpg_prune_%d.db", (int)getpid());
    unlink(path);
    prune_history(path);
    prune_history(url);
    int64_t epoch = query("SELECT value FROM meta WHERE key = 'epoch'");
    snprintf(args, sizeof args, "prune --keep 2 --json '%s'", path);
    assert_int_equal(cli(args, lite_out, sizeof lite_out), 0);
    snprintf(args, sizeof args, "prune --keep 2 --json '%s'", url);
    assert_int_equal(cli(args, pg_out, sizeof pg_out), 0);
    char *a = strstr(lite_out, "\"reclaimed\""), *b = strstr(pg_out, "\"reclaimed\"");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(strstr(b, "null"));
    *a = *b = '\0';
    assert_string_equal(pg_out, lite_out);
    assert_non_null(strstr(pg_out, "superseded"));
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 2);
    assert_int_equal(query("SELECT min(id) FROM checkpoints"), 4);
    assert_int_equal(query("SELECT value FROM meta WHERE key = 'epoch'"), epoch + 1);
    snprintf(args, sizeof args, "verify '%s'", url);
    assert_int_equal(cli(args, pg_out, sizeof pg_out), 0);
    assert_int_equal(restored_count(0), 300);
    unlink(path);
    snprintf(args, sizeof args, "%s-lock", path);
    unlink(args);
}

#endif /* TL_HAVE_PG */

int main(void)
{
    pgtest_require("store_pg");
#ifdef TL_HAVE_PG
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_checkpoint_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_participant_rows_ride_on_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_keeps_session_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_owner_refused_expired_one_fenced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_owner_taken_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_stopped_mid_pipeline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_skips_locked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mailbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handover_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_locations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_prune_as_sqlite, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#else
    return 77;
#endif
}
