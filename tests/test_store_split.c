/*
 * test_store_split.c -- chunks stored as a home record and a hot record
 * (persist/split.c, FORMAT.md 7.1): a tasklet and its channel that change
 * at every checkpoint among hundreds of idle neighbours are rewritten
 * alone; a hot object freed, a rollback and `tasklet verify` on such a
 * store; and a model-based churn killed by SIGKILL at random points, each
 * restore compared with the model object by object.  TL_CHECK_MARKS=1 is
 * set for every test (and the killed children): a change without a mark
 * aborts the process instead of being lost.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STORETEST_PREFIX "tl-split"
#include "storetest.h"
#include "../src/internal.h"

/* A cell: it waits on in; a value v >= 0 is its new state (n counts
 * them), -1 ends it, -2 asks it to send (v << 20 | n) back on in.  box is
 * a buffered channel the host fills and drains (a change of the channel
 * alone). */
typedef struct {
    tl_chan *in, *box;
    tl_value m;
    int64_t v, n;
} cell_t;
static const tl_field cell_fields[] = {
    TL_FIELD(cell_t, in, TL_T_CHAN), TL_FIELD(cell_t, box, TL_T_CHAN),
    TL_FIELD(cell_t, m, TL_T_VALUE), TL_FIELD(cell_t, v, TL_T_I64),
    TL_FIELD(cell_t, n, TL_T_I64),
};

static tl_status cell(tl_frame *f, void *locals)
{
    cell_t *L = locals;
    TL_BEGIN(f);
    for (;;) {
        TL_RECV(f, L->in, L->m);
        if (tl_as_i64(L->m) == -1)
            break;
        if (tl_as_i64(L->m) == -2) {
            TL_SEND(f, L->in, tl_i64(L->v << 20 | L->n));
            continue;
        }
        L->v = tl_as_i64(L->m);
        L->n++;
    }
    TL_END(f);
}
static const tl_func cell_fn = {"split.cell", 1, cell, sizeof(cell_t), cell_fields,
                                TL_COUNTOF(cell_fields), NULL};

#define BOX_CAP 4

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &cell_fn), TL_OK);
    return rt;
}

static tl_chan *named(tl_runtime *rt, const char *what, int i)
{
    char name[32];
    snprintf(name, sizeof name, "%s-%d", what, i);
    return tl_chan_find_name(rt, name);
}

/* Cell number i, with its channels "in-i" and "box-i". */
static int spawn_cell(tl_runtime *rt, int i)
{
    char name[32];
    cell_t a = {0};
    int rc = tl_chan_new(rt, 0, &a.in);
    if (rc == TL_OK)
        rc = tl_chan_new(rt, BOX_CAP, &a.box);
    snprintf(name, sizeof name, "in-%d", i);
    if (rc == TL_OK)
        rc = tl_chan_set_name(a.in, name);
    snprintf(name, sizeof name, "box-%d", i);
    if (rc == TL_OK)
        rc = tl_chan_set_name(a.box, name);
    if (rc == TL_OK)
        rc = tl_spawn(rt, &cell_fn, &a, sizeof a, NULL);
    tl_chan_release(a.in);
    tl_chan_release(a.box);
    return rc;
}

/* Sends x to cell i and runs until every tasklet waits. */
static int poke(tl_runtime *rt, int i, int64_t x)
{
    tl_chan *in = named(rt, "in", i);
    if (!in || tl_chan_try_send(in, tl_i64(x)) != TL_OK)
        return TL_ESTATE;
    int rc = tl_run(rt);
    return rc == TL_EDEADLOCK || rc == TL_OK ? TL_OK : rc;
}

/* Cell i's state (v << 20 | n), asked of the cell itself; -1 if it is
 * gone. */
static int64_t report(tl_runtime *rt, int i)
{
    tl_value r;
    if (!named(rt, "in", i))
        return -1;
    assert_int_equal(poke(rt, i, -2), TL_OK);
    assert_int_equal(tl_chan_try_recv(named(rt, "in", i), &r), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    return tl_as_i64(r);
}

/* Rows of one kind that the newest checkpoint wrote. */
static int64_t newest(int kind)
{
    char q[160];
    snprintf(q, sizeof q, "SELECT count(*) FROM chunks WHERE kind = %d AND ckpt = "
             "(SELECT max(id) FROM checkpoints)", kind);
    return query(q);
}

/* ---- the model ---- */

#define MAXC 1400
#define START 1000
#define NHOT 3
static const int hot_cells[NHOT] = {3, 300, 777};

typedef struct model {
    int ncells;
    bool alive[MAXC];
    int64_t v[MAXC], n[MAXC];
    int64_t box[MAXC][BOX_CAP];
    int nbox[MAXC];
} model;

static uint32_t rnd_of(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static int pick_alive(const model *m, uint32_t *s)
{
    for (int tries = 0; tries < 64; tries++) {
        int i = 1 + (int)(rnd_of(s) % (uint32_t)(m->ncells - 1));
        if (m->alive[i])
            return i;
    }
    return -1;
}

/* Changes cell i to v, in the model and (rt not NULL) the runtime. */
static int set_cell(tl_runtime *rt, model *m, int i, int64_t v)
{
    m->v[i] = v;
    m->n[i]++;
    return rt ? poke(rt, i, v) : TL_OK;
}

static int box_op(tl_runtime *rt, model *m, int i, uint32_t *s, int64_t val)
{
    tl_chan *box = rt ? named(rt, "box", i) : NULL;
    if (m->nbox[i] < BOX_CAP && (m->nbox[i] == 0 || rnd_of(s) % 3)) {
        m->box[i][m->nbox[i]++] = val;
        return rt ? tl_chan_try_send(box, tl_i64(val)) : TL_OK;
    }
    memmove(m->box[i], m->box[i] + 1, (size_t)--m->nbox[i] * sizeof m->box[i][0]);
    tl_value v;
    return rt ? tl_chan_try_recv(box, &v) : TL_OK;
}

/* Round r's changes (the same for every replay, from r alone): the clock
 * (cell 0) says r, the hot cells change, a few others too, a box or two,
 * now and then a cell ends or a new one begins. */
static int apply_round(tl_runtime *rt, model *m, int r)
{
    uint32_t s = 0x5eed0000u + (uint32_t)r * 7919u;
    int rc = set_cell(rt, m, 0, r);
    for (int h = 0; h < NHOT && rc == TL_OK; h++)
        if (m->alive[hot_cells[h]] && (r % 40 || h))
            rc = set_cell(rt, m, hot_cells[h], r * 10 + h);
    if (rc == TL_OK && r % 40 == 0 && m->alive[hot_cells[0]]) { /* a hot cell ends */
        m->alive[hot_cells[0]] = false;
        rc = rt ? poke(rt, hot_cells[0], -1) : TL_OK;
    }
    for (int k = 0, nk = (int)(rnd_of(&s) % 5), i; k < nk && rc == TL_OK; k++)
        if ((i = pick_alive(m, &s)) > 0)
            rc = set_cell(rt, m, i, r * 100 + k);
    for (int k = 0, nk = (int)(rnd_of(&s) % 3), i; k < nk && rc == TL_OK; k++)
        if ((i = pick_alive(m, &s)) > 0)
            rc = box_op(rt, m, i, &s, r * 1000 + k);
    if (rc == TL_OK && rnd_of(&s) % 4 == 0) {
        int i = pick_alive(m, &s);
        if (i > 0) {
            m->alive[i] = false;
            rc = rt ? poke(rt, i, -1) : TL_OK;
        }
    }
    if (rc == TL_OK && rnd_of(&s) % 4 == 0 && m->ncells < MAXC) {
        int i = m->ncells++;
        m->alive[i] = true;
        rc = rt ? spawn_cell(rt, i) : TL_OK;
        if (rc == TL_OK && rt)
            rc = tl_run(rt) == TL_EDEADLOCK ? TL_OK : TL_ESTATE;
    }
    return rc;
}

static void model_start(model *m)
{
    memset(m, 0, sizeof *m);
    m->ncells = START;
    for (int i = 0; i < START; i++)
        m->alive[i] = true;
}

static void model_at(model *m, int rounds)
{
    model_start(m);
    for (int r = 1; r <= rounds; r++)
        apply_round(NULL, m, r);
}

/* Every cell of the restored runtime against the model. */
static void check_model(tl_runtime *rt, const model *m)
{
    size_t alive = 0;
    for (int i = 0; i < m->ncells; i++) {
        int64_t got = report(rt, i);
        if (!m->alive[i]) {
            if (got != -1)
                fail_msg("cell %d ended, but it is there", i);
            continue;
        }
        alive++;
        if (got != (m->v[i] << 20 | m->n[i]))
            fail_msg("cell %d: v %lld n %lld, expected v %lld n %lld", i, (long long)(got >> 20),
                     (long long)(got & 0xfffff), (long long)m->v[i], (long long)m->n[i]);
        tl_chan *box = named(rt, "box", i);
        tl_value v;
        for (int k = 0; k < m->nbox[i]; k++) {
            assert_int_equal(tl_chan_try_recv(box, &v), TL_OK);
            assert_int_equal(tl_as_i64(v), m->box[i][k]);
        }
        assert_int_equal(tl_chan_try_recv(box, &v), TL_EAGAIN);
    }
    assert_int_equal(tl_tasklet_count(rt), alive);
}

/* The first START cells, checkpointed (in full). */
static void build(void)
{
    tl_runtime *rt = new_rt();
    tl_store *st = attach_at(rt, TL_STORE_NOSYNC);
    for (int i = 0; i < START; i++)
        assert_int_equal(spawn_cell(rt, i), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_store_close(st);
    tl_runtime_free(rt);
}

static tl_store *restored(tl_runtime *rt)
{
    tl_store *st = attach_at(rt, TL_STORE_NOSYNC);
    if (tl_store_restore(st) != TL_OK)
        fail_msg("restore: %s", tl_store_errmsg(st));
    return st;
}

/* ---- a killed child ---- */

/* The child: restores, runs rounds from the clock's on, checkpointing
 * each and writing its number to fd once committed, until killed (or
 * until `upto`).  Exit codes say what failed. */
static void child_rounds(int fd, int upto)
{
    static model m;
    tl_runtime *rt;
    tl_store *st;
    if (tl_runtime_new(NULL, &rt) != TL_OK || tl_register(rt, &cell_fn) != TL_OK ||
        tl_store_open(path, TL_STORE_NOSYNC, &st) != TL_OK || tl_store_attach(st, rt) != TL_OK ||
        tl_store_restore(st) != TL_OK)
        _exit(100);
    tl_value r;
    if (poke(rt, 0, -2) != TL_OK || tl_chan_try_recv(named(rt, "in", 0), &r) != TL_OK ||
        tl_run(rt) != TL_EDEADLOCK)
        _exit(101);
    int from = (int)(tl_as_i64(r) >> 20);
    model_at(&m, from);
    for (int round = from + 1; round <= upto; round++) {
        if (apply_round(rt, &m, round) != TL_OK)
            _exit(102);
        if (tl_store_checkpoint(st) != TL_OK)
            _exit(103);
        if (write(fd, &round, sizeof round) != sizeof round)
            _exit(104);
    }
    _exit(0);
}

/* Runs rounds in a child until it has committed at least `least` more
 * (or reached upto), kills it with SIGKILL after a random pause of up to
 * 3 ms, and returns the last round it reported committed. */
static int killed_child(int least, int upto)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        child_rounds(fds[1], upto);
    }
    close(fds[1]);
    int got = 0, last = -1, round;
    while (got < least && read(fds[0], &round, sizeof round) == sizeof round) {
        last = round;
        got++;
    }
    struct timespec pause = {0, (long)(rand() % 3000) * 1000};
    nanosleep(&pause, NULL);
    kill(pid, SIGKILL);
    while (read(fds[0], &round, sizeof round) == sizeof round)
        last = round; /* committed before the kill took */
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        fail_msg("the child failed with exit code %d", WEXITSTATUS(status));
    if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
        fail_msg("the child died of signal %d (TL_CHECK_MARKS aborts)", WTERMSIG(status));
    return last;
}

/* Kill -9 at random points of a churn (hot cells changing every round
 * among 1,000 idle ones, others changing, ending and beginning, boxes
 * filled and drained): each restore holds exactly the cells, values and
 * boxes of the model at the round the clock names, which is the last one
 * committed. */
static void test_churn_killed(void **state)
{
    (void)state;
    static model m;
    srand(777);
    build();
    int done = 0;
    for (int cycle = 0; cycle < 14; cycle++) {
        int last = killed_child(1 + rand() % 12, 600);
        tl_runtime *rt = new_rt();
        tl_store *st = restored(rt);
        int64_t clock = report(rt, 0) >> 20;
        if (last >= 0 && clock < last)
            fail_msg("round %d was committed, the store holds round %lld", last, (long long)clock);
        if (clock < done)
            fail_msg("the store went back from round %d to %lld", done, (long long)clock);
        done = (int)clock;
        model_at(&m, done);
        check_model(rt, &m);
        tl_store_close(st); /* not checkpointed: the reports stay out */
        tl_runtime_free(rt);
    }
    assert_true(done > 14);
    /* the hot cells went to hot records, and stayed there most rounds */
    assert_true(query("SELECT count(*) FROM chunks WHERE kind = 3") > 0);
    assert_true(query("SELECT count(*) FROM chunks WHERE kind = 4") > 0);
}

/* ---- edge cases ---- */

/* After a warm-up, a checkpoint where only the hot cell (and its channel)
 * changed writes their chunks' hot records and no home record; each
 * restore holds every cell once. */
static void test_hot_only_writes_hot_records(void **state)
{
    (void)state;
    static model m;
    build();
    tl_runtime *rt = new_rt();
    tl_store *st = restored(rt);
    model_start(&m);
    for (int r = 1; r <= 6; r++) {
        assert_int_equal(set_cell(rt, &m, 300, r), TL_OK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    assert_int_equal(newest(1), 0);
    assert_int_equal(newest(3), 1);
    assert_int_equal(newest(2), 0);
    assert_int_equal(newest(4), 1);
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = restored(rt); /* places read back: the next step is hot only too */
    assert_int_equal(set_cell(rt, &m, 300, 7), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(newest(1) + newest(2), 0);
    assert_int_equal(newest(3) + newest(4), 2);
    /* a neighbour changes once: its home record is rewritten, the hot
     * cell stays in the hot record */
    assert_int_equal(set_cell(rt, &m, 301, 5), TL_OK);
    assert_int_equal(set_cell(rt, &m, 300, 8), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(newest(1), 1);
    assert_int_equal(newest(3), 1);
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = restored(rt);
    check_model(rt, &m);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* A hot cell ends: its chunk's home record is rewritten and the hot
 * record becomes a tombstone; a new cell in that chunk comes back once. */
static void test_hot_cell_ends(void **state)
{
    (void)state;
    static model m;
    build();
    tl_runtime *rt = new_rt();
    tl_store *st = restored(rt);
    model_start(&m);
    for (int r = 1; r <= 4; r++) {
        assert_int_equal(set_cell(rt, &m, 300, r), TL_OK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    assert_int_equal(newest(3), 1);
    m.alive[300] = false;
    assert_int_equal(poke(rt, 300, -1), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    assert_int_equal(newest(1), 1);
    assert_int_equal(newest(3), 1); /* the tombstone */
    assert_int_equal(query("SELECT length(data) < 40 FROM chunks WHERE kind = 3 AND ckpt = "
                           "(SELECT max(id) FROM checkpoints)"), 1);
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = restored(rt);
    check_model(rt, &m);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* Rolling back to a checkpoint before the hot records existed: the next
 * checkpoint is full and tombstones them, and the store then loads as the
 * rolled-back runtime (every cell once); `tasklet verify` passes on the
 * store before and after. */
static void test_rollback_and_verify(void **state)
{
    (void)state;
    static model m;
    build();
    tl_runtime *rt = new_rt();
    tl_store *st = restored(rt);
    model_start(&m);
    for (int r = 1; r <= 5; r++) {
        assert_int_equal(set_cell(rt, &m, 777, r), TL_OK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    tl_store_close(st);
    tl_runtime_free(rt);
    const char *cli = getenv("TASKLET_CLI");
    char verify[512], show[512];
    snprintf(verify, sizeof verify, "%s verify %s >/dev/null", cli ? cli : "", path);
    snprintf(show, sizeof show, "%s show %s 778 >/dev/null", cli ? cli : "", path);
    if (cli) {
        assert_int_equal(system(verify), 0);
        assert_int_equal(system(show), 0); /* tasklet 778 is in a hot record */
    }
    rt = new_rt();
    st = attach_at(rt, TL_STORE_NOSYNC);
    assert_int_equal(tl_store_restore_at(st, 2, 0, NULL), TL_OK);
    model_start(&m);
    set_cell(NULL, &m, 777, 1);
    assert_int_equal(tl_store_checkpoint(st), TL_OK); /* full */
    assert_int_equal(newest(3) + newest(4), query("SELECT count(DISTINCT kind || '/' || key) FROM "
                                                  "chunks WHERE kind > 2"));
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = restored(rt);
    check_model(rt, &m);
    tl_store_close(st);
    tl_runtime_free(rt);
    if (cli)
        assert_int_equal(system(verify), 0);
}

/* A tasklet changed without its mark (its neighbour marked instead) is
 * caught by TL_CHECK_MARKS before a checkpoint could lose it. */
static void test_missed_mark_aborts(void **state)
{
    (void)state;
    build();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tl_runtime *rt = new_rt();
        tl_store *st = restored(rt);
        poke(rt, 10, 5); /* a neighbour changes: chunk 0 is written */
        tl_tasklet *t = NULL;
        for (tl__link *l = rt->chans.next; l != &rt->chans && !t; l = l->next) {
            tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
            if (ch->name && strcmp(ch->name, "in-20") == 0 && ch->nrecv)
                t = TL__CONTAINER(ch->recvq.next, tl_tasklet, w.link);
        }
        if (!t)
            _exit(2);
        ((cell_t *)TL__LOCALS(t->top))->v = 999; /* no tl__mark */
        tl_store_checkpoint(st);
        _exit(3);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("the child was not stopped by TL_CHECK_MARKS (status %d)", status);
}

/* ---- a tasklet whose record another one changes ---- */

/* Joins the tasklet in t, then waits on in (so the host can end it). */
typedef struct {
    tl_tasklet *t;
    tl_value r;
} joiner_t;
static const tl_field joiner_fields[] = {TL_FIELD(joiner_t, t, TL_T_TASKLET),
                                         TL_FIELD(joiner_t, r, TL_T_VALUE)};
static tl_status joiner(tl_frame *f, void *locals)
{
    joiner_t *L = locals;
    TL_BEGIN(f);
    TL_JOIN(f, L->t, L->r);
    TL_END(f);
}
static const tl_func joiner_fn = {"split.joiner", 1, joiner, sizeof(joiner_t), joiner_fields,
                                  TL_COUNTOF(joiner_fields), NULL};

static tl_runtime *join_rt(void)
{
    tl_runtime *rt = new_rt();
    assert_int_equal(tl_register(rt, &joiner_fn), TL_OK);
    return rt;
}

/* A joiner arriving lists itself in the joined tasklet's record (its
 * joiners), and one killed takes itself out: the joined tasklet, idle
 * in a chunk of idle ones, must be rewritten both times; each restore
 * (after a SIGKILL) links the joiners there are. */
/* The tasklet waiting on cell i's channel (a handle). */
static tl_tasklet *cell_tasklet(tl_runtime *rt, int i)
{
    tl_chan *in = tl__chan_at(named(rt, "in", i));
    assert_int_equal(in->nrecv, 1);
    return tl__tasklet_handle(TL__CONTAINER(in->recvq.next, tl_tasklet, w.link));
}

static void test_joiners_change_the_joined(void **state)
{
    (void)state;
    tl_runtime *rt = join_rt();
    tl_store *st = attach_at(rt, TL_STORE_NOSYNC);
    for (int i = 0; i < 100; i++)
        assert_int_equal(spawn_cell(rt, i), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK); /* full */
    tl_tasklet *ja, *jb;
    joiner_t a = {cell_tasklet(rt, 7), tl_nil()}, b = {cell_tasklet(rt, 8), tl_nil()};
    assert_int_equal(tl_spawn(rt, &joiner_fn, &a, sizeof a, &ja), TL_OK);
    assert_int_equal(tl_spawn(rt, &joiner_fn, &b, sizeof b, &jb), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK); /* two joiners arrived */
    assert_int_equal(tl_kill(jb), TL_OK);
    assert_int_equal(tl_run(rt), TL_EDEADLOCK);
    assert_int_equal(tl_tasklet_count(rt), 101);
    assert_int_equal(tl_store_checkpoint(st), TL_OK); /* one left */
    tl_tasklet_release(ja);
    tl_tasklet_release(jb);
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = join_rt();
    st = restored(rt);
    assert_int_equal(tl_tasklet_count(rt), 101);
    assert_int_equal(poke(rt, 8, -1), TL_OK); /* no joiner left on cell 8 */
    assert_int_equal(tl_tasklet_count(rt), 100);
    assert_int_equal(poke(rt, 7, -1), TL_OK); /* cell 7 ends: its joiner too */
    assert_int_equal(tl_tasklet_count(rt), 98);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- the golden store of hot records ---- */

#define GOLDEN_ROUNDS 6

/* tests/data/golden-v2-hot.db, made once by TL_MAKE_GOLDEN_HOT=PATH
 * ./test_store_split: START cells checkpointed in full, then rounds 1 to
 * GOLDEN_ROUNDS of apply_round, each checkpointed (the hot cells and their
 * channels in their chunks' hot records from round 2 on). */
static int make_golden_hot(const char *to)
{
    static model m;
    snprintf(path, sizeof path, "%s", to);
    build();
    tl_runtime *rt = new_rt();
    tl_store *st = restored(rt);
    model_start(&m);
    int rc = TL_OK;
    for (int r = 1; rc == TL_OK && r <= GOLDEN_ROUNDS; r++) {
        rc = apply_round(rt, &m, r);
        if (rc == TL_OK)
            rc = tl_store_checkpoint(st);
    }
    tl_store_close(st);
    tl_runtime_free(rt);
    return rc == TL_OK ? 0 : 1;
}

/* The golden store restores to the model of its last round, and goes on
 * from there (a round more, restored again); `tasklet verify` passes. */
static void test_golden_hot(void **state)
{
    (void)state;
    static model m;
    const char *golden = getenv("GOLDEN_HOT_DB"), *cli = getenv("TASKLET_CLI");
    char cmd[600];
    if (!golden) {
        skip();
        return;
    }
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", golden, path);
    assert_int_equal(system(cmd), 0);
    assert_true(query("SELECT count(*) FROM chunks WHERE kind = 3 AND length(data) > 40") > 0);
    assert_true(query("SELECT count(*) FROM chunks WHERE kind = 4 AND length(data) > 40") > 0);
    if (cli) {
        snprintf(cmd, sizeof cmd, "'%s' verify '%s' >/dev/null", cli, path);
        assert_int_equal(system(cmd), 0);
    }
    tl_runtime *rt = new_rt();
    tl_store *st = restored(rt);
    assert_int_equal(tl_store_last_checkpoint(st), GOLDEN_ROUNDS + 1);
    model_at(&m, GOLDEN_ROUNDS);
    assert_int_equal(apply_round(rt, &m, GOLDEN_ROUNDS + 1), TL_OK);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
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
    const char *make = getenv("TL_MAKE_GOLDEN_HOT");
    if (make)
        return make_golden_hot(make);
    setenv("TL_CHECK_MARKS", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hot_only_writes_hot_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hot_cell_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_and_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missed_mark_aborts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_churn_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_golden_hot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_joiners_change_the_joined, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
