// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (or GGUF metadata),
// plus streaming detokenization. A loaded tokenizer is immutable and thread-safe.
#pragma once
#include "util/common.h"

struct tokenizer;

// dir: a directory holding tokenizer.json (and optionally tokenizer_config.json with the
// chat template and special tokens), or a path to a tokenizer.json. NULL + err on failure.
struct tokenizer *tok_load(const char *path, char *err);
void tok_free(struct tokenizer *t);

// Encodes UTF-8 text. parse_special: match added/special tokens in the text (true for chat
// prompts). Invalid UTF-8 bytes are encoded as their byte tokens (documented in README).
// *ids is malloc'd (caller frees). Returns 0 or -1 with err.
int tok_encode(const struct tokenizer *t, const char *text, size_t len, bool parse_special,
               int32_t **ids, int *n_ids, char *err);
// Decodes ids to a malloc'd NUL-terminated string (*len without NUL). Unknown ids are skipped.
char *tok_decode(const struct tokenizer *t, const int32_t *ids, int n, bool skip_special, size_t *len);

int tok_vocab_size(const struct tokenizer *t);         // highest id + 1 (incl. added tokens)
// The bytes a token stands for (byte-level decoded; special tokens: their content). NULL for
// an unknown id. Borrowed.
const char *tok_token_bytes(const struct tokenizer *t, int32_t id, size_t *len);
bool tok_is_special(const struct tokenizer *t, int32_t id);
int32_t tok_find(const struct tokenizer *t, const char *token_content); // exact token text -> id, or -1

// From tokenizer_config.json (NULL when absent). Borrowed.
const char *tok_chat_template(const struct tokenizer *t);
const char *tok_bos_token(const struct tokenizer *t);
const char *tok_eos_token(const struct tokenizer *t);

// Streaming detokenizer: push ids one at a time; returns the newly complete text (only at
// full UTF-8 characters). Concatenating every delta plus detok_flush equals tok_decode.
struct detok;
struct detok *detok_new(const struct tokenizer *t, bool skip_special);
// Appends id; *delta (borrowed until the next call) gets the new text, possibly empty.
void detok_push(struct detok *d, int32_t id, const char **delta, size_t *delta_len);
// Returns any bytes held back (an incomplete UTF-8 tail, emitted as-is). Borrowed.
void detok_flush(struct detok *d, const char **delta, size_t *delta_len);
void detok_free(struct detok *d);
