#!/usr/bin/env bash
# A real full disk: mine and train into small tmpfs mounts (needs root, for `mount`),
# so that writes fail with ENOSPC as on a full volume. The suite's disk-full tests
# (tests/{mine,judge,train}_cli.rs, `a_full_disk_*`) use a file-size limit instead,
# which needs no root; this checks the same promises against the real errno:
#   - the run exits non-zero, names the file and prints the disk-full hint;
#   - nothing half-written is left (no *.tmp, no output a later stage would take);
#   - the same command with room finishes (mine: the bytes of a run that never failed).
#
#   sudo bench/diskfull/run.sh        (CI runs it as an extra step when it is root)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "bench/diskfull: needs root to mount a tmpfs" >&2; exit 2; }
scripts/fetch-model.sh >/dev/null
scripts/build.sh -q
SIEVE=$PWD/target/release/sieve
MODEL=$PWD/models/all-MiniLM-L6-v2
FIXTURE=$PWD/tests/fixtures/tiny-beir
WORK=$(mktemp -d)
MNT=$WORK/full
mkdir -p "$MNT"
cleanup() { umount "$MNT" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
fail() { echo "bench/diskfull: FAILED: $*" >&2; exit 1; }
check() { # name, rc, stderr file, dir
  [ "$2" != 0 ] || fail "$1: exited 0 on a full disk"
  grep -q "No space left on device" "$3" || fail "$1: no ENOSPC in: $(cat "$3")"
  grep -q "hint: the disk is full" "$3" || fail "$1: no hint in: $(cat "$3")"
  left=$(find "$4" -name '*.tmp*' -o -name '*tmp-*' | head -5)
  [ -z "$left" ] || fail "$1: left behind: $left"
  echo "ok: $1 ($(grep -m1 'No space left' "$3" | sed 's/^ *//' | cut -c1-160))"
}

mine() { "$SIEVE" mine --quiet --split test --bm25-k 3 --dense-k 3 --dataset "$FIXTURE" --model "$MODEL" "$@"; }
mine --cache-dir "$WORK/cache" --out "$WORK/reference.parquet"

# Mining with a 64 KiB disk for its cache and output: the BM25 index or the embeddings fill it.
mount -t tmpfs -o size=64k tmpfs "$MNT"
set +e; mine --cache-dir "$MNT/cache" --out "$MNT/mined.parquet" 2> "$WORK/err"; rc=$?; set -e
check "mine, cold cache" $rc "$WORK/err" "$MNT"
[ ! -e "$MNT/mined.parquet" ] || fail "mine: an output exists"
umount "$MNT"
# With room (the same mount, remounted larger): the same bytes as a run that never failed.
mount -t tmpfs -o size=64m tmpfs "$MNT"
mine --cache-dir "$MNT/cache" --out "$MNT/mined.parquet"
cmp "$MNT/mined.parquet" "$WORK/reference.parquet" || fail "mine: rerun differs from the reference"
echo "ok: mine, rerun with room gives the reference bytes"
umount "$MNT"

# Training into 60 MB: the 90 MB checkpoint weights do not fit.
python3 - "$WORK/pairs.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i, t in enumerate(["insulin", "aspirin", "malaria", "asthma", "zinc", "sleep"]):
        for q, p in [(f"does {t} help?", f"A trial found that {t} helps."), (f"what is {t}", f"{t} is studied; see review {i}.")]:
            f.write(json.dumps({"query": q, "positive": p}) + "\n")
PY
mount -t tmpfs -o size=60m tmpfs "$MNT"
train() { "$SIEVE" train --quiet --model "$MODEL" --data "$WORK/pairs.jsonl" --output "$MNT/out" \
  --batch-size 4 --max-steps 4 --save-every 2 --resume --cache-dir "$WORK/cache"; }
set +e; train 2> "$WORK/err"; rc=$?; set -e
check "train, checkpoint" $rc "$WORK/err" "$MNT"
[ ! -e "$MNT/out/model.safetensors" ] || fail "train: weights exist"
[ -z "$(ls "$MNT/out/checkpoints" 2>/dev/null)" ] || fail "train: a checkpoint exists: $(ls "$MNT/out/checkpoints")"
umount "$MNT"
mount -t tmpfs -o size=1g tmpfs "$MNT"
train
[ -e "$MNT/out/model.safetensors" ] || fail "train: no weights after the rerun"
echo "ok: train, rerun with room finishes"
echo "bench/diskfull: all checks passed"
