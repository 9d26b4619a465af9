#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver (Debian's `chromium` and
# `chromium-driver`) are installed: the dashboard tests drive the page in a
# real browser. Installs them with apt-get when run as root; otherwise says
# exactly what to install. Prints the two paths, browser first.
set -euo pipefail

# shellcheck source=scripts/apt-install.sh
. "$(dirname "$0")/apt-install.sh"

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if ! have; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver with apt-get (needed by the dashboard tests)" >&2
        apt_install chromium chromium-driver
    else
        echo "chromium and chromedriver are not installed; the dashboard tests need them. Install them: sudo apt-get install chromium chromium-driver (Debian/Ubuntu)" >&2
        exit 1
    fi
fi
command -v chromium
command -v chromedriver
