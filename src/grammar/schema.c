// JSON Schema -> grammar. Every (sub)schema becomes a rule; objects emit their properties in
// the schema's order (required ones always, optional ones may be skipped); additional
// properties are not generated when "properties" is given (a valid subset). Unknown or
// unsupported keywords fail with an error naming them. oneOf is compiled as anyOf (its
// branches should be disjoint; see docs/grammar.md).
#include <stdlib.h>
#include <string.h>

#include "grammar/schema_impl.h"

#define SC_MAX_DEPTH 64

static const char *const k_supported[] = {
    "type", "properties", "required", "additionalProperties", "enum", "const", "items",
    "prefixItems", "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions", "minLength", "maxLength", "pattern", "format", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "uniqueItems",
    // annotations (no effect on validation)
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly", "$anchor", NULL};

static bool kw_known(const char *k) {
    for (int i = 0; k_supported[i]; i++)
        if (!strcmp(k, k_supported[i])) return true;
    return false;
}

static bool kw_annotation(const char *k) {
    static const char *const a[] = {"title", "description", "default", "examples", "$schema", "$id",
                                    "$comment", "deprecated", "readOnly", "writeOnly", "$anchor",
                                    "$defs", "definitions", NULL};
    for (int i = 0; a[i]; i++)
        if (!strcmp(k, a[i])) return true;
    return false;
}

static json_t *own(struct sc *c, json_t *j) {
    if (c->n_owned == c->cap_owned) {
        c->cap_owned = c->cap_owned ? 2 * c->cap_owned : 16;
        c->owned = pg_realloc(c->owned, (size_t)c->cap_owned * sizeof(json_t *));
    }
    c->owned[c->n_owned++] = j;
    return j;
}

static json_t *resolve_ref(struct sc *c, const char *ref) {
    if (ref[0] != '#') { gb_fail(c->b, "unsupported JSON Schema $ref '%s' (only local '#/...' refs)", ref); return NULL; }
    json_t *cur = c->root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char tok[256];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 1 < sizeof(tok); i++) { // JSON pointer unescape
            if (p[i] == '~' && i + 1 < n && (p[i + 1] == '0' || p[i + 1] == '1')) {
                tok[k++] = p[i + 1] == '0' ? '~' : '/';
                i++;
            } else tok[k++] = p[i];
        }
        tok[k] = 0;
        if (json_is_object(cur)) cur = json_object_get(cur, tok);
        else if (json_is_array(cur)) cur = json_array_get(cur, (size_t)strtoul(tok, NULL, 10));
        else cur = NULL;
        if (!cur) { gb_fail(c->b, "JSON Schema: unresolved $ref '%s'", ref); return NULL; }
        p += n;
    }
    if (*p) { gb_fail(c->b, "unsupported JSON Schema $ref '%s'", ref); return NULL; }
    return cur;
}

// Merges schema b into the new object a (allOf). Fails on conflicting keywords.
static int merge_into(struct sc *c, json_t *a, json_t *b) {
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) {
        json_t *old = json_object_get(a, k);
        if (!old) { json_object_set(a, k, v); continue; }
        if (json_equal(old, v) || kw_annotation(k)) continue;
        if (!strcmp(k, "properties") && json_is_object(old) && json_is_object(v)) {
            json_t *props = own(c, json_deep_copy(old));
            const char *pk;
            json_t *pv;
            json_object_foreach(v, pk, pv) {
                json_t *o = json_object_get(props, pk);
                if (o && !json_equal(o, pv)) return gb_fail(c->b, "unsupported allOf: property '%s' defined differently", pk);
                json_object_set(props, pk, pv);
            }
            json_object_set(a, k, props);
        } else if (!strcmp(k, "required") && json_is_array(old) && json_is_array(v)) {
            json_t *req = own(c, json_copy(old));
            size_t i;
            json_t *x;
            json_array_foreach(v, i, x) json_array_append(req, x);
            json_object_set(a, k, req);
        } else return gb_fail(c->b, "unsupported allOf: conflicting '%s'", k);
    }
    return 0;
}

// Resolves $ref and allOf into one schema object (borrowed or owned by c).
static json_t *flatten(struct sc *c, json_t *s, int depth) {
    if (depth > SC_MAX_DEPTH) { gb_fail(c->b, "JSON Schema: $ref/allOf nesting too deep"); return NULL; }
    json_t *ref = json_object_get(s, "$ref"), *all = json_object_get(s, "allOf");
    if (!ref && !all) return s;
    json_t *m = own(c, json_object());
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) if (strcmp(k, "$ref") && strcmp(k, "allOf")) json_object_set(m, k, v);
    if (ref) {
        if (!json_is_string(ref)) { gb_fail(c->b, "JSON Schema: $ref must be a string"); return NULL; }
        json_t *t = resolve_ref(c, json_string_value(ref));
        if (!t) return NULL;
        if (json_object_size(m) == 0 || (json_object_size(m) == 1 && json_object_get(m, "$defs")))
            return flatten(c, t, depth + 1); // plain reference: keep identity for recursion
        if (!json_is_object(t)) { gb_fail(c->b, "unsupported JSON Schema: $ref to a boolean schema with siblings"); return NULL; }
        json_t *ft = flatten(c, t, depth + 1);
        if (!ft || merge_into(c, m, ft)) return NULL;
    }
    if (all) {
        size_t i;
        json_t *x;
        if (!json_is_array(all)) { gb_fail(c->b, "JSON Schema: allOf must be an array"); return NULL; }
        json_array_foreach(all, i, x) {
            if (!json_is_object(x)) { gb_fail(c->b, "unsupported JSON Schema: boolean schema in allOf"); return NULL; }
            json_t *fx = flatten(c, x, depth + 1);
            if (!fx || merge_into(c, m, fx)) return NULL;
        }
    }
    return flatten(c, m, depth + 1);
}

static int schema_rule(struct sc *c, json_t *s);

static struct gx *value(struct sc *c, json_t *s) {
    int r = schema_rule(c, s);
    return r < 0 ? gx_fail(c->b) : gx_ref(c->b, r);
}

static struct gx *sep(struct sc *c, char ch) {
    struct gx *k[3] = {c->ws, gx_byte(c->b, (uint8_t)ch), c->ws};
    return gx_seq(c->b, 3, k);
}

static bool in_required(json_t *req, const char *name) {
    size_t i;
    json_t *x;
    json_array_foreach(req, i, x) if (json_is_string(x) && !strcmp(json_string_value(x), name)) return true;
    return false;
}

static struct gx *object_expr(struct sc *c, json_t *s) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    if ((props && !json_is_object(props)) || (req && !json_is_array(req))) {
        gb_fail(c->b, "JSON Schema: bad properties/required");
        return gx_fail(c->b);
    }
    size_t i;
    json_t *x;
    json_array_foreach(req, i, x) if (!json_is_string(x) || !json_object_get(props, json_string_value(x))) {
        gb_fail(c->b, "unsupported JSON Schema: required property '%s' not in properties",
                json_is_string(x) ? json_string_value(x) : "?");
        return gx_fail(c->b);
    }
    int n = props ? (int)json_object_size(props) : 0;
    if (n == 0 && !(addl && json_is_false(addl))) { // a map: any keys, values per additionalProperties
        if (!addl || json_is_true(addl)) return gx_ref(c->b, sc_any_object(c));
        struct gx *member[3] = {gx_ref(c->b, sc_any_string(c)), sep(c, ':'), value(c, addl)};
        struct gx *m = gx_seq(c->b, 3, member);
        struct gx *more = gx_rep(c->b, gx_seq2(c->b, sep(c, ','), m), 0, -1);
        struct gx *k[5] = {gx_byte(c->b, '{'), c->ws, gx_rep(c->b, gx_seq2(c->b, m, more), 0, 1), c->ws, gx_byte(c->b, '}')};
        return gx_seq(c->b, 5, k);
    }
    struct gx **P = pg_malloc((size_t)(n + 1) * sizeof(*P));
    bool *rq = pg_calloc((size_t)n + 1, 1);
    const char *key;
    int k = 0;
    json_object_foreach(props, key, x) { // jansson keeps insertion order
        json_t *ks = json_string(key);
        char *enc = json_dumps(ks, JSON_ENCODE_ANY);
        json_decref(ks);
        struct gx *kv[3] = {gx_lit(c->b, enc, strlen(enc)), sep(c, ':'), value(c, x)};
        free(enc);
        P[k] = gx_seq(c->b, 3, kv);
        rq[k] = req && in_required(req, key);
        k++;
    }
    // A[i]: properties i.. after one was emitted; F[i]: properties i.. with none emitted yet
    struct gx **A = pg_malloc((size_t)(n + 1) * sizeof(*A)), **F = pg_malloc((size_t)(n + 1) * sizeof(*F));
    A[n] = F[n] = gx_empty(c->b);
    struct gx *comma = sep(c, ',');
    // Inlining A[] costs O(n^2) automaton states; past a few properties each A[j] is a rule.
    bool as_rules = n > 6;
    for (int j = n - 1; j >= 0; j--) {
        struct gx *withp = gx_seq2(c->b, gx_seq2(c->b, comma, P[j]), A[j + 1]);
        struct gx *a = rq[j] ? withp : gx_seq2(c->b, gx_rep(c->b, gx_seq2(c->b, comma, P[j]), 0, 1), A[j + 1]);
        if (as_rules) {
            int r = gb_new_rule(c->b, "props");
            gb_define(c->b, r, a);
            a = gx_ref(c->b, r);
        }
        A[j] = a;
        struct gx *first = gx_seq2(c->b, P[j], A[j + 1]);
        F[j] = rq[j] ? first : gx_alt2(c->b, first, F[j + 1]);
    }
    struct gx *kk[5] = {gx_byte(c->b, '{'), c->ws, F[0], c->ws, gx_byte(c->b, '}')};
    struct gx *res = gx_seq(c->b, 5, kk);
    free(P); free(rq); free(A); free(F);
    return res;
}

static int get_count(struct sc *c, json_t *s, const char *key, long dflt, long *out) {
    json_t *j = json_object_get(s, key);
    *out = dflt;
    if (!j) return 0;
    if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > 10000)
        return gb_fail(c->b, "unsupported JSON Schema value: '%s' must be an integer in [0, 10000]", key);
    *out = (long)json_integer_value(j);
    return 0;
}

static struct gx *array_expr(struct sc *c, json_t *s) {
    json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems");
    json_t *uniq = json_object_get(s, "uniqueItems");
    long mn, mx;
    if (uniq && !json_is_false(uniq)) { gb_fail(c->b, "unsupported JSON Schema keyword 'uniqueItems'"); return gx_fail(c->b); }
    if (get_count(c, s, "minItems", 0, &mn) || get_count(c, s, "maxItems", -1, &mx)) return gx_fail(c->b);
    if (prefix && !json_is_array(prefix)) { gb_fail(c->b, "JSON Schema: prefixItems must be an array"); return gx_fail(c->b); }
    if (items && json_is_array(items)) { gb_fail(c->b, "unsupported JSON Schema: array-form 'items' (use prefixItems)"); return gx_fail(c->b); }
    long p = prefix ? (long)json_array_size(prefix) : 0;
    if (items && json_is_false(items)) mx = (mx < 0 || mx > p) ? p : mx;
    if (mx >= 0 && mn > mx) { gb_fail(c->b, "JSON Schema: minItems > maxItems"); return gx_fail(c->b); }
    struct gx *item = (!items || json_is_true(items)) ? gx_ref(c->b, sc_any_value(c))
                      : json_is_false(items)           ? gx_fail(c->b)
                                                       : value(c, items);
    struct gx *comma = sep(c, ',');
    // T[k]: the rest after k elements were emitted (k >= 1)
    long top = p + 1;
    struct gx *tail = NULL;
    for (long k = top; k >= 1; k--) {
        struct gx *t;
        if (mx >= 0 && k >= mx) t = gx_empty(c->b);
        else if (k >= p) {
            long rmin = mn - k > 0 ? mn - k : 0;
            t = gx_rep(c->b, gx_seq2(c->b, comma, item), (int)rmin, mx < 0 ? -1 : (int)(mx - k));
        } else {
            struct gx *e = value(c, json_array_get(prefix, (size_t)k));
            struct gx *x = gx_seq2(c->b, gx_seq2(c->b, comma, e), tail);
            t = k < mn ? x : gx_rep(c->b, x, 0, 1);
        }
        tail = t;
    }
    struct gx *first = p > 0 ? value(c, json_array_get(prefix, 0)) : item;
    struct gx *list = mx == 0 ? gx_empty(c->b) : gx_seq2(c->b, first, tail);
    if (mn == 0 && mx != 0) list = gx_rep(c->b, list, 0, 1);
    struct gx *k5[5] = {gx_byte(c->b, '['), c->ws, list, c->ws, gx_byte(c->b, ']')};
    return gx_seq(c->b, 5, k5);
}

static bool type_matches(const char *t, json_t *v) {
    if (!strcmp(t, "string")) return json_is_string(v);
    if (!strcmp(t, "integer")) return json_is_integer(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    if (!strcmp(t, "null")) return json_is_null(v);
    if (!strcmp(t, "object")) return json_is_object(v);
    if (!strcmp(t, "array")) return json_is_array(v);
    return false;
}

static struct gx *typed(struct sc *c, json_t *s, const char *t) {
    if (!strcmp(t, "string")) return sc_string(c, s);
    if (!strcmp(t, "integer")) return sc_integer(c, s);
    if (!strcmp(t, "number")) return sc_number(c, s);
    if (!strcmp(t, "boolean")) return regex_compile(c->b, "true|false", 10, false);
    if (!strcmp(t, "null")) return gx_lit(c->b, "null", 4);
    if (!strcmp(t, "object")) return object_expr(c, s);
    if (!strcmp(t, "array")) return array_expr(c, s);
    gb_fail(c->b, "unsupported JSON Schema type '%s'", t);
    return gx_fail(c->b);
}

static const char *infer_type(json_t *s) {
    static const char *const obj[] = {"properties", "required", "additionalProperties", NULL};
    static const char *const arr[] = {"items", "prefixItems", "minItems", "maxItems", NULL};
    static const char *const str[] = {"minLength", "maxLength", "pattern", "format", NULL};
    static const char *const num[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};
    for (int i = 0; obj[i]; i++) if (json_object_get(s, obj[i])) return "object";
    for (int i = 0; arr[i]; i++) if (json_object_get(s, arr[i])) return "array";
    for (int i = 0; str[i]; i++) if (json_object_get(s, str[i])) return "string";
    for (int i = 0; num[i]; i++) if (json_object_get(s, num[i])) return "number";
    return NULL;
}

static struct gx *schema_body(struct sc *c, json_t *s);

static struct gx *choice_of(struct sc *c, json_t *s, json_t *arr, const char *kw) {
    if (!json_is_array(arr) || !json_array_size(arr)) {
        gb_fail(c->b, "JSON Schema: '%s' must be a non-empty array", kw);
        return gx_fail(c->b);
    }
    size_t n = json_array_size(arr), i;
    json_t *x;
    struct gx **alts = pg_malloc(n * sizeof(*alts));
    json_array_foreach(arr, i, x) {
        if (json_object_size(s) > 1 && json_is_object(x)) { // siblings apply to every branch
            json_t *m = own(c, json_object());
            const char *k;
            json_t *v;
            json_object_foreach(s, k, v) if (strcmp(k, kw)) json_object_set(m, k, v);
            json_t *fx = flatten(c, x, 0);
            if (!fx || merge_into(c, m, fx)) { free(alts); return gx_fail(c->b); }
            alts[i] = schema_body(c, m);
        } else alts[i] = value(c, x);
    }
    struct gx *r = gx_alt(c->b, (int)n, alts);
    free(alts);
    return r;
}

static struct gx *schema_body(struct sc *c, json_t *s) {
    if (json_is_true(s)) return gx_ref(c->b, sc_any_value(c));
    if (!json_is_object(s)) {
        gb_fail(c->b, json_is_false(s) ? "unsupported JSON Schema: 'false' schema" : "JSON Schema: schema must be an object");
        return gx_fail(c->b);
    }
    if (++c->depth > SC_MAX_DEPTH) { gb_fail(c->b, "JSON Schema: nesting too deep"); return gx_fail(c->b); }
    struct gx *res = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) if (!kw_known(k)) {
        gb_fail(c->b, "unsupported JSON Schema keyword '%s'", k);
        res = gx_fail(c->b);
        goto done;
    }
    json_t *f = flatten(c, s, 0);
    if (!f) { res = gx_fail(c->b); goto done; }
    if (f != s) { // a reference or a merge: its own (memoized) rule, so recursion terminates
        res = value(c, f);
        goto done;
    }
    json_object_foreach(s, k, v) if (!kw_known(k)) {
        gb_fail(c->b, "unsupported JSON Schema keyword '%s'", k);
        res = gx_fail(c->b);
        goto done;
    }
    json_t *type = json_object_get(s, "type"), *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    json_t *any = json_object_get(s, "anyOf"), *one = json_object_get(s, "oneOf");
    if (any && one) { gb_fail(c->b, "unsupported JSON Schema: anyOf together with oneOf"); res = gx_fail(c->b); goto done; }
    if (any || one) { res = choice_of(c, s, any ? any : one, any ? "anyOf" : "oneOf"); goto done; }
    if (cn || en) {
        json_t *vals = cn ? own(c, json_pack("[O]", cn)) : en;
        if (!json_is_array(vals)) { gb_fail(c->b, "JSON Schema: enum must be an array"); res = gx_fail(c->b); goto done; }
        size_t i, n = 0;
        json_t *x;
        struct gx **alts = pg_malloc((json_array_size(vals) + 1) * sizeof(*alts));
        json_array_foreach(vals, i, x) {
            bool ok = !type || (json_is_string(type) && type_matches(json_string_value(type), x));
            for (size_t j = 0; json_is_array(type) && j < json_array_size(type); j++)
                ok |= type_matches(json_string_value(json_array_get(type, j)) ? json_string_value(json_array_get(type, j)) : "", x);
            if (ok) alts[n++] = sc_json_literal(c, x);
        }
        if (!n) gb_fail(c->b, "JSON Schema: enum/const admits no value");
        res = gx_alt(c->b, (int)n, alts);
        free(alts);
        goto done;
    }
    if (!type) {
        const char *t = infer_type(s);
        res = t ? typed(c, s, t) : gx_ref(c->b, sc_any_value(c));
    } else if (json_is_string(type)) {
        res = typed(c, s, json_string_value(type));
    } else if (json_is_array(type) && json_array_size(type)) {
        size_t n = json_array_size(type), i;
        json_t *x;
        struct gx **alts = pg_malloc(n * sizeof(*alts));
        json_array_foreach(type, i, x) alts[i] = json_is_string(x) ? typed(c, s, json_string_value(x)) : gx_fail(c->b);
        res = gx_alt(c->b, (int)n, alts);
        free(alts);
    } else {
        gb_fail(c->b, "JSON Schema: bad 'type'");
        res = gx_fail(c->b);
    }
done:
    c->depth--;
    return res;
}

// One rule per distinct sub-schema: memoized by identity (so $ref recursion terminates) and
// by content (identical property schemas share one automaton).
static int schema_rule(struct sc *c, json_t *s) {
    for (int i = 0; i < c->n_memo; i++)
        if (c->memo_key[i] == s) return c->memo_rule[i];
    if (c->b->failed) return -1;
    char *text = json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    int found = -1;
    for (int i = 0; text && i < c->n_memo && found < 0; i++)
        if (c->memo_text[i] && !strcmp(c->memo_text[i], text)) found = c->memo_rule[i];
    int r = found >= 0 ? found : gb_new_rule(c->b, "schema");
    if (c->n_memo == c->cap_memo) {
        c->cap_memo = c->cap_memo ? 2 * c->cap_memo : 32;
        c->memo_key = pg_realloc(c->memo_key, (size_t)c->cap_memo * sizeof(json_t *));
        c->memo_rule = pg_realloc(c->memo_rule, (size_t)c->cap_memo * sizeof(int));
        c->memo_text = pg_realloc(c->memo_text, (size_t)c->cap_memo * sizeof(char *));
    }
    c->memo_key[c->n_memo] = s;
    c->memo_text[c->n_memo] = text;
    c->memo_rule[c->n_memo++] = r;
    if (found >= 0) return r;
    gb_define(c->b, r, schema_body(c, s));
    return r;
}

// Compiles schema (a parsed document; decref'd here) into rule target.
static int compile_doc(struct gbuild *b, json_t *doc, const char *ws_pattern, int target) {
    struct sc c = {.b = b, .any_rule = -1, .any_object_rule = -1, .string_rule = -1, .root = doc};
    const char *ws = ws_pattern ? ws_pattern : "[ \\t\\n]{0,16}";
    c.ws = regex_compile(b, ws, strlen(ws), false);
    int rc = -1;
    if (!c.ws) gb_fail(b, "bad whitespace pattern");
    else if (!doc) {
        gb_define(b, target, gx_ref(b, sc_any_object(&c)));
        rc = 0;
    } else {
        int r = schema_rule(&c, doc);
        if (r >= 0 && !b->failed) {
            gb_define(b, target, gx_ref(b, r));
            rc = 0;
        }
    }
    for (int i = 0; i < c.n_owned; i++) json_decref(c.owned[i]);
    for (int i = 0; i < c.n_memo; i++) free(c.memo_text[i]);
    free(c.owned); free(c.memo_key); free(c.memo_rule); free(c.memo_text);
    json_decref(doc);
    return b->failed ? -1 : rc;
}

int schema_compile(struct gbuild *b, const char *spec, size_t len, const char *ws_pattern, bool any_object) {
    int root = gb_rule(b, "root");
    if (any_object) return compile_doc(b, NULL, ws_pattern, root);
    json_error_t je;
    json_t *doc = json_loadb(spec, len, JSON_DECODE_ANY, &je);
    if (!doc) return gb_fail(b, "JSON Schema: invalid JSON: %s (line %d)", je.text, je.line);
    return compile_doc(b, doc, ws_pattern, root);
}

int schema_compile_at(struct gbuild *b, const char *s, size_t n, size_t *pos, int target) {
    json_error_t je;
    json_t *doc = json_loadb(s + *pos, n - *pos, JSON_DISABLE_EOF_CHECK, &je);
    if (!doc) return gb_fail(b, "grammar: %%json: invalid JSON Schema: %s", je.text);
    *pos += je.position;
    return compile_doc(b, doc, NULL, target);
}

int choice_compile(struct gbuild *b, const char *spec, size_t len) {
    json_error_t je;
    json_t *a = json_loadb(spec, len, 0, &je);
    if (!json_is_array(a) || !json_array_size(a)) {
        json_decref(a);
        return gb_fail(b, "choice: spec must be a non-empty JSON array of strings");
    }
    size_t n = json_array_size(a), i;
    json_t *x;
    struct gx **alts = pg_malloc(n * sizeof(*alts));
    json_array_foreach(a, i, x) {
        if (!json_is_string(x)) { free(alts); json_decref(a); return gb_fail(b, "choice: element %zu is not a string", i); }
        alts[i] = gx_lit(b, json_string_value(x), json_string_length(x));
    }
    gb_define(b, gb_rule(b, "root"), gx_alt(b, (int)n, alts));
    free(alts);
    json_decref(a);
    return b->failed ? -1 : 0;
}
