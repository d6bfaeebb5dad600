// CPU decode benchmark driver (built by bench/cpu_decode.sh against build/libpagoda.a).
// Loads a model, prefills a prompt of P tokens, then decodes N tokens greedily one step at a
// time, and prints timings plus the weight bytes the kernels read per decode step.
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend.h"

static double linear_bytes(const struct linear *l) {
    if (!l->quantized) return (double)l->in * l->out * pg_dtype_size(l->w.dtype);
    int in_pad = (l->in + 31) & ~31;
    double row = l->bits == 8 ? in_pad : in_pad / 2;
    return l->out * (row + 8.0 * l->n_groups); // repacked: q bytes + f32 scale and zero*scale
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: cpu_decode DIR [threads] [prompt] [decode]\n"); return 2; }
    int threads = argc > 2 ? atoi(argv[2]) : 0, P = argc > 3 ? atoi(argv[3]) : 16, N = argc > 4 ? atoi(argv[4]) : 32;
    char err[PG_ERR_LEN];
    double t0 = pg_now();
    struct model_weights *w = model_load(argv[1], err);
    if (!w) { fprintf(stderr, "%s\n", err); return 1; }
    double t1 = pg_now();
    int total = P + N, bs = 16, nb = (total + bs - 1) / bs, got;
    struct backend_config bc = {.block_size = bs, .num_blocks = nb, .kv_dtype = PG_F32, .n_threads = threads};
    void *ctx;
    if (backend_cpu.init(&ctx, w, &bc, &got, err)) { fprintf(stderr, "%s\n", err); return 1; }
    double t2 = pg_now();
    int32_t *toks = pg_malloc((size_t)total * sizeof *toks), *bt = pg_malloc((size_t)nb * sizeof *bt);
    for (int i = 0; i < nb; i++) bt[i] = i;
    for (int i = 0; i < P; i++) toks[i] = (int32_t)(1000 + 37 * i) % w->cfg.vocab;
    struct sampling_params sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .logprobs = -1};
    double tp = 0, td = 0;
    int n = P;
    for (int step = 0; step <= N; step++) {
        int first = step == 0 ? 0 : n - 1;
        struct step_seq sq = {.n_new = n - first, .tokens = toks + first, .pos0 = first, .block_table = bt,
                              .n_blocks = nb, .sample = true};
        sq.smp = (struct sample_input){.params = &sp, .step = (uint64_t)step};
        struct step_batch b = {1, &sq, sq.n_new};
        struct step_result r;
        double s0 = pg_now();
        if (backend_cpu.execute(ctx, &b, err) || backend_cpu.collect(ctx, &r, err)) { fprintf(stderr, "%s\n", err); return 1; }
        double dt = pg_now() - s0;
        if (step == 0) tp = dt; else if (step > 1) td += dt; // step 1: warm-up
        if (n < total) toks[n++] = r.token;
    }
    double bytes = linear_bytes(&w->lm_head);
    for (int l = 0; l < w->cfg.n_layers; l++) {
        const struct layer_weights *L = &w->layers[l];
        const struct linear *ls[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        for (int k = 0; k < 7; k++) bytes += linear_bytes(ls[k]);
    }
    double tps = (N - 1) / td;
    char desc[256];
    model_config_describe(&w->cfg, desc, sizeof desc);
    printf("model: %s\n", desc);
    printf("load_s=%.2f init_s=%.2f prefill_tokens=%d prefill_tok_per_s=%.1f decode_tokens=%d decode_tok_per_s=%.2f "
           "weight_MB_per_token=%.1f weight_GBps=%.2f\n",
           t1 - t0, t2 - t1, P, P / tp, N - 1, tps, bytes / 1e6, bytes * tps / 1e9);
    backend_cpu.free(ctx);
    model_free(w);
    free(toks);
    free(bt);
    return 0;
}
