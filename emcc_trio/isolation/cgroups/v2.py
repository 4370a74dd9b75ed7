"""The cgroup v2 driver: one unified subtree (delegated by systemd on production hosts),
with the no-internal-processes rule kept: jobs live in leaves only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import attrs

from emcc_trio.isolation.cgroups.base import (
    CGROUP_ROOT_MOUNT,
    CLIENT_PREFIX,
    CPU_PERIOD_US,
    Caps,
    CgroupError,
    client_group_name,
    group_members,
    kill_members,
    own_groups,
    read,
    read_int,
    read_keyed,
    rmdir_when_empty,
    subdirs,
    write,
)
from emcc_trio.isolation.cgroups.budget import (
    BudgetGroup,
    groups_above,
)
from emcc_trio.models import Usage

# Every client the same weight: the default, written so no inherited setting changes it.
_CLIENT_CPU_WEIGHT_V2: Final = "100"


@attrs.frozen
class _V2Group:
    path: Path
    client_group: Path | None = None

    @property
    def procs_files(self) -> Sequence[Path]:
        return (self.path / "cgroup.procs",)

    def usage(self) -> Usage:
        cpu = read_keyed(self.path / "cpu.stat")
        usage_usec = cpu.get("usage_usec")
        return Usage(
            peak_memory_bytes=read_int(self.path / "memory.peak"),
            cpu_seconds=None if usage_usec is None else usage_usec / 1e6,
            peak_pids=read_int(self.path / "pids.peak"),
            oom_kills=read_keyed(self.path / "memory.events").get("oom_kill", 0),
            pids_limit_hits=read_keyed(self.path / "pids.events").get("max", 0),
            cpu_throttled=cpu.get("nr_throttled", 0),
        )

    def pids(self) -> set[int]:
        return group_members(self.path)

    def kill(self) -> None:
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        else:
            kill_members(self.path)

    async def kill_and_remove(self) -> None:
        self.kill()
        await rmdir_when_empty([self.path])
        if self.client_group is not None:
            with contextlib.suppress(OSError):  # busy: the client has other jobs
                self.client_group.rmdir()


@attrs.define
class V2Driver:
    """cgroup v2: `root` is the service's delegated subtree.

    The no-internal-processes rule forbids processes in a group whose controllers are
    enabled for children, so the server moves itself into `root/server` and jobs live
    in `root/jobs/client-<hash>/<id>`.
    """

    root: Path
    name: str = "v2"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def setup(self) -> None:
        if not (self.root / "cgroup.controllers").exists():
            raise CgroupError(f"{self.root} is not a cgroup v2 directory")
        available = set(read(self.root / "cgroup.controllers").split())
        missing = {"memory", "cpu", "pids"} - available
        if missing:
            raise CgroupError(
                f"controllers {', '.join(sorted(missing))} are not delegated to {self.root}"
            )
        server = self.root / "server"
        server.mkdir(exist_ok=True)
        for pid in group_members(self.root):
            with contextlib.suppress(ProcessLookupError, CgroupError):
                write(server / "cgroup.procs", str(pid))
        write(self.root / "cgroup.subtree_control", "+memory +cpu +pids")
        self.jobs.mkdir(exist_ok=True)
        write(self.jobs / "cgroup.subtree_control", "+memory +cpu +pids")

    def _client_group(self, client: str) -> Path:
        group = self.jobs / client_group_name(client)
        if not group.is_dir():
            group.mkdir()
            write(group / "cpu.weight", _CLIENT_CPU_WEIGHT_V2)
            write(group / "cgroup.subtree_control", "+memory +cpu +pids")
        return group

    def create(self, job_id: str, caps: Caps, client: str = "") -> _V2Group:
        client_group = self._client_group(client)
        path = client_group / job_id
        path.mkdir()
        group = _V2Group(path, client_group)
        try:
            write(path / "memory.max", str(caps.memory_bytes))
            if (path / "memory.swap.max").exists():
                write(path / "memory.swap.max", "0")
            write(path / "cpu.max", f"{int(caps.cpu_max * CPU_PERIOD_US)} {CPU_PERIOD_US}")
            write(path / "pids.max", str(caps.pids_max))
        except CgroupError:
            path.rmdir()
            with contextlib.suppress(OSError):
                client_group.rmdir()
            raise
        return group

    async def recover(self) -> list[str]:
        cleaned = []
        for path in subdirs(self.jobs):
            if not path.name.startswith(CLIENT_PREFIX):
                await _V2Group(path).kill_and_remove()
                cleaned.append(str(path))
                continue
            for job in subdirs(path):
                await _V2Group(job).kill_and_remove()
                cleaned.append(str(job))
            await rmdir_when_empty([path])
        return cleaned

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.jobs.rmdir()

    def budget_group(self) -> BudgetGroup:
        # root/jobs, not root: the server's own memory (in root/server) is not the jobs'
        # budget, and root's memory.max may be the operator's or systemd's (MemoryMax=).
        return BudgetGroup(
            path=self.jobs,
            limit_name="memory.max",
            usage_name="memory.current",
            unlimited="max",
            enclosing=groups_above(self.jobs, CGROUP_ROOT_MOUNT, "memory.max"),
        )


# --- v1 -------------------------------------------------------------------------------------


def v2_candidates(configured_root: Path) -> Iterator[Path]:
    """The configured root, then this process's own group if it is delegated to it alone
    (as systemd's Delegate=yes does): never a group shared with other processes."""
    yield configured_root
    own = own_groups().get("", "/")
    own_path = CGROUP_ROOT_MOUNT / own.lstrip("/")
    me = {os.getpid()}
    delegated_to_us = group_members(own_path) <= me or group_members(own_path / "server") == me
    if own != "/" and (own_path / "cgroup.controllers").exists() and delegated_to_us:
        yield own_path
