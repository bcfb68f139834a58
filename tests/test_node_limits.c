/*
 * test_node_limits.c -- a node's memory and connection slots stay bounded
 * whatever one authenticated peer or a crowd of strangers does
 * (migrate/limits.c, tl_node_config; issue 12 point 3).
 *
 * The node under attack is a real process (tests/migrate_peer, started
 * with --limits); its resident size is read from /proc/PID/status (VmRSS)
 * while the attack runs, and the largest value seen must stay under a
 * ceiling derived from the configured limits: its RSS before the attack
 * plus what the limits allow plus a fixed slack (allocator overhead and
 * the runtime's own tables).  The attacker is a node of this process that
 * authenticates as usual and then misbehaves through the test entry
 * points of migrate/node_internal.h:
 *   - test_unread_replies: it sends requests and never reads the answers;
 *     the target drops it once max_queue bytes are queued for it;
 *   - test_big_frames: 40 links each announce a frame of max_frame bytes
 *     and send nearly all of it; the target's buffers stay within
 *     max_buffers (it drops the links that would go past);
 *   - test_many_ops: 200,000 receive requests on an exported channel; at
 *     most max_agents become agents, the others are answered TL_EBUSY;
 *   - test_handshake_deadline_and_links: a connection that never speaks is
 *     closed after handshake_ms; dials past max_links are refused;
 *   - test_slowloris: 1,000 connections from 127.0.0.2 that never speak,
 *     each reopened as soon as the target closes it, while a genuine node
 *     on 127.0.0.1 must link within 5 s (the time it took is printed).
 * Nothing waits on a count of rounds: every wait is bounded by wall-clock
 * time, and no duration is asserted except the generous 5 s link deadline.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../migrate/node_internal.h"
#include "tasklet.h"
#include "tasklet_node.h"

#define SECRET "libtasklet-test-limits-secret"

/* Under AddressSanitizer the target's RSS includes the shadow memory and the
 * quarantine of freed blocks: the ceilings are printed, not asserted. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_CHECKED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_CHECKED 0
#endif
#endif
#ifndef RSS_CHECKED
#define RSS_CHECKED 1
#endif
#define WAIT_MS 60000 /* a bound against hangs, never an expectation */
#define MIB (1024.0 * 1024.0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- the target: a migrate_peer process ---- */

typedef struct target {
    pid_t pid;
    int in, out;
    char buf[1 << 16]; /* the output seen so far, its tail kept */
    size_t len;
    char addr[128];
    long base_kib;     /* VmRSS before the attack */
    long peak_kib;     /* the largest VmRSS seen */
} target;

static target T;

static void target_read(int ms)
{
    struct pollfd pfd = {T.out, POLLIN, 0};
    if (poll(&pfd, 1, ms) <= 0)
        return;
    char tmp[4096];
    ssize_t k = read(T.out, tmp, sizeof tmp);
    if (k <= 0)
        return;
    if (T.len + (size_t)k >= sizeof T.buf) { /* keep the newer half */
        size_t keep = sizeof T.buf / 2;
        memmove(T.buf, T.buf + T.len - keep, keep);
        T.len = keep;
    }
    memcpy(T.buf + T.len, tmp, (size_t)k);
    T.len += (size_t)k;
    T.buf[T.len] = '\0';
}

static int target_saw(const char *s)
{
    return strstr(T.buf, s) != NULL;
}

static void target_wait(const char *s)
{
    double end = now_ms() + WAIT_MS;
    while (!target_saw(s) && now_ms() < end)
        target_read(50);
    if (!target_saw(s))
        fail_msg("the target never printed '%s'; its output ends:\n%s", s,
                 T.buf + (T.len > 2000 ? T.len - 2000 : 0));
}

static void target_say(const char *line)
{
    ssize_t k = write(T.in, line, strlen(line));
    assert_int_equal((size_t)k, strlen(line));
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void sample_rss(void)
{
    long k = rss_kib(T.pid);
    if (k > T.peak_kib)
        T.peak_kib = k;
}

static void target_start(const char *limits)
{
    const char *prog = getenv("MIGRATE_PEER");
    if (!prog || access(prog, X_OK) != 0)
        fail_msg("set MIGRATE_PEER to the built tests/migrate_peer (meson test does)");
    int in[2], out[2];
    memset(&T, 0, sizeof T);
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    T.pid = fork();
    assert_true(T.pid >= 0);
    if (T.pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        close(in[1]);
        close(out[0]);
        setenv(TL_NODE_SECRET_ENV, SECRET, 1); /* never on the command line */
        execl(prog, prog, "--id", "T", "--listen", "tcp://127.0.0.1:0", "--limits", limits,
              (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    T.in = in[1];
    T.out = out[0];
    target_wait("ready");
    const char *a = strstr(T.buf, "address ");
    assert_non_null(a);
    sscanf(a, "address %127s", T.addr);
}

static void target_stop(void)
{
    if (T.pid <= 0)
        return;
    target_say("quit\n");
    double end = now_ms() + WAIT_MS;
    int status = 0;
    while (waitpid(T.pid, &status, WNOHANG) == 0 && now_ms() < end)
        target_read(20);
    if (waitpid(T.pid, &status, WNOHANG) == 0) {
        kill(T.pid, SIGKILL);
        waitpid(T.pid, &status, 0);
    }
    close(T.in);
    close(T.out);
    T.pid = 0;
}

/* The target's RSS before the attack, after it settled. */
static void baseline(void)
{
    T.base_kib = rss_kib(T.pid);
    T.peak_kib = T.base_kib;
    assert_true(T.base_kib > 0);
}

/* The peak stayed under base + allowed_mib + slack_mib. */
static void assert_rss_bounded(const char *what, double allowed_mib, double slack_mib)
{
    double peak = (double)T.peak_kib / 1024.0, base = (double)T.base_kib / 1024.0;
    double ceiling = base + allowed_mib + slack_mib;
    printf("%s: target VmRSS %.1f MiB before, peak %.1f MiB (ceiling %.1f = %.1f + %.1f "
           "allowed by the limits + %.1f slack)\n", what, base, peak, ceiling, base, allowed_mib,
           slack_mib);
    if (RSS_CHECKED)
        assert_true(peak <= ceiling);
    else
        printf("(not checked: AddressSanitizer)\n");
}

/* ---- the attacker: a node of this process ---- */

static tl_runtime *xrt;
static tl_node *xn;

static void xlog(void *ud, const char *msg)
{
    (void)ud;
    if (getenv("LIMITS_LOG"))
        fprintf(stderr, "attacker: %s\n", msg);
}

static void attacker_new(const char *id)
{
    tl_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.node_id = id;
    cfg.secret = SECRET;
    cfg.secret_len = strlen(SECRET);
    cfg.log = xlog;
    cfg.max_queue = (size_t)512 << 20; /* the attacker queues a lot itself */
    cfg.max_buffers = (size_t)2 << 30;
    assert_int_equal(tl_runtime_new(NULL, &xrt), TL_OK);
    assert_int_equal(tl_node_new(xrt, &cfg, &xn), TL_OK);
}

static void attacker_free(void)
{
    tl_node_free(xn);
    tl_runtime_free(xrt);
    xn = NULL;
    xrt = NULL;
}

static void attacker_link(int links)
{
    for (int i = 0; i < links; i++)
        assert_int_equal(tl_node_connect(xn, T.addr), TL_OK);
    double end = now_ms() + WAIT_MS;
    while (tl__node_links_up(xn, "T") < links && now_ms() < end) {
        assert_int_equal(tl_node_poll(xn, 5), TL_OK);
        target_read(0);
    }
    assert_int_equal(tl__node_links_up(xn, "T"), links);
}

/* OP [20, req, op, [0, name], nil] packed into sb. */
static void pack_op(msgpack_sbuffer *sb, uint64_t req, int op, const char *name)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, 20);
    msgpack_pack_uint64(&pk, req);
    msgpack_pack_uint8(&pk, (uint8_t)op);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_str(&pk, strlen(name));
    msgpack_pack_str_body(&pk, name, strlen(name));
    msgpack_pack_nil(&pk);
}

/* A receive on ch that records how it ended. */
typedef struct probe_t {
    tl_chan *ch;
    tl_value v;
} probe_t;
static const tl_field probe_fields[] = {
    TL_FIELD(probe_t, ch, TL_T_CHAN), TL_FIELD(probe_t, v, TL_T_VALUE),
};
static int probe_done, probe_err;

static tl_status probe(tl_frame *f, void *locals)
{
    probe_t *L = locals;
    TL_BEGIN(f);
    tl_frame_catch(f, 1);
    TL_RECV(f, L->ch, L->v);
    probe_err = tl_frame_error(f);
    probe_done = 1;
    TL_END(f);
}
static const tl_func probe_fn = {"test.limits.probe", 1, probe, sizeof(probe_t), probe_fields,
                                 TL_COUNTOF(probe_fields), NULL};

/* ---- floods ---- */

static int teardown(void **state)
{
    (void)state;
    if (xn)
        attacker_free();
    target_stop();
    return 0;
}

/* Answers never read: the target drops the attacker at max_queue. */
static void test_unread_replies(void **state)
{
    (void)state;
    const size_t queue = 1 << 20, buffers = 8 << 20;
    char limits[160], name[250];
    snprintf(limits, sizeof limits, "max_frame=262144,max_queue=%zu,max_buffers=%zu", queue,
             buffers);
    target_start(limits);
    attacker_new("X");
    attacker_link(1);
    baseline();
    tl__node_deaf(xn, 1);
    memset(name, 'n', sizeof name - 1); /* an unknown long name: a long refusal each */
    name[sizeof name - 1] = '\0';
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    double sent = 0, end = now_ms() + WAIT_MS;
    uint64_t req = 1;
    while (!target_saw("does not read") && now_ms() < end && sent < 2e9) {
        long long queued = 0;
        for (int i = 0; i < 1000 && queued >= 0 && queued < (8 << 20); i++) {
            pack_op(&sb, req++, 2, name);
            queued = tl__node_send_body(xn, "T", sb.data, sb.size);
            sent += (double)sb.size;
        }
        assert_int_equal(tl_node_poll(xn, queued < 0 ? 5 : 1), TL_OK);
        target_read(0);
        sample_rss();
    }
    msgpack_sbuffer_destroy(&sb);
    printf("test_unread_replies: %.1f MiB of requests sent before the target dropped the "
           "link\n", sent / MIB);
    target_wait("does not read");
    sample_rss();
    /* the queue of one link, the buffers of all (the bound), the kernel's
     * socket buffers are not the process's */
    assert_rss_bounded("test_unread_replies", (double)buffers / MIB, 24);
    /* and it still serves: a genuine request gets its answer */
    target_say("stats\n");
    target_wait("stats moved_out");
}

/* 40 links, each with a frame of max_frame announced and nearly sent. */
static void test_big_frames(void **state)
{
    (void)state;
    enum { LINKS = 40 };
    const size_t frame = 2 << 20, buffers = 16 << 20;
    char limits[160];
    snprintf(limits, sizeof limits, "max_frame=%zu,max_queue=%zu,max_buffers=%zu", frame,
             frame + (1 << 17), buffers);
    target_start(limits);
    attacker_new("X");
    attacker_link(LINKS);
    baseline();
    /* a length prefix announcing max_frame bytes, then all but 1 KiB of
     * them: each link alone is within max_frame */
    size_t body = frame - 1024;
    unsigned char *raw = malloc(4 + body);
    assert_non_null(raw);
    raw[0] = (unsigned char)(frame >> 24);
    raw[1] = (unsigned char)(frame >> 16);
    raw[2] = (unsigned char)(frame >> 8);
    raw[3] = (unsigned char)frame;
    memset(raw + 4, 0x5a, body);
    /* the target may drop links once its buffers are full, also while
     * these writes still go on (a slower attacker, e.g. in check mode) */
    assert_in_range(tl__node_raw(xn, "T", raw, 4 + body), 1, LINKS);
    free(raw);
    double end = now_ms() + 20000; /* until the bytes are out, or dropped */
    while (now_ms() < end && (tl__node_links_up(xn, "T") == LINKS || !target_saw("buffers"))) {
        assert_int_equal(tl_node_poll(xn, 5), TL_OK);
        target_read(0);
        sample_rss();
    }
    for (double stop = now_ms() + 1000; now_ms() < stop;) { /* what is left arrives */
        assert_int_equal(tl_node_poll(xn, 5), TL_OK);
        target_read(0);
        sample_rss();
    }
    target_wait("buffers are full");
    printf("test_big_frames: %d links x %.1f MiB announced and sent (%.0f MiB without a "
           "total bound)\n", LINKS, (double)body / MIB, LINKS * (double)body / MIB);
    assert_rss_bounded("test_big_frames", (double)buffers / MIB, 16);
}

/* 200,000 receive requests on an exported channel nobody sends on. */
static void test_many_ops(void **state)
{
    (void)state;
    enum { OPS = 200000, AGENTS = 1000 };
    char limits[160];
    snprintf(limits, sizeof limits, "max_agents=%d,max_buffers=%d", AGENTS, 8 << 20);
    target_start(limits);
    target_say("chan box\n");
    target_wait("chan box TL_OK");
    attacker_new("X");
    attacker_link(1);
    baseline();
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint64_t req = (uint64_t)1 << 40; /* never the attacker's own request ids */
    double end = now_ms() + WAIT_MS;
    for (int sent = 0; sent < OPS && now_ms() < end;) {
        long long queued = 0;
        for (int i = 0; i < 2000 && sent < OPS && queued < (4 << 20); i++, sent++) {
            pack_op(&sb, req++, 2, "box");
            queued = tl__node_send_body(xn, "T", sb.data, sb.size);
            assert_true(queued >= 0);
        }
        assert_int_equal(tl_node_poll(xn, 1), TL_OK);
        target_read(0);
        sample_rss();
    }
    msgpack_sbuffer_destroy(&sb);
    /* a real receive after the flood: answered only once the flood is read
     * (frames are taken in order), and refused, the agents being full */
    tl_chan *box;
    assert_int_equal(tl_node_chan(xn, "T/box", &box), TL_OK);
    assert_int_equal(tl_register(xrt, &probe_fn), TL_OK);
    probe_t a = {.ch = box};
    assert_int_equal(tl_spawn(xrt, &probe_fn, &a, sizeof a, NULL), TL_OK);
    tl_chan_release(box);
    while (!probe_done && now_ms() < end) {
        assert_int_equal(tl_node_poll(xn, 1), TL_OK);
        target_read(0);
        sample_rss();
    }
    assert_true(probe_done);
    assert_int_equal(probe_err, TL_EBUSY);
    target_say("balance box\n");
    target_wait("balance box ");
    const char *b = strstr(T.buf, "balance box ");
    long bal = strtol(b + strlen("balance box "), NULL, 10);
    printf("test_many_ops: %d requests, %ld agents waiting at the target (max_agents %d)\n", OPS,
           -bal, AGENTS);
    assert_int_equal(-bal, AGENTS);
    assert_rss_bounded("test_many_ops", 8, 16); /* buffers; 1,000 agents are well under 1 MiB */
}

/* ---- slowloris ---- */

#define IDLE 1000
static atomic_int loris_stop;
static atomic_long loris_reopened;
static struct sockaddr_in loris_to;

/* A socket from 127.0.0.2 connecting to the target, or -1. */
static int loris_open(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in from;
    memset(&from, 0, sizeof from);
    from.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.2", &from.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&from, sizeof from) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&loris_to, sizeof loris_to) != 0 &&
        errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Holds IDLE connections that never speak; each one the target closes
 * (or that fails) is opened again at once. */
static void *loris(void *arg)
{
    static struct pollfd fds[IDLE];
    (void)arg;
    for (int i = 0; i < IDLE; i++) {
        fds[i].fd = loris_open();
        fds[i].events = POLLIN;
    }
    while (!atomic_load(&loris_stop)) {
        if (poll(fds, IDLE, 20) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < IDLE; i++) {
            char b[256];
            if (fds[i].fd >= 0 && !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (fds[i].fd >= 0 && read(fds[i].fd, b, sizeof b) > 0)
                continue; /* its HELLO: read and ignored */
            if (fds[i].fd >= 0)
                close(fds[i].fd);
            fds[i].fd = loris_open();
            fds[i].revents = 0;
            atomic_fetch_add(&loris_reopened, 1);
        }
    }
    for (int i = 0; i < IDLE; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    return NULL;
}

static void test_slowloris(void **state)
{
    (void)state;
    target_start("max_handshakes=64,handshakes_per_addr=8");
    int port = 0;
    assert_int_equal(sscanf(T.addr, "tcp://127.0.0.1:%d", &port), 1);
    memset(&loris_to, 0, sizeof loris_to);
    loris_to.sin_family = AF_INET;
    loris_to.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &loris_to.sin_addr);
    int probe = loris_open();
    if (probe < 0)
        skip(); /* no 127.0.0.2 here (Linux routes all of 127/8 to loopback) */
    close(probe);
    atomic_store(&loris_stop, 0);
    atomic_store(&loris_reopened, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, loris, NULL), 0);
    /* let it fill what it can: until the target refused a round of them */
    double end = now_ms() + WAIT_MS;
    while ((atomic_load(&loris_reopened) < IDLE || !target_saw("refused")) && now_ms() < end)
        target_read(20);
    assert_true(target_saw("refused"));
    /* a genuine peer from 127.0.0.1 links meanwhile */
    attacker_new("G");
    double t0 = now_ms();
    assert_int_equal(tl_node_connect(xn, T.addr), TL_OK);
    while (tl__node_links_up(xn, "T") < 1 && now_ms() < t0 + 5000) {
        assert_int_equal(tl_node_poll(xn, 5), TL_OK);
        target_read(0);
    }
    double took = now_ms() - t0;
    int up = tl__node_links_up(xn, "T");
    atomic_store(&loris_stop, 1);
    pthread_join(th, NULL);
    printf("test_slowloris: %d idle connections, reopened %ld times; a genuine peer linked in "
           "%.1f ms\n", IDLE, atomic_load(&loris_reopened), took);
    assert_int_equal(up, 1);
}

/* A connection that never authenticates is closed after handshake_ms;
 * links past max_links are refused at accept. */
static void test_handshake_deadline_and_links(void **state)
{
    (void)state;
    target_start("handshake_ms=300,max_links=4");
    int port = 0;
    assert_int_equal(sscanf(T.addr, "tcp://127.0.0.1:%d", &port), 1);
    memset(&loris_to, 0, sizeof loris_to);
    loris_to.sin_family = AF_INET;
    loris_to.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &loris_to.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&loris_to, sizeof loris_to), 0);
    char b[512];
    double t0 = now_ms(), end = t0 + WAIT_MS;
    ssize_t k = 1;
    while (k > 0 && now_ms() < end) { /* its HELLO, then the close */
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) > 0)
            k = read(fd, b, sizeof b);
        target_read(0);
    }
    close(fd);
    assert_true(k <= 0);
    target_wait("no authentication within 300 ms");
    printf("test_handshake_deadline_and_links: an idle connection closed after %.0f ms "
           "(handshake_ms 300)\n", now_ms() - t0);
    /* six dials, four links at most */
    attacker_new("X");
    for (int i = 0; i < 6; i++)
        assert_int_equal(tl_node_connect(xn, T.addr), TL_OK);
    end = now_ms() + WAIT_MS;
    while ((tl__node_links_up(xn, "T") < 4 || !target_saw("too many links")) && now_ms() < end) {
        assert_int_equal(tl_node_poll(xn, 5), TL_OK);
        target_read(0);
        assert_true(tl__node_links_up(xn, "T") <= 4);
    }
    assert_int_equal(tl__node_links_up(xn, "T"), 4);
    target_wait("too many links");
}

int main(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* the slowloris needs 1,000 descriptors */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_unread_replies, teardown),
        cmocka_unit_test_teardown(test_big_frames, teardown),
        cmocka_unit_test_teardown(test_many_ops, teardown),
        cmocka_unit_test_teardown(test_slowloris, teardown),
        cmocka_unit_test_teardown(test_handshake_deadline_and_links, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
