#!/usr/bin/env bash
# Hot-swap latency under load for BENCHMARKS.md: SESSIONS idle sessions,
# publishes to all of them every 50 ms, and SWAPS policy swaps through the
# admin API alternating two plugins, timed from request to response (the
# response is sent once the new policy serves). Loopback only; bounded.
#
#   bench/swap.sh                  # 10 000 sessions, 100 swaps
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

SESSIONS=${SESSIONS:-10000}
SWAPS=${SWAPS:-100}
PUBLISH_EVERY=${PUBLISH_EVERY:-0.05}   # seconds between publishes to all; 0 = no traffic
PORT=${PORT:-18090}
ADMIN_PORT=${ADMIN_PORT:-18091}
HOST=127.0.0.1:$PORT
ADMIN=127.0.0.1:$ADMIN_PORT
TOKEN=bench-admin-token

cargo build --release -q -p vigil -p vigil-load
cargo build -q --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release \
    --target-dir target/wasm -p vigil-default-policy -p vigil-lenient-policy
PLUGINS=target/wasm/wasm32-wasip2/release
ulimit -n "$(ulimit -Hn)"

LOG=$(mktemp)
target/release/vigil serve --listen "$HOST" --admin-listen "$ADMIN" --admin-token "$TOKEN" 2>"$LOG" &
VIGIL=$!
PUBLISHER=
cleanup() {
    [ -n "$PUBLISHER" ] && kill "$PUBLISHER" 2>/dev/null
    kill "$VIGIL" 2>/dev/null || true
    rm -f "$LOG"
}
trap cleanup EXIT


wait_for 0 60
target/release/vigil-load idle --host "$HOST" --sessions "$SESSIONS" --hold-secs 120 >/dev/null &
LOAD=$!
wait_for "$SESSIONS" 120
sleep 3

if [ "$PUBLISH_EVERY" != 0 ]; then
    ( while true; do
        curl -s -o /dev/null "http://$HOST/publish" -d '{"to": "all", "data": "tick"}'
        sleep "$PUBLISH_EVERY"
      done ) &
    PUBLISHER=$!
fi

TIMES=$(mktemp)
for i in $(seq 1 "$SWAPS"); do
    if [ $((i % 2)) = 1 ]; then plugin=vigil_lenient_policy; else plugin=vigil_default_policy; fi
    response=$(curl -s -w ' %{http_code} %{time_total}' -X PUT \
        -H "Authorization: Bearer $TOKEN" --data-binary "@$PLUGINS/$plugin.wasm" \
        "http://$ADMIN/admin/policy?name=$plugin.wasm")
    # "<code> <client seconds> <server swap ms>": the server measures from the
    # request received to the new policy serving; the client adds the upload.
    server_ms=$(printf '%s' "$response" | sed -nE 's/.*"swap_ms":([0-9.e+-]+).*/\1/p')
    echo "${response##*\} } ${server_ms:-0}" >>"$TIMES"
done
[ -n "$PUBLISHER" ] && kill "$PUBLISHER" 2>/dev/null; PUBLISHER=

AFTER=$(count)
FAILED=$(awk '$1 != 200' "$TIMES" | wc -l)
echo "sessions: ${SESSIONS} before, ${AFTER} after ${SWAPS} swaps; failed swaps: ${FAILED}"
percentiles() { # percentiles LABEL: reads ms values, one per line
    sort -n | awk -v label="$1" '
        { t[NR] = $1 }
        END {
            p50 = t[int(NR * 0.50) + 1]; p99 = t[int(NR * 0.99) + (NR * 0.99 == int(NR * 0.99) ? 0 : 1)]
            printf "%s over %d swaps: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", label, NR, p50, p99, t[NR]
        }'
}
awk '{print $3}' "$TIMES" | percentiles "swap latency, server (request received -> new policy serving)"
awk '{print $2 * 1000}' "$TIMES" | percentiles "swap latency, client (upload included)"

curl -s "http://$HOST/metrics" | grep -E '^vigil_(policy_swaps_total|evictions_total)' || true
rm -f "$TIMES"
kill "$LOAD" 2>/dev/null || true
