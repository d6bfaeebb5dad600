// The backend interface: one small vtable plus an opaque context (a cut-down ggml_backend_i).
// The engine builds a `step_batch` (plain data: for each sequence, the new tokens, their
// starting position and its block table), hands it to `execute`, and reads the sampled
// tokens back with `collect`. `execute` may return before the work is done (CUDA enqueues
// on a stream), so the engine can prepare the next step while the device runs this one.
// Every backend owns its KV cache: num_blocks blocks of block_size tokens, for every layer,
// K and V for every kv head; block ids come from the engine's KV pool (engine/kv_pool.h).
#pragma once
#include "model/weights.h"
#include "backend/sampling.h"

struct backend_config {
    int block_size;            // tokens per KV block (default 16)
    int num_blocks;            // 0: size from the memory budget below
    size_t kv_cache_bytes;     // CPU: --kv-cache-memory (bytes for KV; 0 = 4 GiB)
    float gpu_memory_utilization; // CUDA: fraction of device memory for weights+activations+KV
    enum pg_dtype kv_dtype;    // PG_F32/PG_BF16/PG_F16 (auto picks), PG_F8_E4M3, PG_F8_E5M2
    int max_num_seqs;          // largest batch the engine will send
    int max_num_batched_tokens;// most new tokens in one step
    int max_model_len;         // longest sequence (prompt + output)
    bool enforce_eager;        // CUDA: no graphs
    int n_threads;             // CPU: worker threads (0 = all cores)
    int device_id;             // CUDA: first device
    int tensor_parallel_size;  // CUDA: GPUs (1 = single)
    uint64_t seed;
    int max_inflight;          // 0 or 1: execute, collect, execute, ... Otherwise the engine may
                               // call execute up to max_inflight times before the matching
                               // collects; collect returns the OLDEST uncollected step's results
                               // (FIFO). Each in-flight batch (and all it points to) stays valid
                               // until its collect returns.
};

// One sequence in a step. Sequences are independent; their tokens are packed in order.
struct step_seq {
    int n_new;                 // tokens to compute this step (>= 1)
    const int32_t *tokens;     // [n_new] input token ids
    int pos0;                  // absolute position of tokens[0] == tokens already in the KV cache
    const int32_t *block_table;// [n_blocks] block ids covering positions [0, pos0 + n_new)
    int n_blocks;
    bool sample;               // produce a token from the last new position (false for a
                               // prefill chunk that does not reach the prompt's end)
    struct sample_input smp;   // sampling parameters and state (used when sample is true)
    // Device-side token feed (pipelining): when feed is true, n_new must be 1 and tokens[0]
    // is a placeholder (-1): the backend uses the token it sampled for result index feed_idx
    // (the index among the sampling sequences, i.e. in collect's out array) of the step
    // executed immediately before this one. A backend rejects feed with n_new != 1, with no
    // previous step, or with feed_idx out of range. Zero-init = no feed.
    bool feed;
    int feed_idx;
};

struct step_batch {
    int n_seqs;
    struct step_seq *seqs;
    int n_tokens;              // sum of n_new
};

// The result for each sequence with sample == true, in batch order.
struct step_result {
    int32_t token;
    float logprob;             // log p(token) under the processed distribution's logits
    int n_top;                 // == smp.params->logprobs when > 0
    int32_t top_ids[SAMPLING_MAX_LOGPROBS];
    float top_logprobs[SAMPLING_MAX_LOGPROBS];
};

struct backend_ops {
    const char *name;
    // Builds the backend from the weights (which must outlive it) and sizes the KV pool;
    // writes the chosen block count to *num_blocks. Returns 0 or -1 with err set.
    int (*init)(void **ctx, const struct model_weights *w, const struct backend_config *cfg,
                int *num_blocks, char *err);
    // Starts computing a step. The batch (and everything it points to) stays valid and
    // unchanged until collect returns.
    int (*execute)(void *ctx, const struct step_batch *b, char *err);
    // Waits for the step started by execute; writes one result per sampling sequence.
    int (*collect)(void *ctx, struct step_result *out, char *err);
    // Test/reference path: runs the step and writes the raw logits of the last new token of
    // every sequence ([n_seqs, vocab] f32, or [n_tokens, vocab] when all_positions).
    int (*logits)(void *ctx, const struct step_batch *b, bool all_positions, float *out, char *err);
    void (*free)(void *ctx);
};

// The backends this binary was built with ("cpu", and "cuda" with CUDA=1).
const struct backend_ops *backend_find(const char *name);
// "auto": cuda when built with it and a device is present, else cpu.
const struct backend_ops *backend_pick(const char *device, char *err);

extern const struct backend_ops backend_cpu;
