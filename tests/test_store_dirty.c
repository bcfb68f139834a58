/*
 * test_store_dirty.c -- an incremental checkpoint writes what changed and
 * nothing else: a channel changed among thousands of idle ones is written
 * (its chunk alone), a freed channel's chunk is rewritten, a new channel
 * lands, and a process killed (SIGKILL) right after such a checkpoint
 * restores every channel's queue as it was.  The channels are found
 * through the runtime's list of changed channels (rt->dchans) and the
 * channel chunk index (persist/tindex.c), not by walking them all.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define STORETEST_PREFIX "tl-dirty"
#include "storetest.h"

/* An idle tasklet: it waits on in and holds box, a buffered channel the
 * host fills and drains (a change of the channel alone). */
typedef struct { tl_chan *in, *box; tl_value v; } hold_t;
static const tl_field hold_fields[] = {
    TL_FIELD(hold_t, in, TL_T_CHAN), TL_FIELD(hold_t, box, TL_T_CHAN),
    TL_FIELD(hold_t, v, TL_T_VALUE),
};

static tl_status holder(tl_frame *f, void *locals)
{
    hold_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    TL_END(f);
}
static const tl_func holder_fn = {"dirty.holder", 1, holder, sizeof(hold_t), hold_fields,
                                  TL_COUNTOF(hold_fields), NULL};

#define BOX_CAP 8

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &holder_fn), TL_OK);
    return rt;
}

static tl_chan *named(tl_runtime *rt, const char *what, int i)
{
    char name[32];
    snprintf(name, sizeof name, "%s-%d", what, i);
    return tl_chan_find_name(rt, name);
}

/* Holder number i, with its channels "in-i" and "box-i". */
static void spawn_holder(tl_runtime *rt, int i)
{
    char name[32];
    hold_t a = {0};
    assert_int_equal(tl_chan_new(rt, 0, &a.in), TL_OK);
    assert_int_equal(tl_chan_new(rt, BOX_CAP, &a.box), TL_OK);
    snprintf(name, sizeof name, "in-%d", i);
    assert_int_equal(tl_chan_set_name(a.in, name), TL_OK);
    snprintf(name, sizeof name, "box-%d", i);
    assert_int_equal(tl_chan_set_name(a.box, name), TL_OK);
    assert_int_equal(tl_spawn(rt, &holder_fn, &a, sizeof a, NULL), TL_OK);
    tl_chan_release(a.in);
    tl_chan_release(a.box);
}

static tl_store *restored(tl_runtime *rt)
{
    tl_store *st = attach_at(rt, TL_STORE_NOSYNC);
    if (tl_store_restore(st) != TL_OK)
        fail_msg("restore: %s", tl_store_errmsg(st));
    return st;
}

/* Chunks the newest checkpoint wrote of one kind (1 tasklets, 2
 * channels): rows of their home records (kind) or hot records (kind + 2),
 * a chunk counted once when it wrote both. */
static int64_t newest_rows(int kind)
{
    char q[200];
    snprintf(q, sizeof q, "SELECT count(DISTINCT key) FROM chunks WHERE kind IN (%d, %d) AND "
             "ckpt = (SELECT max(id) FROM checkpoints)", kind, kind + 2);
    return query(q);
}

/* The values in box (drained and put back: the box is unchanged but
 * dirty), into out; returns how many. */
static size_t box_values(tl_chan *box, int64_t *out)
{
    size_t n = 0;
    tl_value v;
    while (n < BOX_CAP && tl_chan_try_recv(box, &v) == TL_OK) {
        out[n++] = tl_as_i64(v);
        tl_release(v);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tl_chan_try_send(box, tl_i64(out[i])), TL_OK);
    return n;
}

/* Runs fn(rt, st) in a child process on the restored store, which then
 * dies by SIGKILL: nothing after fn's last checkpoint is written.  fn
 * returns 0, or a number saying what went wrong (the child's exit code). */
static void in_killed_child(int (*fn)(tl_runtime *rt, tl_store *st))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tl_runtime *rt;
        tl_store *st;
        if (tl_runtime_new(NULL, &rt) != TL_OK || tl_register(rt, &holder_fn) != TL_OK ||
            tl_store_open(path, TL_STORE_NOSYNC, &st) != TL_OK || tl_store_attach(st, rt) != TL_OK ||
            tl_store_restore(st) != TL_OK)
            _exit(100);
        int rc = fn(rt, st);
        if (rc)
            _exit(rc);
        raise(SIGKILL);
        _exit(101);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status))
        fail_msg("the child exited with %d instead of being killed",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

#define IDLE 3000 /* 6000 channels: 24 channel chunks, 12 tasklet chunks */

static void build_idle(void)
{
    tl_runtime *rt = new_rt();
    tl_store *st = attach_at(rt, TL_STORE_NOSYNC);
    for (int i = 0; i < IDLE; i++)
        spawn_holder(rt, i);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(newest_rows(2), 2 * IDLE / 256 + 1);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* After the restore's full checkpoint: three values into box-1234, one
 * checkpoint. */
static int fill_one_box(tl_runtime *rt, tl_store *st)
{
    if (tl_store_checkpoint(st) != TL_OK)
        return 1;
    tl_chan *box = named(rt, "box", 1234);
    for (int64_t v = 1; v <= 3; v++)
        if (!box || tl_chan_try_send(box, tl_i64(v * 11)) != TL_OK)
            return 2;
    return tl_store_checkpoint(st) == TL_OK ? 0 : 3;
}

/* One channel changed among 6,000 idle ones: the checkpoint writes its
 * chunk and nothing else, and a process killed right after it restores
 * the values in that channel's buffer. */
static void test_changed_channel_among_idle(void **state)
{
    (void)state;
    build_idle();
    in_killed_child(fill_one_box);
    assert_int_equal(newest_rows(2), 1);
    assert_int_equal(newest_rows(1), 0);
    tl_runtime *rt = new_rt();
    tl_store *st = restored(rt);
    assert_int_equal(tl_tasklet_count(rt), IDLE);
    int64_t got[BOX_CAP];
    assert_int_equal(box_values(named(rt, "box", 1234), got), 3);
    assert_int_equal(got[0], 11);
    assert_int_equal(got[1], 22);
    assert_int_equal(got[2], 33);
    assert_int_equal(box_values(named(rt, "box", 1233), got), 0);
    assert_int_equal(box_values(named(rt, "box", 1235), got), 0);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* After the restore's full checkpoint: holder 500 ends (its two channels
 * freed), holder IDLE is born, box-2000 gets a value; one checkpoint. */
static int end_and_begin(tl_runtime *rt, tl_store *st)
{
    if (tl_store_checkpoint(st) != TL_OK)
        return 1;
    tl_chan *in = named(rt, "in", 500);
    if (!in || tl_chan_try_send(in, tl_i64(1)) != TL_OK)
        return 2;
    if (tl_run(rt) != TL_EDEADLOCK || tl_tasklet_count(rt) != IDLE - 1)
        return 3;
    hold_t a = {0};
    if (tl_chan_new(rt, 0, &a.in) != TL_OK || tl_chan_new(rt, BOX_CAP, &a.box) != TL_OK ||
        tl_chan_set_name(a.box, "box-new") != TL_OK ||
        tl_chan_try_send(a.box, tl_i64(77)) != TL_OK ||
        tl_spawn(rt, &holder_fn, &a, sizeof a, NULL) != TL_OK)
        return 4;
    tl_chan_release(a.in);
    tl_chan_release(a.box);
    if (tl_run(rt) != TL_EDEADLOCK || tl_chan_try_send(named(rt, "box", 2000), tl_i64(5)))
        return 5;
    return tl_store_checkpoint(st) == TL_OK ? 0 : 6;
}

/* Channels freed and born among idle ones: the freed ones' chunk is
 * rewritten without them, the new ones are written, and the restore after
 * a kill agrees with the head's counts (it refuses a chunk too many or
 * too few). */
static void test_freed_and_born_channels(void **state)
{
    (void)state;
    build_idle();
    in_killed_child(end_and_begin);
    /* channels: holder 500's chunk (ids 1001, 1002), box-2000's (4002)
     * and the new ones' (6001, 6002); tasklets: #501's and #3001's */
    assert_int_equal(newest_rows(2), 3);
    assert_int_equal(newest_rows(1), 2);
    tl_runtime *rt = new_rt();
    tl_store *st = restored(rt);
    assert_int_equal(tl_tasklet_count(rt), IDLE);
    assert_null(named(rt, "in", 500));
    assert_null(named(rt, "box", 500));
    int64_t got[BOX_CAP];
    assert_int_equal(box_values(tl_chan_find_name(rt, "box-new"), got), 1);
    assert_int_equal(got[0], 77);
    assert_int_equal(box_values(named(rt, "box", 2000), got), 1);
    assert_int_equal(got[0], 5);
    assert_int_equal(box_values(named(rt, "box", 499), got), 0);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- churn against a model ---- */

#define NBOX 700
static uint32_t seed;
static uint32_t rnd(void)
{
    seed = seed * 1103515245u + 12345u;
    return seed >> 8;
}

typedef struct model {
    int64_t v[NBOX][BOX_CAP];
    int n[NBOX];
    int64_t next;
} model;

static void check_model(tl_runtime *rt, const model *m)
{
    for (int i = 0; i < NBOX; i++) {
        int64_t got[BOX_CAP];
        size_t n = box_values(named(rt, "box", i), got);
        if (n != (size_t)m->n[i])
            fail_msg("box-%d holds %zu values, expected %d", i, n, m->n[i]);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(got[k], m->v[i][k]);
    }
}

/* Changes a few boxes (sends and receives, as the model does) and returns
 * how many channel chunks it touched. */
static int64_t churn_boxes(tl_runtime *rt, model *m)
{
    uint64_t keys[16];
    int64_t nkeys = 0;
    for (int op = 0, nops = 1 + (int)(rnd() % 6); op < nops; op++) {
        int i = (int)(rnd() % NBOX);
        tl_chan *box = named(rt, "box", i);
        if (m->n[i] < BOX_CAP && (m->n[i] == 0 || rnd() % 3)) {
            assert_int_equal(tl_chan_try_send(box, tl_i64(m->next)), TL_OK);
            m->v[i][m->n[i]++] = m->next++;
        } else {
            tl_value v;
            assert_int_equal(tl_chan_try_recv(box, &v), TL_OK);
            assert_int_equal(tl_as_i64(v), m->v[i][0]);
            memmove(m->v[i], m->v[i] + 1, (size_t)--m->n[i] * sizeof m->v[i][0]);
        }
        uint64_t key = tl_chan_id(box) >> 8;
        int64_t k = 0;
        while (k < nkeys && keys[k] != key)
            k++;
        if (k == nkeys)
            keys[nkeys++] = key;
    }
    return nkeys;
}

/* Rounds of changes to a few channels among 1,400, each checkpointed
 * (it writes exactly the chunks touched), with a restart every few
 * rounds: every box's queue always matches the model. */
static void test_box_churn(void **state)
{
    (void)state;
    static model m;
    memset(&m, 0, sizeof m);
    seed = 4242;
    tl_runtime *rt = new_rt();
    tl_store *st = attach_at(rt, TL_STORE_NOSYNC);
    for (int i = 0; i < NBOX; i++)
        spawn_holder(rt, i);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    for (int round = 0; round < 60; round++) {
        int64_t touched = churn_boxes(rt, &m);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
        assert_int_equal(newest_rows(2), touched);
        assert_int_equal(newest_rows(1), 0);
        if (round % 7 == 6) { /* a restart; the restore's checkpoint is full */
            tl_store_close(st);
            tl_runtime_free(rt);
            rt = new_rt();
            st = restored(rt);
            check_model(rt, &m); /* leaves every box dirty */
            assert_int_equal(tl_store_checkpoint(st), TL_OK);
        }
    }
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = restored(rt);
    check_model(rt, &m);
    tl_store_close(st);
    tl_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_changed_channel_among_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freed_and_born_channels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_box_churn, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
