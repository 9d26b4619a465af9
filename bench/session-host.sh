#!/usr/bin/env bash
# First session-host figures for BENCHMARKS.md: idle RSS per session and
# SIGKILL detection latency. Loopback only; bounded in count and time.
#
#   bench/session-host.sh            # 10 000 idle sessions, 200 kills
#   SESSIONS=2000 KILLS=50 bench/session-host.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

SESSIONS=${SESSIONS:-10000}
KILLS=${KILLS:-200}
PORT=${PORT:-18080}
HOST=127.0.0.1:$PORT

cargo build --release -q -p vigil -p vigil-load
# Each process may hold at most 20 000 files here; use them.
ulimit -n "$(ulimit -Hn)"

LOG=$(mktemp)
# shellcheck disable=SC2086 # VIGIL_ARGS is a list of flags
target/release/vigil serve --listen "$HOST" ${VIGIL_ARGS:-} 2>"$LOG" &
VIGIL=$!
trap 'kill "$VIGIL" 2>/dev/null || true; rm -f "$LOG"' EXIT

rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$VIGIL/status"; }

wait_for 0 60
sleep 1
BASE=$(rss_kib)
target/release/vigil-load idle --host "$HOST" --sessions "$SESSIONS" --hold-secs 20 > /tmp/vigil-idle.json &
LOAD=$!
wait_for "$SESSIONS" 120
sleep 5 # let the first assessment and ping round settle
HELD=$(rss_kib)
echo "idle: $(cat /tmp/vigil-idle.json)"
echo "server RSS: baseline ${BASE} KiB, with ${SESSIONS} sessions ${HELD} KiB"
awk -v b="$BASE" -v h="$HELD" -v n="$SESSIONS" 'BEGIN { printf "RSS per idle session: %.0f bytes\n", (h - b) * 1024 / n }'
wait "$LOAD"
wait_for 0 30
echo "after all closed: $(rss_kib) KiB"

# A second round: freed memory should be reused, not added to.
target/release/vigil-load idle --host "$HOST" --sessions "$SESSIONS" --hold-secs 10 > /dev/null &
LOAD=$!
wait_for "$SESSIONS" 120
sleep 5
echo "second round, ${SESSIONS} sessions again: $(rss_kib) KiB"
wait "$LOAD"
wait_for 0 30

target/release/vigil-load kill-latency --host "$HOST" --trials "$KILLS"
