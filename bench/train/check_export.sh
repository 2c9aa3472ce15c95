#!/usr/bin/env bash
# Loads a model that `sieve train` exported with sentence-transformers (PyTorch) and checks
# that its embeddings equal sieve's: cosine >= 0.99999 on every text (SciFact claims and
# abstracts, short and long). Exits non-zero otherwise.
#
#   bench/train/check_export.sh MODEL_DIR [N_TEXTS=300]
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?usage: check_export.sh MODEL_DIR [N_TEXTS]}
N=${2:-300}
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
scripts/build.sh -q
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
python3 - "${SCIFACT:-../shared/data/scifact}" "$TMP/texts.txt" "$N" <<'PY'
import gzip, json, sys
root, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(l)["text"] for l in open(f"{root}/queries.jsonl")][: n // 2]
with gzip.open(f"{root}/corpus.jsonl.gz", "rt") as f:
    for l in f:
        if len(texts) >= n: break
        d = json.loads(l); texts.append((d.get("title", "") + " " + d.get("text", "")).strip())
open(out, "w").write("\n".join(t.replace("\n", " ") for t in texts) + "\n")
PY
target/release/sieve encode --model "$MODEL" --input "$TMP/texts.txt" --output "$TMP/sieve.npy" --quiet
HF_HUB_OFFLINE=1 .venv/bin/python - "$MODEL" "$TMP/texts.txt" "$TMP/sieve.npy" <<'PY'
import sys, numpy as np
from sentence_transformers import SentenceTransformer
model_dir, texts_path, npy = sys.argv[1:4]
texts = open(texts_path).read().rstrip("\n").split("\n")
st = SentenceTransformer(model_dir, device="cpu")
ref = st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
got = np.load(npy)
assert got.shape == ref.shape, (got.shape, ref.shape)
cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
print(f"{len(texts)} texts: cosine min {cos.min():.7f}, mean {cos.mean():.7f} "
      f"(sentence-transformers {__import__('sentence_transformers').__version__} loading {model_dir})")
sys.exit(0 if cos.min() >= 0.99999 else 1)
PY
