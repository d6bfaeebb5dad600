// Dense bf16 GEMV for few rows (decode): y (M, ldy) = x (M, in) . W^T (+ bias), W (out, in)
// row-major bf16 as stored in the checkpoint. A block owns DG_ROWS output rows; its 8 warps
// split the input dimension, each lane streaming 16-byte vectors of the DG_ROWS weight rows
// (DG_ROWS * DG_UNROLL loads in flight per thread) and reusing each 16-byte activation load
// for DG_ROWS rows. Warp shuffles then shared memory reduce in a fixed order, so results
// are deterministic. Measured against cuBLAS in bench/cuda_ops_bench. Launched with
// pdl_launch: each thread issues its first weight loads before pdl_wait (weights are
// constant), the activations only after.
#include <cuda_bf16.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

typedef __nv_bfloat16 bf16;
#define DG_WARPS 8
#define DG_ROWS 4
#define DG_UNROLL 2

__device__ __forceinline__ void bf8(const int4 v, float f[8]) {
    const uint32_t u[4] = {(uint32_t)v.x, (uint32_t)v.y, (uint32_t)v.z, (uint32_t)v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(u[i] << 16);
        f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}

// The weight vectors of one loop step starting at v0 (zeros past the end).
__device__ __forceinline__ void dg_load_w(int4 (&wq)[DG_UNROLL][DG_ROWS], const int4 *Wv, int nv, int out, int o0,
                                          int v0) {
#pragma unroll
    for (int u = 0; u < DG_UNROLL; u++)
#pragma unroll
        for (int r = 0; r < DG_ROWS; r++) {
            int v = v0 + u * DG_WARPS * 32, o = min(o0 + r, out - 1);
            wq[u][r] = v < nv ? __ldcs(Wv + (size_t)o * nv + v) : make_int4(0, 0, 0, 0);
        }
}

template <int M>
__global__ void __launch_bounds__(DG_WARPS * 32)
k_bf16_gemv(const bf16 *__restrict__ W, int in, int out, const bf16 *__restrict__ x, const float *__restrict__ bias,
            void *y, int ldy, bool f32_out) {
    __shared__ float red[DG_WARPS][M][DG_ROWS];
    pdl_launch_dependents();
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nv = in / 8;
    const int o0 = blockIdx.x * DG_ROWS;
    float acc[M][DG_ROWS];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int r = 0; r < DG_ROWS; r++) acc[m][r] = 0;
    const int4 *Wv = (const int4 *)W, *xv = (const int4 *)x;
    int4 wq[DG_UNROLL][DG_ROWS];
    int v0 = threadIdx.x;
    dg_load_w(wq, Wv, nv, out, o0, v0);  // the first step's weights, before the wait
    pdl_wait();
    while (v0 < nv) {
#pragma unroll
        for (int u = 0; u < DG_UNROLL; u++) {
            int v = v0 + u * DG_WARPS * 32;
            if (v >= nv) break;
            float wf[DG_ROWS][8];
#pragma unroll
            for (int r = 0; r < DG_ROWS; r++) bf8(wq[u][r], wf[r]);
#pragma unroll
            for (int m = 0; m < M; m++) {
                float xf[8];
                bf8(__ldg(xv + (size_t)m * nv + v), xf);
#pragma unroll
                for (int r = 0; r < DG_ROWS; r++)
#pragma unroll
                    for (int j = 0; j < 8; j++) acc[m][r] += xf[j] * wf[r][j];
            }
        }
        v0 += DG_WARPS * 32 * DG_UNROLL;
        if (v0 < nv) dg_load_w(wq, Wv, nv, out, o0, v0);
    }
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int r = 0; r < DG_ROWS; r++) {
            float s = acc[m][r];
            for (int d = 16; d > 0; d >>= 1) s += __shfl_xor_sync(0xffffffffu, s, d);
            if (lane == 0) red[w][m][r] = s;
        }
    __syncthreads();
    if (threadIdx.x < M * DG_ROWS) {
        int m = threadIdx.x / DG_ROWS, r = threadIdx.x % DG_ROWS, o = o0 + r;
        if (o >= out) return;
        float s = bias ? bias[o] : 0.f;
        for (int ww = 0; ww < DG_WARPS; ww++) s += red[ww][m][r];
        if (f32_out)
            ((float *)y)[(size_t)m * ldy + o] = s;
        else
            ((bf16 *)y)[(size_t)m * ldy + o] = __float2bfloat16(s);
    }
}

template <int M>
static void launch_dense(const bf16_t *W, int in, int out, const bf16_t *x, const float *bias, void *y, int ldy,
                         bool f32_out, cudaStream_t st) {
    CU_CHECK(pdl_launch(k_bf16_gemv<M>, (out + DG_ROWS - 1) / DG_ROWS, DG_WARPS * 32, 0, st, (const bf16 *)W, in, out,
                        (const bf16 *)x, bias, y, ldy, f32_out));
}

extern "C" void cu_bf16_gemv(const bf16_t *W, int in, int out, const bf16_t *x, int M, const float *bias, void *y,
                             int ldy, bool f32_out, cudaStream_t st) {
    if (M <= 0 || out <= 0) return;
    if (M > CU_DENSE_GEMV_MAX_ROWS || in % 8) {
        cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "bf16 gemv: unsupported shape");
        return;
    }
    switch (M) {
    case 1: launch_dense<1>(W, in, out, x, bias, y, ldy, f32_out, st); break;
    case 2: launch_dense<2>(W, in, out, x, bias, y, ldy, f32_out, st); break;
    case 3: launch_dense<3>(W, in, out, x, bias, y, ldy, f32_out, st); break;
    case 4: launch_dense<4>(W, in, out, x, bias, y, ldy, f32_out, st); break;
    case 5: launch_dense<5>(W, in, out, x, bias, y, ldy, f32_out, st); break;
    case 6: launch_dense<6>(W, in, out, x, bias, y, ldy, f32_out, st); break;
    case 7: launch_dense<7>(W, in, out, x, bias, y, ldy, f32_out, st); break;
    default: launch_dense<8>(W, in, out, x, bias, y, ldy, f32_out, st); break;
    }
}
