// Loads and stores of KV cache elements in bf16 / fp8 (e4m3, e5m2; scale 1.0).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "backend/cuda/cuda_ops.h"

__device__ __forceinline__ void kv_store(void *cache, size_t idx, int kv_type, float v) {
    if (kv_type == CU_KV_BF16)
        ((__nv_bfloat16 *)cache)[idx] = __float2bfloat16(v);
    else if (kv_type == CU_KV_E4M3)
        ((__nv_fp8_e4m3 *)cache)[idx] = __nv_fp8_e4m3(v);
    else
        ((__nv_fp8_e5m2 *)cache)[idx] = __nv_fp8_e5m2(v);
}

// Loads 8 consecutive elements starting at idx (idx multiple of 8) as floats.
__device__ __forceinline__ void kv_load8(const void *cache, size_t idx, int kv_type, float *o) {
    if (kv_type == CU_KV_BF16) {
        uint4 u = *(const uint4 *)((const __nv_bfloat16 *)cache + idx);
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __bfloat1622float2(h[i]);
            o[2 * i] = f.x;
            o[2 * i + 1] = f.y;
        }
    } else {
        uint2 u = *(const uint2 *)((const uint8_t *)cache + idx);
        const uint8_t *b = (const uint8_t *)&u;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            __half_raw hr = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b[i],
                                                    kv_type == CU_KV_E4M3 ? __NV_E4M3 : __NV_E5M2);
            o[i] = __half2float(__half(hr));
        }
    }
}

// Element index of (block, kv head, slot, dim) in one layer's K or V cache.
__device__ __forceinline__ size_t kv_index(int blk, int kvh, int slot, int d, int n_kv, int bs, int hd) {
    return (((size_t)blk * n_kv + kvh) * bs + slot) * hd + d;
}
