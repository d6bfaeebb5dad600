// Builds a grammar vocabulary straight from a Hugging Face tokenizer.json of a byte-level BPE
// model (GPT-2 byte<->unicode mapping), for tests and benchmarks that run without the
// tokenizer module. Special added tokens are never allowed; eos_ids as in grammar_vocab_new.
#pragma once
#include "grammar/grammar.h"

struct grammar_vocab *grammar_vocab_load_hf(const char *tokenizer_json, int model_vocab,
                                            const int32_t *eos_ids, int n_eos, char *err);
// The token's bytes by the same mapping (for drivers that print outputs). Borrowed.
const char *grammar_vocab_token(const struct grammar_vocab *v, int32_t id, size_t *len);
