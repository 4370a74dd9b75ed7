"""One run of a built artifact: its run dir, its jail (`nsjail/run.cfg`) and its own capped
cgroup, its separate stdout and stderr, how it ended, and its cleanup.

`Runner.run` is cancellation-safe as `Compiler.compile` is: however it ends, the run's
processes and cgroup are gone (run_job) and its dir is removed before control leaves it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from contextlib import aclosing
from pathlib import Path
from typing import Final

import attrs
import trio

from emcc_trio.errors import InternalError
from emcc_trio.execute.options import RunLimits, RunOptions
from emcc_trio.isolation.cgroups import Caps, Driver
from emcc_trio.isolation.runner import STATUS_FD, JobResult, Limits, run_job
from emcc_trio.isolation.sandbox import JOB_MOUNT, Sandbox
from emcc_trio.models import Limit, RunResult
from emcc_trio.storage.base import Store

log = logging.getLogger("emcc_trio.runs")
SCRIPT: Final = Path(__file__).parent / "jailside" / "runner.js"
JAIL_RUNNER_DIR: Final = "/emcc-trio/run"
NODE: Final = "/usr/bin/node"
# What a run dir holds: the jail's view (read-only inside) and nsjail's own log beside it.
_JAIL_SUBDIR: Final = "job"
_LOG_FILE: Final = "nsjail.log"
_MAX_LOG_BYTES: Final = 64 * 1024
_CLEANUP_SECONDS: Final = 10.0
# A run is one thread of wasm (and node's own few): one CPU is all it can use.
RUN_CPU_MAX: Final = 1.0
# Signals the runner may report (what a trap or abort() would have been natively).
_SIGNALS: Final = frozenset({"SIGABRT", "SIGSEGV", "SIGFPE", "SIGILL"})
_SIGNALLED_BASE: Final = 128  # nsjail exits 128+N when its child died of signal N


class RunStartError(InternalError):
    """The run's jail could not be set up (the service's trouble, not the program's)."""


def install(directory: Path) -> Path:
    """Copy the runner where the jail's unprivileged user can read it; returns the dir."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    temp = directory / f".{SCRIPT.name}.{os.getpid()}.tmp"
    shutil.copyfile(SCRIPT, temp)
    temp.chmod(0o644)
    temp.rename(directory / SCRIPT.name)
    return directory


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def outcome(
    status: bytes | None, exit_code: int | None, limit: Limit | None
) -> tuple[int | None, str | None]:
    """(exit code, signal) from what the runner reported on its status pipe; when it reported
    nothing valid (a cap killed it, or the program ended node itself), from nsjail's status."""
    try:
        reported = json.loads(status or b"")
    except ValueError:
        reported = None
    if isinstance(reported, dict) and limit is None:
        code = reported.get("exitCode")
        if isinstance(code, int) and not isinstance(code, bool):
            return code, None
        if reported.get("signal") in _SIGNALS:
            return None, str(reported["signal"])
    if limit is not None or exit_code is None:
        return None, "SIGKILL"
    if exit_code > _SIGNALLED_BASE:
        return None, signal_name(exit_code - _SIGNALLED_BASE)
    return exit_code, None


def _read_log(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            return stream.read(_MAX_LOG_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


@attrs.frozen
class Runner:
    sandbox: Sandbox  # opened with run.cfg
    driver: Driver | None
    jobs_dir: Path
    directory: Path  # the installed runner (see `install`)
    limits: RunLimits  # the server's caps (a request may ask for less)

    def _prepare(self, run_dir: Path, options: RunOptions) -> Path:
        run_dir.mkdir(mode=0o711)
        jail = run_dir / _JAIL_SUBDIR
        jail.mkdir(mode=0o755)
        (jail / "stdin").write_bytes(options.stdin)
        (jail / "argv.json").write_text(json.dumps(list(options.argv)))
        for path in jail.iterdir():
            path.chmod(0o644)
        return jail

    async def _copy(self, store: Store, artifact_id: str, name: str, target: Path) -> None:
        found = await store.artifact(artifact_id, name)
        if found is None:
            raise InternalError(f"the artifact's {name} is gone from the store")
        async with aclosing(found.chunks()) as chunks, await trio.open_file(target, "wb") as out:
            async for chunk in chunks:
                await out.write(chunk)
        await trio.to_thread.run_sync(target.chmod, 0o644)

    async def run(
        self,
        store: Store,
        artifact_id: str,
        files: tuple[str, ...],
        options: RunOptions,
        run_id: str,
        client: str = "",
    ) -> RunResult:
        """Run the stored artifact `artifact_id` (its `files`) once with `options`."""
        run_dir = self.jobs_dir / run_id
        limits = options.limits
        try:
            jail = await trio.to_thread.run_sync(self._prepare, run_dir, options)
            for name in files:
                await self._copy(store, artifact_id, name, jail / name)
            argv = self.sandbox.wrap(
                [NODE, f"{JAIL_RUNNER_DIR}/{SCRIPT.name}", JOB_MOUNT, STATUS_FD],
                jail,
                limits.timeout_seconds,
                job_read_only=True,
                read_only=[(self.directory, JAIL_RUNNER_DIR)],
                log_file=run_dir / _LOG_FILE,
                pass_fds=[STATUS_FD],
            )
            result = await run_job(
                argv,
                job_id=run_id,
                cwd=run_dir,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                limits=Limits(
                    timeout_seconds=limits.timeout_seconds,
                    cpu_seconds=limits.cpu_seconds,
                    max_output_bytes=limits.output_bytes,
                    caps=Caps(
                        memory_bytes=limits.memory_bytes,
                        cpu_max=RUN_CPU_MAX,
                        pids_max=limits.pids_max,
                    ),
                ),
                driver=self.driver,
                client=client,
                separate_stderr=True,
                status_pipe=True,
            )
            nsjail_log = await trio.to_thread.run_sync(_read_log, run_dir / _LOG_FILE)
            if self.sandbox.failed(result, nsjail_log):
                raise RunStartError(f"the run's jail failed to start: {nsjail_log.strip()}")
            return _result(result)
        finally:
            with trio.move_on_after(_CLEANUP_SECONDS, shield=True) as scope:
                await trio.to_thread.run_sync(shutil.rmtree, run_dir, True, abandon_on_cancel=True)
            if scope.cancelled_caught:
                log.warning("run dir removal overran", extra={"fields": {"dir": str(run_dir)}})


def _result(result: JobResult) -> RunResult:
    exit_code, signal_ = outcome(result.status, result.exit_code, result.limit)
    return RunResult(
        stdout=result.stdout,
        stderr=result.stderr or b"",
        stdout_truncated=result.output_truncated,
        stderr_truncated=result.stderr_truncated,
        exit_code=exit_code,
        signal=signal_,
        limit=result.limit,
        usage=result.usage,
        duration_seconds=result.duration_seconds,
    )
