#!/usr/bin/env bash
# Makes sure `redis-server` (Redis 7, Debian's package) is installed: the
# cluster tests start their own instances of it. Installs it with apt-get
# when run as root; otherwise says exactly what to install. Prints the path.
set -euo pipefail

# shellcheck source=scripts/apt-install.sh
. "$(dirname "$0")/apt-install.sh"

if command -v redis-server >/dev/null 2>&1; then
    command -v redis-server
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server with apt-get (needed by the cluster tests)" >&2
    apt_install redis-server
    # The package starts a system instance; the tests run their own.
    if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server >/dev/null 2>&1 || true; fi
    command -v redis-server
    exit 0
fi
echo "redis-server is not installed; the cluster tests need it. Install Redis 7: sudo apt-get install redis-server (Debian/Ubuntu)" >&2
exit 1
