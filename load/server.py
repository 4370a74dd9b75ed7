"""A real server for the load test: start it, watch its memory, find what its jobs left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from emcc_trio.isolation.leftovers import job_cgroups, job_processes
from load.mix import REPO

START_SECONDS = 60.0


@attrs.define
class LoadServer:
    proc: subprocess.Popen[bytes]
    url: str
    workdir: Path
    config: Mapping[str, Any]

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def jobs_dir(self) -> Path:
        base = self.workdir / str(self.config.get("baseDir", "."))
        return base / str(self.config.get("jobsDir", "jobs"))

    def rss_mb(self) -> float:
        """The server's resident memory, from /proc (0 once it has gone)."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_events(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.log_path.read_text().splitlines()
            if line.startswith("{")
        ]

    @property
    def artifacts_dir(self) -> Path:
        base = self.workdir / str(self.config.get("baseDir", "."))
        return base / str(self.config.get("artifactsDir", "artifacts"))

    def leftovers(self) -> dict[str, list[str]]:
        """Everything finished jobs must not leave: processes, job dirs, job cgroups, and
        half-published artifacts (hidden staging dirs)."""
        jobs, store = self.jobs_dir, self.artifacts_dir
        return {
            "processes": job_processes(self.proc.pid, jobs),
            "job_dirs": sorted(p.name for p in jobs.iterdir()) if jobs.exists() else [],
            "cgroups": [str(p) for p in job_cgroups(jobs)],
            "staging": sorted(p.name for p in store.glob(".*")) if store.exists() else [],
        }

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; kill only if it does not exit in time (and say so)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -signal.SIGKILL


def load_config(workdir: Path, caps: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level config.json, with only the working dir, address and caps changed."""
    config: dict[str, Any] = json.loads((REPO / "config.json").read_text())
    config.update(caps)
    config.update(workingDir=str(workdir), addr="127.0.0.1:0")
    return config


def start(workdir: Path, config: Mapping[str, Any], prefix: Sequence[str] = ()) -> LoadServer:
    """Start `python -m emcc_trio serve` in `workdir`; return once it logged where it listens.
    `prefix` runs it through another command (`ip netns exec <name>`: on another host)."""
    (workdir / "config.json").write_text(json.dumps(config, indent=1))
    log_path = workdir / "server.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "emcc_trio", "serve", "--config", "config.json"],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LoadServer(proc=proc, url="", workdir=workdir, config=config)
    end = time.monotonic() + START_SECONDS
    while time.monotonic() < end:
        if url := _listening_url(log_path, offset):
            server.url = url
            return server
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    server.stop()
    raise SystemExit(f"the server did not listen within {START_SECONDS} s")


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
