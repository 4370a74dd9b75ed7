"""Where artifacts and cached results live: one protocol, and the local-disk implementation.

`__main__` picks the implementation (local disk, the embedded default, or Redis for several
replicas, in `redis_store.py`); everything else sees only `Store`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from emcc_trio.metrics import Metrics
from emcc_trio.storage.artifacts import BOTH_FILES, ArtifactStore, run_sweeper
from emcc_trio.storage.cache import Entry, ResultCache

log = logging.getLogger("emcc_trio.store")


class StoreUnavailableError(Exception):
    """The store cannot be reached now; the request may be retried later."""


class FlightWaitTimeoutError(Exception):
    """An identical compile elsewhere held its lock longer than a compile can take."""


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

    async def cache_get(self, key: str) -> Entry | None:
        """The cached result for `key`; a hit restarts its artifact's TTL."""

    async def cache_put(
        self,
        key: str,
        job_id: str,
        ok: bool,
        output: str,
        usage: dict[str, Any],
        files: tuple[str, ...] = BOTH_FILES,
    ) -> None: ...

    async def once(self, key: str, work: Callable[[], Awaitable[bytes]]) -> bytes:
        """Run `work` once for every caller with this key that shares the store, and give each
        its outcome. Within one process the caller already shares work (SingleFlight)."""

    def session(self) -> AbstractAsyncContextManager[None]:
        """Hold the store's connections while the server runs."""

    async def run(self) -> None:
        """Background upkeep (sweeping, health checks), run in the server's nursery."""

    def watch(self, metrics: Metrics) -> None:
        """Register the store's own metrics."""


@attrs.define
class LocalStore:
    """Artifacts and the result cache on this machine's disk: one replica, as ever."""

    artifacts: ArtifactStore
    cache: ResultCache | None
    artifact_ttl_days: float
    cleanup_interval_mins: float

    @property
    def reachable(self) -> bool:
        return True

    async def publish(
        self, job_id: str, job_dir: Path, files: tuple[str, ...] = BOTH_FILES
    ) -> None:
        await self.artifacts.publish(job_id, job_dir, files)

    async def read(self, job_id: str, name: str) -> bytes | None:
        return await self.artifacts.read(job_id, name)

    async def cache_get(self, key: str) -> Entry | None:
        return None if self.cache is None else self.cache.get(key)

    async def cache_put(
        self,
        key: str,
        job_id: str,
        ok: bool,
        output: str,
        usage: dict[str, Any],
        files: tuple[str, ...] = BOTH_FILES,
    ) -> None:
        if self.cache is not None:
            await trio.to_thread.run_sync(self.cache.put, key, job_id, ok, output, usage, files)

    async def once(self, key: str, work: Callable[[], Awaitable[bytes]]) -> bytes:
        return await work()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def run(self) -> None:
        await run_sweeper(
            self.artifacts,
            self.artifact_ttl_days,
            self.cleanup_interval_mins,
            self.cache.live_ids if self.cache else set,
        )

    def watch(self, metrics: Metrics) -> None:
        if self.cache is not None:
            metrics.watch_cache(self.cache)
