#!/usr/bin/env bash
# Builds a Python or JavaScript policy plugin into a component, with the
# pinned toolchains from setup.sh (installed on first need).
#
# Usage: build.sh <plugin dir> [out.wasm]
#   <plugin dir> holds app.py (Python, class Policy) or policy.js
#   (JavaScript, export const policy); out defaults to
#   <repo>/target/polyglot/<dir name>.wasm.
#
# A build is skipped when its output is newer than nothing it depends on:
# the stamp next to the output hashes the sources, the WIT and the pins.
# Prints the output's path.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
LABEL=polyglot-build
# shellcheck source=scripts/pinned-install.sh
. "$root/scripts/pinned-install.sh"

[[ $# -ge 1 ]] || fail "usage: build.sh <plugin dir> [out.wasm]"
src="$(cd "$1" 2>/dev/null && pwd)" || fail "no plugin directory $1"
name="$(basename "$src")"
out="${2:-$root/target/polyglot/$name.wasm}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

if [[ -f "$src/app.py" ]]; then
    lang=python
    sources=("$src"/*.py)
elif [[ -f "$src/policy.js" ]]; then
    lang=js
    sources=("$src"/*.js)
else
    fail "$src has neither app.py (Python) nor policy.js (JavaScript)"
fi

stamp="$(cat "${sources[@]}" "$root"/wit/*.wit "$here"/setup.sh "$here"/componentize-js.mjs "$0" | sha256sum | cut -c1-32)"
if [[ -f "$out" && "$(cat "$out.stamp" 2>/dev/null || true)" == "$stamp" ]]; then
    echo "$out"
    exit 0
fi

tools="$(bash "$here/setup.sh" "$lang")"
rm -f "$out" "$out.stamp"
case "$lang" in
    python)
        # componentize-py finds app.py and its helper modules on -p.
        "$tools/venv/bin/componentize-py" --wit-path "$root/wit" --world policy-plugin \
            componentize --python-path "$src" app --output "$out" >&2 \
            || fail "componentize-py could not build $src"
        ;;
    js)
        # The driver sits in the npm prefix, so its import resolves there.
        cp "$here/componentize-js.mjs" "$tools/npm/componentize-js.mjs"
        node "$tools/npm/componentize-js.mjs" "$src/policy.js" "$root/wit" "$out" >&2 \
            || fail "componentize-js could not build $src"
        ;;
esac
echo "$stamp" > "$out.stamp"
echo "$out"
