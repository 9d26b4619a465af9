# Sourced by the scripts that install Debian packages the tests need
# (ensure-redis.sh, ensure-chromium.sh), when run as root.

# apt_install PACKAGE...: installs them, refreshing the package lists first
# if the install fails. Test binaries run the ensure scripts in parallel
# (the cluster and the dashboard tests on a fresh machine), so each apt-get
# waits for another's dpkg and lists locks instead of failing at once.
apt_install() {
    local wait=(-o DPkg::Lock::Timeout=600)
    DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -q "$@" >&2 \
        || { apt-get "${wait[@]}" update -q >&2 \
            && DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -q "$@" >&2; }
}
