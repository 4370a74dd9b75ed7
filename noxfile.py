"""nox sessions: lint, typecheck, tests, cgroup2 (the v2 driver in a VM)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

TEST_DEPS = ("-e", ".[test]")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("mypy", "nox", *TEST_DEPS)
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The suite against real emcc, nsjail and cgroups (v1 here). Needs root."""
    session.install(*TEST_DEPS)
    session.run("pytest", *session.posargs, env={"EMCC_TRIO_REQUIRE_REAL": "1"})
