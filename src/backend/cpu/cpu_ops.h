// Per-op CPU functions of the reference backend. Every op is callable on its own, so tests
// (and the CUDA engineer's kernel checks) can compare a fast kernel against it.
// All activations are f32, row-major. Shapes are written as (rows, cols).
#pragma once
#include "model/weights.h"

// ---- thread pool -------------------------------------------------------------------------
// A fixed set of worker threads; cpu_pool_run runs fn(arg, task) for task in [0, n_tasks)
// across the workers and the calling thread and returns when all are done.
struct cpu_pool;
struct cpu_pool *cpu_pool_new(int n_threads); // n_threads <= 0: all online cores
void cpu_pool_free(struct cpu_pool *p);
int cpu_pool_size(const struct cpu_pool *p); // threads including the caller
void cpu_pool_run(struct cpu_pool *p, int n_tasks, void (*fn)(void *arg, int task), void *arg);

// ---- linear layers ------------------------------------------------------------------------
// A linear repacked for the CPU kernels. Dense weights stay in their stored dtype (borrowed;
// F32/F16/BF16) and are read directly (decode) or converted tile by tile for cblas_sgemm
// (batches of >= CPU_GEMM_MIN_TOKENS tokens). GPTQ weights are repacked at init:
//   inputs are sorted by group (so desc_act's g_idx becomes contiguous groups) and padded to
//   a multiple of 32; int4 is packed per 32 inputs as 16 bytes (byte k: input k in the low
//   nibble, input k+16 in the high nibble); int8 is one byte per input.
//   y[o] = sum_g scale[o][g] * (sum_{j in g} q[o][j] x'[j]) - scale[o][g] zero[o][g] sum_{j in g} x'[j]
//   where x'[j] = x[perm[j]].
#define CPU_GEMM_MIN_TOKENS 4

struct cpu_linear {
    int in, out;
    bool quantized;
    enum pg_dtype wdtype;    // dense: stored dtype
    const void *w;           // dense: [out, in], borrowed
    float *bias;             // [out] or NULL (owned)
    // GPTQ (all owned)
    int bits, n_groups, in_pad, row_bytes;
    int32_t *perm;           // [in_pad]: sorted position -> original input (-1: padding)
    int32_t *gstart;         // [n_groups + 1]: sorted group boundaries
    bool aligned;            // every boundary is a multiple of 32 (the fast kernel applies)
    uint8_t *q;              // [out, row_bytes]
    float *scale;            // [out, n_groups]
    float *zs;               // [out, n_groups]: zero * scale
};

// Builds the CPU form of l (which must outlive it for dense weights). No errors: the loader
// validated shapes already.
void cpu_linear_init(struct cpu_linear *cl, const struct linear *l);
void cpu_linear_free(struct cpu_linear *cl);
// y: (n, out) = x: (n, in) . W^T + b. Threads over output rows via the pool.
void cpu_linear_forward(struct cpu_pool *p, const struct cpu_linear *cl, const float *x, int n, float *y);
// Dequantizes/convers rows [r0, r1) of W into dst (r1 - r0, in) f32, in original input order.
void cpu_linear_rows_f32(const struct cpu_linear *cl, int r0, int r1, float *dst);

// ---- elementwise and normalization --------------------------------------------------------
// out: (n, dim) = x / sqrt(mean(x^2) + eps) * w. out may alias x.
void cpu_rmsnorm(float *out, const float *x, const float *w, int n, int dim, float eps);
// Rotate-half RoPE (Llama/Qwen2) in place on x: (n, n_heads, head_dim); pos: (n).
void cpu_rope(float *x, int n, int n_heads, int head_dim, const int32_t *pos, float theta);
// gate[i] = silu(gate[i]) * up[i] for i in [0, n).
void cpu_silu_mul(float *gate, const float *up, size_t n);
// Converts one embedding row (dtype t) of width dim into f32.
void cpu_embed_row(const struct tensor *embed, int64_t id, int dim, float *out);

// ---- paged attention --------------------------------------------------------------------
// The KV cache of one layer: K and V each (num_blocks, n_kv, block_size, head_dim), f32 or bf16.
struct cpu_kv_layer {
    void *k, *v;
    enum pg_dtype dtype;
    int block_size, n_kv, head_dim;
};
// Writes k/v: (n, n_kv, head_dim) for positions pos0..pos0+n-1 into the cache via block_table.
void cpu_kv_write(const struct cpu_kv_layer *kv, const int32_t *block_table, int pos0, int n,
                  const float *k, const float *v);
// Causal GQA attention for one sequence's n new tokens (positions pos0..pos0+n-1) over all
// cached positions [0, pos0 + n). q: (n, n_heads, head_dim); out: (n, n_heads, head_dim).
// Scale 1/sqrt(head_dim). Threads over (token, head) pairs.
void cpu_attention(struct cpu_pool *p, const struct cpu_kv_layer *kv, const int32_t *block_table,
                   int pos0, int n, int n_heads, const float *q, float *out);
