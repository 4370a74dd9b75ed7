#!/usr/bin/env bash
# Enable Debian source packages (deb-src) so that `apt-get source --download-only` can fetch the
# upstream tarballs of the library tests (emcc_trio/testing/libraries.py). Run as root. Safe to
# run again: when a deb-src entry is already there it changes nothing and skips the update.
# Only downloads are needed, so dpkg-dev (which `apt-get source` wants for unpacking) is not.
set -euo pipefail

deb822=/etc/apt/sources.list.d/debian.sources
ours=/etc/apt/sources.list.d/emcc-trio-deb-src.sources
oneline=/etc/apt/sources.list

has_deb_src() {
  # A one-line `deb-src ...` entry, or a deb822 stanza whose Types include deb-src.
  local files=()
  [ -f "$oneline" ] && files+=("$oneline")
  shopt -s nullglob
  files+=(/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  shopt -u nullglob
  ((${#files[@]})) || return 1
  grep -Eqs '^[[:space:]]*deb-src[[:space:]]' "${files[@]}" && return 0
  grep -Eiqs '^[[:space:]]*Types:.*[[:space:]]deb-src([[:space:]]|$)' "${files[@]}"
}

if has_deb_src; then
  echo "deb-src: already enabled" >&2
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deb-src: run as root" >&2
  exit 1
fi

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

if [ -f "$deb822" ]; then
  # Copy each stanza of Types: deb with its URIs/Suites/Components/Signed-By (a multi-line
  # Signed-By key block included), as Types: deb-src. Stanzas are separated by blank lines.
  awk '
    function flush() {
      if (is_deb && body != "") printf "%sTypes: deb-src\n%s", (n++ ? "\n" : ""), body
      body = ""; is_deb = 0; keep = 0
    }
    /^[[:space:]]*$/ { flush(); next }
    /^[[:space:]]*#/ { next }
    /^[[:space:]]/ { if (keep) body = body $0 "\n"; next }   # continuation line
    {
      field = tolower($0); sub(/:.*/, "", field)
      keep = 0
      if (field == "types") {
        split(substr($0, index($0, ":") + 1), types, /[[:space:]]+/)
        for (i in types) if (types[i] == "deb") is_deb = 1
      } else if (field == "uris" || field == "suites" || field == "components" \
                 || field == "signed-by") {
        keep = 1; body = body $0 "\n"
      }
    }
    END { flush() }
  ' "$deb822" >"$tmp"
elif [ -f "$oneline" ]; then
  # One-line format: a deb-src line for every active deb line (options such as
  # [signed-by=...] kept), appended to sources.list itself.
  sed -nE 's/^[[:space:]]*deb([[:space:]])/deb-src\1/p' "$oneline" >"$tmp"
fi

if [ ! -s "$tmp" ]; then
  echo "deb-src: no 'deb' entry found in $deb822 or $oneline" >&2
  exit 1
fi

if [ -f "$deb822" ]; then
  install -m 0644 "$tmp" "$ours"
  echo "deb-src: wrote $ours" >&2
else
  { echo "# deb-src lines added by emcc_trio scripts/deb-src.sh"; cat "$tmp"; } >>"$oneline"
  echo "deb-src: added deb-src lines to $oneline" >&2
fi
apt-get update -qq
