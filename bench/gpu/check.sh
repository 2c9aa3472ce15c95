#!/usr/bin/env bash
# The GPU check: one prepared script for a machine with an NVIDIA GPU, PyTorch and
# sentence-transformers but no Rust and no network. Build its inputs first with
# bench/gpu/prepare.sh (target/gpu-carry); bench/gpu/README.md says how to read the result.
#
#   bash bench/gpu/check.sh        # OUT=dir for the results (default target/gpu-check)
#
# Writes $OUT/summary.json (every figure, and the ratios) and $OUT/log.txt. Each part runs
# under its own time limit and records an error instead of stopping the rest; the whole
# takes about 4-6 minutes on one H200 (the budget is 8):
#   a. equality: CPU vs CUDA on the same random-initialised all-MiniLM-L6-v2-shaped BERT:
#      embeddings and every parameter's gradient of one in-batch step (and bf16 mixed
#      precision vs f32), the exact softmax's loss and gradients against a 100k table;
#      a training run killed after a checkpoint and resumed must end at the weights of
#      the run that was not interrupted; NCCL's all-gather and all-reduce in a world of
#      one GPU (what `sieve train --distributed` calls), and the all-reduce's time.
#   b. training throughput, sieve train vs sentence-transformers (the same model, pairs,
#      batch and sequence length; AdamW, clipping, no dropout): MNRL batch 32 (f32, and
#      sieve's bf16), GradCache batch 1024 / mini-batch 128 vs CachedMNRL; pairs/s and
#      peak GPU memory (nvidia-smi, above the idle baseline, for both); and one step's
#      time split into forward, backward, clipping and AdamW (bench_gpu step).
#   c. the exact-softmax step (batch 32) at 1M and 10M table rows vs PyTorch's
#      all-scores-at-once logsumexp on the same GPU.
#   d. encode throughput vs SentenceTransformer.encode.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-target/gpu-check}
CARRY=${CARRY:-target/gpu-carry}
W=${WORK:-/tmp/sieve-gpu}
SEQ=${SEQ:-128}
BUDGET=${BUDGET:-450} # seconds after which the remaining parts are skipped
mkdir -p "$OUT"
rm -rf "$W" && mkdir -p "$W"
exec > >(tee -a "$OUT/log.txt") 2>&1
ROWS="$W/rows.jsonl"
: > "$ROWS"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
note() { echo "[$(($(date +%s) - T0))s] $*"; }
row() { echo "$1" >> "$ROWS"; }
err_row() { row "{\"check\": \"$1\", \"error\": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1][-2000:]))' "$2")}"; }
left() { [ $(($(date +%s) - T0)) -lt "$BUDGET" ]; }

# The CUDA libraries the binary loads at run time: the wheels beside PyTorch, the driver.
SITE=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
LIBS=$(ls -d "$SITE"/nvidia/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="${LIBS}/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
for b in sieve bench_gpu; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$CARRY/$b.xz" "$W/$b" && chmod +x "$W/$b" || { echo "no $CARRY/$b.xz: run bench/gpu/prepare.sh"; exit 1; }
done
SIEVE=$W/sieve
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
note "GPU: $GPU; binaries from $(tr '\n' ' ' < "$CARRY/commit")"
row "$(python3 - "$GPU" "$(cat "$CARRY/commit" | tr '\n' ' ')" <<'PY'
import json, os, platform, sys
import torch, sentence_transformers
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(json.dumps({"check": "machine", "gpu": sys.argv[1], "sieve_commit": sys.argv[2].strip(),
                  "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
                  "sentence_transformers": sentence_transformers.__version__,
                  "cuda_runtime": torch.version.cuda}))
PY
)"

# A random-initialised BERT of all-MiniLM-L6-v2's config (its weights do not fit in what
# travels), and synthetic pairs: queries of 8-24 words, passages longer than SEQ tokens.
M=$W/model
python3 - "$CARRY/model" "$M" "$W/pairs.jsonl" <<'PY' || { echo "model/pairs setup failed"; exit 1; }
import json, random, shutil, sys
import torch, transformers
src, dst, pairs = sys.argv[1:]
cfg = transformers.BertConfig.from_pretrained(src)
torch.manual_seed(0)
transformers.BertModel(cfg, add_pooling_layer=False).save_pretrained(dst)
for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
          "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"]:
    shutil.copy(f"{src}/{f}", dst)
shutil.copytree(f"{src}/1_Pooling", f"{dst}/1_Pooling", dirs_exist_ok=True)
words = [w.strip() for w in open(f"{src}/vocab.txt") if w.strip().isalpha() and len(w.strip()) > 2]
rng = random.Random(0)
with open(pairs, "w") as o:
    for _ in range(4096):
        q = " ".join(rng.choices(words, k=rng.randint(8, 24)))
        d = " ".join(rng.choices(words, k=rng.randint(180, 300)))
        o.write(json.dumps({"query": q, "positive": d}) + "\n")
PY
P=$W/pairs.jsonl
note "random model and $(wc -l < "$P") pairs ready"

# ---- a. equality
if left; then
  note "a. CPU vs CUDA equality"
  o=$(timeout 180 "$W/bench_gpu" equality "$M" "$P" 16 2>"$W/eq.err") && row "$o" ||
    err_row equality "$o $(tail -c 1500 "$W/eq.err")"
fi

# ---- a2. NCCL on one GPU (what `sieve train --distributed` calls)
if left; then
  note "a2. NCCL collectives, a world of one GPU"
  o=$(timeout 60 "$W/bench_gpu" nccl 2>"$W/nccl.err") && row "$o" ||
    err_row nccl "$o $(tail -c 1500 "$W/nccl.err")"
fi

train() { # limit_s out steps save_every extra...: sieve train on the GPU ("" limit: none)
  local limit=$1 out=$2 steps=$3 save=$4
  shift 4
  local cmd=("$SIEVE" train --model "$M" --data "$P" --output "$out" --max-seq-length "$SEQ"
    --max-steps "$steps" --save-every "$save" --num-negatives 0 --device cuda --quiet "$@")
  if [ -n "$limit" ]; then timeout "$limit" "${cmd[@]}"; else exec "${cmd[@]}"; fi
}
if left; then
  note "a. kill -9 after a checkpoint, resume, compare with the uninterrupted run"
  A=$W/resume-a B=$W/resume-b
  if train 120 "$A" 30 10 > "$W/ra.log" 2>&1; then
    # In a subshell that execs: $! is sieve itself, which kill -9 must reach.
    (train "" "$B" 30 10) > "$W/rb1.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 1200); do
      [ -e "$B/checkpoints/step-10/trainer_state.json" ] && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.05
    done
    killed=false
    kill -0 $pid 2>/dev/null && { kill -9 $pid; killed=true; }
    wait $pid 2>/dev/null
    if train 120 "$B" 30 10 --resume > "$W/rb2.log" 2>&1; then
      row "$(python3 - "$A" "$B" "$killed" <<'PY'
import glob, json, sys
from safetensors.numpy import load_file
a, b, killed = sys.argv[1], sys.argv[2], sys.argv[3] == "true"
wa, wb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
diff = max(float(abs(wa[k].astype("float64") - wb[k]).max()) for k in wa)
steps = [json.loads(l).get("step") for l in open(f"{b}/metrics.jsonl") if '"loss"' in l]
print(json.dumps({"check": "resume", "killed_mid_run": killed,
                  "checkpoints_before_kill": sorted(p.rsplit("/", 1)[1] for p in glob.glob(f"{b}/checkpoints/step-*")),
                  "weights_max_abs_diff": diff, "identical": diff == 0.0,
                  "same_tensor_names": sorted(wa) == sorted(wb), "steps_logged_b": len(steps)}))
PY
)"
    else err_row resume "$(tail -c 1500 "$W/rb2.log")"; fi
  else err_row resume "$(tail -c 1500 "$W/ra.log")"; fi
fi

# ---- b. training throughput
mem_start() { # file: samples the GPU's used memory every 100 ms
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$1" 2>/dev/null &
  MEM_PID=$!
}
mem_peak() { # file baseline -> MiB above it
  kill $MEM_PID 2>/dev/null; wait $MEM_PID 2>/dev/null
  python3 -c 'import sys; v=[int(x) for x in open(sys.argv[1]) if x.strip().isdigit()]; print(max(v, default=0) - int(sys.argv[2]))' "$1" "$2"
}
BASE=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
sieve_train() { # label batch mini steps dtype
  local label=$1 batch=$2 mini=$3 steps=$4 dtype=$5 dir=$W/train-$1-$5 extra=()
  [ "$mini" != 0 ] && extra=(--mini-batch-size "$mini")
  mem_start "$dir.mem"
  if train 150 "$dir" $((steps + 1)) 0 --batch-size "$batch" "${extra[@]}" --dtype "$dtype" > "$dir.log" 2>&1; then
    row "$(python3 - "$dir/metrics.jsonl" "$(mem_peak "$dir.mem" "$BASE")" "$label" "$batch" "$mini" "$dtype" "$SEQ" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][1:]
secs = sum(r["seconds"] for r in rows); pairs = sum(r["pairs"] for r in rows)
print(json.dumps({"check": "train", "tool": "sieve", "loss": sys.argv[3], "batch": int(sys.argv[4]),
                  "mini": int(sys.argv[5]), "dtype": sys.argv[6], "seq": int(sys.argv[7]),
                  "steps": len(rows), "pairs_per_s": pairs / secs, "s_per_step": secs / len(rows),
                  "peak_gpu_mib_nvidia_smi": int(sys.argv[2]),
                  "final_loss": rows[-1]["loss"]}))
PY
)"
  else
    mem_peak "$dir.mem" "$BASE" > /dev/null
    err_row "train sieve $label" "$(tail -c 1500 "$dir.log")"
  fi
}
st_train() { # label kind batch mini steps
  local label=$1 kind=$2 batch=$3 mini=$4 steps=$5 o
  mem_start "$W/st-$label.mem"
  if o=$(DEVICE=cuda timeout 150 python3 bench/train/st_train.py "$M" "$P" "$kind" "$batch" "$mini" "$SEQ" "$steps" 2>"$W/st-$label.err"); then
    row "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(check="train", loss=sys.argv[2], dtype="f32", peak_gpu_mib_nvidia_smi=int(sys.argv[3])); print(json.dumps(r))' "$o" "$label" "$(mem_peak "$W/st-$label.mem" "$BASE")")"
  else
    mem_peak "$W/st-$label.mem" "$BASE" > /dev/null
    err_row "train st $label" "$o $(tail -c 1500 "$W/st-$label.err")"
  fi
}

exact_part() { # rows
  note "c. exact softmax, $1 rows"
  local o
  o=$(timeout 120 "$W/bench_gpu" exact "$1" 32 10 2>"$W/ex.err") && row "$o" || err_row "exact sieve $1" "$o $(tail -c 1500 "$W/ex.err")"
  o=$(timeout 120 python3 bench/gpu/st_gpu.py exact "$1" 32 10 2>"$W/ex.err") && row "$o" || err_row "exact torch $1" "$o $(tail -c 1500 "$W/ex.err")"
}
encode_part() {
  note "d. encode"
  local o dt
  for dt in f32 bf16; do
    o=$(timeout 120 "$W/bench_gpu" encode "$M" "$P" 128 $dt 2>"$W/en.err") && row "$o" || err_row "encode sieve $dt" "$o $(tail -c 1500 "$W/en.err")"
  done
  o=$(timeout 120 python3 bench/gpu/st_gpu.py encode "$M" "$P" 128 2>"$W/en.err") && row "$o" || err_row "encode st" "$o $(tail -c 1500 "$W/en.err")"
}
# In order of what matters most, so that a short budget drops the least.
if left; then note "b. MNRL batch 32";            sieve_train mnrl 32 0 20 f32; st_train mnrl mnrl 32 0 20; fi
if left; then
  note "b. where a step's time goes (bench_gpu step)"
  for dt in f32 bf16; do
    o=$(timeout 90 "$W/bench_gpu" step "$M" "$P" 32 10 $dt 2>"$W/st.err") && row "$o" || err_row "step $dt" "$o $(tail -c 1500 "$W/st.err")"
  done
fi
if left; then exact_part 1000000; fi
if left; then note "b. GradCache 1024 / 128";      sieve_train cached 1024 128 3 f32; st_train cached cached 1024 128 3; fi
if left; then exact_part 10000000; fi
if left; then encode_part; fi
if left; then note "b. MNRL batch 32, sieve bf16"; sieve_train mnrl 32 0 20 bf16; fi

note "summary"
python3 - "$ROWS" "$OUT/summary.json" "$(($(date +%s) - T0))" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def find(**kw):
    return next((r for r in rows if all(r.get(k) == v for k, v in kw.items()) and "error" not in r), None)
ratios = {}
for loss in ["mnrl", "cached"]:
    s, t = find(check="train", tool="sieve", loss=loss, dtype="f32"), find(check="train", tool="sentence-transformers", loss=loss)
    if s and t:
        ratios[f"train_{loss}_f32_sieve_over_st"] = s["pairs_per_s"] / t["pairs_per_s"]
b = find(check="train", tool="sieve", loss="mnrl", dtype="bf16")
t = find(check="train", tool="sentence-transformers", loss="mnrl")
if b and t:
    ratios["train_mnrl_sieve_bf16_over_st_f32"] = b["pairs_per_s"] / t["pairs_per_s"]
for n in [1000000, 10000000]:
    s = next((r for r in rows if r.get("check") == "exact" and r.get("n") == n and "impl" not in r and "error" not in r), None)
    t = next((r for r in rows if r.get("check") == "exact" and r.get("n") == n and "impl" in r), None)
    if s and t:
        ratios[f"exact_{n}_torch_over_sieve_time"] = t["seconds"] / s["seconds"]
for dt in ["f32", "bf16"]:
    s, t = find(check="encode", tool="sieve", dtype=dt), find(check="encode", tool="sentence-transformers")
    if s and t:
        ratios[f"encode_sieve_{dt}_over_st_f32"] = s["texts_per_s"] / t["texts_per_s"]
errors = [r for r in rows if "error" in r]
out = {"seconds": int(sys.argv[3]), "ratios": ratios, "errors": len(errors), "rows": rows}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(json.dumps({"ratios": ratios, "errors": [r["check"] for r in errors]}, indent=1))
PY
note "done: $OUT/summary.json"
