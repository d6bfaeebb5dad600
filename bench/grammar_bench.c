// Grammar engine driver for tests and benchmarks (not part of the server).
//
//   grammar_bench gen   --vocab TOKENIZER_JSON --kind KIND --spec FILE [--ws RE] [--n N] [--seed S]
//                       [--max-tokens M]
//       Random walks over the token mask (a high-temperature sampler stand-in: uniform over
//       allowed tokens, EOS picked often when allowed, a "finish" bias after M/2 tokens).
//       Prints one JSON line per sample: {"text": ..., "finished": bool, "tokens": n}.
//       Also checks per step that accept_token agrees with the mask on random tokens;
//       exit 1 on any disagreement.
//   grammar_bench check --vocab ... --kind KIND --spec FILE   -> "ok" or "error: MSG" (exit 0/1)
//   grammar_bench bench --vocab ... --kind KIND --spec FILE [--n N] [--seed S] [--max-tokens M]
//       Prints one JSON line: compile times (ms) and mask times (us) per token.
// KIND: json_schema | json_object | regex | choice | ebnf
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grammar/grammar.h"
#include "grammar/vocab_json.h"

static const int32_t k_eos[2] = {151643, 151645};
enum { MODEL_VOCAB = 151936 };

struct opts {
    const char *cmd, *vocab, *kind, *ws;
    const char *specs[4096];
    int n_specs;
    int n, max_tokens;
    unsigned long long seed;
};

static uint64_t rng_next(uint64_t *s) { // splitmix64
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int parse_kind(const char *k, enum grammar_kind *out) {
    static const char *names[] = {"json_schema", "json_object", "regex", "choice", "ebnf"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(k, names[i])) { *out = (enum grammar_kind)i; return 0; }
    return -1;
}

// Thread CPU time in seconds: the host is shared, so wall time includes other jobs' load.
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool allowed(const uint32_t *mask, int32_t id) { return (mask[id >> 5] >> (id & 31)) & 1; }

// One random walk. Returns 0, or -1 on a mask/accept disagreement (message printed).
static int walk(const struct grammar_vocab *v, struct grammar *g, uint64_t *rng, int max_tokens,
                double *mask_us, int *n_mask, char **text, size_t *text_len, bool *finished, int *ntok,
                bool check) {
    struct grammar_matcher *m = grammar_matcher_new(g);
    uint32_t *mask = malloc((MODEL_VOCAB + 31) / 32 * 4);
    int32_t *cand = malloc(MODEL_VOCAB * sizeof(int32_t)), *short_cand = malloc(MODEL_VOCAB * sizeof(int32_t));
    size_t cap = 256, len = 0;
    char *out = malloc(cap);
    int rc = 0;
    *finished = false;
    int step;
    for (step = 0; step < max_tokens && !grammar_is_terminated(m); step++) {
        double t0 = cpu_now();
        grammar_fill_mask(m, mask);
        if (mask_us) mask_us[(*n_mask)++] = (cpu_now() - t0) * 1e6;
        int nc = 0, ns = 0;
        bool eos_ok = allowed(mask, k_eos[0]);
        for (int32_t id = 0; id < MODEL_VOCAB; id++) {
            if (!allowed(mask, id) || id == k_eos[0] || id == k_eos[1]) continue;
            cand[nc++] = id;
            size_t tl;
            const char *tb = grammar_vocab_token(v, id, &tl);
            if (tb && tl == 1) short_cand[ns++] = id;
        }
        if (check) // tokens outside the mask must be rejected (and leave the state alone)
            for (int k = 0; k < 16; k++) {
                int32_t id = (int32_t)(rng_next(rng) % MODEL_VOCAB);
                if (!allowed(mask, id) && grammar_accept_token(m, id) == 0) {
                    fprintf(stderr, "mask disagreement: token %d accepted but masked out\n", id);
                    rc = -1;
                    goto done;
                }
            }
        bool finish = step >= max_tokens / 2;
        int32_t pick;
        if (eos_ok && (finish || rng_next(rng) % 3 == 0)) pick = k_eos[0];
        else if (!nc) {
            fprintf(stderr, "dead end: no token allowed after %d tokens\n", step);
            rc = -1;
            goto done;
        } else if (finish && ns) { // half the time closing punctuation, else any single byte
            pick = short_cand[rng_next(rng) % (uint64_t)ns];
            int ncl = 0;
            int32_t closers[3];
            for (int k = 0; k < ns && ncl < 3; k++) {
                size_t tl;
                char ch = grammar_vocab_token(v, short_cand[k], &tl)[0];
                if (ch == '"' || ch == '}' || ch == ']') closers[ncl++] = short_cand[k];
            }
            if (ncl && rng_next(rng) % 2) { // a quote first: inside strings } and ] are content
                pick = closers[rng_next(rng) % (uint64_t)ncl];
                for (int k = 0; k < ncl; k++) {
                    size_t tl;
                    if (grammar_vocab_token(v, closers[k], &tl)[0] == '"') pick = closers[k];
                }
            }
        } else if (ns && rng_next(rng) % 5 == 0) pick = short_cand[rng_next(rng) % (uint64_t)ns];
        else pick = cand[rng_next(rng) % (uint64_t)nc];
        if (grammar_accept_token(m, pick) != 0) {
            fprintf(stderr, "mask disagreement: allowed token %d rejected\n", pick);
            rc = -1;
            goto done;
        }
        if (pick == k_eos[0]) { *finished = true; break; }
        size_t tl;
        const char *tb = grammar_vocab_token(v, pick, &tl);
        if (len + tl + 1 > cap) { cap = 2 * (len + tl + 1); out = realloc(out, cap); }
        memcpy(out + len, tb, tl);
        len += tl;
    }
    if (grammar_is_terminated(m)) *finished = true;
    *ntok = step;
done:
    out[len] = 0;
    *text = out;
    *text_len = len;
    free(mask); free(cand); free(short_cand);
    grammar_matcher_free(m);
    return rc;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *xs, int n, double p) {
    if (!n) return 0;
    qsort(xs, (size_t)n, sizeof(double), cmp_d);
    int i = (int)(p * (n - 1) + 0.5);
    return xs[i];
}

static int run_spec(const struct opts *o, const struct grammar_vocab *v, enum grammar_kind kind,
                    const char *path, double vocab_ms) {
    char err[PG_ERR_LEN] = "";
    size_t spec_len;
    char *spec = pg_read_file(path, &spec_len, err);
    if (!spec) { fprintf(stderr, "%s\n", err); return 2; }
    int rc = 0;
    if (!strcmp(o->cmd, "check")) {
        struct grammar *g = grammar_compile(v, kind, spec, spec_len, o->ws, err);
        json_t *line = json_pack("{s:s,s:b,s:s}", "spec", path, "ok", g != NULL, "error", g ? "" : err);
        char *js = json_dumps(line, JSON_COMPACT);
        printf("%s\n", js);
        free(js);
        json_decref(line);
        grammar_release(g);
    } else {
        bool bench = !strcmp(o->cmd, "bench");
        int ncomp = bench ? 10 : 1;
        double comp[10];
        struct grammar *g = NULL;
        for (int i = 0; i < ncomp; i++) {
            grammar_release(g);
            double c0 = cpu_now();
            g = grammar_compile(v, kind, spec, spec_len, o->ws, err);
            comp[i] = (cpu_now() - c0) * 1e3;
            if (!g) { fprintf(stderr, "compile %s: %s\n", path, err); free(spec); return 1; }
        }
        uint64_t rng = o->seed;
        double *us = malloc((size_t)(o->n * (o->max_tokens + 1) + 1) * sizeof(double));
        int nus = 0, first_n = 0;
        for (int s = 0; s < o->n && !rc; s++) {
            char *text;
            size_t tl;
            bool fin = false;
            int ntok = 0;
            rc = walk(v, g, &rng, o->max_tokens, bench ? us : NULL, &nus, &text, &tl, &fin, &ntok, !bench);
            if (rc) fprintf(stderr, "in %s\n", path);
            if (s == 0) first_n = nus;
            if (!bench) {
                json_t *line = json_pack("{s:s,s:s%,s:b,s:i}", "spec", path, "text", text, tl, "finished", fin, "tokens", ntok);
                char *js = line ? json_dumps(line, JSON_COMPACT) : NULL;
                if (js) printf("%s\n", js);
                else printf("{\"spec\": \"%s\", \"text\": null, \"finished\": %s}\n", path, fin ? "true" : "false");
                free(js);
                json_decref(line);
            }
            free(text);
        }
        if (bench) {
            double *firsts = malloc((size_t)(first_n + 1) * sizeof(double));
            memcpy(firsts, us, (size_t)first_n * sizeof(double));
            double f50 = pct(firsts, first_n, 0.5), f99 = pct(firsts, first_n, 0.99);
            free(firsts);
            double p50 = pct(us, nus, 0.5), p99 = pct(us, nus, 0.99), mx = pct(us, nus, 1.0);
            printf("{\"spec\": \"%s\", \"compile_ms_p50\": %.3f, \"compile_ms_max\": %.3f, \"tokens\": %d, "
                   "\"mask_us_p50\": %.2f, \"mask_us_p99\": %.2f, \"mask_us_max\": %.2f, "
                   "\"first_gen_mask_us_p50\": %.2f, \"first_gen_mask_us_p99\": %.2f, \"vocab_load_ms\": %.1f, \"mask_us\": [",
                   path, pct(comp, ncomp, 0.5), pct(comp, ncomp, 1.0), nus, p50, p99, mx, f50, f99, vocab_ms);
            for (int i = 0; i < nus; i++) printf("%s%.2f", i ? "," : "", us[i]);
            printf("]}\n");
            fflush(stdout);
        }
        free(us);
        grammar_release(g);
    }
    free(spec);
    return rc;
}

int main(int argc, char **argv) {
    static struct opts o = {.vocab = "../shared/models/qwen-tokenizer/tokenizer.json", .n = 10, .max_tokens = 400, .seed = 1};
    if (argc < 2) { fprintf(stderr, "usage: grammar_bench gen|check|bench [options]\n"); return 2; }
    o.cmd = argv[1];
    if (strcmp(o.cmd, "gen") && strcmp(o.cmd, "check") && strcmp(o.cmd, "bench")) {
        fprintf(stderr, "unknown command %s\n", o.cmd);
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--vocab")) o.vocab = v;
        else if (!strcmp(k, "--kind")) o.kind = v;
        else if (!strcmp(k, "--spec") && o.n_specs < 4096) o.specs[o.n_specs++] = v;
        else if (!strcmp(k, "--ws")) o.ws = v;
        else if (!strcmp(k, "--n")) o.n = atoi(v);
        else if (!strcmp(k, "--max-tokens")) o.max_tokens = atoi(v);
        else if (!strcmp(k, "--seed")) o.seed = strtoull(v, NULL, 10);
        else { fprintf(stderr, "unknown option %s\n", k); return 2; }
    }
    enum grammar_kind kind;
    if (!o.kind || parse_kind(o.kind, &kind) || !o.n_specs) { fprintf(stderr, "need --kind and --spec\n"); return 2; }
    char err[PG_ERR_LEN] = "";
    double t0 = pg_now();
    struct grammar_vocab *v = grammar_vocab_load_hf(o.vocab, MODEL_VOCAB, k_eos, 2, err);
    if (!v) { fprintf(stderr, "%s\n", err); return 2; }
    double vocab_ms = (pg_now() - t0) * 1e3;
    int rc = 0;
    for (int i = 0; i < o.n_specs; i++) {
        int r = run_spec(&o, v, kind, o.specs[i], vocab_ms);
        if (r > rc) rc = r;
    }
    grammar_vocab_free(v);
    return rc;
}
