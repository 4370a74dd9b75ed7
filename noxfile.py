"""nox sessions: lint, typecheck, unit (seconds, no root, no emcc), docs, tests, cgroup2 (the v2
driver in a VM), browser, load, cluster, bench."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

TEST_DEPS = ("-e", ".[test]")
# Pinned: a new linter release must not turn a green main red on its own.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
IMPORT_LINTER = "import-linter==2.17"
# The documentation site: Sphinx with MyST (Markdown sources) and the furo theme.
DOCS_DEPS = ("sphinx==9.0.4", "myst-parser==5.2.0", "furo==2025.12.19", "docutils==0.22.4")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and the layers: import-linter checks pyproject's contracts (imports flow
    api -> compile -> {isolation, storage}; only api imports the HTTP libraries)."""
    session.install(RUFF, IMPORT_LINTER, "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def unit(session: nox.Session) -> None:
    """The fast loop: in-process route, policy, config and cache tests (marked `unit`), with a
    stand-in compiler for routing and error mapping only. Seconds; needs neither root nor
    emcc. Everything that involves emcc, nsjail or cgroups runs in `tests`."""
    session.install(*TEST_DEPS)
    session.run("pytest", "-m", "unit", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(MYPY, "nox", *DOCS_DEPS, *TEST_DEPS)
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (docs/ into docs/_build/html) from a fresh environment,
    every warning an error: a broken link or cross-reference fails the build. The reference
    pages are generated from the code (config keys, argument policy, metrics). External
    links are not checked (no network here)."""
    session.install(*DOCS_DEPS, "-e", ".")
    session.run(
        "sphinx-build",
        "--fail-on-warning",
        "--keep-going",
        "--nitpicky",
        "--fresh-env",
        "--builder",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


@nox.session
def cgroup2(session: nox.Session) -> None:
    """The tests marked `cgroup2`, with the v2 driver, in a VM with a real cgroup v2 (virtme-ng,
    no KVM): the driver's caps, the memory budget, and the server end to end with nsjail and
    gating. A few minutes: a hello world compiles in about 20 s under emulation."""
    session.run("sh", "tools/vm/install.sh", external=True)
    session.install("virtme-ng", *TEST_DEPS)
    rwdir = session.create_tmp()
    python = os.path.join(session.bin, "python")
    session.run(
        python,
        "tools/vm/run_in_vm.py",
        "--rwdir",
        rwdir,
        "--memory",
        "3G",
        "--cpus",
        "2",
        "--timeout",
        "1200",
        "--env",
        "EMCC_TRIO_TEST_DRIVER=v2",
        "--env",
        "EMCC_TRIO_TEST_V2_ROOT=/sys/fs/cgroup/emcc-trio-test",
        "--env",
        "NODE_PATH=/usr/share/nodejs",
        "--env",
        f"PATH={session.bin}:/usr/local/bin:/usr/bin:/bin",
        "--",
        python,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-m",
        "cgroup2",
        "--durations=0",
        *session.posargs,
    )


@nox.session
def tests(session: nox.Session) -> None:
    """The suite against real emcc, nsjail and cgroups (v1 here). Needs root. The browser tests
    have their own session, which installs Chromium."""
    session.install(*TEST_DEPS)
    # test_cgroup2_server.py needs a pure cgroup v2: the cgroup2 session runs it in the VM.
    session.run(
        "pytest", "-m", "not browser", "--ignore=tests/test_cgroup2_server.py", *session.posargs
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Raw emcc vs the server (no caps, cgroup, cgroup + nsjail, cache off) as latency ratios;
    throughput at concurrency 1-8 vs parallel raw emcc; cache-hit latency. `-- --quick`.
    `-- --cluster`: 2 replicas sharing Redis behind HAProxy vs 1 (cache hits with wrk, cold
    compiles)."""
    if "--cluster" in session.posargs:
        apt_install(session, {"redis-server": "redis-server", "haproxy": "haproxy", "wrk": "wrk"})
    session.install(*TEST_DEPS)
    session.run("python", "-m", "bench.bench", *session.posargs)


@nox.session
def load(session: nox.Session) -> None:
    """A real server under a bounded concurrent mix (compiles, bombs, bad requests, hang-ups);
    fails unless every cap held. `nox -s load -- --seconds 30` for a shorter run. Needs root."""
    session.install(*TEST_DEPS)
    session.run("python", "-m", "load.run", *session.posargs)


def apt_install(session: nox.Session, packages: dict[str, str]) -> None:
    """Install the Debian packages whose command (the value) is missing; needs root."""
    missing = [
        package
        for package, command in packages.items()
        if shutil.which(command, path="/usr/sbin:/usr/bin:/sbin:/bin") is None
    ]
    if not missing:
        return
    if os.geteuid() != 0:
        session.error(f"missing {' '.join(missing)}: apt-get install them (as root)")
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", external=True, env=apt_env)
    session.run("apt-get", "install", "-y", *missing, external=True, env=apt_env)


@nox.session
def cluster(session: nox.Session) -> None:
    """Three replicas, each in its own network namespace, sharing a real Redis behind HAProxy
    (deploy/haproxy.cfg), under the load mix while one is SIGKILLed, one is cut off and Redis
    stops. `-- --seconds 40` for a shorter run. Needs root."""
    apt_install(session, {"redis-server": "redis-server", "haproxy": "haproxy", "iproute2": "ip"})
    session.install(*TEST_DEPS)
    session.run("python", "-m", "load.cluster", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """The playground and CORS in Debian's Chromium (Playwright) and schemathesis against
    /openapi.json of a live server. Installs chromium with apt-get when root and missing;
    Playwright's own browser download is never used. Screenshots go to test-artifacts/.
    Needs root, like `tests`."""
    if not os.path.exists("/usr/bin/chromium"):
        if os.geteuid() != 0:
            session.error("/usr/bin/chromium is missing: apt-get install chromium (as root)")
        apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", external=True, env=apt_env)
        session.run("apt-get", "install", "-y", "chromium", external=True, env=apt_env)
    session.install(*TEST_DEPS)
    session.run(
        "pytest",
        "tests/test_playground.py",
        "tests/test_playground_flags.py",
        "tests/test_openapi.py",
        "tests/test_cors.py",
        *session.posargs,
        env={"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
    )
