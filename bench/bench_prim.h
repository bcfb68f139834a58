/*
 * bench_prim.h -- what one pass over 1 MiB costs with the primitives a
 * large transfer uses (bench_prim.c): sealing and opening with each
 * cipher, crc32, copies into warm and into fresh memory.
 */
#ifndef TL_BENCH_PRIM_H
#define TL_BENCH_PRIM_H

#include <stdint.h>

/* Each: the best of n passes over 1 MiB, in microseconds (AES-256-GCM:
 * -1 where the CPU lacks AES-NI); nonzero if it could not run. */
int bench_aead_aes(uint64_t n, double *us);    /* seal + open, AES-256-GCM */
int bench_aead_chacha(uint64_t n, double *us); /* seal + open, ChaCha20-Poly1305 */
int bench_crc32_mib(uint64_t n, double *us);
int bench_memcpy_mib(uint64_t n, double *us);
int bench_memcpy_fresh_mib(uint64_t n, double *us);

#endif
