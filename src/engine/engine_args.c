// Engine and backend command-line flags (see engine_args.h).
#include "engine/engine_args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// Splits "--flag=value" into name and value; returns the name length.
static size_t flag_name_len(const char *flag, const char **inline_val) {
    const char *eq = strchr(flag, '=');
    *inline_val = eq ? eq + 1 : NULL;
    return eq ? (size_t)(eq - flag) : strlen(flag);
}

static bool flag_is(const char *flag, size_t len, const char *name) {
    return strlen(name) == len && !strncmp(flag, name, len);
}

static int parse_long(const char *name, const char *s, long lo, long hi, long *out, char *err) {
    if (!s) {
        pg_seterr(err, "%s: missing value", name);
        return -1;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        pg_seterr(err, "%s: expected an integer in [%ld, %ld], got '%s'", name, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_bytes(const char *name, const char *s, size_t *out, char *err) {
    if (!s) {
        pg_seterr(err, "%s: missing value", name);
        return -1;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mult = 1;
    if (!strcasecmp(end, "k") || !strcasecmp(end, "kb")) mult = 1e3;
    else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb")) mult = 1e6;
    else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb")) mult = 1e9;
    else if (!strcasecmp(end, "kib")) mult = 1024.0;
    else if (!strcasecmp(end, "mib")) mult = 1024.0 * 1024;
    else if (!strcasecmp(end, "gib")) mult = 1024.0 * 1024 * 1024;
    else if (*end) v = -1;
    if (errno || end == s || !(v > 0) || v * mult > 1e15) {
        pg_seterr(err, "%s: expected a positive size in bytes (suffix K, M, G, KiB, MiB, GiB), got '%s'",
                  name, s);
        return -1;
    }
    *out = (size_t)(v * mult);
    return 0;
}

// One integer flag of a table: its name, its range and where its value goes.
struct int_flag {
    const char *name;
    long lo, hi;
    int *dst;
};

// Parses flag if it is one of the table's; returns used, ENGINE_ARGS_ERROR or ENGINE_ARGS_UNKNOWN.
static int parse_int_flags(const struct int_flag *t, size_t n, const char *flag, size_t len,
                           const char *val, int used, char *err) {
    for (size_t i = 0; i < n; i++) {
        if (!flag_is(flag, len, t[i].name)) continue;
        long v;
        if (parse_long(t[i].name, val, t[i].lo, t[i].hi, &v, err)) return ENGINE_ARGS_ERROR;
        *t[i].dst = (int)v;
        return used;
    }
    return ENGINE_ARGS_UNKNOWN;
}

int engine_args_parse(struct engine_config *c, const char *flag, const char *value, char *err) {
    const char *inl;
    size_t len = flag_name_len(flag, &inl);
    const char *val = inl ? inl : value;
    int used = inl ? 0 : 1;
    const struct int_flag ints[] = {
        {"--block-size", 1, 4096, &c->block_size},
        {"--max-num-seqs", 1, 1 << 20, &c->max_num_seqs},
        {"--max-num-batched-tokens", 1, 1 << 24, &c->max_num_batched_tokens},
        {"--max-model-len", 1, 1 << 24, &c->max_model_len},
        {"--num-scheduler-steps", 1, 1024, &c->num_scheduler_steps},
        {"--max-waiting", 0, 1 << 24, &c->max_waiting},
    };
    int r = parse_int_flags(ints, sizeof ints / sizeof ints[0], flag, len, val, used, err);
    if (r != ENGINE_ARGS_UNKNOWN) return r;
    if (flag_is(flag, len, "--seed")) {
        if (!val) {
            pg_seterr(err, "--seed: missing value");
            return ENGINE_ARGS_ERROR;
        }
        char *end;
        errno = 0;
        unsigned long long v = strtoull(val, &end, 10);
        if (errno || end == val || *end || val[0] == '-') {
            pg_seterr(err, "--seed: expected a non-negative integer, got '%s'", val);
            return ENGINE_ARGS_ERROR;
        }
        c->seed = v;
        return used;
    }
    if (flag_is(flag, len, "--scheduling-policy")) {
        if (val && !strcmp(val, "fcfs")) c->policy = SCHED_FCFS;
        else if (val && !strcmp(val, "priority")) c->policy = SCHED_PRIORITY;
        else {
            pg_seterr(err, "--scheduling-policy: expected fcfs or priority, got '%s'", val ? val : "");
            return ENGINE_ARGS_ERROR;
        }
        return used;
    }
    struct {
        const char *name;
        bool *dst;
    } bools[] = {
        {"enable-prefix-caching", &c->enable_prefix_caching},
        {"enable-chunked-prefill", &c->enable_chunked_prefill},
        {"async-scheduling", &c->async_scheduling},
    };
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
        bool neg = len > 5 && !strncmp(flag, "--no-", 5);
        const char *base = flag + (neg ? 5 : 2);
        size_t blen = len - (neg ? 5 : 2);
        if (len < 3 || strncmp(flag, "--", 2) || strlen(bools[i].name) != blen ||
            strncmp(base, bools[i].name, blen))
            continue;
        if (inl) {
            if (!strcmp(inl, "true") || !strcmp(inl, "1")) *bools[i].dst = !neg;
            else if (!strcmp(inl, "false") || !strcmp(inl, "0")) *bools[i].dst = neg;
            else {
                pg_seterr(err, "%.*s: expected true or false, got '%s'", (int)len, flag, inl);
                return ENGINE_ARGS_ERROR;
            }
        } else {
            *bools[i].dst = !neg;
        }
        return 0;
    }
    return ENGINE_ARGS_UNKNOWN;
}

void backend_config_defaults(struct backend_config *c) {
    memset(c, 0, sizeof *c);
    c->block_size = 16;
    c->kv_cache_bytes = 0; // backend default: 4 GiB on the CPU
    c->gpu_memory_utilization = 0.9f;
    c->kv_dtype = PG_F32; // "auto": the CPU keeps f32, CUDA picks bf16 for any non-fp8 type
    c->max_num_seqs = 256;
    c->max_num_batched_tokens = 2048;
    c->tensor_parallel_size = 1;
}

static int parse_kv_dtype(const char *val, enum pg_dtype *out, char *err) {
    static const struct {
        const char *name;
        enum pg_dtype t;
    } names[] = {{"auto", PG_F32}, {"fp8", PG_F8_E4M3},      {"fp8_e4m3", PG_F8_E4M3},
                 {"fp8_e5m2", PG_F8_E5M2}, {"bfloat16", PG_BF16},    {"float16", PG_F16},
                 {"half", PG_F16},         {"float32", PG_F32},      {"float", PG_F32}};
    for (size_t i = 0; val && i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(val, names[i].name)) {
            *out = names[i].t;
            return 0;
        }
    pg_seterr(err, "--kv-cache-dtype: expected auto, fp8, fp8_e4m3, fp8_e5m2, bfloat16, float16 or "
                   "float32, got '%s'", val ? val : "");
    return -1;
}

int backend_args_parse(struct backend_config *c, const char *flag, const char *value, char *err) {
    const char *inl;
    size_t len = flag_name_len(flag, &inl);
    const char *val = inl ? inl : value;
    int used = inl ? 0 : 1;
    const struct int_flag ints[] = {
        {"--block-size", 1, 4096, &c->block_size},
        {"--max-num-seqs", 1, 1 << 20, &c->max_num_seqs},
        {"--max-num-batched-tokens", 1, 1 << 24, &c->max_num_batched_tokens},
        {"--max-model-len", 1, 1 << 24, &c->max_model_len},
        {"--num-gpu-blocks-override", 1, 1 << 30, &c->num_blocks},
        {"--tensor-parallel-size", 1, 64, &c->tensor_parallel_size},
        {"-tp", 1, 64, &c->tensor_parallel_size},
        {"--threads", 0, 4096, &c->n_threads},
    };
    int r = parse_int_flags(ints, sizeof ints / sizeof ints[0], flag, len, val, used, err);
    if (r != ENGINE_ARGS_UNKNOWN) return r;
    if (flag_is(flag, len, "--seed")) {
        char *end;
        if (!val || val[0] == '-' || (c->seed = strtoull(val, &end, 10), *end) || end == val) {
            pg_seterr(err, "--seed: expected a non-negative integer, got '%s'", val ? val : "");
            return ENGINE_ARGS_ERROR;
        }
        return used;
    }
    if (flag_is(flag, len, "--kv-cache-memory"))
        return parse_bytes("--kv-cache-memory", val, &c->kv_cache_bytes, err) ? ENGINE_ARGS_ERROR : used;
    if (flag_is(flag, len, "--kv-cache-dtype"))
        return parse_kv_dtype(val, &c->kv_dtype, err) ? ENGINE_ARGS_ERROR : used;
    if (flag_is(flag, len, "--gpu-memory-utilization")) {
        char *end;
        double v = val ? strtod(val, &end) : -1;
        if (!val || *end || end == val || !(v > 0 && v <= 1)) {
            pg_seterr(err, "--gpu-memory-utilization: expected a fraction in (0, 1], got '%s'",
                      val ? val : "");
            return ENGINE_ARGS_ERROR;
        }
        c->gpu_memory_utilization = (float)v;
        return used;
    }
    if (flag_is(flag, len, "--enforce-eager")) {
        c->enforce_eager = true;
        return 0;
    }
    return ENGINE_ARGS_UNKNOWN;
}

int engine_args_finalize(struct engine_config *e, struct backend_config *b, int model_max_pos,
                         char *err) {
    if (e->max_model_len <= 0) e->max_model_len = model_max_pos;
    if (model_max_pos > 0 && e->max_model_len > model_max_pos) {
        pg_seterr(err, "--max-model-len %d is larger than the model's max_position_embeddings (%d)",
                  e->max_model_len, model_max_pos);
        return -1;
    }
    if (e->max_model_len <= 0) {
        pg_seterr(err, "--max-model-len: not set and the model gives no max_position_embeddings");
        return -1;
    }
    if (!e->enable_chunked_prefill && e->max_num_batched_tokens < e->max_model_len) {
        pg_seterr(err, "--max-num-batched-tokens (%d) must be >= --max-model-len (%d) when chunked "
                       "prefill is disabled", e->max_num_batched_tokens, e->max_model_len);
        return -1;
    }
    if (e->max_num_batched_tokens < e->max_num_seqs)
        pg_warn("--max-num-batched-tokens %d < --max-num-seqs %d: at most %d sequences per step",
                e->max_num_batched_tokens, e->max_num_seqs, e->max_num_batched_tokens);
    b->block_size = e->block_size;
    b->max_num_seqs = e->max_num_seqs;
    b->max_num_batched_tokens = e->max_num_batched_tokens;
    b->max_model_len = e->max_model_len;
    b->seed = e->seed;
    b->max_inflight = engine_pipeline_depth(e);
    return 0;
}

void engine_args_usage(FILE *f) {
    fprintf(f,
            "engine:\n"
            "  --block-size N                tokens per KV block (16)\n"
            "  --max-num-seqs N              most sequences per step (256)\n"
            "  --max-num-batched-tokens N    token budget per step (2048)\n"
            "  --max-model-len N             longest prompt + output (model's max positions)\n"
            "  --[no-]enable-prefix-caching  share full KV blocks across requests (on)\n"
            "  --[no-]enable-chunked-prefill split long prompts across steps (on)\n"
            "  --num-scheduler-steps N       steps in flight at most (sampled tokens fed on the device) (1)\n"
            "  --[no-]async-scheduling       launch step n+1 before step n is collected (off)\n"
            "  --scheduling-policy P         fcfs | priority (fcfs)\n"
            "  --max-waiting N               queued-request limit, 0 = none (0)\n"
            "  --seed N                      base seed for requests without one (0)\n"
            "backend:\n"
            "  --kv-cache-memory BYTES       CPU KV cache size, e.g. 2GiB (4 GiB)\n"
            "  --num-gpu-blocks-override N   exact number of KV blocks\n"
            "  --gpu-memory-utilization F    CUDA: fraction of device memory (0.9)\n"
            "  --kv-cache-dtype T            auto | fp8 | fp8_e4m3 | fp8_e5m2 | bfloat16 | float16 | float32\n"
            "  --enforce-eager               CUDA: no graphs\n"
            "  --tensor-parallel-size N      CUDA: GPUs (1)\n"
            "  --threads N                   CPU worker threads, 0 = all cores (0)\n");
}
