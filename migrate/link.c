/*
 * link.c -- links between nodes: connecting, accepting, the handshake,
 * taking a link down.
 *
 * A link (conn) is one socket to one peer.  Its states, and the function
 * behind each transition:
 *
 *             tl__dial_now (connect in progress)       tl__on_connected
 *   (new) ------------------------------------> CONNECTING -------------.
 *     |                                             |                   |
 *     | tl__link_new: tl__on_accept, tl_node_pair,  | SO_ERROR: quietly  |
 *     | tl__dial_now (connected at once)            v DEAD, redial       |
 *     `----------------------------------------> HANDSHAKE <------------'
 *                                                   |  sends HELLO (our ephemeral
 *                                                   |  public key)
 *                         tl__on_hello: checks it, picks the cipher both
 *                                       offer, derives the session keys
 *                                       (session.c), sends AUTH (our MAC)
 *                         tl__on_auth: their MAC verified: sealed, then
 *                                      tl__link_set_up
 *                                                   v
 *                                                  UP (every frame sealed)
 *
 *   CONNECTING, HANDSHAKE, UP --tl__link_drop--> DEAD --tl__links_reap--> freed
 *   (a bad frame, the peer's ERROR or close, a failed send or receive, no
 *   authentication within handshake_ms (tl_node_poll), the node closing)
 *
 * Tables: n->links (every link, newest first), n->dead (DEAD, to reap),
 * n->shaking (CONNECTING and HANDSHAKE, oldest first: the first to time
 * out) with n->nhandshake counting HANDSHAKE (the accept limit), and per
 * peer (n->peers, by name) its links up, newest first: tl__link_up is one
 * lookup.  set_state keeps them all in step with l->state.
 *
 * Invariants: nothing but HELLO, AUTH and ERROR is acted on before UP
 * (frame.c); a DEAD link has fd -1, is in no request or transfer table
 * (tl__link_drop fails its requests, kills its agents and puts its
 * transfers back to be resent: remote.c, transfer.c) and is freed by the
 * next tl__links_reap, never while a handler runs.  The MAC of AUTH covers
 * both ephemeral public keys, both ids and the sender's role, so that
 * neither message can be replayed or reflected and the keys are the
 * peers' own; an UP link is sealed (l->sealed: frame.c seals and opens
 * every frame with the session keys).  A dialed link that drops redials after
 * REDIAL_NS, doubling up to MAX_REDIAL_NS while handshakes fail.
 */
#include "node_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- links ---- */

static int peer_match(const void *obj, const void *key)
{
    return strcmp(((const peerinfo *)obj)->name, key) == 0;
}

/* The peer named name; with create, made if new (NULL: out of memory). */
peerinfo *tl__peer_get(tl_node *n, const char *name, int create)
{
    uint64_t h = tl__hash(n, name, strlen(name));
    peerinfo *p = tl__hmap_get(&n->peers, h, peer_match, name);
    if (p || !create)
        return p;
    p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->hash = h;
    p->node = n;
    tl__list_init(&p->ups);
    tl__list_init(&p->unsent);
    if (tl__hmap_put(&n->peers, h, p) != TL_OK) {
        free(p);
        return NULL;
    }
    return p;
}

void tl__peers_free(tl_node *n)
{
    for (size_t i = 0; i < n->peers.cap; i++) {
        peerinfo *p = n->peers.e[i].obj;
        if (p) {
            tl__access_peer_free(p);
            free(p->forgets.v);
            free(p);
        }
    }
    tl__hmap_free(&n->peers);
}

/* The newest link up to node peer, or NULL. */
conn *tl__link_up(tl_node *n, const char *name)
{
    peerinfo *p = tl__peer_get(n, name, 0);
    return p ? tl__peer_link(p) : NULL;
}

conn *tl__peer_link(const peerinfo *p)
{
    return tl__list_empty(&p->ups) ? NULL : TL__CONTAINER(p->ups.next, conn, upl);
}

/* Every change of l->state goes through here: it keeps n->nhandshake,
 * n->shaking and n->dead true. */
static void set_state(conn *l, int state)
{
    tl_node *n = l->node;
    n->nhandshake -= l->state == L_HANDSHAKE;
    n->nhandshake += state == L_HANDSHAKE;
    l->state = state;
    if (state == L_UP || state == L_DEAD)
        tl__list_unlink(&l->shake);
    if (state == L_DEAD) {
        tl__list_unlink(&l->upl);
        l->dead_next = n->dead;
        n->dead = l;
    }
}

void tl__set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* A new link in HANDSHAKE (the caller sends HELLO, or makes it
 * CONNECTING). */
conn *tl__link_new(tl_node *n, int fd, int client, const char *where)
{
    conn *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->node = n;
    l->fd = fd;
    l->client = client;
    l->seq = ++n->link_seq;
    l->state = L_HANDSHAKE;
    n->nhandshake++;
    n->nlinks++;
    l->born = tl__mono_ns();
    snprintf(l->where, sizeof l->where, "%.127s", where);
    memcpy(l->key, n->key, sizeof l->key);
    tl__session_init(l);
    tl__list_init(&l->upl);
    tl__list_init(&l->sent);
    tl__list_push_back(&n->shaking, &l->shake);
    l->next = n->links;
    if (n->links)
        n->links->prev = l;
    n->links = l;
    return l;
}

/* Takes back a link just made (l is n->links), nothing sent yet. */
void tl__link_unmake(conn *l)
{
    set_state(l, L_DEAD);
    tl__links_reap(l->node);
}

/* l authenticated its peer (l->peer): it is up, and the newest link to
 * that peer if none up is newer. */
void tl__link_set_up(conn *l)
{
    tl_node *n = l->node;
    peerinfo *p = tl__peer_get(n, l->peer, 1);
    if (!p) {
        tl__link_drop(l, "out of memory");
        return;
    }
    l->p = p;
    tl__link *at = &p->ups; /* a peer has one or two links: the walk is short */
    while (at->next != &p->ups && TL__CONTAINER(at->next, conn, upl)->seq > l->seq)
        at = at->next;
    tl__list_push_front(at, &l->upl);
    set_state(l, L_UP);
    n->stats.links_up++;
}

void tl__send_hello(conn *l)
{
    msgpack_packer pk;
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_uint8(&pk, M_HELLO);
    tl__pack_str(&pk, TL__NODE_MAGIC);
    msgpack_pack_uint32(&pk, TL_PROTO_VERSION);
    tl__pack_str(&pk, l->node->id);
    msgpack_pack_bin(&pk, sizeof l->mine);
    msgpack_pack_bin_body(&pk, l->mine, sizeof l->mine);
    msgpack_pack_uint8(&pk, (uint8_t)tl__ciphers_local(l->node));
    tl__frame_end(l, at);
    tl__flush(l);
}

static void send_auth(conn *l)
{
    unsigned char mac[crypto_auth_BYTES];
    msgpack_packer pk;
    tl__session_mac(l, l->client, mac);
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, M_AUTH);
    msgpack_pack_bin(&pk, sizeof mac);
    msgpack_pack_bin_body(&pk, mac, sizeof mac);
    tl__frame_end(l, at);
    tl__flush(l);
}

/* Takes a link down: its pending remote operations fail, the agents it
 * started are killed, its unacknowledged transfers wait for a new link. */
void tl__link_drop(conn *l, const char *fmt, ...)
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
    tl__node_log(n, "link %s%s%s dropped: %s", l->where, l->peer[0] ? " to " : "", l->peer, why);
    set_state(l, L_DEAD);
    tl__unwatch(l);
    close(l->fd);
    l->fd = -1;
    n->stats.links_dropped += was_up;
    if (l->dial) {
        dial *d = l->dial;
        d->backoff = was_up || d->backoff < REDIAL_NS ? REDIAL_NS
                     : d->backoff * 2 > MAX_REDIAL_NS ? MAX_REDIAL_NS : d->backoff * 2;
        d->conn = NULL;
        d->next_try = tl__mono_ns() + d->backoff;
        l->dial = NULL;
    }
    tl__remote_link_lost(n, l);
    tl__outbox_unsend(n, l);
}

void tl__link_free(conn *l)
{
    tl__unwatch(l); /* a link taken back unmade: its caller closes the socket */
    tl__session_wipe(l);
    tl__buf_release(l);
    free(l->acks.v);
    tl__hmap_free(&l->rops);
    tl__hmap_free(&l->agents);
    free(l);
}

/* Frees the links that went DEAD. */
void tl__links_reap(tl_node *n)
{
    while (n->dead) {
        conn *l = n->dead;
        n->dead = l->dead_next;
        if (l->prev)
            l->prev->next = l->next;
        else
            n->links = l->next;
        if (l->next)
            l->next->prev = l->prev;
        n->nlinks--;
        tl__link_free(l);
    }
}

/* ---- addresses ---- */

int tl__parse_addr(tl_node *n, const char *s, tl__addr *a)
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

/* ---- the handshake ---- */

int tl__valid_id(const char *s)
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

/* The version check of a HELLO: 0 and an ERROR naming both versions
 * sent, the link dropped, if it is not ours. */
static int hello_version_ok(conn *l, const msgpack_object *v)
{
    if (mp_is_u(v) && v->via.u64 == TL_PROTO_VERSION)
        return 1;
    char msg[200];
    unsigned long long got = mp_is_u(v) ? v->via.u64 : 0;
    snprintf(msg, sizeof msg, "protocol version %llu is not supported; this node speaks %d "
             "(version 3 negotiates the cipher and seals large frames in records)", got,
             TL_PROTO_VERSION);
    tl__wire_error(l, TL_EPROTO, msg);
    tl__link_drop(l, "the peer speaks protocol version %llu, this node %d", got, TL_PROTO_VERSION);
    return 0;
}

/* The peer's cipher offer: the link's cipher chosen from both (0 and
 * the link dropped if they share none). */
static int hello_cipher(conn *l, const msgpack_object *offer)
{
    if (!mp_is_u(offer) || offer->via.u64 > 255) {
        tl__link_drop(l, "malformed hello (no cipher offer)");
        return 0;
    }
    l->their_ciphers = (unsigned)offer->via.u64;
    l->cipher = tl__session_cipher(l);
    if (!l->cipher) {
        tl__wire_error(l, TL_EPROTO, "no cipher in common (this node offers ChaCha20-Poly1305"
                       " and, with AES-NI, AES-256-GCM)");
        tl__link_drop(l, "no cipher in common with the peer (its offer: %u, ours: %u)",
                      l->their_ciphers, tl__ciphers_local(l->node));
        return 0;
    }
    return 1;
}

void tl__on_hello(conn *l, const msgpack_object *o)
{
    tl_node *n = l->node;
    char magic[32], peer[64];
    if (o->via.array.size < 5 || !mp_str(mp_item(o, 1), magic, sizeof magic) ||
        strcmp(magic, TL__NODE_MAGIC) != 0) {
        tl__link_drop(l, "not a libtasklet node (bad hello)");
        return;
    }
    if (!hello_version_ok(l, mp_item(o, 2)))
        return;
    if (o->via.array.size < 6 || !mp_str(mp_item(o, 3), peer, sizeof peer) ||
        !tl__valid_id(peer) || mp_item(o, 4)->type != MSGPACK_OBJECT_BIN ||
        mp_item(o, 4)->via.bin.size != 32) {
        tl__link_drop(l, "malformed hello");
        return;
    }
    if (strcmp(peer, n->id) == 0) {
        tl__link_drop(l, "the peer claims this node's own id '%s'", peer);
        return;
    }
    if (l->hello_got) {
        tl__link_drop(l, "a second hello");
        return;
    }
    if (!hello_cipher(l, mp_item(o, 5)))
        return;
    l->hello_got = 1;
    snprintf(l->peer, sizeof l->peer, "%s", peer);
    memcpy(l->theirs, mp_item(o, 4)->via.bin.ptr, sizeof l->theirs);
    if (tl__session_derive(l) != 0) {
        tl__link_drop(l, "malformed hello (an unusable public key)");
        return;
    }
    send_auth(l);
}

void tl__on_auth(conn *l, const msgpack_object *o)
{
    unsigned char want[crypto_auth_BYTES];
    if (!l->hello_got || o->via.array.size < 2 || mp_item(o, 1)->type != MSGPACK_OBJECT_BIN ||
        mp_item(o, 1)->via.bin.size != crypto_auth_BYTES) {
        tl__link_drop(l, "malformed authentication");
        return;
    }
    tl__session_mac(l, !l->client, want);
    if (sodium_memcmp(want, mp_item(o, 1)->via.bin.ptr, sizeof want) != 0) {
        tl__wire_error(l, TL_EAUTH, "authentication failed");
        tl__link_drop(l, "authentication failed: node '%s' does not hold the shared secret", l->peer);
        return;
    }
    l->sealed = 1; /* every frame after the peer's AUTH, both ways */
    tl__link_set_up(l);
    if (l->state == L_UP)
        tl__node_log(l->node, "link %s to %s up (%s)", l->where, l->peer,
                     tl__cipher_name(l->cipher));
}

/* ---- dialing, accepting ---- */

void tl__dial_now(tl_node *n, dial *d)
{
    tl__addr a;
    if (tl__parse_addr(n, d->addr, &a) != TL_OK)
        return;
    int fd = socket(a.family, SOCK_STREAM, 0);
    if (fd < 0) {
        d->next_try = tl__mono_ns() + REDIAL_NS;
        return;
    }
    tl__set_nonblock(fd);
    if (a.family == AF_INET) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int rc = connect(fd, (struct sockaddr *)&a.sa, a.len);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        d->next_try = tl__mono_ns() + REDIAL_NS;
        return;
    }
    conn *l = tl__link_new(n, fd, 1, d->addr);
    if (!l) {
        close(fd);
        d->next_try = tl__mono_ns() + REDIAL_NS;
        return;
    }
    l->dial = d;
    d->conn = l;
    if (rc == 0)
        tl__send_hello(l);
    else
        set_state(l, L_CONNECTING);
}

void tl__on_connected(conn *l)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        /* quietly: the peer may not be up yet */
        set_state(l, L_DEAD);
        tl__unwatch(l);
        close(l->fd);
        l->fd = -1;
        if (l->dial) {
            l->dial->conn = NULL;
            l->dial->next_try = tl__mono_ns() + REDIAL_NS;
        }
        return;
    }
    set_state(l, L_HANDSHAKE);
    tl__send_hello(l);
}

/* Accepts what is pending, at most ACCEPT_BATCH per round (so that a
 * flood of connections does not starve the links), within the limits of
 * limits.c. */
void tl__on_accept(tl_node *n)
{
    for (int k = 0; k < ACCEPT_BATCH; k++) {
        int fd = accept(n->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                /* out of descriptors, say: stop listening for a moment
                 * rather than spin on a listener that stays readable */
                tl__node_log(n, "accept on %s: %s", n->laddr, strerror(errno));
                n->accept_after = tl__mono_ns() + REDIAL_NS;
            }
            return;
        }
        uint64_t src = 0;
        const char *full = tl__limit_accept(n, fd, &src);
        if (full) {
            close(fd);
            tl__limit_refused(n, full);
            continue;
        }
        tl__set_nonblock(fd);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *l = tl__link_new(n, fd, 0, n->laddr);
        if (!l) {
            close(fd);
            return;
        }
        l->src = src;
        tl__send_hello(l);
    }
}
