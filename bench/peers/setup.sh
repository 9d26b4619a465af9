#!/usr/bin/env bash
# Installs the peer WebSocket servers' libraries that the benchmarks compare
# Vigil against: the npm `ws` package (an npm prefix, for node-ws-server.js)
# and Python `websockets` (a venv, for python-websockets-server.py). Both go
# under the target directory, are created once and reused; versions are
# pinned here.
#
# Usage: setup.sh <dir>   (default: <repo>/target/bench-peers)
# Prints nothing on success but the directory; fails with one clear line when
# a registry cannot be reached or a package does not install.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${1:-$root/target/bench-peers}"
mkdir -p "$dir"
LABEL=bench-peers
# shellcheck source=scripts/pinned-install.sh
. "$root/scripts/pinned-install.sh"

install_venv "$dir/venv" "websockets==15.0.1"
install_npm "$dir/npm" "ws@8.18.3"

echo "$dir"
