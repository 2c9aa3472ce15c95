#!/usr/bin/env bash
# The one release build every script, bench and CI step uses: the whole workspace's
# binaries and examples with one feature set, so that a second build (or a bench after
# the README's build) is a no-op instead of ten minutes of `-p`-specific rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo build --release --workspace --bins --examples "$@"
