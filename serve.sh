#!/usr/bin/env bash
# Start emcc_trio with the top-level config.json, installing what is missing first.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
exec .venv/bin/emcc-trio serve --config config.json "$@"
