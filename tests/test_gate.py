"""The memory gate and the queue: driven by a budget dir whose files the test rewrites, and
by the real budget cgroup the server writes (v1 here, v2 in the VM: `nox -s cgroup2`)."""

from __future__ import annotations

import json
import logging
import math
import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from test_lifecycle import open_compile, wait_for_compiler

from emcc_trio.compile.gate import (
    Gate,
    QueueFullError,
    QueueTimeoutError,
    default_budget,
    free_slots,
)
from emcc_trio.config import parse
from emcc_trio.isolation.cgroups import BudgetGroup, instance_tag, read_budget
from emcc_trio.server import apply_budget
from emcc_trio.testing.harness import MakeServer, Server, eventually
from emcc_trio.testing.programs import HELLO_C, spin

MB = 1024 * 1024
GB = 1024 * MB
V2 = os.environ.get("EMCC_TRIO_TEST_DRIVER") == "v2"
# Under the VM's emulated CPU a compile takes tens of seconds: wait longer there, never less.
SLOW_SECONDS = 900.0 if os.environ.get("RUN_IN_VM") else 120.0


def budget_dir(tmp_path: Path, limit: str, current: int) -> Path:
    (tmp_path / "memory.max").write_text(limit + "\n")
    (tmp_path / "memory.current").write_text(f"{current}\n")
    return tmp_path


def make_gate(tmp_path: Path, **kwargs: float) -> Gate:
    return Gate(
        estimate_bytes=256 * MB,
        max_concurrent=int(kwargs.get("max_concurrent", 100)),
        queue_max=int(kwargs.get("queue_max", 100)),
        queue_timeout_seconds=kwargs.get("queue_timeout", 60),
        budget=partial(read_budget, tmp_path / "memory.max", tmp_path / "memory.current"),
    )


@pytest.mark.parametrize(
    ("limit", "current", "running", "slots"),
    [(1000, 0, 0, 3), (1000, 0, 3, 0), (1024, 0, 3, 1), (1000, 600, 0, 1), (1000, 900, 0, 0)],
)
def test_formula(limit: int, current: int, running: int, slots: int) -> None:
    # current + reserved + estimate <= max, in MB with a 256 MB estimate
    assert free_slots(limit * MB, current * MB, running, 256 * MB) == slots


@pytest.mark.parametrize(
    ("mem_total", "enclosing", "budget"),
    [
        (8 * GB, None, 6 * GB),
        (8 * GB, 2 * GB, 1536 * MB),  # the enclosing group's limit is lower: its share
        (8 * GB, 16 * GB, 6 * GB),
        (1000 * MB + 12345, None, 750 * MB),  # whole MiB, so page-aligned
    ],
)
def test_default_budget(mem_total: int, enclosing: int | None, budget: int) -> None:
    assert default_budget(mem_total, enclosing) == budget


def fake_budget_group(tmp_path: Path, enclosing_limit: str) -> BudgetGroup:
    """A v2-like budget group in a plain dir, below a parent limited to `enclosing_limit`."""
    budget_dir(tmp_path, enclosing_limit, 0)
    (tmp_path / "jobs").mkdir()
    budget_dir(tmp_path / "jobs", "max", 0)
    return BudgetGroup(
        path=tmp_path / "jobs",
        limit_name="memory.max",
        usage_name="memory.current",
        unlimited="max",
        enclosing=(tmp_path,),
    )


@pytest.mark.parametrize(
    ("settings", "enclosing", "written", "warning"),
    [
        ({}, 2 * GB, 1536 * MB, None),  # 75 % of the parent's limit
        ({}, 1 * GB, 1024 * MB, "raised to the larger"),  # 768 MB < jobMemoryMaxMB 1024
        ({"memoryBudgetMB": 1200}, 1 * GB, 1200 * MB, "more than the machine"),
        ({"memoryBudgetMB": 1200}, 2 * GB, 1200 * MB, None),
        ({"memoryBudgetMB": 0}, 2 * GB, None, None),  # as it is: no limit of its own
    ],
)
def test_apply_budget(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, int],
    enclosing: int,
    written: int | None,
    warning: str | None,
) -> None:
    group = fake_budget_group(tmp_path, str(enclosing))
    (group.path / "memory.max").write_text("123456789")  # what an earlier run left
    assert apply_budget(parse(json.dumps(settings)), group) == written
    assert (group.path / "memory.max").read_text() == ("max" if written is None else str(written))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warning in warnings[0]


def test_unreadable_or_unlimited_budget_means_no_gating(tmp_path: Path) -> None:
    assert read_budget(tmp_path / "memory.max", tmp_path / "memory.current") is None
    budget_dir(tmp_path, "max", 0)
    assert read_budget(tmp_path / "memory.max", tmp_path / "memory.current") is None
    budget_dir(tmp_path, str(9223372036854771712), 0)  # v1's "unlimited"
    assert read_budget(tmp_path / "memory.max", tmp_path / "memory.current") is None
    gate = make_gate(tmp_path)
    assert gate.memory.total_tokens == math.inf


async def _hold(gate: Gate, name: str, admitted: list[str], release: trio.Event) -> None:
    async with gate.admit():
        admitted.append(name)
        await release.wait()


async def test_admission_follows_the_budget(tmp_path: Path) -> None:
    budget_dir(tmp_path, str(1000 * MB), 0)
    gate = make_gate(tmp_path)
    admitted: list[str] = []
    releases = {name: trio.Event() for name in "abcde"}
    async with trio.open_nursery() as nursery:
        for name in "abcd":
            nursery.start_soon(_hold, gate, name, admitted, releases[name])
            await trio.testing.wait_all_tasks_blocked()
        assert admitted == ["a", "b", "c"]  # 3 x 256 MB fit in 1000 MB; the 4th waits
        assert gate.waiting == 1
        # Memory use rises: one job leaving frees no slot for the waiter.
        budget_dir(tmp_path, str(1000 * MB), 500 * MB)
        releases["a"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert admitted == ["a", "b", "c"]
        # Memory use falls again: the poller's next refresh admits the waiter.
        budget_dir(tmp_path, str(1000 * MB), 0)
        gate.refresh()
        await trio.testing.wait_all_tasks_blocked()
        assert admitted == ["a", "b", "c", "d"]
        for event in releases.values():
            event.set()


async def test_waiters_are_admitted_in_fifo_order(tmp_path: Path) -> None:
    budget_dir(tmp_path, str(300 * MB), 0)  # one job at a time
    gate = make_gate(tmp_path)
    admitted: list[str] = []
    releases = {name: trio.Event() for name in "abcd"}
    async with trio.open_nursery() as nursery:
        for name in "abcd":
            nursery.start_soon(_hold, gate, name, admitted, releases[name])
            await trio.testing.wait_all_tasks_blocked()
        for name in "abcd":
            assert admitted[-1] == name
            releases[name].set()
            await trio.testing.wait_all_tasks_blocked()
    assert admitted == ["a", "b", "c", "d"]


async def test_a_cancelled_waiter_leaves_the_queue(tmp_path: Path) -> None:
    budget_dir(tmp_path, str(300 * MB), 0)
    gate = make_gate(tmp_path)
    admitted: list[str] = []
    releases = {name: trio.Event() for name in "abc"}
    b_scope = trio.CancelScope()

    async def hold_b() -> None:
        with b_scope:
            await _hold(gate, "b", admitted, releases["b"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold, gate, "a", admitted, releases["a"])
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hold_b)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_hold, gate, "c", admitted, releases["c"])
        await trio.testing.wait_all_tasks_blocked()
        assert gate.waiting == 2
        b_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert gate.waiting == 1
        releases["a"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert admitted == ["a", "c"]
        releases["c"].set()
    assert gate.waiting == 0
    assert gate.running == 0


async def test_full_queue_and_queue_deadline(tmp_path: Path) -> None:
    budget_dir(tmp_path, str(300 * MB), 0)
    gate = make_gate(tmp_path, queue_max=1, queue_timeout=0.2)
    release = trio.Event()
    admitted: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold, gate, "a", admitted, release)
        await trio.testing.wait_all_tasks_blocked()
        timed_out = trio.Event()

        async def waiter() -> None:
            with pytest.raises(QueueTimeoutError):
                async with gate.admit():
                    pytest.fail("admitted past the budget")
            timed_out.set()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(QueueFullError):
            async with gate.admit():
                pytest.fail("admitted past a full queue")
        await timed_out.wait()
        release.set()
    assert gate.waiting == 0


async def test_cpu_limiter_bounds_concurrency(tmp_path: Path) -> None:
    budget_dir(tmp_path, "max", 0)
    gate = make_gate(tmp_path, max_concurrent=2)
    admitted: list[str] = []
    releases = {name: trio.Event() for name in "abc"}
    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(_hold, gate, name, admitted, releases[name])
            await trio.testing.wait_all_tasks_blocked()
        assert admitted == ["a", "b"]
        releases["a"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert admitted == ["a", "b", "c"]
        for event in releases.values():
            event.set()


def test_http_queue_full_is_503_with_retry_after(make_server: MakeServer) -> None:
    server = make_server(maxConcurrentJobs=1, queueMax=1)
    running = open_compile(server, spin(), "cpp")
    wait_for_compiler(server)
    # A different source: an identical one would join the first compile, not queue.
    waiting = open_compile(server, spin() + "/* another */\n", "cpp")
    with server.client() as client:
        eventually(
            lambda: "emcc_trio_queue_waiting 1.0" in client.get("/metrics").text,
            10,
            "the second request to wait in the queue",
        )
        response = client.post("/compile", json={"code": HELLO_C})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "too many compiles are waiting; try again later"
    running.close()
    waiting.close()
    server.assert_clean(timeout=3)


def test_http_gate_waits_for_memory_then_times_out(make_server: MakeServer, tmp_path: Path) -> None:
    (tmp_path / "budget").mkdir()
    budget = budget_dir(tmp_path / "budget", str(100 * MB), 0)
    server = make_server(
        enableResourceGating=True,
        memoryBudgetMB=0,  # the seed's behaviour: read cgroupV2Root's limit as it is
        cgroupV2Root=str(budget),
        queueTimeoutSeconds=1,
    )
    response = server.compile(HELLO_C)
    assert response.status_code == 503
    assert response.json()["error"] == "no capacity became free in time; try again later"
    (budget / "memory.max").write_text(str(4096 * MB))
    eventually(lambda: server.compile(HELLO_C).status_code == 200, 10, "admission")


# --- the budget cgroup the server writes ---------------------------------------------------


@pytest.fixture
def v2_root() -> None:
    """In the VM the servers' delegated group must exist before they start."""
    if V2:
        os.makedirs(os.environ["EMCC_TRIO_TEST_V2_ROOT"], exist_ok=True)


def budget_limit_file(server: Server) -> Path:
    """The limit file of the group that holds every job group of `server`."""
    if V2:
        return Path(os.environ["EMCC_TRIO_TEST_V2_ROOT"]) / "jobs" / "memory.max"
    own = next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{server.proc.pid}/cgroup").read_text().splitlines()
        if line.split(":", 2)[1] == "memory"
    )
    base = Path("/sys/fs/cgroup/memory") / own.lstrip("/") / instance_tag(server.jobs_dir)
    return base / "memory.limit_in_bytes"


def lowest_limit_above(limit_file: Path) -> int | None:
    """The lowest memory limit of the groups above the budget group (None: all unlimited)."""
    found = []
    for group in limit_file.parent.parents:
        if group == Path("/sys/fs/cgroup"):
            break
        if (group / limit_file.name).exists():
            text = (group / limit_file.name).read_text().strip()
            if text != "max" and int(text) < 1 << 62:  # v1 spells "no limit" as 2^63 - 4096
                found.append(int(text))
    return min(found, default=None)


def metric(server: Server, name: str, **labels: str) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name} {labels} is not in /metrics")


def configured(server: Server) -> dict[str, Any]:
    return next(e for e in server.log_events() if e.get("event") == "configured")


def mem_total() -> int:
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in x)
    return int(line.split()[1]) * 1024


def expected_default_budget(limit_file: Path) -> int:
    """75 % of MemTotal, or of the lowest limit above the budget group, in whole MiB."""
    above = lowest_limit_above(limit_file)
    bound = mem_total() if above is None else min(mem_total(), above)
    return int(bound * 0.75) // MB * MB


# In the VM, test_cgroup2_server checks the same on v2 (a server start costs a minute there).
def test_default_budget_is_written_logged_and_exported(make_server: MakeServer) -> None:
    server = make_server(enableResourceGating=True)
    limit_file = budget_limit_file(server)
    expected = expected_default_budget(limit_file)
    assert int(limit_file.read_text()) == expected
    assert configured(server)["gating"] is True
    assert configured(server)["memory_budget_bytes"] == expected
    assert metric(server, "emcc_trio_memory_budget_bytes") == expected


def test_gating_without_any_bound_is_a_startup_warning(
    make_server: MakeServer, tmp_path: Path
) -> None:
    (tmp_path / "budget").mkdir()
    budget = budget_dir(tmp_path / "budget", "max", 0)
    server = make_server(enableResourceGating=True, memoryBudgetMB=0, cgroupV2Root=str(budget))
    warnings = [e for e in server.log_events() if e.get("level") == "warning"]
    assert [e["event"] for e in warnings] == [
        "enableResourceGating is on but the budget group has no memory limit: compiles are "
        "admitted by maxConcurrentJobs only"
    ]
    assert warnings[0]["limit_file"] == str(budget / "memory.max")
    assert configured(server)["gating"] is False
    assert configured(server)["memory_budget_bytes"] is None
    assert metric(server, "emcc_trio_memory_budget_bytes") == 0
    assert server.compile(HELLO_C).status_code == 200


def fifo_source(fifo: Path, n: int) -> str:
    """A compile that cannot end on its own: clang waits in open() for a writer to the FIFO,
    with little memory and no CPU, until the job is killed."""
    return f'#include "{fifo}"\nint main(void) {{ return {n}; }}\n'


@pytest.fixture
def fifos(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / f"include{n}.h" for n in range(4)]
    for path in paths:
        os.mkfifo(path)
    return paths


@pytest.mark.cgroup2
@pytest.mark.usefixtures("v2_root")
def test_a_budget_of_three_estimates_admits_three_and_the_fourth_when_one_ends(
    make_server: MakeServer, fifos: list[Path]
) -> None:
    # The seed's rule counts what running jobs really use on top of their estimates, so the
    # budget is three estimates plus room for that use, but one MiB short of a fourth.
    estimate_mb = 1024
    server = make_server(
        enableResourceGating=True,
        jobMemoryEstimateMB=estimate_mb,
        jobMemoryMaxMB=estimate_mb,
        memoryBudgetMB=4 * estimate_mb - 1,
        maxConcurrentJobs=8,  # the CPU limiter must not be what holds the fourth back
        jobTimeoutSeconds=SLOW_SECONDS,
        jobCpuSeconds=SLOW_SECONDS,
    )
    assert int(budget_limit_file(server).read_text()) == (4 * estimate_mb - 1) * MB
    assert metric(server, "emcc_trio_memory_budget_bytes") == (4 * estimate_mb - 1) * MB
    socks = [open_compile(server, fifo_source(fifos[n], n)) for n in range(3)]
    try:
        eventually(
            lambda: metric(server, "emcc_trio_jobs_running") == 3,
            SLOW_SECONDS,
            "three compiles to run",
        )
        socks.append(open_compile(server, fifo_source(fifos[3], 3)))
        eventually(
            lambda: metric(server, "emcc_trio_queue_waiting") == 1,
            SLOW_SECONDS,
            "the fourth compile to wait",
        )
        assert metric(server, "emcc_trio_jobs_running") == 3
        assert metric(server, "emcc_trio_memory_reserved_bytes") == 3 * estimate_mb * MB
        assert metric(server, "emcc_trio_memory_used_bytes") < estimate_mb * MB
        first_three = set(server.leftovers()["job_dirs"])
        assert len(first_three) == 3, "the fourth has no job dir yet"

        socks[0].close()  # the first compile ends: its client hung up
        eventually(
            lambda: metric(server, "emcc_trio_queue_waiting") == 0,
            SLOW_SECONDS,
            "the fourth compile to be admitted",
        )
        assert metric(server, "emcc_trio_jobs_running") == 3
        eventually(
            lambda: len(set(server.leftovers()["job_dirs"]) - first_three) == 1,
            SLOW_SECONDS,
            "the fourth compile's job dir",
        )
    finally:
        for sock in socks:
            sock.close()
    server.assert_clean(timeout=SLOW_SECONDS)


async def test_waiting_clients_are_served_in_turn(tmp_path: Path) -> None:
    """Client a queues five jobs, then b two, then c one: with one slot, admission goes
    round the clients instead of first come, first served."""
    budget_dir(tmp_path, "max", 0)
    gate = make_gate(tmp_path, max_concurrent=1)
    admitted: list[str] = []
    done = trio.Event()

    async def job(client: str, name: str) -> None:
        async with gate.admit(client):
            admitted.append(name)
            if name == "a1":
                await done.wait()  # holds the only slot while the others queue

    async with trio.open_nursery() as nursery:
        for client, count in (("a", 5), ("b", 2), ("c", 1)):
            for n in range(1, count + 1):
                nursery.start_soon(job, client, f"{client}{n}")
                await trio.testing.wait_all_tasks_blocked()
        assert admitted == ["a1"]
        assert gate.waiting == 7
        done.set()
    assert admitted == ["a1", "a2", "b1", "c1", "a3", "b2", "a4", "a5"]


async def test_a_client_leaving_the_queue_keeps_the_rotation(tmp_path: Path) -> None:
    budget_dir(tmp_path, "max", 0)
    gate = make_gate(tmp_path, max_concurrent=1)
    admitted: list[str] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold_as, gate, "a", "a1", admitted, release)
        await trio.testing.wait_all_tasks_blocked()
        leaving = trio.CancelScope()
        nursery.start_soon(_cancellable, gate, "b", admitted, leaving)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_hold_as, gate, "c", "c1", admitted, trio.Event())
        await trio.testing.wait_all_tasks_blocked()
        leaving.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert gate.turns.waiting("b") == 0
        assert gate.waiting == 1
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert admitted == ["a1", "c1"]
        nursery.cancel_scope.cancel()


async def _hold_as(
    gate: Gate, client: str, name: str, admitted: list[str], release: trio.Event
) -> None:
    async with gate.admit(client):
        admitted.append(name)
        await release.wait()


async def _cancellable(
    gate: Gate, client: str, admitted: list[str], scope: trio.CancelScope
) -> None:
    with scope:
        async with gate.admit(client):
            admitted.append(client)
