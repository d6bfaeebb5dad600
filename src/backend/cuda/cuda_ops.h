// The CUDA backend's kernels, as plain C-callable launchers (device pointers in, enqueued
// on `st`, no synchronisation). Shared by backend_cuda.cu and the GPU tests in tests/cuda/.
// Activations are bf16 (stored as uint16_t here so C can include this), the residual
// stream and all accumulations are fp32. Every launcher checks the launch and records the
// first failure with file:line (cu_take_error reads it back).
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t bf16_t;  // storage of __nv_bfloat16

// ---- errors (cuda_util.cu) ----
// Records the first CUDA failure (thread-local) with its file:line; returns 0 when e is success.
int cu_note(cudaError_t e, const char *file, int line, const char *what);
// Moves the recorded failure (if any) into err and clears it; returns -1 when there was one.
int cu_take_error(char *err);
#define CU_CHECK(call) cu_note((call), __FILE__, __LINE__, #call)
#define CU_LAUNCHED(name) cu_note(cudaGetLastError(), __FILE__, __LINE__, name)
// Tests: turns programmatic dependent launch (pdl.cuh) on (where the device has it) or off for
// the current device from the next launch on, overriding PAGODA_PDL. Graphs already
// captured keep the launches they were captured with.
void cu_pdl_force(bool on);
bool cu_pdl_enabled(void);  // whether launches carry the PDL attribute now (cuda_util.cu)

// ---- elementwise (ops_elementwise.cu) ----
// out[t, :] = float(table[tok[t], :])                 out: (T, H) f32
void cu_embed(const bf16_t *table, const int32_t *tok, int T, int H, float *out, cudaStream_t st);
// resid += delta (when delta != NULL; delta row stride ld_delta), then
// out = bf16(resid * rsqrt(mean(resid^2) + eps) * w)   resid: (T, H) f32, out: (T, H) bf16
void cu_add_rmsnorm(float *resid, const bf16_t *delta, int ld_delta, const bf16_t *w, float eps,
                    int T, int H, bf16_t *out, cudaStream_t st);
// out[t, i] = silu(gu[t, i]) * gu[t, I + i]           gu: (T, 2I), out: (T, I)
void cu_swiglu(const bf16_t *gu, int T, int I, bf16_t *out, cudaStream_t st);
// y[t, j] += bias[j] for j < n (row stride ldy)
void cu_add_bias(bf16_t *y, int ldy, const float *bias, int T, int n, cudaStream_t st);
// dst[i, :] = src[rows[i], :]    (n rows of H bf16, src row stride ld)
void cu_gather_rows(const bf16_t *src, int ld, const int32_t *rows, int n, int H, bf16_t *dst,
                    cudaStream_t st);
// dst[t, i] = src[t, perm[i]]    (desc_act activation reordering; src/dst (T, n))
void cu_permute_cols(const bf16_t *src, const int32_t *perm, int T, int n, bf16_t *dst, cudaStream_t st);
// Conversions for uploads: f32/f16 -> bf16 in place on the device.
void cu_f32_to_bf16(const float *src, size_t n, bf16_t *dst, cudaStream_t st);
void cu_f16_to_bf16(const uint16_t *src, size_t n, bf16_t *dst, cudaStream_t st);
void cu_bf16_to_f32(const bf16_t *src, size_t n, float *dst, cudaStream_t st);

// ---- KV cache layout ----
// Per layer, K and V each: [num_blocks][n_kv][block_size][head_dim] of kv_dtype
// (0 = bf16, 1 = fp8 e4m3, 2 = fp8 e5m2; scale 1.0).
enum cu_kv_type { CU_KV_BF16 = 0, CU_KV_E4M3 = 1, CU_KV_E5M2 = 2 };

// The per-step token/sequence description, on the device.
struct cu_step {
    int T;                     // tokens in the step
    int n_seqs;
    const int32_t *tok_seq;    // [T] sequence of each token
    const int32_t *tok_pos;    // [T] absolute position of each token
    const int32_t *seq_len;    // [n_seqs] pos0 + n_new (keys visible to the last token)
    const int32_t *seq_q0;     // [n_seqs] index of the sequence's first token in the step
    const int32_t *seq_nnew;   // [n_seqs]
    const int32_t *block_tables; // [n_seqs, bt_stride]
    int bt_stride;
};

// ---- RoPE + KV store (ops_rope.cu) ----
// qkv: (T, ldqkv) bf16 holding q (n_heads*hd), k (n_kv*hd), v (n_kv*hd); adds bias (f32,
// same layout, may be NULL), rotates q and k (rotate-half, theta), writes q to q_out
// (T, n_heads*hd) and k, v into the paged cache at each token's slot.
void cu_qkv_rope_store(const bf16_t *qkv, int ldqkv, const float *bias, const struct cu_step *s,
                       int n_heads, int n_kv, int hd, float theta, int block_size, int kv_type,
                       void *k_cache, void *v_cache, bf16_t *q_out, cudaStream_t st);

// cos_sin[(pos * hd/2 + i) * 2 + {0, 1}] = cos, sin of pos / theta^(2i / hd) for pos < n_pos,
// the very values cu_qkv_rope_store computes (same expressions, float precision).
void cu_rope_table(float *cos_sin, int n_pos, int hd, float theta, cudaStream_t st);

// ---- attention (attn_decode.cu, attn_prefill.cu) ----
// out: (T, n_heads*hd) bf16. Decode handles sequences with n_new == 1 listed in `seqs`
// (n of them) with split-K over up to `n_splits` (1..64) blocks per (sequence, kv head);
// hd 64 or 128, n_heads / n_kv in 1..8. partial: CU_ATTN_TICKETS + n * n_heads * n_splits *
// (hd+2) floats; its first CU_ATTN_TICKETS words are tickets that must be zero before the
// first call (memset the allocation once; the kernel leaves them zero, so graphs replay).
// Requires n * n_kv <= CU_ATTN_TICKETS.
#define CU_ATTN_TICKETS 16384
// Benchmark hook: the fewest keys per split (rounded up to 32; 0 = default 64). Not thread-safe.
void cu_attn_decode_tune(int min_keys_per_split);
// The split merge through a thread block cluster (distributed shared memory, no partials or
// tickets; sm_90+, elsewhere ignored): at most 8 of the n_splits are launched, as one cluster
// per (sequence, kv head). On by default; PAGODA_ATTN_CLUSTER=0 (read at the first launch)
// turns it off; this hook overrides it: 1 on, 0 off, -1 the environment's setting again. Not
// thread-safe.
void cu_attn_decode_cluster(int on);
// Q.K and P.V on the tensor cores (mma.sync; bf16 caches in bf16, fp8 caches in f16) instead of
// the CUDA cores. On by default; PAGODA_ATTN_TC=0 (read at the first launch) turns it off; this hook
// overrides it: 1 on, 0 off, -1 the environment's setting again. Not thread-safe.
void cu_attn_decode_tc(int on);
// Test hook: a kernel launched with PDL that lets the next kernel launch at once, waits
// delay_ns, then copies `bytes` (a multiple of 16) from src0 to dst0 and from src1 to dst1:
// it stands in for the kernel that stores the new KV rows just before the decode attention.
void cu_test_delayed_copy(void *dst0, const void *src0, void *dst1, const void *src1, size_t bytes,
                          unsigned delay_ns, cudaStream_t st);
void cu_attn_decode(const bf16_t *q, const struct cu_step *s, const int32_t *seqs, int n,
                    int n_heads, int n_kv, int hd, int block_size, int kv_type, const void *k_cache,
                    const void *v_cache, int n_splits, float *partial, bf16_t *out, cudaStream_t st);
// Causal flash attention for any sequences (prefill / chunked prefill / mixed): tiles lists
// (seq, first query index within the seq) for n_tiles tiles of CU_PREFILL_TILE queries.
#define CU_PREFILL_TILE 64
void cu_attn_prefill(const bf16_t *q, const struct cu_step *s, const int32_t *tiles, int n_tiles,
                     int n_heads, int n_kv, int hd, int block_size, int kv_type, const void *k_cache,
                     const void *v_cache, bf16_t *out, cudaStream_t st);

// ---- GPTQ (gptq.cu) ----
// Device layout of a GPTQ linear (built from the checkpoint form by the backend at load):
//   qweight  the tile layout of backend/gptq_pack.h ((in/8) * out int32 words; 4-bit only:
//            8-bit weights and shapes cu_gptq_tc_supported refuses are widened to dense bf16)
//   sz       [out/16][n_groups][16] uint32: low 16 bits = fp16 scale, high 16 = zero point
//   rows are in group order (desc_act permuted at load; perm given to the caller)
struct cu_gptq {
    int in, out, group_size, n_groups;
    const int32_t *qweight;
    const uint32_t *sz;
};
// Shapes the int4 kernels take: in % 64 == 0, out % 16 == 0, group_size % 64 == 0.
bool cu_gptq_tc_supported(int in, int out, int group_size);
#define CU_GEMV_MAX_ROWS 16
// Benchmark hook: weight bytes per block (0: default 32 KiB) and flags (-1: the default) of
// the int4 GEMV. CU_GPTQ_NO_REDUCE (timing only, wrong results): the K splits are left
// unsummed. Call before sizing the scratch; not thread-safe.
#define CU_GPTQ_NO_REDUCE 2
// CU_GPTQ_ACQREL_TICKET (the default): a block releases its partials and the group's last
// block acquires everyone's through one atom.acq_rel.gpu on the ticket (cumulative over the
// block's barrier) instead of fence + atomic + fence: 71.2 vs 72.5 us per 14B layer at batch 1
// (bench/results/2026-11-29-session7-h200.md). PAGODA_GPTQ_FLAGS=0 gives the fences back.
#define CU_GPTQ_ACQREL_TICKET 4
#define CU_GPTQ_DEFAULT_FLAGS CU_GPTQ_ACQREL_TICKET
void cu_gptq_tune(int block_bytes, int flags);
// Benchmark hook: while buf is set, the k-th GEMV launched from now on records 8 values per
// block (gptq.cu, tc_stamp) at buf + (k * blocks_per_launch + block) * 8; NULL stops it.
void cu_gptq_trace(uint64_t *buf, int blocks_per_launch);
// Benchmark hook: while buf is set, the k-th decode attention launched from now on records 8
// values per block (attn_decode.cu, dec_stamp) at buf + (k * blocks_per_launch + block) * 8,
// block = (i * n_kv + kv head) * splits + split for the i-th listed sequence (a launch of more
// blocks records nothing); NULL stops it. Not thread-safe.
void cu_attn_trace(uint64_t *buf, int blocks_per_launch);
// The GEMV scratch `partial` (cu_gemv_partial_floats(l, M) floats, the max over layers) starts
// with CU_GEMV_COUNTERS tickets that must be zero before the first GEMV: call
// cu_gemv_scratch_reset after allocating it (and at will, e.g. once per step; the kernels
// leave the tickets zero, so graphs replay). Requires cu_gptq_tc_supported.
#define CU_GEMV_COUNTERS 4096
size_t cu_gemv_partial_floats(const struct cu_gptq *l, int M);
void cu_gemv_scratch_reset(float *partial, cudaStream_t st);
// The GEMV's input: row m of the activation is x + m * ldx. swiglu: the row holds gate (in)
// then up (in) and the input is bf16(silu(gate) * up) exactly as cu_swiglu forms it. perm
// (may be NULL): input column i is column perm[i] of that (desc_act order).
struct cu_gemv_in {
    const bf16_t *x;
    int ldx;
    const int32_t *perm;
    bool swiglu;
};
// y (M, ldy) bf16 = in(x) (M, in) . W^T (+ bias f32) for 1 <= M <= CU_GEMV_MAX_ROWS;
// deterministic (fixed summation order). cu_gptq_gemv: plain x (ldx = in).
void cu_gptq_gemv_ex(const struct cu_gptq *l, const struct cu_gemv_in *x, int M, const float *bias,
                     bf16_t *y, int ldy, float *partial, cudaStream_t st);
void cu_gptq_gemv(const struct cu_gptq *l, const bf16_t *x, int M, const float *bias, bf16_t *y,
                  int ldy, float *partial, cudaStream_t st);
// Fused forms of the same GEMV for the decode layers (few rows), which remove the norm,
// SwiGLU and RoPE kernels from a layer. Input side: with `norm`, the input is the RMSNorm of
// the residual stream, formed while staging (x->x and x->ldx are ignored, x->perm applies,
// x->swiglu must be false):
//   x[m][i] = bf16(resid[m][i] * rsqrt(sum_t ssq[m][t] / in + eps) * w[i])
// exactly as cu_add_rmsnorm forms it, where ssq (M, in / 64) holds the sums of squares of the
// residual's 64-column tiles that a CU_GEMV_RESID GEMV left (summed in fixed order).
struct cu_gemv_norm {
    const float *resid;  // (M, in) f32, 16-byte aligned
    const bf16_t *w;     // (in), 16-byte aligned
    const float *ssq;    // (M, in / 64)
    float eps;
};
// Output side (s = the K splits summed in split order + bias, r = bf16(s)):
//   CU_GEMV_STORE   y[m][n] = r (what cu_gptq_gemv_ex does)
//   CU_GEMV_RESID   resid[m][n] += r (resid (M, out) f32), then ssq[m][t] (M, out / 64) = the sum
//                   of the new resid^2 over tile t's 64 columns: the residual add of
//                   cu_add_rmsnorm, leaving what a `norm` input needs; out % 64 == 0
//   CU_GEMV_SWIGLU  columns j and out/2 + j are gate and up: y[m][j] = bf16(silu(r_j) *
//                   r_{out/2+j}) for j < out/2 (as cu_swiglu); out/2 % 64 == 0
//   CU_GEMV_ROPE    the columns are q | k | v heads of rope.hd: the work of cu_qkv_rope_store
//                   (rope.bias added to r, rotate-half RoPE at each token's position, q to
//                   rope.q (M, n_heads * hd), k and v into the paged cache); hd % 64 == 0
enum { CU_GEMV_STORE = 0, CU_GEMV_RESID = 1, CU_GEMV_SWIGLU = 2, CU_GEMV_ROPE = 3 };
struct cu_gemv_rope {
    struct cu_step s;    // row m of the GEMV is token m of the step
    int n_heads, n_kv, hd, block_size, kv_type;
    const float *cos_sin;  // cu_rope_table of n_pos positions (positions must be below n_pos)
    int n_pos;
    const float *bias;   // (out) or NULL, added after rounding (as the rope kernel does)
    void *k_cache, *v_cache;
    bf16_t *q;
};
struct cu_gemv_out {
    int kind;            // CU_GEMV_*
    bf16_t *y;           // STORE, SWIGLU
    int ldy;
    float *resid, *ssq;  // RESID
    struct cu_gemv_rope rope;  // ROPE
};
// Rows the fused forms take (any form but a plain input with a STORE output); the norm input
// goes with the STORE and ROPE outputs only.
#define CU_GEMV_FUSED_MAX_ROWS 8
// Whether cu_gptq_gemv_fused takes this output kind and input form for the linear.
bool cu_gemv_fused_supported(const struct cu_gptq *l, int kind, bool norm, int rope_hd);
void cu_gptq_gemv_fused(const struct cu_gptq *l, const struct cu_gemv_in *x, const struct cu_gemv_norm *norm,
                        int M, const float *bias, const struct cu_gemv_out *out, float *partial, cudaStream_t st);
// ---- dense bf16 GEMV (dense_gemv.cu) ----
// y (M, ldy) = x (M, in) bf16 . W^T (+ bias f32, may be NULL) for 1 <= M <= CU_DENSE_GEMV_MAX_ROWS;
// W (out, in) bf16 row-major, in % 8 == 0, 16-byte aligned rows; y bf16, or f32 when f32_out.
// Deterministic (fixed reduction order).
#define CU_DENSE_GEMV_MAX_ROWS 8
void cu_bf16_gemv(const bf16_t *W, int in, int out, const bf16_t *x, int M, const float *bias, void *y,
                  int ldy, bool f32_out, cudaStream_t st);
// wt (in, out) bf16 = dequantized W^T (for the cuBLAS path).
void cu_gptq_dequant(const struct cu_gptq *l, bf16_t *wt, cudaStream_t st);

// ---- sampling (sampling.cu) ----
// One sampled row's parameters, on the device.
struct cu_sample_params {
    float temperature, top_p, min_p;
    int top_k;
    float repetition_penalty, presence_penalty, frequency_penalty;
    uint64_t seed, step;
    int n_logprobs;            // -1 none, 0 chosen only, k top-k too
    int pen_off, pen_n;        // unique penalty entries: pen_tok[], pen_cnt[] (output count),
                               // pen_flags[] (bit 0: in prompt or output)
    int bias_off, bias_n;      // logit bias entries bias_tok[], bias_val[]
    int ban_off, ban_n;        // banned tokens
    int allowed_off;           // word offset of the allowed bitmask, -1 when none
};
struct cu_sample_lists {
    const int32_t *pen_tok, *pen_cnt, *pen_flags;
    const int32_t *bias_tok;
    const float *bias_val;
    const int32_t *ban;
    const uint32_t *allowed;
};
struct cu_sample_out {
    int32_t token;
    float logprob;
    int32_t n_top;
    int32_t top_ids[20];
    float top_logprobs[20];
};
// logits (n, vocab) f32 are modified in place (penalties, bias, masks). scratch: n * vocab f32.
void cu_sample(float *logits, int n, int vocab, const struct cu_sample_params *p,
               const struct cu_sample_lists *lists, float *scratch, struct cu_sample_out *out,
               cudaStream_t st);
// Greedy only, for graphs: out[i].token = the argmax of row i (ties to the lower id; a row of
// only -inf gives 0), out[i].logprob = its log softmax (NaN for a row of only -inf, as the host
// sampler's), n_top = 0. cu_argmax: one block per row. cu_argmax_split: each row spread over up
// to 128 blocks of at least 1024 logits, the row's last block merging their partials in a fixed
// order (deterministic); scratch: cu_argmax_scratch_bytes(n, vocab) bytes serve up to n rows of
// this vocab, zero before the first call (the kernel leaves it zero, so graphs replay).
void cu_argmax(const float *logits, int n, int vocab, struct cu_sample_out *out, cudaStream_t st);
size_t cu_argmax_scratch_bytes(int n, int vocab);
void cu_argmax_split(const float *logits, int n, int vocab, void *scratch, struct cu_sample_out *out,
                     cudaStream_t st);

// ---- measurements (cuda_util.cu) ----
// Device-to-device copy bandwidth (bytes read + written per second) and cuBLAS bf16 GEMM
// rate (FLOP/s) on random data; returns 0 or -1 with err.
int cu_measure_ceilings(double *copy_bytes_per_s, double *gemm_flops, char *err);

#ifdef __cplusplus
}
#endif
