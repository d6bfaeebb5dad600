// tok_load: reads a Hugging Face tokenizer.json (+ tokenizer_config.json, chat_template.jinja)
// into a tok_bpe_spec and builds it with tok_new_bpe.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/tok_impl.h"

#define MAX_STEPS 16

struct spec_buf {
    struct tok_bpe_spec sp;
    const char **tokens;
    const char **merges;
    char **owned; // merges built from pairs
    int n_owned;
    struct tok_pretok_step steps[MAX_STEPS];
    char *step_re[MAX_STEPS]; // owned regexes (escaped literals, Digits)
    struct tok_added_token *added;
};

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_vocab(struct spec_buf *b, json_t *model, char *err) {
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) {
        pg_seterr(err, "tokenizer.json: model.vocab is not an object");
        return -1;
    }
    int n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= (1 << 26)) {
            pg_seterr(err, "tokenizer.json: vocab entry '%.60s' has a bad id", key);
            return -1;
        }
        if (id + 1 > n) n = (int)id + 1;
    }
    b->tokens = pg_calloc((size_t)n + 1, sizeof *b->tokens);
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_integer_value(v);
        if (b->tokens[id]) {
            pg_seterr(err, "tokenizer.json: id %lld appears twice in the vocab", (long long)id);
            return -1;
        }
        b->tokens[id] = key;
    }
    b->sp.tokens = b->tokens;
    b->sp.n_tokens = n;
    return 0;
}

static int parse_merges(struct spec_buf *b, json_t *model, char *err) {
    json_t *merges = json_object_get(model, "merges");
    if (!merges || json_is_null(merges)) return 0;
    if (!json_is_array(merges)) {
        pg_seterr(err, "tokenizer.json: model.merges is not an array");
        return -1;
    }
    size_t n = json_array_size(merges);
    b->merges = pg_calloc(n + 1, sizeof *b->merges);
    b->owned = pg_calloc(n + 1, sizeof *b->owned);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            b->merges[i] = json_string_value(m);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            const char *l = json_string_value(json_array_get(m, 0));
            const char *r = json_string_value(json_array_get(m, 1));
            char *s = pg_malloc(strlen(l) + strlen(r) + 2);
            sprintf(s, "%s %s", l, r);
            b->merges[i] = b->owned[b->n_owned++] = s;
        } else {
            pg_seterr(err, "tokenizer.json: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", i);
            return -1;
        }
    }
    b->sp.merges = b->merges;
    b->sp.n_merges = (int)n;
    return 0;
}

static int parse_model(struct spec_buf *b, json_t *model, char *err) {
    if (!json_is_object(model)) {
        pg_seterr(err, "tokenizer.json: no model");
        return -1;
    }
    const char *type = jstr(model, "type");
    if (type && strcmp(type, "BPE") != 0) {
        pg_seterr(err, "tokenizer.json: model type '%s' is not supported (BPE only)", type);
        return -1;
    }
    const char *p = jstr(model, "continuing_subword_prefix"), *s = jstr(model, "end_of_word_suffix");
    if ((p && *p) || (s && *s)) {
        pg_seterr(err, "tokenizer.json: BPE continuing_subword_prefix/end_of_word_suffix are not supported");
        return -1;
    }
    b->sp.ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    if (parse_vocab(b, model, err) || parse_merges(b, model, err)) return -1;
    return 0;
}

static int parse_normalizer(struct spec_buf *b, json_t *n, char *err) {
    if (!n || json_is_null(n)) return 0;
    const char *type = jstr(n, "type");
    if (type && !strcmp(type, "NFC")) {
        b->sp.nfc = true;
        return 0;
    }
    if (type && !strcmp(type, "Sequence")) {
        json_t *list = json_object_get(n, "normalizers"), *x;
        size_t i;
        json_array_foreach(list, i, x) if (parse_normalizer(b, x, err)) return -1;
        return 0;
    }
    pg_seterr(err, "tokenizer.json: normalizer '%s' is not supported (NFC, Sequence, none)", type ? type : "?");
    return -1;
}

// A literal pattern as a PCRE2 regex: every non-alphanumeric ASCII character escaped.
static char *regex_escape(const char *s) {
    char *o = pg_malloc(2 * strlen(s) + 1), *p = o;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x80 && !((c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'))) *p++ = '\\';
        *p++ = (char)c;
    }
    *p = 0;
    return o;
}

static int add_step(struct spec_buf *b, struct tok_pretok_step st, char *owned_re, char *err) {
    if (b->sp.n_pretok == MAX_STEPS) {
        free(owned_re);
        pg_seterr(err, "tokenizer.json: too many pre-tokenizers");
        return -1;
    }
    if (owned_re) st.regex = owned_re;
    b->step_re[b->sp.n_pretok] = owned_re;
    b->steps[b->sp.n_pretok++] = st;
    return 0;
}

static int parse_pretok(struct spec_buf *b, json_t *p, char *err) {
    const char *type = jstr(p, "type");
    if (!type) type = "?";
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers"), *x;
        size_t i;
        json_array_foreach(list, i, x) if (parse_pretok(b, x, err)) return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        json_t *re = json_object_get(p, "use_regex");
        struct tok_pretok_step st = {.kind = TOK_PRE_BYTELEVEL,
                                     .add_prefix_space = json_is_true(json_object_get(p, "add_prefix_space")),
                                     .use_regex = re ? json_is_true(re) : true};
        return add_step(b, st, NULL, err);
    }
    if (!strcmp(type, "Digits")) {
        bool each = json_is_true(json_object_get(p, "individual_digits"));
        struct tok_pretok_step st = {.kind = TOK_PRE_SPLIT};
        return add_step(b, st, pg_strdup(each ? "\\p{N}" : "\\p{N}+"), err);
    }
    if (!strcmp(type, "Split")) {
        const char *beh = jstr(p, "behavior");
        if (!beh || strcmp(beh, "Isolated") != 0) {
            pg_seterr(err, "tokenizer.json: Split behavior '%s' is not supported (Isolated only)", beh ? beh : "?");
            return -1;
        }
        json_t *pat = json_object_get(p, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        if (!re && !lit) {
            pg_seterr(err, "tokenizer.json: Split without a Regex or String pattern");
            return -1;
        }
        // Isolated keeps matches and gaps alike, so invert changes nothing.
        struct tok_pretok_step st = {.kind = TOK_PRE_SPLIT};
        return add_step(b, st, re ? pg_strdup(re) : regex_escape(lit), err);
    }
    pg_seterr(err, "tokenizer.json: pre-tokenizer '%s' is not supported", type);
    return -1;
}

static int parse_added(struct spec_buf *b, json_t *list, char *err) {
    if (!list || json_is_null(list)) return 0;
    if (!json_is_array(list)) {
        pg_seterr(err, "tokenizer.json: added_tokens is not an array");
        return -1;
    }
    size_t n = json_array_size(list), i;
    json_t *a;
    b->added = pg_calloc(n + 1, sizeof *b->added);
    json_array_foreach(list, i, a) {
        json_t *id = json_object_get(a, "id");
        const char *c = jstr(a, "content");
        if (!json_is_integer(id) || !c) {
            pg_seterr(err, "tokenizer.json: added token %zu lacks id or content", i);
            return -1;
        }
        b->added[i] = (struct tok_added_token){
            .id = (int32_t)json_integer_value(id), .content = c,
            .special = json_is_true(json_object_get(a, "special")),
            .lstrip = json_is_true(json_object_get(a, "lstrip")),
            .rstrip = json_is_true(json_object_get(a, "rstrip")),
            .single_word = json_is_true(json_object_get(a, "single_word")),
            .normalized = json_is_true(json_object_get(a, "normalized"))};
        if (json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 26)) {
            pg_seterr(err, "tokenizer.json: added token '%.60s' has a bad id", c);
            return -1;
        }
    }
    b->sp.added = b->added;
    b->sp.n_added = (int)n;
    return 0;
}

static int check_decoder(json_t *d, char *err) {
    if (!d || json_is_null(d)) return 0;
    const char *type = jstr(d, "type");
    if (type && !strcmp(type, "ByteLevel")) return 0;
    if (type && !strcmp(type, "Sequence")) {
        json_t *list = json_object_get(d, "decoders"), *x;
        size_t i;
        json_array_foreach(list, i, x) if (check_decoder(x, err)) return -1;
        return 0;
    }
    pg_seterr(err, "tokenizer.json: decoder '%s' is not supported (ByteLevel only)", type ? type : "?");
    return -1;
}

// "bos_token": "<s>" or {"content": "<s>", ...}
static char *config_token(json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? pg_strdup(json_string_value(v)) : NULL;
}

static char *config_template(json_t *cfg) {
    json_t *v = json_object_get(cfg, "chat_template");
    if (json_is_string(v)) return pg_strdup(json_string_value(v));
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) { // [{"name": "default", "template": "..."}, ...]
        const char *name = jstr(x, "name"), *tpl = jstr(x, "template");
        if (name && tpl && !strcmp(name, "default")) return pg_strdup(tpl);
    }
    return NULL;
}

// Reads tokenizer_config.json and chat_template.jinja from dir (both optional).
static int load_config(struct tokenizer *t, const char *dir, char *err) {
    char *path = pg_path_join(dir, "tokenizer_config.json");
    int rc = 0;
    if (pg_file_exists(path)) {
        json_error_t je;
        json_t *cfg = json_load_file(path, 0, &je);
        if (!cfg) {
            pg_seterr(err, "%s:%d: %s", path, je.line, je.text);
            rc = -1;
        } else {
            t->chat_template = config_template(cfg);
            char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
            if (bos) free(t->bos_token), t->bos_token = bos, t->bos_id = tok_find(t, bos);
            if (eos) free(t->eos_token), t->eos_token = eos, t->eos_id = tok_find(t, eos);
            json_decref(cfg);
        }
    }
    free(path);
    path = pg_path_join(dir, "chat_template.jinja");
    if (rc == 0 && pg_file_exists(path)) {
        char *tpl = pg_read_file(path, NULL, err);
        if (!tpl) rc = -1;
        else free(t->chat_template), t->chat_template = tpl;
    }
    free(path);
    return rc;
}

static void spec_buf_free(struct spec_buf *b) {
    free(b->tokens);
    free(b->merges);
    for (int i = 0; i < b->n_owned; i++) free(b->owned[i]);
    free(b->owned);
    for (int i = 0; i < b->sp.n_pretok; i++) free(b->step_re[i]);
    free(b->added);
}

// Builds a tokenizer from a parsed tokenizer.json document.
static struct tokenizer *from_json(json_t *root, char *err) {
    struct spec_buf b = {0};
    b.sp.bos_id = b.sp.eos_id = -1;
    struct tokenizer *t = NULL;
    if (!json_is_object(root)) {
        pg_seterr(err, "tokenizer.json: not a JSON object");
        return NULL;
    }
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if (parse_model(&b, json_object_get(root, "model"), err) ||
        parse_normalizer(&b, json_object_get(root, "normalizer"), err) ||
        (pre && !json_is_null(pre) && parse_pretok(&b, pre, err)) ||
        parse_added(&b, json_object_get(root, "added_tokens"), err) ||
        check_decoder(json_object_get(root, "decoder"), err))
        goto done;
    b.sp.pretok = b.steps;
    if (b.sp.n_pretok == 0) {
        pg_seterr(err, "tokenizer.json: no ByteLevel pre-tokenizer (not a byte-level BPE)");
        goto done;
    }
    t = tok_new_bpe(&b.sp, err);
done:
    spec_buf_free(&b);
    return t;
}

struct tokenizer *tok_from_json(const char *json, size_t len, char *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) {
        pg_seterr(err, "line %d: %s", je.line, je.text);
        return NULL;
    }
    struct tokenizer *t = from_json(root, err);
    json_decref(root);
    return t;
}

struct tokenizer *tok_load(const char *path, char *err) {
    if (!path) {
        pg_seterr(err, "tok_load: no path");
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        pg_seterr(err, "tokenizer: cannot open '%s'", path);
        return NULL;
    }
    char *file, *dir;
    if (S_ISDIR(st.st_mode)) {
        file = pg_path_join(path, "tokenizer.json");
        dir = pg_strdup(path);
    } else {
        file = pg_strdup(path);
        dir = pg_strdup(path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else strcpy(dir, ".");
    }
    struct tokenizer *t = NULL;
    size_t len;
    char *text = pg_read_file(file, &len, err);
    if (text) {
        char e2[PG_ERR_LEN];
        t = tok_from_json(text, len, e2);
        if (!t) pg_seterr(err, "%s: %s", file, e2);
        free(text);
    }
    if (t && load_config(t, dir, err)) {
        tok_free(t);
        t = NULL;
    }
    free(file);
    free(dir);
    return t;
}
