/*
 * migrate_peer.c -- one node in a process, for tests/test_migrate_proc.c.
 *
 *   migrate_peer --id ID [--secret-file FILE] [--listen ADDR] [--connect ADDR]
 *                [--store FILE] [--role cmd|source|dest]
 *                [--count N] [--dest ID] [--pace MS] [--skip FUNC]
 *                [--limits NAME=N,...]   (tl_node_config limits: max_queue, ...)
 *                [--pause-after-import 1] [--ciphers MASK]  (the ciphers offered)
 *
 * The cluster secret comes from FILE (mode 600) or, without --secret-file,
 * from the environment variable TL_NODE_SECRET (tl_node_secret_load), never
 * from the command line, where every user of the machine could read it.
 *
 * It prints "address ADDR" (tl_node_address, "-" when not listening), then
 * "ready", and runs the node until SIGTERM, "quit" or the end of its
 * standard input (so it never outlives the test).  The node's log lines
 * come out as "log LINE", a detached tasklet that failed as
 * "tasklet-failed TL_E... msg", and the exactly-once functions report as
 * "trace arrived|got n=N id=ID k=K" (a carrier at its destination, with
 * its failed tries; the collector, with the count of n).  On a clean stop it checkpoints (with a store),
 * frees everything and exits 0.  --skip FUNC leaves that tasklet function
 * unregistered, so that the node refuses tasklets running it.
 * --pause-after-import 1 (with --store) stops the process inside the
 * first checkpoint transaction after a tasklet was imported, before it
 * commits: it prints "paused-before-commit" and waits there to be killed
 * (a participant of the store, persist/persist.h, that never returns).
 *
 * Roles:
 *   cmd     (default) reads commands, one a line, and answers on stdout:
 *             chan NAME          a local named channel, pinned and exported
 *             send PATH INT      a tasklet sends INT on PATH ("node/name" or
 *                                a local name); "sent PATH INT" or
 *                                "send-error PATH TL_E... msg" when it ends
 *             recv PATH          "recv PATH VALUE" or "recv-error ..."
 *             balance NAME       "balance NAME N" (a local channel)
 *             peer ID            "peer ID 0|1": whether a link to ID is up
 *             stats              "stats moved_out=.. moved_in=.. ..."
 *             trip-start         channels trip.c and trip.r and the round
 *                                trip tasklet (mp.trip), blocked receiving
 *                                on trip.c three calls deep
 *             trip-state         "trip-state STATE WAIT" of its handle
 *             migrate-trip PEER  tl_node_migrate of it; "migrate rc NAME"
 *             migrate-blocked FUNC PEER   tl_node_migrate of every blocked
 *                                tasklet running FUNC on top; "migrate-blocked
 *                                COUNT NAME"
 *             quit
 *   source  first start (an empty store): N mp.carrier tasklets, carrier n
 *           due at start + n * pace ms, each moving to node --dest;
 *           prints "status live=L pending=P moved_out=M" as things change.
 *   dest    first start: the channel "collector", "collector.dump" and the
 *           mp.collector tasklet; prints "status collected=D dups=X
 *           moved_in=M duplicates=U" as things change.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate_funcs.h"
#include "tasklet.h"
#include "tasklet_node.h"
#include "../persist/persist.h" /* the participant interface, for --pause-after-import */
#include "../migrate/node_internal.h" /* tl__node_ciphers, for --ciphers */

static tl_node *node;
static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
    if (node)
        tl_node_stop(node);
}

static void trace_line(const char *what, int64_t n, uint64_t id, int64_t k)
{
    printf("trace %s n=%" PRId64 " id=%" PRIu64 " k=%" PRId64 "\n", what, n, id, k);
}

static void log_line(void *ud, const char *msg)
{
    (void)ud;
    printf("log %s\n", msg);
}

/* ---- values in lines ---- */

static void print_value(FILE *out, tl_value v)
{
    size_t n;
    switch (tl_type(v)) {
    case TL_V_INT:
    case TL_V_UINT:
        fprintf(out, "%" PRId64, tl_as_i64(v));
        break;
    case TL_V_STR:
        fprintf(out, "%s", tl_str_data(v, &n));
        break;
    case TL_V_ARRAY:
        for (size_t i = 0; i < tl_len(v); i++) {
            fputs(i ? "," : "[", out);
            print_value(out, tl_array_at(v, i));
        }
        fputs("]", out);
        break;
    case TL_V_NIL:
        fputs("nil", out);
        break;
    default:
        fprintf(out, "<type %d>", tl_type(v));
    }
}

/* ---- senders and receivers started by commands ---- */

typedef struct op_l {
    tl_chan *ch;
    tl_value v;
    char path[64];
} op_l;

static const tl_field op_fields[] = {
    TL_FIELD(op_l, ch, TL_T_CHAN),
    TL_FIELD(op_l, v, TL_T_VALUE),
    TL_FIELD(op_l, path, TL_T_BYTES),
};

static void report_error(tl_frame *f, const char *what, const char *path, int code)
{
    printf("%s-error %s %s %s\n", what, path, tl_errname(code), tl_frame_errmsg(f));
}

static tl_status sender(tl_frame *f, void *locals)
{
    op_l *L = locals;
    int code;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_SEND(f, L->ch, L->v);
    code = tl_frame_error(f);
    if (code != TL_OK) {
        report_error(f, "send", L->path, code);
    } else {
        printf("sent %s ", L->path);
        print_value(stdout, L->v);
        printf("\n");
    }
    TL_END(f);
}

static tl_status receiver(tl_frame *f, void *locals)
{
    op_l *L = locals;
    int code;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_RECV(f, L->ch, L->v);
    code = tl_frame_error(f);
    if (code != TL_OK) {
        report_error(f, "recv", L->path, code);
    } else {
        printf("recv %s ", L->path);
        print_value(stdout, L->v);
        printf("\n");
    }
    TL_END(f);
}

static const tl_func sender_fn = {"mp.sender", 1, sender, sizeof(op_l), op_fields,
                                  TL_COUNTOF(op_fields), NULL};
static const tl_func receiver_fn = {"mp.receiver", 1, receiver, sizeof(op_l), op_fields,
                                    TL_COUNTOF(op_fields), NULL};

/* ---- the round trip: mp.trip calls mp.leg three deep; the last leg
 * receives on trip.c (here, then remotely once moved), moves home, receives
 * again, and the result climbs back up to be sent on trip.r ---- */

typedef struct leg_l {
    tl_chan *c;
    int64_t depth, mine, x, y;
    char home[16], where1[16], where2[16];
    tl_value v;
} leg_l;

static const tl_field leg_fields[] = {
    TL_FIELD(leg_l, c, TL_T_CHAN),       TL_FIELD(leg_l, depth, TL_T_I64),
    TL_FIELD(leg_l, mine, TL_T_I64),     TL_FIELD(leg_l, x, TL_T_I64),
    TL_FIELD(leg_l, y, TL_T_I64),        TL_FIELD(leg_l, home, TL_T_BYTES),
    TL_FIELD(leg_l, where1, TL_T_BYTES), TL_FIELD(leg_l, where2, TL_T_BYTES),
    TL_FIELD(leg_l, v, TL_T_VALUE),
};

static tl_status leg(tl_frame *f, void *locals);
static const tl_func leg_fn = {"mp.leg", 1, leg, sizeof(leg_l), leg_fields,
                               TL_COUNTOF(leg_fields), NULL};

/* [sum, where1, where2] into L->v, which the caller then returns: the
 * frame owns it until it is popped. */
static int leg_result(tl_runtime *rt, leg_l *L, int64_t sum, const char *w1, const char *w2)
{
    tl_value items[3] = {tl_i64(sum), tl_nil(), tl_nil()}, out = tl_nil();
    int rc = tl_str_new(rt, w1 ? w1 : "?", strlen(w1 ? w1 : "?"), &items[1]);
    if (rc == TL_OK)
        rc = tl_str_new(rt, w2 ? w2 : "?", strlen(w2 ? w2 : "?"), &items[2]);
    if (rc == TL_OK)
        rc = tl_array_new(rt, items, 3, &out);
    tl_release(items[1]);
    tl_release(items[2]);
    if (rc == TL_OK)
        tl_value_set(&L->v, out);
    return rc;
}

static tl_status leg(tl_frame *f, void *locals)
{
    leg_l *L = locals;
    tl_runtime *rt = tl_frame_runtime(f);
    TL_BEGIN(f);
    L->mine = L->depth * 10 + 1;
    if (L->depth > 0) {
        TL_CALL(f, &leg_fn, L->v, &(leg_l){.c = L->c, .depth = L->depth - 1});
        if (tl_type(L->v) != TL_V_ARRAY || tl_len(L->v) != 3)
            TL_FAIL(f, TL_ETYPE, "mp.leg: a callee returned no [sum, where1, where2]");
        if (leg_result(rt, L, tl_as_i64(tl_array_at(L->v, 0)) + L->mine,
                       tl_str_data(tl_array_at(L->v, 1), NULL),
                       tl_str_data(tl_array_at(L->v, 2), NULL)) != TL_OK)
            TL_FAIL(f, TL_ENOMEM, "mp.leg: out of memory");
        TL_RETURN(f, L->v);
    }
    snprintf(L->home, sizeof L->home, "%s", tl_node_id(rt));
    TL_RECV(f, L->c, L->v);
    L->x = tl_as_i64(L->v);
    snprintf(L->where1, sizeof L->where1, "%s", tl_node_id(rt));
    TL_MIGRATE(f, L->home);
    snprintf(L->where2, sizeof L->where2, "%s", tl_node_id(rt));
    TL_RECV(f, L->c, L->v);
    L->y = tl_as_i64(L->v);
    if (leg_result(rt, L, L->x * 1000 + L->y + L->mine, L->where1, L->where2) != TL_OK)
        TL_FAIL(f, TL_ENOMEM, "mp.leg: out of memory");
    TL_RETURN(f, L->v);
    TL_END(f);
}

typedef struct trip_l {
    tl_chan *c, *r;
    tl_value v;
} trip_l;

static const tl_field trip_fields[] = {
    TL_FIELD(trip_l, c, TL_T_CHAN),
    TL_FIELD(trip_l, r, TL_T_CHAN),
    TL_FIELD(trip_l, v, TL_T_VALUE),
};

static tl_status trip(tl_frame *f, void *locals)
{
    trip_l *L = locals;
    TL_BEGIN(f);
    TL_CALL(f, &leg_fn, L->v, &(leg_l){.c = L->c, .depth = 3});
    TL_SEND(f, L->r, L->v);
    TL_END(f);
}

static const tl_func trip_fn = {"mp.trip", 1, trip, sizeof(trip_l), trip_fields,
                                TL_COUNTOF(trip_fields), NULL};

/* ---- commands ---- */

static tl_tasklet *trip_handle;

static int local_chan(tl_runtime *rt, const char *name, size_t cap)
{
    tl_chan *ch;
    int rc = tl_chan_new(rt, cap, &ch);
    if (rc != TL_OK)
        return rc;
    rc = tl_chan_set_name(ch, name);
    if (rc == TL_OK)
        rc = tl_chan_pin(ch, 1);
    if (rc == TL_OK)
        rc = tl_node_export(node, ch, name); /* peers reach it as "ID/name" */
    tl_chan_release(ch);
    return rc;
}

static void cmd_op(tl_runtime *rt, const tl_func *fn, const char *path, const char *arg)
{
    op_l args;
    memset(&args, 0, sizeof args);
    snprintf(args.path, sizeof args.path, "%s", path);
    int rc;
    if (strchr(path, '/')) {
        rc = tl_node_chan(node, path, &args.ch);
    } else {
        args.ch = tl_chan_find_name(rt, path);
        rc = args.ch ? TL_OK : TL_ENOENT;
        if (args.ch)
            tl_chan_retain(args.ch);
    }
    if (rc == TL_OK && arg)
        args.v = tl_i64(strtoll(arg, NULL, 10));
    if (rc == TL_OK)
        rc = tl_spawn(rt, fn, &args, sizeof args, NULL);
    if (args.ch)
        tl_chan_release(args.ch);
    if (rc != TL_OK)
        printf("%s-error %s %s %s\n", fn == &sender_fn ? "send" : "recv", path, tl_errname(rc),
               tl_errmsg(rt));
}

static void cmd_trip_start(tl_runtime *rt)
{
    trip_l args = {NULL, NULL, {0}};
    int rc = local_chan(rt, "trip.c", 0);
    if (rc == TL_OK)
        rc = local_chan(rt, "trip.r", 0);
    args.c = tl_chan_find_name(rt, "trip.c");
    args.r = tl_chan_find_name(rt, "trip.r");
    if (rc == TL_OK)
        rc = tl_spawn(rt, &trip_fn, &args, sizeof args, &trip_handle);
    printf("trip-start %s\n", tl_errname(rc));
}

/* Moves every blocked tasklet whose top frame runs function fname (found
 * by id: a test program may look). */
static void cmd_migrate_blocked(tl_runtime *rt, const char *fname, const char *peer)
{
    int moved = 0, rc = TL_OK;
    for (uint64_t id = 1; id < 65536 && rc == TL_OK; id++) {
        tl_tasklet *t = tl_tasklet_find(rt, id);
        const tl_func *fn = t ? tl_tasklet_func(t) : NULL;
        if (!fn || strcmp(fn->name, fname) != 0 || tl_tasklet_state(t) != TL_BLOCKED)
            continue;
        rc = tl_node_migrate(node, t, peer);
        moved += rc == TL_OK;
    }
    printf("migrate-blocked %d %s\n", moved, tl_errname(rc));
}

static void print_stats(tl_runtime *rt)
{
    tl_node_stats s;
    tl_node_stats_get(node, &s);
    printf("stats moved_out=%" PRIu64 " moved_in=%" PRIu64 " refused=%" PRIu64
           " duplicates=%" PRIu64 " pending=%" PRIu64 " remote_ops=%" PRIu64
           " links_up=%" PRIu64 " links_dropped=%" PRIu64 " live=%zu frames_rejected=%" PRIu64
           "\n",
           s.moved_out, s.moved_in, s.refused, s.duplicates, s.pending, s.remote_ops,
           s.links_up, s.links_dropped, tl_tasklet_count(rt), s.frames_rejected);
}

static void command(tl_runtime *rt, char *line)
{
    char *words[4] = {NULL, NULL, NULL, NULL};
    int k = 0;
    for (char *p = strtok(line, " "); p && k < 4; p = strtok(NULL, " "))
        words[k++] = p;
    const char *w = words[0] ? words[0] : "";
    if (strcmp(w, "chan") == 0 && words[1]) {
        printf("chan %s %s\n", words[1], tl_errname(local_chan(rt, words[1], 0)));
    } else if (strcmp(w, "send") == 0 && words[2]) {
        cmd_op(rt, &sender_fn, words[1], words[2]);
    } else if (strcmp(w, "recv") == 0 && words[1]) {
        cmd_op(rt, &receiver_fn, words[1], NULL);
    } else if (strcmp(w, "balance") == 0 && words[1]) {
        tl_chan *ch = tl_chan_find_name(rt, words[1]);
        printf("balance %s %d\n", words[1], ch ? tl_chan_balance(ch) : -999);
    } else if (strcmp(w, "peer") == 0 && words[1]) {
        printf("peer %s %d\n", words[1], tl_node_connected(node, words[1]));
    } else if (strcmp(w, "stats") == 0) {
        print_stats(rt);
    } else if (strcmp(w, "trip-start") == 0) {
        cmd_trip_start(rt);
    } else if (strcmp(w, "trip-state") == 0) {
        printf("trip-state %d %d\n", tl_tasklet_state(trip_handle), tl_tasklet_wait(trip_handle));
    } else if (strcmp(w, "migrate-trip") == 0 && words[1]) {
        int rc = tl_node_migrate(node, trip_handle, words[1]);
        printf("migrate %d %s\n", rc, tl_errname(rc));
    } else if (strcmp(w, "migrate-blocked") == 0 && words[2]) {
        cmd_migrate_blocked(rt, words[1], words[2]);
    } else if (strcmp(w, "quit") == 0) {
        stopping = 1;
    } else {
        printf("unknown-command %s\n", w);
    }
}

/* Reads what stdin has; runs whole lines; EOF stops the node. */
static void read_commands(tl_runtime *rt, int with_commands)
{
    static char buf[4096];
    static size_t len;
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0)
        return;
    ssize_t got = read(STDIN_FILENO, buf + len, sizeof buf - 1 - len);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (got <= 0) {
        stopping = 1;
        return;
    }
    len += (size_t)got;
    char *nl;
    while ((nl = memchr(buf, '\n', len)) != NULL) {
        *nl = '\0';
        if (with_commands)
            command(rt, buf);
        len -= (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, len);
    }
    if (len == sizeof buf - 1)
        len = 0; /* an overlong line: dropped */
}

/* ---- roles with a store ---- */

typedef struct opts {
    const char *id, *secret_file, *listen, *connect, *store, *role, *dest, *skip, *limits;
    int count, pace, pause_after_import, ciphers;
} opts;

/* --limits NAME=N,NAME=N...: fields of tl_node_config; 0 if every name is
 * known. */
static int set_limits(tl_node_config *cfg, const char *spec)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return -1;
        *eq = '\0';
        unsigned long long v = strtoull(eq + 1, NULL, 10);
        if (strcmp(kv, "max_frame") == 0) cfg->max_frame = (uint32_t)v;
        else if (strcmp(kv, "max_queue") == 0) cfg->max_queue = (size_t)v;
        else if (strcmp(kv, "max_buffers") == 0) cfg->max_buffers = (size_t)v;
        else if (strcmp(kv, "max_links") == 0) cfg->max_links = (uint32_t)v;
        else if (strcmp(kv, "max_handshakes") == 0) cfg->max_handshakes = (uint32_t)v;
        else if (strcmp(kv, "handshakes_per_addr") == 0) cfg->handshakes_per_addr = (uint32_t)v;
        else if (strcmp(kv, "handshake_ms") == 0) cfg->handshake_ms = (uint32_t)v;
        else if (strcmp(kv, "max_agents") == 0) cfg->max_agents = (uint32_t)v;
        else if (strcmp(kv, "max_requests") == 0) cfg->max_requests = (uint32_t)v;
        else return -1;
    }
    return 0;
}

/* --pause-after-import: in a checkpoint's transaction, after the node's
 * rows (it joined the store first), once a tasklet came in. */
static int pause_write(void *ud, tl__store_tx *tx)
{
    tl_node_stats s;
    (void)ud;
    (void)tx;
    tl_node_stats_get(node, &s);
    if (s.moved_in == 0)
        return TL_OK;
    printf("paused-before-commit\n");
    fflush(stdout);
    for (;;)
        pause(); /* until SIGKILL */
}
static const tl__participant pause_part = {"pause after import", pause_write, NULL, NULL};

static int first_start_source(tl_runtime *rt, const opts *o)
{
    int64_t t0 = tl_now(rt);
    for (int i = 0; i < o->count; i++) {
        carrier_l args;
        memset(&args, 0, sizeof args);
        args.n = i;
        args.due = t0 + (int64_t)i * o->pace * 1000000;
        snprintf(args.dest, sizeof args.dest, "%s", o->dest);
        int rc = tl_spawn(rt, &carrier_fn, &args, sizeof args, NULL);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

static int first_start_dest(tl_runtime *rt)
{
    collector_l args;
    memset(&args, 0, sizeof args);
    int rc = local_chan(rt, "collector", 0);
    if (rc == TL_OK)
        rc = local_chan(rt, "collector.dump", 1);
    if (rc != TL_OK)
        return rc;
    args.in = tl_chan_find_name(rt, "collector");
    args.dump = tl_chan_find_name(rt, "collector.dump");
    return tl_spawn(rt, &collector_fn, &args, sizeof args, NULL);
}

/* After a restart: what the restored collector counted, asked with "dump"
 * (for the status lines only). */
static void dest_recount(tl_runtime *rt)
{
    tl_chan *in = tl_chan_find_name(rt, "collector"), *dump = tl_chan_find_name(rt, "collector.dump");
    tl_value ask, seen = tl_nil();
    if (!in || !dump || tl_str_new(rt, "dump", 4, &ask) != TL_OK)
        return;
    while (tl_chan_try_recv(dump, &seen) == TL_OK) /* an answer nobody took */
        tl_value_set(&seen, tl_nil());
    int rc = tl_chan_try_send(in, ask);
    tl_release(ask);
    for (int i = 0; rc == TL_OK && i < 10000 && tl_type(seen) == TL_V_NIL; i++) {
        rc = tl_run_steps(rt, 1, NULL);
        if (rc == TL_OK && tl_chan_try_recv(dump, &seen) != TL_OK)
            seen = tl_nil();
    }
    if (rc == TL_OK && tl_type(seen) == TL_V_BIN) {
        size_t n;
        const uint8_t *p = (const uint8_t *)tl_str_data(seen, &n);
        mp_collected = mp_duplicates = 0;
        for (size_t i = 0; p && i < n; i++) {
            mp_collected += p[i] > 0;
            mp_duplicates += p[i] > 1 ? p[i] - 1u : 0;
        }
    }
    tl_release(seen);
}

static void print_status(tl_runtime *rt, const opts *o)
{
    static char last[256];
    char line[256];
    tl_node_stats s;
    tl_node_stats_get(node, &s);
    if (strcmp(o->role, "source") == 0)
        snprintf(line, sizeof line, "status live=%zu pending=%" PRIu64 " moved_out=%" PRIu64,
                 tl_tasklet_count(rt), s.pending, s.moved_out);
    else if (strcmp(o->role, "dest") == 0)
        snprintf(line, sizeof line, "status collected=%u dups=%u moved_in=%" PRIu64
                 " duplicates=%" PRIu64, (unsigned)mp_collected, (unsigned)mp_duplicates,
                 s.moved_in, s.duplicates);
    else
        return;
    if (strcmp(line, last) != 0) {
        printf("%s\n", line);
        snprintf(last, sizeof last, "%s", line);
    }
}

/* ---- main ---- */

static int usage(void)
{
    fprintf(stderr, "usage: migrate_peer --id ID [--secret-file FILE] [--listen ADDR] "
            "[--connect ADDR] [--store FILE] [--role cmd|source|dest] [--count N] [--dest ID] "
            "[--pace MS] [--skip FUNC] [--pause-after-import 1] [--limits NAME=N,...] [--ciphers MASK]\n"
            "(the secret in FILE, mode 600, "
            "or in $TL_NODE_SECRET; never on the command line)\n");
    return 2;
}

static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->role = "cmd";
    o->dest = "B";
    o->pace = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--id") == 0) o->id = v;
        else if (strcmp(k, "--secret-file") == 0) o->secret_file = v;
        else if (strcmp(k, "--listen") == 0) o->listen = v;
        else if (strcmp(k, "--connect") == 0) o->connect = v;
        else if (strcmp(k, "--store") == 0) o->store = v;
        else if (strcmp(k, "--role") == 0) o->role = v;
        else if (strcmp(k, "--dest") == 0) o->dest = v;
        else if (strcmp(k, "--count") == 0) o->count = atoi(v);
        else if (strcmp(k, "--pace") == 0) o->pace = atoi(v);
        else if (strcmp(k, "--skip") == 0) o->skip = v;
        else if (strcmp(k, "--pause-after-import") == 0) o->pause_after_import = atoi(v);
        else if (strcmp(k, "--limits") == 0) o->limits = v;
        else if (strcmp(k, "--ciphers") == 0) o->ciphers = atoi(v);
        else return -1;
    }
    if (argc % 2 == 0 || !o->id || o->count < 0 || o->count > MP_MAX_CARRIERS)
        return -1;
    return 0;
}

static int fail(const char *what, int rc, const char *msg)
{
    printf("fatal %s: %s: %s\n", what, tl_errname(rc), msg);
    return 1;
}

/* Registers every function but the one named skip (to make a peer that
 * refuses tasklets running it). */
static int register_all(tl_runtime *rt, const char *skip)
{
    const tl_func *fns[] = {&sender_fn, &receiver_fn, &leg_fn, &trip_fn, &carrier_fn,
                            &collector_fn};
    for (size_t i = 0; i < TL_COUNTOF(fns); i++) {
        if (skip && strcmp(skip, fns[i]->name) == 0)
            continue;
        int rc = tl_register(rt, fns[i]);
        if (rc != TL_OK)
            return rc;
    }
    return TL_OK;
}

/* After a restart of the source: which carriers it holds (carrier n was
 * spawned n-th on the first start, so its id is n + 1). */
static void print_carriers(tl_runtime *rt, const opts *o)
{
    for (int i = 0; i < o->count; i++) {
        tl_tasklet *t = tl_tasklet_find(rt, (uint64_t)i + 1);
        if (t && tl_tasklet_state(t) < TL_DONE)
            printf("trace held n=%d id=%d k=0\n", i, i + 1);
    }
}

/* Store, node, restore or first start, listen and dial. */
static int start(tl_runtime *rt, const opts *o, tl_store **st)
{
    int rc;
    if (o->store) {
        tl_policy pol = {.on_idle = 1};
        rc = tl_store_open(o->store, TL_STORE_NOSYNC, st);
        if (rc == TL_OK)
            rc = tl_store_attach(*st, rt);
        if (rc == TL_OK)
            rc = tl_store_set_policy(*st, &pol);
        if (rc != TL_OK)
            return fail("store", rc, tl_store_errmsg(*st));
    }
    tl_node_config cfg;
    static unsigned char secret[256];
    memset(&cfg, 0, sizeof cfg);
    rc = tl_node_secret_load(rt, o->secret_file, secret, sizeof secret, &cfg.secret_len);
    if (rc != TL_OK)
        return fail("secret", rc, tl_errmsg(rt));
    cfg.node_id = o->id;
    cfg.secret = secret;
    cfg.store = *st;
    cfg.log = log_line;
    if (o->limits && set_limits(&cfg, o->limits) != 0)
        return fail("--limits", TL_EINVAL, o->limits);
    rc = tl_node_new(rt, &cfg, &node);
    if (rc != TL_OK)
        return fail("tl_node_new", rc, tl_errmsg(rt));
    if (o->ciphers) /* 1 ChaCha20-Poly1305 only, 3 both (PROTOCOL.md 4.1) */
        tl__node_ciphers(node, (unsigned)o->ciphers);
    if (*st && o->pause_after_import && (rc = tl__store_join(*st, &pause_part, NULL)) != TL_OK)
        return fail("join", rc, tl_store_errmsg(*st));
    if (*st) {
        rc = tl_store_restore(*st);
        if (rc == TL_ENOENT) {
            rc = strcmp(o->role, "source") == 0 ? first_start_source(rt, o)
                 : strcmp(o->role, "dest") == 0 ? first_start_dest(rt) : TL_OK;
            if (rc == TL_OK)
                rc = tl_store_checkpoint(*st);
            printf("first-start %s\n", tl_errname(rc));
        } else if (rc == TL_OK) {
            printf("restored live=%zu\n", tl_tasklet_count(rt));
            if (strcmp(o->role, "source") == 0)
                print_carriers(rt, o);
            if (strcmp(o->role, "dest") == 0)
                dest_recount(rt);
        }
        if (rc != TL_OK)
            return fail("restore", rc, tl_store_errmsg(*st));
    }
    if (o->listen && (rc = tl_node_listen(node, o->listen)) != TL_OK)
        return fail("listen", rc, tl_node_errmsg(node));
    if (o->connect && (rc = tl_node_connect(node, o->connect)) != TL_OK)
        return fail("connect", rc, tl_node_errmsg(node));
    printf("address %s\n", o->listen ? tl_node_address(node) : "-");
    printf("ready\n");
    return 0;
}

static int run(tl_runtime *rt, const opts *o)
{
    int with_commands = strcmp(o->role, "cmd") == 0;
    while (!stopping) {
        int rc = tl_node_poll(node, 10);
        if (rc == TL_ESTORE || rc == TL_EIO || rc == TL_ENOMEM || rc == TL_EBUSY ||
            rc == TL_EMISUSE)
            return fail("tl_node_poll", rc, tl_node_errmsg(node));
        if (rc != TL_OK) /* a detached tasklet failed */
            printf("tasklet-failed %s %s\n", tl_errname(rc), tl_node_errmsg(node));
        read_commands(rt, with_commands);
        print_status(rt, o);
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    tl_runtime *rt = NULL;
    tl_store *st = NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    mp_trace = trace_line;
    signal(SIGPIPE, SIG_IGN);
    if (parse(argc, argv, &o) != 0)
        return usage();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    if (tl_runtime_new(NULL, &rt) != TL_OK)
        return 1;
    int rc = register_all(rt, o.skip);
    int status = rc != TL_OK ? fail("register", rc, tl_errmsg(rt)) : start(rt, &o, &st);
    if (status == 0)
        status = run(rt, &o);
    if (st && node) {
        rc = tl_store_checkpoint(st);
        if (rc != TL_OK)
            status = fail("last checkpoint", rc, tl_store_errmsg(st));
    }
    signal(SIGTERM, SIG_IGN); /* on_term must not see the node freed */
    if (trip_handle)
        tl_tasklet_release(trip_handle);
    tl_node_free(node);
    node = NULL;
    tl_store_close(st);
    tl_runtime_free(rt);
    printf("exit %d\n", status);
    return status;
}
