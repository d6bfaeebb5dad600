// GPTQ int4 weight-only GEMM on tensor cores for 1..256 rows (batched decode, short prefill).
//
// Block = 4 warps owning 128 output columns (32 per warp) x a tile of 16*MT rows (MT = 1, 2,
// 4 m16 fragments), walking its K range in chunks of 128 input rows. Each chunk's int4 words
// (16 packed rows x 128 columns), scale/zero words and activation tile are brought into
// shared memory by a 3-4 stage cp.async pipeline, so every SM keeps several chunks
// of weights in flight. No repacking: the checkpoint layout qweight [in/8][out] is used as is,
// with two permutations that cost nothing:
//  - K: mma.m16n8k16 lets thread t (= lane % 4) hold logical k {2t, 2t+1, 2t+8, 2t+9} in both
//    A and B. Over a 32-row block (two mma steps s), thread t's logical k map to the physical
//    rows 8t..8t+7 (pairs {0,4} {1,5} for s = 0, {2,6} {3,7} for s = 1), so its B operand is
//    exactly one int4 word and its A operand one 16-byte load of 8 consecutive activations
//    per row, paired the same way with byte permutes.
//  - N: fragment j's local column g (= lane / 4) is physical column 4g + j of the warp's 32,
//    so a thread's 4 fragments come from one 16-byte load, and its accumulators cover 8
//    consecutive output columns (8t..8t+7).
// Dequantization: two nibbles at a time are AND/OR'd into the mantissas of a bf16x2 128.0 and
// bf16(128 + zero) subtracted (exact small integers); the mma accumulates x . (q - z) in f32
// per quantization group, and the f32 group scale is applied to that partial sum (no bf16
// rounding of the fp16 scales).
// Split-K over blocks (grid z) writes f32 partials that k_mma_reduce sums in a fixed order
// (+ bias); with one split the block stores bf16 directly. Results are deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"

typedef __nv_bfloat16 bf16;

#define MMA_COLS 128               // output columns per block
#define MMA_BK 128                 // input rows per chunk
#define MMA_WROW (MMA_COLS + 8)    // words per packed row in shared (padding: no bank conflicts)
#define MMA_XROW (MMA_BK + 32)     // bf16 per activation row in shared (row stride = 64 mod 128 B)
#define MMA_THREADS 128

#ifndef MMA_MIN_CPS
#define MMA_MIN_CPS 4  // fewest 128-row chunks per split-K block
#endif
#ifndef MMA_S2
#define MMA_S2 3  // pipeline depth at MT 2 (3: 3 blocks per SM, measured a little faster than 4: 2 blocks)
#endif
#ifndef MMA_CPS_MT
#define MMA_CPS_MT 1  // 1: the fewest chunks per split-K block grows with the row tile (4 * MT)
#endif
#ifndef MMA_S1
#define MMA_S1 3  // pipeline depth at MT 1 (3: 4 blocks per SM, measured faster than 4: 3 blocks)
#endif
template <int MT> struct mma_smem {
    static constexpr int stages = MT >= 4 ? 3 : MT == 2 ? MMA_S2 : MMA_S1;  // cp.async pipeline depth
    static constexpr int blocks_per_sm = MT == 1 ? (MMA_S1 == 3 ? 4 : 3) : MT == 2 ? (MMA_S2 == 3 ? 3 : 2) : 2;
    static constexpr int w_words = (MMA_BK / 8) * MMA_WROW;
    static constexpr int sz_words = (MMA_BK / 32) * MMA_COLS;
    static constexpr int x_elems = 16 * MT * MMA_XROW;
    static constexpr int stage_bytes = (w_words + sz_words) * 4 + x_elems * 2;
    static constexpr int bytes = stages * stage_bytes;
};

__device__ __forceinline__ void cp16(void *dst, const void *src, bool valid) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    int n = valid ? 16 : 0;  // 0: zero-fill, nothing read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void mma_bf16(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t bf16x2_sub(uint32_t a, uint32_t b) {
    __nv_bfloat162 r = __hsub2(*(__nv_bfloat162 *)&a, *(__nv_bfloat162 *)&b);
    return *(uint32_t *)&r;
}

struct mma_args {
    const int32_t *qweight;
    const uint32_t *sz;
    int in, out, gs, M, cps, ks;
    const bf16 *x;
    const float *bias;
    bf16 *y;
    int ldy;
    float *partial;
};

// Issues the cp.async copies of chunk c into shared stage buffer `st`; rows past `in`,
// columns past `out` and activation rows past M are zero-filled.
template <int MT>
__device__ __forceinline__ void load_chunk(const mma_args &p, int c, char *st, int row0, int n0) {
    uint32_t *ws = (uint32_t *)st, *szs = ws + mma_smem<MT>::w_words;
    bf16 *xs = (bf16 *)(szs + mma_smem<MT>::sz_words);
    const int tid = threadIdx.x, k0 = c * MMA_BK, kr = min(MMA_BK, p.in - k0) / 8;
    const int col = n0 + (tid & 31) * 4;
    const bool cv = col < p.out;
    const int32_t *wsrc = p.qweight + (size_t)(k0 / 8 + (tid >> 5)) * p.out + col;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = (tid >> 5) + 4 * i;
        const bool v = cv && r < kr;
        cp16(ws + r * MMA_WROW + (tid & 31) * 4, v ? wsrc + (size_t)(4 * i) * p.out : p.qweight, v);
    }
    {
        const int g0 = k0 / p.gs, ng = (k0 + kr * 8 - 1) / p.gs - g0 + 1, r = tid >> 5;
        const bool v = cv && r < ng;
        cp16(szs + r * MMA_COLS + (tid & 31) * 4, v ? p.sz + (size_t)(g0 + r) * p.out + col : p.sz, v);
    }
    const int q = tid & 15;
#pragma unroll
    for (int i = 0; i < 2 * MT; i++) {
        const int r = (tid >> 4) + 8 * i;
        const bool v = row0 + r < p.M && q < kr;
        cp16(xs + r * MMA_XROW + q * 8, v ? p.x + (size_t)(row0 + r) * p.in + k0 + q * 8 : p.x, v);
    }
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}

// The MMAs of one chunk: 32-row blocks, each group's partial sum (tmp) flushed into acc with
// the group's scale. Inside a 32-row block, thread t's word (rows 8t..8t+7, nibbles n0..n7)
// feeds the two mma steps as bf16 pairs {n0,n4} {n1,n5} (step 0) and {n2,n6} {n3,n7} (step
// 1): one AND/OR per pair; the activations are paired the same way with byte permutes.
// starts/ends: bit kb set when 32-row block kb begins / ends a group (or the block's K range).
template <int MT, bool AL>
__device__ __forceinline__ void compute_chunk(const char *st, int nkb, unsigned starts, unsigned ends, int gi0,
                                              float (&acc)[MT][4][4], float (&tmp)[MT][4][4], float (&sc)[8],
                                              uint32_t (&zz)[4]) {
    const uint32_t *ws = (const uint32_t *)st, *szs = ws + mma_smem<MT>::w_words;
    const bf16 *xs = (const bf16 *)(szs + mma_smem<MT>::sz_words);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int gi = gi0;  // group row within this stage's scale rows
#pragma unroll
    for (int kb = 0; kb < MMA_BK / 32; kb++) {
        // AL (groups and `in` multiples of 128): groups start and end only at chunk edges, and the
        // kb loop is straight-line code the compiler can schedule across
        if (!AL && kb >= nkb) break;
        if (AL ? (kb == 0 && (starts & 1)) : (starts >> kb & 1)) {  // (re)load this group's zeros and scales
            const uint32_t *row = szs + gi * MMA_COLS + warp * 32;
            uint4 zv = *(const uint4 *)(row + 4 * g), s0 = *(const uint4 *)(row + 8 * t),
                  s1 = *(const uint4 *)(row + 8 * t + 4);
            uint32_t zw[4] = {zv.x, zv.y, zv.z, zv.w}, sw[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
            for (int j = 0; j < 4; j++) zz[j] = (0x4300u + (zw[j] >> 16)) * 0x10001u;  // bf16(128 + z), z < 128
#pragma unroll
            for (int j = 0; j < 8; j++) sc[j] = __half2float(__ushort_as_half((unsigned short)(sw[j] & 0xffff)));
            gi++;
        }
        const uint4 wv = *(const uint4 *)(ws + (kb * 4 + t) * MMA_WROW + warp * 32 + 4 * g);
        const uint32_t w[4] = {wv.x, wv.y, wv.z, wv.w};
        uint32_t a[MT][2][4];  // [mt][step][mma A register]
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const uint4 lo = *(const uint4 *)(xs + (mt * 16 + g) * MMA_XROW + kb * 32 + 8 * t);
            const uint4 hi = *(const uint4 *)(xs + (mt * 16 + g + 8) * MMA_XROW + kb * 32 + 8 * t);
            a[mt][0][0] = prmt(lo.x, lo.z, 0x5410), a[mt][0][2] = prmt(lo.x, lo.z, 0x7632);
            a[mt][0][1] = prmt(hi.x, hi.z, 0x5410), a[mt][0][3] = prmt(hi.x, hi.z, 0x7632);
            a[mt][1][0] = prmt(lo.y, lo.w, 0x5410), a[mt][1][2] = prmt(lo.y, lo.w, 0x7632);
            a[mt][1][1] = prmt(hi.y, hi.w, 0x5410), a[mt][1][3] = prmt(hi.y, hi.w, 0x7632);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) b[i] = bf16x2_sub(((w[j] >> (4 * i)) & 0x000F000Fu) | 0x43004300u, zz[j]);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma_bf16(tmp[mt][j], a[mt][0], b[0], b[1]);
                mma_bf16(tmp[mt][j], a[mt][1], b[2], b[3]);
            }
        }
        if (AL ? (kb == MMA_BK / 32 - 1 && ends) : (ends >> kb & 1)) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    acc[mt][j][0] += sc[j] * tmp[mt][j][0];
                    acc[mt][j][1] += sc[4 + j] * tmp[mt][j][1];
                    acc[mt][j][2] += sc[j] * tmp[mt][j][2];
                    acc[mt][j][3] += sc[4 + j] * tmp[mt][j][3];
#pragma unroll
                    for (int e = 0; e < 4; e++) tmp[mt][j][e] = 0;
                }
        }
    }
}

// Row r's 8 consecutive columns from col: bf16 (+ bias) when there is one split, else f32 partials.
__device__ __forceinline__ void store_row8(const mma_args &p, int r, int col, const float *v) {
    if (r >= p.M || col >= p.out) return;
    if (p.ks == 1) {
        bf16 *dst = p.y + (size_t)r * p.ldy + col;
#pragma unroll
        for (int e = 0; e < 8; e++)
            if (col + e < p.out) dst[e] = __float2bfloat16(v[e] + (p.bias ? p.bias[col + e] : 0.f));
    } else {
        float *dst = p.partial + ((size_t)blockIdx.z * p.M + r) * p.out + col;
#pragma unroll
        for (int e = 0; e < 8; e++)
            if (col + e < p.out) dst[e] = v[e];
    }
}

template <int MT, bool AL>
__global__ void __launch_bounds__(MMA_THREADS) k_gptq_mma(const mma_args p) {
    extern __shared__ __align__(16) char smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.x * 16 * MT, n0 = blockIdx.y * MMA_COLS;
    const int n_chunks = (p.in + MMA_BK - 1) / MMA_BK, c_begin = blockIdx.z * p.cps;
    const int c_end = min(n_chunks, c_begin + p.cps);
    const int SB = mma_smem<MT>::stage_bytes;

    float acc[MT][4][4], tmp[MT][4][4], sc[8];
    uint32_t zz[4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][j][e] = tmp[mt][j][e] = 0;

    constexpr int S = mma_smem<MT>::stages;
#pragma unroll
    for (int s = 0; s < S - 1; s++) {
        if (c_begin + s < c_end) load_chunk<MT>(p, c_begin + s, smem + s * SB, row0, n0);
        cp_commit();
    }
    const int gb = p.gs / 32;        // group size in 32-row blocks
    int pos = (c_begin * MMA_BK) % p.gs / 32;  // position of the next 32-row block in its group
    for (int c = c_begin; c < c_end; c++) {
        cp_wait<S - 2>();
        __syncthreads();  // chunk c visible to all; everyone is done with chunk c - 1's buffer
        const int nc = c + S - 1;
        if (nc < c_end) load_chunk<MT>(p, nc, smem + ((nc - c_begin) % S) * SB, row0, n0);
        cp_commit();
        const int k0 = c * MMA_BK, nkb = min(MMA_BK, p.in - k0) / 32;
        unsigned starts = c == c_begin, ends = 0;  // the first block (re)loads scales even mid-group
        for (int kb = 0; kb < nkb; kb++) {
            starts |= (pos == 0) << kb;
            if (++pos == gb) ends |= 1u << kb, pos = 0;
        }
        if (c == c_end - 1) ends |= 1u << (nkb - 1);
        // scale rows of the stage start at the chunk's first group: the first reload uses row 0 when the
        // chunk starts a group, else row 1 (row 0 is the group carried over from the previous chunk)
        compute_chunk<MT, AL>(smem + ((c - c_begin) % S) * SB, nkb, starts, ends, (starts & 1) ? 0 : 1, acc, tmp, sc,
                          zz);
    }
    cp_wait<0>();

    const int col = n0 + warp * 32 + 8 * t;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float lo[8], hi[8];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            lo[j] = acc[mt][j][0], lo[4 + j] = acc[mt][j][1];
            hi[j] = acc[mt][j][2], hi[4 + j] = acc[mt][j][3];
        }
        store_row8(p, row0 + mt * 16 + g, col, lo);
        store_row8(p, row0 + mt * 16 + g + 8, col, hi);
    }
}

__global__ void k_mma_reduce(const float *partial, int ks, int M, int out, const float *bias, bf16 *y, int ldy) {
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < M * out; e += gridDim.x * blockDim.x) {
        int m = e / out, o = e % out;
        float s = bias ? bias[o] : 0.f;
        for (int k = 0; k < ks; k++) s += partial[((size_t)k * M + m) * out + o];
        y[(size_t)m * ldy + o] = __float2bfloat16(s);
    }
}

// Rows per block tile (16 * MT), number of K splits and chunks per split for M rows.
static void mma_shape(const struct cu_gptq *l, int M, int *mt, int *ks, int *cps) {
    int dev = 0, n_sm = 132;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        n_sm = 132;
    *mt = M <= 16 ? 1 : M <= 32 ? 2 : 4;
    const int n_chunks = (l->in + MMA_BK - 1) / MMA_BK;
    const int tiles = ((M + 16 * *mt - 1) / (16 * *mt)) * ((l->out + MMA_COLS - 1) / MMA_COLS);
    const int target = n_sm * (*mt == 1 ? mma_smem<1>::blocks_per_sm : *mt == 2 ? mma_smem<2>::blocks_per_sm : mma_smem<4>::blocks_per_sm);
    int k = (target + tiles - 1) / tiles;
    k = k < 1 ? 1 : k > n_chunks ? n_chunks : k;
    int c = (n_chunks + k - 1) / k;
    const int min_cps = MMA_CPS_MT ? MMA_MIN_CPS * *mt : MMA_MIN_CPS;  // pipeline fill amortised over enough chunks
    if (c < min_cps) c = min_cps < n_chunks ? min_cps : n_chunks;
    *cps = c;
    *ks = (n_chunks + c - 1) / c;
}

extern "C" bool cu_gptq_mma_supported(const struct cu_gptq *l) {
    return l->in % 32 == 0 && l->out % 4 == 0 && l->group_size % 32 == 0 && l->in > 0 && l->out > 0;
}

extern "C" size_t cu_gptq_mma_scratch_floats(const struct cu_gptq *l, int M) {
    int mt, ks, cps;
    if (M < 1) return 0;
    mma_shape(l, M, &mt, &ks, &cps);
    return ks > 1 ? (size_t)ks * M * l->out : 0;
}

template <int MT> static void launch_mma(const mma_args &a, dim3 grid, cudaStream_t st) {
    const int bytes = mma_smem<MT>::bytes;
    if (a.gs % MMA_BK == 0 && a.in % MMA_BK == 0) {
        CU_CHECK(cudaFuncSetAttribute(k_gptq_mma<MT, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
        k_gptq_mma<MT, true><<<grid, MMA_THREADS, bytes, st>>>(a);
    } else {
        CU_CHECK(cudaFuncSetAttribute(k_gptq_mma<MT, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
        k_gptq_mma<MT, false><<<grid, MMA_THREADS, bytes, st>>>(a);
    }
    CU_LAUNCHED("gptq_mma");
}

extern "C" void cu_gptq_mma(const struct cu_gptq *l, const bf16_t *x, int M, const float *bias, bf16_t *y, int ldy,
                            float *scratch, cudaStream_t st) {
    if (M <= 0) return;
    if (!cu_gptq_mma_supported(l) || ((uintptr_t)x & 15)) {
        cu_note(cudaErrorInvalidValue, __FILE__, __LINE__, "gptq_mma: unsupported shape");
        return;
    }
    int mt, ks, cps;
    mma_shape(l, M, &mt, &ks, &cps);
    mma_args a = {l->qweight, l->sz, l->in, l->out, l->group_size, M, cps, ks, (const bf16 *)x, bias, (bf16 *)y, ldy,
                  scratch};
    dim3 grid((M + 16 * mt - 1) / (16 * mt), (l->out + MMA_COLS - 1) / MMA_COLS, ks);
    switch (mt) {
    case 1: launch_mma<1>(a, grid, st); break;
    case 2: launch_mma<2>(a, grid, st); break;
    default: launch_mma<4>(a, grid, st); break;
    }
    if (ks > 1) {
        int n = M * l->out, blocks = (n + 255) / 256;
        k_mma_reduce<<<blocks > 4096 ? 4096 : blocks, 256, 0, st>>>(scratch, ks, M, l->out, bias, (bf16 *)y, ldy);
        CU_LAUNCHED("gptq_mma_reduce");
    }
}
