// CPU per-op kernels against plain reference loops: dense F32/F16/BF16 and GPTQ int4/int8
// linears (decode kernels and the sgemm tile path; odd sizes, partial and shuffled groups),
// paged attention with scattered blocks, RMSNorm.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/cpu/cpu_ops.h"
#include "backend/sampling.h"

static uint64_t rng_state = 12345;
static float frand(void) { // uniform [-1, 1)
    rng_state = pg_mix64(rng_state);
    return (float)(rng_state >> 40) / 8388608.0f - 1.0f;
}
static uint32_t urand(void) {
    rng_state = pg_mix64(rng_state);
    return (uint32_t)(rng_state >> 32);
}

static struct cpu_pool *pool;

static int setup(void **state) {
    (void)state;
    pool = cpu_pool_new(2);
    return 0;
}
static int teardown(void **state) {
    (void)state;
    cpu_pool_free(pool);
    return 0;
}

// y = x W^T with W from linear_to_f32, in double.
static void ref_linear(const struct linear *l, const float *x, int n, float *y) {
    float *w = pg_malloc((size_t)l->in * l->out * sizeof *w);
    linear_to_f32(l, w);
    for (int t = 0; t < n; t++)
        for (int o = 0; o < l->out; o++) {
            double s = 0;
            if (l->bias.data) s = ((const float *)l->bias.data)[o];
            for (int i = 0; i < l->in; i++) s += (double)w[(size_t)o * l->in + i] * x[(size_t)t * l->in + i];
            y[(size_t)t * l->out + o] = (float)s;
        }
    free(w);
}

static void check_linear(const struct linear *l, const char *what) {
    struct cpu_linear cl;
    cpu_linear_init(&cl, l);
    int ns[] = {1, 2, 3, 4, 9};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int n = ns[k];
        float *x = pg_malloc((size_t)n * l->in * sizeof *x), *y = pg_malloc((size_t)n * l->out * sizeof *y),
              *r = pg_malloc((size_t)n * l->out * sizeof *r);
        for (int i = 0; i < n * l->in; i++) x[i] = frand();
        cpu_linear_forward(pool, &cl, x, n, y);
        ref_linear(l, x, n, r);
        double md = 0, mr = 0;
        for (int i = 0; i < n * l->out; i++) {
            md = fmax(md, fabs((double)y[i] - r[i]));
            mr = fmax(mr, fabs((double)r[i]));
        }
        if (md > 1e-5 * mr) fail_msg("%s n=%d: max diff %.3g (max %.3g)", what, n, md, mr);
        free(x), free(y), free(r);
    }
    // rows in original order equal linear_to_f32's
    float *a = pg_malloc((size_t)l->in * l->out * sizeof *a), *b = pg_malloc((size_t)l->in * 3 * sizeof *b);
    linear_to_f32(l, a);
    cpu_linear_rows_f32(&cl, 5, 8, b);
    assert_memory_equal(a + (size_t)5 * l->in, b, (size_t)3 * l->in * sizeof *b);
    free(a), free(b);
    cpu_linear_free(&cl);
}

static void test_dense(void **state) {
    (void)state;
    enum pg_dtype ts[] = {PG_F32, PG_F16, PG_BF16, PG_F32, PG_F16, PG_BF16};
    for (int k = 0; k < 6; k++) { // 75 x 37: vector tails; 4100 x 600: several sgemm tiles
        int in = k < 3 ? 75 : 4100, out = k < 3 ? 37 : 600;
        struct linear l = {.in = in, .out = out};
        size_t es = pg_dtype_size(ts[k]);
        uint8_t *w = pg_malloc((size_t)in * out * es);
        for (int i = 0; i < in * out; i++) {
            float v = frand();
            if (ts[k] == PG_F32) ((float *)w)[i] = v;
            else if (ts[k] == PG_F16) ((uint16_t *)w)[i] = pg_f32_to_f16(v);
            else ((uint16_t *)w)[i] = pg_f32_to_bf16(v);
        }
        float *bias = pg_malloc((size_t)out * sizeof *bias);
        for (int i = 0; i < out; i++) bias[i] = frand();
        l.w = (struct tensor){ts[k], 2, {out, in}, w};
        l.bias = (struct tensor){PG_F32, 1, {out}, bias};
        check_linear(&l, pg_dtype_name(ts[k]));
        free(w);
        free(bias);
    }
}

// A random GPTQ linear in the loader's canonical form.
static void gptq_case(int bits, int in, int out, int group, bool shuffle) {
    int pack = 32 / bits, gs = group < 0 ? in : group, ng = (in + gs - 1) / gs;
    struct linear l = {.in = in, .out = out, .quantized = true, .bits = bits, .group_size = gs, .n_groups = ng};
    int32_t *qw = pg_calloc((size_t)in / pack * out, sizeof *qw), *g = pg_malloc((size_t)in * sizeof *g);
    uint8_t *z = pg_malloc((size_t)ng * out);
    uint16_t *sc = pg_malloc((size_t)ng * out * sizeof *sc);
    for (int i = 0; i < in; i++) g[i] = i / gs;
    if (shuffle)
        for (int i = in - 1; i > 0; i--) {
            int j = (int)(urand() % (uint32_t)(i + 1)), t = g[i];
            g[i] = g[j], g[j] = t;
        }
    for (int i = 0; i < in; i++)
        for (int o = 0; o < out; o++)
            ((uint32_t *)qw)[(size_t)(i / pack) * out + o] |= (urand() & ((1u << bits) - 1)) << (bits * (i % pack));
    for (int k = 0; k < ng * out; k++) {
        z[k] = (uint8_t)(urand() & ((1u << bits) - 1));
        sc[k] = pg_f32_to_f16(0.01f + 0.05f * fabsf(frand()));
    }
    l.qweight = qw;
    l.zeros = z;
    l.scales = (struct tensor){PG_F16, 2, {ng, out}, sc};
    l.g_idx = g;
    l.desc_act = shuffle;
    char what[64];
    snprintf(what, sizeof what, "gptq int%d in %d out %d group %d%s", bits, in, out, group, shuffle ? " shuffled" : "");
    check_linear(&l, what);
    free(qw), free(g), free(z), free(sc);
}

static void test_gptq(void **state) {
    (void)state;
    gptq_case(4, 256, 40, 128, false);
    gptq_case(4, 256, 40, 32, true);
    gptq_case(4, 200, 16, 64, false); // partial last group, padded row
    gptq_case(4, 136, 24, -1, false);
    gptq_case(8, 256, 40, 64, false);
    gptq_case(8, 100, 12, 32, true);
    gptq_case(4, 64, 8, 24, true); // groups not aligned to 32: scalar edges
    gptq_case(4, 4352, 520, 128, false); // several sgemm tiles
}

// Paged attention vs a contiguous reference, with out-of-order blocks.
static void test_attention(void **state) {
    (void)state;
    int bs = 4, nkv = 2, nh = 6, hd = 8, pos0 = 9, n = 5, total = pos0 + n, nb = 16;
    enum pg_dtype dts[] = {PG_F32, PG_BF16};
    for (int di = 0; di < 2; di++) {
        size_t es = pg_dtype_size(dts[di]), row = (size_t)nkv * bs * hd;
        void *k = pg_calloc((size_t)nb * row, es), *v = pg_calloc((size_t)nb * row, es);
        struct cpu_kv_layer kv = {k, v, dts[di], bs, nkv, hd};
        int32_t bt[4] = {13, 2, 7, 0};
        float *K = pg_malloc((size_t)total * nkv * hd * sizeof *K), *Vv = pg_malloc((size_t)total * nkv * hd * sizeof *Vv);
        for (int i = 0; i < total * nkv * hd; i++) {
            K[i] = frand();
            Vv[i] = frand();
            if (dts[di] == PG_BF16) K[i] = pg_bf16_to_f32(pg_f32_to_bf16(K[i])), Vv[i] = pg_bf16_to_f32(pg_f32_to_bf16(Vv[i]));
        }
        cpu_kv_write(&kv, bt, 0, pos0, K, Vv); // the cached prefix, then the new tokens
        cpu_kv_write(&kv, bt, pos0, n, K + (size_t)pos0 * nkv * hd, Vv + (size_t)pos0 * nkv * hd);
        float *q = pg_malloc((size_t)n * nh * hd * sizeof *q), *o = pg_malloc((size_t)n * nh * hd * sizeof *o);
        for (int i = 0; i < n * nh * hd; i++) q[i] = 2 * frand();
        cpu_attention(pool, &kv, bt, pos0, n, nh, q, o);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < nh; h++) {
                int kh = h / (nh / nkv), nk = pos0 + t + 1;
                double s[32], mx = -1e30, z = 0;
                for (int p = 0; p < nk; p++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += (double)q[((size_t)t * nh + h) * hd + i] * K[((size_t)p * nkv + kh) * hd + i];
                    s[p] = d / sqrt(hd);
                    mx = fmax(mx, s[p]);
                }
                for (int p = 0; p < nk; p++) z += s[p] = exp(s[p] - mx);
                for (int i = 0; i < hd; i++) {
                    double r = 0;
                    for (int p = 0; p < nk; p++) r += s[p] / z * Vv[((size_t)p * nkv + kh) * hd + i];
                    assert_float_equal(o[((size_t)t * nh + h) * hd + i], r, 1e-5);
                }
            }
        free(k), free(v), free(K), free(Vv), free(q), free(o);
    }
}

static void test_rmsnorm_silu(void **state) {
    (void)state;
    float x[6] = {1, -2, 3, 0.5f, 0.5f, 0.5f}, w[3] = {1, 2, 0.5f}, o[6];
    cpu_rmsnorm(o, x, w, 2, 3, 0);
    float r = sqrtf((1 + 4 + 9) / 3.0f);
    assert_float_equal(o[1], -2 / r * 2, 1e-6);
    assert_float_equal(o[5], 0.5f, 1e-6);
    float g[2] = {0, 2}, u[2] = {3, 4};
    cpu_silu_mul(g, u, 2);
    assert_float_equal(g[0], 0, 1e-7);
    assert_float_equal(g[1], 2 / (1 + expf(-2)) * 4, 1e-6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_gptq),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_rmsnorm_silu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
