/*
 * test_core_only.c -- a program that uses only the core API (runtime,
 * spawn, channels, run) links against libtasklet-core alone: meson links
 * it without SQLite, msgpack-c, zlib or libsodium (tests/meson.build), so
 * a core object that reached into persist/ or migrate/ would fail the
 * link.  tests/check_core_only.sh then checks the binary with ldd and nm.
 *
 * The program itself: a producer sends 1..N over an unbuffered channel, a
 * consumer sums them and returns the sum; the host reads the result.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "tasklet.h"

#define N 1000

typedef struct { tl_chan *ch; int64_t i; } producer_t;
static const tl_field producer_fields[] = {
    TL_FIELD(producer_t, ch, TL_T_CHAN), TL_FIELD(producer_t, i, TL_T_I64),
};

static tl_status producer(tl_frame *f, void *locals)
{
    producer_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 1; L->i <= N; L->i++)
        TL_SEND(f, L->ch, tl_i64(L->i));
    tl_chan_close(L->ch);
    TL_END(f);
}
static const tl_func producer_fn = {"core_only.producer", 1, producer, sizeof(producer_t),
                                    producer_fields, TL_COUNTOF(producer_fields), NULL};

typedef struct { tl_chan *ch; tl_value v; int64_t sum, i; } consumer_t;
static const tl_field consumer_fields[] = {
    TL_FIELD(consumer_t, ch, TL_T_CHAN), TL_FIELD(consumer_t, v, TL_T_VALUE),
    TL_FIELD(consumer_t, sum, TL_T_I64), TL_FIELD(consumer_t, i, TL_T_I64),
};

static tl_status consumer(tl_frame *f, void *locals)
{
    consumer_t *L = locals;
    TL_BEGIN(f);
    for (L->i = 0; L->i < N; L->i++) {
        TL_RECV(f, L->ch, L->v);
        L->sum += tl_as_i64(L->v);
        TL_YIELD(f);
    }
    TL_RETURN(f, tl_i64(L->sum));
    TL_END(f);
}
static const tl_func consumer_fn = {"core_only.consumer", 1, consumer, sizeof(consumer_t),
                                    consumer_fields, TL_COUNTOF(consumer_fields), NULL};

static void spawn_send_receive_run(void **state)
{
    (void)state;
    tl_runtime *rt = NULL;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &producer_fn), TL_OK);
    assert_int_equal(tl_register(rt, &consumer_fn), TL_OK);
    tl_chan *ch = NULL;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    producer_t p = {ch, 0};
    consumer_t c = {ch, {0}, 0, 0};
    tl_tasklet *t = NULL;
    assert_int_equal(tl_spawn(rt, &producer_fn, &p, sizeof p, NULL), TL_OK);
    assert_int_equal(tl_spawn(rt, &consumer_fn, &c, sizeof c, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    tl_value sum = {0};
    assert_int_equal(tl_tasklet_result(t, &sum), TL_OK);
    assert_int_equal(tl_as_i64(sum), (int64_t)N * (N + 1) / 2);
    assert_true(tl_chan_closed(ch));
    tl_tasklet_release(t);
    tl_chan_release(ch);
    assert_int_equal(tl_runtime_free(rt), TL_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spawn_send_receive_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
