// Shared harness for the grammar fuzz targets: a small synthetic vocabulary (built once), then
// compile the input as the given kind; on success run the matcher a few steps (masks + accepting
// the first allowed token) so the runtime is fuzzed too. Errors are expected; crashes, leaks and
// UB are not.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"

static struct grammar_vocab *fuzz_vocab(void) {
    static struct grammar_vocab *v;
    if (v) return v;
    static const char *multi[] = {"\"", "{\"", "\":", "\",", "\"}", "[\"", "ab", "123", "true", "null",
                                  "false", ", ", ": ", "\\n", "\xe4\xb8\xad", "\xe4", "\xb8\xad", " {", "}]", "-1"};
    enum { NM = sizeof(multi) / sizeof(multi[0]) };
    const char *toks[256 + NM + 1];
    size_t lens[256 + NM + 1];
    static char bytes[256];
    for (int i = 0; i < 256; i++) { bytes[i] = (char)i; toks[i] = &bytes[i]; lens[i] = 1; }
    for (int i = 0; i < NM; i++) { toks[256 + i] = multi[i]; lens[256 + i] = strlen(multi[i]); }
    toks[256 + NM] = NULL;
    lens[256 + NM] = 0;
    int32_t eos = 256 + NM;
    char err[PG_ERR_LEN];
    v = grammar_vocab_new_from_bytes(toks, lens, 256 + NM + 1, 256 + NM + 8, &eos, 1, err);
    return v;
}

static int fuzz_one(enum grammar_kind kind, const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    struct grammar_vocab *v = fuzz_vocab();
    char err[PG_ERR_LEN];
    struct grammar *g = grammar_compile(v, kind, (const char *)data, size, NULL, err);
    if (!g) return 0;
    struct grammar_matcher *m = grammar_matcher_new(g);
    uint32_t mask[16];
    for (int step = 0; step < 8 && !grammar_is_terminated(m); step++) {
        grammar_fill_mask(m, mask);
        int pick = -1;
        for (int id = 0; id < 16 * 32 && pick < 0; id++)
            if ((mask[id >> 5] >> (id & 31)) & 1) pick = (id + step * 7) % (16 * 32);
        if (pick < 0) break;
        if (grammar_accept_token(m, pick) != 0) { // the rotated pick may be disallowed; take the first
            for (int id = 0; id < 16 * 32; id++)
                if ((mask[id >> 5] >> (id & 31)) & 1) { grammar_accept_token(m, id); break; }
        }
    }
    grammar_matcher_free(m);
    grammar_release(g);
    return 0;
}
