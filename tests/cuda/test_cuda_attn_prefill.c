// GPU tests of the prefill attention (cu_attn_prefill, attn_prefill.cu) against a float64 CPU
// reference: full and chunked prefill (queries starting at pos0 = len - n_new, pos0 not a
// multiple of the tile or the block size), 1 / 63 / 64 / 65 / 200 new tokens, head_dim 64 and
// 128, GQA groups 1, 5, 7 and 8, bf16 / e4m3 / e5m2 caches, block sizes 8, 16 and 32, cache
// slots outside the sequences poisoned with NaN; and bit-identical repeated runs.
#include "attn_prefill_util.h"

// out: (T, nh, hd) reference for every new token of every sequence.
static void pf_reference(const struct pf_setup *s, double *out) {
    const struct pf_case *c = &s->c;
    const int hd = c->hd, G = c->nh / c->nkv;
    for (int i = 0; i < c->n; i++) {
        const int len = c->len[i];
        double *kf = pg_malloc(sizeof(double) * len * c->nkv * hd), *vf = pg_malloc(sizeof(double) * len * c->nkv * hd);
        double *sc = pg_malloc(sizeof(double) * len);
        for (int j = 0; j < len; j++) {
            int blk = s->bt[i * s->bt_stride + j / c->bs];
            for (int h = 0; h < c->nkv; h++)
                for (int d = 0; d < hd; d++) {
                    size_t ci = (((size_t)blk * c->nkv + h) * c->bs + j % c->bs) * hd + d, o = ((size_t)j * c->nkv + h) * hd + d;
                    kf[o] = pf_kv_get(s, s->kc, ci);
                    vf[o] = pf_kv_get(s, s->vc, ci);
                }
        }
        for (int t = 0; t < c->nnew[i]; t++) {
            const int pos = len - c->nnew[i] + t, tok = s->q0[i] + t;
            for (int h = 0; h < c->nh; h++) {
                const uint16_t *q = s->q + ((size_t)tok * c->nh + h) * hd;
                double mx = -1e300, z = 0, *o = out + ((size_t)tok * c->nh + h) * hd;
                for (int j = 0; j <= pos; j++) {
                    const double *k = kf + ((size_t)j * c->nkv + h / G) * hd;
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += (double)bf(q[e]) * k[e];
                    sc[j] = d / sqrt((double)hd);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int e = 0; e < hd; e++) o[e] = 0;
                for (int j = 0; j <= pos; j++) {
                    const double p = exp(sc[j] - mx), *v = vf + ((size_t)j * c->nkv + h / G) * hd;
                    z += p;
                    for (int e = 0; e < hd; e++) o[e] += p * v[e];
                }
                for (int e = 0; e < hd; e++) o[e] /= z;
            }
        }
        free(kf), free(vf), free(sc);
    }
}

static void run_case(const struct pf_case *c) {
    struct pf_setup s;
    pf_setup_init(&s, c, true);
    const size_t qn = (size_t)s.T * c->nh * c->hd;
    pf_run(&s, 0);
    uint16_t *out = pg_malloc(qn * 2);
    to_host(out, s.dout, qn * 2);
    double *ref = pg_malloc(sizeof(double) * qn);
    pf_reference(&s, ref);
    char name[160];
    int o = snprintf(name, sizeof name, "prefill %dq/%dkv hd%d kv%d bs%d (len/new", c->nh, c->nkv, c->hd, c->kv_type, c->bs);
    for (int i = 0; i < c->n && o < (int)sizeof name - 16; i++) o += snprintf(name + o, sizeof name - o, " %d/%d", c->len[i], c->nnew[i]);
    snprintf(name + o, sizeof name - o, ")");
    CHECK_ERR(name, rel_err_bf16(out, ref, qn), 1.5e-2);
    // every row on its own too: a wrong row hides in the global norm
    double worst = 0;
    for (int t = 0; t < s.T; t++)
        for (int h = 0; h < c->nh; h++) {
            double e = rel_err_bf16(out + ((size_t)t * c->nh + h) * c->hd, ref + ((size_t)t * c->nh + h) * c->hd, c->hd);
            if (e > worst) worst = e;
        }
    printf("    worst row rel err %.3e (tol 5e-2)\n", worst);
    assert_true(worst <= 5e-2);
    free(out), free(ref);
    pf_setup_free(&s);
}

#define CASE(...) do { struct pf_case c_ = __VA_ARGS__; run_case(&c_); } while (0)

static void test_prefill_full(void **state) {
    (void)state;
    // whole prompts (pos0 = 0): 1, 63, 64, 65, 200 tokens
    CASE((struct pf_case){5, 8, 8, 128, CU_KV_BF16, 16, {1, 63, 64, 65, 200}, {1, 63, 64, 65, 200}});
    CASE((struct pf_case){5, 10, 2, 64, CU_KV_BF16, 32, {200, 1, 65, 64, 63}, {200, 1, 65, 64, 63}});
}

static void test_prefill_chunked(void **state) {
    (void)state;
    // cached prefixes: pos0 = 100, 12, 128, 937, 0, 45
    CASE((struct pf_case){6, 10, 2, 128, CU_KV_BF16, 32, {300, 77, 129, 1000, 64, 245}, {200, 65, 1, 63, 64, 200}});
    CASE((struct pf_case){5, 14, 2, 64, CU_KV_E4M3, 16, {65, 500, 203, 1, 130}, {65, 200, 63, 1, 64}});
    CASE((struct pf_case){4, 16, 2, 128, CU_KV_E5M2, 32, {200, 333, 101, 70}, {200, 64, 37, 1}});
    CASE((struct pf_case){3, 8, 1, 64, CU_KV_BF16, 8, {1500, 97, 260}, {130, 96, 65}});
    CASE((struct pf_case){3, 5, 1, 128, CU_KV_E4M3, 16, {1100, 64, 333}, {200, 63, 65}});
    CASE((struct pf_case){2, 8, 8, 64, CU_KV_E5M2, 16, {90, 400}, {65, 199}});
    CASE((struct pf_case){2, 7, 1, 128, CU_KV_BF16, 16, {700, 129}, {129, 65}});
}

static void test_prefill_deterministic(void **state) {
    (void)state;
    const struct pf_case cs[2] = {{3, 10, 2, 128, CU_KV_BF16, 16, {1000, 333, 64}, {300, 100, 64}},
                                  {2, 14, 2, 64, CU_KV_E4M3, 32, {900, 77}, {257, 77}}};
    for (int k = 0; k < 2; k++) {
        struct pf_setup s;
        pf_setup_init(&s, &cs[k], false);
        const size_t qn = (size_t)s.T * cs[k].nh * cs[k].hd;
        uint16_t *a = pg_malloc(qn * 2), *b = pg_malloc(qn * 2);
        pf_run(&s, 0);
        to_host(a, s.dout, qn * 2);
        assert_int_equal(cudaMemset(s.dout, 0xff, qn * 2), cudaSuccess);
        pf_run(&s, 0);
        to_host(b, s.dout, qn * 2);
        printf("  prefill determinism case %d: %s\n", k, memcmp(a, b, qn * 2) ? "DIFFERENT" : "bit-identical");
        assert_memory_equal(a, b, qn * 2);
        free(a), free(b);
        pf_setup_free(&s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_full),
        cmocka_unit_test(test_prefill_chunked),
        cmocka_unit_test(test_prefill_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
