#!/usr/bin/env bash
# Installs the pinned toolchains that build Python and JavaScript policy
# plugins: componentize-py (a Python venv) and
# @bytecodealliance/componentize-js (an npm prefix), under the target
# directory, once; reused until the pins change.
#
# Usage: setup.sh [python|js|all] [dir]   (default: all, <repo>/target/policy-toolchains)
# Prints the directory on success; fails with one clear line when a registry
# cannot be reached or a package does not install.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
which="${1:-all}"
dir="${2:-$root/target/policy-toolchains}"
mkdir -p "$dir"
LABEL=policy-toolchains
# shellcheck source=scripts/pinned-install.sh
. "$root/scripts/pinned-install.sh"

# The pins. componentize-py bundles CPython 3.12 and wasi-libc;
# componentize-js bundles SpiderMonkey (StarlingMonkey).
COMPONENTIZE_PY="componentize-py==0.25.1"
COMPONENTIZE_JS="@bytecodealliance/componentize-js@0.23.0"

case "$which" in
    python) install_venv "$dir/venv" "$COMPONENTIZE_PY" ;;
    js) install_npm "$dir/npm" "$COMPONENTIZE_JS" ;;
    all)
        install_venv "$dir/venv" "$COMPONENTIZE_PY"
        install_npm "$dir/npm" "$COMPONENTIZE_JS"
        ;;
    *) fail "unknown toolchain '$which' (python, js or all)" ;;
esac
echo "$dir"
