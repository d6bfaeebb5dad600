// Jinja evaluator: walks the AST over jansson values with Python/jinja2 semantics.
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/jinja_rt.h"

struct jvar {
    const char *name;
    jv v;
};
struct jframe {
    struct jframe *parent;
    struct jvar *vars;
    int n, cap;
};

struct ectx {
    struct jctx c;
    struct jframe *frame; // innermost scope
};

int jerr(struct jctx *c, const char *fmt, ...) {
    if (c->failed) return -1;
    char msg[PG_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pg_seterr(c->err, "chat template error at line %d: %s", c->line, msg);
    c->failed = true;
    return -1;
}

int jerr_undefined(struct jctx *c, const jv *v) {
    if (v->owner) return jerr(c, "'%s' has no attribute '%s'", v->owner, v->name ? v->name : "?");
    return jerr(c, "'%s' is undefined", v->name ? v->name : "value");
}

// ---- frames ----
static jv *frame_find(struct jframe *f, const char *name) {
    for (; f; f = f->parent)
        for (int i = f->n - 1; i >= 0; i--)
            if (!strcmp(f->vars[i].name, name)) return &f->vars[i].v;
    return NULL;
}

static void frame_set(struct jframe *f, const char *name, jv v) { // steals v
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->vars[i].name, name)) {
            jv_drop(&f->vars[i].v);
            f->vars[i].v = v;
            return;
        }
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 8;
        f->vars = pg_realloc(f->vars, (size_t)f->cap * sizeof *f->vars);
    }
    f->vars[f->n++] = (struct jvar){name, v};
}

static void frame_clear(struct jframe *f) {
    for (int i = 0; i < f->n; i++) jv_drop(&f->vars[i].v);
    free(f->vars);
}

static int eval(struct ectx *e, const struct jnode *n, jv *out);
static int exec(struct ectx *e, const struct jnode *n);

static int enter(struct ectx *e, const struct jnode *n) {
    e->c.line = n->line;
    if (++e->c.steps > JINJA_MAX_STEPS)
        return jerr(&e->c, "template evaluation exceeded %d steps", JINJA_MAX_STEPS);
    if (++e->c.depth > JINJA_MAX_DEPTH)
        return jerr(&e->c, "template recursion too deep (limit %d)", JINJA_MAX_DEPTH);
    return 0;
}

// ---- attribute and item access ----
static const char *owner_name(json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "dict object";
    case JSON_ARRAY: return "list object";
    case JSON_STRING: return "str object";
    case JSON_NULL: return "None";
    case JSON_INTEGER: return "int object";
    case JSON_REAL: return "float object";
    default: return "bool object";
    }
}

static int loop_attr(struct ectx *e, struct jloop *l, const char *name, jv *out) {
    long long i = (long long)l->idx, len = (long long)l->len;
    if (!strcmp(name, "index")) *out = jv_json(json_integer(i + 1));
    else if (!strcmp(name, "index0")) *out = jv_json(json_integer(i));
    else if (!strcmp(name, "revindex")) *out = jv_json(json_integer(len - i));
    else if (!strcmp(name, "revindex0")) *out = jv_json(json_integer(len - i - 1));
    else if (!strcmp(name, "first")) *out = jv_json(json_boolean(i == 0));
    else if (!strcmp(name, "last")) *out = jv_json(json_boolean(i == len - 1));
    else if (!strcmp(name, "length")) *out = jv_json(json_integer(len));
    else if (!strcmp(name, "depth")) *out = jv_json(json_integer(1));
    else if (!strcmp(name, "depth0")) *out = jv_json(json_integer(0));
    else if (!strcmp(name, "previtem"))
        *out = i > 0 ? jv_json(json_incref(json_array_get(l->items, (size_t)i - 1))) : jv_undef(name, "LoopContext");
    else if (!strcmp(name, "nextitem"))
        *out = i + 1 < len ? jv_json(json_incref(json_array_get(l->items, (size_t)i + 1))) : jv_undef(name, "LoopContext");
    else if (!strcmp(name, "cycle")) *out = (jv){.kind = JV_METHOD, .p = "cycle"};
    else *out = jv_undef(name, "LoopContext");
    (void)e;
    return 0;
}

static int get_attr(struct ectx *e, const jv *obj, const char *name, jv *out) {
    switch (obj->kind) {
    case JV_UNDEF: return jerr_undefined(&e->c, obj);
    case JV_NS: {
        json_t *v = json_object_get(obj->j, name);
        *out = v ? jv_json(json_incref(v)) : jv_undef(name, "Namespace");
        return 0;
    }
    case JV_LOOP: return loop_attr(e, (struct jloop *)obj->p, name, out);
    case JV_JSON: break;
    default: *out = jv_undef(name, jv_type_name(obj)); return 0;
    }
    const char *m = jinja_is_method(obj->j, name);
    if (m) {
        *out = (jv){.kind = JV_METHOD, .j = json_incref(obj->j), .p = m};
        return 0;
    }
    json_t *v = json_is_object(obj->j) ? json_object_get(obj->j, name) : NULL;
    *out = v ? jv_json(json_incref(v)) : jv_undef(name, owner_name(obj->j));
    return 0;
}

static char *undef_name(struct ectx *e, const jv *key) {
    (void)e;
    static _Thread_local char buf[64];
    struct jbuf b = {0};
    jv_to_str(key, &b);
    snprintf(buf, sizeof buf, "%s", b.p ? b.p : "");
    free(b.p);
    return buf;
}

// Byte offset of code point `idx` in s (idx <= count).
static size_t cp_offset(const char *s, size_t n, size_t idx) {
    size_t i = 0;
    while (idx > 0 && i < n) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
        idx--;
    }
    return i;
}

static int get_item(struct ectx *e, const jv *obj, const jv *key, jv *out) {
    if (obj->kind == JV_UNDEF) return jerr_undefined(&e->c, obj);
    if (key->kind == JV_UNDEF) return jerr_undefined(&e->c, key);
    long long idx;
    if (obj->kind == JV_JSON && key->kind == JV_JSON && jint(key->j, &idx)) {
        if (json_is_array(obj->j)) {
            long long n = (long long)json_array_size(obj->j);
            if (idx < 0) idx += n;
            if (idx >= 0 && idx < n) { *out = jv_json(json_incref(json_array_get(obj->j, (size_t)idx))); return 0; }
            *out = jv_undef(undef_name(e, key), "list object");
            return 0;
        }
        if (json_is_string(obj->j)) {
            const char *s = json_string_value(obj->j);
            size_t len = json_string_length(obj->j);
            long long n = (long long)utf8_count(s, len);
            if (idx < 0) idx += n;
            if (idx >= 0 && idx < n) {
                size_t a = cp_offset(s, len, (size_t)idx), b = cp_offset(s, len, (size_t)idx + 1);
                *out = jv_str_new(s + a, b - a);
                return 0;
            }
            *out = jv_undef(undef_name(e, key), "str object");
            return 0;
        }
    }
    if (jv_is(key, JSON_STRING)) {
        const char *k = json_string_value(key->j);
        if (jv_is(obj, JSON_OBJECT)) {
            json_t *v = json_object_get(obj->j, k);
            if (v) { *out = jv_json(json_incref(v)); return 0; }
        }
        if (strlen(k) == json_string_length(key->j)) {
            // jinja2 falls back to getattr; the name must outlive the value: use the key's
            // storage only for lookups that do not keep it (methods keep static names).
            int rc = get_attr(e, obj, k, out);
            if (rc == 0 && out->kind == JV_UNDEF) *out = jv_undef(undef_name(e, key), out->owner);
            return rc;
        }
    }
    *out = jv_undef(undef_name(e, key), obj->kind == JV_JSON ? owner_name(obj->j) : jv_type_name(obj));
    return 0;
}

// Python slice index normalization (PySlice_AdjustIndices).
static void slice_indices(long long len, const jv *s, const jv *t, long long step, long long *start,
                          long long *stop) {
    long long a, b;
    bool has_a = s->kind == JV_JSON && jint(s->j, &a), has_b = t->kind == JV_JSON && jint(t->j, &b);
    if (!has_a) a = step < 0 ? len - 1 : 0;
    else {
        if (a < 0) a += len;
        if (a < 0) a = step < 0 ? -1 : 0;
        if (a >= len) a = step < 0 ? len - 1 : len;
    }
    if (!has_b) b = step < 0 ? -1 : len;
    else {
        if (b < 0) b += len;
        if (b < 0) b = step < 0 ? -1 : 0;
        if (b >= len) b = step < 0 ? len - 1 : len;
    }
    *start = a, *stop = b;
}

static int eval_slice(struct ectx *e, const struct jnode *n, jv *out) {
    jv obj = {0}, parts[3] = {{0}, {0}, {0}};
    const struct jnode *pn[3] = {n->b, n->c, n->d};
    int rc = -1;
    if (eval(e, n->a, &obj)) return -1;
    for (int i = 0; i < 3; i++) {
        if (pn[i] && eval(e, pn[i], &parts[i])) goto done;
        if (pn[i] && !(parts[i].kind == JV_JSON && (json_is_null(parts[i].j) || json_is_integer(parts[i].j) ||
                                                     json_is_boolean(parts[i].j)))) {
            jerr(&e->c, "slice indices must be integers or None");
            goto done;
        }
    }
    long long step = 1;
    if (parts[2].kind == JV_JSON && !json_is_null(parts[2].j)) jint(parts[2].j, &step);
    if (step == 0) { jerr(&e->c, "slice step cannot be zero"); goto done; }
    if (obj.kind == JV_UNDEF) { jerr_undefined(&e->c, &obj); goto done; }
    if (jv_is(&obj, JSON_ARRAY)) {
        long long a, b, len = (long long)json_array_size(obj.j);
        slice_indices(len, &parts[0], &parts[1], step, &a, &b);
        json_t *r = json_array();
        for (long long i = a; step > 0 ? i < b : i > b; i += step)
            json_array_append(r, json_array_get(obj.j, (size_t)i));
        *out = jv_json(r);
    } else if (jv_is(&obj, JSON_STRING)) {
        const char *s = json_string_value(obj.j);
        size_t len = json_string_length(obj.j), n_cp = utf8_count(s, len);
        size_t *offs = pg_malloc((n_cp + 1) * sizeof *offs);
        for (size_t i = 0, k = 0; k <= n_cp; k++) {
            offs[k] = i;
            if (i < len) { i++; while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) i++; }
        }
        long long a, b;
        slice_indices((long long)n_cp, &parts[0], &parts[1], step, &a, &b);
        struct jbuf buf = {0};
        for (long long i = a; step > 0 ? i < b : i > b; i += step)
            jbuf_put(&buf, s + offs[i], offs[i + 1] - offs[i]);
        *out = jv_str_new(buf.p ? buf.p : "", buf.len);
        free(buf.p);
        free(offs);
    } else {
        jerr(&e->c, "'%s' object is not subscriptable with a slice", jv_type_name(&obj));
        goto done;
    }
    rc = 0;
done:
    jv_drop(&obj);
    for (int i = 0; i < 3; i++) jv_drop(&parts[i]);
    return rc;
}

// ---- arithmetic ----
// Python printf-style `fmt % args` for %s %r %d %i %f %%: args is a list (as a tuple), a
// dict or Undefined (as a mapping: only %(name)s), or one value.
static int str_format(struct ectx *e, const jv *fmt, const jv *args, jv *out) {
    const char *f = json_string_value(fmt->j);
    size_t n = json_string_length(fmt->j), used = 0;
    bool mapping = args->kind == JV_UNDEF || jv_is(args, JSON_OBJECT);
    bool tuple = jv_is(args, JSON_ARRAY);
    size_t n_args = tuple ? json_array_size(args->j) : mapping ? 0 : 1;
    struct jbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (f[i] != '%') { jbuf_putc(&b, f[i]); continue; }
        if (++i >= n) { free(b.p); return jerr(&e->c, "incomplete format"); }
        char conv = f[i];
        if (conv == '%') { jbuf_putc(&b, '%'); continue; }
        if (mapping || used >= n_args) { free(b.p); return jerr(&e->c, "not enough arguments for format string"); }
        jv arg = tuple ? jv_json(json_array_get(args->j, used)) : *args;
        used++;
        long long k;
        if (conv == 's') jv_to_str(&arg, &b);
        else if (conv == 'r' && arg.kind == JV_JSON) py_repr(arg.j, &b);
        else if ((conv == 'd' || conv == 'i') && jv_isnum(&arg)) {
            if (!jint(arg.j, &k)) k = (long long)jnum(arg.j);
            jbuf_printf(&b, "%lld", k);
        } else if (conv == 'f' && jv_isnum(&arg)) jbuf_printf(&b, "%f", jnum(arg.j));
        else { free(b.p); return jerr(&e->c, "unsupported format character '%c' or argument", conv); }
    }
    if (!mapping && !tuple && used < n_args) { free(b.p); return jerr(&e->c, "not all arguments converted during string formatting"); }
    *out = jv_str_new(b.p ? b.p : "", b.len);
    free(b.p);
    return 0;
}

static int arith(struct ectx *e, int op, const jv *a, const jv *b, jv *out) {
    if (op == JOP_MOD && jv_is(a, JSON_STRING)) return str_format(e, a, b, out);
    if (a->kind == JV_UNDEF) return jerr_undefined(&e->c, a);
    if (b->kind == JV_UNDEF) return jerr_undefined(&e->c, b);
    long long x, y, r;
    bool ints = a->kind == JV_JSON && b->kind == JV_JSON && jint(a->j, &x) && jint(b->j, &y);
    if (op == JOP_ADD && jv_is(a, JSON_STRING) && jv_is(b, JSON_STRING)) {
        size_t la = json_string_length(a->j), lb = json_string_length(b->j);
        if (la + lb > JINJA_MAX_STR) return jerr(&e->c, "string too long");
        char *p = pg_malloc(la + lb + 1);
        memcpy(p, json_string_value(a->j), la);
        memcpy(p + la, json_string_value(b->j), lb);
        *out = jv_str_new(p, la + lb);
        free(p);
        return 0;
    }
    if (op == JOP_ADD && jv_is(a, JSON_ARRAY) && jv_is(b, JSON_ARRAY)) {
        if (json_array_size(a->j) + json_array_size(b->j) > JINJA_MAX_LIST) return jerr(&e->c, "list too long");
        json_t *r2 = json_copy(a->j);
        json_array_extend(r2, b->j);
        *out = jv_json(r2);
        return 0;
    }
    if (op == JOP_MUL && ((jv_is(a, JSON_STRING) || jv_is(a, JSON_ARRAY)) || (jv_is(b, JSON_STRING) || jv_is(b, JSON_ARRAY)))) {
        const jv *seq = (jv_is(a, JSON_STRING) || jv_is(a, JSON_ARRAY)) ? a : b, *cnt = seq == a ? b : a;
        long long k;
        if (cnt->kind != JV_JSON || !jint(cnt->j, &k))
            return jerr(&e->c, "can't multiply sequence by non-int of type '%s'", jv_type_name(cnt));
        if (k < 0) k = 0;
        if (json_is_string(seq->j)) {
            size_t l = json_string_length(seq->j);
            if (l && (unsigned long long)k > JINJA_MAX_STR / l) return jerr(&e->c, "string too long");
            struct jbuf buf = {0};
            for (long long i = 0; i < k; i++) jbuf_put(&buf, json_string_value(seq->j), l);
            *out = jv_str_new(buf.p ? buf.p : "", buf.len);
            free(buf.p);
        } else {
            size_t l = json_array_size(seq->j);
            if (l && (unsigned long long)k > JINJA_MAX_RANGE / l) return jerr(&e->c, "list too long");
            json_t *r2 = json_array();
            for (long long i = 0; i < k; i++) json_array_extend(r2, seq->j);
            *out = jv_json(r2);
        }
        return 0;
    }
    static const char *const sym[] = {"+", "-", "*", "/", "//", "%", "**"};
    if (!jv_isnum(a) || !jv_isnum(b))
        return jerr(&e->c, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op],
                    jv_type_name(a), jv_type_name(b));
    if (ints) {
        switch (op) {
        case JOP_ADD: if (__builtin_add_overflow(x, y, &r)) goto big; *out = jv_json(json_integer(r)); return 0;
        case JOP_SUB: if (__builtin_sub_overflow(x, y, &r)) goto big; *out = jv_json(json_integer(r)); return 0;
        case JOP_MUL: if (__builtin_mul_overflow(x, y, &r)) goto big; *out = jv_json(json_integer(r)); return 0;
        case JOP_FLOORDIV: case JOP_MOD:
            if (y == 0) return jerr(&e->c, "integer division or modulo by zero");
            if (x == LLONG_MIN && y == -1) goto big;
            r = x / y;
            if ((x % y != 0) && ((x < 0) != (y < 0))) r--;
            *out = jv_json(json_integer(op == JOP_FLOORDIV ? r : x - r * y));
            return 0;
        case JOP_POW:
            if (y >= 0) {
                long long p = 1;
                for (long long i = 0; i < y; i++)
                    if (__builtin_mul_overflow(p, x, &p)) goto big;
                *out = jv_json(json_integer(p));
                return 0;
            }
            break;
        default: break;
        }
    }
    double fx = jnum(a->j), fy = jnum(b->j), fr;
    switch (op) {
    case JOP_ADD: fr = fx + fy; break;
    case JOP_SUB: fr = fx - fy; break;
    case JOP_MUL: fr = fx * fy; break;
    case JOP_DIV: if (fy == 0) return jerr(&e->c, "division by zero"); fr = fx / fy; break;
    case JOP_FLOORDIV: if (fy == 0) return jerr(&e->c, "float floor division by zero"); fr = floor(fx / fy); break;
    case JOP_MOD:
        if (fy == 0) return jerr(&e->c, "float modulo");
        fr = fmod(fx, fy);
        if (fr != 0 && ((fr < 0) != (fy < 0))) fr += fy;
        break;
    default: fr = pow(fx, fy); break;
    }
    *out = jv_json(json_real(fr));
    return 0;
big:
    return jerr(&e->c, "integer overflow");
}

static int contains(struct ectx *e, const jv *needle, const jv *hay, bool *r) {
    *r = false;
    if (hay->kind == JV_UNDEF) return 0;
    if (needle->kind == JV_UNDEF && hay->kind != JV_JSON) return jerr_undefined(&e->c, needle);
    if (jv_is(hay, JSON_STRING)) {
        if (!jv_is(needle, JSON_STRING))
            return jerr(&e->c, "'in <string>' requires string as left operand, not %s", jv_type_name(needle));
        *r = memmem(json_string_value(hay->j), json_string_length(hay->j), json_string_value(needle->j),
                    json_string_length(needle->j)) != NULL;
        return 0;
    }
    if (jv_is(hay, JSON_ARRAY)) {
        for (size_t i = 0; i < json_array_size(hay->j) && !*r; i++) {
            jv x = jv_json(json_array_get(hay->j, i));
            *r = jv_eq(needle, &x);
        }
        return 0;
    }
    if (jv_is(hay, JSON_OBJECT) || hay->kind == JV_NS) {
        if (jv_is(needle, JSON_ARRAY) || jv_is(needle, JSON_OBJECT))
            return jerr(&e->c, "unhashable type: '%s'", jv_type_name(needle));
        if (jv_is(needle, JSON_STRING) && hay->kind == JV_JSON)
            *r = json_object_get(hay->j, json_string_value(needle->j)) != NULL;
        return 0;
    }
    return jerr(&e->c, "argument of type '%s' is not iterable", jv_type_name(hay));
}

static int compare(struct ectx *e, int op, const jv *a, const jv *b, bool *r) {
    int c3;
    switch (op) {
    case JOP_EQ: *r = jv_eq(a, b); return 0;
    case JOP_NE: *r = !jv_eq(a, b); return 0;
    case JOP_IN: return contains(e, a, b, r);
    case JOP_NOTIN: if (contains(e, a, b, r)) return -1; *r = !*r; return 0;
    default: break;
    }
    if (jv_cmp(&e->c, a, b, &c3)) return -1;
    *r = op == JOP_LT ? c3 < 0 : op == JOP_LE ? c3 <= 0 : op == JOP_GT ? c3 > 0 : c3 >= 0;
    return 0;
}

// ---- calls ----
static void args_free(struct jargs *a) {
    for (int i = 0; i < a->n; i++) jv_drop(&a->v[i]);
    free(a->v);
    free(a->kw);
}

static int eval_args(struct ectx *e, const struct jnode *n, struct jargs *a) {
    a->n = 0;
    a->v = pg_calloc((size_t)n->n_kids + 1, sizeof *a->v);
    a->kw = pg_calloc((size_t)n->n_kids + 1, sizeof *a->kw);
    for (int i = 0; i < n->n_kids; i++) {
        if (eval(e, n->kids[i], &a->v[i])) { a->n = i; return -1; }
        a->kw[i] = n->names ? n->names[i] : NULL;
        a->n = i + 1;
    }
    return 0;
}

static int render_body(struct ectx *e, const struct jnode *body, struct jframe *frame, jv *out);

static int call_macro(struct ectx *e, const struct jnode *m, struct jargs *a, jv *out) {
    struct jframe f = {.parent = e->c.root};
    jv *slots[64];
    if (m->n_names > 64) return jerr(&e->c, "too many macro parameters");
    for (int i = 0; i < m->n_names; i++) {
        jv u = jv_undef(m->names[i], NULL);
        u.p = JV_UNBOUND;
        frame_set(&f, m->names[i], u);
    }
    int rc = -1;
    for (int i = 0; i < m->n_names; i++) slots[i] = &f.vars[i].v;
    if (jargs_bind(&e->c, m->str, a, m->names, m->n_names, slots)) goto done;
    struct jframe *saved = e->frame;
    e->frame = &f;
    for (int i = 0; i < m->n_names; i++) {
        if (slots[i]->kind == JV_UNDEF && slots[i]->p == JV_UNBOUND) {
            slots[i]->p = NULL;
            if (!m->kids[i]) continue;
            jv d;
            if (eval(e, m->kids[i], &d)) { e->frame = saved; goto done; }
            *slots[i] = d;
        }
    }
    e->frame = saved;
    rc = render_body(e, m->b, &f, out);
done:
    frame_clear(&f);
    return rc;
}

static int call_value(struct ectx *e, jv *fn, struct jargs *a, jv *out) {
    switch (fn->kind) {
    case JV_FUNC: return jinja_call_global(&e->c, (const char *)fn->p, a, out);
    case JV_MACRO: return call_macro(e, (const struct jnode *)fn->p, a, out);
    case JV_METHOD: {
        bool found;
        if (!fn->j) return jerr(&e->c, "'%s' is not callable here", (const char *)fn->p);
        if (jinja_method(&e->c, fn->j, (const char *)fn->p, a, out, &found)) return -1;
        return found ? 0 : jerr(&e->c, "unknown method '%s'", (const char *)fn->p);
    }
    case JV_UNDEF: return jerr_undefined(&e->c, fn);
    default: return jerr(&e->c, "'%s' object is not callable", jv_type_name(fn));
    }
}

static int loop_cycle(struct ectx *e, struct jloop *l, struct jargs *a, jv *out) {
    if (a->n == 0) return jerr(&e->c, "no items for cycling given");
    *out = jv_dup(&a->v[l->idx % (size_t)a->n]);
    return 0;
}

static int eval_call(struct ectx *e, const struct jnode *n, jv *out) {
    jv fn = {0}, recv = {0};
    struct jargs a = {0};
    int rc = -1;
    if (n->a->kind == JN_ATTR) { // method call: avoid materializing a bound method
        if (eval(e, n->a->a, &recv)) return -1;
        if (recv.kind == JV_JSON && jinja_is_method(recv.j, n->a->str)) {
            bool found;
            if (eval_args(e, n, &a)) goto done;
            e->c.line = n->line;
            rc = jinja_method(&e->c, recv.j, n->a->str, &a, out, &found);
            goto done;
        }
        if (recv.kind == JV_LOOP && !strcmp(n->a->str, "cycle")) {
            if (eval_args(e, n, &a)) goto done;
            rc = loop_cycle(e, (struct jloop *)recv.p, &a, out);
            goto done;
        }
        if (get_attr(e, &recv, n->a->str, &fn)) goto done;
    } else if (eval(e, n->a, &fn)) {
        goto done;
    }
    if (eval_args(e, n, &a)) goto done;
    e->c.line = n->line;
    rc = call_value(e, &fn, &a, out);
done:
    args_free(&a);
    jv_drop(&fn);
    jv_drop(&recv);
    return rc;
}

static int eval_filter(struct ectx *e, const struct jnode *n, jv *in, jv *out) { // consumes in
    struct jargs a = {0};
    int rc = -1;
    if (eval_args(e, n, &a) == 0) {
        e->c.line = n->line;
        rc = jinja_filter(&e->c, n->str, in, &a, out);
    }
    args_free(&a);
    jv_drop(in);
    return rc;
}

static int eval_collection(struct ectx *e, const struct jnode *n, jv *out) {
    json_t *r = n->kind == JN_DICT ? json_object() : json_array();
    for (int i = 0; i < n->n_kids; i++) {
        jv v;
        if (eval(e, n->kids[i], &v)) goto fail;
        if (v.kind != JV_JSON) {
            jerr(&e->c, "a %s value cannot be stored in a list or dict here", jv_type_name(&v));
            jv_drop(&v);
            goto fail;
        }
        if (n->kind != JN_DICT) {
            json_array_append_new(r, v.j);
            continue;
        }
        if (!json_is_string(v.j) || strlen(json_string_value(v.j)) != json_string_length(v.j)) {
            jerr(&e->c, "dict keys must be strings");
            jv_drop(&v);
            goto fail;
        }
        jv val;
        if (eval(e, n->kids[++i], &val)) { jv_drop(&v); goto fail; }
        if (val.kind != JV_JSON) {
            jerr(&e->c, "a %s value cannot be stored in a dict here", jv_type_name(&val));
            jv_drop(&v), jv_drop(&val);
            goto fail;
        }
        json_object_set_new(r, json_string_value(v.j), val.j);
        jv_drop(&v);
    }
    *out = jv_json(r);
    return 0;
fail:
    json_decref(r);
    return -1;
}

static int eval_test(struct ectx *e, const struct jnode *n, jv *out) {
    struct jargs args = {0};
    jv a = {0};
    bool r;
    int rc = -1;
    if (eval(e, n->a, &a) == 0 && eval_args(e, n, &args) == 0) {
        e->c.line = n->line;
        rc = jinja_test(&e->c, n->str, &a, &args, &r);
        if (!rc) *out = jv_json(json_boolean(n->op ? !r : r));
    }
    args_free(&args);
    jv_drop(&a);
    return rc;
}

static int eval_unary(struct ectx *e, const struct jnode *n, jv *out) {
    jv a;
    long long x;
    int rc = 0;
    if (eval(e, n->a, &a)) return -1;
    if (a.kind == JV_UNDEF) rc = jerr_undefined(&e->c, &a);
    else if (!jv_isnum(&a))
        rc = jerr(&e->c, "bad operand type for unary %c: '%s'", n->kind == JN_NEG ? '-' : '+', jv_type_name(&a));
    else if (n->kind == JN_POS && !json_is_boolean(a.j)) *out = jv_dup(&a);
    else if (!jint(a.j, &x)) *out = jv_json(json_real(-json_real_value(a.j)));
    else if (n->kind == JN_NEG && x == LLONG_MIN) rc = jerr(&e->c, "integer overflow");
    else *out = jv_json(json_integer(n->kind == JN_NEG ? -x : x));
    jv_drop(&a);
    return rc;
}

static int eval_compare(struct ectx *e, const struct jnode *n, jv *out) { // a < b < c chains
    jv a, b = {0};
    bool r = true;
    int rc = -1;
    if (eval(e, n->a, &a)) return -1;
    for (int i = 0; i < n->n_kids && r; i++) {
        if (eval(e, n->kids[i], &b)) goto done;
        e->c.line = n->line;
        if (compare(e, n->ops[i], &a, &b, &r)) goto done;
        jv_drop(&a);
        a = b;
        b = (jv){0};
    }
    *out = jv_json(json_boolean(r));
    rc = 0;
done:
    jv_drop(&a);
    jv_drop(&b);
    return rc;
}

static int eval_concat(struct ectx *e, const struct jnode *n, jv *out) {
    struct jbuf buf = {0};
    for (int i = 0; i < n->n_kids; i++) {
        jv a;
        if (eval(e, n->kids[i], &a)) { free(buf.p); return -1; }
        jv_to_str(&a, &buf);
        jv_drop(&a);
        if (buf.len > JINJA_MAX_STR) { free(buf.p); return jerr(&e->c, "string too long"); }
    }
    *out = jv_str_new(buf.p ? buf.p : "", buf.len);
    free(buf.p);
    return 0;
}

static int eval_inner(struct ectx *e, const struct jnode *n, jv *out) {
    jv a = {0}, b = {0};
    int rc = -1;
    switch (n->kind) {
    case JN_CONST: *out = jv_json(json_incref(n->val)); return 0;
    case JN_NAME: {
        jv *v = frame_find(e->frame, n->str);
        if (v) *out = jv_dup(v);
        else if (jinja_is_global_func(n->str)) *out = (jv){.kind = JV_FUNC, .p = n->str};
        else *out = jv_undef(n->str, NULL);
        return 0;
    }
    case JN_ATTR:
        if (eval(e, n->a, &a)) return -1;
        rc = get_attr(e, &a, n->str, out);
        break;
    case JN_ITEM:
        if (eval(e, n->a, &a) || eval(e, n->b, &b)) break;
        rc = get_item(e, &a, &b, out);
        break;
    case JN_SLICE: return eval_slice(e, n, out);
    case JN_CALL: return eval_call(e, n, out);
    case JN_FILTER:
        if (eval(e, n->a, &a)) return -1;
        return eval_filter(e, n, &a, out);
    case JN_TEST: return eval_test(e, n, out);
    case JN_NEG: case JN_POS: return eval_unary(e, n, out);
    case JN_NOT:
        if (eval(e, n->a, &a)) return -1;
        *out = jv_json(json_boolean(!jv_truthy(&a)));
        rc = 0;
        break;
    case JN_BINOP:
        if (eval(e, n->a, &a) || eval(e, n->b, &b)) break;
        e->c.line = n->line;
        rc = arith(e, n->op, &a, &b, out);
        break;
    case JN_AND: case JN_OR:
        if (eval(e, n->a, &a)) return -1;
        if (jv_truthy(&a) == (n->kind == JN_OR)) { *out = a; return 0; }
        jv_drop(&a);
        return eval(e, n->b, out);
    case JN_COMPARE: return eval_compare(e, n, out);
    case JN_COND:
        if (eval(e, n->a, &a)) return -1;
        if (jv_truthy(&a)) rc = eval(e, n->b, out);
        else if (n->c) rc = eval(e, n->c, out);
        else { *out = jv_undef("conditional expression", NULL); rc = 0; }
        break;
    case JN_LIST: case JN_TUPLE: case JN_DICT: return eval_collection(e, n, out);
    case JN_CONCAT: return eval_concat(e, n, out);
    default: return jerr(&e->c, "internal error: statement used as expression");
    }
    jv_drop(&a);
    jv_drop(&b);
    return rc;
}

static int eval(struct ectx *e, const struct jnode *n, jv *out) {
    *out = (jv){0};
    if (enter(e, n)) return -1;
    int rc = eval_inner(e, n, out);
    e->c.depth--;
    if (rc == 0 && out->kind == JV_JSON && !out->j) // json_real() refuses inf and nan
        rc = jerr(&e->c, "numeric value out of range (inf and nan are not supported)");
    if (rc == 0 && jv_is(out, JSON_STRING) && json_string_length(out->j) >= JINJA_MAX_STR)
        rc = jerr(&e->c, "string too long (limit %u bytes)", JINJA_MAX_STR);
    if (rc) jv_drop(out);
    return rc;
}

// ---- statements ----
static int out_check(struct ectx *e) {
    if (e->c.out->full || e->c.out->len >= JINJA_MAX_STR) return jerr(&e->c, "output too long (limit %u bytes)", JINJA_MAX_STR);
    return 0;
}

static int bind_targets(struct ectx *e, const struct jnode *n, json_t *item, struct jframe *f) {
    if (n->n_names == 1) {
        frame_set(f, n->names[0], jv_json(json_incref(item)));
        return 0;
    }
    json_t *parts = NULL;
    jv it = jv_json(item);
    if (jv_items(&e->c, &it, &parts)) return -1;
    if ((int)json_array_size(parts) != n->n_names) {
        json_decref(parts);
        return jerr(&e->c, "cannot unpack %zu values into %d names", json_array_size(parts), n->n_names);
    }
    for (int i = 0; i < n->n_names; i++) frame_set(f, n->names[i], jv_json(json_incref(json_array_get(parts, (size_t)i))));
    json_decref(parts);
    return 0;
}

static int exec_for(struct ectx *e, const struct jnode *n) {
    jv it;
    json_t *items = NULL;
    if (eval(e, n->a, &it)) return -1;
    int rc = jv_items(&e->c, &it, &items);
    jv_drop(&it);
    if (rc) return -1;
    struct jframe f = {.parent = e->frame};
    struct jframe *saved = e->frame;
    e->frame = &f;
    rc = -1;
    if (n->d) { // for x in xs if cond: filter first (loop.length counts kept items)
        json_t *kept = json_array();
        for (size_t i = 0; i < json_array_size(items); i++) {
            jv c;
            if (bind_targets(e, n, json_array_get(items, i), &f) || eval(e, n->d, &c)) { json_decref(kept); goto done; }
            if (jv_truthy(&c)) json_array_append(kept, json_array_get(items, i));
            jv_drop(&c);
        }
        json_decref(items);
        items = kept;
    }
    size_t len = json_array_size(items);
    if (len == 0) {
        e->frame = saved;
        rc = n->c ? exec(e, n->c) : 0;
        goto done;
    }
    for (int k = 0; k < f.n; k++) jv_drop(&f.vars[k].v); // targets bound by the filter
    f.n = 0;
    struct jloop *l = pg_calloc(1, sizeof *l);
    l->refs = 1, l->items = json_incref(items), l->len = len;
    frame_set(&f, "loop", (jv){.kind = JV_LOOP, .p = l});
    rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        l->idx = i;
        // each iteration starts from a fresh scope (jinja2: assignments in the body do not
        // survive into the next iteration); vars[0] is `loop`
        for (int k = 1; k < f.n; k++) jv_drop(&f.vars[k].v);
        f.n = 1;
        if (bind_targets(e, n, json_array_get(items, i), &f)) { rc = -1; break; }
        rc = exec(e, n->b);
        if (rc == 2) rc = 0; // continue
    }
    if (rc == 1) rc = 0; // break
done:
    e->frame = saved;
    frame_clear(&f);
    json_decref(items);
    return rc;
}

static int assign(struct ectx *e, const struct jnode *target, jv v) { // steals v
    if (target->kind == JN_NAME) {
        frame_set(e->frame, target->str, v);
        return 0;
    }
    if (target->kind == JN_ATTR) {
        jv *ns = frame_find(e->frame, target->a->str);
        int rc = 0;
        if (!ns || ns->kind != JV_NS) rc = jerr(&e->c, "can only assign attributes of a namespace object");
        else if (v.kind != JV_JSON) rc = jerr(&e->c, "cannot store a %s value in a namespace", jv_type_name(&v));
        else json_object_set(ns->j, target->str, v.j);
        jv_drop(&v);
        return rc;
    }
    // tuple unpacking
    json_t *parts;
    if (jv_items(&e->c, &v, &parts)) { jv_drop(&v); return -1; }
    jv_drop(&v);
    if ((int)json_array_size(parts) != target->n_names) {
        json_decref(parts);
        return jerr(&e->c, "cannot unpack values: expected %d", target->n_names);
    }
    for (int i = 0; i < target->n_names; i++)
        frame_set(e->frame, target->names[i], jv_json(json_incref(json_array_get(parts, (size_t)i))));
    json_decref(parts);
    return 0;
}

// Renders body into a fresh buffer within `frame` (NULL: current frame).
static int render_body(struct ectx *e, const struct jnode *body, struct jframe *frame, jv *out) {
    struct jbuf buf = {0}, *saved_out = e->c.out;
    struct jframe *saved_frame = e->frame;
    e->c.out = &buf;
    if (frame) e->frame = frame;
    int rc = exec(e, body);
    e->c.out = saved_out;
    e->frame = saved_frame;
    if (rc < 0) { free(buf.p); return -1; }
    *out = jv_str_new(buf.p ? buf.p : "", buf.len);
    free(buf.p);
    return 0;
}

static int apply_filters(struct ectx *e, const struct jnode *n, jv *v) {
    for (int i = 0; i < n->n_kids; i++) {
        jv r;
        if (eval_filter(e, n->kids[i], v, &r)) return -1;
        *v = r;
    }
    return 0;
}

static int exec_inner(struct ectx *e, const struct jnode *n) {
    jv v;
    switch (n->kind) {
    case JN_BODY:
        for (int i = 0; i < n->n_kids; i++) {
            int rc = exec(e, n->kids[i]);
            if (rc) return rc;
        }
        return 0;
    case JN_DATA: jbuf_put(e->c.out, n->str, n->len); return out_check(e);
    case JN_OUTPUT:
        if (eval(e, n->a, &v)) return -1;
        jv_to_str(&v, e->c.out);
        jv_drop(&v);
        return out_check(e);
    case JN_IF:
        if (eval(e, n->a, &v)) return -1;
        {
            bool t = jv_truthy(&v);
            jv_drop(&v);
            if (t) return exec(e, n->b);
            return n->c ? exec(e, n->c) : 0;
        }
    case JN_FOR: return exec_for(e, n);
    case JN_SET:
        if (eval(e, n->b, &v)) return -1;
        return assign(e, n->a, v);
    case JN_SET_BLOCK:
        if (render_body(e, n->b, NULL, &v) || apply_filters(e, n, &v)) return -1;
        return assign(e, n->a, v);
    case JN_FILTER_BLOCK:
        if (render_body(e, n->b, NULL, &v) || apply_filters(e, n, &v)) return -1;
        jv_to_str(&v, e->c.out);
        jv_drop(&v);
        return out_check(e);
    case JN_MACRO: frame_set(e->frame, n->str, (jv){.kind = JV_MACRO, .p = n}); return 0;
    case JN_BREAK: return 1;
    case JN_CONTINUE: return 2;
    default: return jerr(&e->c, "internal error: expression used as statement");
    }
}

static int exec(struct ectx *e, const struct jnode *n) {
    if (enter(e, n)) return -1;
    int rc = exec_inner(e, n);
    e->c.depth--;
    return rc;
}

int jinja_render(const struct jinja_tmpl *t, json_t *vars, char **out, size_t *out_len, char *err) {
    struct jframe root = {0};
    struct jbuf buf = {0};
    struct ectx e = {.c = {.err = err, .root = &root, .out = &buf}, .frame = &root};
    const char *k;
    json_t *v;
    if (vars) json_object_foreach(vars, k, v) frame_set(&root, k, jv_json(json_incref(v)));
    int rc = exec(&e, jinja_root(t));
    frame_clear(&root);
    if (rc < 0) {
        free(buf.p);
        *out = NULL;
        return -1;
    }
    *out = buf.p ? buf.p : pg_strdup("");
    if (out_len) *out_len = buf.len;
    return 0;
}
