// `pagoda serve` command line: vLLM's flag names, so an existing launch line keeps working.
// Both `--flag value` and `--flag=value`; boolean flags take no value (or =true/=false);
// an unknown flag, a missing value or a malformed number is an error.
#pragma once
#include <stdio.h>

#include "util/common.h"

struct serve_args {
    const char *model_dir;          // positional (or --model)
    const char *host;               // --host ("0.0.0.0")
    int port;                       // --port (8000)
    const char *api_key;            // --api-key (NULL: open)
    const char *served_model_name;  // --served-model-name (default: model_dir)
    int max_model_len;              // --max-model-len (0: from the model config)
    int max_num_seqs;               // --max-num-seqs (256)
    int max_num_batched_tokens;     // --max-num-batched-tokens (0: engine default)
    int block_size;                 // --block-size (16)
    bool enable_prefix_caching;     // --[no-]enable-prefix-caching (true)
    bool enable_chunked_prefill;    // --[no-]enable-chunked-prefill (true)
    const char *kv_cache_dtype;     // --kv-cache-dtype auto|float32|bfloat16|float16|fp8|fp8_e4m3|fp8_e5m2
    float gpu_memory_utilization;   // --gpu-memory-utilization (0.9)
    int tensor_parallel_size;       // --tensor-parallel-size / -tp (1)
    int num_scheduler_steps;        // --num-scheduler-steps (1)
    int tokenizer_pool_size;        // --tokenizer-pool-size (0: sized from the cores)
    bool enforce_eager;             // --enforce-eager
    const char *dtype;              // --dtype auto|float32|bfloat16|float16|half
    const char *quantization;       // --quantization (NULL|gptq)
    long long seed;                 // --seed (0)
    const char *scheduling_policy;  // --scheduling-policy fcfs|priority
    const char *chat_template;      // --chat-template FILE or inline template
    const char *generation_config;  // --generation-config auto|vllm|DIR
    bool disable_log_requests;      // --disable-log-requests
    const char *log_level;          // --uvicorn-log-level (info)
    const char *device;             // --device auto|cpu|cuda
    long long kv_cache_memory;      // --kv-cache-memory bytes (suffixes K/M/G/KiB/MiB/GiB; 0 = default)
    const char *task;               // --task auto|generate|embed
    const char *structured_warmup;  // --structured-warmup FILE (JSONL of grammar specs)
    int async_scheduling;           // --[no-]async-scheduling (-1: the engine's default)
    int threads;                    // --threads (CPU workers; 0: all cores)
    int num_gpu_blocks_override;    // --num-gpu-blocks-override (0: from the memory budget)
    // Pagoda's own serving limits
    int max_waiting;                // --max-waiting-requests (1024): 503 past it
    long long max_body_bytes;       // --max-request-body (8 MiB): 413 past it
    int request_timeout;            // --request-timeout seconds of client inactivity (60)
    double shutdown_grace;          // --shutdown-grace seconds for in-flight requests (30)
    int max_connections;            // --max-connections (4096)
};

void serve_args_defaults(struct serve_args *a);
// Parses argv[1..argc) (argv[0] is the subcommand name). Strings point into argv.
// Returns 0, 1 when --help was asked (usage printed to stdout), or -1 with err.
int serve_args_parse(struct serve_args *a, int argc, char **argv, char *err);
void serve_args_usage(FILE *f);
// Flags accepted with no effect on this build (have_cuda: CUDA backend compiled in). Writes
// up to max one-line messages (each malloc'd; caller frees) and returns how many.
int serve_args_no_effect(const struct serve_args *a, bool have_cuda, char **msgs, int max);
