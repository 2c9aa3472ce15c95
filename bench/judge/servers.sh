#!/usr/bin/env bash
# What a second judge server is worth to `sieve judge`: the same pairs judged through one
# llama-server and through two (sieve's multi-endpoint client, `--endpoint A --endpoint B`),
# each server on one thread with 2 slots, sieve at concurrency 4 in every run; and, for
# scale, one server given both threads. Runs alternate; medians and ratios are printed.
# On this 2-core machine the two-server figure is the client's scaling (ideal 2x over one
# one-thread server); the one-server-two-threads row is what the same cores give one server.
# Appends to bench/judge/results/servers.jsonl. Crash behaviour (one server killed and
# restarted mid-run) is the test judge_cli::two_servers_one_killed_and_restarted_label_every_pair_once.
#
#   bench/judge/servers.sh [REPS=3]   env: JUDGE_QUERIES (6 -> 30 pairs)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."
DATA=${SCIFACT_DIR:-../shared/data/scifact}
REPS=${1:-3}
QUERIES=${JUDGE_QUERIES:-6}
PORTS=(8097 8098 8099)
OUT=$(mktemp -d)
stop_all() { for p in "${PORTS[@]}"; do SIEVE_LLM_PORT=$p scripts/llm-server.sh stop 2>/dev/null || true; done; }
trap 'rm -rf "$OUT"; stop_all' EXIT
. bench/judge/common.sh
scripts/fetch-model.sh >&2
scripts/build.sh -q
for p in "${PORTS[@]}"; do
  if SIEVE_LLM_PORT=$p scripts/llm-server.sh status >/dev/null 2>&1; then
    echo "port $p is taken by a running server; stop it first" >&2; exit 2
  fi
done
start() { # port threads
  SIEVE_LLM_PORT=$1 SIEVE_LLM_MODEL=qwen0.5b SIEVE_LLM_THREADS=$2 SIEVE_LLM_PARALLEL=2 \
    SIEVE_LLM_ARGS="--cache-ram 0" scripts/llm-server.sh start 2>/dev/null
}
A=$(start 8097 1); B=$(start 8098 1); C=$(start 8099 2)
make_pairs "$QUERIES"
target/release/sieve judge --mined "$OUT/mined.parquet" --cache "$OUT/none.log" --endpoint "$A" \
  --write-requests "$OUT/requests.jsonl" >/dev/null 2>&1
N=$(wc -l < "$OUT/requests.jsonl")
echo "$N pairs, concurrency 4; servers: one thread each on $A and $B, two threads on $C"
run() { # name rep endpoints...
  local name=$1 rep=$2 t0 t1 args=(); shift 2
  for e in "$@"; do args+=(--endpoint "$e"); done
  t0=$(date +%s.%N)
  target/release/sieve judge --quiet --mined "$OUT/mined.parquet" --out "$OUT/$name-$rep.parquet" \
    --cache "$OUT/cache-$name-$rep.log" --concurrency 4 "${args[@]}" > "$OUT/$name-$rep.txt"
  t1=$(date +%s.%N)
  grep -q "errors (retried next run): 0" "$OUT/$name-$rep.txt"
  python3 -c "print('$name', $t1 - $t0)"
}
ROWS=()
for i in $(seq "$REPS"); do
  order=(one two both)
  [ $(( i % 2 )) -eq 0 ] && order=(both two one)
  for name in "${order[@]}"; do
    case $name in
      one)  r=$(run one "$i" "$A") ;;
      two)  r=$(run two "$i" "$A" "$B") ;;
      both) r=$(run both "$i" "$C") ;;
    esac
    echo "rep $i: $r s"
    ROWS+=("$r")
  done
done
python3 - "$N" "$REPS" "${ROWS[@]}" <<'PY'
import datetime, json, os, statistics, subprocess, sys
n, reps, rows = int(sys.argv[1]), int(sys.argv[2]), [r.split() for r in sys.argv[3:]]
med = {k: statistics.median(float(t) for name, t in rows if name == k) for k in ("one", "two", "both")}
res = {
    "date": datetime.date.today().isoformat(),
    "cpu": open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip() + f" ({os.cpu_count()} cores)",
    "server": "llama-server (scripts/llm-server.sh), Qwen2.5-Coder-0.5B q4_k_m, 2 slots each, --cache-ram 0",
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "command": f"bench/judge/servers.sh {reps}", "pairs": n, "concurrency": 4, "reps": reps,
    "pairs_per_s": {"one_server_1_thread": n / med["one"], "two_servers_1_thread_each": n / med["two"], "one_server_2_threads": n / med["both"]},
    "two_over_one": med["one"] / med["two"], "two_over_one_with_2_threads": med["both"] / med["two"],
}
p = res["pairs_per_s"]
print(f"one server, 1 thread:        {p['one_server_1_thread']:.3f} pairs/s")
print(f"two servers, 1 thread each:  {p['two_servers_1_thread_each']:.3f} pairs/s  ({res['two_over_one']:.2f}x one server; ideal 2x)")
print(f"one server, 2 threads:       {p['one_server_2_threads']:.3f} pairs/s  (two servers are {res['two_over_one_with_2_threads']:.2f}x this on the same cores)")
os.makedirs("bench/judge/results", exist_ok=True)
with open("bench/judge/results/servers.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
PY
