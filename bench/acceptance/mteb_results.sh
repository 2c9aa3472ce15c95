#!/usr/bin/env bash
# mteb reads sieve's result files: `sieve eval` writes SciFact (BM25) and the repository's
# tiny BEIR fixture (dense, also truncated to 64 dimensions); the `mteb` package's own
# reader (TaskResult.from_disk) loads every JSON and must give the main score sieve wrote,
# and for SciFact mteb's task metadata (splits, subsets) must accept the scores. Fails
# otherwise. Needs the reference venv (scripts/setup-python.sh); installs mteb into it.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${SCIFACT_DIR:-../shared/data/scifact}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
scripts/fetch-model.sh >&2
scripts/build.sh -q
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
.venv/bin/python -c 'import mteb' 2>/dev/null || .venv/bin/python -m pip install -q "mteb>=2,<3" >&2
target/release/sieve eval --quiet --retriever bm25 --dataset "$DATA" --output-dir "$OUT" >/dev/null
target/release/sieve eval --quiet --model models/all-MiniLM-L6-v2 --dataset tests/fixtures/tiny-beir \
  --output-dir "$OUT" --no-cache --truncate-dim 384,64 >/dev/null
.venv/bin/python - "$OUT" <<'PY'
import json, math, sys
from pathlib import Path
import mteb
from mteb.results import TaskResult

files = sorted(Path(sys.argv[1]).rglob("*.json"))
assert len(files) == 3, files
bad = 0
for f in files:
    raw = json.loads(f.read_text())
    want = raw["scores"]["test"][0]["main_score"]
    r = TaskResult.from_disk(f)  # mteb's reader: pydantic validation of the whole file
    got = r.get_score()
    checks = [math.isclose(got, want, rel_tol=0, abs_tol=1e-12)]
    if r.task_name == "SciFact":
        filtered = r.validate_and_filter_scores(mteb.get_task("SciFact"))
        checks.append(math.isclose(filtered.get_score(), want, rel_tol=0, abs_tol=1e-12))
    ok = all(checks)
    bad += not ok
    print(f"{f.parent.name}/{f.name}: sieve main_score {want:.5f}, mteb {mteb.__version__} reads {got:.5f} {'OK' if ok else 'FAIL'}")
sys.exit(1 if bad else 0)
PY
