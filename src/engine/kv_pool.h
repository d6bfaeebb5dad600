// The KV block pool: pure host bookkeeping of the backend's KV cache blocks (vLLM v1's
// BlockPool + KVCacheManager prefix cache). It never touches device memory and never
// preempts: when blocks run out it returns failure and the scheduler decides.
//
// Blocks have ids 0..num_blocks-1 and a reference count. Every block with refcount 0 sits in
// the free list, which is in eviction order: allocation pops from the head; a released
// block is appended at the tail. A full block may be "cached": registered under a chain
// hash of (parent block's hash, its block_size token ids, an extra key such as a cache
// salt). A cached block whose refcount drops to 0 stays cached in the free list until it
// is popped for a new allocation (then its hash is dropped: eviction, least recently
// released first). A prefix lookup that hits a cached free block takes it out of the list.
//
// Not thread-safe: owned by the engine thread.
#pragma once
#include "util/common.h"

struct kv_pool;

// enable_caching false: kv_pool_cache_block and kv_pool_match are no-ops.
struct kv_pool *kv_pool_new(int num_blocks, int block_size, bool enable_caching);
void kv_pool_free(struct kv_pool *p);

int kv_pool_num_blocks(const struct kv_pool *p);
int kv_pool_block_size(const struct kv_pool *p);
// Blocks with refcount 0 (including cached ones that could be evicted).
int kv_pool_num_free(const struct kv_pool *p);
int kv_pool_refcount(const struct kv_pool *p, int32_t id);
bool kv_pool_is_cached(const struct kv_pool *p, int32_t id);

// Takes n blocks from the head of the free list (evicting cached ones), each with refcount
// 1, ids into out[n]. Returns 0, or -1 (nothing changed) if fewer than n are free.
int kv_pool_alloc(struct kv_pool *p, int n, int32_t *out);
// Adds a reference to each block; a block at refcount 0 leaves the free list.
void kv_pool_ref(struct kv_pool *p, const int32_t *ids, int n);
// Drops one reference from each block, in reverse order (so a sequence's tail blocks,
// least likely to be shared, are evicted before its head): blocks reaching 0 go to the
// tail of the free list.
void kv_pool_release(struct kv_pool *p, const int32_t *ids, int n);

// The chain hash of one full block. parent: the previous block's hash (0 for the first).
uint64_t kv_block_hash(uint64_t parent, const int32_t *tokens, int block_size, uint64_t extra);

// Registers block id (refcount > 0, full) as holding `tokens` after `parent`. If another
// block already holds that hash the call does nothing (the duplicate stays uncached).
// Returns the hash.
uint64_t kv_pool_cache_block(struct kv_pool *p, int32_t id, uint64_t parent,
                             const int32_t *tokens, uint64_t extra);

// Longest cached prefix of tokens[0..n_tokens) in whole blocks, at most max_blocks: writes
// the block ids and their hashes (hashes may be NULL) and returns the count. Takes no
// references (call kv_pool_ref on the ids before any allocation) and counts nothing.
int kv_pool_match(struct kv_pool *p, const int32_t *tokens, int n_tokens, uint64_t extra,
                  int max_blocks, int32_t *ids, uint64_t *hashes);
// Adds to the prefix-cache counters (the scheduler counts a lookup once, when it admits).
void kv_pool_count(struct kv_pool *p, int queried_tokens, int hit_tokens);

uint64_t kv_pool_queries(const struct kv_pool *p); // tokens looked up
uint64_t kv_pool_hits(const struct kv_pool *p);    // tokens found cached
// Drops every cached hash of free blocks (e.g. after a weights reload). Returns the count.
int kv_pool_reset_cache(struct kv_pool *p);

// Checks internal consistency (free list == refcount-0 blocks, hash table == cached
// blocks). Returns 0 or -1 with a message in err. For tests.
int kv_pool_check(const struct kv_pool *p, char *err);
// Ids of the free list from head (next evicted) to tail, up to max; returns the count.
int kv_pool_free_list(const struct kv_pool *p, int32_t *out, int max);
