#!/bin/sh
# Host packages for tools/vm/run_in_vm.py (virtme-ng itself is a pip package
# that the nox session installs into its venv). Idempotent and quiet.
set -eu
pkgs="qemu-system-x86 linux-image-amd64 busybox-static"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
# apt-get update only when the lists are absent or do not know a package yet.
for p in $missing; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        break
    fi
done
# A stale list can name versions the mirror no longer has: update and retry.
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}
