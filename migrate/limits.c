/*
 * limits.c -- what one peer, and all of them together, may make a node
 * hold (tl_node_config, docs/PROTOCOL.md section 8).
 *
 *   max_queue            bytes queued to send on one link: a peer that does
 *                        not read its answers is dropped (tl__limit_queue)
 *   max_buffers          bytes of every link's read and write buffers
 *                        together: a link that would grow past it is
 *                        dropped (tl__buf_resize)
 *   max_frame            a frame's length; the read buffer grows with the
 *                        bytes that arrive, never to an announced length
 *                        at once (tl__rbuf_want)
 *   max_links            links, every state: more are refused at accept
 *   max_handshakes,      connections not yet authenticated, in all and per
 *   handshakes_per_addr  source address (IPv4 address; the uid for unix
 *                        sockets), and the time they have (handshake_ms)
 *   max_agents           a peer's operations in progress here (agents):
 *                        more are answered TL_EBUSY at once
 *   max_requests         our operations in flight on one link: more fail
 *                        TL_EBUSY at the requester
 *
 * Invariants: n->bufbytes is the sum of rcap + wcap + fcap over n's links (every
 * resize goes through tl__buf_resize, every free through
 * tl__buf_release); n->nlinks counts n->links; a peer's agents are those
 * of its links up (remote.c).
 */
#include "node_impl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

#define MIB ((size_t)1 << 20)
#define BIG_BUF TL__BIG_BUF       /* a buffer over this shrinks once idle ... */
#define BIG_KEEP_NS 250000000LL    /* ... for this long (tl__buf_trim) */

static uint32_t or_default(uint32_t v, uint32_t d)
{
    return v ? v : d;
}

void tl__limits_config(tl_node *n, const tl_node_config *cfg)
{
    tl__limits *lim = &n->lim;
    size_t frame = n->max_frame;
    lim->max_queue = cfg->max_queue ? cfg->max_queue : frame + MIB;
    if (lim->max_queue < frame + (512 << 10)) /* the largest frame, after 256 KiB of ours */
        lim->max_queue = frame + (512 << 10);
    lim->max_buffers = cfg->max_buffers ? cfg->max_buffers : (size_t)512 * MIB;
    if (lim->max_buffers < 2 * (frame + lim->max_queue))
        lim->max_buffers = 2 * (frame + lim->max_queue); /* one peer's worst, twice */
    lim->max_links = or_default(cfg->max_links, 256);
    lim->max_handshakes = or_default(cfg->max_handshakes, 64);
    lim->per_addr = or_default(cfg->handshakes_per_addr, 8);
    lim->handshake_ns = (int64_t)or_default(cfg->handshake_ms, 5000) * 1000000;
    lim->max_agents = or_default(cfg->max_agents, 10000);
    lim->max_requests = or_default(cfg->max_requests, 100000);
}

/* ---- buffers ---- */

int tl__buf_resize(conn *l, unsigned char **buf, size_t *cap, size_t ncap)
{
    tl_node *n = l->node;
    if (ncap > *cap && n->bufbytes + (ncap - *cap) > n->lim.max_buffers) {
        tl__link_drop(l, "the node's buffers are full (%zu of %zu bytes; "
                      "tl_node_config.max_buffers)", n->bufbytes, n->lim.max_buffers);
        return 0;
    }
    unsigned char *nb = ncap ? realloc(*buf, ncap) : (free(*buf), NULL);
    if (ncap && !nb) {
        tl__link_drop(l, "out of memory for a buffer of %zu bytes", ncap);
        return 0;
    }
    n->bufbytes = n->bufbytes - *cap + ncap;
    *buf = nb;
    *cap = ncap;
    if (ncap > BIG_BUF)
        l->big_at = tl__mono_ns(); /* needed big now: kept a while (tl__buf_trim) */
    return 1;
}

void tl__buf_release(conn *l)
{
    l->node->bufbytes -= l->rcap + l->wcap + l->fcap;
    free(l->rbuf);
    free(l->wbuf);
    free(l->fbuf);
    l->rbuf = l->wbuf = l->fbuf = NULL;
    l->rcap = l->wcap = l->fcap = 0;
}

int tl__fbuf_room(conn *l, size_t len)
{
    if (len <= l->fcap)
        return 1;
    size_t ncap = 2 * l->fcap > len ? 2 * l->fcap : len; /* len <= max_frame */
    if (ncap > l->node->max_frame)
        ncap = len;
    return tl__buf_resize(l, &l->fbuf, &l->fcap, ncap);
}

/* The read buffer's next size: before authentication small; after it,
 * double (at least 128 KiB), but never past the frame being read when its
 * length is known: a peer's announced length costs only what it sends. */
size_t tl__rbuf_want(const conn *l, size_t frame_limit)
{
    if (l->state != L_UP)
        return 4 * MAX_HANDSHAKE_FRAME + 65536;
    size_t want = l->rcap ? 2 * l->rcap : 131072;
    if (l->rlen >= 4) {
        const unsigned char *p = l->rbuf;
        size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        size_t need = 4 + (len <= frame_limit ? len : frame_limit);
        if (need <= l->rcap)
            return l->rcap; /* it fits: no growth */
        if (want > need)
            want = need;
    }
    return want;
}

/* A big buffer that is (nearly) empty shrinks back, so that a peer's one
 * large frame is not held for good; but only once no buffer of the link
 * needed to be big for BIG_KEEP_NS, so that a run of large frames (a
 * tasklet holding a large binary, moving back and forth) reuses warm
 * memory instead of faulting in fresh pages for every frame.  Called
 * after reads and every round (node.c, timers). */
void tl__buf_trim(conn *l)
{
    if (l->rcap <= BIG_BUF && l->wcap <= BIG_BUF && l->fcap <= BIG_BUF)
        return; /* the common case: nothing big, no clock read */
    int64_t now = tl__mono_ns();
    if (l->rlen > 65536 || l->flen || (l->wlen && l->wcap > BIG_BUF))
        l->big_at = now;
    if (now - l->big_at < BIG_KEEP_NS)
        return;
    if (l->rcap > BIG_BUF && l->rlen <= 65536)
        tl__buf_resize(l, &l->rbuf, &l->rcap, 131072);
    if (l->state != L_DEAD && l->wcap > BIG_BUF && l->wlen == 0)
        tl__buf_resize(l, &l->wbuf, &l->wcap, 0);
    if (l->state != L_DEAD && l->fcap > BIG_BUF && l->flen == 0)
        tl__buf_resize(l, &l->fbuf, &l->fcap, 0);
}

int tl__limit_queue(conn *l)
{
    size_t queued = l->wlen - l->woff;
    if (queued <= l->node->lim.max_queue)
        return 1;
    tl__link_drop(l, "the peer does not read: %zu bytes queued for it (the limit is %zu; "
                  "tl_node_config.max_queue)", queued, l->node->lim.max_queue);
    return 0;
}

int tl__queue_has_room(const conn *l)
{
    return l->wlen - l->woff < 4 * XFER_BATCH_BYTES;
}

/* ---- links and handshakes ---- */

/* The source of accepted socket fd, for the per-address share: its IPv4
 * address, or for a unix socket the peer's uid (1 << 32 set). */
static uint64_t source_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_INET)
        return ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr);
#ifdef SO_PEERCRED
    struct ucred cr;
    len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0)
        return (uint64_t)1 << 32 | cr.uid;
#endif
    return (uint64_t)1 << 33;
}

const char *tl__limit_accept(tl_node *n, int fd, uint64_t *src)
{
    if (n->nlinks >= n->lim.max_links)
        return "links";
    if (n->nhandshake >= n->lim.max_handshakes)
        return "handshakes";
    *src = source_of(fd);
    uint32_t same = 0;
    for (tl__link *s = n->shaking.next; s != &n->shaking; s = s->next)
        same += TL__CONTAINER(s, conn, shake)->src == *src;
    return same >= n->lim.per_addr ? "handshakes from that address" : NULL;
}

void tl__limit_refused(tl_node *n, const char *what)
{
    int64_t now = tl__mono_ns();
    n->refused_n++;
    if (n->refused_at && now - n->refused_at < 1000000000LL)
        return;
    tl__node_log(n, "refused %llu connection%s on %s: too many %s (tl_node_config limits)",
                 (unsigned long long)n->refused_n, n->refused_n == 1 ? "" : "s", n->laddr, what);
    n->refused_n = 0;
    n->refused_at = now;
}

/* ---- remote operations ---- */

int tl__limit_agents(const conn *l)
{
    size_t k = 0; /* a peer has a link or two, at most max_links */
    if (!l->p)
        return 0;
    for (const tl__link *u = l->p->ups.next; u != &l->p->ups; u = u->next)
        k += TL__CONTAINER(u, conn, upl)->agents.n;
    return k < l->node->lim.max_agents;
}

int tl__limit_requests(const conn *l)
{
    return l->rops.n < l->node->lim.max_requests;
}
