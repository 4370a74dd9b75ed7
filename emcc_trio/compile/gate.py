"""Admission: a bounded queue, served round robin across clients, in front of a memory gate
and a CPU limiter.

The memory gate is a `trio.CapacityLimiter` whose `total_tokens` a poller keeps in step with
the budget cgroup, so that a job may start only while

    current + reserved + estimate <= memory.max

where `reserved` is one estimate per running job (emcc-sandboxd's rule), and `memory.max` is
the limit the server wrote on the group that holds every job group (`memoryBudgetMB`, by
default `BUDGET_SHARE` of the machine's memory). trio's limiter needs
at least one token, so the gate itself holds one permanent "ballast" token and sets the total
to `ballast + running + free slots`.

Waiters queue per client, and the turn to take the limiters goes round the clients: one
job of the client at the head, then that client goes to the back. Only the turn holder
contends for the (FIFO) limiters, so admission follows the rotation: a client with ten jobs
waiting does not delay one with a single job behind all ten. Waiting is cancellable at every
step: a client that goes away leaves the queue at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from emcc_trio.errors import UnavailableError

POLL_SECONDS: Final = 0.2
# The default budget: this share of the machine's memory (or of the enclosing group's limit,
# when lower) for all jobs together; the rest is for the server, the kernel and the page cache.
BUDGET_SHARE: Final = 0.75
_MIB: Final = 1024 * 1024
Budget = Callable[[], "tuple[int, int] | None"]


class QueueFullError(UnavailableError):
    """More requests are waiting than the queue may hold."""

    public = "too many compiles are waiting; try again later"


class QueueTimeoutError(UnavailableError):
    """The request waited longer than the queue's deadline."""

    public = "no capacity became free in time; try again later"


def free_slots(limit: int, current: int, running: int, estimate: int) -> int:
    """How many more jobs the seed's formula admits now."""
    reserved = running * estimate
    return max(0, (limit - current - reserved) // estimate)


def default_budget(mem_total: int, enclosing_limit: int | None) -> int:
    """`BUDGET_SHARE` of the machine's memory, or of the enclosing limit when that is lower,
    in whole MiB (so page-aligned: the kernel keeps the value as written)."""
    bound = mem_total if enclosing_limit is None else min(mem_total, enclosing_limit)
    return int(bound * BUDGET_SHARE) // _MIB * _MIB


@attrs.define
class RoundRobin:
    """A turnstile that one task holds at a time, handed on round robin across clients."""

    _queues: dict[str, deque[trio.Event]] = attrs.field(factory=dict)  # in rotation order
    _holder: str | None = None

    def waiting(self, client: str) -> int:
        return len(self._queues.get(client, ()))

    @property
    def clients_waiting(self) -> int:
        """Clients with a job waiting, the turn holder's included."""
        holder = {self._holder} if self._holder is not None else set()
        return len(self._queues.keys() | holder)

    @asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        """Hold the turn for the body of the `async with`; hand it on when leaving."""
        if self._holder is not None or self._queues:
            my_turn = trio.Event()
            self._queues.setdefault(client, deque()).append(my_turn)
            try:
                await my_turn.wait()
            except BaseException:
                if my_turn.is_set():  # handed the turn while being cancelled: pass it on
                    self._hand_on(client)
                else:
                    self._leave(client, my_turn)
                raise
        else:
            self._holder = client
        try:
            yield
        finally:
            self._hand_on(client)

    def _leave(self, client: str, my_turn: trio.Event) -> None:
        queue = self._queues[client]
        queue.remove(my_turn)
        if not queue:
            del self._queues[client]

    def _hand_on(self, served: str) -> None:
        if not self._queues:
            self._holder = None
            return
        if served in self._queues:  # the client just served waits behind the others
            self._queues[served] = self._queues.pop(served)
        client = next(iter(self._queues))
        queue = self._queues.pop(client)
        next_turn = queue.popleft()
        if queue:
            self._queues[client] = queue  # to the back of the rotation
        self._holder = client  # now, so that nobody slips in before it wakes
        next_turn.set()


@attrs.define
class Gate:
    """Bounded, FIFO, budget-aware admission. `run_poller` must run in the server's nursery."""

    estimate_bytes: int
    max_concurrent: int
    queue_max: int
    queue_timeout_seconds: float
    budget: Budget | None  # None: gating off
    memory: trio.CapacityLimiter = attrs.field(init=False)
    cpu: trio.CapacityLimiter = attrs.field(init=False)
    waiting: int = attrs.field(init=False, default=0)
    last_budget: tuple[int, int] | None = attrs.field(init=False, default=None)
    running: int = attrs.field(init=False, default=0)
    turns: RoundRobin = attrs.field(init=False, factory=RoundRobin)
    _ballast: object = attrs.field(init=False, factory=object)

    @property
    def clients_waiting(self) -> int:
        return self.turns.clients_waiting

    def __attrs_post_init__(self) -> None:
        self.memory = trio.CapacityLimiter(math.inf)
        self.cpu = trio.CapacityLimiter(self.max_concurrent)
        if self.budget is not None:
            self.memory.acquire_on_behalf_of_nowait(self._ballast)
            self.refresh()

    def refresh(self, leaving: int = 0) -> None:
        """Recompute the memory gate's size from the budget files.

        `leaving` jobs still hold a token but are about to return it; sizing the gate first
        keeps their tokens from passing straight to a waiter the budget does not admit.
        """
        if self.budget is None:
            return
        reading = self.last_budget = self.budget()
        if reading is None:
            self.memory.total_tokens = math.inf
            return
        limit, current = reading
        running = self.memory.borrowed_tokens - 1 - leaving
        slots = free_slots(limit, current, running, self.estimate_bytes)
        self.memory.total_tokens = 1 + running + slots

    async def run_poller(self) -> None:
        while True:
            self.refresh()
            await trio.sleep(POLL_SECONDS)

    @asynccontextmanager
    async def admit(self, client: str = "") -> AsyncIterator[None]:
        """Wait for a turn, or raise QueueFullError / QueueTimeoutError (never wait unbounded).

        Cancelling the wait (the client went away) leaves the queue at once."""
        if self.waiting >= self.queue_max:
            raise QueueFullError
        self.waiting += 1
        token = object()
        acquired_memory = acquired_cpu = False
        try:
            with trio.move_on_after(self.queue_timeout_seconds):
                async with self.turns.turn(client):
                    await self.memory.acquire_on_behalf_of(token)
                    acquired_memory = True
                    await self.cpu.acquire_on_behalf_of(token)
                    acquired_cpu = True
        finally:
            self.waiting -= 1
            if acquired_memory and not acquired_cpu:
                self.refresh(leaving=1)
                self.memory.release_on_behalf_of(token)
        if not acquired_cpu:
            raise QueueTimeoutError
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self.cpu.release_on_behalf_of(token)
            self.refresh(leaving=1)
            self.memory.release_on_behalf_of(token)
