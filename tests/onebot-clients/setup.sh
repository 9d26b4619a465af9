#!/usr/bin/env bash
# Installs the real OneBot v11 clients the OneBot tests run against Vigil:
# NoneBot2 with nonebot-adapter-onebot and its websockets driver (a Python
# venv), and Koishi with its OneBot adapter (an npm prefix). Both go under
# the target directory, are created once and reused; versions are pinned
# here.
#
# Usage: setup.sh <dir>   (default: <repo>/target/onebot-clients)
# Prints nothing on success but the directory; fails with one clear line when
# a registry cannot be reached or a package does not install.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${1:-$root/target/onebot-clients}"
mkdir -p "$dir"
LABEL=onebot-clients
# shellcheck source=scripts/pinned-install.sh
. "$root/scripts/pinned-install.sh"

install_venv "$dir/venv" \
    "nonebot2[websockets]==2.5.0" \
    "nonebot-adapter-onebot==2.4.6" \
    "websockets==15.0.1"
install_npm "$dir/npm" \
    "koishi@4.18.11" \
    "koishi-plugin-adapter-onebot@6.9.4"

echo "$dir"
