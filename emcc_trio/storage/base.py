"""The one interface every store implements (`Store`), and what a store can fail with.

`server` picks the implementation (local disk in `local.py`, the default; Redis for several
replicas in `redis.py`); everything else sees only `Store`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from emcc_trio.errors import UnavailableError
from emcc_trio.metrics import Metrics
from emcc_trio.models import BOTH_FILES, CompileResult


class StoreUnavailableError(UnavailableError):
    """The store cannot be reached now; the request may be retried later."""

    public = "the artifact store is unreachable; try again later"


class FlightWaitTimeoutError(UnavailableError):
    """An identical compile elsewhere held its lock longer than a compile can take."""

    public = "an identical compile on another replica did not finish in time"


class Store(Protocol):
    @property
    def reachable(self) -> bool:
        """Whether the last operation (or health check) reached the store."""

    async def publish(
        self, job_id: str, job_dir: Path, files: tuple[str, ...] = BOTH_FILES
    ) -> None:
        """Store every one of a job's artifact `files`, or none (then raise)."""

    async def read(self, job_id: str, name: str) -> bytes | None:
        """One artifact file, or None for an unknown id or name."""

    async def cache_get(self, key: str) -> CompileResult | None:
        """The cached result for `key`; a hit restarts its artifact's TTL."""

    async def cache_put(self, key: str, result: CompileResult) -> None:
        """Keep `result` (a success, whose artifact is published, or a compile error)."""

    async def object_get(self, name: str) -> bytes | None:
        """A build manifest or compiled object (`compile.build`), or None."""

    async def object_put(self, name: str, data: bytes) -> None:
        """Keep a build manifest or compiled object; a store may drop it at any time."""

    async def once(self, key: str, work: Callable[[], Awaitable[CompileResult]]) -> CompileResult:
        """Run `work` once for every caller with this key that shares the store, and give each
        its outcome. Within one process the caller already shares work (SingleFlight)."""

    def session(self) -> AbstractAsyncContextManager[None]:
        """Hold the store's connections while the server runs."""

    async def run(self) -> None:
        """Background upkeep (sweeping, health checks), run in the server's nursery."""

    def watch(self, metrics: Metrics) -> None:
        """Register the store's own metrics."""
