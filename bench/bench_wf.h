/* bench_wf.h -- the workflow benchmarks tl-bench runs (bench_wf.c). */
#ifndef TL_BENCH_WF_H
#define TL_BENCH_WF_H
#include <stdint.h>
int bench_disk_fsync(uint64_t n, double *per_s);
int bench_wf_step_fsync(uint64_t n, double *per_s);
int bench_wf_step_nosync(uint64_t n, double *per_s);
int bench_wf_step_conc(uint64_t n, double *per_s);
int bench_wf_step_idle(uint64_t n, double *per_s);
int bench_wf_step_idle_ratio(uint64_t n, double *ratio);
int bench_wf_pool_fsync(uint64_t n, double *per_s);
int bench_wf_pool_nosync(uint64_t n, double *per_s);
int bench_wf_pool_conc(uint64_t n, double *per_s);
int bench_sqlite_nosync(uint64_t n, double *per_s);
int bench_wf_resume(uint64_t n, double *ms);
int bench_wf_resume_cpu(uint64_t n, double *ms);
int bench_wf_start(uint64_t n, double *per_s);
int bench_wf_message_latency(uint64_t n, double *ms);
int bench_wf_bytes_done(uint64_t n, double *bytes);
int bench_wf_bytes_waiting(uint64_t n, double *bytes);
#endif
