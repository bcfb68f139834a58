/*
 * node.c -- the public tl_node_* API and the node's event loop.
 *
 * A node owns a runtime's node slot (its layer ops: src/internal.h,
 * remote.c) and an event loop over non-blocking sockets.  One round
 * (tl_node_poll): scheduler steps; tl__settle (the checkpoint transfers
 * need, then what may be sent); one epoll_wait over the wake pipe, the
 * listener and every link (registered once, "the epoll set" below),
 * spinning briefly first right after traffic while that pays
 * (tl__node_spin_pays: not when shared CPUs delay answers); what came
 * in is dispatched (frame.c); redials and handshake deadlines (link.c);
 * then, if imports came, their checkpoint before they run, the steps they
 * woke and a last tl__settle so that answers leave in one write.
 *
 * The work is split by responsibility (node_internal.h lists the files):
 * links and the handshake (link.c), frames (frame.c), transfers and their
 * exactly-once bookkeeping (transfer.c), remote channel operations and
 * agents (remote.c), the node's rows in the store (durable.c).
 *
 * Invariants: one thread drives a node and its runtime; only tl_node_stop
 * may come from another (an atomic flag and a byte on the wake pipe).
 * While a node exists, rt's TL__LAYER_NODE slot holds its ops
 * (tl__node_ops, remote.c) and the node, and tl_node_free empties it.
 */
#include "node_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int tl__vec_grow(void **p, size_t *cap, size_t size)
{
    size_t ncap = *cap ? 2 * *cap : 16;
    void *np = realloc(*p, ncap * size);
    if (!np)
        return 0;
    *p = np;
    *cap = ncap;
    return 1;
}

int64_t tl__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void tl__node_log(tl_node *n, const char *fmt, ...)
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

/* epoll_ctl of fd in n's set, the event naming ptr (the event loop, below). */
static int ep_ctl(tl_node *n, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = ptr;
    return epoll_ctl(n->epfd, op, fd, &ev);
}

/* ---- public API ---- */

/* A node handle is checked on entry (SQLite's safety check): a bad one,
 * or one freed (while its memory is not reused), gives TL_EMISUSE. */
static int valid(const tl_node *n)
{
    return n && n->magic == TL__MAGIC_NODE;
}

static int check_config(tl_runtime *rt, const tl_node_config *cfg)
{
    if (!cfg->node_id || !tl__valid_id(cfg->node_id))
        return tl__seterr(rt, TL_EINVAL, "tl_node_new: the node id must be 1 to 63 bytes of "
                          "[A-Za-z0-9._-]");
    if (cfg->secret && cfg->secret_len < 16)
        return tl__seterr(rt, TL_EINVAL, "tl_node_new: the secret must be at least 16 bytes");
    if (tl__node_layer(rt)->ops)
        return tl__seterr(rt, TL_EEXIST, "tl_node_new: this runtime already has a node");
    if (cfg->store && tl__store_of(rt) != cfg->store)
        return tl__seterr(rt, TL_EINVAL, "tl_node_new: the store is not attached to this "
                          "runtime");
    if (sodium_init() < 0)
        return tl__seterr(rt, TL_EIO, "tl_node_new: libsodium failed to initialize");
    return TL_OK;
}

static void configure(tl_node *n, tl_runtime *rt, const tl_node_config *cfg)
{
    n->magic = TL__MAGIC_NODE;
    n->rt = rt;
    randombytes_buf(n->hkey, sizeof n->hkey);
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
    n->ciphers = TL__CIPHER_CHACHA | TL__CIPHER_AES; /* those this CPU has: session.c */
    tl__limits_config(n, cfg);
    n->inbox_keep = cfg->inbox_keep_ns ? cfg->inbox_keep_ns : INBOX_KEEP_DEFAULT_NS;
    n->lfd = n->epfd = -1;
    tl__list_init(&n->shaking);
    randombytes_buf(&n->xid_prefix, sizeof n->xid_prefix);
}

static void close_wake(tl_node *n)
{
    close(n->wake[0]);
    close(n->wake[1]);
    if (n->epfd >= 0)
        close(n->epfd);
}

/* The wake pipe and the epoll set, the pipe in it; TL_EIO if not. */
static int open_wake(tl_node *n)
{
    if (pipe(n->wake) != 0)
        return tl__seterr(n->rt, TL_EIO, "tl_node_new: pipe: %s", strerror(errno));
    tl__set_nonblock(n->wake[0]);
    tl__set_nonblock(n->wake[1]);
    n->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (n->epfd < 0 || ep_ctl(n, EPOLL_CTL_ADD, n->wake[0], EPOLLIN, n->wake) != 0) {
        int rc = tl__seterr(n->rt, TL_EIO, "tl_node_new: epoll: %s", strerror(errno));
        close_wake(n);
        return rc;
    }
    return TL_OK;
}

int tl_node_new(tl_runtime *rt, const tl_node_config *cfg, tl_node **out)
{
    if (!rt || rt->magic != TL__MAGIC_RT || !cfg || !out)
        return TL_EMISUSE;
    *out = NULL;
    int rc = check_config(rt, cfg);
    if (rc != TL_OK)
        return rc;
    tl_node *n = tl__calloc(rt, sizeof *n); /* rt's allocator: tests can keep it after free */
    if (!n)
        return tl__seterr(rt, TL_ENOMEM, "tl_node_new: out of memory");
    configure(n, rt, cfg);
    if ((rc = open_wake(n)) != TL_OK) {
        tl__free(rt, n, sizeof *n);
        return rc;
    }
    rc = tl_register(rt, &tl__agent_fn);
    if (rc != TL_OK && rc != TL_EEXIST) {
        close_wake(n);
        tl__free(rt, n, sizeof *n);
        return rc;
    }
    tl_set_node_id(rt, n->id);
    /* the outbox and inbox come in now, before anything can checkpoint;
     * checkpoints write only what changes from then on */
    rc = tl__node_store_open(n);
    if (rc != TL_OK) {
        tl__transfers_free(n, 1);
        tl__node_durable_free(n);
        close_wake(n);
        tl__free(rt, n, sizeof *n);
        return rc;
    }
    tl__layer_attach(rt, TL__LAYER_NODE, &tl__node_ops, n); /* free: checked above */
    *out = n;
    return TL_OK;
}

void tl_node_free(tl_node *n)
{
    if (!valid(n))
        return;
    for (conn *l = n->links; l; l = l->next)
        tl__link_drop(l, "the node is closing");
    tl__links_reap(n);
    while (n->dials) {
        dial *d = n->dials;
        n->dials = d->next;
        free(d);
    }
    tl__transfers_free(n, tl__node_store_close(n));
    tl__node_durable_free(n);
    tl__remote_free(n);
    tl__access_free(n);
    if (n->lfd >= 0)
        close(n->lfd);
    if (n->lpath[0])
        unlink(n->lpath);
    close_wake(n);
    tl__peers_free(n);
    if (n->zone_ok)
        msgpack_zone_destroy(&n->zone);
    tl__layer_detach(n->rt, TL__LAYER_NODE);
    n->magic = TL__MAGIC_DEAD;
    tl__free(n->rt, n, sizeof *n);
}

tl_runtime *tl_node_runtime(const tl_node *n) { return valid(n) ? n->rt : NULL; }
const char *tl_node_name(const tl_node *n) { return valid(n) ? n->id : ""; }
const char *tl_node_errmsg(const tl_node *n) { return valid(n) ? tl_errmsg(n->rt) : ""; }
const char *tl_node_address(const tl_node *n) { return valid(n) ? n->laddr : ""; }

int tl_node_listen(tl_node *n, const char *where)
{
    tl__addr a;
    if (!valid(n) || !where)
        return TL_EMISUSE;
    if (!n->has_key)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_listen: configure a shared secret first");
    if (n->lfd >= 0)
        return tl__seterr(n->rt, TL_EEXIST, "tl_node_listen: already listening on %s", n->laddr);
    int rc = tl__parse_addr(n, where, &a);
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
    if (bind(fd, (struct sockaddr *)&a.sa, a.len) != 0 || listen(fd, SOMAXCONN) != 0) {
        rc = tl__seterr(n->rt, TL_EIO, "tl_node_listen %s: %s", where, strerror(errno));
        close(fd);
        return rc;
    }
    tl__set_nonblock(fd);
    if (ep_ctl(n, EPOLL_CTL_ADD, fd, EPOLLIN, &n->lfd) != 0) {
        rc = tl__seterr(n->rt, TL_EIO, "tl_node_listen %s: epoll: %s", where, strerror(errno));
        close(fd);
        return rc;
    }
    n->lfd = fd;
    n->lfd_on = 1;
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
    tl__addr a;
    if (!valid(n) || !where)
        return TL_EMISUSE;
    if (!n->has_key)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_connect: configure a shared secret first");
    if (strlen(where) >= sizeof n->dials->addr)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_connect: address too long");
    int rc = tl__parse_addr(n, where, &a);
    if (rc != TL_OK)
        return rc;
    dial *d = calloc(1, sizeof *d);
    if (!d)
        return tl__seterr(n->rt, TL_ENOMEM, "tl_node_connect: out of memory");
    snprintf(d->addr, sizeof d->addr, "%s", where);
    d->next = n->dials;
    n->dials = d;
    tl__dial_now(n, d);
    return TL_OK;
}

int tl_node_pair(tl_node *a, tl_node *b)
{
    int sv[2];
    unsigned char key[crypto_auth_KEYBYTES];
    if (!valid(a) || !valid(b) || a == b)
        return TL_EMISUSE;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return tl__seterr(a->rt, TL_EIO, "tl_node_pair: %s", strerror(errno));
    tl__set_nonblock(sv[0]);
    tl__set_nonblock(sv[1]);
    conn *la = tl__link_new(a, sv[0], 1, "pair");
    conn *lb = la ? tl__link_new(b, sv[1], 0, "pair") : NULL;
    if (!la || !lb) {
        if (la)
            tl__link_unmake(la);
        close(sv[0]);
        close(sv[1]);
        return tl__seterr(a->rt, TL_ENOMEM, "tl_node_pair: out of memory");
    }
    randombytes_buf(key, sizeof key); /* the pair's own secret */
    memcpy(la->key, key, sizeof key);
    memcpy(lb->key, key, sizeof key);
    tl__send_hello(la);
    tl__send_hello(lb);
    return TL_OK;
}

int tl_node_connected(const tl_node *n, const char *peer)
{
    return valid(n) && peer && tl__link_up((tl_node *)n, peer) != NULL;
}

int tl_node_wait_peer(tl_node *n, const char *peer, int timeout_ms)
{
    if (!valid(n) || !peer)
        return TL_EMISUSE;
    int64_t end = tl__mono_ns() + (int64_t)timeout_ms * 1000000;
    while (!tl__link_up(n, peer)) {
        int64_t left = (end - tl__mono_ns()) / 1000000;
        if (left <= 0)
            return tl__seterr(n->rt, TL_ELINK, "no link to node %s after %d ms", peer,
                              timeout_ms);
        int rc = tl_node_poll(n, left > 50 ? 50 : (int)left);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

static int migrate(tl_node *n, tl_tasklet *t, const char *peer, size_t cargo)
{
    if (t->rt != n->rt)
        return tl__seterr(n->rt, TL_EINVAL, "tl_node_migrate: the tasklet belongs to another "
                          "runtime");
    if (strlen(peer) >= 64 || !tl__link_up(n, peer))
        return tl__seterr(n->rt, TL_ELINK, "tl_node_migrate: no link to node '%s'", peer);
    if (cargo && !n->store)
        return tl__seterr(n->rt, TL_ENOTSUP, "moving a workflow: the node has no store "
                          "(tl_node_config.store: the workflow engine's), so its rows cannot "
                          "travel exactly once");
    if (cargo && t->state == TL_BLOCKED && (t->flags & TL__TF_REMOTE))
        return tl__seterr(n->rt, TL_ENOTSUP, "moving a workflow while it waits on a remote "
                          "channel");
    if (t->state == TL_BLOCKED && (t->flags & TL__TF_REMOTE)) {
        /* its request at the home must stop first, or be answered */
        int handled, rc = tl__remote_migrate(n, t, peer, &handled);
        if (handled)
            return rc;
    }
    return tl__depart(n, t, peer, cargo);
}

int tl_node_migrate(tl_node *n, tl_tasklet *h, const char *peer)
{
    tl_tasklet *t = tl__tasklet_at(h);
    if (!valid(n) || !t || !peer)
        return t || !h ? TL_EMISUSE : tl__bad_tasklet(h, "tl_node_migrate");
    return migrate(n, t, peer, 0);
}

int tl__node_migrate_op(void *ud, tl_tasklet *h, const char *peer, size_t cargo)
{
    tl_node *n = ud;
    tl_tasklet *t = tl__tasklet_at(h);
    if (!valid(n) || !t || !peer)
        return TL_EMISUSE;
    return migrate(n, t, peer, cargo);
}

int tl_node_chan(tl_node *n, const char *path, tl_chan **out)
{
    char node[64], name[256];
    if (!valid(n) || !path || !out)
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
        tl_chan *ch = tl__access_exported(n, name);
        ch = ch ? tl__chan_handle(ch) : tl_chan_find_name(n->rt, name);
        if (!ch)
            return TL_ENOENT;
        *out = tl_chan_retain(ch);
        return TL_OK;
    }
    for (tl__link *l = n->rt->chans.next; l != &n->rt->chans; l = l->next) {
        tl_chan *ch = TL__CONTAINER(l, tl_chan, all);
        if (ch->remote && ch->remote->name && strcmp(ch->remote->node, node) == 0 &&
            strcmp(ch->remote->name, name) == 0) {
            *out = tl__chan_handle(tl_chan_retain(ch));
            return TL_OK;
        }
    }
    tl_chan *ch;
    int rc = tl__chan_create(n->rt, 0, &ch);
    if (rc != TL_OK)
        return rc;
    rc = tl__chan_make_proxy(ch, node, 0, name);
    if (rc != TL_OK) {
        tl_chan_release(ch);
        return rc;
    }
    *out = tl__chan_handle(ch);
    return TL_OK;
}

/* ---- the event loop ---- */

/* min(wait, d) where wait < 0 means "no bound yet" and d < 0 counts as 0. */
static int64_t bound(int64_t wait, int64_t d)
{
    d = d < 0 ? 0 : d;
    return wait < 0 || d < wait ? d : wait;
}

/* How long this round may sleep in poll, in ns (-1: until I/O): not past
 * the next timer, redial, handshake deadline or accept pause. */
static int64_t wait_ns(tl_node *n, int timeout_ms, int64_t now)
{
    int64_t wait = timeout_ms < 0 ? -1 : (int64_t)timeout_ms * 1000000, deadline;
    if (tl_runnable_count(n->rt) || atomic_load(&n->stop))
        return 0;
    if (tl_next_deadline(n->rt, &deadline))
        wait = bound(wait, deadline - tl_now(n->rt));
    for (dial *d = n->dials; d && wait != 0; d = d->next)
        if (!d->conn)
            wait = bound(wait, d->next_try - now);
    if (!tl__list_empty(&n->shaking) && wait != 0) /* the oldest handshake ends first */
        wait = bound(wait, TL__CONTAINER(n->shaking.next, conn, shake)->born +
                               n->lim.handshake_ns - now);
    if (n->lfd >= 0 && n->accept_after > now && wait != 0)
        wait = bound(wait, n->accept_after - now);
    return wait;
}

/* ---- the epoll set ----
 *
 * Every descriptor stays registered while it is open: the wake pipe from
 * tl_node_new, the listener from tl_node_listen (events 0 while accepting
 * is paused), each link from the first round it is seen (watch_sync)
 * until tl__unwatch, before its socket closes.  What a link waits for is
 * registered again only when it changes (POLLOUT while output waits, say),
 * so a steady round makes no epoll_ctl at all, and the wait costs the
 * same whatever the number of idle links.  An event names its link by
 * pointer: a link dropped while a batch is dispatched is DEAD (skipped),
 * never freed before the next tl__links_reap. */

/* What l waits for now. */
static uint32_t link_events(const tl_node *n, const conn *l)
{
    if (l->state == L_CONNECTING)
        return EPOLLOUT;
    return (n->deaf ? 0 : (uint32_t)EPOLLIN) | (l->wlen > l->woff ? (uint32_t)EPOLLOUT : 0);
}

void tl__unwatch(conn *l)
{
    if (l->watched && l->fd >= 0)
        epoll_ctl(l->node->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    l->watched = 0;
}

/* Registers what each link and the listener wait for, where that
 * changed.  1 if a link was dropped for it (out of kernel memory): what
 * that woke runs before any wait. */
static int watch_sync(tl_node *n, int64_t now)
{
    int dropped = 0, listen_on = n->lfd >= 0 && now >= n->accept_after;
    if (n->lfd >= 0 && listen_on != n->lfd_on &&
        ep_ctl(n, EPOLL_CTL_MOD, n->lfd, listen_on ? EPOLLIN : 0, &n->lfd) == 0)
        n->lfd_on = listen_on;
    for (conn *l = n->links; l; l = l->next) {
        uint32_t want = link_events(n, l);
        if (l->state == L_DEAD || (l->watched && want == l->events))
            continue;
        if (ep_ctl(n, l->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, l->fd, want, l) != 0) {
            tl__link_drop(l, "epoll_ctl: %s", strerror(errno));
            dropped = 1;
            continue;
        }
        l->watched = 1;
        l->events = want;
    }
    return dropped;
}

/* Right after traffic an answer usually follows within tens of
 * microseconds: look for it a little while before sleeping, because
 * waking a sleeping process costs more than that on a VM.  But only while
 * that pays: when the CPUs are shared (the peer waits for a core this
 * spin holds), answers stop coming within the spin.  A spin that found
 * nothing counts a miss, one that found an answer takes one back; with
 * SPIN_MISSES_MAX more misses than hits the node sleeps at once, and
 * tries one spin per SPIN_RETRY waits to learn whether it pays again. */
int tl__node_spin_pays(tl_node *n)
{
    if (n->spin_misses < SPIN_MISSES_MAX)
        return 1;
    if (++n->spin_skips < SPIN_RETRY)
        return 0;
    n->spin_skips = 0;
    return 1;
}

void tl__node_spin_note(tl_node *n, int hit)
{
    if (!hit)
        n->spin_misses += n->spin_misses < 2 * SPIN_MISSES_MAX;
    else if (n->spin_misses > 0)
        n->spin_misses = n->spin_misses > SPIN_MISSES_MAX ? SPIN_MISSES_MAX - 1 : n->spin_misses - 1;
}

static int wait_io(tl_node *n, struct epoll_event *evs, int64_t wait, int64_t now, int spin)
{
    int ms = wait < 0 ? -1 : (int)((wait + 999999) / 1000000);
    int got = 0;
    if (spin && ms != 0 && now - n->last_io < SPIN_AFTER_IO_NS && tl__node_spin_pays(n)) {
        for (int64_t until = now + SPIN_NS; got == 0 && tl__mono_ns() < until;)
            got = epoll_wait(n->epfd, evs, EV_BATCH, 0);
        tl__node_spin_note(n, got > 0);
    }
    if (got == 0)
        got = epoll_wait(n->epfd, evs, EV_BATCH, ms);
    return got; /* < 0: EINTR, as nothing */
}

/* ---- the lone link ----
 *
 * A node whose one link carries traffic (a request and its answer, one
 * after the other) waits for that link's next bytes in recv itself rather
 * than in epoll_wait and then recv: a system call less per frame, like a
 * plain blocking ping-pong.  The socket is made blocking for it (every
 * other recv and send passes MSG_DONTWAIT), with SO_RCVTIMEO at
 * READ_WAIT_NS.  What else the epoll set holds (the wake pipe, the
 * listener) is not watched meanwhile, so the lone wait is taken only
 * while the set was waited on within READ_WAIT_NS, never past a timer,
 * and a wait that times out goes on in epoll_wait: the others wait at
 * most READ_WAIT_NS.  The short spin of wait_io is done here on the socket
 * (recv without waiting), so a spin that finds the answer has read it. */

/* The node's one link, if this round may wait for it alone: up, nothing
 * to send, traffic within SPIN_AFTER_IO_NS, the round would sleep at
 * least READ_WAIT_NS, and the epoll set was waited on within that. */
static conn *lone_link(tl_node *n, int64_t wait, int64_t now)
{
    conn *l = n->links;
    if (!l || l->next || l->state != L_UP || n->deaf || l->wlen > l->woff ||
        (wait >= 0 && wait < READ_WAIT_NS) || now - n->last_io >= SPIN_AFTER_IO_NS ||
        now - n->polled_at >= READ_WAIT_NS)
        return NULL;
    if (!l->blocking) {
        struct timeval tv = {0, (suseconds_t)(READ_WAIT_NS / 1000)};
        int fl = fcntl(l->fd, F_GETFL);
        if (fl < 0 || setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
            fcntl(l->fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
            return NULL;
        l->blocking = 1;
    }
    return l;
}

/* Waits for l (spinning first while that pays); 1 if bytes came or l went. */
static int wait_lone(tl_node *n, conn *l, int64_t now)
{
    if (tl__node_spin_pays(n)) {
        int got = 0;
        for (int64_t until = now + SPIN_NS; !got && tl__mono_ns() < until;)
            got = tl__read_next(l, 0);
        tl__node_spin_note(n, got);
        if (got)
            return 1;
    }
    return tl__read_next(l, 1);
}

static void dispatch_io(tl_node *n, const struct epoll_event *evs, int got)
{
    for (int i = 0; i < got; i++) {
        uint32_t ev = evs[i].events;
        void *who = evs[i].data.ptr;
        if (who == n->wake) {
            char b[64];
            while (read(n->wake[0], b, sizeof b) > 0)
                ;
            continue;
        }
        if (who == &n->lfd) {
            tl__on_accept(n);
            continue;
        }
        conn *l = who;
        if (l->state == L_CONNECTING) {
            tl__on_connected(l);
        } else if (l->state != L_DEAD) {
            if (ev & EPOLLOUT)
                tl__flush(l);
            if (l->state != L_DEAD && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                tl__on_readable(l);
        }
    }
}

/* Redials that are due, drops handshakes out of time, shrinks idle big
 * buffers, frees dead links. */
static void timers(tl_node *n)
{
    int64_t now = tl__mono_ns();
    for (dial *d = n->dials; d; d = d->next)
        if (!d->conn && d->next_try <= now)
            tl__dial_now(n, d);
    while (!tl__list_empty(&n->shaking)) { /* oldest first; a drop takes it out */
        conn *l = TL__CONTAINER(n->shaking.next, conn, shake);
        if (now - l->born <= n->lim.handshake_ns)
            break;
        tl__link_drop(l, "no authentication within %lld ms", n->lim.handshake_ns / 1000000LL);
    }
    for (conn *l = n->links; l; l = l->next)
        if (l->state != L_DEAD)
            tl__buf_trim(l); /* big buffers idle long enough */
    tl__links_reap(n);
}

int tl_node_poll(tl_node *n, int timeout_ms)
{
    if (!valid(n))
        return TL_EMISUSE;
    int rc = n->started ? TL_OK : tl__node_start(n);
    if (rc == TL_OK)
        rc = tl_run_steps(n->rt, n->batch, NULL);
    if (rc == TL_OK)
        rc = tl__settle(n);
    if (rc != TL_OK)
        return rc;
    struct epoll_event evs[EV_BATCH];
    int64_t now = tl__mono_ns();
    int64_t wait = watch_sync(n, now) ? 0 : wait_ns(n, timeout_ms, now);
    conn *lone = lone_link(n, wait, now);
    if (!lone || !wait_lone(n, lone, now)) {
        if (lone && wait > 0) /* the lone wait timed out: the rest in epoll_wait */
            wait = wait > READ_WAIT_NS ? wait - READ_WAIT_NS : 0;
        int got = wait_io(n, evs, wait, now, !lone);
        n->polled_at = now;
        if (got > 0)
            dispatch_io(n, evs, got);
    }
    timers(n);
    if (n->store && n->need_ckpt)
        rc = tl__settle(n); /* imports are checkpointed before they run */
    if (rc == TL_OK && tl_runnable_count(n->rt))
        rc = tl_run_steps(n->rt, n->batch, NULL); /* what the I/O woke */
    /* acknowledgements and what the woken sent leave in one write */
    return rc == TL_OK ? tl__settle(n) : rc;
}

int tl_node_run(tl_node *n)
{
    if (!valid(n))
        return TL_EMISUSE;
    int rc = TL_OK;
    while (!atomic_load(&n->stop) && rc == TL_OK)
        rc = tl_node_poll(n, -1);
    atomic_store(&n->stop, 0);
    return rc;
}

void tl_node_stop(tl_node *n)
{
    if (!valid(n))
        return;
    atomic_store(&n->stop, 1);
    ssize_t k = write(n->wake[1], "", 1);
    (void)k;
}

void tl_node_stats_get(const tl_node *n, tl_node_stats *out)
{
    if (!valid(n) || !out)
        return;
    *out = n->stats;
    out->pending = n->nout;
}

/* ---- for the fuzzer (tests/fuzz/fuzz_frames.c) ---- */

int tl__node_feed(tl_node *n, const void *bytes, size_t len, int authed)
{
    return tl__node_feed_as(n, bytes, len, authed ? "fuzz-peer" : NULL);
}

int tl__node_feed_as(tl_node *n, const void *bytes, size_t len, const char *peer)
{
    if (!valid(n) || (peer && !tl__valid_id(peer)))
        return TL_EMISUSE;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return TL_EIO;
    tl__set_nonblock(sv[0]);
    conn *l = tl__link_new(n, sv[0], 0, "fuzz");
    if (!l) {
        close(sv[0]);
        close(sv[1]);
        return TL_ENOMEM;
    }
    if (peer) {
        l->hello_got = 1;
        snprintf(l->peer, sizeof l->peer, "%s", peer);
        tl__link_set_up(l);
    }
    if (tl__buf_resize(l, &l->rbuf, &l->rcap, len ? len : 1)) {
        if (len)
            memcpy(l->rbuf, bytes, len);
        l->rlen = len;
        tl__on_bytes(l);
    }
    if (!n->started)
        tl__node_start(n);
    tl_run_steps(n->rt, 10000, NULL);
    tl__settle(n);
    tl__link_drop(l, "end of input");
    tl__links_reap(n);
    close(sv[1]);
    return TL_OK;
}

long long tl__node_send_body(tl_node *n, const char *peer, const void *body, size_t len)
{
    conn *l = valid(n) ? tl__link_up(n, peer) : NULL;
    if (!l)
        return -1;
    msgpack_packer pk;
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_bin_body(&pk, body, len); /* raw bytes: the body as given */
    tl__frame_end(l, at);
    tl__flush(l);
    return l->state == L_DEAD ? -1 : (long long)(l->wlen - l->woff);
}

int tl__node_raw(tl_node *n, const char *peer, const void *bytes, size_t len)
{
    int k = 0;
    for (conn *l = valid(n) ? n->links : NULL; l; l = l->next) {
        if (l->state != L_UP || strcmp(l->peer, peer) != 0)
            continue;
        msgpack_packer pk;
        size_t at = tl__frame_begin(l, &pk);
        if (l->wlen == at + 4)
            l->wlen = at; /* no frame: the packer appends the bytes as they are */
        l->in_frame = 0;
        msgpack_pack_bin_body(&pk, bytes, len);
        tl__flush(l);
        k += l->state == L_UP;
    }
    return k;
}

int tl__node_links_up(const tl_node *n, const char *peer)
{
    int k = 0;
    for (conn *l = valid(n) ? n->links : NULL; l; l = l->next)
        k += l->state == L_UP && strcmp(l->peer, peer) == 0;
    return k;
}

void tl__node_ciphers(tl_node *n, unsigned mask)
{
    if (valid(n))
        n->ciphers = mask;
}

void tl__node_deaf(tl_node *n, int on)
{
    if (valid(n))
        n->deaf = on;
}

int tl__node_lone(tl_node *n, long long wait_ns, long long io_ago_ns, long long poll_ago_ns)
{
    if (!valid(n))
        return 0;
    int64_t now = tl__mono_ns();
    n->last_io = now - io_ago_ns;
    n->polled_at = now - poll_ago_ns;
    return lone_link(n, wait_ns, now) != NULL;
}

const char *tl__node_first_xid(const tl_node *n)
{
    return valid(n) && n->out ? n->out->xid : NULL;
}
