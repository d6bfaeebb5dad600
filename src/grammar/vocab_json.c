// grammar_vocab_load_hf: tokenizer.json -> token byte strings (see vocab_json.h).
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"
#include "grammar/vocab_json.h"

// GPT-2 bytes_to_unicode, inverted: code point -> byte (or -1).
static void byte_decoder(int dec[512]) {
    for (int i = 0; i < 512; i++) dec[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (printable) dec[b] = b;
        else dec[256 + n++] = b;
    }
}

// Decodes a token string (UTF-8 of mapped code points) into raw bytes; returns length or -1.
static int decode_token(const int dec[512], const char *s, char *out) {
    const unsigned char *p = (const unsigned char *)s;
    int n = 0;
    while (*p) {
        uint32_t cp;
        if (p[0] < 0x80) { cp = p[0]; p += 1; }
        else if ((p[0] >> 5) == 6 && p[1]) { cp = (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f); p += 2; }
        else return -1;
        if (cp >= 512 || dec[cp] < 0) return -1;
        out[n++] = (char)dec[cp];
    }
    return n;
}

struct grammar_vocab *grammar_vocab_load_hf(const char *path, int model_vocab, const int32_t *eos_ids,
                                            int n_eos, char *err) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) { pg_seterr(err, "%s: %s", path, je.text); return NULL; }
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab)) { json_decref(root); pg_seterr(err, "%s: no model.vocab", path); return NULL; }
    int n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) if ((int)json_integer_value(v) + 1 > n) n = (int)json_integer_value(v) + 1;
    size_t i;
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        if (id + 1 > n) n = id + 1;
    }
    char **toks = pg_calloc((size_t)n, sizeof(char *));
    size_t *lens = pg_calloc((size_t)n, sizeof(size_t));
    int dec[512];
    byte_decoder(dec);
    json_object_foreach(vocab, k, v) {
        int id = (int)json_integer_value(v);
        char *buf = pg_malloc(strlen(k) + 1);
        int l = decode_token(dec, k, buf);
        if (id < 0 || l <= 0) { free(buf); continue; }
        free(toks[id]);
        toks[id] = buf;
        lens[id] = (size_t)l;
    }
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        free(toks[id]);
        toks[id] = NULL;
        lens[id] = 0;
        if (json_is_true(json_object_get(v, "special"))) continue;
        const char *content = json_string_value(json_object_get(v, "content"));
        if (content) { toks[id] = pg_strdup(content); lens[id] = strlen(content); }
    }
    struct grammar_vocab *gv = grammar_vocab_new_from_bytes((const char *const *)toks, lens, n,
                                                            model_vocab > n ? model_vocab : n, eos_ids, n_eos, err);
    for (int t = 0; t < n; t++) free(toks[t]);
    free(toks);
    free(lens);
    json_decref(root);
    return gv;
}

const char *grammar_vocab_token(const struct grammar_vocab *v, int32_t id, size_t *len) {
    if (id < 0 || id >= v->n_tokens || !v->tok[id]) { *len = 0; return NULL; }
    *len = v->tok_len[id];
    return v->tok[id];
}
