#!/usr/bin/env bash
# What prefix reuse is worth to `sieve judge`: the same pairs on the same llama-server
# (Qwen2.5-Coder-0.5B, 4 slots, no host prompt cache), judged as sieve sends them
# (each query's candidates together, everything before the document identical, the
# server's prompt cache on) and with the server told to reuse nothing
# (`--extra-body '{"cache_prompt": false}'`), alternating. Prints pairs/s, the prompt
# tokens the server computed vs served from its cache, the shared prefix (system turn +
# query, measured with the server's own chat template and tokenizer) as the ceiling,
# and how far the two runs' P(relevant) differ. Appends to bench/judge/results/prefix.jsonl.
#
#   bench/judge/prefix.sh [REPS=2]   env: JUDGE_QUERIES (8 -> 40 pairs), JUDGE_CONCURRENCY (4)
set -euo pipefail
# A failed `sieve judge` inside $(run ...) must stop the bench, not be recorded.
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."
DATA=${SCIFACT_DIR:-../shared/data/scifact}
REPS=${1:-2}
CONC=${JUDGE_CONCURRENCY:-4}
QUERIES=${JUDGE_QUERIES:-8}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"; [ -n "${STARTED:-}" ] && SIEVE_LLM_PORT=8096 scripts/llm-server.sh stop' EXIT
. bench/judge/common.sh
scripts/fetch-model.sh >&2
scripts/build.sh -q
# The verdicts are compared from the labeled Parquet files (pyarrow, in the reference venv).
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
.venv/bin/python -c 'import pyarrow' 2>/dev/null || .venv/bin/python -m pip install -q pyarrow >&2
SIEVE_LLM_PORT=8096 scripts/llm-server.sh status >/dev/null 2>&1 || STARTED=1
URL=$(SIEVE_LLM_PORT=8096 SIEVE_LLM_MODEL=qwen0.5b SIEVE_LLM_PARALLEL="$CONC" SIEVE_LLM_ARGS="--cache-ram 0" scripts/llm-server.sh)
make_pairs "$QUERIES"
target/release/sieve judge --mined "$OUT/mined.parquet" --cache "$OUT/none.log" --endpoint "$URL" \
  --write-requests "$OUT/requests.jsonl" >/dev/null 2>&1
N=$(wc -l < "$OUT/requests.jsonl")
# The ceiling: per request, the tokens its prompt shares with the other candidates of
# its query (the rendered chat prompt up to the document).
CEILING=$(python3 - "$OUT/requests.jsonl" "${URL%/v1}" <<'PY'
import json, sys, urllib.request
reqs, base = sys.argv[1], sys.argv[2]
def post(path, data):
    r = urllib.request.Request(base + path, json.dumps(data).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r))
shared = total = 0
for line in open(reqs):
    body = json.loads(line)["body"]
    prompt = post("/apply-template", {"messages": body["messages"]})["prompt"]
    user = body["messages"][-1]["content"]
    head = prompt[: prompt.index(user)] + user[: user.index("<document>")]
    shared += len(post("/tokenize", {"content": head})["tokens"])
    total += len(post("/tokenize", {"content": prompt})["tokens"])
print(shared, total)
PY
)
echo "$N requests, concurrency $CONC, server $URL; shared prefix (system turn + query): ${CEILING% *} of ${CEILING#* } prompt tokens"
run() { # name rep [extra-body]
  local t0 t1 args=()
  [ -n "${3:-}" ] && args=(--extra-body "$3")
  t0=$(date +%s.%N)
  target/release/sieve judge --quiet --mined "$OUT/mined.parquet" --out "$OUT/$1-$2.parquet" \
    --cache "$OUT/cache-$1-$2.log" --endpoint "$URL" --concurrency "$CONC" "${args[@]}" > "$OUT/$1-$2.txt"
  t1=$(date +%s.%N)
  grep -q "errors (retried next run): 0" "$OUT/$1-$2.txt"
  python3 - "$OUT/$1-$2.txt" "$t0" "$t1" "$1" <<'PY'
import re, sys
text, t0, t1, name = open(sys.argv[1]).read(), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
m = re.search(r"tokens: (\d+) prompt \((\d+) from the server's prompt cache\)", text)
print(f"{name} {t1 - t0:.3f} {m.group(1)} {m.group(2)}")
PY
}
ROWS=()
for i in $(seq "$REPS"); do
  if [ $(( i % 2 )) -eq 1 ]; then
    a=$(run reuse "$i"); b=$(run fresh "$i" '{"cache_prompt": false}')
  else
    b=$(run fresh "$i" '{"cache_prompt": false}'); a=$(run reuse "$i")
  fi
  echo "rep $i: $a | $b"
  ROWS+=("$a" "$b")
done
.venv/bin/python - "$N" "$CONC" "$REPS" "$CEILING" "$OUT" "${ROWS[@]}" <<'PY'
import datetime, glob, json, os, statistics, subprocess, sys
import pyarrow.parquet as pq
n, conc, reps, (shared, total), out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), map(int, sys.argv[4].split()), sys.argv[5]
rows = [r.split() for r in sys.argv[6:]]
def med(name, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == name)
def ps(path):
    t = pq.read_table(path).to_pylist()
    return [c["p_relevant"] for r in t for c in r["candidates"]]
reuse = [ps(p) for p in sorted(glob.glob(f"{out}/reuse-*.parquet"))]
fresh = [ps(p) for p in sorted(glob.glob(f"{out}/fresh-*.parquet"))]
diffs = [abs(a - b) for x in reuse for y in fresh for a, b in zip(x, y)]
flips = sum((a >= 0.5) != (b >= 0.5) for x in reuse for y in fresh for a, b in zip(x, y))
same_mode = [abs(a - b) for runs in (reuse, fresh) for x, y in zip(runs, runs[1:]) for a, b in zip(x, y)]
sr, sf = med("reuse", 1), med("fresh", 1)
res = {
    "date": datetime.date.today().isoformat(),
    "cpu": open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip() + f" ({os.cpu_count()} cores)",
    "server": "llama-server (skulk prebuilt or built by scripts/llm-server.sh), Qwen2.5-Coder-0.5B q4_k_m, --cache-ram 0",
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "command": f"bench/judge/prefix.sh {reps}", "pairs": n, "concurrency": conc, "reps": reps,
    "shared_prefix_tokens": shared, "prompt_tokens": total,
    "reuse": {"seconds": sr, "pairs_per_s": n / sr, "cached_tokens": med("reuse", 3), "prompt_tokens": med("reuse", 2)},
    "no_reuse": {"seconds": sf, "pairs_per_s": n / sf, "cached_tokens": med("fresh", 3), "prompt_tokens": med("fresh", 2)},
    "speedup": sf / sr,
    "p_max_abs_diff": max(diffs), "p_median_abs_diff": statistics.median(diffs), "flips_at_0_5": flips,
    "p_max_abs_diff_same_mode": max(same_mode) if same_mode else None,
}
print(f"shared prefix: {shared} of {total} prompt tokens ({100 * shared / total:.1f}%): the most a prompt cache can save")
print(f"reuse (sieve as it sends): {res['reuse']['pairs_per_s']:.3f} pairs/s, {res['reuse']['cached_tokens']:.0f} of {res['reuse']['prompt_tokens']:.0f} prompt tokens from the cache")
print(f"no reuse (cache_prompt false): {res['no_reuse']['pairs_per_s']:.3f} pairs/s, {res['no_reuse']['cached_tokens']:.0f} from the cache")
print(f"prefix reuse speed-up: {res['speedup']:.3f}x (median of {reps})")
print(f"P(relevant), reuse vs no reuse: max |diff| {res['p_max_abs_diff']:.2e}, median {res['p_median_abs_diff']:.2e}, {flips} verdicts flipped at 0.5; same mode across reps: max {res['p_max_abs_diff_same_mode']}")
os.makedirs("bench/judge/results", exist_ok=True)
with open("bench/judge/results/prefix.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
PY
