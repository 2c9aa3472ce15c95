#!/usr/bin/env bash
# The exported model as the Hugging Face tools read it: trains all-MiniLM-L6-v2 for two
# steps on the repository's tiny BEIR fixture, with a dev evaluation, Matryoshka dimensions
# and e5-style prompts ("query: " / "passage: "), then
#  - loads its model card (README.md) with huggingface_hub.ModelCard: YAML metadata, and
#    the model-index parsed into an eval result equal to the dev nDCG@10 sieve logged;
#  - loads the model with sentence-transformers, whose encode_query / encode_document must
#    apply the prompts sieve trained with: their embeddings equal `sieve encode --role
#    query|document` (cosine >= 0.99999), and differ from the unprompted ones.
# Needs the reference venv (scripts/setup-python.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
scripts/fetch-model.sh >&2
scripts/build.sh -q
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
target/release/sieve train --quiet --model models/all-MiniLM-L6-v2 --data tests/fixtures/tiny-beir \
  --split test --eval-dataset tests/fixtures/tiny-beir --eval-split test --output "$TMP/m" \
  --batch-size 2 --max-steps 2 --save-every 0 --matryoshka-dims 384,64 \
  --query-prompt "query: " --document-prompt "passage: " >/dev/null
printf 'what causes anaemia?\nIron deficiency is a common cause of anaemia.\nsleep and mortality\n' > "$TMP/texts.txt"
for role in query document plain; do
  target/release/sieve encode --quiet --model "$TMP/m" --role $role --input "$TMP/texts.txt" --output "$TMP/$role.npy"
done
HF_HUB_OFFLINE=1 .venv/bin/python - "$TMP/m" "$TMP" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer
out = Path(sys.argv[1])
card = ModelCard.load(out / "README.md")
d = card.data
logged = [json.loads(l) for l in open(out / "metrics.jsonl")]
best = max(l["eval"] for l in logged if "eval" in l)
res = d.eval_results
checks = {
    "library_name": d.library_name == "sentence-transformers",
    "base_model": d.base_model is None and "`models/all-MiniLM-L6-v2`" in card.text,
    "tags": {"sentence-transformers", "loss:MatryoshkaLoss", "dataset_size:4"} <= set(d.tags),
    "eval_result": res is not None and len(res) == 1 and abs(res[0].metric_value - best) < 1e-9
                   and res[0].metric_type == "cosine_ndcg@10" and res[0].task_type == "information-retrieval",
    "command": "sieve train" in card.text and "--matryoshka-dims 384,64" in card.text,
}
model = SentenceTransformer(str(out), device="cpu")
checks["loads"] = model.encode(["a query"]).shape == (1, 384)
work = Path(sys.argv[2])
texts = (work / "texts.txt").read_text().rstrip("\n").split("\n")
def cos(a, b):
    return ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()
st = {"query": model.encode_query(texts), "document": model.encode_document(texts), "plain": model.encode(texts)}
for role, ref in st.items():
    got = np.load(work / f"{role}.npy")
    c = cos(got, ref)
    print(f"{role}: sieve vs sentence-transformers cosine min {c:.7f}")
    checks[f"{role} embeddings"] = c >= 0.99999
checks["prompts applied"] = cos(st["query"], st["plain"]) < 0.9999 and cos(st["document"], st["plain"]) < 0.9999
checks["prompts in config"] = model.prompts.get("query") == "query: " and model.prompts.get("document") == "passage: "
for k, ok in checks.items():
    print(f"{k}: {'OK' if ok else 'FAIL'}")
print(f"card eval result {res[0].metric_value if res else None} vs logged best {best}")
sys.exit(0 if all(checks.values()) else 1)
PY
