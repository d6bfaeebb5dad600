// Host sampler cost per call (backend/sampler.c) over a Qwen2.5-size vocabulary (151936), for
// the common sampling settings. Logits: N(0, 2.5) with a few peaked tokens, like a real LM head.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/sampling.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int vocab = argc > 1 ? atoi(argv[1]) : 151936, reps = argc > 2 ? atoi(argv[2]) : 200;
    float *base = malloc((size_t)vocab * sizeof *base), *lg = malloc((size_t)vocab * sizeof *lg);
    void *scratch = malloc(sampler_scratch_size(vocab));
    srand(1);
    for (int i = 0; i < vocab; i++) {
        double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
        base[i] = (float)(2.5 * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
    }
    for (int i = 0; i < 8; i++) base[rand() % vocab] += 12.0f - i;
    int32_t prompt[256], output[64];
    for (int i = 0; i < 256; i++) prompt[i] = rand() % vocab;
    for (int i = 0; i < 64; i++) output[i] = rand() % vocab;
    static const struct { const char *name; struct sampling_params p; } cfg[] = {
        {"greedy", {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .logprobs = -1}},
        {"greedy logprobs=5", {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .logprobs = 5}},
        {"temp=1.0", {.temperature = 1.0f, .top_p = 1, .repetition_penalty = 1, .logprobs = -1}},
        {"temp=0.7 logprobs=0", {.temperature = 0.7f, .top_p = 1, .repetition_penalty = 1, .logprobs = 0}},
        {"temp=0.7 top_p=0.8", {.temperature = 0.7f, .top_p = 0.8f, .repetition_penalty = 1, .logprobs = -1}},
        {"temp=0.7 top_k=20", {.temperature = 0.7f, .top_p = 1, .top_k = 20, .repetition_penalty = 1, .logprobs = -1}},
        {"qwen defaults (t0.7 p0.8 k20 rep1.05)", {.temperature = 0.7f, .top_p = 0.8f, .top_k = 20,
                                                   .repetition_penalty = 1.05f, .logprobs = -1}},
        {"temp=0.7 top_k=1000 top_p=0.95", {.temperature = 0.7f, .top_p = 0.95f, .top_k = 1000, .repetition_penalty = 1,
                                            .logprobs = -1}},
        {"temp=1.0 min_p=0.05", {.temperature = 1.0f, .top_p = 1, .min_p = 0.05f, .repetition_penalty = 1, .logprobs = -1}},
    };
    printf("vocab %d, %d calls per setting\n", vocab, reps);
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        struct sampling_params p = cfg[c].p;
        p.seed = 7;
        struct sample_output out;
        double t = 0;
        long sum = 0;
        for (int r = 0; r < reps; r++) {
            memcpy(lg, base, (size_t)vocab * sizeof *lg);
            struct sample_input in = {.params = &p, .step = (uint64_t)r, .prompt = prompt, .n_prompt = 256,
                                      .output = output, .n_output = 64};
            double t0 = now();
            sampler_sample(lg, vocab, &in, scratch, &out);
            t += now() - t0;
            sum += out.token;
        }
        printf("%-40s %8.1f us/call  (token checksum %ld)\n", cfg[c].name, t / reps * 1e6, sum);
    }
    free(base);
    free(lg);
    free(scratch);
    return 0;
}
