// q/k/v bias + rotate-half RoPE + paged KV store. Grid (T, head groups): a block of
// ROPE_WARPS warps serves ROPE_WARPS heads of one token, a warp per head (q heads, then k
// heads, then v heads, over the qkv row). Each lane handles pairs (i, i + 1) of rotation
// index i < hd / 2 with bf16x2 loads of both halves. The block first tabulates
// inv_freq[i] = 1 / theta^(2i / hd) in shared memory (constant: before pdl_wait, with the
// bias loads), then cos/sin(pos * inv_freq[i]) once per block after it. Same formula and
// float precision as before, so the numerics match the CPU backend's RoPE.
#include <cuda_bf16.h>

#include "backend/cuda/kv_cache.cuh"
#include "backend/cuda/pdl.cuh"

typedef __nv_bfloat16 bf16;
#define ROPE_WARPS 4
#define ROPE_MAX_HALF 256  // hd up to 512

__device__ __forceinline__ float2 bf2f(const bf16 *p) { return __bfloat1622float2(*(const __nv_bfloat162 *)p); }

// Requires hd % 4 == 0 and an even ldqkv (bf16x2 accesses).
__global__ void __launch_bounds__(ROPE_WARPS * 32)
k_qkv_rope_store(const bf16 *qkv, int ldqkv, const float *bias, struct cu_step s, int n_heads, int n_kv, int hd,
                 float theta, int bs, int kv_type, void *kc, void *vc, bf16 *q_out) {
    __shared__ float inv_freq[ROPE_MAX_HALF];
    __shared__ float2 cs_sn[ROPE_MAX_HALF];
    pdl_launch_dependents();
    const int t = blockIdx.x, half = hd / 2, lane = threadIdx.x & 31;
    const int h = blockIdx.y * ROPE_WARPS + (threadIdx.x >> 5);  // this warp's head, q | k | v
    const bool active = h < n_heads + 2 * n_kv, rot = h < n_heads + n_kv;
    for (int i = threadIdx.x; i < half; i += blockDim.x) inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
    // Per lane: pairs i = 2 * lane + 64 * j; the bias of both halves of the head's columns.
    const int c0 = h * hd;  // q, k and v heads follow each other in the row
    float2 b0[ROPE_MAX_HALF / 64], b1[ROPE_MAX_HALF / 64];
#pragma unroll
    for (int j = 0; j < ROPE_MAX_HALF / 64; j++) {
        int i = 2 * lane + 64 * j;
        b0[j] = b1[j] = make_float2(0.f, 0.f);
        if (active && bias && i < half) {
            b0[j] = *(const float2 *)(bias + c0 + i);
            b1[j] = *(const float2 *)(bias + c0 + half + i);
        }
    }
    pdl_wait();
    const int seq = s.tok_seq[t], pos = s.tok_pos[t];
    const int blk = s.block_tables[(size_t)seq * s.bt_stride + pos / bs], slot = pos % bs;
    __syncthreads();  // inv_freq
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, cs;
        sincosf((float)pos * inv_freq[i], &sn, &cs);
        cs_sn[i] = make_float2(cs, sn);
    }
    __syncthreads();
    if (!active) return;
    const bf16 *row = qkv + (size_t)t * ldqkv + c0;
#pragma unroll
    for (int j = 0; j < ROPE_MAX_HALF / 64; j++) {
        const int i = 2 * lane + 64 * j;
        if (i >= half) break;
        float2 a = bf2f(row + i), b = bf2f(row + half + i);
        a.x += b0[j].x, a.y += b0[j].y, b.x += b1[j].x, b.y += b1[j].y;
        if (!rot) {  // v: both halves straight into the cache
            const int kvh = h - n_heads - n_kv;
            kv_store(vc, kv_index(blk, kvh, slot, i, n_kv, bs, hd), kv_type, a.x);
            kv_store(vc, kv_index(blk, kvh, slot, i + 1, n_kv, bs, hd), kv_type, a.y);
            kv_store(vc, kv_index(blk, kvh, slot, half + i, n_kv, bs, hd), kv_type, b.x);
            kv_store(vc, kv_index(blk, kvh, slot, half + i + 1, n_kv, bs, hd), kv_type, b.y);
            continue;
        }
        const float2 f0 = cs_sn[i], f1 = cs_sn[i + 1];
        const float ra0 = a.x * f0.x - b.x * f0.y, rb0 = b.x * f0.x + a.x * f0.y;
        const float ra1 = a.y * f1.x - b.y * f1.y, rb1 = b.y * f1.x + a.y * f1.y;
        if (h < n_heads) {
            bf16 *q = q_out + ((size_t)t * n_heads + h) * hd;
            *(__nv_bfloat162 *)(q + i) = __floats2bfloat162_rn(ra0, ra1);
            *(__nv_bfloat162 *)(q + half + i) = __floats2bfloat162_rn(rb0, rb1);
        } else {
            const int kvh = h - n_heads;
            kv_store(kc, kv_index(blk, kvh, slot, i, n_kv, bs, hd), kv_type, ra0);
            kv_store(kc, kv_index(blk, kvh, slot, i + 1, n_kv, bs, hd), kv_type, ra1);
            kv_store(kc, kv_index(blk, kvh, slot, half + i, n_kv, bs, hd), kv_type, rb0);
            kv_store(kc, kv_index(blk, kvh, slot, half + i + 1, n_kv, bs, hd), kv_type, rb1);
        }
    }
}

extern "C" void cu_qkv_rope_store(const bf16_t *qkv, int ldqkv, const float *bias, const struct cu_step *s,
                                  int n_heads, int n_kv, int hd, float theta, int block_size, int kv_type,
                                  void *k_cache, void *v_cache, bf16_t *q_out, cudaStream_t st) {
    if (s->T <= 0) return;
    if (hd % 4 || hd / 2 > ROPE_MAX_HALF || ldqkv % 2 || ((uintptr_t)qkv & 3) || ((uintptr_t)bias & 7)) {
        cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "qkv_rope_store: unsupported head_dim or alignment");
        return;
    }
    dim3 grid(s->T, (n_heads + 2 * n_kv + ROPE_WARPS - 1) / ROPE_WARPS);
    CU_CHECK(pdl_launch(k_qkv_rope_store, grid, ROPE_WARPS * 32, 0, st, (const bf16 *)qkv, ldqkv, bias, *s, n_heads,
                        n_kv, hd, theta, block_size, kv_type, k_cache, v_cache, (bf16 *)q_out));
}

__global__ void k_rope_table(float2 *cs, int n_pos, int hd, float theta) {
    const int half = hd / 2;
    const size_t n = (size_t)n_pos * half;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const int pos = (int)(e / half), i = (int)(e % half);
        const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);  // as k_qkv_rope_store
        float sn, c;
        sincosf((float)pos * inv_freq, &sn, &c);
        cs[e] = make_float2(c, sn);
    }
}

extern "C" void cu_rope_table(float *cos_sin, int n_pos, int hd, float theta, cudaStream_t st) {
    if (n_pos <= 0 || hd <= 0) return;
    const size_t n = (size_t)n_pos * (hd / 2), blocks = (n + 255) / 256;
    k_rope_table<<<blocks > 65535 ? 65535 : (unsigned)blocks, 256, 0, st>>>((float2 *)cos_sin, n_pos, hd, theta);
    CU_LAUNCHED("rope_table");
}
