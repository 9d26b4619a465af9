#!/usr/bin/env bash
# The whole benchmark suite, side by side: Vigil, Node `ws` and Python
# `websockets` (installed by bench/peers/setup.sh under target/, pinned),
# measured in one run on this machine. Prints the tables and rewrites the
# figures block of BENCHMARKS.md. Loopback only; bounded in count and time.
#
#   bench/run.sh            # the full suite (about 40 minutes on 2 cores)
#   bench/run.sh --quick    # a few hundred sessions, under a minute
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p vigil -p vigil-load
# Each process may hold at most 20 000 files here; use them.
ulimit -n "$(ulimit -Hn)"

if [ "${1:-}" = "--quick" ]; then
    exec target/release/vigil-bench all --quick
fi
exec target/release/vigil-bench all --write BENCHMARKS.md --json target/bench-results.json
