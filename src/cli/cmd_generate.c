// `pagoda generate --model DIR --prompt-ids 1,2,3 --max-tokens N`: greedy generation on the
// CPU backend from token ids, printing the generated ids comma-separated on one line.
// (The engine engineer extends this with text prompts, sampling and batches.)
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/commands.h"

static int parse_ids(const char *s, int32_t **ids, int *n) {
    *n = 0;
    *ids = NULL;
    int cap = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) return -1;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            *ids = pg_realloc(*ids, (size_t)cap * sizeof **ids);
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return *n > 0 ? 0 : -1;
}

static void usage(void) {
    fprintf(stderr, "usage: pagoda generate --model DIR --prompt-ids 1,2,3 [--max-tokens N] [--threads N]\n");
}

static int run(const char *dir, const int32_t *prompt, int n_prompt, int max_tokens, int threads) {
    char err[PG_ERR_LEN];
    struct model_weights *w = model_load(dir, err);
    if (!w) {
        fprintf(stderr, "pagoda: %s\n", err);
        return 1;
    }
    int total = n_prompt + max_tokens, bs = 16, nb = (total + bs - 1) / bs, got = 0, rc = 1;
    struct backend_config bc = {.block_size = bs, .num_blocks = nb, .kv_dtype = PG_F32, .n_threads = threads};
    void *ctx = NULL;
    int32_t *toks = pg_malloc((size_t)total * sizeof *toks), *bt = pg_malloc((size_t)nb * sizeof *bt);
    memcpy(toks, prompt, (size_t)n_prompt * sizeof *toks);
    for (int i = 0; i < nb; i++) bt[i] = i;
    if (backend_cpu.init(&ctx, w, &bc, &got, err)) goto out;
    struct sampling_params sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .logprobs = -1};
    int n = n_prompt;
    for (int step = 0; step < max_tokens; step++) {
        int first = step == 0 ? 0 : n - 1;
        struct step_seq sq = {.n_new = n - first, .tokens = toks + first, .pos0 = first,
                              .block_table = bt, .n_blocks = nb, .sample = true};
        sq.smp = (struct sample_input){.params = &sp, .step = (uint64_t)step, .prompt = prompt,
                                       .n_prompt = n_prompt, .output = toks + n_prompt, .n_output = n - n_prompt};
        struct step_batch b = {1, &sq, sq.n_new};
        struct step_result r;
        if (backend_cpu.execute(ctx, &b, err) || backend_cpu.collect(ctx, &r, err)) goto out;
        toks[n++] = r.token;
        printf("%s%d", step ? "," : "", r.token);
        fflush(stdout);
    }
    printf("\n");
    rc = 0;
out:
    if (rc) fprintf(stderr, "pagoda: %s\n", err);
    if (ctx) backend_cpu.free(ctx);
    free(toks);
    free(bt);
    model_free(w);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    const char *dir = NULL, *ids = NULL;
    int max_tokens = 16, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
        if (!v) { usage(); return 2; }
        if (!strcmp(a, "--model")) dir = v;
        else if (!strcmp(a, "--prompt-ids")) ids = v;
        else if (!strcmp(a, "--max-tokens")) max_tokens = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else { fprintf(stderr, "pagoda generate: unknown flag %s\n", a); usage(); return 2; }
        i++;
    }
    if (!dir || !ids || max_tokens < 1) { usage(); return 2; }
    int32_t *prompt;
    int n_prompt;
    if (parse_ids(ids, &prompt, &n_prompt)) {
        fprintf(stderr, "pagoda generate: --prompt-ids must be comma-separated token ids\n");
        free(prompt);
        return 2;
    }
    int rc = run(dir, prompt, n_prompt, max_tokens, threads);
    free(prompt);
    return rc;
}
