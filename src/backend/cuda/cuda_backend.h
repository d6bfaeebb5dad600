// Internal state of the CUDA backend (backend_cuda.cu, cuda_weights.cu). Not a public header.
#pragma once
#include <cublas_v2.h>

#include "backend/cuda/cuda_ops.h"
#ifdef __cplusplus
#define _Noreturn [[noreturn]]
extern "C" {
#endif
#include "backend/backend.h"
#ifdef __cplusplus
}
#endif

// A linear layer on the device; several checkpoint linears sharing an input (q/k/v,
// gate/up) are fused into one when their formats agree (concatenated along out).
struct dlin {
    int in, out;
    bool quant;            // GPTQ 4-bit (else dense bf16)
    bf16_t *w;             // dense: (out, in)
    struct cu_gptq q;      // quant: device pointers
    int32_t *perm;         // desc_act input permutation (in), or NULL
    bf16_t *wt;            // quant: dequantized W^T (in, out) kept for many-row steps, or NULL
    float *bias;           // (out) or NULL
};

// A group of linears reading the same input and writing adjacent column ranges of one
// output: n == 1 when fused.
struct dgroup {
    int n;
    struct dlin part[3];
    int col[3];            // output column offset of each part
    int out;               // total columns
};

struct dlayer {
    bf16_t *attn_norm, *ffn_norm;
    struct dgroup qkv, gu;
    struct dlin o, down;
    float *qkv_bias;       // fused (q|k|v) bias for the rope kernel, or NULL
};

#define CU_MAX_BUCKETS 24

// One executed, not yet collected step (pipelining keeps up to max_inflight of them).
struct cu_slot {
    struct cu_sample_out *h_out; // pinned [Smax]: this step's d_out, copied at execute
    cudaEvent_t done;            // recorded after that copy
    int *res_row;                // [Smax] result i comes from output row res_row[i]
    int n_res;                   // results to deliver at collect
};

// PAGODA_STEP_TIMING=1 (read at init): GPU timestamps around each executed step, summed when
// it is collected and printed by cuda_free. Marks, in stream order: START before the first
// upload, FORWARD after the uploads (inputs, sampling parameters, token feed) just before the
// forward pass or the decode graph, SAMPLED after the argmax / sampler, COPIED after the D2H
// copy of the results.
enum { CU_TS_START, CU_TS_FORWARD, CU_TS_SAMPLED, CU_TS_COPIED, CU_TS_N };
enum { CU_TK_UNCOUNTED = -1, CU_TK_EAGER, CU_TK_GRAPH, CU_TK_N };
struct cu_tset {
    cudaEvent_t ev[CU_TS_N];     // created with timing
    int kind;                    // CU_TK_*: uncounted when the step captured its graph (host time)
    bool follows;                // the previous set's step was the last work before it on the stream
};
struct cu_tsum {
    long steps, gaps;            // gaps: steps that followed another timed step
    double gap_ms, upload_ms, forward_ms, d2h_ms;
};
struct cu_timing {
    // Step k (in execute order, = collect order) uses sets[k % n_sets]; n_sets = max_inflight
    // + 1, so the previous step's COPIED mark (the gap's start) is not re-recorded before the
    // step is collected.
    struct cu_tset *sets;
    int n_sets;
    long executed, collected;
    bool chain;                  // the last work enqueued on the stream was a timed step
    struct cu_tsum sum[CU_TK_N];
};

struct cuda_ctx {
    struct model_config mc;
    struct backend_config bc;
    int dev, n_sm;
    cudaStream_t st;
    cublasHandle_t blas;
    void *blas_ws;
    // weights
    bf16_t *embed, *lm_head, *final_norm;
    struct dlayer *layers;
    size_t weight_bytes;
    size_t dense_cache_bytes;  // persistent dequantized copies of the int4 weights (0: per step)
    // KV cache: layer l's K at kv + (2l) * layer_bytes, V at (2l+1)
    void *kv;
    size_t kv_layer_bytes;
    int kv_type, num_blocks, dummy_block;
    // sizes
    int Tmax, Smax, bt_stride, max_tiles, qkv_out, gu_out;
    // activations
    float *resid, *attn_partial, *gemv_partial, *logits, *samp_scratch;
    void *argmax_scratch;        // cu_argmax_split's tickets (zeroed at allocation) and partials
    bf16_t *xn, *qkv, *q, *attn, *delta, *gu, *act, *xperm, *deq, *hs;
    size_t attn_partial_floats, gemv_partial_floats;
    int fuse_rows;               // steps of at most this many tokens run the fused layer (forward)
    float *ssq;                  // fused layer: (fuse_rows, hidden / 64) residual tile sums of squares
    bool fuse_rope;              // fused layer: RoPE + KV store in the qkv GEMV (PAGODA_FUSE_ROPE=0: off)
    float *rope_cs;              // its cu_rope_table of max_model_len positions
    // step inputs: device arrays (fixed addresses, graphs read them) and their host mirror,
    // which pack_step fills
    int32_t *d_i32, *h_i32;      // sections below, each at a fixed offset
    size_t off_tok, off_seq, off_pos, off_len, off_q0, off_nnew, off_bt, off_dec, off_tiles, off_rows, n_i32;
    size_t off_feed;             // pipelining: (token index, previous step's d_out row) pairs
    int32_t *bt_used;            // host [Smax]: block-table entries of each row in the step packed last
    // The used part of every section travels in one copy (upload_step): pinned h_pack ->
    // d_pack, then k_scatter_step puts each run at its offset in d_i32. Layout: n_runs headers
    // of 3 words (word offset in d_i32, word offset in the pack, word count), then the runs.
    int32_t *h_pack, *d_pack;    // pack_words each
    size_t pack_words;
    struct cu_sample_params *d_params, *h_params;
    struct cu_sample_out *d_out; // written by every step's sampler / argmax (stream order)
    // sampling lists (grown on demand)
    void *d_lists, *h_lists;
    size_t lists_cap;
    int32_t *mark, *mark_idx;    // host, vocab each: dedup of penalty tokens
    int mark_epoch;
    // graphs per decode bucket
    int buckets[CU_MAX_BUCKETS], n_buckets;
    cudaGraphExec_t graphs[CU_MAX_BUCKETS];
    // the steps in flight: a FIFO ring of max_inflight slots (oldest at slot_head)
    struct cu_slot *slots;
    int n_slots, slot_head, slot_n;
    int last;                    // slot of the step executed last (feeds read its rows), -1: none
    // The pinned staging (h_pack, h_params, h_lists) is single: `uploaded` is recorded after a
    // step's H2D copies, and the next pack waits for it before overwriting the staging. d_pack
    // is single too: the next step's copy into it is stream-ordered after this step's scatter.
    cudaEvent_t uploaded;
    bool upload_pending;
    struct cu_timing *timing;    // NULL unless PAGODA_STEP_TIMING=1
};

// cuda_weights.cu
int cuw_upload(struct cuda_ctx *c, const struct model_weights *w, char *err);
void cuw_free(struct cuda_ctx *c);
// Keeps dequantized bf16 copies of the int4 linears for many-row steps when they fit.
void cuw_dense_cache(struct cuda_ctx *c);  // skipped when PAGODA_NO_DENSE_CACHE=1
// Bytes of dequantization scratch and gemv partials the uploaded weights need.
void cuw_scratch_needs(const struct cuda_ctx *c, size_t *deq_elems, size_t *partial_floats, int *max_in);
