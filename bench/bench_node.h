/* bench_node.h -- the node benchmarks tl-bench runs (bench_node.c). */
#ifndef TL_BENCH_NODE_H
#define TL_BENCH_NODE_H
#include <stdint.h>
int bench_ckpt_node_rows(uint64_t n, double *us);
#endif
