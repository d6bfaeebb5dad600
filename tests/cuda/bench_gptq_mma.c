// Microbenchmark of the int4 linears of Qwen2.5-14B-GPTQ-Int4 (group 128) on one GPU:
// cu_gptq_mma (tensor cores, int4 in place) vs cuBLAS bf16 GEMM on the dequantized copy
// (cublasGemmEx exactly as backend_cuda.cu's gemm()) vs cu_gptq_gemv (M <= 8).
// Every timing is the median of REPS back-to-back launches (cudaEvents between them) rotating over enough copies
// of the weights (>= 256 MB) that they stream from HBM, not L2. Effective GB/s counts the
// weight bytes each kernel must read: int4 words + scale/zero words for the int4 kernels,
// in*out*2 for cuBLAS. Prints a Markdown table and one grep-able "RESULT" line per case.
// Usage: bench_gptq_mma [reps]   (not run by test-cuda; built with the GPU tests)
#include <cublas_v2.h>

#include "cuda_test_util.h"

#define ROT_BYTES (256u << 20)

struct shape {
    const char *name;
    int in, out;
};

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

enum { K_MMA, K_BLAS, K_GEMV };

struct bctx {
    struct cu_gptq *l;  // n_rot int4 copies
    void **wt;          // n_rot_bf dense copies
    int n_rot, n_rot_bf;
    cublasHandle_t blas;
    void *x, *y;
    float *scr;
};

static void launch(struct bctx *b, int kind, int i, int M) {
    const struct cu_gptq *l = &b->l[i % b->n_rot];
    if (kind == K_MMA) {
        cu_gptq_mma(l, b->x, M, NULL, b->y, l->out, b->scr, 0);
    } else if (kind == K_GEMV) {
        cu_gptq_gemv(l, b->x, M, NULL, b->y, l->out, b->scr, 0);
    } else {
        const float one = 1, zero = 0;
        cublasStatus_t s = cublasGemmEx(b->blas, CUBLAS_OP_N, CUBLAS_OP_N, l->out, M, l->in, &one,
                                        b->wt[i % b->n_rot_bf], CUDA_R_16BF, l->out, b->x, CUDA_R_16BF, l->in, &zero,
                                        b->y, CUDA_R_16BF, l->out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS) fail_msg("cublasGemmEx: %d", (int)s);
    }
}

static void *g_busy;  // a 1 GiB buffer cleared before each series, so the host queues ahead of the GPU

// Median microseconds of reps launches queued back to back, each between two events (GPU time
// only: the launches are queued while the GPU is still busy with a memset).
static double time_kind(struct bctx *b, int kind, int M, int reps) {
    cudaEvent_t *ev = pg_malloc(sizeof(cudaEvent_t) * (reps + 1));
    for (int r = 0; r <= reps; r++) cudaEventCreate(&ev[r]);
    for (int i = 0; i < 3; i++) launch(b, kind, i, M);
    cudaMemsetAsync(g_busy, 0, 1u << 30, 0);
    for (int r = 0; r < reps; r++) {
        cudaEventRecord(ev[r], 0);
        launch(b, kind, r + 3, M);
    }
    cudaEventRecord(ev[reps], 0);
    cudaEventSynchronize(ev[reps]);
    float *t = pg_malloc(sizeof(float) * reps);
    for (int r = 0; r < reps; r++) cudaEventElapsedTime(&t[r], ev[r], ev[r + 1]);
    char err[PG_ERR_LEN] = "";
    if (cu_take_error(err)) fail_msg("%s", err);
    qsort(t, reps, sizeof(float), cmp_f);
    double med = t[reps / 2] * 1e3;
    free(t);
    for (int r = 0; r <= reps; r++) cudaEventDestroy(ev[r]);
    free(ev);
    return med;
}

// rel L2 difference of the mma and cuBLAS outputs (both bf16) for the same inputs.
static double cross_check(struct bctx *b, int M, int out) {
    size_t n = (size_t)M * out;
    uint16_t *a = pg_malloc(n * 2), *c = pg_malloc(n * 2);
    launch(b, K_MMA, 0, M);
    to_host(a, b->y, n * 2);
    launch(b, K_BLAS, 0, M);
    to_host(c, b->y, n * 2);
    double *ref = pg_malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) ref[i] = bf(c[i]);
    double e = rel_err_bf16(a, ref, n);
    free(a), free(c), free(ref);
    return e;
}

static void bench_shape(const struct shape *s, cublasHandle_t blas, int reps) {
    const int gs = 128, ng = s->in / gs, Mmax = 256;
    const size_t qb = (size_t)(s->in / 8) * s->out * 4, zb = (size_t)ng * s->out * 4, wb = (size_t)s->in * s->out * 2;
    int32_t *qw = pg_malloc(qb);
    uint32_t *sz = pg_malloc(zb);
    for (size_t i = 0; i < qb / 4; i++) qw[i] = (int32_t)urand();
    for (size_t i = 0; i < zb / 4; i++) sz[i] = pg_f32_to_f16(0.002f + 0.01f * (frand() + 1)) | ((1 + urand() % 15) << 16);
    struct bctx b = {.blas = blas};
    b.n_rot = (int)((ROT_BYTES + qb - 1) / qb), b.n_rot_bf = (int)((ROT_BYTES + wb - 1) / wb);
    b.l = pg_malloc(sizeof(struct cu_gptq) * b.n_rot);
    b.wt = pg_malloc(sizeof(void *) * b.n_rot_bf);
    for (int i = 0; i < b.n_rot; i++) {
        struct cu_gptq l = {s->in, s->out, gs, ng, dup_to_dev(qw, qb), dup_to_dev(sz, zb)};
        b.l[i] = l;
    }
    for (int i = 0; i < b.n_rot_bf; i++) {
        b.wt[i] = dmalloc(wb);
        cu_gptq_dequant(&b.l[i % b.n_rot], b.wt[i], 0);
    }
    uint16_t *x = rand_bf16((size_t)Mmax * s->in, 1.0f);
    b.x = dup_to_dev(x, (size_t)Mmax * s->in * 2);
    b.y = dmalloc((size_t)Mmax * s->out * 2);
    size_t scr = cu_gptq_mma_scratch_floats(&b.l[0], Mmax);
    for (int M = 1; M <= Mmax; M++) {
        size_t a = cu_gptq_mma_scratch_floats(&b.l[0], M), g = M <= CU_GEMV_MAX_ROWS ? cu_gemv_partial_floats(&b.l[0], M) : 0;
        scr = a > scr ? a : scr, scr = g > scr ? g : scr;
    }
    b.scr = dmalloc(sizeof(float) * scr);
    static const int Ms[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    for (size_t k = 0; k < sizeof Ms / sizeof Ms[0]; k++) {
        const int M = Ms[k];
        double tm = time_kind(&b, K_MMA, M, reps), tb = time_kind(&b, K_BLAS, M, reps);
        double tg = M <= CU_GEMV_MAX_ROWS ? time_kind(&b, K_GEMV, M, reps) : NAN;
        double e = cross_check(&b, M, s->out);
        double gm = (qb + zb) / tm / 1e3, gb = wb / tb / 1e3, gg = (qb + zb) / tg / 1e3;
        printf("| %s %dx%d | %d | %.1f | %.0f | %.1f | %.0f | %.1f | %.0f | %.2f | %.1e |\n", s->name, s->in, s->out, M,
               tm, gm, tb, gb, tg, gg, tb / tm, e);
        fprintf(stderr, "RESULT gptq_mma shape=%s in=%d out=%d M=%d mma_us=%.2f mma_gbs=%.0f cublas_us=%.2f "
                        "cublas_gbs=%.0f gemv_us=%.2f gemv_gbs=%.0f speedup_vs_cublas=%.3f rel_diff=%.2e\n",
                s->name, s->in, s->out, M, tm, gm, tb, gb, tg, gg, tb / tm, e);
    }
    for (int i = 0; i < b.n_rot; i++) cudaFree((void *)b.l[i].qweight), cudaFree((void *)b.l[i].sz);
    for (int i = 0; i < b.n_rot_bf; i++) cudaFree(b.wt[i]);
    cudaFree(b.x), cudaFree(b.y), cudaFree(b.scr);
    free(b.l), free(b.wt), free(qw), free(sz), free(x);
}

static int g_reps = 25;

static void test_bench(void **state) {
    (void)state;
    char err[PG_ERR_LEN] = "";
    double copy = 0, flops = 0;
    assert_int_equal(cu_measure_ceilings(&copy, &flops, err), 0);
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("\n%s, %d SMs, L2 %d MB; device-to-device copy %.0f GB/s (read+write), cuBLAS bf16 %.0f TFLOP/s\n",
           prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, copy / 1e9, flops / 1e12);
    fprintf(stderr, "RESULT copy_gbs=%.0f gemm_tflops=%.0f\n", copy / 1e9, flops / 1e12);
    printf("median of %d launches; GB/s = weight bytes / time (int4+scales for mma/gemv, bf16 for cuBLAS)\n\n", g_reps);
    printf("| shape | M | mma us | mma GB/s | cuBLAS us | cuBLAS GB/s | gemv us | gemv GB/s | cuBLAS/mma | rel diff |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    g_busy = dmalloc(1u << 30);
    cublasHandle_t blas;
    assert_int_equal(cublasCreate(&blas), CUBLAS_STATUS_SUCCESS);
    static const struct shape shapes[] = {
        {"qkv", 5120, 7168}, {"o", 5120, 5120}, {"gate_up", 5120, 27648}, {"down", 13824, 5120}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) bench_shape(&shapes[i], blas, g_reps);
    cublasDestroy(blas);
    cudaFree(g_busy);
}

int main(int argc, char **argv) {
    if (argc > 1) g_reps = atoi(argv[1]) > 0 ? atoi(argv[1]) : g_reps;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_bench)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
