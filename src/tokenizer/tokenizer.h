// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (or GGUF metadata),
// plus streaming detokenization. A loaded tokenizer is immutable and thread-safe.
#pragma once
#include "util/common.h"

struct tokenizer;

// dir: a directory holding tokenizer.json (and optionally tokenizer_config.json with the
// chat template and special tokens), or a path to a tokenizer.json. NULL + err on failure.
struct tokenizer *tok_load(const char *path, char *err);
void tok_free(struct tokenizer *t);
// The same from tokenizer.json text in memory (no tokenizer_config.json). NULL + err on failure.
struct tokenizer *tok_from_json(const char *json, size_t len, char *err);

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
// (tok_find looks up added-token content first, then a token's bytes, then the GPT-2 form "Ġthe".)

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

// ---------------------------------------------------------------------------------------
// Building a byte-level BPE tokenizer from parts (used by tok_load for tokenizer.json and by
// the GGUF importer for tokenizer.ggml.* metadata). All strings are UTF-8, NUL-terminated,
// and borrowed only for the duration of tok_new_bpe (everything is copied).

// One pre-tokenizer step, applied in order to every piece the previous steps produced
// (the Hugging Face pre_tokenizers.Sequence semantics).
enum tok_pretok_kind {
    TOK_PRE_SPLIT,     // Split{pattern: Regex, behavior: Isolated}: matches and the gaps
                       // between them both become pieces (invert: the gaps are the matches)
    TOK_PRE_BYTELEVEL, // ByteLevel{add_prefix_space, use_regex}: optional leading ' ' per piece,
                       // then (use_regex) a Split Isolated with the GPT-2 regex
};
struct tok_pretok_step {
    enum tok_pretok_kind kind;
    const char *regex;     // TOK_PRE_SPLIT: a PCRE2 pattern (compiled with UTF|UCP)
    bool invert;           // TOK_PRE_SPLIT
    bool add_prefix_space; // TOK_PRE_BYTELEVEL
    bool use_regex;        // TOK_PRE_BYTELEVEL
};

// An added token (tokenizer.json "added_tokens"; GGUF: token_type CONTROL or USER_DEFINED).
// Matched in the input before BPE, leftmost-longest.
struct tok_added_token {
    int32_t id;
    const char *content; // plain UTF-8 text (not byte-to-unicode mapped)
    bool special;        // skipped by skip_special decoding; matched only with parse_special
    bool lstrip, rstrip; // also swallow whitespace to the left / right of the match
    bool single_word;    // match only when not inside a word
    bool normalized;     // matched against the normalized (NFC) text instead of the raw text
};

struct tok_bpe_spec {
    // tokens[i] is the vocabulary entry of id i in GPT-2 byte-to-unicode form (e.g. "Ġthe"),
    // as in tokenizer.json model.vocab and GGUF tokenizer.ggml.tokens. NULL entries are holes.
    const char *const *tokens;
    int n_tokens;
    // Merges in rank order, each "left right" (one ASCII space between the two parts).
    const char *const *merges;
    int n_merges;
    // Pre-tokenizer steps; n_pretok == 0 means the GPT-2 default (ByteLevel, use_regex).
    const struct tok_pretok_step *pretok;
    int n_pretok;
    const struct tok_added_token *added; // may overlap ids in tokens[]; may extend past them
    int n_added;
    int32_t bos_id, eos_id; // -1 when none (tok_bos_token/tok_eos_token return their content)
    bool nfc;               // NFC normalization before pre-tokenization
    bool ignore_merges;     // BPE ignore_merges (Llama-3): a whole word found in the vocab is one token
    const char *chat_template; // may be NULL
};

// Builds a tokenizer from parts. Returns NULL with err on invalid input (bad regex, merge
// naming an unknown token, duplicate id, ...). Caller frees with tok_free.
struct tokenizer *tok_new_bpe(const struct tok_bpe_spec *spec, char *err);

// Pre-tokenizer steps for a GGUF "tokenizer.ggml.pre" name ("gpt2", "llama-bpe", "qwen2",
// "smollm", "default", ...). Returns the number of steps written into *steps (a static,
// borrowed array), or -1 with err for an unknown name.
int tok_pretok_preset(const char *name, const struct tok_pretok_step **steps, char *err);
