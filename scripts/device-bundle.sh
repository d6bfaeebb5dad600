#!/usr/bin/env bash
# Prepares .devbundle/ for a run on the GPU machine (which has the CUDA toolkit and
# PyTorch but none of our Debian -dev libraries): builds the CUDA binary and the test
# binaries here, and copies in the non-system shared libraries they need.
# On the device:   export LD_LIBRARY_PATH=$PWD/.devbundle/lib:$LD_LIBRARY_PATH
# (CUDA's own libraries come from the device's toolkit.)  Usage: scripts/device-bundle.sh [make targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
make -j"$(nproc)" CUDA=1 all test-bins "$@"
rm -rf .devbundle && mkdir -p .devbundle/lib .devbundle/bin
cp build-cuda/pagoda .devbundle/bin/
for t in build-cuda/tests/test_*; do [ -x "$t" ] && cp "$t" .devbundle/bin/; done
for b in .devbundle/bin/*; do
  ldd "$b" | awk '/=> \//{print $3}' | grep -vE 'libc\.so|libm\.so|libpthread|libdl|librt|ld-linux|libcuda|libcublas|libcudart|libstdc\+\+|libgcc_s' || true
done | sort -u | while read -r so; do cp -L "$so" .devbundle/lib/; done
du -sh .devbundle
