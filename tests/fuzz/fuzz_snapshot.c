/*
 * fuzz_snapshot.c -- libFuzzer harness for the snapshot decoder
 * (tl_snapshot_load) and for what a loaded runtime then does.
 *
 * For each input, in a fresh runtime with the functions of fuzz_funcs.h:
 *   - a load that fails must return a documented code, say why, and leave
 *     the runtime empty and usable (a known good snapshot then loads);
 *   - a load that succeeds must save again, and that save must load into
 *     another runtime and save to the very same bytes (round trip);
 *   - then the runtime runs a bounded number of scheduler steps, with the
 *     host poking its channels and a fake clock firing timers; whatever
 *     state it reaches must save, and load again;
 *   - everything is freed (LeakSanitizer checks that);
 *   - for one input in 4 (chosen by its CRC), the load instead runs out
 *     of memory at an allocation chosen by the input: it must still be
 *     all or nothing.
 * Any broken rule calls abort() after printing which one.
 *
 * Every record carries a CRC32 of its document, so random byte flips
 * almost never get past the CRC check.  The custom mutator therefore
 * (3 times in 4) picks one record, inflates its document, edits that and
 * re-wraps it with a correct length and CRC: either libFuzzer's byte
 * mutations, or msgpack-aware edits that keep the document well-formed
 * (an integer set to a boundary or neighbouring value, an array item
 * dropped or repeated), so that ids, offsets, states and counts get
 * exercised rather than the parser.  The rest of the time it mutates the
 * raw bytes, for the outer layers.
 *
 * Build flags: -DFZ_CUSTOM_MUTATOR under libFuzzer (build.sh sets it);
 * without it this is a plain LLVMFuzzerTestOneInput that replay.c drives.
 * -DFZ_SKIP_KNOWN skips inputs whose head announces huge counters or
 * counts, to look past those already-reported bugs (crashes/README.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zlib.h>

#include "fuzz_funcs.h"
#include "fuzz_mp.h"

#define RUN_ROUNDS 16
#define RUN_STEPS 64

static int64_t fake_now;

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

/* Allocation failure injection: fail_at >= 0 fails that allocation,
 * counted from arming, and with fail_all every later one too. */
static int64_t fail_at = -1, seen;
static int fail_all;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (fail_at >= 0 && (fail_all ? seen++ >= fail_at : seen++ == fail_at))
        return NULL;
    return realloc(ptr, nsize);
}

static void arm_failure(int64_t at, int all)
{
    fail_at = at;
    fail_all = all;
    seen = 0;
}

static void die(const char *rule, tl_runtime *rt, int rc)
{
    fprintf(stderr, "fuzz_snapshot: %s (rc %d %s): %s\n", rule, rc, tl_errname(rc),
            rt ? tl_errmsg(rt) : "");
    abort();
}

static tl_runtime *new_runtime(void)
{
    tl_runtime *rt;
    tl_config cfg = {0};
    cfg.clock = fake_clock;
    cfg.alloc = failing_alloc;
    if (tl_runtime_new(&cfg, &rt) != TL_OK)
        die("tl_runtime_new failed", NULL, TL_ENOMEM);
    int rc = tl_set_node_id(rt, FZ_NODE);
    if (rc == TL_OK)
        rc = fz_register_common(rt);
    if (rc == TL_OK)
        rc = tl_register(rt, &fz_counter2_fn);
    if (rc == TL_OK)
        rc = tl_register_upgrade(rt, "fz.counter", 1, &fz_counter2_fn, fz_counter_upgrade, NULL);
    if (rc != TL_OK)
        die("registering the fuzz functions failed", rt, rc);
    return rt;
}

/* ---- a known good snapshot, to prove a failed load left rt empty ---- */

static void *good;
static size_t good_len;

static void make_good_snapshot(void)
{
    tl_runtime *rt = new_runtime();
    tl_chan *ch;
    fz_all a = {.n = 1};
    if (tl_chan_new(rt, 1, &ch) != TL_OK)
        die("tl_chan_new failed", rt, TL_ENOMEM);
    a.in = ch;
    if (tl_spawn(rt, &fz_pump_fn, &a, sizeof a, NULL) != TL_OK)
        die("tl_spawn failed", rt, rt ? tl_errcode(rt) : 0);
    tl_chan_release(ch);
    void *buf;
    int rc = tl_snapshot_save(rt, &buf, &good_len);
    if (rc != TL_OK)
        die("saving the known good snapshot failed", rt, rc);
    good = malloc(good_len);
    memcpy(good, buf, good_len);
    tl_snapshot_free(rt, buf, good_len);
    tl_runtime_free(rt);
}

/* ---- the rules ---- */

static int documented_load_error(int rc)
{
    return rc == TL_ECORRUPT || rc == TL_EFORMAT || rc == TL_ENOFUNC || rc == TL_ESCHEMA ||
           rc == TL_EBADPC || rc == TL_ESHAPE || rc == TL_ENOMEM;
}

static void check_failed_load(tl_runtime *rt, int rc, const uint8_t *data, size_t size)
{
    if (!documented_load_error(rc))
        die("tl_snapshot_load returned an undocumented code", rt, rc);
    if (tl_errcode(rt) != rc || strlen(tl_errmsg(rt)) < 10)
        die("a failed load did not say why", rt, rc);
    if (tl_tasklet_count(rt) != 0 || tl_runnable_count(rt) != 0 || tl_blocked_count(rt) != 0 ||
        tl_next_deadline(rt, NULL))
        die("a failed load left tasklets or timers behind", rt, rc);
    int again = tl_snapshot_load(rt, data, size);
    if (again != rc)
        die("loading the same bytes again gave another result", rt, again);
    int ok = tl_snapshot_load(rt, good, good_len);
    if (ok != TL_OK)
        die("after a failed load, a good snapshot no longer loads (runtime not empty?)", rt, ok);
}

/* A load that ran out of memory: all or nothing still holds. */
static void check_failed_load_enomem(tl_runtime *rt, int rc)
{
    if (!documented_load_error(rc))
        die("a load short of memory returned an undocumented code", rt, rc);
    if (tl_tasklet_count(rt) != 0 || tl_runnable_count(rt) != 0 || tl_blocked_count(rt) != 0 ||
        tl_next_deadline(rt, NULL))
        die("a load short of memory left tasklets or timers behind", rt, rc);
    int ok = tl_snapshot_load(rt, good, good_len);
    if (ok != TL_OK)
        die("after a load short of memory, a good snapshot no longer loads", rt, ok);
}

/* Saves rt; TL_ENOMEM is the only acceptable failure. Returns 0 then. */
static int save(tl_runtime *rt, void **buf, size_t *len, const char *rule)
{
    int rc = tl_snapshot_save(rt, buf, len);
    if (rc == TL_ENOMEM)
        return 0;
    if (rc != TL_OK)
        die(rule, rt, rc);
    return 1;
}

/* save(load(x)) loads, and saves to the same bytes. */
static void check_round_trip(tl_runtime *rt)
{
    void *b1, *b2;
    size_t n1, n2;
    if (!save(rt, &b1, &n1, "a loaded runtime does not save"))
        return;
    tl_runtime *rt2 = new_runtime();
    int rc = tl_snapshot_load(rt2, b1, n1);
    if (rc != TL_OK)
        die("the save of a loaded snapshot does not load", rt2, rc);
    if (tl_tasklet_count(rt2) != tl_tasklet_count(rt) ||
        tl_runnable_count(rt2) != tl_runnable_count(rt) ||
        tl_blocked_count(rt2) != tl_blocked_count(rt))
        die("the round trip changed the tasklet counts", rt2, rc);
    if (save(rt2, &b2, &n2, "a reloaded runtime does not save")) {
        if (n1 != n2 || memcmp(b1, b2, n1) != 0)
            die("save(load(save(load(x)))) differs from save(load(x))", rt2, TL_OK);
        tl_snapshot_free(rt2, b2, n2);
    }
    tl_snapshot_free(rt, b1, n1);
    tl_runtime_free(rt2);
}

/* The host side: offer a value to and take one from the first channels. */
static void poke_channels(tl_runtime *rt, int round)
{
    for (uint64_t id = 1; id <= 8; id++) {
        tl_chan *ch = tl_chan_find(rt, id);
        tl_value v;
        if (!ch)
            continue;
        if ((round + (int)id) % 2)
            (void)tl_chan_try_send(ch, tl_i64(round));
        else if (tl_chan_try_recv(ch, &v) == TL_OK)
            tl_release(v);
    }
}

static void run_bounded(tl_runtime *rt)
{
    for (int round = 0; round < RUN_ROUNDS; round++) {
        uint64_t ran = 0;
        /* an error is a detached tasklet's failure, with its own code:
         * a snapshot can make a tasklet fail with any code at all */
        (void)tl_run_steps(rt, RUN_STEPS, &ran);
        if (round % 4 == 3)
            poke_channels(rt, round);
        fake_now += 3000000000LL; /* 3 s: sleepers wake */
        if (tl_runnable_count(rt) == 0 && !tl_next_deadline(rt, NULL) && round > 4)
            break;
    }
}

/* Whatever state running reached saves, and that save loads. */
static void check_save_after_run(tl_runtime *rt)
{
    void *buf;
    size_t len;
    if (!save(rt, &buf, &len, "a runtime that ran after a load does not save"))
        return;
    tl_runtime *rt3 = new_runtime();
    int rc = tl_snapshot_load(rt3, buf, len);
    if (rc != TL_OK)
        die("the save of a runtime that ran after a load does not load", rt3, rc);
    tl_snapshot_free(rt, buf, len);
    tl_runtime_free(rt3);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#ifdef FZ_SKIP_KNOWN
static int known_bug_input(const uint8_t *data, size_t size);
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fake_now = FZ_EPOCH;
    make_good_snapshot();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!good)
        LLVMFuzzerInitialize(NULL, NULL);
#ifdef FZ_SKIP_KNOWN
    if (known_bug_input(data, size))
        return 0;
#endif
    static int must_load = -1;
    if (must_load < 0)
        must_load = getenv("FZ_MUST_LOAD") != NULL;
    if (must_load) { /* the seeds are valid snapshots, in every header width */
        tl_runtime *r = new_runtime();
        int rc = tl_snapshot_load(r, data, size);
        if (rc != TL_OK)
            die("FZ_MUST_LOAD is set and this input does not load", r, rc);
        tl_runtime_free(r);
    }
    fake_now = FZ_EPOCH;
    tl_runtime *rt = new_runtime();
    uint32_t h = (uint32_t)crc32(0L, data, (uInt)size);
    if (h % 4 == 0) { /* one input in 4: the load runs out of memory */
        arm_failure((int64_t)(h >> 8) % 256, (h >> 16) & 1);
        int rc = tl_snapshot_load(rt, data, size);
        arm_failure(-1, 0);
        if (rc != TL_OK)
            check_failed_load_enomem(rt, rc);
        tl_runtime_free(rt);
        return 0;
    }
    int rc = tl_snapshot_load(rt, data, size);
    if (rc != TL_OK) {
        check_failed_load(rt, rc, data, size);
    } else {
        check_round_trip(rt);
        run_bounded(rt);
        check_save_after_run(rt);
    }
    tl_runtime_free(rt);
    return 0;
}

#if defined(FZ_CUSTOM_MUTATOR) || defined(FZ_SKIP_KNOWN)
/* ---- structure-aware mutation: mutate a record's document, fix its CRC ---- */

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);

#define MAX_RECORDS 64
#define MAX_DOC (256u << 10)

typedef struct span {
    size_t at, len;
} span;

/* Where the records of a snapshot are: the head, then each chunk's. */
static size_t find_records(const uint8_t *p, size_t n, span *out)
{
    uint64_t count;
    size_t off = array_head(p, n, &count), k, nrec = 0;
    if (!off || count != 4)
        return 0;
    for (int item = 0; item < 2; item++) { /* magic, format */
        if (!(k = mp_skip(p + off, n - off, 4)))
            return 0;
        off += k;
    }
    if (!(k = mp_skip(p + off, n - off, 8)))
        return 0;
    out[nrec++] = (span){off, k};
    off += k;
    if (!(k = array_head(p + off, n - off, &count)))
        return 0;
    off += k;
    for (uint64_t i = 0; i < count && nrec < MAX_RECORDS; i++) {
        uint64_t three;
        if (!(k = array_head(p + off, n - off, &three)) || three != 3)
            return nrec;
        off += k;
        for (int item = 0; item < 2; item++) { /* kind, key */
            if (!(k = mp_skip(p + off, n - off, 4)))
                return nrec;
            off += k;
        }
        if (!(k = mp_skip(p + off, n - off, 8)))
            return nrec;
        out[nrec++] = (span){off, k};
        off += k;
    }
    return nrec;
}

#ifdef FZ_SKIP_KNOWN
/* -DFZ_SKIP_KNOWN, to look past bugs already reported: skips snapshots
 * whose head announces huge counters or counts (the loader and the chunk
 * index allocate in proportion to them). */
static int known_bug_input(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"next_tid", "next_cid", "ntasklets", "nchans"};
    span recs[MAX_RECORDS];
    uint8_t *doc;
    int compressed, absurd = 0;
    if (!find_records(data, size, recs) || !(doc = malloc(MAX_DOC)))
        return 0;
    size_t len = record_doc(data + recs[0].at, recs[0].len, doc, MAX_DOC, &compressed), off = 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    if (len && mp_skip(doc, len, 8) == len &&
        msgpack_unpack_next(&up, (const char *)doc, len, &off) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < up.data.via.map.size; i++) {
            const msgpack_object_kv *kv = &up.data.via.map.ptr[i];
            for (size_t k = 0; k < TL_COUNTOF(keys); k++)
                if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(keys[k]) &&
                    memcmp(kv->key.via.str.ptr, keys[k], strlen(keys[k])) == 0 &&
                    kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER && kv->val.via.u64 > (1u << 20))
                    absurd = 1;
        }
    }
    msgpack_unpacked_destroy(&up);
    free(doc);
    return absurd;
}
#endif

#ifdef FZ_CUSTOM_MUTATOR
/* ---- msgpack-aware edits of a document: they keep it well-formed, so
 * the decoder's semantic checks (ids, offsets, states, counts) are what
 * gets exercised ---- */

#define MAX_TOKENS 4096

typedef struct token {
    size_t at, hdr, len; /* offset, header bytes, whole value bytes */
    uint8_t kind;        /* 'i' integer, 'a' array, 'o' other */
    uint32_t count;      /* array items */
} token;

typedef struct tokens {
    token t[MAX_TOKENS];
    size_t n;
} tokens;

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void collect(const uint8_t *p, size_t n, size_t at, int depth, tokens *tk)
{
    size_t len = mp_skip(p + at, n - at, depth);
    uint8_t b = p[at];
    uint64_t count = 0;
    if (!len || tk->n == MAX_TOKENS)
        return;
    token *t = &tk->t[tk->n++];
    *t = (token){at, 1, len, 'o', 0};
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) {
        t->kind = 'i';
        return;
    }
    if ((t->hdr = array_head(p + at, n - at, &count)) != 0) {
        t->kind = 'a';
        t->count = (uint32_t)count;
    } else if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) {
        t->hdr = (b & 0xf0) == 0x80 ? 1 : b == 0xde ? 3 : 5;
        count = (b & 0xf0) == 0x80 ? (b & 0x0f) : be_read(p + at + 1, b == 0xde ? 2 : 4);
        count *= 2;
    } else {
        return;
    }
    size_t off = at + t->hdr;
    for (uint64_t i = 0; i < count && tk->n < MAX_TOKENS; i++) {
        collect(p, n, off, depth - 1, tk);
        off += mp_skip(p + off, n - off, depth - 1);
    }
}

/* Replaces doc[at, at+old) with rep[0, n); returns the new length or 0. */
static size_t splice(uint8_t *doc, size_t len, size_t cap, size_t at, size_t old,
                     const uint8_t *rep, size_t n)
{
    if (len - old + n > cap)
        return 0;
    memmove(doc + at + n, doc + at + old, len - at - old);
    if (n)
        memcpy(doc + at, rep, n);
    return len - old + n;
}

static size_t pack_int(uint8_t *out, int64_t v, int as_unsigned)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, sbuf_write);
    if (as_unsigned)
        msgpack_pack_uint64(&pk, (uint64_t)v);
    else
        msgpack_pack_int64(&pk, v);
    size_t n = sb.size;
    memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static size_t pack_array_head(uint8_t *out, uint32_t count)
{
    if (count < 16) {
        out[0] = (uint8_t)(0x90 | count);
        return 1;
    }
    if (count < 65536) {
        out[0] = 0xdc;
        out[1] = (uint8_t)(count >> 8);
        out[2] = (uint8_t)count;
        return 3;
    }
    out[0] = 0xdd;
    for (int i = 0; i < 4; i++)
        out[1 + i] = (uint8_t)(count >> (24 - 8 * i));
    return 5;
}

/* An integer becomes an interesting neighbour or boundary value. */
static size_t edit_integer(uint8_t *doc, size_t len, size_t cap, const tokens *tk, uint64_t *rng)
{
    static const int64_t special[] = {
        0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 24, 32, 40, 48, 64, 255, 256, 257, 65535, 65536,
        -1, -2, -100, INT32_MAX, (int64_t)UINT32_MAX, (int64_t)1 << 24, ((int64_t)1 << 24) + 1,
        (int64_t)1 << 26, (int64_t)1 << 32, INT64_MAX, INT64_MIN,
    };
    size_t idx[MAX_TOKENS], n = 0;
    for (size_t i = 0; i < tk->n; i++)
        if (tk->t[i].kind == 'i')
            idx[n++] = i;
    if (!n)
        return 0;
    const token *t = &tk->t[idx[rng_next(rng) % n]];
    msgpack_unpacked up;
    size_t off = 0;
    int64_t old = 0;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, (const char *)doc + t->at, t->len, &off) == MSGPACK_UNPACK_SUCCESS)
        old = up.data.type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? up.data.via.i64
                                                              : (int64_t)up.data.via.u64;
    msgpack_unpacked_destroy(&up);
    int64_t v;
    uint64_t r = rng_next(rng);
    switch (r % 4) {
    case 0: v = special[(r >> 8) % TL_COUNTOF(special)]; break;
    case 1: v = (int64_t)((uint64_t)old + 1 + (r >> 8) % 8); break;
    case 2: v = (int64_t)((uint64_t)old - 1 - (r >> 8) % 8); break;
    default: v = (int64_t)((uint64_t)old ^ ((uint64_t)1 << ((r >> 8) % 64))); break;
    }
    uint8_t rep[16];
    size_t k = pack_int(rep, v, (r >> 20) % 8 == 0);
    return splice(doc, len, cap, t->at, t->len, rep, k);
}

/* An array loses an item, or repeats one. */
static size_t edit_array(uint8_t *doc, size_t len, size_t cap, const tokens *tk, uint64_t *rng)
{
    size_t idx[MAX_TOKENS], n = 0;
    for (size_t i = 0; i < tk->n; i++)
        if (tk->t[i].kind == 'a' && tk->t[i].count > 0)
            idx[n++] = i;
    if (!n)
        return 0;
    const token *t = &tk->t[idx[rng_next(rng) % n]];
    uint32_t pick = (uint32_t)(rng_next(rng) % t->count);
    size_t at = t->at + t->hdr;
    for (uint32_t i = 0; i < pick; i++)
        at += mp_skip(doc + at, len - at, 64);
    size_t item = mp_skip(doc + at, len - at, 64);
    int dup = rng_next(rng) % 2;
    uint32_t count = dup ? t->count + 1 : t->count - 1;
    uint8_t *copy = malloc(item + 1);
    memcpy(copy, doc + at, item);
    /* the item first (it lies after the header), then the header */
    len = dup ? splice(doc, len, cap, at, 0, copy, item) : splice(doc, len, cap, at, item, NULL, 0);
    free(copy);
    if (!len)
        return 0;
    uint8_t head[5];
    size_t hn = pack_array_head(head, count);
    return splice(doc, len, cap, t->at, t->hdr, head, hn);
}

/* A value (and everything inside it) rewritten with wider headers, of a
 * width class 1 to 3 (fuzz_mp.h): the decoder must read every msgpack
 * header width, not only the shortest one the library writes. */
static size_t edit_width(uint8_t *doc, size_t len, size_t cap, const tokens *tk, uint64_t *rng)
{
    if (!tk->n)
        return 0;
    const token *t = &tk->t[rng_next(rng) % tk->n];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    size_t out = 0;
    if (mp_widen(doc + t->at, t->len, &sb, 1 + (int)(rng_next(rng) % 3), 64) == t->len)
        out = splice(doc, len, cap, t->at, t->len, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return out;
}

/* The same in the outer structure (outside the records' CRCs). */
static size_t widen_outer(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    uint64_t rng = 0x2545f4914f6cdd1dULL ^ seed;
    tokens *tk = malloc(sizeof *tk);
    size_t out = 0;
    if (tk) {
        tk->n = 0;
        collect(data, size, 0, 64, tk);
        out = edit_width(data, size, max_size, tk, &rng);
        free(tk);
    }
    return out;
}

static size_t mutate_a_document(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    span recs[MAX_RECORDS];
    uint64_t rng = 0x9e3779b97f4a7c15ULL ^ seed;
    size_t nrec = find_records(data, size, recs);
    if (!nrec)
        return 0;
    span r = recs[rng_next(&rng) % nrec];
    uint8_t *doc = malloc(MAX_DOC);
    tokens *tk = malloc(sizeof *tk);
    int compressed = 0;
    size_t len = record_doc(data + r.at, r.len, doc, MAX_DOC, &compressed);
    size_t out = 0;
    if (len) {
        size_t cap = 2 * len + 256 < MAX_DOC ? 2 * len + 256 : MAX_DOC, edited = 0;
        uint64_t how = rng_next(&rng) % 8;
        if (how >= 4) {
            tk->n = 0;
            collect(doc, len, 0, 64, tk);
            edited = how < 6   ? edit_integer(doc, len, cap, tk, &rng)
                     : how < 7 ? edit_array(doc, len, cap, tk, &rng)
                               : edit_width(doc, len, cap, tk, &rng);
        }
        len = edited ? edited : LLVMFuzzerMutate(doc, len, cap);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        wrap_record(&sb, doc, len, compressed && rng_next(&rng) % 4 == 0);
        size_t total = size - r.len + sb.size;
        if (total <= max_size) {
            memmove(data + r.at + sb.size, data + r.at + r.len, size - r.at - r.len);
            memcpy(data + r.at, sb.data, sb.size);
            out = total;
        }
        msgpack_sbuffer_destroy(&sb);
    }
    free(tk);
    free(doc);
    return out;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    if (seed % 8 >= 2) { /* 3 times in 4: inside a record */
        size_t n = mutate_a_document(data, size, max_size, seed);
        if (n)
            return n;
    } else if (seed % 16 == 1) { /* 1 in 16: wider headers outside them */
        size_t n = widen_outer(data, size, max_size, seed);
        if (n)
            return n;
    }
    return LLVMFuzzerMutate(data, size, max_size);
}
#endif
#endif
