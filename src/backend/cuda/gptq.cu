// GPTQ int4 weight-only GEMM.
// Few rows (decode, M <= 8): k_gptq_gemv_fused, a bandwidth-bound GEMV streaming the
// checkpoint layout qweight [in/8][out] with 16-byte loads (4 output columns x 8 input rows
// per thread per load), one 128-row chunk (16 loads in flight) per warp; its design is
// described above the kernel.
// Many rows: k_gptq_dequant writes W^T (in, out) bf16 for cuBLAS (or gptq_mma.cu).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"

typedef __nv_bfloat16 bf16;
#define GV_WARPS 4
#define GV_COLS 128

// K splits of the GEMV: one per GV_WARPS 128-row chunks.
static int gemv_splits(const struct cu_gptq *l) { return (l->in / 128 + GV_WARPS - 1) / GV_WARPS; }

extern "C" size_t cu_gemv_partial_floats(const struct cu_gptq *l, int M) {
    return CU_GEMV_COUNTERS + (size_t)gemv_splits(l) * M * l->out;
}

extern "C" void cu_gemv_scratch_reset(float *partial, cudaStream_t st) {
    CU_CHECK(cudaMemsetAsync(partial, 0, CU_GEMV_COUNTERS * sizeof(float), st));
}

// One 128-row chunk per warp, GV_WARPS chunks per block, so every block has a single
// round trip to memory: its 16 int4 weight loads per thread are issued before the
// activations are staged, hiding the staging behind them. Nibbles become 1 + q/16 by
// placing them in the top mantissa bits of 1.0f (shift + lop3, no subtract); the zero point
// is folded in per group: sum x (q - z) = 16 sum x (1 + q/16) - (16 + z) sum x, with the 8-row
// sums of x precomputed while staging. K splits are summed by the last block of each column
// tile (atomic ticket + fences) in fixed split order, so results do not depend on timing;
// that block adds the bias, writes bf16 and re-arms the ticket for the next launch / replay.
// The staging can form silu(gate) * up (rounded to bf16 like cu_swiglu) and gather the
// desc_act permutation, so neither needs its own kernel.
struct gx {
    const bf16 *x;
    int ldx;
    const int32_t *perm;
    bool swiglu;
};

__device__ __forceinline__ float gx_load(const gx &a, int in, int m, int k) {
    int src = a.perm ? a.perm[k] : k;
    const bf16 *row = a.x + (size_t)m * a.ldx;
    if (!a.swiglu) return __bfloat162float(row[src]);
    float g = __bfloat162float(row[src]), u = __bfloat162float(row[in + src]);
    return __bfloat162float(__float2bfloat16(g / (1.0f + __expf(-g)) * u));
}

__device__ __forceinline__ float nib1(uint32_t v, int j) {  // 1 + nibble_j / 16, exactly
    uint32_t t = j < 5 ? v << (19 - 4 * j) : v >> (4 * j - 19);
    return __uint_as_float((t & 0x00780000u) | 0x3F800000u);
}

template <int M>
__global__ void __launch_bounds__(GV_WARPS * 32)
k_gptq_gemv_fused(const int32_t *__restrict__ qweight, const uint32_t *__restrict__ sz, int in, int out, int gs,
                  gx xin, const float *__restrict__ bias, bf16 *__restrict__ y, int ldy, float *partial,
                  unsigned *ticket) {
    constexpr int KB = GV_WARPS * 128;
    extern __shared__ float xs[];  // [M][KB] activations, then [M][KB/8] 8-row sums; later [GV_WARPS][M][GV_COLS]
    float *xsum = xs + M * KB;
    __shared__ bool last;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, ks = gridDim.y;
    const int n_chunks = in / 128, c0 = blockIdx.y * GV_WARPS, ch = c0 + w;
    const int klen = (min(n_chunks, c0 + GV_WARPS) - c0) * 128, kbase = c0 * 128;
    const int col = blockIdx.x * GV_COLS + lane * 4;
    const bool active = col < out && ch < n_chunks;

    int4 qw[16];
    if (active)
#pragma unroll
        for (int r = 0; r < 16; r++) qw[r] = __ldg((const int4 *)(qweight + (size_t)(ch * 16 + r) * out + col));
    for (int u = threadIdx.x; u < M * (klen / 8); u += blockDim.x) {
        int m = u / (klen / 8), r8 = u % (klen / 8);
        float s = 0;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float v = gx_load(xin, in, m, kbase + r8 * 8 + j);
            xs[m * KB + r8 * 8 + j] = v;
            s += v;
        }
        xsum[m * (KB / 8) + r8] = s;
    }
    __syncthreads();

    float acc[M][4];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[m][c] = 0;
    if (active) {
        float t1[M][4], tx[M], sc16[4], scz[4];
        auto load_group = [&](int row) {
            uint4 v = __ldg((const uint4 *)(sz + (size_t)(row / gs) * out + col));
            uint32_t g[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int c = 0; c < 4; c++) {
                float s = __half2float(__ushort_as_half((unsigned short)(g[c] & 0xffff)));
                sc16[c] = 16.0f * s;
                scz[c] = s * (16.0f + (float)(g[c] >> 16));
            }
#pragma unroll
            for (int m = 0; m < M; m++) {
                tx[m] = 0;
#pragma unroll
                for (int c = 0; c < 4; c++) t1[m][c] = 0;
            }
        };
        auto flush = [&]() {
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[m][c] += sc16[c] * t1[m][c] - scz[c] * tx[m];
        };
        load_group(ch * 128);
#pragma unroll
        for (int r = 0; r < 16; r++) {
            if (r > 0 && gs < 128 && ((r * 8) % gs) == 0) {
                flush();
                load_group(ch * 128 + r * 8);
            }
            const uint32_t qv[4] = {(uint32_t)qw[r].x, (uint32_t)qw[r].y, (uint32_t)qw[r].z, (uint32_t)qw[r].w};
            float wf[4][8];
#pragma unroll
            for (int c = 0; c < 4; c++)
#pragma unroll
                for (int j = 0; j < 8; j++) wf[c][j] = nib1(qv[c], j);
            const int xo = w * 128 + r * 8;
#pragma unroll
            for (int m = 0; m < M; m++) {
                float4 a = *(const float4 *)(xs + m * KB + xo), b = *(const float4 *)(xs + m * KB + xo + 4);
                float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
                tx[m] += xsum[m * (KB / 8) + xo / 8];
#pragma unroll
                for (int c = 0; c < 4; c++)
#pragma unroll
                    for (int j = 0; j < 8; j++) t1[m][c] += xv[j] * wf[c][j];
            }
        }
        flush();
    }
    __syncthreads();
    float *red = xs;
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int c = 0; c < 4; c++) red[(w * M + m) * GV_COLS + lane * 4 + c] = acc[m][c];
    __syncthreads();
    const int oc = blockIdx.x * GV_COLS + threadIdx.x;
    const bool mine = threadIdx.x < GV_COLS && oc < out;
    if (ks == 1) {
        if (mine)
            for (int m = 0; m < M; m++) {
                float s = bias ? bias[oc] : 0.f;
                for (int ww = 0; ww < GV_WARPS; ww++) s += red[(ww * M + m) * GV_COLS + threadIdx.x];
                y[(size_t)m * ldy + oc] = __float2bfloat16(s);
            }
        return;
    }
    if (mine)
        for (int m = 0; m < M; m++) {
            float s = 0;
            for (int ww = 0; ww < GV_WARPS; ww++) s += red[(ww * M + m) * GV_COLS + threadIdx.x];
            partial[((size_t)blockIdx.y * M + m) * out + oc] = s;
        }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&ticket[blockIdx.x], 1u) == (unsigned)ks - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (mine)
        for (int m = 0; m < M; m++) {
            float s = bias ? bias[oc] : 0.f;
            for (int k = 0; k < ks; k++) s += __ldcg(partial + ((size_t)k * M + m) * out + oc);
            y[(size_t)m * ldy + oc] = __float2bfloat16(s);
        }
    if (threadIdx.x == 0) ticket[blockIdx.x] = 0;
}

template <int M>
static void launch_fused(const struct cu_gptq *l, const gx &x, const float *bias, bf16_t *y, int ldy, float *partial,
                         cudaStream_t st) {
    const int KB = GV_WARPS * 128;
    size_t sm = (size_t)M * (KB + KB / 8) * sizeof(float);
    dim3 grid((l->out + GV_COLS - 1) / GV_COLS, gemv_splits(l));
    k_gptq_gemv_fused<M><<<grid, GV_WARPS * 32, sm, st>>>(l->qweight, l->sz, l->in, l->out, l->group_size, x, bias,
                                                          (bf16 *)y, ldy, partial + CU_GEMV_COUNTERS,
                                                          (unsigned *)partial);
    CU_LAUNCHED("gptq_gemv_fused");
}

extern "C" void cu_gptq_gemv_ex(const struct cu_gptq *l, const struct cu_gemv_in *x, int M, const float *bias,
                                bf16_t *y, int ldy, float *partial, cudaStream_t st) {
    if (M <= 0) return;
    if (M > CU_GEMV_MAX_ROWS || (l->out + GV_COLS - 1) / GV_COLS > CU_GEMV_COUNTERS || l->in % 128) {
        cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "gptq gemv: unsupported shape");
        return;
    }
    gx a = {(const bf16 *)x->x, x->ldx, x->perm, x->swiglu};
    switch (M) {
    case 1: launch_fused<1>(l, a, bias, y, ldy, partial, st); break;
    case 2: launch_fused<2>(l, a, bias, y, ldy, partial, st); break;
    case 3: launch_fused<3>(l, a, bias, y, ldy, partial, st); break;
    case 4: launch_fused<4>(l, a, bias, y, ldy, partial, st); break;
    case 5: launch_fused<5>(l, a, bias, y, ldy, partial, st); break;
    case 6: launch_fused<6>(l, a, bias, y, ldy, partial, st); break;
    case 7: launch_fused<7>(l, a, bias, y, ldy, partial, st); break;
    default: launch_fused<8>(l, a, bias, y, ldy, partial, st); break;
    }
}

extern "C" void cu_gptq_gemv(const struct cu_gptq *l, const bf16_t *x, int M, const float *bias, bf16_t *y,
                             int ldy, float *partial, cudaStream_t st) {
    struct cu_gemv_in a = {x, l->in, NULL, false};
    cu_gptq_gemv_ex(l, &a, M, bias, y, ldy, partial, st);
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
