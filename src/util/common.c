#include "util/common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void pg_seterr(char *err, const char *fmt, ...) {
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, PG_ERR_LEN, fmt, ap);
    va_end(ap);
}

static enum pg_log_level g_log_level = PG_LOG_INFO; // process-wide setting, set once at startup

void pg_log_set_level(enum pg_log_level lvl) { g_log_level = lvl; }
enum pg_log_level pg_log_get_level(void) { return g_log_level; }

int pg_log_parse_level(const char *s, enum pg_log_level *out) {
    static const struct { const char *name; enum pg_log_level lvl; } t[] = {
        {"trace", PG_LOG_DEBUG}, {"debug", PG_LOG_DEBUG},    {"info", PG_LOG_INFO},
        {"warning", PG_LOG_WARN}, {"warn", PG_LOG_WARN},     {"error", PG_LOG_ERROR},
        {"critical", PG_LOG_ERROR},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(s, t[i].name) == 0) { *out = t[i].lvl; return 0; }
    return -1;
}

void pg_log(enum pg_log_level lvl, const char *fmt, ...) {
    if (lvl < g_log_level) return;
    static const char *names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    fprintf(stderr, "%s %02d-%02d %02d:%02d:%02d pagoda] %s\n", names[lvl], tm.tm_mon + 1,
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, msg);
}

_Noreturn void pg_fatal(const char *file, int line, const char *what) {
    fprintf(stderr, "pagoda: internal error at %s:%d: %s\n", file, line, what);
    abort();
}

void *pg_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) pg_fatal(__FILE__, __LINE__, "out of host memory");
    return p;
}

void *pg_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) pg_fatal(__FILE__, __LINE__, "out of host memory");
    return p;
}

void *pg_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) pg_fatal(__FILE__, __LINE__, "out of host memory");
    return q;
}

char *pg_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = pg_malloc(n);
    memcpy(d, s, n);
    return d;
}

double pg_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

size_t pg_dtype_size(enum pg_dtype t) {
    static const size_t sz[PG_DTYPE_COUNT] = {4, 2, 2, 4, 8, 1, 1, 1, 1};
    return (unsigned)t < PG_DTYPE_COUNT ? sz[t] : 0;
}

const char *pg_dtype_name(enum pg_dtype t) {
    static const char *nm[PG_DTYPE_COUNT] = {"F32", "F16", "BF16", "I32", "I64",
                                             "I8",  "U8",  "F8_E4M3", "F8_E5M2"};
    return (unsigned)t < PG_DTYPE_COUNT ? nm[t] : "?";
}

float pg_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t pg_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float pg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { // subnormal: renormalize
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t pg_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);          // NaN
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);         // overflow -> inf
    if (a < 0x38800000u) {                                          // subnormal or zero
        float af;
        memcpy(&af, &a, 4);
        uint32_t m = (uint32_t)lrintf(af * 16777216.0f);            // 2^24
        return (uint16_t)(sign | m);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);                      // round to nearest even
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

void pg_to_f32(enum pg_dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case PG_F32: memcpy(dst, src, n * 4); break;
    case PG_F16: for (size_t i = 0; i < n; i++) dst[i] = pg_f16_to_f32(((const uint16_t *)src)[i]); break;
    case PG_BF16: for (size_t i = 0; i < n; i++) dst[i] = pg_bf16_to_f32(((const uint16_t *)src)[i]); break;
    case PG_I32: for (size_t i = 0; i < n; i++) dst[i] = (float)((const int32_t *)src)[i]; break;
    default: PG_CHECK(!"pg_to_f32: unsupported dtype");
    }
}

char *pg_read_file(const char *path, size_t *len, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        pg_seterr(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            buf = pg_realloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        pg_seterr(err, "%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

bool pg_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

char *pg_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = pg_malloc(a + b + 2);
    memcpy(p, dir, a);
    size_t k = a;
    if (k && p[k - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}
