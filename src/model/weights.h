// The model's weights in a backend-neutral form: what the loader (safetensors or GGUF)
// produces and every backend consumes at init (each backend repacks into its own layout).
#pragma once
#include "model/config.h"

// A dense tensor. `data` is borrowed (from the mmap) unless the loader had to convert it,
// in which case the model owns it; either way it lives until model_free.
struct tensor {
    enum pg_dtype dtype;
    int ndim;
    int64_t shape[4];      // row-major, shape[0] outermost (Hugging Face order)
    const void *data;      // NULL when the tensor is absent (e.g. optional bias)
};

// y[out] = W[out, in] . x[in] + b[out]
// Dense: w is [out, in] in F32/F16/BF16.
// GPTQ: checkpoint layout, unchanged (backends repack):
//   qweight [in * bits / 32, out] int32: 32/bits input rows packed per int32, low bits first
//   zeros   [n_groups, out] uint8: the REAL zero point (v1's "+1" already applied), unpacked
//   scales  [n_groups, out] F16 (or F32/BF16 as stored)
//   g_idx   [in] int32: group of each input row (i / group_size unless desc_act)
//   dequantized W[o][i] = (q(i,o) - zeros[g_idx[i]][o]) * scales[g_idx[i]][o]
struct linear {
    int in, out;
    bool quantized;
    struct tensor w;       // dense only
    int bits, group_size, n_groups; // group_size == in when the file said -1
    const int32_t *qweight;
    const uint8_t *zeros;  // owned by the model
    struct tensor scales;
    const int32_t *g_idx;  // borrowed or owned; never NULL for GPTQ (synthesized if absent)
    bool desc_act;         // g_idx is not monotone i / group_size
    struct tensor bias;    // optional: data NULL when absent
};

struct layer_weights {
    struct tensor attn_norm;   // [hidden]
    struct linear q, k, v, o;  // q: hidden -> n_heads*head_dim, k/v: -> n_kv*head_dim, o: back
    struct tensor ffn_norm;    // [hidden]
    struct linear gate, up, down;
};

struct model_weights {
    struct model_config cfg;
    struct tensor embed;       // [vocab, hidden]
    struct layer_weights *layers; // [n_layers]
    struct tensor final_norm;  // [hidden]
    struct linear lm_head;     // dense; w aliases embed when tied
    void *priv;                // loader state (mappings, owned buffers)
};

// Loads a Hugging Face model directory (config + safetensors, dense or GPTQ). Every tensor's
// name, dtype and shape is checked against the config; a mismatch names file, tensor,
// expected and actual. Returns NULL with err set.
struct model_weights *model_load(const char *dir, char *err);
void model_free(struct model_weights *m);

// Dequantizes (or converts) one linear's weight to f32 [out, in]. For tests and references.
void linear_to_f32(const struct linear *l, float *dst);

// Loader helpers shared by the safetensors and GGUF paths: the model owns `p` from now on.
void model_own(struct model_weights *m, void *p);
