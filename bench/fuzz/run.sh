#!/usr/bin/env bash
# Fuzzes every reader of user input with a million mutated files each (bench/fuzz/harness.rs:
# BEIR corpus/queries/qrels, pair files in JSONL/TSV/Parquet, mined and labeled Parquet,
# .npy, the pipeline TOML, judge templates, a model's config.json / pooling / modules /
# sentence_bert_config, chat-completion bodies, Retry-After, the verdict and embedding
# caches, calibration pairs). A case passes when the reader returns an error naming its
# file, or a value that keeps the reader's invariant; a panic, an abort or a broken
# invariant is a finding, saved under target/fuzz/findings/ for replay.
#
#   bench/fuzz/run.sh [CASES=1000000] [READER,…]
#
# Appends one JSON line per reader to bench/fuzz/results/runs.jsonl (with the CPU and the
# commit) and prints a table. Exit status 1 if any reader had a finding.
set -euo pipefail
cd "$(dirname "$0")/../.."
CASES=${1:-1000000}
ONLY=${2:-}
scripts/build.sh -q
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+uncommitted"
OUT=target/fuzz/last.jsonl
mkdir -p target/fuzz bench/fuzz/results
args=(--cases "$CASES" --work target/fuzz)
[ -n "$ONLY" ] && args+=(--only "$ONLY")
rc=0
target/release/examples/fuzz_readers "${args[@]}" > "$OUT" || rc=$?
python3 - "$OUT" "$cpu" "$commit" bench/fuzz/results/runs.jsonl <<'PY'
import json, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cpu, commit, manifest = sys.argv[2], sys.argv[3], sys.argv[4]
with open(manifest, "a") as m:
    for r in rows:
        r.update(cpu=cpu, commit=commit, date=datetime.date.today().isoformat())
        m.write(json.dumps(r, sort_keys=True) + "\n")
print(f"CPU: {cpu} · commit {commit}")
print(f"{'reader':<20} {'cases':>9} {'read':>8} {'refused':>8} {'distinct errors':>15} {'findings':>8} {'s':>6} {'slowest ms':>10}")
for r in rows:
    print(f"{r['reader']:<20} {r['cases']:>9} {r['read']:>8} {r['refused']:>8} {r['distinct_errors']:>15} "
          f"{len(r['findings']):>8} {r['seconds']:>6.0f} {r['slowest_case_ms']:>10.1f}")
    for f in r["findings"]:
        print(f"    {f['kind']}: {f['message'][:160]} ({f['input']})")
print(f"total: {sum(r['cases'] for r in rows)} cases, {sum(len(r['findings']) for r in rows)} findings")
PY
exit $rc
