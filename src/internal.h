/*
 * internal.h -- structures shared by the runtime's source files.
 *
 * Layout budget: a tasklet blocked on a channel costs its tl_tasklet
 * (88 bytes) plus one frame (32-byte head + locals), both carved from
 * per-runtime slabs with no per-object header.  Tasklets and channels live
 * in slabs too, so a stale handle still points at mapped memory whose
 * magic reads as dead, and whose generation tells a reused slot from the
 * object a handle was made for (see "Handles" below).  Nothing here is
 * persisted as a pointer: snapshots use ids, names and resume points.
 */
#ifndef TL_INTERNAL_H
#define TL_INTERNAL_H

#include "tasklet.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TL__HIDDEN __attribute__((visibility("hidden")))

#define TL__MAGIC_RT 0x746c5254u /* "tlRT" */
/* Slab objects (tasklets, channels) keep a 16-bit magic, then their slot's
 * 16-bit generation, in their first word. */
#define TL__MAGIC_TASK 0x544bu /* "TK" */
#define TL__MAGIC_CHAN 0x4348u /* "CH" */
#define TL__MAGIC_DEAD 0u

#define TL__CONTAINER(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TL__ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TL__ASAN 1
#endif

/* ---- intrusive doubly-linked list with a sentinel head ---- */
typedef struct tl__link {
    struct tl__link *next, *prev;
} tl__link;

static inline void tl__list_init(tl__link *h) { h->next = h->prev = h; }
static inline bool tl__list_empty(const tl__link *h) { return h->next == h; }
static inline void tl__list_push_back(tl__link *h, tl__link *l)
{
    l->prev = h->prev;
    l->next = h;
    h->prev->next = l;
    h->prev = l;
}
static inline void tl__list_push_front(tl__link *h, tl__link *l)
{
    l->next = h->next;
    l->prev = h;
    h->next->prev = l;
    h->next = l;
}
static inline void tl__list_unlink(tl__link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = l;
}

/* ---- slabs: fixed-size objects, free list, chunks kept until the end ---- */
typedef struct tl__chunk tl__chunk;
typedef struct tl__slab {
    size_t objsize;   /* multiple of 8, >= 16 */
    void *free;       /* free objects; the link is at offset 8 */
    tl__chunk *chunks;
    size_t nextcount; /* objects in the next chunk */
    size_t live;
} tl__slab;

/* ---- waiters: what links a blocked tasklet into a queue ---- */
/* `on` holds what a tasklet waits on: a channel (low bit set for a
 * select waiter, which is then a tl__selw), a joined tasklet, or the
 * index of its timer in the timer heap. */
typedef struct tl__waiter {
    tl__link link;
    uintptr_t on;
} tl__waiter;

typedef struct tl__sel tl__sel;
typedef struct tl__selw {
    tl__waiter w;
    tl__sel *sel;
    int idx;
    uint64_t seq;   /* a layer's queue number (tl__layer_ops.queued) */
} tl__selw;

struct tl__sel {
    tl_tasklet *t;
    tl_case *cases; /* a TL_T_CASES field of the frame's locals */
    int n;
    int owns_values; /* the loader's: the cases' values are the select's
                      * own references, released when it ends */
    size_t bytes;
    tl__selw ws[];
};

/* Rarely used tasklet state, allocated on first use. */
typedef struct tl__ext {
    char *name;
    void *userdata;
    tl__link joiners;
    char *errmsg;    /* message of the last error delivered */
    tl__sel *sel;    /* select in progress */
    int sel_fired;
} tl__ext;

/* A registered function with what the hot path needs precomputed. */
typedef struct tl__fn {
    const tl_func *fn;
    tl_step_fn step;
    uint32_t frame_size; /* frame head + locals, rounded to 16 */
    int slab_class;      /* -1: allocated directly */
    uint16_t nrefs;      /* schema fields owning a reference */
    uint8_t plain;       /* no such field, no cleanup, locals of at most
                          * TL__PLAIN_LOCALS bytes: tl__call's short way */
    uint64_t live;       /* frames of this function alive now */
    uint16_t *refs;      /* their indices in fn->fields */
    char *shape;         /* kind of each resume point (TL__K_*), in order,
                          * NUL-terminated: read by tl_register's probe */
    uint32_t npoints;    /* strlen(shape) */
    uint32_t *v1_lines;  /* npoints source lines: format-1 resume points
                          * (tl_register_v1_lines), or NULL */
} tl__fn;
/* Most resume points a function may have. */
#define TL__MAX_POINTS 4096

struct tl_frame {
    struct tl__frame_head h; /* pc, flags: read inline by the macros */
    const tl__fn *fn;
    tl_frame *parent;
    tl_tasklet *t;
    /* locals follow, 16-byte aligned */
};
#define TL__F_CATCH 2u
#define TL__LOCALS(f) ((void *)((f) + 1))

struct tl_tasklet {
    uint16_t magic;  /* TL__MAGIC_TASK while alive */
    uint16_t gen;    /* the slot's generation (handles); survives free */
    uint8_t state;   /* tl_state */
    uint8_t wait;    /* tl_wait  */
    uint16_t flags;  /* TL__TF_* */
    uint32_t refs;   /* handles + values + 1 while not ended */
    int32_t err;     /* pending or final error */
    tl_runtime *rt;  /* at offset 16: still readable in a freed slot */
    uint64_t id;
    tl__waiter w;    /* run queue, channel queue, joiners, or timer */
    tl_frame *top;
    tl_value xfer;   /* value in flight: sent, received, returned */
    tl__ext *ext;
};


#define TL__TF_SUBSET 1u /* in the tasklet snapshot being encoded */
#define TL__TF_REMOTE 2u /* blocked on a proxy with its request issued */
#define TL__TF_DIRTY 4u  /* changed since the last checkpoint (tl__mark) */
/* persist's bits (persist/split.c), kept with the object: where the store
 * holds it (HOME: its chunk's home record, HOT: the chunk's hot record,
 * neither: nowhere yet), whether it changed at its chunk's last write
 * (WARM), and the same decided by a checkpoint not yet committed (N*).
 * A channel keeps them in tl_chan.ploc. */
#define TL__TF_WARM 8u
#define TL__TF_HOME 16u
#define TL__TF_HOT 32u
#define TL__TF_NWARM 64u
#define TL__TF_NHOT 128u
#define TL__TF_PLOC (TL__TF_WARM | TL__TF_HOME | TL__TF_HOT | TL__TF_NWARM | TL__TF_NHOT)

/* A channel whose home is another node (a proxy): operations on it are
 * forwarded there by the node (migrate/).  Its waiters sit in its queues
 * but are not counted in nsend/nrecv, so the fast paths never match them. */
typedef struct tl__remote {
    char node[64];  /* the home node */
    uint64_t id;    /* the channel's id there (0: addressed by name) */
    char *name;     /* or its name there (NULL: by id) */
} tl__remote;

/* ---- layers: what persist/ and migrate/ plug into a runtime ----
 * The runtime knows no storage.  A layer above core registers its ops and
 * one state pointer in its slot (tl__layer_attach); core calls them at the
 * few points where it must tell the layers something.  docs/ARCHITECTURE.md
 * ("Layers") lists what may call what. */
enum { TL__LAYER_PERSIST, TL__LAYER_NODE, TL__LAYERS };
typedef struct tl__layer_ops {
    /* tl_runtime_free, after every tasklet and channel is freed: free the
     * layer's state (the slot is cleared by the caller). */
    void (*on_free)(tl_runtime *rt, void *state);
    /* tl__runtime_reset emptied the runtime (a load failed): forget what
     * was noted about its objects. */
    void (*on_reset)(tl_runtime *rt, void *state);
    /* The scheduler's policy step: every rt->policy_every steps while
     * busy (idle 0), and when nothing is runnable (idle 1).  Non-zero
     * stops tl_run / tl_run_steps with that error. */
    int (*policy)(tl_runtime *rt, void *state, int idle);
    /* While rt->track is set: channel id was freed. */
    void (*chan_gone)(tl_runtime *rt, void *state, uint64_t id);
    /* While rt->track is set: tasklet t has its id now (born 1: spawned or
     * loaded) or is about to be freed (born 0).  persist keeps its chunk
     * -> tasklets index with it, so a checkpoint walks only what changed. */
    void (*tasklet_note)(tl_runtime *rt, void *state, tl_tasklet *t, int born);
    /* While rt->track is set: waiter w (a tasklet's, or a select case's)
     * joined the tail of a local channel's queue as a tasklet blocked (or
     * an imported one arrived; the loader gives the numbers it reads).
     * persist numbers the waiters in that order (FORMAT.md: queues by
     * number). */
    void (*queued)(tl_runtime *rt, void *state, tl__waiter *w);
    /* What of the layer still holds rt and must be closed first, as a
     * message ("a store is still attached; close it (tl_store_close)"),
     * or NULL: tl_runtime_free refuses with TL_EBUSY while one does. */
    const char *(*holder)(const tl_runtime *rt, void *state);

    /* The node's (migrate/, TL__LAYER_NODE): remote channels and moves. */
    /* t has just blocked on proxy ch for op (value in t->xfer for a send):
     * issue the request; non-zero (with rt's error set) fails the op. */
    int (*remote_op)(void *state, tl_chan *ch, tl_tasklet *t, int op);
    /* t leaves proxy ch's queue before an answer came (killed, moved). */
    void (*remote_cancel)(void *state, tl_chan *ch, tl_tasklet *t);
    /* t (running) asks to move to node; non-zero fails the TL_MIGRATE. */
    int (*move)(void *state, tl_tasklet *t, const char *node);
    /* between steps, after a move was asked for: carry out the moves */
    void (*moves)(void *state);
    /* a moving tasklet being imported refers to local channel ch: 0
     * refuses the import as if ch did not exist (access control) */
    int (*import_chan)(void *state, tl_chan *ch);
    /* Moves suspended t (not the current tasklet) to node now, as
     * tl_node_migrate does, for a layer above core that may not call the
     * node (the workflow engine).  cargo: 0 a plain move; else about that
     * many bytes of store rows travel with it (persist/persist.h,
     * cargo_out), which needs the node's store.  Non-zero: rt's error. */
    int (*migrate)(void *state, tl_tasklet *t, const char *node, size_t cargo);
} tl__layer_ops;
typedef struct tl__layer {
    const tl__layer_ops *ops;
    void *state;
} tl__layer;

struct tl_chan {
    uint16_t magic;   /* TL__MAGIC_CHAN while alive */
    uint16_t gen;     /* the slot's generation (handles); survives free */
    int8_t pref;
    uint8_t closing;
    uint8_t sched_all;
    uint8_t reserved; /* loader: 1 = shell; encoder: 2 = in the subset */
    uint32_t refs;
    int32_t nsend;    /* waiters in sendq */
    tl_runtime *rt;   /* at offset 16: still readable in a freed slot */
    int32_t nrecv;    /* waiters in recvq */
    uint64_t id;
    tl__link sendq, recvq;
    tl_value *buf;
    size_t cap, head, count;
    char *name;
    tl__link all; /* in rt->chans */
    tl__link dlink; /* in rt->dchans while dirty */
    uint8_t dirty; /* changed since the last checkpoint (tl__chan_touch) */
    uint8_t pinned; /* held by the runtime itself (tl_chan_pin) */
    uint8_t lq;     /* loader: queues given by number (1 senders, 2 receivers) */
    uint8_t ploc;   /* persist's TL__TF_WARM/HOME/HOT/NWARM/NHOT bits */
    tl__remote *remote; /* a proxy: the channel lives on another node */
};

typedef struct tl__timer {
    int64_t deadline;
    tl_tasklet *t;
} tl__timer;

typedef struct tl__fnmap {
    tl__fn **slots;  /* open addressing */
    size_t cap, n;
} tl__fnmap;

#define TL__FRAME_CLASSES 64 /* frames up to 64 * 16 = 1024 bytes */
#define TL__PLAIN_LOCALS 64  /* a plain function's locals, zeroed inline */

struct tl_runtime {
    uint32_t magic;
    int running;
    int tearing_down;
    tl_alloc_fn alloc;
    void *alloc_ud;
    tl_clock_fn clock;
    void *clock_ud;

    tl_tasklet *current;
    tl_tasklet *last; /* last dispatched, for the schedule callback */
    tl_tasklet *main; /* main-tasklet mode: the main tasklet (a reference) */
    tl__link runq;
    size_t nrunnable, nblocked, nlive;
    uint64_t next_tid, next_cid;
    uint32_t steps_since_timers;
    uintptr_t cstack; /* C stack where run_some runs steps (tl__call);
                       * 0 in check mode: no call runs nested */
    int check;        /* TL_CHECK_LOCALS: every resumption a restart */
    int pending_fail; /* a detached tasklet failed: tl_run reports it */
    int attention;    /* pending_fail or pending moves: checked per step */
    int moves_pending;
    tl__layer layers[TL__LAYERS]; /* persist's and the node's */

    tl__timer *timers;
    size_t ntimers, captimers;

    tl__fnmap by_ptr, by_name;
    const tl_func *cache_key; /* last tl_func looked up by pointer */
    tl__fn *cache_val;

    tl__slab tasklets;
    tl__slab exts;
    tl__slab chan_slab;
    void *stale[2];   /* tombstones of a tasklet [0] and a channel [1]
                       * (tl__stale_handle), allocated on first use */
    tl__slab frames[TL__FRAME_CLASSES];
    tl__link chans;
    tl__link dchans;  /* the channels whose dirty flag is set, by dlink */

    tl_schedule_cb sched_cb;
    void *sched_ud;
    tl_channel_cb chan_cb;
    void *chan_ud;

    /* What changed, for a layer that writes increments (tl__track):
     * dset holds k + 1 for every chunk k (tasklet id >> 8) a tasklet of
     * which changed since the layer last cleared it -- an open-addressing
     * set sized by what changed, never by the id space, and at most
     * TL__DSET_MAX slots; dlast is the chunk marked last (so a mark of the
     * same chunk again costs one compare).  Channels carry their own
     * dirty flag and are listed in dchans while it is set
     * (tl__chan_touch). */
    int track;           /* a layer tracks changes (tl__track) */
    uint64_t *dset;      /* dcap slots (0 or a power of two), dn used */
    size_t dcap, dn;
    uint64_t dlast;      /* UINT64_MAX: none */
    int dmap_lost;       /* the set could not hold a mark: everything changed */
    char node[64];
    uint64_t policy_every;  /* steps between the layers' policy steps when
                             * busy (0: never) */
    uint64_t policy_count;

    uint64_t rng;
    int errcode;
    char errmsg[512];
};

/* A value as two words: head holds the first 8 bytes of the tl_value (the
 * type is its first byte in memory), bits the union.
 * The hot paths move values as word pairs so that GCC never reloads two
 * 8-byte stores with one 16-byte load (a store-forwarding stall). */
typedef struct { uint64_t head, bits; } tl__vw;
static inline tl__vw tl__vw_make(uint64_t head, uint64_t bits) { tl__vw w = {head, bits}; return w; }
/* Word access to a tl_value; may_alias keeps it within the aliasing rules.
 * (memcpy would be the portable spelling, but GCC 12 turns it back into a
 * 16-byte vector load and the stall returns.) */
typedef uint64_t __attribute__((may_alias)) tl__word;
static inline tl__vw tl__vw_load(const tl_value *p)
{ const tl__word *q = (const tl__word *)(const void *)p; return tl__vw_make(q[0], q[1]); }
static inline void tl__vw_store(tl_value *p, tl__vw w)
{ tl__word *q = (tl__word *)(void *)p; q[0] = w.head; q[1] = w.bits; }
static inline tl_value tl__vw_value(tl__vw w) { tl_value v; memcpy(&v, &w, sizeof v); return v; }
static inline tl__vw tl__vw_of(tl_value v) { tl__vw w; memcpy(&w, &v, sizeof w); return w; }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
static inline int tl__vw_type(tl__vw w) { return (int)(uint8_t)(w.head >> 56); }
#else
static inline int tl__vw_type(tl__vw w) { return (int)(uint8_t)w.head; }
#endif
static inline void tl__vw_retain(tl__vw w)
{ if (tl__vw_type(w) >= TL_V_STR) tl__retain_slow(tl__vw_value(w)); }
static inline void tl__vw_release(tl__vw w)
{ if (tl__vw_type(w) >= TL_V_STR) tl__release_slow(tl__vw_value(w)); }
/* Stores w in *dst, then releases what *dst held (tl_value_set).  Only
 * the type byte is read unless there is something to release: a 16-byte
 * load of the two 8-byte stores of the last set would stall. */
static inline void tl__vw_set(tl_value *dst, tl__vw w)
{
    if (dst->type >= TL_V_STR) {
        tl_value old = *dst;
        tl__vw_store(dst, w);
        tl__release_slow(old);
        return;
    }
    tl__vw_store(dst, w);
}
/* Ends an operation behind TL__AWAIT_INTO that completed at once
 * (TL__CONT): unless an error is pending, moves the value in flight into
 * *dst as the resume point would, and returns TL__DONE. */
static inline tl_status tl__land(tl_frame *f, tl_value *dst)
{
    if (f->h.flags & TL__F_ERR)
        return TL__CONT; /* the macro unwinds */
    tl_value *xfer = &f->t->xfer;
    tl__vw w = tl__vw_load(xfer);
    /* in registers: GCC would otherwise copy with one 16-byte load from
     * the two 8-byte stores just made by tl__return_w (a stall) */
    __asm__("" : "+r"(w.head), "+r"(w.bits));
    tl__vw_store(xfer, tl__vw_make(0, 0));
    tl__vw_set(dst, w);
    return TL__DONE;
}
/* Replaces *dst (its old reference released first: w is owned apart). */
static inline void tl__vw_replace(tl_value *dst, tl__vw w)
{
    if (dst->type >= TL_V_STR)
        tl__release_slow(*dst);
    tl__vw_store(dst, w);
}

/* What an operation that completed at once returns: TL__CONT (the macro
 * goes on inline), or in check mode TL__AGAIN, so that the frame re-enters
 * at its resume point as after a real suspension. */
static inline tl_status tl__cont(const tl_runtime *rt)
{
    return rt->check ? TL__AGAIN : TL__CONT;
}
/* Check mode's codec round trip of t's frames (persist/check_locals.c
 * registers it; NULL in a program without persist): TL_OK or an error
 * with rt's message set. */
TL__HIDDEN extern int (*tl__check_codec)(tl_runtime *rt, tl_tasklet *t);

/* ---- alloc.c ---- */
TL__HIDDEN void *tl__alloc(tl_runtime *rt, size_t n);
TL__HIDDEN void *tl__calloc(tl_runtime *rt, size_t n);
TL__HIDDEN void *tl__realloc(tl_runtime *rt, void *p, size_t o, size_t n);
TL__HIDDEN void tl__free(tl_runtime *rt, void *p, size_t n);
TL__HIDDEN char *tl__strdup(tl_runtime *rt, const char *s);
TL__HIDDEN void tl__strfree(tl_runtime *rt, char *s);
TL__HIDDEN void tl__slab_init(tl__slab *s, size_t objsize);
TL__HIDDEN void *tl__slab_get(tl_runtime *rt, tl__slab *s);
TL__HIDDEN void tl__slab_put(tl__slab *s, void *obj);
TL__HIDDEN void tl__slab_destroy(tl_runtime *rt, tl__slab *s);
typedef void (*tl__slab_visit)(void *obj, void *ud);
/* Inline fast paths: pop/push the free list. */
static inline void *tl__slab_get_fast(tl_runtime *rt, tl__slab *s)
{
#ifndef TL__ASAN
    void *obj = s->free;
    if (obj) {
        s->free = *(void **)((char *)obj + 8);
        s->live++;
        return obj;
    }
#endif
    return tl__slab_get(rt, s);
}
static inline void tl__slab_put_fast(tl__slab *s, void *obj)
{
#ifndef TL__ASAN
    *(uint16_t *)obj = TL__MAGIC_DEAD;
    *(void **)((char *)obj + 8) = s->free;
    s->free = obj;
    s->live--;
#else
    tl__slab_put(s, obj);
#endif
}
/* Frees every object of s at once, keeping the chunks (and each slot's
 * generation), so that stale handles stay checkable. */
TL__HIDDEN void tl__slab_clear(tl__slab *s);
/* Visits every live object whose 16-bit magic equals magic. */
TL__HIDDEN void tl__slab_each(tl__slab *s, uint32_t magic, tl__slab_visit fn,
                              void *ud);

/* ---- handles: a slot's address with its generation ----
 *
 * A tl_tasklet * or tl_chan * given to the program is the object's
 * address with, on 64-bit targets whose user addresses fit in 48 bits, the
 * slot's generation in bits 48..63.  The generation is bumped each time the
 * slot is handed out again (tl__tasklet_clear, tl__chan_clear) and is
 * never 0, so a handle kept after its object was freed no longer matches
 * the slot, whatever now lives there.  Slabs keep their memory until the
 * runtime is freed, so the check never reads unmapped memory.
 *
 * Inside the library objects are bare addresses (generation 0): a handle
 * with generation 0 is checked by magic only.  Every public entry point
 * turns a handle into its object with tl__tasklet_at / tl__chan_at (NULL:
 * invalid or stale; then tl__bad_tasklet / tl__bad_chan say why), and
 * every handle given out is made by tl__tasklet_handle / tl__chan_handle.
 * Where there are no spare bits (32-bit targets) handles are bare
 * addresses and only a freed, not yet reused slot is caught. */
#if UINTPTR_MAX > 0xffffffffu && (defined(__x86_64__) || defined(__aarch64__))
#define TL__GEN_SHIFT 48
#define TL__ADDR_MASK ((((uintptr_t)1) << TL__GEN_SHIFT) - 1)
static inline void *tl__slot(const void *h) { return (void *)((uintptr_t)h & TL__ADDR_MASK); }
static inline uint16_t tl__hgen(const void *h) { return (uint16_t)((uintptr_t)h >> TL__GEN_SHIFT); }
static inline void *tl__tag(void *p, uint16_t gen)
{ return (void *)((uintptr_t)p | (uintptr_t)gen << TL__GEN_SHIFT); }
#else
static inline void *tl__slot(const void *h) { return (void *)(uintptr_t)h; }
static inline uint16_t tl__hgen(const void *h) { (void)h; return 0; }
static inline void *tl__tag(void *p, uint16_t gen) { (void)gen; return p; }
#endif
static inline uint16_t tl__gen_next(uint16_t g)
{
    g = (uint16_t)(g + 1);
    return g ? g : 1;
}
/* Whether the head word of a live slot (magic, then generation) matches
 * what handle h expects: one 32-bit compare for a handle the program holds.
 * A bare address (generation 0) is checked by magic alone. */
static inline bool tl__head_ok(const void *slot, const void *h, uint16_t magic)
{
    const uint16_t *head = slot; /* magic, generation */
    uint16_t g = tl__hgen(h);
    if (__builtin_expect(head[0] == magic && head[1] == g, 1))
        return true;
    return g == 0 && head[0] == magic;
}
/* The object behind handle h, or NULL if h is NULL, not a live tasklet
 * (channel), or stale (made for an earlier object of the slot). */
static inline tl_tasklet *tl__tasklet_at(const tl_tasklet *h)
{
    tl_tasklet *t = (tl_tasklet *)tl__slot(h);
    return t && tl__head_ok(t, h, TL__MAGIC_TASK) ? t : NULL;
}
static inline tl_chan *tl__chan_at(const tl_chan *h)
{
    tl_chan *ch = (tl_chan *)tl__slot(h);
    return ch && tl__head_ok(ch, h, TL__MAGIC_CHAN) ? ch : NULL;
}
/* The handle the program gets for an object (NULL-safe). */
static inline tl_tasklet *tl__tasklet_handle(tl_tasklet *t)
{ return t ? (tl_tasklet *)tl__tag(t, t->gen) : NULL; }
static inline tl_chan *tl__chan_handle(tl_chan *ch)
{ return ch ? (tl_chan *)tl__tag(ch, ch->gen) : NULL; }
/* Zeroes a slot for a new object, bumping its generation. */
static inline void tl__tasklet_clear(tl_tasklet *t)
{
    uint16_t g = tl__gen_next(t->gen);
    memset(t, 0, sizeof *t);
    t->gen = g;
}
static inline void tl__chan_clear(tl_chan *ch)
{
    uint16_t g = tl__gen_next(ch->gen);
    memset(ch, 0, sizeof *ch);
    ch->gen = g;
}
/* A handle of rt that every entry point refuses as stale ("its tasklet
 * (channel) was freed"), for a stale handle the snapshot codec restores
 * (FORMAT.md: id 0 in a tasklet or chan field): it points to a tombstone,
 * an object that is never alive and never reused.  NULL: out of memory. */
TL__HIDDEN void *tl__stale_handle(tl_runtime *rt, int chan);
/* Why h is not a valid handle, in the error of the runtime it came from
 * when that can be told (errmsg starts with what); returns TL_EMISUSE. */
TL__HIDDEN int tl__bad_tasklet(const tl_tasklet *h, const char *what);
TL__HIDDEN int tl__bad_chan(const tl_chan *h, const char *what);
/* The reason alone, in buf, for an error delivered inside a tasklet. */
TL__HIDDEN const char *tl__tasklet_problem(const tl_tasklet *h, char *buf, size_t n);
TL__HIDDEN const char *tl__chan_problem(const tl_chan *h, char *buf, size_t n);
/* The words of both: slot is the handle's object (NULL for a NULL handle),
 * known whether it is one of that kind (alive or freed), reused whether a
 * newer object (#id) took its memory. */
TL__HIDDEN const char *tl__handle_problem(const char *kind, const char *retain, const void *slot,
                                          int known, int reused, uint64_t id, char *buf,
                                          size_t n);

/* ---- error.c ---- */
TL__HIDDEN int tl__seterr(tl_runtime *rt, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- registry.c ---- */
TL__HIDDEN tl__fn *tl__fn_find(tl_runtime *rt, const tl_func *fn);
TL__HIDDEN void tl__registry_free(tl_runtime *rt);
/* The resume point of e that format 1 numbered by source line `line`:
 * 1 and *pc set, or 0 if e has no line table or no point on that line. */
TL__HIDDEN int tl__v1_point(const tl__fn *e, uint32_t line, uint32_t *pc);
/* "3 points: 1 receive, 2 send, 3 sleep" for the n kind letters of a
 * shape, into buf (always terminated). */
TL__HIDDEN const char *tl__shape_describe(const char *shape, size_t n, char *buf, size_t cap);


/* ---- sched.c: layers ---- */
/* Puts ops and state in rt's slot; TL_EBUSY if another layer holds it. */
TL__HIDDEN int tl__layer_attach(tl_runtime *rt, int slot, const tl__layer_ops *ops,
                                void *state);
/* Empties the slot (its state is the caller's to free). */
TL__HIDDEN void tl__layer_detach(tl_runtime *rt, int slot);
/* Starts (on) or stops tracking changes: tl__mark into dmap, and the
 * layers' chan_gone.  Starting counts everything as changed. */
TL__HIDDEN void tl__track(tl_runtime *rt, int on);
/* Runs the layers' policy ops in slot order; the first error stops. */
TL__HIDDEN int tl__layers_policy(tl_runtime *rt, int idle);
static inline void *tl__layer_state(const tl_runtime *rt, int slot)
{
    return rt->layers[slot].state;
}
/* The node's slot: ops NULL while rt has no node. */
static inline const tl__layer *tl__node_layer(const tl_runtime *rt)
{
    return &rt->layers[TL__LAYER_NODE];
}

/* ---- tasklet.c ---- */
TL__HIDDEN tl__ext *tl__ext_get(tl_tasklet *t);
TL__HIDDEN void tl__deliver_error(tl_tasklet *t, int code, const char *msg);
TL__HIDDEN void tl__deliver_value(tl_tasklet *t, tl__vw v);
TL__HIDDEN tl_status tl__op_error(tl_frame *f, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
TL__HIDDEN void tl__tasklet_free_all(tl_runtime *rt);
/* Takes t (not running) out of the queue it waits in, or the run queue;
 * a blocked t keeps state TL_BLOCKED until the caller queues it. */
TL__HIDDEN void tl__detach(tl_tasklet *t);
TL__HIDDEN const char *tl__tasklet_label(const tl_tasklet *t, char *buf,
                                         size_t n);

/* ---- sched.c ---- */
static inline void tl__runq_push_back(tl_runtime *rt, tl_tasklet *t)
{
    t->state = TL_RUNNABLE;
    tl__list_push_back(&rt->runq, &t->w.link);
    rt->nrunnable++;
}
static inline void tl__runq_push_front(tl_runtime *rt, tl_tasklet *t)
{
    t->state = TL_RUNNABLE;
    tl__list_push_front(&rt->runq, &t->w.link);
    rt->nrunnable++;
}
static inline void tl__runq_remove(tl_runtime *rt, tl_tasklet *t)
{
    tl__list_unlink(&t->w.link);
    rt->nrunnable--;
}
/* Notes chunk k (tasklet id >> 8) as changed (see tl_runtime.dset). */
TL__HIDDEN void tl__mark_chunk(tl_runtime *rt, uint64_t k);
/* Notes that t changed (TL__TF_DIRTY) and so its chunk: on the dispatch
 * path, one store and one compare when it is the chunk marked last.
 * Every change to what a tasklet's record holds must mark that tasklet
 * itself (persist/split.c writes a chunk's unmarked tasklets nowhere). */
static inline void tl__mark(tl_runtime *rt, tl_tasklet *t)
{
    uint64_t k = t->id >> 8;
    t->flags |= TL__TF_DIRTY;
    if (k != rt->dlast)
        tl__mark_chunk(rt, k);
}
/* Whether chunk k is in the dirty set (not counting dmap_lost). */
TL__HIDDEN bool tl__dirty_has(const tl_runtime *rt, uint64_t k);
/* Empties the dirty set and clears dmap_lost. */
TL__HIDDEN void tl__dirty_clear(tl_runtime *rt);
/* Calls fn for every chunk key in the dirty set, in no order. */
TL__HIDDEN void tl__dirty_each(const tl_runtime *rt, void (*fn)(uint64_t k, void *ud), void *ud);
#define TL__DSET_MAX ((size_t)1 << 17) /* slots (1 MiB): 64 Ki chunks changed */
/* Tests and benchmarks only: the next tasklet and channel ids (at least
 * the current ones), to reach ids near 2^40 without creating them. */
TL__HIDDEN void tl__set_next_ids(tl_runtime *rt, uint64_t tid, uint64_t cid);

static inline void tl__block(tl_tasklet *t, int wait)
{
    t->state = TL_BLOCKED;
    t->wait = (uint8_t)wait;
    t->rt->nblocked++;
}
static inline void tl__wake(tl_tasklet *t)
{
    t->wait = TL_WAIT_NONE;
    t->rt->nblocked--;
    tl__runq_push_back(t->rt, t);
}
/* Stackless's switch to target: target (appended if not in the run
 * queue) goes first, cur (if not NULL) right after it, and the tasklets
 * that were ahead of target move behind cur (the run queue rotates). */
TL__HIDDEN void tl__switch_to(tl_runtime *rt, tl_tasklet *cur, tl_tasklet *target);
/* Host side, outside tasklets: t (runnable or detached) runs one step now. */
TL__HIDDEN void tl__run_now(tl_runtime *rt, tl_tasklet *t);
TL__HIDDEN int tl__timer_add(tl_runtime *rt, tl_tasklet *t, int64_t deadline);
TL__HIDDEN void tl__timer_remove(tl_runtime *rt, tl_tasklet *t);
TL__HIDDEN uint64_t tl__random(tl_runtime *rt);

/* Channel id was freed: tells the layers, while changes are tracked. */
TL__HIDDEN void tl__note_chan_gone(tl_runtime *rt, uint64_t id);
/* The layers' tasklet_note and queued ops (see tl__layer_ops), called
 * only while changes are tracked: off the hot paths otherwise. */
TL__HIDDEN void tl__note_tasklet_slow(tl_runtime *rt, tl_tasklet *t, int born);
TL__HIDDEN void tl__note_queued_slow(tl_runtime *rt, tl__waiter *w);
static inline void tl__note_tasklet(tl_runtime *rt, tl_tasklet *t, int born)
{
    if (__builtin_expect(rt->track, 0))
        tl__note_tasklet_slow(rt, t, born);
}
static inline void tl__note_queued(tl_runtime *rt, tl__waiter *w)
{
    if (__builtin_expect(rt->track, 0))
        tl__note_queued_slow(rt, w);
}
/* A new frame of e on top of t, locals zeroed (for the loader). */
TL__HIDDEN tl_frame *tl__frame_new(tl_runtime *rt, tl_tasklet *t, const tl__fn *e);
TL__HIDDEN void tl__runtime_reset(tl_runtime *rt);
/* Takes t (suspended, not running) out of the runtime without running its
 * cleanups: it lives on elsewhere.  It ends TL_KILLED with code (TL_EMOVED)
 * and msg; joiners get that error. */
TL__HIDDEN void tl__tasklet_depart(tl_tasklet *t, int code, const char *msg);
/* Frees a tasklet the loader built but never counted in the runtime. */
TL__HIDDEN void tl__tasklet_scrap(tl_tasklet *t);

/* ---- chan.c ---- */
/* Notes that ch changed since the last checkpoint: it joins rt->dchans,
 * so a checkpoint finds the changed channels without walking them all.
 * Once dirty, a mark costs one byte test (the channel hot paths; the
 * first mark is out of line, so the test is all the inliner sees); no
 * allocation (the link is in the channel). */
TL__HIDDEN void tl__chan_touch_first(tl_chan *ch) __attribute__((cold, noinline));
static inline void tl__chan_touch(tl_chan *ch)
{
    if (__builtin_expect(!ch->dirty, 0))
        tl__chan_touch_first(ch);
}
/* tl_chan_new for the library: *out gets the bare object. */
TL__HIDDEN int tl__chan_create(tl_runtime *rt, size_t capacity, tl_chan **out);
TL__HIDDEN void tl__chan_forget_waiter(tl_tasklet *t);
TL__HIDDEN void tl__chan_enqueue(tl_chan *ch, tl__waiter *w, int op);
/* A select block for t over cases, its waiters unlinked (for the loader). */
/* The index of f's TL_T_CASES field that starts at cases and holds n of
 * them; -1 if they lie in the locals but in no such field, -2 outside. */
TL__HIDDEN int tl__cases_field(const tl_frame *f, const tl_case *cases, int n);
TL__HIDDEN tl__sel *tl__sel_new(tl_runtime *rt, tl_tasklet *t, tl_case *cases, int n);
/* Frees every channel (their slots stay in the slab). */
TL__HIDDEN void tl__chan_free_all(tl_runtime *rt);
/* Links waiter t into proxy ch's queue (uncounted; t->w.on = ch; takes a
 * reference on ch). */
TL__HIDDEN void tl__proxy_enqueue(tl_chan *ch, tl_tasklet *t, int op);
/* The answer to t's request on a proxy: an error (code < 0), or for a
 * receive the value v (owned).  t becomes runnable. */
TL__HIDDEN void tl__remote_complete(tl_tasklet *t, int code, const char *msg, tl_value v);
/* Performs the rendezvous a queue holding both senders and receivers (or
 * a receiver and buffered values) allows: after a loader linked a waiter
 * into a channel that had partners waiting. */
TL__HIDDEN void tl__chan_rematch(tl_chan *ch);
/* Makes ch a proxy of node/id (or node/name); 0 or TL_ENOMEM. */
TL__HIDDEN int tl__chan_make_proxy(tl_chan *ch, const char *node, uint64_t id,
                                   const char *name);
TL__HIDDEN const char *tl__chan_label(const tl_chan *ch, char *buf, size_t n);


/* tasklet.c, for the tasklet operations of stackless.c */
TL__HIDDEN tl_tasklet *tl__tasklet_checked(const tl_tasklet *h, const char *what);
TL__HIDDEN tl_tasklet *tl__op_target(tl_frame *f, const tl_tasklet *h, const char *what);
TL__HIDDEN void tl__finish(tl_tasklet *t, int state, int err);
TL__HIDDEN void tl__frame_pop(tl_tasklet *t);
TL__HIDDEN void tl__set_errmsg(tl_tasklet *t, const char *msg);
/* stackless.c: a failure of another tasklet, delivered to main */
TL__HIDDEN void tl__main_deliver(tl_runtime *rt, const tl_tasklet *failed);

#endif /* TL_INTERNAL_H */
