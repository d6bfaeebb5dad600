// Uploads a model_weights to the device in the CUDA backend's layouts: dense weights as
// bf16 (out, in); GPTQ 4-bit in the tile layout of backend/gptq_pack.h + packed (fp16 scale |
// zero << 16) per group and column, desc_act rows reordered into group order (the
// activations are permuted by the same map before the GEMM); q/k/v and gate/up fused when
// formats agree. 8-bit GPTQ and shapes the int4 kernels do not take (cu_gptq_tc_supported:
// in % 64, out % 16, group size % 64) are dequantized to dense bf16 here.
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/gptq_pack.h"

static void *dev_alloc(struct cuda_ctx *c, size_t bytes) {
    void *p = NULL;
    if (CU_CHECK(cudaMalloc(&p, bytes ? bytes : 16))) return NULL;
    c->weight_bytes += bytes;
    return p;
}

// Host -> device on the backend's stream, waited for. A plain cudaMemcpy from pageable memory
// may return before its DMA lands, and kernels on the non-blocking stream c->st (the dtype
// conversions, the dequantized copies) would not wait for it: measured as init-time races on
// the H200 (garbage dense copies in 2 of 7 runs of test_cuda_model).
static int h2d(struct cuda_ctx *c, void *dst, const void *src, size_t bytes) {
    return CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->st)) ||
           CU_CHECK(cudaStreamSynchronize(c->st));
}

// dst (n elements bf16) <- t (BF16/F16/F32)
static int upload_dense(struct cuda_ctx *c, bf16_t *dst, const struct tensor *t, size_t n) {
    if (t->dtype == PG_BF16) return h2d(c, dst, t->data, n * 2);
    if (t->dtype == PG_F16) {
        if (h2d(c, dst, t->data, n * 2)) return -1;
        cu_f16_to_bf16(dst, n, dst, c->st);
        return CU_CHECK(cudaStreamSynchronize(c->st));
    }
    if (t->dtype == PG_F32) {
        float *tmp = NULL;
        if (CU_CHECK(cudaMalloc(&tmp, n * 4))) return -1;
        int rc = h2d(c, tmp, t->data, n * 4);
        if (!rc) cu_f32_to_bf16(tmp, n, dst, c->st);
        rc |= CU_CHECK(cudaStreamSynchronize(c->st));
        cudaFree(tmp);
        return rc;
    }
    return cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "unsupported dense dtype");
}

static bf16_t *upload_vec(struct cuda_ctx *c, const struct tensor *t, size_t n) {
    if (!t->data) return NULL;
    bf16_t *d = (bf16_t *)dev_alloc(c, n * 2);
    if (!d || upload_dense(c, d, t, n)) return NULL;
    return d;
}

static float scale_at(const struct tensor *s, size_t i) {
    if (s->dtype == PG_F16) return pg_f16_to_f32(((const uint16_t *)s->data)[i]);
    if (s->dtype == PG_BF16) return pg_bf16_to_f32(((const uint16_t *)s->data)[i]);
    return ((const float *)s->data)[i];
}

static int nibble(const struct linear *l, int i, int o) {
    int per = 32 / l->bits;
    uint32_t wd = (uint32_t)l->qweight[(size_t)(i / per) * l->out + o];
    return (int)((wd >> ((i % per) * l->bits)) & ((1u << l->bits) - 1));
}

// Dequantized W (out, in) as bf16 on the host (for 8-bit and odd shapes).
static uint16_t *dequant_host(const struct linear *l) {
    uint16_t *w = (uint16_t *)pg_malloc((size_t)l->out * l->in * 2);
    for (int i = 0; i < l->in; i++) {
        int g = l->g_idx[i];
        for (int o = 0; o < l->out; o++) {
            float v = (float)(nibble(l, i, o) - l->zeros[(size_t)g * l->out + o]) * scale_at(&l->scales, (size_t)g * l->out + o);
            w[(size_t)o * l->in + i] = pg_f32_to_bf16(v);
        }
    }
    return w;
}

static bool int4_ok(const struct linear *l) {
    return l->quantized && l->bits == 4 && cu_gptq_tc_supported(l->in, l->out, l->group_size);
}

// Group order of the rows: perm[new] = old, stable; fails unless every group has group_size rows.
static int make_perm(const struct linear *l, int32_t *perm, char *err) {
    int *cnt = (int *)pg_calloc(l->n_groups + 1, sizeof(int));
    for (int i = 0; i < l->in; i++) {
        if (l->g_idx[i] < 0 || l->g_idx[i] >= l->n_groups) {
            free(cnt);
            pg_seterr(err, "g_idx[%d] = %d out of range (%d groups)", i, l->g_idx[i], l->n_groups);
            return -1;
        }
        cnt[l->g_idx[i] + 1]++;
    }
    for (int g = 0; g < l->n_groups; g++) {
        if (cnt[g + 1] != l->group_size) {
            free(cnt);
            pg_seterr(err, "act-order group %d has %d rows, expected %d", g, cnt[g + 1], l->group_size);
            return -1;
        }
        cnt[g + 1] += cnt[g];
    }
    for (int i = 0; i < l->in; i++) perm[cnt[l->g_idx[i]]++] = i;
    free(cnt);
    return 0;
}

// Fuses parts[0..n) (all int4_ok, same in/group_size/g_idx) into one device linear.
static int upload_gptq(struct cuda_ctx *c, const struct linear *const *parts, int n, struct dlin *d, char *err) {
    const struct linear *l0 = parts[0];
    int in = l0->in, out = 0, gs = l0->group_size, ng = l0->n_groups;
    for (int p = 0; p < n; p++) out += parts[p]->out;
    int32_t *perm = NULL;
    if (l0->desc_act) {
        perm = (int32_t *)pg_malloc(sizeof(int32_t) * in);
        if (make_perm(l0, perm, err)) {
            free(perm);
            return -1;
        }
    }
    int32_t *qw = (int32_t *)pg_malloc((size_t)(in / 8) * out * 4);
    uint32_t *sz = (uint32_t *)pg_malloc((size_t)ng * out * 4);
    int col = 0;
    for (int p = 0; p < n; p++) {
        const struct linear *l = parts[p];
        for (int k = 0; k < in / 8; k++) {
            int32_t *dst = qw + (size_t)k * out + col;
            if (!perm) {
                memcpy(dst, l->qweight + (size_t)k * l->out, (size_t)l->out * 4);
                continue;
            }
            for (int o = 0; o < l->out; o++) {
                uint32_t v = 0;
                for (int j = 0; j < 8; j++) v |= (uint32_t)nibble(l, perm[k * 8 + j], o) << (4 * j);
                dst[o] = (int32_t)v;
            }
        }
        for (int g = 0; g < ng; g++)
            for (int o = 0; o < l->out; o++) {
                size_t i = (size_t)g * l->out + o;
                uint16_t h = l->scales.dtype == PG_F16 ? ((const uint16_t *)l->scales.data)[i] : pg_f32_to_f16(scale_at(&l->scales, i));
                sz[(size_t)g * out + col + o] = h | ((uint32_t)l->zeros[i] << 16);
            }
        col += l->out;
    }
    // Checkpoint layout -> tile layout (backend/gptq_pack.h).
    int32_t *tiles = (int32_t *)pg_malloc((size_t)(in / 8) * out * 4);
    uint32_t *sz_tiles = (uint32_t *)pg_malloc((size_t)ng * out * 4);
    gptq_tile_pack((const uint32_t *)qw, in, out, (uint32_t *)tiles);
    gptq_tile_pack_sz(sz, ng, out, sz_tiles);
    free(qw);
    free(sz);
    qw = tiles;
    sz = sz_tiles;
    memset(d, 0, sizeof *d);
    d->in = in;
    d->out = out;
    d->quant = true;
    d->q.in = in;
    d->q.out = out;
    d->q.group_size = gs;
    d->q.n_groups = ng;
    int32_t *dq = (int32_t *)dev_alloc(c, (size_t)(in / 8) * out * 4);
    uint32_t *dsz = (uint32_t *)dev_alloc(c, (size_t)ng * out * 4);
    int rc = !dq || !dsz;
    if (!rc) rc = h2d(c, dq, qw, (size_t)(in / 8) * out * 4) ||
                  h2d(c, dsz, sz, (size_t)ng * out * 4);
    if (!rc && perm) {
        d->perm = (int32_t *)dev_alloc(c, (size_t)in * 4);
        rc = !d->perm || h2d(c, d->perm, perm, (size_t)in * 4);
    }
    d->q.qweight = dq;
    d->q.sz = dsz;
    free(qw);
    free(sz);
    free(perm);
    return rc ? -1 : 0;
}

static int upload_dense_parts(struct cuda_ctx *c, const struct linear *const *parts, int n, struct dlin *d) {
    int in = parts[0]->in, out = 0;
    for (int p = 0; p < n; p++) out += parts[p]->out;
    memset(d, 0, sizeof *d);
    d->in = in;
    d->out = out;
    d->w = (bf16_t *)dev_alloc(c, (size_t)out * in * 2);
    if (!d->w) return -1;
    size_t off = 0;
    for (int p = 0; p < n; p++) {
        const struct linear *l = parts[p];
        size_t ne = (size_t)l->out * l->in;
        if (l->quantized) {
            uint16_t *h = dequant_host(l);
            struct tensor t = {PG_BF16, 2, {l->out, l->in, 0, 0}, h};
            int rc = upload_dense(c, d->w + off, &t, ne);
            free(h);
            if (rc) return -1;
        } else if (upload_dense(c, d->w + off, &l->w, ne)) {
            return -1;
        }
        off += ne;
    }
    return 0;
}

static float *bias_concat(struct cuda_ctx *c, const struct linear *const *parts, int n) {
    int out = 0, any = 0;
    for (int p = 0; p < n; p++) {
        out += parts[p]->out;
        any |= parts[p]->bias.data != NULL;
    }
    if (!any) return NULL;
    float *h = (float *)pg_calloc(out, sizeof(float));
    int col = 0;
    for (int p = 0; p < n; p++) {
        if (parts[p]->bias.data) pg_to_f32(parts[p]->bias.dtype, parts[p]->bias.data, h + col, parts[p]->out);
        col += parts[p]->out;
    }
    float *d = (float *)dev_alloc(c, (size_t)out * 4);
    if (d && h2d(c, d, h, (size_t)out * 4)) d = NULL;
    free(h);
    return d;
}

static bool fusable(const struct linear *const *parts, int n) {
    for (int p = 1; p < n; p++) {
        const struct linear *a = parts[0], *b = parts[p];
        if (a->in != b->in || int4_ok(a) != int4_ok(b)) return false;
        if (!int4_ok(a)) continue;
        if (a->group_size != b->group_size || a->desc_act != b->desc_act) return false;
        if (a->desc_act && memcmp(a->g_idx, b->g_idx, sizeof(int32_t) * a->in)) return false;
    }
    return true;
}

static int upload_one(struct cuda_ctx *c, const struct linear *const *parts, int n, struct dlin *d, char *err) {
    if (int4_ok(parts[0])) return upload_gptq(c, parts, n, d, err);
    return upload_dense_parts(c, parts, n, d);
}

// bias_in_dlin: whether the linear adds its own bias (false for q/k/v: the rope kernel does).
static int upload_group(struct cuda_ctx *c, const struct linear *const *parts, int n, struct dgroup *g,
                        bool bias_in_dlin, char *err) {
    memset(g, 0, sizeof *g);
    if (fusable(parts, n)) {
        g->n = 1;
        if (upload_one(c, parts, n, &g->part[0], err)) return -1;
        if (bias_in_dlin) g->part[0].bias = bias_concat(c, parts, n);
        g->out = g->part[0].out;
        return 0;
    }
    g->n = n;
    for (int p = 0; p < n; p++) {
        g->col[p] = g->out;
        if (upload_one(c, parts + p, 1, &g->part[p], err)) return -1;
        if (bias_in_dlin) g->part[p].bias = bias_concat(c, parts + p, 1);
        g->out += parts[p]->out;
    }
    return 0;
}

int cuw_upload(struct cuda_ctx *c, const struct model_weights *w, char *err) {
    const struct model_config *m = &w->cfg;
    c->embed = upload_vec(c, &w->embed, (size_t)m->vocab * m->hidden);
    c->final_norm = upload_vec(c, &w->final_norm, m->hidden);
    if (!c->embed || !c->final_norm) goto fail;
    if (w->lm_head.w.data == w->embed.data || !w->lm_head.w.data) {
        c->lm_head = c->embed;
    } else {
        c->lm_head = upload_vec(c, &w->lm_head.w, (size_t)m->vocab * m->hidden);
        if (!c->lm_head) goto fail;
    }
    c->layers = (struct dlayer *)pg_calloc(m->n_layers, sizeof(struct dlayer));
    for (int i = 0; i < m->n_layers; i++) {
        const struct layer_weights *L = &w->layers[i];
        struct dlayer *d = &c->layers[i];
        const struct linear *qkv[3] = {&L->q, &L->k, &L->v}, *gu[2] = {&L->gate, &L->up};
        const struct linear *o[1] = {&L->o}, *dn[1] = {&L->down};
        d->attn_norm = upload_vec(c, &L->attn_norm, m->hidden);
        d->ffn_norm = upload_vec(c, &L->ffn_norm, m->hidden);
        if (!d->attn_norm || !d->ffn_norm) goto fail;
        if (upload_group(c, qkv, 3, &d->qkv, false, err) || upload_group(c, gu, 2, &d->gu, true, err) ||
            upload_one(c, o, 1, &d->o, err) || upload_one(c, dn, 1, &d->down, err))
            goto fail;
        d->o.bias = bias_concat(c, o, 1);
        d->down.bias = bias_concat(c, dn, 1);
        d->qkv_bias = bias_concat(c, qkv, 3);
        c->qkv_out = d->qkv.out;
        c->gu_out = d->gu.out;
    }
    if (cu_take_error(err)) return -1;
    return 0;
fail:
    if (!cu_take_error(err) && err && !err[0]) pg_seterr(err, "weight upload failed");
    return -1;
}

static void dlin_free(struct dlin *d) {
    cudaFree(d->w);
    cudaFree(d->wt);
    cudaFree((void *)d->q.qweight);
    cudaFree((void *)d->q.sz);
    cudaFree(d->perm);
    cudaFree(d->bias);
}

void cuw_free(struct cuda_ctx *c) {
    if (c->layers) {
        for (int i = 0; i < c->mc.n_layers; i++) {
            struct dlayer *d = &c->layers[i];
            cudaFree(d->attn_norm);
            cudaFree(d->ffn_norm);
            cudaFree(d->qkv_bias);
            for (int p = 0; p < d->qkv.n; p++) dlin_free(&d->qkv.part[p]);
            for (int p = 0; p < d->gu.n; p++) dlin_free(&d->gu.part[p]);
            dlin_free(&d->o);
            dlin_free(&d->down);
        }
        free(c->layers);
        c->layers = NULL;
    }
    if (c->lm_head != c->embed) cudaFree(c->lm_head);
    cudaFree(c->embed);
    cudaFree(c->final_norm);
    c->embed = c->lm_head = c->final_norm = NULL;
}

static void need(const struct dlin *d, size_t *deq, size_t *part, int *max_in) {
    if (d->in > *max_in) *max_in = d->in;
    if (!d->quant) return;
    size_t p0 = cu_gemv_partial_floats(&d->q, CU_GEMV_MAX_ROWS);
    if (p0 > *part) *part = p0;
    if (d->wt) return;
    size_t e = (size_t)d->in * d->out, p = cu_gemv_partial_floats(&d->q, CU_GEMV_MAX_ROWS);
    if (e > *deq) *deq = e;
    if (p > *part) *part = p;
}

void cuw_scratch_needs(const struct cuda_ctx *c, size_t *deq, size_t *part, int *max_in) {
    *deq = 0;
    *part = 0;
    *max_in = 0;
    for (int i = 0; i < c->mc.n_layers; i++) {
        const struct dlayer *d = &c->layers[i];
        for (int p = 0; p < d->qkv.n; p++) need(&d->qkv.part[p], deq, part, max_in);
        for (int p = 0; p < d->gu.n; p++) need(&d->gu.part[p], deq, part, max_in);
        need(&d->o, deq, part, max_in);
        need(&d->down, deq, part, max_in);
    }
}

// Many-row steps on int4 weights multiply bf16 copies with cuBLAS. When the copies of every
// quantized linear fit in under 40% of the device memory, they are made once here (an int4
// 14B model: 27.5 GB of 141), which removes a full dequantization pass per step; otherwise
// each linear is dequantized into a scratch buffer at every many-row step.
static int cache_one(struct cuda_ctx *c, struct dlin *d) {
    if (!d->quant) return 0;
    d->wt = (bf16_t *)dev_alloc(c, (size_t)d->in * d->out * 2);
    if (!d->wt) return -1;
    cu_gptq_dequant(&d->q, d->wt, c->st);
    c->dense_cache_bytes += (size_t)d->in * d->out * 2;
    return 0;
}

static size_t quant_bytes(const struct dlin *d) { return d->quant ? (size_t)d->in * d->out * 2 : 0; }

void cuw_dense_cache(struct cuda_ctx *c) {
    size_t need_b = 0, free_b = 0, total = 0;
    for (int i = 0; i < c->mc.n_layers; i++) {
        const struct dlayer *d = &c->layers[i];
        need_b += quant_bytes(&d->o) + quant_bytes(&d->down);
        for (int p = 0; p < d->qkv.n; p++) need_b += quant_bytes(&d->qkv.part[p]);
        for (int p = 0; p < d->gu.n; p++) need_b += quant_bytes(&d->gu.part[p]);
    }
    if (!need_b || CU_CHECK(cudaMemGetInfo(&free_b, &total)) || need_b > 0.4 * (double)total || need_b > free_b / 2) {
        cu_take_error(NULL);
        return;
    }
    for (int i = 0; i < c->mc.n_layers; i++) {
        struct dlayer *d = &c->layers[i];
        int rc = cache_one(c, &d->o) | cache_one(c, &d->down);
        for (int p = 0; p < d->qkv.n; p++) rc |= cache_one(c, &d->qkv.part[p]);
        for (int p = 0; p < d->gu.n; p++) rc |= cache_one(c, &d->gu.part[p]);
        if (rc) {
            char e[PG_ERR_LEN];
            cu_take_error(e);
            pg_log(PG_LOG_WARN, "cuda: dequantized int4 copies stopped at layer %d: %s", i, e);
            return;
        }
    }
    CU_CHECK(cudaStreamSynchronize(c->st));
    char e[PG_ERR_LEN] = "";
    if (cu_take_error(e)) pg_log(PG_LOG_WARN, "cuda: dequantized int4 copies: %s", e);
}
