"""The cgroup v1 driver: one group per controller hierarchy (memory, cpu, cpuacct, pids,
freezer), below the server's own group in each; hybrid hosts such as this test machine."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
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
    v1_mounts,
    write,
)
from emcc_trio.isolation.cgroups.budget import (
    BudgetGroup,
    groups_above,
)
from emcc_trio.models import Usage

_V1_CONTROLLERS: Final = ("memory", "cpu", "cpuacct", "pids", "freezer")
# Every client the same weight: the default, written so no inherited setting changes it.
_CLIENT_CPU_SHARES_V1: Final = "1024"


@attrs.frozen
class _V1Group:
    dirs: dict[str, Path]  # controller -> this job's group in that hierarchy
    client_dirs: tuple[Path, ...] = ()  # its client's group in each hierarchy

    @property
    def procs_files(self) -> Sequence[Path]:
        return tuple(d / "cgroup.procs" for d in self.dirs.values())

    def usage(self) -> Usage:
        memory, cpu, cpuacct, pids = (
            self.dirs["memory"],
            self.dirs["cpu"],
            self.dirs["cpuacct"],
            self.dirs["pids"],
        )
        usage_ns = read_int(cpuacct / "cpuacct.usage")
        return Usage(
            peak_memory_bytes=read_int(memory / "memory.max_usage_in_bytes"),
            cpu_seconds=None if usage_ns is None else usage_ns / 1e9,
            peak_pids=read_int(pids / "pids.peak"),
            oom_kills=read_keyed(memory / "memory.oom_control").get("oom_kill", 0),
            pids_limit_hits=read_keyed(pids / "pids.events").get("max", 0),
            cpu_throttled=read_keyed(cpu / "cpu.stat").get("nr_throttled", 0),
        )

    def pids(self) -> set[int]:
        members: set[int] = set()
        for group in self.dirs.values():
            members |= group_members(group)
        return members

    def kill(self) -> None:
        # Freeze first so nothing forks between reading cgroup.procs and the kills.
        freezer = self.dirs.get("freezer")
        if freezer is not None and (freezer / "freezer.state").exists():
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("FROZEN")
        for group in self.dirs.values():
            kill_members(group)
        if freezer is not None:
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("THAWED")

    async def kill_and_remove(self) -> None:
        self.kill()
        await rmdir_when_empty(list(self.dirs.values()))
        for client_dir in self.client_dirs:
            with contextlib.suppress(OSError):  # busy: the client has other jobs
                client_dir.rmdir()


@attrs.define
class V1Driver:
    """cgroup v1 (hybrid hosts): one job group per controller hierarchy.

    Job groups live below this process's own group in each hierarchy, in a subtree named
    after the instance, so two servers on one host never touch each other's jobs.
    """

    tag: str
    name: str = "v1"
    bases: dict[str, Path] = attrs.field(factory=dict)
    memory_mount: Path = CGROUP_ROOT_MOUNT / "memory"

    def setup(self) -> None:
        mounts = v1_mounts()
        own = own_groups()
        missing = [c for c in _V1_CONTROLLERS if c not in mounts]
        if missing:
            raise CgroupError(f"v1 controllers not mounted: {', '.join(missing)}")
        for controller in _V1_CONTROLLERS:
            base = mounts[controller] / own.get(controller, "/").lstrip("/") / self.tag
            try:
                base.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CgroupError(f"cannot create {base}: {exc.strerror}") from exc
            self.bases[controller] = base
        self.memory_mount = mounts["memory"]
        probe = self.bases["memory"] / "memory.limit_in_bytes"
        if not probe.exists():
            raise CgroupError(f"{probe} is missing: the memory controller cannot cap jobs")
        # Without hierarchy (the pre-5.11 default outside systemd) the base group's limit
        # would not cover the job groups below it: the budget must.
        hierarchy = self.bases["memory"] / "memory.use_hierarchy"
        if hierarchy.exists() and read(hierarchy) != "1":
            write(hierarchy, "1")

    def create(self, job_id: str, caps: Caps, client: str = "") -> _V1Group:
        dirs: dict[str, Path] = {}
        client_name = client_group_name(client)
        client_dirs = tuple(base / client_name for base in self.bases.values())
        try:
            for controller, base in self.bases.items():
                client_dir = base / client_name
                if not client_dir.is_dir():
                    client_dir.mkdir()
                    if controller == "cpu":
                        write(client_dir / "cpu.shares", _CLIENT_CPU_SHARES_V1)
                path = client_dir / job_id
                path.mkdir()
                dirs[controller] = path
            memory = dirs["memory"]
            write(memory / "memory.limit_in_bytes", str(caps.memory_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                write(memory / "memory.memsw.limit_in_bytes", str(caps.memory_bytes))
            cpu = dirs["cpu"]
            write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            write(cpu / "cpu.cfs_quota_us", str(int(caps.cpu_max * CPU_PERIOD_US)))
            write(dirs["pids"] / "pids.max", str(caps.pids_max))
        except (OSError, CgroupError) as exc:
            for path in [*dirs.values(), *client_dirs]:
                with contextlib.suppress(OSError):
                    path.rmdir()
            if isinstance(exc, CgroupError):
                raise
            raise CgroupError(f"cannot create the job group: {exc}") from exc
        return _V1Group(dirs, client_dirs)

    async def recover(self) -> list[str]:
        # relative path of each job group ("client-x/<id>", or "<id>" from before clients)
        jobs: set[str] = set()
        clients: set[str] = set()
        for base in self.bases.values():
            for path in subdirs(base):
                if path.name.startswith(CLIENT_PREFIX):
                    clients.add(path.name)
                    jobs |= {f"{path.name}/{job.name}" for job in subdirs(path)}
                else:
                    jobs.add(path.name)
        for job in sorted(jobs):
            await _V1Group(
                {c: b / job for c, b in self.bases.items() if (b / job).is_dir()}
            ).kill_and_remove()
        for name in sorted(clients):
            await rmdir_when_empty([b / name for b in self.bases.values() if (b / name).is_dir()])
        return sorted(job.rpartition("/")[2] for job in jobs)

    def close(self) -> None:
        for base in self.bases.values():
            with contextlib.suppress(OSError):
                base.rmdir()

    def budget_group(self) -> BudgetGroup:
        # The instance's base group in the memory hierarchy: it holds every job group and
        # nothing else, and `setup` made sure its limit covers its children.
        base = self.bases["memory"]
        return BudgetGroup(
            path=base,
            limit_name="memory.limit_in_bytes",
            usage_name="memory.usage_in_bytes",
            unlimited="-1",
            enclosing=groups_above(base, self.memory_mount, "memory.limit_in_bytes"),
        )
