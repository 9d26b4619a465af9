#!/usr/bin/env bash
# Cluster figures for BENCHMARKS.md, in one run: a redis-server of its own
# and release Vigil nodes on loopback, loaded by vigil-load from a second
# process. Bounded in count and time; stops everything it started.
#
#   bench/cluster.sh                 # N = 10 000 sessions
#   N=2000 bench/cluster.sh          # smaller
#   ONLY=fanout bench/cluster.sh     # only the fan-out rows (1 and 2)
#
# Measures, each printed as one `figure:` line:
#   1. publish latency, sessions on node b and the publish on node a, at 1
#      and at N sessions; the same with node a alone in single-node mode;
#   2. fan-out deliveries per second, N sessions: single-node mode, one
#      cluster node publishing to its own sessions, and every delivery
#      across nodes, and N sessions shared by two nodes (every other one
#      on each) published on one of them; Redis CPU during the cross-node
#      round;
#   3. RSS per idle session, cluster mode on and off;
#   4. time for a survivor to drop a kill -9'd node holding N sessions;
#   5. time for the cluster to be whole again after Redis restarts empty,
#      with N sessions on node b that each hold an identity: until node a
#      lists them all and is healthy, and until Redis holds all N
#      identities again;
#   6. cluster-wide listing with N sessions on each of two nodes: the
#      count alone, the first page, and every page of 1 000.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}

cargo build --release -q -p vigil -p vigil-load
ulimit -n "$(ulimit -Hn)"
bash scripts/ensure-redis.sh >/dev/null

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >/dev/null &
    REDIS=$!
    PIDS+=("$REDIS")
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "redis-server did not start" >&2; exit 1
}
start_redis

# start_node NAME PORT [cluster|single]: echoes the pid.
start_node() {
    local args=(serve --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$(free_port)")
    if [ "${3:-cluster}" = cluster ]; then args+=(--redis-url "redis://127.0.0.1:$REDIS_PORT" --node-id "$1"); fi
    RUST_LOG=warn target/release/vigil "${args[@]}" >/dev/null 2>"$WORK/$1.log" &
    local pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && break; sleep 0.1; done
    echo "$pid"
}
cluster_nodes() { curl -s "http://$1/healthz" | python3 -c 'import json,sys; print(len((json.load(sys.stdin).get("cluster") or {}).get("nodes") or []))'; }
count() { curl -s "http://$1/sessions?limit=0" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["count"] if not d.get("unreachable") else -1)'; }
wait_count() { for _ in $(seq $(( $3 * 20 ))); do [ "$(count "$1")" = "$2" ] && return 0; sleep 0.05; done; echo "timed out: $1 has $(count "$1"), not $2" >&2; return 1; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
now_ms() { date +%s%3N; }
pick() { python3 -c "import json,sys; d=json.load(open('$1')); print($2)"; }

A_PORT=$(free_port); B_PORT=$(free_port); S_PORT=$(free_port)
A=127.0.0.1:$A_PORT; B=127.0.0.1:$B_PORT; S=127.0.0.1:$S_PORT
A_PID=$(start_node a "$A_PORT")
PIDS+=("$A_PID")
B_PID=$(start_node b "$B_PORT")
PIDS+=("$B_PID")
for _ in $(seq 100); do [ "$(cluster_nodes "$A")" = 2 ] && [ "$(cluster_nodes "$B")" = 2 ] && break; sleep 0.1; done

# 1. Latency across nodes, at 1 session and at N.
target/release/vigil-load fanout --host "$B" --control "$A" --sessions 1 --messages 200 --interval-ms 5 > "$WORK/lat1.json"
echo "figure: cross-node latency, 1 session, ms: $(pick "$WORK/lat1.json" 'd["latency_ms"]')"
TICKS_BEFORE=$(cpu_ticks "$REDIS")
target/release/vigil-load fanout --host "$B" --control "$A" --sessions "$N" --messages 20 > "$WORK/latn.json"
TICKS_AFTER=$(cpu_ticks "$REDIS")
echo "figure: cross-node fan-out, $N sessions on b, published on a: $(pick "$WORK/latn.json" '"%.0f deliveries/s, latency ms %s, delivered %d of %d" % (d["deliveries_per_sec"], d["latency_ms"], d["delivered"], d["expected"])')"
echo "figure: Redis CPU during that fan-out: $(( TICKS_AFTER - TICKS_BEFORE )) ticks of $(getconf CLK_TCK)/s, $(pick "$WORK/latn.json" 'd["delivery_seconds"]') s of delivery"
target/release/vigil-load fanout --host "$A" --control "$A" --sessions "$N" --messages 20 > "$WORK/local.json"
echo "figure: same-node fan-out in cluster mode, $N sessions on a, published on a: $(pick "$WORK/local.json" '"%.0f deliveries/s, latency ms %s" % (d["deliveries_per_sec"], d["latency_ms"])')"

target/release/vigil-load fanout --host "$A" --also-host "$B" --control "$A" --sessions "$N" --messages 20 > "$WORK/split.json"
echo "figure: fan-out, $N sessions shared by nodes a and b, published on a: $(pick "$WORK/split.json" '"%.0f deliveries/s, latency ms %s, delivered %d of %d" % (d["deliveries_per_sec"], d["latency_ms"], d["delivered"], d["expected"])')"

# Single-node mode beside it.
S_PID=$(start_node s "$S_PORT" single)
PIDS+=("$S_PID")
target/release/vigil-load fanout --host "$S" --sessions 1 --messages 200 --interval-ms 5 > "$WORK/slat1.json"
echo "figure: single-node latency, 1 session, ms: $(pick "$WORK/slat1.json" 'd["latency_ms"]')"
target/release/vigil-load fanout --host "$S" --sessions "$N" --messages 20 > "$WORK/single.json"
echo "figure: single-node fan-out, $N sessions: $(pick "$WORK/single.json" '"%.0f deliveries/s, latency ms %s" % (d["deliveries_per_sec"], d["latency_ms"])')"
[ "${ONLY:-}" = fanout ] && exit 0

# 3. Memory per idle session, cluster on and off, on fresh nodes (the
# allocator keeps what earlier rounds grew, so a used node would read low).
M_PORT=$(free_port); O_PORT=$(free_port)
M_PID=$(start_node m "$M_PORT")
PIDS+=("$M_PID")
O_PID=$(start_node o "$O_PORT" single)
PIDS+=("$O_PID")
for which in "m 127.0.0.1:$M_PORT $M_PID cluster" "o 127.0.0.1:$O_PORT $O_PID single-node"; do
    set -- $which
    sleep 2
    base=$(rss_kib "$3")
    target/release/vigil-load idle --host "$2" --sessions "$N" --hold-secs 15 > "$WORK/idle-$1.json" &
    load=$!
    wait_count "$2" "$N" 60
    sleep 11 # 2P + 1 s at the default fast tier: every session pinged and assessed
    held=$(rss_kib "$3")
    echo "figure: RSS per idle session, $4 mode: $(( (held - base) * 1024 / N )) bytes (baseline $base KiB, held $held KiB)"
    wait "$load"
    kill "$3" 2>/dev/null || true
done

# 4. A node killed with N sessions: how long until the survivor drops them.
target/release/vigil-load idle --host "$B" --sessions "$N" --hold-secs 60 > /dev/null 2>&1 &
HOLD=$!
wait_count "$A" "$N" 60
started=$(now_ms)
kill -9 "$B_PID"
for _ in $(seq 400); do
    [ "$(cluster_nodes "$A")" = 1 ] && [ "$(count "$A")" = 0 ] && break
    sleep 0.05
done
echo "figure: a kill -9'd node with $N sessions was declared dead, and its sessions gone from the survivor's listing, in $(( $(now_ms) - started )) ms"
kill "$HOLD" 2>/dev/null || true

# 5. Redis restarted empty: how long until the listing is whole again, and
# until every identity is re-registered.
B_PID=$(start_node b "$B_PORT")
PIDS+=("$B_PID")
for _ in $(seq 100); do [ "$(cluster_nodes "$A")" = 2 ] && break; sleep 0.1; done
target/release/vigil-load idle --host "$B" --sessions "$N" --hold-secs 120 --identity-prefix bot > /dev/null 2>&1 &
HOLD=$!
wait_count "$A" "$N" 60
identities() { redis-cli -p "$REDIS_PORT" EVAL "return #redis.call('KEYS', ARGV[1])" 0 'vigil:identity:*' 2>/dev/null || echo 0; }
for _ in $(seq 200); do [ "$(identities)" = "$N" ] && break; sleep 0.05; done
echo "figure: identities registered before the restart: $(identities) of $N"
kill -9 "$REDIS"
sleep 3
started=$(now_ms)
start_redis
listed_at=""; registered_at=""
for _ in $(seq 600); do
    if [ -z "$listed_at" ] && [ "$(count "$A")" = "$N" ] && [ "$(curl -s "http://$A/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = ok ]; then
        listed_at=$(( $(now_ms) - started ))
    fi
    if [ -z "$registered_at" ] && [ "$(identities)" = "$N" ]; then
        registered_at=$(( $(now_ms) - started ))
    fi
    [ -n "$listed_at" ] && [ -n "$registered_at" ] && break
    sleep 0.05
done
echo "figure: after Redis restarted empty, node a listed all $N sessions of node b again and was healthy in ${listed_at:-(not within 30 s)} ms"
echo "figure: after Redis restarted empty, all $N identities held on node b were registered again in ${registered_at:-(not within 30 s)} ms"

# 6. Listing with N sessions on each of two nodes (still held on b).
target/release/vigil-load idle --host "$A" --sessions "$N" --hold-secs 120 --source-block 20 > /dev/null 2>&1 &
HOLD_A=$!
wait_count "$A" $(( 2 * N )) 60
median_ms() { sort -n | awk '{v[NR]=$1} END {printf "%.1f", v[int((NR+1)/2)] * 1000}'; }
for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "http://$A/sessions?limit=0"; done | median_ms > "$WORK/count.ms"
for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "http://$A/sessions?limit=100"; done | median_ms > "$WORK/page.ms"
page_all() {
    python3 - "$A" <<'PY'
import json, sys, time, urllib.request
address = sys.argv[1]
started = time.monotonic()
after, seen, pages = None, 0, 0
while True:
    url = f"http://{address}/sessions?limit=1000" + (f"&after={after}" if after else "")
    page = json.load(urllib.request.urlopen(url))
    pages += 1
    seen += len(page["sessions"])
    if not page["sessions"] or page.get("unreachable"):
        break
    after = page["sessions"][-1]["id"]
print(f"{(time.monotonic() - started) * 1000:.0f} ms for {seen} sessions in {pages} requests")
PY
}
echo "figure: listing $(( 2 * N )) sessions over two nodes, asked on a: count alone $(cat "$WORK/count.ms") ms, first page of 100 $(cat "$WORK/page.ms") ms (medians of 5); every page of 1 000: $(page_all)"
kill "$HOLD" "$HOLD_A" 2>/dev/null || true
