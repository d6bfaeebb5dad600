// Elementwise and row kernels: embedding, residual add + RMSNorm, SwiGLU, bias, gathers,
// dtype conversions. One block per row where a row reduction is needed. The step's kernels
// are launched with pdl_launch (pdl.cuh) and keep its contract; the upload-time conversions
// are plain launches.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

typedef __nv_bfloat16 bf16;

// 4 bf16 (8 bytes) <-> 4 floats.
__device__ __forceinline__ float4 bf4_to_f4(uint2 u) {
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                       __uint_as_float(u.y & 0xffff0000u));
}
__device__ __forceinline__ uint2 f4_to_bf4(float a, float b, float c, float d) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    return make_uint2(*(uint32_t *)&lo, *(uint32_t *)&hi);
}

static bool aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

// vec: H % 4 == 0, table 8-byte and out 16-byte aligned (4 bf16 in, a float4 out).
__global__ void k_embed(const bf16 *table, const int32_t *tok, int H, float *out, bool vec) {
    pdl_launch_dependents();
    pdl_wait();
    const bf16 *src = table + (size_t)tok[blockIdx.x] * H;
    float *dst = out + (size_t)blockIdx.x * H;
    if (vec)
        for (int i = threadIdx.x; i < H / 4; i += blockDim.x) ((float4 *)dst)[i] = bf4_to_f4(((const uint2 *)src)[i]);
    else
        for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

extern "C" void cu_embed(const bf16_t *table, const int32_t *tok, int T, int H, float *out, cudaStream_t st) {
    if (T <= 0) return;
    const bool vec = H % 4 == 0 && aligned(table, 8) && aligned(out, 16);
    CU_CHECK(pdl_launch(k_embed, T, 256, 0, st, (const bf16 *)table, tok, H, out, vec));
}

__device__ __forceinline__ float block_sum(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[w] = v;
    __syncthreads();
    float s = 0;
    for (int i = 0; i < nw; i++) s += red[i];
    return s;
}

// Any H: one block per row, two passes over the row.
__global__ void k_add_rmsnorm(float *resid, const bf16 *delta, int ld_delta, const bf16 *w, float eps,
                              int H, bf16 *out) {
    __shared__ float red[32];
    pdl_launch_dependents();
    pdl_wait();
    float *r = resid + (size_t)blockIdx.x * H;
    const bf16 *d = delta ? delta + (size_t)blockIdx.x * ld_delta : NULL;
    float ss = 0;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        float v = r[i];
        if (d) {
            v += __bfloat162float(d[i]);
            r[i] = v;
        }
        ss += v * v;
    }
    float inv = rsqrtf(block_sum(ss, red) / H + eps);
    bf16 *o = out + (size_t)blockIdx.x * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = __float2bfloat16(r[i] * inv * __bfloat162float(w[i]));
}

#define RMS_THREADS 256
#define RMS_MAX_VPT 8  // float4s per thread held in registers: H up to 8192

// H % 4 == 0, 16-byte aligned rows: one block of RMS_THREADS per row, each thread holding
// VPT float4s of the row in registers, so the row is read once. The norm weight is loaded
// before pdl_wait (it is constant), the residual and delta after.
template <int VPT>
__global__ void __launch_bounds__(RMS_THREADS)
k_add_rmsnorm_v(float *resid, const bf16 *delta, int ld_delta, const bf16 *w, float eps, int H, bf16 *out) {
    __shared__ float red[32];
    pdl_launch_dependents();
    const int H4 = H >> 2;
    uint2 wv[VPT], dv[VPT];
    float4 v[VPT];
#pragma unroll
    for (int k = 0; k < VPT; k++) {
        int i = threadIdx.x + k * RMS_THREADS;
        if (i < H4) wv[k] = ((const uint2 *)w)[i];
    }
    pdl_wait();
    float4 *r = (float4 *)(resid + (size_t)blockIdx.x * H);
    const uint2 *d = delta ? (const uint2 *)(delta + (size_t)blockIdx.x * ld_delta) : NULL;
#pragma unroll
    for (int k = 0; k < VPT; k++) {
        int i = threadIdx.x + k * RMS_THREADS;
        if (i < H4) {
            v[k] = r[i];
            if (d) dv[k] = d[i];
        }
    }
    float ss = 0;
#pragma unroll
    for (int k = 0; k < VPT; k++) {
        int i = threadIdx.x + k * RMS_THREADS;
        if (i >= H4) continue;
        if (d) {
            float4 e = bf4_to_f4(dv[k]);
            v[k].x += e.x, v[k].y += e.y, v[k].z += e.z, v[k].w += e.w;
            r[i] = v[k];
        }
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    const float inv = rsqrtf(block_sum(ss, red) / H + eps);
    uint2 *o = (uint2 *)(out + (size_t)blockIdx.x * H);
#pragma unroll
    for (int k = 0; k < VPT; k++) {
        int i = threadIdx.x + k * RMS_THREADS;
        if (i >= H4) continue;
        float4 g = bf4_to_f4(wv[k]);
        o[i] = f4_to_bf4(v[k].x * inv * g.x, v[k].y * inv * g.y, v[k].z * inv * g.z, v[k].w * inv * g.w);
    }
}

extern "C" void cu_add_rmsnorm(float *resid, const bf16_t *delta, int ld_delta, const bf16_t *w, float eps,
                               int T, int H, bf16_t *out, cudaStream_t st) {
    if (T <= 0) return;
    const int vpt = (H / 4 + RMS_THREADS - 1) / RMS_THREADS;
    const bool vec = H % 4 == 0 && vpt <= RMS_MAX_VPT && aligned(resid, 16) && aligned(w, 8) && aligned(out, 8) &&
                     (!delta || (ld_delta % 4 == 0 && aligned(delta, 8)));
    const bf16 *d = (const bf16 *)delta, *g = (const bf16 *)w;
    bf16 *o = (bf16 *)out;
    cudaError_t e;
    switch (vec ? vpt : 0) {
    case 1: e = pdl_launch(k_add_rmsnorm_v<1>, T, RMS_THREADS, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    case 2: e = pdl_launch(k_add_rmsnorm_v<2>, T, RMS_THREADS, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    case 3: e = pdl_launch(k_add_rmsnorm_v<3>, T, RMS_THREADS, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    case 4: e = pdl_launch(k_add_rmsnorm_v<4>, T, RMS_THREADS, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    case 5: e = pdl_launch(k_add_rmsnorm_v<5>, T, RMS_THREADS, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    case 6: e = pdl_launch(k_add_rmsnorm_v<6>, T, RMS_THREADS, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    case 7: e = pdl_launch(k_add_rmsnorm_v<7>, T, RMS_THREADS, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    case 8: e = pdl_launch(k_add_rmsnorm_v<8>, T, RMS_THREADS, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    default: e = pdl_launch(k_add_rmsnorm, T, 512, 0, st, resid, d, ld_delta, g, eps, H, o); break;
    }
    cu_note(e, __FILE__, __LINE__, "add_rmsnorm");
}

__global__ void k_swiglu(const bf16 *gu, int I, size_t n, bf16 *out) {
    pdl_launch_dependents();
    pdl_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / I, j = i % I;
        float g = __bfloat162float(gu[t * 2 * I + j]), u = __bfloat162float(gu[t * 2 * I + I + j]);
        out[i] = __float2bfloat16(g / (1.0f + __expf(-g)) * u);
    }
}

static int grid_for(size_t n, int threads) {
    size_t b = (n + threads - 1) / threads;
    return b > 65535 ? 65535 : (int)(b ? b : 1);
}

extern "C" void cu_swiglu(const bf16_t *gu, int T, int I, bf16_t *out, cudaStream_t st) {
    size_t n = (size_t)T * I;
    if (!n) return;
    CU_CHECK(pdl_launch(k_swiglu, grid_for(n, 256), 256, 0, st, (const bf16 *)gu, I, n, (bf16 *)out));
}

__global__ void k_add_bias(bf16 *y, int ldy, const float *bias, int n, size_t total) {
    pdl_launch_dependents();
    pdl_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / n, j = i % n;
        bf16 *p = y + t * ldy + j;
        *p = __float2bfloat16(__bfloat162float(*p) + bias[j]);
    }
}

extern "C" void cu_add_bias(bf16_t *y, int ldy, const float *bias, int T, int n, cudaStream_t st) {
    size_t total = (size_t)T * n;
    if (!total) return;
    CU_CHECK(pdl_launch(k_add_bias, grid_for(total, 256), 256, 0, st, (bf16 *)y, ldy, bias, n, total));
}

__global__ void k_gather_rows(const bf16 *src, int ld, const int32_t *rows, int H, bf16 *dst) {
    pdl_launch_dependents();
    pdl_wait();
    const bf16 *s = src + (size_t)rows[blockIdx.x] * ld;
    bf16 *d = dst + (size_t)blockIdx.x * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) d[i] = s[i];
}

extern "C" void cu_gather_rows(const bf16_t *src, int ld, const int32_t *rows, int n, int H, bf16_t *dst,
                               cudaStream_t st) {
    if (n <= 0) return;
    CU_CHECK(pdl_launch(k_gather_rows, n, 256, 0, st, (const bf16 *)src, ld, rows, H, (bf16 *)dst));
}

__global__ void k_permute_cols(const bf16 *src, const int32_t *perm, int n, bf16 *dst) {
    pdl_launch_dependents();
    pdl_wait();
    const bf16 *s = src + (size_t)blockIdx.x * n;
    bf16 *d = dst + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) d[i] = s[perm[i]];
}

extern "C" void cu_permute_cols(const bf16_t *src, const int32_t *perm, int T, int n, bf16_t *dst, cudaStream_t st) {
    if (T <= 0) return;
    CU_CHECK(pdl_launch(k_permute_cols, T, 256, 0, st, (const bf16 *)src, perm, n, (bf16 *)dst));
}

__global__ void k_f32_to_bf16(const float *s, size_t n, bf16 *d) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2bfloat16(s[i]);
}
__global__ void k_f16_to_bf16(const __half *s, size_t n, bf16 *d) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2bfloat16(__half2float(s[i]));
}
__global__ void k_bf16_to_f32(const bf16 *s, size_t n, float *d) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __bfloat162float(s[i]);
}

extern "C" void cu_f32_to_bf16(const float *src, size_t n, bf16_t *dst, cudaStream_t st) {
    if (!n) return;
    k_f32_to_bf16<<<grid_for(n, 256), 256, 0, st>>>(src, n, (bf16 *)dst);
    CU_LAUNCHED("f32_to_bf16");
}
extern "C" void cu_f16_to_bf16(const uint16_t *src, size_t n, bf16_t *dst, cudaStream_t st) {
    if (!n) return;
    k_f16_to_bf16<<<grid_for(n, 256), 256, 0, st>>>((const __half *)src, n, (bf16 *)dst);
    CU_LAUNCHED("f16_to_bf16");
}
extern "C" void cu_bf16_to_f32(const bf16_t *src, size_t n, float *dst, cudaStream_t st) {
    if (!n) return;
    k_bf16_to_f32<<<grid_for(n, 256), 256, 0, st>>>((const bf16 *)src, n, dst);
    CU_LAUNCHED("bf16_to_f32");
}
