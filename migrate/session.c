/*
 * session.c -- the cryptography of a link (docs/PROTOCOL.md section 4):
 * the ephemeral key exchange of the handshake, the MAC of AUTH, and the
 * sealing and opening of every frame after it.  libsodium primitives
 * only; nothing here is home-made.
 *
 *   tl__session_init    a fresh X25519 key pair per link (crypto_kx); its
 *                       public key goes out in HELLO
 *   tl__session_derive  on the peer's HELLO: the two session keys, one
 *                       per direction, from crypto_kx bound to the
 *                       cluster key (keyed BLAKE2b); the ephemeral secret
 *                       key is wiped at once
 *   tl__session_mac     the AUTH MAC (crypto_auth, keyed with the cluster
 *                       key) over both public keys, both ids and a role
 *   tl__session_cipher  the cipher both ends offer (HELLO): AES-256-GCM
 *                       when both have it (AES-NI), else ChaCha20-Poly1305
 *   tl__seal, tl__open  one record sealed in place / opened in place or
 *                       into another buffer with the link's cipher, the
 *                       nonce a per-direction record counter, the record's
 *                       4-byte header as associated data
 *
 * Also tl_node_secret_load, the way programs read the cluster secret
 * (from a file only its owner may read, or the environment; never argv).
 *
 * Invariants: a link seals and opens only once the peer's AUTH verified
 * (l->sealed), with the one cipher both offered (l->cipher, fixed at the
 * peer's HELLO and covered by both MACs); the counters only move forward,
 * so a record replayed, dropped, reordered or altered fails to open and
 * the link is dropped before anything in it is acted on.  Secret material (the ephemeral
 * secret key, the session keys) is wiped when it is no longer needed.
 */
#include "node_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SESSION_LABEL "tl-sess3"
#define AUTH_LABEL "tl-auth3"

void tl__session_init(conn *l)
{
    crypto_kx_keypair(l->mine, l->kx_sk);
}

unsigned tl__ciphers_local(const tl_node *n)
{
    unsigned have = TL__CIPHER_CHACHA |
                    (crypto_aead_aes256gcm_is_available() ? TL__CIPHER_AES : 0u);
    return have & n->ciphers;
}

/* The cipher of the link, from both offers (ours, l->theirs_ciphers):
 * AES-256-GCM when both offer it, else ChaCha20-Poly1305 when both do;
 * 0 if they share none. */
int tl__session_cipher(const conn *l)
{
    unsigned both = tl__ciphers_local(l->node) & l->their_ciphers;
    return both & TL__CIPHER_AES ? TL__CIPHER_AES : both & TL__CIPHER_CHACHA ? TL__CIPHER_CHACHA
                                                                            : 0;
}

const char *tl__cipher_name(int cipher)
{
    return cipher == TL__CIPHER_AES ? "AES-256-GCM" : "ChaCha20-Poly1305";
}

/* key = BLAKE2b-256(key = the cluster key, message = label || kx key). */
static void bind_key(const conn *l, unsigned char key[TL__SESSION_KEYBYTES],
                     const unsigned char kx[crypto_kx_SESSIONKEYBYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, l->key, sizeof l->key, TL__SESSION_KEYBYTES);
    crypto_generichash_update(&st, (const unsigned char *)SESSION_LABEL, 8);
    crypto_generichash_update(&st, kx, crypto_kx_SESSIONKEYBYTES);
    crypto_generichash_final(&st, key, TL__SESSION_KEYBYTES);
}

/* The session keys from our key pair and the peer's public key (in
 * l->theirs), for l->cipher (AES-256-GCM: its key schedules expanded
 * once); -1 if the peer's key is unusable (a low-order point). */
int tl__session_derive(conn *l)
{
    unsigned char rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
    int rc = l->client ? crypto_kx_client_session_keys(rx, tx, l->mine, l->kx_sk, l->theirs)
                       : crypto_kx_server_session_keys(rx, tx, l->mine, l->kx_sk, l->theirs);
    sodium_memzero(l->kx_sk, sizeof l->kx_sk);
    if (rc == 0) {
        bind_key(l, l->rx_key, rx);
        bind_key(l, l->tx_key, tx);
        if (l->cipher == TL__CIPHER_AES) {
            crypto_aead_aes256gcm_beforenm(&l->rx_aes, l->rx_key);
            crypto_aead_aes256gcm_beforenm(&l->tx_aes, l->tx_key);
        }
    }
    sodium_memzero(rx, sizeof rx);
    sodium_memzero(tx, sizeof tx);
    return rc == 0 ? 0 : -1;
}

/* The MAC a side sends: over both public keys, both ids and both cipher
 * offers, client first, with the role of the sender, so neither message
 * can be replayed, reflected or spliced onto other keys, and an offer
 * altered on the path (to force the other cipher) fails it. */
void tl__session_mac(const conn *l, int from_client, unsigned char mac[crypto_auth_BYTES])
{
    const unsigned char *pc = l->client ? l->mine : l->theirs;
    const unsigned char *ps = l->client ? l->theirs : l->mine;
    const char *idc = l->client ? l->node->id : l->peer;
    const char *ids = l->client ? l->peer : l->node->id;
    crypto_auth_hmacsha512256_state st;
    unsigned char role = from_client ? 'C' : 'S';
    unsigned char offers[2] = {(unsigned char)(l->client ? tl__ciphers_local(l->node)
                                                          : l->their_ciphers),
                               (unsigned char)(l->client ? l->their_ciphers
                                                         : tl__ciphers_local(l->node))};
    crypto_auth_hmacsha512256_init(&st, l->key, sizeof l->key);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)AUTH_LABEL, 8);
    crypto_auth_hmacsha512256_update(&st, &role, 1);
    crypto_auth_hmacsha512256_update(&st, pc, crypto_kx_PUBLICKEYBYTES);
    crypto_auth_hmacsha512256_update(&st, ps, crypto_kx_PUBLICKEYBYTES);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)idc, strlen(idc) + 1);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)ids, strlen(ids) + 1);
    crypto_auth_hmacsha512256_update(&st, offers, sizeof offers);
    crypto_auth_hmacsha512256_final(&st, mac);
}

/* The nonce of record number k: 4 zero bytes, then k little-endian (the
 * same 12 bytes for both ciphers). */
static void nonce_of(uint64_t k, unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES])
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (unsigned char)(k >> (8 * i));
}

_Static_assert(crypto_aead_aes256gcm_NPUBBYTES == crypto_aead_chacha20poly1305_IETF_NPUBBYTES &&
               crypto_aead_aes256gcm_ABYTES == TL__SEAL_BYTES,
               "both ciphers take the same nonce and tag sizes");

/* Seals the record at f: f[0..4) its header (already counting the tag),
 * f[4..4+len) the body, encrypted in place, then room for the tag; -1
 * once the counter is spent (2^64 - 1 records: never, in practice). */
int tl__seal(conn *l, unsigned char *f, size_t len)
{
    unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
    if (l->tx_n == UINT64_MAX)
        return -1;
    nonce_of(l->tx_n++, nonce);
    if (l->cipher == TL__CIPHER_AES)
        crypto_aead_aes256gcm_encrypt_detached_afternm(f + 4, f + 4 + len, NULL, f + 4, len, f,
                                                       4, NULL, nonce, &l->tx_aes);
    else
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(f + 4, f + 4 + len, NULL, f + 4, len,
                                                           f, 4, NULL, nonce, l->tx_key);
    return 0;
}

/* Opens the record at f (header, ciphertext of n bytes with its tag):
 * the body is decrypted into out (f + 4: in place; else a buffer that
 * does not overlap f); -1 if it does not authenticate as the next record
 * from the peer (nothing of it may be used then). */
int tl__open(conn *l, const unsigned char *f, size_t n, unsigned char *out)
{
    unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
    if (n < TL__SEAL_BYTES || l->rx_n == UINT64_MAX)
        return -1;
    nonce_of(l->rx_n, nonce);
    size_t len = n - TL__SEAL_BYTES;
    int rc = l->cipher == TL__CIPHER_AES
                 ? crypto_aead_aes256gcm_decrypt_detached_afternm(out, NULL, f + 4, len,
                                                                  f + 4 + len, f, 4, nonce,
                                                                  &l->rx_aes)
                 : crypto_aead_chacha20poly1305_ietf_decrypt_detached(out, NULL, f + 4, len,
                                                                      f + 4 + len, f, 4, nonce,
                                                                      l->rx_key);
    if (rc != 0)
        return -1;
    l->rx_n++;
    return 0;
}

void tl__session_wipe(conn *l)
{
    sodium_memzero(l->kx_sk, sizeof l->kx_sk);
    sodium_memzero(l->rx_key, sizeof l->rx_key);
    sodium_memzero(l->tx_key, sizeof l->tx_key);
    sodium_memzero(&l->rx_aes, sizeof l->rx_aes);
    sodium_memzero(&l->tx_aes, sizeof l->tx_aes);
    sodium_memzero(l->key, sizeof l->key);
}

/* ---- the cluster secret, for programs (tl_node_secret_load) ---- */

/* rt may be NULL: then only the code is returned. */
#define SECRET_ERR(rt, code, ...) ((rt) ? tl__seterr((rt), (code), __VA_ARGS__) : (code))

/* Reads the open file fd into buf, at most cap bytes: the length, or -1
 * (errno set).  *more: 0 the whole file, 1 the file holds more than cap
 * bytes, 2 exactly cap bytes then a newline. */
static ssize_t read_upto(int fd, unsigned char *buf, size_t cap, int *more)
{
    size_t got = 0;
    unsigned char extra[2];
    *more = 0;
    while (got < cap) {
        ssize_t k = read(fd, buf + got, cap - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            return (ssize_t)got;
        got += (size_t)k;
    }
    ssize_t k = read(fd, extra, sizeof extra);
    *more = k > 1 || (k == 1 && extra[0] != '\n') ? 1 : k == 1 ? 2 : 0;
    return (ssize_t)got;
}

static int secret_file(tl_runtime *rt, const char *path, unsigned char *buf, size_t cap,
                       size_t *len)
{
    struct stat st;
    int more;
    memset(&st, 0, sizeof st);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return SECRET_ERR(rt, errno == ENOENT ? TL_ENOENT : TL_EIO,
                          "tl_node_secret_load: %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        int bad_mode = S_ISREG(st.st_mode) && (st.st_mode & 077);
        close(fd);
        return bad_mode ? SECRET_ERR(rt, TL_EPERM, "tl_node_secret_load: %s: group or others "
                                     "may read or write it (chmod 600 it)", path)
                          : SECRET_ERR(rt, TL_EINVAL, "tl_node_secret_load: %s: not a regular "
                                     "file", path);
    }
    ssize_t k = read_upto(fd, buf, cap, &more);
    close(fd);
    if (k < 0)
        return SECRET_ERR(rt, TL_EIO, "tl_node_secret_load: %s: %s", path, strerror(errno));
    *len = more == 1 ? cap + 1 : (size_t)k; /* too long: said by the caller */
    if (more == 0 && *len && buf[*len - 1] == '\n')
        (*len)--;
    return TL_OK;
}

int tl_node_secret_load(tl_runtime *rt, const char *path, void *buf, size_t cap, size_t *len)
{
    if (!buf || !len || (rt && rt->magic != TL__MAGIC_RT))
        return TL_EMISUSE;
    *len = 0;
    int rc = TL_OK;
    const char *where = path ? path : "$" TL_NODE_SECRET_ENV;
    if (path) {
        rc = secret_file(rt, path, buf, cap, len);
    } else {
        const char *s = getenv(TL_NODE_SECRET_ENV);
        if (!s)
            return SECRET_ERR(rt, TL_ENOENT, "tl_node_secret_load: %s is not set", where);
        *len = strlen(s);
        if (*len <= cap)
            memcpy(buf, s, *len);
    }
    if (rc == TL_OK && (*len < 16 || *len > cap))
        rc = SECRET_ERR(rt, TL_EINVAL, "tl_node_secret_load: the secret in %s is %zu bytes; "
                        "it must be 16 to %zu", where, *len, cap);
    if (rc != TL_OK) {
        sodium_memzero(buf, cap);
        *len = 0;
    }
    return rc;
}
