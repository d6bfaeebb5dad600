// Benchmark of the prefill attention (attn_prefill.cu): the new kernel against the previous
// one (PAGODA_OLD_PREFILL_ATTN=1) side by side, Qwen2.5-14B attention shape (40 q heads, 8 kv
// heads, head_dim 128), bf16 and fp8 e4m3 KV, block sizes 16 and 32, prompts of 1024, 4096,
// 12288 tokens (one sequence) and 8 x 1024. Built with the GPU tests, not run by test-cuda:
//   make CUDA=1 build-cuda/tests-cuda/bench_attn_prefill && build-cuda/tests-cuda/bench_attn_prefill
// The parent runs itself twice ("--child", once per kernel: the variable is read once per
// process) and prints one RESULT line per case: ms per layer (one cu_attn_prefill call) and
// achieved TFLOP/s (causal FLOPs = 4 * n_heads * hd * sum over queries of keys visible), plus
// the relative difference of an output checksum between the two kernels.
#include <unistd.h>

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

static void case_name(const struct bcase *b, char *buf, size_t n) {
    snprintf(buf, n, "kv=%s bs=%d seqs=%d len=%d", b->kv_type == CU_KV_BF16 ? "bf16" : "e4m3", b->bs, b->n, b->len);
}

// One kernel (chosen by the environment): "CASE <index> <ms> <checksum>" per case.
static int child(void) {
    for (int k = 0; k < N_CASES; k++) {
        const struct bcase *b = &CASES[k];
        struct pf_case c = {b->n, 40, 8, 128, b->kv_type, b->bs, {0}, {0}};
        for (int i = 0; i < b->n; i++) c.len[i] = c.nnew[i] = b->len;
        rng_seed(1000 + k);
        struct pf_setup s;
        pf_setup_init(&s, &c, false);
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0), cudaEventCreate(&e1);
        for (int i = 0; i < 3; i++) pf_run(&s, 0);
        cudaEventRecord(e0, 0);
        pf_run(&s, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms1 = 0;
        cudaEventElapsedTime(&ms1, e0, e1);
        int iters = ms1 > 0 ? (int)(300 / ms1) : 50;
        iters = iters < 5 ? 5 : iters > 200 ? 200 : iters;
        cudaEventRecord(e0, 0);
        for (int i = 0; i < iters; i++) pf_run(&s, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        const size_t qn = (size_t)s.T * c.nh * c.hd;
        uint16_t *out = pg_malloc(qn * 2);
        to_host(out, s.dout, qn * 2);  // also fails on a recorded launch error
        double sum = 0;
        for (size_t i = 0; i < qn; i++) sum += bf(out[i]) * (double)((uint32_t)(i * 2654435761u) >> 24);
        printf("CASE %d %.5f %.10e\n", k, ms / iters, sum);
        fflush(stdout);
        free(out);
        cudaEventDestroy(e0), cudaEventDestroy(e1);
        pf_setup_free(&s);
    }
    return 0;
}

// Runs this binary with --child under the given PAGODA_OLD_PREFILL_ATTN; fills ms / sums.
static int run_child(const char *self, bool old, double *ms, double *sum) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "PAGODA_OLD_PREFILL_ATTN=%d '%s' --child", old ? 1 : 0, self);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[256];
    int got = 0;
    while (fgets(line, sizeof line, p)) {
        int k;
        double m, su;
        if (sscanf(line, "CASE %d %lf %lf", &k, &m, &su) == 3 && k >= 0 && k < N_CASES) {
            ms[k] = m, sum[k] = su, got++;
            fprintf(stderr, "  %s case %d: %.3f ms\n", old ? "old" : "new", k, m);
        } else {
            fputs(line, stdout);
        }
    }
    return pclose(p) == 0 && got == N_CASES ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--child") == 0) return child();
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    double ms_old[N_CASES] = {0}, ms_new[N_CASES] = {0}, s_old[N_CASES] = {0}, s_new[N_CASES] = {0};
    int rc_new = run_child(self, false, ms_new, s_new), rc_old = run_child(self, true, ms_old, s_old);
    printf("%-34s %10s %10s %8s %9s %9s %10s\n", "case (40q/8kv hd128)", "old ms", "new ms", "speedup", "old TF/s",
           "new TF/s", "cksum diff");
    for (int k = 0; k < N_CASES; k++) {
        const struct bcase *b = &CASES[k];
        struct pf_case c = {b->n, 40, 8, 128, b->kv_type, b->bs, {0}, {0}};
        for (int i = 0; i < b->n; i++) c.len[i] = c.nnew[i] = b->len;
        double f = pf_flops(&c), d = fabs(s_new[k] - s_old[k]) / (fabs(s_old[k]) > 0 ? fabs(s_old[k]) : 1);
        char name[96];
        case_name(b, name, sizeof name);
        printf("RESULT attn_prefill %s old_ms=%.4f new_ms=%.4f speedup=%.2f old_tflops=%.1f new_tflops=%.1f "
               "cksum_rel_diff=%.2e\n",
               name, ms_old[k], ms_new[k], ms_new[k] > 0 ? ms_old[k] / ms_new[k] : 0, ms_old[k] > 0 ? f / ms_old[k] / 1e9 : 0,
               ms_new[k] > 0 ? f / ms_new[k] / 1e9 : 0, d);
    }
    if (rc_new || rc_old) fprintf(stderr, "a child run failed (new rc %d, old rc %d)\n", rc_new, rc_old);
    return rc_new || rc_old ? 1 : 0;
}
