"""What a server instance's jobs left behind, seen from outside: live processes and job cgroups.

Read-only. The tests and the load test use it to prove that every job is cleaned up; an
operator can use it to look at a stopped instance.
"""

from __future__ import annotations

import os
from pathlib import Path

from emcc_trio.isolation.cgroups import CLIENT_PREFIX, instance_tag

CGROUP_ROOT = Path("/sys/fs/cgroup")


def parents() -> dict[int, int]:
    """pid -> parent pid of every process alive now."""
    found: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def descendants(pid: int, parent_of: dict[int, int] | None = None) -> set[int]:
    """Every process below `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent in (parents() if parent_of is None else parent_of).items():
        children.setdefault(parent, []).append(child)
    below: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in below:
                below.add(child)
                stack.append(child)
    return below


def _jobs_below(parent: Path) -> list[Path]:
    """The job groups in a driver's jobs group, and any client group left without a job."""
    found: list[Path] = []
    for name in next(os.walk(parent), ("", [], []))[1]:
        group = parent / name
        if not name.startswith(CLIENT_PREFIX):
            found.append(group)
            continue
        jobs = [group / job for job in next(os.walk(group), ("", [], []))[1]]
        found.extend(jobs or [group])
    return found


def job_cgroups(jobs_dir: Path, v2_root: Path | None = None) -> list[Path]:
    """The job groups of the instance whose jobs dir is `jobs_dir`: below its tag in every v1
    hierarchy, or below `<v2_root>/jobs` for the v2 driver (which has no tag: the delegated
    root is the instance's own)."""
    if v2_root is not None:
        return sorted(_jobs_below(v2_root / "jobs"))
    tag = instance_tag(jobs_dir)
    found: list[Path] = []
    # os.walk, not glob: a job group removed mid-walk is skipped instead of raising.
    for root, dirs, _ in os.walk(CGROUP_ROOT):
        if Path(root).name == tag:
            found.extend(_jobs_below(Path(root)))
            dirs.clear()
    return sorted(found)


def job_processes(server_pid: int, jobs_dir: Path) -> list[str]:
    """`pid cmdline` of each live process in the jobs dir, in the instance's cgroups, or below
    the server (the server itself excluded)."""
    tag = instance_tag(jobs_dir)
    parent_of = parents()
    suspects = descendants(server_pid, parent_of)
    for pid in parent_of:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if cwd.startswith(str(jobs_dir)) or tag in cgroup:
            suspects.add(pid)
    suspects.discard(server_pid)
    return sorted(filter(None, map(_describe, suspects)))


def _describe(pid: int) -> str:
    """`pid cmdline`, or "" for a process that is gone or a zombie (nothing to kill there)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return f"{pid} {shown}" if cmdline else ""
