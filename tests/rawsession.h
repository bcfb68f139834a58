/*
 * rawsession.h -- one side of a protocol-3 session (docs/PROTOCOL.md
 * section 4), written from the specification with libsodium, for tests
 * that talk to a node over a raw socket: the ephemeral key pair, the
 * cipher offers, the AUTH MAC, the session keys, and sealing and opening
 * records (ChaCha20-Poly1305 or AES-256-GCM).  It shares no
 * code with migrate/session.c, so a test that links with a node through it
 * checks the specification as much as the node.
 */
#ifndef TL_TESTS_RAWSESSION_H
#define TL_TESTS_RAWSESSION_H

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct raw_session {
    unsigned char key[crypto_auth_KEYBYTES];         /* from the cluster secret */
    unsigned char pk[crypto_kx_PUBLICKEYBYTES], sk[crypto_kx_SECRETKEYBYTES];
    unsigned char peer_pk[crypto_kx_PUBLICKEYBYTES];
    unsigned char tx[32], rx[32];                    /* the session keys */
    uint64_t txn, rxn;                               /* record counters */
    unsigned offer, peer_offer;                      /* cipher masks: 1 ChaCha, 2 AES */
    int aes;                                         /* the cipher: AES-256-GCM */
    int client;
    char id[64], peer[64];
} raw_session;

/* A fresh side `id` holding `secret`, the client (dialing) side or not. */
static inline void raw_session_init(raw_session *s, const char *secret, const char *id,
                                    int client)
{
    memset(s, 0, sizeof *s);
    if (sodium_init() < 0)
        return;
    crypto_generichash(s->key, sizeof s->key, (const unsigned char *)secret, strlen(secret),
                       (const unsigned char *)"libtasklet-node", 15);
    crypto_kx_keypair(s->pk, s->sk);
    s->client = client;
    s->offer = 1; /* ChaCha20-Poly1305 only, unless the test offers more */
    snprintf(s->id, sizeof s->id, "%s", id);
}

/* The MAC that the side of role `role` ('C' or 'S') sends. */
static inline void raw_session_mac(const raw_session *s, char role,
                                   unsigned char mac[crypto_auth_BYTES])
{
    unsigned char msg[8 + 1 + 64 + 128 + 2];
    const unsigned char *pc = s->client ? s->pk : s->peer_pk;
    const unsigned char *ps = s->client ? s->peer_pk : s->pk;
    const char *idc = s->client ? s->id : s->peer, *ids = s->client ? s->peer : s->id;
    size_t k = 0;
    memcpy(msg, "tl-auth3", 8);
    k = 8;
    msg[k++] = (unsigned char)role;
    memcpy(msg + k, pc, 32);
    memcpy(msg + k + 32, ps, 32);
    k += 64;
    memcpy(msg + k, idc, strlen(idc) + 1);
    k += strlen(idc) + 1;
    memcpy(msg + k, ids, strlen(ids) + 1);
    k += strlen(ids) + 1;
    msg[k++] = (unsigned char)(s->client ? s->offer : s->peer_offer);
    msg[k++] = (unsigned char)(s->client ? s->peer_offer : s->offer);
    crypto_auth(mac, msg, k, s->key);
}

/* key = BLAKE2b-256(key = cluster key, message = "tl-sess3" || kx key) */
static inline void raw_bind(const raw_session *s, unsigned char out[32],
                            const unsigned char kx[crypto_kx_SESSIONKEYBYTES])
{
    unsigned char msg[8 + crypto_kx_SESSIONKEYBYTES];
    memcpy(msg, "tl-sess3", 8);
    memcpy(msg + 8, kx, crypto_kx_SESSIONKEYBYTES);
    crypto_generichash(out, 32, msg, sizeof msg, s->key, sizeof s->key);
}

/* Takes the peer's HELLO (its id, public key and cipher offer), picks the
 * cipher (AES-256-GCM if both offer it) and derives the session keys; -1
 * if the key exchange refuses the peer's key. */
static inline int raw_session_hello(raw_session *s, const char *peer, const unsigned char pk[32],
                                    unsigned offer)
{
    s->peer_offer = offer;
    s->aes = (s->offer & offer & 2) != 0;
    unsigned char rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    memcpy(s->peer_pk, pk, 32);
    int rc = s->client ? crypto_kx_client_session_keys(rx, tx, s->pk, s->sk, s->peer_pk)
                       : crypto_kx_server_session_keys(rx, tx, s->pk, s->sk, s->peer_pk);
    if (rc != 0)
        return -1;
    raw_bind(s, s->rx, rx);
    raw_bind(s, s->tx, tx);
    return 0;
}

static inline void raw_nonce(uint64_t k, unsigned char n[12])
{
    memset(n, 0, 12);
    for (int i = 0; i < 8; i++)
        n[4 + i] = (unsigned char)(k >> (8 * i));
}

/* One record: AEAD of body (len bytes) with the 4-byte header h as
 * associated data into out + 4 (ciphertext, then tag). */
static inline void raw_seal1(raw_session *s, uint32_t h, const void *body, size_t len,
                             unsigned char *out)
{
    unsigned char nonce[12];
    out[0] = (unsigned char)(h >> 24);
    out[1] = (unsigned char)(h >> 16);
    out[2] = (unsigned char)(h >> 8);
    out[3] = (unsigned char)h;
    raw_nonce(s->txn++, nonce);
    if (s->aes)
        crypto_aead_aes256gcm_encrypt(out + 4, NULL, body, len, out, 4, NULL, nonce, s->tx);
    else
        crypto_aead_chacha20poly1305_ietf_encrypt(out + 4, NULL, body, len, out, 4, NULL, nonce,
                                                  s->tx);
}

#define RAW_RECORD ((size_t)64 << 10) /* the most a record carries, as a node sends */

/* The bytes raw_seal writes for a body of len bytes. */
static inline size_t raw_sealed_size(size_t len)
{
    size_t k = len ? (len + RAW_RECORD - 1) / RAW_RECORD : 1;
    return len + k * 20;
}

/* Seals body (len bytes) into out (raw_sealed_size(len) bytes) as records
 * of at most RAW_RECORD bytes, every one but the last with the MORE bit
 * (0x80000000) in its header; returns the bytes written. */
static inline size_t raw_seal(raw_session *s, const void *body, size_t len, unsigned char *out)
{
    size_t at = 0, done = 0;
    do {
        size_t piece = len - done > RAW_RECORD ? RAW_RECORD : len - done;
        uint32_t more = done + piece < len ? 0x80000000u : 0;
        raw_seal1(s, (uint32_t)(piece + 16) | more, (const char *)body + done, piece, out + at);
        at += 4 + piece + 16;
        done += piece;
    } while (done < len);
    return at;
}

/* Opens the sealed record f (4-byte header, then n bytes) in place: 0 and
 * the body at f + 4, *len bytes, or -1. */
static inline int raw_open(raw_session *s, unsigned char *f, size_t n, size_t *len)
{
    unsigned char nonce[12];
    unsigned long long mlen = 0;
    int rc;
    if (n < 16)
        return -1;
    raw_nonce(s->rxn, nonce);
    if (s->aes)
        rc = crypto_aead_aes256gcm_decrypt(f + 4, &mlen, NULL, f + 4, n, f, 4, nonce, s->rx);
    else
        rc = crypto_aead_chacha20poly1305_ietf_decrypt(f + 4, &mlen, NULL, f + 4, n, f, 4,
                                                       nonce, s->rx);
    if (rc != 0)
        return -1;
    s->rxn++;
    *len = (size_t)mlen;
    return 0;
}

#endif
