// BERT encoder (Hugging Face BertModel: absolute positions, post-LayerNorm, GELU) on the CPU,
// float32, OpenBLAS for the matrix products. Internal to the embedding module (embed.c).
#pragma once
#include "util/common.h"

struct bert_config {
    int hidden, n_layers, n_heads, intermediate;
    int max_pos, type_vocab, vocab;
    float ln_eps;
    bool gelu_tanh; // hidden_act gelu_new / gelu_pytorch_tanh (else exact erf GELU)
};

struct bert_model;

// Reads dir/config.json (model_type "bert") and dir/model.safetensors (F32/F16/BF16; tensor names
// with or without a "bert." prefix). Weights are converted to owned f32. NULL + err on failure,
// naming the file, tensor, expected and actual shape on a mismatch.
struct bert_model *bert_load(const char *dir, char *err);
void bert_free(struct bert_model *m);
const struct bert_config *bert_get_config(const struct bert_model *m);

// Runs the encoder on one sequence of n token ids (token type 0, no padding).
// out: [n, hidden] last hidden states. n must be in 1..max_pos and ids < vocab (else -1 + err).
// Thread-safe (scratch is allocated per call).
int bert_forward(const struct bert_model *m, const int32_t *ids, int n, float *out, char *err);
