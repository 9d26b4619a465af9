# Sourced by the scripts that install pinned third-party programs under the
# target directory (tests/onebot-clients/setup.sh, bench/peers/setup.sh): a
# Python venv or an npm prefix, created once and reused until the pins
# change, or one clear line saying what could not be installed.
#
# The caller sets LABEL (the prefix of error lines) before calling.

stamp_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

fail() { echo "${LABEL:-install}: $*" >&2; exit 1; }

# install_venv DIR PACKAGE...: a venv at DIR with exactly these pins.
install_venv() {
    local venv="$1"; shift
    local stamp; stamp="$(stamp_of "$@")"
    [[ "$(cat "$venv/.vigil-stamp" 2>/dev/null || true)" == "$stamp" ]] && return 0
    command -v python3 >/dev/null || fail "python3 is not installed (needed for $*)"
    rm -rf "$venv"
    python3 -m venv "$venv" || fail "could not create a Python venv in $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" \
        || fail "pip could not install $* (is PyPI reachable?)"
    echo "$stamp" > "$venv/.vigil-stamp"
}

# install_npm DIR PACKAGE...: an npm prefix at DIR with exactly these pins.
install_npm() {
    local prefix="$1"; shift
    local stamp; stamp="$(stamp_of "$@")"
    [[ "$(cat "$prefix/.vigil-stamp" 2>/dev/null || true)" == "$stamp" ]] && return 0
    command -v npm >/dev/null || fail "npm is not installed (needed for $*)"
    rm -rf "$prefix"
    mkdir -p "$prefix"
    echo '{"name":"vigil-pinned","private":true}' > "$prefix/package.json"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error --save-exact "$@" \
        >/dev/null || fail "npm could not install $* (is the npm registry reachable?)"
    echo "$stamp" > "$prefix/.vigil-stamp"
}
