"""One compile as the service runs it: the per-client bound, the result cache, single
flight, the gate and the metrics around the compiler. No HTTP here: `api` maps results and
`ServiceError`s to answers.

The service owns a nursery for the work no single request owns (shared compiles, the gate's
poller, the store's upkeep): `async with service.running():` opens it, and leaving the block
cancels what is still in it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any, Protocol

import attrs
import trio

from emcc_trio.compile.compiler import new_job_id
from emcc_trio.compile.flight import FlightCancelledError, SingleFlight
from emcc_trio.compile.gate import Gate
from emcc_trio.compile.keys import cache_key
from emcc_trio.compile.memos import Memos
from emcc_trio.compile.policy import STANDARD, Policy
from emcc_trio.compile.progress import WATCHER
from emcc_trio.compile.quota import ArtifactQuota
from emcc_trio.compile.sources import DEFAULT_LIMITS, ProjectLimits
from emcc_trio.errors import (
    ArtifactQuotaError,
    InternalError,
    RunsOffError,
    ShuttingDownError,
    TooManyJobsError,
    UnavailableError,
)
from emcc_trio.execute.options import RunOptions, run_compile_args
from emcc_trio.execute.runner import Runner
from emcc_trio.isolation.cgroups import Driver
from emcc_trio.metrics import Metrics
from emcc_trio.models import CompileRequest, CompileResult, RunResult
from emcc_trio.ports.installed import InstalledPorts
from emcc_trio.storage.base import Store, StoreUnavailableError

log = logging.getLogger("emcc_trio.service")


class ProjectsHeldError(UnavailableError):
    """The requests in flight already hold `maxQueuedProjectMB` of sources and files."""

    public = (
        "the server holds too much project data for the compiles in flight "
        "(maxQueuedProjectMB); try again later"
    )


class JobCompiler(Protocol):
    """What the service needs of `compile.compiler.Compiler`."""

    def command(self, request: CompileRequest) -> list[str]:
        """The compile command that decides the output (part of the cache key)."""

    async def compile(self, request: CompileRequest, job_id: str, client: str) -> CompileResult:
        """Run one compile to its end; cancellation-safe."""

    async def fill_glue(self, material: bytes) -> bytes | None:
        """A glue memo entry computed from `material` alone (see compile.memos)."""

    async def fill_acorn(self, material: bytes) -> bytes | None:
        """A JS optimizer memo entry computed from `material` alone (see compile.memos)."""

    async def fill_pch(self, material: bytes, digest: str, header: str) -> bytes | None:
        """The precompiled header `material` asks for (see compile.memos)."""


@attrs.define
class Service:
    """What the routes need, passed in explicitly (no globals)."""

    driver: Driver | None
    compiler: JobCompiler
    gate: Gate
    store: Store
    cache_enabled: bool = False
    emscripten_version: str = ""
    metrics: Metrics = attrs.field(factory=Metrics)
    shutting_down: bool = False
    policy: Policy = STANDARD
    max_jobs_per_client: int = 8
    limits: ProjectLimits = DEFAULT_LIMITS
    # The bytes of sources and files the requests in flight may hold in memory together.
    max_held_bytes: int = 512 * 1024 * 1024
    _held_bytes: int = 0
    # artifactQuotaMB: checked before a compile that is not a cache hit (the compiler charges
    # the artifact before publishing it); None: no quota.
    quota: ArtifactQuota | None = None
    # cacheScope: "global" (identical compiles of any clients share a result and a flight) or
    # "client" (only those of one client: one API token, or one address).
    cache_scope: str = "global"
    # client key -> its compile requests running or waiting (maxJobsPerClient)
    _client_jobs: Counter[str] = attrs.field(factory=Counter)
    _flights: SingleFlight[CompileResult] | None = None  # while `running` is open
    memos: Memos | None = None  # the glue memo and the PCHs, filled in the background
    runner: Runner | None = None  # POST /run; None: runs are off (RunsOffError)
    ports: InstalledPorts | None = None  # emscriptenCacheDir's; None: no ports
    # What `emcc --version` says; emscripten_version adds the ports' digest to it.
    compiler_version: str = ""

    def toolchain(self) -> dict[str, Any]:
        """GET /toolchain: the compiler and the installed ports."""
        version = re.search(r"\b(\d+\.\d+\.\d+)\b", self.compiler_version)
        return {
            "emscripten": version[1] if version else None,
            "compiler": self.compiler_version,
            "ports": [] if self.ports is None else self.ports.describe(),
        }

    def __attrs_post_init__(self) -> None:
        self.metrics.watch_gate(self.gate)
        self.store.watch(self.metrics)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the background work (gate poller, store upkeep, shared compiles) for as long as
        the block runs; on leaving it, everything still running there is cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.gate.run_poller)
            nursery.start_soon(self.store.run)
            if self.memos is not None:
                nursery.start_soon(self.memos.run, self)
            self._flights = SingleFlight(nursery)
            try:
                yield
            finally:
                self._flights = None
                nursery.cancel_scope.cancel()

    # The memos' fills (compile.memos.Filler), each admitted by the gate as a compile is.
    async def fill_glue(self, material: bytes) -> bytes | None:
        return await self._admitted_fill(partial(self.compiler.fill_glue, material))

    async def fill_acorn(self, material: bytes) -> bytes | None:
        return await self._admitted_fill(partial(self.compiler.fill_acorn, material))

    async def fill_pch(self, material: bytes, digest: str, header: str) -> bytes | None:
        return await self._admitted_fill(partial(self.compiler.fill_pch, material, digest, header))

    async def _admitted_fill(self, fill: Callable[[], Awaitable[bytes | None]]) -> bytes | None:
        try:
            async with self.gate.admit():
                return await fill()
        except (UnavailableError, InternalError) as exc:
            log.info("memo fill skipped", extra={"fields": {"error": str(exc)}})
            return None

    def not_ready(self) -> str | None:
        """Why this replica cannot take a compile now, or None when it can."""
        if self.shutting_down:
            return "the server is shutting down"
        if not self.store.reachable:
            return "the store is unreachable"
        if self.gate.waiting >= self.gate.queue_max:
            return "the queue is full"
        return None

    @contextmanager
    def client_slot(self, client: str) -> Iterator[None]:
        """Count one compile request of `client` while the block runs; raise
        ShuttingDownError or TooManyJobsError (`maxJobsPerClient`) instead of entering."""
        if self.shutting_down:
            raise ShuttingDownError
        if self._client_jobs[client] >= self.max_jobs_per_client:
            self.metrics.client_rejections.labels("jobs_per_client").inc()
            raise TooManyJobsError(
                f"this client already has {self.max_jobs_per_client} compiles running or"
                " waiting (maxJobsPerClient); try again when one has finished"
            )
        self._client_jobs[client] += 1
        try:
            yield
        finally:
            self._client_jobs[client] -= 1
            if not self._client_jobs[client]:
                del self._client_jobs[client]

    @contextmanager
    def holding(self, request: CompileRequest) -> Iterator[None]:
        """Count the request's sources and files against `max_held_bytes` while the block
        runs (its queue wait and its compile); ProjectsHeldError instead of entering."""
        size = request.size_bytes
        if self._held_bytes + size > self.max_held_bytes:
            self.metrics.client_rejections.labels("projects_held").inc()
            raise ProjectsHeldError
        self._held_bytes += size
        try:
            yield
        finally:
            self._held_bytes -= size

    async def compile(
        self, request: CompileRequest, job_id: str, client: str = ""
    ) -> tuple[CompileResult, bool]:
        """The result for `request` and whether it came from the cache.

        Identical requests in flight share one compile (across replicas too, when the store
        is shared); cancelling this call (the client went away) cancels the compile only when
        no other request in this process waits for it. Raises a ServiceError subclass when the
        compile cannot run (queue full or timed out, store unreachable, shutdown, internal).
        """
        try:
            return await self._compile(request, job_id, client)
        except trio.Cancelled:
            self.metrics.cancellations.labels("client").inc()
            raise
        except FlightCancelledError:
            self.metrics.cancellations.labels("shutdown").inc()
            raise
        except StoreUnavailableError:
            log.warning("store unreachable", extra={"fields": {"job": job_id}})
            raise
        except ArtifactQuotaError:
            self.metrics.client_rejections.labels("artifact_quota").inc()
            raise
        except InternalError as exc:
            exc.job_id = exc.job_id or job_id
            log.error("job failed to run", extra={"fields": {"job": job_id, "error": str(exc)}})
            raise

    async def _compile(
        self, request: CompileRequest, job_id: str, client: str
    ) -> tuple[CompileResult, bool]:
        if self._flights is None:
            raise RuntimeError("Service.compile outside `async with service.running()`")
        if not self.cache_enabled:
            if self.quota is not None:
                await self.quota.check(client)
            work = partial(self._compile_admitted, request, job_id, None, client)
            return await self._flights.run(job_id, work), False
        key = cache_key(
            self.emscripten_version,
            self.compiler.command(request),
            request.code,
            request.files,
            scope=client if self.cache_scope == "client" else "",
        )
        cached = await self.store.cache_get(key)
        if cached is not None:
            self.metrics.cache_requests.labels("hit").inc()
            return cached, True
        if self.quota is not None:
            await self.quota.check(client)  # after the lookup: a hit stores nothing
        # "shared": an identical compile is already running and this request joins it.
        lookup = "shared" if self._flights.is_flying(key) else "miss"
        self.metrics.cache_requests.labels(lookup).inc()
        once = partial(self._compile_once, request, job_id, key, client)
        return await self._flights.run(key, once), False

    async def _compile_once(
        self, request: CompileRequest, job_id: str, key: str, client: str
    ) -> CompileResult:
        """One compile for every replica that shares the store."""

        async def work() -> CompileResult:
            # Whoever held the key before may have finished since this request looked.
            cached = await self.store.cache_get(key)
            if cached is not None:
                return cached
            return await self._compile_admitted(request, job_id, key, client)

        return await self.store.once(key, work)

    async def _compile_admitted(
        self, request: CompileRequest, job_id: str, key: str | None, client: str
    ) -> CompileResult:
        queued_at = trio.current_time()
        client_class = "single" if self._client_jobs[client] <= 1 else "multi"
        async with self.gate.admit(client):
            waited = trio.current_time() - queued_at
            self.metrics.queue_wait_seconds.labels(client_class).observe(waited)
            result = await self.compiler.compile(request, job_id, client)
        self.metrics.compile_seconds.observe(result.duration_seconds)
        if result.limit is not None:
            self.metrics.cap_kills.labels(result.limit).inc()
        elif key is not None:
            # Deterministic results only: successes and compile errors, never cap kills.
            try:
                await self.store.cache_put(key, result)
            except (OSError, StoreUnavailableError) as exc:
                # The artifacts are stored: a lost cache entry costs a later compile only.
                log.warning("cannot cache", extra={"fields": {"error": str(exc)}})
        return result

    async def run(
        self, request: CompileRequest, options: RunOptions, job_id: str, client: str = ""
    ) -> tuple[CompileResult, bool, RunResult | None]:
        """Compile `request` for running (or take the cached build), then run it once with
        `options` in its own jail and cgroup, admitted by the gate as a compile is. The run
        is None when the compile failed. Runs are never cached: a program may print the
        time."""
        if self.runner is None:
            raise RunsOffError
        built = attrs.evolve(request, args=run_compile_args(request.args))
        result, cached = await self.compile(built, job_id, client)
        if not result.ok:
            return result, cached, None
        try:
            async with self.gate.admit(client):
                watcher = WATCHER.get()
                if watcher is not None:
                    watcher.started()  # a cached build starts here
                run = await self.runner.run(
                    self.store, result.job_id, result.files, options, new_job_id(), client
                )
        except trio.Cancelled:
            self.metrics.cancellations.labels("client").inc()
            raise
        except InternalError as exc:
            log.error("run failed to start", extra={"fields": {"job": job_id, "error": str(exc)}})
            raise
        ended = run.limit or ("signal" if run.signal is not None else "exit")
        self.metrics.runs.labels(ended).inc()
        self.metrics.run_seconds.observe(run.duration_seconds)
        return result, cached, run

    def shutdown(self) -> None:
        """Refuse new compiles and cancel the running ones (their cleanup still runs)."""
        self.shutting_down = True
        if self._flights is not None:
            self._flights.cancel_all()
