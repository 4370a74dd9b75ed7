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

from pathlib import Path

from emcc_trio.isolation.cgroups.base import (
    CLIENT_PREFIX,
    ENTER_FAILED_STATUS,
    Caps,
    CgroupError,
    Driver,
    JobGroup,
    client_group_name,
    enter_argv,
    instance_tag,
    read_mem_total,
)
from emcc_trio.isolation.cgroups.budget import BudgetGroup, read_budget
from emcc_trio.isolation.cgroups.v1 import V1Driver
from emcc_trio.isolation.cgroups.v2 import V2Driver, v2_candidates

__all__ = [
    "CLIENT_PREFIX",
    "ENTER_FAILED_STATUS",
    "BudgetGroup",
    "Caps",
    "CgroupError",
    "Driver",
    "JobGroup",
    "V1Driver",
    "V2Driver",
    "client_group_name",
    "enter_argv",
    "instance_tag",
    "open_driver",
    "read_budget",
    "read_mem_total",
]


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
    for root in v2_candidates(v2_root):
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
