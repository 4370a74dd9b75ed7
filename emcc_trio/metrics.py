"""Prometheus metrics, in a registry owned by one app (no process-wide globals)."""

from __future__ import annotations

from typing import Protocol

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class GateGauges(Protocol):
    """What the gauges read of the memory gate (`compile.gate.Gate`)."""

    @property
    def waiting(self) -> int: ...
    @property
    def running(self) -> int: ...
    @property
    def clients_waiting(self) -> int: ...
    @property
    def estimate_bytes(self) -> int: ...
    @property
    def last_budget(self) -> tuple[int, int] | None: ...


class CacheGauges(Protocol):
    """What the gauges read of the local result cache (`storage.cache.ResultCache`)."""

    @property
    def total_bytes(self) -> int: ...


_DURATION_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, float("inf"))


def route_of(path: str) -> str:
    """A bounded label for a request path (ids and unknown paths must not explode it)."""
    if path.startswith("/artifacts/"):
        return "/artifacts"
    if path == "/jobs" or path.startswith("/jobs/"):
        return "/jobs/events" if path.endswith("/events") else "/jobs"
    if path in ("/healthz", "/readyz", "/compile", "/run", "/metrics"):
        return path
    return "other"


@attrs.define
class Metrics:
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    requests: Counter = attrs.field(init=False)
    compile_seconds: Histogram = attrs.field(init=False)
    queue_wait_seconds: Histogram = attrs.field(init=False)
    cap_kills: Counter = attrs.field(init=False)
    cancellations: Counter = attrs.field(init=False)
    cache_requests: Counter = attrs.field(init=False)
    store_seconds: Histogram = attrs.field(init=False)
    store_errors: Counter = attrs.field(init=False)
    client_rejections: Counter = attrs.field(init=False)
    build_units: Counter = attrs.field(init=False)
    memo_events: Counter = attrs.field(init=False)
    memo_pending: Gauge = attrs.field(init=False)
    runs: Counter = attrs.field(init=False)
    jobs: Counter = attrs.field(init=False)
    run_seconds: Histogram = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.requests = Counter(
            "emcc_trio_requests",
            "HTTP requests by route and status (499: client went away)",
            ["route", "status"],
            registry=self.registry,
        )
        self.compile_seconds = Histogram(
            "emcc_trio_compile_duration_seconds",
            "Wall time of finished compiles",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "emcc_trio_queue_wait_seconds",
            "Time compiles waited for admission, by client class: single (the client had no"
            " other compile running or waiting) or multi (it had)",
            ["client_class"],
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, float("inf")),
            registry=self.registry,
        )
        self.client_rejections = Counter(
            "emcc_trio_client_rejections",
            "Requests refused for who sent them: unauthorized (401), jobs_per_client (429,"
            " maxJobsPerClient), artifact_quota (429, artifactQuotaMB), or connections closed"
            " at once: connections_per_client (maxConnectionsPerClient)",
            ["reason"],
            registry=self.registry,
        )
        self.cap_kills = Counter(
            "emcc_trio_cap_kills", "Jobs ended by a cap", ["limit"], registry=self.registry
        )
        self.build_units = Counter(
            "emcc_trio_build_units",
            "Translation units of multi-unit builds: compiled, or reused from the object cache",
            ["how"],
            registry=self.registry,
        )
        self.memo_events = Counter(
            "emcc_trio_memo",
            "The glue memo's and the precompiled headers' misses (a compile went without), "
            "entries taken from the shared store, entries computed in a clean jail, and fills "
            "that made no entry",
            ["memo", "event"],
            registry=self.registry,
        )
        self.runs = Counter(
            "emcc_trio_runs",
            "Runs of built programs by how they ended: exit (main returned or exit was called),"
            " signal (abort or a trap), or the cap that killed them",
            ["outcome"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "emcc_trio_jobs",
            "Jobs (POST /jobs) submitted to this replica, and how they ended: done, failed,"
            " cancelled",
            ["event"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "emcc_trio_run_duration_seconds",
            "Wall time of finished runs (the compile before them not included)",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.memo_pending = Gauge(
            "emcc_trio_memo_fills_pending",
            "Memo entries (glue, precompiled headers) waiting to be computed, or being computed",
            registry=self.registry,
        )
        self.cache_requests = Counter(
            "emcc_trio_cache_requests",
            "Compile requests looked up in the result cache",
            ["result"],
            registry=self.registry,
        )
        self.cancellations = Counter(
            "emcc_trio_cancellations",
            "Compiles cancelled before they finished",
            ["cause"],
            registry=self.registry,
        )

        self.store_seconds = Histogram(
            "emcc_trio_store_duration_seconds",
            "Time of operations on the shared store (Redis), failed ones included",
            ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, float("inf")),
            registry=self.registry,
        )
        self.store_errors = Counter(
            "emcc_trio_store_errors",
            "Operations on the shared store that failed (unreachable, timed out, refused)",
            ["op"],
            registry=self.registry,
        )

    def watch_gate(self, gate: GateGauges) -> None:
        waiting = Gauge(
            "emcc_trio_queue_waiting", "Requests waiting for admission", registry=self.registry
        )
        running = Gauge("emcc_trio_jobs_running", "Compiles running", registry=self.registry)
        clients = Gauge(
            "emcc_trio_clients_waiting",
            "Distinct clients with compiles waiting for admission",
            registry=self.registry,
        )
        waiting.set_function(lambda: gate.waiting)
        running.set_function(lambda: gate.running)
        clients.set_function(lambda: gate.clients_waiting)
        self.watch_budget(gate)

    def watch_cache(self, cache: CacheGauges) -> None:
        size = Gauge(
            "emcc_trio_cache_bytes",
            "Bytes the result cache keeps (entries and their artifacts)",
            registry=self.registry,
        )
        size.set_function(lambda: cache.total_bytes)

    def watch_budget(self, gate: GateGauges) -> None:
        reserved = Gauge(
            "emcc_trio_memory_reserved_bytes",
            "Memory reserved by running jobs (jobMemoryEstimateMB each)",
            registry=self.registry,
        )
        reserved.set_function(lambda: gate.running * gate.estimate_bytes)
        budget = Gauge(
            "emcc_trio_memory_budget_bytes",
            "Memory limit of the budget cgroup that holds every job (0: no limit, no gating)",
            registry=self.registry,
        )
        budget.set_function(lambda: gate.last_budget[0] if gate.last_budget else 0)
        used = Gauge(
            "emcc_trio_memory_used_bytes",
            "Memory the budget cgroup uses now, as the gate last read it (0: no gating)",
            registry=self.registry,
        )
        used.set_function(lambda: gate.last_budget[1] if gate.last_budget else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
