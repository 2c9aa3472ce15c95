# Shared by the judge benchmarks: a SciFact subset mined into exactly
# QUERIES x 5 (query, candidate) pairs. Source it; needs $OUT and $DATA.
# make_pairs QUERIES -> $OUT/mined.parquet. Embeddings go to the default cache
# ($SIEVE_CACHE_DIR or ~/.cache/sieve), so only the first run embeds the corpus.
make_pairs() {
  local n=$1
  python3 - "$DATA" "$OUT/scifact-sub" "$n" <<'PY'
import json, os, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(dst + "/qrels", exist_ok=True)
lines = open(src + "/qrels/test.tsv").read().splitlines()
header, rows = lines[0], [l.split("\t") for l in lines[1:] if l.strip()]
keep = []
for r in rows:
    if r[0] not in keep:
        keep.append(r[0])
keep = set(keep[:n])
with open(dst + "/qrels/test.tsv", "w") as f:
    f.write(header + "\n")
    for r in rows:
        if r[0] in keep:
            f.write("\t".join(r) + "\n")
with open(dst + "/queries.jsonl", "w") as f:
    for l in open(src + "/queries.jsonl"):
        if json.loads(l)["_id"] in keep:
            f.write(l)
corpus = [c for c in ("corpus.jsonl", "corpus.jsonl.gz") if os.path.exists(f"{src}/{c}")][0]
if not os.path.exists(f"{dst}/{corpus}"):
    os.symlink(os.path.abspath(f"{src}/{corpus}"), f"{dst}/{corpus}")
PY
  target/release/sieve mine --quiet --dataset "$OUT/scifact-sub" --split test --model models/all-MiniLM-L6-v2 \
    --bm25-k 10 --dense-k 10 --num-negatives 5 --out "$OUT/mined.parquet" >/dev/null
}
