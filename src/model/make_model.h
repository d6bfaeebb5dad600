// Random-weight Qwen2.5 checkpoints of any size, for full-size runs without a download:
// in the real on-disk formats (bf16 safetensors sharded with model.safetensors.index.json,
// or GPTQ int4 group 128 sym: qweight/qzeros/scales/g_idx, checkpoint_format "gptq" with
// the v1 zero convention, untied fp16 lm_head), or directly in memory as model_weights.
// Tensor values depend only on (seed, tensor name, element index), so the in-memory model
// and the files written with the same seed hold identical weights.
#pragma once
#include "model/weights.h"

// Presets: qwen2.5-0.5b, -1.5b, -3b, -7b, -14b, -32b, -72b, and "tiny" (2 layers, hidden 256, 4 heads of 64,
// vocab 512, for tests). gptq: 4-bit GPTQ, group 128, sym, fp16 dtype.
int make_model_config(const char *preset, bool gptq, struct model_config *cfg, char *err);
const char *make_model_presets(void);   // "qwen2.5-0.5b|...|tiny"

// Builds the weights in memory (the model owns every buffer; free with make_model_free).
// Returns NULL with err set. n_threads 0: all cores.
struct model_weights *make_model_weights(const struct model_config *cfg, uint64_t seed, int n_threads, char *err);
void make_model_free(struct model_weights *w);

// Writes config.json, generation_config.json and the safetensors shards (shards of at most
// shard_gb GB; one file model.safetensors when everything fits in one) to dir (created).
int make_model_write(const char *dir, const struct model_config *cfg, uint64_t seed, double shard_gb, int n_threads,
                     char *err);
