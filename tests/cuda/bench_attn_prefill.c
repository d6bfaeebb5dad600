// Benchmark of the prefill attention (cu_attn_prefill, attn_prefill.cu) for the Qwen2.5-14B
// attention shape (40 q heads, 8 kv heads, head_dim 128): bf16 and fp8 e4m3 KV, block sizes
// 16 and 32, whole prompts of 1024, 4096, 12288 tokens (one sequence) and 8 x 1024. Built
// with the GPU tests, not run by test-cuda:
//   make CUDA=1 build-cuda/tests-cuda/bench_attn_prefill && build-cuda/tests-cuda/bench_attn_prefill
// First measures the cuBLAS bf16 GEMM rate (cu_measure_ceilings, 8192^3) as the physical
// reference, then prints one RESULT line per case: ms per layer (one cu_attn_prefill call;
// mean of 5-200 back-to-back launches, about 300 ms, after 3 warm-ups, L2 not flushed),
// achieved TFLOP/s (causal FLOPs = 4 * n_heads * hd * sum over queries of keys visible), that
// rate as a share of the GEMM rate, and an output checksum (to compare builds on the same GPU).
#include "attn_prefill_util.h"

struct bcase {
    int kv_type, bs, n, len;
};
static const struct bcase CASES[] = {
    {CU_KV_BF16, 16, 1, 1024}, {CU_KV_BF16, 16, 1, 4096}, {CU_KV_BF16, 16, 1, 12288}, {CU_KV_BF16, 16, 8, 1024},
    {CU_KV_BF16, 32, 1, 1024}, {CU_KV_BF16, 32, 1, 4096}, {CU_KV_BF16, 32, 1, 12288}, {CU_KV_BF16, 32, 8, 1024},
    {CU_KV_E4M3, 16, 1, 1024}, {CU_KV_E4M3, 16, 1, 4096}, {CU_KV_E4M3, 16, 1, 12288}, {CU_KV_E4M3, 16, 8, 1024},
    {CU_KV_E4M3, 32, 1, 1024}, {CU_KV_E4M3, 32, 1, 4096}, {CU_KV_E4M3, 32, 1, 12288}, {CU_KV_E4M3, 32, 8, 1024},
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

static void ck(cudaError_t e, const char *what) {
    if (e != cudaSuccess) fail_msg("%s: %s", what, cudaGetErrorString(e));
}

// Mean ms of one pf_run over back-to-back launches (about 300 ms of work, 5..200 launches).
static double time_case(struct pf_setup *s) {
    cudaEvent_t e0, e1;
    ck(cudaEventCreate(&e0), "event"), ck(cudaEventCreate(&e1), "event");
    for (int i = 0; i < 3; i++) pf_run(s, 0);
    ck(cudaEventRecord(e0, 0), "record");
    pf_run(s, 0);
    ck(cudaEventRecord(e1, 0), "record");
    ck(cudaEventSynchronize(e1), "sync");
    float ms1 = 0, ms = 0;
    ck(cudaEventElapsedTime(&ms1, e0, e1), "elapsed");
    int iters = ms1 > 0 ? (int)(300 / ms1) : 50;
    iters = iters < 5 ? 5 : iters > 200 ? 200 : iters;
    ck(cudaEventRecord(e0, 0), "record");
    for (int i = 0; i < iters; i++) pf_run(s, 0);
    ck(cudaEventRecord(e1, 0), "record");
    ck(cudaEventSynchronize(e1), "sync");
    ck(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return ms / iters;
}

int main(void) {
    double copy_bps = 0, gemm_flops = 0;
    char err[PG_ERR_LEN] = "";
    if (cu_measure_ceilings(&copy_bps, &gemm_flops, err)) {
        fprintf(stderr, "ceilings: %s\n", err);
        return 1;
    }
    struct cudaDeviceProp prop;
    ck(cudaGetDeviceProperties(&prop, 0), "props");
    printf("# prefill attention, 40q/8kv heads hd128, %s; cuBLAS bf16 GEMM (8192^3) %.1f TFLOP/s in this run\n",
           prop.name, gemm_flops / 1e12);
    printf("%-32s %9s %9s %9s %17s\n", "case", "ms", "TFLOP/s", "% GEMM", "checksum");
    for (int k = 0; k < N_CASES; k++) {
        const struct bcase *b = &CASES[k];
        struct pf_case c = {b->n, 40, 8, 128, b->kv_type, b->bs, {0}, {0}};
        for (int i = 0; i < b->n; i++) c.len[i] = c.nnew[i] = b->len;
        rng_seed(1000 + k);
        struct pf_setup s;
        pf_setup_init(&s, &c, false);
        const double ms = time_case(&s), flops = pf_flops(&c) / (ms * 1e-3);
        const size_t qn = (size_t)s.T * c.nh * c.hd;
        uint16_t *out = pg_malloc(qn * 2);
        to_host(out, s.dout, qn * 2);  // also fails on a recorded launch error
        double sum = 0;
        for (size_t i = 0; i < qn; i++) sum += bf(out[i]) * (double)((uint32_t)(i * 2654435761u) >> 24);
        char name[96];
        snprintf(name, sizeof name, "kv=%s bs=%d seqs=%d len=%d", b->kv_type == CU_KV_BF16 ? "bf16" : "e4m3", b->bs,
                 b->n, b->len);
        printf("%-32s %9.4f %9.1f %8.1f%% %17.10e\n", name, ms, flops / 1e12, 100 * flops / gemm_flops, sum);
        printf("RESULT attn_prefill %s ms=%.4f tflops=%.1f gemm_tflops=%.1f gemm_share=%.3f cksum=%.10e\n", name, ms,
               flops / 1e12, gemm_flops / 1e12, flops / gemm_flops, sum);
        fflush(stdout);
        free(out);
        pf_setup_free(&s);
    }
    return 0;
}
