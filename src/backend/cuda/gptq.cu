// GPTQ int4 weight-only GEMM over the tile layout of backend/gptq_pack.h.
//
// Few rows (decode, 1..16): k_gptq_tc, a bandwidth-bound GEMM on tensor cores. Block = 4
// warps, each warp owning one 16-column strip, all four sharing a K range of `kr` inputs (a
// multiple of 64; a quantization group may straddle two ranges) whose activations the block
// stages once in shared memory as bf16 (forming silu(gate) * up and the desc_act gather on
// the way). A warp streams its strip's tiles, which are contiguous in memory, with one
// 16-byte load per lane per tile and 4 tiles per batch, the next batch in flight while the
// current one is multiplied; the first batch is issued before pdl_wait(), so with
// programmatic dependent launch the weight loads overlap the previous kernel. Each 16-input
// step of a tile is one mma.m16n8k16 (rows = output columns, columns = activation rows; one
// n8 fragment per 8 rows): a word's nibbles are AND/OR'd into the mantissa of bf16 128.0 (two
// per lop3), so the mma sums (128 + q) x exactly in f32, and per group
// sum x (q - z) = C - (128 + z) sum x, with sum x from the staging (per 64-input tile), times
// the f32 group scale. With group size 128 and whole groups per block (the usual case) the
// group boundaries are fixed positions of the unrolled loop and two batch registers
// alternate. K splits are summed by the last block of each column tile (one atom.acq_rel
// ticket per block) in fixed split order (deterministic), which adds the bias, writes bf16
// and re-arms its ticket for the next launch / graph replay. tc_stamp (cu_gptq_trace, for
// cuda_ops_bench timeline) records when each block reached each phase.
//
// Fused forms (cu_gptq_gemv_fused, the decode layer of backend_cuda.cu, up to 8 rows): the
// staging may form the RMSNorm of the residual (stage_norm), and the split merge may add into
// the residual and leave per-tile sums of squares (merge_resid), form SwiGLU from a gate tile
// and its up tile under one ticket (merge_swiglu), or apply bias + RoPE and store q and the KV
// cache (merge_rope). Each form is its own kernel instance (k_gptq_tc<M, F>).
//
// Many rows: k_gptq_dequant writes W^T (in, out) bf16 for cuBLAS.
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/kv_cache.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/trace.cuh"

typedef __nv_bfloat16 bf16;
#define TC_WARPS 4
#define TC_COLS (TC_WARPS * 16)       // output columns per block
#define TC_BLOCK_BYTES (32 << 10)     // weight bytes per block we aim for (sets kr)
#define TC_SMEM_MAX (32 << 10)        // activation tile bytes per block at most
#define TC_U 4                        // tiles per lane per batch (one 16-byte load each)
// Blocks per SM the register budget is cut for: 5 (at most 96 registers) up to 8 rows, with
// no spills; 4 beyond (more accumulators).
#define TC_MIN_BLOCKS(M) ((M) <= 8 ? 5 : 4)

// Tuning (cuda_ops_bench): weight bytes per block and CU_GPTQ_* flags. Set before the
// scratch is sized (cu_gemv_partial_floats depends on it).
// The default flags: CU_GPTQ_DEFAULT_FLAGS, or PAGODA_GPTQ_FLAGS (A/B runs of whole models).
static int default_flags(void) {
    const char *e = getenv("PAGODA_GPTQ_FLAGS");
    return e ? atoi(e) & CU_GPTQ_ACQREL_TICKET : CU_GPTQ_DEFAULT_FLAGS;
}
static int g_block_bytes = TC_BLOCK_BYTES, g_flags = -1;  // -1: not read yet
extern "C" void cu_gptq_tune(int block_bytes, int flags) {
    g_block_bytes = block_bytes > 0 ? block_bytes : TC_BLOCK_BYTES;
    g_flags = flags < 0 ? default_flags() : flags;
}
static struct trace_slots g_trace;
extern "C" void cu_gptq_trace(uint64_t *buf, int blocks_per_launch) { trace_set(&g_trace, buf, blocks_per_launch); }

// Inputs per K split: about TC_BLOCK_BYTES of weights per block, a multiple of 64, the
// activation tile M x (kr + 8) bf16 within TC_SMEM_MAX. A group may straddle two splits: the
// scale is linear, so each split scales its share of the group.
static int tc_kr(const struct cu_gptq *l, int M) {
    int kr = g_block_bytes / (TC_COLS / 2);
    int cap = TC_SMEM_MAX / (2 * M) - 8;
    if (kr > cap) kr = cap;
    kr = kr / 64 * 64;
    if (kr < 64) kr = 64;
    return kr > l->in ? l->in : kr;
}

static int tc_splits(const struct cu_gptq *l, int M) {
    int kr = tc_kr(l, M);
    return (l->in + kr - 1) / kr;
}

extern "C" bool cu_gptq_tc_supported(int in, int out, int group_size) {
    return in > 0 && out > 0 && in % 64 == 0 && out % 16 == 0 && group_size > 0 && group_size % 64 == 0 &&
           (out + TC_COLS - 1) / TC_COLS <= CU_GEMV_COUNTERS;
}

extern "C" size_t cu_gemv_partial_floats(const struct cu_gptq *l, int M) {
    size_t most = 0;
    for (int m = 1; m <= M && m <= CU_GEMV_MAX_ROWS; m++) {
        size_t f = (size_t)tc_splits(l, m) * m * l->out;
        if (f > most) most = f;
    }
    return CU_GEMV_COUNTERS + most;
}

extern "C" void cu_gemv_scratch_reset(float *partial, cudaStream_t st) {
    CU_CHECK(cudaMemsetAsync(partial, 0, CU_GEMV_COUNTERS * sizeof(float), st));
}

// The GEMM's input rows, see struct cu_gemv_in.
struct gx {
    const bf16 *x;
    int ldx;
    const int32_t *perm;
    bool swiglu;
    bool vec;  // rows 16-byte aligned and no perm: 8 inputs per load
};

__device__ __forceinline__ float silu_mul(float g, float u) {
    return __bfloat162float(__float2bfloat16(g / (1.0f + __expf(-g)) * u));
}

// Inputs k..k+7 of row m as 8 bf16 (k % 8 == 0).
__device__ __forceinline__ uint4 gx_load8(const gx &a, int in, int m, int k) {
    const bf16 *row = a.x + (size_t)m * a.ldx;
    __align__(16) bf16 v[8];
    if (a.vec) {
        uint4 r = *(const uint4 *)(row + k);
        if (!a.swiglu) return r;
        uint4 u = *(const uint4 *)(row + in + k);
        const bf16 *g8 = (const bf16 *)&r, *u8 = (const bf16 *)&u;
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = __float2bfloat16(silu_mul(__bfloat162float(g8[j]), __bfloat162float(u8[j])));
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int src = a.perm ? a.perm[k + j] : k + j;
            v[j] = a.swiglu ? __float2bfloat16(silu_mul(__bfloat162float(row[src]), __bfloat162float(row[in + src])))
                            : row[src];
        }
    }
    return *(const uint4 *)v;
}


// bf16x2 (128 + nibble at bits 0-3, 128 + nibble at bits 16-19) of q: (q & 0x000F000F) | 0x43004300.
__device__ __forceinline__ uint32_t nib_bf16x2(uint32_t q) {
    uint32_t r;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(q), "r"(0x000F000Fu), "r"(0x43004300u));
    return r;
}

// Streaming 16-byte weight load: read once per step, keep it out of L1 and first to leave L2.
__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

// Floats of the per-tile activation sums, rounded up to 16 bytes (the scale words follow).
__host__ __device__ __forceinline__ int tc_xsum_floats(int M, int kr) { return (M * (kr / 64) + 3) / 4 * 4; }
// Most groups a K range of kr inputs touches (it may start and end inside one).
__host__ __device__ __forceinline__ int tc_ngb(int kr, int gs) { return (kr + gs - 1) / gs + 1; }

struct tc_args {
    const uint4 *qw;     // tile layout, 16 bytes per lane per tile
    const uint32_t *sz;  // [out/16][n_groups][16]
    int in, out, gs, ng, kr;
    gx x;
    struct cu_gemv_norm norm;  // input: the normed residual when norm.resid != NULL
    const float *bias;
    struct cu_gemv_out o;      // output form (CU_GEMV_*)
    float *partial;      // [splits][M][out]
    unsigned *ticket;    // one per group of column tiles summed together (tc_group)
    int flags;           // CU_GPTQ_*
    uint64_t *trace;     // cu_gptq_trace: [block][8] timestamps, or NULL
};

// cu_gptq_trace: thread 0 of each block records in slot k of the block's 8 (tc_record) the
// global timer at its start (0), after pdl_wait (1), once the activations are in shared
// memory (2), after its warp's tiles (3), once its ticket is taken (4) and, in the block that
// sums the splits, at the end (5) (tc_stamp); slot 6 = the SM it ran on.
__device__ __forceinline__ void tc_record(const tc_args &p, int k, uint64_t v) {
    if (p.trace && threadIdx.x == 0) p.trace[((size_t)blockIdx.y * gridDim.x + blockIdx.x) * 8 + k] = v;
}
__device__ __forceinline__ void tc_stamp(const tc_args &p, int k) {
    if (!p.trace) return;
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    tc_record(p, k, t);
}

// Stores unit (row m, inputs 8 * c8 ..) of the staging in B-operand order (see stage_x) and
// returns the sum of its 8 bf16 values.
__device__ __forceinline__ float stage_put(bf16 *xs, int xstride_w, int m, int c8, uint4 v) {
    uint32_t *dst = (uint32_t *)xs + m * xstride_w + (c8 / 8) * 32 + c8 % 8;
    dst[0] = v.x;
    dst[8] = v.y;
    dst[16] = v.z;
    dst[24] = v.w;
    const bf16 *h = (const bf16 *)&v;
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++) sum += __bfloat162float(h[j]);
    return sum;
}

// xsum[m][tile] from the units' sums: a tile's 8 units are 8 consecutive lanes (units is a
// multiple of 8), summed in fixed order.
__device__ __forceinline__ void stage_sum(float *xsum, int tiles, bool valid, int m, int c8, float sum) {
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    sum += __shfl_xor_sync(0xffffffffu, sum, 4);
    if (valid && c8 % 8 == 0) xsum[m * tiles + c8 / 8] = sum;
}

// Staging: row m of the block's activations as bf16 pairs, each 64-input tile's 32 words
// stored so that lane t's B operands for the tile's four k16 steps (words 8j + t and
// 8j + 4 + t, j = 0..3) are the 8 consecutive words 8t..8t+7: two 16-byte loads per tile.
// xsum[m][tile] = the tile's 64 inputs summed (bf16 values, fixed order).
template <int M>
__device__ __forceinline__ void stage_x(const tc_args &p, int k0, int klen, bf16 *xs, float *xsum) {
    const int units = M * (klen / 8), xstride_w = (p.kr + 8) / 2, tiles = p.kr / 64;
    for (int base = 0; base < units; base += blockDim.x) {
        const int u = base + threadIdx.x, m = u / (klen / 8), c8 = u % (klen / 8);
        const float sum = u < units ? stage_put(xs, xstride_w, m, c8, gx_load8(p.x, p.in, m, k0 + c8 * 8)) : 0.f;
        stage_sum(xsum, tiles, u < units, m, c8, sum);
    }
}

// 8 normed inputs bf16(r * inv * w), rounded as cu_add_rmsnorm rounds them.
__device__ __forceinline__ uint4 norm8(const float *r, const bf16 *w, float inv) {
    __align__(16) bf16 v[8];
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = __float2bfloat16(r[j] * inv * __bfloat162float(w[j]));
    return *(const uint4 *)v;
}

// Unit (row m, inputs k..k+7) of the norm input: the residual and norm weight loaded (through
// the permutation when there is one) into r and w.
__device__ __forceinline__ void norm_fetch(const tc_args &p, int m, int k, float *r, bf16 *w) {
    const float *row = p.norm.resid + (size_t)m * p.in;
    const bf16 *nw = (const bf16 *)p.norm.w;
    if (!p.x.perm) {
        *(float4 *)r = *(const float4 *)(row + k);
        *(float4 *)(r + 4) = *(const float4 *)(row + k + 4);
        *(uint4 *)w = *(const uint4 *)(nw + k);
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int src = p.x.perm[k + j];
            r[j] = row[src];
            w[j] = nw[src];
        }
    }
}

// Staging of the norm input. Every warp forms 1 / rms of the rows itself from the residual's
// tile sums of squares (lane l sums tiles l, l + 32, ..., then a butterfly: fixed order), so
// no block barrier; the first pass's residual loads are in flight meanwhile.
template <int M>
__device__ __forceinline__ void stage_norm(const tc_args &p, int k0, int klen, bf16 *xs, float *xsum) {
    const int units = M * (klen / 8), xstride_w = (p.kr + 8) / 2, tiles = p.kr / 64, nt = p.in / 64;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __shared__ float inv[TC_WARPS][M];
    __align__(16) float r[8];
    __align__(16) bf16 nw[8];
    if ((int)threadIdx.x < units) norm_fetch(p, threadIdx.x / (klen / 8), k0 + threadIdx.x % (klen / 8) * 8, r, nw);
    for (int m = 0; m < M; m++) {
        float s = 0.f;
        for (int t = lane; t < nt; t += 32) s += p.norm.ssq[m * nt + t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) inv[w][m] = rsqrtf(s / p.in + p.norm.eps);
    }
    __syncwarp();
    for (int base = 0; base < units; base += blockDim.x) {
        const int u = base + threadIdx.x, m = u / (klen / 8), c8 = u % (klen / 8);
        float sum = 0.f;
        if (u < units) {
            if (base) norm_fetch(p, m, k0 + c8 * 8, r, nw);
            sum = stage_put(xs, xstride_w, m, c8, norm8(r, nw, inv[w][m]));
        }
        stage_sum(xsum, tiles, u < units, m, c8, sum);
    }
}

// ---- summing the K splits (the last block of a ticket group) ----
// The RoPE form reads cos / sin from a table (cu_rope_table) rather than calling sincosf and
// powf: their code inside the kernel slowed every kernel of the layer graph (a build without
// the RoPE merge: 82.8 vs 84.4 us per layer, same call), and out-of-line merges on
// __grid_constant__ arguments were slower still (each merge +0.6 us).

// Column tiles one block sums together (one ticket): a gate tile and its up tile (SwiGLU), a
// head's tiles (RoPE), else one.
template <int KIND>
__device__ __forceinline__ int tc_gtiles(const tc_args &p) {
    return KIND == CU_GEMV_SWIGLU ? 2 : KIND == CU_GEMV_ROPE ? p.o.rope.hd / TC_COLS : 1;
}

// Ticket group of column tile `tile`.
template <int KIND>
__device__ __forceinline__ int tc_group(const tc_args &p, int tile) {
    if (KIND == CU_GEMV_SWIGLU) return tile % (p.out / 2 / TC_COLS);  // gate tile j with up tile j
    return tile / tc_gtiles<KIND>(p);
}

// Column n of row m: the bias plus the K splits in split order (8 loads in flight).
template <int M>
__device__ __forceinline__ float tc_sum(const tc_args &p, int ks, int m, int n) {
    float s = p.bias ? p.bias[n] : 0.f;
    const float *pk = p.partial + (size_t)m * p.out + n;
    for (int k0 = 0; k0 < ks; k0 += 8) {
        float v[8];
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = k0 + j < ks ? __ldcg(pk + (size_t)(k0 + j) * M * p.out) : 0.f;
#pragma unroll
        for (int j = 0; j < 8; j++)
            if (k0 + j < ks) s += v[j];
    }
    return s;
}

__device__ __forceinline__ float bf16_round(float v) { return __bfloat162float(__float2bfloat16(v)); }

template <int M>
__device__ __forceinline__ void merge_store(const tc_args &p, int ks, int tile) {
    for (int e = threadIdx.x; e < M * TC_COLS; e += blockDim.x) {
        const int m = e / TC_COLS, n = tile * TC_COLS + e % TC_COLS;
        if (n < p.out) ((bf16 *)p.o.y)[(size_t)m * p.o.ldy + n] = __float2bfloat16(tc_sum<M>(p, ks, m, n));
    }
}

// resid += r over the tile, then each row's sum of squares of the tile (warp butterflies,
// then the tile's two warp halves in order): fixed order, deterministic.
template <int M>
__device__ __forceinline__ void merge_resid(const tc_args &p, int ks, int tile) {
    __shared__ float half_sq[M][2];
    const int lane = threadIdx.x & 31;
    for (int e0 = 0; e0 < M * TC_COLS; e0 += blockDim.x) {
        const int e = e0 + threadIdx.x, m = e / TC_COLS, n = tile * TC_COLS + e % TC_COLS;
        if (m >= M) break;  // warp-uniform: a warp's 32 elements lie in one row
        float *r = p.o.resid + (size_t)m * p.out + n;
        const float v = *r + bf16_round(tc_sum<M>(p, ks, m, n));
        *r = v;
        float sq = v * v;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        if (lane == 0) half_sq[m][(e % TC_COLS) / 32] = sq;
    }
    __syncthreads();
    if (threadIdx.x < M) p.o.ssq[threadIdx.x * (p.out / TC_COLS) + tile] = half_sq[threadIdx.x][0] + half_sq[threadIdx.x][1];
}

template <int M>
__device__ __forceinline__ void merge_swiglu(const tc_args &p, int ks, int grp) {
    const int half = p.out / 2;
    for (int e = threadIdx.x; e < M * TC_COLS; e += blockDim.x) {
        const int m = e / TC_COLS, j = grp * TC_COLS + e % TC_COLS;
        const float gt = bf16_round(tc_sum<M>(p, ks, m, j)), up = bf16_round(tc_sum<M>(p, ks, m, half + j));
        ((bf16 *)p.o.y)[(size_t)m * p.o.ldy + j] = __float2bfloat16(silu_mul(gt, up));  // as cu_swiglu rounds it
    }
}

// Head `hh` (q | k | v): bias, RoPE on q and k at each row's position (cos / sin from the
// table, the values cu_qkv_rope_store computes), q to rope.q, k and v into the paged cache.
template <int M>
__device__ __forceinline__ void merge_rope(const tc_args &p, int ks, int hh) {
    const cu_gemv_rope &r = p.o.rope;
    const int hd = r.hd, half = hd / 2;
    for (int e = threadIdx.x; e < M * half; e += blockDim.x) {
        const int m = e / half, d = e % half, n = hh * hd + d;
        float a = bf16_round(tc_sum<M>(p, ks, m, n)), b = bf16_round(tc_sum<M>(p, ks, m, n + half));
        if (r.bias) a += r.bias[n], b += r.bias[n + half];
        const int pos = r.s.tok_pos[m], seq = r.s.tok_seq[m];
        const int blk = r.s.block_tables[(size_t)seq * r.s.bt_stride + pos / r.block_size], slot = pos % r.block_size;
        if (hh >= r.n_heads + r.n_kv) {  // v: straight into the cache
            const int kvh = hh - r.n_heads - r.n_kv;
            kv_store(r.v_cache, kv_index(blk, kvh, slot, d, r.n_kv, r.block_size, hd), r.kv_type, a);
            kv_store(r.v_cache, kv_index(blk, kvh, slot, d + half, r.n_kv, r.block_size, hd), r.kv_type, b);
            continue;
        }
        const float2 f = *(const float2 *)(r.cos_sin + ((size_t)min(pos, r.n_pos - 1) * half + d) * 2);
        const float cs = f.x, sn = f.y, ra = a * cs - b * sn, rb = b * cs + a * sn;
        if (hh < r.n_heads) {
            bf16 *q = (bf16 *)r.q + ((size_t)m * r.n_heads + hh) * hd;
            q[d] = __float2bfloat16(ra);
            q[d + half] = __float2bfloat16(rb);
        } else {
            const int kvh = hh - r.n_heads;
            kv_store(r.k_cache, kv_index(blk, kvh, slot, d, r.n_kv, r.block_size, hd), r.kv_type, ra);
            kv_store(r.k_cache, kv_index(blk, kvh, slot, d + half, r.n_kv, r.block_size, hd), r.kv_type, rb);
        }
    }
}

// The kernel is compiled per form F = output kind (CU_GEMV_*) + TC_NORM when the input is the
// normed residual, so each instance carries only its own staging and merge: with every form
// in one kernel (runtime branches) each GEMV of the layer graph ran 0.3-1 us slower, the plain
// one included (bench/results/2026-11-29-fused-layer-h200.md).
#define TC_NORM 4
template <int M, int F>
__global__ void __launch_bounds__(TC_WARPS * 32, TC_MIN_BLOCKS(M)) k_gptq_tc(tc_args p) {
    constexpr int KIND = F & 3;
    constexpr bool NORM = (F & TC_NORM) != 0;
    constexpr int NB = (M + 7) / 8, U = TC_U;  // n8 fragments of activation rows; tiles per batch
    // [M][kr + 8] bf16 activations, xsum [M][kr / 64] f32, the scale/zero words
    extern __shared__ __align__(16) bf16 xs[];
    __shared__ bool last;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int strip = blockIdx.x * TC_WARPS + w, ks = gridDim.y;
    const int k0 = blockIdx.y * p.kr, klen = min(p.kr, p.in - k0), ntiles = klen / 64, tpg = p.gs / 64;
    const int xstride_w = (p.kr + 8) / 2;  // words per row; = 4 mod 32: conflict-free B loads
    float *xsum = (float *)(xs + M * (p.kr + 8));
    const bool active = strip < p.out / 16;
    pdl_launch_dependents();
    tc_stamp(p, 0);

    const uint4 *wp = p.qw + ((size_t)strip * (p.in / 64) + k0 / 64) * 32 + lane;
    const int kt0 = k0 / 64;  // global index of the block's first tile
    // The scale/zero words of the groups this block's range touches (at most ngb), copied
    // into shared memory with cp.async before the wait (they are constant).
    const int gfirst = kt0 / tpg, ngb = (kt0 + ntiles - 1) / tpg - gfirst + 1;
    uint32_t *szs = (uint32_t *)(xsum + tc_xsum_floats(M, p.kr)) + w * tc_ngb(p.kr, p.gs) * 16;
    if (active) {
        const uint32_t *src = p.sz + ((size_t)strip * p.ng + gfirst) * 16;
        for (int i = lane * 4; i < ngb * 16; i += 128) cp_async16(szs + i, src + i);
    }
    cp_async_commit();
    // Groups are followed with counters (no division per tile): a tile opens a group (its
    // scale/zero are read) when it is the group's first or the block's first, and closes it
    // (the scale is applied) when it is the group's last or the block's last.
    int cpos = kt0 % tpg;  // position in its group of the next tile to use
    uint4 qa[U], qb[U];    // two batches of tiles in registers: one in flight, one multiplied
#pragma unroll
    for (int u = 0; u < U; u++) qa[u] = qb[u] = make_uint4(0, 0, 0, 0);
    auto load = [&](int b, uint4 *q) {  // batch b's tiles (those inside the range)
#pragma unroll
        for (int u = 0; u < U; u++)
            if (active && b + u < ntiles) q[u] = ld_stream(wp + (size_t)(b + u) * 32);
    };
    auto load_all = [&](int b, uint4 *q) {  // batch b, wholly inside the range
#pragma unroll
        for (int u = 0; u < U; u++) q[u] = ld_stream(wp + (size_t)(b + u) * 32);
    };
    load(0, qa);
    pdl_wait();
    tc_stamp(p, 1);
    if (NORM)
        stage_norm<M>(p, k0, klen, xs, xsum);
    else
        stage_x<M>(p, k0, klen, xs, xsum);
    cp_async_wait<0>();
    __syncthreads();
    tc_stamp(p, 2);

    // The mma multiplies (128 + q) by x; sum x (q - z) = C - (128 + z) sum x per group.
    // CH independent mma chains (k16 step j feeds chain j % CH), summed when a group closes:
    // a warp's dependent mma chain is 1/CH of its tiles' steps (4 chains cost 8 registers
    // more, which the 5-blocks-per-SM budget has no room for).
    constexpr int CH = 2;
    float acc[NB][4], cg[CH][NB][4], xg[NB][2];
#pragma unroll
    for (int f = 0; f < NB; f++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            acc[f][i] = 0.f;
#pragma unroll
            for (int c = 0; c < CH; c++) cg[c][f][i] = 0.f;
        }
        xg[f][0] = xg[f][1] = 0.f;
    }
    const uint32_t *xw = (const uint32_t *)xs;
    float zlo = 0.f, zhi = 0.f, slo = 0.f, shi = 0.f;
    const uint32_t *gsz = szs + g;  // this lane's column g of the current group
    auto open_group = [&]() {
        const uint32_t lo = gsz[0], hi = gsz[8];
        slo = __half2float(__ushort_as_half((unsigned short)(lo & 0xffff)));
        shi = __half2float(__ushort_as_half((unsigned short)(hi & 0xffff)));
        zlo = 128.f + (float)(lo >> 16);
        zhi = 128.f + (float)(hi >> 16);
        gsz += 16;
    };
    auto tile_mma = [&](int tile, const uint4 q) {
        uint4 bx[NB][2];
#pragma unroll
        for (int f = 0; f < NB; f++) {
            // rows past M repeat row M - 1: their output columns are never stored
            const int m = min(f * 8 + g, M - 1);
            const uint4 *src = (const uint4 *)(xw + m * xstride_w + tile * 32 + t * 8);
            bx[f][0] = src[0];
            bx[f][1] = src[1];
#pragma unroll
            for (int i = 0; i < 2; i++) xg[f][i] += xsum[min(f * 8 + 2 * t + i, M - 1) * (p.kr / 64) + tile];
        }
        const uint32_t q4[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const uint32_t a[4] = {nib_bf16x2(q4[j]), nib_bf16x2(q4[j] >> 4), nib_bf16x2(q4[j] >> 8),
                                   nib_bf16x2(q4[j] >> 12)};
#pragma unroll
            for (int f = 0; f < NB; f++) {
                const uint32_t *bw = (const uint32_t *)bx[f];
                mma_bf16(cg[j % CH][f], a, bw[2 * j], bw[2 * j + 1]);
            }
        }
    };
    auto close_group = [&]() {
#pragma unroll
        for (int f = 0; f < NB; f++) {
            float c4[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                c4[i] = cg[0][f][i];
#pragma unroll
                for (int c = 1; c < CH; c++) c4[i] += cg[c][f][i];
#pragma unroll
                for (int c = 0; c < CH; c++) cg[c][f][i] = 0.f;
            }
            acc[f][0] += slo * (c4[0] - zlo * xg[f][0]);
            acc[f][1] += slo * (c4[1] - zlo * xg[f][1]);
            acc[f][2] += shi * (c4[2] - zhi * xg[f][0]);
            acc[f][3] += shi * (c4[3] - zhi * xg[f][1]);
            xg[f][0] = xg[f][1] = 0.f;
        }
    };
    // Groups of two tiles (group size 128) starting on the block's first tile, whole pairs of
    // batches: group boundaries are fixed positions of the unrolled batch (no counters or
    // branches per tile), and the two batch registers alternate (no copies).
    if (active && tpg == 2 && cpos == 0 && ntiles % (2 * U) == 0) {
        auto pairs = [&](int b, const uint4 *q) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                if (u % 2 == 0) open_group();
                tile_mma(b + u, q[u]);
                if (u % 2 == 1) close_group();
            }
        };
        for (int b = 0; b < ntiles; b += 2 * U) {
            load_all(b + U, qb);
            pairs(b, qa);
            if (b + 2 * U < ntiles) load_all(b + 2 * U, qa);
            pairs(b + U, qb);
        }
    } else if (active) {
        for (int b = 0; b < ntiles; b += U) {
            uint4 cur[U];
#pragma unroll
            for (int u = 0; u < U; u++) cur[u] = qa[u];
            load(b + U, qa);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int tile = b + u;
                if (tile >= ntiles) break;
                const bool opens = tile == 0 || cpos == 0;
                if (++cpos == tpg) cpos = 0;
                const bool closes = tile == ntiles - 1 || cpos == 0;
                if (opens) open_group();
                tile_mma(tile, cur[u]);
                if (closes) close_group();
            }
        }
    }

    tc_stamp(p, 3);
    if (p.trace) {
        unsigned smid;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
        tc_record(p, 6, smid);
    }
    // acc[f][i]: column strip * 16 + g (+ 8 for i >= 2), row f * 8 + 2t + (i & 1). One split
    // with a plain store writes y here; otherwise partials, summed by the group's last block.
    const bool direct = ks == 1 && KIND == CU_GEMV_STORE;
    const int n_lo = strip * 16 + g;
    if (active)
#pragma unroll
        for (int f = 0; f < NB; f++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int m = f * 8 + 2 * t + (i & 1), n = n_lo + (i >= 2 ? 8 : 0);
                if (m >= M) continue;
                if (direct)
                    ((bf16 *)p.o.y)[(size_t)m * p.o.ldy + n] = __float2bfloat16(acc[f][i] + (p.bias ? p.bias[n] : 0.f));
                else
                    p.partial[((size_t)blockIdx.y * M + m) * p.out + n] = acc[f][i];
            }
    if (direct || (p.flags & CU_GPTQ_NO_REDUCE)) return;
    // Release the block's partials (the barrier orders them before thread 0's release, which
    // is cumulative) and take a ticket; the last block of the group acquires everyone's.
    const int grp = tc_group<KIND>(p, blockIdx.x);
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned n = (unsigned)(ks * tc_gtiles<KIND>(p)) - 1;
        if (p.flags & CU_GPTQ_ACQREL_TICKET) {  // one atomic that releases and acquires (the default)
            unsigned old;
            asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;\n" : "=r"(old) : "l"(&p.ticket[grp]) : "memory");
            last = old == n;
        } else {
            __threadfence();
            const bool l = atomicAdd(&p.ticket[grp], 1u) == n;
            if (l) __threadfence();
            last = l;
        }
    }
    __syncthreads();
    tc_stamp(p, 4);
    if (!last) return;
    if (KIND == CU_GEMV_RESID)
        merge_resid<M>(p, ks, blockIdx.x);
    else if (KIND == CU_GEMV_SWIGLU)
        merge_swiglu<M>(p, ks, grp);
    else if (KIND == CU_GEMV_ROPE)
        merge_rope<M>(p, ks, grp);
    else
        merge_store<M>(p, ks, blockIdx.x);
    if (threadIdx.x == 0) p.ticket[grp] = 0;  // re-arm for the next launch / graph replay
    tc_stamp(p, 5);
}

static size_t tc_smem(int M, int kr, int gs) {
    return (size_t)M * (kr + 8) * 2 + (size_t)tc_xsum_floats(M, kr) * 4 + (size_t)TC_WARPS * tc_ngb(kr, gs) * 64;
}

template <int M, int F>
static void launch_form(const tc_args &a, int ks, cudaStream_t st) {
    dim3 grid((a.out + TC_COLS - 1) / TC_COLS, ks);
    CU_CHECK(pdl_launch(k_gptq_tc<M, F>, grid, dim3(TC_WARPS * 32), tc_smem(M, a.kr, a.gs), st, a));
}

// The forms that exist: the plain GEMV for every row count, the fused ones up to
// CU_GEMV_FUSED_MAX_ROWS (the norm input with the plain and the RoPE outputs).
template <int M>
static void launch_tc(const tc_args &a, int ks, int form, cudaStream_t st) {
    if constexpr (M <= CU_GEMV_FUSED_MAX_ROWS) {
        switch (form) {
        case CU_GEMV_RESID: launch_form<M, CU_GEMV_RESID>(a, ks, st); return;
        case CU_GEMV_SWIGLU: launch_form<M, CU_GEMV_SWIGLU>(a, ks, st); return;
        case CU_GEMV_ROPE: launch_form<M, CU_GEMV_ROPE>(a, ks, st); return;
        case CU_GEMV_STORE | TC_NORM: launch_form<M, CU_GEMV_STORE | TC_NORM>(a, ks, st); return;
        case CU_GEMV_ROPE | TC_NORM: launch_form<M, CU_GEMV_ROPE | TC_NORM>(a, ks, st); return;
        default: break;
        }
    }
    launch_form<M, CU_GEMV_STORE>(a, ks, st);
}

extern "C" bool cu_gemv_fused_supported(const struct cu_gptq *l, int kind, bool norm, int rope_hd) {
    if (!cu_gptq_tc_supported(l->in, l->out, l->group_size)) return false;
    if (norm && kind != CU_GEMV_STORE && kind != CU_GEMV_ROPE) return false;  // forms compiled (launch_tc)
    switch (kind) {
    case CU_GEMV_STORE: return true;
    case CU_GEMV_RESID: return l->out % TC_COLS == 0;
    case CU_GEMV_SWIGLU: return l->out % (2 * TC_COLS) == 0;
    case CU_GEMV_ROPE: return rope_hd > 0 && rope_hd % TC_COLS == 0 && l->out % rope_hd == 0;
    default: return false;
    }
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

extern "C" void cu_gptq_gemv_fused(const struct cu_gptq *l, const struct cu_gemv_in *x, const struct cu_gemv_norm *norm,
                                   int M, const float *bias, const struct cu_gemv_out *out, float *partial,
                                   cudaStream_t st) {
    if (M <= 0) return;
    const int kind = out->kind, hd = kind == CU_GEMV_ROPE ? out->rope.hd : 0;
    if (M > (kind != CU_GEMV_STORE || norm ? CU_GEMV_FUSED_MAX_ROWS : CU_GEMV_MAX_ROWS) ||
        !cu_gemv_fused_supported(l, kind, norm != NULL, hd) ||
        (norm && (x->swiglu || (!x->perm && (!aligned16(norm->resid) || !aligned16(norm->w))))) ||
        (kind == CU_GEMV_ROPE && l->out != (out->rope.n_heads + 2 * out->rope.n_kv) * hd)) {
        cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "gptq gemv: unsupported shape or fused form");
        return;
    }
    tc_args a;
    memset(&a, 0, sizeof a);
    a.qw = (const uint4 *)l->qweight;
    a.sz = l->sz;
    a.in = l->in;
    a.out = l->out;
    a.gs = l->group_size;
    a.ng = l->n_groups;
    a.kr = tc_kr(l, M);
    a.x.x = (const bf16 *)x->x;
    a.x.ldx = x->ldx;
    a.x.perm = x->perm;
    a.x.swiglu = x->swiglu;
    a.x.vec = !norm && !x->perm && x->ldx % 8 == 0 && (uintptr_t)x->x % 16 == 0;
    if (norm) a.norm = *norm;
    a.bias = bias;
    a.o = *out;
    a.partial = partial + CU_GEMV_COUNTERS;
    a.ticket = (unsigned *)partial;
    if (g_flags < 0) g_flags = default_flags();
    a.flags = g_flags;
    const int ks = tc_splits(l, M), form = kind | (norm ? TC_NORM : 0);
    a.trace = trace_next(&g_trace, (size_t)((l->out + TC_COLS - 1) / TC_COLS) * ks);
    switch (M) {
    case 1: launch_tc<1>(a, ks, form, st); break;
    case 2: launch_tc<2>(a, ks, form, st); break;
    case 3: launch_tc<3>(a, ks, form, st); break;
    case 4: launch_tc<4>(a, ks, form, st); break;
    case 5: launch_tc<5>(a, ks, form, st); break;
    case 6: launch_tc<6>(a, ks, form, st); break;
    case 7: launch_tc<7>(a, ks, form, st); break;
    case 8: launch_tc<8>(a, ks, form, st); break;
    case 9: launch_tc<9>(a, ks, form, st); break;
    case 10: launch_tc<10>(a, ks, form, st); break;
    case 11: launch_tc<11>(a, ks, form, st); break;
    case 12: launch_tc<12>(a, ks, form, st); break;
    case 13: launch_tc<13>(a, ks, form, st); break;
    case 14: launch_tc<14>(a, ks, form, st); break;
    case 15: launch_tc<15>(a, ks, form, st); break;
    default: launch_tc<16>(a, ks, form, st); break;
    }
}

extern "C" void cu_gptq_gemv_ex(const struct cu_gptq *l, const struct cu_gemv_in *x, int M, const float *bias,
                                bf16_t *y, int ldy, float *partial, cudaStream_t st) {
    struct cu_gemv_out o;
    memset(&o, 0, sizeof o);
    o.kind = CU_GEMV_STORE;
    o.y = y;
    o.ldy = ldy;
    cu_gptq_gemv_fused(l, x, NULL, M, bias, &o, partial, st);
}

extern "C" void cu_gptq_gemv(const struct cu_gptq *l, const bf16_t *x, int M, const float *bias, bf16_t *y,
                             int ldy, float *partial, cudaStream_t st) {
    struct cu_gemv_in a = {x, l->in, NULL, false};
    cu_gptq_gemv_ex(l, &a, M, bias, y, ldy, partial, st);
}

// Warp per tile: the lanes decode their 32 weights into a 64 x 16 shared tile, then write
// its 64 rows of W^T (in, out) as 32-byte pieces.
__global__ void k_gptq_dequant(const uint4 *qw, const uint32_t *sz, int in, int out, int gs, int ng, bf16 *wt) {
    __shared__ __align__(16) bf16 tile_s[4][64][16];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
    const size_t n_tiles = (size_t)(out / 16) * (in / 64);
    for (size_t tix = (size_t)blockIdx.x * 4 + w; tix < n_tiles; tix += (size_t)gridDim.x * 4) {
        const int kt = (int)(tix % (in / 64)), strip = (int)(tix / (in / 64));
        const uint4 q4 = qw[tix * 32 + lane];
        const uint32_t qv[4] = {q4.x, q4.y, q4.z, q4.w};
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int r = g + ((i & 1) ? 8 : 0), k = j * 16 + 2 * t + ((i & 2) ? 8 : 0) + ((i & 4) ? 1 : 0);
                const uint32_t s = sz[((size_t)strip * ng + (kt * 64 + k) / gs) * 16 + r];
                const float scale = __half2float(__ushort_as_half((unsigned short)(s & 0xffff)));
                tile_s[w][k][r] = __float2bfloat16(((float)((qv[j] >> (4 * i)) & 0xF) - (float)(s >> 16)) * scale);
            }
        __syncwarp();
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int k = lane + 32 * h;
            uint4 *dst = (uint4 *)(wt + (size_t)(kt * 64 + k) * out + strip * 16);
            dst[0] = *(const uint4 *)&tile_s[w][k][0];
            dst[1] = *(const uint4 *)&tile_s[w][k][8];
        }
        __syncwarp();
    }
}

extern "C" void cu_gptq_dequant(const struct cu_gptq *l, bf16_t *wt, cudaStream_t st) {
    size_t blocks = ((size_t)(l->out / 16) * (l->in / 64) + 3) / 4;
    k_gptq_dequant<<<blocks > 65535 ? 65535 : (unsigned)blocks, 128, 0, st>>>(
        (const uint4 *)l->qweight, l->sz, l->in, l->out, l->group_size, l->n_groups, (bf16 *)wt);
    CU_LAUNCHED("gptq_dequant");
}
