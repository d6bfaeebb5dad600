// WordPiece tokenizer (BERT family) loaded from a Hugging Face tokenizer.json, matching the
// `tokenizers` library: added tokens split out of the raw text first; BertNormalizer
// (clean_text, handle_chinese_chars, strip_accents (default: = lowercase), lowercase);
// BertPreTokenizer (split on whitespace, each punctuation character its own piece);
// WordPiece (greedy longest match, "##" continuation, [UNK] for a word that cannot be
// covered or is longer than max_input_chars_per_word); then [CLS] ... [SEP].
// Immutable after load; thread-safe.
#pragma once
#include "util/common.h"

struct wordpiece;

// path: a tokenizer.json. NULL + err on a missing file, a non-WordPiece model, or a
// normalizer / pre-tokenizer other than the BERT ones.
struct wordpiece *wp_load(const char *path, char *err);
void wp_free(struct wordpiece *w);

// Encodes text into [CLS] ids... [SEP], truncated so the whole is at most max_len ids
// (max_len >= 2; the tail of the text is dropped, as HF truncation does). *ids is malloc'd
// (caller frees). Invalid UTF-8 bytes are treated as U+FFFD (removed by clean_text).
int wp_encode(const struct wordpiece *w, const char *text, size_t len, int max_len, int32_t **ids, int *n_ids,
              char *err);

int wp_vocab_size(const struct wordpiece *w);
int32_t wp_token_id(const struct wordpiece *w, const char *token); // -1 if absent
