#!/usr/bin/env bash
# Record and replay, in release builds: a host with SESSIONS sessions
# (a tenth of them sending, a tenth never answering pings, so some are
# evicted) is recorded for HOLD seconds over the admin API; then the trace
# is replayed through the default policy (the determinism check: 0
# disagreements) and the strict one, and the replay's calls per second
# are printed. Loopback only; stops everything it started.
#
#   bench/replay.sh                 # 5 000 sessions, P = T = 1 s, 30 s
#   SESSIONS=1000 HOLD=10 bench/replay.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-5000}
HOLD=${HOLD:-30}
cargo build --release -q -p vigil -p vigil-load
VIGIL=target/release/vigil
LOAD=target/release/vigil-load
DEFAULT=target/wasm/wasm32-wasip2/release/vigil_default_policy.wasm
STRICT=target/wasm/wasm32-wasip2/release/vigil_strict_policy.wasm
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TOKEN=bench-admin-token
PORT=$(free_port)
ADMIN=$(free_port)
cat >"$WORK/vigil.toml" <<EOF
[tiers.fast]
ping_interval_ms = 1000
pong_timeout_ms = 1000
[tiers.regular]
ping_interval_ms = 1000
pong_timeout_ms = 1000
[tiers.keep_alive]
ping_interval_ms = 1000
pong_timeout_ms = 1000
EOF
RUST_LOG=warn "$VIGIL" serve --config "$WORK/vigil.toml" --listen "127.0.0.1:$PORT" \
    --admin-listen "127.0.0.1:$ADMIN" --admin-token "$TOKEN" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

admin() { curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN$2"; }
admin POST "/admin/policy/recording?max_seconds=600&max_bytes=268435456" >/dev/null
QUIET=$((SESSIONS * 8 / 10))
TENTH=$((SESSIONS / 10))
"$LOAD" idle --host "127.0.0.1:$PORT" --sessions "$QUIET" --hold-secs "$HOLD" --source-block 2 >/dev/null &
PIDS+=($!)
"$LOAD" idle --host "127.0.0.1:$PORT" --sessions "$TENTH" --hold-secs "$HOLD" --sends-per-sec 1 --source-block 10 >/dev/null &
PIDS+=($!)
"$LOAD" idle --host "127.0.0.1:$PORT" --sessions "$TENTH" --hold-secs "$HOLD" --ignore-pings --source-block 12 >/dev/null &
PIDS+=($!)
sleep "$((HOLD + 3))"
admin DELETE /admin/policy/recording >"$WORK/status.json"
admin GET /admin/policy/recording/trace >"$WORK/trace.jsonl.gz"
echo "recording: $(cat "$WORK/status.json")"
echo "trace: $(stat -c %s "$WORK/trace.jsonl.gz") bytes compressed"
for plugin in "$DEFAULT" "$STRICT"; do
    echo "== replay through $(basename "$plugin")"
    "$VIGIL" policy replay "$WORK/trace.jsonl.gz" "$plugin" --samples 0
done
