#!/usr/bin/env bash
# Installs the peer WebSocket servers' libraries that the session-host
# benchmarks compare Vigil against: the npm `ws` package (an npm prefix, for
# node-ws-server.js) and Python `websockets` (a venv, for
# python-websockets-server.py). Both go under the target directory, are
# created once and reused; versions are pinned.
#
# Usage: setup.sh <dir>   (default: <repo>/target/bench-peers)
# Prints nothing on success but the directory; fails with one clear line when
# a registry cannot be reached or a package does not install.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${1:-$root/target/bench-peers}"
mkdir -p "$dir"

# Pinned versions. Change them here and the stamp below forces a reinstall.
PY_PACKAGES=(
    "websockets==15.0.1"
)
NPM_PACKAGES=(
    "ws@8.18.3"
)

stamp_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

fail() { echo "bench-peers: $*" >&2; exit 1; }

# --- Python websockets ----------------------------------------------------
py_stamp="$(stamp_of "${PY_PACKAGES[@]}")"
if [[ "$(cat "$dir/venv/.vigil-stamp" 2>/dev/null || true)" != "$py_stamp" ]]; then
    command -v python3 >/dev/null || fail "python3 is not installed; websockets 15 needs Python >= 3.9"
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv" || fail "could not create a Python venv in $dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" \
        || fail "pip could not install ${PY_PACKAGES[*]} (is PyPI reachable?)"
    echo "$py_stamp" > "$dir/venv/.vigil-stamp"
fi

# --- Node ws --------------------------------------------------------------
npm_stamp="$(stamp_of "${NPM_PACKAGES[@]}")"
if [[ "$(cat "$dir/npm/.vigil-stamp" 2>/dev/null || true)" != "$npm_stamp" ]]; then
    command -v npm >/dev/null || fail "npm is not installed; ws 8 needs Node.js >= 10"
    rm -rf "$dir/npm"
    mkdir -p "$dir/npm"
    echo '{"name":"vigil-bench-peers","private":true}' > "$dir/npm/package.json"
    npm install --prefix "$dir/npm" --no-audit --no-fund --loglevel=error --save-exact \
        "${NPM_PACKAGES[@]}" >/dev/null \
        || fail "npm could not install ${NPM_PACKAGES[*]} (is the npm registry reachable?)"
    echo "$npm_stamp" > "$dir/npm/.vigil-stamp"
fi

echo "$dir"
