/*
 * node_impl.h -- what the node's files share (migrate/; private to them:
 * tests and the fuzzer use node_internal.h).
 *
 * The node is split by responsibility (docs/ARCHITECTURE.md):
 *   link.c      links and the handshake, addresses, dialing, accepting
 *   session.c   the link's cryptography: key exchange, AUTH's MAC,
 *               sealing and opening frames
 *   frame.c     the write buffer, frame encoding, the frame decoder
 *   transfer.c  moving tasklets: the outbox, transfer ids, exactly once
 *   remote.c    remote channel operations (our requests, their agents)
 *               and the node's layer ops in the runtime
 *   durable.c   the node's rows in the store (outbox, inbox)
 *   access.c    which local channels a peer may reach (exports, grants)
 *   hmap.c      the hash maps every table above is found through
 *   node.c      the public tl_node_* API and the event loop
 */
#ifndef TL_NODE_IMPL_H
#define TL_NODE_IMPL_H

#include "../persist/persist.h"
#include "node_internal.h"

#include <msgpack.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#define TL__NODE_MAGIC "libtasklet-node"
#define MAX_FRAME_DEFAULT ((uint32_t)64 << 20)
#define MAX_HANDSHAKE_FRAME 1024u
#define SPIN_NS 50000LL           /* polls without sleeping for this long ... */
#define SPIN_AFTER_IO_NS 1000000LL /* ... when a frame came within this */
#define SPIN_MISSES_MAX 3          /* this many more misses than hits: stop spinning */
#define SPIN_RETRY 64              /* ... but spin once per this many waits, to learn */
#define XFER_BATCH_BYTES ((size_t)64 << 10) /* both sides work while the next one goes */
#define REDIAL_NS 100000000LL
#define READ_WAIT_NS 1000000LL    /* the lone link's blocking recv waits this long */
#define EV_BATCH 64               /* events taken per wait (the rest: the next round) */
#define ACCEPT_BATCH 1024          /* connections accepted (or refused) per round */
#define MAX_REDIAL_NS 2000000000LL
#define READ_BUDGET ((size_t)8 << 20) /* bytes read from one link per round */
#define TL__SESSION_KEYBYTES crypto_aead_chacha20poly1305_IETF_KEYBYTES
#define TL__SEAL_BYTES crypto_aead_chacha20poly1305_IETF_ABYTES /* a sealed record's tag */
#define TL__RECORD_BYTES ((size_t)64 << 10) /* a sealed frame longer than this goes in
                                             * records of this much (PROTOCOL.md 4.3): the
                                             * peer opens each while the next is sealed */
#define TL__BIG_BUF ((size_t)512 << 10) /* a link buffer past this is big: kept
                                        * while in use, shrunk 250 ms after (limits.c) */
#define TL__RECORD_MORE 0x80000000u /* a record header's bit: the frame goes on */
/* Ciphers, as offered in HELLO (a bit mask; PROTOCOL.md 4.1). */
#define TL__CIPHER_CHACHA 1u /* ChaCha20-Poly1305 (IETF): every node has it */
#define TL__CIPHER_AES 2u    /* AES-256-GCM: where the CPU has AES-NI and CLMUL */

/* Frame types (docs/PROTOCOL.md). */
enum { M_HELLO = 1, M_AUTH = 2, M_ERROR = 3, M_XFER = 10, M_ACK = 11, M_NACK = 12,
       M_FORGET = 13, M_OP = 20, M_DONE = 21, M_CANCEL = 22, M_CANCELLED = 23 };
/* Link states (link.c draws the machine). */
enum { L_CONNECTING, L_HANDSHAKE, L_UP, L_DEAD };

/* The limits of limits.c, from tl_node_config. */
typedef struct tl__limits {
    size_t max_queue, max_buffers;
    uint32_t max_links, max_handshakes, per_addr, max_agents, max_requests;
    int64_t handshake_ns;
} tl__limits;

typedef struct dial dial;
typedef struct conn conn;
typedef struct peerinfo peerinfo;

/* A growable array of T. */
#define VEC(T) struct { T *v; size_t n, cap; }
#define VEC_PUSH(vec, item)                                                        \
    ((vec).n < (vec).cap || tl__vec_grow((void **)&(vec).v, &(vec).cap, sizeof *(vec).v) \
         ? ((vec).v[(vec).n++] = (item), 0) : -1)

/* A hash map of objects (hmap.c): entries of (hash, object), obj NULL
 * when empty. */
typedef struct tl__hent {
    uint64_t hash;
    void *obj;
} tl__hent;
typedef struct tl__hmap {
    tl__hent *e;
    size_t cap, n;
} tl__hmap;
/* Whether obj has key. */
typedef int (*tl__hmatch)(const void *obj, const void *key);

/* A transfer id as text (32 hex digits). */
typedef struct xidstr { char s[40]; } xidstr;

struct conn {
    conn *next, *prev;           /* in n->links, newest first */
    conn *dead_next;             /* in n->dead once DEAD, until reaped */
    tl_node *node;
    int fd, state, client;
    int watched;                 /* fd is in the node's epoll set, waiting for events */
    uint32_t events;             /* ... these (EPOLLIN, EPOLLOUT) */
    int blocking;                /* the socket blocks (SO_RCVTIMEO: READ_WAIT_NS) */
    uint64_t seq;                /* order of creation: a peer's newest link is used */
    dial *dial;
    char peer[64];
    peerinfo *p;                 /* set when up */
    tl__link upl;                /* in p->ups while up */
    tl__link shake;              /* in n->shaking while CONNECTING or HANDSHAKE */
    tl__link sent;               /* transfers sent on it, not acknowledged (outx.q) */
    tl__hmap rops, agents;       /* our requests through it, its agents here: by req */
    VEC(xidstr) acks;            /* to send once the imports are checkpointed */
    char where[128];             /* for log lines */
    /* the session (session.c): the cluster key (or the pair's), our
     * ephemeral key pair and the peer's public key, then one key and one
     * frame counter per direction once sealed */
    unsigned char key[crypto_auth_KEYBYTES];
    unsigned char mine[crypto_kx_PUBLICKEYBYTES], kx_sk[crypto_kx_SECRETKEYBYTES];
    unsigned char theirs[crypto_kx_PUBLICKEYBYTES];
    unsigned char tx_key[TL__SESSION_KEYBYTES], rx_key[TL__SESSION_KEYBYTES];
    crypto_aead_aes256gcm_state tx_aes, rx_aes; /* the keys expanded (AES-256-GCM) */
    uint64_t tx_n, rx_n;         /* records sealed, opened */
    unsigned their_ciphers;      /* the peer's offer (HELLO) */
    int cipher;                  /* TL__CIPHER_*, both sides' choice (from the HELLOs) */
    int hello_got;
    int sealed;                  /* every frame sealed both ways (from UP on) */
    int64_t born;                /* handshakes must finish in time */
    uint64_t src;                /* accepted: its source, for the per-address share */
    unsigned char *rbuf, *wbuf;
    size_t rlen, rcap, woff, wlen, wcap;
    size_t rec_at;               /* writing a frame: where its open record starts */
    int in_frame;                /* between tl__frame_begin and tl__frame_end */
    unsigned char *fbuf;         /* a frame of several records, opened into it */
    size_t flen, fcap;
    int64_t big_at;              /* when a buffer last held more than TL__BIG_BUF */
};

/* A node we have linked with or have transfers for (n->peers, by name;
 * kept until the node is freed). */
struct peerinfo {
    char name[64];
    uint64_t hash;
    tl_node *node;
    tl__hmap grants;             /* local channels sent to it in tasklets (access.c) */
    tl__link ups;                /* its links up, newest (largest seq) first */
    tl__link unsent;             /* its transfers to send, in departure order (outx.q) */
    VEC(xidstr) forgets;         /* to send once the outbox removal is checkpointed */
};

struct dial {
    dial *next;
    char addr[256];
    conn *conn;
    int64_t next_try;
    int64_t backoff;  /* doubles while handshakes fail, up to 2 s */
};

typedef struct outx {       /* a transfer not yet acknowledged */
    struct outx *next, *prev; /* n->out, in departure order */
    char xid[40], peer[64];
    void *data;             /* rt's allocator (tl_snapshot_free) */
    size_t len;
    int durable;            /* checkpointed (or no store) */
    conn *sent;             /* the link it went out on, or NULL */
    int tried;              /* sent at least once (it may have arrived) */
    peerinfo *p;
    tl__link q;             /* in p->unsent, or in sent->sent */
    uint64_t hash;          /* in n->outmap, if its xid parses */
    /* with cargo (store rows that travel, persist.h): data is the
     * envelope (tl__cargo_wrap), rebuilt at every write while not durable
     * from snap (the tasklet's snapshot, rt's allocator) */
    int cargo;
    uint64_t tid;           /* the departed tasklet's id */
    void *snap;
    size_t slen;
} outx;

/* A request of ours at a channel's home.  moving: the waiter is to move
 * to that node once the home answered the CANCEL sent for it. */
typedef struct rop {
    uint64_t req, hreq, ht; /* hreq, ht: its hashes in via->rops, n->rop_by_t */
    tl_tasklet *t;
    conn *via;
    char moving[64];
} rop;
/* A request of theirs, here: the agent tasklet doing it. */
typedef struct agent {
    uint64_t req, hreq, ht; /* hreq, ht: its hashes in via->agents, n->agent_by_t */
    tl_tasklet *t;
    conn *via;
} agent;
typedef struct move { tl_tasklet *t; char peer[64]; } move;

/* A transfer id: 32 hex digits on the wire, two words here. */
typedef struct xkey {
    uint64_t hi, lo;
} xkey;

/* The transfer ids taken, each with the time (ns, the runtime's clock)
 * it was taken: open addressing, tombstones on delete. */
typedef struct xset {
    xkey *keys;
    int64_t *at;
    peerinfo **who;         /* the peer it came from (NULL: unknown, an old row) */
    unsigned char *st;      /* 0 empty, 1 full, 2 deleted */
    size_t cap, n, used;
} xset;

/* An inbox id and when it was taken: n->inlog (for aging) and, with the
 * peer it came from, n->in_new (a row to write). */
typedef struct inid {
    xkey k;
    int64_t at;
} inid;
typedef struct innew {
    xkey k;
    int64_t at;
    char peer[64];
} innew;

#define INBOX_KEEP_DEFAULT_NS (7 * 86400LL * 1000000000LL) /* 7 days */

#define TL__MAGIC_NODE 0x746c4e44u /* "tlND" */

struct tl_node {
    uint32_t magic;        /* TL__MAGIC_NODE while the node lives */
    tl_runtime *rt;
    char id[64];
    unsigned char key[crypto_auth_KEYBYTES];
    unsigned char hkey[crypto_shorthash_KEYBYTES]; /* the hash maps' key */
    int has_key;
    tl_store *store;
    tl_log_fn log;
    void *log_ud;
    uint32_t max_frame, batch;
    unsigned ciphers;      /* offered, of those this CPU has (tests: tl__node_ciphers) */
    tl__limits lim;        /* limits.c */
    size_t bufbytes;       /* every link's rcap + wcap + fcap */
    size_t nlinks;         /* links in n->links */
    int deaf;              /* tests: links are not read (tl__node_deaf) */
    uint64_t refused_n;    /* connections refused since refused_at (logged once a second) */
    int64_t refused_at;
    int lfd, lfd_on;       /* the listener; lfd_on: in the epoll set for EPOLLIN */
    int epfd;              /* the epoll set: the wake pipe, the listener, the links */
    msgpack_zone zone;     /* frames are decoded into it (frame.c), if zone_ok; */
    int zone_ok, zone_busy; /* zone_busy: a frame decoded there is being handled */
    char laddr[300], lpath[128];
    conn *links;           /* newest first */
    conn *dead;            /* DEAD links, to free in tl__links_reap */
    uint64_t link_seq;
    tl__link shaking;      /* links CONNECTING or in HANDSHAKE, oldest first */
    size_t nhandshake;     /* links in HANDSHAKE */
    tl__hmap peers;        /* peer by name */
    dial *dials;
    outx *out, *out_last;  /* every transfer not acknowledged, in departure order */
    outx *undurable;       /* it and every transfer after it are not durable */
    size_t nout;
    tl__hmap outmap;       /* outx by transfer id */
    VEC(outx *) xbatch;    /* scratch: one XFER frame's transfers */
    uint64_t xid_prefix, xid_seq;
    xset seen;
    /* The store's rows, written in each checkpoint's transaction as they
     * change (durable.c): the outbox from n->undurable on and out_gone;
     * the inbox in_new and in_gone.  Emptied when the checkpoint commits. */
    VEC(xidstr) out_gone;  /* durable transfers since acknowledged or refused */
    VEC(innew) in_new;     /* ids taken (or read back with no time) */
    VEC(xkey) in_gone;     /* ids forgotten or aged out */
    VEC(inid) inlog;       /* every id taken, oldest first, from inlog_head on;
                            * inlog_stale of them no longer in seen */
    size_t inlog_head, inlog_stale;
    int64_t inbox_keep;    /* ns an id is kept without FORGET; < 0: for good */
    VEC(tl_tasklet *) held; /* imports (retained) restarted once committed */
    tl__hmap rop_by_t, agent_by_t; /* by tasklet */
    tl__hmap exports, export_ids; /* exported channels by name, by id (access.c) */
    peerinfo *importing;   /* the peer whose tasklet is being imported, or NULL */
    VEC(move) moves;
    uint64_t next_req;
    int need_ckpt, started, wake[2];
    int64_t accept_after;  /* accept paused until then (after an error) */
    int64_t last_io;       /* when a frame last came in */
    int64_t polled_at;     /* when the epoll set was last waited on */
    unsigned spin_misses;  /* spins before sleeping that found nothing, less
                            * those that found an answer (wait_io, node.c) */
    unsigned spin_skips;   /* waits that slept at once since the last spin */
    atomic_int stop;  /* tl_node_stop may come from another thread */
    tl_node_stats stats;
};

/* ---- hmap.c ---- */
TL__HIDDEN uint64_t tl__hash(const tl_node *n, const void *p, size_t len);
TL__HIDDEN uint64_t tl__hash_u64(const tl_node *n, uint64_t k);
TL__HIDDEN uint64_t tl__mix(const tl_node *n, uint64_t k);
TL__HIDDEN void *tl__hmap_get(const tl__hmap *m, uint64_t hash, tl__hmatch match,
                              const void *key);
TL__HIDDEN int tl__hmap_put(tl__hmap *m, uint64_t hash, void *obj);
/* Removes obj (by identity); 1 if it was there. */
TL__HIDDEN int tl__hmap_del(tl__hmap *m, uint64_t hash, const void *obj);
TL__HIDDEN void tl__hmap_free(tl__hmap *m);

/* ---- node.c ---- */
TL__HIDDEN int tl__vec_grow(void **p, size_t *cap, size_t size);
TL__HIDDEN int64_t tl__mono_ns(void);
TL__HIDDEN void tl__node_log(tl_node *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Takes l's socket out of the node's epoll set: before it is closed. */
TL__HIDDEN void tl__unwatch(conn *l);
/* The layer op migrate (src/internal.h): tl_node_migrate, with cargo. */
TL__HIDDEN int tl__node_migrate_op(void *ud, tl_tasklet *t, const char *peer, size_t cargo);

/* ---- link.c ---- */
TL__HIDDEN peerinfo *tl__peer_get(tl_node *n, const char *name, int create);
TL__HIDDEN conn *tl__peer_link(const peerinfo *p);
TL__HIDDEN void tl__peers_free(tl_node *n);
TL__HIDDEN conn *tl__link_up(tl_node *n, const char *peer);
TL__HIDDEN conn *tl__link_new(tl_node *n, int fd, int client, const char *where);
TL__HIDDEN void tl__link_unmake(conn *l);
TL__HIDDEN void tl__link_set_up(conn *l);
TL__HIDDEN void tl__link_drop(conn *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
TL__HIDDEN void tl__link_free(conn *l);
TL__HIDDEN void tl__links_reap(tl_node *n);
TL__HIDDEN void tl__set_nonblock(int fd);
TL__HIDDEN void tl__send_hello(conn *l);
TL__HIDDEN int tl__valid_id(const char *s);
TL__HIDDEN void tl__on_hello(conn *l, const msgpack_object *o);
TL__HIDDEN void tl__on_auth(conn *l, const msgpack_object *o);
typedef struct tl__addr {
    struct sockaddr_storage sa;
    socklen_t len;
    int family;
} tl__addr;
TL__HIDDEN int tl__parse_addr(tl_node *n, const char *s, tl__addr *a);
TL__HIDDEN void tl__dial_now(tl_node *n, dial *d);
TL__HIDDEN void tl__on_connected(conn *l);
TL__HIDDEN void tl__on_accept(tl_node *n);

/* ---- session.c ---- */
TL__HIDDEN void tl__session_init(conn *l);
TL__HIDDEN int tl__session_derive(conn *l);
TL__HIDDEN void tl__session_mac(const conn *l, int from_client,
                                unsigned char mac[crypto_auth_BYTES]);
/* The ciphers this node offers (TL__CIPHER_* mask). */
TL__HIDDEN unsigned tl__ciphers_local(const tl_node *n);
TL__HIDDEN int tl__session_cipher(const conn *l);
TL__HIDDEN const char *tl__cipher_name(int cipher);
TL__HIDDEN int tl__seal(conn *l, unsigned char *f, size_t len);
TL__HIDDEN int tl__open(conn *l, const unsigned char *f, size_t n, unsigned char *out);
TL__HIDDEN void tl__session_wipe(conn *l);

/* ---- frame.c ---- */
TL__HIDDEN size_t tl__frame_begin(conn *l, msgpack_packer *pk);
TL__HIDDEN void tl__frame_end(conn *l, size_t at);
TL__HIDDEN void tl__pack_str(msgpack_packer *pk, const char *s);
TL__HIDDEN void tl__flush(conn *l);
TL__HIDDEN void tl__wire_error(conn *l, int code, const char *msg);
TL__HIDDEN void tl__wire_req(conn *l, int type, uint64_t req);
TL__HIDDEN void tl__wire_done(conn *l, uint64_t req, int code, const char *msg,
                              const tl_value *v);
TL__HIDDEN void tl__on_bytes(conn *l);
TL__HIDDEN void tl__on_readable(conn *l);
/* The lone link's read (node.c): 0 if nothing came. */
TL__HIDDEN int tl__read_next(conn *l, int block);

/* Reading a decoded frame: element i of array o, and type tests. */
static inline const msgpack_object *mp_item(const msgpack_object *o, uint32_t i)
{
    return &o->via.array.ptr[i];
}
static inline int mp_is_u(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
}
static inline int mp_is_i(const msgpack_object *o)
{
    return mp_is_u(o) || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}
/* Copies a msgpack string of 1..cap-1 bytes into buf; 0 if it is not one. */
static inline int mp_str(const msgpack_object *o, char *buf, size_t cap)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 || o->via.str.size >= cap)
        return 0;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = '\0';
    return 1;
}

/* ---- transfer.c ---- */
TL__HIDDEN int tl__xid_parse(const char *s, xkey *k);
TL__HIDDEN void tl__xid_format(xkey k, char out[40]);
TL__HIDDEN int tl__xset_add(xset *s, xkey k, int64_t at);
/* Whether s holds k taken at time at; tl__xset_take also removes it. */
TL__HIDDEN int tl__xset_has_at(const xset *s, xkey k, int64_t at);
TL__HIDDEN int tl__xset_take(xset *s, xkey k, int64_t at);
/* The slot of k's peer in s (NULL if k is not in s): access.c. */
TL__HIDDEN peerinfo **tl__xset_who(const xset *s, xkey k);
TL__HIDDEN void tl__xset_free(xset *s);
TL__HIDDEN int tl__outbox_append(tl_node *n, outx *x);
TL__HIDDEN void tl__outx_free(tl_node *n, outx *x);
TL__HIDDEN void tl__outbox_unsend(tl_node *n, conn *l);
TL__HIDDEN void tl__transfers_free(tl_node *n, int durable);
TL__HIDDEN int tl__depart(tl_node *n, tl_tasklet *t, const char *peer, size_t cargo);
/* Cargo transfers: x->data becomes [magic, snapshot, cargo] with the
 * store's participants' cargo (inside write's transaction tx); split
 * finds the parts of such bytes (0: plain snapshot bytes, left as they
 * are). */
TL__HIDDEN int tl__cargo_wrap(tl_node *n, tl__store_tx *tx, outx *x);
TL__HIDDEN int tl__settle(tl_node *n);
TL__HIDDEN void tl__on_xfer(conn *l, const msgpack_object *o);
TL__HIDDEN void tl__on_ack(conn *l, const msgpack_object *o);
TL__HIDDEN void tl__on_nack(conn *l, const msgpack_object *o);
TL__HIDDEN void tl__on_forget(conn *l, const msgpack_object *o);

/* ---- remote.c ---- */
extern TL__HIDDEN const tl__layer_ops tl__node_ops;
extern TL__HIDDEN const tl_func tl__agent_fn;
TL__HIDDEN int tl__node_start(tl_node *n);
TL__HIDDEN void tl__remote_link_lost(tl_node *n, conn *l);
TL__HIDDEN int tl__remote_migrate(tl_node *n, tl_tasklet *t, const char *peer, int *handled);
TL__HIDDEN void tl__remote_free(tl_node *n);
TL__HIDDEN void tl__on_op(conn *l, const msgpack_object *o);
TL__HIDDEN void tl__on_done(conn *l, const msgpack_object *o);
TL__HIDDEN void tl__on_cancel(conn *l, const msgpack_object *o);
TL__HIDDEN void tl__on_cancelled(conn *l, const msgpack_object *o);

/* ---- access.c ---- */
TL__HIDDEN tl_chan *tl__access_exported(const tl_node *n, const char *name);
/* Transfer id k was just taken from peer (n->seen); whether l's peer may
 * FORGET k (only the one it came from may). */
TL__HIDDEN void tl__access_taken(tl_node *n, xkey k, const char *peer);
TL__HIDDEN int tl__access_may_forget(const conn *l, xkey k);
/* The local channel a peer's OP on l may reach ([id, name|NULL]); NULL for
 * one that is missing or not the peer's to reach (the same answer). */
TL__HIDDEN tl_chan *tl__access_op(conn *l, uint64_t id, const char *name);
TL__HIDDEN int tl__access_import(void *ud, tl_chan *ch);
/* tl__snapshot_save_moving, granting peer the local channels it refers to. */
TL__HIDDEN int tl__access_save_moving(tl_node *n, tl_tasklet *t, const char *peer, void **buf,
                                      size_t *len);
TL__HIDDEN void tl__access_peer_free(peerinfo *p);
TL__HIDDEN void tl__access_free(tl_node *n);

/* ---- limits.c ---- */
TL__HIDDEN void tl__limits_config(tl_node *n, const tl_node_config *cfg);
/* Resizes one of l's buffers to ncap within max_buffers (0 frees it); 0
 * if l was dropped instead. */
TL__HIDDEN int tl__buf_resize(conn *l, unsigned char **buf, size_t *cap, size_t ncap);
TL__HIDDEN void tl__buf_release(conn *l);
/* Room for len bytes in l's frame buffer (a frame of several records);
 * 0 if l was dropped instead. */
TL__HIDDEN int tl__fbuf_room(conn *l, size_t len);
TL__HIDDEN size_t tl__rbuf_want(const conn *l, size_t frame_limit);
TL__HIDDEN void tl__buf_trim(conn *l);
/* 1 if l's queue is within max_queue; else l is dropped (0). */
TL__HIDDEN int tl__limit_queue(conn *l);
/* Whether our own transfers may queue more on l (flow control: a slow
 * peer makes them wait rather than fill max_queue). */
TL__HIDDEN int tl__queue_has_room(const conn *l);
/* NULL if accepted socket fd may start a handshake (*src: its source),
 * else what is full ("links", "handshakes", ...). */
TL__HIDDEN const char *tl__limit_accept(tl_node *n, int fd, uint64_t *src);
/* A connection was refused because `what` is full: logged at most once a
 * second, with the count. */
TL__HIDDEN void tl__limit_refused(tl_node *n, const char *what);
/* Whether l's peer may start one more agent here / we one more request. */
TL__HIDDEN int tl__limit_agents(const conn *l);
TL__HIDDEN int tl__limit_requests(const conn *l);

/* ---- durable.c ---- */
TL__HIDDEN int tl__node_store_open(tl_node *n);
TL__HIDDEN int tl__node_checkpoint(tl_node *n);
/* Id k from peer was taken now: into n->seen, the aging log and (with a
 * store) the rows to write.  TL_ENOMEM: in none of them. */
TL__HIDDEN int tl__inbox_add(tl_node *n, xkey k, const char *peer);
/* FORGET of k: out of n->seen (and its row, with the next checkpoint). */
TL__HIDDEN void tl__inbox_forget(tl_node *n, xkey k);
/* Ids older than n->inbox_keep leave n->seen (and their rows). */
TL__HIDDEN void tl__inbox_age(tl_node *n);
/* Transfer x (taken out of the outbox) is gone: its row too, if stored. */
TL__HIDDEN void tl__outbox_gone(tl_node *n, const outx *x);
/* Held import t is restarted once a checkpoint holds it (with a store;
 * else at once).  TL_ENOMEM: t is not held. */
TL__HIDDEN int tl__import_hold(tl_node *n, tl_tasklet *t);
/* Undoes the last tl__import_hold (of t). */
TL__HIDDEN void tl__import_unhold(tl_node *n, tl_tasklet *t);
TL__HIDDEN void tl__node_durable_free(tl_node *n);
TL__HIDDEN int tl__node_store_close(tl_node *n);

#endif
