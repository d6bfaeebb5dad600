// KV block pool: ref counts, an intrusive doubly linked free list in eviction order, and a
// chained hash table from block hash to cached block (see kv_pool.h).
#include "engine/kv_pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/sampling.h" // pg_mix64

struct kv_pool {
    int num_blocks, block_size;
    bool caching;
    int32_t *ref;        // [num_blocks] reference counts
    int32_t *prev, *next;// free-list links (-1 ends)
    bool *in_free;
    int32_t head, tail;  // free list: head is evicted first
    int n_free;
    // prefix cache
    bool *cached;
    uint64_t *hash;      // [num_blocks] valid when cached
    uint64_t *parent;    // parent hash, checked with the tokens on lookup (no false hits)
    uint64_t *extra;
    int32_t *tokens;     // [num_blocks * block_size] token ids of cached blocks
    int32_t *hnext;      // bucket chain
    int32_t *buckets;    // [n_buckets] first block id, -1 empty
    uint64_t bucket_mask;
    uint64_t queries, hits;
};

struct kv_pool *kv_pool_new(int num_blocks, int block_size, bool enable_caching) {
    PG_CHECK(num_blocks > 0 && block_size > 0);
    struct kv_pool *p = pg_calloc(1, sizeof *p);
    p->num_blocks = num_blocks;
    p->block_size = block_size;
    p->caching = enable_caching;
    p->ref = pg_calloc((size_t)num_blocks, sizeof *p->ref);
    p->prev = pg_malloc((size_t)num_blocks * sizeof *p->prev);
    p->next = pg_malloc((size_t)num_blocks * sizeof *p->next);
    p->in_free = pg_calloc((size_t)num_blocks, sizeof *p->in_free);
    p->cached = pg_calloc((size_t)num_blocks, sizeof *p->cached);
    p->hash = pg_calloc((size_t)num_blocks, sizeof *p->hash);
    p->parent = pg_calloc((size_t)num_blocks, sizeof *p->parent);
    p->extra = pg_calloc((size_t)num_blocks, sizeof *p->extra);
    p->hnext = pg_malloc((size_t)num_blocks * sizeof *p->hnext);
    if (enable_caching)
        p->tokens = pg_malloc((size_t)num_blocks * (size_t)block_size * sizeof *p->tokens);
    size_t nb = 16;
    while (nb < (size_t)num_blocks * 2) nb *= 2;
    p->buckets = pg_malloc(nb * sizeof *p->buckets);
    memset(p->buckets, 0xff, nb * sizeof *p->buckets);
    p->bucket_mask = nb - 1;
    for (int i = 0; i < num_blocks; i++) {
        p->prev[i] = i - 1;
        p->next[i] = i + 1 < num_blocks ? i + 1 : -1;
        p->in_free[i] = true;
        p->hnext[i] = -1;
    }
    p->head = 0;
    p->tail = num_blocks - 1;
    p->n_free = num_blocks;
    return p;
}

void kv_pool_free(struct kv_pool *p) {
    if (!p) return;
    free(p->ref);
    free(p->prev);
    free(p->next);
    free(p->in_free);
    free(p->cached);
    free(p->hash);
    free(p->parent);
    free(p->extra);
    free(p->tokens);
    free(p->hnext);
    free(p->buckets);
    free(p);
}

int kv_pool_num_blocks(const struct kv_pool *p) { return p->num_blocks; }
int kv_pool_block_size(const struct kv_pool *p) { return p->block_size; }
int kv_pool_num_free(const struct kv_pool *p) { return p->n_free; }
int kv_pool_refcount(const struct kv_pool *p, int32_t id) { return p->ref[id]; }
bool kv_pool_is_cached(const struct kv_pool *p, int32_t id) { return p->cached[id]; }
uint64_t kv_pool_queries(const struct kv_pool *p) { return p->queries; }
uint64_t kv_pool_hits(const struct kv_pool *p) { return p->hits; }

static void list_remove(struct kv_pool *p, int32_t id) {
    PG_CHECK(p->in_free[id]);
    int32_t a = p->prev[id], b = p->next[id];
    if (a >= 0) p->next[a] = b;
    else p->head = b;
    if (b >= 0) p->prev[b] = a;
    else p->tail = a;
    p->in_free[id] = false;
    p->n_free--;
}

static void list_append(struct kv_pool *p, int32_t id) {
    PG_CHECK(!p->in_free[id]);
    p->prev[id] = p->tail;
    p->next[id] = -1;
    if (p->tail >= 0) p->next[p->tail] = id;
    else p->head = id;
    p->tail = id;
    p->in_free[id] = true;
    p->n_free++;
}

static void uncache(struct kv_pool *p, int32_t id) {
    if (!p->cached[id]) return;
    int32_t *link = &p->buckets[p->hash[id] & p->bucket_mask];
    while (*link != id) {
        PG_CHECK(*link >= 0);
        link = &p->hnext[*link];
    }
    *link = p->hnext[id];
    p->hnext[id] = -1;
    p->cached[id] = false;
}

int kv_pool_alloc(struct kv_pool *p, int n, int32_t *out) {
    if (n < 0 || n > p->n_free) return -1;
    for (int i = 0; i < n; i++) {
        int32_t id = p->head;
        list_remove(p, id);
        uncache(p, id); // eviction
        p->ref[id] = 1;
        out[i] = id;
    }
    return 0;
}

void kv_pool_ref(struct kv_pool *p, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        PG_CHECK(id >= 0 && id < p->num_blocks);
        if (p->ref[id] == 0) list_remove(p, id);
        p->ref[id]++;
    }
}

void kv_pool_release(struct kv_pool *p, const int32_t *ids, int n) {
    for (int i = n - 1; i >= 0; i--) {
        int32_t id = ids[i];
        PG_CHECK(id >= 0 && id < p->num_blocks && p->ref[id] > 0);
        if (--p->ref[id] == 0) list_append(p, id);
    }
}

uint64_t kv_block_hash(uint64_t parent, const int32_t *tokens, int block_size, uint64_t extra) {
    uint64_t h = pg_mix64(parent ^ 0x6b76706f6f6cull); // "kvpool"
    for (int i = 0; i < block_size; i++) h = pg_mix64(h ^ (uint32_t)tokens[i]);
    return pg_mix64(h ^ pg_mix64(extra + 1));
}

static int32_t lookup(const struct kv_pool *p, uint64_t h, uint64_t parent, const int32_t *tokens,
                      uint64_t extra) {
    for (int32_t id = p->buckets[h & p->bucket_mask]; id >= 0; id = p->hnext[id])
        if (p->hash[id] == h && p->parent[id] == parent && p->extra[id] == extra &&
            !memcmp(p->tokens + (size_t)id * p->block_size, tokens,
                    (size_t)p->block_size * sizeof *tokens))
            return id;
    return -1;
}

uint64_t kv_pool_cache_block(struct kv_pool *p, int32_t id, uint64_t parent, const int32_t *tokens,
                             uint64_t extra) {
    uint64_t h = kv_block_hash(parent, tokens, p->block_size, extra);
    if (!p->caching || p->cached[id]) return h;
    PG_CHECK(p->ref[id] > 0);
    if (lookup(p, h, parent, tokens, extra) >= 0) return h;
    p->cached[id] = true;
    p->hash[id] = h;
    p->parent[id] = parent;
    p->extra[id] = extra;
    memcpy(p->tokens + (size_t)id * p->block_size, tokens, (size_t)p->block_size * sizeof *tokens);
    int32_t *b = &p->buckets[h & p->bucket_mask];
    p->hnext[id] = *b;
    *b = id;
    return h;
}

int kv_pool_match(struct kv_pool *p, const int32_t *tokens, int n_tokens, uint64_t extra,
                  int max_blocks, int32_t *ids, uint64_t *hashes) {
    if (!p->caching) return 0;
    int bs = p->block_size, n = 0;
    uint64_t parent = 0;
    while (n < max_blocks && (n + 1) * bs <= n_tokens) {
        const int32_t *t = tokens + (size_t)n * bs;
        uint64_t h = kv_block_hash(parent, t, bs, extra);
        int32_t id = lookup(p, h, parent, t, extra);
        if (id < 0) break;
        ids[n] = id;
        if (hashes) hashes[n] = h;
        parent = h;
        n++;
    }
    return n;
}

void kv_pool_count(struct kv_pool *p, int queried_tokens, int hit_tokens) {
    p->queries += (uint64_t)queried_tokens;
    p->hits += (uint64_t)hit_tokens;
}

int kv_pool_reset_cache(struct kv_pool *p) {
    int n = 0;
    for (int32_t id = p->head; id >= 0; id = p->next[id])
        if (p->cached[id]) {
            uncache(p, id);
            n++;
        }
    return n;
}

int kv_pool_free_list(const struct kv_pool *p, int32_t *out, int max) {
    int n = 0;
    for (int32_t id = p->head; id >= 0 && n < max; id = p->next[id]) out[n++] = id;
    return n;
}

int kv_pool_check(const struct kv_pool *p, char *err) {
    int n = 0;
    int32_t prev = -1;
    for (int32_t id = p->head; id >= 0; id = p->next[id]) {
        if (n > p->num_blocks || !p->in_free[id] || p->ref[id] != 0 || p->prev[id] != prev) {
            pg_seterr(err, "free list corrupt at block %d (ref %d)", id, p->ref[id]);
            return -1;
        }
        prev = id;
        n++;
    }
    if (prev != p->tail || n != p->n_free) {
        pg_seterr(err, "free list has %d blocks, counter says %d", n, p->n_free);
        return -1;
    }
    int n_cached = 0, n_zero = 0;
    for (int i = 0; i < p->num_blocks; i++) {
        if (p->ref[i] < 0 || p->in_free[i] != (p->ref[i] == 0)) {
            pg_seterr(err, "block %d: refcount %d but in_free %d", i, p->ref[i], p->in_free[i]);
            return -1;
        }
        n_zero += p->ref[i] == 0;
        n_cached += p->cached[i];
    }
    if (n_zero != n) {
        pg_seterr(err, "%d blocks at refcount 0, %d in the free list", n_zero, n);
        return -1;
    }
    int in_table = 0;
    for (uint64_t b = 0; b <= p->bucket_mask; b++)
        for (int32_t id = p->buckets[b]; id >= 0; id = p->hnext[id]) {
            if (!p->cached[id] || (p->hash[id] & p->bucket_mask) != b) {
                pg_seterr(err, "hash table entry %d in wrong bucket or not cached", id);
                return -1;
            }
            in_table++;
        }
    if (in_table != n_cached) {
        pg_seterr(err, "%d blocks cached, %d in the hash table", n_cached, in_table);
        return -1;
    }
    return 0;
}
