"""Fixtures: real servers, real emcc, real Redis (the helpers live in `emcc_trio.testing`).

A failing test shows the logs of the servers it started (the tail of each)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from emcc_trio.testing.harness import MakeServer, Server, server_config, start_server
from emcc_trio.testing.redis import RedisServer, SentinelSetup

_LOG_TAIL_CHARS = 12_000


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[MakeServer]:
    servers: list[Server] = []
    counter = iter(range(1000))

    def make(workdir: Path | None = None, **overrides: Any) -> Server:
        """A server in a new dir, or restarted in `workdir` (for crash recovery)."""
        workdir = workdir or tmp_path / f"server{next(counter)}"
        server = start_server(workdir, server_config(workdir, **overrides))
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc.poll() is None:
            try:
                server.stop(timeout=30)
            except subprocess.TimeoutExpired:
                server.proc.kill()


@pytest.fixture
def server(make_server: MakeServer) -> Server:
    return make_server()


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A dir nsjail's unprivileged outside user can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="emcc-trio-jail-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path / "sentinel-setup")
    setup.workdir.mkdir()
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _server_logs(item: pytest.Item) -> dict[Path, str]:
    """The logs of the servers a test started: below its tmp_path, and those of any Server
    it was handed (module-scoped ones live elsewhere)."""
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    paths: set[Path] = set()
    tmp_path = funcargs.get("tmp_path")
    if isinstance(tmp_path, Path):
        paths.update(tmp_path.glob("**/server*.log"))
    paths.update(value.log_path for value in funcargs.values() if isinstance(value, Server))
    logs = {}
    for path in sorted(paths):
        try:
            logs[path] = path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError:
            continue
    return logs


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for path, text in _server_logs(item).items():
            report.sections.append((f"server log {path}", text))
    return report
