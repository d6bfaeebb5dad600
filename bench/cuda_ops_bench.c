// Decode-path kernel microbenchmark at the Qwen2.5-14B shapes (hidden 5120, 40/8 heads of
// 128, intermediate 13824, vocab 152064, GPTQ int4 group 128) for batch 1, 2, 4, 8 (16 for the GEMMs).
// Each op runs alone: median of REPS timed launches (cudaEvents); before each launch of an
// op that streams weights or KV, L2 is flushed by reading 256 MiB (an argmax over it: a memset would leave dirty lines whose write-back
// lands in the timed op); add_rmsnorm, rope and swiglu read what the previous kernel just
// wrote, so they run with L2 warm as in a step, back to back (WARM_BATCH), per-launch mean. GB/s counts the bytes the op must move; "% copy" is
// that against the device-to-device copy rate measured in the same run. Old and new
// kernels run side by side. The last table captures one decode layer as a CUDA graph
// (old path vs new path) and compares it with the sum of its ops and the byte floor.
// Weights and activations are constant fills (timing does not depend on values; the GPU
// tests check correctness). Usage: cuda_ops_bench [reps]   (Markdown to stdout)
// `cuda_ops_bench timeline [M] [fused|fused-rope]`: the start and end of every kernel of the layer graph as the
// GPU ran it (CUPTI activity records, PDL overlap kept), per op: how long it ran and how far
// it moved the chain's end (what the op costs the step).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cublas_v2.h>
#include <cupti.h>
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_ops.h"
#include "util/common.h"

// layers per captured graph (distinct weights, as in a model: nothing stays in L2)
#define NLAYER 6
enum { H = 5120, NH = 40, NKV = 8, HD = 128, I = 13824, V = 152064, GS = 128, BS = 16, MAXM = 16, MAXCTX = 4096 };
#define QKV (NH * HD + 2 * NKV * HD)

static void ck(cudaError_t e, const char *what) {
    if (e != cudaSuccess) {
        fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}
static void *dfill(size_t n, int byte) {
    void *p;
    ck(cudaMalloc(&p, n), "cudaMalloc");
    ck(cudaMemset(p, byte, n), "cudaMemset");
    return p;
}

struct bench {
    cudaStream_t st;
    cublasHandle_t blas;
    cudaEvent_t e0, e1;
    float *flush;
    size_t flush_bytes;
    struct cu_sample_out *flush_out;
    int reps;
    double copy_gbs;
    struct cu_gptq q[4];   // qkv, o, gu, down
    struct cu_gptq lq[NLAYER][4];  // the layer graph's own weights, one set per layer
    bf16_t *wd[4], *lm;    // dense (out, in)
    bf16_t *x, *y, *gu, *xn, *qb, *attn, *normw;
    float *resid, *partial, *apart, *logits, *qkv_bias;
    void *kc, *vc;
    int32_t *i32;  // step arrays
    int32_t *tiles;  // (seq i, query 0) per sequence: decode through the prefill kernel
    bool attn_pf;    // layer graph: decode attention through cu_attn_prefill
    bool fused;      // layer graph: the fused layer (fused_layers)
    bool fuse_rope;  // ... with RoPE + KV store in the qkv GEMV (CU_GEMV_ROPE)
    float *ssq;      // its residual tile sums of squares (MAXM, H / 64)
    float *rope_cs;  // its RoPE table (cu_rope_table, MAXCTX positions)
    struct cu_step s;
    const int32_t *seqs;
};
static const char *lin_name[4] = {"qkv 5120->7168", "o 5120->5120", "gate|up 5120->27648", "down 13824->5120"};
static const int lin_in[4] = {H, NH * HD, H, I}, lin_out[4] = {QKV, H, 2 * I, H};

struct op {
    int kind, lin, M, ctx;
};
enum { OP_INT4, OP_INT4_SWIGLU, OP_CUBLAS, OP_DENSE, OP_LM_CUBLAS, OP_LM_DENSE, OP_RMSNORM, OP_ROPE, OP_ATTN, OP_SWIGLU, OP_ATTN_PF };

static int splits_for(int n) {
    int s = (2 * 132 + n * NKV - 1) / (n * NKV);
    return s < 1 ? 1 : s > 32 ? 32 : s;
}

static void set_ctx(struct bench *b, int M, int ctx) {
    int32_t h[8 * MAXM + MAXM * (MAXCTX / BS)];
    const int bt = MAXCTX / BS;
    for (int i = 0; i < M; i++) {
        h[i] = i, h[MAXM + i] = ctx - 1, h[2 * MAXM + i] = ctx, h[3 * MAXM + i] = i, h[4 * MAXM + i] = 1;
        h[5 * MAXM + i] = i;
        for (int j = 0; j < bt; j++) h[8 * MAXM + i * bt + j] = i * bt + j;
    }
    ck(cudaMemcpy(b->i32, h, sizeof h, cudaMemcpyHostToDevice), "step upload");
    b->s = (struct cu_step){M, M, b->i32, b->i32 + MAXM, b->i32 + 2 * MAXM, b->i32 + 3 * MAXM, b->i32 + 4 * MAXM,
                            b->i32 + 8 * MAXM, bt};
    b->seqs = b->i32 + 5 * MAXM;
}

static void gemm(struct bench *b, const bf16_t *W, int in, int out, const bf16_t *X, int M, void *Y, bool f32) {
    const float one = 1, zero = 0;
    cublasGemmEx(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, M, in, &one, W, CUDA_R_16BF, in, X, CUDA_R_16BF, in, &zero, Y,
                 f32 ? CUDA_R_32F : CUDA_R_16BF, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

static void run_op(struct bench *b, const struct op *o) {
    const int M = o->M, in = lin_in[o->lin], out = lin_out[o->lin];
    struct cu_gemv_in x = {b->x, in, NULL, false};
    switch (o->kind) {
    case OP_INT4: cu_gptq_gemv_ex(&b->q[o->lin], &x, M, NULL, b->y, out, b->partial, b->st); break;
    case OP_INT4_SWIGLU:
        x = (struct cu_gemv_in){b->gu, 2 * I, NULL, true};
        cu_gptq_gemv_ex(&b->q[3], &x, M, NULL, b->y, H, b->partial, b->st);
        break;
    case OP_CUBLAS: gemm(b, b->wd[o->lin], in, out, b->x, M, b->y, false); break;
    case OP_DENSE: cu_bf16_gemv(b->wd[o->lin], in, out, b->x, M, NULL, b->y, out, false, b->st); break;
    case OP_LM_CUBLAS: gemm(b, b->lm, H, V, b->x, M, b->logits, true); break;
    case OP_LM_DENSE: cu_bf16_gemv(b->lm, H, V, b->x, M, NULL, b->logits, V, true, b->st); break;
    case OP_RMSNORM: cu_add_rmsnorm(b->resid, b->y, H, b->normw, 1e-6f, M, H, b->xn, b->st); break;
    case OP_SWIGLU: cu_swiglu(b->gu, M, I, b->x, b->st); break;
    case OP_ROPE:
        cu_qkv_rope_store(b->y, QKV, b->qkv_bias, &b->s, NH, NKV, HD, 1e6f, BS, CU_KV_BF16, b->kc, b->vc, b->qb, b->st);
        break;
    case OP_ATTN:
        cu_attn_decode(b->qb, &b->s, b->seqs, M, NH, NKV, HD, BS, CU_KV_BF16, b->kc, b->vc, splits_for(M), b->apart,
                       b->attn, b->st);
        break;
    case OP_ATTN_PF:
        cu_attn_prefill(b->qb, &b->s, b->tiles, M, NH, NKV, HD, BS, CU_KV_BF16, b->kc, b->vc, b->attn, b->st);
        break;
    }
}

static double op_bytes(const struct op *o) {
    const double M = o->M, in = lin_in[o->lin], out = lin_out[o->lin];
    switch (o->kind) {
    case OP_INT4: return in * out / 2 + in / GS * out * 4 + M * (in + out) * 2;
    case OP_INT4_SWIGLU: return (double)I * H / 2 + I / GS * H * 4 + M * (2 * I + H) * 2;
    case OP_CUBLAS: case OP_DENSE: return in * out * 2 + M * (in + out) * 2;
    case OP_LM_CUBLAS: case OP_LM_DENSE: return (double)H * V * 2 + M * (H * 2 + V * 4);
    case OP_RMSNORM: return M * H * (4 + 4 + 2 + 2) + H * 2;
    case OP_SWIGLU: return M * I * 6;
    case OP_ROPE: return M * QKV * 2 * 2;
    case OP_ATTN: case OP_ATTN_PF: return M * (double)o->ctx * NKV * HD * 2 * 2 + M * NH * HD * 4;
    }
    return 0;
}

static void flush_l2(struct bench *b) {
    cu_argmax(b->flush, (int)(b->flush_bytes / 4 / V), V, b->flush_out, b->st);
}

// Ops timed warm run WARM_BATCH times back to back between the events (per-launch average):
// a single launch onto an idle GPU would time the host's launch latency instead.
#define WARM_BATCH 20

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// Median microseconds of b->reps launches (L2 flushed first for weight- and KV-streaming ops).
static double time_op(struct bench *b, const struct op *o) {
    float t[1024], ms;
    if (o->kind == OP_ROPE || o->kind == OP_ATTN || o->kind == OP_ATTN_PF) set_ctx(b, o->M, o->ctx ? o->ctx : 512);
    run_op(b, o);
    for (int r = 0; r < b->reps; r++) {
        const bool warm = o->kind == OP_RMSNORM || o->kind == OP_ROPE || o->kind == OP_SWIGLU;
        if (!warm) flush_l2(b);
        ck(cudaEventRecord(b->e0, b->st), "event");
        for (int k = 0; k < (warm ? WARM_BATCH : 1); k++) run_op(b, o);
        ck(cudaEventRecord(b->e1, b->st), "event");
        ck(cudaEventSynchronize(b->e1), "sync");
        ck(cudaEventElapsedTime(&ms, b->e0, b->e1), "elapsed");
        t[r] = ms / (warm ? WARM_BATCH : 1);
    }
    char err[PG_ERR_LEN];
    if (cu_take_error(err)) {
        fprintf(stderr, "op failed: %s\n", err);
        exit(1);
    }
    qsort(t, b->reps, sizeof(float), cmpf);
    return t[b->reps / 2] * 1e3;
}

static void row(struct bench *b, const char *name, const char *impl, struct op o, double *sum) {
    double us = time_op(b, &o), gbs = op_bytes(&o) / (us * 1e3);
    if (sum) *sum += us;
    printf("| %s | %s | %d | %.1f | %.0f | %.0f%% |\n", name, impl, o.M, us, gbs, 100 * gbs / b->copy_gbs);
}

// NLAYER decode layers (batch M, context 512) as the backend runs them; op `skip` (0..7 in
// the order below, -1 none) is left out of every layer, to price it inside the graph.
static void layers(struct bench *b, int M, int skip) {
    struct cu_gemv_in xn = {b->xn, H, NULL, false}, at = {b->attn, NH * HD, NULL, false};
    struct cu_gemv_in gu = {b->gu, 2 * I, NULL, true};
    for (int l = 0; l < NLAYER; l++) {
        const struct cu_gptq *q = b->lq[l];
        if (skip != 0) cu_add_rmsnorm(b->resid, b->y, H, b->normw, 1e-6f, M, H, b->xn, b->st);
        if (skip != 1) cu_gptq_gemv_ex(&q[0], &xn, M, b->qkv_bias, b->y, QKV, b->partial, b->st);
        if (skip != 2)
            cu_qkv_rope_store(b->y, QKV, NULL, &b->s, NH, NKV, HD, 1e6f, BS, CU_KV_BF16, b->kc, b->vc, b->qb, b->st);
        if (skip != 3 && b->attn_pf)
            cu_attn_prefill(b->qb, &b->s, b->tiles, M, NH, NKV, HD, BS, CU_KV_BF16, b->kc, b->vc, b->attn, b->st);
        else if (skip != 3)
            cu_attn_decode(b->qb, &b->s, b->seqs, M, NH, NKV, HD, BS, CU_KV_BF16, b->kc, b->vc, splits_for(M),
                           b->apart, b->attn, b->st);
        if (skip != 4) cu_gptq_gemv_ex(&q[1], &at, M, NULL, b->y, H, b->partial, b->st);
        if (skip != 5) cu_add_rmsnorm(b->resid, b->y, H, b->normw, 1e-6f, M, H, b->xn, b->st);
        if (skip != 6) cu_gptq_gemv_ex(&q[2], &xn, M, NULL, b->gu, 2 * I, b->partial, b->st);
        if (skip != 7) cu_gptq_gemv_ex(&q[3], &gu, M, NULL, b->y, H, b->partial, b->st);
    }
}
static const char *layer_op[8] = {"add_rmsnorm", "qkv GEMV", "qkv_rope_store", "attn_decode",
                                  "o GEMV", "add_rmsnorm", "gate|up GEMV", "down GEMV (swiglu)"};

// The fused layer (backend_cuda.cu forward, steps of few tokens): seven kernels, the GEMVs
// forming the qkv input's norm, SwiGLU and the residual add (cu_gptq_gemv_fused); six with
// fuse_rope (RoPE + KV store in the qkv GEMV too). Every layer takes its first norm from the
// previous layer's tile sums of squares.
static void fused_layers(struct bench *b, int M, int skip) {
    struct cu_gemv_norm nrm = {b->resid, b->normw, b->ssq, 1e-6f};
    struct cu_gemv_in none = {NULL, H, NULL, false}, at = {b->attn, NH * HD, NULL, false}, xn = {b->xn, H, NULL, false},
                      act = {b->x, I, NULL, false};
    struct cu_gemv_out rope, res, glu, qkv;
    memset(&rope, 0, sizeof rope), memset(&res, 0, sizeof res), memset(&glu, 0, sizeof glu), memset(&qkv, 0, sizeof qkv);
    qkv.kind = CU_GEMV_STORE, qkv.y = b->y, qkv.ldy = QKV;
    rope.kind = CU_GEMV_ROPE;
    rope.rope = (struct cu_gemv_rope){b->s, NH, NKV, HD, BS, CU_KV_BF16, b->rope_cs, MAXCTX, NULL, b->kc, b->vc, b->qb};
    res.kind = CU_GEMV_RESID, res.resid = b->resid, res.ssq = b->ssq;
    glu.kind = CU_GEMV_SWIGLU, glu.y = b->x, glu.ldy = I;
    for (int l = 0; l < NLAYER; l++) {
        const struct cu_gptq *q = b->lq[l];
        int k = 0;  // the op's index in the variant's list (fused_op / fused_rope_op), for `skip`
        if (skip != k++)
            cu_gptq_gemv_fused(&q[0], &none, &nrm, M, b->qkv_bias, b->fuse_rope ? &rope : &qkv, b->partial, b->st);
        if (!b->fuse_rope && skip != k++)
            cu_qkv_rope_store(b->y, QKV, NULL, &b->s, NH, NKV, HD, 1e6f, BS, CU_KV_BF16, b->kc, b->vc, b->qb, b->st);
        if (skip != k++)
            cu_attn_decode(b->qb, &b->s, b->seqs, M, NH, NKV, HD, BS, CU_KV_BF16, b->kc, b->vc, splits_for(M),
                           b->apart, b->attn, b->st);
        if (skip != k++) cu_gptq_gemv_ex(&q[1], &at, M, NULL, b->y, H, b->partial, b->st);
        if (skip != k++) cu_add_rmsnorm(b->resid, b->y, H, b->normw, 1e-6f, M, H, b->xn, b->st);
        if (skip != k++) cu_gptq_gemv_fused(&q[2], &xn, NULL, M, NULL, &glu, b->partial, b->st);
        if (skip != k++) cu_gptq_gemv_fused(&q[3], &act, NULL, M, NULL, &res, b->partial, b->st);
    }
}
static const char *fused_op[7] = {"qkv GEMV (norm in)", "qkv_rope_store", "attn_decode", "o GEMV", "add_rmsnorm",
                                  "gate|up GEMV (SwiGLU out)", "down GEMV (residual out)"},
                  *fused_rope_op[6] = {"qkv GEMV (norm in, RoPE out)", "attn_decode", "o GEMV", "add_rmsnorm",
                                       "gate|up GEMV (SwiGLU out)", "down GEMV (residual out)"};
// The layer's ops for the timeline: count, names, and which are GEMVs (their index in the layer).
static int n_ops(const struct bench *b) { return !b->fused ? 8 : b->fuse_rope ? 6 : 7; }
static const char *op_name(const struct bench *b, int o) {
    return !b->fused ? layer_op[o] : b->fuse_rope ? fused_rope_op[o] : fused_op[o];
}
static const int unfused_gemv[4] = {1, 4, 6, 7}, fused_gemv[4] = {0, 3, 5, 6}, fused_rope_gemv[4] = {0, 2, 4, 5};

// The NLAYER-layer graph at context 512 (see layers), instantiated; *g for cudaGraphDestroy.
static cudaGraphExec_t layer_graph(struct bench *b, int M, int skip, cudaGraph_t *g) {
    cudaGraphExec_t ge;
    set_ctx(b, M, 512);
    ck(cudaStreamBeginCapture(b->st, cudaStreamCaptureModeThreadLocal), "capture");
    if (b->fused)
        fused_layers(b, M, skip);
    else
        layers(b, M, skip);
    ck(cudaStreamEndCapture(b->st, g), "end capture");
    ck(cudaGraphInstantiate(&ge, *g, 0), "instantiate");
    return ge;
}

// Microseconds per layer of the NLAYER-layer graph (median of reps replays, L2 flushed before each).
static double time_layer(struct bench *b, int M, int skip) {
    cudaGraph_t g;
    cudaGraphExec_t ge = layer_graph(b, M, skip, &g);
    float t[1024], ms;
    ck(cudaGraphLaunch(ge, b->st), "graph");
    for (int r = 0; r < b->reps; r++) {
        flush_l2(b);
        ck(cudaEventRecord(b->e0, b->st), "event");
        ck(cudaGraphLaunch(ge, b->st), "graph");
        ck(cudaEventRecord(b->e1, b->st), "event");
        ck(cudaEventSynchronize(b->e1), "sync");
        ck(cudaEventElapsedTime(&ms, b->e0, b->e1), "elapsed");
        t[r] = ms;
    }
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    qsort(t, b->reps, sizeof(float), cmpf);
    return t[b->reps / 2] * 1e3 / NLAYER;
}

// int4 GEMV settings compared (cu_gptq_tune); the first is the default.
static const struct {
    int bytes, flags;
    const char *name;
} TUNES[] = {{0, -1, ""},
             {0, CU_GPTQ_NO_REDUCE, "K splits not summed (timing only)"},
             {0, 0, "ticket between two fences (PAGODA_GPTQ_FLAGS=0)"},
             {64 << 10, 0, "64 KiB blocks"}};
#define N_TUNES ((int)(sizeof TUNES / sizeof TUNES[0]))

static void setup(struct bench *b) {
    ck(cudaStreamCreate(&b->st), "stream");
    if (cublasCreate(&b->blas) != CUBLAS_STATUS_SUCCESS) exit(1);
    cublasSetStream(b->blas, b->st);
    ck(cudaEventCreate(&b->e0), "event");
    ck(cudaEventCreate(&b->e1), "event");
    b->flush_bytes = (size_t)256 << 20;
    b->flush = dfill(b->flush_bytes, 0);
    b->flush_out = dfill(sizeof(struct cu_sample_out) * (b->flush_bytes / 4 / V), 0);
    size_t part = 0;
    for (int l = 0; l < 4; l++) {
        int in = lin_in[l], out = lin_out[l];
        b->q[l] = (struct cu_gptq){in, out, GS, in / GS, dfill((size_t)in / 8 * out * 4, 0x5a),
                                   dfill((size_t)in / GS * out * 4, 0x21)};  // scale fp16 0x2121, zero 0x2121
        for (int v = 0; v < N_TUNES; v++) {
            cu_gptq_tune(TUNES[v].bytes, TUNES[v].flags);
            size_t p = cu_gemv_partial_floats(&b->q[l], MAXM);
            if (p > part) part = p;
        }
        cu_gptq_tune(0, -1);
        b->wd[l] = dfill((size_t)in * out * 2, 0x3c);
        for (int k = 0; k < NLAYER; k++)
            b->lq[k][l] = (struct cu_gptq){in, out, GS, in / GS, dfill((size_t)in / 8 * out * 4, 0x5a),
                                           dfill((size_t)in / GS * out * 4, 0x21)};
    }
    b->partial = dfill(part * 4, 0);
    b->lm = dfill((size_t)H * V * 2, 0x3c);
    b->x = dfill((size_t)MAXM * I * 2, 0x3c);
    b->y = dfill((size_t)MAXM * 2 * I * 2, 0x3c);
    b->gu = dfill((size_t)MAXM * 2 * I * 2, 0x3c);
    b->xn = dfill((size_t)MAXM * H * 2, 0x3c);
    b->qb = dfill((size_t)MAXM * NH * HD * 2, 0x3c);
    b->attn = dfill((size_t)MAXM * NH * HD * 2, 0x3c);
    b->normw = dfill(H * 2, 0x3c);
    b->resid = dfill((size_t)MAXM * H * 4, 0);
    b->qkv_bias = dfill(QKV * 4, 0);
    b->logits = dfill((size_t)MAXM * V * 4, 0);
    b->apart = dfill(((size_t)MAXM * NH * 32 * (HD + 2) + CU_ATTN_TICKETS) * 4, 0);  // tickets zero
    size_t kv = (size_t)MAXM * MAXCTX * NKV * HD * 2;
    b->kc = dfill(kv, 0x3c);
    b->vc = dfill(kv, 0x3c);
    b->i32 = dfill(sizeof(int32_t) * (8 * MAXM + MAXM * (MAXCTX / BS)), 0);
    int32_t th[2 * MAXM];
    for (int i = 0; i < MAXM; i++) th[2 * i] = i, th[2 * i + 1] = 0;
    b->tiles = dfill(sizeof th, 0);
    ck(cudaMemcpy(b->tiles, th, sizeof th, cudaMemcpyHostToDevice), "tiles upload");
    b->ssq = dfill((size_t)MAXM * (H / 64) * 4, 0);  // last: the other buffers keep the addresses they had without it
    b->rope_cs = dfill((size_t)MAXCTX * HD * 4, 0);
    cu_rope_table(b->rope_cs, MAXCTX, HD, 1e6f, b->st);
}


// ---- timeline (CUPTI) ----
#define TL_MAX 8192
static struct tl_rec {
    uint64_t start, end;
    uint32_t graph;
    char name[48];
} g_tl[TL_MAX];
static int g_tl_n;

static void CUPTIAPI tl_buf_req(uint8_t **buf, size_t *size, size_t *max_records) {
    *size = (size_t)8 << 20;
    *buf = aligned_alloc(8, *size);
    *max_records = 0;
}

static void CUPTIAPI tl_buf_done(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *r = NULL;
    while (cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || g_tl_n >= TL_MAX) continue;
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
        struct tl_rec *o = &g_tl[g_tl_n++];
        o->start = k->start, o->end = k->end, o->graph = k->graphId;
        snprintf(o->name, sizeof o->name, "%s", k->name ? k->name : "?");
    }
    free(buf);
}

static int cmp_tl(const void *a, const void *b) {
    const struct tl_rec *x = a, *y = b;
    return (x->start > y->start) - (x->start < y->start);
}

#define TR_BLOCKS 4096  // most blocks of one traced GEMV launch
static int cmp_u64(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

// One launch's block stamps t (8 values per block, zero = not stamped) against E (ns, the
// previous kernel's end): adds the first / median / last block of each of the 6 stamps to st
// (ns after E), and the blocks, SMs used and blocks that stamped slot 2 to *nb, *nsm, *n2.
static void stamp_stats(const uint64_t *t, double E, double st[6][3], double *nb, double *nsm, double *n2,
                        uint64_t *v) {
    int n = 0;
    while (n < TR_BLOCKS && t[(size_t)n * 8]) n++;
    bool sm[1024] = {false};
    for (int i = 0; i < n; i++) {
        sm[t[(size_t)i * 8 + 6] & 1023] = true;
        *n2 += t[(size_t)i * 8 + 2] != 0;
    }
    for (int i = 0; i < 1024; i++) *nsm += sm[i];
    *nb += n;
    for (int k = 0; k < 6; k++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (t[(size_t)i * 8 + k]) v[m++] = t[(size_t)i * 8 + k];
        if (!m) continue;
        qsort(v, m, sizeof(uint64_t), cmp_u64);
        st[k][0] += (double)v[0] - E, st[k][1] += (double)v[m / 2] - E, st[k][2] += (double)v[m - 1] - E;
    }
}

// The GEMVs' block stamps (cu_gptq_trace) of the last replay, against the CUPTI end of the
// kernel before each GEMV (both the GPU's global timer in ns): per GEMV of layers 2..NLAYER-1
// (averaged), the first / median / last block at each stamp, us after that end. The
// attention's row (attn_trace_row) follows in the same table; columns 3-6 name the GEMV's
// stamp / the attention's.
static void trace_report(const struct bench *b, const uint64_t *tr, const struct tl_rec *e) {
    static const char *stamp[6] = {"block start", "wait returned", "inputs staged / first K tile", "tiles / keys done",
                                   "ticket taken", "splits summed / merged"};
    const int *gemv_op = !b->fused ? unfused_gemv : b->fuse_rope ? fused_rope_gemv : fused_gemv, nop = n_ops(b);
    printf("\n### Inside each GEMV and the attention: block stamps, us after the previous kernel's end (first / "
           "median / last block)\n\n| kernel | blocks | SMs | CUPTI start | ");
    for (int k = 0; k < 6; k++) printf("%s | ", stamp[k]);
    printf("CUPTI end |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    uint64_t *v = malloc(sizeof(uint64_t) * TR_BLOCKS);
    for (int gi = 0; gi < 4; gi++) {
        double st[6][3] = {{0}}, nb = 0, nsm = 0, n2 = 0, cs = 0, ce = 0;
        int cnt = 0;
        for (int l = 1; l < NLAYER - 1; l++, cnt++) {
            const struct tl_rec *prev = &e[l * nop + gemv_op[gi] - 1], *cur = prev + 1;
            const double E = (double)prev->end;
            stamp_stats(tr + (size_t)(l * 4 + gi) * TR_BLOCKS * 8, E, st, &nb, &nsm, &n2, v);
            cs += (double)cur->start - E, ce += (double)cur->end - E;
        }
        printf("| %s | %.0f | %.0f | %.2f | ", op_name(b, gemv_op[gi]), nb / cnt, nsm / cnt, cs / cnt / 1e3);
        for (int k = 0; k < 6; k++) printf("%.2f / %.2f / %.2f | ", st[k][0] / cnt / 1e3, st[k][1] / cnt / 1e3, st[k][2] / cnt / 1e3);
        printf("%.2f |\n", ce / cnt / 1e3);
    }
    free(v);
}

// ---- timeline: the attention's row of the stamp table ----
// The decode attention's block stamps (cu_attn_trace, one launch per layer) of the last replay,
// as trace_report's GEMV rows: us after the end of the kernel before it (qkv_rope_store, or the qkv GEMV in the fused layer);
// blocks also counts those with keys (the others stamp only their start and wait). Then what
// its columns mean.
static void attn_trace_row(const struct bench *b, const uint64_t *tr, const struct tl_rec *e) {
    const int nop = n_ops(b), op = !b->fused ? 3 : b->fuse_rope ? 1 : 2;  // the attention's place in the layer
    double st[6][3] = {{0}}, nb = 0, nk = 0, nsm = 0, cs = 0, ce = 0;
    int cnt = 0;
    uint64_t *v = malloc(sizeof(uint64_t) * TR_BLOCKS);
    for (int l = 1; l < NLAYER - 1; l++, cnt++) {
        const struct tl_rec *prev = &e[l * nop + op - 1], *cur = prev + 1;
        const double E = (double)prev->end;
        stamp_stats(tr + (size_t)l * TR_BLOCKS * 8, E, st, &nb, &nsm, &nk, v);  // slot 2: the first K tile
        cs += (double)cur->start - E, ce += (double)cur->end - E;
    }
    printf("| attn_decode | %.0f (%.0f with keys) | %.0f | %.2f | ", nb / cnt, nk / cnt, nsm / cnt, cs / cnt / 1e3);
    for (int k = 0; k < 6; k++) printf("%.2f / %.2f / %.2f | ", st[k][0] / cnt / 1e3, st[k][1] / cnt / 1e3, st[k][2] / cnt / 1e3);
    printf("%.2f |\n", ce / cnt / 1e3);
    free(v);
    const char *cl = getenv("PAGODA_ATTN_CLUSTER");
    printf("\nattn_decode row (split merge %s): first K tile = warp 0's first 32 keys in shared memory; keys done = "
           "warp 0's key loop done; ticket taken = the block's partial written and its ticket taken (one split with "
           "keys: the output written; cluster merge: past the first cluster barrier, every split's state visible); "
           "splits merged = the merging block (cluster merge: rank 0) wrote the output.\n",
           !(cl && atoi(cl) <= 0) ? "through a cluster (the default)" : "by ticket, PAGODA_ATTN_CLUSTER=0");
}

// Replays the NLAYER-layer graph (L2 flushed before each) under CUPTI and prints, per op of
// a layer (layers 2..NLAYER-1, all replays): mean run time (start to end, which for a kernel
// launched with PDL includes its wait) and mean advance (its end minus the previous
// kernel's end: what it adds to the step); then the GEMV block stamps (trace_report) and the
// attention's (attn_trace_row).
static int timeline(struct bench *b, int M) {
    const int reps = 10, nop = n_ops(b), per = nop * NLAYER;
    cudaGraph_t g;
    const size_t tr_bytes = (size_t)4 * NLAYER * TR_BLOCKS * 8 * sizeof(uint64_t);
    uint64_t *dtr = dfill(tr_bytes, 0);
    const size_t atr_bytes = (size_t)NLAYER * TR_BLOCKS * 8 * sizeof(uint64_t);  // attention stamps
    uint64_t *datr = dfill(atr_bytes, 0);
    cu_gptq_trace(dtr, TR_BLOCKS);
    cu_attn_trace(datr, TR_BLOCKS);
    cudaGraphExec_t ge = layer_graph(b, M, -1, &g);
    cu_gptq_trace(NULL, 0);
    cu_attn_trace(NULL, 0);
    ck(cudaGraphLaunch(ge, b->st), "graph");
    ck(cudaStreamSynchronize(b->st), "sync");
    if (cuptiActivityRegisterCallbacks(tl_buf_req, tl_buf_done) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
        fprintf(stderr, "CUPTI activity tracing unavailable\n");
        return 1;
    }
    for (int r = 0; r < reps; r++) {
        flush_l2(b);
        if (r == reps - 1) ck(cudaMemsetAsync(dtr, 0, tr_bytes, b->st), "memset");
        if (r == reps - 1) ck(cudaMemsetAsync(datr, 0, atr_bytes, b->st), "memset");
        ck(cudaGraphLaunch(ge, b->st), "graph");
        ck(cudaStreamSynchronize(b->st), "sync");
    }
    uint64_t *tr = malloc(tr_bytes);
    ck(cudaMemcpy(tr, dtr, tr_bytes, cudaMemcpyDeviceToHost), "trace copy");
    cudaFree(dtr);
    uint64_t *atr = malloc(atr_bytes);
    ck(cudaMemcpy(atr, datr, atr_bytes, cudaMemcpyDeviceToHost), "trace copy");
    cudaFree(datr);
    cuptiActivityFlushAll(1);
    cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    qsort(g_tl, g_tl_n, sizeof g_tl[0], cmp_tl);
    struct tl_rec *k = malloc(sizeof(struct tl_rec) * TL_MAX);
    int n = 0;
    for (int i = 0; i < g_tl_n; i++)
        if (g_tl[i].graph) k[n++] = g_tl[i];  // the graph's kernels (the flushes run outside it)
    printf("# Layer graph timeline%s, M = %d, context 512, %d layers, %d replays (CUPTI)\n\n", b->fused ? " (fused layer)" : "",
           M, NLAYER, reps);
    if (n != reps * per) {
        printf("expected %d graph kernels, CUPTI gave %d\n", reps * per, n);
        free(k), free(tr), free(atr);
        return 1;
    }
    double run[8] = {0}, adv[8] = {0}, total = 0;
    int cnt = 0;
    for (int r = 0; r < reps; r++) {
        const struct tl_rec *e = k + r * per;
        total += (double)(e[per - 1].end - e[0].start) / NLAYER;
        for (int l = 1; l < NLAYER - 1; l++, cnt++)
            for (int o = 0; o < nop; o++) {
                const struct tl_rec *c = &e[l * nop + o], *prev = &e[l * nop + o - 1];
                run[o] += (double)(c->end - c->start);
                adv[o] += (double)(c->end > prev->end ? c->end - prev->end : 0);
            }
    }
    printf("graph: %.1f us per layer (first kernel's start to last kernel's end)\n\n", total / reps / 1e3);
    printf("| op | kernel | runs (us) | advances the chain by (us) |\n|---|---|---|---|\n");
    double sum = 0;
    for (int o = 0; o < nop; o++) {
        sum += adv[o] / cnt;
        printf("| %s | %.40s | %.1f | %.1f |\n", op_name(b, o), k[nop + o].name, run[o] / cnt / 1e3, adv[o] / cnt / 1e3);
    }
    printf("| sum | | | %.1f |\n", sum / 1e3);
    trace_report(b, tr, k + (reps - 1) * per);
    attn_trace_row(b, atr, k + (reps - 1) * per);
    free(k), free(tr), free(atr);
    return 0;
}

// Rows of the price table for the layer variant b selects: the whole graph (as `none`), then
// the graph without each op in turn.
static void op_prices(struct bench *b, const char *none) {
    const double full = time_layer(b, 1, -1);
    printf("| %s | %.1f | |\n", none, full);
    for (int k = 0; k < n_ops(b); k++) {
        const double t = time_layer(b, 1, k);
        printf("| %s | %.1f | %.1f |\n", op_name(b, k), t, full - t);
    }
}

// The layer graph's variants (int4 GEMV settings, attention splits, the attention's split
// merge by ticket or through a cluster, attention through the prefill kernel) and each op's
// price inside it.
static void layer_tables(struct bench *b) {
    printf("\n### Variants of the layer graph, us per layer\n\n| variant | M = 1 | M = 2 | M = 4 | M = 8 |\n"
           "|---|---|---|---|---|\n");
    for (int v = 0; v < N_TUNES; v++) {
        cu_gptq_tune(TUNES[v].bytes, TUNES[v].flags);
        printf("| int4 GEMV %s | %.1f | %.1f | %.1f | %.1f |\n", v ? TUNES[v].name : "default", time_layer(b, 1, -1),
               time_layer(b, 2, -1), time_layer(b, 4, -1), time_layer(b, 8, -1));
    }
    cu_gptq_tune(0, -1);
    b->fused = true;
    printf("| fused layer (7 kernels) | %.1f | %.1f | %.1f | %.1f |\n", time_layer(b, 1, -1), time_layer(b, 2, -1),
           time_layer(b, 4, -1), time_layer(b, 8, -1));
    b->fuse_rope = true;
    printf("| fused layer, RoPE in the qkv GEMV (6 kernels) | %.1f | %.1f | %.1f | %.1f |\n", time_layer(b, 1, -1),
           time_layer(b, 2, -1), time_layer(b, 4, -1), time_layer(b, 8, -1));
    b->fuse_rope = false;
    b->fused = false;
    for (int mk = 32; mk <= 128; mk *= 4) {
        cu_attn_decode_tune(mk);
        printf("| attn_decode >= %d keys per split | %.1f | | | %.1f |\n", mk, time_layer(b, 1, -1), time_layer(b, 8, -1));
    }
    cu_attn_decode_tune(0);
    for (int c = 0; c <= 1; c++) {  // the split merge by ticket, then through a cluster (<= 8 splits)
        cu_attn_decode_cluster(c);
        printf("| attn_decode split merge %s | %.1f | %.1f | %.1f | %.1f |\n",
               c ? "through a cluster (<= 8 splits)" : "by ticket (global partials)", time_layer(b, 1, -1),
               time_layer(b, 2, -1), time_layer(b, 4, -1), time_layer(b, 8, -1));
    }
    cu_attn_decode_cluster(-1);
    b->fused = b->fuse_rope = true;  // the decode attention's variants inside the 6-kernel layer
    for (int tc = 0; tc <= 1; tc++) {
        cu_attn_decode_tc(tc);
        printf("| fused layer, attention Q.K and P.V on %s | %.1f | %.1f | %.1f | %.1f |\n",
               tc ? "tensor cores (the bf16 default)" : "CUDA cores", time_layer(b, 1, -1), time_layer(b, 2, -1),
               time_layer(b, 4, -1), time_layer(b, 8, -1));
    }
    for (int mk = 32; mk <= 256; mk *= 2) {
        cu_attn_decode_tune(mk);
        printf("| fused layer, attention (tensor cores) >= %d keys per split | %.1f | | | %.1f |\n", mk,
               time_layer(b, 1, -1), time_layer(b, 8, -1));
    }
    cu_attn_decode_tune(0);
    cu_attn_decode_tc(-1);
    b->fused = b->fuse_rope = false;
    b->attn_pf = true;
    printf("| attention through the prefill kernel | %.1f | | | %.1f |\n", time_layer(b, 1, -1), time_layer(b, 8, -1));
    b->attn_pf = false;
    printf("\n### Each op's price inside the graph: the layer without it, us per layer (M = 1)\n\n");
    printf("| op left out | graph | saved |\n|---|---|---|\n");
    op_prices(b, "(none)");
    b->fused = true;
    op_prices(b, "(none, fused layer)");
    b->fused = false;
}

int main(int argc, char **argv) {
    struct bench b;
    memset(&b, 0, sizeof b);
    b.reps = argc > 1 ? atoi(argv[1]) : 50;
    if (argc > 1 && !strcmp(argv[1], "layers")) {  // only the layer-graph tables
        b.reps = 30;
        setup(&b);
        layer_tables(&b);
        char err[PG_ERR_LEN];
        if (cu_take_error(err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "timeline")) {
        setup(&b);
        b.fused = argc > 3 && !strncmp(argv[3], "fused", 5);
        b.fuse_rope = argc > 3 && !strcmp(argv[3], "fused-rope");
        return timeline(&b, argc > 2 ? atoi(argv[2]) : 1);
    }
    if (argc > 1 && !strcmp(argv[1], "profile")) {  // a few launches of each GEMV, for ncu
        setup(&b);
        for (int r = 0; r < 3; r++)
            for (int v = 0; v < N_TUNES; v++) {
                cu_gptq_tune(TUNES[v].bytes, TUNES[v].flags);
                run_op(&b, &(struct op){OP_INT4, 2, 1, 0});
                run_op(&b, &(struct op){OP_INT4, 1, 1, 0});
            }
        for (int r = 0; r < 3; r++) run_op(&b, &(struct op){OP_DENSE, 2, 1, 0});
        set_ctx(&b, 1, 512);
        for (int r = 0; r < 3; r++) run_op(&b, &(struct op){OP_ATTN, 0, 1, 512});
        ck(cudaStreamSynchronize(b.st), "sync");
        return 0;
    }
    if (b.reps < 3 || b.reps > 1024) b.reps = 50;
    double copy_bps, flops;
    char err[PG_ERR_LEN];
    if (cu_measure_ceilings(&copy_bps, &flops, err)) {
        fprintf(stderr, "ceilings: %s\n", err);
        return 1;
    }
    b.copy_gbs = copy_bps / 1e9;
    setup(&b);
    struct cudaDeviceProp prop;
    ck(cudaGetDeviceProperties(&prop, 0), "props");
    printf("# Decode ops, Qwen2.5-14B shapes, %s, median of %d, L2 flushed for GEMV/attention rows\n\n", prop.name, b.reps);
    flush_l2(&b);
    ck(cudaEventRecord(b.e0, b.st), "event");
    flush_l2(&b);
    ck(cudaEventRecord(b.e1, b.st), "event");
    ck(cudaEventSynchronize(b.e1), "sync");
    float fms;
    ck(cudaEventElapsedTime(&fms, b.e0, b.e1), "elapsed");
    printf("L2 flush: argmax over %zu MiB, %.1f us (%.0f GB/s)\n\n", b.flush_bytes >> 20, fms * 1e3,
           b.flush_bytes / (fms * 1e6));
    printf("device-to-device copy: %.0f GB/s (read + write); %% copy below = op bytes / time / that\n\n", b.copy_gbs);
    printf("| op | impl | M | us | GB/s | %% copy |\n|---|---|---|---|---|---|\n");
    const int Ms[5] = {1, 2, 4, 8, 16};  // the dense custom GEMV stops at 8 rows
    for (int l = 0; l < 4; l++)
        for (int mi = 0; mi < 5; mi++) {
            for (int v = 1; v < N_TUNES; v++) {  // the other int4 GEMV settings (TUNES)
                char impl[64];
                snprintf(impl, sizeof impl, "int4 GEMV, %s", TUNES[v].name);
                cu_gptq_tune(TUNES[v].bytes, TUNES[v].flags);
                row(&b, lin_name[l], impl, (struct op){OP_INT4, l, Ms[mi], 0}, NULL);
            }
            cu_gptq_tune(0, -1);
            row(&b, lin_name[l], "int4 GEMV", (struct op){OP_INT4, l, Ms[mi], 0}, NULL);
            if (l == 3) {
                row(&b, lin_name[l], "swiglu kernel (old)", (struct op){OP_SWIGLU, l, Ms[mi], 0}, NULL);
                row(&b, lin_name[l], "int4 GEMV + swiglu in staging", (struct op){OP_INT4_SWIGLU, l, Ms[mi], 0}, NULL);
            }
        }
    for (int l = 0; l < 4; l++)
        for (int mi = 0; mi < 5; mi++) {
            row(&b, lin_name[l], "bf16 cuBLAS", (struct op){OP_CUBLAS, l, Ms[mi], 0}, NULL);
            if (Ms[mi] <= CU_DENSE_GEMV_MAX_ROWS)
                row(&b, lin_name[l], "bf16 custom gemv", (struct op){OP_DENSE, l, Ms[mi], 0}, NULL);
        }
    for (int mi = 0; mi < 4; mi++) {
        row(&b, "lm_head 5120->152064", "bf16 cuBLAS (f32 out)", (struct op){OP_LM_CUBLAS, 0, Ms[mi], 0}, NULL);
        row(&b, "lm_head 5120->152064", "bf16 custom gemv", (struct op){OP_LM_DENSE, 0, Ms[mi], 0}, NULL);
    }
    for (int mi = 0; mi < 4; mi++) {
        row(&b, "add_rmsnorm 5120", "", (struct op){OP_RMSNORM, 0, Ms[mi], 0}, NULL);
        row(&b, "qkv_rope_store", "", (struct op){OP_ROPE, 0, Ms[mi], 512}, NULL);
        row(&b, "attn_decode ctx 512", "", (struct op){OP_ATTN, 0, Ms[mi], 512}, NULL);
        for (int mk = 32; mk <= 128; mk *= 4) {  // beside the default 64: more or fewer blocks
            char impl[48];
            snprintf(impl, sizeof impl, ">= %d keys per split", mk);
            cu_attn_decode_tune(mk);
            row(&b, "attn_decode ctx 512", impl, (struct op){OP_ATTN, 0, Ms[mi], 512}, NULL);
        }
        cu_attn_decode_tune(0);
        row(&b, "attn_decode ctx 4096", "", (struct op){OP_ATTN, 0, Ms[mi], 4096}, NULL);
        cu_attn_decode_cluster(1);  // the split merge through a cluster (<= 8 splits)
        row(&b, "attn_decode ctx 512", "cluster merge", (struct op){OP_ATTN, 0, Ms[mi], 512}, NULL);
        row(&b, "attn_decode ctx 4096", "cluster merge", (struct op){OP_ATTN, 0, Ms[mi], 4096}, NULL);
        cu_attn_decode_cluster(-1);
        cu_attn_decode_tc(0);  // Q.K and P.V on the CUDA cores (the fp8 caches' kernel)
        row(&b, "attn_decode ctx 512", "CUDA cores", (struct op){OP_ATTN, 0, Ms[mi], 512}, NULL);
        row(&b, "attn_decode ctx 4096", "CUDA cores", (struct op){OP_ATTN, 0, Ms[mi], 4096}, NULL);
        cu_attn_decode_tc(-1);
        row(&b, "attn_decode ctx 512", "prefill kernel (FA2, 1 query)", (struct op){OP_ATTN_PF, 0, Ms[mi], 512}, NULL);
        row(&b, "attn_decode ctx 4096", "prefill kernel (FA2, 1 query)", (struct op){OP_ATTN_PF, 0, Ms[mi], 4096}, NULL);
    }
    printf("\n## Int4 decode layers as one CUDA graph (%d layers, distinct weights, context 512), us per layer\n\n", NLAYER);
    printf("| M | graph (PDL) | graph (PDL off) | sum of ops | floor (bytes / copy rate) |\n|---|---|---|---|---|\n");
    for (int mi = 0; mi < 5; mi++) {
        const int M = Ms[mi];
        double floor_b = 0;
        for (int l = 0; l < 4; l++) floor_b += op_bytes(&(struct op){OP_INT4, l, M, 0});
        floor_b += op_bytes(&(struct op){OP_ATTN, 0, M, 512});
        double sum = 0;
        struct op ops[8] = {{OP_RMSNORM, 0, M, 0}, {OP_INT4, 0, M, 0}, {OP_ROPE, 0, M, 512},
                            {OP_ATTN, 0, M, 512},  {OP_INT4, 1, M, 0}, {OP_RMSNORM, 0, M, 0},
                            {OP_INT4, 2, M, 0},    {OP_INT4_SWIGLU, 3, M, 0}};
        for (int k = 0; k < 8; k++) sum += time_op(&b, &ops[k]);
        cu_pdl_force(false);
        double off = time_layer(&b, M, -1);
        cu_pdl_force(true);
        printf("| %d | %.1f | %.1f | %.1f | %.1f |\n", M, time_layer(&b, M, -1), off, sum, floor_b / (b.copy_gbs * 1e3));
    }
    layer_tables(&b);
    if (cu_take_error(err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}
