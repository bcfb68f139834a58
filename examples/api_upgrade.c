/*
 * api_upgrade.c -- the versioning guide's example (docs/API.md, "Changing
 * code under stored tasklets"): a job function gains a suspension point,
 * so its shape changes; version 2 is registered with an upgrade that maps
 * the resume points of version 1, and a job stored by the old build
 * continues under the new one at the point it had reached.
 *
 *   usage: api_upgrade      (prints what it does; exit status 0 if right)
 */
#include <stdio.h>
#include <string.h>

#include "tasklet.h"

/* ---- version 1: receive a job, acknowledge it, report the result ---- */
typedef struct {
    tl_chan *jobs, *out; /* arguments */
    tl_value job;
    int64_t attempts;
} job_v1;

static const tl_field job_v1_fields[] = {
    TL_FIELD(job_v1, jobs, TL_T_CHAN),
    TL_FIELD(job_v1, out, TL_T_CHAN),
    TL_FIELD(job_v1, job, TL_T_VALUE),
    TL_FIELD(job_v1, attempts, TL_T_I64),
};

static tl_status worker_v1(tl_frame *f, void *locals)
{
    job_v1 *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->jobs, L->job);             /* point 1: receive */
    L->attempts = 1;
    TL_SEND(f, L->out, tl_i64(0));           /* point 2: send the ack */
    TL_SEND(f, L->out, tl_i64(L->attempts)); /* point 3: send the result */
    TL_END(f);
}

static const tl_func worker_v1_fn = {"jobs.worker", 1, worker_v1, sizeof(job_v1),
                                     job_v1_fields, TL_COUNTOF(job_v1_fields), NULL};

/* ---- version 2: one more point (a log line) before the ack; a field
 * renamed in meaning: attempts now counts from 0, tries from 1 ---- */
typedef struct {
    tl_chan *jobs, *out;
    tl_value job;
    int64_t tries;
} job_v2;

static const tl_field job_v2_fields[] = {
    TL_FIELD(job_v2, jobs, TL_T_CHAN),
    TL_FIELD(job_v2, out, TL_T_CHAN),
    TL_FIELD(job_v2, job, TL_T_VALUE),
    TL_FIELD(job_v2, tries, TL_T_I64),
};

static tl_status worker_v2(tl_frame *f, void *locals)
{
    job_v2 *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->jobs, L->job);             /* point 1: receive */
    L->tries = 1;
    TL_SEND(f, L->out, tl_i64(-1));          /* point 2: new, a log line */
    TL_SEND(f, L->out, tl_i64(0));           /* point 3: send the ack */
    TL_SEND(f, L->out, tl_i64(L->tries));    /* point 4: send the result */
    TL_END(f);
}

static const tl_func worker_v2_fn = {"jobs.worker", 2, worker_v2, sizeof(job_v2),
                                     job_v2_fields, TL_COUNTOF(job_v2_fields), NULL};

/* Where a frame of version 1 resumes in version 2, and what its fields
 * become: the same-named ones (jobs, out, job) are copied by the library;
 * attempts becomes tries. */
static int worker_v1_to_v2(void *ud, uint32_t old_pc, tl_value old_locals,
                           void *new_locals, uint32_t *new_pc)
{
    static const uint32_t point[] = {0, 1, 3, 4}; /* v1 point k -> v2 point */
    job_v2 *L = new_locals;
    (void)ud;
    if (old_pc >= sizeof point / sizeof point[0])
        return TL_EBADPC;
    for (size_t i = 0; i < tl_len(old_locals); i++) { /* field name -> value */
        const char *name = tl_str_data(tl_map_key(old_locals, i), NULL);
        if (name && strcmp(name, "attempts") == 0)
            L->tries = tl_as_i64(tl_map_val(old_locals, i));
    }
    *new_pc = point[old_pc];
    return TL_OK;
}

#define CHECK(call)                                                          \
    do {                                                                     \
        int rc_ = (call);                                                    \
        if (rc_ != TL_OK) {                                                  \
            fprintf(stderr, "api_upgrade: %s: %s\n", #call, tl_strerror(rc_)); \
            return 1;                                                        \
        }                                                                    \
    } while (0)

/* The old build: a job received and acknowledged, the result not sent. */
static int old_build(void **buf, size_t *len, tl_runtime **out)
{
    tl_runtime *rt;
    tl_chan *jobs, *res;
    tl_value ack;
    CHECK(tl_runtime_new(NULL, &rt));
    *out = rt;
    CHECK(tl_register(rt, &worker_v1_fn));
    CHECK(tl_chan_new(rt, 1, &jobs));
    CHECK(tl_chan_new(rt, 0, &res));
    CHECK(tl_chan_set_name(res, "out"));
    job_v1 args = {jobs, res, {0}, 0};
    CHECK(tl_spawn(rt, &worker_v1_fn, &args, sizeof args, NULL));
    CHECK(tl_chan_try_send(jobs, tl_i64(42)));
    tl_run(rt);                              /* blocks sending the ack */
    CHECK(tl_chan_try_recv(res, &ack));      /* takes it: now at point 3 */
    tl_run(rt);
    tl_chan_release(jobs);
    tl_chan_release(res);
    printf("v1 (shape %s): job received, ack %lld taken; saved\n",
           tl_func_shape(rt, &worker_v1_fn), (long long)tl_as_i64(ack));
    return tl_snapshot_save(rt, buf, len);
}

int main(void)
{
    void *buf;
    size_t len;
    tl_runtime *a, *b;
    tl_value result;
    if (old_build(&buf, &len, &a) != TL_OK)
        return 1;
    CHECK(tl_runtime_new(NULL, &b));
    CHECK(tl_register(b, &worker_v2_fn));
    /* without the upgrade: refused, naming jobs.worker@1 */
    if (tl_snapshot_load(b, buf, len) != TL_ENOFUNC)
        return 1;
    printf("v2 without an upgrade: %s\n", tl_errmsg(b));
    CHECK(tl_register_upgrade(b, "jobs.worker", 1, &worker_v2_fn, worker_v1_to_v2, NULL));
    CHECK(tl_snapshot_load(b, buf, len));
    tl_snapshot_free(a, buf, len);
    tl_runtime_free(a);
    tl_run(b);
    CHECK(tl_chan_try_recv(tl_chan_find_name(b, "out"), &result));
    printf("v2 (shape %s): resumed at the result, tries = %lld\n",
           tl_func_shape(b, &worker_v2_fn), (long long)tl_as_i64(result));
    tl_runtime_free(b);
    return tl_as_i64(result) == 1 ? 0 : 1;
}
