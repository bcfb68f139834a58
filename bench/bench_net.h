/*
 * bench_net.h -- tl-bench's yardsticks for the node under shared CPUs
 * (bench_net.c): a plain blocking TCP ping-pong between two processes,
 * and CPU burners that load every core while a benchmark runs.
 */
#ifndef TL_BENCH_NET_H
#define TL_BENCH_NET_H

#include <stdint.h>
#include <sys/types.h>

/* tcp_pingpong_us: the median of n round trips of 16 bytes between this
 * process and a forked one over TCP on 127.0.0.1, blocking reads. */
int bench_tcp_pingpong(uint64_t n, double *us);
/* An echo link kept open across rounds: bench_tcp_rounds times n round
 * trips into ns[0..n) (ns each); -1 on failure. */
typedef struct bench_tcp {
    int fd;
    pid_t child; /* the echo process */
} bench_tcp;
int bench_tcp_open(bench_tcp *t);
int bench_tcp_rounds(bench_tcp *t, uint64_t n, int64_t *ns);
void bench_tcp_close(bench_tcp *t);
/* The same while bench_burners_start's processes load the CPUs. */
int bench_tcp_pingpong_loaded(uint64_t n, double *us);
/* Starts k processes that spin until bench_burners_stop (k = 0: one per
 * online CPU); returns how many started. */
int bench_burners_start(int k);
void bench_burners_stop(void);

#endif
