/*
 * rawsession.h -- one side of a protocol-2 session (docs/PROTOCOL.md
 * section 4), written from the specification with libsodium, for tests
 * that talk to a node over a raw socket: the ephemeral key pair, the AUTH
 * MAC, the session keys, and sealing and opening frames.  It shares no
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
    uint64_t txn, rxn;                               /* frame counters */
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
    snprintf(s->id, sizeof s->id, "%s", id);
}

/* The MAC that the side of role `role` ('C' or 'S') sends. */
static inline void raw_session_mac(const raw_session *s, char role,
                                   unsigned char mac[crypto_auth_BYTES])
{
    unsigned char msg[8 + 1 + 64 + 128];
    const unsigned char *pc = s->client ? s->pk : s->peer_pk;
    const unsigned char *ps = s->client ? s->peer_pk : s->pk;
    const char *idc = s->client ? s->id : s->peer, *ids = s->client ? s->peer : s->id;
    size_t k = 0;
    memcpy(msg, "tl-auth2", 8);
    k = 8;
    msg[k++] = (unsigned char)role;
    memcpy(msg + k, pc, 32);
    memcpy(msg + k + 32, ps, 32);
    k += 64;
    memcpy(msg + k, idc, strlen(idc) + 1);
    k += strlen(idc) + 1;
    memcpy(msg + k, ids, strlen(ids) + 1);
    k += strlen(ids) + 1;
    crypto_auth(mac, msg, k, s->key);
}

/* key = BLAKE2b-256(key = cluster key, message = "tl-sess2" || kx key) */
static inline void raw_bind(const raw_session *s, unsigned char out[32],
                            const unsigned char kx[crypto_kx_SESSIONKEYBYTES])
{
    unsigned char msg[8 + crypto_kx_SESSIONKEYBYTES];
    memcpy(msg, "tl-sess2", 8);
    memcpy(msg + 8, kx, crypto_kx_SESSIONKEYBYTES);
    crypto_generichash(out, 32, msg, sizeof msg, s->key, sizeof s->key);
}

/* Takes the peer's HELLO (its id and public key) and derives the session
 * keys; -1 if the key exchange refuses the peer's key. */
static inline int raw_session_hello(raw_session *s, const char *peer, const unsigned char pk[32])
{
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

/* Seals body (len bytes) into out: 4-byte length, ciphertext, tag (out
 * holds len + 20 bytes); returns the frame's size. */
static inline size_t raw_seal(raw_session *s, const void *body, size_t len, unsigned char *out)
{
    unsigned char nonce[12];
    size_t n = len + crypto_aead_chacha20poly1305_IETF_ABYTES;
    out[0] = (unsigned char)(n >> 24);
    out[1] = (unsigned char)(n >> 16);
    out[2] = (unsigned char)(n >> 8);
    out[3] = (unsigned char)n;
    raw_nonce(s->txn++, nonce);
    crypto_aead_chacha20poly1305_ietf_encrypt(out + 4, NULL, body, len, out, 4, NULL, nonce,
                                              s->tx);
    return 4 + n;
}

/* Opens the sealed frame f (4-byte length, then n bytes) in place: 0 and
 * the body at f + 4, *len bytes, or -1. */
static inline int raw_open(raw_session *s, unsigned char *f, size_t n, size_t *len)
{
    unsigned char nonce[12];
    unsigned long long mlen = 0;
    if (n < crypto_aead_chacha20poly1305_IETF_ABYTES)
        return -1;
    raw_nonce(s->rxn, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(f + 4, &mlen, NULL, f + 4, n, f, 4, nonce,
                                                  s->rx) != 0)
        return -1;
    s->rxn++;
    *len = (size_t)mlen;
    return 0;
}

#endif
