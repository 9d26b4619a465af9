#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver (Debian's `chromium` and
# `chromium-driver`) are installed: the dashboard tests drive the page in a
# real browser. Installs them with apt-get when run as root; otherwise says
# exactly what to install. Prints the two paths, browser first.
set -euo pipefail

# Test binaries run this script in parallel (the cluster and the dashboard
# tests on a fresh machine): wait for another install's dpkg and apt lists
# locks instead of failing at once.
apt_wait="-o DPkg::Lock::Timeout=600"

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if ! have; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver with apt-get (needed by the dashboard tests)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get $apt_wait install -y -q chromium chromium-driver >&2 \
            || { apt-get $apt_wait update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get $apt_wait install -y -q chromium chromium-driver >&2; }
    else
        echo "chromium and chromedriver are not installed; the dashboard tests need them. Install them: sudo apt-get install chromium chromium-driver (Debian/Ubuntu)" >&2
        exit 1
    fi
fi
command -v chromium
command -v chromedriver
