// Jinja filters (jinja2 3.1 semantics; tojson as Hugging Face overrides it:
// json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/jinja_rt.h"

static bool is_str(const jv *v) { return jv_is(v, JSON_STRING); }
static jv from_buf(struct jbuf *b) {
    jv r = jv_str_new(b->p ? b->p : "", b->len);
    free(b->p);
    return r;
}
static jv to_str(const jv *v) {
    if (is_str(v)) return jv_dup(v);
    struct jbuf b = {0};
    jv_to_str(v, &b);
    return from_buf(&b);
}

// Calls a str method on str(in) with the given args.
static int via_method(struct jctx *c, const char *m, const jv *in, struct jargs *a, jv *out) {
    jv s = to_str(in);
    bool found;
    int rc = jinja_method(c, s.j, m, a, out, &found);
    jv_drop(&s);
    return rc;
}

struct slots {
    jv v[6];
    jv *p[6];
};
static int bind(struct jctx *c, const char *fn, struct jargs *a, const char *const *names, int n,
                struct slots *s) {
    for (int i = 0; i < 6; i++) s->v[i] = jv_undef(NULL, NULL), s->p[i] = &s->v[i];
    return jargs_bind(c, fn, a, names, n, s->p);
}
static void unbind(struct slots *s) {
    for (int i = 0; i < 6; i++) jv_drop(&s->v[i]);
}
#define GIVEN(v) ((v).kind != JV_UNDEF)

// item[attr] with dotted paths ("a.b", "0"), as jinja2's make_attrgetter; Undefined if missing.
static jv attr_get(json_t *item, const char *attr) {
    json_t *cur = item;
    char part[128];
    while (cur && *attr) {
        size_t n = strcspn(attr, ".");
        snprintf(part, sizeof part, "%.*s", (int)(n < 127 ? n : 127), attr);
        attr += n + (attr[n] == '.');
        char *end;
        long idx = strtol(part, &end, 10);
        if (json_is_object(cur)) cur = json_object_get(cur, part);
        else if (json_is_array(cur) && *part && !*end) cur = idx >= 0 ? json_array_get(cur, (size_t)idx) : NULL;
        else cur = NULL;
    }
    return cur ? jv_json(json_incref(cur)) : jv_undef("attribute", NULL);
}

static int f_tojson(struct jctx *c, jv *in, struct jargs *a, jv *out) {
    static const char *const n[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    struct slots s;
    int rc = bind(c, "tojson", a, n, 4, &s);
    char ind[64];
    struct tojson_opts o = {.ensure_ascii = jv_truthy(&s.v[0]), .sort_keys = jv_truthy(&s.v[3])};
    long long k;
    if (rc) goto done;
    if (GIVEN(s.v[1]) && s.v[1].kind == JV_JSON && jint(s.v[1].j, &k) && !json_is_boolean(s.v[1].j)) {
        if (k > 32) k = 32;
        for (long long i = 0; i < k; i++) ind[i] = ' ';
        ind[k < 0 ? 0 : k] = 0;
        o.indent = ind;
    } else if (is_str(&s.v[1])) {
        o.indent = json_string_value(s.v[1].j);
    } else if (GIVEN(s.v[1]) && !jv_is(&s.v[1], JSON_NULL)) {
        rc = jerr(c, "tojson indent must be an integer or a string");
        goto done;
    }
    if (jv_is(&s.v[2], JSON_ARRAY) && json_array_size(s.v[2].j) == 2 &&
        json_is_string(json_array_get(s.v[2].j, 0)) && json_is_string(json_array_get(s.v[2].j, 1))) {
        o.item_sep = json_string_value(json_array_get(s.v[2].j, 0));
        o.key_sep = json_string_value(json_array_get(s.v[2].j, 1));
    }
    struct jbuf b = {0};
    if ((rc = jv_tojson(c, in, &o, &b))) free(b.p);
    else *out = from_buf(&b);
done:
    unbind(&s);
    return rc;
}

static int f_default(struct jctx *c, jv *in, struct jargs *a, jv *out) {
    static const char *const n[] = {"default_value", "boolean"};
    struct slots s;
    if (bind(c, "default", a, n, 2, &s)) { unbind(&s); return -1; }
    bool use = in->kind == JV_UNDEF || (jv_truthy(&s.v[1]) && !jv_truthy(in));
    if (!use) *out = jv_dup(in);
    else if (GIVEN(s.v[0])) *out = jv_dup(&s.v[0]);
    else *out = jv_str_new("", 0);
    unbind(&s);
    return 0;
}

static int f_join(struct jctx *c, jv *in, struct jargs *a, jv *out) {
    static const char *const n[] = {"d", "attribute"};
    struct slots s;
    json_t *items = NULL;
    int rc = bind(c, "join", a, n, 2, &s);
    if (rc || (rc = jv_items(c, in, &items))) goto done;
    struct jbuf b = {0};
    for (size_t i = 0; i < json_array_size(items); i++) {
        if (i && GIVEN(s.v[0])) jv_to_str(&s.v[0], &b);
        jv x = jv_json(json_array_get(items, i));
        if (is_str(&s.v[1])) {
            jv y = attr_get(x.j, json_string_value(s.v[1].j));
            jv_to_str(&y, &b);
            jv_drop(&y);
        } else {
            jv_to_str(&x, &b);
        }
        if (b.len > JINJA_MAX_STR) { free(b.p); rc = jerr(c, "string too long"); goto done; }
    }
    *out = from_buf(&b);
done:
    json_decref(items);
    unbind(&s);
    return rc;
}

static int f_int(struct jctx *c, jv *in, struct jargs *a, jv *out, bool flt) {
    static const char *const n[] = {"default", "base"};
    struct slots s;
    if (bind(c, flt ? "float" : "int", a, n, 2, &s)) { unbind(&s); return -1; }
    if (in->kind == JV_UNDEF) { unbind(&s); return jerr_undefined(c, in); }
    bool ok = false;
    double d = 0;
    long long k = 0;
    if (jv_isnum(in)) {
        ok = true;
        d = jnum(in->j);
        if (!jint(in->j, &k)) {
            if (!flt && (d != d || fabs(d) > 9.2e18)) ok = false;
            k = (long long)d;
        }
    } else if (is_str(in)) {
        const char *p = json_string_value(in->j);
        char *end;
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        k = strtoll(p, &end, 10);
        if (end != p && (*end == 0 || strspn(end, " \t\n") == strlen(end))) ok = true, d = (double)k;
        else {
            d = strtod(p, &end);
            if (end != p && (*end == 0 || strspn(end, " \t\n") == strlen(end)) && fabs(d) < 9.2e18) ok = true, k = (long long)d;
        }
    }
    if (ok) *out = flt ? jv_json(json_real(d)) : jv_json(json_integer(k));
    else if (GIVEN(s.v[0])) *out = jv_dup(&s.v[0]);
    else *out = flt ? jv_json(json_real(0)) : jv_json(json_integer(0));
    unbind(&s);
    return 0;
}

// Applies test `name` (with extra args) to each item: select/reject/selectattr/rejectattr.
static int f_select(struct jctx *c, jv *in, struct jargs *a, jv *out, bool keep, bool by_attr) {
    json_t *items;
    if (jv_items(c, in, &items)) return -1;
    int first = by_attr ? 1 : 0;
    if (by_attr && (a->n < 1 || !is_str(&a->v[0]))) { json_decref(items); return jerr(c, "selectattr needs an attribute name"); }
    const char *test = a->n > first && is_str(&a->v[first]) ? json_string_value(a->v[first].j) : NULL;
    struct jargs rest = {.v = a->v + first + 1, .kw = a->kw + first + 1, .n = a->n > first + 1 ? a->n - first - 1 : 0};
    json_t *r = json_array();
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *x = json_array_get(items, i);
        jv v = by_attr ? attr_get(x, json_string_value(a->v[0].j)) : jv_json(json_incref(x));
        bool t;
        if (test) {
            if (jinja_test(c, test, &v, &rest, &t)) { jv_drop(&v); json_decref(items); json_decref(r); return -1; }
        } else {
            t = jv_truthy(&v);
        }
        jv_drop(&v);
        if (t == keep) json_array_append(r, x);
    }
    json_decref(items);
    *out = jv_json(r);
    return 0;
}

static int f_map(struct jctx *c, jv *in, struct jargs *a, jv *out) {
    json_t *items;
    if (jv_items(c, in, &items)) return -1;
    const char *attr = NULL;
    jv *dflt = NULL;
    for (int i = 0; i < a->n; i++) {
        if (a->kw[i] && !strcmp(a->kw[i], "attribute") && is_str(&a->v[i])) attr = json_string_value(a->v[i].j);
        if (a->kw[i] && !strcmp(a->kw[i], "default")) dflt = &a->v[i];
    }
    if (!attr && (a->n < 1 || !is_str(&a->v[0]) || a->kw[0])) {
        json_decref(items);
        return jerr(c, "map needs attribute= or a filter name");
    }
    struct jargs rest = {.v = a->v + 1, .kw = a->kw + 1, .n = a->n - 1};
    json_t *r = json_array();
    for (size_t i = 0; i < json_array_size(items); i++) {
        jv x = jv_json(json_incref(json_array_get(items, i))), y;
        if (attr) {
            y = attr_get(x.j, attr);
            jv_drop(&x);
            if (y.kind == JV_UNDEF && dflt) y = jv_dup(dflt);
        } else if (jinja_filter(c, json_string_value(a->v[0].j), &x, &rest, &y)) {
            jv_drop(&x);
            goto fail;
        } else {
            jv_drop(&x);
        }
        if (y.kind != JV_JSON) { jv_drop(&y); jerr(c, "map produced a value that is not JSON"); goto fail; }
        json_array_append_new(r, y.j);
    }
    json_decref(items);
    *out = jv_json(r);
    return 0;
fail:
    json_decref(items);
    json_decref(r);
    return -1;
}

// Sort keys: optional attribute, strings lowercased unless case_sensitive.
struct sort_item {
    json_t *item;
    jv key;
};
static int sort_items(struct jctx *c, struct sort_item *v, size_t n, bool rev) {
    // stable insertion sort into a merge-friendly order (n is small in templates)
    struct sort_item *tmp = pg_malloc((n ? n : 1) * sizeof *tmp);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int o;
                if (jv_cmp(c, &v[j].key, &v[i].key, &o)) { free(tmp); return -1; }
                if (rev) o = -o;
                tmp[k++] = o < 0 ? v[j++] : v[i++];
            }
            while (i < mid) tmp[k++] = v[i++];
            while (j < hi) tmp[k++] = v[j++];
        }
        memcpy(v, tmp, n * sizeof *v);
    }
    free(tmp);
    return 0;
}

static jv sort_key(json_t *item, const jv *attr, bool case_sensitive) {
    jv k = is_str(attr) ? attr_get(item, json_string_value(attr->j)) : jv_json(json_incref(item));
    if (!case_sensitive && is_str(&k)) {
        struct jargs none = {0};
        bool found;
        jv low;
        if (jinja_method(NULL, k.j, "lower", &none, &low, &found) == 0) {
            jv_drop(&k);
            k = low;
        }
    }
    return k;
}

static int f_sort(struct jctx *c, jv *in, struct jargs *a, jv *out, bool dict) {
    static const char *const n[] = {"reverse", "case_sensitive", "attribute"};
    static const char *const nd[] = {"case_sensitive", "by", "reverse"};
    struct slots s;
    json_t *items = NULL;
    int rc = bind(c, dict ? "dictsort" : "sort", a, dict ? nd : n, 3, &s);
    if (rc) goto done;
    bool rev = jv_truthy(&s.v[dict ? 2 : 0]), cs = jv_truthy(&s.v[dict ? 0 : 1]);
    if (dict) {
        if (!jv_is(in, JSON_OBJECT)) { rc = jerr(c, "dictsort expects a dict"); goto done; }
        bool *found = NULL;
        (void)found;
        items = json_array();
        const char *k;
        json_t *x;
        json_object_foreach(in->j, k, x) json_array_append_new(items, json_pack("[sO]", k, x));
    } else if ((rc = jv_items(c, in, &items))) {
        goto done;
    }
    size_t cnt = json_array_size(items);
    struct sort_item *v = pg_calloc(cnt ? cnt : 1, sizeof *v);
    jv by_attr = jv_str_new(dict && is_str(&s.v[1]) && !strcmp(json_string_value(s.v[1].j), "value") ? "1" : "0", 1);
    for (size_t i = 0; i < cnt; i++) {
        v[i].item = json_array_get(items, i);
        v[i].key = sort_key(v[i].item, dict ? &by_attr : &s.v[2], cs);
    }
    rc = sort_items(c, v, cnt, rev);
    json_t *r = json_array();
    for (size_t i = 0; i < cnt; i++) {
        json_array_append(r, v[i].item);
        jv_drop(&v[i].key);
    }
    free(v);
    jv_drop(&by_attr);
    if (rc) json_decref(r);
    else *out = jv_json(r);
done:
    json_decref(items);
    unbind(&s);
    return rc;
}

static int f_first_last(struct jctx *c, jv *in, jv *out, bool last) {
    json_t *items;
    if (jv_items(c, in, &items)) return -1;
    size_t n = json_array_size(items);
    *out = n ? jv_json(json_incref(json_array_get(items, last ? n - 1 : 0))) : jv_undef(last ? "last" : "first", NULL);
    json_decref(items);
    return 0;
}

static int f_length(struct jctx *c, jv *in, jv *out) {
    size_t n;
    if (in->kind == JV_UNDEF) n = 0;
    else if (is_str(in)) n = utf8_count(json_string_value(in->j), json_string_length(in->j));
    else if (jv_is(in, JSON_ARRAY)) n = json_array_size(in->j);
    else if (jv_is(in, JSON_OBJECT)) n = json_object_size(in->j);
    else return jerr(c, "object of type '%s' has no len()", jv_type_name(in));
    *out = jv_json(json_integer((json_int_t)n));
    return 0;
}

static int f_indent(struct jctx *c, jv *in, struct jargs *a, jv *out) {
    static const char *const n[] = {"width", "first", "blank"};
    struct slots s;
    if (bind(c, "indent", a, n, 3, &s)) { unbind(&s); return -1; }
    struct jbuf pad = {0};
    long long w = 4;
    if (is_str(&s.v[0])) jv_to_str(&s.v[0], &pad);
    else {
        if (GIVEN(s.v[0]) && s.v[0].kind == JV_JSON) jint(s.v[0].j, &w);
        for (long long i = 0; i < w && i < 256; i++) jbuf_putc(&pad, ' ');
    }
    jv str = to_str(in);
    const char *p = json_string_value(str.j);
    size_t len = json_string_length(str.j);
    struct jbuf b = {0};
    bool first = jv_truthy(&s.v[1]), blank = jv_truthy(&s.v[2]);
    for (size_t i = 0, line = 0; i <= len; line++) {
        const char *nl = memchr(p + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - p) : len;
        bool empty = end == i;
        if ((line > 0 || first) && (blank || !empty)) jbuf_put(&b, pad.p ? pad.p : "", pad.len);
        jbuf_put(&b, p + i, end - i);
        if (!nl) break;
        jbuf_putc(&b, '\n');
        i = end + 1;
    }
    *out = from_buf(&b);
    free(pad.p);
    jv_drop(&str);
    unbind(&s);
    return 0;
}

static int f_escape(jv *in, jv *out) {
    jv str = to_str(in);
    struct jbuf b = {0};
    const char *p = json_string_value(str.j);
    for (size_t i = 0; i < json_string_length(str.j); i++) {
        switch (p[i]) {
        case '&': jbuf_put(&b, "&amp;", 5); break;
        case '<': jbuf_put(&b, "&lt;", 4); break;
        case '>': jbuf_put(&b, "&gt;", 4); break;
        case '"': jbuf_put(&b, "&#34;", 5); break;
        case '\'': jbuf_put(&b, "&#39;", 5); break;
        default: jbuf_putc(&b, p[i]);
        }
    }
    jv_drop(&str);
    *out = from_buf(&b);
    return 0;
}

static int f_unique_reverse(struct jctx *c, jv *in, jv *out, bool unique) {
    if (!unique && is_str(in)) {
        struct jargs none = {0};
        jv step = jv_json(json_integer(-1));
        (void)none;
        // reverse a string by code points
        const char *s = json_string_value(in->j);
        size_t n = json_string_length(in->j);
        struct jbuf b = {0};
        for (size_t e = n; e > 0;) {
            size_t st = e - 1;
            while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
            jbuf_put(&b, s + st, e - st);
            e = st;
        }
        jv_drop(&step);
        *out = from_buf(&b);
        return 0;
    }
    json_t *items, *r = json_array();
    if (jv_items(c, in, &items)) { json_decref(r); return -1; }
    size_t n = json_array_size(items);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(items, unique ? i : n - 1 - i);
        bool dup = false;
        if (unique) {
            jv kx = sort_key(x, &(jv){0}, false);
            for (size_t k = 0; k < json_array_size(r) && !dup; k++) {
                jv ky = sort_key(json_array_get(r, k), &(jv){0}, false);
                dup = jv_eq(&kx, &ky);
                jv_drop(&ky);
            }
            jv_drop(&kx);
        }
        if (!dup) json_array_append(r, x);
    }
    json_decref(items);
    *out = jv_json(r);
    return 0;
}

static int f_minmax_sum(struct jctx *c, jv *in, struct jargs *a, jv *out, int mode) { // 0 min 1 max 2 sum
    json_t *items;
    if (jv_items(c, in, &items)) return -1;
    const jv *attr = NULL;
    jv start = jv_json(json_integer(0));
    for (int i = 0; i < a->n; i++) {
        if (a->kw[i] && !strcmp(a->kw[i], "attribute")) attr = &a->v[i];
        if (mode == 2 && a->kw[i] && !strcmp(a->kw[i], "start")) { jv_drop(&start); start = jv_dup(&a->v[i]); }
        if (mode == 2 && !a->kw[i] && i == 0) attr = &a->v[i];
    }
    jv acc = jv_undef(mode ? "max" : "min", NULL);
    if (mode == 2) acc = start;
    else jv_drop(&start);
    int rc = 0;
    for (size_t i = 0; i < json_array_size(items) && !rc; i++) {
        jv x = attr ? sort_key(json_array_get(items, i), attr, true) : jv_json(json_incref(json_array_get(items, i)));
        if (mode == 2) {
            if (!jv_isnum(&x) || !jv_isnum(&acc)) rc = jerr(c, "sum() needs numbers");
            else {
                long long p, q;
                jv r = jint(acc.j, &p) && jint(x.j, &q) ? jv_json(json_integer(p + q))
                                                         : jv_json(json_real(jnum(acc.j) + jnum(x.j)));
                jv_drop(&acc);
                acc = r;
            }
            jv_drop(&x);
            continue;
        }
        int o = 0;
        if (acc.kind != JV_UNDEF && jv_cmp(c, &x, &acc, &o)) { jv_drop(&x); rc = -1; break; }
        if (acc.kind == JV_UNDEF || (mode ? o > 0 : o < 0)) { jv_drop(&acc); acc = x; }
        else jv_drop(&x);
    }
    json_decref(items);
    if (rc) { jv_drop(&acc); return -1; }
    *out = acc;
    return 0;
}

static const char *const FILTERS[] = {
    "tojson", "default", "d", "join", "trim", "length", "count", "upper", "lower", "capitalize",
    "title", "first", "last", "items", "string", "int", "float", "list", "map", "select",
    "reject", "selectattr", "rejectattr", "unique", "reverse", "sort", "dictsort", "replace",
    "abs", "round", "sum", "min", "max", "indent", "escape", "e", "forceescape", "safe", "attr",
    "wordcount", NULL};

bool jinja_has_filter(const char *name) {
    for (const char *const *f = FILTERS; *f; f++)
        if (!strcmp(*f, name)) return true;
    return false;
}

int jinja_filter(struct jctx *c, const char *f, jv *in, struct jargs *a, jv *out) {
    *out = jv_undef(NULL, NULL);
    if (!strcmp(f, "tojson")) return f_tojson(c, in, a, out);
    if (!strcmp(f, "default") || !strcmp(f, "d")) return f_default(c, in, a, out);
    if (!strcmp(f, "join")) return f_join(c, in, a, out);
    if (!strcmp(f, "length") || !strcmp(f, "count")) return f_length(c, in, out);
    if (!strcmp(f, "first") || !strcmp(f, "last")) return f_first_last(c, in, out, f[0] == 'l');
    if (!strcmp(f, "int") || !strcmp(f, "float")) return f_int(c, in, a, out, f[0] == 'f');
    if (!strcmp(f, "map")) return f_map(c, in, a, out);
    if (!strcmp(f, "select") || !strcmp(f, "reject")) return f_select(c, in, a, out, f[0] == 's', false);
    if (!strcmp(f, "selectattr") || !strcmp(f, "rejectattr")) return f_select(c, in, a, out, f[0] == 's', true);
    if (!strcmp(f, "sort") || !strcmp(f, "dictsort")) return f_sort(c, in, a, out, f[0] == 'd');
    if (!strcmp(f, "unique") || !strcmp(f, "reverse")) return f_unique_reverse(c, in, out, f[0] == 'u');
    if (!strcmp(f, "min") || !strcmp(f, "max") || !strcmp(f, "sum"))
        return f_minmax_sum(c, in, a, out, f[1] == 'i' ? 0 : f[1] == 'a' ? 1 : 2);
    if (!strcmp(f, "indent")) return f_indent(c, in, a, out);
    if (!strcmp(f, "escape") || !strcmp(f, "e") || !strcmp(f, "forceescape")) return f_escape(in, out);
    if (!strcmp(f, "safe")) { *out = jv_dup(in); return 0; }
    if (!strcmp(f, "string")) { *out = to_str(in); return 0; }
    if (!strcmp(f, "trim")) return via_method(c, "strip", in, a, out);
    if (!strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "capitalize") || !strcmp(f, "title"))
        return via_method(c, f, in, a, out);
    if (!strcmp(f, "replace")) return via_method(c, "replace", in, a, out);
    if (!strcmp(f, "list")) {
        json_t *items;
        if (jv_items(c, in, &items)) return -1;
        *out = jv_json(json_copy(items));
        json_decref(items);
        return 0;
    }
    if (!strcmp(f, "items")) {
        if (in->kind == JV_UNDEF) { *out = jv_json(json_array()); return 0; }
        if (!jv_is(in, JSON_OBJECT)) return jerr(c, "items filter expects a dict, got %s", jv_type_name(in));
        struct jargs none = {0};
        bool found;
        return jinja_method(c, in->j, "items", &none, out, &found);
    }
    if (!strcmp(f, "abs")) {
        if (!jv_isnum(in)) return jerr(c, "bad operand type for abs(): '%s'", jv_type_name(in));
        long long k;
        *out = jint(in->j, &k) ? jv_json(json_integer(k < 0 ? -k : k)) : jv_json(json_real(fabs(jnum(in->j))));
        return 0;
    }
    if (!strcmp(f, "round")) {
        if (!jv_isnum(in)) return jerr(c, "round expects a number");
        long long prec = 0;
        if (a->n > 0 && a->v[0].kind == JV_JSON) jint(a->v[0].j, &prec);
        double m = pow(10, (double)prec), x = jnum(in->j) * m;
        const char *method = a->n > 1 && is_str(&a->v[1]) ? json_string_value(a->v[1].j) : "common";
        double r = !strcmp(method, "floor") ? floor(x) : !strcmp(method, "ceil") ? ceil(x) : nearbyint(x);
        *out = jv_json(json_real(r / m));
        return 0;
    }
    if (!strcmp(f, "attr")) {
        if (a->n < 1 || !is_str(&a->v[0])) return jerr(c, "attr needs a name");
        *out = jv_is(in, JSON_OBJECT) || in->kind == JV_NS ? attr_get(in->j, json_string_value(a->v[0].j))
                                                           : jv_undef(json_string_value(a->v[0].j), NULL);
        if (out->kind == JV_UNDEF) out->name = "attribute";
        return 0;
    }
    if (!strcmp(f, "wordcount")) {
        jv s = to_str(in), parts;
        struct jargs none = {0};
        bool found;
        jinja_method(c, s.j, "split", &none, &parts, &found);
        *out = jv_json(json_integer((json_int_t)json_array_size(parts.j)));
        jv_drop(&s), jv_drop(&parts);
        return 0;
    }
    return jerr(c, "filter '%s' is not supported", f);
}
