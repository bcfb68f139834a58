/*
 * test_relay.c -- the session of protocol 3 (docs/PROTOCOL.md section 4)
 * against someone on the path.  Node "A" (the home: channel "box")
 * listens on 127.0.0.1; a relay thread listens beside it and forwards each
 * connection to A; node "B" dials the relay.  The relay passes the genuine
 * handshake through, frame by frame, and then, without the secret, tries
 * the attacks that worked against protocol 1 (issue 12, point 2):
 *
 *   - rewrite a sent value in B's OP (the bits a stream cipher would let
 *     it flip: 7 into 127);
 *   - inject a receive on A's box, replay B's genuine OP, swap two of
 *     B's frames;
 *   - inject a tasklet of a registered function (a real moving snapshot);
 *   - resend B's real transfer with its transfer id altered;
 *   - deliver crafted frames (the array16 snapshot of point 1 to A,
 *     garbage of a sealed frame's size to B).
 *
 * Each must fail: the link drops (stats.frames_rejected), nothing is
 * applied (box's contents, moved_in, the mover never runs twice), and the
 * next link through the relay, passed through, works.  Also: a replayed
 * recorded handshake fails both ways, the recorded session shows nothing
 * in clear, a wrong secret gets no link (and tl_node_secret_load reads a
 * secret only from a private file or the environment), and, as controls, the injected
 * receive and tasklet do act when fed in clear on an unsealed link
 * (tl__node_feed, the fuzzer's entry), so the attacks are real ones.
 *
 * The nodes run in the test's thread, the relay in its own with blocking
 * sockets; waits are bounded by wall-clock time only.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tasklet.h"
#include "tasklet_node.h"
#include "../migrate/node_internal.h"
#include "../persist/persist.h" /* tl__snapshot_save_moving */

#define SECRET "test-relay: the cluster's shared secret"
#define WAIT_S 60.0 /* a hang is a failure after this long, never an expectation */

/* ---- tasklets ---- */

/* op: one send or receive on ch, its outcome in OPS[id]. */
typedef struct {
    tl_chan *ch;
    tl_value v;
    int32_t op, id;
} op_t;
static const tl_field op_fields[] = {
    TL_FIELD(op_t, ch, TL_T_CHAN), TL_FIELD(op_t, v, TL_T_VALUE),
    TL_FIELD(op_t, op, TL_T_I32), TL_FIELD(op_t, id, TL_T_I32),
};
static struct {
    int done, err;
    int64_t got;
} OPS[16];

static tl_status op_step(tl_frame *f, void *locals)
{
    op_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    if (L->op == TL_OP_SEND)
        TL_SEND(f, L->ch, L->v);
    else
        TL_RECV(f, L->ch, L->v);
    OPS[L->id].err = tl_frame_error(f);
    OPS[L->id].got = tl_as_i64(L->v);
    OPS[L->id].done++;
    TL_END(f);
}
static const tl_func op_fn = {"test.relay.op", 1, op_step, sizeof(op_t), op_fields,
                              TL_COUNTOF(op_fields), NULL};

/* mover: moves to node "A" (retrying while there is no link) and there
 * sends n on "box"; ARRIVED counts its arrivals. */
typedef struct {
    int64_t n;
    tl_chan *box;
} mover_t;
static const tl_field mover_fields[] = {
    TL_FIELD(mover_t, n, TL_T_I64), TL_FIELD(mover_t, box, TL_T_CHAN),
};
static int ARRIVED;

static tl_status mover_step(tl_frame *f, void *locals)
{
    mover_t *L = locals;
    tl_runtime *rt = tl_frame_runtime(f);
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    while (strcmp(tl_node_id(rt), "A") != 0) {
        TL_MIGRATE(f, "A");
        if (tl_frame_error(f) != TL_OK)
            TL_SLEEP(f, 10);
    }
    ARRIVED++;
    L->box = tl_chan_retain(tl_chan_find_name(rt, "box"));
    TL_SEND(f, L->box, tl_i64(L->n));
    TL_END(f);
}
static const tl_func mover_fn = {"test.relay.mover", 1, mover_step, sizeof(mover_t),
                                 mover_fields, TL_COUNTOF(mover_fields), NULL};

/* ---- byte strings ---- */

typedef struct bytes {
    unsigned char *p;
    size_t len, cap;
} bytes;

static void bytes_add(bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void bytes_free(bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int bytes_has(const bytes *b, size_t from, const char *s)
{
    size_t k = strlen(s);
    for (size_t i = from; i + k <= b->len; i++)
        if (memcmp(b->p + i, s, k) == 0)
            return 1;
    return 0;
}

/* ---- the relay ---- */

enum attack {
    PASS,        /* forward everything */
    REWRITE,     /* flip the value's bits in B's first sealed frame */
    INJECT_TO_A, /* after B's AUTH, the frame in inject[0] (in clear) */
    INJECT_TO_B, /* after A's AUTH, the frame in inject[1] */
    REPLAY,      /* B's first sealed frame, twice */
    RESEND,      /* B's first sealed frame, then a copy with a byte of its id altered */
    SWAP,        /* B's first two sealed frames, in the other order */
    HANDSHAKE_TO_B /* A's side of the previous connection, replayed to B */
};

#define MAX_PLAN 8

typedef struct relay {
    int lfd, port, target;   /* target: A's port */
    int plan[MAX_PLAN];      /* attacks of the first connections; then PASS */
    int nplan;
    atomic_int accepted, ended, cut;
    int wake[2];
    pthread_t th;
    pthread_mutex_t mu;
    bytes rec[2], last[2];   /* B->A and A->B: this connection's, the previous one's */
    bytes inject[2];
    bytes held;              /* SWAP: the frame held back */
} relay;

typedef struct pipe_end {
    unsigned char *buf;
    size_t len, cap;
    int frames;
} pipe_end;

static int dial_port(int port)
{
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = htons((uint16_t)port);
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&in, sizeof in) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (fd >= 0 && n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* the node dropped the connection: fine */
        b += k;
        n -= (size_t)k;
    }
}

/* What the relay does with frame number k of direction dir (0: B to A),
 * f[0..n) with its length prefix, towards out (and back, the other way). */
static void relay_frame(relay *r, int attack, int dir, int k, unsigned char *f, size_t n,
                        int out, int back)
{
    pthread_mutex_lock(&r->mu);
    bytes_add(&r->rec[dir], f, n);
    pthread_mutex_unlock(&r->mu);
    int first_sealed = dir == 0 && k == 2;
    if (attack == REWRITE && first_sealed)
        f[n - 16 - 1] ^= 7 ^ 127; /* OP [..., 7]: the value is the last byte */
    if (attack == SWAP && first_sealed) {
        bytes_add(&r->held, f, n);
        return;
    }
    send_all(out, f, n);
    if (attack == SWAP && dir == 0 && k == 3)
        send_all(out, r->held.p, r->held.len);
    if (attack == REPLAY && first_sealed)
        send_all(out, f, n);
    if (attack == RESEND && first_sealed) {
        f[4 + 10] ^= 1; /* inside the transfer id of XFER [10, [[xid, ...]]] */
        send_all(out, f, n);
    }
    if (attack == INJECT_TO_A && dir == 0 && k == 1)
        send_all(out, r->inject[0].p, r->inject[0].len);
    if (attack == INJECT_TO_B && dir == 1 && k == 1)
        send_all(out, r->inject[1].p, r->inject[1].len);
    (void)back;
}

/* Reads what fd has into e and hands on each whole frame; 0 at EOF. */
static int relay_read(relay *r, int attack, int dir, pipe_end *e, int fd, int out, int back)
{
    if (e->len + 65536 > e->cap) {
        e->cap = e->cap ? 2 * e->cap : 131072;
        e->buf = realloc(e->buf, e->cap);
        assert_non_null(e->buf);
    }
    ssize_t got = recv(fd, e->buf + e->len, e->cap - e->len, 0);
    if (got < 0 && errno == EINTR)
        return 1;
    if (got <= 0)
        return 0;
    e->len += (size_t)got;
    size_t off = 0;
    while (e->len - off >= 4) {
        unsigned char *f = e->buf + off;
        size_t n = 4 + ((size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3]);
        if (e->len - off < n)
            break;
        relay_frame(r, attack, dir, e->frames++, f, n, out, back);
        off += n;
    }
    memmove(e->buf, e->buf + off, e->len - off);
    e->len -= off;
    return 1;
}

/* One connection c from B: to A (or, replaying, nowhere) until a side closes. */
static void relay_conn(relay *r, int c, int attack)
{
    pipe_end e[2] = {{0}};
    int s = -1;
    if (attack == HANDSHAKE_TO_B) {
        pthread_mutex_lock(&r->mu);
        bytes old = r->last[1];
        pthread_mutex_unlock(&r->mu);
        send_all(c, old.p, old.len);
    } else {
        s = dial_port(r->target);
    }
    for (int open = 1; open && !atomic_load(&r->cut);) {
        struct pollfd p[3] = {{c, POLLIN, 0}, {s, POLLIN, 0}, {r->wake[0], POLLIN, 0}};
        if (poll(p, 3, 50) <= 0)
            continue;
        if (p[2].revents)
            break;
        if (p[0].revents && s < 0) {
            unsigned char sink[4096]; /* B's answers to a replay go nowhere */
            open = recv(c, sink, sizeof sink, 0) > 0;
        } else if (p[0].revents) {
            open = relay_read(r, attack, 0, &e[0], c, s, c);
        }
        if (open && s >= 0 && p[1].revents)
            open = relay_read(r, attack, 1, &e[1], s, c, s);
    }
    close(c);
    if (s >= 0)
        close(s);
    free(e[0].buf);
    free(e[1].buf);
    pthread_mutex_lock(&r->mu);
    for (int d = 0; d < 2; d++) {
        bytes_free(&r->last[d]);
        r->last[d] = r->rec[d];
        memset(&r->rec[d], 0, sizeof r->rec[d]);
    }
    pthread_mutex_unlock(&r->mu);
    atomic_store(&r->cut, 0);
    atomic_fetch_add(&r->ended, 1);
}

static void *relay_main(void *ud)
{
    relay *r = ud;
    for (;;) {
        struct pollfd p[2] = {{r->lfd, POLLIN, 0}, {r->wake[0], POLLIN, 0}};
        if (poll(p, 2, -1) <= 0)
            continue;
        if (p[1].revents)
            return NULL;
        int c = accept(r->lfd, NULL, NULL);
        if (c < 0)
            continue;
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int i = atomic_fetch_add(&r->accepted, 1);
        relay_conn(r, c, i < r->nplan ? r->plan[i] : PASS);
    }
}

static void relay_start(relay *r, int target)
{
    struct sockaddr_in in;
    socklen_t len = sizeof in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(r->lfd >= 0);
    assert_int_equal(bind(r->lfd, (struct sockaddr *)&in, sizeof in), 0);
    assert_int_equal(listen(r->lfd, 16), 0);
    getsockname(r->lfd, (struct sockaddr *)&in, &len);
    r->port = ntohs(in.sin_port);
    r->target = target;
    assert_int_equal(pipe(r->wake), 0);
    pthread_mutex_init(&r->mu, NULL);
    assert_int_equal(pthread_create(&r->th, NULL, relay_main, r), 0);
}

static void relay_stop(relay *r)
{
    ssize_t k = write(r->wake[1], "x", 1);
    (void)k;
    pthread_join(r->th, NULL);
    close(r->lfd);
    close(r->wake[0]);
    close(r->wake[1]);
    pthread_mutex_destroy(&r->mu);
    for (int d = 0; d < 2; d++) {
        bytes_free(&r->rec[d]);
        bytes_free(&r->last[d]);
        bytes_free(&r->inject[d]);
    }
    bytes_free(&r->held);
}

/* ---- the fixture: A listening, B dialing the relay ---- */

enum { A, B, C };

static struct {
    tl_runtime *rt[3];
    tl_node *n[3];
    tl_chan *box;          /* A's */
    char log[3][16384];
    relay r;
} F;

static void log_line(void *ud, const char *msg)
{
    char *log = F.log[(intptr_t)ud];
    size_t k = strlen(log);
    if (k + strlen(msg) + 2 < sizeof F.log[0])
        snprintf(log + k, sizeof F.log[0] - k, "%s\n", msg);
}

static tl_node *node_new(int i, const char *id, const char *secret)
{
    tl_node_config cfg;
    tl_node *n = NULL;
    memset(&cfg, 0, sizeof cfg);
    assert_int_equal(tl_runtime_new(NULL, &F.rt[i]), TL_OK);
    assert_int_equal(tl_register(F.rt[i], &op_fn), TL_OK);
    assert_int_equal(tl_register(F.rt[i], &mover_fn), TL_OK);
    cfg.node_id = id;
    cfg.secret = secret;
    cfg.secret_len = strlen(secret);
    cfg.log = log_line;
    cfg.log_ud = (void *)(intptr_t)i;
    assert_int_equal(tl_node_new(F.rt[i], &cfg, &n), TL_OK);
    F.n[i] = n;
    return n;
}

static tl_node_stats stats(int i)
{
    tl_node_stats s;
    memset(&s, 0, sizeof s);
    tl_node_stats_get(F.n[i], &s);
    return s;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pump_once(void)
{
    for (int i = 0; i < 3; i++)
        if (F.n[i])
            assert_int_equal(tl_node_poll(F.n[i], 1), TL_OK);
}

/* Polls every node until cond holds, bounded by wall-clock time. */
#define PUMP_UNTIL(cond)                                                          \
    do {                                                                          \
        double end_ = now_s() + WAIT_S;                                           \
        while (!(cond) && now_s() < end_)                                         \
            pump_once();                                                          \
        if (!(cond))                                                              \
            fail_msg("%s:%d: never reached in %.0f s: %s\nA: %s\nB: %s", __FILE__, \
                     __LINE__, WAIT_S, #cond, F.log[A], F.log[B]);               \
    } while (0)

/* Polls for ms milliseconds of wall-clock time (to see that nothing more
 * happens). */
static void pump_for(int ms)
{
    double end = now_s() + ms / 1000.0;
    while (now_s() < end)
        pump_once();
}

static int linked(void)
{
    return tl_node_connected(F.n[A], "B") && tl_node_connected(F.n[B], "A");
}

/* Sets up A with its box, the relay (its first connections attacked as
 * plan says), and B dialing the relay. */
static void start(const int *plan, int nplan)
{
    node_new(A, "A", SECRET);
    assert_int_equal(tl_node_listen(F.n[A], "tcp://127.0.0.1:0"), TL_OK);
    assert_int_equal(tl_chan_new(F.rt[A], 8, &F.box), TL_OK);
    assert_int_equal(tl_chan_set_name(F.box, "box"), TL_OK);
    assert_int_equal(tl_node_export(F.n[A], F.box, "box"), TL_OK); /* peers may use it */
    const char *colon = strrchr(tl_node_address(F.n[A]), ':');
    for (int i = 0; i < nplan; i++)
        F.r.plan[i] = plan[i];
    F.r.nplan = nplan;
    relay_start(&F.r, atoi(colon + 1));
    node_new(B, "B", SECRET);
    char addr[64];
    snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", F.r.port);
    assert_int_equal(tl_node_connect(F.n[B], addr), TL_OK);
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    memset(OPS, 0, sizeof OPS);
    ARRIVED = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        if (F.n[i])
            tl_node_free(F.n[i]);
    if (F.r.th)
        relay_stop(&F.r);
    tl_chan_release(F.box);
    for (int i = 0; i < 3; i++)
        if (F.rt[i])
            tl_runtime_free(F.rt[i]);
    memset(&F, 0, sizeof F);
    return 0;
}

/* B's tasklet: op on A's channel "box" (a remote reference), OPS[id]. */
static void remote_op(int id, int op, int64_t v)
{
    tl_chan *proxy;
    assert_int_equal(tl_node_chan(F.n[B], "A/box", &proxy), TL_OK);
    op_t args = {proxy, op == TL_OP_SEND ? tl_i64(v) : tl_nil(), op, id};
    assert_int_equal(tl_spawn(F.rt[B], &op_fn, &args, sizeof args, NULL), TL_OK);
    tl_chan_release(proxy);
}

/* Everything in A's box, in order, into out (at most 8); the count. */
static size_t drain_box(int64_t out[8])
{
    size_t k = 0;
    tl_value v;
    while (k < 8 && tl_chan_try_recv(F.box, &v) == TL_OK) {
        out[k++] = tl_as_i64(v);
        tl_value_set(&v, tl_nil());
    }
    return k;
}

/* After an attack: a new link through the relay (passed through) works
 * both ways: B sends v to A's box and receives it back. */
static void genuine_link_works(int id, int64_t v)
{
    int64_t got[8];
    PUMP_UNTIL(linked());
    remote_op(id, TL_OP_SEND, v);
    PUMP_UNTIL(OPS[id].done);
    assert_int_equal(OPS[id].err, TL_OK);
    assert_int_equal(tl_chan_count(F.box), 1);
    remote_op(id + 1, TL_OP_RECV, 0);
    PUMP_UNTIL(OPS[id + 1].done);
    assert_int_equal(OPS[id + 1].err, TL_OK);
    assert_int_equal(OPS[id + 1].got, v);
    assert_int_equal(drain_box(got), 0);
}

/* The link through the relay dropped because A rejected a frame. */
static void rejected_by(int i)
{
    PUMP_UNTIL(stats(i).frames_rejected == 1);
    assert_non_null(strstr(F.log[i], "failed authentication"));
}

/* ---- frames an attacker builds (in clear: it has no key) ---- */

static void frame_of(bytes *out, const msgpack_sbuffer *sb)
{
    unsigned char head[4] = {(unsigned char)(sb->size >> 24), (unsigned char)(sb->size >> 16),
                             (unsigned char)(sb->size >> 8), (unsigned char)sb->size};
    bytes_add(out, head, 4);
    bytes_add(out, sb->data, sb->size);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* OP [20, req, RECV, [id, "box"], nil]: a receive on A's box. */
static void receive_frame(bytes *out)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, 20);
    msgpack_pack_uint8(&pk, 77);
    msgpack_pack_uint8(&pk, TL_OP_RECV);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, tl_chan_id(F.box));
    pack_str(&pk, "box");
    msgpack_pack_nil(&pk);
    frame_of(out, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* XFER [10, [[xid, snapshot]]] of a mover carrying n, made in a runtime of
 * node "B"; with array16, the snapshot's outer array header is widened to
 * three bytes (the shape that crashed the loader, issue 12 point 1). */
static void tasklet_frame(bytes *out, int64_t n, int array16)
{
    tl_runtime *rt;
    tl_tasklet *t;
    void *snap;
    size_t len;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &mover_fn), TL_OK);
    assert_int_equal(tl_set_node_id(rt, "B"), TL_OK);
    mover_t args = {n, NULL};
    assert_int_equal(tl_spawn(rt, &mover_fn, &args, sizeof args, &t), TL_OK);
    assert_int_equal(tl__snapshot_save_moving(tl__tasklet_at(t), &snap, &len), TL_OK);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 10);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    pack_str(&pk, "0123456789abcdef0123456789abcdef");
    const unsigned char *s = snap;
    int wide = array16 && (s[0] & 0xf0) == 0x90;
    msgpack_pack_bin(&pk, len + (wide ? 2 : 0));
    if (wide) {
        unsigned char h[3] = {0xdc, 0, (unsigned char)(s[0] & 0x0f)};
        msgpack_pack_bin_body(&pk, h, 3);
        msgpack_pack_bin_body(&pk, s + 1, len - 1);
    } else {
        msgpack_pack_bin_body(&pk, s, len);
    }
    frame_of(out, &sb);
    msgpack_sbuffer_destroy(&sb);
    tl_snapshot_free(rt, snap, len);
    tl_tasklet_release(t);
    tl_runtime_free(rt);
}

/* ---- the tests ---- */

/* A genuine session through the relay works, and shows nothing in clear
 * after the handshake.  Its recordings, replayed, get no link: B's side
 * to A, then A's side to B; then a genuine link works again. */
static void test_genuine_and_replayed_handshake(void **state)
{
    (void)state;
    int plan[] = {PASS, HANDSHAKE_TO_B};
    start(plan, 2);
    genuine_link_works(0, 7);
    bytes rec[2] = {{0}};
    pthread_mutex_lock(&F.r.mu);
    for (int d = 0; d < 2; d++)
        bytes_add(&rec[d], F.r.rec[d].p, F.r.rec[d].len);
    pthread_mutex_unlock(&F.r.mu);
    /* HELLO names the nodes; the sealed frames hide the channel's name */
    assert_true(bytes_has(&rec[0], 0, "libtasklet-node"));
    assert_false(bytes_has(&rec[0], 0, "box"));
    assert_false(bytes_has(&rec[1], 0, "box"));

    /* B's recorded side to A, on a new connection */
    uint64_t up = stats(A).links_up, up_b = stats(B).links_up;
    int fd = dial_port(atoi(strrchr(tl_node_address(F.n[A]), ':') + 1));
    assert_true(fd >= 0);
    send_all(fd, rec[0].p, rec[0].len);
    PUMP_UNTIL(strstr(F.log[A], "authentication failed: node 'B'"));
    close(fd);
    assert_int_equal(stats(A).links_up, up);
    assert_int_equal(tl_chan_count(F.box), 0); /* its sealed send of 7 did nothing */

    /* A's recorded side to B: the relay cuts the link, B redials, the relay
     * plays A's old HELLO and AUTH */
    atomic_store(&F.r.cut, 1);
    PUMP_UNTIL(strstr(F.log[B], "authentication failed: node 'A'"));
    assert_int_equal(stats(B).links_up, up_b);
    genuine_link_works(2, 8);
    bytes_free(&rec[0]);
    bytes_free(&rec[1]);
}

/* The value B sends, its bits flipped on the way: A drops the link, the box
 * stays empty, B's sender gets TL_ELINK, not success. */
static void test_rewrite_value(void **state)
{
    (void)state;
    int plan[] = {REWRITE};
    start(plan, 1);
    PUMP_UNTIL(linked());
    remote_op(0, TL_OP_SEND, 7);
    rejected_by(A);
    PUMP_UNTIL(OPS[0].done);
    assert_int_equal(OPS[0].err, TL_ELINK);
    assert_int_equal(tl_chan_count(F.box), 0);
    genuine_link_works(1, 7);
}

/* A receive injected after the handshake: the box keeps its value.  The
 * same frame fed in clear on an unsealed link takes it (the control). */
static void test_inject_receive(void **state)
{
    (void)state;
    int plan[] = {INJECT_TO_A};
    receive_frame(&F.r.inject[0]);
    start(plan, 1);
    assert_int_equal(tl_chan_try_send(F.box, tl_i64(5)), TL_OK);
    rejected_by(A);
    pump_for(100);
    assert_int_equal(tl_chan_count(F.box), 1);
    assert_int_equal(stats(A).remote_ops, 0);
    /* the next link: B's genuine receive gets the 5 */
    PUMP_UNTIL(linked());
    remote_op(0, TL_OP_RECV, 0);
    PUMP_UNTIL(OPS[0].done);
    assert_int_equal(OPS[0].err, TL_OK);
    assert_int_equal(OPS[0].got, 5);
    genuine_link_works(1, 6);

    /* the control: in clear on an unsealed link, the frame takes a value */
    assert_int_equal(tl_chan_try_send(F.box, tl_i64(5)), TL_OK);
    assert_int_equal(tl__node_feed(F.n[A], F.r.inject[0].p, F.r.inject[0].len, 1), TL_OK);
    assert_int_equal(tl_chan_count(F.box), 0);
}

/* B's genuine OP replayed right after it: the replay fails, the value
 * arrives at most once. */
static void test_replay_frame(void **state)
{
    (void)state;
    int plan[] = {REPLAY};
    start(plan, 1);
    PUMP_UNTIL(linked());
    remote_op(0, TL_OP_SEND, 9);
    rejected_by(A);
    PUMP_UNTIL(OPS[0].done);
    pump_for(100);
    assert_true(tl_chan_count(F.box) <= 1);
    int64_t got[8];
    size_t k = drain_box(got);
    if (k == 1)
        assert_int_equal(got[0], 9);
    genuine_link_works(1, 10);
}

/* B's first two frames (two sends) swapped on the way: the first to
 * arrive is out of order, the link drops, neither value arrives. */
static void test_reorder_frames(void **state)
{
    (void)state;
    int plan[] = {SWAP};
    start(plan, 1);
    PUMP_UNTIL(linked());
    remote_op(0, TL_OP_SEND, 1);
    remote_op(1, TL_OP_SEND, 2);
    rejected_by(A);
    PUMP_UNTIL(OPS[0].done && OPS[1].done);
    assert_int_equal(OPS[0].err, TL_ELINK);
    assert_int_equal(OPS[1].err, TL_ELINK);
    assert_int_equal(tl_chan_count(F.box), 0);
    genuine_link_works(2, 3);
}

/* A tasklet injected after the handshake (a real snapshot of a registered
 * function): not imported, never run.  Fed in clear on an unsealed link,
 * the same frame runs it (the control). */
static void test_inject_tasklet(void **state)
{
    (void)state;
    int plan[] = {INJECT_TO_A};
    tasklet_frame(&F.r.inject[0], 666, 0);
    start(plan, 1);
    rejected_by(A);
    pump_for(100);
    assert_int_equal(stats(A).moved_in, 0);
    assert_int_equal(ARRIVED, 0);
    assert_int_equal(tl_chan_count(F.box), 0);
    genuine_link_works(0, 7);

    /* the control: the frame is a tasklet A would run */
    assert_int_equal(tl__node_feed(F.n[A], F.r.inject[0].p, F.r.inject[0].len, 1), TL_OK);
    assert_int_equal(stats(A).moved_in, 1);
    assert_int_equal(ARRIVED, 1);
    int64_t got[8];
    assert_int_equal(drain_box(got), 1);
    assert_int_equal(got[0], 666);
}

/* B's real transfer, then a copy with its transfer id altered: one
 * import, the copy drops the link, the transfer completes on the next
 * link (acknowledged as a duplicate), the mover arrived once. */
static void test_resend_transfer(void **state)
{
    (void)state;
    int plan[] = {RESEND};
    start(plan, 1);
    PUMP_UNTIL(linked());
    mover_t args = {42, NULL};
    assert_int_equal(tl_spawn(F.rt[B], &mover_fn, &args, sizeof args, NULL), TL_OK);
    rejected_by(A);
    PUMP_UNTIL(stats(B).moved_out == 1 && stats(B).pending == 0);
    pump_for(100);
    assert_int_equal(stats(A).moved_in, 1);
    assert_int_equal(ARRIVED, 1);
    int64_t got[8];
    assert_int_equal(drain_box(got), 1);
    assert_int_equal(got[0], 42);
    genuine_link_works(0, 7);
}

/* Crafted frames: the array16 snapshot to A, garbage the size of a sealed
 * frame to B: each drops its link, nothing imported, both keep serving. */
static void test_crafted_frames(void **state)
{
    (void)state;
    int plan[] = {INJECT_TO_A, INJECT_TO_B};
    tasklet_frame(&F.r.inject[0], 666, 1);
    unsigned char junk[4 + 40] = {0, 0, 0, 40};
    for (size_t i = 4; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 37);
    bytes_add(&F.r.inject[1], junk, sizeof junk);
    start(plan, 2);
    rejected_by(A);
    rejected_by(B);
    pump_for(100);
    assert_int_equal(stats(A).moved_in, 0);
    assert_int_equal(ARRIVED, 0);
    assert_int_equal(tl_chan_count(F.box), 0);
    genuine_link_works(0, 7);
}

/* A node holding another secret gets no link to A (nor A to it), and A
 * goes on serving B. */
static void test_wrong_secret(void **state)
{
    (void)state;
    start(NULL, 0);
    node_new(C, "C", "not the cluster's secret, but long");
    assert_int_equal(tl_node_connect(F.n[C], tl_node_address(F.n[A])), TL_OK);
    PUMP_UNTIL(strstr(F.log[A], "authentication failed: node 'C'") &&
               strstr(F.log[C], "authentication failed"));
    assert_false(tl_node_connected(F.n[A], "C"));
    assert_false(tl_node_connected(F.n[C], "A"));
    genuine_link_works(0, 7);
}

/* A HELLO whose public key is a low-order point (all zero: the key
 * exchange would give a known shared key) is refused before any AUTH. */
static void test_bad_public_key(void **state)
{
    (void)state;
    unsigned char zero[32] = {0};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    bytes hello = {0};
    start(NULL, 0);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_uint8(&pk, 1);
    pack_str(&pk, "libtasklet-node");
    msgpack_pack_uint8(&pk, TL_PROTO_VERSION);
    pack_str(&pk, "Z");
    msgpack_pack_bin(&pk, sizeof zero);
    msgpack_pack_bin_body(&pk, zero, sizeof zero);
    msgpack_pack_uint8(&pk, 1); /* the cipher offer */
    frame_of(&hello, &sb);
    msgpack_sbuffer_destroy(&sb);
    int fd = dial_port(atoi(strrchr(tl_node_address(F.n[A]), ':') + 1));
    assert_true(fd >= 0);
    send_all(fd, hello.p, hello.len);
    PUMP_UNTIL(strstr(F.log[A], "an unusable public key"));
    close(fd);
    bytes_free(&hello);
    genuine_link_works(0, 7);
}

/* tl_node_secret_load: a file only its owner may read (a trailing newline
 * dropped), or $TL_NODE_SECRET; everything else refused with a message. */
static void test_secret_load(void **state)
{
    (void)state;
    char path[] = "/tmp/tl-relay-secret-XXXXXX", link[64];
    unsigned char buf[32];
    size_t len = 99;
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "0123456789abcdef\n", 17), 17);
    assert_int_equal(tl_node_secret_load(rt, path, buf, sizeof buf, &len), TL_OK);
    assert_int_equal(len, 16);
    assert_memory_equal(buf, "0123456789abcdef", 16);
    assert_int_equal(tl_node_secret_load(rt, path, buf, 15, &len), TL_EINVAL); /* too long */
    assert_int_equal(len, 0);
    assert_int_equal(tl_node_secret_load(rt, path, buf, 16, &len), TL_OK); /* then \n: fits */
    assert_int_equal(len, 16);
    assert_int_equal(fchmod(fd, 0640), 0);
    assert_int_equal(tl_node_secret_load(rt, path, buf, sizeof buf, &len), TL_EPERM);
    assert_non_null(strstr(tl_errmsg(rt), "chmod 600"));
    assert_int_equal(fchmod(fd, 0600), 0);
    snprintf(link, sizeof link, "%s.link", path);
    assert_int_equal(symlink(path, link), 0);
    assert_int_not_equal(tl_node_secret_load(rt, link, buf, sizeof buf, &len), TL_OK);
    unlink(link);
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(pwrite(fd, "short", 5, 0), 5);
    assert_int_equal(tl_node_secret_load(rt, path, buf, sizeof buf, &len), TL_EINVAL);
    assert_non_null(strstr(tl_errmsg(rt), "5 bytes"));
    close(fd);
    unlink(path);
    assert_int_equal(tl_node_secret_load(rt, path, buf, sizeof buf, &len), TL_ENOENT);

    unsetenv(TL_NODE_SECRET_ENV);
    assert_int_equal(tl_node_secret_load(NULL, NULL, buf, sizeof buf, &len), TL_ENOENT);
    setenv(TL_NODE_SECRET_ENV, SECRET, 1);
    assert_int_equal(tl_node_secret_load(rt, NULL, buf, sizeof buf, &len), TL_EINVAL);
    unsigned char big[64];
    assert_int_equal(tl_node_secret_load(rt, NULL, big, sizeof big, &len), TL_OK);
    assert_int_equal(len, strlen(SECRET));
    assert_memory_equal(big, SECRET, len);
    unsetenv(TL_NODE_SECRET_ENV);
    assert_int_equal(tl_node_secret_load(rt, NULL, NULL, 1, &len), TL_EMISUSE);
    tl_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_genuine_and_replayed_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rewrite_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inject_receive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reorder_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inject_tasklet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resend_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crafted_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_public_key, setup, teardown),
        cmocka_unit_test(test_secret_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
