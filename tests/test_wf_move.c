/*
 * test_wf_move.c -- moving a workflow to another node's store
 * (tl_wf_move), in one process: nodes "A", "B" (and "C") linked with
 * tl_node_pair, each a runtime with its own SQLite store, a workflow
 * engine and a node on that store, all driven from this thread.
 *
 *   - moved between its steps with a message pending: it finishes at B
 *     with the right result, no step ran again, the pending message and
 *     its deduplication key came along, A's store says "moved" (to B) and
 *     refuses posts naming B, B's store answers the await;
 *   - moved while its step's attempt is in flight: that attempt is
 *     abandoned (told, result discarded) and the step runs at B with the
 *     same idempotency key;
 *   - moved again, B to A (back where it was): A takes it in over its own
 *     "moved" row;
 *   - refused by a node without a workflow engine and by one without the
 *     function: it comes back to A, says why, and finishes there;
 *   - bad input: unknown id, finished, no node, no link, not movable.
 *
 * The kill -9 cases are in tests/test_wf_move_proc.c.  Waits are bounded
 * by wall-clock deadlines only.
 */
#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tasklet.h"
#include "tasklet_node.h"
#include "tasklet_workflow.h"
#include "wfmove_funcs.h"

#define WAIT_NS ((int64_t)(getenv("WFM_WAIT_S") ? atoi(getenv("WFM_WAIT_S")) : 60) * 1000000000) /* a bound against hangs, never an expectation */

typedef struct side {
    char dir[64], path[96];
    const char *name;
    tl_runtime *rt;
    tl_store *st;
    tl_wf *wf;
    tl_node *n;
} side;

static int64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void quiet(void *ud, const char *msg) { (void)ud; (void)msg; }

/* engine: 0 none (a node on a store only), 1 with the workflow function,
 * 2 an engine without it. */
static void side_open(side *s, const char *name, int engine)
{
    if (!s->dir[0]) {
        snprintf(s->dir, sizeof s->dir, "/tmp/tl_wfm_XXXXXX");
        assert_non_null(mkdtemp(s->dir));
        snprintf(s->path, sizeof s->path, "%s/s.db", s->dir);
    }
    s->name = name;
    assert_int_equal(tl_runtime_new(NULL, &s->rt), TL_OK);
    assert_int_equal(tl_store_open(s->path, TL_STORE_NOSYNC, &s->st), TL_OK);
    if (engine)
        assert_int_equal(tl_wf_new(s->rt, s->st, NULL, &s->wf), TL_OK);
    else
        assert_int_equal(tl_store_attach(s->st, s->rt), TL_OK);
    tl_node_config cfg = {.node_id = name, .store = s->st, .log = quiet};
    assert_int_equal(tl_node_new(s->rt, &cfg, &s->n), TL_OK);
    if (engine == 1)
        assert_int_equal(tl_wf_register(s->wf, &wfm_flow), TL_OK);
    if (engine) {
        assert_int_equal(tl_wf_register_step(s->wf, &wfm_add_step), TL_OK);
        assert_int_equal(tl_wf_register_step(s->wf, &wfm_hold_step), TL_OK);
        assert_int_equal(tl_wf_restore(s->wf), TL_OK);
    } else {
        int rc = tl_store_restore(s->st);
        assert_true(rc == TL_OK || rc == TL_ENOENT);
    }
}

static void side_close(side *s)
{
    tl_node_free(s->n);
    tl_wf_free(s->wf);
    tl_store_close(s->st);
    tl_runtime_free(s->rt);
    s->n = NULL;
    s->wf = NULL;
    s->st = NULL;
    s->rt = NULL;
}

static void side_done(side *s)
{
    if (s->rt)
        side_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
    assert_int_equal(system(cmd), 0);
}

/* What s's store says of id (status, or a negative error). */
static int info_of(side *s, const char *id, tl_wf_info *in)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    int rc = tl_wf_get(rt, s->path, id, 0, in);
    if (rc == TL_OK) {
        tl_release(in->result);
        in->result = tl_nil();
    }
    tl_runtime_free(rt);
    return rc == TL_OK ? in->status : rc;
}

typedef int (*cond_fn)(void *ud);

/* Drives every side until cond(ud) holds (or fails the test). */
static const char *watch_id; /* printed when a pump runs out of time */

static int info_of(side *s, const char *id, tl_wf_info *in);

static void pump_report(side **v, int k)
{
    for (int i = 0; watch_id && i < k; i++) {
        tl_wf_info in;
        int st = info_of(v[i], watch_id, &in);
        print_message("%s: %s %s wait '%s' to '%s' from '%s' error '%s'\n", v[i]->name,
                      watch_id, st > 0 ? tl_wf_status_name(st) : tl_errname(st),
                      st > 0 ? in.wait : "", st > 0 ? in.moved_to : "",
                      st > 0 ? in.moved_from : "", st > 0 ? in.move_error : "");
    }
}

static void pump(side **v, int k, cond_fn cond, void *ud)
{
    int64_t end = mono() + WAIT_NS;
    while (!cond(ud)) {
        if (mono() >= end)
            pump_report(v, k);
        assert_true(mono() < end);
        for (int i = 0; i < k; i++) {
            if (v[i]->wf) {
                int rc = tl_wf_run(v[i]->wf, 0);
                if (rc != TL_OK && rc != TL_ETIMEDOUT)
                    fail_msg("tl_wf_run at %s: %s", v[i]->name, tl_wf_errmsg(v[i]->wf));
            }
            assert_int_equal(tl_node_poll(v[i]->n, 1), TL_OK);
        }
    }
}

typedef struct want {
    side *s;
    const char *id, *wait;
    int status;
} want;

static int reached(void *ud)
{
    want *w = ud;
    tl_wf_info in;
    int st = info_of(w->s, w->id, &in);
    return st == w->status && (!w->wait || strcmp(in.wait, w->wait) == 0);
}

static void pump_until(side **v, int k, side *s, const char *id, int status, const char *wait)
{
    want w = {s, id, wait, status};
    pump(v, k, reached, &w);
}

static int post(side *s, const char *id, const char *topic, int64_t v, const char *key)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    int rc = tl_wf_post(rt, s->path, id, topic, tl_i64(v), key);
    if (rc != TL_OK)
        print_message("post to %s at %s: %s\n", id, s->name, tl_errmsg(rt));
    tl_runtime_free(rt);
    return rc;
}

static int key_count(const char *line)
{
    int k = 0, n = atomic_load(&wfm_nkeys);
    for (int i = 0; i < n && i < 64; i++)
        k += strcmp(wfm_keys[i], line) == 0;
    return k;
}

static int result_of(side *s, const char *id, int64_t *out)
{
    tl_runtime *rt;
    tl_wf_info in;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    int rc = tl_wf_get(rt, s->path, id, 0, &in);
    if (rc == TL_OK) {
        *out = tl_as_i64(in.result);
        tl_release(in.result);
        rc = in.status;
    }
    tl_runtime_free(rt);
    return rc;
}

static void reset_steps(void)
{
    atomic_store(&wfm_nkeys, 0);
    atomic_store(&wfm_calls, 0);
    atomic_store(&wfm_block, 0);
    atomic_store(&wfm_holding, 0);
    atomic_store(&wfm_saw_cancel, 0);
}

typedef struct pair_up {
    side *x, *y;
} pair_up;

static int linked(void *ud)
{
    pair_up *p = ud;
    return tl_node_connected(p->x->n, p->y->name) && tl_node_connected(p->y->n, p->x->name);
}

/* Pairs x and y and drives every side until the link is up both ways. */
static void link_pair(side **v, int k, side *x, side *y)
{
    assert_int_equal(tl_node_pair(x->n, y->n), TL_OK);
    pair_up p = {x, y};
    pump(v, k, linked, &p);
}

/* ---- tests ---- */

/* `tasklet wf ls` shows w1 moved to B at A's store; `tasklet send` to it
 * there is refused naming B. */
static void cli_shows(const char *db)
{
    const char *cli = getenv("TASKLET_CLI");
    if (!cli)
        return; /* run outside meson */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' wf ls %s | grep -q 'w1 .* moved .* to B'", cli, db);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' send %s w1 go 1 2>&1 | grep -q 'moved to node B'", cli, db);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' result %s w1 | grep -q '^moved .*node B'", cli, db);
    assert_int_equal(system(cmd), 0);
}

/* Between its steps, with "fin" posted before it moved (and its dedup
 * key): B finishes it, each step ran once, A refuses posts naming B. */
static void test_move_between_steps(void **state)
{
    (void)state;
    reset_steps();
    side a = {0}, b = {0};
    side_open(&a, "A", 1);
    side_open(&b, "B", 1);
    side *v[] = {&a, &b};
    link_pair(v, 2, &a, &b);
    snprintf(wfm_node, sizeof wfm_node, "A");
    assert_int_equal(tl_wf_start(a.wf, "w1", &wfm_flow, tl_i64(1), NULL), TL_OK);
    pump_until(v, 2, &a, "w1", TL_WF_WAITING, "recv go");
    assert_int_equal(post(&a, "w1", "fin", 100, "fin-1"), TL_OK);
    assert_int_equal(tl_wf_move(a.wf, "w1", "B"), TL_OK);
    /* its commit writes the hand-off: from then on A says where it went */
    assert_int_equal(tl_wf_move(a.wf, "w1", "B"), TL_EMOVED);
    snprintf(wfm_node, sizeof wfm_node, "B");
    pump_until(v, 2, &b, "w1", TL_WF_WAITING, "recv go");
    tl_wf_info in;
    assert_int_equal(info_of(&a, "w1", &in), TL_WF_MOVED);
    assert_string_equal(in.moved_to, "B");
    assert_string_equal(tl_wf_status_name(TL_WF_MOVED), "moved");
    assert_int_equal(info_of(&b, "w1", &in), TL_WF_WAITING);
    assert_string_equal(in.moved_from, "A");
    assert_int_equal(in.steps, 1);
    /* the source refuses, naming where it went; the dedup key came along */
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_wf_post(rt, a.path, "w1", "go", tl_i64(10), NULL), TL_EMOVED);
    assert_non_null(strstr(tl_errmsg(rt), "moved to node B"));
    assert_int_equal(tl_wf_post(rt, b.path, "w1", "fin", tl_i64(7), "fin-1"), TL_EEXIST);
    assert_int_equal(tl_wf_post(rt, b.path, "w1", "go", tl_i64(10), NULL), TL_OK);
    tl_runtime_free(rt);
    assert_int_equal(tl_wf_move(a.wf, "w1", "B"), TL_EMOVED);
    assert_int_equal(tl_wf_cancel(a.wf, "w1"), TL_EMOVED);
    cli_shows(a.path);
    pump_until(v, 2, &b, "w1", TL_WF_DONE, NULL);
    int64_t r = 0;
    assert_int_equal(result_of(&b, "w1", &r), TL_WF_DONE);
    assert_int_equal(r, 2 + 20 + 100);
    assert_int_equal(key_count("A w1#1"), 1); /* recorded at A: never again */
    assert_int_equal(key_count("B w1#1"), 0);
    assert_int_equal(key_count("B w1#2"), 1);
    assert_int_equal(atomic_load(&wfm_calls), 2);
    assert_int_equal(tl_wf_live(a.wf), 0);
    side_done(&a);
    side_done(&b);
}

static int holding(void *ud) { return atomic_load(&wfm_holding) >= *(int *)ud; }

/* Its step in flight at A: the attempt is abandoned there, and B runs the
 * step with the same key; then it moves back to A (over its "moved" row)
 * and finishes there. */
static void test_move_inflight_and_back(void **state)
{
    (void)state;
    reset_steps();
    side a = {0}, b = {0};
    side_open(&a, "A", 1);
    side_open(&b, "B", 1);
    side *v[] = {&a, &b};
    link_pair(v, 2, &a, &b);
    snprintf(wfm_node, sizeof wfm_node, "A");
    watch_id = "w2";
    assert_int_equal(tl_wf_start(a.wf, "w2", &wfm_flow, tl_i64(1), NULL), TL_OK);
    pump_until(v, 2, &a, "w2", TL_WF_WAITING, "recv go");
    atomic_store(&wfm_block, 1);
    assert_int_equal(post(&a, "w2", "go", 5, NULL), TL_OK);
    int one = 1, two = 2;
    pump(v, 2, holding, &one);
    assert_int_equal(tl_wf_move(a.wf, "w2", "B"), TL_OK);
    snprintf(wfm_node, sizeof wfm_node, "B");
    pump(v, 2, holding, &two); /* its attempt at B, with A's told to stop */
    pump_until(v, 2, &b, "w2", TL_WF_WAITING, "step hold");
    int64_t end = mono() + WAIT_NS;
    while (!atomic_load(&wfm_saw_cancel) && mono() < end)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    assert_int_equal(atomic_load(&wfm_saw_cancel), 1); /* A's attempt was told */
    atomic_store(&wfm_block, 0);
    assert_int_equal(key_count("A w2#2"), 1);
    assert_int_equal(key_count("B w2#2"), 1); /* the same key */
    pump_until(v, 2, &b, "w2", TL_WF_WAITING, "recv fin");
    /* and back to A, where its row says moved */
    assert_int_equal(tl_wf_move(b.wf, "w2", "A"), TL_OK);
    snprintf(wfm_node, sizeof wfm_node, "A");
    pump_until(v, 2, &a, "w2", TL_WF_WAITING, "recv fin");
    tl_wf_info in;
    assert_int_equal(info_of(&b, "w2", &in), TL_WF_MOVED);
    assert_string_equal(in.moved_to, "A");
    assert_int_equal(post(&a, "w2", "fin", 1000, NULL), TL_OK);
    pump_until(v, 2, &a, "w2", TL_WF_DONE, NULL);
    int64_t r = 0;
    assert_int_equal(result_of(&a, "w2", &r), TL_WF_DONE);
    assert_int_equal(r, 2 + 10 + 1000);
    assert_int_equal(key_count("A w2#1") + key_count("B w2#1"), 1);
    side_done(&a);
    side_done(&b);
}

static int back_with_error(void *ud)
{
    want *w = ud;
    tl_wf_info in;
    return info_of(w->s, w->id, &in) == TL_WF_WAITING && strstr(in.move_error, w->wait);
}

/* Refused by B (no workflow engine) and by C (no such function): the
 * workflow comes back to A, says why, and finishes there. */
static void test_refused_comes_back(void **state)
{
    (void)state;
    reset_steps();
    side a = {0}, b = {0}, c = {0};
    side_open(&a, "A", 1);
    side_open(&b, "B", 0);
    side_open(&c, "C", 2);
    side *v[] = {&a, &b, &c};
    link_pair(v, 3, &a, &b);
    link_pair(v, 3, &a, &c);
    snprintf(wfm_node, sizeof wfm_node, "A");
    watch_id = "w3";
    assert_int_equal(tl_wf_start(a.wf, "w3", &wfm_flow, tl_i64(1), NULL), TL_OK);
    pump_until(v, 3, &a, "w3", TL_WF_WAITING, "recv go");
    assert_int_equal(post(&a, "w3", "fin", 100, NULL), TL_OK);
    assert_int_equal(tl_wf_move(a.wf, "w3", "B"), TL_OK);
    want w = {&a, "w3", "workflow engine", 0};
    pump(v, 3, back_with_error, &w);
    pump_until(v, 3, &a, "w3", TL_WF_WAITING, "recv go");
    assert_int_equal(tl_wf_move(a.wf, "w3", "C"), TL_OK);
    want w2 = {&a, "w3", "m.flow@1", 0}; /* named: not registered at C */
    pump(v, 3, back_with_error, &w2);
    tl_wf_info in;
    assert_int_equal(info_of(&c, "w3", &in), TL_ENOENT);
    assert_int_equal(post(&a, "w3", "go", 5, NULL), TL_OK);
    pump_until(v, 3, &a, "w3", TL_WF_DONE, NULL);
    int64_t r = 0;
    assert_int_equal(result_of(&a, "w3", &r), TL_WF_DONE);
    assert_int_equal(r, 2 + 10 + 100); /* the pending "fin" survived both trips */
    assert_int_equal(atomic_load(&wfm_calls), 2);
    side_done(&a);
    side_done(&b);
    side_done(&c);
}

/* What tl_wf_move refuses at once; the workflow stays and goes on. */
static void test_bad_input(void **state)
{
    (void)state;
    reset_steps();
    side a = {0}, b = {0};
    side_open(&a, "A", 1);
    side_open(&b, "B", 1);
    side *v[] = {&a, &b};
    assert_int_equal(tl_wf_move(NULL, "w", "B"), TL_EMISUSE);
    assert_int_equal(tl_wf_move(a.wf, NULL, "B"), TL_EINVAL);
    assert_int_equal(tl_wf_move(a.wf, "w", ""), TL_EINVAL);
    assert_int_equal(tl_wf_move(a.wf, "nope", "B"), TL_ENOENT);
    assert_non_null(strstr(tl_wf_errmsg(a.wf), "no workflow nope"));
    assert_int_equal(tl_wf_start(a.wf, "w4", &wfm_flow, tl_i64(1), NULL), TL_OK);
    pump_until(v, 2, &a, "w4", TL_WF_WAITING, "recv go");
    assert_int_equal(tl_wf_move(a.wf, "w4", "Z"), TL_ELINK); /* no link to Z */
    assert_int_equal(post(&a, "w4", "go", 1, NULL), TL_OK);
    assert_int_equal(post(&a, "w4", "fin", 1, NULL), TL_OK);
    pump_until(v, 2, &a, "w4", TL_WF_DONE, NULL);
    assert_int_equal(tl_wf_move(a.wf, "w4", "B"), TL_EDONE);
    /* an engine whose runtime has no node */
    tl_runtime *rt;
    tl_store *st;
    tl_wf *wf;
    char path[128];
    snprintf(path, sizeof path, "%s/lone.db", a.dir);
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_store_open(path, TL_STORE_NOSYNC, &st), TL_OK);
    assert_int_equal(tl_wf_new(rt, st, NULL, &wf), TL_OK);
    assert_int_equal(tl_wf_register(wf, &wfm_flow), TL_OK);
    assert_int_equal(tl_wf_register_step(wf, &wfm_add_step), TL_OK);
    assert_int_equal(tl_wf_start(wf, "w5", &wfm_flow, tl_i64(1), NULL), TL_OK);
    assert_int_equal(tl_wf_move(wf, "w5", "B"), TL_ENOTSUP);
    assert_non_null(strstr(tl_wf_errmsg(wf), "no node"));
    tl_wf_free(wf);
    tl_store_close(st);
    tl_runtime_free(rt);
    side_done(&a);
    side_done(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_move_between_steps),
        cmocka_unit_test(test_move_inflight_and_back),
        cmocka_unit_test(test_refused_comes_back),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
