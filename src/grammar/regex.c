// Regex parser -> grammar expressions over UTF-8 bytes.
// Syntax: literals (UTF-8), . [classes] [^negated] ranges, \d \w \s \D \W \S (ASCII), escapes
// \n \t \r \f \v \0 \xHH \uHHHH \x{H..} and escaped metacharacters, groups ( ) (?: ) (?P<n> )
// (?<n> ), alternation |, quantifiers * + ? {m} {m,} {m,n} with optional lazy ?, a leading ^
// and a trailing $. Anything else (backreferences, lookaround, \b, possessive...) fails with
// an error naming the construct.
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"

#define RE_MAX_REPEAT 10000
#define RE_MAX_DEPTH 200

struct rp {
    struct gbuild *b;
    const unsigned char *s;
    size_t n, i;
    bool json; // output is the JSON-escaped form of the matched string
    int depth;
};

// A code point set as sorted, merged ranges.
struct cpset { struct cprange *r; int n, cap; };

static void cs_add(struct cpset *c, uint32_t lo, uint32_t hi) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 8;
        c->r = pg_realloc(c->r, (size_t)c->cap * sizeof(*c->r));
    }
    c->r[c->n++] = (struct cprange){lo, hi};
}

static int cmp_range(const void *a, const void *b) {
    const struct cprange *x = a, *y = b;
    return (x->lo > y->lo) - (x->lo < y->lo);
}

static void cs_norm(struct cpset *c) {
    if (!c->n) return;
    qsort(c->r, (size_t)c->n, sizeof(*c->r), cmp_range);
    int k = 0;
    for (int i = 1; i < c->n; i++) {
        if (c->r[i].lo <= c->r[k].hi + 1) {
            if (c->r[i].hi > c->r[k].hi) c->r[k].hi = c->r[i].hi;
        } else c->r[++k] = c->r[i];
    }
    c->n = k + 1;
}

static void cs_negate(struct cpset *c, uint32_t top) {
    cs_norm(c);
    struct cpset o = {0};
    uint32_t lo = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->r[i].lo > lo) cs_add(&o, lo, c->r[i].lo - 1);
        lo = c->r[i].hi + 1;
    }
    if (lo <= top) cs_add(&o, lo, top);
    free(c->r);
    *c = o;
}

static void add_class(struct cpset *c, char k) {
    switch (k) {
    case 'd': cs_add(c, '0', '9'); break;
    case 'w': cs_add(c, '0', '9'); cs_add(c, 'A', 'Z'); cs_add(c, 'a', 'z'); cs_add(c, '_', '_'); break;
    case 's': cs_add(c, '\t', '\r'); cs_add(c, ' ', ' '); break;
    }
}

// JSON escape of a code point that cannot appear raw in a JSON string.
static struct gx *json_escape(struct gbuild *b, uint32_t cp) {
    char buf[8];
    const char *hex = "0123456789abcdef";
    switch (cp) {
    case '"': return gx_lit(b, "\\\"", 2);
    case '\\': return gx_lit(b, "\\\\", 2);
    case '\n': return gx_lit(b, "\\n", 2);
    case '\t': return gx_lit(b, "\\t", 2);
    case '\r': return gx_lit(b, "\\r", 2);
    case '\b': return gx_lit(b, "\\b", 2);
    case '\f': return gx_lit(b, "\\f", 2);
    }
    buf[0] = '\\'; buf[1] = 'u'; buf[2] = '0'; buf[3] = '0';
    buf[4] = hex[(cp >> 4) & 15]; buf[5] = hex[cp & 15];
    return gx_lit(b, buf, 6);
}

// Expression matching one code point of c (JSON-escaped where needed in json mode).
static struct gx *emit_set(struct rp *p, struct cpset *c) {
    cs_norm(c);
    if (!p->json) return gx_cpranges(p->b, c->r, c->n);
    struct cpset safe = {0};
    struct gx **alts = pg_malloc(40 * sizeof(*alts));
    int na = 0;
    for (int i = 0; i < c->n; i++) {
        uint32_t lo = c->r[i].lo, hi = c->r[i].hi;
        for (uint32_t cp = lo; cp <= hi && cp < 0x20; cp++) alts[na++] = json_escape(p->b, cp);
        if (lo < 0x20) lo = 0x20;
        for (uint32_t cp = '"'; cp <= '\\'; cp += '\\' - '"')
            if (lo <= cp && cp <= hi) {
                alts[na++] = json_escape(p->b, cp);
                if (lo < cp) cs_add(&safe, lo, cp - 1);
                lo = cp + 1;
            }
        if (lo <= hi) cs_add(&safe, lo, hi);
    }
    alts[na++] = gx_cpranges(p->b, safe.r, safe.n);
    struct gx *x = gx_alt(p->b, na, alts);
    free(alts);
    free(safe.r);
    return x;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Decodes one UTF-8 code point at p->i (invalid bytes are errors).
static int next_cp(struct rp *p, uint32_t *cp) {
    const unsigned char *s = p->s + p->i;
    size_t left = p->n - p->i;
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || (size_t)len > left) return gb_fail(p->b, "regex: invalid UTF-8 at offset %zu", p->i);
    uint32_t v = len == 1 ? c : c & (0x7f >> len);
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return gb_fail(p->b, "regex: invalid UTF-8 at offset %zu", p->i);
        v = v << 6 | (s[k] & 0x3f);
    }
    p->i += (size_t)len;
    *cp = v;
    return 0;
}

// Parses an escape after '\'. Sets *cp for a single char, or fills cls and returns 1.
static int parse_escape(struct rp *p, uint32_t *cp, struct cpset *cls, bool *ascii_only) {
    if (p->i >= p->n) return gb_fail(p->b, "regex: trailing backslash");
    unsigned char c = p->s[p->i++];
    switch (c) {
    case 'd': case 'w': case 's': add_class(cls, (char)c); return 1;
    case 'D': case 'W': case 'S': {
        struct cpset t = {0};
        add_class(&t, (char)(c + 32));
        cs_negate(&t, 0x7f); // ASCII complement (a subset of Python's Unicode \D \W \S)
        for (int i = 0; i < t.n; i++) cs_add(cls, t.r[i].lo, t.r[i].hi);
        free(t.r);
        if (ascii_only) *ascii_only = true;
        return 1;
    }
    case 'n': *cp = '\n'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case '0': *cp = 0; return 0;
    case 'x': case 'u': {
        uint32_t v = 0;
        int nd = c == 'x' ? 2 : 4;
        bool brace = p->i < p->n && p->s[p->i] == '{';
        if (brace) { p->i++; nd = 6; }
        int got = 0;
        while (got < nd && p->i < p->n && hexval(p->s[p->i]) >= 0) { v = v * 16 + (uint32_t)hexval(p->s[p->i++]); got++; }
        if (brace) {
            if (p->i >= p->n || p->s[p->i] != '}' || !got) return gb_fail(p->b, "regex: bad \\%c{...} escape", c);
            p->i++;
        } else if (got != nd) return gb_fail(p->b, "regex: bad \\%c escape", c);
        if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return gb_fail(p->b, "regex: escape \\%c out of range", c);
        *cp = v;
        return 0;
    }
    default:
        if ((c >= '1' && c <= '9') || c == 'k' || c == 'g')
            return gb_fail(p->b, "unsupported regex construct: backreference \\%c", c);
        if (c == 'b' || c == 'B' || c == 'A' || c == 'Z' || c == 'z' || c == 'G')
            return gb_fail(p->b, "unsupported regex construct: anchor \\%c", c);
        if (c == 'p' || c == 'P') return gb_fail(p->b, "unsupported regex construct: \\%c{...} Unicode property", c);
        if (c < 0x80 && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) { *cp = c; return 0; }
        return gb_fail(p->b, "unsupported regex construct: escape \\%c", c);
    }
}

static struct gx *parse_class(struct rp *p) {
    struct cpset c = {0};
    bool neg = false, ascii_only = false, first = true;
    if (p->i < p->n && p->s[p->i] == '^') { neg = true; p->i++; }
    for (;;) {
        if (p->i >= p->n) { free(c.r); gb_fail(p->b, "regex: unterminated character class"); return NULL; }
        unsigned char ch = p->s[p->i];
        if (ch == ']' && !first) { p->i++; break; }
        first = false;
        if (ch == '[' && p->i + 1 < p->n && p->s[p->i + 1] == ':') {
            free(c.r);
            gb_fail(p->b, "unsupported regex construct: POSIX class [:...:]");
            return NULL;
        }
        uint32_t lo;
        if (ch == '\\') {
            p->i++;
            int r = parse_escape(p, &lo, &c, &ascii_only);
            if (r < 0) { free(c.r); return NULL; }
            if (r == 1) { if (neg) ascii_only = true; continue; }
        } else if (next_cp(p, &lo)) { free(c.r); return NULL; }
        uint32_t hi = lo;
        if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
            p->i++;
            if (p->s[p->i] == '\\') {
                p->i++;
                int r = parse_escape(p, &hi, &c, NULL);
                if (r != 0) { free(c.r); if (r > 0) gb_fail(p->b, "regex: bad class range"); return NULL; }
            } else if (next_cp(p, &hi)) { free(c.r); return NULL; }
            if (hi < lo) { free(c.r); gb_fail(p->b, "regex: bad class range"); return NULL; }
        }
        cs_add(&c, lo, hi);
    }
    if (neg) cs_negate(&c, ascii_only ? 0x7f : 0x10ffff);
    struct gx *x = emit_set(p, &c);
    free(c.r);
    return x;
}

static struct gx *parse_alt(struct rp *p);

static struct gx *parse_atom(struct rp *p) {
    unsigned char ch = p->s[p->i];
    struct cpset c = {0};
    struct gx *x = NULL;
    if (ch == '(') {
        p->i++;
        if (p->i < p->n && p->s[p->i] == '?') {
            p->i++;
            if (p->i < p->n && p->s[p->i] == ':') p->i++;
            else if (p->i < p->n && (p->s[p->i] == 'P' || p->s[p->i] == '<') &&
                     !(p->s[p->i] == '<' && p->i + 1 < p->n && (p->s[p->i + 1] == '=' || p->s[p->i + 1] == '!'))) {
                if (p->s[p->i] == 'P') p->i++;
                if (p->i >= p->n || p->s[p->i] != '<') { gb_fail(p->b, "unsupported regex construct: (?P"); return NULL; }
                while (p->i < p->n && p->s[p->i] != '>') p->i++;
                if (p->i >= p->n) { gb_fail(p->b, "regex: unterminated group name"); return NULL; }
                p->i++;
            } else {
                gb_fail(p->b, "unsupported regex construct: (?%c (lookaround, flags or conditionals)",
                        p->i < p->n ? p->s[p->i] : '?');
                return NULL;
            }
        }
        if (++p->depth > RE_MAX_DEPTH) { gb_fail(p->b, "regex: nesting too deep"); return NULL; }
        x = parse_alt(p);
        p->depth--;
        if (!x) return NULL;
        if (p->i >= p->n || p->s[p->i] != ')') { gb_fail(p->b, "regex: missing ')'"); return NULL; }
        p->i++;
        return x;
    }
    if (ch == '[') { p->i++; return parse_class(p); }
    if (ch == '.') { p->i++; cs_add(&c, 0, '\n' - 1); cs_add(&c, '\n' + 1, 0x10ffff); }
    else if (ch == '\\') {
        p->i++;
        uint32_t cp;
        int r = parse_escape(p, &cp, &c, NULL);
        if (r < 0) { free(c.r); return NULL; }
        if (r == 0) cs_add(&c, cp, cp);
    } else if (ch == '^' || ch == '$') {
        gb_fail(p->b, "unsupported regex construct: anchor '%c' inside the pattern", ch);
        return NULL;
    } else if (ch == '*' || ch == '+' || ch == '?' || ch == '{') {
        if (ch == '{' && !(p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')) {
            p->i++;
            cs_add(&c, '{', '{');
        } else {
            gb_fail(p->b, "regex: nothing to repeat at offset %zu", p->i);
            return NULL;
        }
    } else {
        uint32_t cp;
        if (next_cp(p, &cp)) return NULL;
        cs_add(&c, cp, cp);
    }
    x = emit_set(p, &c);
    free(c.r);
    return x;
}

static bool parse_int(struct rp *p, int *v) {
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return false;
    long x = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        x = x * 10 + (p->s[p->i++] - '0');
        if (x > 1000000) x = 1000000;
    }
    *v = (int)x;
    return true;
}

static struct gx *parse_quant(struct rp *p, struct gx *x) {
    while (p->i < p->n) {
        unsigned char ch = p->s[p->i];
        int mn, mx;
        if (ch == '*') { mn = 0; mx = -1; p->i++; }
        else if (ch == '+') { mn = 1; mx = -1; p->i++; }
        else if (ch == '?') { mn = 0; mx = 1; p->i++; }
        else if (ch == '{' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9') {
            p->i++;
            parse_int(p, &mn);
            mx = mn;
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                if (!parse_int(p, &mx)) mx = -1;
            }
            if (p->i >= p->n || p->s[p->i] != '}') { gb_fail(p->b, "regex: bad {m,n} quantifier"); return NULL; }
            p->i++;
            if ((mx >= 0 && mx < mn) || mn > RE_MAX_REPEAT || mx > RE_MAX_REPEAT) {
                gb_fail(p->b, "regex: quantifier {%d,%d} out of range (max %d)", mn, mx, RE_MAX_REPEAT);
                return NULL;
            }
        } else break;
        if (p->i < p->n && p->s[p->i] == '?') p->i++; // lazy: same language
        else if (p->i < p->n && p->s[p->i] == '+') {
            gb_fail(p->b, "unsupported regex construct: possessive quantifier");
            return NULL;
        }
        x = gx_rep(p->b, x, mn, mx);
    }
    return x;
}

static struct gx *parse_seq(struct rp *p) {
    struct gx **k = NULL;
    int n = 0, cap = 0;
    while (p->i < p->n && p->s[p->i] != '|' && p->s[p->i] != ')') {
        struct gx *a = parse_atom(p);
        if (a) a = parse_quant(p, a);
        if (!a || p->b->failed) { free(k); return NULL; }
        if (n == cap) { cap = cap ? 2 * cap : 8; k = pg_realloc(k, (size_t)cap * sizeof(*k)); }
        k[n++] = a;
    }
    struct gx *x = gx_seq(p->b, n, k);
    free(k);
    return x;
}

static struct gx *parse_alt(struct rp *p) {
    struct gx *x = parse_seq(p);
    while (x && p->i < p->n && p->s[p->i] == '|') {
        p->i++;
        struct gx *y = parse_seq(p);
        if (!y) return NULL;
        x = gx_alt2(p->b, x, y);
    }
    return x;
}

struct gx *regex_compile(struct gbuild *b, const char *re, size_t len, bool json_string) {
    struct rp p = {b, (const unsigned char *)re, len, 0, json_string, 0};
    bool anchored_start = len && re[0] == '^';
    bool anchored_end = false;
    if (anchored_start) p.i = 1;
    if (len > p.i && re[len - 1] == '$') { // unescaped trailing $
        size_t bs = 0;
        for (size_t k = len - 1; k > p.i && re[k - 1] == '\\'; k--) bs++;
        if (bs % 2 == 0) { anchored_end = true; p.n = len - 1; }
    }
    struct gx *x = parse_alt(&p);
    if (x && p.i < p.n) { gb_fail(b, "regex: unbalanced ')' at offset %zu", p.i); return NULL; }
    if (!x || b->failed) return NULL;
    if (json_string) { // schema "pattern" is a search: unanchored ends match anything
        struct cpset any = {0};
        cs_add(&any, 0, 0x10ffff);
        struct gx *star = gx_rep(b, emit_set(&p, &any), 0, -1);
        free(any.r);
        if (!anchored_start) x = gx_seq2(b, star, x);
        if (!anchored_end) x = gx_seq2(b, x, star);
    }
    return x;
}

struct gx *regex_class_at(struct gbuild *b, const char *s, size_t n, size_t *pos) {
    struct rp p = {b, (const unsigned char *)s, n, *pos, false, 0};
    struct gx *x = parse_class(&p);
    *pos = p.i;
    return x;
}

int regex_escape_at(struct gbuild *b, const char *s, size_t n, size_t *pos, uint32_t *cp) {
    struct rp p = {b, (const unsigned char *)s, n, *pos, false, 0};
    struct cpset c = {0};
    int r = parse_escape(&p, cp, &c, NULL);
    free(c.r);
    *pos = p.i;
    if (r > 0) return gb_fail(b, "grammar: class escape outside [...] at offset %zu", *pos);
    return r;
}

int regex_cp_at(struct gbuild *b, const char *s, size_t n, size_t *pos, uint32_t *cp) {
    struct rp p = {b, (const unsigned char *)s, n, *pos, false, 0};
    int r = next_cp(&p, cp);
    *pos = p.i;
    return r;
}
