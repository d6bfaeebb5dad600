// Normalization, RoPE, SwiGLU and paged attention on the CPU (f32 math).
#include <math.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__) && !defined(PG_NO_SIMD)
#include <immintrin.h>
#define ATTN_AVX2 1
#endif

#include "backend/cpu/cpu_ops.h"

#define ATTN_CHUNK 64 // keys scored at once before the online-softmax rescale

void cpu_rmsnorm(float *out, const float *x, const float *w, int n, int dim, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * dim;
        float *o = out + (size_t)t * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float r = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int i = 0; i < dim; i++) o[i] = xr[i] * r * w[i];
    }
}

void cpu_rope(float *x, int n, int n_heads, int head_dim, const int32_t *pos, float theta) {
    int half = head_dim / 2;
    float cs[512], sn[512]; // head_dim <= 1024 (checked at init)
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < half; i++) { // as transformers: f32 inv_freq, f32 angle
            float inv = (float)(1.0 / pow((double)theta, (double)(2 * i) / head_dim));
            float a = (float)pos[t] * inv;
            cs[i] = cosf(a);
            sn[i] = sinf(a);
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void cpu_silu_mul(float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void cpu_embed_row(const struct tensor *embed, int64_t id, int dim, float *out) {
    size_t es = pg_dtype_size(embed->dtype);
    pg_to_f32(embed->dtype, (const char *)embed->data + (size_t)id * dim * es, out, (size_t)dim);
}

// Address of the cache row of (position, kv head) in K or V.
static inline size_t kv_index(const struct cpu_kv_layer *kv, const int32_t *bt, int pos, int h) {
    size_t blk = (size_t)bt[pos / kv->block_size];
    return ((blk * kv->n_kv + h) * kv->block_size + pos % kv->block_size) * kv->head_dim;
}

static void kv_store(const struct cpu_kv_layer *kv, void *base, size_t idx, const float *src) {
    if (kv->dtype == PG_F32) {
        memcpy((float *)base + idx, src, (size_t)kv->head_dim * sizeof(float));
    } else {
        uint16_t *d = (uint16_t *)base + idx;
        for (int i = 0; i < kv->head_dim; i++) d[i] = pg_f32_to_bf16(src[i]);
    }
}

static void kv_load(const struct cpu_kv_layer *kv, const void *base, size_t idx, float *dst) {
    if (kv->dtype == PG_F32) memcpy(dst, (const float *)base + idx, (size_t)kv->head_dim * sizeof(float));
    else pg_to_f32(PG_BF16, (const uint16_t *)base + idx, dst, (size_t)kv->head_dim);
}

// A cache row as f32: a pointer into the cache (f32) or into tmp after conversion (bf16).
static inline const float *kv_row(const struct cpu_kv_layer *kv, const void *base, size_t idx, float *tmp) {
    if (kv->dtype == PG_F32) return (const float *)base + idx;
    kv_load(kv, base, idx, tmp);
    return tmp;
}

void cpu_kv_write(const struct cpu_kv_layer *kv, const int32_t *block_table, int pos0, int n,
                  const float *k, const float *v) {
    for (int t = 0; t < n; t++)
        for (int h = 0; h < kv->n_kv; h++) {
            size_t idx = kv_index(kv, block_table, pos0 + t, h);
            size_t src = ((size_t)t * kv->n_kv + h) * kv->head_dim;
            kv_store(kv, kv->k, idx, k + src);
            kv_store(kv, kv->v, idx, v + src);
        }
}

static inline float vdot(const float *a, const float *b, int n) {
    int i = 0;
    float s = 0;
#ifdef ATTN_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
    }
    __m256 t = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    s = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

// y = y * r + e * x
static inline void vscale_add(float *y, float r, float e, const float *x, int n) {
    int i = 0;
#ifdef ATTN_AVX2
    __m256 vr = _mm256_set1_ps(r), ve = _mm256_set1_ps(e);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(ve, _mm256_loadu_ps(x + i), _mm256_mul_ps(vr, _mm256_loadu_ps(y + i))));
#endif
    for (; i < n; i++) y[i] = y[i] * r + e * x[i];
}

struct attn_job {
    const struct cpu_kv_layer *kv;
    const int32_t *bt;
    int pos0, n_heads;
    const float *q;
    float *out;
};

static void attn_task(void *arg, int task) {
    const struct attn_job *j = arg;
    const struct cpu_kv_layer *kv = j->kv;
    int t = task / j->n_heads, h = task % j->n_heads, hd = kv->head_dim;
    int kvh = h / (j->n_heads / kv->n_kv), n_keys = j->pos0 + t + 1;
    const float *q = j->q + ((size_t)t * j->n_heads + h) * hd;
    float *o = j->out + ((size_t)t * j->n_heads + h) * hd;
    float scale = 1.0f / sqrtf((float)hd), m = -INFINITY, l = 0;
    float s[ATTN_CHUNK], row[1024];
    memset(o, 0, (size_t)hd * sizeof *o);
    for (int c0 = 0; c0 < n_keys; c0 += ATTN_CHUNK) {
        int c1 = c0 + ATTN_CHUNK < n_keys ? c0 + ATTN_CHUNK : n_keys;
        float cm = -INFINITY;
        for (int p = c0; p < c1; p++) {
            s[p - c0] = vdot(q, kv_row(kv, kv->k, kv_index(kv, j->bt, p, kvh), row), hd) * scale;
            if (s[p - c0] > cm) cm = s[p - c0];
        }
        float mn = cm > m ? cm : m, r = expf(m - mn);
        l *= r;
        for (int p = c0; p < c1; p++) {
            float e = expf(s[p - c0] - mn);
            l += e;
            vscale_add(o, p == c0 ? r : 1.0f, e, kv_row(kv, kv->v, kv_index(kv, j->bt, p, kvh), row), hd);
        }
        m = mn;
    }
    for (int i = 0; i < hd; i++) o[i] /= l;
}

void cpu_attention(struct cpu_pool *p, const struct cpu_kv_layer *kv, const int32_t *block_table,
                   int pos0, int n, int n_heads, const float *q, float *out) {
    struct attn_job j = {kv, block_table, pos0, n_heads, q, out};
    cpu_pool_run(p, n * n_heads, attn_task, &j);
}
