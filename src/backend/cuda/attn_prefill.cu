// Causal flash attention over the paged KV cache for prefill and chunked prefill
// (FlashAttention-2 style). One block of 4 warps per (query tile of 64, q head); each warp
// owns 16 query rows and keeps Q (as A fragments), S, P and O in registers:
//   S = Q K^T and O += P V with mma.sync m16n8k16 bf16 -> f32, fragments through ldmatrix
//   (K plain, V transposed); online softmax per row in registers (exp2, log2(e) folded into
//   the scale; each thread holds rows lane/4 and lane/4 + 8 of the m16n8 accumulators).
// K/V tiles of 64 keys go through the block table (a tile may span several KV blocks) into
// double-buffered shared memory: cp.async for bf16 caches, register prefetch + convert (two
// fp8 per cvt) for fp8 caches, so the next tile's loads overlap this tile's math. Key tiles
// past the tile's last query are never read; the causal mask is applied only on tiles that
// cross a warp's diagonal, and a warp skips tiles wholly above its rows. Blocks are ordered
// heads-fastest (the q heads sharing a kv head run together and share K/V through L2) and
// longest tiles first.
#include <math.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/kv_cache.cuh"
#include "backend/cuda/mma.cuh"

typedef __nv_bfloat16 bf16;
#define PT 64          // queries per tile == keys per tile
#define PF_WARPS 4

// ---- PTX wrappers (sm_80+) ----
// 2^x on the SFU (ex2.approx.ftz: -inf -> +0, which the masked scores rely on).
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}
// 8 fp8 values (one uint2) -> 8 bf16 (one uint4), two per cvt; exact (fp8 fits in bf16).
__device__ __forceinline__ uint4 fp8x8_to_bf16(uint2 u, __nv_fp8_interpretation_t kind) {
    uint4 o;
    uint32_t *po = (uint32_t *)&o;
    const uint32_t w[2] = {u.x, u.y};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w[i >> 1] >> (16 * (i & 1))), kind);
        float2 f = __half22float2(__half2(h));
        po[i] = pack_bf16(f.x, f.y);
    }
    return o;
}

// Per-block description shared by the load helpers.
struct fa_ctx {
    const int32_t *bt;
    int kvh, n_kv, bs, kmax;
};

// Cache element index of 16-byte chunk e (row r = e / (HD/8) of key tile kt); `valid` says
// whether the key exists (rows past kmax are zero-filled, from a safe address).
template <int HD>
__device__ __forceinline__ size_t fa_chunk(const fa_ctx &c, int kt, int e, bool &valid) {
    const int r = e / (HD / 8), col = (e % (HD / 8)) * 8, j = kt * PT + r;
    valid = j < c.kmax;
    const int jj = valid ? j : c.kmax - 1;
    return kv_index(c.bt[jj / c.bs], c.kvh, jj % c.bs, col, c.n_kv, c.bs, HD);
}

template <int HD>
__device__ __forceinline__ void fa_load_bf16(const fa_ctx &c, int kt, const bf16 *kc, const bf16 *vc, bf16 *Ks,
                                             bf16 *Vs) {
    constexpr int LD = HD + 8;
#pragma unroll
    for (int i = 0; i < PT * HD / 8 / (PF_WARPS * 32); i++) {
        const int e = threadIdx.x + i * PF_WARPS * 32, so = (e / (HD / 8)) * LD + (e % (HD / 8)) * 8;
        bool valid;
        const size_t idx = fa_chunk<HD>(c, kt, e, valid);
        cp_async16(Ks + so, kc + idx, valid ? 16 : 0);
        cp_async16(Vs + so, vc + idx, valid ? 16 : 0);
    }
}

template <int HD>
struct fa_fp8_regs {
    static constexpr int N = PT * HD / 8 / (PF_WARPS * 32);
    uint2 k[N], v[N];
};

template <int HD>
__device__ __forceinline__ void fa_fetch_fp8(const fa_ctx &c, int kt, const uint8_t *kc, const uint8_t *vc,
                                             fa_fp8_regs<HD> &r) {
#pragma unroll
    for (int i = 0; i < fa_fp8_regs<HD>::N; i++) {
        bool valid;
        const size_t idx = fa_chunk<HD>(c, kt, threadIdx.x + i * PF_WARPS * 32, valid);
        r.k[i] = valid ? *(const uint2 *)(kc + idx) : make_uint2(0, 0);
        r.v[i] = valid ? *(const uint2 *)(vc + idx) : make_uint2(0, 0);
    }
}

template <int HD>
__device__ __forceinline__ void fa_store_fp8(const fa_fp8_regs<HD> &r, __nv_fp8_interpretation_t kind, bf16 *Ks,
                                             bf16 *Vs) {
    constexpr int LD = HD + 8;
#pragma unroll
    for (int i = 0; i < fa_fp8_regs<HD>::N; i++) {
        const int e = threadIdx.x + i * PF_WARPS * 32, so = (e / (HD / 8)) * LD + (e % (HD / 8)) * 8;
        *(uint4 *)(Ks + so) = fp8x8_to_bf16(r.k[i], kind);
        *(uint4 *)(Vs + so) = fp8x8_to_bf16(r.v[i], kind);
    }
}

template <int HD>
static constexpr size_t fa_smem_bytes() { return (size_t)5 * PT * (HD + 8) * sizeof(bf16); }  // Q, 2x K, 2x V

// One warp's work on one key tile: S = Q K^T, causal mask when `diag`, online softmax, O += P V.
// qpos: absolute position of this thread's row lane/4 (row lane/4 + 8 is qpos + 8).
template <int HD>
__device__ __forceinline__ void fa_tile(const uint32_t (*qf)[4], const bf16 *Ks, const bf16 *Vs, int k0, bool diag,
                                        int qpos, float sl2, float (*o)[4], float *m, float *l) {
    constexpr int LD = HD + 8;
    const int lane = threadIdx.x & 31, mat = lane >> 3, r8 = lane & 7, t2 = (lane & 3) * 2;
    float s[PT / 8][4];
#pragma unroll
    for (int n = 0; n < PT / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int k = 0; k < HD / 16; k++)
#pragma unroll
        for (int np = 0; np < PT / 16; np++) {
            uint32_t b[4];
            ldsm_x4(b, Ks + (np * 16 + (mat >> 1) * 8 + r8) * LD + k * 16 + (mat & 1) * 8);
            mma_bf16(s[2 * np], qf[k], b[0], b[1]);
            mma_bf16(s[2 * np + 1], qf[k], b[2], b[3]);
        }
    if (diag) {
#pragma unroll
        for (int n = 0; n < PT / 8; n++)
#pragma unroll
            for (int u = 0; u < 4; u++)
                if (k0 + n * 8 + t2 + (u & 1) > qpos + (u >> 1) * 8) s[n][u] = -INFINITY;
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < PT / 8; n++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]) * sl2);
        mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]) * sl2);
    }
    float corr[2], sum[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 2; i++) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        if (mx[i] == -INFINITY) mx[i] = 0.f;  // row fully masked so far: keep exp2 finite
        corr[i] = fast_exp2(m[i] - mx[i]);
        m[i] = mx[i];
    }
    uint32_t pa[PT / 16][4];
#pragma unroll
    for (int n = 0; n < PT / 8; n++) {
        const float p0 = fast_exp2(fmaf(s[n][0], sl2, -mx[0])), p1 = fast_exp2(fmaf(s[n][1], sl2, -mx[0]));
        const float p2 = fast_exp2(fmaf(s[n][2], sl2, -mx[1])), p3 = fast_exp2(fmaf(s[n][3], sl2, -mx[1]));
        sum[0] += p0 + p1;
        sum[1] += p2 + p3;
        pa[n >> 1][(n & 1) * 2] = pack_bf16(p0, p1);
        pa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(p2, p3);
    }
    l[0] = l[0] * corr[0] + sum[0];
    l[1] = l[1] * corr[1] + sum[1];
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
        o[n][0] *= corr[0], o[n][1] *= corr[0];
        o[n][2] *= corr[1], o[n][3] *= corr[1];
    }
#pragma unroll
    for (int kk = 0; kk < PT / 16; kk++)
#pragma unroll
        for (int dp = 0; dp < HD / 16; dp++) {
            uint32_t b[4];
            ldsm_x4_t(b, Vs + (kk * 16 + (mat & 1) * 8 + r8) * LD + dp * 16 + (mat >> 1) * 8);
            mma_bf16(o[2 * dp], pa[kk], b[0], b[1]);
            mma_bf16(o[2 * dp + 1], pa[kk], b[2], b[3]);
        }
}

template <int HD, bool FP8>
__global__ void __launch_bounds__(PF_WARPS * 32, 2)
k_attn_prefill(const bf16 *q, struct cu_step s, const int32_t *tiles, int n_tiles, int n_heads, int n_kv, int bs,
               int kv_type, const void *kc, const void *vc, bf16 *out) {
    constexpr int LD = HD + 8;  // smem row stride in bf16 (272 B for hd 128: ldmatrix rows hit distinct banks)
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *Ks = Qs + PT * LD, *Vs = Ks + 2 * PT * LD;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // heads fastest (GQA siblings share K/V in L2), tiles in reverse (the backend lists a
    // sequence's tiles in order, so the ones with the most keys start first)
    const int h = blockIdx.x % n_heads, tile = n_tiles - 1 - (int)(blockIdx.x / n_heads);
    const int seq = tiles[2 * tile], qi0 = tiles[2 * tile + 1];
    const int n_new = s.seq_nnew[seq], q0 = s.seq_q0[seq], pos0 = s.seq_len[seq] - n_new;
    const int nq = min(PT, n_new - qi0), kmax = pos0 + qi0 + nq, n_kt = (kmax + PT - 1) / PT;
    const fa_ctx c = {s.block_tables + (size_t)seq * s.bt_stride, h / (n_heads / n_kv), n_kv, bs, kmax};
    const __nv_fp8_interpretation_t kind = kv_type == CU_KV_E5M2 ? __NV_E5M2 : __NV_E4M3;

#pragma unroll
    for (int i = 0; i < PT * HD / 8 / (PF_WARPS * 32); i++) {
        const int e = threadIdx.x + i * PF_WARPS * 32, r = e / (HD / 8), col = (e % (HD / 8)) * 8;
        const int rr = r < nq ? r : nq - 1;
        cp_async16(Qs + r * LD + col, q + ((size_t)(q0 + qi0 + rr) * n_heads + h) * HD + col, r < nq ? 16 : 0);
    }
    fa_fp8_regs<HD> pre;
    if (FP8) {
        fa_fetch_fp8<HD>(c, 0, (const uint8_t *)kc, (const uint8_t *)vc, pre);
        fa_store_fp8<HD>(pre, kind, Ks, Vs);
    } else {
        fa_load_bf16<HD>(c, 0, (const bf16 *)kc, (const bf16 *)vc, Ks, Vs);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    uint32_t qf[HD / 16][4];
    {
        const int mat = lane >> 3, row = w * 16 + (mat & 1) * 8 + (lane & 7);
#pragma unroll
        for (int k = 0; k < HD / 16; k++) ldsm_x4(qf[k], Qs + row * LD + k * 16 + (mat >> 1) * 8);
    }
    float o[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < HD / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    const float sl2 = rsqrtf((float)HD) * 1.4426950408889634f;
    const int wpos = pos0 + qi0 + w * 16, qpos = wpos + (lane >> 2);  // first row of the warp / this thread's row

    for (int kt = 0; kt < n_kt; kt++) {
        const int buf = kt & 1;
        bf16 *Kb = Ks + buf * PT * LD, *Vb = Vs + buf * PT * LD;
        bf16 *Kn = Ks + (buf ^ 1) * PT * LD, *Vn = Vs + (buf ^ 1) * PT * LD;
        if (kt > 0) {  // tile kt landed (bf16: own cp.async; fp8: stored last iteration), all done with kt-1
            if (!FP8) cp_async_wait<0>();
            __syncthreads();
        }
        const bool more = kt + 1 < n_kt;
        if (more) {
            if (FP8) {
                fa_fetch_fp8<HD>(c, kt + 1, (const uint8_t *)kc, (const uint8_t *)vc, pre);
            } else {
                fa_load_bf16<HD>(c, kt + 1, (const bf16 *)kc, (const bf16 *)vc, Kn, Vn);
                cp_async_commit();
            }
        }
        const int k0 = kt * PT;
        // skip tiles wholly above this warp's rows, and warps whose rows are all past nq
        if (k0 <= wpos + 15 && w * 16 < nq)
            fa_tile<HD>(qf, Kb, Vb, k0, k0 + PT - 1 > wpos, qpos, sl2, o, m, l);
        if (FP8 && more) fa_store_fp8<HD>(pre, kind, Kn, Vn);
    }

#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        const int r = w * 16 + (lane >> 2) + i * 8;
        if (r >= nq) continue;
        const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
        bf16 *orow = out + ((size_t)(q0 + qi0 + r) * n_heads + h) * HD + (lane & 3) * 2;
#pragma unroll
        for (int n = 0; n < HD / 8; n++)
            *(__nv_bfloat162 *)(orow + n * 8) = __floats2bfloat162_rn(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
}

template <int HD, bool FP8>
static void launch_prefill(const bf16_t *q, const struct cu_step *s, const int32_t *tiles, int n_tiles,
                           int n_heads, int n_kv, int bs, int kv_type, const void *kc, const void *vc,
                           bf16_t *out, cudaStream_t st) {
    const size_t sm = fa_smem_bytes<HD>();
    static __thread int attr_set;
    if (!attr_set) {
        if (CU_CHECK(cudaFuncSetAttribute(k_attn_prefill<HD, FP8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)sm)))
            return;
        attr_set = 1;
    }
    k_attn_prefill<HD, FP8><<<(unsigned)n_tiles * (unsigned)n_heads, PF_WARPS * 32, sm, st>>>(
        (const bf16 *)q, *s, tiles, n_tiles, n_heads, n_kv, bs, kv_type, kc, vc, (bf16 *)out);
    CU_LAUNCHED("attn_prefill");
}

extern "C" void cu_attn_prefill(const bf16_t *q, const struct cu_step *s, const int32_t *tiles, int n_tiles,
                                int n_heads, int n_kv, int hd, int block_size, int kv_type, const void *k_cache,
                                const void *v_cache, bf16_t *out, cudaStream_t st) {
    if (n_tiles <= 0) return;
    const bool fp8 = kv_type != CU_KV_BF16;
#define PF_ARGS q, s, tiles, n_tiles, n_heads, n_kv, block_size, kv_type, k_cache, v_cache, out, st
    if (hd == 128) {
        if (fp8) launch_prefill<128, true>(PF_ARGS);
        else launch_prefill<128, false>(PF_ARGS);
    } else {
        if (fp8) launch_prefill<64, true>(PF_ARGS);
        else launch_prefill<64, false>(PF_ARGS);
    }
#undef PF_ARGS
}
