#!/usr/bin/env bash
# Encoder speed, sieve (candle + fused ops) vs PyTorch, same model (all-MiniLM-L6-v2),
# same shapes, same loss, same machine, alternating runs; prints medians and ratios:
#   forward and forward+backward+AdamW, on 32×128 fixed-length batches and on the real
#   SciFact length mix (first documents, max 256 tokens), plus each side's 2048² GEMM
#   GFLOP/s as the machine's float32 matrix-product peak.
#
#   On a CPU with AVX-512, sieve also runs with SIEVE_CPU_ISA=avx2 (its fused kernels'
#   AVX2 instances) beside the default (AVX-512), so both paths are measured in one run.
#   Results are appended to bench/encoder/results/runs.jsonl with the CPU and its flags.
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
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | grep -o 'avx512[a-z_0-9]*\|avx2\|fma\|amx[a-z_0-9]*' | sort -u | tr '\n' ' ')
ISAS="default"
case " $FLAGS " in *" avx512f "*) ISAS="default avx2" ;; esac
for i in $(seq "$REPEATS"); do
  for mode in forward train; do
    for input in "fixed" "texts $TEXTS"; do
      echo "run $i/$REPEATS: $mode $input" >&2
      for isa in $ISAS; do
        if [ "$isa" = default ]; then
          target/release/examples/bench_encoder "$MODEL" $mode $input 32 128 "$STEPS" >> "$OUT"
        else
          SIEVE_CPU_ISA=$isa target/release/examples/bench_encoder "$MODEL" $mode $input 32 128 "$STEPS" |
            sed "s/\"tool\": *\"sieve\"/\"tool\":\"sieve-$isa\"/" >> "$OUT"
        fi
      done
      OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/encoder/torch_encoder.py \
        "$MODEL" $mode $input 32 128 "$STEPS" 2>/dev/null >> "$OUT"
    done
  done
done
python3 - "$OUT" "$CPU" "$FLAGS" "$ISAS" <<'PY'
import json, os, statistics, sys
out, cpu, flags, isas = sys.argv[1:]
rows = [json.loads(l) for l in open(out) if l.startswith("{")]
sieves = ["sieve"] + [f"sieve-{i}" for i in isas.split() if i != "default"]
def med(tool, mode, inp, key):
    v = [r[key] for r in rows if r["tool"] == tool and r["mode"] == mode and (r["input"] == "fixed") == (inp == "fixed")]
    return statistics.median(v)
def per_repeat(tool, mode, inp):
    """Median over repeats of each repeat's own ratio (sieve / PyTorch). The two run
    back to back within a repeat, so a machine that drifts between repeats (a shared
    host) moves both sides of a ratio together; the median of each side's rate does
    not pair them."""
    pick = lambda t: [r["seq_per_s"] for r in rows if r["tool"] == t and r["mode"] == mode and (r["input"] == "fixed") == (inp == "fixed")]
    return statistics.median(a / b for a, b in zip(pick(tool), pick("pytorch")))
print(f"CPU: {cpu} ({flags.strip()})")
head = "".join(f" {t:>12}" for t in sieves)
print(f"{'work':<34}{head} {'pytorch':>10} " + " ".join(f"{t + '/pt':>12}" for t in sieves) + "   GFLOP/s sieve / pytorch")
summary = []
for mode in ("forward", "train"):
    for inp in ("fixed", "texts"):
        p = med("pytorch", mode, inp, "seq_per_s")
        ss = [med(t, mode, inp, "seq_per_s") for t in sieves]
        label = f"{mode} {'32x128' if inp == 'fixed' else 'SciFact mix (32/batch)'}"
        print(f"{label:<34}" + "".join(f" {s:>10.2f}/s" for s in ss) + f" {p:>8.2f}/s " +
              " ".join(f"{s / p:>11.2f}x" for s in ss) +
              f"   {med('sieve', mode, inp, 'gflops'):.0f} / {med('pytorch', mode, inp, 'gflops'):.0f}")
        paired = [per_repeat(t, mode, inp) for t in sieves]
        summary.append({"mode": mode, "input": inp, "pytorch_seq_per_s": p,
                        **{f"{t}_seq_per_s": s for t, s in zip(sieves, ss)},
                        **{f"{t}_ratio": s / p for t, s in zip(sieves, ss)},
                        **{f"{t}_ratio_per_repeat": r for t, r in zip(sieves, paired)}})
print("per-repeat ratios (median over repeats of sieve/pytorch within each repeat; steadier on a shared machine):")
for mode in ("forward", "train"):
    for inp in ("fixed", "texts"):
        label = f"{mode} {'32x128' if inp == 'fixed' else 'SciFact mix (32/batch)'}"
        print(f"  {label:<32}" + " ".join(f"{t}/pt {per_repeat(t, mode, inp):.2f}x" for t in sieves))
print(f"2048² float32 GEMM peak: candle/gemm {med('sieve', 'forward', 'fixed', 'gemm_peak_gflops'):.0f} GFLOP/s, "
      f"torch {med('pytorch', 'forward', 'fixed', 'gemm_peak_gflops'):.0f} GFLOP/s")
os.makedirs("bench/encoder/results", exist_ok=True)
with open("bench/encoder/results/runs.jsonl", "a") as f:
    import time
    f.write(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "flags": flags.strip(),
                        "repeats": len([r for r in rows if r["tool"] == "pytorch"]) // 4, "rows": summary}) + "\n")
PY
