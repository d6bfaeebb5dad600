// Jinja builtins: filters, tests, Python str/dict/list methods, and the global functions
// Hugging Face templates use (range, namespace, dict, raise_exception, strftime_now).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "tokenizer/jinja_rt.h"

int jargs_bind(struct jctx *c, const char *fn, struct jargs *a, const char *const *params,
               int n_params, jv **slots) {
    int pos = 0;
    for (int i = 0; i < a->n; i++) {
        int k = -1;
        if (!a->kw[i]) {
            k = pos++;
            if (k >= n_params) return jerr(c, "%s() takes at most %d arguments", fn, n_params);
        } else {
            for (int j = 0; j < n_params; j++)
                if (!strcmp(params[j], a->kw[i])) k = j;
            if (k < 0) return jerr(c, "%s() got an unexpected keyword argument '%s'", fn, a->kw[i]);
        }
        jv_drop(slots[k]);
        *slots[k] = jv_dup(&a->v[i]);
    }
    return 0;
}

// Binds into a local array of n values initialized to Undefined (unbound).
#define BIND(c, fn, a, n, ...)                                                            \
    jv P[n];                                                                              \
    jv *S[n];                                                                             \
    static const char *const NAMES[n] = {__VA_ARGS__};                                    \
    for (int i_ = 0; i_ < n; i_++) P[i_] = jv_undef(NULL, NULL), S[i_] = &P[i_];          \
    int bind_rc_ = jargs_bind(c, fn, a, NAMES, n, S)
#define UNBIND(n)                                                                         \
    for (int i_ = 0; i_ < n; i_++) jv_drop(&P[i_])
#define GIVEN(v) ((v).kind != JV_UNDEF)

static bool is_str(const jv *v) { return jv_is(v, JSON_STRING); }
static const char *S_(const jv *v) { return json_string_value(v->j); }
static size_t L_(const jv *v) { return json_string_length(v->j); }

static jv from_buf(struct jbuf *b) {
    jv r = jv_str_new(b->p ? b->p : "", b->len);
    free(b->p);
    return r;
}

// ---- string helpers ----
static bool in_chars(uint32_t cp, const jv *chars) {
    if (!chars || !is_str(chars)) return py_isspace(cp);
    const char *s = S_(chars);
    size_t n = L_(chars);
    for (size_t i = 0; i < n;) {
        uint32_t c;
        i += (size_t)utf8_dec(s + i, n - i, &c);
        if (c == cp) return true;
    }
    return false;
}

static jv strip(const jv *v, const jv *chars, bool left, bool right) {
    const char *s = S_(v);
    size_t a = 0, b = L_(v);
    while (left && a < b) {
        uint32_t cp;
        int k = utf8_dec(s + a, b - a, &cp);
        if (!in_chars(cp, chars)) break;
        a += (size_t)k;
    }
    while (right && b > a) {
        size_t i = b - 1;
        while (i > a && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
        uint32_t cp;
        utf8_dec(s + i, b - i, &cp);
        if (!in_chars(cp, chars)) break;
        b = i;
    }
    return jv_str_new(s + a, b - a);
}

// Python's full (one-to-many) upper/lower mappings for the common cases utf8proc's simple
// mapping gets wrong; NULL if the simple mapping is right.
static const char *special_case(uint32_t cp, bool upper) {
    if (upper) {
        switch (cp) {
        case 0xDF: return "SS";
        case 0xFB00: return "FF";
        case 0xFB01: return "FI";
        case 0xFB02: return "FL";
        case 0xFB03: return "FFI";
        case 0xFB04: return "FFL";
        case 0xFB05: case 0xFB06: return "ST";
        case 0x149: return "\xCA\xBCN";
        }
        return NULL;
    }
    return cp == 0x130 ? "i\xCC\x87" : NULL;
}

static jv map_case(const jv *v, int mode) { // 0 lower, 1 upper, 2 capitalize, 3 title, 4 swapcase
    const char *s = S_(v);
    size_t n = L_(v);
    struct jbuf b = {0};
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)utf8_dec(s + i, n - i, &cp);
        utf8proc_int32_t c = (utf8proc_int32_t)cp, r = c;
        bool is_title = utf8proc_category(c) == UTF8PROC_CATEGORY_LT;
        bool is_up = !is_title && utf8proc_tolower(c) != c, is_lo = !is_title && utf8proc_toupper(c) != c;
        bool to_upper = mode == 1 || (mode == 4 && is_lo);
        bool to_title = (mode == 2 && first) || (mode == 3 && !prev_cased);
        bool to_lower = mode == 0 || (mode == 2 && !first) || (mode == 3 && prev_cased) || (mode == 4 && is_up);
        const char *sp = to_title && cp == 0xDF ? "Ss" : special_case(cp, !to_lower);
        if ((to_upper || to_lower || to_title) && sp) {
            jbuf_put(&b, sp, strlen(sp));
        } else {
            if (to_title) r = utf8proc_totitle(c);
            else if (to_upper) r = utf8proc_toupper(c);
            else if (to_lower) r = utf8proc_tolower(c);
            char o[4];
            jbuf_put(&b, o, (size_t)utf8_enc((uint32_t)r, o));
        }
        prev_cased = is_up || is_lo || is_title;
        first = false;
    }
    return from_buf(&b);
}

static jv replace(const jv *v, const jv *old, const jv *new, long long count) {
    const char *s = S_(v), *o = S_(old), *w = S_(new);
    size_t n = L_(v), on = L_(old), wn = L_(new);
    struct jbuf b = {0};
    if (on == 0) {
        for (size_t i = 0; i <= n;) {
            if (count != 0) jbuf_put(&b, w, wn), count--;
            if (i == n) break;
            uint32_t cp;
            int k = utf8_dec(s + i, n - i, &cp);
            jbuf_put(&b, s + i, (size_t)k);
            i += (size_t)k;
        }
        return from_buf(&b);
    }
    size_t i = 0;
    while (i < n) {
        const char *hit = count != 0 ? memmem(s + i, n - i, o, on) : NULL;
        if (!hit) break;
        jbuf_put(&b, s + i, (size_t)(hit - (s + i)));
        jbuf_put(&b, w, wn);
        i = (size_t)(hit - s) + on;
        if (count > 0) count--;
        if (b.len > JINJA_MAX_STR) break;
    }
    jbuf_put(&b, s + i, n - i);
    return from_buf(&b);
}

static json_t *split(const jv *v, const jv *sep, long long maxsplit) {
    const char *s = S_(v);
    size_t n = L_(v);
    json_t *r = json_array();
    if (!sep || !is_str(sep)) { // runs of whitespace
        size_t i = 0;
        for (;;) {
            uint32_t cp;
            int k;
            while (i < n && (k = utf8_dec(s + i, n - i, &cp), py_isspace(cp))) i += (size_t)k;
            if (i >= n) break;
            if (maxsplit == 0) {
                size_t e = n;
                while (e > i) { // rstrip the remainder
                    size_t p = e - 1;
                    while (p > i && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
                    utf8_dec(s + p, e - p, &cp);
                    if (!py_isspace(cp)) break;
                    e = p;
                }
                json_array_append_new(r, json_stringn_nocheck(s + i, e - i));
                break;
            }
            size_t j = i;
            while (j < n && (k = utf8_dec(s + j, n - j, &cp), !py_isspace(cp))) j += (size_t)k;
            json_array_append_new(r, json_stringn_nocheck(s + i, j - i));
            i = j;
            if (maxsplit > 0) maxsplit--;
        }
        return r;
    }
    const char *p = S_(sep);
    size_t pn = L_(sep), i = 0;
    for (;;) {
        const char *hit = maxsplit != 0 ? memmem(s + i, n - i, p, pn) : NULL;
        if (!hit) break;
        json_array_append_new(r, json_stringn_nocheck(s + i, (size_t)(hit - (s + i))));
        i = (size_t)(hit - s) + pn;
        if (maxsplit > 0) maxsplit--;
    }
    json_array_append_new(r, json_stringn_nocheck(s + i, n - i));
    return r;
}

static bool affix(const jv *v, const jv *x, bool start) {
    if (!is_str(x)) return false;
    size_t n = L_(v), m = L_(x);
    return m <= n && !memcmp(S_(v) + (start ? 0 : n - m), S_(x), m);
}

static int find(const jv *v, const jv *sub, bool rev) {
    const char *s = S_(v), *p = S_(sub);
    size_t n = L_(v), m = L_(sub);
    long best = -1;
    for (size_t i = 0; i + m <= n; i++) {
        if (!memcmp(s + i, p, m)) {
            best = (long)i;
            if (!rev) break;
        }
    }
    return best < 0 ? -1 : (int)utf8_count(s, (size_t)best);
}

static bool all_cat(const jv *v, int kind) { // 0 digit, 1 alpha, 2 alnum, 3 space, 4 upper, 5 lower
    const char *s = S_(v);
    size_t n = L_(v);
    if (n == 0) return false;
    bool cased = false;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)utf8_dec(s + i, n - i, &cp);
        utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
        bool alpha = c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
        bool digit = c == UTF8PROC_CATEGORY_ND;
        bool lo = utf8proc_toupper((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp;
        bool up = utf8proc_tolower((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp;
        switch (kind) {
        case 0: if (!digit) return false; break;
        case 1: if (!alpha) return false; break;
        case 2: if (!alpha && !digit) return false; break;
        case 3: if (!py_isspace(cp)) return false; break;
        case 4: if (lo) return false; cased |= up; break;
        default: if (up) return false; cased |= lo; break;
        }
    }
    return kind < 4 || cased;
}

// ---- methods ----
static const char *const STR_METHODS[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower",
    "title", "capitalize", "swapcase", "casefold", "replace", "find", "rfind", "count", "join",
    "isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower", "isnumeric", "isdecimal",
    "splitlines", "index", "rindex", NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", "copy", "pop", "update",
                                           "setdefault", "clear", "popitem", NULL};
static const char *const LIST_METHODS[] = {"count", "index", "copy", "append", "extend", "insert",
                                           "pop", "remove", "reverse", "sort", "clear", NULL};

static const char *in_list(const char *const *l, const char *name) {
    for (; *l; l++)
        if (!strcmp(*l, name)) return *l;
    return NULL;
}

const char *jinja_is_method(json_t *self, const char *name) {
    if (json_is_string(self)) return in_list(STR_METHODS, name);
    if (json_is_object(self)) return in_list(DICT_METHODS, name);
    if (json_is_array(self)) return in_list(LIST_METHODS, name);
    return NULL;
}

static json_t *rsplit_space(const jv *v, long long maxsplit) {
    const char *s = S_(v);
    size_t e = L_(v);
    json_t *r = json_array();
    for (;;) {
        uint32_t cp;
        while (e > 0) { // skip trailing whitespace
            size_t p = e - 1;
            while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
            utf8_dec(s + p, e - p, &cp);
            if (!py_isspace(cp)) break;
            e = p;
        }
        if (e == 0) break;
        size_t st = e;
        while (st > 0 && maxsplit != 0) { // word start
            size_t p = st - 1;
            while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
            utf8_dec(s + p, st - p, &cp);
            if (py_isspace(cp)) break;
            st = p;
        }
        if (maxsplit == 0) st = 0;
        else if (st > 0 || maxsplit > 0) maxsplit--;
        json_array_insert_new(r, 0, json_stringn_nocheck(s + st, e - st));
        e = st;
    }
    return r;
}

static int str_split(struct jctx *c, const jv *self, bool right, jv *P, jv *out) {
    long long maxs = -1;
    if (GIVEN(P[0]) && !is_str(&P[0]) && !jv_is(&P[0], JSON_NULL))
        return jerr(c, "must be str or None, not %s", jv_type_name(&P[0]));
    if (right && maxs < 0 && GIVEN(P[1]) && P[1].kind == JV_JSON) jint(P[1].j, &maxs);
    if (right && maxs >= 0 && !is_str(&P[0])) {
        *out = jv_json(rsplit_space(self, maxs));
        return 0;
    }
    maxs = -1;
    if (GIVEN(P[1]) && !jint(P[1].j, &maxs)) return jerr(c, "maxsplit must be an integer");
    if (is_str(&P[0]) && L_(&P[0]) == 0) return jerr(c, "empty separator");
    if (right && maxs >= 0 && is_str(&P[0])) { // split from the right
        json_t *all = split(self, &P[0], -1);
        size_t k = json_array_size(all);
        if ((long long)k - 1 > maxs) {
            size_t keep = (size_t)(k - 1 - (size_t)maxs);
            struct jbuf head = {0};
            for (size_t i = 0; i <= keep; i++) {
                if (i) jbuf_put(&head, S_(&P[0]), L_(&P[0]));
                json_t *x = json_array_get(all, i);
                jbuf_put(&head, json_string_value(x), json_string_length(x));
            }
            json_t *r = json_array();
            json_array_append_new(r, from_buf(&head).j);
            for (size_t i = keep + 1; i < k; i++) json_array_append(r, json_array_get(all, i));
            json_decref(all);
            all = r;
        }
        *out = jv_json(all);
    } else {
        *out = jv_json(split(self, &P[0], maxs));
    }
    return 0;
}

static json_t *splitlines(const jv *self, bool keepends) {
    const char *s = S_(self);
    size_t n = L_(self), st = 0;
    json_t *r = json_array();
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_dec(s + i, n - i, &cp);
        bool nl = cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || (cp >= 0x1c && cp <= 0x1e) ||
                  cp == 0x85 || cp == 0x2028 || cp == 0x2029;
        if (nl) {
            if (cp == '\r' && i + 1 < n && s[i + 1] == '\n') k++;
            json_array_append_new(r, json_stringn_nocheck(s + st, (keepends ? i + (size_t)k : i) - st));
            st = i + (size_t)k;
        }
        i += (size_t)k;
    }
    if (st < n) json_array_append_new(r, json_stringn_nocheck(s + st, n - st));
    return r;
}

// Parameters of each str method (Python's positional order) and how many are required.
struct str_sig {
    const char *name;
    int n_req, n;
    const char *params[3];
};
static const struct str_sig STR_SIGS[] = {
    {"strip", 0, 1, {"chars"}}, {"lstrip", 0, 1, {"chars"}}, {"rstrip", 0, 1, {"chars"}},
    {"split", 0, 2, {"sep", "maxsplit"}}, {"rsplit", 0, 2, {"sep", "maxsplit"}},
    {"startswith", 1, 3, {"prefix", "start", "end"}}, {"endswith", 1, 3, {"suffix", "start", "end"}},
    {"replace", 2, 3, {"old", "new", "count"}}, {"find", 1, 3, {"sub", "start", "end"}},
    {"rfind", 1, 3, {"sub", "start", "end"}}, {"index", 1, 3, {"sub", "start", "end"}},
    {"rindex", 1, 3, {"sub", "start", "end"}}, {"count", 1, 3, {"sub", "start", "end"}},
    {"join", 1, 1, {"iterable"}}, {"splitlines", 0, 1, {"keepends"}},
};

// self[start:end] by code points (Python slice rules); *off gets start in code points.
// *empty is set when the range is empty in Python's sense (start > end or start > len):
// then nothing matches, not even "".
static int sub_range(struct jctx *c, const jv *self, const jv *st, const jv *en, jv *out, long long *off,
                     bool *empty) {
    long long n = (long long)utf8_count(S_(self), L_(self)), a = 0, b = n;
    *empty = false;
    for (int k = 0; k < 2; k++) {
        const jv *v = k ? en : st;
        long long x;
        if (!GIVEN(*v) || jv_is(v, JSON_NULL)) continue;
        if (v->kind != JV_JSON || !jint(v->j, &x))
            return jerr(c, "slice indices must be integers or None");
        if (x < 0) x += n;
        if (x < 0) x = 0;
        if (x > n) {
            if (!k) *empty = true;
            x = n;
        }
        *(k ? &b : &a) = x;
    }
    *off = a;
    if (b < a) *empty = true, b = a;
    const char *s = S_(self);
    size_t i = 0, ia = 0, ib = L_(self);
    for (long long cp = 0; i <= L_(self); cp++) {
        if (cp == a) ia = i;
        if (cp == b) { ib = i; break; }
        if (i == L_(self)) break;
        i++;
        while (i < L_(self) && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    *out = jv_str_new(s + ia, ib - ia);
    return 0;
}

static int str_search(struct jctx *c, const jv *self, const char *m, jv *P, jv *out) {
    jv sub;
    long long off = 0;
    bool affix_m = !strcmp(m, "startswith") || !strcmp(m, "endswith");
    if (affix_m && !is_str(&P[0]) && !jv_is(&P[0], JSON_ARRAY))
        return jerr(c, "%s first arg must be str or a tuple of str, not %s", m, jv_type_name(&P[0]));
    if (!affix_m && !is_str(&P[0])) return jerr(c, "must be str, not %s", jv_type_name(&P[0]));
    bool empty;
    if (sub_range(c, self, &P[1], &P[2], &sub, &off, &empty)) return -1;
    if (empty) {
        jv_drop(&sub);
        if (strstr(m, "index")) return jerr(c, "substring not found");
        *out = affix_m ? jv_json(json_false()) : jv_json(json_integer(!strcmp(m, "count") ? 0 : -1));
        return 0;
    }
    if (affix_m) {
        bool r = false;
        if (is_str(&P[0])) r = affix(&sub, &P[0], m[0] == 's');
        for (size_t i = 0; jv_is(&P[0], JSON_ARRAY) && i < json_array_size(P[0].j); i++) {
            jv x = jv_json(json_array_get(P[0].j, i));
            r |= affix(&sub, &x, m[0] == 's');
        }
        *out = jv_json(json_boolean(r));
    } else if (!strcmp(m, "count")) {
        json_t *parts = L_(&P[0]) ? split(&sub, &P[0], -1) : NULL;
        long long k = parts ? (long long)json_array_size(parts) - 1 : (long long)utf8_count(S_(&sub), L_(&sub)) + 1;
        json_decref(parts);
        *out = jv_json(json_integer(k));
    } else {
        int r = find(&sub, &P[0], m[0] == 'r');
        if (r < 0 && strstr(m, "index")) { jv_drop(&sub); return jerr(c, "substring not found"); }
        *out = jv_json(json_integer(r < 0 ? -1 : r + off));
    }
    jv_drop(&sub);
    return 0;
}

static int str_join(struct jctx *c, const jv *self, const jv *it, jv *out) {
    json_t *items = NULL;
    if (is_str(it) || jv_is(it, JSON_OBJECT)) {
        struct jargs none = {0};
        jv l;
        if (jinja_filter(c, "list", (jv *)it, &none, &l)) return -1;
        items = l.j;
    } else if (jv_is(it, JSON_ARRAY)) {
        items = json_incref(it->j);
    } else {
        return jerr(c, "can only join an iterable");
    }
    struct jbuf b = {0};
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *x = json_array_get(items, i);
        if (!json_is_string(x)) {
            free(b.p);
            json_decref(items);
            return jerr(c, "sequence item %zu: expected str instance", i);
        }
        if (i) jbuf_put(&b, S_(self), L_(self));
        jbuf_put(&b, json_string_value(x), json_string_length(x));
    }
    json_decref(items);
    *out = from_buf(&b);
    return 0;
}

static int str_method(struct jctx *c, jv *self, const char *m, struct jargs *a, jv *out) {
    const struct str_sig *sig = NULL;
    for (size_t i = 0; i < sizeof STR_SIGS / sizeof STR_SIGS[0]; i++)
        if (!strcmp(STR_SIGS[i].name, m)) sig = &STR_SIGS[i];
    jv P[3] = {jv_undef(NULL, NULL), jv_undef(NULL, NULL), jv_undef(NULL, NULL)};
    jv *S[3] = {&P[0], &P[1], &P[2]};
    int rc = jargs_bind(c, m, a, sig ? sig->params : NULL, sig ? sig->n : 0, S);
    if (rc) goto done;
    if (sig && sig->n_req > 0 && (!GIVEN(P[sig->n_req - 1]))) {
        rc = jerr(c, "%s() takes at least %d argument(s)", m, sig->n_req);
        goto done;
    }
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        if (GIVEN(P[0]) && !is_str(&P[0]) && !jv_is(&P[0], JSON_NULL)) { rc = jerr(c, "%s arg must be None or str", m); goto done; }
        *out = strip(self, &P[0], m[0] != 'r', m[0] != 'l');
    } else if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        rc = str_split(c, self, m[0] == 'r', P, out);
    } else if (!strcmp(m, "upper") || !strcmp(m, "lower") || !strcmp(m, "casefold")) {
        *out = map_case(self, m[0] == 'u');
    } else if (!strcmp(m, "capitalize") || !strcmp(m, "title") || !strcmp(m, "swapcase")) {
        *out = map_case(self, m[0] == 'c' ? 2 : m[0] == 't' ? 3 : 4);
    } else if (!strcmp(m, "replace")) {
        long long cnt = -1;
        if (!is_str(&P[0]) || !is_str(&P[1])) { rc = jerr(c, "replace() arguments must be str"); goto done; }
        if (GIVEN(P[2]) && !jint(P[2].j, &cnt)) { rc = jerr(c, "replace() count must be an integer"); goto done; }
        *out = replace(self, &P[0], &P[1], cnt);
    } else if (sig && !strcmp(sig->params[1] ? sig->params[1] : "", "start")) {
        rc = str_search(c, self, m, P, out);
    } else if (!strcmp(m, "join")) {
        rc = str_join(c, self, &P[0], out);
    } else if (!strcmp(m, "splitlines")) {
        if (GIVEN(P[0]) && !jv_isnum(&P[0])) { rc = jerr(c, "splitlines() keepends must be an integer"); goto done; }
        *out = jv_json(splitlines(self, jv_truthy(&P[0])));
    } else {
        static const char *const preds[] = {"isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower",
                                            "isnumeric", "isdecimal"};
        int k = -1;
        for (int i = 0; i < 8; i++)
            if (!strcmp(m, preds[i])) k = i;
        if (k < 0) { rc = jerr(c, "str.%s() is not supported", m); goto done; }
        *out = jv_json(json_boolean(all_cat(self, k >= 6 ? 0 : k)));
    }
done:
    for (int i = 0; i < 3; i++) jv_drop(&P[i]);
    return rc;
}

int jinja_method(struct jctx *c, json_t *self, const char *name, struct jargs *a, jv *out, bool *found) {
    *found = jinja_is_method(self, name) != NULL;
    if (!*found) return 0;
    jv me = jv_json(self);
    if (json_is_string(self)) return str_method(c, &me, name, a, out);
    if (json_is_object(self)) {
        if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
            json_t *r = json_array();
            const char *k;
            json_t *v;
            json_object_foreach(self, k, v) {
                if (name[0] == 'k') json_array_append_new(r, json_string(k));
                else if (name[0] == 'v') json_array_append(r, v);
                else json_array_append_new(r, json_pack("[sO]", k, v));
            }
            *out = jv_json(r);
            return 0;
        }
        if (!strcmp(name, "get")) {
            BIND(c, "get", a, 2, "key", "default");
            if (bind_rc_) { UNBIND(2); return -1; }
            json_t *v = is_str(&P[0]) ? json_object_get(self, S_(&P[0])) : NULL;
            *out = v ? jv_json(json_incref(v)) : GIVEN(P[1]) ? jv_dup(&P[1]) : jv_json(json_null());
            UNBIND(2);
            return 0;
        }
        if (!strcmp(name, "copy")) { *out = jv_json(json_copy(self)); return 0; }
    } else if (json_is_array(self)) {
        if (!strcmp(name, "count") || !strcmp(name, "index")) {
            if (a->n != 1) return jerr(c, "%s() takes exactly one argument", name);
            long long k = 0, at = -1;
            for (size_t i = 0; i < json_array_size(self); i++) {
                jv x = jv_json(json_array_get(self, i));
                if (jv_eq(&x, &a->v[0])) { k++; if (at < 0) at = (long long)i; }
            }
            if (name[0] == 'i' && at < 0) return jerr(c, "value is not in list");
            *out = jv_json(json_integer(name[0] == 'c' ? k : at));
            return 0;
        }
        if (!strcmp(name, "copy")) { *out = jv_json(json_copy(self)); return 0; }
    }
    return jerr(c, "cannot call '%s': templates may not modify lists or dicts", name);
}

// ---- tests ----
static const char *const TESTS[] = {
    "defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number",
    "string", "mapping", "sequence", "iterable", "callable", "sameas", "eq", "equalto", "==",
    "ne", "!=", "lt", "<", "lessthan", "le", "<=", "gt", ">", "greaterthan", "ge", ">=", "in",
    "odd", "even", "divisibleby", "lower", "upper", "escaped", "filter", "test", NULL};

bool jinja_has_test(const char *name) { return in_list(TESTS, name) != NULL; }

int jinja_test(struct jctx *c, const char *t, const jv *v, struct jargs *a, bool *r) {
    json_t *j = v->kind == JV_JSON ? v->j : NULL;
    jv *arg = a->n > 0 ? &a->v[0] : NULL;
    *r = false;
    if (!strcmp(t, "defined")) *r = v->kind != JV_UNDEF;
    else if (!strcmp(t, "undefined")) *r = v->kind == JV_UNDEF;
    else if (!strcmp(t, "none")) *r = j && json_is_null(j);
    else if (!strcmp(t, "boolean")) *r = j && json_is_boolean(j);
    else if (!strcmp(t, "true")) *r = j && json_is_true(j);
    else if (!strcmp(t, "false")) *r = j && json_is_false(j);
    else if (!strcmp(t, "integer")) *r = j && json_is_integer(j);
    else if (!strcmp(t, "float")) *r = j && json_is_real(j);
    else if (!strcmp(t, "number")) *r = j && (json_is_number(j) || json_is_boolean(j));
    else if (!strcmp(t, "string")) *r = j && json_is_string(j);
    else if (!strcmp(t, "mapping")) *r = j && json_is_object(j);
    else if (!strcmp(t, "sequence") || !strcmp(t, "iterable"))
        *r = (j && (json_is_string(j) || json_is_array(j) || json_is_object(j))) ||
             v->kind == JV_UNDEF; // Undefined has __len__, __iter__ and __getitem__
    else if (!strcmp(t, "callable")) *r = v->kind == JV_MACRO || v->kind == JV_FUNC || v->kind == JV_METHOD;
    else if (!strcmp(t, "escaped")) *r = false;
    else if (!strcmp(t, "filter") || !strcmp(t, "test")) {
        if (!arg || !is_str(arg)) return jerr(c, "test '%s' needs a name", t);
        *r = t[0] == 'f' ? jinja_has_filter(S_(arg)) : jinja_has_test(S_(arg));
    } else if (!strcmp(t, "lower") || !strcmp(t, "upper")) { // str(value).islower()
        struct jbuf b = {0};
        jv_to_str(v, &b);
        jv sv = jv_str_new(b.p ? b.p : "", b.len);
        free(b.p);
        *r = all_cat(&sv, t[0] == 'u' ? 4 : 5);
        jv_drop(&sv);
    } else if ((!strcmp(t, "odd") || !strcmp(t, "even")) && j && json_is_real(j)) {
        double m = fmod(json_real_value(j), 2);
        if (m < 0) m += 2;
        *r = t[0] == 'o' ? m == 1 : m == 0;
    } else if (!strcmp(t, "odd") || !strcmp(t, "even") || !strcmp(t, "divisibleby")) {
        long long x, d = t[0] == 'd' ? 0 : 2;
        if (!j || !jint(j, &x)) return jerr(c, "test '%s' needs a number", t);
        if (t[0] == 'd' && (!arg || arg->kind != JV_JSON || !jint(arg->j, &d))) return jerr(c, "divisibleby needs an integer");
        if (d == 0) return jerr(c, "integer division or modulo by zero");
        long long m = x % d;
        *r = t[0] == 'o' ? m != 0 : m == 0;
    } else if (!strcmp(t, "sameas")) {
        if (!arg) return jerr(c, "sameas needs an argument");
        *r = jv_eq(v, arg) && (v->kind != JV_JSON || json_typeof(v->j) == json_typeof(arg->j)) &&
             (!j || json_is_null(j) || json_is_boolean(j) || j == arg->j);
    } else if (!strcmp(t, "in")) {
        if (!arg) return jerr(c, "test 'in' needs an argument");
        if (jv_is(arg, JSON_STRING) && jv_is(v, JSON_STRING))
            *r = memmem(S_(arg), L_(arg), S_(v), L_(v)) != NULL;
        else if (jv_is(arg, JSON_ARRAY))
            for (size_t i = 0; i < json_array_size(arg->j) && !*r; i++) {
                jv x = jv_json(json_array_get(arg->j, i));
                *r = jv_eq(v, &x);
            }
        else if (jv_is(arg, JSON_OBJECT)) *r = is_str(v) && json_object_get(arg->j, S_(v));
        else return jerr(c, "argument of type '%s' is not iterable", jv_type_name(arg));
    } else {
        static const char *const cmp[] = {"eq", "equalto", "==", "ne", "!=", "lt", "<", "lessthan",
                                          "le", "<=", "gt", ">", "greaterthan", "ge", ">="};
        int k = -1;
        for (int i = 0; i < 15; i++)
            if (!strcmp(t, cmp[i])) k = i;
        if (k < 0) return jerr(c, "no test named '%s'", t);
        if (!arg) return jerr(c, "test '%s' needs an argument", t);
        if (k <= 2) { *r = jv_eq(v, arg); return 0; }
        if (k <= 4) { *r = !jv_eq(v, arg); return 0; }
        int o = 0;
        if (jv_cmp(c, v, arg, &o)) return -1;
        *r = k <= 7 ? o < 0 : k <= 9 ? o <= 0 : k <= 12 ? o > 0 : o >= 0;
    }
    return 0;
}

// ---- globals ----
static const char *const GLOBALS[] = {"range", "namespace", "dict", "raise_exception", "strftime_now", NULL};
bool jinja_is_global_func(const char *name) { return in_list(GLOBALS, name) != NULL; }

static int kw_object(struct jctx *c, struct jargs *a, json_t **out) {
    json_t *o = json_object();
    for (int i = 0; i < a->n; i++) {
        jv *v = &a->v[i];
        if (!a->kw[i] && jv_is(v, JSON_OBJECT)) { json_object_update(o, v->j); continue; }
        if (!a->kw[i]) { json_decref(o); return jerr(c, "expected keyword arguments or a dict"); }
        if (v->kind != JV_JSON) { json_decref(o); return jerr(c, "cannot store a %s value", jv_type_name(v)); }
        json_object_set(o, a->kw[i], v->j);
    }
    *out = o;
    return 0;
}

int jinja_call_global(struct jctx *c, const char *name, struct jargs *a, jv *out) {
    if (!strcmp(name, "raise_exception")) {
        struct jbuf b = {0};
        if (a->n > 0) jv_to_str(&a->v[0], &b);
        if (!c->failed) pg_seterr(c->err, "%s", b.p ? b.p : "template raised an exception");
        free(b.p);
        c->failed = true;
        return -1;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        json_t *o = NULL;
        if (kw_object(c, a, &o)) return -1;
        *out = name[0] == 'n' ? (jv){.kind = JV_NS, .j = o} : jv_json(o);
        return 0;
    }
    if (!strcmp(name, "range")) {
        long long x[3] = {0, 0, 1};
        if (a->n < 1 || a->n > 3) return jerr(c, "range expected 1 to 3 arguments");
        for (int i = 0; i < a->n; i++)
            if (a->v[i].kind != JV_JSON || !jint(a->v[i].j, &x[a->n == 1 ? 1 : i]))
                return jerr(c, "range() arguments must be integers");
        if (x[2] == 0) return jerr(c, "range() arg 3 must not be zero");
        long long len = x[2] > 0 ? (x[1] - x[0] + x[2] - 1) / x[2] : (x[0] - x[1] - x[2] - 1) / -x[2];
        if (len > JINJA_MAX_RANGE) return jerr(c, "range too big (limit %d items)", JINJA_MAX_RANGE);
        json_t *r = json_array();
        for (long long i = 0; i < len; i++) json_array_append_new(r, json_integer(x[0] + i * x[2]));
        *out = jv_json(r);
        return 0;
    }
    if (!strcmp(name, "strftime_now")) {
        if (a->n != 1 || !is_str(&a->v[0])) return jerr(c, "strftime_now() expects a format string");
        char buf[512];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t n = strftime(buf, sizeof buf, S_(&a->v[0]), &tm);
        *out = jv_str_new(buf, n);
        return 0;
    }
    return jerr(c, "'%s' is not callable", name);
}

// Filters live in jinja_filters.c.
