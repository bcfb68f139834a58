/*
 * pipeline.c -- producer -> transformer -> consumer over buffered channels,
 * driven by a host loop in bounded slices.
 *
 * The producer sends the numbers 1..N on a buffered channel.  The
 * transformer turns each number into a string value ("item-00042:1764",
 * the number and its square) by calling a nested tasklet function
 * (TL_CALL), and sends the strings on a second buffered channel.  The
 * consumer counts them and folds their bytes into an FNV-1a checksum.
 * End of stream is a close: the sender closes its output and wakes a
 * receiver already waiting on it with TL_ECLOSED (tl_chan_close +
 * tl_chan_fail_waiters); a receiver drains what is buffered first, then
 * gets TL_ECLOSED from TL_RECV and catches it (tl_frame_catch).
 *
 * What it shows: buffered channels; nested calls and return values;
 * reference-counted string values crossing a channel; tasklet handles and
 * tl_tasklet_result; and the embedding loop a host event loop would use:
 * tl_run_steps (at most K resumptions per slice) with tl_runnable_count
 * and tl_next_deadline to tell "more to do" from "finished" and "stuck".
 *
 *   usage: pipeline [N]    N items (default 1000)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "tasklet.h"

#define CAPACITY 16
#define SLICE 64
#define MAX_ITEMS 10000000

/* Ends the stream on ch: see the head comment. */
static int shut_down(tl_chan *ch)
{
    int rc = tl_chan_close(ch);
    return rc != TL_OK ? rc : tl_chan_fail_waiters(ch, TL_ECLOSED, "end of stream");
}

/* ---- producer: 1..count on out, then close out; returns count ---- */

typedef struct {
    tl_chan *out; /* arguments: out, count */
    int64_t count;
    int64_t i;
} producer_t;

static const tl_field producer_fields[] = {
    TL_FIELD(producer_t, out, TL_T_CHAN),
    TL_FIELD(producer_t, count, TL_T_I64),
    TL_FIELD(producer_t, i, TL_T_I64),
};

static tl_status producer_step(tl_frame *f, void *locals)
{
    producer_t *L = locals;
    int rc;
    TL_BEGIN(f);
    for (L->i = 1; L->i <= L->count; L->i++)
        TL_SEND(f, L->out, tl_i64(L->i));
    if ((rc = shut_down(L->out)) != TL_OK)
        TL_FAIL(f, rc, "producer: cannot close its output");
    TL_RETURN(f, tl_i64(L->count));
    TL_END(f);
}

static const tl_func producer_fn = {
    "pipeline.produce", 1, producer_step, sizeof(producer_t),
    producer_fields, TL_COUNTOF(producer_fields), NULL,
};

/* ---- format: a nested function returning "item-NNNNN:SQUARE" ---- */

typedef struct {
    int64_t n; /* argument */
    tl_value s;
} format_t;

static const tl_field format_fields[] = {
    TL_FIELD(format_t, n, TL_T_I64),
    TL_FIELD(format_t, s, TL_T_VALUE),
};

static tl_status format_step(tl_frame *f, void *locals)
{
    format_t *L = locals;
    tl_runtime *rt = tl_frame_runtime(f);
    char buf[64];
    int len, rc;
    TL_BEGIN(f);
    len = snprintf(buf, sizeof buf, "item-%05" PRId64 ":%" PRId64, L->n, L->n * L->n);
    if ((rc = tl_str_new(rt, buf, (size_t)len, &L->s)) != TL_OK)
        TL_FAIL(f, rc, tl_errmsg(rt));
    /* The caller gets a retained copy; L->s is released when we pop. */
    TL_RETURN(f, L->s);
    TL_END(f);
}

static const tl_func format_fn = {
    "pipeline.format", 1, format_step, sizeof(format_t),
    format_fields, TL_COUNTOF(format_fields), NULL,
};

/* ---- transformer: numbers from in, strings to out; returns count ---- */

typedef struct {
    tl_chan *in, *out; /* arguments */
    int64_t count;
    tl_value v, s;
} transformer_t;

static const tl_field transformer_fields[] = {
    TL_FIELD(transformer_t, in, TL_T_CHAN),
    TL_FIELD(transformer_t, out, TL_T_CHAN),
    TL_FIELD(transformer_t, count, TL_T_I64),
    TL_FIELD(transformer_t, v, TL_T_VALUE),
    TL_FIELD(transformer_t, s, TL_T_VALUE),
};

static tl_status transformer_step(tl_frame *f, void *locals)
{
    transformer_t *L = locals;
    int rc;
    TL_BEGIN(f);
    tl_frame_catch(f, 1); /* end of input arrives as TL_ECLOSED */
    for (;;) {
        TL_RECV(f, L->in, L->v);
        if ((rc = tl_frame_error(f)) == TL_ECLOSED)
            break;
        if (rc != TL_OK)
            TL_FAIL(f, rc, tl_frame_errmsg(f));
        TL_CALL(f, &format_fn, L->s, &(format_t){.n = tl_as_i64(L->v)});
        if ((rc = tl_frame_error(f)) != TL_OK)
            TL_FAIL(f, rc, tl_frame_errmsg(f));
        TL_SEND(f, L->out, L->s);
        if ((rc = tl_frame_error(f)) != TL_OK)
            TL_FAIL(f, rc, tl_frame_errmsg(f));
        L->count++;
    }
    if ((rc = shut_down(L->out)) != TL_OK)
        TL_FAIL(f, rc, "transformer: cannot close its output");
    TL_RETURN(f, tl_i64(L->count));
    TL_END(f);
}

static const tl_func transformer_fn = {
    "pipeline.transform", 1, transformer_step, sizeof(transformer_t),
    transformer_fields, TL_COUNTOF(transformer_fields), NULL,
};

/* ---- consumer: returns [count, bytes, checksum] ---- */

typedef struct {
    tl_chan *in; /* argument */
    int64_t count, bytes;
    uint64_t hash;
    tl_value v, result;
} consumer_t;

static const tl_field consumer_fields[] = {
    TL_FIELD(consumer_t, in, TL_T_CHAN),
    TL_FIELD(consumer_t, count, TL_T_I64),
    TL_FIELD(consumer_t, bytes, TL_T_I64),
    TL_FIELD(consumer_t, hash, TL_T_U64),
    TL_FIELD(consumer_t, v, TL_T_VALUE),
    TL_FIELD(consumer_t, result, TL_T_VALUE),
};

static uint64_t fnv1a(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h;
}

static tl_status consumer_step(tl_frame *f, void *locals)
{
    consumer_t *L = locals;
    tl_runtime *rt = tl_frame_runtime(f);
    size_t len;
    int rc;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    L->hash = 14695981039346656037ULL;
    for (;;) {
        TL_RECV(f, L->in, L->v);
        if ((rc = tl_frame_error(f)) == TL_ECLOSED)
            break;
        if (rc != TL_OK)
            TL_FAIL(f, rc, tl_frame_errmsg(f));
        const char *s = tl_str_data(L->v, &len); /* borrowed from L->v */
        L->hash = fnv1a(L->hash, s, len);
        L->bytes += (int64_t)len;
        L->count++;
    }
    tl_value items[] = {tl_i64(L->count), tl_i64(L->bytes), tl_u64(L->hash)};
    if ((rc = tl_array_new(rt, items, TL_COUNTOF(items), &L->result)) != TL_OK)
        TL_FAIL(f, rc, tl_errmsg(rt));
    TL_RETURN(f, L->result);
    TL_END(f);
}

static const tl_func consumer_fn = {
    "pipeline.consume", 1, consumer_step, sizeof(consumer_t),
    consumer_fields, TL_COUNTOF(consumer_fields), NULL,
};

/* ---- host ---- */

enum { PRODUCER, TRANSFORMER, CONSUMER, NSTAGES };

typedef struct {
    tl_runtime *rt;
    tl_tasklet *stage[NSTAGES]; /* handles owned by the host */
    uint64_t steps, slices;
} app;

/* tl_errmsg if it describes rc, else the generic message for rc. */
static const char *errtext(const tl_runtime *rt, int rc)
{
    return tl_errcode(rt) == rc ? tl_errmsg(rt) : tl_strerror(rc);
}

static int fail(app *a, const char *what, int rc)
{
    fprintf(stderr, "pipeline: %s: %s\n", what, errtext(a->rt, rc));
    return rc;
}

static int spawn_stages(app *a, int64_t count)
{
    tl_chan *numbers = NULL, *strings = NULL;
    int rc = tl_chan_new(a->rt, CAPACITY, &numbers);
    if (rc == TL_OK)
        rc = tl_chan_new(a->rt, CAPACITY, &strings);
    producer_t p = {numbers, count, 0};
    transformer_t t = {numbers, strings, 0, {0}, {0}};
    consumer_t c = {strings, 0, 0, 0, {0}, {0}};
    if (rc == TL_OK)
        rc = tl_spawn(a->rt, &producer_fn, &p, sizeof p, &a->stage[PRODUCER]);
    if (rc == TL_OK)
        rc = tl_spawn(a->rt, &transformer_fn, &t, sizeof t, &a->stage[TRANSFORMER]);
    if (rc == TL_OK)
        rc = tl_spawn(a->rt, &consumer_fn, &c, sizeof c, &a->stage[CONSUMER]);
    tl_chan_release(numbers); /* nil-safe; the tasklets hold their own */
    tl_chan_release(strings);
    return rc;
}

static const char *const stage_names[] = {"producer", "transformer", "consumer"};

/* Nothing is runnable and no timer is set, yet tasklets remain: say why.
 * (A stage that fails leaves its neighbours blocked; the host sees the
 * failure through its handle, the runtime frees the blocked ones.) */
static void report_stuck(app *a)
{
    fprintf(stderr, "pipeline: stuck, %zu tasklet(s) blocked\n", tl_blocked_count(a->rt));
    for (int i = 0; i < NSTAGES; i++) {
        int state = tl_tasklet_state(a->stage[i]);
        if (state == TL_FAILED || state == TL_KILLED)
            fprintf(stderr, "pipeline: the %s failed: %s (%s)\n", stage_names[i],
                    tl_strerror(tl_tasklet_error(a->stage[i])),
                    tl_errname(tl_tasklet_error(a->stage[i])));
    }
}

/* What a host event loop does on each turn: run a bounded slice, then
 * decide whether to come back now, at a timer deadline, or never. */
static int drive(app *a)
{
    int64_t deadline;
    for (;;) {
        uint64_t ran;
        int rc = tl_run_steps(a->rt, SLICE, &ran);
        a->steps += ran;
        a->slices++;
        if (rc != TL_OK)
            return fail(a, "tl_run_steps", rc);
        if (tl_runnable_count(a->rt) > 0)
            continue; /* a real loop would poll its other sources first */
        if (tl_next_deadline(a->rt, &deadline))
            continue; /* a real loop would wait until the deadline */
        if (tl_tasklet_count(a->rt) == 0)
            return TL_OK;
        report_stuck(a);
        return TL_EDEADLOCK;
    }
}

static int stage_result(app *a, int i, tl_value *out)
{
    int rc = tl_tasklet_result(a->stage[i], out);
    if (rc != TL_OK)
        fprintf(stderr, "pipeline: the %s did not return: %s\n", stage_names[i],
                tl_strerror(tl_tasklet_error(a->stage[i])));
    return rc;
}

static int report(app *a)
{
    tl_value produced = tl_nil(), transformed = tl_nil(), consumed = tl_nil();
    int rc = stage_result(a, PRODUCER, &produced);
    if (rc == TL_OK)
        rc = stage_result(a, TRANSFORMER, &transformed);
    if (rc == TL_OK)
        rc = stage_result(a, CONSUMER, &consumed);
    if (rc == TL_OK)
        printf("pipeline: produced %" PRId64 ", transformed %" PRId64
               ", consumed %" PRId64 " (%" PRId64 " bytes), checksum %016" PRIx64
               ", %" PRIu64 " steps in %" PRIu64 " slices\n",
               tl_as_i64(produced), tl_as_i64(transformed),
               tl_as_i64(tl_array_at(consumed, 0)), tl_as_i64(tl_array_at(consumed, 1)),
               tl_as_u64(tl_array_at(consumed, 2)), a->steps, a->slices);
    tl_release(produced);
    tl_release(transformed);
    tl_release(consumed);
    return rc;
}

static int parse_count(int argc, char **argv, int64_t *count)
{
    char *end;
    if (argc < 2) {
        *count = 1000;
        return 0;
    }
    long long n = strtoll(argv[1], &end, 10);
    if (argc > 2 || end == argv[1] || *end || n < 0 || n > MAX_ITEMS)
        return -1;
    *count = n;
    return 0;
}

static int run(app *a, int64_t count)
{
    static const tl_func *const funcs[] = {&producer_fn, &format_fn, &transformer_fn,
                                           &consumer_fn};
    int rc;
    for (size_t i = 0; i < TL_COUNTOF(funcs); i++)
        if ((rc = tl_register(a->rt, funcs[i])) != TL_OK)
            return fail(a, "tl_register", rc);
    if ((rc = spawn_stages(a, count)) != TL_OK)
        return fail(a, "spawn", rc);
    if ((rc = drive(a)) != TL_OK)
        return rc;
    return report(a);
}

int main(int argc, char **argv)
{
    app a = {0};
    int64_t count;
    int rc;
    if (parse_count(argc, argv, &count) != 0) {
        fprintf(stderr, "usage: pipeline [N]   (0 <= N <= %d, default 1000)\n", MAX_ITEMS);
        return 2;
    }
    if ((rc = tl_runtime_new(NULL, &a.rt)) != TL_OK) {
        fprintf(stderr, "pipeline: tl_runtime_new: %s\n", tl_strerror(rc));
        return EXIT_FAILURE;
    }
    rc = run(&a, count);
    for (int i = 0; i < NSTAGES; i++)
        tl_tasklet_release(a.stage[i]); /* NULL-safe */
    tl_runtime_free(a.rt);
    return rc == TL_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
