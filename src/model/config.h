// Model hyperparameters, read from a Hugging Face model directory (config.json,
// generation_config.json, quantize_config.json) or from GGUF metadata.
#pragma once
#include "util/common.h"

enum model_arch { ARCH_QWEN2 = 0, ARCH_LLAMA };

enum quant_method { QUANT_NONE = 0, QUANT_GPTQ };

struct quant_config {
    enum quant_method method;
    int bits;          // 4 or 8
    int group_size;    // 32, 64, 128, ...; -1 in the file means one group per input row
    bool sym;
    bool desc_act;     // act-order: g_idx is a permutation-like map, not i / group_size
    int format;        // 1: checkpoint_format "gptq" (stored zeros are real-1); 2: "gptq_v2"
};

struct gen_defaults {  // generation_config.json; unset fields keep these defaults
    float temperature;    // 1.0
    float top_p;          // 1.0
    int top_k;            // -1 (off)
    float min_p;          // 0
    float repetition_penalty; // 1.0
    bool do_sample;       // true unless the file says false
};

#define MODEL_MAX_EOS 8

struct model_config {
    enum model_arch arch;
    char arch_name[64];    // "Qwen2ForCausalLM", "LlamaForCausalLM"
    int hidden;            // hidden_size
    int intermediate;      // intermediate_size
    int n_layers;          // num_hidden_layers
    int n_heads;           // num_attention_heads
    int n_kv_heads;        // num_key_value_heads (defaults to n_heads)
    int head_dim;          // head_dim, or hidden / n_heads
    int vocab;             // vocab_size (rows of embed / lm_head)
    int max_pos;           // max_position_embeddings
    float rms_eps;
    float rope_theta;
    bool tie_embeddings;   // tie_word_embeddings
    bool qkv_bias;         // Qwen2: q/k/v have bias; Llama: attention_bias (default false)
    bool mlp_bias;         // Llama mlp_bias (default false)
    enum pg_dtype dtype;   // torch_dtype: PG_F32, PG_F16 or PG_BF16
    struct quant_config quant;
    int bos_id;            // -1 when none
    int eos_ids[MODEL_MAX_EOS];
    int n_eos;
    struct gen_defaults gen;
};

// Reads config.json (+ generation_config.json, + quantize_config.json when present) from dir.
// Refuses unknown architectures, unsupported rope_scaling and quantization settings with a
// message naming the file and key. Returns 0 or -1 with err set.
int model_config_load(struct model_config *cfg, const char *dir, char *err);

// Parses config.json text alone (used by model_config_load and the fuzz target).
int model_config_parse(struct model_config *cfg, const char *json_text, const char *src_name, char *err);

// Reads generation_config.json text into cfg (eos ids, bos, sampling defaults).
int model_config_parse_generation(struct model_config *cfg, const char *json_text, const char *src_name, char *err);

// One-line human summary into buf.
void model_config_describe(const struct model_config *cfg, char *buf, size_t n);
