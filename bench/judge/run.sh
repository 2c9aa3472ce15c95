#!/usr/bin/env bash
# Throughput of `sieve judge` against a plain concurrent client sending the same
# requests (bench/judge/plain_client.py, asyncio, standard library), side by side on one
# llama-server (Qwen2.5-Coder-0.5B, 4 slots, no host prompt cache so that repeated
# prompts cost the same in every run). Runs alternate; medians and the ratio are printed.
# sieve's time is the whole command (reading the mined file and corpus, the cache,
# writing the labeled file); the client's is the requests alone.
#
# Then prefix reuse, on the same server and pairs: `sieve judge --request-order input`
# (the file's order, CONCURRENCY at a time) against `--request-order by-query` (each
# request in flight works through one query's candidates), alternating, each from an
# empty verdict cache. The server keeps each slot's last prompt (cache_prompt, llama.cpp's
# default) and picks slots by prompt similarity, so the measure is the prompt tokens it
# did not have to process (`usage.prompt_tokens_details.cached_tokens`, which sieve
# totals) and pairs/s; the verdicts of the two orders are compared pair by pair.
# usage: bench/judge/run.sh [REPS=3]   env: JUDGE_QUERIES (16 -> 80 pairs), JUDGE_CONCURRENCY (4),
#   JUDGE_PARTS=prefix (only the prefix-reuse comparison)
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
    --cache "$OUT/cache-$1.log" --endpoint "$URL" --concurrency "$CONC" --request-order input > "$OUT/sieve-$1.txt"
  t1=$(date +%s.%N)
  grep -q "errors (retried next run): 0" "$OUT/sieve-$1.txt"
  python3 -c "print($t1 - $t0)"
}
run_plain() {
  OMP_NUM_THREADS=2 python3 bench/judge/plain_client.py "$OUT/requests.jsonl" "$URL" "$CONC" |
    python3 -c "import json,sys; r=json.load(sys.stdin); assert r['failures']==0, r; print(r['seconds'])"
}
if [ "${JUDGE_PARTS:-both}" != prefix ]; then
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
fi

# Prefix reuse: the same pairs in the file's order and grouped by query.
run_order() {
  local t0 t1
  t0=$(date +%s.%N)
  target/release/sieve judge --quiet --mined "$OUT/mined.parquet" --out "$OUT/labeled-$1.parquet" \
    --cache "$OUT/order-$1-$2.log" --endpoint "$URL" --concurrency "$CONC" --request-order "$1" > "$OUT/order-$1-$2.txt"
  t1=$(date +%s.%N)
  grep -q "errors (retried next run): 0" "$OUT/order-$1-$2.txt"
  python3 -c "print($t1 - $t0)"
}
for i in $(seq "$REPS"); do
  if [ $(( i % 2 )) -eq 1 ]; then a=$(run_order input "$i"); b=$(run_order by-query "$i"); else b=$(run_order by-query "$i"); a=$(run_order input "$i"); fi
  echo "rep $i: input order ${a}s  by query ${b}s"
  echo "$a" >> "$OUT/times-input"; echo "$b" >> "$OUT/times-by-query"
done
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
python3 - "$OUT" "$N" "$REPS" "$CONC" "$CPU" <<'PY'
import json, re, statistics, sys, time
out, n, reps, conc, cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def tokens(order, i):
    text = open(f"{out}/order-{order}-{i}.txt").read()
    m = re.search(r"tokens: (\d+) prompt \((\d+) from the server's prompt cache\)", text)
    return int(m.group(1)), int(m.group(2))
def verdicts(order, i):
    got = {}
    for line in open(f"{out}/order-{order}-{i}.log"):
        if "\t" in line:
            e = json.loads(line.split("\t")[0])
            got[e["k"]] = e["p"]
    return got
row = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "pairs": n, "concurrency": int(conc), "reps": reps}
print(f"CPU: {cpu}; {n} pairs, concurrency {conc}, llama-server Qwen2.5-Coder-0.5B, {reps} alternating runs each")
for order in ("input", "by-query"):
    t = [float(x) for x in open(f"{out}/times-{order}").read().split()]
    tok = [tokens(order, i) for i in range(1, reps + 1)]
    prompt = statistics.median(p for p, _ in tok)
    cached = statistics.median(c for _, c in tok)
    row[order] = {"seconds": statistics.median(t), "pairs_per_s": n / statistics.median(t),
                  "prompt_tokens": prompt, "cached_tokens": cached, "processed_tokens": prompt - cached}
    print(f"{order:>9}: {n / statistics.median(t):6.2f} pairs/s (median {statistics.median(t):.2f}s), "
          f"prompt tokens {prompt:.0f}, served from the cache {cached:.0f} ({cached / prompt:.1%}), processed {prompt - cached:.0f}")
a, b = row["input"], row["by-query"]
row["speedup"] = b["pairs_per_s"] / a["pairs_per_s"]
row["processed_ratio"] = b["processed_tokens"] / a["processed_tokens"]
print(f"by-query / input: {row['speedup']:.3f}x pairs/s, {row['processed_ratio']:.3f}x the prompt tokens processed")
diffs = []
for i in range(1, reps + 1):
    va, vb = verdicts("input", i), verdicts("by-query", i)
    assert va.keys() == vb.keys() and len(va) == n, (len(va), len(vb), n)
    diffs += [abs(va[k] - vb[k]) for k in va]
flips = sum(1 for i in range(1, reps + 1) for k, p in verdicts("input", i).items()
            if (p >= 0.5) != (verdicts("by-query", i)[k] >= 0.5))
row["max_abs_p_diff"] = max(diffs)
row["verdict_flips_at_0.5"] = flips
print(f"P(relevant), by-query vs input, same pairs: max |difference| {max(diffs):.2e}, "
      f"median {statistics.median(diffs):.2e}; verdicts flipped at 0.5: {flips} of {n * reps}")
with open("bench/judge/results/prefix.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
PY
