/*
 * tl-bench.c -- micro-benchmarks of libtasklet's hot paths.
 *
 * Prints one JSON object per line: {"name": ..., "value": ..., "unit": ...}.
 *
 * A timed benchmark runs once to warm up (slabs filled, caches and branch
 * predictors hot), then REPS more times in the same runtime; the lowest
 * per-operation figure is reported, since noise only ever adds time.
 * CLOCK_MONOTONIC is read around tl_run alone: creating channels and
 * spawning the tasklets is setup, except in 'spawn', which times it.
 * 'blocked_tasklet_bytes' is not timed: it counts bytes through the
 * tl_config allocator.
 *
 * The migration benchmarks fork a peer process running a node ("peer") and
 * link it to a node in this process ("bench") over TCP on 127.0.0.1.
 * migrate_rtt_us reports the median of n round trips of a tasklet, each
 * timed on its own; remote_chan_msg_us the median time per message a
 * remote sender sends to a receiver at the channel's home (each message a
 * rendezvous, so one full round trip); remote_chan_pingpong_us the median
 * of n ping-pongs (two such messages); migrate_throughput moves n tasklets
 * in batches of 1000 and reports n over the time until the peer
 * acknowledged them all.  tcp_pingpong_us is a plain blocking TCP
 * ping-pong between two processes (bench_net.c), the yardstick; the
 * *_loaded_us figures are measured while one CPU burner per core runs;
 * remote_vs_tcp_ratio and remote_vs_tcp_loaded_ratio interleave the two
 * in one run and report remote over TCP (the target: at most 1 loaded).
 * aead_*_mib_us, crc32_mib_us and memcpy*_mib_us time one pass over
 * 1 MiB with the primitives a large transfer uses (bench_prim.c).
 *
 * Usage: tl-bench [--quick] [NAME]
 *   NAME     run only the benchmarks whose name contains NAME
 *   --quick  iteration counts divided by 100, for a smoke test
 */
#include <sqlite3.h>

#include "tasklet.h"
#include "../persist/store_sqlite.h"
#include "tasklet_node.h"
#include "bench_wf.h"
#include "bench_node.h"
#include "bench_net.h"
#include "bench_prim.h"

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REPS 5
#define QUICK_DIVISOR 100
#define SPAWN_BATCH 1000
#define SELECT_CASES 4

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int report(tl_runtime *rt, int rc, const char *what)
{
    const char *detail = rt && tl_errcode(rt) == rc ? tl_errmsg(rt) : tl_strerror(rc);
    fprintf(stderr, "tl-bench: %s failed: %s (%s)\n", what, detail, tl_errname(rc));
    return rc;
}

#define TRY(rt, call)                             \
    do {                                          \
        int try_rc_ = (call);                     \
        if (try_rc_ != TL_OK)                     \
            return report((rt), try_rc_, #call);  \
    } while (0)

/* ------------------------------------------------------------------------
 * Tasklet functions
 * --------------------------------------------------------------------- */

/* yield: n times to the back of the run queue. */
typedef struct {
    int64_t n, i;
} loop_locals;

static const tl_field loop_fields[] = {
    TL_FIELD(loop_locals, n, TL_T_I64),
    TL_FIELD(loop_locals, i, TL_T_I64),
};

static tl_status yielder(tl_frame *f, void *locals)
{
    loop_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++)
        TL_YIELD(f);
    TL_END(f);
}

static const tl_func yielder_fn = {
    "bench.yielder", 1, yielder, sizeof(loop_locals),
    loop_fields, TL_COUNTOF(loop_fields), NULL,
};

/* Channel loops: n messages out, in, or both.  The frames own their
 * channel references, so a channel dies with the tasklets using it. */
typedef struct {
    tl_chan *out, *in;
    tl_value v;
    int64_t n, i;
} chan_locals;

static const tl_field chan_fields[] = {
    TL_FIELD(chan_locals, out, TL_T_CHAN),
    TL_FIELD(chan_locals, in, TL_T_CHAN),
    TL_FIELD(chan_locals, v, TL_T_VALUE),
    TL_FIELD(chan_locals, n, TL_T_I64),
    TL_FIELD(chan_locals, i, TL_T_I64),
};

static tl_status pinger(tl_frame *f, void *locals)
{
    chan_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_SEND(f, L->out, tl_i64(L->i));
        TL_RECV(f, L->in, L->v);
    }
    TL_END(f);
}

static tl_status ponger(tl_frame *f, void *locals)
{
    chan_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_RECV(f, L->in, L->v);
        TL_SEND(f, L->out, L->v);
    }
    TL_END(f);
}

static tl_status producer(tl_frame *f, void *locals)
{
    chan_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++)
        TL_SEND(f, L->out, tl_i64(L->i));
    TL_END(f);
}

static tl_status consumer(tl_frame *f, void *locals)
{
    chan_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++)
        TL_RECV(f, L->in, L->v);
    TL_END(f);
}

#define CHAN_FUNC(fname, step)                                   \
    {fname, 1, step, sizeof(chan_locals), chan_fields,           \
     TL_COUNTOF(chan_fields), NULL}
static const tl_func pinger_fn = CHAN_FUNC("bench.pinger", pinger);
static const tl_func ponger_fn = CHAN_FUNC("bench.ponger", ponger);
static const tl_func producer_fn = CHAN_FUNC("bench.producer", producer);
static const tl_func consumer_fn = CHAN_FUNC("bench.consumer", consumer);

/* spawn: returns at once. */
static tl_status noop(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_END(f);
}

static const tl_func noop_fn = {"bench.noop", 1, noop, 0, NULL, 0, NULL};

/* call_return: caller calls leaf n times; leaf returns its argument. */
typedef struct {
    int64_t x;
} leaf_locals;

static const tl_field leaf_fields[] = {TL_FIELD(leaf_locals, x, TL_T_I64)};

static tl_status leaf(tl_frame *f, void *locals)
{
    leaf_locals *L = locals;
    TL_BEGIN(f);
    TL_RETURN(f, tl_i64(L->x));
    TL_END(f);
}

static const tl_func leaf_fn = {
    "bench.leaf", 1, leaf, sizeof(leaf_locals),
    leaf_fields, TL_COUNTOF(leaf_fields), NULL,
};

typedef struct {
    int64_t n, i;
    tl_value v;
} caller_locals;

static const tl_field caller_fields[] = {
    TL_FIELD(caller_locals, n, TL_T_I64),
    TL_FIELD(caller_locals, i, TL_T_I64),
    TL_FIELD(caller_locals, v, TL_T_VALUE),
};

static tl_status caller(tl_frame *f, void *locals)
{
    caller_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++)
        TL_CALL(f, &leaf_fn, L->v, &(leaf_locals){L->i});
    TL_END(f);
}

static const tl_func caller_fn = {
    "bench.caller", 1, caller, sizeof(caller_locals),
    caller_fields, TL_COUNTOF(caller_fields), NULL,
};

/* select: n selects receiving from SELECT_CASES channels.  The cases
 * borrow their channels (scratch space, not in the schema): the host
 * holds them for the whole run. */
typedef struct {
    tl_case cases[SELECT_CASES];
    int64_t n, i;
    tl_value v;
    int64_t idx;
} select_locals;

static const tl_field select_fields[] = {
    TL_FIELD(select_locals, cases, TL_T_CASES),
    TL_FIELD(select_locals, n, TL_T_I64),
    TL_FIELD(select_locals, i, TL_T_I64),
    TL_FIELD(select_locals, v, TL_T_VALUE),
    TL_FIELD(select_locals, idx, TL_T_I64),
};

static tl_status selector(tl_frame *f, void *locals)
{
    select_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++)
        TL_SELECT(f, L->cases, SELECT_CASES, L->idx, L->v);
    TL_END(f);
}

static const tl_func selector_fn = {
    "bench.selector", 1, selector, sizeof(select_locals),
    select_fields, TL_COUNTOF(select_fields), NULL,
};

/* blocked_tasklet_bytes: receives once, then ends. */
typedef struct {
    tl_chan *in;
    tl_value v;
    int64_t x;
} blocker_locals;
/* No padding: 32 bytes on 64-bit ABIs, 28 on i386 (a 4-byte pointer). */
_Static_assert(sizeof(blocker_locals) == sizeof(void *) + sizeof(tl_value) + sizeof(int64_t),
               "blocker locals: a pointer, a tl_value and an int64_t, unpadded");

static const tl_field blocker_fields[] = {
    TL_FIELD(blocker_locals, in, TL_T_CHAN),
    TL_FIELD(blocker_locals, v, TL_T_VALUE),
    TL_FIELD(blocker_locals, x, TL_T_I64),
};

static tl_status blocker(tl_frame *f, void *locals)
{
    blocker_locals *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    L->x = tl_as_i64(L->v);
    TL_END(f);
}

static const tl_func blocker_fn = {
    "bench.blocker", 1, blocker, sizeof(blocker_locals),
    blocker_fields, TL_COUNTOF(blocker_fields), NULL,
};

/* migrate_rtt_us: n round trips to the peer and back; each trip is timed
 * at home (CLOCK_MONOTONIC is one clock for both processes). */
typedef struct {
    int64_t n, i, t0;
} bounce_locals;

static const tl_field bounce_fields[] = {
    TL_FIELD(bounce_locals, n, TL_T_I64),
    TL_FIELD(bounce_locals, i, TL_T_I64),
    TL_FIELD(bounce_locals, t0, TL_T_I64),
};

static struct {
    int64_t *samples; /* ns, one per round trip, in this process */
    int64_t nsamples;
    int done;
} mig;

static tl_status bouncer(tl_frame *f, void *locals)
{
    bounce_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        L->t0 = now_ns();
        TL_MIGRATE(f, "peer");
        TL_MIGRATE(f, "bench");
        if (L->i < mig.nsamples)
            mig.samples[L->i] = now_ns() - L->t0;
    }
    mig.done = 1;
    TL_END(f);
}

static const tl_func bouncer_fn = {
    "bench.bouncer", 1, bouncer, sizeof(bounce_locals),
    bounce_fields, TL_COUNTOF(bounce_fields), NULL,
};

/* migrate_rtt_1mib_us: the same round trips, the tasklet holding a 1 MiB
 * binary of random (incompressible) bytes; migrate_mb_per_s is that
 * payload over half the median round trip (one way). */
#define MIB_PAYLOAD ((size_t)1 << 20)

typedef struct {
    int64_t n, i, t0; /* as in bounce_locals: the same step function runs it */
    tl_value payload;
} heavy_locals;

static const tl_field heavy_fields[] = {
    TL_FIELD(heavy_locals, n, TL_T_I64),
    TL_FIELD(heavy_locals, i, TL_T_I64),
    TL_FIELD(heavy_locals, t0, TL_T_I64),
    TL_FIELD(heavy_locals, payload, TL_T_VALUE),
};

/* bouncer's step function: its locals begin with bounce_locals' fields */
static const tl_func heavy_fn = {
    "bench.heavy", 1, bouncer, sizeof(heavy_locals),
    heavy_fields, TL_COUNTOF(heavy_fields), NULL,
};

/* remote_chan_msg_us: the remote pinger moves to the peer with the two
 * channels of this process, where they are remote; there it sends on `out`
 * and receives on `in` n times.  The remote ponger, at home, notes the
 * time of each ping: consecutive pings are one round trip apart. */
static tl_status remote_pinger(tl_frame *f, void *locals)
{
    chan_locals *L = locals;
    TL_BEGIN(f);
    TL_MIGRATE(f, "peer");
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_SEND(f, L->out, tl_i64(L->i));
        TL_RECV(f, L->in, L->v);
    }
    TL_END(f);
}

static tl_status remote_ponger(tl_frame *f, void *locals)
{
    chan_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_RECV(f, L->in, L->v);
        if (L->i < mig.nsamples)
            mig.samples[L->i] = now_ns();
        TL_SEND(f, L->out, L->v);
    }
    mig.done = 1;
    TL_END(f);
}

static const tl_func remote_pinger_fn = CHAN_FUNC("bench.remote_pinger", remote_pinger);
static const tl_func remote_ponger_fn = CHAN_FUNC("bench.remote_ponger", remote_ponger);

/* remote_chan_msg_us: the remote sender moves to the peer and sends n
 * messages on `out`, a channel of this process, remote there.  Each send
 * is a rendezvous: it completes when the receiver here has taken the
 * value, so the next message leaves one full round trip (request, the
 * receiver taking it, answer) after the previous one; the home receiver
 * notes the time of each. */
static tl_status remote_sender(tl_frame *f, void *locals)
{
    chan_locals *L = locals;
    TL_BEGIN(f);
    TL_MIGRATE(f, "peer");
    for (L->i = 0; L->i < L->n; L->i++)
        TL_SEND(f, L->out, tl_i64(L->i));
    TL_END(f);
}

static tl_status home_receiver(tl_frame *f, void *locals)
{
    chan_locals *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < L->n; L->i++) {
        TL_RECV(f, L->in, L->v);
        if (L->i < mig.nsamples)
            mig.samples[L->i] = now_ns();
    }
    mig.done = 1;
    TL_END(f);
}

static const tl_func remote_sender_fn = CHAN_FUNC("bench.remote_sender", remote_sender);
static const tl_func home_receiver_fn = CHAN_FUNC("bench.home_receiver", home_receiver);

static const tl_func *const all_funcs[] = {
    &yielder_fn, &pinger_fn, &ponger_fn, &producer_fn, &consumer_fn,
    &noop_fn, &leaf_fn, &caller_fn, &selector_fn, &blocker_fn,
    &bouncer_fn, &heavy_fn, &remote_pinger_fn, &remote_ponger_fn, &remote_sender_fn, &home_receiver_fn,
};

/* A runtime with every benchmark function registered. */
static int runtime_open(const tl_config *cfg, tl_runtime **out)
{
    TRY(NULL, tl_runtime_new(cfg, out));
    for (size_t i = 0; i < TL_COUNTOF(all_funcs); i++) {
        int rc = tl_register(*out, all_funcs[i]);
        if (rc != TL_OK) {
            report(*out, rc, "tl_register");
            tl_runtime_free(*out);
            *out = NULL;
            return rc;
        }
    }
    return TL_OK;
}

/* ------------------------------------------------------------------------
 * Timed repetitions: each sets up n operations in rt, runs them, and
 * stores the nanoseconds per operation in *per_op.
 * --------------------------------------------------------------------- */
typedef int (*rep_fn)(tl_runtime *rt, uint64_t n, double *per_op);

static int run_timed(tl_runtime *rt, uint64_t ops, double *per_op)
{
    int64_t t0 = now_ns();
    int rc = tl_run(rt);
    int64_t t1 = now_ns();
    if (rc != TL_OK)
        return report(rt, rc, "tl_run");
    *per_op = (double)(t1 - t0) / (double)ops;
    return TL_OK;
}

/* Two tasklets yield n times each: 2n switches. */
static int rep_yield(tl_runtime *rt, uint64_t n, double *per_op)
{
    loop_locals args = {(int64_t)n, 0};
    TRY(rt, tl_spawn(rt, &yielder_fn, &args, sizeof args, NULL));
    TRY(rt, tl_spawn(rt, &yielder_fn, &args, sizeof args, NULL));
    return run_timed(rt, 2 * n, per_op);
}

/* Spawns fa(out = a, in = b) and fb(out = b, in = a); the tasklets own
 * the channels once spawned. */
static int spawn_pair(tl_runtime *rt, size_t capacity, const tl_func *fa,
                      const tl_func *fb, uint64_t n)
{
    tl_chan *a, *b;
    TRY(rt, tl_chan_new(rt, capacity, &a));
    int rc = tl_chan_new(rt, capacity, &b);
    if (rc != TL_OK) {
        tl_chan_release(a);
        return report(rt, rc, "tl_chan_new");
    }
    chan_locals la = {a, b, tl_nil(), (int64_t)n, 0};
    chan_locals lb = {b, a, tl_nil(), (int64_t)n, 0};
    rc = tl_spawn(rt, fa, &la, sizeof la, NULL);
    if (rc == TL_OK)
        rc = tl_spawn(rt, fb, &lb, sizeof lb, NULL);
    tl_chan_release(a);
    tl_chan_release(b);
    return rc == TL_OK ? TL_OK : report(rt, rc, "tl_spawn");
}

/* n round trips over two rendezvous channels: 2n messages. */
static int rep_pingpong(tl_runtime *rt, uint64_t n, double *per_op)
{
    int rc = spawn_pair(rt, 0, &pinger_fn, &ponger_fn, n);
    return rc == TL_OK ? run_timed(rt, 2 * n, per_op) : rc;
}

/* n messages from a producer to a consumer through one channel with a
 * 1024-slot buffer. */
static int rep_buffered(tl_runtime *rt, uint64_t n, double *per_op)
{
    tl_chan *ch;
    TRY(rt, tl_chan_new(rt, 1024, &ch));
    chan_locals lp = {ch, NULL, tl_nil(), (int64_t)n, 0};
    chan_locals lc = {NULL, ch, tl_nil(), (int64_t)n, 0};
    int rc = tl_spawn(rt, &producer_fn, &lp, sizeof lp, NULL);
    if (rc == TL_OK)
        rc = tl_spawn(rt, &consumer_fn, &lc, sizeof lc, NULL);
    tl_chan_release(ch);
    if (rc != TL_OK)
        return report(rt, rc, "tl_spawn");
    return run_timed(rt, n, per_op);
}

/* n detached tasklets that return at once, spawned SPAWN_BATCH at a time
 * and run; spawning is timed too. */
static int rep_spawn(tl_runtime *rt, uint64_t n, double *per_op)
{
    uint64_t batches = (n + SPAWN_BATCH - 1) / SPAWN_BATCH;
    int64_t t0 = now_ns();
    for (uint64_t b = 0; b < batches; b++) {
        for (int i = 0; i < SPAWN_BATCH; i++)
            TRY(rt, tl_spawn(rt, &noop_fn, NULL, 0, NULL));
        TRY(rt, tl_run(rt));
    }
    int64_t t1 = now_ns();
    *per_op = (double)(t1 - t0) / (double)(batches * SPAWN_BATCH);
    return TL_OK;
}

/* n calls of a leaf function that returns its argument. */
static int rep_call(tl_runtime *rt, uint64_t n, double *per_op)
{
    caller_locals args = {(int64_t)n, 0, tl_nil()};
    TRY(rt, tl_spawn(rt, &caller_fn, &args, sizeof args, NULL));
    return run_timed(rt, n, per_op);
}

/* n selects over SELECT_CASES buffered channels, each preloaded with n
 * values so that every case is ready at every select: the figure is the
 * select's ready path (validate, scan, pick at random, receive). */
static int rep_select(tl_runtime *rt, uint64_t n, double *per_op)
{
    select_locals args;
    int rc = TL_OK, made = 0;
    memset(&args, 0, sizeof args);
    args.n = (int64_t)n;
    for (; made < SELECT_CASES && rc == TL_OK; made++) {
        tl_case *c = &args.cases[made];
        c->op = TL_OP_RECV;
        rc = tl_chan_new(rt, n, &c->ch);
        for (uint64_t i = 0; i < n && rc == TL_OK; i++)
            rc = tl_chan_try_send(c->ch, tl_i64((int64_t)i));
    }
    if (rc == TL_OK)
        rc = tl_spawn(rt, &selector_fn, &args, sizeof args, NULL);
    if (rc == TL_OK)
        rc = run_timed(rt, n, per_op);
    else
        report(rt, rc, "select setup");
    for (int k = 0; k < made; k++)
        tl_chan_release(args.cases[k].ch);
    return rc;
}

/* Warms up with one repetition, then keeps the best of REPS. */
static int best_of(rep_fn rep, uint64_t n, double *best)
{
    tl_runtime *rt;
    double x;
    int rc = runtime_open(NULL, &rt);
    if (rc != TL_OK)
        return rc;
    rc = rep(rt, n, &x);
    *best = INFINITY;
    for (int i = 0; i < REPS && rc == TL_OK; i++) {
        rc = rep(rt, n, &x);
        if (rc == TL_OK && x < *best)
            *best = x;
    }
    tl_runtime_free(rt);
    return rc;
}

/* ------------------------------------------------------------------------
 * Memory per blocked tasklet, through a counting allocator
 * --------------------------------------------------------------------- */
typedef struct {
    size_t bytes; /* currently allocated, as requested */
} alloc_count;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    alloc_count *c = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        c->bytes -= old;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p)
        c->bytes = c->bytes - old + nsize;
    return p;
}

static int spawn_blocked(tl_runtime *rt, tl_chan *ch, uint64_t n)
{
    blocker_locals args = {ch, tl_nil(), 0};
    for (uint64_t i = 0; i < n; i++)
        TRY(rt, tl_spawn(rt, &blocker_fn, &args, sizeof args, NULL));
    TRY(rt, tl_run_steps(rt, UINT64_MAX, NULL));
    if (tl_blocked_count(rt) != n) {
        fprintf(stderr, "tl-bench: %zu tasklets blocked, expected %" PRIu64 "\n",
                tl_blocked_count(rt), n);
        return TL_ESTATE;
    }
    return TL_OK;
}

/* Bytes allocated by spawning n tasklets and running them until each is
 * blocked receiving on one channel, divided by n. */
static int measure_blocked_bytes(uint64_t n, double *per_tasklet)
{
    alloc_count count = {0};
    tl_config cfg = {.alloc = counting_alloc, .alloc_ud = &count};
    tl_runtime *rt;
    tl_chan *ch;
    int rc = runtime_open(&cfg, &rt);
    if (rc != TL_OK)
        return rc;
    rc = tl_chan_new(rt, 0, &ch);
    if (rc == TL_OK) {
        size_t before = count.bytes;
        rc = spawn_blocked(rt, ch, n);
        *per_tasklet = (double)(count.bytes - before) / (double)n;
        tl_chan_release(ch);
    } else {
        report(rt, rc, "tl_chan_new");
    }
    tl_runtime_free(rt);
    if (count.bytes != 0)
        fprintf(stderr, "tl-bench: %zu bytes still allocated after tl_runtime_free\n",
                count.bytes);
    return rc;
}

/* ------------------------------------------------------------------------
 * Persistence: n tasklets blocked with 32 bytes of locals, checkpointed to
 * a store on disk (fsync at commit), 1% of them changed, then restored.
 * One run gives the four figures.
 * --------------------------------------------------------------------- */
static struct {
    int done, rc;
    double full_s, incr_s, restore_s, bytes;
} persist;

static int persist_store_bytes(tl_store *st, int64_t ckpt, double *bytes)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(tl__store_sqlite(st), "SELECT bytes FROM checkpoints WHERE id = ?",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, ckpt);
        rc = sqlite3_step(s) == SQLITE_ROW ? SQLITE_OK : SQLITE_ERROR;
        *bytes = (double)sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? TL_OK : TL_ESTORE;
}

static int store_fail(tl_store *st, int rc, const char *what)
{
    fprintf(stderr, "tl-bench: %s: %s: %s\n", what, tl_strerror(rc), tl_store_errmsg(st));
    return rc;
}

/* Checkpoints n blocked tasklets, changes 1%, checkpoints again. */
static int persist_write(const char *path, uint64_t n)
{
    tl_runtime *rt;
    tl_chan *ch;
    tl_store *st;
    int rc = runtime_open(NULL, &rt);
    if (rc != TL_OK)
        return rc;
    rc = tl_chan_new(rt, 0, &ch);
    if (rc == TL_OK)
        rc = spawn_blocked(rt, ch, n);
    if (rc == TL_OK && (rc = tl_store_open(path, 0, &st)) == TL_OK) {
        if ((rc = tl_store_attach(st, rt)) != TL_OK)
            store_fail(st, rc, "attach");
        int64_t t0 = now_ns();
        if (rc == TL_OK && (rc = tl_store_checkpoint(st)) != TL_OK)
            store_fail(st, rc, "full checkpoint");
        int64_t t1 = now_ns();
        persist.full_s = (double)(t1 - t0) / 1e9;
        if (rc == TL_OK)
            rc = persist_store_bytes(st, 1, &persist.bytes);
        persist.bytes /= (double)n;
        for (uint64_t i = 0; rc == TL_OK && i < n / 100; i++) /* wakes the first 1% */
            rc = tl_chan_try_send(ch, tl_i64((int64_t)i));
        if (rc == TL_OK)
            rc = tl_run_steps(rt, UINT64_MAX, NULL);
        int64_t t2 = now_ns();
        if (rc == TL_OK && (rc = tl_store_checkpoint(st)) != TL_OK)
            store_fail(st, rc, "incremental checkpoint");
        persist.incr_s = (double)(now_ns() - t2) / 1e9;
        tl_store_close(st);
    } else if (rc != TL_OK) {
        report(rt, rc, "persist setup");
    }
    tl_chan_release(ch);
    tl_runtime_free(rt);
    return rc;
}

static int persist_restore(const char *path, uint64_t n)
{
    tl_runtime *rt;
    tl_store *st;
    int rc = runtime_open(NULL, &rt);
    if (rc != TL_OK)
        return rc;
    if ((rc = tl_store_open(path, 0, &st)) == TL_OK && (rc = tl_store_attach(st, rt)) == TL_OK) {
        int64_t t0 = now_ns();
        rc = tl_store_restore(st);
        persist.restore_s = (double)(now_ns() - t0) / 1e9;
        if (rc != TL_OK)
            store_fail(st, rc, "restore");
        else if (tl_blocked_count(rt) != n - n / 100)
            rc = TL_ESTATE;
    }
    tl_store_close(st);
    tl_runtime_free(rt);
    return rc;
}

static int persist_run(uint64_t n)
{
    char dir[] = "tl-bench-store-XXXXXX", path[64], cmd[96];
    if (persist.done)
        return persist.rc;
    persist.done = 1;
    if (!mkdtemp(dir))
        return persist.rc = TL_EIO;
    snprintf(path, sizeof path, "%s/bench.db", dir);
    persist.rc = persist_write(path, n);
    if (persist.rc == TL_OK)
        persist.rc = persist_restore(path, n);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "tl-bench: could not remove %s\n", dir);
    return persist.rc;
}

static int measure_ckpt_full(uint64_t n, double *v) { int rc = persist_run(n); *v = persist.full_s; return rc; }
static int measure_ckpt_incr(uint64_t n, double *v) { int rc = persist_run(n); *v = persist.incr_s; return rc; }
static int measure_restore(uint64_t n, double *v) { int rc = persist_run(n); *v = persist.restore_s; return rc; }
static int measure_snap_bytes(uint64_t n, double *v) { int rc = persist_run(n); *v = persist.bytes; return rc; }

/* ------------------------------------------------------------------------
 * Incremental checkpoints that cost what changed: one consumer steps (one
 * message a checkpoint) among n idle tasklets, and each checkpoint after
 * the first is timed; the figure is the mean of INCR_ROUNDS.
 *   checkpoint_incr_idle_1m  the idle ones blocked on one channel (a queue
 *                            of n waiters; the consumer's channel and the
 *                            idle one share a chunk)
 *   checkpoint_incr_highids  the idle ones asleep, every id near 2^40
 * The store does not fsync (TL_STORE_NOSYNC): the figure is the
 * checkpoint's own work, not the disk's.  TL_BENCH_ROUNDS=1 in the
 * environment prints each round's time on stderr.
 * --------------------------------------------------------------------- */
#ifndef INCR_ROUNDS
#define INCR_ROUNDS 20
#endif

/* internal (src/sched.c), for tests and benchmarks: the next ids */
void tl__set_next_ids(tl_runtime *rt, uint64_t tid, uint64_t cid);

typedef struct { int64_t ms; } nap_locals;
static const tl_field nap_fields[] = {TL_FIELD(nap_locals, ms, TL_T_I64)};
static tl_status napper(tl_frame *f, void *locals)
{
    nap_locals *L = locals;
    TL_BEGIN(f);
    TL_SLEEP(f, L->ms);
    TL_END(f);
}
static const tl_func napper_fn = {"bench.napper", 1, napper, sizeof(nap_locals), nap_fields,
                                  TL_COUNTOF(nap_fields), NULL};

/* n idle tasklets: blocked on idle, or (idle NULL) asleep for an hour. */
static int spawn_idle(tl_runtime *rt, tl_chan *idle, uint64_t n)
{
    blocker_locals b = {idle, tl_nil(), 0};
    nap_locals a = {3600 * 1000};
    for (uint64_t i = 0; i < n; i++)
        TRY(rt, idle ? tl_spawn(rt, &blocker_fn, &b, sizeof b, NULL)
                     : tl_spawn(rt, &napper_fn, &a, sizeof a, NULL));
    TRY(rt, tl_run_steps(rt, UINT64_MAX, NULL));
    return tl_blocked_count(rt) == n + 1 ? TL_OK : TL_ESTATE;
}

/* Full checkpoint, then INCR_ROUNDS rounds of one message to the
 * consumer and a timed checkpoint. */
static int incr_rounds(tl_runtime *rt, tl_chan *work, const char *path, double *mean)
{
    tl_store *st;
    int rc = tl_store_open(path, TL_STORE_NOSYNC, &st);
    if (rc != TL_OK)
        return store_fail(st, rc, "open");
    if ((rc = tl_store_attach(st, rt)) != TL_OK || (rc = tl_store_checkpoint(st)) != TL_OK)
        store_fail(st, rc, "first checkpoint");
    int64_t total = 0;
    for (int i = 0; rc == TL_OK && i < INCR_ROUNDS; i++) {
        rc = tl_chan_try_send(work, tl_i64(i));
        if (rc == TL_OK)
            rc = tl_run_steps(rt, UINT64_MAX, NULL);
        int64_t t0 = now_ns();
        if (rc == TL_OK && (rc = tl_store_checkpoint(st)) != TL_OK)
            store_fail(st, rc, "incremental checkpoint");
        total += now_ns() - t0;
        if (getenv("TL_BENCH_ROUNDS")) /* each round's time, to see outliers */
            fprintf(stderr, "round %d: %.3f ms\n", i, (double)(now_ns() - t0) / 1e6);
    }
    if (rc == TL_OK && tl_store_last_checkpoint(st) != INCR_ROUNDS + 1)
        rc = TL_ESTATE;
    tl_store_close(st);
    *mean = (double)total / INCR_ROUNDS / 1e9;
    return rc;
}

static int incr_run(uint64_t n, int high_ids, double *mean)
{
    char dir[] = "tl-bench-store-XXXXXX", path[64], cmd[96];
    tl_runtime *rt;
    tl_chan *work = NULL, *idle = NULL;
    if (!mkdtemp(dir))
        return TL_EIO;
    snprintf(path, sizeof path, "%s/bench.db", dir);
    int rc = runtime_open(NULL, &rt);
    if (rc == TL_OK && (rc = tl_register(rt, &napper_fn)) == TL_OK) {
        if (high_ids)
            tl__set_next_ids(rt, (uint64_t)1 << 40, (uint64_t)1 << 40);
        chan_locals c = {NULL, NULL, tl_nil(), INT64_MAX, 0};
        rc = tl_chan_new(rt, 0, &work);
        if (rc == TL_OK && !high_ids)
            rc = tl_chan_new(rt, 0, &idle);
        c.in = work;
        if (rc == TL_OK)
            rc = tl_spawn(rt, &consumer_fn, &c, sizeof c, NULL);
        if (rc == TL_OK)
            rc = spawn_idle(rt, idle, n);
        if (rc == TL_OK)
            rc = incr_rounds(rt, work, path, mean);
        tl_chan_release(work);
        tl_chan_release(idle);
    }
    if (rt)
        tl_runtime_free(rt);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "tl-bench: could not remove %s\n", dir);
    return rc;
}

static int measure_incr_idle(uint64_t n, double *v) { return incr_run(n, 0, v); }
static int measure_incr_highids(uint64_t n, double *v) { return incr_run(n, 1, v); }

/* ------------------------------------------------------------------------
 * Migration: this process ("bench") and a forked peer process ("peer"),
 * linked over TCP on 127.0.0.1.
 * --------------------------------------------------------------------- */
#define MIG_SECRET "tl-bench: the migration benchmarks' secret"
#define MIG_TIMEOUT_S 120
#define MIG_BATCH 1000 /* migrate_throughput: tasklets moved per tl_node_poll */

typedef struct {
    tl_runtime *rt;
    tl_node *node;
    pid_t pid;
} mig_link;

static void mig_log(void *ud, const char *msg)
{
    (void)ud;
    if (getenv("TL_BENCH_VERBOSE"))
        fprintf(stderr, "tl-bench node: %s\n", msg);
}

static int node_open(const char *id, tl_runtime **rt, tl_node **node)
{
    tl_node_config cfg = {.node_id = id, .secret = MIG_SECRET, .secret_len = strlen(MIG_SECRET),
                          .log = mig_log};
    int rc = runtime_open(NULL, rt);
    if (rc != TL_OK)
        return rc;
    rc = tl_node_new(*rt, &cfg, node);
    if (rc != TL_OK) {
        report(*rt, rc, "tl_node_new");
        tl_runtime_free(*rt);
    }
    return rc;
}

/* The peer: writes its address on fd, then serves until the link to
 * "bench", once up, drops. */
static int peer_main(int fd)
{
    tl_runtime *rt;
    tl_node *node;
    char addr[64] = "";
    int rc = node_open("peer", &rt, &node), seen = 0; /* 1 linked, 2 was linked */
    if (rc != TL_OK)
        return rc;
    if ((rc = tl_node_listen(node, "tcp://127.0.0.1:0")) == TL_OK)
        snprintf(addr, sizeof addr, "%s", tl_node_address(node));
    if (write(fd, addr, sizeof addr) != (ssize_t)sizeof addr && rc == TL_OK)
        rc = TL_EIO;
    close(fd);
    int64_t end = now_ns() + (int64_t)MIG_TIMEOUT_S * 1000000000;
    while (rc == TL_OK && seen < 2 && now_ns() < end) {
        seen = tl_node_connected(node, "bench") ? 1 : 2 * seen;
        rc = tl_node_poll(node, 100);
    }
    if (rc != TL_OK)
        report(rt, rc, "the peer's tl_node_poll");
    tl_node_free(node);
    tl_runtime_free(rt);
    return rc;
}

/* Forks the peer, then opens "bench" and links it to the peer. */
static int mig_open(mig_link *m)
{
    int p[2];
    char addr[64];
    memset(m, 0, sizeof *m);
    fflush(stdout);
    if (pipe(p) != 0)
        return TL_EIO;
    m->pid = fork();
    if (m->pid == 0) {
        close(p[0]);
        _exit(peer_main(p[1]) == TL_OK ? 0 : 1);
    }
    close(p[1]);
    ssize_t k = m->pid > 0 ? read(p[0], addr, sizeof addr) : -1;
    close(p[0]);
    if (k != (ssize_t)sizeof addr || !addr[0]) {
        fprintf(stderr, "tl-bench: the peer process did not start\n");
        return TL_EIO;
    }
    addr[sizeof addr - 1] = '\0';
    int rc = node_open("bench", &m->rt, &m->node);
    if (rc != TL_OK)
        return rc;
    TRY(m->rt, tl_node_connect(m->node, addr));
    TRY(m->rt, tl_node_wait_peer(m->node, "peer", 5000));
    return TL_OK;
}

/* Closes "bench" (the peer then exits) and reaps the peer. */
static int mig_close(mig_link *m, int rc)
{
    int status;
    tl_node_free(m->node);
    tl_runtime_free(m->rt);
    if (m->pid > 0 && rc != TL_OK)
        kill(m->pid, SIGKILL); /* it may never have been linked */
    if (m->pid > 0 && (waitpid(m->pid, &status, 0) != m->pid || !WIFEXITED(status) ||
                       WEXITSTATUS(status) != 0)) {
        if (rc == TL_OK)
            fprintf(stderr, "tl-bench: the peer process failed\n");
        rc = rc == TL_OK ? TL_EIO : rc;
    }
    return rc;
}

/* Polls until *flag is set, or stats.moved_out reaches want (want > 0). */
static int mig_poll_until(mig_link *m, const int *flag, uint64_t want)
{
    int64_t end = now_ns() + (int64_t)MIG_TIMEOUT_S * 1000000000;
    tl_node_stats st;
    for (;;) {
        tl_node_stats_get(m->node, &st);
        if ((flag && *flag) || (want && st.moved_out >= want))
            return TL_OK;
        if (now_ns() > end) {
            fprintf(stderr, "tl-bench: no progress for %d s\n", MIG_TIMEOUT_S);
            return TL_EIO;
        }
        TRY(m->rt, tl_node_poll(m->node, 100));
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double median_us(int64_t *v, int64_t n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    return (double)(n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) / 1000.0;
}

static int mig_samples(int64_t n)
{
    mig.samples = calloc((size_t)n, sizeof *mig.samples);
    mig.nsamples = mig.samples ? n : 0;
    mig.done = 0;
    return mig.samples ? TL_OK : TL_ENOMEM;
}

/* n round trips of one tasklet: TL_MIGRATE to the peer and back. */
static int measure_migrate_rtt(uint64_t n, double *us)
{
    mig_link m = {NULL, NULL, 0};
    bounce_locals args = {(int64_t)n, 0, 0};
    int rc = n >= 1 ? mig_open(&m) : TL_EINVAL;
    if (rc == TL_OK)
        rc = mig_samples((int64_t)n);
    if (rc == TL_OK)
        rc = tl_spawn(m.rt, &bouncer_fn, &args, sizeof args, NULL);
    if (rc == TL_OK)
        rc = mig_poll_until(&m, &mig.done, 0);
    if (rc == TL_OK)
        *us = median_us(mig.samples, mig.nsamples);
    free(mig.samples);
    mig.samples = NULL;
    return mig_close(&m, rc);
}

/* n round trips of a tasklet holding MIB_PAYLOAD random bytes. */
static int mib_rtt(uint64_t n, double *us)
{
    mig_link m = {NULL, NULL, 0};
    heavy_locals args = {(int64_t)n, 0, 0, tl_nil()};
    unsigned char *bytes = malloc(MIB_PAYLOAD);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    int rc = n >= 1 && bytes ? mig_open(&m) : TL_EINVAL;
    for (size_t i = 0; bytes && i < MIB_PAYLOAD; i++) { /* xorshift: incompressible */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        bytes[i] = (unsigned char)(x >> 24);
    }
    if (rc == TL_OK)
        rc = tl_bin_new(m.rt, bytes, MIB_PAYLOAD, &args.payload);
    if (rc == TL_OK)
        rc = mig_samples((int64_t)n);
    if (rc == TL_OK)
        rc = tl_spawn(m.rt, &heavy_fn, &args, sizeof args, NULL);
    tl_release(args.payload);
    if (rc == TL_OK)
        rc = mig_poll_until(&m, &mig.done, 0);
    if (rc == TL_OK)
        *us = median_us(mig.samples, mig.nsamples);
    free(mig.samples);
    mig.samples = NULL;
    free(bytes);
    return mig_close(&m, rc);
}

static int measure_migrate_1mib(uint64_t n, double *us) { return mib_rtt(n, us); }

static int measure_migrate_mb(uint64_t n, double *mb_per_s)
{
    double us;
    int rc = mib_rtt(n, &us);
    if (rc == TL_OK)
        *mb_per_s = (double)MIB_PAYLOAD / 1e6 / (us / 2 / 1e6);
    return rc;
}

/* n tasklets moved with tl_node_migrate, MIG_BATCH at a time: spawned
 * (not started yet), moved, then one tl_node_poll without waiting, so that
 * both processes work at once.  Timed from the first spawn until the peer
 * has acknowledged the last (tl_node_stats.moved_out). */
static int measure_migrate_throughput(uint64_t n, double *per_s)
{
    mig_link m = {NULL, NULL, 0};
    tl_tasklet *ts[MIG_BATCH];
    int rc = mig_open(&m);
    int64_t t0 = now_ns();
    for (uint64_t done = 0; rc == TL_OK && done < n; done += MIG_BATCH) {
        uint64_t k = n - done < MIG_BATCH ? n - done : MIG_BATCH, spawned = 0;
        for (; rc == TL_OK && spawned < k; spawned++)
            if ((rc = tl_spawn(m.rt, &noop_fn, NULL, 0, &ts[spawned])) != TL_OK)
                report(m.rt, rc, "tl_spawn");
        for (uint64_t i = 0; rc == TL_OK && i < k; i++)
            if ((rc = tl_node_migrate(m.node, ts[i], "peer")) != TL_OK)
                report(m.rt, rc, "tl_node_migrate");
        for (uint64_t i = 0; i < spawned; i++)
            tl_tasklet_release(ts[i]);
        if (rc == TL_OK)
            rc = tl_node_poll(m.node, 0);
    }
    if (rc == TL_OK)
        rc = mig_poll_until(&m, NULL, n);
    *per_s = (double)n / ((double)(now_ns() - t0) / 1e9);
    return mig_close(&m, rc);
}

/* n ping-pongs between a tasklet on the peer and one here, over two
 * channels of this process (remote channels on the peer). */
/* A remote tasklet (remote_fn) sends on `ping`, a channel of this
 * process, and, with replies, receives on `pong`; home_fn, here, takes the
 * pings (and answers them) and notes the time of each.  The figure is the
 * median time between consecutive pings. */
static int measure_remote(uint64_t n, double *us, const tl_func *remote_fn,
                          const tl_func *home_fn, int replies)
{
    mig_link m = {NULL, NULL, 0};
    tl_chan *ping = NULL, *pong = NULL;
    int rc = n >= 2 ? mig_open(&m) : TL_EINVAL;
    if (rc == TL_OK && (rc = mig_samples((int64_t)n)) == TL_OK &&
        (rc = tl_chan_new(m.rt, 0, &ping)) == TL_OK &&
        (!replies || (rc = tl_chan_new(m.rt, 0, &pong)) == TL_OK)) {
        chan_locals remote = {ping, pong, tl_nil(), (int64_t)n, 0};
        chan_locals home = {pong, ping, tl_nil(), (int64_t)n, 0};
        rc = tl_spawn(m.rt, remote_fn, &remote, sizeof remote, NULL);
        if (rc == TL_OK)
            rc = tl_spawn(m.rt, home_fn, &home, sizeof home, NULL);
    }
    tl_chan_release(ping);
    tl_chan_release(pong);
    if (rc == TL_OK)
        rc = mig_poll_until(&m, &mig.done, 0);
    for (int64_t i = 0; rc == TL_OK && i + 1 < mig.nsamples; i++)
        mig.samples[i] = mig.samples[i + 1] - mig.samples[i];
    if (rc == TL_OK)
        *us = median_us(mig.samples, mig.nsamples - 1);
    free(mig.samples);
    mig.samples = NULL;
    return mig_close(&m, rc);
}

static int measure_remote_msg(uint64_t n, double *us)
{
    return measure_remote(n, us, &remote_sender_fn, &home_receiver_fn, 0);
}

static int measure_remote_chan(uint64_t n, double *us)
{
    return measure_remote(n, us, &remote_pinger_fn, &remote_ponger_fn, 1);
}

/* The same while one CPU burner per core competes with both processes;
 * compare with tcp_pingpong_loaded_us. */
static int measure_remote_chan_loaded(uint64_t n, double *us)
{
    bench_burners_start(0);
    int rc = measure_remote_chan(n, us);
    bench_burners_stop();
    return rc;
}

static int measure_remote_msg_loaded(uint64_t n, double *us)
{
    bench_burners_start(0);
    int rc = measure_remote_msg(n, us);
    bench_burners_stop();
    return rc;
}

/* remote_vs_tcp_ratio and remote_vs_tcp_loaded_ratio: the remote message
 * of remote_chan_msg_us and the round trip of tcp_pingpong_us, measured in
 * alternating rounds of one run (VS_ROUNDS of each, which goes first
 * swapped every round; the loaded one with one CPU burner per core for the
 * whole run), so that what the machine does meanwhile falls on both alike.
 * Prints the median of each (NAME_remote_us, NAME_tcp_us, over every
 * message of every round) and reports remote over TCP. */
#define VS_ROUNDS 10

/* One round: k + 1 messages from a remote sender, k intervals into out. */
static int remote_round(mig_link *m, int64_t k, int64_t *out)
{
    tl_chan *ch = NULL;
    int rc = mig_samples(k + 1);
    if (rc == TL_OK && (rc = tl_chan_new(m->rt, 0, &ch)) == TL_OK) {
        chan_locals remote = {ch, NULL, tl_nil(), k + 1, 0};
        chan_locals home = {NULL, ch, tl_nil(), k + 1, 0};
        rc = tl_spawn(m->rt, &remote_sender_fn, &remote, sizeof remote, NULL);
        if (rc == TL_OK)
            rc = tl_spawn(m->rt, &home_receiver_fn, &home, sizeof home, NULL);
    }
    tl_chan_release(ch);
    if (rc == TL_OK)
        rc = mig_poll_until(m, &mig.done, 0);
    for (int64_t i = 0; rc == TL_OK && i < k; i++)
        out[i] = mig.samples[i + 1] - mig.samples[i];
    free(mig.samples);
    mig.samples = NULL;
    return rc;
}

static int vs_rounds(mig_link *m, bench_tcp *t, int64_t k, int64_t *rv, int64_t *tv)
{
    int rc = TL_OK;
    for (int r = 0; rc == TL_OK && r < 2 * VS_ROUNDS; r++) {
        int64_t at = (r / 2) * k;
        int tcp = (r ^ (r / 2)) & 1; /* TCP first in odd rounds */
        if (tcp)
            rc = bench_tcp_rounds(t, (uint64_t)k, tv + at) == 0 ? TL_OK : TL_EIO;
        else
            rc = remote_round(m, k, rv + at);
        if (rc == TL_OK && getenv("TL_BENCH_ROUNDS")) { /* each round's median */
            int64_t *c = malloc((size_t)k * sizeof *c);
            if (c)
                memcpy(c, (tcp ? tv : rv) + at, (size_t)k * sizeof *c);
            fprintf(stderr, "round %d %s: %.2f us\n", r / 2, tcp ? "tcp" : "remote",
                    c ? median_us(c, k) : 0.0);
            free(c);
        }
    }
    return rc;
}

static int remote_vs_tcp(uint64_t n, double *ratio, int loaded)
{
    mig_link m = {NULL, NULL, 0};
    bench_tcp t = {-1, -1};
    int64_t k = n / VS_ROUNDS < 2 ? 2 : (int64_t)(n / VS_ROUNDS), all = k * VS_ROUNDS;
    int64_t *rv = calloc((size_t)all, sizeof *rv), *tv = calloc((size_t)all, sizeof *tv);
    if (loaded)
        bench_burners_start(0);
    int rc = rv && tv ? mig_open(&m) : TL_ENOMEM;
    if (rc == TL_OK && bench_tcp_open(&t) != 0)
        rc = TL_EIO;
    if (rc == TL_OK)
        rc = vs_rounds(&m, &t, k, rv, tv);
    bench_tcp_close(&t);
    rc = mig_close(&m, rc);
    if (loaded)
        bench_burners_stop();
    if (rc == TL_OK) {
        const char *name = loaded ? "remote_vs_tcp_loaded" : "remote_vs_tcp";
        double r = median_us(rv, all), c = median_us(tv, all);
        printf("{\"name\": \"%s_remote_us\", \"value\": %.2f, \"unit\": \"us/msg\"}\n"
               "{\"name\": \"%s_tcp_us\", \"value\": %.2f, \"unit\": \"us/round trip\"}\n",
               name, r, name, c);
        *ratio = r / c;
    }
    free(rv);
    free(tv);
    return rc;
}

static int measure_vs_tcp(uint64_t n, double *ratio) { return remote_vs_tcp(n, ratio, 0); }
static int measure_vs_tcp_loaded(uint64_t n, double *ratio) { return remote_vs_tcp(n, ratio, 1); }

/* ------------------------------------------------------------------------
 * Driver
 * --------------------------------------------------------------------- */
typedef struct bench {
    const char *name;
    const char *unit;
    uint64_t n;                                 /* operations, full run  */
    rep_fn rep;                                 /* timed: best of REPS   */
    int (*measure)(uint64_t n, double *value); /* otherwise: measured once */
} bench;

static const bench benches[] = {
    {"yield", "ns/switch", 5000000, rep_yield, NULL},
    {"chan_pingpong", "ns/msg", 2500000, rep_pingpong, NULL},
    {"chan_buffered", "ns/msg", 5000000, rep_buffered, NULL},
    {"spawn", "ns/tasklet", 2000000, rep_spawn, NULL},
    {"call_return", "ns/call", 5000000, rep_call, NULL},
    {"select", "ns/select", 1 << 17, rep_select, NULL},
    {"blocked_tasklet_bytes", "bytes/tasklet", 1000000, NULL, measure_blocked_bytes},
    {"checkpoint_full_1m", "s", 1000000, NULL, measure_ckpt_full},
    {"checkpoint_incr_1pct", "s", 1000000, NULL, measure_ckpt_incr},
    {"checkpoint_incr_idle_1m", "s", 1000000, NULL, measure_incr_idle},
    {"checkpoint_incr_highids", "s", 200000, NULL, measure_incr_highids},
    {"checkpoint_node_rows_100k", "us/checkpoint", 100000, NULL, bench_ckpt_node_rows},
    {"restore_1m", "s", 1000000, NULL, measure_restore},
    {"snapshot_bytes_per_tasklet", "bytes/tasklet", 1000000, NULL, measure_snap_bytes},
    {"migrate_rtt_us", "us/round trip", 20000, NULL, measure_migrate_rtt},
    {"migrate_throughput", "tasklets/s", 100000, NULL, measure_migrate_throughput},
    {"migrate_rtt_1mib_us", "us/round trip", 500, NULL, measure_migrate_1mib},
    {"migrate_mb_per_s", "MB/s", 500, NULL, measure_migrate_mb},
    {"remote_chan_msg_us", "us/msg", 20000, NULL, measure_remote_msg},
    {"remote_chan_pingpong_us", "us/round trip", 20000, NULL, measure_remote_chan},
    {"tcp_pingpong_us", "us/round trip", 20000, NULL, bench_tcp_pingpong},
    {"remote_chan_msg_loaded_us", "us/msg", 5000, NULL, measure_remote_msg_loaded},
    {"remote_chan_pingpong_loaded_us", "us/round trip", 5000, NULL, measure_remote_chan_loaded},
    {"tcp_pingpong_loaded_us", "us/round trip", 5000, NULL, bench_tcp_pingpong_loaded},
    {"remote_vs_tcp_ratio", "remote/TCP", 20000, NULL, measure_vs_tcp},
    {"remote_vs_tcp_loaded_ratio", "remote/TCP", 10000, NULL, measure_vs_tcp_loaded},
    /* the floor under a large transfer (bench_prim.c): one pass over 1 MiB */
    {"aead_aes256gcm_mib_us", "us/MiB sealed and opened", 200, NULL, bench_aead_aes},
    {"aead_chacha20_mib_us", "us/MiB sealed and opened", 200, NULL, bench_aead_chacha},
    {"crc32_mib_us", "us/MiB", 200, NULL, bench_crc32_mib},
    {"memcpy_mib_us", "us/MiB", 200, NULL, bench_memcpy_mib},
    {"memcpy_fresh_mib_us", "us/MiB", 200, NULL, bench_memcpy_fresh_mib},
    /* durable workflows (bench_wf.c) */
    {"disk_fsync_per_s", "commits/s", 500, NULL, bench_disk_fsync},
    {"wf_step_fsync_per_s", "steps/s", 10000, NULL, bench_wf_step_fsync},
    {"wf_step_nosync_per_s", "steps/s", 10000, NULL, bench_wf_step_nosync},
    {"wf_step_conc_per_s", "steps/s", 5000, NULL, bench_wf_step_conc},
    {"sqlite_nosync_commit_per_s", "commits/s", 5000, NULL, bench_sqlite_nosync},
    {"wf_pool_step_fsync_per_s", "steps/s", 2000, NULL, bench_wf_pool_fsync},
    {"wf_pool_step_nosync_per_s", "steps/s", 5000, NULL, bench_wf_pool_nosync},
    {"wf_pool_step_conc_per_s", "steps/s", 5000, NULL, bench_wf_pool_conc},
    {"wf_resume_first_step_ms", "ms", 10000, NULL, bench_wf_resume},
    {"wf_resume_first_step_cpu_ms", "ms", 10000, NULL, bench_wf_resume_cpu},
    {"wf_start_waiting_per_s", "workflows/s", 100000, NULL, bench_wf_start},
    {"wf_message_latency_ms", "ms", 200, NULL, bench_wf_message_latency},
    {"wf_step_fsync_idle_per_s", "steps/s", 100000, NULL, bench_wf_step_idle},
    {"wf_step_fsync_idle_ratio", "idle/alone", 100000, NULL, bench_wf_step_idle_ratio},
    {"wf_stored_bytes_done", "bytes/workflow", 1000, NULL, bench_wf_bytes_done},
    {"wf_stored_bytes_waiting", "bytes/workflow", 1000, NULL, bench_wf_bytes_waiting},
};

static int run_bench(const bench *b, int quick, uint64_t n_override)
{
    uint64_t n = n_override ? n_override : quick ? b->n / QUICK_DIVISOR : b->n;
    double value = 0;
    int rc = b->rep ? best_of(b->rep, n, &value) : b->measure(n, &value);
    if (rc != TL_OK) {
        fprintf(stderr, "tl-bench: benchmark %s failed\n", b->name);
        return rc;
    }
    printf("{\"name\": \"%s\", \"value\": %.*f, \"unit\": \"%s\"}\n", b->name,
           strcmp(b->unit, "s") == 0 ? 6 : 2, value, b->unit);
    fflush(stdout);
    return TL_OK;
}

static int usage(FILE *to)
{
    fprintf(to, "usage: tl-bench [--quick] [-n N] [NAME]\n"
                "  NAME     run only the benchmarks whose name contains NAME\n"
                "  --quick  small iteration counts, for a smoke test\n"
                "  -n N     N operations instead of each benchmark's own count\n"
                "benchmarks:");
    for (size_t i = 0; i < TL_COUNTOF(benches); i++)
        fprintf(to, " %s", benches[i].name);
    fprintf(to, "\n");
    return to == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    int quick = 0, ran = 0, failed = 0;
    uint64_t n = 0;
    const char *pattern = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc && atoll(argv[i + 1]) > 0)
            n = (uint64_t)atoll(argv[++i]);
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return usage(stdout);
        else if (argv[i][0] == '-' || pattern)
            return usage(stderr);
        else
            pattern = argv[i];
    }
    for (size_t i = 0; i < TL_COUNTOF(benches); i++) {
        if (pattern && !strstr(benches[i].name, pattern))
            continue;
        ran++;
        failed += run_bench(&benches[i], quick, n) != TL_OK;
    }
    if (!ran) {
        fprintf(stderr, "tl-bench: no benchmark matches '%s'\n", pattern);
        return usage(stderr);
    }
    return failed ? 1 : 0;
}
