// Reading a linear's output left as K-split partials (struct cu_parts, cuda_ops.h): the
// splits are added in order from 0 and rounded to bf16 once, as the GEMV itself would have
// (0 + part 0 + part 1 + ...), then widened back to float for the consumer's arithmetic.
// The loads go out PARTS_BATCH splits at a time (the adds keep their order), so a sum costs
// about n / PARTS_BATCH L2 round trips, not n.
#pragma once
#include <cuda_bf16.h>

#include "backend/cuda/cuda_ops.h"

#define PARTS_BATCH 4

__device__ __forceinline__ float parts_round(float s) { return __bfloat162float(__float2bfloat16(s)); }

// s += splits k0 .. k0 + PARTS_BATCH - 1 (those < n) of the N consecutive floats at
// ps.p + off (N = 1, 2 or 4; off aligned to N floats).
template <int N>
__device__ __forceinline__ void parts_add(const cu_parts &ps, size_t off, int k0, float *s) {
    float v[PARTS_BATCH][N];
#pragma unroll
    for (int j = 0; j < PARTS_BATCH; j++) {
        const float *p = ps.p + off + (size_t)(k0 + j) * ps.kstride;
        const bool ok = k0 + j < ps.n;
        if (N == 4) {
            const float4 x = ok ? __ldcg((const float4 *)p) : make_float4(0.f, 0.f, 0.f, 0.f);
            v[j][0] = x.x, v[j][N > 1 ? 1 : 0] = x.y, v[j][N > 2 ? 2 : 0] = x.z, v[j][N > 3 ? 3 : 0] = x.w;
        } else if (N == 2) {
            const float2 x = ok ? __ldcg((const float2 *)p) : make_float2(0.f, 0.f);
            v[j][0] = x.x, v[j][N > 1 ? 1 : 0] = x.y;
        } else {
            v[j][0] = ok ? __ldcg(p) : 0.f;
        }
    }
#pragma unroll
    for (int j = 0; j < PARTS_BATCH; j++)
        if (k0 + j < ps.n)
#pragma unroll
            for (int e = 0; e < N; e++) s[e] += v[j][e];
}

// Elements (t, c .. c + N - 1), summed and rounded.
template <int N>
__device__ __forceinline__ void parts_get(const cu_parts &ps, int t, int c, float *out) {
    const size_t off = (size_t)t * ps.ld + c;
#pragma unroll
    for (int e = 0; e < N; e++) out[e] = 0.f;
    for (int k0 = 0; k0 < ps.n; k0 += PARTS_BATCH) parts_add<N>(ps, off, k0, out);
#pragma unroll
    for (int e = 0; e < N; e++) out[e] = parts_round(out[e]);
}
