/*
 * bench_net.c -- a plain TCP ping-pong, the yardstick for remote channel
 * operations (issue 12 point 7: under load a remote operation must be no
 * slower than this), and CPU burners to run any benchmark under load.
 *
 * The ping-pong: a forked child echoes 16-byte messages on a TCP socket
 * on 127.0.0.1 (TCP_NODELAY, blocking reads, no spinning); the parent
 * times each round trip and reports the median.  The link can also stay
 * open across rounds (bench_tcp_open), so that tl-bench interleaves TCP
 * rounds with a node's rounds under the same load (remote_vs_tcp_*).
 */
#include "bench_net.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 16
#define MAX_BURNERS 64

static pid_t burners[MAX_BURNERS];
static int nburners;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int full_io(int fd, char *buf, int writing)
{
    size_t done = 0;
    while (done < MSG) {
        ssize_t k = writing ? write(fd, buf + done, MSG - done) : read(fd, buf + done, MSG - done);
        if (k <= 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* The echo child: accepts one connection on lfd and echoes until EOF. */
static void echo_child(int lfd)
{
    char buf[MSG];
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        _exit(1);
    nodelay(fd);
    while (full_io(fd, buf, 0) == 0 && full_io(fd, buf, 1) == 0) {
    }
    _exit(0);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Connects to a listener on 127.0.0.1 that a forked echo child serves. */
static int echo_link(pid_t *child)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    if ((*child = fork()) == 0)
        echo_child(lfd);
    close(lfd);
    int fd = *child > 0 ? socket(AF_INET, SOCK_STREAM, 0) : -1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    nodelay(fd);
    return fd;
}

int bench_tcp_open(bench_tcp *t)
{
    t->child = -1;
    t->fd = echo_link(&t->child);
    return t->fd < 0 ? -1 : 0;
}

int bench_tcp_rounds(bench_tcp *t, uint64_t n, int64_t *ns)
{
    char buf[MSG] = "ping";
    for (uint64_t i = 0; i < n; i++) {
        int64_t t0 = mono_ns();
        if (full_io(t->fd, buf, 1) != 0 || full_io(t->fd, buf, 0) != 0)
            return -1;
        ns[i] = mono_ns() - t0;
    }
    return 0;
}

void bench_tcp_close(bench_tcp *t)
{
    if (t->fd >= 0)
        close(t->fd);
    if (t->child > 0) {
        if (t->fd < 0)
            kill(t->child, SIGKILL); /* it may never have been connected */
        waitpid(t->child, NULL, 0);
    }
    t->fd = t->child = -1;
}

int bench_tcp_pingpong(uint64_t n, double *us)
{
    bench_tcp t;
    int64_t *v = calloc(n ? n : 1, sizeof *v);
    int rc = !n || !v || bench_tcp_open(&t) != 0;
    if (!rc) {
        rc = bench_tcp_rounds(&t, n, v) != 0;
        bench_tcp_close(&t);
    }
    if (!rc) {
        qsort(v, n, sizeof *v, cmp_i64);
        *us = (double)v[n / 2] / 1000.0;
    }
    free(v);
    return rc ? -1 : 0;
}

int bench_burners_start(int k)
{
    if (k <= 0)
        k = (int)sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 0; i < k && nburners < MAX_BURNERS; i++) {
        pid_t p = fork();
        if (p == 0)
            for (volatile unsigned long x = 0;; x++) {
            }
        if (p > 0)
            burners[nburners++] = p;
    }
    nanosleep(&(struct timespec){0, 100000000}, NULL); /* they spread over the cores */
    return nburners;
}

void bench_burners_stop(void)
{
    for (int i = 0; i < nburners; i++)
        kill(burners[i], SIGKILL);
    for (int i = 0; i < nburners; i++)
        waitpid(burners[i], NULL, 0);
    nburners = 0;
}

int bench_tcp_pingpong_loaded(uint64_t n, double *us)
{
    bench_burners_start(0);
    int rc = bench_tcp_pingpong(n, us);
    bench_burners_stop();
    return rc;
}
