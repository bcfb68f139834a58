/*
 * test_migrate_proc.c -- migration between real processes: nodes of
 * tests/migrate_peer.c (MIGRATE_PEER, set by meson) on 127.0.0.1 and on
 * unix sockets, driven through their standard input and output.
 *
 *   - a round trip: a tasklet three calls deep, blocked receiving on a
 *     channel of its origin, moves out, waits there on the remote channel,
 *     gets a value, moves home, gets another and returns its result;
 *   - remote rendezvous both ways: a sender stays blocked until a receiver
 *     in the other process takes the value;
 *   - the secret from $TL_NODE_SECRET or a --secret-file of mode 600,
 *     never from argv (refused, and absent from /proc/PID/cmdline); a
 *     wrong secret: no link, a logged reason, nothing changed;
 *   - the same tasklet moved back home by the destination while it waits
 *     there on the remote channel (the home cancels the remote receive);
 *     its wait failing with TL_ELINK when the home is killed; and refused by
 *     a destination that lacks its function: it comes back with the error;
 *   - raw sockets that misbehave (a truncated frame, an oversized length,
 *     garbage, a newer protocol version, protocol version 1, a message
 *     before authentication): the link is dropped, the node lives on and
 *     serves a good peer; and, authenticated by hand (tests/rawsession.h),
 *     a refused transfer and an operation on an unknown channel are
 *     answered, an unknown message type, a frame in clear or an oversized
 *     length after authentication drop the link;
 *   - a destination killed (kill -9) inside the checkpoint that would hold
 *     an import, before its commit: the moved tasklet's remote send is
 *     issued only after the restarted destination committed the import
 *     sent again, so the home sees exactly one send;
 *   - exactly once under kill -9: N numbered tasklets move between two
 *     nodes with stores while either is killed and restarted again and
 *     again; afterwards both stores are restored here and each number was
 *     collected exactly once at the destination, none is left at the source.
 *
 * No assertion depends on timing: waits are bounded only to avoid hangs.
 * MIGRATE_SEED=n replays the kill instants of a run; MIGRATE_KILLS=n
 * changes how many kills during transfers the exactly-once test aims at
 * (KILLS); MIGRATE_TEST=name runs one test.  When the exactly-once test
 * fails, its stores are kept in /tmp/tl-mp-XXXXXX-kept and the lines of
 * both nodes about the numbers at fault are printed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <sodium.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "migrate_funcs.h"
#include "rawsession.h"
#include "tasklet.h"
#include "../persist/store_sqlite.h"
#include "tasklet_node.h"

#define SECRET "libtasklet-test-cluster-secret"
#define WAIT_MS 30000         /* a bound against hangs, never a expectation */
#define CARRIERS 100
#define KILLS 24              /* kill -9s during transfers in the exactly-once test */
#define MAX_KILL_DELAY_MS 150

/* ---- child processes ---- */

typedef struct peer {
    const char *name;
    const char *secret;   /* for its environment (TL_NODE_SECRET), or NULL */
    const char *argv[24];
    pid_t pid;
    int in, out;
    char part[8192];
    size_t plen;
    char **lines;
    bool *used;
    size_t nlines, cap;
    bool eof;
} peer;

#define MAX_PEERS 8
static peer *live[MAX_PEERS]; /* killed by teardown if a test fails */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static const char *peer_program(void)
{
    const char *path = getenv("MIGRATE_PEER");
    if (!path || !*path || access(path, X_OK) != 0)
        fail_msg("set MIGRATE_PEER to the built tests/migrate_peer (meson does: meson test "
                 "migrate-proc)");
    return path;
}

static void track(peer *p)
{
    for (int i = 0; i < MAX_PEERS; i++)
        if (!live[i]) {
            live[i] = p;
            return;
        }
    fail_msg("more than %d child processes", MAX_PEERS);
}

static void untrack(peer *p)
{
    for (int i = 0; i < MAX_PEERS; i++)
        if (live[i] == p)
            live[i] = NULL;
}

/* The directory of the stores of the running test, kept (copied) when it
 * fails so that the state that failed can be looked at. */
static const char *keep_dir;

static void keep_stores(void)
{
    char cmd[300];
    if (!keep_dir)
        return;
    snprintf(cmd, sizeof cmd, "cp -r %s %s-kept", keep_dir, keep_dir);
    if (system(cmd) == 0)
        fprintf(stderr, "--- the stores are kept in %s-kept\n", keep_dir);
    keep_dir = NULL;
}

static void peer_dump(peer *p)
{
    size_t from = p->nlines > 40 ? p->nlines - 40 : 0;
    int status;
    keep_stores();
    if (p->eof && p->pid > 0 && waitpid(p->pid, &status, 0) == p->pid) {
        fprintf(stderr, "--- node %s (pid %d) ended with %s %d\n", p->name, (int)p->pid,
                WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        untrack(p); /* reaped: teardown must not signal its pid */
        p->pid = 0;
    }
    fprintf(stderr, "--- the last lines of node %s (pid %d):\n", p->name, (int)p->pid);
    for (size_t i = from; i < p->nlines; i++)
        fprintf(stderr, "  %s: %s\n", p->name, p->lines[i]);
}

/* Starts (or restarts) p with its argv: argv[0] is the program. */
static void peer_spawn(peer *p)
{
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        if (p->secret)
            setenv(TL_NODE_SECRET_ENV, p->secret, 1);
        else
            unsetenv(TL_NODE_SECRET_ENV);
        execv(p->argv[0], (char *const *)p->argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->pid = pid;
    p->in = in[1];
    p->out = out[0];
    p->plen = 0;
    p->eof = false;
    track(p);
}

/* argv after the program, NULL-terminated; the secret goes in the
 * child's environment (TL_NODE_SECRET), never on its command line (NULL:
 * none, the arguments name a --secret-file). */
static void peer_start(peer *p, const char *name, const char *secret, const char *const args[])
{
    memset(p, 0, sizeof *p);
    p->name = name;
    p->secret = secret;
    p->argv[0] = peer_program();
    for (int i = 0; args[i]; i++) {
        assert_true(i + 2 < (int)TL_COUNTOF(p->argv));
        p->argv[i + 1] = args[i];
    }
    peer_spawn(p);
}

static void add_line(peer *p, const char *s)
{
    if (p->nlines == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->lines = realloc(p->lines, p->cap * sizeof *p->lines);
        p->used = realloc(p->used, p->cap * sizeof *p->used);
        assert_non_null(p->lines);
        assert_non_null(p->used);
    }
    p->lines[p->nlines] = strdup(s);
    assert_non_null(p->lines[p->nlines]);
    p->used[p->nlines++] = false;
}

/* Reads what p printed, waiting up to ms: 1 got bytes, 0 nothing, -1 EOF. */
static int peer_read(peer *p, int ms)
{
    char buf[4096];
    if (p->eof)
        return -1;
    struct pollfd pfd = {p->out, POLLIN, 0};
    int ready = poll(&pfd, 1, ms);
    if (ready <= 0)
        return 0;
    ssize_t got = read(p->out, buf, sizeof buf);
    if (got < 0)
        return errno == EINTR ? 0 : -1;
    if (got == 0) {
        p->eof = true;
        return -1;
    }
    for (ssize_t i = 0; i < got; i++) {
        if (buf[i] == '\n') {
            p->part[p->plen] = '\0';
            add_line(p, p->part);
            p->plen = 0;
        } else if (p->plen + 1 < sizeof p->part) {
            p->part[p->plen++] = buf[i];
        }
    }
    return 1;
}

static void peer_drain(peer *p, int ms)
{
    double end = now_ms() + ms;
    for (double left = ms; left > 0; left = end - now_ms())
        if (peer_read(p, (int)left + 1) < 0)
            return;
}

static const char *find_line(peer *p, const char *prefix, const char *contains, bool consume)
{
    for (size_t i = 0; i < p->nlines; i++)
        if (!p->used[i] && strncmp(p->lines[i], prefix, strlen(prefix)) == 0 &&
            (!contains || strstr(p->lines[i], contains))) {
            p->used[i] = consume;
            return p->lines[i];
        }
    return NULL;
}

/* The first line not yet taken that starts with prefix (and holds
 * contains, if given), waiting for it. */
static const char *peer_wait(peer *p, const char *prefix, const char *contains)
{
    double end = now_ms() + WAIT_MS;
    for (;;) {
        const char *line = find_line(p, prefix, contains, true);
        if (line)
            return line;
        if (now_ms() > end || p->eof) {
            peer_dump(p);
            fail_msg("node %s: no line '%s%s%s' %s", p->name, prefix, contains ? "..." : "",
                     contains ? contains : "", p->eof ? "before it ended" : "in time");
        }
        peer_read(p, 50);
    }
}

static bool peer_saw(peer *p, const char *prefix, const char *contains)
{
    return find_line(p, prefix, contains, false) != NULL;
}

static void peer_say(peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void peer_say(peer *p, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    line[n] = '\n';
    assert_int_equal(write(p->in, line, (size_t)n + 1), n + 1);
}

/* Asks cmd until the answer (starting with prefix) is exactly want. */
static void peer_until(peer *p, const char *cmd, const char *prefix, const char *want)
{
    double end = now_ms() + WAIT_MS;
    const char *got = NULL;
    while (now_ms() < end) {
        peer_say(p, "%s", cmd);
        got = peer_wait(p, prefix, NULL);
        if (strcmp(got, want) == 0)
            return;
        sleep_ms(10);
    }
    peer_dump(p);
    fail_msg("node %s: '%s' still answers '%s', not '%s'", p->name, cmd, got ? got : "",
             want);
}

/* A value from the last "key=value" in line. */
static long long field(const char *line, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, " %s=", key);
    const char *at = strstr(line, k);
    if (!at)
        fail_msg("no %s in '%s'", key, line);
    return strtoll(at + strlen(k), NULL, 10);
}

/* Asks "stats" until key=value. */
static const char *peer_until_stat(peer *p, const char *key, long long value)
{
    double end = now_ms() + WAIT_MS;
    const char *got = NULL;
    while (now_ms() < end) {
        peer_say(p, "stats");
        got = peer_wait(p, "stats ", NULL);
        if (field(got, key) == value)
            return got;
        sleep_ms(10);
    }
    peer_dump(p);
    fail_msg("node %s: %s never became %lld (%s)", p->name, key, value, got ? got : "");
    return NULL;
}

/* p's process has been waited for: its pipes go. */
static void reap(peer *p)
{
    if (p->in >= 0)
        close(p->in);
    close(p->out);
    p->in = p->out = -1;
    p->pid = 0;
    untrack(p);
}

static void peer_kill9(peer *p)
{
    int status;
    assert_int_equal(kill(p->pid, SIGKILL), 0);
    assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
    while (peer_read(p, 0) > 0)
        ;
    if (p->plen) { /* a line cut by the kill */
        p->part[p->plen] = '\0';
        add_line(p, p->part);
        p->plen = 0;
    }
    add_line(p, "--- killed by the test");
    reap(p);
}

/* Ends p cleanly (EOF on its input) and expects exit 0. */
static void peer_stop(peer *p)
{
    int status = 0;
    close(p->in);
    p->in = -1;
    double end = now_ms() + WAIT_MS;
    pid_t got = 0;
    while ((got = waitpid(p->pid, &status, WNOHANG)) == 0 && now_ms() < end)
        peer_read(p, 20);
    while (peer_read(p, 0) > 0)
        ;
    if (got == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &status, 0);
        peer_dump(p);
        fail_msg("node %s did not stop within %d ms", p->name, WAIT_MS);
    }
    pid_t pid = p->pid;
    reap(p);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        peer_dump(p);
        fail_msg("node %s (pid %d) ended with %s %d", p->name, (int)pid,
                 WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
}

static bool peer_alive(peer *p)
{
    int status;
    return p->pid > 0 && waitpid(p->pid, &status, WNOHANG) == 0;
}

static void peer_free(peer *p)
{
    for (size_t i = 0; i < p->nlines; i++)
        free(p->lines[i]);
    free(p->lines);
    free(p->used);
    p->lines = NULL;
    p->used = NULL;
    p->nlines = p->cap = 0;
}

/* Starts a listening node (cmd role) and returns its address. */
static const char *start_listener(peer *p, const char *name, const char *listen,
                                  const char *secret)
{
    const char *args[] = {"--id", name, "--listen", listen, NULL};
    peer_start(p, name, secret, args);
    const char *line = peer_wait(p, "address ", NULL);
    peer_wait(p, "ready", NULL);
    return line + strlen("address ");
}

static void start_dialer(peer *p, const char *name, const char *addr, const char *secret)
{
    const char *args[] = {"--id", name, "--connect", addr, NULL};
    peer_start(p, name, secret, args);
    peer_wait(p, "ready", NULL);
}

/* ---- fixtures ---- */

typedef struct fixture {
    char dir[64];
    uint64_t rng;
    peer a, b, c;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/tl-mp-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    const char *seed = getenv("MIGRATE_SEED");
    fx->rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    if (fx->rng == 0)
        fx->rng = 1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    char cmd[128];
    keep_dir = NULL;
    for (int i = 0; i < MAX_PEERS; i++)
        if (live[i]) {
            kill(live[i]->pid, SIGKILL);
            waitpid(live[i]->pid, NULL, 0);
            close(live[i]->in);
            close(live[i]->out);
            live[i] = NULL;
        }
    peer_free(&fx->a);
    peer_free(&fx->b);
    peer_free(&fx->c);
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    int rc = system(cmd);
    free(fx);
    return rc == 0 ? 0 : -1;
}

static uint64_t next_rand(fixture *fx)
{
    fx->rng ^= fx->rng << 13;
    fx->rng ^= fx->rng >> 7;
    fx->rng ^= fx->rng << 17;
    return fx->rng;
}

/* ---- 1. a round trip ---- */

/* ciphers: NULL, or the cipher mask A offers (--ciphers; "1": the two
 * nodes must agree on ChaCha20-Poly1305). */
static void round_trip(fixture *fx, const char *listen, const char *ciphers)
{
    peer *a = &fx->a, *b = &fx->b;
    const char *addr = start_listener(b, "B", listen, SECRET);
    const char *args[] = {"--id", "A", "--connect", addr, "--ciphers", ciphers, NULL};
    if (ciphers) {
        peer_start(a, "A", SECRET, args);
        peer_wait(a, "ready", NULL);
    } else {
        start_dialer(a, "A", addr, SECRET);
    }
    peer_until(a, "peer B", "peer B", "peer B 1");
    if (ciphers && strcmp(ciphers, "1") == 0) {
        peer_wait(a, "log ", "to B up (ChaCha20-Poly1305)");
        peer_wait(b, "log ", "to A up (ChaCha20-Poly1305)");
    }

    /* three calls deep, blocked receiving on trip.c at home */
    peer_say(a, "trip-start");
    assert_string_equal(peer_wait(a, "trip-start", NULL), "trip-start TL_OK");
    char blocked_recv[32];
    snprintf(blocked_recv, sizeof blocked_recv, "trip-state %d %d", TL_BLOCKED, TL_WAIT_RECV);
    peer_until(a, "trip-state", "trip-state", blocked_recv);

    peer_say(a, "migrate-trip B");
    assert_string_equal(peer_wait(a, "migrate ", NULL), "migrate 0 TL_OK");
    peer_say(a, "trip-state");
    const char *st = peer_wait(a, "trip-state", NULL);
    assert_int_equal(atoi(st + strlen("trip-state ")), TL_KILLED); /* the handle: moved */

    /* at B it waits on the remote channel: an agent receives on trip.c at home */
    peer_until_stat(b, "moved_in", 1);
    peer_until(a, "balance trip.c", "balance trip.c", "balance trip.c -1");
    peer_say(a, "send trip.c 42");
    peer_wait(a, "sent trip.c 42", NULL);

    /* it got 42 there, moved home and waits on trip.c again, locally */
    peer_until_stat(a, "moved_in", 1);
    peer_until(a, "balance trip.c", "balance trip.c", "balance trip.c -1");
    peer_say(a, "send trip.c 43");
    peer_wait(a, "sent trip.c 43", NULL);

    /* 42 * 1000 + 43, plus each frame's own local: 1 + 11 + 21 + 31 */
    peer_say(a, "recv trip.r");
    assert_string_equal(peer_wait(a, "recv trip.r", NULL), "recv trip.r [42107,B,A]");

    const char *sa = peer_until_stat(a, "live", 0);
    assert_int_equal(field(sa, "moved_out"), 1);
    assert_int_equal(field(sa, "moved_in"), 1);
    assert_int_equal(field(sa, "remote_ops"), 1);
    assert_int_equal(field(sa, "pending"), 0);
    const char *sb = peer_until_stat(b, "moved_out", 1);
    assert_int_equal(field(sb, "moved_in"), 1);
    assert_int_equal(field(sb, "live"), 0);
    assert_false(peer_saw(a, "tasklet-failed", NULL));
    assert_false(peer_saw(b, "tasklet-failed", NULL));
    peer_stop(a);
    peer_stop(b);
}

static void test_round_trip_tcp(void **state)
{
    round_trip(*state, "tcp://127.0.0.1:0", NULL);
}

static void test_round_trip_unix(void **state)
{
    fixture *fx = *state;
    char listen[128];
    snprintf(listen, sizeof listen, "unix:%s/b.sock", fx->dir);
    round_trip(fx, listen, NULL);
}

/* The same tasklet, moved back home by the destination while it waits
 * there on the remote channel: the home cancels its agent's receive, then
 * the tasklet arrives blocked on the (now local) channel and receives both
 * values at home. */
static void test_move_while_waiting_remotely(void **state)
{
    fixture *fx = *state;
    peer *a = &fx->a, *b = &fx->b;
    const char *addr = start_listener(b, "B", "tcp://127.0.0.1:0", SECRET);
    start_dialer(a, "A", addr, SECRET);
    peer_until(a, "peer B", "peer B", "peer B 1");
    peer_say(a, "trip-start");
    assert_string_equal(peer_wait(a, "trip-start", NULL), "trip-start TL_OK");
    char blocked_recv[32];
    snprintf(blocked_recv, sizeof blocked_recv, "trip-state %d %d", TL_BLOCKED, TL_WAIT_RECV);
    peer_until(a, "trip-state", "trip-state", blocked_recv);
    peer_say(a, "migrate-trip B");
    assert_string_equal(peer_wait(a, "migrate ", NULL), "migrate 0 TL_OK");
    peer_until_stat(b, "moved_in", 1);
    peer_until(a, "balance trip.c", "balance trip.c", "balance trip.c -1"); /* the agent */

    peer_say(b, "migrate-blocked mp.leg A");
    assert_string_equal(peer_wait(b, "migrate-blocked", NULL), "migrate-blocked 1 TL_OK");
    peer_until_stat(b, "moved_out", 1);
    /* home: the tasklet itself waits on trip.c, the agent is gone */
    peer_until_stat(a, "moved_in", 1);
    peer_until(a, "balance trip.c", "balance trip.c", "balance trip.c -1");
    const char *sa = peer_until_stat(a, "live", 1);
    assert_int_equal(field(sa, "pending"), 0);
    peer_say(a, "send trip.c 42");
    peer_wait(a, "sent trip.c 42", NULL);
    peer_say(a, "send trip.c 43");
    peer_wait(a, "sent trip.c 43", NULL);
    peer_say(a, "recv trip.r");
    assert_string_equal(peer_wait(a, "recv trip.r", NULL), "recv trip.r [42107,A,A]");
    assert_int_equal(field(peer_until_stat(b, "live", 0), "moved_in"), 1);
    assert_false(peer_saw(a, "tasklet-failed", NULL));
    assert_false(peer_saw(b, "tasklet-failed", NULL));
    peer_stop(a);
    peer_stop(b);
}

static void good_client_served(fixture *fx, const char *addr, int v);

/* The home of the channel is killed while the moved tasklet waits on it
 * remotely: the wait fails with TL_ELINK at the destination (mp.leg does
 * not catch it, so the tasklet fails), which stays healthy. */
static void test_home_killed_while_waiting(void **state)
{
    fixture *fx = *state;
    peer *a = &fx->a, *b = &fx->b;
    const char *addr = start_listener(b, "B", "tcp://127.0.0.1:0", SECRET);
    start_dialer(a, "A", addr, SECRET);
    peer_until(a, "peer B", "peer B", "peer B 1");
    peer_say(a, "trip-start");
    assert_string_equal(peer_wait(a, "trip-start", NULL), "trip-start TL_OK");
    char blocked_recv[32];
    snprintf(blocked_recv, sizeof blocked_recv, "trip-state %d %d", TL_BLOCKED, TL_WAIT_RECV);
    peer_until(a, "trip-state", "trip-state", blocked_recv);
    peer_say(a, "migrate-trip B");
    assert_string_equal(peer_wait(a, "migrate ", NULL), "migrate 0 TL_OK");
    peer_until_stat(b, "moved_in", 1);
    peer_until(a, "balance trip.c", "balance trip.c", "balance trip.c -1");

    peer_kill9(a);
    const char *failed = peer_wait(b, "tasklet-failed", NULL);
    if (!strstr(failed, "TL_ELINK"))
        fail_msg("the remote wait ended with '%s', expected TL_ELINK", failed);
    const char *sb = peer_until_stat(b, "live", 0);
    assert_int_equal(field(sb, "links_dropped"), 1);
    peer_say(b, "chan box");
    peer_wait(b, "chan box TL_OK", NULL);
    good_client_served(fx, addr, 11);
    peer_stop(b);
}

/* A destination that lacks the tasklet's function refuses it: the
 * tasklet comes back to the origin under a new id with the error thrown at
 * its suspension point (mp.leg does not catch it, so it fails there). */
static void test_refused_transfer_comes_back(void **state)
{
    fixture *fx = *state;
    peer *a = &fx->a, *b = &fx->b;
    const char *args[] = {"--id", "B", "--listen", "tcp://127.0.0.1:0",
                          "--skip", "mp.leg", NULL};
    peer_start(b, "B", SECRET, args);
    const char *addr = peer_wait(b, "address ", NULL) + strlen("address ");
    peer_wait(b, "ready", NULL);
    start_dialer(a, "A", addr, SECRET);
    peer_until(a, "peer B", "peer B", "peer B 1");
    peer_say(a, "trip-start");
    assert_string_equal(peer_wait(a, "trip-start", NULL), "trip-start TL_OK");
    char blocked_recv[32];
    snprintf(blocked_recv, sizeof blocked_recv, "trip-state %d %d", TL_BLOCKED, TL_WAIT_RECV);
    peer_until(a, "trip-state", "trip-state", blocked_recv);
    peer_say(a, "migrate-trip B");
    assert_string_equal(peer_wait(a, "migrate ", NULL), "migrate 0 TL_OK");

    const char *failed = peer_wait(a, "tasklet-failed", NULL);
    if (!strstr(failed, "TL_ENOFUNC") || !strstr(failed, "refused"))
        fail_msg("the tasklet came back with '%s', expected TL_ENOFUNC and a refusal", failed);
    peer_wait(b, "log ", "refused tasklet");
    const char *sa = peer_until_stat(a, "refused", 1);
    assert_int_equal(field(sa, "moved_out"), 0);
    assert_int_equal(field(sa, "pending"), 0);
    assert_int_equal(field(peer_until_stat(a, "live", 0), "moved_in"), 0);
    const char *sb = peer_until_stat(b, "live", 0);
    assert_int_equal(field(sb, "moved_in"), 0);
    peer_stop(a);
    peer_stop(b);
}

/* ---- 2. remote rendezvous, both ways ---- */

/* `from` sends v on `to`'s channel name; it stays blocked (an agent sends
 * there) until `to` receives. */
static void remote_send(peer *from, peer *to, const char *name, int v)
{
    char path[64], sent[80], recv[80], waiting[80], ask[80];
    snprintf(path, sizeof path, "%s/%s", to->name, name);
    snprintf(sent, sizeof sent, "sent %s %d", path, v);
    snprintf(recv, sizeof recv, "recv %s %d", name, v);
    snprintf(waiting, sizeof waiting, "balance %s 1", name);
    snprintf(ask, sizeof ask, "balance %s", name);
    peer_say(from, "send %s %d", path, v);
    peer_until(to, ask, "balance", waiting);
    /* the sender's node answers in order: no "sent" before this answer */
    peer_say(from, "stats");
    peer_wait(from, "stats ", NULL);
    assert_false(peer_saw(from, sent, NULL));
    peer_say(to, "recv %s", name);
    peer_wait(to, recv, NULL);
    assert_string_equal(peer_wait(from, "sent ", NULL), sent);
}

/* `from` receives on `to`'s channel name; it stays blocked until `to`
 * sends. */
static void remote_recv(peer *from, peer *to, const char *name, int v)
{
    char path[64], got[80], sent[80], waiting[80], ask[80];
    snprintf(path, sizeof path, "%s/%s", to->name, name);
    snprintf(got, sizeof got, "recv %s %d", path, v);
    snprintf(sent, sizeof sent, "sent %s %d", name, v);
    snprintf(waiting, sizeof waiting, "balance %s -1", name);
    snprintf(ask, sizeof ask, "balance %s", name);
    peer_say(from, "recv %s", path);
    peer_until(to, ask, "balance", waiting);
    peer_say(from, "stats");
    peer_wait(from, "stats ", NULL);
    assert_false(peer_saw(from, "recv ", NULL));
    peer_say(to, "send %s %d", name, v);
    peer_wait(to, sent, NULL);
    assert_string_equal(peer_wait(from, "recv ", NULL), got);
}

static void test_remote_rendezvous(void **state)
{
    fixture *fx = *state;
    peer *a = &fx->a, *b = &fx->b;
    const char *addr = start_listener(b, "B", "tcp://127.0.0.1:0", SECRET);
    start_dialer(a, "A", addr, SECRET);
    peer_until(a, "peer B", "peer B", "peer B 1");
    peer_until(b, "peer A", "peer A", "peer A 1");
    peer_say(b, "chan box");
    peer_wait(b, "chan box TL_OK", NULL);
    peer_say(a, "chan pool");
    peer_wait(a, "chan pool TL_OK", NULL);

    remote_send(a, b, "box", 5);  /* dialer -> listener */
    remote_recv(a, b, "box", 9);
    remote_send(b, a, "pool", 7); /* listener -> dialer, over the accepted link */
    remote_recv(b, a, "pool", 8);

    assert_int_equal(field(peer_until_stat(a, "remote_ops", 2), "links_up"), 1);
    assert_int_equal(field(peer_until_stat(b, "remote_ops", 2), "links_up"), 1);
    assert_false(peer_saw(a, "send-error", NULL));
    assert_false(peer_saw(b, "recv-error", NULL));
    peer_stop(a);
    peer_stop(b);
}

/* ---- 3. secrets: where they come from, a wrong one ---- */

/* A file holding secret and a newline, with mode `mode`; its path in
 * path (unlink it). */
static void secret_file(const char *secret, mode_t mode, char path[64])
{
    snprintf(path, 64, "/tmp/tl-mp-secret-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, secret, strlen(secret)), (ssize_t)strlen(secret));
    assert_int_equal(write(fd, "\n", 1), 1);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* Waits for p's exit (bounded): its exit status, -1 for a signal. */
static int peer_exit_status(peer *p)
{
    int status = 0;
    close(p->in);
    p->in = -1;
    double end = now_ms() + WAIT_MS;
    pid_t got;
    while ((got = waitpid(p->pid, &status, WNOHANG)) == 0 && now_ms() < end)
        peer_read(p, 20);
    while (peer_read(p, 0) > 0)
        ;
    if (got == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &status, 0);
        fail_msg("node %s did not exit within %d ms", p->name, WAIT_MS);
    }
    reap(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The node reads its secret from $TL_NODE_SECRET or a --secret-file only
 * its owner may read, never from argv: --secret is refused, so are a file
 * others may read and no secret at all; a running node's command line
 * does not hold the secret; a node whose secret came from a file links
 * with one whose secret came from the environment. */
static void test_secret_sources(void **state)
{
    fixture *fx = *state;
    peer *a = &fx->a, *b = &fx->b;
    char path[64], open_path[64];
    const char *on_argv[] = {"--id", "A", "--secret", SECRET, NULL};
    peer_start(a, "A", NULL, on_argv);
    assert_int_equal(peer_exit_status(a), 2);
    peer_free(a);

    secret_file(SECRET, 0644, open_path);
    const char *open_file[] = {"--id", "A", "--secret-file", open_path, NULL};
    peer_start(a, "A", NULL, open_file);
    assert_non_null(strstr(peer_wait(a, "fatal secret", NULL), "TL_EPERM"));
    assert_int_equal(peer_exit_status(a), 1);
    peer_free(a);
    unlink(open_path);

    const char *none[] = {"--id", "A", NULL};
    peer_start(a, "A", NULL, none);
    assert_non_null(strstr(peer_wait(a, "fatal secret", NULL), "TL_ENOENT"));
    assert_int_equal(peer_exit_status(a), 1);
    peer_free(a);

    secret_file(SECRET, 0600, path);
    const char *args[] = {"--id", "B", "--secret-file", path, "--listen", "tcp://127.0.0.1:0",
                          NULL};
    peer_start(b, "B", NULL, args);
    char addr[128];
    snprintf(addr, sizeof addr, "%s", peer_wait(b, "address ", NULL) + 8);
    peer_wait(b, "ready", NULL);
    start_dialer(a, "A", addr, SECRET);
    peer_until(a, "peer B", "peer B", "peer B 1");
    char proc[64], cmdline[4096];
    snprintf(proc, sizeof proc, "/proc/%d/cmdline", (int)b->pid);
    FILE *f = fopen(proc, "r");
    assert_non_null(f);
    size_t k = fread(cmdline, 1, sizeof cmdline - 1, f);
    fclose(f);
    for (size_t i = 0; i < k; i++)
        cmdline[i] = cmdline[i] ? cmdline[i] : ' ';
    cmdline[k] = '\0';
    assert_non_null(strstr(cmdline, "--secret-file"));
    assert_null(strstr(cmdline, SECRET));
    peer_stop(a);
    peer_stop(b);
    unlink(path);
}

static void test_wrong_secret(void **state)
{
    fixture *fx = *state;
    peer *a = &fx->a, *b = &fx->b;
    char path[64];
    const char *addr = start_listener(b, "B", "tcp://127.0.0.1:0", SECRET);
    secret_file("not-the-cluster-secret-at-all", 0600, path);
    const char *args[] = {"--id", "A", "--secret-file", path, "--connect", addr, NULL};
    peer_start(a, "A", NULL, args);
    peer_wait(a, "ready", NULL);
    peer_say(b, "chan box");
    peer_wait(b, "chan box TL_OK", NULL);

    /* the listener says why, and the dialer keeps failing */
    peer_wait(b, "log ", "authentication failed");
    peer_wait(a, "log ", "dropped");

    peer_say(a, "send B/box 1");
    const char *err = peer_wait(a, "send-error B/box", NULL);
    assert_non_null(strstr(err, "TL_ELINK"));
    peer_say(a, "peer B");
    assert_string_equal(peer_wait(a, "peer B", NULL), "peer B 0");
    peer_say(b, "peer A");
    assert_string_equal(peer_wait(b, "peer A", NULL), "peer A 0");
    peer_say(b, "balance box");
    assert_string_equal(peer_wait(b, "balance box", NULL), "balance box 0");
    const char *stats[2];
    peer_say(a, "stats");
    stats[0] = peer_wait(a, "stats ", NULL);
    peer_say(b, "stats");
    stats[1] = peer_wait(b, "stats ", NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(field(stats[i], "links_up"), 0);
        assert_int_equal(field(stats[i], "moved_in"), 0);
        assert_int_equal(field(stats[i], "moved_out"), 0);
        assert_int_equal(field(stats[i], "remote_ops"), 0);
    }
    assert_int_equal(field(stats[1], "live"), 0);
    assert_false(peer_saw(b, "log ", " up"));
    assert_false(peer_saw(a, "log ", " up"));
    peer_stop(a);
    peer_stop(b);
    unlink(path);
}

/* ---- 4. raw sockets that misbehave ---- */

static int dial_tcp(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    assert_non_null(colon);
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = htons((uint16_t)atoi(colon + 1));
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&in, sizeof in), 0);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    /* the peer may already have dropped us: a short or failed send is fine */
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    (void)k;
}

/* One frame: 4-byte big-endian length, then msgpack. */
static void send_frame(int fd, const msgpack_sbuffer *sb)
{
    unsigned char head[4] = {(unsigned char)(sb->size >> 24), (unsigned char)(sb->size >> 16),
                             (unsigned char)(sb->size >> 8), (unsigned char)sb->size};
    char *all = malloc(sb->size + 4);
    assert_non_null(all);
    memcpy(all, head, 4);
    memcpy(all + 4, sb->data, sb->size);
    send_all(fd, all, sb->size + 4);
    free(all);
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void send_hello(int fd, unsigned version)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    unsigned char nonce[32] = {1, 2, 3};
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_uint8(&pk, 1);
    pack_cstr(&pk, "libtasklet-node");
    msgpack_pack_uint32(&pk, version);
    pack_cstr(&pk, "rogue");
    msgpack_pack_bin(&pk, sizeof nonce);
    msgpack_pack_bin_body(&pk, nonce, sizeof nonce);
    msgpack_pack_uint8(&pk, 1); /* the cipher offer: ChaCha20-Poly1305 */
    send_frame(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
}

/* One frame read from a node: its bytes and their unpacked object (whose
 * strings and binaries point into the bytes). */
typedef struct frame {
    unsigned char *body;
    msgpack_unpacked up;
} frame;

static void frame_free(frame *f)
{
    msgpack_unpacked_destroy(&f->up);
    free(f->body);
    f->body = NULL;
}

static bool recv_exact(int fd, unsigned char *dst, size_t n, double end)
{
    for (size_t got = 0; got < n;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (now_ms() > end)
            fail_msg("no frame from the node within %d ms", WAIT_MS);
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t k = recv(fd, dst + got, n - got, 0);
        if (k <= 0)
            return false;
        got += (size_t)k;
    }
    return true;
}

/* Reads one frame (bounded wait); false on EOF. */
static bool read_frame(int fd, frame *f)
{
    unsigned char head[4];
    double end = now_ms() + WAIT_MS;
    size_t off = 0;
    if (!recv_exact(fd, head, 4, end))
        return false;
    size_t n = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
    f->body = malloc(n ? n : 1);
    assert_non_null(f->body);
    msgpack_unpacked_init(&f->up);
    if (!recv_exact(fd, f->body, n, end)) {
        frame_free(f);
        return false;
    }
    assert_int_equal(msgpack_unpack_next(&f->up, (const char *)f->body, n, &off),
                     MSGPACK_UNPACK_SUCCESS);
    return true;
}

static int frame_type(const frame *f)
{
    assert_int_equal(f->up.data.type, MSGPACK_OBJECT_ARRAY);
    assert_true(f->up.data.via.array.size >= 1);
    return (int)f->up.data.via.array.ptr[0].via.u64;
}

/* What came back until the node closed the connection. */
typedef struct reply {
    int frames;
    int first_type;      /* type of the first frame after the node's HELLO */
    long long err_code;
    char err_msg[256];
} reply;

/* Reads frames until EOF; fails if the node keeps the link open. */
static reply read_until_closed(int fd, bool expect_hello)
{
    reply r = {0, -1, 0, ""};
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    double end = now_ms() + WAIT_MS;
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        double left = end - now_ms();
        if (left <= 0)
            fail_msg("the node kept a misbehaving connection open for %d ms", WAIT_MS);
        if (poll(&pfd, 1, (int)left + 1) <= 0)
            continue;
        if (len + 4096 > cap) {
            cap = cap ? 2 * cap : 8192;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t got = recv(fd, buf + len, cap - len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* EOF or reset: dropped */
        len += (size_t)got;
    }
    size_t off = 0;
    while (len - off >= 4) {
        size_t n = (size_t)buf[off] << 24 | (size_t)buf[off + 1] << 16 |
                   (size_t)buf[off + 2] << 8 | buf[off + 3];
        if (len - off - 4 < n)
            break;
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t at = 0;
        assert_int_equal(msgpack_unpack_next(&up, (const char *)buf + off + 4, n, &at),
                         MSGPACK_UNPACK_SUCCESS);
        const msgpack_object *o = &up.data;
        assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
        assert_true(o->via.array.size >= 1);
        int type = (int)o->via.array.ptr[0].via.u64;
        if (r.frames == 0 && expect_hello) {
            assert_int_equal(type, 1);
            assert_int_equal(o->via.array.ptr[2].via.u64, TL_PROTO_VERSION);
        } else {
            if (r.first_type < 0)
                r.first_type = type;
            if (type == 3 && o->via.array.size >= 3) {
                r.err_code = o->via.array.ptr[1].via.i64;
                const msgpack_object *m = &o->via.array.ptr[2];
                if (m->type == MSGPACK_OBJECT_STR)
                    snprintf(r.err_msg, sizeof r.err_msg, "%.*s", (int)m->via.str.size,
                             m->via.str.ptr);
            }
        }
        r.frames++;
        msgpack_unpacked_destroy(&up);
        off += 4 + n;
    }
    free(buf);
    return r;
}

/* A good peer still gets a link and a rendezvous with b. */
static void good_client_served(fixture *fx, const char *addr, int v)
{
    peer *c = &fx->c;
    peer_free(c);
    start_dialer(c, "C", addr, SECRET);
    peer_until(c, "peer B", "peer B", "peer B 1");
    peer_say(&fx->b, "recv box");
    peer_say(c, "send B/box %d", v);
    char want[32];
    snprintf(want, sizeof want, "recv box %d", v);
    peer_wait(&fx->b, want, NULL);
    peer_wait(c, "sent B/box", NULL);
    peer_stop(c);
}

static void test_raw_misbehaviour(void **state)
{
    fixture *fx = *state;
    peer *b = &fx->b;
    char addr[128];
    snprintf(addr, sizeof addr, "%s", start_listener(b, "B", "tcp://127.0.0.1:0", SECRET));
    peer_say(b, "chan box");
    peer_wait(b, "chan box TL_OK", NULL);
    int fd;
    reply r;

    /* a truncated frame, kept open while a good peer is served, then closed
     * (after reading the node's HELLO, so that the close is a FIN, not a
     * reset) */
    frame hello;
    fd = dial_tcp(addr);
    assert_true(read_frame(fd, &hello));
    assert_int_equal(frame_type(&hello), 1);
    frame_free(&hello);
    send_all(fd, "\x00\x00\x00\x64\x95\x01", 6);
    good_client_served(fx, addr, 1);
    close(fd);
    char closed[200]; /* not "link ADDR to C dropped: ...", the good peer's */
    snprintf(closed, sizeof closed, "link %s dropped: closed by the peer", addr);
    peer_wait(b, "log ", closed);
    assert_true(peer_alive(b));
    good_client_served(fx, addr, 2);

    /* a length prefix of 0xFFFFFFFF */
    fd = dial_tcp(addr);
    send_all(fd, "\xff\xff\xff\xff", 4);
    r = read_until_closed(fd, true);
    close(fd);
    peer_wait(b, "log ", "4294967295");
    assert_true(peer_alive(b));
    good_client_served(fx, addr, 3);

    /* garbage that is not msgpack (0xc1 is never used), then a valid
     * frame that is not an array */
    fd = dial_tcp(addr);
    send_all(fd, "\x00\x00\x00\x03\xc1\xc1\xc1", 7);
    r = read_until_closed(fd, true);
    close(fd);
    peer_wait(b, "log ", "malformed frame");
    fd = dial_tcp(addr);
    send_all(fd, "\x00\x00\x00\x01\x07", 5);
    r = read_until_closed(fd, true);
    close(fd);
    peer_wait(b, "log ", "malformed frame");
    assert_true(peer_alive(b));
    good_client_served(fx, addr, 4);

    /* a HELLO of a newer protocol version: an ERROR that says so */
    fd = dial_tcp(addr);
    send_hello(fd, TL_PROTO_VERSION + 1);
    r = read_until_closed(fd, true);
    close(fd);
    assert_int_equal(r.first_type, 3);
    assert_int_equal(r.err_code, TL_EPROTO);
    char speaks[32];
    snprintf(speaks, sizeof speaks, "speaks %d", TL_PROTO_VERSION);
    if (!strstr(r.err_msg, "version") || !strstr(r.err_msg, speaks))
        fail_msg("the ERROR frame does not name the version: '%s'", r.err_msg);
    peer_wait(b, "log ", "protocol version");
    assert_true(peer_alive(b));
    good_client_served(fx, addr, 5);

    /* a HELLO of protocol version 1 (frames in clear): an ERROR that
     * names both versions */
    fd = dial_tcp(addr);
    send_hello(fd, 1);
    r = read_until_closed(fd, true);
    close(fd);
    assert_int_equal(r.first_type, 3);
    assert_int_equal(r.err_code, TL_EPROTO);
    if (!strstr(r.err_msg, "version 1 is not supported") || !strstr(r.err_msg, "speaks 3"))
        fail_msg("the ERROR frame does not name both versions: '%s'", r.err_msg);
    peer_wait(b, "log ", "the peer speaks protocol version 1, this node 3");
    assert_true(peer_alive(b));

    /* a HELLO of protocol version 2 (one cipher, no records): the same */
    fd = dial_tcp(addr);
    send_hello(fd, 2);
    r = read_until_closed(fd, true);
    close(fd);
    assert_int_equal(r.first_type, 3);
    assert_int_equal(r.err_code, TL_EPROTO);
    if (!strstr(r.err_msg, "version 2 is not supported") || !strstr(r.err_msg, "speaks 3"))
        fail_msg("the ERROR frame does not name both versions: '%s'", r.err_msg);
    peer_wait(b, "log ", "the peer speaks protocol version 2, this node 3");
    assert_true(peer_alive(b));

    /* a message before authentication: first thing, then after a HELLO */
    fd = dial_tcp(addr);
    send_all(fd, "\x00\x00\x00\x03\x92\x0a\x90", 7); /* [10, []]: XFER */
    r = read_until_closed(fd, true);
    close(fd);
    peer_wait(b, "log ", "before authentication");
    fd = dial_tcp(addr);
    send_hello(fd, TL_PROTO_VERSION);
    send_all(fd, "\x00\x00\x00\x05\x94\x14\x01\x01\xc0", 9); /* [20, 1, 1, nil]: OP */
    r = read_until_closed(fd, true);
    close(fd);
    peer_wait(b, "log ", "before authentication");
    assert_true(peer_alive(b));
    good_client_served(fx, addr, 6);

    peer_say(b, "stats");
    const char *st = peer_wait(b, "stats ", NULL);
    assert_int_equal(field(st, "moved_in"), 0);
    assert_int_equal(field(st, "links_up"), 6); /* the good clients only */
    assert_false(peer_saw(b, "tasklet-failed", NULL));
    peer_stop(b);
}

/* An authenticated raw client: the handshake of protocol 3 done by hand
 * (tests/rawsession.h, from PROTOCOL.md section 4), so that frames after
 * authentication can misbehave; they are sealed like a node's, with the
 * cipher picked from offer (1 ChaCha20-Poly1305, 3 both) and the node's. */
static int raw_login_offer(const char *addr, const char *id, const char *secret,
                           unsigned offer, raw_session *s)
{
    unsigned char mac[crypto_auth_BYTES];
    frame up;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    raw_session_init(s, secret, id, 1);
    s->offer = offer;
    int fd = dial_tcp(addr);
    assert_true(read_frame(fd, &up));
    assert_int_equal(frame_type(&up), 1);
    assert_int_equal(up.up.data.via.array.size, 6);
    const msgpack_object *key = &up.up.data.via.array.ptr[4];
    assert_int_equal(key->via.bin.size, 32);
    assert_int_equal(raw_session_hello(s, "B", (const unsigned char *)key->via.bin.ptr,
                                       (unsigned)up.up.data.via.array.ptr[5].via.u64), 0);
    frame_free(&up);

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_uint8(&pk, 1);
    pack_cstr(&pk, "libtasklet-node");
    msgpack_pack_uint32(&pk, TL_PROTO_VERSION);
    pack_cstr(&pk, id);
    msgpack_pack_bin(&pk, 32);
    msgpack_pack_bin_body(&pk, s->pk, 32);
    msgpack_pack_uint8(&pk, (uint8_t)offer);
    send_frame(fd, &sb);
    msgpack_sbuffer_clear(&sb);
    raw_session_mac(s, 'C', mac);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 2);
    msgpack_pack_bin(&pk, sizeof mac);
    msgpack_pack_bin_body(&pk, mac, sizeof mac);
    send_frame(fd, &sb);
    msgpack_sbuffer_destroy(&sb);

    /* the node's AUTH proves it holds the secret too */
    assert_true(read_frame(fd, &up));
    assert_int_equal(frame_type(&up), 2);
    raw_session_mac(s, 'S', mac);
    assert_int_equal(up.up.data.via.array.ptr[1].via.bin.size, sizeof mac);
    assert_memory_equal(up.up.data.via.array.ptr[1].via.bin.ptr, mac, sizeof mac);
    frame_free(&up);
    return fd;
}

static int raw_login(const char *addr, const char *id, const char *secret, raw_session *s)
{
    return raw_login_offer(addr, id, secret, 1, s);
}

/* Packs one message and sends it sealed. */
static void send_packed(int fd, raw_session *s, void (*pack)(msgpack_packer *pk, void *ud),
                        void *ud)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack(&pk, ud);
    unsigned char *f = malloc(raw_sealed_size(sb.size));
    assert_non_null(f);
    send_all(fd, f, raw_seal(s, sb.data, sb.size, f));
    free(f);
    msgpack_sbuffer_destroy(&sb);
}

/* Reads one sealed frame and opens it (it must authenticate). */
static bool read_sealed(int fd, raw_session *s, frame *f)
{
    unsigned char head[4];
    double end = now_ms() + WAIT_MS;
    size_t off = 0, len = 0;
    if (!recv_exact(fd, head, 4, end))
        return false;
    size_t n = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
    f->body = malloc(n + 4);
    assert_non_null(f->body);
    memcpy(f->body, head, 4);
    msgpack_unpacked_init(&f->up);
    if (!recv_exact(fd, f->body + 4, n, end)) {
        frame_free(f);
        return false;
    }
    assert_int_equal(raw_open(s, f->body, n, &len), 0);
    assert_int_equal(msgpack_unpack_next(&f->up, (const char *)f->body + 4, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    return true;
}

static void pack_bad_xfer(msgpack_packer *pk, void *ud)
{
    (void)ud; /* [10, [[xid (32 hex digits), bin "not a snapshot"]]] */
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, 10);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    pack_cstr(pk, "0123456789abcdef0123456789abcdef");
    msgpack_pack_bin(pk, 14);
    msgpack_pack_bin_body(pk, "not a snapshot", 14);
}

static void pack_op_unknown(msgpack_packer *pk, void *ud)
{
    (void)ud; /* [20, req 7, RECV, [0, "nosuch"], nil] */
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint8(pk, 20);
    msgpack_pack_uint8(pk, 7);
    msgpack_pack_uint8(pk, TL_OP_RECV);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, 0);
    pack_cstr(pk, "nosuch");
    msgpack_pack_nil(pk);
}

static void pack_unknown_type(msgpack_packer *pk, void *ud)
{
    (void)ud;
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint8(pk, 99);
}

/* After authentication: a refused transfer and an operation on an unknown
 * channel are answered (NACK, DONE with TL_ENOENT) and the link stays;
 * an unknown message type and a length of 0xFFFFFFFF drop it. */
static void test_raw_after_auth(void **state)
{
    fixture *fx = *state;
    peer *b = &fx->b;
    char addr[128];
    frame up;
    snprintf(addr, sizeof addr, "%s", start_listener(b, "B", "tcp://127.0.0.1:0", SECRET));
    peer_say(b, "chan box");
    peer_wait(b, "chan box TL_OK", NULL);

    raw_session rs;
    int fd = raw_login(addr, "raw", SECRET, &rs);
    peer_wait(b, "log ", "to raw up");
    send_packed(fd, &rs, pack_bad_xfer, NULL);
    assert_true(read_sealed(fd, &rs, &up));
    assert_int_equal(frame_type(&up), 12); /* NACK [12, xid, code, msg] */
    assert_true(up.up.data.via.array.size >= 4);
    assert_true(up.up.data.via.array.ptr[2].via.i64 < 0);
    frame_free(&up);
    send_packed(fd, &rs, pack_op_unknown, NULL);
    assert_true(read_sealed(fd, &rs, &up));
    assert_int_equal(frame_type(&up), 21); /* DONE [21, 7, code, msg, nil] */
    assert_int_equal(up.up.data.via.array.ptr[1].via.u64, 7);
    assert_int_equal(up.up.data.via.array.ptr[2].via.i64, TL_ENOENT);
    frame_free(&up);
    send_packed(fd, &rs, pack_unknown_type, NULL);
    read_until_closed(fd, false);
    close(fd);
    peer_wait(b, "log ", "unknown message type 99");
    assert_true(peer_alive(b));

    /* a frame in clear after authentication, as protocol 1 sent them: it
     * does not open, the link drops before the OP is read */
    fd = raw_login(addr, "raw", SECRET, &rs);
    peer_wait(b, "log ", "to raw up");
    send_all(fd, "\x00\x00\x00\x05\x94\x14\x01\x01\xc0", 9); /* [20, 1, 1, nil]: OP */
    read_until_closed(fd, false);
    close(fd);
    peer_wait(b, "log ", "failed authentication");
    assert_true(peer_alive(b));

    fd = raw_login(addr, "raw", SECRET, &rs);
    peer_wait(b, "log ", "to raw up");
    send_all(fd, "\xff\xff\xff\xff", 4);
    read_until_closed(fd, false);
    close(fd);
    peer_wait(b, "log ", "4294967295");
    assert_true(peer_alive(b));
    good_client_served(fx, addr, 7);

    peer_say(b, "stats");
    const char *st = peer_wait(b, "stats ", NULL);
    assert_int_equal(field(st, "moved_in"), 0);
    assert_int_equal(field(st, "live"), 0);
    assert_false(peer_saw(b, "tasklet-failed", NULL));
    peer_stop(b);
}

#define BIG_OP_BYTES ((size_t)300 << 10) /* five records */

static void pack_big_op(msgpack_packer *pk, void *ud)
{
    const unsigned char *bytes = ud; /* [20, req 8, SEND, [0, "nosuch"], bin of 300 KiB] */
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint8(pk, 20);
    msgpack_pack_uint8(pk, 8);
    msgpack_pack_uint8(pk, TL_OP_SEND);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, 0);
    pack_cstr(pk, "nosuch");
    msgpack_pack_bin(pk, BIG_OP_BYTES);
    msgpack_pack_bin_body(pk, bytes, BIG_OP_BYTES);
}

/* Seals pack_big_op's frame in records, flips one byte of the third
 * record's ciphertext when tamper is set, and sends it. */
static void send_big_op(int fd, raw_session *s, const unsigned char *bytes, int tamper)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_big_op(&pk, (void *)(uintptr_t)bytes);
    unsigned char *f = malloc(raw_sealed_size(sb.size));
    assert_non_null(f);
    size_t n = raw_seal(s, sb.data, sb.size, f);
    assert_true(n > 3 * (RAW_RECORD + 20));
    assert_true(f[0] & 0x80); /* the first record says that more follow */
    if (tamper)
        f[2 * (RAW_RECORD + 20) + 4 + 100] ^= 0x40;
    send_all(fd, f, n);
    free(f);
    msgpack_sbuffer_destroy(&sb);
}

/* Both ciphers (the raw client offers ChaCha20-Poly1305 alone, then both:
 * AES-256-GCM where the CPU has it) and frames of several records: a
 * 300 KiB OP in five records is answered; the same with one byte of its
 * third record altered drops the link before any of it is acted on. */
static void test_raw_ciphers_and_records(void **state)
{
    fixture *fx = *state;
    peer *b = &fx->b;
    char addr[128];
    frame up;
    unsigned char *bytes = malloc(BIG_OP_BYTES);
    assert_non_null(bytes);
    randombytes_buf(bytes, BIG_OP_BYTES);
    snprintf(addr, sizeof addr, "%s", start_listener(b, "B", "tcp://127.0.0.1:0", SECRET));
    peer_say(b, "chan box");
    peer_wait(b, "chan box TL_OK", NULL);
    int aes = crypto_aead_aes256gcm_is_available();
    for (unsigned offer = 1; offer <= 3; offer += 2) {
        raw_session rs;
        const char *name = offer == 3 && aes ? "AES-256-GCM" : "ChaCha20-Poly1305";
        char want[64];
        snprintf(want, sizeof want, "to raw up (%s)", name);
        int fd = raw_login_offer(addr, "raw", SECRET, offer, &rs);
        peer_wait(b, "log ", want);
        assert_int_equal(rs.aes, offer == 3 && aes);
        send_big_op(fd, &rs, bytes, 0);
        assert_true(read_sealed(fd, &rs, &up));
        assert_int_equal(frame_type(&up), 21); /* DONE [21, 8, TL_ENOENT, msg, nil] */
        assert_int_equal(up.up.data.via.array.ptr[1].via.u64, 8);
        assert_int_equal(up.up.data.via.array.ptr[2].via.i64, TL_ENOENT);
        frame_free(&up);
        send_big_op(fd, &rs, bytes, 1);
        read_until_closed(fd, false);
        close(fd);
        peer_wait(b, "log ", "failed authentication");
        assert_true(peer_alive(b));
    }
    good_client_served(fx, addr, 8);
    peer_say(b, "stats");
    const char *st = peer_wait(b, "stats ", NULL);
    assert_int_equal(field(st, "frames_rejected"), 2); /* the two altered records */
    assert_int_equal(field(st, "live"), 0);
    free(bytes);
    peer_stop(b);
}

/* Two nodes where one offers ChaCha20-Poly1305 alone agree on it, and a
 * tasklet still makes its round trip. */
static void test_round_trip_chacha(void **state)
{
    round_trip(*state, "tcp://127.0.0.1:0", "1");
}

/* ---- 5. exactly once under kill -9 ---- */

/* The latest line of p starting with prefix, or NULL. */
static const char *last_line(const peer *p, const char *prefix)
{
    for (size_t i = p->nlines; i-- > 0;)
        if (strncmp(p->lines[i], prefix, strlen(prefix)) == 0)
            return p->lines[i];
    return NULL;
}

/* Whether transfers are still going, from the last status lines. */
static bool transfers_left(const peer *src, const peer *dst)
{
    const char *s = last_line(src, "status "), *d = last_line(dst, "status ");
    return !s || !d || field(s, "live") > 0 || field(s, "pending") > 0 ||
           field(d, "collected") < CARRIERS;
}

/* Restarts a killed node on its store and waits until it is up. */
static void restart(peer *p)
{
    peer_spawn(p);
    peer_wait(p, "ready", NULL);
    if (peer_saw(p, "fatal", NULL)) {
        peer_dump(p);
        fail_msg("node %s could not restart", p->name);
    }
}

/* The lines of p about the numbers collected other than once, with the
 * kills and restarts between them. */
static void story(const peer *p, const uint8_t seen[MP_MAX_CARRIERS])
{
    fprintf(stderr, "--- node %s, the numbers not collected once:\n", p->name);
    for (size_t i = 0; i < p->nlines; i++) {
        const char *at = strstr(p->lines[i], " n=");
        long n = at ? strtol(at + 3, NULL, 10) : -1;
        if (strncmp(p->lines[i], "---", 3) == 0 || strncmp(p->lines[i], "ready", 5) == 0 ||
            strncmp(p->lines[i], "restored", 8) == 0 ||
            (n >= 0 && n < CARRIERS && seen[n] != 1))
            fprintf(stderr, "  %s: %s\n", p->name, p->lines[i]);
    }
}

typedef struct inspected {
    int rc;
    size_t live;
    long long outbox;
    size_t nseen;
    uint8_t seen[MP_MAX_CARRIERS];
} inspected;

static long long count_rows(tl_store *st, const char *table)
{
    sqlite3_stmt *s;
    char sql[64];
    long long n = -1;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    if (sqlite3_prepare_v2(tl__store_sqlite(st), sql, -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

/* ---- exactly one remote operation across a crash of the importer ---- */

static size_t count_lines(const peer *p, const char *text)
{
    size_t k = 0;
    for (size_t i = 0; i < p->nlines; i++)
        k += strcmp(p->lines[i], text) == 0;
    return k;
}

/* A tasklet blocked sending on A's channel c moves to B, which is killed
 * (kill -9) inside the checkpoint transaction that would hold the import,
 * before it commits (--pause-after-import).  A sends the transfer again to
 * the restarted B, which imports it afresh.  The import's remote send must
 * not have left before that commit (issue 12 point 5): A's channel sees
 * nothing while B is stopped, and exactly one send afterwards. */
static void test_import_kill9_before_commit(void **state)
{
    fixture *fx = *state;
    peer *a = &fx->a, *b = &fx->b;
    char store[128];
    snprintf(store, sizeof store, "%s/b.db", fx->dir);
    const char *addr = start_listener(a, "A", "tcp://127.0.0.1:0", SECRET);
    const char *args[] = {"--id", "B", "--connect", addr, "--store", store,
                          "--pause-after-import", "1", NULL};
    peer_start(b, "B", SECRET, args);
    peer_wait(b, "ready", NULL);
    peer_until(a, "peer B", "peer B", "peer B 1");
    peer_say(a, "chan c");
    peer_wait(a, "chan c TL_OK", NULL);
    peer_say(a, "send c 7");
    peer_until(a, "balance c", "balance", "balance c 1");
    peer_say(a, "migrate-blocked mp.sender B");
    assert_string_equal(peer_wait(a, "migrate-blocked", NULL), "migrate-blocked 1 TL_OK");
    peer_wait(b, "paused-before-commit", NULL);
    /* B is stopped before its commit: no agent may send on c meanwhile (one
     * sent by an early operation would show within this second) */
    for (double end = now_ms() + 1000; now_ms() < end; sleep_ms(20)) {
        peer_say(a, "balance c");
        assert_string_equal(peer_wait(a, "balance c", NULL), "balance c 0");
    }
    peer_say(a, "recv c");
    peer_until(a, "balance c", "balance", "balance c -1");
    peer_kill9(b);
    for (int i = 1; b->argv[i]; i++) /* no pause this time */
        if (strcmp(b->argv[i], "--pause-after-import") == 0)
            b->argv[i + 1] = "0";
    restart(b);
    assert_string_equal(peer_wait(b, "sent ", NULL), "sent c 7"); /* its path local */
    peer_wait(a, "recv c 7", NULL);
    peer_until_stat(a, "moved_out", 1);
    peer_until(a, "balance c", "balance", "balance c 0");
    const char *sb = peer_until_stat(b, "moved_in", 1);
    assert_int_equal(field(sb, "live"), 0);
    peer_stop(b);
    peer_say(a, "stats");
    assert_int_equal(field(peer_wait(a, "stats ", NULL), "remote_ops"), 1);
    assert_int_equal(count_lines(a, "recv c 7"), 1);
    assert_false(peer_saw(a, "tasklet-failed", NULL));
    assert_false(peer_saw(b, "tasklet-failed", NULL));
    peer_stop(a);
}

/* Restores a node's store here, into a fresh runtime with a node (so that
 * tl.agent is known), and reads what it holds: the live tasklets, the
 * outbox and, at the destination, the collector's counts. */
static inspected inspect(const char *path, const char *id)
{
    inspected in;
    tl_runtime *rt;
    tl_store *st;
    tl_node *n;
    memset(&in, 0, sizeof in);
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &carrier_fn), TL_OK);
    assert_int_equal(tl_register(rt, &collector_fn), TL_OK);
    int rc = tl_store_open(path, 0, &st);
    if (rc == TL_OK)
        rc = tl_store_attach(st, rt);
    if (rc != TL_OK)
        fail_msg("store %s: %s: %s", path, tl_errname(rc), tl_store_errmsg(st));
    tl_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.node_id = id;
    cfg.store = st;
    assert_int_equal(tl_node_new(rt, &cfg, &n), TL_OK);
    in.rc = tl_store_restore(st);
    if (in.rc != TL_OK)
        fail_msg("restoring %s: %s: %s", path, tl_errname(in.rc), tl_store_errmsg(st));
    in.live = tl_tasklet_count(rt);
    in.outbox = count_rows(st, "outbox");
    tl_chan *col = tl_chan_find_name(rt, "collector"), *dump = tl_chan_find_name(rt, "collector.dump");
    if (col && dump) {
        tl_value ask, seen = tl_nil();
        while (tl_chan_try_recv(dump, &seen) == TL_OK) /* an answer nobody took */
            tl_value_set(&seen, tl_nil());
        assert_int_equal(tl_str_new(rt, "dump", 4, &ask), TL_OK);
        assert_int_equal(tl_chan_try_send(col, ask), TL_OK); /* it waits on "collector" */
        tl_release(ask);
        for (int i = 0; i < 10000 && tl_chan_try_recv(dump, &seen) != TL_OK; i++)
            assert_int_equal(tl_run_steps(rt, 1, NULL), TL_OK);
        assert_int_equal(tl_type(seen), TL_V_BIN);
        const char *p = tl_str_data(seen, &in.nseen);
        assert_int_equal(in.nseen, MP_MAX_CARRIERS);
        memcpy(in.seen, p, in.nseen);
        tl_release(seen);
    }
    tl_node_free(n);
    tl_store_close(st);
    tl_runtime_free(rt);
    return in;
}

static void test_exactly_once_kill9(void **state)
{
    fixture *fx = *state;
    peer *src = &fx->a, *dst = &fx->b;
    char listen[128], a_db[128], b_db[128], count[16], pace[16];
    snprintf(listen, sizeof listen, "unix:%s/b.sock", fx->dir);
    snprintf(a_db, sizeof a_db, "%s/a.db", fx->dir);
    snprintf(b_db, sizeof b_db, "%s/b.db", fx->dir);
    snprintf(count, sizeof count, "%d", CARRIERS);
    fprintf(stderr, "test_migrate_proc: MIGRATE_SEED=%" PRIu64 " in %s\n", fx->rng, fx->dir);

    const char *dargs[] = {"--id", "B", "--listen", listen, "--store", b_db,
                           "--role", "dest", NULL};
    const char *sargs[] = {"--id", "A", "--connect", listen, "--store", a_db,
                           "--role", "source", "--count", count, "--pace", pace, "--dest", "B",
                           NULL};
    int want = getenv("MIGRATE_KILLS") ? atoi(getenv("MIGRATE_KILLS")) : KILLS;
    keep_dir = fx->dir;
    peer_start(dst, "B", SECRET, dargs);
    peer_wait(dst, "ready", NULL);

    /* three kills of the destination alone tell how long a kill and restart
     * take on this machine (sanitizers make it slower): the carriers are
     * then spread so that the transfers outlast about twice the kills
     * wanted, and the kills land while transfers are under way */
    double w0 = now_ms();
    for (int k = 0; k < 3; k++) {
        sleep_ms((int)(next_rand(fx) % (MAX_KILL_DELAY_MS + 1)));
        peer_kill9(dst);
        restart(dst);
    }
    double cycle = (now_ms() - w0) / 3;
    int pace_ms = (int)(2.0 * want * cycle / CARRIERS) + 1;
    pace_ms = pace_ms < 10 ? 10 : pace_ms;
    snprintf(pace, sizeof pace, "%d", pace_ms);
    peer_start(src, "A", SECRET, sargs);
    peer_wait(src, "ready", NULL);

    /* kill -9 each side in turn at random instants, restart it on its
     * store, until `want` kills landed while transfers were left (or, once
     * they are all done, `want` kills in all) */
    double t0 = now_ms();
    int during = 0, kills = 0;
    while (during < want && kills < 3 * want) {
        if (kills >= want && !transfers_left(src, dst))
            break;
        peer *victim = kills % 2 ? src : dst;
        int delay = (int)(next_rand(fx) % (MAX_KILL_DELAY_MS + 1));
        double until = now_ms() + delay;
        while (now_ms() < until) {
            peer_drain(src, 1);
            peer_drain(dst, 1);
        }
        during += transfers_left(src, dst);
        peer_kill9(victim);
        restart(victim);
        kills++;
    }
    fprintf(stderr, "test_migrate_proc: %d kills (%d while transfers were left, carriers %d ms "
            "apart) in %.0f ms, after 3 kills of the destination alone\n",
            kills, during, pace_ms, now_ms() - t0);
    assert_true(kills >= want);

    /* let both finish: everything moved, collected, acknowledged */
    double end = now_ms() + 2 * WAIT_MS;
    while (transfers_left(src, dst) && now_ms() < end) {
        peer_drain(src, 10);
        peer_drain(dst, 10);
        if (src->eof || dst->eof)
            break;
    }
    const char *ls = last_line(src, "status "), *ld = last_line(dst, "status ");
    fprintf(stderr, "test_migrate_proc: finally %s | %s\n", ls ? ls : "-", ld ? ld : "-");
    assert_false(peer_saw(src, "fatal", NULL));
    assert_false(peer_saw(dst, "fatal", NULL));
    assert_false(peer_saw(dst, "tasklet-failed", NULL));
    peer_stop(src);
    peer_stop(dst);

    /* what the stores hold (copied first: inspecting writes to them) */
    char kept[600];
    snprintf(kept, sizeof kept, "cp %s %s.final && cp %s %s.final", a_db, a_db, b_db, b_db);
    assert_int_equal(system(kept), 0);
    inspected a = inspect(a_db, "A"), b = inspect(b_db, "B");
    int lost = 0, twice = 0;
    char report[512] = "";
    size_t at = 0;
    for (int i = 0; i < CARRIERS; i++) {
        if (b.seen[i] == 1)
            continue;
        lost += b.seen[i] == 0;
        twice += b.seen[i] > 1;
        if (at < sizeof report - 32)
            at += (size_t)snprintf(report + at, sizeof report - at, " #%d:%u", i, b.seen[i]);
    }
    fprintf(stderr, "test_migrate_proc: source: %zu live, %lld in the outbox; destination: %zu "
            "live, %d numbers missing, %d more than once%s\n",
            a.live, a.outbox, b.live, lost, twice, report);
    for (int i = CARRIERS; i < MP_MAX_CARRIERS; i++)
        assert_int_equal(b.seen[i], 0);
    if (lost || twice) {
        keep_stores();
        story(src, b.seen);
        story(dst, b.seen);
        fail_msg("collected numbers (#n:count, expected 1 each):%s", report);
    }
    assert_int_equal(a.live, 0);      /* nothing left behind */
    assert_int_equal(a.outbox, 0);
    assert_int_equal(b.live, 1);      /* the collector alone */
    assert_int_equal(b.outbox, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_tcp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_while_waiting_remotely, setup, teardown),
        cmocka_unit_test_setup_teardown(test_home_killed_while_waiting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_transfer_comes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remote_rendezvous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_sources, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_misbehaviour, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_after_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_ciphers_and_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_chacha, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_kill9_before_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exactly_once_kill9, setup, teardown),
    };
    if (getenv("MIGRATE_TEST")) /* e.g. MIGRATE_TEST=test_exactly_once_kill9 */
        cmocka_set_test_filter(getenv("MIGRATE_TEST"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
