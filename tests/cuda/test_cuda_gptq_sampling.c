// GPU tests of the GPTQ int4 GEMV / dequantization kernels against a double-precision CPU
// reference, and of the GPU sampler against the host sampler (backend/sampler.c).
#include "cuda_test_util.h"
#include "backend/gptq_pack.h"

// ---- GPTQ ----
// One GEMV against the double reference w (W^T, (in, out)). form 0: plain x; 1: x is a
// gate|up row (SwiGLU formed in the GEMV), 2: SwiGLU plus a permutation of the input.
// Output poisoned, bias on; a second launch must give bit-identical results.
static void gemv_case(const struct cu_gptq *l, const double *w, const float *bias, const float *db, int M, int form) {
    const int in = l->in, out = l->out, ldx = form ? 2 * in : in, ldy = out + 8;
    uint16_t *x = rand_bf16((size_t)M * ldx, form ? 3.0f : 1.0f);
    int32_t *perm = pg_malloc(sizeof(int32_t) * in);
    for (int i = 0; i < in; i++) perm[i] = i;
    for (int i = in - 1; form == 2 && i > 0; i--) {
        int j = (int)(urand() % (uint32_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    double *xin = pg_malloc(sizeof(double) * (size_t)M * in);  // the input the GEMV should see
    for (int m = 0; m < M; m++)
        for (int i = 0; i < in; i++) {
            const uint16_t *row = x + (size_t)m * ldx;
            int src = perm[i];
            if (!form) {
                xin[(size_t)m * in + i] = bf(row[i]);
            } else {
                float g = bf(row[src]), u = bf(row[in + src]);
                xin[(size_t)m * in + i] = bf(pg_f32_to_bf16(g / (1.0f + expf(-g)) * u));
            }
        }
    void *dx = dup_to_dev(x, (size_t)M * ldx * 2), *dperm = dup_to_dev(perm, sizeof(int32_t) * in);
    bf16_t *dy = dmalloc((size_t)M * ldy * 2);
    size_t pf = cu_gemv_partial_floats(l, M);
    float *part = dmalloc(sizeof(float) * pf);
    cu_gemv_scratch_reset(part, 0);
    struct cu_gemv_in a = {dx, ldx, form == 2 ? dperm : NULL, form != 0};
    uint16_t *y = pg_malloc((size_t)M * ldy * 2), *y2 = pg_malloc((size_t)M * ldy * 2), *yc = pg_malloc((size_t)M * out * 2);
    cu_gptq_gemv_ex(l, &a, M, db, dy, ldy, part, 0);
    to_host(y, dy, (size_t)M * ldy * 2);
    cu_gptq_gemv_ex(l, &a, M, db, dy, ldy, part, 0);
    to_host(y2, dy, (size_t)M * ldy * 2);
    double *ref = pg_malloc(sizeof(double) * M * out);
    for (int m = 0; m < M; m++) {
        memcpy(yc + (size_t)m * out, y + (size_t)m * ldy, (size_t)out * 2);
        for (int o = 0; o < out; o++) {
            double acc = bias[o];
            for (int i = 0; i < in; i++) acc += xin[(size_t)m * in + i] * w[(size_t)i * out + o];
            ref[m * out + o] = acc;
        }
        for (int o = 0; o < out; o++) assert_int_equal(y[(size_t)m * ldy + o], y2[(size_t)m * ldy + o]);
    }
    char name[80];
    snprintf(name, sizeof name, "gptq gemv %dx%d g%d M=%d form%d", in, out, l->group_size, M, form);
    CHECK_ERR(name, rel_err_bf16(yc, ref, (size_t)M * out), 6e-3);
    uint32_t *tick = pg_malloc(sizeof(uint32_t) * CU_GEMV_COUNTERS);  // tickets left re-armed
    to_host(tick, part, sizeof(uint32_t) * CU_GEMV_COUNTERS);
    for (int i = 0; i < CU_GEMV_COUNTERS; i++) assert_int_equal(tick[i], 0);
    cudaFree(dx), cudaFree(dperm), cudaFree(dy), cudaFree(part);
    free(x), free(perm), free(xin), free(y), free(y2), free(yc), free(ref), free(tick);
}

// A random GPTQ int4 linear on the device (tile layout) with its double W^T (in, out) and bias.
struct gq {
    struct cu_gptq l;
    double *w;
    float *bias;
    void *db;
    int32_t *qw;
    uint32_t *sz;
};

static void gq_make(struct gq *g, int in, int out, int gs) {
    const int ng = in / gs;
    g->qw = pg_malloc(sizeof(int32_t) * (size_t)(in / 8) * out);
    g->sz = pg_malloc(sizeof(uint32_t) * (size_t)ng * out);
    for (size_t i = 0; i < (size_t)(in / 8) * out; i++) g->qw[i] = (int32_t)urand();
    for (size_t i = 0; i < (size_t)ng * out; i++)
        g->sz[i] = pg_f32_to_f16(0.002f + 0.01f * (frand() + 1)) | ((urand() % 16) << 16);
    g->bias = pg_malloc(sizeof(float) * out);
    for (int o = 0; o < out; o++) g->bias[o] = frand();
    // the device takes the tile layout (backend/gptq_pack.h)
    uint32_t *qt = pg_malloc(sizeof(uint32_t) * (size_t)(in / 8) * out), *szt = pg_malloc(sizeof(uint32_t) * (size_t)ng * out);
    gptq_tile_pack((const uint32_t *)g->qw, in, out, qt);
    gptq_tile_pack_sz(g->sz, ng, out, szt);
    void *dqw = dup_to_dev(qt, sizeof(int32_t) * (size_t)(in / 8) * out), *dsz = dup_to_dev(szt, sizeof(uint32_t) * (size_t)ng * out);
    g->db = dup_to_dev(g->bias, sizeof(float) * out);
    g->l = (struct cu_gptq){in, out, gs, ng, dqw, dsz};
    g->w = pg_malloc(sizeof(double) * (size_t)in * out);  // W^T (in, out)
    for (int i = 0; i < in; i++)
        for (int o = 0; o < out; o++) {
            uint32_t z = g->sz[(size_t)(i / gs) * out + o];
            int q = (g->qw[(size_t)(i / 8) * out + o] >> (4 * (i % 8))) & 15;
            g->w[(size_t)i * out + o] = (q - (double)(z >> 16)) * pg_f16_to_f32((uint16_t)(z & 0xffff));
        }
    free(qt), free(szt);
}

static void gq_free(struct gq *g) {
    cudaFree((void *)g->l.qweight), cudaFree((void *)g->l.sz), cudaFree(g->db);
    free(g->w), free(g->bias), free(g->qw), free(g->sz);
}

static void run_gptq_case(int in, int out, int gs) {
    struct gq g;
    gq_make(&g, in, out, gs);
    // dequant: bit-exact against rounding the same float product
    bf16_t *dwt = dmalloc((size_t)in * out * 2);
    cu_gptq_dequant(&g.l, dwt, 0);
    uint16_t *wt = pg_malloc((size_t)in * out * 2);
    to_host(wt, dwt, (size_t)in * out * 2);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)in * out; i++) bad += wt[i] != pg_f32_to_bf16((float)g.w[i]);
    printf("  dequant %dx%d g%d: %zu mismatches\n", in, out, gs, bad);
    assert_int_equal(bad, 0);
    for (int M = 1; M <= CU_GEMV_MAX_ROWS; M++)
        for (int form = 0; form < 3; form++) gemv_case(&g.l, g.w, g.bias, g.db, M, form);
    cudaFree(dwt);
    free(wt);
    gq_free(&g);
}

// ---- fused forms (cu_gptq_gemv_fused), each against the unfused kernels or a reference ----

static void assert_tickets_rearmed(const float *part) {
    uint32_t *tick = pg_malloc(sizeof(uint32_t) * CU_GEMV_COUNTERS);
    to_host(tick, part, sizeof(uint32_t) * CU_GEMV_COUNTERS);
    for (int i = 0; i < CU_GEMV_COUNTERS; i++) assert_int_equal(tick[i], 0);
    free(tick);
}

static float *rand_f32(size_t n, float scale) {
    float *h = pg_malloc(n * 4);
    for (size_t i = 0; i < n; i++) h[i] = frand() * scale;
    return h;
}

// Per-64-column sums of squares of rows (M, n) f32, as the residual form leaves them.
static float *tile_ssq(const float *r, int M, int n) {
    float *s = pg_malloc(sizeof(float) * M * (n / 64));
    for (int m = 0; m < M; m++)
        for (int t = 0; t < n / 64; t++) {
            double a = 0;
            for (int j = 0; j < 64; j++) a += (double)r[(size_t)m * n + t * 64 + j] * r[(size_t)m * n + t * 64 + j];
            s[m * (n / 64) + t] = (float)a;
        }
    return s;
}

// Norm input (STORE out): y against a double reference of the GEMV over bf16(resid * inv * w).
static void fused_norm_case(struct gq *g, int M, bool perm_on) {
    const int in = g->l.in, out = g->l.out;
    const float eps = 1e-6f;
    float *resid = rand_f32((size_t)M * in, 2.0f), *ssq = tile_ssq(resid, M, in);
    uint16_t *w = pg_malloc((size_t)in * 2);
    for (int i = 0; i < in; i++) w[i] = pg_f32_to_bf16(1.0f + 0.5f * frand());
    int32_t *perm = pg_malloc(sizeof(int32_t) * in);
    for (int i = 0; i < in; i++) perm[i] = i;
    for (int i = in - 1; perm_on && i > 0; i--) {
        int j = (int)(urand() % (uint32_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    double *ref = pg_malloc(sizeof(double) * M * out);
    for (int m = 0; m < M; m++) {
        double ss = 0;
        for (int t = 0; t < in / 64; t++) ss += ssq[m * (in / 64) + t];
        const float inv = (float)(1.0 / sqrt(ss / in + eps));
        for (int o = 0; o < out; o++) {
            double a = g->bias[o];
            for (int i = 0; i < in; i++) {
                const int src = perm[i];
                a += bf(pg_f32_to_bf16(resid[(size_t)m * in + src] * inv * bf(w[src]))) * g->w[(size_t)i * out + o];
            }
            ref[m * out + o] = a;
        }
    }
    float *dres = dup_to_dev(resid, sizeof(float) * M * in), *dssq = dup_to_dev(ssq, sizeof(float) * M * (in / 64));
    void *dw = dup_to_dev(w, (size_t)in * 2), *dperm = dup_to_dev(perm, sizeof(int32_t) * in);
    bf16_t *dy = dmalloc((size_t)M * out * 2);
    float *part = dmalloc(sizeof(float) * cu_gemv_partial_floats(&g->l, M));
    cu_gemv_scratch_reset(part, 0);
    struct cu_gemv_norm nrm = {dres, dw, dssq, eps};
    struct cu_gemv_in x = {NULL, in, perm_on ? dperm : NULL, false};
    struct cu_gemv_out o;
    memset(&o, 0, sizeof o);
    o.kind = CU_GEMV_STORE, o.y = dy, o.ldy = out;
    cu_gptq_gemv_fused(&g->l, &x, &nrm, M, g->db, &o, part, 0);
    uint16_t *y = pg_malloc((size_t)M * out * 2);
    to_host(y, dy, (size_t)M * out * 2);
    char name[80];
    snprintf(name, sizeof name, "fused norm in %dx%d M=%d perm %d", in, out, M, perm_on);
    CHECK_ERR(name, rel_err_bf16(y, ref, (size_t)M * out), 6e-3);
    assert_tickets_rearmed(part);
    cudaFree(dres), cudaFree(dssq), cudaFree(dw), cudaFree(dperm), cudaFree(dy), cudaFree(part);
    free(resid), free(ssq), free(w), free(perm), free(ref), free(y);
}

// Residual out: resid must be exactly resid + the plain GEMV's bf16 output; ssq the tile sums
// of squares of the new residual. Launched twice (graph replays re-arm the tickets).
static void fused_resid_case(struct gq *g, int M) {
    const int in = g->l.in, out = g->l.out;
    uint16_t *x = rand_bf16((size_t)M * in, 1.0f);
    float *resid = rand_f32((size_t)M * out, 4.0f);
    void *dx = dup_to_dev(x, (size_t)M * in * 2);
    float *dres = dup_to_dev(resid, sizeof(float) * M * out), *dssq = dmalloc(sizeof(float) * M * (out / 64));
    bf16_t *dy = dmalloc((size_t)M * out * 2);
    float *part = dmalloc(sizeof(float) * cu_gemv_partial_floats(&g->l, M));
    cu_gemv_scratch_reset(part, 0);
    struct cu_gemv_in a = {dx, in, NULL, false};
    cu_gptq_gemv_ex(&g->l, &a, M, g->db, dy, out, part, 0);
    struct cu_gemv_out o;
    memset(&o, 0, sizeof o);
    o.kind = CU_GEMV_RESID, o.resid = dres, o.ssq = dssq;
    cu_gptq_gemv_fused(&g->l, &a, NULL, M, g->db, &o, part, 0);
    uint16_t *y = pg_malloc((size_t)M * out * 2);
    float *r1 = pg_malloc(sizeof(float) * M * out), *s1 = pg_malloc(sizeof(float) * M * (out / 64));
    to_host(y, dy, (size_t)M * out * 2);
    to_host(r1, dres, sizeof(float) * M * out);
    to_host(s1, dssq, sizeof(float) * M * (out / 64));
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)M * out; i++) bad += r1[i] != resid[i] + bf(y[i]);
    float *sref = tile_ssq(r1, M, out);
    double *sd = pg_malloc(sizeof(double) * M * (out / 64));
    for (int i = 0; i < M * (out / 64); i++) sd[i] = sref[i];
    char name[80];
    snprintf(name, sizeof name, "fused resid out %dx%d M=%d", in, out, M);
    printf("  %s: %zu residual mismatches\n", name, bad);
    assert_int_equal(bad, 0);
    CHECK_ERR("  tile sums of squares", rel_err_f(s1, sd, (size_t)M * (out / 64)), 1e-5);
    assert_tickets_rearmed(part);
    cu_gptq_gemv_fused(&g->l, &a, NULL, M, g->db, &o, part, 0);  // again: resid grows by y once more
    float *r2 = pg_malloc(sizeof(float) * M * out);
    to_host(r2, dres, sizeof(float) * M * out);
    bad = 0;
    for (size_t i = 0; i < (size_t)M * out; i++) bad += r2[i] != r1[i] + bf(y[i]);
    assert_int_equal(bad, 0);
    cudaFree(dx), cudaFree(dres), cudaFree(dssq), cudaFree(dy), cudaFree(part);
    free(x), free(resid), free(y), free(r1), free(s1), free(sref), free(sd), free(r2);
}

// SwiGLU out (columns j, out/2 + j = gate, up): against cu_swiglu over the plain GEMV's output.
static void fused_swiglu_case(struct gq *g, int M) {
    const int in = g->l.in, out = g->l.out, I = out / 2;
    uint16_t *x = rand_bf16((size_t)M * in, 1.0f);
    void *dx = dup_to_dev(x, (size_t)M * in * 2);
    bf16_t *dy = dmalloc((size_t)M * out * 2), *dref = dmalloc((size_t)M * I * 2), *dact = dmalloc((size_t)M * I * 2);
    float *part = dmalloc(sizeof(float) * cu_gemv_partial_floats(&g->l, M));
    cu_gemv_scratch_reset(part, 0);
    struct cu_gemv_in a = {dx, in, NULL, false};
    cu_gptq_gemv_ex(&g->l, &a, M, g->db, dy, out, part, 0);
    cu_swiglu(dy, M, I, dref, 0);
    struct cu_gemv_out o;
    memset(&o, 0, sizeof o);
    o.kind = CU_GEMV_SWIGLU, o.y = dact, o.ldy = I;
    cu_gptq_gemv_fused(&g->l, &a, NULL, M, g->db, &o, part, 0);
    uint16_t *act = pg_malloc((size_t)M * I * 2), *ref = pg_malloc((size_t)M * I * 2);
    to_host(act, dact, (size_t)M * I * 2);
    to_host(ref, dref, (size_t)M * I * 2);
    double *rd = pg_malloc(sizeof(double) * M * I);
    for (size_t i = 0; i < (size_t)M * I; i++) rd[i] = bf(ref[i]);
    char name[80];
    snprintf(name, sizeof name, "fused swiglu out %dx%d M=%d", in, out, M);
    CHECK_ERR(name, rel_err_bf16(act, rd, (size_t)M * I), 1e-3);
    assert_tickets_rearmed(part);
    cudaFree(dx), cudaFree(dy), cudaFree(dref), cudaFree(dact), cudaFree(part);
    free(x), free(act), free(ref), free(rd);
}

// RoPE + KV store out: against cu_qkv_rope_store over the plain GEMV's output, M tokens of
// three sequences at scattered positions (shuffled block tables).
static void fused_rope_case(struct gq *g, int M, int nh, int nkv, int hd, int kv_type) {
    const int in = g->l.in, out = g->l.out, bs = 16, es = kv_type == CU_KV_BF16 ? 2 : 1;
    assert_int_equal(out, (nh + 2 * nkv) * hd);
    int len[3] = {300, 77, 129}, q0[3], nnew[3] = {0, 0, 0}, stride, nblocks;
    int32_t *tok_seq = pg_malloc(sizeof(int32_t) * M), *tok_pos = pg_malloc(sizeof(int32_t) * M);
    for (int t = 0; t < M; t++) {
        tok_seq[t] = t % 3;
        tok_pos[t] = len[t % 3] - 1 - t / 3;  // distinct slots: the last tokens of each sequence
    }
    for (int i = 0; i < 3; i++) q0[i] = i;
    int32_t *bt = shuffled_block_tables(3, len, bs, &stride, &nblocks);
    void *buf[6];
    struct cu_step s = step_to_dev(M, 3, tok_seq, tok_pos, len, q0, nnew, bt, stride, buf);
    const size_t cache = (size_t)nblocks * nkv * bs * hd * es;
    uint16_t *x = rand_bf16((size_t)M * in, 1.0f);
    float *rb = rand_f32(out, 1.0f);
    void *dx = dup_to_dev(x, (size_t)M * in * 2), *drb = dup_to_dev(rb, sizeof(float) * out);
    void *kc[2] = {dmalloc(cache), dmalloc(cache)}, *vc[2] = {dmalloc(cache), dmalloc(cache)};
    assert_int_equal(cudaMemset(kc[0], 0, cache), cudaSuccess);
    assert_int_equal(cudaMemset(kc[1], 0, cache), cudaSuccess);
    assert_int_equal(cudaMemset(vc[0], 0, cache), cudaSuccess);
    assert_int_equal(cudaMemset(vc[1], 0, cache), cudaSuccess);
    bf16_t *dy = dmalloc((size_t)M * out * 2), *dq[2] = {dmalloc((size_t)M * nh * hd * 2), dmalloc((size_t)M * nh * hd * 2)};
    float *part = dmalloc(sizeof(float) * cu_gemv_partial_floats(&g->l, M));
    cu_gemv_scratch_reset(part, 0);
    struct cu_gemv_in a = {dx, in, NULL, false};
    cu_gptq_gemv_ex(&g->l, &a, M, g->db, dy, out, part, 0);
    cu_qkv_rope_store(dy, out, drb, &s, nh, nkv, hd, 1e6f, bs, kv_type, kc[0], vc[0], dq[0], 0);
    struct cu_gemv_out o;
    memset(&o, 0, sizeof o);
    o.kind = CU_GEMV_ROPE;
    float *dcs = dmalloc(sizeof(float) * 512 * hd);  // positions below 512
    cu_rope_table(dcs, 512, hd, 1e6f, 0);
    o.rope = (struct cu_gemv_rope){s, nh, nkv, hd, bs, kv_type, dcs, 512, drb, kc[1], vc[1], dq[1]};
    cu_gptq_gemv_fused(&g->l, &a, NULL, M, g->db, &o, part, 0);
    const size_t nq = (size_t)M * nh * hd;
    uint16_t *q[2] = {pg_malloc(nq * 2), pg_malloc(nq * 2)};
    uint8_t *k[2] = {pg_malloc(cache), pg_malloc(cache)}, *v[2] = {pg_malloc(cache), pg_malloc(cache)};
    for (int i = 0; i < 2; i++) {
        to_host(q[i], dq[i], nq * 2);
        to_host(k[i], kc[i], cache);
        to_host(v[i], vc[i], cache);
    }
    double *qd = pg_malloc(sizeof(double) * nq);
    for (size_t i = 0; i < nq; i++) qd[i] = bf(q[0][i]);
    size_t kbad = 0, vbad = 0, written = 0;  // cache elements that differ (bf16: 2-byte units)
    for (size_t i = 0; i < cache; i += es) {
        kbad += memcmp(k[0] + i, k[1] + i, es) != 0;
        vbad += memcmp(v[0] + i, v[1] + i, es) != 0;
        written += memcmp(v[0] + i, "\0\0", es) != 0;
    }
    char name[96];
    snprintf(name, sizeof name, "fused rope out nh%d nkv%d hd%d M=%d kv%d", nh, nkv, hd, M, kv_type);
    CHECK_ERR(name, rel_err_bf16(q[1], qd, nq), 1e-3);
    printf("    k / v cache elements differing: %zu / %zu of %zu written\n", kbad, vbad, written);
    assert_true(written > 0);
    assert_true(kbad * 100 <= written && vbad == 0);  // v is the same rounding; k may differ by an fp rounding
    assert_tickets_rearmed(part);
    for (int i = 0; i < 6; i++) cudaFree(buf[i]);
    for (int i = 0; i < 2; i++) cudaFree(kc[i]), cudaFree(vc[i]), cudaFree(dq[i]), free(q[i]), free(k[i]), free(v[i]);
    cudaFree(dx), cudaFree(drb), cudaFree(dy), cudaFree(part), cudaFree(dcs);
    free(tok_seq), free(tok_pos), free(bt), free(x), free(rb), free(qd);
}

static void test_gptq_fused(void **state) {
    (void)state;
    const int Ms[] = {1, 2, 5, 7, 8};  // up to CU_GEMV_FUSED_MAX_ROWS
    struct gq g;
    gq_make(&g, 1024, 768, 128);
    for (int i = 0; i < 5; i++) {
        fused_norm_case(&g, Ms[i], false);
        fused_norm_case(&g, Ms[i], true);
        fused_resid_case(&g, Ms[i]);
        fused_swiglu_case(&g, Ms[i]);
    }
    gq_free(&g);
    gq_make(&g, 512, 256, 128);  // one K split: the residual form still sums through the ticket
    fused_resid_case(&g, 1);
    fused_resid_case(&g, 3);
    fused_norm_case(&g, 2, false);
    gq_free(&g);
    gq_make(&g, 512, (4 + 2 * 2) * 128, 128);  // q|k|v of 4 / 2 heads of 128
    for (int i = 0; i < 5; i++) fused_rope_case(&g, Ms[i], 4, 2, 128, CU_KV_BF16);
    fused_rope_case(&g, 3, 4, 2, 128, CU_KV_E4M3);
    gq_free(&g);
    gq_make(&g, 896, (6 + 2 * 2) * 64, 64);  // heads of 64: one column tile per head
    fused_rope_case(&g, 4, 6, 2, 64, CU_KV_BF16);
    gq_free(&g);
}

// Dense bf16 GEMV (bf16 and f32 outputs, with and without bias) against a double reference.
static void run_dense_case(int in, int out) {
    uint16_t *W = rand_bf16((size_t)out * in, 0.05f);
    float *bias = pg_malloc(sizeof(float) * out);
    for (int o = 0; o < out; o++) bias[o] = frand();
    void *dW = dup_to_dev(W, (size_t)out * in * 2), *db = dup_to_dev(bias, sizeof(float) * out);
    for (int M = 1; M <= CU_DENSE_GEMV_MAX_ROWS; M++) {
        uint16_t *x = rand_bf16((size_t)M * in, 1.0f);
        void *dx = dup_to_dev(x, (size_t)M * in * 2);
        const int ldy = out + 4;
        for (int f32 = 0; f32 < 2; f32++) {
            const bool with_bias = M & 1;
            void *dy = dmalloc((size_t)M * ldy * 4);
            cu_bf16_gemv(dW, in, out, dx, M, with_bias ? db : NULL, dy, ldy, f32, 0);
            float *yf = pg_malloc(sizeof(float) * M * out);
            uint16_t *yh = pg_malloc((size_t)M * ldy * 4);
            to_host(yh, dy, (size_t)M * ldy * 4);
            double *ref = pg_malloc(sizeof(double) * M * out);
            for (int m = 0; m < M; m++)
                for (int o = 0; o < out; o++) {
                    double a = with_bias ? bias[o] : 0;
                    for (int i = 0; i < in; i++) a += bf(x[(size_t)m * in + i]) * bf(W[(size_t)o * in + i]);
                    ref[m * out + o] = a;
                    yf[m * out + o] = f32 ? ((float *)yh)[(size_t)m * ldy + o] : bf(yh[(size_t)m * ldy + o]);
                }
            char name[64];
            snprintf(name, sizeof name, "bf16 gemv %dx%d M=%d f32=%d", in, out, M, f32);
            CHECK_ERR(name, rel_err_f(yf, ref, (size_t)M * out), f32 ? 1e-5 : 6e-3);
            cudaFree(dy);
            free(yf), free(yh), free(ref);
        }
        cudaFree(dx);
        free(x);
    }
    cudaFree(dW), cudaFree(db);
    free(W), free(bias);
}

static void test_dense_gemv(void **state) {
    (void)state;
    run_dense_case(1024, 768);
    run_dense_case(4096 + 8, 130);
    run_dense_case(136, 9);
}

static void test_gptq(void **state) {
    (void)state;
    run_gptq_case(1024, 768, 128);
    run_gptq_case(896, 1152, 64);    // Qwen2.5-0.5B q|k|v input width
    run_gptq_case(1024, 272, 64);    // a partial 64-column block
    run_gptq_case(2048, 512, 2048);  // a group straddling K splits
    run_gptq_case(512, 384, 128);    // one K split: no ticket
    run_gptq_case(3456, 256, 128);   // several K splits, the last one short
    run_gptq_case(4864, 128, 128);   // Qwen2.5-0.5B down input width
    run_gptq_case(256, 1024, 128);   // make-model "tiny": gate|up, down
    run_gptq_case(512, 256, 128);
}

// The plain and fused int4 GEMV cases again with the K-split tickets taken by fence + atomic
// + fence (flags 0) instead of the default single acq_rel atomic (CU_GPTQ_ACQREL_TICKET).
static void test_gptq_fence_ticket(void **state) {
    cu_gptq_tune(0, 0);
    test_gptq(state);
    test_gptq_fused(state);
}
static int gptq_tune_reset(void **state) {
    (void)state;
    cu_gptq_tune(0, -1);
    return 0;
}

// ---- sampling ----
struct srow {
    float temperature, top_p, min_p, rep, pres, freq;
    int top_k, n_logprobs;
};


static void test_sampling(void **state) {
    (void)state;
    const int V = 5000, N = 10;
    const struct srow rows[10] = {
        {0, 1, 0, 1, 0, 0, 0, -1},      {0, 1, 0, 1.3f, 0.5f, 0.2f, 0, 5}, {1, 1, 0, 1, 0, 0, 0, 0},
        {0.7f, 0.8f, 0, 1, 0, 0, 20, 3}, {1.3f, 0.5f, 0, 1, 0, 0, 0, -1},  {1, 1, 0.2f, 1, 0, 0, 0, -1},
        {1, 1, 0, 1, 0, 0, 1, -1},      {0.5f, 0.95f, 0.05f, 1.1f, 0.3f, 0.1f, 50, 20},
        {2, 1, 0, 1, 0, 0, 3, -1},      {1, 0.3f, 0, 1, 0, 0, 0, -1},
    };
    float *logits = pg_malloc(sizeof(float) * N * V);
    for (int i = 0; i < N * V; i++) logits[i] = 3 * frand();
    logits[7] = logits[8] = 10;  // a tie for greedy: lower id wins
    // penalty lists: tokens 0..29 seen in the prompt, 10..39 in the output (counts 1..3)
    int32_t pt[2000], pc[2000], pf[2000], bt[4] = {100, 200, 7, 8}, ban[2] = {9, 4999};
    float bv[4] = {5, -5, 1, 0};
    struct cu_sample_params hp[10];
    int np = 0;
    memset(hp, 0, sizeof hp);
    for (int r = 0; r < N; r++) {
        struct cu_sample_params *p = &hp[r];
        p->temperature = rows[r].temperature, p->top_p = rows[r].top_p, p->min_p = rows[r].min_p;
        p->top_k = rows[r].top_k, p->repetition_penalty = rows[r].rep, p->presence_penalty = rows[r].pres;
        p->frequency_penalty = rows[r].freq, p->seed = 1000 + r, p->step = r * 3, p->n_logprobs = rows[r].n_logprobs;
        p->allowed_off = -1;
        p->pen_off = np;
        if (rows[r].rep != 1 || rows[r].pres != 0) {
            for (int t = 0; t < 40; t++) pt[np] = t, pc[np] = t >= 10 ? 1 + t % 3 : 0, pf[np] = 1, np++;
        }
        p->pen_n = np - p->pen_off;
        p->bias_off = r == 1 ? 0 : 0, p->bias_n = r == 1 || r == 7 ? 4 : 0;
        p->ban_off = 0, p->ban_n = r == 7 ? 2 : 0;
    }
    void *dl = dup_to_dev(logits, sizeof(float) * N * V), *dp = dup_to_dev(hp, sizeof hp);
    struct cu_sample_lists L = {dup_to_dev(pt, 4 * (np + 1)), dup_to_dev(pc, 4 * (np + 1)), dup_to_dev(pf, 4 * (np + 1)),
                                dup_to_dev(bt, sizeof bt), dup_to_dev(bv, sizeof bv), dup_to_dev(ban, sizeof ban), NULL};
    float *scr = dmalloc(sizeof(float) * N * V);
    struct cu_sample_out *dout = dmalloc(sizeof(struct cu_sample_out) * N), out[10];
    cu_sample(dl, N, V, dp, &L, scr, dout, 0);
    float *proc = pg_malloc(sizeof(float) * N * V), *pr = pg_malloc(sizeof(float) * N * V);
    to_host(out, dout, sizeof out);
    to_host(proc, dl, sizeof(float) * N * V);
    to_host(pr, scr, sizeof(float) * N * V);
    // The oracle: the host sampler (backend/sampler.c) on the same rows, with prompt/output
    // token lists that produce the penalty entries given to the GPU above.
    int32_t prompt[30], output[200];
    int n_out = 0;
    for (int t = 0; t < 30; t++) prompt[t] = t;
    for (int t = 10; t < 40; t++)
        for (int k = 0; k < 1 + t % 3; k++) output[n_out++] = t;
    void *scratch = pg_malloc(sampler_scratch_size(V));
    int n_sampled_rows = 0;
    for (int r = 0; r < N; r++) {
        float *ref = logits + (size_t)r * V;
        struct sampling_params sp;
        memset(&sp, 0, sizeof sp);
        sp.temperature = hp[r].temperature, sp.top_p = hp[r].top_p, sp.top_k = hp[r].top_k, sp.min_p = hp[r].min_p;
        sp.repetition_penalty = hp[r].repetition_penalty, sp.presence_penalty = hp[r].presence_penalty;
        sp.frequency_penalty = hp[r].frequency_penalty, sp.seed = hp[r].seed, sp.logprobs = hp[r].n_logprobs;
        sp.n_logit_bias = hp[r].bias_n, sp.logit_bias_ids = bt, sp.logit_bias_vals = bv;
        struct sample_input in;
        memset(&in, 0, sizeof in);
        in.params = &sp;
        in.step = hp[r].step;
        if (hp[r].pen_n) in.prompt = prompt, in.n_prompt = 30, in.output = output, in.n_output = n_out;
        in.banned = ban, in.n_banned = hp[r].ban_n;
        struct sample_output so;
        sampler_sample(ref, V, &in, scratch, &so);
        printf("  sample row %d (T=%.2f k=%d p=%.2f minp=%.2f): gpu %d host %d, logprob %.4f host %.4f\n", r,
               hp[r].temperature, hp[r].top_k, hp[r].top_p, hp[r].min_p, out[r].token, so.token, out[r].logprob,
               so.logprob);
        assert_int_equal(out[r].token, so.token);
        // logprobs -1: the host sampler does not compute the chosen token's logprob (sampling.h)
        if (hp[r].n_logprobs >= 0) assert_true(fabsf(out[r].logprob - so.logprob) < 1e-3f);
        assert_int_equal(out[r].n_top, so.n_top);
        for (int k = 0; k < so.n_top; k++) {
            assert_int_equal(out[r].top_ids[k], so.top_ids[k]);
            assert_true(fabsf(out[r].top_logprobs[k] - so.top_logprobs[k]) < 1e-3f);
        }
        n_sampled_rows += hp[r].temperature >= 1e-5f;
    }
    assert_true(n_sampled_rows >= 7);
    free(scratch);
    // greedy-only kernel: same tokens as the sampler's greedy rows
    float *dl2 = dup_to_dev(proc, sizeof(float) * N * V);
    cu_argmax(dl2, N, V, dout, 0);
    struct cu_sample_out g[10];
    to_host(g, dout, sizeof g);
    assert_int_equal(g[0].token, 7);
    assert_int_equal(g[0].token, out[0].token);
    assert_true(fabsf(g[0].logprob - out[0].logprob) < 1e-4f);
    cudaFree(dl), cudaFree(dl2), cudaFree(dp), cudaFree(scr), cudaFree(dout);
    cudaFree((void *)L.pen_tok), cudaFree((void *)L.pen_cnt), cudaFree((void *)L.pen_flags);
    cudaFree((void *)L.bias_tok), cudaFree((void *)L.bias_val), cudaFree((void *)L.ban);
    free(logits), free(proc), free(pr);
}

// ---- greedy argmax (cu_argmax, cu_argmax_split) against the host sampler ----
#define AM_ROWS 8

// Row r of the argmax cases (V logits): ties across chunks and within one, rows of only -inf
// or mostly -inf, the maximum at the first and at the last id, large logits.
static void argmax_row(float *x, int V, int r) {
    for (int v = 0; v < V; v++) x[v] = 3 * frand();
    switch (r) {
    case 1: x[V / 3] = x[V - 2] = 10; break;  // different chunks: the lower id wins
    case 2: x[700] = x[300] = 10; break;      // one chunk, two threads
    case 3: for (int v = 0; v < V; v++) x[v] = -INFINITY; break;
    case 4:
        for (int v = 0; v < V; v++) x[v] = -INFINITY;
        x[V - 1] = -5;
        break;
    case 5: for (int v = 0; v < V / 2 + 37; v++) x[v] = -INFINITY; break;  // whole -inf chunks, one mixed
    case 6: x[0] = x[V - 1] = 10; break;
    case 7:
        for (int v = 0; v < V; v++) x[v] += 80;
        x[V / 2] = 90;
        break;
    }
}

static void check_argmax(const char *what, int V, const struct cu_sample_out *g, const struct sample_output *h, int n) {
    for (int r = 0; r < n; r++) {
        printf("  %s V=%d row %d: gpu %d host %d, logprob %.5f host %.5f\n", what, V, r, g[r].token, h[r].token,
               g[r].logprob, h[r].logprob);
        assert_int_equal(g[r].token, h[r].token);
        assert_int_equal(g[r].n_top, 0);
        if (isnan(h[r].logprob))
            assert_true(isnan(g[r].logprob));
        else
            assert_true(fabsf(g[r].logprob - h[r].logprob) < 1e-3f);
    }
}

static void argmax_case(int V) {
    float *x = pg_malloc(sizeof(float) * AM_ROWS * V), *ref = pg_malloc(sizeof(float) * V);
    void *hs = pg_malloc(sampler_scratch_size(V));
    struct sample_output h[AM_ROWS];
    struct sampling_params sp;
    memset(&sp, 0, sizeof sp);
    sp.top_p = 1, sp.repetition_penalty = 1, sp.logprobs = 0;  // greedy, with the token's logprob
    struct sample_input in;
    memset(&in, 0, sizeof in);
    in.params = &sp;
    for (int r = 0; r < AM_ROWS; r++) {
        argmax_row(x + (size_t)r * V, V, r);
        memcpy(ref, x + (size_t)r * V, sizeof(float) * V);
        sampler_sample(ref, V, &in, hs, &h[r]);
    }
    assert_int_equal(h[1].token, V / 3);  // the rows are what their comments say
    assert_int_equal(h[3].token, 0);
    assert_true(isnan(h[3].logprob));
    float *dx = dup_to_dev(x, sizeof(float) * AM_ROWS * V);
    struct cu_sample_out *dout = dmalloc(sizeof(struct cu_sample_out) * AM_ROWS);
    struct cu_sample_out g[AM_ROWS], g2[AM_ROWS];
    cu_argmax(dx, AM_ROWS, V, dout, 0);
    to_host(g, dout, sizeof g);
    check_argmax("argmax", V, g, h, AM_ROWS);

    const size_t bytes = cu_argmax_scratch_bytes(AM_ROWS, V), row_words = cu_argmax_scratch_bytes(1, V) / 4;
    void *scr = dmalloc(bytes);
    assert_int_equal(cudaMemset(scr, 0, bytes), cudaSuccess);
    cu_argmax_split(dx, AM_ROWS, V, scr, dout, 0);
    to_host(g, dout, sizeof g);
    check_argmax("argmax split", V, g, h, AM_ROWS);
    // again on the same scratch (tickets re-armed), then over fewer rows: the same bits
    cu_argmax_split(dx, AM_ROWS, V, scr, dout, 0);
    to_host(g2, dout, sizeof g2);
    for (int r = 0; r < AM_ROWS; r++) {
        assert_int_equal(g2[r].token, g[r].token);
        assert_memory_equal(&g2[r].logprob, &g[r].logprob, sizeof(float));
    }
    assert_int_equal(cudaMemset(dout, 0xff, sizeof(struct cu_sample_out) * AM_ROWS), cudaSuccess);
    cu_argmax_split(dx, 3, V, scr, dout, 0);
    to_host(g2, dout, sizeof g2);
    for (int r = 0; r < 3; r++) {
        assert_int_equal(g2[r].token, g[r].token);
        assert_memory_equal(&g2[r].logprob, &g[r].logprob, sizeof(float));
    }
    assert_int_equal(g2[3].token, -1);  // rows past n untouched
    uint32_t *tick = pg_malloc(bytes);
    to_host(tick, scr, bytes);
    for (int r = 0; r < AM_ROWS; r++) assert_int_equal(tick[r * row_words], 0);
    cudaFree(dx), cudaFree(dout), cudaFree(scr);
    free(x), free(ref), free(hs), free(tick);
}

static void test_argmax(void **state) {
    (void)state;
    argmax_case(1000);    // one chunk
    argmax_case(5000);    // 5 chunks
    argmax_case(152064);  // Qwen2.5: 128 chunks of 1188
    argmax_case(300000);  // 128 chunks of 2344
}

// The device copy of pg_uniform must equal the host one: checked through row 2 above
// (temperature 1, no truncation, a draw over the full vocab).

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gptq), cmocka_unit_test(test_gptq_fused),
                                       cmocka_unit_test_teardown(test_gptq_fence_ticket, gptq_tune_reset),
                                       cmocka_unit_test(test_dense_gemv), cmocka_unit_test(test_sampling),
                                       cmocka_unit_test(test_argmax)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
