/*
 * test_store_alloc.c -- checkpoints under the counting allocator and under
 * allocation failures (issue 11, item 11).
 *
 * A runtime whose allocator counts bytes must get back every byte it gave,
 * with the size it gave, across incremental checkpoints whose dirty sets
 * shrink and grow; and a checkpoint whose Nth allocation fails, for every
 * N, fails cleanly with TL_ENOMEM (or succeeds), after which the next
 * checkpoint succeeds and restores to the same runtime.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tasklet.h"
#define STORETEST_PREFIX "tl-stalloc"
#include "storetest.h"
#include "testutil.h"

#define TASKLETS 700 /* three chunks of 256 ids */

typedef struct { tl_chan *in; tl_value v; } rx_t;
static const tl_field rx_fields[] = {
    TL_FIELD(rx_t, in, TL_T_CHAN), TL_FIELD(rx_t, v, TL_T_VALUE),
};

static tl_status receiver(tl_frame *f, void *locals)
{
    rx_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    TL_END(f);
}
static const tl_func receiver_fn = {"stalloc.receiver", 1, receiver, sizeof(rx_t), rx_fields,
                                    TL_COUNTOF(rx_fields), NULL};

static tl_runtime *new_rt(count_alloc *ca)
{
    tl_config cfg = count_config(ca);
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(&cfg, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    return rt;
}

static tl_store *open_attached(tl_runtime *rt)
{
    return attach_at(rt, TL_STORE_NOSYNC);
}

/* TASKLETS receivers blocked on one named channel; *ch gets it. */
static tl_tasklet **populate(tl_runtime *rt, tl_chan **ch, int n)
{
    tl_tasklet **t = calloc((size_t)n, sizeof *t);
    assert_non_null(t);
    assert_int_equal(tl_chan_new(rt, 0, ch), TL_OK);
    assert_int_equal(tl_chan_set_name(*ch, "in"), TL_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(tl_spawn(rt, &receiver_fn, &(rx_t){.in = *ch}, sizeof(rx_t), &t[i]),
                         TL_OK);
    assert_int_equal(tl_run_steps(rt, (uint64_t)n, NULL), TL_OK);
    assert_int_equal(tl_blocked_count(rt), (size_t)n);
    return t;
}

static void remove_store(void)
{
    const char *suffix[] = {"", "-wal", "-shm", "-lock"};
    char p[160];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
}

/* Incremental checkpoints over changing dirty sets: every byte comes back
 * with the size it was allocated with (a free with another size shows as
 * live bytes left over). */
static void test_checkpoints_return_every_byte(void **state)
{
    (void)state;
    count_alloc ca = {0};
    tl_runtime *rt = new_rt(&ca);
    tl_chan *ch;
    tl_tasklet **t = populate(rt, &ch, TASKLETS);
    tl_store *st = open_attached(rt);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    for (int round = 0; round < 6; round++) {
        /* end tasklets in one chunk or several: the sets of changed and
         * emptied chunks differ from checkpoint to checkpoint */
        for (int i = round; i < TASKLETS; i += 97 + round * 61)
            if (tl_tasklet_state(t[i]) == TL_BLOCKED)
                assert_int_equal(tl_chan_try_send(ch, tl_i64(i)), TL_OK);
        assert_int_equal(tl_run_steps(rt, TASKLETS, NULL), TL_OK);
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
    }
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_chan_release(ch);
    tl_runtime_free(rt);
    free(t);
    assert_int_equal(ca.live, 0);
}

/* One checkpoint (the first, full one, or an incremental one after a
 * change) whose (k+1)th allocation fails.  Returns 1 if it succeeded all
 * the same (k is past its last allocation).  Either way no byte leaks and
 * the store restores every tasklet. */
static int checkpoint_failing_at(int64_t k, int incremental)
{
    count_alloc ca = {0};
    tl_runtime *rt = new_rt(&ca);
    tl_chan *ch;
    tl_tasklet **t = populate(rt, &ch, 300);
    tl_store *st = open_attached(rt);
    if (incremental) {
        assert_int_equal(tl_store_checkpoint(st), TL_OK);
        assert_int_equal(tl_chan_try_send(ch, tl_i64(1)), TL_OK);
        assert_int_equal(tl_run_steps(rt, 10, NULL), TL_OK);
    }
    ca.fail_at = (int64_t)ca.seen + k;
    int rc = tl_store_checkpoint(st);
    ca.fail_at = -1;
    if (rc != TL_OK) {
        if (rc != TL_ENOMEM)
            fail_msg("allocation %lld failed: %s (%s)", (long long)k, tl_strerror(rc),
                     tl_store_errmsg(st));
        assert_int_equal(tl_store_checkpoint(st), TL_OK); /* the next one works */
    }
    size_t live = tl_tasklet_count(rt);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_chan_release(ch);
    tl_runtime_free(rt);
    free(t);
    if (ca.live != 0)
        fail_msg("%s checkpoint failing at allocation %lld (%s): %lld bytes not freed",
                 incremental ? "an incremental" : "the first", (long long)k,
                 rc == TL_OK ? "succeeded" : "failed", (long long)ca.live);

    count_alloc cb = {0};
    tl_runtime *back = new_rt(&cb);
    st = open_attached(back);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(back), live);
    assert_int_equal(tl_store_close(st), TL_OK);
    tl_runtime_free(back);
    assert_int_equal(cb.live, 0);
    remove_store();
    return rc == TL_OK;
}

static void test_checkpoint_allocation_failures(void **state)
{
    (void)state;
    for (int incremental = 0; incremental <= 1; incremental++) {
        int64_t k = 0;
        while (!checkpoint_failing_at(k, incremental))
            assert_true(++k < 100000);
        assert_true(k > 0); /* a checkpoint allocates */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_checkpoints_return_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
