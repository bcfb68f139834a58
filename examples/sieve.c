/*
 * sieve.c -- the concurrent prime sieve (Doug McIlroy's, made famous by
 * Newsqueak and Go), on libtasklet.
 *
 * A generator tasklet sends 2, 3, 4, ... down an unbuffered channel.  The
 * main tasklet receives the first number, which is prime, prints it, and
 * spawns a filter tasklet that passes on only the numbers the prime does
 * not divide; the filter's output is the next number source.  Every prime
 * found adds one filter to the pipeline.
 *
 * What it shows: tasklet functions with a locals schema, spawning from
 * inside a tasklet with arguments (a prefix of the locals struct), channel
 * references owned by frames, and a clean shutdown that travels upstream:
 * when the main tasklet has enough primes it closes its input and fails
 * the tasklet waiting on it (tl_chan_close + tl_chan_fail_waiters); each
 * filter catches the TL_ECLOSED this gives its next send (tl_frame_catch),
 * does the same to its own input, and returns.  Every tasklet ends, so
 * tl_run returns TL_OK and the runtime frees without leaks.
 *
 *   usage: sieve [N]      prints the first N primes (default 20)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "tasklet.h"

#define MAX_PRIMES 100000

/* Ends the stream on ch: no new blocking operation on it succeeds, and
 * whoever already waits on it gets TL_ECLOSED now. */
static int shut_down(tl_chan *ch, const char *why)
{
    int rc = tl_chan_close(ch);
    return rc != TL_OK ? rc : tl_chan_fail_waiters(ch, TL_ECLOSED, why);
}

/* ---- generator: 2, 3, 4, ... on out, until out is shut down ---- */

typedef struct {
    tl_chan *out; /* argument */
    int64_t n;
} gen_t;

static const tl_field gen_fields[] = {
    TL_FIELD(gen_t, out, TL_T_CHAN),
    TL_FIELD(gen_t, n, TL_T_I64),
};

static tl_status gen_step(tl_frame *f, void *locals)
{
    gen_t *L = locals;
    int err;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    for (L->n = 2;; L->n++) {
        TL_SEND(f, L->out, tl_i64(L->n));
        if ((err = tl_frame_error(f)) == TL_ECLOSED)
            break;
        if (err != TL_OK)
            TL_FAIL(f, err, tl_frame_errmsg(f));
    }
    TL_END(f);
}

static const tl_func gen_fn = {
    "sieve.generate", 1, gen_step, sizeof(gen_t),
    gen_fields, TL_COUNTOF(gen_fields), NULL,
};

/* ---- filter: passes on from in to out what prime does not divide ---- */

typedef struct {
    int64_t prime; /* arguments: prime, in, out */
    tl_chan *in, *out;
    tl_value v;
} filter_t;

static const tl_field filter_fields[] = {
    TL_FIELD(filter_t, prime, TL_T_I64),
    TL_FIELD(filter_t, in, TL_T_CHAN),
    TL_FIELD(filter_t, out, TL_T_CHAN),
    TL_FIELD(filter_t, v, TL_T_VALUE),
};

static tl_status filter_step(tl_frame *f, void *locals)
{
    filter_t *L = locals;
    int err;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    for (;;) {
        TL_RECV(f, L->in, L->v);
        if ((err = tl_frame_error(f)) != TL_OK)
            break;
        if (tl_as_i64(L->v) % L->prime == 0)
            continue;
        TL_SEND(f, L->out, L->v);
        if ((err = tl_frame_error(f)) != TL_OK)
            break;
    }
    if (err != TL_ECLOSED)
        TL_FAIL(f, err, tl_frame_errmsg(f));
    if ((err = shut_down(L->in, "sieve: downstream filter finished")) != TL_OK)
        TL_FAIL(f, err, "sieve: cannot shut down a filter's input");
    TL_END(f);
}

static const tl_func filter_fn = {
    "sieve.filter", 1, filter_step, sizeof(filter_t),
    filter_fields, TL_COUNTOF(filter_fields), NULL,
};

/* ---- main tasklet: takes primes from the end of the pipeline ---- */

typedef struct {
    int64_t count; /* arguments: count, in */
    tl_chan *in;
    int64_t found;
    tl_value v;
} sieve_t;

static const tl_field sieve_fields[] = {
    TL_FIELD(sieve_t, count, TL_T_I64),
    TL_FIELD(sieve_t, in, TL_T_CHAN),
    TL_FIELD(sieve_t, found, TL_T_I64),
    TL_FIELD(sieve_t, v, TL_T_VALUE),
};

/* Appends a filter for prime to the pipeline whose end is *in, and makes
 * the filter's output the new end.  *in is a CHAN field of the caller's
 * locals and owns a reference: the spawned filter retains its own copy of
 * the old end, so ours is released, and the new channel's reference
 * (from tl_chan_new) moves into *in. */
static int add_filter(tl_runtime *rt, int64_t prime, tl_chan **in)
{
    tl_chan *out;
    int rc = tl_chan_new(rt, 0, &out);
    if (rc != TL_OK)
        return rc;
    filter_t args = {prime, *in, out, {0}};
    rc = tl_spawn(rt, &filter_fn, &args, sizeof args, NULL);
    if (rc != TL_OK) {
        tl_chan_release(out);
        return rc;
    }
    tl_chan_release(*in);
    *in = out;
    return TL_OK;
}

static tl_status sieve_step(tl_frame *f, void *locals)
{
    sieve_t *L = locals;
    tl_runtime *rt = tl_frame_runtime(f);
    int rc;
    TL_BEGIN(f);
    printf("primes:");
    for (L->found = 0; L->found < L->count; L->found++) {
        TL_RECV(f, L->in, L->v);
        printf(" %" PRId64, tl_as_i64(L->v));
        if (L->found + 1 < L->count &&
            (rc = add_filter(rt, tl_as_i64(L->v), &L->in)) != TL_OK)
            TL_FAIL(f, rc, tl_errmsg(rt));
    }
    printf("\n");
    if ((rc = shut_down(L->in, "sieve: enough primes")) != TL_OK)
        TL_FAIL(f, rc, "sieve: cannot shut down the pipeline");
    TL_END(f);
}

static const tl_func sieve_fn = {
    "sieve.main", 1, sieve_step, sizeof(sieve_t),
    sieve_fields, TL_COUNTOF(sieve_fields), NULL,
};

/* ---- host ---- */

static int parse_count(int argc, char **argv, int64_t *count)
{
    char *end;
    if (argc < 2) {
        *count = 20;
        return 0;
    }
    long long n = strtoll(argv[1], &end, 10);
    if (argc > 2 || end == argv[1] || *end || n < 1 || n > MAX_PRIMES)
        return -1;
    *count = n;
    return 0;
}

/* tl_errmsg if it describes rc, else the generic message for rc. */
static const char *errtext(const tl_runtime *rt, int rc)
{
    return tl_errcode(rt) == rc ? tl_errmsg(rt) : tl_strerror(rc);
}

static int fail(tl_runtime *rt, const char *what, int rc)
{
    fprintf(stderr, "sieve: %s: %s\n", what, errtext(rt, rc));
    tl_runtime_free(rt);
    return EXIT_FAILURE;
}

static int start(tl_runtime *rt, int64_t count)
{
    tl_chan *numbers;
    int rc = tl_chan_new(rt, 0, &numbers);
    if (rc != TL_OK)
        return rc;
    gen_t gen = {numbers, 0};
    sieve_t sieve = {count, numbers, 0, {0}};
    rc = tl_spawn(rt, &gen_fn, &gen, sizeof gen, NULL);
    if (rc == TL_OK)
        rc = tl_spawn(rt, &sieve_fn, &sieve, sizeof sieve, NULL);
    tl_chan_release(numbers); /* the tasklets hold their own references */
    return rc;
}

int main(int argc, char **argv)
{
    static const tl_func *const funcs[] = {&gen_fn, &filter_fn, &sieve_fn};
    tl_runtime *rt;
    int64_t count;
    int rc;
    if (parse_count(argc, argv, &count) != 0) {
        fprintf(stderr, "usage: sieve [N]   (1 <= N <= %d, default 20)\n", MAX_PRIMES);
        return 2;
    }
    if ((rc = tl_runtime_new(NULL, &rt)) != TL_OK) {
        fprintf(stderr, "sieve: tl_runtime_new: %s\n", tl_strerror(rc));
        return EXIT_FAILURE;
    }
    for (size_t i = 0; i < TL_COUNTOF(funcs); i++)
        if ((rc = tl_register(rt, funcs[i])) != TL_OK)
            return fail(rt, "tl_register", rc);
    if ((rc = start(rt, count)) != TL_OK)
        return fail(rt, "start", rc);
    if ((rc = tl_run(rt)) != TL_OK)
        return fail(rt, "tl_run", rc);
    tl_runtime_free(rt);
    return EXIT_SUCCESS;
}
