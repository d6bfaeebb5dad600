// GPTQ int4 weight-only GEMM.
// Few rows (decode, M <= 8): a bandwidth-bound GEMV streaming the checkpoint layout
// qweight [in/8][out] with 16-byte loads (4 output columns x 8 input rows per thread per
// load), 16 loads in flight per thread (one 128-row chunk), activations staged in shared
// memory as f32 and broadcast. Nibbles become floats without conversions: the nibble is OR'd
// into the mantissa of 2^23 and (2^23 + zero) subtracted, giving (q - z) exactly; the group
// scale is applied once per group. Grid (column tile of 128, K split); each warp owns whole
// chunks; warps reduce in shared memory, K splits in k_gemv_reduce (deterministic, + bias).
// Many rows: k_dequant writes W^T (in, out) bf16 for cuBLAS.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"

typedef __nv_bfloat16 bf16;
#define GV_WARPS 4
#define GV_COLS 128

static void gemv_shape(const struct cu_gptq *l, int *cpb, int *ks) {
    int n_chunks = l->in / 128, tiles = (l->out + GV_COLS - 1) / GV_COLS;
    *cpb = (long)tiles * n_chunks >= 4096 ? 8 : 4;
    *ks = (n_chunks + *cpb - 1) / *cpb;
}

extern "C" size_t cu_gemv_partial_floats(const struct cu_gptq *l, int M) {
    int cpb, ks;
    gemv_shape(l, &cpb, &ks);
    return (size_t)ks * M * l->out;
}

template <int M>
__global__ void __launch_bounds__(GV_WARPS * 32)
k_gptq_gemv(const int32_t *__restrict__ qweight, const uint32_t *__restrict__ sz, int in, int out, int gs,
            const bf16 *__restrict__ x, int cpb, float *__restrict__ partial) {
    extern __shared__ float xs[];  // [M][cpb*128], later [GV_WARPS][M][GV_COLS]
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n_chunks = in / 128, c_begin = blockIdx.y * cpb, c_end = min(n_chunks, c_begin + cpb);
    const int klen = (c_end - c_begin) * 128, kbase = c_begin * 128;
    const int col = blockIdx.x * GV_COLS + lane * 4;
    const bool valid = col < out;

    for (int e = threadIdx.x; e < M * klen; e += blockDim.x) {
        int m = e / klen, k = e % klen;
        xs[m * cpb * 128 + k] = __bfloat162float(x[(size_t)m * in + kbase + k]);
    }
    __syncthreads();

    float acc[M][4];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[m][c] = 0;

    for (int ch = c_begin + w; ch < c_end && valid; ch += GV_WARPS) {
        int4 qw[16];
#pragma unroll
        for (int r = 0; r < 16; r++) qw[r] = __ldg((const int4 *)(qweight + (size_t)(ch * 16 + r) * out + col));
        float tmp[M][4], zf[4], sc[4];
        auto load_group = [&](int row) {
            uint4 v = __ldg((const uint4 *)(sz + (size_t)(row / gs) * out + col));
            uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int c = 0; c < 4; c++) {
                sc[c] = __half2float(__ushort_as_half((unsigned short)(u[c] & 0xffff)));
                zf[c] = 8388608.0f + (float)(u[c] >> 16);
            }
        };
        load_group(ch * 128);
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int c = 0; c < 4; c++) tmp[m][c] = 0;
#pragma unroll
        for (int r = 0; r < 16; r++) {
            if (r > 0 && gs < 128 && ((r * 8) % gs) == 0) {
#pragma unroll
                for (int m = 0; m < M; m++)
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        acc[m][c] += sc[c] * tmp[m][c];
                        tmp[m][c] = 0;
                    }
                load_group(ch * 128 + r * 8);
            }
            int qv[4] = {qw[r].x, qw[r].y, qw[r].z, qw[r].w};
            float wf[4][8];
#pragma unroll
            for (int c = 0; c < 4; c++)
#pragma unroll
                for (int j = 0; j < 8; j++)
                    wf[c][j] = __int_as_float(0x4B000000 | ((qv[c] >> (4 * j)) & 0xF)) - zf[c];
            const int xo = (ch - c_begin) * 128 + r * 8;
#pragma unroll
            for (int m = 0; m < M; m++) {
                float4 a = *(const float4 *)(xs + m * cpb * 128 + xo), b = *(const float4 *)(xs + m * cpb * 128 + xo + 4);
                float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
                for (int c = 0; c < 4; c++)
#pragma unroll
                    for (int j = 0; j < 8; j++) tmp[m][c] += xv[j] * wf[c][j];
            }
        }
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[m][c] += sc[c] * tmp[m][c];
    }
    __syncthreads();
    float *red = xs;
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int c = 0; c < 4; c++) red[(w * M + m) * GV_COLS + lane * 4 + c] = acc[m][c];
    __syncthreads();
    const int oc = blockIdx.x * GV_COLS + threadIdx.x;
    if (threadIdx.x < GV_COLS && oc < out)
        for (int m = 0; m < M; m++) {
            float s = 0;
            for (int ww = 0; ww < GV_WARPS; ww++) s += red[(ww * M + m) * GV_COLS + threadIdx.x];
            partial[((size_t)blockIdx.y * M + m) * out + oc] = s;
        }
}

__global__ void k_gemv_reduce(const float *partial, int ks, int M, int out, const float *bias, bf16 *y, int ldy) {
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < M * out; e += gridDim.x * blockDim.x) {
        int m = e / out, o = e % out;
        float s = bias ? bias[o] : 0.f;
        for (int k = 0; k < ks; k++) s += partial[((size_t)k * M + m) * out + o];
        y[(size_t)m * ldy + o] = __float2bfloat16(s);
    }
}

template <int M>
static void launch_gemv(const struct cu_gptq *l, const bf16_t *x, float *partial, cudaStream_t st) {
    int cpb, ks;
    gemv_shape(l, &cpb, &ks);
    size_t sm = (size_t)M * (cpb * 128 > GV_WARPS * GV_COLS ? cpb * 128 : GV_WARPS * GV_COLS) * sizeof(float);
    dim3 grid((l->out + GV_COLS - 1) / GV_COLS, ks);
    k_gptq_gemv<M><<<grid, GV_WARPS * 32, sm, st>>>(l->qweight, l->sz, l->in, l->out, l->group_size,
                                                   (const bf16 *)x, cpb, partial);
    CU_LAUNCHED("gptq_gemv");
}

extern "C" void cu_gptq_gemv(const struct cu_gptq *l, const bf16_t *x, int M, const float *bias, bf16_t *y,
                             int ldy, float *partial, cudaStream_t st) {
    if (M <= 0) return;
    switch (M) {
    case 1: launch_gemv<1>(l, x, partial, st); break;
    case 2: launch_gemv<2>(l, x, partial, st); break;
    case 3: launch_gemv<3>(l, x, partial, st); break;
    case 4: launch_gemv<4>(l, x, partial, st); break;
    case 5: launch_gemv<5>(l, x, partial, st); break;
    case 6: launch_gemv<6>(l, x, partial, st); break;
    case 7: launch_gemv<7>(l, x, partial, st); break;
    default: launch_gemv<8>(l, x, partial, st); break;
    }
    int cpb, ks;
    gemv_shape(l, &cpb, &ks);
    int n = M * l->out, blocks = (n + 255) / 256;
    k_gemv_reduce<<<blocks > 4096 ? 4096 : blocks, 256, 0, st>>>(partial, ks, M, l->out, bias, (bf16 *)y, ldy);
    CU_LAUNCHED("gemv_reduce");
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
