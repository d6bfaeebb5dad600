#!/usr/bin/env python3
"""Minimal GGUF reader and ggml dequantizer in numpy (test/inspection tool only).

Written from the GGUF spec (ggml docs/gguf.md) and the block formats of ggml-common.h /
ggml-quants.c. It is the independent reference our C importer (src/model/gguf.c) is tested
against, and `python3 tools/gguf_read.py FILE` prints a file's metadata and tensor summary.
"""
import struct
import sys

import numpy as np

# ggml tensor types (ggml.h enum ggml_type)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30
TYPE_NAMES = {F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q8_0: "Q8_0",
              Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K", BF16: "BF16", 6: "Q5_0", 7: "Q5_1",
              10: "Q2_K", 11: "Q3_K"}
# (elements per block, bytes per block)
BLOCK = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20),
         Q5_0: (32, 22), Q5_1: (32, 24), Q8_0: (32, 34), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210)}

# metadata value types
U8, I8, U16, I16, U32, I32, F32V, BOOL, STR, ARR, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32V: "<f",
           BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


class _Cur:
    def __init__(self, buf):
        self.b, self.o = buf, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = bytes(self.b[self.o:self.o + n])
        self.o += n
        return s.decode("utf-8", errors="surrogateescape")

    def value(self, t):
        if t == STR:
            return self.string()
        if t == ARR:
            et, n = self.take("<I"), self.take("<Q")
            if et in _SCALAR and et != BOOL:
                dt = np.dtype(_SCALAR[et])
                a = np.frombuffer(self.b, dtype=dt, count=n, offset=self.o)
                self.o += n * dt.itemsize
                return a.tolist()
            return [self.value(et) for _ in range(n)]
        return self.take(_SCALAR[t])


def read(path):
    """Returns (metadata dict, list of tensor dicts {name, type, ne, offset}, data buffer)."""
    buf = memoryview(np.memmap(path, dtype=np.uint8, mode="r"))
    c = _Cur(buf)
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    c.o = 4
    version = c.take("<I")
    n_tensors, n_kv = c.take("<Q"), c.take("<Q")
    meta = {"GGUF.version": version}
    for _ in range(n_kv):
        k = c.string()
        meta[k] = c.value(c.take("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = c.string()
        nd = c.take("<I")
        ne = [c.take("<Q") for _ in range(nd)]
        tensors.append({"name": name, "ne": ne, "type": c.take("<I"), "offset": c.take("<Q")})
    align = meta.get("general.alignment", 32)
    start = (c.o + align - 1) // align * align
    return meta, tensors, buf[start:]


def tensor_bytes(t):
    per, nb = BLOCK[t["type"]]
    n = int(np.prod(t["ne"]))
    return n // per * nb


def dequant(ttype, raw):
    """raw: bytes of whole blocks; returns float32 array, exactly as ggml's dequantize_row_*."""
    raw = np.frombuffer(bytes(raw), dtype=np.uint8)
    if ttype == F32:
        return raw.view("<f4").copy()
    if ttype == F16:
        return raw.view("<f2").astype(np.float32)
    if ttype == BF16:
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    per, nb = BLOCK[ttype]
    b = raw.reshape(-1, nb)
    f16 = lambda a: a.copy().view("<f2").astype(np.float32)  # noqa: E731
    if ttype == Q8_0:
        d = f16(b[:, 0:2])
        q = b[:, 2:].view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    if ttype in (Q4_0, Q4_1):
        d = f16(b[:, 0:2])
        qs = b[:, nb - 16:]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32)
        if ttype == Q4_0:
            return ((q - np.float32(8)) * d).reshape(-1)
        m = f16(b[:, 2:4])
        return (q * d + m).reshape(-1)
    if ttype in (Q5_0, Q5_1):
        d = f16(b[:, 0:2])
        o = 2 if ttype == Q5_0 else 4
        qh = b[:, o:o + 4].copy().view("<u4").astype(np.uint32)  # (nblk, 1)
        qs = b[:, o + 4:]
        j = np.arange(16, dtype=np.uint32)
        h0 = ((qh >> j) & 1) << 4
        h1 = ((qh >> (j + 16)) & 1) << 4
        q = np.concatenate([(qs & 0xF) | h0, (qs >> 4) | h1], axis=1).astype(np.float32)
        if ttype == Q5_0:
            return ((q - np.float32(16)) * d).reshape(-1)
        return (q * d + f16(b[:, 2:4])).reshape(-1)
    if ttype in (Q4_K, Q5_K):
        d, dmin = f16(b[:, 0:2]), f16(b[:, 2:4])
        sc, mn = _scale_min_k4(b[:, 4:16])
        d1 = d * sc.astype(np.float32)        # (nblk, 8)
        m1 = dmin * mn.astype(np.float32)
        qs = b[:, nb - 128:]
        out = np.empty((b.shape[0], 256), np.float32)
        for j in range(4):  # 64 values per chunk: low nibbles then high nibbles of 32 bytes
            chunk = qs[:, 32 * j:32 * j + 32]
            lo, hi = (chunk & 0xF).astype(np.float32), (chunk >> 4).astype(np.float32)
            if ttype == Q5_K:
                qh = b[:, 16:48]
                lo += ((qh >> (2 * j)) & 1).astype(np.float32) * 16
                hi += ((qh >> (2 * j + 1)) & 1).astype(np.float32) * 16
            out[:, 64 * j:64 * j + 32] = d1[:, 2 * j:2 * j + 1] * lo - m1[:, 2 * j:2 * j + 1]
            out[:, 64 * j + 32:64 * j + 64] = d1[:, 2 * j + 1:2 * j + 2] * hi - m1[:, 2 * j + 1:2 * j + 2]
        return out.reshape(-1)
    if ttype == Q6_K:
        ql, qh = b[:, 0:128], b[:, 128:192]
        sc = b[:, 192:208].view(np.int8).astype(np.float32)
        d = f16(b[:, 208:210])
        out = np.empty((b.shape[0], 256), np.float32)
        for half in range(2):
            l_, h_, s_ = ql[:, 64 * half:64 * half + 64], qh[:, 32 * half:32 * half + 32], sc[:, 8 * half:8 * half + 8]
            qv = [(l_[:, 0:32] & 0xF) | (((h_ >> 0) & 3) << 4),
                  (l_[:, 32:64] & 0xF) | (((h_ >> 2) & 3) << 4),
                  (l_[:, 0:32] >> 4) | (((h_ >> 4) & 3) << 4),
                  (l_[:, 32:64] >> 4) | (((h_ >> 6) & 3) << 4)]
            for k in range(4):
                q = qv[k].astype(np.int8).astype(np.float32) - np.float32(32)
                for part in range(2):  # 16 values share one scale
                    s = d * s_[:, 2 * k + part:2 * k + part + 1]
                    o = 128 * half + 32 * k + 16 * part
                    out[:, o:o + 16] = s * q[:, 16 * part:16 * part + 16]
        return out.reshape(-1)
    raise ValueError("unsupported type %d" % ttype)


def _scale_min_k4(s):
    """The 12-byte packed 6-bit scales and mins of Q4_K/Q5_K -> two (nblk, 8) uint8 arrays."""
    sc = np.empty((s.shape[0], 8), np.uint8)
    mn = np.empty((s.shape[0], 8), np.uint8)
    sc[:, :4] = s[:, 0:4] & 63
    mn[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, mn


def main():
    meta, tensors, _ = read(sys.argv[1])
    for k, v in meta.items():
        if isinstance(v, list):
            v = "[%d items] %s" % (len(v), v[:5])
        elif isinstance(v, str) and len(v) > 200:
            v = v[:200] + "..."
        print("%s = %s" % (k, v))
    counts = {}
    for t in tensors:
        counts[TYPE_NAMES.get(t["type"], t["type"])] = counts.get(TYPE_NAMES.get(t["type"], t["type"]), 0) + 1
    print("tensors: %d %s" % (len(tensors), counts))
    for t in tensors[: int(sys.argv[2]) if len(sys.argv) > 2 else 12]:
        print("  %-28s %-5s %s" % (t["name"], TYPE_NAMES.get(t["type"], t["type"]), t["ne"]))


if __name__ == "__main__":
    main()
