#!/usr/bin/env bash
# Policies in three languages, side by side in one run: the Rust default
# policy, the Python example (componentize-py) and the JavaScript example
# (componentize-js), each through the release `vigil`:
#   1. size of the component;
#   2. cold start (empty compile cache) and warm start (cache filled):
#      `vigil serve --policy X` from exec to /healthz answering;
#   3. swap into a running host over the admin API, cold and warm, as the
#      host reports it (load = compile or cache read, instantiate,
#      configure, dry run on 200 sessions; swap = request to serving);
#   4. cost per session in `assess` at 100, 1 000 and 10 000 sessions
#      (`vigil policy check`'s generated batches, timed around the host's
#      whole assess, boundary crossing included), the calls the host split
#      each batch into, and the largest batch one call fits in the default
#      20 ms deadline.
# Loopback only; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p vigil -p vigil-load
VIGIL=target/release/vigil
RUST=target/wasm/wasm32-wasip2/release/vigil_default_policy.wasm
PY=$(bash plugins/polyglot/build.sh plugins/python-policy)
JS=$(bash plugins/polyglot/build.sh plugins/js-policy)
[ -f "$RUST" ] || { echo "no $RUST: run cargo build first" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
TOKEN=bench-admin-token

# start_ms CACHE PLUGIN: ms from exec to /healthz answering; the host is
# stopped afterwards.
start_ms() {
    local port; port=$(free_port)
    local started; started=$(now_ms)
    XDG_CACHE_HOME="$1" RUST_LOG=warn "$VIGIL" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$(free_port)" --policy "$2" >/dev/null 2>&1 &
    local pid=$!
    until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do
        kill -0 "$pid" 2>/dev/null || { echo "vigil serve --policy $2 exited" >&2; exit 1; }
        sleep 0.02
    done
    echo $(( $(now_ms) - started ))
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

# A host with 200 idle sessions to swap into.
HOST_CACHE="$WORK/host-cache"
PORT=$(free_port); ADMIN=$(free_port)
XDG_CACHE_HOME="$HOST_CACHE" RUST_LOG=warn "$VIGIL" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" --admin-token "$TOKEN" >/dev/null 2>&1 &
PIDS+=($!)
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.05; done
target/release/vigil-load idle --host "127.0.0.1:$PORT" --sessions 200 --hold-secs 600 >/dev/null 2>&1 &
PIDS+=($!)
sleep 2
swap() {
    curl -sf -X PUT -H "Authorization: Bearer $TOKEN" --data-binary "@$2" \
        "http://127.0.0.1:$ADMIN/admin/policy?name=$1" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("load %.0f ms, swap %.1f ms, dry run %d, %s sessions per call" % (d["load_ms"], d["swap_ms"], d["dry_run_sessions"], d["sessions_per_call"]))'
}

for lang in rust python js; do
    case $lang in rust) plugin=$RUST ;; python) plugin=$PY ;; js) plugin=$JS ;; esac
    echo "figure: $lang: component $(( $(stat -c %s "$plugin") / 1024 )) KiB"
    cold_cache="$WORK/cold-$lang"
    echo "figure: $lang: start, cold (compiling) $(start_ms "$cold_cache" "$plugin") ms; warm (cached) $(start_ms "$cold_cache" "$plugin") ms, $(start_ms "$cold_cache" "$plugin") ms"
    echo "figure: $lang: swap, cold: $(swap "$lang-policy.wasm" "$plugin")"
    # Warm: the host keeps compiled code in memory too; a second swap of the
    # same bytes is the common case (rollback, re-deploy).
    echo "figure: $lang: swap, warm: $(swap "$lang-policy.wasm" "$plugin")"
    XDG_CACHE_HOME="$cold_cache" "$VIGIL" policy check "$plugin" 2>/dev/null > "$WORK/check-$lang.txt"
    python3 - "$WORK/check-$lang.txt" "$lang" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rows = re.findall(r"^\s+(100|1000|10000)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\S+)%$", text, re.M)
cells = ", ".join(f"{n}: {per} per session in {calls} call(s)" for n, _, per, calls, _ in rows)
print(f"figure: {sys.argv[2]}: assess {cells}")
batching = re.search(r"^batching: .*$", text, re.M)
print(f"figure: {sys.argv[2]}: {batching.group(0) if batching else 'batching: (no line)'}")
PY
done
