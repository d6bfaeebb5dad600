#!/usr/bin/env bash
# Builds the CUDA binary and GPU tests here and bundles them with the non-system shared
# libraries they need (the GPU machine lacks our Debian -dev libraries) into DEST
# (default /work/main/.devwork/cuda), together with the bench scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-/work/main/.devwork/cuda}
make -j2 CUDA=1 all test-cuda-bins bench-cuda >/dev/null
make -j2 CUDA=1 build-cuda/tests-cuda/bench_attn_prefill >/dev/null  # GPU kernel benchmarks (not run by test-cuda)
rm -rf "$DEST" && mkdir -p "$DEST/lib" "$DEST/bin"
cp build-cuda/pagoda build-cuda/tests-cuda/test_* build-cuda/bench/cuda_ops_bench "$DEST/bin/"
cp build-cuda/tests-cuda/bench_* "$DEST/bin/" 2>/dev/null || true
# an older build to compare against in the same device session (device_run.sh ab), if given
[ -n "${BASE_BIN:-}" ] && cp "$BASE_BIN" "$DEST/bin/pagoda-base"
[ -n "${BASE_OPS:-}" ] && cp "$BASE_OPS" "$DEST/bin/cuda_ops_bench-base"
cp bench/device_run.sh bench/device_perf.sh bench/hf_baseline.py "$DEST/" 2>/dev/null || true
[ -n "${BASE_BIN:-}" ] && echo "base: ${BASE_COMMIT:-unknown}" > "$DEST/BASE_COMMIT"
for b in "$DEST"/bin/*; do
  ldd "$b" | awk '/=> \//{print $3}' | grep -vE 'libc\.so|libm\.so|libpthread|libdl|librt|ld-linux|libcuda|libcublas|libcudart|libstdc\+\+|libgcc_s' || true
done | sort -u | while read -r so; do cp -L "$so" "$DEST/lib/"; done
strip -g "$DEST"/bin/* || true
git rev-parse --short HEAD > "$DEST/COMMIT"
git status --porcelain | grep -q . && echo "+dirty" >> "$DEST/COMMIT" || true
du -sh "$DEST"
