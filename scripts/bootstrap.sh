#!/usr/bin/env bash
# Install what emcc_trio needs on a fresh Debian machine: Debian's emscripten, redis-server and
# haproxy (as root) and a virtualenv at .venv with the project and its test tools. Safe to run
# again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v emcc >/dev/null 2>&1 || apt_packages+=(emscripten)
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
# The shared store and the balancer of the replica tests (nox -s cluster).
command -v redis-server >/dev/null 2>&1 || apt_packages+=(redis-server)
[ -x /usr/sbin/haproxy ] || apt_packages+=(haproxy)
command -v ip >/dev/null 2>&1 || apt_packages+=(iproute2)
python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_packages+=(python3-venv)
if ((${#apt_packages[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing ${apt_packages[*]}; run as root or: sudo apt-get install ${apt_packages[*]}" >&2
    exit 1
  fi
  echo "bootstrap: apt-get install ${apt_packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

# Debian source packages: the library tests build real upstream trees (testing/libraries.py).
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/deb-src.sh
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' nox
  touch "$stamp"
fi

# The emscripten ports (-sUSE_ZLIB=1, -sUSE_SDL=2, ...), built once from Debian's sources into
# the service's emscripten cache (about about 4 minutes and 960 MB the first time; skipped
# while its inputs are unchanged). Needs root, like the deb-src entry above.
if [ "$(id -u)" -eq 0 ]; then
  .venv/bin/python -m emcc_trio.ports.install
fi
