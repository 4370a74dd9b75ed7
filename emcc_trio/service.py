"""One compile as the service runs it: the result cache, single flight, the gate and the
metrics around the compiler. No HTTP here: app.py maps results and errors to responses."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import attrs
import trio

from .artifacts import ArtifactStore
from .cache import Entry, ResultCache, SingleFlight, cache_key
from .cgroups import Driver, Usage
from .gate import Gate
from .jobs import Compiler, CompileResult
from .metrics import Metrics
from .policy import CompileRequest

log = logging.getLogger("emcc_trio.service")


@attrs.define
class Service:
    """What the routes need, passed in explicitly (no globals)."""

    driver: Driver | None
    compiler: Compiler
    gate: Gate
    store: ArtifactStore
    enable_static_artifacts: bool
    max_body_bytes: int
    cache: ResultCache | None = None
    emscripten_version: str = ""
    metrics: Metrics = attrs.field(factory=Metrics)
    retry_after_seconds: int = 5
    running: set[trio.CancelScope] = attrs.field(factory=set)
    shutting_down: bool = False
    flights: SingleFlight[CompileResult] | None = None

    def __attrs_post_init__(self) -> None:
        self.metrics.watch_gate(self.gate)
        if self.cache is not None:
            self.metrics.watch_cache(self.cache)

    def start(self, nursery: trio.Nursery) -> None:
        """Shared compiles run in the server's nursery, owned by no single request."""
        self.flights = SingleFlight(nursery, self.running)

    async def compile(self, request: CompileRequest, job_id: str) -> tuple[CompileResult, bool]:
        """The result for `request` and whether it came from the cache.

        Identical requests in flight share one compile; cancelling this call (the client
        went away) cancels the compile only when no other request waits for it.
        """
        assert self.flights is not None, "Service.start was not called"
        key = None
        if self.cache is not None:
            key = cache_key(self.emscripten_version, self.compiler.command(request), request.code)
            entry = self.cache.get(key)
            if entry is not None:
                self.metrics.cache_requests.labels("hit").inc()
                return _from_entry(entry), True
            # "shared": an identical compile is already running and this request joins it.
            lookup = "shared" if self.flights.is_flying(key) else "miss"
            self.metrics.cache_requests.labels(lookup).inc()
        work = partial(self._compile_admitted, request, job_id, key)
        return await self.flights.run(key or job_id, work), False

    async def _compile_admitted(
        self, request: CompileRequest, job_id: str, key: str | None
    ) -> CompileResult:
        queued_at = trio.current_time()
        async with self.gate.admit():
            self.metrics.queue_wait_seconds.observe(trio.current_time() - queued_at)
            result = await self.compiler.compile(request, job_id)
        self.metrics.compile_seconds.observe(result.duration_seconds)
        if result.limit is not None:
            self.metrics.cap_kills.labels(result.limit).inc()
        elif key is not None and self.cache is not None:
            # Deterministic results only: successes and compile errors, never cap kills.
            usage = usage_json(result.usage, result.duration_seconds)
            try:
                await trio.to_thread.run_sync(
                    self.cache.put, key, result.job_id, result.ok, result.output, usage
                )
            except OSError as exc:  # a full disk costs the cache entry, not the answer
                log.warning("cannot cache", extra={"fields": {"error": str(exc)}})
        return result

    def shutdown(self) -> None:
        """Refuse new compiles and cancel the running ones (their cleanup still runs)."""
        self.shutting_down = True
        for scope in self.running:
            scope.cancel()


def _from_entry(entry: Entry) -> CompileResult:
    usage = entry.usage
    return CompileResult(
        job_id=entry.job_id,
        ok=entry.ok,
        output=entry.output,
        output_truncated=False,
        limit=None,
        usage=Usage(
            peak_memory_bytes=usage.get("peakMemoryBytes"),
            cpu_seconds=usage.get("cpuSeconds"),
            peak_pids=usage.get("peakPids"),
        ),
        duration_seconds=float(usage.get("durationSeconds", 0.0)),
    )


def usage_json(usage: Usage, duration_seconds: float) -> dict[str, Any]:
    return {
        "peakMemoryBytes": usage.peak_memory_bytes,
        "cpuSeconds": None if usage.cpu_seconds is None else round(usage.cpu_seconds, 3),
        "peakPids": usage.peak_pids,
        "durationSeconds": round(duration_seconds, 3),
    }
