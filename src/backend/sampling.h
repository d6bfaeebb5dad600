// Sampling parameters and the host sampler (the CPU backend's sampler and the oracle for
// any device sampler). Sampling is deterministic for a given (seed, step): the random
// draw for output token number `step` of a request comes from a counter-based hash of
// (seed, step), so a seeded request produces the same tokens whatever else is batched.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define SAMPLING_MAX_LOGPROBS 20

struct sampling_params {
    float temperature;         // 0: greedy (argmax)
    float top_p;               // (0, 1]
    int top_k;                 // <= 0: off
    float min_p;               // [0, 1]
    float repetition_penalty;  // 1: off; applies to prompt and output tokens (HF semantics)
    float presence_penalty;    // 0: off; output tokens only (OpenAI semantics)
    float frequency_penalty;   // 0: off; output tokens only
    uint64_t seed;
    int n_logit_bias;
    const int32_t *logit_bias_ids;
    const float *logit_bias_vals;
    int logprobs;              // -1: none (sample_output.logprob is then not computed: 0);
                               // 0: the chosen token's; k: plus top-k
};

// Whether a repetition, presence or frequency penalty applies (the sampler ignores a
// repetition penalty <= 0; the engine rejects one at submission).
static inline bool sampling_penalized(const struct sampling_params *p) {
    return (p->repetition_penalty != 1.0f && p->repetition_penalty > 0) || p->presence_penalty != 0.0f ||
           p->frequency_penalty != 0.0f;
}

struct sample_input {
    const struct sampling_params *params;
    uint64_t step;             // index of the output token being sampled (0 = first)
    const int32_t *prompt;     // for repetition penalty
    int n_prompt;
    const int32_t *output;     // tokens generated so far
    int n_output;
    const uint32_t *allowed;   // NULL, or a bitmask over the vocab: bit id set = allowed
                               // (structured outputs); at least one bit is set
    const int32_t *banned;     // tokens forbidden this step (eos under min_tokens), or NULL
    int n_banned;
};

struct sample_output {
    int32_t token;
    float logprob;
    int n_top;
    int32_t top_ids[SAMPLING_MAX_LOGPROBS];
    float top_logprobs[SAMPLING_MAX_LOGPROBS];
};

// Uniform float in [0, 1) from (seed, step, k): splitmix64 mixing; the same functions serve
// the host sampler and the CUDA sampler (compiled for both by nvcc).
#ifdef __CUDACC__
#define PG_HOST_DEVICE __host__ __device__
#else
#define PG_HOST_DEVICE
#endif
static inline PG_HOST_DEVICE uint64_t pg_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static inline PG_HOST_DEVICE float pg_uniform(uint64_t seed, uint64_t step, uint64_t k) {
    uint64_t h = pg_mix64(pg_mix64(seed ^ pg_mix64(step)) + k);
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

// Samples one token from logits[vocab] (modified in place: penalties, bias, masks,
// temperature). scratch must hold 2 * vocab floats + vocab ints (see sampler_scratch_size).
// Semantics (host sampler, backend/sampler.c; a device sampler must match):
//   1. allowed bitmask / banned ids -> -inf; 2. logit_bias added; 3. repetition penalty
//   (prompt + output; logit > 0 divided, else multiplied), then presence/frequency
//   penalties (output tokens only).
//   logprob / top_logprobs = log-softmax of the logits after steps 1-3 (before temperature
//   and before top-k/top-p/min-p).
//   temperature < 1e-5: argmax (ties -> lowest id). Otherwise logits / temperature; kept set
//   on the probability-sorted order (ties -> lower id first): top_k best, then the top_p
//   nucleus (smallest prefix with mass >= top_p of the top_k set's mass), then min_p
//   (prob >= min_p * max prob). Draw u = pg_uniform(seed, step, 0) * (kept mass), walk the
//   kept tokens in ascending id order, take the first whose cumulative mass exceeds u.
size_t sampler_scratch_size(int vocab);
void sampler_sample(float *logits, int vocab, const struct sample_input *in, void *scratch,
                    struct sample_output *out);
