// tok_load: reads a Hugging Face tokenizer.json (tok_jsonlite, fast) + tokenizer_config.json and
// chat_template.jinja (jansson) into a tok_bpe_spec and builds it with tok_new_bpe.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/tok_impl.h"
#include "tokenizer/tok_jsonlite.h"

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

#define D const struct jl_doc *d
#define N const struct jl_node

static const char *jstr(D, N *o, const char *key) { return jl_str(jl_get(d, o, key)); }
static bool jtrue(D, N *o, const char *key) { return jl_is_true(jl_get(d, o, key)); }

static int parse_vocab(struct spec_buf *b, D, N *model, char *err) {
    N *vocab = jl_get(d, model, "vocab");
    if (!vocab || vocab->type != JL_OBJ) {
        pg_seterr(err, "tokenizer.json: model.vocab is not an object");
        return -1;
    }
    int n = 0;
    for (N *k = jl_first(d, vocab); k; k = jl_next(d, jl_next(d, k))) {
        int64_t id;
        if (!jl_int(jl_next(d, k), &id) || id < 0 || id >= (1 << 26)) {
            pg_seterr(err, "tokenizer.json: vocab entry '%.60s' has a bad id", k->s);
            return -1;
        }
        if (id + 1 > n) n = (int)id + 1;
    }
    b->tokens = pg_calloc((size_t)n + 1, sizeof *b->tokens);
    for (N *k = jl_first(d, vocab); k; k = jl_next(d, jl_next(d, k))) {
        int64_t id;
        jl_int(jl_next(d, k), &id);
        if (b->tokens[id]) {
            pg_seterr(err, "tokenizer.json: id %lld appears twice in the vocab", (long long)id);
            return -1;
        }
        b->tokens[id] = k->s;
    }
    b->sp.tokens = b->tokens;
    b->sp.n_tokens = n;
    return 0;
}

// A merge given as ["a", "b"] becomes "a b": written over the array's own text in the
// buffer would be fragile, so it is allocated.
static int parse_merges(struct spec_buf *b, D, N *model, char *err) {
    N *merges = jl_get(d, model, "merges");
    if (jl_is_null(merges)) return 0;
    if (merges->type != JL_ARR) {
        pg_seterr(err, "tokenizer.json: model.merges is not an array");
        return -1;
    }
    size_t n = merges->len, i = 0;
    b->merges = pg_calloc(n + 1, sizeof *b->merges);
    b->owned = pg_calloc(n + 1, sizeof *b->owned);
    for (N *m = jl_first(d, merges); m; m = jl_next(d, m), i++) {
        N *l = jl_first(d, m), *r = l ? jl_next(d, l) : NULL;
        if (m->type == JL_STR) {
            b->merges[i] = m->s;
        } else if (m->type == JL_ARR && m->len == 2 && jl_str(l) && jl_str(r)) {
            char *s = pg_malloc(l->len + r->len + 2);
            memcpy(s, l->s, l->len);
            s[l->len] = ' ';
            memcpy(s + l->len + 1, r->s, r->len + 1);
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

static int parse_model(struct spec_buf *b, D, N *model, char *err) {
    if (!model || model->type != JL_OBJ) {
        pg_seterr(err, "tokenizer.json: no model");
        return -1;
    }
    const char *type = jstr(d, model, "type");
    if (type && strcmp(type, "BPE") != 0) {
        pg_seterr(err, "tokenizer.json: model type '%s' is not supported (BPE only)", type);
        return -1;
    }
    const char *p = jstr(d, model, "continuing_subword_prefix"), *s = jstr(d, model, "end_of_word_suffix");
    if ((p && *p) || (s && *s)) {
        pg_seterr(err, "tokenizer.json: BPE continuing_subword_prefix/end_of_word_suffix are not supported");
        return -1;
    }
    b->sp.ignore_merges = jtrue(d, model, "ignore_merges");
    if (parse_vocab(b, d, model, err) || parse_merges(b, d, model, err)) return -1;
    return 0;
}

static int parse_normalizer(struct spec_buf *b, D, N *n, char *err, int depth) {
    if (jl_is_null(n)) return 0;
    const char *type = jstr(d, n, "type");
    if (type && !strcmp(type, "NFC")) {
        b->sp.nfc = true;
        return 0;
    }
    if (type && !strcmp(type, "Sequence") && depth < 8) {
        for (N *x = jl_first(d, jl_get(d, n, "normalizers")); x; x = jl_next(d, x))
            if (parse_normalizer(b, d, x, err, depth + 1)) return -1;
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

static int parse_pretok(struct spec_buf *b, D, N *p, char *err, int depth) {
    const char *type = jstr(d, p, "type");
    if (!type) type = "?";
    if (!strcmp(type, "Sequence") && depth < 8) {
        for (N *x = jl_first(d, jl_get(d, p, "pretokenizers")); x; x = jl_next(d, x))
            if (parse_pretok(b, d, x, err, depth + 1)) return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        N *re = jl_get(d, p, "use_regex");
        struct tok_pretok_step st = {.kind = TOK_PRE_BYTELEVEL, .add_prefix_space = jtrue(d, p, "add_prefix_space"),
                                     .use_regex = re ? jl_is_true(re) : true};
        return add_step(b, st, NULL, err);
    }
    if (!strcmp(type, "Digits")) {
        bool each = jtrue(d, p, "individual_digits");
        struct tok_pretok_step st = {.kind = TOK_PRE_SPLIT};
        return add_step(b, st, pg_strdup(each ? "\\p{N}" : "\\p{N}+"), err);
    }
    if (!strcmp(type, "Split")) {
        const char *beh = jstr(d, p, "behavior");
        if (!beh || strcmp(beh, "Isolated") != 0) {
            pg_seterr(err, "tokenizer.json: Split behavior '%s' is not supported (Isolated only)", beh ? beh : "?");
            return -1;
        }
        N *pat = jl_get(d, p, "pattern");
        const char *re = jstr(d, pat, "Regex"), *lit = jstr(d, pat, "String");
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

static int parse_added(struct spec_buf *b, D, N *list, char *err) {
    if (jl_is_null(list)) return 0;
    if (list->type != JL_ARR) {
        pg_seterr(err, "tokenizer.json: added_tokens is not an array");
        return -1;
    }
    b->added = pg_calloc((size_t)list->len + 1, sizeof *b->added);
    size_t i = 0;
    for (N *a = jl_first(d, list); a; a = jl_next(d, a), i++) {
        int64_t id;
        const char *c = jstr(d, a, "content");
        if (!jl_int(jl_get(d, a, "id"), &id) || !c) {
            pg_seterr(err, "tokenizer.json: added token %zu lacks id or content", i);
            return -1;
        }
        if (id < 0 || id >= (1 << 26)) {
            pg_seterr(err, "tokenizer.json: added token '%.60s' has a bad id", c);
            return -1;
        }
        b->added[i] = (struct tok_added_token){
            .id = (int32_t)id, .content = c, .special = jtrue(d, a, "special"), .lstrip = jtrue(d, a, "lstrip"),
            .rstrip = jtrue(d, a, "rstrip"), .single_word = jtrue(d, a, "single_word"),
            .normalized = jtrue(d, a, "normalized")};
    }
    b->sp.added = b->added;
    b->sp.n_added = (int)list->len;
    return 0;
}

static int check_decoder(D, N *dec, char *err, int depth) {
    if (jl_is_null(dec)) return 0;
    const char *type = jstr(d, dec, "type");
    if (type && !strcmp(type, "ByteLevel")) return 0;
    if (type && !strcmp(type, "Sequence") && depth < 8) {
        for (N *x = jl_first(d, jl_get(d, dec, "decoders")); x; x = jl_next(d, x))
            if (check_decoder(d, x, err, depth + 1)) return -1;
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
        const char *name = json_string_value(json_object_get(x, "name"));
        const char *tpl = json_string_value(json_object_get(x, "template"));
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
static struct tokenizer *from_doc(D, char *err) {
    struct spec_buf b = {0};
    b.sp.bos_id = b.sp.eos_id = -1;
    struct tokenizer *t = NULL;
    N *root = &d->nodes[0];
    if (root->type != JL_OBJ) {
        pg_seterr(err, "tokenizer.json: not a JSON object");
        return NULL;
    }
    N *pre = jl_get(d, root, "pre_tokenizer");
    if (parse_model(&b, d, jl_get(d, root, "model"), err) ||
        parse_normalizer(&b, d, jl_get(d, root, "normalizer"), err, 0) ||
        (!jl_is_null(pre) && parse_pretok(&b, d, pre, err, 0)) ||
        parse_added(&b, d, jl_get(d, root, "added_tokens"), err) ||
        check_decoder(d, jl_get(d, root, "decoder"), err, 0))
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

// Parses buf in place (it is modified).
static struct tokenizer *from_buffer(char *buf, size_t len, char *err) {
    struct jl_doc d;
    if (jl_parse(&d, buf, len, err)) return NULL;
    struct tokenizer *t = from_doc(&d, err);
    jl_free(&d);
    return t;
}

struct tokenizer *tok_from_json(const char *json, size_t len, char *err) {
    char *buf = pg_malloc(len + 1);
    memcpy(buf, json, len);
    buf[len] = 0;
    struct tokenizer *t = from_buffer(buf, len, err);
    free(buf);
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
        t = from_buffer(text, len, e2);
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
