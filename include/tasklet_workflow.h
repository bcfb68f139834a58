/*
 * tasklet_workflow.h -- durable workflows on libtasklet (libtasklet-workflow).
 *
 * A workflow is a tasklet with a stable, user-chosen id ("order-17"), run
 * by a workflow engine (tl_wf) that owns a runtime's store.  Its status,
 * result or error and times are kept in the store's `wf` table, also
 * after it finished, so any process that can open the store can query or
 * await it (tl_wf_get).  Inside a workflow:
 *
 *   - TL_WF_STEP runs an effect (a plain C function that may block) on a
 *     worker thread; its result is recorded in the store before the
 *     workflow sees it, and a recorded step never runs again.  An effect
 *     that was running when the process died runs again with the same
 *     idempotency key (tl_wf_ctx_key: "<workflow id>#<step number>").
 *     A step with TL_WF_TX runs inside the checkpoint transaction that
 *     records its result (it may write the store's own database, SQLite or
 *     PostgreSQL);
 *     one with TL_WF_INLINE (short, never blocking) runs on the engine's
 *     thread, without a hand-off to a worker.
 *   - TL_WF_RECV waits for a message posted from outside (tl_wf_post, or
 *     `tasklet send`), taken in exactly once; tl_wf_chan opens a named
 *     channel others post to (tl_wf_post_chan, `tasklet send-chan`).
 *   - TL_WF_JOIN waits for a child workflow (tl_wf_start_child).
 *   - TL_WF_SELECT is TL_SELECT over channels with a durable deadline.
 *   - Durable deadlines on each (TL_WF_STEP_TIMEOUT for a step):
 *     TL_ETIMEDOUT is delivered, catchable.
 *   - Cancel (tl_wf_cancel, tl_wf_cancel_at, `tasklet cancel`) delivers
 *     TL_ECANCELED at the current suspension point; it cascades to
 *     children.  TL_SLEEP is durable already.
 *
 * A workflow function is an ordinary tasklet function (tl_func) whose
 * locals struct begins with `tl_value arg` (its argument, schema field
 * "arg"); what it returns (TL_RETURN) is the workflow's result, an error
 * it fails with (TL_FAIL, or one it does not catch) its error.
 *
 * Threading: the engine, its runtime and store are driven by one thread;
 * effects run on the engine's worker threads and must not touch the
 * engine's runtime: they build their results with tl_wf_ctx_runtime.
 * The tl_wf_post / tl_wf_post_chan / tl_wf_cancel_at / tl_wf_get functions
 * only need the store's path (or postgresql:// URL) and may be called from
 * any process or thread.
 */
#ifndef TASKLET_WORKFLOW_H
#define TASKLET_WORKFLOW_H

#include "tasklet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest workflow id (bytes, without the NUL) and step / topic name. */
#define TL_WF_ID_MAX 63
#define TL_WF_NAME_MAX 63

typedef struct tl_wf tl_wf;
typedef struct tl_wf_ctx tl_wf_ctx;

typedef enum tl_wf_status {
    TL_WF_PENDING = 1, /* started, has not run yet      */
    TL_WF_RUNNING,     /* runnable or running            */
    TL_WF_WAITING,     /* in a step, receive, join, sleep */
    TL_WF_DONE,        /* returned its result            */
    TL_WF_FAILED,      /* ended with an error            */
    TL_WF_CANCELLED,   /* cancelled (after compensating)  */
    TL_WF_MOVED        /* moved to another node's store (tl_wf_move):
                          final here; tl_wf_info.moved_to names it */
} tl_wf_status;

/* "pending", "running", ... (or "?" for another value). */
TL_API const char *tl_wf_status_name(int status);

typedef struct tl_wf_config {
    unsigned workers;     /* worker threads for effects (0: 4)            */
    int64_t retention_ms; /* finished workflows kept this long (0: forever) */
    uint64_t batch_steps; /* scheduler steps between commits at most (0: 4096) */
} tl_wf_config;

/* ---- steps ---- */

/* An effect: runs on a worker thread (or, TL_WF_TX, on the engine's thread
 * inside the checkpoint transaction; TL_WF_INLINE, on the engine's thread
 * before the commit).  arg is borrowed; it sets *result
 * (a value built with tl_wf_ctx_runtime, owned by the library from then
 * on) and returns TL_OK, or returns an error code (< 0; detail with
 * tl_wf_ctx_fail), which makes the attempt fail. */
typedef int (*tl_wf_effect)(tl_wf_ctx *cx, tl_value arg, tl_value *result);

/* TL_WF_INLINE: a short effect that never blocks (a computation, a
 * lookup in memory).  It runs on the engine's thread at the end of the
 * scheduler round that reached it, not on a worker, so a step costs no
 * thread hand-off; its result is recorded in the round's commit like any
 * other.  An inline effect that takes long delays every workflow of the
 * engine, and it cannot be interrupted (its timeout_ms is not enforced). */
enum {
    TL_WF_TX = 1,    /* transactional: runs inside the commit (see above) */
    TL_WF_INLINE = 2 /* runs on the engine's thread, no hand-off (see above) */
};

typedef struct tl_wf_step {
    const char *name;       /* stable name, 1 to TL_WF_NAME_MAX bytes   */
    tl_wf_effect fn;
    int flags;              /* TL_WF_TX, TL_WF_INLINE                   */
    uint32_t max_attempts;  /* 0: 1 (no retry)                          */
    uint32_t backoff_ms;    /* first retry delay; doubles each time (0: 100) */
    uint32_t backoff_max_ms;/* ceiling of the delay (0: 60000)          */
    uint32_t timeout_ms;    /* per attempt (0: none; not for TL_WF_TX)  */
} tl_wf_step;

/* The idempotency key of the step being run: "<id>#<step number>", the
 * same in every attempt and after any crash.  Borrowed from cx. */
TL_API const char *tl_wf_ctx_key(const tl_wf_ctx *cx);
TL_API const char *tl_wf_ctx_id(const tl_wf_ctx *cx);
TL_API int64_t tl_wf_ctx_step(const tl_wf_ctx *cx);
TL_API uint32_t tl_wf_ctx_attempt(const tl_wf_ctx *cx); /* 1, 2, ... */
/* Non-zero once the attempt is abandoned (its workflow was cancelled or
 * the attempt timed out): the effect may stop early; its result is
 * discarded. */
TL_API int tl_wf_ctx_canceled(const tl_wf_ctx *cx);
/* The runtime to build the result in (the worker's own). */
TL_API tl_runtime *tl_wf_ctx_runtime(tl_wf_ctx *cx);
/* TL_WF_TX steps: the store's connection, inside the transaction that
 * records the step -- a sqlite3 * on a SQLite store, a PGconn * (libpq) on
 * a PostgreSQL one; NULL otherwise. */
TL_API void *tl_wf_ctx_db(tl_wf_ctx *cx);
/* Sets the message of the failure the effect returns; returns code. */
TL_API int tl_wf_ctx_fail(tl_wf_ctx *cx, int code, const char *msg);

/* ---- the engine ---- */

/* Creates the engine of rt and st: attaches st to rt (tl_store_attach),
 * joins the store's checkpoint transactions, registers the engine's own
 * tasklet functions and starts the worker threads.  Register the workflow
 * functions and steps next, then call tl_wf_restore.  *out is owned by
 * the caller (tl_wf_free).  TL_EINVAL, TL_ENOMEM, the errors of
 * tl_store_attach. */
TL_API int tl_wf_new(tl_runtime *rt, tl_store *st, const tl_wf_config *cfg, tl_wf **out);
/* Tells running effects to stop, waits for the worker threads, frees the
 * engine.  The store and runtime stay the caller's.  NULL is a no-op. */
TL_API void tl_wf_free(tl_wf *wf);

/* Registers a workflow function (tl_register plus a check that its locals
 * begin with a tl_value field "arg").  TL_ESCHEMA, tl_register's errors. */
TL_API int tl_wf_register(tl_wf *wf, const tl_func *fn);
/* Registers a step by name (the descriptor stays the caller's, static).
 * TL_EEXIST (another step of that name), TL_EINVAL. */
TL_API int tl_wf_register_step(tl_wf *wf, const tl_wf_step *step);

/* Loads the latest checkpoint and the workflow rows: waiting workflows
 * wait again, steps that were running run again (same key), recorded
 * results are handed over, posted messages are taken in.  TL_OK also on
 * a new store.  TL_ENOFUNC names a step or function not registered. */
TL_API int tl_wf_restore(tl_wf *wf);

/* Starts workflow id running fn(arg) (arg is copied).  Idempotent: if
 * id exists (running or finished, here or in the store), nothing starts
 * and *created (if not NULL) is 0.  TL_EINVAL (id empty, too long or with
 * a NUL or control byte; fn not a registered workflow function). */
TL_API int tl_wf_start(tl_wf *wf, const char *id, const tl_func *fn, tl_value arg,
                       int *created);

/* Drives the engine: runs workflows, commits (group commit: every change
 * since the last commit in one transaction), takes in posted messages
 * and waits for effects, messages and deadlines without busy polling,
 * until no workflow is live (TL_OK), or timeout_ms passed (TL_ETIMEDOUT;
 * < 0 waits forever), or an error (a failed commit: TL_EIO, TL_ESTORE).
 * timeout_ms > 0 is kept also while workflows stay runnable (a chain of
 * TL_WF_INLINE steps); 0 runs until nothing is runnable, then returns. */
TL_API int tl_wf_run(tl_wf *wf, int64_t timeout_ms);

/* Commits now (normally tl_wf_run does). */
TL_API int tl_wf_commit(tl_wf *wf);

/* Cancels workflow id and its children (see the head comment).
 * TL_ENOENT (unknown), TL_EDONE (already finished). */
TL_API int tl_wf_cancel(tl_wf *wf, const char *id);

/* Opens the engine's named channel `name` (1 to TL_WF_NAME_MAX bytes, no
 * control characters), which any process may post to with only the
 * store's path (tl_wf_post_chan, `tasklet send --chan`): on first use it
 * is created (capacity cap: 0 unbuffered, N buffered), named, pinned (so
 * checkpoints keep it while no tasklet refers to it) and recorded in the
 * store's table wf_chan; after tl_wf_restore the restored channel of that
 * name is found again (cap is then ignored).  Call it after tl_wf_restore.
 * Workflows receive from it like from any channel (TL_RECV, TL_SELECT,
 * TL_WF_SELECT), finding it with tl_chan_find_name or through a TL_T_CHAN
 * field.  Posts wait in the store until the channel is opened, then go in
 * posting order, each once a receiver or buffer room takes it.  *out is
 * borrowed (the runtime holds the channel).  TL_EINVAL, TL_ENOMEM. */
TL_API int tl_wf_chan(tl_wf *wf, const char *name, size_t cap, tl_chan **out);

/* Moves workflow id, with its tasklet, its recorded steps, its status
 * and its messages (posted and not yet received, and those received, for
 * deduplication), to node peer: the engine's runtime must have a node
 * (tl_node_new) configured with the engine's store, a link to peer up,
 * and peer a workflow engine on its own store with the workflow's
 * function (and the step it waits in) registered.  Returns at once; the
 * transfer is the node's (tl_node_poll), exactly once across a crash of
 * either side: the source's checkpoint that commits the hand-off also
 * marks the workflow TL_WF_MOVED here (tl_wf_info.moved_to names peer),
 * and the destination's checkpoint that commits the import writes its
 * rows there.  From then on posts to id at this store are refused with
 * TL_EMOVED naming peer; post to, await and query peer's store instead.
 * There the workflow goes on: recorded steps are not run again, a step
 * whose attempt was in flight here runs again with the same idempotency
 * key (this attempt is abandoned: tl_wf_ctx_canceled, its result
 * discarded), deadlines keep their instants (wall clock).  If peer
 * refuses it (no workflow engine, a function or step not registered, an
 * id it already has), the workflow comes back here and goes on, with
 * tl_wf_info.move_error saying why.  Channels its locals hold stay here,
 * as for any moving tasklet (remote channels there).
 * Errors: TL_ENOENT (unknown id), TL_EDONE (finished), TL_EMOVED (moved
 * already), TL_EBUSY (moving already, or a result is being handed to it:
 * run the engine and try again; or called from inside a tasklet),
 * TL_ENOTSUP (no node with the store; it waits in a join or a
 * TL_WF_SELECT, on a channel other than its own, or has a live parent or
 * children here), TL_ESTATE (being cancelled), TL_ELINK (no link to
 * peer), TL_ERANGE (too large for a frame), TL_EINVAL. */
TL_API int tl_wf_move(tl_wf *wf, const char *id, const char *peer);

/* Workflows not finished (in this engine). */
TL_API size_t tl_wf_live(const tl_wf *wf);
TL_API const char *tl_wf_errmsg(const tl_wf *wf);
/* The engine's runtime and store (borrowed). */
TL_API tl_runtime *tl_wf_runtime(tl_wf *wf);

/* ---- inside a workflow ---- */

/* The id of the workflow running frame f (borrowed), or NULL. */
TL_API const char *tl_wf_self(tl_frame *f);
/* Starts child workflow id of the workflow running f (idempotent like
 * tl_wf_start): it is cancelled with its parent; await it with
 * TL_WF_JOIN.  Not a suspension point. */
TL_API int tl_wf_start_child(tl_frame *f, const char *id, const tl_func *fn, tl_value arg);

/* What the macros pass (internal). */
typedef struct tl_wf__args {
    tl_value arg;
    int32_t kind;
    int32_t pad_;
    int64_t timeout_ms;
    const void *what;
} tl_wf__args;
enum { TL_WF__STEP = 1, TL_WF__RECV = 2, TL_WF__JOIN = 3 };
TL_API extern const tl_func tl_wf__await;
/* Keeps what for the await frame's first run (its pointer is not part of
 * the frame's schema, so it would not survive the frame being written out
 * before it starts, as check mode does); returns what. */
TL_API const void *tl_wf__stash(tl_frame *f, const void *what);

/* Runs step (const tl_wf_step *) with arg; dst gets its result.  A step
 * that still fails after its attempts delivers its error (catchable). */
#define TL_WF_STEP(f, step, arg, dst)                                        \
    TL_CALL(f, &tl_wf__await, dst,                                           \
            &(tl_wf__args){(arg), TL_WF__STEP, 0, -1, tl_wf__stash((f), (step))})
/* TL_WF_STEP with a durable deadline over the whole step (every attempt
 * and backoff): timeout_ms after it began (wall clock, kept in the store,
 * so a restart does not move it) the attempt in flight is abandoned (told
 * through tl_wf_ctx_canceled, its result discarded) and TL_ETIMEDOUT is
 * delivered, catchable.  A result recorded before the deadline wins. */
#define TL_WF_STEP_TIMEOUT(f, step, arg, timeout_ms, dst)                    \
    TL_CALL(f, &tl_wf__await, dst,                                           \
            &(tl_wf__args){(arg), TL_WF__STEP, 0, (timeout_ms), tl_wf__stash((f), (step))})
/* Receives the oldest message posted to this workflow under topic (a
 * string); waits for one, at most timeout_ms (< 0: forever; the deadline
 * is durable), then TL_ETIMEDOUT. */
#define TL_WF_RECV(f, topic, timeout_ms, dst)                                \
    TL_CALL(f, &tl_wf__await, dst,                                           \
            &(tl_wf__args){tl_nil(), TL_WF__RECV, 0, (timeout_ms), tl_wf__stash((f), (topic))})
/* Waits for workflow id (a child) to finish; dst gets its result, or its
 * error is delivered (TL_ECANCELED if it was cancelled). */
#define TL_WF_JOIN(f, id, timeout_ms, dst)                                   \
    TL_CALL(f, &tl_wf__await, dst,                                           \
            &(tl_wf__args){tl_nil(), TL_WF__JOIN, 0, (timeout_ms), tl_wf__stash((f), (id))})

/* TL_SELECT (tasklet.h) with a durable deadline: waits until one of the
 * n channel cases can complete, at most timeout_ms (< 0: forever).  The
 * deadline is on the wall clock and kept in the workflow's row: a
 * workflow restored while it waits still times out at the same instant,
 * with TL_ETIMEDOUT delivered at the select, catchable.  cases is a
 * TL_T_CASES field of the locals, as for TL_SELECT; idx and dst as there. */
#define TL_WF_SELECT(f, cases, n, timeout_ms, idx, dst)                      \
    TL__AWAIT(f, tl_wf__select((f), (cases), (n), (timeout_ms)),             \
              ((idx) = tl__selected(f), tl_value_set(&(dst), tl__take(f)),   \
               tl_wf__select_end(f)),                                        \
              TL__K_SELECT, TL_WF_SELECT)
/* What TL_WF_SELECT calls (internal). */
TL_API tl_status tl_wf__select(tl_frame *f, tl_case *cases, int n, int64_t timeout_ms);
TL_API void tl_wf__select_end(tl_frame *f);

/* ---- from any process: only the store's path ---- */

/* What the store keeps about one workflow. */
typedef struct tl_wf_info {
    char id[TL_WF_ID_MAX + 1];
    char func[80];          /* "name@version" */
    char parent[TL_WF_ID_MAX + 1];
    int status;             /* tl_wf_status */
    char wait[96];          /* what it waits on ("step 2 charge", "recv shipped") */
    int64_t deadline;       /* of that wait (ns, 0 none) */
    int64_t steps;          /* steps recorded */
    int64_t created, updated, finished; /* ns since the epoch */
    int error;              /* TL_FAILED / TL_CANCELLED: the code */
    char errmsg[256];
    tl_value result;        /* TL_DONE (tl_wf_get with rt): owned by the caller */
    char moved_to[64];      /* TL_WF_MOVED: the node it moved to */
    char moved_from[64];    /* the node it last came from ("" if none) */
    char move_error[200];   /* why its last move was refused ("" if not) */
} tl_wf_info;

/* Posts a message to workflow id under topic, in the store at path: a
 * transaction of its own, no ownership needed (the owner may be running
 * or stopped; a running one is woken within milliseconds).  With a
 * non-NULL dedup_key, a second post with that key to id is refused with
 * TL_EEXIST.  rt (may be NULL) receives the error message.  TL_ENOENT
 * (no such workflow), TL_EDONE (it finished), TL_EMOVED (it moved to
 * another node: the message names it; post to that node's store), TL_EINVAL, TL_ERANGE (the
 * message is larger than the store's record limit), TL_EIO, TL_ESTORE. */
TL_API int tl_wf_post(tl_runtime *rt, const char *path, const char *id, const char *topic,
                      tl_value msg, const char *dedup_key);
/* Posts msg to the named channel `name` (tl_wf_chan) of the engine that
 * owns the store at path, as tl_wf_post does to a workflow: one
 * transaction of its own, owner running or stopped.  Its owner sends it on
 * the channel and marks it taken in one checkpoint transaction: exactly
 * once across crashes.  With a non-NULL dedup_key, a second post with
 * that key to name is refused with TL_EEXIST.  TL_ENOENT (no channel of
 * that name in the store), TL_EINVAL, TL_ERANGE, TL_EIO, TL_ESTORE. */
TL_API int tl_wf_post_chan(tl_runtime *rt, const char *path, const char *name, tl_value msg,
                           const char *dedup_key);
/* Asks for workflow id to be cancelled (the owner acts on it when it
 * runs).  TL_ENOENT, TL_EDONE (finished already). */
TL_API int tl_wf_cancel_at(tl_runtime *rt, const char *path, const char *id);
/* Reads workflow id into *out; with wait_ms != 0 waits until it finished
 * (at most wait_ms, < 0 forever: TL_ETIMEDOUT), woken by the store's
 * writes, not by polling.  out->result is decoded into rt (required).
 * TL_ENOENT. */
TL_API int tl_wf_get(tl_runtime *rt, const char *path, const char *id, int64_t wait_ms,
                     tl_wf_info *out);

#ifdef __cplusplus
}
#endif
#endif /* TASKLET_WORKFLOW_H */
