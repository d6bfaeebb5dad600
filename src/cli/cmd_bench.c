// pagoda bench: offline timings straight through the backend (no HTTP, no scheduler).
//   latency:    prefill time of single prompts (--prefill-lens) and decode ms/token at batch 1
//   throughput: for each --batch B: B prompts of --input-len, prefill, then --output-len
//               greedy decode steps; decode tokens/s and end-to-end tokens/s
// --async-scheduling keeps one decode step in flight (the engine's --async-scheduling: step n+1
// launched before step n is collected, its input token fed on the device); ms/token is then the
// time between consecutive collects, the steady-state time between tokens a client sees.
// Weights come from --model DIR (when the loader is linked) or --random PRESET [--gptq-int4]
// (make_model's generator, in memory). --ceilings measures the copy bandwidth and cuBLAS
// bf16 GEMM rate first and prints the byte/FLOP floor beside each number.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/bench_decode.h"
#include "cli/commands.h"
#include "cli/tool_exec.h"
#include "model/make_model.h"
#ifdef PAGODA_CUDA
#include "backend/cuda/cuda_ops.h"
extern const struct backend_ops backend_cuda;
#endif

#define MAXL 16

struct bopt {
    const char *mode, *model, *preset, *json;
    bool gptq, eager, ceilings, async;
    int batches[MAXL], n_batches, prefill[MAXL], n_prefill;
    int input_len, output_len, reps, max_model_len;
    float util;
    enum pg_dtype kv;
    uint64_t seed;
    double bw, flops;  // measured ceilings (0 = unknown)
};

static int parse_list(const char *s, int *out) {
    int n = 0;
    while (*s && n < MAXL) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

static void usage(FILE *f) {
    fprintf(f, "usage: pagoda bench latency|throughput|ceilings (--model DIR | --random PRESET [--gptq-int4])\n"
               "  [--batch 8,32,...] [--input-len 512] [--output-len 128] [--prefill-lens 1024,4096] [--reps 3]\n"
               "  [--kv-cache-dtype auto|bf16|fp8|fp8_e4m3|fp8_e5m2] [--enforce-eager] [--gpu-memory-utilization 0.9]\n"
               "  [--max-model-len N] [--seed N] [--async-scheduling] [--ceilings] [--json FILE]\n");
}

static int parse(int argc, char **argv, struct bopt *o) {
    memset(o, 0, sizeof *o);
    o->input_len = 512;
    o->output_len = 128;
    o->reps = 3;
    o->util = 0.9f;
    o->kv = PG_BF16;
    o->batches[0] = 1;
    o->n_batches = 1;
    o->prefill[0] = 1024;
    o->prefill[1] = 4096;
    o->n_prefill = 2;
    if (argc < 2) return -1;
    o->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--gptq-int4")) o->gptq = true;
        else if (!strcmp(a, "--enforce-eager")) o->eager = true;
        else if (!strcmp(a, "--ceilings")) o->ceilings = true;
        else if (!strcmp(a, "--async-scheduling")) o->async = true;
        else if (!v) return -1;
        else if (!strcmp(a, "--model")) o->model = argv[++i];
        else if (!strcmp(a, "--random")) o->preset = argv[++i];
        else if (!strcmp(a, "--json")) o->json = argv[++i];
        else if (!strcmp(a, "--batch")) o->n_batches = parse_list(argv[++i], o->batches);
        else if (!strcmp(a, "--prefill-lens")) o->n_prefill = parse_list(argv[++i], o->prefill);
        else if (!strcmp(a, "--input-len")) o->input_len = atoi(argv[++i]);
        else if (!strcmp(a, "--output-len")) o->output_len = atoi(argv[++i]);
        else if (!strcmp(a, "--reps")) o->reps = atoi(argv[++i]);
        else if (!strcmp(a, "--max-model-len")) o->max_model_len = atoi(argv[++i]);
        else if (!strcmp(a, "--gpu-memory-utilization")) o->util = (float)atof(argv[++i]);
        else if (!strcmp(a, "--seed")) o->seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--kv-cache-dtype")) {
            const char *k = argv[++i];
            if (!strcmp(k, "fp8") || !strcmp(k, "fp8_e4m3")) o->kv = PG_F8_E4M3;
            else if (!strcmp(k, "fp8_e5m2")) o->kv = PG_F8_E5M2;
            else if (strcmp(k, "auto") && strcmp(k, "bf16") && strcmp(k, "bfloat16")) return -1;
        } else return -1;
    }
    if (o->input_len < 1 || o->output_len < 2 || o->reps < 1) return -1;
    return 0;
}

#ifdef PAGODA_CUDA
// Bytes one decode step must read (weights + KV of every sequence) and prefill FLOPs.
static double weight_bytes(const struct model_config *c) {
    double H = c->hidden, qo = (double)c->n_heads * c->head_dim, kvo = (double)c->n_kv_heads * c->head_dim;
    double lin = c->n_layers * (H * (qo + 2 * kvo) + qo * H + 3 * H * c->intermediate);
    double per = c->quant.method == QUANT_GPTQ ? 0.5 + 2.0 / c->quant.group_size : 2.0;
    return lin * per + (double)c->vocab * H * 2;
}
static double kv_bytes_per_token(const struct model_config *c, enum pg_dtype kv) {
    return 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * (kv == PG_F8_E4M3 || kv == PG_F8_E5M2 ? 1 : 2);
}
static double prefill_flops(const struct model_config *c, int L) {
    double H = c->hidden, qo = (double)c->n_heads * c->head_dim, kvo = (double)c->n_kv_heads * c->head_dim;
    double lin = c->n_layers * (H * (qo + 2 * kvo) + qo * H + 3 * H * c->intermediate);
    return 2.0 * L * lin + 2.0 * (double)L * L * qo * c->n_layers + 2.0 * H * c->vocab;
}

static void emit(const struct bopt *o, const char *line) {
    printf("RESULT %s\n", line);
    if (o->json) {
        FILE *f = fopen(o->json, "a");
        if (f) {
            fprintf(f, "%s\n", line);
            fclose(f);
        }
    }
}

struct bseq {
    int32_t *toks, *bt;
    int n_tok, n_blocks;
};

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Runs one step; returns seconds or -1.
static double step(const struct backend_ops *be, void *ctx, struct step_batch *b, struct step_result *res, char *err) {
    double t0 = pg_now();
    if (be->execute(ctx, b, err) || be->collect(ctx, res, err)) return -1;
    return pg_now() - t0;
}

#define TBUDGET 8192
#define BS 16

// B sequences of input_len random tokens: prefill (whole prompts, packed up to TBUDGET tokens
// a step, synchronous), 3 untimed decode steps (graph capture), then output_len - 1 timed decode
// steps (bench_decode_run: synchronous, or pipelined with --async-scheduling).
static int run_batch(const struct backend_ops *be, void *ctx, const struct model_config *mc, const struct bopt *o,
                     int B, int num_blocks, char *err) {
    const int max_len = o->input_len + o->output_len + 4, per = (max_len + BS - 1) / BS;
    if ((long)B * per > num_blocks) {
        pg_seterr(err, "batch %d needs %d KV blocks, have %d", B, B * per, num_blocks);
        return -1;
    }
    struct sampling_params sp;
    memset(&sp, 0, sizeof sp);
    sp.top_p = 1;
    sp.repetition_penalty = 1;
    sp.logprobs = -1;
    struct bseq *s = pg_calloc(B, sizeof *s);
    struct step_seq *ss = pg_calloc(B, sizeof *ss);
    struct step_result *res = pg_calloc(B, sizeof *res);
    int32_t *last = pg_calloc(B, sizeof(int32_t));
    const int32_t **bts = pg_calloc(B, sizeof *bts);
    double *ts = pg_calloc(o->output_len + 2, sizeof(double)), *dt = ts + 3; // dt: the timed steps
    for (int i = 0; i < B; i++) {
        s[i].toks = pg_malloc(sizeof(int32_t) * o->input_len);
        s[i].bt = pg_malloc(sizeof(int32_t) * per);
        for (int k = 0; k < o->input_len; k++) s[i].toks[k] = (int32_t)(pg_mix64(o->seed ^ ((uint64_t)i << 32) ^ k) % mc->vocab);
        for (int k = 0; k < per; k++) s[i].bt[k] = i * per + k;
        bts[i] = s[i].bt;
    }
    int rc = -1;
    double t_pre = 0, t_dec = 0;
    for (int i0 = 0; i0 < B;) {  // prefill
        int n = 0, T = 0;
        while (i0 + n < B && T + o->input_len <= TBUDGET) {
            struct step_seq *q = &ss[n];
            memset(q, 0, sizeof *q);
            q->n_new = o->input_len;
            q->tokens = s[i0 + n].toks;
            q->block_table = s[i0 + n].bt;
            q->n_blocks = per;
            q->sample = true;
            q->smp.params = &sp;
            T += o->input_len;
            n++;
        }
        struct step_batch b = {n, ss, T};
        double t = step(be, ctx, &b, res, err);
        if (t < 0) goto done;
        t_pre += t;
        for (int k = 0; k < n; k++) last[i0 + k] = res[k].token;
        i0 += n;
    }
    struct bench_decode d = {.n_seqs = B, .block_tables = bts, .n_blocks = per, .pos0 = o->input_len,
                             .n_steps = o->output_len + 2, .pipelined = o->async, .last = last, .t_step = ts};
    if (bench_decode_run(be, ctx, &d, err)) goto done;  // the first 3 steps warm up
    int nd = o->output_len - 1;
    for (int k = 0; k < nd; k++) t_dec += dt[k];
    qsort(dt, nd, sizeof(double), cmp_d);
    double med = dt[nd / 2], mean = t_dec / nd;
    int ctx_mid = o->input_len + o->output_len / 2;
    double bytes = weight_bytes(mc) + (double)B * ctx_mid * kv_bytes_per_token(mc, o->kv);
    char line[1024];
    snprintf(line, sizeof line,
             "{\"mode\":\"%s\",\"model\":\"%s%s\",\"kv\":\"%s\",\"graphs\":%s,\"async_scheduling\":%s,\"batch\":%d,\"input_len\":%d,\"output_len\":%d,\"decode_ms_per_step_median\":%.3f,"
             "\"decode_ms_per_step_mean\":%.3f,\"decode_tok_per_s\":%.1f,\"prefill_s\":%.3f,\"e2e_tok_per_s\":%.1f,"
             "\"floor_ms_per_step\":%.3f,\"step_bytes\":%.4g}",
             o->mode, o->preset ? o->preset : o->model, o->gptq ? "-gptq-int4" : "", pg_dtype_name(o->kv),
             o->eager ? "false" : "true", o->async ? "true" : "false", B, o->input_len, o->output_len, med * 1e3, mean * 1e3, B / mean, t_pre,
             (double)B * o->output_len / (t_pre + t_dec + mean), o->bw > 0 ? bytes / o->bw * 1e3 : 0.0, bytes);
    emit(o, line);
    printf("batch %3d%s: decode %.3f ms/step (median; floor %.3f ms at %.0f GB/s), %.1f tok/s decode, %.1f tok/s "
           "end-to-end; prefill %d x %d tokens %.3f s\n",
           B, o->async ? " (async scheduling)" : "", med * 1e3, o->bw > 0 ? bytes / o->bw * 1e3 : 0.0, o->bw / 1e9, B / mean,
           (double)B * o->output_len / (t_pre + t_dec + mean), B, o->input_len, t_pre);
    rc = 0;
done:
    for (int i = 0; i < B; i++) {
        free(s[i].toks);
        free(s[i].bt);
    }
    free(s);
    free(ss);
    free(res);
    free(last);
    free(bts);
    free(ts);
    return rc;
}

static int run_prefill(const struct backend_ops *be, void *ctx, const struct model_config *mc, const struct bopt *o,
                       int L, char *err) {
    int per = (L + BS - 1) / BS;
    int32_t *toks = pg_malloc(sizeof(int32_t) * L), *bt = pg_malloc(sizeof(int32_t) * per);
    for (int k = 0; k < L; k++) toks[k] = (int32_t)(pg_mix64(o->seed + 7 + k) % mc->vocab);
    for (int k = 0; k < per; k++) bt[k] = k;
    struct sampling_params sp;
    memset(&sp, 0, sizeof sp);
    sp.top_p = 1;
    sp.repetition_penalty = 1;
    sp.logprobs = -1;
    struct step_seq q;
    memset(&q, 0, sizeof q);
    q.n_new = L;
    q.tokens = toks;
    q.block_table = bt;
    q.n_blocks = per;
    q.sample = true;
    q.smp.params = &sp;
    struct step_batch b = {1, &q, L};
    struct step_result res;
    double t[16];
    int n = o->reps + 1 > 16 ? 16 : o->reps + 1, rc = 0;
    for (int r = 0; r < n && !rc; r++)
        if ((t[r] = step(be, ctx, &b, &res, err)) < 0) rc = -1;
    if (!rc) {
        qsort(t + 1, n - 1, sizeof(double), cmp_d);  // t[0] warms up
        double med = t[1 + (n - 1) / 2], fl = prefill_flops(mc, L);
        char line[512];
        snprintf(line, sizeof line,
                 "{\"mode\":\"prefill\",\"model\":\"%s%s\",\"kv\":\"%s\",\"prompt_len\":%d,\"prefill_ms_median\":%.3f,\"flops\":%.4g,\"floor_ms\":%.3f,"
                 "\"tflops_achieved\":%.1f}",
                 o->preset ? o->preset : o->model, o->gptq ? "-gptq-int4" : "", pg_dtype_name(o->kv), L, med * 1e3, fl, o->flops > 0 ? fl / o->flops * 1e3 : 0.0, fl / med / 1e12);
        emit(o, line);
        printf("prefill %5d tokens: %.2f ms (median of %d; floor %.2f ms at %.0f TFLOP/s; %.0f TFLOP/s achieved)\n", L,
               med * 1e3, n - 1, o->flops > 0 ? fl / o->flops * 1e3 : 0.0, o->flops / 1e12, fl / med / 1e12);
    }
    free(toks);
    free(bt);
    return rc;
}

#endif

int cmd_bench(int argc, char **argv) {
    struct bopt o;
    // `pagoda bench serve`: the load generator for any OpenAI-compatible endpoint (a client
    // tool, tools/bench_serve.py, outside the serving path).
    if (argc >= 2 && !strcmp(argv[1], "serve")) return tool_exec("bench_serve.py", argc - 2, argv + 2);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (parse(argc, argv, &o) || (strcmp(o.mode, "latency") && strcmp(o.mode, "throughput") && strcmp(o.mode, "ceilings"))) {
        usage(stderr);
        return 2;
    }
#ifndef PAGODA_CUDA
    fprintf(stderr, "pagoda bench: this binary was built without CUDA (make CUDA=1)\n");
    return 1;
#else
    char err[PG_ERR_LEN] = "";
    const struct backend_ops *be = &backend_cuda;
    if (o.ceilings || !strcmp(o.mode, "ceilings")) {
        if (cu_measure_ceilings(&o.bw, &o.flops, err)) {
            fprintf(stderr, "pagoda bench: %s\n", err);
            return 1;
        }
        char line[256];
        snprintf(line, sizeof line, "{\"mode\":\"ceilings\",\"copy_GBps\":%.1f,\"bf16_gemm_TFLOPs\":%.1f}", o.bw / 1e9,
                 o.flops / 1e12);
        emit(&o, line);
        if (!strcmp(o.mode, "ceilings")) return 0;
    }
    struct model_weights *w = NULL;
    struct model_config mc;
    double t0 = pg_now();
    if (o.preset) {
        if (make_model_config(o.preset, o.gptq, &mc, err) || !(w = make_model_weights(&mc, o.seed, 0, err))) {
            fprintf(stderr, "pagoda bench: %s\n", err);
            return 1;
        }
    } else if (o.model) {
        if (!(w = model_load(o.model, err))) {
            fprintf(stderr, "pagoda bench: %s\n", err);
            return 1;
        }
    } else {
        fprintf(stderr, "pagoda bench: give --random PRESET or --model DIR\n");
        return 2;
    }
    mc = w->cfg;  // with --model, mc was never filled (vocab, byte and FLOP floors read it)
    printf("weights ready in %.1f s\n", pg_now() - t0);
    int maxb = 1, maxp = 0;
    for (int i = 0; i < o.n_batches; i++) maxb = o.batches[i] > maxb ? o.batches[i] : maxb;
    for (int i = 0; i < o.n_prefill; i++) maxp = o.prefill[i] > maxp ? o.prefill[i] : maxp;
    struct backend_config bc;
    memset(&bc, 0, sizeof bc);
    bc.block_size = BS;
    bc.gpu_memory_utilization = o.util;
    bc.kv_dtype = o.kv;
    bc.max_num_seqs = maxb;
    bc.max_num_batched_tokens = TBUDGET > maxp ? TBUDGET : maxp;
    bc.max_model_len = o.max_model_len > 0 ? o.max_model_len
                       : (o.input_len + o.output_len + 16 > maxp ? o.input_len + o.output_len + 16 : maxp);
    bc.enforce_eager = o.eager;
    bc.tensor_parallel_size = 1;
    bc.seed = o.seed;
    bc.max_inflight = o.async ? 2 : 0;  // 0: execute, collect, execute, ... (today's bench)
    void *ctx = NULL;
    int nb = 0, rc = 0;
    t0 = pg_now();
    if (be->init(&ctx, w, &bc, &nb, err)) {
        fprintf(stderr, "pagoda bench: %s\n", err);
        if (o.preset) make_model_free(w); else model_free(w);
        return 1;
    }
    printf("backend init %.1f s, %d KV blocks; model %s%s, kv %s, %s%s\n", pg_now() - t0, nb,
           o.preset ? o.preset : o.model, o.gptq ? " gptq-int4" : "", pg_dtype_name(o.kv), o.eager ? "eager" : "graphs",
           o.async ? ", async scheduling" : "");
    if (!strcmp(o.mode, "latency"))
        for (int i = 0; i < o.n_prefill && !rc; i++) rc = run_prefill(be, ctx, &mc, &o, o.prefill[i], err);
    for (int i = 0; i < o.n_batches && !rc; i++) rc = run_batch(be, ctx, &mc, &o, o.batches[i], nb, err);
    if (rc) fprintf(stderr, "pagoda bench: %s\n", err);
    be->free(ctx);
    if (o.preset) make_model_free(w); else model_free(w);
    return rc ? 1 : 0;
#endif
}
