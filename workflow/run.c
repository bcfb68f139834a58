/*
 * run.c -- the engine's run loop, its group commit and restore.
 *
 * A commit is one tl_store_checkpoint: the store writes the runtime's
 * changed chunks, then calls the engine's participant hook (db.c) in the
 * same transaction for the workflow rows, step rows, received messages
 * and TL_WF_TX effects.  Only after it committed are recorded results
 * handed to their workflows (deliver_outs), so a workflow never sees a
 * result the store does not have.
 */
#define _GNU_SOURCE
#include "wf_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad(const tl_wf *wf) { return !wf || wf->magic != WF_MAGIC; }

static int has_work(const tl_wf *wf)
{
    return wf->dirty || wf->outs || wf->txq || wf->taken || wf->force || wf->changed ||
           wf->arrivals;
}

/* Hands every committed result to its workflow (if it still waits for
 * exactly that), and finished children's ends to their parents. */
static void deliver_outs(tl_wf *wf, wf_out *o)
{
    while (o) {
        wf_out *nx = o->next;
        wf_rec *r = o->rec;
        if (r && r->gen == o->gen && r->wait == o->kind)
            tl__wf_deliver(wf, r, o->rc, o->errmsg, o->res, o->rlen);
        tl__wf_out_free(o);
        o = nx;
    }
}

/* After a commit: the TL_WF_TX attempts it ran are done; finished
 * workflows' final rows are in, so their parents may see them and the
 * records go. */
static void after_commit(tl_wf *wf)
{
    wf_job *tx = wf->txdone;
    wf->txdone = NULL;
    while (tx) {
        wf_job *nx = tx->next;
        tl__wf_job_done(wf, tx);
        tx = nx;
    }
    wf_out *o = wf->outs;
    wf->outs = NULL;
    wf->outs_tail = &wf->outs;
    deliver_outs(wf, o);
    while (wf->taken) {
        wf_msg *m = wf->taken;
        wf->taken = m->next;
        free(m->val);
        free(m);
    }
}

/* Finished workflows whose final row is committed leave memory. */
static void reap(tl_wf *wf, wf_rec *fin)
{
    while (fin) {
        wf_rec *nx = fin->dnext;
        wf_rec *p = fin->joiner;
        if (p && p->wait == W_JOIN && strcmp(p->what, fin->id) == 0)
            tl__wf_deliver(wf, p, fin->status == TL_WF_DONE ? TL_OK
                                  : fin->error ? fin->error : TL_ECANCELED,
                           fin->errmsg, fin->result, fin->rlen);
        tl__wf_hash_del(wf, fin);
        tl__wf_rec_free(wf, fin);
        fin = nx;
    }
}

void tl__wf_tx_rollback(tl_wf *wf)
{
    for (wf_job *j = wf->txdone, *nx; j; j = nx) {
        nx = j->next;
        if (j->counted && j->rec)
            j->rec->recorded--;
        j->counted = 0;
        free(j->res);
        j->res = NULL;
        j->db = NULL;
        j->next = wf->txq;
        wf->txq = j;
    }
    wf->txdone = NULL;
}

/* A checkpoint holding the engine's rows committed (the engine's own, or
 * one the node wrote for a transfer): what it recorded is handed over,
 * finished workflows leave memory, moves and arrivals settle. */
void tl__wf_committed(tl_wf *wf)
{
    wf->force = 0;
    wf->changed = 0;
    tl__wf_chan_committed(wf);
    wf_rec *fin = NULL;
    while (wf->dirty) {
        wf_rec *r = wf->dirty;
        wf->dirty = r->dnext;
        r->dirty = 0;
        if (r->status >= TL_WF_DONE && !r->moving) {
            r->dnext = fin;
            fin = r;
        }
    }
    after_commit(wf);
    reap(wf, fin);
    tl__wf_moves_committed(wf);
}

int tl_wf_commit(tl_wf *wf)
{
    if (bad(wf))
        return TL_EMISUSE;
    if (!has_work(wf))
        return TL_OK;
    if (!wf->st)
        return tl__wf_err(wf, TL_ESTATE, "tl_wf_commit: the store was closed");
    tl__store_touch(wf->st);
    int rc = tl_store_checkpoint(wf->st);
    if (rc != TL_OK) {
        tl__wf_tx_rollback(wf); /* the transaction rolled back: they run again */
        return tl__wf_err(wf, rc, "commit: %s", tl_store_errmsg(wf->st));
    }
    return TL_OK; /* tl__wf_committed ran */
}

/* ---- the loop ---- */

/* Takes the finished jobs.  With none in flight none can be done, and a
 * busy round skips the read of the pool's eventfd; wait_events reads it
 * whenever poll finds it readable (force), so a count left by a worker
 * after its job was taken never keeps poll from sleeping. */
static void take_jobs(tl_wf *wf, int force)
{
    if (!wf->inflight && !force)
        return;
    wf_job *j = tl__wf_pool_take_done(&wf->pool);
    while (j) {
        wf_job *nx = j->next;
        wf->inflight--;
        tl__wf_job_done(wf, j);
        j = nx;
    }
}

/* Whether this round commits.  Results to record, TL_WF_TX steps,
 * starts, ends and cancels commit at once; the rest (a workflow that only
 * moved on to its next step) waits until the engine is idle or rides on
 * the next urgent commit: restored from the commit before, the workflow
 * is handed its recorded result again and submits the same step, same
 * key.  So a sequential workflow pays one commit per step, not two. */
static int commit_due(const tl_wf *wf)
{
    if (wf->outs || wf->txq || wf->force)
        return 1;
    return has_work(wf) && !wf->inflight && !tl_runnable_count(wf->rt) && !wf->ready;
}

/* Runs what is runnable, at most cfg.batch_steps scheduler steps. */
static int run_tasklets(tl_wf *wf)
{
    uint64_t total = 0;
    int64_t d;
    int due = tl_next_deadline(wf->rt, &d) && d <= tl_now(wf->rt);
    while ((tl_runnable_count(wf->rt) || due) && total < wf->cfg.batch_steps) {
        due = 0; /* tl_run_steps fires the timers that are due first */
        uint64_t n = 0;
        int rc = tl_run_steps(wf->rt, wf->cfg.batch_steps - total, &n);
        total += n;
        if (rc != TL_OK)
            return tl__wf_err(wf, rc, "running workflows: %s", tl_errmsg(wf->rt));
        if (n == 0)
            break;
    }
    if (total)
        wf->changed = 1;
    return TL_OK;
}

/* How long poll may sleep (ms, -1 forever) before the next deadline. */
static int sleep_ms(tl_wf *wf, int64_t until)
{
    int64_t now = tl_now(wf->rt), next = until, d;
    int64_t t = tl__wf_next_timer(wf);
    if (t && (next < 0 || t < next))
        next = t;
    if (tl_next_deadline(wf->rt, &d) && (next < 0 || d < next))
        next = d;
    if (wf->watch < 0 && (next < 0 || next > now + 50000000))
        next = now + 50000000; /* no inotify: look at the store every 50 ms */
    if (next < 0)
        return -1;
    int64_t ms = (next - now + 999999) / 1000000;
    return ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

static void wait_events(tl_wf *wf, int ms)
{
    struct pollfd p[2] = {{wf->pool.efd, POLLIN, 0}, {wf->watch, POLLIN, 0}};
    int n = poll(p, wf->watch >= 0 ? 2 : 1, ms);
    if (n > 0 && (p[0].revents & POLLIN))
        take_jobs(wf, 1);
    if (n > 0 && wf->watch >= 0 && !wf->listen && (p[1].revents & POLLIN))
        wf->poked |= tl__wf_watch_drain(wf->watch); /* a listener is read by tl__wf_dbs_changed */
}

static int one_round(tl_wf *wf)
{
    take_jobs(wf, 0);
    tl__wf_fire_timers(wf);
    int rc = tl__wf_intake(wf);
    if (rc == TL_OK) {
        wf_out *o = wf->ready;
        wf->ready = NULL;
        deliver_outs(wf, o);
        rc = run_tasklets(wf);
    }
    if (rc == TL_OK && wf->chanq)
        tl__wf_chan_flush(wf); /* receivers that blocked meanwhile take theirs */
    if (rc == TL_OK)
        tl__wf_run_inline(wf);
    if (rc == TL_OK && commit_due(wf))
        rc = tl_wf_commit(wf);
    return rc;
}

int tl_wf_run(tl_wf *wf, int64_t timeout_ms)
{
    if (bad(wf))
        return TL_EMISUSE;
    int64_t until = timeout_ms < 0 ? -1 : tl_now(wf->rt) + timeout_ms * 1000000;
    for (;;) {
        int rc = one_round(wf);
        if (rc == TL_OK && wf->lazy_rc) { /* a lazy row failed to load (lazy.c) */
            rc = wf->lazy_rc;
            wf->lazy_rc = 0;
        }
        if (rc != TL_OK)
            return rc;
        if (wf->live == 0 && !has_work(wf))
            return TL_OK;
        int busy = tl_runnable_count(wf->rt) || wf->ready || wf->txq || wf->inlq;
        /* 0: until nothing is runnable; > 0: also while busy (inline steps) */
        if (until >= 0 && tl_now(wf->rt) >= until && (!busy || timeout_ms > 0))
            return tl__wf_err(wf, TL_ETIMEDOUT, "tl_wf_run: %zu workflows still live after "
                              "%lld ms", wf->live, (long long)timeout_ms);
        if (!busy)
            wait_events(wf, sleep_ms(wf, until));
    }
}

/* ---- restore ---- */

int tl_wf_restore(tl_wf *wf)
{
    if (bad(wf))
        return TL_EMISUSE;
    if (wf->live)
        return tl__wf_err(wf, TL_ENOTEMPTY, "tl_wf_restore: workflows were started already");
    int rc = tl_store_restore(wf->st);
    if (rc != TL_OK && rc != TL_ENOENT)
        return tl__wf_err(wf, rc, "tl_wf_restore: %s", tl_store_errmsg(wf->st));
    rc = tl__wf_db_load(wf);
    if (rc == TL_OK) {
        wf->cursor = 0;
        wf->data_version = -1;
        tl__wf_db_changed(wf);
        rc = tl__wf_db_intake(wf);
    }
    return rc;
}
