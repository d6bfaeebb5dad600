// `pagoda serve` flag table and parser.
#include "server/args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void serve_args_defaults(struct serve_args *a) {
    memset(a, 0, sizeof *a);
    a->host = "0.0.0.0";
    a->port = 8000;
    a->max_num_seqs = 256;
    a->block_size = 16;
    a->enable_prefix_caching = true;
    a->enable_chunked_prefill = true;
    a->kv_cache_dtype = "auto";
    a->gpu_memory_utilization = 0.9f;
    a->tensor_parallel_size = 1;
    a->num_scheduler_steps = 1;
    a->dtype = "auto";
    a->scheduling_policy = "fcfs";
    a->generation_config = "auto";
    a->log_level = "info";
    a->device = "auto";
    a->task = "auto";
    a->async_scheduling = -1;
    a->max_waiting = 1024;
    a->max_body_bytes = 8ll << 20;
    a->request_timeout = 60;
    a->shutdown_grace = 30.0;
    a->max_connections = 4096;
}

enum flag_type { F_STR, F_INT, F_LL, F_FLOAT, F_DOUBLE, F_TRUE, F_FALSE, F_SIZE, F_ITRUE, F_IFALSE };

struct flag {
    const char *name;
    enum flag_type type;
    size_t off;
    double lo, hi;           // numeric range (inclusive)
    const char *choices;     // F_STR: '|'-separated allowed values, or NULL
    const char *help;
};

#define OFF(f) offsetof(struct serve_args, f)
static const struct flag flags[] = {
    {"--model", F_STR, OFF(model_dir), 0, 0, NULL, "model directory or .gguf file (also positional)"},
    {"--host", F_STR, OFF(host), 0, 0, NULL, "address to listen on (0.0.0.0)"},
    {"--port", F_INT, OFF(port), 0, 65535, NULL, "port (8000; 0 picks a free one)"},
    {"--api-key", F_STR, OFF(api_key), 0, 0, NULL, "require 'Authorization: Bearer KEY'"},
    {"--served-model-name", F_STR, OFF(served_model_name), 0, 0, NULL, "model name in the API"},
    {"--max-model-len", F_INT, OFF(max_model_len), 1, INT_MAX, NULL, "prompt + output limit"},
    {"--max-num-seqs", F_INT, OFF(max_num_seqs), 1, 65536, NULL, "largest batch (256)"},
    {"--max-num-batched-tokens", F_INT, OFF(max_num_batched_tokens), 1, INT_MAX, NULL,
     "tokens per engine step"},
    {"--block-size", F_INT, OFF(block_size), 1, 1024, NULL, "KV block size in tokens (16)"},
    {"--enable-prefix-caching", F_TRUE, OFF(enable_prefix_caching), 0, 0, NULL, "(default)"},
    {"--no-enable-prefix-caching", F_FALSE, OFF(enable_prefix_caching), 0, 0, NULL, ""},
    {"--enable-chunked-prefill", F_TRUE, OFF(enable_chunked_prefill), 0, 0, NULL, "(default)"},
    {"--no-enable-chunked-prefill", F_FALSE, OFF(enable_chunked_prefill), 0, 0, NULL, ""},
    {"--kv-cache-dtype", F_STR, OFF(kv_cache_dtype), 0, 0,
     "auto|float32|bfloat16|float16|fp8|fp8_e4m3|fp8_e5m2", "KV cache element type"},
    {"--gpu-memory-utilization", F_FLOAT, OFF(gpu_memory_utilization), 0.01, 1.0, NULL,
     "CUDA memory fraction (0.9)"},
    {"--tensor-parallel-size", F_INT, OFF(tensor_parallel_size), 1, 64, NULL, "GPUs (1)"},
    {"-tp", F_INT, OFF(tensor_parallel_size), 1, 64, NULL, "alias of --tensor-parallel-size"},
    {"--num-scheduler-steps", F_INT, OFF(num_scheduler_steps), 1, 64, NULL, "steps in flight at most"},
    {"--tokenizer-pool-size", F_INT, OFF(tokenizer_pool_size), 0, 256, NULL,
     "template/tokenizer threads (0: from the cores)"},
    {"--enforce-eager", F_TRUE, OFF(enforce_eager), 0, 0, NULL, "CUDA: no graphs"},
    {"--dtype", F_STR, OFF(dtype), 0, 0, "auto|float32|bfloat16|float16|half|float", "weights"},
    {"--quantization", F_STR, OFF(quantization), 0, 0, "gptq|None", "checkpoint quantization"},
    {"-q", F_STR, OFF(quantization), 0, 0, "gptq|None", "alias of --quantization"},
    {"--seed", F_LL, OFF(seed), 0, 1.8446744073709552e19, NULL, "base sampling seed"},
    {"--scheduling-policy", F_STR, OFF(scheduling_policy), 0, 0, "fcfs|priority", "queue order"},
    {"--chat-template", F_STR, OFF(chat_template), 0, 0, NULL, "template file or text"},
    {"--generation-config", F_STR, OFF(generation_config), 0, 0, NULL, "auto|vllm|DIR"},
    {"--disable-log-requests", F_TRUE, OFF(disable_log_requests), 0, 0, NULL, "quieter"},
    {"--uvicorn-log-level", F_STR, OFF(log_level), 0, 0,
     "trace|debug|info|warning|error|critical", "log level"},
    {"--device", F_STR, OFF(device), 0, 0, "auto|cpu|cuda", "backend"},
    {"--kv-cache-memory", F_SIZE, OFF(kv_cache_memory), 0, 0, NULL, "CPU KV bytes (4GiB)"},
    {"--task", F_STR, OFF(task), 0, 0, "auto|generate|embed|embedding", "what the model does"},
    {"--structured-warmup", F_STR, OFF(structured_warmup), 0, 0, NULL, "JSONL of grammars"},
    {"--async-scheduling", F_ITRUE, OFF(async_scheduling), 0, 0, NULL, "launch step n+1 before collecting n"},
    {"--no-async-scheduling", F_IFALSE, OFF(async_scheduling), 0, 0, NULL, ""},
    {"--threads", F_INT, OFF(threads), 0, 4096, NULL, "CPU worker threads (0: all cores)"},
    {"--num-gpu-blocks-override", F_INT, OFF(num_gpu_blocks_override), 0, INT_MAX, NULL,
     "KV blocks (0: from memory)"},
    {"--max-waiting-requests", F_INT, OFF(max_waiting), 0, INT_MAX, NULL,
     "queue limit, 503 past it (1024; 0 none)"},
    {"--max-waiting", F_INT, OFF(max_waiting), 0, INT_MAX, NULL, "alias of --max-waiting-requests"},
    {"--max-request-body", F_SIZE, OFF(max_body_bytes), 0, 0, NULL, "413 past it (8MiB)"},
    {"--request-timeout", F_INT, OFF(request_timeout), 1, 86400, NULL, "idle client seconds"},
    {"--shutdown-grace", F_DOUBLE, OFF(shutdown_grace), 0, 86400, NULL, "seconds on SIGTERM"},
    {"--max-connections", F_INT, OFF(max_connections), 1, 1000000, NULL, "open sockets"},
};
#define N_FLAGS (sizeof flags / sizeof flags[0])

void serve_args_usage(FILE *f) {
    fprintf(f, "usage: pagoda serve MODEL_DIR [flags]   (vLLM's flag names; --flag value or "
               "--flag=value)\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        const struct flag *fl = &flags[i];
        bool flag_only = fl->type == F_TRUE || fl->type == F_FALSE || fl->type == F_ITRUE ||
                         fl->type == F_IFALSE;
        const char *arg = flag_only ? "" : " V";
        fprintf(f, "  %s%s%*s%s%s%s\n", fl->name, arg,
                (int)(32 - strlen(fl->name) - strlen(arg)) > 1
                    ? (int)(32 - strlen(fl->name) - strlen(arg)) : 1, "",
                fl->help, fl->choices ? "  {" : "", fl->choices ? fl->choices : "");
    }
}

// "8GiB", "512M", "1e9", "4096" -> bytes
static int parse_size(const char *s, long long *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || !isfinite(v)) return -1;
    double mul = 1;
    if (*end) {
        static const struct { const char *suf; double mul; } t[] = {
            {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"KB", 1e3}, {"MB", 1e6},
            {"GB", 1e9}, {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0},
            {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}, {"B", 1},
        };
        size_t i;
        for (i = 0; i < sizeof t / sizeof t[0]; i++)
            if (!strcasecmp(end, t[i].suf)) break;
        if (i == sizeof t / sizeof t[0]) return -1;
        mul = t[i].mul;
    }
    if (v * mul > 9.2e18) return -1;
    *out = (long long)(v * mul);
    return 0;
}

static bool in_choices(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

static int set_value(struct serve_args *a, const struct flag *fl, const char *v, char *err) {
    char *p = (char *)a + fl->off, *end;
    errno = 0;
    switch (fl->type) {
    case F_STR:
        if (fl->choices && !in_choices(fl->choices, v)) {
            pg_seterr(err, "%s: invalid choice '%s' (choose from %s)", fl->name, v, fl->choices);
            return -1;
        }
        *(const char **)p = v;
        return 0;
    case F_INT: case F_LL: {
        long long x = strtoll(v, &end, 10);
        if (end == v || *end || errno || x < fl->lo || (double)x > fl->hi) {
            pg_seterr(err, "%s: expected an integer in [%.0f, %.0f], got '%s'", fl->name, fl->lo,
                      fl->hi, v);
            return -1;
        }
        if (fl->type == F_INT) *(int *)p = (int)x;
        else *(long long *)p = x;
        return 0;
    }
    case F_FLOAT: case F_DOUBLE: {
        double x = strtod(v, &end);
        if (end == v || *end || errno || !(x >= fl->lo && x <= fl->hi)) {
            pg_seterr(err, "%s: expected a number in [%g, %g], got '%s'", fl->name, fl->lo, fl->hi,
                      v);
            return -1;
        }
        if (fl->type == F_FLOAT) *(float *)p = (float)x;
        else *(double *)p = x;
        return 0;
    }
    case F_SIZE:
        if (parse_size(v, (long long *)p)) {
            pg_seterr(err, "%s: expected a size like 4096, 512MiB or 8GiB, got '%s'", fl->name, v);
            return -1;
        }
        return 0;
    case F_TRUE: case F_FALSE: case F_ITRUE: case F_IFALSE: {
        bool on;
        if (!v) on = true;
        else if (!strcasecmp(v, "true") || !strcmp(v, "1")) on = true;
        else if (!strcasecmp(v, "false") || !strcmp(v, "0")) on = false;
        else {
            pg_seterr(err, "%s takes no value (or =true/=false), got '%s'", fl->name, v);
            return -1;
        }
        if (fl->type == F_ITRUE || fl->type == F_IFALSE) *(int *)p = fl->type == F_ITRUE ? on : !on;
        else *(bool *)p = fl->type == F_TRUE ? on : !on;
        return 0;
    }
    }
    return -1;
}

static const struct flag *find_flag(const char *name, size_t len) {
    for (size_t i = 0; i < N_FLAGS; i++)
        if (strlen(flags[i].name) == len && !strncmp(flags[i].name, name, len)) return &flags[i];
    // vLLM (argparse) also accepts underscores in flag names
    char buf[64];
    if (len >= sizeof buf) return NULL;
    for (size_t i = 0; i < len; i++) buf[i] = name[i] == '_' ? '-' : name[i];
    for (size_t i = 0; i < N_FLAGS; i++)
        if (strlen(flags[i].name) == len && !strncmp(flags[i].name, buf, len)) return &flags[i];
    return NULL;
}

int serve_args_parse(struct serve_args *a, int argc, char **argv, char *err) {
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            serve_args_usage(stdout);
            return 1;
        }
        if (s[0] != '-' || !s[1]) {
            if (a->model_dir) {
                pg_seterr(err, "unexpected argument '%s' (the model directory is '%s')", s,
                          a->model_dir);
                return -1;
            }
            a->model_dir = s;
            continue;
        }
        const char *eq = strchr(s, '=');
        size_t nlen = eq ? (size_t)(eq - s) : strlen(s);
        const struct flag *fl = find_flag(s, nlen);
        if (!fl) {
            pg_seterr(err, "unknown flag '%.*s' (pagoda serve --help lists them)", (int)nlen, s);
            return -1;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v && fl->type != F_TRUE && fl->type != F_FALSE && fl->type != F_ITRUE &&
            fl->type != F_IFALSE) {
            if (i + 1 >= argc) {
                pg_seterr(err, "%s needs a value", fl->name);
                return -1;
            }
            v = argv[++i];
        }
        if (set_value(a, fl, v, err)) return -1;
    }
    if (!a->model_dir) {
        pg_seterr(err, "missing MODEL_DIR (usage: pagoda serve MODEL_DIR [flags])");
        return -1;
    }
    if (a->quantization && !strcmp(a->quantization, "None")) a->quantization = NULL;
    if (!a->served_model_name) a->served_model_name = a->model_dir;
    return 0;
}

static int add_msg(char **msgs, int n, int max, const char *fmt, const char *a1, double x) {
    if (n >= max) return n;
    char buf[512];
    snprintf(buf, sizeof buf, fmt, a1, x);
    msgs[n] = pg_strdup(buf);
    return n + 1;
}

int serve_args_no_effect(const struct serve_args *a, bool have_cuda, char **msgs, int max) {
    int n = 0;
    bool cpu = !have_cuda || !strcmp(a->device, "cpu");
    if (cpu) {
        const char *why = have_cuda ? "--device cpu" : "this build has no CUDA backend";
        if (a->gpu_memory_utilization != 0.9f)
            n = add_msg(msgs, n, max, "--gpu-memory-utilization has no effect: %s (%.2f ignored)",
                        why, a->gpu_memory_utilization);
        if (a->enforce_eager)
            n = add_msg(msgs, n, max, "--enforce-eager has no effect: %s%.0s", why, 0);
        if (a->tensor_parallel_size > 1)
            n = add_msg(msgs, n, max, "--tensor-parallel-size has no effect: %s (%.0f ignored)",
                        why, a->tensor_parallel_size);
    } else if (a->kv_cache_memory) {
        n = add_msg(msgs, n, max, "--kv-cache-memory has no effect on %s (use "
                    "--gpu-memory-utilization)%.0s", "CUDA", 0);
    }
    if (strcmp(a->generation_config, "auto") && strcmp(a->generation_config, "vllm"))
        n = add_msg(msgs, n, max, "--generation-config %s has no effect: defaults come from the "
                    "model directory's generation_config.json (or 'vllm')%.0s",
                    a->generation_config, 0);
    if (strcmp(a->dtype, "auto"))
        n = add_msg(msgs, n, max, "--dtype %s has no effect: weights run in the checkpoint's "
                    "dtype%.0s", a->dtype, 0);
    return n;
}
