// q/k/v bias + rotate-half RoPE + paged KV store, one block per token.
#include <cuda_bf16.h>

#include "backend/cuda/kv_cache.cuh"

typedef __nv_bfloat16 bf16;

__global__ void k_qkv_rope_store(const bf16 *qkv, int ldqkv, const float *bias, struct cu_step s,
                                 int n_heads, int n_kv, int hd, float theta, int bs, int kv_type,
                                 void *kc, void *vc, bf16 *q_out) {
    int t = blockIdx.x, half = hd / 2;
    int seq = s.tok_seq[t], pos = s.tok_pos[t];
    int blk = s.block_tables[(size_t)seq * s.bt_stride + pos / bs], slot = pos % bs;
    const bf16 *row = qkv + (size_t)t * ldqkv;
    int n_pairs = (n_heads + n_kv) * half;
    for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) {
        int h = p / half, i = p % half;
        int c0 = h * hd + i, c1 = c0 + half;
        float a = __bfloat162float(row[c0]), b = __bfloat162float(row[c1]);
        if (bias) {
            a += bias[c0];
            b += bias[c1];
        }
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
        float sn, cs;
        sincosf((float)pos * inv_freq, &sn, &cs);
        float ra = a * cs - b * sn, rb = b * cs + a * sn;
        if (h < n_heads) {
            bf16 *q = q_out + (size_t)t * n_heads * hd + h * hd;
            q[i] = __float2bfloat16(ra);
            q[i + half] = __float2bfloat16(rb);
        } else {
            int kvh = h - n_heads;
            kv_store(kc, kv_index(blk, kvh, slot, i, n_kv, bs, hd), kv_type, ra);
            kv_store(kc, kv_index(blk, kvh, slot, i + half, n_kv, bs, hd), kv_type, rb);
        }
    }
    int vbase = (n_heads + n_kv) * hd;
    for (int c = threadIdx.x; c < n_kv * hd; c += blockDim.x) {
        float v = __bfloat162float(row[vbase + c]) + (bias ? bias[vbase + c] : 0.0f);
        kv_store(vc, kv_index(blk, c / hd, slot, c % hd, n_kv, bs, hd), kv_type, v);
    }
}

extern "C" void cu_qkv_rope_store(const bf16_t *qkv, int ldqkv, const float *bias, const struct cu_step *s,
                                  int n_heads, int n_kv, int hd, float theta, int block_size, int kv_type,
                                  void *k_cache, void *v_cache, bf16_t *q_out, cudaStream_t st) {
    if (s->T <= 0) return;
    k_qkv_rope_store<<<s->T, 256, 0, st>>>((const bf16 *)qkv, ldqkv, bias, *s, n_heads, n_kv, hd, theta,
                                           block_size, kv_type, k_cache, v_cache, (bf16 *)q_out);
    CU_LAUNCHED("qkv_rope_store");
}
