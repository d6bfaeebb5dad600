// pagoda make-model: writes a random-weight Qwen2.5 checkpoint (see model/make_model.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "model/make_model.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: pagoda make-model --out DIR --preset NAME [--gptq-int4] [--shard-size GB] [--seed N] [--threads N]\n"
            "  presets: %s\n"
            "  writes config.json, generation_config.json and safetensors shards (bf16, or GPTQ int4 group 128\n"
            "  sym with an fp16 lm_head); the same seed always gives the same weights\n",
            make_model_presets());
}

int cmd_make_model(int argc, char **argv) {
    const char *out = NULL, *preset = NULL;
    bool gptq = false;
    double shard = 4.0;
    unsigned long long seed = 0;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--gptq-int4")) {
            gptq = true;
        } else if (v && !strcmp(a, "--out")) {
            out = v, i++;
        } else if (v && !strcmp(a, "--preset")) {
            preset = v, i++;
        } else if (v && !strcmp(a, "--shard-size")) {
            shard = atof(v), i++;
        } else if (v && !strcmp(a, "--seed")) {
            seed = strtoull(v, NULL, 10), i++;
        } else if (v && !strcmp(a, "--threads")) {
            threads = atoi(v), i++;
        } else {
            fprintf(stderr, "pagoda make-model: unknown or incomplete flag '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!out || !preset || shard <= 0) {
        usage(stderr);
        return 2;
    }
    char err[PG_ERR_LEN] = "";
    struct model_config cfg;
    if (make_model_config(preset, gptq, &cfg, err)) {
        fprintf(stderr, "pagoda make-model: %s\n", err);
        return 1;
    }
    double t0 = pg_now();
    if (make_model_write(out, &cfg, seed, shard, threads, err)) {
        fprintf(stderr, "pagoda make-model: %s\n", err);
        return 1;
    }
    printf("wrote %s (%s%s, seed %llu) in %.1f s\n", out, preset, gptq ? ", GPTQ int4" : ", bf16", seed, pg_now() - t0);
    return 0;
}
