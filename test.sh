#!/usr/bin/env bash
# Install what is missing, then run lint, type checks, the test suite and the cgroup v2 VM tests.
# Pass nox sessions to run fewer, e.g. `./test.sh -s tests`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
if (($#)); then
  exec .venv/bin/nox "$@"
fi
exec .venv/bin/nox -s lint typecheck tests cgroup2
