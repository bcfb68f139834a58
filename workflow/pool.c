/*
 * pool.c -- the worker threads that run step effects.
 *
 * Invariants: a job is owned by exactly one side at a time: the engine
 * until tl__wf_pool_submit, a worker while in todo or running, the
 * engine again once it is in done (tl__wf_pool_take_done).  A worker sees
 * only the job: msgpack bytes in, msgpack bytes out, decoded into and
 * encoded from the worker's own runtime, so no value or runtime crosses
 * threads.  The eventfd is written whenever done goes from empty to not
 * empty, so the engine's poll wakes without polling.
 */
#define _GNU_SOURCE
#include "wf_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct tl_wf_ctx {
    wf_job *job;
    tl_runtime *rt;
};

const char *tl_wf_ctx_key(const tl_wf_ctx *cx) { return cx ? cx->job->key : ""; }
const char *tl_wf_ctx_id(const tl_wf_ctx *cx) { return cx ? cx->job->id : ""; }
int64_t tl_wf_ctx_step(const tl_wf_ctx *cx) { return cx ? cx->job->seq : 0; }
uint32_t tl_wf_ctx_attempt(const tl_wf_ctx *cx) { return cx ? cx->job->attempt : 0; }
int tl_wf_ctx_canceled(const tl_wf_ctx *cx)
{
    return cx ? atomic_load(&cx->job->canceled) : 0;
}
tl_runtime *tl_wf_ctx_runtime(tl_wf_ctx *cx) { return cx ? cx->rt : NULL; }
void *tl_wf_ctx_db(tl_wf_ctx *cx) { return cx ? cx->job->db : NULL; }

int tl_wf_ctx_fail(tl_wf_ctx *cx, int code, const char *msg)
{
    if (cx)
        snprintf(cx->job->errmsg, sizeof cx->job->errmsg, "%s", msg ? msg : "");
    return code;
}

int64_t tl__wf_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Runs one attempt: decode the argument, call the effect, encode what it
 * returned.  Used by the workers, by the engine for TL_WF_INLINE and,
 * for TL_WF_TX, by the commit. */
static void run_in(wf_job *j, tl_runtime *rt)
{
    tl_wf_ctx cx = {j, rt};
    tl_value arg, res = tl_nil();
    j->started = tl__wf_wall_ns();
    j->errmsg[0] = 0;
    j->rc = tl__wf_unpack(rt, j->arg, j->alen, &arg);
    if (j->rc == TL_OK) {
        j->rc = j->step->fn(&cx, arg, &res);
        if (j->rc > 0)
            j->rc = TL_EINVAL;
    }
    if (j->rc == TL_OK) {
        j->rc = tl__wf_pack(res, &j->res, &j->rlen);
        if (j->rc != TL_OK)
            snprintf(j->errmsg, sizeof j->errmsg, "the result of step %s cannot be stored: %s",
                     j->step->name, tl_strerror(j->rc));
    } else if (!j->errmsg[0]) {
        snprintf(j->errmsg, sizeof j->errmsg, "step %s failed: %s", j->step->name,
                 tl_strerror(j->rc));
    }
    tl_release(arg);
    tl_release(res);
    j->ended = tl__wf_wall_ns();
}

/* Runs one attempt in rt, or (rt NULL) in a runtime made for it. */
void tl__wf_job_run(wf_job *j, tl_runtime *rt)
{
    if (rt) {
        run_in(j, rt);
        return;
    }
    if (tl_runtime_new(NULL, &rt) != TL_OK) {
        j->rc = TL_ENOMEM;
        snprintf(j->errmsg, sizeof j->errmsg, "step %s: out of memory", j->step->name);
        return;
    }
    run_in(j, rt);
    tl_runtime_free(rt);
}

void tl__wf_job_free(wf_job *j)
{
    if (!j)
        return;
    free(j->arg);
    free(j->res);
    free(j);
}

static void *worker(void *ud)
{
    wf_pool *p = ud;
    tl_runtime *rt = NULL;
    tl_runtime_new(NULL, &rt);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->todo && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        wf_job *j = p->todo;
        p->todo = j->next;
        if (!p->todo)
            p->todo_tail = &p->todo;
        pthread_mutex_unlock(&p->mu);
        tl__wf_job_run(j, rt);
        pthread_mutex_lock(&p->mu);
        j->next = NULL;
        int was_empty = p->done == NULL;
        *p->done_tail = j;
        p->done_tail = &j->next;
        if (was_empty) {
            uint64_t one = 1;
            ssize_t w = write(p->efd, &one, sizeof one);
            (void)w;
        }
    }
    pthread_mutex_unlock(&p->mu);
    tl_runtime_free(rt);
    return NULL;
}

int tl__wf_pool_start(wf_pool *p, unsigned n)
{
    memset(p, 0, sizeof *p);
    p->todo_tail = &p->todo;
    p->done_tail = &p->done;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0)
        return TL_EIO;
    p->threads = calloc(n, sizeof *p->threads);
    if (!p->threads || pthread_mutex_init(&p->mu, NULL) || pthread_cond_init(&p->cv, NULL)) {
        free(p->threads);
        close(p->efd);
        return TL_ENOMEM;
    }
    for (p->n = 0; p->n < n; p->n++)
        if (pthread_create(&p->threads[p->n], NULL, worker, p) != 0)
            break;
    if (p->n == 0) {
        tl__wf_pool_stop(p);
        return TL_ENOMEM;
    }
    return TL_OK;
}

void tl__wf_pool_stop(wf_pool *p)
{
    if (!p->threads)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    p->threads = NULL;
    for (wf_job *j = p->todo, *nx; j; j = nx) {
        nx = j->next;
        tl__wf_job_free(j);
    }
    for (wf_job *j = p->done, *nx; j; j = nx) {
        nx = j->next;
        tl__wf_job_free(j);
    }
    p->todo = p->done = NULL;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    close(p->efd);
}

void tl__wf_pool_submit(wf_pool *p, wf_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    *p->todo_tail = j;
    p->todo_tail = &j->next;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Every finished job, oldest first, as a list the engine now owns. */
wf_job *tl__wf_pool_take_done(wf_pool *p)
{
    uint64_t v;
    ssize_t r = read(p->efd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&p->mu);
    wf_job *j = p->done;
    p->done = NULL;
    p->done_tail = &p->done;
    pthread_mutex_unlock(&p->mu);
    return j;
}
