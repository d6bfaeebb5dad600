// The CUDA backend's int4 weight layout ("tile layout"), built on the host at load time
// from the GPTQ checkpoint layout. Plain C so the CPU test suite checks it.
//
// Checkpoint layout: qweight [in/8][out] uint32, word (r, n) holds W[n][8r + j] in bits
// 4j..4j+3 (W is out x in, row n = output column n of y = x . W^T).
//
// Tile layout: 16 output columns x 64 inputs per 512-byte tile, tiles of one 16-column
// strip stored consecutively along the input, so a warp streaming its strip reads one
// contiguous run (DRAM-friendly, one 16-byte load per lane per tile):
//   word index = ((nt * (in / 64) + kt) * 32 + lane) * 4 + j        (nt = n / 16, kt = k / 64)
// Lane (g = lane / 4, t = lane % 4), word j (j-th 16-input step of the tile) holds the
// eight values the lane needs as the A operand of mma.m16n8k16 for that step, with
// rows = output columns (n0 = 16 nt), columns = inputs (k0 = 64 kt + 16 j):
//   nibble 0: W[n0+g  ][k0+2t  ]   nibble 4: W[n0+g  ][k0+2t+1]
//   nibble 1: W[n0+g+8][k0+2t  ]   nibble 5: W[n0+g+8][k0+2t+1]
//   nibble 2: W[n0+g  ][k0+2t+8]   nibble 6: W[n0+g  ][k0+2t+9]
//   nibble 3: W[n0+g+8][k0+2t+8]   nibble 7: W[n0+g+8][k0+2t+9]
// so (word >> 4i) & 0x000F000F are the bf16x2 register pairs a0..a3 in order (i = 0..3).
// Scales/zeros: sz [out/16][n_groups][16] uint32 (fp16 scale | zero << 16), one 64-byte
// run per strip and group.
// Shape limits: in % 64 == 0, out % 16 == 0.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// dst: (in/8) * out words. src: checkpoint-layout qweight of the same shape.
void gptq_tile_pack(const uint32_t *src, int in, int out, uint32_t *dst);
// The 4-bit value of W[n][k] in a tile-layout buffer.
int gptq_tile_nibble(const uint32_t *tiles, int in, int n, int k);
// dst [out/16][n_groups][16] from src [n_groups][out].
void gptq_tile_pack_sz(const uint32_t *src, int n_groups, int out, uint32_t *dst);

#ifdef __cplusplus
}
#endif
