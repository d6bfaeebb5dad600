// Stores of KV cache elements in bf16 / fp8 (e4m3, e5m2; scale 1.0) and the cache layout.
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

// Element index of (block, kv head, slot, dim) in one layer's K or V cache.
__device__ __forceinline__ size_t kv_index(int blk, int kvh, int slot, int d, int n_kv, int bs, int hd) {
    return (((size_t)blk * n_kv + kvh) * bs + slot) * hd + d;
}
