/*
 * test_value.c -- tl_value: scalars that never allocate, reference-counted
 * strings, binaries, arrays and maps, equality, conversions, error values,
 * and channel/tasklet references.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tasklet.h"
#include "testutil.h"

static count_alloc ca;

static int setup(void **state)
{
    tl_runtime *rt;
    tl_config cfg = count_config(&ca);
    memset(&ca, 0, sizeof ca);
    ca.fail_at = -1;
    if (tl_runtime_new(&cfg, &rt) != TL_OK)
        return -1;
    *state = rt;
    return 0;
}

static int teardown(void **state)
{
    tl_runtime_free(*state);
    assert_int_equal(ca.live, 0);
    return 0;
}

static void test_scalars_do_not_allocate(void **state)
{
    (void)state;
    uint64_t before = ca.allocs;
    tl_value v[] = {tl_nil(), tl_bool(5), tl_i64(-3), tl_u64(UINT64_MAX), tl_f64(2.5)};
    for (size_t i = 0; i < TL_COUNTOF(v); i++) {
        tl_value c = tl_retain(v[i]);
        assert_true(tl_equal(c, v[i]));
        tl_release(c);
    }
    assert_int_equal(ca.allocs, before);
    assert_int_equal(sizeof(tl_value), 16);
    assert_int_equal(tl_type(v[0]), TL_V_NIL);
    assert_int_equal(tl_type(v[1]), TL_V_BOOL);
    assert_int_equal(tl_as_bool(v[1]), 1);
    assert_int_equal(tl_as_i64(v[2]), -3);
    assert_true(tl_as_u64(v[3]) == UINT64_MAX);
    assert_true(tl_as_f64(v[4]) == 2.5);
    /* conversions between numbers */
    assert_int_equal(tl_as_i64(tl_f64(7.9)), 7);
    assert_true(tl_as_f64(tl_i64(-2)) == -2.0);
    assert_int_equal(tl_as_u64(tl_f64(-1.0)), 0);
    assert_int_equal(tl_as_bool(tl_nil()), 0);
    assert_int_equal(tl_as_i64(tl_nil()), 0);
    assert_false(tl_equal(tl_i64(1), tl_u64(1))); /* types differ */
}

static void test_strings_refcounted(void **state)
{
    tl_runtime *rt = *state;
    tl_value s, b, t;
    size_t n;
    int64_t base = ca.live;
    assert_int_equal(tl_str_new(rt, "hello", 5, &s), TL_OK);
    assert_int_equal(tl_type(s), TL_V_STR);
    assert_string_equal(tl_str_data(s, &n), "hello");
    assert_int_equal(n, 5);
    assert_int_equal(tl_len(s), 5);
    assert_true(ca.live > base);
    tl_value c = tl_retain(s);
    tl_release(s);
    assert_string_equal(tl_str_data(c, NULL), "hello"); /* still alive */
    tl_release(c);
    assert_int_equal(ca.live, base);

    unsigned char raw[4] = {0, 1, 0, 255};
    assert_int_equal(tl_bin_new(rt, raw, sizeof raw, &b), TL_OK);
    assert_int_equal(tl_type(b), TL_V_BIN);
    assert_memory_equal(tl_str_data(b, &n), raw, 4);
    assert_int_equal(n, 4);
    assert_int_equal(tl_str_new(rt, "", 0, &t), TL_OK);
    assert_int_equal(tl_len(t), 0);
    assert_string_equal(tl_str_data(t, NULL), "");
    assert_null(tl_str_data(tl_i64(1), &n));
    assert_int_equal(n, 0);
    tl_release(b);
    tl_release(t);
    assert_int_equal(tl_str_new(rt, NULL, 3, &t), TL_EINVAL);
}

static void test_arrays_and_maps(void **state)
{
    tl_runtime *rt = *state;
    tl_value s, arr, arr2, map, got;
    int64_t base = ca.live;
    assert_int_equal(tl_str_new(rt, "k", 1, &s), TL_OK);
    tl_value items[] = {tl_i64(1), s, tl_f64(0.5)};
    assert_int_equal(tl_array_new(rt, items, 3, &arr), TL_OK);
    assert_int_equal(tl_array_new(rt, items, 3, &arr2), TL_OK);
    tl_release(s); /* arrays hold their own references */
    assert_int_equal(tl_len(arr), 3);
    assert_int_equal(tl_as_i64(tl_array_at(arr, 0)), 1);
    assert_string_equal(tl_str_data(tl_array_at(arr, 1), NULL), "k");
    assert_int_equal(tl_type(tl_array_at(arr, 3)), TL_V_NIL);
    assert_true(tl_equal(arr, arr2));

    tl_value kv[] = {tl_array_at(arr, 1), arr, tl_i64(2), tl_bool(1)};
    assert_int_equal(tl_map_new(rt, kv, 2, &map), TL_OK);
    assert_int_equal(tl_len(map), 2);
    assert_true(tl_map_get(map, tl_i64(2), &got));
    assert_int_equal(tl_as_bool(got), 1);
    assert_true(tl_map_get(map, tl_array_at(arr2, 1), &got)); /* equal string key */
    assert_true(tl_equal(got, arr));
    assert_false(tl_map_get(map, tl_i64(3), &got));
    assert_true(tl_equal(tl_map_key(map, 1), tl_i64(2)));
    assert_true(tl_equal(tl_map_val(map, 0), arr2));
    tl_release(arr);
    tl_release(arr2);
    assert_true(ca.live > base); /* the map keeps arr alive */
    tl_release(map);
    assert_int_equal(ca.live, base);
}

static void test_error_values(void **state)
{
    tl_runtime *rt = *state;
    tl_value e = tl_error_value(rt, TL_EUSER - 3, "bad thing");
    assert_int_equal(tl_type(e), TL_V_ERROR);
    assert_int_equal(tl_error_code(e), TL_EUSER - 3);
    assert_string_equal(tl_error_msg(e), "bad thing");
    tl_release(e);
    tl_value e2 = tl_error_value(rt, TL_ECLOSED, NULL);
    assert_int_equal(tl_error_code(e2), TL_ECLOSED);
    assert_null(tl_error_msg(e2));
    assert_int_equal(tl_error_code(tl_i64(1)), TL_OK);
    /* a non-negative code is not an error code */
    tl_value e3 = tl_error_value(rt, 5, NULL);
    assert_int_equal(tl_error_code(e3), TL_EINVAL);
}

static void test_chan_and_tasklet_refs(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    tl_value v = tl_chan_value(ch);
    assert_int_equal(tl_type(v), TL_V_CHAN);
    assert_ptr_equal(tl_as_chan(v), ch);
    assert_null(tl_as_tasklet(v));
    tl_chan_release(ch);                 /* the value keeps it alive */
    assert_int_equal(tl_chan_id(tl_as_chan(v)), 1);
    tl_value w = tl_retain(v);
    assert_true(tl_equal(v, w));
    tl_release(v);
    tl_release(w);                       /* now it is gone */
    assert_int_equal(tl_chan_id(ch), 0); /* stale handle detected */
    assert_int_equal(tl_type(tl_chan_value(NULL)), TL_V_NIL);
    assert_int_equal(tl_type(tl_tasklet_value(NULL)), TL_V_NIL);
}

static void test_alloc_failure(void **state)
{
    tl_runtime *rt = *state;
    tl_value v;
    ca.fail_at = (int64_t)ca.seen;
    assert_int_equal(tl_str_new(rt, "x", 1, &v), TL_ENOMEM);
    assert_int_equal(tl_errcode(rt), TL_ENOMEM);
    ca.fail_at = (int64_t)ca.seen;
    assert_int_equal(tl_array_new(rt, &v, 0, &v), TL_ENOMEM);
    ca.fail_at = (int64_t)ca.seen;
    tl_value e = tl_error_value(rt, TL_EUSER, "msg"); /* degrades: no message */
    assert_int_equal(tl_error_code(e), TL_EUSER);
    assert_null(tl_error_msg(e));
    ca.fail_at = -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scalars_do_not_allocate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strings_refcounted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arrays_and_maps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chan_and_tasklet_refs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
