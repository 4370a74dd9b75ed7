"""The budget group that holds every job group, and reading its limit and usage (what the
memory gate admits against)."""

from __future__ import annotations

from pathlib import Path

import attrs

from emcc_trio.isolation.cgroups.base import (
    UNLIMITED_V1,
    read,
    write,
)


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
        write(
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


def groups_above(group: Path, mount: Path, limit_name: str) -> tuple[Path, ...]:
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


def read_budget(limit_file: Path, usage_file: Path) -> tuple[int, int] | None:
    """(limit, current) in bytes, or None when there is no limit or it cannot be read."""
    try:
        limit_text = read(limit_file)
        current = int(read(usage_file))
    except (OSError, ValueError):
        return None
    if limit_text == "max":
        return None
    try:
        limit = int(limit_text)
    except ValueError:
        return None
    if limit >= UNLIMITED_V1:
        return None
    return limit, current
