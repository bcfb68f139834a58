/*
 * durable_counter.c -- a count that survives kill -9: three tasklets pass
 * a token around a ring and checkpoint into a SQLite store as they go.
 *
 * The ring: tasklet i receives the token on ring<i>, adds one, and sends
 * it on ring<i+1 mod 3> (unbuffered channels, so each hop is a
 * rendezvous).  After each hop it also writes [count, goal] into the
 * "ledger", a buffered channel of capacity 1 that always holds the latest
 * count.  The host reads the ledger only right after a checkpoint
 * succeeded, so every count it prints is in the store: started again, the
 * program restores the latest checkpoint, whose count is at least the
 * last one printed, and the printed counts never go backwards.
 *
 * At the goal, the tasklet that made the last hop (the finisher) sends
 * the token once more around the ring: the other two pass it on and end.
 * The finisher stays, blocked on its input where nothing will come, so
 * that the finished run -- its ledger -- stays in the store (the library
 * drops channels no live tasklet holds).  Run again, the program finds the
 * goal reached and prints "done N" again.
 *
 * Checkpoints: the policy checkpoints every POLICY_STEPS scheduler steps
 * inside tl_run_steps, and on close; the host loop also checkpoints
 * explicitly after each slice before it reads the ledger.  SIGINT and
 * SIGTERM stop cleanly between slices, with a final checkpoint.
 *
 *   usage: durable_counter DB N     count to N, keeping the state in DB
 */
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tasklet.h"

#define RING 3
#define SLICE_STEPS 4000  /* scheduler steps between the host's checkpoints */
#define POLICY_STEPS 1000 /* the policy's own checkpoints, inside a slice */
#define PRINT_EVERY 100   /* print a count at least this far from the last */
#define MAX_GOAL ((int64_t)1 << 52)

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

/* ---- the ledger: [count, goal] in a buffered channel of capacity 1 ---- */

/* Replaces the ledger's value.  Never blocks: the channel holds at most
 * one value, and it is taken out first. */
static int ledger_write(tl_runtime *rt, tl_chan *ledger, int64_t count, int64_t goal)
{
    tl_value old, rec;
    tl_value items[2] = {tl_i64(count), tl_i64(goal)};
    int rc = tl_chan_try_recv(ledger, &old);
    if (rc == TL_OK)
        tl_release(old);
    else if (rc != TL_EAGAIN)
        return rc;
    if ((rc = tl_array_new(rt, items, 2, &rec)) != TL_OK)
        return rc;
    rc = tl_chan_try_send(ledger, rec);
    tl_release(rec);
    return rc;
}

/* Reads the ledger without consuming it: takes the value out and puts
 * it back. */
static int ledger_read(tl_chan *ledger, int64_t *count, int64_t *goal)
{
    tl_value v;
    int rc = tl_chan_try_recv(ledger, &v);
    if (rc != TL_OK)
        return rc;
    *count = tl_as_i64(tl_array_at(v, 0));
    *goal = tl_as_i64(tl_array_at(v, 1));
    rc = tl_type(v) == TL_V_ARRAY && tl_len(v) == 2 ? tl_chan_try_send(ledger, v) : TL_ETYPE;
    tl_release(v);
    return rc;
}

/* ---- a ring member ---- */

typedef struct {
    int64_t goal;     /* arguments: goal, in, out, ledger, starter */
    tl_chan *in, *out, *ledger;
    bool starter;     /* sends the first token (0) */
    bool finisher;    /* made the last hop */
    tl_value token;
} ring_t;

static const tl_field ring_fields[] = {
    TL_FIELD(ring_t, goal, TL_T_I64),
    TL_FIELD(ring_t, in, TL_T_CHAN),
    TL_FIELD(ring_t, out, TL_T_CHAN),
    TL_FIELD(ring_t, ledger, TL_T_CHAN),
    TL_FIELD(ring_t, starter, TL_T_BOOL),
    TL_FIELD(ring_t, finisher, TL_T_BOOL),
    TL_FIELD(ring_t, token, TL_T_VALUE),
};

static tl_status ring_step(tl_frame *f, void *locals)
{
    ring_t *L = locals;
    int64_t n;
    int rc;
    TL_BEGIN(f);
    if (L->starter)
        TL_SEND(f, L->out, tl_i64(0));
    for (;;) {
        TL_RECV(f, L->in, L->token);
        if ((n = tl_as_i64(L->token)) >= L->goal)
            break;
        n++;
        if ((rc = ledger_write(tl_frame_runtime(f), L->ledger, n, L->goal)) != TL_OK)
            TL_FAIL(f, rc, "counter.ring: cannot write the ledger");
        L->finisher = n == L->goal;
        TL_SEND(f, L->out, tl_i64(n));
    }
    if (!L->finisher) {
        TL_SEND(f, L->out, L->token); /* pass the final token on, and end */
        TL_RETURN(f, tl_nil());
    }
    TL_RECV(f, L->in, L->token); /* keeps the ledger in the store for good */
    TL_END(f);
}

static const tl_func ring_fn = {
    "counter.ring", 1, ring_step, sizeof(ring_t),
    ring_fields, TL_COUNTOF(ring_fields), NULL,
};

/* ---- the host ---- */

typedef struct app {
    tl_runtime *rt;
    tl_store *st;
    tl_chan *ledger;  /* our reference */
    int64_t goal, count, printed;
    bool policy_set;  /* the store checkpoints on close */
    const char *what; /* the failed step, and why */
    char why[600];
} app;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Records a failure of a runtime call (rt_err) or a store call (st_err)
 * with the message the library left, and returns rc. */
static int rt_err(app *a, const char *what, int rc)
{
    a->what = what;
    snprintf(a->why, sizeof a->why, "%s", a->rt ? tl_errmsg(a->rt) : tl_strerror(rc));
    return rc;
}

static int st_err(app *a, const char *what, int rc)
{
    a->what = what;
    snprintf(a->why, sizeof a->why, "%s", tl_store_errmsg(a->st));
    return rc;
}

/* A fresh run: the ring and the ledger, nothing counted yet. */
static int spawn_ring(app *a)
{
    tl_chan *ch[RING] = {NULL};
    char name[16];
    int rc = tl_chan_new(a->rt, 1, &a->ledger);
    if (rc == TL_OK)
        rc = tl_chan_set_name(a->ledger, "ledger");
    if (rc == TL_OK)
        rc = ledger_write(a->rt, a->ledger, 0, a->goal);
    for (int i = 0; i < RING && rc == TL_OK; i++) {
        snprintf(name, sizeof name, "ring%d", i);
        if ((rc = tl_chan_new(a->rt, 0, &ch[i])) == TL_OK)
            rc = tl_chan_set_name(ch[i], name);
    }
    for (int i = 0; i < RING && rc == TL_OK; i++) {
        ring_t args = {a->goal, ch[i], ch[(i + 1) % RING], a->ledger, i == 0, false, {0}};
        rc = tl_spawn(a->rt, &ring_fn, &args, sizeof args, NULL);
    }
    for (int i = 0; i < RING; i++)
        tl_chan_release(ch[i]); /* the tasklets hold their own references */
    return rc == TL_OK ? TL_OK : rt_err(a, "starting the ring", rc);
}

/* Finds the ledger of a restored run and checks it counts to our goal. */
static int adopt_ledger(app *a)
{
    int64_t goal = 0;
    tl_chan *ledger = tl_chan_find_name(a->rt, "ledger");
    a->what = "reading the ledger";
    if (!ledger) {
        snprintf(a->why, sizeof a->why, "the store holds no channel \"ledger\": it was "
                 "not written by durable_counter");
        return TL_ENOENT;
    }
    a->ledger = tl_chan_retain(ledger);
    int rc = ledger_read(a->ledger, &a->count, &goal);
    if (rc != TL_OK)
        return rt_err(a, a->what, rc);
    if (goal != a->goal) {
        snprintf(a->why, sizeof a->why, "this store counts to %" PRId64 ", not %" PRId64
                 "; give the same N, or another file", goal, a->goal);
        return TL_EINVAL;
    }
    return TL_OK;
}

static void print_count(app *a)
{
    printf("count %" PRId64 "\n", a->count);
    fflush(stdout);
    a->printed = a->count;
}

/* Restores the latest checkpoint, or starts fresh (and checkpoints the
 * start, so that a restart never starts over). */
static int open_run(app *a, const char *path)
{
    int rc;
    double t0;
    if ((rc = tl_store_open(path, 0, &a->st)) != TL_OK)
        return st_err(a, "tl_store_open", rc);
    if ((rc = tl_store_attach(a->st, a->rt)) != TL_OK)
        return st_err(a, "tl_store_attach", rc);
    t0 = now_ms();
    rc = tl_store_restore(a->st);
    if (rc == TL_ENOENT) {
        if ((rc = spawn_ring(a)) != TL_OK)
            return rc;
        if ((rc = tl_store_checkpoint(a->st)) != TL_OK)
            return st_err(a, "tl_store_checkpoint", rc);
        printf("start: counting to %" PRId64 " in %s\n", a->goal, path);
    } else if (rc != TL_OK) {
        return st_err(a, "tl_store_restore", rc);
    } else {
        double ms = now_ms() - t0;
        if ((rc = adopt_ledger(a)) != TL_OK)
            return rc;
        printf("resume: checkpoint %" PRId64 " restored in %.2f ms\n",
               tl_store_last_checkpoint(a->st), ms);
    }
    print_count(a);
    tl_policy p = {.every_steps = POLICY_STEPS, .on_idle = 1, .on_close = 1};
    if ((rc = tl_store_set_policy(a->st, &p)) != TL_OK)
        return st_err(a, "tl_store_set_policy", rc);
    a->policy_set = true;
    return TL_OK;
}

/* One slice: run, checkpoint, then read and maybe print the committed
 * count.  *finished is set when the ring has reached the goal. */
static int slice(app *a, bool *finished)
{
    int64_t goal;
    int rc = tl_run_steps(a->rt, SLICE_STEPS, NULL);
    if (rc != TL_OK)
        return rt_err(a, "tl_run_steps", rc);
    if ((rc = tl_store_checkpoint(a->st)) != TL_OK)
        return st_err(a, "tl_store_checkpoint", rc);
    if ((rc = ledger_read(a->ledger, &a->count, &goal)) != TL_OK)
        return rt_err(a, "reading the ledger", rc);
    if (a->count - a->printed >= PRINT_EVERY || (a->count == a->goal && a->printed < a->goal))
        print_count(a);
    *finished = tl_runnable_count(a->rt) == 0;
    if (*finished && a->count != a->goal) {
        rc = tl_run(a->rt); /* reports the deadlock, naming the blocked tasklets */
        return rt_err(a, "the ring stopped short of the goal", rc == TL_OK ? TL_ESTATE : rc);
    }
    return TL_OK;
}

/* Closes the store: with the final checkpoint on success (the policy's
 * on_close), without one after a failure.  Frees everything. */
static int finish(app *a, int rc)
{
    if (rc != TL_OK && a->policy_set) {
        tl_policy none = {0};
        if (tl_store_set_policy(a->st, &none) != TL_OK)
            fprintf(stderr, "durable_counter: cannot clear the policy: %s\n",
                    tl_store_errmsg(a->st));
    }
    if (a->st) {
        int crc = tl_store_close(a->st);
        if (crc != TL_OK && rc == TL_OK)
            rc = rt_err(a, "tl_store_close (final checkpoint)", crc);
    }
    tl_chan_release(a->ledger);
    tl_runtime_free(a->rt);
    if (rc != TL_OK)
        fprintf(stderr, "durable_counter: %s: %s: %s\n", a->what, tl_strerror(rc), a->why);
    return rc;
}

static int parse_args(int argc, char **argv, int64_t *goal)
{
    char *end;
    if (argc != 3)
        return -1;
    long long n = strtoll(argv[2], &end, 10);
    if (end == argv[2] || *end || n < 1 || n > MAX_GOAL)
        return -1;
    *goal = n;
    return 0;
}

int main(int argc, char **argv)
{
    app a = {0};
    bool finished = false;
    int rc;
    if (parse_args(argc, argv, &a.goal) != 0) {
        fprintf(stderr, "usage: durable_counter DB N   (count to N, 1 <= N <= 2^52, "
                "keeping the state in the SQLite file DB)\n");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if ((rc = tl_runtime_new(NULL, &a.rt)) != TL_OK)
        rc = rt_err(&a, "tl_runtime_new", rc);
    else if ((rc = tl_register(a.rt, &ring_fn)) != TL_OK)
        rc = rt_err(&a, "tl_register", rc);
    else
        rc = open_run(&a, argv[1]);
    double t0 = now_ms();
    int64_t ckpt0 = tl_store_last_checkpoint(a.st), count0 = a.count;
    while (rc == TL_OK && !finished && !stop_signal)
        rc = slice(&a, &finished);
    double ms = now_ms() - t0;
    int64_t ckpts = tl_store_last_checkpoint(a.st) - ckpt0, count = a.count;
    if ((rc = finish(&a, rc)) != TL_OK)
        return EXIT_FAILURE;
    fprintf(stderr, "durable_counter: %" PRId64 " counts, %" PRId64 " checkpoints in %.0f ms"
            " (%.0f checkpoints/s)\n", count - count0, ckpts, ms,
            ms > 0 ? (double)ckpts * 1e3 / ms : 0.0);
    if (stop_signal) {
        printf("stopped at count %" PRId64 "; run again to continue\n", count);
        return 128 + stop_signal;
    }
    printf("done %" PRId64 "\n", a.goal);
    return EXIT_SUCCESS;
}
