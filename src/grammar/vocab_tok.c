// grammar_vocab_new from a loaded tokenizer (kept apart so that users of the byte-string
// constructor do not link the tokenizer).
#include <stdlib.h>

#include "grammar/grammar_impl.h"
#include "tokenizer/tokenizer.h"

struct grammar_vocab *grammar_vocab_new(const struct tokenizer *t, int model_vocab,
                                        const int32_t *eos_ids, int n_eos) {
    int n = tok_vocab_size(t);
    const char **toks = pg_calloc((size_t)(n ? n : 1), sizeof(char *));
    size_t *lens = pg_calloc((size_t)(n ? n : 1), sizeof(size_t));
    for (int i = 0; i < n; i++) {
        if (tok_is_special(t, i)) continue; // never generated as text
        toks[i] = tok_token_bytes(t, i, &lens[i]);
    }
    char err[PG_ERR_LEN];
    struct grammar_vocab *v = grammar_vocab_new_from_bytes(toks, lens, n, model_vocab < n ? n : model_vocab,
                                                           eos_ids, n_eos, err);
    if (!v) pg_error("grammar_vocab_new: %s", err);
    free(toks);
    free(lens);
    return v;
}
