"""The one interface every store implements (`Store`), and what a store can fail with.

`server` picks the implementation (local disk in `local.py`, the default; Redis for several
replicas in `redis.py`); everything else sees only `Store`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from pathlib import Path
from typing import Final, Protocol

import attrs

from emcc_trio.errors import UnavailableError
from emcc_trio.metrics import Metrics
from emcc_trio.models import BOTH_FILES, CompileResult
from emcc_trio.storage.quota import QuotaCharge

# Artifacts move in chunks of at most this size: publishing copies them, answers stream them,
# Redis keeps a file as fields of this size. The server holds about one chunk per reader.
CHUNK_BYTES: Final = 256 * 1024


@attrs.frozen
class Artifact:
    """One artifact file that exists: its size, and its content as chunks of at most
    CHUNK_BYTES. Nothing is opened until `chunks()` is iterated; its consumer closes it
    (`aclose`, as `async with aclosing(...)` does) however the iteration ends."""

    size: int
    chunks: Callable[[], AsyncGenerator[bytes, None]]


async def read_artifact(store: Store, job_id: str, name: str) -> bytes | None:
    """A whole artifact file in memory (tests, tools): the routes stream `Store.artifact`."""
    found = await store.artifact(job_id, name)
    if found is None:
        return None
    async with aclosing(found.chunks()) as chunks:
        return b"".join([chunk async for chunk in chunks])


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
        """Store every one of a job's artifact `files`, or none (then raise), copying them
        in chunks of at most CHUNK_BYTES."""

    async def artifact(self, job_id: str, name: str) -> Artifact | None:
        """One artifact file, to stream; None for an unknown id or name."""

    async def cache_get(self, key: str) -> CompileResult | None:
        """The cached result for `key`; a hit restarts its artifact's TTL."""

    async def cache_put(self, key: str, result: CompileResult) -> None:
        """Keep `result` (a success, whose artifact is published, or a compile error)."""

    async def object_get(self, name: str) -> bytes | None:
        """A build manifest or compiled object (`compile.build`), or None."""

    async def object_put(self, name: str, data: bytes) -> None:
        """Keep a build manifest or compiled object; a store may drop it at any time."""

    async def charge_quota(
        self, client: str, nbytes: int, limit: int, window_seconds: float
    ) -> QuotaCharge:
        """Count `nbytes` of artifacts for `client` in its current window, unless it has
        reached `limit` or this would take it past (0 bytes: only ask). Shared by every
        replica that shares the store (see storage/quota.py for the window)."""

    async def job_append(self, job_id: str, event: bytes, ttl_seconds: float | None = None) -> None:
        """Append `event` to the job's log. The first event creates the log and gives it its
        lifetime (`ttl_seconds`); an event without one is dropped once the log has expired."""

    async def job_events(self, job_id: str, start: int = 0) -> list[bytes]:
        """The job's events from index `start` on; [] for an unknown or expired job."""

    async def once(self, key: str, work: Callable[[], Awaitable[CompileResult]]) -> CompileResult:
        """Run `work` once for every caller with this key that shares the store, and give each
        its outcome. Within one process the caller already shares work (SingleFlight)."""

    def session(self) -> AbstractAsyncContextManager[None]:
        """Hold the store's connections while the server runs."""

    async def run(self) -> None:
        """Background upkeep (sweeping, health checks), run in the server's nursery."""

    def watch(self, metrics: Metrics) -> None:
        """Register the store's own metrics."""
