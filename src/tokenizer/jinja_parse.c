// Jinja parser: tokens -> AST, following jinja2's grammar and operator precedence
// (filters and `is` tests bind tighter than arithmetic; `~` binds tighter than `+`).
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/jinja_rt.h"

// ---- arena ----
struct jchunk {
    struct jchunk *next;
    size_t used, cap;
    _Alignas(16) char data[];
};
struct jarena {
    struct jchunk *head;
};

void *jarena_alloc(struct jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 16384 ? n : 16384;
        struct jchunk *c = pg_malloc(sizeof *c + cap);
        c->next = a->head, c->used = 0, c->cap = cap;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

char *jarena_strdup(struct jarena *a, const char *s, size_t n) {
    char *p = jarena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

struct jinja_tmpl {
    struct jarena arena;
    struct jnode *root;
    json_t **consts; // every CONST value, released by jinja_free
    int n_consts, cap_consts;
};

struct parser {
    struct jinja_tmpl *t;
    struct jtok *toks;
    int n, i, depth;
    char *err;
};

static int perr(struct parser *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(struct parser *P, const char *fmt, ...) {
    char msg[PG_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pg_seterr(P->err, "line %d: %s", P->toks[P->i].line, msg);
    return -1;
}

static struct jtok *cur(struct parser *P) { return &P->toks[P->i]; }
static bool is_op(struct parser *P, const char *op) {
    struct jtok *t = cur(P);
    return t->type == JT_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n);
}
static bool is_name(struct parser *P, const char *name) {
    struct jtok *t = cur(P);
    return t->type == JT_NAME && t->n == strlen(name) && !memcmp(t->s, name, t->n);
}
static bool skip_op(struct parser *P, const char *op) {
    if (!is_op(P, op)) return false;
    P->i++;
    return true;
}
static bool skip_name(struct parser *P, const char *name) {
    if (!is_name(P, name)) return false;
    P->i++;
    return true;
}
static const char *tok_desc(struct jtok *t) {
    switch (t->type) {
    case JT_EOF: return "end of template";
    case JT_VAR_END: return "end of print statement";
    case JT_BLOCK_END: return "end of statement block";
    default: return "token";
    }
}
static int expect_op(struct parser *P, const char *op) {
    if (skip_op(P, op)) return 0;
    struct jtok *t = cur(P);
    if (t->type == JT_OP || t->type == JT_NAME)
        return perr(P, "expected '%s', got '%.*s'", op, (int)t->n, t->s);
    return perr(P, "expected '%s', got %s", op, tok_desc(t));
}

static struct jnode *node(struct parser *P, enum jn_kind k) {
    struct jnode *n = jarena_alloc(&P->t->arena, sizeof *n);
    n->kind = k;
    n->line = cur(P)->line;
    return n;
}

static struct jnode *const_node(struct parser *P, json_t *v) {
    struct jinja_tmpl *t = P->t;
    if (t->n_consts == t->cap_consts) {
        t->cap_consts = t->cap_consts ? 2 * t->cap_consts : 64;
        t->consts = pg_realloc(t->consts, (size_t)t->cap_consts * sizeof *t->consts);
    }
    t->consts[t->n_consts++] = v;
    struct jnode *n = node(P, JN_CONST);
    n->val = v;
    return n;
}

static const char *tok_str(struct parser *P, struct jtok *t) {
    return jarena_strdup(&P->t->arena, t->s, t->n);
}

// Growable child list, copied into the arena when done.
struct kids {
    struct jnode **k;
    const char **names;
    int n, cap;
};
static void kids_add(struct kids *l, struct jnode *k, const char *name) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->k = pg_realloc(l->k, (size_t)l->cap * sizeof *l->k);
        l->names = pg_realloc(l->names, (size_t)l->cap * sizeof *l->names);
    }
    l->k[l->n] = k, l->names[l->n] = name;
    l->n++;
}
static void kids_move(struct parser *P, struct kids *l, struct jnode *n, bool with_names) {
    n->n_kids = l->n;
    if (l->n) {
        n->kids = jarena_alloc(&P->t->arena, (size_t)l->n * sizeof *n->kids);
        memcpy(n->kids, l->k, (size_t)l->n * sizeof *n->kids);
        if (with_names) {
            n->names = jarena_alloc(&P->t->arena, (size_t)l->n * sizeof *n->names);
            memcpy(n->names, l->names, (size_t)l->n * sizeof *n->names);
            n->n_names = l->n;
        }
    }
    free(l->k);
    free(l->names);
    memset(l, 0, sizeof *l);
}

static struct jnode *parse_expr(struct parser *P, bool condexpr);
static struct jnode *parse_unary(struct parser *P, bool with_filter);
static struct jnode *parse_primary(struct parser *P);
static struct jnode *parse_postfix(struct parser *P, struct jnode *n);

#define ENTER(P)                                                                          \
    do {                                                                                  \
        if (++(P)->depth > JINJA_MAX_DEPTH) {                                             \
            perr(P, "template nesting too deep (limit %d)", JINJA_MAX_DEPTH);             \
            return NULL;                                                                  \
        }                                                                                 \
    } while (0)

// Call arguments after '(' : positional and name=value; consumes ')'.
static int parse_args(struct parser *P, struct jnode *n) {
    struct kids l = {0};
    while (!is_op(P, ")")) {
        if (l.n && expect_op(P, ",")) goto fail;
        if (is_op(P, ")")) break;
        if (is_op(P, "*") || is_op(P, "**")) { perr(P, "*args and **kwargs are not supported"); goto fail; }
        const char *kw = NULL;
        if (cur(P)->type == JT_NAME && P->toks[P->i + 1].type == JT_OP && P->toks[P->i + 1].n == 1 &&
            P->toks[P->i + 1].s[0] == '=') {
            kw = tok_str(P, cur(P));
            P->i += 2;
        }
        struct jnode *a = parse_expr(P, true);
        if (!a) goto fail;
        kids_add(&l, a, kw);
    }
    P->i++;
    kids_move(P, &l, n, true);
    return 0;
fail:
    kids_move(P, &l, n, true);
    return -1;
}

static struct jnode *parse_filter(struct parser *P, struct jnode *in) {
    // after '|'
    if (cur(P)->type != JT_NAME) return perr(P, "expected filter name"), NULL;
    struct jnode *f = node(P, JN_FILTER);
    f->a = in;
    f->str = tok_str(P, cur(P));
    if (!jinja_has_filter(f->str)) return perr(P, "no filter named '%s'", f->str), NULL;
    P->i++;
    if (skip_op(P, "(") && parse_args(P, f)) return NULL;
    return f;
}

static struct jnode *parse_test(struct parser *P, struct jnode *in) {
    // after 'is'
    struct jnode *t = node(P, JN_TEST);
    t->a = in;
    if (skip_name(P, "not")) t->op = 1;
    if (cur(P)->type != JT_NAME) return perr(P, "expected test name"), NULL;
    t->str = tok_str(P, cur(P));
    if (!jinja_has_test(t->str)) return perr(P, "no test named '%s'", t->str), NULL;
    P->i++;
    if (skip_op(P, "(")) {
        if (parse_args(P, t)) return NULL;
    } else {
        struct jtok *k = cur(P);
        bool arg = k->type == JT_STRING || k->type == JT_INT || k->type == JT_FLOAT ||
                   is_op(P, "[") || is_op(P, "{") ||
                   (k->type == JT_NAME && !is_name(P, "else") && !is_name(P, "or") &&
                    !is_name(P, "and") && !is_name(P, "if") && !is_name(P, "is") && !is_name(P, "in"));
        if (arg) {
            struct jnode *a = parse_primary(P);
            if (!a || !(a = parse_postfix(P, a))) return NULL;
            struct kids l = {0};
            kids_add(&l, a, NULL);
            kids_move(P, &l, t, true);
        }
    }
    return t;
}

static struct jnode *parse_filter_expr(struct parser *P, struct jnode *n) {
    while (n) {
        if (skip_op(P, "|")) n = parse_filter(P, n);
        else if (skip_name(P, "is")) n = parse_test(P, n);
        else if (is_op(P, "(")) {
            P->i++;
            struct jnode *c = node(P, JN_CALL);
            c->a = n;
            n = parse_args(P, c) ? NULL : c;
        } else break;
    }
    return n;
}

static struct jnode *parse_subscript(struct parser *P, struct jnode *obj) {
    // after '['
    struct jnode *parts[3] = {0};
    int np = 0;
    bool slice = false;
    for (;;) {
        if (is_op(P, ":")) {
            slice = true;
            P->i++;
            if (++np > 2) return perr(P, "invalid slice"), NULL;
            continue;
        }
        if (is_op(P, "]")) break;
        if (parts[np]) return perr(P, "expected ']'"), NULL;
        if (!(parts[np] = parse_expr(P, true))) return NULL;
    }
    P->i++;
    struct jnode *n = node(P, slice ? JN_SLICE : JN_ITEM);
    n->a = obj;
    if (!slice) {
        if (!parts[0]) return perr(P, "expected subscript expression"), NULL;
        n->b = parts[0];
    } else {
        n->b = parts[0], n->c = parts[1], n->d = parts[2];
    }
    return n;
}

static struct jnode *parse_postfix(struct parser *P, struct jnode *n) {
    while (n) {
        if (skip_op(P, ".")) {
            struct jtok *t = cur(P);
            if (t->type == JT_NAME) {
                struct jnode *a = node(P, JN_ATTR);
                a->a = n, a->str = tok_str(P, t);
                P->i++;
                n = a;
            } else if (t->type == JT_INT) {
                struct jnode *a = node(P, JN_ITEM);
                a->a = n, a->b = const_node(P, json_integer(t->ival));
                P->i++;
                n = a;
            } else {
                return perr(P, "expected attribute name after '.'"), NULL;
            }
        } else if (skip_op(P, "[")) {
            n = parse_subscript(P, n);
        } else if (skip_op(P, "(")) {
            struct jnode *c = node(P, JN_CALL);
            c->a = n;
            n = parse_args(P, c) ? NULL : c;
        } else {
            break;
        }
    }
    return n;
}

static struct jnode *parse_list_like(struct parser *P, enum jn_kind kind, const char *close) {
    struct jnode *n = node(P, kind);
    struct kids l = {0};
    while (!is_op(P, close)) {
        if (l.n && expect_op(P, ",")) goto fail;
        if (is_op(P, close)) break;
        struct jnode *k = parse_expr(P, true);
        if (!k) goto fail;
        kids_add(&l, k, NULL);
        if (kind == JN_DICT) {
            if (expect_op(P, ":")) goto fail;
            if (!(k = parse_expr(P, true))) goto fail;
            kids_add(&l, k, NULL);
        }
    }
    P->i++;
    kids_move(P, &l, n, false);
    return n;
fail:
    kids_move(P, &l, n, false);
    return NULL;
}

static struct jnode *parse_primary(struct parser *P) {
    struct jtok *t = cur(P);
    switch (t->type) {
    case JT_NAME: {
        P->i++;
#define KW(w) (t->n == strlen(w) && !memcmp(t->s, w, t->n))
        if (KW("true") || KW("True")) return const_node(P, json_true());
        if (KW("false") || KW("False")) return const_node(P, json_false());
        if (KW("none") || KW("None")) return const_node(P, json_null());
#undef KW
        struct jnode *n = node(P, JN_NAME);
        n->str = tok_str(P, t);
        return n;
    }
    case JT_STRING: {
        struct jbuf b = {0};
        while (cur(P)->type == JT_STRING) jbuf_put(&b, cur(P)->s, cur(P)->n), P->i++;
        struct jnode *n = const_node(P, json_stringn_nocheck(b.p ? b.p : "", b.len));
        free(b.p);
        return n;
    }
    case JT_INT: P->i++; return const_node(P, json_integer(t->ival));
    case JT_FLOAT: P->i++; return const_node(P, json_real(t->fval));
    case JT_OP:
        if (skip_op(P, "(")) {
            if (skip_op(P, ")")) return node(P, JN_TUPLE);
            struct jnode *e = parse_expr(P, true);
            if (!e) return NULL;
            if (is_op(P, ",")) {
                struct kids l = {0};
                kids_add(&l, e, NULL);
                while (skip_op(P, ",") && !is_op(P, ")")) {
                    struct jnode *k = parse_expr(P, true);
                    if (!k) { kids_move(P, &l, node(P, JN_TUPLE), false); return NULL; }
                    kids_add(&l, k, NULL);
                }
                e = node(P, JN_TUPLE);
                kids_move(P, &l, e, false);
            }
            return expect_op(P, ")") ? NULL : e;
        }
        if (skip_op(P, "[")) return parse_list_like(P, JN_LIST, "]");
        if (skip_op(P, "{")) return parse_list_like(P, JN_DICT, "}");
        return perr(P, "unexpected '%.*s'", (int)t->n, t->s), NULL;
    default:
        return perr(P, "unexpected %s", tok_desc(t)), NULL;
    }
}

static struct jnode *parse_unary(struct parser *P, bool with_filter) {
    ENTER(P);
    struct jnode *n;
    if (is_op(P, "-") || is_op(P, "+")) {
        n = node(P, is_op(P, "-") ? JN_NEG : JN_POS);
        P->i++;
        if (!(n->a = parse_unary(P, false))) return NULL;
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static struct jnode *binop(struct parser *P, int op, struct jnode *a, struct jnode *b) {
    if (!a || !b) return NULL;
    struct jnode *n = node(P, JN_BINOP);
    n->op = op, n->a = a, n->b = b;
    n->line = a->line;
    return n;
}

static struct jnode *parse_pow(struct parser *P) {
    struct jnode *n = parse_unary(P, true);
    while (n && skip_op(P, "**")) n = binop(P, JOP_POW, n, parse_unary(P, true));
    return n;
}

static struct jnode *parse_math2(struct parser *P) {
    struct jnode *n = parse_pow(P);
    for (;;) {
        int op = is_op(P, "*") ? JOP_MUL : is_op(P, "/") ? JOP_DIV : is_op(P, "//") ? JOP_FLOORDIV
               : is_op(P, "%") ? JOP_MOD : -1;
        if (op < 0 || !n) return n;
        P->i++;
        n = binop(P, op, n, parse_pow(P));
    }
}

static struct jnode *parse_concat(struct parser *P) {
    struct jnode *n = parse_math2(P);
    if (!n || !is_op(P, "~")) return n;
    struct jnode *c = node(P, JN_CONCAT);
    struct kids l = {0};
    kids_add(&l, n, NULL);
    while (skip_op(P, "~")) {
        if (!(n = parse_math2(P))) { kids_move(P, &l, c, false); return NULL; }
        kids_add(&l, n, NULL);
    }
    kids_move(P, &l, c, false);
    return c;
}

static struct jnode *parse_math1(struct parser *P) {
    struct jnode *n = parse_concat(P);
    for (;;) {
        int op = is_op(P, "+") ? JOP_ADD : is_op(P, "-") ? JOP_SUB : -1;
        if (op < 0 || !n) return n;
        P->i++;
        n = binop(P, op, n, parse_concat(P));
    }
}

static int compare_op(struct parser *P) {
    static const char *const ops[] = {"==", "!=", "<", "<=", ">", ">="};
    static const int codes[] = {JOP_EQ, JOP_NE, JOP_LT, JOP_LE, JOP_GT, JOP_GE};
    for (int i = 0; i < 6; i++)
        if (skip_op(P, ops[i])) return codes[i];
    if (skip_name(P, "in")) return JOP_IN;
    if (is_name(P, "not") && P->toks[P->i + 1].type == JT_NAME && P->toks[P->i + 1].n == 2 &&
        !memcmp(P->toks[P->i + 1].s, "in", 2)) {
        P->i += 2;
        return JOP_NOTIN;
    }
    return -1;
}

static struct jnode *parse_compare(struct parser *P) {
    struct jnode *n = parse_math1(P);
    if (!n) return NULL;
    int op = compare_op(P);
    if (op < 0) return n;
    struct jnode *c = node(P, JN_COMPARE);
    c->a = n;
    struct kids l = {0};
    int *ops = NULL, n_ops = 0;
    do {
        struct jnode *k = parse_math1(P);
        if (!k) { free(ops); kids_move(P, &l, c, false); return NULL; }
        kids_add(&l, k, NULL);
        ops = pg_realloc(ops, (size_t)(n_ops + 1) * sizeof *ops);
        ops[n_ops++] = op;
    } while ((op = compare_op(P)) >= 0);
    kids_move(P, &l, c, false);
    c->ops = jarena_alloc(&P->t->arena, (size_t)n_ops * sizeof *ops);
    memcpy(c->ops, ops, (size_t)n_ops * sizeof *ops);
    free(ops);
    return c;
}

static struct jnode *parse_not(struct parser *P) {
    if (is_name(P, "not")) {
        ENTER(P);
        struct jnode *n = node(P, JN_NOT);
        P->i++;
        n->a = parse_not(P);
        P->depth--;
        return n->a ? n : NULL;
    }
    return parse_compare(P);
}

static struct jnode *logic(struct parser *P, enum jn_kind k, struct jnode *a, struct jnode *b) {
    if (!a || !b) return NULL;
    struct jnode *n = node(P, k);
    n->a = a, n->b = b;
    return n;
}

static struct jnode *parse_and(struct parser *P) {
    struct jnode *n = parse_not(P);
    while (n && skip_name(P, "and")) n = logic(P, JN_AND, n, parse_not(P));
    return n;
}

static struct jnode *parse_or(struct parser *P) {
    struct jnode *n = parse_and(P);
    while (n && skip_name(P, "or")) n = logic(P, JN_OR, n, parse_and(P));
    return n;
}

static struct jnode *parse_expr(struct parser *P, bool condexpr) {
    ENTER(P);
    struct jnode *n = parse_or(P);
    while (condexpr && n && skip_name(P, "if")) {
        struct jnode *c = node(P, JN_COND);
        c->b = n;
        if (!(c->a = parse_or(P))) return NULL;
        if (skip_name(P, "else") && !(c->c = parse_expr(P, true))) return NULL;
        n = c;
    }
    P->depth--;
    return n;
}

// ---- statements ----
static struct jnode *parse_body(struct parser *P, const char *const *ends, int *which);

static int expect_block_end(struct parser *P) {
    if (cur(P)->type == JT_BLOCK_END) { P->i++; return 0; }
    struct jtok *t = cur(P);
    return perr(P, "expected end of statement block, got '%.*s'", (int)t->n, t->s);
}

static struct jnode *parse_if(struct parser *P) {
    struct jnode *n = node(P, JN_IF);
    if (!(n->a = parse_expr(P, true)) || expect_block_end(P)) return NULL;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    int w;
    if (!(n->b = parse_body(P, ends, &w))) return NULL;
    if (w == 0) {
        if (!(n->c = parse_if(P))) return NULL;
        return n;
    }
    if (w == 1) {
        static const char *const ends2[] = {"endif", NULL};
        if (expect_block_end(P) || !(n->c = parse_body(P, ends2, &w))) return NULL;
    }
    return expect_block_end(P) ? NULL : n;
}

static int parse_target_names(struct parser *P, struct jnode *n) {
    struct kids l = {0};
    do {
        if (cur(P)->type != JT_NAME) { kids_move(P, &l, n, true); return perr(P, "expected loop variable name"); }
        kids_add(&l, NULL, tok_str(P, cur(P)));
        P->i++;
    } while (skip_op(P, ","));
    kids_move(P, &l, n, true);
    n->kids = NULL, n->n_kids = 0;
    return 0;
}

static struct jnode *parse_for(struct parser *P) {
    struct jnode *n = node(P, JN_FOR);
    bool paren = skip_op(P, "(");
    if (parse_target_names(P, n)) return NULL;
    if (paren && expect_op(P, ")")) return NULL;
    if (!skip_name(P, "in")) return perr(P, "expected 'in' in for loop"), NULL;
    if (!(n->a = parse_expr(P, false))) return NULL;
    if (skip_name(P, "if") && !(n->d = parse_expr(P, true))) return NULL;
    if (is_name(P, "recursive")) return perr(P, "recursive loops are not supported"), NULL;
    if (expect_block_end(P)) return NULL;
    static const char *const ends[] = {"else", "endfor", NULL};
    int w;
    if (!(n->b = parse_body(P, ends, &w))) return NULL;
    if (w == 0) {
        static const char *const ends2[] = {"endfor", NULL};
        if (expect_block_end(P) || !(n->c = parse_body(P, ends2, &w))) return NULL;
    }
    return expect_block_end(P) ? NULL : n;
}

static struct jnode *parse_filter_chain(struct parser *P, struct jnode *n) {
    struct kids l = {0};
    while (skip_op(P, "|") || l.n == 0) {
        struct jnode *f = parse_filter(P, NULL);
        if (!f) { kids_move(P, &l, n, false); return NULL; }
        kids_add(&l, f, NULL);
    }
    kids_move(P, &l, n, false);
    return n;
}

static struct jnode *parse_set(struct parser *P) {
    struct jnode *target;
    if (cur(P)->type != JT_NAME) return perr(P, "expected variable name after 'set'"), NULL;
    target = node(P, JN_NAME);
    target->str = tok_str(P, cur(P));
    P->i++;
    if (skip_op(P, ".")) {
        if (cur(P)->type != JT_NAME) return perr(P, "expected attribute name"), NULL;
        struct jnode *a = node(P, JN_ATTR);
        a->a = target, a->str = tok_str(P, cur(P));
        P->i++;
        target = a;
    } else if (is_op(P, ",")) {
        struct jnode *t = node(P, JN_TUPLE);
        P->i--;
        if (parse_target_names(P, t)) return NULL;
        target = t;
    }
    if (skip_op(P, "=")) {
        struct jnode *n = node(P, JN_SET);
        n->a = target;
        if (!(n->b = parse_expr(P, true))) return NULL;
        if (is_op(P, ",")) return perr(P, "tuple assignment values are not supported"), NULL;
        return expect_block_end(P) ? NULL : n;
    }
    if (target->kind != JN_NAME) return perr(P, "expected '='"), NULL;
    struct jnode *n = node(P, JN_SET_BLOCK);
    n->a = target;
    if (is_op(P, "|") && (P->i++, !parse_filter_chain(P, n))) return NULL;
    if (expect_block_end(P)) return NULL;
    static const char *const ends[] = {"endset", NULL};
    int w;
    if (!(n->b = parse_body(P, ends, &w))) return NULL;
    return expect_block_end(P) ? NULL : n;
}

static struct jnode *parse_macro(struct parser *P) {
    if (cur(P)->type != JT_NAME) return perr(P, "expected macro name"), NULL;
    struct jnode *n = node(P, JN_MACRO);
    n->str = tok_str(P, cur(P));
    P->i++;
    if (expect_op(P, "(")) return NULL;
    struct kids l = {0};
    while (!skip_op(P, ")")) {
        if (l.n && expect_op(P, ",")) goto fail;
        if (skip_op(P, ")")) break;
        if (cur(P)->type != JT_NAME) { perr(P, "expected macro parameter name"); goto fail; }
        const char *name = tok_str(P, cur(P));
        P->i++;
        struct jnode *def = NULL;
        if (skip_op(P, "=") && !(def = parse_expr(P, true))) goto fail;
        kids_add(&l, def, name);
    }
    kids_move(P, &l, n, true);
    if (expect_block_end(P)) return NULL;
    static const char *const ends[] = {"endmacro", NULL};
    int w;
    if (!(n->b = parse_body(P, ends, &w))) return NULL;
    if (cur(P)->type == JT_NAME) P->i++; // {% endmacro name %}
    return expect_block_end(P) ? NULL : n;
fail:
    kids_move(P, &l, n, true);
    return NULL;
}

// Parses one {% ... %} statement (after the keyword check for ends was done).
static struct jnode *parse_statement(struct parser *P) {
    struct jtok *t = cur(P);
    if (t->type != JT_NAME) return perr(P, "tag name expected"), NULL;
    char kw[32];
    snprintf(kw, sizeof kw, "%.*s", (int)(t->n < 31 ? t->n : 31), t->s);
    P->i++;
    if (!strcmp(kw, "if")) return parse_if(P);
    if (!strcmp(kw, "for")) return parse_for(P);
    if (!strcmp(kw, "set")) return parse_set(P);
    if (!strcmp(kw, "macro")) return parse_macro(P);
    if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
        struct jnode *n = node(P, kw[0] == 'b' ? JN_BREAK : JN_CONTINUE);
        return expect_block_end(P) ? NULL : n;
    }
    if (!strcmp(kw, "filter")) {
        struct jnode *n = node(P, JN_FILTER_BLOCK);
        if (!parse_filter_chain(P, n) || expect_block_end(P)) return NULL;
        static const char *const ends[] = {"endfilter", NULL};
        int w;
        if (!(n->b = parse_body(P, ends, &w))) return NULL;
        return expect_block_end(P) ? NULL : n;
    }
    if (!strcmp(kw, "generation")) { // transformers' AssistantTracker extension: a no-op here
        if (expect_block_end(P)) return NULL;
        static const char *const ends[] = {"endgeneration", NULL};
        int w;
        struct jnode *n = parse_body(P, ends, &w);
        return !n || expect_block_end(P) ? NULL : n;
    }
    P->i--;
    return perr(P, "encountered unknown tag '%s'", kw), NULL;
}

// Parses statements until one of `ends` (a NULL-terminated keyword list) or EOF (when
// ends is NULL). Leaves the parser after the end keyword; *which gets its index.
static struct jnode *parse_body(struct parser *P, const char *const *ends, int *which) {
    ENTER(P);
    struct jnode *body = node(P, JN_BODY);
    struct kids l = {0};
    for (;;) {
        struct jtok *t = cur(P);
        struct jnode *s = NULL;
        if (t->type == JT_EOF) {
            if (!ends) break;
            perr(P, "unexpected end of template, expected '%s'", ends[0]);
            goto fail;
        }
        if (t->type == JT_DATA) {
            s = node(P, JN_DATA);
            s->str = t->s, s->len = t->n;
            P->i++;
        } else if (t->type == JT_VAR_BEGIN) {
            P->i++;
            s = node(P, JN_OUTPUT);
            if (!(s->a = parse_expr(P, true))) goto fail;
            if (cur(P)->type != JT_VAR_END) {
                struct jtok *k = cur(P);
                perr(P, "expected end of print statement, got '%.*s'", (int)k->n, k->s);
                goto fail;
            }
            P->i++;
        } else if (t->type == JT_BLOCK_BEGIN) {
            P->i++;
            struct jtok *k = cur(P);
            for (int e = 0; ends && ends[e]; e++)
                if (k->type == JT_NAME && k->n == strlen(ends[e]) && !memcmp(k->s, ends[e], k->n)) {
                    P->i++;
                    *which = e;
                    kids_move(P, &l, body, false);
                    P->depth--;
                    return body;
                }
            if (k->type == JT_NAME && ((k->n >= 3 && !memcmp(k->s, "end", 3)) ||
                                       (k->n == 4 && !memcmp(k->s, "else", 4)) ||
                                       (k->n == 4 && !memcmp(k->s, "elif", 4)))) {
                if (ends) perr(P, "unexpected '%.*s', expected '%s'", (int)k->n, k->s, ends[0]);
                else perr(P, "unexpected '%.*s'", (int)k->n, k->s);
                goto fail;
            }
            if (!(s = parse_statement(P))) goto fail;
        } else {
            perr(P, "unexpected token");
            goto fail;
        }
        kids_add(&l, s, NULL);
    }
    kids_move(P, &l, body, false);
    P->depth--;
    return body;
fail:
    kids_move(P, &l, body, false);
    return NULL;
}

struct jinja_tmpl *jinja_parse(const char *src, size_t len, char *err) {
    if (!utf8_valid(src, len)) {
        pg_seterr(err, "template is not valid UTF-8");
        return NULL;
    }
    struct jinja_tmpl *t = pg_calloc(1, sizeof *t);
    // normalize newlines (\r\n, \r -> \n) and drop one trailing newline, as jinja2 does
    char *norm = jarena_alloc(&t->arena, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (n && norm[n - 1] == '\n') n--;
    norm[n] = 0;
    struct parser P = {.t = t, .err = err};
    if (jinja_lex(&t->arena, norm, n, &P.toks, &P.n, err)) goto fail;
    int w;
    t->root = parse_body(&P, NULL, &w);
    free(P.toks);
    if (!t->root) goto fail;
    return t;
fail:
    jinja_free(t);
    return NULL;
}

const struct jnode *jinja_root(const struct jinja_tmpl *t) { return t->root; }

void jinja_free(struct jinja_tmpl *t) {
    if (!t) return;
    for (int i = 0; i < t->n_consts; i++) json_decref(t->consts[i]);
    free(t->consts);
    for (struct jchunk *c = t->arena.head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(t);
}
