/*
 * wf_internal.h -- what the workflow layer's files share (internal).
 *
 * The engine (engine.c) keeps one wf_rec per live workflow, found by id
 * in a hash table and from its tasklet through the tasklet's userdata.
 * What the store must know about a workflow is in its row (table wf,
 * written by the engine's participant in every checkpoint transaction
 * where it changed); what the workflow's code holds is in its tasklet's
 * frames (the checkpoint's chunks).  Both are written by one transaction,
 * so they always agree.  Effects run on the pool's threads (pool.c) and
 * see only msgpack bytes: no value crosses threads.
 */
#ifndef TL_WF_INTERNAL_H
#define TL_WF_INTERNAL_H

#include "../persist/persist.h"
#include "tasklet_workflow.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct wf_job wf_job;
typedef struct wf_rec wf_rec;
typedef struct wf_msg wf_msg;
typedef struct wf_db wf_db;

/* What a workflow waits on (wf_rec.wait; the row writes 4 for TL_SLEEP). */
enum { W_NONE = 0, W_STEP, W_RECV, W_JOIN, W_SLEEP, W_SELECT };
enum { WF_ST_GET, WF_ST_STEP, WF_ST_VERSION, WF_ST_INTAKE, WF_NST };

/* A posted message taken in from the store, not yet received. */
struct wf_msg {
    wf_msg *next;
    int64_t seq;                 /* its row's seq */
    char topic[TL_WF_NAME_MAX + 1];
    void *val;                   /* msgpack bytes of the value */
    size_t len;
    int kind;                    /* 0 message, 1 cancel request, 2 to a named
                                    channel (topic: its name) */
    char key[TL_WF_ID_MAX + 260];/* its row's key, wf and time */
    char wf[TL_WF_ID_MAX + 1];
    int64_t posted;
    int64_t taken;               /* -1 dropped (no live workflow), else when received */
};

/* One attempt of a step, handed to a worker (or run in the commit). */
struct wf_job {
    wf_job *next;
    wf_rec *rec;                 /* NULL once abandoned (engine thread only) */
    const tl_wf_step *step;
    char id[TL_WF_ID_MAX + 1];
    char key[TL_WF_ID_MAX + 24];
    int64_t seq;
    uint32_t attempt;
    atomic_int canceled;
    void *arg;                   /* msgpack bytes */
    size_t alen;
    void *db;                    /* TL_WF_TX: the connection, in the commit */
    /* filled by the worker */
    int rc;
    void *res;
    size_t rlen;
    char errmsg[200];
    int64_t started, ended;
    int counted;                 /* TL_WF_TX: its row went into the commit */
};

struct wf_rec {
    tl_wf *wf;
    const void *stash;           /* tl_wf__stash: the next await's target */
    char id[TL_WF_ID_MAX + 1];
    char func[80];
    char parent[TL_WF_ID_MAX + 1];
    tl_tasklet *t;               /* held */
    tl_chan *wake;               /* held; the await frame receives on it */
    int status;                  /* tl_wf_status */
    int wait;                    /* W_* */
    char what[TL_WF_ID_MAX + 1]; /* step name, topic or child id */
    int64_t deadline;            /* of the wait (ns), 0 none */
    int64_t sel_depth;           /* W_SELECT: the selecting frame's depth */
    int expired;                 /* the deadline passed: TL_ETIMEDOUT is decided */
    int64_t seq;                 /* steps begun */
    int64_t recorded;            /* steps recorded */
    uint32_t attempt;            /* of the step in progress */
    void *sarg;                  /* its argument (msgpack bytes) */
    size_t salen;
    int64_t retry_at;            /* next attempt (ns), 0 none */
    uint32_t gen;                /* bumped at every wait: stale timers */
    uint32_t ntimers;            /* entries of wf->timers naming it */
    int gone;                    /* freed, kept for those entries only */
    int cancel;                  /* cancel requested */
    int dirty;                   /* row to write at the next commit */
    int64_t created, updated, finished;
    int error;
    char errmsg[256];
    void *result;                /* msgpack bytes once done */
    size_t rlen;
    wf_msg *mail, **mail_tail;   /* taken in, not yet received */
    wf_job *job;                 /* the attempt in flight */
    wf_rec *joiner;              /* the parent waiting on us */
    wf_rec *hnext;               /* hash chain */
    wf_rec *dnext;               /* dirty list */
    /* moving (move.c) */
    int rebind;                  /* its await receives once more, on the
                                    wake channel it has now (a move woke it) */
    int moving;                  /* departed (tl_wf_move), hand-off not committed */
    int move_written;            /* its departure rows are in the checkpoint
                                    being written */
    int arrived;                 /* taken in (move.c): waits resume once committed */
    uint64_t move_tid;           /* its tasklet's id when it departed */
    wf_rec *mnext;               /* wf->moves */
    char move_to[64];            /* TL_WF_MOVED, or moving: where */
    char moved_from[64];         /* the node it last came from */
    char move_error[200];        /* why its last move was refused */
};

/* A restored workflow whose row is not read yet (lazy.c). */
typedef struct wf_lazy {
    const char *id;              /* in its root frame's locals; NULL free */
    tl_tasklet *t;               /* held */
    tl_chan *wake;               /* its root frame's */
    int quiet;                   /* restore: blocks in TL_WF_RECV, no deadline */
} wf_lazy;
/* Rows that came with moved workflows, to write in the next checkpoint. */
typedef struct wf_arrival {
    struct wf_arrival *next;
    int step;                    /* 1 wf_step, 0 wf_msg */
    char key[TL_WF_ID_MAX + 280];
    char wf[TL_WF_ID_MAX + 1];
    int64_t time;
    void *data;
    size_t len;
} wf_arrival;

/* A named channel this engine opened (chan.c). */
typedef struct wf_chan {
    char name[TL_WF_NAME_MAX + 1];
    tl_chan *ch;                 /* held (and pinned in the runtime) */
    int dirty;                   /* its wf_chan row goes into the next commit */
} wf_chan;

/* A step result or join result to write, then hand to its workflow. */
typedef struct wf_out {
    struct wf_out *next;
    wf_rec *rec;                 /* to deliver to (NULL: only a row) */
    uint32_t gen;
    int kind;                    /* W_STEP or W_JOIN */
    char key[TL_WF_ID_MAX + 24]; /* step row key */
    char name[TL_WF_NAME_MAX + 1];
    int64_t seq;
    uint32_t attempts;
    int rc;
    char errmsg[200];
    void *res;
    size_t rlen;
    int64_t started, ended;
    int written;                 /* row already committed (restore) */
} wf_out;

typedef struct wf_timer {
    int64_t at;
    wf_rec *rec;
    uint32_t gen;
    int kind;                    /* 0 wait deadline, 1 retry, 2 attempt timeout */
    uint32_t attempt;
} wf_timer;

/* Worker threads. */
typedef struct wf_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wf_job *todo, **todo_tail;
    wf_job *done, **done_tail;
    int efd;                     /* eventfd: written when done grows */
    int stop;
    unsigned n;
    pthread_t *threads;
} wf_pool;

struct tl_wf {
    uint32_t magic;
    tl_runtime *rt;
    tl_store *st;
    void *db;                    /* the store's sqlite3 connection */
    tl_wf_config cfg;
    const tl_wf_step **steps;
    size_t nsteps, capsteps;
    wf_rec **hash;
    size_t hcap, live;           /* live: hashed and lazy */
    wf_lazy *lazy;               /* open addressing, lcap slots (lazy.c) */
    size_t lcap, nlazy;
    wf_rec *stub;                /* the userdata of lazy workflows' tasklets */
    int lazy_rc;                 /* a lazy row that failed to load, for tl_wf_run */
    void *rowzone;               /* msgpack zone for decoding rows at restore */
    wf_rec *dirty;
    wf_out *outs, **outs_tail;   /* to write in the next commit */
    wf_out *ready;               /* to deliver at once (restored) */
    wf_job *txq;                 /* TL_WF_TX attempts for the next commit */
    wf_job *txdone;              /* run in the commit being written */
    wf_job *inlq, **inlq_tail;   /* TL_WF_INLINE attempts for this round */
    tl_runtime *inl_rt;          /* where inline and TL_WF_TX effects run */
    wf_msg *taken;               /* messages received or dropped, to mark */
    wf_msg *chanq, **chanq_tail; /* posted to named channels, not yet sent */
    wf_chan *chans;              /* named channels opened (tl_wf_chan) */
    size_t nchans, capchans;
    wf_timer *timers;            /* binary heap by at */
    size_t ntimers, captimers;
    int64_t cursor;              /* last message seq taken in */
    int64_t data_version;
    int64_t last_prune;
    int watch;                   /* inotify fd (SQLite), the listener's socket
                                    (PostgreSQL), or -1 */
    tl_store_listener *listen;   /* PostgreSQL: posts are announced here */
    int poked;                   /* SQLite: an event since the last look at the store */
    int64_t drained;             /* when intake last read the inotify fd (mono ns) */
    void *stmts[WF_NST];         /* db.c's prepared statements (sqlite3_stmt) */
    int force;                   /* commit at the end of this round */
    size_t inflight;             /* jobs the pool holds */
    int changed;                 /* the scheduler ran since the last commit */
    int joined;                  /* a joiner was ever set (tl__wf_rec_free) */
    wf_rec *moves;               /* departed, hand-off not committed (mnext) */
    wf_arrival *arrivals;        /* rows of arrived workflows to write */
    int arrived;                 /* some rec is arrived: resume after the commit */
    wf_pool pool;
    char errmsg[512];
};

#define WF_MAGIC 0x746c5746u /* "tlWF" */

/* SQL: the wf_step rows (alias s) of the workflow whose id is the SQL
 * expression id, found on the primary key: keys "<id>#<n>" sort between
 * "<id>#" and "<id>$"; the wf column drops the steps of a workflow whose
 * own id begins with "<id>#".  In a join, the workflows' table comes first
 * (CROSS JOIN), or SQLite scans wf_step for the equality on wf. */
#define TL_WF_STEPS_OF(s, id)                                                              \
    s ".key > " id " || '#' AND " s ".key < " id " || '$' AND " s ".wf = " id

/* engine.c */
TL__HIDDEN int tl__wf_err(tl_wf *wf, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
TL__HIDDEN wf_rec *tl__wf_find(tl_wf *wf, const char *id);
/* The clients' error (client.c): sets rt's message when there is a
 * runtime, and returns code. */
TL__HIDDEN int tl__wf_cerr(tl_runtime *rt, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The wall clock in nanoseconds (pool.c): times in the rows. */
TL__HIDDEN int64_t tl__wf_wall_ns(void);
TL__HIDDEN int tl__wf_lookup(tl_wf *wf, const char *id, wf_rec **out);
TL__HIDDEN wf_rec *tl__wf_rec_of(tl_tasklet *t);
TL__HIDDEN void tl__wf_dirty(tl_wf *wf, wf_rec *r);
TL__HIDDEN const tl_wf_step *tl__wf_step_find(tl_wf *wf, const char *name);
TL__HIDDEN int tl__wf_timer_add(tl_wf *wf, int64_t at, wf_rec *r, int kind);
TL__HIDDEN int tl__wf_deliver(tl_wf *wf, wf_rec *r, int rc, const char *msg, const void *res,
                              size_t rlen);
TL__HIDDEN int tl__wf_start_rec(tl_wf *wf, const char *id, const tl_func *fn, tl_value arg,
                                const char *parent, int *created);
TL__HIDDEN void tl__wf_rec_free(tl_wf *wf, wf_rec *r);
TL__HIDDEN int tl__wf_hash_put(tl_wf *wf, wf_rec *r);
TL__HIDDEN int tl__wf_intake(tl_wf *wf);
TL__HIDDEN int tl__wf_intake_one(tl_wf *wf, const char *id, wf_msg *m);
TL__HIDDEN void tl__wf_hash_del(tl_wf *wf, wf_rec *r);
TL__HIDDEN void tl__wf_fire_timers(tl_wf *wf);
TL__HIDDEN int64_t tl__wf_next_timer(const tl_wf *wf);

/* await.c: the engine's tasklet functions and what they ask of it */
TL__HIDDEN extern const tl_func tl__wf_root;
TL__HIDDEN size_t tl__wf_max_record(tl_wf *wf);
TL__HIDDEN int tl__wf_submit(tl_wf *wf, wf_rec *r);
TL__HIDDEN void tl__wf_finished(tl_wf *wf, wf_rec *r, int code, const char *msg, tl_value res);
TL__HIDDEN int tl__wf_do_cancel(tl_wf *wf, wf_rec *r);
TL__HIDDEN wf_msg *tl__wf_take_msg(tl_wf *wf, wf_rec *r);
TL__HIDDEN void tl__wf_job_done(tl_wf *wf, wf_job *j);
TL__HIDDEN void tl__wf_timer_fire(tl_wf *wf, const wf_timer *tm);
TL__HIDDEN int tl__wf_timeout_out(tl_wf *wf, wf_rec *r, wf_out **list);
TL__HIDDEN void tl__wf_out_free(wf_out *o);
TL__HIDDEN void tl__wf_run_inline(tl_wf *wf);
/* run.c: the TL_WF_TX attempts of a checkpoint that rolled back run again */
TL__HIDDEN void tl__wf_tx_rollback(tl_wf *wf);
TL__HIDDEN void tl__wf_committed(tl_wf *wf);

TL__HIDDEN void tl__wf_abandon(tl_wf *wf, wf_rec *r);
TL__HIDDEN int tl__wf_result_pending(const tl_wf *wf, const wf_rec *r);
/* Sets the root frame's wake channel of workflow tasklet t (NULL: none;
 * the old one is released); 0 if t's bottom frame is not tl.wf.root. */
TL__HIDDEN int tl__wf_root_wake(tl_tasklet *t, tl_chan *ch);

/* move.c: moving workflows between nodes */
TL__HIDDEN int tl__wf_cargo_out(void *ud, tl__store_tx *tx, uint64_t tid, const char *peer,
                                void **out, size_t *len);
TL__HIDDEN int tl__wf_cargo_in(void *ud, tl_tasklet *t, uint64_t tid, const char *from,
                               const void *p, size_t n, const char *refused);
TL__HIDDEN int tl__wf_arrivals_write(tl_wf *wf, tl__store_tx *tx);
TL__HIDDEN void tl__wf_moves_committed(tl_wf *wf);
TL__HIDDEN void tl__wf_moves_free(tl_wf *wf);

/* lazy.c: restored workflows whose rows are read when first needed */
TL__HIDDEN int tl__wf_root_info(tl_tasklet *t, const char **id, tl_chan **wake, int *quiet);
TL__HIDDEN int tl__wf_lazy_scan(tl_wf *wf, wf_lazy **eager, size_t *neager);
TL__HIDDEN int tl__wf_lazy_has(const tl_wf *wf, const char *id);
TL__HIDDEN int tl__wf_lazy_wake(tl_wf *wf, const char *id, wf_rec **out);
TL__HIDDEN wf_rec *tl__wf_lazy_of(tl_wf *wf, tl_tasklet *t);
TL__HIDDEN int tl__wf_lazy_wake_all(tl_wf *wf);
TL__HIDDEN void tl__wf_lazy_free(tl_wf *wf);

/* chan.c: named channels */
TL__HIDDEN int tl__wf_chan_write(tl_wf *wf, tl__store_tx *tx);
TL__HIDDEN void tl__wf_chan_committed(tl_wf *wf);
TL__HIDDEN int tl__wf_chan_take(tl_wf *wf, wf_msg *m);
TL__HIDDEN void tl__wf_chan_flush(tl_wf *wf);
TL__HIDDEN void tl__wf_chan_free(tl_wf *wf);

/* pool.c */
TL__HIDDEN int tl__wf_pool_start(wf_pool *p, unsigned n);
TL__HIDDEN void tl__wf_pool_stop(wf_pool *p);
TL__HIDDEN void tl__wf_pool_submit(wf_pool *p, wf_job *j);
TL__HIDDEN wf_job *tl__wf_pool_take_done(wf_pool *p);
TL__HIDDEN void tl__wf_job_run(wf_job *j, tl_runtime *rt);
TL__HIDDEN void tl__wf_job_free(wf_job *j);

/* codec.c: values and records as msgpack bytes (malloc'd) */
TL__HIDDEN int tl__wf_pack(tl_value v, void **out, size_t *len);
TL__HIDDEN int tl__wf_unpack(tl_runtime *rt, const void *p, size_t n, tl_value *out);
TL__HIDDEN int tl__wf_pack_rec(const wf_rec *r, void **out, size_t *len);
TL__HIDDEN int tl__wf_unpack_rec(const void *p, size_t n, wf_rec *r, int64_t *tasklet,
                                 int64_t *wake);
/* The same, the decoded objects in zone (a tl__wf_zone_new, reused from
 * row to row: no allocation per row; NULL: a zone of its own). */
TL__HIDDEN int tl__wf_unpack_rec_in(void *zone, const void *p, size_t n, wf_rec *r,
                                    int64_t *tasklet, int64_t *wake);
/* A message row's taken time only (decoded in zone, may be NULL). */
TL__HIDDEN int tl__wf_msg_taken(void *zone, const void *p, size_t n, int64_t *taken);
TL__HIDDEN void *tl__wf_zone_new(void);
TL__HIDDEN void tl__wf_zone_free(void *zone);
TL__HIDDEN int tl__wf_pack_step(const wf_out *o, void **out, size_t *len);
TL__HIDDEN int tl__wf_unpack_step(const void *p, size_t n, wf_out *o);
TL__HIDDEN int tl__wf_pack_msg(int kind, const char *topic, const void *val, size_t vlen,
                               int64_t taken, void **out, size_t *len);
TL__HIDDEN int tl__wf_unpack_msg(const void *p, size_t n, int *kind, char *topic,
                                 const void **val, size_t *vlen, int64_t *taken);
TL__HIDDEN int tl__wf_pack_chan(uint64_t id, size_t cap, void **out, size_t *len);
TL__HIDDEN int tl__wf_status_parse(const char *s);
TL__HIDDEN int tl__wf_check_id(const char *id);

/* db.c: the workflow tables (FORMAT.md section 11) */
TL__HIDDEN int tl__wf_db_init(tl_wf *wf);
TL__HIDDEN int tl__wf_db_write(tl_wf *wf, tl__store_tx *tx);
TL__HIDDEN int tl__wf_db_load(tl_wf *wf);
TL__HIDDEN int tl__wf_db_adopt(tl_wf *wf, const char *id, tl_tasklet *t, tl_chan *ch,
                               wf_rec **out);
TL__HIDDEN int tl__wf_db_step(tl_wf *wf, const char *key, wf_out *o);
TL__HIDDEN int tl__wf_db_get(void *db, const char *id, void **rec, size_t *len, int *status);
TL__HIDDEN int tl__wf_db_find(tl_wf *wf, const char *id, void **rec, size_t *len, int *status);
TL__HIDDEN void tl__wf_db_finalize(tl_wf *wf);
TL__HIDDEN int tl__wf_db_intake(tl_wf *wf);
TL__HIDDEN int tl__wf_db_changed(tl_wf *wf);
TL__HIDDEN int tl__wf_resume_wait(tl_wf *wf, wf_rec *r);
TL__HIDDEN int tl__wf_sqlerr(tl_wf *wf, void *db, const char *what);
/* The rows of table wf_step (step 1) or wf_msg of workflow id, in
 * insertion order: fn(ud, key, time, data, len); non-OK stops. */
TL__HIDDEN int tl__wf_db_rows(tl_wf *wf, int step, const char *id,
                              int (*fn)(void *ud, const char *key, int64_t time,
                                        const void *p, size_t n), void *ud);
TL__HIDDEN int tl__wf_db_put(tl_wf *wf, tl__store_tx *tx, int step, const char *key,
                             const char *id, int64_t time, const void *p, size_t n);
TL__HIDDEN int tl__wf_db_put_rec(tl_wf *wf, tl__store_tx *tx, wf_rec *r);
/* Rough bytes of workflow id's rows (steps and messages). */
TL__HIDDEN size_t tl__wf_db_size(tl_wf *wf, const char *id);

/* db_store.c: the same tables on a store without a SQLite connection
 * (PostgreSQL), through the store's row operations; db.c and client.c
 * call these when wf->db (or the path) is not SQLite's */
TL__HIDDEN extern const tl__table tl__wf_t_wf, tl__wf_t_step, tl__wf_t_msg, tl__wf_t_chan;
TL__HIDDEN int tl__wf_dbs_init(tl_wf *wf);
TL__HIDDEN int tl__wf_dbs_get(tl_store *st, const char *id, void **rec, size_t *len,
                              int *status);
TL__HIDDEN int tl__wf_dbs_step(tl_wf *wf, const char *key, wf_out *o);
TL__HIDDEN int tl__wf_dbs_changed(tl_wf *wf);
TL__HIDDEN int tl__wf_dbs_intake(tl_wf *wf);
TL__HIDDEN int tl__wf_dbs_live(tl_wf *wf,
                               int (*fn)(tl_wf *wf, void *ud, const char *id,
                                         const char *status, const void *p, size_t n),
                               void *ud);
TL__HIDDEN int tl__wf_dbs_prune(tl_wf *wf, tl__store_tx *tx, int64_t cut);
/* client_store.c: tl_wf_post and tl_wf_get on a postgresql:// location */
TL__HIDDEN int tl__wf_is_url(const char *path);
TL__HIDDEN int tl__wf_post_store(tl_runtime *rt, const char *url, int kind, const char *id,
                                 const char *key, const void *p, size_t n);
TL__HIDDEN int tl__wf_get_store(tl_runtime *rt, const char *url, const char *id,
                                int64_t wait_ms, tl_wf_info *out);
/* client.c: a wf row decoded into *out (result into rt when done) */
TL__HIDDEN int tl__wf_info_decode(tl_runtime *rt, const char *id, const void *p, size_t n,
                                  int st, tl_wf_info *out);

/* watch.c: woken by other processes' writes to the store */
/* others: only other processes' writes (see watch.c), else every write */
TL__HIDDEN int tl__wf_watch_open(const char *dbpath, int others);
/* Reads what is pending; 1 if there was an event. */
TL__HIDDEN int tl__wf_watch_drain(int fd);
TL__HIDDEN void tl__wf_busy(void *db, int ms);

#endif
