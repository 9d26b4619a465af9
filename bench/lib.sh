# Shared by the bench scripts: session counts from a running Vigil.
# Expects HOST (ip:port) to be set by the caller.

# Live sessions, as GET /sessions counts them.
count() { curl -s "http://$HOST/sessions?limit=0" | sed -E 's/.*"count":([0-9]+).*/\1/'; }

# wait_for N SECONDS: until the host holds exactly N sessions.
wait_for() {
    for _ in $(seq 1 $(( $2 * 10 ))); do
        [ "$(count 2>/dev/null || echo -1)" = "$1" ] && return 0
        sleep 0.1
    done
    echo "timed out waiting for $1 sessions (have $(count))" >&2
    return 1
}
