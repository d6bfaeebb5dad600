// Runtime values of the Jinja interpreter (internal to jinja_eval.c, jinja_builtins.c and
// jinja_value.c). A jv owns one reference to its json_t (and to its loop, if any): pass
// ownership explicitly, jv_drop what you own, jv_dup to keep a second copy.
#pragma once
#include "tokenizer/jinja.h"

enum jv_kind {
    JV_UNDEF,  // jinja2's default Undefined: prints "", errors on call/index/arithmetic
    JV_JSON,   // any JSON value (str, int, float, bool, None, list, dict)
    JV_NS,     // namespace(): j is its (mutable, per render) attribute object
    JV_LOOP,   // the `loop` variable of a for loop: p is a struct jloop
    JV_MACRO,  // p is the MACRO node
    JV_FUNC,   // a global function: p is its name (range, namespace, raise_exception, ...)
    JV_METHOD, // a bound method not called yet: j is the receiver, p the method name
};

typedef struct jv {
    enum jv_kind kind;
    json_t *j;
    const void *p;
    const char *name;  // UNDEF: what was missing (borrowed from the AST or static)
    const char *owner; // UNDEF: "dict object" etc. when an attribute/item was missing
} jv;

struct jloop {
    int refs;
    json_t *items; // array being iterated (owned)
    size_t idx, len;
};

struct jframe;

struct jctx {
    char *err;
    int line;    // line of the node being evaluated, for messages
    bool failed;
    long steps;
    int depth;
    struct jframe *root;
    struct jbuf *out;
};

// Sets a "chat template error at line N: ..." message; returns -1.
int jerr(struct jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int jerr_undefined(struct jctx *c, const jv *v);

static inline jv jv_json(json_t *j) { return (jv){.kind = JV_JSON, .j = j}; }
static inline jv jv_undef(const char *name, const char *owner) {
    return (jv){.kind = JV_UNDEF, .name = name, .owner = owner};
}
static inline bool jv_is(const jv *v, json_type t) { return v->kind == JV_JSON && json_typeof(v->j) == t; }
static inline bool jv_isnum(const jv *v) {
    return v->kind == JV_JSON && (json_is_number(v->j) || json_is_boolean(v->j));
}
jv jv_str_new(const char *s, size_t n); // new JSON string (s valid UTF-8)
jv jv_dup(const jv *v);
void jv_drop(jv *v);

bool jv_truthy(const jv *v);
const char *jv_type_name(const jv *v); // Python type name: str, int, dict, ...
// The items of an iterable as a new JSON array (caller decrefs): list -> itself, dict -> keys,
// str -> characters, undefined -> empty. -1 with jerr for anything else.
int jv_items(struct jctx *c, const jv *v, json_t **out);
// Python str(v) appended to b.
void jv_to_str(const jv *v, struct jbuf *b);
// Python repr of a JSON value.
void py_repr(json_t *j, struct jbuf *b);
bool jv_eq(const jv *a, const jv *b);
// Python ordering: *r = -1/0/1. Fails (TypeError text) for unorderable pairs.
int jv_cmp(struct jctx *c, const jv *a, const jv *b, int *r);
double jnum(json_t *j); // number or bool as double
bool jint(json_t *j, long long *out); // int or bool as integer

struct tojson_opts {
    bool ensure_ascii, sort_keys;
    const char *indent;    // NULL: single line
    const char *item_sep;  // default ", " (or "," with indent)
    const char *key_sep;   // default ": "
};
// json.dumps(v, ...) appended to b. Fails for values JSON cannot hold.
int jv_tojson(struct jctx *c, const jv *v, const struct tojson_opts *o, struct jbuf *b);

// ---- builtins (jinja_builtins.c) ----
// args: evaluated positional and keyword arguments (kw[i] NULL for positional).
struct jargs {
    jv *v;
    const char **kw;
    int n;
};
int jinja_filter(struct jctx *c, const char *name, jv *in, struct jargs *a, jv *out);
int jinja_test(struct jctx *c, const char *name, const jv *in, struct jargs *a, bool *out);
bool jinja_has_test(const char *name);
bool jinja_has_filter(const char *name);
// Calls method `name` on a JSON receiver (str/list/dict). *found=false if no such method.
int jinja_method(struct jctx *c, json_t *self, const char *name, struct jargs *a, jv *out,
                 bool *found);
// The static canonical name of method `name` of self's type, or NULL if none.
const char *jinja_is_method(json_t *self, const char *name);
// Global functions: range, namespace, dict, raise_exception, strftime_now.
bool jinja_is_global_func(const char *name);
int jinja_call_global(struct jctx *c, const char *name, struct jargs *a, jv *out);
// Binds arguments to named parameters (defaults left as they are in slots: pass
// pre-filled slots, e.g. jv_undef). Errors on unknown keywords or too many positionals.
#define JV_UNBOUND ((const void *)1) // p of a jv_undef slot no argument was bound to
int jargs_bind(struct jctx *c, const char *fn, struct jargs *a, const char *const *params,
               int n_params, jv **slots);
