#!/usr/bin/env bash
# Install what is missing, then run lint, type checks, the documentation build, the test suite,
# the cgroup v2 VM tests, the browser tests, a short cluster run and a short load test. Pass nox
# sessions to run fewer, e.g. `./test.sh -s tests`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
if (($#)); then
  exec .venv/bin/nox "$@"
fi
.venv/bin/nox -s lint typecheck docs tests cgroup2 browser
# Three replicas, Redis and HAProxy, with a kill, a cut link and a Redis outage: about 2.5 minutes.
.venv/bin/nox -s cluster -- --seconds 40 --max-requests 300
# The short load run: about a minute of sending, every check of the full one.
exec .venv/bin/nox -s load -- --seconds 45 --max-requests 250
