// Common definitions shared by every layer: dtypes, error buffers, logging, small helpers.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Every fallible function that a request or a user file can reach takes `char *err`
// (PG_ERR_LEN bytes, may be NULL) and returns 0 on success, -1 on failure with a one-line
// message in err. Nothing reachable from input aborts.
#define PG_ERR_LEN 512

void pg_seterr(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum pg_log_level { PG_LOG_DEBUG, PG_LOG_INFO, PG_LOG_WARN, PG_LOG_ERROR };
void pg_log_set_level(enum pg_log_level lvl);
enum pg_log_level pg_log_get_level(void);
int pg_log_parse_level(const char *s, enum pg_log_level *out); // "debug|info|warning|error|critical|trace"
void pg_log(enum pg_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define pg_info(...) pg_log(PG_LOG_INFO, __VA_ARGS__)
#define pg_warn(...) pg_log(PG_LOG_WARN, __VA_ARGS__)
#define pg_debug(...) pg_log(PG_LOG_DEBUG, __VA_ARGS__)
#define pg_error(...) pg_log(PG_LOG_ERROR, __VA_ARGS__)

// Broken internal invariant (never input-reachable): print file:line and abort.
#define PG_CHECK(cond)                                                                   \
    do {                                                                                 \
        if (!(cond)) pg_fatal(__FILE__, __LINE__, #cond);                                \
    } while (0)
_Noreturn void pg_fatal(const char *file, int line, const char *what);

// Allocation that aborts on OOM (host memory exhaustion is not a request error).
void *pg_malloc(size_t n);
void *pg_calloc(size_t n, size_t size);
void *pg_realloc(void *p, size_t n);
char *pg_strdup(const char *s);

double pg_now(void); // monotonic seconds

// Element types of tensors, as stored on disk and in memory.
enum pg_dtype {
    PG_F32 = 0,
    PG_F16,
    PG_BF16,
    PG_I32,
    PG_I64,
    PG_I8,
    PG_U8,
    PG_F8_E4M3,
    PG_F8_E5M2,
    PG_DTYPE_COUNT
};
size_t pg_dtype_size(enum pg_dtype t);
const char *pg_dtype_name(enum pg_dtype t);

// Scalar conversions (round-to-nearest-even where narrowing).
float pg_bf16_to_f32(uint16_t h);
uint16_t pg_f32_to_bf16(float f);
float pg_f16_to_f32(uint16_t h);
uint16_t pg_f32_to_f16(float f);
// Converts n elements of type t at src to f32 at dst.
void pg_to_f32(enum pg_dtype t, const void *src, float *dst, size_t n);

// Reads a whole file into a NUL-terminated malloc'd buffer; *len gets the size (excl. NUL).
// Returns NULL and sets err on failure. Caller frees.
char *pg_read_file(const char *path, size_t *len, char *err);
bool pg_file_exists(const char *path);
// Joins dir and name into a malloc'd path. Caller frees.
char *pg_path_join(const char *dir, const char *name);
