#!/usr/bin/env bash
# Throughput of `sieve judge` against a plain concurrent client sending the same
# requests (bench/judge/plain_client.py, asyncio, standard library), side by side on one
# llama-server (Qwen2.5-Coder-0.5B, 4 slots, no host prompt cache so that repeated
# prompts cost the same in every run). Runs alternate; medians and the ratio are printed.
# sieve's time is the whole command (reading the mined file and corpus, the cache,
# writing the labeled file); the client's is the requests alone.
# usage: bench/judge/run.sh [REPS=3]   env: JUDGE_QUERIES (16 -> 80 pairs), JUDGE_CONCURRENCY (4)
# What the server's prompt cache gains (prefix reuse, with and without) is bench/judge/prefix.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${SCIFACT_DIR:-../shared/data/scifact}
REPS=${1:-3}
CONC=${JUDGE_CONCURRENCY:-4}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"; [ -n "${STARTED:-}" ] && SIEVE_LLM_PORT=8096 scripts/llm-server.sh stop' EXIT
. bench/judge/common.sh
scripts/fetch-model.sh >&2
scripts/build.sh -q
SIEVE_LLM_PORT=8096 scripts/llm-server.sh status >/dev/null 2>&1 || STARTED=1
URL=$(SIEVE_LLM_PORT=8096 SIEVE_LLM_MODEL=qwen0.5b SIEVE_LLM_PARALLEL="$CONC" SIEVE_LLM_ARGS="--cache-ram 0" scripts/llm-server.sh)
make_pairs "${JUDGE_QUERIES:-16}"
target/release/sieve judge --mined "$OUT/mined.parquet" --cache "$OUT/none.log" --endpoint "$URL" \
  --write-requests "$OUT/requests.jsonl" 2>/dev/null
N=$(wc -l < "$OUT/requests.jsonl")
echo "$N requests, concurrency $CONC, server $URL"
run_sieve() {
  local t0 t1
  t0=$(date +%s.%N)
  target/release/sieve judge --quiet --mined "$OUT/mined.parquet" --out "$OUT/labeled.parquet" \
    --cache "$OUT/cache-$1.log" --endpoint "$URL" --concurrency "$CONC" > "$OUT/sieve-$1.txt"
  t1=$(date +%s.%N)
  grep -q "errors (retried next run): 0" "$OUT/sieve-$1.txt"
  python3 -c "print($t1 - $t0)"
}
run_plain() {
  OMP_NUM_THREADS=2 python3 bench/judge/plain_client.py "$OUT/requests.jsonl" "$URL" "$CONC" |
    python3 -c "import json,sys; r=json.load(sys.stdin); assert r['failures']==0, r; print(r['seconds'])"
}
S=(); P=()
for i in $(seq "$REPS"); do
  if [ $(( i % 2 )) -eq 1 ]; then s=$(run_sieve "$i"); p=$(run_plain); else p=$(run_plain); s=$(run_sieve "$i"); fi
  echo "rep $i: sieve ${s}s  plain client ${p}s"
  S+=("$s"); P+=("$p")
done
python3 - "$N" "${S[*]}" "${P[*]}" <<'PY'
import statistics, sys
n, s, p = int(sys.argv[1]), [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
ms, mp = statistics.median(s), statistics.median(p)
print(f"median: sieve {ms:.2f}s ({n/ms:.2f} pairs/s), plain asyncio client {mp:.2f}s ({n/mp:.2f} pairs/s)")
print(f"sieve / plain time ratio: {ms/mp:.3f}  (overhead {100*(ms/mp-1):+.1f}%)")
PY
