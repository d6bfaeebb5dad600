// Linear layers on the CPU: dense F32/F16/BF16 and GPTQ int4/int8 (see cpu_ops.h for the
// repacked layout). Few tokens: our own dot-product kernels read the stored weights directly
// (bandwidth bound); many tokens: weights are converted tile by tile to f32 for cblas_sgemm.
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__) && !defined(PG_NO_SIMD)
#include <immintrin.h>
#define CPU_AVX2 1
#endif

#include "backend/cpu/cpu_ops.h"

#define TILE_BYTES (4u << 20) // f32 weight tile handed to sgemm

// ---- dot kernels -------------------------------------------------------------------------
#ifdef CPU_AVX2
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
static inline __m256 load_bf16x8(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

// Converts n stored values (F32/F16/BF16) to f32.
static void row_to_f32(enum pg_dtype t, const void *w, float *dst, size_t n) {
    size_t i = 0;
#ifdef CPU_AVX2
    const uint16_t *p = w;
    if (t == PG_BF16)
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_bf16x8(p + i));
    else if (t == PG_F16)
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i))));
#endif
    if (t == PG_F32) memcpy(dst, w, n * sizeof *dst);
    else if (i < n) pg_to_f32(t, (const uint16_t *)w + i, dst + i, n - i);
}

#ifdef CPU_AVX2
static inline __m256 load_w8(enum pg_dtype t, const void *w, int i) {
    if (t == PG_F32) return _mm256_loadu_ps((const float *)w + i);
    if (t == PG_BF16) return load_bf16x8((const uint16_t *)w + i);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
}
#endif

static float dot_dense(enum pg_dtype t, const void *w, const float *x, int n) {
    int i = 0;
    float s = 0;
#ifdef CPU_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0; // independent FMA chains
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(load_w8(t, w, i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load_w8(t, w, i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(load_w8(t, w, i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(load_w8(t, w, i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_w8(t, w, i), _mm256_loadu_ps(x + i), a0);
    s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; i < n; i++) {
        float wi = t == PG_F32    ? ((const float *)w)[i]
                   : t == PG_BF16 ? pg_bf16_to_f32(((const uint16_t *)w)[i])
                                  : pg_f16_to_f32(((const uint16_t *)w)[i]);
        s += wi * x[i];
    }
    return s;
}

// One quantized value of a repacked row at sorted position j.
static inline int q_get(const uint8_t *row, int bits, int j) {
    if (bits == 8) return row[j];
    uint8_t b = row[(j >> 5) * 16 + (j & 15)];
    return (j & 16) ? b >> 4 : b & 15;
}

// sum_{j in [a, b)} q[j] * x[j] over a repacked row.
static float dot_q(const uint8_t *row, int bits, const float *x, int a, int b) {
    float s = 0;
    int j = a;
    for (; j < b && (j & 31); j++) s += (float)q_get(row, bits, j) * x[j];
#ifdef CPU_AVX2
    __m256 acc = _mm256_setzero_ps();
    if (bits == 4) {
        const __m128i m = _mm_set1_epi8(0x0f);
        for (; j + 32 <= b; j += 32) {
            __m128i v = _mm_loadu_si128((const __m128i *)(row + (j >> 5) * 16));
            __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
            __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
            __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
            __m256 f2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
            __m256 f3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
            acc = _mm256_fmadd_ps(f0, _mm256_loadu_ps(x + j), acc);
            acc = _mm256_fmadd_ps(f1, _mm256_loadu_ps(x + j + 8), acc);
            acc = _mm256_fmadd_ps(f2, _mm256_loadu_ps(x + j + 16), acc);
            acc = _mm256_fmadd_ps(f3, _mm256_loadu_ps(x + j + 24), acc);
        }
    } else {
        for (; j + 8 <= b; j += 8) {
            __m128i v = _mm_loadl_epi64((const __m128i *)(row + j));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), _mm256_loadu_ps(x + j), acc);
        }
    }
    s += hsum8(acc);
#endif
    for (; j < b; j++) s += (float)q_get(row, bits, j) * x[j];
    return s;
}

#ifdef CPU_AVX2
// sum_g scale[g] * sum_{j in g} q[j] x[j] over a whole row when every group boundary is a
// multiple of 32: four independent accumulators (FMA latency), one horizontal sum per row.
static float row_dot_q_aligned(const uint8_t *row, int bits, const float *x, const int32_t *gstart,
                               const float *sc, int ng) {
    __m256 tot = _mm256_setzero_ps();
    const __m128i m = _mm_set1_epi8(0x0f);
    for (int g = 0; g < ng; g++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = gstart[g]; j < gstart[g + 1]; j += 32) {
            __m128i lo, hi, l8, h8;
            if (bits == 4) {
                __m128i v = _mm_loadu_si128((const __m128i *)(row + (j >> 5) * 16));
                lo = _mm_and_si128(v, m);
                hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
                l8 = _mm_srli_si128(lo, 8);
                h8 = _mm_srli_si128(hi, 8);
            } else {
                lo = _mm_loadl_epi64((const __m128i *)(row + j));
                l8 = _mm_loadl_epi64((const __m128i *)(row + j + 8));
                hi = _mm_loadl_epi64((const __m128i *)(row + j + 16));
                h8 = _mm_loadl_epi64((const __m128i *)(row + j + 24));
            }
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(x + j), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(l8)), _mm256_loadu_ps(x + j + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(x + j + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(h8)), _mm256_loadu_ps(x + j + 24), a3);
        }
        __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        tot = _mm256_fmadd_ps(_mm256_set1_ps(sc[g]), acc, tot);
    }
    return hsum8(tot);
}
#endif

// ---- init ----------------------------------------------------------------------------------
static void repack_gptq(struct cpu_linear *cl, const struct linear *l) {
    int in = l->in, out = l->out, ng = l->n_groups, pack = 32 / l->bits;
    cl->bits = l->bits;
    cl->n_groups = ng;
    cl->in_pad = (in + 31) & ~31;
    cl->row_bytes = l->bits == 8 ? cl->in_pad : cl->in_pad / 2;
    cl->gstart = pg_calloc((size_t)ng + 1, sizeof *cl->gstart);
    for (int i = 0; i < in; i++) cl->gstart[l->g_idx[i] + 1]++;
    for (int g = 0; g < ng; g++) cl->gstart[g + 1] += cl->gstart[g];
    cl->aligned = true;
    for (int g = 0; g <= ng; g++) cl->aligned &= cl->gstart[g] % 32 == 0;
    int32_t *fill = pg_malloc((size_t)ng * sizeof *fill);
    memcpy(fill, cl->gstart, (size_t)ng * sizeof *fill);
    cl->perm = pg_malloc((size_t)cl->in_pad * sizeof *cl->perm);
    for (int j = in; j < cl->in_pad; j++) cl->perm[j] = -1;
    for (int i = 0; i < in; i++) cl->perm[fill[l->g_idx[i]]++] = i; // stable by group
    free(fill);
    cl->q = pg_calloc((size_t)out, (size_t)cl->row_bytes);
    const uint32_t *qw = (const uint32_t *)l->qweight;
    uint32_t mask = (1u << l->bits) - 1;
    int32_t *inv = pg_malloc((size_t)in * sizeof *inv); // original input -> sorted position
    for (int j = 0; j < in; j++) inv[cl->perm[j]] = j;
    enum { OB = 64 }; // output rows per block: qweight read row-wise, 64 destination rows hot
    bool identity = true;
    for (int j = 0; j < in && identity; j++) identity = cl->perm[j] == j;
    for (int o0 = 0; o0 < out; o0 += OB) {
        int o1 = o0 + OB < out ? o0 + OB : out;
        if (identity && l->bits == 4 && in % 32 == 0) { // common case: whole 32-input blocks
            for (int r = 0; r < in / 8; r += 4)
                for (int o = o0; o < o1; o++) {
                    uint32_t w0 = qw[(size_t)r * out + o], w1 = qw[(size_t)(r + 1) * out + o],
                             w2 = qw[(size_t)(r + 2) * out + o], w3 = qw[(size_t)(r + 3) * out + o];
                    uint8_t *b = cl->q + (size_t)o * cl->row_bytes + (r / 4) * 16;
                    for (int k = 0; k < 8; k++) { // byte k: inputs k and k+16; byte 8+k: 8+k and 24+k
                        b[k] = (uint8_t)(((w0 >> (4 * k)) & 15) | (((w2 >> (4 * k)) & 15) << 4));
                        b[8 + k] = (uint8_t)(((w1 >> (4 * k)) & 15) | (((w3 >> (4 * k)) & 15) << 4));
                    }
                }
            continue;
        }
        for (int r = 0; r < in / pack; r++)
            for (int o = o0; o < o1; o++) {
                uint32_t word = qw[(size_t)r * out + o];
                uint8_t *row = cl->q + (size_t)o * cl->row_bytes;
                for (int k = 0; k < pack; k++, word >>= l->bits) {
                    int j = inv[r * pack + k];
                    uint8_t v = (uint8_t)(word & mask);
                    if (l->bits == 8) row[j] = v;
                    else row[(j >> 5) * 16 + (j & 15)] |= (uint8_t)((j & 16) ? v << 4 : v);
                }
            }
    }
    free(inv);
    float *sc = pg_malloc((size_t)ng * out * sizeof *sc);
    pg_to_f32(l->scales.dtype, l->scales.data, sc, (size_t)ng * out);
    cl->scale = pg_malloc((size_t)ng * out * sizeof *cl->scale);
    cl->zs = pg_malloc((size_t)ng * out * sizeof *cl->zs);
    for (int g = 0; g < ng; g++)
        for (int o = 0; o < out; o++) {
            float s = sc[(size_t)g * out + o];
            cl->scale[(size_t)o * ng + g] = s;
            cl->zs[(size_t)o * ng + g] = s * (float)l->zeros[(size_t)g * out + o];
        }
    free(sc);
}

void cpu_linear_init(struct cpu_linear *cl, const struct linear *l) {
    memset(cl, 0, sizeof *cl);
    cl->in = l->in;
    cl->out = l->out;
    cl->quantized = l->quantized;
    if (l->quantized) {
        repack_gptq(cl, l);
    } else {
        cl->wdtype = l->w.dtype;
        cl->w = l->w.data;
    }
    if (l->bias.data) {
        cl->bias = pg_malloc((size_t)l->out * sizeof *cl->bias);
        pg_to_f32(l->bias.dtype, l->bias.data, cl->bias, (size_t)l->out);
    }
}

void cpu_linear_free(struct cpu_linear *cl) {
    free(cl->bias);
    free(cl->perm);
    free(cl->gstart);
    free(cl->q);
    free(cl->scale);
    free(cl->zs);
    memset(cl, 0, sizeof *cl);
}

// ---- row conversion ------------------------------------------------------------------------
// Quantized rows [r0, r1) dequantized in sorted order: dst (r1 - r0, in_pad).
static void q_rows_sorted(const struct cpu_linear *cl, int r0, int r1, float *dst) {
    for (int o = r0; o < r1; o++) {
        const uint8_t *row = cl->q + (size_t)o * cl->row_bytes;
        float *d = dst + (size_t)(o - r0) * cl->in_pad;
        memset(d, 0, (size_t)cl->in_pad * sizeof *d);
        for (int g = 0; g < cl->n_groups; g++) {
            float s = cl->scale[(size_t)o * cl->n_groups + g], z = cl->zs[(size_t)o * cl->n_groups + g];
            int j = cl->gstart[g];
#ifdef CPU_AVX2
            if (cl->aligned) {
                __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z);
                for (; j < cl->gstart[g + 1]; j += 8) {
                    __m128i v;
                    if (cl->bits == 8) {
                        v = _mm_loadl_epi64((const __m128i *)(row + j));
                    } else { // 8 nibbles of one half of a 32-block
                        __m128i b = _mm_loadl_epi64((const __m128i *)(row + (j >> 5) * 16 + (j & 15)));
                        v = (j & 16) ? _mm_srli_epi16(b, 4) : b;
                        v = _mm_and_si128(v, _mm_set1_epi8(0x0f));
                    }
                    __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                    _mm256_storeu_ps(d + j, _mm256_fmsub_ps(f, vs, vz));
                }
            }
#endif
            for (; j < cl->gstart[g + 1]; j++) d[j] = (float)q_get(row, cl->bits, j) * s - z;
        }
    }
}

void cpu_linear_rows_f32(const struct cpu_linear *cl, int r0, int r1, float *dst) {
    if (!cl->quantized) {
        size_t es = pg_dtype_size(cl->wdtype);
        row_to_f32(cl->wdtype, (const char *)cl->w + (size_t)r0 * cl->in * es, dst,
                   (size_t)(r1 - r0) * cl->in);
        return;
    }
    float *tmp = pg_malloc((size_t)cl->in_pad * sizeof *tmp);
    for (int o = r0; o < r1; o++) {
        q_rows_sorted(cl, o, o + 1, tmp);
        float *d = dst + (size_t)(o - r0) * cl->in;
        for (int j = 0; j < cl->in; j++) d[cl->perm[j]] = tmp[j];
    }
    free(tmp);
}

// ---- forward -------------------------------------------------------------------------------
struct lin_job {
    const struct cpu_linear *cl;
    const float *x;     // (n, k): input (dense) or gathered x' (quantized)
    const float *xsum;  // (n, n_groups) quantized only
    int n, k, rows_per_task, r0, r1; // r0/r1: the current tile's rows (tile path)
    float *y;           // (n, out)
    float *tile;        // tile path: (tile rows, k)
};

static void gemv_task(void *arg, int task) {
    const struct lin_job *j = arg;
    const struct cpu_linear *cl = j->cl;
    int r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > cl->out) r1 = cl->out;
    size_t es = cl->quantized ? 0 : pg_dtype_size(cl->wdtype);
    for (int o = r0; o < r1; o++) {
        for (int t = 0; t < j->n; t++) {
            const float *x = j->x + (size_t)t * j->k;
            float acc;
            if (!cl->quantized) {
                acc = dot_dense(cl->wdtype, (const char *)cl->w + (size_t)o * cl->in * es, x, cl->in);
            } else {
                const uint8_t *row = cl->q + (size_t)o * cl->row_bytes;
                const float *sc = cl->scale + (size_t)o * cl->n_groups, *zs = cl->zs + (size_t)o * cl->n_groups;
                const float *xs = j->xsum + (size_t)t * cl->n_groups;
                acc = 0;
#ifdef CPU_AVX2
                if (cl->aligned) {
                    acc = row_dot_q_aligned(row, cl->bits, x, cl->gstart, sc, cl->n_groups);
                    for (int g = 0; g < cl->n_groups; g++) acc -= zs[g] * xs[g];
                } else
#endif
                for (int g = 0; g < cl->n_groups; g++)
                    acc += sc[g] * dot_q(row, cl->bits, x, cl->gstart[g], cl->gstart[g + 1]) - zs[g] * xs[g];
            }
            j->y[(size_t)t * cl->out + o] = acc;
        }
    }
}

static void tile_task(void *arg, int task) {
    const struct lin_job *j = arg;
    const struct cpu_linear *cl = j->cl;
    int r0 = j->r0 + task * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->r1) r1 = j->r1;
    if (r0 >= r1) return;
    float *dst = j->tile + (size_t)(r0 - j->r0) * j->k;
    if (cl->quantized) q_rows_sorted(cl, r0, r1, dst);
    else cpu_linear_rows_f32(cl, r0, r1, dst);
}

static void forward_gemm(struct cpu_pool *p, struct lin_job *j) {
    const struct cpu_linear *cl = j->cl;
    if (!cl->quantized && cl->wdtype == PG_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, cl->out, cl->in, 1.0f, j->x,
                    j->k, cl->w, cl->in, 0.0f, j->y, cl->out);
        return;
    }
    int tile_rows = (int)(TILE_BYTES / ((size_t)j->k * sizeof(float)));
    if (tile_rows < 16) tile_rows = 16;
    if (tile_rows > cl->out) tile_rows = cl->out;
    j->tile = pg_malloc((size_t)tile_rows * j->k * sizeof(float));
    int nt = cpu_pool_size(p);
    j->rows_per_task = (tile_rows + nt - 1) / nt;
    for (int r0 = 0; r0 < cl->out; r0 += tile_rows) {
        int rows = cl->out - r0 < tile_rows ? cl->out - r0 : tile_rows;
        j->r0 = r0;
        j->r1 = r0 + rows;
        cpu_pool_run(p, (rows + j->rows_per_task - 1) / j->rows_per_task, tile_task, j);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, rows, j->k, 1.0f, j->x, j->k,
                    j->tile, j->k, 0.0f, j->y + r0, cl->out);
    }
    free(j->tile);
}

void cpu_linear_forward(struct cpu_pool *p, const struct cpu_linear *cl, const float *x, int n, float *y) {
    struct lin_job j = {.cl = cl, .x = x, .n = n, .k = cl->in, .y = y};
    float *xg = NULL, *xs = NULL;
    if (cl->quantized) { // gather inputs into sorted order; per-group sums for the zero term
        j.k = cl->in_pad;
        xg = pg_malloc((size_t)n * cl->in_pad * sizeof *xg);
        xs = pg_malloc((size_t)n * cl->n_groups * sizeof *xs);
        for (int t = 0; t < n; t++) {
            float *d = xg + (size_t)t * cl->in_pad;
            for (int k = 0; k < cl->in_pad; k++) d[k] = cl->perm[k] < 0 ? 0 : x[(size_t)t * cl->in + cl->perm[k]];
            for (int g = 0; g < cl->n_groups; g++) {
                float s = 0;
                for (int k = cl->gstart[g]; k < cl->gstart[g + 1]; k++) s += d[k];
                xs[(size_t)t * cl->n_groups + g] = s;
            }
        }
        j.x = xg;
        j.xsum = xs;
    }
    if (n < CPU_GEMM_MIN_TOKENS) {
        int nt = cpu_pool_size(p) * 8;
        j.rows_per_task = (cl->out + nt - 1) / nt;
        if (j.rows_per_task < 8) j.rows_per_task = 8;
        cpu_pool_run(p, (cl->out + j.rows_per_task - 1) / j.rows_per_task, gemv_task, &j);
    } else {
        forward_gemm(p, &j);
    }
    if (cl->bias)
        for (int t = 0; t < n; t++)
            for (int o = 0; o < cl->out; o++) y[(size_t)t * cl->out + o] += cl->bias[o];
    free(xg);
    free(xs);
}
