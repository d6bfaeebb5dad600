// Command-line flags for the engine and its backend, named as vLLM names them, shared by
// `pagoda serve`, `pagoda generate` and `pagoda bench`. Parse one flag at a time:
//
//   for (int i = 1; i < argc; i++) {
//       const char *val = i + 1 < argc ? argv[i + 1] : NULL;
//       int r = engine_args_parse(&ecfg, argv[i], val, err);
//       if (r == ENGINE_ARGS_UNKNOWN) r = backend_args_parse(&bcfg, argv[i], val, err);
//       if (r == ENGINE_ARGS_UNKNOWN) { ...the command's own flags... }
//       if (r < 0) { fprintf(stderr, "%s\n", err); return 2; }
//       i += r;                       // r == 1: the value was consumed
//   }
//
// "--flag=value" is accepted too (then the value argument is ignored and 0 is returned).
#pragma once
#include <stdio.h>

#include "backend/backend.h"
#include "engine/engine.h"

enum {
    ENGINE_ARGS_ERROR = -1,   // a known flag with a missing or bad value: message in err
    ENGINE_ARGS_UNKNOWN = -2, // not one of these flags (err untouched)
};

// Engine flags: --block-size N, --max-num-seqs N, --max-num-batched-tokens N,
// --max-model-len N, --enable-prefix-caching / --no-enable-prefix-caching,
// --enable-chunked-prefill / --no-enable-chunked-prefill, --num-scheduler-steps N,
// --async-scheduling / --no-async-scheduling, --scheduling-policy fcfs|priority,
// --max-waiting N, --seed N.
// Returns how many extra arguments were used (0 for a boolean flag or --flag=value, 1 when
// value was consumed), ENGINE_ARGS_ERROR, or ENGINE_ARGS_UNKNOWN.
int engine_args_parse(struct engine_config *c, const char *flag, const char *value, char *err);

// Backend flags: --block-size N (sets it here too), --kv-cache-memory BYTES (suffixes
// K/M/G/KiB/MiB/GiB accepted), --num-gpu-blocks-override N, --gpu-memory-utilization F,
// --kv-cache-dtype auto|fp8|fp8_e4m3|fp8_e5m2|bfloat16|float16|float32, --enforce-eager,
// --tensor-parallel-size N (-tp N), --threads N, --max-num-seqs N,
// --max-num-batched-tokens N, --max-model-len N, --seed N.
// Flags shared with the engine (block size, limits, seed) are accepted by both so a caller
// may pass every flag to both parsers. Same return convention as engine_args_parse.
int backend_args_parse(struct backend_config *c, const char *flag, const char *value, char *err);

// Defaults for backend_config as the flags document them (block 16, 4 GiB KV on the CPU,
// gpu_memory_utilization 0.9, kv dtype auto, 1 GPU, all cores). kv dtype "auto" is
// PG_F32: the CPU backend stores f32, the CUDA backend bf16 for any non-fp8 type.
void backend_config_defaults(struct backend_config *c);

// Makes the two configurations agree after parsing (block size, max_num_seqs,
// max_num_batched_tokens, max_model_len, seed copied engine -> backend) and checks the
// combination: with chunked prefill off, max_num_batched_tokens must be >= max_model_len.
// max_model_len <= 0 is filled from model_max_pos. Returns 0 or -1 with err.
int engine_args_finalize(struct engine_config *e, struct backend_config *b, int model_max_pos,
                         char *err);

// Prints the flags with their defaults, one per line, for --help.
void engine_args_usage(FILE *f);
