/*
 * node_internal.h -- the node's entry points for tests and the fuzzer.
 */
#ifndef TL_NODE_INTERNAL_H
#define TL_NODE_INTERNAL_H

#include "tasklet_node.h"

#include <stddef.h>

/* Feeds bytes to n as if they came from one peer's link (authenticated
 * already when authed is set, and then unsealed: the frames are in clear,
 * as protocol 3 never takes them from a real peer, so that the fuzzer
 * reaches the decoders): frames are parsed and acted on, the runtime runs
 * what they started, then the link is dropped. */
__attribute__((visibility("hidden"))) int tl__node_feed(tl_node *n, const void *bytes,
                                                        size_t len, int authed);

/* The same, the link authenticated as node peer (NULL: not
 * authenticated): tests forge frames of one peer on another link. */
__attribute__((visibility("hidden"))) int tl__node_feed_as(tl_node *n, const void *bytes,
                                                           size_t len, const char *peer);
/* Tests, as a misbehaving peer: sends body (a msgpack array) as one frame
 * (sealed as usual) on the newest link up to peer; the bytes then queued
 * on it, or -1 without a link. */
__attribute__((visibility("hidden"))) long long tl__node_send_body(tl_node *n, const char *peer,
                                                                   const void *body, size_t len);
/* Writes bytes as they are (no frame, not sealed) on every link up to
 * peer; how many links took them. */
__attribute__((visibility("hidden"))) int tl__node_raw(tl_node *n, const char *peer,
                                                       const void *bytes, size_t len);
/* How many links to peer are up. */
__attribute__((visibility("hidden"))) int tl__node_links_up(const tl_node *n, const char *peer);
/* Tests: with on, n stops reading its links (a peer that never reads). */
__attribute__((visibility("hidden"))) void tl__node_deaf(tl_node *n, int on);
/* Tests: the ciphers n offers in its next HELLOs (1 ChaCha20-Poly1305,
 * 2 AES-256-GCM, as PROTOCOL.md 4.1 numbers them; those the CPU lacks are
 * never offered). */
__attribute__((visibility("hidden"))) void tl__node_ciphers(tl_node *n, unsigned mask);
/* The id of the oldest transfer in n's outbox, or NULL. */
__attribute__((visibility("hidden"))) const char *tl__node_first_xid(const tl_node *n);

/* The node's spin policy (node.c, wait_io): whether to spin before the
 * next sleep, and what the spin found (hit: an answer came within it). */
__attribute__((visibility("hidden"))) int tl__node_spin_pays(tl_node *n);
__attribute__((visibility("hidden"))) void tl__node_spin_note(tl_node *n, int hit);
/* Whether n's next round would wait for its one link alone (node.c, "the
 * lone link"), were it to sleep wait_ns (-1: no bound), a frame having
 * come io_ago_ns ago and the epoll set waited on poll_ago_ns ago. */
__attribute__((visibility("hidden"))) int tl__node_lone(tl_node *n, long long wait_ns,
                                                        long long io_ago_ns,
                                                        long long poll_ago_ns);
/* Cargo envelopes ([magic, snapshot, cargo], transfer.c): 1 and the
 * parts if p[0..n) is one (in any msgpack header width), else 0 and p, n
 * left as they are. */
__attribute__((visibility("hidden"))) int tl__cargo_split(const void **p, size_t *n,
                                                          const void **cargo, size_t *clen);

#endif
