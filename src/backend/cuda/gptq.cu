// GPTQ int4 weight-only GEMM.
// Few rows (decode, M <= 8): a bandwidth-bound GEMV streaming the checkpoint layout
// qweight [in/8][out] with 16-byte loads (4 output columns x 8 input rows per thread per
// load), 16 loads in flight per thread (one 128-row chunk). One block per 32 output columns
// holds up to 64 row streams (8 lanes each) covering all of K, reduced in shared memory and
// written with the bias in the same kernel: one launch per linear. Activations come from
// L1 (bf16, broadcast to the 8 lanes of a stream); with swiglu_in they are formed on the fly
// from the gate|up buffer (SwiGLU fused into the down projection). Nibbles become floats
// without conversions: the nibble is OR'd into the mantissa of 2^23 and (2^23 + zero)
// subtracted, giving (q - z) exactly; the group scale is applied once per group.
// Many rows: k_dequant writes W^T (in, out) bf16 for cuBLAS.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"

typedef __nv_bfloat16 bf16;
#define GV_COLS 32     // output columns per block: 8 lanes x 4 columns
#define GV_MAX_STREAMS 64

// Row streams per block: each owns whole 128-row chunks of K (16 packed rows).
static void gemv_shape(const struct cu_gptq *l, int *streams, int *cps) {
    int n_chunks = l->in / 128;
    *cps = (n_chunks + GV_MAX_STREAMS - 1) / GV_MAX_STREAMS;
    *streams = (n_chunks + *cps - 1) / *cps;
}

// Eight consecutive activations of row m starting at k, as floats; with ACT the input is the
// (M, 2*in) gate|up buffer and the activation silu(gate) * up is formed on the fly.
template <bool ACT>
__device__ __forceinline__ void load_x8(const bf16 *x, int in, int m, int k, float *o) {
    if (!ACT) {
        uint4 u = __ldg((const uint4 *)(x + (size_t)m * in + k));
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __bfloat1622float2(h[i]);
            o[2 * i] = f.x;
            o[2 * i + 1] = f.y;
        }
    } else {
        uint4 ug = __ldg((const uint4 *)(x + (size_t)m * 2 * in + k));
        uint4 uu = __ldg((const uint4 *)(x + (size_t)m * 2 * in + in + k));
        const __nv_bfloat162 *g = (const __nv_bfloat162 *)&ug, *u = (const __nv_bfloat162 *)&uu;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 a = __bfloat1622float2(g[i]), b = __bfloat1622float2(u[i]);
            o[2 * i] = a.x / (1.0f + __expf(-a.x)) * b.x;
            o[2 * i + 1] = a.y / (1.0f + __expf(-a.y)) * b.y;
        }
    }
}

template <int M, bool ACT>
__global__ void __launch_bounds__(512)
k_gptq_gemv(const int32_t *__restrict__ qweight, const uint32_t *__restrict__ sz, int in, int out, int gs,
            const bf16 *__restrict__ x, int streams, int cps, const float *__restrict__ bias, bf16 *__restrict__ y,
            int ldy) {
    extern __shared__ float red[];  // [streams][M][GV_COLS]
    const int lane = threadIdx.x & 31, s = (threadIdx.x >> 5) * 4 + (lane >> 3), cl = lane & 7;
    const int col = blockIdx.x * GV_COLS + cl * 4, n_chunks = in / 128;
    float acc[M][4];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[m][c] = 0;
    // Few rows: 16 loads in flight and the group scale applied once per group (tmp). More
    // rows: 8 loads at a time and the scale folded into the weights, to stay in registers.
    constexpr int R = M <= 2 ? 16 : 8;
    constexpr bool FOLD = M > 2;
    const int c_end = min(n_chunks, (s + 1) * cps);
    for (int ch = s * cps; s < streams && col < out && ch < c_end; ch++) {
        float tmp[M][4], zf[4], sc[4];
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int c = 0; c < 4; c++) tmp[m][c] = 0;
#pragma unroll
        for (int h = 0; h < 16; h += R) {
            int4 qw[R];
#pragma unroll
            for (int r = 0; r < R; r++) qw[r] = __ldg((const int4 *)(qweight + (size_t)(ch * 16 + h + r) * out + col));
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int ra = h + r;
                if (ra == 0 || (gs < 128 && ((ra * 8) % gs) == 0)) {
                    if (!FOLD && ra > 0)
#pragma unroll
                        for (int m = 0; m < M; m++)
#pragma unroll
                            for (int c = 0; c < 4; c++) {
                                acc[m][c] += sc[c] * tmp[m][c];
                                tmp[m][c] = 0;
                            }
                    uint4 v = __ldg((const uint4 *)(sz + (size_t)((ch * 128 + ra * 8) / gs) * out + col));
                    uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        sc[c] = __half2float(__ushort_as_half((unsigned short)(u[c] & 0xffff)));
                        zf[c] = 8388608.0f + (float)(u[c] >> 16);
                    }
                }
                int qv[4] = {qw[r].x, qw[r].y, qw[r].z, qw[r].w};
                float wf[4][8];
#pragma unroll
                for (int c = 0; c < 4; c++)
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        wf[c][j] = __int_as_float(0x4B000000 | ((qv[c] >> (4 * j)) & 0xF)) - zf[c];
                        if (FOLD) wf[c][j] *= sc[c];
                    }
#pragma unroll
                for (int m = 0; m < M; m++) {
                    float xv[8];
                    load_x8<ACT>(x, in, m, ch * 128 + ra * 8, xv);
#pragma unroll
                    for (int c = 0; c < 4; c++)
#pragma unroll
                        for (int j = 0; j < 8; j++) {
                            if (FOLD) acc[m][c] += xv[j] * wf[c][j];
                            else tmp[m][c] += xv[j] * wf[c][j];
                        }
                }
            }
        }
        if (!FOLD)
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[m][c] += sc[c] * tmp[m][c];
    }
    if (s < streams)
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int c = 0; c < 4; c++) red[(s * M + m) * GV_COLS + cl * 4 + c] = acc[m][c];
    __syncthreads();
    for (int e = threadIdx.x; e < M * GV_COLS; e += blockDim.x) {
        int m = e / GV_COLS, o = blockIdx.x * GV_COLS + e % GV_COLS;
        if (o >= out) continue;
        float sum = bias ? bias[o] : 0.f;
        for (int k = 0; k < streams; k++) sum += red[(k * M + m) * GV_COLS + e % GV_COLS];
        y[(size_t)m * ldy + o] = __float2bfloat16(sum);
    }
}

template <int M>
static void launch_gemv(const struct cu_gptq *l, const bf16_t *x, bool act, const float *bias, bf16_t *y, int ldy,
                        cudaStream_t st) {
    int streams, cps;
    gemv_shape(l, &streams, &cps);
    size_t sm = (size_t)streams * M * GV_COLS * sizeof(float);
    int threads = (streams + 3) / 4 * 32, blocks = (l->out + GV_COLS - 1) / GV_COLS;
    if (act) {
        if (sm > 48 * 1024 && CU_CHECK(cudaFuncSetAttribute(k_gptq_gemv<M, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm)))
            return;
        k_gptq_gemv<M, true><<<blocks, threads, sm, st>>>(l->qweight, l->sz, l->in, l->out, l->group_size,
                                                          (const bf16 *)x, streams, cps, bias, (bf16 *)y, ldy);
    } else {
        if (sm > 48 * 1024 && CU_CHECK(cudaFuncSetAttribute(k_gptq_gemv<M, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm)))
            return;
        k_gptq_gemv<M, false><<<blocks, threads, sm, st>>>(l->qweight, l->sz, l->in, l->out, l->group_size,
                                                           (const bf16 *)x, streams, cps, bias, (bf16 *)y, ldy);
    }
    CU_LAUNCHED("gptq_gemv");
}

extern "C" void cu_gptq_gemv(const struct cu_gptq *l, const bf16_t *x, int M, bool swiglu_in, const float *bias,
                             bf16_t *y, int ldy, cudaStream_t st) {
    switch (M) {
    case 1: launch_gemv<1>(l, x, swiglu_in, bias, y, ldy, st); break;
    case 2: launch_gemv<2>(l, x, swiglu_in, bias, y, ldy, st); break;
    case 3: launch_gemv<3>(l, x, swiglu_in, bias, y, ldy, st); break;
    case 4: launch_gemv<4>(l, x, swiglu_in, bias, y, ldy, st); break;
    case 5: launch_gemv<5>(l, x, swiglu_in, bias, y, ldy, st); break;
    case 6: launch_gemv<6>(l, x, swiglu_in, bias, y, ldy, st); break;
    case 7: launch_gemv<7>(l, x, swiglu_in, bias, y, ldy, st); break;
    case 8: launch_gemv<8>(l, x, swiglu_in, bias, y, ldy, st); break;
    default: break;
    }
}

// Thread per (packed row, column pair): 8 rows x 2 columns, bf16x2 stores coalesced along out.
__global__ void k_gptq_dequant(const int32_t *qweight, const uint32_t *sz, int in, int out, int gs, bf16 *wt) {
    const int pairs = out / 2;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < (size_t)(in / 8) * pairs;
         e += (size_t)gridDim.x * blockDim.x) {
        int k = (int)(e / pairs), o = (int)(e % pairs) * 2;
        int2 q = *(const int2 *)(qweight + (size_t)k * out + o);
        uint2 g = *(const uint2 *)(sz + (size_t)(k * 8 / gs) * out + o);
        float s0 = __half2float(__ushort_as_half((unsigned short)(g.x & 0xffff))), z0 = (float)(g.x >> 16);
        float s1 = __half2float(__ushort_as_half((unsigned short)(g.y & 0xffff))), z1 = (float)(g.y >> 16);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float a = ((float)((q.x >> (4 * j)) & 0xF) - z0) * s0, b = ((float)((q.y >> (4 * j)) & 0xF) - z1) * s1;
            *(__nv_bfloat162 *)(wt + (size_t)(k * 8 + j) * out + o) = __floats2bfloat162_rn(a, b);
        }
    }
}

extern "C" void cu_gptq_dequant(const struct cu_gptq *l, bf16_t *wt, cudaStream_t st) {
    size_t n = (size_t)(l->in / 8) * (l->out / 2);
    size_t blocks = (n + 255) / 256;
    k_gptq_dequant<<<blocks > 65535 ? 65535 : (unsigned)blocks, 256, 0, st>>>(l->qweight, l->sz, l->in, l->out,
                                                                              l->group_size, (bf16 *)wt);
    CU_LAUNCHED("gptq_dequant");
}
