#!/usr/bin/env bash
# Acceptance of `sieve judge` against a real llama-server (scripts/llm-server.sh,
# Qwen2.5-Coder-0.5B): 200 (query, candidate) pairs from a SciFact mining run (40 test
# queries x 5 candidates) are judged; the run is killed with -9 midway and re-run.
# Checked: every pair labeled exactly once; the re-run sends exactly the pairs the cache
# lacked after the kill, each once (seen by a recording proxy); a third run sends nothing.
# Documents are cut to 128 tokens (JUDGE_MAX_DOC_TOKENS) to keep CI short on 2 CPU cores.
# Env: SCIFACT_DIR, SIEVE_JUDGE_URL (a server of your own, …/v1), JUDGE_QUERIES (40).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${SCIFACT_DIR:-../shared/data/scifact}
QUERIES=${JUDGE_QUERIES:-40}
PAIRS=$(( QUERIES * 5 ))
OUT=$(mktemp -d)
cleanup() {
  [ -n "${PROXY:-}" ] && kill "$PROXY" 2>/dev/null
  [ -n "${STARTED:-}" ] && SIEVE_LLM_PORT=8097 scripts/llm-server.sh stop
  rm -rf "$OUT"
}
trap cleanup EXIT
. bench/judge/common.sh
scripts/fetch-model.sh >&2
scripts/build.sh -q
if [ -n "${SIEVE_JUDGE_URL:-}" ]; then URL=$SIEVE_JUDGE_URL
else
  # Stop the server afterwards only if this script started it.
  SIEVE_LLM_PORT=8097 scripts/llm-server.sh status >/dev/null 2>&1 || STARTED=1
  URL=$(SIEVE_LLM_PORT=8097 SIEVE_LLM_MODEL=qwen0.5b scripts/llm-server.sh)
fi
make_pairs "$QUERIES"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 bench/judge/record_proxy.py "${URL%/v1}" "$PORT" "$OUT/sent.jsonl" & PROXY=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break; sleep 0.1; done
judge() {  # exec: `kill -9 $!` must hit sieve itself, not a subshell around it
  exec target/release/sieve judge --quiet --mined "$OUT/mined.parquet" --out "$OUT/labeled.parquet" \
    --cache "$OUT/verdicts.log" --endpoint "http://127.0.0.1:$PORT/v1" --concurrency 4 \
    --max-doc-tokens "${JUDGE_MAX_DOC_TOKENS:-128}" "$@"
}

# Run 1, killed once about half the verdicts are stored.
(judge > "$OUT/run1.txt" 2>&1) & PID=$!
while [ "$(cat "$OUT/verdicts.log" 2>/dev/null | wc -l)" -lt $(( PAIRS / 2 )) ]; do
  kill -0 $PID 2>/dev/null || { cat "$OUT/run1.txt"; echo "FAIL: run 1 ended before the kill"; exit 1; }
  sleep 0.05
done
kill -9 $PID; wait $PID 2>/dev/null || true
pgrep -f "sieve judge.*$OUT" >/dev/null && { echo "FAIL: sieve survived kill -9"; exit 1; }
cp "$OUT/verdicts.log" "$OUT/after-kill.log"
(judge --write-requests "$OUT/pending.jsonl" 2>/dev/null)
: > "$OUT/sent.jsonl"

# Run 2 finishes; run 3 has nothing to do.
(judge > "$OUT/run2.txt")
cp "$OUT/sent.jsonl" "$OUT/sent2.jsonl"; : > "$OUT/sent.jsonl"
(judge > "$OUT/run3.txt")
cat "$OUT/run2.txt"

python3 - "$OUT" "$PAIRS" <<'PY'
import json, sys
out, pairs = sys.argv[1], int(sys.argv[2])
def keys(path):
    ks = []
    for line in open(path):
        try:
            ks.append(json.loads(line.split("\t")[0])["k"])
        except (ValueError, KeyError):
            pass  # a line torn by the kill: skipped by sieve too
    return ks
stored_lines = len(set(keys(f"{out}/after-kill.log")))
msgs = lambda body: json.dumps(body["messages"], sort_keys=True)
pending = [msgs(json.loads(l)["body"]) for l in open(f"{out}/pending.jsonl")]
sent2 = [msgs(json.loads(l)["body"]) for l in open(f"{out}/sent2.jsonl")]
sent3 = open(f"{out}/sent.jsonl").read().splitlines()
keys = keys(f"{out}/verdicts.log")
run2 = open(f"{out}/run2.txt").read()
ok = True
def check(name, cond, detail=""):
    global ok
    ok &= cond
    print(f"{'OK  ' if cond else 'FAIL'} {name} {detail}")
check("pairs", f"of {pairs} judged candidates" in run2, f"({pairs} expected)")
check("no errors, nothing unjudged", "errors (retried next run): 0, not judged (budget): 0" in run2)
check("killed midway", 0 < stored_lines < pairs, f"({stored_lines} verdicts stored before the kill)")
check("re-run sent exactly the pairs the cache lacked", sorted(sent2) == sorted(set(pending)),
      f"({len(sent2)} sent, {len(pending)} pending)")
check("no pair sent twice by the re-run", len(sent2) == len(set(sent2)))
check("stored + re-sent = all pairs", stored_lines + len(sent2) == pairs,
      f"({stored_lines} + {len(sent2)})")
check("one verdict per pair in the cache", len(keys) == len(set(keys)) == pairs, f"({len(keys)} lines)")
check("third run sent nothing", len(sent3) == 0, f"({len(sent3)})")
sys.exit(0 if ok else 1)
PY
