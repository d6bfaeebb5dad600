// GPU test of the tensor-core GPTQ int4 GEMM (cu_gptq_mma) against a float64 host reference
// y = x . dequant(W)^T + bias, with dequant(W)[o][i] = (q - zero) * fp16 scale.
// Tolerance: relative L2 error 1e-2 over the checked entries (bf16 output rounding alone gives
// ~2e-3; the kernel rounds nothing else: weights (q - z) are exact in bf16, scales applied in
// f32). To keep the host reference fast, the full output is compared on the first and last 256
// columns and every 13th column in between; every other column is checked to be finite
// (outputs are poisoned with 0xff = NaN first) and the padding [out, ldy) to be untouched.
// Determinism: a second run into a freshly poisoned buffer must be bit-identical.
#include "cuda_test_util.h"

struct qlin {
    int in, out, gs;
    int32_t *qw;
    uint32_t *sz;
    float *bias;
    void *dqw, *dsz, *db;
};

static void qlin_make(struct qlin *q, int in, int out, int gs, bool sym) {
    const int ng = in / gs;
    q->in = in, q->out = out, q->gs = gs;
    q->qw = pg_malloc(sizeof(int32_t) * (size_t)(in / 8) * out);
    q->sz = pg_malloc(sizeof(uint32_t) * (size_t)ng * out);
    q->bias = pg_malloc(sizeof(float) * out);
    for (size_t i = 0; i < (size_t)(in / 8) * out; i++) q->qw[i] = (int32_t)urand();
    for (size_t i = 0; i < (size_t)ng * out; i++)
        q->sz[i] = pg_f32_to_f16(0.002f + 0.01f * (frand() + 1)) | ((sym ? 8u : 1 + urand() % 16) << 16);
    for (int o = 0; o < out; o++) q->bias[o] = frand();
    q->dqw = dup_to_dev(q->qw, sizeof(int32_t) * (size_t)(in / 8) * out);
    q->dsz = dup_to_dev(q->sz, sizeof(uint32_t) * (size_t)ng * out);
    q->db = dup_to_dev(q->bias, sizeof(float) * out);
}

static void qlin_free(struct qlin *q) {
    cudaFree(q->dqw), cudaFree(q->dsz), cudaFree(q->db);
    free(q->qw), free(q->sz), free(q->bias);
}

static bool checked_col(int o, int out) { return o < 256 || o >= out - 256 || o % 13 == 0; }

// Dequantized W^T column o (in doubles) into wcol[in].
static void dequant_col(const struct qlin *q, int o, double *wcol) {
    for (int i = 0; i < q->in; i++) {
        uint32_t g = q->sz[(size_t)(i / q->gs) * q->out + o];
        int v = (q->qw[(size_t)(i / 8) * q->out + o] >> (4 * (i % 8))) & 15;
        wcol[i] = (v - (double)(g >> 16)) * pg_f16_to_f32((uint16_t)(g & 0xffff));
    }
}

static void run_mma(const struct qlin *q, const struct cu_gptq *l, const void *dx, int M, bool bias, int ldy,
                    uint16_t *y) {
    bf16_t *dy = dmalloc((size_t)M * ldy * 2);
    float *scr = dmalloc(sizeof(float) * cu_gptq_mma_scratch_floats(l, M));
    cu_gptq_mma(l, dx, M, bias ? q->db : NULL, dy, ldy, scr, 0);
    to_host(y, dy, (size_t)M * ldy * 2);
    cudaFree(dy), cudaFree(scr);
}

static void check_case(const struct qlin *q, int M, bool bias) {
    struct cu_gptq l = {q->in, q->out, q->gs, q->in / q->gs, q->dqw, q->dsz};
    const int in = q->in, out = q->out, ldy = out + 24;
    uint16_t *x = rand_bf16((size_t)M * in, 1.0f);
    void *dx = dup_to_dev(x, (size_t)M * in * 2);
    uint16_t *y = pg_malloc((size_t)M * ldy * 2), *y2 = pg_malloc((size_t)M * ldy * 2);
    run_mma(q, &l, dx, M, bias, ldy, y);
    run_mma(q, &l, dx, M, bias, ldy, y2);
    assert_int_equal(memcmp(y, y2, (size_t)M * ldy * 2), 0);  // deterministic

    double *xd = pg_malloc(sizeof(double) * (size_t)M * in), *wcol = pg_malloc(sizeof(double) * in);
    for (size_t i = 0; i < (size_t)M * in; i++) xd[i] = bf(x[i]);
    size_t n = 0, cap = (size_t)M * out;
    double *ref = pg_malloc(sizeof(double) * cap);
    float *got = pg_malloc(sizeof(float) * cap);
    size_t not_finite = 0, pad_touched = 0;
    for (int o = 0; o < out; o++) {
        if (!checked_col(o, out)) {
            for (int m = 0; m < M; m++) not_finite += !isfinite(bf(y[(size_t)m * ldy + o]));
            continue;
        }
        dequant_col(q, o, wcol);
        for (int m = 0; m < M; m++) {
            double a = bias ? q->bias[o] : 0;
            const double *xr = xd + (size_t)m * in;
            for (int i = 0; i < in; i++) a += xr[i] * wcol[i];
            ref[n] = a;
            got[n++] = bf(y[(size_t)m * ldy + o]);
        }
    }
    for (int m = 0; m < M; m++)
        for (int o = out; o < ldy; o++) pad_touched += y[(size_t)m * ldy + o] != 0xffff;
    char name[96];
    snprintf(name, sizeof name, "gptq mma %dx%d g%d M=%d%s", in, out, q->gs, M, bias ? " bias" : "");
    assert_int_equal(not_finite, 0);
    assert_int_equal(pad_touched, 0);
    CHECK_ERR(name, rel_err_f(got, ref, n), 1e-2);
    cudaFree(dx);
    free(x), free(y), free(y2), free(xd), free(wcol), free(ref), free(got);
}

static const int k_rows[] = {1, 3, 8, 9, 16, 17, 33, 64, 100, 256};

static void run_shape(int in, int out, int gs, bool sym) {
    struct qlin q;
    qlin_make(&q, in, out, gs, sym);
    for (size_t i = 0; i < sizeof k_rows / sizeof k_rows[0]; i++) check_case(&q, k_rows[i], i % 2 == 0);
    qlin_free(&q);
}

static void test_mma_qkv(void **state) {
    (void)state;
    rng_seed(11);
    run_shape(5120, 7168, 128, false);
    run_shape(5120, 7168, 32, true);
}

static void test_mma_down(void **state) {
    (void)state;
    rng_seed(12);
    run_shape(13824, 5120, 128, true);
    run_shape(13824, 5120, 32, false);
}

// Edge shapes: in not a multiple of the 128-row chunk, out not a multiple of the 128-column
// tile, group 64 and one group over all rows, many rows (several row tiles).
static void test_mma_edges(void **state) {
    (void)state;
    rng_seed(13);
    struct qlin q;
    qlin_make(&q, 1056, 260, 32, false);
    for (int M = 1; M <= 40; M += 13) check_case(&q, M, M % 2);
    qlin_free(&q);
    qlin_make(&q, 896, 1156, 896, false);
    check_case(&q, 5, true), check_case(&q, 70, false);
    qlin_free(&q);
    qlin_make(&q, 2048, 512, 64, true);
    check_case(&q, 300, true), check_case(&q, 2, false);
    // unsupported shapes are refused with a recorded error and nothing written
    struct cu_gptq bad = {2048, 512, 48, 2048 / 48, q.dqw, q.dsz};
    assert_false(cu_gptq_mma_supported(&bad));
    assert_true(cu_gptq_mma_supported(&(struct cu_gptq){2048, 512, 64, 32, q.dqw, q.dsz}));
    uint16_t *y = pg_malloc(512 * 2);
    bf16_t *dy = dmalloc(512 * 2), *dx = dmalloc(2048 * 2);
    cu_gptq_mma(&bad, dx, 1, NULL, dy, 512, NULL, 0);
    char err[PG_ERR_LEN] = "";
    assert_int_equal(cu_take_error(err), -1);
    assert_non_null(strstr(err, "gptq_mma"));
    to_host(y, dy, 512 * 2);
    for (int i = 0; i < 512; i++) assert_int_equal(y[i], 0xffff);
    cudaFree(dy), cudaFree(dx), free(y);
    qlin_free(&q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mma_edges),
        cmocka_unit_test(test_mma_qkv),
        cmocka_unit_test(test_mma_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
