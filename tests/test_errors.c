/*
 * test_errors.c -- the error table and every error path a user can cause:
 * each returns its code with a message naming what failed, and never
 * aborts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tasklet.h"

static int setup(void **state)
{
    tl_runtime *rt;
    if (tl_runtime_new(NULL, &rt) != TL_OK)
        return -1;
    *state = rt;
    return 0;
}

static int teardown(void **state)
{
    tl_runtime_free(*state);
    return 0;
}

static void assert_err(tl_runtime *rt, int rc, int code, const char *needle)
{
    assert_int_equal(rc, code);
    assert_int_equal(tl_errcode(rt), code);
    if (needle && !strstr(tl_errmsg(rt), needle))
        fail_msg("message '%s' lacks '%s'", tl_errmsg(rt), needle);
}

typedef struct { tl_chan *ch; tl_value v; int64_t rc; } e_t;
static const tl_field e_fields[] = {
    TL_FIELD(e_t, ch, TL_T_CHAN), TL_FIELD(e_t, v, TL_T_VALUE), TL_FIELD(e_t, rc, TL_T_I64),
};

static tl_status sender(tl_frame *f, void *locals)
{
    e_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_SEND(f, L->ch, tl_i64(1));
    L->rc = tl_frame_error(f);
    TL_RETURN(f, tl_i64(L->rc));
    TL_END(f);
}
static const tl_func sender_fn = {"err.sender", 1, sender, sizeof(e_t), e_fields,
                                  TL_COUNTOF(e_fields), NULL};

static void test_table(void **state)
{
    (void)state;
    assert_string_equal(tl_strerror(TL_OK), "success");
    assert_string_equal(tl_strerror(TL_ECLOSED), "channel closed");
    assert_string_equal(tl_errname(TL_ECLOSED), "TL_ECLOSED");
    assert_string_equal(tl_errname(TL_EDEADLOCK), "TL_EDEADLOCK");
    assert_string_equal(tl_strerror(TL_EUSER - 9), "user error");
    assert_string_equal(tl_errname(TL_EUSER - 9), "TL_EUSER");
    assert_string_equal(tl_strerror(-99), "unknown error");
    /* every code has its own message */
    int codes[] = {
#define X(name, code, msg) TL_##name,
        TL_ERRNO_MAP(X)
#undef X
    };
    for (size_t i = 0; i < TL_COUNTOF(codes); i++) {
        assert_true(codes[i] < 0);
        assert_string_not_equal(tl_strerror(codes[i]), "unknown error");
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(codes[i], codes[j]);
    }
    assert_int_equal(tl_version_number(), TL_VERSION_NUMBER);
    assert_string_equal(tl_version_string(), TL_VERSION_STRING);
}

static void test_send_on_closed_channel(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    tl_tasklet *t;
    tl_value v;
    assert_int_equal(tl_register(rt, &sender_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_set_name(ch, "outbox"), TL_OK);
    assert_int_equal(tl_chan_close(ch), TL_OK);
    assert_true(tl_chan_closed(ch));
    e_t a = {.ch = ch};
    assert_int_equal(tl_spawn(rt, &sender_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), TL_ECLOSED);
    assert_non_null(strstr(tl_errmsg(rt), "'outbox'"));
    assert_err(rt, tl_chan_try_send(ch, tl_i64(1)), TL_ECLOSED, "closing");
    assert_err(rt, tl_chan_try_recv(ch, &v), TL_ECLOSED, "closed");
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

static void test_unknown_function(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t = NULL;
    assert_err(rt, tl_spawn_by_name(rt, "no.such", 3, NULL, 0, &t), TL_ENOFUNC, "no.such@3");
    assert_null(t);
    assert_err(rt, tl_spawn(rt, &sender_fn, NULL, 0, &t), TL_ENOFUNC, "err.sender");
    assert_null(tl_lookup(rt, "err.sender", 1));
    assert_int_equal(tl_register(rt, &sender_fn), TL_OK);
    assert_ptr_equal(tl_lookup(rt, "err.sender", 1), &sender_fn);
    assert_null(tl_lookup(rt, "err.sender", 2)); /* versions are distinct */
    assert_int_equal(tl_spawn_by_name(rt, "err.sender", 1, NULL, 0, &t), TL_OK);
    assert_int_equal(tl_kill(t), TL_OK);
    tl_tasklet_release(t);
}

static void test_invalid_handles(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    tl_chan *ch;
    assert_int_equal(tl_kill(NULL), TL_EMISUSE);
    assert_int_equal(tl_throw(NULL, TL_EUSER, NULL), TL_EMISUSE);
    assert_int_equal(tl_tasklet_state(NULL), TL_EMISUSE);
    assert_int_equal(tl_chan_close(NULL), TL_EMISUSE);
    assert_int_equal(tl_chan_try_send(NULL, tl_nil()), TL_EMISUSE);
    assert_int_equal(tl_run(NULL), TL_EMISUSE);
    assert_int_equal(tl_register(NULL, &sender_fn), TL_EMISUSE);
    assert_int_equal(tl_errcode(NULL), TL_EMISUSE);
    assert_string_equal(tl_errmsg(NULL), "invalid runtime handle");

    /* a handle used after its object was freed is detected */
    assert_int_equal(tl_register(rt, &sender_fn), TL_OK);
    assert_int_equal(tl_spawn(rt, &sender_fn, NULL, 0, &t), TL_OK);
    assert_int_equal(tl_kill(t), TL_OK);
    tl_tasklet_release(t); /* last reference: freed */
    assert_int_equal(tl_tasklet_state(t), TL_EMISUSE);
    assert_int_equal(tl_kill(t), TL_EMISUSE);
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    tl_chan_release(ch);
    assert_int_equal(tl_chan_close(ch), TL_EMISUSE);
    assert_int_equal(tl_chan_set_preference(ch, 1), TL_EMISUSE);

    /* a channel of another runtime is refused inside a tasklet */
    tl_runtime *other;
    tl_chan *foreign;
    tl_value v;
    assert_int_equal(tl_runtime_new(NULL, &other), TL_OK);
    assert_int_equal(tl_chan_new(other, 0, &foreign), TL_OK);
    e_t a = {.ch = foreign};
    assert_int_equal(tl_spawn(rt, &sender_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), TL_EMISUSE);
    tl_tasklet_release(t);
    e_t b = {.ch = NULL};
    assert_int_equal(tl_spawn(rt, &sender_fn, &b, sizeof b, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_result(t, &v), TL_OK);
    assert_int_equal(tl_as_i64(v), TL_EMISUSE);
    tl_tasklet_release(t);
    tl_chan_release(foreign);
    tl_runtime_free(other);
}

static tl_status noop(tl_frame *f, void *locals)
{
    (void)locals;
    TL_BEGIN(f);
    TL_END(f);
}

typedef struct { int64_t a; int32_t b; tl_value v; char name[8]; } s_t;

static void test_bad_schemas(void **state)
{
    tl_runtime *rt = *state;
    static const tl_field wrong_size[] = {{"a", TL_T_I32, 8, offsetof(s_t, a)}};
    static const tl_field outside[] = {{"a", TL_T_I64, 8, sizeof(s_t)}};
    static const tl_field twice[] = {TL_FIELD(s_t, a, TL_T_I64), {"a", TL_T_I32, 4, offsetof(s_t, b)}};
    static const tl_field overlap[] = {TL_FIELD(s_t, a, TL_T_I64), {"x", TL_T_I32, 4, offsetof(s_t, a) + 4}};
    static const tl_field bad_type[] = {{"a", 99, 8, 0}};
    static const tl_field ok[] = {TL_FIELD(s_t, a, TL_T_I64), TL_FIELD(s_t, b, TL_T_I32),
                                  TL_FIELD(s_t, v, TL_T_VALUE), TL_FIELD(s_t, name, TL_T_BYTES)};
    tl_func fn = {"err.schema", 1, noop, sizeof(s_t), NULL, 1, NULL};
    fn.fields = wrong_size;
    assert_err(rt, tl_register(rt, &fn), TL_ESCHEMA, "'a' is 8 bytes");
    fn.fields = outside;
    assert_err(rt, tl_register(rt, &fn), TL_ESCHEMA, "outside");
    fn.fields = twice;
    fn.nfields = 2;
    assert_err(rt, tl_register(rt, &fn), TL_ESCHEMA, "twice");
    fn.fields = overlap;
    assert_err(rt, tl_register(rt, &fn), TL_ESCHEMA, "overlap");
    fn.fields = bad_type;
    fn.nfields = 1;
    assert_err(rt, tl_register(rt, &fn), TL_ESCHEMA, "unknown type");
    fn.fields = NULL;
    assert_err(rt, tl_register(rt, &fn), TL_EINVAL, "nfields");
    tl_func noname = {"", 1, noop, 0, NULL, 0, NULL};
    assert_err(rt, tl_register(rt, &noname), TL_EINVAL, "name");
    tl_func huge = {"err.huge", 1, noop, 1 << 20, NULL, 0, NULL};
    assert_err(rt, tl_register(rt, &huge), TL_EINVAL, "exceed");
    assert_err(rt, tl_register(rt, NULL), TL_EINVAL, NULL);

    static tl_func good = {"err.good", 1, noop, sizeof(s_t), ok, TL_COUNTOF(ok), NULL};
    assert_int_equal(tl_register(rt, &good), TL_OK);
    assert_int_equal(tl_register(rt, &good), TL_OK); /* idempotent */
    static tl_func clash = {"err.good", 1, noop, sizeof(s_t), ok, TL_COUNTOF(ok), NULL};
    assert_err(rt, tl_register(rt, &clash), TL_EEXIST, "err.good@1");
}

static void test_bad_arguments(void **state)
{
    tl_runtime *rt = *state;
    tl_chan *ch;
    char big[64] = {0};
    assert_int_equal(tl_register(rt, &sender_fn), TL_OK);
    assert_err(rt, tl_spawn(rt, &sender_fn, big, sizeof big, NULL), TL_EINVAL, "arguments");
    assert_err(rt, tl_spawn(rt, &sender_fn, NULL, 8, NULL), TL_EINVAL, "arguments");
    /* arguments ending inside a reference field */
    assert_err(rt, tl_spawn(rt, &sender_fn, big, offsetof(e_t, v) + 4, NULL), TL_EINVAL, "'v'");
    assert_int_equal(tl_chan_new(rt, 0, NULL), TL_EINVAL);
    assert_err(rt, tl_chan_new(rt, (size_t)1 << 30, &ch), TL_ERANGE, "capacity");
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    assert_int_equal(tl_chan_set_preference(ch, 2), TL_OK); /* normalised to its sign */
    assert_int_equal(tl_chan_preference(ch), 1);
    assert_err(rt, tl_chan_fail_waiters(ch, 0, NULL), TL_EINVAL, "not negative");
    tl_tasklet *t;
    assert_int_equal(tl_spawn(rt, &sender_fn, NULL, 0, &t), TL_OK);
    assert_err(rt, tl_throw(t, 0, NULL), TL_EINVAL, "not negative");
    tl_value v;
    assert_err(rt, tl_tasklet_result(t, &v), TL_ESTATE, "has not returned");
    assert_int_equal(tl_runtime_new(NULL, NULL), TL_EINVAL);
    assert_int_equal(tl_kill(t), TL_OK);
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

static void test_kill_finished(void **state)
{
    tl_runtime *rt = *state;
    tl_tasklet *t;
    tl_chan *ch;
    assert_int_equal(tl_register(rt, &sender_fn), TL_OK);
    assert_int_equal(tl_chan_new(rt, 1, &ch), TL_OK);
    e_t a = {.ch = ch};
    assert_int_equal(tl_spawn(rt, &sender_fn, &a, sizeof a, &t), TL_OK);
    assert_int_equal(tl_run(rt), TL_OK);
    assert_int_equal(tl_tasklet_state(t), TL_DONE);
    assert_int_equal(tl_kill(t), TL_OK); /* Stackless: a no-op on a dead tasklet */
    assert_err(rt, tl_kill_now(t), TL_EDONE, "already ended");
    assert_err(rt, tl_throw(t, TL_EUSER, NULL), TL_EDONE, "already ended");
    tl_tasklet_release(t);
    tl_chan_release(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test_setup_teardown(test_send_on_closed_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_function, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_schemas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_finished, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
