// Elementwise and row kernels: embedding, residual add + RMSNorm, SwiGLU, bias, gathers,
// dtype conversions. One block per row where a row reduction is needed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"

typedef __nv_bfloat16 bf16;

__global__ void k_embed(const bf16 *table, const int32_t *tok, int H, float *out) {
    const bf16 *src = table + (size_t)tok[blockIdx.x] * H;
    float *dst = out + (size_t)blockIdx.x * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

extern "C" void cu_embed(const bf16_t *table, const int32_t *tok, int T, int H, float *out, cudaStream_t st) {
    if (T <= 0) return;
    k_embed<<<T, 256, 0, st>>>((const bf16 *)table, tok, H, out);
    CU_LAUNCHED("embed");
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

// One block per row; the row is kept in registers between the two passes when it fits.
__global__ void k_add_rmsnorm(float *resid, const bf16 *delta, int ld_delta, const bf16 *w, float eps,
                              int H, bf16 *out) {
    __shared__ float red[32];
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

extern "C" void cu_add_rmsnorm(float *resid, const bf16_t *delta, int ld_delta, const bf16_t *w, float eps,
                               int T, int H, bf16_t *out, cudaStream_t st) {
    if (T <= 0) return;
    k_add_rmsnorm<<<T, 512, 0, st>>>(resid, (const bf16 *)delta, ld_delta, (const bf16 *)w, eps, H, (bf16 *)out);
    CU_LAUNCHED("add_rmsnorm");
}

__global__ void k_swiglu(const bf16 *gu, int I, size_t n, bf16 *out) {
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
    k_swiglu<<<grid_for(n, 256), 256, 0, st>>>((const bf16 *)gu, I, n, (bf16 *)out);
    CU_LAUNCHED("swiglu");
}

__global__ void k_add_bias(bf16 *y, int ldy, const float *bias, int n, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / n, j = i % n;
        bf16 *p = y + t * ldy + j;
        *p = __float2bfloat16(__bfloat162float(*p) + bias[j]);
    }
}

extern "C" void cu_add_bias(bf16_t *y, int ldy, const float *bias, int T, int n, cudaStream_t st) {
    size_t total = (size_t)T * n;
    if (!total) return;
    k_add_bias<<<grid_for(total, 256), 256, 0, st>>>((bf16 *)y, ldy, bias, n, total);
    CU_LAUNCHED("add_bias");
}

__global__ void k_gather_rows(const bf16 *src, int ld, const int32_t *rows, int H, bf16 *dst) {
    const bf16 *s = src + (size_t)rows[blockIdx.x] * ld;
    bf16 *d = dst + (size_t)blockIdx.x * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) d[i] = s[i];
}

extern "C" void cu_gather_rows(const bf16_t *src, int ld, const int32_t *rows, int n, int H, bf16_t *dst,
                               cudaStream_t st) {
    if (n <= 0) return;
    k_gather_rows<<<n, 256, 0, st>>>((const bf16 *)src, ld, rows, H, (bf16 *)dst);
    CU_LAUNCHED("gather_rows");
}

__global__ void k_permute_cols(const bf16 *src, const int32_t *perm, int n, bf16 *dst) {
    const bf16 *s = src + (size_t)blockIdx.x * n;
    bf16 *d = dst + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) d[i] = s[perm[i]];
}

extern "C" void cu_permute_cols(const bf16_t *src, const int32_t *perm, int T, int n, bf16_t *dst, cudaStream_t st) {
    if (T <= 0) return;
    k_permute_cols<<<T, 256, 0, st>>>((const bf16 *)src, perm, n, (bf16 *)dst);
    CU_LAUNCHED("permute_cols");
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
