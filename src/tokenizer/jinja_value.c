// Jinja runtime values with Python semantics: truthiness, str()/repr(), ==, ordering,
// json.dumps; plus UTF-8 helpers and the output buffer.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/jinja_rt.h"

void jbuf_put(struct jbuf *b, const char *s, size_t n) {
    if (b->full) return;
    if (b->len + n > JINJA_MAX_STR) {
        n = JINJA_MAX_STR - b->len;
        b->full = true;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->p = pg_realloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void jbuf_printf(struct jbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) jbuf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

// ---- UTF-8 ----
bool py_isspace(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

int utf8_dec(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    int len = u[0] < 0x80 ? 1 : u[0] < 0xE0 ? 2 : u[0] < 0xF0 ? 3 : 4;
    if ((size_t)len > n) len = 1;
    uint32_t c = len == 1 ? u[0] : len == 2 ? u[0] & 0x1F : len == 3 ? u[0] & 0x0F : u[0] & 0x07;
    for (int i = 1; i < len; i++) c = (c << 6) | (u[i] & 0x3F);
    *cp = c;
    return len;
}

int utf8_enc(uint32_t c, char *o) {
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xC0 | (c >> 6)); o[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12)); o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18)); o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F)); o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

size_t utf8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

bool utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(u + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) return false;
        i += (size_t)k;
    }
    return true;
}

// ---- numbers ----
void py_float_repr(double d, struct jbuf *b) {
    if (isnan(d)) { jbuf_put(b, "nan", 3); return; }
    if (isinf(d)) { jbuf_put(b, d < 0 ? "-inf" : "inf", d < 0 ? 4 : 3); return; }
    char buf[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) { // shortest digits that round-trip
        snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (strtod(buf, NULL) == d) break;
    }
    // buf = [-]D.DDDe[+-]XX
    char digits[32];
    int nd = 0, exp10;
    const char *p = buf;
    bool neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (neg) jbuf_putc(b, '-');
    if (exp10 < -4 || exp10 >= 16) {
        jbuf_putc(b, digits[0]);
        if (nd > 1) { jbuf_putc(b, '.'); jbuf_put(b, digits + 1, (size_t)nd - 1); }
        jbuf_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    } else if (exp10 < 0) {
        jbuf_put(b, "0.", 2);
        for (int i = 0; i < -exp10 - 1; i++) jbuf_putc(b, '0');
        jbuf_put(b, digits, (size_t)nd);
    } else {
        for (int i = 0; i <= exp10; i++) jbuf_putc(b, i < nd ? digits[i] : '0');
        jbuf_putc(b, '.');
        if (nd > exp10 + 1) jbuf_put(b, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
        else jbuf_putc(b, '0');
    }
}

double jnum(json_t *j) {
    if (json_is_boolean(j)) return json_is_true(j) ? 1 : 0;
    return json_number_value(j);
}

bool jint(json_t *j, long long *out) {
    if (json_is_boolean(j)) { *out = json_is_true(j); return true; }
    if (json_is_integer(j)) { *out = json_integer_value(j); return true; }
    return false;
}

// ---- values ----
jv jv_str_new(const char *s, size_t n) { return jv_json(json_stringn_nocheck(s, n)); }

jv jv_dup(const jv *v) {
    jv r = *v;
    if (r.j) json_incref(r.j);
    if (r.kind == JV_LOOP) ((struct jloop *)r.p)->refs++;
    return r;
}

void jv_drop(jv *v) {
    if (v->j) json_decref(v->j);
    if (v->kind == JV_LOOP) {
        struct jloop *l = (struct jloop *)v->p;
        if (--l->refs == 0) {
            json_decref(l->items);
            free(l);
        }
    }
    *v = jv_undef(NULL, NULL);
}

bool jv_truthy(const jv *v) {
    if (v->kind == JV_UNDEF) return false;
    if (v->kind != JV_JSON) return true;
    json_t *j = v->j;
    switch (json_typeof(j)) {
    case JSON_NULL: case JSON_FALSE: return false;
    case JSON_TRUE: return true;
    case JSON_INTEGER: return json_integer_value(j) != 0;
    case JSON_REAL: return json_real_value(j) != 0;
    case JSON_STRING: return json_string_length(j) > 0;
    case JSON_ARRAY: return json_array_size(j) > 0;
    case JSON_OBJECT: return json_object_size(j) > 0;
    }
    return false;
}

const char *jv_type_name(const jv *v) {
    switch (v->kind) {
    case JV_UNDEF: return "Undefined";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    case JV_MACRO: return "Macro";
    case JV_FUNC: case JV_METHOD: return "function";
    case JV_JSON: break;
    }
    switch (json_typeof(v->j)) {
    case JSON_NULL: return "NoneType";
    case JSON_TRUE: case JSON_FALSE: return "bool";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_STRING: return "str";
    case JSON_ARRAY: return "list";
    case JSON_OBJECT: return "dict";
    }
    return "object";
}

// Turns an iterable into an array of items (dict -> keys, str -> characters).
int jv_items(struct jctx *c, const jv *v, json_t **out) {
    if (v->kind == JV_UNDEF) { *out = json_array(); return 0; }
    if (jv_is(v, JSON_ARRAY)) { *out = json_incref(v->j); return 0; }
    if (jv_is(v, JSON_OBJECT)) {
        const char *k;
        json_t *x;
        *out = json_array();
        json_object_foreach(v->j, k, x) json_array_append_new(*out, json_string(k));
        return 0;
    }
    if (jv_is(v, JSON_STRING)) {
        const char *s = json_string_value(v->j);
        size_t n = json_string_length(v->j);
        *out = json_array();
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            int k = utf8_dec(s + i, n - i, &cp);
            json_array_append_new(*out, json_stringn_nocheck(s + i, (size_t)k));
            i += (size_t)k;
        }
        return 0;
    }
    return jerr(c, "'%s' object is not iterable", jv_type_name(v));
}

static void repr_str(const char *s, size_t n, struct jbuf *b) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jbuf_putc(b, q);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_dec(s + i, n - i, &cp);
        if (cp == (uint32_t)q || cp == '\\') { jbuf_putc(b, '\\'); jbuf_putc(b, (char)cp); }
        else if (cp == '\n') jbuf_put(b, "\\n", 2);
        else if (cp == '\r') jbuf_put(b, "\\r", 2);
        else if (cp == '\t') jbuf_put(b, "\\t", 2);
        else {
            utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)cp);
            bool printable = cp == ' ' || !(cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
                                            cat == UTF8PROC_CATEGORY_CS || cat == UTF8PROC_CATEGORY_CO ||
                                            cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_ZL ||
                                            cat == UTF8PROC_CATEGORY_ZP || cat == UTF8PROC_CATEGORY_ZS);
            if (printable) jbuf_put(b, s + i, (size_t)k);
            else if (cp < 0x100) jbuf_printf(b, "\\x%02x", cp);
            else if (cp < 0x10000) jbuf_printf(b, "\\u%04x", cp);
            else jbuf_printf(b, "\\U%08x", cp);
        }
        i += (size_t)k;
    }
    jbuf_putc(b, q);
}

void py_repr(json_t *j, struct jbuf *b) {
    if (b->full) return;
    switch (json_typeof(j)) {
    case JSON_STRING: repr_str(json_string_value(j), json_string_length(j), b); return;
    case JSON_ARRAY: {
        jbuf_putc(b, '[');
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i) jbuf_put(b, ", ", 2);
            py_repr(json_array_get(j, i), b);
        }
        jbuf_putc(b, ']');
        return;
    }
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        bool first = true;
        jbuf_putc(b, '{');
        json_object_foreach(j, k, v) {
            if (!first) jbuf_put(b, ", ", 2);
            first = false;
            repr_str(k, strlen(k), b);
            jbuf_put(b, ": ", 2);
            py_repr(v, b);
        }
        jbuf_putc(b, '}');
        return;
    }
    default: {
        jv v = jv_json(j);
        jv_to_str(&v, b);
    }
    }
}

void jv_to_str(const jv *v, struct jbuf *b) {
    switch (v->kind) {
    case JV_UNDEF: return;
    case JV_NS: jbuf_put(b, "<Namespace ", 11); py_repr(v->j, b); jbuf_putc(b, '>'); return;
    case JV_LOOP: jbuf_put(b, "<LoopContext>", 13); return;
    case JV_MACRO: jbuf_printf(b, "<Macro '%s'>", ((const struct jnode *)v->p)->str); return;
    case JV_FUNC: case JV_METHOD: jbuf_printf(b, "<function %s>", (const char *)v->p); return;
    case JV_JSON: break;
    }
    json_t *j = v->j;
    switch (json_typeof(j)) {
    case JSON_NULL: jbuf_put(b, "None", 4); return;
    case JSON_TRUE: jbuf_put(b, "True", 4); return;
    case JSON_FALSE: jbuf_put(b, "False", 5); return;
    case JSON_INTEGER: jbuf_printf(b, "%lld", (long long)json_integer_value(j)); return;
    case JSON_REAL: py_float_repr(json_real_value(j), b); return;
    case JSON_STRING: jbuf_put(b, json_string_value(j), json_string_length(j)); return;
    default: py_repr(j, b);
    }
}

static bool json_py_eq(json_t *a, json_t *b, long *budget) {
    if (a == b) return true; // identity, as Python's list comparison
    if (--*budget < 0) return false; // pathological shared structure: give up (unequal)
    bool na = json_is_number(a) || json_is_boolean(a), nb = json_is_number(b) || json_is_boolean(b);
    if (na && nb) {
        long long x, y;
        if (jint(a, &x) && jint(b, &y)) return x == y;
        return jnum(a) == jnum(b);
    }
    if (json_typeof(a) != json_typeof(b)) return false;
    switch (json_typeof(a)) {
    case JSON_NULL: return true;
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               !memcmp(json_string_value(a), json_string_value(b), json_string_length(a));
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!json_py_eq(json_array_get(a, i), json_array_get(b, i), budget)) return false;
        return true;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b)) return false;
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !json_py_eq(v, w, budget)) return false;
        }
        return true;
    }
    default: return false;
    }
}

bool jv_eq(const jv *a, const jv *b) {
    long budget = 1000000;
    if (a->kind == JV_JSON && b->kind == JV_JSON) return json_py_eq(a->j, b->j, &budget);
    if (a->kind == JV_UNDEF || b->kind == JV_UNDEF) return a->kind == b->kind;
    if (a->kind != b->kind) return false;
    return a->j == b->j && a->p == b->p;
}

static int cmp3(double x, double y) { return x < y ? -1 : x > y ? 1 : 0; }

int jv_cmp(struct jctx *c, const jv *a, const jv *b, int *r) {
    if (a->kind == JV_UNDEF) return jerr_undefined(c, a);
    if (b->kind == JV_UNDEF) return jerr_undefined(c, b);
    if (jv_isnum(a) && jv_isnum(b)) {
        long long x, y;
        if (jint(a->j, &x) && jint(b->j, &y)) *r = x < y ? -1 : x > y;
        else *r = cmp3(jnum(a->j), jnum(b->j));
        return 0;
    }
    if (jv_is(a, JSON_STRING) && jv_is(b, JSON_STRING)) {
        size_t la = json_string_length(a->j), lb = json_string_length(b->j);
        int m = memcmp(json_string_value(a->j), json_string_value(b->j), la < lb ? la : lb);
        *r = m ? (m < 0 ? -1 : 1) : la < lb ? -1 : la > lb;
        return 0;
    }
    if (jv_is(a, JSON_ARRAY) && jv_is(b, JSON_ARRAY)) {
        size_t la = json_array_size(a->j), lb = json_array_size(b->j);
        for (size_t i = 0; i < la && i < lb; i++) {
            jv x = jv_json(json_array_get(a->j, i)), y = jv_json(json_array_get(b->j, i));
            if (jv_eq(&x, &y)) continue;
            return jv_cmp(c, &x, &y, r);
        }
        *r = la < lb ? -1 : la > lb;
        return 0;
    }
    return jerr(c, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a),
                jv_type_name(b));
}

// ---- json.dumps ----
static void json_str(const char *s, size_t n, bool ascii, struct jbuf *b) {
    jbuf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_dec(s + i, n - i, &cp);
        switch (cp) {
        case '"': jbuf_put(b, "\\\"", 2); break;
        case '\\': jbuf_put(b, "\\\\", 2); break;
        case '\n': jbuf_put(b, "\\n", 2); break;
        case '\r': jbuf_put(b, "\\r", 2); break;
        case '\t': jbuf_put(b, "\\t", 2); break;
        case '\b': jbuf_put(b, "\\b", 2); break;
        case '\f': jbuf_put(b, "\\f", 2); break;
        default:
            if (cp < 0x20 || (ascii && cp > 0x7e && cp != 0x7f)) {
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    jbuf_printf(b, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
                } else {
                    jbuf_printf(b, "\\u%04x", cp);
                }
            } else {
                jbuf_put(b, s + i, (size_t)k);
            }
        }
        i += (size_t)k;
    }
    jbuf_putc(b, '"');
}

static int key_cmp(const void *x, const void *y) {
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static void newline_indent(const struct tojson_opts *o, int level, struct jbuf *b) {
    jbuf_putc(b, '\n');
    for (int i = 0; i < level; i++) jbuf_put(b, o->indent, strlen(o->indent));
}

static void dumps(json_t *j, const struct tojson_opts *o, int level, struct jbuf *b) {
    if (b->full) return;
    const char *isep = o->item_sep ? o->item_sep : o->indent ? "," : ", ";
    const char *ksep = o->key_sep ? o->key_sep : ": ";
    switch (json_typeof(j)) {
    case JSON_NULL: jbuf_put(b, "null", 4); return;
    case JSON_TRUE: jbuf_put(b, "true", 4); return;
    case JSON_FALSE: jbuf_put(b, "false", 5); return;
    case JSON_INTEGER: jbuf_printf(b, "%lld", (long long)json_integer_value(j)); return;
    case JSON_REAL: {
        double d = json_real_value(j);
        if (isnan(d)) jbuf_put(b, "NaN", 3);
        else if (isinf(d)) jbuf_put(b, d < 0 ? "-Infinity" : "Infinity", d < 0 ? 9 : 8);
        else py_float_repr(d, b);
        return;
    }
    case JSON_STRING: json_str(json_string_value(j), json_string_length(j), o->ensure_ascii, b); return;
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (!n) { jbuf_put(b, "[]", 2); return; }
        jbuf_putc(b, '[');
        for (size_t i = 0; i < n; i++) {
            if (i) jbuf_put(b, isep, strlen(isep));
            if (o->indent) newline_indent(o, level + 1, b);
            dumps(json_array_get(j, i), o, level + 1, b);
        }
        if (o->indent) newline_indent(o, level, b);
        jbuf_putc(b, ']');
        return;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(j), i = 0;
        if (!n) { jbuf_put(b, "{}", 2); return; }
        const char **keys = pg_malloc(n * sizeof *keys);
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) keys[i++] = k;
        if (o->sort_keys) qsort(keys, n, sizeof *keys, key_cmp);
        jbuf_putc(b, '{');
        for (i = 0; i < n; i++) {
            if (i) jbuf_put(b, isep, strlen(isep));
            if (o->indent) newline_indent(o, level + 1, b);
            json_str(keys[i], strlen(keys[i]), o->ensure_ascii, b);
            jbuf_put(b, ksep, strlen(ksep));
            dumps(json_object_get(j, keys[i]), o, level + 1, b);
        }
        free(keys);
        if (o->indent) newline_indent(o, level, b);
        jbuf_putc(b, '}');
        return;
    }
    }
}

int jv_tojson(struct jctx *c, const jv *v, const struct tojson_opts *o, struct jbuf *b) {
    if (v->kind != JV_JSON)
        return jerr(c, "Object of type %s is not JSON serializable", jv_type_name(v));
    dumps(v->j, o, 0, b);
    return 0;
}
