"""Per-job cgroups behind one small interface, with a v2 and a v1 driver.

A driver owns one subtree for this server instance. For each job it creates a group with
hard caps, hands out the `cgroup.procs` files a process must join *before it executes
anything* (see `enter_argv`), reads usage, kills every member, and removes the group.
`recover` removes what an earlier run of the same instance left behind. Every job group sits
in one budget group (`budget_group`), whose memory limit bounds all jobs together.

Job groups sit one level below a group per client (`client-<hash>`), each with the same CPU
weight, so that the kernel shares the CPU between clients, not between jobs: a client's
many jobs split its share among themselves. A client group goes when its last job does.

cgroupfs is a kernel pseudo-filesystem: reads and writes complete without disk I/O, so
the async code calls these methods directly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol

import attrs

CGROUP_ROOT_MOUNT: Final = Path("/sys/fs/cgroup")
_V1_CONTROLLERS: Final = ("memory", "cpu", "cpuacct", "pids", "freezer")
_CPU_PERIOD_US: Final = 100_000
_UNLIMITED_V1: Final = 1 << 62  # v1 spells "no limit" as a huge page-rounded number
_ENTER_SCRIPT: Final = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)
ENTER_FAILED_STATUS: Final = 125
CLIENT_PREFIX: Final = "client-"
# Every client the same weight: the defaults, written so no inherited setting changes them.
_CLIENT_CPU_WEIGHT_V2: Final = "100"
_CLIENT_CPU_SHARES_V1: Final = "1024"


class CgroupError(Exception):
    """A cgroup operation failed in a way that makes caps unenforceable."""


@attrs.frozen
class Caps:
    memory_bytes: int
    cpu_max: float  # CPUs
    pids_max: int


@attrs.frozen
class Usage:
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    peak_pids: int | None = None
    oom_kills: int = 0
    pids_limit_hits: int = 0
    cpu_throttled: int = 0


def enter_argv(procs_files: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """Wrap `argv` so the process joins the groups, then execs: no child is born outside."""
    return ["/bin/sh", "-c", _ENTER_SCRIPT, "emcc-trio-enter", *map(str, procs_files), "--", *argv]


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


def _read(path: Path) -> str:
    return path.read_text().strip()


def _read_int(path: Path) -> int | None:
    try:
        return int(_read(path))
    except (OSError, ValueError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
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


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _subdirs(group: Path) -> list[Path]:
    try:
        return sorted(p for p in group.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def _members(group: Path) -> set[int]:
    try:
        return {int(p) for p in (group / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _kill_members(group: Path) -> None:
    for pid in _members(group):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _rmdir_when_empty(groups: Sequence[Path], deadline_seconds: float = 5.0) -> None:
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
                _kill_members(group)
                await trio.sleep(0.01)


def _own_groups() -> dict[str, str]:
    """controller (or "" for the v2 hierarchy) -> this process's group path."""
    groups: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _v1_mounts() -> dict[str, Path]:
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


@attrs.frozen
class BudgetGroup:
    """The group that holds every job group: its memory limit bounds all jobs together.

    `enclosing` are the groups above it, nearest first, that have a limit file (the groups
    the operator or systemd may have limited).
    """

    path: Path
    limit_name: str  # memory.max (v2) or memory.limit_in_bytes (v1)
    usage_name: str  # memory.current (v2) or memory.usage_in_bytes (v1)
    unlimited: str  # what the limit file takes for "no limit"
    enclosing: tuple[Path, ...]

    @property
    def files(self) -> tuple[Path, Path]:
        """(limit file, usage file)."""
        return self.path / self.limit_name, self.path / self.usage_name

    def parent_files(self) -> tuple[Path, Path] | None:
        """(limit file, usage file) of the nearest enclosing group, if any."""
        if not self.enclosing:
            return None
        return self.enclosing[0] / self.limit_name, self.enclosing[0] / self.usage_name

    def set_limit(self, limit_bytes: int | None) -> None:
        """Write the limit; None lifts it (the enclosing groups still bound the jobs)."""
        _write(
            self.path / self.limit_name, self.unlimited if limit_bytes is None else str(limit_bytes)
        )

    def enclosing_limit(self) -> int | None:
        """The lowest limit of the enclosing groups, or None when none of them is limited."""
        limits = []
        for group in self.enclosing:
            reading = read_budget(group / self.limit_name, group / self.usage_name)
            if reading is not None:
                limits.append(reading[0])
        return min(limits, default=None)


def _groups_above(group: Path, mount: Path, limit_name: str) -> tuple[Path, ...]:
    """The groups above `group` up to the hierarchy's root, nearest first, that have
    `limit_name` (the v2 root has none)."""
    found = []
    for parent in group.parents:
        if not parent.is_relative_to(mount):
            break
        if (parent / limit_name).exists():
            found.append(parent)
    return tuple(found)


# --- v2 -------------------------------------------------------------------------------------


@attrs.frozen
class _V2Group:
    path: Path
    client_group: Path | None = None

    @property
    def procs_files(self) -> Sequence[Path]:
        return (self.path / "cgroup.procs",)

    def usage(self) -> Usage:
        cpu = _read_keyed(self.path / "cpu.stat")
        usage_usec = cpu.get("usage_usec")
        return Usage(
            peak_memory_bytes=_read_int(self.path / "memory.peak"),
            cpu_seconds=None if usage_usec is None else usage_usec / 1e6,
            peak_pids=_read_int(self.path / "pids.peak"),
            oom_kills=_read_keyed(self.path / "memory.events").get("oom_kill", 0),
            pids_limit_hits=_read_keyed(self.path / "pids.events").get("max", 0),
            cpu_throttled=cpu.get("nr_throttled", 0),
        )

    def pids(self) -> set[int]:
        return _members(self.path)

    def kill(self) -> None:
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        else:
            _kill_members(self.path)

    async def kill_and_remove(self) -> None:
        self.kill()
        await _rmdir_when_empty([self.path])
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
        available = set(_read(self.root / "cgroup.controllers").split())
        missing = {"memory", "cpu", "pids"} - available
        if missing:
            raise CgroupError(
                f"controllers {', '.join(sorted(missing))} are not delegated to {self.root}"
            )
        server = self.root / "server"
        server.mkdir(exist_ok=True)
        for pid in _members(self.root):
            with contextlib.suppress(ProcessLookupError, CgroupError):
                _write(server / "cgroup.procs", str(pid))
        _write(self.root / "cgroup.subtree_control", "+memory +cpu +pids")
        self.jobs.mkdir(exist_ok=True)
        _write(self.jobs / "cgroup.subtree_control", "+memory +cpu +pids")

    def _client_group(self, client: str) -> Path:
        group = self.jobs / client_group_name(client)
        if not group.is_dir():
            group.mkdir()
            _write(group / "cpu.weight", _CLIENT_CPU_WEIGHT_V2)
            _write(group / "cgroup.subtree_control", "+memory +cpu +pids")
        return group

    def create(self, job_id: str, caps: Caps, client: str = "") -> _V2Group:
        client_group = self._client_group(client)
        path = client_group / job_id
        path.mkdir()
        group = _V2Group(path, client_group)
        try:
            _write(path / "memory.max", str(caps.memory_bytes))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
            _write(path / "cpu.max", f"{int(caps.cpu_max * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")
            _write(path / "pids.max", str(caps.pids_max))
        except CgroupError:
            path.rmdir()
            with contextlib.suppress(OSError):
                client_group.rmdir()
            raise
        return group

    async def recover(self) -> list[str]:
        cleaned = []
        for path in _subdirs(self.jobs):
            if not path.name.startswith(CLIENT_PREFIX):
                await _V2Group(path).kill_and_remove()
                cleaned.append(str(path))
                continue
            for job in _subdirs(path):
                await _V2Group(job).kill_and_remove()
                cleaned.append(str(job))
            await _rmdir_when_empty([path])
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
            enclosing=_groups_above(self.jobs, CGROUP_ROOT_MOUNT, "memory.max"),
        )


# --- v1 -------------------------------------------------------------------------------------


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
        usage_ns = _read_int(cpuacct / "cpuacct.usage")
        return Usage(
            peak_memory_bytes=_read_int(memory / "memory.max_usage_in_bytes"),
            cpu_seconds=None if usage_ns is None else usage_ns / 1e9,
            peak_pids=_read_int(pids / "pids.peak"),
            oom_kills=_read_keyed(memory / "memory.oom_control").get("oom_kill", 0),
            pids_limit_hits=_read_keyed(pids / "pids.events").get("max", 0),
            cpu_throttled=_read_keyed(cpu / "cpu.stat").get("nr_throttled", 0),
        )

    def pids(self) -> set[int]:
        members: set[int] = set()
        for group in self.dirs.values():
            members |= _members(group)
        return members

    def kill(self) -> None:
        # Freeze first so nothing forks between reading cgroup.procs and the kills.
        freezer = self.dirs.get("freezer")
        if freezer is not None and (freezer / "freezer.state").exists():
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("FROZEN")
        for group in self.dirs.values():
            _kill_members(group)
        if freezer is not None:
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("THAWED")

    async def kill_and_remove(self) -> None:
        self.kill()
        await _rmdir_when_empty(list(self.dirs.values()))
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
        mounts = _v1_mounts()
        own = _own_groups()
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
        if hierarchy.exists() and _read(hierarchy) != "1":
            _write(hierarchy, "1")

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
                        _write(client_dir / "cpu.shares", _CLIENT_CPU_SHARES_V1)
                path = client_dir / job_id
                path.mkdir()
                dirs[controller] = path
            memory = dirs["memory"]
            _write(memory / "memory.limit_in_bytes", str(caps.memory_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(caps.memory_bytes))
            cpu = dirs["cpu"]
            _write(cpu / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(int(caps.cpu_max * _CPU_PERIOD_US)))
            _write(dirs["pids"] / "pids.max", str(caps.pids_max))
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
            for path in _subdirs(base):
                if path.name.startswith(CLIENT_PREFIX):
                    clients.add(path.name)
                    jobs |= {f"{path.name}/{job.name}" for job in _subdirs(path)}
                else:
                    jobs.add(path.name)
        for job in sorted(jobs):
            await _V1Group(
                {c: b / job for c, b in self.bases.items() if (b / job).is_dir()}
            ).kill_and_remove()
        for name in sorted(clients):
            await _rmdir_when_empty([b / name for b in self.bases.values() if (b / name).is_dir()])
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
            enclosing=_groups_above(base, self.memory_mount, "memory.limit_in_bytes"),
        )


def read_budget(limit_file: Path, usage_file: Path) -> tuple[int, int] | None:
    """(limit, current) in bytes, or None when there is no limit or it cannot be read."""
    try:
        limit_text = _read(limit_file)
        current = int(_read(usage_file))
    except (OSError, ValueError):
        return None
    if limit_text == "max":
        return None
    try:
        limit = int(limit_text)
    except ValueError:
        return None
    if limit >= _UNLIMITED_V1:
        return None
    return limit, current


def _v2_candidates(configured_root: Path) -> Iterator[Path]:
    """The configured root, then this process's own group if it is delegated to it alone
    (as systemd's Delegate=yes does): never a group shared with other processes."""
    yield configured_root
    own = _own_groups().get("", "/")
    own_path = CGROUP_ROOT_MOUNT / own.lstrip("/")
    delegated_to_us = _members(own_path) <= {os.getpid()} or _members(own_path / "server") == {
        os.getpid()
    }
    if own != "/" and (own_path / "cgroup.controllers").exists() and delegated_to_us:
        yield own_path


def open_driver(kind: str, v2_root: Path, tag: str) -> V2Driver | V1Driver | None:
    """Pick and set up a driver; `kind` is the `cgroupDriver` key. None means no caps.

    Raises CgroupError with the reason when the requested driver cannot enforce caps.
    """
    if kind == "none":
        return None
    if kind == "v2":
        driver = V2Driver(v2_root)
        driver.setup()
        return driver
    if kind == "v1":
        v1 = V1Driver(tag)
        v1.setup()
        return v1
    reasons = []
    for root in _v2_candidates(v2_root):
        candidate = V2Driver(root)
        try:
            candidate.setup()
        except (CgroupError, OSError) as exc:
            reasons.append(f"v2 at {root}: {exc}")
        else:
            return candidate
    v1 = V1Driver(tag)
    try:
        v1.setup()
    except (CgroupError, OSError) as exc:
        reasons.append(f"v1: {exc}")
    else:
        return v1
    raise CgroupError("no cgroup driver can enforce the caps (" + "; ".join(reasons) + ")")
