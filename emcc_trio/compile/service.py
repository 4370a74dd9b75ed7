"""One compile as the service runs it: the result cache, single flight, the gate and the
metrics around the compiler. No HTTP here: app.py maps results and errors to responses."""

from __future__ import annotations

import json
import logging
from collections import Counter
from functools import partial
from typing import Any

import attrs
import trio

from emcc_trio.api.clients import Network
from emcc_trio.api.tokens import TokenBook
from emcc_trio.compile.compiler import Compiler, CompileResult
from emcc_trio.compile.gate import Gate
from emcc_trio.compile.policy import STANDARD, CompileRequest, Policy
from emcc_trio.isolation.cgroups import Driver, Usage
from emcc_trio.isolation.runner import Limit
from emcc_trio.metrics import Metrics
from emcc_trio.storage.artifacts import stored_files
from emcc_trio.storage.base import Store, StoreUnavailableError
from emcc_trio.storage.cache import Entry, SingleFlight, cache_key

log = logging.getLogger("emcc_trio.service")


@attrs.define
class Service:
    """What the routes need, passed in explicitly (no globals)."""

    driver: Driver | None
    compiler: Compiler
    gate: Gate
    store: Store
    enable_static_artifacts: bool
    max_body_bytes: int
    body_timeout_seconds: float = 30
    cache_enabled: bool = False
    emscripten_version: str = ""
    metrics: Metrics = attrs.field(factory=Metrics)
    retry_after_seconds: int = 5
    running: set[trio.CancelScope] = attrs.field(factory=set)
    shutting_down: bool = False
    flights: SingleFlight[CompileResult] | None = None
    policy: Policy = STANDARD
    max_jobs_per_client: int = 8
    tokens: TokenBook | None = None  # None: no API tokens, anyone may compile
    trusted_proxies: tuple[Network, ...] = ()
    # client key -> its compile requests running or waiting (maxJobsPerClient)
    client_jobs: Counter[str] = attrs.field(factory=Counter)

    def __attrs_post_init__(self) -> None:
        self.metrics.watch_gate(self.gate)
        self.store.watch(self.metrics)

    def start(self, nursery: trio.Nursery) -> None:
        """Shared compiles run in the server's nursery, owned by no single request."""
        self.flights = SingleFlight(nursery, self.running)

    def not_ready(self) -> str | None:
        """Why this replica cannot take a compile now, or None when it can."""
        if self.shutting_down:
            return "the server is shutting down"
        if not self.store.reachable:
            return "the store is unreachable"
        if self.gate.waiting >= self.gate.queue_max:
            return "the queue is full"
        return None

    async def compile(
        self, request: CompileRequest, job_id: str, client: str = ""
    ) -> tuple[CompileResult, bool]:
        """The result for `request` and whether it came from the cache.

        Identical requests in flight share one compile (across replicas too, when the store
        is shared); cancelling this call (the client went away) cancels the compile only when
        no other request in this process waits for it. Raises StoreUnavailableError.
        """
        assert self.flights is not None, "Service.start was not called"
        if not self.cache_enabled:
            work = partial(self._compile_admitted, request, job_id, None, client)
            return await self.flights.run(job_id, work), False
        key = cache_key(
            self.emscripten_version, self.compiler.command(request), request.code, request.files
        )
        entry = await self.store.cache_get(key)
        if entry is not None:
            self.metrics.cache_requests.labels("hit").inc()
            return _from_entry(entry), True
        # "shared": an identical compile is already running and this request joins it.
        lookup = "shared" if self.flights.is_flying(key) else "miss"
        self.metrics.cache_requests.labels(lookup).inc()
        once = partial(self._compile_once, request, job_id, key, client)
        return await self.flights.run(key, once), False

    async def _compile_once(
        self, request: CompileRequest, job_id: str, key: str, client: str
    ) -> CompileResult:
        """One compile for every replica that shares the store."""

        async def work() -> bytes:
            # Whoever held the key before may have finished since this request looked.
            entry = await self.store.cache_get(key)
            if entry is not None:
                return encode_result(_from_entry(entry))
            return encode_result(await self._compile_admitted(request, job_id, key, client))

        return decode_result(await self.store.once(key, work))

    async def _compile_admitted(
        self, request: CompileRequest, job_id: str, key: str | None, client: str
    ) -> CompileResult:
        queued_at = trio.current_time()
        client_class = "single" if self.client_jobs[client] <= 1 else "multi"
        async with self.gate.admit(client):
            waited = trio.current_time() - queued_at
            self.metrics.queue_wait_seconds.labels(client_class).observe(waited)
            result = await self.compiler.compile(request, job_id, client)
        self.metrics.compile_seconds.observe(result.duration_seconds)
        if result.limit is not None:
            self.metrics.cap_kills.labels(result.limit).inc()
        elif key is not None:
            # Deterministic results only: successes and compile errors, never cap kills.
            usage = usage_json(result.usage, result.duration_seconds)
            try:
                await self.store.cache_put(
                    key, result.job_id, result.ok, result.output, usage, result.files
                )
            except (OSError, StoreUnavailableError) as exc:
                # The artifacts are stored: a lost cache entry costs a later compile only.
                log.warning("cannot cache", extra={"fields": {"error": str(exc)}})
        return result

    def shutdown(self) -> None:
        """Refuse new compiles and cancel the running ones (their cleanup still runs)."""
        self.shutting_down = True
        for scope in self.running:
            scope.cancel()


def _from_entry(entry: Entry) -> CompileResult:
    return _result_of(entry.job_id, entry.ok, entry.output, entry.usage, entry.files)


def _result_of(
    job_id: str,
    ok: bool,
    output: str,
    usage: dict[str, Any],
    files: tuple[str, ...],
    output_truncated: bool = False,
    limit: Limit | None = None,
) -> CompileResult:
    return CompileResult(
        job_id=job_id,
        ok=ok,
        output=output,
        output_truncated=output_truncated,
        limit=limit,
        usage=Usage(
            peak_memory_bytes=usage.get("peakMemoryBytes"),
            cpu_seconds=usage.get("cpuSeconds"),
            peak_pids=usage.get("peakPids"),
        ),
        duration_seconds=float(usage.get("durationSeconds", 0.0)),
        files=files if ok else (),
    )


def encode_result(result: CompileResult) -> bytes:
    """A result as another replica waiting for the same compile receives it."""
    body = {
        "id": result.job_id,
        "ok": result.ok,
        "output": result.output,
        "truncated": result.output_truncated,
        "limit": result.limit,
        "usage": usage_json(result.usage, result.duration_seconds),
        "files": result.files,
    }
    return json.dumps(body).encode()


def decode_result(data: bytes) -> CompileResult:
    body = json.loads(data)
    return _result_of(
        body["id"],
        body["ok"],
        body["output"],
        body["usage"],
        stored_files(body),
        body["truncated"],
        body["limit"],
    )


def usage_json(usage: Usage, duration_seconds: float) -> dict[str, Any]:
    return {
        "peakMemoryBytes": usage.peak_memory_bytes,
        "cpuSeconds": None if usage.cpu_seconds is None else round(usage.cpu_seconds, 3),
        "peakPids": usage.peak_pids,
        "durationSeconds": round(duration_seconds, 3),
    }
