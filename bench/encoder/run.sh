#!/usr/bin/env bash
# Encoder speed, sieve (candle + fused ops) vs PyTorch, same model (all-MiniLM-L6-v2),
# same shapes, same loss, same machine, alternating runs; prints medians and ratios:
#   forward and forward+backward+AdamW, on 32×128 fixed-length batches and on the real
#   SciFact length mix (first documents, max 256 tokens), plus each side's 2048² GEMM
#   GFLOP/s as the machine's float32 matrix-product peak.
#
#   bench/encoder/run.sh [REPEATS=3] [STEPS=4]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEATS=${1:-3}
STEPS=${2:-4}
MODEL=models/all-MiniLM-L6-v2
THREADS=$(nproc)
scripts/fetch-model.sh >&2
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
scripts/build.sh -q
TEXTS=target/bench-scifact-texts.txt
python3 - "${SCIFACT_CORPUS:-../shared/data/scifact/corpus.jsonl.gz}" "$TEXTS" <<'PY'
import gzip, json, sys
with gzip.open(sys.argv[1], "rt") as f, open(sys.argv[2], "w") as out:
    for line in f:
        d = json.loads(line)
        out.write((d.get("title", "") + " " + d.get("text", "")).strip().replace("\n", " ") + "\n")
PY
OUT=target/bench-encoder.jsonl
: > "$OUT"
for i in $(seq "$REPEATS"); do
  for mode in forward train; do
    for input in "fixed" "texts $TEXTS"; do
      echo "run $i/$REPEATS: $mode $input" >&2
      target/release/examples/bench_encoder "$MODEL" $mode $input 32 128 "$STEPS" >> "$OUT"
      OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/encoder/torch_encoder.py \
        "$MODEL" $mode $input 32 128 "$STEPS" 2>/dev/null >> "$OUT"
    done
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(tool, mode, inp, key):
    v = [r[key] for r in rows if r["tool"] == tool and r["mode"] == mode and (r["input"] == "fixed") == (inp == "fixed")]
    return statistics.median(v)
print(f"{'work':<34} {'sieve':>10} {'pytorch':>10} {'ratio':>7}   GFLOP/s sieve / pytorch")
for mode in ("forward", "train"):
    for inp in ("fixed", "texts"):
        s, p = med("sieve", mode, inp, "seq_per_s"), med("pytorch", mode, inp, "seq_per_s")
        label = f"{mode} {'32x128' if inp == 'fixed' else 'SciFact mix (32/batch)'}"
        print(f"{label:<34} {s:>8.2f}/s {p:>8.2f}/s {s / p:>6.2f}x   "
              f"{med('sieve', mode, inp, 'gflops'):.0f} / {med('pytorch', mode, inp, 'gflops'):.0f}")
print(f"2048² float32 GEMM peak: candle/gemm {med('sieve', 'forward', 'fixed', 'gemm_peak_gflops'):.0f} GFLOP/s, "
      f"torch {med('pytorch', 'forward', 'fixed', 'gemm_peak_gflops'):.0f} GFLOP/s")
PY
