/*
 * tasklet_node.h -- moving tasklets between runtimes, processes and
 * machines (libtasklet's migrate/ module).
 *
 * A node wraps one runtime and gives it a name (its node id), links to
 * other nodes and an event loop.  Over a link:
 *   - a suspended tasklet moves (TL_MIGRATE from inside, tl_node_migrate
 *     from outside) with its frames and locals, exactly once: the source
 *     keeps it until the destination acknowledges it (after checkpointing
 *     it, when the destination has a store), transfers carry an id so a
 *     retry is idempotent, and with stores on both sides a crash of either
 *     at any instant leaves the tasklet in exactly one place;
 *   - the channels it held stay home and become remote channels at the
 *     destination: a send there blocks until a receiver at home takes the
 *     value, a receive until a sender at home gives one.
 * Links are TCP or Unix sockets (docs/PROTOCOL.md): a handshake with
 * magic, protocol version and node ids, then length-prefixed msgpack
 * frames.  Peers prove they hold the cluster's shared secret (HMAC-SHA-
 * 512-256, libsodium's crypto_auth, over fresh ephemeral X25519 keys) and
 * derive fresh session keys from the key exchange, bound to the secret:
 * every frame after the handshake is encrypted and authenticated
 * (AES-256-GCM where both CPUs have AES-NI, else ChaCha20-Poly1305, with
 * a per-direction record counter), so frames cannot
 * be read, altered, forged, replayed or reordered on the way, and a
 * recorded session stays unreadable if the secret leaks later.  Only functions the receiving program registered can run:
 * frames carry names and data, never code or pointers.
 *
 * One thread drives a node (tl_node_poll / tl_node_run) and its runtime.
 * Several nodes may live in one process, one per thread, linked with
 * tl_node_pair.
 *
 * Every function checks its node handle: one that is not a node, or was
 * freed (while its memory is not reused), gives TL_EMISUSE from those that
 * return a code; tl_node_runtime gives NULL, the string getters "",
 * tl_node_connected 0, and tl_node_stats_get, tl_node_stop and
 * tl_node_free do nothing.
 */
#ifndef TASKLET_NODE_H
#define TASKLET_NODE_H

#include "tasklet.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TL_PROTO_VERSION 3

typedef struct tl_node tl_node;

/* Receives one line: why a peer was refused or dropped, links up and down. */
typedef void (*tl_log_fn)(void *ud, const char *msg);

typedef struct tl_node_config {
    /* This node's id, 1 to 63 bytes of [A-Za-z0-9._-]; it becomes the
     * runtime's node id (tl_set_node_id).  Required. */
    const char *node_id;
    /* The cluster's shared secret, at least 16 bytes.  Required for
     * tl_node_listen and tl_node_connect (not for tl_node_pair). */
    const void *secret;
    size_t secret_len;
    /* The store attached to the runtime, or NULL.  With one, transfers are
     * checkpointed before they are sent or acknowledged (exactly once
     * across crashes), and the node's outbox and inbox live in it. */
    tl_store *store;
    tl_log_fn log;   /* NULL: lines go to stderr */
    void *log_ud;
    uint32_t max_frame; /* largest frame accepted, bytes (default and
                         * maximum 64 MiB) */
    /* Limits on what peers can make this node hold (docs/PROTOCOL.md
     * section 8); 0 takes the default. */
    size_t max_queue;    /* bytes queued to send on one link; a peer that
                          * does not read its answers is disconnected when
                          * more are queued (default max_frame + 1 MiB, at
                          * least max_frame + 512 KiB) */
    size_t max_buffers;  /* bytes of all links' read and write buffers
                          * together; a link that would grow past it is
                          * dropped (default 512 MiB, at least
                          * 2 * (max_frame + max_queue)) */
    uint32_t max_links;  /* links in any state; more connections are
                          * closed at accept (default 256) */
    uint32_t max_handshakes;      /* connections not yet authenticated
                                   * (default 64) ... */
    uint32_t handshakes_per_addr; /* ... of which from one source address
                                   * (IPv4; the uid for unix sockets)
                                   * (default 8) */
    uint32_t handshake_ms;        /* to authenticate, from connecting
                                   * (default 5000) */
    uint32_t max_agents;   /* one peer's operations in progress here;
                            * more are answered TL_EBUSY (default 10000) */
    uint32_t max_requests; /* our operations in flight on one link; more
                            * fail with TL_EBUSY (default 100000) */
    uint32_t batch;     /* scheduler steps per tl_node_poll (default 1024) */
    /* How long (ns, the runtime's clock) the node keeps the id of a
     * transfer it took when the source never says FORGET (its FORGET was
     * lost in a restart): then the id leaves memory and the store's inbox.
     * A resend of that transfer after it would be imported again, so this
     * must exceed the longest time a source may stay away holding a
     * transfer that was already acknowledged (docs/PROTOCOL.md section 5).
     * 0: 7 days; negative: for good. */
    int64_t inbox_keep_ns;
} tl_node_config;

/* The environment variable tl_node_secret_load reads. */
#define TL_NODE_SECRET_ENV "TL_NODE_SECRET"

/* Reads the cluster secret into buf (cap bytes; *len gets its length),
 * for tl_node_config.secret: from the file at path, or, with path NULL,
 * from the environment variable TL_NODE_SECRET.  Never pass a secret on a
 * command line: every user of the machine can read argv (ps, /proc).  The
 * file must be a regular file (not a symbolic link) that group and others
 * can neither read nor write (chmod 600); one trailing newline is dropped.
 * rt, if not NULL, gets the message (tl_errmsg).  On an error buf is wiped.
 * TL_ENOENT (no such file, or TL_NODE_SECRET unset), TL_EPERM (the file's
 * mode lets group or others in), TL_EINVAL (not a regular file, or a secret
 * shorter than 16 bytes or longer than cap), TL_EIO. */
TL_API int tl_node_secret_load(tl_runtime *rt, const char *path, void *buf, size_t cap,
                               size_t *len);

/* Creates a node around rt and registers its internal function
 * ("tl.agent"): create it before tl_store_restore.  *out is owned by the
 * caller: free it with tl_node_free, before freeing rt (tl_runtime_free
 * refuses with TL_EBUSY while a node wraps the runtime).  TL_EINVAL (bad
 * id or secret), TL_EEXIST (rt has a node), TL_ENOMEM. */
TL_API int tl_node_new(tl_runtime *rt, const tl_node_config *cfg, tl_node **out);
/* Closes every link and detaches from the runtime (which stays usable).
 * Transfers not yet acknowledged stay in the store's outbox, if any. */
TL_API void tl_node_free(tl_node *n);
TL_API tl_runtime *tl_node_runtime(const tl_node *n);
TL_API const char *tl_node_name(const tl_node *n);
/* The message of the node's last error (the runtime's). */
TL_API const char *tl_node_errmsg(const tl_node *n);

/* Listens on addr: "tcp://HOST:PORT" (HOST an IPv4 address, default
 * 127.0.0.1; PORT 0 picks a free port) or "unix:PATH".  TL_EINVAL (bad
 * address, no secret), TL_EIO (cannot bind). */
TL_API int tl_node_listen(tl_node *n, const char *addr);
/* The address listened on, the port resolved ("" before tl_node_listen). */
TL_API const char *tl_node_address(const tl_node *n);
/* Dials addr and keeps a link there: redials 100 ms after it drops (backing
 * off up to 2 s while handshakes fail).
 * Returns at once; the handshake completes in tl_node_poll. */
TL_API int tl_node_connect(tl_node *n, const char *addr);
/* Links two nodes of one process (each then driven by its own thread):
 * the same protocol over a socket pair.  Call before either runs. */
TL_API int tl_node_pair(tl_node *a, tl_node *b);
/* 1 when an authenticated link to node peer is up. */
TL_API int tl_node_connected(const tl_node *n, const char *peer);
/* Polls until a link to peer is up: TL_OK, or TL_ELINK after timeout_ms. */
TL_API int tl_node_wait_peer(tl_node *n, const char *peer, int timeout_ms);

/* Moves suspended tasklet t (runnable, or blocked in a send, receive or
 * sleep) to node peer, which needs a link up.  t's handle reads TL_KILLED
 * with TL_EMOVED at once; the transfer completes in tl_node_poll.  A
 * tasklet blocked on a remote channel moves once the channel's home has
 * answered the cancellation of its request (if the operation completed
 * meanwhile, it moves runnable with the result; if the link to the home
 * drops, it stays with TL_ELINK delivered).  If the peer refuses it (an
 * unknown function, say), the tasklet comes back under a new id with that
 * error thrown at its suspension point.  TL_ELINK (no link to peer),
 * TL_ENOTSUP (waits in a select or join, or holds a tasklet reference),
 * TL_ESTATE (running or ended), TL_EBUSY (already moving). */
TL_API int tl_node_migrate(tl_node *n, tl_tasklet *t, const char *peer);

/* The channel at "node/name": the local channel of that name when node is
 * this node (exported under that name, else named so), else a remote
 * reference to it (resolved by name at the home on each operation, which
 * must have exported it: see tl_node_export).  A new reference: release
 * it.  TL_EINVAL, TL_ENOENT. */
TL_API int tl_node_chan(tl_node *n, const char *path, tl_chan **out);

/* Access control.  A peer can reach (operate on, or send tasklets that
 * refer to) only the local channels the program exported, and those named
 * in tasklets this node moved to that peer (granted to it at departure,
 * for the life of this node: not after a restart, and not to a third node
 * the tasklet moves on to).  Any other channel id or name is answered
 * TL_ENOENT "no channel NODE/NAME", exactly as one that does not exist.
 *
 * tl_node_export makes local channel ch reachable by every peer as
 * "THIS/name" (tl_node_chan) and by its id; the node holds a reference
 * until tl_node_unexport or tl_node_free.  Exports are not saved: export
 * again after a restart.  Exporting the same channel under the same name
 * again is TL_OK.  TL_EINVAL (a name not of 1 to 255 bytes, a remote
 * channel or one of another runtime), TL_EEXIST (name exported for
 * another channel), TL_ENOMEM, TL_EMISUSE.  tl_node_unexport: TL_ENOENT
 * if name is not exported; operations already started keep going. */
TL_API int tl_node_export(tl_node *n, tl_chan *ch, const char *name);
TL_API int tl_node_unexport(tl_node *n, const char *name);

/* One round: up to cfg.batch scheduler steps, the checkpoint a transfer
 * needs, then I/O, waiting at most timeout_ms (-1: until something
 * happens) when nothing is runnable.  Within a millisecond of receiving a
 * frame, the wait first polls without sleeping for up to 50 us (an answer
 * usually comes that soon, and waking up costs more).  Returns TL_OK or
 * what tl_run_steps or a checkpoint returned. */
TL_API int tl_node_poll(tl_node *n, int timeout_ms);
/* Polls until tl_node_stop (TL_OK) or an error. */
TL_API int tl_node_run(tl_node *n);
/* Makes tl_node_run return after the current round; callable from a
 * tasklet, a callback or another thread. */
TL_API void tl_node_stop(tl_node *n);

typedef struct tl_node_stats {
    uint64_t moved_out;   /* transfers acknowledged by the destination */
    uint64_t moved_in;    /* tasklets imported */
    uint64_t refused;     /* transfers the destination refused */
    uint64_t duplicates;  /* transfers received again, acknowledged only */
    uint64_t pending;     /* transfers sent, not yet acknowledged */
    uint64_t remote_ops;  /* remote channel operations answered */
    uint64_t links_up, links_dropped;
    uint64_t frames_rejected; /* frames that failed authentication (each
                               * dropped its link, nothing of it applied) */
} tl_node_stats;
TL_API void tl_node_stats_get(const tl_node *n, tl_node_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TASKLET_NODE_H */
