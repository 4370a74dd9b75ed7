"""A real `emcc-trio serve` as a subprocess: start it, talk to it, stop it, and find what its
jobs left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import httpx

from emcc_trio.isolation.leftovers import job_cgroups, job_processes

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
# Under the cgroup v2 VM's emulated CPU (nox -s cgroup2) the server starts far slower.
START_SECONDS = 600.0 if os.environ.get("RUN_IN_VM") else 60.0


class ServerStartError(Exception):
    """The server exited or did not listen in time; the message holds its log."""


def eventually(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def build_units(url: str) -> dict[str, float]:
    """The server's `emcc_trio_build_units_total` by `how`: units compiled and reused."""
    metrics = httpx.get(f"{url.rstrip('/')}/metrics").raise_for_status().text
    found = {}
    for how in ("compiled", "reused"):
        match = re.search(rf'^emcc_trio_build_units_total{{how="{how}"}} (\S+)$', metrics, re.M)
        found[how] = float(match[1]) if match else 0.0
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    workdir: Path
    log_path: Path
    config: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def v2_root(self) -> Path | None:
        """The delegated root of a server on the v2 driver (its job groups are below it)."""
        if self.config.get("cgroupDriver") != "v2":
            return None
        return Path(os.path.normpath(self.workdir / str(self.config["cgroupV2Root"])))

    @property
    def jobs_dir(self) -> Path:
        base = self.workdir / str(self.config.get("baseDir", "."))
        return Path(os.path.normpath(base / str(self.config.get("jobsDir", "jobs"))))

    @property
    def artifacts_dir(self) -> Path:
        base = self.workdir / str(self.config.get("baseDir", "."))
        return Path(os.path.normpath(base / str(self.config.get("artifactsDir", "artifacts"))))

    @property
    def address(self) -> tuple[str, int]:
        """Where to open a raw socket to the server."""
        url = urlsplit(self.url)
        assert url.hostname is not None
        assert url.port is not None
        return url.hostname, url.port

    def log(self) -> str:
        return self.log_path.read_text()

    def log_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def rss_mb(self) -> float:
        """The server's resident memory, from /proc (0 once it has gone)."""
        return self._status_mb("VmRSS")

    def peak_rss_mb(self) -> float:
        """The most resident memory the server has had since it started, or since the last
        `reset_peak_rss` (the kernel's high-water mark: no sampling can miss a peak)."""
        return self._status_mb("VmHWM")

    def reset_peak_rss(self) -> None:
        """Restart the high-water mark from the server's current resident memory (Linux's
        clear_refs 5; needs the right to write the server's /proc files, as root has)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def _status_mb(self, field: str) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def client(self, timeout: float = 180.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def compile(
        self,
        code: str,
        kind: str = "c",
        args: list[str] | None = None,
        timeout: float = 180.0,
        files: dict[str, str] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"code": code, "type": kind}
        if args is not None:
            body["args"] = args
        if files is not None:
            body["files"] = files
        with self.client(timeout) as client:
            return client.post("/compile", json=body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait; kill only if it does not exit in time (then -SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -signal.SIGKILL

    def job_processes(self) -> list[str]:
        return job_processes(self.proc.pid, self.jobs_dir)

    def leftovers(self, staging: bool = False) -> dict[str, list[str]]:
        """Everything a finished job must not leave behind; with `staging`, half-published
        artifacts (hidden staging dirs) too."""
        jobs, store = self.jobs_dir, self.artifacts_dir
        found = {
            "processes": self.job_processes(),
            "job_dirs": sorted(p.name for p in jobs.iterdir()) if jobs.exists() else [],
            "cgroups": [str(p) for p in job_cgroups(jobs, self.v2_root)],
        }
        if staging:
            found["staging"] = sorted(p.name for p in store.glob(".*")) if store.exists() else []
        return found

    def memo_fills_pending(self) -> float | None:
        """The memos' fills still to run (their jobs are this server's own); None when the
        server does not answer."""
        try:
            text = httpx.get(self.url + "/metrics", timeout=10).text
        except httpx.HTTPError:
            return None
        found = re.search(r"^emcc_trio_memo_fills_pending (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def settle_memos(self, timeout: float = 120.0) -> None:
        """Wait for the memos' fills: a compile that missed a memo leaves one behind it, a
        job of the server's own."""
        eventually(lambda: not self.memo_fills_pending(), timeout, "the memos' fills")

    def assert_clean(self, timeout: float = 2.0) -> None:
        self.settle_memos()
        eventually(
            lambda: not any(self.leftovers().values()),
            timeout,
            f"no leftovers (still: {self.leftovers()})",
        )


def start_server(
    workdir: Path,
    config: Mapping[str, Any],
    *,
    config_name: str = "config.json",
    log_name: str | None = None,
    prefix: Sequence[str] = (),
    start_seconds: float = START_SECONDS,
) -> Server:
    """Start `python -m emcc_trio serve` in `workdir`; return once it logged where it listens.

    Each start logs to a new `server-N.log`, unless `log_name` names a log to append to (a
    restart then appends). `prefix` runs it through another command (`ip netns exec <name>`:
    on another host). Raises ServerStartError with the log when it exits or never listens.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / config_name
    config_path.write_text(json.dumps(config, indent=1))
    if log_name is None:
        log_path = workdir / f"server-{len(list(workdir.glob('server-*.log')))}.log"
    else:
        log_path = workdir / log_name
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "emcc_trio", "serve", "--config", str(config_path)],
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc=proc, url="", workdir=workdir, log_path=log_path, config=dict(config))
    end = time.monotonic() + start_seconds
    while time.monotonic() < end:
        if url := _listening_url(log_path, offset):
            server.url = url
            return server
        if proc.poll() is not None:
            raise ServerStartError(f"server exited with {proc.returncode}:\n{server.log()}")
        time.sleep(0.05)
    server.stop()
    raise ServerStartError(f"the server did not listen within {start_seconds} s:\n{server.log()}")


def _listening_url(log_path: Path, offset: int) -> str:
    """Where the server listens, from its log past `offset` (a restart appends to the log)."""
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    for line in text.splitlines(keepends=True):
        # A line still being written is read again on the next poll.
        if line.startswith("{") and line.endswith("\n"):
            event = json.loads(line)
            if event.get("event") == "listening":
                return str(event["urls"][0])
    return ""


def serve_once(
    tmp_path: Path, config: Mapping[str, Any], **popen: Any
) -> subprocess.CompletedProcess[str]:
    """Run `emcc-trio serve` with `config` in the foreground (for servers that must refuse to
    start); `popen` goes to subprocess.run."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "emcc_trio", "serve", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **popen,
    )


def server_config(workdir: Path, **overrides: Any) -> dict[str, Any]:
    """The settings tests run with unless they say otherwise: real cgroups, no jail."""
    config: dict[str, Any] = {
        "workingDir": str(workdir),
        "addr": "127.0.0.1:0",
        # In the cgroup v2 VM (`nox -s cgroup2`) the servers use the v2 driver.
        "cgroupDriver": os.environ.get("EMCC_TRIO_TEST_DRIVER", "auto"),
        "cgroupV2Root": os.environ.get("EMCC_TRIO_TEST_V2_ROOT", "cgroup"),
        "nsjailEnabled": False,
        "artifactTTLDays": 3,
    }
    config.update(overrides)
    return config


MakeServer = Callable[..., Server]
