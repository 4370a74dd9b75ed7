"""Single flight: identical work in flight runs once, for every request that waits for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

from emcc_trio.errors import UnavailableError

T = TypeVar("T")


class FlightCancelledError(UnavailableError):
    """The shared work was cancelled (shutdown) before it finished."""

    public = "the server is shutting down"


@attrs.define
class _Flight(Generic[T]):
    done: trio.Event = attrs.field(factory=trio.Event)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    waiters: int = 0
    result: T | None = None
    error: BaseException | None = None


@attrs.define
class SingleFlight(Generic[T]):
    """Work runs in `nursery` (the service's), owned by no single request: if the first
    waiter goes away the others still get the result; when the last waiter goes away the work
    is cancelled. `cancel_all` cancels every flight (shutdown); their waiters then get
    FlightCancelledError."""

    nursery: trio.Nursery
    _flights: dict[str, _Flight[T]] = attrs.field(factory=dict)
    # Every flight's scope until its work has ended, also after a newcomer replaced it.
    _running: set[trio.CancelScope] = attrs.field(factory=set)

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        """`work`'s result for every caller with `key` while it runs. Cancelling a caller
        cancels the work only when no other caller is left waiting for it."""
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            self._running.add(flight.scope)
            self.nursery.start_soon(self._fly, key, flight, work)
        flight.waiters += 1
        try:
            await flight.done.wait()
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.done.is_set():
                # Nobody is left to answer: stop the work, and let a newcomer start afresh.
                self._flights.pop(key, None)
                flight.scope.cancel()
        if flight.error is not None:
            raise flight.error
        if flight.result is None:
            raise FlightCancelledError
        return flight.result

    async def _fly(self, key: str, flight: _Flight[T], work: Callable[[], Awaitable[T]]) -> None:
        try:
            with flight.scope:
                flight.result = await work()
        except Exception as exc:
            flight.error = exc
        finally:
            self._running.discard(flight.scope)
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    def is_flying(self, key: str) -> bool:
        return key in self._flights

    def cancel_all(self) -> None:
        for scope in self._running:
            scope.cancel()
