/*
 * frame.c -- frames on a link: the write buffer, frame encoding and the
 * frame decoder (docs/PROTOCOL.md).
 *
 * Every frame is one msgpack array [type, ...].  Before the handshake
 * ends it goes as a 4-byte big-endian length and the array.  Once the
 * link is sealed, it goes as one or more records (PROTOCOL.md 4.3): a
 * 4-byte header (the length, with TL__RECORD_MORE set on all records but
 * a frame's last), the piece of the array encrypted in place, its 16-byte
 * tag (session.c).  A frame of more than TL__RECORD_BYTES goes in
 * records of that size, each sealed and sent as soon as it is full, so
 * that the peer opens one while the next is packed and sealed.
 * Writing: tl__frame_begin reserves the length (the first record's
 * header), the caller packs one array into l->wbuf through wbuf_write
 * (which closes full records), tl__frame_end closes the last record (or,
 * unsealed, fills the length in); tl__flush sends what the socket takes
 * and keeps the rest for POLLOUT.  Reading: tl__on_readable fills l->rbuf (within READ_BUDGET per
 * round), tl__on_bytes cuts it into records, take_frame opens a sealed
 * one in place (a frame of several records into l->fbuf, take_part),
 * on_frame checks a whole frame (tl__msgpack_check bounds its depth and
 * sizes before msgpack-c sees it) and dispatches it by type to the
 * handler of link.c, transfer.c or remote.c.
 *
 * Invariants: before authentication a frame is at most MAX_HANDSHAKE_FRAME
 * bytes and only HELLO, AUTH and ERROR are taken; after it, a record is
 * at most n->max_frame plus the tag and a frame at most n->max_frame, and
 * a record that does not open drops the link before any of its frame is
 * read.  Records are sealed in the order they are written and opened in
 * the order they arrive: the counters of session.c make any other order
 * fail, and the MORE bit is inside what the tag covers.  A handler may drop the link (l->state == L_DEAD): the
 * reader then stops at once.  Out of memory while packing leaves a frame
 * short or missing: the peer finds it malformed and drops the link, which
 * the protocol survives like any lost link.
 */
#include "node_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- frames out ---- */

/* Appends n bytes to l->wbuf as they are. */
static int wbuf_append(conn *l, const char *p, size_t n)
{
    if (l->state == L_DEAD)
        return -1;
    if (l->wlen + n > l->wcap) {
        size_t ncap = l->wcap ? l->wcap : 4096;
        while (ncap < l->wlen + n)
            ncap *= 2;
        if (!tl__buf_resize(l, &l->wbuf, &l->wcap, ncap)) /* within max_buffers */
            return -1;
    }
    memcpy(l->wbuf + l->wlen, p, n);
    l->wlen += n;
    return 0;
}

static void put_be32(unsigned char *p, uint32_t n)
{
    p[0] = (unsigned char)(n >> 24);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
}

/* Sends what the socket takes of l->wbuf up to end, without waiting:
 * the peer opens a record while the next is sealed.  Errors are left to
 * tl__flush. */
static void send_upto(conn *l, size_t end)
{
    while (l->woff < end) {
        ssize_t k = send(l->fd, l->wbuf + l->woff, end - l->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k <= 0)
            return;
        l->woff += (size_t)k;
    }
}

/* Closes the record open at l->rec_at: its tag appended, its header
 * filled in, sealed; with more, the frame goes on in a new record and
 * this one is sent at once.  -1 if l was dropped. */
static int close_record(conn *l, int more)
{
    static const char tag[TL__SEAL_BYTES] = {0};
    size_t len = l->wlen - l->rec_at - 4;
    if (wbuf_append(l, tag, sizeof tag) != 0) {
        tl__link_drop(l, "out of memory for a frame");
        return -1;
    }
    put_be32(l->wbuf + l->rec_at, (uint32_t)(len + TL__SEAL_BYTES) | (more ? TL__RECORD_MORE : 0));
    if (tl__seal(l, l->wbuf + l->rec_at, len) != 0) {
        tl__link_drop(l, "the session's record counter is spent");
        return -1;
    }
    if (!more)
        return 0;
    send_upto(l, l->wlen);
    static const char zero[4] = {0};
    l->rec_at = l->wlen;
    return wbuf_append(l, zero, sizeof zero);
}

/* The packer's writer.  Inside a frame on a sealed link the bytes go into
 * records of at most TL__RECORD_BYTES, each sealed and sent as soon as the
 * next byte needs a new one (so a long frame is on its way, and opened by
 * the peer, while the rest is still being packed); elsewhere they are
 * appended as they are. */
static int wbuf_write(void *data, const char *p, size_t n)
{
    conn *l = data;
    if (!l->sealed || !l->in_frame)
        return wbuf_append(l, p, n);
    while (n) {
        size_t room = TL__RECORD_BYTES - (l->wlen - l->rec_at - 4);
        if (room == 0) {
            if (close_record(l, 1) != 0)
                return -1;
            continue;
        }
        size_t k = n < room ? n : room;
        if (wbuf_append(l, p, k) != 0)
            return -1;
        p += k;
        n -= k;
    }
    return 0;
}

/* Starts a frame: a length placeholder (a sealed link: the first record's
 * header), then the caller packs one array. */
size_t tl__frame_begin(conn *l, msgpack_packer *pk)
{
    static const char zero[4] = {0};
    size_t at = l->wlen;
    wbuf_append(l, zero, 4);
    l->rec_at = at;
    l->in_frame = 1;
    msgpack_packer_init(pk, l, wbuf_write);
    return at;
}

/* Ends the frame begun at at: on a sealed link its last record closed
 * (sealed in place, the tag after it), else its length filled in. */
void tl__frame_end(conn *l, size_t at)
{
    l->in_frame = 0;
    if (l->state == L_DEAD || l->wlen < l->rec_at + 4 || l->rec_at < at)
        return; /* out of memory: the link is dropped */
    if (l->sealed)
        close_record(l, 0);
    else
        put_be32(l->wbuf + at, (uint32_t)(l->wlen - at - 4));
}

void tl__pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}


void tl__flush(conn *l)
{
    while (l->state != L_DEAD && l->woff < l->wlen) {
        ssize_t k = send(l->fd, l->wbuf + l->woff, l->wlen - l->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            l->woff += (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            tl__limit_queue(l); /* a peer that does not read is dropped */
            return;
        } else {
            tl__link_drop(l, "send failed: %s", strerror(errno));
            return;
        }
    }
    if (l->wlen > TL__BIG_BUF)
        l->big_at = tl__mono_ns(); /* a big frame went: its buffer is kept a while */
    l->woff = l->wlen = 0;
}

void tl__wire_error(conn *l, int code, const char *msg)
{
    msgpack_packer pk;
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint8(&pk, M_ERROR);
    msgpack_pack_int(&pk, code);
    tl__pack_str(&pk, msg);
    tl__frame_end(l, at);
    tl__flush(l);
}

/* [type, req]: CANCEL and CANCELLED. */
void tl__wire_req(conn *l, int type, uint64_t req)
{
    msgpack_packer pk;
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, (uint8_t)type);
    msgpack_pack_uint64(&pk, req);
    tl__frame_end(l, at);
    tl__flush(l);
}

/* DONE [req, code, msg|nil, value|nil]. */
void tl__wire_done(conn *l, uint64_t req, int code, const char *msg, const tl_value *v)
{
    msgpack_packer pk;
    size_t at = tl__frame_begin(l, &pk);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, M_DONE);
    msgpack_pack_uint64(&pk, req);
    msgpack_pack_int(&pk, code);
    if (msg)
        tl__pack_str(&pk, msg);
    else
        msgpack_pack_nil(&pk);
    if (v)
        tl__pack_value(&pk, *v);
    else
        msgpack_pack_nil(&pk);
    tl__frame_end(l, at);
    tl__flush(l);
}

/* ---- frames in ---- */

/* Decodes p[0..len) into zone z; 1 if it is exactly one array that
 * starts with a type. */
static int decode(msgpack_zone *z, const unsigned char *p, size_t len, msgpack_object *o)
{
    size_t off = 0;
    return msgpack_unpack((const char *)p, len, &off, z, o) == MSGPACK_UNPACK_SUCCESS &&
           o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size >= 1 && mp_is_u(mp_item(o, 0));
}

static void dispatch(conn *l, const msgpack_object *o)
{
    uint64_t type = mp_item(o, 0)->via.u64;
    if (type == M_ERROR) {
        char msg[256] = "?";
        if (o->via.array.size >= 3)
            mp_str(mp_item(o, 2), msg, sizeof msg);
        tl__link_drop(l, "the peer says: %s", msg);
    } else if (l->state != L_UP && type == M_HELLO) {
        tl__on_hello(l, o);
    } else if (l->state != L_UP && type == M_AUTH) {
        tl__on_auth(l, o);
    } else if (l->state != L_UP) {
        tl__link_drop(l, "message %llu before authentication", (unsigned long long)type);
    } else {
        switch (type) {
        case M_XFER: tl__on_xfer(l, o); break;
        case M_ACK: tl__on_ack(l, o); break;
        case M_NACK: tl__on_nack(l, o); break;
        case M_FORGET: tl__on_forget(l, o); break;
        case M_OP: tl__on_op(l, o); break;
        case M_DONE: tl__on_done(l, o); break;
        case M_CANCEL: tl__on_cancel(l, o); break;
        case M_CANCELLED: tl__on_cancelled(l, o); break;
        default: tl__link_drop(l, "unknown message type %llu", (unsigned long long)type);
        }
    }
}

/* One frame from l: p[0..len) holds exactly one msgpack value.  It is
 * decoded into the node's zone, kept from frame to frame so that a small
 * frame costs no allocation (msgpack_zone_clear keeps only its first
 * chunk), or into a zone of its own if a handler is decoding already. */
static void on_frame(conn *l, const unsigned char *p, size_t len)
{
    tl_node *n = l->node;
    msgpack_zone own, *z = &n->zone;
    msgpack_object o;
    if (tl__msgpack_check(p, len, 24) != len) {
        tl__link_drop(l, "malformed frame (%zu bytes)", len);
        return;
    }
    if (n->zone_busy || !n->zone_ok) {
        if (!n->zone_busy && msgpack_zone_init(&n->zone, 4096))
            n->zone_ok = 1;
        else if (msgpack_zone_init(&own, 4096))
            z = &own;
        else {
            tl__link_drop(l, "out of memory for a frame");
            return;
        }
    }
    n->zone_busy += z == &n->zone;
    if (decode(z, p, len, &o))
        dispatch(l, &o);
    else
        tl__link_drop(l, "malformed frame (%zu bytes)", len);
    if (z == &n->zone) {
        n->zone_busy--;
        msgpack_zone_clear(z);
    } else {
        msgpack_zone_destroy(z);
    }
}

/* A frame's length prefix. */
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The largest record (or, unsealed, frame) l takes now: a sealed one
 * carries a tag. */
static uint32_t frame_limit(const conn *l)
{
    if (l->state != L_UP)
        return MAX_HANDSHAKE_FRAME;
    return l->node->max_frame + (l->sealed ? TL__SEAL_BYTES : 0);
}

static void auth_failed(conn *l, uint32_t len)
{
    l->node->stats.frames_rejected++;
    tl__link_drop(l, "a frame of %u bytes failed authentication (altered, forged, replayed or "
                  "out of order)", len);
}

/* A record of a frame of several: opened into l->fbuf; the frame is
 * acted on after its last record.  The frame's length is bounded by
 * max_frame, and fbuf grows with the records that came, never to more. */
static void take_part(conn *l, unsigned char *p, uint32_t len, int more)
{
    size_t plain = len - TL__SEAL_BYTES;
    if (l->flen + plain > l->node->max_frame) {
        tl__link_drop(l, "a frame of more than %zu bytes (the limit is %u)", l->flen + plain,
                      l->node->max_frame);
        return;
    }
    if (!tl__fbuf_room(l, l->flen + plain))
        return;
    if (tl__open(l, p, len, l->fbuf + l->flen) != 0) {
        auth_failed(l, len);
        return;
    }
    l->flen += plain;
    if (more)
        return;
    size_t n = l->flen;
    l->flen = 0;
    if (n > TL__BIG_BUF)
        l->big_at = tl__mono_ns();
    on_frame(l, l->fbuf, n);
}

/* The record at p, 4 + len bytes, whole in l->rbuf: opened if sealed (a
 * record that does not authenticate drops the link, unread), then acted
 * on, or kept for the rest of its frame. */
static void take_frame(conn *l, unsigned char *p, uint32_t len, int more)
{
    if (!l->sealed) {
        on_frame(l, p + 4, len);
        return;
    }
    if (len <= TL__SEAL_BYTES) {
        auth_failed(l, len);
        return;
    }
    if (more || l->flen) {
        take_part(l, p, len, more);
        return;
    }
    if (tl__open(l, p, len, p + 4) != 0) {
        auth_failed(l, len);
        return;
    }
    on_frame(l, p + 4, len - TL__SEAL_BYTES);
}

/* Splits l->rbuf into records (unsealed: frames). */
void tl__on_bytes(conn *l)
{
    tl_node *n = l->node;
    size_t off = 0;
    while (l->state != L_DEAD && l->rlen - off >= 4) {
        unsigned char *p = l->rbuf + off;
        n->last_io = tl__mono_ns();
        uint32_t head = be32(p), more = l->sealed ? head & TL__RECORD_MORE : 0;
        uint32_t len = head & ~more, limit = frame_limit(l);
        if (len == 0 || len > limit) {
            tl__link_drop(l, "a frame of %u bytes (length prefix %u; the limit is %u)", len,
                          head, limit);
            return;
        }
        if (l->rlen - off - 4 < len)
            break;
        take_frame(l, p, len, more != 0);
        off += 4 + (size_t)len;
    }
    if (l->state == L_DEAD || off == 0)
        return;
    memmove(l->rbuf, l->rbuf + off, l->rlen - off);
    l->rlen -= off;
}

/* Room in l->rbuf for what comes next (limits.c picks the size: never a
 * frame's announced length at once); 0 if l was dropped instead.  Before
 * authentication a frame is at most 1 KiB: a small buffer, so that
 * strangers cost little. */
static int make_room(conn *l)
{
    if (l->rcap - l->rlen >= 65536)
        return 1;
    size_t ncap = tl__rbuf_want(l, frame_limit(l));
    if (ncap <= l->rcap && l->rlen < l->rcap)
        return 1; /* the frame being read fits */
    if (l->state != L_UP && l->rcap >= ncap) {
        tl__link_drop(l, "too much data before authentication");
        return 0;
    }
    return tl__buf_resize(l, &l->rbuf, &l->rcap, ncap > l->rcap ? ncap : 2 * l->rcap);
}

/* Reads what l has, up to READ_BUDGET, and acts on each whole frame. */
void tl__on_readable(conn *l)
{
    size_t budget = READ_BUDGET;
    while (l->state != L_DEAD && budget) {
        if (!make_room(l))
            return;
        ssize_t k = recv(l->fd, l->rbuf + l->rlen, l->rcap - l->rlen, MSG_DONTWAIT);
        if (k > 0) {
            int drained = (size_t)k < l->rcap - l->rlen; /* a short read: nothing more now */
            l->rlen += (size_t)k;
            budget = (size_t)k < budget ? budget - (size_t)k : 0;
            tl__on_bytes(l);
            if (drained && l->state != L_DEAD)
                budget = 0; /* poll says when more comes; no recv for EAGAIN */
            if (l->state != L_DEAD)
                tl__buf_trim(l);
        } else if (k == 0) {
            tl__link_drop(l, "closed by the peer");
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            tl__link_drop(l, "receive failed: %s", strerror(errno));
        }
    }
}

/* Reads l's next bytes, waiting for them (block: in a blocking recv that
 * the socket's SO_RCVTIMEO bounds) or not, then reads on as
 * tl__on_readable does.  0 if nothing came (in time, or a signal came). */
int tl__read_next(conn *l, int block)
{
    if (!make_room(l))
        return 1;
    ssize_t k = recv(l->fd, l->rbuf + l->rlen, l->rcap - l->rlen, block ? 0 : MSG_DONTWAIT);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (k <= 0) {
        if (k == 0)
            tl__link_drop(l, "closed by the peer");
        else
            tl__link_drop(l, "receive failed: %s", strerror(errno));
        return 1;
    }
    int drained = (size_t)k < l->rcap - l->rlen;
    l->rlen += (size_t)k;
    tl__on_bytes(l);
    if (l->state != L_DEAD)
        tl__buf_trim(l);
    if (!drained && l->state != L_DEAD)
        tl__on_readable(l);
    return 1;
}
