"""What both drivers share: the caps, the `Driver` and `JobGroup` interfaces, and the
cgroupfs file helpers (reads and writes that never block on disk)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import attrs

from emcc_trio.models import Usage

if TYPE_CHECKING:
    from emcc_trio.isolation.cgroups.budget import BudgetGroup

CGROUP_ROOT_MOUNT: Final = Path("/sys/fs/cgroup")
CPU_PERIOD_US: Final = 100_000
UNLIMITED_V1: Final = 1 << 62  # v1 spells "no limit" as a huge page-rounded number
ENTER_SCRIPT: Final = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)
ENTER_FAILED_STATUS: Final = 125
CLIENT_PREFIX: Final = "client-"


class CgroupError(Exception):
    """A cgroup operation failed in a way that makes caps unenforceable."""


@attrs.frozen
class Caps:
    memory_bytes: int
    cpu_max: float  # CPUs
    pids_max: int


def enter_argv(procs_files: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """Wrap `argv` so the process joins the groups, then execs: no child is born outside."""
    return ["/bin/sh", "-c", ENTER_SCRIPT, "emcc-trio-enter", *map(str, procs_files), "--", *argv]


def client_group_name(client: str) -> str:
    """A client's group name: a hash, so no address or token name shows in cgroupfs."""
    digest = hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()
    return CLIENT_PREFIX + digest[:16]


def instance_tag(jobs_dir: Path) -> str:
    """A stable name for this server instance's subtree, derived from its jobs dir."""
    return "emcc-trio-" + hashlib.sha256(str(jobs_dir).encode()).hexdigest()[:12]


class JobGroup(Protocol):
    @property
    def procs_files(self) -> Sequence[Path]: ...

    def usage(self) -> Usage: ...

    def pids(self) -> set[int]: ...

    def kill(self) -> None: ...

    async def kill_and_remove(self) -> None: ...


class Driver(Protocol):
    name: str

    def create(self, job_id: str, caps: Caps, client: str = "") -> JobGroup: ...

    async def recover(self) -> list[str]: ...

    def close(self) -> None:
        """Remove this instance's (empty) subtree at shutdown."""
        ...

    def budget_group(self) -> BudgetGroup:
        """The group that holds every job group of this instance."""
        ...


def read(path: Path) -> str:
    return path.read_text().strip()


def read_int(path: Path) -> int | None:
    try:
        return int(read(path))
    except (OSError, ValueError):
        return None


def read_keyed(path: Path) -> dict[str, int]:
    """Parse `key value` lines (memory.events, cpu.stat, pids.events, memory.oom_control)."""
    result: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return result
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            result[key] = int(value)
    return result


def write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def subdirs(group: Path) -> list[Path]:
    try:
        return sorted(p for p in group.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def group_members(group: Path) -> set[int]:
    try:
        return {int(p) for p in (group / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def kill_members(group: Path) -> None:
    for pid in group_members(group):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def rmdir_when_empty(groups: Sequence[Path], deadline_seconds: float = 5.0) -> None:
    """rmdir each group, retrying while killed members are still exiting."""
    import trio

    end = time.monotonic() + deadline_seconds
    for group in groups:
        while True:
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > end:
                    raise CgroupError(f"cannot remove {group}: {exc.strerror}") from exc
                kill_members(group)
                await trio.sleep(0.01)


def own_groups() -> dict[str, str]:
    """controller (or "" for the v2 hierarchy) -> this process's group path."""
    groups: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def v1_mounts() -> dict[str, Path]:
    """controller -> mount point of each v1 hierarchy (from /proc/self/mountinfo)."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        mount_point = Path(left.split()[4])
        for option in fields[2].split(","):
            mounts.setdefault(option, mount_point)
    return mounts


def read_mem_total() -> int:
    """The machine's memory in bytes (MemTotal of /proc/meminfo)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise CgroupError("/proc/meminfo has no MemTotal")
