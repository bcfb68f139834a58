/*
 * hmap.c -- the node's hash maps: objects found by a 64-bit hash of their
 * key (links up by peer name, requests and agents by id or tasklet,
 * transfers by id).
 *
 * Open addressing with linear probing over (hash, object) entries; an
 * empty entry has obj == NULL.  The caller computes the hash and says how
 * an object matches a key, so one map serves every table: tl__hash
 * (SipHash with the node's random key) for keys a peer chooses (its
 * request ids, node names), so that it cannot make them collide; tl__mix
 * (a keyed splitmix64 finalizer, a few instructions) for keys this node
 * chooses (its request ids, transfer ids, pointers).  Deletion shifts the following entries back (no
 * tombstones), so a lookup never walks more than the cluster its hash
 * falls in.
 *
 * Invariants: cap is 0 or a power of two, and n <= cap / 2 (the map grows
 * before it is more than half full); an object is in a map at most once
 * (the callers never add one twice); entries keep their hash, so growing
 * and deleting never hash again.
 */
#include "node_impl.h"

#include <stdlib.h>
#include <string.h>

uint64_t tl__hash(const tl_node *n, const void *p, size_t len)
{
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t h = 0;
    crypto_shorthash(out, p, len, n->hkey);
    for (size_t i = 0; i < sizeof h; i++)
        h = h << 8 | out[i];
    return h;
}

uint64_t tl__hash_u64(const tl_node *n, uint64_t k)
{
    return tl__hash(n, &k, sizeof k);
}

uint64_t tl__mix(const tl_node *n, uint64_t k)
{
    uint64_t seed;
    memcpy(&seed, n->hkey, sizeof seed);
    k ^= seed; /* splitmix64's finalizer */
    k = (k ^ (k >> 30)) * 0xbf58476d1ce4e5b9ULL;
    k = (k ^ (k >> 27)) * 0x94d049bb133111ebULL;
    return k ^ (k >> 31);
}

void *tl__hmap_get(const tl__hmap *m, uint64_t hash, tl__hmatch match, const void *key)
{
    if (!m->cap)
        return NULL;
    for (size_t i = hash & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const tl__hent *e = &m->e[i];
        if (!e->obj)
            return NULL;
        if (e->hash == hash && match(e->obj, key))
            return e->obj;
    }
}

static void place(tl__hmap *m, uint64_t hash, void *obj)
{
    size_t i = hash & (m->cap - 1);
    while (m->e[i].obj)
        i = (i + 1) & (m->cap - 1);
    m->e[i].hash = hash;
    m->e[i].obj = obj;
}

static int grow(tl__hmap *m)
{
    tl__hmap old = *m;
    size_t cap = m->cap ? 2 * m->cap : 16;
    m->e = calloc(cap, sizeof *m->e);
    if (!m->e) {
        *m = old;
        return TL_ENOMEM;
    }
    m->cap = cap;
    for (size_t i = 0; i < old.cap; i++)
        if (old.e[i].obj)
            place(m, old.e[i].hash, old.e[i].obj);
    free(old.e);
    return TL_OK;
}

int tl__hmap_put(tl__hmap *m, uint64_t hash, void *obj)
{
    if (2 * (m->n + 1) > m->cap && grow(m) != TL_OK)
        return TL_ENOMEM;
    place(m, hash, obj);
    m->n++;
    return TL_OK;
}

/* Removes entry i, then moves back each following entry of the cluster
 * that may not stay behind the hole (its home slot is not in (hole, j]). */
static void remove_at(tl__hmap *m, size_t i)
{
    size_t mask = m->cap - 1, hole = i;
    m->e[hole].obj = NULL;
    m->n--;
    for (size_t j = (hole + 1) & mask; m->e[j].obj; j = (j + 1) & mask) {
        size_t home = m->e[j].hash & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            m->e[hole] = m->e[j];
            m->e[j].obj = NULL;
            hole = j;
        }
    }
}

int tl__hmap_del(tl__hmap *m, uint64_t hash, const void *obj)
{
    if (!m->cap)
        return 0;
    for (size_t i = hash & (m->cap - 1); m->e[i].obj; i = (i + 1) & (m->cap - 1))
        if (m->e[i].obj == obj) {
            remove_at(m, i);
            return 1;
        }
    return 0;
}

void tl__hmap_free(tl__hmap *m)
{
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}
