"""The memory gate and the queue, driven by a budget dir whose files the test rewrites."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import HELLO_C, MakeServer, eventually, spin
from test_lifecycle import open_compile, wait_for_compiler

from emcc_trio.cgroups import read_budget
from emcc_trio.gate import Gate, QueueFullError, QueueTimeoutError, free_slots

MB = 1024 * 1024


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
        cgroupV2Root=str(budget),
        queueTimeoutSeconds=1,
    )
    response = server.compile(HELLO_C)
    assert response.status_code == 503
    assert response.json()["error"] == "no capacity became free in time; try again later"
    (budget / "memory.max").write_text(str(4096 * MB))
    eventually(lambda: server.compile(HELLO_C).status_code == 200, 10, "admission")


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
