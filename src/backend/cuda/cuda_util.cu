// CUDA error bookkeeping and the two ceilings (copy bandwidth, cuBLAS bf16 GEMM rate).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include "backend/cuda/cuda_ops.h"

static __thread char g_err[512];
static __thread int g_has_err;

extern "C" int cu_note(cudaError_t e, const char *file, int line, const char *what) {
    if (e == cudaSuccess) return 0;
    if (!g_has_err) {
        snprintf(g_err, sizeof g_err, "CUDA error at %s:%d (%s): %s", file, line, what,
                 cudaGetErrorString(e));
        g_has_err = 1;
        fprintf(stderr, "%s\n", g_err);
    }
    return -1;
}

extern "C" int cu_take_error(char *err) {
    if (!g_has_err) return 0;
    if (err) snprintf(err, 512, "%s", g_err);
    g_has_err = 0;
    return -1;
}

#include "backend/cuda/pdl.cuh"

static int g_pdl_state[16];  // per device: 0 unknown, 1 off, 2 on

static bool pdl_supported(int dev) {
    int major = 0;
    return cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
}

// One answer per device (up to 16), computed on first use.
extern "C" bool cu_pdl_enabled(void) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 16) return false;
    int s = __atomic_load_n(&g_pdl_state[dev], __ATOMIC_ACQUIRE);
    if (!s) {
        const char *env = getenv("PAGODA_PDL");
        s = pdl_supported(dev) && !(env && !strcmp(env, "0")) ? 2 : 1;
        __atomic_store_n(&g_pdl_state[dev], s, __ATOMIC_RELEASE);
    }
    return s == 2;
}

extern "C" void cu_pdl_force(bool on) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 16) return;
    __atomic_store_n(&g_pdl_state[dev], on && pdl_supported(dev) ? 2 : 1, __ATOMIC_RELEASE);
}

// Test hook (cu_test_delayed_copy): lets the next kernel launch at once, waits delay_ns on the
// global timer, then copies n16 16-byte words in each of the two (dst, src) pairs.
__global__ void k_delayed_copy(uint4 *d0, const uint4 *s0, uint4 *d1, const uint4 *s1, size_t n16, unsigned delay_ns) {
    pdl_launch_dependents();
    pdl_wait();
    uint64_t t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    while (t - t0 < delay_ns);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n16; i += (size_t)gridDim.x * blockDim.x) {
        d0[i] = s0[i];
        d1[i] = s1[i];
    }
}

extern "C" void cu_test_delayed_copy(void *dst0, const void *src0, void *dst1, const void *src1, size_t bytes,
                                     unsigned delay_ns, cudaStream_t st) {
    if (bytes % 16) {
        cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "test_delayed_copy: bytes not a multiple of 16");
        return;
    }
    cu_note(pdl_launch(k_delayed_copy, dim3(32), dim3(256), 0, st, (uint4 *)dst0, (const uint4 *)src0, (uint4 *)dst1,
                       (const uint4 *)src1, bytes / 16, delay_ns),
            __FILE__, __LINE__, "test_delayed_copy");
}

__global__ void k_fill_random_bf16(__nv_bfloat16 *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 0x2c1b3c6du; h ^= h >> 12;
        p[i] = __float2bfloat16(((h & 0xffff) / 65536.0f - 0.5f));
    }
}

static float median(float *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) { float t = v[j]; v[j] = v[j - 1]; v[j - 1] = t; }
    return v[n / 2];
}

// Copy: 4 GiB device-to-device, median of 8 after 2 warm-ups. GEMM: 8192^3 bf16 with f32
// accumulation through cublasGemmEx, median of 8 after 2 warm-ups, random inputs.
extern "C" int cu_measure_ceilings(double *copy_bps, double *gemm_flops, char *err) {
    const size_t bytes = (size_t)4 << 30;
    const int n = 8192;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    cublasHandle_t h = NULL;
    float t[10], ms = 0, alpha = 1, beta = 0;
    int rc = -1;
    if (CU_CHECK(cudaMalloc(&a, bytes)) || CU_CHECK(cudaMalloc(&b, bytes))) goto done;
    if (CU_CHECK(cudaEventCreate(&e0)) || CU_CHECK(cudaEventCreate(&e1))) goto done;
    k_fill_random_bf16<<<1024, 256>>>((__nv_bfloat16 *)a, bytes / 2, 1);
    if (CU_LAUNCHED("fill")) goto done;
    for (int r = 0; r < 10; r++) {
        CU_CHECK(cudaEventRecord(e0));
        CU_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
        CU_CHECK(cudaEventRecord(e1));
        CU_CHECK(cudaEventSynchronize(e1));
        CU_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        t[r] = ms;
    }
    *copy_bps = 2.0 * bytes / (median(t + 2, 8) * 1e-3);
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, 512, "cublasCreate failed");
        goto done;
    }
    for (int r = 0; r < 10; r++) {
        const __nv_bfloat16 *A = (const __nv_bfloat16 *)a, *B = A + (size_t)n * n;
        CU_CHECK(cudaEventRecord(e0));
        cublasStatus_t cs = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, A, CUDA_R_16BF,
                                         n, B, CUDA_R_16BF, n, &beta, b, CUDA_R_16BF, n,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CU_CHECK(cudaEventRecord(e1));
        CU_CHECK(cudaEventSynchronize(e1));
        CU_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (cs != CUBLAS_STATUS_SUCCESS) {
            snprintf(err, 512, "cublasGemmEx failed (%d)", (int)cs);
            goto done;
        }
        t[r] = ms;
    }
    *gemm_flops = 2.0 * n * (double)n * n / (median(t + 2, 8) * 1e-3);
    rc = 0;
done:
    if (h) cublasDestroy(h);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    if (cu_take_error(err)) rc = -1;
    return rc;
}
