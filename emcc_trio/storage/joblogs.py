"""Job event logs in this process's memory, each with its expiry (the local store's jobs)."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

_SWEEP_SECONDS = 1.0


@attrs.define
class JobLogs:
    clock: Callable[[], float] = time.monotonic
    _logs: dict[str, tuple[float, list[bytes]]] = attrs.field(factory=dict)
    _swept_at: float = 0.0

    def _sweep(self) -> None:
        """Drop expired logs (at most once a second: appends come a line at a time)."""
        now = self.clock()
        if now - self._swept_at < _SWEEP_SECONDS:
            return
        self._swept_at = now
        for job_id in [j for j, (expires, _) in self._logs.items() if expires <= now]:
            del self._logs[job_id]

    def _live(self, job_id: str) -> list[bytes] | None:
        found = self._logs.get(job_id)
        if found is None or found[0] <= self.clock():
            return None
        return found[1]

    def append(self, job_id: str, event: bytes, ttl_seconds: float | None) -> None:
        self._sweep()
        events = self._live(job_id)
        if ttl_seconds is not None:
            self._logs[job_id] = (self.clock() + ttl_seconds, [*(events or []), event])
        elif events is not None:
            events.append(event)

    def events(self, job_id: str, start: int = 0) -> list[bytes]:
        self._sweep()
        events = self._live(job_id)
        return [] if events is None else events[start:]
