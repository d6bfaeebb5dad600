// Internal interface of the Jinja interpreter behind chat templates (see chat.h for the
// public contract and docs/chat-templates.md for the supported subset).
//
// Pipeline: jinja_lex (source -> tokens, applying whitespace control, trim_blocks and
// lstrip_blocks exactly as jinja2's lexer does) -> jinja_parse (tokens -> AST held in an
// arena owned by struct jinja_tmpl) -> jinja_render (walks the AST over jansson values).
// Python semantics are the reference: values print as Python's str(), tojson is
// json.dumps(ensure_ascii=False), and an undefined variable prints as "" but errors when
// called, indexed or used in arithmetic, like jinja2's default Undefined.
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/common.h"

// ---- limits (hostile templates and request data must not hang or exhaust the stack) ----
#define JINJA_MAX_DEPTH 400             // nesting of expressions + statements + macro calls
#define JINJA_MAX_STEPS 10000000        // evaluated nodes per render (~0.5 s)
#define JINJA_MAX_STR (16u << 20)       // bytes of any one string and of the output
#define JINJA_MAX_RANGE 100000          // items range() may produce (as jinja2's sandbox)

// ---- growable byte buffer ----
// Appends stop at JINJA_MAX_STR bytes (full is set, the text is cut there): a string that
// long is an error (see eval), and serializers stop early, so hostile nested data (a list
// holding itself 40 levels deep) cannot take exponential time or memory.
#define JINJA_MAX_LIST (1u << 20) // items of a list built by + or *
struct jbuf {
    char *p;
    size_t len, cap;
    bool full;
};
void jbuf_put(struct jbuf *b, const char *s, size_t n);
static inline void jbuf_putc(struct jbuf *b, char c) { jbuf_put(b, &c, 1); }
void jbuf_printf(struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// ---- tokens ----
enum jtok_type {
    JT_EOF,
    JT_DATA,        // template text (s, n): already whitespace-processed
    JT_VAR_BEGIN,   // {{
    JT_VAR_END,     // }}
    JT_BLOCK_BEGIN, // {%
    JT_BLOCK_END,   // %}
    JT_NAME,
    JT_STRING,      // decoded literal in (s, n), arena memory
    JT_INT,
    JT_FLOAT,
    JT_OP,          // operator text in (s, n)
};
struct jtok {
    enum jtok_type type;
    const char *s;
    size_t n;
    int line;
    long long ival;
    double fval;
};

// ---- AST ----
enum jn_kind {
    // expressions
    JN_CONST, JN_NAME, JN_ATTR, JN_ITEM, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST,
    JN_NEG, JN_POS, JN_NOT, JN_BINOP, JN_AND, JN_OR, JN_COMPARE, JN_COND, JN_LIST,
    JN_TUPLE, JN_DICT, JN_CONCAT,
    // statements
    JN_BODY, JN_DATA, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_SET_BLOCK, JN_MACRO,
    JN_BREAK, JN_CONTINUE, JN_FILTER_BLOCK,
};
// binary and comparison operators
enum jn_op {
    JOP_ADD, JOP_SUB, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW,
    JOP_EQ, JOP_NE, JOP_LT, JOP_LE, JOP_GT, JOP_GE, JOP_IN, JOP_NOTIN,
};

struct jnode {
    enum jn_kind kind;
    int line;
    int op;               // enum jn_op (BINOP); negated flag (TEST)
    const char *str;      // name, attribute, filter/test name, data text, macro name
    size_t len;           // length of str (DATA)
    json_t *val;          // CONST
    struct jnode *a, *b, *c, *d;
    struct jnode **kids;  // args, list items, dict k/v pairs, body statements, compare operands
    const char **names;   // per kid: keyword-argument name or NULL; macro params; for targets
    int *ops;             // COMPARE: operator per operand
    int n_kids, n_names;
};
// Field use per kind:
//   CONST val | NAME str | ATTR a.str | ITEM a[b] | SLICE a[b:c:d] (NULL parts allowed)
//   CALL a(kids, names=kwarg names) | FILTER a|str(kids) (a NULL inside a filter block)
//   TEST a is [not: op=1] str(kids) | NEG/POS/NOT a | BINOP a op b | AND/OR a b
//   COMPARE a (ops[i] kids[i])... | COND b if a else c (c may be NULL) | LIST/TUPLE kids
//   DICT kids = k0 v0 k1 v1 ... | CONCAT kids
//   BODY kids | DATA str,len | OUTPUT a | IF a then b else c (elif = nested IF in c)
//   FOR names (targets) in a [if d] body b else c | SET a (NAME, TUPLE of NAMEs or ATTR) = b
//   SET_BLOCK a = body b, filters kids (FILTER with a NULL) | MACRO str(names = kids
//   defaults, NULL when none) body b | FILTER_BLOCK body b, filters kids

struct jinja_tmpl;
// Parses src (need not be NUL-terminated). NULL + err ("line N: ...") on a syntax error.
struct jinja_tmpl *jinja_parse(const char *src, size_t len, char *err);
void jinja_free(struct jinja_tmpl *t);
const struct jnode *jinja_root(const struct jinja_tmpl *t);

// Renders with `vars` (a JSON object of global variables, borrowed). *out is malloc'd,
// *out_len excludes the NUL. raise_exception(msg) fails with err = msg verbatim; any other
// error is "chat template error at line N: ...".
int jinja_render(const struct jinja_tmpl *t, json_t *vars, char **out, size_t *out_len,
                 char *err);

// ---- lexer / parser internals (jinja_lex.c, jinja_parse.c) ----
struct jarena;
void *jarena_alloc(struct jarena *a, size_t n);
char *jarena_strdup(struct jarena *a, const char *s, size_t n);
// Tokenizes normalized source; tokens and decoded strings live in the arena.
int jinja_lex(struct jarena *a, const char *src, size_t len, struct jtok **toks, int *n_toks,
              char *err);

// ---- UTF-8 and Python string helpers (jinja_value.c) ----
bool py_isspace(uint32_t cp);
// Decodes one code point at s (valid UTF-8 assumed, n > 0); returns its byte length.
int utf8_dec(const char *s, size_t n, uint32_t *cp);
int utf8_enc(uint32_t cp, char *out);
size_t utf8_count(const char *s, size_t n);
bool utf8_valid(const char *s, size_t n);
// Python float repr ("1.0", "1e+16", "0.1").
void py_float_repr(double d, struct jbuf *b);
