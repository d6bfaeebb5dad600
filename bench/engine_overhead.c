// Engine CPU overhead per step (scheduling, batch building, applying tokens, streaming),
// measured with a backend that does no work: 256 concurrent sequences with distinct
// prompts (0% prefix-cache hit rate), prefix caching on vs off, sync vs async scheduling.
// Build and run: bench/engine_overhead.sh
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"
#include "model/config.h"

static struct step_result g_res[1024];
static int g_n;

static int null_execute(void *ctx, const struct step_batch *b, char *err) {
    g_n = 0;
    for (int i = 0; i < b->n_seqs; i++)
        if (b->seqs[i].sample) {
            memset(&g_res[g_n], 0, sizeof g_res[g_n]);
            g_res[g_n++].token = 2 + (b->seqs[i].pos0 * 31 + i) % 1000;
        }
    return 0;
}
static int null_collect(void *ctx, struct step_result *out, char *err) {
    memcpy(out, g_res, (size_t)g_n * sizeof *out);
    return 0;
}
static const struct backend_ops null_ops = {.name = "null", .execute = null_execute,
                                            .collect = null_collect};
static void on_out(void *u, const struct engine_output *o) { (void)u; (void)o; }

static void run(bool caching, bool async, int n_req, int prompt_len, int max_tokens) {
    struct model_config m;
    memset(&m, 0, sizeof m);
    m.vocab = 32000;
    m.max_pos = 4096;
    m.eos_ids[0] = 1;
    m.n_eos = 1;
    struct engine_config cfg;
    engine_config_defaults(&cfg);
    cfg.max_model_len = 4096;
    cfg.enable_prefix_caching = caching;
    cfg.async_scheduling = async;
    cfg.max_num_seqs = 256;
    cfg.max_num_batched_tokens = 8192;
    char err[PG_ERR_LEN];
    int nb = 20000;
    struct engine *e = engine_create(&cfg, &m, &null_ops, NULL, nb, NULL, err);
    static int32_t prompt[4096];
    for (int r = 0; r < n_req; r++) {
        for (int i = 0; i < prompt_len; i++) prompt[i] = 2 + (r * 7919 + i * 104729) % 30000;
        struct gen_request g;
        gen_request_defaults(&g);
        g.prompt = prompt;
        g.n_prompt = prompt_len;
        g.max_tokens = max_tokens;
        g.ignore_eos = true;
        g.sp.temperature = 0;
        g.on_output = on_out;
        if (engine_add(e, &g, NULL, err)) {
            fprintf(stderr, "%s\n", err);
            return;
        }
    }
    double t0 = pg_now();
    int steps = 0;
    while (engine_has_work(e)) {
        engine_step(e);
        steps++;
    }
    double dt = pg_now() - t0;
    struct engine_stats st;
    engine_stats(e, &st);
    printf("caching=%d async=%d requests=%d prompt=%d max_tokens=%d: %d steps, %.1f us/step, "
           "%.3f us/generated token, hits %llu/%llu\n",
           caching, async, n_req, prompt_len, max_tokens, steps, dt / steps * 1e6,
           dt / (double)st.generation_tokens * 1e6, (unsigned long long)st.prefix_hits,
           (unsigned long long)st.prefix_queries);
    engine_free(e);
}

int main(void) {
    for (int rep = 0; rep < 2; rep++)
        for (int c = 1; c >= 0; c--)
            for (int a = 0; a < 2; a++) run(c, a, 256, 512, 256);
    return 0;
}
