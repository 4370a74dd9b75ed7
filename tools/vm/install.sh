#!/bin/sh
# Host packages for tools/vm/run_in_vm.py: QEMU, a Debian kernel in /boot and a
# static busybox (virtme-ng builds its guest initramfs from it). virtme-ng
# itself is a pip package that the nox session installs into its venv.
# Idempotent and quiet; needs root (CI runs as root).
#
# When the kernel is not installed yet it comes with tiny-initramfs instead of
# initramfs-tools: the latter pulls in udev, and when virtme-ng finds udevd it
# runs a coldplug + settle in every guest boot that costs 7-10 s under TCG.
# (The host's /boot initrd is never used: virtme-ng builds its own.)
set -eu
pkgs="qemu-system-x86 busybox-static linux-image-amd64"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
case " $missing " in
    *" linux-image-amd64 "*)
        if ! dpkg-query -W -f='${Status}' initramfs-tools 2>/dev/null \
                | grep -q "install ok installed"; then
            missing="$missing tiny-initramfs"
        fi
        ;;
esac
export DEBIAN_FRONTEND=noninteractive
# apt-get update only when the lists do not know a package yet.
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
ls /boot/vmlinuz-* >/dev/null 2>&1 || {
    echo "tools/vm/install.sh: no /boot/vmlinuz-* after installing $missing" >&2
    exit 1
}
