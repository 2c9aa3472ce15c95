#!/usr/bin/env bash
# Scaling of the exact softmax: one step (loss and backward, batch 32, 384-d) against a
# synthetic corpus table of N = 1k … 1M documents, each N in its own process. Time should
# grow linearly in N (constant ns per document) and memory stay the table plus one
# batch × chunk block (never batch × N).
#
#   bench/exact/run.sh [SIZES="1000 10000 100000 1000000"]
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${1:-"1000 10000 100000 1000000"}
scripts/build.sh -q
OUT=target/bench-exact.jsonl
: > "$OUT"
for n in $SIZES; do target/release/examples/bench_exact "$n" 32 3 | tee -a "$OUT"; done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = rows[0]
print(f"{'N':>9} {'step s':>9} {'ns/doc':>8} {'peak RSS MiB':>13} {'table MiB':>10} {'RSS - table':>12}")
for r in rows:
    print(f"{r['n']:>9} {r['seconds']:>9.4f} {r['ns_per_doc']:>8.1f} {r['peak_rss_mib']:>13.0f} "
          f"{r['table_mib']:>10.0f} {r['peak_rss_mib'] - r['table_mib']:>12.0f}")
big = rows[-1]
print(f"time ratio {big['n']}/{base['n']} docs: {big['seconds'] / base['seconds']:.0f}x for {big['n'] / base['n']:.0f}x the documents")
PY
