// Reading a linear's output left as K-split partials (struct cu_parts, cuda_ops.h): the
// splits are added in order from 0 and rounded to bf16 once, as the GEMV itself would have
// (0 + part 0 + part 1 + ...), then widened back to float for the consumer's arithmetic.
#pragma once
#include <cuda_bf16.h>

#include "backend/cuda/cuda_ops.h"

__device__ __forceinline__ float parts_round(float s) { return __bfloat162float(__float2bfloat16(s)); }

// Elements (t, c) and (t, c + 1); c even, ld even.
__device__ __forceinline__ float2 parts_get2(const cu_parts &ps, int t, int c) {
    const float *p = ps.p + (size_t)t * ps.ld + c;
    float2 s = make_float2(0.f, 0.f);
    for (int k = 0; k < ps.n; k++) {
        const float2 v = __ldcg((const float2 *)(p + k * ps.kstride));
        s.x += v.x, s.y += v.y;
    }
    return make_float2(parts_round(s.x), parts_round(s.y));
}

// Elements (t, c .. c + 3); c % 4 == 0, ld % 4 == 0.
__device__ __forceinline__ float4 parts_get4(const cu_parts &ps, int t, int c) {
    const float *p = ps.p + (size_t)t * ps.ld + c;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int k = 0; k < ps.n; k++) {
        const float4 v = __ldcg((const float4 *)(p + k * ps.kstride));
        s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
    }
    return make_float4(parts_round(s.x), parts_round(s.y), parts_round(s.z), parts_round(s.w));
}

// Element (t, c).
__device__ __forceinline__ float parts_get1(const cu_parts &ps, int t, int c) {
    const float *p = ps.p + (size_t)t * ps.ld + c;
    float s = 0.f;
    for (int k = 0; k < ps.n; k++) s += __ldcg(p + k * ps.kstride);
    return parts_round(s);
}
