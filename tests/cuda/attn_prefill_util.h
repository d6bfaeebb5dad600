// Paged prefill-attention setups shared by test_cuda_attn_prefill.c and bench_attn_prefill.c:
// n sequences (len = keys visible to the last new token, nnew = new tokens, so the queries
// start at pos0 = len - nnew), any power-of-two block size, block tables over a shuffled
// pool, random Q and K/V (bf16 or fp8 bytes), the CU_PREFILL_TILE tile list, and the device
// copies. With `poison`, every cache slot no sequence owns (past len, unused blocks) holds NaN,
// so a kernel reading keys it must not read fails the error check.
#pragma once
#include "cuda_test_util.h"

#define PF_MAX_SEQS 8

struct pf_case {
    int n, nh, nkv, hd, kv_type, bs;
    int len[PF_MAX_SEQS], nnew[PF_MAX_SEQS];
};

struct pf_setup {
    struct pf_case c;
    int T, q0[PF_MAX_SEQS], nblocks, bt_stride, n_tiles;
    int32_t *bt, *tiles, *tok_seq, *tok_pos;
    uint16_t *q;            // host (T, nh, hd)
    void *kc, *vc;          // host caches
    size_t cache_elems, es;
    void *dk, *dv, *dq, *dtiles, *dbuf[6];
    bf16_t *dout;
    struct cu_step st;
};

static inline uint8_t pf_rand_fp8(int e5m2) {  // finite, |v| <= 4
    for (;;) {
        uint8_t b = (uint8_t)urand();
        int e = e5m2 ? (b >> 2) & 31 : (b >> 3) & 15;
        if (e5m2 ? e > 16 : e > 8) continue;  // also excludes inf / NaN encodings
        return b;
    }
}

static inline double pf_kv_get(const struct pf_setup *s, const void *cache, size_t i) {
    if (s->c.kv_type == CU_KV_BF16) return bf(((const uint16_t *)cache)[i]);
    return fp8_to_d(((const uint8_t *)cache)[i], s->c.kv_type == CU_KV_E5M2);
}

static inline void pf_fill_slot(struct pf_setup *s, size_t i, bool nan) {
    int t = s->c.kv_type;
    for (int w = 0; w < 2; w++) {
        void *cache = w ? s->vc : s->kc;
        if (t == CU_KV_BF16)
            ((uint16_t *)cache)[i] = nan ? 0x7fc1 : pg_f32_to_bf16(frand() * 2);
        else
            ((uint8_t *)cache)[i] = nan ? 0x7f : pf_rand_fp8(t == CU_KV_E5M2);  // 0x7f: NaN in both
    }
}

static inline void pf_setup_init(struct pf_setup *s, const struct pf_case *c, bool poison) {
    memset(s, 0, sizeof *s);
    s->c = *c;
    const int bs = c->bs;
    for (int i = 0; i < c->n; i++) {
        s->q0[i] = s->T, s->T += c->nnew[i];
        s->n_tiles += (c->nnew[i] + CU_PREFILL_TILE - 1) / CU_PREFILL_TILE;
    }
    s->bt = shuffled_block_tables(c->n, c->len, bs, &s->bt_stride, &s->nblocks);
    s->tiles = pg_malloc(sizeof(int32_t) * 2 * s->n_tiles);
    s->tok_seq = pg_malloc(sizeof(int32_t) * s->T);
    s->tok_pos = pg_malloc(sizeof(int32_t) * s->T);
    for (int i = 0, nt = 0; i < c->n; i++) {
        for (int j = 0; j < c->nnew[i]; j += CU_PREFILL_TILE) s->tiles[2 * nt] = i, s->tiles[2 * nt + 1] = j, nt++;
        for (int j = 0; j < c->nnew[i]; j++)
            s->tok_seq[s->q0[i] + j] = i, s->tok_pos[s->q0[i] + j] = c->len[i] - c->nnew[i] + j;
    }
    s->cache_elems = (size_t)s->nblocks * c->nkv * bs * c->hd;
    s->es = c->kv_type == CU_KV_BF16 ? 2 : 1;
    s->kc = pg_malloc(s->cache_elems * s->es);
    s->vc = pg_malloc(s->cache_elems * s->es);
    for (size_t i = 0; i < s->cache_elems; i++) pf_fill_slot(s, i, poison);
    if (poison)  // real values only where a sequence owns the slot
        for (int i = 0; i < c->n; i++)
            for (int j = 0; j < c->len[i]; j++) {
                int blk = s->bt[i * s->bt_stride + j / bs];
                for (int h = 0; h < c->nkv; h++)
                    for (int d = 0; d < c->hd; d++)
                        pf_fill_slot(s, (((size_t)blk * c->nkv + h) * bs + j % bs) * c->hd + d, false);
            }
    size_t qn = (size_t)s->T * c->nh * c->hd;
    s->q = rand_bf16(qn, 1.0f);
    s->dk = dup_to_dev(s->kc, s->cache_elems * s->es);
    s->dv = dup_to_dev(s->vc, s->cache_elems * s->es);
    s->dq = dup_to_dev(s->q, qn * 2);
    s->dout = dmalloc(qn * 2);
    s->dtiles = dup_to_dev(s->tiles, sizeof(int32_t) * 2 * s->n_tiles);
    s->st = step_to_dev(s->T, c->n, s->tok_seq, s->tok_pos, c->len, s->q0, c->nnew, s->bt, s->bt_stride, s->dbuf);
}

static inline void pf_run(struct pf_setup *s, cudaStream_t st) {
    const struct pf_case *c = &s->c;
    cu_attn_prefill(s->dq, &s->st, s->dtiles, s->n_tiles, c->nh, c->nkv, c->hd, c->bs, c->kv_type, s->dk, s->dv,
                    s->dout, st);
}

static inline void pf_setup_free(struct pf_setup *s) {
    for (int i = 0; i < 6; i++) cudaFree(s->dbuf[i]);
    cudaFree(s->dk), cudaFree(s->dv), cudaFree(s->dq), cudaFree(s->dout), cudaFree(s->dtiles);
    free(s->bt), free(s->tiles), free(s->tok_seq), free(s->tok_pos), free(s->q), free(s->kc), free(s->vc);
}

// Causal FLOPs of the case: 2 (QK^T) * 2 (PV) * nh * hd * sum over queries of keys visible.
static inline double pf_flops(const struct pf_case *c) {
    double keys = 0;
    for (int i = 0; i < c->n; i++) {
        double p0 = c->len[i] - c->nnew[i];
        keys += c->nnew[i] * (p0 + 1) + (double)c->nnew[i] * (c->nnew[i] - 1) / 2;
    }
    return 4.0 * c->nh * c->hd * keys;
}
