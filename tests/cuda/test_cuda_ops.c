// Per-kernel GPU tests: every kernel against a CPU reference (double precision) on fresh
// random inputs, outputs poisoned (0xff bytes) before each run, tolerance stated per op.
#include "cuda_test_util.h"

// ---- norm / embed / swiglu / bias / gather ----
// embed, then resid += delta (delta rows of stride ld, or no delta), out = rmsnorm(resid).
// Shapes pick cu_add_rmsnorm's register-resident vector kernel (H % 4 == 0, H <= 8192; 1..8
// float4s per thread) and its generic fallback (H % 4 != 0, H > 8192).
static void run_norm_case(int T, int H, int ld, bool with_delta) {
    const int V = 1000;
    uint16_t *tab = rand_bf16((size_t)V * H, 0.5f), *w = rand_bf16(H, 1.0f), *delta = rand_bf16((size_t)T * ld, 2.0f);
    int32_t *tok = pg_malloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++) tok[t] = urand() % V;
    void *dtab = dup_to_dev(tab, (size_t)V * H * 2), *dtok = dup_to_dev(tok, sizeof(int32_t) * T), *dw = dup_to_dev(w, H * 2);
    void *dd = dup_to_dev(delta, (size_t)T * ld * 2);
    float *dres = dmalloc((size_t)T * H * 4);
    bf16_t *dout = dmalloc((size_t)T * H * 2);
    cu_embed(dtab, dtok, T, H, dres, 0);
    cu_add_rmsnorm(dres, with_delta ? dd : NULL, ld, dw, 1e-6f, T, H, dout, 0);
    float *res = pg_malloc((size_t)T * H * 4);
    uint16_t *out = pg_malloc((size_t)T * H * 2);
    to_host(res, dres, (size_t)T * H * 4);
    to_host(out, dout, (size_t)T * H * 2);
    double *rr = pg_malloc(sizeof(double) * T * H), *ro = pg_malloc(sizeof(double) * T * H);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < H; i++) {
            rr[(size_t)t * H + i] = (double)bf(tab[(size_t)tok[t] * H + i]) + (with_delta ? bf(delta[(size_t)t * ld + i]) : 0);
            ss += rr[(size_t)t * H + i] * rr[(size_t)t * H + i];
        }
        double inv = 1 / sqrt(ss / H + 1e-6);
        for (int i = 0; i < H; i++) ro[(size_t)t * H + i] = rr[(size_t)t * H + i] * inv * bf(w[i]);
    }
    char name[96];
    snprintf(name, sizeof name, "embed + residual add (f32) T%d H%d ld%d delta %d", T, H, ld, with_delta);
    CHECK_ERR(name, rel_err_f(res, rr, (size_t)T * H), 1e-6);
    snprintf(name, sizeof name, "rmsnorm (bf16 out) T%d H%d", T, H);
    CHECK_ERR(name, rel_err_bf16(out, ro, (size_t)T * H), 8e-3);
    cudaFree(dtab), cudaFree(dtok), cudaFree(dw), cudaFree(dd), cudaFree(dres), cudaFree(dout);
    free(tab), free(w), free(delta), free(tok), free(res), free(out), free(rr), free(ro);
}

static void test_embed_rmsnorm(void **state) {
    (void)state;
    run_norm_case(7, 896, 896, true);     // 1 float4 per thread
    run_norm_case(1, 5120, 5120, false);  // 5 (Qwen2.5-14B), no delta: the first layer's norm
    run_norm_case(3, 5120, 5128, true);   // delta row stride != H
    run_norm_case(2, 8192, 8192, true);   // 8, the most held in registers
    run_norm_case(2, 998, 998, true);     // H % 4 != 0: generic kernel
    run_norm_case(1, 8196, 8196, true);   // past the register limit: generic kernel
}

static void test_swiglu_bias_gather(void **state) {
    (void)state;
    const int T = 5, I = 1000;
    uint16_t *gu = rand_bf16((size_t)T * 2 * I, 4.0f);
    float bias[1000];
    for (int i = 0; i < I; i++) bias[i] = frand();
    void *dgu = dup_to_dev(gu, (size_t)T * 2 * I * 2), *db = dup_to_dev(bias, sizeof bias);
    bf16_t *dout = dmalloc((size_t)T * I * 2), *dg = dmalloc((size_t)3 * I * 2);
    cu_swiglu(dgu, T, I, dout, 0);
    cu_add_bias(dout, I, db, T, I, 0);
    int32_t rows[3] = {4, 0, 2};
    void *drows = dup_to_dev(rows, sizeof rows);
    cu_gather_rows(dout, I, drows, 3, I, dg, 0);
    uint16_t *g = pg_malloc((size_t)3 * I * 2);
    to_host(g, dg, (size_t)3 * I * 2);
    double *ref = pg_malloc(sizeof(double) * 3 * I);
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < I; i++) {
            double a = bf(gu[(size_t)rows[r] * 2 * I + i]), u = bf(gu[(size_t)rows[r] * 2 * I + I + i]);
            ref[r * I + i] = a / (1 + exp(-a)) * u + bias[i];
        }
    CHECK_ERR("swiglu + bias + gather (bf16)", rel_err_bf16(g, ref, (size_t)3 * I), 1e-2);
    // permute_cols on the gathered rows: an exact copy under a random permutation
    int32_t *perm = pg_malloc(sizeof(int32_t) * I);
    for (int i = 0; i < I; i++) perm[i] = i;
    for (int i = I - 1; i > 0; i--) {
        int j = (int)(urand() % (uint32_t)(i + 1)), x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    void *dperm = dup_to_dev(perm, sizeof(int32_t) * I);
    bf16_t *dp = dmalloc((size_t)3 * I * 2);
    cu_permute_cols(dg, dperm, 3, I, dp, 0);
    uint16_t *pm = pg_malloc((size_t)3 * I * 2);
    to_host(pm, dp, (size_t)3 * I * 2);
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < I; i++) assert_int_equal(pm[r * I + i], g[r * I + perm[i]]);
    cudaFree(dgu), cudaFree(db), cudaFree(dout), cudaFree(dg), cudaFree(drows), cudaFree(dperm), cudaFree(dp);
    free(gu), free(g), free(ref), free(perm), free(pm);
}

// ---- fp8 decoding on the host ----
static uint8_t rand_fp8(int e5m2) {
    for (;;) {
        uint8_t b = (uint8_t)urand();
        if (e5m2 && ((b >> 2) & 31) == 31) continue;
        if (!e5m2 && (b & 0x7f) == 0x7f) continue;
        if (fabs(fp8_to_d(b, e5m2)) > 4) continue;
        return b;
    }
}
static float kv_get(const void *cache, size_t i, int kv_type) {
    if (kv_type == CU_KV_BF16) return bf(((const uint16_t *)cache)[i]);
    return fp8_to_d(((const uint8_t *)cache)[i], kv_type == CU_KV_E5M2);
}

// ---- a paged test setup: n seqs with lengths, block tables over a shuffled pool ----
struct pg_setup {
    int n, bs, nh, nkv, hd, kv_type, nblocks, bt_stride, T;
    int len[8], nnew[8], q0[8];
    int32_t *bt, *tok_seq, *tok_pos;
    void *kc, *vc;     // host copies
    size_t cache_elems;
};

static void setup_init_bs(struct pg_setup *s, int n, const int *len, const int *nnew, int nh, int nkv, int hd,
                          int kv_type, int bs) {
    memset(s, 0, sizeof *s);
    s->n = n, s->bs = bs, s->nh = nh, s->nkv = nkv, s->hd = hd, s->kv_type = kv_type;
    for (int i = 0; i < n; i++) {
        s->len[i] = len[i], s->nnew[i] = nnew[i], s->q0[i] = s->T;
        s->T += nnew[i];
    }
    s->bt = shuffled_block_tables(n, len, bs, &s->bt_stride, &s->nblocks);
    s->tok_seq = pg_malloc(sizeof(int32_t) * s->T);
    s->tok_pos = pg_malloc(sizeof(int32_t) * s->T);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nnew[i]; j++) {
            s->tok_seq[s->q0[i] + j] = i;
            s->tok_pos[s->q0[i] + j] = len[i] - nnew[i] + j;
        }
    s->cache_elems = (size_t)s->nblocks * nkv * bs * hd;
    size_t es = kv_type == CU_KV_BF16 ? 2 : 1;
    s->kc = pg_malloc(s->cache_elems * es);
    s->vc = pg_malloc(s->cache_elems * es);
    for (size_t i = 0; i < s->cache_elems; i++) {
        if (kv_type == CU_KV_BF16) {
            ((uint16_t *)s->kc)[i] = pg_f32_to_bf16(frand() * 2);
            ((uint16_t *)s->vc)[i] = pg_f32_to_bf16(frand() * 2);
        } else {
            ((uint8_t *)s->kc)[i] = rand_fp8(kv_type == CU_KV_E5M2);
            ((uint8_t *)s->vc)[i] = rand_fp8(kv_type == CU_KV_E5M2);
        }
    }
}

static void setup_init(struct pg_setup *s, int n, const int *len, const int *nnew, int nh, int nkv, int hd, int kv_type) {
    setup_init_bs(s, n, len, nnew, nh, nkv, hd, kv_type, 16);
}

static size_t cidx(const struct pg_setup *s, int seq, int j, int kvh, int d) {
    int blk = s->bt[seq * s->bt_stride + j / s->bs];
    return (((size_t)blk * s->nkv + kvh) * s->bs + j % s->bs) * s->hd + d;
}

struct dev_step {
    struct cu_step st;
    void *buf[8];
};

static void dev_step_init(struct dev_step *d, const struct pg_setup *s) {
    d->st = step_to_dev(s->T, s->n, s->tok_seq, s->tok_pos, s->len, s->q0, s->nnew, s->bt, s->bt_stride, d->buf);
}
static void dev_step_free(struct dev_step *d) {
    for (int i = 0; i < 6; i++) cudaFree(d->buf[i]);
}

// Reference attention for token t (query q: hd floats of head h), over keys [0, pos] of seq.
static void ref_attn(const struct pg_setup *s, int seq, int pos, int h, const uint16_t *q, double *out) {
    int kvh = h / (s->nh / s->nkv), hd = s->hd;
    double *sc = pg_malloc(sizeof(double) * (pos + 1)), mx = -1e300, z = 0;
    for (int j = 0; j <= pos; j++) {
        double d = 0;
        for (int k = 0; k < hd; k++) d += (double)bf(q[k]) * kv_get(s->kc, cidx(s, seq, j, kvh, k), s->kv_type);
        sc[j] = d / sqrt((double)hd);
        if (sc[j] > mx) mx = sc[j];
    }
    for (int j = 0; j <= pos; j++) z += (sc[j] = exp(sc[j] - mx));
    for (int k = 0; k < hd; k++) {
        double a = 0;
        for (int j = 0; j <= pos; j++) a += sc[j] * kv_get(s->vc, cidx(s, seq, j, kvh, k), s->kv_type);
        out[k] = a / z;
    }
    free(sc);
}

static void setup_free(struct pg_setup *s) {
    free(s->kc), free(s->vc), free(s->bt), free(s->tok_seq), free(s->tok_pos);
}

// An attention case's device side (caches, random queries, output, step arrays) and the
// host reference for every query row.
struct attn_io {
    size_t qn;
    uint16_t *q;
    double *ref;
    void *dk, *dv, *dq;
    bf16_t *dout;
    struct dev_step ds;
};

static void attn_io_init(struct attn_io *a, const struct pg_setup *s) {
    const size_t es = s->kv_type == CU_KV_BF16 ? 2 : 1;
    a->qn = (size_t)s->T * s->nh * s->hd;
    a->dk = dup_to_dev(s->kc, s->cache_elems * es), a->dv = dup_to_dev(s->vc, s->cache_elems * es);
    a->q = rand_bf16(a->qn, 1.0f);
    a->dq = dup_to_dev(a->q, a->qn * 2);
    a->dout = dmalloc(a->qn * 2);
    dev_step_init(&a->ds, s);
    a->ref = pg_malloc(sizeof(double) * a->qn);
    for (int t = 0; t < s->T; t++)
        for (int h = 0; h < s->nh; h++) {
            const size_t o = ((size_t)t * s->nh + h) * s->hd;
            ref_attn(s, s->tok_seq[t], s->tok_pos[t], h, a->q + o, a->ref + o);
        }
}

static void attn_io_free(struct attn_io *a) {
    dev_step_free(&a->ds);
    cudaFree(a->dk), cudaFree(a->dv), cudaFree(a->dq), cudaFree(a->dout);
    free(a->q), free(a->ref);
}

static void run_attn_case(int nh, int nkv, int hd, int kv_type, bool prefill, int splits) {
    int len_d[5] = {1, 16, 17, 333, 1500}, nn_d[5] = {1, 1, 1, 1, 1};
    int len_p[5] = {100, 101, 300, 64, 77}, nn_p[5] = {100, 64, 130, 1, 40};
    struct pg_setup s;
    setup_init(&s, 5, prefill ? len_p : len_d, prefill ? nn_p : nn_d, nh, nkv, hd, kv_type);
    struct attn_io a;
    attn_io_init(&a, &s);
    if (prefill) {
        int32_t tiles[64];
        int nt = 0;
        for (int i = 0; i < s.n; i++)
            for (int j = 0; j < s.nnew[i]; j += CU_PREFILL_TILE) tiles[2 * nt] = i, tiles[2 * nt + 1] = j, nt++;
        void *dt = dup_to_dev(tiles, sizeof(int32_t) * 2 * nt);
        cu_attn_prefill(a.dq, &a.ds.st, dt, nt, nh, nkv, hd, 16, kv_type, a.dk, a.dv, a.dout, 0);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        cudaFree(dt);
    } else {
        int32_t seqs[5] = {0, 1, 2, 3, 4};
        void *dseqs = dup_to_dev(seqs, sizeof seqs);
        float *part = dmalloc(sizeof(float) * (CU_ATTN_TICKETS + (size_t)5 * nh * splits * (hd + 2)));
        assert_int_equal(cudaMemset(part, 0, CU_ATTN_TICKETS * 4), cudaSuccess);  // tickets
        cu_attn_decode(a.dq, &a.ds.st, dseqs, 5, nh, nkv, hd, 16, kv_type, a.dk, a.dv, splits, part, a.dout, 0);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        cudaFree(dseqs), cudaFree(part);
    }
    uint16_t *out = pg_malloc(a.qn * 2);
    to_host(out, a.dout, a.qn * 2);
    char name[96];
    snprintf(name, sizeof name, "attn %s %dq/%dkv hd%d kv%d splits%d", prefill ? "prefill" : "decode", nh, nkv, hd,
             kv_type, splits);
    CHECK_ERR(name, rel_err_bf16(out, a.ref, a.qn), prefill ? 1.5e-2 : 8e-3);
    attn_io_free(&a);
    setup_free(&s);
    free(out);
}

// Decode over n sequences of lengths len (block size bs, up to `splits` splits), launched
// twice with the same scratch (the second launch needs the tickets the first re-armed) and
// the output poisoned before each: both must match the host reference and each other bit
// for bit (the split merge runs in a fixed order).
static void run_decode_case(int nh, int nkv, int hd, int kv_type, int bs, int n, const int *len, int splits) {
    int nn[8];
    for (int i = 0; i < n; i++) nn[i] = 1;
    struct pg_setup s;
    setup_init_bs(&s, n, len, nn, nh, nkv, hd, kv_type, bs);
    struct attn_io a;
    attn_io_init(&a, &s);
    int32_t seqs[8];
    for (int i = 0; i < n; i++) seqs[i] = n - 1 - i;  // not the identity: output rows follow seq_q0
    void *dseqs = dup_to_dev(seqs, sizeof(int32_t) * n);
    float *part = dmalloc(sizeof(float) * (CU_ATTN_TICKETS + (size_t)n * nh * splits * (hd + 2)));
    assert_int_equal(cudaMemset(part, 0, CU_ATTN_TICKETS * 4), cudaSuccess);  // tickets
    uint16_t *out[2];
    char name[128];
    for (int run = 0; run < 2; run++) {
        assert_int_equal(cudaMemset(a.dout, 0xff, a.qn * 2), cudaSuccess);
        cu_attn_decode(a.dq, &a.ds.st, dseqs, n, nh, nkv, hd, bs, kv_type, a.dk, a.dv, splits, part, a.dout, 0);
        out[run] = pg_malloc(a.qn * 2);
        to_host(out[run], a.dout, a.qn * 2);
        snprintf(name, sizeof name, "attn decode %dq/%dkv hd%d kv%d bs%d n%d (len0 %d) splits%d run%d", nh, nkv, hd,
                 kv_type, bs, n, len[0], splits, run);
        CHECK_ERR(name, rel_err_bf16(out[run], a.ref, a.qn), 8e-3);
    }
    uint32_t tickets[64];
    to_host(tickets, part, sizeof tickets);
    for (int i = 0; i < n * nkv && i < 64; i++) assert_int_equal(tickets[i], 0);  // re-armed
    assert_memory_equal(out[0], out[1], a.qn * 2);
    attn_io_free(&a);
    setup_free(&s);
    cudaFree(dseqs), cudaFree(part);
    free(out[0]), free(out[1]);
}

static void test_attn_decode(void **state) {
    (void)state;
    run_attn_case(40, 8, 128, CU_KV_BF16, false, 1);
    run_attn_case(40, 8, 128, CU_KV_BF16, false, 7);
    run_attn_case(40, 8, 128, CU_KV_BF16, false, 32);
    run_attn_case(14, 2, 64, CU_KV_BF16, false, 5);
    run_attn_case(40, 8, 128, CU_KV_E4M3, false, 8);
    run_attn_case(14, 2, 64, CU_KV_E5M2, false, 3);
}

// Contexts 1, 17, 512, 3000 (and 33, 129) in one call; G = 5 (14B), 7 (0.5B), 8 and 1;
// head_dim 128 and 64; block sizes 16 and 32; one split and many; bf16 and fp8 caches.
static void test_attn_decode_paged(void **state) {
    (void)state;
    const int lens[6] = {1, 17, 512, 3000, 33, 129}, lens2[4] = {3000, 1, 512, 17};
    run_decode_case(40, 8, 128, CU_KV_BF16, 16, 6, lens, 1);
    run_decode_case(40, 8, 128, CU_KV_BF16, 16, 6, lens, 32);
    run_decode_case(40, 8, 128, CU_KV_BF16, 32, 6, lens, 7);
    run_decode_case(14, 2, 64, CU_KV_BF16, 32, 4, lens2, 64);
    run_decode_case(14, 2, 64, CU_KV_BF16, 16, 6, lens, 1);
    run_decode_case(40, 8, 128, CU_KV_E4M3, 16, 4, lens2, 8);
    run_decode_case(40, 8, 128, CU_KV_E5M2, 32, 4, lens2, 32);
    run_decode_case(14, 2, 64, CU_KV_E5M2, 16, 6, lens, 3);
    run_decode_case(14, 2, 64, CU_KV_E4M3, 32, 4, lens2, 1);
    run_decode_case(16, 2, 128, CU_KV_BF16, 16, 4, lens2, 16);
    run_decode_case(4, 4, 64, CU_KV_BF16, 32, 4, lens2, 5);
    // the bench hook's shorter splits: one tile per block (warps 1-3 idle), up to 64 splits
    cu_attn_decode_tune(32);
    run_decode_case(40, 8, 128, CU_KV_BF16, 16, 6, lens, 64);
    run_decode_case(14, 2, 64, CU_KV_E4M3, 32, 4, lens2, 16);
    cu_attn_decode_tune(128);  // four tiles per block, all warps busy
    run_decode_case(40, 8, 128, CU_KV_BF16, 32, 6, lens, 33);
    cu_attn_decode_tune(0);
}

// cu_attn_trace over one decode launch (sequences of 17 and 512 keys, `splits` splits asked,
// `launched` in the grid): every block stamps its start and wait; blocks with keys (a prefix
// of the splits: at least 64 keys each) each later phase in order, and one of them (with
// more than one split holding keys; split 0 when the cluster merges) the merge; the others
// nothing more. Nothing lands past the launch's slot. The output still matches the reference.
static void run_trace_case(int splits, int launched, bool cluster) {
    const int nh = 40, nkv = 8, hd = 128, n = 2, len[2] = {17, 512}, nn[2] = {1, 1};
    struct pg_setup s;
    setup_init(&s, n, len, nn, nh, nkv, hd, CU_KV_BF16);
    struct attn_io a;
    attn_io_init(&a, &s);
    const int32_t seqs[2] = {1, 0};
    void *dseqs = dup_to_dev(seqs, sizeof seqs);
    float *part = dmalloc(sizeof(float) * (CU_ATTN_TICKETS + (size_t)n * nh * splits * (hd + 2)));
    assert_int_equal(cudaMemset(part, 0, CU_ATTN_TICKETS * 4), cudaSuccess);  // tickets
    const int blocks = launched * nkv * n;
    const size_t tr_bytes = sizeof(uint64_t) * 2 * blocks * 8;  // this launch's slot and the next
    uint64_t *dtr = dmalloc(tr_bytes), *tr = pg_malloc(tr_bytes);
    assert_int_equal(cudaMemset(dtr, 0, tr_bytes), cudaSuccess);
    cu_attn_decode_tune(0);
    cu_attn_trace(dtr, blocks);
    cu_attn_decode(a.dq, &a.ds.st, dseqs, n, nh, nkv, hd, 16, CU_KV_BF16, a.dk, a.dv, splits, part, a.dout, 0);
    cu_attn_trace(NULL, 0);
    uint16_t *out = pg_malloc(a.qn * 2);
    to_host(out, a.dout, a.qn * 2);
    to_host(tr, dtr, tr_bytes);
    char name[96];
    snprintf(name, sizeof name, "attn decode traced, splits%d (%d launched)", splits, launched);
    CHECK_ERR(name, rel_err_bf16(out, a.ref, a.qn), 8e-3);
    for (int i = 0; i < n; i++) {
        const int L = len[seqs[i]];
        int chunk = ((L + launched - 1) / launched + 31) / 32 * 32;
        if (chunk < 64) chunk = 64;
        const int ns = (L + chunk - 1) / chunk;
        for (int kvh = 0; kvh < nkv; kvh++) {
            int merged = 0;
            for (int sp = 0; sp < launched; sp++) {
                const uint64_t *t = tr + ((size_t)(i * nkv + kvh) * launched + sp) * 8;
                assert_true(t[0] != 0 && t[1] >= t[0]);
                if (sp >= ns) {
                    for (int k = 2; k < 6; k++) assert_true(t[k] == 0);
                    continue;
                }
                assert_true(t[2] >= t[1] && t[3] >= t[2] && t[4] >= t[3]);
                if (t[5]) {
                    assert_true(t[5] >= t[4]);
                    if (cluster) assert_int_equal(sp, 0);
                    merged++;
                }
            }
            assert_int_equal(merged, ns > 1);
        }
    }
    for (size_t k = (size_t)blocks * 8; k < (size_t)2 * blocks * 8; k++) assert_true(tr[k] == 0);
    attn_io_free(&a);
    setup_free(&s);
    cudaFree(dseqs), cudaFree(part), cudaFree(dtr);
    free(out), free(tr);
}

static void test_attn_trace(void **state) {
    (void)state;
    run_trace_case(32, 32, false);
}

// The decode attention tests again with the split merge through a thread block cluster
// (cu_attn_decode_cluster: at most 8 splits launched, one cluster per (sequence, kv head),
// states merged through distributed shared memory; one split keeps the plain kernel), so
// cluster sizes 2..8 with splits without keys. Before sm_90 the hook is ignored and they
// repeat the ticket path.
static void test_attn_decode_cluster(void **state) {
    int major = 0;
    assert_int_equal(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
    if (major < 9) print_message("no thread block clusters before sm_90: the ticket path again\n");
    cu_attn_decode_cluster(1);
    test_attn_decode(state);
    test_attn_decode_paged(state);
    run_trace_case(32, major >= 9 ? 8 : 32, major >= 9);
    run_trace_case(5, 5, major >= 9);
}
static int cluster_hook_reset(void **state) {
    (void)state;
    cu_attn_decode_cluster(-1);
    return 0;
}
// The cluster merge is the default where the device has clusters: the plain decode tests run
// the ticket merge explicitly (the end-to-end tests run the default).
static int ticket_hook(void **state) {
    (void)state;
    cu_attn_decode_cluster(0);
    return 0;
}

// The new key's K and V rows (position len - 1 of each sequence) come from the kernel just
// before the attention, which under PDL starts before that kernel ends and reads every older
// row before its pdl_wait. Here the new rows are poisoned (NaN) in the cache and a kernel that
// lets the attention launch at once rewrites the whole cache after 20 us: the output must
// match the reference (a new row read early would be NaN). Without PDL (sm_80) the launches
// are serial and the case is a plain one.
static void run_fresh_row_case(int nh, int nkv, int hd, int kv_type, int bs, int splits) {
    const int n = 4, len[4] = {1, 33, 512, 3000}, nn[4] = {1, 1, 1, 1};
    struct pg_setup s;
    setup_init_bs(&s, n, len, nn, nh, nkv, hd, kv_type, bs);
    struct attn_io a;
    attn_io_init(&a, &s);
    const size_t es = kv_type == CU_KV_BF16 ? 2 : 1, bytes = s.cache_elems * es;
    void *gk = dup_to_dev(s.kc, bytes), *gv = dup_to_dev(s.vc, bytes);
    uint8_t *pk = pg_malloc(bytes), *pv = pg_malloc(bytes);
    memcpy(pk, s.kc, bytes), memcpy(pv, s.vc, bytes);
    for (int i = 0; i < n; i++)
        for (int kvh = 0; kvh < nkv; kvh++) {
            memset(pk + cidx(&s, i, len[i] - 1, kvh, 0) * es, 0xff, (size_t)hd * es);
            memset(pv + cidx(&s, i, len[i] - 1, kvh, 0) * es, 0xff, (size_t)hd * es);
        }
    assert_int_equal(cudaMemcpy(a.dk, pk, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(a.dv, pv, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    const int32_t seqs[4] = {2, 0, 3, 1};
    void *dseqs = dup_to_dev(seqs, sizeof seqs);
    float *part = dmalloc(sizeof(float) * (CU_ATTN_TICKETS + (size_t)n * nh * splits * (hd + 2)));
    assert_int_equal(cudaMemset(part, 0, CU_ATTN_TICKETS * 4), cudaSuccess);  // tickets
    assert_int_equal(cudaMemset(a.dout, 0xff, a.qn * 2), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    cu_test_delayed_copy(a.dk, gk, a.dv, gv, bytes, 20000, 0);
    cu_attn_decode(a.dq, &a.ds.st, dseqs, n, nh, nkv, hd, bs, kv_type, a.dk, a.dv, splits, part, a.dout, 0);
    uint16_t *out = pg_malloc(a.qn * 2);
    to_host(out, a.dout, a.qn * 2);
    char name[96];
    snprintf(name, sizeof name, "attn decode, new rows late: hd%d kv%d bs%d splits%d", hd, kv_type, bs, splits);
    CHECK_ERR(name, rel_err_bf16(out, a.ref, a.qn), 8e-3);
    attn_io_free(&a);
    setup_free(&s);
    cudaFree(gk), cudaFree(gv), cudaFree(dseqs), cudaFree(part);
    free(pk), free(pv), free(out);
}

// Both kernels (tensor cores for bf16, CUDA cores for every cache), both split merges.
static void test_attn_decode_fresh_row(void **state) {
    (void)state;
    for (int tc = 1; tc >= 0; tc--)
        for (int cl = 1; cl >= 0; cl--) {
            cu_attn_decode_tc(tc);
            cu_attn_decode_cluster(cl);
            run_fresh_row_case(40, 8, 128, CU_KV_BF16, 16, 8);
            run_fresh_row_case(40, 8, 128, CU_KV_BF16, 32, 1);
            run_fresh_row_case(14, 2, 64, CU_KV_BF16, 16, 5);
            run_fresh_row_case(40, 8, 128, CU_KV_E4M3, 16, 8);
        }
}

// The decode tests on the CUDA-core kernel (bf16 caches take the tensor-core one by default;
// fp8 caches always run this one).
static void test_attn_decode_cuda_cores(void **state) {
    cu_attn_decode_tc(0);
    test_attn_decode(state);
    test_attn_decode_paged(state);
    run_trace_case(32, 32, false);
}
static int attn_hooks_reset(void **state) {
    (void)state;
    cu_attn_decode_cluster(-1);
    cu_attn_decode_tc(-1);
    return 0;
}

static void test_attn_prefill(void **state) {
    (void)state;
    run_attn_case(40, 8, 128, CU_KV_BF16, true, 0);
    run_attn_case(14, 2, 64, CU_KV_BF16, true, 0);
    run_attn_case(8, 8, 128, CU_KV_E4M3, true, 0);
    run_attn_case(12, 2, 128, CU_KV_E5M2, true, 0);
}

// ---- rope + kv store ----
static void run_rope_case(int nh, int nkv, int hd, int kv_type, bool with_bias) {
    int len[3] = {5, 40, 1000}, nn[3] = {5, 3, 1};
    struct pg_setup s;
    setup_init(&s, 3, len, nn, nh, nkv, hd, kv_type);
    const int W = (nh + 2 * nkv) * hd, T = s.T;
    uint16_t *qkv = rand_bf16((size_t)T * W, 2.0f);
    float *bias = pg_malloc(sizeof(float) * W);
    for (int i = 0; i < W; i++) bias[i] = with_bias ? frand() : 0.0f;
    size_t es = kv_type == CU_KV_BF16 ? 2 : 1;
    void *dqkv = dup_to_dev(qkv, (size_t)T * W * 2), *db = dup_to_dev(bias, 4 * W);
    void *dk = dmalloc(s.cache_elems * es), *dv = dmalloc(s.cache_elems * es);
    bf16_t *dq = dmalloc((size_t)T * nh * hd * 2);
    struct dev_step ds;
    dev_step_init(&ds, &s);
    cu_qkv_rope_store(dqkv, W, with_bias ? db : NULL, &ds.st, nh, nkv, hd, 1e6f, 16, kv_type, dk, dv, dq, 0);
    uint16_t *q = pg_malloc((size_t)T * nh * hd * 2);
    to_host(q, dq, (size_t)T * nh * hd * 2);
    to_host(s.kc, dk, s.cache_elems * es);
    to_host(s.vc, dv, s.cache_elems * es);
    size_t nq = (size_t)T * nh * hd, nkvv = (size_t)T * nkv * hd;
    double *rq = pg_malloc(sizeof(double) * nq), *rk = pg_malloc(sizeof(double) * nkvv), *rv = pg_malloc(sizeof(double) * nkvv);
    float *gk = pg_malloc(sizeof(float) * nkvv), *gv = pg_malloc(sizeof(float) * nkvv);
    for (int t = 0; t < T; t++) {
        const uint16_t *row = qkv + (size_t)t * W;
        int pos = s.tok_pos[t], seq = s.tok_seq[t];
        for (int h = 0; h < nh + nkv; h++)
            for (int i = 0; i < hd / 2; i++) {
                int c0 = h * hd + i, c1 = c0 + hd / 2;
                double a = bf(row[c0]) + bias[c0], b = bf(row[c1]) + bias[c1];
                double ang = pos * (1.0 / pow(1e6, 2.0 * i / hd)), ra = a * cos(ang) - b * sin(ang), rb = b * cos(ang) + a * sin(ang);
                if (h < nh) {
                    rq[((size_t)t * nh + h) * hd + i] = ra;
                    rq[((size_t)t * nh + h) * hd + i + hd / 2] = rb;
                } else {
                    int kh = h - nh;
                    size_t o = ((size_t)t * nkv + kh) * hd;
                    rk[o + i] = ra, rk[o + i + hd / 2] = rb;
                    gk[o + i] = kv_get(s.kc, cidx(&s, seq, pos, kh, i), kv_type);
                    gk[o + i + hd / 2] = kv_get(s.kc, cidx(&s, seq, pos, kh, i + hd / 2), kv_type);
                }
            }
        for (int c = 0; c < nkv * hd; c++) {
            size_t o = (size_t)t * nkv * hd + c;
            rv[o] = bf(row[(nh + nkv) * hd + c]) + bias[(nh + nkv) * hd + c];
            gv[o] = kv_get(s.vc, cidx(&s, seq, pos, c / hd, c % hd), kv_type);
        }
    }
    double tol = kv_type == CU_KV_BF16 ? 8e-3 : kv_type == CU_KV_E4M3 ? 0.06 : 0.12;
    char name[64];
    snprintf(name, sizeof name, "rope q nh%d nkv%d hd%d bias %d", nh, nkv, hd, with_bias);
    CHECK_ERR(name, rel_err_bf16(q, rq, nq), 8e-3);
    snprintf(name, sizeof name, "rope k -> cache (kv type %d)", kv_type);
    CHECK_ERR(name, rel_err_f(gk, rk, nkvv), tol);
    snprintf(name, sizeof name, "v -> cache (kv type %d)", kv_type);
    CHECK_ERR(name, rel_err_f(gv, rv, nkvv), tol);
    dev_step_free(&ds);
    cudaFree(dqkv), cudaFree(db), cudaFree(dk), cudaFree(dv), cudaFree(dq);
    free(qkv), free(bias), free(q), free(rq), free(rk), free(rv), free(gk), free(gv);
    setup_free(&s);
}

static void test_rope_store(void **state) {
    (void)state;
    run_rope_case(40, 8, 128, CU_KV_BF16, true);  // Qwen2.5-14B: 56 heads, 14 blocks per token
    run_rope_case(14, 2, 64, CU_KV_BF16, true);   // 18 heads: the last block has 2 idle warps
    run_rope_case(4, 2, 128, CU_KV_E4M3, true);
    run_rope_case(4, 2, 64, CU_KV_E5M2, true);
    run_rope_case(5, 1, 96, CU_KV_BF16, false);   // half 48: lanes 24..31 idle; no bias
    run_rope_case(8, 2, 256, CU_KV_BF16, true);   // half 128: two pairs of pairs per lane
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_rmsnorm), cmocka_unit_test(test_swiglu_bias_gather),
        cmocka_unit_test(test_rope_store),
        cmocka_unit_test_setup_teardown(test_attn_decode, ticket_hook, cluster_hook_reset),
        cmocka_unit_test_setup_teardown(test_attn_decode_paged, ticket_hook, cluster_hook_reset),
        cmocka_unit_test_setup_teardown(test_attn_trace, ticket_hook, cluster_hook_reset),
        cmocka_unit_test_teardown(test_attn_decode_cluster, cluster_hook_reset),
        cmocka_unit_test_setup_teardown(test_attn_decode_cuda_cores, ticket_hook, attn_hooks_reset),
        cmocka_unit_test_teardown(test_attn_decode_fresh_row, attn_hooks_reset),
        cmocka_unit_test(test_attn_prefill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
