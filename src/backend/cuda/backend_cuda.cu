// The CUDA backend: device state, the forward pass over a step, CUDA graphs for decode
// buckets, KV pool sizing, and the backend_ops vtable. Kernels live in the other .cu files.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/pdl.cuh"

extern "C" int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

static int blas_note(cublasStatus_t s, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    char what[64];
    snprintf(what, sizeof what, "cuBLAS status %d", (int)s);
    return cu_note(cudaErrorUnknown, file, line, what);
}
#define BLAS_CHECK(call) blas_note((call), __FILE__, __LINE__)

// Y (T, out; row stride ldy) = X (T, in) . W^T. W is (out, in) when !w_is_t, else W^T (in, out).
static void gemm(struct cuda_ctx *c, const bf16_t *W, bool w_is_t, const bf16_t *X, int T, int in, int out,
                 void *Y, int ldy, bool f32_out) {
    const float one = 1, zero = 0;
    BLAS_CHECK(cublasGemmEx(c->blas, w_is_t ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, out, T, in, &one, W,
                            CUDA_R_16BF, w_is_t ? out : in, X, CUDA_R_16BF, in, &zero, Y,
                            f32_out ? CUDA_R_32F : CUDA_R_16BF, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Dense bf16 weights: the custom GEMV up to this many rows (bench/cuda_ops_bench on the H200:
// 10-20% faster than cuBLAS at 1-2 rows, even at 4, slower at 8), cuBLAS beyond.
#define DENSE_GEMV_MAX_ROWS 2

// Int4 rows for the GEMV when a dequantized copy exists: on the H200 (cuda_ops_bench,
// bench/results/2026-11-28-int4-gemv-h200.md) the GEMV beats cuBLAS on the copy at 8 rows
// over a 14B layer (107 vs 153 us; o alone is a tie) and loses at 16 in every linear; without
// a copy it serves up to 16 rows.
#define GEMV_MAX_ROWS_CACHED 8

// y = linear(x). x_is_gu: x is the (T, 2 * d->in) gate|up buffer; the input is
// silu(gate) * up. Int4 weights: the tensor-core GEMV (gptq.cu) for few rows, which forms
// SwiGLU, the desc_act gather and the bias itself; beyond, cuBLAS on the dequantized copy or
// on a per-step dequantization. Dense: cu_bf16_gemv for few rows, else cuBLAS.
static void run_lin(struct cuda_ctx *c, const struct dlin *d, const bf16_t *x, int T, bf16_t *y, int ldy,
                    bool x_is_gu) {
    if (d->quant && T <= (d->wt ? GEMV_MAX_ROWS_CACHED : CU_GEMV_MAX_ROWS)) {
        struct cu_gemv_in in = {x, x_is_gu ? 2 * d->in : d->in, d->perm, x_is_gu};
        cu_gptq_gemv_ex(&d->q, &in, T, d->bias, y, ldy, c->gemv_partial, c->st);
        return;
    }
    if (x_is_gu) {
        cu_swiglu(x, T, d->in, c->act, c->st);
        x = c->act;
    }
    if (d->perm) {
        cu_permute_cols(x, d->perm, T, d->in, c->xperm, c->st);
        x = c->xperm;
    }
    if (d->quant && d->wt) {
        gemm(c, d->wt, true, x, T, d->in, d->out, y, ldy, false);
    } else if (d->quant) {
        cu_gptq_dequant(&d->q, c->deq, c->st);
        gemm(c, c->deq, true, x, T, d->in, d->out, y, ldy, false);
    } else if (T <= DENSE_GEMV_MAX_ROWS && d->in % 8 == 0) {
        cu_bf16_gemv(d->w, d->in, d->out, x, T, d->bias, y, ldy, false, c->st);
        return;
    } else {
        gemm(c, d->w, false, x, T, d->in, d->out, y, ldy, false);
    }
    if (d->bias) cu_add_bias(y, ldy, d->bias, T, d->out, c->st);
}

static void run_group(struct cuda_ctx *c, const struct dgroup *g, const bf16_t *x, int T, bf16_t *y) {
    for (int p = 0; p < g->n; p++) run_lin(c, &g->part[p], x, T, y + g->col[p], g->out, false);
}

static struct cu_step step_desc(const struct cuda_ctx *c, int T, int n_seqs) {
    struct cu_step s;
    s.T = T;
    s.n_seqs = n_seqs;
    s.tok_seq = c->d_i32 + c->off_seq;
    s.tok_pos = c->d_i32 + c->off_pos;
    s.seq_len = c->d_i32 + c->off_len;
    s.seq_q0 = c->d_i32 + c->off_q0;
    s.seq_nnew = c->d_i32 + c->off_nnew;
    s.block_tables = c->d_i32 + c->off_bt;
    s.bt_stride = c->bt_stride;
    return s;
}

static int decode_splits(const struct cuda_ctx *c, int n) {
    int s = (2 * c->n_sm + n * c->mc.n_kv_heads - 1) / (n * c->mc.n_kv_heads);
    return s < 1 ? 1 : s > 32 ? 32 : s;
}

// Steps of at most c->fuse_rows tokens run the fused decode layer, six kernels instead of
// eight (cu_gptq_gemv_fused):
//   qkv GEMV (RMSNorm formed while staging its input; RoPE and the KV store while summing
//   its K splits), attention, o GEMV, add_rmsnorm, gate|up GEMV (SwiGLU formed while
//   summing), down GEMV (residual add while summing, leaving per-tile sums of squares in
//   c->ssq for the next layer's qkv input)
// Measured in the 14B layer graph at batch 1 (bench/results/2026-11-29-fused-layer-h200.md):
// 77.9 us per layer against 79.1 with the rope kernel kept (PAGODA_FUSE_ROPE=0) and 81.0 for
// the unfused layer of the session's start; the gate|up GEMV forming the norm itself cost
// more than the kernel it saved (its 3.3 waves of blocks each paid the staging: 29.9 vs 26.5
// us). Layer 0's first norm (after the embedding) and the final norm stay kernels.

// The fused layer's qkv GEMV: the input norm formed while staging (layer 0: from the kernel,
// the embedding left no sums of squares) and, with c->fuse_rope, RoPE + KV store in its merge.
static void fused_qkv(struct cuda_ctx *c, int l, int T, const struct cu_step *s, char *kc, char *vc) {
    const struct model_config *m = &c->mc;
    const struct dlayer *L = &c->layers[l];
    const struct dlin *qkv = &L->qkv.part[0];
    const int H = m->hidden;
    struct cu_gemv_norm nrm = {c->resid, L->attn_norm, c->ssq, m->rms_eps};
    struct cu_gemv_in x = {c->xn, H, qkv->perm, false};
    struct cu_gemv_out o;
    memset(&o, 0, sizeof o);
    if (c->fuse_rope) {
        o.kind = CU_GEMV_ROPE;
        o.rope = (struct cu_gemv_rope){*s, m->n_heads, m->n_kv_heads, m->head_dim, c->bc.block_size, c->kv_type,
                                       c->rope_cs, c->bc.max_model_len, L->qkv_bias, kc, vc, c->q};
    } else {
        o.kind = CU_GEMV_STORE;
        o.y = c->qkv;
        o.ldy = c->qkv_out;
    }
    if (l == 0) cu_add_rmsnorm(c->resid, NULL, H, L->attn_norm, m->rms_eps, T, H, c->xn, c->st);
    cu_gptq_gemv_fused(&qkv->q, &x, l ? &nrm : NULL, T, qkv->bias, &o, c->gemv_partial, c->st);
}

// The fused layer's MLP: SwiGLU in the gate|up GEMV's merge, the residual add (and the next
// norm's sums of squares) in the down GEMV's.
static void fused_mlp(struct cuda_ctx *c, int l, int T) {
    const struct dlayer *L = &c->layers[l];
    const struct dlin *gu = &L->gu.part[0];
    const int I = c->mc.intermediate;
    struct cu_gemv_out res, act;
    memset(&res, 0, sizeof res);
    memset(&act, 0, sizeof act);
    res.kind = CU_GEMV_RESID;
    res.resid = c->resid;
    res.ssq = c->ssq;
    act.kind = CU_GEMV_SWIGLU;
    act.y = c->act;
    act.ldy = I;
    struct cu_gemv_in xg = {c->xn, c->mc.hidden, gu->perm, false}, xd = {c->act, I, L->down.perm, false};
    cu_gptq_gemv_fused(&gu->q, &xg, NULL, T, gu->bias, &act, c->gemv_partial, c->st);
    cu_gptq_gemv_fused(&L->down.q, &xd, NULL, T, L->down.bias, &res, c->gemv_partial, c->st);
}

// Most tokens a step may have to run the fused layer (0: the model's linears cannot): every
// linear int4 on the tensor-core GEMV at that many rows (run_lin's limits), q/k/v and
// gate/up fused, and shapes the fused forms take. PAGODA_FUSE=0 turns it off (A/B runs).
static int fuse_rows(const struct cuda_ctx *c) {
    const char *e = getenv("PAGODA_FUSE");
    if ((e && !strcmp(e, "0")) || !c->gemv_partial) return 0;
    const struct model_config *m = &c->mc;
    int rows = CU_GEMV_FUSED_MAX_ROWS;
    for (int l = 0; l < m->n_layers; l++) {
        const struct dlayer *L = &c->layers[l];
        const struct dlin *lin[4] = {&L->qkv.part[0], &L->o, &L->gu.part[0], &L->down};
        if (L->qkv.n != 1 || L->gu.n != 1) return 0;
        for (int k = 0; k < 4; k++) {
            if (!lin[k]->quant) return 0;
            if (lin[k]->wt && rows > GEMV_MAX_ROWS_CACHED) rows = GEMV_MAX_ROWS_CACHED;
        }
        if (!cu_gemv_fused_supported(&lin[0]->q, CU_GEMV_ROPE, true, m->head_dim) ||
            !cu_gemv_fused_supported(&lin[0]->q, CU_GEMV_STORE, true, 0) ||
            !cu_gemv_fused_supported(&lin[2]->q, CU_GEMV_SWIGLU, false, 0) ||
            !cu_gemv_fused_supported(&lin[3]->q, CU_GEMV_RESID, false, 0) || lin[2]->q.out != 2 * m->intermediate)
            return 0;
    }
    return rows;
}

// The layers for a step whose inputs are already on the device; leaves the final-normed
// hidden states in c->xn.
static void forward(struct cuda_ctx *c, int T, int n_seqs, int n_dec, int n_tiles) {
    const struct model_config *m = &c->mc;
    const int H = m->hidden, nh = m->n_heads, nkv = m->n_kv_heads, hd = m->head_dim, bs = c->bc.block_size;
    struct cu_step s = step_desc(c, T, n_seqs);
    const int splits = n_dec ? decode_splits(c, n_dec) : 1;
    const bool fused = T <= c->fuse_rows;
    if (c->gemv_partial) cu_gemv_scratch_reset(c->gemv_partial, c->st);  // GEMV tickets (self-resetting)
    cu_embed(c->embed, c->d_i32 + c->off_tok, T, H, c->resid, c->st);
    for (int l = 0; l < m->n_layers; l++) {
        const struct dlayer *L = &c->layers[l];
        char *kc = (char *)c->kv + (size_t)(2 * l) * c->kv_layer_bytes, *vc = kc + c->kv_layer_bytes;
        if (fused) {
            fused_qkv(c, l, T, &s, kc, vc);
        } else {
            cu_add_rmsnorm(c->resid, l ? c->delta : NULL, H, L->attn_norm, m->rms_eps, T, H, c->xn, c->st);
            run_group(c, &L->qkv, c->xn, T, c->qkv);
        }
        if (!fused || !c->fuse_rope)
            cu_qkv_rope_store(c->qkv, c->qkv_out, L->qkv_bias, &s, nh, nkv, hd, m->rope_theta, bs, c->kv_type, kc, vc,
                              c->q, c->st);
        cu_attn_decode(c->q, &s, c->d_i32 + c->off_dec, n_dec, nh, nkv, hd, bs, c->kv_type, kc, vc, splits,
                       c->attn_partial, c->attn, c->st);
        cu_attn_prefill(c->q, &s, c->d_i32 + c->off_tiles, n_tiles, nh, nkv, hd, bs, c->kv_type, kc, vc, c->attn,
                        c->st);
        run_lin(c, &L->o, c->attn, T, c->delta, H, false);
        cu_add_rmsnorm(c->resid, c->delta, H, L->ffn_norm, m->rms_eps, T, H, c->xn, c->st);
        if (fused) {
            fused_mlp(c, l, T);
        } else {
            run_group(c, &L->gu, c->xn, T, c->gu);
            run_lin(c, &L->down, c->gu, T, c->delta, H, true);
        }
    }
    cu_add_rmsnorm(c->resid, fused ? NULL : c->delta, H, c->final_norm, m->rms_eps, T, H, c->xn, c->st);
}

// logits (n_rows, vocab) f32 for the rows listed in the rows section: the bf16 GEMV for one
// row, cuBLAS beyond (H200, Qwen2.5-14B's 152064 x 5120 lm_head: 336 vs 356 us at one row,
// 374 vs 356 at two; bench/results/2026-11-28-int4-gemv-h200.md).
static void lm_head_rows(struct cuda_ctx *c, int n_rows) {
    const int H = c->mc.hidden;
    cu_gather_rows(c->xn, H, c->d_i32 + c->off_rows, n_rows, H, c->hs, c->st);
    if (n_rows == 1 && H % 8 == 0)
        cu_bf16_gemv(c->lm_head, H, c->mc.vocab, c->hs, n_rows, NULL, c->logits, c->mc.vocab, true, c->st);
    else
        gemm(c, c->lm_head, false, c->hs, n_rows, H, c->mc.vocab, c->logits, c->mc.vocab, true);
}

// ---- host side of a step ----

struct packed {
    int T, n_seqs, n_dec, n_tiles, n_rows, n_feed;
};

static int *sec(struct cuda_ctx *c, size_t off) { return c->h_i32 + off; }

// Fills the pinned input sections from the batch. rows: every sampling sequence's last token
// (or every sequence's when all_seqs). pad_to > n_seqs pads a decode batch for a graph.
static int pack_step(struct cuda_ctx *c, const struct step_batch *b, bool all_seqs, int pad_to, struct packed *p,
                     char *err) {
    if (b->n_seqs <= 0 || b->n_seqs > c->Smax) {
        pg_seterr(err, "cuda: step has %d sequences (1..%d allowed)", b->n_seqs, c->Smax);
        return -1;
    }
    memset(p, 0, sizeof *p);
    const struct cu_slot *prev = c->last >= 0 ? &c->slots[c->last] : NULL;
    int T = 0, n_all = pad_to > b->n_seqs ? pad_to : b->n_seqs;
    for (int i = 0; i < b->n_seqs; i++) {
        const struct step_seq *q = &b->seqs[i];
        int len = q->pos0 + q->n_new;
        if (q->n_new < 1 || q->pos0 < 0 || len > c->bc.max_model_len) {
            pg_seterr(err, "cuda: sequence %d: %d new tokens at position %d (max_model_len %d)", i, q->n_new, q->pos0,
                      c->bc.max_model_len);
            return -1;
        }
        if (q->n_blocks * c->bc.block_size < len || q->n_blocks > c->bt_stride) {
            pg_seterr(err, "cuda: sequence %d: %d blocks do not cover %d tokens", i, q->n_blocks, len);
            return -1;
        }
        if (T + q->n_new > c->Tmax) {
            pg_seterr(err, "cuda: step has more than %d tokens", c->Tmax);
            return -1;
        }
        for (int j = 0; j < q->n_blocks; j++)
            if (q->block_table[j] < 0 || q->block_table[j] >= c->num_blocks) {
                pg_seterr(err, "cuda: sequence %d: block id %d out of range", i, q->block_table[j]);
                return -1;
            }
        if (q->feed && (q->n_new != 1 || !prev || q->feed_idx < 0 || q->feed_idx >= prev->n_res)) {
            pg_seterr(err, "cuda: sequence %d: feed (n_new %d, feed_idx %d) needs n_new 1 and a previous step "
                      "with more than feed_idx results (%d)", i, q->n_new, q->feed_idx, prev ? prev->n_res : -1);
            return -1;
        }
        if (q->feed) { // the token comes from the previous step's output row on the device
            sec(c, c->off_feed)[2 * p->n_feed] = T;
            sec(c, c->off_feed)[2 * p->n_feed + 1] = prev->res_row[q->feed_idx];
            p->n_feed++;
        }
        for (int j = 0; j < q->n_new; j++) {
            int32_t t = q->feed ? 0 : q->tokens[j];
            if (t < 0 || t >= c->mc.vocab) {
                pg_seterr(err, "cuda: token id %d out of range (vocab %d)", t, c->mc.vocab);
                return -1;
            }
            sec(c, c->off_tok)[T + j] = t;
            sec(c, c->off_seq)[T + j] = i;
            sec(c, c->off_pos)[T + j] = q->pos0 + j;
        }
        sec(c, c->off_len)[i] = len;
        sec(c, c->off_q0)[i] = T;
        sec(c, c->off_nnew)[i] = q->n_new;
        memcpy(sec(c, c->off_bt) + (size_t)i * c->bt_stride, q->block_table, sizeof(int32_t) * q->n_blocks);
        c->bt_used[i] = q->n_blocks;
        if (q->n_new == 1) {
            sec(c, c->off_dec)[p->n_dec++] = i;
        } else {
            for (int j = 0; j < q->n_new; j += CU_PREFILL_TILE) {
                sec(c, c->off_tiles)[2 * p->n_tiles] = i;
                sec(c, c->off_tiles)[2 * p->n_tiles + 1] = j;
                p->n_tiles++;
            }
        }
        if (all_seqs || q->sample) sec(c, c->off_rows)[p->n_rows++] = T + q->n_new - 1;
        T += q->n_new;
    }
    for (int i = b->n_seqs; i < n_all; i++) {  // graph padding: one token into the dummy block
        sec(c, c->off_tok)[T] = 0;
        sec(c, c->off_seq)[T] = i;
        sec(c, c->off_pos)[T] = 0;
        sec(c, c->off_len)[i] = 1;
        sec(c, c->off_q0)[i] = T;
        sec(c, c->off_nnew)[i] = 1;
        sec(c, c->off_bt)[(size_t)i * c->bt_stride] = c->dummy_block;
        c->bt_used[i] = 1;
        sec(c, c->off_dec)[p->n_dec++] = i;
        sec(c, c->off_rows)[p->n_rows++] = T;
        T++;
    }
    p->T = T;
    p->n_seqs = n_all;
    return 0;
}

// Copies run b of the pack (struct cuda_ctx, h_pack) to its place in d_i32; one block per run.
// It never calls pdl_launch_dependents, so the kernel after it is launched only once every block
// has exited, after its fence: the step's kernels may read the step inputs before their
// pdl_wait (attn_decode reads the lengths and block tables there), which is safe only if the
// inputs are in place before the step's first kernel starts.
__global__ void k_scatter_step(const int32_t *pack, int32_t *dst) {
    pdl_wait();  // pdl.cuh's contract (the copy of the pack before it orders it anyway)
    const int32_t *h = pack + 3 * blockIdx.x;
    const int32_t off = h[0], from = h[1], n = h[2];
    for (int i = threadIdx.x; i < n; i += blockDim.x) dst[off + i] = pack[from + i];
    __syncthreads();
    if (threadIdx.x == 0) __threadfence();
}

// Appends the n words of h_i32 at off as a run of the pack (w: the pack's next free word).
static void pack_run(struct cuda_ctx *c, int *n_runs, size_t *w, size_t off, size_t n) {
    if (!n) return;
    int32_t *h = c->h_pack + 3 * (size_t)(*n_runs)++;
    h[0] = (int32_t)off;
    h[1] = (int32_t)*w;
    h[2] = (int32_t)n;
    memcpy(c->h_pack + *w, c->h_i32 + off, n * 4);
    *w += n;
}

// Input sections besides the block tables.
#define STEP_SECTIONS 10

// The step's inputs in one H2D copy and one scatter kernel: the used part of each section and
// of each block-table row (its sequence's blocks). Words of d_i32 outside the runs keep older
// values, which no kernel reads (block-table entries past a sequence's blocks, sections past
// the step's counts).
static void upload_step(struct cuda_ctx *c, const struct packed *p) {
    const size_t T = p->T, S = p->n_seqs;
    const size_t secs[STEP_SECTIONS][2] = {
        {c->off_tok, T},  {c->off_seq, T},  {c->off_pos, T}, {c->off_len, S}, {c->off_q0, S}, {c->off_nnew, S},
        {c->off_dec, (size_t)p->n_dec}, {c->off_tiles, 2 * (size_t)p->n_tiles}, {c->off_rows, (size_t)p->n_rows},
        {c->off_feed, 2 * (size_t)p->n_feed}};
    int runs = p->n_seqs, n_runs = 0;  // every block-table row holds at least one block
    for (int i = 0; i < STEP_SECTIONS; i++) runs += secs[i][1] > 0;
    size_t w = 3 * (size_t)runs;
    for (int i = 0; i < STEP_SECTIONS; i++) pack_run(c, &n_runs, &w, secs[i][0], secs[i][1]);
    for (int i = 0; i < p->n_seqs; i++) pack_run(c, &n_runs, &w, c->off_bt + (size_t)i * c->bt_stride, c->bt_used[i]);
    CU_CHECK(cudaMemcpyAsync(c->d_pack, c->h_pack, w * 4, cudaMemcpyHostToDevice, c->st));
    CU_CHECK(pdl_launch(k_scatter_step, n_runs, 256, 0, c->st, c->d_pack, c->d_i32));
}

// Waits for a step's event by polling it. A blocking wait (cudaEventBlockingSync) puts the
// thread to sleep and its wake-up left the GPU idle 160-220 us between batch-1 decode steps
// on the H200 machine (PAGODA_STEP_TIMING "gap", 2026-11-28, bench/results); polling costs
// one core while a step is in flight, which the engine thread spends waiting anyway.
static cudaError_t wait_event(cudaEvent_t e) {
    cudaError_t r;
    while ((r = cudaEventQuery(e)) == cudaErrorNotReady) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    return r;
}

// Before packing a step into the pinned staging: the previous step's H2D copies from it
// must have run (they may still be queued behind earlier steps in flight).
static void staging_wait(struct cuda_ctx *c) {
    if (!c->upload_pending) return;
    CU_CHECK(wait_event(c->uploaded));
    c->upload_pending = false;
}

static void staging_mark(struct cuda_ctx *c) {
    CU_CHECK(cudaEventRecord(c->uploaded, c->st));
    c->upload_pending = true;
}

// Device-side token feed: tok[pairs[2i]] = out[pairs[2i + 1]].token, out being the previous
// step's sampler output (still in d_out: stream order puts this before this step's sampler).
__global__ void k_feed_tokens(int32_t *tok, const int32_t *pairs, int n, const struct cu_sample_out *out) {
    pdl_launch_dependents();
    pdl_wait();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) tok[pairs[2 * i]] = out[pairs[2 * i + 1]].token;
}

static void feed_tokens(struct cuda_ctx *c, int n_feed) {
    if (n_feed <= 0) return;
    CU_CHECK(pdl_launch(k_feed_tokens, (n_feed + 127) / 128, 128, 0, c->st, c->d_i32 + c->off_tok,
                        c->d_i32 + c->off_feed, n_feed, c->d_out));
}

// ---- sampling inputs ----

static bool plain_greedy(const struct sample_input *in) {
    const struct sampling_params *sp = in->params;
    return sp->temperature < 1e-5f && !sampling_penalized(sp) && sp->n_logit_bias == 0 && sp->logprobs <= 0 &&
           !in->allowed && in->n_banned == 0;
}

static int grow_lists(struct cuda_ctx *c, size_t words) {
    if (words <= c->lists_cap) return 0;
    size_t cap = words * 2 + 1024;
    CU_CHECK(cudaStreamSynchronize(c->st)); // steps in flight may still read the old lists
    cudaFreeHost(c->h_lists);
    cudaFree(c->d_lists);
    c->h_lists = c->d_lists = NULL;
    c->lists_cap = 0;
    if (CU_CHECK(cudaHostAlloc(&c->h_lists, cap * 4, cudaHostAllocDefault)) || CU_CHECK(cudaMalloc(&c->d_lists, cap * 4)))
        return -1;
    c->lists_cap = cap;
    return 0;
}

// Fills params for n_rows rows (row r = seq map[r], or a greedy no-op when map[r] < 0) and
// uploads them with the lists; returns whether any row needs the full sampler.
static int prep_sampling(struct cuda_ctx *c, const struct step_batch *b, const int *map, int n_rows,
                         struct cu_sample_lists *L, bool *full, char *err) {
    size_t P = 0, B = 0, N = 0, A = 0;
    const int aw = (c->mc.vocab + 31) / 32;
    *full = false;
    for (int r = 0; r < n_rows; r++) {
        if (map[r] < 0) continue;
        const struct sample_input *in = &b->seqs[map[r]].smp;
        if (!in->params) {
            pg_seterr(err, "cuda: sequence %d samples without parameters", map[r]);
            return -1;
        }
        *full |= !plain_greedy(in);
        if (sampling_penalized(in->params)) P += (size_t)in->n_prompt + in->n_output;
        B += in->params->n_logit_bias;
        N += in->n_banned;
        if (in->allowed) A += aw;
    }
    if (!*full) return 0;
    if (grow_lists(c, 3 * P + 2 * B + N + A)) return cu_take_error(err);
    int32_t *h = (int32_t *)c->h_lists;
    int32_t *pt = h, *pc = pt + P, *pf = pc + P, *bt = pf + P;
    float *bv = (float *)(bt + B);
    int32_t *bn = (int32_t *)(bv + B);
    uint32_t *al = (uint32_t *)(bn + N);
    size_t np = 0, nb = 0, nn = 0, na = 0;
    for (int r = 0; r < n_rows; r++) {
        struct cu_sample_params *p = &c->h_params[r];
        memset(p, 0, sizeof *p);
        p->top_p = 1;
        p->repetition_penalty = 1;
        p->n_logprobs = -1;
        p->allowed_off = -1;
        if (map[r] < 0) continue;
        const struct sample_input *in = &b->seqs[map[r]].smp;
        const struct sampling_params *sp = in->params;
        p->temperature = sp->temperature;
        p->top_p = sp->top_p > 0 && sp->top_p < 1 ? sp->top_p : 1;
        p->top_k = sp->top_k;
        p->min_p = sp->min_p;
        p->repetition_penalty = sp->repetition_penalty;
        p->presence_penalty = sp->presence_penalty;
        p->frequency_penalty = sp->frequency_penalty;
        p->seed = sp->seed;
        p->step = in->step;
        p->n_logprobs = sp->logprobs;
        p->pen_off = (int)np;
        if (sampling_penalized(sp)) {
            c->mark_epoch++;
            for (int k = 0; k < in->n_prompt + in->n_output; k++) {
                bool out = k >= in->n_prompt;
                int32_t t = out ? in->output[k - in->n_prompt] : in->prompt[k];
                if (t < 0 || t >= c->mc.vocab) continue;
                if (c->mark[t] != c->mark_epoch) {
                    c->mark[t] = c->mark_epoch;
                    c->mark_idx[t] = (int)np;
                    pt[np] = t;
                    pc[np] = 0;
                    pf[np] = 1;
                    np++;
                }
                if (out) pc[c->mark_idx[t]]++;
            }
        }
        p->pen_n = (int)np - p->pen_off;
        p->bias_off = (int)nb;
        for (int k = 0; k < sp->n_logit_bias; k++)
            if (sp->logit_bias_ids[k] >= 0 && sp->logit_bias_ids[k] < c->mc.vocab) {
                bt[nb] = sp->logit_bias_ids[k];
                bv[nb++] = sp->logit_bias_vals[k];
            }
        p->bias_n = (int)nb - p->bias_off;
        p->ban_off = (int)nn;
        for (int k = 0; k < in->n_banned; k++)
            if (in->banned[k] >= 0 && in->banned[k] < c->mc.vocab) bn[nn++] = in->banned[k];
        p->ban_n = (int)nn - p->ban_off;
        if (in->allowed) {
            p->allowed_off = (int)na;
            memcpy(al + na, in->allowed, (size_t)aw * 4);
            na += aw;
        }
    }
    size_t words = 3 * P + 2 * B + N + A;
    if (words) CU_CHECK(cudaMemcpyAsync(c->d_lists, c->h_lists, words * 4, cudaMemcpyHostToDevice, c->st));
    CU_CHECK(cudaMemcpyAsync(c->d_params, c->h_params, sizeof(struct cu_sample_params) * n_rows, cudaMemcpyHostToDevice,
                             c->st));
    int32_t *d = (int32_t *)c->d_lists;
    L->pen_tok = d;
    L->pen_cnt = d + P;
    L->pen_flags = d + 2 * P;
    L->bias_tok = d + 3 * P;
    L->bias_val = (const float *)(d + 3 * P + B);
    L->ban = d + 3 * P + 2 * B;
    L->allowed = (const uint32_t *)(d + 3 * P + 2 * B + N);
    return cu_take_error(err);
}

// ---- graphs ----

static int bucket_for(const struct cuda_ctx *c, int n) {
    for (int i = 0; i < c->n_buckets; i++)
        if (c->buckets[i] >= n) return i;
    return -1;
}

static int run_decode_graph(struct cuda_ctx *c, int bi, char *err) {
    const int B = c->buckets[bi];
    if (!c->graphs[bi]) {
        cudaGraph_t g = NULL;
        if (CU_CHECK(cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal))) return cu_take_error(err);
        forward(c, B, B, B, 0);
        lm_head_rows(c, B);
        cu_argmax_split(c->logits, B, c->mc.vocab, c->argmax_scratch, c->d_out, c->st);
        int bad = cu_take_error(err);
        if (CU_CHECK(cudaStreamEndCapture(c->st, &g)) || bad) {
            if (g) cudaGraphDestroy(g);
            return bad ? -1 : cu_take_error(err);
        }
        int rc = CU_CHECK(cudaGraphInstantiate(&c->graphs[bi], g, 0));
        cudaGraphDestroy(g);
        if (rc) return cu_take_error(err);
    }
    CU_CHECK(cudaGraphLaunch(c->graphs[bi], c->st));
    return cu_take_error(err);
}

// ---- PAGODA_STEP_TIMING (struct cu_timing) ----

static int timing_init(struct cuda_ctx *c) {
    const char *e = getenv("PAGODA_STEP_TIMING");
    if (!e || strcmp(e, "1")) return 0;
    struct cu_timing *t = (struct cu_timing *)pg_calloc(1, sizeof *t);
    c->timing = t;
    t->n_sets = c->n_slots + 1;
    t->sets = (struct cu_tset *)pg_calloc(t->n_sets, sizeof *t->sets);
    for (int i = 0; i < t->n_sets; i++)
        for (int k = 0; k < CU_TS_N; k++)
            if (CU_CHECK(cudaEventCreate(&t->sets[i].ev[k]))) return -1;
    return 0;
}

static struct cu_tset *timing_set(const struct cu_timing *t, long step) { return &t->sets[step % t->n_sets]; }

// START of the step about to be executed.
static void timing_start(struct cuda_ctx *c, int kind) {
    struct cu_timing *t = c->timing;
    if (!t) return;
    struct cu_tset *s = timing_set(t, t->executed);
    s->kind = kind;
    s->follows = t->chain;
    CU_CHECK(cudaEventRecord(s->ev[CU_TS_START], c->st));
}

static void timing_mark(struct cuda_ctx *c, int mark) {
    if (c->timing) CU_CHECK(cudaEventRecord(timing_set(c->timing, c->timing->executed)->ev[mark], c->st));
}

// End of execute: a failed step leaves its set to the next one and breaks the chain of gaps.
static void timing_end(struct cuda_ctx *c, bool ok) {
    struct cu_timing *t = c->timing;
    if (!t) return;
    t->executed += ok;
    t->chain = ok;
}

// Adds the elapsed time b - a; a failure only loses the sample (and is cleared, so that no
// later launch check reports it).
static bool timing_add(cudaEvent_t a, cudaEvent_t b, double *sum_ms) {
    float ms;
    if (cudaEventElapsedTime(&ms, a, b) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    *sum_ms += ms;
    return true;
}

// The oldest step in flight was waited for: its COPIED mark has completed, hence all of its marks
// and the previous step's (a failed step's elapsed times fail and are skipped).
static void timing_collect(struct cuda_ctx *c) {
    struct cu_timing *t = c->timing;
    if (!t) return;
    const struct cu_tset *s = timing_set(t, t->collected), *prev = timing_set(t, t->collected - 1 + t->n_sets);
    t->collected++;
    if (s->kind == CU_TK_UNCOUNTED) return;
    struct cu_tsum *u = &t->sum[s->kind];
    u->steps++;
    timing_add(s->ev[CU_TS_START], s->ev[CU_TS_FORWARD], &u->upload_ms);
    timing_add(s->ev[CU_TS_FORWARD], s->ev[CU_TS_SAMPLED], &u->forward_ms);
    timing_add(s->ev[CU_TS_SAMPLED], s->ev[CU_TS_COPIED], &u->d2h_ms);
    if (s->follows) u->gaps += timing_add(prev->ev[CU_TS_COPIED], s->ev[CU_TS_START], &u->gap_ms);
}

static void timing_free(struct cuda_ctx *c) {
    struct cu_timing *t = c->timing;
    if (!t) return;
    static const char *const name[CU_TK_N] = {"eager", "graph"};
    for (int k = 0; k < CU_TK_N; k++) {
        const struct cu_tsum *u = &t->sum[k];
        if (!u->steps) continue;
        char gap[32] = "-";  // no step of this kind followed another one directly
        if (u->gaps) snprintf(gap, sizeof gap, "%.1f", 1e3 * u->gap_ms / u->gaps);
        fprintf(stderr, "cuda step timing: %s %ld steps, mean us: gap %s upload %.1f forward %.1f d2h %.1f\n", name[k],
                u->steps, gap, 1e3 * u->upload_ms / u->steps, 1e3 * u->forward_ms / u->steps,
                1e3 * u->d2h_ms / u->steps);
    }
    for (int i = 0; i < t->n_sets; i++)
        for (int k = 0; k < CU_TS_N; k++)
            if (t->sets[i].ev[k]) cudaEventDestroy(t->sets[i].ev[k]);
    free(t->sets);
    free(t);
    c->timing = NULL;
}

// ---- execute / collect / logits ----

static int cuda_execute(void *ctx, const struct step_batch *b, char *err) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->slot_n == c->n_slots) {
        pg_seterr(err, "cuda: execute with %d steps uncollected (max_inflight %d)", c->slot_n, c->n_slots);
        return -1;
    }
    struct packed p;
    bool decode_only = true;
    for (int i = 0; i < b->n_seqs; i++) decode_only &= b->seqs[i].n_new == 1;
    int bi = !c->bc.enforce_eager && decode_only ? bucket_for(c, b->n_seqs) : -1;
    staging_wait(c);
    if (pack_step(c, b, bi >= 0, bi >= 0 ? c->buckets[bi] : 0, &p, err)) return -1; // reads the last slot's rows
    int si = (c->slot_head + c->slot_n) % c->n_slots;
    struct cu_slot *slot = &c->slots[si];
    int map[1024], *mp = p.n_rows <= 1024 ? map : (int *)pg_malloc(sizeof(int) * p.n_rows);
    int n_res = 0;
    for (int i = 0, r = 0; i < b->n_seqs; i++) {
        if (bi >= 0) { // graph: output row = sequence index
            mp[i] = b->seqs[i].sample ? i : -1;
            if (b->seqs[i].sample) slot->res_row[n_res++] = i;
        } else if (b->seqs[i].sample) { // eager: output row = sampling order
            mp[r] = i;
            slot->res_row[n_res++] = r++;
        }
    }
    for (int r = b->n_seqs; bi >= 0 && r < p.n_rows; r++) mp[r] = -1;
    timing_start(c, bi < 0 ? CU_TK_EAGER : c->graphs[bi] ? CU_TK_GRAPH : CU_TK_UNCOUNTED);
    upload_step(c, &p);
    struct cu_sample_lists L;
    bool full = false;
    int rc = prep_sampling(c, b, mp, p.n_rows, &L, &full, err);
    staging_mark(c);
    if (!rc) {
        feed_tokens(c, p.n_feed); // after the token upload, before the forward reads them
        timing_mark(c, CU_TS_FORWARD);
        if (bi >= 0) {
            rc = run_decode_graph(c, bi, err);
        } else {
            forward(c, p.T, p.n_seqs, p.n_dec, p.n_tiles);
            lm_head_rows(c, p.n_rows);
            if (!full) cu_argmax_split(c->logits, p.n_rows, c->mc.vocab, c->argmax_scratch, c->d_out, c->st);
        }
    }
    if (!rc && full) cu_sample(c->logits, p.n_rows, c->mc.vocab, c->d_params, &L, c->samp_scratch, c->d_out, c->st);
    if (mp != map) free(mp);
    if (rc) {
        c->last = -1; // no step to feed from
        timing_end(c, false);
        return -1;
    }
    timing_mark(c, CU_TS_SAMPLED);
    // this step's outputs go to its own host slot now, before a later step overwrites d_out
    CU_CHECK(cudaMemcpyAsync(slot->h_out, c->d_out, sizeof(struct cu_sample_out) * p.n_rows, cudaMemcpyDeviceToHost,
                             c->st));
    timing_mark(c, CU_TS_COPIED);
    CU_CHECK(cudaEventRecord(slot->done, c->st));
    slot->n_res = n_res;
    c->slot_n++;
    c->last = si;
    if (cu_take_error(err)) {
        c->last = -1;
        timing_end(c, false);
        return -1;
    }
    timing_end(c, true);
    return 0;
}

// Waits for the oldest step in flight and hands its results back (FIFO).
static int cuda_collect(void *ctx, struct step_result *out, char *err) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->slot_n == 0) {
        pg_seterr(err, "cuda: collect without execute");
        return -1;
    }
    struct cu_slot *slot = &c->slots[c->slot_head];
    c->slot_head = (c->slot_head + 1) % c->n_slots;
    c->slot_n--;
    CU_CHECK(wait_event(slot->done));
    timing_collect(c);
    if (cu_take_error(err)) return -1;
    for (int i = 0; i < slot->n_res; i++) {
        const struct cu_sample_out *o = &slot->h_out[slot->res_row[i]];
        out[i].token = o->token;
        out[i].logprob = o->logprob;
        out[i].n_top = o->n_top;
        memcpy(out[i].top_ids, o->top_ids, sizeof(int32_t) * o->n_top);
        memcpy(out[i].top_logprobs, o->top_logprobs, sizeof(float) * o->n_top);
    }
    return 0;
}

static int cuda_logits(void *ctx, const struct step_batch *b, bool all_positions, float *out, char *err) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    struct packed p;
    if (c->timing) c->timing->chain = false;  // the next step does not follow a timed one
    staging_wait(c);
    if (pack_step(c, b, true, 0, &p, err)) return -1;
    upload_step(c, &p);
    feed_tokens(c, p.n_feed);
    forward(c, p.T, p.n_seqs, p.n_dec, p.n_tiles);
    const int V = c->mc.vocab, H = c->mc.hidden;
    if (!all_positions) {
        lm_head_rows(c, p.n_rows);
        CU_CHECK(cudaMemcpyAsync(out, c->logits, sizeof(float) * V * p.n_rows, cudaMemcpyDeviceToHost, c->st));
    } else {
        for (int r0 = 0; r0 < p.T; r0 += c->Smax) {
            int n = p.T - r0 < c->Smax ? p.T - r0 : c->Smax;
            gemm(c, c->lm_head, false, c->xn + (size_t)r0 * H, n, H, V, c->logits, V, true);
            CU_CHECK(cudaMemcpyAsync(out + (size_t)r0 * V, c->logits, sizeof(float) * V * n, cudaMemcpyDeviceToHost, c->st));
        }
    }
    CU_CHECK(cudaStreamSynchronize(c->st));
    return cu_take_error(err);
}

// ---- init ----

static void *dalloc(size_t bytes) {
    void *p = NULL;
    if (CU_CHECK(cudaMalloc(&p, bytes ? bytes : 16))) return NULL;
    return p;
}

static int alloc_buffers(struct cuda_ctx *c) {
    const struct model_config *m = &c->mc;
    const size_t T = c->Tmax, S = c->Smax, H = m->hidden, QH = (size_t)m->n_heads * m->head_dim;
    size_t deq = 0, part = 0, apart = 0;
    int max_in = 0;
    bool any_perm = false;
    cuw_scratch_needs(c, &deq, &part, &max_in);
    for (int l = 0; l < m->n_layers; l++) {
        const struct dlayer *L = &c->layers[l];
        for (int p = 0; p < 3; p++) any_perm |= (p < L->qkv.n && L->qkv.part[p].perm) || (p < L->gu.n && L->gu.part[p].perm);
        any_perm |= L->o.perm || L->down.perm;
    }
    for (int n = 1; n <= c->Smax; n++) {
        size_t a = (size_t)n * m->n_heads * decode_splits(c, n) * (m->head_dim + 2);
        if (a > apart) apart = a;
    }
    c->bt_stride = (c->bc.max_model_len + c->bc.block_size - 1) / c->bc.block_size;
    c->max_tiles = c->Tmax / CU_PREFILL_TILE + c->Smax + 1;
    size_t o = 0;
    c->off_tok = o; o += T;
    c->off_seq = o; o += T;
    c->off_pos = o; o += T;
    c->off_len = o; o += S;
    c->off_q0 = o; o += S;
    c->off_nnew = o; o += S;
    c->off_bt = o; o += S * c->bt_stride;
    c->off_dec = o; o += S;
    c->off_tiles = o; o += 2 * (size_t)c->max_tiles;
    c->off_rows = o; o += S;
    c->off_feed = o; o += 2 * S;
    c->n_i32 = o;
    c->pack_words = 3 * (STEP_SECTIONS + S) + o;  // headers of the sections and of S block-table rows, the words
    if (c->pack_words > 0x7fffffff) {  // the pack's headers are int32 word offsets
        cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "step inputs over 2^31 words (max_num_seqs x max_model_len)");
        return -1;
    }
    c->h_i32 = (int32_t *)pg_calloc(o, sizeof(int32_t));
    c->bt_used = (int32_t *)pg_calloc(S, sizeof(int32_t));
    if (CU_CHECK(cudaHostAlloc((void **)&c->h_pack, c->pack_words * 4, cudaHostAllocDefault)) ||
        CU_CHECK(cudaHostAlloc((void **)&c->h_params, S * sizeof(struct cu_sample_params), cudaHostAllocDefault)))
        return -1;
    for (int i = 0; i < c->n_slots; i++) {
        struct cu_slot *sl = &c->slots[i];
        if (CU_CHECK(cudaHostAlloc((void **)&sl->h_out, S * sizeof(struct cu_sample_out), cudaHostAllocDefault)) ||
            CU_CHECK(cudaEventCreateWithFlags(&sl->done, cudaEventDisableTiming)))
            return -1;
        sl->res_row = (int *)pg_calloc(S, sizeof(int));
    }
    c->d_i32 = (int32_t *)dalloc(o * 4);
    c->d_pack = (int32_t *)dalloc(c->pack_words * 4);
    // zeroed once, so that block-table entries past a row's blocks always hold some block id
    if (c->d_i32) CU_CHECK(cudaMemsetAsync(c->d_i32, 0, o * 4, c->st));
    c->d_params = (struct cu_sample_params *)dalloc(S * sizeof(struct cu_sample_params));
    c->d_out = (struct cu_sample_out *)dalloc(S * sizeof(struct cu_sample_out));
    c->resid = (float *)dalloc(T * H * 4);
    c->xn = (bf16_t *)dalloc(T * H * 2);
    c->delta = (bf16_t *)dalloc(T * H * 2);
    c->qkv = (bf16_t *)dalloc(T * c->qkv_out * 2);
    c->q = (bf16_t *)dalloc(T * QH * 2);
    c->attn = (bf16_t *)dalloc(T * QH * 2);
    c->gu = (bf16_t *)dalloc(T * c->gu_out * 2);
    c->act = (bf16_t *)dalloc(T * m->intermediate * 2);
    c->xperm = any_perm ? (bf16_t *)dalloc(T * max_in * 2) : NULL;
    c->deq = deq ? (bf16_t *)dalloc(deq * 2) : NULL;
    c->gemv_partial = part ? (float *)dalloc(part * 4) : NULL;
    c->attn_partial = (float *)dalloc((apart + CU_ATTN_TICKETS) * 4);
    // decode tickets; on c->st (a non-blocking stream does not wait for the legacy stream)
    if (c->attn_partial) CU_CHECK(cudaMemsetAsync(c->attn_partial, 0, CU_ATTN_TICKETS * 4, c->st));
    c->hs = (bf16_t *)dalloc(S * H * 2);
    c->logits = (float *)dalloc(S * m->vocab * 4);
    c->samp_scratch = (float *)dalloc(S * m->vocab * 4);
    const size_t am_bytes = cu_argmax_scratch_bytes((int)S, m->vocab);
    c->argmax_scratch = dalloc(am_bytes);
    if (c->argmax_scratch) CU_CHECK(cudaMemsetAsync(c->argmax_scratch, 0, am_bytes, c->st));  // tickets
    c->fuse_rows = fuse_rows(c);
    c->ssq = c->fuse_rows ? (float *)dalloc((size_t)c->fuse_rows * (H / 64) * 4) : NULL;
    const char *fr = getenv("PAGODA_FUSE_ROPE");
    c->fuse_rope = c->fuse_rows && !(fr && !strcmp(fr, "0"));
    c->rope_cs = c->fuse_rope ? (float *)dalloc((size_t)c->bc.max_model_len * m->head_dim * 4) : NULL;
    if (c->rope_cs) cu_rope_table(c->rope_cs, c->bc.max_model_len, m->head_dim, m->rope_theta, c->st);
    c->mark = (int32_t *)pg_calloc(m->vocab, sizeof(int32_t));
    c->mark_idx = (int32_t *)pg_calloc(m->vocab, sizeof(int32_t));
    c->attn_partial_floats = apart;
    c->gemv_partial_floats = part;
    return cu_take_error(NULL) ? -1 : 0;
}

static size_t kv_block_bytes(const struct cuda_ctx *c) {
    const struct model_config *m = &c->mc;
    return (size_t)2 * m->n_layers * m->n_kv_heads * c->bc.block_size * m->head_dim * (c->kv_type == CU_KV_BF16 ? 2 : 1);
}

static int set_kv(struct cuda_ctx *c, int num_blocks) {
    cudaFree(c->kv);
    c->num_blocks = num_blocks;
    c->dummy_block = num_blocks;
    c->kv_layer_bytes = kv_block_bytes(c) / (2 * c->mc.n_layers) * (num_blocks + 1);
    c->kv = dalloc(kv_block_bytes(c) * (num_blocks + 1));
    return c->kv ? 0 : -1;
}

// A step with Tmax prompt tokens over as few sequences as max_model_len allows, through
// the eager path and the sampler: peak activation memory is then in use.
static int dummy_step(struct cuda_ctx *c, char *err) {
    long total = c->Tmax < (long)c->Smax * c->bc.max_model_len ? c->Tmax : (long)c->Smax * c->bc.max_model_len;
    int n_seqs = (int)((total + c->bc.max_model_len - 1) / c->bc.max_model_len);
    int32_t *toks = (int32_t *)pg_calloc(c->Tmax, sizeof(int32_t));
    int32_t *bt = (int32_t *)pg_calloc(c->bt_stride, sizeof(int32_t));
    struct step_seq *seqs = (struct step_seq *)pg_calloc(n_seqs, sizeof(struct step_seq));
    struct sampling_params sp;
    memset(&sp, 0, sizeof sp);
    sp.top_p = 1;
    sp.repetition_penalty = 1;
    sp.logprobs = 1;
    sp.temperature = 1;
    int T = 0;
    for (int i = 0; i < n_seqs; i++) {
        int n = (int)((total - T) / (n_seqs - i));
        seqs[i].n_new = n;
        seqs[i].tokens = toks;
        seqs[i].block_table = bt;
        seqs[i].n_blocks = (n + c->bc.block_size - 1) / c->bc.block_size;
        seqs[i].sample = true;
        seqs[i].smp.params = &sp;
        T += n;
    }
    struct step_batch b = {n_seqs, seqs, T};
    struct step_result *res = (struct step_result *)pg_calloc(n_seqs, sizeof(struct step_result));
    int rc = cuda_execute(c, &b, err);
    if (!rc) rc = cuda_collect(c, res, err);
    free(res);
    free(seqs);
    free(bt);
    free(toks);
    return rc;
}

static void cuda_free(void *ctx) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (!c) return;
    if (c->st) cudaStreamSynchronize(c->st);
    timing_free(c);
    for (int i = 0; i < c->n_buckets; i++)
        if (c->graphs[i]) cudaGraphExecDestroy(c->graphs[i]);
    cuw_free(c);
    void *dev[] = {c->kv, c->d_i32, c->d_pack, c->d_params, c->d_out, c->resid, c->xn, c->delta, c->qkv, c->q,
                   c->attn, c->gu, c->act, c->xperm, c->deq, c->gemv_partial, c->ssq, c->rope_cs, c->attn_partial, c->hs, c->logits,
                   c->samp_scratch, c->argmax_scratch, c->d_lists, c->blas_ws};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    free(c->h_i32);
    free(c->bt_used);
    cudaFreeHost(c->h_pack);
    cudaFreeHost(c->h_params);
    cudaFreeHost(c->h_lists);
    for (int i = 0; c->slots && i < c->n_slots; i++) {
        cudaFreeHost(c->slots[i].h_out);
        if (c->slots[i].done) cudaEventDestroy(c->slots[i].done);
        free(c->slots[i].res_row);
    }
    free(c->slots);
    free(c->mark);
    free(c->mark_idx);
    if (c->blas) cublasDestroy(c->blas);
    if (c->uploaded) cudaEventDestroy(c->uploaded);
    if (c->st) cudaStreamDestroy(c->st);
    cu_take_error(NULL);
    free(c);
}

static int check_model(const struct model_config *m, const struct backend_config *cfg, char *err) {
    if (cfg->tensor_parallel_size > 1) {
        pg_seterr(err, "cuda: --tensor-parallel-size %d is not supported (single GPU only)", cfg->tensor_parallel_size);
        return -1;
    }
    if (m->head_dim != 64 && m->head_dim != 128) {
        pg_seterr(err, "cuda: head_dim %d not supported (64 or 128)", m->head_dim);
        return -1;
    }
    if (m->n_kv_heads <= 0 || m->n_heads % m->n_kv_heads || m->n_heads / m->n_kv_heads > 8) {
        pg_seterr(err, "cuda: %d heads over %d kv heads not supported (group of at most 8)", m->n_heads, m->n_kv_heads);
        return -1;
    }
    const long seqs = cfg->max_num_seqs > 0 ? cfg->max_num_seqs : 256;  // cuda_init's default
    if (seqs * m->n_kv_heads > CU_ATTN_TICKETS) {
        pg_seterr(err, "cuda: max_num_seqs %ld too large for %d kv heads (at most %d)", seqs, m->n_kv_heads,
                  CU_ATTN_TICKETS / m->n_kv_heads);
        return -1;
    }
    return 0;
}

static void set_buckets(struct cuda_ctx *c) {
    static const int b[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024};
    c->n_buckets = 0;
    for (size_t i = 0; i < sizeof b / sizeof b[0] && b[i] < c->Smax; i++) c->buckets[c->n_buckets++] = b[i];
    c->buckets[c->n_buckets++] = c->Smax;
}

static int size_kv(struct cuda_ctx *c, char *err) {
    size_t free_b = 0, total = 0;
    if (CU_CHECK(cudaMemGetInfo(&free_b, &total))) return cu_take_error(err);
    const double util = c->bc.gpu_memory_utilization > 0 ? c->bc.gpu_memory_utilization : 0.9;
    const double reserve = 256.0 * (1 << 20);  // graphs, cuBLAS internals
    const double budget = util * (double)total - (double)(total - free_b) - reserve;
    const size_t per = kv_block_bytes(c);
    long nb = c->bc.num_blocks > 0 ? c->bc.num_blocks : (budget > 0 ? (long)(budget / per) - 1 : 0);
    long need = (c->bc.max_model_len + c->bc.block_size - 1) / c->bc.block_size;
    if (nb < need) {
        pg_seterr(err,
                  "cuda: max_model_len %d needs %.2f GiB of KV cache but only %.2f GiB is left at "
                  "gpu_memory_utilization %.2f (weights %.2f GiB); raise --gpu-memory-utilization or lower "
                  "--max-model-len / --max-num-batched-tokens",
                  c->bc.max_model_len, need * (double)per / (1 << 30), budget > 0 ? budget / (1 << 30) : 0.0, util,
                  c->weight_bytes / (double)(1 << 30));
        return -1;
    }
    if (nb > 0x7fffffff / 2) nb = 0x7fffffff / 2;
    if (set_kv(c, (int)nb)) return cu_take_error(err);
    pg_info("cuda: KV cache %ld blocks x %d = %ld tokens (%.2f GiB, %s); weights %.2f GiB (of which %.2f GiB "
            "dequantized int4 copies for many-row steps)", nb, c->bc.block_size,
            nb * c->bc.block_size, nb * (double)per / (1 << 30), c->kv_type == CU_KV_BF16 ? "bf16" :
            c->kv_type == CU_KV_E4M3 ? "fp8_e4m3" : "fp8_e5m2", c->weight_bytes / (double)(1 << 30),
            c->dense_cache_bytes / (double)(1 << 30));
    return 0;
}

static int cuda_init(void **out, const struct model_weights *w, const struct backend_config *cfg, int *num_blocks,
                     char *err) {
    *out = NULL;
    if (check_model(&w->cfg, cfg, err)) return -1;
    if (cuda_device_count() <= cfg->device_id) {
        pg_seterr(err, "cuda: no CUDA device %d (found %d)", cfg->device_id, cuda_device_count());
        return -1;
    }
    struct cuda_ctx *c = (struct cuda_ctx *)pg_calloc(1, sizeof *c);
    c->mc = w->cfg;
    c->bc = *cfg;
    c->n_slots = cfg->max_inflight > 1 ? cfg->max_inflight : 1;
    c->slots = (struct cu_slot *)pg_calloc(c->n_slots, sizeof *c->slots);
    c->last = -1;
    if (c->bc.block_size <= 0) c->bc.block_size = 16;
    if (c->bc.max_num_seqs <= 0) c->bc.max_num_seqs = 256;
    if (c->bc.max_model_len <= 0) c->bc.max_model_len = c->mc.max_pos > 0 ? c->mc.max_pos : 4096;
    if (c->bc.max_num_batched_tokens <= 0) c->bc.max_num_batched_tokens = 2048;
    c->Smax = c->bc.max_num_seqs;
    c->Tmax = c->bc.max_num_batched_tokens > c->Smax ? c->bc.max_num_batched_tokens : c->Smax;
    c->kv_type = cfg->kv_dtype == PG_F8_E4M3 ? CU_KV_E4M3 : cfg->kv_dtype == PG_F8_E5M2 ? CU_KV_E5M2 : CU_KV_BF16;
    cudaDeviceProp prop;
    if (CU_CHECK(cudaSetDevice(cfg->device_id)) || CU_CHECK(cudaGetDeviceProperties(&prop, cfg->device_id)) ||
        CU_CHECK(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking)) ||
        CU_CHECK(cudaEventCreateWithFlags(&c->uploaded, cudaEventDisableTiming)))
        goto fail;
    c->n_sm = prop.multiProcessorCount;
    if (BLAS_CHECK(cublasCreate(&c->blas)) || !(c->blas_ws = dalloc(64 << 20)) ||
        BLAS_CHECK(cublasSetStream(c->blas, c->st)) || BLAS_CHECK(cublasSetWorkspace(c->blas, c->blas_ws, 64 << 20)))
        goto fail;
    if (cuw_upload(c, w, err)) goto fail;
    {
        const char *e_dense = getenv("PAGODA_NO_DENSE_CACHE");
        if (!(e_dense && !strcmp(e_dense, "1"))) cuw_dense_cache(c);
    }
    if (alloc_buffers(c)) goto fail;
    set_buckets(c);
    if (set_kv(c, 1) || dummy_step(c, err)) goto fail;
    c->last = -1; // the engine's first step has nothing to feed from
    if (size_kv(c, err) || timing_init(c)) goto fail;  // timing after the dummy step: it is not counted
    *num_blocks = c->num_blocks;
    *out = c;
    return 0;
fail:
    if (!cu_take_error(err) && err && !err[0]) pg_seterr(err, "cuda: init failed");
    cuda_free(c);
    return -1;
}

extern "C" const struct backend_ops backend_cuda = {"cuda", cuda_init, cuda_execute, cuda_collect, cuda_logits, cuda_free};
