// Dense bf16 GEMV for few rows (decode, M <= 8) and the lm_head: one warp per output row
// streams W's row with 16-byte loads (several in flight through unrolling), activations
// from L1 (bf16; or silu(gate) * up formed on the fly), warp-shuffle reduction, bias and
// bf16/f32 store in the same kernel.
#include <cuda_bf16.h>

#include "backend/cuda/cuda_ops.h"

typedef __nv_bfloat16 bf16;
#define DG_WARPS 8

__device__ __forceinline__ void unpack8(uint4 u, float *o) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        o[2 * i] = f.x;
        o[2 * i + 1] = f.y;
    }
}

template <int M, bool ACT>
__global__ void __launch_bounds__(DG_WARPS * 32)
k_dense_gemv(const bf16 *__restrict__ W, int in, int out, const bf16 *__restrict__ x, const float *__restrict__ bias,
             void *y, int ldy, bool f32_out) {
    const int lane = threadIdx.x & 31, o = blockIdx.x * DG_WARPS + (threadIdx.x >> 5);
    if (o >= out) return;
    const bf16 *w = W + (size_t)o * in;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0;
#pragma unroll 4
    for (int k = lane * 8; k < in; k += 256) {
        float wf[8];
        unpack8(__ldg((const uint4 *)(w + k)), wf);
#pragma unroll
        for (int m = 0; m < M; m++) {
            float xv[8];
            if (!ACT) {
                unpack8(__ldg((const uint4 *)(x + (size_t)m * in + k)), xv);
            } else {
                float g[8], u[8];
                unpack8(__ldg((const uint4 *)(x + (size_t)m * 2 * in + k)), g);
                unpack8(__ldg((const uint4 *)(x + (size_t)m * 2 * in + in + k)), u);
#pragma unroll
                for (int j = 0; j < 8; j++) xv[j] = g[j] / (1.0f + __expf(-g[j])) * u[j];
            }
#pragma unroll
            for (int j = 0; j < 8; j++) acc[m] += wf[j] * xv[j];
        }
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
        float v = acc[m];
#pragma unroll
        for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
        if (lane == 0) {
            if (bias) v += bias[o];
            if (f32_out) ((float *)y)[(size_t)m * ldy + o] = v;
            else ((bf16 *)y)[(size_t)m * ldy + o] = __float2bfloat16(v);
        }
    }
}

template <int M>
static void launch(const bf16_t *W, int in, int out, const bf16_t *x, bool act, const float *bias, void *y, int ldy,
                   bool f32, cudaStream_t st) {
    int blocks = (out + DG_WARPS - 1) / DG_WARPS;
    if (act)
        k_dense_gemv<M, true><<<blocks, DG_WARPS * 32, 0, st>>>((const bf16 *)W, in, out, (const bf16 *)x, bias, y, ldy, f32);
    else
        k_dense_gemv<M, false><<<blocks, DG_WARPS * 32, 0, st>>>((const bf16 *)W, in, out, (const bf16 *)x, bias, y, ldy, f32);
    CU_LAUNCHED("dense_gemv");
}

extern "C" void cu_dense_gemv(const bf16_t *W, int in, int out, const bf16_t *x, int M, bool swiglu_in,
                              const float *bias, void *y, int ldy, bool f32_out, cudaStream_t st) {
    switch (M) {
    case 1: launch<1>(W, in, out, x, swiglu_in, bias, y, ldy, f32_out, st); break;
    case 2: launch<2>(W, in, out, x, swiglu_in, bias, y, ldy, f32_out, st); break;
    case 3: launch<3>(W, in, out, x, swiglu_in, bias, y, ldy, f32_out, st); break;
    case 4: launch<4>(W, in, out, x, swiglu_in, bias, y, ldy, f32_out, st); break;
    case 5: launch<5>(W, in, out, x, swiglu_in, bias, y, ldy, f32_out, st); break;
    case 6: launch<6>(W, in, out, x, swiglu_in, bias, y, ldy, f32_out, st); break;
    case 7: launch<7>(W, in, out, x, swiglu_in, bias, y, ldy, f32_out, st); break;
    case 8: launch<8>(W, in, out, x, swiglu_in, bias, y, ldy, f32_out, st); break;
    default: break;
    }
}
