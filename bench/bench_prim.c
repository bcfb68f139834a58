/*
 * bench_prim.c -- the floor under moving a large payload between nodes
 * (docs/PERFORMANCE.md, issue 12 point 7): what one pass over 1 MiB costs
 * here with the primitives a transfer uses.  aead_aes256gcm_mib_us and
 * aead_chacha20_mib_us seal one MiB and open it again (libsodium, the two
 * ciphers a link may agree on); crc32_mib_us is zlib's crc32 of it;
 * memcpy_mib_us a copy into memory touched before, memcpy_fresh_mib_us a
 * copy into pages never touched (the page faults a fresh buffer costs).
 * Each is the best of n passes, in microseconds.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "bench_prim.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <zlib.h>

#define MIB ((size_t)1 << 20)

static double mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

typedef void (*pass_fn)(unsigned char *a, unsigned char *b);

static unsigned char key[32], nonce[12], tag[16];
static volatile uLong sink; /* results kept, so that no pass is optimized out */

static void pass_aes(unsigned char *a, unsigned char *b)
{
    (void)b;
    crypto_aead_aes256gcm_encrypt_detached(a, tag, NULL, a, MIB, NULL, 0, NULL, nonce, key);
    sink += (uLong)crypto_aead_aes256gcm_decrypt_detached(a, NULL, a, MIB, tag, NULL, 0, nonce,
                                                          key);
}

static void pass_chacha(unsigned char *a, unsigned char *b)
{
    (void)b;
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(a, tag, NULL, a, MIB, NULL, 0, NULL, nonce,
                                                       key);
    sink += (uLong)crypto_aead_chacha20poly1305_ietf_decrypt_detached(a, NULL, a, MIB, tag, NULL,
                                                                      0, nonce, key);
}


static void pass_crc(unsigned char *a, unsigned char *b)
{
    (void)b;
    sink = crc32(0L, a, (uInt)MIB);
}

static void pass_copy(unsigned char *a, unsigned char *b)
{
    memcpy(b, a, MIB);
}

/* The best of n passes of fn (fresh: b is new untouched pages each time). */
static int best(uint64_t n, pass_fn fn, int fresh, double *us)
{
    unsigned char *a = malloc(MIB), *b = fresh ? NULL : malloc(MIB);
    if (!a || (!fresh && !b) || sodium_init() < 0) {
        free(a);
        free(b);
        return -1;
    }
    randombytes_buf(a, MIB);
    if (b)
        memset(b, 1, MIB);
    *us = 1e30;
    for (uint64_t i = 0; i < (n ? n : 1); i++) {
        unsigned char *dst = b;
        if (fresh) {
            dst = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (dst == MAP_FAILED)
                break;
        }
        double t0 = mono_us();
        fn(a, dst);
        double t = mono_us() - t0;
        *us = t < *us ? t : *us;
        if (fresh)
            munmap(dst, MIB);
    }
    free(a);
    free(b);
    return *us < 1e30 ? 0 : -1;
}

int bench_aead_aes(uint64_t n, double *us)
{
    if (sodium_init() >= 0 && !crypto_aead_aes256gcm_is_available()) {
        *us = -1; /* no AES-NI here: links use ChaCha20-Poly1305 */
        return 0;
    }
    return best(n, pass_aes, 0, us);
}

int bench_aead_chacha(uint64_t n, double *us) { return best(n, pass_chacha, 0, us); }
int bench_crc32_mib(uint64_t n, double *us) { return best(n, pass_crc, 0, us); }
int bench_memcpy_mib(uint64_t n, double *us) { return best(n, pass_copy, 0, us); }
int bench_memcpy_fresh_mib(uint64_t n, double *us) { return best(n, pass_copy, 1, us); }
