#!/usr/bin/env bash
# Builds what bench/gpu/check.sh carries to a GPU machine (which has no Rust and no
# network): the `sieve` binary and the `bench_gpu` example compiled with `--features cuda`
# (PTX for CUDA_COMPUTE_CAP, default 90 = H100/H200), stripped and xz-compressed, and the
# all-MiniLM-L6-v2 config and tokenizer files without the weights (the check makes a
# random-initialised model of that config there). Everything lands in target/gpu-carry
# (ignored by git; name it in the device call's `carry`), about 25 MB in all.
#
#   bench/gpu/prepare.sh            # then: bash bench/gpu/check.sh on the GPU machine
#
# scripts/build-cuda.sh installs the PyPI CUDA toolchain on first use; scripts/fetch-model.sh
# the model directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/fetch-model.sh >&2
scripts/build-cuda.sh
C=target/gpu-carry
rm -rf "$C"
mkdir -p "$C/model"
for b in target/release/sieve target/release/examples/bench_gpu; do
  strip -o "$C/$(basename "$b")" "$b"
  xz -T2 -6 -f "$C/$(basename "$b")"
done
M=models/all-MiniLM-L6-v2
cp "$M"/{config.json,tokenizer.json,tokenizer_config.json,vocab.txt,special_tokens_map.json} \
   "$M"/{modules.json,sentence_bert_config.json,config_sentence_transformers.json} "$C/model/"
cp -r "$M/1_Pooling" "$C/model/"
git rev-parse HEAD > "$C/commit"
if git status --porcelain | grep -q .; then echo dirty >> "$C/commit"; fi
du -sh "$C"/* >&2
