#!/usr/bin/env python3
"""Instruction counts per kernel from `cuobjdump -sass` output (bench/device_run.sh sass):
for each decode kernel, total SASS instructions and the most frequent opcodes."""
import collections, re, sys

WANT = re.compile(r"k_gptq_tc|k_attn_decode|rmsnorm|rope|k_gemv")
kern, counts = None, {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"Function : (\S+)", line)
    if m:
        kern = m.group(1) if WANT.search(m.group(1)) else None
        if kern:
            counts[kern] = collections.Counter()
        continue
    m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
    if kern and m:
        counts[kern][m.group(1).split(".")[0]] += 1
for k, c in counts.items():
    print(f"{k}: {sum(c.values())} instructions; " + ", ".join(f"{o} {n}" for o, n in c.most_common(14)))

# The full listing of the batch-1 GEMV (M = 1, U = 4) and the GQA-5 bf16 decode attention.
if len(sys.argv) > 2:
    keep, out = False, open(sys.argv[2], "w")
    for line in open(sys.argv[1], errors="replace"):
        if "Function :" in line:
            keep = bool(re.search(r"k_gptq_tcILi1ELi4E|k_attn_decodeILi128ELi5ELb0E", line))
        if keep:
            out.write(line)
