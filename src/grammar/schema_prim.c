// JSON Schema front end, primitive values: strings (length, pattern, format), integers and
// numbers with bounds (as digit-range expressions), literals, and "any JSON" rules.
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/schema_impl.h"

static struct gx *re(struct sc *c, const char *pattern) {
    return regex_compile(c->b, pattern, strlen(pattern), false);
}

struct gx *sc_json_literal(struct sc *c, json_t *v) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) { gb_fail(c->b, "JSON Schema: cannot serialize enum/const value"); return gx_fail(c->b); }
    struct gx *x = gx_lit(c->b, s, strlen(s));
    free(s);
    return x;
}

struct gx *sc_string_char(struct sc *c) {
    // raw: any code point >= 0x20 except '"' and '\\'; escaped: \" \\ \/ \b \f \n \r \t \u00XX
    struct cprange r[3] = {{0x20, 0x21}, {0x23, 0x5b}, {0x5d, 0x10ffff}};
    struct gx *raw = gx_cpranges(c->b, r, 3);
    struct gx *esc = re(c, "\\\\([\"\\\\/bfnrt]|u00[0-9a-fA-F]{2})");
    return gx_alt2(c->b, raw, esc);
}

static const struct { const char *name, *re; } formats[] = {
    {"date", "[0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"},
    {"time", "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"},
    {"date-time", "[0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
                  "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"},
    // unbounded runs rather than {m,n} counts: fewer automaton states, so masks cache well
    {"email", "[a-zA-Z0-9_%+-]+(\\.[a-zA-Z0-9_%+-]+)*@[a-zA-Z0-9]+(-+[a-zA-Z0-9]+)*(\\.[a-zA-Z]{2,})+"},
    {"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"},
    {"ipv4", "((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"},
    {"hostname", "[a-zA-Z0-9]+(-+[a-zA-Z0-9]+)*(\\.[a-zA-Z0-9]+(-+[a-zA-Z0-9]+)*)*"},
    {"uri", "https?://[a-zA-Z0-9]+(-+[a-zA-Z0-9]+)*(\\.[a-zA-Z0-9]+(-+[a-zA-Z0-9]+)*)*(/[a-zA-Z0-9._~%-]*)*"},
};

struct gx *sc_string(struct sc *c, json_t *s) {
    json_t *jmin = json_object_get(s, "minLength"), *jmax = json_object_get(s, "maxLength");
    json_t *pat = json_object_get(s, "pattern"), *fmt = json_object_get(s, "format");
    struct gx *q = gx_byte(c->b, '"');
    if ((jmin && !json_is_integer(jmin)) || (jmax && !json_is_integer(jmax))) {
        gb_fail(c->b, "JSON Schema: minLength/maxLength must be integers");
        return gx_fail(c->b);
    }
    long mn = jmin ? (long)json_integer_value(jmin) : 0, mx = jmax ? (long)json_integer_value(jmax) : -1;
    if (mn < 0 || mn > 10000 || mx > 10000 || (mx >= 0 && mx < mn)) {
        gb_fail(c->b, "JSON Schema: unsupported string length bounds [%ld, %ld] (max 10000)", mn, mx);
        return gx_fail(c->b);
    }
    if ((pat || fmt) && (jmin || jmax)) {
        gb_fail(c->b, "unsupported JSON Schema keyword combination: minLength/maxLength with %s",
                pat ? "pattern" : "format");
        return gx_fail(c->b);
    }
    if (pat && fmt) {
        gb_fail(c->b, "unsupported JSON Schema keyword combination: pattern with format");
        return gx_fail(c->b);
    }
    struct gx *body;
    if (pat) {
        if (!json_is_string(pat)) { gb_fail(c->b, "JSON Schema: pattern must be a string"); return gx_fail(c->b); }
        body = regex_compile(c->b, json_string_value(pat), json_string_length(pat), true);
        if (!body) return gx_fail(c->b);
    } else if (fmt) {
        const char *f = json_string_value(fmt);
        body = NULL;
        for (size_t i = 0; f && i < sizeof(formats) / sizeof(formats[0]); i++)
            if (!strcmp(f, formats[i].name)) body = re(c, formats[i].re);
        if (!body) {
            gb_fail(c->b, "unsupported JSON Schema format '%s'", f ? f : "(not a string)");
            return gx_fail(c->b);
        }
    } else if (!jmin && !jmax) {
        return gx_ref(c->b, sc_any_string(c));
    } else {
        body = gx_rep(c->b, sc_string_char(c), (int)mn, (int)mx);
    }
    struct gx *k[3] = {q, body, q};
    return gx_seq(c->b, 3, k);
}

// ---- integer ranges as digit strings ----
static struct gx *digits(struct sc *c, char lo, char hi) {
    uint32_t set[8] = {0};
    for (int d = lo; d <= hi; d++) set[d >> 5] |= 1u << (d & 31);
    return gx_set(c->b, set);
}

// Strings of len digits (leading zeros allowed) between a and b inclusive (a <= b).
static struct gx *fixed_width(struct sc *c, const char *a, const char *b, int len) {
    if (len == 0) return gx_empty(c->b);
    if (a[0] == b[0]) return gx_seq2(c->b, digits(c, a[0], a[0]), fixed_width(c, a + 1, b + 1, len - 1));
    bool a_zero = true, b_nine = true;
    for (int i = 1; i < len; i++) { a_zero &= a[i] == '0'; b_nine &= b[i] == '9'; }
    if (a_zero && b_nine) return gx_seq2(c->b, digits(c, a[0], b[0]), gx_rep(c->b, digits(c, '0', '9'), len - 1, len - 1));
    char nines[24], zeros[24];
    memset(nines, '9', sizeof(nines));
    memset(zeros, '0', sizeof(zeros));
    struct gx *alts[3];
    int na = 0;
    alts[na++] = gx_seq2(c->b, digits(c, a[0], a[0]), fixed_width(c, a + 1, nines, len - 1));
    if (a[0] + 1 <= b[0] - 1)
        alts[na++] = gx_seq2(c->b, digits(c, (char)(a[0] + 1), (char)(b[0] - 1)),
                             gx_rep(c->b, digits(c, '0', '9'), len - 1, len - 1));
    alts[na++] = gx_seq2(c->b, digits(c, b[0], b[0]), fixed_width(c, zeros, b + 1, len - 1));
    return gx_alt(c->b, na, alts);
}

// Non-negative integers in [a, b] without leading zeros; b < 0 means unbounded.
static struct gx *nonneg_range(struct sc *c, long long a, long long b) {
    char as[24], bs[24];
    int la = snprintf(as, sizeof(as), "%lld", a);
    int lb = b >= 0 ? snprintf(bs, sizeof(bs), "%lld", b) : la;
    struct gx *alts[24];
    int na = 0;
    for (int len = la; len <= lb; len++) {
        char lo[24], hi[24];
        if (len == la) memcpy(lo, as, 24);
        else { memset(lo, '0', (size_t)len); lo[0] = '1'; lo[len] = 0; }
        if (b >= 0 && len == lb) memcpy(hi, bs, 24);
        else { memset(hi, '9', (size_t)len); hi[len] = 0; }
        alts[na++] = fixed_width(c, lo, hi, len);
    }
    if (b < 0) // longer numbers: any value
        alts[na++] = gx_seq2(c->b, digits(c, '1', '9'), gx_rep(c->b, digits(c, '0', '9'), la, -1));
    return gx_alt(c->b, na, alts);
}

// Integers in [lo, hi]; has_lo/has_hi false = unbounded.
static struct gx *int_range(struct sc *c, bool has_lo, long long lo, bool has_hi, long long hi) {
    struct gx *alts[2];
    int na = 0;
    if (!has_lo || lo < 0) { // negatives: "-" then |x| in [max(1, -hi), -lo]
        long long a = has_hi && hi < 0 ? -hi : 1, b = has_lo ? -lo : -1;
        alts[na++] = gx_seq2(c->b, gx_byte(c->b, '-'), nonneg_range(c, a, b));
    }
    if (!has_hi || hi >= 0) {
        long long a = has_lo && lo > 0 ? lo : 0, b = has_hi ? hi : -1;
        alts[na++] = nonneg_range(c, a, b);
    }
    return gx_alt(c->b, na, alts);
}

// Reads a numeric bound; returns 0 (absent), 1 (present, *v set) or -1 (error).
static int bound(struct sc *c, json_t *s, const char *key, double *v) {
    json_t *j = json_object_get(s, key);
    if (!j) return 0;
    if (!json_is_number(j)) {
        gb_fail(c->b, "unsupported JSON Schema keyword value: '%s' must be a number", key);
        return -1;
    }
    *v = json_number_value(j);
    if (fabs(*v) > 1e15) { gb_fail(c->b, "unsupported JSON Schema bound: '%s' too large", key); return -1; }
    return 1;
}

struct gx *sc_integer(struct sc *c, json_t *s) {
    double mn, mx, emn, emx;
    int hmn = bound(c, s, "minimum", &mn), hmx = bound(c, s, "maximum", &mx);
    int hemn = bound(c, s, "exclusiveMinimum", &emn), hemx = bound(c, s, "exclusiveMaximum", &emx);
    if (hmn < 0 || hmx < 0 || hemn < 0 || hemx < 0) return gx_fail(c->b);
    bool has_lo = hmn || hemn, has_hi = hmx || hemx;
    long long lo = LLONG_MIN, hi = LLONG_MAX;
    if (hmn) lo = (long long)ceil(mn);
    if (hemn) { long long e = (long long)floor(emn) + 1; if (!hmn || e > lo) lo = e; }
    if (hmx) hi = (long long)floor(mx);
    if (hemx) { long long e = (long long)ceil(emx) - 1; if (!hmx || e < hi) hi = e; }
    if (has_lo && has_hi && lo > hi) {
        gb_fail(c->b, "JSON Schema: integer bounds admit no value");
        return gx_fail(c->b);
    }
    return int_range(c, has_lo, lo, has_hi, hi);
}

static struct gx *frac_any(struct sc *c) { return gx_rep(c->b, re(c, "\\.[0-9]+"), 0, 1); }

// Non-negative decimals y with lo <= y <= hi (hi < 0: unbounded), exclusivity per flag.
static struct gx *nonneg_decimal(struct sc *c, long long lo, long long hi, bool exlo, bool exhi) {
    struct gx *alts[3];
    int na = 0;
    if (hi >= 0 && lo == hi) {
        if (exlo || exhi) return gx_fail(c->b);
        return gx_seq2(c->b, nonneg_range(c, lo, lo), gx_rep(c->b, re(c, "\\.0+"), 0, 1));
    }
    long long a = exlo ? lo + 1 : lo; // integer parts with any fraction: [a, hi - 1]
    if (hi < 0 || a <= hi - 1) alts[na++] = gx_seq2(c->b, nonneg_range(c, a, hi < 0 ? -1 : hi - 1), frac_any(c));
    if (exlo) alts[na++] = gx_seq2(c->b, nonneg_range(c, lo, lo), re(c, "\\.[0-9]*[1-9][0-9]*"));
    if (hi >= 0 && !exhi) alts[na++] = gx_seq2(c->b, nonneg_range(c, hi, hi), gx_rep(c->b, re(c, "\\.0+"), 0, 1));
    return gx_alt(c->b, na, alts);
}

struct gx *sc_number(struct sc *c, json_t *s) {
    double mn = 0, mx = 0, emn = 0, emx = 0;
    int hmn = bound(c, s, "minimum", &mn), hmx = bound(c, s, "maximum", &mx);
    int hemn = bound(c, s, "exclusiveMinimum", &emn), hemx = bound(c, s, "exclusiveMaximum", &emx);
    if (hmn < 0 || hmx < 0 || hemn < 0 || hemx < 0) return gx_fail(c->b);
    if (!hmn && !hmx && !hemn && !hemx)
        return re(c, "-?(0|[1-9][0-9]{0,15})(\\.[0-9]{1,16})?([eE][+-]?[1-9][0-9]{0,2})?");
    double vals[4] = {mn, mx, emn, emx};
    int has[4] = {hmn, hmx, hemn, hemx};
    const char *names[4] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
    for (int i = 0; i < 4; i++)
        if (has[i] && vals[i] != floor(vals[i])) {
            gb_fail(c->b, "unsupported JSON Schema bound: non-integer '%s' on a number", names[i]);
            return gx_fail(c->b);
        }
    bool has_lo = hmn || hemn, has_hi = hmx || hemx, exlo = false, exhi = false;
    long long lo = 0, hi = 0;
    if (hmn) lo = (long long)mn;
    if (hemn && (!hmn || emn >= mn)) { lo = (long long)emn; exlo = true; }
    if (hmx) hi = (long long)mx;
    if (hemx && (!hmx || emx <= mx)) { hi = (long long)emx; exhi = true; }
    if (has_lo && has_hi && (lo > hi || (lo == hi && (exlo || exhi)))) {
        gb_fail(c->b, "JSON Schema: number bounds admit no value");
        return gx_fail(c->b);
    }
    struct gx *alts[2];
    int na = 0;
    if (!has_lo || lo < 0) { // negatives -y, y in (0 or hi's magnitude, |lo|]
        long long ylo = has_hi && hi < 0 ? -hi : 0, yhi = has_lo ? -lo : -1;
        bool yexlo = has_hi && hi < 0 ? exhi : true, yexhi = exlo;
        alts[na++] = gx_seq2(c->b, gx_byte(c->b, '-'), nonneg_decimal(c, ylo, yhi, yexlo, yexhi));
    }
    if (!has_hi || hi >= 0) {
        long long ylo = has_lo && lo > 0 ? lo : 0, yhi = has_hi ? hi : -1;
        bool yexlo = has_lo && lo >= 0 ? exlo : false;
        alts[na++] = nonneg_decimal(c, ylo, yhi, yexlo, exhi);
    }
    return gx_alt(c->b, na, alts);
}

// ---- any JSON ----
int sc_any_string(struct sc *c) {
    if (c->string_rule >= 0) return c->string_rule;
    c->string_rule = gb_rule(c->b, "#json-string");
    struct gx *q = gx_byte(c->b, '"');
    struct gx *k[3] = {q, gx_rep(c->b, sc_string_char(c), 0, -1), q};
    gb_define(c->b, c->string_rule, gx_seq(c->b, 3, k));
    return c->string_rule;
}

static struct gx *sep(struct sc *c, char ch) {
    struct gx *k[3] = {c->ws, gx_byte(c->b, (uint8_t)ch), c->ws};
    return gx_seq(c->b, 3, k);
}

int sc_any_object(struct sc *c) {
    if (c->any_object_rule >= 0) return c->any_object_rule;
    c->any_object_rule = gb_rule(c->b, "#json-object");
    int value = sc_any_value(c);
    struct gx *member[3] = {gx_ref(c->b, sc_any_string(c)), sep(c, ':'), gx_ref(c->b, value)};
    struct gx *m = gx_seq(c->b, 3, member);
    struct gx *more = gx_rep(c->b, gx_seq2(c->b, sep(c, ','), m), 0, -1);
    struct gx *k[5] = {gx_byte(c->b, '{'), c->ws, gx_rep(c->b, gx_seq2(c->b, m, more), 0, 1), c->ws,
                       gx_byte(c->b, '}')};
    gb_define(c->b, c->any_object_rule, gx_seq(c->b, 5, k));
    return c->any_object_rule;
}

int sc_any_value(struct sc *c) {
    if (c->any_rule >= 0) return c->any_rule;
    c->any_rule = gb_rule(c->b, "#json-value");
    int arr = gb_rule(c->b, "#json-array");
    struct gx *v = gx_ref(c->b, c->any_rule);
    struct gx *more = gx_rep(c->b, gx_seq2(c->b, sep(c, ','), v), 0, -1);
    struct gx *ak[5] = {gx_byte(c->b, '['), c->ws, gx_rep(c->b, gx_seq2(c->b, v, more), 0, 1), c->ws,
                        gx_byte(c->b, ']')};
    gb_define(c->b, arr, gx_seq(c->b, 5, ak));
    struct gx *alts[4] = {gx_ref(c->b, sc_any_object(c)), gx_ref(c->b, arr), gx_ref(c->b, sc_any_string(c)),
                          re(c, "-?(0|[1-9][0-9]{0,15})(\\.[0-9]{1,16})?([eE][+-]?[1-9][0-9]{0,2})?|true|false|null")};
    gb_define(c->b, c->any_rule, gx_alt(c->b, 4, alts));
    return c->any_rule;
}
