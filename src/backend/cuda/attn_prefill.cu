// Causal flash attention over the paged KV cache for prefill and chunked prefill
// (FlashAttention-2 style). grid (query tile, q head); 4 warps, each owning 16 of the tile's
// 64 query rows. Per 64-key tile: S = Q K^T on the tensor cores (wmma bf16 -> f32), online
// softmax per row in registers, P (bf16) . V on the tensor cores accumulated into an f32 O
// tile in shared memory (rescaled per row). Keys come from the cache (bf16 or fp8, converted
// to bf16 on load) through the sequence's block table; the causal mask applies per element
// and key tiles past the tile's last query position are never read.
#include <math.h>
#include <mma.h>
#include <cuda_bf16.h>

#include "backend/cuda/kv_cache.cuh"

using namespace nvcuda;
typedef __nv_bfloat16 bf16;
#define PT 64          // queries per tile == keys per tile
#define PF_WARPS 4

template <int HD>
struct pf_smem {
    static constexpr int LDB = HD + 8;    // bf16 row stride (16-byte multiple, skews banks)
    static constexpr int LDS = PT + 4;    // S row stride (f32)
    static constexpr int LDP = PT + 8;    // P row stride (bf16)
    static constexpr int LDO = HD + 4;    // O row stride (f32)
    static constexpr size_t q = 0, k = q + PT * LDB * 2, v = k + PT * LDB * 2, s = v + PT * LDB * 2,
                            p = s + PF_WARPS * 16 * LDS * 4, o = p + PF_WARPS * 16 * LDP * 2,
                            ml = o + PT * LDO * 4, bytes = ml + 2 * PT * 4;
};

template <int HD>
__global__ void __launch_bounds__(PF_WARPS * 32)
k_attn_prefill(const bf16 *q, struct cu_step s, const int32_t *tiles, int n_heads, int n_kv, int bs,
               int kv_type, const void *kc, const void *vc, bf16 *out) {
    typedef pf_smem<HD> L;
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)(smem + L::q), *Ks = (bf16 *)(smem + L::k), *Vs = (bf16 *)(smem + L::v);
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *Ss = (float *)(smem + L::s) + w * 16 * L::LDS;
    bf16 *Ps = (bf16 *)(smem + L::p) + w * 16 * L::LDP;
    float *Os = (float *)(smem + L::o), *Ms = (float *)(smem + L::ml), *Ls = Ms + PT;

    const int seq = tiles[2 * blockIdx.x], qi0 = tiles[2 * blockIdx.x + 1], h = blockIdx.y;
    const int kvh = h / (n_heads / n_kv);
    const int n_new = s.seq_nnew[seq], q0 = s.seq_q0[seq], pos0 = s.seq_len[seq] - n_new;
    const int nq = min(PT, n_new - qi0), kmax = pos0 + qi0 + nq;
    const int32_t *bt = s.block_tables + (size_t)seq * s.bt_stride;
    const float scale = rsqrtf((float)HD) * 1.4426950408889634f;

    for (int e = threadIdx.x; e < PT * HD / 8; e += blockDim.x) {
        int r = e / (HD / 8), c = (e % (HD / 8)) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < nq) v = *(const uint4 *)(q + ((size_t)(q0 + qi0 + r) * n_heads + h) * HD + c);
        *(uint4 *)(Qs + r * L::LDB + c) = v;
    }
    for (int e = threadIdx.x; e < PT * HD; e += blockDim.x) Os[(e / HD) * L::LDO + e % HD] = 0;
    for (int e = threadIdx.x; e < PT; e += blockDim.x) {
        Ms[e] = -INFINITY;
        Ls[e] = 0;
    }
    for (int kt0 = 0; kt0 < kmax; kt0 += PT) {
        __syncthreads();
        for (int e = threadIdx.x; e < PT * HD / 8; e += blockDim.x) {
            int r = e / (HD / 8), c = (e % (HD / 8)) * 8, j = kt0 + r;
            float kf[8], vf[8];
            if (j < kmax) {
                size_t idx = kv_index(bt[j / bs], kvh, j % bs, c, n_kv, bs, HD);
                kv_load8(kc, idx, kv_type, kf);
                kv_load8(vc, idx, kv_type, vf);
            } else {
                for (int u = 0; u < 8; u++) kf[u] = vf[u] = 0;
            }
            for (int u = 0; u < 8; u++) {
                Ks[r * L::LDB + c + u] = __float2bfloat16(kf[u]);
                Vs[r * L::LDB + c + u] = __float2bfloat16(vf[u]);
            }
        }
        __syncthreads();
        // S (16 x 64) for this warp's rows.
        for (int n = 0; n < PT / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf;
            wmma::fill_fragment(sf, 0.f);
            for (int k = 0; k < HD / 16; k++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> af;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> bfr;
                wmma::load_matrix_sync(af, Qs + (w * 16) * L::LDB + k * 16, L::LDB);
                wmma::load_matrix_sync(bfr, Ks + (n * 16) * L::LDB + k * 16, L::LDB);
                wmma::mma_sync(sf, af, bfr, sf);
            }
            wmma::store_matrix_sync(Ss + n * 16, sf, L::LDS, wmma::mem_row_major);
        }
        __syncwarp();
        // Online softmax: lane pair (2r, 2r+1) owns row r, 32 columns each.
        {
            const int r = lane >> 1, cb = (lane & 1) * 32, row = w * 16 + r;
            const int qp = pos0 + qi0 + row;
            float mx = -INFINITY;
            for (int c = 0; c < 32; c++) {
                int j = kt0 + cb + c;
                float v = (row < nq && j <= qp) ? Ss[r * L::LDS + cb + c] * scale : -INFINITY;
                Ss[r * L::LDS + cb + c] = v;
                mx = fmaxf(mx, v);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            float mo = Ms[row], mn = fmaxf(mo, mx);
            float corr = mn == -INFINITY ? 1.f : exp2f(mo - mn), sum = 0;
            for (int c = 0; c < 32; c++) {
                float v = Ss[r * L::LDS + cb + c];
                float p = v == -INFINITY ? 0.f : exp2f(v - mn);
                sum += p;
                Ps[r * L::LDP + cb + c] = __float2bfloat16(p);
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            for (int c = (lane & 1) * (HD / 2); c < (lane & 1) * (HD / 2) + HD / 2; c++) Os[row * L::LDO + c] *= corr;
            __syncwarp();
            if ((lane & 1) == 0) {
                Ms[row] = mn;
                Ls[row] = Ls[row] * corr + sum;
            }
        }
        __syncwarp();
        // O (16 x HD) += P (16 x 64) . V (64 x HD)
        for (int n = 0; n < HD / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
            wmma::load_matrix_sync(of, Os + (w * 16) * L::LDO + n * 16, L::LDO, wmma::mem_row_major);
            for (int k = 0; k < PT / 16; k++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> af;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bfr;
                wmma::load_matrix_sync(af, Ps + k * 16, L::LDP);
                wmma::load_matrix_sync(bfr, Vs + (k * 16) * L::LDB + n * 16, L::LDB);
                wmma::mma_sync(of, af, bfr, of);
            }
            wmma::store_matrix_sync(Os + (w * 16) * L::LDO + n * 16, of, L::LDO, wmma::mem_row_major);
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nq * HD; e += blockDim.x) {
        int r = e / HD, c = e % HD;
        float l = Ls[r];
        out[((size_t)(q0 + qi0 + r) * n_heads + h) * HD + c] = __float2bfloat16(l > 0 ? Os[r * L::LDO + c] / l : 0.f);
    }
}

template <int HD>
static void launch_prefill(const bf16_t *q, const struct cu_step *s, const int32_t *tiles, int n_tiles,
                           int n_heads, int n_kv, int bs, int kv_type, const void *kc, const void *vc,
                           bf16_t *out, cudaStream_t st) {
    size_t sm = pf_smem<HD>::bytes;
    static __thread int attr_set;
    if (!(attr_set & HD)) {
        if (CU_CHECK(cudaFuncSetAttribute(k_attn_prefill<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm)))
            return;
        attr_set |= HD;
    }
    k_attn_prefill<HD><<<dim3(n_tiles, n_heads), PF_WARPS * 32, sm, st>>>(
        (const bf16 *)q, *s, tiles, n_heads, n_kv, bs, kv_type, kc, vc, (bf16 *)out);
    CU_LAUNCHED("attn_prefill");
}

extern "C" void cu_attn_prefill(const bf16_t *q, const struct cu_step *s, const int32_t *tiles, int n_tiles,
                                int n_heads, int n_kv, int hd, int block_size, int kv_type, const void *k_cache,
                                const void *v_cache, bf16_t *out, cudaStream_t st) {
    if (n_tiles <= 0) return;
    if (hd == 128)
        launch_prefill<128>(q, s, tiles, n_tiles, n_heads, n_kv, block_size, kv_type, k_cache, v_cache, out, st);
    else
        launch_prefill<64>(q, s, tiles, n_tiles, n_heads, n_kv, block_size, kv_type, k_cache, v_cache, out, st);
}
