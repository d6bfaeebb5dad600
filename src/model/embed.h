// Sentence-embedding models (BERT family, e.g. all-MiniLM-L6-v2, bge-small-en-v1.5) loaded from
// a sentence-transformers directory: config.json, model.safetensors, tokenizer.json (WordPiece),
// modules.json and 1_Pooling/config.json. CPU inference; thread-safe after load.
#pragma once
#include "util/common.h"

struct embed_model;

struct embed_model *embed_model_load(const char *dir, char *err);
void embed_model_free(struct embed_model *m);
bool embed_model_detect(const char *dir); // true if dir holds an embedding model
int embed_model_dim(const struct embed_model *m);
int embed_model_max_tokens(const struct embed_model *m);
// Embeds n texts into out[n * dim] (pooled, normalized when the model says so);
// n_tokens gets the total prompt tokens (for usage). Returns 0 or -1 with err.
int embed_model_encode(const struct embed_model *m, const char *const *texts, int n, float *out,
                       int *n_tokens, char *err);
