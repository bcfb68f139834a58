/*
 * tasklet.h -- libtasklet: persistent, migratable tasklets for C.
 *
 * A tasklet is a lightweight thread whose call stack is a chain of heap
 * frames.  Each frame belongs to a registered *tasklet function*: a resumable
 * step function over a struct of locals, described by a schema of named,
 * typed fields.  Nothing of a suspended tasklet lives on the C stack, so the
 * whole runtime can later be written out by name (functions by name@version,
 * tasklets and channels by 64-bit id, resume points as small integers).
 *
 * Threading: a runtime and everything it owns (tasklets, channels, values)
 * is driven by one thread at a time.  Several runtimes may live in one
 * process, each on its own thread; there is no global mutable state.
 *
 * Errors: functions returning int return TL_OK (0) or a negative TL_E* code;
 * tl_errmsg() gives a message with detail for the last error of a runtime.
 *
 * Ownership: the name says who frees.  An object with one owner is made
 * by _new and ended by _free (tl_runtime_new / tl_runtime_free,
 * tl_node_new / tl_node_free, tl_snapshot_save / tl_snapshot_free); a store,
 * which holds a file, by _open / _close.  Reference-counted objects
 * (tasklets, channels, values) are made by a constructor that gives the
 * caller one reference (tl_chan_new, tl_spawn with a handle, tl_str_new,
 * ...); _retain adds one, _release drops one, and the last release frees:
 * tl_chan_new pairs with tl_chan_release, never with a _free.  Storage the
 * caller provides would pair _init / _destroy (the API has none).
 * tl_chan_close / tl_chan_open are Stackless's channel closing, not
 * ownership.  Each doc comment names its pair.
 *
 * Handles: a tl_tasklet * or tl_chan * is valid while a reference is held
 * (the caller's own, or the owner's for a borrowed one).  One kept after
 * its object was freed is stale: every function refuses it (TL_EMISUSE,
 * or the documented invalid-handle result of a getter) with the reason in
 * tl_errmsg of its runtime, even when a newer object took its memory
 * (64-bit x86 and ARM: the generation of the slot is part of the handle).
 * This holds until the runtime is freed, which invalidates every handle.
 */
#ifndef TASKLET_H
#define TASKLET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TL_API
#elif defined(__GNUC__)
#define TL_API __attribute__((visibility("default")))
#else
#define TL_API
#endif

/* ------------------------------------------------------------------------
 * Version
 * --------------------------------------------------------------------- */
#define TL_VERSION_MAJOR 0
#define TL_VERSION_MINOR 1
#define TL_VERSION_PATCH 0
#define TL_VERSION_STRING "0.1.0"
#define TL_VERSION_NUMBER \
    (TL_VERSION_MAJOR * 1000000 + TL_VERSION_MINOR * 1000 + TL_VERSION_PATCH)

/* The version of the library actually linked; compare with
 * TL_VERSION_NUMBER to detect a header/library mismatch. */
TL_API int tl_version_number(void);
TL_API const char *tl_version_string(void);

/* ------------------------------------------------------------------------
 * Errors: one table gives the codes, their names and their messages.
 * --------------------------------------------------------------------- */
#define TL_ERRNO_MAP(X)                                                      \
    X(ENOMEM, -1, "out of memory")                                           \
    X(EINVAL, -2, "invalid argument")                                        \
    X(EMISUSE, -3, "invalid or destroyed handle")                            \
    X(ECLOSED, -4, "channel closed")                                         \
    X(EDEADLOCK, -5, "deadlock: every tasklet is blocked and no timer is set") \
    X(EKILLED, -6, "tasklet killed")                                         \
    X(EDONE, -7, "tasklet already finished")                                 \
    X(ESELF, -8, "operation not allowed on the current tasklet")             \
    X(ENOFUNC, -9, "unknown tasklet function")                               \
    X(EEXIST, -10, "already exists")                                         \
    X(EBADPC, -11, "unknown resume point")                                   \
    X(ESTATE, -12, "tasklet is in the wrong state for this operation")       \
    X(EAGAIN, -13, "operation would block")                                  \
    X(ETYPE, -14, "wrong value type")                                        \
    X(EBUSY, -15, "runtime is busy running")                                 \
    X(ERANGE, -16, "value out of range")                                     \
    X(ESCHEMA, -17, "invalid locals schema")                                 \
    X(ENOTASKLET, -18, "not called from inside a tasklet")                   \
    X(ECORRUPT, -19, "snapshot or store is corrupt")                         \
    X(EFORMAT, -20, "unsupported snapshot or store format version")          \
    X(ESTORE, -21, "store (SQLite) error")                                   \
    X(ELOCKED, -22, "store is owned by another running process")             \
    X(ENOENT, -23, "not found")                                              \
    X(EIO, -24, "I/O error (disk full, read-only or failing)")               \
    X(ENOTEMPTY, -25, "runtime is not empty")                                \
    X(ENOTSUP, -26, "operation not supported")                               \
    X(ELINK, -27, "link to the peer node is down")                           \
    X(EMOVED, -28, "tasklet moved to another runtime")                       \
    X(EPROTO, -29, "protocol error from a peer")                             \
    X(EAUTH, -30, "peer failed authentication")                              \
    X(ENOTSTORE, -31, "not a libtasklet store (another file, or not a file)") \
    X(EPERM, -32, "permission denied")                                       \
    X(ETIMEDOUT, -33, "timed out")                                           \
    X(ECANCELED, -34, "cancelled")                                           \
    X(ESHAPE, -40, "a stored function's resume points differ from the program's") \
    X(EUSER, -100, "user error")

enum {
    TL_OK = 0,
#define TL__ERRDEF(name, code, msg) TL_##name = (code),
    TL_ERRNO_MAP(TL__ERRDEF)
#undef TL__ERRDEF
};

/* Codes at or below TL_EUSER are free for applications (tl_throw,
 * TL_FAIL, tl_error_value); tl_strerror() reports them as "user error". */

/* A static message for any code; never NULL. */
TL_API const char *tl_strerror(int code);
/* The symbolic name ("TL_ECLOSED") for a code, or "TL_EUSER". */
TL_API const char *tl_errname(int code);

/* ------------------------------------------------------------------------
 * Handles (opaque).  Lifetime and staleness: see the head of this file and
 * docs/API.md section 5.  Handles compare equal exactly when they name the
 * same object: every function that gives a handle to an object gives the
 * same pointer.
 * --------------------------------------------------------------------- */
typedef struct tl_runtime tl_runtime;
typedef struct tl_tasklet tl_tasklet;
typedef struct tl_chan tl_chan;
typedef struct tl_frame tl_frame;

/* ------------------------------------------------------------------------
 * Values: msgpack's data model plus references to channels and tasklets.
 *
 * A tl_value is a 16-byte struct passed by value.  Scalars (nil, bool,
 * integers, double) live inline and never allocate.  Strings, binaries,
 * arrays and maps are immutable, reference-counted buffers; channel and
 * tasklet values hold a reference.  Error values carry a code and an
 * optional message: a receiver that takes one gets the error delivered
 * (Stackless's send_exception).  Every value that owns something must be
 * released exactly once with tl_release() (nil-safe; scalars are no-ops).
 * --------------------------------------------------------------------- */
typedef enum tl_vtype {
    TL_V_NIL = 0,
    TL_V_BOOL,
    TL_V_INT,     /* int64_t  */
    TL_V_UINT,    /* uint64_t */
    TL_V_DOUBLE,
    TL_V_STR,
    TL_V_BIN,
    TL_V_ARRAY,
    TL_V_MAP,
    TL_V_CHAN,
    TL_V_TASKLET,
    TL_V_ERROR
} tl_vtype;

typedef struct tl_value {
    uint8_t type; /* tl_vtype */
    uint8_t reserved_[3];
    int32_t aux;  /* TL_V_ERROR: the error code */
    union {
        int64_t i;
        uint64_t u;
        double d;
        int b;
        void *p; /* library-owned object */
    } as;
} tl_value;

static inline tl_value tl_nil(void) { tl_value v = {0}; return v; }
static inline tl_value tl_bool(int b)
{ tl_value v = {0}; v.type = TL_V_BOOL; v.as.b = b != 0; return v; }
static inline tl_value tl_i64(int64_t i)
{ tl_value v = {0}; v.type = TL_V_INT; v.as.i = i; return v; }
static inline tl_value tl_u64(uint64_t u)
{ tl_value v = {0}; v.type = TL_V_UINT; v.as.u = u; return v; }
static inline tl_value tl_f64(double d)
{ tl_value v = {0}; v.type = TL_V_DOUBLE; v.as.d = d; return v; }

static inline tl_vtype tl_type(tl_value v) { return (tl_vtype)v.type; }
/* Scalar accessors: the value converted if it is a number (ints, uints and
 * doubles convert to each other with C semantics), else 0. */
TL_API int64_t tl_as_i64(tl_value v);
TL_API uint64_t tl_as_u64(tl_value v);
TL_API double tl_as_f64(tl_value v);
TL_API int tl_as_bool(tl_value v);

/* A new string or binary value holding a copy of n bytes of s.  The
 * result has one reference, owned by the caller.  TL_ENOMEM, TL_EINVAL. */
TL_API int tl_str_new(tl_runtime *rt, const char *s, size_t n, tl_value *out);
TL_API int tl_bin_new(tl_runtime *rt, const void *p, size_t n, tl_value *out);
/* The bytes of a string or binary (NUL-terminated for convenience), and
 * their length; NULL and 0 for other types.  Borrowed from v. */
TL_API const char *tl_str_data(tl_value v, size_t *len);
/* An array of n items, or a map of npairs key/value pairs (kv[2i] is a
 * key, kv[2i+1] its value).  Items are copied and retained: the caller
 * keeps its own references.  Keys should be unique.  TL_ENOMEM, TL_EINVAL. */
TL_API int tl_array_new(tl_runtime *rt, const tl_value *items, size_t n,
                        tl_value *out);
TL_API int tl_map_new(tl_runtime *rt, const tl_value *kv, size_t npairs,
                      tl_value *out);
/* Element count of a string/binary (bytes), array (items) or map (pairs);
 * 0 for other types. */
TL_API size_t tl_len(tl_value v);
/* Item i of an array; map key or value of pair i.  Borrowed; nil when out
 * of range or of the wrong type. */
TL_API tl_value tl_array_at(tl_value v, size_t i);
TL_API tl_value tl_map_key(tl_value v, size_t i);
TL_API tl_value tl_map_val(tl_value v, size_t i);
/* The value stored under key in a map (compared with tl_equal), borrowed;
 * returns 1 when found, 0 otherwise. */
TL_API int tl_map_get(tl_value map, tl_value key, tl_value *out);
/* Deep structural equality; channels and tasklets compare by identity. */
TL_API int tl_equal(tl_value a, tl_value b);

/* A value referring to a channel or tasklet; it holds one reference. */
TL_API tl_value tl_chan_value(tl_chan *ch);
TL_API tl_value tl_tasklet_value(tl_tasklet *t);
/* The channel or tasklet a value refers to (borrowed), or NULL. */
TL_API tl_chan *tl_as_chan(tl_value v);
TL_API tl_tasklet *tl_as_tasklet(tl_value v);
/* An error value: code (< 0) and an optional message (copied).  On
 * allocation failure the value still carries the code, without message. */
TL_API tl_value tl_error_value(tl_runtime *rt, int code, const char *msg);
/* The code and message (borrowed, may be NULL) of an error value. */
TL_API int tl_error_code(tl_value v);
TL_API const char *tl_error_msg(tl_value v);

TL_API void tl__retain_slow(tl_value v);
TL_API void tl__release_slow(tl_value v);
/* One more reference to v; returns v. */
static inline tl_value tl_retain(tl_value v)
{ if (v.type >= TL_V_STR) tl__retain_slow(v); return v; }
/* Drops the reference v owns.  Nil and scalars are no-ops. */
static inline void tl_release(tl_value v)
{ if (v.type >= TL_V_STR) tl__release_slow(v); }
/* Releases *dst, then moves v into it (v's reference passes to *dst). */
static inline void tl_value_set(tl_value *dst, tl_value v)
{ tl_value old = *dst; *dst = v; tl_release(old); }

/* ------------------------------------------------------------------------
 * Allocation: a pluggable allocator, in Lua's style.
 *
 * alloc(ud, ptr, osize, nsize): nsize == 0 frees ptr (of osize bytes) and
 * returns NULL; otherwise behaves like realloc and returns NULL on failure.
 * osize is the block's previous size, or 0 for a new block.
 * --------------------------------------------------------------------- */
typedef void *(*tl_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

/* Wall-clock time in nanoseconds since the Unix epoch. */
typedef int64_t (*tl_clock_fn)(void *ud);

/* Check mode (tl_config.check, or the environment variable
 * TL_CHECK=locals): every resumption behaves like a restart.  Before a step
 * function resumes, the C stack it will use is overwritten with 0xA5
 * bytes, and the frame about to run is written out through the snapshot
 * codec and read back (non-schema bytes come back zero), and
 * operations that would complete inline re-enter the function at its
 * resume point instead.  State kept in a C local or outside the schema
 * across a suspension then shows at the first resumption.  For tests: it
 * is slow (docs/PERFORMANCE.md). */
#define TL_CHECK_LOCALS 1

typedef struct tl_config {
    tl_alloc_fn alloc;   /* NULL: the C library's malloc/realloc/free */
    void *alloc_ud;
    tl_clock_fn clock;   /* NULL: clock_gettime(CLOCK_REALTIME) */
    void *clock_ud;
    int check;           /* TL_CHECK_LOCALS, or 0 (unless TL_CHECK=locals) */
} tl_config;

/* ------------------------------------------------------------------------
 * Runtime
 * --------------------------------------------------------------------- */

/* Creates a runtime.  cfg may be NULL for defaults; it is copied.
 * *out receives the runtime, owned by the caller (tl_runtime_free).
 * TL_ENOMEM, TL_EINVAL (out NULL). */
TL_API int tl_runtime_new(const tl_config *cfg, tl_runtime **out);

/* Kills every tasklet (running each frame's cleanup), then frees the
 * runtime and everything it owns.  Handles and values from it become
 * invalid (dangling: unlike stale handles in a live runtime they cannot be
 * checked).  Refused, the runtime left as it was, with TL_EBUSY while a
 * store is attached (tl_store_close it first) or a node wraps it
 * (tl_node_free first), or when called from inside tl_run; TL_EMISUSE on
 * an invalid handle.  NULL is a no-op (TL_OK).  Returns TL_OK once freed. */
TL_API int tl_runtime_free(tl_runtime *rt);

/* The code and message of the last error in this runtime.  The message
 * names what failed and, where it helps, what to do; it stays valid until
 * the next failing call on the runtime. */
TL_API int tl_errcode(const tl_runtime *rt);
TL_API const char *tl_errmsg(const tl_runtime *rt);

/* ------------------------------------------------------------------------
 * Tasklet functions: registered by name and version, with a schema.
 * --------------------------------------------------------------------- */

/* Status a step function returns to the scheduler.  Only ever produced by
 * the TL_ macros below; do not construct one by hand. */
typedef enum tl_status { TL__CONT = 0, TL__SWITCH = 1, TL__AGAIN = 2, TL__DONE = 3 } tl_status;

/* A step function: runs frame f from its current resume point until it
 * suspends, calls, returns or fails.  locals points to the frame's locals
 * struct (zeroed, then filled with the arguments, at frame creation). */
typedef tl_status (*tl_step_fn)(tl_frame *f, void *locals);

/* Field types of a locals schema.  The schema names the fields a
 * snapshot keeps; fields not in the schema are scratch space.
 * TL_T_VALUE, TL_T_CHAN and TL_T_TASKLET fields *own* a reference: the
 * frame releases them when it is popped (returned or unwound). */
typedef enum tl_ftype {
    TL_T_BOOL = 1,  /* bool / _Bool (1 byte) */
    TL_T_I32,       /* int32_t  */
    TL_T_I64,       /* int64_t  */
    TL_T_U32,       /* uint32_t */
    TL_T_U64,       /* uint64_t */
    TL_T_F64,       /* double   */
    TL_T_VALUE,     /* tl_value */
    TL_T_CHAN,      /* tl_chan *   (owns a reference) */
    TL_T_TASKLET,   /* tl_tasklet * (owns a reference) */
    TL_T_BYTES,     /* char/uint8_t array of any size, kept verbatim */
    TL_T_CASES      /* tl_case array for TL_SELECT (any count): a snapshot
                     * names it to restore a select that waits on it; its
                     * contents are scratch otherwise (rebuild the cases
                     * before each TL_SELECT) */
} tl_ftype;

typedef struct tl_field {
    const char *name;   /* stable name, used as the snapshot map key */
    uint16_t type;      /* tl_ftype */
    uint16_t size;      /* bytes; checked against the type */
    uint32_t offset;    /* offsetof in the locals struct */
} tl_field;

#define TL_FIELD(T, member, ftype) \
    { #member, (ftype), (uint16_t)sizeof(((T *)0)->member), \
      (uint32_t)offsetof(T, member) }
#define TL_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

/* Called for every frame popped (return, failure, kill, runtime free),
 * before the frame's owned references are released.  It must not
 * suspend; it may release resources held in the locals. */
typedef void (*tl_cleanup_fn)(tl_frame *f, void *locals);

/* A tasklet function's descriptor.  The program keeps it alive (static
 * storage) for as long as any runtime uses it. */
typedef struct tl_func {
    const char *name;         /* stable dotted name, e.g. "example.summer" */
    uint32_t version;         /* bump when resume points or locals change  */
    tl_step_fn step;
    size_t locals_size;       /* sizeof the locals struct (<= 64 KiB)      */
    const tl_field *fields;   /* the schema; may be NULL when nfields == 0 */
    size_t nfields;
    tl_cleanup_fn cleanup;    /* optional */
} tl_func;

/* Registers fn in rt, after checking its schema (field sizes match their
 * types, fields inside the struct and not overlapping, names unique).
 * TL_EEXIST if name@version is registered with another descriptor,
 * TL_ESCHEMA / TL_EINVAL on a bad descriptor, TL_ENOMEM. */
TL_API int tl_register(tl_runtime *rt, const tl_func *fn);

/* The descriptor registered as name@version, or NULL (errmsg set,
 * TL_ENOFUNC). */
TL_API const tl_func *tl_lookup(tl_runtime *rt, const char *name,
                                uint32_t version);

/* The shape of fn as tl_register read it from the step function: one
 * letter per resume point, in order (Y yield, S send, E send error,
 * R receive, C call, J join, T sleep, X select, M migrate); "" for a
 * function that never suspends.  Snapshots store it beside name@version
 * and a load refuses a frame whose function changed shape.  Borrowed,
 * valid while rt lives; NULL if fn is not registered in rt. */
TL_API const char *tl_func_shape(tl_runtime *rt, const tl_func *fn);

/* ------------------------------------------------------------------------
 * Tasklets
 * --------------------------------------------------------------------- */
typedef enum tl_state {
    TL_RUNNABLE = 1, /* in the run queue            */
    TL_RUNNING,      /* the current tasklet         */
    TL_BLOCKED,      /* waiting; see tl_wait_kind    */
    TL_DONE,         /* returned a value             */
    TL_FAILED,       /* an error unwound every frame */
    TL_KILLED        /* killed                       */
} tl_state;

typedef enum tl_wait {
    TL_WAIT_NONE = 0,
    TL_WAIT_SEND,
    TL_WAIT_RECV,
    TL_WAIT_SELECT,
    TL_WAIT_SLEEP,
    TL_WAIT_JOIN,
    TL_WAIT_MOVE,  /* between TL_MIGRATE and its departure (transient) */
    TL_WAIT_PAUSED, /* taken out of the run queue by tl_tasklet_remove */
    TL_WAIT_RUN     /* the main tasklet inside TL_RUN_SCHEDULER */
} tl_wait;

/* Creates a tasklet running fn, appended to the back of the run queue.
 * The first argsize bytes of fn's locals are copied from args (args may
 * be NULL when argsize is 0); the rest is zero.  References in schema
 * fields of type VALUE, CHAN and TASKLET within the copied bytes are
 * retained: the caller keeps its own.
 * If out is not NULL it receives a handle the caller owns and must drop
 * with tl_tasklet_release(); with out NULL the tasklet is detached and
 * reclaimed when it ends.
 * TL_ENOFUNC (fn not registered here), TL_EINVAL (argsize too big),
 * TL_ENOMEM. */
TL_API int tl_spawn(tl_runtime *rt, const tl_func *fn, const void *args,
                    size_t argsize, tl_tasklet **out);
/* The same, finding the function by registered name and version. */
TL_API int tl_spawn_by_name(tl_runtime *rt, const char *name,
                            uint32_t version, const void *args,
                            size_t argsize, tl_tasklet **out);

/* One more reference to t; returns t, or NULL (errmsg set) if t is not a
 * valid handle.  tl_tasklet_release drops one (the last frees an ended
 * tasklet); NULL and invalid handles are no-ops. */
TL_API tl_tasklet *tl_tasklet_retain(tl_tasklet *t);
TL_API void tl_tasklet_release(tl_tasklet *t);

/* The currently running tasklet (borrowed), or NULL outside a tasklet. */
TL_API tl_tasklet *tl_current(tl_runtime *rt);

/* Identity and status; on an invalid handle these return 0 / NULL. */
TL_API uint64_t tl_tasklet_id(const tl_tasklet *t);
TL_API tl_runtime *tl_tasklet_runtime(const tl_tasklet *t);
TL_API int tl_tasklet_state(const tl_tasklet *t);   /* tl_state, or <0 */
TL_API int tl_tasklet_wait(const tl_tasklet *t);    /* tl_wait          */
/* The function of the tasklet's top frame, or NULL once it has ended. */
TL_API const tl_func *tl_tasklet_func(const tl_tasklet *t);
/* Number of frames on the tasklet's heap stack. */
TL_API size_t tl_tasklet_depth(const tl_tasklet *t);
/* The code a failed or killed tasklet ended with, else TL_OK. */
TL_API int tl_tasklet_error(const tl_tasklet *t);
/* The message of the last error delivered to t (the one it failed with,
 * once it has failed), or "" if none.  Valid until the next error. */
TL_API const char *tl_tasklet_errmsg(const tl_tasklet *t);
/* A retained copy of a finished tasklet's return value (TL_ESTATE if it
 * has not returned). */
TL_API int tl_tasklet_result(tl_tasklet *t, tl_value *out);
/* A name for messages and tracing (copied; NULL clears). */
TL_API int tl_tasklet_set_name(tl_tasklet *t, const char *name);
TL_API const char *tl_tasklet_name(const tl_tasklet *t);
/* Opaque user data, never persisted. */
TL_API int tl_tasklet_set_userdata(tl_tasklet *t, void *ud);
TL_API void *tl_tasklet_userdata(const tl_tasklet *t);

/* Stackless's tasklet operations (docs/API.md section 8).
 *
 * Kill, throw and run *switch* to their target: the caller is suspended
 * while the target runs.  Inside a tasklet that is the suspending macros
 * TL_KILL, TL_THROW and TL_RUN below (the calling frame resumes after the
 * target has switched out, in Stackless's queue order); the functions
 * here are their host-side forms: called from outside tasklets, they run
 * the target now, for one scheduler step (until it blocks, yields or
 * ends), and return.  Called from inside a tasklet they return TL_EBUSY
 * (the caller cannot suspend: use the macro).
 *
 * tl_kill: TL_EKILLED is delivered at t's suspension point.  Unless a
 * frame catches it (tl_frame_catch), it unwinds t frame by frame, each
 * cleanup running, and t ends TL_KILLED; a frame that catches it goes on
 * (it may block again).  A tasklet that has not started yet is unwound at
 * once, running none of its code.  Killing an ended tasklet does nothing
 * (TL_OK).  TL_EBUSY, TL_EMISUSE. */
TL_API int tl_kill(tl_tasklet *t);

/* The old, immediate kill: t leaves whatever queue it is in and every
 * frame is popped at once (each cleanup runs) without t's code running
 * again; it cannot be caught.  t ends TL_KILLED, joiners get TL_EKILLED.
 * Callable anywhere except on the running tasklet (TL_ESELF); TL_EDONE if t
 * already ended, TL_EMISUSE.  For teardown (tl_runtime_free uses it) and
 * for hosts that must not run tasklet code at this point. */
TL_API int tl_kill_now(tl_tasklet *t);

/* tl_throw: the error code (< 0; msg optional, copied) is delivered at
 * t's suspension point and t runs now.  Unless a frame catches it, it
 * unwinds t; a tasklet whose last frame unwinds ends TL_FAILED (and in
 * main-tasklet mode the error goes on to the main tasklet, see
 * tl_set_main).  A tasklet that has not started yet fails at once.
 * TL_EDONE (throw to an ended tasklet), TL_EINVAL (code >= 0), TL_EBUSY,
 * TL_EMISUSE. */
TL_API int tl_throw(tl_tasklet *t, int code, const char *msg);

/* tl_throw(..., pending=True): delivers the error but does not switch:
 * a blocked or removed t is appended to the run queue, a runnable t keeps
 * its place.  Usable anywhere, also inside tasklets on other tasklets.
 * TL_ESELF (on the running tasklet: use TL_THROW or TL_FAIL), TL_EDONE,
 * TL_EINVAL, TL_EMISUSE. */
TL_API int tl_throw_pending(tl_tasklet *t, int code, const char *msg);

/* tasklet.run(): switches to t now (host side: runs it for one step).
 * TL_ESTATE if t is blocked, TL_EDONE if it ended, TL_EBUSY, TL_EMISUSE.
 * A removed (paused) t is allowed and becomes runnable. */
TL_API int tl_tasklet_run(tl_tasklet *t);
/* tasklet.remove(): takes a runnable t out of the run queue; it stays
 * alive, TL_BLOCKED with wait TL_WAIT_PAUSED, until tl_tasklet_insert,
 * tl_tasklet_run, a kill or a throw.  No-op on a paused or ended t.
 * TL_ESTATE (t is blocked), TL_ESELF (t is running), TL_EMISUSE. */
TL_API int tl_tasklet_remove(tl_tasklet *t);
/* tasklet.insert(): appends a paused t to the run queue; no-op if it is
 * runnable or running.  TL_ESTATE (blocked), TL_EDONE (ended), TL_EMISUSE. */
TL_API int tl_tasklet_insert(tl_tasklet *t);

/* Main-tasklet mode (off by default: the host drives the scheduler).
 * tl_set_main(rt, t) makes live tasklet t play Stackless's main tasklet;
 * NULL ends the mode (so does main ending).  In this mode:
 * - main may call TL_RUN_SCHEDULER: it waits until nothing else is
 *   runnable, then resumes;
 * - a tasklet ending TL_FAILED (any code but TL_EKILLED) has its error
 *   delivered to main, which runs next (from TL_RUN_SCHEDULER, or from
 *   wherever main is suspended);
 * - when the run queue drains, no timer is pending and main is not inside
 *   TL_RUN_SCHEDULER: a tasklet that has just blocked gets TL_EDEADLOCK
 *   delivered instead of blocking; if the last tasklet ended instead,
 *   a blocked main gets it;
 * - when main returns from TL_RUN_SCHEDULER because the last runnable
 *   tasklet blocked sending an error value (TL_SEND_ERROR), main gets that
 *   error.
 * The host still calls tl_run / tl_run_steps.  TL_EDONE (t ended),
 * TL_EMISUSE. */
TL_API int tl_set_main(tl_runtime *rt, tl_tasklet *t);
/* The main tasklet (borrowed), or NULL in host-driven mode. */
TL_API tl_tasklet *tl_main(const tl_runtime *rt);

/* ------------------------------------------------------------------------
 * Inside a tasklet function
 * --------------------------------------------------------------------- */
TL_API tl_tasklet *tl_frame_tasklet(const tl_frame *f);
TL_API tl_runtime *tl_frame_runtime(const tl_frame *f);
TL_API const tl_func *tl_frame_func(const tl_frame *f);
/* With on != 0, errors delivered to this frame (thrown, killed,
 * received, or a failing callee) do not unwind it: the macro resumes
 * normally and tl_frame_error() returns the code (and clears it).
 * tl_kill_now is never caught. */
TL_API void tl_frame_catch(tl_frame *f, int on);
TL_API int tl_frame_error(tl_frame *f);
/* The message that came with the error last delivered to this tasklet
 * (valid until the next error), or "". */
TL_API const char *tl_frame_errmsg(const tl_frame *f);

/* ------------------------------------------------------------------------
 * Scheduler
 * --------------------------------------------------------------------- */

/* Runs tasklets until none is runnable and no timer is pending, sleeping
 * until the next deadline when only timers remain.  Returns TL_OK when
 * every tasklet has ended; TL_EDEADLOCK (errmsg names the blocked
 * tasklets) when some are blocked with nothing left to wake them; the
 * error code of a detached tasklet that failed (run again to go on);
 * TL_EBUSY when called from inside a tasklet. */
TL_API int tl_run(tl_runtime *rt);

/* The watchdog: runs at most max_steps scheduler steps (resumptions of a
 * tasklet) without ever sleeping, and returns.  *steps (if not NULL)
 * receives how many ran.  Timers whose deadline passed are fired first.
 * Returns TL_OK, or a failed detached tasklet's code; does not report
 * deadlock (see tl_run, tl_runnable_count, tl_next_deadline). */
TL_API int tl_run_steps(tl_runtime *rt, uint64_t max_steps, uint64_t *steps);

TL_API size_t tl_runnable_count(const tl_runtime *rt);
TL_API size_t tl_blocked_count(const tl_runtime *rt);
/* Live tasklets (not ended). */
TL_API size_t tl_tasklet_count(const tl_runtime *rt);
/* The earliest timer deadline (ns, wall clock) in *deadline; returns 1 if
 * there is one, 0 if none. */
TL_API int tl_next_deadline(const tl_runtime *rt, int64_t *deadline);
/* The runtime's wall clock (ns since the epoch). */
TL_API int64_t tl_now(const tl_runtime *rt);

/* Tracing: called at each switch from prev to next.  prev is NULL when the
 * scheduler starts from idle or when the previous tasklet has just ended
 * (it may be freed); next is NULL when the scheduler goes idle after a
 * tasklet that is still alive. */
typedef void (*tl_schedule_cb)(void *ud, tl_tasklet *prev, tl_tasklet *next);
/* Called on each channel operation: t sends (sending=1) or receives on
 * ch; will_block says whether it is about to block. */
typedef void (*tl_channel_cb)(void *ud, tl_chan *ch, tl_tasklet *t,
                              int sending, int will_block);
TL_API void tl_set_schedule_callback(tl_runtime *rt, tl_schedule_cb cb,
                                     void *ud);
TL_API void tl_set_channel_callback(tl_runtime *rt, tl_channel_cb cb,
                                    void *ud);

/* ------------------------------------------------------------------------
 * Channels (Stackless semantics)
 * --------------------------------------------------------------------- */

/* Creates a channel.  capacity 0 is a synchronous rendezvous channel;
 * capacity N > 0 buffers up to N values.  The caller owns one reference
 * (tl_chan_release).  TL_ENOMEM, TL_EINVAL. */
TL_API int tl_chan_new(tl_runtime *rt, size_t capacity, tl_chan **out);
/* One more reference to ch; returns ch, or NULL (errmsg set) if ch is not
 * a valid handle.  tl_chan_release drops one; the last frees the channel
 * (a channel is also held by its waiters, and while pinned).  NULL and
 * invalid handles are no-ops. */
TL_API tl_chan *tl_chan_retain(tl_chan *ch);
TL_API void tl_chan_release(tl_chan *ch);

TL_API uint64_t tl_chan_id(const tl_chan *ch);
TL_API int tl_chan_set_name(tl_chan *ch, const char *name);
TL_API const char *tl_chan_name(const tl_chan *ch);
TL_API size_t tl_chan_capacity(const tl_chan *ch);
/* Values waiting in a buffered channel's buffer. */
TL_API size_t tl_chan_count(const tl_chan *ch);
/* Waiting senders minus waiting receivers (Stackless's balance). */
TL_API int tl_chan_balance(const tl_chan *ch);

/* Who runs right after a rendezvous: -1 the receiver (default), 1 the
 * sender, 0 neither (the woken side goes to the back of the run queue and
 * the current tasklet continues).  As in Stackless, any value counts by
 * its sign (5 is 1, -7 is -1). */
TL_API int tl_chan_set_preference(tl_chan *ch, int pref);
TL_API int tl_chan_preference(const tl_chan *ch);
/* With on != 0, every rendezvous reschedules: the woken side and then the
 * current tasklet go to the back of the run queue. */
TL_API int tl_chan_set_schedule_all(tl_chan *ch, int on);
TL_API int tl_chan_schedule_all(const tl_chan *ch);

/* Close: a closing channel refuses any operation that would block
 * (TL_ECLOSED) but completes those that can; it is closed once no
 * tasklet waits on it and its buffer is empty.  open() undoes close().
 * As in Stackless, tasklets already blocked on it stay blocked: to end a
 * stream, close and then wake them with tl_chan_fail_waiters(ch,
 * TL_ECLOSED, ...). */
TL_API int tl_chan_close(tl_chan *ch);
TL_API int tl_chan_open(tl_chan *ch);
TL_API int tl_chan_closing(const tl_chan *ch);
TL_API int tl_chan_closed(const tl_chan *ch);

/* Non-blocking operations, usable from outside tasklets (the host
 * program) as well as inside.  try_send sends a retained copy of v (the
 * caller keeps its reference); try_recv gives the caller a reference.
 * A woken tasklet is appended to the run queue.
 * TL_EAGAIN if it would block, TL_ECLOSED, TL_EMISUSE. */
TL_API int tl_chan_try_send(tl_chan *ch, tl_value v);
TL_API int tl_chan_try_recv(tl_chan *ch, tl_value *out);

/* Wakes every waiting tasklet with err (< 0) delivered at its
 * suspension point (used to tear a channel down). */
TL_API int tl_chan_fail_waiters(tl_chan *ch, int err, const char *msg);

/* Pins ch (on != 0): the runtime itself holds it until unpinned, and
 * snapshots and checkpoints keep it even when no tasklet refers to it, so a
 * channel that other nodes address by name or id survives a restart.  A
 * tasklet moving to another node pins the channels it leaves behind. */
TL_API int tl_chan_pin(tl_chan *ch, int on);
TL_API int tl_chan_pinned(const tl_chan *ch);
/* Whether ch is a remote reference (a channel whose home is another node;
 * see tasklet_node.h).  Its home node and id there, if asked for. */
TL_API int tl_chan_remote(const tl_chan *ch, const char **node, uint64_t *id);

/* A select case: send value on ch, or receive from ch. */
enum { TL_OP_SEND = 1, TL_OP_RECV = 2 };
typedef struct tl_case {
    tl_chan *ch;
    int op;          /* TL_OP_SEND or TL_OP_RECV */
    tl_value value;  /* TL_OP_SEND: the value (a retained copy is sent) */
} tl_case;
/* Most cases a select may wait on. */
#define TL_SELECT_MAX 64

/* ------------------------------------------------------------------------
 * Snapshots: the whole runtime as msgpack records (docs/FORMAT.md)
 * --------------------------------------------------------------------- */
/* Snapshots written by this library are format 2; it reads 1 and 2
 * (docs/FORMAT.md).  Format 1 numbered resume points by source line: see
 * tl_register_v1_lines. */
#define TL_FORMAT_VERSION 2

/* The node id written into snapshots (copied; 1 to 63 bytes). */
TL_API int tl_set_node_id(tl_runtime *rt, const char *node);
TL_API const char *tl_node_id(const tl_runtime *rt);

/* Encodes every tasklet (frames, locals, what it waits on), channel
 * (queues, buffers), timer and id counter into a new buffer: *buf (free it
 * with tl_snapshot_free) of *len bytes.  Deterministic.  Must be called
 * between scheduler steps.  References the program holds (handles) are not
 * saved: after a load, everything is held only by the runtime.
 * TL_EBUSY (inside a tasklet), TL_ESTATE (a select whose cases do not lie
 * in the frame's locals), TL_ERANGE (a value nested deeper than 16),
 * TL_ENOMEM. */
TL_API int tl_snapshot_save(tl_runtime *rt, void **buf, size_t *len);
/* The same for tasklet t and everything it references, transitively: the
 * channels and tasklets named in its frames, values, and what it waits
 * on, with the values buffered in those channels.  Other tasklets waiting
 * on those channels, or joining t, are left out (the loaded channels'
 * queues hold only what was saved).  Free with tl_snapshot_free(rt of t). */
TL_API int tl_snapshot_save_tasklet(tl_tasklet *t, void **buf, size_t *len);
TL_API void tl_snapshot_free(tl_runtime *rt, void *buf, size_t len);

/* Loads a snapshot into rt, which must hold no tasklets and no channels
 * (TL_ENOTEMPTY) and must have registered every function the snapshot
 * needs, or an upgrade for it.  Locals are matched by field name: a field
 * the snapshot lacks is zero, a field the program lacks is ignored, a field
 * whose type changed is an error.  All or nothing: on error rt is left
 * empty.  Objects nothing refers to (ended tasklets, channels no tasklet
 * holds) are not restored.  TL_ECORRUPT (bad bytes, dangling ids),
 * TL_EFORMAT (newer format), TL_ENOFUNC (names the missing name@version),
 * TL_ESCHEMA (a field changed type), TL_ESHAPE (a function of the same
 * name and version whose shape, tl_func_shape, is not the snapshot's: the
 * message names both and the fix), TL_EBADPC (a format-1 frame whose line
 * the program did not map, tl_register_v1_lines, or an upgrade giving a
 * resume point the new function lacks), TL_ENOMEM. */
TL_API int tl_snapshot_load(tl_runtime *rt, const void *buf, size_t len);

/* The tasklet or channel with this id (borrowed), or NULL (TL_ENOENT). */
TL_API tl_tasklet *tl_tasklet_find(tl_runtime *rt, uint64_t id);
TL_API tl_chan *tl_chan_find(tl_runtime *rt, uint64_t id);
TL_API tl_chan *tl_chan_find_name(tl_runtime *rt, const char *name);

/* Code evolution.  A snapshot frame of name@old_version, which the program
 * no longer registers, is loaded as a frame of `to` (registered): fields of
 * the same name and type are copied, then fn maps the rest.  old_locals is
 * a map (field name string -> value, borrowed) of the old frame's locals;
 * fn sets *new_pc to the resume point in `to` and may fill new_locals
 * (retaining any reference it stores there).  A non-zero return aborts the
 * load with that code. */
typedef int (*tl_upgrade_fn)(void *ud, uint32_t old_pc, tl_value old_locals,
                             void *new_locals, uint32_t *new_pc);
TL_API int tl_register_upgrade(tl_runtime *rt, const char *name,
                               uint32_t old_version, const tl_func *to,
                               tl_upgrade_fn fn, void *ud);

/* Format-1 snapshots (libtasklet 0.1.0) numbered a frame's resume point
 * by the source line of its suspending macro.  To load such a frame of fn
 * (registered) where it stopped, give the lines that fn's suspending
 * macros had in the build that wrote it, in order: lines[k - 1] becomes
 * resume point k, so n must equal the number of resume points of fn.  A
 * frame of an upgraded function gets its line as old_pc instead.
 * Without this call, a format-1 frame of fn past its start fails to load
 * with TL_EBADPC naming fn and this function.  TL_ENOFUNC (fn not
 * registered), TL_EINVAL (n differs, a line is 0 or repeats), TL_ENOMEM. */
TL_API int tl_register_v1_lines(tl_runtime *rt, const tl_func *fn,
                                const uint32_t *lines, size_t n);

/* ------------------------------------------------------------------------
 * The store: checkpoints, restore after a crash (docs/FORMAT.md; SQLite)
 * --------------------------------------------------------------------- */
typedef struct tl_store tl_store;

enum {
    TL_STORE_READONLY = 1, /* inspect only: never writes, takes no ownership */
    TL_STORE_NOSYNC = 2,   /* no fsync at commit: a power loss may lose the
                            * last checkpoints (a process crash still cannot) */
    TL_STORE_GROUP_READ = 4 /* a new store file (and its -wal, -shm, -lock) is
                            * created mode 0640 instead of 0600, so that the
                            * file's group can read it (tasklet ls, backup) */
};

/* Opens (creating if needed, unless read-only) the store at path.  *out is
 * set even on failure, so that tl_store_errmsg can say why; close it with
 * tl_store_close.  A new store is created mode 0600 (TL_STORE_GROUP_READ:
 * 0640); SQLite gives its -wal and -shm files the same mode.  The file is
 * identified before anything is written to it: a file that is not ours is
 * never modified.  TL_ENOTSTORE (a directory, FIFO or device, a non-empty
 * file that is not SQLite, or another application's SQLite file),
 * TL_EPERM (no permission to open it), TL_EFORMAT (a newer store
 * version), TL_EIO (cannot open or create the file, or WAL mode cannot be
 * enabled there), TL_ENOENT (read-only and no store there), TL_ENOTSUP (a
 * postgresql:// location: no such backend in this build), TL_ESTORE (any
 * other SQLite failure).  A postgresql:// (or postgres://) URL opens the
 * store in the connection's current schema on that server instead
 * (docs/API.md, "The store on PostgreSQL": TL_EINVAL for a bad URL, TL_EIO
 * when it cannot connect).  The tl_store_ functions below return TL_EMISUSE
 * for a handle that is not a store (closed, or another object) or whose
 * open failed. */
TL_API int tl_store_open(const char *path, int flags, tl_store **out);
/* Takes a final checkpoint if the policy asks for one on close, releases
 * ownership and closes.  Returns that checkpoint's result.  NULL-safe;
 * TL_EMISUSE (and nothing done) for a handle that is not a store. */
TL_API int tl_store_close(tl_store *st);
TL_API int tl_store_errcode(const tl_store *st);
TL_API const char *tl_store_errmsg(const tl_store *st);

/* Makes st the store of rt: st takes ownership of the file, held by an
 * OS lock (flock on the side file path + "-lock") that dies with the
 * process that holds it, whatever its host name or pid; the owner row
 * (pid, host) only reports who owns it.  A store owned by another open
 * handle -- in another process, or another tl_store in this one -- is
 * refused with TL_ELOCKED naming the owner row; a store whose owner is gone
 * (killed, another host name, a reused pid) is taken over.  A child forked
 * (without exec) while the store is attached shares the lock until it
 * exits.  Stores must live on a local file system (flock over NFS is not
 * reliable).  One runtime per store, one store per runtime.  Close the
 * store before freeing the runtime (tl_runtime_free refuses, TL_EBUSY,
 * while a store is attached). */
TL_API int tl_store_attach(tl_store *st, tl_runtime *rt);

/* Loads the latest checkpoint into the attached, empty runtime (the
 * functions must be registered first).  TL_ENOENT if there is none yet;
 * the errors of tl_snapshot_load otherwise. */
TL_API int tl_store_restore(tl_store *st);

/* Loads checkpoint `at` (0: the newest) into the attached, empty runtime;
 * *restored (if not NULL) gets the id loaded.  TL_ENOENT if there is no
 * such checkpoint.  With TL_RESTORE_FALLBACK, when that checkpoint does not
 * load (a damaged record: TL_ECORRUPT, an unknown function...), the next
 * older checkpoint is tried, and so on: never silently -- *restored says
 * which one loaded and tl_store_errmsg names the newer one that failed and
 * why (its record), also on success.  Without the flag the error names the
 * damaged checkpoint and record, as tl_store_restore does.  After loading
 * a checkpoint older than the newest, the next checkpoint is written whole
 * and becomes the newest; the newer ones stay in the store until retention
 * or `tasklet prune` removes them (`tasklet rollback DB --to N` makes N
 * the newest for good). */
#define TL_RESTORE_FALLBACK 1
TL_API int tl_store_restore_at(tl_store *st, int64_t at, int flags, int64_t *restored);

/* Writes a checkpoint of the attached runtime in one transaction: only the
 * chunks that changed since the last one (all of them the first time).
 * On failure (TL_EIO: disk full or read-only, TL_ESTORE) nothing is
 * written, the previous checkpoint stays whole and the next call retries.
 * Must be called between scheduler steps (TL_EBUSY otherwise). */
TL_API int tl_store_checkpoint(tl_store *st);

/* The id of the latest checkpoint (0 if none). */
TL_API int64_t tl_store_last_checkpoint(const tl_store *st);

/* Renews ownership without writing a checkpoint: one empty transaction
 * fenced by this handle's claim, which (PostgreSQL) extends its lease, as
 * every checkpoint does.  Call it more often than the lease (30 s) while
 * a long step runs.  TL_ELOCKED when the store was claimed again since
 * (the lease ran out and another process took it over: stop working on
 * it), TL_EINVAL (no runtime attached), TL_EIO, TL_EMISUSE. */
TL_API int tl_store_renew(tl_store *st);

/* Waiting for work, PostgreSQL only (docs/API.md, "Many workers"): a
 * listener is a connection LISTENing on the database of location for
 * what other processes announce when they commit -- a store released (its
 * owner closed it: "store SCHEMA") or a mailbox row added ("mail NODE").
 * Listen first, then look for work, then wait, and nothing is missed.
 * tl_store_listen sets *out even on failure (tl_store_listener_errmsg says
 * why; free it): TL_ENOTSUP (not a postgresql:// location, or no
 * PostgreSQL in this build), TL_EINVAL (a bad URL), TL_EIO (cannot
 * connect), TL_ENOMEM. */
typedef struct tl_store_listener tl_store_listener;
TL_API int tl_store_listen(const char *location, tl_store_listener **out);
/* Waits up to timeout_ms for an announcement: TL_OK when one (or more)
 * came, the first one's text copied into what (n bytes, may be NULL); also
 * TL_OK after the connection was lost and made again (announcements may
 * have been missed meanwhile: look again); TL_ETIMEDOUT; TL_EIO (the
 * server cannot be reached); TL_EMISUSE. */
TL_API int tl_store_listener_wait(tl_store_listener *l, int64_t timeout_ms, char *what,
                                  size_t n);
TL_API const char *tl_store_listener_errmsg(const tl_store_listener *l);
/* NULL-safe. */
TL_API void tl_store_listener_free(tl_store_listener *l);

/* Checkpoint policy: when the scheduler checkpoints on its own.  Failures
 * make tl_run / tl_run_steps return the error. */
typedef struct tl_policy {
    uint64_t every_steps; /* after this many scheduler steps (0: off)    */
    uint64_t every_ms;    /* when this many ms passed since the last (0: off) */
    int on_idle;          /* when nothing is runnable (before sleeping or
                           * returning from tl_run)                       */
    int on_close;         /* in tl_store_close                           */
    int64_t keep;         /* retention: the newest checkpoints kept; older
                           * ones are pruned as checkpoints are written, in
                           * their transactions, and their space given back
                           * bit by bit.  0: TL_KEEP_DEFAULT; TL_KEEP_ALL:
                           * keep every checkpoint (until tasklet prune)  */
} tl_policy;
#define TL_KEEP_DEFAULT 16 /* also without tl_store_set_policy */
#define TL_KEEP_ALL (-1)
TL_API int tl_store_set_policy(tl_store *st, const tl_policy *p);

/* Handover through the store's mailbox: a job moves to whichever process
 * next takes it, with no socket.
 *
 * tl_store_export moves suspended tasklet t (runnable, or blocked in a
 * send, receive or sleep) out of its runtime into the mailbox, addressed to
 * node `to`, in one transaction with a checkpoint of the runtime without
 * it: st must be the store attached to t's runtime.  Its channels stay
 * behind (pinned) and become remote channels at the destination.  The
 * handle t then reads TL_KILLED with TL_EMOVED.  On failure nothing was
 * written and the tasklet is back in the runtime under a new id.
 *
 * tl_store_import takes every tasklet addressed to rt's node id (see
 * tl_set_node_id) out of the mailbox into rt, in one transaction: when st
 * is rt's attached store, the same transaction as a checkpoint holding
 * them; when rt has no store, a transaction on st alone (the tasklets then
 * live only in memory).  All or nothing; *count gets how many came. */
TL_API int tl_store_export(tl_store *st, tl_tasklet *t, const char *to);
TL_API int tl_store_import(tl_store *st, tl_runtime *rt, size_t *count);

/* ------------------------------------------------------------------------
 * Internal entry points behind the macros.  Not part of the API: their
 * names and signatures may change; use the macros.
 * --------------------------------------------------------------------- */
struct tl__frame_head {
    uint32_t pc;     /* resume point; 0 = not started */
    uint32_t flags;  /* TL__F_* */
};
#define TL__F_ERR 1u /* an error is pending for this frame */
#define TL__HEAD(f) ((struct tl__frame_head *)(void *)(f))

TL_API tl_status tl__yield(tl_frame *f);
TL_API tl_status tl__send_w(tl_frame *f, tl_chan *ch, uint64_t head, uint64_t bits);
TL_API tl_status tl__send_error(tl_frame *f, tl_chan *ch, int code,
                                const char *msg);
TL_API tl_status tl__recv(tl_frame *f, tl_chan *ch);
TL_API tl_status tl__select(tl_frame *f, tl_case *cases, int n);
TL_API tl_status tl__move(tl_frame *f, const char *node);
TL_API tl_status tl__call(tl_frame *f, const tl_func *fn, const void *args,
                          size_t argsize);
/* tl__call and tl__recv that, when they complete at once with a value
 * and no error, store it in *dst (its old value released) and return
 * TL__DONE instead of leaving it for tl__take. */
TL_API tl_status tl__call_into(tl_frame *f, const tl_func *fn, const void *args,
                               size_t argsize, tl_value *dst);
TL_API tl_status tl__recv_into(tl_frame *f, tl_chan *ch, tl_value *dst);
TL_API tl_status tl__join(tl_frame *f, tl_tasklet *t);
TL_API tl_status tl__kill(tl_frame *f, tl_tasklet *t);
TL_API tl_status tl__throw(tl_frame *f, tl_tasklet *t, int code, const char *msg);
TL_API tl_status tl__run(tl_frame *f, tl_tasklet *t);
TL_API tl_status tl__run_scheduler(tl_frame *f);
TL_API tl_status tl__sleep_until(tl_frame *f, int64_t deadline_ns);
TL_API tl_status tl__return_w(tl_frame *f, uint64_t head, uint64_t bits);
/* A value crosses into the library as two words: GCC copies a by-value
 * tl_value through memory in a way that stalls store forwarding. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
static inline uint64_t tl__head(tl_value v)
{ return (uint64_t)v.type << 56 | (uint64_t)(uint32_t)v.aux; }
#else
static inline uint64_t tl__head(tl_value v)
{ return (uint64_t)v.type | (uint64_t)(uint32_t)v.aux << 32; }
#endif
static inline tl_status tl__send(tl_frame *f, tl_chan *ch, tl_value v)
{ return tl__send_w(f, ch, tl__head(v), v.as.u); }
static inline tl_status tl__return(tl_frame *f, tl_value v)
{ return tl__return_w(f, tl__head(v), v.as.u); }
TL_API tl_status tl__fail(tl_frame *f, int code, const char *msg);
TL_API tl_status tl__unwind(tl_frame *f);
TL_API tl_status tl__bad_pc(tl_frame *f);
TL_API tl_value tl__take(tl_frame *f);
TL_API int tl__selected(tl_frame *f);

/* Resume points.  TL_BEGIN takes a base from __COUNTER__; each
 * suspending macro takes the next value, so the points of a function are
 * numbered 1, 2, 3... in source order, whatever lies outside the function
 * (docs/ARCHITECTURE.md, "Resume points").  Each point also answers a
 * probe (pc TL__PROBE + its number) with its kind, and TL_END answers
 * TL__PROBE with the number of points: tl_register reads the function's
 * shape this way, without running any of its code. */
#define TL__PROBE 0x80000000u
#define TL__F_PROBE 4u /* a probe frame (tl_register), not a tasklet's */
enum {
    TL__K_YIELD = 'Y', TL__K_SEND = 'S', TL__K_SEND_ERROR = 'E',
    TL__K_RECV = 'R', TL__K_CALL = 'C', TL__K_JOIN = 'J', TL__K_SLEEP = 'T',
    TL__K_SELECT = 'X', TL__K_MIGRATE = 'M', TL__K_KILL = 'K', TL__K_THROW = 'H',
    TL__K_RUN = 'N', TL__K_RUN_SCHEDULER = 'Z'
};
/* 0 here; 1 between TL_BEGIN and TL_END, which shadows it, so that a
 * misplaced macro fails with a message naming the rule. */
enum { tl__in_body = 0 };
#if defined(__GNUC__)
#define TL__SHADOW_OK_BEGIN                                          \
    _Pragma("GCC diagnostic push")                                   \
    _Pragma("GCC diagnostic ignored \"-Wshadow\"")
#define TL__SHADOW_OK_END _Pragma("GCC diagnostic pop")
#else
#define TL__SHADOW_OK_BEGIN
#define TL__SHADOW_OK_END
#endif
#define TL__INSIDE(name)                                                      \
    _Static_assert(tl__in_body, #name " must be used between TL_BEGIN and TL_END")

#define TL__AWAIT(f, op, after, kind, name) \
    TL__AWAIT_AT(f, op, after, kind, name, __COUNTER__)
#define TL__AWAIT_AT(f, op, after, kind, name, n)                  \
    do {                                                           \
        TL__INSIDE(name);                                          \
        TL__HEAD(f)->pc = (uint32_t)((n) - tl__base);              \
        if (0) {                                                   \
        case TL__PROBE + (n) - tl__base:                           \
            TL__HEAD(f)->pc = (kind);                              \
            return TL__DONE;                                       \
        }                                                          \
        {                                                          \
            tl_status tl__s = (op);                                \
            if (tl__s != TL__CONT) return tl__s;                   \
        }                                                          \
        /* FALLTHROUGH */                                          \
        case (n) - tl__base:                                       \
        if (TL__HEAD(f)->flags & TL__F_ERR) return tl__unwind(f); \
        after;                                                     \
    } while (0)
/* The same for an op that may store its value in dst itself (TL__DONE)
 * rather than leave it to be taken.  dst is evaluated by the op and, if it
 * suspended, again at the resume point. */
#define TL__AWAIT_INTO(f, op, dst, kind, name) \
    TL__AWAIT_INTO_AT(f, op, dst, kind, name, __COUNTER__)
#define TL__AWAIT_INTO_AT(f, op, dst, kind, name, n)               \
    do {                                                           \
        TL__INSIDE(name);                                          \
        TL__HEAD(f)->pc = (uint32_t)((n) - tl__base);              \
        if (0) {                                                   \
        case TL__PROBE + (n) - tl__base:                           \
            TL__HEAD(f)->pc = (kind);                              \
            return TL__DONE;                                       \
        }                                                          \
        {                                                          \
            tl_status tl__s = (op);                                \
            if (tl__s == TL__DONE) break;                          \
            if (tl__s != TL__CONT) return tl__s;                   \
        }                                                          \
        /* FALLTHROUGH */                                          \
        case (n) - tl__base:                                       \
        if (TL__HEAD(f)->flags & TL__F_ERR) return tl__unwind(f); \
        tl_value_set(&(dst), tl__take(f));                         \
    } while (0)

/* ------------------------------------------------------------------------
 * Writing a tasklet function
 *
 *   typedef struct { int64_t i, sum; tl_chan *in; tl_value v; } summer_t;
 *   static tl_status summer(tl_frame *f, void *locals) {
 *       summer_t *L = locals;
 *       TL_BEGIN(f);
 *       for (L->i = 0; L->i < 10; L->i++) {
 *           TL_RECV(f, L->in, L->v);      // may suspend
 *           L->sum += tl_as_i64(L->v);
 *       }
 *       TL_RETURN(f, tl_i64(L->sum));
 *       TL_END(f);
 *   }
 *
 * Each suspending macro is a resume point, numbered 1, 2, 3... in the
 * order the macros appear between TL_BEGIN and TL_END (several may share a
 * line or sit in a macro of yours).  Edits outside the function never
 * change its resume points; adding, removing or reordering suspending
 * macros inside it changes its shape, and a stored frame of the old shape
 * is then refused at load until the version is bumped with an upgrade
 * (docs/API.md, "Changing code under stored tasklets").  Do not expand
 * __COUNTER__ between TL_BEGIN and TL_END yourself: it would leave a gap
 * that tl_register refuses.  A destination (dst) must be an lvalue without
 * side effects.  Whatever must survive a suspension lives in the schema
 * fields of the locals struct; plain C locals are fine between suspension
 * points (TL_CHECK=locals finds the ones that are not).  A suspending
 * macro must not appear inside a nested switch.  TL_BEGIN and TL_END are
 * used once per function, each as a statement of the function's body.
 * --------------------------------------------------------------------- */
#define TL_BEGIN(f)                                               \
    TL__SHADOW_OK_BEGIN                                           \
    enum { tl__in_body = 1, tl__base = __COUNTER__ };             \
    TL__SHADOW_OK_END                                             \
    if (0) goto TL_BEGIN_without_TL_END;                          \
    switch (TL__HEAD(f)->pc) { case 0:
/* Falling off the end returns nil. */
#define TL_END(f)                                                 \
    return tl__return((f), tl_nil());                             \
    _Static_assert(tl__in_body, "TL_END without TL_BEGIN");       \
    TL_BEGIN_without_TL_END:                                      \
    case TL__PROBE:                                               \
        TL__HEAD(f)->pc = (uint32_t)(__COUNTER__ - tl__base - 1); \
        return TL__DONE;                                          \
    default: return tl__bad_pc(f); }

/* Goes to the back of the run queue. */
#define TL_YIELD(f) TL__AWAIT(f, tl__yield(f), (void)0, TL__K_YIELD, TL_YIELD)
/* Sends a retained copy of v on ch (the frame keeps its own reference);
 * blocks until a receiver takes it (or, buffered, until there is room). */
#define TL_SEND(f, ch, v) \
    TL__AWAIT(f, tl__send((f), (ch), (v)), (void)0, TL__K_SEND, TL_SEND)
/* Receives from ch into the tl_value lvalue dst (its old value released). */
#define TL_RECV(f, ch, dst) \
    TL__AWAIT_INTO(f, tl__recv_into((f), (ch), &(dst)), dst, TL__K_RECV, TL_RECV)
/* Sends an error: the receiver gets code delivered at its resume point. */
#define TL_SEND_ERROR(f, ch, code, msg)                                   \
    TL__AWAIT(f, tl__send_error((f), (ch), (code), (msg)), (void)0,       \
              TL__K_SEND_ERROR, TL_SEND_ERROR)
/* Calls fn, storing its return value in dst.  The arguments, last so a
 * compound literal with commas can be given, are a pointer to a prefix of
 * fn's locals: TL_CALL(f, &fib_fn, L->r, &(fib_t){ .n = L->n - 1 }).
 * TL_CALL0 calls without arguments (locals all zero). */
#define TL_CALL(f, fn, dst, ...)                                             \
    TL__AWAIT_INTO(f, tl__call_into((f), (fn), (__VA_ARGS__),                \
                                    sizeof *(__VA_ARGS__), &(dst)), dst,     \
                   TL__K_CALL, TL_CALL)
#define TL_CALL0(f, fn, dst)                                       \
    TL__AWAIT_INTO(f, tl__call_into((f), (fn), NULL, 0, &(dst)), dst, \
                   TL__K_CALL, TL_CALL0)
/* Waits for tasklet t to end; dst gets its return value (an error ending
 * is delivered as an error at this resume point). */
#define TL_JOIN(f, t, dst)                                                \
    TL__AWAIT(f, tl__join((f), (t)), tl_value_set(&(dst), tl__take(f)),   \
              TL__K_JOIN, TL_JOIN)
/* Sleeps until the wall-clock deadline (ns since the epoch), or for ms. */
#define TL_SLEEP_UNTIL(f, deadline_ns)                                     \
    TL__AWAIT(f, tl__sleep_until((f), (deadline_ns)), (void)0, TL__K_SLEEP, \
              TL_SLEEP_UNTIL)
#define TL_SLEEP(f, ms)                                                      \
    TL__AWAIT(f, tl__sleep_until((f), tl_now(tl_frame_runtime(f))            \
                                          + (int64_t)(ms) * 1000000),        \
              (void)0, TL__K_SLEEP, TL_SLEEP)
/* Waits on n cases (an array in the locals, so it survives suspension);
 * idx gets the index of the case that fired, dst the received value
 * (nil for a send).  With several ready, one is chosen at random.
 * Delivered errors: TL_EINVAL (n out of 1..TL_SELECT_MAX, a NULL channel,
 * a bad op), TL_EMISUSE (a stale or invalid channel handle), TL_ENOTSUP (a
 * remote channel), TL_ECLOSED. */
#define TL_SELECT(f, cases, n, idx, dst)                                     \
    TL__AWAIT(f, tl__select((f), (cases), (n)),                              \
              ((idx) = tl__selected(f), tl_value_set(&(dst), tl__take(f))),  \
              TL__K_SELECT, TL_SELECT)
/* Moves the running tasklet, with all its frames, to the node named node
 * (a tl_node peer, see tasklet_node.h): it resumes there after this point.
 * On failure (no such peer, the peer refused it) it resumes here with the
 * error delivered.  Moving to the own node is a no-op. */
#define TL_MIGRATE(f, node) \
    TL__AWAIT(f, tl__move((f), (node)), (void)0, TL__K_MIGRATE, TL_MIGRATE)
/* Stackless's kill, throw and run from inside a tasklet: the caller
 * switches to t, which runs next (t is put first in the run queue, the
 * caller right after it, as Stackless's tasklet.run() does); the caller
 * resumes here once t has switched out.  An error of the operation
 * itself (TL_THROW to an ended tasklet, TL_RUN of a blocked one) is
 * delivered here.  On the running tasklet: TL_KILL and TL_THROW deliver
 * the error to the caller at once, TL_RUN does nothing.  TL_KILL of an
 * ended tasklet does nothing.  See tl_kill, tl_throw, tl_tasklet_run. */
#define TL_KILL(f, t) TL__AWAIT(f, tl__kill((f), (t)), (void)0, TL__K_KILL, TL_KILL)
#define TL_THROW(f, t, code, msg)                                      \
    TL__AWAIT(f, tl__throw((f), (t), (code), (msg)), (void)0, TL__K_THROW, \
              TL_THROW)
#define TL_RUN(f, t) TL__AWAIT(f, tl__run((f), (t)), (void)0, TL__K_RUN, TL_RUN)
/* stackless.run() from the main tasklet (tl_set_main): waits until no
 * other tasklet is runnable.  An error of another tasklet, or of the last
 * blocked sender, is delivered here; TL_ESTATE if not called from main. */
#define TL_RUN_SCHEDULER(f) \
    TL__AWAIT(f, tl__run_scheduler(f), (void)0, TL__K_RUN_SCHEDULER, TL_RUN_SCHEDULER)
/* Returns a retained copy of v to the caller frame (or to joiners); the
 * frame's own references are released as it is popped. */
#define TL_RETURN(f, v) return tl__return((f), (v))
/* Fails this frame with code (< 0): the error is delivered to the caller
 * frame, or ends the tasklet TL_FAILED. */
#define TL_FAIL(f, code, msg) return tl__fail((f), (code), (msg))

#ifdef __cplusplus
}
#endif
#endif /* TASKLET_H */
