// The scheduler (vLLM v1): continuous batching over sequences with a per-step token budget.
// One code path: every sequence "catches up" from num_computed to n_tokens (its prompt plus
// the outputs so far); a fresh prompt, a prefill chunk, a decode step and a resumed
// (preempted) sequence are all the same thing.
//
// Each step, sched_schedule:
//   1. walks the running sequences in admission order, giving each min(n_tokens -
//      num_computed, budget left) tokens and the KV blocks to hold them; when the pool is
//      out of blocks it preempts (by recompute) the lowest-priority, then newest, running
//      sequence (possibly the one being scheduled) until the allocation fits;
//   2. if nothing was preempted, admits waiting sequences (FCFS: oldest first; PRIORITY:
//      lowest priority value, then oldest) while budget, max_num_seqs and blocks allow:
//      the longest cached prefix (whole blocks, always leaving >= 1 token to compute) is
//      taken from the prefix cache; without chunked prefill a prompt is admitted only
//      whole. PRIORITY only (vLLM v1): when the best waiting sequence is short of KV blocks
//      and preempting the running sequences of strictly lower priority (higher value) would
//      free enough blocks held by them alone, those are preempted (by recompute) one at a
//      time, lowest priority then newest first, until it fits; dropped from the plan if
//      they were scheduled in step 1. After that, only sequences of strictly higher
//      priority than every victim are admitted in the same step.
// and emits a plain-data plan. The engine executes it and then calls sched_update, which
// advances num_computed and registers newly full blocks in the prefix cache. Appending the
// sampled token (sched_seq_append) and finishing (sched_remove) are the engine's calls.
//
// A preempted sequence releases all its blocks and returns to the waiting queue with
// num_computed 0; its tokens (prompt + outputs so far) are kept, so it resumes by
// recomputing them (mostly from the prefix cache) and then samples output number
// n_tokens - n_prompt, exactly as if it had not been preempted.
//
// Not thread-safe: owned by the engine thread.
#pragma once
#include "engine/kv_pool.h"

enum seq_status { SEQ_NEW = 0, SEQ_WAITING, SEQ_RUNNING, SEQ_DONE };

struct sched_seq {
    // set by the owner before sched_add:
    int32_t *tokens;          // prompt then outputs; owned (sched_seq_init/_destroy)
    int n_tokens, cap_tokens;
    int n_prompt;
    int priority;             // lower runs first under SCHED_PRIORITY
    uint64_t arrival;         // order of arrival (smaller = older); ties broken by order
    uint64_t cache_extra;     // extra key of the prefix hashes (cache salt)
    struct sched_seq *leader; // n > 1: a sibling whose prompt blocks this one waits for
                              // (cleared by sched_remove of the leader), or NULL
    void *owner;              // the engine's sequence
    int max_len;              // the sequence ends at this many tokens (0: max_model_len);
                              // one that has them all is not scheduled again
    int n_inflight;           // owner-maintained: batches in flight that point into this
                              // sequence's arrays; a waiting (preempted) sequence is not
                              // admitted again until 0 (its block table would change under them)
    int n_unresolved;         // pipelining (owner-maintained): the last n_unresolved tokens
                              // are placeholders (-1) still being sampled; blocks holding
                              // one are never registered in the prefix cache
    // scheduler state:
    enum seq_status status;
    int num_computed;         // tokens whose KV is in the blocks
    int32_t *blocks;          // block table
    int n_blocks, cap_blocks;
    uint64_t *hashes;         // chain hashes of the first n_hashed blocks
    int n_hashed;
    int n_cached_prompt;      // prompt tokens found in the prefix cache at first admission
    bool admitted_once;
    int n_preempted;          // times preempted
};

// tokens: copied. Returns with status SEQ_NEW.
void sched_seq_init(struct sched_seq *s, const int32_t *prompt, int n_prompt);
void sched_seq_destroy(struct sched_seq *s);
void sched_seq_append(struct sched_seq *s, int32_t token);
// Reserves room for n_tokens tokens and their block table (block_size tokens per block), so
// appends and block allocations up to that length never move the arrays: a batch in
// flight may keep pointing into them (async scheduling).
void sched_seq_reserve(struct sched_seq *s, int n_tokens, int block_size);

struct sched_config {
    int max_num_seqs;
    int max_num_batched_tokens;
    int max_model_len;
    bool chunked_prefill;
    bool priority_policy;     // false: FCFS
    bool prefix_caching;
    bool stable_arrays;       // reserve a sequence's token and block arrays for its max_len
                              // when admitted, so they never move while it runs (async
                              // scheduling: a batch in flight points into them)
};

// One sequence's work in a step: compute tokens[pos0 .. pos0 + n_new), with the block table
// as it is after this schedule. sample: the step reaches the end of the known tokens, so
// it yields the next token.
struct sched_item {
    struct sched_seq *seq;
    int pos0, n_new;
    bool sample;
};

struct sched_plan {
    struct sched_item *items; // owned by the scheduler, valid until the next sched_schedule
    int n_items;
    int n_tokens;
    int n_preempted;          // sequences preempted this step
    int n_admitted;           // sequences admitted from waiting this step
};

struct sched;
struct sched *sched_new(const struct sched_config *cfg, struct kv_pool *pool);
void sched_free(struct sched *s); // sequences still inside are released, not destroyed

// Queues a sequence (SEQ_NEW) as waiting.
void sched_add(struct sched *s, struct sched_seq *seq);
// Takes a sequence out (waiting or running), releasing its blocks; status SEQ_DONE.
void sched_remove(struct sched *s, struct sched_seq *seq);

void sched_schedule(struct sched *s, struct sched_plan *plan);
// Applies a plan that has been executed: num_computed += n_new for each item, and full
// blocks are registered in the prefix cache. Call before appending sampled tokens.
void sched_update(struct sched *s, const struct sched_plan *plan);

// After the owner resolved placeholder tokens (n_unresolved decreased): registers the
// blocks that became eligible for the prefix cache.
void sched_seq_settle(struct sched *s, struct sched_seq *seq);

int sched_num_running(const struct sched *s);
int sched_num_waiting(const struct sched *s);
uint64_t sched_num_preemptions(const struct sched *s);
// Checks every invariant (block tables vs pool refcounts, token counts, lists). For tests.
int sched_check(const struct sched *s, char *err);
