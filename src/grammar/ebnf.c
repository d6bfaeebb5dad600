// GBNF/EBNF grammar parser (llama.cpp's GBNF syntax):
//   name ::= alternatives        (a rule; `root` is the start rule)
//   "literal" with escapes \n \t \r \\ \" \xHH \uHHHH, [character classes], rule names,
//   ( groups ), . (any character), postfix * + ? {m} {m,} {m,n}, | alternation, # comments.
//   Extension: %json {...} matches a JSON value valid against the inline JSON Schema (e.g. a
//   forced tool call: root ::= "<tool_call>\n" %json {"type": "object", ...} "\n</tool_call>").
// A rule's body may span lines; it ends where the next `name ::=` begins.
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

#define EBNF_MAX_DEPTH 200

struct ep {
    struct gbuild *b;
    const char *s;
    size_t n, i;
    int depth;
};

static void skip_ws(struct ep *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->i++;
        else if (c == '#') while (p->i < p->n && p->s[p->i] != '\n') p->i++;
        else break;
    }
}

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static size_t name_len(const struct ep *p, size_t at) {
    size_t k = at;
    while (k < p->n && is_name_char(p->s[k])) k++;
    return k - at;
}

// True if a `name ::=` starts at p->i (the next rule's head).
static bool at_rule_head(const struct ep *p) {
    size_t l = name_len(p, p->i);
    if (!l) return false;
    size_t k = p->i + l;
    while (k < p->n && (p->s[k] == ' ' || p->s[k] == '\t' || p->s[k] == '\n' || p->s[k] == '\r')) k++;
    return k + 3 <= p->n && !memcmp(p->s + k, "::=", 3);
}

static struct gx *parse_alt(struct ep *p);

static struct gx *parse_literal(struct ep *p) {
    p->i++; // opening quote
    char *buf = pg_malloc(p->n - p->i + 8);
    size_t bl = 0;
    for (;;) {
        if (p->i >= p->n) { free(buf); gb_fail(p->b, "grammar: unterminated string literal"); return NULL; }
        char c = p->s[p->i];
        if (c == '"') { p->i++; break; }
        uint32_t cp;
        if (c == '\\') {
            p->i++;
            if (regex_escape_at(p->b, p->s, p->n, &p->i, &cp)) { free(buf); return NULL; }
        } else if (regex_cp_at(p->b, p->s, p->n, &p->i, &cp)) { free(buf); return NULL; }
        // re-encode as UTF-8
        if (cp < 0x80) buf[bl++] = (char)cp;
        else if (cp < 0x800) { buf[bl++] = (char)(0xc0 | cp >> 6); buf[bl++] = (char)(0x80 | (cp & 0x3f)); }
        else if (cp < 0x10000) {
            buf[bl++] = (char)(0xe0 | cp >> 12); buf[bl++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            buf[bl++] = (char)(0x80 | (cp & 0x3f));
        } else {
            buf[bl++] = (char)(0xf0 | cp >> 18); buf[bl++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            buf[bl++] = (char)(0x80 | ((cp >> 6) & 0x3f)); buf[bl++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    struct gx *x = gx_lit(p->b, buf, bl);
    free(buf);
    return x;
}

static struct gx *parse_term(struct ep *p) {
    char c = p->s[p->i];
    if (c == '"') return parse_literal(p);
    if (c == '[') { p->i++; return regex_class_at(p->b, p->s, p->n, &p->i); }
    if (c == '.') {
        p->i++;
        struct cprange r[2] = {{0, '\n' - 1}, {'\n' + 1, 0x10ffff}};
        return gx_cpranges(p->b, r, 2);
    }
    if (c == '(') {
        p->i++;
        if (++p->depth > EBNF_MAX_DEPTH) { gb_fail(p->b, "grammar: nesting too deep"); return NULL; }
        struct gx *x = parse_alt(p);
        p->depth--;
        skip_ws(p);
        if (!x) return NULL;
        if (p->i >= p->n || p->s[p->i] != ')') { gb_fail(p->b, "grammar: missing ')' at offset %zu", p->i); return NULL; }
        p->i++;
        return x;
    }
    if (c == '%') { // Pagoda extension: %json {schema} = a JSON value valid against the schema
        if (p->i + 5 > p->n || memcmp(p->s + p->i, "%json", 5)) {
            gb_fail(p->b, "unsupported grammar construct: '%%' (only %%json {schema})");
            return NULL;
        }
        p->i += 5;
        skip_ws(p);
        int r = gb_new_rule(p->b, "json");
        if (schema_compile_at(p->b, p->s, p->n, &p->i, r)) return NULL;
        return gx_ref(p->b, r);
    }
    size_t l = name_len(p, p->i);
    if (l) {
        char name[128];
        if (l >= sizeof(name)) { gb_fail(p->b, "grammar: rule name too long"); return NULL; }
        memcpy(name, p->s + p->i, l);
        name[l] = 0;
        p->i += l;
        return gx_ref(p->b, gb_rule(p->b, name));
    }
    if (c == '\'') { gb_fail(p->b, "unsupported grammar construct: single-quoted literal"); return NULL; }
    gb_fail(p->b, "unsupported grammar construct: unexpected '%c' at offset %zu", c, p->i);
    return NULL;
}

static struct gx *parse_postfix(struct ep *p, struct gx *x) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == '*') { x = gx_rep(p->b, x, 0, -1); p->i++; }
        else if (c == '+') { x = gx_rep(p->b, x, 1, -1); p->i++; }
        else if (c == '?') { x = gx_rep(p->b, x, 0, 1); p->i++; }
        else if (c == '{') {
            p->i++;
            long mn = 0, mx;
            size_t st = p->i;
            while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9' && mn < 100000) mn = mn * 10 + (p->s[p->i++] - '0');
            if (p->i == st) { gb_fail(p->b, "grammar: bad {m,n} repetition"); return NULL; }
            mx = mn;
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                st = p->i;
                mx = 0;
                while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9' && mx < 100000) mx = mx * 10 + (p->s[p->i++] - '0');
                if (p->i == st) mx = -1;
            }
            if (p->i >= p->n || p->s[p->i] != '}' || (mx >= 0 && mx < mn) || mn > 10000 || mx > 10000) {
                gb_fail(p->b, "grammar: bad {m,n} repetition (max 10000)");
                return NULL;
            }
            p->i++;
            x = gx_rep(p->b, x, (int)mn, (int)mx);
        } else break;
    }
    return x;
}

static struct gx *parse_seq(struct ep *p) {
    struct gx **k = NULL;
    int n = 0, cap = 0;
    for (;;) {
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] == '|' || p->s[p->i] == ')' || at_rule_head(p)) break;
        struct gx *t = parse_term(p);
        if (t) t = parse_postfix(p, t);
        if (!t || p->b->failed) { free(k); return NULL; }
        if (n == cap) { cap = cap ? 2 * cap : 8; k = pg_realloc(k, (size_t)cap * sizeof(*k)); }
        k[n++] = t;
    }
    struct gx *x = gx_seq(p->b, n, k);
    free(k);
    return x;
}

static struct gx *parse_alt(struct ep *p) {
    struct gx *x = parse_seq(p);
    while (x) {
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] != '|') break;
        p->i++;
        struct gx *y = parse_seq(p);
        if (!y) return NULL;
        x = gx_alt2(p->b, x, y);
    }
    return x;
}

int ebnf_compile(struct gbuild *b, const char *src, size_t len) {
    struct ep p = {b, src, len, 0, 0};
    for (;;) {
        skip_ws(&p);
        if (p.i >= p.n) break;
        size_t l = name_len(&p, p.i);
        if (!l || !at_rule_head(&p)) return gb_fail(b, "grammar: expected 'name ::=' at offset %zu", p.i);
        char name[128];
        if (l >= sizeof(name)) return gb_fail(b, "grammar: rule name too long");
        memcpy(name, src + p.i, l);
        name[l] = 0;
        p.i += l;
        skip_ws(&p);
        p.i += 3; // ::=
        int r = gb_rule(b, name);
        if (b->rules[r].body) return gb_fail(b, "grammar: rule '%s' defined twice", name);
        struct gx *x = parse_alt(&p);
        if (!x || b->failed) return -1;
        skip_ws(&p);
        if (p.i < p.n && !at_rule_head(&p))
            return gb_fail(b, "grammar: unexpected '%c' at offset %zu", src[p.i], p.i);
        gb_define(b, r, x);
    }
    if (b->failed) return -1;
    for (int r = 0; r < b->n_rules; r++)
        if (!b->rules[r].body) return gb_fail(b, "grammar: undefined rule '%s'", b->rules[r].name);
    bool root = false;
    for (int r = 0; r < b->n_rules; r++) root |= !strcmp(b->rules[r].name, "root");
    if (!root) return gb_fail(b, "grammar: no 'root' rule");
    return 0;
}
