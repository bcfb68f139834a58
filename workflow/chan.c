/*
 * chan.c -- the engine's named channels: runtime channels any process can
 * post to with only the store's path (tl_wf_post_chan, `tasklet send
 * --chan`), delivered exactly once.
 *
 * tl_wf_chan creates (or, after restore, finds) a pinned, named channel
 * of the engine's runtime and writes its row in table wf_chan, which is
 * what a poster checks the name against.  A post is a wf_msg row of kind
 * 2 (wf column "\x1f" NAME, so it never meets a workflow's id, which has
 * no control bytes).  Intake (engine.c) queues such rows in wf->chanq in
 * posting order; after each run of the scheduler tl__wf_chan_flush sends
 * each, in order per channel, with tl_chan_try_send once the channel
 * takes it (a receiver waits or its buffer has room), and marks its row
 * taken.  The taken mark, the channel's buffer and the receiver that got
 * the value are written by the same checkpoint transaction, so after any
 * crash a message is either still queued (sent again) or received, never
 * both.  A message for a channel this engine has not opened (yet) waits
 * in the queue; one for a closed channel is marked dropped.
 */
#include "wf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const tl__table T_CHAN = {"wf_chan", "name", "kind", "time", "data"};

static wf_chan *chan_get(tl_wf *wf, const char *name)
{
    for (size_t i = 0; i < wf->nchans; i++)
        if (strcmp(wf->chans[i].name, name) == 0)
            return &wf->chans[i];
    return NULL;
}

static int chan_add(tl_wf *wf, const char *name, tl_chan *ch)
{
    if (wf->nchans == wf->capchans) {
        size_t nc = wf->capchans ? wf->capchans * 2 : 8;
        wf_chan *nv = realloc(wf->chans, nc * sizeof *nv);
        if (!nv)
            return TL_ENOMEM;
        wf->chans = nv;
        wf->capchans = nc;
    }
    wf_chan *c = &wf->chans[wf->nchans++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->ch = tl_chan_retain(ch);
    c->dirty = 1;
    return TL_OK;
}

/* A new pinned, named channel of the runtime (the runtime holds it). */
static int chan_create(tl_wf *wf, const char *name, size_t cap, tl_chan **out)
{
    tl_chan *ch;
    int rc = tl_chan_new(wf->rt, cap, &ch);
    if (rc == TL_OK)
        rc = tl_chan_set_name(ch, name);
    if (rc == TL_OK)
        rc = tl_chan_pin(ch, 1);
    if (rc != TL_OK) {
        tl_chan_release(ch);
        return rc;
    }
    tl_chan_release(ch); /* the pin holds it */
    *out = ch;
    return TL_OK;
}

int tl_wf_chan(tl_wf *wf, const char *name, size_t cap, tl_chan **out)
{
    if (!wf || wf->magic != WF_MAGIC)
        return TL_EMISUSE;
    if (!out)
        return tl__wf_err(wf, TL_EINVAL, "tl_wf_chan: out is NULL");
    *out = NULL;
    if (tl__wf_check_id(name) != TL_OK || strlen(name) > TL_WF_NAME_MAX)
        return tl__wf_err(wf, TL_EINVAL, "tl_wf_chan: a channel name is 1 to %d bytes with "
                          "no control characters", TL_WF_NAME_MAX);
    wf_chan *c = chan_get(wf, name);
    if (c) {
        *out = c->ch;
        return TL_OK;
    }
    tl_chan *ch = tl_chan_find_name(wf->rt, name); /* restored */
    int rc = ch ? TL_OK : chan_create(wf, name, cap, &ch);
    if (rc == TL_OK)
        rc = chan_add(wf, name, ch);
    if (rc != TL_OK)
        return tl__wf_err(wf, rc, "tl_wf_chan(%s): %s", name, tl_strerror(rc));
    wf->force = 1; /* its row soon, so that posts to it find it */
    *out = ch;
    return TL_OK;
}

/* In the checkpoint transaction: the rows of channels opened since. */
int tl__wf_chan_write(tl_wf *wf, tl__store_tx *tx)
{
    for (size_t i = 0; i < wf->nchans; i++) {
        wf_chan *c = &wf->chans[i];
        if (!c->dirty)
            continue;
        void *p;
        size_t n;
        int rc = tl__wf_pack_chan(tl_chan_id(c->ch), tl_chan_capacity(c->ch), &p, &n);
        if (rc != TL_OK)
            return tl__wf_err(wf, rc, "workflows: out of memory for a channel row");
        tl__row row = {c->name, "chan", tl_now(wf->rt), p, n};
        rc = tl__tx_put(tx, &T_CHAN, &row);
        free(p);
        if (rc != TL_OK)
            return tl__wf_err(wf, rc, "workflows: writing channel %s: %s", c->name,
                              tl_store_errmsg(wf->st));
    }
    return TL_OK;
}

/* The commit went in: the rows are written (until then, every commit
 * writes them, so a failed one loses none). */
void tl__wf_chan_committed(tl_wf *wf)
{
    for (size_t i = 0; i < wf->nchans; i++)
        wf->chans[i].dirty = 0;
}

/* A posted row of kind 2, read by intake: queued in posting order. */
int tl__wf_chan_take(tl_wf *wf, wf_msg *m)
{
    m->next = NULL;
    if (!wf->chanq)
        wf->chanq_tail = &wf->chanq;
    *wf->chanq_tail = m;
    wf->chanq_tail = &m->next;
    return TL_OK;
}

/* TL_OK sent, TL_EAGAIN not now (full, or the channel is not open here),
 * another code: it can never be sent (closed, undecodable). */
static int send_one(tl_wf *wf, const wf_msg *m)
{
    wf_chan *c = chan_get(wf, m->topic);
    if (!c)
        return TL_EAGAIN;
    tl_value v;
    int rc = tl__wf_unpack(wf->rt, m->val, m->len, &v);
    if (rc != TL_OK)
        return rc;
    rc = tl_chan_try_send(c->ch, v);
    tl_release(v);
    return rc;
}

static int seen(char (*names)[TL_WF_NAME_MAX + 1], int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return 1;
    return 0;
}

/* Sends what the channels take now, oldest first per channel; a channel
 * that refused one gets no later one in this pass (order). */
void tl__wf_chan_flush(tl_wf *wf)
{
    char blocked[16][TL_WF_NAME_MAX + 1];
    int nb = 0;
    wf_msg **p = &wf->chanq;
    while (*p) {
        wf_msg *m = *p;
        int rc = nb == 16 || seen(blocked, nb, m->topic) ? TL_EAGAIN : send_one(wf, m);
        if (rc == TL_EAGAIN) {
            if (nb < 16 && !seen(blocked, nb, m->topic))
                snprintf(blocked[nb++], sizeof blocked[0], "%s", m->topic);
            p = &m->next;
            continue;
        }
        *p = m->next;
        m->taken = rc == TL_OK ? tl_now(wf->rt) : -1;
        m->next = wf->taken;
        wf->taken = m;
    }
    wf->chanq_tail = p;
}

void tl__wf_chan_free(tl_wf *wf)
{
    for (size_t i = 0; i < wf->nchans; i++)
        tl_chan_release(wf->chans[i].ch);
    free(wf->chans);
    wf->chans = NULL;
    wf->nchans = wf->capchans = 0;
    while (wf->chanq) {
        wf_msg *m = wf->chanq;
        wf->chanq = m->next;
        free(m->val);
        free(m);
    }
}
