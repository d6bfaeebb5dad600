// Paged GQA attention for decode (one new token per sequence), Flash-Decoding style:
// grid (split, kv head, sequence); a block reads its share of the sequence's keys once and
// serves all G = n_heads / n_kv query heads of that kv head; warps take groups of DEC_KEYS
// consecutive keys round-robin (all of a group's K and V loads are issued before any is
// used, so each warp keeps DEC_KEYS rows in flight instead of one) with an online softmax
// each, then the block merges its warps and writes one partial (max, sum, weighted values)
// per head; k_attn_reduce merges the splits. fp8 caches convert two elements per
// instruction (cvt.f16x2.e4m3x2 / e5m2x2).
#include <math.h>
#include <cuda_bf16.h>

#include "backend/cuda/kv_cache.cuh"

typedef __nv_bfloat16 bf16;
#define DEC_WARPS 4
#define MAX_G 8
#define DEC_KEYS 4

// Loads N (2 or 4) consecutive cache elements as floats.
template <int N>
__device__ __forceinline__ void kv_loadn(const void *cache, size_t idx, int kv_type, float *o) {
    if (kv_type == CU_KV_BF16) {
        const __nv_bfloat162 *p = (const __nv_bfloat162 *)((const bf16 *)cache + idx);
        if (N == 4) {
            uint2 u = *(const uint2 *)p;
            const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
            float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
            o[0] = a.x; o[1] = a.y; o[2] = b.x; o[3] = b.y;
        } else {
            float2 a = __bfloat1622float2(*p);
            o[0] = a.x; o[1] = a.y;
        }
    } else {
        const uint8_t *p = (const uint8_t *)cache + idx;
        uint32_t u = N == 4 ? *(const uint32_t *)p : *(const uint16_t *)p;
        const __nv_fp8_interpretation_t fmt = kv_type == CU_KV_E4M3 ? __NV_E4M3 : __NV_E5M2;
#pragma unroll
        for (int i = 0; i < N / 2; i++) {  // low byte = lower index
            __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)((u >> (16 * i)) & 0xffff), fmt);
            float2 f = __half22float2(__half2(hr));
            o[2 * i] = f.x;
            o[2 * i + 1] = f.y;
        }
    }
}

template <int HD>
__global__ void __launch_bounds__(DEC_WARPS * 32)
k_attn_decode(const bf16 *q, struct cu_step s, const int32_t *seqs, int n_heads, int n_kv, int bs,
              int kv_type, const void *kc, const void *vc, int n_splits, float *partial) {
    constexpr int DPL = HD / 32;
    const int sp = blockIdx.x, kvh = blockIdx.y, i = blockIdx.z, G = n_heads / n_kv;
    const int seq = seqs[i], L = s.seq_len[seq], t = s.seq_q0[seq];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const float scale = rsqrtf((float)HD) * 1.4426950408889634f;  // log2(e) folded in
    const int chunk = (L + n_splits - 1) / n_splits;
    const int j0 = sp * chunk, j1 = min(L, j0 + chunk);
    const int32_t *bt = s.block_tables + (size_t)seq * s.bt_stride;

    float qr[MAX_G][DPL], acc[MAX_G][DPL], m[MAX_G], l[MAX_G];
#pragma unroll
    for (int g = 0; g < MAX_G; g++) {
        m[g] = -INFINITY;
        l[g] = 0;
#pragma unroll
        for (int d = 0; d < DPL; d++) {
            acc[g][d] = 0;
            qr[g][d] = g < G ? __bfloat162float(q[((size_t)t * n_heads + kvh * G + g) * HD + lane * DPL + d]) * scale : 0.f;
        }
    }
    for (int j = j0 + w * DEC_KEYS; j < j1; j += DEC_WARPS * DEC_KEYS) {
        const int nk = min(DEC_KEYS, j1 - j);
        float kr[DEC_KEYS][DPL], vr[DEC_KEYS][DPL];
#pragma unroll
        for (int u = 0; u < DEC_KEYS; u++) {
            if (u < nk) {
                size_t base = kv_index(bt[(j + u) / bs], kvh, (j + u) % bs, lane * DPL, n_kv, bs, HD);
                kv_loadn<DPL>(kc, base, kv_type, kr[u]);
                kv_loadn<DPL>(vc, base, kv_type, vr[u]);
            } else {
#pragma unroll
                for (int d = 0; d < DPL; d++) kr[u][d] = vr[u][d] = 0;
            }
        }
#pragma unroll
        for (int g = 0; g < MAX_G; g++) {
            if (g >= G) break;
            float dot[DEC_KEYS];
#pragma unroll
            for (int u = 0; u < DEC_KEYS; u++) {
                dot[u] = 0;
#pragma unroll
                for (int d = 0; d < DPL; d++) dot[u] += qr[g][d] * kr[u][d];
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
#pragma unroll
                for (int u = 0; u < DEC_KEYS; u++) dot[u] += __shfl_xor_sync(0xffffffffu, dot[u], o);
#pragma unroll
            for (int u = 0; u < DEC_KEYS; u++) {
                if (u >= nk) break;
                float mn = fmaxf(m[g], dot[u]), corr = exp2f(m[g] - mn), p = exp2f(dot[u] - mn);
                m[g] = mn;
                l[g] = l[g] * corr + p;
#pragma unroll
                for (int d = 0; d < DPL; d++) acc[g][d] = acc[g][d] * corr + p * vr[u][d];
            }
        }
    }
    // Merge the warps through shared memory.
    __shared__ float sm_m[DEC_WARPS][MAX_G], sm_l[DEC_WARPS][MAX_G];
    __shared__ float sm_acc[DEC_WARPS][MAX_G][HD];
#pragma unroll
    for (int g = 0; g < MAX_G; g++) {
        if (g >= G) break;
        if (lane == 0) {
            sm_m[w][g] = m[g];
            sm_l[w][g] = l[g];
        }
#pragma unroll
        for (int d = 0; d < DPL; d++) sm_acc[w][g][lane * DPL + d] = acc[g][d];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < G * HD; e += blockDim.x) {
        int g = e / HD, d = e % HD;
        float M = -INFINITY;
        for (int ww = 0; ww < DEC_WARPS; ww++) M = fmaxf(M, sm_m[ww][g]);
        float Ls = 0, A = 0;
        if (M > -INFINITY)
            for (int ww = 0; ww < DEC_WARPS; ww++) {
                float f = exp2f(sm_m[ww][g] - M);
                Ls += sm_l[ww][g] * f;
                A += sm_acc[ww][g][d] * f;
            }
        float *pp = partial + (((size_t)i * n_heads + kvh * G + g) * n_splits + sp) * (HD + 2);
        if (d == 0) {
            pp[0] = M;
            pp[1] = Ls;
        }
        pp[2 + d] = A;
    }
}

// grid (sequence, head), block hd threads.
__global__ void k_attn_reduce(const float *partial, struct cu_step s, const int32_t *seqs, int n_heads,
                              int hd, int n_splits, bf16 *out) {
    const int i = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
    const float *pp = partial + ((size_t)i * n_heads + h) * n_splits * (hd + 2);
    float M = -INFINITY;
    for (int sp = 0; sp < n_splits; sp++) M = fmaxf(M, pp[sp * (hd + 2)]);
    float Ls = 0, A = 0;
    for (int sp = 0; sp < n_splits; sp++) {
        const float *p = pp + sp * (hd + 2);
        if (p[0] == -INFINITY) continue;
        float f = exp2f(p[0] - M);
        Ls += p[1] * f;
        A += p[2 + d] * f;
    }
    int t = s.seq_q0[seqs[i]];
    out[((size_t)t * n_heads + h) * hd + d] = __float2bfloat16(Ls > 0 ? A / Ls : 0.f);
}

extern "C" void cu_attn_decode(const bf16_t *q, const struct cu_step *s, const int32_t *seqs, int n,
                               int n_heads, int n_kv, int hd, int block_size, int kv_type, const void *k_cache,
                               const void *v_cache, int n_splits, float *partial, bf16_t *out, cudaStream_t st) {
    if (n <= 0) return;
    dim3 grid(n_splits, n_kv, n);
    if (hd == 128)
        k_attn_decode<128><<<grid, DEC_WARPS * 32, 0, st>>>((const bf16 *)q, *s, seqs, n_heads, n_kv, block_size,
                                                            kv_type, k_cache, v_cache, n_splits, partial);
    else
        k_attn_decode<64><<<grid, DEC_WARPS * 32, 0, st>>>((const bf16 *)q, *s, seqs, n_heads, n_kv, block_size,
                                                           kv_type, k_cache, v_cache, n_splits, partial);
    CU_LAUNCHED("attn_decode");
    k_attn_reduce<<<dim3(n, n_heads), hd, 0, st>>>(partial, *s, seqs, n_heads, hd, n_splits, (bf16 *)out);
    CU_LAUNCHED("attn_reduce");
}
