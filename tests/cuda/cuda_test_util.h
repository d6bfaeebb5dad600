// Helpers shared by the GPU tests: cmocka, device buffers, random data, error norms.
#pragma once
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/sampling.h"
#include "util/common.h"

static uint64_t g_rng = 0x1234567ull;
static inline void rng_seed(uint64_t s) { g_rng = s; }
static inline float frand(void) {  // uniform [-1, 1)
    g_rng = pg_mix64(g_rng);
    return (float)(g_rng >> 40) / 8388608.0f - 1.0f;
}
static inline uint32_t urand(void) {
    g_rng = pg_mix64(g_rng);
    return (uint32_t)(g_rng >> 32);
}

static inline void *dmalloc(size_t n) {
    void *p = NULL;
    assert_int_equal(cudaMalloc(&p, n ? n : 16), cudaSuccess);
    assert_int_equal(cudaMemset(p, 0xff, n ? n : 16), cudaSuccess);  // poison (NaN for floats)
    return p;
}
static inline void *dup_to_dev(const void *h, size_t n) {
    void *d = dmalloc(n);
    assert_int_equal(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

// The step description of T tokens over n sequences on the device (the attention kernels'
// struct cu_step); buf receives its six device arrays (cudaFree each when done).
static inline struct cu_step step_to_dev(int T, int n, const int32_t *tok_seq, const int32_t *tok_pos, const int *len,
                                         const int *q0, const int *nnew, const int32_t *bt, int bt_stride,
                                         void *buf[6]) {
    buf[0] = dup_to_dev(tok_seq, sizeof(int32_t) * T);
    buf[1] = dup_to_dev(tok_pos, sizeof(int32_t) * T);
    buf[2] = dup_to_dev(len, sizeof(int) * n);
    buf[3] = dup_to_dev(q0, sizeof(int) * n);
    buf[4] = dup_to_dev(nnew, sizeof(int) * n);
    buf[5] = dup_to_dev(bt, sizeof(int32_t) * (size_t)n * bt_stride);
    return (struct cu_step){T, n, buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], bt_stride};
}
// Block tables for n sequences of lengths len (block size bs): row i (stride *stride) lists
// sequence i's blocks, drawn in order from a shuffled pool of all their blocks plus 3 spares
// (*nblocks in all), so tables are neither contiguous nor the identity.
static inline int32_t *shuffled_block_tables(int n, const int *len, int bs, int *stride, int *nblocks) {
    *stride = 0, *nblocks = 3;
    for (int i = 0; i < n; i++) {
        int nb = (len[i] + bs - 1) / bs;
        if (nb > *stride) *stride = nb;
        *nblocks += nb;
    }
    int *perm = pg_malloc(sizeof(int) * *nblocks);
    for (int i = 0; i < *nblocks; i++) perm[i] = i;
    for (int i = *nblocks - 1; i > 0; i--) {
        int j = urand() % (i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t *bt = pg_calloc((size_t)n * *stride, sizeof(int32_t));
    for (int i = 0, k = 0; i < n; i++)
        for (int b = 0; b < (len[i] + bs - 1) / bs; b++) bt[i * *stride + b] = perm[k++];
    free(perm);
    return bt;
}
static inline void to_host(void *h, const void *d, size_t n) {
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_int_equal(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
    char err[PG_ERR_LEN] = "";
    if (cu_take_error(err)) fail_msg("%s", err);
}

static inline uint16_t *rand_bf16(size_t n, float scale) {
    uint16_t *h = pg_malloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = pg_f32_to_bf16(frand() * scale);
    return h;
}
static inline float bf(uint16_t h) { return pg_bf16_to_f32(h); }
// An fp8 byte (e4m3 or e5m2, scale 1) decoded exactly on the host.
static inline double fp8_to_d(uint8_t b, int e5m2) {
    int e, m;
    double v;
    if (e5m2) {
        e = (b >> 2) & 31, m = b & 3;
        v = e ? ldexp(1 + m / 4.0, e - 15) : ldexp(m / 4.0, -14);
    } else {
        e = (b >> 3) & 15, m = b & 7;
        v = e ? ldexp(1 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
    }
    return (b >> 7) ? -v : v;
}

// ||a - b|| / ||b||; fails on NaN/inf anywhere in a.
static inline double rel_err_f(const float *a, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}
static inline double rel_err_bf16(const uint16_t *a, const double *ref, size_t n) {
    float *f = pg_malloc(n * 4);
    for (size_t i = 0; i < n; i++) f[i] = bf(a[i]);
    double e = rel_err_f(f, ref, n);
    free(f);
    return e;
}
#define CHECK_ERR(name, e, tol)                                                   \
    do {                                                                          \
        double e_ = (e);                                                          \
        printf("  %-40s rel err %.3e (tol %.1e)\n", name, e_, (double)(tol));     \
        assert_true(e_ <= (tol));                                                 \
    } while (0)
