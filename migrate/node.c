/*
 * node.c -- links between runtimes, moving tasklets, remote channels.
 *
 * A node owns a runtime's hooks (src/internal.h) and an event loop over
 * non-blocking sockets.  Wire format (docs/PROTOCOL.md): every frame is a
 * 4-byte big-endian length and one msgpack array [type, ...].
 *
 *   handshake   HELLO -> <- HELLO, AUTH -> <- AUTH; nothing else counts
 *               until the peer's AUTH verified
 *   moving      XFER [[xid, snapshot]...] -> ; <- ACK [xid...] or NACK;
 *               FORGET [xid...] -> once the source has dropped them
 *   channels    OP [req, op, [id, name], value] -> ; <- DONE [req, code,
 *               msg, value]; CANCEL [req] -> when the waiter left
 *
 * Exactly once: the source keeps a moving tasklet in its outbox (and, with
 * a store, checkpoints that before sending); the destination remembers
 * every transfer id it took (in its store before acknowledging) until the
 * source says FORGET, so a resent transfer is acknowledged, not imported.
 *
 * Remote channel operations run at the channel's home as *agent*
 * tasklets ("tl.agent"): an agent does the send or receive there, with the
 * channel's own rendezvous rules, and answers with DONE.
 */
#include "../persist/persist.h"
#include "../persist/store_sqlite.h" /* transitional: the outbox and inbox SQL */
#include "node_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "libtasklet-node"
#define MAX_FRAME_DEFAULT ((uint32_t)64 << 20)
#define MAX_HANDSHAKE_FRAME 1024u
#define MAX_HANDSHAKES 64        /* connections not yet authenticated */
#define SPIN_NS 50000LL           /* polls without sleeping for this long ... */
#define SPIN_AFTER_IO_NS 1000000LL /* ... when a frame came within this */
#define HANDSHAKE_NS 10000000000LL /* to authenticate, from connecting */
#define XFER_BATCH_BYTES ((size_t)64 << 10) /* both sides work while the next one goes */
#define REDIAL_NS 100000000LL
#define MAX_REDIAL_NS 2000000000LL
#define READ_BUDGET ((size_t)8 << 20) /* bytes read from one link per round */

enum { M_HELLO = 1, M_AUTH = 2, M_ERROR = 3, M_XFER = 10, M_ACK = 11, M_NACK = 12,
       M_FORGET = 13, M_OP = 20, M_DONE = 21, M_CANCEL = 22, M_CANCELLED = 23 };
enum { L_CONNECTING, L_HANDSHAKE, L_UP, L_DEAD };

typedef struct dial dial;
typedef struct conn conn;

struct conn {
    conn *next;
    tl_node *node;
    int fd, state, client;
    dial *dial;
    char peer[64];
    char where[128];             /* for log lines */
    unsigned char key[crypto_auth_KEYBYTES];
    unsigned char mine[32], theirs[32];
    int hello_got;
    int64_t born;                /* handshakes must finish in time */
    unsigned char *rbuf, *wbuf;
    size_t rlen, rcap, woff, wlen, wcap;
};

struct dial {
    dial *next;
    char addr[256];
    conn *conn;
    int64_t next_try;
    int64_t backoff;  /* doubles while handshakes fail, up to 2 s */
};

typedef struct outx {       /* a transfer not yet acknowledged */
    struct outx *next;
    char xid[40], peer[64];
    void *data;             /* rt's allocator (tl_snapshot_free) */
    size_t len;
    int durable;            /* checkpointed (or no store) */
    conn *sent;             /* the link it went out on, or NULL */
    int tried;              /* sent at least once (it may have arrived) */
} outx;

typedef struct xidref { conn *l; char xid[40]; char peer[64]; } xidref;

/* A request of ours at a channel's home.  moving: the waiter is to move
 * to that node once the home answered the CANCEL sent for it. */
typedef struct rop { uint64_t req; tl_tasklet *t; conn *via; char moving[64]; } rop;
typedef struct agent { uint64_t req; tl_tasklet *t; conn *via; } agent; /* theirs, here */
typedef struct move { tl_tasklet *t; char peer[64]; } move;

/* A transfer id: 32 hex digits on the wire, two words here. */
typedef struct xkey {
    uint64_t hi, lo;
} xkey;

/* The transfer ids taken: open addressing, tombstones on delete. */
typedef struct xset {
    xkey *keys;
    unsigned char *st;      /* 0 empty, 1 full, 2 deleted */
    size_t cap, n, used;
} xset;

/* A growable array of T. */
#define VEC(T) struct { T *v; size_t n, cap; }
#define VEC_PUSH(vec, item)                                                        \
    ((vec).n < (vec).cap || vec_grow((void **)&(vec).v, &(vec).cap, sizeof *(vec).v) \
         ? ((vec).v[(vec).n++] = (item), 0) : -1)

struct tl_node {
    tl_runtime *rt;
    char id[64];
    unsigned char key[crypto_auth_KEYBYTES];
    int has_key;
    tl_store *store;
    tl_log_fn log;
    void *log_ud;
    uint32_t max_frame, batch;
    int lfd;
    char laddr[300], lpath[128];
    conn *links;
    dial *dials;
    outx *out, **out_tail;
    outx *next_send;       /* every transfer before it has been sent */
    size_t nout;
    VEC(outx *) xbatch;    /* scratch: one XFER frame's transfers */
    uint64_t xid_prefix, xid_seq;
    xset seen;
    VEC(xidref) acks;      /* to send once the imports are checkpointed */
    VEC(xidref) forgets;   /* to send once the outbox removal is */
    VEC(rop) rops;
    VEC(agent) agents;
    VEC(move) moves;
    uint64_t next_req;
    int need_ckpt, started, wake[2];
    int64_t accept_after;  /* accept paused until then (after an error) */
    int64_t last_io;       /* when a frame last came in */
    atomic_int stop;  /* tl_node_stop may come from another thread */
    tl_node_stats stats;
};

static int vec_grow(void **p, size_t *cap, size_t size)
{
    size_t ncap = *cap ? 2 * *cap : 16;
    void *np = realloc(*p, ncap * size);
    if (!np)
        return 0;
    *p = np;
    *cap = ncap;
    return 1;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void logf_(tl_node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(tl_node *n, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n->log)
        n->log(n->log_ud, line);
    else
        fprintf(stderr, "tasklet node %s: %s\n", n->id, line);
}

/* ---- transfer id set ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 32 lowercase hex digits into k; 0 if s is not that. */
static int xid_parse(const char *s, xkey *k)
{
    uint64_t w[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
        int v = hexval(s[i]);
        if (v < 0)
            return 0;
        w[i / 16] = w[i / 16] << 4 | (uint64_t)v;
    }
    if (s[32])
        return 0;
    k->hi = w[0];
    k->lo = w[1];
    return 1;
}

static void xid_format(xkey k, char out[40])
{
    snprintf(out, 40, "%016llx%016llx", (unsigned long long)k.hi, (unsigned long long)k.lo);
}

static uint64_t xkhash(xkey k)
{
    uint64_t x = k.hi ^ (k.lo * 0x9e3779b97f4a7c15ULL);
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ULL;
    return x ^ (x >> 32);
}

static size_t xset_find(const xset *s, xkey k, int *found)
{
    size_t j = xkhash(k) & (s->cap - 1), tomb = SIZE_MAX;
    *found = 0;
    for (;;) {
        if (s->st[j] == 0)
            return tomb != SIZE_MAX ? tomb : j;
        if (s->st[j] == 2 && tomb == SIZE_MAX)
            tomb = j;
        if (s->st[j] == 1 && s->keys[j].hi == k.hi && s->keys[j].lo == k.lo) {
            *found = 1;
            return j;
        }
        j = (j + 1) & (s->cap - 1);
    }
}

static int xset_has(const xset *s, xkey k)
{
    int found = 0;
    if (s->cap)
        xset_find(s, k, &found);
    return found;
}

static int xset_add(xset *s, xkey k)
{
    int found;
    if (2 * (s->used + 1) > s->cap) {
        xset old = *s;
        size_t ncap = 64;
        while (ncap < 4 * (s->n + 1))
            ncap *= 2; /* the rehash also drops the tombstones */
        s->keys = malloc(ncap * sizeof *s->keys);
        s->st = calloc(ncap, 1);
        if (!s->keys || !s->st) {
            free(s->keys);
            free(s->st);
            *s = old;
            return TL_ENOMEM;
        }
        s->cap = ncap;
        s->n = s->used = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.st[i] == 1) {
                size_t j = xset_find(s, old.keys[i], &found);
                s->keys[j] = old.keys[i];
                s->st[j] = 1;
                s->n++;
                s->used++;
            }
        free(old.keys);
        free(old.st);
    }
    size_t j = xset_find(s, k, &found);
    if (found)
        return TL_OK;
    s->used += s->st[j] == 0;
    s->keys[j] = k;
    s->st[j] = 1;
    s->n++;
    return TL_OK;
}

static void xset_del(xset *s, xkey k)
{
    int found = 0;
    size_t j = s->cap ? xset_find(s, k, &found) : 0;
    if (found) {
        s->st[j] = 2;
        s->n--;
    }
}

/* ---- frames out ---- */

static int wbuf_write(void *data, const char *p, size_t n)
{
    conn *l = data;
    if (l->wlen + n > l->wcap) {
        size_t ncap = l->wcap ? l->wcap : 4096;
        while (ncap < l->wlen + n)
            ncap *= 2;
        unsigned char *nb = realloc(l->wbuf, ncap);
        if (!nb)
            return -1;
        l->wbuf = nb;
        l->wcap = ncap;
    }
    memcpy(l->wbuf + l->wlen, p, n);
    l->wlen += n;
    return 0;
}

/* Starts a frame: a length placeholder, then the caller packs one array. */
static size_t frame_begin(conn *l, msgpack_packer *pk)
{
    static const char zero[4] = {0};
    size_t at = l->wlen;
    wbuf_write(l, zero, 4);
    msgpack_packer_init(pk, l, wbuf_write);
    return at;
}

static void frame_end(conn *l, size_t at)
{
    if (l->wlen < at + 4)
        return; /* out of memory: the link is dropped when flushed */
    uint32_t n = (uint32_t)(l->wlen - at - 4);
    l->wbuf[at] = (unsigned char)(n >> 24);
    l->wbuf[at + 1] = (unsigned char)(n >> 16);
    l->wbuf[at + 2] = (unsigned char)(n >> 8);
    l->wbuf[at + 3] = (unsigned char)n;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void drop_link(conn *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void flush(conn *l)
{
    while (l->state != L_DEAD && l->woff < l->wlen) {
        ssize_t k = send(l->fd, l->wbuf + l->woff, l->wlen - l->woff, MSG_NOSIGNAL);
        if (k > 0) {
            l->woff += (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            drop_link(l, "send failed: %s", strerror(errno));
            return;
        }
    }
    l->woff = l->wlen = 0;
}

static void send_error(conn *l, int code, const char *msg)
{
    msgpack_packer pk;
    size_t at = frame_begin(l, &pk);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint8(&pk, M_ERROR);
    msgpack_pack_int(&pk, code);
    pack_str(&pk, msg);
    frame_end(l, at);
    flush(l);
}

/* [type, req]: CANCEL and CANCELLED. */
static void send_req(conn *l, int type, uint64_t req)
{
    msgpack_packer pk;
    size_t at = frame_begin(l, &pk);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, (uint8_t)type);
    msgpack_pack_uint64(&pk, req);
    frame_end(l, at);
    flush(l);
}

/* DONE [req, code, msg|nil, value|nil]. */
static void send_done(conn *l, uint64_t req, int code, const char *msg, const tl_value *v)
{
    msgpack_packer pk;
    size_t at = frame_begin(l, &pk);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, M_DONE);
    msgpack_pack_uint64(&pk, req);
    msgpack_pack_int(&pk, code);
    if (msg)
        pack_str(&pk, msg);
    else
        msgpack_pack_nil(&pk);
    if (v)
        tl__pack_value(&pk, *v);
    else
        msgpack_pack_nil(&pk);
    frame_end(l, at);
    flush(l);
}

/* ---- links ---- */

static conn *up_link(tl_node *n, const char *peer)
{
    for (conn *l = n->links; l; l = l->next)
        if (l->state == L_UP && strcmp(l->peer, peer) == 0)
            return l;
    return NULL;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static conn *link_new(tl_node *n, int fd, int client, const char *where)
{
    conn *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->node = n;
    l->fd = fd;
    l->client = client;
    l->state = L_HANDSHAKE;
    l->born = mono_ns();
    snprintf(l->where, sizeof l->where, "%.127s", where);
    memcpy(l->key, n->key, sizeof l->key);
    randombytes_buf(l->mine, sizeof l->mine);
    l->next = n->links;
    n->links = l;
    return l;
}

static void send_hello(conn *l)
{
    msgpack_packer pk;
    size_t at = frame_begin(l, &pk);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, M_HELLO);
    pack_str(&pk, MAGIC);
    msgpack_pack_uint32(&pk, TL_PROTO_VERSION);
    pack_str(&pk, l->node->id);
    msgpack_pack_bin(&pk, sizeof l->mine);
    msgpack_pack_bin_body(&pk, l->mine, sizeof l->mine);
    frame_end(l, at);
    flush(l);
}

/* The MAC a side sends: over both nonces and both ids, client first, with
 * the role of the sender, so neither message can be replayed or
 * reflected. */
static void auth_mac(const conn *l, int from_client, unsigned char mac[crypto_auth_BYTES])
{
    const unsigned char *nc = l->client ? l->mine : l->theirs;
    const unsigned char *ns = l->client ? l->theirs : l->mine;
    const char *idc = l->client ? l->node->id : l->peer;
    const char *ids = l->client ? l->peer : l->node->id;
    unsigned char msg[8 + 1 + 64 + 2 * 64];
    size_t k = 0;
    memcpy(msg, "tl-auth1", 8);
    k = 8;
    msg[k++] = from_client ? 'C' : 'S';
    memcpy(msg + k, nc, 32);
    memcpy(msg + k + 32, ns, 32);
    k += 64;
    size_t a = strlen(idc), b = strlen(ids);
    memcpy(msg + k, idc, a + 1);
    k += a + 1;
    memcpy(msg + k, ids, b + 1);
    k += b + 1;
    crypto_auth(mac, msg, k, l->key);
}

static void send_auth(conn *l)
{
    unsigned char mac[crypto_auth_BYTES];
    msgpack_packer pk;
    auth_mac(l, l->client, mac);
    size_t at = frame_begin(l, &pk);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, M_AUTH);
    msgpack_pack_bin(&pk, sizeof mac);
    msgpack_pack_bin_body(&pk, mac, sizeof mac);
    frame_end(l, at);
    flush(l);
}

static void release_rop(rop *r)
{
    tl_tasklet_release(r->t);
}

/* Takes a link down: its pending remote operations fail, the agents it
 * started are killed, its unacknowledged transfers wait for a new link. */
static void drop_link(conn *l, const char *fmt, ...)
{
    tl_node *n = l->node;
    char why[300];
    va_list ap;
    if (l->state == L_DEAD)
        return;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    int was_up = l->state == L_UP;
    logf_(n, "link %s%s%s dropped: %s", l->where, l->peer[0] ? " to " : "", l->peer, why);
    l->state = L_DEAD;
    close(l->fd);
    l->fd = -1;
    n->stats.links_dropped += was_up;
    if (l->dial) {
        dial *d = l->dial;
        d->backoff = was_up || d->backoff < REDIAL_NS ? REDIAL_NS
                     : d->backoff * 2 > MAX_REDIAL_NS ? MAX_REDIAL_NS : d->backoff * 2;
        d->conn = NULL;
        d->next_try = mono_ns() + d->backoff;
        l->dial = NULL;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "the link to node %s was lost", l->peer[0] ? l->peer : "?");
    for (size_t i = 0; i < n->rops.n;) {
        if (n->rops.v[i].via != l) {
            i++;
            continue;
        }
        rop r = n->rops.v[i];
        n->rops.v[i] = n->rops.v[--n->rops.n];
        if (r.t->state == TL_BLOCKED && (r.t->flags & TL__TF_REMOTE))
            tl__remote_complete(r.t, TL_ELINK, msg, tl_nil());
        release_rop(&r);
    }
    for (size_t i = 0; i < n->agents.n;) {
        if (n->agents.v[i].via != l) {
            i++;
            continue;
        }
        agent a = n->agents.v[i];
        n->agents.v[i] = n->agents.v[--n->agents.n];
        if (a.t->state < TL_DONE)
            tl_kill(a.t);
        tl_tasklet_release(a.t);
    }
    for (outx *x = n->out; x; x = x->next)
        if (x->sent == l)
            x->sent = NULL;
    n->next_send = n->out;
    for (size_t i = 0; i < n->acks.n; i++)
        if (n->acks.v[i].l == l)
            n->acks.v[i].l = NULL;
}

static void free_link(conn *l)
{
    free(l->rbuf);
    free(l->wbuf);
    free(l);
}

static void reap_links(tl_node *n)
{
    conn **pp = &n->links;
    while (*pp) {
        conn *l = *pp;
        if (l->state == L_DEAD) {
            *pp = l->next;
            free_link(l);
        } else {
            pp = &l->next;
        }
    }
}

/* ---- addresses ---- */

typedef struct addr {
    struct sockaddr_storage sa;
    socklen_t len;
    int family;
} addr;

static int parse_addr(tl_node *n, const char *s, addr *a)
{
    memset(a, 0, sizeof *a);
    if (strncmp(s, "unix:", 5) == 0) {
        const char *path = s + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
        if (!*path || strlen(path) >= sizeof un->sun_path)
            return tl__seterr(n->rt, TL_EINVAL, "address '%s': a unix socket path of 1 to %zu "
                              "bytes", s, sizeof un->sun_path - 1);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, strlen(path) + 1);
        a->len = sizeof *un;
        a->family = AF_UNIX;
        return TL_OK;
    }
    if (strncmp(s, "tcp://", 6) == 0) {
        char host[64];
        const char *h = s + 6, *colon = strrchr(h, ':');
        char *end;
        if (!colon || (size_t)(colon - h) >= sizeof host)
            return tl__seterr(n->rt, TL_EINVAL, "address '%s': expected tcp://HOST:PORT", s);
        memcpy(host, h, (size_t)(colon - h));
        host[colon - h] = '\0';
        long port = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || port < 0 || port > 65535)
            return tl__seterr(n->rt, TL_EINVAL, "address '%s': bad port", s);
        struct sockaddr_in *in = (struct sockaddr_in *)&a->sa;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        if (!host[0] || strcmp(host, "localhost") == 0)
            snprintf(host, sizeof host, "127.0.0.1");
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
            return tl__seterr(n->rt, TL_EINVAL, "address '%s': '%s' is not an IPv4 address", s,
                              host);
        a->len = sizeof *in;
        a->family = AF_INET;
        return TL_OK;
    }
    return tl__seterr(n->rt, TL_EINVAL, "address '%s': expected tcp://HOST:PORT or unix:PATH", s);
}

/* ---- the runtime's hooks ---- */

/* Whether v can cross nodes: TL_ENOTSUP if it holds a channel or tasklet
 * reference, TL_ERANGE if nested deeper than 16. */
static int value_check(tl_value v, int depth)
{
    if (v.type == TL_V_CHAN || v.type == TL_V_TASKLET)
        return TL_ENOTSUP;
    size_t k = tl_len(v);
    if ((v.type == TL_V_ARRAY || v.type == TL_V_MAP) && depth >= 16)
        return TL_ERANGE;
    int rc = TL_OK;
    for (size_t i = 0; v.type == TL_V_ARRAY && i < k && rc == TL_OK; i++)
        rc = value_check(tl_array_at(v, i), depth + 1);
    for (size_t i = 0; v.type == TL_V_MAP && i < k && rc == TL_OK; i++) {
        rc = value_check(tl_map_key(v, i), depth + 1);
        if (rc == TL_OK)
            rc = value_check(tl_map_val(v, i), depth + 1);
    }
    return rc;
}

static int hook_remote_op(void *ud, tl_chan *ch, tl_tasklet *t, int op)
{
    tl_node *n = ud;
    const tl__remote *r = ch->remote;
    char label[160];
    conn *l = up_link(n, r->node);
    tl__chan_label(ch, label, sizeof label);
    if (!l)
        return tl__seterr(n->rt, TL_ELINK, "%s on %s: no link to node %s",
                          op == TL_OP_SEND ? "send" : "receive", label, r->node);
    int vc = op == TL_OP_SEND ? value_check(t->xfer, 0) : TL_OK;
    if (vc != TL_OK)
        return tl__seterr(n->rt, vc, "send on %s: a value crossing nodes cannot hold channel "
                          "or tasklet references or nest deeper than 16", label);
    rop ro = {++n->next_req, tl_tasklet_retain(t), l, ""};
    if (VEC_PUSH(n->rops, ro) != 0) {
        tl_tasklet_release(t);
        return tl__seterr(n->rt, TL_ENOMEM, "out of memory for a remote operation");
    }
    msgpack_packer pk;
    size_t at = frame_begin(l, &pk);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, M_OP);
    msgpack_pack_uint64(&pk, ro.req);
    msgpack_pack_uint8(&pk, (uint8_t)op);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, r->id);
    if (r->name)
        pack_str(&pk, r->name);
    else
        msgpack_pack_nil(&pk);
    if (op == TL_OP_SEND)
        tl__pack_value(&pk, t->xfer);
    else
        msgpack_pack_nil(&pk);
    frame_end(l, at);
    flush(l);
    if (l->state == L_DEAD) /* the request did not go: drop_link released it */
        return tl__seterr(n->rt, TL_ELINK, "%s on %s: the link to node %s was lost",
                          op == TL_OP_SEND ? "send" : "receive", label, r->node);
    return TL_OK;
}

static void hook_remote_cancel(void *ud, tl_chan *ch, tl_tasklet *t)
{
    tl_node *n = ud;
    (void)ch;
    for (size_t i = 0; i < n->rops.n; i++) {
        if (n->rops.v[i].t != t)
            continue;
        rop r = n->rops.v[i];
        n->rops.v[i] = n->rops.v[--n->rops.n];
        if (r.via->state == L_UP)
            send_req(r.via, M_CANCEL, r.req);
        tl_tasklet_release(r.t);
        return;
    }
}

static int hook_move(void *ud, tl_tasklet *t, const char *peer)
{
    tl_node *n = ud;
    if (strlen(peer) >= 64 || !up_link(n, peer))
        return tl__seterr(n->rt, TL_ELINK, "TL_MIGRATE to '%s': no link to that node", peer);
    move m;
    m.t = tl_tasklet_retain(t);
    snprintf(m.peer, sizeof m.peer, "%s", peer);
    if (VEC_PUSH(n->moves, m) != 0) {
        tl_tasklet_release(t);
        return tl__seterr(n->rt, TL_ENOMEM, "TL_MIGRATE: out of memory");
    }
    return TL_OK;
}

/* Takes suspended t out of the runtime into the outbox. */
static int depart(tl_node *n, tl_tasklet *t, const char *peer)
{
    outx *x = calloc(1, sizeof *x);
    if (!x)
        return tl__seterr(n->rt, TL_ENOMEM, "moving a tasklet: out of memory");
    /* a random 64-bit prefix per node instance, then a counter: unique
     * across restarts without a system call per transfer */
    xid_format((xkey){n->xid_prefix, ++n->xid_seq}, x->xid);
    int rc = tl__snapshot_save_moving(t, &x->data, &x->len);
    if (rc != TL_OK) {
        free(x);
        return rc;
    }
    if (x->len + 128 > n->max_frame) {
        size_t len = x->len;
        tl_snapshot_free(n->rt, x->data, x->len);
        free(x);
        return tl__seterr(n->rt, TL_ERANGE, "moving a tasklet: its snapshot (%zu bytes) is "
                          "larger than a frame may be (%u)", len, n->max_frame);
    }
    snprintf(x->peer, sizeof x->peer, "%s", peer);
    char msg[128];
    snprintf(msg, sizeof msg, "moved to node %s", peer);
    tl__tasklet_depart(t, TL_EMOVED, msg);
    x->durable = n->store == NULL;
    n->need_ckpt |= n->store != NULL;
    *n->out_tail = x;
    n->out_tail = &x->next;
    if (!n->next_send)
        n->next_send = x;
    n->nout++;
    return TL_OK;
}

static void hook_moves(void *ud)
{
    tl_node *n = ud;
    for (size_t i = 0; i < n->moves.n; i++) {
        tl_tasklet *t = n->moves.v[i].t;
        if (t->state == TL_BLOCKED && t->wait == TL_WAIT_MOVE) {
            tl__wake(t); /* it resumes after TL_MIGRATE, here or there */
            if (depart(n, t, n->moves.v[i].peer) != TL_OK)
                tl__deliver_error(t, n->rt->errcode, n->rt->errmsg);
        }
        tl_tasklet_release(t);
    }
    n->moves.n = 0;
}

static const tl__hooks node_hooks = {hook_remote_op, hook_remote_cancel, hook_move, hook_moves};

/* ---- agents: remote operations at the channel's home ---- */

typedef struct agent_l {
    tl_chan *ch;
    tl_value v;
    uint64_t req;
    uint32_t op;
} agent_l;

static void agent_done(tl_frame *f, agent_l *L);

static tl_status agent_step(tl_frame *f, void *locals)
{
    agent_l *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    if (L->op == TL_OP_SEND) {
        TL_SEND(f, L->ch, L->v);
    } else {
        TL_RECV(f, L->ch, L->v);
    }
    agent_done(f, L);
    TL_END(f);
}

static const tl_field agent_fields[] = {
    TL_FIELD(agent_l, ch, TL_T_CHAN),
    TL_FIELD(agent_l, v, TL_T_VALUE),
    TL_FIELD(agent_l, req, TL_T_U64),
    TL_FIELD(agent_l, op, TL_T_U32),
};
static const tl_func agent_fn = {"tl.agent", 1, agent_step, sizeof(agent_l), agent_fields,
                                 TL_COUNTOF(agent_fields), NULL};

static void agent_done(tl_frame *f, agent_l *L)
{
    tl_tasklet *t = tl_frame_tasklet(f);
    tl_node *n = t->rt->hooks_ud;
    int code = tl_frame_error(f);
    const char *msg = code ? tl_frame_errmsg(f) : NULL;
    int with_value = !code && L->op == TL_OP_RECV;
    if (with_value && (code = value_check(L->v, 0)) != TL_OK) {
        msg = "the value received cannot cross nodes (it holds a channel or tasklet "
              "reference, or is nested too deep)";
        with_value = 0;
    }
    for (size_t i = 0; n && i < n->agents.n; i++) {
        if (n->agents.v[i].t != t)
            continue;
        agent a = n->agents.v[i];
        n->agents.v[i] = n->agents.v[--n->agents.n];
        n->stats.remote_ops++;
        if (a.via->state == L_UP)
            send_done(a.via, a.req, code, msg, with_value ? &L->v : NULL);
        tl_tasklet_release(a.t);
        return;
    }
}

/* ---- messages in ---- */

static const msgpack_object *item(const msgpack_object *o, uint32_t i)
{
    return &o->via.array.ptr[i];
}

static int is_u(const msgpack_object *o) { return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER; }
static int is_i(const msgpack_object *o)
{
    return is_u(o) || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

/* Copies a msgpack string of 1..cap-1 bytes into buf; 0 if it is not one. */
static int get_str(const msgpack_object *o, char *buf, size_t cap)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 || o->via.str.size >= cap)
        return 0;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = '\0';
    return 1;
}

static int valid_id(const char *s)
{
    size_t k = strlen(s);
    if (k == 0 || k > 63)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static void on_hello(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char magic[32], peer[64];
    if (o->via.array.size < 5 || !get_str(item(o, 1), magic, sizeof magic) ||
        strcmp(magic, MAGIC) != 0) {
        drop_link(l, "not a libtasklet node (bad hello)");
        return;
    }
    if (!is_u(item(o, 2)) || item(o, 2)->via.u64 != TL_PROTO_VERSION) {
        char msg[160];
        unsigned long long v = is_u(item(o, 2)) ? item(o, 2)->via.u64 : 0;
        snprintf(msg, sizeof msg, "protocol version %llu is not supported; this node speaks %d",
                 v, TL_PROTO_VERSION);
        send_error(l, TL_EPROTO, msg);
        drop_link(l, "the peer speaks protocol version %llu, this node %d", v, TL_PROTO_VERSION);
        return;
    }
    if (!get_str(item(o, 3), peer, sizeof peer) || !valid_id(peer) ||
        item(o, 4)->type != MSGPACK_OBJECT_BIN || item(o, 4)->via.bin.size != 32) {
        drop_link(l, "malformed hello");
        return;
    }
    if (strcmp(peer, n->id) == 0) {
        drop_link(l, "the peer claims this node's own id '%s'", peer);
        return;
    }
    if (l->hello_got) {
        drop_link(l, "a second hello");
        return;
    }
    l->hello_got = 1;
    snprintf(l->peer, sizeof l->peer, "%s", peer);
    memcpy(l->theirs, item(o, 4)->via.bin.ptr, 32);
    send_auth(l);
}

static void on_auth(conn *l, const msgpack_object *o)
{
    unsigned char want[crypto_auth_BYTES];
    if (!l->hello_got || o->via.array.size < 2 || item(o, 1)->type != MSGPACK_OBJECT_BIN ||
        item(o, 1)->via.bin.size != crypto_auth_BYTES) {
        drop_link(l, "malformed authentication");
        return;
    }
    auth_mac(l, !l->client, want);
    if (sodium_memcmp(want, item(o, 1)->via.bin.ptr, sizeof want) != 0) {
        send_error(l, TL_EAUTH, "authentication failed");
        drop_link(l, "authentication failed: node '%s' does not hold the shared secret", l->peer);
        return;
    }
    l->state = L_UP;
    l->node->stats.links_up++;
    logf_(l->node, "link %s to %s up", l->where, l->peer);
}

static outx *take_outx(tl_node *n, const char *peer, const char *xid)
{
    for (outx **pp = &n->out; *pp; pp = &(*pp)->next) {
        outx *x = *pp;
        if (strcmp(x->xid, xid) == 0 && strcmp(x->peer, peer) == 0) {
            if (n->next_send == x)
                n->next_send = x->next;
            *pp = x->next;
            if (n->out_tail == &x->next)
                n->out_tail = pp;
            n->nout--;
            return x;
        }
    }
    return NULL;
}

static void free_outx(tl_node *n, outx *x)
{
    tl_snapshot_free(n->rt, x->data, x->len);
    free(x);
}

static void queue_ack(tl_node *n, conn *l, const char *xid)
{
    xidref r;
    r.l = l;
    snprintf(r.xid, sizeof r.xid, "%s", xid);
    snprintf(r.peer, sizeof r.peer, "%s", l->peer);
    if (VEC_PUSH(n->acks, r) != 0)
        drop_link(l, "out of memory");
}

static void on_xfer(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    const msgpack_object *items = item(o, 1);
    char xid[40];
    if (o->via.array.size < 2 || items->type != MSGPACK_OBJECT_ARRAY) {
        drop_link(l, "malformed transfer");
        return;
    }
    for (uint32_t i = 0; i < items->via.array.size && l->state == L_UP; i++) {
        const msgpack_object *it = item(items, i);
        xkey k;
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 2 ||
            !get_str(item(it, 0), xid, sizeof xid) || !xid_parse(xid, &k) ||
            item(it, 1)->type != MSGPACK_OBJECT_BIN) {
            drop_link(l, "malformed transfer item");
            return;
        }
        if (xset_has(&n->seen, k)) {
            n->stats.duplicates++;
            queue_ack(n, l, xid);
            continue;
        }
        tl_tasklet *t;
        int rc = tl__snapshot_import(n->rt, item(it, 1)->via.bin.ptr, item(it, 1)->via.bin.size,
                                     &t);
        if (rc == TL_OK && xset_add(&n->seen, k) != TL_OK) {
            tl__tasklet_depart(t, TL_EMOVED, "import undone: out of memory");
            rc = tl__seterr(n->rt, TL_ENOMEM, "out of memory");
        }
        if (rc != TL_OK) {
            logf_(n, "refused tasklet %s from %s: %s", xid, l->peer, n->rt->errmsg);
            msgpack_packer pk;
            size_t at = frame_begin(l, &pk);
            msgpack_pack_array(&pk, 4);
            msgpack_pack_uint8(&pk, M_NACK);
            pack_str(&pk, xid);
            msgpack_pack_int(&pk, rc);
            pack_str(&pk, n->rt->errmsg);
            frame_end(l, at);
            flush(l);
            continue;
        }
        n->stats.moved_in++;
        n->need_ckpt |= n->store != NULL;
        queue_ack(n, l, xid);
    }
}

static void on_ack(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char xid[40];
    const msgpack_object *xs = item(o, 1);
    if (o->via.array.size < 2 || xs->type != MSGPACK_OBJECT_ARRAY) {
        drop_link(l, "malformed acknowledgement");
        return;
    }
    for (uint32_t i = 0; i < xs->via.array.size; i++) {
        if (!get_str(item(xs, i), xid, sizeof xid)) {
            drop_link(l, "malformed acknowledgement");
            return;
        }
        outx *x = take_outx(n, l->peer, xid);
        if (!x)
            continue; /* a duplicate: already gone */
        free_outx(n, x);
        n->stats.moved_out++;
        n->need_ckpt |= n->store != NULL;
        xidref r;
        r.l = NULL;
        snprintf(r.xid, sizeof r.xid, "%s", xid);
        snprintf(r.peer, sizeof r.peer, "%s", l->peer);
        VEC_PUSH(n->forgets, r); /* if this fails, the peer keeps the id: harmless */
    }
}

static void on_nack(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char xid[40], msg[256] = "";
    if (o->via.array.size < 4 || !get_str(item(o, 1), xid, sizeof xid) || !is_i(item(o, 2))) {
        drop_link(l, "malformed refusal");
        return;
    }
    get_str(item(o, 3), msg, sizeof msg);
    int64_t code = is_u(item(o, 2)) ? 0 : item(o, 2)->via.i64;
    if (code >= 0 || code < INT32_MIN)
        code = TL_EPROTO;
    outx *x = take_outx(n, l->peer, xid);
    if (!x)
        return;
    n->stats.refused++;
    n->need_ckpt |= n->store != NULL;
    tl_tasklet *t;
    if (tl__snapshot_import(n->rt, x->data, x->len, &t) == TL_OK) {
        char full[400];
        snprintf(full, sizeof full, "node %s refused the tasklet: %s", l->peer, msg);
        tl_throw(t, (int)code, full);
    } else {
        logf_(n, "tasklet %s refused by %s could not come back: %s", xid, l->peer,
              n->rt->errmsg);
    }
    free_outx(n, x);
}

static void on_forget(conn *l, const msgpack_object *o)
{
    char xid[40];
    const msgpack_object *xs = item(o, 1);
    if (o->via.array.size < 2 || xs->type != MSGPACK_OBJECT_ARRAY) {
        drop_link(l, "malformed forget");
        return;
    }
    for (uint32_t i = 0; i < xs->via.array.size; i++) {
        xkey k;
        if (get_str(item(xs, i), xid, sizeof xid) && xid_parse(xid, &k))
            xset_del(&l->node->seen, k);
    }
}

static void on_op(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char name[256];
    if (o->via.array.size < 5 || !is_u(item(o, 1)) || !is_u(item(o, 2)) ||
        (item(o, 2)->via.u64 != TL_OP_SEND && item(o, 2)->via.u64 != TL_OP_RECV) ||
        item(o, 3)->type != MSGPACK_OBJECT_ARRAY || item(o, 3)->via.array.size != 2 ||
        !is_u(item(item(o, 3), 0))) {
        drop_link(l, "malformed channel operation");
        return;
    }
    uint64_t req = item(o, 1)->via.u64, id = item(item(o, 3), 0)->via.u64;
    int named = get_str(item(item(o, 3), 1), name, sizeof name);
    tl_chan *ch = named ? tl_chan_find_name(n->rt, name) : tl_chan_find(n->rt, id);
    if (!ch || ch->remote) {
        char msg[400];
        if (named)
            snprintf(msg, sizeof msg, "no channel %s/%s", n->id, name);
        else
            snprintf(msg, sizeof msg, "no channel %s/#%llu", n->id, (unsigned long long)id);
        send_done(l, req, TL_ENOENT, msg, NULL);
        return;
    }
    agent_l args;
    memset(&args, 0, sizeof args);
    args.ch = ch;
    args.req = req;
    args.op = (uint32_t)item(o, 2)->via.u64;
    if (args.op == TL_OP_SEND && tl__unpack_value(n->rt, item(o, 4), &args.v) != TL_OK) {
        send_done(l, req, TL_EPROTO, "the value sent is malformed or holds a reference",
                  NULL);
        return;
    }
    tl_tasklet *t = NULL;
    int rc = tl_spawn(n->rt, &agent_fn, &args, sizeof args, &t);
    tl_release(args.v);
    agent a = {req, t, l};
    if (rc == TL_OK && VEC_PUSH(n->agents, a) != 0) {
        tl_kill(t);
        tl_tasklet_release(t);
        rc = TL_ENOMEM;
    }
    if (rc != TL_OK)
        send_done(l, req, rc, "the home node could not start the operation", NULL);
}

/* Takes our request req on link l out of the table into *out; 0 if none. */
static int take_rop(tl_node *n, conn *l, uint64_t req, rop *out)
{
    for (size_t i = 0; i < n->rops.n; i++)
        if (n->rops.v[i].req == req && n->rops.v[i].via == l) {
            *out = n->rops.v[i];
            n->rops.v[i] = n->rops.v[--n->rops.n];
            return 1;
        }
    return 0;
}

static void on_done(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char msg[256] = "";
    if (o->via.array.size < 5 || !is_u(item(o, 1)) || !is_i(item(o, 2))) {
        drop_link(l, "malformed answer");
        return;
    }
    rop r;
    if (!take_rop(n, l, item(o, 1)->via.u64, &r))
        return; /* an answer for a waiter that left (killed, moved): dropped */
    int64_t code = is_u(item(o, 2)) ? (item(o, 2)->via.u64 ? 1 : 0) : item(o, 2)->via.i64;
    tl_value v = tl_nil();
    if (code > 0 || code < INT32_MIN)
        code = TL_EPROTO;
    get_str(item(o, 3), msg, sizeof msg);
    if (code == 0 && tl__unpack_value(n->rt, item(o, 4), &v) != TL_OK) {
        code = TL_EPROTO;
        snprintf(msg, sizeof msg, "node %s answered with a malformed value", l->peer);
    }
    if (r.t->state == TL_BLOCKED && (r.t->flags & TL__TF_REMOTE))
        tl__remote_complete(r.t, (int)code, msg, v);
    else
        tl_release(v);
    if (r.moving[0] && r.t->state == TL_RUNNABLE && depart(n, r.t, r.moving) != TL_OK)
        logf_(n, "tasklet #%llu could not move to %s: %s", (unsigned long long)r.t->id,
              r.moving, n->rt->errmsg);
    release_rop(&r);
}

static void on_cancel(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    if (o->via.array.size < 2 || !is_u(item(o, 1))) {
        drop_link(l, "malformed cancel");
        return;
    }
    for (size_t i = 0; i < n->agents.n; i++) {
        if (n->agents.v[i].req != item(o, 1)->via.u64 || n->agents.v[i].via != l)
            continue;
        agent a = n->agents.v[i];
        n->agents.v[i] = n->agents.v[--n->agents.n];
        if (a.t->state < TL_DONE)
            tl_kill(a.t);
        tl_tasklet_release(a.t);
        /* the operation did not happen: say so (its DONE, had it
         * happened, would have gone out before this) */
        send_req(l, M_CANCELLED, a.req);
        return;
    }
}

static int depart(tl_node *n, tl_tasklet *t, const char *peer);

/* The home stopped our request for a waiter that is moving: it moves
 * now, still waiting on the remote channel. */
static void on_cancelled(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    if (o->via.array.size < 2 || !is_u(item(o, 1))) {
        drop_link(l, "malformed cancelled");
        return;
    }
    rop r;
    if (!take_rop(n, l, item(o, 1)->via.u64, &r))
        return;
    if (r.moving[0] && r.t->state == TL_BLOCKED) {
        r.t->flags &= (uint16_t)~TL__TF_REMOTE;
        if (depart(n, r.t, r.moving) != TL_OK)
            logf_(n, "tasklet #%llu could not move to %s: %s",
                  (unsigned long long)r.t->id, r.moving, n->rt->errmsg);
    } else if (r.t->state == TL_BLOCKED && (r.t->flags & TL__TF_REMOTE)) {
        /* not asked for: the operation did not happen; say so */
        tl__remote_complete(r.t, TL_EPROTO, "the channel's home cancelled the operation",
                            tl_nil());
    }
    release_rop(&r);
}

/* One frame from l: p[0..len) holds exactly one msgpack value. */
static void on_frame(conn *l, const unsigned char *p, size_t len)
{
    msgpack_unpacked up;
    size_t off = 0;
    if (tl__msgpack_check(p, len, 24) != len) {
        drop_link(l, "malformed frame (%zu bytes)", len);
        return;
    }
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, (const char *)p, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        up.data.type != MSGPACK_OBJECT_ARRAY || up.data.via.array.size < 1 ||
        !is_u(item(&up.data, 0))) {
        msgpack_unpacked_destroy(&up);
        drop_link(l, "malformed frame (%zu bytes)", len);
        return;
    }
    const msgpack_object *o = &up.data;
    uint64_t type = item(o, 0)->via.u64;
    if (type == M_ERROR) {
        char msg[256] = "?";
        if (o->via.array.size >= 3)
            get_str(item(o, 2), msg, sizeof msg);
        drop_link(l, "the peer says: %s", msg);
    } else if (l->state != L_UP && type == M_HELLO) {
        on_hello(l, o);
    } else if (l->state != L_UP && type == M_AUTH) {
        on_auth(l, o);
    } else if (l->state != L_UP) {
        drop_link(l, "message %llu before authentication", (unsigned long long)type);
    } else {
        switch (type) {
        case M_XFER: on_xfer(l, o); break;
        case M_ACK: on_ack(l, o); break;
        case M_NACK: on_nack(l, o); break;
        case M_FORGET: on_forget(l, o); break;
        case M_OP: on_op(l, o); break;
        case M_DONE: on_done(l, o); break;
        case M_CANCEL: on_cancel(l, o); break;
        case M_CANCELLED: on_cancelled(l, o); break;
        default: drop_link(l, "unknown message type %llu", (unsigned long long)type);
        }
    }
    msgpack_unpacked_destroy(&up);
}

/* A frame's length prefix. */
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Splits l->rbuf into frames. */
static void on_bytes(conn *l)
{
    tl_node *n = l->node;
    size_t off = 0;
    while (l->state != L_DEAD && l->rlen - off >= 4) {
        const unsigned char *p = l->rbuf + off;
        n->last_io = mono_ns();
        uint32_t len = be32(p);
        uint32_t limit = l->state == L_UP ? n->max_frame : MAX_HANDSHAKE_FRAME;
        if (len == 0 || len > limit) {
            drop_link(l, "a frame of %u bytes (the limit is %u)", len, limit);
            return;
        }
        if (l->rlen - off - 4 < len)
            break;
        on_frame(l, p + 4, len);
        off += 4 + (size_t)len;
    }
    if (l->state == L_DEAD || off == 0)
        return;
    memmove(l->rbuf, l->rbuf + off, l->rlen - off);
    l->rlen -= off;
}

static void on_readable(conn *l)
{
    size_t budget = READ_BUDGET;
    while (l->state != L_DEAD && budget) {
        if (l->rcap - l->rlen < 65536) {
            /* before authentication a frame is at most 1 KiB: a small
             * buffer, so that strangers cost little */
            size_t ncap = l->state != L_UP ? 4 * MAX_HANDSHAKE_FRAME + 65536
                          : l->rcap ? 2 * l->rcap : 131072;
            if (l->state != L_UP && l->rcap >= ncap) {
                drop_link(l, "too much data before authentication");
                return;
            }
            unsigned char *nb = realloc(l->rbuf, ncap);
            if (!nb) {
                drop_link(l, "out of memory");
                return;
            }
            l->rbuf = nb;
            l->rcap = ncap;
        }
        ssize_t k = recv(l->fd, l->rbuf + l->rlen, l->rcap - l->rlen, 0);
        if (k > 0) {
            int drained = (size_t)k < l->rcap - l->rlen; /* a short read: nothing more now */
            l->rlen += (size_t)k;
            budget = (size_t)k < budget ? budget - (size_t)k : 0;
            on_bytes(l);
            if (drained && l->state != L_DEAD)
                budget = 0; /* poll says when more comes; no recv for EAGAIN */
            /* a frame larger than the buffer: grow it to fit */
            if (l->state != L_DEAD && l->rlen >= 4) {
                const unsigned char *p = l->rbuf;
                size_t need = 4 + (size_t)be32(p);
                if (need > l->rcap && need <= (size_t)l->node->max_frame + 4) {
                    unsigned char *nb = realloc(l->rbuf, need);
                    if (!nb) {
                        drop_link(l, "out of memory for a frame of %zu bytes", need);
                        return;
                    }
                    l->rbuf = nb;
                    l->rcap = need;
                }
            }
        } else if (k == 0) {
            drop_link(l, "closed by the peer");
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            drop_link(l, "receive failed: %s", strerror(errno));
        }
    }
}

/* ---- the node's tables in the store ---- */

static int bind_exec(sqlite3_stmt *s) { return sqlite3_step(s) == SQLITE_DONE ? 0 : -1; }

static int write_tables(void *ud, void *dbp)
{
    tl_node *n = ud;
    sqlite3 *db = dbp;
    sqlite3_stmt *s = NULL;
    if (!db) { /* the store is closing: from now on, memory only */
        n->store = NULL;
        n->need_ckpt = 0;
        for (outx *x = n->out; x; x = x->next)
            x->durable = 1;
        return TL_OK;
    }
    int bad = sqlite3_exec(db, "DELETE FROM outbox; DELETE FROM inbox;", NULL, NULL, NULL) !=
              SQLITE_OK;
    if (!bad)
        bad = sqlite3_prepare_v2(db, "INSERT INTO outbox VALUES(?,?,?)", -1, &s, NULL) != SQLITE_OK;
    for (outx *x = n->out; x && !bad; x = x->next) {
        sqlite3_bind_text(s, 1, x->xid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, x->peer, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 3, x->data, (int)x->len, SQLITE_STATIC);
        bad = bind_exec(s);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    s = NULL;
    if (!bad)
        bad = sqlite3_prepare_v2(db, "INSERT INTO inbox VALUES(?,'',0)", -1, &s, NULL) != SQLITE_OK;
    for (size_t i = 0; i < n->seen.cap && !bad; i++) {
        if (n->seen.st[i] != 1)
            continue;
        char xid[40];
        xid_format(n->seen.keys[i], xid);
        sqlite3_bind_text(s, 1, xid, -1, SQLITE_TRANSIENT);
        bad = bind_exec(s);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    return bad ? TL_ESTORE : TL_OK;
}

static int read_tables(tl_node *n)
{
    sqlite3 *db = tl__store_sqlite(n->store);
    sqlite3_stmt *s = NULL;
    int rc = TL_OK;
    if (sqlite3_prepare_v2(db, "SELECT xid, peer, data FROM outbox ORDER BY rowid", -1, &s,
                           NULL) != SQLITE_OK)
        return tl__seterr(n->rt, TL_ESTORE, "reading the outbox: %s", sqlite3_errmsg(db));
    while (rc == TL_OK && sqlite3_step(s) == SQLITE_ROW) {
        outx *x = calloc(1, sizeof *x);
        size_t len = (size_t)sqlite3_column_bytes(s, 2);
        void *data = x ? tl__alloc(n->rt, len ? len : 1) : NULL;
        if (!data) {
            free(x);
            rc = tl__seterr(n->rt, TL_ENOMEM, "reading the outbox: out of memory");
            break;
        }
        memcpy(data, sqlite3_column_blob(s, 2), len);
        snprintf(x->xid, sizeof x->xid, "%s", (const char *)sqlite3_column_text(s, 0));
        snprintf(x->peer, sizeof x->peer, "%s", (const char *)sqlite3_column_text(s, 1));
        x->data = data;
        x->len = len;
        x->durable = 1;
        *n->out_tail = x;
        n->out_tail = &x->next;
        if (!n->next_send)
            n->next_send = x;
        n->nout++;
    }
    sqlite3_finalize(s);
    if (rc == TL_OK &&
        sqlite3_prepare_v2(db, "SELECT xid FROM inbox", -1, &s, NULL) == SQLITE_OK) {
        while (rc == TL_OK && sqlite3_step(s) == SQLITE_ROW) {
            xkey k;
            const char *xid = (const char *)sqlite3_column_text(s, 0);
            if (xid && xid_parse(xid, &k))
                rc = xset_add(&n->seen, k);
        }
        sqlite3_finalize(s);
    }
    return rc;
}

/* After a restart: agents (whose requesters are gone) are killed, and
 * waiters on remote channels (whose requests are lost) fail. */
static void agent_visit(void *obj, void *ud)
{
    tl_tasklet *t = obj;
    VEC(tl_tasklet *) *v = ud;
    if (t->state < TL_DONE && t->top && t->top->fn->fn == &agent_fn)
        VEC_PUSH(*v, tl_tasklet_retain(t));
}

static int start(tl_node *n)
{
    VEC(tl_tasklet *) stale = {NULL, 0, 0};
    n->started = 1;
    tl__slab_each(&n->rt->tasklets, TL__MAGIC_TASK, agent_visit, &stale);
    for (size_t i = 0; i < stale.n; i++) {
        if (stale.v[i]->state < TL_DONE)
            tl_kill(stale.v[i]);
        tl_tasklet_release(stale.v[i]);
    }
    free(stale.v);
    VEC(tl_chan *) proxies = {NULL, 0, 0};
    for (tl__link *l = n->rt->chans.next; l != &n->rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->remote && VEC_PUSH(proxies, tl_chan_retain(ch)) != 0)
            tl_chan_release(ch);
    }
    for (size_t i = 0; i < proxies.n; i++) {
        tl_chan_fail_waiters(proxies.v[i], TL_ELINK, "the request on a remote channel was "
                             "lost in a restart");
        tl_chan_release(proxies.v[i]);
    }
    free(proxies.v);
    return TL_OK;
}

/* Checkpoints what transfers need, then sends what may go: XFERs that are
 * durable, ACKs for durable imports, FORGETs for durable removals. */
static int settle(tl_node *n)
{
    if (n->need_ckpt && n->store) {
        tl__store_touch(n->store);
        int rc = tl_store_checkpoint(n->store);
        if (rc != TL_OK)
            return tl__seterr(n->rt, rc, "checkpoint for a transfer: %s",
                              tl_store_errmsg(n->store));
        n->need_ckpt = 0;
        for (outx *x = n->next_send; x; x = x->next)
            x->durable = 1;
    }
    if (!n->need_ckpt) {
        for (size_t i = 0; i < n->acks.n; i++) {
            conn *l = n->acks.v[i].l;
            size_t j = i;
            if (!l || l->state != L_UP)
                continue;
            msgpack_packer pk;
            size_t at = frame_begin(l, &pk);
            size_t cnt = 0;
            for (j = i; j < n->acks.n; j++)
                cnt += n->acks.v[j].l == l;
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint8(&pk, M_ACK);
            msgpack_pack_array(&pk, cnt);
            for (j = i; j < n->acks.n; j++)
                if (n->acks.v[j].l == l) {
                    pack_str(&pk, n->acks.v[j].xid);
                    n->acks.v[j].l = NULL;
                }
            frame_end(l, at); /* flushed below, with what else goes */
        }
        n->acks.n = 0;
        for (size_t i = 0; i < n->forgets.n; i++) {
            conn *l = n->forgets.v[i].peer[0] ? up_link(n, n->forgets.v[i].peer) : NULL;
            size_t cnt = 0;
            if (!l)
                continue; /* kept for when a link to the peer is up */
            for (size_t j = i; j < n->forgets.n; j++)
                cnt += strcmp(n->forgets.v[j].peer, l->peer) == 0;
            msgpack_packer pk;
            size_t at = frame_begin(l, &pk);
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint8(&pk, M_FORGET);
            msgpack_pack_array(&pk, cnt);
            for (size_t j = i; j < n->forgets.n; j++)
                if (strcmp(n->forgets.v[j].peer, l->peer) == 0) {
                    pack_str(&pk, n->forgets.v[j].xid);
                    n->forgets.v[j].peer[0] = '\0';
                }
            frame_end(l, at);
        }
        size_t kept = 0; /* those whose peer has no link now wait for one */
        for (size_t i = 0; i < n->forgets.n; i++)
            if (n->forgets.v[i].peer[0])
                n->forgets.v[kept++] = n->forgets.v[i];
        n->forgets.n = kept;
    }
    /* transfers: batched per link, in order */
    while (n->next_send && n->next_send->sent)
        n->next_send = n->next_send->next;
    for (conn *l = n->links; l; l = l->next) {
        size_t bytes = 0;
        n->xbatch.n = 0;
        for (outx *x = n->next_send; x && l->state == L_UP; x = x->next) {
            if (x->sent || !x->durable || strcmp(x->peer, l->peer) != 0)
                continue;
            if (n->xbatch.n && bytes + x->len > XFER_BATCH_BYTES)
                break;
            if (VEC_PUSH(n->xbatch, x) != 0)
                break;
            bytes += x->len;
        }
        if (!n->xbatch.n) {
            if (l->state != L_DEAD)
                flush(l);
            continue;
        }
        msgpack_packer pk;
        size_t at = frame_begin(l, &pk);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint8(&pk, M_XFER);
        msgpack_pack_array(&pk, n->xbatch.n);
        for (size_t i = 0; i < n->xbatch.n; i++) {
            outx *x = n->xbatch.v[i];
            msgpack_pack_array(&pk, 2);
            pack_str(&pk, x->xid);
            msgpack_pack_bin(&pk, x->len);
            msgpack_pack_bin_body(&pk, x->data, x->len);
            x->sent = l;
            x->tried = 1;
        }
        frame_end(l, at);
        flush(l);
    }
    return TL_OK;
}

/* ---- dialing, accepting ---- */

static void dial_now(tl_node *n, dial *d)
{
    addr a;
    if (parse_addr(n, d->addr, &a) != TL_OK)
        return;
    int fd = socket(a.family, SOCK_STREAM, 0);
    if (fd < 0) {
        d->next_try = mono_ns() + REDIAL_NS;
        return;
    }
    set_nonblock(fd);
    if (a.family == AF_INET) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int rc = connect(fd, (struct sockaddr *)&a.sa, a.len);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        d->next_try = mono_ns() + REDIAL_NS;
        return;
    }
    conn *l = link_new(n, fd, 1, d->addr);
    if (!l) {
        close(fd);
        d->next_try = mono_ns() + REDIAL_NS;
        return;
    }
    l->dial = d;
    d->conn = l;
    if (rc == 0) {
        send_hello(l);
    } else {
        l->state = L_CONNECTING;
    }
}

static void on_connected(conn *l)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        /* quietly: the peer may not be up yet */
        l->state = L_DEAD;
        close(l->fd);
        if (l->dial) {
            l->dial->conn = NULL;
            l->dial->next_try = mono_ns() + REDIAL_NS;
        }
        return;
    }
    l->state = L_HANDSHAKE;
    send_hello(l);
}

static void on_accept(tl_node *n)
{
    size_t pending = 0;
    for (conn *l = n->links; l; l = l->next)
        pending += l->state == L_HANDSHAKE;
    for (;;) {
        int fd = accept(n->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                /* out of descriptors, say: stop listening for a moment
                 * rather than spin on a listener that stays readable */
                logf_(n, "accept on %s: %s", n->laddr, strerror(errno));
                n->accept_after = mono_ns() + REDIAL_NS;
            }
            return;
        }
        if (pending >= MAX_HANDSHAKES) {
            close(fd);
            logf_(n, "refused a connection on %s: %d handshakes already pending", n->laddr,
                  MAX_HANDSHAKES);
            continue;
        }
        pending++;
        set_nonblock(fd);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *l = link_new(n, fd, 0, n->laddr);
        if (!l) {
            close(fd);
            return;
        }
        send_hello(l);
    }
}

/* ---- public API ---- */

int tl_node_new(tl_runtime *rt, const tl_node_config *cfg, tl_node **out)
{
    if (!rt || rt->magic != TL__MAGIC_RT || !cfg || !out)
        return TL_EMISUSE;
    *out = NULL;
    if (!cfg->node_id || !valid_id(cfg->node_id))
        return tl__seterr(rt, TL_EINVAL, "tl_node_new: the node id must be 1 to 63 bytes of "
                          "[A-Za-z0-9._-]");
    if (cfg->secret && cfg->secret_len < 16)
        return tl__seterr(rt, TL_EINVAL, "tl_node_new: the secret must be at least 16 bytes");
    if (rt->hooks)
        return tl__seterr(rt, TL_EEXIST, "tl_node_new: this runtime already has a node");
    if (cfg->store && rt->store != cfg->store)
        return tl__seterr(rt, TL_EINVAL, "tl_node_new: the store is not attached to this "
                          "runtime");
    if (sodium_init() < 0)
        return tl__seterr(rt, TL_EIO, "tl_node_new: libsodium failed to initialize");
    tl_node *n = calloc(1, sizeof *n);
    if (!n)
        return tl__seterr(rt, TL_ENOMEM, "tl_node_new: out of memory");
    n->rt = rt;
    snprintf(n->id, sizeof n->id, "%s", cfg->node_id);
    if (cfg->secret) {
        crypto_generichash(n->key, sizeof n->key, cfg->secret, cfg->secret_len,
                           (const unsigned char *)"libtasklet-node", 15);
        n->has_key = 1;
    }
    n->store = cfg->store;
    n->log = cfg->log;
    n->log_ud = cfg->log_ud;
    n->max_frame = cfg->max_frame && cfg->max_frame < MAX_FRAME_DEFAULT ? cfg->max_frame
                                                                         : MAX_FRAME_DEFAULT;
    n->batch = cfg->batch ? cfg->batch : 1024;
    n->lfd = -1;
    n->out_tail = &n->out;
    randombytes_buf(&n->xid_prefix, sizeof n->xid_prefix);
    if (pipe(n->wake) != 0) {
        free(n);
        return tl__seterr(rt, TL_EIO, "tl_node_new: pipe: %s", strerror(errno));
    }
    set_nonblock(n->wake[0]);
    set_nonblock(n->wake[1]);
    int rc = tl_register(rt, &agent_fn);
    if (rc != TL_OK && rc != TL_EEXIST) {
        close(n->wake[0]);
        close(n->wake[1]);
        free(n);
        return rc;
    }
    tl_set_node_id(rt, n->id);
    /* the outbox and inbox come in now: a checkpoint before the first poll
     * writes them back whole */
    rc = n->store ? read_tables(n) : TL_OK;
    if (rc != TL_OK) {
        while (n->out) {
            outx *x = n->out;
            n->out = x->next;
            free_outx(n, x);
        }
        free(n->seen.keys);
        free(n->seen.st);
        close(n->wake[0]);
        close(n->wake[1]);
        free(n);
        return rc;
    }
    if (n->store)
        tl__store_set_extra(n->store, write_tables, n);
    rt->hooks = &node_hooks;
    rt->hooks_ud = n;
    *out = n;
    return TL_OK;
}

void tl_node_free(tl_node *n)
{
    if (!n)
        return;
    for (conn *l = n->links; l; l = l->next)
        drop_link(l, "the node is closing");
    reap_links(n);
    for (size_t i = 0; i < n->moves.n; i++)
        tl_tasklet_release(n->moves.v[i].t);
    while (n->dials) {
        dial *d = n->dials;
        n->dials = d->next;
        free(d);
    }
    /* With a store, the outbox is made durable (the next node on the store
     * resends it).  Otherwise, or if that checkpoint fails, transfers that
     * never left come back; those sent and not yet acknowledged may have
     * arrived and are reported. */
    int durable = n->store != NULL;
    if (n->store && n->need_ckpt) {
        tl__store_touch(n->store);
        durable = tl_store_checkpoint(n->store) == TL_OK;
        for (outx *x = n->out; durable && x; x = x->next)
            x->durable = 1;
        if (!durable)
            logf_(n, "closing: the outbox could not be checkpointed: %s",
                  tl_store_errmsg(n->store));
    }
    while (n->out) {
        outx *x = n->out;
        tl_tasklet *t;
        n->out = x->next;
        if (durable && x->durable) {
            free_outx(n, x);
            continue;
        }
        if (!x->tried && tl__snapshot_import(n->rt, x->data, x->len, &t) == TL_OK)
            tl_throw(t, TL_ELINK, "the node closed before the tasklet could move");
        else
            logf_(n, "transfer %s to %s was not acknowledged before the node closed: the "
                  "tasklet may or may not have arrived", x->xid, x->peer);
        free_outx(n, x);
    }
    if (n->store)
        tl__store_set_extra(n->store, NULL, NULL);
    if (n->lfd >= 0)
        close(n->lfd);
    if (n->lpath[0])
        unlink(n->lpath);
    close(n->wake[0]);
    close(n->wake[1]);
    n->rt->hooks = NULL;
    n->rt->hooks_ud = NULL;
    free(n->seen.keys);
    free(n->seen.st);
    free(n->acks.v);
    free(n->forgets.v);
    free(n->rops.v);
    free(n->agents.v);
    free(n->moves.v);
    free(n->xbatch.v);
    free(n);
}

tl_runtime *tl_node_runtime(const tl_node *n) { return n ? n->rt : NULL; }
const char *tl_node_name(const tl_node *n) { return n ? n->id : ""; }
const char *tl_node_errmsg(const tl_node *n) { return n ? tl_errmsg(n->rt) : ""; }
const char *tl_node_address(const tl_node *n) { return n ? n->laddr : ""; }

int tl_node_listen(tl_node *n, const char *where)
{
    addr a;
    if (!n || !where)
        return TL_EMISUSE;
    if (!n->has_key)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_listen: configure a shared secret first");
    if (n->lfd >= 0)
        return tl__seterr(n->rt, TL_EEXIST, "tl_node_listen: already listening on %s", n->laddr);
    int rc = parse_addr(n, where, &a);
    if (rc != TL_OK)
        return rc;
    int fd = socket(a.family, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0)
        return tl__seterr(n->rt, TL_EIO, "tl_node_listen %s: %s", where, strerror(errno));
    if (a.family == AF_INET)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    else
        unlink(((struct sockaddr_un *)&a.sa)->sun_path);
    if (bind(fd, (struct sockaddr *)&a.sa, a.len) != 0 || listen(fd, 64) != 0) {
        rc = tl__seterr(n->rt, TL_EIO, "tl_node_listen %s: %s", where, strerror(errno));
        close(fd);
        return rc;
    }
    set_nonblock(fd);
    n->lfd = fd;
    if (a.family == AF_INET) {
        struct sockaddr_in in;
        socklen_t len = sizeof in;
        char host[INET_ADDRSTRLEN];
        getsockname(fd, (struct sockaddr *)&in, &len);
        inet_ntop(AF_INET, &in.sin_addr, host, sizeof host);
        snprintf(n->laddr, sizeof n->laddr, "tcp://%s:%u", host, ntohs(in.sin_port));
    } else {
        snprintf(n->laddr, sizeof n->laddr, "%s", where);
        snprintf(n->lpath, sizeof n->lpath, "%s", ((struct sockaddr_un *)&a.sa)->sun_path);
    }
    return TL_OK;
}

int tl_node_connect(tl_node *n, const char *where)
{
    addr a;
    if (!n || !where)
        return TL_EMISUSE;
    if (!n->has_key)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_connect: configure a shared secret first");
    if (strlen(where) >= sizeof n->dials->addr)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_connect: address too long");
    int rc = parse_addr(n, where, &a);
    if (rc != TL_OK)
        return rc;
    dial *d = calloc(1, sizeof *d);
    if (!d)
        return tl__seterr(n->rt, TL_ENOMEM, "tl_node_connect: out of memory");
    snprintf(d->addr, sizeof d->addr, "%s", where);
    d->next = n->dials;
    n->dials = d;
    dial_now(n, d);
    return TL_OK;
}

int tl_node_pair(tl_node *a, tl_node *b)
{
    int sv[2];
    unsigned char key[crypto_auth_KEYBYTES];
    if (!a || !b || a == b)
        return TL_EMISUSE;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return tl__seterr(a->rt, TL_EIO, "tl_node_pair: %s", strerror(errno));
    set_nonblock(sv[0]);
    set_nonblock(sv[1]);
    conn *la = link_new(a, sv[0], 1, "pair");
    conn *lb = la ? link_new(b, sv[1], 0, "pair") : NULL;
    if (!la || !lb) {
        if (la) {
            a->links = la->next;
            free_link(la);
        }
        close(sv[0]);
        close(sv[1]);
        return tl__seterr(a->rt, TL_ENOMEM, "tl_node_pair: out of memory");
    }
    randombytes_buf(key, sizeof key); /* the pair's own secret */
    memcpy(la->key, key, sizeof key);
    memcpy(lb->key, key, sizeof key);
    send_hello(la);
    send_hello(lb);
    return TL_OK;
}

int tl_node_connected(const tl_node *n, const char *peer)
{
    return n && peer && up_link((tl_node *)n, peer) != NULL;
}

int tl_node_wait_peer(tl_node *n, const char *peer, int timeout_ms)
{
    if (!n || !peer)
        return TL_EMISUSE;
    int64_t end = mono_ns() + (int64_t)timeout_ms * 1000000;
    while (!up_link(n, peer)) {
        int64_t left = (end - mono_ns()) / 1000000;
        if (left <= 0)
            return tl__seterr(n->rt, TL_ELINK, "no link to node %s after %d ms", peer,
                              timeout_ms);
        int rc = tl_node_poll(n, left > 50 ? 50 : (int)left);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

int tl_node_migrate(tl_node *n, tl_tasklet *t, const char *peer)
{
    if (!n || !t || t->magic != TL__MAGIC_TASK || !peer)
        return TL_EMISUSE;
    if (t->rt != n->rt)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_migrate: the tasklet belongs to another "
                          "runtime");
    if (strlen(peer) >= 64 || !up_link(n, peer))
        return tl__seterr(n->rt, TL_ELINK, "tl_node_migrate: no link to node '%s'", peer);
    if (t->state == TL_BLOCKED && (t->flags & TL__TF_REMOTE)) {
        /* its request at the home must stop first, or be answered */
        for (size_t i = 0; i < n->rops.n; i++) {
            rop *r = &n->rops.v[i];
            if (r->t != t)
                continue;
            if (r->moving[0])
                return tl__seterr(n->rt, TL_EBUSY, "tl_node_migrate: tasklet #%llu is already "
                                  "moving to %s", (unsigned long long)t->id, r->moving);
            snprintf(r->moving, sizeof r->moving, "%s", peer);
            send_req(r->via, M_CANCEL, r->req);
            return TL_OK;
        }
    }
    return depart(n, t, peer);
}

int tl_node_chan(tl_node *n, const char *path, tl_chan **out)
{
    char node[64], name[256];
    if (!n || !path || !out)
        return TL_EMISUSE;
    *out = NULL;
    const char *slash = strchr(path, '/');
    if (!slash || slash == path || (size_t)(slash - path) >= sizeof node || !slash[1] ||
        strlen(slash + 1) >= sizeof name)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_chan: '%s' is not node/name", path);
    memcpy(node, path, (size_t)(slash - path));
    node[slash - path] = '\0';
    snprintf(name, sizeof name, "%s", slash + 1);
    if (strcmp(node, n->id) == 0) {
        tl_chan *ch = tl_chan_find_name(n->rt, name);
        if (!ch)
            return TL_ENOENT;
        *out = tl_chan_retain(ch);
        return TL_OK;
    }
    for (tl__link *l = n->rt->chans.next; l != &n->rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->remote && ch->remote->name && strcmp(ch->remote->node, node) == 0 &&
            strcmp(ch->remote->name, name) == 0) {
            *out = tl_chan_retain(ch);
            return TL_OK;
        }
    }
    tl_chan *ch;
    int rc = tl_chan_new(n->rt, 0, &ch);
    if (rc != TL_OK)
        return rc;
    rc = tl__chan_make_proxy(ch, node, 0, name);
    if (rc != TL_OK) {
        tl_chan_release(ch);
        return rc;
    }
    *out = ch;
    return TL_OK;
}

int tl_node_poll(tl_node *n, int timeout_ms)
{
    if (!n)
        return TL_EMISUSE;
    if (!n->started) {
        int rc = start(n);
        if (rc != TL_OK)
            return rc;
    }
    int rc = tl_run_steps(n->rt, n->batch, NULL);
    if (rc != TL_OK)
        return rc;
    rc = settle(n);
    if (rc != TL_OK)
        return rc;

    /* how long to wait */
    int64_t now = mono_ns(), wait = timeout_ms < 0 ? -1 : (int64_t)timeout_ms * 1000000;
    int64_t deadline;
    if (tl_runnable_count(n->rt) || atomic_load(&n->stop))
        wait = 0;
    if (wait != 0 && tl_next_deadline(n->rt, &deadline)) {
        int64_t d = deadline - tl_now(n->rt);
        d = d < 0 ? 0 : d;
        wait = wait < 0 || d < wait ? d : wait;
    }
    for (dial *d = n->dials; d && wait != 0; d = d->next)
        if (!d->conn) {
            int64_t d2 = d->next_try - now;
            d2 = d2 < 0 ? 0 : d2;
            wait = wait < 0 || d2 < wait ? d2 : wait;
        }

    for (conn *l = n->links; l && wait != 0; l = l->next)
        if (l->state == L_HANDSHAKE || l->state == L_CONNECTING) {
            int64_t d3 = l->born + HANDSHAKE_NS - now;
            d3 = d3 < 0 ? 0 : d3;
            wait = wait < 0 || d3 < wait ? d3 : wait;
        }
    if (n->lfd >= 0 && n->accept_after > now && wait != 0) {
        int64_t d4 = n->accept_after - now;
        wait = wait < 0 || d4 < wait ? d4 : wait;
    }

    size_t cnt = 2;
    for (conn *l = n->links; l; l = l->next)
        cnt++;
    struct pollfd stackfds[64], *fds = cnt <= 64 ? stackfds : calloc(cnt, sizeof *fds);
    conn *stacklinks[64], **who = cnt <= 64 ? stacklinks : calloc(cnt, sizeof *who);
    if (!fds || !who) {
        if (fds != stackfds)
            free(fds);
        if (who != stacklinks)
            free(who);
        return tl__seterr(n->rt, TL_ENOMEM, "tl_node_poll: out of memory");
    }
    size_t k = 0;
    fds[k].fd = n->wake[0];
    fds[k].events = POLLIN;
    who[k++] = NULL;
    if (n->lfd >= 0 && mono_ns() >= n->accept_after) {
        fds[k].fd = n->lfd;
        fds[k].events = POLLIN;
        who[k++] = NULL;
    }
    for (conn *l = n->links; l; l = l->next) {
        fds[k].fd = l->fd;
        fds[k].events = (short)(l->state == L_CONNECTING ? POLLOUT
                                : POLLIN | (l->wlen > l->woff ? POLLOUT : 0));
        who[k++] = l;
    }
    int ms = wait < 0 ? -1 : (int)((wait + 999999) / 1000000);
    int got = 0;
    /* Right after traffic an answer usually follows within tens of
     * microseconds: look for it a little while before sleeping, because
     * waking a sleeping process costs more than that on a VM. */
    if (ms != 0 && now - n->last_io < SPIN_AFTER_IO_NS)
        for (int64_t until = now + SPIN_NS; got == 0 && mono_ns() < until;)
            got = poll(fds, (nfds_t)k, 0);
    if (got == 0)
        got = poll(fds, (nfds_t)k, ms);
    for (size_t i = 0; got > 0 && i < k; i++) {
        if (!fds[i].revents)
            continue;
        conn *l = who[i];
        if (!l) {
            if (fds[i].fd == n->wake[0]) {
                char b[64];
                while (read(n->wake[0], b, sizeof b) > 0)
                    ;
            } else {
                on_accept(n);
            }
            continue;
        }
        if (l->state == L_DEAD)
            continue;
        if (l->state == L_CONNECTING) {
            on_connected(l);
            continue;
        }
        if (fds[i].revents & POLLOUT)
            flush(l);
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
            on_readable(l);
    }
    if (fds != stackfds)
        free(fds);
    if (who != stacklinks)
        free(who);
    now = mono_ns();
    for (dial *d = n->dials; d; d = d->next)
        if (!d->conn && d->next_try <= now)
            dial_now(n, d);
    for (conn *l = n->links; l; l = l->next)
        if ((l->state == L_HANDSHAKE || l->state == L_CONNECTING) && now - l->born > HANDSHAKE_NS)
            drop_link(l, "no authentication within %lld s", HANDSHAKE_NS / 1000000000LL);
    reap_links(n);
    rc = TL_OK;
    if (n->store && n->need_ckpt)
        rc = settle(n); /* imports are checkpointed before they run */
    if (rc == TL_OK && tl_runnable_count(n->rt))
        rc = tl_run_steps(n->rt, n->batch, NULL); /* what the I/O woke */
    /* acknowledgements and what the woken sent leave in one write */
    return rc == TL_OK ? settle(n) : rc;
}

int tl_node_run(tl_node *n)
{
    if (!n)
        return TL_EMISUSE;
    int rc = TL_OK;
    while (!atomic_load(&n->stop) && rc == TL_OK)
        rc = tl_node_poll(n, -1);
    atomic_store(&n->stop, 0);
    return rc;
}

void tl_node_stop(tl_node *n)
{
    if (!n)
        return;
    atomic_store(&n->stop, 1);
    ssize_t k = write(n->wake[1], "", 1);
    (void)k;
}

void tl_node_stats_get(const tl_node *n, tl_node_stats *out)
{
    if (!n || !out)
        return;
    *out = n->stats;
    out->pending = n->nout;
}

/* ---- for the fuzzer (tests/fuzz/fuzz_frames.c) ---- */

int tl__node_feed(tl_node *n, const void *bytes, size_t len, int authed)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return TL_EIO;
    set_nonblock(sv[0]);
    conn *l = link_new(n, sv[0], 0, "fuzz");
    if (!l) {
        close(sv[0]);
        close(sv[1]);
        return TL_ENOMEM;
    }
    if (authed) {
        l->state = L_UP;
        l->hello_got = 1;
        snprintf(l->peer, sizeof l->peer, "fuzz-peer");
    }
    l->rbuf = malloc(len ? len : 1);
    if (l->rbuf) {
        if (len)
            memcpy(l->rbuf, bytes, len);
        l->rlen = l->rcap = len;
        on_bytes(l);
    }
    if (!n->started)
        start(n);
    tl_run_steps(n->rt, 10000, NULL);
    settle(n);
    drop_link(l, "end of input");
    reap_links(n);
    close(sv[1]);
    return TL_OK;
}
